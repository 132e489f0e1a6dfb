"""Smoke tests of examples/: each runs (smaller where it has a size option) and shows its point."""

from __future__ import annotations

import importlib.util
import io
import struct
from pathlib import Path

import numpy as np
import pytest

import fastact as fa

EXAMPLES = Path(fa.__file__).resolve().parent.parent / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"fastact_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recommender_learns_and_draws_the_network(tmp_path):
    pytest.importorskip("matplotlib")
    image = pytest.importorskip("matplotlib.image")
    diagram = tmp_path / "net.png"
    history = load("recommender").main(["--diagram", str(diagram)])
    loss, auc = history["loss"], history["auc"]
    assert loss[-1] < loss[0] and all(np.diff(loss) < 0), loss
    assert auc[-1] >= 0.75, auc
    pixels = image.imread(diagram)
    assert pixels.shape[1] > 2 * pixels.shape[0]  # a left-to-right flow
    # Linear layers are green rectangles (#c9e7c2), activations orange circles (#fde0c5)
    for color in ((0xC9, 0xE7, 0xC2), (0xFD, 0xE0, 0xC5)):
        close = np.all(np.abs(pixels[..., :3] - np.array(color) / 255) < 0.02, axis=-1)
        assert close.sum() > 1000, f"colour {color} missing from the diagram"


def test_auc_helper_matches_pairwise_definition():
    nn = load("_nn")
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, 200).astype(float)  # many ties
    labels = rng.random(200) < 0.4
    pos, neg = scores[labels], scores[~labels]
    want = (np.sum(pos[:, None] > neg[None, :]) + 0.5 * np.sum(pos[:, None] == neg[None, :])) \
        / (len(pos) * len(neg))
    assert nn.auc(scores, labels) == pytest.approx(want, rel=1e-12)


def test_compare_activations_shows_vanishing_gradients(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    out = tmp_path / "curves.png"
    results = load("compare_activations").main(["--epochs", "4", "--out", str(out)])
    assert set(results) == {"sigmoid", "tanh", "relu", "leaky_relu", "elu"}
    first_layer = {name: r["grad_norms"][0] for name, r in results.items()}
    assert first_layer["sigmoid"] < first_layer["relu"] / 10, first_layer
    for name in ("tanh", "relu", "leaky_relu", "elu"):
        assert results[name]["loss"][-1] < results[name]["loss"][0], name
        assert results[name]["test_accuracy"] > 0.8, (name, results[name]["test_accuracy"])
    for name in ("leaky_relu", "elu"):
        assert results[name]["dead_fraction"] == 0.0, name
    assert out.stat().st_size > 10_000


def test_losses_example_gradients_match_finite_differences(capsys):
    results = load("losses").main()
    sat = results["saturation"]
    wrong = sat["z"] < -4  # confidently wrong: MSE's gradient vanishes, BCE's does not
    assert np.all(np.abs(sat["mse_grad"][wrong]) < 0.02)
    assert np.all(np.abs(sat["bce_grad"][wrong]) > 0.98)
    for loss, grad, numeric in results["multiclass"].values():
        np.testing.assert_allclose(grad, numeric, atol=1e-7)
        assert np.all(grad[3] == 0)  # the ignored example
    for loss, grad, numeric in results["regression"].values():
        np.testing.assert_allclose(grad, numeric, atol=1e-6)
    assert "same as cross_entropy" in capsys.readouterr().out


def _tensorboard_records(path: Path):
    """The serialized Event protos of a TFRecord file (length, crc, data, crc framing)."""
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        pos += 12
        yield data[pos:pos + length]
        pos += length + 4


def test_image_activations_writes_tensorboard_images(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
    logdir, grid = tmp_path / "runs" / "img", tmp_path / "grid.png"
    results = load("image_activations").main(["--logdir", str(logdir), "--out", str(grid)])
    (event_file,) = logdir.glob("events.out.tfevents.*")
    images = {}
    for record in _tensorboard_records(event_file):
        event = event_pb2.Event.FromString(record)
        for value in event.summary.value:
            if value.HasField("image"):
                images[value.tag] = value.image
    names = ["input", "sigmoid", "tanh", "relu", "leaky_relu"]
    assert set(images) == {f"activations/{n}" for n in names}
    mpl_image = pytest.importorskip("matplotlib.image")
    for name in names:
        img = images[f"activations/{name}"]
        assert img.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n", name
        decoded = mpl_image.imread(io.BytesIO(img.encoded_image_string), format="png")
        side_by_side = np.concatenate(list(results[name]), axis=1)  # tensorboardX's grid
        assert decoded.shape == side_by_side.shape == (img.height, img.width, 3), name
        assert np.max(np.abs(decoded - side_by_side)) <= 1.01 / 255, name
    # what the activations do to a standardised image
    assert np.mean(results["relu"] == 0) > 0.3  # below-average pixels are cut to zero
    assert np.mean(results["leaky_relu"] == 0) < 0.01
    assert grid.stat().st_size > 10_000
