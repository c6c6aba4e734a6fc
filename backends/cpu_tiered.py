"""Kernels a step can do without until they are compiled, compiled off its first call's path.

A step with a faster algorithm (``cpu_winograd``) keeps its plain one (im2col + GEMM) as a
fallback. Its kernels cost numba 1-2 s each to compile (11 for ResNet-18's Winograd layers:
the first training step took 27 s with a cold kernel cache, 11 s without them), so
:class:`Deferred` decides at each call whether they may run yet:

- when the kernel cache already holds their machine code (a warm cache), they are loaded
  on the first call, which then uses them: a warm process computes as before from step one;
- else the first call runs the fallback, and the second queues them for a background
  compile while the steps go on with the fallback. One daemon thread serves the queue: it
  hands the kernels' argument types to a compile worker process
  (:class:`ember.runtime.precompile.Worker`, the first-step precompiler's), which saves
  the machine code into the kernel cache, then loads them from there (calling each on an
  empty range). numba compiles in Python under its own lock: compiled by a thread of this
  process, they held the interpreter for seconds, and every step of the run loop waited
  for it at each call (ResNet-18's second training step took 7.4-7.9 s instead of 1 s
  while they compiled). Without a usable cache directory, or when the worker fails, the
  thread compiles them itself, as before. Calls after that use the new kernels.

Results therefore depend on which algorithm ran (rounding, within the backend's tolerance),
and in a cold process on how fast the compiler was. ``EMBER_DEFER_KERNELS=0`` compiles them
before the first call instead (deterministic, slower first step). A compile that fails
leaves the fallback in place.
"""
from __future__ import annotations

import atexit
import os
import queue
import threading
from collections.abc import Callable

from . import codegen
from .cpu_split import _ENABLED as SPLIT_ENABLED
from .cpu_split import SplitKernel, serial_source

_BACKGROUND = os.environ.get("EMBER_DEFER_KERNELS", "1").lower() not in ("0", "false", "no")
IDLE_S = 2.0   # the serving thread (and its worker) ends after this long without work
_QUEUE: queue.Queue = queue.Queue()
_PENDING: set = set()          # Deferreds queued or compiling
_LOCK = threading.Lock()
_SERVER: list[threading.Thread] = []
# makes a compile worker (``alive``, ``compile(calls)``, ``close()``, ``kill()``); the
# runtime installs it (``runtime.precompile.deferred_worker``): backends do not import the
# runtime
_MAKE_WORKER: Callable[[], object] | None = None
_LIVE: list = []   # the serving thread's worker, while it has one
_AFTER: list = []   # called when the worker is gone (runtime.thread_pools.forget_load)


def set_compile_worker(make: Callable[[], object] | None,
                       after: Callable[[], None] | None = None) -> None:
    """Install the factory of the compile workers the serving thread uses (None: none, the
    thread compiles), and ``after()``, called when the queue is done and its worker gone
    (the thread governor stops counting it as a busy process)."""
    global _MAKE_WORKER
    _MAKE_WORKER = make
    _AFTER[:] = [after] if after is not None else []


def wait_all(timeout: float | None = None) -> bool:
    """Wait for every background compile this process queued (a benchmark's timed loop
    measures the steady state after them); whether none is still pending."""
    for d in list(_PENDING):
        d.done.wait(timeout)
    return not _PENDING


def _serve() -> None:
    """The serving thread: compile queued Deferreds one after another (module doc)."""
    worker = None
    try:
        while True:
            try:
                d = _QUEUE.get(timeout=IDLE_S)
            except queue.Empty:
                with _LOCK:
                    if _QUEUE.empty():
                        _SERVER.clear()
                        return
                continue
            try:
                calls = d.signatures()
                if calls and _MAKE_WORKER is not None:
                    if worker is None or not worker.alive:
                        worker = _MAKE_WORKER()
                        _LIVE[:] = [worker]
                    worker.compile(calls)
            except Exception:  # noqa: BLE001 - no worker: the thread compiles them below
                pass
            if worker is not None and _QUEUE.empty():
                # nothing more to compile: stop the (idle) worker now; left to exit later
                # its interpreter's teardown took a core from the steps going on
                worker.kill()
                worker = None
                _LIVE[:] = []
                for fn in _AFTER:
                    fn()
            d._compile()
    finally:
        if worker is not None:
            _LIVE[:] = []
            worker.close()


def _end_workers() -> None:
    """At exit: stop a worker still compiling (its work is lost, not left running after
    the program: an orphan compiled on, taking a core from whatever ran next)."""
    for w in list(_LIVE):
        w.kill()


atexit.register(_end_workers)


def _enqueue(d: Deferred) -> None:
    with _LOCK:
        _PENDING.add(d)
        _QUEUE.put(d)
        if not _SERVER:
            t = threading.Thread(target=_serve, daemon=True, name="ember-deferred-compile")
            _SERVER.append(t)
            t.start()


class Deferred:
    """Readiness of one step's kernels: ``ready()`` before each call (see module doc).

    ``calls()`` gives the kernels and example arguments (a ``SplitKernel`` without its
    range pair), whose argument types are the real calls'; compiling is calling each over
    an empty range (``warm``, which a test may give instead)."""

    __slots__ = ("calls", "warm", "sources", "state", "ncalls", "done", "background",
                 "pairs")

    def __init__(self, calls: Callable[[], list] | None, sources: list[str],
                 warm: Callable[[], None] | None = None):
        self.calls = calls
        self.warm = warm or self._call_all
        self.sources = sources    # the generated sources, as given to cpu_steps.kernel/split
        self.state = "new"        # new -> compiling -> ready | failed
        self.ncalls = 0
        self.done = threading.Event()
        self.background = _BACKGROUND
        self.pairs: list | None = None

    @classmethod
    def of_signatures(cls, pairs: list) -> Deferred:
        """The kernels ``pairs`` (numba dispatcher, argument types) as one Deferred (a whole
        program's: ``runtime.executable.Executable.run_reference_until``)."""
        d = cls(None, [], warm=lambda: [fn.compile(tuple(sig)) for fn, sig in pairs])
        d.pairs = list(pairs)
        return d

    def _call_all(self) -> None:
        for k, args in self.calls():
            if isinstance(k, SplitKernel):
                k.serial(*args, 0, 0)
            else:
                k(*args)

    def signatures(self) -> list:
        """(numba dispatcher, argument types) of each call in ``calls()``."""
        if self.pairs is not None:
            return self.pairs
        if self.calls is None:
            return []
        from numba.core import types
        out = []
        for k, args in self.calls():
            fn = k.serial if isinstance(k, SplitKernel) else k
            sig = tuple(fn.typeof_pyval(a) for a in args)
            out.append((fn, sig + ((types.int64, types.int64) if fn is not k else ())))
        return out

    def _cached(self) -> bool:
        if self.pairs is not None:
            return all(tuple(sig) in fn.overloads for fn, sig in self.pairs)
        texts = []
        for src in self.sources:
            serial = serial_source(src) if SPLIT_ENABLED else None
            texts.append(serial[0] if serial is not None else src)
        return all(codegen.compiled_before(t, "cpu") for t in texts)

    def _compile(self) -> None:
        try:
            self.warm()
            self.state = "ready"
        except Exception:  # noqa: BLE001 - any compile error: keep the fallback
            self.state = "failed"
        finally:
            self.done.set()
            _PENDING.discard(self)

    def ready(self) -> bool:
        """Whether the kernels may run for this call."""
        if self.state == "ready":
            return True
        if self.state == "new":
            if not self.background or self._cached():
                self._compile()
                return self.state == "ready"
            if self.ncalls:
                self.state = "compiling"
                _enqueue(self)
            self.ncalls += 1
        return False

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a background compile (tests, benchmarks); whether the kernels are ready."""
        if self.state == "compiling":
            self.done.wait(timeout)
        return self.state == "ready"


def deferred_call(kernel, fallback: Callable, example: tuple, source: str):
    """A step calling ``kernel(*args)`` (``source``'s, split or not) that runs
    ``fallback(*args)`` (NumPy, the op's reference, writing the same outputs) until the
    kernel is ready (a :class:`Deferred` of it: compiled in the background from the second
    call, at once with ``EMBER_DEFER_KERNELS=0`` or a warm cache). ``example``: arguments
    of the real calls' types, without the split range. A cold first step then compiles
    neither the kernel nor its helpers: max pooling's, unrolled over the window, cost numba
    0.6-1.2 s each, where NumPy pools ResNet-18's first layer (16x64x112x112) in 0.11 s and
    takes its gradient in 0.2 s."""
    tier = Deferred(lambda: [(kernel, example)], [source])

    def step(*args):
        if tier.ready():
            return kernel(*args)
        return fallback(*args)
    step.deferred = tier
    # (runtime.precompile: nothing of its own to compile before a first call, which runs
    # NumPy; the tier's kernel when that call would compile it: no background, or cached)
    step.kernel_calls = step.own_calls = lambda *args: []
    return step
