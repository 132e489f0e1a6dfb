"""Losses: every loss x form x backend x dtype against float64 / longdouble oracles, the
PyTorch golden cases (``tests/golden/torch_losses.npz``, made by ``make_torch_losses.py``; torch
is not needed here), error handling, the in-place no-copy cross-entropy gradient and the
reduction accuracy.

Oracle: the NumPy reference kernels (``fastact.kernels.numpy_ref``) evaluated on
``np.longdouble`` inputs, per-row / per-element values summed with ``math.fsum``.  Because
numpy_ref is also the ``numpy`` backend, the oracle itself is validated independently: against
PyTorch (float64 golden cases) and against central finite differences of the oracle's loss.
"""

from __future__ import annotations

import json
import math
import os
import tracemalloc

import numpy as np
import pytest

import fastact as fa
from fastact import _registry
from fastact.kernels import numpy_ref

LOSSES = _registry.loss_ops()
ROW = [s for s in LOSSES if s.extra["layout"] == "row"]
ELEM = [s for s in LOSSES if s.extra["layout"] == "elementwise"]
F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
LONG = np.dtype(np.longdouble)
RTOL = {F16: 2e-3, F32: 1e-5, F64: 1e-12}
GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "torch_losses.npz")


def eps(dtype):
    return float(np.finfo(dtype).eps)


# ------------------------------------------------------------------------------------------------
# the oracle
# ------------------------------------------------------------------------------------------------

def _class_axis(x, axis):
    return (1 if x.ndim >= 2 else 0) if axis is None else axis % x.ndim


def oracle(name, x, target, *, reduction="mean", weight=None, pos_weight=None, param=None,
           ignore_index=-100, label_smoothing=0.0, axis=None, grad_loss=1.0):
    """(reduced loss as a Python float or longdouble array, gradient as longdouble) of
    ``reduction(loss)`` weighted by grad_loss (broadcast to the unreduced loss)."""
    spec = _registry.get(name)
    xl = np.asarray(x, dtype=LONG)
    with np.errstate(all="ignore"):
        if spec.extra["layout"] == "row":
            ax = _class_axis(xl, axis)
            C = xl.shape[ax]
            lshape = xl.shape[:ax] + xl.shape[ax + 1:]
            rows = math.prod(lshape)
            xr = np.moveaxis(xl, ax, -1).reshape(rows, C)
            w = np.ones(C) if weight is None else np.asarray(weight, np.float64)
            t = np.asarray(target)
            prob = t.dtype.kind == "f"
            loss = np.zeros(rows, LONG)
            grad = np.zeros((rows, C), LONG)
            one = np.ones(1)
            if prob:
                q = np.moveaxis(t.astype(LONG), ax, -1).reshape(rows, C)
                numpy_ref.cross_entropy_prob_and_grad(xr, q, w, label_smoothing, one, loss, grad)
                count = rows
            else:
                ti = t.astype(np.int64).reshape(-1)
                if name == "cross_entropy":
                    numpy_ref.cross_entropy_and_grad(xr, ti, w, ignore_index, label_smoothing,
                                                     one, loss, grad)
                else:
                    numpy_ref.nll_loss_and_grad(xr, ti, w, ignore_index, one, loss, grad)
                count = math.fsum(w[ti[ti != ignore_index]])
            gl = np.broadcast_to(np.asarray(grad_loss, LONG), lshape).reshape(-1)
            grad = grad * gl[:, None]
            grad = np.moveaxis(grad.reshape(lshape + (C,)), -1, ax)
            loss = loss.reshape(lshape)
        else:
            shape = xl.shape
            n = xl.size
            yl = np.asarray(target, LONG).reshape(-1)
            w = np.ones(1) if weight is None else np.broadcast_to(
                np.asarray(weight, np.float64), shape).reshape(-1)
            pw = np.ones(1) if pos_weight is None else np.broadcast_to(
                np.asarray(pos_weight, np.float64), shape).reshape(-1)
            p = 0.0 if param is None else float(param)
            loss = np.zeros(n, LONG)
            grad = np.zeros(n, LONG)
            partial = np.zeros((n + 4095) // 4096)
            getattr(numpy_ref, f"{name}_and_grad")(xl.reshape(-1), yl, w, pw, p, np.ones(1),
                                                  loss, grad, partial)
            gl = np.broadcast_to(np.asarray(grad_loss, LONG), shape).reshape(-1)
            grad = (grad * gl).reshape(shape)
            loss = loss.reshape(shape)
            count = n if reduction != "batchmean" else (shape[0] if shape else 1)
        if reduction == "none":
            return loss, grad
        total = math.fsum(float(v) for v in loss.reshape(-1)) if loss.size else 0.0
        if reduction == "sum":
            return total, grad
        mean = total / count if count else math.nan
        return mean, (grad / count if count else grad * 0)


# ------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------

def make_inputs(spec, dtype, rng, shape=(7, 5), extras=True):
    """(input, target, kwargs) for a loss, random but well inside the domain."""
    kw = {}
    name = spec.name
    if name == "cross_entropy":
        x = (rng.standard_normal(shape) * 3).astype(dtype)
        t = rng.integers(0, shape[1], (shape[0],) + shape[2:])
        if extras:
            t.reshape(-1)[1] = -100
            kw.update(weight=rng.uniform(0.2, 2.0, shape[1]), label_smoothing=0.15)
        return x, t, kw
    if name == "nll_loss":
        x = np.log(rng.uniform(0.05, 1.0, shape)).astype(dtype)
        t = rng.integers(0, shape[1], (shape[0],) + shape[2:])
        if extras:
            t.reshape(-1)[0] = -100
            kw.update(weight=rng.uniform(0.2, 2.0, shape[1]))
        return x, t, kw
    if name == "binary_cross_entropy":
        x = rng.uniform(0.02, 0.98, shape).astype(dtype)
        y = rng.uniform(0, 1, shape).astype(dtype)
        if extras:
            kw.update(weight=rng.uniform(0.5, 2.0, shape))
        return x, y, kw
    x = (rng.standard_normal(shape) * 2).astype(dtype)
    y = (rng.standard_normal(shape) * 2).astype(dtype)
    if name == "binary_cross_entropy_with_logits":
        y = rng.uniform(0, 1, shape).astype(dtype)
        if extras:
            kw.update(weight=rng.uniform(0.5, 2.0, shape[-1:]),
                      pos_weight=rng.uniform(0.5, 3.0, shape[-1:]))
    elif name == "kl_div":
        x = np.log(rng.uniform(0.05, 1, shape)).astype(dtype)
        y = rng.uniform(0, 1, shape).astype(dtype)
    elif name == "huber_loss" and extras:
        kw["delta"] = 0.8
    elif name == "smooth_l1_loss" and extras:
        kw["beta"] = 0.6
    return x, y, kw


def oracle_kwargs(spec, kw, reduction):
    ok = dict(reduction=reduction)
    for k in ("weight", "pos_weight", "ignore_index", "label_smoothing", "axis"):
        if k in kw:
            ok[k] = kw[k]
    for k in ("delta", "beta", "log_target"):
        if k in kw:
            ok["param"] = float(kw[k])
    return ok


def reductions(spec):
    return next(p for p in spec.params if p.name == "reduction").choices


def check_loss(got, want, dtype, what):
    rtol = RTOL[dtype]
    if not isinstance(got, np.ndarray):
        assert isinstance(got, np.generic) and got.dtype == dtype, (what, type(got), got)
        w = float(want)
        assert (math.isnan(w) and np.isnan(got)) or math.isclose(
            float(got), w, rel_tol=rtol, abs_tol=1e-300), f"{what}: loss {got!r}, expected {w!r}"
    else:
        assert got.dtype == dtype and got.shape == np.shape(want), (what, got.dtype, got.shape)
        w = np.asarray(want, np.float64)
        atol = 4 * eps(dtype) * (float(np.max(np.abs(w))) if w.size else 0)
        np.testing.assert_allclose(got.astype(np.float64), w, rtol=rtol, atol=atol,
                                   err_msg=what)


def check_grad(got, want, dtype, what):
    assert got.dtype == dtype and got.shape == want.shape, (what, got.dtype, got.shape)
    w = np.asarray(want, np.float64)
    atol = 4 * eps(dtype) * (float(np.max(np.abs(w))) if w.size else 0)
    np.testing.assert_allclose(got.astype(np.float64), w, rtol=RTOL[dtype], atol=atol,
                               err_msg=what)


# ------------------------------------------------------------------------------------------------
# the matrix: loss x form x backend x dtype x reduction
# ------------------------------------------------------------------------------------------------

MATRIX = [(s, r) for s in LOSSES for r in reductions(s)]


@pytest.mark.parametrize("dtype", [F32, F64, F16], ids=str)
@pytest.mark.parametrize("spec, reduction", MATRIX, ids=lambda v: getattr(v, "name", v))
def test_forms_against_oracle(spec, reduction, dtype, backend):
    rng = np.random.default_rng(abs(hash((spec.name, reduction))) % 2**32)
    x, t, kw = make_inputs(spec, dtype, rng)
    ok = oracle_kwargs(spec, kw, reduction)
    want_loss, want_grad = oracle(spec.name, x, t, **ok)
    what = f"{spec.name} reduction={reduction} {dtype} {backend}"
    x0 = x.copy()
    loss = getattr(fa, spec.name)(x, t, reduction=reduction, backend=backend, **kw)
    check_loss(loss, want_loss, dtype, what + " forward")
    assert isinstance(loss, np.ndarray) == (reduction == "none"), (what, type(loss))
    loss2, grad = getattr(fa, spec.name + "_and_grad")(x, t, reduction=reduction,
                                                        backend=backend, **kw)
    check_loss(loss2, want_loss, dtype, what + " and_grad loss")
    check_grad(grad, want_grad, dtype, what + " and_grad grad")
    # backward: a scalar grad_loss, and an array broadcast to the unreduced loss
    g1 = getattr(fa, spec.name + "_backward")(2.5, x, t, reduction=reduction, backend=backend,
                                              **kw)
    check_grad(g1, oracle(spec.name, x, t, grad_loss=2.5, **ok)[1], dtype, what + " backward")
    lshape = np.shape(want_loss) if reduction == "none" else np.shape(
        oracle(spec.name, x, t, **{**ok, "reduction": "none"})[0])
    ga = rng.uniform(-2, 2, lshape)
    g2 = getattr(fa, spec.name + "_backward")(ga, x, t, reduction=reduction, backend=backend,
                                              **kw)
    check_grad(g2, oracle(spec.name, x, t, grad_loss=ga, **ok)[1], dtype,
               what + " backward array")
    np.testing.assert_array_equal(x, x0)  # inputs never modified


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("smoothing", [0.0, 0.2], ids=["plain", "smoothed"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("classes", [1, 5, 16, 33, 1024, 1500])
def test_cross_entropy_rows(classes, weighted, smoothing, dtype, backend):
    """Class-index rows of many lengths, which the Numba kernels run by the softmax rows' passes
    (numba_cpu._ce_row_direct): rows shorter and longer than a vector and than an online block
    (512), class weights, label smoothing or none, an ignored row, a -inf logit, a row spread
    wide enough for float32 probabilities below the smallest normal, a row with +inf and one
    with NaN (the other path), in place, and a per-row backward."""
    rng = np.random.default_rng(classes * 4 + weighted * 2 + (smoothing > 0))
    rows = 7
    x = (rng.standard_normal((rows, classes)) * 4).astype(dtype)
    t = rng.integers(0, classes, rows)
    t[3] = -100
    x[2] *= 40
    if classes > 1:
        x[1, (t[1] + 1) % classes] = -np.inf
        x[5, (t[5] + 1) % classes] = np.inf
        x[6, (t[6] + 1) % classes] = np.nan
    kw = dict(weight=rng.uniform(0.2, 2.0, classes)) if weighted else {}
    if smoothing:
        kw["label_smoothing"] = smoothing
    what = f"cross_entropy C={classes} {dtype} {backend} {kw}"
    x0 = x.copy()
    for reduction in ("mean", "none"):
        want_loss, want_grad = oracle("cross_entropy", x, t, reduction=reduction, **kw)
        loss, grad = fa.cross_entropy_and_grad(x, t, reduction=reduction, backend=backend, **kw)
        with np.errstate(invalid="ignore"):
            if reduction == "none":
                np.testing.assert_allclose(np.asarray(loss, np.float64), want_loss.astype(
                    np.float64), rtol=RTOL[dtype], atol=1e-300, equal_nan=True, err_msg=what)
            else:
                assert math.isnan(float(loss)) == math.isnan(want_loss), (what, loss)
        finite = np.isfinite(np.asarray(want_grad, np.float64)).all(axis=1)
        np.testing.assert_array_equal(np.isfinite(grad).all(axis=1), finite, err_msg=what)
        check_grad(grad[finite], want_grad[finite], dtype, what + f" {reduction} grad")
    np.testing.assert_array_equal(x, x0)
    ok = np.isfinite(np.asarray(oracle("cross_entropy", x, t, reduction="none", **kw)[0],
                                np.float64))
    ok[3] = True  # (the ignored row: loss 0, gradient 0)
    xs, ts = x[ok], t[ok]
    want_loss, want_grad = oracle("cross_entropy", xs, ts, reduction="sum", **kw)
    buf = xs.copy()
    loss, grad = fa.cross_entropy_and_grad(buf, ts, reduction="sum", out=buf, backend=backend,
                                           **kw)
    assert grad is buf
    check_loss(loss, want_loss, dtype, what + " in place")
    check_grad(grad, want_grad, dtype, what + " in place")
    ga = rng.uniform(-2, 2, len(ts))
    g = fa.cross_entropy_backward(ga, xs, ts, reduction="none", backend=backend, **kw)
    check_grad(g, oracle("cross_entropy", xs, ts, reduction="none", grad_loss=ga, **kw)[1],
               dtype, what + " backward per row")


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_kl_div_log_target(dtype, backend):
    """kl_div with log_target=True (the matrix runs the default False): the kernels are
    written once per flag value (numba_cpu._split_on_flag), so both must be checked."""
    rng = np.random.default_rng(11)
    x = np.log(rng.uniform(0.05, 1, (6, 700))).astype(dtype)
    y = np.log(rng.uniform(1e-3, 1, (6, 700))).astype(dtype)
    y[0, :5] = -np.inf  # a target probability of 0: no contribution
    for reduction in reductions(_registry.get("kl_div")):
        want_loss, want_grad = oracle("kl_div", x, y, reduction=reduction, param=1.0)
        what = f"kl_div log_target {reduction} {dtype} {backend}"
        loss, grad = fa.kl_div_and_grad(x, y, reduction=reduction, log_target=True,
                                        backend=backend)
        check_loss(loss, want_loss, dtype, what)
        check_grad(grad, want_grad, dtype, what)
        check_loss(fa.kl_div(x, y, reduction=reduction, log_target=True, backend=backend),
                   want_loss, dtype, what + " forward")
    # the flag really changes the result (else both kernels could be one branch)
    assert not np.allclose(fa.kl_div(x, y, reduction="none", backend=backend),
                           fa.kl_div(x, y, reduction="none", log_target=True, backend=backend))


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("spec", LOSSES, ids=lambda s: s.name)
def test_and_grad_out_in_place(spec, dtype, backend):
    rng = np.random.default_rng(3)
    x, t, kw = make_inputs(spec, dtype, rng, shape=(9, 6))
    want_loss, want_grad = oracle(spec.name, x, t, **oracle_kwargs(spec, kw, "mean"))
    buf = x.copy()
    loss, grad = getattr(fa, spec.name + "_and_grad")(buf, t, out=buf, backend=backend, **kw)
    assert grad is buf
    check_loss(loss, want_loss, dtype, f"{spec.name} in place")
    check_grad(grad, want_grad, dtype, f"{spec.name} in place")
    # a strided (non-contiguous) out is written through its strides
    big = np.full((x.shape[0], 2 * x.shape[1]), 7.0, dtype)
    view = big[:, ::2]
    getattr(fa, spec.name + "_and_grad")(x, t, out=view, backend=backend, **kw)
    check_grad(view, want_grad, dtype, f"{spec.name} strided out")
    assert np.all(big[:, 1::2] == 7.0)


@pytest.mark.parametrize("axis_case", ["unbatched", "nd", "axis_last", "transposed"])
@pytest.mark.parametrize("spec", ROW, ids=lambda s: s.name)
def test_row_layouts(spec, axis_case, backend):
    rng = np.random.default_rng(5)
    dtype = F64
    kw = {}
    if axis_case == "unbatched":
        x = rng.standard_normal(6)
        t = np.array(4, dtype=np.int32)
    elif axis_case == "nd":
        x = rng.standard_normal((3, 5, 2, 4))
        t = rng.integers(0, 5, (3, 2, 4)).astype(np.uint8)
    elif axis_case == "axis_last":
        x = rng.standard_normal((3, 4, 5))
        t = rng.integers(0, 5, (3, 4)).astype(np.int16)
        kw["axis"] = -1
    else:
        x = rng.standard_normal((5, 4)).T  # Fortran-ordered (4, 5) view
        t = rng.integers(0, 5, 4)
    if spec.name == "nll_loss":
        x = -np.abs(x)
    for reduction in ("none", "mean", "sum"):
        want_loss, want_grad = oracle(spec.name, x, t, reduction=reduction, **kw)
        loss, grad = getattr(fa, spec.name + "_and_grad")(x, t, reduction=reduction,
                                                          backend=backend, **kw)
        check_loss(loss, want_loss, dtype, f"{spec.name} {axis_case} {reduction}")
        check_grad(grad, want_grad, dtype, f"{spec.name} {axis_case} {reduction}")


@pytest.mark.parametrize("shape", [(4, 6), (2, 6, 3), (6,)])
def test_probability_targets(shape, backend):
    rng = np.random.default_rng(11)
    for dtype in (F32, F64):
        x = (rng.standard_normal(shape) * 2).astype(dtype)
        q = rng.uniform(0, 1, shape)
        ax = 1 if len(shape) >= 2 else 0
        q = (q / q.sum(axis=ax, keepdims=True)).astype(dtype)
        w = rng.uniform(0.5, 2, shape[ax])
        for reduction in ("none", "mean", "sum"):
            for ls in (0.0, 0.25):
                kw = dict(reduction=reduction, weight=w, label_smoothing=ls)
                want_loss, want_grad = oracle("cross_entropy", x, q, **kw)
                loss, grad = fa.cross_entropy_and_grad(x, q, backend=backend, **kw)
                what = f"prob {shape} {dtype} {reduction} ls={ls}"
                check_loss(loss, want_loss, dtype, what)
                check_grad(grad, want_grad, dtype, what)


# ------------------------------------------------------------------------------------------------
# PyTorch golden cases
# ------------------------------------------------------------------------------------------------

def _golden_cases():
    d = np.load(GOLDEN)
    meta = json.loads(str(d["meta"]))
    out = []
    for i, c in enumerate(meta["cases"]):
        arrays = {k: d[f"{i}/{k}"] for k in c["arrays"]}
        limit = (d[f"{i}/loss_limit"], d[f"{i}/grad_limit"]) if f"{i}/loss_limit" in d else None
        out.append((i, c["fn"], c["kwargs"], arrays, d[f"{i}/loss"], d[f"{i}/grad"], limit))
    return out


GOLDEN_CASES = _golden_cases()


def _golden_id(case):
    i, fn, kw, *_ = case
    return f"{i}-{fn}-" + "-".join(f"{k}={v}" for k, v in kw.items())


def _expected(torch_value, limit):
    """PyTorch's value, except where it is NaN and the mathematical limit is known."""
    if limit is None:
        return torch_value
    return np.where(np.isnan(torch_value) & ~np.isnan(limit), limit, torch_value)


def _fits_float32(case) -> bool:
    x = case[3]["input"]
    return np.max(np.abs(x[np.isfinite(x)]), initial=0) < 1e30


# every case in float64; in float32 the cases whose inputs float32 can hold
GOLDEN_MATRIX = [(c, F64) for c in GOLDEN_CASES] + [(c, F32) for c in GOLDEN_CASES
                                                     if _fits_float32(c)]


@pytest.mark.parametrize("case, dtype", GOLDEN_MATRIX,
                         ids=lambda v: str(v) if isinstance(v, np.dtype) else _golden_id(v))
def test_torch_golden(case, dtype, backend):
    i, fn, kw, arrays, tloss, tgrad, limit = case
    arrays = dict(arrays)
    x = arrays.pop("input")
    t = arrays.pop("target")
    if dtype == F32:
        x = x.astype(F32)
        if t.dtype.kind == "f":
            t = t.astype(F32)
    want_loss = _expected(tloss, None if limit is None else limit[0])
    want_grad = _expected(tgrad, None if limit is None else limit[1])
    loss, grad = getattr(fa, fn + "_and_grad")(x, t, **arrays, **kw, backend=backend)
    forward = getattr(fa, fn)(x, t, **arrays, **kw, backend=backend)
    rtol = 1e-10 if dtype == F64 else 2e-5
    what = f"golden case {_golden_id(case)} {dtype}"
    for got in (loss, forward):
        np.testing.assert_allclose(np.asarray(got, np.float64), want_loss, rtol=rtol,
                                   atol=1e-300, equal_nan=True, err_msg=what + " loss")
    gatol = 4 * eps(dtype) * float(np.max(np.abs(want_grad[np.isfinite(want_grad)]),
                                          initial=0))
    np.testing.assert_allclose(grad.astype(np.float64), want_grad, rtol=rtol, atol=gatol,
                               equal_nan=True, err_msg=what + " grad")


@pytest.mark.parametrize("case", [c for c in GOLDEN_CASES if c[6] is None], ids=_golden_id)
def test_oracle_matches_torch(case):
    """The longdouble oracle agrees with PyTorch wherever PyTorch is finite (it validates the
    oracle independently of the numpy backend)."""
    i, fn, kw, arrays, tloss, tgrad, _ = case
    arrays = dict(arrays)
    x, t = arrays.pop("input"), arrays.pop("target")
    ok = {k: v for k, v in kw.items() if k in ("reduction", "ignore_index", "label_smoothing")}
    for k in ("delta", "beta", "log_target"):
        if k in kw:
            ok["param"] = float(kw[k])
    loss, grad = oracle(fn, x, t, **arrays, **ok)
    np.testing.assert_allclose(np.asarray(loss, np.float64), tloss, rtol=1e-10, equal_nan=True)
    np.testing.assert_allclose(np.asarray(grad, np.float64), tgrad, rtol=1e-9,
                               atol=1e-12 * float(np.max(np.abs(tgrad), initial=1)),
                               equal_nan=True)


@pytest.mark.parametrize("spec", LOSSES, ids=lambda s: s.name)
def test_oracle_gradient_finite_differences(spec):
    rng = np.random.default_rng(21)
    x, t, kw = make_inputs(spec, F64, rng, shape=(3, 4))
    ok = oracle_kwargs(spec, kw, "sum")
    _, grad = oracle(spec.name, x, t, **ok)
    h = 1e-6
    num = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        num[idx] = (oracle(spec.name, xp, t, **ok)[0] - oracle(spec.name, xm, t, **ok)[0]) / (2 * h)
    np.testing.assert_allclose(np.asarray(grad, np.float64), num, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# special cases and errors
# ------------------------------------------------------------------------------------------------

def test_empty_and_all_ignored(backend):
    for dtype in (F32, F64):
        x = np.zeros((0, 5), dtype)
        t = np.zeros(0, np.int64)
        assert np.isnan(fa.cross_entropy(x, t, backend=backend))
        s = fa.cross_entropy(x, t, reduction="sum", backend=backend)
        assert s == 0 and s.dtype == dtype
        assert fa.cross_entropy(x, t, reduction="none", backend=backend).shape == (0,)
        loss, grad = fa.mse_loss_and_grad(np.zeros(0, dtype), np.zeros(0, dtype), backend=backend)
        assert np.isnan(loss) and grad.shape == (0,)
        assert fa.l1_loss(np.zeros((0, 2), dtype), np.zeros((0, 2), dtype), reduction="sum",
                          backend=backend) == 0
        xi = np.ones((3, 4), dtype)
        ti = np.full(3, -100)
        loss, grad = fa.cross_entropy_and_grad(xi, ti, backend=backend)
        assert np.isnan(loss) and np.all(grad == 0)
        assert fa.nll_loss(xi, ti, reduction="sum", backend=backend) == 0


@pytest.mark.parametrize("spec", ROW, ids=lambda s: s.name)
@pytest.mark.parametrize("bad, where", [(5, (2,)), (-1, (0,)), (-7, (3,))])
def test_bad_target_index_error_before_writing(spec, bad, where, backend):
    x = np.linspace(-1, 1, 20, dtype=np.float32).reshape(4, 5)
    t = np.array([1, 2, 3, 0])
    t[where] = bad
    buf = x.copy()
    messages = []
    with pytest.raises(IndexError) as exc:
        getattr(fa, spec.name + "_and_grad")(buf, t, out=buf, backend=backend)
    messages.append(str(exc.value))
    np.testing.assert_array_equal(buf, x)  # the logits are untouched
    msg = str(exc.value)
    assert f"fastact.{spec.name}_and_grad" in msg and str(bad) in msg and str(where) in msg
    for other in fa.backends():
        with pytest.raises(IndexError) as exc2:
            getattr(fa, spec.name + "_and_grad")(buf, t, out=buf, backend=other)
        assert str(exc2.value) == msg
    with pytest.raises(IndexError):
        getattr(fa, spec.name)(x, t, backend=backend)
    with pytest.raises(IndexError):
        getattr(fa, spec.name + "_backward")(1.0, x, t, backend=backend)


@pytest.mark.parametrize("spec", LOSSES, ids=lambda s: s.name)
def test_type_and_shape_errors(spec, backend):
    rng = np.random.default_rng(1)
    x, t, kw = make_inputs(spec, F32, rng, shape=(4, 3), extras=False)
    fn = getattr(fa, spec.name)
    fname = f"fastact.{spec.name}"
    with pytest.raises(TypeError, match=fname):
        fn(x.astype(np.int32), t, backend=backend)
    with pytest.raises(TypeError, match=fname):
        fn(x.astype(np.complex64), t, backend=backend)
    with pytest.raises(TypeError, match=fname):
        fn(x, np.asarray(t) > 0, backend=backend)
    bad_t = np.concatenate([t, t[:1]])
    with pytest.raises(ValueError, match=fname):
        fn(x, bad_t, backend=backend)
    with pytest.raises(ValueError, match="reduction"):
        fn(x, t, reduction="avg", backend=backend)
    if spec.extra["layout"] == "elementwise":
        with pytest.raises(ValueError, match=fname):  # no broadcasting
            fn(x, t[:1], backend=backend)
    else:
        with pytest.raises(TypeError, match=fname):
            fn(x, t.astype(np.complex64), backend=backend)
        with pytest.raises(ValueError, match="weight"):
            fn(x, t, weight=np.ones(7), backend=backend)


def test_label_smoothing_and_param_errors(backend):
    x = np.zeros((2, 3), np.float32)
    t = np.array([0, 1])
    for ls in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="label_smoothing"):
            fa.cross_entropy(x, t, label_smoothing=ls, backend=backend)
    with pytest.raises(TypeError, match="label_smoothing"):
        fa.cross_entropy(x, t, label_smoothing="0.1", backend=backend)
    with pytest.raises(ValueError, match="delta"):
        fa.huber_loss(x, x, delta=0.0, backend=backend)
    with pytest.raises(ValueError, match="beta"):
        fa.smooth_l1_loss(x, x, beta=-1.0, backend=backend)
    with pytest.raises(ValueError, match="batchmean"):
        fa.mse_loss(x, x, reduction="batchmean", backend=backend)
    assert np.isfinite(fa.kl_div(x, x, reduction="batchmean", backend=backend))
    with pytest.raises(TypeError, match="ignore_index"):
        fa.cross_entropy(x, t, ignore_index=1.5, backend=backend)
    with pytest.raises(ValueError, match="out is only accepted"):
        fa.mse_loss(x, x, out=np.empty(()), backend=backend)


@pytest.mark.parametrize("bad", [1.5, -0.25, float("nan")])
def test_bce_input_outside_unit_interval(bad, backend):
    x = np.full((2, 3), 0.5, np.float32)
    x[1, 2] = bad
    y = np.zeros_like(x)
    for form in ("", "_and_grad"):
        with pytest.raises(ValueError, match=r"fastact.binary_cross_entropy.*\(1, 2\)"):
            getattr(fa, "binary_cross_entropy" + form)(x, y, backend=backend)


def test_infinite_logit_limits(backend):
    """Where PyTorch returns NaN at an infinite logit and the limit is finite, the limit."""
    x = np.array([[np.inf, 0.0, 1.0], [np.inf, 0.0, 1.0], [-np.inf, 0.0, 0.0]])
    t = np.array([0, 2, 0])
    loss, grad = fa.cross_entropy_and_grad(x, t, reduction="none", backend=backend)
    assert loss[0] == 0 and loss[1] == np.inf and loss[2] == np.inf
    np.testing.assert_array_equal(grad[0], [0, 0, 0])
    np.testing.assert_array_equal(grad[1], [1, 0, -1])
    np.testing.assert_allclose(grad[2], [-1, 0.5, 0.5])
    two = np.array([[np.inf, np.inf, 0.0]])
    assert np.isnan(fa.cross_entropy(two, np.array([0]), backend=backend))
    z = np.array([np.inf, -np.inf, np.nan])
    lo = fa.binary_cross_entropy_with_logits(z, np.array([1.0, 0.0, 0.5]), reduction="none",
                                             backend=backend)
    assert lo[0] == 0 and lo[1] == 0 and np.isnan(lo[2])


def test_float32_mean_accuracy_1e7(backend):
    """A float32 mean over 1e7 elements is within rtol 1e-5 of the exact (math.fsum) mean."""
    rng = np.random.default_rng(7)
    n = 10_000_000
    x = (rng.standard_normal(n) + 3).astype(np.float32)
    y = np.zeros(n, np.float32)
    exact = math.fsum((x.astype(np.float64) ** 2).tolist()) / n
    got = fa.mse_loss(x, y, backend=backend)
    assert got.dtype == np.float32
    assert abs(float(got) - exact) <= 1e-5 * exact
    got = fa.l1_loss(x, y, backend=backend)
    assert abs(float(got) - math.fsum(np.abs(x.astype(np.float64)).tolist()) / n) <= 1e-5 * exact


@pytest.mark.parametrize("backend_name", ["numba", "cython"])
def test_cross_entropy_in_place_allocates_no_second_array(backend_name):
    if backend_name not in fa.backends():
        pytest.skip(f"backend {backend_name} unavailable")
    N, C = 4096, 32000
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((N, C), dtype=np.float32)
    target = rng.integers(0, C, N)
    if backend_name == "numba":  # compile both twins outside the measurement
        fa.warmup(ops=["cross_entropy"], dtypes=[np.float32])
    fa.cross_entropy_and_grad(logits[:4, :100], target[:4] % 100, out=logits[:4, :100].copy(),
                              backend=backend_name)
    tracemalloc.start()
    try:
        loss, grad = fa.cross_entropy_and_grad(logits, target, out=logits, backend=backend_name)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert grad is logits
    assert peak < logits.nbytes // 20, f"peak {peak} bytes for a {logits.nbytes}-byte problem"
    # spot-check a few rows against the oracle (the logits are gone: regenerate them)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C), dtype=np.float32)[:3]
    _, want = oracle("cross_entropy", x, target[:3], reduction="sum")
    check_grad(grad[:3] * N, want, F32, "in-place 4096x32000")
