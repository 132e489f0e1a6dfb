"""Argument checks and buffer allocation, in one place (DESIGN.md section 3).

Everything here runs before any kernel: a bad argument raises with the public function's name
(``fastact.sigmoid: out has shape (3,), expected (4,)``) and nothing has been written.  The
kernels then see only C-contiguous native float32/float64 arrays: 1-D for elementwise ops,
``(rows, C)`` for row-wise ops.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from . import _registry

try:
    from numpy.exceptions import AxisError
except ImportError:  # pragma: no cover - numpy < 1.25
    AxisError = np.AxisError

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
_SUPPORTED = (F16, F32, F64)
#: every accepted dtype (either byte order) -> its native twin; one dict lookup per call
_NATIVE = {d.newbyteorder(order): d for d in _SUPPORTED for order in "<>="}
#: native dtype -> its name, for the dispatch table: ``dtype.name`` is a Python property of
#: NumPy's that costs ~1.8 us, an eighth of a call's overhead on 1,000 elements
DTYPE_NAMES = {d: d.name for d in _SUPPORTED}


def _hint(fname: str, argname: str, what: str) -> TypeError:
    return TypeError(
        f"{fname}: {argname} must be a float16, float32 or float64 array, got {what}; "
        f"convert it first, e.g. {argname}.astype(np.float32)")


def as_array(fname: str, argname: str, obj) -> np.ndarray:
    """The input as an ndarray of a supported float dtype (any layout, any byte order).

    NumPy arrays and scalars keep their dtype (float16/32/64 only); Python floats and ints and
    (nested) lists of them become float64.
    """
    if isinstance(obj, np.ndarray) or isinstance(obj, np.generic):
        if type(obj) is not np.ndarray and isinstance(obj, _masked_array_type()):
            # computing on .data would silently ignore the mask
            raise TypeError(
                f"{fname}: {argname} is a masked array; fastact does not apply masks: pass "
                f"{argname}.filled(value) (or where= to the softmax family)")
        a = obj if type(obj) is np.ndarray else np.asarray(obj)
        if a.dtype not in _NATIVE:
            raise _hint(fname, argname, f"dtype {a.dtype}")
        return a
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, bytes)):
        raise _hint(fname, argname, type(obj).__name__)
    if isinstance(obj, (int, float, list, tuple)):
        try:
            a = np.asarray(obj)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{fname}: {argname} is not a rectangular list of numbers ({exc})")
        if a.dtype.kind not in "iuf":
            raise _hint(fname, argname, f"a list of {a.dtype} values")
        return a.astype(F64)
    from ._device import is_device_array  # only on this error path

    if is_device_array(obj):
        raise TypeError(f"{fname}: {argname} is a CUDA device array, but this function has no "
                        "CUDA path yet; pass a NumPy array")
    raise _hint(fname, argname, f"{type(obj).__module__}.{type(obj).__name__}")


def _masked_array_type():
    import numpy.ma  # only reached for ndarray subclasses

    return numpy.ma.MaskedArray


def result_dtype(*arrays: np.ndarray) -> np.dtype:
    first = _NATIVE[arrays[0].dtype]
    if all(_NATIVE[a.dtype] == first for a in arrays[1:]):
        return first
    return np.result_type(*[_NATIVE[a.dtype] for a in arrays])


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """float16 is computed in float32 and rounded once at the end."""
    return F32 if dtype == F16 else dtype


def same_shape(fname: str, named: dict[str, np.ndarray]) -> tuple[int, ...]:
    items = list(named.items())
    shape = items[0][1].shape
    for name, a in items[1:]:
        if a.shape != shape:
            raise ValueError(f"{fname}: {name} has shape {a.shape}, expected {shape} "
                             f"(the shape of {items[0][0]}; fastact does not broadcast)")
    return shape


def flat(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """C-contiguous native 1-D view (or copy) in the compute dtype."""
    if a.dtype == dtype and a.flags.c_contiguous:
        return a.reshape(-1)
    return np.ascontiguousarray(a, dtype=dtype).reshape(-1)


# --- scalar parameters -------------------------------------------------------------------------

def real_param(fname: str, name: str, value, check: str = "finite") -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
            value = value.item()
        else:
            raise TypeError(f"{fname}: {name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{fname}: {name} must be finite, got {value}")
    if check == "positive" and not value > 0:
        raise ValueError(f"{fname}: {name} must be > 0, got {value}")
    if check == "nonnegative" and not value >= 0:
        raise ValueError(f"{fname}: {name} must be >= 0, got {value}")
    if check == "nonzero" and value == 0:
        raise ValueError(f"{fname}: {name} must not be 0 (it divides x)")
    return value


def choice_param(fname: str, param, value) -> float:
    """Index (as a float, the kernels' parameter type) of a string parameter's value."""
    if not isinstance(value, str) or value not in param.choices:
        allowed = " or ".join(repr(c) for c in param.choices)
        raise ValueError(f"{fname}: {param.name} must be {allowed}, got {value!r}")
    return float(param.choices.index(value))


def params(fname: str, spec: _registry.OpSpec, values: dict) -> tuple[float, ...]:
    result = tuple(choice_param(fname, p, values[p.name]) if p.choices
                   else real_param(fname, p.name, values[p.name], p.check) for p in spec.params)
    ordered = spec.extra.get("ordered")
    if ordered:  # e.g. hardtanh: min_val <= max_val
        lo, hi = (result[spec.param_names.index(n)] for n in ordered)
        if lo > hi:
            raise ValueError(f"{fname}: {ordered[0]} must be <= {ordered[1]}, got "
                             f"{ordered[0]}={lo} > {ordered[1]}={hi}")
    return result


def normalize_axis(fname: str, axis, ndim: int) -> int:
    try:
        axis = operator.index(axis)
    except TypeError:
        raise TypeError(f"{fname}: axis must be an integer, got {type(axis).__name__}") from None
    n = max(ndim, 1)  # a 0-d array is one row of one element
    if not -n <= axis < n:
        raise AxisError(axis, n, fname)
    return axis % n


def gated_layout(fname: str, split: bool, named: dict, axis):
    """(input shape, output shape, rows, width, stride) of a gated unit's operands.

    glu (``split``): x is viewed as ``rows`` rows of [value half | gate half] along ``axis``,
    each half ``width`` contiguous elements of a C-ordered x (stride 2 * width); grad, if given,
    must have x's shape with that axis halved.  swiglu/geglu: a, b (and grad) of one shape, one
    row.  ``named`` maps argument names to arrays (anything with ``.shape``).
    """
    if not split:
        # a first, so a mismatch names b (or grad)
        shape = same_shape(fname, {k: named[k] for k in ("a", "b", "grad") if k in named})
        n = math.prod(shape)
        return shape, shape, 1, n, n
    x = named["x"]
    if len(x.shape) == 0:
        raise ValueError(f"{fname}: x is 0-d; glu splits x in two halves along axis, so x "
                         "needs at least one dimension")
    ax = normalize_axis(fname, axis, len(x.shape))
    n = x.shape[ax]
    if n % 2:
        raise ValueError(f"{fname}: x has odd size {n} along axis {axis}; glu splits that "
                         "axis into two equal halves")
    half = x.shape[:ax] + (n // 2,) + x.shape[ax + 1:]
    if "grad" in named and named["grad"].shape != half:
        raise ValueError(f"{fname}: grad has shape {named['grad'].shape}, expected {half} "
                         f"(x's shape {x.shape} with axis {axis} halved)")
    width = n // 2 * math.prod(x.shape[ax + 1:])
    return x.shape, half, math.prod(x.shape[:ax]), width, 2 * width


# --- outputs -------------------------------------------------------------------------------------

def check_out(fname: str, argname: str, out, shape: tuple, dtype: np.dtype):
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{fname}: {argname} must be a NumPy array or None, "
                        f"got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"{fname}: {argname} has shape {out.shape}, expected {shape}")
    if _NATIVE.get(out.dtype) != dtype:
        raise TypeError(f"{fname}: {argname} has dtype {out.dtype}, expected {dtype}")
    if not out.flags.writeable:
        raise ValueError(f"{fname}: {argname} is read-only")
    if type(out) is not np.ndarray:
        if isinstance(out, _masked_array_type()):
            raise TypeError(f"{fname}: {argname} is a masked array; pass a plain ndarray "
                            f"(its mask would hide results)")
    if out.size > 1 and not out.flags.c_contiguous and not out.flags.f_contiguous:
        span = sum((n - 1) * abs(st) for n, st in zip(out.shape, out.strides)) + out.itemsize
        if span < out.size * out.itemsize:  # e.g. a writable zero-stride (broadcast) view
            raise ValueError(f"{fname}: {argname} has overlapping elements (strides "
                             f"{out.strides}); each result needs its own memory")
    return out


def check_out_pair(fname: str, out, shape: tuple, dtype: np.dtype):
    """``out`` of a two-result function: None or a 2-tuple of None/arrays that do not overlap."""
    if out is None:
        return None, None
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(f"{fname}: out must be a 2-tuple of arrays (or None), "
                        f"got {type(out).__name__}")
    first = check_out(fname, "out[0]", out[0], shape, dtype)
    second = check_out(fname, "out[1]", out[1], shape, dtype)
    if first is not None and second is not None and np.shares_memory(first, second):
        raise ValueError(f"{fname}: out[0] and out[1] overlap; they must be distinct buffers")
    return first, second


def _data_pointer(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


#: Fresh loss gradients from this many bytes are placed apart from the inputs (see empty_apart).
APART_BYTES = 1 << 20
_PAGE = 4096


def empty_apart(shape: tuple, dtype: np.dtype, inputs) -> np.ndarray:
    """``np.empty(shape, dtype)``, placed so that its address is far, modulo 4096, from every
    input array's: a store and a later load whose addresses agree in their low 12 bits are
    taken as dependent by the CPU's memory disambiguation ("4K aliasing"), and a kernel whose
    output trails an input by a few hundred bytes modulo a page stalls on every vector.
    Measured (kl_div_and_grad, float64, 1e6, numba, 2 threads): 7.4-7.5 ms where the gradient
    lay 528 bytes after the target modulo 4096, 2.4-2.6 ms elsewhere; where the allocator put a
    fresh gradient decided which one a process got.  Large outputs only (APART_BYTES): the
    offset costs a 4096-byte larger allocation and ~1 us."""
    dtype = np.dtype(dtype)
    nbytes = dtype.itemsize
    for n in shape:
        nbytes *= n
    addrs = [a.__array_interface__["data"][0] for a in inputs
             if isinstance(a, np.ndarray) and a.nbytes >= _PAGE]
    if nbytes < APART_BYTES or not addrs:
        return np.empty(shape, dtype)
    raw = np.empty(nbytes + _PAGE, np.uint8)
    base = raw.__array_interface__["data"][0]
    best, best_distance = 0, -1
    for offset in range(0, _PAGE, 512):  # (keeps the allocation's alignment)
        distance = min(min((base + offset - a) % _PAGE, (a - base - offset) % _PAGE)
                       for a in addrs)
        if distance > best_distance:
            best, best_distance = offset, distance
    return raw[best:best + nbytes].view(dtype).reshape(shape)


def kernel_buffer(out, shape: tuple, dtype: np.dtype, inputs, apart: bool = False) -> np.ndarray:
    """The C-contiguous compute-dtype array the kernel writes to.

    It is ``out`` itself when that is safe: right dtype, C-contiguous, and either disjoint from
    every kernel input or exactly the same memory as it (in place, element i read before
    element i is written).  Otherwise a fresh buffer, copied into ``out`` by :func:`deliver`;
    with ``apart`` placed by :func:`empty_apart`.  Only the elementwise losses ask for that:
    for the memory-bound elementwise ops the larger allocation cost more than it saved
    (1e6 float32, 2 threads, alternating runs: relu 60 -> 68 us, leaky_relu 104 -> 110 us).
    """
    make = empty_apart if apart else (lambda shape, dtype, inputs: np.empty(shape, dtype))
    if out is None:
        return make(shape, dtype, inputs)
    if (out.dtype == dtype and out.flags.c_contiguous
            and all(_safe_alias(out, a) for a in inputs)):
        return out.reshape(-1) if out.ndim == 0 else out
    return make(shape, dtype, inputs)


def _safe_alias(out: np.ndarray, a) -> bool:
    if not isinstance(a, np.ndarray) or not np.may_share_memory(out, a):
        return True
    return (_data_pointer(out) == _data_pointer(a) and out.size == a.size
            and a.flags.c_contiguous and a.dtype == out.dtype)


def deliver(out, buffer: np.ndarray, shape: tuple, dtype: np.dtype):
    """Return the result: ``out`` (filled) if given, else a new C-contiguous array."""
    result = buffer.reshape(shape) if buffer.shape != shape else buffer
    if out is None and result.dtype == dtype:
        return result
    # float32 -> float16 rounding overflows to inf by design: no RuntimeWarning for it
    with np.errstate(over="ignore"):
        if out is None:
            return result.astype(dtype)
        if not np.may_share_memory(out, buffer):
            np.copyto(out, result)
    return out
