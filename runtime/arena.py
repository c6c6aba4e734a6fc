"""Arena buffers shared by the programs of one graph at several batch sizes.

A graph compiled for batch sizes 3, 17 and 64 is three programs (their offsets are planned
per size), but only one of them runs at a time, so they can share one buffer per arena
name, grown to the largest size seen: memory stays that of the largest batch, however many
sizes the graph meets (issue 13: 1,000 batch sizes held 1,000 arenas).

A buffer that grows is replaced, so programs whose views point into the old one must be
bound again: :attr:`SharedArena.generation` counts the replacements, and a program records
the generation it was bound at. The programs sharing an arena share its :attr:`lock` too
(their runs write the same memory).
"""
from __future__ import annotations

import threading

import numpy as np

GROWTH = 1.25  # a growing buffer takes this much more than asked (fewer re-bindings)


class SharedArena:
    """One growable byte buffer per arena name, with the lock of the runs over them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.generation = 0
        self._bufs: dict[str, np.ndarray] = {}
        self._shared: dict[str, object] = {}

    def shared(self, key: str, make):
        """The object under ``key`` that the programs sharing this arena share (made by
        ``make()`` the first time): the CPU backend's output recycler."""
        obj = self._shared.get(key)
        if obj is None:
            obj = self._shared[key] = make()
        return obj

    def buffer(self, name: str, nbytes: int) -> np.ndarray:
        """A uint8 buffer of at least ``nbytes`` for arena ``name``; a bigger one than the
        current (which bumps :attr:`generation`) when it is too small."""
        buf = self._bufs.get(name)
        if buf is None or buf.nbytes < nbytes:
            size = nbytes if buf is None else max(nbytes, int(buf.nbytes * GROWTH))
            self._bufs.pop(name, None)  # (the old buffer lives on only in older views)
            buf = self._bufs[name] = np.empty(size, np.uint8)
            self.generation += 1
        return buf

    @property
    def nbytes(self) -> int:
        """Bytes held by the current buffers."""
        return sum(b.nbytes for b in self._bufs.values())
