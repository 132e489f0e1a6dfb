"""Coefficients of the polynomial in ``fastact._math.erfc_poly`` (Weideman's erfcx expansion).

J.A.C. Weideman, "Computation of the complex error function", SIAM J. Numer. Anal. 31 (1994):
for x >= 0,

    erfcx(x) = exp(x^2) erfc(x) = 2 p(Z) / (L + x)^2 + 1 / (sqrt(pi) (L + x)),
    Z = (L - x) / (L + x),   L = sqrt(N / sqrt(2)),

where p is a polynomial of degree N - 1 whose coefficients are the discrete Fourier coefficients
of f(theta) = exp(-t^2) (L^2 + t^2), t = L tan(theta / 2), sampled at theta = k pi / M,
k = -M + 1 .. M - 1, M = 2N (plus a zero sample: 4N points in all).  This script evaluates that
transform directly in 60-digit mpmath (no FFT rounding) and prints the coefficients from the
highest degree down, the order of the Horner steps in ``erfc_poly``.

    python benchmarks/tools/erfcx_coefficients.py          # print them (N = 40)
    python benchmarks/tools/erfcx_coefficients.py --check  # compare with fastact/_math.py
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import mpmath

N = 40
MATH_PY = Path(__file__).resolve().parents[2] / "fastact" / "_math.py"


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


def shipped() -> list[float]:
    """The constants of the Horner steps ``p = mul_add(p, z, c)`` in ``erfc_poly``, highest
    degree first (read from the source)."""
    tree = ast.parse(MATH_PY.read_text())
    fn = next(node for node in tree.body
              if isinstance(node, ast.FunctionDef) and node.name == "erfc_poly")
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
                        help="compare with the constants in fastact/_math.py")
    args = parser.parse_args(argv)
    coefs = coefficients()
    if not args.check:
        for c in coefs:
            print(repr(c))
        return 0
    ours = shipped()
    worst = max(abs(a - b) for a, b in zip(coefs, ours)) if len(ours) == len(coefs) else None
    print(f"{len(ours)} shipped, {len(coefs)} computed; largest difference: {worst}")
    return 0 if worst is not None and worst <= 1e-18 else 1


if __name__ == "__main__":
    sys.exit(main())
