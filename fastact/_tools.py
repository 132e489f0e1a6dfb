"""Helpers built on the public API: example arguments for every op/form, and warmup."""

from __future__ import annotations

import numpy as np

from . import _dispatch, _registry


def public_function(spec: _registry.OpSpec, form: str):
    from . import api

    return getattr(api, spec.public_name(form))


def example_call(spec: _registry.OpSpec, form: str, x: np.ndarray, *, use_y: bool = False,
                 params: dict | None = None):
    """(function, args, kwargs) calling ``spec``'s ``form`` on input ``x``.

    The extra operands are derived from ``x``: ``grad`` is a deterministic pattern of x's
    shape and dtype, ``y`` is the forward result, prelu's weight has one value per channel.
    Used by warmup, the benchmarks and the tests.
    """
    fn = public_function(spec, form)
    if spec.kind == "loss":
        return fn, *_loss_operands(spec, form, x, params)
    if spec.kind == "gated":
        return fn, *_gated_operands(spec, form, x, params)
    kwargs = dict(spec.defaults if params is None else params)
    args = [x]
    if spec.kind == "channel":
        channels = x.shape[1] if x.ndim >= 2 else 1
        kwargs["weight"] = np.linspace(0.05, 0.3, channels).astype(x.dtype)
    if form == "backward":
        grad = (np.cos(np.arange(x.size, dtype=np.float64)) + 1.5).astype(x.dtype).reshape(
            x.shape)
        if spec.kind == "rowwise":
            kwargs["y"] = public_function(spec, "forward")(x)
        elif use_y:
            forward_kwargs = {k: v for k, v in kwargs.items()}
            kwargs["y"] = public_function(spec, "forward")(x, **forward_kwargs)
        else:
            kwargs["x"] = x
        args = [grad]
    if spec.kind == "channel" and form != "backward":
        args.append(kwargs.pop("weight"))
    return fn, args, kwargs


def _pattern(shape: tuple, dtype) -> np.ndarray:
    """A deterministic operand of ``shape``, values in [0.5, 2.5]."""
    n = int(np.prod(shape))
    return (np.cos(np.arange(n, dtype=np.float64)) + 1.5).astype(dtype).reshape(shape)


def _gated_operands(spec: _registry.OpSpec, form: str, x: np.ndarray, params: dict | None):
    """(args, kwargs) of a gated unit: glu splits x along its last axis (an odd last column is
    left out); swiglu/geglu gate x and take a deterministic pattern as b."""
    kwargs = dict(spec.defaults if params is None else params)
    if spec.extra["split"]:
        x = x.reshape(1) if x.ndim == 0 else x
        if x.shape[-1] % 2:  # an odd last axis: split the even part (a view)
            x = x[..., :-1]
        if form == "forward":
            return [x], kwargs
        half = x.shape[:-1] + (x.shape[-1] // 2,)
        return [_pattern(half, x.dtype)], {**kwargs, "x": x}
    b = _pattern(x.shape, x.dtype)
    if form == "forward":
        return [x, b], kwargs
    return [_pattern(x.shape, x.dtype)], {**kwargs, "a": x, "b": b}


def _loss_operands(spec: _registry.OpSpec, form: str, x: np.ndarray, params: dict | None):
    """(args, kwargs) of a loss: x (rows, C) logits / an elementwise input, a deterministic
    target (class indices in range; values in [0, 1] where the loss wants probabilities);
    binary_cross_entropy gets sigmoid(x) as its input.  ``backward`` gets grad_loss=1.0."""
    kwargs = dict(params or {})
    if spec.extra["layout"] == "row":
        C = x.shape[1] if x.ndim >= 2 else x.shape[0]
        tshape = (x.shape[0],) + x.shape[2:] if x.ndim >= 2 else ()
        target = (np.arange(int(np.prod(tshape)), dtype=np.int64) * 7919 % max(C, 1)).reshape(
            tshape)
        inp = x
    else:
        pattern = (np.cos(np.arange(x.size, dtype=np.float64)) + 1) / 2
        target = pattern.astype(x.dtype).reshape(x.shape)
        inp = x
        if spec.name == "binary_cross_entropy":
            inp = (1 / (1 + np.exp(-np.clip(x.astype(np.float64), -30, 30)))).astype(x.dtype)
    args = [inp, target]
    if form == "backward":
        args = [1.0] + args
    return args, kwargs


def warmup(ops=None, dtypes=None) -> list[str]:
    """Compile the kernels of ``ops`` (names; None = all) for ``dtypes`` (None = float32 and
    float64; float16 runs the float32 kernels) ahead of the first real call, serial and
    parallel variants.  Returns the names of the backends warmed up.

    Only the Numba backend compiles at run time; with the on-disk cache a second process loads
    the compiled code instead.
    """
    specs = _registry.OPS if ops is None else [_registry.get(o) for o in ops]
    dtypes = [np.float32, np.float64] if dtypes is None else [np.dtype(d) for d in dtypes]
    warmed = []
    if not _dispatch.available("numba"):
        return warmed
    from .kernels import numba_cpu

    saved = numba_cpu.PARALLEL_THRESHOLD
    try:
        for threshold in (0, 1 << 62):  # parallel twins, then serial twins
            numba_cpu.PARALLEL_THRESHOLD = threshold
            for spec in specs:
                for dtype in dtypes:
                    x = np.linspace(-2, 2, 12).astype(dtype).reshape(3, 4)
                    for form in spec.forms:
                        for use_y in ((False, True) if spec.y_backward and form == "backward"
                                      else (False,)):
                            fn, args, kwargs = example_call(spec, form, x, use_y=use_y)
                            fn(*args, backend="numba", **kwargs)
                            if spec.kind == "loss":  # reductions other than 'mean'
                                fn(*args, backend="numba", reduction="none", **kwargs)
                            if spec.kind == "rowwise":  # masked variant
                                fn(*args, backend="numba", where=x > -1.5, **kwargs)
    finally:
        numba_cpu.PARALLEL_THRESHOLD = saved
    warmed.append("numba")
    return warmed
