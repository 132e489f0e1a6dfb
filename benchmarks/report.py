#!/usr/bin/env python
"""Tables of ratios from a pytest-benchmark JSON of the fastact suite.

    pytest benchmarks/ --benchmark-only --benchmark-json=results.json
    python benchmarks/report.py results.json [--markdown] [--plot throughput.png]

For each op/form one table; a row per dtype/size (= one benchmark group); for each backend its
median time, its speed-up over ``numpy-expr`` (the plain NumPy expression; > 1 = fastact is
faster) and its throughput in GB/s with the % of the ``np.copyto`` bandwidth measured in the
same group; peers (SciPy, numexpr, PyTorch) are columns like the backends, and "best vs peer"
is the fastest fastact backend against the fastest of numpy-expr and the peers.  Then a
summary: the geometric-mean speed-up of each backend over numpy-expr and over the best peer,
in all and per size.  ``--plot`` draws throughput (GB/s) against size, one panel per op/form,
one line per backend and peer, with the copy bandwidth dashed.  Only ratios within one run
are meaningful on a shared machine.

Needs fastact (for its table formatting) and reads the ``extra_info`` written by
``benchmarks/test_bench.py`` (backend, op, form, dtype, size, bytes).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict

from fastact._bench import format_size, format_table, format_time

BASELINE = "numpy-expr"
COPY = "copy"
#: Share of the CPUs used by other processes above which a group is flagged as noisy.
NOISY = 0.2
#: Column order; backends not listed here follow in alphabetical order.
PREFERRED_ORDER = ("cuda", "numba", "cython", "numpy", BASELINE, "numexpr", "scipy", "torch",
                   COPY)
#: Columns that are not fastact: the NumPy expression and the peer libraries.
PEER_COLUMNS = (BASELINE, "numexpr", "scipy", "torch")
FORMS_ORDER = ("forward", "derivative", "and_derivative", "backward")


def load(path: str) -> list[dict]:
    """One record per benchmark: the ``extra_info`` fields plus ``median`` (seconds)."""
    with open(path) as f:
        data = json.load(f)
    records = []
    for bench in data.get("benchmarks", []):
        extra = bench.get("extra_info") or {}
        if not {"backend", "op", "form", "dtype", "size"} <= extra.keys():
            print(f"report.py: skipping {bench.get('fullname', bench.get('name'))}: no fastact "
                  "extra_info", file=sys.stderr)
            continue
        rec = dict(extra)
        rec["median"] = float(bench["stats"]["median"])
        rec["group"] = bench.get("group") or f"{rec['op']}-{rec['form']}-{rec['dtype']}-" \
                                              f"{rec['size']}"
        records.append(rec)
    return records


def backend_order(names) -> list[str]:
    names = set(names)
    ordered = [b for b in PREFERRED_ORDER if b in names]
    return ordered + sorted(names - set(ordered))


def gbs(rec: dict) -> float | None:
    if rec.get("bytes") and rec["median"] > 0:
        return rec["bytes"] / rec["median"] / 1e9
    return None


def table(headers: list[str], rows: list[list[str]], markdown: bool) -> str:
    """dtype and size columns left-aligned, numbers right-aligned."""
    return format_table(headers, rows, markdown, align="ll" + "r" * (len(headers) - 2))


def geomean(values) -> float:
    values = [v for v in values if v and v > 0 and math.isfinite(v)]
    if not values:
        return float("nan")
    return math.exp(sum(map(math.log, values)) / len(values))


def speedups(groups: dict) -> dict:
    """backend -> list of (size, dtype, speed-up vs numpy-expr) over groups having both."""
    result = defaultdict(list)
    for entries in groups.values():
        base = entries.get(BASELINE)
        if base is None:
            continue
        for backend, rec in entries.items():
            if backend in (BASELINE, COPY):
                continue
            result[backend].append((rec["size"], rec["dtype"], base["median"] / rec["median"]))
    return result


def best(entries: dict, columns) -> tuple[str, dict] | tuple[None, None]:
    """The fastest of ``columns`` present in a group: (name, record)."""
    present = [(rec["median"], name, rec) for name, rec in entries.items() if name in columns]
    if not present:
        return None, None
    _, name, rec = min(present, key=lambda t: t[0])
    return name, rec


def peer_speedups(groups: dict) -> dict:
    """backend -> list of (size, dtype, speed-up vs the fastest peer incl. numpy-expr)."""
    result = defaultdict(list)
    for entries in groups.values():
        _, peer = best(entries, PEER_COLUMNS)
        if peer is None:
            continue
        for backend, rec in entries.items():
            if backend in PEER_COLUMNS or backend == COPY:
                continue
            result[backend].append((rec["size"], rec["dtype"], peer["median"] / rec["median"]))
    return result


def summary(what: str, ups: dict, markdown: bool, heading: str) -> list[str]:
    """Geometric-mean speed-up of each backend over ``what``, in all, per size and per dtype."""
    if not ups:
        return []
    sizes = sorted({s for values in ups.values() for s, _, _ in values})
    dtypes = sorted({d for values in ups.values() for _, d, _ in values})
    headers = ["backend", "groups", "all"] + [format_size(s) for s in sizes] + dtypes
    rows = []
    for b in backend_order(ups):
        values = ups[b]
        row = [b, str(len(values)), f"{geomean(v for _, _, v in values):.2f}x"]
        for s in sizes:
            sel = [v for size, _, v in values if size == s]
            row.append(f"{geomean(sel):.2f}x" if sel else "-")
        for d in dtypes:
            sel = [v for _, dt, v in values if dt == d]
            row.append(f"{geomean(sel):.2f}x" if sel else "-")
        rows.append(row)
    return [f"{heading}summary: geometric-mean speed-up vs {what} (> 1 = faster)", "",
            table(headers, rows, markdown), ""]


def render(records: list[dict], markdown: bool = False) -> str:
    groups: dict = defaultdict(dict)  # group -> backend -> record
    for rec in records:
        groups[(rec["op"], rec["form"], rec["dtype"], int(rec["size"]))][rec["backend"]] = rec
    by_opform = defaultdict(list)
    for key in groups:
        by_opform[key[:2]].append(key)
    backends = backend_order(rec["backend"] for rec in records)
    timed = [b for b in backends if b != COPY]
    ops_order = list(dict.fromkeys(rec["op"] for rec in records))

    out = []
    noisy_groups: set = set()
    heading = "### " if markdown else "== "

    def opform_key(k):
        op, form = k
        return (ops_order.index(op), FORMS_ORDER.index(form) if form in FORMS_ORDER else 99, form)

    for op, form in sorted(by_opform, key=opform_key):
        keys = sorted(by_opform[(op, form)], key=lambda k: (k[2], k[3]))
        present = [b for b in timed if any(b in groups[k] for k in keys)]
        headers = ["dtype", "size"]
        for b in present:
            headers += [f"{b} median"]
            if b != BASELINE:
                headers += [f"{b} speed-up"]
            headers += [f"{b} GB/s (% copy)"]
        if any(COPY in groups[k] for k in keys):
            headers += ["copy GB/s"]
        headers += ["best vs peer"]
        rows = []
        for k in keys:
            entries = groups[k]
            base = entries.get(BASELINE)
            copy = entries.get(COPY)
            copy_gbs = gbs(copy) if copy else None
            noisy = any((r.get("other_cpu") or 0) > NOISY for r in entries.values())
            if noisy:
                noisy_groups.add(k)
            row = [k[2], format_size(k[3]) + (" *" if noisy else "")]
            for b in present:
                rec = entries.get(b)
                if rec is None:
                    row += ["-"] if b == BASELINE else ["-", "-"]
                    row += ["-"]
                    continue
                row.append(format_time(rec["median"]))
                if b != BASELINE:
                    row.append(f"{base['median'] / rec['median']:.2f}x" if base else "-")
                g = gbs(rec)
                cell = "-" if g is None else f"{g:.1f}"
                if g is not None and copy_gbs:
                    cell += f" ({100 * g / copy_gbs:.0f}%)"
                row.append(cell)
            if "copy GB/s" in headers:
                row.append(f"{copy_gbs:.1f}" if copy_gbs else "-")
            ours, ours_rec = best(entries, [b for b in entries
                                            if b not in PEER_COLUMNS and b != COPY])
            peer, peer_rec = best(entries, PEER_COLUMNS)
            row.append(f"{peer_rec['median'] / ours_rec['median']:.2f}x ({ours} vs {peer})"
                       if ours and peer else "-")
            rows.append(row)
        out += [f"{heading}{op} {form}", "", table(headers, rows, markdown), ""]

    # summary
    for what, ups in ((BASELINE, speedups(groups)), ("the best peer", peer_speedups(groups))):
        out += summary(what, ups, markdown, heading)
    out.append(f"{len(records)} benchmarks in {len(groups)} groups; GB/s = (input + output "
               "bytes) / median time; % copy = that / np.copyto GB/s in the same group "
               "(np.copyto runs on one thread: multi-threaded kernels can exceed 100%).")
    shares = sorted(r["other_cpu"] for r in records if r.get("other_cpu") is not None)
    if shares:
        median = shares[len(shares) // 2]
        out.append(f"other processes used {100 * median:.0f}% of the CPUs (median over the "
                   f"benchmarks; max {100 * shares[-1]:.0f}%) while timing")
        if noisy_groups:
            out.append(f"rows marked * ({len(noisy_groups)} of {len(groups)} groups): other "
                       f"processes used > {100 * NOISY:.0f}% of the CPUs during one of their "
                       "benchmarks; multi-threaded timings there are unreliable")
    allocators = sorted({r["allocator"] for r in records if r.get("allocator")})
    if allocators:
        out.append(f"allocator: {', '.join(allocators)}")
    return "\n".join(out)


def plot(records: list[dict], path: str, dtype: str = "float32", forms=("forward",)) -> int:
    """Throughput (GB/s) against size: one panel per op/form, one line per backend and peer,
    ``np.copyto`` dashed.  Returns the number of panels drawn."""
    from matplotlib.figure import Figure

    series: dict = defaultdict(lambda: defaultdict(list))  # (op, form) -> column -> [(n, GB/s)]
    for rec in records:
        if rec["dtype"] != dtype or rec["form"] not in forms or gbs(rec) is None:
            continue
        series[(rec["op"], rec["form"])][rec["backend"]].append((int(rec["size"]), gbs(rec)))
    panels = list(series)
    if not panels:
        return 0
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.3 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    columns = backend_order({c for lines in series.values() for c in lines})
    colors = {c: f"C{i % 10}" for i, c in enumerate(columns)}
    for ax, key in zip(axes, panels):
        for column in columns:
            points = sorted(series[key].get(column, []))
            if not points:
                continue
            n, v = zip(*points)
            style = {"ls": "--", "color": "0.4"} if column == COPY else {
                "marker": "o", "color": colors[column],
                "lw": 2.2 if column not in PEER_COLUMNS else 1.2}
            ax.loglog(n, v, label=column, **style)
        ax.set_title(f"{key[0]} {key[1]} ({dtype})", fontsize=10)
        ax.set_xlabel("elements")
        ax.set_ylabel("GB/s")
        ax.grid(True, which="both", alpha=0.25)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    handles, labels = [], []
    for ax in axes[:len(panels)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 8),
               frameon=False)
    fig.savefig(path, dpi=100)
    return len(panels)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", help="file written by pytest --benchmark-json")
    parser.add_argument("--markdown", action="store_true",
                        help="GitHub markdown tables (default: plain aligned columns)")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="also draw throughput vs size per backend and peer (matplotlib)")
    parser.add_argument("--plot-dtype", default="float32", help="dtype of the plot")
    parser.add_argument("--plot-forms", default="forward",
                        help="comma-separated forms to plot (default: forward)")
    args = parser.parse_args(argv)
    records = load(args.json)
    if not records:
        print(f"report.py: no fastact benchmarks in {args.json}", file=sys.stderr)
        return 1
    print(render(records, markdown=args.markdown))
    if args.plot:
        n = plot(records, args.plot, args.plot_dtype, tuple(args.plot_forms.split(",")))
        print(f"\nplot: {n} panels written to {args.plot}" if n else
              f"\nplot: no {args.plot_dtype} results for {args.plot_forms}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
