"""Float32 twins of some formulas of ``_math.py``, in float32 arithmetic (issue 7).

``_math.py`` evaluates every formula in float64 and the kernels round once on store.  For
float32 data that costs the compute-bound ops about half their speed: an AVX-512 vector holds
16 float32 lanes but 8 float64 lanes, each element is converted twice, float64 division is
slower per lane, and the float64 polynomials are twice as long as float32 needs
(``benchmarks/tools/float32_math_experiment.py``: sigmoid at 1e7 elements, 2 threads, 20.7 ms
in float64, 7.8 ms in float32 arithmetic).

A function here has the **same name** as the ``_math.py`` formula it replaces for float32
inputs, the same arguments, and the same meaning; the Numba CPU backend compiles kernels that
call the float32 twin where the input is float32 and one exists, and the float64 formula
otherwise (``numba_cpu._by_dtype``).  Parameters (alpha, beta, ...) arrive as float64 and are
rounded to float32 where they enter float32 arithmetic.

Rules, so that Numba keeps every operation in float32:

* every constant is a module-level ``np.float32`` (a bare ``1.0`` is float64 and would widen
  the whole expression);
* ``abs`` rather than ``math.fabs``;
* ``pow2`` and ``mul_add`` are backend primitives (exponent bits, ``llvm.fmuladd``), as in
  ``_math.py``; the Python bodies here are their reference meaning, so that every function
  also runs, slowly, as plain Python on ``np.float32`` scalars.

Accuracy (DESIGN.md section 4 bounds, in float32 ULP) is tested over a strided sweep of all
float32 bit patterns in ``tests/test_float32_math.py`` (helpers and ops) and by the accuracy
matrix.  Maxima measured over every 61st bit pattern against the float64 formulas (forward in
ULP with the smallest-normal floor; derivatives with the eps * max|result| floor, which only
matters near their zeros):

=================  ==========================  ===============================
op                 forward (bound)             derivative (bound 8)
=================  ==========================  ===============================
sigmoid            2.67 (4)                    4.60
tanh               1.43 (2)                    4.30
silu               2.89 (4)                    3.03
elu, selu          0.87-1.92 (4)               1.00-1.84
softplus           2.31 (beta 1), 3.65 (0.3)   2.61-3.35
log_sigmoid        2.19 (4)                    2.61
mish               3.91 (8)                    3.16
gelu (both forms)  0.61 (4)                    0.46 (tanh), 0.60 (exact)
=================  ==========================  ===============================

Speed (float32, 1e6 elements, 2 threads, one run each; the benchmark suite has the full
comparison): Numba with the twins against the previous automatic choice (Cython, float64
formulas): sigmoid 1.41 -> 0.74 ms, silu 2.04 -> 0.87 ms, softplus 2.94 -> 2.37 ms, log_sigmoid
2.63 -> 1.07 ms; Numba against Numba: exact gelu 10.7 -> 4.3 ms, tanh-gelu 3.2 -> 1.5 ms.  A
sigmoid loop alone at 1e7 elements: 20.7 -> 7.0 ms (copy 4.4 ms).  The Cython backend keeps the float64
formulas (its kernels are generated from ``_math.py`` only); the dispatch table picks the
faster backend per op, dtype and size from measurements.
"""

from math import ldexp

import numpy as np

F = np.float32
W = np.float64

ZERO = F(0.0)
HALF = F(0.5)
ONE = F(1.0)
TWO = F(2.0)
FOUR = F(4.0)

# --- exp: Cody-Waite reduction + degree-6 polynomial + exponent bits ---------------------------
# x = k ln2 + r, |r| <= ln2 / 2, ln2 = LN2_HI + LN2_LO with LN2_HI of 9 bits, so k LN2_HI and
# x - k LN2_HI are exact for |k| <= 151.  e^r = 1 + r + r^2 P(r), P the minimax polynomial of
# Cephes' expf (Moshier).  2^k is applied as two factors 2^k1 2^k2, so a subnormal result is
# rounded once (by the last multiplication) and 2^128 overflows to inf only as a product.
EXP_LOG2E = F(1.44269504088896341)
EXP_LN2_HI = F(0.693359375)
EXP_LN2_LO = F(-2.12194440e-4)
EXP_ROUND = F(12582912.0)  # 1.5 * 2^23: (v + EXP_ROUND) - EXP_ROUND rounds v to an integer
EXP_HI = F(88.75)  # e^x overflows float32 above 88.7228
EXP_LO = F(-104.0)  # and rounds to 0 below -103.97
EXP_P0 = F(1.9875691500e-4)
EXP_P1 = F(1.3981999507e-3)
EXP_P2 = F(8.3334519073e-3)
EXP_P3 = F(4.1665795894e-2)
EXP_P4 = F(1.6666665459e-1)
EXP_P5 = F(5.0000001201e-1)


def pow2(k):
    """2^k as float32 for an integer-valued float32 k in [-126, 127] (backend primitive:
    Numba builds it from exponent bits)."""
    return F(ldexp(1.0, int(k)))


def mul_add(a, b, c):
    """a * b + c in float32, fused where the CPU has FMA (backend primitive)."""
    return F(a * b + c)


def exp_split(xc):
    """(k, r) with xc = k ln2 + r, |r| <= ln2 / 2, for xc already clamped (NaN stays NaN)."""
    k = (xc * EXP_LOG2E + EXP_ROUND) - EXP_ROUND
    return k, (xc - k * EXP_LN2_HI) - k * EXP_LN2_LO


def exp_reduce(x):
    """exp_split of x clamped to [EXP_LO, EXP_HI] (NaN fails both tests and stays NaN)."""
    return exp_split(EXP_HI if x > EXP_HI else (EXP_LO if x < EXP_LO else x))


def exp_unit(r):
    """e^r for |r| <= ln2 / 2: 1 + r + r^2 P(r)."""
    p = mul_add(EXP_P0, r, EXP_P1)
    p = mul_add(p, r, EXP_P2)
    p = mul_add(p, r, EXP_P3)
    p = mul_add(p, r, EXP_P4)
    p = mul_add(p, r, EXP_P5)
    return mul_add(p, r * r, r) + ONE


def exp_factors(x):
    """(p, s1, s2) with e^x = p s1 s2, s1 and s2 powers of two: a product with e^x applied
    factor by factor, p first, is rounded once where e^x alone would be subnormal."""
    k, r = exp_reduce(x)
    k1 = (k * HALF + EXP_ROUND) - EXP_ROUND
    return exp_unit(r), pow2(k1), pow2(k - k1)


def exp_poly(x):
    """e^x for float32 x: measured max 1.00 ULP over every 61st float32 bit pattern (subnormal
    results included), inf above 88.7228, 0 below -103.97, NaN kept."""
    p, s1, s2 = exp_factors(x)
    return p * s1 * s2


# e^x as u = e^x 2^32 and e = u 2^-32: one power-of-two factor, always normal, for a product
# that has to stay accurate where e^x alone is subnormal (x e^x is normal down to x = -93): the
# product takes u, and its one rounding is the last multiplication by 2^-32.  It replaced
# exp_factors' p 2^k1 2^k2 in silu and mish (two exponent constructions and the split of k):
# float32 1e6, numba, 1 thread, silu 0.50 -> 0.43 ms, its derivative 0.80 -> 0.74 ms, mish
# 0.56 -> 0.50 ms, its derivative 0.86 -> 0.79 ms.
EXP_SCALE_LOG2 = F(32.0)
EXP_UNSCALE = F(2.0 ** -32)


def exp_scaled(x):
    """(u, e) with u = e^x 2^32 (normal) and e = u 2^-32 = e^x, for x <= 64; below EXP_LO,
    e^EXP_LO (callers select their own tail).  NaN kept."""
    k, r = exp_split(EXP_LO if x < EXP_LO else x)
    u = exp_unit(r) * pow2(k + EXP_SCALE_LOG2)
    return u, u * EXP_UNSCALE


# below, exp_nonpositive returns 0: just under ln(2^-126) = -87.336544, so that every normal
# e^x is computed (between the two, a subnormal result is rounded once)
EXP_NORMAL_LO = F(-87.3366)


def exp_nonpositive(x):
    """e^x for x <= 0 (a larger x counts as 0), with results below the smallest normal
    flushed to 0.  For callers where a flushed exp changes only results below DESIGN.md
    section 4's absolute floors: the softmax rows (exps divided by a sum >= 1), the sigmoid
    derivative (e / (1 + e)^2), tanh (1 - 2e / (1 + e)) and its derivative, log_sigmoid
    (log1p(e)).  One power-of-two factor and no upper clamp, 5-7 fewer vector operations than
    exp_poly: softmax exp pass on 4000x1024 float32, 1 thread, 1.74 -> 1.21 ms; tanh 1e6, 1
    thread, 0.32 -> 0.26 ms (sigmoid itself 0.46 -> 0.40 ms, not taken: see sigmoid).  Max
    1.00 ULP where the result is normal; NaN kept."""
    xc = ZERO if x > ZERO else x
    low = x < EXP_NORMAL_LO
    k, r = exp_split(EXP_NORMAL_LO if low else xc)
    v = exp_unit(r) * pow2(k)
    return ZERO if low else v


# --- relu, relu6: selects of exact values, so bitwise the float64 formulas' results ----------
# (float64 formulas convert each element twice and use half the vector lanes: relu_backward
# float32 1e6, 2 threads, 117 -> 84-99 us, torch 67-81 us in the same runs).  leaky_relu, hardtanh and threshold keep float64:
# their float64 parameters would be rounded (DESIGN.md section 4: the relu family is exact).
# A leaky_relu twin with only the product in float64 (float32 compare and select) measured the
# same as the float64 formula (1e5 float32, 1 thread, 14.0 us both, relu 8.2 us): the two
# conversions per element are the cost, so it was not kept.

def _step(x, at_most_zero, above_zero):
    """``above_zero`` if x > 0, ``at_most_zero`` if x <= 0, and NaN (x itself) if x is NaN."""
    return above_zero if x > ZERO else (at_most_zero if x <= ZERO else x)


def relu(x):
    return ZERO if x <= ZERO else x  # NaN fails the test and is returned


def relu_derivative(x):
    return _step(x, ZERO, ONE)


def relu_derivative_from_y(y):
    return _step(y, ZERO, ONE)


SIX = F(6.0)


def relu6(x):
    return ZERO if x <= ZERO else (SIX if x >= SIX else x)


def relu6_derivative(x):
    return _step(x, ZERO, ONE) * _step(SIX - x, ZERO, ONE)


def relu6_derivative_from_y(y):
    return _step(y, ZERO, ONE) * _step(SIX - y, ZERO, ONE)


# --- sigmoid: as in _math.py, from e = exp(-|x|) ---------------------------------------------
# The value flushes results below the smallest normal to 0 (exp_nonpositive; DESIGN.md section
# 4's absolute floor for tiny results): float32 1e6, numba, 1 thread, 0.46 -> 0.40 ms.  This was
# held back while glu multiplied this float32 sigmoid by its second operand (a subnormal gate
# times a large value must stay accurate: tests/test_gated.py); the gated kernels now take the
# float64 formula (numba_cpu._gated_wide_call), so nothing multiplies this result further.

def sigmoid(x):
    e = exp_nonpositive(-abs(x))
    r = ONE / (ONE + e)
    return r if x >= ZERO else e * r


def sigmoid_derivative(x):
    e = exp_nonpositive(-abs(x))
    r = ONE / (ONE + e)
    return e * r * r


def sigmoid_and_derivative(x):
    e = exp_nonpositive(-abs(x))
    r = ONE / (ONE + e)
    return (r if x >= ZERO else e * r), e * r * r


def sigmoid_derivative_from_y(y):
    return y * (ONE - y)


# --- tanh: Cephes' tanhf polynomial below 0.625, 1 - 2e / (1 + e) above -----------------------
TANH_SPLIT = F(0.625)
TANH_P0 = F(-5.70498872745e-3)
TANH_P1 = F(2.06390887954e-2)
TANH_P2 = F(-5.37397155531e-2)
TANH_P3 = F(1.33314422036e-1)
TANH_P4 = F(-3.33332819422e-1)


def tanh(x):
    """Measured max 1.42 ULP.  Both branches are computed and one selected (branch-free)."""
    a = abs(x)
    z = x * x
    p = mul_add(TANH_P0, z, TANH_P1)
    p = mul_add(p, z, TANH_P2)
    p = mul_add(p, z, TANH_P3)
    p = mul_add(p, z, TANH_P4)
    small = mul_add(p * z, x, x)
    e = exp_nonpositive(-TWO * a)
    large = ONE - TWO * e / (ONE + e)
    return small if a < TANH_SPLIT else (large if x >= ZERO else -large)


def tanh_derivative(x):
    # sech^2 = 4 e / (1 + e)^2 with e = exp(-2|x|) formed as eh^2, eh = exp(-|x|): 4 eh eh stays
    # normal where e alone would be subnormal (|x| in (43.7, 44.2))
    eh = exp_nonpositive(-abs(x))
    q = ONE + eh * eh
    return ((FOUR * eh) * eh) / (q * q)


def tanh_derivative_from_y(y):
    return (ONE - y) * (ONE + y)


# --- tanhshrink: the derivative tanh(x)^2 from the float32 tanh (<= 2 * 1.43 + 0.5 ULP); the
# value x - tanh(x) keeps the float64 formula (its cancellation near 0 needs the series).  It
# was the only float32 derivative still in float64: NumPy's tanh(x)**2 was 1.4-1.5x faster
# than both compiled backends (suite 07e, tanhshrink-derivative-float32-1e5/1e6).

def tanhshrink_derivative(x):
    t = tanh(x)
    return t * t


# --- silu: x sigmoid(x) ------------------------------------------------------------------------
# For x < 0 the factor e = exp(x) is applied last, as u 2^-32 (exp_scaled): x e^x is still
# normal down to x = -93 while e^x is subnormal from -87.3 (DESIGN.md section 4: a normal result
# meets its bound even where an intermediate would be subnormal).  Float32 1e6, 1 thread:
# exp(x / 2)^2 below -64 (a select on the argument and on the result) 0.59 ms, exp_factors'
# p 2^k1 2^k2 0.50 ms, exp_scaled 0.43 ms.
TAIL = F(128.0)  # beyond, silu and mish are 0 (x < 0) or x (silu, x > 0) in float32


def silu(x):
    u, e = exp_scaled(-abs(x))
    r = x / (ONE + e)
    v = r if x >= ZERO else (r * u) * EXP_UNSCALE
    return ZERO if x < -TAIL else v


# near silu''s zero, h p(h) in float32 (as in _math.py)
SILU_D_ROOT_HI = F(-1.2784645557403564)
SILU_D_ROOT_LO = F(1.2979282537628478e-08)
SILU_D_NEAR_LO = F(-1.3784645795822144)
SILU_D_NEAR_HI = F(-1.1784645318984985)


def silu_derivative_near_root(x):
    """h p(h), h = x - x0: degree 4, within 1.1e-08 relative on x0 + [-0.1, 0.1]
    (benchmarks/tools/derivative_zeros.py)."""
    h = (x - SILU_D_ROOT_HI) - SILU_D_ROOT_LO
    p = F(-0.006596612744033337)
    p = mul_add(p, h, F(-0.015221049077808857))
    p = mul_add(p, h, F(0.018874788656830788))
    p = mul_add(p, h, F(0.14664879441261292))
    p = mul_add(p, h, F(0.2178117036819458))
    return p * h


def silu_derivative(x):
    # q (1 + x e q) for x >= 0 and e q^2 ((1 + x) + e) for x < 0, q = 1 / (1 + e), e = exp(-|x|)
    # (1 + x exact near silu''s zero, as in _math.py)
    u, e = exp_scaled(-abs(x))
    q = ONE / (ONE + e)
    v = q * (ONE + x * e * q) if x >= ZERO else (((q * q) * ((ONE + x) + e)) * u) * EXP_UNSCALE
    near = silu_derivative_near_root(x)
    v = near if (x >= SILU_D_NEAR_LO and x <= SILU_D_NEAR_HI) else v
    return ZERO if x < -TAIL else (ONE if x > TAIL else v)


# --- expm1 and log1p -----------------------------------------------------------------------------

def expm1_poly(x):
    """e^x - 1 for float32 x: exp_poly's reduction, expm1(r) = r + r^2 Q(r) (Taylor to r^8),
    then 2^k expm1(r) + (2^k - 1) as (2^k1 expm1(r) + (2^k1 - 2^-k2)) 2^k2, as in _math.py."""
    k, r = exp_reduce(x)
    q = mul_add(EXPM1_Q6, r, EXPM1_Q5)
    q = mul_add(q, r, EXPM1_Q4)
    q = mul_add(q, r, EXPM1_Q3)
    q = mul_add(q, r, EXPM1_Q2)
    q = mul_add(q, r, EXPM1_Q1)
    q = mul_add(q, r, HALF)
    p = mul_add(r * r, q, r)
    k1 = (k * HALF + EXP_ROUND) - EXP_ROUND
    t1 = pow2(k1)
    t2 = pow2(k - k1)
    v = mul_add(t1, p, t1 - pow2(k1 - k)) * t2
    return x if abs(x) < EXPM1_TINY else v


EXPM1_Q1 = F(1.0 / 6.0)
EXPM1_Q2 = F(1.0 / 24.0)
EXPM1_Q3 = F(1.0 / 120.0)
EXPM1_Q4 = F(1.0 / 720.0)
EXPM1_Q5 = F(1.0 / 5040.0)
EXPM1_Q6 = F(1.0 / 40320.0)
EXPM1_TINY = F(2.0 ** -25)  # below, e^x - 1 rounds to x (and -0 stays -0)

LOG1P_LN2_HI = F(0.693359375)
LOG1P_LN2_LO = F(-2.12194440e-4)
THREE = F(3.0)
LOG1P_C1 = F(1.0 / 3.0)
LOG1P_C2 = F(1.0 / 5.0)
LOG1P_C3 = F(1.0 / 7.0)
LOG1P_C4 = F(1.0 / 9.0)
LOG1P_C5 = F(1.0 / 11.0)
LOG1P_C6 = F(1.0 / 13.0)


def log1p_terms(u):
    """log(1 + u) for float32 u in [0, 1] as three float32 terms a + (c + b), large to small:
    _math.py's atanh scheme, series to s^13 (softplus adds them in float64)."""
    big = u > HALF
    num = u - ONE if big else u
    d = u + THREE if big else u + TWO
    de = ((THREE if big else TWO) - d) + u
    hs = (num + num) / d
    hs = hs - hs * (de / d)
    j = ONE if big else ZERO
    s = HALF * hs
    z = s * s
    q = mul_add(LOG1P_C6, z, LOG1P_C5)
    q = mul_add(q, z, LOG1P_C4)
    q = mul_add(q, z, LOG1P_C3)
    q = mul_add(q, z, LOG1P_C2)
    q = mul_add(q, z, LOG1P_C1)
    return j * LOG1P_LN2_HI, hs, hs * z * q + j * LOG1P_LN2_LO


def log1p_poly_unit(u):
    a, b, c = log1p_terms(u)
    return a + (c + b)


# --- elu and selu ------------------------------------------------------------------------------

def elu(x, alpha):
    return x if x > ZERO else F(alpha) * expm1_poly(x)


def elu_derivative(x, alpha):
    return ONE if x > ZERO else F(alpha) * exp_poly(x)


def elu_and_derivative(x, alpha):
    a = F(alpha)
    return (x if x > ZERO else a * expm1_poly(x)), (ONE if x > ZERO else a * exp_poly(x))


# (elu_derivative_from_y stays in float64: y + alpha cancels, and alpha rounded to float32
# would add 2^-24 alpha of absolute error to a result as small as alpha e^x)


SELU_ALPHA = F(1.6732632423543772848170429916717)
SELU_SCALE = F(1.0507009873554804934193349852946)
SELU_SCALE_ALPHA = F(1.6732632423543772848170429916717 * 1.0507009873554804934193349852946)


def selu(x):
    return SELU_SCALE * x if x > ZERO else SELU_SCALE_ALPHA * expm1_poly(x)


def selu_derivative(x):
    return SELU_SCALE if x > ZERO else SELU_SCALE_ALPHA * exp_poly(x)


# --- softplus and log_sigmoid: log1p(exp(-|x|)) ------------------------------------------------

SOFTPLUS_SPLIT = F(64.0)  # above, log1p(e) = e and e is scaled by e^88
SOFTPLUS_SHIFT = F(88.0)
SOFTPLUS_SCALE = 6.054601895401186e-39  # e^-88, float64


def softplus(x, beta, limit):
    # beta = 1 (the default) in its own branch, which the compiler takes out of the loop: no
    # beta x to split, all float32 (as log_sigmoid; max 2.25 ULP over every 61st bit pattern,
    # the same as the general form) -- 1e6 float32, 1 thread: 2.43 -> 0.99 ms
    return softplus_unit(x, limit) if beta == 1.0 else softplus_beta(x, beta, limit)


def softplus_unit(x, limit):
    v = (x if x > ZERO else ZERO) + log1p_poly_unit(exp_poly(-abs(x)))
    return x if x > limit else v


def softplus_beta(x, beta, limit):
    # beta x in float64 (as the threshold test of _math.py) split into bx + bxe: a rounded bx
    # alone would cost |bx| 2^-24 relative in exp(-|bx|) (65 ULP at beta = 2.5, x = -31.5);
    # exp(-|bx + bxe|) = exp(-|bx|) (1 -+ bxe); log1p's terms summed and divided by beta in
    # float64, then rounded once (4.4 ULP at beta = 0.3 with a float32 sum: 2.6 now)
    bxw = beta * W(x)
    bx = F(bxw)
    bxe = F(bxw - W(bx)) if abs(bxw) < 1e30 else ZERO  # (inf - inf would be NaN)
    # |bx| > 64: log1p(e) = e.  e is subnormal from |bx| = 87.3 while e / beta is still
    # normal for beta < 1, so there it is exp(88 - |bx|) e^-88 (88 - |bx| is exact in float32
    # for |bx| < 256), the last factor in float64
    a = abs(bx)
    big = a > SOFTPLUS_SPLIT
    e = exp_poly(SOFTPLUS_SHIFT - a if big else -a)
    e = mul_add(e, -bxe if bx >= ZERO else bxe, e)
    l1, l2, l3 = log1p_terms(e)
    lw = W(e) * SOFTPLUS_SCALE if big else W(l1) + (W(l3) + W(l2))
    v = (lw + (bxw if bxw > 0.0 else 0.0)) / beta
    return x if bxw > limit else F(v)


def softplus_derivative(x, beta, limit):
    # sigmoid(x) itself for beta = 1, as in softplus (0.87 -> 0.46 ms)
    return softplus_derivative_unit(x, limit) if beta == 1.0 else softplus_derivative_beta(
        x, beta, limit)


def softplus_derivative_unit(x, limit):
    return ONE if x > limit else sigmoid(x)


def softplus_derivative_beta(x, beta, limit):
    # sigmoid(beta x) with beta x = bx + bxe as in softplus
    bxw = beta * W(x)
    bx = F(bxw)
    bxe = F(bxw - W(bx)) if abs(bxw) < 1e30 else ZERO  # (inf - inf would be NaN)
    e = exp_poly(-abs(bx))
    e = mul_add(e, -bxe if bx >= ZERO else bxe, e)
    r = ONE / (ONE + e)
    return ONE if bxw > limit else (r if bx >= ZERO else e * r)


def log_sigmoid(x):
    return (x if x < ZERO else ZERO) - log1p_poly_unit(exp_nonpositive(-abs(x)))


def log_sigmoid_derivative(x):
    return sigmoid(-x)


# --- mish: x tanh(softplus(x)) = x e (e + 2) / (n + 2), n = e (e + 2), e = e^x --------------------
# Beyond MISH_CAP mish(x) rounds to x and mish'(x) to 1 in float32 (mish(x) / x - 1 ~ -2 e^-2x and
# mish'(x) - 1 ~ (4x - 2) e^-2x are below 2^-40 at 16); 16 rather than _math.py's 25 keeps the
# derivative's q^2 ~ e^4 finite (at 25 it is 2.7e43, beyond float32's range)
MISH_CAP = F(16.0)


def mish(x):
    # the factor e applied last, as u 2^-32 (exp_scaled, as silu): x e^x is normal down to -93
    u, e = exp_scaled(x if x < MISH_CAP else MISH_CAP)
    n = e * (e + TWO)
    v = ((x * u) * ((e + TWO) / (n + TWO))) * EXP_UNSCALE
    return x if x > MISH_CAP else (ZERO if x < -TAIL else v)


# near mish''s zero, h p(h) in float32 (as in _math.py)
MISH_D_ROOT_HI = F(-1.1924312114715576)
MISH_D_ROOT_LO = F(-3.0439375464652585e-09)
MISH_D_NEAR_LO = F(-1.2924312353134155)
MISH_D_NEAR_HI = F(-1.0924311876296997)


def mish_derivative_near_root(x):
    """h p(h), h = x - x0: degree 5, within 4.2e-08 relative on x0 + [-0.1, 0.1]
    (benchmarks/tools/derivative_zeros.py)."""
    h = (x - MISH_D_ROOT_HI) - MISH_D_ROOT_LO
    p = F(-0.003345844801515341)
    p = mul_add(p, h, F(-0.015804696828126907))
    p = mul_add(p, h, F(-0.02027187868952751))
    p = mul_add(p, h, F(0.04190776124596596))
    p = mul_add(p, h, F(0.2047312706708908))
    p = mul_add(p, h, F(0.2669479250907898))
    return p * h


def mish_derivative(x):
    # e b / q^2 with b = 4 (1 + x) + e (6 + 4 x) + e^2 (4 + e), q = e (e + 2) + 2, as in
    # _math.py; the factor e applied last as u 2^-32 (as silu)
    u, e = exp_scaled(x if x < MISH_CAP else MISH_CAP)
    q = e * (e + TWO) + TWO
    b = (FOUR * (ONE + x) + e * (SIX + FOUR * x)) + (e * e) * (FOUR + e)  # as in _math.py
    d = (u * (b / (q * q))) * EXP_UNSCALE
    near = mish_derivative_near_root(x)
    d = near if (x >= MISH_D_NEAR_LO and x <= MISH_D_NEAR_HI) else d
    return ONE if x > MISH_CAP else (ZERO if x < -TAIL else d)


# --- gelu: a float64 intermediate (DESIGN.md section 4), with float32-accurate helpers ------------
# gelu's negative tail is x Phi(x) ~ x exp(-x^2 / 2): a float32 argument would carry x^2 2^-24 of
# error into the exponent (hundreds of ULP near x = -13), so the twins compute in float64, but
# with polynomials cut to float32 accuracy: exp_wide (degree 7) and erfcx(a) = q(Z) / (L + a)
# with q of degree 11 fitted on the arguments that matter (2.7e-10 relative; gelu_phi_wide), and without the float64 formulas' correction
# terms (the rounding of t = -x / sqrt2 and of t^2 in float64 is 2^-53 relative).  A float32
# erfc was tried (the same q form in float32 arithmetic, exp(-x^2 / 2) from an exact split of
# x^2): 2.4x faster, but 6-7 ULP where the bound is 4 (the rounding of Z, of 1 / (L + a) and of
# four float32 products add up), so the float64 intermediate stays.

def exp_wide(x):
    """float64 e^x accurate to float32 results (backend primitive: _math.exp_poly_single)."""
    return W(np.exp(W(x)))


GELU_TAIL = 40.0
GELU_SQRT1_2 = 0.7071067811865476
GELU_INV_SQRT_2PI = 0.3989422804014327


def mul_add_wide(a, b, c):
    """float64 a * b + c, fused where the CPU has FMA (backend primitive: _math.mul_add)."""
    return W(a) * W(b) + W(c)


# Phi(x) = exp(-x^2 / 2) erfcx(a) / 2, a = |x| / sqrt2, for x <= 0, and 1 - that for x > 0, with
# erfcx(a) (L + a) = q(Z), Z = (L - a) / (L + a): Weideman's expansion rearranged
# (1 / (L + a) = (1 + Z) / (2 L)) and q fitted directly by Chebyshev interpolation on a in
# [0, GELU_PHI_AMAX] (benchmarks/tools/erfcx_coefficients.py --wide prints q and checks these,
# its halves).  Beyond GELU_PHI_AMAX (|x| > 24.7) exp(-x^2 / 2) < 1e-133 makes every float32
# result that uses it 0, even times geglu's factors, so erfcx(GELU_PHI_AMAX) stands in.
GELU_PHI_L = 3.5
GELU_PHI_AMAX = 17.5
GELU_PHI_Q0 = 0.5435277945901575
GELU_PHI_Q1 = 0.4688998626369871
GELU_PHI_Q2 = 0.34705683001205295
GELU_PHI_Q3 = 0.2176280125744938
GELU_PHI_Q4 = 0.11286915320201604
GELU_PHI_Q5 = 0.04615926476868466
GELU_PHI_Q6 = 0.013260666741400145
GELU_PHI_Q7 = 0.0015891226420445498
GELU_PHI_Q8 = -0.0006581828504996851
GELU_PHI_Q9 = -0.00035803146020262457
GELU_PHI_Q10 = -1.0056666296843037e-05
GELU_PHI_Q11 = 3.556409254431773e-05


def gelu_phi_wide(xc):
    """(Phi(x), exp(-x^2 / 2)) in float64 to ~3e-10 relative, for float32 results, for
    |x| <= GELU_TAIL (NaN kept); x^2 is exact (x is a float32).  No separate series near 0 (the
    float64 formula's): erfcx's error is amplified at most 2x by 1 - c there.  q in Estrin's
    scheme (depth 4 instead of 11 dependent steps: the Horner form was latency-bound).  This
    replaced erfc(-x / sqrt2) / 2 from Weideman's expansion with N = 18 (degree 17,
    (2 p / (L + a) + 1 / sqrt(pi)) / (L + a)): gelu float32 1e6 elements, 1 thread, 2.32 ->
    1.85 ms, its derivative 2.67 -> 2.24 ms (both erfc forms measured in one process each)."""
    a = abs(xc) * GELU_SQRT1_2
    a = GELU_PHI_AMAX if a > GELU_PHI_AMAX else a
    inv = 1.0 / (GELU_PHI_L + a)
    z = (GELU_PHI_L - a) * inv
    z2 = z * z
    z4 = z2 * z2
    b0 = mul_add_wide(GELU_PHI_Q1, z, GELU_PHI_Q0)
    b1 = mul_add_wide(GELU_PHI_Q3, z, GELU_PHI_Q2)
    b2 = mul_add_wide(GELU_PHI_Q5, z, GELU_PHI_Q4)
    b3 = mul_add_wide(GELU_PHI_Q7, z, GELU_PHI_Q6)
    b4 = mul_add_wide(GELU_PHI_Q9, z, GELU_PHI_Q8)
    b5 = mul_add_wide(GELU_PHI_Q11, z, GELU_PHI_Q10)
    q0 = mul_add_wide(b1, z2, b0)
    q1 = mul_add_wide(b3, z2, b2)
    q2 = mul_add_wide(b5, z2, b4)
    q = mul_add_wide(q2, z4 * z4, mul_add_wide(q1, z4, q0))
    ex = exp_wide(-0.5 * (xc * xc))
    c = ex * (q * inv)
    return (c if xc < 0.0 else 1.0 - c), ex


def gelu_exact_wide(xw):
    return xw * gelu_phi_wide(xw)[0]


GELU_A = 1.5957691216057308  # 2 sqrt(2 / pi)
GELU_B = 0.07135481627260025  # 2 sqrt(2 / pi) 0.044715


def gelu_tanh_sigmoid_wide(xw):
    """(s, s (1 - s)) for s = sigmoid(v), v = x (A + B x^2), from e = exp(-|v|): s = q or e q,
    s (1 - s) = e q^2, q = 1 / (1 + e)."""
    v = xw * (GELU_A + GELU_B * (xw * xw))
    e = exp_wide(-abs(v))
    q = 1.0 / (1.0 + e)
    return (q if v >= 0.0 else e * q), e * q * q


def gelu_tanh_wide(xw):
    s, sd = gelu_tanh_sigmoid_wide(xw)
    return xw * s


def gelu_clamp_wide(x):
    xw = W(x)
    return GELU_TAIL if xw > GELU_TAIL else (-GELU_TAIL if xw < -GELU_TAIL else xw)


def gelu(x, approximate):
    return F(gelu_wide(x, approximate))


# gelu' (both forms) crosses zero near -0.752, where its two terms cancel: gelu_phi_wide's
# and exp_wide's ~1e-9 relative error became up to ~4,600 float32 ULP within ~0.01 of the zero
# (found by benchmarks/tools/derivative_zeros.py's measurements); within 0.05, h p(h) in float64
GELU_D_WIDE_ROOT_HI = -0.7517915246935645
GELU_D_WIDE_ROOT_LO = 1.4956759177009883e-17
GELU_D_WIDE_NEAR_LO = -0.8017915246935645
GELU_D_WIDE_NEAR_HI = -0.7017915246935644


def gelu_exact_derivative_near_root_wide(x):
    """h p(h), h = x - x0: degree 5, within 5.5e-12 relative on x0 + [-0.05, 0.05]
    (benchmarks/tools/derivative_zeros.py)."""
    h = (x - GELU_D_WIDE_ROOT_HI) - GELU_D_WIDE_ROOT_LO
    p = 0.019413283535434662
    p = mul_add_wide(p, h, -0.014754507895104836)
    p = mul_add_wide(p, h, -0.11400822542621093)
    p = mul_add_wide(p, h, -0.018199692347443085)
    p = mul_add_wide(p, h, 0.3882849829894588)
    p = mul_add_wide(p, h, 0.43149399231626195)
    return p * h


GELU_TANH_D_WIDE_ROOT_HI = -0.7524614220710163
GELU_TANH_D_WIDE_ROOT_LO = 3.635560509207687e-17
GELU_TANH_D_WIDE_NEAR_LO = -0.8024614220710163
GELU_TANH_D_WIDE_NEAR_HI = -0.7024614220710163


def gelu_tanh_derivative_near_root_wide(x):
    """h p(h), h = x - x0: degree 5, within 6.4e-12 relative on x0 + [-0.05, 0.05]
    (benchmarks/tools/derivative_zeros.py)."""
    h = (x - GELU_TANH_D_WIDE_ROOT_HI) - GELU_TANH_D_WIDE_ROOT_LO
    p = 0.019673226998084544
    p = mul_add_wide(p, h, -0.016599609149125883)
    p = mul_add_wide(p, h, -0.11394447456689176)
    p = mul_add_wide(p, h, -0.015782872005989684)
    p = mul_add_wide(p, h, 0.38751844613460645)
    p = mul_add_wide(p, h, 0.4304000910274257)
    return p * h


def gelu_derivative_near_root_wide(xw, d, approximate):
    """d (gelu'(x) in float64 for a float32 result), or the polynomial about the zero when x is
    within 0.05 of it."""
    tanh_form = approximate != 0.0
    near = (gelu_tanh_derivative_near_root_wide(xw) if tanh_form
            else gelu_exact_derivative_near_root_wide(xw))
    lo = GELU_TANH_D_WIDE_NEAR_LO if tanh_form else GELU_D_WIDE_NEAR_LO
    hi = GELU_TANH_D_WIDE_NEAR_HI if tanh_form else GELU_D_WIDE_NEAR_HI
    return near if (xw >= lo and xw <= hi) else d


def gelu_derivative(x, approximate):
    xc = gelu_clamp_wide(x)
    d = (gelu_tanh_both_wide(xc) if approximate != 0.0 else gelu_exact_both_wide(xc))[1]
    d = gelu_derivative_near_root_wide(xc, d, approximate)
    return ONE if x > GELU_TAIL else (ZERO if x < -GELU_TAIL else F(d))


def gelu_exact_both_wide(xw):
    # (x Phi(x), Phi(x) + x phi(x)), phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
    phi, ex = gelu_phi_wide(xw)
    return xw * phi, phi + xw * (GELU_INV_SQRT_2PI * ex)


def gelu_tanh_both_wide(xw):
    # (x s, s + x s (1 - s) v'), v' = A + 3 B x^2
    s, sd = gelu_tanh_sigmoid_wide(xw)
    return xw * s, s + xw * sd * (GELU_A + 3.0 * GELU_B * (xw * xw))


def gelu_wide(x, approximate):
    """gelu(x) in float64, not rounded to float32 (gelu rounds it): geglu multiplies it by its
    second operand, and a product that is normal must stay accurate where gelu(x) alone is
    subnormal.  x beyond +-GELU_TAIL: x and 0."""
    xc = gelu_clamp_wide(x)
    v = gelu_tanh_wide(xc) if approximate != 0.0 else gelu_exact_wide(xc)
    return W(x) if x > GELU_TAIL else (0.0 if x < -GELU_TAIL else v)


def gelu_and_derivative_wide(x, approximate):
    """(gelu(x), gelu'(x)) in float64, not rounded (geglu's backward; gelu_and_derivative
    rounds them)."""
    xc = gelu_clamp_wide(x)
    v, d = gelu_tanh_both_wide(xc) if approximate != 0.0 else gelu_exact_both_wide(xc)
    d = gelu_derivative_near_root_wide(xc, d, approximate)
    big = x > GELU_TAIL
    small = x < -GELU_TAIL
    return (W(x) if big else (0.0 if small else v)), (1.0 if big else (0.0 if small else d))


def gelu_and_derivative(x, approximate):
    # one exp (and one erfc) for both results: the fused form
    v, d = gelu_and_derivative_wide(x, approximate)
    return F(v), F(d)
