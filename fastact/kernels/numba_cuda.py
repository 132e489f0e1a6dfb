"""CUDA backend: ``numba.cuda`` kernels (package ``numba-cuda``, the ``cuda`` extra).

Same kernel names and arguments as the other backend modules (DESIGN.md section 6):
destination passing, ``<op>_<form>(inputs..., params..., outputs...)``, returning nothing.
Each public kernel accepts CUDA device arrays (Numba device arrays, or simulator arrays under
``NUMBA_ENABLE_CUDASIM=1``) and also host NumPy arrays, for ``backend='cuda'`` forced on host
input: host inputs are copied to the device, the kernel runs, and only the *output* buffers are
copied back (a host input is never written, DESIGN.md section 7: host arrays are never passed to
a kernel directly, which would copy them back implicitly).

How the kernels are made:

* every scalar formula of ``fastact/_math.py`` is re-bound with ``cuda.jit(device=True)``
  (:func:`_bind_formulas`, the twin of ``numba_cpu._bind_formulas``).  The CPU backends' fast
  polynomial helpers are replaced by libdevice through ``math.*``: a helper named ``<f>_poly``
  becomes ``math.<f>`` (``exp_poly`` -> ``math.exp``), and ``pow2(k)`` becomes
  ``math.ldexp(1.0, k)``; so new formulas written with those helpers need no CUDA edit;
* elementwise kernels are generated from the registry as source text: 64-bit grid-stride loops
  (``i`` and the stride are int64, arrays above 2**31 elements work), formulas evaluated in
  float64 and rounded once on store, as on the CPU;
* row kernels (softmax family) are written once: one block per row (grid-stride over rows),
  each thread an online max/sum with float64 Neumaier-compensated accumulation, then a
  shared-memory tree reduction; rows are addressed in an ``(outer, C, inner)`` view so that any
  axis works without transposing (the host convention ``(rows, C)`` is ``inner = 1``);
* prelu: a grid-stride elementwise kernel (channel ``(i // inner) % C``), and for its backward
  per-block float64 partial sums reduced in shared memory, then summed per channel in a fixed
  order (deterministic, no atomics).

Launch configurations are cached per (kernel, size, stream).  Never ``fastmath`` (DESIGN.md
section 4).  Nothing here compiles at import: kernels compile on first use per dtype.
"""

from __future__ import annotations

import contextvars
import linecache
import math
import re
import types

import numpy as np
from numba import cuda

from .. import _math, _registry

#: True under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``): kernels run as Python.
SIMULATED = bool(getattr(cuda.config, "ENABLE_CUDASIM", False)) or \
    cuda.__name__.endswith("simulator") or hasattr(cuda, "FakeCUDAKernel")

#: Threads per block.  Under the simulator every thread is a Python thread, so blocks are small;
#: the tests change these to exercise several block and grid shapes.
ELEMENTWISE_THREADS = 32 if SIMULATED else 256
#: Upper bound on blocks of an elementwise launch (grid-stride loops cover the rest).
ELEMENTWISE_MAX_BLOCKS = 4 if SIMULATED else 0  # 0: 32 blocks per multiprocessor
#: Threads per row block (a power of two, at most ROW_SHARED).  Under the simulator each is a
#: Python thread: 8 keep rows longer than a block and a three-level tree reduction, and halve
#: the simulated row tests (test_rowwise_device: 152 s with 16).
ROW_THREADS = 8 if SIMULATED else 256
ROW_SHARED = 1024  # shared-memory slots per block (compile-time constant)
#: Upper bound on row blocks per launch (grid-stride over rows beyond it).
ROW_MAX_BLOCKS = 8 if SIMULATED else 65535
#: Elements per block in prelu_backward's per-channel partial sums.
PRELU_CHUNK = 256 if SIMULATED else 1 << 14

JIT_OPTIONS: dict = {}  # explicit: no fastmath

_GENERATED_FILENAME = "<fastact_numba_cuda_generated>"


# --------------------------------------------------------------------------------------------
# formulas: _math.py as device functions on libdevice
# --------------------------------------------------------------------------------------------

def _bind_formulas(module, decorate, primitives=None) -> dict:
    """Re-create every function of ``module`` in a fresh namespace and decorate it (calls between
    formulas then resolve to the decorated versions); ``primitives`` replace functions whose
    Python body is a CPU-only fast path."""
    ns = dict(vars(module))
    for name, obj in list(ns.items()):
        if isinstance(obj, types.FunctionType) and obj.__module__ == module.__name__:
            clone = types.FunctionType(obj.__code__, ns, name, obj.__defaults__, obj.__closure__)
            clone.__qualname__ = obj.__qualname__
            ns[name] = decorate(clone)
    ns.update(primitives or {})
    return ns


#: ``<f>_poly`` and ``<f>_poly_<variant>`` (e.g. ``exp_poly_single``): the CPU backends'
#: polynomial versions of the libm function ``<f>``
_POLY_NAME = re.compile(r"^([a-z][a-z0-9]*)_poly(_[a-z0-9_]+)?$")


def _libdevice_primitives(names=None) -> dict:
    """``<f>_poly[_variant]`` -> ``math.<f>`` (libdevice), ``pow2(k)`` -> ``ldexp(1, k)``, for
    the function names of ``_math`` (or ``names``)."""
    device = cuda.jit(device=True, **JIT_OPTIONS)
    prims = {}
    source = []
    for name in (vars(_math) if names is None else names):
        match = _POLY_NAME.match(name)
        if match and hasattr(math, match.group(1)):
            source.append(f"def {name}(x):\n    return math.{match.group(1)}(x)\n")
    source.append("def pow2(k):\n    return math.ldexp(1.0, int(k))\n")
    source.append("def fma(a, b, c):\n    return cuda.fma(a, b, c)\n")
    ns = {"math": math, "cuda": cuda}
    exec(compile("".join(source), "<fastact_numba_cuda_primitives>", "exec"), ns)
    for name, fn in ns.items():
        if isinstance(fn, types.FunctionType):
            prims[name] = device(fn)
    return prims


FORMULAS = _bind_formulas(_math, cuda.jit(device=True, **JIT_OPTIONS),
                          primitives=_libdevice_primitives())


# --------------------------------------------------------------------------------------------
# elementwise kernels: generated from the registry
# --------------------------------------------------------------------------------------------

def _elementwise_specs(op: _registry.OpSpec):
    """(kernel name, arguments, number of outputs, loop body) for each kernel of an op."""
    pa = "".join(f", {n}" for n in op.param_names)
    p = "".join(f"{n}, " for n in op.param_names)
    f = f"F_{op.name}"
    X = "np.float64(x[i])"
    if f"{op.name}_and_derivative" in FORMULAS:
        fused = f"F_{op.name}_and_derivative(xi{pa})"
    else:
        fused = f"({f}(xi{pa}), {f}_derivative(xi{pa}))"
    specs = [
        (f"{op.name}_forward", f"x, {p}out", 1, f"out[i] = {f}({X}{pa})"),
        (f"{op.name}_derivative", f"x, {p}out", 1, f"out[i] = {f}_derivative({X}{pa})"),
        (f"{op.name}_and_derivative", f"x, {p}out, dout", 2,
         f"xi = {X}\n        v, d = {fused}\n        out[i] = v\n        dout[i] = d"),
        (f"{op.name}_backward", f"grad, x, {p}out", 1,
         f"out[i] = np.float64(grad[i]) * {f}_derivative({X}{pa})"),
    ]
    if op.y_backward is not None:
        specs.append((f"{op.name}_backward_from_y", f"grad, y, {p}out", 1,
                      f"out[i] = np.float64(grad[i]) * "
                      f"{f}_derivative_from_y(np.float64(y[i]){pa})"))
    return specs


_ELEMENTWISE_TEMPLATE = """
def {name}__kernel({args}):
    i = np.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    stride = np.int64(cuda.gridDim.x) * cuda.blockDim.x
    n = out.size
    while i < n:
        {body}
        i += stride
"""

# prelu: the channel of flat element i is (i // inner) % weight.size
_PRELU_TEMPLATE = """
def prelu_{form}__kernel(x, weight, inner, {outs}):
    i = np.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    stride = np.int64(cuda.gridDim.x) * cuda.blockDim.x
    n = out.size
    nw = weight.size
    while i < n:
        w = weight[(i // inner) % nw]
        {body}
        i += stride
"""
_PRELU_BODIES = {
    "forward": ("out", "out[i] = F_leaky_relu(np.float64(x[i]), w)"),
    "derivative": ("out", "out[i] = F_leaky_relu_derivative(np.float64(x[i]), w)"),
    "and_derivative": ("out, dout", "xi = np.float64(x[i])\n        "
                       "out[i] = F_leaky_relu(xi, w)\n        "
                       "dout[i] = F_leaky_relu_derivative(xi, w)"),
}


# gated units: element i of the rows * width output is row r = i // width, column i - r width;
# its operands sit at r * stride + column (glu: both halves of one buffer)
_GATED_TEMPLATE = """
def {name}_forward__kernel(gate, value, rows, width, stride, {p}out):
{head}
        out[i] = F_{gate}(np.float64(gate[k]){pa}) * np.float64(value[k])
        i += step


def {name}_backward__kernel(grad, gate, value, rows, width, stride, {p}grad_gate, grad_value):
{head}
        g = np.float64(grad[i])
        v = np.float64(value[k])
        xg = np.float64(gate[k])
        a, d = {fused}
        grad_gate[k] = g * v * d
        grad_value[k] = g * a
        i += step
"""
_GATED_LOOP = """    i = np.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = np.int64(cuda.gridDim.x) * cuda.blockDim.x
    n = np.int64(rows) * width
    while i < n:
        r = i // width
        k = r * stride + (i - r * width)"""


def _gated_source(op: _registry.OpSpec) -> str:
    gate = op.extra["gate"]
    pa = "".join(f", {n}" for n in op.param_names)
    if f"{gate}_and_derivative" in FORMULAS:
        fused = f"F_{gate}_and_derivative(xg{pa})"
    else:
        fused = f"F_{gate}(xg{pa}), F_{gate}_derivative(xg{pa})"
    return _GATED_TEMPLATE.format(name=op.name, gate=gate, pa=pa, fused=fused,
                                  head=_GATED_LOOP, p="".join(f"{n}, " for n in op.param_names))


def _kernel_source() -> tuple[str, list[tuple[str, int]]]:
    specs = [s for op in _registry.elementwise_ops() for s in _elementwise_specs(op)]
    chunks = [_ELEMENTWISE_TEMPLATE.format(name=n, args=a, body=b) for n, a, _, b in specs]
    for form, (outs, body) in _PRELU_BODIES.items():
        chunks.append(_PRELU_TEMPLATE.format(form=form, outs=outs, body=body))
    names = [(s[0], s[2]) for s in specs] + [(f"prelu_{form}", len(o.split(",")))
                                             for form, (o, _) in _PRELU_BODIES.items()]
    chunks += [_gated_source(op) for op in _registry.gated_ops()]
    return "".join(chunks), names


# --------------------------------------------------------------------------------------------
# hand-written kernels: prelu_backward, the softmax family, strided copies
# --------------------------------------------------------------------------------------------

F64 = cuda.float64 if hasattr(cuda, "float64") else np.float64
_F_leaky_d = FORMULAS["leaky_relu_derivative"]


@cuda.jit(**JIT_OPTIONS)
def _prelu_backward_kernel(grad, x, weight, inner, nchunk, out, partial):
    # block b handles chunk (b % nchunk) of block-row (b // nchunk): one channel per block, so
    # its float64 partial of sum(grad * x where x <= 0) belongs to one channel
    sm = cuda.shared.array(ROW_SHARED, F64)
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    nw = weight.size
    nblocks = (np.int64(x.size) // inner) * nchunk
    b = np.int64(cuda.blockIdx.x)
    while b < nblocks:
        row = b // nchunk
        start = row * inner + (b % nchunk) * PRELU_CHUNK
        stop = min(start + PRELU_CHUNK, (row + 1) * inner)
        w = weight[row % nw]
        acc = 0.0
        i = start + t
        while i < stop:
            v = np.float64(x[i])
            g = np.float64(grad[i])
            out[i] = g * _F_leaky_d(v, w)
            if not v > 0.0:
                acc += g * v
            i += nt
        sm[t] = acc
        cuda.syncthreads()
        half = nt // 2
        while half > 0:
            if t < half:
                sm[t] += sm[t + half]
            cuda.syncthreads()
            half //= 2
        if t == 0:
            partial[b] = sm[0]
        cuda.syncthreads()
        b += cuda.gridDim.x


@cuda.jit(**JIT_OPTIONS)
def _prelu_weight_sum_kernel(partial, nchunk, grad_weight):
    # one thread per channel, partials added in a fixed order (reproducible)
    c = np.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    nw = grad_weight.size
    if c < nw:
        s = 0.0
        b = c * nchunk
        step = nw * nchunk
        while b < partial.size:
            for q in range(nchunk):
                s += partial[b + q]
            b += step
        grad_weight[c] = s


@cuda.jit(device=True, **JIT_OPTIONS)
def _kept(mask, has_mask, o, j, k):
    return has_mask == 0 or mask[o, j, k] != 0


@cuda.jit(**JIT_OPTIONS)
def _softmax_rows_kernel(x, mask, has_mask, temperature, out, mode, sign):
    """Row ``x[o, :, k]`` (rows = outer * inner) of ``v = sign * x``: mode 0 softmax(v / T),
    1 log_softmax(v / T), 2 logsumexp ``T log sum exp(v / T)`` into ``out[o, 0, k]``.
    (``sign = -1``: softmin and its log.)"""
    sm_m = cuda.shared.array(ROW_SHARED, F64)
    sm_s = cuda.shared.array(ROW_SHARED, F64)
    sm_k = cuda.shared.array(ROW_SHARED, F64)
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    n = x.shape[1]
    inner = np.int64(x.shape[2])
    rows = np.int64(x.shape[0]) * inner
    r = np.int64(cuda.blockIdx.x)
    while r < rows:
        o = r // inner
        k = r - o * inner
        # this thread's online max m and sum s of exp((v - m) / T), Neumaier-compensated
        m = -math.inf
        s = 0.0
        c = 0.0
        kept = 0.0
        j = t
        while j < n:
            if _kept(mask, has_mask, o, j, k):
                kept = 1.0
                v = sign * np.float64(x[o, j, k])
                if v > m:  # NaN never wins: it reaches the sum instead and makes it NaN
                    scale = math.exp((m - v) / temperature)
                    s *= scale
                    c *= scale
                    m = v
                    term = 1.0
                else:
                    term = math.exp((v - m) / temperature)
                u = s + term
                if abs(s) >= abs(term):
                    c += (s - u) + term
                else:
                    c += (term - u) + s
                s = u
            j += nt
        sm_m[t] = m
        sm_s[t] = s + c
        sm_k[t] = kept
        cuda.syncthreads()
        half = nt // 2
        while half > 0:
            if t < half:
                m1 = sm_m[t]
                m2 = sm_m[t + half]
                mm = m1 if m1 >= m2 else m2
                if mm == -math.inf:
                    sm_s[t] = sm_s[t] + sm_s[t + half]
                else:
                    sm_s[t] = (sm_s[t] * math.exp((m1 - mm) / temperature)
                               + sm_s[t + half] * math.exp((m2 - mm) / temperature))
                sm_m[t] = mm
                sm_k[t] = sm_k[t] + sm_k[t + half]
            cuda.syncthreads()
            half //= 2
        mx = sm_m[0]
        total = sm_s[0]
        any_kept = sm_k[0] > 0.0
        cuda.syncthreads()  # everyone has read slot 0 before the next row overwrites it
        ls = math.log(total) if (mode != 0 and any_kept) else 0.0
        if mode == 2:
            if t == 0:
                out[o, 0, k] = mx + temperature * ls if any_kept else -math.inf
            j = n  # nothing else to write
        else:
            j = t
        while j < n:
            keep = _kept(mask, has_mask, o, j, k)
            if mode == 1:
                if keep:
                    out[o, j, k] = (sign * np.float64(x[o, j, k]) - mx) / temperature - ls
                else:
                    out[o, j, k] = -math.inf
            else:
                if keep:
                    out[o, j, k] = (math.exp((sign * np.float64(x[o, j, k]) - mx) / temperature)
                                    / total)
                else:
                    out[o, j, k] = 0.0
            j += nt
        r += cuda.gridDim.x


@cuda.jit(**JIT_OPTIONS)
def _softmax_backward_rows_kernel(grad, y, mask, has_mask, temperature, out, log, sign):
    """softmax: dx = y (g - sum(g y)) / T;  log_softmax: dx = (g - exp(y) sum(g)) / T; times
    ``sign`` (-1: softmin, the softmax of -x)."""
    sm_s = cuda.shared.array(ROW_SHARED, F64)
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    n = y.shape[1]
    inner = np.int64(y.shape[2])
    rows = np.int64(y.shape[0]) * inner
    r = np.int64(cuda.blockIdx.x)
    while r < rows:
        o = r // inner
        k = r - o * inner
        s = 0.0
        c = 0.0
        j = t
        while j < n:
            if _kept(mask, has_mask, o, j, k):
                g = np.float64(grad[o, j, k])
                term = g if log != 0 else g * np.float64(y[o, j, k])
                u = s + term
                if abs(s) >= abs(term):
                    c += (s - u) + term
                else:
                    c += (term - u) + s
                s = u
            j += nt
        sm_s[t] = s + c
        cuda.syncthreads()
        half = nt // 2
        while half > 0:
            if t < half:
                sm_s[t] += sm_s[t + half]
            cuda.syncthreads()
            half //= 2
        total = sm_s[0]
        cuda.syncthreads()
        j = t
        while j < n:
            if _kept(mask, has_mask, o, j, k):
                g = np.float64(grad[o, j, k])
                yj = np.float64(y[o, j, k])
                if log != 0:
                    out[o, j, k] = sign * (g - math.exp(yj) * total) / temperature
                else:
                    out[o, j, k] = sign * yj * (g - total) / temperature
            else:
                out[o, j, k] = 0.0
            j += nt
        r += cuda.gridDim.x


#: Generated strided copies ``dst[idx] = src[idx]`` for ndim 1..MAX_COPY_NDIM (any strides on
#: both sides, dtype converted on store): make contiguous compute-dtype copies of device inputs,
#: and write results through the strides of a device ``out``.
MAX_COPY_NDIM = 8

_COPY_TEMPLATE = """
def copy_{nd}d__kernel(src, dst):
    i = np.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    stride = np.int64(cuda.gridDim.x) * cuda.blockDim.x
    n = np.int64(dst.size)
    while i < n:
        q = i
{unravel}
        dst[{idx}] = src[{idx}]
        i += stride
"""


def _copy_source() -> str:
    chunks = []
    for nd in range(1, MAX_COPY_NDIM + 1):
        lines = []
        for d in range(nd - 1, 0, -1):
            lines.append(f"        i{d} = q % dst.shape[{d}]\n        q = q // dst.shape[{d}]")
        lines.append("        i0 = q")
        idx = ", ".join(f"i{d}" for d in range(nd))
        chunks.append(_COPY_TEMPLATE.format(nd=nd, unravel="\n".join(lines), idx=idx))
    return "".join(chunks)


# --------------------------------------------------------------------------------------------
# launching
# --------------------------------------------------------------------------------------------

_sm_count: int | None = None


def _max_blocks() -> int:
    global _sm_count
    if ELEMENTWISE_MAX_BLOCKS:
        return ELEMENTWISE_MAX_BLOCKS
    if _sm_count is None:
        try:
            _sm_count = int(cuda.get_current_device().MULTIPROCESSOR_COUNT)
        except Exception:  # pragma: no cover - attribute missing in some versions
            _sm_count = 80
    return 32 * _sm_count


_configured: dict = {}


def _launch(kernel, n: int, threads: int, max_blocks: int, *args) -> None:
    """``kernel[blocks, threads, stream](*args)`` with the configured launcher cached; the stream
    is :data:`STREAM`'s value (None: the default stream)."""
    stream = STREAM.get()
    blocks = max(1, min((n + threads - 1) // threads, max_blocks))
    key = (kernel, blocks, threads, stream)
    launcher = _configured.get(key)
    if launcher is None:
        launcher = kernel[blocks, threads] if stream is None else kernel[blocks, threads, stream]
        if len(_configured) > 4096:
            _configured.clear()
        _configured[key] = launcher
    launcher(*args)


def empty(shape, dtype):
    """An uninitialised device array, allocated on the current stream."""
    stream = STREAM.get()
    if stream is None:
        return cuda.device_array(shape, dtype)
    return cuda.device_array(shape, dtype, stream=stream)


def to_device(host: np.ndarray):
    """A device copy of a host array, on the current stream."""
    stream = STREAM.get()
    host = np.ascontiguousarray(host)
    if stream is None:
        return cuda.to_device(host)
    return cuda.to_device(host, stream=stream)


def _is_host(a) -> bool:
    return isinstance(a, np.ndarray)


#: The stream kernels launch on (per thread / task): ``fastact._device`` sets it for the duration
#: of a call to the input's current stream (CuPy's / PyTorch's current stream, a Numba array's
#: own stream); None is the default stream.
STREAM: contextvars.ContextVar = contextvars.ContextVar("fastact_cuda_stream", default=None)


def _on_device(args, n_out):
    """Device versions of ``args``: host arrays are copied in (outputs of a host call are fresh
    device buffers), device arrays and numbers pass through.  Returns (args, copy-backs)."""
    dev = []
    back = []
    first_out = len(args) - n_out
    for pos, a in enumerate(args):
        if _is_host(a):
            if pos >= first_out:
                d = cuda.device_array(a.shape, a.dtype)
                back.append((d, a))
            else:
                d = to_device(a)
            dev.append(d)
        else:
            dev.append(a)
    return dev, back


def _copy_back(back) -> None:
    for d, host in back:
        d.copy_to_host(host)


def _elementwise_launcher(name: str, kernel, n_out: int):
    def run(*args):
        dev, back = _on_device(args, n_out)
        out = dev[-n_out]
        _launch(kernel, out.size, ELEMENTWISE_THREADS, _max_blocks(), *dev)
        _copy_back(back)

    run.__name__ = run.__qualname__ = name
    run.kernel = kernel
    return run


def _gated_launcher(name: str, kernel):
    """Gated kernels take device arrays only: the API copies whole host buffers in and out
    (glu's operands are overlapping views of one buffer, which per-argument copies would
    break)."""
    def run(*args):
        pos = 3 if name.endswith("_backward") else 2  # index of rows
        n = int(args[pos]) * int(args[pos + 1])
        _launch(kernel, n, ELEMENTWISE_THREADS, _max_blocks(), *args)

    run.__name__ = run.__qualname__ = name
    run.kernel = kernel
    run.device_only = True
    return run


def _as_rows3(a):
    """(rows, C) -> (rows, C, 1); 3-D arrays pass through."""
    if a is None or len(a.shape) == 3:
        return a
    return a.reshape(a.shape[0], a.shape[1], 1)


_DUMMY_MASK = {}


def _mask_args(mask):
    if mask is None:
        key = STREAM.get()
        d = _DUMMY_MASK.get(key)
        if d is None:
            d = _DUMMY_MASK[key] = cuda.to_device(np.ones((1, 1, 1), np.uint8))
        return d, 0
    return mask, 1


def rows_forward(x3, mask3, temperature, out3, log: bool, sign: float = 1.0,
                 logsumexp: bool = False) -> None:
    """Row kernel on device arrays in (outer, C, inner) layout (``mask3``: uint8 of the same
    shape, or None): softmax (log=False) / log_softmax (log=True) of ``sign * x``; softmin is
    ``sign=-1``.  ``logsumexp=True`` writes ``T log sum exp(x / T)`` per row into
    ``out3[:, 0, :]`` (shape (outer, 1, inner)); a fully masked row gives -inf."""
    m, has = _mask_args(mask3)
    rows = x3.shape[0] * x3.shape[2]
    mode = 2 if logsumexp else int(bool(log))
    _launch(_softmax_rows_kernel, rows * ROW_THREADS, ROW_THREADS, ROW_MAX_BLOCKS,
            x3, m, has, float(temperature), out3, mode, float(sign))


def rows_backward(g3, y3, mask3, temperature, out3, log: bool, sign: float = 1.0) -> None:
    """Backward of :func:`rows_forward` given its output ``y3`` (softmin: ``sign=-1``)."""
    m, has = _mask_args(mask3)
    rows = y3.shape[0] * y3.shape[2]
    _launch(_softmax_backward_rows_kernel, rows * ROW_THREADS, ROW_THREADS, ROW_MAX_BLOCKS,
            g3, y3, m, has, float(temperature), out3, int(bool(log)), float(sign))


def _row_kernel(name: str, log: bool, backward: bool, sign: float = 1.0):
    def run(*args):
        # (x, mask, temperature, out) or (grad, y, mask, temperature, out), (rows, C) or 3-D
        dev, back = _on_device(args, 1)
        dev = [_as_rows3(a) if hasattr(a, "shape") else a for a in dev]
        if backward:
            rows_backward(dev[0], dev[1], dev[2], dev[3], dev[4], log, sign)
        else:
            rows_forward(dev[0], dev[1], dev[2], dev[3], log, sign)
        _copy_back(back)

    run.__name__ = run.__qualname__ = name
    return run


#: row ops: name -> (log, sign).  softmin(x) = softmax(-x) (its kernels are ready for the
#: registry entry; ``fastact._device`` uses this table too).
ROW_OPS = {"softmax": (False, 1.0), "log_softmax": (True, 1.0), "softmin": (False, -1.0)}

softmax_forward = _row_kernel("softmax_forward", False, False)
log_softmax_forward = _row_kernel("log_softmax_forward", True, False)
softmax_backward = _row_kernel("softmax_backward", False, True)
log_softmax_backward = _row_kernel("log_softmax_backward", True, True)
softmin_forward = _row_kernel("softmin_forward", False, False, -1.0)
softmin_backward = _row_kernel("softmin_backward", False, True, -1.0)


def prelu_backward(grad, x, weight, inner, out, grad_weight) -> None:
    """grad_x = grad * prelu'(x) and grad_weight[c] = sum over channel c of grad * x (x <= 0),
    accumulated in float64 (``grad_weight`` is float64, as on the CPU)."""
    dev, back = _on_device((grad, x, weight, inner, out, grad_weight), 2)
    g, xd, w, inner, o, gw = dev
    inner = int(inner)
    nchunk = (inner + PRELU_CHUNK - 1) // PRELU_CHUNK
    nblocks = (xd.size // inner) * nchunk
    partial = empty(nblocks, np.float64)
    _launch(_prelu_backward_kernel, nblocks * ROW_THREADS, ROW_THREADS, ROW_MAX_BLOCKS,
            g, xd, w, np.int64(inner), np.int64(nchunk), o, partial)
    _launch(_prelu_weight_sum_kernel, gw.size, ELEMENTWISE_THREADS, 1 << 20,
            partial, np.int64(nchunk), gw)
    _copy_back(back)


def copy(src, dst) -> None:
    """``dst[...] = src`` on the device, any strides, dtype converted (same shape, ndim >= 1)."""
    nd = len(dst.shape)
    if nd == 0:
        src, dst = src.reshape(1), dst.reshape(1)
        nd = 1
    if nd > MAX_COPY_NDIM:
        raise ValueError(f"fastact: CUDA arrays with more than {MAX_COPY_NDIM} dimensions are "
                         "supported only when C-contiguous")
    _launch(COPY_KERNELS[nd], dst.size, ELEMENTWISE_THREADS, _max_blocks(),
            src, dst)


def _build() -> dict:
    source, names = _kernel_source()
    source += _copy_source()
    linecache.cache[_GENERATED_FILENAME] = (len(source), None, source.splitlines(True),
                                            _GENERATED_FILENAME)
    ns = {"__name__": __name__, "np": np, "cuda": cuda, "math": math}
    ns.update({f"F_{k}": v for k, v in FORMULAS.items() if not k.startswith("_")
               and not isinstance(v, (float, int, types.ModuleType))})
    exec(compile(source, _GENERATED_FILENAME, "exec"), ns)
    kernels = {}
    for name, n_out in names:
        kernels[name] = _elementwise_launcher(name, cuda.jit(**JIT_OPTIONS)(ns[f"{name}__kernel"]),
                                              n_out)
    for op in _registry.gated_ops():
        for form in op.forms:
            name = f"{op.name}_{form}"
            kernels[name] = _gated_launcher(name, cuda.jit(**JIT_OPTIONS)(ns[f"{name}__kernel"]))
    copies = {nd: cuda.jit(**JIT_OPTIONS)(ns[f"copy_{nd}d__kernel"])
              for nd in range(1, MAX_COPY_NDIM + 1)}
    return kernels, copies


KERNELS, COPY_KERNELS = _build()
globals().update(KERNELS)
GENERATED_SOURCE = linecache.cache[_GENERATED_FILENAME][2]


def __getattr__(name: str):
    # an op of the registry without a CUDA kernel yet: a clear error instead of AttributeError
    # (the API asks for kernels by name)
    if name in _registry.kernel_names():
        raise NotImplementedError(f"fastact: the CUDA backend has no kernel {name!r} yet; use "
                                  "a host backend (backend='numba', 'cython' or 'numpy')")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def info() -> dict:
    """Device, driver and versions (``fa.backend_info()['cuda']``)."""
    import numba_cuda  # the package that provides numba.cuda

    entry = {"version": getattr(numba_cuda, "__version__", "?"), "simulated": SIMULATED}
    if SIMULATED:
        entry["device"] = "CUDA simulator (NUMBA_ENABLE_CUDASIM=1): kernels run as Python"
        return entry
    try:
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        entry["device"] = name
        entry["compute_capability"] = ".".join(map(str, dev.compute_capability))
        entry["multiprocessors"] = int(dev.MULTIPROCESSOR_COUNT)
        entry["driver"] = ".".join(map(str, cuda.cudadrv.driver.driver.get_version()))
        entry["runtime"] = ".".join(map(str, cuda.runtime.get_version()))
    except Exception as exc:  # pragma: no cover - informational only
        entry["device_error"] = f"{type(exc).__name__}: {exc}"
    return entry
