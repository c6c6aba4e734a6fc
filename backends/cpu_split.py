"""Serial kernels split over a small thread pool instead of numba parfors (issue 13, item 3).

numba's ``parallel=True`` costs 3-6x the compile time of the same kernel without it (parfor
lowering, measured on ResNet-18's kernels: a reduction 1.43 vs 0.24 s, BatchNorm 1.20 vs
0.35 s, an elementwise chain 0.37 vs 0.07 s), and a cold first training step spent most of
its time there. The kernels' parallel loops are all over an outer dimension whose
iterations are independent (elements' rows, reduction rows, N*C planes, channels), so the
same work splits by hand: :func:`split_kernel` rewrites a generated kernel's single
``for p in prange(P)`` into ``for p in range(lo_, min(hi_, P))`` (unsigned) with ``lo_, hi_`` as two
more arguments, compiles it serially (``nogil=True``: it runs without the GIL), and returns
a :class:`SplitKernel` that calls it on contiguous chunks of ``[0, P)``, taken in turn by
the calling thread and ``threads() - 1`` persistent worker threads (OpenMP's dynamic
schedule: a worker woken late by the OS takes fewer chunks; parfors' static halves waited
for it). Each iteration does the same arithmetic in the same order as before, so results
are unchanged.

Compiled programs run from several threads at once: the pool takes one split job at a time
(a non-blocking lock); a call that finds it busy runs all its parts in its own thread, so
two programs never wait on each other. ``threads()`` is the thread-pool governor's count
(``ember.runtime.thread_pools`` installs it with :func:`set_thread_source`), else the cores
this process may use. Kernels below the backend's size threshold are generated serial and
never reach this module; one-pass ones called on fewer than ``SPLIT_MIN`` elements run in
the calling thread alone. :func:`matmuls` hands a stack of small GEMMs to the same pool, a
whole GEMM per part with OpenBLAS at one thread meanwhile. ``EMBER_CPU_SPLIT=0`` keeps
numba's parfors and OpenBLAS's own threads (for comparisons).
"""
from __future__ import annotations

import itertools
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_PRANGE = re.compile(r"^(\s*)for (\w+) in prange\((\w+)\):$", re.M)
_DEF = re.compile(r"^def kernel\(([^)]*)\):$", re.M)

_thread_source: Callable[[], int | None] | None = None
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_busy = threading.Lock()    # held while the pool runs one split job
_make = threading.Lock()    # guards making the pool


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_CORES = _cores()
_ENABLED = os.environ.get("EMBER_CPU_SPLIT", "1").lower() not in ("0", "false", "no")


def set_thread_source(source: Callable[[], int | None] | None) -> None:
    """Install where the thread count comes from (a callable returning it, or None for
    "no opinion": then the core count)."""
    global _thread_source
    _thread_source = source


def threads() -> int:
    """How many parts a split kernel runs in now."""
    n = _thread_source() if _thread_source is not None else None
    return max(1, n if n is not None else _CORES)


def _reset_after_fork() -> None:
    global _pool, _pool_size, _busy, _make
    _pool, _pool_size = None, 0   # the pool's threads do not exist in a forked child
    _busy, _make = threading.Lock(), threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _workers(n: int) -> ThreadPoolExecutor:
    """The pool with at least ``n`` worker threads (grown by replacing it)."""
    global _pool, _pool_size
    with _make:
        if _pool is None or _pool_size < n:
            old = _pool
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="ember-split")
            _pool_size = n
            if old is not None:
                old.shutdown(wait=False)
        return _pool


# elements (of the argument whose dimension is split) below which a one-pass kernel
# (elementwise, GEMM epilogue) runs the whole range in the caller: handing chunks to a
# worker costs ~60 us, and on the 2-core box a 1-D relu ran serially in 12/35/73 us at
# 128K/392K/784K floats, split in 78/119/159 us, as numba parfors in 26/59/129 us (same run);
# from 3M floats on both halves paid. BatchNorm (several passes) gains from 400K on: split
# 271/392 us fwd/bwd at 16x512x49, serial 354/593
SPLIT_MIN = 1 << 20
CHUNKS_PER_THREAD = 4   # parts handed out on demand, so a late worker costs no wait


class _Job:
    """One split call's parts: threads claim them in turn (``itertools.count``'s ``next`` is
    atomic under the GIL) and count them done; the caller waits for the parts, not for the
    workers. It waited for every worker's task before: a worker the OS woke late (its
    core's other process, or just ~50 us of wake-up) held the call even when the caller
    had done every part itself (a no-op split: 24 us best, 69 us median, where batch-1
    inference makes ~60 split calls). A task that starts after the parts are gone does
    nothing: it never touches the call's arrays."""

    __slots__ = ("fn", "args", "cut", "claim", "left", "lock", "done", "errors")

    def __init__(self, fn: Callable, args: tuple, cut: list[int]):
        self.fn, self.args, self.cut = fn, args, cut
        self.claim = itertools.count()
        self.left = len(cut) - 1
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.errors: list[BaseException] = []

    def drain(self) -> None:
        """Run parts until none is left unclaimed."""
        last = len(self.cut) - 1
        for i in self.claim:
            if i >= last:
                return
            try:
                self.fn(*self.args, self.cut[i], self.cut[i + 1])
            except BaseException as e:   # noqa: BLE001 - raised in the caller (wait)
                self.errors.append(e)
            with self.lock:
                self.left -= 1
                if self.left == 0:
                    self.done.set()

    def wait(self) -> None:
        """Until every part is done; then a part's exception, if one raised."""
        self.done.wait()
        if self.errors:
            raise self.errors[0]


def run_split(fn: Callable, args: tuple, n: int, parts: int) -> None:
    """``fn(*args, lo, hi)`` over ``[0, n)`` in contiguous chunks (see module doc): the
    calling thread and ``parts - 1`` workers take chunks in turn (:class:`_Job`), so a
    worker that the OS wakes late (another process on its core) takes fewer, and the caller
    waits neither on a whole static part nor on a worker that found nothing left."""
    parts = min(parts, n)
    if parts <= 1 or not _busy.acquire(blocking=False):
        fn(*args, 0, n)
        return
    try:
        _run_parts(fn, args, n, parts)
    finally:
        _busy.release()


def _run_parts(fn: Callable, args: tuple, n: int, parts: int) -> None:
    """:func:`run_split`'s work, with the pool held (:class:`_Job`)."""
    pool = _workers(parts - 1)
    chunks = min(n, parts * CHUNKS_PER_THREAD)
    job = _Job(fn, args, [n * i // chunks for i in range(chunks + 1)])
    for _ in range(parts - 1):
        pool.submit(job.drain)
    job.drain()
    job.wait()


_BLAS: list | None = None   # threadpoolctl's controllers of the OpenBLAS libraries loaded


def _openblas() -> list:
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController
            _BLAS = [c for c in ThreadpoolController().lib_controllers
                     if c.internal_api == "openblas"]
        except Exception:   # noqa: BLE001 - no threadpoolctl, or a library it cannot read
            _BLAS = []
    return _BLAS


def _matmul_range(a, b, out, lo: int, hi: int) -> None:
    for k in range(lo, hi):
        np.matmul(a[k], b[k], out=out[k])


def matmuls(a, b, out) -> None:
    """``out[k] = a[k] @ b[k]`` for every k (a stack of independent small GEMMs: Winograd's
    alpha^2 per chunk, a grouped convolution's groups). OpenBLAS splits each GEMM over its
    threads and joins them at its end; for GEMMs of a few MFLOP that join costs a large part
    of the call (measured, 36 x (64, 64) @ (64, 392) on 2 cores: 85-108 GFLOP/s). Here the
    pool's threads take whole GEMMs each, OpenBLAS set to one thread meanwhile (114-141
    GFLOP/s; (128, 128) @ (128, 784): 126-142 -> 146-168; from (256, 256) @ (256, 980) on
    the two are within 5%). Each product is the same BLAS call either way. Without OpenBLAS
    (another BLAS, no threadpoolctl) or with the pool busy, one call after another."""
    n = out.shape[0]
    if not run_split_blas(_matmul_range, (a, b, out), n):
        _matmul_range(a, b, out, 0, n)


def run_split_blas(fn: Callable, args: tuple, n: int) -> bool:
    """:func:`run_split` of parts that call BLAS themselves, OpenBLAS set to one thread
    while they run (the pool's threads give the parallelism); False, with nothing run, when
    that cannot be (one thread, one part, the pool busy, no OpenBLAS)."""
    parts = min(threads(), n)
    libs = _openblas() if parts > 1 and _ENABLED else []
    if not libs or not _busy.acquire(blocking=False):
        return False
    try:
        before = [lib.get_num_threads() for lib in libs]
        for lib in libs:
            lib.set_num_threads(1)
        try:
            _run_parts(fn, args, n, parts)
        finally:
            for lib, t in zip(libs, before):
                lib.set_num_threads(t)
    finally:
        _busy.release()
    return True


class SplitKernel:
    """A serial kernel ``serial(*args, lo, hi)`` called over its outer range in parts;
    ``arg``/``axis``: which argument's dimension is that range."""

    __slots__ = ("serial", "arg", "axis", "min_size")

    def __init__(self, serial: Callable, arg: int, axis: int, min_size: int = 0):
        self.serial, self.arg, self.axis, self.min_size = serial, arg, axis, min_size

    def __call__(self, *args) -> None:
        a = args[self.arg]
        n = a.shape[self.axis]
        parts = threads()
        if parts <= 1 or n <= 1 or a.size < self.min_size:
            self.serial(*args, 0, n)
        else:
            run_split(self.serial, args, n, parts)


def serial_source(source: str) -> tuple[str, int, int] | None:
    """``source`` with its ``kernel``'s one ``prange`` loop over a range argument pair and
    ``parallel=False``, and which argument and axis give the loop's extent; None when the
    kernel is not of that form (no or several ``prange`` loops, an extent that is not a
    dimension of an argument)."""
    loops = _PRANGE.findall(source)
    head = _DEF.search(source)
    if len(loops) != 1 or head is None or source.count("parallel=True") != 1:
        return None
    _, _, bound = loops[0]
    args = [a.strip() for a in head.group(1).split(",") if a.strip()]
    m = re.search(rf"^\s*{bound} = (\w+)\.shape\[(\d+)\]$", source, re.M)
    if m:
        name, axis = m.group(1), int(m.group(2))
    else:
        m = re.search(r"^\s*([\w, ]+) = (\w+)\.shape$", source, re.M)
        names = [t.strip() for t in m.group(1).split(",")] if m else []
        if bound not in names:
            return None
        name, axis = m.group(2), names.index(bound)
    if name not in args or "lo_" in args or "hi_" in args:
        return None
    # unsigned bounds: an index LLVM cannot prove >= 0 keeps numba's negative-index
    # wraparound select in the loop, which stopped a 1-D elementwise loop vectorising (4.7x
    # slower than range(n), measured); the kernels only index with the loop variable
    out = _PRANGE.sub(lambda g: f"{g.group(1)}for {g.group(2)} in range(_u64(lo_), "
                      f"_u64(min(hi_, {g.group(3)}))):", source)
    out = "from numba import uint64 as _u64\n" + out.replace("parallel=True", "parallel=False")
    out = _DEF.sub(lambda g: f"def kernel({g.group(1)}, lo_, hi_):", out)
    return out, args.index(name), axis


def split_kernel(source: str, load: Callable[[str], Callable], min_size: int = 0) -> Callable:
    """The kernel of generated ``source`` (loaded by ``load(source) -> kernel``): a
    :class:`SplitKernel` over its serial form where :func:`serial_source` applies, else the
    kernel as it is (serial ones, and loops it cannot split). ``min_size``: elements below
    which a call runs in the caller alone (:data:`SPLIT_MIN` for one-pass kernels)."""
    serial = serial_source(source) if _ENABLED else None
    if serial is None:
        return load(source)
    text, arg, axis = serial
    return SplitKernel(load(text), arg, axis, min_size)
