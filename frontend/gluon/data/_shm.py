"""Shared-memory batch transport of DataLoader workers, and its housekeeping.

A worker writes each array of a batch into a file ``<prefix>-<worker pid>-<n>`` in
``/dev/shm`` and sends (path, shape, dtype); the main process maps the file and unlinks it at
once. Files of batches never received are removed by the pool's shutdown, by a worker that
finds its parent gone, and, when the whole process tree was killed (SIGKILL, the OOM killer),
by the next DataLoader of any process: each pool holds an ``flock`` on ``<prefix>.lock`` for
its life (its workers inherit it), so a lock nobody holds marks files nobody will read.
"""
from __future__ import annotations

import fcntl
import glob
import mmap
import os
import tempfile

import numpy as np

from ember.ndarray import NDArray

PREFIX = "ember-dataloader-"


def _shm_dir() -> str:
    d = "/dev/shm"
    return d if os.path.isdir(d) and os.access(d, os.W_OK) else tempfile.gettempdir()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_files(directory: str, prefix: str) -> None:
    """Unlink every segment (and stack dump) file of the pool named ``prefix``."""
    for path in glob.glob(os.path.join(glob.escape(directory), glob.escape(prefix) + "-*")):
        _unlink(path)


def hold_lock(directory: str, prefix: str) -> int:
    """Create ``<prefix>.lock`` already locked (made under a temporary name, locked, then
    renamed, so a sweeper never sees it unlocked); the returned fd keeps the lock."""
    final = os.path.join(directory, prefix + ".lock")
    tmp = final + ".new"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.rename(tmp, final)
    return fd


def drop_lock(directory: str, prefix: str, fd: int) -> None:
    """Remove the pool's lock file and close its fd (the pool is shut down)."""
    _unlink(os.path.join(directory, prefix + ".lock"))
    try:
        os.close(fd)
    except OSError:
        pass


def sweep_stale(directory: str) -> int:
    """Remove the files of DataLoader pools whose processes are all dead; returns how many
    pools were cleaned. A lock still held (by a live parent or worker) is left alone."""
    cleaned = 0
    for lock in glob.glob(os.path.join(glob.escape(directory), PREFIX + "*.lock")):
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a live pool
        try:
            remove_files(directory, os.path.basename(lock)[:-len(".lock")])
            _unlink(lock)
            cleaned += 1
        finally:
            os.close(fd)
    return cleaned


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

    def discard(self):
        """Unlink the files of a batch that failed (it is never sent)."""
        for _arr, path in self.owned.values():
            _unlink(path)
        self.owned.clear()

    def forget(self):
        self.owned.clear()


_SEGMENTS: _Segments | None = None  # set in worker processes only


def set_segments(segments: _Segments | None) -> None:
    """Make :func:`_shared_empty` of this (worker) process allocate in ``segments``."""
    global _SEGMENTS
    _SEGMENTS = segments


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
        _unlink(obj.path)
    elif type(obj) in (list, tuple):
        for o in obj:
            _release(o)
    elif type(obj) is dict:
        for o in obj.values():
            _release(o)
