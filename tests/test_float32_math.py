"""The float32 twins of ``fastact/_math32.py`` (float32 arithmetic for float32 inputs, issue 7)
over a strided sweep of all float32 bit patterns, as the Numba backend compiles them.

* helpers (exp_poly, expm1_poly, log1p_poly_unit): every 1021st bit pattern (~4.2 million
  values: both signs, subnormals, the overflow edges) against ``np.longdouble``, in ULP of the
  float32 result (a subnormal result: of the smallest subnormal);
* ops: every form of every op with a twin, through the public API with ``backend='numba'``, on
  every 4099th bit pattern plus the special values, against the float64 oracle of
  ``tests/oracle.py`` with the registry's bounds and floors (DESIGN.md section 4), with default
  and non-default parameters.

The float64 formulas of ``_math.py`` are tested the same way in test_vector_math.py and, for
every backend and dtype, in test_accuracy.py (which also runs these twins on its inputs).
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

import fastact as fa
from fastact import _registry
from fastact.kernels import numba_cpu

try:
    import oracle
except ImportError:  # pragma: no cover - tests/ imported as a package
    from tests import oracle

LONG = np.longdouble
F32 = np.float32

#: helper -> (reference on longdouble, input domain, bound in float32 ULP)
HELPERS = {
    "exp_poly": (np.exp, (-np.inf, np.inf), 1.01),
    "expm1_poly": (np.expm1, (-np.inf, np.inf), 1.5),
    "log1p_poly_unit": (np.log1p, (0.0, 1.0), 1.6),
    # the softmax rows' exp: where its result is normal (below: flushed, see the specials)
    "exp_nonpositive": (np.exp, (-87.3365, 0.0), 1.01),
}


@njit
def _apply(f, x, out):
    for i in range(x.size):
        out[i] = f(x[i])


def sweep(step: int) -> np.ndarray:
    """Every ``step``-th float32 bit pattern that is not NaN, plus +-0 and +-inf."""
    bits = np.arange(0, 2**32, step, dtype=np.uint64).astype(np.uint32)
    with np.errstate(invalid="ignore"):
        x = bits.view(F32)
    x = x[~np.isnan(x)]
    return np.concatenate([x, F32([0.0, -0.0, np.inf, -np.inf])])


def test_twins_are_bound_for_float32_only():
    """The twins are used for float32 inputs, and float64 inputs keep the float64 formulas."""
    assert "exp_poly" in numba_cpu.FORMULAS32
    x = np.array([-100.0, -20.0, 0.5, 3.0], np.float64)
    got64 = fa.sigmoid(x, backend="numba")
    np.testing.assert_array_equal(got64, fa.sigmoid(x, backend="cython"))
    # float32 arithmetic: not bitwise the float64 formula rounded, somewhere in a sweep
    x32 = sweep(65537)
    x32 = x32[np.abs(x32) < 20]
    assert not np.array_equal(fa.sigmoid(x32, backend="numba"),
                              fa.sigmoid(x32.astype(np.float64), backend="numba").astype(F32))


@pytest.mark.parametrize("name", HELPERS)
def test_helper_sweep(name):
    reference, (lo, hi), bound = HELPERS[name]
    x = sweep(1021)
    x = x[(x >= lo) & (x <= hi)]
    got = np.empty_like(x)
    with np.errstate(over="ignore"):
        _apply(numba_cpu.FORMULAS32[name], x, got)
        with np.errstate(all="ignore"):
            ref = reference(x.astype(LONG))
        ref32 = ref.astype(F32)
    fin = np.isfinite(ref32)
    # beyond the float32 range: the infinity of the right sign, never NaN
    np.testing.assert_array_equal(got[~fin], ref32[~fin])
    spacing = np.maximum(np.spacing(np.abs(ref32[fin])).astype(LONG),
                         LONG(np.finfo(F32).smallest_subnormal))
    err = np.abs((got[fin].astype(LONG) - ref[fin]) / spacing).astype(np.float64)
    worst = int(np.argmax(err))
    assert err[worst] <= bound, f"{name}: {err[worst]:.3f} ULP at x = {x[fin][worst]!r}"


def test_helper_special_values():
    f = numba_cpu.FORMULAS32
    cases = {"exp_poly": [(np.nan, np.nan), (np.inf, np.inf), (-np.inf, 0.0), (0.0, 1.0),
                          (88.72, 3.3931806e38), (88.73, np.inf), (-103.0, 1.4e-45),
                          (-104.0, 0.0)],
             "expm1_poly": [(np.nan, np.nan), (np.inf, np.inf), (-np.inf, -1.0), (0.0, 0.0),
                            (-0.0, -0.0), (1e-45, 1e-45), (-1e-30, -1e-30), (88.73, np.inf)],
             "log1p_poly_unit": [(0.0, 0.0), (1e-45, 1e-45), (1.0, np.log(2.0)),
                                 (np.nan, np.nan)],
             # flushed below the smallest normal; a positive argument counts as 0
             "exp_nonpositive": [(np.nan, np.nan), (-np.inf, 0.0), (0.0, 1.0), (-0.0, 1.0),
                                 (-87.34, 0.0), (-100.0, 0.0), (3.0, 1.0), (np.inf, 1.0)]}
    for name, pairs in cases.items():
        x = F32([v for v, _ in pairs])
        want = F32([w for _, w in pairs])
        got = np.empty_like(x)
        _apply(f[name], x, got)
        np.testing.assert_array_equal(got, want, err_msg=name)
        assert np.array_equal(np.signbit(got), np.signbit(want)), name


TWINS = [op for op in _registry.elementwise_ops()
         if op.name in numba_cpu.FORMULAS32 or f"{op.name}_derivative" in numba_cpu.FORMULAS32]
#: non-default parameters that change the float32 arithmetic (rounded alpha, beta x split)
VARIED = {"elu": {"alpha": 0.3}, "softplus": {"beta": 0.3, "threshold": 30.0},
          "gelu": {"approximate": "tanh"}}


def _param_sets(op):
    sets = [{}]
    if op.name in VARIED:
        sets.append(VARIED[op.name])
    return sets


@pytest.mark.parametrize("form", ["forward", "derivative", "and_derivative", "backward"])
@pytest.mark.parametrize("op", TWINS, ids=lambda op: op.name)
def test_op_sweep(op, form):
    x = sweep(4099)
    grad = np.random.default_rng(5).uniform(-2, 2, x.size).astype(F32)
    fn = getattr(fa, op.public_name(form))
    for params in _param_sets(op):
        what = f"{op.public_name(form)}(float32 sweep, {params}) backend=numba"
        if form == "backward":
            got = (fn(grad, x=x, backend="numba", **params),)
            refs = [oracle.elementwise(op, "backward", F32, x=x, grad=grad, params=params)]
            d = oracle.elementwise(op, "derivative", F32, x=x, params=params)
            nan_ok = oracle.inf_times_underflow(grad, d, F32)
        else:
            got = fn(x, backend="numba", **params)
            got = got if form == "and_derivative" else (got,)
            refs = [oracle.elementwise(op, part, F32, x=x, params=params)
                    for part in oracle.FORM_PARTS[form]]
            nan_ok = None
        for part, res, ref in zip(oracle.FORM_PARTS[form], got, refs):
            assert res.dtype == F32, what
            oracle.assert_close(f"{what} [{part}]", res, ref, F32, inputs={"x": x},
                                ulps=oracle.part_ulps(op, part, F32),
                                floor=oracle.part_floor(part, ref, F32), nan_ok=nan_ok)
