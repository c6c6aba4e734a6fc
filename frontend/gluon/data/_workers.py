"""DataLoader workers: shared-memory batch transfer, the worker process pool, and the
iterator that keeps ``prefetch`` batches in flight (threads or processes)."""
from __future__ import annotations

import glob
import mmap
import multiprocessing
import os
import pickle
import queue
import secrets
import signal
import tempfile
import time
import traceback
import weakref
from multiprocessing.pool import ThreadPool

import numpy as np

from ember.base import MXNetError
from ember.context import cpu_pinned
from ember.ndarray import NDArray


def _as_in_context(data, ctx):
    if isinstance(data, NDArray):
        return data.as_in_context(ctx)
    if isinstance(data, list | tuple):
        return [_as_in_context(d, ctx) for d in data]
    return data


# ---- shared memory -----------------------------------------------------------------------
def _shm_dir() -> str:
    d = "/dev/shm"
    return d if os.path.isdir(d) and os.access(d, os.W_OK) else tempfile.gettempdir()


class _Segments:
    """In a worker: the shared-memory files made for the batch being built."""

    def __init__(self, directory: str, prefix: str):
        self.directory, self.prefix = directory, prefix
        self.count = 0
        self.owned: dict[int, tuple[np.ndarray, str]] = {}

    def empty(self, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes == 0 or dtype.hasobject:
            return np.empty(shape, dtype)
        self.count += 1
        path = os.path.join(self.directory, f"{self.prefix}-{os.getpid()}-{self.count}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, nbytes)
            mm = mmap.mmap(fd, nbytes)
        finally:
            os.close(fd)
        arr = np.frombuffer(mm, dtype=dtype).reshape(shape)
        self.owned[id(arr)] = (arr, path)
        return arr

    def export(self, obj):
        """``obj`` with each array replaced by a handle to a shared file holding it."""
        if isinstance(obj, NDArray | np.ndarray):
            arr = obj._data if isinstance(obj, NDArray) else obj
            if arr.size == 0 or arr.dtype.hasobject:
                return obj
            path = self._path_of(arr)
            if path is None:
                shared = self.empty(arr.shape, arr.dtype)
                shared[...] = arr
                path = self.owned[id(shared)][1]
            return _SharedArray(path, arr.shape, arr.dtype.str, isinstance(obj, NDArray))
        if type(obj) in (list, tuple):
            return type(obj)(self.export(o) for o in obj)
        if type(obj) is dict:
            return {k: self.export(v) for k, v in obj.items()}
        return obj

    def _path_of(self, arr):
        base = arr
        while base is not None and id(base) not in self.owned:
            base = base.base if isinstance(base.base, np.ndarray) else None
        if base is None or not arr.flags.c_contiguous or arr.nbytes != base.nbytes:
            return None
        if arr.__array_interface__["data"][0] != base.__array_interface__["data"][0]:
            return None
        return self.owned[id(base)][1]

    def forget(self):
        self.owned.clear()


_SEGMENTS: _Segments | None = None  # set in worker processes only


def _shared_empty(shape, dtype) -> np.ndarray:
    return _SEGMENTS.empty(shape, dtype) if _SEGMENTS is not None else np.empty(shape, dtype)


class _SharedArray:
    """A handle to an array a worker left in a shared-memory file."""

    __slots__ = ("path", "shape", "dtype", "is_nd")

    def __init__(self, path, shape, dtype, is_nd):
        self.path, self.shape, self.dtype, self.is_nd = path, shape, dtype, is_nd


def _import(obj):
    """Map the shared files of a worker's batch into arrays (and unlink the files)."""
    if isinstance(obj, _SharedArray):
        dtype = np.dtype(obj.dtype)
        fd = os.open(obj.path, os.O_RDWR)
        try:
            mm = mmap.mmap(fd, int(np.prod(obj.shape, dtype=np.int64)) * dtype.itemsize)
        finally:
            os.close(fd)
            os.unlink(obj.path)
        arr = np.frombuffer(mm, dtype=dtype).reshape(obj.shape)
        return NDArray(arr) if obj.is_nd else arr
    if type(obj) in (list, tuple):
        return type(obj)(_import(o) for o in obj)
    if type(obj) is dict:
        return {k: _import(v) for k, v in obj.items()}
    return obj


def _release(obj):
    """Unlink the shared files of a batch nobody will read."""
    if isinstance(obj, _SharedArray):
        try:
            os.unlink(obj.path)
        except FileNotFoundError:
            pass
    elif type(obj) in (list, tuple):
        for o in obj:
            _release(o)
    elif type(obj) is dict:
        for o in obj.values():
            _release(o)


# ---- worker processes --------------------------------------------------------------------
class _WorkerError:
    """An exception raised in a worker, carried to the main process with its traceback."""

    def __init__(self, exc: BaseException, worker_id: int):
        self.exc_type = type(exc)
        self.type_name = type(exc).__qualname__
        self.text = "".join(traceback.format_exception(exc))
        self.worker_id, self.pid = worker_id, os.getpid()

    def reraise(self):
        msg = (f"Caught {self.type_name} in DataLoader worker process {self.worker_id} "
               f"(pid {self.pid}).\nOriginal traceback (most recent call last) in the worker:"
               f"\n{self.text}")
        try:
            exc = self.exc_type(msg) if self.exc_type is not None else MXNetError(msg)
        except Exception:
            exc = MXNetError(msg)
        raise exc


def _worker_loop(dataset, batchify_fn, task_q, result_q, directory, prefix, worker_id, ppid):
    """Build the batches named in ``task_q`` until a None arrives or the parent is gone."""
    global _SEGMENTS
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    _SEGMENTS = segments = _Segments(directory, prefix)
    while True:
        try:
            task = task_q.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != ppid:
                return
            continue
        if task is None:
            return
        tag, idx, samples = task
        try:
            batch = batchify_fn([dataset[i] for i in samples])
            msg = pickle.dumps((tag, idx, True, segments.export(batch)), protocol=-1)
        except Exception as e:
            for _arr, path in segments.owned.values():
                os.unlink(path)
            err = _WorkerError(e, worker_id)
            try:
                msg = pickle.dumps((tag, idx, False, err), protocol=-1)
            except Exception:
                err.exc_type = None  # an exception class defined where pickle can't reach
                msg = pickle.dumps((tag, idx, False, err), protocol=-1)
        segments.forget()
        batch = None
        result_q.put(msg)


def _shutdown_workers(workers, task_q, result_q, directory, prefix):
    """Stop the workers (politely, then by force) and remove every file they left."""
    for _ in workers:
        try:
            task_q.put(None)
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + 2.0
    while any(w.is_alive() for w in workers) and time.monotonic() < deadline:
        try:  # keep the result pipe drained so no worker blocks flushing into it
            _release(pickle.loads(result_q.get(timeout=0.05))[3])
        except (queue.Empty, OSError, EOFError, ValueError):
            pass
    for w in workers:
        if w.is_alive():
            w.terminate()
        w.join(1.0)
    for q in (task_q, result_q):
        q.cancel_join_thread()
        q.close()
    for path in glob.glob(os.path.join(directory, prefix + "-*")):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


class _ProcessPool:
    """Worker processes of one DataLoader; results are routed to the iterator that asked."""

    def __init__(self, num_workers: int, dataset, batchify_fn):
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
        self._task_q, self._result_q = ctx.Queue(), ctx.Queue()
        directory = _shm_dir()
        prefix = f"ember-dataloader-{os.getpid()}-{secrets.token_hex(4)}"
        self._workers = []
        for i in range(num_workers):
            w = ctx.Process(target=_worker_loop, daemon=True,
                            args=(dataset, batchify_fn, self._task_q, self._result_q,
                                  directory, prefix, i, os.getpid()))
            w.start()
            self._workers.append(w)
        self._stash: dict[int, dict[int, tuple]] = {}
        self._next_tag = 0
        self._shutdown = weakref.finalize(self, _shutdown_workers, self._workers,
                                          self._task_q, self._result_q, directory, prefix)

    @property
    def alive(self) -> bool:
        return self._shutdown.alive

    def open_tag(self) -> int:
        self._next_tag += 1
        self._stash[self._next_tag] = {}
        return self._next_tag

    def close_tag(self, tag: int):
        for _ok, payload in self._stash.pop(tag, {}).values():
            _release(payload)

    def submit(self, tag: int, idx: int, samples):
        self._task_q.put((tag, idx, list(samples)))

    def fetch(self, tag: int, idx: int, timeout: float):
        """The result of batch ``idx`` of iterator ``tag``: (ok, payload)."""
        deadline = time.monotonic() + timeout
        stash = self._stash[tag]
        while idx not in stash:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise multiprocessing.TimeoutError(
                    f"Worker timed out after {timeout} seconds. This might be caused by a slow "
                    "transform (increase `timeout`) or too little shared memory (reduce "
                    "`num_workers` or `prefetch`).")
            try:
                raw = self._result_q.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                self._check_workers()
                continue
            rtag, ridx, ok, payload = pickle.loads(raw)
            if rtag in self._stash:
                self._stash[rtag][ridx] = (ok, payload)
            else:  # from an iterator that was dropped
                _release(payload)
        return stash.pop(idx)

    def _check_workers(self):
        for w in self._workers:
            if not w.is_alive():
                code = w.exitcode
                self.shutdown()
                raise MXNetError(f"DataLoader worker (pid {w.pid}) exited unexpectedly with "
                                 f"exit code {code}; the batch it was building is lost")

    def shutdown(self):
        self._shutdown()


class _MultiWorkerIter:
    """One epoch over a worker pool: ``prefetch`` batches in flight, results in order."""

    def __init__(self, pool, batch_sampler, prefetch, timeout, pin_memory, pin_device_id):
        self._pool, self._timeout = pool, timeout
        self._iter = iter(batch_sampler)
        self._len = len(batch_sampler)
        self._pin = cpu_pinned(pin_device_id) if pin_memory else None
        self._sent = self._rcvd = 0
        self._tag = pool.open_tag() if isinstance(pool, _ProcessPool) else None
        self._pending: dict = {}
        if self._tag is not None:
            self._done = weakref.finalize(self, pool.close_tag, self._tag)
        for _ in range(prefetch):
            self._push_next()

    def __len__(self):
        return self._len

    def _push_next(self):
        samples = next(self._iter, None)
        if samples is None:
            return
        if self._tag is not None:
            self._pool.submit(self._tag, self._sent, samples)
        else:
            self._pending[self._sent] = self._pool.apply_async(samples)
        self._sent += 1

    def __next__(self):
        self._push_next()
        if self._rcvd == self._sent:
            self.close()
            raise StopIteration
        try:
            if self._tag is None:
                batch = self._pending.pop(self._rcvd).get(self._timeout)
            else:
                ok, payload = self._pool.fetch(self._tag, self._rcvd, self._timeout)
                if not ok:
                    payload.reraise()
                batch = _import(payload)
        except BaseException:
            self.close()
            raise
        self._rcvd += 1
        return _as_in_context(batch, self._pin) if self._pin is not None else batch

    def __iter__(self):
        return self

    def close(self):
        """Give up the rest of the epoch (its in-flight batches are discarded)."""
        self._rcvd = self._sent
        self._iter = iter(())
        if self._tag is not None:
            self._done()


class _ThreadJobs:
    """A ThreadPool with the ``apply_async(samples)`` shape ``_MultiWorkerIter`` calls."""

    def __init__(self, num_workers, dataset, batchify_fn):
        self.pool = ThreadPool(num_workers)
        self._dataset, self._batchify_fn = dataset, batchify_fn
        self._shutdown = weakref.finalize(self, self.pool.terminate)

    def apply_async(self, samples):
        return self.pool.apply_async(_thread_job, (self._dataset, self._batchify_fn, samples))

    @property
    def alive(self) -> bool:
        return self._shutdown.alive

    def shutdown(self):
        self._shutdown()


def _thread_job(dataset, batchify_fn, samples):
    return batchify_fn([dataset[i] for i in samples])
