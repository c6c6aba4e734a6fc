"""``DataLoader``: mini-batches from a dataset, built in this process, threads or processes.

With ``num_workers > 0`` (and ``thread_pool=False``) worker processes, forked once per loader
and kept across epochs like MXNet 1.9.1's pool, each build whole batches. A batch's arrays go
back through shared memory, not pickled through a pipe: the worker writes each array into a
file in ``/dev/shm`` (``default_mp_batchify_fn`` stacks samples straight into it), sends only
(path, shape, dtype), and the main process maps the file and unlinks it, so the NDArray it
hands out is backed by that mapping without a copy. Batches are requested ``prefetch`` ahead
and returned in order; an exception in a worker is raised again here with its traceback.
Workers are forked only once ember's numba warm-up thread is done and under numba's compiler
lock (``_forksafe``), and a late batch's error shows the line each worker is in.
"""
from __future__ import annotations

import threading

import numpy as np

from ember.context import cpu_pinned
from ember.ndarray import NDArray

from . import sampler as _sampler
from ._workers import _as_in_context, _MultiWorkerIter, _ProcessPool, _shared_empty, _ThreadJobs

__all__ = ["DataLoader", "default_batchify_fn", "default_mp_batchify_fn"]


# ---- batchify ----------------------------------------------------------------------------
def default_batchify_fn(data: list):
    """Stack a list of samples into a batch: NDArrays and NumPy arrays are stacked on a new
    first axis, numbers become an NDArray of NumPy's dtype for them, tuple samples are
    batchified element-wise into a list."""
    return _batchify(data, np.empty)


def default_mp_batchify_fn(data: list):
    """:func:`default_batchify_fn` that, in a worker process, stacks into shared memory."""
    return _batchify(data, _shared_empty)


def _batchify(data, empty):
    first = data[0]
    if isinstance(first, NDArray):
        out = empty((len(data),) + first.shape, first._data.dtype)
        np.stack([d._data for d in data], out=out)
        return NDArray(out, first._ctx)
    if isinstance(first, tuple):
        return [_batchify(list(column), empty) for column in zip(*data)]
    arr = np.asarray(data)
    out = empty(arr.shape, arr.dtype)
    out[...] = arr
    return NDArray(out)


# ---- the loader --------------------------------------------------------------------------
class DataLoader:
    """Loads a dataset in mini-batches (MXNet 1.9.1's ``gluon.data.DataLoader``).

    Give ``batch_size`` (with optional ``shuffle`` or ``sampler``, and ``last_batch`` of
    'keep', 'discard' or 'rollover') or a ``batch_sampler`` yielding lists of indices.
    ``batchify_fn`` merges samples (default :func:`default_batchify_fn`). ``num_workers``
    worker processes (threads with ``thread_pool=True``) build batches, ``prefetch`` of them
    (default ``2 * num_workers``) in flight; a batch not ready after ``timeout`` seconds
    raises ``multiprocessing.TimeoutError`` (also an ``MXNetError``) showing where each worker
    is. ``pin_memory`` copies batches to
    ``cpu_pinned(pin_device_id)``. ``auto_reload`` (MXNet 1.9.1) starts the next epoch's
    prefetch as soon as an epoch ends; ``try_nopython`` (MXNet 2.x) is accepted for source
    compatibility: ember always runs the Python pipeline.
    """

    def __init__(self, dataset, batch_size: int | None = None, shuffle: bool = False,
                 sampler=None, last_batch: str | None = None, batch_sampler=None,
                 batchify_fn=None, num_workers: int = 0, pin_memory: bool = False,
                 pin_device_id: int = 0, prefetch: int | None = None, thread_pool: bool = False,
                 timeout: float = 120, auto_reload: bool = False, try_nopython=None):
        self._dataset = dataset
        self._pin_memory, self._pin_device_id = pin_memory, pin_device_id
        self._thread_pool = thread_pool
        assert timeout > 0, f"timeout must be positive, given {timeout}"
        self._timeout = timeout
        if batch_sampler is None:
            if batch_size is None:
                raise ValueError("batch_size must be specified unless batch_sampler is specified")
            if sampler is None:
                sampler = (_sampler.RandomSampler(len(dataset)) if shuffle
                           else _sampler.SequentialSampler(len(dataset)))
            elif shuffle:
                raise ValueError("shuffle must not be specified if sampler is specified")
            batch_sampler = _sampler.BatchSampler(sampler, batch_size, last_batch or "keep")
        elif batch_size is not None or shuffle or sampler is not None or last_batch is not None:
            raise ValueError("batch_size, shuffle, sampler and last_batch must not be specified "
                             "if batch_sampler is specified.")
        self._batch_sampler = batch_sampler
        self._num_workers = num_workers if num_workers >= 0 else 0
        self._prefetch = max(0, int(prefetch) if prefetch is not None else 2 * self._num_workers)
        if batchify_fn is None:
            batchify_fn = default_mp_batchify_fn if self._num_workers > 0 else default_batchify_fn
        self._batchify_fn = batchify_fn
        self._worker_pool = None
        self._lock = threading.Lock()
        self.auto_reload = auto_reload
        self._iter = None
        if auto_reload:
            self.refresh()

    def _pool(self):
        with self._lock:
            if self._worker_pool is None or not self._worker_pool.alive:
                kind = _ThreadJobs if self._thread_pool else _ProcessPool
                self._worker_pool = kind(self._num_workers, self._dataset, self._batchify_fn)
            return self._worker_pool

    def _prefetch_iter(self):
        if self._num_workers == 0:
            return self._same_process_iter()
        return _MultiWorkerIter(self._pool(), self._batch_sampler, self._prefetch,
                                self._timeout, self._pin_memory, self._pin_device_id)

    def _same_process_iter(self):
        pin = cpu_pinned(self._pin_device_id) if self._pin_memory else None
        for batch in self._batch_sampler:
            ret = self._batchify_fn([self._dataset[idx] for idx in batch])
            yield _as_in_context(ret, pin) if pin is not None else ret

    def __iter__(self):
        if self._iter is None:
            self.refresh()
        it, self._iter = self._iter, None  # an iterator is used by one loop only
        yield from it
        if self._iter is None and self.auto_reload:
            self.refresh()

    def __len__(self) -> int:
        return len(self._batch_sampler)

    def refresh(self):
        """Start a new epoch's iterator now (its prefetch begins at once)."""
        self._iter = self._prefetch_iter()

    def clean(self):
        """Drop the prefetched iterator; prefetching starts again at the next ``iter()``."""
        self._iter = None

    def close(self):
        """Shut the worker processes or threads down now (they also stop when the loader is
        garbage-collected); a later iteration starts new ones."""
        self._iter = None
        if self._worker_pool is not None:
            self._worker_pool.shutdown()
