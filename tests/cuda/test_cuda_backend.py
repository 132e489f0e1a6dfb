"""The CUDA backend against the float64 / longdouble oracles (tests/oracle.py).

Runs under the CUDA simulator (``tests/test_cuda.py`` starts it) or on a real GPU.  Under the
simulator kernels run as Python with float64 rules, one Python thread per CUDA thread: inputs are
small (<= ~1000 elements) and finite, and the block/grid shapes are varied so that grid-stride
loops, row loops and shared-memory reductions take every path.  Everything in the op matrix is
parametrised from the registry, so ops added there are tested here without edits.

Tests marked ``gpu`` need a real GPU (inf/NaN, libdevice ULP bounds, large arrays, CuPy and
PyTorch interop) and skip under the simulator.
"""

from __future__ import annotations

import math
import os
import zlib

import numpy as np
import pytest
from numba import cuda

import fastact as fa
from fastact import _registry
from fastact.kernels import numba_cuda as nc

import oracle

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM", "").strip() == "1"
LIBDEVICE_ULPS = 2  # CUDA libdevice transcendental functions: +2 ULP over the CPU bounds

gpu = pytest.mark.gpu
needs_gpu = pytest.mark.skipif(SIMULATED, reason="needs a real CUDA GPU (this run uses the CUDA "
                               "simulator, which computes with float64 Python rules)")

ELEMENTWISE = _registry.elementwise_ops()
DTYPES = (np.float32, np.float64)


def rng_for(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def dev(a):
    return cuda.to_device(np.array(a, order="C"))  # (ascontiguousarray makes 0-d 1-d)


def host(d):
    return d.copy_to_host()


def is_numba_device(obj) -> bool:
    """A Numba device array (or the simulator's)."""
    return type(obj).__module__.startswith("numba") and hasattr(obj, "copy_to_host")


def assert_device_result(res, shape, dtype, what):
    assert is_numba_device(res), f"{what}: returned {type(res).__name__}, not a device array"
    assert tuple(res.shape) == tuple(shape), f"{what}: shape {res.shape}, expected {shape}"
    assert np.dtype(res.dtype) == np.dtype(dtype), f"{what}: dtype {res.dtype}, expected {dtype}"
    assert res.is_c_contiguous(), f"{what}: result is not C-contiguous"


# ------------------------------------------------------------------------------------------------
# parameters and inputs
# ------------------------------------------------------------------------------------------------

def param_sets(spec: _registry.OpSpec) -> list[dict]:
    """Defaults, plus one non-default value per parameter (every choice of a string one)."""
    base = {}
    for p in spec.params:
        if p.choices:
            base[p.name] = p.default if p.default is not None else p.choices[0]
        elif p.required:
            base[p.name] = 0.5
        else:
            base[p.name] = p.default
    sets = [dict(base)]
    for p in spec.params:
        if p.choices:
            sets += [{**base, p.name: c} for c in p.choices if c != base[p.name]]
        else:
            v = base[p.name]
            alt = 0.3 if v == 0 else (v * 0.5 if p.check in ("positive", "nonnegative")
                                      else -v * 0.5)
            sets.append({**base, p.name: alt})
    return sets


def elementwise_inputs(spec, dtype, n=203, key=()):
    lo, hi = spec.domain
    lo, hi = max(lo, -8.0), min(hi, 8.0)  # finite: the simulator's math.exp raises on overflow
    rng = rng_for(spec.name, np.dtype(dtype).name, n, *key)
    x = rng.uniform(lo, hi, n).astype(dtype)
    x[: min(n, 4)] = np.array([0.0, -0.0, 1.0, -1.0], dtype)[: min(n, 4)]
    g = rng.uniform(-2, 2, n).astype(dtype)
    return x, g


def ew_cases():
    for spec in ELEMENTWISE:
        for params in param_sets(spec):
            pid = ",".join(f"{k}={v}" for k, v in params.items())
            forms = list(spec.forms)
            if spec.y_backward is not None and spec.y_backward(
                    {k: v for k, v in params.items() if not isinstance(v, str)}):
                forms.append("backward_from_y")
            for form in forms:
                yield pytest.param(spec, form, params, id=f"{spec.name}-{form}-{pid}".rstrip("-"))


def check_elementwise(spec, form, params, dtype, got, x, g, y=None, extra_ulps=LIBDEVICE_ULPS):
    dtype = np.dtype(dtype)
    what = f"{spec.name} {form} {params} dtype={dtype.name}"
    if form == "and_derivative":
        parts = [("forward", got[0]), ("derivative", got[1])]
    elif form in ("backward", "backward_from_y"):
        parts = [("backward", got)]
    else:
        parts = [(form, got)]
    for part, res in parts:
        res = host(res) if not isinstance(res, np.ndarray) else res
        if part == "backward":
            ref = oracle.elementwise(spec, "backward", dtype, x=None if y is not None else x,
                                     grad=g, y=y, params=params)
        else:
            ref = oracle.elementwise(spec, part, dtype, x=x, params=params)
        ulps = oracle.part_ulps(spec, part, dtype)
        oracle.assert_close(f"{what} [{part}]", res, ref, dtype, inputs={"x": x},
                            ulps=ulps + (extra_ulps if ulps else 0),
                            floor=oracle.part_floor(part, ref, dtype))


def call_form(spec, form, xin, gin, yin, params, **kw):
    fn = getattr(fa, spec.public_name("backward" if form == "backward_from_y" else form))
    if form == "backward":
        return fn(gin, x=xin, **params, **kw)
    if form == "backward_from_y":
        return fn(gin, y=yin, **params, **kw)
    return fn(xin, **params, **kw)


def forward_y(spec, x, params):
    """The correctly rounded forward output (input of the y= backward)."""
    return oracle.round_to(oracle.elementwise(spec, "forward", x.dtype, x=x, params=params),
                           x.dtype)


# ------------------------------------------------------------------------------------------------
# availability and dispatch
# ------------------------------------------------------------------------------------------------

def test_cuda_backend_listed():
    assert "cuda" in fa.backends()
    info = fa.backend_info()["cuda"]
    assert info["available"] is True
    assert info["simulated"] is SIMULATED
    assert info["device"]


def test_automatic_dispatch_device_vs_host(monkeypatch):
    x = np.linspace(-2, 2, 9)
    assert fa.select_backend("sigmoid", dev(x)) == "cuda"
    assert fa.select_backend("sigmoid", x) != "cuda"
    # host arrays never reach a CUDA kernel unless asked
    calls = []
    monkeypatch.setattr(nc, "sigmoid_forward", lambda *a: calls.append(a))
    res = fa.sigmoid(x)
    assert isinstance(res, np.ndarray) and calls == []
    fa.sigmoid(x, backend="cuda")
    assert len(calls) == 1


def test_host_backend_refuses_device_arrays():
    d = dev(np.ones(4))
    for call in (lambda: fa.relu(d, backend="numba"), lambda: fa.softmax(d, backend="numpy"),
                 lambda: fa.prelu(d, 0.1, backend="numpy")):
        with pytest.raises(TypeError, match="CUDA device array.*host arrays only"):
            call()
    with fa.use_backend("numpy"):
        with pytest.raises(TypeError, match="backend 'numpy'"):
            fa.tanh(d)
    with fa.use_backend("cuda"):
        assert is_numba_device(fa.tanh(d))


def test_mixed_host_and_device_inputs():
    x = np.ones(4)
    with pytest.raises(TypeError, match="fastact.sigmoid_backward: x is a host ndarray but grad "
                                        "is a CUDA device array"):
        fa.sigmoid_backward(dev(x), x=x)
    with pytest.raises(TypeError, match="fastact.softmax_backward: y is a host"):
        fa.softmax_backward(dev(x), y=x)


# ------------------------------------------------------------------------------------------------
# elementwise: every op, form and parameter set of the registry
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("spec, form, params", list(ew_cases()))
def test_elementwise_device(spec, form, params, dtype):
    x, g = elementwise_inputs(spec, dtype)
    y = forward_y(spec, x, params) if form == "backward_from_y" else None
    dx, dg, dy = dev(x), dev(g), (dev(y) if y is not None else None)
    got = call_form(spec, form, dx, dg, dy, params)
    results = got if form == "and_derivative" else (got,)
    for r in results:
        assert_device_result(r, x.shape, dtype, f"{spec.name} {form}")
    # inputs untouched
    np.testing.assert_array_equal(host(dx), x)
    np.testing.assert_array_equal(host(dg), g)
    check_elementwise(spec, form, params, dtype, got, x, g, y)


@pytest.mark.parametrize("spec, form, params", [
    c for c in ew_cases() if c.values[2] == param_sets(c.values[0])[0]])
def test_elementwise_host_input_backend_cuda(spec, form, params):
    """backend='cuda' with host arrays: copied in, computed, copied out; inputs never written;
    a host result."""
    dtype = np.float32
    x, g = elementwise_inputs(spec, dtype, n=57, key=("host",))
    y = forward_y(spec, x, params) if form == "backward_from_y" else None
    before = [a.copy() for a in (x, g) + ((y,) if y is not None else ())]
    got = call_form(spec, form, x, g, y, params, backend="cuda")
    for a, b in zip((x, g) + ((y,) if y is not None else ()), before):
        np.testing.assert_array_equal(a, b)
    for r in (got if form == "and_derivative" else (got,)):
        assert isinstance(r, np.ndarray) and r.shape == x.shape and r.dtype == dtype
    check_elementwise(spec, form, params, dtype, got, x, g, y)


@pytest.mark.parametrize("threads, max_blocks", [(1, 1), (32, 1), (32, 4), (64, 3)])
@pytest.mark.parametrize("n", [1, 31, 33, 257, 1000])
def test_elementwise_launch_shapes(monkeypatch, threads, max_blocks, n):
    """Grid-stride loops cover every element for any block/grid shape (fewer threads than
    elements, more threads than elements, partial last block)."""
    monkeypatch.setattr(nc, "ELEMENTWISE_THREADS", threads)
    monkeypatch.setattr(nc, "ELEMENTWISE_MAX_BLOCKS", max_blocks)
    spec = _registry.get("sigmoid")
    x, g = elementwise_inputs(spec, np.float64, n=n, key=("launch",))
    got = fa.sigmoid_backward(dev(g), x=dev(x))
    check_elementwise(spec, "backward", {}, np.float64, got, x, g)
    got = fa.relu(dev(x))
    np.testing.assert_array_equal(host(got), np.where(x > 0, x, 0.0))


def test_elementwise_float16_device():
    spec = _registry.get("sigmoid")
    x = np.linspace(-6, 6, 101).astype(np.float16)
    got = fa.sigmoid(dev(x))
    assert_device_result(got, x.shape, np.float16, "sigmoid float16")
    ref = oracle.elementwise(spec, "forward", np.float16, x=x)
    oracle.assert_close("sigmoid float16", host(got), ref, np.float16, ulps=1,
                        floor=oracle.tiny(np.float16))
    y, d = fa.tanh_and_derivative(dev(x))
    assert np.dtype(y.dtype) == np.float16 and np.dtype(d.dtype) == np.float16


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_elementwise_views_and_shapes(dtype):
    """Non-contiguous, transposed, 0-d and empty device inputs; results C-contiguous."""
    spec = _registry.get("elu")
    base = np.linspace(-3, 3, 60).astype(dtype).reshape(3, 4, 5)
    db = dev(base)
    for view, hv in ((db[:, ::2, 1:], base[:, ::2, 1:]), (db.T, base.T),
                     (db[1], base[1]), (db[::-1], base[::-1])):
        got = fa.elu(view, alpha=0.7)
        assert_device_result(got, hv.shape, dtype, "elu view")
        check_elementwise(spec, "forward", {"alpha": 0.7}, dtype, got, np.array(hv), None)
    np.testing.assert_array_equal(host(db), base)
    zero_d = fa.elu(dev(np.array(-1.5, dtype)))
    assert tuple(zero_d.shape) == ()
    np.testing.assert_allclose(host(zero_d), np.expm1(-1.5), rtol=1e-6)
    empty = fa.elu_and_derivative(dev(np.zeros((0, 3), dtype)))
    assert all(tuple(e.shape) == (0, 3) for e in empty)


# ------------------------------------------------------------------------------------------------
# out= on the device
# ------------------------------------------------------------------------------------------------

def test_out_contract_device():
    x = np.linspace(-2, 2, 40).astype(np.float32)
    ref = fa.tanh(x)  # only used for in-place comparisons of the same backend run below
    dx = dev(x)
    out = cuda.device_array(40, np.float32)
    assert fa.tanh(dx, out=out) is out
    oracle.assert_close("tanh out=", host(out), oracle.elementwise(_registry.get("tanh"),
                        "forward", np.float32, x=x), np.float32, ulps=2 + LIBDEVICE_ULPS,
                        floor=oracle.tiny(np.float32))
    # in place
    a = dev(x)
    assert fa.tanh(a, out=a) is a
    np.testing.assert_array_equal(host(a), host(out))
    # strided out: written through its strides, the gaps untouched
    big = cuda.to_device(np.full(80, 7.0, np.float32))
    fa.tanh(dx, out=big[::2])
    hb = host(big)
    np.testing.assert_array_equal(hb[::2], host(out))
    assert (hb[1::2] == 7.0).all()
    # partial overlap with the input: still correct
    buf = cuda.to_device(np.concatenate([x, np.zeros(5, np.float32)]))
    fa.tanh(buf[:40], out=buf[5:45])
    np.testing.assert_array_equal(host(buf)[5:45], host(out))
    # errors: the host messages
    with pytest.raises(ValueError, match=r"fastact.tanh: out has shape \(39,\), expected \(40,\)"):
        fa.tanh(dx, out=cuda.device_array(39, np.float32))
    with pytest.raises(TypeError, match="fastact.tanh: out has dtype float64, expected float32"):
        fa.tanh(dx, out=cuda.device_array(40, np.float64))
    with pytest.raises(TypeError, match="fastact.tanh: out must be a CUDA device array"):
        fa.tanh(dx, out=np.empty(40, np.float32))
    pair = cuda.device_array(40, np.float32)
    with pytest.raises(ValueError, match="out\\[0\\] and out\\[1\\] overlap"):
        fa.tanh_and_derivative(dx, out=(pair, pair))
    y, d = fa.tanh_and_derivative(dx, out=(None, pair))
    assert d is pair and is_numba_device(y)
    del ref


# ------------------------------------------------------------------------------------------------
# errors: identical to the host ones
# ------------------------------------------------------------------------------------------------

def _error_of(call):
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - comparing what each path raises
        return type(exc), str(exc)
    return None


def _error_cases(mk):
    x = mk(np.ones(6))
    x2 = mk(np.ones((2, 3)))
    return {
        "int dtype": lambda: fa.sigmoid(mk(np.arange(6))),
        "shape mismatch": lambda: fa.sigmoid_backward(mk(np.ones(5)), x=x),
        "nan param": lambda: fa.elu(x, alpha=float("nan")),
        "bool param": lambda: fa.leaky_relu(x, negative_slope=True),
        "y rule": lambda: fa.leaky_relu_backward(x, y=x, negative_slope=-0.5),
        "x and y": lambda: fa.relu_backward(x, x=x, y=x),
        "axis": lambda: fa.softmax(x2, axis=2),
        "axis type": lambda: fa.log_softmax(x2, axis=1.0),
        "temperature": lambda: fa.softmax(x2, temperature=-1),
        "where dtype": lambda: fa.softmax(x2, where=np.ones((2, 3), int)),
        "where shape": lambda: fa.softmax(x2, where=np.ones((4,), bool)),
        "row shapes": lambda: fa.softmax_backward(x2, y=mk(np.ones((3, 2)))),
        "row dtype": lambda: fa.log_softmax(mk(np.ones((2, 3), np.int32))),
        "prelu channels": lambda: fa.prelu(x2, np.ones(4)),
        "prelu 2-d weight": lambda: fa.prelu(x2, np.ones((3, 1))),
        "prelu weight type": lambda: fa.prelu(x2, "a"),
        "out tuple": lambda: fa.prelu_backward(x2, x=x2, weight=0.1, out=3),
    }


@pytest.mark.parametrize("case", list(_error_cases(lambda a: a)))
def test_errors_identical_to_host(case):
    host_err = _error_of(_error_cases(lambda a: a)[case])
    dev_err = _error_of(_error_cases(dev)[case])
    assert host_err is not None, f"{case}: the host call did not raise"
    assert dev_err == host_err, f"{case}: device {dev_err} != host {host_err}"


def test_validation_happens_before_any_write():
    x = np.linspace(-1, 1, 8)
    out = cuda.to_device(np.full(8, 3.0))
    with pytest.raises(ValueError):
        fa.leaky_relu_backward(dev(x), y=dev(x), negative_slope=-1.0, out=out)
    assert (host(out) == 3.0).all()


# ------------------------------------------------------------------------------------------------
# prelu
# ------------------------------------------------------------------------------------------------

PRELU_SHAPES = [(7,), (4, 3), (2, 3, 5), (2, 3, 2, 2)]


def prelu_weights(shape, kind, dtype):
    if kind == "float":
        return -0.25
    if kind == "size1":
        return np.array([0.3], dtype)
    if kind == "0d":
        return np.array(0.2, dtype)
    if kind == "channels":
        return np.linspace(-0.5, 1.5, shape[1]).astype(dtype)
    return dev(np.linspace(-0.5, 1.5, shape[1]).astype(dtype))  # device weight


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape, wkind", [
    (shape, wkind) for shape in PRELU_SHAPES
    for wkind in ("float", "size1", "0d", "channels", "device")
    if len(shape) >= 2 or wkind not in ("channels", "device")])  # per-channel needs axis 1
def test_prelu_device(shape, wkind, dtype, monkeypatch):
    monkeypatch.setattr(nc, "PRELU_CHUNK", 4)  # several partial-sum blocks per channel row
    spec = _registry.get("prelu")
    rng = rng_for("prelu", shape, wkind, np.dtype(dtype).name)
    x = rng.uniform(-3, 3, shape).astype(dtype)
    g = rng.uniform(-2, 2, shape).astype(dtype)
    w = prelu_weights(shape, wkind, dtype)
    w_host = host(w) if wkind == "device" else w
    dx, dg = dev(x), dev(g)
    got = fa.prelu(dx, w)
    assert_device_result(got, shape, dtype, "prelu")
    ref = oracle.prelu("forward", dtype, x=x, weight=w_host)
    oracle.assert_close("prelu", host(got), ref, dtype, ulps=0)
    y, d = fa.prelu_and_derivative(dx, w)
    oracle.assert_close("prelu_and_derivative[y]", host(y), ref, dtype, ulps=0)
    oracle.assert_close("prelu_and_derivative[d]", host(d),
                        oracle.prelu("derivative", dtype, x=x, weight=w_host), dtype, ulps=0)
    oracle.assert_close("prelu_derivative", host(fa.prelu_derivative(dx, w)),
                        oracle.prelu("derivative", dtype, x=x, weight=w_host), dtype, ulps=0)
    gx, gw = fa.prelu_backward(dg, x=dx, weight=w)
    assert_device_result(gx, shape, dtype, "prelu_backward grad_x")
    oracle.assert_close("prelu_backward[grad_x]", host(gx),
                        oracle.prelu("backward", dtype, x=x, weight=w_host, grad=g), dtype,
                        ulps=0)
    wshape = np.shape(w_host)
    wdtype = np.dtype(dtype) if wkind == "float" else np.asarray(w_host).dtype
    assert tuple(gw.shape) == wshape and np.dtype(gw.dtype) == wdtype
    assert is_numba_device(gw)
    total, absum = oracle.prelu_grad_weight(g, x, w_host)
    rtol = {"float32": 1e-6, "float64": 1e-12}[wdtype.name]
    oracle.assert_close("prelu_backward[grad_weight]", host(gw), total, wdtype,
                        allowed=rtol * absum, floor=oracle.tiny(wdtype))
    np.testing.assert_array_equal(host(dx), x)
    np.testing.assert_array_equal(host(dg), g)


def test_prelu_host_input_backend_cuda_and_out():
    x = np.linspace(-2, 2, 24).reshape(2, 3, 4)
    g = np.linspace(1, 3, 24).reshape(2, 3, 4)
    w = np.array([0.1, 0.2, 0.3])
    before = x.copy(), g.copy(), w.copy()
    gx, gw = fa.prelu_backward(g, x=x, weight=w, backend="cuda")
    assert isinstance(gx, np.ndarray) and isinstance(gw, np.ndarray)
    for a, b in zip((x, g, w), before):
        np.testing.assert_array_equal(a, b)
    oracle.assert_close("prelu_backward host", gx, oracle.prelu("backward", np.float64, x=x,
                        weight=w, grad=g), np.float64, ulps=0)
    total, absum = oracle.prelu_grad_weight(g, x, w)
    oracle.assert_close("grad_weight host", gw, total, np.float64, allowed=1e-12 * absum)
    out0, out1 = cuda.device_array((2, 3, 4)), cuda.device_array(3)
    r0, r1 = fa.prelu_backward(dev(g), x=dev(x), weight=w, out=(out0, out1))
    assert r0 is out0 and r1 is out1
    np.testing.assert_array_equal(host(out0), gx)


# ------------------------------------------------------------------------------------------------
# softmax family
# ------------------------------------------------------------------------------------------------

ROWS = [_s for _s in _registry.OPS if _s.kind == "rowwise"]

ROW_CASES = [
    # (shape, axis, mask, temperature)
    ((3, 5), -1, None, 1.0),
    ((2, 40), -1, "random", 0.5),       # rows longer than a block
    ((4, 300), 1, "rowmasked", 3.0),    # much longer rows; one fully masked row
    ((4, 3, 7), 0, "random", 1.0),      # non-last axes: strided rows
    ((4, 3, 7), 1, "broadcast", 2.0),
    ((2, 3, 2, 6), 2, None, 1.0),
    ((), -1, None, 1.0),                # 0-d: one row of one
    ((5, 1), -1, None, 0.7),
    ((0, 4), -1, None, 1.0),            # empty
]


def row_mask(shape, axis, kind, key):
    rng = rng_for("mask", shape, axis, kind, *key)
    if kind is None or not shape:
        return None
    if kind == "random":
        return rng.random(shape) > 0.3
    if kind == "broadcast":
        return rng.random(shape[1:]) > 0.3
    m = rng.random(shape) > 0.3
    idx = [slice(None)] * len(shape)
    idx[0] = 1
    m[tuple(idx)] = False  # a fully masked row along axis 1
    return m


def check_rows(name, form, dtype, got, *, x=None, g=None, y=None, axis, where, temperature,
               keepdims=False):
    dtype = np.dtype(dtype)
    log = name == "log_softmax"
    what = f"{name} {form} axis={axis} T={temperature} dtype={dtype.name}"
    got = host(got) if not isinstance(got, np.ndarray) else got
    if form == "forward":
        ref = oracle.rowwise(name, "forward", dtype, x=x, where=where, axis=axis,
                             temperature=temperature, keepdims=keepdims)
        allowed, exact = oracle.row_allowed(name, x, ref, dtype, axis=axis, where=where,
                                            temperature=temperature, keepdims=keepdims)
        oracle.assert_close(what, got, ref, dtype, inputs={"x": x}, allowed=allowed,
                            floor=oracle.tiny(dtype), exact_mask=exact)
    else:
        ref = oracle.rowwise(name, "backward", dtype, grad=g, y=y, where=where, axis=axis,
                             temperature=temperature)
        allowed, exact = oracle.softmax_backward_allowed(g, y, ref, dtype, axis=axis,
                                                         where=where, temperature=temperature,
                                                         log=log)
        oracle.assert_close(what, got, ref, dtype, inputs={"y": y, "grad": g}, allowed=allowed,
                            ulps=8 + LIBDEVICE_ULPS, floor=oracle.derivative_floor(ref, dtype),
                            exact_mask=exact)


def row_inputs(name, shape, axis, mask, temperature, dtype):
    rng = rng_for(name, shape, axis, mask, np.dtype(dtype).name)
    x = rng.uniform(-10, 10, shape).astype(dtype)
    where = row_mask(shape, axis, mask, (name,))
    y = oracle.round_to(oracle.rowwise(name, "forward", dtype, x=x, where=where, axis=axis,
                                       temperature=temperature), dtype)
    g = rng.uniform(-2, 2, shape).astype(dtype)
    return np.asarray(x), where, np.asarray(y), np.asarray(g)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", ROW_CASES, ids=lambda c: f"{c[0]}-ax{c[1]}-{c[2]}-T{c[3]}")
@pytest.mark.parametrize("spec, form", [pytest.param(s, f, id=f"{s.name}-{f}")
                                        for s in ROWS for f in s.forms])
def test_rowwise_device(spec, form, case, dtype):
    shape, axis, mask, temperature = case
    x, where, y, g = row_inputs(spec.name, shape, axis, mask, temperature, dtype)
    kw = dict(axis=axis, where=where, temperature=temperature)
    if form == "forward":
        dx = dev(x)
        want_shape = shape
        if _registry.reduces(spec):  # logsumexp: one value per row; keepdims both ways
            kw["keepdims"] = np.dtype(dtype) == np.float64
            want_shape = oracle.reduced_shape(shape, axis, kw["keepdims"])
        got = getattr(fa, spec.public_name(form))(dx, **kw)
        assert_device_result(got, want_shape, dtype, spec.name)
        np.testing.assert_array_equal(host(dx), x)
        check_rows(spec.name, form, dtype, got, x=x, **kw)
    else:
        dg, dy = dev(g), dev(y)
        got = getattr(fa, spec.public_name(form))(dg, y=dy, **kw)
        assert_device_result(got, shape, dtype, spec.name)
        np.testing.assert_array_equal(host(dg), g)
        check_rows(spec.name, form, dtype, got, g=g, y=y, **kw)


@pytest.mark.parametrize("threads, max_blocks", [(1, 1), (4, 2), (64, 3)])
def test_rowwise_block_shapes(monkeypatch, threads, max_blocks):
    """One thread per row, fewer rows than blocks, more threads than row elements; shared-memory
    trees of several depths; grid-stride over rows."""
    monkeypatch.setattr(nc, "ROW_THREADS", threads)
    monkeypatch.setattr(nc, "ROW_MAX_BLOCKS", max_blocks)
    for name in ("softmax", "log_softmax"):
        x, where, y, g = row_inputs(name, (5, 37), -1, "rowmasked", 0.9, np.float64)
        kw = dict(axis=-1, where=where, temperature=0.9)
        check_rows(name, "forward", np.float64, fa.softmax(dev(x), **kw) if name == "softmax"
                   else fa.log_softmax(dev(x), **kw), x=x, **kw)
        bwd = fa.softmax_backward if name == "softmax" else fa.log_softmax_backward
        check_rows(name, "backward", np.float64, bwd(dev(g), y=dev(y), **kw), g=g, y=y, **kw)


def test_rowwise_masks_and_special_rows():
    x = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    where = np.array([[True, False, True], [False, False, False]])
    s = host(fa.softmax(dev(x), where=where))
    ls = host(fa.log_softmax(dev(x), where=where))
    assert (s[1] == 0).all() and np.isneginf(ls[1]).all()  # fully masked: 0 / -inf, not NaN
    assert s[0, 1] == 0 and np.isneginf(ls[0, 1])
    # a device mask of the input's shape
    s2 = host(fa.softmax(dev(x), where=dev(where)))
    np.testing.assert_array_equal(s, s2)
    with pytest.raises(ValueError, match="device mask must have the shape"):
        fa.softmax(dev(x), where=dev(where[0]))
    g = host(fa.softmax_backward(dev(np.ones_like(x)), y=dev(s), where=where))
    assert (g[1] == 0).all() and g[0, 1] == 0


def test_rowwise_host_input_backend_cuda_and_out():
    x, where, y, g = row_inputs("log_softmax", (3, 4, 5), 1, "random", 1.3, np.float32)
    before = x.copy()
    got = fa.log_softmax(x, axis=1, where=where, temperature=1.3, backend="cuda")
    np.testing.assert_array_equal(x, before)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    check_rows("log_softmax", "forward", np.float32, got, x=x, axis=1, where=where,
               temperature=1.3)
    out = cuda.device_array((3, 4, 5), np.float32)
    res = fa.log_softmax(dev(x), axis=1, where=where, temperature=1.3, out=out)
    assert res is out
    np.testing.assert_array_equal(host(out), got)
    # in place on the device, and a transposed (strided) out
    a = dev(x)
    fa.log_softmax(a, axis=1, where=where, temperature=1.3, out=a)
    np.testing.assert_array_equal(host(a), got)
    big = cuda.device_array((5, 4, 3), np.float32)
    fa.log_softmax(dev(x), axis=1, where=where, temperature=1.3, out=big.T)
    np.testing.assert_array_equal(host(big).T, got)
    with pytest.raises(ValueError, match=r"fastact.log_softmax: out has shape \(3, 4\), "
                                         r"expected \(3, 4, 5\)"):
        fa.log_softmax(dev(x), out=cuda.device_array((3, 4), np.float32))


# ------------------------------------------------------------------------------------------------
# real GPU only
# ------------------------------------------------------------------------------------------------

@gpu
@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("spec, form, params", list(ew_cases()))
def test_elementwise_specials_and_ulps_gpu(spec, form, params, dtype):
    """Special values (inf, NaN, subnormals, overflow boundaries) and many random points over the
    whole domain, against the oracle's bound + 2 ULP (libdevice)."""
    rng = rng_for("gpu", spec.name, form)
    x = oracle.random_values(rng, 20000, np.dtype(dtype), spec.domain)
    g = rng.uniform(-2, 2, x.size).astype(dtype)
    y = forward_y(spec, x, params) if form == "backward_from_y" else None
    got = call_form(spec, form, dev(x), dev(g), dev(y) if y is not None else None, params)
    cuda.synchronize()
    check_elementwise(spec, form, params, dtype, got, x, g, y)


@gpu
@needs_gpu
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_rowwise_specials_gpu(name):
    x = np.array([[0.0, np.inf, 1.0], [-np.inf, -np.inf, -np.inf], [np.nan, 1.0, 2.0],
                  [-np.inf, 0.0, 1.0]], np.float32)
    got = host(getattr(fa, name)(dev(x)))
    assert np.isnan(got[0]).all() and np.isnan(got[1]).all() and np.isnan(got[2]).all()
    check_rows(name, "forward", np.float32, got[3:], x=x[3:], axis=-1, where=None,
               temperature=1.0)
    rng = rng_for("gpu-rows", name)
    for width in (32, 1025, 4096, 32000):
        xs = rng.normal(0, 10, (8, width)).astype(np.float32)
        check_rows(name, "forward", np.float32, getattr(fa, name)(dev(xs)), x=xs, axis=-1,
                   where=None, temperature=1.0)


@gpu
@needs_gpu
@pytest.mark.slow
def test_large_array_64bit_indices_gpu():
    n = 2**31 + 1024
    free, _ = cuda.current_context().get_memory_info()
    if free < 3 * 4 * n:
        pytest.skip("needs ~26 GB of free GPU memory")
    d = cuda.device_array(n, np.float32)
    fa.relu(d, out=d)  # uninitialised is fine: relu is exact; check the tail was written
    d[-8:] = np.full(8, -1.0, np.float32)
    fa.relu(d, out=d)
    assert (d[-8:].copy_to_host() == 0).all()


@gpu
@needs_gpu
def test_cupy_interop_gpu():
    cp = pytest.importorskip("cupy", reason="CuPy is not installed on this GPU machine")
    x = cp.linspace(-3, 3, 1000, dtype=cp.float32)
    y = fa.sigmoid(x)
    assert isinstance(y, cp.ndarray) and y.dtype == cp.float32
    check_elementwise(_registry.get("sigmoid"), "forward", {}, np.float32, cp.asnumpy(y),
                      cp.asnumpy(x), None)
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        z = fa.softmax(x.reshape(10, 100), axis=0)
    s.synchronize()
    assert isinstance(z, cp.ndarray)
    check_rows("softmax", "forward", np.float32, cp.asnumpy(z), x=cp.asnumpy(x).reshape(10, 100),
               axis=0, where=None, temperature=1.0)


@gpu
@needs_gpu
def test_torch_interop_gpu():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed on this GPU machine")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA support here")
    x = torch.linspace(-3, 3, 1000, device="cuda", dtype=torch.float32)
    y = fa.tanh(x)
    assert isinstance(y, torch.Tensor) and y.is_cuda and y.dtype == torch.float32
    check_elementwise(_registry.get("tanh"), "forward", {}, np.float32, y.cpu().numpy(),
                      x.cpu().numpy(), None)
    with torch.cuda.stream(torch.cuda.Stream()):
        z = fa.log_softmax(x.reshape(10, 100))
    torch.cuda.synchronize()
    assert isinstance(z, torch.Tensor)
    with pytest.raises(TypeError, match="must be a float16, float32 or float64 array"):
        fa.relu(torch.arange(4, device="cuda"))


# ------------------------------------------------------------------------------------------------
# row-kernel modes prepared for softmin / logsumexp (the API ops come from another branch)
# ------------------------------------------------------------------------------------------------

def _fsum_rows_lse(x, keep, T):
    out = []
    for xr, kr in zip(x, keep):
        v = [float(a) / T for a, k in zip(xr, kr) if k]
        if not v:
            out.append(-math.inf)
            continue
        m = max(v)
        out.append(T * (m + math.log(math.fsum(math.exp(a - m) for a in v))))
    return np.array(out)


def test_row_kernel_softmin_and_logsumexp_modes():
    rng = rng_for("modes")
    x = rng.uniform(-5, 5, (4, 23))
    keep = rng.random((4, 23)) > 0.3
    keep[2] = False
    T = 1.7
    x3, m3 = dev(x.reshape(4, 23, 1)), dev(keep.astype(np.uint8).reshape(4, 23, 1))
    # softmin = softmax(-x)
    out = cuda.device_array((4, 23, 1))
    nc.rows_forward(x3, m3, T, out, False, sign=-1.0)
    ref = oracle.rowwise("softmax", "forward", np.float64, x=-x, where=keep, temperature=T)
    allowed, exact = oracle.softmax_allowed(-x, ref, np.float64, axis=-1, where=keep,
                                            temperature=T, log=False)
    oracle.assert_close("softmin", host(out).reshape(4, 23), ref, np.float64, allowed=allowed,
                        floor=oracle.tiny(np.float64), exact_mask=exact)
    # the host-convention kernel softmin_forward(x, mask, temperature, out), (rows, C) arrays
    hout = np.empty((4, 23))
    nc.softmin_forward(x, keep.astype(np.uint8), T, hout)
    oracle.assert_close("softmin_forward", hout, ref, np.float64, allowed=allowed,
                        floor=oracle.tiny(np.float64), exact_mask=exact)
    # its backward: d softmin = -(softmax backward at -x)
    y = oracle.round_to(ref, np.float64)
    g = rng.uniform(-1, 1, (4, 23))
    nc.rows_backward(dev(g.reshape(4, 23, 1)), dev(y.reshape(4, 23, 1)), m3, T, out, False,
                     sign=-1.0)
    bref = -oracle.rowwise("softmax", "backward", np.float64, grad=g, y=y, where=keep,
                           temperature=T)
    allowed, exact = oracle.softmax_backward_allowed(g, y, bref, np.float64, axis=-1,
                                                     where=keep, temperature=T, log=False)
    oracle.assert_close("softmin backward", host(out).reshape(4, 23), bref, np.float64,
                        allowed=allowed, ulps=10, floor=oracle.derivative_floor(bref, np.float64),
                        exact_mask=exact)
    # logsumexp, one value per row (fully masked: -inf)
    lse = cuda.device_array((4, 1, 1))
    nc.rows_forward(x3, m3, T, lse, False, logsumexp=True)
    got = host(lse).reshape(4)
    want = _fsum_rows_lse(x, keep, T)
    assert np.isneginf(got[2])
    np.testing.assert_allclose(got[[0, 1, 3]], want[[0, 1, 3]], rtol=8 * np.finfo(float).eps)


def test_cuda_module_kernels():
    """Every kernel of the elementwise, channel, gated, loss and softmax-family ops exists (generated
    or written); a registry kernel without a CUDA version raises a clear NotImplementedError
    (never an AttributeError) when the API asks for it."""
    covered = [k for op in _registry.OPS for k in op.kernel_names()
               if op.kind in ("elementwise", "channel", "gated", "loss") or op.name in nc.ROW_OPS]
    missing = [k for k in covered if not callable(getattr(nc, k, None))]
    assert not missing, f"numba_cuda lacks {missing}"
    for k in _registry.kernel_names():
        if k not in covered:
            with pytest.raises(NotImplementedError, match="no kernel"):
                getattr(nc, k)
    with pytest.raises(AttributeError):
        getattr(nc, "no_such_kernel_forward")


def test_polynomial_helpers_bound_to_libdevice():
    """The CPU backends' polynomial helpers are replaced by ``math.*`` on CUDA, by name, so new
    formulas written with them need no CUDA edit."""
    prims = nc._libdevice_primitives(["exp_poly", "exp_poly_single", "log1p_poly", "erfc_poly",
                                      "nosuch_poly", "sigmoid"])
    assert set(prims) == {"exp_poly", "exp_poly_single", "log1p_poly", "erfc_poly", "pow2",
                          "fma", "mul_add"}
    assert nc.FORMULAS["exp_poly"] is not None and "exp_poly" in nc._libdevice_primitives()

    exp_single, log1p, pow2 = prims["exp_poly_single"], prims["log1p_poly"], prims["pow2"]

    @cuda.jit
    def probe(x, out):
        i = cuda.grid(1)
        if i < x.size:
            out[0, i] = exp_single(x[i])
            out[1, i] = log1p(x[i])
            out[2, i] = pow2(3.0)

    x = np.array([-0.5, 0.0, 0.25, 2.0])
    out = cuda.device_array((3, 4))
    probe[1, 4](dev(x), out)
    got = host(out)
    np.testing.assert_allclose(got[0], np.exp(x), rtol=5e-16)  # libm vs libm: ~1 ULP
    np.testing.assert_allclose(got[1], np.log1p(x), rtol=5e-16)
    assert (got[2] == 8.0).all()


# ------------------------------------------------------------------------------------------------
# gated units: glu (any axis), swiglu, geglu on device arrays and with backend='cuda' on host
# ------------------------------------------------------------------------------------------------

GATED = _registry.gated_ops()


def _gated_reference(spec, dtype, gate, value, grad, params):
    act = _registry.get(spec.extra["gate"])
    f = oracle.elementwise(act, "forward", dtype, x=gate, params=params)
    d = oracle.elementwise(act, "derivative", dtype, x=gate, params=params).astype(f.dtype)
    v, g = oracle.upcast(value, f.dtype), oracle.upcast(grad, f.dtype)
    return f * v, g * v * d, g * f


def _gated_check(spec, what, got, ref, dtype, forward):
    ulps = (spec.bound if forward else spec.derivative_bound).ulps(np.dtype(dtype).name)
    floor = oracle.tiny(dtype) if forward else oracle.derivative_floor(ref, dtype)
    oracle.assert_close(what, got, ref, dtype, ulps=ulps + LIBDEVICE_ULPS, floor=floor)


@pytest.mark.parametrize("spec", GATED, ids=lambda s: s.name)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape,axis", [((5, 6), -1), ((4, 6, 5), 1), ((8, 2), 0),
                                        ((300,), 0)], ids=str)
def test_gated_on_device(spec, dtype, shape, axis):
    rng = rng_for("gated", spec.name, dtype, shape)
    params = {"approximate": "tanh"} if spec.params else {}
    x = rng.uniform(*spec.domain, shape).astype(dtype)
    if spec.extra["split"]:
        value, gate = np.split(x, 2, axis=axis)
        grad = rng.uniform(-2, 2, value.shape).astype(dtype)
        y = fa.glu(dev(x), axis=axis)
        gx = fa.glu_backward(dev(grad), x=dev(x), axis=axis)
        assert_device_result(y, value.shape, dtype, "glu")
        assert_device_result(gx, shape, dtype, "glu_backward")
        got_gv, got_gg = np.split(host(gx), 2, axis=axis)
        got = host(y)
    else:
        gate, value = x, rng.uniform(-3, 3, shape).astype(dtype)
        grad = rng.uniform(-2, 2, shape).astype(dtype)
        y = getattr(fa, spec.name)(dev(gate), dev(value), **params)
        got_gg, got_gv = getattr(fa, f"{spec.name}_backward")(dev(grad), a=dev(gate),
                                                              b=dev(value), **params)
        assert_device_result(y, shape, dtype, spec.name)
        assert_device_result(got_gg, shape, dtype, "grad_a")
        got, got_gg, got_gv = host(y), host(got_gg), host(got_gv)
    ref, ref_gg, ref_gv = _gated_reference(spec, dtype, gate, value, grad, params)
    _gated_check(spec, spec.name, got, ref, dtype, True)
    _gated_check(spec, "grad_gate", got_gg, ref_gg, dtype, False)
    _gated_check(spec, "grad_value", got_gv, ref_gv, dtype, False)


def test_gated_host_arrays_on_cuda_backend():
    """backend='cuda' with host arrays: whole buffers in and out (glu's halves are views of one
    buffer), the host inputs untouched, the same result as the host backends' oracle."""
    rng = rng_for("gated-host")
    x = rng.uniform(-4, 4, (6, 10))
    x0 = x.copy()
    grad = rng.uniform(-1, 1, (6, 5))
    spec = _registry.get("glu")
    value, gate = np.split(x, 2, axis=-1)
    ref, ref_gg, ref_gv = _gated_reference(spec, np.float64, gate, value, grad, {})
    y = fa.glu(x, backend="cuda")
    gx = fa.glu_backward(grad, x=x, backend="cuda")
    assert isinstance(y, np.ndarray) and isinstance(gx, np.ndarray)
    _gated_check(spec, "glu", y, ref, np.float64, True)
    _gated_check(spec, "glu grad_value", gx[:, :5], ref_gv, np.float64, False)
    _gated_check(spec, "glu grad_gate", gx[:, 5:], ref_gg, np.float64, False)
    np.testing.assert_array_equal(x, x0)
    ga, gb = fa.swiglu_backward(grad, a=gate, b=value, backend="cuda")
    want = fa.swiglu_backward(grad, a=gate, b=value, backend="numpy")
    np.testing.assert_allclose(ga, want[0], rtol=1e-14)
    np.testing.assert_allclose(gb, want[1], rtol=1e-14)


def test_gated_device_out_and_errors():
    a = dev(np.linspace(-3, 3, 12))
    b = dev(np.linspace(1, 2, 12))
    out = cuda.device_array(12)
    assert fa.swiglu(a, b, out=out) is out
    np.testing.assert_allclose(host(out), fa.swiglu(host(a), host(b)), rtol=1e-15)
    ga, gb = cuda.device_array(12), cuda.device_array(12)
    r = fa.geglu_backward(dev(np.ones(12)), a=a, b=b, out=(ga, gb))
    assert r[0] is ga and r[1] is gb
    with pytest.raises(ValueError, match="fastact.glu: x has odd size 3"):
        fa.glu(dev(np.ones((2, 3))))
    with pytest.raises(ValueError, match="fastact.swiglu: b has shape"):
        fa.swiglu(a, dev(np.ones(5)))
    with pytest.raises(TypeError, match="host"):
        fa.swiglu(a, np.ones(12))
    with pytest.raises(ValueError, match="approximate"):
        fa.geglu(a, b, approximate="x")
