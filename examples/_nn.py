"""A few NumPy neural-network pieces shared by the examples, built on fastact's kernels.

Every activation goes through fastact: ``fa.NAME`` in the forward pass and the one-pass
``fa.NAME_backward(grad, x=...)`` in the backward pass.  The layers keep what their backward
pass needs; there is no autograd, so the data flow stays visible.
"""

from __future__ import annotations

import numpy as np

import fastact as fa


class Linear:
    """``y = x @ W + b`` with He-scaled initial weights (good for ReLU-like units)."""

    def __init__(self, n_in: int, n_out: int, rng: np.random.Generator, dtype=np.float32,
                 gain: float = 2.0):
        self.n_in, self.n_out = n_in, n_out
        self.W = (rng.standard_normal((n_in, n_out)) * np.sqrt(gain / n_in)).astype(dtype)
        self.b = np.zeros(n_out, dtype)
        self.grads = [np.zeros_like(self.W), np.zeros_like(self.b)]

    @property
    def params(self):
        return [self.W, self.b]

    def forward(self, x, train: bool = True):
        self.x = x
        return x @ self.W + self.b

    def backward(self, grad):
        self.grads[0][...] = self.x.T @ grad
        self.grads[1][...] = grad.sum(axis=0)
        return grad @ self.W.T


class Activation:
    """An elementwise fastact activation, e.g. ``Activation("leaky_relu", negative_slope=0.1)``."""

    params: list = []
    grads: list = []

    def __init__(self, name: str, **op_params):
        self.name = name
        self.op_params = op_params
        self.forward_fn = getattr(fa, name)
        self.backward_fn = getattr(fa, f"{name}_backward")

    def forward(self, x, train: bool = True):
        self.x = x
        return self.forward_fn(x, **self.op_params)

    def backward(self, grad):
        # grad * f'(x) in one pass over memory (no separate derivative array)
        return self.backward_fn(grad, x=self.x, **self.op_params)


class Dropout:
    """Inverted dropout: active units are scaled by 1/(1-p) in training, identity at test."""

    params: list = []
    grads: list = []

    def __init__(self, p: float, rng: np.random.Generator):
        self.p, self.rng = p, rng

    def forward(self, x, train: bool = True):
        if not train or self.p == 0:
            self.mask = None
            return x
        keep = self.rng.random(x.shape) >= self.p
        self.mask = keep.astype(x.dtype) / np.asarray(1.0 - self.p, x.dtype)
        return x * self.mask

    def backward(self, grad):
        return grad if self.mask is None else grad * self.mask


class Sequential:
    def __init__(self, *layers):
        self.layers = list(layers)

    @property
    def params(self):
        return [p for layer in self.layers for p in layer.params]

    @property
    def grads(self):
        return [g for layer in self.layers for g in layer.grads]

    def forward(self, x, train: bool = True):
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def backward(self, grad):
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        return grad


class SGD:
    def __init__(self, params, lr: float):
        self.params, self.lr = params, lr

    def step(self, grads):
        for p, g in zip(self.params, grads):
            p -= self.lr * g


class Adam:
    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads):
        self.t += 1
        b1, b2 = self.betas
        scale = self.lr * np.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= (scale * m / (np.sqrt(v) + self.eps)).astype(p.dtype)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U; tied scores get their average rank)."""
    scores = np.asarray(scores, np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average rank of each group of equal scores
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = 0.5 * (s + e - 1) + 1
    n_pos, n_neg = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def batches(n: int, batch_size: int, rng: np.random.Generator):
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]
