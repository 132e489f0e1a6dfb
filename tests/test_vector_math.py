"""The branch-free math helpers of ``fastact/_math.py`` (exp_poly, expm1_poly, log1p_poly_unit,
log_poly, log1p_poly, erfc_poly)
over their whole ranges, as the Numba backend compiles them, against ``np.longdouble``
(x86's 80-bit extended precision: 11 more bits than float64, checked in test_accuracy).

* float32: a strided sweep over every 1021st float32 bit pattern (about 4.2 million values,
  both signs, subnormals, the overflow edges), evaluated in float64 and rounded to float32 as
  the kernels do: within 0.501 ULP of the correctly rounded float32 value;
* float64: random points (uniform and log-uniform), the range edges and special values.

The Cython backend compiles the same function bodies (tests/test_cython_codegen.py); the
op-level accuracy tests (test_accuracy.py) run every backend.
"""

from __future__ import annotations

import math
import numpy as np
import pytest
from numba import njit

from fastact import _math
from fastact.kernels import numba_cpu

LONG = np.longdouble

def _erfc_reference(x):
    """erfc to ~40 digits (mpmath) for float64 sweeps; scipy's float64 erfc (<= 1 ULP) when the
    result is rounded to float32 anyway (test_float32_bit_pattern_sweep)."""
    x = np.asarray(x)
    if x.size > 50_000:
        from scipy.special import erfc

        return erfc(x.astype(np.float64)).astype(LONG)
    import mpmath

    mpmath.mp.dps = 40
    return np.array([np.longdouble(mpmath.nstr(mpmath.erfc(mpmath.mpf(float(v))), 30))
                     if not np.isnan(v) else np.nan for v in x.tolist()], LONG)


#: helper -> (reference on longdouble, input domain, float64 bound in ULP)
HELPERS = {
    "exp_poly": (np.exp, (-np.inf, np.inf), 1.5),
    "expm1_poly": (np.expm1, (-np.inf, np.inf), 2.0),
    "log1p_poly_unit": (np.log1p, (0.0, 1.0), 1.6),
    "log_poly": (np.log, (0.0, np.inf), 1.6),
    "log1p_poly": (np.log1p, (-1.0, np.inf), 2.0),
    "erfc_poly": (_erfc_reference, (-np.inf, np.inf), 6.0),
    # e^x down to the smallest normal result, 0 below (the softmax rows' float64 exps)
    "exp_poly_nonpositive": (lambda x: np.where(x >= _math.EXP_NORMAL_LO, np.exp(x), 0),
                             (-np.inf, 0.0), 1.5),
}


@njit
def _apply(f, x, out):
    for i in range(x.size):
        out[i] = f(x[i])


def evaluate(name, x):
    out = np.empty(x.shape, np.float64)
    _apply(numba_cpu.FORMULAS[name], np.ascontiguousarray(x, np.float64), out)
    return out


def ulp_error(got, ref, dtype):
    """|got - ref| in ULP of the exact value's dtype spacing (finite references only)."""
    with np.errstate(all="ignore"):
        spacing = np.spacing(np.abs(ref.astype(dtype))).astype(LONG)
        return np.abs((got.astype(LONG) - ref) / spacing).astype(np.float64)


def in_domain(name, x):
    lo, hi = HELPERS[name][1]
    return x[(x >= lo) & (x <= hi)]


@pytest.mark.parametrize("name", HELPERS)
def test_float32_bit_pattern_sweep(name):
    bits = np.arange(0, 2**32, 1021, dtype=np.uint64).astype(np.uint32)
    with np.errstate(invalid="ignore"):  # signalling NaN patterns (NaN: test_special_values)
        x = bits.view(np.float32).astype(np.float64)
    x = in_domain(name, x)  # (NaN is outside every domain)
    with np.errstate(over="ignore"):  # rounding to float32 overflows to inf, as in the kernels
        got = evaluate(name, x).astype(np.float32)
    with np.errstate(all="ignore"):
        ref = HELPERS[name][0](x.astype(LONG))
    with np.errstate(over="ignore"):
        ref32 = ref.astype(np.float32)
    fin = np.isfinite(ref32)
    err = ulp_error(got[fin], ref[fin], np.float32)
    worst = int(np.argmax(err))
    assert err[worst] <= 0.501, f"{name}: {err[worst]:.3f} ULP at x = {x[fin][worst]!r}"
    # where float32 overflows, the result is inf of the right sign (never NaN)
    np.testing.assert_array_equal(got[~fin], ref32[~fin])


@pytest.mark.parametrize("name", HELPERS)
def test_float64_random_and_edges(name):
    rng = np.random.default_rng(7)
    lo, hi = HELPERS[name][1]
    span = (max(lo, -750.0), min(hi, 710.0))
    n = 10_000 if name == "erfc_poly" else 1_000_000  # erfc's reference is mpmath, per point
    if name == "erfc_poly":
        span = (-7.0, 28.0)
    x = np.concatenate([
        rng.uniform(*span, n),
        rng.uniform(max(span[0], -1.0), min(span[1], 1.0), n),
        10.0 ** rng.uniform(-320, 0, n // 3) * (1 if lo >= 0 else rng.choice([-1, 1], n // 3)),
    ])
    x = in_domain(name, x)
    got = evaluate(name, x)
    with np.errstate(all="ignore"):
        ref = HELPERS[name][0](x.astype(LONG))
    with np.errstate(over="ignore"):
        ref64 = ref.astype(np.float64)
    fin = np.isfinite(ref64)
    err = ulp_error(got[fin], ref[fin], np.float64)
    worst = int(np.argmax(err))
    bound = HELPERS[name][2]
    assert err[worst] <= bound, f"{name}: {err[worst]:.3f} ULP at x = {x[fin][worst]!r}"
    np.testing.assert_array_equal(got[~fin], ref64[~fin])


SPECIALS = {
    "exp_poly": [(np.nan, np.nan), (np.inf, np.inf), (-np.inf, 0.0), (0.0, 1.0),
                 (709.79, np.inf), (-745.2, 0.0), (-745.0, 5e-324)],
    "expm1_poly": [(np.nan, np.nan), (np.inf, np.inf), (-np.inf, -1.0), (0.0, 0.0),
                   (-0.0, -0.0), (5e-324, 5e-324), (-1e-300, -1e-300), (709.79, np.inf),
                   (-40.0, -1.0)],
    "log1p_poly_unit": [(0.0, 0.0), (5e-324, 5e-324), (1e-300, 1e-300), (1.0, np.log(2.0)),
                        (np.nan, np.nan)],
    "log_poly": [(0.0, -np.inf), (-0.0, -np.inf), (-1.0, np.nan), (-np.inf, np.nan),
                 (np.inf, np.inf), (np.nan, np.nan), (1.0, 0.0), (2.0, np.log(2.0)),
                 (5e-324, np.log(5e-324)), (2.2250738585072014e-308, np.log(2.2250738585072014e-308)),
                 (1.7976931348623157e308, np.log(1.7976931348623157e308))],
    "log1p_poly": [(0.0, 0.0), (-0.0, -0.0), (5e-324, 5e-324), (-5e-324, -5e-324),
                   (1e-20, 1e-20), (-1.0, -np.inf), (-1.5, np.nan), (-np.inf, np.nan),
                   (np.inf, np.inf), (np.nan, np.nan), (1.0, np.log(2.0)),
                   (1.7976931348623157e308, np.log(1.7976931348623157e308))],
    "erfc_poly": [(np.nan, np.nan), (np.inf, 0.0), (-np.inf, 2.0), (0.0, 1.0), (-0.0, 1.0),
                  (27.3, 0.0), (-6.0, 2.0), (40.0, 0.0)],
    "exp_poly_nonpositive": [(np.nan, np.nan), (-np.inf, 0.0), (0.0, 1.0), (-0.0, 1.0),
                             (1.0, 1.0), (-708.4, 0.0), (-745.2, 0.0)],
}


@pytest.mark.parametrize("name", HELPERS)
def test_special_values(name):
    x = np.array([v for v, _ in SPECIALS[name]])
    want = np.array([w for _, w in SPECIALS[name]])
    got = evaluate(name, x)
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(np.signbit(got), np.signbit(want)), f"{name}: sign of zero"


def test_erfc_poly_coefficients_are_weidemans():
    """The 40 constants of erfc_poly's polynomial are the ones benchmarks/tools/
    erfcx_coefficients.py derives from Weideman's transform (60-digit mpmath), to the bit."""
    import importlib.util
    from pathlib import Path

    pytest.importorskip("mpmath")
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "tools" / "erfcx_coefficients.py"
    spec = importlib.util.spec_from_file_location("erfcx_coefficients", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shipped = module.shipped()
    assert len(shipped) == module.N
    assert shipped == module.coefficients()


# --- the row reductions written as explicit vector code (numba_cpu._row_reduction) ----------

@njit
def _reduce_rows(x):
    n = x.shape[0]
    mx = np.empty(n, x.dtype)
    mn = np.empty(n, x.dtype)
    total = np.empty(n, np.float64)
    for r in range(n):
        mx[r] = numba_cpu._vector_row_max(x, r)
        mn[r] = numba_cpu._vector_row_min(x, r)
        total[r] = numba_cpu._vector_row_sum(x, r)
    return mx, mn, total


#: row lengths around the vector blocks (32 float32 / 16 float64 elements) and their tails
LENGTHS = [0, 1, 5, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 100, 1000, 1031]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_reductions_match_numpy(dtype):
    """max / min skip NaN (an all-NaN or empty row gives -inf / inf), the sum is the float64
    sum of the row to within its rounding bound, for every row of a 2-D array (the row offset
    matters: each row differs), with NaN and inf in the vector blocks and in the tails."""
    rng = np.random.default_rng(11)
    eps = np.finfo(np.float64).eps
    for n in LENGTHS:
        x = (rng.standard_normal((6, n)) * 10.0 ** rng.integers(-3, 4, (6, 1))).astype(dtype)
        if n:
            x[1, rng.integers(0, n)] = np.nan
            x[2, :] = np.nan
            x[3, rng.integers(0, n)] = np.inf
            x[4, n - 1] = -np.inf  # the last element: in the tail when n is not a multiple
        mx, mn, total = _reduce_rows(x)
        for r in range(6):
            row = x[r].astype(np.float64)
            finite_or_inf = row[~np.isnan(row)]
            want_max = finite_or_inf.max() if finite_or_inf.size else -np.inf
            want_min = finite_or_inf.min() if finite_or_inf.size else np.inf
            assert mx[r] == want_max and mn[r] == want_min, (n, r)
            if np.isnan(row).any():
                assert np.isnan(total[r]), (n, r)
            elif np.isinf(row).any():
                assert total[r] == row[np.isinf(row)][0], (n, r)
            else:
                exact = math.fsum(row.tolist())
                bound = 4 * eps * np.abs(row).sum() + 1e-300
                assert abs(total[r] - exact) <= bound, (n, r, total[r], exact)


def test_row_sum_float64_is_compensated():
    """float64 rows: the lanes carry a TwoSum compensation, so cancellation far below one ULP
    of the large terms is kept (a plain sum returns 0 here), in the blocks and in the tail."""
    for n in (4, 40, 1001):
        row = np.zeros(n)
        row[0], row[1], row[2] = 1e16, 1.0, -1e16
        row[-1] += 1.0
        _, _, total = _reduce_rows(np.vstack([row, row[::-1].copy()]))
        assert list(total) == [2.0, 2.0], n
    # +inf and -inf in one row: NaN, as the plain sum
    _, _, total = _reduce_rows(np.array([[np.inf, 1.0, -np.inf] + [0.0] * 40]))
    assert np.isnan(total[0])


def test_row_sum_float32_is_float64_accurate():
    """float32 rows are summed in float64: 2^24 + 1 + 1 + ... is not absorbed."""
    row = np.ones(1000, np.float32)
    row[0] = 2.0 ** 24
    _, _, total = _reduce_rows(row[None, :])
    assert total[0] == 2.0 ** 24 + 999


@njit
def _dot_rows(a, b):
    total = np.empty(a.shape[0], np.float64)
    for r in range(a.shape[0]):
        total[r] = numba_cpu._vector_row_dot(a, b, r)
    return total


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_dot_matches_fsum(dtype):
    """The row dot product (softmax's backward sum(g * y)) is the float64 sum of the products
    to within its rounding bound, for every row, with the second array's rows at another stride
    (a column slice of a wider array), NaN and inf in the blocks and in the tails."""
    rng = np.random.default_rng(12)
    eps = np.finfo(np.float64).eps
    for n in LENGTHS:
        a = (rng.standard_normal((5, n)) * 10.0 ** rng.integers(-3, 4, (5, 1))).astype(dtype)
        b = rng.standard_normal((5, n + 7)).astype(dtype)[:, 3:n + 3]
        if n:
            a[1, rng.integers(0, n)] = np.nan
            b[2, n - 1] = np.inf
            a[2, n - 1] = 2.0
        total = _dot_rows(a, b)
        for r in range(5):
            products = a[r].astype(np.float64) * b[r].astype(np.float64)
            if np.isnan(products).any():
                assert np.isnan(total[r]), (n, r)
            elif np.isinf(products).any():
                assert total[r] == np.inf, (n, r)
            else:
                exact = math.fsum(products.tolist())
                bound = 4 * eps * np.abs(products).sum() + 1e-300
                assert abs(total[r] - exact) <= bound, (n, r, total[r], exact)


def test_row_dot_float32_products_are_exact():
    """A product of two float32 is exact in float64 and so is this sum: (1 + 2^-12)^2 has a
    2^-24 term that a float32 product would lose."""
    for n in (7, 100, 1001):
        a = np.full((1, n), 1 + 2.0 ** -12, np.float32)
        assert _dot_rows(a, a)[0] == n * (1 + 2.0 ** -11 + 2.0 ** -24), n
