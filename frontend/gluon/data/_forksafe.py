"""Forking DataLoader workers safely, and saying what a worker is doing when a batch is late.

``fork`` copies one thread and every lock as it is. A lock held at that moment by another
thread (numba's compiler lock taken by ember's warm-up thread right after ``import ember``,
or a module's import lock) stays held forever in the child, and the first compiled op a
transform runs there hangs. :func:`fork_guard` therefore waits for the warm-up thread and
holds numba's compiler lock while workers are forked (no compilation is half done in the
copy); :func:`after_fork_in_child` gives the child a fresh, free compiler lock.

A worker registers :mod:`faulthandler` on ``SIGUSR2``, writing to a file of its pool; when a
batch is late the main process signals the live workers and reports their Python stacks
(:func:`worker_stacks`), so a timeout names the frame a worker is in (a slow transform, or a
wait on a lock) instead of guessing.
"""
from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
import threading
import time
import warnings

WARMUP_THREAD = "ember-numba-warmup"  # the name ember.runtime gives its warm-up thread
DUMP_SIGNAL = getattr(signal, "SIGUSR2", None)


@contextlib.contextmanager
def fork_guard(join_timeout: float = 60.0):
    """Context in which forking leaves no numba lock held in the child."""
    for t in threading.enumerate():
        if t.name == WARMUP_THREAD and t is not threading.current_thread():
            t.join(join_timeout)
            if t.is_alive():
                warnings.warn("ember's numba warm-up thread is still running after "
                              f"{join_timeout:g} s; DataLoader workers forked now may hang in "
                              "their first compiled op", RuntimeWarning, stacklevel=4)
    lock_mod = sys.modules.get("numba.core.compiler_lock")
    lock = getattr(lock_mod, "global_compiler_lock", None)
    if lock is None:  # numba not loaded yet: no thread can be compiling
        yield
        return
    with lock:
        yield


def after_fork_in_child() -> None:
    """In a forked worker: a free numba compiler lock (the copy is held by the forker)."""
    lock_mod = sys.modules.get("numba.core.compiler_lock")
    lock = getattr(lock_mod, "global_compiler_lock", None)
    if lock is not None and hasattr(lock, "_lock"):
        lock._lock = threading.RLock()


# ---- stacks of late workers --------------------------------------------------------------
def stack_path(directory: str, prefix: str, worker_id: int) -> str:
    return os.path.join(directory, f"{prefix}-stack{worker_id}")


def register_dump(path: str):
    """In a worker: dump every thread's stack to ``path`` on :data:`DUMP_SIGNAL`."""
    if DUMP_SIGNAL is None:
        return None
    f = open(path, "a")  # append mode: the reader truncates before each request
    faulthandler.register(DUMP_SIGNAL, file=f, all_threads=True, chain=False)
    return f


def worker_stacks(workers, paths, wait: float = 1.0) -> dict[int, str | None]:
    """Ask each live worker process for its stacks; its main thread's frames per index."""
    asked = {}
    for i, (w, path) in enumerate(zip(workers, paths, strict=True)):
        if DUMP_SIGNAL is None or not w.is_alive():
            continue
        try:
            with open(path, "r+") as f:
                f.truncate(0)
            os.kill(w.pid, DUMP_SIGNAL)
            asked[i] = path
        except OSError:
            continue
    out: dict[int, str | None] = {}
    deadline = time.monotonic() + wait
    while asked and time.monotonic() < deadline:
        for i, path in list(asked.items()):
            text = _read(path)
            if "_worker_loop" in text:
                out[i] = main_frames(text)
                del asked[i]
        time.sleep(0.02)
    out.update({i: None for i in asked})
    return out


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def main_frames(dump: str) -> str:
    """The frames (innermost first) a worker's main thread runs inside ``_worker_loop``."""
    for block in dump.split("\n\n"):
        lines = block.strip().splitlines()
        for k, line in enumerate(lines):
            if line.rstrip().endswith(" in _worker_loop"):
                return "\n".join(x.strip() for x in lines[1:k])
    return ""


def thread_stacks(threads) -> dict[int, str]:
    """The frames (innermost first) of the threads of a thread pool, in the form
    :mod:`faulthandler` prints them, up to the pool's own ``worker`` loop."""
    frames = sys._current_frames()
    out = {}
    for i, t in enumerate(threads):
        frame, lines = frames.get(t.ident), []
        while frame is not None and frame.f_code.co_name != "worker":
            code = frame.f_code
            lines.append(f'File "{code.co_filename}", line {frame.f_lineno} in {code.co_name}')
            frame = frame.f_back
        if t.is_alive():
            out[i] = "\n".join(lines)
    return out


def describe_late(what: str, timeout: float, stacks: dict[int, str | None], pids) -> str:
    """The message of a batch that did not arrive in time, from the workers' stacks."""
    lines = [f"DataLoader: {what} timed out after {timeout:g} seconds. What each worker is "
             "doing now (innermost call first):"]
    busy = blocked = 0
    for i, pid in enumerate(pids):
        who = f"worker {i} (pid {pid})" if pid is not None else f"thread {i}"
        stack = stacks.get(i, "")
        if stack is None:
            lines.append(f"  {who}: did not answer a stack request (stuck in native code?)")
            blocked += 1
        elif i not in stacks:
            lines.append(f"  {who}: no stack available")
        elif not stack or _idle(stack):
            lines.append(f"  {who}: idle, waiting for work")
        else:
            waiting = _waiting_on_lock(stack)
            blocked += waiting
            busy += not waiting
            state = "waiting on a lock" if waiting else "running"
            frames = stack.splitlines()
            lines.append(f"  {who}: {state} in")
            lines += ["    " + f for f in frames[:12]] + (["    ..."] if len(frames) > 12 else [])
    if blocked:
        lines.append("A worker waiting on a lock may be deadlocked: a lock that another thread "
                     "of this process held when the workers were forked stays held in them; "
                     "create the DataLoader before starting such threads, or pass "
                     "thread_pool=True.")
    if busy:
        lines.append("A worker running dataset or transform code is slow (pass a larger "
                     "`timeout`) or blocked there (a lock held when it was forked, a wait "
                     "that never ends): its innermost frame above says which line.")
    if not busy and not blocked:
        lines.append("No worker is building it: its result was lost (a worker that was killed, "
                     "or that ran out of shared memory).")
    return "\n".join(lines)


def _idle(stack: str) -> bool:
    first = stack.splitlines()[-1] if stack else ""
    return "queue" in first and first.endswith(" in get")


def _waiting_on_lock(stack: str) -> bool:
    top = stack.splitlines()[0]
    return top.endswith((" in acquire", " in wait", " in _acquire_compile_lock", " in join"))
