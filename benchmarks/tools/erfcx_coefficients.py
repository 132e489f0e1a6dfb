"""Coefficients of the polynomial in ``fastact._math.erfcx_expansion`` (Weideman's erfcx expansion).

J.A.C. Weideman, "Computation of the complex error function", SIAM J. Numer. Anal. 31 (1994):
for x >= 0,

    erfcx(x) = exp(x^2) erfc(x) = 2 p(Z) / (L + x)^2 + 1 / (sqrt(pi) (L + x)),
    Z = (L - x) / (L + x),   L = sqrt(N / sqrt(2)),

where p is a polynomial of degree N - 1 whose coefficients are the discrete Fourier coefficients
of f(theta) = exp(-t^2) (L^2 + t^2), t = L tan(theta / 2), sampled at theta = k pi / M,
k = -M + 1 .. M - 1, M = 2N (plus a zero sample: 4N points in all).  This script evaluates that
transform directly in 60-digit mpmath (no FFT rounding) and prints the coefficients from the
highest degree down, the order of the Horner steps in ``erfcx_expansion``.

For the float32 kernels (``fastact._math32.gelu_phi_wide``, float64 arithmetic for float32
results) a shorter form of the same idea: erfcx(a) = q(Z) / (L + a) with Z as above, since
1 / (L + a) = (1 + Z) / (2 L) makes Weideman's right-hand side q(Z) / (L + a) for a polynomial q
of degree N.  q is fitted directly, by Chebyshev interpolation in Z over a in [0, WIDE_AMAX]
(the only arguments those kernels pass), which needs degree 11 for 2.7e-10 relative where the
expansion needs 17 (N = 18, 3e-10).

    python benchmarks/tools/erfcx_coefficients.py          # print them (N = 40)
    python benchmarks/tools/erfcx_coefficients.py --wide   # the float32 kernels' q
    python benchmarks/tools/erfcx_coefficients.py --check  # compare both with fastact/
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import mpmath

N = 40
MATH_PY = Path(__file__).resolve().parents[2] / "fastact" / "_math.py"
MATH32_PY = MATH_PY.with_name("_math32.py")
#: the float32 kernels' q: L, degree, and the largest a = |x| / sqrt2 whose erfcx matters
#: (|x| <= 24.7: beyond, gelu(x) and gelu'(x) times float32 factors as large as geglu's
#: backward multiplies them by, b grad <= 3.4e38^2, are below float32's smallest subnormal)
WIDE_L, WIDE_DEGREE, WIDE_AMAX = 3.5, 11, 17.5


def coefficients(n: int = N, digits: int = 60) -> list[float]:
    """p's coefficients, highest degree first, rounded to float64."""
    with mpmath.workdps(digits):
        m = 2 * n
        m2 = 2 * m
        L = mpmath.sqrt(n / mpmath.sqrt(2))
        samples = [mpmath.mpf(0)]  # the extra zero sample, then k = -M+1 .. M-1
        for k in range(-m + 1, m):
            t = L * mpmath.tan(k * mpmath.pi / m / 2)
            samples.append(mpmath.exp(-t * t) * (L * L + t * t))
        # fftshift (numpy convention for an even length): rotate left by half the length
        shifted = samples[m2 // 2:] + samples[:m2 // 2]
        # real part of the DFT, divided by the number of points
        a = [mpmath.fsum(shifted[j] * mpmath.cos(2 * mpmath.pi * j * q / m2)
                         for j in range(m2)) / m2 for q in range(m2)]
        return [float(c) for c in reversed(a[1:n + 1])]


def erfcx(a):
    return mpmath.erfc(a) * mpmath.exp(a * a)


def wide_coefficients(digits: int = 60) -> list[float]:
    """q's coefficients (lowest degree first, rounded to float64): the polynomial of degree
    WIDE_DEGREE through q(Z) = erfcx(a) (L + a) at the Chebyshev points of Z's interval."""
    with mpmath.workdps(digits):
        L, amax, n = mpmath.mpf(WIDE_L), mpmath.mpf(WIDE_AMAX), WIDE_DEGREE + 1
        lo, hi = (L - amax) / (L + amax), mpmath.mpf(1)
        nodes = [(lo + hi) / 2 + (hi - lo) / 2 * mpmath.cos(mpmath.pi * (k + 0.5) / n)
                 for k in range(n)]

        def q(z):
            a = L * (1 - z) / (1 + z)
            return erfcx(a) * (L + a)

        matrix = mpmath.matrix([[z ** j for j in range(n)] for z in nodes])
        c = mpmath.lu_solve(matrix, mpmath.matrix([q(z) for z in nodes]))
        return [float(c[j]) for j in range(n)]


def wide_error(coefs: list[float], points: int = 2001) -> float:
    """Largest relative error of q(Z) / (L + a) against erfcx on [0, WIDE_AMAX] (mpmath)."""
    with mpmath.workdps(30):
        L, worst = mpmath.mpf(WIDE_L), mpmath.mpf(0)
        for i in range(points):
            a = mpmath.mpf(WIDE_AMAX) * i / (points - 1)
            z = (L - a) / (L + a)
            v = mpmath.fsum(mpmath.mpf(c) * z ** j for j, c in enumerate(coefs)) / (L + a)
            worst = max(worst, abs(v / erfcx(a) - 1))
        return float(worst)


def shipped_wide() -> list[float]:
    """q from the module constants GELU_PHI_Q0, GELU_PHI_Q1, ... of fastact/_math32.py, which
    are its coefficients halved (Phi = erfc / 2; halving is exact)."""
    tree = ast.parse(MATH32_PY.read_text())
    found = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id.startswith("GELU_PHI_Q")):
            found[int(node.targets[0].id[10:])] = 2 * float(ast.literal_eval(node.value))
    return [found[k] for k in sorted(found)]


def shipped() -> list[float]:
    """The constants of the Horner steps ``p = mul_add(p, z, c)`` in ``erfcx_expansion``
    (erfc_poly's and the gelu's erfcx), highest degree first (read from the source)."""
    tree = ast.parse(MATH_PY.read_text())
    fn = next(node for node in tree.body
              if isinstance(node, ast.FunctionDef) and node.name == "erfcx_expansion")
    values = []
    for stmt in fn.body:
        if not (isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name)
                and stmt.targets[0].id == "p"):
            continue
        value = stmt.value.args[2] if isinstance(stmt.value, ast.Call) else stmt.value
        values.append(float(ast.literal_eval(value)))
    return values


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the constants in fastact/_math.py and _math32.py")
    parser.add_argument("--wide", action="store_true",
                        help="print the float32 kernels' q (fastact/_math32.py) instead")
    args = parser.parse_args(argv)
    if args.wide and not args.check:
        coefs = wide_coefficients()
        for k, c in enumerate(coefs):
            print(f"q{k} = {c!r}  # GELU_PHI_Q{k} = {c / 2!r}")
        print(f"# max relative error on [0, {WIDE_AMAX}]: {wide_error(coefs):.2e}")
        return 0
    coefs = coefficients()
    if not args.check:
        for c in coefs:
            print(repr(c))
        return 0
    status = 0
    for what, ours, theirs in (("_math.py", shipped(), coefs),
                               ("_math32.py", shipped_wide(), wide_coefficients())):
        worst = (max(abs(a - b) for a, b in zip(theirs, ours)) if len(ours) == len(theirs)
                 else None)
        print(f"{what}: {len(ours)} shipped, {len(theirs)} computed; largest difference: {worst}")
        status |= not (worst is not None and worst <= 1e-18)
    return status


if __name__ == "__main__":
    sys.exit(main())
