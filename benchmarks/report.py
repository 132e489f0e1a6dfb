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
import gzip
import json
import math
import sys
from collections import defaultdict

from fastact._bench import format_size, format_table, format_time

BASELINE = "numpy-expr"
COPY = "copy"
#: np.copyto on all threads (a Numba prange loop): the multi-threaded memory bandwidth.
COPY_MT = "copy-mt"
COPIES = (COPY, COPY_MT)
#: The automatic call (no backend=): what users get, and what the goals are judged on.
AUTO = "auto"
#: NAME_backward(grad, y=...) automatic: compared with PyTorch's backward kernels that take y.
AUTO_Y = "auto-y"
#: Share of the CPUs used by other processes above which a group is flagged as noisy.
NOISY = 0.2
#: Column order; backends not listed here follow in alphabetical order.
PREFERRED_ORDER = ("auto", "auto-y", "cuda", "numba", "cython", "numpy", BASELINE, "numexpr", "scipy",
                   "torch", COPY, COPY_MT)
#: Columns that are not fastact: the NumPy expression and the peer libraries.
PEER_COLUMNS = (BASELINE, "numexpr", "scipy", "torch")
FORMS_ORDER = ("forward", "derivative", "and_derivative", "backward")


def slim(paths: list[str], out: str) -> int:
    """Write the benchmarks of ``paths`` (merged, later files win) as one small JSON that
    ``load`` reads: names, groups, the timing statistics and ``extra_info``, plus the first
    file's machine and commit info (a pytest-benchmark JSON of the full suite is ~30 MB)."""
    merged, head = {}, None
    for path in paths:
        data = _read_json(path)
        if head is None:
            head = {k: data.get(k) for k in ("machine_info", "commit_info", "datetime",
                                             "version")}
        for bench in data.get("benchmarks", []):
            stats = {k: bench["stats"][k] for k in ("min", "median", "mean", "max", "rounds",
                                                    "iterations") if k in bench["stats"]}
            merged[bench.get("fullname") or bench["name"]] = {
                "group": bench.get("group"), "name": bench.get("name"),
                "fullname": bench.get("fullname"), "stats": stats,
                "extra_info": bench.get("extra_info") or {}}
    opener = gzip.open if out.endswith(".gz") else open
    with opener(out, "wt") as f:
        json.dump({**head, "sources": [str(p) for p in paths],
                   "benchmarks": list(merged.values())}, f, separators=(",", ":"))
    return len(merged)


def _read_json(path: str) -> dict:
    """A pytest-benchmark JSON, plain or gzip-compressed (``.gz``)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        return json.load(f)


def load(path: str) -> list[dict]:
    """One record per benchmark: the ``extra_info`` fields plus ``median`` (seconds)."""
    data = _read_json(path)
    records = []
    for bench in data.get("benchmarks", []):
        extra = bench.get("extra_info") or {}
        if not {"backend", "op", "form", "dtype", "size"} <= extra.keys():
            print(f"report.py: skipping {bench.get('fullname', bench.get('name'))}: no fastact "
                  "extra_info", file=sys.stderr)
            continue
        rec = dict(extra)
        rec["fullname"] = bench.get("fullname") or bench.get("name")
        rec["median"] = float(bench["stats"]["median"])
        rec["min"] = float(bench["stats"]["min"])
        rec["group"] = bench.get("group") or f"{rec['op']}-{rec['form']}-{rec['dtype']}-" \
                                              f"{rec['size']}"
        records.append(rec)
    return records


def describe_machine(path: str) -> str:
    """One line on the machine of a run, from the ``fastact`` machine info that
    benchmarks/conftest.py records (CPU as LLVM targets it, threads and threading layer,
    versions); empty for older files."""
    data = _read_json(path)
    info = (data.get("machine_info") or {}).get("fastact")
    if not info:
        return ""
    versions = ", ".join(f"{k} {v}" for k, v in (info.get("versions") or {}).items())
    return (f"machine: {info.get('llvm_cpu')} ({(data['machine_info'].get('cpu') or {}).get('brand_raw', '')}), "
            f"{info.get('threads')} threads, Numba threading layer {info.get('threading_layer')}; "
            f"{versions}; {data.get('datetime', '')[:10]}")


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
            if backend == BASELINE or backend in COPIES:
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
            if backend in PEER_COLUMNS or backend in COPIES:
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


def group_key(rec: dict) -> tuple:
    """(op, form, dtype, size, row length or 0): one benchmark group."""
    return (rec["op"], rec["form"], rec["dtype"], int(rec["size"]), int(rec.get("row_length") or 0))


def size_label(key: tuple) -> str:
    size, width = key[3], key[4]
    return f"{size // width:,} rows x {width:,}" if width else format_size(size)


def op_groups(records: list[dict]) -> dict:
    """group key -> column -> record, for the op groups (not the thread-scaling ones)."""
    groups: dict = defaultdict(dict)
    for rec in records:
        if rec.get("kind") != "threads":
            groups[group_key(rec)][rec["backend"]] = rec
    return groups


def render(records: list[dict], markdown: bool = False) -> str:
    groups = op_groups(records)
    records = [r for r in records if r.get("kind") != "threads"]
    by_opform = defaultdict(list)
    for key in groups:
        by_opform[key[:2]].append(key)
    backends = backend_order(rec["backend"] for rec in records)
    timed = [b for b in backends if b not in COPIES]
    ops_order = list(dict.fromkeys(rec["op"] for rec in records))

    out = []
    noisy_groups: set = set()
    heading = "### " if markdown else "== "

    def opform_key(k):
        op, form = k
        return (ops_order.index(op), FORMS_ORDER.index(form) if form in FORMS_ORDER else 99, form)

    for op, form in sorted(by_opform, key=opform_key):
        keys = sorted(by_opform[(op, form)], key=lambda k: (k[2], k[4], k[3]))
        present = [b for b in timed if any(b in groups[k] for k in keys)]
        headers = ["dtype", "size"]
        for b in present:
            headers += [f"{b} median"]
            if b != BASELINE:
                headers += [f"{b} speed-up"]
            headers += [f"{b} GB/s (% copy)"]
        copies = [c for c in COPIES if any(c in groups[k] for k in keys)]
        headers += [f"{c} GB/s" for c in copies]
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
            row = [k[2], size_label(k) + (" *" if noisy else "")]
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
            for c in copies:
                g = gbs(entries[c]) if c in entries else None
                row.append(f"{g:.1f}" if g else "-")
            ours, ours_rec = ((AUTO, entries[AUTO]) if AUTO in entries else
                              best(entries, [b for b in entries
                                             if b not in PEER_COLUMNS and b not in COPIES]))
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


def compact(records: list[dict], dtype: str, sizes, markdown: bool = False) -> str:
    """One row per op/form and size: the automatic call against NumPy and the fastest peer,
    with its share of the multi-threaded copy bandwidth (the README's table)."""
    groups = op_groups(records)
    order = list(dict.fromkeys(rec["op"] for rec in records))
    keys = sorted((k for k in groups if k[2] == dtype and (k[3] in sizes or k[4])
                   and AUTO in groups[k]),
                  key=lambda k: (order.index(k[0]), FORMS_ORDER.index(k[1])
                                 if k[1] in FORMS_ORDER else 9, k[4], k[3]))
    rows = []
    for k in keys:
        entries = groups[k]
        ours = entries[AUTO]
        base = entries.get(BASELINE)
        peer_name, peer = best(entries, [c for c in PEER_COLUMNS if c != BASELINE])
        mt = entries.get(COPY_MT)
        # a loss writes one number: no copy of the same bytes to compare with
        if (ours.get("out_bytes") or 0) * 10 < (ours.get("in_bytes") or 0):
            mt = None
        g = gbs(ours)
        rows.append([
            k[0] if k[1] == "forward" else f"{k[0]} {k[1]}", size_label(k),
            format_time(ours["median"]),
            f"{base['median'] / ours['median']:.2f}x" if base else "-",
            f"{peer['median'] / ours['median']:.2f}x ({peer_name})" if peer else "-",
            f"{g:.1f}" if g else "-",
            f"{100 * g / gbs(mt):.0f}%" if g and mt else "-"])
    headers = ["function", "size", "fastact", "vs NumPy", "vs fastest peer", "GB/s",
               "% of copy-mt"]
    return format_table(headers, rows, markdown, align="llrrrrr")


# ------------------------------------------------------------------------------------------------
# issue 7's goals, checked on the automatic call
# ------------------------------------------------------------------------------------------------

GOAL_ELEMENTWISE = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu", "silu", "softplus",
                    "mish")
GOAL_SIZES = (1_000_000, 10_000_000)
#: A peer within this share of the multi-threaded copy bandwidth is "at the memory limit".
MEMORY_LIMIT = 0.9


def _ratio_row(goal: str, case: str, entries: dict, peers, target: float,
               alt: str = "", ours_column: str = AUTO) -> list | None:
    """One goal row: the auto call against the fastest of ``peers`` in one group."""
    ours = entries.get(ours_column)
    name, peer = best(entries, peers)
    if ours is None or peer is None:
        return None
    ratio = peer["median"] / ours["median"]
    met = ratio >= target
    note = f">= {target:g}x"
    if not met and alt:
        met, extra = _alternative(alt, entries, ours, peer)
        note += f" or {extra}"
    return [goal, case, format_time(ours["median"]), f"{name} {format_time(peer['median'])}",
            f"{ratio:.2f}x", note, "yes" if met else "NO"]


def _alternative(alt: str, entries: dict, ours: dict, peer: dict) -> tuple[bool, str]:
    """The memory-limit alternative of the elementwise goal."""
    mt = entries.get(COPY_MT)
    if alt == "memory" and mt is not None:
        copy_gbs = gbs(mt)
        ours_share, peer_share = gbs(ours) / copy_gbs, gbs(peer) / copy_gbs
        return (peer_share >= MEMORY_LIMIT and ours_share >= MEMORY_LIMIT,
                f"both >= 90% of copy-mt (auto {100 * ours_share:.0f}%, peer "
                f"{100 * peer_share:.0f}%)")
    return False, "n/a"


def goals(records: list[dict], markdown: bool = False) -> str:
    """Issue 7's goals, each judged on the ``auto`` column (the call a user writes) against the
    peers timed in the same group: a table with the measured ratio and whether it is met,
    then the count per goal."""
    rows = goal_rows(records)
    if not rows:
        return ""
    met = sum(r[-1] == "yes" for r in rows)
    headers = ["goal", "case", "fastact (auto)", "fastest peer", "ratio", "target", "met"]
    per_goal: dict = {}
    for r in rows:
        counts = per_goal.setdefault(r[0], [0, 0, []])
        counts[0] += r[-1] == "yes"
        counts[1] += 1
        if r[-1] != "yes":
            counts[2].append(f"{r[1]} {r[4]}")
    summary = [[goal, f"{m} of {n}", ", ".join(missed) or "-"]
               for goal, (m, n, missed) in per_goal.items()]
    heading = "### " if markdown else "== "
    return "\n".join([f"{heading}issue-7 goals: {met} of {len(rows)} met "
                      "(auto = the call without backend=, against the fastest peer in the same "
                      "group)", "", format_table(headers, rows, markdown, align="lllllll"), "",
                      f"{heading}issue-7 goals per goal", "",
                      format_table(["goal", "met", "not met (ratio)"], summary, markdown,
                                   align="lll"), ""])


def goal_rows(records: list[dict]) -> list[list[str]]:
    """The rows of :func:`goals`: goal, case, fastact, peer, ratio, target, met."""
    groups = op_groups(records)
    rows = []
    dtypes = sorted({k[2] for k in groups})
    fused_peers = tuple(c for c in PEER_COLUMNS if c != "torch")
    for dtype in dtypes:
        tag = "" if dtype == "float32" else f" ({dtype})"
        for op in GOAL_ELEMENTWISE:
            for size in GOAL_SIZES:
                entries = groups.get((op, "forward", dtype, size, 0))
                if not entries:
                    continue
                row = _ratio_row("elementwise" + tag, f"{op} {format_size(size)}", entries,
                                 PEER_COLUMNS, 1.2, alt="memory")
                if row:
                    rows.append(row)
                if size == 10_000_000 and AUTO in entries and COPY in entries:
                    share = gbs(entries[AUTO]) / gbs(entries[COPY])
                    rows.append(["elementwise vs 1-thread copy" + tag,
                                 f"{op} {format_size(size)}",
                                 f"{gbs(entries[AUTO]):.1f} GB/s",
                                 f"np.copyto {gbs(entries[COPY]):.1f} GB/s", f"{share:.2f}x",
                                 ">= 1x", "yes" if share >= 1 else "NO"])
            for form in ("and_derivative", "backward"):
                for size in GOAL_SIZES:
                    entries = groups.get((op, form, dtype, size, 0))
                    if not entries:
                        continue
                    if "torch" in entries and form == "backward":
                        # PyTorch's sigmoid/tanh backward kernels take the output y: compare
                        # them with fastact's backward from y
                        from_y = ", y)" in (entries["torch"].get("expr") or "")
                        ours_column = AUTO_Y if from_y and AUTO_Y in entries else AUTO
                        row = _ratio_row(f"{form} vs torch{tag}",
                                         f"{op} {format_size(size)}"
                                         + (" (y=)" if ours_column == AUTO_Y else ""),
                                         entries, ("torch",), 1.2, ours_column=ours_column)
                        if row:
                            rows.append(row)
                    row = _ratio_row(f"{form} vs two-step{tag}", f"{op} {format_size(size)}",
                                     entries, fused_peers, 2.0)
                    if row:
                        rows.append(row)
        for key in sorted(k for k in groups if k[2] == dtype and k[4]):
            op, form = key[0], key[1]
            target = 2.0 if form == "and_grad" else 1.2
            row = _ratio_row(f"{op} {form}{tag}", size_label(key), groups[key], PEER_COLUMNS,
                             target)
            if row:
                rows.append(row)
    threads = defaultdict(dict)
    for rec in records:
        if rec.get("kind") == "threads":
            threads[rec["op"]][int(rec["threads"])] = rec
    for op, by_n in sorted(threads.items()):
        if 1 in by_n and len(by_n) > 1:
            n = max(by_n)
            scale = by_n[1]["median"] / by_n[n]["median"]
            rows.append(["thread scaling", f"{op} 1e7, {n} vs 1 thread",
                         format_time(by_n[n]["median"]), f"1 thread {format_time(by_n[1]['median'])}",
                         f"{scale:.2f}x", ">= 1.7x", "yes" if scale >= 1.7 else "NO"])
    return rows


#: fastact's backend columns: the choices of the automatic dispatch.
BACKEND_COLUMNS = ("numba", "cython", "numpy")
#: Issue 7 item 3: the automatic call within this factor of the best backend of its group.
DISPATCH_SLACK = 1.10


def dispatch_check(records: list[dict], markdown: bool = False) -> str:
    """Issue 7's dispatch goal: in every group, the automatic call (``auto``) within 10% of the
    fastest fastact backend timed in the same group, on medians.  The table lists the groups
    that miss it, with the same ratio on best-of-rounds times: both columns run the same kernel
    (the table's choice) when the choice is right, so a miss that is within 10% on best times
    is more likely the host's noise than a wrong choice; both are reported, the goal is judged
    on medians."""
    rows, total, close_on_min = [], 0, 0
    for key, entries in sorted(op_groups(records).items()):
        ours = entries.get(AUTO)
        name, fastest = best(entries, BACKEND_COLUMNS)
        if ours is None or fastest is None:
            continue
        total += 1
        ratio = ours["median"] / fastest["median"]
        fastest_min = min(entries[c]["min"] for c in BACKEND_COLUMNS if c in entries)
        ratio_min = ours["min"] / fastest_min
        if ratio > DISPATCH_SLACK:
            close_on_min += ratio_min <= DISPATCH_SLACK
            rows.append([f"{key[0]} {key[1]}", key[2], size_label(key),
                         format_time(ours["median"]), f"{name} {format_time(fastest['median'])}",
                         f"{ratio:.2f}x", f"{ratio_min:.2f}x"])
    if not total:
        return ""
    heading = "### " if markdown else "== "
    lines = [f"{heading}dispatch: auto within {DISPATCH_SLACK - 1:.0%} of the fastest backend "
             f"in {total - len(rows)} of {total} groups (medians)", ""]
    if rows:
        lines += [f"Of the {len(rows)} misses, {close_on_min} are within "
                  f"{DISPATCH_SLACK - 1:.0%} on best-of-rounds times (last column).", "",
                  format_table(["group", "dtype", "size", "auto", "fastest backend",
                                "auto / fastest", "on best times"], rows, markdown,
                               align="lllllll"), ""]
    return "\n".join(lines)


def plot(records: list[dict], path: str, dtype: str = "float32", forms=("forward",),
         ops=None) -> int:
    """Throughput (GB/s) against size: one panel per op/form, one line per backend and peer,
    ``np.copyto`` dashed.  Returns the number of panels drawn."""
    from matplotlib.figure import Figure

    series: dict = defaultdict(lambda: defaultdict(list))  # (op, form) -> column -> [(n, GB/s)]
    for rec in records:
        if (rec["dtype"] != dtype or rec["form"] not in forms or gbs(rec) is None
                or rec.get("row_length") or rec.get("kind") == "threads"
                or (ops and rec["op"] not in ops)):
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
            style = {"ls": "--" if column == COPY else ":", "color": "0.4"} if column in COPIES else {
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
    parser.add_argument("json", nargs="+",
                        help="file(s) written by pytest --benchmark-json (several: merged)")
    parser.add_argument("--markdown", action="store_true",
                        help="GitHub markdown tables (default: plain aligned columns)")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="also draw throughput vs size per backend and peer (matplotlib)")
    parser.add_argument("--plot-dtype", default="float32", help="dtype of the plot")
    parser.add_argument("--plot-forms", default="forward",
                        help="comma-separated forms to plot (default: forward)")
    parser.add_argument("--plot-ops", default="",
                        help="comma-separated ops to plot (default: all)")
    parser.add_argument("--compact", metavar="SIZES",
                        help="only a compact table of the automatic call at these sizes "
                             "(e.g. 1e6,1e7; row-length groups included) and the goals")
    parser.add_argument("--dtype", default="float32", help="dtype of --compact")
    parser.add_argument("--slim", metavar="OUT.json",
                        help="also write the merged benchmarks as one small JSON (.json.gz: "
                             "compressed), to commit")
    args = parser.parse_args(argv)
    if args.slim:
        n = slim(args.json, args.slim)
        print(f"report.py: {n} benchmarks written to {args.slim}", file=sys.stderr)
    # later files win where they hold the same benchmark (a rerun of some groups)
    records = list({(r.get("fullname"), r["op"], r["form"], r["dtype"], r["size"],
                     r.get("row_length"), r.get("threads"), r["backend"]): r
                    for path in args.json for r in load(path)}.values())
    if not records:
        print(f"report.py: no fastact benchmarks in {', '.join(args.json)}", file=sys.stderr)
        return 1
    machine = describe_machine(args.json[0])
    if machine:
        print(machine + "\n")
    if args.compact:
        sizes = {int(float(v)) for v in args.compact.split(",")}
        print(compact(records, args.dtype, sizes, markdown=args.markdown))
    else:
        print(render(records, markdown=args.markdown))
    table = goals(records, markdown=args.markdown)
    if table:
        print("\n" + table)
    table = dispatch_check(records, markdown=args.markdown)
    if table:
        print("\n" + table)
    if args.plot:
        n = plot(records, args.plot, args.plot_dtype, tuple(args.plot_forms.split(",")),
                 ops=[o for o in args.plot_ops.split(",") if o])
        print(f"\nplot: {n} panels written to {args.plot}" if n else
              f"\nplot: no {args.plot_dtype} results for {args.plot_forms}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
