"""A neural collaborative-filtering recommender trained in NumPy with fastact's kernels.

The model (neural collaborative filtering, as in the course material this library grew out of):

    user id -> user embedding (n_factors) --+
                                            +-> concat (2 n_factors) -> Linear(2 n_factors, 64)
    item id -> item embedding (n_factors) --+   -> ReLU -> Dropout(0.2) -> Linear(64, 32) -> ReLU
                                                -> Dropout(0.2) -> Linear(32, 1) -> sigmoid

trained on implicit feedback (did user u interact with item i?) with
``fa.binary_cross_entropy_with_logits_and_grad``: the loss and its gradient with respect to the
logits in one pass, computed stably from the logits (the sigmoid is applied only for scoring).
The hidden activations use ``fa.relu`` and ``fa.relu_backward``.

The data are synthetic and seeded: a latent-factor model (true user and item factors plus item
popularity) gives each (user, item) pair an interaction probability, and the observed
interactions are Bernoulli draws from it.  The script reports the training loss and the AUC on
held-out pairs after each epoch, and draws the network to a PNG.

Run ``python examples/recommender.py`` (a few seconds after Numba's one-off compilation).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fastact as fa  # noqa: E402
from _nn import Activation, Adam, Dropout, Linear, Sequential, auc, batches  # noqa: E402


def make_data(n_users: int, n_items: int, n_pairs: int, rng: np.random.Generator,
              true_factors: int = 6):
    """(users, items, labels, true probabilities) of ``n_pairs`` random pairs."""
    u_true = rng.standard_normal((n_users, true_factors))
    v_true = rng.standard_normal((n_items, true_factors))
    popularity = rng.normal(0.0, 1.0, n_items)
    users = rng.integers(0, n_users, n_pairs)
    items = rng.integers(0, n_items, n_pairs)
    score = np.einsum("nk,nk->n", u_true[users], v_true[items]) / np.sqrt(true_factors)
    logit = 2.5 * score + popularity[items] - 1.5
    p = fa.sigmoid(logit)
    labels = (rng.random(n_pairs) < p).astype(np.float32)
    return users, items, labels, p


class NCF:
    """Embeddings + MLP; ``forward`` returns the logits (batch, 1)."""

    def __init__(self, n_users, n_items, n_factors, rng, dropout=0.2, dtype=np.float32):
        self.user_emb = (0.1 * rng.standard_normal((n_users, n_factors))).astype(dtype)
        self.item_emb = (0.1 * rng.standard_normal((n_items, n_factors))).astype(dtype)
        self.emb_grads = [np.zeros_like(self.user_emb), np.zeros_like(self.item_emb)]
        self.mlp = Sequential(
            Linear(2 * n_factors, 64, rng, dtype), Activation("relu"), Dropout(dropout, rng),
            Linear(64, 32, rng, dtype), Activation("relu"), Dropout(dropout, rng),
            Linear(32, 1, rng, dtype, gain=1.0),
        )
        self.n_factors = n_factors

    @property
    def params(self):
        return [self.user_emb, self.item_emb] + self.mlp.params

    @property
    def grads(self):
        return self.emb_grads + self.mlp.grads

    def forward(self, users, items, train=True):
        self.users, self.items = users, items
        x = np.concatenate([self.user_emb[users], self.item_emb[items]], axis=1)
        return self.mlp.forward(x, train)

    def backward(self, grad_logits):
        grad_x = self.mlp.backward(grad_logits)
        for g in self.emb_grads:
            g[...] = 0
        np.add.at(self.emb_grads[0], self.users, grad_x[:, :self.n_factors])
        np.add.at(self.emb_grads[1], self.items, grad_x[:, self.n_factors:])

    def predict(self, users, items):
        return fa.sigmoid(self.forward(users, items, train=False)[:, 0])


def draw_network(path: str, n_factors: int) -> None:
    """Rectangles: Linear layers (in -> out features); circles: activations; arrows: the flow."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle, FancyBboxPatch

    gap = 0.5  # room for the arrows between nodes
    fig = Figure(figsize=(16, 3.4), layout="constrained")
    ax = fig.add_subplot()
    ax.set_aspect("equal")
    ax.axis("off")

    def box(x, y, text, color, w=1.45, h=0.9, dashed=False):
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.05",
                                    fc=color, ec="0.2", lw=1.2, ls="--" if dashed else "-"))
        ax.text(x, y, text, ha="center", va="center", fontsize=8.5)
        return (x - w / 2 - 0.05, y), (x + w / 2 + 0.05, y)

    def circle(x, y, text, color="#fde0c5"):
        ax.add_patch(Circle((x, y), 0.5, fc=color, ec="0.2", lw=1.2))
        ax.text(x, y, text, ha="center", va="center", fontsize=8.5)
        return (x - 0.5, y), (x + 0.5, y)

    def arrow(a, b):
        ax.annotate("", xy=b, xytext=a, arrowprops={"arrowstyle": "-|>", "color": "0.25",
                                                    "lw": 1.2, "shrinkA": 0, "shrinkB": 0})

    mid = 1.6
    user = box(0.6, 2.7, "user id", "#eeeeee", w=1.0, h=0.6)
    item = box(0.6, 0.5, "item id", "#eeeeee", w=1.0, h=0.6)
    uemb = box(2.55, 2.7, f"user embedding\n{n_factors} factors", "#d6e9f8", w=1.7)
    iemb = box(2.55, 0.5, f"item embedding\n{n_factors} factors", "#d6e9f8", w=1.7)
    concat = box(4.55, mid, f"concat\n{2 * n_factors}", "#eeeeee", w=1.0)
    arrow(user[1], uemb[0])
    arrow(item[1], iemb[0])
    arrow(uemb[1], (concat[0][0], mid + 0.25))
    arrow(iemb[1], (concat[0][0], mid - 0.25))
    flow = [  # (kind, label, width)
        ("linear", f"Linear\n{2 * n_factors} -> 64", 1.45), ("act", "ReLU", 1.0),
        ("dropout", "Dropout\n0.2", 1.15),
        ("linear", "Linear\n64 -> 32", 1.45), ("act", "ReLU", 1.0),
        ("dropout", "Dropout\n0.2", 1.15),
        ("linear", "Linear\n32 -> 1", 1.45), ("act", "sigmoid", 1.0),
        ("output", "P(interact)", 1.3),
    ]
    prev = concat
    for kind, text, w in flow:
        x = prev[1][0] + gap + w / 2
        if kind == "act":
            node = circle(x, mid, text)
        else:
            color = {"linear": "#c9e7c2", "dropout": "#ffffff", "output": "#eeeeee"}[kind]
            node = box(x, mid, text, color, w=w, h=0.6 if kind == "output" else 0.9,
                       dashed=kind == "dropout")
        arrow(prev[1], node[0])
        prev = node
    ax.set_xlim(-0.1, prev[1][0] + 0.1)
    ax.set_ylim(-0.1, 3.3)
    ax.set_title("Neural collaborative filtering: rectangles = Linear layers (in -> out "
                 "features), circles = activations", fontsize=10)
    fig.savefig(path, dpi=100)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--pairs", type=int, default=60_000)
    parser.add_argument("--n-factors", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--diagram", default="recommender_network.png")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    users, items, labels, p_true = make_data(args.users, args.items, args.pairs, rng)
    n_train = int(0.8 * args.pairs)
    train, test = slice(0, n_train), slice(n_train, None)
    print(f"{args.pairs} pairs, {labels.mean():.1%} positive; AUC of the true probabilities "
          f"on the held-out pairs (the ceiling): {auc(p_true[test], labels[test]):.3f}")

    model = NCF(args.users, args.items, args.n_factors, rng)
    opt = Adam(model.params, lr=args.lr)
    history = {"loss": [], "auc": []}
    for epoch in range(1, args.epochs + 1):
        total = 0.0
        for idx in batches(n_train, args.batch_size, rng):
            logits = model.forward(users[idx], items[idx])
            loss, grad = fa.binary_cross_entropy_with_logits_and_grad(
                logits, labels[idx, None], out=logits)
            model.backward(grad)
            opt.step(model.grads)
            total += float(loss) * len(idx)
        history["loss"].append(total / n_train)
        history["auc"].append(auc(model.predict(users[test], items[test]), labels[test]))
        print(f"epoch {epoch:2d}  train loss {history['loss'][-1]:.4f}  "
              f"held-out AUC {history['auc'][-1]:.3f}")
    if args.diagram:
        draw_network(args.diagram, args.n_factors)
        print(f"wrote {args.diagram}")
    return history


if __name__ == "__main__":
    main()
