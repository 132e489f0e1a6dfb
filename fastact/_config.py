"""Environment variables and the cache directory, read once at import.

``FASTACT_BACKEND``             backend used when neither ``backend=`` nor ``use_backend`` says
``FASTACT_CACHE_DIR``           where compiled kernels and the measured dispatch table are stored
``FASTACT_DISPATCH_TABLE``      ``off`` or a JSON file: the dispatch table to use (``fastact._tuning``)
``FASTACT_PARALLEL_THRESHOLD``  element count from which the multi-threaded kernels are used
``FASTACT_NO_CACHE``            any non-empty value: never write compiled kernels to disk
``FASTACT_REQUIRE_BACKENDS``    comma list; the test suite fails if one of them is unavailable

Threads: the parallel kernels of every backend use at most :func:`default_threads` threads: the
CPUs in this process's affinity mask (``os.sched_getaffinity``), capped by ``OMP_NUM_THREADS``
and ``NUMBA_NUM_THREADS`` when they are set, so that pool workers started with those variables
(or with a restricted affinity mask) do not oversubscribe the machine.
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
#: the 2-core dev machine with the benchmark group ``sigmoid-forward``.  (Which backend runs at
#: a given size is the dispatch table's choice, ``fastact._tuning``; this is each backend's own
#: serial/parallel switch.)
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


def _first_int(raw: str) -> int | None:
    """``OMP_NUM_THREADS`` may be a comma list (nested levels): the first level counts."""
    raw = raw.split(",")[0].strip()
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value >= 1 else None


def thread_limits() -> dict[str, int]:
    """What caps the thread count: ``affinity`` (CPUs this process may run on) and the
    ``OMP_NUM_THREADS`` / ``NUMBA_NUM_THREADS`` variables that are set to a positive integer.
    Read at each call: a pool initializer may change the affinity mask."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    limits = {"affinity": max(cpus, 1)}
    for name in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
        value = _first_int(os.environ.get(name, ""))
        if value is not None:
            limits[name] = value
    return limits


def default_threads() -> int:
    """Threads the parallel kernels use unless ``fastact.set_num_threads`` says otherwise."""
    return min(thread_limits().values())
