"""Measured dispatch: which host backend runs each function, per dtype and size.

Automatic dispatch for NumPy arrays (DESIGN.md section 2) asks the *dispatch table* first. The
table maps a public function name (``"sigmoid"``, ``"sigmoid_backward"``,
``"cross_entropy_and_grad"``: one name per op and form, as everywhere) and a compute dtype
(``float32`` or ``float64``; float16 runs the float32 kernels) to runs of sizes, each with the
backend that was fastest there::

    "gelu": {"float32": [[0, "numba"], [316228, "cython"]]}

reads "numba below 316,228 elements, cython from there on".  A function, dtype or backend the
table does not name falls back to the priority order (numba, cython, numpy), as does every
call when no table is active.

Where the table comes from (the first that applies; ``backend_info()["dispatch"]`` says which):

1. ``FASTACT_DISPATCH_TABLE=off`` (or ``none``): no table, priority order only;
   ``FASTACT_DISPATCH_TABLE=<file>``: that JSON file;
2. the table ``python -m fastact tune`` wrote for this machine into the cache directory
   (``<cache dir>/dispatch-<machine id>.json``: the id hashes the CPU model and the thread
   count, so a home directory shared by several machines keeps one table per machine);
3. the defaults shipped with fastact (``fastact/_dispatch_table.json``), measured by
   ``python -m fastact tune --full`` on the 2-core development machine.

A table is not used (priority order instead, and ``backend_info()`` says why) when the Cython
extension was built without OpenMP (the table's Cython timings were multi-threaded) or the file
is unreadable or of another format version.

How ``tune`` decides: for every function, dtype and size it times the *automatic* call (the
public function with ``backend=None``, so Numba's small-array fast path counts) once with each
candidate backend forced in the table, best of several calls (:func:`fastact._bench.best_of`).
A backend replaces the priority order's first choice only when it is faster by more than
:data:`MARGIN`; a change of choice between two measured sizes takes effect at their geometric
mean, and the choice at the largest measured size holds above it.  NumPy is not a candidate: the
reference backend is never the fastest where a compiled one exists.
"""

from __future__ import annotations

import bisect
import datetime
import hashlib
import json
import logging
import math
import os
import platform
import time
from typing import Callable

import numpy as np

from . import _config

log = logging.getLogger("fastact")

#: Format version of the table files; a file of another version is ignored.
VERSION = 1
#: Backends ``tune`` times (in priority order: the first is the default choice).
CANDIDATES = ("numba", "cython")
#: A later candidate must be this much faster than the first to be chosen (timing noise on a
#: shared machine is a few percent; the issue's goal is "within 10% of the best").
MARGIN = 0.05
#: Element counts ``tune`` measures (``--full`` adds ``FULL_EXTRA``).  1e3: Numba's fast path
#: against Cython's call; 1e5: parallel kernels on data in L2/L3; 1e6: the largest size quick
#: enough for a one-minute tune, its choice extends upwards.
SIZES = (1_000, 100_000, 1_000_000)
FULL_EXTRA = (10_000_000,)
#: The shipped defaults.
SHIPPED_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_dispatch_table.json")


# ------------------------------------------------------------------------------------------------
# the table
# ------------------------------------------------------------------------------------------------

class DispatchTable:
    """A loaded table: ``choice(key, dtype, size)`` is the backend to use, or None."""

    def __init__(self, data: dict, source: str):
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ValueError(f"not a fastact dispatch table of version {VERSION}")
        self.data = data
        self.source = source
        self._runs: dict[tuple[str, str], tuple[list[int], list[str]]] = {}
        for key, per_dtype in data.get("choices", {}).items():
            for dtype, runs in per_dtype.items():
                starts = [int(start) for start, _ in runs]
                names = [str(name) for _, name in runs]
                if not starts or starts[0] != 0 or starts != sorted(starts):
                    raise ValueError(f"dispatch table {source}: bad runs for {key}/{dtype}")
                self._runs[key, dtype] = (starts, names)

    def choice(self, key: str, dtype: str, size: int) -> str | None:
        runs = self._runs.get((key, dtype))
        if runs is None:
            return None
        starts, names = runs
        return names[bisect.bisect_right(starts, size) - 1]

    def runs(self, key: str, dtype: str) -> tuple[list[int], list[str]] | None:
        """(starts, backends) of ``key``/``dtype``'s runs, or None without an entry."""
        return self._runs.get((key, dtype))

    def limit(self, key: str, dtype: str, backend: str) -> int:
        """The size from which ``key``/``dtype`` stops using ``backend`` continuously from 0
        (0 if it does not start with it, a huge number if it never stops)."""
        runs = self._runs.get((key, dtype))
        if runs is None:
            return 1 << 62
        starts, names = runs
        for start, name in zip(starts, names):
            if name != backend:
                return start
        return 1 << 62

    def entries(self) -> int:
        return len(self._runs)

    def summary(self) -> dict:
        """What ``backend_info()["dispatch"]`` shows."""
        machine = self.data.get("machine", {})
        others = sorted({f"{key} ({dtype}): {', '.join(f'{n} from {s:,}' for s, n in zip(*r))}"
                         for (key, dtype), r in self._runs.items() if set(r[1]) != {CANDIDATES[0]}})
        return {"source": self.source, "measured": self.data.get("created"),
                "machine": machine.get("cpu"), "threads": machine.get("threads"),
                "sizes": self.data.get("sizes"), "entries": self.entries(),
                "not_" + CANDIDATES[0]: others}


def machine() -> dict:
    """What a table's timings depend on: CPU model, architecture, threads, versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import numba  # noqa: F401  (only called where numba is available)

    return {"cpu": cpu, "arch": platform.machine(), "threads": _config.default_threads(),
            "numpy": np.__version__, "numba": numba.__version__,
            "python": platform.python_version()}


def machine_id() -> str:
    """A short hash of the CPU model, architecture and default thread count."""
    m = machine()
    text = f"{m['cpu']}|{m['arch']}|{m['threads']}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def user_table_path() -> str:
    return os.path.join(_config.cache_dir(), f"dispatch-{machine_id()}.json")


def read(path: str, source: str | None = None) -> DispatchTable:
    with open(path) as f:
        return DispatchTable(json.load(f), source or path)


def load() -> tuple[DispatchTable | None, str]:
    """(the table to use or None, why) following the order in the module docstring."""
    setting = os.environ.get("FASTACT_DISPATCH_TABLE", "").strip()
    if setting.lower() in ("off", "none"):
        return None, f"FASTACT_DISPATCH_TABLE={setting}: priority order only"
    candidates = []
    if setting:
        candidates.append((os.path.abspath(os.path.expanduser(setting)),
                           "FASTACT_DISPATCH_TABLE"))
    else:
        try:
            candidates.append((user_table_path(), "measured here by `python -m fastact tune`"))
        except Exception as exc:  # pragma: no cover - numba missing: no table needed anyway
            log.debug("fastact: no machine id: %s", exc)
        candidates.append((SHIPPED_PATH, "shipped defaults"))
    problems = []
    for path, what in candidates:
        if what != "FASTACT_DISPATCH_TABLE" and not os.path.exists(path):
            continue
        try:
            return read(path, f"{what}: {path}"), ""
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: {exc}")
            log.warning("fastact: ignoring dispatch table %s: %s", path, exc)
    return None, "; ".join(problems) or "no table found"


# ------------------------------------------------------------------------------------------------
# measuring
# ------------------------------------------------------------------------------------------------

def functions() -> list[tuple[str, str]]:
    """(op, form) of every public host function the table covers (all of them)."""
    from . import _registry

    return [(op.name, form) for op in _registry.OPS for form in op.forms]


def decide(sizes: list[int], timings: dict[str, list[float]]) -> list[list]:
    """Runs ``[[start, backend], ...]`` from per-backend times at ``sizes`` (see MARGIN)."""
    base = CANDIDATES[0] if CANDIDATES[0] in timings else next(iter(timings))
    winners = []
    for i in range(len(sizes)):
        best = base
        for name, times in timings.items():
            if times[i] < timings[best][i] * (1 - MARGIN if best == base else 1):
                best = name
        winners.append(best)
    runs = [[0, winners[0]]]
    for i in range(1, len(sizes)):
        if winners[i] != runs[-1][1]:
            runs.append([int(math.sqrt(sizes[i - 1] * sizes[i])), winners[i]])
    return runs


def measure(cases=None, dtypes=("float32", "float64"), sizes=SIZES, min_time: float = 0.01,
            progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Time every (op, form) of ``cases`` (default: :func:`functions`) on each available
    candidate backend and return the table as a dict (``choices`` plus the raw ``timings``).
    Kernels are compiled first (``fastact.warmup``) and that time is reported separately."""
    from . import _bench, _dispatch, _registry, _tools

    cases = list(functions() if cases is None else cases)
    sizes = sorted(int(s) for s in sizes)
    dtypes = [np.dtype(d).name for d in dtypes]
    backends = [b for b in CANDIDATES if _dispatch.available(b)]
    start = time.perf_counter()
    _bench.steady_allocator()
    compile_start = time.perf_counter()
    if "numba" in backends:
        _tools.warmup(sorted({op for op, _ in cases}), dtypes)
    compile_s = time.perf_counter() - compile_start
    total = len(cases) * len(dtypes) * len(sizes)
    done = 0
    choices: dict = {}
    timings: dict = {}
    saved = _dispatch.dispatch_table()
    try:
        for dtype in dtypes:
            for size in sizes:
                x = _bench.make_input(size, dtype)
                for op, form in cases:
                    key = _registry.get(op).public_name(form)
                    if progress:
                        progress(done, total, f"{key} {dtype} {_bench.format_size(size)}")
                    case = _bench.make_case(op, form, size, dtype, x=x)
                    row = timings.setdefault(key, {}).setdefault(dtype, {})
                    for backend in backends:
                        _dispatch.set_dispatch_table(DispatchTable(
                            {"version": VERSION, "choices": {key: {dtype: [[0, backend]]}}},
                            "tune"))
                        t, _ = _bench.best_of(case.fastact(None), min_time)
                        row.setdefault(backend, []).append(float(f"{t:.4g}"))
                    done += 1
                    del case
    finally:
        _dispatch.set_dispatch_table(saved)
    for key, per_dtype in timings.items():
        for dtype, row in per_dtype.items():
            choices.setdefault(key, {})[dtype] = decide(sizes, row)
    if progress:
        progress(total, total, "done")
    return {"version": VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"),
            "machine": machine(), "backends": backends, "sizes": sizes, "margin": MARGIN,
            "min_time": min_time, "compile_s": round(compile_s, 3),
            "total_s": round(time.perf_counter() - start, 3),
            "choices": choices, "timings": timings}


def write(data: dict, path: str) -> None:
    """Write a table atomically (a concurrent reader sees the old file or the new one)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def report(data: dict) -> str:
    """A plain-text summary of a measured table: the functions where the choice is not the
    first candidate's, with the measured speed-up over it."""
    first = CANDIDATES[0]
    lines = []
    sizes = data["sizes"]
    for key, per_dtype in data["choices"].items():
        for dtype, runs in per_dtype.items():
            if all(name == first for _, name in runs):
                continue
            row = data["timings"][key][dtype]
            gains = ", ".join(
                f"{s:,}: {row[first][i] / min(row[b][i] for b in row):.2f}x"
                for i, s in enumerate(sizes))
            where = ", ".join(f"{name} from {start:,}" for start, name in runs)
            lines.append(f"  {key} ({dtype}): {where}   [best vs {first}: {gains}]")
    n = sum(len(v) for v in data["choices"].values())
    head = (f"{n} function/dtype entries over sizes {', '.join(f'{s:,}' for s in sizes)}; "
            f"{len(lines)} use another backend than {first} somewhere:")
    return "\n".join([head] + sorted(lines))
