# cython: language_level=3, boundscheck=False, wraparound=False
"""The small-array fast path's guard and call, in C (issue 7, item 4: call overhead).

``elementwise(table, x, params, nout)``, ``backward(table, grad, operand, params)`` and
``rows(table, x, grad, temperature, axis)`` do what their pure-Python twins in ``fastact.api``
(``_fast_elementwise_py``, ``_fast_backward_py``, ``_fast_rows_py``; used where this extension
is not built) do: if the arrays are exact ``numpy.ndarray`` objects, C-contiguous
and aligned, of one dtype that ``table`` maps to a fast entry ``[kernel entry point, size
limit]``, of one shape, and smaller than the limit, they allocate ``nout`` fresh results of
that shape and dtype, run the entry point on 1-D views ``(inputs, *params, *results)`` (2-D rows for the softmax
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


def elementwise(dict table, object a, tuple params, Py_ssize_t nout):
    """``NAME``, ``NAME_derivative`` (nout 1), ``NAME_and_derivative`` (nout 2) of ``a``."""
    cdef cnp.ndarray x, r0, r1
    cdef list fast = _entry(table, a)
    if fast is None:
        return None
    x = <cnp.ndarray>a
    r0 = _empty(x)
    if nout == 1:
        if params:
            fast[0](_flat(x), *params, _flat(r0))
        else:
            fast[0](_flat(x), _flat(r0))
        return r0
    r1 = _empty(x)
    if params:
        fast[0](_flat(x), *params, _flat(r0), _flat(r1))
    else:
        fast[0](_flat(x), _flat(r0), _flat(r1))
    return r0, r1


def backward(dict table, object grad, object operand, tuple params):
    """``NAME_backward(grad, x=operand)`` (or ``y=``, with the from-y table)."""
    cdef cnp.ndarray g, x, r
    cdef list fast = _entry(table, operand)
    if fast is None or not _same(grad, <cnp.ndarray>operand):
        return None
    g, x = <cnp.ndarray>grad, <cnp.ndarray>operand
    r = _empty(x)
    if params:
        fast[0](_flat(g), _flat(x), *params, _flat(r))
    else:
        fast[0](_flat(g), _flat(x), _flat(r))
    return r


cdef inline list _entry(dict table, object a):
    """The fast entry for array ``a``, or None if ``a`` does not qualify."""
    cdef PyObject *item
    cdef list fast
    if not _usable(a):
        return None
    item = PyDict_GetItem(table, <object><PyObject *>cnp.PyArray_DESCR(<cnp.ndarray>a))
    if item is NULL:
        return None
    fast = <list>item
    if cnp.PyArray_SIZE(<cnp.ndarray>a) >= <Py_ssize_t>fast[1]:
        return None
    return fast


def rows(dict table, object a, object grad, double temperature, Py_ssize_t axis):
    """The softmax family along the last axis (``axis`` -1 or ndim - 1) of a non-empty array
    ``a`` of at least one dimension: the forward (``grad`` None) or the backward from ``y = a``.
    """
    cdef cnp.ndarray x, g, r
    cdef int nd
    cdef list fast = _entry(table, a)
    if fast is None:
        return None
    x = <cnp.ndarray>a
    nd = cnp.PyArray_NDIM(x)
    if nd == 0 or cnp.PyArray_SIZE(x) == 0 or (axis != -1 and axis != nd - 1):
        return None
    if grad is None:
        r = _empty(x)
        fast[0](_rows(x), None, temperature, _rows(r))
        return r
    if not _same(grad, x):
        return None
    r = _empty(x)
    fast[0](_rows(<cnp.ndarray>grad), _rows(x), None, temperature, _rows(r))
    return r


cdef inline bint _same(object other, cnp.ndarray x):
    """Whether ``other`` qualifies too, with ``x``'s dtype and shape."""
    cdef cnp.ndarray g
    cdef int nd = cnp.PyArray_NDIM(x)
    if not _usable(other):
        return False
    g = <cnp.ndarray>other
    return (cnp.PyArray_DESCR(g) == cnp.PyArray_DESCR(x) and cnp.PyArray_NDIM(g) == nd
            and memcmp(cnp.PyArray_DIMS(g), cnp.PyArray_DIMS(x), nd * sizeof(cnp.npy_intp)) == 0)
