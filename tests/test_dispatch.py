"""Backend listing, information and selection (DESIGN.md sections 1, 2 and 8).

Which backend ran is observed, not assumed: the ``calls`` fixture wraps every kernel of every
available backend module so a test sees which module's kernel executed.  Environment-variable
behaviour is tested in fresh subprocesses (``FASTACT_BACKEND`` is read once at import).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import threading

import numpy as np
import pytest

import fastact as fa
from fastact import _config, _registry

from _subprocess import RECORDER, run_python, subprocess_environment

KNOWN = ("cuda", "numba", "cython", "numpy")
HOST = ("numba", "cython", "numpy")
MODULES = {"numba": "fastact.kernels.numba_cpu", "cython": "fastact.kernels._cython_kernels",
           "numpy": "fastact.kernels.numpy_ref"}
REQUIRED = _config.REQUIRE_BACKENDS


def host_available():
    return [b for b in fa.backends() if b in HOST]


def other_than(name):
    """An available host backend other than ``name`` (skip if there is none)."""
    for b in host_available():
        if b != name:
            return b
    pytest.skip(f"needs a second available host backend besides {name}")


def sigmoid_ref(x):
    return 1 / (1 + np.exp(-np.asarray(x, np.float64)))


@pytest.fixture
def calls(monkeypatch):
    """Wrap every kernel of every available host backend module; the list records who ran."""
    log: list[str] = []
    for name in host_available():
        module = importlib.import_module(MODULES[name])
        for kname in _registry.kernel_names():
            original = getattr(module, kname)

            def wrapper(*args, _original=original, _name=name):
                log.append(_name)
                return _original(*args)

            monkeypatch.setattr(module, kname, wrapper)
    # the small-array fast path caches the serial Numba kernels it found; start it afresh so
    # that calls go through the wrappers (which it will not cache: they have no .serial)
    from fastact import api

    for key in api._FAST:
        monkeypatch.setitem(api._FAST, key, {})
    return log


@pytest.fixture
def no_env_backend():
    if _config.BACKEND is not None or os.environ.get("FASTACT_BACKEND", "").strip():
        pytest.skip("FASTACT_BACKEND is set in this process; precedence is tested in subprocesses")


# ------------------------------------------------------------------------------------------------
# subprocesses
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def subprocess_env(tmp_path_factory):
    return subprocess_environment(tmp_path_factory)


#: the shared recorder plus ``ran(fn, ...)``: which backends ran for one call (or the error)
RECORDER = RECORDER + """
def ran(fn, *args, **kwargs):
    del LOG[:]
    try:
        fn(*args, **kwargs)
    except Exception as exc:
        return [type(exc).__name__, str(exc)]
    return sorted(set(LOG))
"""


# ------------------------------------------------------------------------------------------------
# backends() and backend_info()
# ------------------------------------------------------------------------------------------------

def test_backends_lists_what_is_available():
    names = fa.backends()
    for b in REQUIRED:
        assert b in names, f"required backend {b} missing: {fa.backend_info()[b]}"
    assert "numpy" in names
    if importlib.util.find_spec("numba") is not None:
        assert "numba" in names, fa.backend_info()["numba"]
    if importlib.util.find_spec("fastact.kernels._cython_kernels") is not None:
        assert "cython" in names, fa.backend_info()["cython"]
    assert names == [b for b in KNOWN if b in names], "not in automatic-priority order"
    assert len(set(names)) == len(names)


def test_backend_info():
    info = fa.backend_info()
    names = fa.backends()
    for b in KNOWN:
        entry = info[b]
        assert isinstance(entry["available"], bool)
        assert entry["available"] == (b in names)
        if not entry["available"]:
            assert isinstance(entry["reason"], str) and entry["reason"].strip(), \
                f"{b} unavailable without a reason"
    json.dumps(info, default=str)  # printable
    if "numba" in names:
        import numba

        assert info["numba"]["threading_layer"] in ("tbb", "omp", "workqueue")
        assert info["numba"]["version"] == numba.__version__
        assert info["numba"]["threads"] >= 1
    if "cython" in names:
        assert isinstance(info["cython"]["openmp"], bool)
    if "cuda" not in names:
        assert info["cuda"]["reason"]


# ------------------------------------------------------------------------------------------------
# precedence: argument > use_backend > FASTACT_BACKEND > automatic
# ------------------------------------------------------------------------------------------------

OBSERVED_CALLS = [  # (function name as the dispatch table knows it, call)
    ("sigmoid", lambda b, x: fa.sigmoid(x, backend=b)),
    ("relu_backward", lambda b, x: fa.relu_backward(x, y=x, backend=b)),
    ("prelu_and_derivative", lambda b, x: fa.prelu_and_derivative(x, 0.1, backend=b)),
    ("softmax", lambda b, x: fa.softmax(x, axis=0, backend=b)),
]


@pytest.mark.parametrize("size", [5, 100_000, 2_000_000])
def test_automatic_choice_is_what_runs(calls, no_env_backend, size):
    x = np.linspace(-3, 3, size, dtype=np.float32)
    for op, call in OBSERVED_CALLS:
        chosen = fa.select_backend(op, x)
        assert chosen in host_available()
        if set(host_available()) - {"numpy"}:
            assert chosen != "numpy", "numpy is the last resort"
        del calls[:]
        call(None, x)
        assert set(calls) == {chosen}, f"{op}: select_backend said {chosen}, {calls} ran"


@pytest.mark.parametrize("name", HOST)
def test_argument_selects_backend(calls, name):
    if name not in fa.backends():
        pytest.skip(f"backend {name} unavailable")
    x = np.linspace(-3, 3, 12, dtype=np.float64).reshape(3, 4)
    for op, call in OBSERVED_CALLS:
        del calls[:]
        call(name, x)
        assert set(calls) == {name}, f"{op}(backend={name!r}) ran {calls}"
    np.testing.assert_allclose(fa.sigmoid(x, backend=name), sigmoid_ref(x), rtol=1e-14)


@pytest.mark.parametrize("name", HOST)
def test_context_selects_backend_and_argument_wins(calls, name):
    if name not in fa.backends():
        pytest.skip(f"backend {name} unavailable")
    x = np.linspace(-3, 3, 10, dtype=np.float32)
    other = other_than(name)
    with fa.use_backend(name):
        assert fa.select_backend("sigmoid", x) == name
        del calls[:]
        fa.sigmoid(x)
        fa.softmax(x)
        assert set(calls) == {name}
        del calls[:]
        fa.sigmoid(x, backend=other)
        assert calls == [other], "the backend= argument must beat use_backend"
    del calls[:]
    fa.sigmoid(x)
    assert calls == [fa.select_backend("sigmoid", x)], "leaving use_backend must restore"


def test_use_backend_nesting_restores(no_env_backend):
    x = np.zeros(3)
    auto = fa.select_backend("sigmoid", x)
    outer = "numpy"
    inner = other_than("numpy")
    with fa.use_backend(outer):
        assert fa.select_backend("sigmoid", x) == outer
        with fa.use_backend(inner):
            assert fa.select_backend("sigmoid", x) == inner
            with fa.use_backend(None):
                assert fa.select_backend("sigmoid", x) == auto
            assert fa.select_backend("sigmoid", x) == inner
        assert fa.select_backend("sigmoid", x) == outer
        with pytest.raises(KeyError):
            with fa.use_backend(inner):
                raise KeyError("boom")
        assert fa.select_backend("sigmoid", x) == outer
    assert fa.select_backend("sigmoid", x) == auto


def test_use_backend_is_per_thread(calls, no_env_backend):
    x = np.linspace(-1, 1, 7)
    auto = fa.select_backend("sigmoid", x)
    forced = "numpy" if auto != "numpy" else other_than("numpy")
    seen = {}

    def worker():
        seen["selected"] = fa.select_backend("sigmoid", x)
        before = len(calls)
        fa.sigmoid(x)
        seen["ran"] = calls[before:]

    with fa.use_backend(forced):
        t = threading.Thread(target=worker)
        t.start()
        t.join(60)
        assert not t.is_alive()
        assert fa.select_backend("sigmoid", x) == forced
    assert seen["selected"] == auto, "a thread started inside use_backend must not inherit it"
    assert seen["ran"] == [auto]


def test_use_backend_is_per_task(no_env_backend):
    import asyncio

    x = np.zeros(3)
    auto = fa.select_backend("sigmoid", x)
    forced = "numpy" if auto != "numpy" else other_than("numpy")

    async def task_a(ev_a, ev_b):
        with fa.use_backend(forced):
            ev_a.set()
            await ev_b.wait()
            return fa.select_backend("sigmoid", x)

    async def task_b(ev_a, ev_b):
        await ev_a.wait()
        r = fa.select_backend("sigmoid", x)  # task_a is inside its with block right now
        ev_b.set()
        return r

    async def main():
        ev_a, ev_b = asyncio.Event(), asyncio.Event()
        return await asyncio.gather(task_a(ev_a, ev_b), task_b(ev_a, ev_b))

    assert asyncio.run(main()) == [forced, auto]


# ------------------------------------------------------------------------------------------------
# unknown and unavailable backends
# ------------------------------------------------------------------------------------------------

def _assert_lists_known(msg: str):
    for b in KNOWN:
        assert b in msg, f"message does not list known backend {b!r}: {msg}"


@pytest.mark.parametrize("bad", ["nonsense", "", "numpyy", "cpu"])
def test_unknown_backend_name(bad):
    x = np.zeros(3)
    with pytest.raises(ValueError) as excinfo:
        fa.sigmoid(x, backend=bad)
    _assert_lists_known(str(excinfo.value))
    assert repr(bad) in str(excinfo.value) or bad in str(excinfo.value)
    with pytest.raises(ValueError) as excinfo:
        with fa.use_backend(bad):
            fa.sigmoid(x)
    _assert_lists_known(str(excinfo.value))
    assert not issubclass(type(excinfo.value), fa.BackendUnavailable)


def test_backend_name_is_case_insensitive(calls):
    x = np.zeros(3)
    fa.sigmoid(x, backend="NumPy")
    assert calls == ["numpy"]


def test_select_backend_unknown_op():
    with pytest.raises(ValueError):
        fa.select_backend("no_such_op", np.zeros(3))


def test_unavailable_backend_raises_backend_unavailable():
    if "cuda" in fa.backends():
        pytest.skip("cuda is available here")
    assert issubclass(fa.BackendUnavailable, RuntimeError)
    x = np.zeros(3)
    for call in (lambda: fa.sigmoid(x, backend="cuda"),
                 lambda: fa.softmax(x, backend="cuda"),
                 lambda: fa.prelu_backward(x, x=x, weight=0.1, backend="cuda")):
        with pytest.raises(fa.BackendUnavailable) as excinfo:
            call()
        msg = str(excinfo.value)
        assert "cuda" in msg
        for b in fa.backends():
            assert b in msg, f"message does not list available backend {b}: {msg}"
    with pytest.raises(fa.BackendUnavailable):
        with fa.use_backend("cuda"):
            fa.sigmoid(x)


# ------------------------------------------------------------------------------------------------
# FASTACT_BACKEND and import side effects (subprocesses)
# ------------------------------------------------------------------------------------------------

@pytest.mark.subprocess
def test_env_backend_precedence(subprocess_env):
    compiled = [b for b in host_available() if b != "numpy"]
    if not compiled:
        pytest.skip("needs a compiled backend besides numpy")
    other = compiled[0]
    env = dict(subprocess_env, FASTACT_BACKEND=" NumPy ")
    out = run_python(RECORDER + f"""
x = np.linspace(-2, 2, 9)
res = {{"select": fa.select_backend("sigmoid", x),
       "env": ran(fa.sigmoid, x),
       "env_softmax": ran(fa.softmax, x),
       "argument": ran(fa.sigmoid, x, backend={other!r})}}
with fa.use_backend({other!r}):
    res["context"] = ran(fa.sigmoid, x)
    res["context_select"] = fa.select_backend("sigmoid", x)
    res["argument_in_context"] = ran(fa.sigmoid, x, backend="numpy")
res["value"] = fa.sigmoid(x).tolist()
res["selected_info"] = fa.backend_info()["selected"]
print(json.dumps(res))
""", env)
    assert out["select"] == "numpy"
    assert out["env"] == ["numpy"] and out["env_softmax"] == ["numpy"]
    assert out["argument"] == [other], "argument must beat FASTACT_BACKEND"
    assert out["context"] == [other] and out["context_select"] == other, \
        "use_backend must beat FASTACT_BACKEND"
    assert out["argument_in_context"] == ["numpy"]
    np.testing.assert_allclose(out["value"], sigmoid_ref(np.linspace(-2, 2, 9)), rtol=1e-14)


@pytest.mark.subprocess
def test_env_backend_unavailable(subprocess_env):
    if "cuda" in fa.backends():
        pytest.skip("cuda is available here")
    env = dict(subprocess_env, FASTACT_BACKEND="cuda")
    out = run_python("""
import json
import numpy as np
import fastact as fa  # must not raise
res = {"backends": fa.backends()}
try:
    fa.sigmoid(np.zeros(3))
    res["first_call"] = None
except Exception as exc:
    res["first_call"] = [type(exc).__name__, isinstance(exc, fa.BackendUnavailable),
                         isinstance(exc, RuntimeError), str(exc)]
res["argument"] = fa.sigmoid(np.zeros(2), backend="numpy").tolist()
print(json.dumps(res))
""", env)
    name, is_unavailable, is_runtime, msg = out["first_call"]
    assert is_unavailable and is_runtime, out
    assert "cuda" in msg
    for b in out["backends"]:
        assert b in msg
    assert out["argument"] == [0.5, 0.5]


@pytest.mark.subprocess
def test_env_backend_unknown(subprocess_env):
    env = dict(subprocess_env, FASTACT_BACKEND="nonsense")
    out = run_python("""
import json
import numpy as np
import fastact as fa  # must not raise
res = {}
try:
    fa.relu(np.zeros(3))
    res["first_call"] = None
except Exception as exc:
    res["first_call"] = [type(exc).__name__, isinstance(exc, ValueError), str(exc)]
res["argument"] = fa.relu(np.ones(2), backend="numpy").tolist()
print(json.dumps(res))
""", env)
    name, is_value_error, msg = out["first_call"]
    assert is_value_error, out
    assert "nonsense" in msg
    _assert_lists_known(msg)
    assert out["argument"] == [1.0, 1.0]


@pytest.mark.subprocess
def test_import_is_lazy(subprocess_env):
    out = run_python("""
import json, sys
import fastact as fa
heavy = ["numba", "fastact.kernels.numba_cpu", "fastact.kernels._cython_kernels", "Cython",
         "llvmlite"]
res = {"after_import": [m for m in heavy if m in sys.modules]}
import numpy as np
fa.sigmoid(np.zeros(3), backend="numpy")
fa.softmax(np.zeros((2, 3)), backend="numpy")
res["after_numpy_calls"] = [m for m in heavy if m in sys.modules]
res["all"] = len(fa.__all__)
print(json.dumps(res))
""", subprocess_env)
    assert out["after_import"] == [], f"import fastact imported {out['after_import']}"
    assert out["after_numpy_calls"] == [], \
        f"calls on the numpy backend imported {out['after_numpy_calls']}"


# ------------------------------------------------------------------------------------------------
# threads and warmup
# ------------------------------------------------------------------------------------------------

def test_set_num_threads():
    x = np.linspace(-8, 8, 200_001)
    want = sigmoid_ref(x)
    prev = fa.set_num_threads(1)
    try:
        assert isinstance(prev, int) and prev >= 1
        assert fa.set_num_threads(1) == 1
        for b in host_available():
            np.testing.assert_allclose(fa.sigmoid(x, backend=b), want, rtol=1e-14)
            np.testing.assert_allclose(fa.softmax(x.reshape(1, -1), backend=b)[0],
                                       np.exp(x - x.max()) / np.exp(x - x.max()).sum(),
                                       rtol=1e-12)
        info = fa.backend_info()
        if "numba" in fa.backends():
            assert info["numba"]["threads"] == 1
        if "cython" in fa.backends() and "threads" in info["cython"]:
            assert info["cython"]["threads"] == 1
        assert fa.set_num_threads(2) == 1
        for b in host_available():
            np.testing.assert_allclose(fa.sigmoid(x, backend=b), want, rtol=1e-14)
    finally:
        fa.set_num_threads(prev)


@pytest.mark.parametrize("bad", [0, -1])
def test_set_num_threads_rejects_non_positive(bad):
    prev = fa.set_num_threads(1)
    try:
        with pytest.raises(ValueError):
            fa.set_num_threads(bad)
        assert fa.set_num_threads(1) == 1, "a rejected value must not change the setting"
    finally:
        fa.set_num_threads(prev)


def test_warmup():
    warmed = fa.warmup(["sigmoid"], ["float32"])
    assert isinstance(warmed, list)
    if "numba" in fa.backends():
        assert "numba" in warmed
    warmed = fa.warmup(["softmax", "prelu"], [np.float64])
    x = np.linspace(-3, 3, 10, dtype=np.float32)
    for b in host_available():
        np.testing.assert_allclose(fa.sigmoid(x, backend=b), sigmoid_ref(x), rtol=1e-6)
    with pytest.raises(ValueError):
        fa.warmup(["no_such_op"])


# ------------------------------------------------------------------------------------------------
# the small-array fast path (fastact.api._FAST) must not change what runs or what comes back
# ------------------------------------------------------------------------------------------------

FAST_OPS = list(_registry.elementwise_ops())
#: api's fast-path helpers: the C ones (fastact._fastcall) and their pure-Python twins
FAST_HELPERS = ("_fast_elementwise", "_fast_backward", "_fast_rows", "_fast_row_loss")


@pytest.fixture(params=["c", "python"])
def fast_helpers(request, monkeypatch):
    """Run a fast-path test with the C helpers (fastact._fastcall, built by pip install) and
    again with api's Python twins (what runs where the extension could not be built)."""
    from fastact import api

    if request.param == "c":
        module = pytest.importorskip("fastact._fastcall")
        for name in FAST_HELPERS:
            assert getattr(api, name) is getattr(module, name[len("_fast_"):])
    else:
        for name in FAST_HELPERS:
            monkeypatch.setattr(api, name, getattr(api, name + "_py"))
    return request.param


def _fast_path_forms():
    """(op, form, kernel) of every wrapper with a fast path: the forward, derivative and fused
    forms, the backward from x, and from y for ops whose y-rule takes no parameters."""
    cases = []
    for spec in FAST_OPS:
        for form in ("forward", "derivative", "and_derivative", "backward"):
            cases.append((spec, form, f"{spec.name}_{form}"))
        if spec.y_backward is not None and not spec.params:
            cases.append((spec, "backward", f"{spec.name}_backward_from_y"))
    return cases


@pytest.mark.parametrize("spec, form, kernel", _fast_path_forms(), ids=lambda c: getattr(
    c, "name", c) if not isinstance(c, str) or "_" in c else c)
def test_fast_path_equals_the_normal_path(spec, form, kernel, dispatch_table, fast_helpers):
    from fastact import api

    if "numba" not in fa.backends():
        pytest.skip("the fast path is the Numba backend's")
    # a table without entries: Numba for every size, so that the fast path is enabled (the
    # shipped table may give Cython the small sizes of a function: then there is none)
    dispatch_table(_table({}))
    fn = getattr(fa, spec.public_name(form))
    from_y = kernel.endswith("_from_y")
    x = np.linspace(-6, 6, 257).astype(np.float32)
    grad = np.cos(np.arange(257)).astype(np.float32)
    # the registry's defaults, or example values where a parameter has none (threshold)
    params = {p.name: p.default if p.default is not None else 0.5 + i
              for i, p in enumerate(spec.params)}

    def call(a, g, **kw):
        if form != "backward":
            return fn(a, **params, **kw)
        return fn(g, **{"y" if from_y else "x": a}, **params, **kw)

    operand = fa.sigmoid(x) if from_y else x  # (a y inside every op's range: (0, 1))
    call(operand, grad)  # the first call takes the normal path and fills the table
    if _config.BACKEND is None:
        assert api._FAST[kernel], "fast path not enabled by an automatic call"
    else:  # FASTACT_BACKEND overrides automatic dispatch: no shortcut to Numba
        assert not api._FAST[kernel]
    if spec.params and _config.BACKEND is None:
        # the values were validated by that call and are cached for the fast path (so the
        # registry's defaults must be plain nonzero floats, or strings)
        assert tuple(params.values()) in api._FAST_PARAMS[spec.name], (
            f"{spec.name}: parameters {params} not cached for the fast path")
    for a, g in ((operand, grad), (operand.astype(np.float64), grad.astype(np.float64)),
                 (operand[:0], grad[:0]), (operand[:1].reshape(()), grad[:1].reshape(())),
                 (operand.reshape(257, 1), grad.reshape(257, 1))):
        got = call(a, g)
        want = call(a, g, backend=_config.BACKEND or "numba")  # the normal path
        for got_k, want_k in zip(*(r if form == "and_derivative" else (r,)
                                   for r in (got, want))):
            assert got_k.dtype == want_k.dtype and got_k.shape == want_k.shape
            np.testing.assert_array_equal(got_k, want_k)
            assert got_k is not a and got_k is not g
    if form != "and_derivative":
        # out=: a fresh array, and in place on an input (the fast path writes into out itself
        # where it is apart from the inputs or exactly one of them), against the normal path
        want = call(operand, grad, backend=_config.BACKEND or "numba")
        out = np.full_like(operand, np.nan)
        assert call(operand, grad, out=out) is out
        np.testing.assert_array_equal(out, want)
        for k in range(2 if form == "backward" else 1):  # out = the operand, or grad
            a, g = operand.copy(), grad.copy()
            target = (a, g)[k]
            assert call(a, g, out=target) is target
            np.testing.assert_array_equal(target, want)
        # a partly overlapping out takes the normal path (through a buffer): same values
        buf = np.concatenate([operand, operand[:1]])
        np.testing.assert_array_equal(call(buf[:-1], grad, out=buf[1:]), want)
    if form == "backward":
        # mixed dtypes, shapes or layouts take the normal path: its promotion and errors
        mixed = call(operand, grad.astype(np.float64))
        assert mixed.dtype == np.float64
        np.testing.assert_allclose(mixed, call(operand.astype(np.float64),
                                               grad.astype(np.float64)), rtol=1e-6)
        with pytest.raises(ValueError, match="shape"):
            call(operand, grad[:-1])
        np.testing.assert_array_equal(call(operand[::-1], grad[::-1]),
                                      call(operand, grad)[::-1])
        with pytest.raises(TypeError, match="exactly one"):
            fn(grad, x=x, y=x, **params)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin"])
@pytest.mark.parametrize("form", ["forward", "backward"])
def test_row_fast_path_equals_the_normal_path(name, form, dispatch_table, fast_helpers):
    """The softmax family's fast path (rows along the last axis, no mask, out or backend)
    gives what the normal path gives, for every shape it takes and leaves the rest to it."""
    from fastact import api

    if "numba" not in fa.backends():
        pytest.skip("the fast path is the Numba backend's")
    dispatch_table(_table({}))  # Numba at every size: the fast path is enabled
    fn = getattr(fa, name if form == "forward" else f"{name}_backward")
    kernel = f"{name}_{form}"
    x = np.sin(np.arange(120.0)).astype(np.float32).reshape(3, 40) * 4
    grad = np.cos(np.arange(120.0)).astype(np.float32).reshape(3, 40)

    def call(a, g, **kw):
        if form == "forward":
            return fn(a, **kw)
        return fn(g, y=getattr(fa, name)(a), **kw)

    call(x, grad)  # fills the table
    if _config.BACKEND is not None:
        assert not api._FAST[kernel]
        return
    assert api._FAST[kernel], "fast path not enabled by an automatic call"
    for a, g in ((x, grad), (x.astype(np.float64), grad.astype(np.float64)),
                 (x.reshape(-1), grad.reshape(-1)), (x.reshape(3, 2, 20), grad.reshape(3, 2, 20)),
                 (x[:, :1], grad[:, :1]), (x[:0], grad[:0]), (x[0, 0], grad[0, 0])):
        a, g = np.ascontiguousarray(a), np.ascontiguousarray(g)
        for t in (1.0, 0.5, 2):
            got = call(a, g, temperature=t)
            want = call(a, g, temperature=t, backend="numba")
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
            assert got is not a and got is not g
    # what the fast path leaves to the normal path still works and still raises
    np.testing.assert_array_equal(call(x, grad, axis=-1, where=x > 0),
                                  call(x, grad, where=x > 0, backend="numba"))
    np.testing.assert_array_equal(call(x, grad, axis=0), call(x, grad, axis=0, backend="numba"))
    np.testing.assert_array_equal(call(x, grad, axis=1), call(x, grad, backend="numba"))
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            call(x, grad, temperature=bad)
    if form == "backward":
        y = getattr(fa, name)(x)
        with pytest.raises(ValueError, match="shape"):
            fn(grad[:, :-1], y=y)
        mixed = fn(grad.astype(np.float64), y=y)  # promotion: the normal path's
        assert mixed.dtype == np.float64
        frozen = y.copy()
        frozen.setflags(write=False)  # read-only: the fast path, no read-only compile
        np.testing.assert_array_equal(fn(grad, y=frozen), fn(grad, y=y, backend="numba"))


@pytest.mark.parametrize("name", ["cross_entropy", "nll_loss"])
@pytest.mark.parametrize("form", ["forward", "and_grad", "backward"])
def test_row_loss_fast_path_equals_the_normal_path(name, form, dispatch_table, fast_helpers,
                                                   monkeypatch):
    """cross_entropy / nll_loss (and_grad, backward) on small (N, C) logits with int64 targets:
    the fast path's loss (value and NumPy scalar type) and gradient are bitwise the normal
    path's, and every call it does not take (ignored or out-of-range targets, weights, other
    dtypes, shapes, axes, reductions, smoothing values, grad_loss that is not a plain number)
    still gets the normal path's result or error."""
    from fastact import api

    if "numba" not in fa.backends():
        pytest.skip("the fast path is the Numba backend's")
    dispatch_table(_table({}))  # Numba at every size: the fast path is enabled
    public = getattr(fa, name if form == "forward" else f"{name}_{form}")
    grad_loss = [2.5]  # the backward's (changed below)

    def fn(x, t, **kw):
        return public(grad_loss[0], x, t, **kw) if form == "backward" else public(x, t, **kw)

    rng = np.random.default_rng(3)
    smoothing = {"label_smoothing": 0.1} if name == "cross_entropy" else {}

    def check(x, t, **kw):
        got = fn(x, t, **kw)
        want = fn(x, t, backend=_config.BACKEND or "numba", **kw)  # the normal path
        got, want = (got, want) if form == "and_grad" else ((got,), (want,))
        assert type(got[0]) is type(want[0]), (type(got[0]), type(want[0]))
        assert np.shape(got[0]) == np.shape(want[0]) and np.result_type(got[0]) == \
            np.result_type(want[0])
        np.testing.assert_array_equal(got[0], want[0])
        if form == "backward":
            assert got[0] is not x
        if form == "and_grad":
            assert got[1].dtype == want[1].dtype and got[1].shape == want[1].shape
            np.testing.assert_array_equal(got[1], want[1])
            assert got[1] is not x
        return got[0]

    x = (rng.standard_normal((32, 100)) * 3).astype(np.float32)
    t = rng.integers(0, 100, 32)
    fn(x, t)  # fills the table
    kernel = f"{name}_{form}"
    if _config.BACKEND is not None:
        assert not api._FAST[kernel]
        return
    assert api._FAST[kernel], "fast path not enabled by an automatic call"
    taken = []
    helper = api._fast_row_loss

    def counting(*args):
        result = helper(*args)
        taken.append(result is not None)
        return result

    monkeypatch.setattr(api, "_fast_row_loss", counting)
    check(x, t)
    assert taken == [True], "the fast path did not take a qualifying call"
    # (the last two: above the parallel threshold in elements, and in rows)
    for shape in ((32, 100), (1, 1), (5, 3), (257, 7), (3, 1000), (300, 128), (40000, 2)):
        xs = (rng.standard_normal(shape) * 4).astype(np.float64)
        ts = rng.integers(0, shape[1], shape[0])
        for dtype in (np.float32, np.float64):
            for reduction in ("mean", "sum"):
                check(xs.astype(dtype), ts, reduction=reduction)
                check(xs.astype(dtype), ts, reduction=reduction, axis=-1, **smoothing)
    # what the fast path leaves to the normal path: the same results and errors
    frozen = x.copy()
    frozen.setflags(write=False)
    check(frozen, t)
    t_ignored = t.copy()
    t_ignored[::3] = -100
    check(x, t_ignored)
    check(x, np.where(t > 50, 7, t), ignore_index=7)
    check(x, t.astype(np.int32))
    check(x, t, weight=np.linspace(0.5, 2, 100))
    check(x, t, reduction="none")
    check(x.T.copy(), t, axis=0)
    check(x[:, ::2], t // 2)
    check(x.reshape(4, 8, 100).transpose(0, 2, 1).copy(), t.reshape(4, 8))
    check(x.astype(np.float16), t)
    check(x[:0], t[:0])
    if form == "backward":  # grad_loss kinds: plain numbers fast, the rest the normal path
        for value in (1, -3, 2**53, 2**60, np.float64(0.3), np.float32(0.7), np.array(1.5),
                      np.array([0.25]), float("nan"), float("inf"), 0.0):
            grad_loss[0] = value
            check(x, t)
            check(x, t, reduction="sum")
        grad_loss[0] = np.linspace(0, 1, 32)
        check(x, t, reduction="none")
        grad_loss[0] = True
        with pytest.raises(TypeError, match="grad_loss"):
            fn(x, t)
        grad_loss[0] = 2.5
    if name == "cross_entropy":
        check(x, t, label_smoothing=1)
        check(x, t, label_smoothing=np.float64(0.25))
    huge = np.array([[3e38, -3e38], [-3e38, 3e38]], np.float32)
    with np.errstate(all="raise"):  # (the loss overflows to inf without a warning)
        value = check(huge, np.array([1, 0]), reduction="sum")
        assert form == "backward" or value == np.inf
    for bad in (np.array([0, 100] * 16), np.array([-1] + [0] * 31)):
        with pytest.raises(IndexError) as fast_error:
            fn(x, bad)
        with pytest.raises(IndexError) as normal_error:
            fn(x, bad, backend="numba")
        assert str(fast_error.value) == str(normal_error.value)
    with pytest.raises(ValueError, match="reduction"):
        fn(x, t, reduction="avg")
    with pytest.raises(ValueError, match="shape"):
        fn(x, t[:-1])
    if name == "cross_entropy":
        with pytest.raises(ValueError, match="label_smoothing"):
            fn(x, t, label_smoothing=1.5)


def test_fast_path_with_parameters_takes_only_validated_plain_values(monkeypatch, fast_helpers):
    """Parametrised ops: the fast path runs only parameter values that the normal path has
    validated, passed as plain floats; everything else (bools, ints, NumPy scalars, invalid or
    zero values) takes the normal path with its conversions and errors."""
    from fastact import api

    if "numba" not in fa.backends() or _config.BACKEND is not None:
        pytest.skip("the fast path is automatic dispatch's, on Numba")
    x = np.linspace(-3, 3, 101).astype(np.float32)
    monkeypatch.setitem(api._FAST_PARAMS, "leaky_relu", {})
    cache = api._FAST_PARAMS["leaky_relu"]
    want = fa.leaky_relu(x, negative_slope=0.2, backend="numba")
    first = fa.leaky_relu(x, negative_slope=0.2)
    assert cache == {(0.2,): (0.2,)}
    np.testing.assert_array_equal(fa.leaky_relu(x, negative_slope=0.2), want)
    np.testing.assert_array_equal(first, want)
    # a bool equals 1.0 as a dict key, but validation rejects it: never served from the cache
    fa.leaky_relu(x, negative_slope=1.0)
    with pytest.raises(TypeError, match="negative_slope"):
        fa.leaky_relu(x, negative_slope=True)
    # ints and NumPy scalars are converted by the normal path (and not cached)
    np.testing.assert_array_equal(fa.leaky_relu(x, negative_slope=1),
                                  fa.leaky_relu(x, negative_slope=1.0, backend="numba"))
    np.testing.assert_array_equal(fa.leaky_relu(x, negative_slope=np.float32(0.5)),
                                  fa.leaky_relu(x, negative_slope=0.5, backend="numba"))
    assert set(cache) == {(0.2,), (1.0,), (0.5,)}  # (0.5 from the call with backend=)
    assert all(type(key[0]) is float for key in cache)
    # -0.0 and 0.0 are one dict key but give differently signed zeros: neither is cached
    for slope in (0.0, -0.0, 0.0, -0.0):
        got = fa.leaky_relu(x, negative_slope=slope)
        want = fa.leaky_relu(x, negative_slope=slope, backend="numba")
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
    assert (0.0,) not in cache
    # invalid values keep raising, however often they are passed
    for _ in range(2):
        with pytest.raises(ValueError, match="fastact.elu: alpha"):
            fa.elu(x, alpha=float("nan"))
    # choice parameters (strings) are cached too
    np.testing.assert_array_equal(fa.gelu(x, approximate="tanh"),
                                  fa.gelu(x, approximate="tanh", backend="numba"))
    np.testing.assert_array_equal(fa.gelu(x, approximate="tanh"),
                                  fa.gelu(x, approximate="tanh", backend="numba"))
    assert ("tanh",) in api._FAST_PARAMS["gelu"]
    with pytest.raises(ValueError, match="approximate"):
        fa.gelu(x, approximate="fast")
    # a sweep over many values keeps the cache bounded
    for i in range(3 * api._FAST_PARAMS_MAX):
        fa.leaky_relu(x[:4], negative_slope=0.001 * (i + 1))
    assert len(cache) <= api._FAST_PARAMS_MAX


def test_fast_path_respects_context_and_arguments(monkeypatch, fast_helpers):
    from fastact.kernels import numpy_ref

    x = np.linspace(-2, 2, 64).astype(np.float32)
    fa.relu(x)
    calls = []
    original = numpy_ref.relu_forward

    def recording(*args):
        calls.append(args[0].shape)
        return original(*args)

    monkeypatch.setattr(numpy_ref, "relu_forward", recording)
    if "numpy" in fa.backends():
        with fa.use_backend("numpy"):
            fa.relu(x)
        assert calls, "use_backend('numpy') was bypassed by the fast path"
    calls.clear()
    fa.relu(x, backend="numpy")
    assert calls
    out = np.empty_like(x)
    assert fa.relu(x, out=out) is out
    # float16, non-contiguous and big-endian inputs take the normal path and stay correct
    for a in (x.astype(np.float16), x[::2], x.astype(">f4")):
        np.testing.assert_array_equal(fa.relu(a), np.maximum(a, 0).astype(a.dtype.newbyteorder("=")))


@pytest.mark.parametrize("impl", ["c", "python"])
def test_fast_helpers_take_only_qualifying_arrays(impl):
    """The fast-path helpers run the entry only on exact, C-contiguous, aligned ndarrays of a
    dtype in the table, below its size limit, with grad of the operand's dtype and shape (and
    rows along the last axis); everything else returns None (the normal path runs) and
    nothing is called."""
    from fastact import api

    if impl == "c":
        module = pytest.importorskip("fastact._fastcall")
        elementwise, backward, rows = module.elementwise, module.backward, module.rows
    else:
        elementwise, backward, rows = (api._fast_elementwise_py, api._fast_backward_py,
                                       api._fast_rows_py)
    ran = []

    def entry(*args):
        ran.append(tuple(a.shape if isinstance(a, np.ndarray) else a for a in args))
        args[-1][...] = 7.0  # (the result, filled as a kernel would)

    f32 = np.dtype(np.float32)
    table = {f32: [entry, 100]}
    x = np.linspace(-1, 1, 24, dtype=np.float32)
    raw = np.zeros(24 * 4 + 1, np.uint8)
    unaligned = raw[1:].view(np.float32)
    assert not unaligned.flags.aligned
    refused = [x.astype(np.float64), x.astype(">f4"), x[::2], x.reshape(4, 6).T, unaligned,
               np.linspace(-1, 1, 100, dtype=np.float32), x.view(np.matrix), [0.5, 1.0], None,
               np.float32(0.5)]
    for a in refused:
        assert elementwise(table, a, (), 1) is None
        assert backward(table, np.ones_like(x), a, ()) is None
        assert rows(table, a, None, 1.0, -1) is None
    for g in (x.astype(np.float64), x[:-1], x.reshape(4, 6), x[::-1].copy()[::-1], 1.0):
        assert backward(table, g, x, ()) is None
        assert rows(table, x, g, 1.0, -1) is None
    assert backward(table, None, x, ()) is None
    assert rows(table, x.reshape(4, 6), None, 1.0, 0) is None  # not the last axis
    assert rows(table, x[:0], None, 1.0, -1) is None and rows(table, x[0], None, 1.0, -1) is None
    assert ran == []
    r = elementwise(table, x.reshape(2, 3, 4), (0.5,), 2)
    assert [a.shape for a in r] == [(2, 3, 4)] * 2 and (r[1] == 7).all()
    assert ran == [((24,), 0.5, (24,), (24,))]
    assert backward(table, x, x, ()).shape == (24,) and ran[-1] == ((24,), (24,), (24,))
    assert rows(table, x.reshape(2, 3, 4), x.reshape(2, 3, 4), 2.0, 2).shape == (2, 3, 4)
    assert ran[-1] == ((6, 4), (6, 4), None, 2.0, (6, 4))
    assert elementwise(table, x[:0], (), 1).shape == (0,)  # empty: the kernel's loop is empty
    zero_d = elementwise(table, np.array(x[0]), (), 1)
    assert zero_d.shape == () and zero_d == 7 and ran[-1] == ((1,), (1,))
    # out=: taken where it qualifies as x does, is writeable, and is apart from each input or
    # exactly it; everything else (and any out for the two-result form) is left to the
    # normal path, which raises or goes through a buffer
    ran.clear()
    g = np.linspace(2, 3, 24, dtype=np.float32)
    wide = np.zeros(48, np.float32)
    read_only = np.zeros(24, np.float32)
    read_only.flags.writeable = False
    bad_outs = [np.zeros(24), np.zeros(23, np.float32), np.zeros((4, 6), np.float32),
                wide[::2], read_only, unaligned, np.zeros(24, ">f4"),
                np.zeros(24, np.float32).view(np.matrix), [0.0] * 24, np.float32(0)]
    for out in bad_outs:
        assert elementwise(table, x, (), 1, out) is None
        assert backward(table, g, x, (), out) is None
    assert elementwise(table, x, (), 2, np.zeros(24, np.float32)) is None
    xs = np.concatenate([x, x])
    for shift in (1, 12, 23):  # partial overlap with the input (either side), or with grad
        assert elementwise(table, xs[shift:shift + 24], (), 1, xs[:24]) is None
        assert elementwise(table, xs[:24], (), 1, xs[shift:shift + 24]) is None
        assert backward(table, xs[:24], x, (), xs[shift:shift + 24]) is None
        assert backward(table, x, xs[:24], (), xs[shift:shift + 24]) is None
    assert ran == []
    for out in (np.zeros(24, np.float32), x.copy()):
        assert elementwise(table, x, (), 1, out) is out and (out == 7).all()
    inplace = x.copy()
    assert elementwise(table, inplace, (), 1, inplace) is inplace and (inplace == 7).all()
    out = np.zeros(24, np.float32)
    assert backward(table, g, x, (), out) is out and (out == 7).all()
    for k in range(2):
        args = [g.copy(), x.copy()]
        assert backward(table, args[0], args[1], (), args[k]) is args[k]
    adjacent = np.zeros(48, np.float32)  # touching, not overlapping
    adjacent[:24] = x
    assert elementwise(table, adjacent[:24], (), 1, adjacent[24:]) is not None
    out3 = np.zeros((2, 3, 4), np.float32)
    assert elementwise(table, x.reshape(2, 3, 4), (0.5,), 1, out3) is out3
    assert ran[-1] == ((24,), 0.5, (24,))


@pytest.mark.parametrize("impl", ["c", "python"])
def test_fast_row_loss_helpers_take_only_qualifying_arrays(impl):
    """The row-loss fast-path helper runs the entry only on an exact, C-contiguous, aligned
    (N, C) array of a dtype in the table below its size limit and a 1-D int64 target of N
    classes in [0, C), none equal to ignore_index; it passes the kernel's arguments (unit
    weights, the gradient scale of the reduction times a backward's grad_loss) and sums the
    per-row losses as np.sum."""
    from fastact import api

    if impl == "c":
        row_loss = pytest.importorskip("fastact._fastcall").row_loss
    else:
        row_loss = api._fast_row_loss_py
    ran = []

    def entry(*args):
        ran.append(args)
        losses = args[-2] if isinstance(args[-3], np.ndarray) and args[-3].size == 1 else args[-1]
        if len(args) in (7, 8):  # with the gradient: (..., g, losses, grad)
            args[-2][...] = np.arange(args[-2].size) * 0.1 + 1e-3
            args[-1][...] = 7.0
        else:
            args[-1][...] = np.arange(args[-1].size) * 0.1 + 1e-3
        del losses

    f32 = np.dtype(np.float32)
    table = {f32: [entry, 100]}
    x = np.linspace(-1, 1, 24, dtype=np.float32).reshape(6, 4)
    t = np.array([0, 3, 1, 2, 2, 0])
    ones: dict = {}
    raw = np.zeros(24 * 4 + 1, np.uint8)
    unaligned = raw[1:].view(np.float32).reshape(6, 4)
    refused_x = [x.astype(np.float64), x.astype(">f4"), x[::2], x.T, unaligned, x.reshape(-1),
                 x.reshape(2, 3, 4), np.zeros((10, 10), np.float32), x.view(np.matrix), x[:0],
                 x.tolist(), None]
    refused_t = [t.astype(np.int32), t.astype(np.uint64), t.astype(np.float64), t[:-1],
                 t.reshape(2, 3), np.repeat(t, 2)[::2], np.array([0, 4, 1, 2, 2, 0]),
                 np.array([0, -1, 1, 2, 2, 0]), list(t), None]
    for a in refused_x:
        assert row_loss(table, a, t, -100, None, True, False, ones) is None
    for b in refused_t:
        assert row_loss(table, x, b, -100, 0.0, True, True, ones) is None
    for ignored in (0, 2, 3):  # a target equal to ignore_index: the normal path counts
        assert row_loss(table, x, t, ignored, None, True, False, ones) is None
    assert ran == [] and ones == {}
    parts = np.arange(6) * 0.1 + 1e-3
    total = row_loss(table, x, t, -100, 0.25, False, False, ones)
    assert type(total) is float and total == float(np.sum(parts))
    (xa, ta, w, ii, sm, losses) = ran[-1]
    assert xa is x and ta is t and ii == -100 and sm == 0.25 and losses.shape == (6,)
    assert w.dtype == np.float64 and w.shape == (4,) and (w == 1).all() and ones[4] is w
    total, grad = row_loss(table, x, t, 4, None, True, True, ones)
    assert total == float(np.sum(parts)) / 6
    assert grad.shape == (6, 4) and grad.dtype == np.float32 and (grad == 7).all()
    (xa, ta, w2, ii, g, losses, gr) = ran[-1]
    assert w2 is w and ii == 4 and g.tolist() == [1 / 6] and gr is grad
    # a backward's grad_loss scales the gradient: g * (1 / N) for 'mean', g for 'sum'
    row_loss(table, x, t, -100, None, True, True, ones, 2.5)
    assert ran[-1][4].tolist() == [2.5 * (1 / 6)]
    row_loss(table, x, t, -100, None, False, True, ones, -0.75)
    assert ran[-1][4].tolist() == [-0.75]


def test_float64_sum_is_numpys_sum():
    """fastact._fastcall's pairwise sum (the row-loss fast path's reduction) is bitwise np.sum,
    over the block boundaries of NumPy's pairwise summation."""
    module = pytest.importorskip("fastact._fastcall")
    rng = np.random.default_rng(5)
    for n in list(range(300)) + [511, 512, 513, 1000, 1024, 4097, 65536 + 5, 300001]:
        a = rng.standard_normal(n) * rng.choice([1.0, 1e8, 1e-8], n)
        assert module.float64_sum(a) == float(np.sum(a)), n
    with pytest.raises(TypeError):
        module.float64_sum(np.ones(4, np.float32))
    with pytest.raises(TypeError):
        module.float64_sum(np.ones(8)[::2])


def test_small_read_only_inputs_run_the_writeable_code():
    """Below the parallel threshold, a Numba kernel given read-only inputs runs the machine
    code compiled for writeable ones (numba_cpu.writeable_entry, no views): the same results,
    no new specialisation, the caller's flags kept.  Ops without a fast path: gated units,
    prelu, elementwise and row losses."""
    if "numba" not in fa.backends():
        pytest.skip("numba unavailable")
    from fastact.kernels import numba_cpu

    x = (np.sin(np.arange(240.0)) * 3).astype(np.float32).reshape(4, 60)
    y = np.cos(np.arange(240.0)).astype(np.float32).reshape(4, 60)
    target = np.arange(4) * 7
    cases = {
        "glu_forward": lambda a, b: fa.glu(a, backend="numba"),
        "swiglu_backward": lambda a, b: fa.swiglu_backward(b, a=a, b=b, backend="numba"),
        "prelu_forward": lambda a, b: fa.prelu(a, b[0, :1], backend="numba"),
        "mse_loss_and_grad": lambda a, b: fa.mse_loss_and_grad(a, b, backend="numba"),
        "cross_entropy_and_grad": lambda a, b: fa.cross_entropy_and_grad(a, target,
                                                                         backend="numba"),
    }
    for kernel, call in cases.items():
        want = call(x, y)
        serial = numba_cpu.KERNELS[kernel].serial
        before = list(serial.signatures)
        a, b = x.copy(), y.copy()
        a.setflags(write=False)
        b.setflags(write=False)
        got = call(a, b)
        for w, r in zip(want if isinstance(want, tuple) else (want,),
                        got if isinstance(got, tuple) else (got,)):
            np.testing.assert_array_equal(np.asarray(r), np.asarray(w), err_msg=kernel)
        assert not a.flags.writeable and not b.flags.writeable
        assert list(serial.signatures) == before, (kernel, serial.signatures)
        assert any(key[0] is serial for key in numba_cpu._WRITEABLE_ENTRIES), kernel


def test_read_only_inputs_compile_no_extra_numba_specialisation():
    """A read-only input (a broadcast mask, a read-only memmap) runs the kernel compiled for
    writeable arrays: Numba would otherwise compile a copy per read-only combination."""
    if "numba" not in fa.backends():
        pytest.skip("numba unavailable")
    from fastact.kernels import numba_cpu

    x = np.linspace(-2, 2, 24).reshape(4, 6)
    grad = np.ones((4, 6))
    y = fa.softmax(x, backend="numba")
    fa.softmax_backward(grad, y=y, where=x > 0, backend="numba")
    kernel = numba_cpu.KERNELS["softmax_backward"].serial
    before = len(kernel.signatures)
    for a in (x, grad, y):
        a.setflags(write=False)
    mask = np.broadcast_to(np.array([True, False, True, True, False, True]), (4, 6))
    got = fa.softmax_backward(grad, y=y, where=mask, backend="numba")
    assert len(kernel.signatures) == before, kernel.signatures
    want = fa.softmax_backward(grad.copy(), y=y.copy(), where=mask.copy(), backend="numpy")
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-300)
    assert not y.flags.writeable and not x.flags.writeable  # the caller's arrays as they were


def test_fast_path_takes_read_only_arrays_without_a_new_specialisation(fast_helpers):
    """Read-only inputs on the small-array fast path run the machine code compiled for writeable
    arrays (api._EntryPoint): the same results, the caller's flags kept, and no read-only
    specialisation compiled, for the elementwise forms and the softmax rows."""
    from fastact import api
    from fastact.kernels import numba_cpu

    if "numba" not in fa.backends() or _config.BACKEND is not None:
        pytest.skip("the fast path is automatic dispatch's, on Numba")
    x = (np.sin(np.arange(200.0)) * 4).astype(np.float32).reshape(4, 50)
    g = np.cos(np.arange(200.0)).astype(np.float32).reshape(4, 50)
    calls = {
        "sigmoid_forward": lambda a, b: fa.sigmoid(a),
        "elu_and_derivative": lambda a, b: fa.elu_and_derivative(a, alpha=0.5),
        "tanh_backward": lambda a, b: fa.tanh_backward(b, x=a),
        "softmax_forward": lambda a, b: fa.softmax(a),
        "log_softmax_backward": lambda a, b: fa.log_softmax_backward(b, y=a),
    }
    for kernel, call in calls.items():
        want = call(x, g)  # (fills the fast path's table)
        assert api._FAST[kernel], kernel
        serial = numba_cpu.KERNELS[kernel].serial
        before = list(serial.signatures)
        for frozen in ("x", "g", "both"):
            a, b = x.copy(), g.copy()
            if frozen in ("x", "both"):
                a.setflags(write=False)
            if frozen in ("g", "both"):
                b.setflags(write=False)
            got = call(a, b)
            for w, r in zip(want if isinstance(want, tuple) else (want,),
                            got if isinstance(got, tuple) else (got,)):
                np.testing.assert_array_equal(r, w, err_msg=f"{kernel} read-only {frozen}")
                assert r.flags.writeable
            assert a.flags.writeable == (frozen == "g") and b.flags.writeable == (frozen == "x")
        assert list(serial.signatures) == before, (kernel, serial.signatures)


# ------------------------------------------------------------------------------------------------
# the measured dispatch table (fastact._tuning)
# ------------------------------------------------------------------------------------------------

def _table(choices: dict, **extra):
    from fastact import _tuning

    return _tuning.DispatchTable({"version": _tuning.VERSION, "choices": choices, **extra},
                                 "test")


@pytest.fixture
def dispatch_table():
    """Install tables for one test; the session's table comes back afterwards."""
    from fastact import _dispatch

    saved = _dispatch.dispatch_table()
    yield _dispatch.set_dispatch_table
    _dispatch.set_dispatch_table(saved)


def test_table_lookup_by_function_dtype_and_size():
    t = _table({"gelu": {"float32": [[0, "numba"], [1000, "cython"], [10**6, "numba"]]}})
    assert [t.choice("gelu", "float32", n) for n in (0, 999, 1000, 10**6 - 1, 10**6, 10**9)] \
        == ["numba", "numba", "cython", "cython", "numba", "numba"]
    assert t.choice("gelu", "float64", 5) is None and t.choice("tanh", "float32", 5) is None
    assert t.limit("gelu", "float32", "numba") == 1000
    assert t.limit("gelu", "float32", "cython") == 0
    assert t.limit("tanh", "float32", "numba") >= 1 << 62


@pytest.mark.parametrize("bad", [
    {"version": 0, "choices": {}},
    {"version": 1, "choices": {"gelu": {"float32": []}}},
    {"version": 1, "choices": {"gelu": {"float32": [[5, "numba"]]}}},
    {"version": 1, "choices": {"gelu": {"float32": [[0, "numba"], [9, "cython"], [3, "numba"]]}}},
])
def test_malformed_tables_are_rejected(bad):
    from fastact import _tuning

    with pytest.raises(ValueError):
        _tuning.DispatchTable(bad, "test")


def test_decide_needs_a_clear_win_and_switches_at_the_geometric_mean():
    from fastact import _tuning

    sizes = [1_000, 100_000, 1_000_000]
    # 3% faster is noise (MARGIN 5%): numba stays; 20% faster from 1e5 on: cython from
    # sqrt(1e3 * 1e5) = 10,000
    assert _tuning.decide(sizes, {"numba": [1.0, 1.0, 1.0], "cython": [0.97, 0.97, 0.97]}) \
        == [[0, "numba"]]
    assert _tuning.decide(sizes, {"numba": [1.0, 1.0, 1.0], "cython": [1.2, 0.8, 0.8]}) \
        == [[0, "numba"], [10_000, "cython"]]
    assert _tuning.decide(sizes, {"numba": [1.0, 1.0, 1.0], "cython": [0.5, 0.8, 1.0]}) \
        == [[0, "cython"], [316_227, "numba"]]
    assert _tuning.decide(sizes, {"cython": [1.0, 2.0, 3.0]}) == [[0, "cython"]]


def test_automatic_dispatch_follows_the_table(calls, no_env_backend, dispatch_table):
    compiled = [b for b in ("numba", "cython") if b in fa.backends()]
    if len(compiled) < 2:
        pytest.skip("needs numba and cython")
    dispatch_table(_table({
        "sigmoid": {"float32": [[0, "numba"], [100, "cython"]]},
        "relu": {"float32": [[0, "cython"]], "float64": [[0, "numba"]]},
        "softmax_backward": {"float64": [[0, "cython"]]},
        "cross_entropy_and_grad": {"float32": [[0, "cython"], [50, "numba"]]},
    }))
    cases = [
        (lambda: fa.sigmoid(np.ones(99, np.float32)), "numba"),
        (lambda: fa.sigmoid(np.ones(100, np.float32)), "cython"),
        (lambda: fa.sigmoid(np.ones(100, np.float16)), "cython"),  # computed in float32
        (lambda: fa.sigmoid(np.ones(100)), "numba"),  # float64: not in the table
        (lambda: fa.relu(np.ones(7, np.float32)), "cython"),  # the fast path steps aside
        (lambda: fa.relu(np.ones(7)), "numba"),
        (lambda: fa.softmax_backward(np.ones((3, 4)), y=np.full((3, 4), 0.25)), "cython"),
        (lambda: fa.softmax(np.ones((3, 4))), "numba"),
        (lambda: fa.cross_entropy_and_grad(np.ones((4, 10), np.float32), np.arange(4)),
         "cython"),
        (lambda: fa.cross_entropy_and_grad(np.ones((5, 10), np.float32), np.arange(5)),
         "numba"),
    ]
    for i, (call, want) in enumerate(cases):
        for _ in range(2):  # the second call may take the small-array fast path
            del calls[:]
            call()
            assert set(calls) == {want}, f"case {i}: {calls} ran, the table says {want}"
    x = np.linspace(-3, 3, 500, dtype=np.float32)
    assert fa.select_backend("sigmoid", x) == "cython"
    assert fa.select_backend("sigmoid", x[:50]) == "numba"
    np.testing.assert_allclose(fa.sigmoid(x), sigmoid_ref(x), rtol=1e-6)
    # the precedence rules still win over the table
    del calls[:]
    fa.sigmoid(x, backend="numba")
    with fa.use_backend("numba"):
        fa.sigmoid(x)
        assert fa.select_backend("sigmoid", x) == "numba"
    assert set(calls) == {"numba"}


def test_fast_path_obeys_the_table(dispatch_table, monkeypatch):
    """The fast path runs the serial Numba kernel only where the table says numba, and from
    there the kernel of the backend the table names for the size (as the normal path would),
    without the normal path."""
    from fastact import api
    from fastact.kernels import _cython_kernels as cy

    if not {"numba", "cython"} <= set(fa.backends()) or _config.BACKEND is not None:
        pytest.skip("needs numba, cython and automatic dispatch")
    dispatch_table(_table({"tanh": {"float32": [[0, "numba"], [300, "cython"]],
                                    "float64": [[0, "cython"]]}}))
    x = np.linspace(-2, 2, 500).astype(np.float32)
    fa.tanh(x[:100])  # numba's range: this call records the fast path
    fast = api._FAST["tanh_forward"]
    assert fast[np.dtype(np.float32)][1] == 300 and fast[np.dtype(np.float64)][1] == 0
    ran, normal = [], []
    original, elementwise = cy.tanh_forward, api._elementwise
    monkeypatch.setattr(cy, "tanh_forward", lambda *a: (ran.append(a[0].size), original(*a)))
    monkeypatch.setattr(api, "_elementwise", lambda *a: (normal.append(a), elementwise(*a))[1])
    for a in (x[:299], x[:300], x.astype(np.float64)[:10]):
        np.testing.assert_allclose(fa.tanh(a), np.tanh(a.astype(np.float64)), rtol=1e-6)
    assert ran == [300, 10], ran
    assert not normal, "a qualifying call took the normal path"
    fa.tanh(np.repeat(x, 2)[::2])  # (not contiguous: the normal path; Cython there too)
    assert len(normal) == 1 and ran == [300, 10, 500], ran


@pytest.mark.parametrize("fn_name, kwargs", [
    ("relu", {}), ("leaky_relu", {"negative_slope": 0.2}), ("gelu", {"approximate": "tanh"}),
    ("tanh_backward", {"y": True}), ("elu_backward", {"alpha": 0.5}), ("softmax", {}),
    ("log_softmax_backward", {"y": True})])
def test_fast_path_runs_the_tables_backend_at_every_size(fn_name, kwargs, dispatch_table,
                                                          fast_helpers, monkeypatch):
    """Above the serial limit the fast path calls the kernel of the backend the table names
    for the size (Cython, or Numba's parallel twin from the parallel threshold), bitwise what
    the normal path computes, and the normal path is not taken.  A table filled by a call that
    Numba did not serve first (Numba not loaded yet) is partial until Numba is needed."""
    from fastact import _dispatch, api
    from fastact.kernels import numba_cpu

    if not {"numba", "cython"} <= set(fa.backends()) or _config.BACKEND is not None:
        pytest.skip("needs numba, cython and automatic dispatch")
    big = (numba_cpu.PARALLEL_THRESHOLD // 100 + 40) * 100
    runs = [[0, "numba"], [100, "cython"], [1000, "numba"], [big - 1000, "cython"],
            [big, "numba"]]
    dispatch_table(_table({fn_name: {"float32": runs, "float64": [[0, "cython"]]}}))
    fn = getattr(fa, fn_name)
    rows = "softmax" in fn_name
    base = fn_name.replace("_backward", "")
    kernel = f"{base}_{'backward' if fn_name.endswith('_backward') else 'forward'}"
    if kwargs.get("y") and not rows:
        kernel += "_from_y"

    def call(n, dtype, **kw):
        x = (np.sin(np.arange(n) * 0.37) * 5).astype(dtype)
        if rows:
            x = x.reshape(-1, 10)
        params = {k: v for k, v in kwargs.items() if k != "y"}
        if not fn_name.endswith("_backward"):
            return fn(x, **params, **kw)
        g = np.cos(np.arange(n)).astype(dtype).reshape(x.shape)
        # (y from Cython: a call that loaded Numba would end the "not loaded" case below)
        operand = ({"y": getattr(fa, base)(x, **params, backend="cython")} if kwargs.get("y")
                   else {"x": x})
        return fn(g, **operand, **params, **kw)

    normal, elementwise = [], api._elementwise
    # a first call in Cython's range, with Numba "not loaded": no serial entries yet
    loaded = dict(_dispatch._loaded)
    monkeypatch.delitem(_dispatch._loaded, "numba")
    call(500, np.float32)
    _dispatch._loaded.update(loaded)
    assert api._FAST[kernel].get(api._PARTIAL) and api._FAST[kernel][np.dtype(np.float32)][1] == 0
    call(50, np.float32)  # the ranged entry resolves Numba for the first run: table complete
    assert api._PARTIAL not in api._FAST[kernel]
    assert api._FAST[kernel][np.dtype(np.float32)][1] == 100
    if not rows:
        monkeypatch.setattr(api, "_elementwise",
                            lambda *a: (normal.append(a), elementwise(*a))[1])
    for n, dtype, backend in ((50, np.float32, "numba"), (500, np.float32, "cython"),
                              (2000, np.float32, "numba"), (big - 500, np.float32, "cython"),
                              (big + 100, np.float32, "numba"), (200, np.float64, "cython"),
                              (big + 100, np.float64, "cython")):
        got, want = call(n, dtype), call(n, dtype, backend=backend)
        assert got.dtype == want.dtype == dtype
        np.testing.assert_array_equal(got, want, err_msg=f"{n} {dtype.__name__}")
    # (the calls with a backend= are the only normal-path calls)
    assert not [a for a in normal if a[-1] is None]
    assert len(normal) >= (0 if rows else 7)


OMP_SPIN_PROBE = """
import json, os
import numpy as np
import fastact as fa
x = np.linspace(-1, 1, 4096).astype(np.float32)
y = fa.tanh(x, backend="cython")
print(json.dumps({"spin": fa.backend_info()["cython"].get("omp_spin"),
                  "env": os.environ.get("GOMP_SPINCOUNT"),
                  "ok": bool(np.allclose(y, np.tanh(x), rtol=1e-6))}))
"""


def test_cython_kernels_load_with_a_short_openmp_spin(subprocess_env):
    """The Cython kernels' libgomp is loaded with fastact's GOMP_SPINCOUNT (libgomp's default
    spin kept the cores busy for ~8 ms after each call; see _dispatch.OMP_SPINCOUNT) and the
    variable is gone from the environment afterwards; a user's GOMP_SPINCOUNT or
    OMP_WAIT_POLICY wins."""
    if "cython" not in fa.backends() or not fa.backend_info()["cython"].get("openmp"):
        pytest.skip("the Cython kernels are not built with OpenMP here")
    from fastact import _dispatch

    env = {k: v for k, v in subprocess_env.items()
           if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = run_python(OMP_SPIN_PROBE, env)
    assert out["ok"] and out["env"] is None
    assert out["spin"] == f"GOMP_SPINCOUNT={_dispatch.OMP_SPINCOUNT} (fastact's default)"
    out = run_python(OMP_SPIN_PROBE, dict(env, GOMP_SPINCOUNT="123"))
    assert out["ok"] and out["env"] == "123" and out["spin"] == "as set by GOMP_SPINCOUNT=123"
    out = run_python(OMP_SPIN_PROBE, dict(env, OMP_WAIT_POLICY="passive"))
    assert out["ok"] and out["env"] is None and "OMP_WAIT_POLICY=passive" in out["spin"]


def test_cache_table_environment_and_info(tmp_path, subprocess_env):
    """FASTACT_DISPATCH_TABLE: a file, 'off', or a bad file (ignored with a warning);
    backend_info()['dispatch'] says which table is active."""
    from fastact import _tuning

    good = tmp_path / "table.json"
    _tuning.write({"version": _tuning.VERSION, "created": "2026-12-06T00:00:00+00:00",
                   "machine": {"cpu": "test cpu", "threads": 2}, "backends": ["numba"],
                   "choices": {"elu": {"float64": [[0, "numpy"]]}}}, str(good))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    probe = RECORDER + """
x = np.linspace(-1, 1, 10)
print(json.dumps({"info": fa.backend_info()["dispatch"], "ran": ran(fa.elu, x),
                  "value": fa.elu(x).tolist()}))
"""
    out = run_python(probe, dict(subprocess_env, FASTACT_DISPATCH_TABLE=str(good)))
    assert out["ran"] == ["numpy"] and str(good) in out["info"]["source"]
    assert out["info"]["machine"] == "test cpu" and out["info"]["entries"] == 1
    want = np.where(np.linspace(-1, 1, 10) > 0, np.linspace(-1, 1, 10),
                    np.expm1(np.linspace(-1, 1, 10)))
    np.testing.assert_allclose(out["value"], want, rtol=1e-15)
    for setting in ("off", str(bad)):
        out = run_python(probe, dict(subprocess_env, FASTACT_DISPATCH_TABLE=setting))
        assert out["info"]["source"] is None and out["info"]["why"], out["info"]
        assert out["ran"] == [fa.backends()[0] if fa.backends()[0] != "cuda" else
                              fa.backends()[1]]


def test_shipped_table_is_valid_and_names_real_functions():
    from fastact import _tuning

    table = _tuning.read(_tuning.SHIPPED_PATH)
    names = {spec.public_name(form) for spec in _registry.OPS for form in spec.forms}
    unknown = set(table.data["choices"]) - names
    assert not unknown, f"the shipped table names functions that do not exist: {unknown}"
    for per_dtype in table.data["choices"].values():
        assert set(per_dtype) <= {"float32", "float64"}
        for runs in per_dtype.values():
            assert {name for _, name in runs} <= set(_tuning.CANDIDATES)
    assert table.data["machine"]["cpu"] and table.data["sizes"]


@pytest.mark.subprocess
def test_tune_command_writes_a_table_that_dispatch_uses(tmp_path, subprocess_env):
    if not {"numba", "cython"} <= set(fa.backends()):
        pytest.skip("tune compares numba and cython")
    import subprocess
    import sys

    from fastact import _tuning

    path = tmp_path / "tuned.json"
    env = dict(subprocess_env, FASTACT_DISPATCH_TABLE=str(path))
    proc = subprocess.run(
        [sys.executable, "-m", "fastact", "tune", "--functions", "relu", "gelu_backward",
         "--sizes", "1000", "100000", "--dtypes", "float32", "--min-time", "0.002",
         "--output", str(path)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "table written to" in proc.stdout and "tune" in proc.stderr  # the progress bar
    table = _tuning.read(str(path))
    # an op name selects all its forms, a function name just that function
    expected = {"relu", "relu_derivative", "relu_and_derivative", "relu_backward",
                "gelu_backward"}
    assert set(table.data["choices"]) == expected
    for key in expected:
        timings = table.data["timings"][key]["float32"]
        assert set(timings) == {"numba", "cython"} and all(len(v) == 2 for v in timings.values())
        assert all(t > 0 for v in timings.values() for t in v)
        assert table.data["choices"][key]["float32"] == _tuning.decide([1000, 100000], timings)
    shown = subprocess.run([sys.executable, "-m", "fastact", "tune", "--show"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0 and str(path) in shown.stdout, shown.stderr
    info = subprocess.run([sys.executable, "-m", "fastact", "info"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert f"dispatch table: FASTACT_DISPATCH_TABLE: {path}" in info.stdout, info.stdout
