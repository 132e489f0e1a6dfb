"""Backend selection: availability probes, precedence, threads.

Precedence (DESIGN.md section 2): ``backend=`` argument > :func:`use_backend` context >
``FASTACT_BACKEND`` > automatic.  Automatic dispatch for host arrays asks the measured dispatch
table (``fastact._tuning``: the backend per function, dtype and size) and otherwise takes the
first available backend of :data:`HOST_PRIORITY`, falling back quietly (a debug log line); an
explicitly requested backend that is unavailable raises :class:`BackendUnavailable`.  Backends
are imported on first use, so ``import fastact`` imports no optional dependency and compiles
nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import logging
import os

from . import _config

log = logging.getLogger("fastact")

#: Every backend name fastact knows, in automatic-priority order.
KNOWN = ("cuda", "numba", "cython", "numpy")
#: Automatic choice for host (NumPy) arrays where the dispatch table says nothing.
HOST_PRIORITY = ("numba", "cython", "numpy")

_MODULES = {
    "numba": "fastact.kernels.numba_cpu",
    "cython": "fastact.kernels._cython_kernels",
    "numpy": "fastact.kernels.numpy_ref",
    "cuda": "fastact.kernels.numba_cuda",
}


class BackendUnavailable(RuntimeError):
    """An explicitly requested backend cannot be used here (the message says why)."""


_loaded: dict[str, object] = {}
_reasons: dict[str, str] = {}
_num_threads: int | None = None


#: GOMP_SPINCOUNT for the OpenMP runtime (libgomp) that the Cython kernels load, where the
#: user has set neither it nor OMP_WAIT_POLICY: how long (in pause instructions) an OpenMP
#: thread spins after a parallel region before it sleeps.  libgomp's default, 300,000 (~8 ms
#: here), keeps every core busy long after a Cython kernel returns, and whatever runs next
#: competes with it: on the 2-core development machine a 200x200 np.dot (OpenBLAS, 0.29 ms
#: alone) took 7.9 ms right after a 1e5-element Cython call, 0.2-0.5 ms with 10,000; Numba's
#: TBB pool lost up to 2x on the call after a Cython one.  Back-to-back Cython calls are
#: unchanged (relu on 40,000 float32 elements 8 us); a Cython call after 0.5-2 ms of other
#: work pays ~40-60 us more to wake the threads (tanh 1e5: 88 -> 131 us).  Measured with
#: benchmarks/tools/openmp_spin_experiment.py.
OMP_SPINCOUNT = "10000"
#: How the Cython kernels' OpenMP spin was set (backend_info()["cython"]["omp_spin"]).
_omp_spin_state = {"how": "not loaded"}


@contextlib.contextmanager
def _libgomp_spin():
    """Import the OpenMP kernels with GOMP_SPINCOUNT=OMP_SPINCOUNT in the environment, which
    libgomp reads once, when it is loaded; the variable is removed afterwards (child processes
    and other libraries see the environment as it was).  No effect where libgomp is already
    loaded (its setting stands) or the user set GOMP_SPINCOUNT or OMP_WAIT_POLICY."""
    user = [k for k in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY") if k in os.environ]
    if user:
        _omp_spin_state["how"] = "as set by " + ", ".join(f"{k}={os.environ[k]}" for k in user)
        yield
        return
    if _libgomp_loaded():
        _omp_spin_state["how"] = ("libgomp's own setting (it was loaded before the Cython "
                                  "kernels)")
        yield
        return
    os.environ["GOMP_SPINCOUNT"] = OMP_SPINCOUNT
    try:
        yield
    finally:
        os.environ.pop("GOMP_SPINCOUNT", None)
    _omp_spin_state["how"] = f"GOMP_SPINCOUNT={OMP_SPINCOUNT} (fastact's default)"


def _libgomp_loaded() -> bool:
    try:
        with open("/proc/self/maps") as f:
            return "libgomp" in f.read()
    except OSError:  # not Linux: assume not (the variable is then set and removed unused)
        return False


def _load(name: str):
    """The kernel module of backend ``name``, or None (with the reason in ``_reasons``)."""
    if name in _loaded:
        return _loaded[name]
    module = None
    if name == "cuda":
        module = _load_cuda()
    else:
        try:
            with _libgomp_spin() if name == "cython" else contextlib.nullcontext():
                module = importlib.import_module(_MODULES[name])
        except ImportError as exc:
            what = {"numba": "numba is not importable",
                    "cython": "the compiled extension fastact.kernels._cython_kernels is "
                              "missing (reinstall with a C compiler: pip install -e .)"}.get(
                name, "import failed")
            _reasons[name] = f"{what}: {exc}"
        except Exception as exc:  # a broken install must not break fastact
            _reasons[name] = f"failed to initialise: {type(exc).__name__}: {exc}"
    if module is not None and hasattr(module, "set_num_threads"):
        # the cap set by set_num_threads, else the affinity mask / OMP_NUM_THREADS /
        # NUMBA_NUM_THREADS (no oversubscription in pool workers)
        try:
            module.set_num_threads(_num_threads if _num_threads is not None
                                   else _config.default_threads())
        except Exception as exc:  # pragma: no cover - a backend that cannot set threads
            log.debug("fastact: %s.set_num_threads failed: %s", name, exc)
    if module is None:
        log.debug("fastact: backend %s unavailable: %s", name, _reasons[name])
    _loaded[name] = module
    return module


def _load_cuda():
    """The CUDA kernel module if numba-cuda imports and a device (or the simulator) is usable;
    else None with the reason (package missing / no driver / no device) in ``_reasons``."""
    try:
        from numba import cuda
    except ImportError as exc:
        _reasons["cuda"] = (f"numba-cuda is not installed (pip install 'fastact[cuda]'): {exc}")
        return None
    except Exception as exc:  # a broken install must not break fastact
        _reasons["cuda"] = f"numba.cuda failed to import: {type(exc).__name__}: {exc}"
        return None
    simulated = bool(getattr(getattr(cuda, "config", None), "ENABLE_CUDASIM", False))
    if not simulated:
        try:
            usable = cuda.is_available()
        except Exception as exc:
            usable, why = False, f"{type(exc).__name__}: {exc}"
        else:
            why = ""
        if not usable:
            try:
                from numba.cuda.cudadrv import driver as _drv

                init_error = getattr(_drv.driver, "initialization_error", None)
            except Exception as exc:
                init_error = f"{type(exc).__name__}: {exc}"
            if init_error:
                _reasons["cuda"] = "no usable CUDA driver: " + " ".join(str(init_error).split())
            else:
                _reasons["cuda"] = ("no CUDA device found (the driver loaded but reports no "
                                    f"usable GPU){': ' + why if why else ''}")
            return None
    try:
        return importlib.import_module(_MODULES["cuda"])
    except Exception as exc:
        _reasons["cuda"] = f"failed to initialise: {type(exc).__name__}: {exc}"
        return None


def check_name(name) -> str:
    if not isinstance(name, str) or name.strip().lower() not in KNOWN:
        raise ValueError(f"fastact: unknown backend {name!r}; known backends: {', '.join(KNOWN)}")
    return name.strip().lower()


def available(name: str) -> bool:
    return _load(name) is not None


def backends() -> list[str]:
    """Names of the usable backends, in automatic-priority order."""
    return [name for name in KNOWN if _load(name) is not None]


def _unavailable(name: str) -> BackendUnavailable:
    return BackendUnavailable(
        f"fastact: backend {name!r} is unavailable: {_reasons.get(name, 'unknown reason')}; "
        f"available backends: {', '.join(backends())}")


_context: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "fastact_backend", default=None)


@contextlib.contextmanager
def use_backend(name: str | None):
    """Use backend ``name`` for calls in this thread/task inside the ``with`` block.

    ``None`` restores automatic selection.  An unknown name raises ValueError and an
    unavailable one :class:`BackendUnavailable`, both on entry.
    """
    if name is not None:
        name = check_name(name)
        if _load(name) is None:
            raise _unavailable(name)
    token = _context.set(name)
    try:
        yield name
    finally:
        _context.reset(token)


# ------------------------------------------------------------------------------------------------
# the measured dispatch table (fastact._tuning)
# ------------------------------------------------------------------------------------------------

_table_state: dict = {"loaded": False, "table": None, "why": ""}
#: Called with no arguments whenever the active table changes (the API's fast-path tables).
TABLE_LISTENERS: list = []


def dispatch_table():
    """The active :class:`fastact._tuning.DispatchTable`, or None (loaded on first use)."""
    if not _table_state["loaded"]:
        from . import _tuning

        table, why = _tuning.load()
        if table is not None and _uses_unthreaded_cython(table):
            table, why = None, (f"{table.source} not used: the Cython extension was built "
                                "without OpenMP, unlike the one the table was measured with")
        _table_state.update(loaded=True, table=table, why=why)
    return _table_state["table"]


def _uses_unthreaded_cython(table) -> bool:
    module = _load("cython")
    return (module is not None and hasattr(module, "info")
            and module.info().get("openmp") is False
            and "cython" in table.data.get("backends", ("cython",)))


def set_dispatch_table(table) -> None:
    """Make ``table`` (a ``DispatchTable`` or None for priority order only) the active one."""
    _table_state.update(loaded=True, table=table, why="" if table is not None else "set to None")
    for listener in TABLE_LISTENERS:
        listener()


def reload_dispatch_table() -> None:
    """Forget the active table; the next automatic call loads it again (after ``tune``)."""
    _table_state.update(loaded=False, table=None, why="")
    for listener in TABLE_LISTENERS:
        listener()


def resolve(backend: str | None, device: bool = False, key: str | None = None,
            dtype: str | None = None, size: int = 0) -> tuple[str, object]:
    """(name, kernel module) for a call, applying the precedence rules.

    ``device=True`` (the inputs are CUDA device arrays): automatic dispatch picks ``cuda``,
    the only backend that computes on device arrays; a host backend requested explicitly (or by
    the context / environment) is refused by the caller (``fastact._device``).  For host
    arrays, ``key`` (the public function's name), ``dtype`` (the compute dtype's name) and
    ``size`` (elements) look up the measured dispatch table.
    """
    requested = backend if backend is not None else (_context.get() or _config.BACKEND)
    if requested is not None:
        name = check_name(requested)
        module = _load(name)
        if module is None:
            raise _unavailable(name)
        return name, module
    if device:
        module = _load("cuda")
        if module is None:
            raise _unavailable("cuda")
        return "cuda", module
    if key is not None:
        table = _table_state["table"] if _table_state["loaded"] else dispatch_table()
        if table is not None:
            name = table.choice(key, dtype, size)
            if name is not None and name in HOST_PRIORITY:
                module = _load(name)
                if module is not None:
                    return name, module
    for name in HOST_PRIORITY:
        module = _load(name)
        if module is not None:
            return name, module
    raise _unavailable("numpy")  # pragma: no cover - numpy is always importable


def select_backend(op_name: str, *arrays, backend: str | None = None) -> str:
    """The backend automatic dispatch (with the current context/environment) would use.

    ``op_name`` is an op (``"sigmoid"``: its forward function) or a public function name
    (``"sigmoid_backward"``, ``"cross_entropy_and_grad"``); the first array's size and the
    result dtype of all of them look up the dispatch table.
    """
    import numpy as np

    from . import _device, _validate

    key = _function_key(op_name)
    if any(_device.is_device_array(a) for a in arrays):
        return resolve(backend, device=True)[0]
    named = [np.asarray(a) for a in arrays]
    floats = [a for a in named if a.dtype.kind == "f"]
    if not floats:
        return resolve(backend, key=key, dtype="float64", size=named[0].size if named else 0)[0]
    try:
        dtype = _validate.compute_dtype(_validate.result_dtype(*floats)).name
    except KeyError:  # a dtype the functions convert first (big-endian, longdouble)
        dtype = "float64"
    return resolve(backend, key=key, dtype=dtype, size=named[0].size)[0]


def _function_key(name: str) -> str:
    """The dispatch-table key (public function name) of an op or function name."""
    from . import _registry

    if name in _registry.OPS_BY_NAME:
        spec = _registry.OPS_BY_NAME[name]
        return spec.public_name("forward" if "forward" in spec.forms else spec.forms[0])
    for spec in _registry.OPS:
        for form in spec.forms:
            if spec.public_name(form) == name:
                return name
    _registry.get(name)  # raises the registry's "unknown op" error
    return name  # pragma: no cover


def _default_threads() -> int:
    return _config.default_threads()


def set_num_threads(n: int) -> int:
    """Cap the threads of the parallel kernels at ``n`` (>= 1); returns the previous cap.

    The cap is process-wide (every Python thread).  Results do not depend on it: every kernel
    gives bitwise-identical results for any thread count (elementwise ops trivially; row sums
    are computed per row, and prelu's weight gradient in fixed-size blocks combined in a fixed
    order, never per thread).
    """
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"fastact.set_num_threads: n must be an integer >= 1, got {n!r}")
    previous = _num_threads if _num_threads is not None else _default_threads()
    _num_threads = n
    for module in _loaded.values():
        if module is not None and hasattr(module, "set_num_threads"):
            module.set_num_threads(n)
    return previous


def missing_required() -> str:
    """Why the backends named in ``FASTACT_REQUIRE_BACKENDS`` are unavailable ("" if all are
    there).  The test and benchmark suites refuse to run without them (CI sets it)."""
    missing = [b for b in _config.REQUIRE_BACKENDS if b not in KNOWN or _load(b) is None]
    return "; ".join(f"{b}: {_reasons.get(b, 'unknown backend')}" for b in missing)


def backend_info() -> dict:
    """Per backend: available or why not, plus versions, threads and threading details."""
    info = {}
    for name in KNOWN:
        module = _load(name)
        entry = {"available": module is not None}
        if module is None:
            entry["reason"] = _reasons.get(name, "")
        elif hasattr(module, "info"):
            entry.update(module.info())
            if entry.get("openmp") is False:
                entry["openmp_reason"] = (
                    "built without OpenMP (the C compiler did not accept -fopenmp): kernels run "
                    "on one thread; automatic dispatch prefers numba when it is available")
        if name == "cython" and entry.get("openmp"):
            entry["omp_spin"] = _omp_spin_state["how"]
        info[name] = entry
    info["threads"] = {
        "set_num_threads": _num_threads,
        "default": _config.default_threads(),
        "limits": _config.thread_limits(),
    }
    table = dispatch_table()
    info["dispatch"] = (table.summary() if table is not None
                        else {"source": None, "why": _table_state["why"]})
    try:  # the small-array fast path's guards (fastact.api._fast_elementwise and twins)
        import fastact._fastcall  # noqa: F401

        info["fast_path"] = "C helpers (fastact._fastcall)"
    except ImportError as exc:
        info["fast_path"] = f"Python helpers (fastact._fastcall is not built: {exc})"
    info["selected"] = {
        "automatic": next((n for n in HOST_PRIORITY if info[n]["available"]), None),
        "FASTACT_BACKEND": _config.BACKEND,
        "context": _context.get(),
    }
    return info
