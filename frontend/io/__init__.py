"""``ember.io`` (``mx.io``): MXNet's legacy data iterators for ``mx.mod.Module``.

``DataDesc``/``DataBatch``/``DataIter`` are the protocol; ``NDArrayIter`` batches in-memory
arrays; ``ResizeIter`` and ``PrefetchingIter`` wrap other iterators; ``ImageRecordIter`` (and
its ``uint8``/``int8`` variants) reads, augments and normalises images of a RecordIO file as
MXNet's C++ iterator does. Other C++ iterators (``CSVIter``, ``MNISTIter``...) are not provided.
"""
from .image_record_iter import ImageRecordInt8Iter, ImageRecordIter, ImageRecordUInt8Iter
from .io import DataBatch, DataDesc, DataIter, PrefetchingIter, ResizeIter
from .ndarray_iter import NDArrayIter

__all__ = ["DataBatch", "DataDesc", "DataIter", "ImageRecordInt8Iter", "ImageRecordIter",
           "ImageRecordUInt8Iter", "NDArrayIter", "PrefetchingIter", "ResizeIter"]
