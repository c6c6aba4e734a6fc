"""``NDArrayIter``: batches of in-memory NDArrays or NumPy arrays (MXNet 1.9.1 semantics).

Inputs are an array, a list of arrays (named ``_0_data``, ``_1_data``... when more than
one) or a dict name -> array; sources are kept sorted by name, as MXNet does. The short
last batch is padded with examples from the start (``'pad'``, ``getpad`` says how many),
dropped (``'discard'``), or kept and completed at the start of the next epoch
(``'roll_over'``). ``shuffle`` permutes the examples with ``numpy.random`` at each reset.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ember import ndarray as nd
from ember.base import MXNetError
from ember.ndarray.ndarray import NDArray

from .io import DataBatch, DataDesc, DataIter

__all__ = ["NDArrayIter"]

_LAST_BATCH = ("pad", "discard", "roll_over")


def _init_data(data, allow_empty: bool, default_name: str) -> list[tuple[str, NDArray]]:
    """``[(name, NDArray)]`` sorted by name, from an array, a list or a dict of arrays."""
    if data is None:
        if not allow_empty:
            raise MXNetError("NDArrayIter: data must not be None")
        data = []
    if isinstance(data, np.ndarray | NDArray):
        data = [data]
    if isinstance(data, list | tuple):
        if not data and not allow_empty:
            raise MXNetError("NDArrayIter: data must not be empty")
        if len(data) == 1:
            data = OrderedDict([(default_name, data[0])])
        else:
            data = OrderedDict((f"_{i}_{default_name}", d) for i, d in enumerate(data))
    if not isinstance(data, dict):
        raise TypeError("Input must be NDArray, numpy.ndarray, a list of them or dict with "
                        "them as values")
    out = {}
    for k, v in data.items():
        if isinstance(v, NDArray):
            out[k] = v
            continue
        try:
            out[k] = nd.array(v)
        except Exception as err:
            raise TypeError(f"Invalid type '{type(v)}' for {k}, should be NDArray or "
                            "numpy.ndarray") from err
    return sorted(out.items())


class NDArrayIter(DataIter):
    """Iterate over NDArrays / NumPy arrays in batches of ``batch_size`` examples.

    ``last_batch_handle`` is ``'pad'``, ``'discard'`` or ``'roll_over'`` (module docstring);
    ``layout``'s ``N`` is the batch axis of every source.
    """

    def __init__(self, data, label=None, batch_size: int = 1, shuffle: bool = False,
                 last_batch_handle: str = "pad", data_name: str = "data",
                 label_name: str = "softmax_label", layout: str = "NCHW"):
        super().__init__(batch_size)
        if last_batch_handle not in _LAST_BATCH:
            raise MXNetError(f"last_batch_handle must be one of {_LAST_BATCH}, "
                             f"not {last_batch_handle!r}")
        if int(batch_size) <= 0:
            raise MXNetError(f"batch_size must be positive, got {batch_size}")
        self.layout = layout
        self._axis = max(layout.find("N"), 0)
        self.data = _init_data(data, allow_empty=False, default_name=data_name)
        self.label = _init_data(label, allow_empty=True, default_name=label_name)
        self.num_data = self.data[0][1].shape[self._axis]
        for k, v in self.data + self.label:  # more examples than the first source: unused
            if v.shape[self._axis] < self.num_data:
                raise MXNetError(f"NDArrayIter: {k} has {v.shape[self._axis]} examples along "
                                 f"axis {self._axis}, {self.data[0][0]} has {self.num_data}")
        self.idx = np.arange(self.num_data)
        self.shuffle = shuffle
        self.last_batch_handle = last_batch_handle
        self.batch_size = int(batch_size)
        self.cursor = -self.batch_size
        self._cache_data = None
        self._cache_label = None
        self.reset()
        self.data_list = [x[1] for x in self.data] + [x[1] for x in self.label]
        self.num_source = len(self.data_list)

    # ---- descriptions ----------------------------------------------------------------------
    def _descs(self, sources) -> list[DataDesc]:
        ax = self._axis
        return [DataDesc(k, tuple(v.shape[:ax]) + (self.batch_size,) + tuple(v.shape[ax + 1:]),
                         v.dtype, layout=self.layout) for k, v in sources]

    @property
    def provide_data(self) -> list[DataDesc]:
        """Name, batch shape, dtype and layout of each data source."""
        return self._descs(self.data)

    @property
    def provide_label(self) -> list[DataDesc]:
        """Name, batch shape, dtype and layout of each label source."""
        return self._descs(self.label)

    # ---- moving ----------------------------------------------------------------------------
    def hard_reset(self) -> None:
        """Back to the start, forgetting any rolled-over examples."""
        if self.shuffle:
            self._shuffle_data()
        self.cursor = -self.batch_size
        self._cache_data = None
        self._cache_label = None

    def reset(self) -> None:
        """Back to the start; with ``'roll_over'`` the cached tail opens the next epoch."""
        if self.shuffle:
            self._shuffle_data()
        if self.last_batch_handle == "roll_over" and \
                self.num_data - self.batch_size < self.cursor < self.num_data:
            # the cached tail holds num_data - cursor examples: start that many early
            self.cursor = self.cursor - self.num_data - self.batch_size
        else:
            self.cursor = -self.batch_size

    def iter_next(self) -> bool:
        self.cursor += self.batch_size
        return self.cursor < self.num_data

    def next(self) -> DataBatch:
        if not self.iter_next():
            raise StopIteration
        data = self.getdata()
        label = self.getlabel()
        if data[0].shape[self._axis] != self.batch_size:
            # an incomplete last batch ('discard' or 'roll_over'): keep it for the next epoch
            self._cache_data = data
            self._cache_label = label
            raise StopIteration
        return DataBatch(data=data, label=label, pad=self.getpad(), index=None)

    # ---- reading -----------------------------------------------------------------------------
    def _getdata(self, sources, start: int | None = None, end: int | None = None) -> list:
        start = 0 if start is None else start
        end = self.num_data if end is None else end
        return [nd.slice_axis(v, axis=self._axis, begin=start, end=end) for _, v in sources]

    def _concat(self, first: list, second: list) -> list:
        if not first or not second:
            return first if first else second
        return [nd.concat(a, b, dim=self._axis) for a, b in zip(first, second)]

    def _tile(self, data: list, repeats: int) -> list:
        out = []
        for x in data:
            reps = [1] * x.ndim
            reps[self._axis] = repeats
            out.append(nd.tile(x, reps=tuple(reps)))
        return out

    def _batchify(self, sources) -> list:
        if self.cursor >= self.num_data:
            raise MXNetError("DataIter needs reset.")
        if self.last_batch_handle == "roll_over" and -self.batch_size < self.cursor < 0:
            # first batch after a roll-over: the cached tail, then the head of this epoch
            if self._cache_data is None and self._cache_label is None:
                raise MXNetError("NDArrayIter: the next epoch should have cached data")
            if self._cache_data is not None:
                cache, self._cache_data = self._cache_data, None
            else:
                cache, self._cache_label = self._cache_label, None
            return self._concat(cache, self._getdata(sources, end=self.cursor + self.batch_size))
        if self.last_batch_handle == "pad" and self.cursor + self.batch_size > self.num_data:
            pad = self.batch_size - self.num_data + self.cursor
            first = self._getdata(sources, start=self.cursor)
            if pad > self.num_data:
                second = self._tile(self._getdata(sources, end=self.num_data),
                                    pad // self.num_data)
                if pad % self.num_data:
                    second = self._concat(second,
                                          self._getdata(sources, end=pad % self.num_data))
            else:
                second = self._getdata(sources, end=pad)
            return self._concat(first, second)
        end = min(self.cursor + self.batch_size, self.num_data)
        return self._getdata(sources, self.cursor, end)

    def getdata(self) -> list:
        """The data arrays of the current batch."""
        return self._batchify(self.data)

    def getlabel(self) -> list:
        """The label arrays of the current batch."""
        return self._batchify(self.label)

    def getpad(self) -> int:
        """Padding examples in the current batch (with ``'roll_over'``: the examples carried
        over from the previous epoch)."""
        if self.last_batch_handle == "pad" and self.cursor + self.batch_size > self.num_data:
            return self.cursor + self.batch_size - self.num_data
        if self.last_batch_handle == "roll_over" and -self.batch_size < self.cursor < 0:
            return -self.cursor
        return 0

    def _shuffle_data(self) -> None:
        np.random.shuffle(self.idx)
        self.data = _take(self.data, self.idx, self._axis)
        self.label = _take(self.label, self.idx, self._axis)


def _take(sources, idx: np.ndarray, axis: int) -> list[tuple[str, NDArray]]:
    """The sources permuted by ``idx`` along ``axis``: new arrays (through ``nd.array``, as
    MXNet makes them) on the same context."""
    return [(k, nd.array(np.take(v.asnumpy(), idx, axis=axis), ctx=v.context))
            for k, v in sources]
