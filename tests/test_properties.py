"""Property tests (hypothesis): arbitrary arrays and layouts against the oracle.

For arbitrary float32/float64 arrays (NaN, +-inf, subnormals, huge values, any shape up to 4-D)
seen through arbitrary views (basic slices with steps, negative steps, transposes, big-endian,
read-only), every backend agrees with the exact reference of ``tests/oracle.py`` within the
registry's bounds (DESIGN.md section 4); softmax rows sum to 1 within the bound; and the
derivative references agree with finite differences of the forward references.
"""

from __future__ import annotations

import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fastact as fa
from fastact import _registry

try:
    import oracle
except ImportError:  # pragma: no cover - tests/ imported as a package
    from tests import oracle

ELEMENTWISE = [op for op in _registry.OPS if op.kind == "elementwise"]
CHANNEL = [op for op in _registry.OPS if op.kind == "channel"]
ROWWISE = [op for op in _registry.OPS if op.kind == "rowwise"]

SETTINGS = settings(
    max_examples=50, deadline=None, database=None,
    # the ``backend`` fixture is a constant string per parametrisation: safe to share
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)

DTYPES = st.sampled_from([np.dtype(np.float32), np.dtype(np.float64)])


def floats(dtype, domain=(-8.0, 8.0)):
    """Any float of ``dtype`` (NaN, +-inf, subnormals included), or one in the op's domain."""
    width = np.dtype(dtype).itemsize * 8
    return st.one_of(
        st.floats(width=width, allow_nan=True, allow_infinity=True, allow_subnormal=True),
        st.floats(min_value=domain[0], max_value=domain[1], width=width),
    )


def grads(dtype):
    width = np.dtype(dtype).itemsize * 8
    return st.one_of(st.floats(min_value=-4, max_value=4, width=width),
                     st.sampled_from([0.0, -0.0, np.inf, -np.inf, np.nan]))


@st.composite
def arrays_with_layout(draw, dtype, domain=(-8.0, 8.0), min_dims=0, max_dims=3):
    """An array through a random view of a random base array."""
    base_shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=0,
                                       max_side=7))
    base = draw(hnp.arrays(dtype, base_shape, elements=floats(dtype, domain)))
    idx = draw(hnp.basic_indices(base_shape, min_dims=min_dims, allow_newaxis=False,
                                 allow_ellipsis=True))
    a = np.asarray(base[idx])
    if draw(st.booleans()):
        a = a.T
    how = draw(st.sampled_from(["view", "bigendian", "readonly", "fortran"]))
    if how == "bigendian":
        a = a.astype(a.dtype.newbyteorder(">"))
    elif how == "readonly":
        a = a.view()
        a.setflags(write=False)
    elif how == "fortran":
        a = np.asfortranarray(a)
    return a


def _cases(spec):
    out = []
    for form in spec.forms:
        out.append((form, False))
        if form == "backward" and spec.y_backward is not None and spec.y_backward(spec.defaults):
            out.append((form, True))
    return out


# ------------------------------------------------------------------------------------------------
# elementwise
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ELEMENTWISE, ids=lambda s: s.name)
@SETTINGS
@given(data=st.data())
def test_elementwise_matches_oracle(spec, backend, data):
    dtype = data.draw(DTYPES, label="dtype")
    form, use_y = data.draw(st.sampled_from(_cases(spec)), label="form, use_y")
    x = data.draw(arrays_with_layout(dtype, spec.domain), label="x")
    params = spec.defaults
    fn = getattr(fa, spec.public_name(form))
    what = f"{spec.public_name(form)} backend={backend} dtype={dtype.name}"
    nan_ok = None
    if form == "backward":
        g = data.draw(hnp.arrays(dtype, x.shape, elements=grads(dtype)), label="grad")
        if use_y:
            y = oracle.round_to(oracle.elementwise(spec, "forward", dtype, x=x), dtype)
            got = fn(g, y=y, backend=backend, **params)
            ref = oracle.elementwise(spec, "backward", dtype, grad=g, y=y)
            d = oracle.elementwise(spec, "backward", dtype, grad=np.ones(y.shape), y=y)
            inputs = {"y": y, "grad": g}
        else:
            got = fn(g, x=x, backend=backend, **params)
            ref = oracle.elementwise(spec, "backward", dtype, grad=g, x=x)
            d = oracle.elementwise(spec, "derivative", dtype, x=x)
            inputs = {"x": x, "grad": g}
        nan_ok = oracle.inf_times_underflow(g, d, dtype)
        results, parts, refs = (got,), ("backward",), (ref,)
    else:
        got = fn(x, backend=backend, **params)
        parts = oracle.FORM_PARTS[form]
        results = got if form == "and_derivative" else (got,)
        refs = [oracle.elementwise(spec, p, dtype, x=x) for p in parts]
        inputs = {"x": x}
    for part, res, ref in zip(parts, results, refs):
        assert res.dtype == dtype and res.shape == x.shape, what
        oracle.assert_close(f"{what} [{part}]", res, ref, dtype, inputs=inputs,
                            ulps=oracle.part_ulps(spec, part, dtype),
                            floor=oracle.part_floor(part, ref, dtype), nan_ok=nan_ok)


# ------------------------------------------------------------------------------------------------
# prelu
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", CHANNEL, ids=lambda s: s.name)
@SETTINGS
@given(data=st.data())
def test_prelu_matches_oracle(spec, backend, data):
    dtype = data.draw(DTYPES, label="dtype")
    form = data.draw(st.sampled_from(spec.forms), label="form")
    x = data.draw(arrays_with_layout(dtype, max_dims=4), label="x")
    kinds = ["float", "0d", "size1"] + (["C"] if x.ndim >= 2 else [])
    kind = data.draw(st.sampled_from(kinds), label="weight kind")
    wvals = st.floats(min_value=-2, max_value=2, width=dtype.itemsize * 8)
    if kind == "float":
        weight = data.draw(wvals, label="weight")
    elif kind == "0d":
        weight = np.array(data.draw(wvals), dtype)
    else:
        weight = data.draw(hnp.arrays(dtype, 1 if kind == "size1" else x.shape[1],
                                      elements=wvals), label="weight")
    fn = getattr(fa, spec.public_name(form))
    what = f"{spec.public_name(form)} weight={kind} backend={backend} dtype={dtype.name}"
    if form == "backward":
        g = data.draw(hnp.arrays(dtype, x.shape, elements=grads(dtype)), label="grad")
        gx, gw = fn(g, x=x, weight=weight, backend=backend)
        ref = oracle.prelu("backward", dtype, x=x, weight=weight, grad=g)
        oracle.assert_close(f"{what} [grad_x]", gx, ref, dtype, inputs={"x": x, "grad": g},
                            ulps=oracle.part_ulps(spec, "backward", dtype),
                            floor=oracle.part_floor("backward", ref, dtype))
        wdtype = oracle.native(weight.dtype) if isinstance(weight, np.ndarray) else dtype
        assert gw.shape == np.shape(weight) and gw.dtype == wdtype, what
        total, absum = oracle.prelu_grad_weight(g, x, weight)
        rtol = {"float32": 1e-6, "float64": 1e-12}[wdtype.name]
        with oracle.quiet():
            allowed = rtol * absum
        oracle.assert_close(f"{what} [grad_weight]", gw, total, wdtype, allowed=allowed,
                            floor=oracle.tiny(wdtype))
        return
    got = fn(x, weight, backend=backend)
    results = got if form == "and_derivative" else (got,)
    for part, res in zip(oracle.FORM_PARTS[form], results):
        ref = oracle.prelu(part, dtype, x=x, weight=weight)
        oracle.assert_close(f"{what} [{part}]", res, ref, dtype, inputs={"x": x},
                            ulps=oracle.part_ulps(spec, part, dtype),
                            floor=oracle.part_floor(part, ref, dtype))


# ------------------------------------------------------------------------------------------------
# softmax family
# ------------------------------------------------------------------------------------------------

@st.composite
def row_problem(draw, dtype):
    x = draw(arrays_with_layout(dtype, (-30.0, 30.0)), label="x")
    n = max(x.ndim, 1)
    axis = draw(st.integers(-n, n - 1), label="axis")
    temperature = draw(st.one_of(st.sampled_from([0.5, 1.0, 3.0]),
                                 st.floats(min_value=0.125, max_value=8.0)), label="T")
    mask_kind = draw(st.sampled_from(["none", "full", "broadcast"]), label="mask")
    where = None
    if mask_kind == "full" or (mask_kind == "broadcast" and x.ndim == 0):
        where = draw(hnp.arrays(np.bool_, x.shape), label="where")
    elif mask_kind == "broadcast":
        where = draw(hnp.arrays(np.bool_, x.shape[-1:]), label="where")
    return x, axis, temperature, where


@pytest.mark.parametrize("spec", ROWWISE, ids=lambda s: s.name)
@SETTINGS
@given(data=st.data())
def test_rowwise_matches_oracle(spec, backend, data):
    log = spec.name.startswith("log_")
    reduces = _registry.reduces(spec)
    dtype = data.draw(DTYPES, label="dtype")
    x, axis, temperature, where = data.draw(row_problem(dtype))
    kw = dict(axis=axis, temperature=temperature, where=where)
    if reduces:
        kw["keepdims"] = data.draw(st.booleans(), label="keepdims")
    what = f"{spec.name} backend={backend} dtype={dtype.name} axis={axis} T={temperature}"
    got = getattr(fa, spec.name)(x, backend=backend, **kw)
    ref = oracle.rowwise(spec.name, "forward", dtype, x=x, **kw)
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    allowed, exact = oracle.row_allowed(spec.name, x, ref, dtype, **kw)
    oracle.assert_close(what, got, ref, dtype, inputs=None if reduces else {"x": x},
                        allowed=allowed, floor=oracle.tiny(dtype), exact_mask=exact,
                        bound_text="(DESIGN.md row-wise bound, oracle.row_allowed)")
    if reduces:
        # logsumexp lies in [max, max + T log C] over each row's kept entries
        keep = oracle.keep_mask(where, x.shape)
        with oracle.quiet():
            rows = oracle.to_rows(np.where(keep, x.astype(np.float64), -np.inf), axis)
            lo = rows.max(axis=1, initial=-np.inf)
            count = np.maximum(oracle.to_rows(keep, axis).sum(axis=1), 1)
            hi = lo + temperature * np.log(count)
        g = got.astype(np.float64).reshape(-1)
        slack = allowed.astype(np.float64).reshape(-1) + oracle.tiny(dtype)
        fin = np.isfinite(lo) & np.isfinite(g)
        with oracle.quiet():  # near the largest float, hi + slack may round to inf: fine
            inside = np.all(g[fin] >= lo[fin] - slack[fin]) and \
                np.all(g[fin] <= hi[fin] + slack[fin])
        assert inside, f"{what}: outside [max, max + T log C]"
        return
    if not log and x.size:
        # rows with a finite result and something kept sum to 1 within the summed bound
        keep = oracle.keep_mask(where, x.shape)
        rows_got = oracle.to_rows(got.astype(oracle.LONG), axis)
        rows_ok = oracle.to_rows(np.isfinite(ref), axis).all(axis=1) & \
            oracle.to_rows(keep, axis).any(axis=1)
        per_elem = np.where(exact, 0, allowed.astype(oracle.LONG))  # exact entries: no slack
        rows_tol = oracle.to_rows(np.maximum(per_elem, oracle.tiny(dtype)), axis).sum(axis=1)
        with oracle.quiet():
            dev = np.abs(rows_got.sum(axis=1) - 1)
        bad = rows_ok & ~(dev <= rows_tol)
        assert not bad.any(), f"{what}: row sums deviate from 1 by {dev[bad]} > {rows_tol[bad]}"
    # backward at the correctly rounded forward result
    y = oracle.round_to(ref, dtype)
    g = data.draw(hnp.arrays(dtype, x.shape,
                             elements=st.floats(min_value=-4, max_value=4,
                                                width=dtype.itemsize * 8)), label="grad")
    name = spec.public_name("backward")
    gotb = getattr(fa, name)(g, y=y, backend=backend, **kw)
    refb = oracle.rowwise(spec.name, "backward", dtype, grad=g, y=y, **kw)
    allowed, masked = oracle.softmax_backward_allowed(g, y, refb, dtype, axis=axis, where=where,
                                                      temperature=temperature, log=log)
    oracle.assert_close(f"{name} backend={backend} dtype={dtype.name} axis={axis} "
                        f"T={temperature}", gotb, refb, dtype, inputs={"y": y, "grad": g},
                        allowed=allowed, ulps=spec.derivative_bound.ulps(dtype.name),
                        floor=oracle.derivative_floor(refb, dtype), exact_mask=masked)


# ------------------------------------------------------------------------------------------------
# the reference's derivatives against finite differences
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ELEMENTWISE, ids=lambda s: s.name)
@SETTINGS
@given(x=st.floats(min_value=-30, max_value=30))
def test_reference_derivative_is_finite_difference(spec, x):
    """Central differences of the longdouble forward reference match its derivative (points
    within a step of a kink, detected by one-sided differences, are not judged)."""
    L = oracle.LONG
    xv = np.array([x], L)
    h = L.type(2.0 ** -20) * max(1.0, abs(x))
    with oracle.quiet():
        f = [oracle.evaluate(spec, "forward", L, x=xv + k * h)[0] for k in (-1, 0, 1, 2)]
        d = oracle.evaluate(spec, "derivative", L, x=xv)[0]
        rounding = 64 * np.finfo(L).eps * (abs(f[0]) + abs(f[2])) / h
        left, right = (f[1] - f[0]) / h, (f[2] - f[1]) / h
        assume(abs(right - left) <= 1e-3 * (abs(left) + abs(right)) + rounding)
        central = (f[2] - f[0]) / (2 * h)
        second = abs(f[3] - 2 * f[2] + f[1]) / h  # h |f''(x+)|
    # where f'' jumps (elu at 0) the central difference is only O(h): |right - left| bounds it,
    # or h |f''| where the jump is symmetric (softsign at 0)
    assert abs(central - d) <= 1e-7 * abs(d) + abs(right - left) + rounding + second, \
        (spec.name, x, central, d)
    assert math.isfinite(float(d))
