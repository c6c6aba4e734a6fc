"""Arena buffers shared by the programs of one graph at several batch sizes.

A graph compiled for batch sizes 3, 17 and 64 is three programs (their offsets are planned
per size), but only one of them runs at a time, so they can share one buffer per arena
name, grown to the largest size seen: memory stays that of the largest batch, however many
sizes the graph meets (issue 13: 1,000 batch sizes held 1,000 arenas).

A buffer that grows is replaced, so programs whose views point into the old one must be
bound again: :attr:`SharedArena.generation` counts the replacements, and a program records
the generation it was bound at. The programs sharing an arena share its :attr:`lock` too
(their runs write the same memory).

Fresh memory: NumPy asks Linux for transparent huge pages on every large array
(``madvise(MADV_HUGEPAGE)``). Where the kernel's THP ``defrag`` setting makes such requests
compact memory at the page fault (``always``, ``madvise``, ``defer+madvise``: the common
default is ``madvise``), the first touch of each 2 MB page can stall while the kernel moves
other pages, and a compiled network's first run touches all its memory for the first time:
ResNet-18's first training step at batch 16 took 2.5-2.7 s with the advice and 1.6-1.9 s
without (three alternating runs each; later steps ~1.0 s either way, the recycled outputs
are touched once). :func:`no_hugepage_stalls`, run when ember is imported, turns NumPy's
advice off on such machines; ``NUMPY_MADVISE_HUGEPAGE`` (NumPy's own switch), when set,
decides instead.
"""
from __future__ import annotations

import os
import threading

import numpy as np

THP_DEFRAG = "/sys/kernel/mm/transparent_hugepage/defrag"
STALLING_MODES = ("always", "madvise", "defer+madvise")   # compact at an advised fault


def defrag_mode(path: str = THP_DEFRAG) -> str | None:
    """The kernel's THP defrag mode (the bracketed word of ``path``), None if unknown."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def no_hugepage_stalls(path: str = THP_DEFRAG) -> bool:
    """Turn NumPy's huge-page advice off where it stalls first touches (module doc); True
    when it did. Left alone when ``NUMPY_MADVISE_HUGEPAGE`` is set or NumPy lacks the
    switch."""
    setter = getattr(getattr(np, "_core", None), "multiarray", None)
    setter = getattr(setter, "_set_madvise_hugepage", None)
    if "NUMPY_MADVISE_HUGEPAGE" in os.environ or setter is None or \
            defrag_mode(path) not in STALLING_MODES:
        return False
    setter(False)
    return True

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


no_hugepage_stalls()
