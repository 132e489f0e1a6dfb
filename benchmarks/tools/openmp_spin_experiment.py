#!/usr/bin/env python
"""How libgomp's spin after a parallel region (GOMP_SPINCOUNT) changes the Cython kernels'
neighbours: runs one fresh process per setting and prints, per setting, medians in us of

* ``dot after cython``: a 200x200 float64 ``np.dot`` (OpenBLAS threads) right after a Cython
  call on 1e5 float32 elements, minus the Cython call alone;
* ``numba after cython``: a Numba call (TBB pool) on 1e5 elements right after a Cython call;
* ``cython after GAP``: a Cython call after GAP us of busy Python work (the threads' wake-up);
* ``relu 4e4``: back-to-back Cython calls on 40,000 elements.

    python benchmarks/tools/openmp_spin_experiment.py [SPINCOUNT ...]

(default: libgomp's own setting, 30000, 10000, 3000).  2026-12-07, 2-core AMD EPYC VM: the
np.dot took 7.9 ms after a Cython call with libgomp's default (0.29 ms alone), 0.2-0.5 ms with
10000; back-to-back Cython calls were unchanged; after 0.5-2 ms of other work a Cython call
paid ~40-60 us more.  fastact loads its kernels with 10000 (``fastact._dispatch.OMP_SPINCOUNT``)
unless GOMP_SPINCOUNT or OMP_WAIT_POLICY is set.
"""

import os
import subprocess
import sys

PROBE = r"""
import time, numpy as np, fastact as fa
x5 = np.linspace(-3, 3, 10**5).astype(np.float32); x4 = x5[:40000].copy()
a = np.ones((200, 200))
def busy(d):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < d:
        pass
def med(f, n=200):
    f(); ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e6
cy = lambda: fa.tanh(x5, backend="cython")
res = {"dot alone": med(lambda: np.dot(a, a)),
       "dot after cython": med(lambda: (cy(), np.dot(a, a))) - med(cy),
       "numba after cython": med(lambda: (cy(), fa.sigmoid(x5, backend="numba"))) - med(cy),
       "numba alone": med(lambda: fa.sigmoid(x5, backend="numba"))}
for gap in (0, 100e-6, 500e-6, 2e-3):
    ts = []
    for _ in range(200):
        busy(gap)
        t = time.perf_counter(); cy(); ts.append(time.perf_counter() - t)
    res[f"cython after {gap * 1e6:.0f} us"] = float(np.median(ts)) * 1e6
res["relu 4e4"] = med(lambda: fa.relu(x4, backend="cython"), 500)
print(fa.backend_info()["cython"].get("omp_spin"), {k: round(v) for k, v in res.items()})
"""


def main(argv) -> None:
    settings = argv or ["300000", "30000", "10000", "3000"]
    for value in settings:
        env = dict(os.environ, GOMP_SPINCOUNT=value)
        out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                             text=True, check=True)
        print(out.stdout.strip())


if __name__ == "__main__":
    main(sys.argv[1:])
