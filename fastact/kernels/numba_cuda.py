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

def _ieee_math():
    """Under the simulator only: ``math`` whose log, log1p, exp, expm1, sqrt and pow return
    -inf / inf / NaN where Python's raise (``math.log(0.0)`` is a ValueError in Python, -inf in
    libdevice), so simulated kernels follow the GPU's IEEE rules at the domain edges."""
    shim = types.SimpleNamespace(**{k: getattr(math, k) for k in dir(math)
                                    if not k.startswith("_")})
    for name, np_name in (("log", "log"), ("log1p", "log1p"), ("exp", "exp"),
                          ("expm1", "expm1"), ("sqrt", "sqrt"), ("pow", "power")):
        def ieee(*args, _f=getattr(np, np_name)):
            with np.errstate(all="ignore"):
                return float(_f(*(np.float64(a) for a in args)))

        setattr(shim, name, ieee)
    return shim


#: the ``math`` that formulas see: the real module on a GPU (libdevice), the shim in the simulator
_MATH = _ieee_math() if SIMULATED else math


def _bind_formulas(module, decorate, primitives=None) -> dict:
    """Re-create every function of ``module`` in a fresh namespace and decorate it (calls between
    formulas then resolve to the decorated versions); ``primitives`` replace functions whose
    Python body is a CPU-only fast path."""
    ns = dict(vars(module))
    if _MATH is not math:  # the simulator: names imported from math get the IEEE versions
        ns["math"] = _MATH
        for name, value in list(ns.items()):
            if getattr(math, name, None) is value and callable(value):
                ns[name] = getattr(_MATH, name)
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
    source.append("def mul_add(a, b, c):\n    return cuda.fma(a, b, c)\n")
    ns = {"math": _MATH, "cuda": cuda}
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


# --------------------------------------------------------------------------------------------
# losses: fused value-and-gradient kernels (issue 4 on the device)
# --------------------------------------------------------------------------------------------
# Same public names and arguments as the CPU backends (``<loss>_forward / _and_grad /
# _backward``, plain arrays and scalars, host or device), on top of a few device kernels that
# ``fastact._device`` also launches directly for device arrays:
#
# * elementwise losses: one generated kernel per loss, ``mode`` bit 1 = write the loss, bit 2 =
#   write the gradient.  Block ``b`` (grid-stride over blocks) owns elements
#   ``[b LOSS_BLOCK, (b + 1) LOSS_BLOCK)`` -- the CPU backends' partial-sum blocks, so
#   ``partial`` has the same layout -- its threads stride over them (coalesced) and the float64
#   partial sum is a shared-memory tree.  The gradient multiplier is ``gl`` (size 1 or n) times
#   the scalar ``scale``.
# * cross-entropy (class or probability targets) and nll_loss on rows in an
#   ``(outer, C, inner)`` view, so the class axis can be any axis without a transposed copy;
#   row ``r = o * inner + k`` indexes the flat target, loss and gradient multiplier.  One block
#   per row: each thread an online max / sum of exp / weighted shift sum
#   ``sum w (m - x)`` (each term >= 0, no cancellation) in float64, merged by a shared-memory
#   tree; the gradient pass re-reads the row (from L2 for rows that fit) and writes each element
#   right after reading it, so the gradient may overwrite the logits.  A row whose max is +inf
#   takes a second pass that counts its +inf and NaN entries: one +inf and no NaN gives the
#   limit (probability 1 at that logit), as on the CPU.  The multiplier of row r is
#   ``g[r or 0] * (1 / count[0] if mean else 1)`` (``count``: a device array, so a device
#   'mean' needs no host round trip).

LOSS_BLOCK = 4096  # elements per partial sum (as api._LOSS_BLOCK and the CPU backends)


@cuda.jit(device=True, **JIT_OPTIONS)
def _block_sum(sm, value):
    """Sum of ``value`` over the block (float64, power-of-two block), returned to every
    thread; ``sm`` is a shared array of at least blockDim slots."""
    t = cuda.threadIdx.x
    sm[t] = value
    cuda.syncthreads()
    half = cuda.blockDim.x // 2
    while half > 0:
        if t < half:
            sm[t] += sm[t + half]
        cuda.syncthreads()
        half //= 2
    total = sm[0]
    cuda.syncthreads()  # everyone has read slot 0 before the next use overwrites it
    return total


_LOSS_ELEMENTWISE_TEMPLATE = """
def {name}__loss_kernel(x, y, w, pw, p, gl, scale, mode, block, out, grad, partial):
    sm = cuda.shared.array(ROW_SHARED, F64)
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    n = np.int64(x.size)
    nb = (n + block - 1) // block
    wn = w.size > 1
    pn = pw.size > 1
    gn = gl.size > 1
    want_loss = (mode & 1) != 0
    want_grad = (mode & 2) != 0
    keep = (mode & 4) != 0  # per-element values (reduction='none')
    b = np.int64(cuda.blockIdx.x)
    while b < nb:
        start = b * block
        stop = min(start + block, n)
        acc = 0.0
        i = start + t
        while i < stop:
            wi = w[i] if wn else w[0]
            xi = np.float64(x[i])
            yi = np.float64(y[i])
            pi = {param}
            if want_loss:
                v = F_{name}_value(xi, yi, pi)
                v = 0.0 if wi == 0.0 else wi * v
                if keep:
                    out[i] = v
                acc += v
            if want_grad:
                gi = (np.float64(gl[i]) if gn else np.float64(gl[0])) * scale
                grad[i] = gi * wi * F_{name}_grad(xi, yi, pi)
            i += nt
        if want_loss:
            total = _block_sum(sm, acc)
            if t == 0:
                partial[b] = total
        b += cuda.gridDim.x
"""


@cuda.jit(device=True, **JIT_OPTIONS)
def _shift_term(w, m, v):
    """w (m - v) as its limit: 0 for w == 0 or v == m (also +inf == +inf: that row takes the
    +inf path, which does not use this sum), +inf for v == -inf (also while m is -inf)."""
    if w == 0.0 or v == m:
        return 0.0
    if v == -math.inf:
        return math.inf
    return w * (m - v)


@cuda.jit(device=True, **JIT_OPTIONS)
def _class_w(weight, q, o, j, k, prob, keep, es):
    """The weight of class j in the smoothing / probability sum: weight[j] (class targets),
    weight[j] (keep q[o, j, k] + es) (probability targets)."""
    if prob != 0:
        return weight[j] * (keep * np.float64(q[o, j, k]) + es)
    return weight[j]


@cuda.jit(device=True, **JIT_OPTIONS)
def _row_multiplier(g, r, count, mean):
    gs = np.float64(g[r]) if g.size > 1 else np.float64(g[0])
    if mean != 0:
        c = count[0]
        gs = gs / c if c != 0.0 else 0.0  # every target ignored: gradient 0 (loss NaN)
    return gs


@cuda.jit(**JIT_OPTIONS)
def _cross_entropy_rows_kernel(x, target, q, weight, ignore_index, smoothing, prob, g, count,
                               mean, mode, loss, grad):
    """Cross-entropy of the rows ``x[o, :, k]`` (class targets ``target[r]``, or probability
    targets ``q`` when ``prob``): ``mode`` bit 1 writes ``loss[r]`` (float64), bit 2 writes
    the gradient times the row's multiplier into ``grad`` (which may be ``x``)."""
    sm_m = cuda.shared.array(ROW_SHARED, F64)
    sm_s = cuda.shared.array(ROW_SHARED, F64)
    sm_h = cuda.shared.array(ROW_SHARED, F64)
    sm_w = cuda.shared.array(ROW_SHARED, F64)
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    n = x.shape[1]
    inner = np.int64(x.shape[2])
    rows = np.int64(x.shape[0]) * inner
    want_loss = (mode & 1) != 0
    want_grad = (mode & 2) != 0
    es = smoothing / n
    keep = 1.0 - smoothing
    # class weights enter the pass only with smoothing (class targets) or probabilities
    wmode = prob != 0 or smoothing > 0.0
    r = np.int64(cuda.blockIdx.x)
    while r < rows:
        o = r // inner
        k = r - o * inner
        tr = np.int64(-1)
        wt = 0.0
        xt = 0.0
        if prob == 0:
            tr = np.int64(target[r])
        if prob == 0 and tr == ignore_index:  # uniform over the block
            if want_loss and t == 0:
                loss[r] = 0.0
            if want_grad:
                j = t
                while j < n:
                    grad[o, j, k] = 0.0
                    j += nt
            r += cuda.gridDim.x
            continue
        if prob == 0:
            wt = weight[tr]
            xt = np.float64(x[o, tr, k])  # read before any thread writes the row
        # pass 1: online max m, s = sum exp(x - m), h = sum w (m - x), wsum = sum w
        m = -math.inf
        s = 0.0
        h = 0.0
        wsum = 0.0
        j = t
        while j < n:
            v = np.float64(x[o, j, k])
            if v > m:
                s = s * math.exp(m - v) + 1.0 if m > -math.inf else s + 1.0
                if wsum != 0.0:
                    h += (v - m) * wsum
                m = v
            else:
                s += math.exp(v - m) if m > -math.inf else math.exp(v)
            if wmode:
                wj = _class_w(weight, q, o, j, k, prob, keep, es)
                h += _shift_term(wj, m, v)
                wsum += wj
            j += nt
        sm_m[t] = m
        sm_s[t] = s
        sm_h[t] = h
        sm_w[t] = wsum
        cuda.syncthreads()
        half = nt // 2
        while half > 0:
            if t < half:
                m1 = sm_m[t]
                m2 = sm_m[t + half]
                w1 = sm_w[t]
                w2 = sm_w[t + half]
                mm = m1 if m1 >= m2 else m2
                hh = sm_h[t] + sm_h[t + half]
                if m1 < mm and w1 != 0.0:
                    hh += (mm - m1) * w1
                if m2 < mm and w2 != 0.0:
                    hh += (mm - m2) * w2
                # (factors of 1 where a side holds the max: no inf - inf)
                f1 = 1.0 if m1 == mm else math.exp(m1 - mm)
                f2 = 1.0 if m2 == mm else math.exp(m2 - mm)
                sm_s[t] = sm_s[t] * f1 + sm_s[t + half] * f2
                sm_m[t] = mm
                sm_h[t] = hh
                sm_w[t] = w1 + w2
            cuda.syncthreads()
            half //= 2
        m = sm_m[0]
        s = sm_s[0]
        h = sm_h[0]
        wsum = sm_w[0]
        cuda.syncthreads()
        # a +inf max: the limit when the row has exactly one +inf and no NaN
        pinf = np.int64(-1)
        nonzero_other = False
        if m == math.inf:
            c_inf = 0.0
            c_nan = 0.0
            pos = -1.0
            c_nz = 0.0
            j = t
            while j < n:
                v = np.float64(x[o, j, k])
                if v == math.inf:
                    c_inf += 1.0
                    pos = max(pos, np.float64(j))
                elif v != v:
                    c_nan += 1.0
                if _class_w(weight, q, o, j, k, prob, keep, es) != 0.0:
                    c_nz += 1.0
                j += nt
            c_inf = _block_sum(sm_m, c_inf)
            c_nan = _block_sum(sm_s, c_nan)
            c_nz = _block_sum(sm_h, c_nz)
            sm_w[t] = pos
            cuda.syncthreads()
            half = nt // 2
            while half > 0:
                if t < half:
                    sm_w[t] = max(sm_w[t], sm_w[t + half])
                cuda.syncthreads()
                half //= 2
            pos = sm_w[0]
            cuda.syncthreads()
            if c_inf == 1.0 and c_nan == 0.0:
                pinf = np.int64(pos)
                self_nz = 1.0 if _class_w(weight, q, o, pinf, k, prob, keep, es) != 0.0 else 0.0
                nonzero_other = c_nz - self_nz > 0.0
        gs = _row_multiplier(g, r, count, mean) if want_grad else 0.0
        if prob != 0:
            a = wsum  # sum of weight * (keep q + es)
        else:
            a = keep * wt + es * wsum
        if pinf >= 0:
            if want_loss and t == 0:
                if prob != 0:
                    lv = math.inf if nonzero_other else 0.0
                else:
                    lv = 0.0 if (wt == 0.0 or tr == pinf) else math.inf
                    lv = 0.0 if keep == 0.0 else keep * lv
                    if smoothing > 0.0 and nonzero_other:
                        lv = math.inf
                loss[r] = lv
            if want_grad:
                j = t
                while j < n:
                    d = a if j == pinf else 0.0
                    if wmode:
                        d -= _class_w(weight, q, o, j, k, prob, keep, es) if prob != 0 \
                            else es * weight[j]
                    if prob == 0 and j == tr:
                        d -= keep * wt
                    grad[o, j, k] = gs * d
                    j += nt
        elif m == math.inf:
            # +inf with another +inf or a NaN: NaN, as on the CPU (which computes it through
            # inf - inf); a zero-weight target without smoothing keeps its 0 loss
            if want_loss and t == 0:
                if prob != 0:
                    loss[r] = 0.0 if (wsum == 0.0 and h == 0.0) else math.nan
                else:
                    loss[r] = 0.0 if (wt == 0.0 and smoothing == 0.0) else math.nan
            if want_grad:
                j = t
                while j < n:
                    grad[o, j, k] = math.nan
                    j += nt
        else:
            # s == 0: every logit -inf (log 0 = -inf, the gradient NaN, as on the CPU)
            ls = math.log(s) if s > 0.0 else (-math.inf if s == 0.0 else s)
            if want_loss and t == 0:
                if prob != 0:
                    lv = h + (0.0 if wsum == 0.0 else wsum * ls)
                else:
                    lv = 0.0 if wt == 0.0 else keep * wt * (_shift_term(1.0, m, xt) + ls)
                    if smoothing > 0.0:
                        lv += es * (h + wsum * ls)
                loss[r] = lv
            if want_grad:
                shift = m if m > -math.inf else 0.0
                c = gs * a / s if s != 0.0 else math.nan
                j = t
                while j < n:
                    d = c * math.exp(np.float64(x[o, j, k]) - shift)
                    if wmode:
                        d -= gs * (_class_w(weight, q, o, j, k, prob, keep, es) if prob != 0
                                   else es * weight[j])
                    if prob == 0 and j == tr:
                        d -= gs * keep * wt
                    grad[o, j, k] = d
                    j += nt
        r += cuda.gridDim.x


@cuda.jit(**JIT_OPTIONS)
def _nll_loss_rows_kernel(x, target, weight, ignore_index, g, count, mean, mode, loss, grad):
    """nll_loss over the (outer, C, inner) view, one thread per element (grid-stride): the
    element of the target class writes -w x_t as the row's loss (bit 1 of mode) and every
    element its gradient (bit 2)."""
    n = x.shape[1]
    inner = np.int64(x.shape[2])
    total = np.int64(x.shape[0]) * n * inner
    i = np.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = np.int64(cuda.gridDim.x) * cuda.blockDim.x
    while i < total:
        o = i // (n * inner)
        rest = i - o * n * inner
        j = rest // inner
        k = rest - j * inner
        r = o * inner + k
        tr = np.int64(target[r])
        ignored = tr == ignore_index
        if (mode & 1) != 0 and j == 0:
            wt = 0.0 if ignored else weight[tr]
            loss[r] = 0.0 if wt == 0.0 else -wt * np.float64(x[o, tr, k])
        if (mode & 2) != 0:
            d = 0.0
            if j == tr and not ignored:
                d = -_row_multiplier(g, r, count, mean) * weight[tr]
            grad[o, j, k] = d
        i += step


@cuda.jit(**JIT_OPTIONS)
def _target_check_kernel(target, n_classes, ignore_index, first_bad):
    """first_bad[0] = min flat position of a target outside [0, C) other than ignore_index
    (first_bad[0] starts at target.size)."""
    i = np.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = np.int64(cuda.gridDim.x) * cuda.blockDim.x
    while i < target.size:
        v = target[i]
        if (v < 0 or v >= n_classes) and v != ignore_index:
            cuda.atomic.min(first_bad, 0, i)
        i += step


@cuda.jit(**JIT_OPTIONS)
def _range_check_kernel(x, lo, hi, first_bad):
    """first_bad[0] = min flat position of a value outside [lo, hi] (NaN is outside)."""
    i = np.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = np.int64(cuda.gridDim.x) * cuda.blockDim.x
    while i < x.size:
        v = np.float64(x[i])
        if not (v >= lo and v <= hi):
            cuda.atomic.min(first_bad, 0, i)
        i += step


@cuda.jit(**JIT_OPTIONS)
def _target_weight_kernel(target, weight, ignore_index, out):
    """out[r] = weight[target[r]] (0 for an ignored target): summed, the 'mean' denominator."""
    i = np.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = np.int64(cuda.gridDim.x) * cuda.blockDim.x
    while i < target.size:
        tr = np.int64(target[i])
        out[i] = 0.0 if tr == ignore_index else weight[tr]
        i += step


@cuda.jit(**JIT_OPTIONS)
def _reduce_kernel(values, count, divisor, mode, out):
    """One block: out[0] = sum(values) (float64 tree); mode 1 divides by count[0], mode 2 by
    the number ``divisor``; rounded once to out's dtype.  A zero divisor gives NaN, as on the
    CPU ('mean' of nothing, or of only ignored targets)."""
    sm = cuda.shared.array(ROW_SHARED, F64)
    t = cuda.threadIdx.x
    acc = 0.0
    i = np.int64(t)
    while i < values.size:
        acc += values[i]
        i += cuda.blockDim.x
    total = _block_sum(sm, acc)
    if t == 0:
        if mode != 0:
            d = count[0] if mode == 1 else divisor
            total = total / d if d != 0.0 else math.nan
        out[0] = total


@cuda.jit(**JIT_OPTIONS)
def _fill_kernel(arr, value):
    i = np.int64(cuda.blockIdx.x) * cuda.blockDim.x + cuda.threadIdx.x
    step = np.int64(cuda.gridDim.x) * cuda.blockDim.x
    while i < arr.size:
        arr[i] = value
        i += step


def fill(arr, value: float) -> None:
    """arr[...] = value on the device (a flat C-contiguous array)."""
    if arr.size:
        _launch(_fill_kernel, arr.size, ELEMENTWISE_THREADS, _max_blocks(), arr, float(value))


def _dummy(dtype, ndim: int = 1):
    """A one-element device array standing in for an unused kernel argument (same type as the
    real one, so no extra specialisation; never a zero-size array)."""
    key = (STREAM.get(), np.dtype(dtype), ndim)
    d = _DUMMIES.get(key)
    if d is None:
        d = _DUMMIES[key] = to_device(np.zeros((1,) * ndim, dtype))
    return d


_DUMMIES: dict = {}


def constant(value: float):
    """A cached one-element float64 device array holding ``value`` (per stream)."""
    key = (STREAM.get(), "constant", float(value))
    d = _DUMMIES.get(key)
    if d is None:
        d = _DUMMIES[key] = to_device(np.array([value], np.float64))
    return d


def elementwise_loss(name: str, x, y, w, pw, p, gl, scale, mode: int, out, grad, partial,
                     block: int | None = None):
    """Launch ``name``'s elementwise loss kernel on device arrays (flat): mode bit 1 writes the
    per-block partial sums (blocks of ``block`` elements, default :data:`LOSS_BLOCK`), bit 2
    the gradient ``gl * scale * w * d loss / dx``, bit 4 the per-element values into ``out``.
    Unused outputs may be None."""
    n = x.size
    block = LOSS_BLOCK if block is None else int(block)
    cdtype = np.dtype(x.dtype)
    _launch(LOSS_KERNELS[name], ((n + block - 1) // block) * ROW_THREADS,
            ROW_THREADS, ROW_MAX_BLOCKS, x, y, w, pw, float(p), gl, float(scale), int(mode),
            np.int64(block),
            _dummy(np.float64) if out is None else out,
            _dummy(cdtype) if grad is None else grad,
            _dummy(np.float64) if partial is None else partial)


def row_loss(name: str, x3, target, q3, weight, ignore_index: int, smoothing: float, g, count,
             mean: bool, mode: int, loss, grad3):
    """Launch the cross-entropy / nll_loss row kernel on device arrays in ``(outer, C, inner)``
    layout (``target``, ``loss`` and ``g`` flat over the ``outer * inner`` rows; ``q3`` the
    probability targets or None).  mode bit 1 writes ``loss``, bit 2 ``grad3``; ``count`` is a
    one-element float64 device array, used as the 'mean' denominator when ``mean``."""
    cdtype = np.dtype(x3.dtype)
    rows = x3.shape[0] * x3.shape[2]
    loss = _dummy(np.float64) if loss is None else loss
    grad3 = _dummy(cdtype, 3) if grad3 is None else grad3
    count = _dummy(np.float64) if count is None else count
    if name == "nll_loss":
        _launch(_nll_loss_rows_kernel, x3.size, ELEMENTWISE_THREADS, _max_blocks(), x3, target,
                weight, np.int64(ignore_index), g, count, int(bool(mean)), int(mode), loss,
                grad3)
        return
    prob = q3 is not None
    _launch(_cross_entropy_rows_kernel, rows * ROW_THREADS, ROW_THREADS, ROW_MAX_BLOCKS, x3,
            _dummy(np.int64) if prob else target, q3 if prob else _dummy(cdtype, 3), weight,
            np.int64(ignore_index), float(smoothing), int(prob), g, count, int(bool(mean)),
            int(mode), loss, grad3)


def reduce_sum(values, out, *, count=None, divisor: float = 0.0, mean: bool = False) -> None:
    """out[0] = sum(values) in float64 (one block), divided by count[0] (a device array) or by
    ``divisor`` when ``mean``."""
    mode = (1 if count is not None else 2) if mean else 0
    _launch(_reduce_kernel, ROW_THREADS, ROW_THREADS, 1, values,
            _dummy(np.float64) if count is None else count, float(divisor), mode, out)


def first_bad_position(kind: str, arr, *args) -> int:
    """The first flat position of ``arr`` failing the pre-pass check (``kind`` 'target':
    args (C, ignore_index); 'range': args (lo, hi)), or -1.  Reads one integer back: a
    synchronisation, the only one of a loss call (documented)."""
    n = arr.size
    flag = to_device(np.array([n], np.int64))
    if kind == "target":
        _launch(_target_check_kernel, n, ELEMENTWISE_THREADS, _max_blocks(), arr,
                np.int64(args[0]), np.int64(args[1]), flag)
    else:
        _launch(_range_check_kernel, n, ELEMENTWISE_THREADS, _max_blocks(), arr,
                float(args[0]), float(args[1]), flag)
    k = int(flag.copy_to_host()[0]) if STREAM.get() is None else \
        int(flag.copy_to_host(stream=STREAM.get())[0])
    return -1 if k >= n else k


def target_weights(target, weight, ignore_index: int, out) -> None:
    """out[r] = weight[target[r]] (0 where ignored)."""
    _launch(_target_weight_kernel, target.size, ELEMENTWISE_THREADS, _max_blocks(), target,
            weight, np.int64(ignore_index), out)


# --- the CPU backends' signatures (host or device arrays) -------------------------------------

def _loss_host_args(args, n_out):
    """_on_device for a loss kernel call: a zero-size host output (the CPU kernels' "not
    wanted") becomes None, with nothing to copy back."""
    dev, back = _on_device([None if _is_host(a) and a.size == 0 and i >= len(args) - n_out
                            else a for i, a in enumerate(args)], n_out)
    return dev, back


def _elementwise_loss_entry(name: str, form: str):
    def run(*args):
        if form == "forward":  # (x, y, w, pw, p, out, partial)
            (x, y, w, pw, p, out, partial), back = _loss_host_args(args, 2)
            elementwise_loss(name, x, y, w, pw, p, _dummy(np.float64), 1.0,
                             1 | (4 if out is not None else 0), out, None, partial)
        elif form == "and_grad":  # (x, y, w, pw, p, g, out, grad, partial)
            (x, y, w, pw, p, g, out, grad, partial), back = _loss_host_args(args, 3)
            elementwise_loss(name, x, y, w, pw, p, g, 1.0, 3 | (4 if out is not None else 0),
                             out, grad, partial)
        else:  # (gl, x, y, w, pw, p, grad)
            (gl, x, y, w, pw, p, grad), back = _loss_host_args(args, 1)
            elementwise_loss(name, x, y, w, pw, p, gl, 1.0, 2, None, grad, None)
        _copy_back(back)

    run.__name__ = run.__qualname__ = f"{name}_{form}"
    return run


def _row_loss_entry(name: str, form: str, prob: bool):
    # arguments after (x, target): weight, then ignore_index (class targets), then smoothing
    # (cross_entropy)
    nscalar = 2 if prob else (3 if name == "cross_entropy" else 2)

    def run(*args):
        n_out = {"forward": 1, "and_grad": 2, "backward": 1}[form]
        dev, back = _loss_host_args(args, n_out)
        g = dev.pop(0) if form == "backward" else None
        x, tq = dev[0], dev[1]
        weight, scalars, rest = dev[2], dev[3:2 + nscalar], dev[2 + nscalar:]
        ignore_index = -100 if prob else int(scalars[0])
        smoothing = float(scalars[-1]) if name == "cross_entropy" else 0.0
        loss = grad = None
        if form == "forward":
            loss, = rest
            mode = 1
        elif form == "and_grad":
            g, loss, grad = rest
            mode = 3
        else:
            grad, = rest
            mode = 2
        x3 = _as_rows3(x)
        grad3 = None if grad is None else _as_rows3(grad)
        row_loss(name, x3, None if prob else tq, _as_rows3(tq) if prob else None, weight,
                 ignore_index, smoothing, _dummy(np.float64) if g is None else g, None, False,
                 mode, loss, grad3)
        _copy_back(back)

    kname = f"{name}_prob_{form}" if prob else f"{name}_{form}"
    run.__name__ = run.__qualname__ = kname
    return run


def _loss_entries() -> dict:
    entries = {}
    for spec in _registry.loss_ops():
        for form in spec.forms:
            if spec.extra["layout"] == "elementwise":
                entries[f"{spec.name}_{form}"] = _elementwise_loss_entry(spec.name, form)
            else:
                entries[f"{spec.name}_{form}"] = _row_loss_entry(spec.name, form, False)
                if spec.name == "cross_entropy":
                    entries[f"{spec.name}_prob_{form}"] = _row_loss_entry(spec.name, form, True)
    return entries


#: elementwise losses whose formula parameter is the per-element pos_weight (as numba_cpu)
_POS_WEIGHT_LOSSES = ("binary_cross_entropy_with_logits",)


def _loss_source() -> str:
    chunks = []
    for spec in _registry.loss_ops():
        if spec.extra["layout"] == "elementwise":
            param = ("(pw[i] if pn else pw[0])" if spec.name in _POS_WEIGHT_LOSSES else "p")
            chunks.append(_LOSS_ELEMENTWISE_TEMPLATE.format(name=spec.name, param=param))
    return "".join(chunks)


def _build() -> dict:
    source, names = _kernel_source()
    source += _copy_source() + _loss_source()
    linecache.cache[_GENERATED_FILENAME] = (len(source), None, source.splitlines(True),
                                            _GENERATED_FILENAME)
    ns = {"__name__": __name__, "np": np, "cuda": cuda, "math": math, "F64": F64,
          "ROW_SHARED": ROW_SHARED, "_block_sum": _block_sum}
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
    losses = {spec.name: cuda.jit(**JIT_OPTIONS)(ns[f"{spec.name}__loss_kernel"])
              for spec in _registry.loss_ops() if spec.extra["layout"] == "elementwise"}
    return kernels, copies, losses


KERNELS, COPY_KERNELS, LOSS_KERNELS = _build()
KERNELS.update(_loss_entries())
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
