"""``ember.io`` (``mx.io``): MXNet's legacy data iterators for ``mx.mod.Module``.

``DataDesc``/``DataBatch``/``DataIter`` are the protocol; ``NDArrayIter`` batches in-memory
arrays; ``ResizeIter`` and ``PrefetchingIter`` wrap other iterators. MXNet's C++ iterators
(``ImageRecordIter``, ``CSVIter``...) are not provided.
"""
from .io import DataBatch, DataDesc, DataIter, PrefetchingIter, ResizeIter
from .ndarray_iter import NDArrayIter

__all__ = ["DataBatch", "DataDesc", "DataIter", "NDArrayIter", "PrefetchingIter",
           "ResizeIter"]
