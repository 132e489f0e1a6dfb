"""The CUDA backend's tests run only where CUDA kernels can run: under the CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``; ``tests/test_cuda.py`` starts that run in a subprocess, because the
simulator must be enabled before ``numba.cuda`` is first imported) or on a machine with a usable
GPU.  Elsewhere this directory is not collected (not even for doctests).

Tests marked ``gpu`` (inf/NaN, ULP bounds with libdevice, large arrays, CuPy/PyTorch interop)
skip under the simulator, which runs kernels as Python with float64 rules.
"""

from __future__ import annotations

import os
import sys

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM", "").strip() == "1"


def _gpu_usable() -> bool:
    if SIMULATED:
        return False
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:
        return False


RUN = SIMULATED or _gpu_usable()
collect_ignore_glob = [] if RUN else ["*.py"]

if RUN:
    # oracle.py lives in tests/
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
