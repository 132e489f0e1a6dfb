"""The accuracy oracle of the test suite: exact reference values and error measurement.

Reference values (DESIGN.md section 4)
--------------------------------------
The exact value of an op is computed in a precision wider than the result dtype and rounded once:

* float16 / float32 results: float64;
* float64 results: ``np.longdouble`` (x86-64: 80-bit extended, 64-bit significand, 11 bits more
  than float64 and a much wider exponent range);
* ops whose bound is *exact* (relu family, prelu) are defined as "the float64 result rounded to the
  dtype" (DESIGN.md: ``leaky_relu(x32)`` is ``x * 0.01`` in float64, rounded to float32 once), so
  their reference is always computed in float64.

Elementwise values come from the pure vectorised formulas of :mod:`fastact.kernels.numpy_ref`
(``FUNCTIONS``: value, derivative, derivative from y) evaluated on upcast arrays; prelu and the
softmax family are written out here.  numpy_ref is also the ``numpy`` *backend*, so on its own
this would compare the numpy backend with itself.  The reference formulas are therefore
validated independently
(``tests/test_accuracy.py::test_oracle_*``) against

* :data:`MP_FORMULAS`: every op written again in mpmath (50 significant digits), with its
  derivative written out analytically (or by mpmath's numerical differentiation where the closed
  form is long);
* central finite differences of the wide forward reference (derivatives, and the softmax
  backward as a vector-Jacobian product);
* an mpmath / ``math.fsum`` softmax for small rows, and the special-row rules of DESIGN.md.

Error measurement
-----------------
:func:`compare` measures ``err = |got - ref|`` in the wide dtype.  An element passes when

* NaN in ``ref`` <-> NaN in ``got`` (same positions), and a reference that rounds to +-inf in the
  result dtype is matched exactly (so is an infinite ``got``);
* otherwise ``err <= ulps * spacing(ref rounded to the dtype)``, or ``err <= allowed`` (an explicit
  per-element bound, e.g. softmax's), or ``err <= floor`` (absolute floor: the smallest normal of
  the dtype; for derivative and backward forms ``eps * max|ref|`` over the call's output);
* ``ulps == 0`` (exact ops): ``got == ref rounded to the dtype`` (so -0.0 == 0.0), no floor.

:func:`assert_close` raises an AssertionError naming the worst element: its index, the inputs
there, got, expected (rounded and exact) and the error in ULP.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import mpmath
import numpy as np

from fastact import _registry
from fastact.kernels import numpy_ref

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
LONG = np.dtype(np.longdouble)

def quiet():
    """A fresh ``errstate`` for oracle computations (no RuntimeWarning may escape the tests;
    NumPy's errstate objects cannot be re-entered, hence a function)."""
    return np.errstate(all="ignore")

#: Decimal digits mpmath works with.
MP_DPS = 50


# ------------------------------------------------------------------------------------------------
# dtypes
# ------------------------------------------------------------------------------------------------

def native(dtype) -> np.dtype:
    return np.dtype(dtype).newbyteorder("=")


def wide_dtype(dtype, exact: bool = False) -> np.dtype:
    """The dtype the exact value of a ``dtype`` result is computed in (see the module doc)."""
    dtype = native(dtype)
    if dtype == F64 and not exact:
        return LONG
    return F64


def upcast(a, wide) -> np.ndarray:
    """A C-contiguous native copy of ``a`` in the wide dtype (exact: every float16/32/64 value is
    representable)."""
    with quiet():
        return np.array(a, dtype=wide, order="C", copy=True)


def round_to(ref, dtype) -> np.ndarray:
    """``ref`` rounded once to ``dtype`` (round to nearest; overflow gives +-inf)."""
    with quiet():
        return np.asarray(ref).astype(native(dtype))


def eps(dtype) -> float:
    return float(np.finfo(native(dtype)).eps)


def tiny(dtype) -> float:
    """The smallest normal number of ``dtype``: the absolute floor of tiny results."""
    return float(np.finfo(native(dtype)).smallest_normal)


def spacing_of(rounded: np.ndarray) -> np.ndarray:
    """ULP of each (rounded, result-dtype) value: ``spacing(|r|)``; at the largest finite value,
    the gap below it (``spacing(max)`` is inf)."""
    with quiet():
        a = np.abs(rounded)
        sp = np.spacing(a)
        fix = np.isinf(sp) & np.isfinite(a)
        if fix.any():
            below = a - np.nextafter(a, np.zeros_like(a))
            sp = np.where(fix, below, sp)
    return sp


# ------------------------------------------------------------------------------------------------
# comparison
# ------------------------------------------------------------------------------------------------

@dataclass
class Comparison:
    got: np.ndarray        # the result in the wide dtype
    ref: np.ndarray        # the exact value (wide)
    rounded: np.ndarray    # ref rounded to the result dtype
    err: np.ndarray        # |got - ref| (wide)
    ulp: np.ndarray        # err in ULP of the rounded reference
    tol: np.ndarray        # the absolute tolerance each element had (0: exact match required)
    ok: np.ndarray         # per-element verdict
    badness: np.ndarray    # err / tol (inf for a special-value mismatch); the worst is reported


def compare(got, ref, dtype, *, ulps: float | None = None, allowed=None, floor: float = 0.0,
            exact_mask=None, nan_ok=None) -> Comparison:
    """Per-element verdict of ``got`` (result dtype) against the exact ``ref`` (wide dtype).

    ``ulps``: bound in ULP of the result dtype (0 = bit-exact against the rounded reference);
    ``allowed``: explicit absolute bound per element (broadcastable); ``floor``: absolute floor;
    ``exact_mask``: elements that must equal the rounded reference exactly (non-finite inputs of
    row ops, masked entries); ``nan_ok``: elements where NaN is accepted as well (see
    :func:`inf_times_underflow`).
    """
    dtype = native(dtype)
    ref = np.asarray(ref)
    got = np.asarray(got)
    if got.shape != ref.shape:
        raise AssertionError(f"result has shape {got.shape}, expected {ref.shape}")
    wide = ref.dtype
    with quiet():
        gw = got.astype(wide)
        rounded = round_to(ref, dtype)
        rw = rounded.astype(wide)
        err = np.abs(gw - ref)
        sp = spacing_of(rounded).astype(wide)
        ulp = err / sp
        nan_r, nan_g = np.isnan(ref), np.isnan(gw)
        special = nan_r | nan_g | np.isinf(rw) | np.isinf(gw)
        if exact_mask is not None:
            special = special | np.broadcast_to(exact_mask, ref.shape)
        special_ok = (nan_r & nan_g) | (gw == rw)
        if nan_ok is not None:
            special_ok = special_ok | (np.broadcast_to(nan_ok, ref.shape) & nan_g)
        bit_exact = ulps == 0 and allowed is None
        if bit_exact:
            tol = np.zeros(ref.shape, wide)
            finite_ok = gw == rw
        else:
            tol = np.zeros(ref.shape, wide)
            if ulps:
                tol = np.maximum(tol, ulps * sp)
            if allowed is not None:
                tol = np.maximum(tol, np.asarray(allowed, dtype=wide))
            tol = np.maximum(tol, wide.type(floor))
            finite_ok = err <= tol
        ok = np.where(special, special_ok, finite_ok)
        ratio = np.where(tol > 0, err / np.where(tol > 0, tol, 1), np.inf)
        badness = np.where(ok, 0.0, np.where(special, np.inf, ratio))
        badness = np.where(np.isnan(badness), np.inf, badness)
    return Comparison(gw, ref, rounded, err, ulp, tol, np.asarray(ok), np.asarray(badness))


def fmt(v) -> str:
    """A value with all the digits that matter (longdouble included)."""
    v = np.asarray(v)[()]
    if isinstance(v, (np.floating, float)):
        if not np.isfinite(v):
            return str(float(v))
        if np.asarray(v).dtype == LONG:
            return np.format_float_scientific(v, precision=20, unique=False)
        return np.format_float_scientific(v, unique=True)
    return repr(v)


def describe_failure(what: str, c: Comparison, dtype, inputs: dict | None = None,
                     bound_text: str = "") -> str:
    bad = ~c.ok
    n_bad = int(bad.sum())
    flat_worst = int(np.argmax(np.where(bad, c.badness, -1).reshape(-1)))
    idx = np.unravel_index(flat_worst, c.ref.shape) if c.ref.ndim else ()
    parts = [f"{what}: {n_bad} of {c.ref.size} elements violate the bound {bound_text}".rstrip()]
    worst = [f"worst element at index {tuple(int(i) for i in idx)}:"]
    for name, arr in (inputs or {}).items():
        a = np.asarray(arr)
        try:
            val = np.broadcast_to(a, c.ref.shape)[idx]
        except ValueError:
            continue
        worst.append(f"{name}={fmt(val)}")
    worst += [f"got={fmt(round_to(c.got[idx], dtype))}",
              f"expected={fmt(c.rounded[idx])}",
              f"(exact {fmt(c.ref[idx])})",
              f"error={fmt(np.float64(c.ulp[idx]))} ULP",
              f"tolerance={fmt(np.float64(c.tol[idx]))} abs"]
    parts.append(" ".join(worst))
    others = np.argwhere(bad)[:5]
    if n_bad > 1:
        shown = []
        for o in others:
            o = tuple(int(i) for i in o)
            xin = ""
            if inputs:
                name, arr = next(iter(inputs.items()))
                try:
                    xin = f"{name}={fmt(np.broadcast_to(np.asarray(arr), c.ref.shape)[o])} "
                except ValueError:
                    pass
            shown.append(f"{o}: {xin}got={fmt(round_to(c.got[o], dtype))} "
                         f"expected={fmt(c.rounded[o])} ulp={fmt(np.float64(c.ulp[o]))}")
        parts.append("first failures: " + "; ".join(shown))
    return "\n".join(parts)


def assert_close(what: str, got, ref, dtype, *, inputs: dict | None = None, ulps=None,
                 allowed=None, floor: float = 0.0, exact_mask=None, nan_ok=None,
                 bound_text: str = ""):
    c = compare(got, ref, dtype, ulps=ulps, allowed=allowed, floor=floor, exact_mask=exact_mask,
                nan_ok=nan_ok)
    if not c.ok.all():
        if not bound_text:
            bound_text = ("(bit-exact)" if ulps == 0 and allowed is None
                          else f"({ulps} ULP, floor {floor:.3g})" if ulps is not None
                          else f"(explicit bound, floor {floor:.3g})")
        raise AssertionError(describe_failure(what, c, dtype, inputs, bound_text))
    return c


def compute_dtype(dtype) -> np.dtype:
    """float16 is computed in float32 (DESIGN.md section 3)."""
    return F32 if native(dtype) == F16 else native(dtype)


def inf_times_underflow(grad, derivative, dtype) -> np.ndarray:
    """Where ``grad`` is +-inf and the exact derivative is below the smallest normal of the
    compute dtype.  The exact product is +-inf, but the derivative itself underflows (to 0 or
    a subnormal) in any implementation computing in that dtype, and inf * 0 is NaN (as in
    PyTorch): both NaN and the exact infinity are accepted there.  This is about the wider
    exponent range of the oracle, not about accuracy."""
    with quiet():
        return np.isinf(np.asarray(grad)) & (np.abs(np.asarray(derivative))
                                             < tiny(compute_dtype(dtype)))


def derivative_floor(ref, dtype) -> float:
    """Absolute floor of derivative/backward forms: ``eps * max|ref|`` over the call's finite
    output (DESIGN.md section 4), and at least the smallest normal."""
    r = np.asarray(ref)
    with quiet():
        finite = np.abs(r[np.isfinite(r)])
    m = float(finite.max()) if finite.size else 0.0
    return max(tiny(dtype), eps(dtype) * m)


# ------------------------------------------------------------------------------------------------
# elementwise references
# ------------------------------------------------------------------------------------------------

#: What each public form returns, as reference "parts".
FORM_PARTS = {
    "forward": ("forward",),
    "derivative": ("derivative",),
    "and_derivative": ("forward", "derivative"),
    "backward": ("backward",),
}


def part_bound(spec: _registry.OpSpec, part: str) -> _registry.Bound:
    return spec.bound if part == "forward" else spec.derivative_bound


def part_ulps(spec: _registry.OpSpec, part: str, dtype) -> float:
    return part_bound(spec, part).ulps(native(dtype).name)


def part_floor(part: str, ref, dtype) -> float:
    return tiny(dtype) if part == "forward" else derivative_floor(ref, dtype)


def formulas(name: str):
    """(value, derivative, derivative_from_y or None) of an elementwise op: the pure vectorised
    formulas of the numpy reference (``numpy_ref.FUNCTIONS``), which work on any float dtype."""
    try:
        return numpy_ref.FUNCTIONS[name]
    except KeyError:
        raise AssertionError(f"the numpy reference has no formulas for {name!r} "
                             "(fastact/kernels/numpy_ref.py FUNCTIONS)") from None


def param_list(spec: _registry.OpSpec, params: dict | None) -> list:
    """Parameter values in signature order, as np.float64 (the kernels' parameter type: a
    float32 product then rounds once from the exact float64 product)."""
    p = spec.defaults if params is None else {**spec.defaults, **params}
    return [np.float64(q.choices.index(p[q.name]) if q.choices else p[q.name])
            for q in spec.params]


def evaluate(spec: _registry.OpSpec, part: str, wide, *, x=None, grad=None, y=None,
             params: dict | None = None) -> np.ndarray:
    """``part`` of an elementwise op evaluated in the dtype ``wide`` (no rounding)."""
    if wide == LONG and spec.name in MP_WIDE:
        return mp_wide(spec, part, x=x, grad=grad, params=params)
    value, derivative, from_y = formulas(spec.name)
    p = param_list(spec, params)
    with quiet():
        if part == "forward":
            r = value(upcast(x, wide), *p)
        elif part == "derivative":
            r = derivative(upcast(x, wide), *p)
        elif part == "derivative_from_y":
            r = from_y(upcast(y, wide), *p)
        elif y is None:
            r = upcast(grad, wide) * derivative(upcast(x, wide), *p)
        else:
            assert from_y is not None, f"{spec.name}: no derivative_from_y formula"
            r = upcast(grad, wide) * from_y(upcast(y, wide), *p)
        return np.asarray(r, dtype=wide)


#: Elementwise ops on which the array-layer tests run (test_contract, test_hostile, the layouts of
#: test_accuracy): between them every kind of signature -- no parameter, parameters, y=
#: backward, two ordered parameters, required parameters, a string parameter.
LAYER_OPS = frozenset({"sigmoid", "tanh", "relu", "leaky_relu", "elu", "hardtanh", "threshold",
                       "gelu"})

#: Ops whose long-double reference is computed with mpmath element by element: gelu, since
#: NumPy has no long-double erfc (SciPy's is float64 only).
MP_WIDE = frozenset({"gelu"})
_MP_WIDE_DPS = 30


@functools.lru_cache(maxsize=256)
def _mp_wide_cached(name: str, part: str, params: tuple, numbers: tuple,
                    xbytes: bytes) -> np.ndarray:
    x = np.frombuffer(xbytes, dtype=LONG)
    out = np.empty(x.shape, LONG)
    # +-inf and NaN: the numpy reference's limits (mpmath would give inf * 0 = NaN at -inf)
    value, derivative, _ = formulas(name)
    with quiet():
        special = (value if part == "forward" else derivative)(x.astype(np.float64), *numbers)
    fn = MP_FORMULAS[name][0 if part == "forward" else 1]
    # (strtold's ERANGE for results below long double's range is a RuntimeWarning: the value
    # is 0 or the nearest subnormal, as wanted)
    with mpmath.workdps(_MP_WIDE_DPS), quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for i, v in enumerate(x):
            # beyond |x| = 200 gelu is x or 0 and its derivative 1 or 0 even in long double
            # (e^-20000 < 1e-4951), and mpmath's exp of such arguments is slow or overflows
            if not np.isfinite(v) or abs(v) > 200:
                out[i] = special[i]
                continue
            r = fn(to_mpf(v), **dict(params))
            out[i] = LONG.type(mpmath.nstr(r, 25, strip_zeros=False))
    out.setflags(write=False)
    return out


def mp_wide(spec: _registry.OpSpec, part: str, *, x, grad=None, params=None) -> np.ndarray:
    """``part`` of an op of :data:`MP_WIDE` in long double, from :data:`MP_FORMULAS`."""
    p = spec.defaults if params is None else {**spec.defaults, **params}
    xl = np.array(upcast(x, LONG), order="C")  # (ascontiguousarray would make 0-d 1-d)
    r = _mp_wide_cached(spec.name, "forward" if part == "forward" else "derivative",
                        tuple(sorted(p.items())), tuple(param_list(spec, params)),
                        xl.reshape(-1).tobytes()).reshape(xl.shape)
    if part == "backward":
        with quiet():
            r = upcast(grad, LONG) * r
    return np.array(r, dtype=LONG)


def elementwise(spec: _registry.OpSpec, part: str, dtype, *, x=None, grad=None, y=None,
                params: dict | None = None) -> np.ndarray:
    """Exact value (wide dtype, shape of the input) of ``part`` of an elementwise op for
    ``dtype`` results.

    ``part`` is ``forward``, ``derivative`` or ``backward`` (``grad * f'(x)``, or
    ``grad * f'(y)`` computed from the output when ``y`` is given).
    """
    wide = wide_dtype(dtype, part_bound(spec, part).exact)
    src = x if y is None else y
    if np.size(src) == 0:
        return np.empty(np.shape(src), wide)
    return evaluate(spec, part, wide, x=x, grad=grad, y=y, params=params)


# ------------------------------------------------------------------------------------------------
# prelu (written here: prelu(x) = x if x > 0 else w * x, channel axis 1)
# ------------------------------------------------------------------------------------------------

def prelu_weight(weight) -> np.ndarray:
    return np.asarray(weight, dtype=F64).reshape(-1)


def _channel_weights(x: np.ndarray, weight) -> np.ndarray:
    """The weight of every element of ``x``, broadcastable to x (float64)."""
    w = prelu_weight(weight)
    if w.size == 1:
        return w.reshape(())
    return w.reshape((1, w.size) + (1,) * (x.ndim - 2))


def prelu(part: str, dtype, *, x, weight, grad=None) -> np.ndarray:
    """Exact value (float64: the op is exact, one rounding of the float64 product) of prelu's
    ``part``; NaN propagates through every part."""
    xw = upcast(x, F64)
    if xw.size == 0:
        return xw
    w = _channel_weights(xw, weight)
    with quiet():
        if part == "forward":
            r = np.where(xw > 0, xw, xw * w)
        else:
            d = np.where(np.isnan(xw), np.nan, np.where(xw > 0, 1.0, w))
            r = d if part == "derivative" else upcast(grad, F64) * d
    return np.array(np.broadcast_to(r, xw.shape), copy=True)  # (ascontiguousarray makes 0-d 1-d)


def prelu_grad_weight(grad, x, weight):
    """(exact d/dweight of sum(grad * prelu(x)) in longdouble shaped like the weight, the sum of
    |terms| for a conditioning-aware tolerance): d prelu / d w = x where x <= 0 (NaN where x is
    NaN, as the kernels' ``not x > 0`` test)."""
    w = np.asarray(weight, dtype=F64)
    g = upcast(grad, LONG)
    xl = upcast(x, LONG)
    with quiet():
        terms = np.where(xl > 0, LONG.type(0), g * xl)
        if w.size == 1 or xl.ndim < 2:
            total = np.array(terms.sum(dtype=LONG))
            absum = np.array(np.abs(terms).sum(dtype=LONG))
        else:
            axes = tuple(i for i in range(xl.ndim) if i != 1)
            total = terms.sum(axis=axes, dtype=LONG)
            absum = np.abs(terms).sum(axis=axes, dtype=LONG)
    return total.reshape(w.shape), absum.reshape(w.shape)


# ------------------------------------------------------------------------------------------------
# row-wise (softmax family), written here
# ------------------------------------------------------------------------------------------------

def norm_axis(axis: int, ndim: int) -> int:
    return axis % max(ndim, 1)


def to_rows(a: np.ndarray, axis: int) -> np.ndarray:
    """(rows, C) C-contiguous copy with ``axis`` last (a 0-d array is one row of one)."""
    a = np.asarray(a)
    if a.ndim == 0:
        return np.ascontiguousarray(a.reshape(1, 1))
    moved = np.moveaxis(a, norm_axis(axis, a.ndim), -1)
    width = moved.shape[-1]
    rows = moved.size // width if width else math.prod(moved.shape[:-1])
    return np.ascontiguousarray(moved).reshape(rows, width)


def from_rows(r: np.ndarray, shape: tuple, axis: int) -> np.ndarray:
    if len(shape) == 0:
        return r.reshape(())
    ax = norm_axis(axis, len(shape))
    moved_shape = shape[:ax] + shape[ax + 1:] + (shape[ax],)
    return np.ascontiguousarray(np.moveaxis(r.reshape(moved_shape), -1, ax))


def keep_mask(where, shape) -> np.ndarray:
    if where is None:
        return np.ones(shape, bool)
    return np.broadcast_to(np.asarray(where, bool), shape)


def softmax_rows(x: np.ndarray, keep: np.ndarray, temperature: float, log: bool) -> np.ndarray:
    """softmax / log_softmax of each row of the wide (rows, C) array ``x``, kept entries only.

    z = (x - max) / T with the max over the kept non-NaN entries; softmax = exp(z) / sum exp(z),
    log_softmax = z - log(sum exp(z)); masked entries 0 / -inf; a row with nothing kept is all
    0 / -inf.  NaN anywhere, +inf, or a row of only -inf give NaN (PyTorch): z is NaN there.
    """
    wide = x.dtype
    T = wide.type(temperature)
    with quiet():
        m = np.where(keep & ~np.isnan(x), x, -np.inf).max(axis=1, keepdims=True)
        z = (x - m) / T
        e = np.where(keep, np.exp(z), 0)
        s = e.sum(axis=1, keepdims=True, dtype=wide)     # pairwise summation in the wide type
        if log:
            r = np.where(keep, z - np.log(s), -np.inf)
        else:
            r = np.where(keep, e / s, 0)
    none = ~keep.any(axis=1)
    r[none] = -np.inf if log else 0
    return r.astype(wide)


def softmax_backward_rows(g, y, keep, temperature, log) -> np.ndarray:
    """Vector-Jacobian products: softmax dx = y (g - sum(g y)) / T; log_softmax
    dx = (g - exp(y) sum(g)) / T (sums over kept entries); masked entries 0."""
    wide = y.dtype
    T = wide.type(temperature)
    with quiet():
        if log:
            s = np.where(keep, g, 0).sum(axis=1, keepdims=True, dtype=wide)
            r = (g - np.exp(y) * s) / T
        else:
            s = np.where(keep, g * y, 0).sum(axis=1, keepdims=True, dtype=wide)
            r = y * (g - s) / T
        return np.where(keep, r, 0).astype(wide)


def reduced_shape(shape: tuple, axis: int, keepdims: bool = False) -> tuple:
    """Shape of a row reduction (logsumexp) of an array of ``shape`` along ``axis``."""
    if len(shape) == 0:
        return ()
    ax = norm_axis(axis, len(shape))
    return shape[:ax] + ((1,) if keepdims else ()) + shape[ax + 1:]


def logsumexp_rows(x: np.ndarray, keep: np.ndarray, temperature: float) -> np.ndarray:
    """T log sum exp(x / T) of the kept entries of each row of the wide (rows, C) array ``x``,
    as m + T log(sum exp((x - m) / T)) with m the max of the kept non-NaN entries.  Nothing
    kept (or C == 0): -inf.  torch.logsumexp / scipy.special.logsumexp semantics: NaN kept ->
    NaN; otherwise a non-finite max (+inf entry, or only -inf) is the result."""
    wide = x.dtype
    T = wide.type(temperature)
    with quiet():
        xm = np.where(keep, x, -np.inf)
        nan = np.isnan(xm).any(axis=1)
        m = np.where(np.isnan(xm), -np.inf, xm).max(axis=1, initial=-np.inf)
        fin = np.isfinite(m)
        shift = np.where(fin, m, 0)[:, None]
        s = np.where(keep, np.exp((x - shift) / T), 0).sum(axis=1, dtype=wide)
        r = np.where(fin, m + T * np.log(s), m)
        r = np.where(nan, np.nan, r)
    return r.astype(wide)


def rowwise(name: str, form: str, dtype, *, x=None, grad=None, y=None, axis=-1, where=None,
            temperature=1.0, keepdims=False) -> np.ndarray:
    """Exact value (wide dtype) of a row-wise op for ``dtype`` results: softmax / log_softmax /
    softmin (``form`` forward, input shape) or their backward (``grad``, ``y``); logsumexp
    (forward only, the reduced shape, ``keepdims``)."""
    assert name in ("softmax", "log_softmax", "softmin", "logsumexp"), \
        f"no oracle for row op {name!r}"
    log = name == "log_softmax"
    wide = wide_dtype(dtype)
    shape = np.shape(x if form == "forward" else y)
    if name == "logsumexp":
        out_shape = reduced_shape(shape, axis, keepdims)
        if math.prod(out_shape) == 0:
            return np.empty(out_shape, wide)
        keep = to_rows(keep_mask(where, shape), axis)
        return logsumexp_rows(to_rows(upcast(x, wide), axis), keep,
                              temperature).reshape(out_shape)
    if math.prod(shape) == 0:
        return np.empty(shape, wide)
    keep = to_rows(keep_mask(where, shape), axis)
    if form == "forward":
        xr = to_rows(upcast(x, wide), axis)
        # softmin(x) = softmax(-x): negation is exact
        rows = softmax_rows(-xr if name == "softmin" else xr, keep, temperature, log)
    else:
        # d softmin / dx = -(d softmax / dx) at the same y: the softmax formula with -T
        t = -temperature if name == "softmin" else temperature
        rows = softmax_backward_rows(to_rows(upcast(grad, wide), axis),
                                     to_rows(upcast(y, wide), axis), keep, t, log)
    return from_rows(rows, shape, axis)


def row_reduce(values: np.ndarray, keep: np.ndarray, axis: int, how: str) -> np.ndarray:
    """Per-element broadcast of a reduction over the kept entries of each element's row."""
    if values.ndim == 0:
        return values.copy()
    ax = norm_axis(axis, values.ndim)
    with quiet():
        if how == "max":
            v = np.where(keep & ~np.isnan(values), values, -np.inf)
            r = v.max(axis=ax, keepdims=True) if values.shape[ax] else v.sum(axis=ax,
                                                                             keepdims=True)
        else:
            r = np.where(keep, values, 0).sum(axis=ax, keepdims=True)
    return np.broadcast_to(r, values.shape)


def row_width(shape: tuple, axis: int) -> int:
    return shape[norm_axis(axis, len(shape))] if len(shape) else 1


def softmax_allowed(x, ref, dtype, *, axis, where, temperature, log):
    """DESIGN.md section 4 bound per element (absolute), and the elements that must match the
    rounded reference exactly (non-finite input or row max, masked entries).

    softmax:     |err| <= r * (4 eps (2 + log2 C) + 2 eps (|x| + |max|) / T)
    log_softmax: |err| <= 8 eps (1 + |r|)(1 + log2 C) + 2 eps (|x| + |max|) / T
    """
    e = eps(dtype)
    shape = np.shape(ref)
    lg = math.log2(max(row_width(shape, axis), 1))
    xw = upcast(x, LONG)
    keep = keep_mask(where, shape)
    m = row_reduce(xw, keep, axis, "max")
    with quiet():
        cond = 2 * e * (np.abs(xw) + np.abs(m)) / temperature
        r = np.abs(ref.astype(LONG))
        if log:
            allowed = 8 * e * (1 + r) * (1 + lg) + cond
        else:
            allowed = r * (4 * e * (2 + lg) + cond)
    exact = ~np.isfinite(xw) | ~np.isfinite(m) | ~keep
    return allowed.astype(ref.dtype), exact


def logsumexp_allowed(x, ref, dtype, *, axis, where, temperature, keepdims=False):
    """Bound of logsumexp per row (absolute; ``ref`` has the reduced shape), and the rows that
    must match the rounded reference exactly (nothing kept, or a non-finite max or NaN: the
    result is then -inf / +inf / NaN).

    |err| <= 8 eps (T + |r|)(1 + log2 C) + 2 eps max(|x| + |max|) over the row's kept finite
    entries: the log_softmax bound, scaled by T (lse = x_i - T log_softmax(x)_i), with the
    conditioning term of the shifted exponents (x - max) / T multiplied back by T.
    """
    e = eps(dtype)
    shape = np.shape(x)
    lg = math.log2(max(row_width(shape, axis), 1))
    xw = to_rows(upcast(x, LONG), axis)
    keep = to_rows(keep_mask(where, shape), axis)
    out_shape = np.shape(ref)
    with quiet():
        kept = np.where(keep & ~np.isnan(xw), xw, -np.inf)
        m = kept.max(axis=1, initial=-np.inf)
        fin = keep & np.isfinite(xw)
        mag = np.where(fin, np.abs(xw), 0).max(axis=1, initial=0)
        r = np.abs(ref.astype(LONG)).reshape(-1)
        allowed = 8 * e * (temperature + r) * (1 + lg) + 2 * e * (mag + np.abs(m))
    exact = ~np.isfinite(m) | (keep & np.isnan(xw)).any(axis=1)
    return allowed.reshape(out_shape).astype(ref.dtype), exact.reshape(out_shape)


def row_allowed(name, x, ref, dtype, *, axis, where, temperature, keepdims=False):
    """The forward bound of any row-wise op: (allowed, exact mask)."""
    if name == "logsumexp":
        return logsumexp_allowed(x, ref, dtype, axis=axis, where=where,
                                 temperature=temperature, keepdims=keepdims)
    if name == "softmin":  # the softmax of -x: the bound of softmax at -x
        with quiet():
            x = -upcast(x, LONG)
    return softmax_allowed(x, ref, dtype, axis=axis, where=where, temperature=temperature,
                           log=name == "log_softmax")


def softmax_backward_allowed(grad, y, ref, dtype, *, axis, where, temperature, log):
    """Conditioning bound of the backward forms (used together with 8 ULP and the derivative
    floor ``eps * max|result|``).

    softmax:     dx = y (g - S) / T with S = sum(g y).  g - S cancels when g ~ S: the result
                 then is tiny while the absolute error of any float implementation is about
                 eps * y * (|g| + |S|) / T (S itself carries eps * sum|g y| per pairwise level).
                 Bound: 2 eps * y * (|g| + (2 + log2 C) * sum|g y|) / T.
    log_softmax: dx = (g - exp(y) S) / T with S = sum(g); the same cancellation between g and
                 exp(y) S.  Bound: 2 eps * (|g| + exp(y) (2 + log2 C) sum|g|) / T.
    """
    e = eps(dtype)
    shape = np.shape(ref)
    lg = math.log2(max(row_width(shape, axis), 1))
    gl = upcast(grad, LONG)
    yl = upcast(y, LONG)
    keep = keep_mask(where, shape)
    with quiet():
        if log:
            s = row_reduce(np.abs(gl), keep, axis, "sum")
            allowed = 2 * e * (np.abs(gl) + np.exp(yl) * (2 + lg) * s) / temperature
        else:
            s = row_reduce(np.abs(gl * yl), keep, axis, "sum")
            allowed = 2 * e * np.abs(yl) * (np.abs(gl) + (2 + lg) * s) / temperature
    return allowed.astype(ref.dtype), ~keep


# ------------------------------------------------------------------------------------------------
# independent formulas (mpmath), for validating the reference
# ------------------------------------------------------------------------------------------------

mp = mpmath.mp

_SELU_ALPHA = mpmath.mpf("1.6732632423543772848170429916717")
_SELU_SCALE = mpmath.mpf("1.0507009873554804934193349852946")


def _sig(x):
    return 1 / (1 + mpmath.exp(-x))


def _softplus(x, beta=1.0, threshold=20.0):
    if beta * x > threshold:
        return x
    return mpmath.log1p(mpmath.exp(beta * x)) / beta


def _gelu_far(x, derivative=False):
    """gelu beyond |x| = 1e4 (both forms): x or 0 (derivative 1 or 0) to within e^-5e7, far
    below any float's resolution; mpmath's exp overflows its float conversion out there."""
    return mpmath.mpf((1 if derivative else x) if x > 0 else 0)


def _gelu(x, approximate="none"):
    if abs(x) > 1e4:
        return _gelu_far(x)
    if approximate == "tanh":
        k = mpmath.sqrt(2 / mpmath.pi)
        # x (1 + tanh(z)) / 2 = x sigmoid(2z), without the cancellation of 1 + tanh(z)
        return x * _sig(2 * k * (x + mpmath.mpf("0.044715") * x ** 3))
    return x / 2 * mpmath.erfc(-x / mpmath.sqrt(2))


def _gelu_d(x, approximate="none"):
    if abs(x) > 1e4:
        return _gelu_far(x, derivative=True)
    if approximate == "tanh":
        # s + x s (1 - s) v' for x s(v), v = 2 k (x + c x^3) (analytic: mpmath.diff's step
        # fails for huge x)
        k, c = mpmath.sqrt(2 / mpmath.pi), mpmath.mpf("0.044715")
        s = _sig(2 * k * (x + c * x ** 3))
        return s + x * s * (1 - s) * 2 * k * (1 + 3 * c * x * x)
    phi = mpmath.exp(-x * x / 2) / mpmath.sqrt(2 * mpmath.pi)
    return mpmath.erfc(-x / mpmath.sqrt(2)) / 2 + x * phi


def _mish(x):
    return x * mpmath.tanh(mpmath.log1p(mpmath.exp(x)))


def _mish_d(x):
    # tanh(sp) + x sech^2(sp) sigmoid(x), sp = softplus(x): analytic (mpmath.diff loses the
    # answer for huge x, where its step is below the argument's spacing)
    sp = mpmath.log1p(mpmath.exp(x))
    return mpmath.tanh(sp) + x * mpmath.sech(sp) ** 2 * _sig(x)


def _tanhshrink(x):
    # x - tanh(x) cancels ~ x^2 / 3 relative: for |x| < 1e-3 use the series (terms to x^17,
    # truncation below x^16 ~ 1e-48 relative), which 50 digits carry for any tiny x
    if abs(x) < mpmath.mpf("1e-3"):
        z = x * x
        c = [mpmath.mpf(1) / 3, mpmath.mpf(-2) / 15, mpmath.mpf(17) / 315,
             mpmath.mpf(-62) / 2835, mpmath.mpf(1382) / 155925, mpmath.mpf(-21844) / 6081075,
             mpmath.mpf(929569) / 638512875, mpmath.mpf(-6404582) / 10854718875]
        return x * z * sum(ck * z ** k for k, ck in enumerate(c))
    with mpmath.workdps(MP_DPS + 10):
        return x - mpmath.tanh(x)


def _hardtanh(x, min_val=-1.0, max_val=1.0):
    return min(max(x, mpmath.mpf(min_val)), mpmath.mpf(max_val))


#: op name -> (value(x, **params), derivative(x, **params)), in exact arithmetic.  Derivatives at
#: kinks follow PyTorch (relu'(0) = 0, leaky_relu'(0) = negative_slope, elu'(0) = alpha,
#: hardtanh' = 1 only strictly inside).  Covers the whole DESIGN.md catalogue, so ops added to
#: the registry later are validated too.
MP_FORMULAS = {
    "sigmoid": (_sig, lambda x: _sig(x) * _sig(-x)),
    "tanh": (mpmath.tanh, lambda x: mpmath.sech(x) ** 2),
    "relu": (lambda x: x if x > 0 else mpmath.mpf(0), lambda x: mpmath.mpf(1 if x > 0 else 0)),
    "leaky_relu": (lambda x, negative_slope=0.01: x if x > 0 else negative_slope * x,
                   lambda x, negative_slope=0.01: mpmath.mpf(1) if x > 0
                   else mpmath.mpf(negative_slope)),
    "elu": (lambda x, alpha=1.0: x if x > 0 else alpha * mpmath.expm1(x),
            lambda x, alpha=1.0: mpmath.mpf(1) if x > 0 else alpha * mpmath.exp(x)),
    "prelu": (lambda x, weight: x if x > 0 else weight * x,
              lambda x, weight: mpmath.mpf(1) if x > 0 else mpmath.mpf(weight)),
    "gelu": (_gelu, _gelu_d),
    "silu": (lambda x: x * _sig(x), lambda x: _sig(x) * (1 + x * _sig(-x))),
    "mish": (_mish, _mish_d),
    "softplus": (_softplus,
                 lambda x, beta=1.0, threshold=20.0: mpmath.mpf(1) if beta * x > threshold
                 else _sig(beta * x)),
    "softsign": (lambda x: x / (1 + abs(x)), lambda x: 1 / (1 + abs(x)) ** 2),
    "selu": (lambda x: _SELU_SCALE * (x if x > 0 else _SELU_ALPHA * mpmath.expm1(x)),
             lambda x: _SELU_SCALE * (1 if x > 0 else _SELU_ALPHA * mpmath.exp(x))),
    "celu": (lambda x, alpha=1.0: x if x > 0 else alpha * mpmath.expm1(x / alpha),
             lambda x, alpha=1.0: mpmath.mpf(1) if x > 0 else mpmath.exp(x / alpha)),
    "relu6": (lambda x: _hardtanh(x, 0, 6), lambda x: mpmath.mpf(1 if 0 < x < 6 else 0)),
    "hardtanh": (_hardtanh,
                 lambda x, min_val=-1.0, max_val=1.0: mpmath.mpf(1 if min_val < x < max_val
                                                                 else 0)),
    "hardsigmoid": (lambda x: _hardtanh(x + 3, 0, 6) / 6,
                    lambda x: mpmath.mpf(1) / 6 if -3 < x < 3 else mpmath.mpf(0)),
    "hardswish": (lambda x: x * _hardtanh(x + 3, 0, 6) / 6,
                  lambda x: mpmath.mpf(0) if x < -3 else (x / 3 + mpmath.mpf(0.5) if x <= 3
                                                          else mpmath.mpf(1))),
    "log_sigmoid": (lambda x: -mpmath.log1p(mpmath.exp(-x)), lambda x: _sig(-x)),
    "tanhshrink": (_tanhshrink, lambda x: mpmath.tanh(x) ** 2),
    "hardshrink": (lambda x, lambd=0.5: x if abs(x) > lambd else mpmath.mpf(0),
                   lambda x, lambd=0.5: mpmath.mpf(1 if abs(x) > lambd else 0)),
    "softshrink": (lambda x, lambd=0.5: x - lambd if x > lambd else (x + lambd if x < -lambd
                                                                      else mpmath.mpf(0)),
                   lambda x, lambd=0.5: mpmath.mpf(1 if abs(x) > lambd else 0)),
    "threshold": (lambda x, threshold=0.0, value=0.0: x if x > threshold else mpmath.mpf(value),
                  lambda x, threshold=0.0, value=0.0: mpmath.mpf(1 if x > threshold else 0)),
}


def to_mpf(v) -> mpmath.mpf:
    """Exact conversion of a float16/32/64/longdouble value (finite or not) to mpmath."""
    v = np.asarray(v)[()]
    if not np.isfinite(v):
        return mpmath.mpf(float(v))
    if v.dtype != LONG:
        return mpmath.mpf(float(v))
    m, e = np.frexp(v)           # m in [0.5, 1): 64 significant bits
    hi = np.float64(m)           # upper 53 bits (rounded)
    lo = np.float64(m - LONG.type(hi))   # the exact remainder fits a double
    with mpmath.workprec(128):
        return mpmath.ldexp(mpmath.mpf(float(hi)) + mpmath.mpf(float(lo)), int(e))


def mp_value(name: str, part: str, x, params: dict | None = None) -> mpmath.mpf:
    f, df = MP_FORMULAS[name]
    with mpmath.workdps(MP_DPS):
        xm = to_mpf(x)
        return (f if part == "forward" else df)(xm, **(params or {}))


def mp_rows(x_rows, keep_rows, temperature, log: bool) -> list[list]:
    """softmax / log_softmax of small finite rows in mpmath (fully masked: 0 / -inf)."""
    out = []
    with mpmath.workdps(MP_DPS):
        T = mpmath.mpf(temperature)
        for xr, kr in zip(x_rows, keep_rows):
            kept = [to_mpf(v) / T for v, k in zip(xr, kr) if k]
            if not kept:
                out.append([mpmath.mpf("-inf") if log else mpmath.mpf(0)] * len(xr))
                continue
            s = mpmath.fsum(mpmath.exp(v) for v in kept)
            row = []
            for v, k in zip(xr, kr):
                if not k:
                    row.append(mpmath.mpf("-inf") if log else mpmath.mpf(0))
                elif log:
                    row.append(to_mpf(v) / T - mpmath.log(s))
                else:
                    row.append(mpmath.exp(to_mpf(v) / T) / s)
            out.append(row)
    return out


def mp_logsumexp_rows(x_rows, keep_rows, temperature) -> list:
    """T log sum exp(x / T) of the kept entries of small finite rows in mpmath (nothing kept:
    -inf)."""
    out = []
    with mpmath.workdps(MP_DPS):
        T = mpmath.mpf(temperature)
        for xr, kr in zip(x_rows, keep_rows):
            kept = [to_mpf(v) / T for v, k in zip(xr, kr) if k]
            if not kept:
                out.append(mpmath.mpf("-inf"))
                continue
            out.append(T * mpmath.log(mpmath.fsum(mpmath.exp(v) for v in kept)))
    return out


def mp_relative_error(approx, exact: mpmath.mpf, abs_floor) -> float:
    """|approx - exact| / |exact| (approx: a wide NumPy value); errors below ``abs_floor`` count
    as 0.  Non-finite values must be identical."""
    a = to_mpf(approx)
    if mpmath.isnan(exact) or mpmath.isnan(a):
        return 0.0 if (mpmath.isnan(exact) and mpmath.isnan(a)) else math.inf
    if mpmath.isinf(exact) or mpmath.isinf(a):
        return 0.0 if a == exact else math.inf
    with mpmath.workdps(MP_DPS):
        d = abs(a - exact)
        if d <= abs_floor:
            return 0.0
        return float(d / abs(exact)) if exact != 0 else math.inf


# ------------------------------------------------------------------------------------------------
# interesting inputs
# ------------------------------------------------------------------------------------------------

#: Magnitudes where something happens for some op and dtype: exp/expm1 overflow and underflow
#: (float32: log(FLT_MAX) = 88.72, log(FLT_MIN) = -87.34, sigmoid's last subnormal near -103.97;
#: float64: +-709.78, -708.40, -744.44 / -745.13), tanh saturation (float32 ~9.01, float64
#: ~19.06), elu saturation (-17 / -37), the softplus threshold (20), kinks of the hard* family,
#: and huge values.
BOUNDARIES = (
    1e-30, 1e-8, 1e-5, 1e-3, 0.01, 0.1, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 6.0, 8.0, 9.0, 9.01, 10.0,
    15.0, 16.64, 17.33, 19.0, 19.06, 20.0, 30.0, 36.04, 36.74, 40.0, 50.0,
    87.0, 87.33, 87.34, 88.0, 88.37, 88.72, 88.7228, 89.0, 100.0, 103.28, 103.97, 104.0, 110.0,
    700.0, 708.39, 708.4, 709.0, 709.78, 709.79, 710.0, 744.44, 745.0, 745.13, 745.14, 746.0,
    750.0, 800.0, 1e3, 1e4, 1e5, 1e10, 1e20, 1e30, 1e38, 3e38, 1e100, 1e300, 1.7e308,
)


def special_values(dtype) -> np.ndarray:
    """NaN, +-inf, +-0, subnormals, the smallest normal, the largest finite value, eps, every
    :data:`BOUNDARIES` magnitude with both signs and its two float neighbours in ``dtype``
    (values that overflow ``dtype`` become +-inf).  Unique bit patterns, deterministic order."""
    dtype = native(dtype)
    fi = np.finfo(dtype)
    base = [0.0, -0.0, np.inf, -np.inf, np.nan]
    for v in (float(fi.smallest_subnormal), 3 * float(fi.smallest_subnormal),
              float(fi.smallest_normal), float(fi.smallest_normal) * 0.75,
              float(fi.smallest_normal) * (1 - float(fi.eps)), float(fi.max), float(fi.eps),
              float(fi.eps) / 2, 1 - float(fi.eps) / 2, 1 + float(fi.eps)):
        base += [v, -v]
    with quiet():
        b = np.array([s * v for v in BOUNDARIES for s in (1.0, -1.0)]).astype(dtype)
        neighbours = np.concatenate([np.nextafter(b, b.dtype.type(np.inf)),
                                     np.nextafter(b, b.dtype.type(-np.inf))])
        vals = np.concatenate([np.array(base).astype(dtype), b, neighbours])
    bits = vals.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[dtype.itemsize])
    _, first = np.unique(bits, return_index=True)
    return vals[np.sort(first)]


def log_uniform(rng, n: int, dtype) -> np.ndarray:
    """Random signs and magnitudes spread over the whole finite range of ``dtype``."""
    fi = np.finfo(native(dtype))
    lo = math.log10(float(fi.smallest_subnormal)) + 0.5
    hi = math.log10(float(fi.max)) - 0.5
    mags = 10.0 ** rng.uniform(lo, hi, n)
    with quiet():
        return (mags * rng.choice([-1.0, 1.0], n)).astype(native(dtype))


def random_values(rng, n: int, dtype, domain, *, specials: bool = True,
                  finite: bool = False) -> np.ndarray:
    """``n`` deterministic values: mostly uniform over ``domain``, some log-uniform over the whole
    range, some :func:`special_values` (NaN/inf left out when ``finite``)."""
    dtype = native(dtype)
    with quiet():
        out = rng.uniform(domain[0], domain[1], n).astype(dtype)
        wide = rng.random(n) < 0.25
        out[wide] = log_uniform(rng, int(wide.sum()), dtype)
        if specials:
            sv = special_values(dtype)
            if finite:
                sv = sv[np.isfinite(sv)]
            pick = rng.random(n) < 0.15
            out[pick] = rng.choice(sv, int(pick.sum()))
    return out
