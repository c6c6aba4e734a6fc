"""``nd.save`` / ``nd.load``: MXNet 1.x's own binary NDArray-list file, both ways.

The layout, from MXNet 1.9.1's ``NDArray::Save``/``Load`` (src/ndarray/ndarray.cc) and the
dmlc stream serializers it uses; every number is little-endian::

    file   := u64 0x112 (list magic), u64 0 (reserved),
              u64 n, array * n, u64 m (0 or n), name * m     (name := u64 length, utf-8 bytes)
    array  := u32 magic (0xF993FAC9 = V2, 0xF993FACA = V3 with NumPy shape semantics)
              i32 storage type (0 dense, 1 row_sparse, 2 csr)
              [shape storage_shape]                           sparse only
              shape                                           (i32 ndim, i64 dim * ndim)
              i32 dev_type, i32 dev_id, i32 type flag
              [i32 aux_type, shape aux_shape] * num_aux       sparse only
              raw data, [raw aux data] * num_aux
    shape ndim -1 (or 0 before V3) marks a ``None`` array, and nothing follows its shape.

Older files are read too: V1 (magic 0xF993FAC8: no storage type) and the first format,
whose magic word is the ndim, followed by u32 dims. Sparse arrays are read as dense ones
(ember is dense only). ``save`` writes V2, or V3 for the whole file under ``np_shape`` (as
MXNet does) or when an array is 0-d. As MXNet's ``NDArray::Load``, ``load`` reads V3
records only under ``np_shape(True)`` and the others only outside it.
"""
from __future__ import annotations

import io
import math
import os
import re
import secrets

import numpy as np

from ember.base import MXNetError
from ember.context import Context
from ember.util import is_np_shape

from .ndarray import NDArray

__all__ = ["save", "load", "load_frombuffer", "temp_name", "remove_stale_temps", "pid_alive",
           "write_new"]

_LIST_MAGIC = 0x112
_V1, _V2, _V3 = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
_FLAGS = {0: "float32", 1: "float64", 2: "float16", 3: "uint8", 4: "int32", 5: "int8",
          6: "int64", 7: "bool", 8: "int16", 9: "uint16", 10: "uint32", 11: "uint64"}
_BFLOAT16 = 12  # no NumPy dtype: read as float32 (exact)
_FLAG_OF = {np.dtype(v): k for k, v in _FLAGS.items()}
_NUM_AUX = {0: 0, 1: 1, 2: 2}  # dense, row_sparse (indices), csr (indptr, indices)
_MAX_NDIM = 32  # MXNet's limit; a larger ndim in a file is corruption
# A sparse record is read as a dense array, which may be larger than the file: up to this
# many times the file's size (a density of 1/1024), so that a few crafted bytes cannot ask
# for gigabytes (a 108-byte row_sparse record of shape (5e9, 5) would want 93 GiB).
DENSIFY_RATIO = 1024


class _Corrupt(Exception):
    """Internal: what is wrong with the bytes; ``_read_file`` adds the source and offset."""


class _Reader:
    """Bounded little-endian reads from a binary stream of known size."""

    def __init__(self, stream, size: int):
        self.stream, self.size, self.pos = stream, size, 0

    def take(self, n: int, what: str) -> bytes:
        if n > self.size - self.pos:
            raise _Corrupt(f"truncated: {what} needs {n} bytes, {self.size - self.pos} left")
        b = self.stream.read(n)
        if len(b) != n:
            raise _Corrupt(f"truncated: {what} needs {n} bytes, got {len(b)}")
        self.pos += n
        return b

    def num(self, nbytes: int, what: str, signed: bool = False) -> int:
        return int.from_bytes(self.take(nbytes, what), "little", signed=signed)

    def shape(self, what: str, legacy_ndim: int | None = None) -> tuple[int, ...] | None:
        """A shape (i32 ndim, i64 dims); ``None`` for ndim -1. Legacy: u32 dims, ndim given."""
        ndim = self.num(4, f"{what} ndim", True) if legacy_ndim is None else legacy_ndim
        if ndim == -1:
            return None
        if not 0 <= ndim <= _MAX_NDIM:
            raise _Corrupt(f"{what} has ndim {ndim}")
        size = 4 if legacy_ndim is not None else 8
        raw = self.take(size * ndim, f"{what} dims")
        dims = tuple(np.frombuffer(raw, dtype="<u4" if size == 4 else "<i8").tolist())
        if any(d < 0 for d in dims):
            if -1 in dims and all(d >= -1 for d in dims):
                return None  # unknown dims: MXNet's shape_is_none
            raise _Corrupt(f"{what} has a negative dimension {dims}")
        if math.prod(d for d in dims if d) >= 1 << 58:  # NumPy cannot even describe it
            raise _Corrupt(f"{what} has an impossible shape {dims}")
        return dims

    def array(self, dtype: np.dtype, shape: tuple[int, ...], what: str) -> np.ndarray:
        count = int(np.prod(shape, dtype=object)) if shape else 1
        nbytes = count * dtype.itemsize
        if nbytes > self.size - self.pos:
            raise _Corrupt(f"truncated: {what} of shape {shape} needs {nbytes} bytes, "
                           f"{self.size - self.pos} left")
        out = np.empty(count, dtype=dtype.newbyteorder("<"))
        if nbytes and self.stream.readinto(memoryview(out).cast("B")) != nbytes:
            raise _Corrupt(f"truncated: {what} of shape {shape}")
        self.pos += nbytes
        return out.astype(dtype, copy=False).reshape(shape)


def _dtype(flag: int, what: str) -> np.dtype:
    if flag == _BFLOAT16:
        return np.dtype(np.uint16)
    if flag not in _FLAGS:
        raise _Corrupt(f"{what} has unknown type flag {flag}")
    return np.dtype(_FLAGS[flag])


def _read_array(r: _Reader, i: int):
    """One array record (any version); ``None`` for MXNet's empty (``is_none``) array."""
    what = f"array {i}"
    magic = r.num(4, f"{what} magic")
    if (magic == _V3) != is_np_shape():  # MXNet's NDArray::Load refuses mixed semantics
        raise _Corrupt(f"{what} was saved in np shape semantics; load it inside "
                       "`with mx.np_shape(True)`" if magic == _V3 else
                       f"{what} was not saved in np shape semantics, but is being loaded in "
                       "them; load it inside `with mx.np_shape(False)`")
    stype, sshape = 0, None
    if magic in (_V2, _V3):
        stype = r.num(4, f"{what} storage type", True)
        if stype not in _NUM_AUX:
            raise _Corrupt(f"{what} has unknown storage type {stype}")
        if _NUM_AUX[stype]:
            sshape = r.shape(f"{what} storage shape")
        shape = r.shape(f"{what} shape")
        if shape is None or (magic == _V2 and not shape):
            return None
    elif magic == _V1:
        shape = r.shape(f"{what} shape")
        if not shape:
            return None
    elif magic <= _MAX_NDIM:  # the first format: the magic word is the ndim
        shape = r.shape(f"{what} shape", legacy_ndim=magic)
        if not shape:
            return None
    else:
        raise _Corrupt(f"{what} has unknown magic number {magic:#x}")
    dev_type, dev_id = r.num(4, f"{what} context", True), r.num(4, f"{what} context", True)
    flag = r.num(4, f"{what} type flag", True)
    dtype = _dtype(flag, what)
    aux = []
    for k in range(_NUM_AUX[stype]):
        aux_flag = r.num(4, f"{what} aux type", True)
        aux_shape = r.shape(f"{what} aux shape {k}")
        if aux_shape is None or sshape is None:
            raise _Corrupt(f"{what} has an unknown sparse storage shape")
        aux.append((_dtype(aux_flag, what), aux_shape))
    if stype:
        dense = math.prod(shape) * dtype.itemsize
        if dense > DENSIFY_RATIO * r.size + (1 << 20):
            raise _Corrupt(f"{what}: a {['', 'row_sparse', 'csr'][stype]} array of shape "
                           f"{shape} would take {dense} bytes dense, more than "
                           f"{DENSIFY_RATIO} times the file's {r.size} bytes")
    data = r.array(dtype, shape if not stype else sshape, f"{what} data")
    aux_data = [r.array(t, s, f"{what} aux data {k}") for k, (t, s) in enumerate(aux)]
    if flag == _BFLOAT16:
        data = (data.astype(np.uint32) << 16).view(np.float32)
    if stype:
        data = _densify(stype, shape, data, aux_data, what)
    if not data.flags.c_contiguous:
        data = data.copy()
    ctx = _context(dev_type, dev_id)
    if ctx.device_type == "gpu":  # saved from a GPU and one is here: load it there
        from .device import place
        return NDArray(place(data, ctx), ctx)
    return NDArray(data, ctx)


def _densify(stype: int, shape, data, aux, what: str) -> np.ndarray:
    """A row_sparse or csr record as a dense array (its indices checked first)."""
    dense = np.zeros(shape, dtype=data.dtype)
    try:
        if stype == 1:
            rows = aux[0].astype(np.int64)
            if rows.ndim != 1 or data.shape != (len(rows),) + tuple(shape[1:]) or \
                    (rows < 0).any() or (rows >= shape[0]).any():
                raise ValueError
            dense[rows] = data
        else:
            indptr, cols = aux[0].astype(np.int64), aux[1].astype(np.int64)
            if len(shape) != 2 or indptr.shape != (shape[0] + 1,) or cols.ndim != 1 or \
                    indptr[0] != 0 or indptr[-1] != len(cols) or (np.diff(indptr) < 0).any() \
                    or data.shape != cols.shape or (cols < 0).any() or (cols >= shape[1]).any():
                raise ValueError
            rows = np.repeat(np.arange(shape[0]), np.diff(indptr))
            dense[rows, cols] = data
    except (ValueError, IndexError, TypeError):
        raise _Corrupt(f"{what}: inconsistent {['', 'row_sparse', 'csr'][stype]} "
                       f"indices for shape {shape}") from None
    return dense


def _context(dev_type: int, dev_id: int) -> Context:
    """Where MXNet would put the array: the saved GPU when one exists, else ``cpu(0)``."""
    if dev_type == 2:
        from ember.context import num_gpus
        if 0 <= dev_id < num_gpus():
            return Context("gpu", dev_id)
    return Context("cpu", 0)


def _read_file(stream, size: int, source: str):
    r = _Reader(stream, size)
    try:
        if r.num(8, "list magic") != _LIST_MAGIC:
            raise _Corrupt("not an MXNet NDArray file (bad list magic number)")
        r.num(8, "reserved header")
        n = r.num(8, "array count")
        if n > size:
            raise _Corrupt(f"array count {n} is impossible for a {size}-byte file")
        arrays = [_read_array(r, i) for i in range(n)]
        m = r.num(8, "name count")
        if m not in (0, n):
            raise _Corrupt(f"{m} names for {n} arrays")
        names = []
        for i in range(m):
            length = r.num(8, f"name {i} length")
            try:
                names.append(r.take(length, f"name {i}").decode("utf-8"))
            except UnicodeDecodeError:
                raise _Corrupt(f"name {i} is not valid UTF-8") from None
    except _Corrupt as e:
        raise MXNetError(f"cannot load NDArray file {source}: {e} (at byte {r.pos})") from None
    return dict(zip(names, arrays, strict=True)) if names else arrays


def load(fname: str | os.PathLike) -> list | dict:
    """Load what ``save`` (ember's or MXNet's ``mx.nd.save``) wrote: a list or a dict.

    A file saved from a dict gives a dict str -> NDArray in file order, else a list.
    Corrupt or truncated files raise ``MXNetError`` naming the file and the problem.
    """
    if not isinstance(fname, str | os.PathLike):
        raise TypeError("fname required to be a string")
    try:
        with open(fname, "rb") as f:
            return _read_file(f, os.fstat(f.fileno()).st_size, repr(os.fspath(fname)))
    except OSError as e:
        raise MXNetError(f"cannot load NDArray file {os.fspath(fname)!r}: "
                         f"{e.strerror or e}") from e


def load_frombuffer(buf: bytes | bytearray | memoryview) -> list | dict:
    """``load`` from the bytes of such a file."""
    if isinstance(buf, str):
        buf = buf.encode("latin-1")
    if not isinstance(buf, bytes | bytearray | memoryview):
        raise TypeError("buf required to be a string or bytes")
    buf = bytes(buf)
    return _read_file(io.BytesIO(buf), len(buf), "<buffer>")


# ---- writing -------------------------------------------------------------------------------------
def _items(data):
    """(arrays, names or None) from an NDArray, a list of them or a dict str -> NDArray."""
    if isinstance(data, NDArray):
        return [data], None
    if isinstance(data, dict):
        if any(not isinstance(k, str) for k in data) or \
                any(not isinstance(v, NDArray) for v in data.values()):
            raise TypeError("save only accept dict str->NDArray or list of NDArray")
        return list(data.values()), list(data.keys())
    if isinstance(data, list | tuple):
        if any(not isinstance(v, NDArray) for v in data):
            raise TypeError("save only accept dict str->NDArray or list of NDArray")
        return list(data), None
    raise ValueError("data needs to either be a NDArray, dict of str, NDArray pairs "
                     "or a list of NDarrays.")


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "little")


def _write_array(f, x: NDArray, magic: int, what: str) -> None:
    a = x._data if type(x._data) is np.ndarray else x.asnumpy()  # (a GPU array: its copy)
    flag = _FLAG_OF.get(a.dtype.newbyteorder("="))
    if flag is None:
        raise MXNetError(f"{what} has dtype {a.dtype}, which MXNet's file format cannot hold")
    shape = a.shape
    a = np.ascontiguousarray(a.reshape(-1), dtype=a.dtype.newbyteorder("<"))
    ctx = x.context
    head = np.array([magic, 0, len(shape)], dtype="<u4").tobytes()
    f.write(head + np.array(shape, dtype="<i8").tobytes()
            + np.array([ctx.device_typeid, ctx.device_id, flag], dtype="<i4").tobytes())
    f.write(memoryview(a).cast("B"))


def _write_file(f, arrays, names) -> None:
    magic = _V3 if is_np_shape() or any(x.ndim == 0 for x in arrays) else _V2
    f.write(_u64(_LIST_MAGIC) + _u64(0) + _u64(len(arrays)))
    for i, x in enumerate(arrays):
        _write_array(f, x, magic, f"array {names[i]!r}" if names else f"array {i}")
    encoded = [k.encode("utf-8") for k in names or ()]
    f.write(_u64(len(encoded)) + b"".join(_u64(len(k)) + k for k in encoded))


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a writer whose temporary files are still in use)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, under another user
        return True
    return True


def temp_name(path: str | os.PathLike) -> str:
    """A fresh temporary name next to ``path``: ``.BASE.PID-HEX.tmp`` (the writer's pid lets
    :func:`remove_stale_temps` tell a killed writer's litter from a live one's files)."""
    folder, base = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(folder, f".{base}.{os.getpid()}-{secrets.token_hex(6)}.tmp")


def remove_stale_temps(path: str | os.PathLike) -> None:
    """Delete temporary files of :func:`temp_name`'s pattern for ``path`` whose writer is
    dead (left by a process killed while saving)."""
    folder, base = os.path.split(os.path.abspath(os.fspath(path)))
    pat = re.compile(rf"\.{re.escape(base)}\.(\d+)-[0-9a-f]{{12}}\.tmp")
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for n in names:
        m = pat.fullmatch(n)
        if m and not pid_alive(int(m.group(1))):
            try:
                os.unlink(os.path.join(folder, n))
            except OSError:
                pass


def save(fname: str | os.PathLike, data) -> None:
    """Save an NDArray, a list of them or a dict str -> NDArray in MXNet's file format.

    The bytes are those ``mx.nd.save`` writes for the same arrays. The file is written to a
    temporary name in the same directory and renamed into place, so a failure leaves any
    earlier file untouched and no partial file behind (temporary files of a killed earlier
    save are removed).
    """
    if not isinstance(fname, str | os.PathLike):
        raise TypeError("fname required to be a string")
    _items(data)  # type errors before the disk is touched
    path = os.fspath(fname)
    remove_stale_temps(path)
    tmp = temp_name(path)
    try:
        write_new(tmp, data)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, MXNetError):
            raise MXNetError(f"cannot save NDArray file {path!r}: {e}") from None
        if isinstance(e, OSError):
            raise MXNetError(f"cannot save NDArray file {path!r}: {e.strerror or e}") from e
        raise


def write_new(path: str, data) -> None:
    """Write ``data`` (as :func:`save` takes it) to the new file ``path`` (it must not
    exist) and flush it to disk; no rename: callers that need atomicity rename it."""
    arrays, names = _items(data)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                 0o666)
    with os.fdopen(fd, "wb") as f:
        _write_file(f, arrays, names)
        f.flush()
        os.fsync(f.fileno())
