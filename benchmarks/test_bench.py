"""pytest-benchmark suite: every registry op x form x backend x size x dtype.

Run it with::

    pytest benchmarks/ --benchmark-only [--bench-quick] --benchmark-json=results.json
    python benchmarks/report.py results.json --markdown

Everything is generated from ``fastact._registry.OPS`` (sizes from each op's ``bench_sizes``),
so a new op or backend shows up here without edits.  Each benchmark group
``{op}-{form}-{dtype}-{size}`` holds, side by side:

* one entry per fastact backend (``backend=`` forced; unavailable ones are skipped with the
  reason), and ``auto``: the call a user writes (no ``backend=``), i.e. the measured dispatch
  table's choice and the small-array fast path -- the column the issue-7 goals are judged on;
  in the backward groups of ops that accept ``y=`` also ``auto-y``, the backward from the
  output (what PyTorch's sigmoid/tanh backward kernels compute);
* ``numpy-expr``: the NumPy expression a user would write instead, from
  ``fastact._bench.NUMPY_BASELINES`` (shared with ``python -m fastact bench``).  An op/form of
  the registry without a baseline fails here;
* ``copy``: ``np.copyto`` of as many bytes as the op writes -- the memory-bandwidth yardstick
  (one thread); ``copy-mt``: the same copy split over all threads (a Numba ``prange`` loop
  compiled here), the multi-threaded bandwidth a parallel kernel can reach;
* ``scipy``, ``numexpr``, ``torch``: peer libraries where they have the op/form
  (``fastact._peers``; the ``bench`` extra installs them, a missing one is skipped with the
  reason).  Like numpy-expr, each peer's result is checked against fastact's at small sizes.

``extra_info`` carries backend, op, form, dtype, size, shape and ``bytes`` (inputs read once +
outputs written once; 2x the copied bytes for ``copy``), from which ``report.py`` derives
GB/s and the % of copy bandwidth.  Inputs: ``fastact._bench.bench_shape`` (rows of 1000 for
row-wise ops, ``(N, 10, 100)`` for prelu, 1-D otherwise), values ~ N(0, 3^2).

Two more groups: ``test_bench_rows`` (softmax, log_softmax and cross_entropy_and_grad on rows
of 32, 1024 and 32000 elements, ~4M elements in all) and ``test_bench_threads`` (compute-bound
ops at 1e7 elements with 1 and with all threads: the thread-scaling goal).
``--bench-sizes`` and ``--bench-dtypes`` select a subset (conftest.py).

Each target is called before timing (Numba compiles on its first call; compile time is never
timed), then ``benchmark.pedantic`` runs enough rounds to fill ``--bench-time`` seconds (at
least 5 rounds; calls under 0.1 ms are looped so one round lasts >= 0.1 ms).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

import fastact as fa
from fastact import _bench, _dispatch, _peers, _registry
from fastact._bench import NUMPY_BASELINES

#: The automatic call (no ``backend=``): what users get.
AUTO = "auto"
#: NAME_backward from the output (``y=``), automatic: timed in the backward groups of the ops
#: that accept ``y=``, the form PyTorch's sigmoid/tanh backward kernels compute.
AUTO_Y = "auto-y"
#: Pseudo-backends timed in every group next to the real ones.
BASELINES = ("numpy-expr", "copy", "copy-mt")
#: Pause before each benchmark so the thread pools of the previous entry (OpenMP and TBB
#: workers spin-wait for a while after a parallel region, PyTorch's too) are idle again.
#: Measured on 1,000 float32 elements, relu with backend='numba' (the general path): 46 us in a
#: run without the pause, 26 us with it, 13-18 us in a process that never imported torch.
SETTLE_S = 0.005
#: Row lengths of test_bench_rows, and its element count (rounded down to whole rows).
ROW_LENGTHS = (32, 1024, 32000)
ROWS_ELEMENTS = 4_096_000
ROW_OPS = (("softmax", "forward"), ("log_softmax", "forward"), ("cross_entropy", "and_grad"))
#: Compute-bound ops of the thread-scaling goal, timed at THREADS_SIZE elements.
THREAD_OPS = ("gelu", "mish", "softplus")
THREADS_SIZE = 10_000_000
QUICK_SIZES = (1_000, 1_000_000)
QUICK_DTYPES = ("float32",)
MIN_ROUNDS = 5
MAX_ROUNDS = 1000
MIN_ROUND_S = 1e-4
#: numpy-expr results are checked against fastact's at sizes up to this (cheap sanity check).
CHECK_UP_TO = 100_000


def _sizes(spec: _registry.OpSpec, quick: bool) -> tuple[int, ...]:
    if not quick:
        return tuple(spec.bench_sizes)
    chosen = tuple(s for s in spec.bench_sizes if s in QUICK_SIZES)
    return chosen or (min(spec.bench_sizes),)


def _backend_columns(config) -> tuple[str, ...]:
    wanted = [b.strip().lower() for b in config.getoption("bench_backends").split(",")
              if b.strip()]
    for name in wanted:
        if name not in _dispatch.KNOWN:
            raise pytest.UsageError(f"--bench-backends: unknown backend {name!r}; known: "
                                    f"{', '.join(_dispatch.KNOWN)}")
    return tuple(b for b in _dispatch.KNOWN if not wanted or b in wanted) + (AUTO,) + BASELINES


def _selected_dtypes(config) -> tuple[str, ...]:
    chosen = config.getoption("bench_dtypes")
    if chosen:
        names = tuple(d.strip() for d in chosen.split(",") if d.strip())
        bad = [d for d in names if d not in _registry.KERNEL_DTYPES]
        if bad:
            raise pytest.UsageError(f"--bench-dtypes: unknown {bad}; choose from "
                                    f"{', '.join(_registry.KERNEL_DTYPES)}")
        return names
    return QUICK_DTYPES if config.getoption("bench_quick") else _registry.KERNEL_DTYPES


def pytest_generate_tests(metafunc):
    config = metafunc.config
    dtypes = _selected_dtypes(config)
    columns = _backend_columns(config)
    if "row_length" in metafunc.fixturenames:
        params = [(op, form, dtype, width, column)
                  for dtype in dtypes for op, form in ROW_OPS for width in ROW_LENGTHS
                  for column in columns + tuple(p.library for p in _peers.peers_for(op, form))]
        metafunc.parametrize("op,form,dtype,row_length,backend_column", params,
                             ids=[f"{o}-{f}-{d}-rows{w}-{c}" for o, f, d, w, c in params])
        return
    if "backend_column" not in metafunc.fixturenames:
        return
    quick = config.getoption("bench_quick")
    all_sizes = sorted({s for op in _registry.OPS for s in _sizes(op, quick)})
    wanted_sizes = config.getoption("bench_sizes")
    if wanted_sizes:
        try:
            keep = {int(float(v)) for v in wanted_sizes.split(",") if v.strip()}
        except ValueError:
            raise pytest.UsageError(f"--bench-sizes: not numbers: {wanted_sizes!r}") from None
        all_sizes = [s for s in all_sizes if s in keep]
    params, ids = [], []
    # dtype and size outermost so one input array serves many groups; backends innermost so
    # a group's extra operands (grad, y, weight) are built once and its entries run back to
    # back, under the same machine load (what makes their ratios comparable).
    for dtype in dtypes:
        for size in all_sizes:
            for spec in _registry.OPS:
                if size not in _sizes(spec, quick):
                    continue
                for form in spec.forms:
                    peers = [p.library for p in _peers.peers_for(spec.name, form)]
                    extra = ((AUTO_Y,) if form == "backward" and spec.kind == "elementwise"
                             and spec.y_backward is not None
                             and spec.y_backward(dict(spec.defaults)) else ())
                    for column in columns + extra + tuple(peers):
                        params.append((spec.name, form, dtype, size, column))
                        ids.append(f"{spec.name}-{form}-{dtype}-{size}-{column}")
    metafunc.parametrize("op,form,dtype,size,backend_column", params, ids=ids)


# ------------------------------------------------------------------------------------------------
# inputs, cached for one dtype/size and one group at a time
# ------------------------------------------------------------------------------------------------

_input_cache: dict = {}
_group_cache: dict = {}


def _input(size: int, dtype: str) -> np.ndarray:
    key = (size, dtype)
    if key not in _input_cache:
        _input_cache.clear()
        x = _bench.make_input(size, dtype)
        x.flags.writeable = False  # shared by every group: a kernel writing into it would fail
        _input_cache[key] = x
    return _input_cache[key]


def _group(op: str, form: str, dtype: str, size: int) -> dict:
    key = (op, form, dtype, size)
    if key not in _group_cache:
        _group_cache.clear()
        case = _bench.make_case(op, form, size, dtype, x=_input(size, dtype))
        _group_cache[key] = {"case": case}
    return _group_cache[key]


def _copy_arrays(group: dict, dtype: str):
    if "copy" not in group:
        n = max(1, group["case"].out_nbytes // np.dtype(dtype).itemsize)
        src = _bench.make_input(n, dtype, seed=1)
        group["copy"] = (np.empty_like(src), src)
    return group["copy"]


_parallel_copy_kernel = None


def _parallel_copy(dst: np.ndarray, src: np.ndarray) -> None:
    """``dst[:] = src`` on all threads (Numba ``prange``, compiled on first use)."""
    global _parallel_copy_kernel
    if _parallel_copy_kernel is None:
        import numba

        @numba.njit(parallel=True, cache=False)
        def copy_kernel(d, s):
            for i in numba.prange(s.size):
                d[i] = s[i]

        _parallel_copy_kernel = copy_kernel
    _parallel_copy_kernel(dst, src)


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def _check_baseline(case: _bench.Case, dtype: str, target=None, expr=None) -> None:
    """The NumPy expression (or a peer) must compute what fastact computes (else the ratio is
    meaningless)."""
    expected = _as_tuple(case.fastact()())
    got = tuple(np.asarray(g) for g in _as_tuple((target or case.numpy_expr())()))
    expr = expr or case.baseline.expr
    rtol = 1e-4 if dtype == "float32" else 1e-10
    assert len(got) == len(expected), f"{case.op}/{case.form}: numpy-expr returns {len(got)} " \
                                      f"arrays, fastact {len(expected)}"
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype and g.shape == e.shape, (
            f"{case.op}/{case.form}: numpy-expr gives {g.dtype}{g.shape}, fastact "
            f"{e.dtype}{e.shape}")
        atol = rtol * float(np.max(np.abs(e))) if e.size else 0.0
        np.testing.assert_allclose(
            g, e, rtol=rtol, atol=atol,
            err_msg=f"baseline of {case.op}/{case.form} disagrees with fastact: {expr}")


# ------------------------------------------------------------------------------------------------
# the benchmark
# ------------------------------------------------------------------------------------------------

def _plan(target, budget: float) -> tuple[int, int]:
    """(rounds, iterations) for ``benchmark.pedantic``, from a few calls timed here.

    The first call compiles (Numba) and faults the output pages in; it is not measured.
    """
    target()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        target()
        times.append(max(time.perf_counter() - t0, 1e-7))
        if times[-1] > 1e-2:  # slow enough that one estimate will do
            break
    # loop short calls (best case) so a round lasts >= MIN_ROUND_S; size the number of rounds
    # on the worst case, so a noisy estimate cannot blow the time budget
    iterations = max(1, math.ceil(MIN_ROUND_S / min(times)))
    rounds = int(budget / (max(times) * iterations))
    return min(MAX_ROUNDS, max(MIN_ROUNDS, rounds)), iterations


def test_bench(benchmark, request, op, form, dtype, size, backend_column):
    _run(benchmark, request, op, form, dtype, backend_column, _group(op, form, dtype, size),
         group_name=f"{op}-{form}-{dtype}-{size}", info={"size": size})


def test_bench_rows(benchmark, request, op, form, dtype, row_length, backend_column):
    """Row-wise ops on rows of 32, 1024 and 32000 elements (the issue-7 softmax and
    cross-entropy goals), ~4M elements in all."""
    rows = ROWS_ELEMENTS // row_length
    key = ("rows", op, form, dtype, row_length)
    if key not in _group_cache:
        _group_cache.clear()
        case = _bench.make_case(op, form, rows * row_length, dtype,
                                x=_input(ROWS_ELEMENTS, dtype), shape=(rows, row_length))
        _group_cache[key] = {"case": case}
    _run(benchmark, request, op, form, dtype, backend_column, _group_cache[key],
         group_name=f"{op}-{form}-{dtype}-{rows}x{row_length}",
         info={"size": rows * row_length, "row_length": row_length})


@pytest.mark.parametrize("threads", ["1", "all"])
@pytest.mark.parametrize("op", THREAD_OPS)
def test_bench_threads(benchmark, request, op, threads):
    """Thread scaling: the automatic call at 1e7 float32 elements on one thread and on all
    (``fa.set_num_threads``)."""
    case = _bench.make_case(op, "forward", THREADS_SIZE, "float32",
                            x=_input(THREADS_SIZE, "float32"))
    n = 1 if threads == "1" else _bench.cpu_count()
    previous = fa.set_num_threads(n)
    try:
        target = case.fastact()
        rounds, iterations = _plan(target, request.config.getoption("bench_time"))
        benchmark.group = f"threads-{op}-float32-{THREADS_SIZE}"
        benchmark.extra_info.update(backend=AUTO, op=op, form="forward", dtype="float32",
                                    size=THREADS_SIZE, threads=n, bytes=case.bytes_moved,
                                    kind="threads")
        time.sleep(SETTLE_S)
        benchmark.pedantic(target, rounds=rounds, iterations=iterations, warmup_rounds=0)
    finally:
        fa.set_num_threads(previous)


def _from_output(case: _bench.Case, dtype: str):
    """``NAME_backward(grad, y=NAME(x))`` for a backward case built with ``x=`` (same bytes:
    grad and one saved array in, one array out), checked against the ``x=`` result."""
    kwargs = dict(case.kwargs)
    x = kwargs.pop("x")
    forward = getattr(fa, case.spec.public_name("forward"))
    kwargs["y"] = forward(x, **{k: v for k, v in kwargs.items() if k in case.spec.param_names})
    fn, args = case.fn, case.args
    if x.size <= CHECK_UP_TO:
        rtol = 1e-4 if dtype == "float32" else 1e-10
        want = case.fastact()()
        np.testing.assert_allclose(fn(*args, **kwargs), want, rtol=rtol,
                                   atol=rtol * float(np.max(np.abs(want))))
    return lambda: fn(*args, **kwargs)


def _run(benchmark, request, op, form, dtype, backend_column, group, group_name, info):
    """Time one column of one group (shared by test_bench and test_bench_rows)."""
    baseline = NUMPY_BASELINES.get((op, form))
    if baseline is None:
        pytest.fail(f"fastact/_bench.py NUMPY_BASELINES has no numpy-expr baseline for "
                    f"{op}/{form}: add the NumPy expression a user would write", pytrace=False)
    if backend_column in _dispatch.KNOWN:
        if backend_column not in fa.backends():
            reason = fa.backend_info()[backend_column].get("reason", "unknown reason")
            pytest.skip(f"backend {backend_column} unavailable: {reason}")
        if backend_column == "cuda":
            pytest.skip("backend cuda: this suite times host (NumPy) arrays; CUDA is "
                        "benchmarked on device arrays")

    peer = None
    if backend_column in _peers.LIBRARIES:
        (peer,) = [p for p in _peers.peers_for(op, form) if p.library == backend_column]
        if not _peers.available(peer.library):
            pytest.skip(f"peer {peer.library} is not installed (pip install 'fastact[bench]')")
    case: _bench.Case = group["case"]
    info = dict(info, backend=backend_column, op=op, form=form, dtype=dtype,
                elements=case.x.size, shape=list(case.x.shape),
                allocator=getattr(request.config, "fastact_allocator", "default"))
    if backend_column in ("copy", "copy-mt"):
        dst, src = _copy_arrays(group, dtype)
        if backend_column == "copy":
            target = lambda: np.copyto(dst, src)  # noqa: E731
        else:
            target = lambda: _parallel_copy(dst, src)  # noqa: E731
        info.update(bytes=2 * dst.nbytes, in_bytes=src.nbytes, out_bytes=dst.nbytes)
    elif peer is not None:
        target = peer.prepare(case.args, case.kwargs)
        if case.x.size <= CHECK_UP_TO:
            _check_baseline(case, dtype, target, peer.expr)
        info.update(expr=peer.expr, bytes=case.bytes_moved, in_bytes=case.in_nbytes,
                    out_bytes=case.out_nbytes)
    else:
        if backend_column == "numpy-expr":
            if case.x.size <= CHECK_UP_TO:
                _check_baseline(case, dtype)
            target = case.numpy_expr()
            info["expr"] = baseline.expr
        elif backend_column == AUTO_Y:
            target = _from_output(case, dtype)
        else:
            target = case.fastact(None if backend_column == AUTO else backend_column)
        info.update(bytes=case.bytes_moved, in_bytes=case.in_nbytes, out_bytes=case.out_nbytes)

    rounds, iterations = _plan(target, request.config.getoption("bench_time"))
    benchmark.group = group_name
    benchmark.extra_info.update(info)
    time.sleep(SETTLE_S)
    with _bench.OtherLoad() as load:
        benchmark.pedantic(target, rounds=rounds, iterations=iterations, warmup_rounds=0)
    # share of the machine other processes used meanwhile (report.py flags noisy groups)
    benchmark.extra_info.update(other_cpu=load.value, cpus=_bench.cpu_count())


# ------------------------------------------------------------------------------------------------
# losses: the fused in-place cross-entropy gradient at LLM-vocabulary size
# ------------------------------------------------------------------------------------------------

CE_SHAPE = (4096, 32000)


@pytest.mark.parametrize("column", ["numba", "cython", "numpy-expr"])
def test_bench_cross_entropy_in_place(benchmark, request, column):
    """``cross_entropy_and_grad(logits, target, out=logits)`` on a 4096 x 32000 float32
    problem (the gradient overwrites the logits: no second N x C array) against NumPy's
    log_softmax + gather + (softmax - onehot) / N.  Each round restores the logits first
    (``np.copyto``, timed in both columns alike)."""
    if column in _dispatch.KNOWN and column not in fa.backends():
        pytest.skip(f"backend {column} unavailable: {fa.backend_info()[column].get('reason')}")
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal(CE_SHAPE, dtype=np.float32)
    target = rng.integers(0, CE_SHAPE[1], CE_SHAPE[0])
    logits = x0.copy()
    if column == "numpy-expr":
        base = NUMPY_BASELINES[("cross_entropy", "and_grad")].fn

        def target_fn():
            np.copyto(logits, x0)
            return base(logits, target)
    else:
        def target_fn():
            np.copyto(logits, x0)
            return fa.cross_entropy_and_grad(logits, target, out=logits, backend=column)
    target_fn()
    benchmark.group = "cross_entropy-and_grad-in-place-float32-4096x32000"
    benchmark.extra_info.update(backend=column, op="cross_entropy", form="and_grad",
                                dtype="float32", size=logits.size, shape=list(CE_SHAPE),
                                bytes=2 * logits.nbytes)
    benchmark.pedantic(target_fn, rounds=3 if request.config.getoption("bench_quick") else 7,
                       iterations=1, warmup_rounds=0)
