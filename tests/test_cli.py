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
    assert {"numpy-expr", "copy"} <= backends
    assert set(fastact.backends()) - {"cuda"} <= backends
    out = _ok(_run(REPORT, path))
    assert "== relu forward" in out
    assert "speed-up" in out
    assert "geometric-mean speed-up" in out


def test_every_registry_form_has_a_numpy_baseline():
    assert _bench.missing_baselines() == []
