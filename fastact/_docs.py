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
(array([0.11920292, 0.62245935], dtype=float32), array([0.10499358, 0.23500371], dtype=float32))""",
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
(array([-0.9640276 ,  0.46211717], dtype=float32), array([0.07065082, 0.7864477 ], dtype=float32))""",
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
}


# ------------------------------------------------------------------------------------------------
# losses
# ------------------------------------------------------------------------------------------------

LOSS_DOCS: dict[str, str] = {}
