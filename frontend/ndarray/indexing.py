"""``NDArray.__getitem__`` / ``__setitem__`` with NumPy semantics, as MXNet 1.x has them.

Basic indexing (ints, slices, ``None``, ``...``) returns a view that shares memory; integer
arrays and lists index advanced-style (a copy). A single element comes back with shape
``(1,)``. While autograd records, indexing goes through the ``getitem`` op so it is
differentiated; assigning into a recorded array is refused, as in MXNet.
"""
from __future__ import annotations

import numbers

import numpy as np

from ember import autograd as _ag
from ember.ir import EmberError, get_op
from ember.ir.opset_index import encode_key

from . import ndarray as _nd
from .ndarray import NDArray, invoke

_BASIC = (int, np.integer, slice, type(None), type(Ellipsis))
_INPLACE_MSG = ("Inplace operations (+=, -=, x[:]=, etc) are not supported when recording "
                "with autograd.")


def to_numpy_key(key):
    """Replace NDArrays and lists in ``key`` by NumPy integer (or bool) arrays."""
    items = key if isinstance(key, tuple) else (key,)
    out = []
    for k in items:
        if isinstance(k, NDArray):
            k = k._data if type(k._data) is np.ndarray else k.asnumpy()
            k = k if k.dtype == np.bool_ else k.astype(np.int64)
        elif isinstance(k, list | tuple):
            k = np.asarray(k)
        elif isinstance(k, np.ndarray) and k.dtype != np.bool_:
            k = k.astype(np.int64)
        out.append(k)
    return tuple(out) if isinstance(key, tuple) else out[0]


def _is_basic(key):
    items = key if isinstance(key, tuple) else (key,)
    return all(isinstance(k, _BASIC) for k in items)


def getitem(self: NDArray, key):
    """``self[key]``."""
    key = to_numpy_key(key)
    if _ag._STATE.recording and _ag._needs_grad(self):
        return invoke(get_op("getitem"), [self], {"key": encode_key(key)})
    if type(self._data) is not np.ndarray and _nd._GPU_IN_USE:
        return _device_getitem(self, key)
    try:
        res = self._data[key]
    except IndexError:
        raise
    except Exception as e:
        raise IndexError(f"cannot index an array of shape {self.shape} with {key!r}: {e}") \
            from None
    if np.ndim(res) == 0:
        return NDArray(np.reshape(np.array(res), (1,)), self._ctx)
    if not _is_basic(key):
        res = np.array(res, copy=True)
    return NDArray(res, self._ctx)


def setitem(self: NDArray, key, value):
    """``self[key] = value`` (value: NDArray, NumPy array, list or number)."""
    if not self.writable:
        raise ValueError("trying to assign to a read-only NDArray")
    whole = key is None or key is Ellipsis or (isinstance(key, slice) and key == slice(None))
    if _ag._STATE.recording and not whole and (
            _ag._needs_grad(self) or (isinstance(value, NDArray) and _ag._needs_grad(value))):
        raise EmberError(_INPLACE_MSG)
    if isinstance(value, NDArray):
        value = value._data
    elif not isinstance(value, numbers.Number | np.ndarray | np.generic):
        value = np.asarray(value)
    key = to_numpy_key(key)
    if key is None:
        key = Ellipsis
    if _nd._GPU_IN_USE and (type(self._data) is not np.ndarray
                            or type(value) not in (np.ndarray, int, float, bool)):
        return _device_setitem(self, key, value, whole)
    try:
        self._data[key] = value
    except ValueError as e:
        target = np.shape(self._data[key])
        if np.size(value) == int(np.prod(target)):  # MXNet: a (1,) value for one element
            self._data[key] = np.reshape(value, target)
            return

        raise EmberError(f"cannot assign a value of shape {np.shape(value)} to "
                         f"{self.shape}[{key!r}]: {e}") from None


def _device_getitem(self: NDArray, key):
    """``self[key]`` of a GPU array: a new GPU array (a copy, even for basic indexing: device
    arrays are not viewed through NumPy keys)."""
    from .device import host, place
    res = np.array(host(self._data)[key], copy=True)
    if res.ndim == 0:
        res = res.reshape(1)
    return NDArray(place(res, self._ctx), self._ctx)


def _device_setitem(self: NDArray, key, value, whole: bool):
    """``self[key] = value`` where ``self`` or ``value`` lives on a GPU."""
    from .device import assign, host
    if whole or key is Ellipsis:
        assign(self._data, value)
        return
    h = host(self._data)
    h = h.copy() if h is self._data else h
    target = h[key]
    v = host(value)
    h[key] = np.reshape(v, np.shape(target)) if np.size(v) == np.size(target) else v
    assign(self._data, h)


NDArray.__getitem__ = getitem
NDArray.__setitem__ = setitem
