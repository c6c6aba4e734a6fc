"""``mx.np``: NumPy-named functions over ember arrays (the subset ember has).

MXNet's ``mx.np`` is a NumPy-compatible array API; in ember every NDArray already holds a
NumPy array, so these are thin, NumPy-semantics wrappers (``size=`` for random shapes,
``axis=`` for joins) that return ``ember.nd.NDArray``.
"""
from __future__ import annotations

import numpy as _onp

from ember.ndarray.ndarray import NDArray, invoke

from . import random

ndarray = NDArray
float32, float64, int32, int64, uint8 = (_onp.float32, _onp.float64, _onp.int32, _onp.int64,
                                         _onp.uint8)


def array(obj, dtype=None, ctx=None) -> NDArray:
    """A new array from a list, NumPy array or NDArray (float32 unless told otherwise)."""
    from ember.ndarray import array as nd_array
    return nd_array(obj, ctx=ctx, dtype=dtype)


asarray = array


def zeros(shape, dtype=_onp.float32, ctx=None) -> NDArray:
    return NDArray(_onp.zeros(shape, dtype=dtype), ctx)


def ones(shape, dtype=_onp.float32, ctx=None) -> NDArray:
    return NDArray(_onp.ones(shape, dtype=dtype), ctx)


def full(shape, fill_value, dtype=_onp.float32, ctx=None) -> NDArray:
    return NDArray(_onp.full(shape, fill_value, dtype=dtype), ctx)


def arange(start, stop=None, step=1, dtype=_onp.float32, ctx=None) -> NDArray:
    return NDArray(_onp.arange(start, stop, step, dtype=dtype), ctx)


def concatenate(seq, axis: int = 0) -> NDArray:
    """Join arrays along an existing axis (differentiable: the ``concat`` op)."""
    from ember.ir import get_op
    return invoke(get_op("concat"), list(seq), {"dim": axis})


def stack(arrays, axis: int = 0) -> NDArray:
    """Join arrays along a new axis (the ``stack`` op)."""
    from ember.ir import get_op
    return invoke(get_op("stack"), list(arrays), {"axis": axis})
