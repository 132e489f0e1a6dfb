"""Command line: ``python -m fastact {info,bench,plot}`` (also the ``fastact`` console script).

* ``info``  -- the backends: available or why not, versions, threads, Numba threading layer,
  Cython OpenMP, cache directory, and what automatic dispatch picks.
* ``bench`` -- fastact's automatic backend against the plain NumPy expressions, with
  ``np.copyto`` of the same bytes as the memory-bandwidth yardstick (see ``fastact._bench``).
* ``plot``  -- activation functions and their derivatives drawn to a PNG (``fastact._plot``).
* ``tune``  -- re-measure the dispatch table (numba or cython per function, dtype and size) on
  this machine and store it in the cache directory (``fastact._tuning``).

Each subcommand is one ``_add_<name>`` function registered in :data:`SUBCOMMANDS` below.  The work lives in importable
modules (``fastact._bench`` ...); this file only parses arguments and prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


# ------------------------------------------------------------------------------------------------
# info
# ------------------------------------------------------------------------------------------------

_LABELS = {
    "version": "version",
    "threads": "threads",
    "max_threads": "max threads",
    "threading_layer": "threading layer",
    "openmp": "OpenMP",
    "parallel_threshold": "parallel from (elements)",
    "cache": "kernel cache",
}


def _info_text(info: dict) -> str:
    import fastact
    import numpy as np

    from . import _config, _dispatch

    lines = [f"fastact {fastact.__version__} (Python {sys.version.split()[0]}, "
             f"NumPy {np.__version__}) at {os.path.dirname(os.path.abspath(fastact.__file__))}",
             "", "backends (automatic-priority order):"]
    width = max(len(n) for n in _dispatch.KNOWN)
    for name in _dispatch.KNOWN:
        entry = info.get(name, {})
        if not entry.get("available"):
            lines.append(f"  {name:<{width}}  unavailable: {entry.get('reason') or 'unknown'}")
            continue
        lines.append(f"  {name:<{width}}  available")
        for key, value in entry.items():
            if key == "available":
                continue
            if isinstance(value, bool):
                value = "yes" if value else "no"
            lines.append(f"  {'':<{width}}    {_LABELS.get(key, key.replace('_', ' '))}: {value}")
    selected = info.get("selected", {})
    cache = _config.cache_dir()
    lines += [
        "",
        f"automatic selection (host arrays): {selected.get('automatic')}",
        f"threads: {info.get('threads', {}).get('set_num_threads') or 'default'} "
        f"(default {info.get('threads', {}).get('default')}, limits "
        f"{info.get('threads', {}).get('limits')})",
        f"FASTACT_BACKEND: {selected.get('FASTACT_BACKEND') or '(not set)'}",
        f"cache dir: {cache} "
        f"({'writable' if _config.writable_dir(cache) else 'not writable: no disk cache'})",
    ]
    dispatch = info.get("dispatch", {})
    if dispatch.get("source"):
        lines.append(f"dispatch table: {dispatch['source']} (measured {dispatch.get('measured')} "
                     f"on {dispatch.get('machine')}, {dispatch.get('threads')} threads; "
                     f"{dispatch.get('entries')} function/dtype entries)")
        others = dispatch.get("not_numba") or []
        shown = 8  # the whole list: `python -m fastact tune --show` or backend_info()
        lines.append(f"  not numba somewhere: {len(others)} entries"
                     + (f" (first {shown}; all: `python -m fastact tune --show`)"
                        if len(others) > shown else "") if others else "  numba everywhere")
        lines += [f"    {entry}" for entry in others[:shown]]
    else:
        lines.append(f"dispatch table: none ({dispatch.get('why')}); priority order only")
    return "\n".join(lines)


def _cmd_info(args) -> int:
    from . import _dispatch

    info = _dispatch.backend_info()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        print(_info_text(info))
    return 0


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="show the backends, their versions and threads, and the "
                                    "automatic selection")
    p.add_argument("--json", action="store_true", help="print fastact.backend_info() as JSON")
    p.set_defaults(func=_cmd_info)


# ------------------------------------------------------------------------------------------------
# bench
# ------------------------------------------------------------------------------------------------

def _cmd_bench(args) -> int:
    from . import _bench

    sizes = args.sizes or (_bench.QUICK_SIZES if args.quick else _bench.DEFAULT_SIZES)
    min_time = args.min_time if args.min_time is not None else (0.02 if args.quick else 0.1)

    def progress(msg):
        if args.verbose:
            print(f"  timing {msg}", file=sys.stderr, flush=True)

    print(f"compiling and timing {len(_bench.main_cases())} ops at "
          f"{', '.join(_bench.format_size(s) for s in sizes)} elements ({args.dtype}) ...",
          file=sys.stderr, flush=True)
    run = _bench.run_bench(sizes, args.dtype, backend=args.backend, min_time=min_time,
                           progress=progress, steady_malloc=args.malloc == "steady")
    print(_bench.bench_report(run, markdown=not args.plain))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"dtype": run.dtype, "sizes": list(run.sizes),
                       "requested_backend": run.requested_backend, "warmed": run.warmed,
                       "compile_s": run.compile_s, "total_s": run.total_s,
                       "allocator": run.allocator,
                       "results": [r.as_dict() for r in run.results]}, f, indent=1)
        print(f"results written to {args.json}")
    return 0


def _size(text: str) -> int:
    from . import _bench

    try:
        return _bench.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_bench(sub) -> None:
    p = sub.add_parser(
        "bench", help="time fastact against the NumPy expressions",
        description="Time every op's forward form (plus sigmoid/relu/softmax backward) on "
                    "fastact's automatic backend against the NumPy expression a user would "
                    "write, with np.copyto of the same bytes as the bandwidth yardstick. "
                    "Kernels are compiled first (fastact.warmup), and that time is reported "
                    "separately.")
    p.add_argument("--quick", action="store_true",
                   help="one size (1e5) and short measurements (0.02 s each)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--sizes", nargs="+", type=_size, metavar="N",
                   help="element counts, e.g. 1e5 1e7 (default: 1e5 1e7; --quick: 1e5)")
    p.add_argument("--backend", default=None,
                   help="time this backend instead of the automatic choice")
    p.add_argument("--min-time", type=float, default=None, metavar="S",
                   help="seconds per measurement (best of N calls; default 0.1, --quick 0.02)")
    p.add_argument("--malloc", choices=("steady", "default"), default="steady",
                   help="steady (default): glibc keeps freed memory, so timings do not depend "
                        "on page faults from the heap's history; default: leave malloc alone")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--plain", action="store_true", help="plain columns instead of markdown")
    p.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    p.set_defaults(func=_cmd_bench)


# ------------------------------------------------------------------------------------------------
# plot
# ------------------------------------------------------------------------------------------------

def _cmd_plot(args) -> int:
    from . import _plot

    try:
        fig = _plot.plot(args.names, derivative=args.derivative, xlim=tuple(args.xlim))
    except ImportError as exc:
        print(f"fastact plot: {exc}", file=sys.stderr)
        return 2
    out = args.out or "_".join(_plot.parse_spec(n)[0] for n in args.names) + ".png"
    fig.savefig(out, dpi=args.dpi)
    print(f"wrote {out}")
    return 0


def _add_plot(sub) -> None:
    p = sub.add_parser(
        "plot", help="draw activation functions (and derivatives) to a PNG",
        description="Draw each activation on one figure (matplotlib, from the plot extra: "
                    'pip install "fastact[plot]").  Parameters go after a colon: '
                    "elu:alpha=0.5, leaky_relu:negative_slope=0.1, gelu:approximate=tanh, "
                    "prelu:weight=0.25.")
    p.add_argument("names", nargs="+", metavar="NAME",
                   help="op names, e.g. sigmoid tanh relu elu:alpha=0.5")
    p.add_argument("--derivative", action="store_true",
                   help="also draw each derivative (dashed, same colour)")
    p.add_argument("--out", metavar="FILE.png", help="output file (default: NAME_NAME.png)")
    p.add_argument("--xlim", nargs=2, type=float, default=(-5.0, 5.0), metavar=("LO", "HI"),
                   help="input range (default -5 5)")
    p.add_argument("--dpi", type=int, default=120, help="resolution of the PNG (default 120)")
    p.set_defaults(func=_cmd_plot)


# ------------------------------------------------------------------------------------------------
# tune
# ------------------------------------------------------------------------------------------------

class ProgressBar:
    """A one-line progress bar on stderr (redrawn in place on a terminal, else a line per
    10%)."""

    def __init__(self, title: str, stream=None, width: int = 30):
        self.title, self.stream, self.width = title, stream or sys.stderr, width
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.last_decile = -1

    def __call__(self, done: int, total: int, what: str) -> None:
        frac = done / total if total else 1.0
        if self.tty:
            filled = int(round(frac * self.width))
            bar = "#" * filled + "." * (self.width - filled)
            end = "\n" if done >= total else ""
            print(f"\r{self.title} [{bar}] {100 * frac:3.0f}% {what:<40.40}", end=end,
                  file=self.stream, flush=True)
        elif int(frac * 10) != self.last_decile:
            self.last_decile = int(frac * 10)
            print(f"{self.title}: {100 * frac:3.0f}% ({what})", file=self.stream, flush=True)


def _cmd_tune(args) -> int:
    from . import _dispatch, _tuning

    if args.show:
        table = _dispatch.dispatch_table()
        if table is None:
            print(f"no dispatch table: {_dispatch.backend_info()['dispatch']['why']}")
            return 0
        print(f"dispatch table: {table.source}")
        print(_tuning.report(table.data) if "timings" in table.data else
              json.dumps(table.data["choices"], indent=1))
        return 0
    if not _dispatch.available("numba") or not _dispatch.available("cython"):
        print("fastact tune: nothing to choose from: tuning compares the numba and cython "
              "backends and one is unavailable (see `python -m fastact info`)", file=sys.stderr)
        return 2
    sizes = args.sizes or (_tuning.SIZES + (_tuning.FULL_EXTRA if args.full else ()))
    cases = None
    if args.functions:
        wanted = set(args.functions)
        cases = [(op, form) for op, form in _tuning.functions()
                 if op in wanted or _registry_name(op, form) in wanted]
        if not cases:
            raise ValueError(f"no function matches {' '.join(args.functions)}")
    path = args.output or _tuning.user_table_path()
    print(f"measuring numba against cython for {len(cases or _tuning.functions())} functions, "
          f"{', '.join(args.dtypes)}, at {', '.join(f'{s:,}' for s in sizes)} elements "
          f"(kernels are compiled or loaded first) ...", file=sys.stderr, flush=True)
    data = _tuning.measure(cases, args.dtypes, sizes, args.min_time, ProgressBar("tune"))
    _tuning.write(data, path)
    _dispatch.reload_dispatch_table()
    print(_tuning.report(data))
    print(f"compile/load {data['compile_s']:.1f} s, total {data['total_s']:.1f} s; "
          f"table written to {path}")
    return 0


def _registry_name(op: str, form: str) -> str:
    from . import _registry

    return _registry.get(op).public_name(form)


def _add_tune(sub) -> None:
    from . import _tuning

    p = sub.add_parser(
        "tune", help="measure which backend is fastest per function, dtype and size here",
        description="Time the automatic call of every function with the numba and with the "
                    "cython backend, on float32 and float64 arrays of several sizes, and store "
                    "the winners as this machine's dispatch table in the cache directory (see "
                    "`python -m fastact info`). Automatic dispatch uses it from the next call.")
    p.add_argument("--full", action="store_true",
                   help=f"also measure {', '.join(f'{s:,}' for s in _tuning.FULL_EXTRA)} "
                        "elements (slower)")
    p.add_argument("--sizes", nargs="+", type=_size, metavar="N", help="element counts")
    p.add_argument("--dtypes", nargs="+", choices=("float32", "float64"),
                   default=["float32", "float64"])
    p.add_argument("--functions", nargs="+", metavar="NAME",
                   help="only these ops or functions (e.g. gelu softmax_backward)")
    p.add_argument("--min-time", type=float, default=0.01, metavar="S",
                   help="seconds per measurement (best of N calls; default 0.01)")
    p.add_argument("--output", metavar="FILE",
                   help="write the table here instead of the cache directory (use it with "
                        "FASTACT_DISPATCH_TABLE=FILE)")
    p.add_argument("--show", action="store_true",
                   help="print the active table and measure nothing")
    p.set_defaults(func=_cmd_tune)


# ------------------------------------------------------------------------------------------------
# subcommands
# ------------------------------------------------------------------------------------------------

#: One ``_add_<name>(subparsers)`` per subcommand.
SUBCOMMANDS = (_add_info, _add_bench, _add_plot, _add_tune)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastact", description="fastact: fast activation functions for NumPy arrays")
    sub = parser.add_subparsers(dest="command", metavar="{info,bench,plot,tune}")
    sub.required = True
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except (ValueError, RuntimeError) as exc:  # BackendUnavailable is a RuntimeError
        print(f"fastact {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
