#!/usr/bin/env python
"""Reproduces an open problem: a parallel Numba loss kernel runs 3-4x slower for the dtype
whose specialisation is compiled (or loaded) second in a process.

    python benchmarks/tools/compile_order_experiment.py kl_div and_grad float32 float64
    python benchmarks/tools/compile_order_experiment.py kl_div and_grad float64 float32

Measured 2026-12-07 (AMD EPYC znver4, 2 threads, Numba 0.68.1, best of 5 x 5 calls, 1e6
elements): kl_div_and_grad float32 then float64: 2.19 and 7.33 ms; float64 then float32:
2.19 and 2.19 ms.  binary_cross_entropy_and_grad float32 then float64: 5.1 and 14.7-20.3 ms;
float64 then float32: 4.7-5.5 and 14.6 ms.  The same with FASTACT_NO_CACHE=1 (fresh compiles),
not with the serial twins (FASTACT_PARALLEL_THRESHOLD=100000000: 5.3-5.8 ms in both orders),
and not with the elementwise ops (sigmoid: 0.215 / 0.634 ms in both orders).  A minimal
prange kernel calling the same kl_div formulas does not show it, so the cause is somewhere in
the generated loss template.  Consequence: the float64 loss groups of the benchmark suite
(float32 runs first) and `fastact tune` (float32 first) time the slow variant, and the
dispatch table picks Cython for some float64 losses where Numba's first specialisation would
be 2-3x faster.
"""

import sys
import timeit

from fastact import _bench


def main(argv) -> None:
    op, form, *dtypes = argv
    for dtype in dtypes:
        case = _bench.make_case(op, form, 1_000_000, dtype)
        call = lambda: case.fn(*case.args, **case.kwargs, backend="numba")  # noqa: E731
        call()
        best = min(timeit.repeat(call, number=5, repeat=5)) / 5
        print(f"{op} {form} {dtype}: {best * 1e3:.3f} ms")


if __name__ == "__main__":
    main(sys.argv[1:] or ["kl_div", "and_grad", "float32", "float64"])
