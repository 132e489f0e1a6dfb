"""Plots of activation functions and their derivatives (``fastact.plot``, ``fastact plot``).

matplotlib comes from the ``plot`` extra (``pip install "fastact[plot]"``) and is imported only
when a plot is drawn, so ``import fastact`` never needs it.  Figures are built with
:class:`matplotlib.figure.Figure` rather than ``pyplot``: nothing here opens a window or depends
on the interactive backend, so the CLI works on a headless server.

Both curves of an op come from one ``NAME_and_derivative`` call, the fused one-pass form.
"""

from __future__ import annotations

import numpy as np

from . import _registry

#: x range of the plots: where the shapes that teaching material discusses (saturation, the
#: kink at 0, the ELU/SELU knee, the hard* ramps at +-3) are all visible.
DEFAULT_XLIM = (-5.0, 5.0)

#: prelu has no default weight in the API; PyTorch initialises nn.PReLU with 0.25.
PRELU_PLOT_WEIGHT = 0.25


def _matplotlib():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            'fastact.plot needs matplotlib, which comes with the plot extra: '
            'pip install "fastact[plot]"  (or: pip install matplotlib)') from None
    return Figure


def plottable() -> tuple[str, ...]:
    """Names of the ops that :func:`plot` can draw (elementwise activations and prelu)."""
    return tuple(op.name for op in _registry.OPS if op.kind in ("elementwise", "channel"))


def parse_spec(text: str) -> tuple[str, dict]:
    """``'elu:alpha=0.5'`` -> ``('elu', {'alpha': 0.5})`` (the CLI's NAME[:param=value,...]).

    String parameters (``gelu:approximate=tanh``) stay strings; the others become floats.
    """
    name, _, rest = text.partition(":")
    params: dict = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"fastact.plot: {text!r}: expected NAME:param=value[,param=value]")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            params[key.strip()] = value.strip()
    return name.strip(), params


def _curves(name: str, params: dict, x: np.ndarray):
    from . import api

    if name not in plottable():
        raise ValueError(f"fastact.plot: cannot plot {name!r}; plottable ops: "
                         f"{', '.join(plottable())}")
    spec = _registry.OPS_BY_NAME[name]
    unknown = set(params) - set(spec.param_names) - ({"weight"} if spec.kind == "channel"
                                                      else set())
    if unknown:
        raise ValueError(f"fastact.plot: {name} has no parameter {sorted(unknown)[0]!r}; its "
                         f"parameters: {', '.join(spec.param_names) or '(none)'}")
    fn = getattr(api, spec.public_name("and_derivative"))
    kwargs = dict(params)
    if spec.kind == "channel":
        return fn(x, kwargs.pop("weight", PRELU_PLOT_WEIGHT), **kwargs)
    missing = [p.name for p in spec.params if p.required and p.name not in kwargs]
    if missing:
        example = ",".join(f"{p.name}={p.example:g}" for p in spec.params if p.required)
        raise ValueError(f"fastact.plot: {name} needs {', '.join(missing)} "
                         f"(e.g. {name}:{example})")
    return fn(x, **kwargs)


def _label(name: str, params: dict) -> str:
    if not params:
        return name
    return f"{name}({', '.join(f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}' for k, v in params.items())})"


def plot(names, ax=None, *, derivative: bool = False, xlim=DEFAULT_XLIM, num: int = 801):
    """Draw activation functions (solid) and their derivatives (dashed, same colour).

    Parameters
    ----------
    names : str or sequence of str
        Op names, optionally with parameters: ``"sigmoid"``, ``["relu", "elu:alpha=0.5"]``.
        Any elementwise activation of :func:`fastact.plottable` (and ``prelu``, drawn with
        weight 0.25, PyTorch's initial value, unless ``prelu:weight=...`` is given).
    ax : matplotlib.axes.Axes, optional
        Draw into these axes; by default a new figure is made (without ``pyplot``: nothing is
        shown, call ``fig.savefig``).
    derivative : bool, default False
        Also draw each derivative, dashed (the CLI's ``--derivative``).
    xlim : (float, float), default (-5, 5)
        Input range.
    num : int, default 801
        Number of sample points.

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the axes.

    Raises
    ------
    ImportError
        matplotlib is missing; the message names the ``plot`` extra.
    ValueError
        An unknown op, an op that is not elementwise, or a bad parameter.

    Examples
    --------
    >>> import fastact as fa
    >>> fig = fa.plot(["sigmoid", "tanh"], derivative=True)   # doctest: +SKIP
    >>> fig.savefig("sigmoid_tanh.png")                      # doctest: +SKIP
    """
    if isinstance(names, str):
        names = [names]
    specs = [parse_spec(n) for n in names]
    if not specs:
        raise ValueError("fastact.plot: give at least one op name")
    x = np.linspace(float(xlim[0]), float(xlim[1]), int(num))
    curves = [(name, params, *_curves(name, params, x)) for name, params in specs]
    Figure = _matplotlib()
    if ax is None:
        fig = Figure(figsize=(7.0, 4.5), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    ax.axhline(0.0, color="0.6", lw=0.8, zorder=0)
    ax.axvline(0.0, color="0.6", lw=0.8, zorder=0)
    for i, (name, params, y, dydx) in enumerate(curves):
        color = f"C{i % 10}"
        label = _label(name, params)
        ax.plot(x, y, color=color, lw=2.0, label=label)
        if derivative:
            ax.plot(x, dydx, color=color, lw=1.5, ls="--", label=f"{label}'")
    ax.set_xlim(x[0], x[-1])
    ax.set_xlabel("x")
    ax.set_ylabel("f(x)" + (",  f'(x) dashed" if derivative else ""))
    title = ", ".join(_label(n, p) for n, p in specs)
    ax.set_title(title + (" and derivatives" if derivative else ""))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", frameon=False)
    return fig
