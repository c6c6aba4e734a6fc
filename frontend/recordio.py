"""``mx.recordio``: MXNet's RecordIO files (what ``im2rec`` writes and ``ImageRecordIter`` reads).

The format is dmlc-core's: each record is ``magic (u32 0xced7230a) | lrec (u32) | data |
zero padding to 4 bytes``, where ``lrec = cflag << 29 | length``. A payload that contains the
magic word at a 4-byte-aligned offset is split there into parts (cflag 1 = first, 2 = middle,
3 = last; 0 = whole record) with the magic word itself dropped, and the reader puts it back:
so a reader never mistakes payload bytes for a record boundary. Files written here are
byte-identical to MXNet's and are read back by MXNet 1.9.1 (tests/test_recordio.py).

``MXIndexedRecordIO`` adds the ``.idx`` text file (``key\\tbyte offset`` per line) for random
access. ``pack``/``unpack`` prepend MXNet's ``IRHeader`` (``flag, label, id, id2`` as
``<IfQQ``; a vector label is stored after the header, ``flag`` holding its length);
``pack_img``/``unpack_img`` encode and decode images through Pillow (the ``image`` extra).
Files are opened for reading as data only: nothing in a record is ever executed.
"""
from __future__ import annotations

import numbers
import os
import struct
from collections import namedtuple

import numpy as np

from .base import MXNetError

__all__ = ["MXRecordIO", "MXIndexedRecordIO", "IRHeader", "pack", "unpack", "pack_img",
           "unpack_img"]

_MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", _MAGIC)
_LEN_MASK = (1 << 29) - 1


class RecordIOError(MXNetError):
    """A RecordIO file is malformed or used the wrong way."""


def _encode_lrec(cflag: int, length: int) -> bytes:
    return _MAGIC_BYTES + struct.pack("<I", (cflag << 29) | length)


class MXRecordIO:
    """Sequential reader/writer of a RecordIO file (``flag`` ``'r'`` or ``'w'``)."""

    def __init__(self, uri: str | os.PathLike, flag: str):
        self.uri = str(uri)
        if flag not in ("r", "w"):
            raise ValueError(f"Invalid flag {flag!r}: expected 'r' or 'w'")
        self.flag = flag
        self.handle = None
        self.is_open = False
        self.open()

    @property
    def writable(self) -> bool:
        return self.flag == "w"

    def open(self) -> None:
        """Open (or reopen) the file; ``'w'`` truncates it."""
        try:
            self.handle = open(self.uri, "wb" if self.writable else "rb")
        except OSError as e:
            raise RecordIOError(f"cannot open RecordIO file {self.uri!r}: {e}") from e
        self.is_open = True
        self.pid = os.getpid()

    def close(self) -> None:
        if self.is_open:
            self.handle.close()
            self.is_open = False
            self.handle = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getstate__(self):
        """Pickled (for DataLoader workers) as its path and mode; a writer stays closed."""
        d = self.__dict__.copy()
        d["is_open"] = False
        d["handle"] = None
        return d

    def __setstate__(self, d):
        self.__dict__.update(d)
        if not self.writable:
            self.open()

    def _check_pid(self, allow_reset: bool = False) -> None:
        # a forked worker must not share the parent's file position: reopen, as MXNet does
        if self.pid != os.getpid():
            if not allow_reset:
                raise RecordIOError("a RecordIO file cannot be used across processes "
                                    "after fork in this mode")
            self.close()
            self.open()

    def reset(self) -> None:
        """Back to the start (reopens the file; a writer starts over)."""
        self.close()
        self.open()

    def _need_open(self):
        if not self.is_open:
            raise RecordIOError(f"RecordIO file {self.uri!r} is closed")

    def write(self, buf: bytes) -> None:
        """Append one record (``bytes``)."""
        self._need_open()
        if not self.writable:
            raise RecordIOError(f"{self.uri!r} was opened for reading")
        self._check_pid(allow_reset=False)
        data = bytes(buf)
        n = len(data)
        if n >= 1 << 29:
            raise RecordIOError(f"a record must be shorter than 2**29 bytes, got {n}")
        out = []
        start = 0
        pos = data.find(_MAGIC_BYTES)
        while pos != -1 and pos + 4 <= (n >> 2) << 2:
            if pos % 4 == 0:
                out.append(_encode_lrec(1 if start == 0 else 2, pos - start))
                out.append(data[start:pos])
                start = pos + 4
            pos = data.find(_MAGIC_BYTES, pos + 1)
        out.append(_encode_lrec(3 if start else 0, n - start))
        out.append(data[start:])
        out.append(b"\0" * (-n % 4))
        self.handle.write(b"".join(out))

    def tell(self) -> int:
        """The byte offset where the next record starts (what the ``.idx`` file records)."""
        self._need_open()
        return self.handle.tell()

    def read(self) -> bytes | None:
        """The next record, or ``None`` at the end of the file."""
        self._need_open()
        if self.writable:
            raise RecordIOError(f"{self.uri!r} was opened for writing")
        self._check_pid(allow_reset=True)
        return read_record(self.handle, self.uri)


def _read_part(f, uri: str) -> tuple[int, bytes] | None:
    pos = f.tell()
    head = f.read(8)
    if not head:
        return None
    if len(head) < 8:
        raise RecordIOError(f"{uri!r}: truncated record header at byte {pos}")
    magic, lrec = struct.unpack("<II", head)
    if magic != _MAGIC:
        raise RecordIOError(f"{uri!r}: invalid RecordIO magic 0x{magic:08x} at byte {pos} "
                            "(not a RecordIO file, a wrong .idx, or damaged)")
    cflag, length = lrec >> 29, lrec & _LEN_MASK
    padded = length + (-length % 4)
    body = f.read(padded)
    if len(body) < padded:
        raise RecordIOError(f"{uri!r}: record at byte {pos} truncated ({len(body)} of "
                            f"{padded} bytes)")
    return cflag, body[:length]


def read_record(f, uri: str = "<recordio>") -> bytes | None:
    """One logical record at the position of the binary file ``f`` (``None`` at its end),
    its parts joined with the magic words the writer took out."""
    first = _read_part(f, uri)
    if first is None:
        return None
    cflag, data = first
    if cflag == 0:
        return data
    if cflag != 1:
        raise RecordIOError(f"{uri!r}: record continuation (cflag {cflag}) without its start")
    parts = [data]
    while True:
        nxt = _read_part(f, uri)
        if nxt is None:
            raise RecordIOError(f"{uri!r}: a split record is truncated at the end of the file")
        cflag, data = nxt
        if cflag not in (2, 3):
            raise RecordIOError(f"{uri!r}: unexpected cflag {cflag} inside a split record")
        parts.append(data)
        if cflag == 3:
            return _MAGIC_BYTES.join(parts)


class MXIndexedRecordIO(MXRecordIO):
    """RecordIO with an index file for random access by key (``read_idx``/``write_idx``)."""

    def __init__(self, idx_path: str | os.PathLike, uri: str | os.PathLike, flag: str,
                 key_type=int):
        self.idx_path = str(idx_path)
        self.idx = {}
        self.keys = []
        self.key_type = key_type
        self.fidx = None
        super().__init__(uri, flag)

    def open(self) -> None:
        super().open()
        self.idx = {}
        self.keys = []
        try:
            self.fidx = open(self.idx_path, "w" if self.writable else "r")
        except OSError as e:
            raise RecordIOError(f"cannot open RecordIO index {self.idx_path!r}: {e}") from e
        if self.writable:
            return
        for lineno, line in enumerate(iter(self.fidx.readline, ""), 1):
            fields = line.strip().split("\t")
            if fields == [""]:
                continue
            try:
                key, pos = self.key_type(fields[0]), int(fields[1])
            except (ValueError, IndexError):
                raise RecordIOError(f"{self.idx_path!r} line {lineno}: expected "
                                    f"'key<TAB>offset', got {line.strip()!r}") from None
            self.idx[key] = pos
            self.keys.append(key)

    def close(self) -> None:
        if not self.is_open:
            return
        super().close()
        if self.fidx is not None:
            self.fidx.close()
            self.fidx = None

    def __getstate__(self):
        d = super().__getstate__()
        d["fidx"] = None
        return d

    def seek(self, idx) -> None:
        """Move to the record of key ``idx``."""
        self._need_open()
        if self.writable:
            raise RecordIOError(f"{self.uri!r} was opened for writing")
        self._check_pid(allow_reset=True)
        try:
            pos = self.idx[idx]
        except KeyError:
            raise RecordIOError(f"{self.idx_path!r} has no record with key {idx!r}") from None
        self.handle.seek(pos)

    def read_idx(self, idx) -> bytes:
        """The record of key ``idx``."""
        self.seek(idx)
        return self.read()

    def write_idx(self, idx, buf: bytes) -> None:
        """Append a record under key ``idx``."""
        key = self.key_type(idx)
        pos = self.tell()
        self.write(buf)
        self.fidx.write(f"{key}\t{pos}\n")
        self.idx[key] = pos
        self.keys.append(key)


IRHeader = namedtuple("HEADER", ["flag", "label", "id", "id2"])
IRHeader.__doc__ = """An image record's header: ``flag`` (0, or the length of a vector label),
``label`` (a float or an array), ``id`` and ``id2`` (64-bit unsigned ints)."""
_IR_FORMAT = "<IfQQ"
_IR_SIZE = struct.calcsize(_IR_FORMAT)


def pack(header: IRHeader, s: bytes) -> bytes:
    """A header and a payload as one record (MXNet's ``recordio.pack``)."""
    header = IRHeader(*header)
    if isinstance(header.label, numbers.Number):
        header = header._replace(flag=0)
        prefix = b""
    else:
        label = np.asarray(header.label, dtype=np.float32)
        header = header._replace(flag=label.size, label=0)
        prefix = label.tobytes()
    return struct.pack(_IR_FORMAT, *header) + prefix + bytes(s)


def unpack(s: bytes) -> tuple[IRHeader, bytes]:
    """The header and payload of a record written by :func:`pack`."""
    if len(s) < _IR_SIZE:
        raise RecordIOError(f"record of {len(s)} bytes is shorter than an image record "
                            f"header ({_IR_SIZE} bytes)")
    header = IRHeader(*struct.unpack(_IR_FORMAT, s[:_IR_SIZE]))
    s = s[_IR_SIZE:]
    if header.flag > 0:
        if len(s) < header.flag * 4:
            raise RecordIOError(f"record declares a label of {header.flag} floats but holds "
                                f"{len(s)} bytes")
        header = header._replace(label=np.frombuffer(s, np.float32, header.flag))
        s = s[header.flag * 4:]
    return header, s


def pack_img(header: IRHeader, img, quality: int = 95, img_fmt: str = ".jpg") -> bytes:
    """Encode an image array (HxW or HxWx3, BGR channel order as MXNet's OpenCV uses) and
    pack it with ``header``. ``quality`` is JPEG quality or PNG compression (0-9)."""
    from .image_codec import encode
    return pack(header, encode(img, quality=quality, img_fmt=img_fmt, bgr=True))


def unpack_img(s: bytes, iscolor: int = -1) -> tuple[IRHeader, np.ndarray]:
    """The header and decoded image (a NumPy array in BGR order, as MXNet's) of a record.
    ``iscolor``: -1 as stored, 0 grayscale, 1 three channels."""
    from .image_codec import decode
    header, s = unpack(s)
    return header, decode(s, flag=iscolor, to_rgb=False)
