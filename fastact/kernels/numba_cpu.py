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
from numba.core import cgutils
from numba.extending import intrinsic, overload

try:  # the runtime a kernel loaded from the disk cache needs (_TolerantCache)
    from numba.core.runtime import rtsys as _rtsys
except ImportError:  # pragma: no cover - a Numba without it: the public cache API runs
    _rtsys = None

from .. import _config, _math, _math32, _registry

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
_LOSSES_FILENAME = "<fastact_numba_cpu_losses>"  # the loss kernels (section "losses")


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
            if py_file in (_GENERATED_FILENAME, _LOSSES_FILENAME):
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
            return self._load_without_refresh(sig, target_context)
        except Exception as exc:  # damaged index or data file: recompile
            log.debug("fastact: ignoring a damaged kernel cache entry (%s: %s)",
                      type(exc).__name__, exc)
            self._discard_index()
            return None

    def _load_without_refresh(self, sig, target_context):
        """Numba's ``load_overload`` without its ``target_context.refresh()``.

        The refresh installs every lowering registry (the compiler needs them; machine code
        loaded from disk does not) and, through ``numba.np.arraymath``, imports
        ``scipy.linalg`` to probe for BLAS where SciPy is installed: 0.2 s of the first call
        in a fresh process, none of it used by a cached kernel.  The loaded code needs only
        the runtime (NRT) symbols, which ``rtsys.initialize`` registers, plus the math and
        Python-API symbols that the context's creation already registered; the parallel
        twins' threading layer is launched by the cached code's own ``reload_init``.  Any
        later compilation refreshes the context itself (``numba.core.compiler``).  Where
        Numba's private API differs, the public ``load_overload`` runs instead.
        """
        load = getattr(self._inner, "_load_overload", None)
        if load is None or _rtsys is None:
            return self._inner.load_overload(sig, target_context)
        _rtsys.initialize(target_context)
        return load(sig, target_context)

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


@njit(inline="always", **JIT_OPTIONS)
def _exponent_bits(x):
    # the primitive _math.exponent: the biased exponent field (x > 0: no sign bit) placed in
    # the low mantissa bits of 2^52, minus 2^52 + 1023 (no integer-to-float conversion)
    return _bits_double((_double_bits(x) >> 52) | 0x4330000000000000) - 4503599627371519.0


@njit(inline="always", **JIT_OPTIONS)
def _significand_bits(x):
    # the primitive _math.significand: x's mantissa bits under the exponent of 1.0
    return _bits_double((_double_bits(x) & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)


@intrinsic
def _fma_intrinsic(typingctx, a, b, c):
    """LLVM's ``llvm.fma.f64``: one instruction where the CPU has FMA, else libm's fma."""
    def codegen(context, builder, signature, args):
        return builder.fma(*args)
    return nbtypes.float64(nbtypes.float64, nbtypes.float64, nbtypes.float64), codegen


@njit(inline="always", **JIT_OPTIONS)
def _fma(a, b, c):
    # the primitive _math.fma: a * b + c rounded once
    return _fma_intrinsic(float(a), float(b), float(c))


def _fmuladd(float_type):
    """LLVM's ``llvm.fmuladd`` on ``float_type`` (a Numba float type) as an intrinsic: fused
    where the target has fast FMA, else mul + add."""
    @intrinsic
    def mul_add(typingctx, a, b, c):
        def codegen(context, builder, signature, args):
            t = args[0].type
            fn = builder.module.declare_intrinsic("llvm.fmuladd", [t],
                                                  llvm_ir.FunctionType(t, [t, t, t]))
            return builder.call(fn, args)
        return float_type(float_type, float_type, float_type), codegen
    return mul_add


_mul_add_intrinsic = _fmuladd(nbtypes.float64)


FORMULAS = _bind_formulas(_math, njit(inline="always", **JIT_OPTIONS),
                          primitives={"pow2": _pow2_bits, "fma": _fma,
                                      "exponent": _exponent_bits,
                                      "significand": _significand_bits,
                                      # the intrinsic itself, not an inline='always' wrapper:
                                      # Numba's IR inliner would run once per Horner step
                                      # (91 of them) and double the cold compile time
                                      "mul_add": _mul_add_intrinsic})
_exp = FORMULAS["exp_poly"]


# --------------------------------------------------------------------------------------------
# float32 twins (_math32.py): float32 arithmetic for float32 inputs
# --------------------------------------------------------------------------------------------

@intrinsic
def _pow2_single(typingctx, k):
    """2^k as float32 for an integer-valued float32 k in [-126, 127] (the primitive
    ``_math32.pow2``): k + 2^23 + 127 holds the biased exponent in its low mantissa bits, which
    are shifted into the exponent field (no float-to-int conversion, so NaN is harmless)."""
    def codegen(context, builder, signature, args):
        f32, i32 = llvm_ir.FloatType(), llvm_ir.IntType(32)
        biased = builder.bitcast(builder.fadd(args[0], llvm_ir.Constant(f32, 8388735.0)), i32)
        biased = builder.sub(biased, llvm_ir.Constant(i32, 0x4B000000))
        return builder.bitcast(builder.shl(biased, llvm_ir.Constant(i32, 23)), f32)
    return nbtypes.float32(nbtypes.float32), codegen


_mul_add_single = _fmuladd(nbtypes.float32)  # the primitive _math32.mul_add


FORMULAS32 = _bind_formulas(_math32, njit(inline="always", **JIT_OPTIONS),
                            primitives={"pow2": _pow2_single, "mul_add": _mul_add_single,
                                        "exp_wide": FORMULAS["exp_poly_single"],
                                        "mul_add_wide": _mul_add_intrinsic})


def _by_dtype(name: str, params, wide_name: str | None = None) -> object:
    """A function ``T(x, *params)`` for kernels: ``_math32``'s twin of formula ``name`` when x
    is float32, else the ``_math`` formula ``wide_name`` (default: ``name``) on x widened to
    float64.  The choice is made at typing time (a Numba ``overload``), so each compiled kernel
    contains one of the two.  A twin ``NAME_and_derivative`` without a float64 one pairs the
    two float64 formulas."""
    args = ", ".join(["x", *params])
    rest = "".join(f", {p}" for p in params)
    ns = {"narrow_formula": FORMULAS32[name], "np": np, "float32": nbtypes.float32}
    wide_name = wide_name or name
    if wide_name in FORMULAS:
        ns["wide_formula"] = FORMULAS[wide_name]
        wide = f"wide_formula(np.float64(x){rest})"
    else:
        op = wide_name.removesuffix("_and_derivative")
        ns["wide_value"], ns["wide_derivative"] = FORMULAS[op], FORMULAS[op + "_derivative"]
        wide = f"(wide_value(np.float64(x){rest}), wide_derivative(np.float64(x){rest}))"
    exec(f"def {name}({args}):\n    raise NotImplementedError('only callable in kernels')\n"
         f"def wide({args}):\n    return {wide}\n"
         f"def narrow({args}):\n    return narrow_formula(x{rest})\n"
         f"def typer({args}):\n    return narrow if x == float32 else wide\n", ns)
    overload(ns[name], inline="always", jit_options=JIT_OPTIONS)(ns["typer"])
    return ns[name]


# --------------------------------------------------------------------------------------------
# vector reductions over a contiguous row
# --------------------------------------------------------------------------------------------
# LLVM vectorises a max or a floating-point sum only when it may reorder it (fast-math flags,
# which fastact never uses), so a scalar loop runs one element per step.  These intrinsics
# write the vector code out: two accumulators of one vector each (16 float32 or 8 float64
# lanes of consecutive elements: one AVX-512 register, or two AVX2 registers), combined with
# each other, then their halves in a fixed tree, then the tail.  The order is fixed, so results
# do not depend on threads or calls.  Measured on 4000 rows x 1024, float32, 1 thread: row max
# 0.57 -> 0.22 ms, float64 row sum of the float32 exps 1.12 -> 0.36 ms.

def _two_sum(builder, a, b):
    """(a + b, its rounding error) by Knuth's TwoSum (scalars or vectors)."""
    s = builder.fadd(a, b)
    bp = builder.fsub(s, a)
    err = builder.fadd(builder.fsub(a, builder.fsub(s, bp)), builder.fsub(b, bp))
    return s, err


def _row_reduction(kind: str):
    """Intrinsic ``f(x, r)`` reducing row r of a 2-D array x whose rows are contiguous (the
    caller checks ``x.strides[1] == x.itemsize``):

    * ``"max"`` / ``"min"``: in x's dtype, NaN skipped (``v > m`` is false for NaN), -inf / inf
      for an empty row;
    * ``"sum"``: in float64; float32 elements plainly (each float32 is exact in float64, and n
      float64 roundings stay below 2^-22 relative for n < 2^31: inside the softmax bound),
      float64 elements with a TwoSum compensation per lane (error <= ~2 eps + O(n eps^2)
      relative for terms of one sign, as _row_sum); an infinite sum stays infinite;
    * ``"dot"`` (``f(x, y, r)``, y of x's dtype and shape, its rows contiguous too): the sum of
      x[r, j] * y[r, j] over the row, as ``"sum"`` over the float64 products (a product of two
      float32 is exact in float64; of two float64 rounded once, as _term_product).
    """
    summing = kind in ("sum", "dot")

    def row_pointer(context, builder, aty, value, r, rty):
        """(pointer to the first element of row r of a 2-D array, its column count)"""
        ary = context.make_array(aty)(context, builder, value=value)
        row_stride, _ = cgutils.unpack_tuple(builder, ary.strides, 2)
        _, n = cgutils.unpack_tuple(builder, ary.shape, 2)
        i8p = llvm_ir.IntType(8).as_pointer()
        offset = builder.mul(context.cast(builder, r, rty, nbtypes.intp), row_stride)
        return builder.bitcast(builder.gep(builder.bitcast(ary.data, i8p), [offset]),
                               context.get_value_type(aty.dtype).as_pointer()), n

    def codegen(context, builder, sig, args):
        elem = sig.args[0].dtype
        r, rty = args[-1], sig.args[-1]
        rows = [row_pointer(context, builder, aty, value, r, rty)
                for aty, value in zip(sig.args[:-1], args[:-1])]
        n = rows[0][1]
        et = context.get_value_type(elem)
        lanes = 16 if elem == nbtypes.float32 else 8
        acc_t = context.get_value_type(sig.return_type)
        vec_t = llvm_ir.VectorType(acc_t, lanes)
        compensated = summing and elem == nbtypes.float64
        start = float("inf") if kind == "min" else float("-inf") if kind == "max" else 0.0

        def widen(v):
            if isinstance(v.type, llvm_ir.VectorType):
                return v if v.type.element == acc_t else \
                    builder.fpext(v, llvm_ir.VectorType(acc_t, v.type.count))
            return v if v.type == acc_t else builder.fpext(v, acc_t)

        def term(j, count):
            """the term of elements j .. j + count - 1 (a vector, or a scalar for count 0)"""
            values = []
            for base, _ in rows:
                at = builder.gep(base, [j])
                if count:
                    at = builder.bitcast(at, llvm_ir.VectorType(et, count).as_pointer())
                values.append(builder.load(at, align=elem.bitwidth // 8))
            if kind == "dot":
                return builder.fmul(widen(values[0]), widen(values[1]))
            return values[0]

        def half(v, k, lanes):
            """lanes k .. k + lanes - 1 of vector v"""
            mask = llvm_ir.Constant(llvm_ir.VectorType(llvm_ir.IntType(32), lanes),
                                    list(range(k, k + lanes)))
            return builder.shuffle_vector(v, v, mask)

        def step(acc, err, v):
            """(acc, err) after taking in v (vectors or scalars)."""
            if summing:
                v = widen(v)
                if not compensated:
                    return builder.fadd(acc, v), err
                acc, e = _two_sum(builder, acc, v)
                return acc, builder.fadd(err, e)
            better = builder.fcmp_ordered(">" if kind == "max" else "<", v, acc)
            return builder.select(better, v, acc), err

        vzero = llvm_ir.Constant(vec_t, [0.0] * lanes)
        accs = [(cgutils.alloca_once_value(builder, llvm_ir.Constant(vec_t, [start] * lanes)),
                 cgutils.alloca_once_value(builder, vzero)) for _ in range(2)]
        width = llvm_ir.Constant(n.type, 2 * lanes)
        blocks = builder.sdiv(n, width)
        with cgutils.for_range(builder, blocks) as loop:
            first = builder.mul(loop.index, width)
            for k, (acc_p, err_p) in enumerate(accs):
                v = term(builder.add(first, llvm_ir.Constant(n.type, k * lanes)), lanes)
                acc, err = step(builder.load(acc_p), builder.load(err_p), v)
                builder.store(acc, acc_p)
                builder.store(err, err_p)
        # the two accumulators, then halves of the lanes (a fixed tree: 4 dependent steps
        # instead of 16 for float32, which rows of 32 feel)
        (acc0_p, err0_p), (acc1_p, err1_p) = accs
        acc, err = step(builder.load(acc0_p), builder.load(err0_p), builder.load(acc1_p))
        if compensated:
            err = builder.fadd(err, builder.load(err1_p))
        while lanes > 1:
            lanes //= 2
            low, high = half(acc, 0, lanes), half(acc, lanes, lanes)
            if compensated:
                acc, e = _two_sum(builder, low, high)
                err = builder.fadd(e, builder.fadd(half(err, 0, lanes),
                                                   half(err, lanes, lanes)))
            else:
                acc, _ = step(low, None, high)
        zero = llvm_ir.Constant(llvm_ir.IntType(32), 0)
        total = builder.extract_element(acc, zero)
        err = builder.extract_element(err, zero) if compensated else \
            llvm_ir.Constant(acc_t, 0.0)
        total_p = cgutils.alloca_once_value(builder, total)
        err_p = cgutils.alloca_once_value(builder, err)
        one = llvm_ir.Constant(n.type, 1)
        with cgutils.for_range_slice(builder, builder.mul(blocks, width), n, one) as (j, _):
            t, e = step(builder.load(total_p), builder.load(err_p), term(j, 0))
            builder.store(t, total_p)
            builder.store(e, err_p)
        total = builder.load(total_p)
        if not compensated:
            return total
        # total + err, unless the total is inf or NaN (then err is NaN or meaningless)
        finite = builder.fcmp_ordered("==", builder.fsub(total, total),
                                      llvm_ir.Constant(acc_t, 0.0))
        return builder.select(finite, builder.fadd(total, builder.load(err_p)), total)

    if kind == "dot":
        @intrinsic
        def reduce(typingctx, x, y, r):
            if not (isinstance(y, nbtypes.Array) and y.dtype == x.dtype and y.ndim == 2):
                return None
            return nbtypes.float64(x, y, r), codegen
    else:
        @intrinsic
        def reduce(typingctx, x, r):
            return (nbtypes.float64 if summing else x.dtype)(x, r), codegen
    return reduce


_vector_row_max = _row_reduction("max")
_vector_row_min = _row_reduction("min")
_vector_row_sum = _row_reduction("sum")
_vector_row_dot = _row_reduction("dot")


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


def _row_exp(v, m, inv_t, neg):
    """exp((v - m) / T) as exp((v - m) * inv_t), inv_t = 1 / T (of -v for softmin), for the
    softmax forward rows, m the row's max, so the argument is <= 0 for every kept entry.
    float32 data in float32 arithmetic (_math32.exp_nonpositive, results below the smallest
    normal flushed to 0), float64 data in float64 (_math.exp_poly_nonpositive, likewise:
    float64 softmax 4000x1024, numba, 2 threads, see the benchmark group softmax-forward).  The roundings of v - m, of 1 / T and of the
    product are inside the conditioning term 2 eps (|x| + |max|) / T of the softmax bound
    (DESIGN.md section 4); a multiplication instead of a vector division per 8 elements made
    the exp pass ~25% faster (4000x1024 float32, 1 thread).  Measured with _row_scale, float32, numba, 2 threads (tools:
    timeit, best of 20): softmax on 128000x32 / 4000x1024 / 128x32000 went from 0.29-0.40x
    torch.softmax to 0.55-0.68x with _math32.exp_poly."""
    raise NotImplementedError("only callable in kernels")


@overload(_row_exp, inline="always", jit_options=JIT_OPTIONS)
def _row_exp_typer(v, m, inv_t, neg):
    if v == nbtypes.float32:
        exp32 = FORMULAS32["exp_nonpositive"]

        def narrow(v, m, inv_t, neg):
            return exp32(((-v if neg else v) - np.float32(m)) * np.float32(inv_t))
        return narrow

    exp64 = FORMULAS["exp_poly_nonpositive"]

    def wide(v, m, inv_t, neg):
        return exp64(((-np.float64(v) if neg else np.float64(v)) - m) * inv_t)
    return wide


def _exp_native(v):
    """exp(v) in v's own precision for any v: float32 by _math32.exp_poly, float64 by
    _math.exp_poly.  The log_softmax backward's exp(y): 10000x1000 float32 19.8 -> 12.1 ms,
    128x32000 7.3 -> 4.1 ms (numba, 2 threads) against the float64 exp."""
    raise NotImplementedError("only callable in kernels")


@overload(_exp_native, inline="always", jit_options=JIT_OPTIONS)
def _exp_native_typer(v):
    exp = FORMULAS32["exp_poly"] if v == nbtypes.float32 else _exp
    return lambda v: exp(v)


def _row_scale(e, s, inv):
    """e / s for softmax's normalisation: float32 data as e * float32(1 / s) in float32 (two
    roundings, 1 ULP more than e / s, inside the bound 4 eps (2 + log2 C) with the exp's 1 ULP:
    no conversions, 8 lanes; the scale pass on 4000x1024, 1 thread, 0.70 -> 0.35 ms); float64
    data by the division itself."""
    raise NotImplementedError("only callable in kernels")


@overload(_row_scale, inline="always", jit_options=JIT_OPTIONS)
def _row_scale_typer(e, s, inv):
    if e == nbtypes.float32:
        return lambda e, s, inv: e * np.float32(inv)
    return lambda e, s, inv: e / s


def _log_softmax_value(v, m, inv_t, log_sum):
    """(v - m) / T - log(sum) as (v - m) * inv_t - log(sum) for log_softmax: float32 data in
    float32 arithmetic (roundings within eps (|r| + log C) each, inside the bound
    8 eps (1 + |r|) (1 + log2 C) and its conditioning term), float64 data in float64."""
    raise NotImplementedError("only callable in kernels")


@overload(_log_softmax_value, inline="always", jit_options=JIT_OPTIONS)
def _log_softmax_value_typer(v, m, inv_t, log_sum):
    if v == nbtypes.float32:
        return lambda v, m, inv_t, log_sum: ((v - np.float32(m)) * np.float32(inv_t)
                                             - np.float32(log_sum))
    return lambda v, m, inv_t, log_sum: (v - m) * inv_t - log_sum


@njit(inline="always", **JIT_OPTIONS)
def _row_max(x, mask, r, neg):
    """Max of the kept entries of row r (of -x for softmin; NaN skipped: it reaches the sum
    instead), and whether any entry is kept."""
    if mask is None and x.strides[1] == x.itemsize:  # contiguous rows: the vector code
        return np.float64(-_vector_row_min(x, r) if neg else _vector_row_max(x, r)), True
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
def _row_total(a, mask, r):
    """Sum of the kept entries of row r of a in float64: the vector code for a contiguous row
    without a mask."""
    if mask is None and a.strides[1] == a.itemsize:
        return _vector_row_sum(a, r)
    return _row_sum(_term_value, a, a, mask, r, 0.0, 1.0)


#: softmax / log_softmax rows of at most half this many elements are done in blocks of about
#: this many elements, pass by pass (every row's max and exps, then every row's float64 sum,
#: then the values), while the block is in L1: a row's sum no longer loads the exps its own
#: loop has just stored (a store-forwarding stall per row), and log_softmax takes the logs of
#: a block's sums in one vectorised loop (_math.log_poly, 1.5 ULP) instead of a libm call per
#: row.  128000x32 float32, 1 thread: softmax 3.19 -> 2.74 ms (the pass structure alone,
#: benchmarks: softmax-forward rows of 32), log_softmax 5.0 -> 4.1 ms (torch 3.6-3.8 ms).
#: Rows longer than 256 keep one row at a time (4000x1024 in blocks of one row measured
#: slower, 2.2 -> 2.6 ms).
_ROW_BLOCK = 512
_log = FORMULAS["log_poly"]


@njit(**JIT_OPTIONS)
def _softmax_short_rows(x, mask, out, inv_t, start, stop, log, neg):
    """softmax / log_softmax of short rows start .. stop - 1 (of -x for softmin), a block of
    rows at a time (see _ROW_BLOCK).  (Not inlined: inlined into the generated kernels, Numba
    0.68's IR check warns about a variable of the inlined _row_exp.)"""
    n = x.shape[1]
    block = _ROW_BLOCK // max(n, 1)
    sums = np.empty(block, np.float64)
    maxima = np.empty(block, np.float64)
    # log_softmax reads x again for its values: with out = x its exps go to scratch rows
    scratch = log and out.ctypes.data == x.ctypes.data
    exps = np.empty((block, n), out.dtype) if scratch else out
    for r0 in range(start, stop, block):
        r1 = min(r0 + block, stop)
        for r in range(r0, r1):
            m = _row_max(x, mask, r, neg)[0]
            er = r - r0 if scratch else r
            for j in range(n):
                e = _row_exp(x[r, j], m, inv_t, neg)
                exps[er, j] = e if _kept(mask, r, j) else 0.0
            maxima[r - r0] = m
        # (a fully masked row sums to 0, whose log or inverse is not used: every value of the
        # row is masked, so 0 or -inf, never NaN)
        for r in range(r0, r1):
            sums[r - r0] = _row_total(exps, None, r - r0 if scratch else r)
        if log:
            for b in range(r1 - r0):
                sums[b] = _log(sums[b])
            for r in range(r0, r1):
                m, ls = maxima[r - r0], sums[r - r0]
                for j in range(n):
                    v = _log_softmax_value(-x[r, j] if neg else x[r, j], m, inv_t, ls)
                    out[r, j] = v if _kept(mask, r, j) else -np.inf
        else:
            for r in range(r0, r1):
                sr = sums[r - r0]
                inv = 1.0 / sr
                for j in range(n):
                    v = _row_scale(out[r, j], sr, inv)
                    out[r, j] = v if _kept(mask, r, j) else 0.0


@njit(inline="always", **JIT_OPTIONS)
def _softmax_rows(x, mask, temperature, out, start, stop, log, neg):
    """softmax / log_softmax of rows start .. stop - 1, or of -x (``neg``: softmin)."""
    n = x.shape[1]
    inv_t = 1.0 / temperature
    # exp((x - max) / T) by a straight vectorisable loop, then its float64 sum.  softmax keeps
    # the exps in out (x[j] is not read again, so out may be x); log_softmax needs x again, so
    # its exps go to out only when out is not x (_validate passes either x itself or a disjoint
    # buffer), else to one scratch row for the whole range.  A scratch row for every row cost
    # log_softmax float32 on 128000x32, numba, 2 threads, 11.8 ms (torch 4.1 ms); without it
    # 6.3 ms (torch 3.4 ms), and 4000x1024: 7.2 -> 4.4 ms.  Rows are addressed as (array, row)
    # rather than as views: a view per row costs two atomic reference-count updates on the
    # array, which both threads contend for (softmax 128000x32 float32, 2 threads, 2.9 ->
    # 2.1 ms).
    if 2 * n <= _ROW_BLOCK:
        _softmax_short_rows(x, mask, out, inv_t, start, stop, log, neg)
        return
    scratch = log and out.ctypes.data == x.ctypes.data
    exps = np.empty((1, n), out.dtype) if scratch else out
    for r in range(start, stop):
        m, any_kept = _row_max(x, mask, r, neg)
        if not any_kept:  # fully masked row: softmax 0, log_softmax -inf, never NaN
            fill = -np.inf if log else 0.0
            for j in range(n):
                out[r, j] = fill
            continue
        er = 0 if scratch else r
        for j in range(n):
            e = _row_exp(x[r, j], m, inv_t, neg)
            exps[er, j] = e if _kept(mask, r, j) else 0.0
        s = _row_total(exps, None, er)
        if log:
            ls = math.log(s)
            for j in range(n):
                v = _log_softmax_value(-x[r, j] if neg else x[r, j], m, inv_t, ls)
                out[r, j] = v if _kept(mask, r, j) else -np.inf
        else:
            inv = 1.0 / s
            for j in range(n):
                v = _row_scale(out[r, j], s, inv)
                out[r, j] = v if _kept(mask, r, j) else 0.0


def _row_dot(a, b, mask, r):
    """Sum over the kept entries of row r of a * b in float64: the vector code for contiguous
    rows of one dtype without a mask."""
    raise NotImplementedError("only callable in kernels")


@overload(_row_dot, inline="always", jit_options=JIT_OPTIONS)
def _row_dot_typer(a, b, mask, r):
    # (decided here at typing time: an overload's implementation is not pruned on ``is None``)
    if a.dtype != b.dtype or not isinstance(mask, (nbtypes.NoneType, nbtypes.Omitted)):
        return lambda a, b, mask, r: _row_sum(_term_product, a, b, mask, r, 0.0, 1.0)

    def unmasked(a, b, mask, r):
        if a.strides[1] == a.itemsize and b.strides[1] == b.itemsize:
            return _vector_row_dot(a, b, r)
        return _row_sum(_term_product, a, b, None, r, 0.0, 1.0)
    return unmasked


def _log_softmax_backward_narrow(grad, y, mask, out, r, s, inv_t):
    """Row r of the log_softmax gradient (g - exp(y) s) / T in float32 arithmetic, for float32
    data; False (row to be recomputed in float64) where a result is not finite.  Returns False
    for other dtypes without writing.

    Rounding s, exp(y) s, the difference and the scaling to float32 adds errors of a few
    eps (|g| + exp(y) |s|) / T: inside the conditioning bound the float64 path already has
    (its float32 exp(y) is 1 ULP; tests/oracle.py softmax_backward_allowed).  e^y is applied as
    u 2^-32 after s (_math32.exp_scaled), so a subnormal e^y is not rounded before the product;
    a y above 64 (not a log_softmax output) sends the row to the float64 path.  A float32 intermediate can overflow where the float64 result is finite: every
    non-finite result (also from inf or NaN inputs) sends the row back to the float64 path,
    which the caller runs only when ``out`` is not ``grad`` or ``y`` (they are read again).
    Float32 keeps 16 lanes where the float64 path converts to 8: 4000x1024 float32, 1 thread,
    3.3 -> 1.8 ms (benchmark group log_softmax-backward-rows)."""
    raise NotImplementedError("only callable in kernels")


@overload(_log_softmax_backward_narrow, inline="always", jit_options=JIT_OPTIONS)
def _log_softmax_backward_narrow_typer(grad, y, mask, out, r, s, inv_t):
    if not (grad.dtype == y.dtype == out.dtype == nbtypes.float32):
        return lambda grad, y, mask, out, r, s, inv_t: False
    exp_scaled = FORMULAS32["exp_scaled"]
    unscale = _math32.EXP_UNSCALE
    cap = np.float32(64.0)  # exp_scaled's domain (a log_softmax output is <= 0)
    unmasked = isinstance(mask, (nbtypes.NoneType, nbtypes.Omitted))  # (no pruning in here)

    def narrow(grad, y, mask, out, r, s, inv_t):
        s32 = np.float32(s)
        inv32 = np.float32(inv_t)
        bad = False
        for j in range(y.shape[1]):
            yj = y[r, j]
            u = exp_scaled(cap if yj > cap else yj)[0]  # (NaN kept)
            v = (grad[r, j] - (u * s32) * unscale) * inv32
            bad |= not (v - v == np.float32(0.0)) or yj > cap
            out[r, j] = v if unmasked or mask[r, j] != 0 else np.float32(0.0)
        return not bad
    return narrow


@njit(inline="always", **JIT_OPTIONS)
def _softmax_backward_rows(grad, y, mask, temperature, out, start, stop, log):
    """Gradient of softmax (``log`` False) or log_softmax for rows start .. stop - 1:

    * softmax:     dx = y * (g - sum(g * y)) / T
    * log_softmax: dx = (g - exp(y) * sum(g)) / T

    in float64 with one rounding to out's dtype (float32 log_softmax: float32 arithmetic
    first, _log_softmax_backward_narrow).  The division by T is a multiplication by 1 / T (one
    more float64 rounding, far inside the 8 ULP bound; exact for T = 1): with the vector dot
    product for sum(g * y), the softmax backward on 4000x1024 float32, 1 thread, went 3.96 ->
    1.56 ms (torch 1.18 ms; benchmark group softmax-backward-rows).  A subnormal T with
    1 / T = inf divides instead (0 * inf would be NaN); the condition is the same for every
    element, so LLVM unswitches the loop."""
    n = y.shape[1]
    inv_t = 1.0 / temperature
    divide = not math.isfinite(inv_t)
    narrow = log and not divide and out.ctypes.data != grad.ctypes.data \
        and out.ctypes.data != y.ctypes.data
    for r in range(start, stop):
        s = _row_total(grad, mask, r) if log else _row_dot(grad, y, mask, r)
        if narrow and _log_softmax_backward_narrow(grad, y, mask, out, r, s, inv_t):
            continue
        for j in range(n):
            g = np.float64(grad[r, j])
            d = g - _exp_native(y[r, j]) * s if log else np.float64(y[r, j]) * (g - s)
            v = d / temperature if divide else d * inv_t
            out[r, j] = v if _kept(mask, r, j) else 0.0


@njit(inline="always", **JIT_OPTIONS)
def _logsumexp_rows(x, mask, temperature, out, start, stop):
    """out[r] = max + T log(sum exp((x - max) / T)) over the kept entries of each row r in
    start .. stop - 1: the exps by a straight vectorisable loop into a scratch row (one for the
    range), then their float64 compensated sum (computing the exps inside the sum does not
    vectorise: 10x slower).  Nothing kept: -inf.  A non-finite max (all kept -inf, or +inf) is
    the result unless a kept entry is NaN (torch.logsumexp and scipy.special.logsumexp
    agree)."""
    n = x.shape[1]
    exps = np.empty((1, n), np.float64)
    for r in range(start, stop):
        m, any_kept = _row_max(x, mask, r, False)
        if not any_kept:
            out[r] = -np.inf
            continue
        if not math.isfinite(m):
            v = m
            for j in range(n):
                if _kept(mask, r, j) and np.isnan(x[r, j]):
                    v = np.nan
            out[r] = v
            continue
        for j in range(n):
            e = _exp((np.float64(x[r, j]) - m) / temperature)
            exps[0, j] = e if _kept(mask, r, j) else 0.0
        out[r] = m + temperature * math.log(_row_total(exps, None, 0))


#: prelu works on blocks of one channel: element i of the flat array is in channel
#: (i // inner) % C.  Blocks let a single channel (a scalar weight) still use every thread.
PRELU_BLOCK = 1 << 14


# The block loops (prelu's, the gated units') index with unsigned integers: over
# range(start, stop) with signed indices, Numba's negative-index wraparound stayed in the loop
# (LLVM could not prove start >= 0) and made it a gather/scatter loop.  prelu float32
# (16, 64, 32, 32): forward 0.59 -> 0.09 ms (numba, 2 threads; benchmark group prelu-forward).
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
        for k in range(stop - start):
            i = np.uint64(start + k)  # (unsigned: see _prelu_block)
            out[i] = leaky(x[i], w)

    @njit(inline="always", **JIT_OPTIONS)
    def derivative(x, weight, inner, nblk, out, b):
        start, stop, w = _prelu_block(b, inner, nblk, weight)
        for k in range(stop - start):
            i = np.uint64(start + k)  # (unsigned: see _prelu_block)
            out[i] = leaky_d(x[i], w)

    @njit(inline="always", **JIT_OPTIONS)
    def and_derivative(x, weight, inner, nblk, out, dout, b):
        start, stop, w = _prelu_block(b, inner, nblk, weight)
        for k in range(stop - start):
            i = np.uint64(start + k)  # (unsigned: see _prelu_block)
            v = x[i]
            out[i] = leaky(v, w)
            dout[i] = leaky_d(v, w)

    @njit(inline="always", **JIT_OPTIONS)
    def backward(grad, x, weight, inner, nblk, out, partial, b):
        # grad_x = grad * prelu'(x); d prelu / d weight = x where x <= 0 (0 for x > 0, NaN kept)
        start, stop, w = _prelu_block(b, inner, nblk, weight)
        terms = np.empty(stop - start, np.float64)  # summed by _sum8: a vector reduction
        for k in range(stop - start):
            i = np.uint64(start + k)  # (unsigned: see _prelu_block)
            v = x[i]
            g = grad[i]
            out[i] = g * leaky_d(v, w)
            terms[k] = 0.0 if v > 0.0 else np.float64(g) * np.float64(v)
        partial[b] = _sum8(terms, stop - start)

    return forward, derivative, and_derivative, backward


(_prelu_forward_block, _prelu_derivative_block, _prelu_and_derivative_block,
 _prelu_backward_block) = _define_prelu_bodies()


# --------------------------------------------------------------------------------------------
# kernel generation
# --------------------------------------------------------------------------------------------

def _formula_call(formula: str, x: str, pa: str) -> str:
    """Source of a call of ``formula`` on element ``x`` with parameters ``pa`` (", a, b"):
    where _math32 has a twin, float32 inputs use it (``T_<formula>``, :func:`_by_dtype`), else
    the float64 formula on the widened element."""
    if formula in FORMULAS32:
        return f"T_{formula}({x}{pa})"
    return f"F_{formula}(np.float64({x}){pa})"


def _fused_call(name: str, x: str, pa: str) -> str:
    """Source of ``(value, derivative)`` of op ``name`` on element ``x``: its
    ``NAME_and_derivative`` formula where the dtype's formulas have one, else both calls."""
    fused = f"{name}_and_derivative"
    if fused in FORMULAS32 or (fused in FORMULAS and name not in FORMULAS32):
        return _formula_call(fused, x, pa)
    return f"({_formula_call(name, x, pa)}, {_formula_call(name + '_derivative', x, pa)})"


def _elementwise_specs(op: _registry.OpSpec):
    """(kernel name, arguments, loop length, loop body) for each kernel of an elementwise op."""
    # Formulas run in float64 and are rounded once when stored (float32 inputs are widened
    # exactly), as in the Cython kernels, except where _math32 has a float32 twin.
    p = "".join(f"{n}, " for n in op.param_names)
    pa = "".join(f", {n}" for n in op.param_names)

    def call(formula, x):
        return _formula_call(formula, x, pa)

    fused_call = _fused_call(op.name, "x[i]", pa)
    specs = [
        (f"{op.name}_forward", f"x, {p}out", "x.size", f"out[i] = {call(op.name, 'x[i]')}"),
        (f"{op.name}_derivative", f"x, {p}out", "x.size",
         f"out[i] = {call(op.name + '_derivative', 'x[i]')}"),
        (f"{op.name}_and_derivative", f"x, {p}out, dout", "x.size",
         f"v, d = {fused_call}\n        out[i] = v\n        dout[i] = d"),
        (f"{op.name}_backward", f"grad, x, {p}out", "x.size",
         f"out[i] = grad[i] * {call(op.name + '_derivative', 'x[i]')}"),
    ]
    if op.y_backward is not None:
        specs.append((f"{op.name}_backward_from_y", f"grad, y, {p}out", "y.size",
                      f"out[i] = grad[i] * {call(op.name + '_derivative_from_y', 'y[i]')}"))
    return specs


def _row_specs():
    """(kernel name, arguments, row count, body over rows start .. stop - 1) of the softmax
    family's row kernels."""
    return [
        ("softmax_forward", "x, mask, temperature, out", "x.shape[0]",
         "_softmax_rows(x, mask, temperature, out, start, stop, False, False)"),
        ("log_softmax_forward", "x, mask, temperature, out", "x.shape[0]",
         "_softmax_rows(x, mask, temperature, out, start, stop, True, False)"),
        # softmin(x) = softmax(-x): the softmax body on negated loads; its gradient is the
        # softmax gradient with -T
        ("softmin_forward", "x, mask, temperature, out", "x.shape[0]",
         "_softmax_rows(x, mask, temperature, out, start, stop, False, True)"),
        ("logsumexp_forward", "x, mask, temperature, out", "x.shape[0]",
         "_logsumexp_rows(x, mask, temperature, out, start, stop)"),
        ("softmax_backward", "grad, y, mask, temperature, out", "y.shape[0]",
         "_softmax_backward_rows(grad, y, mask, temperature, out, start, stop, False)"),
        ("log_softmax_backward", "grad, y, mask, temperature, out", "y.shape[0]",
         "_softmax_backward_rows(grad, y, mask, temperature, out, start, stop, True)"),
        ("softmin_backward", "grad, y, mask, temperature, out", "y.shape[0]",
         "_softmax_backward_rows(grad, y, mask, -temperature, out, start, stop, False)"),
    ]


def _block_specs():
    """prelu's kernels: one channel block per iteration."""
    nblk = "((inner + PRELU_BLOCK - 1) // PRELU_BLOCK)"
    return [
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

# Row kernels (softmax family): the loop body is one ``NAME__rows`` function over a range of
# rows, compiled once and called by both twins with int64 bounds (a prange index is unsigned
# and would compile a second copy), instead of being inlined into each twin, so a cold start
# compiles the heavy row body once rather than twice.  Cold `fa.warmup([op])`: softmax 52.6 ->
# 31.9 s, log_softmax 58.9 -> 39.9 s, logsumexp 23.7 -> 17.8 s.  Each call takes
# ROW_TASK_ELEMENTS elements' worth of rows: one call per row cost ~8 ns a row, a quarter of
# softmax on 128000x32 float32 (1 thread 4.3 -> 3.3 ms).  prelu's light block bodies stay
# inlined (a separate function made its warmup slower, 6.6 -> 10.7 s).
_ROW_TEMPLATE = """
def {name}__rows({args}, start, stop):
    {body}
"""

#: Rows handed to one call of a row body (and to one task of the parallel twin): enough rows
#: for about this many elements, at least one.
ROW_TASK_ELEMENTS = 4096

_ROW_KERNEL_TEMPLATE = """
def {name}__{variant}({args}):
    rows = {count}
    per = max(1, ROW_TASK_ELEMENTS // max(1, {width}))
    for t in {loop}((rows + per - 1) // per):
        start = np.int64(t) * per
        {name}__rows({args}, start, min(start + per, rows))
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


#: Elements of one row handled by one task of a gated kernel: rows are split into blocks, so a
#: flat swiglu (one row) still uses every thread and the inner loop stays contiguous.
GATED_BLOCK = 4096

# Gated units (glu, swiglu, geglu; _registry._gated documents the arguments): value and
# backward of act(gate) * value, with the gate op's formulas in float64, rounded once on store.
_GATED_TEMPLATE = """
def {name}_forward__{variant}(gate, value, rows, width, stride, {p}out):
{head}
            out[oj] = {value_call} * np.float64(value[ij])


def {name}_backward__{variant}(grad, gate, value, rows, width, stride, {p}grad_gate, grad_value):
{head}
            g = np.float64(grad[oj])
            v = np.float64(value[ij])
            a, d = {fused}
            grad_gate[ij] = g * v * d
            grad_value[ij] = g * a
"""
# both kernels: blocks of one row, element j of row r at ij = i0 + j (operands), oj = o0 + j
# (grad, out), unsigned (see _prelu_block)
_GATED_LOOP = """    nb = (width + GATED_BLOCK - 1) // GATED_BLOCK
    for b in {loop}(rows * nb):
        r = b // nb
        j0 = (b - r * nb) * GATED_BLOCK
        j1 = min(j0 + GATED_BLOCK, width)
        i0 = r * stride
        o0 = r * width
        for k in range(j1 - j0):
            ij = np.uint64(i0 + j0 + k)
            oj = np.uint64(o0 + j0 + k)"""


def _gated_wide_call(formula: str, x: str, pa: str) -> str:
    """Source of a call of ``formula`` on element ``x`` whose result stays float64: the float32
    twin ``<formula>_wide`` where _math32 has one (float64 inside, not rounded), else the float64
    formula on the widened element.  A gated unit multiplies the gate's activation by the other
    operand: rounded to float32 first, a subnormal activation times a large operand lost up to
    all of its bits (swiglu(-100, 1e38): 1277 ULP; glu: 279,000 ULP), against DESIGN.md section
    4's rule for normal results of subnormal intermediates."""
    if f"{formula}_wide" in FORMULAS32:
        return f"T_{formula}_wide({x}{pa})"
    if formula.endswith("_and_derivative") and formula not in FORMULAS:
        op = formula.removesuffix("_and_derivative")
        return (f"(F_{op}(np.float64({x}){pa}), "
                f"F_{op}_derivative(np.float64({x}){pa}))")
    return f"F_{formula}(np.float64({x}){pa})"


def _gated_source(op: _registry.OpSpec, variant: str, loop: str) -> str:
    # the gate op's value and derivative in float64 (_gated_wide_call), multiplied in float64
    gate = op.extra["gate"]
    pa = "".join(f", {n}" for n in op.param_names)

    xi = "gate[ij]"
    fused = _gated_wide_call(f"{gate}_and_derivative", xi, pa)
    return _GATED_TEMPLATE.format(name=op.name, variant=variant,
                                  value_call=_gated_wide_call(gate, xi, pa),
                                  head=_GATED_LOOP.format(loop=loop),
                                  p="".join(f"{n}, " for n in op.param_names), fused=fused)


def _kernel_source() -> tuple[str, list[tuple[str, str]]]:
    """The whole generated module, and (kernel name, size argument) per kernel."""
    specs = [s for op in _registry.elementwise_ops() for s in _elementwise_specs(op)]
    chunks = []
    for name, args, count, body in _row_specs():
        chunks.append(_ROW_TEMPLATE.format(name=name, args=args, body=body))
    specs += _block_specs()
    for variant, loop in (("parallel", "prange"), ("serial", "range")):
        for name, args, count, body in specs:
            chunks.append(_KERNEL_TEMPLATE.format(
                name=name, variant=variant, args=args, loop=loop, count=count, body=body))
        for name, args, count, _ in _row_specs():
            chunks.append(_ROW_KERNEL_TEMPLATE.format(
                name=name, variant=variant, args=args, loop=loop, count=count,
                width=count.replace("shape[0]", "shape[1]")))
    specs += _row_specs()
    for variant, loop in (("parallel", "prange"), ("serial", "range")):
        chunks.append(_PRELU_BACKWARD_TEMPLATE.format(variant=variant, loop=loop))
    names = [(s[0], s[1].split(",")[0]) for s in specs] + [("prelu_backward", "grad")]
    for op in _registry.gated_ops():
        for variant, loop in (("parallel", "prange"), ("serial", "range")):
            chunks.append(_gated_source(op, variant, loop))
        names += [(f"{op.name}_forward", "gate"), (f"{op.name}_backward", "grad")]
    return "".join(chunks), names


def _namespace() -> dict:
    # __name__ makes the generated functions belong to this module, which Numba re-imports
    # when it loads them from the disk cache
    ns = {"__name__": __name__, "np": np, "prange": prange, "PRELU_BLOCK": PRELU_BLOCK,
          "ROW_TASK_ELEMENTS": ROW_TASK_ELEMENTS,
          "GATED_BLOCK": GATED_BLOCK}
    for name, fn in FORMULAS.items():
        if isinstance(fn, numba.core.registry.CPUDispatcher):
            ns[f"F_{name}"] = fn
    params = {f"{op.name}{suffix}": op.param_names for op in _registry.elementwise_ops()
              for suffix in ("", "_derivative", "_and_derivative", "_derivative_from_y")}
    for name in FORMULAS32:
        if name in params:
            ns[f"T_{name}"] = _by_dtype(name, params[name])
        elif name.removesuffix("_wide") in params:  # float64 results of float32 inputs
            base = name.removesuffix("_wide")
            ns[f"T_{name}"] = _by_dtype(name, params[base], wide_name=base)
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


class _WriteableView:
    """Exposes read-only memory as a writeable array interface (see :func:`_as_writeable`)."""

    __slots__ = ("__array_interface__",)

    def __init__(self, a: np.ndarray):
        self.__array_interface__ = dict(a.__array_interface__,
                                        data=(a.__array_interface__["data"][0], False))


def _as_writeable(args: tuple) -> tuple:
    """``args`` with every read-only array replaced by a writeable view of the same memory.

    Numba compiles a separate specialisation for each read-only/writeable combination of a
    kernel's arrays (a broadcast mask, a read-only memmap or input): up to 16 copies of a
    softmax-backward kernel, 36% of all compiled kernels in the test suite, each ~1-30 s of cold
    compile for the user who first passes such an array.  Kernels never write to their input
    arrays (outputs are checked writeable by the API), so they see every input as writeable and
    compile one specialisation per dtype.
    """
    return tuple(np.asarray(_WriteableView(a)) if isinstance(a, np.ndarray)
                 and not a.flags.writeable else a for a in args)


#: (dispatcher, argument keys) -> the dispatcher's compiled entry point for writeable arrays
_WRITEABLE_ENTRIES: dict = {}


#: argument types whose Numba type the Python type decides (the API passes float parameters,
#: int indices and flags, None)
_PLAIN_TYPES = frozenset([float, int, bool, type(None), np.float64, np.float32, np.int64,
                          np.bool_])


def _arg_key(a):
    """What Numba's type of ``a`` depends on, cheaply: dtype, ndim, layout and alignment of an
    array (not its writeable flag), the type of a plain scalar or None; else None (unknown)."""
    if isinstance(a, np.ndarray):
        f = a.flags
        return a.dtype, a.ndim, f.c_contiguous, f.f_contiguous, f.aligned
    t = type(a)
    if t is int and not -2**63 <= a < 2**63:
        return None  # (typed uint64 or rejected by Numba)
    return t if t in _PLAIN_TYPES else None


def writeable_entry(dispatcher, args: tuple):
    """The compiled entry point of the Numba ``dispatcher`` for ``args``' types with every array
    writeable (``Dispatcher.compile``: loaded from the cache or compiled once per key).

    Its unboxing does not look at the writeable flag, and kernels never write their inputs, so
    read-only inputs can run this machine code as they are: no read-only specialisation (see
    _as_writeable) and no views.  Used by the small-array fast path (``fastact.api``) and, for
    kernels below the parallel threshold, by :class:`_Kernel`: ``fa.glu`` on 1,000 read-only
    float32 elements 17.3 -> ~11 us (10.1 us writeable; the views cost 3.5 us per array).
    None if an argument is not an array or a plain scalar."""
    key = (dispatcher,) + tuple(map(_arg_key, args))
    if any(k is None for k in key):
        return None  # (an argument of another kind: the caller uses writeable views)
    entry = _WRITEABLE_ENTRIES.get(key)
    if entry is None:
        sig = tuple(numba.typeof(a).copy(readonly=False) if isinstance(a, np.ndarray)
                    else numba.typeof(a) for a in args)
        entry = _WRITEABLE_ENTRIES[key] = dispatcher.compile(sig)
    return entry


class _Kernel:
    """A public kernel: the parallel twin (through :func:`_run_parallel`, which keeps
    non-thread-safe layers safe) from ``PARALLEL_THRESHOLD`` elements of argument
    ``size_index``, else the serial twin.  Read-only inputs run the serial twin's code for
    writeable arrays (:func:`writeable_entry`), or the parallel twin on writeable views
    (:func:`_as_writeable`).

    The twins' Numba dispatchers are made on first use: making all ~400 at import took 0.15 s
    of the first call in a fresh process (``python -X importtime``; ``fastact.kernels.
    numba_cpu`` imported in 0.25 s, now ~0.1 s).
    """

    __slots__ = ("__name__", "_functions", "_size_index", "_parallel", "_serial")

    def __init__(self, name: str, parallel_fn, serial_fn, size_index: int = 0):
        self.__name__ = name
        self._functions = (parallel_fn, serial_fn)
        self._size_index = size_index
        self._parallel = self._serial = None

    @property
    def parallel(self):
        if self._parallel is None:
            self._parallel = _jit_kernel(self._functions[0], True)
        return self._parallel

    @property
    def serial(self):
        if self._serial is None:
            self._serial = _jit_kernel(self._functions[1], False)
        return self._serial

    def __call__(self, *args):
        parallel = args[self._size_index].size >= PARALLEL_THRESHOLD and not _in_forked_child
        for a in args:
            if isinstance(a, np.ndarray) and not a.flags.writeable:
                entry = None if parallel else writeable_entry(self.serial, args)
                if entry is not None:  # (small arrays: views would cost more than the work)
                    entry(*args)
                    return
                args = _as_writeable(args)
                break
        if parallel:
            _run_parallel(self.parallel, self.serial, args)
        else:
            (self._serial or self.serial)(*args)

    def __repr__(self) -> str:
        return f"<fastact Numba kernel {self.__name__}>"


def _build() -> dict:
    source, names = _kernel_source()
    # register the generated text so tracebacks and Numba's error messages can show it
    linecache.cache[_GENERATED_FILENAME] = (len(source), None, source.splitlines(True),
                                            _GENERATED_FILENAME)
    ns = _namespace()
    exec(compile(source, _GENERATED_FILENAME, "exec"), ns)
    for name in [k for k in ns if k.endswith("__rows")]:  # before any kernel is compiled
        ns[name] = _jit_kernel(ns[name], False)
    kernels = {}
    for name, _ in names:
        kernels[name] = _Kernel(name, ns[f"{name}__parallel"], ns[f"{name}__serial"])
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


# --------------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------------
# Same names and arguments as kernels/numpy_ref.py (plain arrays and scalars, so a CUDA twin can
# keep them).  Row losses: x (rows, C), target int64 (rows,), weight float64 (C,), g float64 of
# size 1 or rows (gradient multiplier per row, 'mean' scale included), loss float64 (rows,).
# Each row is read from memory once: an online max and sum (blocks of LOSS_ROW_BLOCK elements,
# the block's exps computed by a straight vectorisable loop into a scratch buffer and summed in
# float64), then the gradient loop (which re-reads the row from cache: 32000 float32 are 128 KiB)
# writes grad[r, j] right after reading x[r, j], so grad may be x itself.

_exp_single = FORMULAS["exp_poly_single"]
LOSS_BLOCK = 4096  # elements per partial sum of the elementwise losses (as numpy_ref, cython)
LOSS_ROW_BLOCK = 512


@njit(inline="always", **JIT_OPTIONS)
def _sum8(a, n):
    """Sum of a[:n] in float64 over 8 interleaved lanes (vectorisable, order fixed by n)."""
    l0 = l1 = l2 = l3 = l4 = l5 = l6 = l7 = 0.0
    j = 0
    while j + 8 <= n:
        l0 += a[j]
        l1 += a[j + 1]
        l2 += a[j + 2]
        l3 += a[j + 3]
        l4 += a[j + 4]
        l5 += a[j + 5]
        l6 += a[j + 6]
        l7 += a[j + 7]
        j += 8
    t = 0.0
    while j < n:
        t += a[j]
        j += 1
    return (((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))) + t


@njit(inline="always", **JIT_OPTIONS)
def _block_max(xr, j, e):
    """max of xr[j:e] in float64 (NaN skipped) over 8 interleaved lanes (vectorisable)."""
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = -np.inf
    k = j
    while k + 8 <= e:
        v = np.float64(xr[k])
        m0 = v if v > m0 else m0
        v = np.float64(xr[k + 1])
        m1 = v if v > m1 else m1
        v = np.float64(xr[k + 2])
        m2 = v if v > m2 else m2
        v = np.float64(xr[k + 3])
        m3 = v if v > m3 else m3
        v = np.float64(xr[k + 4])
        m4 = v if v > m4 else m4
        v = np.float64(xr[k + 5])
        m5 = v if v > m5 else m5
        v = np.float64(xr[k + 6])
        m6 = v if v > m6 else m6
        v = np.float64(xr[k + 7])
        m7 = v if v > m7 else m7
        k += 8
    while k < e:
        v = np.float64(xr[k])
        m0 = v if v > m0 else m0
        k += 1
    a = m0 if m0 > m1 else m1
    b = m2 if m2 > m3 else m3
    c = m4 if m4 > m5 else m5
    d = m6 if m6 > m7 else m7
    a = a if a > b else b
    c = c if c > d else d
    return a if a > c else c


@njit(inline="always", **JIT_OPTIONS)
def _shift_term(w, m, v):
    """w * (m - v), the weighted distance of a logit below the row max, as its limit: 0 for
    w == 0, +inf for v == -inf (also while the max is still -inf)."""
    if w == 0.0:
        return 0.0
    if v == -np.inf:
        return np.inf
    return w * (m - v)


@njit(inline="always", **JIT_OPTIONS)
def _online_row(xr, q, weight, keep, es, wmode, store, gr, mrec, scratch):
    """One pass over the row xr (1-D): returns (m, s, sm, wtot) with m the max (NaN skipped),
    s = sum(exp(xr - m)) in float64, and for wmode 1 (class weights: w = weight) or 2
    (probability targets: w = weight * (keep * q + es)) sm = sum(w * (m - xr)) (each term its
    limit, see _shift_term) and wtot = sum(w).  Online: per block of LOSS_ROW_BLOCK elements the
    block max, a rescale of s (and sm) when the max grows, then the block's exps by a straight
    vectorisable loop.  With ``store`` the exps (relative to the max at that block, recorded in
    mrec[block]) also go to gr, which may be xr itself: each element is read before it is
    written, and xr is not read again."""
    n = xr.shape[0]
    m = -np.inf
    s = 0.0
    sm = 0.0
    wtot = 0.0
    j = 0
    b = 0
    while j < n:
        e = min(j + LOSS_ROW_BLOCK, n)
        bm = _block_max(xr, j, e)
        if bm > m:
            s = s * _exp(m - bm)
            if wtot != 0.0:
                sm += (bm - m) * wtot
            m = bm
        shift = m if m > -np.inf else 0.0
        L = e - j
        if wmode != 0:
            for k in range(L):
                v = np.float64(xr[j + k])
                w = weight[j + k] if wmode == 1 else weight[j + k] * (
                    keep * np.float64(q[j + k]) + es)
                sm += _shift_term(w, m, v)
                wtot += w
        xb = xr[j:e]
        if xr.itemsize == 4:  # float32 data: an exp accurate to float32 suffices
            for k in range(L):
                scratch[k] = _exp_single(np.float64(xb[k]) - shift)
        else:
            for k in range(L):
                scratch[k] = _exp(np.float64(xb[k]) - shift)
        s += _sum8(scratch, L)
        if store:
            # a separate copy loop: gr may be xr, and a loop that reads xb and writes the same
            # memory would fail LLVM's overlap check and run scalar
            mrec[b] = m
            gb = gr[j:e]
            for k in range(L):
                gb[k] = scratch[k]
        j = e
        b += 1
    return m, s, sm, wtot


@njit(inline="always", **JIT_OPTIONS)
def _scale_stored(gr, mrec, m, c, ce, weight, n):
    """gr[j] = c * exp(m_block - m) * gr[j] - ce * weight[j] (ce == 0: no weight term): the
    stored block exps rescaled to the final max (a multiply per element, no exp)."""
    j = 0
    b = 0
    while j < n:
        e = min(j + LOSS_ROW_BLOCK, n)
        f = c * _exp(mrec[b] - m)
        # (unsigned indices: a signed k from j kept Numba's negative-index wraparound, which
        # made a gather/scatter loop; see _prelu_block)
        if ce != 0.0:
            for k in range(e - j):
                i = np.uint64(j + k)
                gr[i] = f * np.float64(gr[i]) - ce * weight[i]
        else:
            for k in range(e - j):
                i = np.uint64(j + k)
                gr[i] = f * np.float64(gr[i])
        j = e
        b += 1


@njit(inline="always", **JIT_OPTIONS)
def _single_pinf(xr):
    """Position of the only +inf of the row when it has exactly one and no NaN, else -1."""
    k = -1
    for j in range(xr.shape[0]):
        v = xr[j]
        if v == np.inf:
            if k >= 0:
                return -1
            k = j
        elif v != v:
            return -1
    return k


def _ce_exp(v, mx):
    """exp(v - mx) in v's precision (float32: _math32.exp_poly, subnormal results kept)."""
    raise NotImplementedError("only callable in kernels")


@overload(_ce_exp, jit_options=JIT_OPTIONS)
def _ce_exp_typer(v, mx):
    if v == nbtypes.float32:
        exp32 = FORMULAS32["exp_poly"]

        def narrow(v, mx):
            return exp32(v - mx)
        return narrow

    def wide(v, mx):
        return _exp(v - mx)
    return wide


def _ce_scale(e, f):
    """f * e rounded to e's dtype: the stored exps scaled to gradients (f in float64)."""
    raise NotImplementedError("only callable in kernels")


@overload(_ce_scale, inline="always", jit_options=JIT_OPTIONS)
def _ce_scale_typer(e, f):
    return lambda e, f: f * np.float64(e)


@njit(inline="always", **JIT_OPTIONS)
def _ce_row_direct(x, r, t, mx, weight, wsum, smoothing, gs, want_grad, in_place, grad, row,
                   terms):
    """Cross-entropy of row r for the common case (class index, contiguous rows, finite row max
    ``mx``): the softmax rows' passes.  The row max by the vector code, the exps
    e = exp(x - max) in x's precision (float32: _math32.exp_poly, keeping subnormal results as
    the old path did) stored straight into the gradient row (into the scratch ``row`` when grad
    is x, or without a gradient), their float64 vector sum s, and the scale
    grad = gs (a e / s - es w), a = keep w_t + es sum(w), keep = 1 - smoothing,
    es = smoothing / C, less gs keep w_t at the target.  With label smoothing the loss also
    needs sum_j w_j (max - x_j) (terms >= 0, each its limit as _shift_term), summed from the
    float64 scratch ``terms``.  The online path (_online_row) rescans blocks, keeps float64
    scratch and copies it; this one reads the logits twice and the exps twice.
    cross_entropy_and_grad float32, numba, 2 threads (timeit, best of 7): 4000x1024
    4.56 -> 1.65 ms, 128x32000 4.24 -> 1.45 ms (softmax alone: 1.1 ms; Cython's online rows
    3.5 and 3.3 ms); benchmark group cross_entropy-and_grad."""
    n = x.shape[1]
    m = np.float64(mx)
    wt = weight[t]
    xt = np.float64(x[r, t])
    es = smoothing / n
    keep = 1.0 - smoothing
    if want_grad and not in_place:
        for j in range(n):
            grad[r, j] = _ce_exp(x[r, j], mx)
        s = _vector_row_sum(grad, r)
    else:
        for j in range(n):
            row[0, j] = _ce_exp(x[r, j], mx)
        s = _vector_row_sum(row, 0)
    ls = math.log(s)
    loss = 0.0 if wt == 0.0 else keep * wt * ((m - xt) + ls)
    if smoothing > 0.0:
        for j in range(n):
            terms[0, j] = _shift_term(weight[j], m, np.float64(x[r, j]))
        loss += es * (_vector_row_sum(terms, 0) + wsum * ls)
    if want_grad:
        a = keep * wt + es * wsum
        f = gs * a / s
        ce = gs * es
        if in_place:
            et = np.float64(row[0, t])
            if smoothing > 0.0:
                for j in range(n):
                    grad[r, j] = _ce_scale(row[0, j], f) - ce * weight[j]
            else:
                for j in range(n):
                    grad[r, j] = _ce_scale(row[0, j], f)
        else:
            et = np.float64(grad[r, t])
            if smoothing > 0.0:
                for j in range(n):
                    grad[r, j] = _ce_scale(grad[r, j], f) - ce * weight[j]
            else:
                for j in range(n):
                    grad[r, j] = _ce_scale(grad[r, j], f)
        # the target's p - 1 from the unrounded exp, rounded once (one class: exactly 0), the
        # same expression as _ce_row's
        grad[r, t] = gs * (a * (et / s) - (keep * wt + es * weight[t]))
    return loss


@njit(inline="always", **JIT_OPTIONS)
def _ce_direct(x, target, weight, wsum, ignore_index, smoothing, gs, want_grad, in_place, grad,
               r, row, terms):
    """(True, loss of row r) by _ce_row_direct where it applies (contiguous rows, a finite row
    max; an ignored row: a zero gradient), else (False, 0.0): the caller then runs _ce_row.
    Inlined into the kernels (small), while _ce_row stays one compiled call per row: the call
    passes seven arrays, whose reference counts both threads update atomically
    (cross_entropy_and_grad float32 128000x32, numba, 2 threads: 10.5 ms with the old rows,
    6.3 ms with _ce_row_direct called inside _ce_row, 3.8 ms inlined here; softmax 2.0 ms)."""
    if x.strides[1] != x.itemsize or (want_grad and grad.strides[1] != grad.itemsize):
        return False, 0.0
    t = target[r]
    if t == ignore_index:
        if want_grad:
            for j in range(x.shape[1]):
                grad[r, j] = 0.0
        return True, 0.0
    mx = _vector_row_max(x, r)
    if not -np.inf < mx < np.inf:
        return False, 0.0
    return True, _ce_row_direct(x, r, t, mx, weight, wsum, smoothing, gs, want_grad, in_place,
                                grad, row, terms)


@njit(inline="always", **JIT_OPTIONS)
def _ce_row(x, target, weight, wsum, ignore_index, smoothing, gs, want_grad, grad, r,
            scratch, mrec):
    """Cross-entropy of row r (class index target), returns the row's loss; writes
    gs * d loss / d x into grad[r] when want_grad (grad may be x)."""
    n = x.shape[1]
    t = target[r]
    if t == ignore_index:
        if want_grad:
            for j in range(n):
                grad[r, j] = 0.0
        return 0.0
    wt = weight[t]
    xr = x[r]
    es = smoothing / n
    keep = 1.0 - smoothing
    a = keep * wt + es * wsum
    xt = np.float64(xr[t])
    gr = grad[r] if want_grad else grad[0]
    k = _single_pinf(xr) if _block_max(xr, 0, n) == np.inf else -2
    if k >= 0:
        # the limit: probability 1 at the +inf logit, log-probability -inf elsewhere
        loss = 0.0 if (wt == 0.0 or t == k) else np.inf
        loss = 0.0 if keep == 0.0 else keep * loss
        if smoothing > 0.0:
            for j in range(n):
                if j != k and weight[j] != 0.0:
                    loss = np.inf
        if want_grad:
            for j in range(n):
                gr[j] = gs * ((a if j == k else 0.0) - es * weight[j])
            # the target's entry rounded once (one class: exactly 0)
            gr[t] = gs * ((a if t == k else 0.0) - (keep * wt + es * weight[t]))
        return loss
    if want_grad:
        m, s, sm, _ = _online_row(xr, xr, weight, keep, es, 1 if smoothing > 0.0 else 0,
                                  True, gr, mrec, scratch)
    else:
        m, s, sm, _ = _online_row(xr, xr, weight, keep, es, 1 if smoothing > 0.0 else 0,
                                  False, scratch, mrec, scratch)
    ls = math.log(s)
    loss = 0.0 if wt == 0.0 else keep * wt * (_shift_term(1.0, m, xt) + ls)
    if smoothing > 0.0:
        loss += es * (sm + wsum * ls)
    if want_grad:
        # the target's p - 1 from the unrounded product, rounded once (one class: exactly 0)
        # (p_t = et / s in float64, the same expression as the Cython kernel's)
        et = np.float64(gr[t]) * _exp(mrec[t // LOSS_ROW_BLOCK] - m)
        _scale_stored(gr, mrec, m, gs * a / s, gs * es, weight, n)
        gr[t] = gs * (a * (et / s) - (keep * wt + es * weight[t]))
    return loss


@njit(inline="always", **JIT_OPTIONS)
def _ce_prob_row(x, q, weight, smoothing, gs, want_grad, grad, r, scratch, mrec):
    """Cross-entropy of row r against class probabilities q[r] (grad may be x, not q)."""
    n = x.shape[1]
    xr = x[r]
    qr = q[r]
    es = smoothing / n
    keep = 1.0 - smoothing
    gr = grad[r] if want_grad else grad[0]
    if _block_max(xr, 0, n) == np.inf:
        k = _single_pinf(xr)
        if k >= 0:
            wq_sum = 0.0
            loss = 0.0
            for j in range(n):
                wq = weight[j] * (keep * np.float64(qr[j]) + es)
                wq_sum += wq
                if j != k and wq != 0.0:
                    loss = np.inf
            if want_grad:
                for j in range(n):
                    wq = weight[j] * (keep * np.float64(qr[j]) + es)
                    gr[j] = gs * ((wq_sum if j == k else 0.0) - wq)
            return loss
    if want_grad:
        m, s, sm, wq_sum = _online_row(xr, qr, weight, keep, es, 2, True, gr, mrec, scratch)
    else:
        m, s, sm, wq_sum = _online_row(xr, qr, weight, keep, es, 2, False, scratch, mrec,
                                       scratch)
    ls = math.log(s)
    loss = sm + (0.0 if wq_sum == 0.0 else wq_sum * ls)
    if want_grad:
        _scale_stored(gr, mrec, m, gs * wq_sum / s, 0.0, weight, n)
        for j in range(n):
            gr[j] = gr[j] - gs * (weight[j] * (keep * np.float64(qr[j]) + es))
    return loss


# The row bodies above are inlined into exactly two compiled functions each, one with the
# gradient and one without (the literal want_grad folds away the other branch), which the
# kernels then call once per row.  Inlining them straight into every kernel compiled the heavy
# body six times (three forms x parallel/serial twins): a cold `fa.warmup(["cross_entropy"])`
# took 237 s, now 71 s.  Passing want_grad as a run-time argument to one compiled function
# instead made the forward 1.7x slower (its store branch stays in the vector loop).  The row
# index goes in as np.int64: a prange index is unsigned, a range index signed, and each would
# compile its own copy.
@njit(**JIT_OPTIONS)
def _ce_row_loss(x, target, weight, wsum, ignore_index, smoothing, r, scratch, mrec):
    return _ce_row(x, target, weight, wsum, ignore_index, smoothing, 1.0, False, x, r,
                   scratch, mrec)


@njit(**JIT_OPTIONS)
def _ce_row_grad(x, target, weight, wsum, ignore_index, smoothing, gs, grad, r, scratch, mrec):
    return _ce_row(x, target, weight, wsum, ignore_index, smoothing, gs, True, grad, r,
                   scratch, mrec)


@njit(**JIT_OPTIONS)
def _ce_prob_row_loss(x, q, weight, smoothing, r, scratch, mrec):
    return _ce_prob_row(x, q, weight, smoothing, 1.0, False, x, r, scratch, mrec)


@njit(**JIT_OPTIONS)
def _ce_prob_row_grad(x, q, weight, smoothing, gs, grad, r, scratch, mrec):
    return _ce_prob_row(x, q, weight, smoothing, gs, True, grad, r, scratch, mrec)


# cross_entropy rows go in chunks of about ROW_TASK_ELEMENTS elements, each with one scratch
# block and one block-max record: allocated per row, the two arrays cost more than the row itself
# on short rows (cross_entropy_and_grad float32 128000x32, numba, 2 threads: 13.2 -> 10.9 ms).
_LOSS_ROW_TEMPLATE = """
def cross_entropy_forward__{variant}(x, target, weight, ignore_index, smoothing, loss):
    wsum = _sum8(weight, weight.size)
    keep_row = True
    per = max(1, ROW_TASK_ELEMENTS // max(1, x.shape[1]))
    for t in {loop}((x.shape[0] + per - 1) // per):
        scratch = np.empty(LOSS_ROW_BLOCK, np.float64)
        mrec = np.empty((x.shape[1] + LOSS_ROW_BLOCK - 1) // LOSS_ROW_BLOCK + 1, np.float64)
        row = np.empty((1, x.shape[1] if keep_row else 1), x.dtype)
        terms = np.empty((1, x.shape[1] if smoothing > 0.0 else 1), np.float64)
        start = np.int64(t) * per
        for r in range(start, min(start + per, x.shape[0])):
            ok, v = _ce_direct(x, target, weight, wsum, ignore_index, smoothing, 1.0, False,
                               False, x, r, row, terms)
            loss[r] = v if ok else _ce_row_loss(x, target, weight, wsum, ignore_index, smoothing,
                                                np.int64(r), scratch, mrec)


def cross_entropy_and_grad__{variant}(x, target, weight, ignore_index, smoothing, g, loss, grad):
    wsum = _sum8(weight, weight.size)
    keep_row = grad.ctypes.data == x.ctypes.data  # (_ce_row_direct's scratch row)
    per_row = g.size > 1
    per = max(1, ROW_TASK_ELEMENTS // max(1, x.shape[1]))
    for t in {loop}((x.shape[0] + per - 1) // per):
        scratch = np.empty(LOSS_ROW_BLOCK, np.float64)
        mrec = np.empty((x.shape[1] + LOSS_ROW_BLOCK - 1) // LOSS_ROW_BLOCK + 1, np.float64)
        row = np.empty((1, x.shape[1] if keep_row else 1), x.dtype)
        terms = np.empty((1, x.shape[1] if smoothing > 0.0 else 1), np.float64)
        start = np.int64(t) * per
        for r in range(start, min(start + per, x.shape[0])):
            gs = g[r] if per_row else g[0]
            ok, v = _ce_direct(x, target, weight, wsum, ignore_index, smoothing, gs, True,
                               keep_row, grad, r, row, terms)
            loss[r] = v if ok else _ce_row_grad(x, target, weight, wsum, ignore_index, smoothing,
                                                gs, grad, np.int64(r), scratch, mrec)


def cross_entropy_backward__{variant}(gl, x, target, weight, ignore_index, smoothing, grad):
    wsum = _sum8(weight, weight.size)
    keep_row = grad.ctypes.data == x.ctypes.data  # (_ce_row_direct's scratch row)
    per_row = gl.size > 1
    per = max(1, ROW_TASK_ELEMENTS // max(1, x.shape[1]))
    for t in {loop}((x.shape[0] + per - 1) // per):
        scratch = np.empty(LOSS_ROW_BLOCK, np.float64)
        mrec = np.empty((x.shape[1] + LOSS_ROW_BLOCK - 1) // LOSS_ROW_BLOCK + 1, np.float64)
        row = np.empty((1, x.shape[1] if keep_row else 1), x.dtype)
        terms = np.empty((1, x.shape[1] if smoothing > 0.0 else 1), np.float64)
        start = np.int64(t) * per
        for r in range(start, min(start + per, x.shape[0])):
            gs = gl[r] if per_row else gl[0]
            ok, _ = _ce_direct(x, target, weight, wsum, ignore_index, smoothing, gs, True,
                               keep_row, grad, r, row, terms)
            if not ok:
                _ce_row_grad(x, target, weight, wsum, ignore_index, smoothing, gs, grad,
                             np.int64(r), scratch, mrec)


def cross_entropy_prob_forward__{variant}(x, q, weight, smoothing, loss):
    per = max(1, ROW_TASK_ELEMENTS // max(1, x.shape[1]))
    for t in {loop}((x.shape[0] + per - 1) // per):
        scratch = np.empty(LOSS_ROW_BLOCK, np.float64)
        mrec = np.empty((x.shape[1] + LOSS_ROW_BLOCK - 1) // LOSS_ROW_BLOCK + 1, np.float64)
        start = np.int64(t) * per
        for r in range(start, min(start + per, x.shape[0])):
            loss[r] = _ce_prob_row_loss(x, q, weight, smoothing, np.int64(r), scratch, mrec)


def cross_entropy_prob_and_grad__{variant}(x, q, weight, smoothing, g, loss, grad):
    per_row = g.size > 1
    per = max(1, ROW_TASK_ELEMENTS // max(1, x.shape[1]))
    for t in {loop}((x.shape[0] + per - 1) // per):
        scratch = np.empty(LOSS_ROW_BLOCK, np.float64)
        mrec = np.empty((x.shape[1] + LOSS_ROW_BLOCK - 1) // LOSS_ROW_BLOCK + 1, np.float64)
        start = np.int64(t) * per
        for r in range(start, min(start + per, x.shape[0])):
            gs = g[r] if per_row else g[0]
            loss[r] = _ce_prob_row_grad(x, q, weight, smoothing, gs, grad, np.int64(r), scratch,
                                        mrec)


def cross_entropy_prob_backward__{variant}(gl, x, q, weight, smoothing, grad):
    per_row = gl.size > 1
    per = max(1, ROW_TASK_ELEMENTS // max(1, x.shape[1]))
    for t in {loop}((x.shape[0] + per - 1) // per):
        scratch = np.empty(LOSS_ROW_BLOCK, np.float64)
        mrec = np.empty((x.shape[1] + LOSS_ROW_BLOCK - 1) // LOSS_ROW_BLOCK + 1, np.float64)
        start = np.int64(t) * per
        for r in range(start, min(start + per, x.shape[0])):
            gs = gl[r] if per_row else gl[0]
            _ce_prob_row_grad(x, q, weight, smoothing, gs, grad, np.int64(r), scratch, mrec)


def nll_loss_forward__{variant}(x, target, weight, ignore_index, loss):
    # (written out: through _nll_row, each row cost ~11 ns, reference counting of the arrays
    # passed into the helper inside the loop; 1,000 rows 11.0 -> ~1.4 us)
    for r in {loop}(x.shape[0]):
        t = target[r]
        wt = 0.0 if t == ignore_index else weight[t]
        loss[r] = 0.0 if wt == 0.0 else -wt * np.float64(x[r, t])


def nll_loss_and_grad__{variant}(x, target, weight, ignore_index, g, loss, grad):
    per_row = g.size > 1
    for r in {loop}(x.shape[0]):
        gs = g[r] if per_row else g[0]
        t = target[r]
        wt = 0.0 if t == ignore_index else weight[t]
        # (the loss first: grad may be x itself, out=input)
        loss[r] = 0.0 if wt == 0.0 else -wt * np.float64(x[r, t])
        for j in range(x.shape[1]):
            grad[r, j] = 0.0
        if t != ignore_index:
            grad[r, t] = -gs * wt


def nll_loss_backward__{variant}(gl, x, target, weight, ignore_index, grad):
    per_row = gl.size > 1
    for r in {loop}(x.shape[0]):
        gs = gl[r] if per_row else gl[0]
        t = target[r]
        for j in range(x.shape[1]):
            grad[r, j] = 0.0
        if t != ignore_index:
            grad[r, t] = -gs * weight[t]
"""

# Vectorisable loops: the per-block sum is a separate 8-lane pass (_sum8) over the block's
# values (a float `acc +=` in the value loop is a reduction LLVM may not reorder without
# fastmath), and a weight given once or per element is read as w[i * stride] with stride 0 or
# 1 (`w[i] if wn else w[0]` is a conditional load, which kept the loop scalar).  Benchmark
# group losses, float32 1e7, numba, 2 threads: binary_cross_entropy_with_logits 240 -> 58 ms,
# huber_loss_and_grad 50 -> 15 ms.
# Two things kept these loops scalar (and the parallel twin as slow as the serial one):
# * ``vals[i - start]`` over ``range(start, stop)``: Numba wraps negative indices and LLVM could
#   not prove i - start >= 0, so each access kept a select.  The blocks count k from 0.
# * ``w[i * ws]`` with a stride ws of 0 (one weight for all) or 1: inside a prange body ws is an
#   opaque argument, so the access was a strided gather.  ``w[i] if full else w0`` with a
#   loop-invariant ``full`` is unswitched by LLVM into two contiguous loops.
# kl_div forward, float64 1e6: 1 thread 22.5 -> 3.5 ms, 2 threads 11.2 -> 2.3 ms (benchmark
# group kl_div-forward).
_LOSS_ELEMENTWISE_TEMPLATE = """
def {name}_forward__{variant}(x, y, w, pw, p, out, partial):
    n = x.size
    w_full, w0 = w.size > 1, w[0]  # (w, pw: one value for all, or one per element)
    pw_full, pw0 = pw.size > 1, pw[0]
    keep = out.size > 0
    for b in {loop}(partial.size):
        start = b * LOSS_BLOCK
        m = min(LOSS_BLOCK, n - start)
        vals = np.empty(LOSS_BLOCK, np.float64)
        for k in range(m):
            i = start + k
            wi = w[i] if w_full else w0
            v = F_{name}_value(np.float64(x[i]), np.float64(y[i]), {param})
            vals[k] = 0.0 if wi == 0.0 else wi * v
        if keep:
            for k in range(m):
                out[start + k] = vals[k]
        partial[b] = _sum8(vals, m)


def {name}_and_grad__{variant}(x, y, w, pw, p, g, out, grad, partial):
    n = x.size
    w_full, w0 = w.size > 1, w[0]
    pw_full, pw0 = pw.size > 1, pw[0]
    keep = out.size > 0
    gs = g[0]
    for b in {loop}(partial.size):
        start = b * LOSS_BLOCK
        m = min(LOSS_BLOCK, n - start)
        vals = np.empty(LOSS_BLOCK, np.float64)
        for k in range(m):
            i = start + k
            wi = w[i] if w_full else w0
            xi = np.float64(x[i])
            yi = np.float64(y[i])
            pi = {param}
            v = F_{name}_value(xi, yi, pi)
            vals[k] = 0.0 if wi == 0.0 else wi * v
            grad[i] = gs * wi * F_{name}_grad(xi, yi, pi)
        if keep:
            for k in range(m):
                out[start + k] = vals[k]
        partial[b] = _sum8(vals, m)


def {name}_backward__{variant}(gl, x, y, w, pw, p, grad):
    n = x.size
    w_full, w0 = w.size > 1, w[0]
    pw_full, pw0 = pw.size > 1, pw[0]
    gl_full, gl0 = gl.size > 1, gl[0]
    for i in {loop}(n):
        wi = w[i] if w_full else w0
        gi = gl[i] if gl_full else gl0
        grad[i] = gi * wi * F_{name}_grad(np.float64(x[i]), np.float64(y[i]), {param})
"""

#: elementwise losses whose formula parameter is the per-element pos_weight
_POS_WEIGHT_LOSSES = ("binary_cross_entropy_with_logits",)
#: elementwise losses whose parameter is a 0/1 flag that selects a branch of the formula
#: (kl_div: log_target); their kernels are written out once per value (_split_on_flag)
_FLAG_LOSSES = ("kl_div",)


def _split_on_flag(source: str, placeholder: str) -> str:
    """Each function of ``source`` with its body written twice, under ``if p == 0.0`` with the
    literal 0.0 for ``placeholder`` and under ``else`` with 1.0.  A formula that selects on the
    flag computes both branches for every element (a select is branch-free, and LLVM does not
    unswitch a loop on it); with a literal the other branch folds away.  kl_div (log_target
    False: the exp was computed and dropped), numba, 2 threads, 1e6 elements, timeit best of
    7: float32 2.25 -> 1.69 ms (and_grad 3.43 -> 2.19 ms), float64 2.28 -> 1.77 ms (and_grad
    11.7 -> 7.3 ms); benchmark group kl_div."""
    functions = source.strip("\n").split("\n\n\n")
    out = []
    for fn in functions:
        head, body = fn.split("\n", 1)
        inner = "\n".join("    " + line if line else line for line in body.split("\n"))
        out.append(f"{head}\n    if p == 0.0:\n{inner.replace(placeholder, '0.0')}\n"
                   f"    else:\n{inner.replace(placeholder, '1.0')}\n")
    return "\n\n" + "\n\n".join(out) + "\n"


def _build_losses() -> dict:
    chunks = []
    for variant, loop in (("parallel", "prange"), ("serial", "range")):
        chunks.append(_LOSS_ROW_TEMPLATE.format(variant=variant, loop=loop))
        for spec in _registry.loss_ops():
            if spec.extra["layout"] != "elementwise":
                continue
            param = "(pw[i] if pw_full else pw0)" if spec.name in _POS_WEIGHT_LOSSES else "p"
            flag = spec.name in _FLAG_LOSSES
            text = _LOSS_ELEMENTWISE_TEMPLATE.format(
                name=spec.name, variant=variant, loop=loop, param="_FLAG_" if flag else param)
            chunks.append(_split_on_flag(text, "_FLAG_") if flag else text)
    source = "".join(chunks)
    filename = _LOSSES_FILENAME
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    ns = _namespace()
    ns.update(LOSS_BLOCK=LOSS_BLOCK, LOSS_ROW_BLOCK=LOSS_ROW_BLOCK, math=math,
              ROW_TASK_ELEMENTS=ROW_TASK_ELEMENTS)
    exec(compile(source, filename, "exec"), ns)
    kernels = {}
    for spec in _registry.loss_ops():
        for kname in spec.kernel_names():
            # work size: x (the first or, for backward, the second argument); nll_loss's
            # forward reads one element per row, so its target's size (the rows): 1,000 rows
            # of 1,000 went parallel and took 57-65 us where Cython took 26-30 (suite 07e,
            # nll_loss-forward-float32-1e5/1e6)
            size_index = (1 if kname.endswith("_backward") or kname == "nll_loss_forward"
                          else 0)
            kernels[kname] = _Kernel(kname, ns[f"{kname}__parallel"], ns[f"{kname}__serial"],
                                     size_index)
    return kernels


LOSS_KERNELS = _build_losses()
KERNELS.update(LOSS_KERNELS)
globals().update(LOSS_KERNELS)
