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


def test_auc_helper_matches_pairwise_definition():
    nn = load("_nn")
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, 200).astype(float)  # many ties
    labels = rng.random(200) < 0.4
    pos, neg = scores[labels], scores[~labels]
    want = (np.sum(pos[:, None] > neg[None, :]) + 0.5 * np.sum(pos[:, None] == neg[None, :])) \
        / (len(pos) * len(neg))
    assert nn.auc(scores, labels) == pytest.approx(want, rel=1e-12)


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
