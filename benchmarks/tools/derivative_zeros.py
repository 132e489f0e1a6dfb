"""Polynomials for activation derivatives near their zeros (``*_derivative_near_root`` in
``fastact/_math.py`` and ``fastact/_math32.py``).

silu', mish' and both gelu' cross zero once, at a negative x0, where their formulas subtract two
terms of similar size: the terms' rounding errors, tiny next to the terms, are hundreds to
millions of ULP of the result within ~0.1 of x0.  There the kernels evaluate

    f'(x) = h p(h),   h = x - x0 = (x - X0_HI) - X0_LO,

with x - X0_HI exact (Sterbenz: x within a factor 2 of X0_HI) and X0_LO the next bits of x0, so
the result has the relative accuracy of p, however close x is to x0.  p, a polynomial in h minus
the window's middle, is the Chebyshev interpolant of f'(x0 + h) / h on the window (mpmath at 60
digits) of the lowest degree that stays within a quarter of the kernel type's rounding error
(2^-57 for float64, 2^-28 for float32, 2^-32 for float32 results computed in float64; checked at
2,001 points) before its coefficients are rounded to that type.  The window covers the x where
the direct formula was more than ~6 ULP off (measured against mpmath; see _math.py).

    python benchmarks/tools/derivative_zeros.py          # print the functions' source
    python benchmarks/tools/derivative_zeros.py --check  # compare with fastact/_math*.py
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import mpmath
import numpy as np

ROOT = Path(__file__).resolve().parents[2] / "fastact"
DIGITS = 60


def silu_d(x):
    s = 1 / (1 + mpmath.exp(-x))
    return s + x * s * (1 - s)


def mish_d(x):
    t = mpmath.tanh(mpmath.log1p(mpmath.exp(x)))
    return t + x * (1 - t * t) / (1 + mpmath.exp(-x))


def gelu_tanh_d(x):
    a = 2 * mpmath.sqrt(2 / mpmath.pi)
    b = a * mpmath.mpf("0.044715")
    s = 1 / (1 + mpmath.exp(-x * (a + b * x * x)))
    return s + x * s * (1 - s) * (a + 3 * b * x * x)


def gelu_exact_d(x):
    return mpmath.ncdf(x) + x * mpmath.npdf(x)


@dataclass(frozen=True)
class Target:
    function: str       # name of the generated function
    module: str         # "_math" or "_math32"
    derivative: object  # the mpmath derivative
    h_lo: float         # window x0 + [h_lo, h_hi]
    h_hi: float
    kind: str           # "f64": float64 constants and arithmetic (_math.mul_add);
                        # "f32": float32 (_math32.mul_add, F(...)); "wide": float64 arithmetic
                        # (_math32.mul_add_wide) for float32 results
    prefix: str         # constants' prefix

    @property
    def mid(self) -> float:
        """The window's middle: p is a polynomial in u = h - mid, |u| <= half the window (in
        powers of h, the terms of gelu_tanh's p on [-1, 0.25] cancel 9-fold at h = -1)."""
        return (self.h_lo + self.h_hi) / 2

    @property
    def rtol(self) -> float:
        """The interpolant's error before its coefficients are rounded (which adds up to half
        an ULP: the rounding of the constant term)."""
        return {"f64": 2.0 ** -57, "f32": 2.0 ** -28, "wide": 2.0 ** -32}[self.kind]


TARGETS = [
    Target("silu_derivative_near_root", "_math", silu_d, -0.1, 0.1, "f64", "SILU_D"),
    Target("mish_derivative_near_root", "_math", mish_d, -0.1, 0.1, "f64", "MISH_D"),
    Target("gelu_tanh_derivative_near_root", "_math", gelu_tanh_d, -1.0, 0.25, "f64",
           "GELU_TANH_D"),
    Target("silu_derivative_near_root", "_math32", silu_d, -0.1, 0.1, "f32", "SILU_D"),
    Target("mish_derivative_near_root", "_math32", mish_d, -0.1, 0.1, "f32", "MISH_D"),
    Target("gelu_exact_derivative_near_root_wide", "_math32", gelu_exact_d, -0.05, 0.05, "wide",
           "GELU_D_WIDE"),
    Target("gelu_tanh_derivative_near_root_wide", "_math32", gelu_tanh_d, -0.05, 0.05, "wide",
           "GELU_TANH_D_WIDE"),
]


def root(t: Target):
    with mpmath.workdps(DIGITS):
        return mpmath.findroot(t.derivative, -1.0)


def split(t: Target, x0) -> tuple[float, float]:
    """x0 = hi + lo in the kernel's type (float64 for "wide")."""
    cast = np.float32 if t.kind == "f32" else np.float64
    hi = cast(float(x0))
    lo = cast(float(x0 - mpmath.mpf(float(hi))))
    return float(hi), float(lo)


def fit(t: Target) -> tuple[tuple[float, float], list[float], float]:
    """((hi, lo), coefficients from the highest degree, worst relative error)."""
    cast = np.float32 if t.kind == "f32" else np.float64
    with mpmath.workdps(DIGITS):
        x0 = root(t)
        second = mpmath.diff(t.derivative, x0)

        def g(h):
            return second if h == 0 else t.derivative(x0 + h) / h

        mid = t.mid
        check = [mpmath.mpf(t.h_lo) + (t.h_hi - t.h_lo) * mpmath.mpf(i) / 2000
                 for i in range(2001)]
        exact = [g(h) for h in check]
        check = [h - mid for h in check]  # p's argument u = h - mid
        half = (t.h_hi - t.h_lo) / 2
        for n in range(2, 40):
            fitted = mpmath.chebyfit(lambda u: g(u + mid), [-half, half], n)
            if max(abs(mpmath.polyval(fitted, h) / e - 1) for h, e in zip(check, exact)) \
                    > t.rtol:
                continue
            coefs = [float(cast(float(c))) for c in fitted]
            worst = max(abs(mpmath.polyval(coefs, h) / e - 1) for h, e in zip(check, exact))
            return split(t, x0), coefs, float(worst)
    raise RuntimeError(f"{t.module}.{t.function}: no degree below 40 meets {t.rtol}")


def literal(t: Target, c: float) -> str:
    return f"F({float(np.float32(c))!r})" if t.kind == "f32" else repr(c)


def source(t: Target) -> str:
    (hi, lo), coefs, worst = fit(t)
    mul_add = {"f64": "mul_add", "f32": "mul_add", "wide": "mul_add_wide"}[t.kind]
    lines = [f"{t.prefix}_ROOT_HI = {literal(t, hi)}",
             f"{t.prefix}_ROOT_LO = {literal(t, lo)}",
             f"{t.prefix}_NEAR_LO = {literal(t, hi + t.h_lo)}",
             f"{t.prefix}_NEAR_HI = {literal(t, hi + t.h_hi)}",
             "", "",
             f"def {t.function}(x):",
             f'    """h p(h), h = x - x0: degree {len(coefs) - 1}, within {worst:.1e} relative on '
             f'x0 + [{t.h_lo}, {t.h_hi}]', '    (benchmarks/tools/derivative_zeros.py)."""',
             f"    h = (x - {t.prefix}_ROOT_HI) - {t.prefix}_ROOT_LO"]
    u = "h"
    if t.mid != 0:
        sign = "-" if t.mid > 0 else "+"
        lines.append(f"    u = h {sign} {literal(t, abs(t.mid))}")
        u = "u"
    lines.append(f"    p = {literal(t, coefs[0])}")
    lines += [f"    p = {mul_add}(p, {u}, {literal(t, c)})" for c in coefs[1:]]
    lines.append("    return p * h")
    return "\n".join(lines)


def shipped(t: Target) -> list[float]:
    """The shipped function's constants (from the source): hi, lo, then p's coefficients."""
    tree = ast.parse((ROOT / f"{t.module}.py").read_text())
    consts = {node.targets[0].id: node.value for node in tree.body
              if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}

    def value(node):
        if isinstance(node, ast.Call):  # F(...)
            node = node.args[0]
        return float(ast.literal_eval(node))

    fn = next(node for node in tree.body
              if isinstance(node, ast.FunctionDef) and node.name == t.function)
    coefs = [value(stmt.value.args[2] if isinstance(stmt.value, ast.Call)
                   and len(stmt.value.args) == 3 else stmt.value)
             for stmt in fn.body if isinstance(stmt, ast.Assign)
             and isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id == "p"]
    return [value(consts[f"{t.prefix}_ROOT_HI"]), value(consts[f"{t.prefix}_ROOT_LO"])] + coefs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the constants in fastact/_math.py and _math32.py")
    args = parser.parse_args(argv)
    failed = 0
    for t in TARGETS:
        if not args.check:
            print(f"# --- {t.module}.py\n{source(t)}\n")
            continue
        (hi, lo), coefs, _ = fit(t)
        ours = shipped(t)
        same = ours == [hi, lo] + coefs
        failed += not same
        print(f"{t.module}.{t.function}: {'same' if same else 'DIFFERENT'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
