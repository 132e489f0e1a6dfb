"""CUDA device arrays in, device arrays of the same kind out (DESIGN.md sections 2 and 3).

Every public function accepts CUDA device arrays: objects with ``__cuda_array_interface__``
(Numba device arrays, CuPy arrays, PyTorch CUDA tensors) and the CUDA simulator's arrays
(``NUMBA_ENABLE_CUDASIM=1``).  The call is validated exactly as for NumPy input (same checks in
the same order, same messages: dtype, shape, parameters, axis, ``out``), from shapes and dtypes
only, without a host copy; then the ``cuda`` backend computes on the device.

* Inputs are viewed zero-copy as Numba device arrays (``numba.cuda.as_cuda_array``); a
  non-contiguous, float16 or broadcast input gets a contiguous compute-dtype copy made on the
  device (a strided copy kernel).  Inputs are never written.
* Results come back as the input's kind: a Numba device array for Numba (and simulator) input,
  a CuPy array for CuPy input, a torch tensor on the input's device for PyTorch input (allocated
  by that library, so its memory pool is used).  ``out=`` must be a device array; the same
  contract as on the host holds (shape -> ValueError, dtype -> TypeError, it may be an input
  itself, the two ``out`` items of ``_and_derivative`` must not overlap, a strided ``out`` is
  written through its strides).
* Kernels run on the input's current stream: CuPy's ``cupy.cuda.get_current_stream()``,
  PyTorch's ``torch.cuda.current_stream()``, a Numba array's own ``stream`` (default stream
  otherwise).  No synchronisation is forced: results are ready in stream order.
* Automatic dispatch picks ``cuda`` for device arrays; a host backend requested by name (the
  ``backend=`` argument, ``use_backend`` or ``FASTACT_BACKEND``) with device input raises
  TypeError (host kernels cannot read device memory).  Mixing host and device arrays in one
  call raises TypeError.

``numba.cuda`` is imported only here and only when a device array is passed.
"""

from __future__ import annotations

import math

import numpy as np

from . import _dispatch, _registry, _validate

_SIM_MODULE = "numba.cuda.simulator"

#: row ops the CUDA row kernel computes: name -> (log, sign) (softmin = softmax of -x); the
#: same table as ``numba_cuda.ROW_OPS``, kept here so that no numba.cuda import is needed
_ROW_OPS = {"softmax": (False, 1.0), "log_softmax": (True, 1.0), "softmin": (False, -1.0),
            "logsumexp": (False, 1.0)}


def is_device_array(obj) -> bool:
    """True for a CUDA device array (checked without importing numba.cuda)."""
    t = type(obj)
    if t is np.ndarray:
        return False
    if hasattr(obj, "__cuda_array_interface__"):  # a torch CPU tensor raises AttributeError
        return True
    return t.__name__ == "FakeCUDAArray" and t.__module__.startswith(_SIM_MODULE)


def any_device(values) -> bool:
    for v in values:
        if type(v) is not np.ndarray and is_device_array(v):
            return True
    return False


def _kind(obj) -> str:
    mod = type(obj).__module__
    if mod.startswith("cupy"):
        return "cupy"
    if mod.startswith("torch"):
        return "torch"
    return "numba"


def _cuda():
    from numba import cuda

    return cuda


def _kernels():
    return _dispatch._load("cuda")


class _Dev:
    """A device input: the user's object, its zero-copy Numba view, and its kind."""

    __slots__ = ("obj", "arr", "kind", "shape", "dtype")

    def __init__(self, obj, arr, kind):
        self.obj, self.arr, self.kind = obj, arr, kind
        self.shape = tuple(int(s) for s in arr.shape)
        self.dtype = np.dtype(arr.dtype)


def _as_numba(obj):
    cuda = _cuda()
    if type(obj).__module__.startswith("numba"):
        return obj
    return cuda.as_cuda_array(obj, sync=False)


def as_device(fname: str, argname: str, obj) -> _Dev:
    """Validate a device input's dtype (the host message) and view it as a Numba array."""
    kind = _kind(obj)
    if kind == "torch":
        import torch

        if obj.dtype not in (torch.float16, torch.float32, torch.float64):
            raise _validate._hint(fname, argname, f"dtype {obj.dtype}")
    try:
        arr = _as_numba(obj)
    except Exception as exc:
        raise TypeError(f"{fname}: {argname} is not a usable CUDA array ({exc})") from None
    dev = _Dev(obj, arr, kind)
    if dev.dtype not in _validate._NATIVE:
        raise _validate._hint(fname, argname, f"dtype {dev.dtype}")
    return dev


def _mixed(fname: str, arrays: dict):
    if len(arrays) == 1:
        return
    first = next(k for k, v in arrays.items() if is_device_array(v))
    for k, v in arrays.items():
        if not is_device_array(v):
            raise TypeError(f"{fname}: {k} is a host {type(v).__name__} but {first} is a CUDA "
                            "device array; pass all arrays on the device (or all on the host)")


def _resolve(fname: str, argname: str, backend):
    name, module = _dispatch.resolve(backend, device=True)
    if name != "cuda":
        raise TypeError(f"{fname}: {argname} is a CUDA device array, but backend {name!r} "
                        "computes on host arrays only; use backend='cuda' (or None)")
    return module


class _Stream:
    """Launch on the input's current stream for the duration of a call."""

    def __init__(self, module, ref: _Dev):
        self.module, self.stream = module, _stream_of(ref)

    def __enter__(self):
        # None (the default stream) is the variable's default: nothing to set in the common case
        self.token = None if self.stream is None and self.module.STREAM.get() is None \
            else self.module.STREAM.set(self.stream)
        return self

    def __exit__(self, *exc):
        if self.token is not None:
            self.module.STREAM.reset(self.token)


#: Numba wrappers of external (CuPy / PyTorch) streams, by handle: one object per stream, so
#: the launch-configuration cache (keyed by stream) stays small
_EXTERNAL_STREAMS: dict[int, object] = {}


def _external(ptr: int):
    if not ptr:
        return None  # the legacy default stream
    stream = _EXTERNAL_STREAMS.get(ptr)
    if stream is None:
        if len(_EXTERNAL_STREAMS) > 256:
            _EXTERNAL_STREAMS.clear()
        stream = _EXTERNAL_STREAMS[ptr] = _cuda().external_stream(ptr)
    return stream


def _stream_of(ref: _Dev):
    if ref.kind == "cupy":
        import cupy

        return _external(cupy.cuda.get_current_stream().ptr)
    if ref.kind == "torch":
        import torch

        return _external(torch.cuda.current_stream(ref.obj.device).cuda_stream)
    stream = getattr(ref.arr, "stream", 0)
    return stream if stream and not isinstance(stream, int) else None


# --- memory: pointers, overlap, allocation, copies -------------------------------------------

def _pointer(arr) -> int:
    cai = getattr(arr, "__cuda_array_interface__", None)
    if cai is not None:
        return int(cai["data"][0] or 0)
    return arr._ary.__array_interface__["data"][0]  # simulator: host memory underneath


def _extent(arr) -> tuple[int, int]:
    lo = hi = _pointer(arr)
    for n, st in zip(arr.shape, arr.strides):
        if n == 0:
            return lo, lo
        if st >= 0:
            hi += (n - 1) * st
        else:
            lo += (n - 1) * st
    return lo, hi + np.dtype(arr.dtype).itemsize


def _overlap(a, b) -> bool:
    (alo, ahi), (blo, bhi) = _extent(a), _extent(b)
    return alo < bhi and blo < ahi and alo < ahi and blo < bhi


def _same_memory(a, b) -> bool:
    return (_pointer(a) == _pointer(b) and a.size == b.size and np.dtype(a.dtype) ==
            np.dtype(b.dtype) and a.is_c_contiguous() and b.is_c_contiguous())


def _alloc(ref: _Dev, shape: tuple, dtype: np.dtype):
    """(user-facing array of ref's kind, its Numba view)."""
    if ref.kind == "cupy":
        import cupy

        with cupy.cuda.Device(ref.obj.device.id):
            res = cupy.empty(shape, dtype)
        return res, _as_numba(res)
    if ref.kind == "torch":
        import torch

        tdtype = {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32,
                  np.dtype(np.float64): torch.float64}[np.dtype(dtype)]
        res = torch.empty(shape, dtype=tdtype, device=ref.obj.device)
        return res, _as_numba(res)
    res = _kernels().empty(shape, dtype)
    return res, res


def _contiguous(module, arr, dtype):
    """``arr`` itself if C-contiguous in ``dtype``, else a device copy that is."""
    if np.dtype(arr.dtype) == dtype and arr.is_c_contiguous():
        return arr
    dst = module.empty(tuple(arr.shape), dtype)
    if arr.size:
        module.copy(arr, dst)
    return dst


def _flat(arr):
    if len(arr.shape) == 1:
        return arr
    return arr.reshape(max(arr.size, 1) if len(arr.shape) == 0 else arr.size)


# --- out= ---------------------------------------------------------------------------------------

def check_out(fname: str, argname: str, out, shape: tuple, dtype: np.dtype):
    """A device ``out``: same messages as ``_validate.check_out``.  Returns its Numba view."""
    if out is None:
        return None
    if not is_device_array(out):
        raise TypeError(f"{fname}: {argname} must be a CUDA device array (the inputs are on the "
                        f"device) or None, got {type(out).__module__}.{type(out).__name__}")
    arr = _as_numba(out)
    oshape = tuple(int(s) for s in arr.shape)
    if oshape != shape:
        raise ValueError(f"{fname}: {argname} has shape {oshape}, expected {shape}")
    if _validate._NATIVE.get(np.dtype(arr.dtype)) != dtype:
        raise TypeError(f"{fname}: {argname} has dtype {np.dtype(arr.dtype)}, expected {dtype}")
    cai = getattr(out, "__cuda_array_interface__", None)
    if cai is not None and cai["data"][1]:
        raise ValueError(f"{fname}: {argname} is read-only")
    return (out, arr)


def check_out_pair(fname: str, out, shape: tuple, dtype: np.dtype):
    if out is None:
        return None, None
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(f"{fname}: out must be a 2-tuple of arrays (or None), "
                        f"got {type(out).__name__}")
    first = check_out(fname, "out[0]", out[0], shape, dtype)
    second = check_out(fname, "out[1]", out[1], shape, dtype)
    if first is not None and second is not None and _overlap(first[1], second[1]):
        raise ValueError(f"{fname}: out[0] and out[1] overlap; they must be distinct buffers")
    return first, second


def _buffer(module, out, shape, cdtype, inputs):
    """The C-contiguous compute-dtype device array the kernel writes: ``out`` itself when safe
    (disjoint from every input, or exactly the same memory), else a scratch buffer."""
    if out is not None:
        arr = out[1]
        if (np.dtype(arr.dtype) == cdtype and arr.is_c_contiguous()
                and all(not _overlap(arr, a) or _same_memory(arr, a) for a in inputs)):
            return arr
    return None


# --- the three op families ----------------------------------------------------------------------

def _result(module, ref, out, shape, rdtype, cdtype, inputs):
    """(kernel buffer, finisher): allocate where the kernel writes and how to hand it back."""
    direct = _buffer(module, out, shape, cdtype, inputs)
    if direct is not None:
        return direct, lambda: out[0]
    if out is None and rdtype == cdtype:
        res, view = _alloc(ref, shape, rdtype)
        return view, lambda: res
    scratch = module.empty(shape, cdtype)

    def finish():
        if out is not None:
            target, tview = out
        else:
            target, tview = _alloc(ref, shape, rdtype)
        if math.prod(shape):
            module.copy(scratch, tview)
        return target

    return scratch, finish


def elementwise(spec: _registry.OpSpec, form: str, fname: str, kernel: str, arrays: dict,
                param_values: dict, out, backend):
    _mixed(fname, arrays)
    named = {k: as_device(fname, k, v) for k, v in arrays.items()}
    devs = list(named.values())
    shape = devs[0].shape if len(devs) == 1 else _validate.same_shape(fname, named)
    rdtype = _validate.result_dtype(*devs)
    cdtype = _validate.compute_dtype(rdtype)
    params = _validate.params(fname, spec, param_values) if spec.params else ()
    if form == "and_derivative":
        outs = check_out_pair(fname, out, shape, rdtype)
    else:
        outs = (check_out(fname, "out", out, shape, rdtype),)
    if form == "backward_from_y" and spec.y_backward is None:
        raise ValueError(f"{fname}: y= is not accepted (the derivative is not a function of "
                         "the output); pass x= instead")
    if form == "backward_from_y" and not spec.y_backward(dict(zip(spec.param_names, params))):
        raise ValueError(f"{fname}: y= needs {spec.y_backward_rule}; pass x= instead")
    module = _resolve(fname, next(iter(named)), backend)
    with _Stream(module, devs[0]):
        flats = [_contiguous(module, d.arr, cdtype) for d in devs]
        results = [_result(module, devs[0], o, shape, rdtype, cdtype, flats) for o in outs]
        if math.prod(shape):
            getattr(module, kernel)(*[_flat(a) for a in flats], *params,
                                    *[_flat(b) for b, _ in results])
        done = tuple(finish() for _, finish in results)
    return done if form == "and_derivative" else done[0]


def prelu(form: str, fname: str, arrays: dict, weight, out, backend):
    _mixed(fname, arrays)
    named = {k: as_device(fname, k, v) for k, v in arrays.items()}
    shape = _validate.same_shape(fname, named)
    x = named["x"]
    rdtype = _validate.result_dtype(*named.values())
    cdtype = _validate.compute_dtype(rdtype)
    # weight: a number, a host array or a device array; validated like on the host
    if is_device_array(weight):
        wdev = as_device(fname, "weight", weight)
        wshape, wdtype, wsize = wdev.shape, _validate.result_dtype(wdev), math.prod(wdev.shape)
        if len(wshape) > 1:
            raise ValueError(f"{fname}: weight must be a scalar or 1-D, got shape {wshape}")
    elif isinstance(weight, (np.ndarray, np.generic)):
        w = _validate.as_array(fname, "weight", weight)
        if w.ndim > 1:
            raise ValueError(f"{fname}: weight must be a scalar or 1-D, got shape {w.shape}")
        wdev, wshape, wdtype, wsize = None, w.shape, _validate.result_dtype(w), w.size
        whost = np.ascontiguousarray(w, dtype=np.float64).reshape(-1)
    else:
        whost = np.asarray([_validate.real_param(fname, "weight", weight)], dtype=np.float64)
        wdev, wshape, wdtype, wsize = None, (), None, 1
    ndim = len(shape)
    if wsize != 1 and not (ndim >= 2 and wsize == shape[1]):
        expected = f"1 or x.shape[1] = {shape[1]}" if ndim >= 2 else "1 (x has no channel axis)"
        raise ValueError(f"{fname}: weight has {wsize} elements, expected {expected}")
    inner = math.prod(shape) if wsize == 1 else math.prod(shape[2:])
    gw_dtype = wdtype if wdtype is not None else rdtype
    if form == "and_derivative":
        outs = check_out_pair(fname, out, shape, rdtype)
    elif form == "backward":
        if out is None:
            out = (None, None)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise TypeError(f"{fname}: out must be a 2-tuple (grad_x, grad_weight) or None")
        outs = (check_out(fname, "out[0]", out[0], shape, rdtype),)
        gw_out = check_out(fname, "out[1]", out[1], wshape, gw_dtype)
    else:
        outs = (check_out(fname, "out", out, shape, rdtype),)
    module = _resolve(fname, "x", backend)
    with _Stream(module, x):
        if wdev is not None:
            w = _contiguous(module, wdev.arr, np.dtype(np.float64)).reshape(wsize)
        else:
            w = module.to_device(whost)
        flats = [_contiguous(module, d.arr, cdtype) for d in named.values()]
        results = [_result(module, x, o, shape, rdtype, cdtype, flats + [w]) for o in outs]
        kouts = [_flat(b) for b, _ in results]
        if form == "backward":
            gw64 = module.empty(wsize, np.float64)
            kouts.append(gw64)
        if math.prod(shape):
            getattr(module, f"prelu_{form}")(*[_flat(a) for a in flats], w, inner, *kouts)
        elif form == "backward":
            gw64 = kouts[-1] = module.to_device(np.zeros(wsize))
        done = tuple(finish() for _, finish in results)
        if form == "backward":
            if gw_out is not None:
                module.copy(gw64.reshape(wshape) if wshape else gw64.reshape(()), gw_out[1])
                gw = gw_out[0]
            else:
                gw, gview = _alloc(x if wdev is None else wdev, wshape, gw_dtype)
                module.copy(gw64.reshape(wshape) if wshape else gw64.reshape(()), gview)
            return done[0], gw
    return done if form == "and_derivative" else done[0]


def rowwise(name: str, form: str, fname: str, arrays: dict, axis, where, temperature, out,
            backend, keepdims=False):
    _mixed(fname, arrays)
    if name not in _ROW_OPS:
        raise NotImplementedError(f"{fname}: no CUDA kernel yet; pass NumPy arrays")
    log, sign = _ROW_OPS[name]
    named = {k: as_device(fname, k, v) for k, v in arrays.items()}
    shape = _validate.same_shape(fname, named)
    ndim = len(shape)
    rdtype = _validate.result_dtype(*named.values())
    cdtype = _validate.compute_dtype(rdtype)
    ax = _validate.normalize_axis(fname, axis, ndim)
    temperature = _validate.real_param(fname, "temperature", temperature, "positive")
    reduce = name == "logsumexp"  # one value per row (the API's ``_registry.reduces``)
    if reduce and not isinstance(keepdims, (bool, np.bool_)):
        raise TypeError(f"{fname}: keepdims must be True or False, got "
                        f"{type(keepdims).__name__}")
    out_shape = shape
    if reduce:
        out_shape = shape[:ax] + ((1,) if keepdims else ()) + shape[ax + 1:] if ndim else ()
    out = check_out(fname, "out", out, out_shape, rdtype)
    width = shape[ax] if ndim else 1
    outer = math.prod(shape[:ax]) if ndim else 1
    inner = math.prod(shape[ax + 1:]) if ndim else 1
    mask_host, mask_dev = _row_mask(fname, where, shape)
    module = _resolve(fname, next(iter(named)), backend)
    devs = list(named.values())
    with _Stream(module, devs[0]):
        flats = [_contiguous(module, d.arr, cdtype) for d in devs]
        buffer, finish = _result(module, devs[0], out, out_shape, rdtype, cdtype, flats)
        if math.prod(out_shape):  # logsumexp of an empty row is -inf: written by the kernel
            s3 = (outer, width, inner)
            mask3 = None
            if mask_host is not None:
                mask3 = module.to_device(mask_host.reshape(s3))
            elif mask_dev is not None:
                mask3 = module.empty(s3, np.uint8)
                module.copy(mask_dev, mask3.reshape(shape))
            ins = [a.reshape(s3) for a in flats]
            if reduce:
                module.rows_forward(ins[0], mask3, temperature, buffer.reshape(outer, 1, inner),
                                    log, sign, logsumexp=True)
            elif form == "forward":
                module.rows_forward(ins[0], mask3, temperature, buffer.reshape(s3), log, sign)
            else:
                module.rows_backward(ins[0], ins[1], mask3, temperature, buffer.reshape(s3),
                                     log, sign)
        return finish()


def _row_mask(fname: str, where, shape: tuple):
    """(host uint8 mask in x's layout, or None; device bool mask of x's shape, or None)."""
    if where is None:
        return None, None
    if is_device_array(where):
        m = _as_numba(where)
        if np.dtype(m.dtype) != np.bool_:
            raise TypeError(f"{fname}: where must be a boolean array, got dtype "
                            f"{np.dtype(m.dtype)}")
        mshape = tuple(int(s) for s in m.shape)
        if mshape != shape:
            raise ValueError(f"{fname}: where has shape {mshape}; a device mask must have the "
                             f"shape of the input {shape} (pass a NumPy mask to broadcast)")
        return None, m
    m = np.asarray(where)
    if m.dtype != np.bool_:
        raise TypeError(f"{fname}: where must be a boolean array, got dtype {m.dtype}")
    try:
        m = np.broadcast_to(m, shape)
    except ValueError:
        raise ValueError(f"{fname}: where has shape {m.shape}, which does not broadcast to "
                         f"{shape}") from None
    return np.ascontiguousarray(m).view(np.uint8), None


def gated(spec: _registry.OpSpec, form: str, fname: str, arrays: dict, param_values: dict,
          axis, out, backend):
    """glu / swiglu / geglu on device arrays (layout: ``_validate.gated_layout``)."""
    _mixed(fname, arrays)
    named = {k: as_device(fname, k, v) for k, v in arrays.items()}
    rdtype = _validate.result_dtype(*named.values())
    cdtype = _validate.compute_dtype(rdtype)
    params = _validate.params(fname, spec, param_values) if spec.params else ()
    split = spec.extra["split"]
    in_shape, out_shape, rows, width, stride = _validate.gated_layout(fname, split, named, axis)
    if form == "forward":
        outs = (check_out(fname, "out", out, out_shape, rdtype),)
    elif split:
        outs = (check_out(fname, "out", out, in_shape, rdtype),)
    else:
        outs = check_out_pair(fname, out, in_shape, rdtype)
    shape = out_shape if form == "forward" else in_shape
    module = _resolve(fname, next(iter(named)), backend)
    ref = named["x"] if split else named["a"]
    with _Stream(module, ref):
        flats = {k: _flat(_contiguous(module, d.arr, cdtype)) for k, d in named.items()}
        results = [_result(module, ref, o, shape, rdtype, cdtype, list(flats.values()))
                   for o in outs]
        if rows * width:
            kouts = [_flat(b) for b, _ in results]
            if split:  # x = [value | gate] per row
                gate, value = flats["x"][width:], flats["x"]
                if form == "backward":
                    kouts = [kouts[0][width:], kouts[0]]
            else:
                gate, value = flats["a"], flats["b"]
            grad = (flats["grad"],) if form == "backward" else ()
            getattr(module, f"{spec.name}_{form}")(*grad, gate, value, rows, width, stride,
                                                   *params, *kouts)
        done = tuple(finish() for _, finish in results)
    return done if len(done) == 2 else done[0]


# --- losses --------------------------------------------------------------------------------------
#
# Validated as on the host (the same checks in the same order, from shapes and dtypes; the
# shared checks live in ``fastact.api``), then computed on the device without a host copy.  The
# row kernels read the input in its own layout, an (outer, C, inner) view, so any class axis
# works without a transposed copy, and the gradient is written straight into an array of the
# input's shape (``out=input`` included).  Pre-passes: class targets are range-checked and BCE
# inputs checked against [0, 1] by a kernel whose one-integer answer is read back (a
# synchronisation -- needed to raise before anything is written); nothing else synchronises:
# a reduced loss is a 0-d device array of the input's kind, summed and divided on the device
# (the 'mean' denominator of weighted class targets too).  Weights, pos_weight and grad_loss
# may be numbers, host arrays (broadcast on the host, then copied) or device arrays (one
# element or exactly the shape they apply to).

def _loss_vector(module, fname: str, argname: str, value, shape: tuple, host_convert):
    """A float64 flat device vector from a device array (one element or exactly ``shape``) or
    from ``host_convert(value)`` (a host float64 array) copied to the device."""
    if not is_device_array(value):
        return module.to_device(host_convert(value))
    d = as_device(fname, argname, value)
    if math.prod(d.shape) == 1 and len(d.shape) <= len(shape):
        return _contiguous(module, _flat(d.arr), np.dtype(np.float64)).reshape(1)
    if d.shape != tuple(shape):
        raise ValueError(f"{fname}: {argname} has shape {d.shape}; a device {argname} must "
                         f"have one element or the shape {tuple(shape)} (pass a NumPy array "
                         "to broadcast)")
    return _flat(_contiguous(module, d.arr, np.dtype(np.float64)))


def _loss_out(fname: str, form: str, out, reduction: str, in_shape: tuple, loss_shape: tuple,
              rdtype):
    """A device ``out``: the gradient's (input-shaped) for the gradient forms, the unreduced
    loss's for a forward with reduction='none' (refused otherwise, as on the host)."""
    if form != "forward":
        return check_out(fname, "out", out, in_shape, rdtype)
    if out is not None and reduction != "none":
        from . import api

        raise api._loss_out_reduced(fname)
    return check_out(fname, "out", out, loss_shape, rdtype)


def _loss_result(module, ref: _Dev, values, shape: tuple, rdtype, out, reduction: str, *,
                 count=None, divisor: float = 0.0):
    """The loss as an array of ref's kind: the per-item float64 ``values`` rounded into a
    ``shape`` array (reduction 'none', into ``out`` when given), else a 0-d array holding
    their sum (divided by count[0] / ``divisor`` for 'mean' and 'batchmean')."""
    if reduction == "none":
        if out is not None:
            target, view = out
        else:
            target, view = _alloc(ref, shape, rdtype)
        if math.prod(shape):
            module.copy(values.reshape(shape) if shape else values, view)
        return target
    res, view = _alloc(ref, (), rdtype)
    module.reduce_sum(values, _flat(view), count=count, divisor=divisor,
                      mean=reduction != "sum")
    return res


def row_loss(name: str, form: str, fname: str, spec, grad_loss, input, target, weight,
             ignore_index, reduction, label_smoothing, axis, out, backend):
    """cross_entropy / nll_loss on device arrays (see the section comment)."""
    from . import api

    arrays = {k: v for k, v in (("input", input), ("target", target)) if v is not None}
    _mixed(fname, arrays)
    x = as_device(fname, "input", input)
    rdtype = _validate.result_dtype(x)
    cdtype = _validate.compute_dtype(rdtype)
    try:
        tarr = _as_numba(target)
    except Exception as exc:
        raise TypeError(f"{fname}: target is not a usable CUDA array ({exc})") from None
    tdtype = np.dtype(tarr.dtype)
    tshape = tuple(int(s) for s in tarr.shape)
    reduction, ignore_index, smoothing, ax, C, loss_shape, prob = api._row_loss_checks(
        name, fname, spec, x.shape, tdtype, tshape, reduction, ignore_index, label_smoothing,
        axis)
    module = _resolve(fname, "input", backend)
    with _Stream(module, x):
        if is_device_array(weight):
            w = _loss_vector(module, fname, "weight", weight, (C,), None)
            if w.size != C:
                wshape = as_device(fname, "weight", weight).shape
                raise ValueError(f"{fname}: weight has shape {wshape}, expected ({C},) (one "
                                 "weight per class)")
        else:
            w = module.to_device(api._loss_class_weight(fname, weight, C))
        outv = _loss_out(fname, form, out, reduction, x.shape, loss_shape, rdtype)
        if form == "backward":
            g = _loss_vector(module, fname, "grad_loss", grad_loss, loss_shape,
                             lambda v: api._loss_grad_loss(fname, v, loss_shape))
        outer = math.prod(x.shape[:ax])
        inner = math.prod(x.shape[ax + 1:])
        rows = outer * inner
        s3 = (outer, C, inner)
        xs = _contiguous(module, x.arr, cdtype)
        x3 = xs.reshape(s3)
        q3 = t64 = None
        count = module.empty(1, np.float64)
        # pre-pass: nothing is written before it
        if prob:
            qs = _contiguous(module, tarr, cdtype)
            q3 = qs.reshape(s3)
            module.fill(count, float(rows))
            ins = [xs, qs]
        else:
            t64 = _flat(_contiguous(module, tarr, np.dtype(np.int64))) if rows else None
            if rows:
                k = module.first_bad_position("target", t64, C, ignore_index)
                if k >= 0:
                    value = int(t64[k:k + 1].copy_to_host()[0])
                    raise api._range_error(fname, value, k, C, ignore_index, loss_shape)
                wrow = module.empty(rows, np.float64)
                module.target_weights(t64, w, ignore_index, wrow)
                module.reduce_sum(wrow, count)
            else:
                module.fill(count, 0.0)
            ins = [xs, t64] if rows else [xs]
        work = rows * C > 0
        losses = module.empty(max(rows, 1), np.float64)
        if not work or not rows:
            module.fill(losses, 0.0)
        mean = reduction == "mean"
        if form == "forward":
            if work:
                module.row_loss(name, x3, t64, q3, w, ignore_index, smoothing,
                                module.constant(1.0), None, False, 1, losses, None)
            return _loss_result(module, x, losses, loss_shape, rdtype, outv, reduction, count=count)
        buffer, finish = _result(module, x, outv, x.shape, rdtype, cdtype, ins)
        if form == "and_grad":
            if work:
                module.row_loss(name, x3, t64, q3, w, ignore_index, smoothing,
                                module.constant(1.0), count, mean, 3, losses, buffer.reshape(s3))
            grad = finish()
            return _loss_result(module, x, losses, loss_shape, rdtype, None, reduction,
                                count=count), grad
        if work:
            module.row_loss(name, x3, t64, q3, w, ignore_index, smoothing, g, count,
                            mean, 2, None, buffer.reshape(s3))
        return finish()


def elementwise_loss(name: str, form: str, fname: str, spec, grad_loss, input, target,
                     weight, pos_weight, param, reduction, out, backend):
    """The elementwise losses on device arrays (see the section comment)."""
    from . import api

    _mixed(fname, {"input": input, "target": target})
    x = as_device(fname, "input", input)
    if not is_device_array(target) or np.dtype(_as_numba(target).dtype) != np.bool_:
        y = as_device(fname, "target", target)
    else:
        raise TypeError(f"{fname}: target must be a float array, got dtype bool; convert it "
                        "first, e.g. target.astype(np.float32)")
    shape = _validate.same_shape(fname, {"input": x, "target": y})
    rdtype = _validate.result_dtype(x)
    cdtype = _validate.compute_dtype(rdtype)
    reduction, p = api._elementwise_loss_checks(fname, spec, reduction, param)
    n = math.prod(shape)
    module = _resolve(fname, "input", backend)
    with _Stream(module, x):
        w, pw = (_loss_vector(module, fname, argname, value, shape,
                              lambda v, a=argname: api._elementwise_weight(fname, a, v, shape, n))
                 for argname, value in (("weight", weight), ("pos_weight", pos_weight)))
        outv = _loss_out(fname, form, out, reduction, shape, shape, rdtype)
        if form == "backward":
            g = _loss_vector(module, fname, "grad_loss", grad_loss, shape,
                             lambda v: api._loss_grad_loss(fname, v, shape))
        xf = _flat(_contiguous(module, x.arr, cdtype))
        yf = _flat(_contiguous(module, y.arr, cdtype))
        if "input_range" in spec.extra and n:  # the documented pre-pass
            lo, hi = spec.extra["input_range"]
            k = module.first_bad_position("range", xf, lo, hi)
            if k >= 0:
                value = float(xf[k:k + 1].copy_to_host()[0])
                raise api._input_range_error(fname, spec, value, k, shape)
        count = float(n) if reduction != "batchmean" else float(shape[0] if shape else 1)
        scale = (1.0 / count if count else math.nan) if reduction in ("mean", "batchmean") \
            else 1.0
        nb = (n + api._LOSS_BLOCK - 1) // api._LOSS_BLOCK
        partial = module.empty(max(nb, 1), np.float64)
        if not n:
            module.fill(partial, 0.0)
        none = reduction == "none"
        per = module.empty(n, np.float64) if none and n else None
        if form == "forward":
            if n:
                module.elementwise_loss(name, xf, yf, w, pw, p, module.constant(1.0), 1.0,
                                        1 | (4 if none else 0), per, None, partial,
                                        api._LOSS_BLOCK)
            return _loss_result(module, x, per if none else partial, shape, rdtype, outv,
                                reduction, divisor=count)
        buffer, finish = _result(module, x, outv, shape, rdtype, cdtype, [xf, yf])
        if form == "and_grad":
            if n:
                module.elementwise_loss(name, xf, yf, w, pw, p, module.constant(1.0), scale,
                                        3 | (4 if none else 0), per, _flat(buffer), partial,
                                        api._LOSS_BLOCK)
            grad = finish()
            return _loss_result(module, x, per if none else partial, shape, rdtype, None,
                                reduction, divisor=count), grad
        if n:
            module.elementwise_loss(name, xf, yf, w, pw, p, g, 1.0 if none else scale, 2,
                                    None, _flat(buffer), None)
        return finish()
