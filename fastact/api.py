"""The public functions: one thin documented wrapper per op and form.

Each wrapper validates its arguments (``_validate``), picks a backend (``_dispatch``) and calls
that backend's kernel of the same name.  Docstrings are assembled from :data:`_DOCS` (formula,
derivative, stable form, example) so that every form of an op says the same thing the same way.
"""

from __future__ import annotations

import math
from bisect import bisect_right as _bisect_right

import numpy as np

from . import _dask, _device, _dispatch, _registry, _validate
from ._registry import OPS_BY_NAME

_PREFIX = "fastact."


# ------------------------------------------------------------------------------------------------
# shared machinery
# ------------------------------------------------------------------------------------------------

def _call_kernel(module, kernel_name: str, *args) -> None:
    getattr(module, kernel_name)(*args)


def _elementwise(name: str, form: str, arrays: dict, param_values: dict, out, backend):
    spec = OPS_BY_NAME[name]
    # (y= given to an op whose derivative is not a function of y: rejected below)
    fname = _FNAMES.get((name, form)) or _PREFIX + spec.public_name("backward")
    if not all(type(v) is np.ndarray for v in arrays.values()):
        if _dask.any_dask(*arrays.values()):
            return _dask.elementwise(_public(name, form), (),
                                     {**arrays, **param_values, "out": out, "backend": backend})
        if _device.any_device(arrays.values()):
            return _device.elementwise(spec, form, fname, _KERNELS.get((name, form)), arrays,
                                       param_values, out, backend)
    named = [_validate.as_array(fname, k, v) for k, v in arrays.items()]
    shape = named[0].shape if len(named) == 1 else _validate.same_shape(
        fname, dict(zip(arrays, named)))
    rdtype = _validate.result_dtype(*named)
    cdtype = _validate.compute_dtype(rdtype)
    params = _validate.params(fname, spec, param_values) if spec.params else ()
    if params:
        _remember_params(spec, param_values, params)
    if form == "and_derivative":
        outs = _validate.check_out_pair(fname, out, shape, rdtype)
    else:
        outs = (_validate.check_out(fname, "out", out, shape, rdtype),)
    if form == "backward_from_y" and spec.y_backward is None:
        raise ValueError(f"{fname}: y= is not accepted (the derivative is not a function of "
                         "the output); pass x= instead")
    if form == "backward_from_y" and not spec.y_backward(dict(zip(spec.param_names, params))):
        raise ValueError(f"{fname}: y= needs {spec.y_backward_rule}; pass x= instead")
    key = fname[len(_PREFIX):]
    module = _dispatch.resolve(backend, key=key, dtype=_validate.DTYPE_NAMES[cdtype], size=math.prod(shape))[1]
    _fast_fill(_KERNELS[name, form], key, backend, module)
    flats = [_validate.flat(a, cdtype) for a in named]
    buffers = [_validate.kernel_buffer(o, shape, cdtype, flats) for o in outs]
    if flats[0].size:
        getattr(module, _KERNELS[name, form])(*flats, *params, *[b.reshape(-1) for b in buffers])
    if form == "and_derivative":
        return tuple(_validate.deliver(o, b, shape, rdtype) for o, b in zip(outs, buffers))
    return _validate.deliver(outs[0], buffers[0], shape, rdtype)


#: (op, form) -> public function name for messages, and -> kernel name (computed once)
_FNAMES = {(op.name, form): _PREFIX + op.public_name(form) for op in _registry.OPS
           for form in op.forms}
_FNAMES.update({(op.name, "backward_from_y"): _PREFIX + op.public_name("backward")
                for op in _registry.OPS if op.y_backward})
_KERNELS = {key: f"{key[0]}_{key[1]}" for key in _FNAMES}


def _public(name: str, form: str):
    """The public function of ``name``'s ``form`` (``backward_from_y`` is ``NAME_backward``)."""
    return globals()[OPS_BY_NAME[name].public_name(
        "backward" if form == "backward_from_y" else form)]


def _backward_input(fname: str, x, y):
    if (x is None) == (y is None):
        raise TypeError(f"{fname}: pass exactly one of x= (the input) or y= (the output)")
    return ("x", x) if y is None else ("y", y)


def _prelu_weight(fname: str, weight, x: np.ndarray):
    """(float64 weights, inner block size, grad_weight shape, grad_weight dtype or None)."""
    if isinstance(weight, (np.ndarray, np.generic)):
        w = _validate.as_array(fname, "weight", weight)
        if w.ndim > 1:
            raise ValueError(f"{fname}: weight must be a scalar or 1-D, got shape {w.shape}")
        wdtype = _validate.result_dtype(w)
    else:
        w = np.asarray(_validate.real_param(fname, "weight", weight), dtype=np.float64)
        wdtype = None
    channels = w.size
    if channels != 1 and not (x.ndim >= 2 and channels == x.shape[1]):
        expected = f"1 or x.shape[1] = {x.shape[1]}" if x.ndim >= 2 else "1 (x has no channel axis)"
        raise ValueError(f"{fname}: weight has {channels} elements, expected {expected}")
    inner = x.size if channels == 1 else math.prod(x.shape[2:])
    return np.ascontiguousarray(w, dtype=np.float64).reshape(-1), inner, w.shape, wdtype


def _prelu(form: str, arrays: dict, weight, out, backend):
    if _dask.any_dask(*arrays.values()):
        fn, kw = _public("prelu", form), {"out": out, "backend": backend}
        if form == "backward":
            return _dask.prelu_backward(fn, arrays["grad"], arrays["x"], weight, kw)
        return _dask.elementwise(fn, (), {**arrays, "weight": weight, **kw},
                                 channel_weight="weight")
    fname = _PREFIX + OPS_BY_NAME["prelu"].public_name(form)
    if _device.any_device(arrays.values()):
        return _device.prelu(form, fname, arrays, weight, out, backend)
    named = {k: _validate.as_array(fname, k, v) for k, v in arrays.items()}
    shape = _validate.same_shape(fname, named)
    x = named["x"]
    rdtype = _validate.result_dtype(*named.values())
    cdtype = _validate.compute_dtype(rdtype)
    w, inner, wshape, wdtype = _prelu_weight(fname, weight, x)
    gw_dtype = wdtype if wdtype is not None else rdtype
    if form == "and_derivative":
        outs = _validate.check_out_pair(fname, out, shape, rdtype)
    elif form == "backward":
        if out is None:
            out = (None, None)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise TypeError(f"{fname}: out must be a 2-tuple (grad_x, grad_weight) or None")
        outs = (_validate.check_out(fname, "out[0]", out[0], shape, rdtype),)
        gw_out = _validate.check_out(fname, "out[1]", out[1], wshape, gw_dtype)
    else:
        outs = (_validate.check_out(fname, "out", out, shape, rdtype),)
    _, module = _dispatch.resolve(backend, key=fname[len(_PREFIX):], dtype=_validate.DTYPE_NAMES[cdtype],
                                  size=math.prod(shape))
    flats = [_validate.flat(a, cdtype) for a in named.values()]
    buffers = [_validate.kernel_buffer(o, shape, cdtype, flats + [w]) for o in outs]
    kernel_outs = [b.reshape(-1) for b in buffers]
    grad_weight = np.zeros(w.size, np.float64)
    if form == "backward":
        kernel_outs.append(grad_weight)
    if x.size:
        _call_kernel(module, f"prelu_{form}", *flats, w, inner, *kernel_outs)
    results = tuple(_validate.deliver(o, b, shape, rdtype) for o, b in zip(outs, buffers))
    if form == "backward":
        with np.errstate(over="ignore"):
            gw = grad_weight.reshape(wshape).astype(gw_dtype)
            if gw_out is not None:
                np.copyto(gw_out, gw)
                gw = gw_out
        return results[0], gw
    return results if form == "and_derivative" else results[0]


def _rowwise(name: str, form: str, arrays: dict, axis, where, temperature, out, backend,
             keepdims=False):
    """Row-wise ops along ``axis``.  Ops that reduce the axis (``_registry.reduces``: logsumexp)
    take ``keepdims`` and their kernels write one value per row into a 1-D ``(rows,)`` buffer;
    the others (softmax family) give the input's shape."""
    if _dask.any_dask(*arrays.values()):
        kwargs = {**arrays, "axis": axis, "where": where, "temperature": temperature,
                  "out": out, "backend": backend}
        if _registry.reduces(OPS_BY_NAME[name]):
            return _dask.reduce_rows(_public(name, form), (), {**kwargs, "keepdims": keepdims},
                                     axis=axis, keepdims=keepdims, broadcast=("where",))
        return _dask.elementwise(_public(name, form), (), kwargs,
                                 row_axis=axis if isinstance(axis, int) else None,
                                 broadcast=("where",))
    spec = OPS_BY_NAME[name]
    fname = _PREFIX + spec.public_name(form)
    if _device.any_device(arrays.values()):
        return _device.rowwise(name, form, fname, arrays, axis, where, temperature, out,
                               backend, keepdims)
    named = {k: _validate.as_array(fname, k, v) for k, v in arrays.items()}
    shape = _validate.same_shape(fname, named)
    ndim = len(shape)
    rdtype = _validate.result_dtype(*named.values())
    cdtype = _validate.compute_dtype(rdtype)
    ax = _validate.normalize_axis(fname, axis, ndim)
    temperature = _validate.real_param(fname, "temperature", temperature, "positive")
    reduce = _registry.reduces(spec)
    if reduce and not isinstance(keepdims, (bool, np.bool_)):
        raise TypeError(f"{fname}: keepdims must be True or False, got "
                        f"{type(keepdims).__name__}")
    if not reduce:
        out_shape = shape
    elif ndim == 0:
        out_shape = ()
    else:
        out_shape = shape[:ax] + ((1,) if keepdims else ()) + shape[ax + 1:]
    out = _validate.check_out(fname, "out", out, out_shape, rdtype)
    width = shape[ax] if ndim else 1
    rows = math.prod(shape) // width if width else math.prod(s for i, s in enumerate(shape)
                                                           if i != ax)
    mask = _row_mask(fname, where, shape, ax, rows, width)
    key = fname[len(_PREFIX):]
    _, module = _dispatch.resolve(backend, key=key, dtype=_validate.DTYPE_NAMES[cdtype],
                                  size=rows * width)
    if where is None and not reduce:
        _fast_fill(f"{name}_{form}", key, backend, module)

    def to_rows(a, dtype):
        moved = np.moveaxis(a, ax, -1) if ndim else a
        return np.ascontiguousarray(moved, dtype=dtype).reshape(rows, width)

    ins = [to_rows(a, cdtype) for a in named.values()]
    if reduce:
        # one value per row, rows in the order of the input's other axes: out's own layout
        buffer = _validate.kernel_buffer(out, out_shape, cdtype, ins)
        if rows and not width:
            buffer[...] = -np.inf  # the log of an empty sum (torch, scipy)
        elif rows:
            _call_kernel(module, f"{name}_{form}", *ins, mask, temperature,
                         buffer.reshape(rows))
        return _validate.deliver(out, buffer, out_shape, rdtype)
    last_axis = ndim == 0 or ax == ndim - 1
    if last_axis:
        buffer = _validate.kernel_buffer(out, shape, cdtype, ins)
    else:
        buffer = np.empty((rows, width), cdtype)
    if rows * width:
        _call_kernel(module, f"{name}_{form}", *ins, mask, temperature,
                     buffer.reshape(rows, width))
    if last_axis:
        return _validate.deliver(out, buffer, shape, rdtype)
    moved_shape = shape[:ax] + shape[ax + 1:] + (width,)
    result = np.moveaxis(buffer.reshape(moved_shape), -1, ax)
    with np.errstate(over="ignore"):  # float16 rounding may overflow to inf, by design
        if out is None:
            return np.ascontiguousarray(result, dtype=rdtype)
        np.copyto(out, result)
    return out


def _row_mask(fname: str, where, shape: tuple, ax: int, rows: int, width: int):
    if where is None:
        return None
    m = np.asarray(where)
    if m.dtype != np.bool_:
        raise TypeError(f"{fname}: where must be a boolean array, got dtype {m.dtype}")
    try:
        m = np.broadcast_to(m, shape)
    except ValueError:
        raise ValueError(f"{fname}: where has shape {m.shape}, which does not broadcast to "
                         f"{shape}") from None
    if len(shape):
        m = np.moveaxis(m, ax, -1)
    return np.ascontiguousarray(m).view(np.uint8).reshape(rows, width)


# ------------------------------------------------------------------------------------------------
# documentation
# ------------------------------------------------------------------------------------------------

_COMMON_PARAMS = """\
out : ndarray, optional
    Where to write the result: same shape, same float dtype, writeable; it may be the input
    itself (in place) or any view (written through its strides).
backend : {None, 'numba', 'cython', 'numpy', 'cuda'}, optional
    Force a backend.  Default: the ``use_backend`` context, then ``FASTACT_BACKEND``, then the
    fastest available (see :func:`fastact.backends`)."""

_PAIR_OUT = """\
out : tuple of (ndarray or None, ndarray or None), optional
    Buffers for the two results; each may alias an input, not each other.
backend : str, optional
    Force a backend (see the forward function)."""

_X_DOC = """\
x : array_like
    Input.  float16, float32 and float64 arrays keep their dtype (float16 is computed in
    float32 and rounded once); Python numbers and lists become float64; any shape, any
    strides."""

_FORM_SUMMARY = {
    "forward": "{summary}, elementwise.",
    "derivative": "Derivative of ``{name}`` with respect to its input, elementwise.",
    "and_derivative": "Value and derivative of ``{name}`` in one pass over the input.",
    "backward": "Backward pass of ``{name}``: ``grad * {name}'(x)`` in one pass.",
}

_FORM_RETURNS = {
    "forward": "y : ndarray\n    ``{name}(x)``, C-contiguous, shape and dtype of the input.",
    "derivative": "dydx : ndarray\n    ``{name}'(x)``, shape and dtype of the input.",
    "and_derivative": "(y, dydx) : tuple of ndarray\n    Value and derivative.",
    "backward": "grad_x : ndarray\n    ``grad * {name}'(x)``, shape of ``grad``.",
}


def _param_doc(spec: _registry.OpSpec, docs: dict) -> str:
    lines = []
    for p in spec.params:
        if p.choices:
            kind = "{" + ", ".join(repr(c) for c in p.choices) + "}, " + f"default {p.default!r}"
        else:
            kind = "float" if p.required else f"float, default {p.default}"
        lines.append(f"{p.name} : {kind}\n    {docs['params'][p.name]}")
    return "\n".join(lines)


def _elementwise_doc(spec: _registry.OpSpec, form: str) -> str:
    docs = _DOCS[spec.name]
    name = spec.name
    parts = [_FORM_SUMMARY[form].format(summary=spec.summary[0].upper() + spec.summary[1:],
                                        name=name), ""]
    parts += [docs["formula"], ""]
    parts += ["Parameters", "----------"]
    if form == "backward" and spec.kind == "channel":
        parts.append("grad : array_like\n    Upstream gradient dL/dy, same shape as x.")
        parts.append("x : array_like\n    The forward input (keyword-only).")
    elif form == "backward":
        parts.append("grad : array_like\n    Upstream gradient dL/dy, same shape as x or y.")
        y_note = (f"``y=`` is accepted when {spec.y_backward_rule}"
                  if spec.y_backward else "``y=`` is not accepted")
        parts.append("x, y : array_like\n    Exactly one of them: the forward input ``x`` or "
                     f"the forward output ``y``; {y_note}.")
    else:
        parts.append(_X_DOC)
    if name == "prelu":
        parts.append("weight : float or array_like\n    Slope(s) for x <= 0: one, or one per "
                     "channel (axis 1).")
    if docs.get("params"):
        parts.append(_param_doc(spec, docs))
    pair = form == "and_derivative" or (form == "backward" and spec.kind == "channel")
    parts.append(_PAIR_OUT if pair else _COMMON_PARAMS)
    returns = _FORM_RETURNS[form].format(name=name)
    if form == "backward" and spec.kind == "channel":
        returns = ("(grad_x, grad_weight) : tuple of ndarray\n    ``grad * prelu'(x)`` and the "
                   "gradient of the weight, shaped like it.")
    parts += ["", "Returns", "-------", returns, ""]
    parts += ["Notes", "-----", docs["notes"],
              f"Accuracy: {_bound_text(spec, form)} (DESIGN.md section 4).", ""]
    parts += ["Examples", "--------", ">>> import numpy as np, fastact as fa",
              docs["examples"][form].strip("\n")]
    return "\n".join(parts) + "\n"


def _bound_text(spec: _registry.OpSpec, form: str) -> str:
    bound = spec.bound if form == "forward" else spec.derivative_bound
    if bound.exact:
        return "exact (the correctly rounded result)"
    return (f"within {bound.float32:g} ULP (float32) / {bound.float64:g} ULP (float64) of the "
            "exactly rounded result, 1 ULP for float16")


def _document(op_name: str, form: str):
    def deco(fn):
        fn.__doc__ = _elementwise_doc(OPS_BY_NAME[op_name], form)
        return fn
    return deco


from ._docs import DOCS as _DOCS  # noqa: E402  (long text kept out of the code)


# ------------------------------------------------------------------------------------------------
# elementwise activations: generated from the registry
# ------------------------------------------------------------------------------------------------

def _signature_params(spec: _registry.OpSpec, keyword_only: bool) -> tuple[str, str, str]:
    """(positional parameters, keyword parameters, dict literal) texts for a generated wrapper.

    Parameters with a default are keyword-only (``leaky_relu(x, *, negative_slope=0.01)``);
    required ones (``threshold(x, threshold, value)``) follow ``x`` positionally in the forward
    forms, as in ``torch.nn.functional``, and are keyword-only in ``NAME_backward``.
    """
    required = [p.name for p in spec.params if p.required]
    optional = [f"{p.name}={p.default!r}" for p in spec.params if not p.required]
    if keyword_only:
        head, tail = "", ", ".join(required + optional)
    else:
        head, tail = "".join(f", {n}" for n in required), ", ".join(optional)
    values = "{" + ", ".join(f"{p.name!r}: {p.name}" for p in spec.params) + "}"
    return head, (tail + ", " if tail else ""), values


def _fast_source(spec: _registry.OpSpec, table: str, call: str, guard: str) -> str:
    """The small-array fast path of a generated wrapper: with no backend/context override, out
    None or an array the results can go to directly (``_fast_out_for``), and parameters given
    as plain floats (str for a choice) whose validated values are cached
    (_FAST_PARAMS, filled by the normal path; so bools, NumPy scalars, ints and invalid values
    take the normal path and get its errors and conversions), ``call`` -- a
    ``_fast_elementwise`` or ``_fast_backward`` call on ``_FAST[table]`` and ``p``, the
    validated parameters -- runs the serial Numba kernel on qualifying arrays, or returns None
    (then the normal path runs).  ``guard``: further conditions."""
    names = spec.param_names
    kinds = [("str" if p.choices else "float") for p in spec.params]
    types_ok = "".join(f" and type({n}) is {k}" for n, k in zip(names, kinds))
    key = "(" + "".join(f"{n}, " for n in names) + ")"
    ind = " " * 8
    body = ""
    if names:
        body += f"{ind}p = _FAST_PARAMS[{spec.name!r}].get({key})\n{ind}if p is not None:\n"
        ind += "    "
    else:
        call = call.replace(", p", ", ()")
    call = call.replace("TABLE", f"_FAST[{table!r}]")
    body += (f"{ind}_r = {call}\n{ind}if _r is not None:\n{ind}    return _r\n")
    return (f"    if backend is None{types_ok}{guard} and _context_get() is None:\n"
            + body)


def _elementwise_source(spec: _registry.OpSpec, form: str) -> str:
    fn = spec.public_name(form)
    if form == "backward":
        _, kw, values = _signature_params(spec, keyword_only=True)
        fast = _fast_source(spec, f"{spec.name}_backward",
                            "_fast_backward(TABLE, grad, x, p, out)", " and y is None")
        if spec.y_backward is not None and not spec.params:
            fast += _fast_source(spec, f"{spec.name}_backward_from_y",
                                 "_fast_backward(TABLE, grad, y, p, out)", " and x is None")
        return (
            f"def {fn}(grad, *, x=None, y=None, {kw}out=None, backend=None):\n{fast}"
            f"    _which, _operand = _backward_input({_PREFIX + fn!r}, x, y)\n"
            f"    _form = 'backward' if _which == 'x' else 'backward_from_y'\n"
            f"    return _elementwise({spec.name!r}, _form, {{'grad': grad, _which: _operand}}, "
            f"{values}, out, backend)\n")
    head, kw, values = _signature_params(spec, keyword_only=False)
    nout = 2 if form == "and_derivative" else 1
    # (out= of the two-result form, a pair, takes the normal path)
    fast = _fast_source(spec, f"{spec.name}_{form}",
                        f"_fast_elementwise(TABLE, x, p, {nout}, out)",
                        " and out is None" if nout == 2 else "")
    return (f"def {fn}(x{head}, *, {kw}out=None, backend=None):\n{fast}"
            f"    return _elementwise({spec.name!r}, {form!r}, {{'x': x}}, {values}, out, "
            f"backend)\n")


#: kernel name -> {dtype: [serial Numba kernel's entry point (an _EntryPoint until the first
#: call), size limit]}: the fast path's table, filled by the first call that takes the normal
#: path with automatic dispatch (so the choice is the dispatcher's), emptied when the dispatch
#: table changes.
_FAST: dict = {f"{op.name}_{form}": {} for op in _registry.elementwise_ops()
               for form in ("forward", "derivative", "and_derivative", "backward")
               + (("backward_from_y",) if op.y_backward is not None else ())}
_FAST.update({f"{name}_{form}": {} for name in ("softmax", "log_softmax", "softmin")
              for form in ("forward", "backward")})
#: op -> {parameter values as passed (plain float / str): validated kernel parameters}: the
#: parametrised ops' fast path only takes values the normal path has already accepted.
_FAST_PARAMS: dict = {op.name: {} for op in _registry.elementwise_ops() if op.params}
_FAST_PARAMS_MAX = 64  # distinct values remembered per op (a sweep over values stays bounded)
_ndarray, _empty, _context_get = np.ndarray, np.empty, _dispatch._context.get
class _EntryPoint:
    """``fast[0]`` of a fast-path table entry ``fast`` until its first call, which puts there
    the serial kernel's compiled entry point for the argument types of that call
    (``Dispatcher.compile``: loaded from the cache or compiled once, as the dispatcher would).

    The fast path's argument types are fixed per kernel and dtype (1-D C-contiguous aligned
    arrays of the table's dtype, or 2-D for the softmax rows; validated float parameters;
    None), and its guards check exactly that, so every later call can skip the dispatcher's
    type resolution: ``fa.tanh`` on 1,000 float32 elements ~1.75 -> ~1.2 us with the reshapes
    skipped for 1-D arrays (``np.tanh`` ~0.78 us; the benchmark group
    tanh-forward-float32-1000).  The entry point is compiled for writeable arrays, and its
    unboxing does not look at the flag: read-only inputs (kernels never write them) run the
    same machine code, where the dispatcher would compile a read-only specialisation per
    combination (``numba_cpu._as_writeable``) and the normal path's writeable views cost
    ~3 us (fa.sigmoid on 1,000 read-only float32 elements: 10.8 -> ~2 us).
    """

    __slots__ = ("kernel", "slot")

    def __init__(self, kernel, slot: list):
        self.kernel, self.slot = kernel, slot

    def __call__(self, *args) -> None:
        from fastact.kernels.numba_cpu import writeable_entry

        # (the fast path passes arrays, floats and None: there is always an entry point)
        entry = self.slot[0] = writeable_entry(self.kernel, args) or self.kernel
        entry(*args)


def _fast_qualifies(table: dict, a):
    """The fast entry point for ``a`` (an exact ndarray, C-contiguous, aligned, of a dtype in
    ``table``): the entry's first callable below its size limit, from there its third (a
    _RangedEntry, or None) where it has one; or None."""
    if type(a) is not _ndarray:
        return None
    fast = table.get(a.dtype)
    if fast is None or not ((f := a.flags).c_contiguous and f.aligned):
        return None
    if a.size < fast[1]:
        return fast[0]
    return fast[2] if len(fast) > 2 else None


def _fast_out_for(out, *inputs) -> bool:
    """Whether ``out`` can take an elementwise kernel's results on ``inputs`` (qualifying
    arrays of one dtype and shape) directly: an exact writeable ndarray, C-contiguous and
    aligned, of their dtype and shape, and apart from each input or exactly it (in place)."""
    x = inputs[0]
    if (type(out) is not _ndarray or out.dtype is not x.dtype or out.shape != x.shape
            or not ((f := out.flags).c_contiguous and f.aligned and f.writeable)):
        return False
    start = out.__array_interface__["data"][0]
    for a in inputs:
        other = a.__array_interface__["data"][0]
        if other != start and np.may_share_memory(out, a):
            return False
    return True


def _fast_elementwise_py(table: dict, x, params: tuple, nout: int, out=None):
    """``NAME``, ``NAME_derivative`` (nout 1) or ``NAME_and_derivative`` (nout 2, ``out``
    None) of ``x`` on the fast path, into ``out`` where it qualifies (:func:`_fast_out_for`),
    or None if ``x`` or ``out`` does not qualify.  The pure-Python twin of
    ``fastact._fastcall.elementwise`` (used where that extension is not built)."""
    entry = _fast_qualifies(table, x)
    if entry is None:
        return None
    if out is not None:
        if nout != 1 or not _fast_out_for(out, x):
            return None
        results = [out]
    else:
        results = [_empty(x.shape, x.dtype) for _ in range(nout)]
    if x.ndim == 1:  # (as it is: a reshape costs ~0.1 us)
        entry(x, *params, *results)
    else:
        entry(x.reshape(-1), *params, *[r.reshape(-1) for r in results])
    return results[0] if nout == 1 else tuple(results)


def _fast_backward_py(table: dict, grad, operand, params: tuple, out=None):
    """``NAME_backward(grad, x=operand)`` (``y=`` with the from-y table) on the fast path (into
    ``out`` where it qualifies), or None; the twin of ``fastact._fastcall.backward``."""
    entry = _fast_qualifies(table, operand)
    if (entry is None or type(grad) is not _ndarray or grad.dtype is not operand.dtype
            or grad.shape != operand.shape or not ((f := grad.flags).c_contiguous and f.aligned)):
        return None
    if out is not None and not _fast_out_for(out, operand, grad):
        return None
    result = _empty(operand.shape, operand.dtype) if out is None else out
    if operand.ndim == 1:
        entry(grad, operand, *params, result)
    else:
        entry(grad.reshape(-1), operand.reshape(-1), *params, result.reshape(-1))
    return result


class _SizedEntry:
    """A ``whole`` fast-path entry (``_fast_fill``): below the parallel threshold the serial
    twin's entry point (an _EntryPoint until its first call), else the public kernel, which
    runs the parallel twin; the size is the one the kernel decides by (``size_index``).
    (``fa.nll_loss`` on 32 x 100 float32: 2.2 us through the kernel object, 1.4 us so.)"""

    __slots__ = ("kernel", "threshold", "small", "index")

    def __init__(self, kernel, threshold: int):
        self.kernel, self.threshold = kernel, threshold
        self.small = _fast_entry(kernel.serial, threshold)
        self.index = kernel._size_index

    def __call__(self, *args) -> None:
        if args[self.index].size < self.threshold:
            self.small[0](*args)
        else:
            self.kernel(*args)


def _fast_entry(kernel, limit: int) -> list:
    """A fast-path table entry: [callable, size limit] (see _EntryPoint)."""
    slot = [None, limit]
    slot[0] = _EntryPoint(kernel, slot)
    return slot


_FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _remember_params(spec: _registry.OpSpec, raw: dict, params: tuple) -> None:
    """Cache validated parameters for the fast path, keyed by the values as passed, when every
    one is a plain float (str for a choice parameter): the only types the fast path accepts, so
    a cached key never stands for an int or bool that validation would treat differently."""
    values = tuple(raw.values())  # (the wrappers pass the parameters in registry order)
    cache = _FAST_PARAMS[spec.name]
    # (no zeros: 0.0 and -0.0 are one dict key, but leaky_relu's slope -0.0 gives other signed
    # zeros than 0.0)
    if all(type(v) is (str if p.choices else float) and v != 0.0
           for v, p in zip(values, spec.params)) and values not in cache:
        if len(cache) >= _FAST_PARAMS_MAX:
            cache.clear()
        cache[values] = params


def _clear_fast_path() -> None:
    for table in _FAST.values():
        table.clear()


_dispatch.TABLE_LISTENERS.append(_clear_fast_path)


class _RangedEntry:
    """A fast-path table entry's callable from its size limit up (its third element): the
    public kernel of the backend automatic dispatch picks for the call's size (the dispatch
    table's run that holds the size of the first argument), looked up as the normal path looks
    it up (``_dispatch.resolve``, then the module's kernel by name), so exactly the kernel the
    normal path would call, with the normal path's ~8 us of Python checks, conversions and
    dispatch skipped: ``fa.relu(x, out=r)`` on 1e4 float32 elements, 1 thread, 10.3 -> 2.6 us
    (``np.maximum(x, 0, out=r)`` 4.5 us); 1e6, 2 threads, ~95 -> ~87 us.  Each run's module
    is resolved on its first call (no backend is imported before a call needs it)."""

    __slots__ = ("kernel", "key", "dtype", "starts", "modules")

    def __init__(self, kernel: str, key: str, dtype: str, starts: list):
        self.kernel, self.key, self.dtype, self.starts = kernel, key, dtype, starts
        self.modules = [None] * len(starts)

    def __call__(self, *args) -> None:
        size = args[0].size
        run = _bisect_right(self.starts, size) - 1 if len(self.starts) > 1 else 0
        module = self.modules[run]
        if module is None:
            module = self.modules[run] = _dispatch.resolve(None, key=self.key, dtype=self.dtype,
                                                           size=size)[1]
            if _PARTIAL in _FAST[self.kernel]:  # (Numba may be loaded now)
                _fast_fill(self.kernel, self.key, None, module)
        getattr(module, self.kernel)(*args)


_PARTIAL = "partial"  # a _FAST table's key while its entries lack the serial Numba kernel
_NUMBA_MODULE, _CYTHON_MODULE = "fastact.kernels.numba_cpu", "fastact.kernels._cython_kernels"


def _fast_fill(kernel_name: str, key: str, backend, module, whole: bool = False,
               kernel: str | None = None) -> None:
    """Fill the fast path's table for ``kernel_name`` after a call with automatic dispatch
    that resolved to ``module`` (Numba or Cython).

    The fast path runs exactly what the normal path would run for a C-contiguous
    float32/float64 array: below the Numba range's size limit (capped at the parallel
    threshold) the serial Numba kernel's entry point (``numba_cpu._Kernel`` calls the serial
    twin there), from that limit up a _RangedEntry (the kernel of the backend the dispatch
    table picks for the size), with the same validation outcome (nothing to check for such an
    array; parameters must be plain values the normal path has validated before, see
    ``_remember_params``).  Measured: ``fa.relu`` on 1,000 float32 elements 7.3 -> ~1 us
    (``np.maximum(x, 0)`` ~0.9 us); the benchmark group is ``relu-forward-float32-1000``.
    Where Numba is not loaded yet (a first call that dispatch gave Cython), the table is
    filled without the serial entries and marked partial; a later call that loads Numba
    fills it again.

    ``whole``: record the public Numba kernel itself (serial or parallel by size, as the
    normal path calls it) up to the table's Numba range, for the row losses, whose fast path
    pays off beyond the parallel threshold (its Python pre-pass and reduction cost ~13 us).
    ``kernel``: the module's kernel to record, when not ``kernel_name`` (the row losses'
    backward records the ``_and_grad`` kernel of the backend dispatch picks for the backward:
    the same row code with the loss stored too, so the gradient is bitwise the backward's).
    """
    table = _FAST.get(kernel_name)
    if (table is None or (table and _PARTIAL not in table) or backend is not None
            or _dispatch._context.get() is not None or _dispatch._config.BACKEND is not None):
        return
    name = getattr(module, "__name__", "")
    if whole or name != _CYTHON_MODULE:
        numba = module if name == _NUMBA_MODULE else None
    else:
        numba = _dispatch._loaded.get("numba")
        if table and numba is None:
            return  # (partial, and still no Numba)
    if numba is None and (whole or name != _CYTHON_MODULE):
        return
    kernel = kernel or kernel_name
    dispatch = _dispatch.dispatch_table()
    serial, threshold = None, 0
    if numba is not None:
        serial = getattr(getattr(numba, kernel), "serial", None)
        threshold = numba.PARALLEL_THRESHOLD
        # (no serial twin: a wrapped kernel, tests recording calls; a call inside
        # fastact.warmup sees a temporary threshold of 0 or 2**62: no shortcut)
        if serial is None or threshold != _dispatch._config.PARALLEL_THRESHOLD:
            return
    elif getattr(module, kernel, None) is None:
        return
    for dtype in _FAST_DTYPES:
        if whole:
            limit = 2**62 if dispatch is None else dispatch.limit(key, dtype.name, "numba")
            if limit > 0:
                table[dtype] = [_SizedEntry(getattr(numba, kernel), threshold), limit]
            continue
        limit = 0
        if serial is not None:
            limit = threshold if dispatch is None else min(
                threshold, dispatch.limit(key, dtype.name, "numba"))
        runs = None if dispatch is None else dispatch.runs(key, dtype.name)
        starts = [limit] + ([s for s in runs[0] if s > limit] if runs else [])
        slot = [None, limit, _RangedEntry(kernel, key, dtype.name, starts)]
        if limit > 0:
            slot[0] = _EntryPoint(serial, slot)
        table[dtype] = slot
    if whole or numba is not None:
        table.pop(_PARTIAL, None)
    else:
        table[_PARTIAL] = True


def _define_elementwise() -> None:
    """Define ``fa.NAME``, ``NAME_derivative``, ``NAME_and_derivative`` and ``NAME_backward`` for
    every elementwise op of the registry, with real signatures (``help`` and ``inspect`` show
    the parameters) and docstrings assembled from ``_docs.py``."""
    for spec in _registry.elementwise_ops():
        for form in spec.forms:
            source = _elementwise_source(spec, form)
            exec(compile(source, f"<fastact.api: {spec.public_name(form)}>", "exec"), globals())
            globals()[spec.public_name(form)].__doc__ = _elementwise_doc(spec, form)


_define_elementwise()


# ------------------------------------------------------------------------------------------------
# prelu
# ------------------------------------------------------------------------------------------------

@_document("prelu", "forward")
def prelu(x, weight, *, out=None, backend=None):
    return _prelu("forward", {"x": x}, weight, out, backend)


@_document("prelu", "derivative")
def prelu_derivative(x, weight, *, out=None, backend=None):
    return _prelu("derivative", {"x": x}, weight, out, backend)


@_document("prelu", "and_derivative")
def prelu_and_derivative(x, weight, *, out=None, backend=None):
    return _prelu("and_derivative", {"x": x}, weight, out, backend)


@_document("prelu", "backward")
def prelu_backward(grad, *, x, weight, out=None, backend=None):
    return _prelu("backward", {"grad": grad, "x": x}, weight, out, backend)


# ------------------------------------------------------------------------------------------------
# softmax family
# ------------------------------------------------------------------------------------------------

def _row_fast(kernel: str, x, grad, axis, where, temperature, out, backend):
    """The small-array fast path of the softmax family (see _fast_fill), or None where it does
    not apply: rows along the last axis of a C-contiguous native float32/float64
    ndarray ``x`` (the backward's ``y``; ``grad`` of the same dtype, shape and layout), no mask,
    a temperature given as a positive finite float, no out/backend/context override.
    Everything else takes the normal path with its checks and errors.  ``fa.softmax`` on 1,000
    float32 elements: 14.0 -> 2.1 us (torch.softmax 2.5 us; the benchmark group
    softmax-forward-float32-1000), ~1.2 us with the checks in C (``_fast_rows``)."""
    if (where is not None or out is not None or backend is not None or type(axis) is not int
            or type(temperature) is not float or not 0.0 < temperature < math.inf
            or _context_get() is not None):
        return None
    return _fast_rows(_FAST[kernel], x, grad, temperature, axis)


def _fast_rows_py(table: dict, x, grad, temperature: float, axis: int):
    """The twin of ``fastact._fastcall.rows``: ``x`` (and ``grad``) qualify as in
    ``_fast_qualifies``, of at least one dimension and not empty, ``axis`` the last."""
    entry = _fast_qualifies(table, x)
    if entry is None or not x.ndim or not x.size or axis not in (-1, x.ndim - 1):
        return None
    width = x.shape[-1]
    result = _empty(x.shape, x.dtype)
    rows = [a if a.ndim == 2 else a.reshape(-1, width) for a in (x, result)]
    if grad is None:
        entry(rows[0], None, temperature, rows[1])
        return result
    if (type(grad) is not _ndarray or grad.dtype is not x.dtype or grad.shape != x.shape
            or not ((f := grad.flags).c_contiguous and f.aligned)):
        return None
    entry(grad if grad.ndim == 2 else grad.reshape(-1, width), *rows[:1], None, temperature,
          rows[1])
    return result




def softmax(x, *, axis=-1, where=None, temperature=1.0, out=None, backend=None):
    result = _row_fast("softmax_forward", x, None, axis, where, temperature, out, backend)
    if result is not None:
        return result
    return _rowwise("softmax", "forward", {"x": x}, axis, where, temperature, out, backend)


def log_softmax(x, *, axis=-1, where=None, temperature=1.0, out=None, backend=None):
    result = _row_fast("log_softmax_forward", x, None, axis, where, temperature, out, backend)
    if result is not None:
        return result
    return _rowwise("log_softmax", "forward", {"x": x}, axis, where, temperature, out, backend)


def softmax_backward(grad, *, y, axis=-1, where=None, temperature=1.0, out=None, backend=None):
    result = _row_fast("softmax_backward", y, grad, axis, where, temperature, out, backend)
    if result is not None:
        return result
    return _rowwise("softmax", "backward", {"grad": grad, "y": y}, axis, where, temperature,
                    out, backend)


def log_softmax_backward(grad, *, y, axis=-1, where=None, temperature=1.0, out=None,
                         backend=None):
    result = _row_fast("log_softmax_backward", y, grad, axis, where, temperature, out, backend)
    if result is not None:
        return result
    return _rowwise("log_softmax", "backward", {"grad": grad, "y": y}, axis, where,
                    temperature, out, backend)


def softmin(x, *, axis=-1, where=None, temperature=1.0, out=None, backend=None):
    result = _row_fast("softmin_forward", x, None, axis, where, temperature, out, backend)
    if result is not None:
        return result
    return _rowwise("softmin", "forward", {"x": x}, axis, where, temperature, out, backend)


def softmin_backward(grad, *, y, axis=-1, where=None, temperature=1.0, out=None, backend=None):
    result = _row_fast("softmin_backward", y, grad, axis, where, temperature, out, backend)
    if result is not None:
        return result
    return _rowwise("softmin", "backward", {"grad": grad, "y": y}, axis, where, temperature,
                    out, backend)


def logsumexp(x, *, axis=-1, where=None, temperature=1.0, keepdims=False, out=None,
              backend=None):
    return _rowwise("logsumexp", "forward", {"x": x}, axis, where, temperature, out, backend,
                    keepdims=keepdims)


from ._docs import ROW_DOCS as _ROW_DOCS  # noqa: E402

for _fn in (softmax, log_softmax, softmax_backward, log_softmax_backward, softmin,
            softmin_backward, logsumexp):
    _fn.__doc__ = _ROW_DOCS[_fn.__name__]
del _fn


# ------------------------------------------------------------------------------------------------
# gated units: act(gate) * value (glu: halves of one input along an axis; swiglu/geglu: a, b)
# ------------------------------------------------------------------------------------------------

def _gated(name: str, form: str, arrays: dict, param_values: dict, axis, out, backend):
    spec = OPS_BY_NAME[name]
    fname = _PREFIX + spec.public_name(form)
    if _dask.any_dask(*arrays.values()):
        return _dask.gated(_public(name, form), spec, form, arrays, param_values, axis, out,
                           backend)
    if _device.any_device(arrays.values()):
        return _device.gated(spec, form, fname, arrays, param_values, axis, out, backend)
    named = {k: _validate.as_array(fname, k, v) for k, v in arrays.items()}
    rdtype = _validate.result_dtype(*named.values())
    cdtype = _validate.compute_dtype(rdtype)
    params = _validate.params(fname, spec, param_values) if spec.params else ()
    in_shape, out_shape, rows, width, stride = _validate.gated_layout(
        fname, spec.extra["split"], named, axis)
    if form == "forward":
        outs = (_validate.check_out(fname, "out", out, out_shape, rdtype),)
    elif spec.extra["split"]:
        outs = (_validate.check_out(fname, "out", out, in_shape, rdtype),)
    else:
        outs = _validate.check_out_pair(fname, out, in_shape, rdtype)
    module = _dispatch.resolve(backend, key=fname[len(_PREFIX):], dtype=_validate.DTYPE_NAMES[cdtype],
                               size=rows * width)[1]
    flats = {k: _validate.flat(a, cdtype) for k, a in named.items()}
    shape = out_shape if form == "forward" else in_shape
    buffers = [_validate.kernel_buffer(o, shape, cdtype, list(flats.values())) for o in outs]
    if rows * width:
        kernel = getattr(module, _KERNELS[name, form])
        kouts = [b.reshape(-1) for b in buffers]
        device = getattr(kernel, "device_only", False)
        if device:  # backend='cuda' on host arrays: whole buffers in, whole results back
            flats = {k: module.to_device(a) for k, a in flats.items()}
            kouts = [module.empty(b.shape, cdtype) for b in kouts]
        if spec.extra["split"]:  # x = [value | gate] per row: the gate half starts width on
            gate, value = flats["x"][width:], flats["x"]
            gouts = [kouts[0][width:], kouts[0]] if form == "backward" else kouts
        else:
            gate, value, gouts = flats["a"], flats["b"], kouts
        grad = (flats["grad"],) if form == "backward" else ()
        kernel(*grad, gate, value, rows, width, stride, *params, *gouts)
        if device:
            for d, b in zip(kouts, buffers):
                d.copy_to_host(b.reshape(-1))
    results = tuple(_validate.deliver(o, b, shape, rdtype) for o, b in zip(outs, buffers))
    return results if len(results) == 2 else results[0]


def glu(x, *, axis=-1, out=None, backend=None):
    return _gated("glu", "forward", {"x": x}, {}, axis, out, backend)


def glu_backward(grad, *, x, axis=-1, out=None, backend=None):
    return _gated("glu", "backward", {"grad": grad, "x": x}, {}, axis, out, backend)


def swiglu(a, b, *, out=None, backend=None):
    return _gated("swiglu", "forward", {"a": a, "b": b}, {}, None, out, backend)


def swiglu_backward(grad, *, a, b, out=None, backend=None):
    return _gated("swiglu", "backward", {"grad": grad, "a": a, "b": b}, {}, None, out, backend)


def geglu(a, b, *, approximate="none", out=None, backend=None):
    return _gated("geglu", "forward", {"a": a, "b": b}, {"approximate": approximate}, None, out,
                  backend)


def geglu_backward(grad, *, a, b, approximate="none", out=None, backend=None):
    return _gated("geglu", "backward", {"grad": grad, "a": a, "b": b},
                  {"approximate": approximate}, None, out, backend)


from ._docs import GATED_DOCS as _GATED_DOCS  # noqa: E402

for _fn in (glu, glu_backward, swiglu, swiglu_backward, geglu, geglu_backward):
    _fn.__doc__ = _GATED_DOCS[_fn.__name__]
del _fn


# ------------------------------------------------------------------------------------------------
# losses
# ------------------------------------------------------------------------------------------------
#
# Every loss validates everything (and runs its pre-pass: target range, BCE input range) before
# any kernel runs; kernels see (rows, C) / flat C-contiguous arrays, float64 weights and int64
# targets.  Per-row / per-block partial losses come back in float64; the reduction is a pairwise
# np.sum of those, divided once, rounded once to the result dtype.

from numbers import Integral as _Integral  # noqa: E402

_LOSS_FNAMES = {(op.name, form): _PREFIX + op.public_name(form) for op in _registry.OPS
                if op.kind == "loss" for form in op.forms}


def _loss_reduction(fname: str, reduction, spec) -> str:
    choices = next(p for p in spec.params if p.name == "reduction").choices
    if not isinstance(reduction, str) or reduction not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{fname}: reduction must be one of {allowed}, got {reduction!r}")
    return reduction


def _loss_target_float(fname: str, target) -> np.ndarray:
    t = _loss_target_raw(fname, target)
    if t.dtype == np.bool_:
        raise TypeError(f"{fname}: target must be a float array, got dtype bool; convert it "
                        "first, e.g. target.astype(np.float32)")
    return _validate.as_array(fname, "target", target)


def _loss_grad_loss(fname: str, grad_loss, shape: tuple) -> np.ndarray:
    """grad_loss as float64, size 1 (a scalar) or the unreduced loss's size (flat)."""
    if isinstance(grad_loss, (bool, np.bool_)):
        raise TypeError(f"{fname}: grad_loss must be a real number or a float array, got bool")
    g = _validate.as_array(fname, "grad_loss", grad_loss)
    if g.size == 1 and g.ndim <= len(shape):
        return np.asarray(g, dtype=np.float64).reshape(1)
    try:
        b = np.broadcast_to(g, shape)
    except ValueError:
        raise ValueError(f"{fname}: grad_loss has shape {g.shape}, which does not broadcast to "
                         f"the unreduced loss shape {shape}") from None
    return np.ascontiguousarray(b, dtype=np.float64).reshape(-1)


def _loss_forward_out(fname: str, out, reduction: str, shape: tuple, rdtype):
    """``out`` of a forward loss: only with reduction='none', shaped like the loss."""
    if out is None:
        return None
    if reduction != "none":
        raise _loss_out_reduced(fname)
    return _validate.check_out(fname, "out", out, shape, rdtype)


def _loss_out_reduced(fname: str) -> ValueError:
    return ValueError(f"{fname}: out is only accepted with reduction='none' (a reduced loss is "
                      "returned as a single value: a NumPy scalar, or a 0-d device array)")


def _loss_value(partial_sum_parts: np.ndarray, reduction: str, count: float, rdtype,
                none_values=None, none_shape=None, out=None):
    """The reduced loss as a NumPy scalar of ``rdtype`` (or the 'none' array, in ``out``)."""
    with np.errstate(all="ignore"):
        if reduction == "none":
            if out is not None:
                np.copyto(out, none_values.reshape(none_shape))
                return out
            return np.array(none_values.reshape(none_shape), dtype=rdtype)
        total = np.float64(np.sum(partial_sum_parts)) if partial_sum_parts.size else np.float64(0)
        if reduction != "sum":
            total = total / np.float64(count)
        return rdtype.type(total)


def _loss_class_weight(fname: str, weight, C: int) -> np.ndarray:
    if weight is None:
        return np.ones(C, np.float64)
    w = _validate.as_array(fname, "weight", weight)
    if w.ndim != 1 or w.shape[0] != C:
        raise ValueError(f"{fname}: weight has shape {w.shape}, expected ({C},) (one weight "
                         "per class)")
    return np.ascontiguousarray(w, dtype=np.float64)


def _range_check(fname: str, t: np.ndarray, C: int, ignore_index: int, shape: tuple) -> None:
    """The pre-pass: every target in [0, C) or equal to ignore_index, else IndexError."""
    bad = ((t < 0) | (t >= C)) & (t != ignore_index)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise _range_error(fname, int(t[k]), k, C, ignore_index, shape)


def _class_targets(fname: str, t: np.ndarray, C: int, ignore_index: int, shape: tuple,
                   w) -> float:
    """The class-index pre-pass: the range check (IndexError, before any kernel runs) and the
    mean's denominator, the sum of the weights ``w`` (None: all ones) of the targets that are
    not ``ignore_index``.  Usually two reductions (min, max): with every target in [0, C) and
    ``ignore_index`` outside [min, max], nothing is ignored and nothing else is checked.  (Five
    NumPy passes and a fancy index before: nll_loss on 128,000 rows of 32 float32 classes,
    numba, 537 -> ~300 us, the kernel itself 124 us.)"""
    if not t.size:
        return 0.0
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi >= C:
        _range_check(fname, t, C, ignore_index, shape)  # (ignored targets may lie outside)
    if lo <= ignore_index <= hi:
        keep = t != ignore_index
        return float(np.count_nonzero(keep)) if w is None else float(np.sum(w[t[keep]]))
    return float(t.size) if w is None else float(np.sum(w[t]))


def _range_error(fname: str, value: int, k: int, C: int, ignore_index: int,
                 shape: tuple) -> IndexError:
    pos = tuple(int(i) for i in np.unravel_index(k, shape)) if shape else ()
    return IndexError(f"{fname}: target value {value} at position {pos} is out of range for "
                      f"{C} classes (valid: 0..{C - 1}, or ignore_index={ignore_index})")


def _loss_target_raw(fname: str, target) -> np.ndarray:
    """The target as an ndarray of any dtype, before the integer/float decision: masked arrays
    and ragged or non-numeric lists are a TypeError naming ``target`` (as for every array)."""
    if isinstance(target, np.ndarray):
        if type(target) is not np.ndarray and isinstance(target, _validate._masked_array_type()):
            raise TypeError(f"{fname}: target is a masked array; fastact does not apply masks: "
                            "pass target.filled(value) (or ignore_index= for class targets)")
        return target
    if isinstance(target, (list, tuple, int, float, np.generic)) and not isinstance(target, bool):
        try:
            return np.asarray(target)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{fname}: target is not a rectangular list of numbers ({exc})")
    return _validate.as_array(fname, "target", target)  # the shared error for anything else


def _row_loss_checks(name: str, fname: str, spec, xshape: tuple, tdtype: np.dtype,
                     tshape: tuple, reduction, ignore_index, label_smoothing, axis):
    """The checks of a row loss from shapes and dtypes only (host and device inputs): returns
    (reduction, ignore_index, smoothing, class axis, C, loss shape, probability targets?)."""
    reduction = _loss_reduction(fname, reduction, spec)
    if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(ignore_index, _Integral):
        raise TypeError(f"{fname}: ignore_index must be an integer, got "
                        f"{type(ignore_index).__name__}")
    ignore_index = int(ignore_index)
    smoothing = 0.0
    if name == "cross_entropy":
        smoothing = _validate.real_param(fname, "label_smoothing", label_smoothing)
        if not 0.0 <= smoothing <= 1.0:
            raise ValueError(f"{fname}: label_smoothing must be in [0, 1], got {smoothing}")
    ndim = len(xshape)
    if ndim == 0:
        raise ValueError(f"{fname}: input must have a class axis (1-D (C,) or (N, C, ...)), "
                         "got a 0-d array")
    if axis is None:
        ax = 1 if ndim >= 2 else 0
    else:
        ax = _validate.normalize_axis(fname, axis, ndim)
    C = xshape[ax]
    loss_shape = xshape[:ax] + xshape[ax + 1:]
    # target: class indices (any integer dtype) or, for cross_entropy, probabilities
    kinds = " or float probabilities" if name == "cross_entropy" else ""
    if tdtype == np.bool_:
        raise TypeError(f"{fname}: target must be integer class indices{kinds}, got "
                        "dtype bool; convert it first, e.g. target.astype(np.int64)")
    prob = tdtype.kind == "f" and name == "cross_entropy"
    if prob:
        if tdtype not in _validate._NATIVE:
            raise _validate._hint(fname, "target", f"dtype {tdtype}")
        if tshape != xshape:
            raise ValueError(f"{fname}: probability target has shape {tshape}, expected "
                             f"{xshape} (the input's shape; fastact does not broadcast)")
    elif tdtype.kind in "iu":
        if tshape != loss_shape:
            raise ValueError(f"{fname}: target has shape {tshape}, expected {loss_shape} "
                             f"(the input's shape without the class axis {ax})")
    else:
        raise TypeError(f"{fname}: target must be integer class indices{kinds}, got "
                        f"dtype {tdtype}")
    return reduction, ignore_index, smoothing, ax, C, loss_shape, prob


def _row_loss(name: str, form: str, grad_loss, input, target, weight, ignore_index,
              reduction, label_smoothing, axis, out, backend):
    spec = OPS_BY_NAME[name]
    fname = _LOSS_FNAMES[name, form]
    if _dask.any_dask(input, target, weight, grad_loss):
        kw = dict(weight=weight, ignore_index=ignore_index, reduction=reduction, axis=axis,
                  out=out, backend=backend)
        if name == "cross_entropy":
            kw["label_smoothing"] = label_smoothing
        return _dask.loss(name, form, fname, grad_loss, input, target, kw)
    if _device.any_device((input, target, weight, out, grad_loss)):
        return _device.row_loss(name, form, fname, spec, grad_loss, input, target, weight,
                                ignore_index, reduction, label_smoothing, axis, out, backend)
    x = _validate.as_array(fname, "input", input)
    rdtype = _validate.result_dtype(x)
    cdtype = _validate.compute_dtype(rdtype)
    t_raw = _loss_target_raw(fname, target)
    reduction, ignore_index, smoothing, ax, C, loss_shape, prob = _row_loss_checks(
        name, fname, spec, x.shape, t_raw.dtype, t_raw.shape, reduction, ignore_index,
        label_smoothing, axis)
    rows = math.prod(loss_shape)
    if prob:
        q = _validate.as_array(fname, "target", t_raw)
    w = _loss_class_weight(fname, weight, C)
    if form != "forward":
        out = _validate.check_out(fname, "out", out, x.shape, rdtype)
    else:
        out = _loss_forward_out(fname, out, reduction, loss_shape, rdtype)
    if form == "backward":
        g = _loss_grad_loss(fname, grad_loss, loss_shape)
    # pre-pass (no kernel has run, nothing is written yet)
    if prob:
        count = float(rows)
    else:
        t = t_raw.astype(np.int64, copy=False).reshape(-1)
        if t_raw.dtype.kind == "u" and t_raw.dtype.itemsize == 8:
            t = np.where(t_raw.reshape(-1) > np.iinfo(np.int64).max, np.int64(C), t)
        t = np.ascontiguousarray(t)
        count = _class_targets(fname, t, C, ignore_index, loss_shape,
                               None if weight is None else w)
    _, module = _dispatch.resolve(backend, key=fname[len(_PREFIX):], dtype=_validate.DTYPE_NAMES[cdtype],
                                  size=x.size)
    if not prob:
        _fast_fill(f"{name}_{form}", fname[len(_PREFIX):], backend, module, whole=True,
                   kernel=f"{name}_and_grad" if form == "backward" else None)
    last = ax == x.ndim - 1

    def to_rows(a, dtype):
        moved = a if last else np.moveaxis(a, ax, -1)
        return np.ascontiguousarray(moved, dtype=dtype).reshape(rows, C)

    xr = to_rows(x, cdtype)
    ins = [xr, to_rows(q, cdtype)] if prob else [xr, t]
    kname = f"{name}_prob" if prob else name
    scalars = (w, smoothing) if prob else ((w, ignore_index, smoothing) if name == "cross_entropy"
                                         else (w, ignore_index))
    # gradient scale of the reduced loss; all targets ignored ('mean' loss NaN): gradient 0
    scale = (1.0 / count if count else 0.0) if reduction == "mean" else 1.0
    losses = np.zeros(rows, np.float64)
    work = rows * C > 0
    if form == "forward":
        if work:
            getattr(module, f"{kname}_forward")(*ins, *scalars, losses)
        return _loss_value(losses, reduction, count, rdtype, losses, loss_shape, out)
    if last:
        buffer = _validate.kernel_buffer(out, x.shape, cdtype, ins)
    else:
        buffer = np.empty((rows, C), cdtype)
    grid = buffer.reshape(rows, C)
    if form == "and_grad":
        gk = np.array([scale])
        if work:
            getattr(module, f"{kname}_and_grad")(*ins, *scalars, gk, losses, grid)
    else:
        gk = g * scale if reduction != "none" else g
        if work:
            getattr(module, f"{kname}_backward")(gk, *ins, *scalars, grid)
    if last:
        grad = _validate.deliver(out, buffer, x.shape, rdtype)
    else:
        moved = np.moveaxis(grid.reshape(loss_shape + (C,)), -1, ax)
        with np.errstate(over="ignore"):
            if out is None:
                grad = np.ascontiguousarray(moved, dtype=rdtype)
            else:
                np.copyto(out, moved)
                grad = out
    if form == "backward":
        return grad
    return _loss_value(losses, reduction, count, rdtype, losses, loss_shape), grad


def _elementwise_weight(fname: str, argname: str, weight, shape: tuple, n: int) -> np.ndarray:
    """Element weights as float64: size 1 (None or a single value) or n (broadcast to the
    input's shape, as PyTorch does for ``weight`` and ``pos_weight``)."""
    if weight is None:
        return np.ones(1, np.float64)
    w = _validate.as_array(fname, argname, weight)
    if w.size == 1 and w.ndim <= len(shape):
        return np.asarray(w, dtype=np.float64).reshape(1)
    try:
        b = np.broadcast_to(w, shape)
    except ValueError:
        raise ValueError(f"{fname}: {argname} has shape {w.shape}, which does not broadcast "
                         f"to the input's shape {shape}") from None
    return np.ascontiguousarray(b, dtype=np.float64).reshape(-1)


_LOSS_BLOCK = 4096  # elements per partial sum of the elementwise loss kernels (all backends)


def _elementwise_loss_checks(fname: str, spec, reduction, param):
    """(reduction, the formula's scalar parameter) of an elementwise loss, checked."""
    reduction = _loss_reduction(fname, reduction, spec)
    p = 0.0
    scalar = [pp for pp in spec.params if pp.name != "reduction"]
    if scalar:
        pname = scalar[0].name
        if pname == "log_target":
            if not isinstance(param, (bool, np.bool_)):
                raise TypeError(f"{fname}: log_target must be a bool, got "
                                f"{type(param).__name__}")
            p = 1.0 if param else 0.0
        else:
            p = _validate.real_param(fname, pname, param, scalar[0].check)
    return reduction, p


def _input_range_error(fname: str, spec, value: float, k: int, shape: tuple) -> ValueError:
    lo, hi = spec.extra["input_range"]
    pos = tuple(int(i) for i in np.unravel_index(k, shape)) if shape else ()
    return ValueError(f"{fname}: input must hold probabilities in [{lo:g}, {hi:g}]; "
                      f"found {value!r} at position {pos}")


def _elementwise_loss(name: str, form: str, grad_loss, input, target, weight, pos_weight,
                      param, reduction, out, backend):
    spec = OPS_BY_NAME[name]
    fname = _LOSS_FNAMES[name, form]
    if _dask.any_dask(input, target, weight, pos_weight, grad_loss):
        kw = {w: v for w, v in (("weight", weight), ("pos_weight", pos_weight))
              if w in spec.extra["weights"]}
        kw.update({p.name: param for p in spec.params if p.name != "reduction"})
        kw.update(reduction=reduction, out=out, backend=backend)
        return _dask.loss(name, form, fname, grad_loss, input, target, kw)
    if _device.any_device((input, target, weight, pos_weight, out, grad_loss)):
        return _device.elementwise_loss(name, form, fname, spec, grad_loss, input, target,
                                        weight, pos_weight, param, reduction, out, backend)
    x = _validate.as_array(fname, "input", input)
    y = _loss_target_float(fname, target)
    shape = _validate.same_shape(fname, {"input": x, "target": y})
    rdtype = _validate.result_dtype(x)
    cdtype = _validate.compute_dtype(rdtype)
    reduction, p = _elementwise_loss_checks(fname, spec, reduction, param)
    n = x.size
    w = _elementwise_weight(fname, "weight", weight, shape, n)
    pw = _elementwise_weight(fname, "pos_weight", pos_weight, shape, n)
    if form != "forward":
        out = _validate.check_out(fname, "out", out, shape, rdtype)
    else:
        out = _loss_forward_out(fname, out, reduction, shape, rdtype)
    if form == "backward":
        g = _loss_grad_loss(fname, grad_loss, shape)
    xf = _validate.flat(x, cdtype)
    yf = _validate.flat(y, cdtype)
    if "input_range" in spec.extra:  # documented pre-pass (BCE: probabilities in [0, 1])
        lo, hi = spec.extra["input_range"]
        bad = ~((xf >= lo) & (xf <= hi))
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise _input_range_error(fname, spec, float(xf[k]), k, shape)
    count = float(n) if reduction != "batchmean" else float(shape[0] if shape else 1)
    scale = (1.0 / count if count else math.nan) if reduction in ("mean", "batchmean") else 1.0
    _, module = _dispatch.resolve(backend, key=fname[len(_PREFIX):], dtype=_validate.DTYPE_NAMES[cdtype], size=n)
    nb = (n + _LOSS_BLOCK - 1) // _LOSS_BLOCK
    partial = np.zeros(nb, np.float64)
    none = reduction == "none"
    per = np.empty(n if none else 0, np.float64)
    if form == "forward":
        if n:
            getattr(module, f"{name}_forward")(xf, yf, w, pw, p, per, partial)
        return _loss_value(partial, reduction, count, rdtype, per, shape, out)
    buffer = _validate.kernel_buffer(out, shape, cdtype, [xf, yf], apart=True)
    bflat = buffer.reshape(-1)
    if form == "and_grad":
        if n:
            getattr(module, f"{name}_and_grad")(xf, yf, w, pw, p, np.array([scale]), per,
                                                bflat, partial)
        grad = _validate.deliver(out, buffer, shape, rdtype)
        return _loss_value(partial, reduction, count, rdtype, per, shape), grad
    gk = g if none else g * scale
    if n:
        getattr(module, f"{name}_backward")(gk, xf, yf, w, pw, p, bflat)
    return _validate.deliver(out, buffer, shape, rdtype)


# -- cross_entropy / nll_loss ---------------------------------------------------------------------

# -- the small-batch fast path of cross_entropy and nll_loss ----------------------------------

_FAST.update({f"{name}_{form}": {} for name in ("cross_entropy", "nll_loss")
              for form in ("forward", "and_grad", "backward")})
_INT64 = np.dtype(np.int64)
_FLOAT64_SCALAR, _FLOAT32_SCALAR = np.float64, np.float32
_FLOAT32_MAX = float(np.finfo(np.float32).max)
#: C -> float64 ones, the class weights of an unweighted loss on the fast path (kernels only
#: read them); bounded like _FAST_PARAMS.
_LOSS_ONES: dict = {}


def _row_loss_fast(name: str, form: str, x, target, ignore_index, reduction, smoothing, axis,
                   weight, out, backend, grad_loss=None):
    """``cross_entropy``/``nll_loss`` (``_and_grad``) on the small-array fast path, or None (then
    the normal path runs, with its checks and errors).

    It takes the common training-loop call only: (N, C) C-contiguous aligned float32/float64
    logits below the fast path's size limit, 1-D int64 class indices, no weight, no out,
    backend or context override, ``axis`` None or the last, ``reduction`` 'mean' or 'sum', a
    plain int ``ignore_index`` outside the targets' range, ``label_smoothing`` a plain float in
    [0, 1].  The pre-pass is the normal path's (min and max of the targets, before any kernel
    runs); every target in [0, C) and none ignored, so the mean divides by N.  The kernel is
    the one the normal path would run (``_fast_fill(whole=True)``: the Numba kernel, serial or
    parallel by size, where automatic dispatch picks Numba) with the same arguments, and the
    loss is summed (NumPy's pairwise order) and rounded as there, so the results are bitwise
    the normal path's (tested).  ``fa.cross_entropy_and_grad`` on 32 x 100 float32 logits 24.1
    -> ~10 us with the Python twin (``_fast_row_loss_py``), ~6 us in C
    (``fastact._fastcall.row_loss``); ``fa.nll_loss`` 17.7 -> 1.4 us.

    ``*_backward`` (form ``backward``) takes a plain ``grad_loss`` (a Python float, an int of at
    most 2^53 in magnitude, or a NumPy float64/float32 scalar; not a bool, not an array) and
    runs the ``_and_grad`` kernel of the backend dispatch picks for the backward with the
    gradient scale ``grad_loss * (1 / N)`` ('mean') or ``grad_loss`` ('sum'), the normal
    path's ``g * scale``: bitwise its gradient (tested).  timeit, 32 x 100 float32:
    ``fa.cross_entropy_backward`` 20.9 -> 5.4 us, ``fa.nll_loss_backward`` 16.4 -> 1.8 us.
    """
    if (weight is not None or out is not None or backend is not None
            or not (axis is None or (type(axis) is int and (axis == -1 or axis == 1)))
            or type(ignore_index) is not int or not -2**63 <= ignore_index < 2**63
            or (reduction != "mean" and reduction != "sum")
            or (smoothing is not None and (type(smoothing) is not float
                                           or not 0.0 <= smoothing <= 1.0))
            or _context_get() is not None):
        return None
    scale = 1.0
    if form == "backward":
        kind = type(grad_loss)
        if kind is float or kind is _FLOAT64_SCALAR or kind is _FLOAT32_SCALAR:
            scale = float(grad_loss)
        elif kind is int and -2**53 <= grad_loss <= 2**53:
            scale = float(grad_loss)
        else:
            return None
    r = _fast_row_loss(_FAST[f"{name}_{form}"], x, target, ignore_index, smoothing,
                       reduction == "mean", form != "forward", _LOSS_ONES, scale)
    if r is None:
        return None
    if form == "backward":
        return r[1]
    total = r[0] if form == "and_grad" else r
    if x.dtype.itemsize == 4 and not abs(total) <= _FLOAT32_MAX:
        with np.errstate(all="ignore"):  # (overflow to inf, as _loss_value)
            value = np.float32(total)
    else:
        value = x.dtype.type(total)
    return (value, r[1]) if form == "and_grad" else value


def _fast_row_loss_py(table: dict, x, target, ignore_index: int, smoothing, mean: bool,
                      with_grad: bool, ones: dict, grad_scale: float = 1.0):
    """The twin of ``fastact._fastcall.row_loss``: the loss as a Python float (and the
    gradient), or None where the arrays do not qualify or a target is out of [0, C) or equal
    to ``ignore_index``."""
    entry = _fast_qualifies(table, x)
    if (entry is None or x.ndim != 2 or type(target) is not _ndarray or target.ndim != 1
            or target.dtype != _INT64 or not ((f := target.flags).c_contiguous and f.aligned)):
        return None
    rows, C = x.shape
    if target.shape[0] != rows or not x.size:
        return None
    lo, hi = int(target.min()), int(target.max())
    if lo < 0 or hi >= C or lo <= ignore_index <= hi:
        return None
    w = ones.get(C)
    if w is None:
        if len(ones) >= _FAST_PARAMS_MAX:
            ones.clear()
        w = ones[C] = np.ones(C, np.float64)
    losses = _empty(rows, np.float64)
    args = (x, target, w, ignore_index) if smoothing is None else (
        x, target, w, ignore_index, smoothing)
    if with_grad:
        grad = _empty(x.shape, x.dtype)
        entry(*args, np.array([grad_scale * (1.0 / rows) if mean else grad_scale]), losses,
              grad)
    else:
        entry(*args, losses)
    total = float(losses.sum())  # (np.sum's pairwise sum, as _loss_value)
    if mean:
        total = total / rows
    return (total, grad) if with_grad else total


try:  # the same in C (fa.tanh on 1,000 float32 elements ~1.23 -> ~0.95 us; see its docstring)
    from fastact._fastcall import (backward as _fast_backward, elementwise as _fast_elementwise,
                                   row_loss as _fast_row_loss, rows as _fast_rows)
except ImportError:  # built without it (no compiler): the Python twins
    _fast_elementwise, _fast_backward, _fast_rows, _fast_row_loss = (
        _fast_elementwise_py, _fast_backward_py, _fast_rows_py, _fast_row_loss_py)


def cross_entropy(input, target, *, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, axis=None, out=None, backend=None):
    result = _row_loss_fast("cross_entropy", "forward", input, target, ignore_index, reduction,
                            label_smoothing, axis, weight, out, backend)
    if result is not None:
        return result
    return _row_loss("cross_entropy", "forward", None, input, target, weight, ignore_index,
                     reduction, label_smoothing, axis, out, backend)


def cross_entropy_and_grad(input, target, *, weight=None, ignore_index=-100, reduction="mean",
                           label_smoothing=0.0, axis=None, out=None, backend=None):
    result = _row_loss_fast("cross_entropy", "and_grad", input, target, ignore_index, reduction,
                            label_smoothing, axis, weight, out, backend)
    if result is not None:
        return result
    return _row_loss("cross_entropy", "and_grad", None, input, target, weight, ignore_index,
                     reduction, label_smoothing, axis, out, backend)


def cross_entropy_backward(grad_loss, input, target, *, weight=None, ignore_index=-100,
                           reduction="mean", label_smoothing=0.0, axis=None, out=None,
                           backend=None):
    result = _row_loss_fast("cross_entropy", "backward", input, target, ignore_index,
                            reduction, label_smoothing, axis, weight, out, backend, grad_loss)
    if result is not None:
        return result
    return _row_loss("cross_entropy", "backward", grad_loss, input, target, weight,
                     ignore_index, reduction, label_smoothing, axis, out, backend)


def nll_loss(input, target, *, weight=None, ignore_index=-100, reduction="mean", axis=None,
             out=None, backend=None):
    result = _row_loss_fast("nll_loss", "forward", input, target, ignore_index, reduction,
                            None, axis, weight, out, backend)
    if result is not None:
        return result
    return _row_loss("nll_loss", "forward", None, input, target, weight, ignore_index,
                     reduction, 0.0, axis, out, backend)


def nll_loss_and_grad(input, target, *, weight=None, ignore_index=-100, reduction="mean",
                      axis=None, out=None, backend=None):
    result = _row_loss_fast("nll_loss", "and_grad", input, target, ignore_index, reduction,
                            None, axis, weight, out, backend)
    if result is not None:
        return result
    return _row_loss("nll_loss", "and_grad", None, input, target, weight, ignore_index,
                     reduction, 0.0, axis, out, backend)


def nll_loss_backward(grad_loss, input, target, *, weight=None, ignore_index=-100,
                      reduction="mean", axis=None, out=None, backend=None):
    result = _row_loss_fast("nll_loss", "backward", input, target, ignore_index, reduction,
                            None, axis, weight, out, backend, grad_loss)
    if result is not None:
        return result
    return _row_loss("nll_loss", "backward", grad_loss, input, target, weight, ignore_index,
                     reduction, 0.0, axis, out, backend)


# -- elementwise losses: generated (uniform signatures) ----------------------------------------------

def _elementwise_loss_source(spec: _registry.OpSpec, form: str) -> str:
    fn = spec.public_name(form)
    weights = spec.extra["weights"]
    scalar = [p for p in spec.params if p.name != "reduction"]
    kw = "".join(f"{w}=None, " for w in weights)
    kw += "".join(f"{p.name}={p.default!r}, " for p in scalar)
    kw += "reduction='mean', "
    wargs = ", ".join(w if w in weights else "None" for w in ("weight", "pos_weight"))
    parg = scalar[0].name if scalar else "None"
    head = "grad_loss, input, target" if form == "backward" else "input, target"
    gl = "grad_loss" if form == "backward" else "None"
    outkw, outarg = "out=None, ", "out"
    return (f"def {fn}({head}, *, {kw}{outkw}backend=None):\n"
            f"    return _elementwise_loss({spec.name!r}, {form!r}, {gl}, input, target, "
            f"{wargs}, {parg}, reduction, {outarg}, backend)\n")


def _define_elementwise_losses() -> None:
    for spec in _registry.loss_ops():
        if spec.extra.get("layout") != "elementwise":
            continue
        for form in spec.forms:
            source = _elementwise_loss_source(spec, form)
            exec(compile(source, f"<fastact.api: {spec.public_name(form)}>", "exec"), globals())


_define_elementwise_losses()


def _document_losses() -> None:
    from ._docs import LOSS_DOCS

    for spec in _registry.loss_ops():
        for form in spec.forms:
            fn = globals()[spec.public_name(form)]
            fn.__doc__ = LOSS_DOCS.get(fn.__name__)


_document_losses()
