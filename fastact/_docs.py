"""Docstring text of the public functions (assembled in ``api.py``).

Per elementwise op: the formula block, parameter descriptions, notes (derivative, stable form,
conventions at kinks and limits) and one doctest per form.  The doctests run in the test suite
(``python -m pytest --doctest-modules fastact``).
"""

DOCS = {
    "sigmoid": {
        "formula": """\
.. math:: \\sigma(x) = \\frac{1}{1 + e^{-x}}, \\qquad \\sigma'(x) = \\sigma(x)\\,(1 - \\sigma(x))""",
        "notes": """\
Stable form: with ``e = exp(-|x|)``, ``sigma(x) = 1/(1+e)`` for x >= 0 and ``e/(1+e)`` for
x < 0, so ``exp`` never overflows and the left tail keeps full relative accuracy down to the
subnormal range.  The derivative is ``e / (1+e)**2`` (symmetric, no cancellation); from the
output it is ``y * (1 - y)``.  Limits: sigmoid(-inf) = 0, sigmoid(inf) = 1, derivative 0 at
both.  Sigmoid saturates: for |x| > 10 the gradient is below 5e-5, one cause of vanishing
gradients in deep sigmoid networks.""",
        "examples": {
            "forward": """\
>>> fa.sigmoid(np.array([-2.0, 0.0, 1.5]))
array([0.11920292, 0.5       , 0.81757448])""",
            "derivative": """\
>>> fa.sigmoid_derivative(np.array([-2.0, 0.0, 1.5]))
array([0.10499359, 0.25      , 0.14914645])""",
            "and_derivative": """\
>>> y, dydx = fa.sigmoid_and_derivative(np.array([-2.0, 0.5], dtype=np.float32))
>>> y, dydx
(array([0.11920291, 0.62245935], dtype=float32), array([0.10499357, 0.23500372], dtype=float32))""",
            "backward": """\
>>> x = np.array([-2.0, 0.0, 1.5])
>>> fa.sigmoid_backward(np.array([1.0, 1.0, 2.0]), x=x)
array([0.10499359, 0.25      , 0.2982929 ])
>>> fa.sigmoid_backward(np.array([1.0, 1.0, 2.0]), y=fa.sigmoid(x))  # from the output
array([0.10499359, 0.25      , 0.2982929 ])""",
        },
    },
    "tanh": {
        "formula": """\
.. math:: \\tanh(x) = \\frac{e^{x} - e^{-x}}{e^{x} + e^{-x}}, \\qquad
   \\tanh'(x) = 1 - \\tanh^2(x) = \\operatorname{sech}^2(x)""",
        "notes": """\
The value is libm's ``tanh``.  The derivative is computed as ``4e / (1+e)**2`` with
``e = exp(-2|x|)``: ``1 - tanh(x)**2`` would cancel to exactly 0 for |x| > 9.1 (float32) while
the true value is still representable.  From the output it is ``(1 - y) * (1 + y)``.  Limits:
tanh(+-inf) = +-1, derivative 0.  tanh is zero-centred, unlike sigmoid, but saturates the same
way.""",
        "examples": {
            "forward": """\
>>> fa.tanh(np.array([-2.0, 0.0, 1.5]))
array([-0.96402758,  0.        ,  0.90514825])""",
            "derivative": """\
>>> fa.tanh_derivative(np.array([-2.0, 0.0, 1.5]))
array([0.07065082, 1.        , 0.18070664])""",
            "and_derivative": """\
>>> fa.tanh_and_derivative(np.array([-2.0, 0.5], dtype=np.float32))
(array([-0.9640276 ,  0.46211717], dtype=float32), array([0.07065082, 0.7864478 ], dtype=float32))""",
            "backward": """\
>>> fa.tanh_backward(np.array([1.0, 1.0, 2.0]), x=np.array([-2.0, 0.0, 1.5]))
array([0.07065082, 1.        , 0.36141328])""",
        },
    },
    "relu": {
        "formula": """\
.. math:: \\operatorname{relu}(x) = \\max(x, 0), \\qquad
   \\operatorname{relu}'(x) = 1 \\text{ if } x > 0 \\text{ else } 0""",
        "notes": """\
Exact.  relu'(0) = 0 (PyTorch's convention).  NaN propagates through the value and the
derivative (PyTorch returns a 0 gradient at NaN; fastact keeps the NaN visible).  A unit whose
input stays negative has gradient 0 forever (a "dead ReLU"); see ``leaky_relu``, ``prelu`` and
``elu``.  ``y=`` works for the backward pass: relu'(x) = 1 exactly where y > 0.""",
        "examples": {
            "forward": """\
>>> fa.relu(np.array([-2.0, 0.0, 1.5]))
array([0. , 0. , 1.5])""",
            "derivative": """\
>>> fa.relu_derivative(np.array([-2.0, 0.0, 1.5]))
array([0., 0., 1.])""",
            "and_derivative": """\
>>> fa.relu_and_derivative(np.array([-2.0, 0.5], dtype=np.float32))
(array([0. , 0.5], dtype=float32), array([0., 1.], dtype=float32))""",
            "backward": """\
>>> fa.relu_backward(np.array([1.0, 1.0, 2.0]), y=np.array([0.0, 0.0, 1.5]))
array([0., 0., 2.])""",
        },
    },
    "leaky_relu": {
        "formula": """\
.. math:: f(x) = x \\text{ if } x > 0 \\text{ else } \\alpha x, \\qquad
   f'(x) = 1 \\text{ if } x > 0 \\text{ else } \\alpha \\quad (\\alpha = \\text{negative\\_slope})""",
        "params": {
            "negative_slope": "Slope for x <= 0; finite (NaN/inf raise ValueError).",
        },
        "notes": """\
Exact: the product ``x * negative_slope`` is formed in float64 and rounded once.  The
derivative at 0 is ``negative_slope`` (PyTorch).  The small negative slope keeps a gradient
flowing for negative inputs, the usual fix for dead ReLUs.  ``y=`` works in the backward pass
when negative_slope >= 0 (then y has the sign of x).""",
        "examples": {
            "forward": """\
>>> fa.leaky_relu(np.array([-2.0, 0.0, 1.5]), negative_slope=0.1)
array([-0.2,  0. ,  1.5])""",
            "derivative": """\
>>> fa.leaky_relu_derivative(np.array([-2.0, 0.0, 1.5]), negative_slope=0.1)
array([0.1, 0.1, 1. ])""",
            "and_derivative": """\
>>> fa.leaky_relu_and_derivative(np.array([-2.0, 0.5], dtype=np.float32), negative_slope=0.1)
(array([-0.2,  0.5], dtype=float32), array([0.1, 1. ], dtype=float32))""",
            "backward": """\
>>> fa.leaky_relu_backward(np.array([1.0, 1.0, 2.0]), x=np.array([-2.0, 0.0, 1.5]),
...                        negative_slope=0.1)
array([0.1, 0.1, 2. ])""",
        },
    },
    "elu": {
        "formula": """\
.. math:: \\operatorname{elu}(x) = x \\text{ if } x > 0 \\text{ else } \\alpha (e^{x} - 1),
   \\qquad \\operatorname{elu}'(x) = 1 \\text{ if } x > 0 \\text{ else } \\alpha e^{x}""",
        "params": {
            "alpha": "Saturation value -alpha for x -> -inf; finite.",
        },
        "notes": """\
Stable form: ``alpha * expm1(x)``, accurate for small |x| where ``exp(x) - 1`` would cancel.
elu'(0) = alpha (PyTorch's convention: the x <= 0 branch).  elu(-inf) = -alpha.  Negative
outputs push mean activations towards zero while the gradient never vanishes completely.  From
the output: elu'(x) = y + alpha for y <= 0 (``y=`` accepted when alpha >= 0).""",
        "examples": {
            "forward": """\
>>> fa.elu(np.array([-2.0, 0.0, 1.5]))
array([-0.86466472,  0.        ,  1.5       ])""",
            "derivative": """\
>>> fa.elu_derivative(np.array([-2.0, 0.0, 1.5]))
array([0.13533528, 1.        , 1.        ])""",
            "and_derivative": """\
>>> fa.elu_and_derivative(np.array([-2.0, 0.5], dtype=np.float32))
(array([-0.86466473,  0.5       ], dtype=float32), array([0.13533528, 1.        ], dtype=float32))""",
            "backward": """\
>>> fa.elu_backward(np.array([1.0, 1.0, 2.0]), x=np.array([-2.0, 0.0, 1.5]))
array([0.13533528, 1.        , 2.        ])""",
        },
    },
    "gelu": {
        "formula": """\
.. math:: \\operatorname{gelu}(x) = x\\,\\Phi(x) = \\tfrac{x}{2}\\operatorname{erfc}(-x/\\sqrt{2}), \\qquad \\operatorname{gelu}'(x) = \\Phi(x) + x\\,\\varphi(x)

``approximate='tanh'``: :math:`x\\,\\sigma(v)` with :math:`v = 2\\sqrt{2/\\pi}\\,(x + 0.044715\\,x^3)`
(PyTorch's :math:`\\tfrac{x}{2}(1 + \\tanh(v/2))`), derivative :math:`\\sigma(v) + x\\,\\sigma(v)(1 - \\sigma(v))\\,v'`.""",
        "notes": """\
The activation of BERT and GPT-2.  Stable forms: erfc (never ``1 + erf``, which cancels for
x < 0) and ``x sigmoid(v)`` (never ``1 + tanh``).  As x -> -inf both lose accuracy only through
their arguments (an error d in ``-x / sqrt2`` or in v grows to ~x^2 d in the result), so the
kernels carry those arguments' rounding errors (fma, double-double) and correct for them to
first order; below x = -30 the exact form uses the asymptotic series ``-phi(x) (1 - 1/x^2 +
3/x^4 - ...)``, which stays accurate where erfc would be subnormal.  Measured: ~3 ULP (float64)
over [-40, 40].  Limits: gelu(-inf) = 0, gelu(inf) = inf; the derivative tends to 0 and 1.
``approximate`` is ``'none'`` or ``'tanh'``; anything else is a ValueError.""",
        "examples": {
            "forward": """\
>>> fa.gelu(np.array([-2.0, 0.0, 1.5]))
array([-0.04550026,  0.        ,  1.3997892 ])""",
            "derivative": """\
>>> fa.gelu_derivative(np.array([-2.0, 0.0, 1.5]), approximate='tanh')
array([-0.08609926,  0.5       ,  1.12771079])""",
            "and_derivative": """\
>>> fa.gelu_and_derivative(np.array([-2.0, 0.5], dtype=np.float32))
(array([-0.04550026,  0.34573123], dtype=float32), array([-0.0852318,  0.8674951], dtype=float32))""",
            "backward": """\
>>> fa.gelu_backward(np.array([1.0, 1.0, 2.0]), x=np.array([-2.0, 0.0, 1.5]))
array([-0.0852318 ,  0.5       ,  2.25493838])""",
        },
    },
    "silu": {
        "formula": """\
.. math:: \\operatorname{silu}(x) = x\\,\\sigma(x), \\qquad \\operatorname{silu}'(x) = \\sigma(x)\\,(1 + x\\,(1 - \\sigma(x)))""",
        "notes": """\
Also called swish.  Stable form: with ``e = exp(-|x|)``, ``x / (1 + e)`` for x >= 0 and
``x e / (1 + e)`` for x < 0, in float64 and rounded once (float32 data on the Numba backend:
in float32, with ``e`` kept as ``e 2^32`` until a last multiplication by ``2^-32``), so float32
results stay accurate where sigmoid alone would be subnormal.  Limits: silu(-inf) = 0, silu(inf) = inf; the derivative
tends to 0 and 1.  Its minimum is -0.2785 at x = -1.2785: unlike ReLU it is smooth and slightly
negative, so gradients still flow for moderately negative inputs.""",
        "examples": {
            "forward": """\
>>> fa.silu(np.array([-2.0, 0.0, 1.5]))
array([-0.23840584,  0.        ,  1.22636171])""",
            "derivative": """\
>>> fa.silu_derivative(np.array([-2.0, 0.0, 1.5]))
array([-0.09078425,  0.5       ,  1.04129415])""",
            "and_derivative": """\
>>> fa.silu_and_derivative(np.array([-2.0, 0.5], dtype=np.float32))
(array([-0.23840582,  0.31122968], dtype=float32), array([-0.09078424,  0.7399612 ], dtype=float32))""",
            "backward": """\
>>> fa.silu_backward(np.array([1.0, 1.0, 2.0]), x=np.array([-2.0, 0.0, 1.5]))
array([-0.09078425,  0.5       ,  2.08258831])""",
        },
    },
    "mish": {
        "formula": """\
.. math:: \\operatorname{mish}(x) = x \\tanh(\\operatorname{softplus}(x)), \\qquad \\operatorname{mish}'(x) = \\tanh(s) + x\\,\\operatorname{sech}^2(s)\\,\\sigma(x),\\ s = \\operatorname{softplus}(x)""",
        "notes": """\
Stable form: ``tanh(log(1 + e)) = n / (n + 2)`` with ``n = e (e + 2)``, ``e = exp(x)``: no
cancellation in either tail; for x > 25 the value is x and the derivative 1 (exact in float64).
Limits: mish(-inf) = 0, mish(inf) = inf.""",
        "examples": {
            "forward": """\
>>> fa.mish(np.array([-2.0, 0.0, 1.5]))
array([-0.25250148,  0.        ,  1.40337827])""",
            "derivative": """\
>>> fa.mish_derivative(np.array([-2.0, 0.0, 1.5]))
array([-0.10835509,  0.6       ,  1.08848799])""",
            "and_derivative": """\
>>> fa.mish_and_derivative(np.array([-2.0, 0.5], dtype=np.float32))
(array([-0.25250146,  0.3752452 ], dtype=float32), array([-0.10835508,  0.8864244 ], dtype=float32))""",
            "backward": """\
>>> fa.mish_backward(np.array([1.0, 1.0, 2.0]), x=np.array([-2.0, 0.0, 1.5]))
array([-0.10835509,  0.6       ,  2.17697597])""",
        },
    },
    "softplus": {
        "formula": """\
.. math:: \\operatorname{softplus}(x) = \\tfrac{1}{\\beta}\\log(1 + e^{\\beta x}), \\qquad \\operatorname{softplus}'(x) = \\sigma(\\beta x)""",
        "params": {
            "beta": 'Sharpness; > 0.',
            "threshold": 'Above ``beta * x > threshold`` the result is x (and the derivative 1), as in PyTorch.',
        },
        "notes": """\
Stable form: ``(max(bx, 0) + log1p(exp(-|bx|))) / beta`` with ``bx = beta * x``.  PyTorch's
threshold is kept: ``x`` is returned where ``beta * x > threshold`` (the accuracy oracle applies
the same rule).  softplus(-inf) = 0, softplus(inf) = inf.  A smooth ReLU whose derivative is
the sigmoid.""",
        "examples": {
            "forward": """\
>>> fa.softplus(np.array([-2.0, 0.0, 1.5]))
array([0.12692801, 0.69314718, 1.70141328])""",
            "derivative": """\
>>> fa.softplus_derivative(np.array([-2.0, 0.0, 1.5]))
array([0.11920292, 0.5       , 0.81757448])""",
            "and_derivative": """\
>>> fa.softplus_and_derivative(np.array([-2.0, 0.5], dtype=np.float32))
(array([0.12692802, 0.974077  ], dtype=float32), array([0.11920291, 0.62245935], dtype=float32))""",
            "backward": """\
>>> fa.softplus_backward(np.array([1.0, 1.0, 2.0]), x=np.array([-2.0, 0.0, 1.5]))
array([0.11920292, 0.5       , 1.63514895])""",
        },
    },
    "softsign": {
        "formula": """\
.. math:: \\operatorname{softsign}(x) = \\frac{x}{1 + |x|}, \\qquad \\operatorname{softsign}'(x) = \\frac{1}{(1 + |x|)^2}""",
        "notes": """\
Like tanh, but approaches +-1 polynomially, so it saturates more slowly.  softsign(+-inf)
= +-1, derivative 0.""",
        "examples": {
            "forward": """\
>>> fa.softsign(np.array([-2.0, 0.0, 1.5]))
array([-0.66666667,  0.        ,  0.6       ])""",
            "derivative": """\
>>> fa.softsign_derivative(np.array([-2.0, 0.0, 1.5]))
array([0.11111111, 1.        , 0.16      ])""",
            "and_derivative": """\
>>> fa.softsign_and_derivative(np.array([-2.0, 0.5], dtype=np.float32))
(array([-0.6666667 ,  0.33333334], dtype=float32), array([0.11111111, 0.44444445], dtype=float32))""",
            "backward": """\
>>> fa.softsign_backward(np.array([1.0, 1.0, 2.0]), x=np.array([-2.0, 0.0, 1.5]))
array([0.11111111, 1.        , 0.32      ])""",
        },
    },
    "selu": {
        "formula": """\
.. math:: \\operatorname{selu}(x) = \\lambda\\,(x \\text{ if } x > 0 \\text{ else } \\alpha (e^{x} - 1)), \\qquad \\operatorname{selu}'(x) = \\lambda \\text{ if } x > 0 \\text{ else } \\lambda \\alpha e^{x}""",
        "notes": """\
With PyTorch's constants alpha = 1.6732632423543772, lambda = 1.0507009873554805 (the
self-normalising values).  Stable form: ``expm1``.  selu'(0) = lambda * alpha (PyTorch's
convention: the x <= 0 branch).  From the output: y + lambda alpha for y <= 0.""",
        "examples": {
            "forward": """\
>>> fa.selu(np.array([-2.0, 0.0, 1.5]))
array([-1.52016647,  0.        ,  1.57605148])""",
            "derivative": """\
>>> fa.selu_derivative(np.array([-2.0, 0.0, 1.5]))
array([0.23793287, 1.75809934, 1.05070099])""",
            "and_derivative": """\
>>> fa.selu_and_derivative(np.array([-2.0, 0.5], dtype=np.float32))
(array([-1.5201665,  0.5253505], dtype=float32), array([0.23793286, 1.050701  ], dtype=float32))""",
            "backward": """\
>>> fa.selu_backward(np.array([1.0, 1.0, 2.0]), x=np.array([-2.0, 0.0, 1.5]))
array([0.23793287, 1.75809934, 2.10140197])""",
        },
    },
    "celu": {
        "formula": """\
.. math:: \\operatorname{celu}(x) = x \\text{ if } x > 0 \\text{ else } \\alpha (e^{x/\\alpha} - 1), \\qquad \\operatorname{celu}'(x) = 1 \\text{ if } x > 0 \\text{ else } e^{x/\\alpha}""",
        "params": {
            "alpha": 'Scale of the negative branch; must not be 0.',
        },
        "notes": """\
Continuously differentiable at 0 for any alpha (celu'(0) = 1).  Stable form: ``expm1``.
From the output: y / alpha + 1 for y <= 0 (``y=`` accepted when alpha > 0).""",
        "examples": {
            "forward": """\
>>> fa.celu(np.array([-2.0, 0.0, 1.5]))
array([-0.86466472,  0.        ,  1.5       ])""",
            "derivative": """\
>>> fa.celu_derivative(np.array([-2.0, 0.0, 1.5]))
array([0.13533528, 1.        , 1.        ])""",
            "and_derivative": """\
>>> fa.celu_and_derivative(np.array([-2.0, 0.5], dtype=np.float32))
(array([-0.86466473,  0.5       ], dtype=float32), array([0.13533528, 1.        ], dtype=float32))""",
            "backward": """\
>>> fa.celu_backward(np.array([1.0, 1.0, 2.0]), x=np.array([-2.0, 0.0, 1.5]))
array([0.13533528, 1.        , 2.        ])""",
        },
    },
    "relu6": {
        "formula": """\
.. math:: \\operatorname{relu6}(x) = \\min(\\max(x, 0), 6), \\qquad \\operatorname{relu6}'(x) = 1 \\text{ if } 0 < x < 6 \\text{ else } 0""",
        "notes": """\
Exact.  The derivative is 1 strictly inside (0, 6) and 0 at both edges (PyTorch's
hardtanh convention).  NaN propagates.""",
        "examples": {
            "forward": """\
>>> fa.relu6(np.array([-2.0, 3.0, 7.0]))
array([0., 3., 6.])""",
            "derivative": """\
>>> fa.relu6_derivative(np.array([-2.0, 3.0, 7.0]))
array([0., 1., 0.])""",
            "and_derivative": """\
>>> fa.relu6_and_derivative(np.array([-2.0, 3.0], dtype=np.float32))
(array([0., 3.], dtype=float32), array([0., 1.], dtype=float32))""",
            "backward": """\
>>> fa.relu6_backward(np.array([1.0, 1.0, 2.0]), x=np.array([-2.0, 3.0, 7.0]))
array([0., 1., 0.])""",
        },
    },
    "hardtanh": {
        "formula": """\
.. math:: \\operatorname{hardtanh}(x) = \\min(\\max(x, a), b), \\qquad \\operatorname{hardtanh}'(x) = 1 \\text{ if } a < x < b \\text{ else } 0""",
        "params": {
            "min_val": 'Lower clip value a.',
            "max_val": 'Upper clip value b; ``min_val > max_val`` is a ValueError.',
        },
        "notes": """\
Exact.  The derivative is 0 at the edges (PyTorch).  NaN propagates.""",
        "examples": {
            "forward": """\
>>> fa.hardtanh(np.array([-2.0, 0.5, 1.5]))
array([-1. ,  0.5,  1. ])""",
            "derivative": """\
>>> fa.hardtanh_derivative(np.array([-2.0, 0.5, 1.5]))
array([0., 1., 0.])""",
            "and_derivative": """\
>>> fa.hardtanh_and_derivative(np.array([-2.0, 0.5], dtype=np.float32))
(array([-1. ,  0.5], dtype=float32), array([0., 1.], dtype=float32))""",
            "backward": """\
>>> fa.hardtanh_backward(np.array([1.0, 1.0, 2.0]), x=np.array([-2.0, 0.5, 1.5]))
array([0., 1., 0.])""",
        },
    },
    "hardsigmoid": {
        "formula": """\
.. math:: \\operatorname{hardsigmoid}(x) = \\operatorname{relu6}(x + 3) / 6, \\qquad \\operatorname{hardsigmoid}'(x) = 1/6 \\text{ if } -3 < x < 3 \\text{ else } 0""",
        "notes": """\
A piecewise-linear sigmoid (MobileNetV3).  Derivative 0 at x = +-3 (PyTorch).""",
        "examples": {
            "forward": """\
>>> fa.hardsigmoid(np.array([-4.0, 0.0, 1.5]))
array([0.  , 0.5 , 0.75])""",
            "derivative": """\
>>> fa.hardsigmoid_derivative(np.array([-4.0, 0.0, 1.5]))
array([0.        , 0.16666667, 0.16666667])""",
            "and_derivative": """\
>>> fa.hardsigmoid_and_derivative(np.array([-2.0, 0.5], dtype=np.float32))
(array([0.16666667, 0.5833333 ], dtype=float32), array([0.16666667, 0.16666667], dtype=float32))""",
            "backward": """\
>>> fa.hardsigmoid_backward(np.array([1.0, 1.0, 2.0]), x=np.array([-4.0, 0.0, 1.5]))
array([0.        , 0.16666667, 0.33333333])""",
        },
    },
    "hardswish": {
        "formula": """\
.. math:: \\operatorname{hardswish}(x) = x\\,\\operatorname{relu6}(x + 3) / 6, \\qquad \\operatorname{hardswish}'(x) = 0\\ (x < -3),\\ x/3 + 1/2\\ (-3 \\le x \\le 3),\\ 1\\ (x > 3)""",
        "notes": """\
A piecewise swish (MobileNetV3).  The derivative at the edges follows PyTorch:
-1/2 at x = -3, 3/2 at x = 3.""",
        "examples": {
            "forward": """\
>>> fa.hardswish(np.array([-4.0, 0.0, 1.5]))
array([0.   , 0.   , 1.125])""",
            "derivative": """\
>>> fa.hardswish_derivative(np.array([-4.0, 0.0, 1.5]))
array([0. , 0.5, 1. ])""",
            "and_derivative": """\
>>> fa.hardswish_and_derivative(np.array([-2.0, 0.5], dtype=np.float32))
(array([-0.33333334,  0.29166666], dtype=float32), array([-0.16666667,  0.6666667 ], dtype=float32))""",
            "backward": """\
>>> fa.hardswish_backward(np.array([1.0, 1.0, 2.0]), x=np.array([-4.0, 0.0, 1.5]))
array([0. , 0.5, 2. ])""",
        },
    },
    "log_sigmoid": {
        "formula": """\
.. math:: \\log\\sigma(x) = -\\log(1 + e^{-x}), \\qquad (\\log\\sigma)'(x) = \\sigma(-x)""",
        "notes": """\
Stable form: ``min(x, 0) - log1p(exp(-|x|))``: no overflow for x -> -inf (log_sigmoid(-inf)
= -inf) and full relative accuracy for x -> +inf, where the result is -exp(-x).""",
        "examples": {
            "forward": """\
>>> fa.log_sigmoid(np.array([-2.0, 0.0, 1.5]))
array([-2.12692801, -0.69314718, -0.20141328])""",
            "derivative": """\
>>> fa.log_sigmoid_derivative(np.array([-2.0, 0.0, 1.5]))
array([0.88079708, 0.5       , 0.18242552])""",
            "and_derivative": """\
>>> fa.log_sigmoid_and_derivative(np.array([-2.0, 0.5], dtype=np.float32))
(array([-2.126928, -0.474077], dtype=float32), array([0.880797  , 0.37754068], dtype=float32))""",
            "backward": """\
>>> fa.log_sigmoid_backward(np.array([1.0, 1.0, 2.0]), x=np.array([-2.0, 0.0, 1.5]))
array([0.88079708, 0.5       , 0.36485105])""",
        },
    },
    "tanhshrink": {
        "formula": """\
.. math:: \\operatorname{tanhshrink}(x) = x - \\tanh(x), \\qquad \\operatorname{tanhshrink}'(x) = \\tanh^2(x)""",
        "notes": """\
For |x| < 0.625 the Cephes rational approximation of tanh gives ``tanh(x) - x`` directly,
avoiding the cancellation of ``x - tanh(x)`` near 0 (where the result is about x^3 / 3).""",
        "examples": {
            "forward": """\
>>> fa.tanhshrink(np.array([-2.0, 0.0, 1.5]))
array([-1.03597242,  0.        ,  0.59485175])""",
            "derivative": """\
>>> fa.tanhshrink_derivative(np.array([-2.0, 0.0, 1.5]))
array([0.92934918, 0.        , 0.81929336])""",
            "and_derivative": """\
>>> fa.tanhshrink_and_derivative(np.array([-2.0, 0.5], dtype=np.float32))
(array([-1.0359725 ,  0.03788284], dtype=float32), array([0.9293492 , 0.21355228], dtype=float32))""",
            "backward": """\
>>> fa.tanhshrink_backward(np.array([1.0, 1.0, 2.0]), x=np.array([-2.0, 0.0, 1.5]))
array([0.92934918, 0.        , 1.63858672])""",
        },
    },
    "hardshrink": {
        "formula": """\
.. math:: \\operatorname{hardshrink}(x) = x \\text{ if } |x| > \\lambda \\text{ else } 0, \\qquad \\operatorname{hardshrink}'(x) = 1 \\text{ if } |x| > \\lambda \\text{ else } 0""",
        "params": {
            "lambd": 'Threshold; >= 0.',
        },
        "notes": """\
Exact.  Values with |x| <= lambd (edges included) become 0, as in PyTorch.""",
        "examples": {
            "forward": """\
>>> fa.hardshrink(np.array([-1.0, 0.25, 2.0]))
array([-1.,  0.,  2.])""",
            "derivative": """\
>>> fa.hardshrink_derivative(np.array([-1.0, 0.25, 2.0]))
array([1., 0., 1.])""",
            "and_derivative": """\
>>> fa.hardshrink_and_derivative(np.array([-1.0, 0.25], dtype=np.float32))
(array([-1.,  0.], dtype=float32), array([1., 0.], dtype=float32))""",
            "backward": """\
>>> fa.hardshrink_backward(np.array([1.0, 1.0, 2.0]), x=np.array([-1.0, 0.25, 2.0]))
array([1., 0., 2.])""",
        },
    },
    "softshrink": {
        "formula": """\
.. math:: \\operatorname{softshrink}(x) = x - \\lambda\\,\\operatorname{sign}(x) \\text{ if } |x| > \\lambda \\text{ else } 0, \\qquad \\operatorname{softshrink}'(x) = 1 \\text{ if } |x| > \\lambda \\text{ else } 0""",
        "params": {
            "lambd": 'Shrinkage; >= 0.',
        },
        "notes": """\
Soft thresholding (the proximal operator of lambd * |x|).  Within 1 ULP (one rounding).""",
        "examples": {
            "forward": """\
>>> fa.softshrink(np.array([-1.0, 0.25, 2.0]))
array([-0.5,  0. ,  1.5])""",
            "derivative": """\
>>> fa.softshrink_derivative(np.array([-1.0, 0.25, 2.0]))
array([1., 0., 1.])""",
            "and_derivative": """\
>>> fa.softshrink_and_derivative(np.array([-1.0, 0.25], dtype=np.float32))
(array([-0.5,  0. ], dtype=float32), array([1., 0.], dtype=float32))""",
            "backward": """\
>>> fa.softshrink_backward(np.array([1.0, 1.0, 2.0]), x=np.array([-1.0, 0.25, 2.0]))
array([1., 0., 2.])""",
        },
    },
    "threshold": {
        "formula": """\
.. math:: \\operatorname{threshold}(x) = x \\text{ if } x > t \\text{ else } v, \\qquad \\operatorname{threshold}'(x) = 1 \\text{ if } x > t \\text{ else } 0""",
        "params": {
            "threshold": 't: values at or below it are replaced (required, like torch.nn.functional.threshold).',
            "value": 'v: the replacement (required).',
        },
        "notes": """\
Exact.  ``fa.threshold(x, 0.1, 20.0)`` as in ``torch.nn.functional.threshold``; NaN
propagates (PyTorch compares ``x <= threshold``).""",
        "examples": {
            "forward": """\
>>> fa.threshold(np.array([-1.0, 0.1, 2.0]), 0.1, 20.0)
array([20., 20.,  2.])""",
            "derivative": """\
>>> fa.threshold_derivative(np.array([-1.0, 0.1, 2.0]), 0.1, 20.0)
array([0., 0., 1.])""",
            "and_derivative": """\
>>> fa.threshold_and_derivative(np.array([-1.0, 2.0], dtype=np.float32), 0.1, 20.0)
(array([20.,  2.], dtype=float32), array([0., 1.], dtype=float32))""",
            "backward": """\
>>> fa.threshold_backward(np.array([1.0, 1.0, 2.0]), x=np.array([-1.0, 0.1, 2.0]), threshold=0.1, value=20.0)
array([0., 0., 2.])""",
        },
    },
    "prelu": {
        "formula": """\
.. math:: \\operatorname{prelu}(x, w) = x \\text{ if } x > 0 \\text{ else } w_c\\, x,
   \\qquad \\partial/\\partial x = 1 \\text{ or } w_c, \\qquad
   \\partial/\\partial w_c = \\sum_{x \\le 0 \\text{ in channel } c} x""",
        "notes": """\
``weight`` is a float, a 0-d array, or a 1-D array of size 1 or ``x.shape[1]`` (the channel
axis is 1 when x.ndim >= 2, as in ``torch.nn.functional.prelu``; 1-D and 0-d inputs take a
single weight).  The weight is used in float64, so ``prelu(x, a)`` equals
``leaky_relu(x, negative_slope=a)`` exactly.  ``prelu_backward(grad, x=, weight=)`` returns
``(grad_x, grad_weight)``; grad_weight has the shape of ``weight`` and its dtype (a Python float
weight gives x's dtype), and is accumulated in float64.  ``out`` of ``prelu_backward`` is a
2-tuple ``(grad_x, grad_weight)`` of arrays or None.""",
        "examples": {
            "forward": """\
>>> x = np.array([[-2.0, 3.0], [1.0, -4.0]])  # 2 samples, 2 channels
>>> fa.prelu(x, np.array([0.1, 0.25]))
array([[-0.2,  3. ],
       [ 1. , -1. ]])""",
            "derivative": """\
>>> fa.prelu_derivative(np.array([[-2.0, 3.0], [1.0, -4.0]]), np.array([0.1, 0.25]))
array([[0.1 , 1.  ],
       [1.  , 0.25]])""",
            "and_derivative": """\
>>> y, dydx = fa.prelu_and_derivative(np.array([[-2.0, 3.0], [1.0, -4.0]]), 0.2)
>>> y
array([[-0.4,  3. ],
       [ 1. , -0.8]])""",
            "backward": """\
>>> x = np.array([[-2.0, 3.0], [1.0, -4.0]])
>>> grad_x, grad_w = fa.prelu_backward(np.ones((2, 2)), x=x, weight=np.array([0.1, 0.25]))
>>> grad_w
array([-2., -4.])""",
        },
    },
}


_ROW_PARAMS = """\
axis : int, default -1
    The axis along which rows are normalised; a 0-d input is one row of one element.
where : array_like of bool, optional
    Mask broadcastable to x: False entries are left out of the row (output {masked},
    gradient 0).  A fully masked row gives all {masked}, never NaN.
temperature : float, default 1.0
    T > 0; the op is applied to x / T.
out : ndarray, optional
    Where to write the result (same shape and dtype as x; may be x itself).
backend : str, optional
    Force a backend ('numba', 'cython', 'numpy')."""

ROW_DOCS = {
    "softmax": f"""Softmax along an axis.

.. math:: \\operatorname{{softmax}}(x)_i = \\frac{{e^{{(x_i - m)/T}}}}{{\\sum_j e^{{(x_j - m)/T}}}},
   \\quad m = \\max_j x_j

Parameters
----------
x : array_like
    Input, float16/32/64 (float16 computed in float32), any shape and layout.
{_ROW_PARAMS.format(masked="0")}

Returns
-------
y : ndarray
    Same shape and dtype as x; each row sums to 1.

Notes
-----
Subtracting the row maximum makes every exponent <= 0, so nothing overflows.  The sum is
accumulated in float64 with compensated (Neumaier) summation, so long rows stay accurate:
relative error per element <= 4 eps (2 + log2 C) + 2 eps (|x| + |max|)/T.  As in PyTorch, a row
holding +inf or NaN, or a row of all -inf without a mask, is NaN.  The derivative is
``softmax_backward``.  Softmax turns a vector of scores into class probabilities for
multi-class outputs; raising T flattens the distribution.

Examples
--------
>>> import numpy as np, fastact as fa
>>> fa.softmax(np.array([[1.0, 2.0, 3.0], [0.0, 0.0, -np.inf]]))
array([[0.09003057, 0.24472847, 0.66524096],
       [0.5       , 0.5       , 0.        ]])
>>> fa.softmax(np.array([1.0, 2.0, 3.0]), where=np.array([True, True, False]))
array([0.26894142, 0.73105858, 0.        ])
>>> fa.softmax(np.array([1.0, 2.0, 3.0]), temperature=10.0)
array([0.30060961, 0.33222499, 0.3671654 ])
""",
    "log_softmax": f"""Logarithm of softmax along an axis, computed stably.

.. math:: \\operatorname{{log\\_softmax}}(x)_i = (x_i - m)/T - \\log \\sum_j e^{{(x_j - m)/T}}

Parameters
----------
x : array_like
    Input, float16/32/64, any shape and layout.
{_ROW_PARAMS.format(masked="-inf")}

Returns
-------
y : ndarray
    Same shape and dtype as x.

Notes
-----
Computed as ``x/T - max - log(sum)`` (never ``log(softmax(x))``, which underflows to -inf for
unlikely classes).  Absolute error <= 8 eps (1 + |y|)(1 + log2 C) plus the conditioning term of
``softmax``.  The gradient is ``log_softmax_backward``.

Examples
--------
>>> import numpy as np, fastact as fa
>>> fa.log_softmax(np.array([[1.0, 2.0, 3.0], [0.0, 0.0, -np.inf]]))
array([[-2.40760596, -1.40760596, -0.40760596],
       [-0.69314718, -0.69314718,        -inf]])
""",
    "softmax_backward": f"""Backward pass of softmax: the gradient with respect to x.

.. math:: \\frac{{\\partial L}}{{\\partial x_i}} = \\frac{{y_i}}{{T}}
   \\Big(g_i - \\sum_j g_j y_j\\Big), \\qquad y = \\operatorname{{softmax}}(x / T)

Parameters
----------
grad : array_like
    Upstream gradient dL/dy, same shape as y.
y : array_like
    The softmax output (keyword-only).
{_ROW_PARAMS.format(masked="0")}

Returns
-------
grad_x : ndarray
    Same shape as y; masked entries are 0.

Notes
-----
One pass per row: the dot product ``sum(g * y)`` is accumulated in float64.

Examples
--------
>>> import numpy as np, fastact as fa
>>> y = fa.softmax(np.array([1.0, 2.0, 3.0]))
>>> fa.softmax_backward(np.array([1.0, 0.0, 0.0]), y=y)
array([ 0.08192507, -0.02203304, -0.05989202])
""",
    "log_softmax_backward": f"""Backward pass of log_softmax: the gradient with respect to x.

.. math:: \\frac{{\\partial L}}{{\\partial x_i}} = \\frac{{1}}{{T}}
   \\Big(g_i - e^{{y_i}} \\sum_j g_j\\Big), \\qquad y = \\operatorname{{log\\_softmax}}(x / T)

Parameters
----------
grad : array_like
    Upstream gradient dL/dy, same shape as y.
y : array_like
    The log_softmax output (keyword-only).
{_ROW_PARAMS.format(masked="-inf")}

Returns
-------
grad_x : ndarray
    Same shape as y; masked entries are 0.

Examples
--------
>>> import numpy as np, fastact as fa
>>> y = fa.log_softmax(np.array([1.0, 2.0, 3.0]))
>>> fa.log_softmax_backward(np.array([1.0, 0.0, 0.0]), y=y)
array([ 0.90996943, -0.24472847, -0.66524096])
""",
    "softmin": f"""Softmin along an axis: the softmax of ``-x / T`` (PyTorch's ``softmin``).

.. math:: \\operatorname{{softmin}}(x)_i = \\frac{{e^{{-(x_i - m)/T}}}}{{\\sum_j e^{{-(x_j - m)/T}}}},
   \\quad m = \\min_j x_j

Parameters
----------
x : array_like
    Input, float16/32/64 (float16 computed in float32), any shape and layout.
{_ROW_PARAMS.format(masked="0")}

Returns
-------
y : ndarray
    Same shape and dtype as x; each row sums to 1, the smallest entry gets the largest weight.

Notes
-----
Computed by the softmax kernel on negated inputs (negation is exact), so it has softmax's
stable form (the exponents ``-(x - min)/T`` are <= 0), its float64 compensated sum and its
accuracy: relative error per element <= 4 eps (2 + log2 C) + 2 eps (|x| + |min|)/T.  As in
PyTorch, a row holding -inf or NaN, or a row of all +inf without a mask, is NaN; masked entries
are 0 and a fully masked row is all 0.  The derivative is ``softmin_backward``.

Examples
--------
>>> import numpy as np, fastact as fa
>>> fa.softmin(np.array([[1.0, 2.0, 3.0], [0.0, 0.0, np.inf]]))
array([[0.66524096, 0.24472847, 0.09003057],
       [0.5       , 0.5       , 0.        ]])
>>> fa.softmin(np.array([1.0, 2.0, 3.0]), where=np.array([False, True, True]))
array([0.        , 0.73105858, 0.26894142])
>>> fa.softmin(np.array([1.0, 2.0, 3.0]), temperature=10.0)
array([0.3671654 , 0.33222499, 0.30060961])
""",
    "softmin_backward": f"""Backward pass of softmin: the gradient with respect to x.

.. math:: \\frac{{\\partial L}}{{\\partial x_i}} = -\\frac{{y_i}}{{T}}
   \\Big(g_i - \\sum_j g_j y_j\\Big), \\qquad y = \\operatorname{{softmin}}(x / T)

Parameters
----------
grad : array_like
    Upstream gradient dL/dy, same shape as y.
y : array_like
    The softmin output (keyword-only).
{_ROW_PARAMS.format(masked="0")}

Returns
-------
grad_x : ndarray
    Same shape as y; masked entries are 0.

Notes
-----
The softmax backward with the sign of T flipped (softmin(x) = softmax(-x)); the dot product
``sum(g * y)`` is accumulated in float64.  Same accuracy bound as ``softmax_backward``.

Examples
--------
>>> import numpy as np, fastact as fa
>>> y = fa.softmin(np.array([1.0, 2.0, 3.0]))
>>> fa.softmin_backward(np.array([1.0, 0.0, 0.0]), y=y)
array([-0.22269543,  0.1628034 ,  0.05989202])
""",
    "logsumexp": f"""Log of the sum of exponentials along an axis, computed stably; the axis is reduced.

.. math:: \\operatorname{{logsumexp}}(x) = T \\log \\sum_j e^{{x_j/T}}
   = m + T \\log \\sum_j e^{{(x_j - m)/T}}, \\quad m = \\max_j x_j

Parameters
----------
x : array_like
    Input, float16/32/64 (float16 computed in float32), any shape and layout.
axis : int, default -1
    The axis that is summed over (and removed); a 0-d input is one row of one element.
where : array_like of bool, optional
    Mask broadcastable to x: False entries are left out of the sum.  A fully masked row
    gives -inf (the log of an empty sum), never NaN.
temperature : float, default 1.0
    T > 0.  ``T * log(sum(exp(x / T)))`` tends to the row max as T -> 0.
keepdims : bool, default False
    Keep the reduced axis with size 1 (the result then broadcasts against x).
out : ndarray, optional
    Where to write the result: the reduced shape (``keepdims`` included) and x's dtype; may
    be any view, including one into x.
backend : str, optional
    Force a backend ('numba', 'cython', 'numpy').

Returns
-------
lse : ndarray
    x's shape without ``axis`` (size 1 there with ``keepdims``), x's dtype; a 0-d array for
    1-D (and 0-d) input.  A 0-d input gives x itself.

Notes
-----
Computed as ``max + T * log(sum(exp((x - max) / T)))``: every exponent is <= 0, so nothing
overflows, and the sum (between 1 and C) is accumulated in float64 with compensated
(Neumaier) summation.  Absolute error <= 8 eps (T + |r|)(1 + log2 C) + 2 eps (|x| + |max|)
(max over the row's kept entries), the bound of ``log_softmax`` scaled by T.

Special values follow ``torch.logsumexp`` and ``scipy.special.logsumexp``: a row of only -inf
gives -inf (not NaN, unlike softmax), a +inf entry gives +inf, NaN propagates; an empty axis
(C == 0) gives -inf; ``where`` leaves entries out of the sum (a fully masked row is -inf).

There is no ``logsumexp_backward``: the gradient of logsumexp is the softmax,
``d logsumexp(x) / dx = softmax(x)`` (same ``axis``, ``where`` and ``temperature``), so
``grad_x = grad[..., None] * fa.softmax(x)`` for ``axis=-1``.

Examples
--------
>>> import numpy as np, fastact as fa
>>> x = np.array([[1.0, 2.0, 3.0], [-np.inf, -np.inf, -np.inf]])
>>> fa.logsumexp(x)
array([3.40760596,       -inf])
>>> fa.logsumexp(x, keepdims=True).shape
(2, 1)
>>> fa.logsumexp(np.array([1.0, 2.0, 3.0]), where=np.array([True, True, False]))
array(2.31326169)
>>> fa.logsumexp(np.array([1.0, 2.0, 3.0]), temperature=0.1)
array(3.00000454)
>>> fa.logsumexp(np.array([1000.0, 1000.0], dtype=np.float32))
array(1000.6932, dtype=float32)
""",
}


# ------------------------------------------------------------------------------------------------
# losses
# ------------------------------------------------------------------------------------------------

# Doctest outputs below were generated by running them (automatic backend).
LOSS_EXAMPLES = {'cross_entropy': {'forward': ">>> x = np.array([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])\n>>> t = np.array([0, 2])\n>>> fa.cross_entropy(x, t)\nnp.float64(0.20557865810672135)\n>>> fa.cross_entropy(x, t, reduction='none', label_smoothing=0.1)\narray([0.3913113 , 0.33651269])", 'and_grad': '>>> x = np.array([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])\n>>> t = np.array([0, 2])\n>>> fa.cross_entropy_and_grad(x, t)\n(np.float64(0.20557865810672135), array([[-0.10720148,  0.0876452 ,  0.01955629],\n       [ 0.02100503,  0.0570976 , -0.07810263]]))', 'backward': '>>> x = np.array([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])\n>>> t = np.array([0, 2])\n>>> fa.cross_entropy_backward(2.0, x, t)\narray([[-0.21440297,  0.17529039,  0.03911257],\n       [ 0.04201007,  0.1141952 , -0.15620527]])'}, 'nll_loss': {'forward': '>>> x = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]))\n>>> t = np.array([0, 2])\n>>> fa.nll_loss(x, t)\nnp.float64(0.4337502838523616)', 'and_grad': ">>> x = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]))\n>>> t = np.array([0, 2])\n>>> fa.nll_loss_and_grad(x, t, reduction='sum')\n(np.float64(0.8675005677047232), array([[-1.,  0.,  0.],\n       [ 0.,  0., -1.]]))", 'backward': '>>> x = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]))\n>>> t = np.array([0, 2])\n>>> fa.nll_loss_backward(1.0, x, t)\narray([[-0.5,  0. ,  0. ],\n       [ 0. ,  0. , -0.5]])'}, 'binary_cross_entropy': {'forward': '>>> p = np.array([0.9, 0.2, 0.6])\n>>> y = np.array([1.0, 0.0, 1.0])\n>>> fa.binary_cross_entropy(p, y)\nnp.float64(0.2797765635793423)', 'and_grad': '>>> p = np.array([0.9, 0.2, 0.6])\n>>> y = np.array([1.0, 0.0, 1.0])\n>>> fa.binary_cross_entropy_and_grad(p, y)\n(np.float64(0.2797765635793423), array([-0.37037037,  0.41666667, -0.55555556]))', 'backward': ">>> p = np.array([0.9, 0.2, 0.6])\n>>> y = np.array([1.0, 0.0, 1.0])\n>>> fa.binary_cross_entropy_backward(1.0, p, y, reduction='sum')\narray([-1.11111111,  1.25      , -1.66666667])"}, 'binary_cross_entropy_with_logits': {'forward': ">>> z = np.array([2.0, -1.0, np.inf])\n>>> y = np.array([1.0, 0.0, 1.0])\n>>> fa.binary_cross_entropy_with_logits(z, y, reduction='none')\narray([0.12692801, 0.31326169, 0.        ])", 'and_grad': '>>> z = np.array([2.0, -1.0, np.inf])\n>>> y = np.array([1.0, 0.0, 1.0])\n>>> fa.binary_cross_entropy_with_logits_and_grad(z, y, pos_weight=np.array([2.0]))\n(np.float64(0.18903923653472263), array([-0.07946861,  0.08964714,  0.        ]))', 'backward': '>>> z = np.array([2.0, -1.0, np.inf])\n>>> y = np.array([1.0, 0.0, 1.0])\n>>> fa.binary_cross_entropy_with_logits_backward(1.0, z, y)\narray([-0.03973431,  0.08964714,  0.        ])'}, 'mse_loss': {'forward': '>>> x = np.array([1.0, 2.0, 4.0])\n>>> y = np.array([1.5, 2.0, 3.0])\n>>> fa.mse_loss(x, y)\nnp.float64(0.4166666666666667)', 'and_grad': '>>> x = np.array([1.0, 2.0, 4.0])\n>>> y = np.array([1.5, 2.0, 3.0])\n>>> fa.mse_loss_and_grad(x, y)\n(np.float64(0.4166666666666667), array([-0.33333333,  0.        ,  0.66666667]))', 'backward': ">>> x = np.array([1.0, 2.0, 4.0])\n>>> y = np.array([1.5, 2.0, 3.0])\n>>> fa.mse_loss_backward(np.array([1.0, 2.0, 3.0]), x, y, reduction='none')\narray([-1.,  0.,  6.])"}, 'l1_loss': {'forward': '>>> x = np.array([1.0, 2.0, 4.0])\n>>> y = np.array([1.5, 2.0, 3.0])\n>>> fa.l1_loss(x, y)\nnp.float64(0.5)', 'and_grad': ">>> x = np.array([1.0, 2.0, 4.0])\n>>> y = np.array([1.5, 2.0, 3.0])\n>>> fa.l1_loss_and_grad(x, y, reduction='sum')\n(np.float64(1.5), array([-1.,  0.,  1.]))", 'backward': '>>> x = np.array([1.0, 2.0, 4.0])\n>>> y = np.array([1.5, 2.0, 3.0])\n>>> fa.l1_loss_backward(1.0, x, y)\narray([-0.33333333,  0.        ,  0.33333333])'}, 'huber_loss': {'forward': ">>> x = np.array([0.0, 0.5, 3.0])\n>>> y = np.zeros(3)\n>>> fa.huber_loss(x, y, reduction='none')\narray([0.   , 0.125, 2.5  ])", 'and_grad': '>>> x = np.array([0.0, 0.5, 3.0])\n>>> y = np.zeros(3)\n>>> fa.huber_loss_and_grad(x, y, delta=2.0)\n(np.float64(1.375), array([0.        , 0.16666667, 0.66666667]))', 'backward': ">>> x = np.array([0.0, 0.5, 3.0])\n>>> y = np.zeros(3)\n>>> fa.huber_loss_backward(1.0, x, y, reduction='sum')\narray([0. , 0.5, 1. ])"}, 'smooth_l1_loss': {'forward': ">>> x = np.array([0.0, 0.5, 3.0])\n>>> y = np.zeros(3)\n>>> fa.smooth_l1_loss(x, y, reduction='none')\narray([0.   , 0.125, 2.5  ])", 'and_grad': '>>> x = np.array([0.0, 0.5, 3.0])\n>>> y = np.zeros(3)\n>>> fa.smooth_l1_loss_and_grad(x, y, beta=2.0)\n(np.float64(0.6875), array([0.        , 0.08333333, 0.33333333]))', 'backward': ">>> x = np.array([0.0, 0.5, 3.0])\n>>> y = np.zeros(3)\n>>> fa.smooth_l1_loss_backward(1.0, x, y, reduction='sum')\narray([0. , 0.5, 1. ])"}, 'kl_div': {'forward': ">>> lq = np.log(np.array([[0.5, 0.5], [0.9, 0.1]]))\n>>> p = np.array([[0.25, 0.75], [1.0, 0.0]])\n>>> fa.kl_div(lq, p, reduction='batchmean')\nnp.float64(0.11808627579948162)", 'and_grad': ">>> lq = np.log(np.array([[0.5, 0.5], [0.9, 0.1]]))\n>>> p = np.array([[0.25, 0.75], [1.0, 0.0]])\n>>> fa.kl_div_and_grad(lq, p, reduction='sum')\n(np.float64(0.23617255159896325), array([[-0.25, -0.75],\n       [-1.  , -0.  ]]))", 'backward': ">>> lq = np.log(np.array([[0.5, 0.5], [0.9, 0.1]]))\n>>> p = np.array([[0.25, 0.75], [1.0, 0.0]])\n>>> fa.kl_div_backward(1.0, lq, np.log(p + 0.5), log_target=True, reduction='sum')\narray([[-0.75, -1.25],\n       [-1.5 , -0.5 ]])"}}


_LOSS_INFO = {
    "cross_entropy": dict(
        summary="Softmax cross-entropy of logits against class indices or probabilities.",
        formula="""\
Class indices t (weight w, smoothing eps, C classes, log p = log_softmax(x) along the class axis)::

    loss_n = (1 - eps) * w[t_n] * (-log p[n, t_n]) + eps / C * sum_c w[c] * (-log p[n, c])

ignored targets (t_n == ignore_index) contribute 0; 'mean' divides the sum by
sum_n w[t_n] over the non-ignored targets (PyTorch), so all-ignored 'mean' is NaN.
Probability targets q (same shape as x)::

    loss_n = -sum_c w[c] * q'[n, c] * log p[n, c],   q' = (1 - eps) q + eps / C

and 'mean' divides by the number of rows N.""",
        gradient="""\
d loss_n / d x[n, j] = a_n p[n, j] - (1 - eps) w[t_n] [j == t_n] - eps / C * w[j] with
a_n = (1 - eps) w[t_n] + eps / C * sum_c w[c]; for probability targets
Q_n p[n, j] - w[j] q'[n, j] with Q_n = sum_c w[c] q'[n, c].""",
        stable="""\
log p = (x - max) - log(sum exp(x - max)); the loss is accumulated as sums of the
non-negative terms (max - x) and log(sum), so a large or nearly dominant logit loses no
accuracy.  One pass per row: an online max and sum over blocks (the sum rescaled when the max
grows), sums in float64; the gradient pass rescales the stored exps, so ``out=input`` leaves
the gradient in the logits buffer with no second N x C array.""",
        params="""\
input : array_like
    Logits: (N, C), (N, C, d1, ...) with the class axis 1, or an unbatched (C,) (class axis 0).
target : array_like
    Class indices of any integer dtype, shaped like ``input`` without the class axis; or
    class probabilities (float, the shape of ``input``).
weight : array_like, optional
    One weight per class (C,).
ignore_index : int, default -100
    Class-index targets equal to it contribute nothing (loss and gradient 0).
reduction : {'none', 'mean', 'sum'}, default 'mean'
label_smoothing : float in [0, 1], default 0.0
axis : int, optional
    The class axis (default: 1 for ndim >= 2, 0 for 1-D input).""",
        limits="""\
Limits where PyTorch returns NaN: a row with exactly one +inf logit has probability 1 there
(loss 0 if it is the target, else +inf; gradient p - onehot); a class-weight or probability
of exactly 0 times an infinite log-probability contributes 0.  Several +inf logits, a row of
-inf, or a NaN give NaN, as in PyTorch.""",
    ),
    "nll_loss": dict(
        summary="Negative log-likelihood of log-probabilities against class indices.",
        formula="""\
loss_n = -w[t_n] * x[n, t_n]; ignored targets contribute 0; 'mean' divides by
sum_n w[t_n] over the non-ignored targets (all ignored: NaN).""",
        gradient="d loss_n / d x[n, j] = -w[t_n] [j == t_n] (0 for ignored targets).",
        stable="No arithmetic beyond one product per row; the reduction sums in float64.",
        params="""\
input : array_like
    Log-probabilities (N, C), (N, C, d1, ...) with the class axis 1, or unbatched (C,).
target : array_like
    Class indices of any integer dtype, shaped like ``input`` without the class axis.
weight : array_like, optional
    One weight per class (C,).
ignore_index : int, default -100
reduction : {'none', 'mean', 'sum'}, default 'mean'
axis : int, optional
    The class axis (the same rule as :func:`cross_entropy`).""",
        limits="A zero class weight times an infinite log-probability contributes 0.",
    ),
    "binary_cross_entropy": dict(
        summary="Binary cross-entropy of probabilities.",
        formula="""\
loss_i = -w_i * (y_i * log(x_i) + (1 - y_i) * log(1 - x_i)), each log clamped at -100 (PyTorch).""",
        gradient="w_i * (x_i - y_i) / max(x_i (1 - x_i), 1e-12) (PyTorch's clamp, float32 1e-12).",
        stable="log(1 - x) as log1p(-x).",
        params="""\
input : array_like
    Probabilities in [0, 1]: checked in a pre-pass before anything runs (a value outside
    [0, 1] or NaN raises ValueError naming it and its position).
target : array_like
    Same shape as ``input`` (no broadcasting).
weight : array_like, optional
    Element weights, broadcast to the input's shape (PyTorch).
reduction : {'none', 'mean', 'sum'}, default 'mean'""",
        limits="",
    ),
    "binary_cross_entropy_with_logits": dict(
        summary="Binary cross-entropy of logits (the sigmoid fused in).",
        formula="""\
loss_i = w_i * ((1 - y_i) x_i + l_i * softplus(-x_i)),  l_i = 1 + (pos_weight_i - 1) y_i.""",
        gradient="w_i * (l_i * sigmoid(x_i) - pos_weight_i * y_i).",
        stable="""\
softplus via log1p(exp(-|x|)): for x >= 0 (1 - y) x + l log1p(exp(-x)), for x < 0
-pos_weight y x + l log1p(exp(x)); exp never overflows.""",
        params="""\
input : array_like
    Logits.
target : array_like
    Same shape as ``input`` (no broadcasting).
weight, pos_weight : array_like, optional
    Element weights and positive-class weights, broadcast to the input's shape (PyTorch:
    ``pos_weight`` is typically one value per class, the last axis).
reduction : {'none', 'mean', 'sum'}, default 'mean'""",
        limits="""\
Limits where PyTorch returns NaN: x = +inf with y = 1 and x = -inf with y = 0 give loss 0
(a zero factor times an infinite logit contributes 0).""",
    ),
    "mse_loss": dict(
        summary="Mean squared error.",
        formula="loss_i = (x_i - y_i)^2.", gradient="2 (x_i - y_i).", stable="Direct.",
        params="""\
input, target : array_like
    Same shape (no broadcasting).
reduction : {'none', 'mean', 'sum'}, default 'mean'""", limits=""),
    "l1_loss": dict(
        summary="Mean absolute error.",
        formula="loss_i = |x_i - y_i|.", gradient="sign(x_i - y_i), 0 at 0 (PyTorch).",
        stable="Direct.",
        params="""\
input, target : array_like
    Same shape (no broadcasting).
reduction : {'none', 'mean', 'sum'}, default 'mean'""", limits=""),
    "huber_loss": dict(
        summary="Huber loss.",
        formula="loss_i = d^2 / 2 if |d| < delta else delta (|d| - delta / 2), d = x_i - y_i.",
        gradient="clip(d, -delta, delta).", stable="Direct.",
        params="""\
input, target : array_like
    Same shape (no broadcasting).
delta : float > 0, default 1.0
reduction : {'none', 'mean', 'sum'}, default 'mean'""", limits=""),
    "smooth_l1_loss": dict(
        summary="Smooth L1 loss (the Huber loss divided by beta).",
        formula="loss_i = d^2 / (2 beta) if |d| < beta else |d| - beta / 2; beta = 0 is the L1 loss.",
        gradient="clip(d / beta, -1, 1) (sign(d) for beta = 0).", stable="Direct.",
        params="""\
input, target : array_like
    Same shape (no broadcasting).
beta : float >= 0, default 1.0
reduction : {'none', 'mean', 'sum'}, default 'mean'""", limits=""),
    "kl_div": dict(
        summary="Kullback-Leibler divergence of log-probabilities from a target distribution.",
        formula="""\
loss_i = y_i (log y_i - x_i) (0 where y_i == 0), or with log_target=True
exp(y_i) (y_i - x_i); 'batchmean' divides the sum by the batch size (input.shape[0]).""",
        gradient="-y_i, or -exp(y_i) with log_target=True.",
        stable="The y = 0 terms are 0 exactly (xlogy), also for x = -inf.",
        params="""\
input : array_like
    Log-probabilities.
target : array_like
    Probabilities (or log-probabilities with ``log_target=True``), same shape.
reduction : {'none', 'mean', 'sum', 'batchmean'}, default 'mean'
    'mean' averages over all elements (PyTorch's default, which it warns about);
    'batchmean' is the mathematical KL divergence per sample.
log_target : bool, default False""",
        limits="""\
Limits where PyTorch returns NaN: a target probability of exactly 0 contributes 0 also
where the input is -inf.""",
    ),
}

_LOSS_COMMON = """\
backend : {None, 'numba', 'cython', 'numpy', 'cuda'}, optional
    Force a backend (default: automatic, see :func:`fastact.backends`)."""

_LOSS_RETURNS = """\
'mean' and 'sum' give a NumPy scalar of the input's dtype (accumulated in float64, rounded
once; an empty input gives NaN for 'mean' and 0 for 'sum'); 'none' the unreduced loss, shaped
like the target (probability-target cross_entropy: the input's shape without the class
axis).  float16 input is computed in float32 and rounded once."""


def _loss_doc(name: str, form: str) -> str:
    info = _LOSS_INFO[name]
    head = {"forward": info["summary"],
            "and_grad": f"Loss and gradient of ``{name}`` in one pass over the input.",
            "backward": f"Backward pass of ``{name}``: grad_loss times d loss / d input."}[form]
    parts = [head, "", info["formula"], "", "Gradient: " + info["gradient"], "",
             "Stable form: " + info["stable"], "", "Parameters", "----------"]
    if form == "backward":
        parts.append("grad_loss : float or array_like\n    Upstream gradient of the loss: a "
                     "number or an array broadcastable to the unreduced loss.")
    parts.append(info["params"])
    if form == "forward":
        parts.append("out : ndarray, optional\n    Only with reduction='none': where to write "
                     "the per-element loss.")
    else:
        parts.append("out : ndarray, optional\n    The gradient buffer (the input's shape and "
                     "dtype); it may be the input itself (in place) or any strided view.")
    parts.append(_LOSS_COMMON)
    parts += ["", "Returns", "-------"]
    if form == "forward":
        parts.append("loss : NumPy scalar or ndarray\n    " + _LOSS_RETURNS.replace("\n", "\n    "))
    elif form == "and_grad":
        parts.append("(loss, grad_input) : tuple\n    The loss as from the forward function and "
                     "the gradient of the reduced loss (of the sum for 'none') with respect "
                     "to the input.")
    else:
        parts.append("grad_input : ndarray\n    sum over the unreduced loss of grad_loss times its "
                     "gradient, including the 'mean' scale; the input's shape and dtype.")
    notes = ["Semantics follow ``torch.nn.functional`` (checked against golden cases made with "
             "PyTorch).  Bad input raises before any work: TypeError for bool targets or "
             "non-float inputs, ValueError for shape mismatches (no broadcasting between input "
             "and target), unknown reductions and out-of-range parameters; IndexError for a "
             "class target out of range (naming the value and its position), raised by a "
             "pre-pass before anything is written."]
    if info["limits"]:
        notes.append(info["limits"])
    parts += ["", "Notes", "-----"] + ["\n\n".join(notes), "", "Examples", "--------",
                                        ">>> import numpy as np, fastact as fa",
                                        LOSS_EXAMPLES[name][form]]
    return "\n".join(parts) + "\n"


LOSS_DOCS: dict[str, str] = {
    (name if form == "forward" else f"{name}_{form}"): _loss_doc(name, form)
    for name in _LOSS_INFO for form in ("forward", "and_grad", "backward")
}


# ------------------------------------------------------------------------------------------------
# gated units
# ------------------------------------------------------------------------------------------------

_GATED_COMMON = """\
out : ndarray, optional
    Where to write the result ({out_shape}, the result dtype){alias}.
backend : str, optional
    Force a backend ('numba', 'cython', 'numpy', 'cuda')."""

_GATED_NOTES = """\
The gate's activation and its derivative are computed by the same formulas as ``fa.{gate}``
(stable forms included: {stable}; in float64, or for float32 data on the Numba backend its
float32 formulas where it has them), multiplied by the value in float64 and rounded once, so
the value is within the bound of ``{gate}`` plus one rounding (float32: {b32} ULP, float64:
{b64} ULP) and each gradient within {d} ULP (with the derivatives' absolute floor).  The
inputs are never modified; NaN propagates, and ``inf * 0`` gives NaN as in NumPy and
PyTorch."""

GATED_DOCS = {
    "glu": f"""Gated linear unit: the first half of x along ``axis`` gated by the second.

.. math:: \\operatorname{{glu}}(x) = a \\cdot \\sigma(b), \\quad x = [a \\,|\\, b]
   \\text{{ along axis}}

Derivative: d/da = sigma(b), d/db = a sigma(b) (1 - sigma(b)) (``glu_backward``).

Parameters
----------
x : array_like
    Input, float16/32/64 (float16 computed in float32); its size along ``axis`` must be even.
axis : int, default -1
    The axis that is split in two halves (PyTorch's ``dim``).
{_GATED_COMMON.format(out_shape="x's shape with axis halved", alias="")}

Returns
-------
y : ndarray
    x's shape with ``axis`` halved.

Raises
------
ValueError
    If x is 0-d or its size along ``axis`` is odd.

Notes
-----
Both halves are read in place (no copy of x when it is C-contiguous), whatever the axis.
{_GATED_NOTES.format(gate="sigmoid", stable="sigma from exp(-|b|)", b32=5, b64=5, d=10)}

Examples
--------
>>> import numpy as np, fastact as fa
>>> fa.glu(np.array([[1.0, 2.0, 0.0, 3.0], [-1.0, 4.0, 2.0, -2.0]]))
array([[ 0.5       ,  1.90514825],
       [-0.88079708,  0.47681169]])
>>> fa.glu(np.array([[1.0, 2.0], [0.0, 3.0]]), axis=0)
array([[0.5       , 1.90514825]])
""",
    "glu_backward": f"""Gradient of ``glu`` with respect to x, in one pass.

For x = [a | b] along ``axis``: grad_x = [grad sigma(b) | grad a sigma(b) (1 - sigma(b))].

Parameters
----------
grad : array_like
    Gradient of the output: x's shape with ``axis`` halved.
x : array_like
    The input of the forward pass (keyword-only).
axis : int, default -1
    The axis that was split.
{_GATED_COMMON.format(out_shape="x's shape", alias="; may be x itself")}

Returns
-------
grad_x : ndarray
    Same shape as x.

Notes
-----
{_GATED_NOTES.format(gate="sigmoid", stable="sigma from exp(-|b|)", b32=5, b64=5, d=10)}

Examples
--------
>>> import numpy as np, fastact as fa
>>> fa.glu_backward(np.ones((1, 2)), x=np.array([[1.0, 2.0, 0.0, 3.0]]))
array([[0.5       , 0.95257413, 0.25      , 0.09035332]])
""",
    "swiglu": f"""SiLU-gated unit (SwiGLU): silu(a) * b.

.. math:: \\operatorname{{swiglu}}(a, b) = \\frac{{a}}{{1 + e^{{-a}}}} \\, b

Derivative: d/da = b (sigma(a) + a sigma(a) (1 - sigma(a))), d/db = silu(a)
(``swiglu_backward``).  The gated feed-forward block of LLaMA-style transformers is
``swiglu(x @ W1, x @ W3) @ W2``.

Parameters
----------
a : array_like
    Gate input, float16/32/64.
b : array_like
    Value input, the same shape as a (no broadcasting: a shape mismatch is a ValueError).
{_GATED_COMMON.format(out_shape="a's shape", alias="; may be a or b itself")}

Returns
-------
y : ndarray
    Same shape as a.

Notes
-----
{_GATED_NOTES.format(gate="silu", stable="a sigma(a) from exp(-|a|)", b32=5, b64=5, d=10)}

Examples
--------
>>> import numpy as np, fastact as fa
>>> fa.swiglu(np.array([-1.0, 0.0, 2.0]), np.array([2.0, 5.0, 0.5]))
array([-0.53788284,  0.        ,  0.88079708])
""",
    "swiglu_backward": f"""Gradients of ``swiglu`` with respect to a and b, in one pass.

grad_a = grad b silu'(a), grad_b = grad silu(a).

Parameters
----------
grad : array_like
    Gradient of the output, the shape of a.
a, b : array_like
    The inputs of the forward pass (keyword-only).
out : tuple of two ndarrays, optional
    Buffers for (grad_a, grad_b); either may be None, and they must not overlap.
backend : str, optional
    Force a backend ('numba', 'cython', 'numpy', 'cuda').

Returns
-------
(grad_a, grad_b) : tuple of ndarray

Notes
-----
{_GATED_NOTES.format(gate="silu", stable="a sigma(a) from exp(-|a|)", b32=5, b64=5, d=10)}

Examples
--------
>>> import numpy as np, fastact as fa
>>> fa.swiglu_backward(np.ones(3), a=np.array([-1.0, 0.0, 2.0]), b=np.array([2.0, 5.0, 0.5]))
(array([0.14465898, 2.5       , 0.54539212]), array([-0.26894142,  0.        ,  1.76159416]))
""",
    "geglu": f"""GELU-gated unit (GEGLU): gelu(a) * b.

.. math:: \\operatorname{{geglu}}(a, b) = a \\, \\Phi(a) \\, b

Derivative: d/da = b (Phi(a) + a phi(a)), d/db = gelu(a) (``geglu_backward``).  With
``approximate='tanh'`` the gate is gelu's tanh form, as in ``fa.gelu``.

Parameters
----------
a : array_like
    Gate input, float16/32/64.
b : array_like
    Value input, the same shape as a (no broadcasting).
approximate : {{'none', 'tanh'}}, default 'none'
    Which gelu: exact (erfc) or the tanh approximation.
{_GATED_COMMON.format(out_shape="a's shape", alias="; may be a or b itself")}

Returns
-------
y : ndarray
    Same shape as a.

Notes
-----
{_GATED_NOTES.format(gate="gelu", stable="erfc with its argument's rounding error corrected",
                     b32=5, b64=33, d=10)}

Examples
--------
>>> import numpy as np, fastact as fa
>>> fa.geglu(np.array([-1.0, 0.0, 2.0]), np.array([2.0, 5.0, 0.5]))
array([-0.31731051,  0.        ,  0.97724987])
>>> fa.geglu(np.array([-1.0, 0.0, 2.0]), np.array([2.0, 5.0, 0.5]), approximate="tanh")
array([-0.31761602,  0.        ,  0.97729885])
""",
    "geglu_backward": f"""Gradients of ``geglu`` with respect to a and b, in one pass.

grad_a = grad b gelu'(a), grad_b = grad gelu(a).

Parameters
----------
grad : array_like
    Gradient of the output, the shape of a.
a, b : array_like
    The inputs of the forward pass (keyword-only).
approximate : {{'none', 'tanh'}}, default 'none'
    Which gelu.
out : tuple of two ndarrays, optional
    Buffers for (grad_a, grad_b); either may be None, and they must not overlap.
backend : str, optional
    Force a backend ('numba', 'cython', 'numpy', 'cuda').

Returns
-------
(grad_a, grad_b) : tuple of ndarray

Notes
-----
{_GATED_NOTES.format(gate="gelu", stable="erfc with its argument's rounding error corrected",
                     b32=5, b64=33, d=10)}

Examples
--------
>>> import numpy as np, fastact as fa
>>> fa.geglu_backward(np.ones(3), a=np.array([-1.0, 0.0, 2.0]), b=np.array([2.0, 5.0, 0.5]))
(array([-0.16663094,  2.5       ,  0.5426159 ]), array([-0.15865525,  0.        ,  1.95449974]))
""",
}
