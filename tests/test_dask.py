"""Dask arrays: lazy results with the right dtype/meta/chunks, equal to the NumPy results, on the
threaded scheduler and on a ``distributed.LocalCluster`` of worker processes (loopback)."""

from __future__ import annotations

import numpy as np
import pytest

import fastact as fa
from fastact import _registry

da = pytest.importorskip("dask.array")

SHAPE, CHUNKS = (6, 10, 4), (2, 5, 4)  # several chunks along axes 0 and 1


def data(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 3, SHAPE).astype(dtype)
    return x, da.from_array(x, chunks=CHUNKS)


@pytest.fixture(scope="module")
def cluster_client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None,
                                       silence_logs=50)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def _same(lazy, eager):
    assert isinstance(lazy, da.Array)
    assert lazy.dtype == eager.dtype and lazy.shape == eager.shape
    got = lazy.compute(scheduler="threads")
    assert type(got) is np.ndarray and got.dtype == eager.dtype
    np.testing.assert_array_equal(got, eager)  # same kernels, same elements: bitwise equal


@pytest.mark.parametrize("spec", _registry.elementwise_ops(), ids=lambda s: s.name)
@pytest.mark.parametrize("form", _registry.ELEMENTWISE_FORMS)
def test_elementwise_forms_are_lazy_and_equal(spec, form):
    x, dx = data()
    g, dg = data(seed=1)
    params = {p.name: (0.5 if p.required else p.default) for p in spec.params}
    fn = getattr(fa, spec.public_name(form))
    if form == "backward":
        lazy, eager = fn(dg, x=dx, **params), fn(g, x=x, **params)
    else:
        lazy, eager = fn(dx, **params), fn(x, **params)
    if form == "and_derivative":
        assert isinstance(lazy, tuple) and len(lazy) == 2
        for l_, e_ in zip(lazy, eager):
            _same(l_, e_)
    else:
        assert lazy.chunks == dx.chunks
        _same(lazy, eager)


def test_backward_from_y_and_mixed_numpy_operand():
    x, dx = data(np.float64)
    g, _ = data(np.float64, seed=1)
    y = fa.sigmoid(x)
    _same(fa.sigmoid_backward(g, y=fa.sigmoid(dx)), fa.sigmoid_backward(g, y=y))
    # a NumPy operand next to a dask one is chunked like it
    _same(fa.tanh_backward(g, x=dx), fa.tanh_backward(g, x=x))


@pytest.mark.parametrize("weight", [0.2, np.linspace(0.1, 1.0, SHAPE[1])], ids=["scalar", "channels"])
def test_prelu_per_channel_blocks_and_grad_weight_reduction(weight):
    x, dx = data(np.float64)
    g, dg = data(np.float64, seed=1)
    _same(fa.prelu(dx, weight), fa.prelu(x, weight))
    for l_, e_ in zip(fa.prelu_and_derivative(dx, weight), fa.prelu_and_derivative(x, weight)):
        _same(l_, e_)
    gx, gw = fa.prelu_backward(dg, x=dx, weight=weight)
    ex, ew = fa.prelu_backward(g, x=x, weight=weight)
    _same(gx, ex)
    _same(fa.prelu_backward(g, x=dx, weight=weight)[0], ex)  # NumPy grad, dask x
    got = gw.compute()
    assert got.shape == ew.shape and got.dtype == ew.dtype
    # a tree of float64 partial sums instead of one float64 sum: equal within a few ulps
    np.testing.assert_allclose(got, ew, rtol=1e-13, atol=0)


def test_errors_are_raised_eagerly_with_the_numpy_messages():
    _, dx = data()
    with pytest.raises(TypeError, match="fastact.sigmoid: x must be a float16"):
        fa.sigmoid(dx.astype(np.int32))
    with pytest.raises(ValueError, match="fastact.elu: alpha"):
        fa.elu(dx, alpha=float("nan"))
    with pytest.raises(ValueError, match="fastact.tanh_backward: x has shape"):
        fa.tanh_backward(dx, x=dx[:3])
    with pytest.raises(TypeError, match="fastact.relu: out= is not supported with dask"):
        fa.relu(dx, out=np.empty(SHAPE, np.float32))
    with pytest.raises(ValueError, match="prelu: weight has 3 elements"):
        fa.prelu(dx, np.ones(3))


def test_float16_and_0d_and_empty():
    x = np.array([[-1.0, 2.0], [0.5, -0.25]], np.float16)
    _same(fa.sigmoid(da.from_array(x, chunks=1)), fa.sigmoid(x))
    _same(fa.relu(da.from_array(np.float64(-2.0))), fa.relu(np.float64(-2.0)))
    _same(fa.sigmoid(da.zeros((0, 3), chunks=2)), fa.sigmoid(np.zeros((0, 3))))


def test_distributed_local_cluster_with_worker_processes(cluster_client):
    x, dx = data(np.float64)
    big = da.from_array(np.linspace(-20, 20, 400_000).reshape(400, 1000), chunks=(100, 500))
    futures = cluster_client.compute([fa.sigmoid(big), fa.elu_backward(dx, x=dx, alpha=0.5),
                                      fa.prelu_backward(dx, x=dx, weight=np.linspace(0, 1, 10))[1]])
    sig, elu_b, gw = cluster_client.gather(futures)
    np.testing.assert_array_equal(sig, fa.sigmoid(big.compute(scheduler="threads")))
    np.testing.assert_array_equal(elu_b, fa.elu_backward(x, x=x, alpha=0.5))
    np.testing.assert_allclose(gw, fa.prelu_backward(x, x=x, weight=np.linspace(0, 1, 10))[1],
                               rtol=1e-13)
    # the work ran in the worker processes, which imported fastact themselves
    assert all(cluster_client.run(lambda: "fastact" in __import__("sys").modules).values())


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [-1, 1, 0])
def test_rowwise_rechunks_the_axis_and_keeps_the_others(name, axis):
    x, dx = data(np.float64)
    where = x > -2
    fn = getattr(fa, name)
    lazy = fn(dx, axis=axis, where=where, temperature=1.5)
    ax = axis % x.ndim
    assert lazy.chunks[ax] == (x.shape[ax],)
    assert all(lazy.chunks[i] == dx.chunks[i] for i in range(x.ndim) if i != ax)
    _same(lazy, fn(x, axis=axis, where=where, temperature=1.5))
    y = fn(x, axis=axis)
    g, _ = data(np.float64, seed=2)
    back = getattr(fa, f"{name}_backward")
    _same(back(da.from_array(g, chunks=CHUNKS), y=da.from_array(y, chunks=CHUNKS), axis=axis),
          back(g, y=y, axis=axis))


def test_rowwise_mask_broadcast_per_row_and_errors():
    x, dx = data(np.float64)
    per_row = np.array([True, False, True, True, True, False])[:, None, None]
    _same(fa.softmax(dx, axis=1, where=per_row), fa.softmax(x, axis=1, where=per_row))
    with pytest.raises(ValueError, match="where has shape"):
        fa.softmax(dx, where=np.ones(3, bool))
    with pytest.raises(np.exceptions.AxisError):
        fa.softmax(dx, axis=5)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", [-1, 0])
def test_logsumexp_reduces_the_axis(axis, keepdims):
    if not hasattr(fa, "logsumexp"):
        pytest.fail("fastact.logsumexp missing")
    x, dx = data(np.float64)
    where = x > -3
    lazy = fa.logsumexp(dx, axis=axis, keepdims=keepdims, where=where, temperature=0.7)
    _same(lazy, fa.logsumexp(x, axis=axis, keepdims=keepdims, where=where, temperature=0.7))
    _same(fa.logsumexp(da.from_array(np.float32(1.5))), fa.logsumexp(np.float32(1.5)))
    _same(fa.softmin(dx, axis=axis), fa.softmin(x, axis=axis))


# ------------------------------------------------------------------------------------------------
# losses: per-block values, float64 tree reductions, a second block-wise pass for the gradient
# ------------------------------------------------------------------------------------------------

from test_losses import (LOSSES, check_grad, check_loss, make_inputs, oracle,  # noqa: E402
                         oracle_kwargs, reductions)

LOSS_MATRIX = [(s, r) for s in LOSSES for r in reductions(s)]


def _chunked(a, rows=4, cols=2):
    return da.from_array(a, chunks=(rows,) + (cols,) * (a.ndim - 1)) if a.ndim else \
        da.from_array(a)


def _loss_value(lazy, reduction):
    assert isinstance(lazy, da.Array)
    got = lazy.compute(scheduler="threads")
    return got if reduction == "none" else got[()]


@pytest.mark.parametrize("spec, reduction", LOSS_MATRIX, ids=lambda v: getattr(v, "name", v))
def test_losses_lazy_against_the_oracle(spec, reduction):
    """Every loss and form on float32 dask arrays chunked along the batch *and* class axes,
    against the float64 oracle of test_losses (the same tolerances as the NumPy path; float64
    runs the same code, test_row_loss_class_axis_and_targets uses it)."""
    dtype = np.dtype(np.float32)
    rng = np.random.default_rng(21)
    x, t, kw = make_inputs(spec, dtype, rng, shape=(9, 5))
    ok = oracle_kwargs(spec, kw, reduction)
    want_loss, want_grad = oracle(spec.name, x, t, **ok)
    dx, dt = _chunked(x), _chunked(t)
    what = f"{spec.name} {reduction} {dtype} dask"
    check_loss(_loss_value(getattr(fa, spec.name)(dx, dt, reduction=reduction, **kw),
                           reduction), want_loss, dtype, what)
    loss, grad = getattr(fa, spec.name + "_and_grad")(dx, dt, reduction=reduction, **kw)
    check_loss(_loss_value(loss, reduction), want_loss, dtype, what + " and_grad")
    assert isinstance(grad, da.Array) and grad.chunks[0] == dx.chunks[0]
    check_grad(grad.compute(scheduler="threads"), want_grad, dtype, what + " grad")
    lshape = np.shape(oracle(spec.name, x, t, **{**ok, "reduction": "none"})[0])
    ga = rng.uniform(-2, 2, lshape)
    g = getattr(fa, spec.name + "_backward")(_chunked(ga, 3), dx, dt, reduction=reduction, **kw)
    check_grad(g.compute(scheduler="threads"), oracle(spec.name, x, t, grad_loss=ga, **ok)[1],
               dtype, what + " backward")


def test_row_loss_class_axis_and_targets():
    """An N-D input with class axis 1 spread over chunks (rechunked to one), probability
    targets, all targets ignored (NaN mean, zero gradient), and a bad target: IndexError at
    compute time naming its position in the whole array."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 5, 4))
    t = rng.integers(0, 5, (6, 4))
    t[4, 3] = -100
    dx = da.from_array(x, chunks=(2, 2, 3))
    dt = da.from_array(t, chunks=(2, 3))
    loss, grad = fa.cross_entropy_and_grad(dx, dt, label_smoothing=0.1, weight=np.arange(1, 6.0))
    want_loss, want_grad = oracle("cross_entropy", x, t, label_smoothing=0.1,
                                  weight=np.arange(1, 6.0))
    check_loss(loss.compute()[()], want_loss, np.dtype(np.float64), "nd")
    check_grad(grad.compute(), want_grad, np.dtype(np.float64), "nd")
    q = rng.dirichlet(np.ones(5), (6, 4)).transpose(0, 2, 1)
    loss = fa.cross_entropy(dx, da.from_array(q, chunks=(3, 5, 2)), reduction="none")
    check_loss(loss.compute(), oracle("cross_entropy", x, q, reduction="none")[0],
               np.dtype(np.float64), "prob")
    ign = da.full((6, 4), -100, chunks=(2, 2))
    loss, grad = fa.nll_loss_and_grad(dx, ign)
    assert np.isnan(loss.compute()) and not grad.compute().any()
    bad = t.copy()
    bad[5, 2] = 9
    lazy = fa.cross_entropy(dx, da.from_array(bad, chunks=(2, 3)))  # built without error
    with pytest.raises(IndexError, match=r"target value 9 at position \(5, 2\)"):
        lazy.compute(scheduler="threads")


def test_loss_errors_are_raised_eagerly():
    x = da.ones((4, 3), chunks=2)
    with pytest.raises(ValueError, match="fastact.cross_entropy: target has shape"):
        fa.cross_entropy(x, da.zeros(3, dtype=np.int64, chunks=2))
    with pytest.raises(ValueError, match="reduction must be one of"):
        fa.mse_loss(x, x, reduction="avg")
    with pytest.raises(TypeError, match="out= is not supported with dask"):
        fa.mse_loss(x, x, reduction="none", out=np.empty((4, 3)))
    with pytest.raises(ValueError, match="weight has shape"):
        fa.binary_cross_entropy_with_logits(x, x, weight=np.ones(5))
    with pytest.raises(ValueError, match="label_smoothing"):
        fa.cross_entropy_and_grad(x, da.zeros(4, dtype=np.int64, chunks=2), label_smoothing=2)


def test_losses_on_local_cluster(cluster_client):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((40, 7)).astype(np.float32)
    t = rng.integers(0, 7, 40)
    loss, grad = fa.cross_entropy_and_grad(da.from_array(x, chunks=(10, 4)),
                                           da.from_array(t, chunks=10))
    lv, gv = cluster_client.compute([loss, grad], sync=True)
    want_loss, want_grad = oracle("cross_entropy", x, t)
    check_loss(np.float32(lv), want_loss, np.dtype(np.float32), "cluster")
    check_grad(np.asarray(gv), want_grad, np.dtype(np.float32), "cluster")
    y = rng.uniform(0, 1, (40, 7)).astype(np.float32)
    got = cluster_client.compute(fa.binary_cross_entropy_with_logits(
        da.from_array(x, chunks=(10, 4)), da.from_array(y, chunks=(10, 4)), reduction="sum"),
        sync=True)
    check_loss(np.float32(got), oracle("binary_cross_entropy_with_logits", x, y,
                                       reduction="sum")[0], np.dtype(np.float32), "cluster bce")
