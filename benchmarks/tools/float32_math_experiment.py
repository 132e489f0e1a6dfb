#!/usr/bin/env python
"""How much faster could float32 kernels be with float32 arithmetic?  (issue 7, evidence)

fastact's float32 kernels widen each element to float64, evaluate the float64 formulas of
``fastact/_math.py`` and round once when storing (DESIGN.md section 4).  With AVX-512 a vector
holds 8 float64 or 16 float32 lanes, and float64 division is about twice as slow per lane, so
this costs compute-bound ops (sigmoid, tanh, silu, softplus, softmax, gelu) up to ~2x.  This
script times one Numba sigmoid loop (2 threads, 1e7 float32 elements) three ways, against
``np.copyto`` of the same bytes:

* ``float64, exp degree 13``: what fastact ships (``exp_poly``);
* ``float64, exp degree 7``: the float32-accurate ``exp_poly_single`` (the loss kernels use it);
* ``float32 arithmetic``: a float32 range reduction, a degree-6 float32 polynomial and float32
  division.  Only a speed probe: no subnormal results (it clamps below -87), and its accuracy
  (~3 ULP) is printed, not tested.

    python benchmarks/tools/float32_math_experiment.py

Measured on the development machine (2026-12-07, best of 7, 2 threads): copy 4.1 ms,
float64/degree 13: 20.8 ms, float64/degree 7: 15.7 ms, float32: 7.8 ms; max error 0.50,
0.58 and 2.75 ULP of float32.

Outcome: the float32 path ships as ``fastact/_math32.py`` (with subnormal results, a float32
expm1 and log1p, and sweep tests); this script stays as the record of the measurement.
"""

from __future__ import annotations

import time

import numpy as np
from llvmlite import ir as llvm_ir
from numba import njit, prange, types
from numba.extending import intrinsic

from fastact.kernels import numba_cpu

exp13 = numba_cpu.FORMULAS["exp_poly"]
exp7 = numba_cpu.FORMULAS["exp_poly_single"]
f32 = np.float32


@intrinsic
def _float32_from_bits(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.FloatType())
    return types.float32(types.int32), codegen


@njit(inline="always", error_model="numpy")
def exp_float32(x):
    # Cody-Waite reduction x = k ln2 + r (ln2 in two float32 parts), then a degree-6 polynomial
    xc = f32(88.7) if x > f32(88.7) else (f32(-87.3) if x < f32(-87.3) else x)
    k = (xc * f32(1.44269504) + f32(12582912.0)) - f32(12582912.0)
    r = (xc - k * f32(0.693359375)) - k * f32(-2.12194440e-4)
    p = f32(1.9875691500e-4)
    p = p * r + f32(1.3981999507e-3)
    p = p * r + f32(8.3334519073e-3)
    p = p * r + f32(4.1665795894e-2)
    p = p * r + f32(1.6666665459e-1)
    p = p * r + f32(5.0000001201e-1)
    p = p * r * r + r + f32(1.0)
    return p * _float32_from_bits(np.int32((np.int32(k) + np.int32(127)) << np.int32(23)))


def sigmoid_float64(exp):
    """A float32 sigmoid loop computing in float64 with the given exp."""
    @njit(parallel=True, error_model="numpy")
    def kernel(x, out):
        for i in prange(x.size):
            v = np.float64(x[i])
            e = exp(-abs(v))
            r = 1.0 / (1.0 + e)
            out[i] = r if v >= 0 else e * r
    return kernel


sigmoid_float64_degree13 = sigmoid_float64(exp13)
sigmoid_float64_degree7 = sigmoid_float64(exp7)


@njit(parallel=True, error_model="numpy")
def sigmoid_float32(x, out):
    for i in prange(x.size):
        v = x[i]
        e = exp_float32(-abs(v))
        r = f32(1.0) / (f32(1.0) + e)
        out[i] = r if v >= 0 else e * r


def best_of(fn, *args, repeat=7) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    x = (np.random.default_rng(0).standard_normal(10**7) * 3).astype(np.float32)
    out = np.empty_like(x)
    variants = {"np.copyto (same bytes)": lambda a, b: np.copyto(b, a),
                "float64, exp degree 13 (shipped)": sigmoid_float64_degree13,
                "float64, exp degree 7": sigmoid_float64_degree7,
                "float32 arithmetic": sigmoid_float32}
    for fn in variants.values():
        fn(x, out)  # compile
    exact = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    ulp = np.spacing(exact.astype(np.float32)).astype(np.float64)
    for name, fn in variants.items():
        t = best_of(fn, x, out)
        line = f"{name:34s} {t * 1e3:7.2f} ms"
        if "copyto" not in name:
            line += f"   max error {np.max(np.abs(out - exact) / ulp):.2f} ULP (float32)"
        print(line)


if __name__ == "__main__":
    main()
