"""What the convolution steps (``cpu_conv_steps``, ``cpu_winograd``, ``cpu_direct``) share:
their programs' scratch buffers, the threads' own column buffers, and the calls of a fused
epilogue over a range of samples."""
from __future__ import annotations

import math
import threading

import numpy as np

_ALIGN = 64

_local = threading.local()


def _thread_cols(size: int, dt: np.dtype) -> np.ndarray:
    """This thread's column buffer of at least ``size`` elements of ``dt`` (the split
    pool's threads and the caller keep theirs between calls: 2 x 1.8 MB for ResNet-18)."""
    buf = getattr(_local, "cols", None)
    if buf is None or buf.nbytes < size * dt.itemsize:
        buf = _local.cols = np.empty(size * dt.itemsize, np.uint8)
    return buf[:size * dt.itemsize].view(dt)


class Scratch:
    """The columns buffer of one compiled program: sized while planning, made on first use,
    or taken from ``arena`` (a ``runtime.arena.SharedArena``: the programs of one graph at
    other batch sizes share it, as they share their arena) as it is sized."""

    def __init__(self, arena=None):
        self.size = 0
        self.buf: np.ndarray | None = None
        self.arena = arena
        self.layer: str | None = None   # the node whose steps are being made (its name)
        self._asked: dict = {}

    def kept(self, key: tuple, make):
        """What a step keeps between calls (its weights' packed or transformed copy), made by
        ``make()``: shared by the programs over this scratch's arena (one graph at several
        batch sizes, run one at a time under the arena's lock) for the same ``key`` of the
        same layer (:attr:`layer`, and the n-th such request in it), so such copies are held
        once, not once per batch size; the program's own without an arena. What is kept is
        compared bit for bit with each call's weights, so a copy taken for another layer
        would only be made anew, never used."""
        key = (*key, self.layer)
        n = self._asked.get(key, 0)
        self._asked[key] = n + 1
        if self.arena is None:
            return make()
        return self.arena.shared(("kept", key, n), make)

    def need(self, pieces: list[tuple[tuple, np.dtype]]) -> None:
        total = sum(_aligned(math.prod(s) * dt.itemsize) for s, dt in pieces)
        self.size = max(self.size, total)
        if self.arena is not None:
            self.buf = self.arena.buffer("conv_scratch", self.size + _ALIGN)

    def views(self, pieces: list[tuple[tuple, np.dtype]]) -> list[np.ndarray]:
        if self.buf is None:
            self.buf = np.empty(self.size + _ALIGN, np.uint8)
        off = (-self.buf.ctypes.data) % _ALIGN
        out = []
        for shape, dt in pieces:
            out.append(np.ndarray(math.prod(shape), dt, self.buf, off))
            off += _aligned(math.prod(shape) * dt.itemsize)
        return out


def _part(flat: np.ndarray, shape: tuple) -> np.ndarray:
    """The first elements of a flat scratch piece as a contiguous array of ``shape``."""
    return flat[:math.prod(shape)].reshape(shape)


def _aligned(nbytes: int) -> int:
    return -(-nbytes // _ALIGN) * _ALIGN


def _unpack(rest: tuple, has_bias: bool, n_leaves: int):
    """(bias, leaves, output, other outputs) of a forward/dgrad step's arguments after
    (x, w)."""
    bias = rest[0] if has_bias else None
    rest = rest[1:] if has_bias else rest
    return bias, rest[:n_leaves], rest[n_leaves], rest[n_leaves + 1:]


def epilogue_calls(epi, m3, src, bias, leaves, sliced, extra) -> list:
    """``[(epi, args)]``: the call :func:`_run_epilogue` makes (for its first sample)."""
    got: list = []
    _run_epilogue(lambda *a: got.append((epi, a)), m3, src, bias, leaves, sliced, extra, 0, 1)
    return got


def _run_epilogue(epi, m3, src, bias, leaves, sliced, extra, a, e):
    """The epilogue over samples [a, e) of the (N, C, M) result ``m3`` (read from ``src``,
    (C, e-a, M), when given), writing the other outputs ``extra`` too."""
    ls = [x[a:e] if sl else x for x, sl in zip(leaves, sliced)]
    os_ = [o[a:e] for o in extra]
    head = (src, m3[a:e]) if src is not None else (m3[a:e],)
    epi(*head, *([bias] if bias is not None else []), *ls, *os_)
