"""Running fastact in fresh interpreters (shared by the dispatch and fallback tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fastact as fa
from fastact import _config

PACKAGE_ROOT = Path(fa.__file__).resolve().parent.parent
TIMEOUT = 120


def subprocess_environment(tmp_path_factory) -> dict:
    """Environment for fresh interpreters: this checkout first on the path, no FASTACT_BACKEND,
    and the same kernel cache as this process (so Numba kernels load instead of compiling)."""
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


def run_python(code: str, env: dict, timeout: float = TIMEOUT, cwd=None) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line.
    (``cwd``, default the checkout, is first on the child's ``sys.path``.)"""
    try:
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                              capture_output=True, text=True, timeout=timeout,
                              cwd=str(PACKAGE_ROOT if cwd is None else cwd))
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"subprocess did not finish in {timeout} s; stderr: {exc.stderr}")
    assert proc.returncode == 0, f"subprocess failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


#: Preamble for a subprocess: wraps every kernel of every available backend module so that
#: ``LOG`` records which backend ran.
RECORDER = """
import importlib, json, sys
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
"""
