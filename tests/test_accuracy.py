"""Accuracy of every op, form, backend, dtype and layout against the oracle (DESIGN.md section 4).

The matrix is generated from the registry (``fastact._registry.OPS``):

* elementwise ops: every form (``backward`` with ``x=`` and, where the registry allows it, with
  ``y=``), default and varied parameters, float16/32/64, 0-d, empty, small, prime, large
  (parallel kernels) and view layouts; inputs are deterministic random values over the op's
  domain plus special values (NaN, +-inf, +-0, subnormals, overflow boundaries, huge values);
* prelu: the weight as a Python float, 0-d array, 1-D of size 1 or C (x of ndim 2/3/4, channel
  axis 1), and grad_weight against a longdouble sum;
* softmax / log_softmax / softmin and their backward, logsumexp (reduced shape, keepdims):
  axes, masks (fully masked rows), temperatures, special rows (+inf, all -inf, NaN, huge
  magnitudes), long rows, views, out= (logsumexp: the reduced shape).

Every element is checked against the exact value (``tests/oracle.py``), never a backend against
itself; a failure names the worst element.  The ``test_oracle_*`` tests validate the oracle's
formulas independently (mpmath, scipy, finite differences, exact sums).
"""

from __future__ import annotations

import math
import warnings
import zlib
from dataclasses import dataclass
from typing import Callable

import mpmath
import numpy as np
import pytest
import scipy.special

import fastact as fa
from fastact import _registry

try:
    import oracle
except ImportError:  # pragma: no cover - tests/ imported as a package
    from tests import oracle

DTYPES = [np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)]
DTYPE_IDS = [d.name for d in DTYPES]

ELEMENTWISE = [op for op in _registry.OPS if op.kind == "elementwise"]
CHANNEL = [op for op in _registry.OPS if op.kind == "channel"]
ROWWISE = [op for op in _registry.OPS if op.kind == "rowwise"]

#: Element count above the parallel threshold (32768) that is not a multiple of anything.
LARGE = 100_003


def rng_for(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32("/".join(map(str, key)).encode()))


def readonly(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.setflags(write=False)
    return a


def big_endian(a: np.ndarray) -> np.ndarray:
    return a.astype(a.dtype.newbyteorder(">"))


def ident(a):
    return a


# ------------------------------------------------------------------------------------------------
# layouts: (base shape, view of the base array); None = the special values, 1-D
# ------------------------------------------------------------------------------------------------

LAYOUTS: dict[str, tuple[tuple | None, Callable]] = {
    "0d": ((), ident),
    "empty": ((0,), ident),
    "n1": ((1,), ident),
    "n7": ((7,), ident),
    "13x17": ((13, 17), ident),
    "specials": (None, ident),
    "large": ((LARGE,), ident),
    "large_negstride": ((2 * LARGE,), lambda a: a[::-2]),
    "transposed": ((17, 13), lambda a: a.T),
    "negstride": ((101,), lambda a: a[::-1]),
    "slices": ((26, 51), lambda a: a[1::2, ::3]),
    "fortran": ((13, 17), np.asfortranarray),
    "bigendian": ((13, 17), big_endian),
    "readonly": ((13, 17), readonly),
    "broadcast": ((1, 17), lambda a: np.broadcast_to(a, (13, 17))),  # zero stride, read-only
}


def base_values(shape, dtype, domain, key, *, finite=False) -> np.ndarray:
    if shape is None:
        v = oracle.special_values(dtype)
        return v[np.isfinite(v)] if finite else v
    n = math.prod(shape)
    return oracle.random_values(rng_for(*key), n, dtype, domain, finite=finite).reshape(shape)


def grad_values(shape, dtype, key, *, specials=True) -> np.ndarray:
    """Upstream gradients: O(1) of both signs; with ``specials`` some zeros, NaN and inf.  (No
    huge finite values: the derivative floor eps * max|result| would then hide everything.)"""
    if shape is None:
        shape = (len(oracle.special_values(dtype)),)
    rng = rng_for("grad", *key)
    n = math.prod(shape)
    with oracle.quiet():
        g = rng.uniform(-2.0, 2.0, n)
        pick = rng.random(n) if specials else np.ones(n)
        g[pick < 0.05] = rng.choice([0.0, -0.0, np.inf, -np.inf, np.nan],
                                    int((pick < 0.05).sum()))
        return g.astype(dtype).reshape(shape)


def snapshot(*arrays):
    return [np.array(a, copy=True) for a in arrays]


def assert_unchanged(before, after):
    for b, a in zip(before, after):
        assert np.asarray(a).tobytes() == b.tobytes() or np.array_equal(b, a, equal_nan=True), \
            "an input was modified"


def assert_result_array(res, shape, dtype, what):
    assert isinstance(res, np.ndarray), f"{what}: returned {type(res).__name__}, not an ndarray"
    assert res.shape == tuple(shape), f"{what}: shape {res.shape}, expected {tuple(shape)}"
    assert res.dtype == np.dtype(dtype), f"{what}: dtype {res.dtype}, expected {dtype}"
    assert res.dtype.isnative, f"{what}: result is not native-endian"
    assert res.flags.c_contiguous, f"{what}: result is not C-contiguous"


# ------------------------------------------------------------------------------------------------
# elementwise ops
# ------------------------------------------------------------------------------------------------

def _cases(spec, params=None):
    """(form, use_y) pairs: every form; backward twice where y= is allowed."""
    p = spec.defaults if params is None else params
    out = []
    for form in spec.forms:
        out.append((form, False))
        if form == "backward" and spec.y_backward is not None and spec.y_backward(p):
            out.append((form, True))
    return out


def _form_id(form, use_y):
    return f"{form}_y" if use_y else (f"{form}_x" if form == "backward" else form)


ELEMENTWISE_CASES = [
    pytest.param(spec, form, use_y, id=f"{spec.name}-{_form_id(form, use_y)}")
    for spec in ELEMENTWISE for form, use_y in _cases(spec)
]


def param_variants(spec):
    """One parameter changed at a time: scaled by 0.5 and 2, and 0 and -default where the
    parameter's check allows them."""
    out = []
    for p in spec.params:
        if p.choices:
            out += [{**spec.defaults, p.name: c} for c in p.choices if c != p.default]
            continue
        d = spec.defaults[p.name]
        values = [0.5 * d, 2.0 * d] if d else [0.5, 2.0]
        if p.check in ("finite", "nonnegative") and d != 0:
            values.append(0.0)
        if p.check == "finite" and d > 0:
            values.append(-d)
        for v in values:
            out.append({**spec.defaults, p.name: v})
    return out


PARAM_CASES = [
    pytest.param(spec, form, use_y, params,
                 id=f"{spec.name}-{_form_id(form, use_y)}-"
                    + ",".join((f"{k}={v}" if isinstance(v, str) else f"{k}={v:g}") for k, v in params.items()))
    for spec in ELEMENTWISE for params in param_variants(spec)
    for form, use_y in _cases(spec, params)
]


def run_elementwise(spec, form, use_y, params, layout, dtype, backend):
    dtype = np.dtype(dtype)
    shape, view = LAYOUTS[layout]
    key = (spec.name, form, use_y, layout, dtype.name, sorted(params.items()))
    x_base = base_values(shape, dtype, spec.domain, key)
    x = view(x_base)
    fn = getattr(fa, spec.public_name(form))
    what = f"{spec.public_name(form)}({'y=' if use_y else 'x='}..., {params}) " \
           f"backend={backend} dtype={dtype.name} layout={layout}"
    inputs = {"x": x}
    if form == "backward":
        g = view(grad_values(x_base.shape, dtype, key))
        if use_y:
            y_base = oracle.round_to(
                oracle.elementwise(spec, "forward", dtype, x=x_base, params=params), dtype)
            y = view(y_base)
            before = snapshot(g, y)
            got = fn(g, y=y, backend=backend, **params)
            assert_unchanged(before, (g, y))
            refs = [oracle.elementwise(spec, "backward", dtype, grad=g, y=y, params=params)]
            d = oracle.elementwise(spec, "backward", dtype, grad=np.ones(y.shape), y=y,
                                   params=params)
            nan_ok = oracle.inf_times_underflow(g, d, dtype)
            inputs = {"y": y, "grad": g, "x": x}
        else:
            before = snapshot(g, x)
            got = fn(g, x=x, backend=backend, **params)
            assert_unchanged(before, (g, x))
            refs = [oracle.elementwise(spec, "backward", dtype, grad=g, x=x, params=params)]
            d = oracle.elementwise(spec, "derivative", dtype, x=x, params=params)
            nan_ok = oracle.inf_times_underflow(g, d, dtype)
            inputs = {"x": x, "grad": g}
    else:
        nan_ok = None
        before = snapshot(x)
        got = fn(x, backend=backend, **params)
        assert_unchanged(before, (x,))
        refs = [oracle.elementwise(spec, part, dtype, x=x, params=params)
                for part in oracle.FORM_PARTS[form]]
    results = got if form == "and_derivative" else (got,)
    assert len(results) == len(refs), what
    for part, res, ref in zip(oracle.FORM_PARTS[form], results, refs):
        assert_result_array(res, x.shape, dtype, what)
        oracle.assert_close(f"{what} [{part}]", res, ref, dtype, inputs=inputs,
                            ulps=oracle.part_ulps(spec, part, dtype),
                            floor=oracle.part_floor(part, ref, dtype), nan_ok=nan_ok)


#: Ops tested in every layout (oracle.LAYER_OPS).  Layouts exercise the array layer
#: (_validate: views, strides, byte order, 0-d, empty) and the kernel loops, which every
#: elementwise op shares.  Every other op runs on the accuracy layouts below.
ALL_LAYOUT_OPS = oracle.LAYER_OPS
ACCURACY_LAYOUTS = ("specials", "n7", "large")
#: float64 references of oracle.MP_WIDE ops come from mpmath element by element (~100 us
#: each): their float64 sweep is "mid" (4099 random points) rather than "large"
MP_WIDE_LAYOUTS = {"large": "mid", "large_negstride": "mid_negstride"}
LAYOUTS["mid"] = ((4099,), ident)
LAYOUTS["mid_negstride"] = ((2 * 4099,), lambda a: a[::-2])


def layouts_for(spec, dtype, layouts=None) -> list[str]:
    chosen = list(layouts or (LAYOUTS if spec.name in ALL_LAYOUT_OPS else ACCURACY_LAYOUTS))
    chosen = [x for x in chosen if x not in ("mid", "mid_negstride")]
    if spec.name in oracle.MP_WIDE and dtype == np.float64:
        chosen = [MP_WIDE_LAYOUTS.get(x, x) for x in chosen]
    return chosen


@pytest.mark.parametrize("spec, form, use_y, layout, dtype", [
    pytest.param(*c.values, layout, dtype, id=f"{c.id}-{layout}-{dtype.name}")
    for c in ELEMENTWISE_CASES for dtype in DTYPES for layout in layouts_for(c.values[0], dtype)])
def test_elementwise(spec, form, use_y, layout, dtype, backend):
    run_elementwise(spec, form, use_y, spec.defaults, layout, dtype, backend)


@pytest.mark.parametrize("spec, form, use_y, params, layout, dtype", [
    pytest.param(*c.values, layout, dtype, id=f"{c.id}-{layout}-{dtype.name}")
    for c in PARAM_CASES for dtype in DTYPES
    for layout in layouts_for(c.values[0], dtype, ("specials", "13x17", "large"))])
def test_elementwise_params(spec, form, use_y, params, layout, dtype, backend):
    run_elementwise(spec, form, use_y, params, layout, dtype, backend)


def _mp_gelu_tanh_d(x):
    a = 2 * mpmath.sqrt(2 / mpmath.pi)
    b = a * mpmath.mpf("0.044715")
    s = 1 / (1 + mpmath.exp(-x * (a + b * x * x)))
    return s + x * s * (1 - s) * (a + 3 * b * x * x)


def _mp_mish_d(x):
    t = mpmath.tanh(mpmath.log1p(mpmath.exp(x)))
    return t + x * (1 - t * t) / (1 + mpmath.exp(-x))


def _mp_silu_d(x):
    s = 1 / (1 + mpmath.exp(-x))
    return s + x * s * (1 - s)


# (op, params, the derivative in mpmath, the windows' edges of every backend's special form)
DERIVATIVE_ZEROS = {
    "gelu": ("gelu", {}, lambda x: mpmath.ncdf(x) + x * mpmath.npdf(x),
             [-1.4, -0.5, -0.8017915246935645, -0.7017915246935644]),
    "gelu_tanh": ("gelu", {"approximate": "tanh"}, _mp_gelu_tanh_d,
                  [-1.7524614220710162, -0.5024614220710163, -0.8024614220710163,
                   -0.7024614220710163]),
    "silu": ("silu", {}, _mp_silu_d, [-1.3784645427610738, -1.1784645427610736]),
    "mish": ("mish", {}, _mp_mish_d, [-1.2924312145154953, -1.092431214515495]),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", list(DERIVATIVE_ZEROS))
def test_derivatives_near_their_zeros(backend, case, dtype):
    """silu', mish' and both gelu' cross zero once (x0 = -1.2785, -1.1924, -0.7525, -0.7518),
    where their formulas cancel two terms of similar size: before the polynomials about x0
    (_math.py, _math32.py; the numpy backend's long double Taylor series) every backend was off
    by hundreds to millions of ULP there, in float32 and float64 (found by test_properties for
    the exact gelu).  Every form that evaluates the derivative (and geglu's and swiglu's
    backward) stays within 8 ULP per element, with no floor from larger elements of the call:
    points within a few ULP of x0, further out on both sides, across x0 + [-3, 1.5] and at each
    backend's window edges.  The reference is mpmath at 60 digits (the oracle's 30-digit reference is not enough next to x0)."""
    name, params, mp_derivative, edges = DERIVATIVE_ZEROS[case]
    with mpmath.workdps(60):
        x0 = mpmath.findroot(mp_derivative, -1.0)
    x0f = float(x0)
    ulp = np.spacing(abs(dtype(x0f)))
    edges = np.array(edges)
    x = np.concatenate([dtype(x0f) + np.arange(-40, 41) * ulp, x0f + np.geomspace(1e-14, 0.3, 60),
                        x0f - np.geomspace(1e-14, 0.3, 60), np.linspace(x0f - 3, x0f + 1.5, 901),
                        edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf)])
    x = np.unique(x.astype(dtype))
    with mpmath.workdps(60):
        ref = np.array([mpmath.nstr(mp_derivative(v), 30)
                        for v in map(mpmath.mpf, x.astype(np.float64).tolist())],
                       dtype=np.longdouble)
    assert np.count_nonzero(np.abs(x.astype(np.float64) - x0f) < 1e-3) > 80  # really near x0
    wide = np.float64 if dtype == np.float32 else np.longdouble
    spec = _registry.get(name)
    np.testing.assert_allclose(  # the oracle agrees (it has the same special forms)
        ref.astype(wide), oracle.elementwise(spec, "derivative", dtype, x=x, params=params),
        rtol=1e-12 if dtype == np.float64 else 1e-9, atol=1e-28)
    floor = oracle.tiny(dtype)
    ops = getattr(fa, f"{name}_derivative"), getattr(fa, f"{name}_and_derivative"), \
        getattr(fa, f"{name}_backward")
    results = {"derivative": ops[0](x, backend=backend, **params),
               "and_derivative": ops[1](x, backend=backend, **params)[1],
               "backward": ops[2](np.ones_like(x), x=x, backend=backend, **params)}
    # and the gated units' backward, whose a-gradient is grad * b * f'(a)
    gated = {"gelu": "geglu", "silu": "swiglu"}.get(name)
    if gated:
        results[f"{gated}_backward"] = getattr(fa, f"{gated}_backward")(
            np.ones_like(x), a=x, b=np.ones_like(x), backend=backend, **params)[0]
    for form, got in results.items():
        assert got.dtype == dtype
        oracle.assert_close(f"{case} {form} near its zero, backend={backend}", got, ref,
                            dtype, inputs={"x": x}, ulps=8, floor=floor)


# ------------------------------------------------------------------------------------------------
# prelu (channel ops)
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PreluCase:
    name: str
    shape: tuple | None          # None: the special values, 1-D (or (k, 3) with weight "C")
    weight: str                  # float | 0d | size1 | C
    view: Callable = ident
    wview: Callable = ident      # applied to an array weight
    specials: bool = False       # NaN/inf in x (grad_weight then mostly NaN)


PRELU_CASES = [
    PreluCase("float-0d", (), "float"),
    PreluCase("float-empty", (0,), "float"),
    PreluCase("float-n7", (7,), "float"),
    PreluCase("float-13x17", (13, 17), "float"),
    PreluCase("0d-13x17", (13, 17), "0d"),
    PreluCase("size1-n1", (1,), "size1"),
    PreluCase("size1-13x17", (13, 17), "size1"),
    PreluCase("C-2d", (13, 17), "C"),
    PreluCase("C-3d", (5, 7, 11), "C"),
    PreluCase("C-4d", (2, 3, 5, 7), "C"),
    PreluCase("C-empty-batch", (0, 3, 4), "C"),
    PreluCase("C-large", (4, 8, 3127), "C"),
    PreluCase("size1-large", (LARGE,), "size1"),
    PreluCase("float-large-negstride", (2 * LARGE,), "float", lambda a: a[::-2]),
    PreluCase("C-transposed", (17, 13), "C", lambda a: a.T),
    PreluCase("C-negstride", (5, 14, 11), "C", lambda a: a[:, ::-2, ::-1],
              lambda w: w[::-1]),
    PreluCase("C-fortran", (2, 3, 5, 7), "C", np.asfortranarray),
    PreluCase("C-bigendian", (13, 17), "C", big_endian, big_endian),
    PreluCase("C-readonly", (5, 7, 11), "C", readonly, readonly),
    PreluCase("specials-float", None, "float", specials=True),
    PreluCase("specials-C", None, "C", specials=True),
]


def prelu_inputs(case: PreluCase, dtype, form):
    key = ("prelu", case.name, dtype.name, form)
    if case.shape is None:
        v = oracle.special_values(dtype)
        if case.weight == "C":
            v = np.resize(v, (len(v) + 2) // 3 * 3).reshape(-1, 3)
        x_base = v
    else:
        x_base = base_values(case.shape, dtype, (-8.0, 8.0), key, finite=not case.specials)
        if dtype != np.float16:  # keep grad * x sums far from overflow
            with oracle.quiet():
                x_base = np.clip(x_base, -1e30, 1e30).astype(dtype)
    x = case.view(x_base)
    if case.weight == "float":
        weight = -0.3 if "n7" in case.name else 0.1
    else:
        channels = {"0d": None, "size1": 1, "C": x.shape[1] if x.ndim >= 2 else 1}[case.weight]
        if channels is None:
            weight = np.array(0.25, dtype)
        else:
            weight = case.wview(np.linspace(-0.5, 1.5, channels).astype(dtype))
    g = case.view(grad_values(x_base.shape, dtype, key, specials=case.specials))
    return x, weight, g


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case", PRELU_CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("spec, form", [pytest.param(s, f, id=f"{s.name}-{f}")
                                        for s in CHANNEL for f in s.forms])
def test_prelu(spec, form, case, dtype, backend):
    dtype = np.dtype(dtype)
    x, weight, g = prelu_inputs(case, dtype, form)
    fn = getattr(fa, spec.public_name(form))
    what = (f"{spec.public_name(form)} weight={case.weight} backend={backend} "
            f"dtype={dtype.name} case={case.name}")
    w_arr = weight if isinstance(weight, np.ndarray) else None
    if form == "backward":
        before = snapshot(g, x, *([w_arr] if w_arr is not None else []))
        got = fn(g, x=x, weight=weight, backend=backend)
        assert_unchanged(before, (g, x, *([w_arr] if w_arr is not None else [])))
        assert isinstance(got, tuple) and len(got) == 2, f"{what}: expected (grad_x, grad_weight)"
        gx, gw = got
        assert_result_array(gx, x.shape, dtype, what)
        ref = oracle.prelu("backward", dtype, x=x, weight=weight, grad=g)
        oracle.assert_close(f"{what} [grad_x]", gx, ref, dtype, inputs={"x": x, "grad": g},
                            ulps=oracle.part_ulps(spec, "backward", dtype),
                            floor=oracle.part_floor("backward", ref, dtype))
        # grad_weight: shaped and typed like the weight (a Python float: 0-d, x's dtype)
        wshape = np.shape(weight)
        wdtype = oracle.native(w_arr.dtype) if w_arr is not None else dtype
        assert isinstance(gw, np.ndarray) and gw.shape == wshape, \
            f"{what}: grad_weight shape {np.shape(gw)}, expected {wshape}"
        assert gw.dtype == wdtype, f"{what}: grad_weight dtype {gw.dtype}, expected {wdtype}"
        total, absum = oracle.prelu_grad_weight(g, x, weight)
        rtol = {"float16": 2 * oracle.eps(np.float16), "float32": 1e-6,
                "float64": 1e-12}[wdtype.name]
        with oracle.quiet():
            allowed = rtol * absum
        oracle.assert_close(f"{what} [grad_weight vs longdouble sum, rtol {rtol:g} of sum|g x|]",
                            gw, total, wdtype, allowed=allowed, floor=oracle.tiny(wdtype),
                            inputs={"sum|g*x|": absum})
        return
    before = snapshot(x)
    got = fn(x, weight, backend=backend)
    assert_unchanged(before, (x,))
    results = got if form == "and_derivative" else (got,)
    for part, res in zip(oracle.FORM_PARTS[form], results):
        assert_result_array(res, x.shape, dtype, what)
        ref = oracle.prelu(part, dtype, x=x, weight=weight)
        oracle.assert_close(f"{what} [{part}]", res, ref, dtype, inputs={"x": x},
                            ulps=oracle.part_ulps(spec, part, dtype),
                            floor=oracle.part_floor(part, ref, dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_prelu_grad_weight_mixed_signs(dtype, backend):
    """prelu_backward's weight gradient on many small arrays of mixed signs (and some NaN), for
    a scalar, a one-element and a per-channel weight, against a float64 sum: guards the 8-lane
    sum that gcc 12 miscompiled (a lane with x > 0 wiped the others)."""
    rng = np.random.default_rng(1234)
    for trial in range(300):
        n = int(rng.integers(1, 200))
        x = ((rng.random(n) - 0.5) * 10).astype(dtype)
        x[rng.random(n) < 0.02] = np.nan
        g = (rng.random(n) - 0.5).astype(dtype)
        channels = 3 if trial % 3 == 2 and n >= 3 else 1
        rows = n // channels
        xs, gs = x[:rows * channels].reshape(rows, channels), g[:rows * channels].reshape(
            rows, channels)
        weight = [0.25, np.array([0.25], dtype), np.full(channels, 0.25, dtype)][trial % 3]
        _, gw = fa.prelu_backward(gs, x=xs, weight=weight, backend=backend)
        terms = np.where(xs > 0, 0.0, gs.astype(np.float64) * xs)
        expected = terms.sum(axis=0) if channels > 1 else terms.sum()
        scale = np.abs(np.nan_to_num(terms)).sum(axis=0 if channels > 1 else None)
        bound = (1e-12 if dtype == np.float64 else 1e-6) * scale + 1e-30
        got = np.asarray(gw, np.float64).reshape(np.shape(expected))
        nan = np.isnan(expected)
        assert np.array_equal(np.isnan(got), nan), f"trial {trial} n={n}: NaN pattern"
        assert np.all(np.abs(got - expected)[~nan] <= np.broadcast_to(bound, got.shape)[~nan]), \
            f"trial {trial} n={n} weight={type(weight).__name__}: {got} vs {expected}"


# ------------------------------------------------------------------------------------------------
# softmax family
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RowCase:
    name: str
    shape: tuple
    axis: int = -1
    mask: str = "none"           # none | random (one fully masked row) | bcast | special
    temperature: float = 1.0
    values: str = "random"       # random | special_rows
    view: Callable = ident
    dtypes: tuple = ("float16", "float32", "float64")
    keepdims: bool = False       # reductions (logsumexp) only


ROW_CASES = [
    RowCase("2d-axis-1", (13, 17)),
    RowCase("2d-axis0", (13, 17), axis=0),
    RowCase("2d-axis1", (13, 17), axis=1),
    RowCase("3d-axis-1", (3, 5, 7)),
    RowCase("3d-axis0", (3, 5, 7), axis=0),
    RowCase("3d-axis1", (3, 5, 7), axis=1),
    RowCase("mask-2d", (13, 17), mask="random"),
    RowCase("mask-2d-axis0", (13, 17), axis=0, mask="random"),
    RowCase("mask-3d-axis1", (3, 5, 7), axis=1, mask="random"),
    RowCase("mask-broadcast", (13, 17), mask="bcast"),
    RowCase("T0.5", (13, 17), temperature=0.5),
    RowCase("T3", (13, 17), temperature=3.0),
    RowCase("T3-mask-3d-axis0", (3, 5, 7), axis=0, mask="random", temperature=3.0),
    RowCase("special-rows", (12, 9), values="special_rows"),
    RowCase("special-rows-mask", (12, 9), mask="special", values="special_rows"),
    RowCase("special-rows-axis0-T0.5", (9, 12), axis=0, values="special_rows",
            temperature=0.5),
    RowCase("long-rows", (2, 100_000), dtypes=("float32", "float64")),
    RowCase("long-rows-axis0", (100_000, 2), axis=0, dtypes=("float32", "float64")),
    RowCase("many-rows", (400, 257)),
    RowCase("many-rows-mask-T0.5", (400, 257), mask="random", temperature=0.5),
    # short rows: many blocks of rows (numba's log_softmax blocks), above the parallel threshold
    RowCase("many-short-rows-mask-T0.5", (5000, 7), mask="random", temperature=0.5,
            dtypes=("float32", "float64")),
    RowCase("0d", ()),
    RowCase("1d-n1", (1,)),
    RowCase("1d-n7", (7,)),
    RowCase("1d-empty", (0,)),
    RowCase("empty-rows", (0, 5)),
    RowCase("empty-width", (4, 0)),
    RowCase("width1", (5, 1)),
    RowCase("transposed", (17, 13), view=lambda a: a.T),
    RowCase("negstride", (13, 34), view=lambda a: a[::-1, ::-2]),
    RowCase("fortran-3d-axis1", (3, 5, 7), axis=1, view=np.asfortranarray),
    RowCase("bigendian", (13, 17), view=big_endian),
    RowCase("readonly-mask", (13, 17), mask="random", view=readonly),
    RowCase("keepdims-3d-axis1", (3, 5, 7), axis=1, keepdims=True),
    RowCase("keepdims-mask-2d-axis0-T3", (13, 17), axis=0, mask="random", temperature=3.0,
            keepdims=True),
    RowCase("keepdims-0d", (), keepdims=True),
    RowCase("keepdims-empty-width", (4, 0), keepdims=True),
]


def huge(dtype) -> float:
    return {"float16": 6e4, "float32": 1e30, "float64": 1e300}[np.dtype(dtype).name]


def special_rows(dtype, shape, axis):
    """Rows (along ``axis``) of 12 kinds; row r of the moved (rows, C) view is kind r % 12."""
    dtype = np.dtype(dtype)
    fi = np.finfo(dtype)
    h = huge(dtype)
    inf, nan = np.inf, np.nan
    kinds = [
        [0.5, -1.0, 3.0, 2.0, -7.0, 0.0, 1.0, 4.0, -2.0],          # ordinary
        [inf, 1.0, 2.0, -3.0, 0.0, 5.0, -inf, 1.0, 2.0],           # +inf -> NaN row
        [-inf] * 9,                                                 # all -inf -> NaN row
        [nan, 1.0, 2.0, 3.0, -4.0, 0.0, 1.0, 1.0, 2.0],            # NaN -> NaN row
        [-inf, -inf, 0.0, 1.0, -1.0, 2.0, -inf, 3.0, 0.5],         # -inf entries -> 0
        [h, h, -h, h / 2, -h / 2, 0.0, 1.0, -1.0, h],              # huge magnitudes
        [float(fi.max), -float(fi.max), 0.0, 1.0, float(fi.max), -1.0, 2.0, 3.0, 4.0],
        [float(fi.smallest_subnormal), 0.0, -0.0, float(fi.smallest_normal),
         -float(fi.smallest_subnormal), 1e-30, 0.0, 0.0, 0.0],     # tiny: nearly uniform
        [5.0] * 9,                                                  # equal: 1/C each
        [-1e4, 0.0, 1e4, -1e4, 3.0, 1e4, 0.0, -5.0, 9999.0],       # exp underflow
        [88.7, 89.0, -104.0, -87.3, 709.0, -745.0, 19.0, -9.0, 0.0],
        [-30.0, -29.0, -28.5, -31.0, -30.0, -29.9, -45.0, -60.0, -30.1],
    ]
    moved = np.moveaxis(np.empty(shape, dtype), axis, -1)
    rows = moved.reshape(-1, moved.shape[-1])
    with oracle.quiet():
        for r in range(rows.shape[0]):
            row = np.resize(np.array(kinds[r % len(kinds)]), rows.shape[1])
            rows[r] = row.astype(dtype)
    return np.ascontiguousarray(np.moveaxis(rows.reshape(moved.shape), -1, axis))


def row_inputs(case: RowCase, dtype):
    """(x, where) in the case's base layout (the view is applied by the caller)."""
    key = ("rows", case.name, dtype.name)
    rng = rng_for(*key)
    shape = case.shape
    if case.values == "special_rows":
        x = special_rows(dtype, shape, case.axis)
    else:
        n = math.prod(shape)
        with oracle.quiet():
            v = rng.uniform(-30.0, 30.0, n)
            pick = rng.random(n)
            v[pick < 0.02] = -np.inf
            v[(pick >= 0.02) & (pick < 0.04)] = -1e4
            x = v.astype(dtype).reshape(shape)
    where = None
    if case.mask == "random":
        where = rng.random(shape) > 0.3
        if len(shape) >= 2:
            np.moveaxis(where, case.axis, -1)[(0,) * (len(shape) - 1)] = False  # fully masked
    elif case.mask == "bcast":
        where = rng.random(shape[-1]) > 0.3
    elif case.mask == "special":
        where = np.ones(shape, bool)
        moved = np.moveaxis(where, case.axis, -1).reshape(-1, shape[case.axis])
        for r in range(moved.shape[0]):
            kind = r % 12
            if kind == 0:
                moved[r] = False           # fully masked ordinary row -> 0 / -inf
            elif kind in (1, 3):
                moved[r, 0] = False        # the +inf / NaN masked out -> a finite row
            elif kind == 2:
                moved[r] = False           # fully masked row of -inf -> 0 / -inf, not NaN
            elif kind == 5:
                moved[r, 2] = False
        where = np.moveaxis(moved.reshape(np.moveaxis(where, case.axis, -1).shape), -1,
                            case.axis)
    return x, where


ROW_PARAMS = [
    pytest.param(spec, form, case, np.dtype(dt),
                 id=f"{spec.name}-{form}-{case.name}-{dt}")
    for spec in ROWWISE for form in spec.forms for case in ROW_CASES for dt in case.dtypes
]


@pytest.mark.parametrize("spec, form, case, dtype", ROW_PARAMS)
def test_rowwise(spec, form, case, dtype, backend):
    log = spec.name.startswith("log_")
    reduces = _registry.reduces(spec)
    x_base, where_base = row_inputs(case, dtype)
    x = case.view(x_base)
    where = None if where_base is None else (
        case.view(where_base) if where_base.shape == x_base.shape else where_base)
    kw = dict(axis=case.axis, temperature=case.temperature)
    if where is not None:
        kw["where"] = where
    if reduces:
        kw["keepdims"] = case.keepdims
    what = (f"{spec.public_name(form)}(axis={case.axis}, T={case.temperature}, "
            f"mask={case.mask}{', keepdims' if reduces and case.keepdims else ''}) "
            f"backend={backend} dtype={dtype.name} case={case.name}")
    fn = getattr(fa, spec.public_name(form))
    if form == "forward":
        before = snapshot(x)
        got = fn(x, backend=backend, **kw)
        assert_unchanged(before, (x,))
        shape = (oracle.reduced_shape(x.shape, case.axis, case.keepdims) if reduces
                 else x.shape)
        assert_result_array(got, shape, dtype, what)
        ref = oracle.rowwise(spec.name, "forward", dtype, x=x, where=where, axis=case.axis,
                             temperature=case.temperature, keepdims=case.keepdims)
        allowed, exact = oracle.row_allowed(spec.name, x, ref, dtype, axis=case.axis,
                                            where=where, temperature=case.temperature,
                                            keepdims=case.keepdims)
        bound = "logsumexp bound" if reduces else "softmax bound"
        oracle.assert_close(what, got, ref, dtype, inputs={"x": x} if not reduces else None,
                            allowed=allowed, floor=oracle.tiny(dtype), exact_mask=exact,
                            bound_text=f"(DESIGN.md {bound}, oracle.row_allowed)")
        # out= (a fresh non-contiguous view where possible) gets the same values
        out_base = np.full(shape[:-1] + (2 * shape[-1],) if shape else (), 1234.0, dtype)
        out = out_base[..., ::2] if shape else out_base
        r = fn(x, backend=backend, out=out, **kw)
        assert r is out
        oracle.assert_close(what + " out=", out, ref, dtype, allowed=allowed,
                            floor=oracle.tiny(dtype), exact_mask=exact)
        if shape:
            assert (out_base[..., 1::2] == 1234.0).all(), f"{what}: out= gaps written"
        return
    # backward: y is the correctly rounded forward result
    y_ref = oracle.rowwise(spec.name, "forward", dtype, x=x_base, where=where_base,
                           axis=case.axis, temperature=case.temperature)
    assert not reduces
    y = case.view(oracle.round_to(y_ref, dtype))
    g = case.view(grad_values(x_base.shape, dtype, ("rows", case.name), specials=False))
    before = snapshot(g, y)
    got = fn(g, y=y, backend=backend, **kw)
    assert_unchanged(before, (g, y))
    assert_result_array(got, y.shape, dtype, what)
    ref = oracle.rowwise(spec.name, "backward", dtype, grad=g, y=y, where=where,
                         axis=case.axis, temperature=case.temperature)
    allowed, exact = oracle.softmax_backward_allowed(g, y, ref, dtype, axis=case.axis,
                                                     where=where, temperature=case.temperature,
                                                     log=log)
    oracle.assert_close(what, got, ref, dtype, inputs={"y": y, "grad": g}, allowed=allowed,
                        ulps=spec.derivative_bound.ulps(dtype.name),
                        floor=oracle.derivative_floor(ref, dtype), exact_mask=exact,
                        bound_text="(8 ULP, floor eps*max|result|, or the conditioning bound "
                                   "of oracle.softmax_backward_allowed)")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_rowwise_contract_values(dtype, backend):
    """DESIGN.md section 1/8 semantics, stated independently of the oracle."""
    f = dict(backend=backend)
    one = np.array(0.7, dtype)
    assert fa.softmax(one, **f)[()] == 1.0 and fa.softmax(one, **f).shape == ()
    assert fa.log_softmax(one, **f)[()] == 0.0
    x = np.array([[np.inf, 1.0, 2.0], [-np.inf, -np.inf, -np.inf], [np.nan, 0.0, 1.0],
                  [1.0, 2.0, 3.0]], dtype)
    for log in (False, True):
        fn = fa.log_softmax if log else fa.softmax
        r = fn(x, **f)
        assert np.isnan(r[:3]).all(), f"{fn.__name__}: +inf / all -inf / NaN rows must be NaN"
        assert np.isfinite(r[3]).all()
        keep = np.array([[False, True, True], [False, False, False], [False, True, True],
                         [True, True, True]])
        r = fn(x, where=keep, **f)
        fill = -np.inf if log else 0.0
        assert (r[~keep] == fill).all(), f"{fn.__name__}: masked entries must be {fill}"
        assert not np.isnan(r).any(), f"{fn.__name__}: masked rows must not be NaN: {r}"
        gb = fa.log_softmax_backward if log else fa.softmax_backward
        g = np.ones_like(x)
        yb = fn(np.where(np.isfinite(x), x, 0).astype(dtype), where=keep, **f)
        assert (gb(g, y=yb, where=keep, **f)[~keep] == 0).all()
    s = fa.softmax(np.array([1.0, 2.0, 3.0], dtype), **f)
    assert abs(float(s.astype(np.float64).sum()) - 1) <= 4 * oracle.eps(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_softmin_logsumexp_contract_values(dtype, backend):
    """softmin and logsumexp semantics (DESIGN.md sections 1 and 8, torch), stated without the
    oracle."""
    f = dict(backend=backend)
    inf, nan = np.inf, np.nan
    for v in (0.7, -3.0, 0.0):
        one = np.array(v, dtype)
        assert fa.softmin(one, **f)[()] == 1.0 and fa.softmin(one, **f).shape == ()
        lse = fa.logsumexp(one, **f)
        assert lse.shape == () and lse.dtype == dtype and lse == one  # x itself
        assert fa.logsumexp(one, keepdims=True, temperature=3.0, **f) == one
        assert fa.logsumexp(one, where=np.array(False), **f) == -inf
    for v in (inf, -inf):
        assert fa.logsumexp(np.array(v, dtype), **f) == v
    assert np.isnan(fa.logsumexp(np.array(nan, dtype), **f))
    # softmin(x) == softmax(-x) exactly (the same kernel on negated loads)
    x = np.array([[1.0, 2.0, 3.0], [0.5, -0.5, 4.0]], dtype)
    for T in (1.0, 0.5):
        np.testing.assert_array_equal(fa.softmin(x, temperature=T, **f),
                                      fa.softmax(-x, temperature=T, **f))
    assert fa.softmin(x, **f)[0].argmax() == 0
    rows = np.array([[-inf, -inf, -inf], [inf, 1.0, 2.0], [nan, 0.0, 1.0], [inf, -inf, 0.0],
                     [-inf, 0.0, 0.0], [1.0, 2.0, 3.0]], dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lse = fa.logsumexp(rows, **f)
        assert lse.shape == (6,) and lse.dtype == dtype
        assert lse[0] == -inf, "a row of all -inf gives -inf (torch.logsumexp), not NaN"
        assert lse[1] == inf and lse[3] == inf
        assert np.isnan(lse[2])
        assert abs(float(lse[4]) - math.log(2)) <= 4 * oracle.eps(dtype)
        assert abs(float(lse[5]) - (3 + math.log1p(math.exp(-1) + math.exp(-2)))) <= \
            4 * 3.5 * oracle.eps(dtype)
        keep = np.ones(rows.shape, bool)
        keep[1, 0] = keep[2, 0] = False
        keep[5] = False
        m = fa.logsumexp(rows, where=keep, **f)
        assert np.isfinite(m[1]) and np.isfinite(m[2]) and m[5] == -inf
        assert fa.logsumexp(rows, keepdims=True, **f).shape == (6, 1)
        assert fa.logsumexp(rows, axis=0, **f).shape == (3,)
        # empty reduction axis: the log of an empty sum (torch, scipy)
        e = fa.logsumexp(np.zeros((4, 0), dtype), **f)
        assert e.shape == (4,) and (e == -inf).all()
        assert fa.logsumexp(np.zeros((0, 3), dtype), **f).shape == (0,)
        assert fa.logsumexp(np.zeros((2, 0, 3), dtype), axis=1, keepdims=True, **f).shape == \
            (2, 1, 3)
        # softmin: masked entries 0, fully masked row 0, never NaN; -inf makes the row NaN
        s = fa.softmin(rows, where=keep, **f)
        assert (s[~keep] == 0).all() and (s[5] == 0).all()
        assert np.isnan(fa.softmin(rows, **f)[[0, 2, 3, 4]]).all()
        assert (fa.softmin(rows, **f)[1] == [0, *fa.softmin(rows[1, 1:], **f)]).all()
        g = np.ones_like(rows)
        y = fa.softmin(np.where(np.isfinite(rows), rows, 0).astype(dtype), where=keep, **f)
        assert (fa.softmin_backward(g, y=y, where=keep, **f)[~keep] == 0).all()
    # large T -> uniform; small T -> the row max
    z = np.array([1.0, 2.0, 3.0], dtype)
    assert abs(float(fa.logsumexp(z, temperature=1e-3, **f)) - 3.0) <= 4 * oracle.eps(dtype) * 3


# ------------------------------------------------------------------------------------------------
# the oracle itself: compare() must catch errors
# ------------------------------------------------------------------------------------------------

def test_compare_detects_errors():
    ref = np.array([1.0, 2.0, np.nan, np.inf, 0.0, 1e-40], np.float64)
    good = ref.astype(np.float32)
    assert oracle.compare(good, ref, np.float32, ulps=0).ok.all()
    off = good.copy()
    off[0] = np.nextafter(np.float32(1), np.float32(2))
    off[1] = np.nextafter(np.nextafter(np.float32(2), np.float32(3)), np.float32(3))
    c = oracle.compare(off, ref, np.float32, ulps=1)
    assert c.ok[0] and not c.ok[1] and c.ulp[1] == 2
    assert not oracle.compare(off, ref, np.float32, ulps=0).ok[0]
    for i, v in ((2, 0.0), (3, np.float32(3e38)), (4, np.nan), (4, np.inf)):
        bad = good.copy()
        bad[i] = v
        assert not oracle.compare(bad, ref, np.float32, ulps=4).ok[i], (i, v)
    tiny_err = good.copy()
    tiny_err[5] = 0.0  # 1e-40 -> 0: below the smallest normal, accepted by the floor only
    assert not oracle.compare(tiny_err, ref, np.float32, ulps=4).ok[5]
    assert oracle.compare(tiny_err, ref, np.float32, ulps=4, floor=oracle.tiny(np.float32)).ok[5]
    assert oracle.compare(np.float32(-0.0), np.float64(0.0), np.float32, ulps=0).ok.all()
    with pytest.raises(AssertionError, match="worst element at index"):
        oracle.assert_close("demo", off, ref, np.float32, ulps=1, inputs={"x": ref})
    # longdouble reference for float64 results: half an ULP off is half an ULP
    r = np.array([1], oracle.LONG) + oracle.LONG.type(2.0 ** -53)
    assert oracle.compare(np.array([1.0]), r, np.float64, ulps=1).ulp[0] == 0.5


def test_longdouble_is_wider_than_float64():
    """The float64 oracle needs a wider type (x86-64 80-bit extended precision)."""
    assert np.finfo(np.longdouble).nmant >= 63
    assert np.finfo(np.longdouble).minexp < -16000


# ------------------------------------------------------------------------------------------------
# the oracle's formulas, validated independently
# ------------------------------------------------------------------------------------------------

#: Allowed relative error of the wide reference: far below an ULP of the result dtype.
ORACLE_RTOL = {"float32": 2.0 ** -40, "float64": 2.0 ** -58}


def sample_points(dtype, domain, key, n=160):
    rng = rng_for("mp", *key)
    sv = oracle.special_values(dtype)
    sv = sv[np.isfinite(sv)]
    with oracle.quiet():
        pts = np.concatenate([sv, rng.uniform(domain[0], domain[1], n).astype(dtype),
                              oracle.log_uniform(rng, n // 4, dtype),
                              np.linspace(domain[0], domain[1], 41).astype(dtype)])
    return pts


def _oracle_vs_mpmath(name, part, dtype, values, ref, params, exact_op):
    dtype = np.dtype(dtype)
    floor = mpmath.mpf(float(np.finfo(dtype).smallest_subnormal)) / 16
    rtol = ORACLE_RTOL[dtype.name]
    if exact_op and dtype == np.float64:
        # exact ops: the reference is the float64 result itself, correctly rounded: half an ULP
        # (subnormal results: half the subnormal spacing)
        rtol, floor = 2.0 ** -53, 8 * floor
    worst = (0.0, None)
    for v, r in zip(values.reshape(-1), ref.reshape(-1)):
        p = {k: val if isinstance(val, str) else float(val) for k, val in (params or {}).items()}
        exact = oracle.mp_value(name, part, v, p)
        e = oracle.mp_relative_error(r, exact, floor)
        if e > worst[0]:
            worst = (e, (v, r, exact))
    assert worst[0] <= rtol, (
        f"oracle {name} {part} ({dtype.name} results): relative error {worst[0]:.3g} > "
        f"{rtol:.3g} at x={worst[1][0]!r}: oracle {oracle.fmt(worst[1][1])}, mpmath "
        f"{mpmath.nstr(worst[1][2], 25)}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("part", ["forward", "derivative"])
@pytest.mark.parametrize("spec", ELEMENTWISE, ids=lambda s: s.name)
def test_oracle_matches_mpmath(spec, part, dtype):
    assert spec.name in oracle.MP_FORMULAS, \
        f"add an independent mpmath formula for {spec.name} to tests/oracle.py MP_FORMULAS"
    variants = [spec.defaults] + param_variants(spec)
    for params in variants:
        x = sample_points(dtype, spec.domain, (spec.name, part, dtype, sorted(params.items())))
        ref = oracle.elementwise(spec, part, dtype, x=x, params=params)
        _oracle_vs_mpmath(spec.name, part, dtype, x, ref, params,
                          oracle.part_bound(spec, part).exact)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("part", ["forward", "derivative"])
def test_oracle_prelu_matches_mpmath(part, dtype):
    dtype = np.dtype(dtype)
    pts = sample_points(dtype, (-8.0, 8.0), ("prelu", part, dtype.name))
    x = np.resize(pts, (len(pts) + 2) // 3 * 3).reshape(-1, 3)
    weight = np.array([0.1, -0.3, 0.75])
    ref = oracle.prelu(part, dtype, x=x, weight=weight)
    for c in range(3):
        _oracle_vs_mpmath("prelu", part, dtype, x[:, c], ref[:, c],
                          {"weight": weight[c]}, True)
    gx = np.linspace(-3, 3, x.size).reshape(x.shape)
    total, _ = oracle.prelu_grad_weight(gx, x, weight)
    with mpmath.workdps(60):
        for c in range(3):
            exact = mpmath.fsum(oracle.to_mpf(gx[i, c]) * oracle.to_mpf(x[i, c])
                                for i in range(x.shape[0]) if not x[i, c] > 0)
            assert oracle.mp_relative_error(total[c], exact, 0.0) <= 2.0 ** -50


def test_oracle_matches_scipy_and_numpy():
    """Cross-check with other libraries' correctly-rounded-ish float64 / longdouble routines."""
    sig, tanh = _registry.get("sigmoid"), _registry.get("tanh")
    x64 = sample_points(np.float64, (-40.0, 40.0), ("scipy",))
    x64 = x64[np.abs(x64) <= 700]  # scipy's float64 expit is 0 from exp overflow beyond ~709
    for dtype, tol in ((np.float32, 2.0 ** -50), (np.float64, 2.0 ** -61)):
        wide = oracle.wide_dtype(dtype)
        with oracle.quiet():
            x = x64.astype(dtype) if dtype == np.float32 else x64
            expit = scipy.special.expit(x.astype(wide))
            th = np.tanh(x.astype(wide))
            ref_s = oracle.elementwise(sig, "forward", dtype, x=x)
            ref_t = oracle.elementwise(tanh, "forward", dtype, x=x)
            rel_s = np.abs(ref_s - expit) / np.maximum(np.abs(expit), np.finfo(wide).tiny)
            rel_t = np.abs(ref_t - th) / np.maximum(np.abs(th), np.finfo(wide).tiny)
        assert np.nanmax(rel_s) <= tol, ("sigmoid vs scipy.special.expit", dtype)
        assert np.nanmax(rel_t) <= tol, ("tanh vs np.tanh", dtype)


def _fd_points(spec):
    lo, hi = spec.domain
    rng = rng_for("fd", spec.name)
    return np.concatenate([np.linspace(lo, hi, 97), rng.uniform(lo, hi, 200),
                           rng.uniform(-3, 3, 100)]).astype(np.float64)


@pytest.mark.parametrize("spec", ELEMENTWISE, ids=lambda s: s.name)
def test_oracle_derivative_matches_finite_differences(spec):
    """The derivative reference against central differences of the forward reference in
    longdouble (points within a step of a kink are detected by one-sided differences and
    skipped; at least 80% must be checked)."""
    L = oracle.LONG
    for params in [spec.defaults] + param_variants(spec):
        def f(v):
            return oracle.evaluate(spec, "forward", L, x=v, params=params)

        x = _fd_points(spec).astype(L)
        h = L.type(2.0 ** -20) * np.maximum(1, np.abs(x))
        with oracle.quiet():
            fpp, fp, f0, fm = f(x + 2 * h), f(x + h), f(x), f(x - h)
            central = (fp - fm) / (2 * h)
            right, left = (fp - f0) / h, (f0 - fm) / h
            d = oracle.evaluate(spec, "derivative", L, x=x, params=params)
            rounding = 64 * oracle.LONG.type(np.finfo(L).eps) * (np.abs(fp) + np.abs(fm)) / h
            smooth = np.abs(right - left) <= 1e-3 * (np.abs(right) + np.abs(left)) + rounding
            err = np.abs(central - d)
            # O(h) where f'' jumps: |right - left|, and h |f''(x+)| for a jump symmetric about x
            # (softsign at 0, where right == left)
            tol = (1e-7 * np.abs(d) + np.abs(right - left) + rounding
                   + np.abs(fpp - 2 * fp + f0) / h)
        # a parameter is a kink by definition (hardtanh's edges, threshold, +-lambd; at lambd = 0,
        # hardshrink'(0) = 0 by PyTorch's convention although f(x) = x there)
        at_param = np.isin(np.abs(x), [abs(v) for v in params.values() if not isinstance(v, str)])
        assert smooth.mean() >= 0.8, f"{spec.name}: too many kinks? {smooth.mean():.2f}"
        bad = smooth & ~at_param & ~(err <= tol)
        assert not bad.any(), (
            f"{spec.name} {params}: derivative reference != finite difference at "
            f"x={x[bad][:5]}: derivative {d[bad][:5]}, central difference {central[bad][:5]}")


@pytest.mark.parametrize("spec", [s for s in ELEMENTWISE if s.y_backward is not None],
                         ids=lambda s: s.name)
def test_oracle_backward_forms_consistent(spec):
    """grad * f'(x) == backward(grad, x=x), and f'(y) computed from y = f(x) agrees with f'(x)
    (longdouble, moderate |x| where y determines x well)."""
    L = oracle.LONG
    for params in [spec.defaults] + param_variants(spec):
        x = np.linspace(-5, 5, 1001).astype(np.float64)
        g = np.cos(np.arange(x.size)) + 1.5
        d = oracle.elementwise(spec, "derivative", np.float64, x=x, params=params)
        b = oracle.elementwise(spec, "backward", np.float64, grad=g, x=x, params=params)
        with oracle.quiet():
            assert np.allclose(b, g.astype(b.dtype) * d, rtol=1e-15, atol=0), spec.name
        if not spec.y_backward(params):
            continue
        y = oracle.elementwise(spec, "forward", np.float64, x=x, params=params).astype(L)
        by = oracle.evaluate(spec, "derivative_from_y", L, y=y, params=params)
        with oracle.quiet():
            ok = np.abs(by - d.astype(L)) <= 1e-12 * np.abs(d.astype(L)) + 1e-300
        assert ok.all(), (spec.name, params, x[~ok][:5], by[~ok][:5], d[~ok][:5])


def test_oracle_special_values():
    """Limits and NaN propagation of the references (DESIGN.md section 3), stated by hand."""
    expect = {  # op: [(x, f(x), f'(x))]
        "sigmoid": [(np.inf, 1.0, 0.0), (-np.inf, 0.0, 0.0), (0.0, 0.5, 0.25)],
        "tanh": [(np.inf, 1.0, 0.0), (-np.inf, -1.0, 0.0), (0.0, 0.0, 1.0)],
        "relu": [(np.inf, np.inf, 1.0), (-np.inf, 0.0, 0.0), (0.0, 0.0, 0.0)],
        "leaky_relu": [(np.inf, np.inf, 1.0), (-np.inf, -np.inf, 0.01), (0.0, 0.0, 0.01)],
        "elu": [(np.inf, np.inf, 1.0), (-np.inf, -1.0, 0.0), (0.0, 0.0, 1.0)],
    }
    for spec in ELEMENTWISE:
        for dtype in ("float32", "float64"):
            nan = np.array([np.nan])
            for part in ("forward", "derivative"):
                assert np.isnan(oracle.elementwise(spec, part, dtype, x=nan)).all(), \
                    (spec.name, part, "NaN must propagate")
            for xv, fv, dv in expect.get(spec.name, []):
                x = np.array([xv])
                assert oracle.elementwise(spec, "forward", dtype, x=x)[0] == fv, (spec.name, xv)
                assert oracle.elementwise(spec, "derivative", dtype, x=x)[0] == dv, \
                    (spec.name, xv)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("spec", ROWWISE, ids=lambda s: s.name)
def test_oracle_rowwise_matches_mpmath(spec, dtype):
    """Small rows (masks, temperatures) against mpmath with an exact sum."""
    log = spec.name.startswith("log_")
    dtype = np.dtype(dtype)
    rng = rng_for("mp-rows", spec.name, dtype.name)
    rtol = ORACLE_RTOL[dtype.name]
    for temperature in (0.5, 1.0, 3.0):
        for C in (1, 2, 5, 8):
            x = rng.uniform(-40, 40, (6, C)).astype(dtype)
            x[1] = x[1] * 1e-3
            x[2, 0] = x[2, -1]  # ties
            keep = rng.random((6, C)) > 0.3
            keep[3] = False
            keep[4] = True
            for where in (None, keep):
                ref = oracle.rowwise(spec.name, "forward", dtype, x=x, where=where,
                                     temperature=temperature)
                kr = oracle.keep_mask(where, x.shape)
                if spec.name == "logsumexp":
                    exact = oracle.mp_logsumexp_rows(x, kr, temperature)
                    for i in range(x.shape[0]):
                        e, r = exact[i], ref[i]
                        if mpmath.isinf(e):
                            assert r == float(e), (i, r, e)
                            continue
                        with mpmath.workdps(oracle.MP_DPS):
                            err = abs(oracle.to_mpf(r) - e)
                        # absolute, relative to T + |r| (the logsumexp bound's scale)
                        assert err <= rtol * (temperature + abs(e)), \
                            (temperature, C, i, r, mpmath.nstr(e, 25))
                    continue
                xs = -x if spec.name == "softmin" else x  # softmin(x) = softmax(-x)
                exact = oracle.mp_rows(xs, kr, temperature, log)
                for i in range(x.shape[0]):
                    for j in range(C):
                        e = exact[i][j]
                        r = ref[i, j]
                        if mpmath.isinf(e) or e == 0:
                            assert r == float(e), (spec.name, i, j, r, e)
                            continue
                        with mpmath.workdps(oracle.MP_DPS):
                            err = abs(oracle.to_mpf(r) - e)
                            scale = (1 + abs(e)) if log else abs(e)
                            ok = err <= rtol * scale
                        assert ok, (spec.name, temperature, C, i, j, r,
                                                     mpmath.nstr(e, 25))


@pytest.mark.parametrize("spec", [s for s in ROWWISE if "backward" in s.forms],
                         ids=lambda s: s.name)
def test_oracle_rowwise_backward_matches_finite_differences(spec):
    """The backward reference at y = f(x) is the vector-Jacobian product g . df/dx: compare
    with central differences of L(x) = sum(g * f(x)) in longdouble, with masks and T."""
    L = oracle.LONG
    rng = rng_for("fd-rows", spec.name)
    for temperature in (0.5, 1.0, 3.0):
        x = rng.uniform(-3, 3, (4, 6)).astype(L)
        g = rng.uniform(-2, 2, (4, 6)).astype(L)
        keep = rng.random((4, 6)) > 0.3
        keep[0] = True
        for where in (None, keep):
            y = oracle.rowwise(spec.name, "forward", np.float64, x=x, where=where,
                               temperature=temperature)
            b = oracle.rowwise(spec.name, "backward", np.float64, grad=g, y=y, where=where,
                               temperature=temperature)
            h = L.type(2.0 ** -22)
            kr = oracle.keep_mask(where, x.shape)
            for i in range(x.shape[0]):
                for j in range(x.shape[1]):
                    if not kr[i, j]:
                        assert b[i, j] == 0
                        continue
                    xp, xm = x.copy(), x.copy()
                    xp[i, j] += h
                    xm[i, j] -= h
                    with oracle.quiet():
                        fp = oracle.rowwise(spec.name, "forward", np.float64, x=xp,
                                            where=where, temperature=temperature)
                        fm = oracle.rowwise(spec.name, "forward", np.float64, x=xm,
                                            where=where, temperature=temperature)
                        lp = np.where(kr, g * fp, 0).sum()
                        lm = np.where(kr, g * fm, 0).sum()
                    fd = (lp - lm) / (2 * h)
                    assert abs(fd - b[i, j]) <= 1e-8 * (1 + abs(b[i, j])), \
                        (spec.name, temperature, i, j, fd, b[i, j])


def test_logsumexp_gradient_is_softmax(backend):
    """The documented replacement for a logsumexp backward: d logsumexp / dx = softmax (same
    axis, where, T).  Central differences of the longdouble oracle, and of fastact's float64
    logsumexp (loose: differences of rounded values), against fastact's softmax."""
    L = oracle.LONG
    rng = rng_for("lse-grad")
    for temperature in (0.5, 1.0, 3.0):
        x = rng.uniform(-3, 3, (3, 5))
        keep = rng.random((3, 5)) > 0.3
        keep[0] = True
        for axis in (-1, 0):
            for where in (None, keep):
                kw = dict(axis=axis, where=where, temperature=temperature)
                sm = fa.softmax(x, backend=backend, **kw)
                kr = oracle.keep_mask(where, x.shape)
                for i in range(x.shape[0]):
                    for j in range(x.shape[1]):
                        out_idx = (i,) if axis == -1 else (j,)
                        ho, hf = L.type(2.0 ** -20), 2.0 ** -14
                        xl = x.astype(L)
                        xp, xm = xl.copy(), xl.copy()
                        xp[i, j] += ho
                        xm[i, j] -= ho
                        fo = (oracle.rowwise("logsumexp", "forward", np.float64, x=xp, **kw)
                              - oracle.rowwise("logsumexp", "forward", np.float64, x=xm,
                                               **kw))[out_idx] / (2 * ho)
                        xp, xm = x.copy(), x.copy()
                        xp[i, j] += hf
                        xm[i, j] -= hf
                        ff = (fa.logsumexp(xp, backend=backend, **kw)
                              - fa.logsumexp(xm, backend=backend, **kw))[out_idx] / (2 * hf)
                        want = sm[i, j] if kr[i, j] else 0.0
                        assert abs(fo - want) <= 1e-9, (temperature, axis, i, j, fo, want)
                        assert abs(ff - want) <= 1e-7, (temperature, axis, i, j, ff, want)


def test_oracle_rowwise_special_rows():
    """The oracle's special-row semantics are DESIGN.md's."""
    x = np.array([[np.inf, 1.0], [-np.inf, -np.inf], [np.nan, 1.0], [-np.inf, 0.0]])
    for name, fill in (("softmax", 0.0), ("log_softmax", -np.inf)):
        r = oracle.rowwise(name, "forward", np.float64, x=x)
        assert np.isnan(r[:3]).all()
        assert r[3, 0] == fill and r[3, 1] == (0.0 if name == "log_softmax" else 1.0)
        keep = np.array([[False, True], [False, False], [False, True], [True, True]])
        r = oracle.rowwise(name, "forward", np.float64, x=x, where=keep)
        assert (r[~keep] == fill).all() and not np.isnan(r).any()
        r0 = oracle.rowwise(name, "forward", np.float64, x=np.array(3.0))
        assert r0.shape == () and r0[()] == (0.0 if name == "log_softmax" else 1.0)


def test_oracle_logsumexp_special_rows_match_scipy():
    """The logsumexp oracle's special values are scipy.special.logsumexp's (and
    torch.logsumexp's): all -inf -> -inf, +inf -> +inf, NaN -> NaN, empty -> -inf; masked
    entries are left out (scipy: b=0 weights)."""
    inf, nan = np.inf, np.nan
    x = np.array([[-inf, -inf, -inf], [inf, 1.0, 2.0], [inf, nan, 0.0], [nan, 1.0, 2.0],
                  [inf, -inf, 0.0], [1e307, 1e307, -1e307], [-inf, 0.0, 1.0],
                  [0.5, -2.0, 700.0]])
    for T in (1.0, 0.5, 3.0):
        with oracle.quiet():
            want = T * scipy.special.logsumexp(x / T, axis=1)
        got = oracle.rowwise("logsumexp", "forward", np.float64, x=x, temperature=T)
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=1e-15, equal_nan=True)
        assert got.shape == (x.shape[0],)
    keep = np.array([True, False, True])
    got = oracle.rowwise("logsumexp", "forward", np.float64, x=x, where=keep)
    with oracle.quiet():
        want = scipy.special.logsumexp(x, axis=1, b=keep.astype(float))
    # scipy multiplies by b, so a NaN or inf under b=0 still poisons its row: compare the rest
    fine = np.isfinite(x[:, ~keep]).all(axis=1)
    np.testing.assert_allclose(got[fine].astype(np.float64), want[fine], rtol=1e-15)
    assert np.isnan(got[3]) and got[2] == inf  # the masked NaN is left out, the inf is kept
    assert oracle.rowwise("logsumexp", "forward", np.float64, x=x,
                          where=np.zeros(3, bool)).tolist() == [-inf] * 8
    assert oracle.rowwise("logsumexp", "forward", np.float64, x=np.zeros((4, 0))).shape == (4,)
    e = oracle.logsumexp_rows(np.zeros((2, 0), oracle.LONG), np.ones((2, 0), bool), 1.0)
    assert (e == -inf).all()
    assert oracle.rowwise("logsumexp", "forward", np.float64, x=np.array(2.5))[()] == 2.5


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_tail_underflows_where_the_true_value_does(backend, approximate, dtype):
    """Far in gelu's negative tail, gelu(x) and gelu'(x) are 0 exactly where the true value
    rounds to 0 in the dtype (and not a few subnormals), so grad = inf gives inf * 0 = NaN as
    in the oracle.  The float64 exact form applies exp(-x^2 / 2)'s powers of two last; with
    exp's old clamp at -745.2 the derivative there came out as a few subnormals down to
    x = -40 (found by test_elementwise with float16 data: inf instead of NaN at -39.97)."""
    lo, hi = (-42.0, -36.0) if dtype == np.float64 else (-16.0, -12.0)
    if approximate == "tanh":  # v = x (A + B x^2) reaches exp's underflow much earlier
        lo, hi = (-10.0, -6.0) if dtype == np.float64 else (-6.0, -3.0)
    x = np.linspace(lo, hi, 401).astype(dtype)
    with mpmath.workdps(40):
        # (in mpmath: half the smallest float64 subnormal is 0 in float arithmetic)
        tiny = mpmath.mpf(float(np.finfo(dtype).smallest_subnormal))
        def exact(v, deriv):
            v = mpmath.mpf(float(v))
            if approximate == "none":
                phi = mpmath.ncdf(v)
                return phi + v * mpmath.npdf(v) if deriv else v * phi
            a, b = mpmath.sqrt(2 / mpmath.pi) * 2, mpmath.sqrt(2 / mpmath.pi) * 2 * mpmath.mpf("0.044715")
            z = v * (a + b * v * v)
            s = 1 / (1 + mpmath.exp(-z))
            return s + v * s * (1 - s) * (a + 3 * b * v * v) if deriv else v * s
        for deriv, fn in ((False, fa.gelu), (True, fa.gelu_derivative)):
            ref = [exact(v, deriv) for v in x]
            got = fn(x, approximate=approximate, backend=backend)
            for v, r, g in zip(x, ref, got):
                if 0.25 * tiny < abs(r) < 2 * tiny:  # at the rounding boundary: either is right
                    continue
                assert (g == 0) == (abs(r) < 0.5 * tiny), (
                    f"gelu{'_derivative' if deriv else ''}({v!r}, {approximate}) {backend} "
                    f"{np.dtype(dtype).name}: got {g!r}, exact {mpmath.nstr(r, 5)}")
        # grad = inf: inf times the derivative as a float64 (the oracle's product), so NaN only
        # where the true derivative rounds to 0 in float64.  Checked for float64 data only: for
        # float32 data on [-16, -14], where the float32 derivative is 0 and the float64 one is
        # not, the backends differ (Cython multiplies by the float64 derivative and gives -inf
        # as the oracle does; the Numba twin and NumPy by the float32 one: NaN) -- a known
        # difference in this degenerate case (grad = inf), noted for an issue
        if dtype != np.float64:
            return
        tiny64 = mpmath.mpf(float(np.finfo(np.float64).smallest_subnormal))
        got = fa.gelu_backward(np.full_like(x, np.inf), x=x, approximate=approximate,
                               backend=backend)
        for v, r, g in zip(x, (exact(v, True) for v in x), got):
            if 0.25 * tiny64 < abs(r) < 2 * tiny64:
                continue
            want = np.nan if abs(r) < 0.5 * tiny64 else math.copysign(math.inf, r)
            assert (np.isnan(g) and np.isnan(want)) or g == want, (
                f"gelu_backward(inf, x={v!r}, {approximate}) {backend} "
                f"{np.dtype(dtype).name}: got {g!r}, want {want}")
