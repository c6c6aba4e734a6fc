"""``mx.nd.sparse``: ember stores every array densely; sparse constructors say so clearly.

A Parameter with ``grad_stype='row_sparse'`` (``Embedding(sparse_grad=True)``) gets a
:class:`RowSparseNDArray` gradient: dense storage, with MXNet's ``indices``/``data`` view of
its rows that are not all zero.
"""
from __future__ import annotations

import numpy as np

from ember.base import MXNetError

from .ndarray import NDArray


class CSRNDArray(NDArray):
    """MXNet's compressed-sparse-row array type (ember never creates one)."""


class RowSparseNDArray(NDArray):
    """MXNet's row-sparse array type, stored densely: ``indices`` are the rows that hold a
    nonzero value (ascending, int64, as MXNet keeps them) and ``data`` those rows."""

    __slots__ = ()

    @property
    def stype(self) -> str:
        return "row_sparse"

    def _rows(self) -> np.ndarray:
        a = self._data
        if a.ndim == 0:
            raise MXNetError("a row_sparse array needs at least one dimension")
        return np.flatnonzero(a.reshape(a.shape[0], -1).any(axis=1))

    @property
    def indices(self) -> NDArray:
        return NDArray(self._rows().astype(np.int64), self._ctx)

    @property
    def data(self) -> NDArray:
        return NDArray(self._data[self._rows()], self._ctx)

    def tostype(self, stype):
        if stype == "row_sparse":
            return self
        if stype == "default":
            return NDArray(self._data.copy(), self._ctx)
        raise MXNetError(f"storage type {stype!r} is not supported; ember is dense only")


def _unsupported(kind):
    def fn(*args, **kwargs):
        raise MXNetError(f"{kind} arrays are not supported: ember stores arrays densely; "
                         "use mx.nd.array(...) with the dense data instead")
    fn.__name__ = kind
    return fn


csr_matrix = _unsupported("csr_matrix")
row_sparse_array = _unsupported("row_sparse_array")
