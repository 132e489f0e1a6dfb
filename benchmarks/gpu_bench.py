"""GPU benchmark of the CUDA backend (issue 6): every op on device arrays, timed with CUDA events.

    python benchmarks/gpu_bench.py                       # full run (needs an NVIDIA GPU)
    python benchmarks/gpu_bench.py --json benchmarks/results/gpu-<device>.json
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/gpu_bench.py --smoke   # skeleton check, no GPU

Reported per case:

* ``time``: minimum over ``--repeat`` measurements of the mean of ``--inner`` back-to-back
  calls, bracketed by CUDA events on the default stream (so host launch overhead overlaps
  with device work, as in a training loop);
* ``GB/s``: minimum bytes moved (every input read once, every output written once) / time;
* ``% copy``: that bandwidth as a fraction of the device-to-device copy bandwidth measured in
  the same run (``cudaMemcpy`` of the same number of bytes);
* ``host us/call``: host-side cost of one call on a small (1024-element) device array, from
  ``time.perf_counter`` around many calls (the launch overhead target is <= 10 us);
* peers, when importable: PyTorch eager (``torch.nn.functional`` / ``torch.*`` of the same name,
  softmax and cross-entropy included), ``torch.compile`` (``--compile``), CuPy (the registry's
  ``numpy_expr`` evaluated with ``np`` = CuPy).

Element counts default to 2**20, 2**24 and 2**28 float32 elements (2**28 x 4 bytes = 1 GiB, far
above twice the L2 cache); softmax rows of 32 ... 32000 elements (2**24 elements per case);
cross-entropy, when fastact has it, on (16384, 131072)-like shapes scaled to fit memory.
Under the CUDA simulator the timings are meaningless (kernels run as Python); ``--smoke`` uses
tiny sizes only to check that the script and its argument parsing work.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import fastact as fa  # noqa: E402
from fastact import _registry  # noqa: E402

DEFAULT_SIZES = (2**20, 2**24, 2**28)
DEFAULT_WIDTHS = (32, 128, 512, 1024, 1025, 2048, 4096, 8192, 32000)
SMOKE_SIZES = (2**8,)
SMOKE_WIDTHS = (8, 40)

#: arrays read / written per form (elementwise and prelu)
FORM_IO = {"forward": (1, 1), "derivative": (1, 1), "and_derivative": (1, 2), "backward": (2, 1),
           "backward_from_y": (2, 1)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=lambda s: tuple(int(eval(v, {})) for v in s.split(",")),
                   default=None, help="element counts, e.g. '2**20,2**24'")
    p.add_argument("--widths", type=lambda s: tuple(int(v) for v in s.split(",")),
                   default=None, help="softmax row lengths")
    p.add_argument("--row-elements", type=int, default=2**24,
                   help="elements per softmax case (rows = this / width)")
    p.add_argument("--dtype", default="float32", choices=("float16", "float32", "float64"))
    p.add_argument("--ops", default=None, help="comma-separated op names (default: all)")
    p.add_argument("--repeat", type=int, default=7, help="measurements per case (min taken)")
    p.add_argument("--inner", type=int, default=20, help="calls per measurement")
    p.add_argument("--compile", action="store_true", help="also time torch.compile peers")
    p.add_argument("--no-peers", action="store_true", help="skip PyTorch / CuPy")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes, 1 repeat: checks the script (e.g. under the simulator)")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes = args.sizes or SMOKE_SIZES
        args.widths = args.widths or SMOKE_WIDTHS
        args.row_elements = min(args.row_elements, 80)
        args.repeat, args.inner = 1, 1
    args.sizes = args.sizes or DEFAULT_SIZES
    args.widths = args.widths or DEFAULT_WIDTHS
    return args


# ------------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------------

class Timer:
    def __init__(self, cuda, repeat: int, inner: int, simulated: bool):
        self.cuda, self.repeat, self.inner, self.simulated = cuda, repeat, inner, simulated

    def seconds(self, fn) -> float:
        """Minimum over ``repeat`` of the mean time of ``inner`` calls, by CUDA events (wall
        time under the simulator, where events do not measure anything)."""
        cuda = self.cuda
        fn()  # compile / warm up
        cuda.synchronize()
        best = math.inf
        for _ in range(self.repeat):
            if self.simulated:
                t0 = time.perf_counter()
                for _ in range(self.inner):
                    fn()
                t = (time.perf_counter() - t0) / self.inner
            else:
                start, end = cuda.event(), cuda.event()
                start.record()
                for _ in range(self.inner):
                    fn()
                end.record()
                end.synchronize()
                t = start.elapsed_time(end) / 1e3 / self.inner
            best = min(best, t)
        return best

    def host_overhead_us(self, fn, calls: int = 2000) -> float:
        """Host time per call (launch overhead), small inputs, no synchronisation inside."""
        fn()
        self.cuda.synchronize()
        calls = 3 if self.simulated else calls
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        t = (time.perf_counter() - t0) / calls
        self.cuda.synchronize()
        return t * 1e6


# ------------------------------------------------------------------------------------------------
# cases
# ------------------------------------------------------------------------------------------------

def _params(spec):
    out = {}
    for p in spec.params:
        out[p.name] = p.default if p.default is not None else (p.choices[0] if p.choices else 0.5)
    return out


def elementwise_cases(ops):
    for spec in _registry.OPS:
        if spec.kind not in ("elementwise", "channel") or (ops and spec.name not in ops):
            continue
        forms = list(spec.forms)
        if spec.y_backward is not None:
            forms.append("backward_from_y")
        for form in forms:
            yield spec, form


def make_call(spec, form, x, g, y):
    params = _params(spec)
    if spec.kind == "channel":
        fn = getattr(fa, spec.public_name(form))
        if form == "backward":
            return lambda: fn(g, x=x, weight=0.25)
        return lambda: fn(x, 0.25)
    fn = getattr(fa, spec.public_name("backward" if form == "backward_from_y" else form))
    if form == "backward":
        return lambda: fn(g, x=x, **params)
    if form == "backward_from_y":
        return lambda: fn(g, y=y, **params)
    return lambda: fn(x, **params)


def torch_peer(spec, form, tx, compiled: bool):
    """PyTorch eager (or compiled) forward of the same op, or None."""
    import torch
    import torch.nn.functional as F

    if form != "forward":
        return None
    fn = getattr(F, spec.name, None) or getattr(torch, spec.name, None)
    if fn is None:
        return None
    params = {k: v for k, v in _params(spec).items()}
    if spec.kind == "channel":
        w = torch.tensor([0.25], device=tx.device, dtype=tx.dtype)
        call = (lambda t: F.prelu(t, w))
    else:
        call = (lambda t: fn(t, **params))
    if compiled:
        call = torch.compile(call)
    return lambda: call(tx)


def cupy_peer(spec, form, cx):
    import cupy

    if form != "forward" or not spec.numpy_expr or spec.kind == "rowwise":
        return None
    expr = spec.numpy_expr.replace("weight", "0.25")
    return lambda: eval(expr, {"np": cupy, "x": cx})


def row(name, backend, case, seconds, nbytes, copy_gbs, extra=None):
    gbs = nbytes / seconds / 1e9 if seconds > 0 else float("nan")
    r = {"case": case, "impl": f"{name}", "backend": backend, "time_us": seconds * 1e6,
         "bytes": nbytes, "GB/s": gbs, "pct_copy": 100 * gbs / copy_gbs if copy_gbs else None}
    r.update(extra or {})
    return r


def device_info(cuda, simulated: bool) -> dict:
    info = {"python": platform.python_version(), "numpy": np.__version__,
            "fastact": fa.__version__, "cuda_backend": fa.backend_info().get("cuda")}
    if not simulated:
        dev = cuda.get_current_device()
        info["device"] = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    for mod in ("torch", "cupy"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional peers
            pass
    return info


def main(argv=None) -> int:
    args = parse_args(argv)
    if "cuda" not in fa.backends():
        print(f"gpu_bench: the cuda backend is unavailable: "
              f"{fa.backend_info()['cuda'].get('reason')}", file=sys.stderr)
        return 2
    from numba import cuda

    from fastact.kernels import numba_cuda

    simulated = numba_cuda.SIMULATED
    if simulated and not args.smoke:
        print("gpu_bench: running under the CUDA simulator: use --smoke (timings are "
              "meaningless there)", file=sys.stderr)
        return 2
    dtype = np.dtype(args.dtype)
    ops = set(args.ops.split(",")) if args.ops else None
    timer = Timer(cuda, args.repeat, args.inner, simulated)
    torch = cp = None
    if not args.no_peers and not simulated:
        try:
            import torch
            if not torch.cuda.is_available():
                torch = None
        except ImportError:
            torch = None
        try:
            import cupy as cp
        except ImportError:
            cp = None
    results = []
    rng = np.random.default_rng(0)

    # launch overhead on small device arrays
    small = cuda.to_device(rng.normal(0, 3, 64 if args.smoke else 1024).astype(dtype))
    overhead = {f: timer.host_overhead_us(lambda f=f: getattr(fa, f)(small))
                for f in ("relu", "sigmoid")}
    overhead["softmax(8 rows)"] = timer.host_overhead_us(
        lambda s=small.reshape(8, small.size // 8): fa.softmax(s))
    for name, us in overhead.items():
        print(f"host overhead {name}: {us:.2f} us/call")

    for n in args.sizes:
        x = cuda.to_device(rng.normal(0, 3, n).astype(dtype))
        g = cuda.to_device(rng.normal(0, 1, n).astype(dtype))
        y = fa.sigmoid(x)
        tmp = cuda.device_array(n, dtype)
        copy_s = timer.seconds(lambda: tmp.copy_to_device(x))
        copy_gbs = 2 * n * dtype.itemsize / copy_s / 1e9
        results.append(row("device copy", "cudaMemcpy", f"copy n={n}", copy_s,
                           2 * n * dtype.itemsize, copy_gbs))
        tx = cx = None
        if torch is not None:
            tx = torch.as_tensor(x, device="cuda")
        if cp is not None:
            cx = cp.asarray(x)
        for spec, form in elementwise_cases(ops):
            reads, writes = FORM_IO[form]
            nbytes = (reads + writes) * n * dtype.itemsize
            case = f"{spec.public_name('backward' if form == 'backward_from_y' else form)}" \
                   f"{'(y=)' if form == 'backward_from_y' else ''} n={n}"
            xin = x.reshape(n // 16, 16) if spec.kind == "channel" else x
            gin = g.reshape(n // 16, 16) if spec.kind == "channel" else g
            s = timer.seconds(make_call(spec, form, xin, gin, y))
            results.append(row("fastact", "cuda", case, s, nbytes, copy_gbs))
            ours = results[-1]
            for label, peer in (("torch", tx is not None and torch_peer(spec, form, tx, False)),
                                ("torch.compile", tx is not None and args.compile
                                 and torch_peer(spec, form, tx, True)),
                                ("cupy", cx is not None and cupy_peer(spec, form, cx))):
                if peer:
                    results.append(row(label, label, case, timer.seconds(peer), nbytes,
                                       copy_gbs))
            print(f"  {case}: {s * 1e6:.1f} us, {ours['GB/s']:.1f} GB/s", flush=True)
        del x, g, y, tmp

    for width in args.widths:
        rows = max(1, args.row_elements // width)
        x = cuda.to_device(rng.normal(0, 3, (rows, width)).astype(dtype))
        n = rows * width
        tmp = cuda.device_array((rows, width), dtype)
        copy_s = timer.seconds(lambda: tmp.copy_to_device(x))
        copy_gbs = 2 * n * dtype.itemsize / copy_s / 1e9
        yv = fa.softmax(x)
        for spec in _registry.OPS:
            if spec.kind != "rowwise" or (ops and spec.name not in ops):
                continue
            for form in spec.forms:
                fn = getattr(fa, spec.public_name(form))
                call = (lambda: fn(x)) if form == "forward" else (lambda: fn(x, y=yv))
                nbytes = (2 if form == "forward" else 3) * n * dtype.itemsize
                case = f"{spec.public_name(form)} rows={rows} C={width}"
                results.append(row("fastact", "cuda", case, timer.seconds(call), nbytes,
                                   copy_gbs))
                if torch is not None and form == "forward":
                    import torch.nn.functional as F

                    tf = getattr(F, spec.name, None)
                    if tf is not None:
                        tx = torch.as_tensor(x, device="cuda")
                        for label, c in (("torch", lambda: tf(tx, dim=-1)),):
                            results.append(row(label, label, case, timer.seconds(c), nbytes,
                                               copy_gbs))
        del x, tmp, yv

    if not ops or "cross_entropy" in ops:
        n_rows, n_cls = (16, 64) if args.smoke else (16384, 131072)
        free = None if simulated else cuda.current_context().get_memory_info()[0]
        while free is not None and n_rows * n_cls * dtype.itemsize * 3 > free:
            n_rows //= 2
        logits = cuda.to_device(rng.normal(0, 3, (n_rows, n_cls)).astype(dtype))
        target = cuda.to_device(rng.integers(0, n_cls, n_rows))
        tmp = cuda.device_array((n_rows, n_cls), dtype)
        copy_gbs = 2 * logits.size * dtype.itemsize / timer.seconds(
            lambda: tmp.copy_to_device(logits)) / 1e9
        del tmp
        case = f"cross_entropy_and_grad ({n_rows}, {n_cls})"
        nbytes = 2 * n_rows * n_cls * dtype.itemsize  # the logits read once, the gradient written
        results.append(row("fastact", "cuda", case,
                           timer.seconds(lambda: fa.cross_entropy_and_grad(logits, target)),
                           nbytes, copy_gbs))
        results.append(row("fastact", "cuda", case + " in place",
                           timer.seconds(lambda: fa.cross_entropy_and_grad(logits, target,
                                                                           out=logits)),
                           nbytes, copy_gbs))
        if torch is not None:
            F = torch.nn.functional
            tl = torch.as_tensor(logits, device="cuda")
            tt = torch.as_tensor(target, device="cuda")

            def unfused():
                xr = tl.detach().requires_grad_(True)
                F.cross_entropy(xr, tt).backward()
                return xr.grad

            results.append(row("torch", "torch", case, timer.seconds(unfused), nbytes,
                               copy_gbs))
        del logits, target

    print()
    print(f"{'case':48s} {'impl':14s} {'time us':>10s} {'GB/s':>9s} {'% copy':>7s}")
    for r in results:
        pct = f"{r['pct_copy']:.0f}%" if r.get("pct_copy") else "-"
        print(f"{r['case']:48s} {r['impl']:14s} {r['time_us']:10.1f} {r['GB/s']:9.1f} {pct:>7s}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": device_info(cuda, simulated), "dtype": dtype.name,
                       "host_overhead_us": overhead, "simulated": simulated,
                       "results": results}, f, indent=1, default=str)
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
