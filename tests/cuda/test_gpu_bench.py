"""benchmarks/gpu_bench.py runs (its skeleton, with tiny sizes, under the simulator; a short real
run on a GPU) and writes its JSON report."""

from __future__ import annotations

import importlib.util
import json
import os

from fastact.kernels import numba_cuda

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _bench_module():
    spec = importlib.util.spec_from_file_location(
        "gpu_bench", os.path.join(ROOT, "benchmarks", "gpu_bench.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_bench_arguments():
    mod = _bench_module()
    a = mod.parse_args([])
    assert a.sizes == (2**20, 2**24, 2**28) and 1025 in a.widths and a.dtype == "float32"
    a = mod.parse_args(["--sizes", "2**10,4096", "--widths", "32,64", "--smoke"])
    assert a.sizes == (1024, 4096) and a.widths == (32, 64) and a.repeat == 1


def test_gpu_bench_smoke(tmp_path):
    mod = _bench_module()
    out = tmp_path / "bench.json"
    argv = ["--smoke", "--ops", "relu,prelu,softmax,cross_entropy", "--sizes", "64", "--widths", "8",
            "--json", str(out)]
    if not numba_cuda.SIMULATED:
        argv += ["--sizes", "2**16", "--repeat", "2"]
    assert mod.main(argv) == 0
    report = json.loads(out.read_text())
    cases = {r["case"] for r in report["results"]}
    assert any(c.startswith("relu_backward") for c in cases)
    assert any(c.startswith("prelu_backward") for c in cases)
    assert any(c.startswith("softmax_backward") for c in cases)
    assert any(c.startswith("cross_entropy_and_grad") for c in cases)
    assert report["simulated"] is numba_cuda.SIMULATED
    assert set(report["host_overhead_us"]) >= {"relu", "sigmoid"}
    if not numba_cuda.SIMULATED:
        assert all(r["time_us"] > 0 for r in report["results"])
