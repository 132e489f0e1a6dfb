"""Shared fixtures: the backend matrix, required backends, and CI strictness.

* ``FASTACT_REQUIRE_BACKENDS=numba,cython,numpy`` makes the session fail at start if one of them
  is unavailable (so a broken build cannot pass by skipping).
* ``CI=true`` turns a test skipped for a missing Python dependency (``pytest.importorskip``)
  into a failure.
"""

from __future__ import annotations

import os

import pytest

import fastact as fa
from fastact import _config
from fastact import _dispatch

HOST_BACKENDS = _dispatch.HOST_PRIORITY  # numba, cython, numpy
REQUIRED = _config.REQUIRE_BACKENDS
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist starts its workers (its hook is trylast)
def pytest_sessionstart(session):
    from fastact import _dispatch

    missing = _dispatch.missing_required()
    if missing:
        raise pytest.UsageError(f"FASTACT_REQUIRE_BACKENDS: unavailable backends: {missing}")
    _prewarm(session)


#: Test files that take longest (each runs subprocesses: the CUDA simulator suite, threads and
#: pools, import blocking), scheduled first so that the other worker's many short files run
#: alongside them instead of one worker finishing alone (pytest-xdist --dist loadfile hands out
#: files in collection order).
LONG_FILES = ("test_reliability.py", "test_cuda.py", "test_fallback.py")


def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        name = item.path.name
        return LONG_FILES.index(name) if name in LONG_FILES else len(LONG_FILES)

    items.sort(key=rank)  # stable: the order within and among the other files is kept


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and call.excinfo is not None:
        reason = str(call.excinfo.value)
        if "could not import" in reason or "No module named" in reason:
            report.outcome = "failed"
            report.longrepr = f"CI=true: skipped for a missing dependency: {reason}"


@pytest.fixture(params=HOST_BACKENDS)
def backend(request):
    """Every host backend; unavailable ones skip (and fail the session if required)."""
    name = request.param
    if name not in fa.backends():
        pytest.skip(f"backend {name} unavailable: {fa.backend_info()[name].get('reason')}")
    return name


# ------------------------------------------------------------------------------------------------
# cold-cache prewarm: compile every Numba kernel once, split over the workers' cores
# ------------------------------------------------------------------------------------------------
#
# The two xdist workers share the on-disk kernel cache, but each compiles a kernel it needs that
# is not cached yet, so on a cold cache both workers (and the subprocess tests they start)
# compile most kernels twice.  Before the workers start, a whole-suite run compiles every kernel
# of the registry once, in as many processes as there are workers (fastact.warmup on disjoint
# sets of ops), and the tests then load them from the cache.  Measured on the 2-core machine,
# cold cache, whole suite: 22.2 min without, 14.1 min with it (5.4 min prewarm + 8.6 min of
# tests; with read-only inputs no longer compiled separately, see numba_cpu._as_writeable).
# Off with FASTACT_TEST_PREWARM=0; only for runs of the whole suite (testpaths, no -k/-m,
# -n >= 2) with Numba's cache enabled.

_PREWARM_WEIGHT = {"loss": 4.0, "rowwise": 3.0, "gated": 1.5, "channel": 1.5}


def _prewarm_groups(n: int) -> list[list[str]]:
    """The registry's ops in ``n`` groups of similar compile cost (longest first, greedily)."""
    from fastact import _registry

    def weight(op):
        w = _PREWARM_WEIGHT.get(op.kind, 1.0)
        return w * (2.0 if "gelu" in (op.name, op.extra.get("gate")) else 1.0)

    groups = [[0.0, []] for _ in range(n)]
    for op in sorted(_registry.OPS, key=weight, reverse=True):
        g = min(groups, key=lambda item: item[0])
        g[0] += weight(op)
        g[1].append(op.name)
    return [names for _, names in groups if names]


def _prewarm_wanted(config) -> int:
    """Number of prewarm processes (0: none)."""
    if hasattr(config, "workerinput") or os.environ.get("FASTACT_TEST_PREWARM", "1") == "0":
        return 0
    n = getattr(config.option, "numprocesses", None)
    if not isinstance(n, int) or n < 2 or config.option.collectonly:
        return 0
    if config.option.keyword or config.option.markexpr:
        return 0
    sources = getattr(pytest.Config, "ArgsSource", None)  # pytest >= 7.2
    if sources is None or getattr(config, "args_source", None) is not sources.TESTPATHS:
        return 0
    if _config.NO_CACHE or "numba" not in fa.backends():
        return 0
    return n


def _prewarm(session) -> None:
    import subprocess
    import sys
    import time

    n = _prewarm_wanted(session.config)
    if not n:
        return
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c",
                               "import sys, fastact; fastact.warmup(sys.argv[1:])", *group],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for group in _prewarm_groups(n)]
    failed, times = [], []
    for proc in procs:
        _, err = proc.communicate()
        times.append(time.perf_counter() - start)
        if proc.returncode:
            failed.append(err[-2000:])
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"fastact: kernels compiled (or loaded) in {len(procs)} processes "
                            f"in {time.perf_counter() - start:.0f} s (each done after "
                            f"{', '.join(f'{t:.0f}' for t in times)} s); "
                            "FASTACT_TEST_PREWARM=0 skips this")
        if failed:  # not fatal here: the tests that need the kernels report the real error
            reporter.write_line("fastact: prewarm failed:\n" + "\n".join(failed))
