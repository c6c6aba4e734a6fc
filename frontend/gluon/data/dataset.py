"""Datasets: indexable collections of samples, and their lazy views (``mx.gluon.data``).

``RecordFileDataset`` reads MXNet's RecordIO files through ``ember.recordio``.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable

from ember.base import MXNetError
from ember.ndarray import NDArray
from ember.recordio import read_record

__all__ = ["Dataset", "SimpleDataset", "ArrayDataset", "RecordFileDataset"]


class Dataset:
    """Base class of datasets: subclasses define ``__getitem__`` and ``__len__``.

    A NumPy array or an NDArray can be used directly wherever a dataset is expected.
    """

    def __getitem__(self, idx):
        raise TypeError(f"{type(self).__name__} must define __getitem__")

    def __len__(self) -> int:
        raise TypeError(f"{type(self).__name__} must define __len__")

    def filter(self, fn: Callable) -> Dataset:
        """The samples for which ``fn(sample)`` is true (``fn`` runs over all samples now)."""
        from .sampler import FilterSampler
        return _SampledDataset(self, FilterSampler(fn, self))

    def shard(self, num_shards: int, index: int) -> Dataset:
        """The ``index``-th of ``num_shards`` contiguous parts; the first ``len % num_shards``
        parts get one sample more."""
        assert index < num_shards, f"Shard index of out bound: {index} out of {num_shards}"
        assert num_shards > 0, "Number of shards must be greater than 0"
        assert index >= 0, "Index must be non-negative"
        from .sampler import SequentialSampler
        length = len(self)
        shard_len, rest = divmod(length, num_shards)
        start = shard_len * index + min(index, rest)
        end = start + shard_len + (index < rest)
        return _SampledDataset(self, SequentialSampler(end - start, start))

    def take(self, count: int | None) -> Dataset:
        """The first ``count`` samples (all of them when ``count`` is None or too large)."""
        from .sampler import SequentialSampler
        if count is None or count > len(self):
            count = len(self)
        return _SampledDataset(self, SequentialSampler(count))

    def sample(self, sampler) -> Dataset:
        """The samples at the indices ``sampler`` yields."""
        from .sampler import Sampler
        if not isinstance(sampler, Sampler):
            raise TypeError(f"Invalid sampler type: {type(sampler)}. "
                            "Expected gluon.data.Sampler instead.")
        return _SampledDataset(self, sampler)

    def transform(self, fn: Callable, lazy: bool = True) -> Dataset:
        """Each sample passed through ``fn`` (a tuple sample is spread into its arguments).

        ``lazy=False`` transforms every sample now, so a random ``fn`` is drawn only once.
        """
        trans = _LazyTransformDataset(self, fn)
        if lazy:
            return trans
        return SimpleDataset([trans[i] for i in range(len(trans))])

    def transform_first(self, fn: Callable, lazy: bool = True) -> Dataset:
        """Like :meth:`transform`, applied to the first element of each sample only."""
        return self.transform(_TransformFirstClosure(fn), lazy)


class SimpleDataset(Dataset):
    """A dataset over any object with ``len()`` and ``[]`` (a list, an array, ...)."""

    def __init__(self, data):
        self._data = data

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, idx):
        return self._data[idx]


class _LazyTransformDataset(Dataset):
    """``fn`` applied to each sample when it is read."""

    def __init__(self, data, fn):
        self._data = data
        self._fn = fn

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, idx):
        item = self._data[idx]
        if isinstance(item, tuple):
            return self._fn(*item)
        return self._fn(item)


class _TransformFirstClosure:
    """A picklable callable applying ``fn`` to its first argument only."""

    def __init__(self, fn):
        self._fn = fn

    def __call__(self, x, *args):
        if args:
            return (self._fn(x),) + args
        return self._fn(x)


class _SampledDataset(Dataset):
    """The samples of ``dataset`` at the indices of ``sampler`` (read once, at creation)."""

    def __init__(self, dataset, sampler):
        self._dataset = dataset
        self._sampler = sampler
        self._indices = list(iter(sampler))

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, idx):
        return self._dataset[self._indices[idx]]


class ArrayDataset(Dataset):
    """Several equally long arrays/lists/datasets zipped: sample ``i`` is ``(a[i], b[i], ...)``.

    One-dimensional NDArrays are kept as NumPy arrays so that a sample is a scalar, as in
    MXNet; with a single argument the sample is ``a[i]`` itself.
    """

    def __init__(self, *args):
        assert len(args) > 0, "Needs at least 1 arrays"
        self._length = len(args[0])
        self._data = []
        for i, data in enumerate(args):
            assert len(data) == self._length, (
                f"All arrays must have the same length; array[0] has length {self._length} "
                f"while array[{i + 1}] has {len(data)}.")
            if isinstance(data, NDArray) and data.ndim == 1:
                data = data.asnumpy()
            self._data.append(data)

    def __getitem__(self, idx):
        if len(self._data) == 1:
            return self._data[0][idx]
        return tuple(data[idx] for data in self._data)

    def __len__(self) -> int:
        return self._length


# ---- RecordIO --------------------------------------------------------------------------
class RecordFileDataset(Dataset):
    """The raw records (bytes) of a RecordIO ``.rec`` file, in the order of its ``.idx``.

    The index file sits beside it with the extension ``.idx`` and holds ``key\\toffset``
    lines, as MXNet's ``MXIndexedRecordIO`` writes them.
    """

    def __init__(self, filename: str):
        self.idx_file = os.path.splitext(filename)[0] + ".idx"
        self.filename = filename
        for path in (filename, self.idx_file):
            if not os.path.isfile(path):
                raise MXNetError(f"RecordFileDataset: {path} does not exist")
        self.keys: list[int] = []
        self._offsets: dict[int, int] = {}
        with open(self.idx_file) as fidx:
            for n, line in enumerate(fidx, 1):
                line = line.strip()
                if not line:
                    continue
                parts = line.split("\t")
                try:
                    key, offset = int(parts[0]), int(parts[1])
                except (ValueError, IndexError):
                    raise MXNetError(f"{self.idx_file}:{n}: expected 'key<TAB>offset', "
                                     f"got {line!r}") from None
                self._offsets[key] = offset
                self.keys.append(key)
        self._local = threading.local()

    def _file(self):
        # one handle per process and thread: forked DataLoader workers must not share the
        # parent's file position
        f = getattr(self._local, "f", None)
        if f is None or getattr(self._local, "pid", None) != os.getpid():
            f = self._local.f = open(self.filename, "rb")
            self._local.pid = os.getpid()
        return f

    def read_idx(self, key: int) -> bytes:
        """The record stored under ``key``."""
        f = self._file()
        f.seek(self._offsets[key])
        rec = read_record(f, self.filename)
        if rec is None:
            raise MXNetError(f"{self.filename}: no record at offset {self._offsets[key]}")
        return rec

    def __getitem__(self, idx):
        return self.read_idx(self.keys[idx])

    def __len__(self) -> int:
        return len(self.keys)

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_local"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()


class _DownloadedDataset(Dataset):
    """Base of the vision datasets: ``_data`` and ``_label`` filled by ``_get_data``."""

    def __init__(self, root: str | None, transform: Callable | None):
        self._transform = transform
        self._data = None
        self._label = None
        self._root = os.path.expanduser(root) if root is not None else None
        self._get_data()

    def __getitem__(self, idx):
        if self._transform is not None:
            return self._transform(self._data[idx], self._label[idx])
        return self._data[idx], self._label[idx]

    def __len__(self) -> int:
        return len(self._label)

    def _get_data(self):
        raise TypeError(f"{type(self).__name__} must define _get_data")
