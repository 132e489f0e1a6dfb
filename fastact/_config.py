"""Environment variables and the cache directory, read once at import.

``FASTACT_BACKEND``             backend used when neither ``backend=`` nor ``use_backend`` says
``FASTACT_CACHE_DIR``           where compiled kernels (and later the tuning table) are stored
``FASTACT_PARALLEL_THRESHOLD``  element count from which the multi-threaded kernels are used
``FASTACT_NO_CACHE``            any non-empty value: never write compiled kernels to disk
``FASTACT_REQUIRE_BACKENDS``    comma list; the test suite fails if one of them is unavailable
"""

from __future__ import annotations

import os
import sys

BACKEND: str | None = os.environ.get("FASTACT_BACKEND", "").strip().lower() or None

NO_CACHE: bool = bool(os.environ.get("FASTACT_NO_CACHE", "").strip())

REQUIRE_BACKENDS: tuple[str, ...] = tuple(
    b.strip().lower() for b in os.environ.get("FASTACT_REQUIRE_BACKENDS", "").split(",")
    if b.strip())


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        print(f"fastact: ignoring {name}={raw!r} (not a number)", file=sys.stderr)
        return default
    return max(value, 0)


#: Below this many elements a serial kernel is faster than waking the thread pool. Measured on
#: the 2-core dev machine with the benchmark group ``sigmoid-forward`` (issue 7 replaces this
#: single number with a per-op tuning table).
PARALLEL_THRESHOLD: int = _int_env("FASTACT_PARALLEL_THRESHOLD", 1 << 15)


def cache_dir() -> str:
    """The directory fastact may write to (it may not exist or be writable: callers probe)."""
    explicit = os.environ.get("FASTACT_CACHE_DIR", "").strip()
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    numba_dir = os.environ.get("NUMBA_CACHE_DIR", "").strip()
    if numba_dir:
        return os.path.join(os.path.abspath(os.path.expanduser(numba_dir)), "fastact")
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = xdg or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastact")


def writable_dir(path: str) -> bool:
    """Create ``path`` if needed and check that a file can be written there."""
    import tempfile

    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError:
        return False
    return True
