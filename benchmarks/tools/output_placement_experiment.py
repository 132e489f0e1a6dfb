#!/usr/bin/env python
"""Times one loss (``op form dtype...``) at 1e6 elements with the Numba backend, dtype after
dtype in one process:

    python benchmarks/tools/output_placement_experiment.py kl_div and_grad float32 float64

It first looked like a compile-order effect (2026-12-07: kl_div_and_grad float32 then float64
2.19 and 7.33 ms, float64 first 2.19 and 2.19 ms; binary_cross_entropy_and_grad float64 13.8
ms second, 4.7 ms first).  It was not: the slow runs were the ones where the freshly allocated
gradient lay 528 bytes after the target array modulo 4096 (moving the inputs by a few KB
switched a process between 2.4 and 7.5 ms, and an ``out=`` buffer at another offset was fast).
A store that trails a later load by a few hundred bytes modulo a page is taken as a
dependency by the CPU ("4K aliasing"), on every vector.  ``_validate.empty_apart`` now places
fresh loss gradients of 1 MiB and more half a page away from the inputs: both orders then give
2.5-3.0 ms (kl_div float64) and 4.4 ms (binary_cross_entropy float64).
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
