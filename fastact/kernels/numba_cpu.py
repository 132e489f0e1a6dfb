"""Numba CPU backend: ``@njit(parallel=True)`` kernels with ``prange``, and serial twins.

Kernel conventions (shared by every backend module, DESIGN.md section 6): destination passing,
``<op>_<form>(inputs..., params..., outputs...)``, returning nothing.  Arrays arrive C-contiguous,
native-endian, float32 or float64 (``_validate`` guarantees it); elementwise kernels see 1-D
arrays, row-wise kernels 2-D ``(rows, C)`` arrays, prelu a flat array plus the size ``inner`` of
one channel block.  Empty inputs never reach a kernel.

How the kernels are made:

* every scalar formula of ``fastact/_math.py`` is compiled with ``njit(inline='always')`` in a
  private namespace (:func:`_bind_formulas`), so formulas written once are inlined into loops;
* the loops are generated from the registry as source text (:func:`_kernel_source`), compiled
  once per variant: ``<kernel>__parallel`` uses ``prange`` and ``<kernel>__serial`` is a distinct
  function (Numba's cache key ignores ``parallel=``, DESIGN.md section 8);
* the public kernel ``<kernel>`` picks the serial twin below ``PARALLEL_THRESHOLD`` elements or
  in a forked child (GNU OpenMP is not fork-safe).

Compiled code is cached on disk in ``<cache dir>/numba-<salt>``, where the salt hashes the
sources of every module of the package (``fastact/*.py``, ``fastact/kernels/*.py``) and the
Numba version: Numba itself only checks the defining file's timestamp, which would reuse stale
code after a change to a formula or helper in another file.

Threads (DESIGN.md section 7): Numba picks its threading layer at the first parallel call, in the
order tbb, omp, workqueue.  pip's ``tbb`` wheel puts ``libtbb.so.12`` in ``<prefix>/lib``, where
the dynamic loader does not look, so :func:`_preload_tbb` loads it first (the ``tbb`` layer is
thread-safe).  The ``workqueue`` layer aborts the process when two threads enter parallel code
at once: under it (and until the first parallel call has shown which layer Numba chose) one
thread at a time runs the parallel twin and the others run the serial twin, which gives
bitwise-identical results.
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import linecache
import logging
import math
import os
import site
import sys
import threading
import types

import numba
import numpy as np
from llvmlite import ir as llvm_ir
from numba import njit, prange
from numba import types as nbtypes
from numba.extending import intrinsic

from .. import _config, _math, _registry

#: Compilation options for every kernel.  Never ``fastmath`` (DESIGN.md section 4).
#: ``error_model='numpy'``: division by zero gives inf/NaN instead of a check that blocks
#: vectorisation (DESIGN.md section 5).
JIT_OPTIONS = dict(error_model="numpy", nogil=True)

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Every source file whose change must invalidate cached kernels: the whole package (a helper
#: in any module may end up inlined into a kernel).
log = logging.getLogger("fastact")

_SOURCE_FILES = tuple(sorted(glob.glob(os.path.join(_PACKAGE_DIR, "*.py"))
                             + glob.glob(os.path.join(_PACKAGE_DIR, "kernels", "*.py"))))
_GENERATED_FILENAME = "<fastact_numba_cpu_generated>"


# --------------------------------------------------------------------------------------------
# disk cache with a salted location
# --------------------------------------------------------------------------------------------

def _salt() -> str:
    h = hashlib.sha256(numba.__version__.encode())
    for path in _SOURCE_FILES:
        h.update(os.path.relpath(path, _PACKAGE_DIR).encode() + b"\0")
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


CACHE_PATH: str | None = None
CACHE_REASON = "disabled by FASTACT_NO_CACHE" if _config.NO_CACHE else ""


def _install_cache_locator() -> None:
    """Let Numba cache our generated kernels in a salted directory, if one is writable."""
    global CACHE_PATH, CACHE_REASON
    if _config.NO_CACHE:
        return
    path = os.path.join(_config.cache_dir(), f"numba-{_salt()}")
    if not _config.writable_dir(path):
        CACHE_REASON = f"cache dir {path} is not writable; kernels compile in every process"
        return
    try:
        from numba.core import caching
    except ImportError as exc:  # pragma: no cover - very old or very new numba
        CACHE_REASON = f"numba caching API unavailable ({exc})"
        return

    class _FastactLocator(caching._CacheLocator):
        def __init__(self, py_func, py_file):
            self._lineno = py_func.__code__.co_firstlineno

        def get_cache_path(self):
            return path

        def get_source_stamp(self):
            return _SALT  # the directory is already salted; the stamp just has to be stable

        def get_disambiguator(self):
            return str(self._lineno)

        @classmethod
        def from_function(cls, py_func, py_file):
            if py_file == _GENERATED_FILENAME:
                return cls(py_func, py_file)
            return None

    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl")
    impl._locator_classes.insert(0, _FastactLocator)
    CACHE_PATH = path


_SALT = _salt()
_install_cache_locator()


class _TolerantCache:
    """Wraps a dispatcher's Numba function cache: a damaged cache file (truncated by a crash or
    a full disk, or garbage) is a cache miss and is overwritten, never an error (Numba itself
    raises ``EOFError``/``UnpicklingError`` from the call)."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def _discard_index(self) -> None:
        path = getattr(getattr(self._inner, "_cache_file", None), "_index_path", None)
        if path:
            try:
                os.remove(path)
            except OSError:
                pass

    def load_overload(self, sig, target_context):
        try:
            return self._inner.load_overload(sig, target_context)
        except Exception as exc:  # damaged index or data file: recompile
            log.debug("fastact: ignoring a damaged kernel cache entry (%s: %s)",
                      type(exc).__name__, exc)
            self._discard_index()
            return None

    def save_overload(self, sig, data):
        for attempt in range(2):
            try:
                return self._inner.save_overload(sig, data)
            except Exception as exc:  # a damaged index cannot be updated: start it afresh
                log.debug("fastact: could not store a compiled kernel (%s: %s)",
                          type(exc).__name__, exc)
                self._discard_index()
        return None


def _jit_kernel(fn, parallel: bool):
    """Compile options for a generated kernel; fall back to no cache rather than fail."""
    if CACHE_PATH is not None:
        try:
            dispatcher = njit(parallel=parallel, cache=True, **JIT_OPTIONS)(fn)
        except RuntimeError:  # e.g. NUMBA_CACHE_LOCATOR_CLASSES excludes our locator
            pass
        else:
            if hasattr(dispatcher, "_cache"):
                dispatcher._cache = _TolerantCache(dispatcher._cache)
            return dispatcher
    return njit(parallel=parallel, **JIT_OPTIONS)(fn)


# --------------------------------------------------------------------------------------------
# formulas: _math.py compiled for the CPU
# --------------------------------------------------------------------------------------------

def _bind_formulas(module, decorate, primitives=None) -> dict:
    """Re-create every function of ``module`` in a fresh namespace and decorate it.

    The functions keep their code; only their globals change, so that calls between formulas
    resolve to the decorated versions.  ``primitives`` replace functions whose Python body is
    only a reference meaning (``pow2``: exponent-bit construction).  (The CUDA backend can
    bind the same code with ``cuda.jit(device=True)``.)
    """
    ns = dict(vars(module))
    for name, obj in list(ns.items()):
        if isinstance(obj, types.FunctionType) and obj.__module__ == module.__name__:
            clone = types.FunctionType(obj.__code__, ns, name, obj.__defaults__, obj.__closure__)
            clone.__qualname__ = obj.__qualname__
            ns[name] = decorate(clone)
    ns.update(primitives or {})
    return ns


@intrinsic
def _double_bits(typingctx, value):
    """The IEEE-754 bits of a float64, as int64 (an LLVM bitcast: no conversion, no branch)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.IntType(64))
    return nbtypes.int64(nbtypes.float64), codegen


@intrinsic
def _bits_double(typingctx, bits):
    """The float64 whose IEEE-754 bits are the given int64."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_ir.DoubleType())
    return nbtypes.float64(nbtypes.int64), codegen


@njit(inline="always", **JIT_OPTIONS)
def _pow2_bits(k):
    # k + 2^52 + 1023 holds the biased exponent k + 1023 in its low mantissa bits; shift them
    # into the exponent field (the primitive _math.pow2, for integer k in [-1022, 1023])
    return _bits_double((_double_bits(k + 4503599627371519.0) - 0x4330000000000000) << 52)


FORMULAS = _bind_formulas(_math, njit(inline="always", **JIT_OPTIONS),
                          primitives={"pow2": _pow2_bits})
_exp = FORMULAS["exp_poly"]


# --------------------------------------------------------------------------------------------
# row kernels (softmax family) and prelu blocks: one body each, looped by generated kernels
# --------------------------------------------------------------------------------------------

@njit(inline="always", **JIT_OPTIONS)
def _kept(mask, r, j):
    return True if mask is None else mask[r, j] != 0


@njit(inline="always", **JIT_OPTIONS)
def _load(x, r, j, neg):
    """x[r, j] in float64, negated for softmin (``neg`` is a literal of the generated kernel,
    so the branch folds away; negation is exact)."""
    return -np.float64(x[r, j]) if neg else np.float64(x[r, j])


@njit(inline="always", **JIT_OPTIONS)
def _row_max(x, mask, r, neg):
    """Max of the kept entries of row r (of -x for softmin; NaN skipped: it reaches the sum
    instead), and whether any entry is kept."""
    m = -np.inf
    any_kept = mask is None
    for j in range(x.shape[1]):
        if _kept(mask, r, j):
            any_kept = True
            v = _load(x, r, j, neg)
            m = v if v > m else m
    return m, any_kept


# Terms of the row sums: (a, b, mask, row, column, max, temperature) -> float64, 0 if masked.
# Computed inside the sum rather than stored, so ``out`` may be the same memory as an input.

@njit(inline="always", **JIT_OPTIONS)
def _term_value(a, b, mask, r, j, m, t):
    return np.float64(a[r, j]) if _kept(mask, r, j) else 0.0


@njit(inline="always", **JIT_OPTIONS)
def _term_product(a, b, mask, r, j, m, t):
    return np.float64(a[r, j]) * np.float64(b[r, j]) if _kept(mask, r, j) else 0.0


@njit(inline="always", **JIT_OPTIONS)
def _row_sum(term, a, b, mask, r, m, t):
    """Sum over row r of ``term`` in float64: pairwise over blocks of 8 (independent chains the
    CPU overlaps), blocks combined with Neumaier compensation.  Error <= ~3 eps + O(eps^2 n)
    relative for terms of one sign, inside the softmax bound 4 eps (2 + log2 C)."""
    n = a.shape[1]
    s = 0.0
    c = 0.0
    j = 0
    while j + 8 <= n:
        blk = (((term(a, b, mask, r, j, m, t) + term(a, b, mask, r, j + 1, m, t))
                + (term(a, b, mask, r, j + 2, m, t) + term(a, b, mask, r, j + 3, m, t)))
               + ((term(a, b, mask, r, j + 4, m, t) + term(a, b, mask, r, j + 5, m, t))
                  + (term(a, b, mask, r, j + 6, m, t) + term(a, b, mask, r, j + 7, m, t))))
        u = s + blk
        c += (s - u) + blk if abs(s) >= abs(blk) else (blk - u) + s
        s = u
        j += 8
    tail = 0.0
    while j < n:
        tail += term(a, b, mask, r, j, m, t)
        j += 1
    u = s + tail
    c += (s - u) + tail if abs(s) >= abs(tail) else (tail - u) + s
    # an infinite sum stays infinite (the compensation of inf terms is NaN): as a plain sum
    return u + c if u - u == 0.0 else u


@njit(inline="always", **JIT_OPTIONS)
def _softmax_row(x, mask, temperature, out, r, log, neg):
    """softmax / log_softmax of row r, or of -x (``neg``: softmin)."""
    m, any_kept = _row_max(x, mask, r, neg)
    n = x.shape[1]
    if not any_kept:  # fully masked row: softmax 0, log_softmax -inf, never NaN
        fill = -np.inf if log else 0.0
        for j in range(n):
            out[r, j] = fill
        return
    # exp((x - max) / T) by a straight vectorisable loop, then its float64 sum.  softmax keeps
    # the exps in out (x[j] is not read again, so out may be x); log_softmax needs x again, so
    # its exps go to a scratch row.
    e_row = np.empty((1, n), np.float64) if log else out[r:r + 1]
    for j in range(n):
        e = _exp((_load(x, r, j, neg) - m) / temperature)
        e_row[0, j] = e if _kept(mask, r, j) else 0.0
    s = _row_sum(_term_value, e_row, e_row, None, 0, m, temperature)
    if log:
        ls = math.log(s)
        for j in range(n):
            v = (_load(x, r, j, neg) - m) / temperature - ls
            out[r, j] = v if _kept(mask, r, j) else -np.inf
    else:
        for j in range(n):
            v = out[r, j] / s
            out[r, j] = v if _kept(mask, r, j) else 0.0


@njit(inline="always", **JIT_OPTIONS)
def _softmax_backward_row(grad, y, mask, temperature, out, r, log):
    # softmax:     dx = y * (g - sum(g * y)) / T
    # log_softmax: dx = (g - exp(y) * sum(g)) / T
    n = y.shape[1]
    if log:
        s = _row_sum(_term_value, grad, grad, mask, r, 0.0, temperature)
    else:
        s = _row_sum(_term_product, grad, y, mask, r, 0.0, temperature)
    for j in range(n):
        g = np.float64(grad[r, j])
        yj = np.float64(y[r, j])
        v = (g - _exp(yj) * s) / temperature if log else yj * (g - s) / temperature
        out[r, j] = v if _kept(mask, r, j) else 0.0


@njit(inline="always", **JIT_OPTIONS)
def _logsumexp_row(x, mask, temperature, out, r):
    """out[r] = max + T log(sum exp((x - max) / T)) over the kept entries of row r: the exps by
    a straight vectorisable loop into a scratch row, then the float64 pairwise + Neumaier sum of
    the softmax kernels (computing the exps inside the sum does not vectorise: 10x slower).
    Nothing kept: -inf.  A non-finite max (all kept -inf, or +inf) is the result
    unless a kept entry is NaN (torch.logsumexp and scipy.special.logsumexp agree)."""
    m, any_kept = _row_max(x, mask, r, False)
    if not any_kept:
        out[r] = -np.inf
        return
    if not math.isfinite(m):
        v = m
        for j in range(x.shape[1]):
            if _kept(mask, r, j) and np.isnan(x[r, j]):
                v = np.nan
        out[r] = v
        return
    n = x.shape[1]
    e_row = np.empty((1, n), np.float64)
    for j in range(n):
        e = _exp((np.float64(x[r, j]) - m) / temperature)
        e_row[0, j] = e if _kept(mask, r, j) else 0.0
    s = _row_sum(_term_value, e_row, e_row, None, 0, m, temperature)
    out[r] = m + temperature * math.log(s)


#: prelu works on blocks of one channel: element i of the flat array is in channel
#: (i // inner) % C.  Blocks let a single channel (a scalar weight) still use every thread.
PRELU_BLOCK = 1 << 14


@njit(inline="always", **JIT_OPTIONS)
def _prelu_block(b, inner, nblk, weight):
    row = b // nblk
    start = row * inner + (b % nblk) * PRELU_BLOCK
    stop = min(start + PRELU_BLOCK, (row + 1) * inner)
    return start, stop, weight[row % weight.size]


def _define_prelu_bodies():
    leaky = FORMULAS["leaky_relu"]
    leaky_d = FORMULAS["leaky_relu_derivative"]

    @njit(inline="always", **JIT_OPTIONS)
    def forward(x, weight, inner, nblk, out, b):
        start, stop, w = _prelu_block(b, inner, nblk, weight)
        for i in range(start, stop):
            out[i] = leaky(x[i], w)

    @njit(inline="always", **JIT_OPTIONS)
    def derivative(x, weight, inner, nblk, out, b):
        start, stop, w = _prelu_block(b, inner, nblk, weight)
        for i in range(start, stop):
            out[i] = leaky_d(x[i], w)

    @njit(inline="always", **JIT_OPTIONS)
    def and_derivative(x, weight, inner, nblk, out, dout, b):
        start, stop, w = _prelu_block(b, inner, nblk, weight)
        for i in range(start, stop):
            v = x[i]
            out[i] = leaky(v, w)
            dout[i] = leaky_d(v, w)

    @njit(inline="always", **JIT_OPTIONS)
    def backward(grad, x, weight, inner, nblk, out, partial, b):
        # grad_x = grad * prelu'(x); d prelu / d weight = x where x <= 0 (0 for x > 0, NaN kept)
        start, stop, w = _prelu_block(b, inner, nblk, weight)
        acc = 0.0
        for i in range(start, stop):
            v = x[i]
            g = grad[i]
            out[i] = g * leaky_d(v, w)
            if not v > 0.0:
                acc += np.float64(g) * np.float64(v)
        partial[b] = acc

    return forward, derivative, and_derivative, backward


(_prelu_forward_block, _prelu_derivative_block, _prelu_and_derivative_block,
 _prelu_backward_block) = _define_prelu_bodies()


# --------------------------------------------------------------------------------------------
# kernel generation
# --------------------------------------------------------------------------------------------

def _elementwise_specs(op: _registry.OpSpec):
    """(kernel name, arguments, loop length, loop body) for each kernel of an elementwise op."""
    # Formulas run in float64 and are rounded once when stored (float32 inputs are widened
    # exactly), as in the Cython kernels.
    p = "".join(f"{n}, " for n in op.param_names)
    pa = "".join(f", {n}" for n in op.param_names)
    f = f"F_{op.name}"
    X = "np.float64(x[i])"
    fused = f"F_{op.name}_and_derivative"
    if f"{op.name}_and_derivative" not in FORMULAS:
        fused_call = f"({f}(xi{pa}), {f}_derivative(xi{pa}))"
    else:
        fused_call = f"{fused}(xi{pa})"
    specs = [
        (f"{op.name}_forward", f"x, {p}out", "x.size", f"out[i] = {f}({X}{pa})"),
        (f"{op.name}_derivative", f"x, {p}out", "x.size", f"out[i] = {f}_derivative({X}{pa})"),
        (f"{op.name}_and_derivative", f"x, {p}out, dout", "x.size",
         f"xi = {X}\n        v, d = {fused_call}\n        out[i] = v\n        dout[i] = d"),
        (f"{op.name}_backward", f"grad, x, {p}out", "x.size",
         f"out[i] = grad[i] * {f}_derivative({X}{pa})"),
    ]
    if op.y_backward is not None:
        specs.append((f"{op.name}_backward_from_y", f"grad, y, {p}out", "y.size",
                      f"out[i] = grad[i] * {f}_derivative_from_y(np.float64(y[i]){pa})"))
    return specs


def _other_specs():
    nblk = "((inner + PRELU_BLOCK - 1) // PRELU_BLOCK)"
    return [
        ("softmax_forward", "x, mask, temperature, out", "x.shape[0]",
         "_softmax_row(x, mask, temperature, out, i, False, False)"),
        ("log_softmax_forward", "x, mask, temperature, out", "x.shape[0]",
         "_softmax_row(x, mask, temperature, out, i, True, False)"),
        # softmin(x) = softmax(-x): the softmax body on negated loads; its gradient is the
        # softmax gradient with -T
        ("softmin_forward", "x, mask, temperature, out", "x.shape[0]",
         "_softmax_row(x, mask, temperature, out, i, False, True)"),
        ("logsumexp_forward", "x, mask, temperature, out", "x.shape[0]",
         "_logsumexp_row(x, mask, temperature, out, i)"),
        ("softmax_backward", "grad, y, mask, temperature, out", "y.shape[0]",
         "_softmax_backward_row(grad, y, mask, temperature, out, i, False)"),
        ("log_softmax_backward", "grad, y, mask, temperature, out", "y.shape[0]",
         "_softmax_backward_row(grad, y, mask, temperature, out, i, True)"),
        ("softmin_backward", "grad, y, mask, temperature, out", "y.shape[0]",
         "_softmax_backward_row(grad, y, mask, -temperature, out, i, False)"),
        ("prelu_forward", "x, weight, inner, out", f"x.size // inner * {nblk}",
         f"_prelu_forward_block(x, weight, inner, {nblk}, out, i)"),
        ("prelu_derivative", "x, weight, inner, out", f"x.size // inner * {nblk}",
         f"_prelu_derivative_block(x, weight, inner, {nblk}, out, i)"),
        ("prelu_and_derivative", "x, weight, inner, out, dout", f"x.size // inner * {nblk}",
         f"_prelu_and_derivative_block(x, weight, inner, {nblk}, out, dout, i)"),
    ]


_KERNEL_TEMPLATE = """
def {name}__{variant}({args}):
    for i in {loop}({count}):
        {body}
"""

# prelu_backward needs a reduction after its loop: written out rather than templated.
_PRELU_BACKWARD_TEMPLATE = """
def prelu_backward__{variant}(grad, x, weight, inner, out, grad_weight):
    nblk = (inner + PRELU_BLOCK - 1) // PRELU_BLOCK
    rows = x.size // inner
    partial = np.empty(rows * nblk, np.float64)
    for i in {loop}(rows * nblk):
        _prelu_backward_block(grad, x, weight, inner, nblk, out, partial, i)
    for c in range(grad_weight.size):
        grad_weight[c] = 0.0
    for b in range(rows * nblk):
        grad_weight[(b // nblk) % grad_weight.size] += partial[b]
"""


def _kernel_source() -> tuple[str, list[tuple[str, str]]]:
    """The whole generated module, and (kernel name, size argument) per kernel."""
    specs = [s for op in _registry.elementwise_ops() for s in _elementwise_specs(op)]
    specs += _other_specs()
    chunks = []
    for name, args, count, body in specs:
        for variant, loop in (("parallel", "prange"), ("serial", "range")):
            chunks.append(_KERNEL_TEMPLATE.format(
                name=name, variant=variant, args=args, loop=loop, count=count, body=body))
    for variant, loop in (("parallel", "prange"), ("serial", "range")):
        chunks.append(_PRELU_BACKWARD_TEMPLATE.format(variant=variant, loop=loop))
    names = [(s[0], s[1].split(",")[0]) for s in specs] + [("prelu_backward", "grad")]
    return "".join(chunks), names


def _namespace() -> dict:
    # __name__ makes the generated functions belong to this module, which Numba re-imports
    # when it loads them from the disk cache
    ns = {"__name__": __name__, "np": np, "prange": prange, "PRELU_BLOCK": PRELU_BLOCK}
    for name, fn in FORMULAS.items():
        if isinstance(fn, numba.core.registry.CPUDispatcher):
            ns[f"F_{name}"] = fn
    ns.update({k: v for k, v in globals().items() if k.startswith("_") and
               isinstance(v, numba.core.registry.CPUDispatcher)})
    return ns


# --------------------------------------------------------------------------------------------
# threading layer, thread safety and fork safety
# --------------------------------------------------------------------------------------------

TBB_PRELOAD = ""  # how libtbb was found ("" if not tried)


def _preload_tbb() -> str:
    """Load pip's ``libtbb.so.12`` from ``<prefix>/lib`` so that Numba's tbb layer finds it.

    Only when the user left the layer to Numba or asked for a tbb-based one, and only before
    Numba started its threads.  Returns a note for :func:`info`.
    """
    if not sys.platform.startswith("linux"):
        return "not Linux: Numba finds TBB itself"
    requested = str(numba.config.THREADING_LAYER).lower()
    if requested not in ("default", "tbb", "safe", "threadsafe"):
        return f"not needed (NUMBA_THREADING_LAYER={requested})"
    try:
        ctypes.CDLL("libtbb.so.12")
        return "libtbb.so.12 found by the dynamic loader"
    except OSError:
        pass
    prefixes = [sys.prefix, sys.base_prefix, getattr(site, "USER_BASE", None) or ""]
    for prefix in dict.fromkeys(p for p in prefixes if p):
        path = os.path.join(prefix, "lib", "libtbb.so.12")
        if os.path.exists(path):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                return f"preloaded {path}"
            except OSError as exc:
                return f"{path} failed to load: {exc}"
    return "libtbb.so.12 not installed (pip install tbb)"


TBB_PRELOAD = _preload_tbb()

#: Layers on which several Python threads may run parallel kernels at once.
THREAD_SAFE_LAYERS = ("tbb", "omp")
#: None until the first parallel call has run (Numba picks its layer then); afterwards whether
#: parallel twins need the exclusive pool lock (True only for ``workqueue``).
_exclusive: bool | None = None
_pool_lock = threading.Lock()
#: How often a thread found the pool busy under the exclusive rule and ran the serial twin.
SERIAL_FALLBACKS = 0


def _current_layer() -> str | None:
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return None


#: The thread cap from fastact.set_num_threads / the environment (None: Numba's default).
#: Numba's own setting is per thread, so each calling thread is brought to the cap.
_threads: int | None = None


def _run_parallel(parallel, serial, args) -> None:
    global _exclusive, SERIAL_FALLBACKS
    if _threads is not None and numba.get_num_threads() != _threads:
        numba.set_num_threads(_threads)
    if _exclusive is False:
        parallel(*args)
        return
    # Unknown layer or workqueue: one thread at a time in parallel code, others run serial.
    if _pool_lock.acquire(blocking=False):
        try:
            parallel(*args)
            if _exclusive is None:
                layer = _current_layer()
                if layer is not None:
                    _exclusive = layer not in THREAD_SAFE_LAYERS
        finally:
            _pool_lock.release()
    else:
        SERIAL_FALLBACKS += 1
        serial(*args)


_in_forked_child = False


def _after_fork_in_child() -> None:
    # GNU OpenMP (and Numba's pools in general) are not usable after fork(): a forked child runs
    # every kernel serially (DESIGN.md section 7).
    global _in_forked_child
    _in_forked_child = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


#: Element count from which the parallel twin runs (``fastact.warmup`` lowers it to 0 briefly to
#: compile both twins).
PARALLEL_THRESHOLD = _config.PARALLEL_THRESHOLD


def _pick(name: str, parallel, serial):
    def kernel(*args):
        if args[0].size >= PARALLEL_THRESHOLD and not _in_forked_child:
            _run_parallel(parallel, serial, args)
        else:
            serial(*args)

    kernel.__name__ = kernel.__qualname__ = name
    kernel.parallel = parallel
    kernel.serial = serial
    return kernel


def _build() -> dict:
    source, names = _kernel_source()
    # register the generated text so tracebacks and Numba's error messages can show it
    linecache.cache[_GENERATED_FILENAME] = (len(source), None, source.splitlines(True),
                                            _GENERATED_FILENAME)
    ns = _namespace()
    exec(compile(source, _GENERATED_FILENAME, "exec"), ns)
    kernels = {}
    for name, _ in names:
        kernels[name] = _pick(name, _jit_kernel(ns[f"{name}__parallel"], True),
                              _jit_kernel(ns[f"{name}__serial"], False))
    return kernels


KERNELS = _build()
globals().update(KERNELS)
GENERATED_SOURCE = linecache.cache[_GENERATED_FILENAME][2]


def set_num_threads(n: int) -> None:
    """Cap the threads of parallel kernels (in every calling thread: Numba's own
    ``numba.set_num_threads`` is thread-local, so kernels apply the cap in each thread)."""
    global _threads
    _threads = max(1, min(n, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(_threads)


def get_num_threads() -> int:
    return numba.get_num_threads()


def threading_layer() -> str:
    """The Numba threading layer in use (starting Numba's threads if no kernel has yet)."""
    layer = _current_layer()
    if layer is None:  # chosen at the first parallel call: make one (tiny, cached) to know it
        if _in_forked_child:
            return "none (forked child: serial kernels)"
        _run_parallel(KERNELS["relu_forward"].parallel, KERNELS["relu_forward"].serial,
                      (np.zeros(1), np.zeros(1)))
        layer = _current_layer()
    return layer


def info() -> dict:
    layer = threading_layer()
    requested = str(numba.config.THREADING_LAYER)
    if layer in THREAD_SAFE_LAYERS:
        policy = "thread-safe layer: concurrent calls run in parallel"
    else:
        policy = ("layer not thread-safe: one thread at a time runs parallel kernels, "
                  "concurrent calls run the serial twins")
    return {
        "version": numba.__version__,
        "threads": numba.get_num_threads(),
        "max_threads": numba.config.NUMBA_NUM_THREADS,
        "threading_layer": layer,
        "threading_layer_requested": requested + (
            " (NUMBA_THREADING_LAYER)" if os.environ.get("NUMBA_THREADING_LAYER") else
            " (Numba's order: tbb, omp, workqueue)"),
        "threading_policy": policy,
        "tbb": TBB_PRELOAD,
        "forked_child_serial": _in_forked_child,
        "parallel_threshold": PARALLEL_THRESHOLD,
        "cache": CACHE_PATH or CACHE_REASON,
    }
