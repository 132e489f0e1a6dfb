"""NumPy backend: vectorised reference kernels.

The readable twin of every compiled kernel (same names and arguments, see ``numba_cpu``), used
as the last-resort backend and, evaluated in float64 / ``np.longdouble``, as the test oracle.
It is written independently of ``_math.py`` on purpose: tests compare two implementations.

Every kernel works for any float dtype (float32, float64, longdouble) and suppresses floating
point warnings (DESIGN.md section 3: no RuntimeWarning escapes).
"""

from __future__ import annotations

import numpy as np

def _quiet():
    return np.errstate(all="ignore")  # a fresh context each time: errstate is not reentrant


def _nan_step(x, at_most_zero, above_zero):
    """above_zero where x > 0, at_most_zero where x <= 0, NaN where x is NaN."""
    r = np.where(x > 0, above_zero, at_most_zero)
    return np.where(np.isnan(x), x, r)


# --- sigmoid ------------------------------------------------------------------------------------

def _sigmoid(x):
    e = np.exp(-np.abs(x))
    r = 1 / (1 + e)
    return np.where(x >= 0, r, e * r)


def _sigmoid_d(x):
    e = np.exp(-np.abs(x))
    return e / ((1 + e) * (1 + e))


def _sigmoid_dy(y):
    return y * (1 - y)


# --- tanh ---------------------------------------------------------------------------------------

def _tanh_d(x):
    e = np.exp(-2 * np.abs(x))
    return 4 * e / ((1 + e) * (1 + e))


def _tanh_dy(y):
    return (1 - y) * (1 + y)


# --- relu family ---------------------------------------------------------------------------------

def _relu(x):
    return np.where(x <= 0, np.zeros_like(x), x)


def _leaky(x, negative_slope):
    return np.where(x > 0, x, x * negative_slope)


def _leaky_d(x, negative_slope):
    return _nan_step(x, negative_slope, 1)


def _elu(x, alpha):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


def _elu_d(x, alpha):
    return np.where(x > 0, 1, alpha * np.exp(np.minimum(x, 0)))


def _elu_dy(y, alpha):
    return np.where(y > 0, 1, y + alpha)


#: op name -> (value(x, *p), derivative(x, *p), derivative_from_y(y, *p) or None)
FUNCTIONS = {
    "sigmoid": (_sigmoid, _sigmoid_d, _sigmoid_dy),
    "tanh": (np.tanh, _tanh_d, _tanh_dy),
    "relu": (_relu, lambda x: _leaky_d(x, 0), lambda y: _leaky_d(y, 0)),
    "leaky_relu": (_leaky, _leaky_d, _leaky_d),
    "elu": (_elu, _elu_d, _elu_dy),
}


def _define(name, value, derivative, derivative_from_y):
    # Parameters arrive as Python floats; as np.float64 they make float32 products round once
    # from the exact float64 product, which is what the compiled kernels do (NEP 50 would
    # otherwise round the parameter to float32 first).
    def forward(x, *args):
        *params, out = map_params(args)
        with _quiet():
            out[...] = value(x, *params)

    def derivative_kernel(x, *args):
        *params, out = map_params(args)
        with _quiet():
            out[...] = derivative(x, *params)

    def and_derivative(x, *args):
        *params, out, dout = map_params(args)
        with _quiet():
            v = value(x, *params)
            d = derivative(x, *params)
            out[...] = v
            dout[...] = d

    def backward(grad, x, *args):
        *params, out = map_params(args)
        with _quiet():
            out[...] = grad * derivative(x, *params)

    def backward_from_y(grad, y, *args):
        *params, out = map_params(args)
        with _quiet():
            out[...] = grad * derivative_from_y(y, *params)

    kernels = {
        f"{name}_forward": forward,
        f"{name}_derivative": derivative_kernel,
        f"{name}_and_derivative": and_derivative,
        f"{name}_backward": backward,
    }
    if derivative_from_y is not None:
        kernels[f"{name}_backward_from_y"] = backward_from_y
    for kname, fn in kernels.items():
        fn.__name__ = fn.__qualname__ = kname
    return kernels


def map_params(args):
    return [np.float64(a) if isinstance(a, float) else a for a in args]


KERNELS = {}
for _name, _fns in FUNCTIONS.items():
    KERNELS.update(_define(_name, *_fns))


# --- prelu: flat x, channel of element i is (i // inner) % weight.size -----------------------------

def _channel_weight(x, weight, inner):
    rows = x.size // inner
    return np.broadcast_to(np.resize(weight, rows)[:, None], (rows, inner)).reshape(-1)


def prelu_forward(x, weight, inner, out):
    with _quiet():
        out[...] = _leaky(x, _channel_weight(x, weight, inner))


def prelu_derivative(x, weight, inner, out):
    with _quiet():
        out[...] = _leaky_d(x, _channel_weight(x, weight, inner))


def prelu_and_derivative(x, weight, inner, out, dout):
    w = _channel_weight(x, weight, inner)
    with _quiet():
        v = _leaky(x, w)
        d = _leaky_d(x, w)
        out[...] = v
        dout[...] = d


def prelu_backward(grad, x, weight, inner, out, grad_weight):
    w = _channel_weight(x, weight, inner)
    with _quiet():
        gx = grad * _leaky_d(x, w)
        contrib = np.where(x > 0, 0, grad.astype(np.float64) * x.astype(np.float64))
        out[...] = gx
        per_row = contrib.reshape(-1, inner).sum(axis=1)
        grad_weight[...] = per_row.reshape(-1, grad_weight.size).sum(axis=0)


# --- softmax family: x is (rows, C), mask None or uint8 (rows, C) -------------------------------------

def _rows(x, mask, temperature, log):
    """Shared forward: returns softmax or log_softmax of every row (float64 or wider)."""
    wide = np.promote_types(x.dtype, np.float64)
    xw = x.astype(wide)
    keep = np.ones(x.shape, bool) if mask is None else mask.astype(bool)
    with _quiet():
        masked = np.where(keep, xw, -np.inf)
        # the max skips NaN (NaN then reaches the sum and makes the row NaN, as in PyTorch)
        m = np.max(np.where(np.isnan(masked), -np.inf, masked), axis=1, keepdims=True)
        z = (xw - m) / temperature
        e = np.where(keep, np.exp(z), 0)
        s = e.sum(axis=1, keepdims=True)
        result = np.where(keep, z - np.log(s), -np.inf) if log else np.where(keep, e / s, 0)
    none_kept = ~keep.any(axis=1)
    if none_kept.any():
        result[none_kept] = -np.inf if log else 0
    return result


def softmax_forward(x, mask, temperature, out):
    with _quiet():
        out[...] = _rows(x, mask, temperature, log=False)


def log_softmax_forward(x, mask, temperature, out):
    with _quiet():
        out[...] = _rows(x, mask, temperature, log=True)


def _rows_backward(grad, y, mask, temperature, log):
    wide = np.promote_types(y.dtype, np.float64)
    g = grad.astype(wide)
    yw = y.astype(wide)
    keep = np.ones(y.shape, bool) if mask is None else mask.astype(bool)
    with _quiet():
        if log:
            s = np.where(keep, g, 0).sum(axis=1, keepdims=True)
            r = (g - np.exp(yw) * s) / temperature
        else:
            s = np.where(keep, g * yw, 0).sum(axis=1, keepdims=True)
            r = yw * (g - s) / temperature
    return np.where(keep, r, 0)


def softmax_backward(grad, y, mask, temperature, out):
    with _quiet():
        out[...] = _rows_backward(grad, y, mask, temperature, log=False)


def log_softmax_backward(grad, y, mask, temperature, out):
    with _quiet():
        out[...] = _rows_backward(grad, y, mask, temperature, log=True)


def softmin_forward(x, mask, temperature, out):
    # softmin(x) = softmax(-x); negation is exact
    with _quiet():
        out[...] = _rows(-x, mask, temperature, log=False)


def softmin_backward(grad, y, mask, temperature, out):
    # d softmax(-x/T)/dx = -(softmax Jacobian)/T: the softmax backward with -T
    with _quiet():
        out[...] = _rows_backward(grad, y, mask, -temperature, log=False)


def logsumexp_forward(x, mask, temperature, out):
    """T log sum exp(x/T) per row into the 1-D ``out``: max + T log(sum exp((x - max)/T)) over
    the kept entries.  Nothing kept (or C == 0): -inf.  A non-finite max (all kept entries
    -inf, or a +inf) is the result itself unless the row holds a NaN (then NaN)."""
    wide = np.promote_types(x.dtype, np.float64)
    xw = x.astype(wide)
    keep = np.ones(x.shape, bool) if mask is None else mask.astype(bool)
    with _quiet():
        masked = np.where(keep, xw, -np.inf)
        nan_row = np.isnan(masked).any(axis=1)
        m = np.max(np.where(np.isnan(masked), -np.inf, masked), axis=1, initial=-np.inf)
        finite = np.isfinite(m)
        shift = np.where(finite, m, 0)[:, None]
        s = np.where(keep, np.exp((xw - shift) / temperature), 0).sum(axis=1)
        r = np.where(finite, m + temperature * np.log(s), m)
        out[...] = np.where(nan_row, np.nan, r)


globals().update(KERNELS)


def info() -> dict:
    return {"version": np.__version__}
