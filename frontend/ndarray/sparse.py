"""``mx.nd.sparse``: ember stores every array densely; sparse constructors say so clearly."""
from __future__ import annotations

from ember.base import MXNetError

from .ndarray import NDArray


class CSRNDArray(NDArray):
    """MXNet's compressed-sparse-row array type (ember never creates one)."""


class RowSparseNDArray(NDArray):
    """MXNet's row-sparse array type (ember never creates one)."""


def _unsupported(kind):
    def fn(*args, **kwargs):
        raise MXNetError(f"{kind} arrays are not supported: ember stores arrays densely; "
                         "use mx.nd.array(...) with the dense data instead")
    fn.__name__ = kind
    return fn


csr_matrix = _unsupported("csr_matrix")
row_sparse_array = _unsupported("row_sparse_array")
