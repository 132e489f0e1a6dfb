"""Automatic fallback when compiled backends are missing (DESIGN.md section 2), in subprocesses.

A backend is made unimportable by ``sys.modules[name] = None`` before ``import fastact`` (or,
for a broken install, by a ``numba`` package that raises on import).  Automatic dispatch must then
fall back quietly to the next backend, ``backend_info()`` must say why, an explicit request must
raise ``BackendUnavailable``, and results must still equal a float64 NumPy oracle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastact as fa
from fastact import _config

pytestmark = pytest.mark.subprocess

PACKAGE_ROOT = Path(fa.__file__).resolve().parent.parent
REQUIRED = [b.strip() for b in os.environ.get("FASTACT_REQUIRE_BACKENDS", "").split(",")
            if b.strip()]
TIMEOUT = 120


@pytest.fixture(scope="session")
def fallback_env(tmp_path_factory):
    env = dict(os.environ)
    env.pop("FASTACT_BACKEND", None)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PACKAGE_ROOT)] + [p for p in paths if Path(p).resolve() != PACKAGE_ROOT])
    if not env.get("FASTACT_CACHE_DIR", "").strip() and not env.get("NUMBA_CACHE_DIR", "").strip():
        cache = _config.cache_dir()
        if not _config.writable_dir(cache):
            cache = str(tmp_path_factory.mktemp("fastact-cache"))
        env["FASTACT_CACHE_DIR"] = cache
    return env


def run_python(code: str, env: dict, timeout: float = TIMEOUT) -> dict:
    try:
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                              capture_output=True, text=True, timeout=timeout,
                              cwd=str(PACKAGE_ROOT))
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"subprocess did not finish in {timeout} s; stderr: {exc.stderr}")
    assert proc.returncode == 0, f"subprocess failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


#: Runs after the blocking preamble: which backend runs, what info says, results of a few ops.
PROBE = """
import importlib, json
import numpy as np
import fastact as fa
from fastact import _registry
LOG = []
MODULES = {"numba": "fastact.kernels.numba_cpu",
           "cython": "fastact.kernels._cython_kernels",
           "numpy": "fastact.kernels.numpy_ref"}
for _name in fa.backends():
    if _name not in MODULES:
        continue
    _module = importlib.import_module(MODULES[_name])
    for _k in _registry.kernel_names():
        def _wrap(*a, _o=getattr(_module, _k), _n=_name):
            LOG.append(_n)
            return _o(*a)
        setattr(_module, _k, _wrap)

x = np.linspace(-4, 4, 24).reshape(2, 3, 4)
g = np.cos(np.arange(24.0)).reshape(2, 3, 4) + 1.5
res = {"backends": fa.backends(), "select": fa.select_backend("sigmoid", x), "info": {}}
info = fa.backend_info()
for _name in ("numba", "cython", "numpy"):
    res["info"][_name] = {"available": info[_name]["available"],
                          "reason": info[_name].get("reason", "")}
res["values"] = {
    "sigmoid": fa.sigmoid(x.astype(np.float32)).astype(float).tolist(),
    "tanh_backward": fa.tanh_backward(g, x=x).tolist(),
    "elu": fa.elu(x, alpha=0.5).tolist(),
    "leaky_relu_and_derivative": [a.tolist() for a in fa.leaky_relu_and_derivative(x)],
    "softmax_axis1": fa.softmax(x, axis=1).tolist(),
    "log_softmax": fa.log_softmax(x).tolist(),
    "prelu_backward": [a.tolist() for a in fa.prelu_backward(g, x=x, weight=np.array([0.1, 0.2, 0.3]))],
}
res["ran"] = sorted(set(LOG))
res["explicit"] = {}
for _name in ("numba", "cython"):
    try:
        fa.sigmoid(x, backend=_name)
        res["explicit"][_name] = None
    except Exception as exc:
        res["explicit"][_name] = [type(exc).__name__, isinstance(exc, fa.BackendUnavailable),
                                  str(exc)]
print(json.dumps(res))
"""

BLOCK_NUMBA = "import sys\nsys.modules['numba'] = None\n"
BLOCK_CYTHON = "import sys\nsys.modules['fastact.kernels._cython_kernels'] = None\n"


def _expected_values():
    x = np.linspace(-4, 4, 24).reshape(2, 3, 4)
    g = np.cos(np.arange(24.0)).reshape(2, 3, 4) + 1.5
    x32 = x.astype(np.float32).astype(np.float64)

    def softmax(a, axis):
        e = np.exp(a - a.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)

    z = x - x.max(axis=-1, keepdims=True)
    w = np.array([0.1, 0.2, 0.3]).reshape(1, 3, 1)
    return {
        "sigmoid": (1 / (1 + np.exp(-x32)), 1e-6),
        "tanh_backward": (g * (1 - np.tanh(x) ** 2), 1e-13),
        "elu": (np.where(x > 0, x, 0.5 * np.expm1(np.minimum(x, 0))), 1e-13),
        "leaky_relu_and_derivative": ((np.where(x > 0, x, 0.01 * x),
                                       np.where(x > 0, 1.0, 0.01)), 1e-15),
        "softmax_axis1": (softmax(x, 1), 1e-13),
        "log_softmax": (z - np.log(np.exp(z).sum(axis=-1, keepdims=True)), 1e-13),
        "prelu_backward": ((g * np.where(x > 0, 1.0, w),
                            np.where(x > 0, 0.0, g * x).sum(axis=(0, 2))), 1e-13),
    }


def _check_values(values):
    for name, (want, rtol) in _expected_values().items():
        got = values[name]
        if isinstance(want, tuple):
            for a, b in zip(got, want):
                np.testing.assert_allclose(np.array(a), b, rtol=rtol, atol=1e-15, err_msg=name)
        else:
            np.testing.assert_allclose(np.array(got), want, rtol=rtol, atol=1e-15, err_msg=name)


def _cython_expected():
    if "cython" in fa.backends():
        return True
    if "cython" in REQUIRED:
        pytest.fail("cython is required but unavailable: " + fa.backend_info()["cython"]["reason"])
    return False


def test_without_numba_runs_on_cython(fallback_env):
    if not _cython_expected():
        pytest.skip("the cython extension is not built here")
    out = run_python(BLOCK_NUMBA + PROBE, fallback_env)
    assert "numba" not in out["backends"]
    assert out["select"] == "cython"
    assert out["ran"] == ["cython"], f"kernels that ran: {out['ran']}"
    assert not out["info"]["numba"]["available"]
    assert "numba" in out["info"]["numba"]["reason"].lower()
    name, is_unavailable, msg = out["explicit"]["numba"]
    assert is_unavailable, out["explicit"]
    assert "cython" in msg and "numpy" in msg
    assert out["explicit"]["cython"] is None
    _check_values(out["values"])


def test_without_numba_and_cython_runs_on_numpy(fallback_env):
    out = run_python(BLOCK_NUMBA + BLOCK_CYTHON + PROBE, fallback_env)
    assert out["backends"] == ["numpy"]
    assert out["select"] == "numpy"
    assert out["ran"] == ["numpy"], f"kernels that ran: {out['ran']}"
    assert "numba" in out["info"]["numba"]["reason"].lower()
    assert out["info"]["cython"]["reason"]
    for name in ("numba", "cython"):
        exc_name, is_unavailable, msg = out["explicit"][name]
        assert is_unavailable, out["explicit"]
        assert name in msg and "numpy" in msg
    _check_values(out["values"])


def test_without_cython_runs_on_numba(fallback_env):
    if "numba" not in fa.backends():
        pytest.skip("numba is unavailable here")
    out = run_python(BLOCK_CYTHON + PROBE, fallback_env)
    assert "cython" not in out["backends"]
    assert out["select"] == "numba"
    assert out["ran"] == ["numba"]
    assert out["info"]["cython"]["reason"]
    assert out["explicit"]["cython"][1] is True
    _check_values(out["values"])


def test_broken_numba_install_falls_back(fallback_env, tmp_path):
    fake = tmp_path / "numba"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise RuntimeError('simulated broken numba install')\n")
    env = dict(fallback_env)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    out = run_python(PROBE, env)
    assert "numba" not in out["backends"]
    assert out["select"] == ("cython" if "cython" in fa.backends() else "numpy")
    assert "simulated broken numba install" in out["info"]["numba"]["reason"]
    assert out["explicit"]["numba"][1] is True
    _check_values(out["values"])
