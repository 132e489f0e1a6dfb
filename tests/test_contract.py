"""The API contract (DESIGN.md sections 1, 3 and 8), generated from the registry.

Every op and form of :data:`fastact._registry.OPS` is called through
:func:`fastact._tools.example_call` on every host backend and checked against the arrays
contract: dtypes, shapes and layouts in, C-contiguous native arrays out, ``out=`` semantics,
inputs never modified, errors raised before anything is written and identical on every backend,
parameter checks, NaN/inf behaviour, kinks, no RuntimeWarning, and the softmax-family rules.

Expected values come from the test oracle (``tests/oracle.py``: the numpy reference's formulas in
long double, validated against mpmath) with loose tolerances: ULP accuracy is tested in
``test_accuracy.py``.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
import pytest

import fastact as fa
from fastact import _registry
from fastact._tools import example_call

try:
    import oracle
except ImportError:  # pragma: no cover - tests/ imported as a package
    from tests import oracle

try:
    from numpy.exceptions import AxisError
except ImportError:  # pragma: no cover - numpy < 1.25
    AxisError = np.AxisError

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
FLOAT_DTYPES = (F16, F32, F64)
UTILITIES = {"BackendUnavailable", "backends", "backend_info", "select_backend", "use_backend",
             "set_num_threads", "warmup", "plot", "plottable", "__version__"}
SENTINEL = 1234.0  # exactly representable in float16


# ------------------------------------------------------------------------------------------------
# the cases: every op x form (x backward from y where the registry allows it with defaults)
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    spec: _registry.OpSpec
    form: str
    use_y: bool = False

    @property
    def public(self) -> str:
        return self.spec.public_name(self.form)

    @property
    def fname(self) -> str:
        return "fastact." + self.public

    @property
    def pair(self) -> bool:
        """Forms returning two arrays (and taking a 2-tuple ``out``)."""
        return self.form == "and_derivative" or (self.form == "backward"
                                                 and self.spec.kind == "channel")

    def __str__(self) -> str:
        return self.public + ("[y]" if self.use_y else "")


def _cases() -> list[Case]:
    cases = []
    for spec in _registry.OPS:
        # losses and gated units have their own contract tests (tests/test_losses.py,
        # tests/test_gated.py): other signatures
        if spec.kind in ("loss", "gated"):
            continue
        for form in spec.forms:
            cases.append(Case(spec, form))
            if (form == "backward" and spec.kind != "rowwise" and spec.y_backward is not None
                    and spec.y_backward(spec.defaults)):
                cases.append(Case(spec, form, use_y=True))
    return cases


CASES = _cases()


def result_shape(case: Case, shape: tuple, axis: int = -1, keepdims: bool = False) -> tuple:
    """Shape of the (first) result for an input of ``shape``: the input's, or the reduced shape
    of a row reduction (logsumexp)."""
    if case.spec.kind == "rowwise" and _registry.reduces(case.spec):
        if not shape:
            return ()
        ax = axis % len(shape)
        return shape[:ax] + ((1,) if keepdims else ()) + shape[ax + 1:]
    return shape
ELEMENTWISE_CASES = [c for c in CASES if c.spec.kind in ("elementwise", "channel")]
ROWWISE_SPECS = [s for s in _registry.OPS if s.kind == "rowwise"]
PARAM_SPECS = [(s, p) for s in _registry.OPS for p in s.params
               if s.kind not in ("loss", "gated") and not p.choices]
#: string parameters with a fixed set of values (gelu's approximate)
CHOICE_SPECS = [(s, p) for s in _registry.OPS for p in s.params
                if s.kind not in ("loss", "gated") and p.choices]
case_param = pytest.mark.parametrize("case", CASES, ids=str)

#: The array-layer tests (layouts, out=, dtypes, bad arguments) run on these cases only: every
#: non-elementwise op, and the elementwise ops of oracle.LAYER_OPS, which cover each kind of
#: signature.  The layer (_validate and the generated wrappers) is shared by all elementwise
#: ops; each op's own numerics (values, NaN, inf, extremes, kinks) are tested for all of them.
LAYER_CASES = [c for c in CASES if c.spec.kind != "elementwise" or c.spec.name in oracle.LAYER_OPS]
layer_param = pytest.mark.parametrize("case", LAYER_CASES, ids=str)


def base_x(dtype=F32, shape=(2, 3, 4), lo=-3.0, hi=3.0) -> np.ndarray:
    n = math.prod(shape)
    return np.linspace(lo, hi, n).astype(dtype).reshape(shape)


def build(case: Case, x: np.ndarray, params: dict | None = None):
    fn, args, kwargs = example_call(case.spec, case.form, x, use_y=case.use_y, params=params)
    return fn, list(args), dict(kwargs)


def same_shape_arrays(args, kwargs, shape):
    """(where, key) of every array argument of the input's shape (x, grad, y; not weight)."""
    found = [("args", i) for i, a in enumerate(args)
             if isinstance(a, np.ndarray) and a.shape == shape]
    found += [("kwargs", k) for k in ("x", "y")
              if isinstance(kwargs.get(k), np.ndarray) and kwargs[k].shape == shape]
    return found


def get_arg(args, kwargs, loc):
    return args[loc[1]] if loc[0] == "args" else kwargs[loc[1]]


def set_arg(args, kwargs, loc, value):
    if loc[0] == "args":
        args[loc[1]] = value
    else:
        kwargs[loc[1]] = value


def all_arrays(args, kwargs):
    return [a for a in list(args) + list(kwargs.values()) if isinstance(a, np.ndarray)]


def snapshot(arrays):
    return [(a, a.tobytes(), a.dtype, a.shape) for a in arrays]


def assert_unchanged(snap, what=""):
    for a, data, dtype, shape in snap:
        assert a.dtype == dtype and a.shape == shape, f"input changed dtype/shape {what}"
        assert a.tobytes() == data, f"an input array was modified {what}"


def as_tuple(r):
    return r if isinstance(r, tuple) else (r,)


# ------------------------------------------------------------------------------------------------
# float64 oracle (independent of the numpy backend)
# ------------------------------------------------------------------------------------------------

def f64(a):
    return np.array(a, dtype=np.float64)


def _keep_nan(x, r):
    return np.where(np.isnan(x), np.nan, r)


def _ref(name, part, a, p):
    """``part`` of an elementwise op in float64, from the oracle's formulas (the numpy
    reference's pure formulas evaluated in long double, themselves checked against mpmath in
    ``test_accuracy.py::test_oracle_*``), so every registered op is covered with no list here."""
    spec = _registry.get(name)
    params = {q.name: p[q.name] for q in spec.params}
    kw = {"y": a} if part == "derivative_from_y" else {"x": a}
    r = oracle.evaluate(spec, part, oracle.LONG, params=params, **kw)
    return _keep_nan(a, r.astype(np.float64))


def ref_value(name, x, p):
    return _ref(name, "forward", x, p)


def ref_derivative(name, x, p):
    return _ref(name, "derivative", x, p)


def ref_derivative_from_y(name, y, p):
    return _ref(name, "derivative_from_y", y, p)


def _prelu_w(x, weight):
    w = f64(weight).reshape(-1)
    if w.size == 1 or x.ndim < 2:
        return w.reshape(())
    return w.reshape((1, w.size) + (1,) * (x.ndim - 2))


def ref_logsumexp(x, axis=-1, where=None, temperature=1.0, keepdims=False):
    """T log sum exp(x / T) over the kept entries, float64, torch's special values."""
    x = f64(x)
    if x.ndim == 0:
        return ref_logsumexp(x.reshape(1), 0,
                             None if where is None else np.asarray(where).reshape(1),
                             temperature).reshape(())
    keep = (np.ones(x.shape, bool) if where is None
            else np.broadcast_to(np.asarray(where, bool), x.shape))
    with np.errstate(all="ignore"):
        xm = np.where(keep, x, -np.inf)
        m = np.max(np.where(np.isnan(xm), -np.inf, xm), axis=axis, keepdims=True,
                   initial=-np.inf)
        shift = np.where(np.isfinite(m), m, 0.0)
        s = np.where(keep, np.exp((x - shift) / temperature), 0.0).sum(axis=axis, keepdims=True)
        r = np.where(np.isfinite(m), m + temperature * np.log(s), m)
        r = np.where(np.isnan(xm).any(axis=axis, keepdims=True), np.nan, r)
    return r if keepdims else np.squeeze(r, axis=axis)


def ref_rows(name, x, axis=-1, where=None, temperature=1.0, keepdims=False):
    if name == "logsumexp":
        return ref_logsumexp(x, axis, where, temperature, keepdims)
    if name == "softmin":
        return ref_rows("softmax", -f64(x), axis, where, temperature)
    x = f64(x)
    if x.ndim == 0:
        return ref_rows(name, x.reshape(1), 0,
                        None if where is None else np.asarray(where).reshape(1),
                        temperature).reshape(())
    keep = (np.ones(x.shape, bool) if where is None
            else np.broadcast_to(np.asarray(where, bool), x.shape))
    xm, km = np.moveaxis(x, axis, -1), np.moveaxis(keep, axis, -1)
    if xm.size == 0:
        return np.moveaxis(np.empty(xm.shape), -1, axis)
    log = name == "log_softmax"
    with np.errstate(all="ignore"):
        z = np.where(km, xm / temperature, -np.inf)
        m = np.max(z, axis=-1, keepdims=True)
        e = np.where(km, np.exp(z - m), 0.0)
        s = e.sum(axis=-1, keepdims=True)
        r = np.where(km, (z - m) - np.log(s), -np.inf) if log else np.where(km, e / s, 0.0)
    r[~km.any(axis=-1)] = -np.inf if log else 0.0
    return np.moveaxis(r, -1, axis)


def ref_rows_backward(name, grad, y, axis=-1, where=None, temperature=1.0):
    if name == "softmin":  # softmin(x) = softmax(-x): the softmax vjp with -T
        return ref_rows_backward("softmax", grad, y, axis, where, -temperature)
    g, y = f64(grad), f64(y)
    if y.ndim == 0:
        return ref_rows_backward(name, g.reshape(1), y.reshape(1), 0,
                                 None if where is None else np.asarray(where).reshape(1),
                                 temperature).reshape(())
    keep = (np.ones(y.shape, bool) if where is None
            else np.broadcast_to(np.asarray(where, bool), y.shape))
    gm, ym, km = (np.moveaxis(a, axis, -1) for a in (g, y, keep))
    with np.errstate(all="ignore"):
        if name == "log_softmax":
            s = np.where(km, gm, 0.0).sum(axis=-1, keepdims=True)
            r = (gm - np.exp(ym) * s) / temperature
        else:
            s = np.where(km, gm * ym, 0.0).sum(axis=-1, keepdims=True)
            r = ym * (gm - s) / temperature
    return np.moveaxis(np.where(km, r, 0.0), -1, axis)


def expected(case: Case, args, kwargs):
    """float64 expectation of ``fn(*args, **kwargs)`` (a tuple for two-result forms)."""
    spec, form = case.spec, case.form
    if spec.kind == "rowwise":
        opts = {k: kwargs[k] for k in ("axis", "where", "temperature", "keepdims")
                if k in kwargs}
        if form == "forward":
            return ref_rows(spec.name, args[0], **opts)
        return ref_rows_backward(spec.name, args[0], kwargs["y"], **opts)
    if spec.kind == "channel":
        if form == "backward":
            grad, x, weight = f64(args[0]), f64(kwargs["x"]), kwargs["weight"]
        else:
            grad, x, weight = None, f64(args[0]), (args[1] if len(args) > 1
                                                   else kwargs["weight"])
        w = _prelu_w(x, weight)
        with np.errstate(all="ignore"):
            value = _keep_nan(x, np.where(x > 0, x, w * x))
            deriv = _keep_nan(x, np.where(x > 0, 1.0, w * np.ones_like(x)))
            if form == "forward":
                return value
            if form == "derivative":
                return deriv
            if form == "and_derivative":
                return value, deriv
            contrib = np.where(x > 0, 0.0, grad * x)
        wshape = np.shape(weight)
        if w.ndim == 0:
            gw = np.asarray(contrib.sum()).reshape(wshape)
        else:
            axes = tuple(i for i in range(x.ndim) if i != 1)
            gw = contrib.sum(axis=axes).reshape(wshape)
        with np.errstate(all="ignore"):
            return grad * deriv, gw
    p = {q.name: kwargs.get(q.name, q.default) for q in spec.params}
    if form == "forward":
        return ref_value(spec.name, f64(args[0]), p)
    if form == "derivative":
        return ref_derivative(spec.name, f64(args[0]), p)
    if form == "and_derivative":
        x = f64(args[0])
        return ref_value(spec.name, x, p), ref_derivative(spec.name, x, p)
    grad = f64(args[0])
    with np.errstate(all="ignore"):
        if "y" in kwargs:
            return grad * ref_derivative_from_y(spec.name, f64(kwargs["y"]), p)
        return grad * ref_derivative(spec.name, f64(kwargs["x"]), p)


RTOL = {F16: 4e-3, F32: 2e-6, F64: 1e-13}


def assert_close(actual, want, dtype, what=""):
    actual_t, want_t = as_tuple(actual), as_tuple(want)
    assert len(actual_t) == len(want_t), f"{what}: expected {len(want_t)} results"
    for i, (a, w) in enumerate(zip(actual_t, want_t)):
        a = np.asarray(a)
        w = np.asarray(w, dtype=np.float64)
        assert a.shape == w.shape, f"{what}: result {i} has shape {a.shape}, expected {w.shape}"
        rtol = RTOL[np.dtype(dtype).newbyteorder("=")]
        finite = w[np.isfinite(w)]
        atol = rtol * (float(np.max(np.abs(finite))) if finite.size else 1.0)
        np.testing.assert_allclose(a.astype(np.float64), w, rtol=rtol, atol=atol,
                                   equal_nan=True, err_msg=f"{what}: result {i}")


def assert_fresh_result(result, shape, dtype, what=""):
    for r in as_tuple(result):
        assert isinstance(r, np.ndarray), f"{what}: result is {type(r).__name__}"
        assert r.flags.c_contiguous, f"{what}: result is not C-contiguous"
        assert r.dtype.isnative, f"{what}: result has non-native byte order {r.dtype.str}"
        assert r.dtype == np.dtype(dtype).newbyteorder("="), f"{what}: result dtype {r.dtype}"
    results = as_tuple(result)
    assert results[0].shape == shape, f"{what}: shape {results[0].shape}, expected {shape}"


def run_case(case, backend, x, *, params=None, out=None, extra=None):
    fn, args, kwargs = build(case, x, params)
    kwargs.update(extra or {})
    want = expected(case, args, kwargs)
    return fn(*args, backend=backend, out=out, **kwargs), want


def out_like(case, want, dtype):
    """Fresh writeable out buffer(s) for ``case`` (a tuple for two-result forms)."""
    items = [np.full(np.shape(w), SENTINEL, dtype=dtype) for w in as_tuple(want)]
    return tuple(items) if case.pair else items[0]


# ------------------------------------------------------------------------------------------------
# public names and kernel names
# ------------------------------------------------------------------------------------------------

def test_public_names_equal_registry():
    names = set(fa.__all__) - UTILITIES
    assert names == set(_registry.public_names())
    assert len(fa.__all__) == len(set(fa.__all__)), "duplicate names in __all__"
    for name in fa.__all__:
        assert hasattr(fa, name), f"fastact.__all__ lists {name} but fastact lacks it"
    for name in _registry.public_names():
        assert callable(getattr(fa, name))


def _backend_modules():
    from fastact.kernels import numba_cpu, numpy_ref

    modules = {"numpy": numpy_ref, "numba": numba_cpu}
    if "cython" in fa.backends():
        from fastact.kernels import _cython_kernels

        modules["cython"] = _cython_kernels
    return modules


@pytest.mark.parametrize("name", ["numba", "cython", "numpy"])
def test_backend_module_defines_every_kernel(name):
    if name not in fa.backends():
        pytest.skip(f"backend {name} unavailable: {fa.backend_info()[name].get('reason')}")
    module = _backend_modules()[name]
    missing = [k for k in _registry.kernel_names() if not callable(getattr(module, k, None))]
    assert not missing, f"{module.__name__} lacks kernels {missing}"


# ------------------------------------------------------------------------------------------------
# dtypes
# ------------------------------------------------------------------------------------------------

@case_param
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_float_dtype_kept(case, backend, dtype):
    result, want = run_case(case, backend, base_x(dtype))
    assert_fresh_result(result, result_shape(case, (2, 3, 4)), dtype, str(case))
    if case.spec.kind == "channel" and case.form == "backward":
        assert result[1].shape == (3,) and result[1].dtype == dtype  # like the weight
    assert_close(result, want, dtype, str(case))


BAD_DTYPES = [np.int32, np.int64, np.uint8, np.bool_, np.complex64, np.complex128, np.object_,
              np.longdouble]


def _bad_array(dtype):
    a = np.arange(12).reshape(3, 4) % 3 - 1
    return a.astype(dtype)


def _bad_scalars():
    return [np.int64(1), np.int32(1), np.bool_(True), np.complex128(1 + 0j),
            np.longdouble(0.5)]


def _check_dtype_error(excinfo, fname, argname):
    msg = str(excinfo.value)
    assert fname in msg, msg
    assert argname in msg, msg
    assert "astype" in msg, msg


@layer_param
@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
def test_bad_dtype_rejected(case, backend, dtype):
    if np.dtype(dtype) == np.dtype(np.longdouble) and np.finfo(np.longdouble).bits == 64:
        pytest.skip("longdouble is float64 on this platform")
    bad = _bad_array(dtype)
    fn, args, kwargs = build(case, base_x(F32, (3, 4)))
    for loc in same_shape_arrays(args, kwargs, (3, 4)):
        a2, k2 = list(args), dict(kwargs)
        set_arg(a2, k2, loc, bad)
        argname = "grad" if loc == ("args", 0) and case.form == "backward" else (
            "x" if loc[0] == "args" else loc[1])
        with pytest.raises(TypeError) as excinfo:
            fn(*a2, backend=backend, **k2)
        _check_dtype_error(excinfo, case.fname, argname)


@layer_param
def test_numpy_scalar_of_bad_dtype_rejected(case, backend):
    fn, args, kwargs = build(case, np.array(0.5, F32))
    for scalar in _bad_scalars():
        if isinstance(scalar, np.longdouble) and np.finfo(np.longdouble).bits == 64:
            continue
        for loc in same_shape_arrays(args, kwargs, ()):
            a2, k2 = list(args), dict(kwargs)
            set_arg(a2, k2, loc, scalar)
            argname = "grad" if loc == ("args", 0) and case.form == "backward" else (
                "x" if loc[0] == "args" else loc[1])
            with pytest.raises(TypeError) as excinfo:
                fn(*a2, backend=backend, **k2)
            _check_dtype_error(excinfo, case.fname, argname)


@pytest.mark.parametrize("bad", [None, "1.0", True, 1 + 2j, [1.0, "a"], {1.0: 2.0}],
                         ids=["None", "str", "bool", "complex", "mixedlist", "dict"])
def test_non_numeric_python_input_rejected(backend, bad):
    with pytest.raises(TypeError, match="fastact.sigmoid"):
        fa.sigmoid(bad, backend=backend)


@pytest.mark.parametrize("value, shape", [
    (0.5, ()), (2, ()), (-3, ()), ([1, 2, 3], (3,)), ([0.5, -1.0], (2,)),
    ([[1, -2.5], [3, 0.25]], (2, 2)), ([[[1.0]], [[2.0]]], (2, 1, 1)), ([], (0,)),
])
def test_python_numbers_give_float64(backend, value, shape):
    for case in ELEMENTWISE_CASES:
        if case.form == "backward" or case.spec.kind == "channel":
            continue
        fn = getattr(fa, case.public)
        params = case.spec.defaults
        result = fn(value, backend=backend, **params)
        for r in as_tuple(result):
            r = np.asarray(r)
            assert r.dtype == F64, f"{case}: {value!r} gave {r.dtype}"
            assert r.shape == shape, f"{case}: {value!r} gave shape {r.shape}"
        assert_close(result, expected(case, [np.asarray(value, float)], params), F64, str(case))
    # backward: grad and x (or y) as lists
    g = np.ones(shape).tolist() if shape else 1.0
    for r in (fa.relu_backward(g, x=value, backend=backend),
              fa.sigmoid_backward(g, y=value, backend=backend),
              fa.prelu(value, 0.25, backend=backend),
              fa.prelu_backward(g, x=value, weight=0.25, backend=backend)[0],
              fa.softmax(value, backend=backend),
              fa.log_softmax_backward(g, y=value, backend=backend)):
        assert np.asarray(r).dtype == F64 and np.shape(r) == shape


@layer_param
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_zero_dim_in_zero_dim_out(case, backend, dtype):
    result, want = run_case(case, backend, np.array(-0.75, dtype))
    for r in as_tuple(result)[:1 if case.spec.kind == "channel" else 2]:
        r = np.asarray(r)
        assert r.shape == () and r.dtype == dtype
    assert_close(result, want, dtype, str(case))


@layer_param
def test_numpy_float_scalar_keeps_dtype(case, backend):
    fn, args, kwargs = build(case, np.array(0.75, F32))
    for loc in same_shape_arrays(args, kwargs, ()):
        set_arg(args, kwargs, loc, np.float32(get_arg(args, kwargs, loc)))
    result = fn(*args, backend=backend, **kwargs)
    for r in as_tuple(result)[:1 if case.spec.kind == "channel" else 2]:
        r = np.asarray(r)
        assert r.shape == () and r.dtype == F32
    assert_close(result, expected(case, args, kwargs), F32, str(case))


@layer_param
@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 4), (2, 0, 3)], ids=str)
def test_empty_in_empty_out(case, backend, shape):
    for dtype in FLOAT_DTYPES:
        result, want = run_case(case, backend, np.zeros(shape, dtype))
        rshape = result_shape(case, shape)
        assert_fresh_result(result, rshape, dtype, str(case))
        for r in as_tuple(result)[:1 if case.spec.kind == "channel" else 2]:
            assert r.shape == rshape
        if rshape != shape:  # a reduction over an empty axis: -inf (torch, scipy)
            assert_close(result, want, dtype, str(case))
            assert np.all(result == -np.inf) or result.size == 0


# ------------------------------------------------------------------------------------------------
# layouts: any strides and byte order in, C-contiguous native out, inputs never modified
# ------------------------------------------------------------------------------------------------

def _lay_transposed(a, path):
    return np.ascontiguousarray(a.T).T


def _lay_negative(a, path):
    idx = (slice(None, None, -1),) * a.ndim
    return np.ascontiguousarray(a[idx])[idx]


def _lay_broadcast(a, path):
    return np.broadcast_to(a[:1, :, :1], a.shape)


def _lay_fortran(a, path):
    return np.asfortranarray(a)


def _lay_big_endian(a, path):
    return a.astype(a.dtype.newbyteorder(">"))


def _lay_read_only(a, path):
    b = a.copy()
    b.flags.writeable = False
    return b


def _lay_memmap(a, path):
    m = np.memmap(path, dtype=a.dtype, mode="w+", shape=a.shape)
    m[...] = a
    m.flush()
    del m
    return np.memmap(path, dtype=a.dtype, mode="r", shape=a.shape)


def _lay_strided(a, path):
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


LAYOUTS = {
    "transposed": (_lay_transposed, F32),
    "negative_stride": (_lay_negative, F32),
    "broadcast_zero_stride": (_lay_broadcast, F32),
    "fortran": (_lay_fortran, F64),
    "big_endian_f4": (_lay_big_endian, F32),
    "big_endian_f8": (_lay_big_endian, F64),
    "read_only": (_lay_read_only, F32),
    "memmap": (_lay_memmap, F32),
    "strided_view": (_lay_strided, F16),
}


@layer_param
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_any_layout_in_c_contiguous_native_out(case, backend, layout, tmp_path):
    transform, dtype = LAYOUTS[layout]
    fn, args, kwargs = build(case, base_x(dtype))
    for i, loc in enumerate(same_shape_arrays(args, kwargs, (2, 3, 4))):
        set_arg(args, kwargs, loc, transform(get_arg(args, kwargs, loc),
                                             str(tmp_path / f"a{i}.dat")))
    snap = snapshot(all_arrays(args, kwargs))
    want = expected(case, args, kwargs)
    result = fn(*args, backend=backend, **kwargs)
    assert_fresh_result(result, result_shape(case, (2, 3, 4)), dtype, f"{case} {layout}")
    assert_close(result, want, dtype, f"{case} {layout}")
    assert_unchanged(snap, f"({case}, {layout})")


# ------------------------------------------------------------------------------------------------
# inputs never modified
# ------------------------------------------------------------------------------------------------

@case_param
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_inputs_not_modified(case, backend, dtype):
    fn, args, kwargs = build(case, base_x(dtype))
    snap = snapshot(all_arrays(args, kwargs))
    want = expected(case, args, kwargs)
    fn(*args, backend=backend, **kwargs)
    assert_unchanged(snap, "(out=None)")
    out = out_like(case, want, dtype)
    fn(*args, backend=backend, out=out, **kwargs)
    assert_unchanged(snap, "(out= another array)")
    if case.pair:  # only one item given
        fn(*args, backend=backend, out=(out[0], None), **kwargs)
        assert_unchanged(snap, "(out=(array, None))")


# ------------------------------------------------------------------------------------------------
# out=
# ------------------------------------------------------------------------------------------------

@layer_param
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_out_is_written_and_returned(case, backend, dtype):
    fn, args, kwargs = build(case, base_x(dtype))
    want = expected(case, args, kwargs)
    out = out_like(case, want, dtype)
    result = fn(*args, backend=backend, out=out, **kwargs)
    if case.pair:
        assert isinstance(result, tuple) and len(result) == 2
        assert result[0] is out[0] and result[1] is out[1]
    else:
        assert result is out
    assert_close(result, want, dtype, str(case))
    if case.pair:  # None items are allocated
        for keep in (0, 1):
            fresh = out_like(case, want, dtype)
            given = tuple(fresh[i] if i == keep else None for i in range(2))
            result = fn(*args, backend=backend, out=given, **kwargs)
            assert result[keep] is fresh[keep]
            assert result[1 - keep] is not fresh[1 - keep]
            assert_close(result, want, dtype, f"{case} out={given!r}")


def _out_positions(case):
    """Ways of giving one buffer as ``out``: a function buffer -> out argument."""
    if not case.pair:
        return [lambda b: b]
    if case.spec.kind == "channel" and case.form == "backward":
        return [lambda b: (b, None)]
    return [lambda b: (b, None), lambda b: (None, b)]


@layer_param
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_out_in_place(case, backend, dtype):
    shape = (2, 3, 4)
    for position in _out_positions(case):
        n_inputs = len(same_shape_arrays(*build(case, base_x(dtype))[1:], shape))
        for k in range(n_inputs):
            fn, args, kwargs = build(case, base_x(dtype))
            loc = same_shape_arrays(args, kwargs, shape)[k]
            target = get_arg(args, kwargs, loc)
            want = expected(case, [a.copy() if isinstance(a, np.ndarray) else a for a in args],
                            {k2: v.copy() if isinstance(v, np.ndarray) else v
                             for k2, v in kwargs.items()})
            rshape = result_shape(case, shape)
            if rshape != shape:
                # a reduction cannot write over its whole input: out is the start of the
                # input's memory (same data pointer, C-contiguous), overwritten by the result
                target = target.reshape(-1)[:math.prod(rshape)].reshape(rshape)
            out = position(target)
            result = fn(*args, backend=backend, out=out, **kwargs)
            idx = 0 if not case.pair else (0 if out[0] is target else 1)
            assert as_tuple(result)[idx] is target
            assert_close(result, want, dtype, f"{case} in place over {loc}")


@layer_param
@pytest.mark.parametrize("shift", [1, -1, 5], ids=lambda s: f"shift{s}")
def test_out_partially_overlapping_input(case, backend, shift):
    shape, dtype = (2, 3, 4), F64
    n = math.prod(shape)
    for position in _out_positions(case):
        n_inputs = len(same_shape_arrays(*build(case, base_x(dtype))[1:], shape))
        for k in range(n_inputs):
            fn, args, kwargs = build(case, base_x(dtype))
            loc = same_shape_arrays(args, kwargs, shape)[k]
            buf = np.zeros(n + abs(shift), dtype)
            lo = max(-shift, 0)
            view_in = buf[lo:lo + n].reshape(shape)
            view_in[...] = get_arg(args, kwargs, loc)
            set_arg(args, kwargs, loc, view_in)
            rshape = result_shape(case, shape)
            n_out = math.prod(rshape)
            view_out = buf[lo + shift:lo + shift + n_out].reshape(rshape)
            assert np.shares_memory(view_in, view_out)
            want = expected(case, [a.copy() if isinstance(a, np.ndarray) else a for a in args],
                            {k2: v.copy() if isinstance(v, np.ndarray) else v
                             for k2, v in kwargs.items()})
            result = fn(*args, backend=backend, out=position(view_out), **kwargs)
            assert_close(result, want, dtype, f"{case} out overlapping {loc} by {shift}")


def _strided_out(shape, dtype, kind):
    if kind == "step2":
        big = np.full(shape[:-1] + (2 * shape[-1],), SENTINEL, dtype)
        return big, big[..., ::2], big[..., 1::2]
    if kind == "negative":
        big = np.full(shape, SENTINEL, dtype)
        flip = slice(None, None, -1)
        return big, big[(flip,) + (slice(None),) * (len(shape) - 2) + (flip,)], None
    if kind == "fortran":
        big = np.full(shape, SENTINEL, dtype, order="F")
        return big, big, None
    raise AssertionError(kind)


@layer_param
@pytest.mark.parametrize("kind", ["step2", "negative", "fortran"])
def test_out_non_contiguous(case, backend, kind):
    dtype = F32
    fn, args, kwargs = build(case, base_x(dtype))
    want = expected(case, args, kwargs)
    shape = result_shape(case, (2, 3, 4))
    big0, view0, gap0 = _strided_out(shape, dtype, kind)
    if case.pair:
        big1, view1, gap1 = _strided_out(shape, dtype, kind)
        if case.spec.kind == "channel" and case.form == "backward":  # grad_weight buffer
            view1, gap1 = np.full(3, SENTINEL, dtype)[::-1], None
        out = (view0, view1)
    else:
        out, gap1 = view0, None
    result = fn(*args, backend=backend, out=out, **kwargs)
    if case.pair:
        assert result[0] is view0 and result[1] is view1
    else:
        assert result is view0
    assert_close(result, want, dtype, f"{case} strided out {kind}")
    for gap in (gap0, gap1):
        if gap is not None:
            assert np.all(gap == SENTINEL), "elements between the strides of out were written"


@layer_param
@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_out_big_endian(case, backend, dtype):
    fn, args, kwargs = build(case, base_x(dtype))
    want = expected(case, args, kwargs)
    out = out_like(case, want, dtype.newbyteorder(">"))
    result = fn(*args, backend=backend, out=out, **kwargs)
    for r, o in zip(as_tuple(result), as_tuple(out)):
        assert r is o
    assert_close(result, want, dtype, f"{case} big-endian out")


@layer_param
def test_out_float16(case, backend):
    fn, args, kwargs = build(case, base_x(F16))
    want = expected(case, args, kwargs)
    out = out_like(case, want, F16)
    result = fn(*args, backend=backend, out=out, **kwargs)
    for r, o in zip(as_tuple(result), as_tuple(out)):
        assert r is o and r.dtype == F16
    assert_close(result, want, F16, f"{case} float16 out")


def _bad_out_item(kind, shape, dtype):
    if kind == "shape":
        return np.zeros(shape[:-1] + (shape[-1] - 1,) if shape else (1,), dtype)
    if kind == "dtype":
        return np.zeros(shape, F64 if dtype != F64 else F32)
    if kind == "int_dtype":
        return np.zeros(shape, np.int32)
    if kind == "read_only":
        a = np.zeros(shape, dtype)
        a.flags.writeable = False
        return a
    if kind == "list":
        return np.zeros(shape, dtype).tolist()
    raise AssertionError(kind)


BAD_OUT = {"shape": ValueError, "dtype": TypeError, "int_dtype": TypeError,
           "read_only": ValueError, "list": TypeError}


@layer_param
@pytest.mark.parametrize("kind", list(BAD_OUT))
def test_bad_out_rejected_before_writing(case, backend, kind):
    dtype = F32
    fn, args, kwargs = build(case, base_x(dtype, (4,)))
    want = expected(case, args, kwargs)
    snap = snapshot(all_arrays(args, kwargs))
    exc = BAD_OUT[kind]
    if not case.pair:
        with pytest.raises(exc, match=case.fname.replace(".", r"\.")):
            fn(*args, backend=backend, out=_bad_out_item(kind, np.shape(want), dtype),
               **kwargs)
    else:
        shapes = [np.shape(w) for w in want]
        for bad_idx in (0, 1):
            good = np.full(shapes[1 - bad_idx], SENTINEL, dtype)
            bad = _bad_out_item(kind, shapes[bad_idx], dtype)
            out = (bad, good) if bad_idx == 0 else (good, bad)
            with pytest.raises(exc, match=rf"out\[{bad_idx}\]"):
                fn(*args, backend=backend, out=out, **kwargs)
            assert np.all(good == SENTINEL), f"out[{1 - bad_idx}] written before the error"
    assert_unchanged(snap)


@layer_param
def test_out_wrong_shape_message(case, backend):
    fn, args, kwargs = build(case, base_x(F32, (4,)))
    bad = np.zeros(3, F32)
    if not case.pair:
        with pytest.raises(ValueError) as excinfo:
            fn(*args, backend=backend, out=bad, **kwargs)
        want_shape = result_shape(case, (4,))
        assert str(excinfo.value) == f"{case.fname}: out has shape (3,), expected {want_shape}"
    else:
        with pytest.raises(ValueError) as excinfo:
            fn(*args, backend=backend, out=(bad, None), **kwargs)
        assert str(excinfo.value) == f"{case.fname}: out[0] has shape (3,), expected (4,)"
        if case.spec.kind != "channel":
            with pytest.raises(ValueError) as excinfo:
                fn(*args, backend=backend, out=(None, bad), **kwargs)
            assert str(excinfo.value) == f"{case.fname}: out[1] has shape (3,), expected (4,)"


def test_sigmoid_wrong_shape_message_verbatim(backend):
    with pytest.raises(ValueError) as excinfo:
        fa.sigmoid(np.zeros(4, np.float32), out=np.zeros(3, np.float32), backend=backend)
    assert str(excinfo.value) == "fastact.sigmoid: out has shape (3,), expected (4,)"


PAIR_CASES = [c for c in CASES if c.form == "and_derivative"]


@pytest.mark.parametrize("case", PAIR_CASES, ids=str)
def test_and_derivative_out_pair_rules(case, backend):
    dtype = F32
    x = base_x(dtype, (6,))
    fn, args, kwargs = build(case, x)
    want = expected(case, args, kwargs)
    # both None
    result = fn(*args, backend=backend, out=(None, None), **kwargs)
    assert_close(result, want, dtype, f"{case} out=(None, None)")
    # the same buffer twice, and overlapping views: ValueError, nothing written
    same = np.full(6, SENTINEL, dtype)
    with pytest.raises(ValueError, match="overlap"):
        fn(*args, backend=backend, out=(same, same), **kwargs)
    assert np.all(same == SENTINEL)
    buf = np.full(11, SENTINEL, dtype)
    with pytest.raises(ValueError, match="overlap"):
        fn(*args, backend=backend, out=(buf[:6], buf[5:]), **kwargs)
    assert np.all(buf == SENTINEL)
    inter = np.full(12, SENTINEL, dtype)  # interleaved views share no element: allowed
    result = fn(*args, backend=backend, out=(inter[::2], inter[1::2]), **kwargs)
    assert result[0].base is inter and result[1].base is inter
    assert_close(result, want, dtype, f"{case} interleaved out items")
    # both items alias the input: they overlap each other
    x2 = x.copy()
    fn2, a2, k2 = build(case, x2)
    with pytest.raises(ValueError, match="overlap"):
        fn2(*a2, backend=backend, out=(x2, x2), **k2)
    np.testing.assert_array_equal(x2, x)
    # not a 2-tuple
    for bad in (np.zeros(6, dtype), (np.zeros(6, dtype),),
                (np.zeros(6, dtype), np.zeros(6, dtype), np.zeros(6, dtype)), "out"):
        with pytest.raises(TypeError, match=case.fname.replace(".", r"\.")):
            fn(*args, backend=backend, out=bad, **kwargs)


def test_prelu_backward_out_pair(backend):
    x = base_x(F32)
    w = np.array([0.1, 0.2, 0.3], F32)
    g = np.cos(np.arange(24)).astype(F32).reshape(2, 3, 4)
    with pytest.raises(TypeError):
        fa.prelu_backward(g, x=x, weight=w, out=np.zeros_like(x), backend=backend)
    gx = np.full_like(x, SENTINEL)
    with pytest.raises(ValueError, match=r"out\[1\]"):
        fa.prelu_backward(g, x=x, weight=w, out=(gx, np.zeros(4, F32)), backend=backend)
    assert np.all(gx == SENTINEL), "grad_x written before the error on grad_weight"
    with pytest.raises(TypeError, match=r"out\[1\]"):
        fa.prelu_backward(g, x=x, weight=w, out=(gx, np.zeros(3, F64)), backend=backend)
    assert np.all(gx == SENTINEL)


# ------------------------------------------------------------------------------------------------
# errors are identical on every backend, and raised before anything is written
# ------------------------------------------------------------------------------------------------

def _x(shape=(3, 4), dtype=F32):
    return base_x(dtype, shape)


BAD_CALLS = {
    "out_shape": (lambda b, o: fa.sigmoid(_x(), out=np.zeros((3, 3), F32), backend=b), ValueError),
    "out_dtype": (lambda b, o: fa.tanh(_x(), out=np.zeros((3, 4), F64), backend=b), TypeError),
    "out_read_only": (lambda b, o: fa.relu(_x(), out=_ro((3, 4)), backend=b), ValueError),
    "int_input": (lambda b, o: fa.elu(np.arange(4), out=o, backend=b), TypeError),
    "bool_input": (lambda b, o: fa.leaky_relu(np.ones(4, bool), out=o, backend=b), TypeError),
    "complex_grad": (lambda b, o: fa.sigmoid_backward(np.ones(4, complex), x=np.ones(4),
                                                      out=o, backend=b), TypeError),
    "nan_slope": (lambda b, o: fa.leaky_relu(_x((4,)), negative_slope=float("nan"), out=o,
                                             backend=b), ValueError),
    "inf_alpha": (lambda b, o: fa.elu_derivative(_x((4,)), alpha=float("inf"), out=o,
                                                 backend=b), ValueError),
    "str_alpha": (lambda b, o: fa.elu(_x((4,)), alpha="1", out=o, backend=b), TypeError),
    "y_forbidden": (lambda b, o: fa.elu_backward(_x((4,)), y=_x((4,)), alpha=-1.0, out=o,
                                                 backend=b), ValueError),
    "both_x_y": (lambda b, o: fa.relu_backward(_x((4,)), x=_x((4,)), y=_x((4,)), out=o,
                                               backend=b), TypeError),
    "neither_x_y": (lambda b, o: fa.tanh_backward(_x((4,)), out=o, backend=b), TypeError),
    "grad_shape": (lambda b, o: fa.relu_backward(_x((4,)), x=_x((1, 4)), backend=b),
                   ValueError),
    "axis": (lambda b, o: fa.softmax(_x(), axis=2, backend=b), AxisError),
    "temperature": (lambda b, o: fa.log_softmax(_x(), temperature=0.0, backend=b), ValueError),
    "where_dtype": (lambda b, o: fa.softmax(_x(), where=np.ones((3, 4), int), backend=b),
                    TypeError),
    "where_shape": (lambda b, o: fa.softmax(_x(), where=np.ones(3, bool), backend=b),
                    ValueError),
    "softmin_axis": (lambda b, o: fa.softmin(_x(), axis=-3, backend=b), AxisError),
    "softmin_temperature": (lambda b, o: fa.softmin_backward(_x(), y=_x(), temperature=-2.0,
                                                             backend=b), ValueError),
    "logsumexp_axis": (lambda b, o: fa.logsumexp(_x(), axis=2, backend=b), AxisError),
    "logsumexp_temperature": (lambda b, o: fa.logsumexp(_x(), temperature=0.0, backend=b),
                              ValueError),
    "logsumexp_where_dtype": (lambda b, o: fa.logsumexp(_x(), where=np.ones((3, 4), F32),
                                                        backend=b), TypeError),
    "logsumexp_keepdims": (lambda b, o: fa.logsumexp(_x(), keepdims="yes", backend=b),
                           TypeError),
    "logsumexp_out_shape": (lambda b, o: fa.logsumexp(_x(), out=np.zeros((3, 4), F32),
                                                      backend=b), ValueError),
    "logsumexp_out_keepdims": (lambda b, o: fa.logsumexp(_x(), keepdims=True,
                                                         out=np.zeros(3, F32), backend=b),
                               ValueError),
    "prelu_weight_size": (lambda b, o: fa.prelu(_x(), np.ones(5, F32), backend=b), ValueError),
    "prelu_weight_2d": (lambda b, o: fa.prelu(_x(), np.ones((1, 3), F32), backend=b),
                        ValueError),
    "pair_overlap": (lambda b, o: fa.sigmoid_and_derivative(_x((4,)), out=(o, o), backend=b),
                     ValueError),
    "pair_not_tuple": (lambda b, o: fa.tanh_and_derivative(_x((4,)), out=o, backend=b),
                       TypeError),
}


def _ro(shape):
    a = np.zeros(shape, F32)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_errors_identical_on_every_backend(name):
    call, exc_type = BAD_CALLS[name]
    seen = {}
    for b in fa.backends():
        if b == "cuda":
            continue
        out = np.full(4, SENTINEL, F32)
        with pytest.raises(exc_type) as excinfo:
            call(b, out)
        assert np.all(out == SENTINEL), f"{b}: out written before the error"
        assert str(excinfo.value).startswith("fastact."), str(excinfo.value)
        seen[b] = (type(excinfo.value), str(excinfo.value))
    assert len(set(seen.values())) == 1, f"errors differ between backends: {seen}"


def test_bad_param_does_not_write_out(backend):
    out = np.full(4, SENTINEL, F32)
    with pytest.raises(ValueError):
        fa.leaky_relu(_x((4,)), negative_slope=float("nan"), out=out, backend=backend)
    with pytest.raises(ValueError):
        fa.softmax(_x((4,)), temperature=-1.0, out=out, backend=backend)
    with pytest.raises(ValueError):
        fa.leaky_relu_backward(_x((4,)), y=_x((4,)), negative_slope=-0.5, out=out,
                               backend=backend)
    assert np.all(out == SENTINEL)


# ------------------------------------------------------------------------------------------------
# backward: x= or y=, no broadcasting
# ------------------------------------------------------------------------------------------------

BACKWARD_CASES = [c for c in CASES if c.form == "backward" and not c.use_y]


@pytest.mark.parametrize("case", [c for c in BACKWARD_CASES if c.spec.kind == "elementwise"],
                         ids=str)
def test_backward_needs_exactly_one_of_x_y(case, backend):
    x = _x((4,))
    g = np.ones(4, F32)
    p = case.spec.defaults
    fn = getattr(fa, case.public)
    with pytest.raises(TypeError, match=case.fname.replace(".", r"\.")):
        fn(g, backend=backend, **p)
    with pytest.raises(TypeError, match=case.fname.replace(".", r"\.")):
        fn(g, x=x, y=x, backend=backend, **p)
    with pytest.raises(TypeError):
        fn(g, x=None, y=None, backend=backend, **p)


def test_prelu_backward_requires_x(backend):
    with pytest.raises(TypeError):
        fa.prelu_backward(np.ones(4), weight=0.25, backend=backend)
    with pytest.raises(TypeError):
        fa.prelu_backward(np.ones(4), y=np.ones(4), weight=0.25, backend=backend)


Y_FORBIDDEN = [("leaky_relu", {"negative_slope": -0.5}), ("elu", {"alpha": -1.0}),
               ("elu", {"alpha": -1e-3}), ("leaky_relu", {"negative_slope": -2.0})]
Y_ALLOWED = [("leaky_relu", {"negative_slope": 0.2}), ("leaky_relu", {"negative_slope": 0.0}),
             ("elu", {"alpha": 0.5}), ("elu", {"alpha": 2.0}), ("relu", {}), ("sigmoid", {}),
             ("tanh", {})]


@pytest.mark.parametrize("name, params", Y_FORBIDDEN, ids=str)
def test_backward_y_forbidden_by_registry(name, params, backend):
    spec = _registry.get(name)
    assert spec.y_backward is not None and not spec.y_backward(params), \
        "the registry should forbid y= here"
    x = _x((5,))
    with pytest.raises(ValueError, match=rf"fastact\.{name}_backward: .*y="):
        getattr(fa, f"{name}_backward")(np.ones(5, F32), y=x, backend=backend, **params)


@pytest.mark.parametrize("name, params", Y_ALLOWED, ids=str)
def test_backward_y_allowed_by_registry(name, params, backend):
    spec = _registry.get(name)
    assert spec.y_backward is not None and spec.y_backward(params)
    case = Case(spec, "backward", use_y=True)
    x = base_x(F64, (2, 3, 4))
    p = {**spec.defaults, **params}
    result, want = run_case(case, backend, x, params=p)
    assert_close(result, want, F64, f"{name} y= {params}")
    # the same gradient as from x (the y-derivative equals the x-derivative)
    grad = build(case, x, p)[1][0]
    assert_close(result, f64(grad) * ref_derivative(name, x, p), F64, f"{name} y= vs x=")


def test_ops_without_y_backward_reject_y(backend):
    for spec in _registry.OPS:
        if spec.kind != "elementwise" or spec.y_backward is not None:
            continue
        with pytest.raises((TypeError, ValueError)):
            getattr(fa, f"{spec.name}_backward")(np.ones(3), y=np.ones(3), backend=backend)


@pytest.mark.parametrize("case", [c for c in BACKWARD_CASES + [c for c in CASES if c.use_y] if c in LAYER_CASES], ids=str)
@pytest.mark.parametrize("shapes", [((4,), (3, 4)), ((1, 4), (3, 4)), ((3, 4), (3, 1)),
                                    ((3, 4), (4, 3)), ((), (3,))], ids=str)
def test_backward_shapes_must_match(case, backend, shapes):
    gshape, xshape = shapes
    fn, args, kwargs = build(case, base_x(F32, xshape))
    args[0] = np.ones(gshape, F32)
    with pytest.raises(ValueError, match=case.fname.replace(".", r"\.")):
        fn(*args, backend=backend, **kwargs)


# ------------------------------------------------------------------------------------------------
# parameters
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, param", PARAM_SPECS, ids=lambda v: getattr(v, "name", str(v)))
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), np.float32("nan")],
                         ids=["nan", "inf", "-inf", "f32nan"])
def test_non_finite_param_rejected(spec, param, value, backend):
    for case in [c for c in CASES if c.spec is spec]:
        fn, args, kwargs = build(case, base_x(F32, (4,)))
        kwargs[param.name] = value
        with pytest.raises(ValueError) as excinfo:
            fn(*args, backend=backend, **kwargs)
        assert param.name in str(excinfo.value) and case.fname in str(excinfo.value)


@pytest.mark.parametrize("spec, param", PARAM_SPECS, ids=lambda v: getattr(v, "name", str(v)))
@pytest.mark.parametrize("value", ["0.1", None, [0.1], np.array([0.1]), 1j],
                         ids=["str", "None", "list", "array1", "complex"])
def test_non_number_param_rejected(spec, param, value, backend):
    for case in [c for c in CASES if c.spec is spec]:
        fn, args, kwargs = build(case, base_x(F32, (4,)))
        kwargs[param.name] = value
        with pytest.raises(TypeError) as excinfo:
            fn(*args, backend=backend, **kwargs)
        assert param.name in str(excinfo.value)


@pytest.mark.parametrize("spec, param", CHOICE_SPECS, ids=lambda v: getattr(v, "name", str(v)))
def test_choice_param(spec, param, backend):
    """Every choice works; anything else (another string, other case, a number, None) is a
    ValueError naming the function, the parameter and the allowed values."""
    x = base_x(F64, (2, 3, 4))
    for case in [c for c in CASES if c.spec is spec]:
        for value in param.choices:
            result, want = run_case(case, backend, x, params={**spec.defaults, param.name: value})
            assert_close(result, want, F64, f"{case} {param.name}={value!r}")
        fn, args, kwargs = build(case, base_x(F32, (4,)))
        for bad in ("erf", param.choices[-1].upper(), "", None, 0, 1.0, [param.choices[0]]):
            kwargs[param.name] = bad
            with pytest.raises(ValueError) as excinfo:
                fn(*args, backend=backend, **kwargs)
            msg = str(excinfo.value)
            assert case.fname in msg and param.name in msg and repr(param.choices[0]) in msg


@pytest.mark.parametrize("spec, param", PARAM_SPECS, ids=lambda v: getattr(v, "name", str(v)))
def test_numeric_param_types_accepted(spec, param, backend):
    x = base_x(F64, (2, 3, 4))
    for value in (2, np.float32(0.5), np.float64(0.25), np.int64(3), np.array(0.75)):
        for case in [c for c in CASES if c.spec is spec]:
            params = {**spec.defaults, param.name: value}
            ordered = spec.extra.get("ordered")  # hardtanh: keep min_val <= max_val
            if ordered and params[ordered[0]] > params[ordered[1]]:
                params[param.name] = -value
            if case.use_y and not spec.y_backward({k: float(v) for k, v in params.items()}):
                continue
            result, want = run_case(case, backend, x, params=params)
            assert_close(result, want, F64, f"{case} {param.name}={value!r}")


ROW_CASES = [c for c in CASES if c.spec.kind == "rowwise"]


@pytest.mark.parametrize("case", ROW_CASES, ids=str)
def test_bad_temperature(case, backend):
    fn, args, kwargs = build(case, _x())
    for value in (0.0, -0.0, -1.0, float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            fn(*args, backend=backend, temperature=value, **kwargs)
    for value in ("1", None, [1.0]):
        with pytest.raises(TypeError, match="temperature"):
            fn(*args, backend=backend, temperature=value, **kwargs)


@pytest.mark.parametrize("case", ROW_CASES, ids=str)
def test_bad_axis(case, backend):
    for shape, bad_axes in [((3, 4), (2, -3, 5)), ((2, 3, 4), (3, -4)), ((), (1, -2)),
                            ((5,), (1, -2))]:
        fn, args, kwargs = build(case, base_x(F32, shape))
        for axis in bad_axes:
            with pytest.raises(AxisError):
                fn(*args, backend=backend, axis=axis, **kwargs)
    fn, args, kwargs = build(case, _x())
    for axis in (1.0, "1"):
        with pytest.raises(TypeError):
            fn(*args, backend=backend, axis=axis, **kwargs)


@pytest.mark.parametrize("case", ROW_CASES, ids=str)
def test_bad_where(case, backend):
    fn, args, kwargs = build(case, _x())
    for where in (np.ones((3, 4), np.int64), np.ones((3, 4), F32), np.ones(4, np.uint8)):
        with pytest.raises(TypeError, match="where"):
            fn(*args, backend=backend, where=where, **kwargs)
    for where in (np.ones(3, bool), np.ones((4, 3), bool), np.ones((2, 3, 4), bool)):
        with pytest.raises(ValueError, match="where"):
            fn(*args, backend=backend, where=where, **kwargs)


# --- prelu weight --------------------------------------------------------------------------------

def test_prelu_weight_checks(backend):
    x = base_x(F32, (2, 3, 4))
    for w in (np.ones(4, F32), np.ones(2, F32), np.ones(24, F32)):
        with pytest.raises(ValueError, match="weight"):
            fa.prelu(x, w, backend=backend)
    with pytest.raises(ValueError, match="weight"):
        fa.prelu(x, np.ones((1, 3), F32), backend=backend)
    with pytest.raises(ValueError, match="weight"):
        fa.prelu(x, np.ones((1, 1), F32), backend=backend)
    x1 = base_x(F32, (5,))
    for w in (np.ones(5, F32), np.ones(2, F32)):
        with pytest.raises(ValueError, match="weight"):
            fa.prelu(x1, w, backend=backend)
        with pytest.raises(ValueError, match="weight"):
            fa.prelu_backward(np.ones(5, F32), x=x1, weight=w, backend=backend)
    for w in (np.array([1, 2, 3]), np.ones(3, complex), "0.25", None):
        with pytest.raises(TypeError, match="weight"):
            fa.prelu(x, w, backend=backend)
    for w in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="weight"):
            fa.prelu(x, w, backend=backend)


@pytest.mark.parametrize("weight", [
    0.25, 2, np.float32(0.25), np.array(0.3), np.array([0.4]), np.array([0.1, 0.2, 0.3]),
    np.array([0.1, 0.2, 0.3], F16), np.array(0.2, F32), np.array([0.1, -0.2, 0.3], ">f8"),
], ids=lambda w: f"{type(w).__name__}{np.shape(w)}{getattr(w, 'dtype', '')}")
@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_prelu_weight_forms(weight, dtype, backend):
    x = base_x(dtype, (2, 3, 4))
    g = (np.cos(np.arange(24)) + 1.5).astype(dtype).reshape(x.shape)
    case_f = Case(_registry.get("prelu"), "forward")
    case_b = Case(_registry.get("prelu"), "backward")
    y = fa.prelu(x, weight, backend=backend)
    assert y.dtype == dtype
    assert_close(y, expected(case_f, [x, weight], {}), dtype, "prelu")
    gx, gw = fa.prelu_backward(g, x=x, weight=weight, backend=backend)
    assert gx.dtype == dtype and gx.shape == x.shape
    assert np.shape(gw) == np.shape(weight), "grad_weight shaped like weight"
    if isinstance(weight, (np.ndarray, np.generic)):
        assert np.asarray(gw).dtype == np.asarray(weight).dtype.newbyteorder("="), \
            "grad_weight typed like weight"
    else:
        assert np.asarray(gw).dtype == dtype
    want_gx, want_gw = expected(case_b, [g], {"x": x, "weight": weight})
    assert_close(gx, want_gx, dtype, "prelu_backward grad_x")
    wdt = np.asarray(weight).dtype if isinstance(weight, (np.ndarray, np.generic)) else dtype
    rtol = {F16: 2e-3, F32: 1e-6, F64: 1e-12}[np.dtype(wdt).newbyteorder("=")]
    np.testing.assert_allclose(np.asarray(gw, F64), want_gw, rtol=rtol)


def test_prelu_scalar_weight_on_1d_and_0d(backend):
    for shape in ((), (5,), (2, 3)):
        x = base_x(F64, shape)
        r = fa.prelu(x, 0.5, backend=backend)
        assert_close(r, np.where(f64(x) > 0, x, 0.5 * f64(x)), F64, f"prelu {shape}")


# ------------------------------------------------------------------------------------------------
# NaN, inf, kinks, no RuntimeWarning
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ELEMENTWISE_CASES, ids=str)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_nan_propagates(case, backend, dtype):
    x = np.array([np.nan, -1.5, 0.0, np.nan, 2.0, -np.nan], dtype)
    nan_at = np.isnan(x)
    fn, args, kwargs = build(case, x)
    if "y" in kwargs:  # the forward value at NaN is NaN, whatever produced y
        y = kwargs["y"].copy()
        y[nan_at] = np.nan
        kwargs["y"] = y
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = fn(*args, backend=backend, **kwargs)
    items = as_tuple(result)[:1] if case.spec.kind == "channel" and case.form == "backward" \
        else as_tuple(result)
    for r in items:
        assert np.all(np.isnan(r[nan_at])), f"{case}: NaN did not propagate: {r}"
        assert not np.any(np.isnan(r[~nan_at])), f"{case}: NaN where the input was not: {r}"
    assert_close(result, expected(case, args, kwargs), dtype, str(case))


@pytest.mark.parametrize("case", [c for c in ELEMENTWISE_CASES if c.form == "backward"], ids=str)
def test_nan_grad_propagates_where_derivative_nonzero(case, backend):
    x = np.array([1.0, 2.0, 0.5], F64)
    fn, args, kwargs = build(case, x)
    args[0] = np.array([np.nan, 1.0, np.nan])
    r = as_tuple(fn(*args, backend=backend, **kwargs))[0]
    assert np.isnan(r[0]) and np.isnan(r[2]) and not np.isnan(r[1])


INF_LIMITS = [  # (function name, params, x, expected)
    ("sigmoid", {}, -np.inf, 0.0), ("sigmoid", {}, np.inf, 1.0),
    ("sigmoid_derivative", {}, -np.inf, 0.0), ("sigmoid_derivative", {}, np.inf, 0.0),
    ("tanh", {}, -np.inf, -1.0), ("tanh", {}, np.inf, 1.0),
    ("tanh_derivative", {}, -np.inf, 0.0), ("tanh_derivative", {}, np.inf, 0.0),
    ("relu", {}, np.inf, np.inf), ("relu", {}, -np.inf, 0.0),
    ("relu_derivative", {}, np.inf, 1.0), ("relu_derivative", {}, -np.inf, 0.0),
    ("leaky_relu", {}, -np.inf, -np.inf), ("leaky_relu", {}, np.inf, np.inf),
    ("leaky_relu_derivative", {"negative_slope": 0.2}, -np.inf, 0.2),
    ("elu", {}, -np.inf, -1.0), ("elu", {"alpha": 0.5}, -np.inf, -0.5),
    ("elu", {"alpha": 2.0}, -np.inf, -2.0), ("elu", {}, np.inf, np.inf),
    ("elu_derivative", {"alpha": 2.0}, -np.inf, 0.0), ("elu_derivative", {}, np.inf, 1.0),
]


@pytest.mark.parametrize("fname, params, xv, want", INF_LIMITS, ids=str)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_inf_limits(fname, params, xv, want, dtype, backend):
    x = np.array([xv, xv], dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = getattr(fa, fname)(x, backend=backend, **params)
        np.testing.assert_array_equal(r, np.array([want, want], dtype))
        if not fname.endswith("_derivative"):
            v, d = getattr(fa, f"{fname}_and_derivative")(x, backend=backend, **params)
            np.testing.assert_array_equal(v, np.array([want, want], dtype))
            assert not np.any(np.isnan(d))
        else:  # backward with a finite grad: grad * limit of the derivative
            base = fname[: -len("_derivative")]
            g = np.array([2.0, -3.0], dtype)
            r = getattr(fa, f"{base}_backward")(g, x=x, backend=backend, **params)
            np.testing.assert_array_equal(r, (g.astype(F64) * want).astype(dtype))


def test_prelu_inf(backend):
    x = np.array([-np.inf, np.inf])
    np.testing.assert_array_equal(fa.prelu(x, 0.25, backend=backend), [-np.inf, np.inf])
    np.testing.assert_array_equal(fa.prelu_derivative(x, 0.25, backend=backend), [0.25, 1.0])


KINKS = [  # (op, params, derivative at 0)
    ("relu", {}, 0.0),
    ("leaky_relu", {}, 0.01), ("leaky_relu", {"negative_slope": 0.2}, 0.2),
    ("leaky_relu", {"negative_slope": -0.5}, -0.5), ("leaky_relu", {"negative_slope": 3.0}, 3.0),
    ("elu", {}, 1.0), ("elu", {"alpha": 0.5}, 0.5), ("elu", {"alpha": 2.5}, 2.5),
    ("elu", {"alpha": -1.0}, -1.0),
]


@pytest.mark.parametrize("name, params, d0", KINKS, ids=str)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_derivative_at_kink_follows_pytorch(name, params, d0, dtype, backend):
    x = np.array([0.0, -0.0], dtype)
    want = np.array([d0, d0], dtype)
    fa_ = lambda suffix: getattr(fa, f"{name}{suffix}")  # noqa: E731
    np.testing.assert_array_equal(fa_("_derivative")(x, backend=backend, **params), want)
    np.testing.assert_array_equal(fa_("_and_derivative")(x, backend=backend, **params)[1], want)
    np.testing.assert_array_equal(fa_("")(x, backend=backend, **params), [0, 0])
    g = np.array([2.0, 4.0], dtype)
    np.testing.assert_array_equal(fa_("_backward")(g, x=x, backend=backend, **params),
                                  (g.astype(F64) * d0).astype(dtype))
    spec = _registry.get(name)
    if spec.y_backward is not None and spec.y_backward({**spec.defaults, **params}):
        np.testing.assert_array_equal(
            fa_("_backward")(g, y=np.zeros(2, dtype), backend=backend, **params),
            (g.astype(F64) * d0).astype(dtype))


@pytest.mark.parametrize("weight", [0.25, np.array([0.1, 0.2, 0.3])], ids=["scalar", "channels"])
def test_prelu_derivative_at_kink_is_weight(weight, backend):
    x = np.zeros((2, 3, 2))
    x[1] = -0.0
    w = np.broadcast_to(_prelu_w(x, weight), x.shape)
    np.testing.assert_array_equal(fa.prelu_derivative(x, weight, backend=backend), w)
    np.testing.assert_array_equal(fa.prelu_and_derivative(x, weight, backend=backend)[1], w)
    g = np.full(x.shape, 2.0)
    gx, gw = fa.prelu_backward(g, x=x, weight=weight, backend=backend)
    np.testing.assert_array_equal(gx, 2.0 * w)
    np.testing.assert_array_equal(gw, np.zeros(np.shape(weight)))


def _extremes(dtype):
    fi = np.finfo(dtype)
    tiny_sub = fi.smallest_subnormal
    vals = [np.inf, -np.inf, np.nan, fi.max, -fi.max, tiny_sub, -tiny_sub, fi.tiny, -fi.tiny,
            0.0, -0.0, 1.0, -1.0, 20.0, -20.0, 100.0, -100.0, 1e4, -1e4]
    if dtype == F64:
        vals += [1e308, -1e308, 5e-324, -5e-324, 710.0, -745.0]
    elif dtype == F32:
        vals += [88.7, -103.9, 1e38, -1e38]
    else:
        vals += [11.1, -17.0, 6e4, -6e4]
    return np.array(vals, dtype)


EXTREME_PARAMS = {
    "leaky_relu": [{"negative_slope": 0.01}, {"negative_slope": 2.0},
                   {"negative_slope": -3.0}, {"negative_slope": 1e30}],
    "elu": [{"alpha": 1.0}, {"alpha": 2.0}, {"alpha": -1.0}, {"alpha": 1e30}],
}


@pytest.mark.parametrize("case", ELEMENTWISE_CASES, ids=str)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_no_runtime_warning_on_extreme_inputs(case, backend, dtype):
    x = _extremes(dtype)
    spec = case.spec
    for params in EXTREME_PARAMS.get(spec.name, [spec.defaults]):
        if case.use_y and not spec.y_backward(params):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fn, args, kwargs = build(case, x, params=params)
            if spec.kind == "channel":
                for w in (0.25, 2.0, 1e30):
                    if case.form == "backward":
                        kwargs["weight"] = w
                    else:
                        args[1] = w
                    fn(*args, backend=backend, **kwargs)
            if case.form == "backward":  # extreme gradients too
                args[0] = x[::-1].copy()
                fn(*args, backend=backend, **kwargs)
                args[0] = x.copy()
            fn(*args, backend=backend, **kwargs)


@pytest.mark.parametrize("case", ROW_CASES, ids=str)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_rowwise_no_runtime_warning_on_extreme_inputs(case, backend, dtype):
    e = _extremes(dtype)
    fi = np.finfo(dtype)
    rows = np.stack([e, e[::-1], np.full(e.size, -np.inf, dtype), np.full(e.size, np.nan, dtype),
                     np.full(e.size, fi.max, dtype), np.full(e.size, -fi.max, dtype),
                     np.full(e.size, fi.smallest_subnormal, dtype),
                     np.where(np.isfinite(e), e, 0).astype(dtype)])
    where = np.ones(rows.shape, bool)
    where[1, ::2] = False
    where[2] = False
    for temperature in (1.0, 1e-3, 1e30, 5e-324 if dtype == F64 else 1e-30):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for mask in (None, where):
                fn, args, kwargs = build(case, rows)
                if case.form == "backward":
                    kwargs["y"] = getattr(fa, case.spec.name)(rows, where=mask,
                                                              temperature=temperature)
                fn(*args, backend=backend, where=mask, temperature=temperature, **kwargs)


# ------------------------------------------------------------------------------------------------
# softmax family
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_softmax_zero_dim(dtype, backend):
    for v in (3.0, -2.5, 0.0, 1e4 if dtype != F16 else 6e4):
        x = np.array(v, dtype)
        s = fa.softmax(x, backend=backend)
        ls = fa.log_softmax(x, backend=backend)
        assert s.shape == () and s.dtype == dtype and s == 1.0
        assert ls.shape == () and ls.dtype == dtype and ls == 0.0
        for axis in (0, -1):
            assert fa.softmax(x, axis=axis, backend=backend) == 1.0
        assert fa.softmax(x, where=np.array(False), backend=backend) == 0.0
        assert fa.log_softmax(x, where=np.array(False), backend=backend) == -np.inf
        assert fa.softmax(x, where=True, backend=backend) == 1.0
        g = np.array(2.5, dtype)
        assert fa.softmax_backward(g, y=s, backend=backend) == 0.0
        assert fa.log_softmax_backward(g, y=ls, backend=backend) == 0.0
    assert fa.softmax(7.0, backend=backend) == 1.0  # Python float: one row of one


@pytest.mark.parametrize("case", ROW_CASES, ids=str)
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2, -3])
def test_rowwise_axis(case, axis, backend):
    x = base_x(F64, (2, 3, 4), -4, 5) * np.cos(np.arange(24)).reshape(2, 3, 4)
    fn, args, kwargs = build(case, x)
    if case.form == "backward":
        kwargs["y"] = np.asarray(ref_rows(case.spec.name, x, axis=axis))
    want = expected(case, args, {**kwargs, "axis": axis})
    result = fn(*args, backend=backend, axis=axis, **kwargs)
    rshape = result_shape(case, x.shape, axis)
    assert_fresh_result(result, rshape, F64, f"{case} axis={axis}")
    assert_close(result, want, F64, f"{case} axis={axis}")
    # equals moving the axis to the end and back (a reduction: the same result)
    moved = [np.moveaxis(a, axis, -1) for a in args]
    kw_moved = {k: np.moveaxis(v, axis, -1) if isinstance(v, np.ndarray) else v
                for k, v in kwargs.items()}
    want_moved = expected(case, moved, kw_moved)
    back = result if rshape != x.shape else np.moveaxis(result, axis, -1)
    assert_close(back, want_moved, F64, f"{case} moveaxis {axis}")
    if rshape != x.shape:  # keepdims: the axis kept with size 1
        kd = fn(*args, backend=backend, axis=axis, keepdims=True, **kwargs)
        assert kd.shape == result_shape(case, x.shape, axis, keepdims=True)
        assert_close(kd, np.expand_dims(want, axis), F64, f"{case} axis={axis} keepdims")
    # out= with a non-last axis, and a mask
    out = np.full(rshape, SENTINEL)
    where = np.cos(np.arange(24)).reshape(2, 3, 4) > -0.5
    if case.form == "backward":
        kwargs["y"] = np.asarray(ref_rows(case.spec.name, x, axis=axis, where=where))
    r2 = fn(*args, backend=backend, axis=axis, where=where, out=out, **kwargs)
    assert r2 is out
    assert_close(out, expected(case, args, {**kwargs, "axis": axis, "where": where}), F64,
                 f"{case} axis={axis} masked out=")


@pytest.mark.parametrize("case", ROW_CASES, ids=str)
@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_rowwise_temperature_and_where(case, temperature, backend):
    x = base_x(F64, (4, 6), -3, 4) * np.sin(np.arange(24) + 1).reshape(4, 6)
    for where in (None, np.array([True, False, True, True, False, True]),
                  np.array([[True], [False], [True], [True]]),
                  np.cos(np.arange(24)).reshape(4, 6) > 0, [True] * 6):
        fn, args, kwargs = build(case, x)
        if case.form == "backward":
            kwargs["y"] = np.asarray(ref_rows(case.spec.name, x, where=where,
                                              temperature=temperature))
        result = fn(*args, backend=backend, where=where, temperature=temperature, **kwargs)
        want = expected(case, args, {**kwargs, "where": where, "temperature": temperature})
        assert_close(result, want, F64, f"{case} T={temperature} where={where}")
        if where is not None:
            masked = ~np.broadcast_to(np.asarray(where), x.shape)
            if case.form == "backward":
                assert np.all(result[masked] == 0), "masked entries must get gradient 0"
            elif case.spec.name == "log_softmax":
                assert np.all(result[masked] == -np.inf)
            elif _registry.reduces(case.spec):  # masked entries are left out of the sum
                rows = np.where(masked, np.nan, x)  # a NaN there would poison the row
                assert_close(fn(rows, backend=backend, where=where, temperature=temperature),
                             want, F64, f"{case} masked NaN left out")
            else:  # softmax, softmin
                assert np.all(result[masked] == 0)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_fully_masked_rows(dtype, backend):
    x = base_x(dtype, (4, 5), -2, 2)
    x[3] = -np.inf  # masked out entirely: never NaN either
    where = np.ones((4, 5), bool)
    where[1] = False
    where[3] = False
    where[2, :3] = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = fa.softmax(x, where=where, backend=backend)
        ls = fa.log_softmax(x, where=where, backend=backend)
        g = np.ones((4, 5), dtype)
        gs = fa.softmax_backward(g, y=s, where=where, backend=backend)
        gls = fa.log_softmax_backward(g, y=ls, where=where, backend=backend)
    for r in (s, ls, gs, gls):
        assert not np.any(np.isnan(r))
    np.testing.assert_array_equal(s[[1, 3]], 0)
    np.testing.assert_array_equal(ls[[1, 3]], -np.inf)
    np.testing.assert_array_equal(gs[~where], 0)
    np.testing.assert_array_equal(gls[~where], 0)
    np.testing.assert_array_equal(s[2, :3], 0)
    np.testing.assert_array_equal(ls[2, :3], -np.inf)
    assert_close(s, ref_rows("softmax", x, where=where), dtype, "softmax masked")
    assert_close(ls, ref_rows("log_softmax", x, where=where), dtype, "log_softmax masked")
    # along another axis, mask broadcast from (C, 1)
    xt = np.ascontiguousarray(x.T)
    col_where = np.array([True, False, True, False])  # rows of x are columns of xt
    s_t = fa.softmax(xt, axis=0, where=col_where[None, :], backend=backend)
    assert not np.any(np.isnan(s_t))
    np.testing.assert_array_equal(s_t[:, [1, 3]], 0)


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_row_backward_subnormal_temperature(dtype, backend):
    """A subnormal temperature: 1 / T overflows, so a zero numerator must still give 0 (not
    0 * inf = NaN) and the others +-inf, as the division y * (g - s) / T gives them."""
    g = np.array([[1.0, 2.0, 3.0, 0.0]], dtype)
    y = np.array([[0.0, 0.5, 0.25, 0.25]], dtype)  # s = sum(g * y) = 1.75, exactly
    t = 5e-324
    want = [0.0, np.inf, np.inf, -np.inf]
    np.testing.assert_array_equal(
        fa.softmax_backward(g, y=y, temperature=t, backend=backend)[0], want)
    np.testing.assert_array_equal(
        fa.softmin_backward(g, y=y, temperature=t, backend=backend)[0], np.negative(want))
    # log_softmax: (g - exp(y) sum(g)) / T, exp(-inf) = 0 and g = 0: 0
    y_log = np.array([[-np.inf, 0.0, -np.inf, 0.0]], dtype)
    g_log = np.array([[0.0, 1.0, 2.0, -3.0]], dtype)  # sum(g) = 0: numerators 0, 1, 2, -3
    np.testing.assert_array_equal(
        fa.log_softmax_backward(g_log, y=y_log, temperature=t, backend=backend)[0],
        [0.0, np.inf, np.inf, -np.inf])


@pytest.mark.parametrize("in_place", [None, "grad", "y"])
def test_log_softmax_backward_float32_intermediate_overflow(in_place, backend):
    """exp(y) * sum(g) above the float32 range with a finite float32 result: the Numba kernel's
    float32 row path overflows there and must hand the row to its float64 path (and in place,
    where the float32 path is not taken, the result is the same)."""
    g = np.array([[3.3e38, -3.3e38, 2.0, 1.0]], np.float32)
    g[0, 3] = 0.0  # sum(g) = 2 exactly (the two large values cancel)
    y = np.array([[88.7, 0.0, 0.0, -200.0]], np.float32)
    want = (g.astype(np.float64) - np.exp(y.astype(np.float64)) * 2.0).astype(np.float32)
    assert np.all(np.isfinite(want))
    gi, yi = g.copy(), y.copy()
    out = {"grad": gi, "y": yi}.get(in_place)
    got = fa.log_softmax_backward(gi, y=yi, out=out, backend=backend)
    assert got.dtype == np.float32 and np.all(np.isfinite(got)), got
    np.testing.assert_allclose(got, want, rtol=4e-7)


def test_unmasked_inf_rows_are_nan(backend):
    x = np.array([[-np.inf, -np.inf, -np.inf], [0.0, np.inf, 1.0], [0.0, np.nan, 1.0],
                  [1.0, 2.0, 3.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = fa.softmax(x, backend=backend)
        ls = fa.log_softmax(x, backend=backend)
    for r in (s, ls):
        assert np.all(np.isnan(r[:3])), f"rows of all -inf / with +inf / NaN must be NaN: {r}"
        assert not np.any(np.isnan(r[3]))
    # masking the +inf / NaN entry out gives a finite row
    where = np.ones(x.shape, bool)
    where[1, 1] = where[2, 1] = False
    s = fa.softmax(x, where=where, backend=backend)
    assert not np.any(np.isnan(s[1:]))
    np.testing.assert_allclose(s[1], [1 / (1 + math.e), 0, math.e / (1 + math.e)])


def test_softmax_large_rows_and_shapes(backend):
    # one long row, many short rows, a row of one: against the oracle
    for shape in ((1, 5000), (3000, 3), (7, 1), (1, 1), (2, 1, 3)):
        x = np.sin(np.arange(math.prod(shape)) * 0.37).reshape(shape) * 10
        for name in ("softmax", "log_softmax"):
            r = getattr(fa, name)(x, backend=backend)
            assert_close(r, ref_rows(name, x), F64, f"{name} {shape}")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_softmin_logsumexp_zero_dim_and_masks(dtype, backend):
    for v in (3.0, -2.5, 0.0, 1e4 if dtype != F16 else 6e4):
        x = np.array(v, dtype)
        s = fa.softmin(x, backend=backend)
        assert s.shape == () and s.dtype == dtype and s == 1.0
        assert fa.softmin(x, where=np.array(False), backend=backend) == 0.0
        assert fa.softmin_backward(np.array(2.5, dtype), y=s, backend=backend) == 0.0
        for keepdims in (False, True):
            lse = fa.logsumexp(x, keepdims=keepdims, temperature=0.25, backend=backend)
            assert lse.shape == () and lse.dtype == dtype and lse == x
        assert fa.logsumexp(x, where=False, backend=backend) == -np.inf
        out = np.full((), SENTINEL, dtype)
        assert fa.logsumexp(x, out=out, backend=backend) is out and out == x
    x = base_x(dtype, (4, 5), -2, 2)
    x[3] = -np.inf
    where = np.ones((4, 5), bool)
    where[1] = False
    where[2, :3] = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lse = fa.logsumexp(x, where=where, backend=backend)
        sm = fa.softmin(x, where=where, backend=backend)
        gsm = fa.softmin_backward(np.ones_like(x), y=sm, where=where, backend=backend)
    assert lse[1] == -np.inf and lse[3] == -np.inf  # fully masked; all -inf (torch)
    assert_close(lse, ref_rows("logsumexp", x, where=where), dtype, "logsumexp masked")
    np.testing.assert_array_equal(sm[1], 0)
    np.testing.assert_array_equal(sm[~where], 0)
    np.testing.assert_array_equal(gsm[~where], 0)
    assert np.isnan(sm[3]).all()  # -inf is softmin's +inf: NaN (PyTorch), unless masked
    assert_close(sm[[0, 1, 2]], ref_rows("softmin", x, where=where)[[0, 1, 2]], dtype,
                 "softmin masked")


def test_softmin_logsumexp_errors_name_the_function(backend):
    x = base_x(F32, (3, 4))
    calls = {
        "fastact.softmin": lambda **k: fa.softmin(x, backend=backend, **k),
        "fastact.softmin_backward": lambda **k: fa.softmin_backward(x, y=x, backend=backend,
                                                                    **k),
        "fastact.logsumexp": lambda **k: fa.logsumexp(x, backend=backend, **k),
    }
    for fname, call in calls.items():
        for kwargs, exc, arg in (({"axis": 2}, AxisError, "axis"),
                                 ({"temperature": -1.0}, ValueError, "temperature"),
                                 ({"temperature": 0.0}, ValueError, "temperature"),
                                 ({"where": np.ones((3, 4), np.int8)}, TypeError, "where"),
                                 ({"where": np.ones((2, 4), bool)}, ValueError, "where")):
            with pytest.raises(exc) as excinfo:
                call(**kwargs)
            msg = str(excinfo.value)
            assert msg.startswith(fname + ":") and arg in msg, msg
    for bad in (1, None, "no"):
        with pytest.raises(TypeError, match=r"fastact\.logsumexp: keepdims"):
            fa.logsumexp(x, keepdims=bad, backend=backend)
    with pytest.raises(ValueError, match=r"fastact\.logsumexp: out has shape \(3, 4\), "
                                         r"expected \(3,\)"):
        fa.logsumexp(x, out=np.zeros((3, 4), F32), backend=backend)
    with pytest.raises(ValueError, match=r"expected \(1, 4\)"):
        fa.logsumexp(x, axis=0, keepdims=True, out=np.zeros(4, F32), backend=backend)


def test_logsumexp_large_rows_and_shapes(backend):
    for shape in ((1, 5000), (3000, 3), (7, 1), (1, 1), (2, 1, 3), (40000, 2)):
        x = np.sin(np.arange(math.prod(shape)) * 0.37).reshape(shape) * 10
        for axis in range(len(shape)):
            r = fa.logsumexp(x, axis=axis, backend=backend)
            assert_close(r, ref_rows("logsumexp", x, axis=axis), F64, f"logsumexp {shape}")
            r = fa.softmin(x, axis=axis, backend=backend)
            assert_close(r, ref_rows("softmin", x, axis=axis), F64, f"softmin {shape}")


# ------------------------------------------------------------------------------------------------
# 64-bit indices (opt-in: FASTACT_RUN_HUGE=1)
# ------------------------------------------------------------------------------------------------

HUGE_N = 2**31 + 11


def _mem_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _require_huge(nbytes: int):
    """Huge tests run with FASTACT_RUN_HUGE=1 (.ci/run has a step for them).  Too little memory
    skips them, except under CI=true, where it is a failure."""
    if os.environ.get("FASTACT_RUN_HUGE", "") != "1":
        pytest.skip("arrays above 2**31 elements: run by .ci/run's huge step "
                    "(FASTACT_RUN_HUGE=1)")
    avail = _mem_available()
    if avail < nbytes + (1 << 30):
        msg = (f"needs {(nbytes + (1 << 30)) / 2**30:.1f} GiB of available memory, "
               f"/proc/meminfo MemAvailable is {avail / 2**30:.1f} GiB")
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true: {msg}")
        pytest.skip(msg)


def _huge_probe_indices(n):
    return np.array([0, 1, 2**31 - 2, 2**31 - 1, 2**31, 2**31 + 1, n - 2, n - 1], np.int64)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [F32, F16], ids=str)
def test_huge_array_relu_in_place(backend, dtype):
    if backend == "numpy":
        pytest.skip("the numpy backend's temporaries need several copies of the array")
    itemsize = np.dtype(dtype).itemsize
    need = HUGE_N * itemsize + (HUGE_N * 8 if dtype == F16 else 0)  # float16: float32 buffers
    _require_huge(need)
    x = np.empty(HUGE_N, dtype)
    x[: HUGE_N // 2] = -1.0
    x[HUGE_N // 2:] = 2.0
    idx = _huge_probe_indices(HUGE_N)
    x[idx] = [3.0, -3.0, 4.0, -4.0, -5.0, 5.0, -6.0, 6.0]
    r = fa.relu(x, out=x, backend=backend)
    assert r is x
    np.testing.assert_array_equal(x[idx], [3.0, 0, 4.0, 0, 0, 5.0, 0, 6.0])
    assert x[HUGE_N // 2 - 3] == 0 and x[HUGE_N // 2 + 3] == 2.0
    assert x[-3] == 2.0


@pytest.mark.slow
def test_huge_array_sigmoid_fresh_output(backend):
    if backend == "numpy":
        pytest.skip("the numpy backend's temporaries need several copies of the array")
    _require_huge(2 * HUGE_N * 4)
    x = np.zeros(HUGE_N, F32)
    idx = _huge_probe_indices(HUGE_N)
    x[idx] = [1.0, -1.0, 2.0, -2.0, 3.0, -3.0, 4.0, -4.0]
    r = fa.sigmoid(x, backend=backend)
    del x
    assert r.shape == (HUGE_N,)
    want = 1 / (1 + np.exp(-np.array([1.0, -1.0, 2.0, -2.0, 3.0, -3.0, 4.0, -4.0])))
    np.testing.assert_allclose(r[idx], want, rtol=1e-6)
    assert r[2**31 + 5] == 0.5 and r[-3] == 0.5


def test_large_outputs_are_placed_apart_from_the_inputs_modulo_a_page():
    """Fresh loss gradients of 1 MiB and more start far, modulo 4096, from every input
    (_validate.empty_apart: a store trailing a load by a few hundred bytes modulo a page stalls
    the CPU's memory disambiguation, 3x on kl_div_and_grad).  They are still ordinary
    C-contiguous, aligned, writeable arrays of the right shape and dtype, and results do not
    change; small outputs are plain allocations."""
    from fastact import _validate

    rng = np.random.default_rng(5)
    raw = np.empty(2 * 2**20 + 3 * 4096, np.uint8)
    for _ in range(20):
        offsets = rng.integers(0, 4096 // 8, 2) * 8
        a = raw[offsets[0]:offsets[0] + 2**20].view(np.float64)
        b = raw[2**20 + 4096 + offsets[1]:2**20 + 4096 + offsets[1] + 2**20].view(np.float64)
        out = _validate.empty_apart((2, a.size // 2), np.float64, [a, b])  # (1 MiB)
        assert out.shape == (2, a.size // 2) and out.dtype == np.float64
        assert out.flags.c_contiguous and out.flags.aligned and out.flags.writeable
        at = out.__array_interface__["data"][0]
        for x in (a, b):
            d = (at - x.__array_interface__["data"][0]) % 4096
            assert min(d, 4096 - d) >= 768, (offsets, d)  # (2 inputs, 8 candidate offsets)
    small = _validate.empty_apart((100,), np.float64, [a, b])
    assert small.base is None and small.shape == (100,)
    # through the API: placed apart, and the same values as a plain output buffer
    x = np.log(np.linspace(0.01, 1, 300_000)).reshape(300, 1000)
    y = np.linspace(0, 1, 300_000).reshape(300, 1000)
    _, got = fa.kl_div_and_grad(x, y, reduction="sum")
    assert got.flags.c_contiguous and got.shape == x.shape
    for a in (x, y):
        d = (got.__array_interface__["data"][0] - a.__array_interface__["data"][0]) % 4096
        assert min(d, 4096 - d) >= 768
    np.testing.assert_array_equal(got, fa.kl_div_and_grad(x, y, reduction="sum",
                                                          out=np.empty_like(x))[1])
