"""Losses on the CUDA backend: every loss x form x reduction on device arrays and on host
arrays with ``backend='cuda'``, against the float64 / longdouble oracle of ``tests/test_losses.py``
(itself checked against PyTorch golden cases and finite differences).

Under the simulator inputs are small; the row kernel's block shapes are varied so that rows
longer and shorter than a block, grid-stride over rows and the tree reductions take every path.
The elementwise kernels' partial-sum blocks are the CPU's (4096 elements), so one case spans
several of them.  ``gpu`` tests (real GPU only) add a large cross-entropy and torch interop.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from numba import cuda

import fastact as fa
from fastact.kernels import numba_cuda as nc

from test_cuda_backend import _error_of, dev, host, is_numba_device
from test_losses import (F32, F64, LOSSES, ROW, check_grad, check_loss, make_inputs, oracle,
                         oracle_kwargs, reductions)

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM", "").strip() == "1"
gpu = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(SIMULATED, reason="needs a real CUDA GPU (this run uses the CUDA "
                               "simulator, which computes with float64 Python rules)")


def loss_host(value, reduction, dtype, what):
    """A device loss as the host checks expect it: the 'none' array, or a NumPy scalar taken
    from the 0-d device array (which must be 0-d, of the input's dtype, on the device)."""
    assert is_numba_device(value), f"{what}: loss is {type(value).__name__}, not a device array"
    assert np.dtype(value.dtype) == dtype, (what, value.dtype)
    h = host(value)
    if reduction == "none":
        return h
    assert h.shape == (), (what, h.shape)
    return h[()]


MATRIX = [(s, r) for s in LOSSES for r in reductions(s)]


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("spec, reduction", MATRIX, ids=lambda v: getattr(v, "name", v))
def test_loss_forms_on_device(spec, reduction, dtype):
    rng = np.random.default_rng(abs(hash((spec.name, reduction, "cuda"))) % 2**32)
    x, t, kw = make_inputs(spec, dtype, rng, shape=(6, 5))
    ok = oracle_kwargs(spec, kw, reduction)
    want_loss, want_grad = oracle(spec.name, x, t, **ok)
    what = f"{spec.name} reduction={reduction} {dtype} device"
    dx, dt = dev(x), dev(t)
    fn = getattr(fa, spec.name)
    check_loss(loss_host(fn(dx, dt, reduction=reduction, **kw), reduction, dtype, what),
               want_loss, dtype, what + " forward")
    loss, grad = getattr(fa, spec.name + "_and_grad")(dx, dt, reduction=reduction, **kw)
    check_loss(loss_host(loss, reduction, dtype, what), want_loss, dtype, what + " and_grad")
    assert is_numba_device(grad) and grad.shape == x.shape
    check_grad(host(grad), want_grad, dtype, what + " and_grad grad")
    # backward: a number, and a device array of the unreduced loss's shape
    lshape = np.shape(oracle(spec.name, x, t, **{**ok, "reduction": "none"})[0])
    ga = rng.uniform(-2, 2, lshape)
    for gl, gl_dev in ((2.5, 2.5), (ga, dev(ga))):
        g = getattr(fa, spec.name + "_backward")(gl_dev, dx, dt, reduction=reduction, **kw)
        check_grad(host(g), oracle(spec.name, x, t, grad_loss=gl, **ok)[1], dtype,
                   what + " backward")
    np.testing.assert_array_equal(host(dx), x)  # inputs never modified
    np.testing.assert_array_equal(host(dt), t)


@pytest.mark.parametrize("spec", LOSSES, ids=lambda s: s.name)
def test_loss_host_arrays_backend_cuda(spec):
    """backend='cuda' on host arrays: copied in, computed, copied out (host results)."""
    rng = np.random.default_rng(11)
    x, t, kw = make_inputs(spec, F64, rng, shape=(5, 4))
    for reduction in ("mean", "none"):
        ok = oracle_kwargs(spec, kw, reduction)
        want_loss, want_grad = oracle(spec.name, x, t, **ok)
        x0 = x.copy()
        loss, grad = getattr(fa, spec.name + "_and_grad")(x, t, reduction=reduction,
                                                           backend="cuda", **kw)
        assert isinstance(grad, np.ndarray)
        check_loss(loss, want_loss, F64, f"{spec.name} host cuda {reduction}")
        check_grad(grad, want_grad, F64, f"{spec.name} host cuda {reduction}")
        np.testing.assert_array_equal(x, x0)
    buf = x.copy()
    loss, grad = getattr(fa, spec.name + "_and_grad")(buf, t, out=buf, backend="cuda", **kw)
    assert grad is buf
    check_grad(grad, oracle(spec.name, x, t, **oracle_kwargs(spec, kw, "mean"))[1], F64,
               f"{spec.name} host cuda in place")


@pytest.mark.parametrize("threads, max_blocks", [(1, 1), (4, 2), (64, 3)])
def test_row_loss_block_shapes(monkeypatch, threads, max_blocks):
    """Rows longer and shorter than a block, several rows per block (grid-stride), trees of
    one to six levels; class weights, smoothing, ignored rows, probability targets."""
    monkeypatch.setattr(nc, "ROW_THREADS", threads)
    monkeypatch.setattr(nc, "ROW_MAX_BLOCKS", max_blocks)
    rng = np.random.default_rng(threads)
    for C in (3, 37):
        x = (rng.standard_normal((5, C)) * 3).astype(np.float64)
        t = rng.integers(0, C, 5)
        t[2] = -100
        kw = dict(weight=rng.uniform(0.2, 2.0, C), label_smoothing=0.2)
        loss, grad = fa.cross_entropy_and_grad(dev(x), dev(t), reduction="sum", **kw)
        want_loss, want_grad = oracle("cross_entropy", x, t, reduction="sum", **kw)
        check_loss(loss_host(loss, "sum", F64, "ce"), want_loss, F64, f"ce C={C}")
        check_grad(host(grad), want_grad, F64, f"ce C={C}")
        q = rng.dirichlet(np.ones(C), 5)
        loss, grad = fa.cross_entropy_and_grad(dev(x), dev(q), weight=kw["weight"])
        want_loss, want_grad = oracle("cross_entropy", x, q, weight=kw["weight"])
        check_loss(loss_host(loss, "mean", F64, "prob"), want_loss, F64, f"prob C={C}")
        check_grad(host(grad), want_grad, F64, f"prob C={C}")


@pytest.mark.parametrize("axis_case", ["unbatched", "nd", "axis_last", "axis0"])
@pytest.mark.parametrize("spec", ROW, ids=lambda s: s.name)
def test_row_loss_layouts_on_device(spec, axis_case):
    """The class axis anywhere: the kernel reads an (outer, C, inner) view, no transposes."""
    rng = np.random.default_rng(5)
    shape, axis = {"unbatched": ((6,), None), "nd": ((3, 4, 2, 3), None),
                   "axis_last": ((3, 2, 5), -1), "axis0": ((5, 3), 0)}[axis_case]
    x = rng.standard_normal(shape)
    ax = (1 if x.ndim >= 2 else 0) if axis is None else axis % x.ndim
    t = rng.integers(0, shape[ax], shape[:ax] + shape[ax + 1:])
    kw = {} if axis is None else {"axis": axis}
    for reduction in ("none", "mean"):
        want_loss, want_grad = oracle(spec.name, x, t, reduction=reduction, **kw)
        loss, grad = getattr(fa, spec.name + "_and_grad")(dev(x), dev(t), reduction=reduction,
                                                           **kw)
        check_loss(loss_host(loss, reduction, F64, axis_case), want_loss, F64, axis_case)
        check_grad(host(grad), want_grad, F64, axis_case)
    if spec.name == "cross_entropy":  # probability targets in the same layout
        q = rng.uniform(0, 1, shape)
        want_loss, want_grad = oracle(spec.name, x, q, **kw)
        loss, grad = fa.cross_entropy_and_grad(dev(x), dev(q), **kw)
        check_loss(loss_host(loss, "mean", F64, axis_case), want_loss, F64, axis_case + " prob")
        check_grad(host(grad), want_grad, F64, axis_case + " prob")


def test_elementwise_loss_several_partial_blocks_and_device_weights(monkeypatch):
    """Several partial-sum blocks (64 elements here instead of 4096: the simulator is slow),
    the last one short; weights and pos_weight as device arrays (one element, and the full
    shape) and host arrays broadcast on the host."""
    from fastact import api

    monkeypatch.setattr(api, "_LOSS_BLOCK", 64)
    monkeypatch.setattr(nc, "LOSS_BLOCK", 64)
    rng = np.random.default_rng(2)
    shape = (3, 50)  # 150 elements: three partial blocks
    x = rng.standard_normal(shape)
    y = rng.uniform(0, 1, shape)
    w = rng.uniform(0.5, 2, shape)
    pw = rng.uniform(0.5, 3, shape[-1:])
    name = "binary_cross_entropy_with_logits"
    want_loss, want_grad = oracle(name, x, y, weight=w, pos_weight=pw)
    loss, grad = fa.binary_cross_entropy_with_logits_and_grad(
        dev(x), dev(y), weight=dev(w), pos_weight=pw)
    check_loss(loss_host(loss, "mean", F64, "bcel"), want_loss, F64, "bcel")
    check_grad(host(grad), want_grad, F64, "bcel")
    p = 1 / (1 + np.exp(-x))
    want = oracle("binary_cross_entropy", p, y, weight=np.full(1, 0.5), reduction="sum")[0]
    got = fa.binary_cross_entropy(dev(p), dev(y), weight=dev(np.array([0.5])), reduction="sum")
    check_loss(loss_host(got, "sum", F64, "bce"), want, F64, "bce device scalar weight")
    # backend='cuda' on host arrays uses the same blocks
    got = fa.binary_cross_entropy(p, y, weight=0.5, reduction="sum", backend="cuda")
    check_loss(got, want, F64, "bce host cuda")


def test_device_out_and_in_place():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 6))
    t = rng.integers(0, 6, 4)
    want_loss, want_grad = oracle("cross_entropy", x, t)
    buf = dev(x)
    loss, grad = fa.cross_entropy_and_grad(buf, dev(t), out=buf)
    assert grad is buf  # the gradient overwrote the logits, no second array returned
    check_grad(host(buf), want_grad, F64, "in place")
    check_loss(loss_host(loss, "mean", F64, "in place"), want_loss, F64, "in place")
    out = cuda.device_array(4, np.float64)
    res = fa.cross_entropy(dev(x), dev(t), reduction="none", out=out)
    assert res is out
    check_loss(host(out), oracle("cross_entropy", x, t, reduction="none")[0], F64, "out")
    y = rng.standard_normal((4, 6))
    gout = cuda.device_array((4, 6), np.float64)
    assert fa.mse_loss_backward(1.0, dev(x), dev(y), out=gout) is gout
    check_grad(host(gout), oracle("mse_loss", x, y)[1], F64, "mse out")


def test_empty_all_ignored_and_infinite_limits():
    e = fa.cross_entropy(dev(np.zeros((0, 3))), dev(np.zeros(0, np.int64)))
    assert np.isnan(host(e)[()])
    assert host(fa.cross_entropy(dev(np.zeros((0, 3))), dev(np.zeros(0, np.int64)),
                                 reduction="sum"))[()] == 0
    x = np.ones((2, 3))
    loss, grad = fa.cross_entropy_and_grad(dev(x), dev(np.array([-100, -100])))
    assert np.isnan(host(loss)[()]) and not host(grad).any()
    assert np.isnan(host(fa.mse_loss(dev(np.zeros(0)), dev(np.zeros(0))))[()])
    # the limits of test_losses.test_infinite_logit_limits, on the device
    x = np.array([[np.inf, 0.0, 1.0], [np.inf, 0.0, 1.0], [-np.inf, 0.0, 0.0]])
    t = np.array([0, 2, 0])
    loss, grad = fa.cross_entropy_and_grad(dev(x), dev(t), reduction="none")
    loss, grad = host(loss), host(grad)
    assert loss[0] == 0 and loss[1] == np.inf and loss[2] == np.inf
    np.testing.assert_array_equal(grad[0], [0, 0, 0])
    np.testing.assert_array_equal(grad[1], [1, 0, -1])
    np.testing.assert_allclose(grad[2], [-1, 0.5, 0.5])
    assert np.isnan(host(fa.cross_entropy(dev(np.array([[np.inf, np.inf, 0.0]])),
                                          dev(np.array([0]))))[()])
    # smoothing with a +inf logit: the loss is +inf, the gradient the finite limit
    loss, grad = fa.cross_entropy_and_grad(dev(x[:1]), dev(t[:1]), label_smoothing=0.3,
                                           reduction="none")
    hl, hg = fa.cross_entropy_and_grad(x[:1], t[:1], label_smoothing=0.3, reduction="none",
                                       backend="numpy")
    np.testing.assert_array_equal(host(loss), hl)
    np.testing.assert_allclose(host(grad), hg, rtol=1e-15)


def _loss_error_cases(mk):
    x = mk(np.ones((4, 3)))
    t = mk(np.array([0, 1, 2, 1]))
    p = mk(np.full((4, 3), 0.5))
    return {
        "target too big": lambda: fa.cross_entropy(x, mk(np.array([0, 1, 3, 1]))),
        "target negative": lambda: fa.nll_loss_and_grad(x, mk(np.array([0, -2, 1, 1]))),
        "bool target": lambda: fa.cross_entropy(x, mk(np.ones(4, bool))),
        "target shape": lambda: fa.cross_entropy(x, mk(np.zeros(3, np.int64))),
        "prob shape": lambda: fa.cross_entropy(x, mk(np.ones((4, 2)))),
        "int input": lambda: fa.cross_entropy(mk(np.ones((4, 3), np.int32)), t),
        "0-d input": lambda: fa.cross_entropy(mk(np.array(1.0)), t),
        "smoothing": lambda: fa.cross_entropy(x, t, label_smoothing=1.5),
        "reduction": lambda: fa.nll_loss(x, t, reduction="avg"),
        "ignore type": lambda: fa.nll_loss(x, t, ignore_index=1.5),
        "weight shape": lambda: fa.cross_entropy(x, t, weight=np.ones(2)),
        "out reduced": lambda: fa.cross_entropy(x, t, out=mk(np.ones(4))),
        "bce range": lambda: fa.binary_cross_entropy(mk(np.array([0.5, 1.5, 0.2])),
                                                     mk(np.zeros(3))),
        "bce nan": lambda: fa.binary_cross_entropy_and_grad(mk(np.array([0.5, np.nan])),
                                                            mk(np.zeros(2))),
        "ew shapes": lambda: fa.mse_loss(p, mk(np.ones((3, 4)))),
        "ew bool target": lambda: fa.l1_loss(p, mk(np.ones((4, 3), bool))),
        "huber delta": lambda: fa.huber_loss(p, p, delta=-1.0),
        "kl log_target": lambda: fa.kl_div(p, p, log_target=1),
        "ew reduction": lambda: fa.mse_loss(p, p, reduction="batchmean"),
    }


@pytest.mark.parametrize("case", list(_loss_error_cases(lambda a: a)))
def test_loss_errors_identical_to_host(case):
    host_err = _error_of(_loss_error_cases(lambda a: a)[case])
    dev_err = _error_of(_loss_error_cases(dev)[case])
    assert host_err is not None, f"{case}: the host call did not raise"
    assert dev_err == host_err, f"{case}: device {dev_err} != host {host_err}"


def test_bad_target_raises_before_writing():
    x = np.linspace(-1, 1, 12).reshape(4, 3)
    buf = dev(x)
    with pytest.raises(IndexError, match=r"target value 7 at position \(2,\)"):
        fa.cross_entropy_and_grad(buf, dev(np.array([0, 1, 7, 9])), out=buf)
    np.testing.assert_array_equal(host(buf), x)  # the logits are untouched


# ------------------------------------------------------------------------------------------------
# real GPU only
# ------------------------------------------------------------------------------------------------

@gpu
@needs_gpu
def test_cross_entropy_large_rows_gpu():
    """Rows of 32000 float32 logits, in place, against the float64 oracle on a few rows."""
    rng = np.random.default_rng(0)
    N, C = 256, 32000
    x = rng.standard_normal((N, C), dtype=np.float32) * 4
    t = rng.integers(0, C, N)
    buf = dev(x)
    loss, grad = fa.cross_entropy_and_grad(buf, dev(t), out=buf, reduction="sum")
    want_loss, want_grad = oracle("cross_entropy", x[:4], t[:4], reduction="none")
    check_grad(host(grad)[:4], want_grad, F32, "large rows grad")
    full = oracle("cross_entropy", x, t, reduction="sum")[0]
    assert math.isclose(float(host(loss)[()]), float(full), rel_tol=1e-5)


@gpu
@needs_gpu
def test_losses_torch_interop_gpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    x = torch.randn(64, 100, device="cuda", dtype=torch.float32)
    t = torch.randint(0, 100, (64,), device="cuda")
    loss, grad = fa.cross_entropy_and_grad(x, t)
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0 and loss.is_cuda
    assert isinstance(grad, torch.Tensor) and grad.is_cuda
    xr = x.detach().clone().requires_grad_(True)
    ref = torch.nn.functional.cross_entropy(xr, t)
    ref.backward()
    assert torch.allclose(loss, ref.detach(), rtol=1e-5)
    assert torch.allclose(grad, xr.grad, rtol=1e-4, atol=1e-7)
    y = torch.rand(64, 100, device="cuda")
    got = fa.binary_cross_entropy_with_logits(x, y)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(x, y)
    assert torch.allclose(got, ref, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# the PyTorch golden cases (tests/golden/torch_losses.npz), on device arrays
# ------------------------------------------------------------------------------------------------

from test_losses import GOLDEN_MATRIX, _expected, _golden_id  # noqa: E402


# every distinct case once per dtype (the cases repeat per reduction, and the reductions are
# covered by the matrix above): 'mean' and 'batchmean' in float64, 'mean' in float32 where
# float32 holds the inputs; the simulator is slow
GOLDEN_DEVICE = [(c, d) for c, d in GOLDEN_MATRIX
                 if c[2].get("reduction", "mean") in (("mean", "batchmean") if d == F64
                                                       else ("mean",))]


@pytest.mark.parametrize("case, dtype", GOLDEN_DEVICE,
                         ids=lambda v: str(v) if isinstance(v, np.dtype) else _golden_id(v))
def test_torch_golden_on_device(case, dtype):
    i, fn, kw, arrays, tloss, tgrad, limit = case
    arrays = dict(arrays)
    x = arrays.pop("input").astype(dtype)
    t = arrays.pop("target")
    if t.dtype.kind == "f":
        t = t.astype(dtype)
    want_loss = _expected(tloss, None if limit is None else limit[0])
    want_grad = _expected(tgrad, None if limit is None else limit[1])
    reduction = kw.get("reduction", "mean")
    loss, grad = getattr(fa, fn + "_and_grad")(dev(x), dev(t), **arrays, **kw)
    forward = getattr(fa, fn)(dev(x), dev(t), **arrays, **kw)
    rtol = 1e-10 if dtype == F64 else 2e-5
    what = f"golden case {_golden_id(case)} {dtype} device"
    for got in (loss, forward):
        np.testing.assert_allclose(np.asarray(loss_host(got, reduction, dtype, what),
                                              np.float64), want_loss, rtol=rtol, atol=1e-300,
                                   equal_nan=True, err_msg=what + " loss")
    gatol = 4 * np.finfo(dtype).eps * float(np.max(np.abs(want_grad[np.isfinite(want_grad)]),
                                                   initial=0))
    np.testing.assert_allclose(host(grad).astype(np.float64), want_grad, rtol=rtol, atol=gatol,
                               equal_nan=True, err_msg=what + " grad")
