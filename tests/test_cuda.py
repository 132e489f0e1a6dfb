"""The CUDA backend from the main test process.

The kernel tests live in ``tests/cuda/``.  The CUDA simulator must be enabled before
``numba.cuda`` is first imported, and this process stays on real-CUDA rules, so
:func:`test_cuda_simulator_suite` runs ``pytest tests/cuda`` in a fresh interpreter with
``NUMBA_ENABLE_CUDASIM=1`` (so the README's ``python -m pytest`` runs the whole CUDA matrix in
CI).  On a machine with a usable GPU, ``tests/cuda`` is also collected directly by this run, on
the real device, including its ``gpu``-marked tests.

The other tests check availability reporting and that importing fastact never imports
``numba.cuda``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

import fastact as fa

from _subprocess import PACKAGE_ROOT, run_python, subprocess_environment

SUITE_TIMEOUT = 540  # below pytest-timeout's 600 s, so a hang reports the suite's output


@pytest.fixture(scope="module")
def subprocess_env(tmp_path_factory):
    return subprocess_environment(tmp_path_factory)


@pytest.mark.subprocess
def test_cuda_simulator_suite(subprocess_env):
    """Every op, form and dtype of the registry on the CUDA backend, in the simulator."""
    pytest.importorskip("numba_cuda")  # the test extra installs it; CI=true fails a skip here
    env = dict(subprocess_env, NUMBA_ENABLE_CUDASIM="1")
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o",
             "addopts=-ra", "--strict-markers", os.path.join("tests", "cuda")],
            env=env, cwd=str(PACKAGE_ROOT), capture_output=True, text=True,
            timeout=SUITE_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"CUDA simulator suite did not finish in {SUITE_TIMEOUT} s:\n"
                    f"{(exc.stdout or b'')[-4000:]!r}")
    elapsed = time.perf_counter() - start
    tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-60:])
    assert proc.returncode == 0, f"CUDA simulator suite failed (rc {proc.returncode}):\n{tail}"
    summary = proc.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) > 100, f"too few CUDA tests ran: {summary}"
    assert "failed" not in summary and "error" not in summary, summary
    print(f"CUDA simulator suite: {summary} ({elapsed:.0f} s)")


@pytest.mark.subprocess
def test_import_does_not_import_numba_cuda(subprocess_env):
    out = run_python("""
        import json, sys
        import numpy as np
        import fastact as fa
        fa.sigmoid(np.ones(3)); fa.softmax(np.ones((2, 3))); fa.select_backend("relu", np.ones(2))
        print(json.dumps(sorted(m for m in sys.modules if m.startswith(("numba.cuda",
                                                                         "numba_cuda")))))
    """, subprocess_env)
    assert out == []


@pytest.mark.subprocess
def test_reason_when_numba_cuda_missing(subprocess_env):
    out = run_python("""
        import json, sys
        sys.modules["numba.cuda"] = None  # as if numba-cuda were not installed
        import fastact as fa
        info = fa.backend_info()["cuda"]
        print(json.dumps([info["available"], info.get("reason", ""), fa.backends()]))
    """, subprocess_env)
    available, reason, names = out
    assert available is False and "cuda" not in names
    assert reason.startswith("numba-cuda is not installed (pip install 'fastact[cuda]')")


def test_cuda_availability_reported():
    info = fa.backend_info()["cuda"]
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "").strip() == "1":
        assert info["available"] and info["simulated"]
    elif info["available"]:
        assert info["simulated"] is False and info["device"]
    else:
        assert "cuda" not in fa.backends()
        assert re.match(r"(numba-cuda is not installed|no usable CUDA driver|no CUDA device|"
                        r"numba.cuda failed|failed to initialise)", info["reason"]), info
        # and host arrays never need it
        assert fa.select_backend("sigmoid", [1.0]) != "cuda"
