"""DataLoader workers: the worker process pool and the iterator that keeps ``prefetch``
batches in flight (threads or processes); batches travel through shared memory (``_shm``)."""
from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import secrets
import signal
import time
import traceback
import weakref
from multiprocessing.pool import ThreadPool

from ember.base import MXNetError
from ember.context import cpu_pinned
from ember.ndarray import NDArray

from . import _forksafe, _shm
from ._shm import _import, _release, _Segments, _shared_empty, _shm_dir  # noqa: F401


class DataLoaderTimeout(MXNetError, multiprocessing.TimeoutError):
    """A batch did not arrive in time (a ``multiprocessing.TimeoutError``, as in MXNet)."""


def _as_in_context(data, ctx):
    if isinstance(data, NDArray):
        return data.as_in_context(ctx)
    if isinstance(data, list | tuple):
        return [_as_in_context(d, ctx) for d in data]
    return data


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
    _forksafe.after_fork_in_child()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    dump = _forksafe.register_dump(_forksafe.stack_path(directory, prefix, worker_id))
    segments = _Segments(directory, prefix)
    _shm.set_segments(segments)
    while True:
        try:
            task = task_q.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != ppid:  # killed: nobody will read what is left
                result_q.cancel_join_thread()
                _shm.remove_files(directory, prefix)
                _shm.drop_lock(directory, prefix, -1)
                return
            continue
        if task is None:
            if dump is not None:
                dump.close()
            return
        tag, idx, samples = task
        try:
            batch = batchify_fn([dataset[i] for i in samples])
            msg = pickle.dumps((tag, idx, True, segments.export(batch)), protocol=-1)
        except Exception as e:
            segments.discard()
            err = _WorkerError(e, worker_id)
            try:
                msg = pickle.dumps((tag, idx, False, err), protocol=-1)
            except Exception:
                err.exc_type = None  # an exception class defined where pickle can't reach
                msg = pickle.dumps((tag, idx, False, err), protocol=-1)
        segments.forget()
        batch = None
        result_q.put(msg)


def _shutdown_workers(workers, task_q, result_q, directory, prefix, lock_fd):
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
    _shm.remove_files(directory, prefix)
    _shm.drop_lock(directory, prefix, lock_fd)


class _ProcessPool:
    """Worker processes of one DataLoader; results are routed to the iterator that asked."""

    def __init__(self, num_workers: int, dataset, batchify_fn):
        methods = multiprocessing.get_all_start_methods()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
        self._task_q, self._result_q = ctx.Queue(), ctx.Queue()
        directory = _shm_dir()
        _shm.sweep_stale(directory)  # files left by loaders whose processes were all killed
        prefix = f"{_shm.PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        lock_fd = _shm.hold_lock(directory, prefix)
        self.directory, self.prefix = directory, prefix
        self._stacks = [_forksafe.stack_path(directory, prefix, i) for i in range(num_workers)]
        self._workers = []
        with _forksafe.fork_guard():
            for i in range(num_workers):
                w = ctx.Process(target=_worker_loop, daemon=True,
                                args=(dataset, batchify_fn, self._task_q, self._result_q,
                                      directory, prefix, i, os.getpid()))
                w.start()
                self._workers.append(w)
        self._stash: dict[int, dict[int, tuple]] = {}
        self._next_tag = 0
        self._shutdown = weakref.finalize(self, _shutdown_workers, self._workers, self._task_q,
                                          self._result_q, directory, prefix, lock_fd)

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
                stacks = _forksafe.worker_stacks(self._workers, self._stacks)
                raise DataLoaderTimeout(_forksafe.describe_late(
                    f"batch {idx}", timeout, stacks, [w.pid for w in self._workers]))
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
                batch = self._pool.get(self._pending.pop(self._rcvd), self._rcvd, self._timeout)
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

    def get(self, result, idx: int, timeout: float):
        """The batch of ``result`` (an ``apply_async`` result), or a timeout error saying what
        each thread is doing."""
        try:
            return result.get(timeout)
        except multiprocessing.TimeoutError:
            threads = list(self.pool._pool)
            stacks = _forksafe.thread_stacks(threads)
            raise DataLoaderTimeout(_forksafe.describe_late(
                f"batch {idx}", timeout, stacks, [None] * len(threads))) from None

    @property
    def alive(self) -> bool:
        return self._shutdown.alive

    def shutdown(self):
        self._shutdown()


def _thread_job(dataset, batchify_fn, samples):
    return batchify_fn([dataset[i] for i in samples])
