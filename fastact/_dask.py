"""Dask arrays in, lazy dask arrays out.

Every public fastact function accepts ``dask.array.Array`` inputs.  The call is checked eagerly
(dtypes, shapes, parameters, axes: the same errors as for NumPy input, raised before any task is
built) by running the function on an empty NumPy array of the right dtype, which also gives the
result's dtype and ``meta``; the work itself is a ``map_blocks`` over the chunks, run by
whatever scheduler computes the result (threads, processes, a ``distributed`` cluster).

* elementwise ops, gated pairs (``swiglu``/``geglu``) and ``prelu``: block by block, in the
  input's chunks (other array operands are rechunked to match);
* row-wise ops (softmax family, ``glu``) need a whole row in one block: when the reduction axis
  spans several chunks it is **rechunked to a single chunk** along that axis (other axes keep
  their chunking), as ``dask.array`` itself does for ``cumsum``-like operations.  Chunk the
  array along the batch axes to keep blocks small;
* results with two outputs (``NAME_and_derivative``, ``*_backward`` of gated units) are two
  dask arrays computed by one task per block;
* reductions (``prelu_backward``'s ``grad_weight``, loss 'mean'/'sum') are tree reductions over
  per-block partial sums (``dask.array.sum``), accumulated in float64 like the NumPy path.

``out=`` is not supported with dask arrays (a lazy result has no buffer to write into):
``TypeError``.  dask is imported only here, and only when a dask array is passed.
"""

from __future__ import annotations

import math

import numpy as np


def is_dask(obj) -> bool:
    """True for a ``dask.array.Array`` (checked without importing dask)."""
    return type(obj).__module__.startswith("dask.") and hasattr(obj, "dask")


def any_dask(*objs) -> bool:
    return any(is_dask(o) for o in objs)


def _fname(fn) -> str:
    return f"fastact.{fn.__name__}"


def _meta_shape(shape: tuple) -> tuple:
    """An empty shape with the same ndim (and channel count, for prelu's weight check)."""
    if len(shape) == 0:
        return ()
    return (0,) + tuple(shape[1:2]) + (0,) * (len(shape) - 2)


def _meta_of(a, shape=None):
    dtype = a.dtype
    return np.empty(_meta_shape(a.shape if shape is None else shape), dtype)


def _check_out(fn, kwargs: dict) -> None:
    if kwargs.get("out") is not None:
        raise TypeError(f"{_fname(fn)}: out= is not supported with dask arrays (the result "
                        "is lazy); call .compute() or use da.store")


def _split(fn, args: tuple, kwargs: dict, skip=()):
    """Positions of the array operands among args and kwargs: ([(where, key, array)], shape).

    The dask arrays, and NumPy arrays of the same shape next to them (``grad`` given as NumPy,
    ``x`` as dask), which become dask arrays chunked like the first dask operand.
    """
    import dask.array as da

    items = [("arg", i, a) for i, a in enumerate(args)]
    items += [("kw", k, v) for k, v in kwargs.items() if k not in skip]
    found = [item for item in items if is_dask(item[2])]
    first = found[0][2]
    for where, key, a in items:
        if isinstance(a, np.ndarray) and a.ndim and a.shape == first.shape:
            found.append((where, key, da.from_array(a, chunks=first.chunks)))
    shape = first.shape
    for where, key, a in found[1:]:
        if a.shape != shape:
            name = key if where == "kw" else f"argument {key}"
            raise ValueError(f"{_fname(fn)}: {name} has shape {a.shape}, expected {shape} "
                             "(fastact does not broadcast)")
    if any(np.isnan(s) for s in shape):
        raise ValueError(f"{_fname(fn)}: dask arrays with unknown chunk sizes are not "
                         "supported; call .compute_chunk_sizes() first")
    return found, shape, da


def _substitute(args: tuple, kwargs: dict, found, values):
    args = list(args)
    kwargs = dict(kwargs)
    for (where, key, _), v in zip(found, values):
        if where == "arg":
            args[key] = v
        else:
            kwargs[key] = v
    return args, kwargs


def _eager_meta(fn, args, kwargs, found, shape):
    """Run ``fn`` on empty arrays: validates everything and returns the result's meta."""
    metas = [_meta_of(a, shape) for _, _, a in found]
    margs, mkw = _substitute(args, kwargs, found, metas)
    return fn(*margs, **mkw)


def _pin_backend(fn, kwargs: dict, arrays, dtype) -> dict:
    """``kwargs`` with ``backend`` set to what automatic dispatch picks for the *whole* array.

    Automatic dispatch may choose a backend by size (the dispatch table), and a block is
    smaller than the array: every block runs the whole array's choice, so a dask result is
    bitwise the NumPy call's.  Only for NumPy-backed dask arrays (a CuPy-backed one keeps
    automatic dispatch, which sends device blocks to the cuda backend).
    """
    if kwargs.get("backend") is not None or not all(
            isinstance(getattr(a, "_meta", None), np.ndarray) for a in arrays):
        return kwargs
    from . import _dispatch, _validate

    size = math.prod(arrays[0].shape)
    cdtype = _validate.compute_dtype(np.dtype(dtype))
    name = _dispatch.resolve(None, key=fn.__name__, dtype=cdtype.name, size=size)[0]
    return {**kwargs, "backend": name}


def _broadcast_masks(fn, args, kwargs: dict, names) -> dict:
    """Keyword operands that broadcast to the input (``where``) become full-shape dask arrays,
    so each block gets its own part of the mask."""
    import dask.array as da

    first = next(a for a in list(args) + list(kwargs.values()) if is_dask(a))
    kwargs = dict(kwargs)
    for name in names:
        value = kwargs.get(name)
        if value is None:
            continue
        value = value if is_dask(value) else np.asarray(value)
        try:
            kwargs[name] = da.broadcast_to(value, first.shape).rechunk(first.chunks)
        except ValueError:
            raise ValueError(f"{_fname(fn)}: {name} has shape {value.shape}, which does not "
                             f"broadcast to {first.shape}") from None
    return kwargs


def elementwise(fn, args: tuple, kwargs: dict, *, row_axis=None, channel_weight=None,
                broadcast=()):
    """Block-by-block ``fn`` on dask arrays of one shape.

    ``row_axis``: the axis that must lie in one chunk (row-wise ops).  ``channel_weight``: the
    name of a per-channel (axis 1) NumPy weight to slice per block (prelu).  ``broadcast``:
    names of keyword operands broadcast to the input's shape first (masks).
    """
    _check_out(fn, kwargs)
    if broadcast:
        kwargs = _broadcast_masks(fn, args, kwargs, broadcast)
    found, shape, da = _split(fn, args, kwargs, skip=(channel_weight,))
    meta = _eager_meta(fn, args, kwargs, found, shape)
    arrays = [a for _, _, a in found]
    kwargs = _pin_backend(fn, kwargs, arrays,
                          (meta[0] if isinstance(meta, tuple) else meta).dtype)
    chunks = arrays[0].chunks
    if row_axis is not None and len(shape):
        ax = row_axis % len(shape)
        if len(chunks[ax]) > 1:
            chunks = chunks[:ax] + ((shape[ax],),) + chunks[ax + 1:]
    arrays = [a.rechunk(chunks) if a.chunks != chunks else a for a in arrays]
    weight = None
    if channel_weight is not None:
        weight = np.asarray(kwargs.get(channel_weight, args[1] if len(args) > 1 else None))

    def block(*blocks, block_info=None):
        bargs, bkw = _substitute(args, kwargs, found, blocks)
        if weight is not None and weight.size > 1:
            lo, hi = block_info[0]["array-location"][1]
            if channel_weight in bkw:
                bkw[channel_weight] = weight[lo:hi]
            else:
                bargs[1] = weight[lo:hi]
        result = fn(*bargs, **bkw)
        return np.stack(result) if isinstance(result, tuple) else result

    if isinstance(meta, tuple):
        if meta[0].shape != meta[1].shape:  # prelu_backward's grad_weight: not elementwise
            raise NotImplementedError
        stacked = da.map_blocks(block, *arrays, dtype=meta[0].dtype, new_axis=0,
                                chunks=((len(meta),),) + chunks,
                                meta=np.empty((0,) * (len(shape) + 1), meta[0].dtype))
        return tuple(stacked[i] for i in range(len(meta)))
    return da.map_blocks(block, *arrays, dtype=meta.dtype, chunks=chunks,
                         meta=np.empty((0,) * len(shape), meta.dtype))


def reduce_rows(fn, args: tuple, kwargs: dict, *, axis: int, keepdims: bool, broadcast=()):
    """A row reduction (``logsumexp``): the axis in one chunk, then dropped (or kept as 1)."""
    _check_out(fn, kwargs)
    if broadcast:
        kwargs = _broadcast_masks(fn, args, kwargs, broadcast)
    found, shape, da = _split(fn, args, kwargs)
    meta = _eager_meta(fn, args, kwargs, found, shape)
    arrays = [a for _, _, a in found]
    kwargs = _pin_backend(fn, kwargs, arrays, meta.dtype)

    def block(*blocks):
        bargs, bkw = _substitute(args, kwargs, found, blocks)
        return fn(*bargs, **bkw)

    if not len(shape):
        return da.map_blocks(block, *arrays, dtype=meta.dtype)
    ax = axis % len(shape)
    arrays = [a.rechunk({ax: -1}) for a in arrays]

    if keepdims:
        chunks = arrays[0].chunks[:ax] + ((1,),) + arrays[0].chunks[ax + 1:]
        return da.map_blocks(block, *arrays, dtype=meta.dtype, chunks=chunks)
    return da.map_blocks(block, *arrays, dtype=meta.dtype, drop_axis=ax)


def prelu_backward(fn, grad, x, weight, kwargs: dict):
    """``(grad_x, grad_weight)``: grad_x block by block, grad_weight a tree reduction of
    per-block float64 partial sums over every axis but the channel axis."""
    _check_out(fn, kwargs)
    import dask.array as da

    found, shape, _ = _split(fn, (), {"grad": grad, "x": x})
    by_name = {key: a for _, key, a in found}
    meta_gx, meta_gw = fn(_meta_of(by_name["grad"], shape), x=_meta_of(by_name["x"], shape),
                          weight=weight, **kwargs)
    w = np.asarray(weight)
    per_channel = w.size > 1
    arrays = [by_name["grad"], by_name["x"].rechunk(by_name["grad"].chunks)]

    def grad_x_block(g, xb, block_info=None):
        wb = w[slice(*block_info[0]["array-location"][1])] if per_channel else weight
        return fn(g, x=xb, weight=wb, **kwargs)[0]

    def grad_w_block(g, xb, block_info=None):
        wb = w[slice(*block_info[0]["array-location"][1])] if per_channel else weight
        gw = fn(g.astype(np.float64) if g.dtype != np.float64 else g,
                x=xb.astype(np.float64) if xb.dtype != np.float64 else xb,
                weight=np.asarray(wb, np.float64), **kwargs)[1]
        keep = [1] * g.ndim  # the partial sum, with the block's position along every axis
        if per_channel:
            keep[1] = gw.size
        return np.asarray(gw, np.float64).reshape(keep)

    grad_x = da.map_blocks(grad_x_block, *arrays, dtype=meta_gx.dtype)
    if len(shape) == 0:
        partial = da.map_blocks(grad_w_block, *arrays, dtype=np.float64)
        return grad_x, partial.astype(meta_gw.dtype).reshape(meta_gw.shape)
    chunks = tuple(((1,) * len(c)) for c in arrays[0].chunks)
    if per_channel:
        chunks = chunks[:1] + (arrays[0].chunks[1],) + chunks[2:]
    partial = da.map_blocks(grad_w_block, *arrays, dtype=np.float64, chunks=chunks)
    axes = tuple(i for i in range(len(shape)) if not (per_channel and i == 1))
    total = partial.sum(axis=axes)
    return grad_x, total.astype(meta_gw.dtype).reshape(meta_gw.shape)


def gated(fn, spec, form: str, arrays: dict, param_values: dict, axis, out, backend):
    """Gated units: swiglu/geglu block by block (like an elementwise op; ``*_backward`` gives
    two dask arrays); glu with its split axis in one chunk (rechunked if needed), the output
    chunked like x with that axis halved."""
    kwargs = {**param_values, "out": out, "backend": backend}
    if not spec.extra["split"]:
        return elementwise(fn, (), {**arrays, **kwargs})
    _check_out(fn, kwargs)
    import dask.array as da

    x = arrays["x"]
    x = x if is_dask(x) else da.from_array(np.asarray(x))
    grad = arrays.get("grad")
    if grad is not None and not is_dask(grad):
        grad = da.from_array(np.asarray(grad))
    fname = _fname(fn)
    if any(np.isnan(s) for a in (x, grad) if a is not None for s in a.shape):
        raise ValueError(f"{fname}: dask arrays with unknown chunk sizes are not supported; "
                         "call .compute_chunk_sizes() first")
    from . import _validate

    # validate eagerly with empty arrays of the same ndim (the split axis keeps its size)
    named = {"x": x} if grad is None else {"grad": grad, "x": x}
    _, half, _, _, _ = _validate.gated_layout(fname, True, named, axis)
    ax = _validate.normalize_axis(fname, axis, x.ndim)

    def empty(shape, dtype):
        return np.empty(tuple(s if i == ax else 0 for i, s in enumerate(shape)), dtype)

    kw = {"axis": ax, "backend": backend}
    if grad is None:
        meta = fn(empty(x.shape, x.dtype), **kw)
        x = x.rechunk({ax: -1})
        chunks = x.chunks[:ax] + ((half[ax],),) + x.chunks[ax + 1:]
        return da.map_blocks(lambda xb: fn(xb, **kw), x, dtype=meta.dtype, chunks=chunks,
                             meta=np.empty((0,) * x.ndim, meta.dtype))
    meta = fn(empty(grad.shape, grad.dtype), x=empty(x.shape, x.dtype), **kw)
    x = x.rechunk({ax: -1})
    grad = grad.rechunk(x.chunks[:ax] + ((half[ax],),) + x.chunks[ax + 1:])
    return da.map_blocks(lambda g, xb: fn(g, x=xb, **kw), grad, x, dtype=meta.dtype,
                         chunks=x.chunks, meta=np.empty((0,) * x.ndim, meta.dtype))


def _size(v) -> int:
    return int(v.size) if is_dask(v) else int(np.size(v))


def loss(name: str, form: str, fname: str, grad_loss, input, target, kwargs: dict):
    """Losses on dask arrays (any of input, target, grad_loss, weight, pos_weight).

    Checked eagerly on empty arrays (the NumPy path's errors, before any task is built).  The
    per-row / per-element losses are computed block by block (class axis in one chunk, rechunked
    if needed) and, for 'mean' / 'sum' / 'batchmean', summed by dask's tree reduction in float64
    (the loss values of a block are computed from float64 inputs, as the kernels do internally),
    divided once and rounded once: a lazy 0-d dask array.  The gradient is a second block-wise
    pass (``LOSS_backward`` per block with the global 'mean' scale, a lazy 0-d array for class
    weights), so ``LOSS_and_grad`` reads the input twice here.  Class targets are range-checked
    block by block when computed: the IndexError names the position in the whole array.
    """
    import dask.array as da

    from . import _validate, api

    if kwargs.get("out") is not None:
        raise TypeError(f"{fname}: out= is not supported with dask arrays (the result is lazy); "
                        "call .compute() or use da.store")
    kw = {k: v for k, v in kwargs.items() if k != "out"}
    forward = api._public(name, "forward")
    backward = api._public(name, "backward")
    spec = api.OPS_BY_NAME[name]
    row = spec.extra["layout"] == "row"
    x = input if is_dask(input) else da.from_array(np.asarray(input))
    if any(np.isnan(s) for s in x.shape):
        raise ValueError(f"{fname}: dask arrays with unknown chunk sizes are not supported; "
                         "call .compute_chunk_sizes() first")
    t = target if is_dask(target) else np.asarray(target)
    ndim = x.ndim
    ax = None
    if row:
        try:
            axis = kw.get("axis")
            ax = (1 if ndim >= 2 else 0) if axis is None else _validate.normalize_axis(
                fname, axis, ndim)
        except (TypeError, ValueError, IndexError):
            ax = None  # _row_loss_checks below raises the NumPy path's error
    shape = tuple(x.shape)
    C = shape[ax] if ax is not None and ndim else 0
    x_meta = np.empty(tuple(C if i == ax else 0 for i in range(ndim)), x.dtype)
    prob = row and np.dtype(t.dtype).kind == "f"
    weights = {k: kw.pop(k) for k in ("weight", "pos_weight") if k in kw and not row}
    if row and is_dask(kw.get("weight")):
        kw["weight"] = np.asarray(kw["weight"].compute())  # C values
    # eager validation: the shape checks on the real shapes (as the NumPy path, first), then
    # every other check of the NumPy path on empty arrays
    if row:
        args = {k: kw.get(k) for k in ("reduction", "ignore_index", "label_smoothing", "axis")}
        api._row_loss_checks(name, fname, spec, shape, np.dtype(t.dtype), tuple(t.shape),
                             args["reduction"] or "mean", -100 if args["ignore_index"] is None
                             else args["ignore_index"], args["label_smoothing"] or 0.0,
                             args["axis"])
    else:
        _validate.same_shape(fname, {"input": x, "target": t})
    for k, v in weights.items():  # element weights: broadcast to the input's shape below
        if v is not None and not np.isscalar(v) and _size(v) != 1:
            try:
                np.broadcast_shapes(np.shape(v), shape)
            except ValueError:
                raise ValueError(f"{fname}: {k} has shape {np.shape(v)}, which does not "
                                 f"broadcast to the input's shape {shape}") from None
    # (the shapes passed: class targets have the loss shape, the rest the input's)
    t_meta = np.empty((0,) * t.ndim if row and not prob else x_meta.shape, t.dtype)
    meta_w = {k: (None if v is None or _size(v) != 1 or is_dask(v) else v)
              for k, v in weights.items()}
    lmeta = forward(x_meta, t_meta, **{**kw, "reduction": "none"}, **meta_w)
    forward(x_meta, t_meta, **kw, **meta_w)
    if form == "backward":
        g_meta = grad_loss if not is_dask(grad_loss) and _size(grad_loss) == 1 else \
            np.empty(lmeta.shape, np.float64)
        backward(g_meta, x_meta, t_meta, **kw, **meta_w)
    rdtype = lmeta.dtype
    reduction = kw.get("reduction", "mean")
    inner_kw = {k: v for k, v in kw.items() if k != "reduction"}
    # every operand with x's ndim (map_blocks aligns trailing axes and gives block locations):
    # class targets and per-row grad_loss get a length-1 axis at the class axis
    expand = row and not prob and ndim > 0
    if row:
        x = x.rechunk({ax: -1}) if ndim else x
        lshape = shape[:ax] + shape[ax + 1:]
        lchunks = x.chunks[:ax] + x.chunks[ax + 1:]
    else:
        lshape, lchunks = shape, x.chunks

    def per_row(a):
        """A loss-shaped operand (dask or NumPy) chunked like x, with x's ndim."""
        a = (a if is_dask(a) else da.from_array(np.asarray(a), chunks=lchunks)).rechunk(lchunks)
        return da.expand_dims(a, ax) if expand else a

    tX = per_row(t) if not prob and row else \
        (t if is_dask(t) else da.from_array(np.asarray(t), chunks=x.chunks)).rechunk(x.chunks)
    wargs = []  # element weights as dask arrays chunked like x (or numbers in inner_kw)
    for k, v in weights.items():
        if v is None or (not is_dask(v) and np.size(v) == 1):
            inner_kw[k] = v
            continue
        wargs.append((k, da.broadcast_to(v if is_dask(v) else np.asarray(v),
                                         shape).rechunk(x.chunks)))
    ignore = int(kw.get("ignore_index", -100))
    drop = [ax] if row and ndim else []

    def targets(tb, loc):
        """A block's class targets, range-checked (the NumPy path's IndexError, with the
        position in the whole array), without the expanded axis."""
        if not row or prob:
            return tb
        if expand:
            tb = tb.reshape(tb.shape[:ax] + tb.shape[ax + 1:])
            loc = list(loc[:ax]) + list(loc[ax + 1:])
        tl = tb.astype(np.int64, copy=False)
        bad = ((tl < 0) | (tl >= C)) & (tl != ignore)
        if bad.any():
            local = np.unravel_index(int(np.flatnonzero(bad)[0]), tb.shape)
            pos = tuple(int(i) + lo for i, (lo, _) in zip(local, loc))
            k = int(np.ravel_multi_index(pos, lshape)) if lshape else 0
            raise api._range_error(fname, int(tl[local]), k, C, ignore, lshape)
        return tb

    def location(block_info, i):
        return block_info[i]["array-location"] if block_info else [(0, 0)] * ndim

    def block_losses(xb, tb, *wbs, block_info=None):
        tb = targets(tb, location(block_info, 1))
        extra = {k: wb for (k, _), wb in zip(wargs, wbs)}
        if reduction != "none":  # float64 values for the float64 sum
            xb = xb.astype(np.float64)
        return np.asarray(forward(xb, tb, reduction="none", **inner_kw, **extra))

    operands = [x, tX] + [b for _, b in wargs]
    if form != "backward":
        ldtype = rdtype if reduction == "none" else np.dtype(np.float64)
        value = da.map_blocks(block_losses, *operands, dtype=ldtype, drop_axis=drop,
                              meta=np.empty((0,) * len(lshape), ldtype))
        if reduction == "none" and form == "forward":
            return value
    # the 'mean' denominator and the gradient scale
    count = None
    if reduction in ("mean", "batchmean"):
        if row and not prob:
            wvec = np.ones(C) if kw.get("weight") is None else np.asarray(kw["weight"],
                                                                           np.float64)

            def target_weight(tb):
                tl = tb.astype(np.int64, copy=False)
                keep = (tl != ignore) & (tl >= 0) & (tl < C)
                return np.where(keep, wvec[np.where(keep, tl, 0)] if C else 0.0, 0.0)

            count = tX.map_blocks(target_weight, dtype=np.float64).sum()
        elif row:
            count = float(math.prod(lshape))
        else:
            count = float(math.prod(shape)) if reduction == "mean" else \
                float(shape[0] if shape else 1)
    if form != "backward" and reduction != "none":
        value = value.sum()  # dask's tree reduction of float64 block sums
        if is_dask(count):  # 'mean' of only ignored targets: NaN, as on the NumPy path
            value = da.where(count != 0, value / da.where(count != 0, count, 1.0), np.nan)
        elif count is not None:  # 'mean' of nothing: NaN
            value = value / count if count else value * np.nan
        value = value.astype(rdtype)
        if form == "forward":
            return value
    # the gradient: LOSS_backward per block, with the global 'mean' multiplier
    if count is None:
        scale = 1.0
    elif is_dask(count):  # class weights: every target ignored gives gradient 0
        scale = da.where(count != 0, 1.0 / da.where(count != 0, count, 1.0), 0.0)
    elif row:
        scale = 1.0 / count if count else 0.0
    else:
        scale = 1.0 / count if count else math.nan
    g = 1.0 if form != "backward" else grad_loss
    if is_dask(g) or np.size(g) != 1:
        g = da.broadcast_to(g if is_dask(g) else np.asarray(g), lshape)
        gX = per_row(g.astype(np.float64)) if row else g.astype(np.float64).rechunk(x.chunks)
        gX = gX * scale
    else:
        gX = np.float64(np.asarray(g, np.float64).reshape(())) * scale
        gX = gX if is_dask(gX) else da.from_array(np.asarray(gX, np.float64))

    def block_grad(gb, xb, tb, *wbs, block_info=None):
        tb = targets(tb, location(block_info, 2))
        if expand and gb.ndim == ndim:
            gb = gb.reshape(gb.shape[:ax] + gb.shape[ax + 1:])
        extra = {k: wb for (k, _), wb in zip(wargs, wbs)}
        return np.asarray(backward(gb, xb, tb, reduction="none", **inner_kw, **extra))

    grad = da.map_blocks(block_grad, gX, *operands, dtype=rdtype, chunks=x.chunks,
                         meta=np.empty((0,) * ndim, rdtype))
    if form == "backward":
        return grad
    return (value if reduction != "none" else value), grad
