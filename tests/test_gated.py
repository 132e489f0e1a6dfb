"""Gated units (glu, swiglu, geglu): every op x form x backend x dtype against the oracle, the
split axis of glu, the argument contract (shapes, out=, in-place, errors) and the limits.

Oracle: ``act(gate) * value`` and its gradients with the gate op's exact value and derivative
from :mod:`tests.oracle` (float64 for float16/32 results; long double or mpmath for float64),
multiplied in the wide dtype and rounded once.  So a gated unit is checked against the same
independent references as its gate activation, not against another backend.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastact as fa
from fastact import _registry

import oracle

GATED = _registry.gated_ops()
SPLIT = [s for s in GATED if s.extra["split"]]
PAIR = [s for s in GATED if not s.extra["split"]]
F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)

#: (op, params) cases: geglu with both gelu forms
CASES = [(s, p) for s in GATED for p in (
    [{"approximate": "none"}, {"approximate": "tanh"}] if s.name == "geglu" else [{}])]


def case_id(case) -> str:
    spec, params = case
    return spec.name + "".join(f"-{v}" for v in params.values())


# ------------------------------------------------------------------------------------------------
# the oracle
# ------------------------------------------------------------------------------------------------

def reference(spec, dtype, gate, value, grad=None, params=None):
    """Exact (wide) ``(forward, grad_gate, grad_value)`` on elements; the gradients only when
    ``grad`` is given."""
    act = _registry.get(spec.extra["gate"])
    fwd = oracle.elementwise(act, "forward", dtype, x=gate, params=params)
    wide = fwd.dtype
    v = oracle.upcast(value, wide)
    with oracle.quiet():
        if grad is None:
            return fwd * v, None, None
        d = oracle.elementwise(act, "derivative", dtype, x=gate, params=params).astype(wide)
        g = oracle.upcast(grad, wide)
        return fwd * v, g * v * d, g * fwd


def halves(x, axis):
    value, gate = np.split(np.asarray(x), 2, axis=axis)
    return value, gate


def check(spec, what, got, ref, dtype, part, inputs):
    if part == "forward":
        oracle.assert_close(what, got, ref, dtype, inputs=inputs,
                            ulps=spec.bound.ulps(dtype.name), floor=oracle.tiny(dtype))
    else:
        oracle.assert_close(what, got, ref, dtype, inputs=inputs,
                            ulps=spec.derivative_bound.ulps(dtype.name),
                            floor=oracle.derivative_floor(ref, dtype))


def operands(spec, dtype, n, seed=0, specials=True):
    """gate values over the gate op's domain, the whole range and its special values;
    value and grad moderate and finite (inf * underflow is tested separately)."""
    rng = np.random.default_rng(seed)
    act = _registry.get(spec.extra["gate"])
    gate = oracle.random_values(rng, n, dtype, act.domain, specials=specials)
    value = rng.uniform(-4, 4, n).astype(dtype)
    grad = rng.uniform(-3, 3, n).astype(dtype)
    value[::17] = 0.0
    return gate, value, grad


# ------------------------------------------------------------------------------------------------
# accuracy: every op, form, backend and dtype
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("dtype", [F16, F32, F64], ids=str)
def test_accuracy(case, dtype, backend):
    spec, params = case
    n = 1500 if dtype == F64 and spec.extra["gate"] == "gelu" else 6000  # mpmath reference
    gate, value, grad = operands(spec, dtype, n, seed=len(spec.name))
    ref, ref_gg, ref_gv = reference(spec, dtype, gate, value, grad, params)
    inputs = {"gate": gate, "value": value, "grad": grad}
    if spec.extra["split"]:
        rows = n // 50
        shape = (rows, 50)
        x = np.concatenate([value.reshape(shape), gate.reshape(shape)], axis=1)
        y = fa.glu(x, backend=backend)
        gx = fa.glu_backward(grad.reshape(shape), x=x, backend=backend)
        assert y.dtype == dtype and y.shape == shape and gx.shape == x.shape
        got, got_gv, got_gg = y.reshape(-1), gx[:, :50].reshape(-1), gx[:, 50:].reshape(-1)
    else:
        fn, back = getattr(fa, spec.name), getattr(fa, f"{spec.name}_backward")
        got = fn(gate, value, backend=backend, **params)
        got_gg, got_gv = back(grad, a=gate, b=value, backend=backend, **params)
        assert got.dtype == got_gg.dtype == got_gv.dtype == dtype
    check(spec, f"{spec.name} {backend}", got, ref, dtype, "forward", inputs)
    check(spec, f"{spec.name}_backward grad_gate {backend}", got_gg, ref_gg, dtype, "backward",
          inputs)
    check(spec, f"{spec.name}_backward grad_value {backend}", got_gv, ref_gv, dtype, "backward",
          inputs)


#: float32 gates whose activation is subnormal or nearly so (x e^x, e^x / (1 + e^x) below
#: -87; x Phi(x) below -13.2), where a large second operand still makes the product normal
TINY_ACTIVATION = {"sigmoid": (-103.0, -80.0), "silu": (-103.0, -80.0), "gelu": (-14.5, -12.0)}


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_large_operand_times_tiny_activation(case, backend):
    """float32: the product of a (nearly) subnormal activation and an operand of ~1e30 is a
    normal number, so it meets the bound (DESIGN.md section 4: also where an intermediate would
    be subnormal).  The Numba kernels once rounded the float32 activation first: swiglu(-100,
    1e38) was 1277 ULP off, glu 279,000 ULP.  (float64 has the same limit at ~1e300 operands;
    not covered.)"""
    spec, params = case
    lo, hi = TINY_ACTIVATION[spec.extra["gate"]]
    rng = np.random.default_rng(3)
    n = 500
    gate = np.linspace(lo, hi, n).astype(F32)
    value = (rng.choice([-1.0, 1.0], n) * 10.0 ** rng.uniform(20, 30, n)).astype(F32)
    grad = rng.uniform(-3, 3, n).astype(F32)
    ref, ref_gg, ref_gv = reference(spec, F32, gate, value, grad, params)
    inputs = {"gate": gate, "value": value, "grad": grad}
    if spec.extra["split"]:
        x = np.concatenate([value[:, None], gate[:, None]], axis=1)
        got = fa.glu(x, backend=backend)[:, 0]
        gx = fa.glu_backward(grad[:, None], x=x, backend=backend)
        got_gv, got_gg = gx[:, 0], gx[:, 1]
    else:
        got = getattr(fa, spec.name)(gate, value, backend=backend, **params)
        got_gg, got_gv = getattr(fa, f"{spec.name}_backward")(grad, a=gate, b=value,
                                                              backend=backend, **params)
    check(spec, f"{spec.name} {backend}", got, ref, F32, "forward", inputs)
    check(spec, f"{spec.name}_backward grad_gate {backend}", got_gg, ref_gg, F32, "backward",
          inputs)
    check(spec, f"{spec.name}_backward grad_value {backend}", got_gv, ref_gv, F32, "backward",
          inputs)


@pytest.mark.parametrize("spec", GATED, ids=lambda s: s.name)
def test_oracle_against_the_definition(spec):
    """The oracle's act(gate) * value against mpmath, on a few points (independent check of the
    composition: the gate formulas themselves are validated in test_accuracy.py)."""
    gate = np.array([-30.0, -5.0, -1.0, -1e-3, 0.0, 0.5, 2.0, 7.0, 30.0])
    value = np.linspace(-2.0, 3.0, gate.size)
    ref = reference(spec, F64, gate, value, np.ones_like(gate))
    for i, (g, v) in enumerate(zip(gate, value)):
        exact = oracle.mp_value(spec.extra["gate"], "forward", g) * oracle.to_mpf(v)
        d = oracle.mp_value(spec.extra["gate"], "derivative", g) * oracle.to_mpf(v)
        assert oracle.mp_relative_error(ref[0][i], exact, 1e-300) < 1e-15
        assert oracle.mp_relative_error(ref[1][i], d, 1e-300) < 1e-15


# ------------------------------------------------------------------------------------------------
# glu's split axis, layouts and shapes
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2])
@pytest.mark.parametrize("layout", ["c", "fortran", "strided"])
def test_glu_any_axis_and_layout(axis, layout, backend):
    rng = np.random.default_rng(1)
    base = rng.uniform(-6, 6, (6, 8, 10)).astype(np.float32)
    if layout == "fortran":
        x = np.asfortranarray(base)
    elif layout == "strided":
        x = np.asarray(rng.uniform(-6, 6, (12, 8, 20)).astype(np.float32))[::2, :, ::2]
    else:
        x = base
    x_before = x.copy()
    grad = rng.uniform(-2, 2, halves(x, axis)[0].shape).astype(np.float32)
    y = fa.glu(x, axis=axis, backend=backend)
    gx = fa.glu_backward(grad, x=x, axis=axis, backend=backend)
    value, gate = halves(x, axis)
    ref, ref_gg, ref_gv = reference(_registry.get("glu"), F32, gate, value, grad)
    spec = _registry.get("glu")
    check(spec, "glu", y, ref, F32, "forward", None)
    got_gv, got_gg = halves(gx, axis)
    check(spec, "glu grad_value", got_gv, ref_gv, F32, "backward", None)
    check(spec, "glu grad_gate", got_gg, ref_gg, F32, "backward", None)
    assert y.flags.c_contiguous and gx.shape == x.shape
    np.testing.assert_array_equal(x, x_before)  # inputs are never modified


@pytest.mark.parametrize("shape,axis,half", [((0,), -1, (0,)), ((4, 0), -1, (4, 0)),
                                             ((0, 6), -1, (0, 3)), ((2,), 0, (1,)),
                                             ((3, 2, 0), 1, (3, 1, 0))])
def test_glu_empty_and_small(shape, axis, half, backend):
    x = np.linspace(-1, 1, math.prod(shape)).reshape(shape)
    y = fa.glu(x, axis=axis, backend=backend)
    assert y.shape == half and y.dtype == F64
    gx = fa.glu_backward(np.ones(half), x=x, axis=axis, backend=backend)
    assert gx.shape == shape
    if x.size:
        v, g = halves(x, axis)
        np.testing.assert_allclose(y, v / (1 + np.exp(-g)), rtol=1e-15)


@pytest.mark.parametrize("spec", PAIR, ids=lambda s: s.name)
@pytest.mark.parametrize("shape", [(), (0,), (5,), (3, 0, 2), (4, 5, 3)], ids=str)
def test_pair_shapes(spec, shape, backend):
    rng = np.random.default_rng(2)
    a = np.asarray(rng.uniform(-5, 5, shape))
    b = np.asarray(rng.uniform(-5, 5, shape))
    y = getattr(fa, spec.name)(a, b, backend=backend)
    ga, gb = getattr(fa, f"{spec.name}_backward")(np.ones(shape), a=a, b=b, backend=backend)
    assert y.shape == ga.shape == gb.shape == shape
    if a.size:
        ref, ref_ga, ref_gb = reference(spec, F64, a, b, np.ones(shape))
        check(spec, spec.name, y, ref, F64, "forward", None)
        check(spec, "grad_a", ga, ref_ga, F64, "backward", None)
        check(spec, "grad_b", gb, ref_gb, F64, "backward", None)


@pytest.mark.parametrize("spec", PAIR, ids=lambda s: s.name)
def test_pair_views_and_mixed_dtypes(spec, backend):
    rng = np.random.default_rng(3)
    a = rng.uniform(-5, 5, (20, 30))[::2, ::3]          # strided view
    b = np.asfortranarray(rng.uniform(-5, 5, (10, 10)).astype(np.float32))
    y = getattr(fa, spec.name)(a, b, backend=backend)
    assert y.dtype == F64  # float64 and float32 give float64, as in NumPy
    ref = reference(spec, F64, a, b)[0]
    check(spec, spec.name, y, ref, F64, "forward", None)


def test_glu_is_the_pair_formula_on_halves(backend):
    """glu(x) == x1 * sigmoid(x2), and swiglu == silu(a) * b, via fastact's own activations
    (both within their bounds of the oracle: a consistency check of the plumbing)."""
    rng = np.random.default_rng(4)
    x = rng.uniform(-8, 8, (7, 12))
    v, g = halves(x, -1)
    np.testing.assert_allclose(fa.glu(x, backend=backend), v * fa.sigmoid(g), rtol=4e-16 * 8)
    np.testing.assert_allclose(fa.swiglu(g, v, backend=backend), fa.silu(g) * v, rtol=4e-16 * 8)


# ------------------------------------------------------------------------------------------------
# out=, in place, inputs untouched
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", PAIR, ids=lambda s: s.name)
def test_pair_out_and_in_place(spec, backend):
    rng = np.random.default_rng(5)
    a = rng.uniform(-5, 5, 300).astype(np.float32)
    b = rng.uniform(-5, 5, 300).astype(np.float32)
    grad = rng.uniform(-1, 1, 300).astype(np.float32)
    fn, back = getattr(fa, spec.name), getattr(fa, f"{spec.name}_backward")
    want = fn(a, b, backend=backend)
    want_ga, want_gb = back(grad, a=a, b=b, backend=backend)
    out = np.empty_like(a)
    assert fn(a, b, out=out, backend=backend) is out
    np.testing.assert_array_equal(out, want)
    # in place over a, and the backward's results over (a, b) and over (b, grad)
    a2, b2 = a.copy(), b.copy()
    assert fn(a2, b2, out=a2, backend=backend) is a2
    np.testing.assert_array_equal(a2, want)
    np.testing.assert_array_equal(b2, b)
    a2, b2 = a.copy(), b.copy()
    ga, gb = back(grad, a=a2, b=b2, out=(a2, b2), backend=backend)
    assert ga is a2 and gb is b2
    np.testing.assert_array_equal(ga, want_ga)
    np.testing.assert_array_equal(gb, want_gb)
    b2, g2 = b.copy(), grad.copy()
    ga, gb = back(g2, a=a, b=b2, out=(b2, g2), backend=backend)
    np.testing.assert_array_equal(ga, want_ga)
    np.testing.assert_array_equal(gb, want_gb)
    # only one of the pair, and a non-contiguous out
    ga, gb = back(grad, a=a, b=b, out=(None, out), backend=backend)
    assert gb is out
    np.testing.assert_array_equal(ga, want_ga)
    strided = np.empty(600, np.float32)[::2]
    assert fn(a, b, out=strided, backend=backend) is strided
    np.testing.assert_array_equal(strided, want)


def test_glu_out_and_in_place(backend):
    rng = np.random.default_rng(6)
    x = rng.uniform(-5, 5, (40, 16))
    grad = rng.uniform(-1, 1, (40, 8))
    want = fa.glu(x, backend=backend)
    want_gx = fa.glu_backward(grad, x=x, backend=backend)
    out = np.empty((40, 8))
    assert fa.glu(x, out=out, backend=backend) is out
    np.testing.assert_array_equal(out, want)
    x2 = x.copy()
    assert fa.glu_backward(grad, x=x2, out=x2, backend=backend) is x2
    np.testing.assert_array_equal(x2, want_gx)
    # out overlapping x but not the same memory: a scratch buffer, the right answer
    x3 = x.copy()
    assert fa.glu(x3, out=x3[:, :8], backend=backend).base is x3
    np.testing.assert_array_equal(x3[:, :8], want)


# ------------------------------------------------------------------------------------------------
# errors: before any work, naming the function and argument, the same on every backend
# ------------------------------------------------------------------------------------------------

def _message(fn, *args, **kwargs):
    with pytest.raises(Exception) as info:
        fn(*args, **kwargs)
    return type(info.value), str(info.value)


ERRORS = [
    ("glu odd axis", lambda be: fa.glu(np.ones((2, 5)), backend=be), ValueError,
     "fastact.glu: x has odd size 5 along axis -1"),
    ("glu odd axis 0", lambda be: fa.glu(np.ones((3, 4)), axis=0, backend=be), ValueError,
     "odd size 3 along axis 0"),
    ("glu 0-d", lambda be: fa.glu(np.float64(1.0), backend=be), ValueError, "x is 0-d"),
    ("glu axis range", lambda be: fa.glu(np.ones((2, 4)), axis=2, backend=be), np.exceptions.AxisError,
     "fastact.glu"),
    ("glu axis type", lambda be: fa.glu(np.ones((2, 4)), axis=1.0, backend=be), TypeError,
     "axis must be an integer"),
    ("glu_backward grad shape", lambda be: fa.glu_backward(np.ones((2, 4)), x=np.ones((2, 4)),
                                                         backend=be), ValueError,
     "fastact.glu_backward: grad has shape (2, 4), expected (2, 2)"),
    ("glu int", lambda be: fa.glu(np.ones((2, 4), dtype=np.int64), backend=be), TypeError,
     "fastact.glu: x"),
    ("glu out shape", lambda be: fa.glu(np.ones((2, 4)), out=np.empty((2, 4)), backend=be),
     ValueError, "fastact.glu: out has shape (2, 4), expected (2, 2)"),
    ("swiglu shapes", lambda be: fa.swiglu(np.ones(3), np.ones(4), backend=be), ValueError,
     "fastact.swiglu: b has shape (4,), expected (3,)"),
    ("swiglu no broadcast", lambda be: fa.swiglu(np.ones((2, 3)), np.ones(3), backend=be),
     ValueError, "fastact.swiglu: b has shape (3,)"),
    ("swiglu_backward grad", lambda be: fa.swiglu_backward(np.ones(2), a=np.ones(3),
                                                           b=np.ones(3), backend=be),
     ValueError, "fastact.swiglu_backward: grad has shape (2,)"),
    ("swiglu_backward out", lambda be: fa.swiglu_backward(np.ones(3), a=np.ones(3), b=np.ones(3),
                                                          out=np.empty(3), backend=be),
     TypeError, "fastact.swiglu_backward: out must be a 2-tuple"),
    ("swiglu_backward overlap", lambda be: fa.swiglu_backward(
        np.ones(3), a=np.ones(3), b=np.ones(3), out=(np.empty(3),) * 2, backend=be),
     ValueError, "out[0] and out[1] overlap"),
    ("geglu approximate", lambda be: fa.geglu(np.ones(3), np.ones(3), approximate="fast",
                                              backend=be), ValueError,
     "fastact.geglu: approximate must be 'none' or 'tanh', got 'fast'"),
    ("geglu_backward approximate", lambda be: fa.geglu_backward(
        np.ones(3), a=np.ones(3), b=np.ones(3), approximate=None, backend=be), ValueError,
     "fastact.geglu_backward: approximate must be"),
    ("geglu b list of str", lambda be: fa.geglu(np.ones(2), ["a", "b"], backend=be), TypeError,
     "fastact.geglu: b"),
    ("swiglu_backward missing b", lambda be: fa.swiglu_backward(np.ones(3), a=np.ones(3),
                                                                backend=be), TypeError, "b"),
]


@pytest.mark.parametrize("name,call,exc,text", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors(name, call, exc, text, backend):
    kind, message = _message(call, backend)
    assert issubclass(kind, exc), (kind, message)
    assert text in message, message
    # every backend raises the same thing
    assert (kind, message) == _message(call, "numpy")


def test_read_only_input_and_out(backend):
    a = np.linspace(-3, 3, 8)
    a.setflags(write=False)
    y = fa.swiglu(a, a, backend=backend)  # read-only inputs are fine
    np.testing.assert_array_equal(y, fa.swiglu(a.copy(), a.copy(), backend=backend))
    with pytest.raises(ValueError, match="fastact.swiglu: out is read-only"):
        fa.swiglu(a, a, out=a, backend=backend)


# ------------------------------------------------------------------------------------------------
# limits: NaN, infinities, float16, lists
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_limits(dtype, backend):
    """silu(-inf) = gelu(-inf) = 0, silu(inf) = gelu(inf) = inf; inf * 0 and NaN give NaN."""
    inf, nan = np.inf, np.nan
    a = np.array([-inf, inf, inf, -inf, nan, 1.0, 0.0, 2.0], dtype)
    b = np.array([1.0, 2.0, -3.0, inf, 1.0, nan, inf, -inf], dtype)
    want = np.array([0.0, inf, -inf, nan, nan, nan, nan, -inf], dtype)
    for op in ("swiglu", "geglu"):
        np.testing.assert_array_equal(getattr(fa, op)(a, b, backend=backend), want, err_msg=op)
    # glu: value b, gate a -> b * sigmoid(a), sigmoid(+-inf) = 1, 0
    x = np.stack([b, a], axis=-1)
    with np.errstate(all="ignore"):
        s = np.where(a == inf, 1.0, np.where(a == -inf, 0.0, 1 / (1 + np.exp(-a))))
        want = (b * s).astype(dtype)[:, None]
    assert np.isnan(want[3, 0]) and want[6, 0] == inf
    np.testing.assert_array_equal(fa.glu(x, backend=backend), want)


def test_float16_and_lists(backend):
    a = np.linspace(-4, 4, 33).astype(np.float16)
    b = np.linspace(2, -2, 33).astype(np.float16)
    spec = _registry.get("swiglu")
    y = fa.swiglu(a, b, backend=backend)
    assert y.dtype == F16
    check(spec, "swiglu float16", y, reference(spec, F16, a, b)[0], F16, "forward", None)
    y = fa.swiglu([1.0, -2.0], [3.0, 4.0], backend=backend)
    assert y.dtype == F64
    np.testing.assert_allclose(y, [3 / (1 + math.exp(-1)), -8 / (1 + math.exp(2))], rtol=1e-15)


def test_large_rows_use_every_block(backend):
    """Rows longer than one work block (4096 elements) and many short rows: every element
    computed (a block-indexing error leaves garbage or zeros behind)."""
    rng = np.random.default_rng(7)
    for shape in ((3, 2 * 10_000 + 2), (5000, 4)):
        x = rng.uniform(-4, 4, shape)
        v, g = halves(x, -1)
        np.testing.assert_allclose(fa.glu(x, backend=backend), v / (1 + np.exp(-g)),
                                   rtol=1e-14, atol=1e-300)
    a = rng.uniform(-4, 4, 3 * 4096 + 5)
    np.testing.assert_allclose(fa.swiglu(a, a, backend=backend), a * a / (1 + np.exp(-a)),
                               rtol=1e-14)


# ------------------------------------------------------------------------------------------------
# dask arrays
# ------------------------------------------------------------------------------------------------

def test_dask():
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(8)
    x = rng.uniform(-4, 4, (30, 16))
    dx = da.from_array(x, chunks=(7, 5))  # the split axis over several chunks: rechunked
    y = fa.glu(dx)
    assert isinstance(y, da.Array) and y.shape == (30, 8)
    np.testing.assert_array_equal(y.compute(), fa.glu(x))
    grad = rng.uniform(-1, 1, (30, 8))
    gx = fa.glu_backward(da.from_array(grad, chunks=(4, 3)), x=dx)
    np.testing.assert_array_equal(gx.compute(), fa.glu_backward(grad, x=x))
    y0 = fa.glu(dx, axis=0)
    np.testing.assert_array_equal(y0.compute(), fa.glu(x, axis=0))
    a, b = x[:, :8], x[:, 8:]
    da_a, da_b = da.from_array(a, chunks=4), da.from_array(b, chunks=4)
    np.testing.assert_array_equal(fa.geglu(da_a, da_b, approximate="tanh").compute(),
                                  fa.geglu(a, b, approximate="tanh"))
    ga, gb = fa.swiglu_backward(da.from_array(grad, chunks=4), a=da_a, b=da_b)
    want = fa.swiglu_backward(grad, a=a, b=b)
    np.testing.assert_array_equal(ga.compute(), want[0])
    np.testing.assert_array_equal(gb.compute(), want[1])
    with pytest.raises(ValueError, match="odd size"):
        fa.glu(da.from_array(np.ones((2, 3))))
    with pytest.raises(TypeError, match="out= is not supported"):
        fa.swiglu(da_a, da_b, out=np.empty_like(a))
