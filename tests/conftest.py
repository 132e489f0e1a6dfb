"""Shared fixtures: the backend matrix, required backends, and CI strictness.

* ``FASTACT_REQUIRE_BACKENDS=numba,cython,numpy`` makes the session fail at start if one of them
  is unavailable (so a broken build cannot pass by skipping).
* ``CI=true`` turns a test skipped for a missing Python dependency (``pytest.importorskip``)
  into a failure.
"""

from __future__ import annotations

import os

import pytest

import fastact as fa
from fastact import _config
from fastact import _dispatch

HOST_BACKENDS = _dispatch.HOST_PRIORITY  # numba, cython, numpy
REQUIRED = _config.REQUIRE_BACKENDS
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def pytest_sessionstart(session):
    from fastact import _dispatch

    missing = _dispatch.missing_required()
    if missing:
        raise pytest.UsageError(f"FASTACT_REQUIRE_BACKENDS: unavailable backends: {missing}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and call.excinfo is not None:
        reason = str(call.excinfo.value)
        if "could not import" in reason or "No module named" in reason:
            report.outcome = "failed"
            report.longrepr = f"CI=true: skipped for a missing dependency: {reason}"


@pytest.fixture(params=HOST_BACKENDS)
def backend(request):
    """Every host backend; unavailable ones skip (and fail the session if required)."""
    name = request.param
    if name not in fa.backends():
        pytest.skip(f"backend {name} unavailable: {fa.backend_info()[name].get('reason')}")
    return name
