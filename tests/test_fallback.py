"""Automatic fallback when compiled backends are missing (DESIGN.md section 2), in subprocesses.

A backend is made unimportable by ``sys.modules[name] = None`` before ``import fastact`` (or,
for a broken install, by a ``numba`` package that raises on import).  Automatic dispatch must then
fall back quietly to the next backend, ``backend_info()`` must say why, an explicit request must
raise ``BackendUnavailable``, and results must still equal a float64 NumPy oracle.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import fastact as fa
from fastact import _config

from _subprocess import RECORDER, run_python, subprocess_environment

pytestmark = pytest.mark.subprocess

REQUIRED = _config.REQUIRE_BACKENDS


@pytest.fixture(scope="session")
def fallback_env(tmp_path_factory):
    return subprocess_environment(tmp_path_factory)


#: Runs after the blocking preamble: which backend runs, what info says, results of a few ops.
PROBE = RECORDER + """
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


# ------------------------------------------------------------------------------------------------
# CUDA missing (no numba-cuda, no GPU): no cuda backend, never an import error
# ------------------------------------------------------------------------------------------------

BLOCK_CUDA = ("import sys\nfor _m in ('numba.cuda', 'numba_cuda', 'cupy'):\n"
              "    sys.modules[_m] = None\n")

CUDA_PROBE = PROBE.replace("print(json.dumps(res))", """
res["cuda"] = {"listed": "cuda" in fa.backends(), "info": info["cuda"]}
try:
    fa.sigmoid(x, backend="cuda")
    res["cuda"]["explicit"] = None
except Exception as exc:
    res["cuda"]["explicit"] = [type(exc).__name__, isinstance(exc, fa.BackendUnavailable), str(exc)]
print(json.dumps(res, default=str))
""")


@pytest.mark.parametrize("blocked", ["numba-cuda blocked", "no GPU"])
def test_cuda_missing_is_not_an_import_error(fallback_env, blocked):
    env = dict(fallback_env)
    env.pop("NUMBA_ENABLE_CUDASIM", None)  # the simulator would make cuda "available"
    if blocked == "no GPU":
        env["CUDA_VISIBLE_DEVICES"] = ""  # hides any real GPU as well
    out = run_python((BLOCK_CUDA if blocked == "numba-cuda blocked" else "") + CUDA_PROBE, env)
    assert not out["cuda"]["listed"]
    assert out["cuda"]["info"]["available"] is False
    assert out["cuda"]["info"]["reason"].strip()
    name, is_unavailable, msg = out["cuda"]["explicit"]
    assert is_unavailable, out["cuda"]
    assert "cuda" in msg
    assert out["select"] in ("numba", "cython", "numpy") and out["select"] != "cuda"
    _check_values(out["values"])


# ------------------------------------------------------------------------------------------------
# Cython extension built without OpenMP
# ------------------------------------------------------------------------------------------------

def _build_without_openmp(dest):
    """A copy of the package whose Cython extension is compiled from the same generated C file
    with no -fopenmp (as setup.py does when the compiler lacks OpenMP)."""
    import shutil
    import subprocess
    import sys
    import sysconfig

    from _subprocess import PACKAGE_ROOT

    kernels = PACKAGE_ROOT / "fastact" / "kernels"
    c_file = kernels / "_cython_kernels.c"
    shutil.copytree(PACKAGE_ROOT / "fastact", dest / "fastact",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd"))
    if not c_file.exists():
        pyx = kernels / "_cython_kernels.pyx"
        if not pyx.exists():
            pytest.fail("no generated _cython_kernels.pyx/.c in the checkout (build the "
                        "extension first: pip install -e .)")
        from Cython.Build import cythonize  # a test dependency

        shutil.copy(pyx, dest / "fastact" / "kernels")
        cythonize([str(dest / "fastact" / "kernels" / "_cython_kernels.pyx")], quiet=True,
                  compiler_directives={"language_level": 3, "boundscheck": False,
                                       "wraparound": False, "cdivision": True})
        c_file = dest / "fastact" / "kernels" / "_cython_kernels.c"
    import numpy

    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    target = dest / "fastact" / "kernels" / ("_cython_kernels" +
                                             sysconfig.get_config_var("EXT_SUFFIX"))
    cmd = [cc, "-O1", "-shared", "-fPIC", "-fno-trapping-math",
           f"-I{sysconfig.get_paths()['include']}", f"-I{numpy.get_include()}",
           str(c_file), "-o", str(target), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"compiling the extension without OpenMP failed: {proc.stderr[-2000:]}")
    return dest


def test_cython_built_without_openmp(fallback_env, tmp_path):
    if not _cython_expected():
        pytest.skip("the cython extension is not built here")
    tree = _build_without_openmp(tmp_path)
    env = dict(fallback_env)
    env["PYTHONPATH"] = os.pathsep.join([str(tree), env["PYTHONPATH"]])
    probe = PROBE.replace("print(json.dumps(res))", """
res["file"] = fa.__file__
res["cython"] = {k: info["cython"].get(k) for k in ("openmp", "threads", "openmp_reason")}
print(json.dumps(res))
""")
    from _subprocess import PACKAGE_ROOT  # noqa: F401  (cwd must not shadow the copy)

    # with numba: automatic dispatch keeps numba; cython is listed and says it is serial
    out = run_python(probe, env, cwd=tmp_path)
    assert out["file"].startswith(str(tree))
    assert out["cython"]["openmp"] is False and out["cython"]["threads"] == 1, out["cython"]
    assert "without OpenMP" in out["cython"]["openmp_reason"]
    if "numba" in fa.backends():
        assert out["select"] == "numba"
    _check_values(out["values"])
    # without numba: the serial cython kernels run, and are correct
    out = run_python(BLOCK_NUMBA + probe, env, cwd=tmp_path)
    assert out["select"] == "cython" and out["ran"] == ["cython"], out["ran"]
    assert out["explicit"]["cython"] is None
    _check_values(out["values"])
