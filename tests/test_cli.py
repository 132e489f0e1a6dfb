"""The command line (``python -m fastact``) and ``benchmarks/report.py``, run as subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastact
from fastact import _bench, _dispatch, _registry

pytestmark = pytest.mark.subprocess

ROOT = Path(fastact.__file__).resolve().parent.parent
REPORT = ROOT / "benchmarks" / "report.py"


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("FASTACT_BACKEND", None)
    return env


def _run(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\n" \
                                 f"stderr:\n{proc.stderr}"
    return proc.stdout


def test_info_lists_every_backend_and_the_selection():
    out = _ok(_run("-m", "fastact", "info"))
    for name in _dispatch.KNOWN:
        assert f"\n  {name} " in out, f"backend {name} missing from:\n{out}"
    automatic = fastact.backend_info()["selected"]["automatic"]
    assert f"automatic selection (host arrays): {automatic}" in out
    assert "cache dir:" in out
    for name in _dispatch.KNOWN:
        if name not in fastact.backends():
            assert f"{name}" in out and "unavailable" in out


def test_info_json_is_backend_info():
    data = json.loads(_ok(_run("-m", "fastact", "info", "--json")))
    assert set(_dispatch.KNOWN) <= set(data)
    for name in _dispatch.KNOWN:
        assert data[name]["available"] == (name in fastact.backends())


def test_no_subcommand_is_a_usage_error():
    proc = _run("-m", "fastact")
    assert proc.returncode == 2
    assert "info" in proc.stderr and "bench" in proc.stderr


def test_bench_quick_prints_a_table(tmp_path):
    out_json = tmp_path / "bench.json"
    out = _ok(_run("-m", "fastact", "bench", "--quick", "--sizes", "1000", "--min-time",
                   "0.002", "--json", out_json))
    header = next(line for line in out.splitlines() if line.startswith("| op"))
    for column in ("size", "fastact", "numpy", "speed-up", "GB/s", "% copy"):
        assert column in header
    rows = [line for line in out.splitlines() if line.startswith("| ") and "1e3" in line]
    labels = {row.split("|")[1].strip() for row in rows}
    assert labels == {_registry.get(op).public_name(form) for op, form in _bench.main_cases()}
    assert "compile (fastact.warmup" in out
    assert "geometric-mean speed-up" in out
    data = json.loads(out_json.read_text())
    assert {r["size"] for r in data["results"]} == {1000}
    assert all(r["speedup"] > 0 and r["copy_fraction"] > 0 for r in data["results"])


def test_bench_rejects_bad_arguments():
    proc = _run("-m", "fastact", "bench", "--sizes", "0")
    assert proc.returncode == 2 and "--sizes" in proc.stderr
    proc = _run("-m", "fastact", "bench", "--sizes", "1000", "--backend", "nonsense")
    assert proc.returncode == 2 and "unknown backend" in proc.stderr


# ------------------------------------------------------------------------------------------------
# benchmarks/report.py
# ------------------------------------------------------------------------------------------------

def _bench_entry(op, form, dtype, size, backend, median, nbytes, other_cpu=0.0):
    return {
        "group": f"{op}-{form}-{dtype}-{size}",
        "name": f"test_bench[{op}-{form}-{dtype}-{size}-{backend}]",
        "fullname": f"benchmarks/test_bench.py::test_bench[{op}-{form}-{dtype}-{size}-{backend}]",
        "params": {},
        "stats": {"min": median * 0.9, "max": median * 1.2, "mean": median, "median": median,
                  "rounds": 5, "iterations": 1},
        "extra_info": {"backend": backend, "op": op, "form": form, "dtype": dtype,
                       "size": size, "bytes": nbytes, "other_cpu": other_cpu, "cpus": 2},
    }


def test_report_on_synthetic_json(tmp_path):
    n = 1_000_000
    entries = [
        _bench_entry("sigmoid", "forward", "float32", n, "numba", 1e-3, 8 * n),
        _bench_entry("sigmoid", "forward", "float32", n, "numpy-expr", 4e-3, 8 * n),
        _bench_entry("sigmoid", "forward", "float32", n, "copy", 0.5e-3, 8 * n),
        _bench_entry("relu", "forward", "float32", n, "numba", 1e-3, 8 * n),
        _bench_entry("relu", "forward", "float32", n, "numpy-expr", 1e-3, 8 * n),
        _bench_entry("relu", "forward", "float64", n, "numba", 2e-3, 16 * n, other_cpu=0.5),
        _bench_entry("relu", "forward", "float64", n, "numpy-expr", 2e-3, 16 * n),
    ]
    path = tmp_path / "synthetic.json"
    path.write_text(json.dumps({"machine_info": {}, "commit_info": {}, "benchmarks": entries,
                                "datetime": "2024-01-01T00:00:00", "version": "5.1.0"}))
    out = _ok(_run(REPORT, path, "--markdown"))
    assert "### sigmoid forward" in out and "### relu forward" in out
    assert "numba speed-up" in out
    sigmoid_row = next(line for line in out.split("### sigmoid forward")[1].splitlines()
                       if line.startswith("| float32"))
    assert "4.00x" in sigmoid_row           # 4 ms / 1 ms
    assert "8.0 (50%)" in sigmoid_row       # 8 MB / 1 ms = 8 GB/s; copy 16 GB/s
    relu_rows = [line for line in out.split("### relu forward")[1].split("###")[0].splitlines()
                 if line.startswith("| float")]
    assert [("*" in row) for row in relu_rows] == [False, True]  # timed under load: flagged
    assert "rows marked *" in out
    summary = out.split("summary")[1]
    assert "1.59x" in summary               # geometric mean of 4x, 1x and 1x
    plain = _ok(_run(REPORT, path))
    assert "numba speed-up" in plain and "|" not in plain
    # --slim writes a small (gzip) JSON that reads back to the same report
    slim = tmp_path / "slim.json.gz"
    proc = _run(REPORT, path, "--slim", slim)
    assert proc.returncode == 0 and slim.exists(), proc.stderr
    assert _ok(_run(REPORT, slim)) == plain
    # several files merge; a later file's benchmark replaces the same one of an earlier file
    faster = json.loads(path.read_text())
    for bench in faster["benchmarks"]:
        if bench["extra_info"]["op"] == "sigmoid" and bench["extra_info"]["backend"] == "numba":
            bench["stats"]["median"] = 0.5e-3
    rerun = tmp_path / "rerun.json"
    rerun.write_text(json.dumps(faster))
    merged = _ok(_run(REPORT, path, rerun))
    assert "8.00x" in merged.split("== sigmoid forward")[1].split("==")[0]


def test_report_checks_the_issue_goals_on_the_automatic_call(tmp_path):
    """The goals table judges ``auto`` against the fastest peer of each group: the ratio, the
    memory-limit alternative (both >= 90% of copy-mt), the 1-thread copy floor at 1e7, the
    row-length groups and thread scaling."""
    n, big = 1_000_000, 10_000_000
    entries = [
        # sigmoid 1e6: auto 1 ms, torch 1.5 ms -> 1.50x, met
        _bench_entry("sigmoid", "forward", "float32", n, "auto", 1e-3, 8 * n),
        _bench_entry("sigmoid", "forward", "float32", n, "numba", 0.9e-3, 8 * n),
        _bench_entry("sigmoid", "forward", "float32", n, "torch", 1.5e-3, 8 * n),
        _bench_entry("sigmoid", "forward", "float32", n, "numpy-expr", 4e-3, 8 * n),
        # relu 1e7: auto 10 ms vs torch 9.5 ms (0.95x) but both >= 90% of copy-mt (9.2 ms): met;
        # 8 GB/s against a 1-thread copy of 10 GB/s: the copy floor is not met
        _bench_entry("relu", "forward", "float32", big, "auto", 10e-3, 80 * n),
        _bench_entry("relu", "forward", "float32", big, "torch", 9.5e-3, 80 * n),
        _bench_entry("relu", "forward", "float32", big, "copy-mt", 9.2e-3, 80 * n),
        _bench_entry("relu", "forward", "float32", big, "copy", 8e-3, 80 * n),
        # tanh backward: 1.1x torch (not met), 3x the two-step NumPy expression (met)
        _bench_entry("tanh", "backward", "float32", n, "auto", 1e-3, 12 * n),
        _bench_entry("tanh", "backward", "float32", n, "torch", 1.1e-3, 12 * n),
        _bench_entry("tanh", "backward", "float32", n, "numpy-expr", 3e-3, 12 * n),
    ]
    rows = _bench_entry("softmax", "forward", "float32", 4_096_000, "auto", 2e-3, 32 * n)
    rows["extra_info"]["row_length"] = 32
    peer_rows = _bench_entry("softmax", "forward", "float32", 4_096_000, "torch", 3e-3, 32 * n)
    peer_rows["extra_info"]["row_length"] = 32
    entries += [rows, peer_rows]
    for threads, median in ((1, 0.2), (2, 0.125)):
        e = _bench_entry("gelu", "forward", "float32", big, "auto", median, 80 * n)
        e["extra_info"].update(kind="threads", threads=threads)
        entries.append(e)
    path = tmp_path / "goals.json"
    path.write_text(json.dumps({"machine_info": {}, "commit_info": {}, "benchmarks": entries,
                                "datetime": "2024-01-01T00:00:00", "version": "5.1.0"}))
    out = _ok(_run(REPORT, path))
    goals, per_goal = out.split("issue-7 goals:")[1].split("issue-7 goals per goal")
    lines = {tuple(line.split()[:3]): line for line in goals.splitlines() if line.strip()}

    def row(*start):
        (line,) = [v for k, v in lines.items() if k[:len(start)] == start]
        return line.rstrip()

    assert "1.50x" in row("elementwise", "sigmoid") and row("elementwise", "sigmoid").endswith("yes")
    relu = row("elementwise", "relu")
    assert "0.95x" in relu and "both >= 90% of copy-mt" in relu and relu.endswith("yes")
    assert row("elementwise", "vs", "1-thread").endswith("NO")       # 8 vs 10 GB/s
    assert "1.10x" in row("backward", "vs", "torch") and row("backward", "vs", "torch").endswith("NO")
    assert "3.00x" in row("backward", "vs", "two-step") and row("backward", "vs", "two-step").endswith("yes")
    assert "1.50x" in row("softmax", "forward") and "128,000 rows x 32" in row("softmax", "forward")
    assert "1.60x" in row("thread", "scaling") and row("thread", "scaling").endswith("NO")
    assert "4 of 7 met" in out
    # the count per goal names the cases that miss it
    summary = {line.split("  ")[0].strip(): line for line in per_goal.splitlines() if "of" in line}
    assert "2 of 2" in summary["elementwise"] and "0 of 1" in summary["thread scaling"]
    assert "relu 1e7 0.80x" in summary["elementwise vs 1-thread copy"]
    # the row-length group gets its own line in the softmax table, thread records stay out
    assert "128,000 rows x 32" in out.split("== softmax forward")[1]
    assert "== gelu forward" not in out


def test_report_on_a_real_pytest_benchmark_run(tmp_path):
    pytest.importorskip("pytest_benchmark")
    path = tmp_path / "real.json"
    proc = _run("-m", "pytest", ROOT / "benchmarks", "--benchmark-only", "--bench-quick",
                "--bench-time", "0.005", "-k", "relu and forward and float32",
                f"--benchmark-json={path}", "-q", "-p", "no:cacheprovider", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(path.read_text())
    groups = {b["group"] for b in data["benchmarks"]}
    assert "relu-forward-float32-1000" in groups
    backends = {b["extra_info"]["backend"] for b in data["benchmarks"]}
    assert {"numpy-expr", "copy", "copy-mt", "auto"} <= backends
    assert set(fastact.backends()) - {"cuda"} <= backends
    out = _ok(_run(REPORT, path))
    assert "== relu forward" in out
    assert "speed-up" in out
    assert "geometric-mean speed-up" in out


def test_every_registry_form_has_a_numpy_baseline():
    assert _bench.missing_baselines() == []


def test_report_dispatch_check_counts_misses_on_medians_and_shows_best_times(tmp_path):
    """The dispatch check: ``auto`` against the fastest fastact backend of each group on
    medians (the goal), each miss also on best-of-rounds times (noise or a wrong choice)."""
    n = 1_000_000

    def entry(op, backend, median, best):
        e = _bench_entry(op, "forward", "float32", n, backend, median, 8 * n)
        e["stats"]["min"] = best
        return e

    entries = [
        entry("sigmoid", "auto", 1.3e-3, 0.95e-3), entry("sigmoid", "numba", 1.0e-3, 0.9e-3),
        entry("tanh", "auto", 2.0e-3, 1.8e-3), entry("tanh", "numba", 2.2e-3, 2.0e-3),
        entry("tanh", "cython", 1.0e-3, 0.9e-3),
        entry("relu", "auto", 1.05e-3, 1.0e-3), entry("relu", "numba", 1.0e-3, 0.9e-3),
        entry("relu", "torch", 0.5e-3, 0.4e-3),  # (a peer: not a fastact backend)
    ]
    path = tmp_path / "dispatch.json"
    path.write_text(json.dumps({"machine_info": {}, "commit_info": {}, "benchmarks": entries,
                                "datetime": "2024-01-01T00:00:00", "version": "5.1.0"}))
    out = _ok(_run(REPORT, path, "--markdown"))
    section = out.split("### dispatch:")[1]
    assert section.startswith(" auto within 10% of the fastest backend in 1 of 3 groups")
    assert "Of the 2 misses, 1 are within 10% on best-of-rounds times" in section
    sigmoid = next(line for line in section.splitlines() if line.startswith("| sigmoid"))
    tanh = next(line for line in section.splitlines() if line.startswith("| tanh"))
    assert "1.30x" in sigmoid and "1.06x" in sigmoid     # 1.3 / 1.0; 0.95 / 0.9
    assert "cython" in tanh and "2.00x" in tanh          # 2.0 / 1.0 on both
    assert not any(line.startswith("| relu") for line in section.splitlines())
