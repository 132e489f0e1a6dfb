"""Benchmark machinery shared by ``python -m fastact bench`` and the pytest-benchmark suite.

Nothing here depends on pytest.  It provides:

* :data:`NUMPY_BASELINES` -- per ``(op, form)`` the plain NumPy expression a user would write
  instead of fastact (the "numpy-expr" baseline; in the shown expressions ``one`` stands for
  ``x.dtype.type(1)``, which keeps float32 results float32).  Each baseline takes exactly the arguments of
  the fastact function as built by :func:`fastact._tools.example_call`, so the two can be timed
  on the same inputs.  ``benchmarks/test_bench.py`` imports this table and fails for a registry
  op/form that has no entry (:func:`missing_baselines`).
* the benchmark inputs: :func:`bench_shape` (1-D for elementwise ops, ``(size // 1000, 1000)``
  rows for row-wise ops, ``(N, 10, 100)`` NCHW-like blocks for prelu), :func:`make_input`,
  :func:`make_case`;
* :func:`best_of`: ``time.perf_counter`` best-of-N timing, N adaptive;
* :func:`run_bench` / :func:`format_table`: the ``fastact bench`` command (fastact's automatic
  backend against the NumPy expression, with ``np.copyto`` of the same bytes measured in the
  same run as the memory-bandwidth yardstick).

Speed is only ever reported as ratios within one run (speed-up vs NumPy, % of copy bandwidth);
on a shared, noisy machine absolute times mean little.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import _registry

# ------------------------------------------------------------------------------------------------
# NumPy baselines ("numpy-expr")
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """The NumPy expression for one op/form: ``fn`` computes it, ``expr`` shows it."""

    op: str
    form: str
    expr: str
    fn: Callable


#: ``(op name, form) -> Baseline``.  Keep one entry per registry op/form (checked by the
#: benchmark suite and by :func:`missing_baselines`).
NUMPY_BASELINES: dict[tuple[str, str], Baseline] = {}


def _baseline(op: str, form: str, expr: str):
    def register(fn):
        NUMPY_BASELINES[(op, form)] = Baseline(op, form, expr, fn)
        return fn

    return register


def missing_baselines() -> list[tuple[str, str]]:
    """Registry ``(op, form)`` pairs that have no NumPy baseline (should be empty)."""
    return [(op.name, form) for op in _registry.OPS for form in op.forms
            if (op.name, form) not in NUMPY_BASELINES]


def _one(x):
    return x.dtype.type(1)


# sigmoid ----------------------------------------------------------------------------------------

@_baseline("sigmoid", "forward", "1 / (1 + np.exp(-x))")
def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


@_baseline("sigmoid", "derivative", "s = 1 / (1 + np.exp(-x)); s * (1 - s)")
def _sigmoid_derivative(x):
    s = 1 / (1 + np.exp(-x))
    return s * (1 - s)


@_baseline("sigmoid", "and_derivative", "s = 1 / (1 + np.exp(-x)); (s, s * (1 - s))")
def _sigmoid_and_derivative(x):
    s = 1 / (1 + np.exp(-x))
    return s, s * (1 - s)


@_baseline("sigmoid", "backward", "s = 1 / (1 + np.exp(-x)); grad * s * (1 - s)")
def _sigmoid_backward(grad, *, x):
    s = 1 / (1 + np.exp(-x))
    return grad * s * (1 - s)


# tanh -------------------------------------------------------------------------------------------

@_baseline("tanh", "forward", "np.tanh(x)")
def _tanh(x):
    return np.tanh(x)


@_baseline("tanh", "derivative", "1 - np.tanh(x) ** 2")
def _tanh_derivative(x):
    return 1 - np.tanh(x) ** 2


@_baseline("tanh", "and_derivative", "t = np.tanh(x); (t, 1 - t * t)")
def _tanh_and_derivative(x):
    t = np.tanh(x)
    return t, 1 - t * t


@_baseline("tanh", "backward", "grad * (1 - np.tanh(x) ** 2)")
def _tanh_backward(grad, *, x):
    return grad * (1 - np.tanh(x) ** 2)


# relu -------------------------------------------------------------------------------------------

@_baseline("relu", "forward", "np.maximum(x, 0)")
def _relu(x):
    return np.maximum(x, 0)


@_baseline("relu", "derivative", "(x > 0).astype(x.dtype)")
def _relu_derivative(x):
    return (x > 0).astype(x.dtype)


@_baseline("relu", "and_derivative", "(np.maximum(x, 0), (x > 0).astype(x.dtype))")
def _relu_and_derivative(x):
    return np.maximum(x, 0), (x > 0).astype(x.dtype)


@_baseline("relu", "backward", "grad * (x > 0)")
def _relu_backward(grad, *, x):
    return grad * (x > 0)  # the common idiom; np.where(x > 0, grad, 0) is slower here


# leaky_relu -------------------------------------------------------------------------------------

@_baseline("leaky_relu", "forward", "np.where(x > 0, x, x * negative_slope)")
def _leaky_relu(x, *, negative_slope=0.01):
    return np.where(x > 0, x, x * negative_slope)


@_baseline("leaky_relu", "derivative", "np.where(x > 0, one, x.dtype.type(negative_slope))")
def _leaky_relu_derivative(x, *, negative_slope=0.01):
    return np.where(x > 0, _one(x), x.dtype.type(negative_slope))


@_baseline("leaky_relu", "and_derivative",
           "(np.where(x > 0, x, x * negative_slope), "
           "np.where(x > 0, one, x.dtype.type(negative_slope)))")
def _leaky_relu_and_derivative(x, *, negative_slope=0.01):
    positive = x > 0
    return (np.where(positive, x, x * negative_slope),
            np.where(positive, _one(x), x.dtype.type(negative_slope)))


@_baseline("leaky_relu", "backward", "np.where(x > 0, grad, grad * negative_slope)")
def _leaky_relu_backward(grad, *, x, negative_slope=0.01):
    return np.where(x > 0, grad, grad * negative_slope)


# elu --------------------------------------------------------------------------------------------

@_baseline("elu", "forward", "np.where(x > 0, x, alpha * np.expm1(x))")
def _elu(x, *, alpha=1.0):
    return np.where(x > 0, x, alpha * np.expm1(x))


@_baseline("elu", "derivative", "np.where(x > 0, one, alpha * np.exp(x))")
def _elu_derivative(x, *, alpha=1.0):
    return np.where(x > 0, _one(x), alpha * np.exp(x))


@_baseline("elu", "and_derivative",
           "e = np.expm1(x); "
           "(np.where(x > 0, x, alpha * e), np.where(x > 0, one, alpha * (e + 1)))")
def _elu_and_derivative(x, *, alpha=1.0):
    e = np.expm1(x)
    positive = x > 0
    return np.where(positive, x, alpha * e), np.where(positive, _one(x), alpha * (e + 1))


@_baseline("elu", "backward", "np.where(x > 0, grad, grad * (alpha * np.exp(x)))")
def _elu_backward(grad, *, x, alpha=1.0):
    return np.where(x > 0, grad, grad * (alpha * np.exp(x)))


# the PyTorch catalogue: the NumPy expressions a user would write, value and derivative; the
# fused and backward baselines are the two-step versions of these (what NumPy code does) --------

#: op -> (value, derivative): expressions in x, one (1 in x's dtype), e.g. parameters by name
_CATALOGUE_EXPRS = {
    # erf: SciPy's (the bench extra installs it), else math.erf element by element
    "gelu": ("0.5 * x * (1 + erf(x * sqrt1_2))",
             "0.5 * (1 + erf(x * sqrt1_2)) + x * np.exp(-0.5 * x * x) * inv_sqrt_2pi"),
    "silu": ("x / (1 + np.exp(-x))",
             "s = 1 / (1 + np.exp(-x)); s * (1 + x * (1 - s))"),
    "mish": ("x * np.tanh(np.log1p(np.exp(x)))",
             "e = np.exp(x); t = np.tanh(np.log1p(e)); t + x * (1 - t * t) * e / (1 + e)"),
    "softplus": ("np.where(beta * x > threshold, x, np.log1p(np.exp(beta * x)) / beta)",
                 "np.where(beta * x > threshold, one, 1 / (1 + np.exp(-beta * x)))"),
    "softsign": ("x / (1 + np.abs(x))", "1 / (1 + np.abs(x)) ** 2"),
    "selu": ("scale * np.where(x > 0, x, alpha * np.expm1(x))",
             "scale * np.where(x > 0, one, alpha * np.exp(x))"),
    "celu": ("np.where(x > 0, x, alpha * np.expm1(x / alpha))",
             "np.where(x > 0, one, np.exp(x / alpha))"),
    "relu6": ("np.clip(x, 0, 6)", "((x > 0) & (x < 6)).astype(x.dtype)"),
    "hardtanh": ("np.clip(x, min_val, max_val)",
                 "((x > min_val) & (x < max_val)).astype(x.dtype)"),
    "hardsigmoid": ("np.clip(x / 6 + 0.5, 0, 1)", "((x > -3) & (x < 3)) / x.dtype.type(6)"),
    "hardswish": ("x * np.clip(x + 3, 0, 6) / 6",
                  "np.where(x < -3, 0, np.where(x > 3, one, x / 3 + 0.5))"),
    "log_sigmoid": ("-np.logaddexp(0, -x)", "1 / (1 + np.exp(x))"),
    "tanhshrink": ("x - np.tanh(x)", "np.tanh(x) ** 2"),
    "hardshrink": ("np.where(np.abs(x) > lambd, x, 0)", "(np.abs(x) > lambd).astype(x.dtype)"),
    "softshrink": ("np.where(np.abs(x) > lambd, x - np.sign(x) * lambd, 0)",
                   "(np.abs(x) > lambd).astype(x.dtype)"),
    "threshold": ("np.where(x > threshold, x, value)", "(x > threshold).astype(x.dtype)"),
}
_SELU = {"alpha": 1.6732632423543772, "scale": 1.0507009873554805}


def _erf(x):
    try:
        from scipy.special import erf
    except ImportError:  # pragma: no cover - without the bench extra
        import math
        erf = np.vectorize(math.erf, otypes=[x.dtype])
    return erf(x)


def _eval_expr(expr: str, x, params: dict):
    """Evaluate ``stmt; stmt; result`` with x, one and the parameters (in x's dtype)."""
    t = x.dtype.type
    ns = {"np": np, "x": x, "one": t(1), "erf": _erf, "sqrt1_2": t(0.7071067811865476),
          "inv_sqrt_2pi": t(0.3989422804014327),
          **{k: t(v) for k, v in params.items() if not isinstance(v, str)}}
    *stmts, last = [part.strip() for part in expr.split(";")]
    for stmt in stmts:
        exec(stmt, ns)
    r = eval(last, ns)
    return r if r.dtype == x.dtype else r.astype(x.dtype)


def _register_catalogue() -> None:
    for op, (value, derivative) in _CATALOGUE_EXPRS.items():
        fixed = _SELU if op == "selu" else {}

        def fwd(x, _v=value, _f=fixed, **p):
            return _eval_expr(_v, x, {**_f, **p})

        def der(x, _d=derivative, _f=fixed, **p):
            return _eval_expr(_d, x, {**_f, **p})

        def both(x, _v=value, _d=derivative, _f=fixed, **p):
            return _eval_expr(_v, x, {**_f, **p}), _eval_expr(_d, x, {**_f, **p})

        def back(grad, *, x, _d=derivative, _f=fixed, **p):
            return grad * _eval_expr(_d, x, {**_f, **p})

        _baseline(op, "forward", value)(fwd)
        _baseline(op, "derivative", derivative)(der)
        _baseline(op, "and_derivative", f"({value}, {derivative})")(both)
        _baseline(op, "backward", f"grad * ({derivative})")(back)


_register_catalogue()


# gated units: the gate's NumPy expressions above, times the value ---------------------------------

_GATE_EXPRS = {
    "sigmoid": ("1 / (1 + np.exp(-x))", "s = 1 / (1 + np.exp(-x)); s * (1 - s)"),
    "silu": _CATALOGUE_EXPRS["silu"],
    "gelu": _CATALOGUE_EXPRS["gelu"],
}


def _rename(expr: str, name: str) -> str:
    return re.sub(r"\bx\b", name, expr)


def _register_gated() -> None:
    for spec in _registry.gated_ops():
        value, derivative = _GATE_EXPRS[spec.extra["gate"]]
        if spec.extra["split"]:
            def fwd(x, *, axis=-1, _v=value):
                a, b = np.split(x, 2, axis=axis)
                return a * _eval_expr(_v, b, {})

            def back(grad, *, x, axis=-1, _v=value, _d=derivative):
                a, b = np.split(x, 2, axis=axis)
                return np.concatenate([grad * _eval_expr(_v, b, {}),
                                       grad * a * _eval_expr(_d, b, {})], axis=axis)

            split = "a, b = np.split(x, 2, axis=-1); "
            _baseline(spec.name, "forward", f"{split}a * ({_rename(value, 'b')})")(fwd)
            _baseline(spec.name, "backward",
                      f"{split}np.concatenate([grad * ({_rename(value, 'b')}), "
                      f"grad * a * ({_rename(derivative, 'b')})], -1)")(back)
            continue

        def fwd(a, b, _v=value, **p):
            return _eval_expr(_v, a, p) * b

        def back(grad, *, a, b, _v=value, _d=derivative, **p):
            return grad * b * _eval_expr(_d, a, p), grad * _eval_expr(_v, a, p)

        _baseline(spec.name, "forward", f"({_rename(value, 'a')}) * b")(fwd)
        _baseline(spec.name, "backward", f"(grad * b * ({_rename(derivative, 'a')}), "
                                         f"grad * ({_rename(value, 'a')}))")(back)


_register_gated()


# prelu ------------------------------------------------------------------------------------------

def _channel(x, weight):
    """``weight`` shaped to broadcast along x's channel axis 1 (``w[:, None, ...]``)."""
    w = np.asarray(weight)
    if w.size == 1 or x.ndim < 2:
        return w.reshape(())
    return w.reshape((-1,) + (1,) * (x.ndim - 2))


@_baseline("prelu", "forward", "np.where(x > 0, x, x * w[:, None])")
def _prelu(x, weight):
    return np.where(x > 0, x, x * _channel(x, weight))


@_baseline("prelu", "derivative", "np.where(x > 0, one, w[:, None])")
def _prelu_derivative(x, weight):
    return np.where(x > 0, _one(x), _channel(x, weight).astype(x.dtype))


@_baseline("prelu", "and_derivative",
           "(np.where(x > 0, x, x * w[:, None]), np.where(x > 0, one, w[:, None]))")
def _prelu_and_derivative(x, weight):
    w = _channel(x, weight)
    positive = x > 0
    return np.where(positive, x, x * w), np.where(positive, _one(x), w.astype(x.dtype))


@_baseline("prelu", "backward",
           "(np.where(x > 0, grad, grad * w[:, None]), (grad * np.minimum(x, 0)).sum((0, 2)))")
def _prelu_backward(grad, *, x, weight):
    w = _channel(x, weight)
    grad_x = np.where(x > 0, grad, grad * w)
    axes = None if w.ndim == 0 else tuple(i for i in range(x.ndim) if i != 1)
    grad_w = (grad * np.minimum(x, 0)).sum(axis=axes)
    return grad_x, np.reshape(grad_w, np.shape(weight))


# softmax family (rows along the last axis) -------------------------------------------------------

@_baseline("softmax", "forward",
           "e = np.exp(x - x.max(-1, keepdims=True)); e /= e.sum(-1, keepdims=True)")
def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


@_baseline("softmax", "backward", "y * (grad - (grad * y).sum(-1, keepdims=True))")
def _softmax_backward(grad, *, y):
    return y * (grad - (grad * y).sum(axis=-1, keepdims=True))


@_baseline("log_softmax", "forward",
           "z = x - x.max(-1, keepdims=True); z -= np.log(np.exp(z).sum(-1, keepdims=True))")
def _log_softmax(x):
    z = x - x.max(axis=-1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return z


@_baseline("log_softmax", "backward", "grad - np.exp(y) * grad.sum(-1, keepdims=True)")
def _log_softmax_backward(grad, *, y):
    return grad - np.exp(y) * grad.sum(axis=-1, keepdims=True)


@_baseline("softmin", "forward",
           "e = np.exp(x.min(-1, keepdims=True) - x); e /= e.sum(-1, keepdims=True)")
def _softmin(x):
    e = np.exp(x.min(axis=-1, keepdims=True) - x)  # softmax(-x), shifted by max(-x) = -min(x)
    e /= e.sum(axis=-1, keepdims=True)
    return e


@_baseline("softmin", "backward", "-y * (grad - (grad * y).sum(-1, keepdims=True))")
def _softmin_backward(grad, *, y):
    return -y * (grad - (grad * y).sum(axis=-1, keepdims=True))


def _have_scipy() -> bool:
    import importlib.util

    return importlib.util.find_spec("scipy") is not None


if _have_scipy():  # what a NumPy user reaches for; scipy is optional (a test extra)
    @_baseline("logsumexp", "forward", "scipy.special.logsumexp(x, axis=-1)")
    def _logsumexp(x):
        import scipy.special  # lazily: importing fastact._bench stays cheap

        return scipy.special.logsumexp(x, axis=-1)
else:  # pragma: no cover - scipy missing
    @_baseline("logsumexp", "forward",
               "m = x.max(-1, keepdims=True); (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))"
               "[..., 0]")
    def _logsumexp(x):
        m = x.max(axis=-1, keepdims=True)
        return (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))[..., 0]


# ------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------

#: Row length of the row-wise benchmarks: ``(size // ROW_WIDTH, ROW_WIDTH)``.
ROW_WIDTH = 1000
#: prelu benchmarks use NCHW-like ``(size // 1000, PRELU_CHANNELS, 1000 // PRELU_CHANNELS)``.
PRELU_CHANNELS = 10


def bench_shape(spec: _registry.OpSpec, size: int) -> tuple[int, ...]:
    """The array shape the benchmarks use for ``spec`` at ``size`` elements.

    Row-wise ops and glu: rows of ``ROW_WIDTH`` (one shorter row below that); prelu: blocks of
    ``PRELU_CHANNELS`` channels x 100 (a 2-D ``(1, size)`` below 1000 elements); elementwise:
    1-D.  The element count is rounded down to a multiple of the row/block length.
    """
    size = int(size)
    if size < 1:
        raise ValueError(f"benchmark size must be >= 1, got {size}")
    if (spec.kind == "rowwise" or (spec.kind == "loss" and spec.extra["layout"] == "row")
            or (spec.kind == "gated" and spec.extra["split"])):
        width = min(ROW_WIDTH, size)
        return (size // width, width)
    if spec.kind == "channel":
        if size < ROW_WIDTH:
            return (1, size)
        return (size // ROW_WIDTH, PRELU_CHANNELS, ROW_WIDTH // PRELU_CHANNELS)
    return (size,)


def make_input(size: int, dtype, seed: int = 0) -> np.ndarray:
    """``size`` deterministic values ~ N(0, 3^2) of ``dtype`` (1-D): realistic pre-activations,
    half of them negative, none large enough to overflow the NumPy expressions."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype in (np.float32, np.float64):
        x = rng.standard_normal(int(size), dtype=dtype)
    else:
        x = rng.standard_normal(int(size)).astype(dtype)
    x *= 3
    return x


def nbytes(obj) -> int:
    """Total bytes of the arrays in ``obj`` (an array, or a (nested) tuple/list/dict of them)."""
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(nbytes(v) for v in obj.values())
    if isinstance(obj, (tuple, list)):
        return sum(nbytes(v) for v in obj)
    return 0


@dataclass
class Case:
    """One op/form on one input: the fastact call, its NumPy baseline and the bytes it moves."""

    spec: _registry.OpSpec
    form: str
    x: np.ndarray
    fn: Callable
    args: list
    kwargs: dict
    baseline: Baseline | None
    _out_nbytes: int | None = field(default=None, repr=False)

    @property
    def op(self) -> str:
        return self.spec.name

    @property
    def label(self) -> str:
        return self.spec.public_name(self.form)

    @property
    def in_nbytes(self) -> int:
        """Bytes of the input arrays read by one call (x, grad, y, weights)."""
        return nbytes(self.args) + nbytes(self.kwargs)

    @property
    def out_nbytes(self) -> int:
        """Bytes of the arrays one call returns (computed once, by one automatic call)."""
        if self._out_nbytes is None:
            self._out_nbytes = nbytes(self.fn(*self.args, **self.kwargs))
        return self._out_nbytes

    @property
    def bytes_moved(self) -> int:
        """Minimal memory traffic of one call: inputs read once plus outputs written once."""
        return self.in_nbytes + self.out_nbytes

    def fastact(self, backend: str | None = None) -> Callable[[], object]:
        """A no-argument callable running the fastact function (``backend=None``: automatic)."""
        fn, args, kwargs = self.fn, self.args, self.kwargs
        if backend is not None:
            kwargs = dict(kwargs, backend=backend)
        return lambda: fn(*args, **kwargs)

    def numpy_expr(self) -> Callable[[], object]:
        """A no-argument callable evaluating the NumPy baseline expression."""
        if self.baseline is None:
            raise KeyError(f"no NumPy baseline for {self.op}/{self.form}; add one to "
                           "fastact._bench.NUMPY_BASELINES")
        fn, args, kwargs = self.baseline.fn, self.args, self.kwargs
        return lambda: fn(*args, **kwargs)


def make_case(op: str, form: str, size: int, dtype, *, x: np.ndarray | None = None,
              shape: tuple[int, ...] | None = None) -> Case:
    """The benchmark case for ``op``/``form`` at ``size`` elements of ``dtype``.

    ``x``: an optional pre-made 1-D input of at least ``size`` elements (reused across cases).
    ``shape``: the input's shape instead of :func:`bench_shape`'s (e.g. other row lengths).
    """
    from ._tools import example_call

    spec = _registry.get(op)
    if form not in spec.forms:
        raise ValueError(f"{op} has no form {form!r}; forms: {', '.join(spec.forms)}")
    shape = tuple(shape) if shape is not None else bench_shape(spec, size)
    n = math.prod(shape)
    if x is None or x.size < n or x.dtype != np.dtype(dtype):
        x = make_input(n, dtype)
    x = x[:n].reshape(shape)
    fn, args, kwargs = example_call(spec, form, x)
    return Case(spec, form, x, fn, list(args), kwargs, NUMPY_BASELINES.get((op, form)))


# ------------------------------------------------------------------------------------------------
# allocator
# ------------------------------------------------------------------------------------------------

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def steady_allocator() -> bool:
    """Make this process reuse freed memory for large arrays (glibc only; True if applied).

    Every fastact call and every NumPy expression allocates its result.  With glibc's default
    policy, whether such a block is recycled or comes back as fresh pages (one page fault per
    4 KiB, several microseconds each in a VM, slower still when two threads fault at once)
    depends on the heap's history: the same kernel measured 0.06 ms or 8 ms at 1e6 elements
    depending on what ran before.  ``mallopt(M_MMAP_MAX=0)`` and a 1 GiB ``M_TRIM_THRESHOLD``
    keep freed blocks in the heap, so every contender runs in the steady state of a training
    loop (as with a caching allocator) and the timings measure the kernels, not the kernel's
    page-fault handler.  The process keeps its peak memory; use it in benchmark processes only.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30)) and bool(mallopt(_M_MMAP_MAX, 0))


def cpu_count() -> int:
    """CPUs this process may run on."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


#: Share of the machine used by other processes above which timings are flagged as noisy.
NOISY = 0.2


def _cpu_snapshot():
    """(wall s, busy CPU s of the whole machine or None, CPU s of this process)."""
    wall = time.perf_counter()
    own = time.process_time()
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        ticks = [int(v) for v in fields[1:9]]
        # user nice system idle iowait irq softirq steal: busy = all but idle and iowait
        busy = (sum(ticks) - ticks[3] - ticks[4]) / _clock_ticks()
    except (OSError, ValueError, IndexError):
        busy = None
    return wall, busy, own


def _clock_ticks() -> int:
    import os

    try:
        return os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):  # pragma: no cover
        return 100


class OtherLoad:
    """Context manager: the share of the machine's CPU time that *other* processes (and the
    hypervisor, as steal time) used while the block ran -- 0 quiet, 1 every CPU busy elsewhere.

    Multi-threaded kernels wait for a time slice when another process holds a core (about 8 ms
    per call on a loaded 2-core machine), so timings taken above :data:`NOISY` are suspect.
    ``value`` is None where ``/proc/stat`` is unavailable.  Resolution: one clock tick (10 ms).
    """

    value: float | None = None

    def __enter__(self):
        self._start = _cpu_snapshot()
        return self

    def __exit__(self, *exc):
        wall0, busy0, own0 = self._start
        wall1, busy1, own1 = _cpu_snapshot()
        if busy0 is None or busy1 is None or wall1 <= wall0:
            self.value = None
        else:
            import os

            others = (busy1 - busy0) - (own1 - own0)
            self.value = min(1.0, max(0.0, others / ((wall1 - wall0) * (os.cpu_count() or 1))))
        return False


def noise_warning(share: float | None) -> str | None:
    """A warning line when other processes used more than :data:`NOISY` of the machine."""
    if share is not None and share > NOISY:
        return (f"warning: other processes used {100 * share:.0f}% of the CPUs while timing: "
                "multi-threaded kernels wait for time slices, so their ratios are unreliable; "
                "rerun on a quiet machine")
    return None


# ------------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------------

def best_of(fn: Callable[[], object], min_time: float = 0.1, min_repeats: int = 3,
            warmup: bool = True) -> tuple[float, int]:
    """(best seconds per call, number of calls timed), with ``time.perf_counter``.

    One untimed call first (compilation, page faults), then samples until at least
    ``min_repeats`` samples were taken *and* ``min_time`` seconds spent: N adapts to the call's
    duration.  A sample times one call, or a short loop of calls when one call is under 20 us
    (so the timer's own cost stays negligible); the best sample divided by its loop length wins.
    """
    if warmup:
        fn()
    t0 = time.perf_counter()
    fn()
    single = time.perf_counter() - t0
    loop = max(1, int(20e-6 / single)) if single > 0 else 1000
    best = single
    calls = 1
    samples = 1
    start = time.perf_counter()
    perf = time.perf_counter
    while samples < min_repeats or perf() - start < min_time:
        t0 = perf()
        for _ in range(loop):
            fn()
        elapsed = (perf() - t0) / loop
        best = min(best, elapsed)
        calls += loop
        samples += 1
    return best, calls


def copy_bandwidth(nbytes_out: int, dtype, min_time: float = 0.1) -> tuple[float, float]:
    """(seconds, GB/s) of ``np.copyto`` of ``nbytes_out`` bytes (read + write = 2x bytes)."""
    dtype = np.dtype(dtype)
    n = max(1, nbytes_out // dtype.itemsize)
    src = make_input(n, dtype, seed=1)
    dst = np.empty_like(src)
    t, _ = best_of(lambda: np.copyto(dst, src), min_time)
    return t, 2 * n * dtype.itemsize / t / 1e9


# ------------------------------------------------------------------------------------------------
# formatting
# ------------------------------------------------------------------------------------------------

def format_time(seconds: float) -> str:
    """3 significant digits in us / ms / s."""
    if seconds != seconds:  # NaN
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale or unit == "us":
            value = seconds / scale
            digits = 0 if value >= 100 else 1 if value >= 10 else 2
            return f"{value:.{digits}f} {unit}"
    raise AssertionError  # pragma: no cover


def format_size(size: int) -> str:
    """``1000000`` -> ``1e6``; other counts with digit grouping."""
    size = int(size)
    if size > 0:
        exponent = round(math.log10(size))
        if 10 ** exponent == size and exponent >= 3:
            return f"1e{exponent}"
    return f"{size:,}"


def parse_size(text: str) -> int:
    """``"1e5"``, ``"100000"``, ``"100_000"`` -> 100000 (ValueError otherwise)."""
    value = float(str(text).replace("_", ""))
    if not (value >= 1 and value == int(value)):
        raise ValueError(f"not a positive element count: {text!r}")
    return int(value)


def format_table(headers: list[str], rows: list[list[str]], markdown: bool = True,
                 align: str | None = None) -> str:
    """An aligned table: GitHub markdown (``| a | b |``) or plain columns.

    ``align``: one letter per column, ``l`` or ``r`` (default: first column left, others right).
    """
    align = align or "l" + "r" * (len(headers) - 1)
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]

    def line(cells):
        parts = [str(c).ljust(w) if a == "l" else str(c).rjust(w)
                 for c, w, a in zip(cells, widths, align)]
        return "| " + " | ".join(parts) + " |" if markdown else "  ".join(parts).rstrip()

    out = [line(headers)]
    if markdown:
        out.append("|" + "|".join(("-" * (w + 1) + ":") if a == "r" else (":" + "-" * (w + 1))
                                  for w, a in zip(widths, align)) + "|")
    else:
        out.append("  ".join("-" * w for w in widths))
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def geomean(values) -> float:
    values = [v for v in values if v > 0 and math.isfinite(v)]
    if not values:
        return float("nan")
    return math.exp(sum(math.log(v) for v in values) / len(values))


# ------------------------------------------------------------------------------------------------
# `python -m fastact bench`
# ------------------------------------------------------------------------------------------------

#: Default sizes of ``fastact bench`` (element counts).
DEFAULT_SIZES = (100_000, 10_000_000)
QUICK_SIZES = (100_000,)
#: Extra forms timed by ``fastact bench`` besides every op's forward form.
EXTRA_FORMS = (("sigmoid", "backward"), ("relu", "backward"), ("softmax", "backward"))


def main_cases() -> list[tuple[str, str]]:
    """(op, form) pairs of ``fastact bench``: every registry op's forward form, then the
    backward forms of sigmoid, relu and softmax."""
    cases = [(op.name, "forward") for op in _registry.OPS if "forward" in op.forms]
    cases += [c for c in EXTRA_FORMS if c[0] in _registry.OPS_BY_NAME]
    return cases


@dataclass
class BenchResult:
    op: str
    form: str
    label: str
    size: int          # requested element count
    shape: tuple       # the shape used (row/block rounding, see bench_shape)
    dtype: str
    backend: str
    fastact_s: float
    numpy_s: float
    bytes_moved: int
    copy_s: float
    copy_gbs: float

    @property
    def speedup(self) -> float:
        return self.numpy_s / self.fastact_s

    @property
    def gbs(self) -> float:
        return self.bytes_moved / self.fastact_s / 1e9

    @property
    def numpy_gbs(self) -> float:
        return self.bytes_moved / self.numpy_s / 1e9

    @property
    def copy_fraction(self) -> float:
        return self.gbs / self.copy_gbs

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["shape"] = list(self.shape)
        d.update(speedup=self.speedup, gbs=self.gbs, numpy_gbs=self.numpy_gbs,
                 copy_fraction=self.copy_fraction)
        return d


@dataclass
class BenchRun:
    dtype: str
    sizes: tuple
    requested_backend: str | None
    warmed: list
    compile_s: float
    allocator: str = "default"
    other_cpu: float | None = None
    results: list = field(default_factory=list)
    total_s: float = 0.0


def run_bench(sizes=DEFAULT_SIZES, dtype="float32", backend: str | None = None,
              min_time: float = 0.1, cases=None, progress: Callable[[str], None] | None = None,
              steady_malloc: bool = True) -> BenchRun:
    """Time fastact (automatic backend, or ``backend``) against the NumPy expressions.

    Numba kernels are compiled first with :func:`fastact.warmup` (timed separately as
    ``compile_s``); every measurement then uses :func:`best_of` with ``min_time``.
    ``steady_malloc``: apply :func:`steady_allocator` to this process first.
    """
    from . import _dispatch, _tools

    start = time.perf_counter()
    allocator = "steady (glibc mallopt)" if steady_malloc and steady_allocator() else "default"
    dtype = np.dtype(dtype).name
    cases = list(main_cases() if cases is None else cases)
    sizes = tuple(int(s) for s in sizes)
    if backend is not None:
        _dispatch.resolve(backend)  # unknown -> ValueError, unavailable -> BackendUnavailable
    probe = np.zeros(4, dtype)
    chosen = {_dispatch.select_backend(op, probe, backend=backend) for op, _ in cases}
    t0 = time.perf_counter()
    warmed = (_tools.warmup(ops=sorted({op for op, _ in cases}), dtypes=[dtype])
              if "numba" in chosen else [])
    run = BenchRun(dtype, sizes, backend, warmed, time.perf_counter() - t0, allocator)
    monitor = OtherLoad().__enter__()
    copies: dict[int, tuple[float, float]] = {}
    for size in sizes:
        x = make_input(size, dtype)
        for op, form in cases:
            case = make_case(op, form, size, dtype, x=x)
            name = _dispatch.select_backend(case.label, case.x, backend=backend)
            if progress:
                progress(f"{case.label} {format_size(size)} ({name})")
            out_bytes = case.out_nbytes
            if out_bytes not in copies:
                copies[out_bytes] = copy_bandwidth(out_bytes, dtype, min_time)
            t_fast, _ = best_of(case.fastact(backend), min_time)
            t_np, _ = best_of(case.numpy_expr(), min_time)
            copy_s, copy_gbs = copies[out_bytes]
            run.results.append(BenchResult(
                op, form, case.label, size, case.x.shape, dtype, name, t_fast, t_np,
                case.bytes_moved, copy_s, copy_gbs))
            del case
    monitor.__exit__(None, None, None)
    run.other_cpu = monitor.value
    run.total_s = time.perf_counter() - start
    return run


def bench_table(run: BenchRun, markdown: bool = True) -> str:
    """The ``fastact bench`` table: one row per op/form/size."""
    headers = ["op", "size", "backend", "fastact", "numpy", "speed-up", "GB/s", "% copy"]
    rows = []
    for r in run.results:
        # a loss writes one number (or its gradient): a copy of its output is no yardstick
        copy = ("-" if _registry.get(r.op).kind == "loss" and r.form == "forward"
                else f"{100 * r.copy_fraction:.0f}%")
        rows.append([r.label, format_size(r.size), r.backend, format_time(r.fastact_s),
                     format_time(r.numpy_s), f"{r.speedup:.2f}x", f"{r.gbs:.1f}", copy])
    return format_table(headers, rows, markdown, align="lllrrrrr")


def bench_report(run: BenchRun, markdown: bool = True) -> str:
    """Header lines, the table, copy bandwidths and the geometric-mean speed-ups."""
    from . import _dispatch

    info = _dispatch.backend_info()
    backends_used = sorted({r.backend for r in run.results})
    lines = [f"fastact bench: {run.dtype}, backend "
             f"{run.requested_backend or 'automatic'} -> {', '.join(backends_used) or '-'}"]
    for name in backends_used:
        entry = info.get(name, {})
        details = [f"{k} {entry[k]}" for k in ("version", "threads", "threading_layer", "openmp")
                   if k in entry]
        if details:
            lines.append(f"  {name}: " + ", ".join(details))
    if run.requested_backend is None:
        dispatch = info.get("dispatch", {})
        lines.append("dispatch table: " + (dispatch.get("source") or
                                           f"none ({dispatch.get('why')}): priority order"))
    compile_what = ", ".join(run.warmed) if run.warmed else "nothing to compile"
    lines.append(f"compile (fastact.warmup, {compile_what}): {run.compile_s:.1f} s "
                 "(not included in the timings)")
    lines.append("timing: time.perf_counter, best of N calls, N adaptive (>= 3 calls and "
                 f">= the minimum time per measurement); allocator: {run.allocator}")
    lines.append("")
    lines.append(bench_table(run, markdown))
    lines.append("")
    seen = set()
    copy_parts = []
    for r in run.results:
        key = (r.size, r.dtype)
        if key not in seen and r.form == "forward":
            seen.add(key)
            copy_parts.append(f"{format_size(r.size)}: {r.copy_gbs:.1f} GB/s")
    if copy_parts:
        lines.append("np.copyto bandwidth (same bytes as each output, read + write): "
                     + ", ".join(copy_parts))
    parts = []
    for size in run.sizes:
        sel = [r.speedup for r in run.results if r.size == size]
        if sel:
            parts.append(f"{format_size(size)}: {geomean(sel):.2f}x")
    lines.append("geometric-mean speed-up vs NumPy: " + ", ".join(parts)
                 + f" (all: {geomean(r.speedup for r in run.results):.2f}x)")
    lines.append("GB/s = (input + output bytes) / time; % copy = that / np.copyto GB/s "
                 "(np.copyto runs on one thread: multi-threaded kernels can exceed 100%).")
    lines.append("numpy = the NumPy expression a user would write:")
    shown = set()
    for r in run.results:
        baseline = NUMPY_BASELINES.get((r.op, r.form))
        if baseline is not None and r.label not in shown:
            shown.add(r.label)
            lines.append(f"  {r.label}: {baseline.expr}")
    if run.other_cpu is not None:
        lines.append(f"other processes used {100 * run.other_cpu:.0f}% of the {cpu_count()} "
                     "CPUs while timing")
        warning = noise_warning(run.other_cpu)
        if warning:
            lines.append(warning)
    lines.append(f"total wall time: {run.total_s:.1f} s")
    return "\n".join(lines)



# ------------------------------------------------------------------------------------------------
# losses: NumPy baselines (the best multi-pass expression a NumPy user would write)
# ------------------------------------------------------------------------------------------------

def _ce_parts(x, t):
    n = x.shape[0]
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    r = np.arange(n)
    return n, r, z, e, s


@_baseline("cross_entropy", "forward",
           "z = x - x.max(1, keepdims=True); (np.log(np.exp(z).sum(1)) - z[r, t]).mean()")
def _cross_entropy(x, t):
    n, r, z, e, s = _ce_parts(x, t)
    return (np.log(s[:, 0]) - z[r, t]).mean()


@_baseline("cross_entropy", "and_grad",
           "log_softmax + gather + (softmax - onehot) / N: e = exp(z); p = e / s; p[r, t] -= 1")
def _cross_entropy_and_grad(x, t):
    n, r, z, e, s = _ce_parts(x, t)
    loss = (np.log(s[:, 0]) - z[r, t]).mean()
    p = e / s
    p[r, t] -= 1
    p /= x.dtype.type(n)
    return loss, p


@_baseline("cross_entropy", "backward", "g * (softmax(x) - onehot(t)) / N")
def _cross_entropy_backward(g, x, t):
    n, r, z, e, s = _ce_parts(x, t)
    p = e / s
    p[r, t] -= 1
    p *= x.dtype.type(g / n)
    return p


@_baseline("nll_loss", "forward", "-x[r, t].mean()")
def _nll_loss(x, t):
    return -x[np.arange(x.shape[0]), t].mean()


@_baseline("nll_loss", "and_grad", "-x[r, t].mean(); g = zeros_like(x); g[r, t] = -1 / N")
def _nll_loss_and_grad(x, t):
    n = x.shape[0]
    r = np.arange(n)
    g = np.zeros_like(x)
    g[r, t] = -1 / n
    return -x[r, t].mean(), g


@_baseline("nll_loss", "backward", "g = zeros_like(x); g[r, t] = -grad_loss / N")
def _nll_loss_backward(gl, x, t):
    n = x.shape[0]
    g = np.zeros_like(x)
    g[np.arange(n), t] = -gl / n
    return g


#: elementwise loss -> (expression text, loss(x, y), d loss / d x (x, y)) in NumPy
_ELEMENTWISE_LOSS_EXPR = {
    "binary_cross_entropy": (
        "-(y * np.log(x) + (1 - y) * np.log1p(-x)); (x - y) / (x * (1 - x))",
        lambda x, y: -(y * np.log(x) + (1 - y) * np.log1p(-x)),
        lambda x, y: (x - y) / (x * (1 - x))),
    "binary_cross_entropy_with_logits": (
        "(1 - y) * x + np.logaddexp(0, -x); 1 / (1 + np.exp(-x)) - y",
        lambda x, y: (1 - y) * x + np.logaddexp(x.dtype.type(0), -x),
        lambda x, y: 1 / (1 + np.exp(-x)) - y),
    "mse_loss": ("(x - y) ** 2; 2 * (x - y)", lambda x, y: (x - y) ** 2,
                 lambda x, y: 2 * (x - y)),
    "l1_loss": ("np.abs(x - y); np.sign(x - y)", lambda x, y: np.abs(x - y),
                lambda x, y: np.sign(x - y)),
    "huber_loss": (
        "d = x - y; a = np.abs(d); np.where(a < 1, 0.5 * d * d, a - 0.5); np.clip(d, -1, 1)",
        lambda x, y: np.where(np.abs(x - y) < 1, (x - y) ** 2 / 2, np.abs(x - y) - 0.5),
        lambda x, y: np.clip(x - y, -1, 1)),
    "smooth_l1_loss": (
        "d = x - y; a = np.abs(d); np.where(a < 1, 0.5 * d * d, a - 0.5); np.clip(d, -1, 1)",
        lambda x, y: np.where(np.abs(x - y) < 1, (x - y) ** 2 / 2, np.abs(x - y) - 0.5),
        lambda x, y: np.clip(x - y, -1, 1)),
    "kl_div": ("y * (np.log(y) - x); -y", lambda x, y: y * (np.log(y) - x), lambda x, y: -y),
}


def _define_loss_baselines():
    for name, (expr, value, grad) in _ELEMENTWISE_LOSS_EXPR.items():
        def forward(x, y, value=value):
            return value(x, y).mean()

        def and_grad(x, y, value=value, grad=grad):
            return value(x, y).mean(), grad(x, y) / x.dtype.type(x.size)

        def backward(g, x, y, grad=grad):
            return grad(x, y) * x.dtype.type(g / x.size)

        _baseline(name, "forward", f"({expr.split(';')[0]}).mean()")(forward)
        _baseline(name, "and_grad", expr + " (mean and its gradient)")(and_grad)
        _baseline(name, "backward", expr.split(";")[-1].strip() + " * grad_loss / n")(backward)


_define_loss_baselines()
