"""Peer libraries timed next to fastact in the benchmarks: SciPy, numexpr and PyTorch (CPU).

Per ``(op, form)`` a list of :class:`Peer`: the library, the expression a user of that library
would write, and ``prepare(args, kwargs) -> callable`` building a no-argument call from the same
operands fastact gets (``fastact._tools.example_call``: ``x``; ``grad`` plus ``x=``/``y=`` for
backward forms).  Conversions (NumPy -> torch tensor, numexpr expression compilation) happen in
``prepare``, never inside the timed call.  torch tensors share the NumPy buffers
(``torch.from_numpy``), and torch runs with as many threads as fastact
(``torch.set_num_threads``).

PyTorch's backward ops are its ``aten::*_backward`` kernels, the ones autograd runs (``grad`` and
the saved input or output in, ``grad_input`` out): the fair peer of ``NAME_backward``.  PyTorch
has no value-and-derivative op; its best two-step is the forward plus the backward from the
output where one exists.

The peers are optional (the ``bench`` extra installs them); :func:`available` says which import.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

LIBRARIES = ("scipy", "numexpr", "torch")


@dataclass(frozen=True)
class Peer:
    library: str
    expr: str
    prepare: Callable  # (args, kwargs) -> () -> result


PEERS: dict[tuple[str, str], list[Peer]] = {}


def _peer(library: str, op: str, form: str, expr: str):
    def register(prepare):
        PEERS.setdefault((op, form), []).append(Peer(library, expr, prepare))
        return prepare
    return register


def available(library: str) -> bool:
    try:
        importlib.import_module(library)
    except ImportError:
        return False
    return True


def peers_for(op: str, form: str) -> list[Peer]:
    return PEERS.get((op, form), [])


# ------------------------------------------------------------------------------------------------
# SciPy
# ------------------------------------------------------------------------------------------------

@_peer("scipy", "sigmoid", "forward", "scipy.special.expit(x)")
def _scipy_sigmoid(args, kwargs):
    from scipy.special import expit

    (x,) = args
    return lambda: expit(x)


@_peer("scipy", "softmax", "forward", "scipy.special.softmax(x, axis=-1)")
def _scipy_softmax(args, kwargs):
    from scipy.special import softmax

    (x,) = args
    return lambda: softmax(x, axis=-1)


@_peer("scipy", "log_softmax", "forward", "scipy.special.log_softmax(x, axis=-1)")
def _scipy_log_softmax(args, kwargs):
    from scipy.special import log_softmax

    (x,) = args
    return lambda: log_softmax(x, axis=-1)


@_peer("scipy", "logsumexp", "forward", "scipy.special.logsumexp(x, axis=-1)")
def _scipy_logsumexp(args, kwargs):
    from scipy.special import logsumexp

    (x,) = args
    return lambda: logsumexp(x, axis=-1)


# ------------------------------------------------------------------------------------------------
# numexpr: one multithreaded pass per expression
# ------------------------------------------------------------------------------------------------

#: (op, form) -> numexpr expression over x (and grad); parameters at their defaults.  Float
#: constants are named variables of the input's dtype (``slope``, ``limit``): numexpr computes
#: in double as soon as a float literal appears, which would not be a float32 peer.
_NUMEXPR = {
    ("sigmoid", "forward"): "1 / (1 + exp(-x))",
    ("sigmoid", "backward"): "grad * exp(-x) / (1 + exp(-x)) ** 2",
    ("tanh", "forward"): "tanh(x)",
    ("tanh", "backward"): "grad * (1 - tanh(x) ** 2)",
    ("relu", "forward"): "where(x > 0, x, 0)",
    ("relu", "backward"): "where(x > 0, grad, 0)",
    ("leaky_relu", "forward"): "where(x > 0, x, x * slope)",
    ("leaky_relu", "backward"): "where(x > 0, grad, grad * slope)",
    ("elu", "forward"): "where(x > 0, x, expm1(x))",
    ("elu", "backward"): "where(x > 0, grad, grad * exp(x))",
    ("silu", "forward"): "x / (1 + exp(-x))",
    ("softplus", "forward"): "where(x > limit, x, log1p(exp(x)))",
    ("mish", "forward"): "x * tanh(log1p(exp(x)))",
    ("softsign", "forward"): "x / (1 + abs(x))",
    ("tanhshrink", "forward"): "x - tanh(x)",
}
_NUMEXPR_CONSTANTS = {"slope": 0.01, "limit": 20.0}


def _numexpr_prepare(expr: str):
    def prepare(args, kwargs):
        import numexpr

        x = kwargs.get("x", args[0])
        names = {"x": x}
        if "x" in kwargs:
            names["grad"] = args[0]
        names.update({k: x.dtype.type(v) for k, v in _NUMEXPR_CONSTANTS.items() if k in expr})
        return lambda: numexpr.evaluate(expr, local_dict=names)
    return prepare


for (_op, _form), _expr in _NUMEXPR.items():
    PEERS.setdefault((_op, _form), []).append(Peer("numexpr", f"numexpr.evaluate({_expr!r})",
                                                  _numexpr_prepare(_expr)))


# ------------------------------------------------------------------------------------------------
# PyTorch CPU
# ------------------------------------------------------------------------------------------------

def _tensor(a):
    import torch

    from . import _dispatch

    torch.set_num_threads(max(1, _dispatch._num_threads or _dispatch._default_threads()))
    a = np.asarray(a)
    if not a.flags.writeable:  # torch.from_numpy warns on read-only memory: copy once
        a = a.copy()
    return torch.from_numpy(a)


#: forward: (op, torch expression, function of (torch, F, t)) for ops with a torch counterpart
_TORCH_FORWARD = {
    "sigmoid": ("torch.sigmoid(t)", lambda torch, F, t: torch.sigmoid(t)),
    "tanh": ("torch.tanh(t)", lambda torch, F, t: torch.tanh(t)),
    "relu": ("torch.relu(t)", lambda torch, F, t: torch.relu(t)),
    "leaky_relu": ("F.leaky_relu(t)", lambda torch, F, t: F.leaky_relu(t)),
    "elu": ("F.elu(t)", lambda torch, F, t: F.elu(t)),
    "gelu": ("F.gelu(t)", lambda torch, F, t: F.gelu(t)),
    "silu": ("F.silu(t)", lambda torch, F, t: F.silu(t)),
    "mish": ("F.mish(t)", lambda torch, F, t: F.mish(t)),
    "softplus": ("F.softplus(t)", lambda torch, F, t: F.softplus(t)),
    "softsign": ("F.softsign(t)", lambda torch, F, t: F.softsign(t)),
    "selu": ("F.selu(t)", lambda torch, F, t: F.selu(t)),
    "celu": ("F.celu(t)", lambda torch, F, t: F.celu(t)),
    "relu6": ("F.relu6(t)", lambda torch, F, t: F.relu6(t)),
    "hardtanh": ("F.hardtanh(t)", lambda torch, F, t: F.hardtanh(t)),
    "hardsigmoid": ("F.hardsigmoid(t)", lambda torch, F, t: F.hardsigmoid(t)),
    "hardswish": ("F.hardswish(t)", lambda torch, F, t: F.hardswish(t)),
    "log_sigmoid": ("F.logsigmoid(t)", lambda torch, F, t: F.logsigmoid(t)),
    "tanhshrink": ("F.tanhshrink(t)", lambda torch, F, t: F.tanhshrink(t)),
    "hardshrink": ("F.hardshrink(t)", lambda torch, F, t: F.hardshrink(t)),
    "softshrink": ("F.softshrink(t)", lambda torch, F, t: F.softshrink(t)),
    "softmax": ("torch.softmax(t, -1)", lambda torch, F, t: torch.softmax(t, -1)),
    "log_softmax": ("torch.log_softmax(t, -1)", lambda torch, F, t: torch.log_softmax(t, -1)),
    "logsumexp": ("torch.logsumexp(t, -1)", lambda torch, F, t: torch.logsumexp(t, -1)),
    "softmin": ("F.softmin(t, -1)", lambda torch, F, t: F.softmin(t, -1)),
}

#: backward: aten kernels (grad, saved input x or output y) -> grad_input
_TORCH_BACKWARD = {
    "sigmoid": ("y", "aten.sigmoid_backward(g, y)",
                lambda torch, g, s: torch.ops.aten.sigmoid_backward(g, s)),
    "tanh": ("y", "aten.tanh_backward(g, y)",
             lambda torch, g, s: torch.ops.aten.tanh_backward(g, s)),
    "relu": ("x", "aten.threshold_backward(g, x, 0)",
             lambda torch, g, s: torch.ops.aten.threshold_backward(g, s, 0)),
    "leaky_relu": ("x", "aten.leaky_relu_backward(g, x, 0.01, False)",
                   lambda torch, g, s: torch.ops.aten.leaky_relu_backward(g, s, 0.01, False)),
    "elu": ("x", "aten.elu_backward(g, 1, 1, 1, False, x)",
            lambda torch, g, s: torch.ops.aten.elu_backward(g, 1.0, 1.0, 1.0, False, s)),
    "gelu": ("x", "aten.gelu_backward(g, x)",
             lambda torch, g, s: torch.ops.aten.gelu_backward(g, s)),
    "silu": ("x", "aten.silu_backward(g, x)",
             lambda torch, g, s: torch.ops.aten.silu_backward(g, s)),
    "mish": ("x", "aten.mish_backward(g, x)",
             lambda torch, g, s: torch.ops.aten.mish_backward(g, s)),
    "softplus": ("x", "aten.softplus_backward(g, x, 1, 20)",
                 lambda torch, g, s: torch.ops.aten.softplus_backward(g, s, 1.0, 20.0)),
    "hardswish": ("x", "aten.hardswish_backward(g, x)",
                  lambda torch, g, s: torch.ops.aten.hardswish_backward(g, s)),
    "hardsigmoid": ("x", "aten.hardsigmoid_backward(g, x)",
                    lambda torch, g, s: torch.ops.aten.hardsigmoid_backward(g, s)),
}


def _torch_forward(op: str, fn):
    def prepare(args, kwargs):
        import torch
        import torch.nn.functional as F

        t = _tensor(args[0])
        return lambda: fn(torch, F, t)
    return prepare


def _torch_backward(op: str, saved: str, fn):
    def prepare(args, kwargs):
        import torch

        g = _tensor(args[0])
        if "x" in kwargs:
            x = _tensor(kwargs["x"])
            s = x if saved == "x" else _TORCH_FORWARD[op][1](torch, None, x)
        else:
            y = _tensor(kwargs["y"])
            if saved != "y":
                raise ValueError(f"torch's {op} backward needs the input, not the output")
            s = y
        return lambda: fn(torch, g, s)
    return prepare


def _torch_row_backward(log: bool):
    def prepare(args, kwargs):
        import torch

        g, y = _tensor(args[0]), _tensor(kwargs["y"])
        aten = torch.ops.aten
        if log:
            return lambda: aten._log_softmax_backward_data(g, y, -1, y.dtype)
        return lambda: aten._softmax_backward_data(g, y, -1, y.dtype)
    return prepare


for _op, (_expr, _fn) in _TORCH_FORWARD.items():
    PEERS.setdefault((_op, "forward"), []).append(Peer("torch", _expr, _torch_forward(_op, _fn)))
for _op, (_saved, _expr, _fn) in _TORCH_BACKWARD.items():
    PEERS.setdefault((_op, "backward"), []).append(
        Peer("torch", _expr, _torch_backward(_op, _saved, _fn)))
PEERS.setdefault(("softmax", "backward"), []).append(
    Peer("torch", "aten._softmax_backward_data(g, y, -1)", _torch_row_backward(False)))
PEERS.setdefault(("log_softmax", "backward"), []).append(
    Peer("torch", "aten._log_softmax_backward_data(g, y, -1)", _torch_row_backward(True)))


# gated units: torch's glu kernels; SwiGLU/GEGLU are two torch ops (what a torch model runs)
def _torch_gated(form: str, fn):
    def prepare(args, kwargs):
        import torch
        import torch.nn.functional as F

        tensors = {k: _tensor(v) for k, v in kwargs.items() if isinstance(v, np.ndarray)}
        tensors["g" if form == "backward" else "x" if len(args) == 1 else "a"] = _tensor(args[0])
        if form == "forward" and len(args) == 2:
            tensors["b"] = _tensor(args[1])
        return lambda: fn(torch, F, **tensors)
    return prepare


_TORCH_GATED = {
    ("glu", "forward"): ("F.glu(t, -1)", lambda torch, F, x: F.glu(x, -1)),
    ("glu", "backward"): ("aten.glu_backward(g, x, -1)",
                          lambda torch, F, g, x: torch.ops.aten.glu_backward(g, x, -1)),
    ("swiglu", "forward"): ("F.silu(a) * b", lambda torch, F, a, b: F.silu(a) * b),
    ("swiglu", "backward"): ("(aten.silu_backward(g * b, a), g * F.silu(a))",
                             lambda torch, F, g, a, b: (torch.ops.aten.silu_backward(g * b, a),
                                                        g * F.silu(a))),
    ("geglu", "forward"): ("F.gelu(a) * b", lambda torch, F, a, b: F.gelu(a) * b),
    ("geglu", "backward"): ("(aten.gelu_backward(g * b, a), g * F.gelu(a))",
                            lambda torch, F, g, a, b: (torch.ops.aten.gelu_backward(g * b, a),
                                                       g * F.gelu(a))),
}
for (_op, _form), (_expr, _fn) in _TORCH_GATED.items():
    PEERS.setdefault((_op, _form), []).append(Peer("torch", _expr, _torch_gated(_form, _fn)))
del _op, _form, _expr, _fn, _saved
