"""MXNet's legacy data-iterator protocol: ``DataDesc``, ``DataBatch``, ``DataIter`` and the
wrappers ``ResizeIter`` and ``PrefetchingIter`` (MXNet 1.9.1's ``mxnet.io.io``).

A ``DataIter`` yields ``DataBatch`` objects (lists of NDArrays plus ``pad``, the number of
filler examples at the end of a short last batch) and describes its arrays with
``provide_data``/``provide_label`` lists of ``DataDesc`` (name, shape, dtype, layout), which
``mx.mod.Module.bind`` reads to allocate its executor.
"""
from __future__ import annotations

import threading
from collections import namedtuple

import numpy as np

from ember.base import MXNetError

__all__ = ["DataDesc", "DataBatch", "DataIter", "ResizeIter", "PrefetchingIter"]


class DataDesc(namedtuple("DataDesc", ["name", "shape"])):
    """Name and shape of one input (a ``(name, shape)`` tuple), plus ``dtype`` and ``layout``.

    ``layout`` names the axes (``'NCHW'``, ``'NTC'``); its ``N`` is the batch axis.
    """

    def __new__(cls, name: str, shape, dtype=np.float32, layout: str = "NCHW"):
        ret = super().__new__(cls, name, shape)
        ret.dtype = dtype
        ret.layout = layout
        return ret

    def __repr__(self) -> str:
        return f"DataDesc[{self.name},{self.shape},{self.dtype},{self.layout}]"

    def __getnewargs__(self):
        return (self.name, self.shape, self.dtype, self.layout)

    @staticmethod
    def get_batch_axis(layout: str | None) -> int:
        """The axis of ``N`` in ``layout`` (0 when there is no layout, -1 when no ``N``)."""
        if layout is None:
            return 0
        return layout.find("N")

    @staticmethod
    def get_list(shapes, types) -> list[DataDesc]:
        """DataDescs from ``[(name, shape)]`` and, when given, ``[(name, dtype)]``."""
        if types is not None:
            type_dict = dict(types)
            return [DataDesc(x[0], x[1], type_dict[x[0]]) for x in shapes]
        return [DataDesc(x[0], x[1]) for x in shapes]


class DataBatch:
    """One batch: ``data`` and ``label`` (lists of NDArrays), ``pad``, ``index``,
    ``bucket_key`` and, optionally, its own ``provide_data``/``provide_label``."""

    def __init__(self, data, label=None, pad=None, index=None, bucket_key=None,
                 provide_data=None, provide_label=None):
        if data is not None and not isinstance(data, list | tuple):
            raise MXNetError("Data must be list of NDArrays")
        if label is not None and not isinstance(label, list | tuple):
            raise MXNetError("Label must be list of NDArrays")
        self.data = data
        self.label = label
        self.pad = pad
        self.index = index
        self.bucket_key = bucket_key
        self.provide_data = provide_data
        self.provide_label = provide_label

    def __str__(self) -> str:
        data_shapes = [d.shape for d in self.data]
        label_shapes = [lb.shape for lb in self.label] if self.label else None
        return f"{type(self).__name__}: data shapes: {data_shapes} label shapes: {label_shapes}"


class DataIter:
    """Base class of data iterators: ``iter_next`` moves on, ``getdata``/``getlabel``/
    ``getpad``/``getindex`` read the current batch, ``next`` packs them in a DataBatch."""

    def __init__(self, batch_size: int = 0):
        self.batch_size = batch_size

    def __iter__(self):
        return self

    def reset(self) -> None:
        """Go back to the beginning of the data (nothing to do in the base class)."""

    def next(self) -> DataBatch:
        """The next batch; ``StopIteration`` at the end of the data."""
        if self.iter_next():
            return DataBatch(data=self.getdata(), label=self.getlabel(), pad=self.getpad(),
                             index=self.getindex())
        raise StopIteration

    def __next__(self) -> DataBatch:
        return self.next()

    def iter_next(self) -> bool:
        """Move to the next batch; whether there was one (the base class has none)."""
        return False

    def getdata(self):
        """The data arrays of the current batch (None in the base class)."""
        return None

    def getlabel(self):
        """The label arrays of the current batch (None in the base class)."""
        return None

    def getindex(self):
        """The example indices of the current batch, or None."""
        return None

    def getpad(self):
        """How many examples at the end of the current batch are padding (None here)."""
        return None


class ResizeIter(DataIter):
    """``data_iter`` seen as exactly ``size`` batches per epoch (restarting it when short)."""

    def __init__(self, data_iter: DataIter, size: int, reset_internal: bool = True):
        super().__init__()
        self.data_iter = data_iter
        self.size = size
        self.reset_internal = reset_internal
        self.cur = 0
        self.current_batch = None
        self.provide_data = data_iter.provide_data
        self.provide_label = data_iter.provide_label
        self.batch_size = data_iter.batch_size
        if hasattr(data_iter, "default_bucket_key"):
            self.default_bucket_key = data_iter.default_bucket_key

    def reset(self) -> None:
        self.cur = 0
        if self.reset_internal:
            self.data_iter.reset()

    def iter_next(self) -> bool:
        if self.cur == self.size:
            return False
        try:
            self.current_batch = self.data_iter.next()
        except StopIteration:
            self.data_iter.reset()
            self.current_batch = self.data_iter.next()
        self.cur += 1
        return True

    def getdata(self):
        return self.current_batch.data

    def getlabel(self):
        return self.current_batch.label

    def getindex(self):
        return self.current_batch.index

    def getpad(self):
        return self.current_batch.pad


def _renamed(descs, renames) -> list[DataDesc]:
    out = []
    for x in descs:
        x = x if isinstance(x, DataDesc) else DataDesc(*x)
        out.append(DataDesc(renames.get(x.name, x.name), x.shape, x.dtype, x.layout))
    return out


class PrefetchingIter(DataIter):
    """Reads the next batch of each of ``iters`` in a background thread; the batches of all
    iterators are joined into one (``rename_data``/``rename_label``: one dict per iterator)."""

    def __init__(self, iters, rename_data=None, rename_label=None):
        super().__init__()
        iters = iters if isinstance(iters, list) else [iters]
        if not iters:
            raise MXNetError("PrefetchingIter needs at least one iterator")
        self.n_iter = len(iters)
        self.iters = iters
        self.rename_data = rename_data
        self.rename_label = rename_label
        self.batch_size = self.provide_data[0][1][0]
        self.data_ready = [threading.Event() for _ in range(self.n_iter)]
        self.data_taken = [threading.Event() for _ in range(self.n_iter)]
        for ev in self.data_taken:
            ev.set()
        self.started = True
        self.current_batch = None
        self.next_batch: list = [None] * self.n_iter
        self.prefetch_threads = [threading.Thread(target=self._prefetch, args=(i,), daemon=True)
                                 for i in range(self.n_iter)]
        for thread in self.prefetch_threads:
            thread.start()

    def _prefetch(self, i: int) -> None:
        while True:
            self.data_taken[i].wait()
            if not self.started:
                break
            try:
                self.next_batch[i] = self.iters[i].next()
            except StopIteration:
                self.next_batch[i] = None
            self.data_taken[i].clear()
            self.data_ready[i].set()

    def close(self) -> None:
        """Stop the prefetching threads."""
        if not getattr(self, "started", False):
            return
        self.started = False
        for ev in self.data_taken:
            ev.set()
        for thread in self.prefetch_threads:
            thread.join()

    def __del__(self):
        self.close()

    @property
    def provide_data(self) -> list[DataDesc]:
        if self.rename_data is None:
            return sum((list(it.provide_data) for it in self.iters), [])
        return sum((_renamed(it.provide_data, r) for r, it in zip(self.rename_data, self.iters)),
                   [])

    @property
    def provide_label(self) -> list[DataDesc]:
        if self.rename_label is None:
            return sum((list(it.provide_label) for it in self.iters), [])
        return sum((_renamed(it.provide_label, r)
                    for r, it in zip(self.rename_label, self.iters)), [])

    def reset(self) -> None:
        for ev in self.data_ready:
            ev.wait()
        for it in self.iters:
            it.reset()
        for ev in self.data_ready:
            ev.clear()
        for ev in self.data_taken:
            ev.set()

    def iter_next(self) -> bool:
        for ev in self.data_ready:
            ev.wait()
        batches = self.next_batch
        if batches[0] is None:
            if any(b is not None for b in batches):
                raise MXNetError("PrefetchingIter: the iterators have different lengths")
            return False
        if any(b is None or b.pad != batches[0].pad for b in batches):
            raise MXNetError("PrefetchingIter: the iterators have different lengths")
        self.current_batch = DataBatch(sum((list(b.data) for b in batches), []),
                                       sum((list(b.label or []) for b in batches), []),
                                       batches[0].pad, batches[0].index,
                                       provide_data=self.provide_data,
                                       provide_label=self.provide_label)
        for ev in self.data_ready:
            ev.clear()
        for ev in self.data_taken:
            ev.set()
        return True

    def next(self) -> DataBatch:
        if self.iter_next():
            return self.current_batch
        raise StopIteration

    def getdata(self):
        return self.current_batch.data

    def getlabel(self):
        return self.current_batch.label

    def getindex(self):
        return self.current_batch.index

    def getpad(self):
        return self.current_batch.pad
