"""Train the same small MLP with five activations and watch gradients vanish and units die.

The data are scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download).  The
network is 64 -> 64 -> 64 -> 64 -> 64 -> 10 with one activation everywhere, trained with plain
SGD (an adaptive optimiser would hide the effect) from the same initial weights for each
activation, with fastact's fused softmax cross-entropy (``fa.cross_entropy_and_grad``) as loss.

What to look at in the output:

* **vanishing gradients**: sigmoid's derivative is at most 1/4, so each layer shrinks the
  gradient on its way back; the first layer of the sigmoid net gets a much smaller gradient than
  with ReLU (the "grad layer 1" column and the right-hand plot), and it learns slowest;
* **zero-centred helps**: tanh (derivative up to 1, zero-centred outputs) trains much better
  than sigmoid;
* **dead units**: a ReLU unit whose input is negative for every example gets no gradient ever
  again ("dead" column); leaky ReLU, ELU and GELU keep a small slope for x < 0 and lose none.

Run ``python examples/compare_activations.py --out curves.png``; it takes a few seconds (plus
Numba's one-off compilation on the very first run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fastact as fa  # noqa: E402
from _nn import SGD, Activation, Linear, Sequential, batches  # noqa: E402

ACTIVATIONS = [
    ("sigmoid", {}),
    ("tanh", {}),
    ("relu", {}),
    ("leaky_relu", {"negative_slope": 0.1}),
    ("elu", {"alpha": 1.0}),
]


def load_digits(rng: np.random.Generator, dtype):
    from sklearn.datasets import load_digits as sk_load_digits

    data = sk_load_digits()
    x = (data.data / 16.0).astype(dtype)
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-3)
    order = rng.permutation(len(x))
    n_train = int(0.8 * len(x))
    train, test = order[:n_train], order[n_train:]
    return x[train], data.target[train], x[test], data.target[test]


def build(name: str, params: dict, seed: int, dtype, width: int = 64, depth: int = 4):
    rng = np.random.default_rng(seed)  # same initial weights for every activation
    layers = []
    n_in = 64
    for _ in range(depth):
        layers += [Linear(n_in, width, rng, dtype, gain=1.0), Activation(name, **params)]
        n_in = width
    layers.append(Linear(n_in, 10, rng, dtype, gain=1.0))
    return Sequential(*layers)


def dead_fraction(model: Sequential, x: np.ndarray) -> float:
    """Fraction of hidden units whose activation derivative is 0 on every example."""
    dead = total = 0
    h = x
    for layer in model.layers:
        h = layer.forward(h, train=False)
        if isinstance(layer, Activation):
            d = getattr(fa, f"{layer.name}_derivative")(layer.x, **layer.op_params)
            dead += int(np.sum(np.all(d == 0, axis=0)))
            total += d.shape[1]
    return dead / total


def train(name, params, data, *, epochs, lr, seed, dtype, batch_size=32):
    x_train, y_train, x_test, y_test = data
    model = build(name, params, seed, dtype)
    opt = SGD(model.params, lr)
    linears = [layer for layer in model.layers if isinstance(layer, Linear)]
    rng = np.random.default_rng(seed + 1)
    losses, grad_norms = [], np.zeros(len(linears))
    steps = 0
    for _ in range(epochs):
        epoch_loss = 0.0
        for idx in batches(len(x_train), batch_size, rng):
            logits = model.forward(x_train[idx])
            loss, grad = fa.cross_entropy_and_grad(logits, y_train[idx], out=logits)
            model.backward(grad)  # grad is d(mean loss)/d(logits), written over the logits
            grad_norms += [np.linalg.norm(layer.grads[0]) for layer in linears]
            steps += 1
            opt.step(model.grads)
            epoch_loss += float(loss) * len(idx)
        losses.append(epoch_loss / len(x_train))
    accuracy = float(np.mean(model.forward(x_test, train=False).argmax(axis=1) == y_test))
    return {"loss": losses, "grad_norms": (grad_norms / steps).tolist(),
            "test_accuracy": accuracy, "dead_fraction": dead_fraction(model, x_train)}


def plot(results: dict, path: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_loss, ax_grad = fig.subplots(1, 2)
    for i, (name, r) in enumerate(results.items()):
        ax_loss.plot(np.arange(1, len(r["loss"]) + 1), r["loss"], color=f"C{i}", label=name)
        ax_grad.semilogy(np.arange(1, len(r["grad_norms"]) + 1), r["grad_norms"], "o-",
                         color=f"C{i}", label=name)
    ax_loss.set(xlabel="epoch", ylabel="training cross-entropy", title="Loss")
    ax_grad.set(xlabel="Linear layer (1 = next to the input)", ylabel="mean ||dL/dW||",
                title="Gradient norm per layer")
    for ax in (ax_loss, ax_grad):
        ax.grid(True, alpha=0.3)
        ax.legend(frameon=False)
    fig.savefig(path, dpi=110)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--out", default="compare_activations.png", help="PNG of the curves")
    args = parser.parse_args(argv)
    dtype = np.dtype(args.dtype)
    data = load_digits(np.random.default_rng(args.seed), dtype)
    results = {}
    print(f"{'activation':<12}{'final loss':>11}{'test acc':>10}{'grad layer 1':>14}"
          f"{'grad layer 5':>14}{'dead':>7}")
    for name, params in ACTIVATIONS:
        r = train(name, params, data, epochs=args.epochs, lr=args.lr, seed=args.seed,
                  dtype=dtype)
        results[name] = r
        print(f"{name:<12}{r['loss'][-1]:>11.4f}{r['test_accuracy']:>10.3f}"
              f"{r['grad_norms'][0]:>14.2e}{r['grad_norms'][-1]:>14.2e}"
              f"{r['dead_fraction']:>7.1%}")
    if args.out:
        plot(results, args.out)
        print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
