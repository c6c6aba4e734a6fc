"""Thread pools that cooperate with the machine (issue 13, item 4).

ember computes with thread pools: OpenBLAS's (NumPy's GEMMs), numba's (the ``prange``
kernels left) and the CPU backend's split kernels' (``backends/cpu_split.py``, which asks
this governor for its count through ``set_thread_source``).
BLAS and numba split a job into equal static parts, one per thread, and a job ends when its
last part does. When another process keeps a core busy, the thread that shares that core
gets half of it, so every parallel job waits for that straggler: with 2 threads on 2 cores
and one busy process, a step takes about as long as on 1/2 core per part, and the threads
that finished early spin or sleep while the straggler runs (measured: the seed MLP kept 30% of
its quiet speed). Running as many threads as there are *free* cores avoids the straggler:
one thread on the free core runs at full speed.

:func:`adapt` is called once per step (a compiled program's run, a Trainer update); at most
every ``INTERVAL`` seconds it samples how many other threads are runnable on the machine
(``procs_running`` of ``/proc/stat`` counts every runnable thread, ours included; our own are
read from ``/proc/self/task/*/stat``), smooths it, and sets both pools to
``max(1, cores - others)`` threads (never more than the pools were started with), through
threadpoolctl for BLAS and ``numba.set_num_threads`` (per calling thread) for numba. Off with
``EMBER_ADAPTIVE_THREADS=0``; a no-op where ``/proc`` is missing (not Linux).

OpenBLAS's idle workers spin (``sched_yield`` in a loop) for ``2**28`` cycles, about 0.1 s,
after each GEMM before they sleep; a conv net calls a GEMM every few milliseconds, so its
BLAS workers never sleep and take the cores from the split kernels between the GEMMs
(measured: ResNet-18 training steps at batch 16 took 1.34-2.47 s, 4.3 s of CPU time for a
2.4 s step on 2 cores; with a 2**16-cycle spin 1.26-1.29 s, 2.25 s of CPU). At import,
:func:`quiet_blas` sets OpenBLAS's ``OPENBLAS_THREAD_TIMEOUT`` to ``BLAS_SPIN`` (2**16
cycles, ~20 us: back-to-back GEMMs of an MLP still find the workers awake) and restarts its
thread server, which reads the value when it starts. A user's own ``OPENBLAS_THREAD_TIMEOUT``
is left alone, as is everything with ``EMBER_ADAPTIVE_THREADS=0``.
"""
from __future__ import annotations

import glob
import os
import threading
import time

from ember.backends import cpu_split

from .blas_core import env_set, openblas_libs

INTERVAL = 0.25      # seconds between samples
BLAS_SPIN = 16       # OpenBLAS's idle spin before sleeping: 2**BLAS_SPIN cycles
_ALPHA = 0.5         # weight of the newest sample in the moving average


def _enabled() -> bool:
    return os.environ.get("EMBER_ADAPTIVE_THREADS", "1").lower() not in ("0", "false", "no")


def runnable_elsewhere() -> int | None:
    """Runnable threads on the machine that are not this process's (None without /proc)."""
    try:
        with open("/proc/stat", "rb") as f:
            running = next(int(ln.split()[1]) for ln in f if ln.startswith(b"procs_running"))
        mine = 0
        for path in glob.glob("/proc/self/task/*/stat"):
            try:
                with open(path, "rb") as f:
                    text = f.read()
            except OSError:  # the thread ended meanwhile
                continue
            # the state follows the parenthesised command, which may contain spaces
            if text[text.rfind(b")") + 2:text.rfind(b")") + 3] == b"R":
                mine += 1
    except (OSError, StopIteration, ValueError):
        return None
    return max(0, running - max(mine, 1))


class Governor:
    """Chooses the thread count of both pools from the machine's load (see module doc)."""

    def __init__(self):
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else (os.cpu_count() or 1)
        self.max_threads = self._configured()
        self.threads = self.max_threads
        self.load = 0.0
        self._next = 0.0
        self._lock = threading.Lock()
        self._numba_set: dict[int, int] = {}  # thread ident -> count set for it
        self.changes = 0
        self._fresh = False   # the next sample replaces the average (forget_load)

    def _configured(self) -> int:
        try:
            import numba
            return max(1, min(self.cores, numba.config.NUMBA_NUM_THREADS))
        except ImportError:
            return max(1, self.cores)

    def target(self, others: float) -> int:
        """Threads to use when ``others`` threads elsewhere want a core."""
        return max(1, min(self.max_threads, self.cores - int(others + 0.5)))

    def adapt(self) -> None:
        """Sample the machine's load when due and resize the pools if it changed."""
        now = time.monotonic()
        if now < self._next or self.max_threads == 1:
            return
        with self._lock:
            if now < self._next:
                return
            self._next = now + INTERVAL
            others = runnable_elsewhere()
            if others is None:
                self._next = float("inf")
                return
            self.load = others if self._fresh else _ALPHA * others + (1 - _ALPHA) * self.load
            self._fresh = False
            want = self.target(self.load)
            if want != self.threads:
                self.threads = want
                self.changes += 1
                _set_blas_threads(want)
        self._set_numba(self.threads)

    def _set_numba(self, n: int) -> None:
        ident = threading.get_ident()
        if self._numba_set.get(ident, self.max_threads) == n:
            return
        try:
            import numba
            numba.set_num_threads(n)
        except (ImportError, ValueError, RuntimeError):
            return
        self._numba_set[ident] = n


def _set_blas_threads(n: int) -> None:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # an optional speed-up: without it only numba's pool adapts
        return
    # a fresh controller: BLAS libraries loaded since (SciPy's, through numba) are included
    ThreadpoolController().limit(limits=n, user_api="blas")


_GOVERNOR: Governor | None = None


def adapt() -> None:
    """Fit the thread pools to the cores other processes leave free (cheap when not due)."""
    global _GOVERNOR
    if _GOVERNOR is None:
        if not _enabled():
            return
        _GOVERNOR = Governor()
    _GOVERNOR.adapt()


def forget_load() -> None:
    """Sample at the next :func:`adapt` and take that sample alone: called when a process of
    ember's own stops competing (a background compile's worker has finished), so that the
    pools grow back at the next step instead of over the average's half-second memory
    (measured: LeNet's first steps after a background compile ran on one thread)."""
    g = _GOVERNOR
    if g is not None:
        g._fresh = True
        g._next = 0.0


def governor() -> Governor | None:
    """The process's governor (None until the first :func:`adapt` or when disabled)."""
    return _GOVERNOR


def _split_threads() -> int | None:
    """The governor's thread count for the CPU backend's split kernels (None: not running)."""
    return _GOVERNOR.threads if _GOVERNOR is not None else None


cpu_split.set_thread_source(_split_threads)


def quiet_blas() -> bool:
    """Shorten OpenBLAS's idle spin to ``2**BLAS_SPIN`` cycles (see the module doc); True
    when done. Restarting OpenBLAS's thread server is safe only while no BLAS call runs, so
    this runs once, when ember is imported."""
    if not _enabled() or "OPENBLAS_THREAD_TIMEOUT" in os.environ:
        return False
    done = False
    for lib in openblas_libs():
        try:
            read_env, shutdown = lib.openblas_read_env, lib.blas_thread_shutdown_
        except AttributeError:  # a build without these entry points
            continue
        with env_set("OPENBLAS_THREAD_TIMEOUT", str(BLAS_SPIN)):
            read_env()    # the library keeps the variable read at load time: read it again
        shutdown()        # the server restarts on the next threaded call, with the new spin
        done = True
    return done

quiet_blas()
