"""Generate ``tests/golden/torch_losses.npz``: loss values and input gradients from PyTorch.

Run once, with PyTorch installed (the tests read the ``.npz`` and never import torch)::

    python tests/golden/make_torch_losses.py

Each case calls ``torch.nn.functional.<fn>`` in float64 and records the loss and the gradient
of ``loss.sum()`` with respect to the input (what ``fastact.<fn>_and_grad`` returns).  Cases
cover ignore_index, class weights, label smoothing, probability targets, the reductions,
infinite and huge logits, empty batches, unbatched input, N-D input with the class axis 1,
pos_weight, batchmean and log_target.  Metadata (function, keyword arguments, array names) is
stored as JSON in the ``meta`` entry.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(20261123)
cases = []


def add(fn, arrays, **kwargs):
    cases.append((fn, arrays, kwargs))


def logits(*shape, scale=3.0):
    return rng.standard_normal(shape) * scale


# cross_entropy: class indices
for red in ("none", "mean", "sum"):
    add("cross_entropy", {"input": logits(6, 5), "target": rng.integers(0, 5, 6)}, reduction=red)
    add("cross_entropy", {"input": logits(6, 5), "target": np.array([0, -100, 4, 2, -100, 1])},
        reduction=red)
    add("cross_entropy", {"input": logits(6, 5), "target": np.array([0, 7, 4, 7, 3, 1]),
                          "weight": rng.uniform(0.1, 2.0, 5)}, reduction=red, ignore_index=7)
    add("cross_entropy", {"input": logits(6, 5), "target": rng.integers(0, 5, 6)},
        reduction=red, label_smoothing=0.2)
    add("cross_entropy", {"input": logits(6, 5), "target": np.array([0, -100, 4, 2, 3, 1]),
                          "weight": rng.uniform(0.1, 2.0, 5)}, reduction=red,
        label_smoothing=0.1)
    # probability targets (with weights and smoothing)
    q = rng.uniform(0, 1, (4, 5))
    q /= q.sum(1, keepdims=True)
    add("cross_entropy", {"input": logits(4, 5), "target": q}, reduction=red)
    add("cross_entropy", {"input": logits(4, 5), "target": q,
                          "weight": rng.uniform(0.1, 2.0, 5)}, reduction=red,
        label_smoothing=0.3)
    # unbatched, N-D with class axis 1
    add("cross_entropy", {"input": logits(5), "target": np.array(3)}, reduction=red)
    add("cross_entropy", {"input": logits(2, 4, 3, 2), "target": rng.integers(0, 4, (2, 3, 2))},
        reduction=red)
    qq = rng.uniform(0, 1, (2, 4, 3))
    qq /= qq.sum(1, keepdims=True)
    add("cross_entropy", {"input": logits(2, 4, 3), "target": qq}, reduction=red)
    # empty batch
    add("cross_entropy", {"input": np.zeros((0, 5)), "target": np.zeros(0, np.int64)},
        reduction=red)
    # all targets ignored
    add("cross_entropy", {"input": logits(3, 5), "target": np.array([-100, -100, -100])},
        reduction=red)
    # huge and infinite logits
    add("cross_entropy", {"input": np.array([[1e30, 0.0, -1e30], [3e38, 3e38, 0.0],
                                             [-1e300, 1e300, 0.0]]),
                          "target": np.array([0, 1, 2])}, reduction=red)
    add("cross_entropy", {"input": np.array([[-np.inf, 0.0, 1.0], [np.inf, 0.0, 1.0],
                                             [np.inf, 0.0, 1.0], [0.0, -np.inf, -np.inf]]),
                          "target": np.array([1, 0, 2, 0])}, reduction=red)
    # nll_loss
    lp = np.log(rng.uniform(0.01, 1, (6, 5)))
    add("nll_loss", {"input": lp, "target": np.array([0, -100, 4, 2, 3, 1])}, reduction=red)
    add("nll_loss", {"input": lp, "target": np.array([0, 1, 4, 2, 3, 1]),
                     "weight": rng.uniform(0.1, 2.0, 5)}, reduction=red)
    add("nll_loss", {"input": np.log(rng.uniform(0.01, 1, (2, 3, 4))),
                     "target": rng.integers(0, 3, (2, 4))}, reduction=red)
    add("nll_loss", {"input": np.log(rng.uniform(0.01, 1, 4)), "target": np.array(2)},
        reduction=red)
    # elementwise losses
    x, y = rng.standard_normal((3, 4)) * 2, rng.standard_normal((3, 4)) * 2
    for fn in ("mse_loss", "l1_loss"):
        add(fn, {"input": x, "target": y}, reduction=red)
    add("huber_loss", {"input": x, "target": y}, reduction=red, delta=0.7)
    add("smooth_l1_loss", {"input": x, "target": y}, reduction=red, beta=0.7)
    add("smooth_l1_loss", {"input": x, "target": y}, reduction=red, beta=0.0)
    pr = rng.uniform(0, 1, (3, 4))
    pr[0, 0], pr[0, 1] = 0.0, 1.0
    tg = rng.uniform(0, 1, (3, 4))
    tg[1, :2] = (0.0, 1.0)
    add("binary_cross_entropy", {"input": pr, "target": tg}, reduction=red)
    add("binary_cross_entropy", {"input": pr, "target": tg,
                                 "weight": rng.uniform(0.5, 2, (3, 4))}, reduction=red)
    z = rng.standard_normal((3, 4)) * 5
    z[0, :3] = (40.0, -40.0, 800.0)
    add("binary_cross_entropy_with_logits", {"input": z, "target": tg}, reduction=red)
    add("binary_cross_entropy_with_logits", {"input": z, "target": tg,
                                             "weight": rng.uniform(0.5, 2, (4,)),
                                             "pos_weight": rng.uniform(0.5, 3, (4,))},
        reduction=red)
    add("binary_cross_entropy_with_logits",
        {"input": np.array([np.inf, -np.inf, np.inf, -np.inf, 3.0]),
         "target": np.array([1.0, 0.0, 0.0, 1.0, 0.5])}, reduction=red)
    lq = np.log(rng.uniform(0.01, 1, (3, 4)))
    kt = rng.uniform(0, 1, (3, 4))
    kt[0, 0] = 0.0
    add("kl_div", {"input": lq, "target": kt}, reduction=red)
    add("kl_div", {"input": lq, "target": np.log(kt + 0.1)}, reduction=red, log_target=True)
for fn in ("mse_loss", "l1_loss", "huber_loss", "binary_cross_entropy_with_logits"):
    add(fn, {"input": np.zeros((0, 3)), "target": np.zeros((0, 3))}, reduction="mean")
    add(fn, {"input": np.zeros((0, 3)), "target": np.zeros((0, 3))}, reduction="sum")
add("kl_div", {"input": np.log(rng.uniform(0.01, 1, (3, 4))), "target": rng.uniform(0, 1, (3, 4))},
    reduction="batchmean")
add("kl_div", {"input": np.log(rng.uniform(0.01, 1, (3, 4))), "target": rng.uniform(-1, 0, (3, 4))},
    reduction="batchmean", log_target=True)


def run(fn, arrays, kwargs):
    t = {k: torch.tensor(v) for k, v in arrays.items()}
    inp = t["input"].clone().requires_grad_(True)
    extra = {k: v for k, v in t.items() if k not in ("input", "target")}
    loss = getattr(F, fn)(inp, t["target"], **extra, **kwargs)
    if inp.numel():
        loss.sum().backward()
        grad = inp.grad.numpy()
    else:
        grad = np.zeros(inp.shape)
    return loss.detach().numpy(), grad


def limit(fn, arrays, kwargs):
    """Where torch gives NaN at an infinite input, the mathematical limit: torch evaluated with
    the infinities replaced by +-1e6 and by +-2e6 (finite, so torch is exact there); values that
    agree are the limit, values that grow without bound go to +-inf, the rest stay NaN."""
    res = []
    for big in (1e6, 2e6):
        a = {k: (np.where(np.isinf(v), np.sign(v) * big, v) if k == "input" else v)
             for k, v in arrays.items()}
        res.append(run(fn, a, kwargs))
    outs = []
    for a, b in zip(*res):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        same = np.isclose(a, b, rtol=1e-9, atol=1e-12)
        grows = np.abs(b) > np.abs(a) * 1.5
        outs.append(np.where(same, a, np.where(grows, np.sign(b) * np.inf, np.nan)))
    return outs


out = {}
meta = []
for i, (fn, arrays, kwargs) in enumerate(cases):
    loss, grad = run(fn, arrays, kwargs)
    if np.isinf(arrays["input"]).any() and (np.isnan(loss).any() or np.isnan(grad).any()):
        out[f"{i}/loss_limit"], out[f"{i}/grad_limit"] = limit(fn, arrays, kwargs)
    for k, v in arrays.items():
        out[f"{i}/{k}"] = np.asarray(v)
    out[f"{i}/loss"] = np.asarray(loss, np.float64)
    out[f"{i}/grad"] = np.asarray(grad, np.float64)
    meta.append({"fn": fn, "kwargs": kwargs, "arrays": list(arrays)})
out["meta"] = np.array(json.dumps({"torch": torch.__version__, "cases": meta}))
np.savez_compressed(os.path.join(HERE, "torch_losses.npz"), **out)
print(f"{len(cases)} cases written with torch {torch.__version__}")
