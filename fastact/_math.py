"""Scalar formulas, written once.

Every elementwise op ``NAME`` defines here, as plain scalar Python functions:

``NAME(x, *params)``                  the value
``NAME_derivative(x, *params)``       dy/dx
``NAME_and_derivative(x, *params)``   ``(y, dy/dx)`` sharing work (optional; else both are called)
``NAME_derivative_from_y(y, *params)`` dy/dx from the output (ops whose registry entry allows ``y=``)

The backends only supply loops around them:

* ``kernels/numba_cpu.py`` compiles each function with ``numba.njit(inline='always')``;
* ``setup.py`` copies each function body into the Cython kernels as a
  ``cdef inline double NAME(double x, ...) noexcept nogil`` function (so the body must stay in
  the common subset of Python and Cython: arithmetic, comparisons, conditional expressions,
  calls to the libm functions imported below (same names as in ``libc.math``), to other
  functions of this module, and module-level float constants; every value is a
  C double; functions named ``*_and_derivative`` return a pair);
* ``kernels/numpy_ref.py`` is an independent vectorised twin used as the test oracle.

Conventions shared by all formulas (DESIGN.md sections 3 and 4):

* NaN propagates, also through derivatives: a kink test ``x > 0`` is written so that NaN takes
  neither branch (see :func:`_step`).
* Derivatives at a kink follow PyTorch: relu'(0) = 0, leaky_relu'(0) = negative_slope,
  elu'(0) = alpha.
* Stable forms: sigmoid from ``exp(-|x|)`` (never overflows), elu via ``expm1``, tanh' as
  sech^2 from ``exp(-2|x|)`` (no cancellation in ``1 - tanh^2`` for large |x|).
"""

from math import copysign, fabs, ldexp


# --- exp: range reduction + polynomial + exponent bits (DESIGN.md section 5) ------------------
# libm's exp is a scalar call that stops LLVM and gcc from vectorising a loop; this one is
# straight-line arithmetic, so the loops around it compile to AVX-512/AVX2 code.  Measured with
# a Numba float32 sigmoid loop, 1e7 elements, one thread: 38 ms instead of 142 ms with math.exp.
# Accuracy: max 1.15 ULP over 4e6 random points in [-750, 712] against np.longdouble, exact
# overflow to inf, underflow through the subnormals to 0, NaN kept.

EXP_LOG2E = 1.4426950408889634
EXP_LN2_HI = 6.93145751953125e-1  # few mantissa bits: k * EXP_LN2_HI is exact for |k| < 2^37
EXP_LN2_LO = 1.42860682030941723212e-6
EXP_ROUND = 6755399441055744.0  # 1.5 * 2^52: (v + EXP_ROUND) - EXP_ROUND rounds v to an integer
EXP_HI = 709.79  # exp overflows above 709.7827
# e^x is 0 below -745.1332; the clamp sits lower so that a product with e^x applied factor by
# factor (exp_factors: the exact gelu multiplies it by up to ~16 before the powers of two) is
# still 0 wherever the true product is (at -745.2 such a product came out as a few subnormals
# where it should be 0, found by tests/test_accuracy.py: gelu_backward's grad = inf gave inf
# instead of inf * 0 = NaN at x = -39.97).  e^x alone gives the same results either way.
EXP_LO = -760.0


def pow2(k):
    """2.0 ** k for an integer-valued k in [-1022, 1023].

    A backend primitive: the compiled backends build it from exponent bits (Numba: an LLVM
    bitcast intrinsic in ``numba_cpu``; Cython: a C union in the template); this Python body is
    the reference meaning.
    """
    return ldexp(1.0, int(k))


def mul_add(a, b, c):
    """a * b + c for polynomial evaluation: fused (one rounding) where the CPU has FMA, else a
    multiplication and an addition.  Either is within every bound that uses it.

    A backend primitive: Numba uses LLVM's ``llvm.fmuladd`` (fused on FMA hardware), Cython C's
    ``fma()`` when the compiler targets FMA (``__FMA__``) and ``a * b + c`` otherwise, CUDA
    ``cuda.fma``; this Python body is the unfused reference.  The Horner steps of the
    polynomial helpers use it, so Numba emits one FMA per step as gcc's default contraction
    already did in the Cython build (Cython built with ``-ffp-contract=off`` ran sigmoid
    float32, 1e6 elements, in 1.82 instead of 1.26 ms).  Measured on Numba, 1e6 elements,
    2 threads, alternating runs of the two versions: float64 gelu 14.2 -> 10.8 ms, softplus
    4.4 -> 3.3 ms, silu 2.25 -> 1.7 ms, tanh 2.3 -> 1.85 ms; float32 within noise except tanh
    (2.0 -> 1.95 ms) and elu (1.6 -> 1.4 ms).  It also brings the two backends' float64 results
    to bitwise agreement for most elements (sigmoid: 47,673 of 1e6 differed, now 6).
    """
    return a * b + c


def exp_unit(r):
    """e^r for |r| <= ln2 / 2 by its Taylor series to r^13 (truncation < 4e-18 relative),
    Horner form: the polynomial of exp_poly and exp_poly_nonpositive."""
    p = 1.0 / 6227020800.0
    p = mul_add(p, r, 1.0 / 479001600.0)
    p = mul_add(p, r, 1.0 / 39916800.0)
    p = mul_add(p, r, 1.0 / 3628800.0)
    p = mul_add(p, r, 1.0 / 362880.0)
    p = mul_add(p, r, 1.0 / 40320.0)
    p = mul_add(p, r, 1.0 / 5040.0)
    p = mul_add(p, r, 1.0 / 720.0)
    p = mul_add(p, r, 1.0 / 120.0)
    p = mul_add(p, r, 1.0 / 24.0)
    p = mul_add(p, r, 1.0 / 6.0)
    p = mul_add(p, r, 0.5)
    p = mul_add(p, r, 1.0)
    return mul_add(p, r, 1.0)


def exp_factors(x):
    """(p, s1, s2) with e^x = p s1 s2, s1 and s2 powers of two: a product with e^x applied
    factor by factor, p first, is rounded once where e^x alone would be subnormal (the exact
    gelu's tail)."""
    # clamp (NaN fails both tests and stays NaN), then x = k ln2 + r with |r| <= ln2 / 2
    xc = EXP_HI if x > EXP_HI else (EXP_LO if x < EXP_LO else x)
    k = (xc * EXP_LOG2E + EXP_ROUND) - EXP_ROUND
    r = (xc - k * EXP_LN2_HI) - k * EXP_LN2_LO
    # 2^k as two factors, so subnormal results are rounded once, by the last multiplication
    k1 = (k * 0.5 + EXP_ROUND) - EXP_ROUND
    return exp_unit(r), pow2(k1), pow2(k - k1)


def exp_poly(x):
    p, s1, s2 = exp_factors(x)
    return p * s1 * s2


EXP_NORMAL_LO = -708.3964185322642  # just below ln(2^-1022) = -708.39641853226410...


def exp_poly_nonpositive(x):
    """e^x for x >= EXP_NORMAL_LO (a positive x counts as 0), and 0 below, where e^x is under
    the smallest normal: the float64 exps of the softmax rows (divided by a sum >= 1, or only
    summed, so a flushed exp changes results only below DESIGN.md section 4's absolute floor).
    exp_poly without the upper clamp and with one power-of-two factor (its Taylor polynomial,
    so the same accuracy where the result is normal); NaN kept.  As _math32.exp_nonpositive
    for float32.  The CUDA backend maps it to libdevice's exp (a ``*_poly_*`` name)."""
    xc = 0.0 if x > 0.0 else x
    low = x < EXP_NORMAL_LO
    xs = EXP_NORMAL_LO if low else xc
    k = (xs * EXP_LOG2E + EXP_ROUND) - EXP_ROUND
    r = (xs - k * EXP_LN2_HI) - k * EXP_LN2_LO
    v = exp_unit(r) * pow2(k)
    return 0.0 if low else v


# --- expm1 and log1p: branch-free, so the loops around them vectorise too -------------------
# libm's expm1 and log1p are scalar calls; the ops that need them (elu, selu, celu: expm1;
# softplus, log_sigmoid, BCE with logits: log1p of exp(-|x|)) ran at the speed of those calls
# (benchmark group elementwise, float32 1e7, numba, 2 threads: elu 63 ms, softplus 186 ms before).

def expm1_poly(x):
    """e^x - 1 to ~1.5 ULP for every x (NaN kept, +inf above 709.78, -1 below -38).

    exp_poly's reduction x = k ln2 + r, |r| <= ln2 / 2; expm1(r) = r + r^2 q(r) by its Taylor
    series to r^13; then e^x - 1 = 2^k expm1(r) + (2^k - 1), evaluated as
    (2^k1 expm1(r) + (2^k1 - 2^-k2)) 2^k2 with k = k1 + k2: the powers of two are exact, the
    sum is rounded once, and neither factor overflows before the result does.
    """
    xc = EXP_HI if x > EXP_HI else (EXP_LO if x < EXP_LO else x)
    k = (xc * EXP_LOG2E + EXP_ROUND) - EXP_ROUND
    r = (xc - k * EXP_LN2_HI) - k * EXP_LN2_LO
    q = 1.0 / 6227020800.0
    q = mul_add(q, r, 1.0 / 479001600.0)
    q = mul_add(q, r, 1.0 / 39916800.0)
    q = mul_add(q, r, 1.0 / 3628800.0)
    q = mul_add(q, r, 1.0 / 362880.0)
    q = mul_add(q, r, 1.0 / 40320.0)
    q = mul_add(q, r, 1.0 / 5040.0)
    q = mul_add(q, r, 1.0 / 720.0)
    q = mul_add(q, r, 1.0 / 120.0)
    q = mul_add(q, r, 1.0 / 24.0)
    q = mul_add(q, r, 1.0 / 6.0)
    q = mul_add(q, r, 0.5)
    p = r + (r * r) * q
    k1 = (k * 0.5 + EXP_ROUND) - EXP_ROUND
    t1 = pow2(k1)
    t2 = pow2(k - k1)
    v = (t1 * p + (t1 - pow2(k1 - k))) * t2
    return x if fabs(x) < 5.551115123125783e-17 else v  # |x| < 2^-54: x itself (-0 and tiny)


LOG1P_LN2_HI = 6.93147180369123816490e-01
LOG1P_LN2_LO = 1.90821492927058770002e-10


def log_series(hs):
    """2 atanh(s) - 2s for hs = 2s, |s| <= 0.2: the series (2s) s^2 (1/3 + s^2 / 5 + ... +
    s^20 / 23) (truncation < 2e-17 relative to 2 atanh(s)).  The shared tail of log1p_poly_unit
    and log_poly."""
    s = 0.5 * hs
    z = s * s
    q = 1.0 / 23.0
    q = mul_add(q, z, 1.0 / 21.0)
    q = mul_add(q, z, 1.0 / 19.0)
    q = mul_add(q, z, 1.0 / 17.0)
    q = mul_add(q, z, 1.0 / 15.0)
    q = mul_add(q, z, 1.0 / 13.0)
    q = mul_add(q, z, 1.0 / 11.0)
    q = mul_add(q, z, 1.0 / 9.0)
    q = mul_add(q, z, 1.0 / 7.0)
    q = mul_add(q, z, 1.0 / 5.0)
    q = mul_add(q, z, 1.0 / 3.0)
    return hs * z * q


def log1p_poly_unit(u):
    """log(1 + u) for u in [0, 1] (the ``log1p(exp(-|x|))`` of softplus and friends).

    log(1 + u) = j ln2 + 2 atanh(s) with, for u <= 1/2, j = 0 and s = u / (2 + u) (<= 0.2),
    else j = 1 and s = (u - 1) / (u + 3) (in (-1/7, 0]), both exact rewritings of
    (m - 1) / (m + 1) for 1 + u = 2^j m that use u itself (no rounded 1 + u); the atanh series
    to s^23 (truncation < 2e-17 relative).  The error in 2 + u is corrected to first order.
    """
    big = u > 0.5
    num = u - 1.0 if big else u  # exact (Sterbenz) for u in (1/2, 1]
    d = u + 3.0 if big else u + 2.0
    de = ((3.0 if big else 2.0) - d) + u  # d's rounding error: d + de = 2 + u (or 3 + u)
    hs = (num + num) / d  # 2 s, formed directly so that a subnormal u keeps its bits
    hs = hs - hs * (de / d)
    j = 1.0 if big else 0.0
    return j * LOG1P_LN2_HI + ((log_series(hs) + j * LOG1P_LN2_LO) + hs)


def exponent(x):
    """The exponent e of a positive normal float64 x = m 2^e, 1 <= m < 2, as a float64.

    A backend primitive (with :func:`significand`): the compiled backends read the exponent
    bits (Numba: an LLVM bitcast in ``numba_cpu``; Cython: a C union in the template); this
    Python body is the reference meaning.
    """
    from math import frexp

    return float(frexp(x)[1] - 1)


def significand(x):
    """The m of a positive normal float64 x = m 2^e, 1 <= m < 2 (a backend primitive, see
    :func:`exponent`)."""
    from math import frexp

    return 2.0 * frexp(x)[0]


LOG_TINY = 2.2250738585072014e-308  # the smallest normal float64
LOG_SCALE = 18014398509481984.0  # 2^54: a subnormal times it is normal
LOG_SQRT2 = 1.4142135623730951
LOG_MAX = 1.7976931348623157e308  # the largest float64; LOG_MAX * 2.0 is inf


def log_poly(x):
    """log(x) for float64 x, branch-free (libm's log is a call that keeps loops scalar).

    x = m 2^e with m in [sqrt(1/2), sqrt(2)) (subnormal x scaled by 2^54 first), then
    log(x) = e ln2 + 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172, with m - 1 exact and the
    rounding of m + 1 corrected to first order (as log1p_poly_unit).  Measured max 1.50 ULP
    against np.longdouble (tests/test_vector_math.py).  log(0) = -inf, log(inf) = inf, NaN
    for x < 0 and NaN.  Numba, 1e7 float64 in (0, 1), 1 thread: 3.1 ms, math.log 8.0 ms.
    """
    inf = LOG_MAX * 2.0
    tiny = x < LOG_TINY
    ok = x > 0.0 and x <= LOG_MAX
    xs = (x * LOG_SCALE if tiny else x) if ok else 1.0  # (the bit primitives see a normal)
    e = exponent(xs)
    m = significand(xs)
    e = e - 54.0 if tiny else e
    big = m > LOG_SQRT2
    m = 0.5 * m if big else m
    e = e + 1.0 if big else e
    f = m - 1.0  # exact (Sterbenz)
    d = f + 2.0
    de = (2.0 - d) + f  # d's rounding error
    hs = (f + f) / d
    hs = hs - hs * (de / d)
    v = e * LOG1P_LN2_HI + ((log_series(hs) + e * LOG1P_LN2_LO) + hs)
    return v if ok else (-inf if x == 0.0 else (x if x > 0.0 else inf - inf))


def log1p_poly(u):
    """log(1 + u) for float64 u >= -1, branch-free: log_poly(w) + (u - (w - 1)) / w with
    w = 1 + u rounded, the second term correcting w's rounding to first order (Goldberg's
    log1p).  Measured max 1.82 ULP against np.longdouble.  |u| < 2^-54: u itself (-0.0 and
    subnormals kept); u = -1: -inf; u < -1 and NaN: NaN; inf: inf."""
    w = 1.0 + u
    c = (u - (w - 1.0)) / w if w > 0.0 else 0.0
    v = log_poly(w) + c
    return u if fabs(u) < 5.551115123125783e-17 else (v if w <= LOG_MAX else w)


def _step(x, at_most_zero, above_zero):
    """``above_zero`` if x > 0, ``at_most_zero`` if x <= 0, and NaN (x itself) if x is NaN."""
    return above_zero if x > 0.0 else (at_most_zero if x <= 0.0 else x)


# --- sigmoid: 1 / (1 + exp_poly(-x)) ---------------------------------------------------------------
# With e = exp_poly(-|x|) in (0, 1]: sigmoid(x) = 1/(1+e) for x >= 0 and e/(1+e) for x < 0, so exp
# never overflows and the tiny tail keeps full relative accuracy.

def sigmoid(x):
    e = exp_poly(-fabs(x))
    r = 1.0 / (1.0 + e)
    return r if x >= 0.0 else e * r


def sigmoid_derivative(x):
    # s * (1 - s) = e / (1 + e)^2, symmetric in x; no cancellation in either tail
    e = exp_poly(-fabs(x))
    r = 1.0 / (1.0 + e)
    return e * r * r


def sigmoid_and_derivative(x):
    e = exp_poly(-fabs(x))
    r = 1.0 / (1.0 + e)
    d = e * r * r
    return (r if x >= 0.0 else e * r), d


def sigmoid_derivative_from_y(y):
    return y * (1.0 - y)


# --- tanh ---------------------------------------------------------------------------------------
# glibc's tanh is up to ~2.0 ULP off in float64 (e.g. x = 0.25325802860574065), over the 2 ULP
# bound.  Cephes' scheme: for |x| < 0.625 a rational approximation x + x z P(z)/Q(z), z = x^2
# (measured max 0.81 ULP over 2e6 random points against np.longdouble); above, 1 - 2e/(1+e)
# with e = exp_poly(-2|x|) (max 1.41 ULP, no cancellation since e <= 0.29).  Both branches are
# computed and one selected, so the loop stays branch-free.
TANH_P0 = -9.64399179425052238628e-1
TANH_P1 = -9.92877231001918586564e1
TANH_P2 = -1.61468768441708447952e3
TANH_Q0 = 1.12811678491632931402e2
TANH_Q1 = 2.23548839060100448583e3
TANH_Q2 = 4.84406305325125486048e3


def tanh(x):
    a = fabs(x)
    z = x * x
    p = (TANH_P0 * z + TANH_P1) * z + TANH_P2
    q = ((z + TANH_Q0) * z + TANH_Q1) * z + TANH_Q2
    small = x + x * (z * p / q)
    e = exp_poly(-2.0 * a)
    large = copysign(1.0 - 2.0 * e / (1.0 + e), x)
    return small if a < 0.625 else large


def tanh_derivative(x):
    # 1 - tanh(x)^2 = sech(x)^2 = 4 e / (1 + e)^2 with e = exp_poly(-2|x|): accurate in the tails,
    # where 1 - tanh^2 would cancel to 0 long before the true value underflows.
    e = exp_poly(-2.0 * fabs(x))
    q = 1.0 + e
    return 4.0 * e / (q * q)


def tanh_derivative_from_y(y):
    # (1 - y)(1 + y): 1 - y is exact for y in [0.5, 1] (Sterbenz), unlike 1 - y*y
    return (1.0 - y) * (1.0 + y)


# --- relu: max(x, 0) ----------------------------------------------------------------------------

def relu(x):
    return 0.0 if x <= 0.0 else x  # NaN fails the test and is returned


def relu_derivative(x):
    return _step(x, 0.0, 1.0)


def relu_derivative_from_y(y):
    return _step(y, 0.0, 1.0)


# --- leaky_relu: x if x > 0 else negative_slope * x ---------------------------------------------

def leaky_relu(x, negative_slope):
    return x if x > 0.0 else x * negative_slope


def leaky_relu_derivative(x, negative_slope):
    return _step(x, negative_slope, 1.0)


def leaky_relu_derivative_from_y(y, negative_slope):
    # valid for negative_slope >= 0, where y has the sign of x (registry: y_backward)
    return _step(y, negative_slope, 1.0)


# --- elu: x if x > 0 else alpha * (exp_poly(x) - 1) --------------------------------------------------

def elu(x, alpha):
    return x if x > 0.0 else alpha * expm1_poly(x)


def elu_derivative(x, alpha):
    return 1.0 if x > 0.0 else alpha * exp_poly(x)  # NaN stays NaN


def elu_and_derivative(x, alpha):
    if x > 0.0:
        return x, 1.0
    return alpha * expm1_poly(x), alpha * exp_poly(x)


def elu_derivative_from_y(y, alpha):
    # for x <= 0: y = alpha (e^x - 1), so alpha e^x = y + alpha (valid for alpha >= 0)
    return 1.0 if y > 0.0 else y + alpha


# --- the PyTorch catalogue (issue 5) -------------------------------------------------------------
# Tails: where a product like x * sigmoid(x) would be (+-inf) * 0 = NaN at x = +-inf, the formulas
# select the limit for |x| beyond the point where the true value is 0 or x in float64
# (|x| > TAIL); NaN fails every comparison and goes through the formula, so it propagates.
TAIL = 800.0


def silu(x):
    e = exp_poly(-fabs(x))
    r = x / (1.0 + e)
    v = r if x >= 0.0 else r * e
    return (x if x > 0.0 else 0.0) if fabs(x) > TAIL else v


# silu' crosses zero at x0 = -1.2785: within 0.1 of it, h p(h) (h = x - x0, exactly)
SILU_D_ROOT_HI = -1.2784645427610737
SILU_D_ROOT_LO = -1.0946994183093437e-16
SILU_D_NEAR_LO = -1.3784645427610738
SILU_D_NEAR_HI = -1.1784645427610736


def silu_derivative_near_root(x):
    """h p(h), h = x - x0: degree 9, within 2.7e-17 relative on x0 + [-0.1, 0.1]
    (benchmarks/tools/derivative_zeros.py)."""
    h = (x - SILU_D_ROOT_HI) - SILU_D_ROOT_LO
    p = -2.967490396992753e-05
    p = mul_add(p, h, -4.097855931535944e-05)
    p = mul_add(p, h, 0.00018570673056222373)
    p = mul_add(p, h, 0.0007985225215159298)
    p = mul_add(p, h, 0.000126627411913386)
    p = mul_add(p, h, -0.006606589140639698)
    p = mul_add(p, h, -0.015222655223190322)
    p = mul_add(p, h, 0.018874814223785168)
    p = mul_add(p, h, 0.1466487969969469)
    p = mul_add(p, h, 0.2178117057198001)
    return p * h


def silu_derivative(x):
    # s + x s (1 - s) with s = sigmoid(x), e = exp(-|x|), q = 1 / (1 + e): q (1 + x e q) for
    # x >= 0 and e q^2 ((1 + x) + e) for x < 0, where silu' crosses zero (x0 = -1.2785): 1 + x is
    # exact on [-2, -0.5] (Sterbenz), so the cancellation there amplifies only e's rounding
    # (s + x e q^2 cancelled two rounded terms: 4-60 ULP on x0 +- [0.1, 0.6])
    e = exp_poly(-fabs(x))
    q = 1.0 / (1.0 + e)
    d = q * (1.0 + x * e * q) if x >= 0.0 else (e * (q * q)) * ((1.0 + x) + e)
    # within 0.1 of the zero even that is off by 5-2,000 ULP (and more next to it): there the
    # polynomial about x0, within 3 ULP
    near = silu_derivative_near_root(x)
    d = near if (x >= SILU_D_NEAR_LO and x <= SILU_D_NEAR_HI) else d
    return (1.0 if x > 0.0 else 0.0) if fabs(x) > TAIL else d


def softplus(x, beta, limit):
    # PyTorch: x where beta * x > threshold (= limit), else log1p(exp(beta x)) / beta, computed
    # stably as (max(bx, 0) + log1p(exp(-|bx|))) / beta
    bx = beta * x
    v = ((bx if bx > 0.0 else 0.0) + log1p_poly_unit(exp_poly(-fabs(bx)))) / beta
    return x if bx > limit else v


def softplus_derivative(x, beta, limit):
    bx = beta * x
    return 1.0 if bx > limit else sigmoid(bx)


def log_sigmoid(x):
    # -softplus(-x) = min(x, 0) - log1p(exp(-|x|))
    return (x if x < 0.0 else 0.0) - log1p_poly_unit(exp_poly(-fabs(x)))


def log_sigmoid_derivative(x):
    return sigmoid(-x)


def softsign(x):
    a = fabs(x)
    return copysign(1.0, x) if a > 1e300 else x / (1.0 + a)


def softsign_derivative(x):
    q = 1.0 + fabs(x)
    return 1.0 / (q * q)


def tanhshrink_series(x):
    """x - tanh(x) for |x| < 0.625 without the cancellation of the subtraction.  |x| < 0.1:
    the Taylor series t / 3 + t z S(z) with t = x^3 (t / 3 carries the value to ~1.5 ULP, the
    rest is a small correction; truncation below 1e-18 relative).  Otherwise the Cephes
    rational tanh(x) - x = x z P(z) / Q(z)."""
    z = x * x
    t = x * z
    taylor = t / 3.0 + t * z * (-2.0 / 15.0 + z * (17.0 / 315.0 + z * (-62.0 / 2835.0 + z * (
        1382.0 / 155925.0 + z * (-21844.0 / 6081075.0 + z * (929569.0 / 638512875.0))))))
    p = (TANH_P0 * z + TANH_P1) * z + TANH_P2
    q = ((z + TANH_Q0) * z + TANH_Q1) * z + TANH_Q2
    return taylor if fabs(x) < 0.1 else -(x * (z * p / q))


def tanhshrink(x):
    # f(x) = x - tanh(x).  |x| < 0.625: tanhshrink_series.  On [0.625, 1.25) the subtraction
    # still loses 3+ bits (tanh(x) / f(x) is 7.9 at 0.625: 10 ULP measured), so double the
    # argument instead: with h = x / 2 and t = tanh(h) = h - f(h), f(x) = 2 f(h) + 2 t^3 / (1 +
    # t^2), a sum of same-signed terms (from tanh(2h) = 2t / (1 + t^2)): 2.8 ULP measured
    # against mpmath.  From 1.25 on, x - tanh(x) is within 1.7 ULP.  NaN and inf take the last.
    # The three branches are all evaluated (branch-free vector code), so they share work: one
    # series, at x or at h = x / 2, and from 1.25 on only tanh's exp branch.  The same values
    # as evaluating the series twice and all of tanh, bitwise; 1e6 float32, 2 threads:
    # numba 2.32 -> 1.36 ms, cython 1.59 -> 1.32 ms.
    a = fabs(x)
    mid = a >= 0.625
    u = 0.5 * x if mid else x
    f = tanhshrink_series(u)
    t = u - f
    doubled = 2.0 * f + 2.0 * (t * t * t) / (1.0 + t * t)
    e = exp_poly(-2.0 * a)
    large = x - copysign(1.0 - 2.0 * e / (1.0 + e), x)
    return (doubled if mid else f) if a < 1.25 else large


def tanhshrink_derivative(x):
    t = tanh(x)
    return t * t


SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def selu(x):
    return SELU_SCALE * (x if x > 0.0 else SELU_ALPHA * expm1_poly(x))


def selu_derivative(x):
    # x <= 0 takes the exponential branch: selu'(0) = scale * alpha (PyTorch's left branch)
    return SELU_SCALE if x > 0.0 else SELU_SCALE * SELU_ALPHA * exp_poly(x)


def selu_derivative_from_y(y):
    # y = scale alpha (e^x - 1) for x <= 0, so scale alpha e^x = y + scale alpha
    return SELU_SCALE if y > 0.0 else y + SELU_SCALE * SELU_ALPHA


def celu(x, alpha):
    return x if x > 0.0 else alpha * expm1_poly(x / alpha)


def celu_derivative(x, alpha):
    return 1.0 if x > 0.0 else exp_poly(x / alpha)


def celu_derivative_from_y(y, alpha):
    # y = alpha (e^(x/alpha) - 1), so e^(x/alpha) = y / alpha + 1 (valid for alpha > 0)
    return 1.0 if y > 0.0 else y / alpha + 1.0


MISH_CAP = 25.0


def mish(x):
    # x tanh(softplus(x)) with tanh(log(1 + e)) = n / (n + 2), n = e (e + 2), e = exp(x):
    # no cancellation anywhere.  Beyond MISH_CAP the result is x (and the derivative 1): there
    # mish(x) / x - 1 ~ -2 exp(-2x) and mish'(x) - 1 ~ (4x - 2) exp(-2x) are below 2^-60 (the
    # derivative's term is still 3 ULP of float64 at x = 20)
    e = exp_poly(x if x < MISH_CAP else MISH_CAP)
    n = e * (e + 2.0)
    v = x * (n / (n + 2.0))
    return x if x > MISH_CAP else (0.0 if x < -TAIL else v)


# mish' crosses zero at x0 = -1.1924: within 0.1 of it, h p(h) (as silu)
MISH_D_ROOT_HI = -1.1924312145154952
MISH_D_ROOT_LO = -4.8484829848031044e-17
MISH_D_NEAR_LO = -1.2924312145154953
MISH_D_NEAR_HI = -1.092431214515495


def mish_derivative_near_root(x):
    """h p(h), h = x - x0: degree 10, within 5.8e-17 relative on x0 + [-0.1, 0.1]
    (benchmarks/tools/derivative_zeros.py)."""
    h = (x - MISH_D_ROOT_HI) - MISH_D_ROOT_LO
    p = -5.5802475656579884e-05
    p = mul_add(p, h, -4.243582592999468e-05)
    p = mul_add(p, h, 0.0002541290978086034)
    p = mul_add(p, h, 0.0009898228409274744)
    p = mul_add(p, h, 0.0010924055421118962)
    p = mul_add(p, h, -0.0033606849477464487)
    p = mul_add(p, h, -0.01582112656173547)
    p = mul_add(p, h, -0.020271822716647247)
    p = mul_add(p, h, 0.04190782104360988)
    p = mul_add(p, h, 0.20473126408010583)
    p = mul_add(p, h, 0.2669479140495345)
    return p * h


def mish_derivative(x):
    # tanh(sp) + x sech^2(sp) sigmoid(x), sech^2(sp) = (4n + 4) / (n + 2)^2, sigmoid = e / (1 + e)
    # = e b / q^2, b = (e + 2) q + 4 x (1 + e) = 4 (1 + x) + e (6 + 4 x) + e^2 (4 + e): zero at
    # x0 = -1.1924, where 1 + x is exact (Sterbenz) and only e's rounding is amplified (the sum
    # of two rounded terms n / q + ... was 7-10 ULP off on [-3, -1.5] and worse nearer x0)
    e = exp_poly(x if x < MISH_CAP else MISH_CAP)
    q = e * (e + 2.0) + 2.0
    b = (4.0 * (1.0 + x) + e * (6.0 + 4.0 * x)) + (e * e) * (4.0 + e)
    d = e * (b / (q * q))
    near = mish_derivative_near_root(x)
    d = near if (x >= MISH_D_NEAR_LO and x <= MISH_D_NEAR_HI) else d
    return 1.0 if x > MISH_CAP else (0.0 if x < -TAIL else d)


def relu6(x):
    return 0.0 if x <= 0.0 else (6.0 if x >= 6.0 else x)


def relu6_derivative(x):
    return _step(x, 0.0, 1.0) * _step(6.0 - x, 0.0, 1.0)


def relu6_derivative_from_y(y):
    return _step(y, 0.0, 1.0) * _step(6.0 - y, 0.0, 1.0)


def hardtanh(x, min_val, max_val):
    return min_val if x <= min_val else (max_val if x >= max_val else x)


def hardtanh_derivative(x, min_val, max_val):
    # 1 strictly inside (min_val, max_val), 0 at and beyond the edges (PyTorch)
    return _step(x - min_val, 0.0, 1.0) * _step(max_val - x, 0.0, 1.0)


def hardtanh_derivative_from_y(y, min_val, max_val):
    return _step(y - min_val, 0.0, 1.0) * _step(max_val - y, 0.0, 1.0)


def hardsigmoid(x):
    # (x + 3) / 6 rather than x / 6 + 1/2, which cancels near x = -3 (x + 3 is exact there)
    return 0.0 if x <= -3.0 else (1.0 if x >= 3.0 else (x + 3.0) / 6.0)


def hardsigmoid_derivative(x):
    return _step(x + 3.0, 0.0, 1.0 / 6.0) * _step(3.0 - x, 0.0, 1.0)


def hardswish(x):
    return 0.0 if x <= -3.0 else (x if x >= 3.0 else x * (x + 3.0) / 6.0)


def hardswish_derivative(x):
    # PyTorch: 0 for x < -3, x / 3 + 1/2 for -3 <= x <= 3, 1 above; written (2x + 3) / 6, as
    # x / 3 + 1/2 cancels near x = -1.5
    return 0.0 if x < -3.0 else (1.0 if x > 3.0 else (2.0 * x + 3.0) / 6.0)


def hardshrink(x, lambd):
    return 0.0 if fabs(x) <= lambd else x


def hardshrink_derivative(x, lambd):
    return _step(fabs(x) - lambd, 0.0, 1.0)


def softshrink(x, lambd):
    return 0.0 if fabs(x) <= lambd else x - copysign(lambd, x)


def softshrink_derivative(x, lambd):
    return _step(fabs(x) - lambd, 0.0, 1.0)


def threshold(x, th, value):
    return value if x <= th else x  # NaN fails x <= th and propagates (PyTorch)


def threshold_derivative(x, th, value):
    return _step(x - th, 0.0, 1.0)


# --- gelu -----------------------------------------------------------------------------------
# approximate = 0 ('none'): x Phi(x) = x erfc(-x / sqrt2) / 2;  1 ('tanh'): x sigmoid(v) with
# v = 2 sqrt(2/pi) (x + 0.044715 x^3) (= x (1 + tanh(v / 2)) / 2, PyTorch's tanh form).
# Both lose accuracy as x -> -inf only through their arguments: a relative error d in erfc's
# argument t or in v becomes ~2 t^2 d or |v| d in the result (25 and 17 ULP at x = -5, 1800 at
# -30).  So t and v are computed with their rounding errors (double-double, from fma), and the
# error term is applied as a first-order correction: measured max ~2 ULP over [-40, 40].

GELU_TAIL = 40.0  # |x| > 40: gelu(x) = x or 0 in float64 in both forms (and the derivative 1 or 0)
GELU_SQRT1_2_HI = 0.7071067811865476
GELU_SQRT1_2_LO = -4.833646656726457e-17
GELU_TWO_OVER_SQRTPI = 1.1283791670955126
GELU_INV_SQRT_2PI = 0.3989422804014327
GELU_A_HI = 1.5957691216057308  # 2 sqrt(2 / pi) = A_HI + A_LO
GELU_A_LO = -9.96930880911092e-17
GELU_B_HI = 0.07135481627260025  # 2 sqrt(2 / pi) 0.044715 = B_HI + B_LO
GELU_B_LO = -6.175149918155315e-19


def fma(a, b, c):
    """a * b + c with one rounding.

    A backend primitive: Numba uses LLVM's ``llvm.fma``, Cython C's ``fma()``, CUDA
    ``cuda.fma``; this Python body is the reference meaning (exact rational arithmetic).
    """
    from fractions import Fraction
    from math import isfinite

    if not (isfinite(a) and isfinite(b) and isfinite(c)):
        return a * b + c
    return float(Fraction(a) * Fraction(b) + Fraction(c))


# --- erfc: branch-free for the exact gelu ---------------------------------------------------
# libm's erfc is a scalar call (exact gelu: 333 ms for 1e7 float32 on numba, 2 threads; the tanh
# form 29 ms).  erfc(a) = exp(-a^2) erfcx(a) for a >= 0, with erfcx from Weideman's rational
# expansion (SIAM J. Numer. Anal. 31, 1994): erfcx(a) = 2 p(Z) / (L + a)^2 + 1 / (sqrt(pi)
# (L + a)), Z = (L - a) / (L + a) in (-1, 1], p of degree 39 (N = 40, L = sqrt(N / sqrt 2)),
# coefficients from its FFT formula evaluated in 60-digit mpmath (script:
# benchmarks/tools/erfcx_coefficients.py); truncation below 1e-17 relative on [0, 30].
# exp(-a^2) carries a^2's rounding error (fma) as a first-order factor.  a < 0: 2 - erfc(-a).
ERFCX_L = 5.3182958969449885
ERFC_INV_SQRT_PI = 0.5641895835477563
ERFC_TWO_OVER_SQRT_PI = 1.1283791670955126


def erfc_poly(t):
    """erfc(t) for every t (NaN kept; 2 below -6, 0 above 27.3), max 5.6 ULP measured against
    mpmath (tests/test_vector_math.py).  |t| < 0.5: 1 - erf(t) from erf's Taylor series to t^25
    (truncation < 3e-18), where the expansion above loses bits (4.8 ULP at 0.52)."""
    a = fabs(t)
    a = 30.0 if a > 30.0 else a  # erfc(30) is 0 in float64; keeps inf out of the expansion
    u = a * a
    ue = fma(a, a, -u)
    e = exp_poly(-u) * (1.0 - ue) * erfcx_expansion(a)
    return erfc_series(t) if a < 0.5 else (e if t >= 0.0 else 2.0 - e)


def erfc_series(t):
    """1 - erf(t) from erf's Taylor series to t^25 (truncation < 3e-18 for |t| < 0.5)."""
    z = t * t
    q = 1.0 / 11975040000.0
    q = mul_add(q, z, -1.0 / 918086400.0)
    q = mul_add(q, z, 1.0 / 76204800.0)
    q = mul_add(q, z, -1.0 / 6894720.0)
    q = mul_add(q, z, 1.0 / 685440.0)
    q = mul_add(q, z, -1.0 / 75600.0)
    q = mul_add(q, z, 1.0 / 9360.0)
    q = mul_add(q, z, -1.0 / 1320.0)
    q = mul_add(q, z, 1.0 / 216.0)
    q = mul_add(q, z, -1.0 / 42.0)
    q = mul_add(q, z, 1.0 / 10.0)
    q = mul_add(q, z, -1.0 / 3.0)
    return 1.0 - ERFC_TWO_OVER_SQRT_PI * (t + t * (z * q))


def erfcx_expansion(a):
    """erfcx(a) = exp(a^2) erfc(a) for 0 <= a <= 30 from Weideman's expansion (N = 40)."""
    la = ERFCX_L + a
    z = (ERFCX_L - a) / la
    p = -1.899694947394927e-15
    p = mul_add(p, z, 1.128073562364402e-15)
    p = mul_add(p, z, 1.1357687198999241e-14)
    p = mul_add(p, z, -5.409310282882142e-15)
    p = mul_add(p, z, -7.074086260286855e-14)
    p = mul_add(p, z, 1.37256205867155e-14)
    p = mul_add(p, z, 4.5329666782606727e-13)
    p = mul_add(p, z, 1.2031458219387989e-13)
    p = mul_add(p, z, -2.907688342182867e-12)
    p = mul_add(p, z, -2.7276023158200452e-12)
    p = mul_add(p, z, 1.7714495214011192e-11)
    p = mul_add(p, z, 3.47272670930455e-11)
    p = mul_add(p, z, -9.055124450928292e-11)
    p = mul_add(p, z, -3.5632339865976533e-10)
    p = mul_add(p, z, 2.1086006347066517e-10)
    p = mul_add(p, z, 3.0177805400090707e-09)
    p = mul_add(p, z, 3.2497465180436973e-09)
    p = mul_add(p, z, -1.8315616783040462e-08)
    p = mul_add(p, z, -6.35177348504429e-08)
    p = mul_add(p, z, 1.4198642399935674e-08)
    p = mul_add(p, z, 5.912136951899494e-07)
    p = mul_add(p, z, 1.483566113220078e-06)
    p = mul_add(p, z, -1.0660138984947143e-06)
    p = mul_add(p, z, -1.8007447144750956e-05)
    p = mul_add(p, z, -5.591309264248318e-05)
    p = mul_add(p, z, -3.939363145489569e-05)
    p = mul_add(p, z, 0.0004398070159869668)
    p = mul_add(p, z, 0.0027054056330737914)
    p = mul_add(p, z, 0.010048186242783424)
    p = mul_add(p, z, 0.029202916471241867)
    p = mul_add(p, z, 0.07182361779074337)
    p = mul_add(p, z, 0.15504263802479495)
    p = mul_add(p, z, 0.29989437996150065)
    p = mul_add(p, z, 0.5266528988277086)
    p = mul_add(p, z, 0.8472174576593818)
    p = mul_add(p, z, 1.2563815675765133)
    p = mul_add(p, z, 1.7253830848179779)
    p = mul_add(p, z, 2.201513794878312)
    p = mul_add(p, z, 2.61605415276186)
    p = mul_add(p, z, 2.8996245093897053)
    return (2.0 * p / la + ERFC_INV_SQRT_PI) / la

def gelu_clamped(x):
    # NaN passes through (both tests fail)
    return GELU_TAIL if x > GELU_TAIL else (-GELU_TAIL if x < -GELU_TAIL else x)


def gelu_erfc_parts(x):
    """The pieces of erfc(t + te), t + te = -x / sqrt2 to ~2^-106 (te from fma and the
    constant's low part), for |x| <= GELU_TAIL: (t, te, a, g, e, s1, s2) with

    * erfc(t + te) = erfc(t) - te (2 / sqrt(pi)) exp(-t^2) (first order; te ~ 2^-53 t);
    * exp(-t^2) = e s1 s2 (e carries t^2's rounding error from fma as the factor 1 - ue; s1, s2
      powers of two, applied last where a result is tiny);
    * erfc(t) = erfc_series(t) for a = |t| < 0.5, e s1 s2 g for t >= 0.5 and 2 - e s1 s2 g
      for t <= -0.5, g = erfcx(a) (a at most 30).

    One exp serves the value, the correction and the derivative's phi(x) (it was three exps
    and, below -30, a Mills-ratio series with a division, where erfc(t) alone would be
    subnormal: the factors keep that tail normal now): float64 gelu 1e6 elements, 1 thread,
    Numba 9.3 -> 5.15 ms, its derivative 9.45 -> 6.6 ms.  The callers call erfc_series only in
    their |t| < 0.5 branch: scalar code (the Cython kernels, where gcc leaves this loop
    unvectorised) evaluates it only there."""
    t = -x * GELU_SQRT1_2_HI
    te = fma(-x, GELU_SQRT1_2_HI, -t) - x * GELU_SQRT1_2_LO
    a = fabs(t)
    a = 30.0 if a > 30.0 else a
    u = a * a
    ue = fma(a, a, -u)
    p, s1, s2 = exp_factors(-u)
    return t, te, a, erfcx_expansion(a), p * (1.0 - ue), s1, s2


def gelu_tanh_w(x):
    """w = A + B x^2 rounded (A = 2 sqrt(2/pi), B = 0.044715 A): tanh-gelu's v = x w."""
    return GELU_A_HI + GELU_B_HI * (x * x)


def gelu_tanh_w_error(x, w):
    """(A + B x^2) - w for the caller's own w (so a compiler that fused A + B x^2 into an fma
    there does not matter): Fast2Sum on A_HI + t, t = B_HI x^2, plus the rounding errors of t
    (fma) and the constants' low parts."""
    u = x * x
    ue = fma(x, x, -u)
    t = GELU_B_HI * u
    te = fma(GELU_B_HI, u, -t) + (GELU_B_HI * ue + GELU_B_LO * u)
    sum_error = (t - w) + GELU_A_HI if t >= GELU_A_HI else (GELU_A_HI - w) + t
    return sum_error + (te + GELU_A_LO)


def gelu_tanh_v_error(x, w):
    """x (A + B x^2) - fl(x w): the low part of tanh-gelu's v."""
    return fma(x, w, -(x * w)) + x * gelu_tanh_w_error(x, w)


def gelu_tanh_half_exp(v, ve):
    """exp(-|v + ve| / 2) = exp(-|v| / 2) (1 - sign(v) ve / 2).  Its square is exp(-|v|), which
    is formed late: a subnormal exp(-|v|) would lose bits where x sigmoid(v) is still normal
    (near x = -21.3)."""
    return exp_poly(-0.5 * fabs(v)) * (1.0 - 0.5 * (ve if v >= 0.0 else -ve))


def gelu_tanh(x):
    xc = gelu_clamped(x)
    w = gelu_tanh_w(xc)
    v = xc * w
    eh = gelu_tanh_half_exp(v, gelu_tanh_v_error(xc, w))
    q = 1.0 / (1.0 + eh * eh)
    r = xc * q if v >= 0.0 else ((xc * q) * eh) * eh
    return x if x > GELU_TAIL else (0.0 if x < -GELU_TAIL else r)


# tanh-gelu' crosses zero at x0 = -0.7525, where s and x s (1 - s) v' cancel: 8-10 ULP off on
# x0 + [-0.9, -0.25], hundreds nearer (numba and cython alike); on x0 + [-1, 0.25], h p(h)
GELU_TANH_D_ROOT_HI = -0.7524614220710163
GELU_TANH_D_ROOT_LO = 3.635560509207687e-17
GELU_TANH_D_NEAR_LO = -1.7524614220710162
GELU_TANH_D_NEAR_HI = -0.5024614220710163


def gelu_tanh_derivative_near_root(x):
    """h p(h), h = x - x0: degree 20, within 9.0e-17 relative on x0 + [-1.0, 0.25]
    (benchmarks/tools/derivative_zeros.py)."""
    h = (x - GELU_TANH_D_ROOT_HI) - GELU_TANH_D_ROOT_LO
    u = h + 0.375
    p = 5.100585032301266e-09
    p = mul_add(p, u, 1.4877177519827994e-08)
    p = mul_add(p, u, -3.1145636278156954e-08)
    p = mul_add(p, u, -1.520539062409988e-07)
    p = mul_add(p, u, 7.906649037976447e-08)
    p = mul_add(p, u, 1.1079460860641527e-06)
    p = mul_add(p, u, 3.765789571539653e-07)
    p = mul_add(p, u, -7.159165488050801e-06)
    p = mul_add(p, u, -7.749953824309017e-06)
    p = mul_add(p, u, 4.444994014306767e-05)
    p = mul_add(p, u, 9.027528840890323e-05)
    p = mul_add(p, u, -0.00024763986735821733)
    p = mul_add(p, u, -0.0009158956872353128)
    p = mul_add(p, u, 0.0007928729524613221)
    p = mul_add(p, u, 0.007387363886415967)
    p = mul_add(p, u, 0.0038249849706809267)
    p = mul_add(p, u, -0.039403876756638395)
    p = mul_add(p, u, -0.06813329688833138)
    p = mul_add(p, u, 0.08986095502371277)
    p = mul_add(p, u, 0.3564642404903664)
    p = mul_add(p, u, 0.2884121509322147)
    return p * h


def gelu_tanh_derivative(x):
    # sigmoid(v) + x sigmoid(v) (1 - sigmoid(v)) v', s (1 - s) = e / (1 + e)^2, v' = A + 3 B x^2
    xc = gelu_clamped(x)
    w = gelu_tanh_w(xc)
    v = xc * w
    eh = gelu_tanh_half_exp(v, gelu_tanh_v_error(xc, w))
    q = 1.0 / (1.0 + eh * eh)
    s = q if v >= 0.0 else (eh * q) * eh
    d = s + xc * ((eh * q) * (eh * q)) * (GELU_A_HI + 3.0 * GELU_B_HI * (xc * xc))
    near = gelu_tanh_derivative_near_root(xc)
    d = near if (xc >= GELU_TANH_D_NEAR_LO and xc <= GELU_TANH_D_NEAR_HI) else d
    return 1.0 if x > GELU_TAIL else (0.0 if x < -GELU_TAIL else d)


def gelu_exact(x):
    # (its derivative is dead code here: the compilers drop it)
    v, d = gelu_exact_and_derivative(x)
    return v


# gelu'(x) = Phi(x) + x phi(x) is 0 at x0 = -0.75179...: near it the two terms (~0.23 each)
# cancel, and their rounding errors became up to ~3,800 ULP of the result (x = -0.752; more
# than 8 ULP on [-1.26, -0.62] in all three backends, found by tests/test_properties.py).  On
# [-1.4, -0.5] the derivative is its Taylor series about x0 instead: h = x - x0 is exact there
# (x - GELU_D_ROOT_HI by Sterbenz, then the low part), and 23 terms of
# c_n = phi(x0) P_n(x0) / n!  (gelu^(n) = phi P_n, P_1 = 2 - x^2, P_n+1 = P_n' - x P_n;
# computed with mpmath at 60 digits) keep it within 3 ULP (checked at 6,000 points against
# mpmath).  Outside the window the direct form is within 4 ULP.
GELU_D_ROOT_HI = -0.7517915246935645
GELU_D_ROOT_LO = 1.4956759177009883e-17
GELU_D_NEAR_LO = -1.4
GELU_D_NEAR_HI = -0.5


def gelu_exact_derivative_near_root(x):
    h = (x - GELU_D_ROOT_HI) - GELU_D_ROOT_LO
    p = 3.725967039270119e-12
    p = mul_add(p, h, -9.950340824808053e-12)
    p = mul_add(p, h, -8.950037692726255e-11)
    p = mul_add(p, h, 1.4506418938779426e-10)
    p = mul_add(p, h, 1.90319840501314e-09)
    p = mul_add(p, h, -1.396942086426202e-09)
    p = mul_add(p, h, -3.5459866461783865e-08)
    p = mul_add(p, h, -1.6044265494246427e-09)
    p = mul_add(p, h, 5.702764979242107e-07)
    p = mul_add(p, h, 4.3284506257392273e-07)
    p = mul_add(p, h, -7.74846130700372e-06)
    p = mul_add(p, h, -1.121438018842664e-05)
    p = mul_add(p, h, 8.615947861116571e-05)
    p = mul_add(p, h, 0.00018633974623233514)
    p = mul_add(p, h, -0.0007448268386746817)
    p = mul_add(p, h, -0.002239538068073497)
    p = mul_add(p, h, 0.004539228379125415)
    p = mul_add(p, h, 0.019421679838189067)
    p = mul_add(p, h, -0.014771522148244337)
    p = mul_add(p, h, -0.1140082332972217)
    p = mul_add(p, h, -0.018199676398671087)
    p = mul_add(p, h, 0.388284982990552)
    p = mul_add(p, h, 0.4314939923140469)
    return p * h


def gelu_exact_derivative(x):
    v, d = gelu_exact_and_derivative(x)
    return d


def gelu_exact_and_derivative(x):
    """(x Phi(x), Phi(x) + x phi(x)) from gelu_erfc_parts, with phi(x) = exp(-(t + te)^2) /
    sqrt(2 pi) = e s1 s2 (1 - 2 t te) / sqrt(2 pi).  For t >= 0.5 (x <= -0.707) the powers of
    two come last, so the tail is rounded once (normal results down to x = -38.5); the
    derivative is the series about its zero on [GELU_D_NEAR_LO, GELU_D_NEAR_HI].  gelu_exact
    and gelu_exact_derivative take one of the two: the compilers drop the other's code."""
    xc = gelu_clamped(x)
    t, te, a, g, e, s1, s2 = gelu_erfc_parts(xc)
    es = e * s1 * s2
    c = te * GELU_TWO_OVER_SQRTPI
    w = xc * GELU_INV_SQRT_2PI * (1.0 - 2.0 * t * te)
    s = erfc_series(t) if a < 0.5 else 0.0
    v = (0.5 * xc * (s - c * es) if a < 0.5 else
         (((0.5 * xc * e * (g - c)) * s1) * s2 if t > 0.0 else 0.5 * xc * (2.0 - es * (g + c))))
    d = (0.5 * (s - c * es) + w * es if a < 0.5 else
         ((e * (0.5 * (g - c) + w)) * s1) * s2 if t > 0.0 else 1.0 + es * (w - 0.5 * (g + c)))
    near = gelu_exact_derivative_near_root(xc)
    d = near if (xc >= GELU_D_NEAR_LO and xc <= GELU_D_NEAR_HI) else d
    big = x > GELU_TAIL
    small = x < -GELU_TAIL
    return (x if big else (0.0 if small else v)), (1.0 if big else (0.0 if small else d))


def gelu(x, approximate):
    # approximate: the index of PyTorch's string, 0 = 'none' (erfc), 1 = 'tanh'
    return gelu_tanh(x) if approximate != 0.0 else gelu_exact(x)


def gelu_derivative(x, approximate):
    return gelu_tanh_derivative(x) if approximate != 0.0 else gelu_exact_derivative(x)


def gelu_tanh_and_derivative(x):
    return gelu_tanh(x), gelu_tanh_derivative(x)


def gelu_and_derivative(x, approximate):
    # one erfc for both (the exact form); each form in its own branch, which the compilers
    # take out of the loop (a select between the two pairs computed both: Numba float64 1e6,
    # 1 thread, 13.1 ms for the exact pair and 12.3 ms for the tanh pair)
    return gelu_tanh_and_derivative(x) if approximate != 0.0 else gelu_exact_and_derivative(x)


# --- losses: per-element value and gradient (kernels multiply by the element weight) -----------
# Each takes (x, y, p): input, target and one parameter (delta, beta, pos_weight, log_target as
# 0/1; unused by mse/l1/bce).  0 * inf is never formed where the mathematical limit is finite:
# a zero factor short-circuits (PyTorch returns NaN there; DESIGN.md / fastact docs say so).


BCE_LOG_FLOOR = -100.0  # PyTorch clamps log(x) and log(1 - x) at -100
BCE_EPS = 9.999999960041972e-13  # and the gradient's denominator x (1 - x) at float32(1e-12)


def exp_poly_single(x):
    # exp for results rounded to float32 (the loss kernels on float32 data): exp_poly's range
    # reduction with the Taylor series cut at r^7 (truncation < 8e-9 relative, 0.13 ULP of
    # float32), in float64; half the polynomial of exp_poly
    xc = EXP_HI if x > EXP_HI else (EXP_LO if x < EXP_LO else x)
    k = (xc * EXP_LOG2E + EXP_ROUND) - EXP_ROUND
    r = (xc - k * EXP_LN2_HI) - k * EXP_LN2_LO
    p = 1.0 / 5040.0
    p = mul_add(p, r, 1.0 / 720.0)
    p = mul_add(p, r, 1.0 / 120.0)
    p = mul_add(p, r, 1.0 / 24.0)
    p = mul_add(p, r, 1.0 / 6.0)
    p = mul_add(p, r, 0.5)
    p = mul_add(p, r, 1.0)
    p = mul_add(p, r, 1.0)
    k1 = (k * 0.5 + EXP_ROUND) - EXP_ROUND
    return p * pow2(k1) * pow2(k - k1)


def mse_loss_value(x, y, p):
    d = x - y
    return d * d


def mse_loss_grad(x, y, p):
    return 2.0 * (x - y)


def l1_loss_value(x, y, p):
    return fabs(x - y)


def l1_loss_grad(x, y, p):
    # sign(x - y), 0 at 0, NaN kept (PyTorch's sgn)
    d = x - y
    return 1.0 if d > 0.0 else (-1.0 if d < 0.0 else d * 0.0)


def huber_loss_value(x, y, p):
    d = fabs(x - y)
    return 0.5 * d * d if d < p else p * (d - 0.5 * p)


def huber_loss_grad(x, y, p):
    d = x - y
    return -p if d < -p else (p if d > p else d)


def smooth_l1_loss_value(x, y, p):
    # beta == 0 is the l1 loss (PyTorch)
    d = fabs(x - y)
    return 0.5 * d * d / p if d < p else d - 0.5 * p


def smooth_l1_loss_grad(x, y, p):
    d = x - y
    return (-1.0 if d <= -p else (1.0 if d >= p else d / p)) if p > 0.0 else l1_loss_grad(x, y, p)


def binary_cross_entropy_value(x, y, p):
    # -(y log x + (1 - y) log(1 - x)), both logs clamped at -100 (PyTorch); x in [0, 1]
    lx = log_poly(x)
    lx = BCE_LOG_FLOOR if lx < BCE_LOG_FLOOR else lx
    l1x = log1p_poly(-x)
    l1x = BCE_LOG_FLOOR if l1x < BCE_LOG_FLOOR else l1x
    return -(y * lx + (1.0 - y) * l1x)


def binary_cross_entropy_grad(x, y, p):
    # (x - y) / max(x (1 - x), eps) with PyTorch's eps, the float32 constant 1e-12
    den = x * (1.0 - x)
    den = BCE_EPS if den < BCE_EPS else den
    return (x - y) / den


def binary_cross_entropy_with_logits_value(x, y, p):
    # (1 - y) x + l softplus(-x) with l = 1 + (p - 1) y, p = pos_weight; stable form:
    # x >= 0: (1 - y) x + l log1p(exp(-x));  x < 0: -p y x + l log1p(exp(x)).
    # A zero factor of an infinite x contributes 0 (the limit), not NaN.
    lw = 1.0 + (p - 1.0) * y
    sp = log1p_poly_unit(exp_poly(-fabs(x)))
    a = (1.0 - y) if x >= 0.0 else -p * y
    lin = 0.0 if a == 0.0 else a * x
    return lin + (0.0 if lw == 0.0 else lw * sp)


def binary_cross_entropy_with_logits_grad(x, y, p):
    # l sigmoid(x) - p y
    lw = 1.0 + (p - 1.0) * y
    return lw * sigmoid(x) - p * y


def kl_div_value(x, y, p):
    # log_target (p = 1): exp(y) (y - x);  else y (log y - x), 0 where y == 0 (xlogy)
    e = exp_poly(y)
    lt = 0.0 if e == 0.0 else e * (y - x)
    ly = 0.0 if y == 0.0 else y * (log_poly(y) - x)
    return lt if p != 0.0 else ly


def kl_div_grad(x, y, p):
    return -exp_poly(y) if p != 0.0 else -y
