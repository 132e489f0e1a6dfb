"""fastact: fast activation functions, their derivatives and softmax for NumPy arrays.

>>> import numpy as np, fastact as fa
>>> fa.sigmoid(np.array([0.0, 2.0], dtype=np.float32))
array([0.5      , 0.8807971], dtype=float32)

Every op comes in forms (``NAME``, ``NAME_derivative``, ``NAME_and_derivative``,
``NAME_backward``) computed by the fastest available backend (Numba, Cython/OpenMP or NumPy);
see ``fa.backend_info()`` and the README.
"""

from ._dispatch import (
    BackendUnavailable,
    backend_info,
    backends,
    select_backend,
    set_num_threads,
    use_backend,
)
from ._plot import plot, plottable
from ._tools import warmup
from .api import (
    elu,
    elu_and_derivative,
    elu_backward,
    elu_derivative,
    leaky_relu,
    leaky_relu_and_derivative,
    leaky_relu_backward,
    leaky_relu_derivative,
    log_softmax,
    log_softmax_backward,
    logsumexp,
    prelu,
    prelu_and_derivative,
    prelu_backward,
    prelu_derivative,
    relu,
    relu_and_derivative,
    relu_backward,
    relu_derivative,
    sigmoid,
    sigmoid_and_derivative,
    sigmoid_backward,
    sigmoid_derivative,
    softmax,
    softmax_backward,
    softmin,
    softmin_backward,
    tanh,
    tanh_and_derivative,
    tanh_backward,
    tanh_derivative,
)
from .api import (  # losses
    cross_entropy,
    cross_entropy_and_grad,
    cross_entropy_backward,
    nll_loss,
    nll_loss_and_grad,
    nll_loss_backward,
    binary_cross_entropy,
    binary_cross_entropy_and_grad,
    binary_cross_entropy_backward,
    binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_and_grad,
    binary_cross_entropy_with_logits_backward,
    mse_loss,
    mse_loss_and_grad,
    mse_loss_backward,
    l1_loss,
    l1_loss_and_grad,
    l1_loss_backward,
    huber_loss,
    huber_loss_and_grad,
    huber_loss_backward,
    smooth_l1_loss,
    smooth_l1_loss_and_grad,
    smooth_l1_loss_backward,
    kl_div,
    kl_div_and_grad,
    kl_div_backward,
)

__version__ = "0.1.0"

__all__ = [
    "sigmoid", "sigmoid_derivative", "sigmoid_and_derivative", "sigmoid_backward",
    "tanh", "tanh_derivative", "tanh_and_derivative", "tanh_backward",
    "relu", "relu_derivative", "relu_and_derivative", "relu_backward",
    "leaky_relu", "leaky_relu_derivative", "leaky_relu_and_derivative", "leaky_relu_backward",
    "elu", "elu_derivative", "elu_and_derivative", "elu_backward",
    "prelu", "prelu_derivative", "prelu_and_derivative", "prelu_backward",
    "softmax", "softmax_backward", "log_softmax", "log_softmax_backward",
    "softmin", "softmin_backward", "logsumexp",
    "cross_entropy", "cross_entropy_and_grad", "cross_entropy_backward",
    "nll_loss", "nll_loss_and_grad", "nll_loss_backward",
    "binary_cross_entropy", "binary_cross_entropy_and_grad", "binary_cross_entropy_backward",
    "binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits_and_grad", "binary_cross_entropy_with_logits_backward",
    "mse_loss", "mse_loss_and_grad", "mse_loss_backward",
    "l1_loss", "l1_loss_and_grad", "l1_loss_backward",
    "huber_loss", "huber_loss_and_grad", "huber_loss_backward",
    "smooth_l1_loss", "smooth_l1_loss_and_grad", "smooth_l1_loss_backward",
    "kl_div", "kl_div_and_grad", "kl_div_backward",
    "BackendUnavailable", "backends", "backend_info", "select_backend", "use_backend",
    "set_num_threads", "warmup", "plot", "plottable", "__version__",
]
