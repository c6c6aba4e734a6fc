"""Pickling, DLPack and memory-layout helpers of NDArray (MXNet's ``__getstate__`` format)."""
from __future__ import annotations

import io

import numpy as np

from .ndarray import NDArray


def getstate(self: NDArray) -> dict:
    """``{'handle': bytes}`` holding the array in MXNet's single-NDArray record format."""
    from .utils import _V2, _write_array
    buf = io.BytesIO()
    _write_array(buf, self, _V2, "array")
    return {"handle": bytearray(buf.getvalue())}


def setstate(self: NDArray, state: dict):
    """Restore from :func:`getstate` output (also what MXNet pickles)."""
    from .utils import _read_array, _Reader
    handle = bytes(state["handle"])
    arr = _read_array(_Reader(io.BytesIO(handle), len(handle)), 0)
    self._data = arr._data if arr is not None else np.zeros((0,), np.float32)
    self._ctx = arr._ctx if arr is not None else None
    self._grad, self._grad_req, self._node, self._fresh_grad = None, "null", None, False


def basic_indexing_slice_is_contiguous(slc_key, shape) -> bool:
    """Whether ``x[slc_key]`` of a C-contiguous array of ``shape`` is contiguous."""
    fake = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), shape=tuple(shape),
                                           strides=_c_strides(shape))
    return bool(fake[tuple(slc_key)].flags.c_contiguous)


def _c_strides(shape):
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= max(int(d), 1)
    return tuple(reversed(strides))


def to_dlpack_for_read(self: NDArray):
    from .extras import to_dlpack_for_read as fn
    return fn(self)


NDArray.__getstate__ = getstate
NDArray.__setstate__ = setstate
NDArray._basic_indexing_slice_is_contiguous = staticmethod(basic_indexing_slice_is_contiguous)
NDArray.to_dlpack_for_read = to_dlpack_for_read
NDArray.to_dlpack_for_write = to_dlpack_for_read
NDArray.__dlpack__ = lambda self, stream=None, **kw: self._data.__dlpack__(**kw)
NDArray.__dlpack_device__ = lambda self: self._data.__dlpack_device__()
