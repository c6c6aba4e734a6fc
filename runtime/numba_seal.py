"""Sealed numba cache files for ember's kernels: checked before numba unpickles them.

numba's ``cache=True`` keeps, per function, an index (``*.nbi``: two pickles, numba's version
then the source stamp and a map signature -> data file) and data files (``*.nbc``: a pickle
holding the machine code), and loads them with ``pickle`` (numba/core/caching.py,
``IndexDataCacheFile``). A planted or damaged file would thus run code, or crash every later
process with a raw ``EOFError``. For the files of ember's generated kernels (file names
start with the kernel module's stem, ``<backend>_<24 hex digits>.``) this module wraps
that class:

- on save, the bytes numba would write get a header, ``EMBERNB1`` + SHA-256 of the rest, and
  are written the way numba writes (temporary file + ``os.replace``);
- on load, a file is used only when it is a regular file owned by this user, not group- or
  world-writable, and its header matches its content. Anything else (truncated by a crash,
  bit flips, written by someone else, an older unsealed file) is deleted and treated as
  absent: numba compiles the kernel again and saves a good file (``discarded`` counts them).

Files of other numba functions are left to numba as they are. numba-cuda has its own copy of
the class (``numba.cuda.core.caching``) for its kernels' files: :func:`install_cuda` wraps it
the same way when the first CUDA kernel module loads.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import stat
import threading
from pathlib import Path

MODULE_PREFIX = "ember_kernels."
_NAME = re.compile(r"[a-z0-9]+_[0-9a-f]{24}\.")  # the kernel cache's file stems
_HEADER = b"EMBERNB1"
_LOCK = threading.Lock()
discarded = 0  # sealed files found bad and deleted (for tests and reports)
_installed = False


def unsafe_reason(st: os.stat_result) -> str | None:
    """Why a file or directory with this ``stat`` may not be trusted (None: it may)."""
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}, not by this user ({os.geteuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"group- or world-writable (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _ours(path: str) -> bool:
    return _NAME.match(os.path.basename(path)) is not None


def seal(payload: bytes) -> bytes:
    """``payload`` with its header."""
    return _HEADER + hashlib.sha256(payload).digest() + payload


def unseal(data: bytes | None) -> bytes | None:
    """The payload of sealed bytes whose header matches their content, else None."""
    n = len(_HEADER) + 32
    if data is not None and data[:len(_HEADER)] == _HEADER and \
            hashlib.sha256(data[n:]).digest() == data[len(_HEADER):n]:
        return data[n:]
    return None


def read_sealed(path: str) -> bytes | None:
    """The payload of the sealed file ``path``; None when it is missing, or bad (then it is
    deleted)."""
    global discarded
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError:
        data = None
    else:
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            ok = stat.S_ISREG(st.st_mode) and unsafe_reason(st) is None
            data = f.read() if ok else None
    payload = unseal(data)
    if payload is not None:
        return payload
    with _LOCK:
        discarded += 1
    try:
        os.unlink(path)
    except OSError:
        pass
    return None


def remove_numba_files(module_file: Path) -> None:
    """Delete numba's files (and any old ``.pyc``) of the kernel module ``module_file``."""
    pycache = module_file.parent / "__pycache__"
    if pycache.is_dir():
        for f in pycache.glob(f"{module_file.stem}.*"):
            f.unlink(missing_ok=True)


def _write(self, path: str, payload: bytes) -> None:
    with self._open_for_write(path) as f:
        f.write(seal(payload))


def _load_index(self, original):
    if not _ours(self._index_path):
        return original(self)
    payload = read_sealed(self._index_path)
    if payload is None:
        return {}
    f = io.BytesIO(payload)   # ember's own file: read_sealed checked owner, mode and SHA-256
    if pickle.load(f) != self._version:
        return {}
    stamp, overloads = pickle.loads(f.read())  # the same sealed, checked payload
    return overloads if stamp == self._source_stamp else {}


def _save_index(self, overloads, original):
    if not _ours(self._index_path):
        return original(self, overloads)
    payload = pickle.dumps(self._version, protocol=-1) + \
        self._dump((self._source_stamp, overloads))
    _write(self, self._index_path, payload)


def _load_data(self, name, original):
    path = self._data_path(name)
    if not _ours(path):
        return original(self, name)
    payload = read_sealed(path)
    if payload is None:
        raise OSError(f"{path}: missing or damaged")  # numba's load() then recompiles
    return pickle.loads(payload)  # only ember's own sealed file (owner, mode, SHA-256 checked)


def _save_data(self, name, data, original):
    path = self._data_path(name)
    if not _ours(path):
        return original(self, name, data)
    _write(self, path, self._dump(data))


def _patch(cls) -> None:
    """Route ``cls``'s (an ``IndexDataCacheFile``) index and data IO through the seal."""
    for meth, wrapper in (("_load_index", _load_index), ("_save_index", _save_index),
                          ("_load_data", _load_data), ("_save_data", _save_data)):
        original = getattr(cls, meth)

        def patched(self, *args, _w=wrapper, _o=original):
            return _w(self, *args, _o)
        patched.__name__ = meth
        patched.__doc__ = original.__doc__
        setattr(cls, meth, patched)


def _pin_locator() -> None:
    """Keep numba's files of ember's kernel modules in their own ``__pycache__`` (numba's
    in-tree place), ahead of ``NUMBA_CACHE_DIR`` and numba's user-wide directory: the kernel
    cache looks for them there (``KernelCache._compiled``, ``remove_numba_files``), in its
    0700 directory. With ``NUMBA_CACHE_DIR`` set, a warm process found no kernel compiled:
    its precompile workers loaded all of them again and its first steps ran the fallbacks
    (ResNet-18's warm first step 2.1 -> 3.0 s)."""
    from numba.core import caching

    class KernelCacheLocator(caching.InTreeCacheLocator):
        @classmethod
        def from_function(cls, py_func, py_file):
            if not _NAME.match(os.path.basename(py_file)):
                return None
            return super().from_function(py_func, py_file)

    caching.CacheImpl._locator_classes = [KernelCacheLocator, *caching.CacheImpl._locator_classes]


def install() -> None:
    """Wrap numba's ``IndexDataCacheFile`` and pin the kernels' files (once per process)."""
    global _installed
    with _LOCK:
        if _installed:
            return
        from numba.core.caching import IndexDataCacheFile as C
        _patch(C)
        _pin_locator()
        from .prebuilt import install_locator
        install_locator()   # ahead of the pinned one: it declines the kernel modules
        _installed = True


_cuda_installed = False


def install_cuda() -> None:
    """Wrap numba-cuda's own copy of ``IndexDataCacheFile`` (the cache files of ember's CUDA
    kernels), once; called when the first CUDA kernel module is loaded, so that processes
    without the CUDA backend never import numba-cuda."""
    global _cuda_installed
    with _LOCK:
        if _cuda_installed:
            return
        from numba.core.caching import IndexDataCacheFile as CPU
        from numba.cuda.core.caching import IndexDataCacheFile as C
        if C is not CPU:  # the same class would be wrapped twice
            _patch(C)
        _cuda_installed = True
