"""What sigmoid, ReLU, tanh and leaky ReLU do to real images, viewed in TensorBoard.

The images are scikit-learn's two bundled sample photographs (no download); if you already
have CIFAR-10 on disk (the python-version batches, e.g. ``cifar-10-batches-py/data_batch_1``),
pass ``--cifar PATH`` to use 16 of its images instead.  Each image is standardised per channel
(zero mean, unit variance, the usual network input), passed through each activation, and mapped
back to [0, 1] for display:

* sigmoid squashes everything into (0, 1): contrast is compressed, no information is lost;
* tanh does the same into (-1, 1), zero-centred;
* ReLU zeroes every below-average pixel (dark regions become flat black);
* leaky ReLU keeps a faint copy (slope 0.1 here) of what ReLU throws away.

Output: a TensorBoard log directory (``tensorboard --logdir runs``) with one image entry per
activation, and a PNG grid of the same images.  Needs the ``examples`` extra
(scikit-learn, tensorboardX, matplotlib).
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np

import fastact as fa

ACTIVATIONS = [
    ("sigmoid", {}),
    ("tanh", {}),
    ("relu", {}),
    ("leaky_relu", {"negative_slope": 0.1}),
]


def load_images(cifar: str | None) -> np.ndarray:
    """float32 array (N, H, W, 3) in [0, 1]."""
    if cifar:
        with open(cifar, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"][:16], np.float32).reshape(-1, 3, 32, 32)
        return data.transpose(0, 2, 3, 1) / 255.0
    from sklearn.datasets import load_sample_images

    images = load_sample_images().images  # china.jpg, flower.jpg: 427 x 640 x 3 uint8
    return np.stack(images).astype(np.float32) / 255.0


def standardise(images: np.ndarray) -> np.ndarray:
    mean = images.mean(axis=(1, 2), keepdims=True)
    std = images.std(axis=(1, 2), keepdims=True)
    return (images - mean) / (std + 1e-6)


def to_display(y: np.ndarray) -> np.ndarray:
    """Min-max scale each image to [0, 1] (what TensorBoard and imshow expect)."""
    lo = y.min(axis=(1, 2, 3), keepdims=True)
    hi = y.max(axis=(1, 2, 3), keepdims=True)
    return (y - lo) / np.maximum(hi - lo, 1e-12)


def transform(images: np.ndarray) -> dict[str, np.ndarray]:
    x = standardise(images)
    out = {"input": images}
    for name, params in ACTIVATIONS:
        out[name] = to_display(getattr(fa, name)(x, **params))
    return out


def write_tensorboard(results: dict[str, np.ndarray], logdir: str) -> None:
    from tensorboardX import SummaryWriter

    with SummaryWriter(logdir) as writer:
        for tag, imgs in results.items():
            writer.add_images(f"activations/{tag}", imgs, global_step=0, dataformats="NHWC")


def write_grid(results: dict[str, np.ndarray], path: str) -> None:
    from matplotlib.figure import Figure

    n = len(next(iter(results.values())))
    fig = Figure(figsize=(2.6 * len(results), 2.0 * n), layout="constrained")
    axes = fig.subplots(n, len(results), squeeze=False)
    for col, (tag, imgs) in enumerate(results.items()):
        for row in range(n):
            ax = axes[row, col]
            ax.imshow(np.clip(imgs[row], 0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(tag)
    fig.savefig(path, dpi=80)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logdir", default="runs/image_activations")
    parser.add_argument("--out", default="image_activations.png", help="PNG grid")
    parser.add_argument("--cifar", help="a CIFAR-10 python batch file to use instead")
    args = parser.parse_args(argv)
    results = transform(load_images(args.cifar))
    write_tensorboard(results, args.logdir)
    write_grid(results, args.out)
    for tag, imgs in results.items():
        print(f"{tag:<11} shape {imgs.shape}  mean {imgs.mean():.3f}  "
              f"fraction at 0: {np.mean(imgs == 0):.1%}")
    print(f"wrote {args.out} and the TensorBoard log {args.logdir} "
          f"(view: tensorboard --logdir {Path(args.logdir).parent})")
    return results


if __name__ == "__main__":
    main()
