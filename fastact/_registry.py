"""The one list of fastact's operations.

Every public function, kernel name, test case and benchmark group is derived from the
:data:`OPS` table below.  Adding an op means: one :class:`OpSpec` here, its scalar formulas in
``_math.py`` (elementwise ops), one kernel per backend module (generated for elementwise ops),
and one documented wrapper in ``api.py``.

This module is pure Python (no NumPy import): ``setup.py`` loads it by path to generate the
Cython kernels from the same table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

#: Forms of an elementwise activation, in the order the API defines them.
ELEMENTWISE_FORMS = ("forward", "derivative", "and_derivative", "backward")

#: Forms of a row-wise op (softmax family).
ROWWISE_FORMS = ("forward", "backward")

#: Forms of a gated unit (glu, swiglu, geglu): the value and the one-pass backward.
GATED_FORMS = ("forward", "backward")

#: Forms of a loss: value, value and gradient in one pass, and the backward pass.
LOSS_FORMS = ("forward", "and_grad", "backward")

#: Reductions of the losses (kl_div also takes 'batchmean').
REDUCTIONS = ("none", "mean", "sum")

#: dtypes the kernels are compiled for; float16 is computed in float32 and rounded once.
KERNEL_DTYPES = ("float32", "float64")
PUBLIC_DTYPES = ("float16", "float32", "float64")


@dataclass(frozen=True)
class Param:
    """A scalar parameter of an op.

    ``check`` names the validation rule applied in ``_validate.check_params``:
    ``"finite"`` (any finite real), ``"nonnegative"``, ``"positive"``.  A parameter with
    ``default=None`` is required (``threshold(x, threshold, value)``).  A parameter with
    ``choices`` takes one of those strings (``gelu(approximate='none'|'tanh')``); kernels
    receive its index as a float, so every kernel parameter is a number.
    """

    name: str
    default: float | str | None
    check: str = "finite"
    choices: tuple[str, ...] = ()
    #: value used for a required parameter by tests, benchmarks and examples
    example: float = 0.0

    @property
    def required(self) -> bool:
        return self.default is None


@dataclass(frozen=True)
class Bound:
    """Per-element accuracy bound in ULP of the result dtype (DESIGN.md section 4).

    ``float16`` results are always held to 1 ULP of float16.  ``exact`` means bit-exact
    against the correctly rounded reference.
    """

    float32: float
    float64: float

    @property
    def exact(self) -> bool:
        return self.float32 == 0 and self.float64 == 0

    def ulps(self, dtype_name: str) -> float:
        if dtype_name == "float16":
            return 1.0
        return getattr(self, dtype_name)


EXACT = Bound(0, 0)
DERIVATIVE_BOUND = Bound(8, 8)  # derivatives and backward, DESIGN.md section 4


@dataclass(frozen=True)
class OpSpec:
    """Everything fastact knows about one op.

    Attributes
    ----------
    name : the public name (``fa.<name>``), the kernel prefix and the test/benchmark id.
    kind : ``"elementwise"`` (formulas in ``_math.py``, kernels generated), ``"channel"``
        (prelu: a per-channel weight), ``"rowwise"`` (softmax family, along an axis),
        ``"gated"`` (glu, swiglu, geglu: ``act(gate) * value``, forms ``GATED_FORMS``;
        ``extra["gate"]`` names the elementwise op applied to the gate, whose formulas the
        kernels reuse, ``extra["split"]`` is True for glu, whose one input holds both halves) or
        ``"loss"`` (forms ``LOSS_FORMS``; ``extra["layout"]`` is ``"row"`` for the class-axis
        losses and ``"elementwise"`` for the others, ``extra["kernels"]`` their kernel names).
    params : scalar parameters, in signature order, with PyTorch's defaults.
    forms : which public forms exist.
    y_backward : ``None`` if ``NAME_backward`` cannot take ``y=``; otherwise a predicate on
        the parameter dict telling whether the output determines the derivative.
    bound : accuracy bound of the forward value.
    domain : ``(lo, hi)`` of the interesting input range, for tests and plots.
    bench_sizes : element counts used by the benchmark suite.
    numpy_expr : the NumPy expression a user would write instead (benchmark baseline).
    extra : free-form facts; ``{"reduces": True}`` marks a row-wise op whose output drops the
        axis (logsumexp: kernel output ``(rows,)``, public ``keepdims=``), see :func:`reduces`.
    """

    name: str
    kind: str
    params: tuple[Param, ...] = ()
    forms: tuple[str, ...] = ELEMENTWISE_FORMS
    y_backward: Callable[[Mapping[str, float]], bool] | None = None
    y_backward_rule: str = ""
    bound: Bound = EXACT
    derivative_bound: Bound = DERIVATIVE_BOUND
    domain: tuple[float, float] = (-8.0, 8.0)
    bench_sizes: tuple[int, ...] = (1_000, 100_000, 1_000_000, 10_000_000)
    numpy_expr: str = ""
    summary: str = ""
    extra: Mapping[str, object] = field(default_factory=dict)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @property
    def defaults(self) -> dict[str, float]:
        """Default of every parameter (a required one: its ``example`` value)."""
        return {p.name: (p.example if p.required else p.default) for p in self.params}

    def public_name(self, form: str) -> str:
        """``sigmoid`` + ``derivative`` -> ``sigmoid_derivative``; ``forward`` is the bare name."""
        return self.name if form == "forward" else f"{self.name}_{form}"

    def public_names(self) -> tuple[str, ...]:
        return tuple(self.public_name(f) for f in self.forms)

    def kernel_names(self) -> tuple[str, ...]:
        """Kernel names every backend module defines for this op (DESIGN.md section 6)."""
        if "kernels" in self.extra:  # losses: listed explicitly (variants per target kind)
            return tuple(self.extra["kernels"])
        names = [f"{self.name}_{f}" for f in self.forms]
        if self.y_backward is not None:
            names.append(f"{self.name}_backward_from_y")
        return tuple(names)


def _always(params: Mapping[str, float]) -> bool:
    return True


OPS: tuple[OpSpec, ...] = (
    OpSpec(
        "sigmoid", "elementwise",
        y_backward=_always, y_backward_rule="always",
        bound=Bound(4, 4), domain=(-20.0, 20.0),
        numpy_expr="1 / (1 + np.exp(-x))",
        summary="logistic function 1 / (1 + exp(-x))",
    ),
    OpSpec(
        "tanh", "elementwise",
        y_backward=_always, y_backward_rule="always",
        bound=Bound(2, 2), domain=(-10.0, 10.0),
        numpy_expr="np.tanh(x)",
        summary="hyperbolic tangent",
    ),
    OpSpec(
        "relu", "elementwise",
        y_backward=_always, y_backward_rule="always",
        bound=EXACT, derivative_bound=EXACT,
        numpy_expr="np.maximum(x, 0)",
        summary="rectified linear unit max(x, 0)",
    ),
    OpSpec(
        "leaky_relu", "elementwise",
        params=(Param("negative_slope", 0.01, "finite"),),
        y_backward=lambda p: p["negative_slope"] >= 0,
        y_backward_rule="negative_slope >= 0",
        bound=EXACT, derivative_bound=EXACT,
        numpy_expr="np.where(x > 0, x, x * 0.01)",
        summary="x for x > 0, negative_slope * x otherwise",
    ),
    OpSpec(
        "elu", "elementwise",
        params=(Param("alpha", 1.0, "finite"),),
        y_backward=lambda p: p["alpha"] >= 0,
        y_backward_rule="alpha >= 0",
        bound=Bound(4, 4), domain=(-20.0, 8.0),
        numpy_expr="np.where(x > 0, x, np.expm1(x))",
        summary="x for x > 0, alpha * (exp(x) - 1) otherwise",
    ),
    # --- the PyTorch catalogue ---------------------------------------------------------------
    OpSpec(
        "gelu", "elementwise",
        params=(Param("approximate", "none", choices=("none", "tanh")),),
        bound=Bound(4, 32), domain=(-6.0, 6.0),
        # NumPy has no erf: the expression NumPy users write is the tanh form
        numpy_expr="0.5 * x * (1 + np.tanh(0.7978845608028654 * (x + 0.044715 * x ** 3)))",
        summary="Gaussian error linear unit x Phi(x) (approximate='tanh': x sigmoid(1.5958 "
                "(x + 0.044715 x^3)))",
    ),
    OpSpec(
        "silu", "elementwise", bound=Bound(4, 4), domain=(-20.0, 20.0),
        numpy_expr="x / (1 + np.exp(-x))",
        summary="sigmoid-weighted linear unit x * sigmoid(x) (swish)",
    ),
    OpSpec(
        "mish", "elementwise", bound=Bound(8, 4), domain=(-20.0, 20.0),
        numpy_expr="x * np.tanh(np.log1p(np.exp(x)))",
        summary="self-regularised activation x * tanh(softplus(x))",
    ),
    OpSpec(
        "softplus", "elementwise",
        params=(Param("beta", 1.0, "positive"), Param("threshold", 20.0, "finite")),
        bound=Bound(4, 4), domain=(-20.0, 30.0),
        numpy_expr="np.where(x > 20, x, np.log1p(np.exp(x)))",
        summary="smooth ReLU log(1 + exp(beta x)) / beta, x where beta x > threshold",
    ),
    OpSpec(
        "softsign", "elementwise", bound=Bound(4, 4), domain=(-20.0, 20.0),
        numpy_expr="x / (1 + np.abs(x))",
        summary="x / (1 + |x|)",
    ),
    OpSpec(
        "selu", "elementwise",
        y_backward=_always, y_backward_rule="always",
        bound=Bound(4, 4), domain=(-20.0, 8.0),
        numpy_expr="1.0507 * np.where(x > 0, x, 1.67326 * np.expm1(x))",
        summary="scaled ELU scale * (x if x > 0 else alpha * (exp(x) - 1)), self-normalising",
    ),
    OpSpec(
        "celu", "elementwise",
        params=(Param("alpha", 1.0, "nonzero"),),
        y_backward=lambda p: p["alpha"] > 0, y_backward_rule="alpha > 0",
        bound=Bound(4, 4), domain=(-20.0, 8.0),
        numpy_expr="np.where(x > 0, x, np.expm1(x))",
        summary="continuously differentiable ELU: x if x > 0 else alpha * (exp(x / alpha) - 1)",
    ),
    OpSpec(
        "relu6", "elementwise",
        y_backward=_always, y_backward_rule="always",
        bound=EXACT, derivative_bound=EXACT,
        numpy_expr="np.clip(x, 0, 6)",
        summary="ReLU capped at 6: min(max(x, 0), 6)",
    ),
    OpSpec(
        "hardtanh", "elementwise",
        params=(Param("min_val", -1.0, "finite"), Param("max_val", 1.0, "finite")),
        y_backward=_always, y_backward_rule="always",
        bound=EXACT, derivative_bound=EXACT,
        numpy_expr="np.clip(x, -1, 1)",
        summary="x clipped to [min_val, max_val]",
        extra={"ordered": ("min_val", "max_val")},
    ),
    OpSpec(
        "hardsigmoid", "elementwise", bound=Bound(2, 2), derivative_bound=EXACT,
        numpy_expr="np.clip(x / 6 + 0.5, 0, 1)",
        summary="piecewise-linear sigmoid relu6(x + 3) / 6",
    ),
    OpSpec(
        "hardswish", "elementwise", bound=Bound(4, 4),
        numpy_expr="x * np.clip(x + 3, 0, 6) / 6",
        summary="piecewise swish x * relu6(x + 3) / 6",
    ),
    OpSpec(
        "log_sigmoid", "elementwise", bound=Bound(4, 4), domain=(-30.0, 30.0),
        numpy_expr="-np.log1p(np.exp(-x))",
        summary="log(sigmoid(x)) = -softplus(-x)",
    ),
    OpSpec(
        "tanhshrink", "elementwise", bound=Bound(4, 4),
        numpy_expr="x - np.tanh(x)",
        summary="x - tanh(x)",
    ),
    OpSpec(
        "hardshrink", "elementwise",
        params=(Param("lambd", 0.5, "nonnegative"),),
        bound=EXACT, derivative_bound=EXACT,
        numpy_expr="np.where(np.abs(x) > 0.5, x, 0)",
        summary="x where |x| > lambd, else 0",
    ),
    OpSpec(
        "softshrink", "elementwise",
        params=(Param("lambd", 0.5, "nonnegative"),),
        bound=Bound(1, 1), derivative_bound=EXACT,
        numpy_expr="np.where(np.abs(x) > 0.5, x - np.sign(x) * 0.5, 0)",
        summary="x shrunk towards 0 by lambd (soft thresholding)",
    ),
    OpSpec(
        "threshold", "elementwise",
        params=(Param("threshold", None, "finite", example=0.1),
                Param("value", None, "finite", example=20.0)),
        bound=EXACT, derivative_bound=EXACT,
        numpy_expr="np.where(x > threshold, x, value)",
        summary="x where x > threshold, else value",
    ),
    OpSpec(
        "prelu", "channel",
        bound=EXACT, derivative_bound=EXACT,
        numpy_expr="np.where(x > 0, x, x * weight)",
        summary="leaky ReLU with a learned slope per channel (axis 1)",
    ),
    OpSpec(
        "softmax", "rowwise", forms=ROWWISE_FORMS,
        domain=(-30.0, 30.0),
        bench_sizes=(1_000, 100_000, 1_000_000, 10_000_000),
        numpy_expr="e = np.exp(x - x.max(-1, keepdims=True)); e / e.sum(-1, keepdims=True)",
        summary="exp(x / T) normalised along an axis",
    ),
    OpSpec(
        "log_softmax", "rowwise", forms=ROWWISE_FORMS,
        domain=(-30.0, 30.0),
        numpy_expr="z = x - x.max(-1, keepdims=True); z - np.log(np.exp(z).sum(-1, keepdims=True))",
        summary="log of softmax, computed as x/T - max - log(sum)",
    ),
    OpSpec(
        "softmin", "rowwise", forms=ROWWISE_FORMS,
        domain=(-30.0, 30.0),
        numpy_expr="e = np.exp(x.min(-1, keepdims=True) - x); e / e.sum(-1, keepdims=True)",
        summary="softmax of -x / T (PyTorch's softmin)",
    ),
    OpSpec(
        "logsumexp", "rowwise", forms=("forward",),
        domain=(-30.0, 30.0),
        numpy_expr="scipy.special.logsumexp(x, axis=-1)",
        summary="T * log(sum(exp(x / T))) along an axis (the axis is reduced)",
        extra={"reduces": True},
    ),
)


# ------------------------------------------------------------------------------------------------
# gated units (kind "gated"): act(gate) * value, kernels reuse the gate op's formulas
# ------------------------------------------------------------------------------------------------

def _gated(name: str, gate: str, split: bool, numpy_expr: str, summary: str) -> OpSpec:
    """A gated unit ``gate_op(gate) * value``.

    Its kernels (every backend, DESIGN.md section 6) address both operands as ``rows`` rows of
    ``width`` elements, row ``r`` starting at ``r * stride`` (glu: one buffer holding value and
    gate halves, stride 2 * width; swiglu/geglu: two buffers, stride = width)::

        NAME_forward(gate, value, rows, width, stride, *params, out)          out: rows * width
        NAME_backward(grad, gate, value, rows, width, stride, *params, grad_gate, grad_value)

    The value is the gate op's value times ``value`` (one rounding of the float64 product); the
    accuracy bounds are the gate op's plus that rounding (and one more for the backward's
    ``grad * value * act'(gate)``).
    """
    act = _ACTIVATIONS[gate]
    return OpSpec(
        name, "gated", params=act.params, forms=GATED_FORMS,
        bound=Bound(act.bound.float32 + 1, act.bound.float64 + 1),
        derivative_bound=Bound(act.derivative_bound.float32 + 2,
                               act.derivative_bound.float64 + 2),
        domain=act.domain, numpy_expr=numpy_expr, summary=summary,
        extra={"gate": gate, "split": split},
    )


_ACTIVATIONS = {op.name: op for op in OPS}

GATED_OPS: tuple[OpSpec, ...] = (
    _gated("glu", "sigmoid", True,
           "a, b = np.split(x, 2, axis=-1); a / (1 + np.exp(-b))",
           "gated linear unit: first half of x along axis times sigmoid(second half)"),
    _gated("swiglu", "silu", False, "a / (1 + np.exp(-a)) * b",
           "SiLU-gated unit silu(a) * b (SwiGLU)"),
    _gated("geglu", "gelu", False,
           "0.5 * a * (1 + np.tanh(0.7978845608028654 * (a + 0.044715 * a ** 3))) * b",
           "GELU-gated unit gelu(a) * b (GEGLU)"),
)

OPS = OPS + GATED_OPS


# ------------------------------------------------------------------------------------------------
# losses (kind "loss"): appended at the end of OPS
# ------------------------------------------------------------------------------------------------

def _reduction(extra: tuple[str, ...] = ()) -> Param:
    return Param("reduction", "mean", choices=REDUCTIONS + extra)


def _elementwise_loss(name: str, params: tuple[Param, ...], summary: str, numpy_expr: str,
                      weights: tuple[str, ...] = (), reductions: tuple[str, ...] = (),
                      input_range: tuple[float, float] | None = None):
    """An elementwise loss: kernels ``NAME_forward/_and_grad/_backward`` with the uniform
    signature of ``kernels/numpy_ref.py`` (input, target, weight, pos_weight, param, ...).

    ``input_range``: the closed range every input value must lie in (NaN is outside); the API
    checks it before any kernel runs and raises ValueError naming the first offender.
    """
    extra = {"layout": "elementwise", "weights": weights, "target": "same",
             "kernels": tuple(f"{name}_{f}" for f in LOSS_FORMS)}
    if input_range is not None:
        extra["input_range"] = input_range
    return OpSpec(
        name, "loss", forms=LOSS_FORMS, params=params + (_reduction(reductions),),
        bench_sizes=(100_000, 1_000_000, 10_000_000), numpy_expr=numpy_expr, summary=summary,
        extra=extra)


LOSS_OPS: tuple[OpSpec, ...] = (
    OpSpec(
        "cross_entropy", "loss", forms=LOSS_FORMS,
        params=(Param("ignore_index", -100, "integer"), _reduction(),
                Param("label_smoothing", 0.0, "unit")),
        bench_sizes=(100_000, 1_000_000, 10_000_000),
        numpy_expr="lp = log_softmax(x); -lp[arange(N), t].mean(); (softmax(x) - onehot(t)) / N",
        summary="softmax cross-entropy of logits against class indices or class probabilities",
        extra={"layout": "row", "weights": ("weight",), "target": "class or probability",
               "kernels": ("cross_entropy_forward", "cross_entropy_and_grad",
                           "cross_entropy_backward", "cross_entropy_prob_forward",
                           "cross_entropy_prob_and_grad", "cross_entropy_prob_backward")},
    ),
    OpSpec(
        "nll_loss", "loss", forms=LOSS_FORMS,
        params=(Param("ignore_index", -100, "integer"), _reduction()),
        bench_sizes=(100_000, 1_000_000, 10_000_000),
        numpy_expr="-x[arange(N), t].mean()",
        summary="negative log-likelihood of log-probabilities against class indices",
        extra={"layout": "row", "weights": ("weight",), "target": "class",
               "kernels": ("nll_loss_forward", "nll_loss_and_grad", "nll_loss_backward")},
    ),
    _elementwise_loss("binary_cross_entropy", (), "binary cross-entropy of probabilities",
                      "-(y * np.log(x) + (1 - y) * np.log1p(-x)).mean()", weights=("weight",),
                      input_range=(0.0, 1.0)),
    _elementwise_loss("binary_cross_entropy_with_logits", (),
                      "binary cross-entropy of logits (sigmoid fused in, stable form)",
                      "((1 - y) * x + np.logaddexp(0, -x)).mean()",
                      weights=("weight", "pos_weight")),
    _elementwise_loss("mse_loss", (), "mean squared error", "((x - y) ** 2).mean()"),
    _elementwise_loss("l1_loss", (), "mean absolute error", "np.abs(x - y).mean()"),
    _elementwise_loss("huber_loss", (Param("delta", 1.0, "positive"),), "Huber loss",
                      "d = np.abs(x - y); np.where(d < 1, 0.5 * d * d, d - 0.5).mean()"),
    _elementwise_loss("smooth_l1_loss", (Param("beta", 1.0, "nonnegative"),),
                      "smooth L1 loss (Huber loss divided by beta)",
                      "d = np.abs(x - y); np.where(d < 1, 0.5 * d * d, d - 0.5).mean()"),
    _elementwise_loss("kl_div", (Param("log_target", False, "bool"),),
                      "Kullback-Leibler divergence of log-probabilities from a target",
                      "(y * (np.log(y) - x)).mean()", reductions=("batchmean",)),
)

OPS = OPS + LOSS_OPS

OPS_BY_NAME: dict[str, OpSpec] = {op.name: op for op in OPS}


def get(name: str) -> OpSpec:
    try:
        return OPS_BY_NAME[name]
    except KeyError:
        raise ValueError(
            f"fastact: unknown op {name!r}; known ops: {', '.join(OPS_BY_NAME)}"
        ) from None


def reduces(spec: OpSpec) -> bool:
    """Whether a row-wise op reduces its axis (logsumexp: one value per row, ``keepdims``)."""
    return bool(spec.extra.get("reduces", False))


def loss_ops() -> tuple[OpSpec, ...]:
    return tuple(op for op in OPS if op.kind == "loss")


def gated_ops() -> tuple[OpSpec, ...]:
    return tuple(op for op in OPS if op.kind == "gated")


def elementwise_ops() -> tuple[OpSpec, ...]:
    return tuple(op for op in OPS if op.kind == "elementwise")


def public_names() -> tuple[str, ...]:
    """Every public op function, derived from the table (tests compare with ``fastact.__all__``)."""
    return tuple(n for op in OPS for n in op.public_names())


def kernel_names() -> tuple[str, ...]:
    """Every kernel each backend module must define."""
    return tuple(n for op in OPS for n in op.kernel_names())
