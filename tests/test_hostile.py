"""Hostile inputs for every public function (issue 8, item 5), generated from the registry.

``test_contract.py`` already covers, for the input ``x``: bad dtypes, bad NumPy scalars,
non-numeric Python input, 0-d and empty arrays, layouts (transposed, negative strides,
zero-stride broadcast, Fortran, big-endian, read-only, memmap, strided views), bad ``out``
(shape, dtype, read-only, partial overlap), bad parameters and axes, NaN propagation and extreme
values without RuntimeWarning.  This file fills the gaps:

* every array argument, not only ``x`` (``grad``, ``y``, prelu's ``weight``): masked arrays,
  ragged lists, object arrays, memmaps, zero strides, big-endian, negative strides;
* ``out=`` given as a memmap, a masked array or a writable self-overlapping (zero-stride) view;
* inputs made entirely of NaN, +inf, -inf, ±0 and subnormals, for every op and form;

each on every host backend: the documented error (the same type and message on every backend,
naming the function and the argument) or the same result as the plain C-contiguous call,
input bytes unchanged, no RuntimeWarning (``filterwarnings = error::RuntimeWarning``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import fastact as fa
from fastact import _registry
from fastact._tools import example_call

try:
    import oracle
except ImportError:  # pragma: no cover - tests/ imported as a package
    from tests import oracle

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
HOST = [b for b in ("numba", "cython", "numpy") if b in fa.backends()]


def _cases():
    """(label, spec, form, use_y) for every op and form the example builder knows."""
    out = []
    for spec in _registry.OPS:
        for form in spec.forms:
            uses = [False]
            if (form == "backward" and spec.kind != "rowwise" and spec.y_backward is not None
                    and spec.y_backward(spec.defaults)):
                uses.append(True)
            for use_y in uses:
                try:
                    example_call(spec, form, np.zeros((2, 3, 4), F32), use_y=use_y)
                except Exception:  # a kind example_call does not build (yet): not public array ops
                    continue
                out.append((spec.public_name(form) + ("[y]" if use_y else ""), spec, form, use_y))
    return out


CASES = _cases()

#: The array-layer tests (layouts, out=, dtypes, bad arguments) run on these cases only: every
#: non-elementwise op, and the elementwise ops of oracle.LAYER_OPS, which cover each kind of
#: signature.  The layer (_validate and the generated wrappers) is shared by all elementwise
#: ops; each op's own numerics (values, NaN, inf, extremes, kinks) are tested for all of them.
LAYER_CASES = [c for c in CASES if c[1].kind != "elementwise" or c[1].name in oracle.LAYER_OPS]
layer_param = pytest.mark.parametrize("case", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
case_param = pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])


def _x(dtype=F32, shape=(2, 3, 4)):
    n = int(np.prod(shape))
    return (np.linspace(-3.0, 3.0, n) + 0.01).astype(dtype).reshape(shape)


def _call(case, x, **over):
    """(fn, args, kwargs, array positions) with every array argument listed as a position."""
    label, spec, form, use_y = case
    fn, args, kwargs = example_call(spec, form, x, use_y=use_y)
    args, kwargs = list(args), dict(kwargs)
    positions = [("args", i) for i, a in enumerate(args) if isinstance(a, np.ndarray)]
    positions += [("kwargs", k) for k, v in kwargs.items() if isinstance(v, np.ndarray)]
    return fn, args, kwargs, positions


def _name(pos, fn_args_count=None):
    return pos[1] if pos[0] == "kwargs" else pos[1]


def _get(args, kwargs, pos):
    return args[pos[1]] if pos[0] == "args" else kwargs[pos[1]]


def _set(args, kwargs, pos, value):
    if pos[0] == "args":
        args[pos[1]] = value
    else:
        kwargs[pos[1]] = value


def _results(r):
    return [np.asarray(v) for v in (r if isinstance(r, tuple) else (r,))]


def _content(a):
    if a.dtype.hasobject:
        return repr(a.tolist())
    data = a.data if isinstance(a, np.ma.MaskedArray) else a
    return (bytes(np.ascontiguousarray(data).view(np.uint8).reshape(-1)),
            bytes(np.ma.getmaskarray(a)) if isinstance(a, np.ma.MaskedArray) else b"")


def _snapshot(args, kwargs):
    return [(a, _content(a), a.shape, a.dtype)
            for a in list(args) + list(kwargs.values()) if isinstance(a, np.ndarray)]


def _unchanged(snap):
    for a, data, shape, dtype in snap:
        assert a.shape == shape and a.dtype == dtype
        assert _content(a) == data, "an input was modified"


def _same(got, want, what):
    assert len(got) == len(want), what
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, what
        assert g.flags.c_contiguous and g.dtype.isnative, what
        np.testing.assert_array_equal(g, w, err_msg=what)


def _error(fn, args, kwargs, backend):
    try:
        fn(*args, backend=backend, **kwargs)
    except Exception as exc:  # noqa: BLE001 - compared below
        return type(exc), str(exc)
    return None


def _same_error_everywhere(fn, args, kwargs, exc_type, fname, argname):
    errors = {b: _error(fn, args, kwargs, b) for b in HOST}
    first = errors[HOST[0]]
    assert first is not None, f"{fname}: no error for a hostile {argname}"
    assert issubclass(first[0], exc_type), first
    assert fname in first[1], first
    assert argname in first[1], first
    assert all(e == first for e in errors.values()), errors


# ------------------------------------------------------------------------------------------------
# hostile array arguments, every position
# ------------------------------------------------------------------------------------------------

def _masked(a):
    return np.ma.masked_array(a, mask=np.zeros(a.shape, bool) | (np.arange(a.size) % 3 == 0)
                              .reshape(a.shape))


def _ragged(a):
    if a.ndim == 0:
        return [[1.0], [1.0, 2.0]]
    lst = a.astype(np.float64).tolist()
    if a.ndim >= 2:
        lst[0] = lst[0][:-1] if isinstance(lst[0], list) else lst[0]
        if not isinstance(lst[0], list) or len(lst[0]) == len(lst[-1]):
            return [[1.0], [1.0, 2.0]]
        return lst
    return [lst, lst[:-1]]


def _object(a):
    return a.astype(object)


def _object_list(a):
    return [None] * max(a.size, 1)


HOSTILE_ERRORS = {
    "masked_array": (_masked, TypeError),
    "ragged_list": (_ragged, TypeError),
    "object_array": (_object, TypeError),
    "list_with_none": (_object_list, TypeError),
    "complex_array": (lambda a: a.astype(np.complex64), TypeError),
    "bool_array": (lambda a: a > 0, TypeError),
    "string_array": (lambda a: a.astype(str), TypeError),
    "datetime_array": (lambda a: np.zeros(a.shape, "datetime64[s]"), TypeError),
}


def _arg_label(pos):
    return str(pos[1]) if pos[0] == "kwargs" else ("x" if pos[1] == 0 else f"arg{pos[1]}")


def _public_argname(case, fn, pos):
    """The argument name the error message must use."""
    import inspect

    if pos[0] == "kwargs":
        return pos[1]
    params = [p.name for p in inspect.signature(fn).parameters.values()]
    return params[pos[1]]


@layer_param
@pytest.mark.parametrize("kind", list(HOSTILE_ERRORS))
def test_hostile_argument_rejected_on_every_position(case, kind):
    make, exc_type = HOSTILE_ERRORS[kind]
    fn, args, kwargs, positions = _call(case, _x())
    fname = "fastact." + fn.__name__
    for pos in positions:
        a_args, a_kwargs = list(args), dict(kwargs)
        bad = make(_get(args, kwargs, pos))
        _set(a_args, a_kwargs, pos, bad)
        snap = _snapshot(a_args, a_kwargs)
        _same_error_everywhere(fn, a_args, a_kwargs, exc_type, fname,
                               _public_argname(case, fn, pos))
        _unchanged(snap)


def _memmap(a, path):
    m = np.memmap(path, dtype=a.dtype, mode="w+", shape=a.shape)
    m[...] = a
    m.flush()
    return np.memmap(path, dtype=a.dtype, mode="r", shape=a.shape)


def _zero_stride(a):
    if a.ndim == 0 or a.size == 0:
        return a
    first = a.reshape(-1)[:1].reshape((1,) * a.ndim)
    return np.broadcast_to(first, a.shape)


LAYOUTS = {
    "memmap": _memmap,
    "zero_stride": lambda a, p: _zero_stride(a),
    "big_endian": lambda a, p: a.astype(a.dtype.newbyteorder(">")),
    "negative_stride": lambda a, p: np.ascontiguousarray(a[(slice(None, None, -1),) * a.ndim])[
        (slice(None, None, -1),) * a.ndim],
    "fortran": lambda a, p: np.asfortranarray(a),
    "read_only_view": lambda a, p: np.lib.stride_tricks.as_strided(a, writeable=False),
    "python_list": lambda a, p: a.tolist() if a.dtype == F64 else a,
}


@layer_param
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("backend", HOST)
def test_any_layout_on_every_position(case, layout, backend, tmp_path):
    """Each array argument in turn given in a hostile layout: the result equals the call with
    plain C-contiguous copies of the same values (bitwise: the kernels see the same data)."""
    dtype = F64 if layout == "python_list" else F32
    fn, args, kwargs, positions = _call(case, _x(dtype))
    for k, pos in enumerate(positions):
        a_args, a_kwargs = list(args), dict(kwargs)
        original = _get(args, kwargs, pos)
        if layout == "python_list" and _public_argname(case, fn, pos) == "weight":
            # prelu's weight is a float or an array (DESIGN.md section 1), not a list
            _set(a_args, a_kwargs, pos, original.tolist())
            with pytest.raises(TypeError, match="weight"):
                fn(*a_args, backend=backend, **a_kwargs)
            continue
        hostile = LAYOUTS[layout](original, tmp_path / f"m{k}.dat")
        _set(a_args, a_kwargs, pos, hostile)
        plain_args, plain_kwargs = list(a_args), dict(a_kwargs)
        _set(plain_args, plain_kwargs, pos, np.array(hostile, dtype=original.dtype))
        snap = _snapshot(a_args, a_kwargs)
        got = _results(fn(*a_args, backend=backend, **a_kwargs))
        want = _results(fn(*plain_args, backend=backend, **plain_kwargs))
        _same(got, want, f"{case[0]} {layout} at {_arg_label(pos)}")
        _unchanged(snap)


# ------------------------------------------------------------------------------------------------
# hostile out=
# ------------------------------------------------------------------------------------------------

def _out_call(case, x):
    """Like :func:`_call`, for tests of ``out=``: a forward loss takes ``out`` only with
    reduction='none' (a reduced loss is a NumPy scalar), so that is what it gets."""
    fn, args, kwargs, positions = _call(case, x)
    if case[1].kind == "loss" and case[2] == "forward":
        kwargs["reduction"] = "none"
    return fn, args, kwargs, positions


def _out_results(case, results):
    """The results ``out=`` stands for: all of them, except that ``LOSS_and_grad``'s ``out``
    is its gradient (the loss value is a NumPy scalar)."""
    return results[1:] if case[1].kind == "loss" and case[2] == "and_grad" else results


def _outs_for(case, fn, args, kwargs):
    """Plain results, to size the out buffers."""
    return _out_results(case, _results(fn(*args, **kwargs)))


@layer_param
@pytest.mark.parametrize("backend", HOST)
def test_memmap_out(case, backend, tmp_path):
    fn, args, kwargs, _ = _out_call(case, _x())
    want = _out_results(case, _results(fn(*args, backend=backend, **kwargs)))
    outs = []
    for k, w in enumerate(want):
        m = np.memmap(tmp_path / f"out{k}.dat", dtype=w.dtype, mode="w+", shape=w.shape)
        m[...] = 7.0
        outs.append(m)
    out = tuple(outs) if len(outs) > 1 else outs[0]
    snap = _snapshot(args, kwargs)
    r = fn(*args, out=out, backend=backend, **kwargs)
    for got, m, w in zip(_out_results(case, _results(r)), outs, want):
        assert got is m or np.shares_memory(got, m)
        np.testing.assert_array_equal(np.asarray(m), w)
    _unchanged(snap)


BAD_OUTS = {
    "masked": (lambda w: np.ma.masked_array(np.zeros_like(w)), TypeError),
    "self_overlapping": (lambda w: np.lib.stride_tricks.as_strided(
        np.zeros(1, w.dtype), shape=w.shape, strides=(0,) * w.ndim, writeable=True), ValueError),
}


@layer_param
@pytest.mark.parametrize("kind", list(BAD_OUTS))
def test_hostile_out_rejected(case, kind):
    make, exc_type = BAD_OUTS[kind]
    fn, args, kwargs, _ = _out_call(case, _x())
    want = _outs_for(case, fn, args, kwargs)
    fname = "fastact." + fn.__name__
    for k in range(len(want)):
        if want[k].size <= 1 and kind == "self_overlapping":
            continue
        outs = [None] * len(want)
        outs[k] = make(want[k])
        out = tuple(outs) if len(want) > 1 else outs[0]
        argname = f"out[{k}]" if len(want) > 1 else "out"
        snap = _snapshot(args, kwargs)
        _same_error_everywhere(fn, args, dict(kwargs, out=out), exc_type, fname, argname)
        _unchanged(snap)


# ------------------------------------------------------------------------------------------------
# NaN / inf / signed zero / subnormal everywhere
# ------------------------------------------------------------------------------------------------

def _special(dtype, kind, shape=(3, 8)):
    n = int(np.prod(shape))
    info = np.finfo(dtype)
    fill = {"nan": [np.nan], "inf": [np.inf], "-inf": [-np.inf],
            "zeros": [0.0, -0.0],
            "subnormal": [float(info.smallest_subnormal), -float(info.smallest_subnormal),
                          float(info.tiny) / 2],
            "mixed": [np.nan, np.inf, -np.inf, 0.0, -0.0, float(info.max), -float(info.max),
                      float(info.tiny), 1.0, -1.0]}[kind]
    return np.resize(np.array(fill, dtype=dtype), n).reshape(shape)


def _nan_equal(a, b, rtol):
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    an, bn = np.isnan(a), np.isnan(b)
    if not np.array_equal(an, bn):
        return False
    a, b = a[~an].astype(np.float64), b[~bn].astype(np.float64)
    if not np.array_equal(np.isinf(a) * np.sign(a), np.isinf(b) * np.sign(b)):
        return False
    f = np.isfinite(a)
    return np.allclose(a[f], b[f], rtol=rtol, atol=float(np.finfo(np.float32).tiny))


@case_param
@pytest.mark.parametrize("kind", ["nan", "inf", "-inf", "zeros", "subnormal", "mixed"])
@pytest.mark.parametrize("dtype", [F16, F32, F64], ids=str)
def test_special_values_everywhere_agree_across_backends(case, kind, dtype):
    """Every array argument made of special values: no exception, no RuntimeWarning, inputs
    unchanged, and every backend gives the same NaN/inf pattern and (close) values."""
    label, spec, form, use_y = case
    x = _special(dtype, kind)
    fn, args, kwargs = example_call(spec, form, x, use_y=use_y)
    args, kwargs = list(args), dict(kwargs)
    # grad and y get the special values too (they are inputs of the same shape)
    for i, a in enumerate(args):
        if isinstance(a, np.ndarray) and a.shape == x.shape:
            args[i] = _special(dtype, kind)
    for k in ("y",):
        if isinstance(kwargs.get(k), np.ndarray) and kwargs[k].shape == x.shape:
            kwargs[k] = _special(dtype, kind)
    lo_hi = spec.extra.get("input_range")
    if lo_hi is not None and not np.all((x >= lo_hi[0]) & (x <= lo_hi[1])):
        # a documented domain (BCE: probabilities): the same ValueError on every backend, naming
        # the function and the input, before anything is written
        fname = "fastact." + fn.__name__
        _same_error_everywhere(fn, args, kwargs, ValueError, fname, "input")
        return
    results = {}
    for backend in HOST:
        snap = _snapshot(args, kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            results[backend] = _results(fn(*args, backend=backend, **kwargs))
        _unchanged(snap)
    rtol = {F16: 2e-3, F32: 1e-5, F64: 1e-12}[dtype]
    first = results[HOST[0]]
    for backend, res in results.items():
        for a, b in zip(res, first):
            assert _nan_equal(a, b, rtol), (label, kind, backend, a, b)
