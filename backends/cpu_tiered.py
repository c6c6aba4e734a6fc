"""Kernels a step can do without until they are compiled, compiled off its first call's path.

A step with a faster algorithm (``cpu_winograd``) keeps its plain one (im2col + GEMM) as a
fallback. Its kernels cost numba 1-2 s each to compile (11 for ResNet-18's Winograd layers:
the first training step took 27 s with a cold kernel cache, 11 s without them), so
:class:`Deferred` decides at each call whether they may run yet:

- when the kernel cache already holds their machine code (a warm cache), they are loaded
  on the first call, which then uses them: a warm process computes as before from step one;
- else the first call runs the fallback, and the second starts a daemon thread that
  compiles them (calling each on an empty range: the argument types of the real calls)
  while the steps go on with the fallback; numba compiles in Python under its own lock, so
  the thread waits for the first step's compiles to finish and then mostly overlaps the
  steps' BLAS and nogil kernels. Calls after the thread finishes use the new kernels.

Results therefore depend on which algorithm ran (rounding, within the backend's tolerance),
and in a cold process on how fast the compiler was. ``EMBER_DEFER_KERNELS=0`` compiles them
before the first call instead (deterministic, slower first step). A compile that fails
leaves the fallback in place.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable

from . import codegen
from .cpu_split import _ENABLED as SPLIT_ENABLED
from .cpu_split import serial_source

_BACKGROUND = os.environ.get("EMBER_DEFER_KERNELS", "1").lower() not in ("0", "false", "no")
_THREADS: list[threading.Thread] = []   # background compiles started (finished ones pruned)


def wait_all(timeout: float | None = None) -> bool:
    """Wait for every background compile this process started (a benchmark's timed loop
    measures the steady state after them); whether none is still running."""
    for t in list(_THREADS):
        t.join(timeout)
    _THREADS[:] = [t for t in _THREADS if t.is_alive()]
    return not _THREADS


class Deferred:
    """Readiness of one step's kernels: ``ready()`` before each call (see module doc)."""

    __slots__ = ("warm", "sources", "state", "calls", "thread", "background")

    def __init__(self, warm: Callable[[], None], sources: list[str]):
        self.warm = warm          # compiles every kernel (calls each on an empty range)
        self.sources = sources    # the generated sources, as given to cpu_steps.kernel/split
        self.state = "new"        # new -> compiling -> ready | failed
        self.calls = 0
        self.thread: threading.Thread | None = None
        self.background = _BACKGROUND

    def _cached(self) -> bool:
        texts = []
        for src in self.sources:
            serial = serial_source(src) if SPLIT_ENABLED else None
            texts.append(serial[0] if serial is not None else src)
        return all(codegen.compiled_before(t, "cpu") for t in texts)

    def _compile(self) -> None:
        try:
            self.warm()
            self.state = "ready"
        except Exception:   # noqa: BLE001 - any compile error: keep the fallback
            self.state = "failed"

    def ready(self) -> bool:
        """Whether the kernels may run for this call."""
        if self.state == "ready":
            return True
        if self.state == "new":
            if not self.background or self._cached():
                self._compile()
                return self.state == "ready"
            if self.calls:
                self.state = "compiling"
                self.thread = threading.Thread(target=self._compile, daemon=True,
                                               name="ember-deferred-compile")
                self.thread.start()
                _THREADS[:] = [t for t in _THREADS if t.is_alive()] + [self.thread]
            self.calls += 1
        return False

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a background compile (tests, benchmarks); whether the kernels are ready."""
        if self.thread is not None:
            self.thread.join(timeout)
        return self.state == "ready"
