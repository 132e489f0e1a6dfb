"""``fastact.plot`` and ``fastact plot``: the curves drawn are the functions, the PNG shows them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastact as fa
from fastact import _plot, _registry

import oracle

ROOT = Path(fa.__file__).resolve().parent.parent


def _lines(fig):
    (ax,) = fig.axes
    return [ln for ln in ax.get_lines() if ln.get_label() and not ln.get_label().startswith("_")]


@pytest.mark.parametrize("name", _plot.plottable())
def test_curves_are_the_function_and_its_derivative(name):
    pytest.importorskip("matplotlib")
    spec = _registry.OPS_BY_NAME[name]
    required = {p.name: p.example for p in spec.params if p.required}
    if required:  # threshold(x, threshold, value): named in the error, then given
        with pytest.raises(ValueError, match=f"{name} needs"):
            fa.plot(name)
        name = name + ":" + ",".join(f"{k}={v}" for k, v in required.items())
    fig = fa.plot(name, derivative=True, xlim=(-4, 3), num=301)
    value, slope = _lines(fig)
    x = value.get_xdata()
    assert x[0] == -4 and x[-1] == 3 and len(x) == 301
    if spec.kind == "channel":
        want = oracle.prelu("forward", np.float64, x=x, weight=_plot.PRELU_PLOT_WEIGHT)
        want_d = oracle.prelu("derivative", np.float64, x=x, weight=_plot.PRELU_PLOT_WEIGHT)
    else:
        want = oracle.elementwise(spec, "forward", np.float64, x=x)
        want_d = oracle.elementwise(spec, "derivative", np.float64, x=x)
    np.testing.assert_allclose(value.get_ydata(), want, rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose(slope.get_ydata(), want_d, rtol=1e-13, atol=1e-300)
    assert value.get_linestyle() == "-" and slope.get_linestyle() == "--"
    assert value.get_color() == slope.get_color()
    assert slope.get_label() == value.get_label() + "'"


def test_several_ops_parameters_and_given_axes():
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    got = fa.plot(["relu", "elu:alpha=0.5", "leaky_relu:negative_slope=0.2"], ax=ax)
    assert got is fig
    lines = _lines(fig)
    assert [ln.get_label() for ln in lines] == [
        "relu", "elu(alpha=0.5)", "leaky_relu(negative_slope=0.2)"]
    x = lines[1].get_xdata()
    spec = _registry.OPS_BY_NAME["elu"]
    np.testing.assert_allclose(lines[1].get_ydata(),
                               oracle.elementwise(spec, "forward", np.float64, x=x,
                                                  params={"alpha": 0.5}), rtol=1e-13)
    assert len({ln.get_color() for ln in lines}) == 3
    assert "derivatives" not in ax.get_title()


@pytest.mark.parametrize("names, match", [
    (["softmax"], "cannot plot 'softmax'"),
    (["nonsense"], "cannot plot 'nonsense'"),
    (["elu:beta=2"], "elu has no parameter 'beta'"),
    (["elu:alpha"], "expected NAME:param=value"),
    ([], "at least one op"),
])
def test_bad_names_are_clear_errors(names, match):
    with pytest.raises(ValueError, match=match):
        fa.plot(names)


def test_bad_parameter_value_is_the_ops_own_error():
    with pytest.raises(ValueError, match="fastact.elu_and_derivative: alpha"):
        fa.plot("elu:alpha=nan")


def _run(*args, env=None):
    full = dict(os.environ if env is None else env)
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), full.get("PYTHONPATH", "")) if p)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.subprocess
def test_cli_writes_a_png_with_the_curves(tmp_path):
    image = pytest.importorskip("matplotlib.image")
    out = tmp_path / "acts.png"
    proc = _run("-m", "fastact", "plot", "sigmoid", "relu", "--derivative", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}" in proc.stdout
    pixels = image.imread(out)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 500
    rgb = pixels[..., :3]
    # matplotlib's C0 (sigmoid, blue #1f77b4) and C1 (relu, orange #ff7f0e) must be drawn
    for color in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):
        close = np.all(np.abs(rgb - np.array(color) / 255) < 0.06, axis=-1)
        assert close.sum() > 200, f"colour {color} hardly appears in the PNG"


@pytest.mark.subprocess
def test_cli_without_matplotlib_names_the_extra(tmp_path):
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text("import sys\nsys.modules['matplotlib'] = None\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tmp_path)
    proc = _run("-m", "fastact", "plot", "sigmoid", "--out", str(tmp_path / "x.png"), env=env)
    assert proc.returncode == 2
    assert 'pip install "fastact[plot]"' in proc.stderr
    assert not (tmp_path / "x.png").exists()
