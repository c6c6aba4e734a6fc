"""Samplers: iterables of dataset indices, and of mini-batches of them (``mx.gluon.data``)."""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

__all__ = ["Sampler", "SequentialSampler", "RandomSampler", "FilterSampler", "BatchSampler",
           "SplitSampler"]

_LAST_BATCH = ("keep", "discard", "rollover")


class Sampler:
    """Base class of samplers: subclasses define ``__iter__`` and ``__len__``."""

    def __iter__(self) -> Iterator:
        raise TypeError(f"{type(self).__name__} must define __iter__")

    def __len__(self) -> int:
        raise TypeError(f"{type(self).__name__} must define __len__")


class SequentialSampler(Sampler):
    """Indices ``start, start+1, ..., start+length-1`` in order."""

    def __init__(self, length: int, start: int = 0):
        self._length = length
        self._start = start

    def __iter__(self) -> Iterator[int]:
        return iter(range(self._start, self._start + self._length))

    def __len__(self) -> int:
        return self._length


class RandomSampler(Sampler):
    """A permutation of ``[0, length)``, drawn anew from NumPy's global RandomState per epoch."""

    def __init__(self, length: int):
        self._length = length

    def __iter__(self) -> Iterator[int]:
        indices = np.arange(self._length)
        np.random.shuffle(indices)
        return iter(indices.tolist())

    def __len__(self) -> int:
        return self._length


class FilterSampler(Sampler):
    """Indices of the samples of ``dataset`` for which ``fn(sample)`` is true."""

    def __init__(self, fn: Callable, dataset):
        self._fn = fn
        self._dataset = dataset
        self._indices = [i for i, sample in enumerate(_iter_dataset(dataset)) if fn(sample)]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices)

    def __len__(self) -> int:
        return len(self._indices)


class SplitSampler(Sampler):
    """The indices of part ``part_index`` of ``num_parts`` equal parts of ``[0, length)``,
    shuffled per epoch (``shuffle=False``: in order): each rank of a data-parallel job reads
    its own shard (MXNet's distributed-training example sampler). ``num_parts`` and
    ``part_index`` default to the job's size and this process' rank
    (``ember.distributed``); the last ``length % num_parts`` samples are left out, so every
    rank takes the same number of steps."""

    def __init__(self, length: int, num_parts: int | None = None,
                 part_index: int | None = None, shuffle: bool = True):
        if num_parts is None or part_index is None:
            from ember.kvstore import _mpi
            world = _mpi.world() if _mpi.initialized() else None
            num_parts = (world.size if world else 1) if num_parts is None else num_parts
            part_index = (world.rank if world else 0) if part_index is None else part_index
        if num_parts < 1 or not 0 <= part_index < num_parts:
            raise ValueError(f"SplitSampler: part_index {part_index} is not in "
                             f"[0, {num_parts})")
        self._part_len = length // num_parts
        self._start = self._part_len * part_index
        self._shuffle = shuffle

    def __iter__(self) -> Iterator[int]:
        indices = np.arange(self._start, self._start + self._part_len)
        if self._shuffle:
            np.random.shuffle(indices)
        return iter(indices.tolist())

    def __len__(self) -> int:
        return self._part_len


def _iter_dataset(dataset):
    # datasets index by position; plain iteration of a Dataset would also work through
    # __getitem__ raising IndexError, but not every Dataset raises it at the end
    for i in range(len(dataset)):
        yield dataset[i]


class BatchSampler(Sampler):
    """Groups the indices of ``sampler`` into lists of ``batch_size``.

    ``last_batch`` says what happens to a final incomplete batch: ``'keep'`` yields it,
    ``'discard'`` drops it, ``'rollover'`` carries its indices into the next epoch.
    """

    def __init__(self, sampler, batch_size: int, last_batch: str = "keep"):
        self._sampler = sampler
        self._batch_size = batch_size
        self._last_batch = last_batch
        self._prev: list = []

    def _check_mode(self):
        if self._last_batch not in _LAST_BATCH:
            raise ValueError("last_batch must be one of 'keep', 'discard', or 'rollover', "
                             f"but got {self._last_batch}")

    def __iter__(self) -> Iterator[list]:
        batch, self._prev = self._prev, []
        for i in self._sampler:
            batch.append(i)
            if len(batch) == self._batch_size:
                yield batch
                batch = []
        if batch:
            self._check_mode()
            if self._last_batch == "keep":
                yield batch
            elif self._last_batch == "rollover":
                self._prev = batch

    def __len__(self) -> int:
        self._check_mode()
        if self._last_batch == "keep":
            return (len(self._sampler) + self._batch_size - 1) // self._batch_size
        if self._last_batch == "discard":
            return len(self._sampler) // self._batch_size
        return (len(self._prev) + len(self._sampler)) // self._batch_size
