"""PyTorch bridge: fastact kernels as ``torch.autograd.Function``s.

``import fastact.torch as ft`` (needs PyTorch: ``pip install "fastact[torch]"``), then use
``ft.gelu(t)``, ``ft.softmax(t, dim=-1)``, ``ft.cross_entropy(logits, target)`` ... on CPU
tensors like the ``torch.nn.functional`` functions of the same names; gradients flow through
fastact's one-pass backward kernels.

* CPU tensors are shared with NumPy without a copy (``Tensor.numpy()`` / ``torch.from_numpy``);
  float16, float32 and float64 are supported (bfloat16 has no NumPy dtype: TypeError).
* The forward pass of every activation keeps what its backward needs: the input, or the output
  where the op's derivative is a function of it (sigmoid, tanh, ...: the registry's y-rule), so
  ``backward`` is one fused ``grad * f'`` pass.
* ``cross_entropy`` computes the loss *and* its gradient in the forward pass
  (``fa.cross_entropy_and_grad``: one pass over the logits); ``backward`` only scales the saved
  gradient by the incoming one.  Training a classifier therefore reads the logits once.
* Modules: ``ft.Activation("leaky_relu", negative_slope=0.1)`` is an ``nn.Module``.
* CUDA tensors go to fastact's ``cuda`` backend as they are (zero-copy through
  ``__cuda_array_interface__``, on PyTorch's current stream; the ``cuda`` extra).  Not yet run
  on a real GPU: ``tests/test_torch.py``'s ``gpu`` tests check it where one exists.

Every function of this module is generated from fastact's registry, so new ops appear here
without edits.
"""

from __future__ import annotations

import numpy as np
import torch

import fastact as fa

from . import _registry

_SUPPORTED = (torch.float16, torch.float32, torch.float64)


def _to_numpy(name: str, arg: str, t: torch.Tensor, floating: bool = True):
    """A CPU tensor as a NumPy array (zero-copy); a CUDA tensor passes through detached (fastact
    computes on it with the ``cuda`` backend and returns CUDA tensors, zero-copy through
    ``__cuda_array_interface__``, on the current stream)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"fastact.torch.{name}: {arg} must be a torch.Tensor, got "
                        f"{type(t).__name__}")
    if t.device.type not in ("cpu", "cuda"):
        raise TypeError(f"fastact.torch.{name}: {arg} is on {t.device}; fastact.torch handles "
                        "CPU and CUDA tensors: use the torch.nn.functional op, or move it with "
                        ".cpu()")
    if floating and t.dtype not in _SUPPORTED:
        raise TypeError(f"fastact.torch.{name}: {arg} has dtype {t.dtype}; fastact computes "
                        "float16, float32 and float64 (e.g. t.float())")
    if t.device.type == "cuda":
        return t.detach()
    return t.detach().numpy()


def _from_numpy(a) -> torch.Tensor:
    if isinstance(a, torch.Tensor):  # a result computed on a CUDA tensor
        return a
    return torch.from_numpy(np.asarray(a))


# ------------------------------------------------------------------------------------------------
# elementwise activations
# ------------------------------------------------------------------------------------------------

class _Elementwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, spec, params):
        ctx.spec, ctx.params = spec, params
        y = getattr(fa, spec.name)(_to_numpy(spec.name, "input", x), **params)
        result = _from_numpy(y)
        use_y = spec.y_backward is not None and spec.y_backward(params)
        ctx.use_y = use_y
        ctx.save_for_backward(result if use_y else x)
        return result

    @staticmethod
    def backward(ctx, grad):
        (saved,) = ctx.saved_tensors
        name = ctx.spec.public_name("backward")
        g = _to_numpy(name, "grad", grad.contiguous())
        s = _to_numpy(name, "saved", saved)
        which = "y" if ctx.use_y else "x"
        result = getattr(fa, name)(g, **{which: s}, **ctx.params)
        return _from_numpy(result), None, None


def _elementwise_function(spec: _registry.OpSpec):
    defaults = spec.defaults

    def fn(input, *args, **kwargs):
        names = [p.name for p in spec.params]
        if len(args) > len(names):
            raise TypeError(f"fastact.torch.{spec.name}: too many positional arguments")
        params = {k: v for k, v in defaults.items() if v is not None}
        params.update(zip(names, args))
        unknown = set(kwargs) - set(names)
        if unknown:
            raise TypeError(f"fastact.torch.{spec.name}: unexpected argument "
                            f"{sorted(unknown)[0]!r}")
        params.update(kwargs)
        missing = [n for n in names if n not in params]
        if missing:
            raise TypeError(f"fastact.torch.{spec.name}: missing argument {missing[0]!r}")
        return _Elementwise.apply(input, spec, params)

    fn.__name__ = fn.__qualname__ = spec.name
    fn.__doc__ = (f"``{spec.summary}`` on a CPU tensor, differentiable (fastact kernels "
                  f"``fa.{spec.name}`` / ``fa.{spec.public_name('backward')}``).\n\n"
                  f"Parameters: {', '.join(f'{p.name}={p.default!r}' for p in spec.params) or 'none'}"
                  ", as in ``torch.nn.functional``.")
    return fn


for _spec in _registry.elementwise_ops():
    globals()[_spec.name] = _elementwise_function(_spec)
del _spec


# ------------------------------------------------------------------------------------------------
# prelu: gradients for the input and the weight
# ------------------------------------------------------------------------------------------------

class _Prelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        return _from_numpy(fa.prelu(_to_numpy("prelu", "input", x),
                                    _to_numpy("prelu", "weight", weight)))

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        gx, gw = fa.prelu_backward(_to_numpy("prelu", "grad", grad.contiguous()),
                                   x=_to_numpy("prelu", "input", x),
                                   weight=_to_numpy("prelu", "weight", weight))
        return _from_numpy(gx), _from_numpy(gw)


def prelu(input: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``torch.nn.functional.prelu`` with fastact kernels (weight: 1 or C values, channel axis 1)."""
    return _Prelu.apply(input, weight)


# ------------------------------------------------------------------------------------------------
# gated units: glu(input, dim), swiglu(a, b), geglu(a, b, approximate)
# ------------------------------------------------------------------------------------------------

class _Glu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim):
        ctx.dim = dim
        ctx.save_for_backward(x)
        return _from_numpy(fa.glu(_to_numpy("glu", "input", x), axis=dim))

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        g = fa.glu_backward(_to_numpy("glu_backward", "grad", grad.contiguous()),
                            x=_to_numpy("glu_backward", "input", x), axis=ctx.dim)
        return _from_numpy(g), None


class _GatedPair(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, name, params):
        ctx.name, ctx.params = name, params
        ctx.save_for_backward(a, b)
        return _from_numpy(getattr(fa, name)(_to_numpy(name, "a", a), _to_numpy(name, "b", b),
                                             **params))

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        name = f"{ctx.name}_backward"
        ga, gb = getattr(fa, name)(_to_numpy(name, "grad", grad.contiguous()),
                                   a=_to_numpy(name, "a", a), b=_to_numpy(name, "b", b),
                                   **ctx.params)
        return _from_numpy(ga), _from_numpy(gb), None, None


def glu(input: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``torch.nn.functional.glu(input, dim)``: first half times sigmoid of the second half."""
    return _Glu.apply(input, dim)


def swiglu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``F.silu(a) * b`` in one fastact pass (and one backward pass for both gradients)."""
    return _GatedPair.apply(a, b, "swiglu", {})


def geglu(a: torch.Tensor, b: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """``F.gelu(a, approximate=approximate) * b`` in one fastact pass."""
    return _GatedPair.apply(a, b, "geglu", {"approximate": approximate})


# ------------------------------------------------------------------------------------------------
# softmax family
# ------------------------------------------------------------------------------------------------

class _Rowwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, name, dim):
        ctx.name, ctx.dim = name, dim
        y = _from_numpy(getattr(fa, name)(_to_numpy(name, "input", x), axis=dim))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        name = f"{ctx.name}_backward"
        g = getattr(fa, name)(_to_numpy(name, "grad", grad.contiguous()),
                              y=_to_numpy(name, "y", y), axis=ctx.dim)
        return _from_numpy(g), None, None


def softmax(input: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``torch.softmax(input, dim)`` with fastact's one-pass row kernels."""
    return _Rowwise.apply(input, "softmax", dim)


def log_softmax(input: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``torch.log_softmax(input, dim)`` with fastact's one-pass row kernels."""
    return _Rowwise.apply(input, "log_softmax", dim)


# ------------------------------------------------------------------------------------------------
# fused cross-entropy
# ------------------------------------------------------------------------------------------------

class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, weight, ignore_index, reduction, label_smoothing):
        t = _to_numpy("cross_entropy", "target", target,
                      floating=target.dtype.is_floating_point)
        w = None if weight is None else _to_numpy("cross_entropy", "weight", weight)
        loss, grad = fa.cross_entropy_and_grad(
            _to_numpy("cross_entropy", "input", logits), t, weight=w,
            ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)
        ctx.reduction = reduction
        ctx.save_for_backward(_from_numpy(grad))
        return _from_numpy(loss if isinstance(loss, torch.Tensor) else np.asarray(loss))

    @staticmethod
    def backward(ctx, grad_loss):
        (grad,) = ctx.saved_tensors
        if ctx.reduction == "none":
            # d(sum_i g_i * loss_i)/d(logits): the per-example gradient rows scaled by g_i
            scale = grad_loss.unsqueeze(1) if grad.ndim > 1 else grad_loss
            return grad * scale.to(grad.dtype), None, None, None, None, None
        return grad * grad_loss.to(grad.dtype), None, None, None, None, None


def cross_entropy(input: torch.Tensor, target: torch.Tensor, weight=None, ignore_index=-100,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> torch.Tensor:
    """``torch.nn.functional.cross_entropy`` computed with fastact's fused loss-and-gradient
    kernel: the forward pass reads the logits once and keeps the gradient for backward."""
    return _CrossEntropy.apply(input, target, weight, ignore_index, reduction, label_smoothing)


# ------------------------------------------------------------------------------------------------
# modules
# ------------------------------------------------------------------------------------------------

class Activation(torch.nn.Module):
    """An ``nn.Module`` applying a fastact activation, e.g. ``Activation("gelu")``."""

    def __init__(self, name: str, **params):
        super().__init__()
        spec = _registry.get(name)
        if spec.kind != "elementwise":
            raise ValueError(f"fastact.torch.Activation: {name!r} is not an elementwise "
                             "activation")
        self.name, self.params = name, params
        self._fn = globals()[name]

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._fn(input, **self.params)

    def extra_repr(self) -> str:
        return ", ".join([repr(self.name)] + [f"{k}={v!r}" for k, v in self.params.items()])
