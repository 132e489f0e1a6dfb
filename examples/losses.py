"""MSE, binary and multi-class cross-entropy on one small problem, with their gradients.

Part 1 (why classifiers use cross-entropy): one output unit, target 1, logit z from -8 to 8.
With a sigmoid output and MSE the gradient with respect to z is ``2 (s - 1) s (1 - s)``: it
vanishes when the unit is confidently *wrong* (z very negative), so learning stalls exactly where
it is needed.  Binary cross-entropy on the logit has gradient ``s - 1``: largest when most wrong.

Part 2 (multi-class): logits of 4 examples over 3 classes; ``fa.cross_entropy_and_grad`` gives
the mean loss and ``softmax(z) - onehot(target)`` divided by the batch size in one pass, with
``label_smoothing`` and ``ignore_index`` as in PyTorch.  Every fastact gradient is checked
against central finite differences of the fastact loss itself.

Run ``python examples/losses.py`` (a few seconds).
"""

from __future__ import annotations

import numpy as np

import fastact as fa


def central_difference(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = f(x)
        x[i] = old - h
        down = f(x)
        x[i] = old
        g[i] = (up - down) / (2 * h)
    return g


def saturation_table() -> dict:
    z = np.linspace(-8.0, 8.0, 9)
    target = np.ones_like(z)
    s = fa.sigmoid(z)
    # MSE on the sigmoid output, per element ('none'), and its gradient through the sigmoid
    mse, grad_s = fa.mse_loss_and_grad(s, target, reduction="sum")
    grad_mse = fa.sigmoid_backward(grad_s, y=s)
    bce, grad_bce = fa.binary_cross_entropy_with_logits_and_grad(z, target, reduction="sum")
    print("target 1; gradient with respect to the logit z")
    print(f"{'z':>6}{'sigmoid(z)':>12}{'MSE grad':>12}{'BCE grad':>12}")
    for row in zip(z, s, grad_mse, grad_bce):
        print(f"{row[0]:>6.1f}{row[1]:>12.5f}{row[2]:>12.2e}{row[3]:>12.2e}")
    return {"z": z, "mse_grad": grad_mse, "bce_grad": grad_bce}


def multiclass() -> dict:
    logits = np.array([[2.0, 0.5, -1.0],
                       [0.1, 0.2, 0.3],
                       [-3.0, 4.0, 0.0],
                       [1.0, 1.0, 1.0]])
    target = np.array([0, 2, 0, -100])  # the last example is ignored (ignore_index=-100)
    results = {}
    for smoothing in (0.0, 0.1):
        loss, grad = fa.cross_entropy_and_grad(logits, target, label_smoothing=smoothing)
        numeric = central_difference(
            lambda z: float(fa.cross_entropy(z, target, label_smoothing=smoothing)),
            logits.copy())
        print(f"\ncross_entropy (label_smoothing={smoothing}): {float(loss):.6f}")
        print("gradient (rows: examples, columns: classes; the ignored row is 0):")
        print(np.array2string(grad, precision=5, suppress_small=True))
        print(f"max |fastact - finite difference| = {np.max(np.abs(grad - numeric)):.1e}")
        results[smoothing] = (loss, grad, numeric)
    # the same loss from log_softmax + nll_loss, as in PyTorch
    two_step = fa.nll_loss(fa.log_softmax(logits, axis=1), target)
    print(f"\nnll_loss(log_softmax(z)) = {float(two_step):.6f} (same as cross_entropy)")
    # probability targets: a soft label per example, same shape as the logits
    soft = fa.softmax(np.array([[3.0, 0, 0], [0, 0, 3.0], [3.0, 0, 0], [0, 3.0, 0]]), axis=1)
    print(f"cross_entropy with probability targets: {float(fa.cross_entropy(logits, soft)):.6f}")
    return results


def regression() -> dict:
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(5,))
    target = pred + np.array([0.1, -0.5, 2.0, 0.0, -3.0])
    out = {}
    print("\nregression residuals: target - pred =", np.round(target - pred, 2))
    for name, kwargs in (("mse_loss", {}), ("l1_loss", {}), ("huber_loss", {"delta": 1.0}),
                         ("smooth_l1_loss", {"beta": 1.0})):
        loss, grad = getattr(fa, f"{name}_and_grad")(pred, target, **kwargs)
        numeric = central_difference(
            lambda p, name=name, kwargs=kwargs: float(getattr(fa, name)(p, target, **kwargs)),
            pred.copy())
        print(f"{name:<15} loss {float(loss):8.4f}  grad {np.round(grad, 4)}  "
              f"(finite-difference error {np.max(np.abs(grad - numeric)):.0e})")
        out[name] = (loss, grad, numeric)
    return out


def main() -> dict:
    return {"saturation": saturation_table(), "multiclass": multiclass(),
            "regression": regression()}


if __name__ == "__main__":
    main()
