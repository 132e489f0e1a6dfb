"""Cold compile time per op (issue 7, item 4): what a first call costs before the disk cache
holds the op's Numba kernels, and what loading them from the cache costs afterwards.

Each op's kernels are compiled by ``fa.warmup([op], [dtype])`` (every form, the serial and
the parallel twins, the masked and unreduced variants it compiles) in worker processes that
start from an empty kernel cache of their own (``FASTACT_CACHE_DIR``), one dtype after the
other; a trivial Numba function is compiled first, so that Numba's one-off compiler set-up is
reported separately instead of being charged to the first op.  A second round of fresh
processes then times ``fa.warmup([op])`` again on the filled caches: the load from disk.

    python benchmarks/tools/compile_times.py --json benchmarks/results/cpu-compile-DATE.json \\
        --markdown benchmarks/results/cpu-compile-DATE.md

Ops are split round-robin over ``--workers`` processes (default 2, one per core of the
development machine; Numba compiles on one thread, so each worker has a core to itself).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

WORKER = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
import fastact as fa
import numba
t1 = time.perf_counter()
ops, mode = json.loads(sys.argv[1]), sys.argv[2]
setup = None
if mode == "cold":
    @numba.njit
    def _probe(a):
        return a.sum()
    t = time.perf_counter()
    _probe(np.ones(3))
    setup = time.perf_counter() - t
result = {"import": t1 - t0, "compiler_setup": setup, "ops": {}}
for op in ops:
    times = {}
    for dtype in ("float32", "float64"):
        t = time.perf_counter()
        fa.warmup([op], [dtype])
        times[dtype] = time.perf_counter() - t
    result["ops"][op] = times
print(json.dumps(result))
"""


def _run_workers(groups, mode, caches, env):
    procs = []
    for ops, cache in zip(groups, caches):
        child = dict(env, FASTACT_CACHE_DIR=cache)
        child.pop("NUMBA_CACHE_DIR", None)
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(ops), mode],
                                      env=child, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    results = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"worker failed:\n{err}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def measure(workers: int, only=None) -> dict:
    import fastact as fa
    from fastact import _registry

    ops = [spec.name for spec in _registry.OPS if only is None or spec.name in only]
    groups = [ops[i::workers] for i in range(workers)]
    groups = [g for g in groups if g]
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="fastact-compile-") as root:
        caches = [os.path.join(root, f"cache{i}") for i in range(len(groups))]
        start = time.perf_counter()
        cold = _run_workers(groups, "cold", caches, env)
        cold_wall = time.perf_counter() - start
        warm = _run_workers(groups, "warm", caches, env)
    rows = {}
    for c, w in zip(cold, warm):
        for op, times in c["ops"].items():
            rows[op] = {"cold_float32": times["float32"], "cold_float64": times["float64"],
                        "warm_load": w["ops"][op]["float32"] + w["ops"][op]["float64"]}
    spec_of = {spec.name: spec for spec in _registry.OPS}
    for op, row in rows.items():
        row["kind"] = spec_of[op].kind
        row["forms"] = list(spec_of[op].forms)
    import numba
    import numpy as np

    return {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpu": _cpu(), "python": platform.python_version(),
                    "numpy": np.__version__, "numba": numba.__version__,
                    "fastact": getattr(fa, "__version__", "?")},
        "workers": len(groups), "wall_seconds_cold": cold_wall,
        "compiler_setup": [c["compiler_setup"] for c in cold],
        "import": [c["import"] for c in cold],
        "ops": dict(sorted(rows.items())),
    }


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def markdown(data: dict) -> str:
    ops = data["ops"]
    totals = {op: r["cold_float32"] + r["cold_float64"] for op, r in ops.items()}
    ranked = sorted(totals.values())
    lines = [
        f"# Cold compile time per op ({data['created']})", "",
        f"{data['machine']['cpu']}; Python {data['machine']['python']}, NumPy "
        f"{data['machine']['numpy']}, Numba {data['machine']['numba']}; "
        f"{data['workers']} worker processes, each from an empty kernel cache.", "",
        f"Numba's one-off compiler set-up (a trivial function first): "
        + ", ".join(f"{s:.2f} s" for s in data["compiler_setup"])
        + f".  All ops: {sum(ranked):.0f} s of compilation "
        f"({data['wall_seconds_cold']:.0f} s wall on {data['workers']} workers); per op median "
        f"{ranked[len(ranked) // 2]:.1f} s, max {ranked[-1]:.1f} s.  \"cold\": "
        "`fa.warmup([op], [dtype])` on an empty cache (every form, serial and parallel twins); "
        "\"load\": the same for both dtypes in a fresh process once the cache holds them.", "",
        "| op | kind | forms | cold float32 (s) | cold float64 (s) | load, both dtypes (s) |",
        "|:---|:-----|:------|-----------------:|-----------------:|----------------------:|",
    ]
    for op, r in ops.items():
        lines.append(f"| {op} | {r['kind']} | {len(r['forms'])} | {r['cold_float32']:.1f} | "
                     f"{r['cold_float64']:.1f} | {r['warm_load']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ops", nargs="*", help="only these ops (default: all)")
    parser.add_argument("--json", help="write the measurements here")
    parser.add_argument("--markdown", help="write the table here")
    args = parser.parse_args(argv)
    data = measure(max(1, args.workers), args.ops)
    text = markdown(data)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
