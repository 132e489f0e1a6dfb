"""The PyTorch bridge: gradcheck in float64, values equal to torch.nn.functional, errors."""

from __future__ import annotations

import numpy as np
import pytest

import fastact as fa
from fastact import _registry

torch = pytest.importorskip("torch")
ft = pytest.importorskip("fastact.torch")
F = torch.nn.functional

#: fastact name -> the torch.nn.functional function (when the name differs or is in torch.*)
TORCH_NAMES = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "log_sigmoid": F.logsigmoid}

#: parameter values for ops whose parameters are required
REQUIRED = {"threshold": {"threshold": 0.3, "value": -2.0}}


def _params(spec):
    return REQUIRED.get(spec.name, {})


def _input(seed=0, shape=(4, 5, 3)):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * 3).requires_grad_()


@pytest.mark.parametrize("spec", _registry.elementwise_ops(), ids=lambda s: s.name)
def test_gradcheck_and_values_match_torch(spec):
    params = _params(spec)
    x = _input()
    fn = getattr(ft, spec.name)
    assert torch.autograd.gradcheck(lambda t: fn(t, **params), (x,), eps=1e-6, atol=1e-7)
    reference = TORCH_NAMES.get(spec.name) or getattr(F, spec.name)
    want = reference(x.detach(), **params)
    got = fn(x.detach(), **params)
    assert got.dtype == want.dtype and got.shape == want.shape
    # absolute floor: 8 ULP of the largest value, since torch's float64 gelu, x (1 + erf(x /
    # sqrt2)) / 2, cancels for x < 0 (it gives 0 or an error of ~1e-16 where the value is
    # ~1e-18); fastact's own accuracy is tested against mpmath-checked oracles elsewhere
    floor = 8 * torch.finfo(torch.float64).eps * float(want.abs().max())
    torch.testing.assert_close(got, want, rtol=1e-12, atol=floor)
    # the backward through fastact equals torch's autograd
    g = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (mine,) = torch.autograd.grad(fn(x, **params), x, g)
    (theirs,) = torch.autograd.grad(reference(x, **params), x, g)
    # torch's hardsigmoid backward multiplies by a float32 constant 1/6 (1.0f / 6.0f) even in
    # float64: 3e-8 relative; fastact's 1/6 is the float64 one
    rtol = 1e-7 if spec.name == "hardsigmoid" else 1e-10
    torch.testing.assert_close(mine, theirs, rtol=rtol, atol=1e-12)


def test_float32_float16_and_module():
    x = torch.linspace(-3, 3, 12, dtype=torch.float32).reshape(3, 4).requires_grad_()
    layer = ft.Activation("leaky_relu", negative_slope=0.2)
    y = layer(x)
    assert y.dtype == torch.float32 and "leaky_relu" in repr(layer)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.where(x > 0, 1.0, 0.2))
    h = ft.sigmoid(torch.tensor([-1.0, 0.5], dtype=torch.float16))
    assert h.dtype == torch.float16


def test_prelu_gradcheck_both_inputs():
    x = _input(shape=(3, 4, 2))
    w = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ft.prelu, (x, w), eps=1e-6, atol=1e-7)
    torch.testing.assert_close(ft.prelu(x, w), F.prelu(x, w))


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dim", [-1, 1, 0])
def test_softmax_family_gradcheck(name, dim):
    x = _input(shape=(3, 4, 5))
    fn = getattr(ft, name)
    assert torch.autograd.gradcheck(lambda t: fn(t, dim=dim), (x,), eps=1e-6, atol=1e-7)
    torch.testing.assert_close(fn(x, dim=dim), getattr(torch, name)(x, dim=dim))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_fused_gradcheck(reduction):
    x = _input(shape=(6, 5))
    target = torch.tensor([0, 4, 2, -100, 1, 3])
    weight = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0], dtype=torch.float64)
    kw = {"weight": weight, "reduction": reduction, "label_smoothing": 0.1}
    assert torch.autograd.gradcheck(lambda t: ft.cross_entropy(t, target, **kw), (x,),
                                    eps=1e-6, atol=1e-7)
    torch.testing.assert_close(ft.cross_entropy(x, target, **kw),
                               F.cross_entropy(x, target, **kw))


def test_errors():
    with pytest.raises(TypeError, match="bfloat16"):
        ft.sigmoid(torch.ones(3, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        ft.relu(np.ones(3))
    with pytest.raises(TypeError, match="unexpected argument 'alpha'"):
        ft.relu(torch.ones(3), alpha=1.0)
    with pytest.raises(ValueError, match="not an elementwise"):
        ft.Activation("softmax")


@pytest.mark.parametrize("dim", [-1, 0, 1])
def test_glu_matches_torch(dim):
    x = _input(shape=(4, 6, 2))
    assert torch.autograd.gradcheck(lambda t: ft.glu(t, dim), (x,), eps=1e-6, atol=1e-7)
    torch.testing.assert_close(ft.glu(x, dim), F.glu(x, dim), rtol=1e-12, atol=1e-14)
    g = torch.randn(F.glu(x, dim).shape, dtype=torch.float64)
    (mine,) = torch.autograd.grad(ft.glu(x, dim), x, g)
    (theirs,) = torch.autograd.grad(F.glu(x, dim), x, g)
    torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name,reference", [
    ("swiglu", lambda a, b: F.silu(a) * b),
    ("geglu", lambda a, b: F.gelu(a) * b),
    ("geglu-tanh", lambda a, b: F.gelu(a, approximate="tanh") * b)])
def test_gated_pairs_match_torch(name, reference):
    op, _, approx = name.partition("-")
    kw = {"approximate": approx} if approx else {}
    a, b = _input(2, (3, 5)), _input(3, (3, 5))
    fn = getattr(ft, op)
    assert torch.autograd.gradcheck(lambda s, t: fn(s, t, **kw), (a, b), eps=1e-6, atol=1e-7)
    want = reference(a.detach(), b.detach())
    floor = 8 * torch.finfo(torch.float64).eps * float(want.abs().max())
    torch.testing.assert_close(fn(a.detach(), b.detach(), **kw), want, rtol=1e-12, atol=floor)
    g = torch.randn(a.shape, dtype=torch.float64)
    mine = torch.autograd.grad(fn(a, b, **kw), (a, b), g)
    theirs = torch.autograd.grad(reference(a, b), (a, b), g)
    for m, t in zip(mine, theirs):
        torch.testing.assert_close(m, t, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# CUDA tensors (real GPU only): the same gradchecks on the device, results stay on the device
# ------------------------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU and "
                                "a CUDA build of PyTorch")


@pytest.mark.gpu
@needs_cuda
def test_cuda_tensors_gradcheck_on_the_device():
    pytest.importorskip("numba_cuda")
    x = _input(shape=(6, 5)).detach().cuda().requires_grad_()
    for fn in (ft.gelu, ft.sigmoid, lambda t: ft.softmax(t, dim=1),
               lambda t: ft.leaky_relu(t, 0.1)):
        y = fn(x)
        assert y.is_cuda
        assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-7)
    target = torch.tensor([0, 4, 2, -100, 1, 3], device="cuda")
    weight = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0], dtype=torch.float64, device="cuda")
    kw = {"weight": weight, "label_smoothing": 0.1}
    loss = ft.cross_entropy(x, target, **kw)
    assert loss.is_cuda and loss.dim() == 0
    torch.testing.assert_close(loss, F.cross_entropy(x, target, **kw))
    assert torch.autograd.gradcheck(lambda t: ft.cross_entropy(t, target, **kw), (x,),
                                    eps=1e-6, atol=1e-7)
    w = torch.full((5,), 0.2, dtype=torch.float64, device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(ft.prelu, (x, w), eps=1e-6, atol=1e-7)
