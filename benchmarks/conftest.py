"""Options of the pytest-benchmark suite (``pytest benchmarks/ --benchmark-only``).

``--bench-quick``   sizes 1e3 and 1e6 and float32 only (about 9 minutes on 2 cores with a
                    cold kernel cache; the full float32 suite took 18 minutes there)
``--bench-time S``  target seconds of timing per benchmark (default 0.1; at least 5 rounds)
``--bench-sizes 1e6,1e7``  only these sizes in the op groups (default: each op's bench_sizes)
``--bench-dtypes float32``  only these dtypes (default: float32 and float64)
``--bench-backends a,b``  only these backend columns (default: every known backend, plus the
                    ``numpy-expr`` and ``copy`` baselines, which are always kept)
``--bench-malloc default``  leave glibc malloc alone.  By default the session applies
                    ``fastact._bench.steady_allocator()`` so freed arrays are reused rather
                    than returned to the OS: otherwise a result's page faults (costly in a VM,
                    and dependent on the heap's history) dominate and vary run to run.

Unavailable backends are skipped with the reason from ``fastact.backend_info()``; set
``FASTACT_REQUIRE_BACKENDS`` to make a missing one fail the session instead.
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("fastact benchmarks")
    group.addoption("--bench-quick", action="store_true", default=False,
                    help="fastact: only sizes 1e3 and 1e6 and dtype float32")
    group.addoption("--bench-time", type=float, default=0.1, metavar="S",
                    help="fastact: target seconds of timing per benchmark (default 0.1)")
    group.addoption("--bench-sizes", default="", metavar="N,N",
                    help="fastact: only these sizes of the op groups (e.g. 1e6,1e7)")
    group.addoption("--bench-dtypes", default="", metavar="D,D",
                    help="fastact: only these dtypes (float32, float64)")
    group.addoption("--bench-backends", default="", metavar="NAMES",
                    help="fastact: comma-separated backends to time (default: all known)")
    group.addoption("--bench-malloc", choices=("steady", "default"), default="steady",
                    help="fastact: 'steady' (default) keeps freed memory in the heap so "
                         "timings exclude page faults; 'default' leaves malloc alone")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # Benchmarks run in one process: the test suite's addopts ask for two xdist workers
    # (pyproject.toml), and two timed processes would share the cores (pytest-benchmark also
    # refuses --benchmark-only under xdist).  This runs before xdist and pytest-benchmark
    # configure themselves (both trylast); a run started from inside an xdist worker (the CLI
    # test) is not a worker itself.
    if hasattr(config.option, "dist"):
        config.option.dist = "no"
        config.option.numprocesses = None
    os.environ.pop("PYTEST_XDIST_WORKER", None)
    from fastact import _bench

    steady = config.getoption("bench_malloc") == "steady" and _bench.steady_allocator()
    config.fastact_allocator = "steady (glibc mallopt)" if steady else "default"


def pytest_sessionstart(session):
    from fastact import _dispatch

    missing = _dispatch.missing_required()
    if missing:
        raise pytest.UsageError(f"FASTACT_REQUIRE_BACKENDS: unavailable backends: {missing}")


def pytest_report_header(config):
    import fastact as fa

    info = fa.backend_info()
    parts = []
    for name, entry in info.items():
        if name == "selected" or not isinstance(entry, dict):
            continue
        if entry.get("available"):
            extra = ", ".join(f"{k} {entry[k]}" for k in ("version", "threads",
                                                          "threading_layer", "openmp")
                              if k in entry)
            parts.append(f"{name} ({extra})" if extra else name)
        else:
            parts.append(f"{name} unavailable")
    return ["fastact backends: " + "; ".join(parts),
            f"fastact allocator: {getattr(config, 'fastact_allocator', 'default')}"]


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record what the timings depend on beyond pytest-benchmark's own fields: the CPU as LLVM
    targets it (the instruction set of the compiled kernels), Numba's threading layer, and the
    versions of the peers.  Numba's ``omp`` layer next to PyTorch's own OpenMP runtime makes
    both pools spin against each other on 2 cores (fastact silu 1e6 median 0.56 ms under
    ``omp`` against 0.32 ms under ``tbb``, the default install), so the layer matters."""
    import importlib.metadata

    import fastact as fa

    numba_info = fa.backend_info().get("numba") or {}
    try:
        import llvmlite.binding as llvm

        llvm.initialize_native_target()
        cpu = llvm.get_host_cpu_name()
    except Exception:  # pragma: no cover - llvmlite comes with numba
        cpu = "unknown"
    versions = {}
    for dist in ("fastact", "numpy", "numba", "scipy", "numexpr", "torch"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    machine_info["fastact"] = {
        "llvm_cpu": cpu, "threads": numba_info.get("threads"),
        "threading_layer": numba_info.get("threading_layer"),
        "allocator": getattr(config, "fastact_allocator", "default"), "versions": versions}

