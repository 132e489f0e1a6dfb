# cython: language_level=3, boundscheck=False, wraparound=False
"""The small-array fast path's guard and call, in C (issue 7, item 4: call overhead).

``elementwise(table, x, params, nout)``, ``backward(table, grad, operand, params)`` and
``rows(table, x, grad, temperature, axis)`` do what their pure-Python twins in ``fastact.api``
(``_fast_elementwise_py``, ``_fast_backward_py``, ``_fast_rows_py``; used where this extension
is not built) do: if the arrays are exact ``numpy.ndarray`` objects, C-contiguous
and aligned, of one dtype that ``table`` maps to a fast entry ``[kernel entry point, size
limit]``, of one shape, and smaller than the limit, they allocate ``nout`` fresh results of
that shape and dtype (or take ``out=``, where it qualifies as the inputs do, is writeable and
is apart from each input or exactly it: ``fa.relu(x, out=r)`` on 1,000 float32 elements
7.9 -> 0.42 us), run the entry point on 1-D views ``(inputs, *params, *results)`` (2-D rows for the softmax
family) and
return the result (a tuple for ``nout == 2``); otherwise they return None and the caller takes
the normal path.

Flags, dtype, shape and size are read from the array structs and the results are allocated
with ``PyArray_EMPTY`` instead of through attribute lookups and ``np.empty``: ``fa.tanh`` on
1,000 float32 elements ~1.23 -> ~0.9 us (``np.tanh`` ~0.75 us; benchmark group
tanh-forward-float32-1000).
"""

cimport numpy as cnp
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject
from libc.string cimport memcmp

cnp.import_array()

cdef int _USABLE = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED


cdef inline bint _usable(object o):
    return type(o) is cnp.ndarray and cnp.PyArray_CHKFLAGS(<cnp.ndarray>o, _USABLE)


cdef inline object _flat(cnp.ndarray a):
    # (a C-contiguous array ravels to a view)
    return a if cnp.PyArray_NDIM(a) == 1 else cnp.PyArray_Ravel(a, cnp.NPY_CORDER)


cdef inline object _rows(cnp.ndarray a):
    """``a`` (C-contiguous, at least 1-D) as a 2-D view of rows along its last axis."""
    cdef cnp.npy_intp dims[2]
    cdef cnp.PyArray_Dims shape
    if cnp.PyArray_NDIM(a) == 2:
        return a
    dims[1] = cnp.PyArray_DIM(a, cnp.PyArray_NDIM(a) - 1)
    dims[0] = cnp.PyArray_SIZE(a) // dims[1]
    shape.ptr, shape.len = dims, 2
    return cnp.PyArray_Newshape(a, &shape, cnp.NPY_CORDER)


cdef inline cnp.ndarray _empty(cnp.ndarray like):
    return <cnp.ndarray>cnp.PyArray_EMPTY(cnp.PyArray_NDIM(like), cnp.PyArray_DIMS(like),
                                          cnp.PyArray_TYPE(like), 0)


def elementwise(dict table, object a, tuple params, Py_ssize_t nout, object out=None):
    """``NAME``, ``NAME_derivative`` (nout 1), ``NAME_and_derivative`` (nout 2, ``out`` None)
    of ``a``, into ``out`` if given and it qualifies (:func:`_out_for`)."""
    cdef cnp.ndarray x, r0, r1
    cdef object entry = _entry(table, a)
    if entry is None:
        return None
    x = <cnp.ndarray>a
    if out is None:
        r0 = _empty(x)
    elif nout == 1 and _out_for(out, x, x):
        r0 = <cnp.ndarray>out
    else:
        return None
    if nout == 1:
        if params:
            entry(_flat(x), *params, _flat(r0))
        else:
            entry(_flat(x), _flat(r0))
        return r0
    r1 = _empty(x)
    if params:
        entry(_flat(x), *params, _flat(r0), _flat(r1))
    else:
        entry(_flat(x), _flat(r0), _flat(r1))
    return r0, r1


def backward(dict table, object grad, object operand, tuple params, object out=None):
    """``NAME_backward(grad, x=operand)`` (or ``y=``, with the from-y table), into ``out`` if
    given and it qualifies (:func:`_out_for`)."""
    cdef cnp.ndarray g, x, r
    cdef object entry = _entry(table, operand)
    if entry is None or not _same(grad, <cnp.ndarray>operand):
        return None
    g, x = <cnp.ndarray>grad, <cnp.ndarray>operand
    if out is None:
        r = _empty(x)
    elif _out_for(out, x, g):
        r = <cnp.ndarray>out
    else:
        return None
    if params:
        entry(_flat(g), _flat(x), *params, _flat(r))
    else:
        entry(_flat(g), _flat(x), _flat(r))
    return r


cdef inline object _entry(dict table, object a):
    """The fast entry point for array ``a`` (the twin of ``fastact.api._fast_qualifies``):
    the table entry's first callable below its size limit, from there its third (a ranged
    entry, or None) where it has one; None if ``a`` does not qualify."""
    cdef PyObject *item
    cdef list fast
    if not _usable(a):
        return None
    item = PyDict_GetItem(table, <object><PyObject *>cnp.PyArray_DESCR(<cnp.ndarray>a))
    if item is NULL:
        return None
    fast = <list>item
    if cnp.PyArray_SIZE(<cnp.ndarray>a) < <Py_ssize_t>fast[1]:
        return fast[0]
    return fast[2] if len(fast) > 2 else None


def rows(dict table, object a, object grad, double temperature, Py_ssize_t axis):
    """The softmax family along the last axis (``axis`` -1 or ndim - 1) of a non-empty array
    ``a`` of at least one dimension: the forward (``grad`` None) or the backward from ``y = a``.
    """
    cdef cnp.ndarray x, g, r
    cdef int nd
    cdef object entry = _entry(table, a)
    if entry is None:
        return None
    x = <cnp.ndarray>a
    nd = cnp.PyArray_NDIM(x)
    if nd == 0 or cnp.PyArray_SIZE(x) == 0 or (axis != -1 and axis != nd - 1):
        return None
    if grad is None:
        r = _empty(x)
        entry(_rows(x), None, temperature, _rows(r))
        return r
    if not _same(grad, x):
        return None
    r = _empty(x)
    entry(_rows(<cnp.ndarray>grad), _rows(x), None, temperature, _rows(r))
    return r


cdef inline bint _apart_or_same(cnp.ndarray r, cnp.ndarray a):
    """Whether ``r`` and ``a`` (same size and dtype, C-contiguous) are disjoint in memory or
    exactly the same memory (in place: element i is read before element i is written)."""
    cdef char *rp = cnp.PyArray_BYTES(r)
    cdef char *ap = cnp.PyArray_BYTES(a)
    cdef Py_ssize_t n = cnp.PyArray_NBYTES(a)
    return rp == ap or rp + n <= ap or ap + n <= rp


cdef inline bint _out_for(object out, cnp.ndarray x, cnp.ndarray g):
    """Whether ``out`` can take the results of an elementwise kernel on ``x`` (and ``g``)
    directly: it qualifies as ``x`` does (:func:`_same`), is writeable, and each input is
    either apart from it or exactly it -- the cases where the normal path also writes into
    ``out`` itself (``_validate.kernel_buffer``).  Anything else (a wrong shape or dtype, a
    read-only or partly overlapping array, a subclass) takes the normal path, which raises or
    goes through a buffer."""
    if not _same(out, x) or not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out):
        return False
    return _apart_or_same(<cnp.ndarray>out, x) and _apart_or_same(<cnp.ndarray>out, g)


cdef inline bint _same(object other, cnp.ndarray x):
    """Whether ``other`` qualifies too, with ``x``'s dtype and shape."""
    cdef cnp.ndarray g
    cdef int nd = cnp.PyArray_NDIM(x)
    if not _usable(other):
        return False
    g = <cnp.ndarray>other
    return (cnp.PyArray_DESCR(g) == cnp.PyArray_DESCR(x) and cnp.PyArray_NDIM(g) == nd
            and memcmp(cnp.PyArray_DIMS(g), cnp.PyArray_DIMS(x), nd * sizeof(cnp.npy_intp)) == 0)


cdef double _pairwise_sum(const double *a, Py_ssize_t n) noexcept nogil:
    """NumPy's pairwise summation (``np.add.reduce`` of a contiguous float64 array): 8
    interleaved partial sums per block of at most 128, blocks halved recursively, so the
    fast path's reduced loss is bitwise the normal path's ``np.sum`` (tested)."""
    cdef double r0, r1, r2, r3, r4, r5, r6, r7, res
    cdef Py_ssize_t i, n2
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[i]
        return res
    if n <= 128:
        r0, r1, r2, r3 = a[0], a[1], a[2], a[3]
        r4, r5, r6, r7 = a[4], a[5], a[6], a[7]
        i = 8
        while i < n - (n % 8):
            r0 += a[i]
            r1 += a[i + 1]
            r2 += a[i + 2]
            r3 += a[i + 3]
            r4 += a[i + 4]
            r5 += a[i + 5]
            r6 += a[i + 6]
            r7 += a[i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += a[i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise_sum(a, n2) + _pairwise_sum(a + n2, n - n2)


def float64_sum(cnp.ndarray a):
    """The sum of a C-contiguous float64 array, as ``float(np.sum(a))``."""
    if (cnp.PyArray_TYPE(a) != cnp.NPY_FLOAT64
            or not cnp.PyArray_CHKFLAGS(a, _USABLE)):
        raise TypeError("float64_sum: a C-contiguous aligned float64 array is required")
    return _pairwise_sum(<const double *>cnp.PyArray_DATA(a), cnp.PyArray_SIZE(a))


cdef cnp.ndarray _ones(dict cache, Py_ssize_t n):
    cdef object item = cache.get(n)
    cdef cnp.ndarray w
    cdef double *p
    cdef Py_ssize_t i
    cdef cnp.npy_intp dim = n
    if item is not None:
        return <cnp.ndarray>item
    if len(cache) >= 64:
        cache.clear()
    w = <cnp.ndarray>cnp.PyArray_EMPTY(1, &dim, cnp.NPY_FLOAT64, 0)
    p = <double *>cnp.PyArray_DATA(w)
    for i in range(n):
        p[i] = 1.0
    cache[n] = w
    return w


def row_loss(dict table, object a, object target, long long ignore_index, object smoothing,
             bint mean, bint with_grad, dict ones, double grad_scale=1.0):
    """``cross_entropy`` (``smoothing`` a float) or ``nll_loss`` (``smoothing`` None), with the
    gradient if ``with_grad``, of (N, C) logits ``a`` and 1-D int64 ``target``, reduced by
    'mean' or 'sum': the twin of ``fastact.api._fast_row_loss_py``.  None where the arrays do
    not qualify, a target lies outside [0, C) or equals ``ignore_index`` (the normal path
    raises or counts); ``ones`` caches the unweighted class weights per C; ``grad_scale``
    multiplies the gradient (a backward's grad_loss: grad_scale * (1 / N) for 'mean')."""
    cdef cnp.ndarray x, t, w, losses, grad, g
    cdef const long long *tp
    cdef long long lo, hi, v
    cdef Py_ssize_t i, rows, C
    cdef cnp.npy_intp dim, one = 1
    cdef double total
    cdef object entry = _entry(table, a)
    if entry is None or cnp.PyArray_NDIM(<cnp.ndarray>a) != 2 or not _usable(target):
        return None
    x, t = <cnp.ndarray>a, <cnp.ndarray>target
    rows, C = cnp.PyArray_DIM(x, 0), cnp.PyArray_DIM(x, 1)
    if (cnp.PyArray_TYPE(t) != cnp.NPY_INT64 or cnp.PyArray_NDIM(t) != 1
            or cnp.PyArray_DIM(t, 0) != rows or rows == 0 or C == 0):
        return None
    tp = <const long long *>cnp.PyArray_DATA(t)
    lo = hi = tp[0]
    for i in range(1, rows):
        v = tp[i]
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    if lo < 0 or hi >= C or (lo <= ignore_index and ignore_index <= hi):
        return None
    w = _ones(ones, C)
    dim = rows
    losses = <cnp.ndarray>cnp.PyArray_EMPTY(1, &dim, cnp.NPY_FLOAT64, 0)
    if with_grad:
        grad = _empty(x)
        g = <cnp.ndarray>cnp.PyArray_EMPTY(1, &one, cnp.NPY_FLOAT64, 0)
        (<double *>cnp.PyArray_DATA(g))[0] = grad_scale * (1.0 / rows) if mean else grad_scale
        if smoothing is None:
            entry(x, t, w, ignore_index, g, losses, grad)
        else:
            entry(x, t, w, ignore_index, smoothing, g, losses, grad)
    elif smoothing is None:
        entry(x, t, w, ignore_index, losses)
    else:
        entry(x, t, w, ignore_index, smoothing, losses)
    total = _pairwise_sum(<const double *>cnp.PyArray_DATA(losses), rows)
    if mean:
        total = total / rows
    return (total, grad) if with_grad else total
