"""Compile a new program's numba kernels on every core before its first run.

numba compiles a kernel on its first call, one after another on one core, holding the GIL:
a ResNet's first step spent most of its time there (20-odd kernels, 0.3-3 s each, the
parallel ones 3-6x longer than serial ones). Here the kernels a freshly built program will
call are found before it runs, with their argument types, and compiled by this process and
worker processes (:mod:`ember.runtime.compile_worker`) side by side; the workers save the
machine code into the kernel cache, and the program's first calls load it from there like
any warm process.

Finding the calls: the CPU backend's run loop is straight-line generated code (``k12(v3,
A7.reshape(S9), 4)``). It is walked statement by statement with stand-in arrays of the
graph's input and parameter types and the buffers the loop itself allocates (``np.empty``
or the recycler's ``take``:
no memory is touched), and each call of a numba dispatcher gives its argument types
(numba's ``typeof``: dtype, rank, layout). A call whose arguments come from elsewhere (a
NumPy fallback's result, a nested program) is left to compile on first call, as before.
A step that calls kernels itself (a convolution's) tells them through its ``kernel_calls``;
the faster kernels it leaves to ``backends.cpu_tiered`` (Winograd, direct convolution) are
found instead of its fallback's when its first call runs them (no background compiles, or
compiled before: ``own_calls`` gives the step's other kernels, an epilogue's).

Only ember's own kernel sources travel to the workers (the text the kernel cache wrote and
verified), with argument types as plain data (JSON), never pickles. Used when at least
:data:`MIN_KERNELS` kernels are new and this process may run on two cores or more: this
process compiles too, beside one worker process, and one more per further free core (the
cores this process may use less the load average of the others: on a busy machine more
compiling processes only slow everyone down). ``EMBER_PRECOMPILE=0`` turns it off,
``EMBER_PRECOMPILE=N`` (N >= 2) compiles in N processes (this one and N - 1 workers)
whatever the load. A worker that fails costs nothing but time: the kernel compiles on first
call.
"""
from __future__ import annotations

import ast
import os
import queue
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numba.core import types
from numba.core.dispatcher import Dispatcher

from ember.backends.cpu_split import SplitKernel

from .cache import installed
from .compile_worker import Worker, type_spec, usable_directory
from .numba_seal import MODULE_PREFIX

MIN_KERNELS = 6  # below this, starting the workers (an import of ember each) costs more
# "jobs" (kernels), "compiled" (by workers), "here" (by this process), "failed", "workers"
STATS: Counter = Counter()


def workers_wanted() -> int | None:
    """``EMBER_PRECOMPILE``: 0 off (returns 0), unset or 1 automatic (None), N >= 2 exactly
    N workers whatever the load."""
    raw = os.environ.get("EMBER_PRECOMPILE", "")
    try:
        n = int(raw) if raw else 1
    except ValueError:
        n = 1
    return None if n == 1 else max(0, n)


def cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def free_cores() -> int:
    """Cores not busy with other processes: this process's, less the 1-minute load average
    beyond this process itself (which only waits while workers compile)."""
    try:
        busy = max(0.0, os.getloadavg()[0] - 1.0)
    except (AttributeError, OSError):
        busy = 0.0
    return max(1, int(cores() - busy + 0.5))


class _Unknown(Exception):
    pass


def _value(node: ast.expr, env: dict, ns: dict):
    """Evaluate an argument of the generated loop: names, constants, ``x.reshape(s)``."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        v = ns.get(node.id, _Unknown)
        if v is _Unknown or not isinstance(v, np.ndarray | tuple | int | float | bool |
                                           np.dtype | np.generic):
            raise _Unknown
        return v
    if isinstance(node, ast.Attribute) and node.attr == "T":
        return _array(_value(node.value, env, ns)).T
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
            node.func.attr == "reshape" and not node.keywords:
        arr = _array(_value(node.func.value, env, ns))
        return arr.reshape(*[_value(a, env, ns) for a in node.args])
    raise _Unknown


def _array(x) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise _Unknown
    return x


def kernel_calls(run_fn, graph, tiers: bool = False) -> list[tuple[Dispatcher, tuple]]:
    """(dispatcher, argument types) of each ember kernel call in a CPU run loop whose
    arguments can be told before it runs (module docstring); each pair once. ``tiers``:
    a tiered step's own kernels (``backends.cpu_tiered``) even where they would compile in
    the background, for a program that runs NumPy until all its kernels are compiled
    (:func:`defer_small`)."""
    src, ns = getattr(run_fn, "source", None), getattr(run_fn, "__globals__", None)
    if src is None or ns is None:
        return []
    try:
        stand_in = {"inputs": [np.empty(v.type.shape, v.type.dtype) for v in graph.inputs],
                    "params": [np.empty(v.type.shape, v.type.dtype) for v in graph.params]}
    except (TypeError, ValueError):   # an unknown dim: nothing to tell
        return []
    env: dict = {}
    found, seen = [], set()
    for stmt in ast.parse(src).body[0].body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, value = stmt.targets[0], stmt.value
            if isinstance(value, ast.Name) and value.id in stand_in and \
                    isinstance(target, ast.Tuple):
                names = [t.id for t in target.elts if isinstance(t, ast.Name)]
                env.update(zip(names, stand_in[value.id]))
            elif isinstance(target, ast.Name) and isinstance(value, ast.Call) and \
                    isinstance(value.func, ast.Name) and value.func.id in ("empty", "take"):
                # take(slot, shape, dtype): an output from the program's recycler
                args = value.args[1:] if value.func.id == "take" else value.args
                try:
                    env[target.id] = np.empty(*[_value(a, env, ns) for a in args])
                except (_Unknown, TypeError, ValueError):
                    pass
            continue
        if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
                and isinstance(stmt.value.func, ast.Name)):
            continue
        fn = ns.get(stmt.value.func.id)
        if stmt.value.keywords:
            continue
        try:
            args = [_value(a, env, ns) for a in stmt.value.args]
            # a step that calls kernels itself (a convolution's) says which, with arguments
            hints = getattr(fn, "kernel_calls", None)
            pairs = hints(*args) if callable(hints) and not isinstance(fn, Dispatcher) \
                else [(fn, args)]
            # a step's faster kernels (backends.cpu_tiered), which its first call runs when
            # they are not left to a background compile (EMBER_DEFER_KERNELS=0) or were
            # compiled before: then with its own kernels (an epilogue), not its fallback's
            tier = getattr(fn, "deferred", None)
            if tier is not None and tier.calls is not None and \
                    (tiers or not tier.background or tier._cached()):
                own = getattr(fn, "own_calls", None)
                pairs = [*(own(*args) if callable(own) else pairs), *tier.calls()]
            for k, k_args in pairs:
                _add(k, k_args, found, seen)
        except (_Unknown, TypeError, ValueError, AttributeError):
            continue
    return found


def _add(fn, args, found: list, seen: set) -> None:
    """Add the call ``fn(*args)`` to ``found`` when ``fn`` is one of ember's kernels not yet
    compiled for these argument types."""
    # a split kernel (backends.cpu_split) calls its serial dispatcher with (lo, hi) added
    extra = (types.int64, types.int64) if isinstance(fn, SplitKernel) else ()
    fn = fn.serial if extra else fn
    if not isinstance(fn, Dispatcher) or not fn.py_func.__module__.startswith(MODULE_PREFIX):
        return
    sig = tuple(fn.typeof_pyval(a) for a in args) + extra
    if (id(fn), sig) not in seen and tuple(sig) not in fn.overloads:
        seen.add((id(fn), sig))
        found.append((fn, sig))


def _jobs(calls: Sequence[tuple[Dispatcher, tuple]]) -> list[dict]:
    """One job per kernel function, with all its signatures: two workers saving into one
    numba index at once would lose one of the entries."""
    cache = installed()
    jobs: dict[int, dict] = {}
    for fn, sig in calls:
        source = cache.sources.get(fn.py_func.__module__)
        specs = [type_spec(t) for t in sig]
        if source is None or any(s is None for s in specs):
            continue
        if cache._compiled(Path(fn.py_func.__globals__.get("__file__", ""))):
            continue  # some process compiled it: numba loads it (or compiles another
                      # signature) at the first call, faster than a worker starts
        job = jobs.setdefault(id(fn), {
            "source": source, "backend": cache.backend_of(fn.py_func.__module__),
            "func": fn.py_func.__name__, "sigs": [], "_fn": fn, "_types": []})
        job["sigs"].append(specs)
        job["_types"].append(sig)
    return list(jobs.values())


# programs over at most this much data run NumPy while they compile: a loss over (16, 1000)
# logits (~0.5 MB); LeNet's forward at batch 128 (~6 MB) ran 6.4k samples/s instead of 10k
# on NumPy while its kernels compiled beside it (at a 4 MB limit)
SMALL_BYTES = 1 << 20


def graph_bytes(graph) -> int | None:
    """Bytes of every value of ``graph`` (None if a size is unknown)."""
    values = [*graph.inputs, *graph.params, *(v for n in graph.nodes for v in n.outputs)]
    sizes = [v.type.nbytes for v in values]
    return None if any(b is None for b in sizes) else sum(sizes)


def defer_small(executables: Sequence) -> list:
    """Let the small CPU programs among ``executables`` whose kernels no process compiled
    yet (a hybridized loss: 5 kernels, ~1 s of numba on the first training step) run on
    the reference backend until a worker process has compiled them
    (``backends.cpu_tiered``, from their second run), then compiled; those Executables.
    None when ``EMBER_DEFER_KERNELS=0``.

    The switch comes when the compile is done, not at a fixed run: a fixed run (the
    eighth) had to wait for the worker when runs are fast (LeNet's loss: 2-3 s at its
    eighth step, where compiling at the first costs 1 s), so which runs are NumPy's
    depends on timing, as with Winograd's kernels."""
    from ember.backends import cpu_tiered
    done: list = []
    if not cpu_tiered._BACKGROUND:
        return done
    for exe in executables:
        fn = exe._fn
        if exe.backend != "cpu" or getattr(fn, "run_fn", None) is None:
            continue
        size = graph_bytes(exe.graph)
        if size is None or size > SMALL_BYTES:
            continue
        # with the tiered steps' kernels: compiled with the rest, they run from the
        # program's first compiled run (left out, a loss's sums compiled again after the
        # switch, a worker beside the timed steps, and ran NumPy meanwhile)
        calls = kernel_calls(fn.run_fn, exe.graph, tiers=True)
        if not _jobs(calls):   # none, or compiled by an earlier process (they load fast)
            continue
        exe.run_reference_until(cpu_tiered.Deferred.of_signatures(calls))
        done.append(exe)
    return done


def deferred_worker() -> Worker:
    """A worker for ``backends.cpu_tiered``'s background compiles (OSError when there is no
    usable cache directory or it cannot start)."""
    directory = usable_directory()
    if directory is None:
        raise OSError("no usable kernel cache directory")
    return Worker(directory)


def compile_in_worker(calls: Sequence[tuple[Dispatcher, tuple]],
                      worker: Worker | None = None) -> int:
    """Compile ``calls`` (dispatcher, argument types) that no process compiled yet in
    ``worker`` (a new one, closed afterwards, when None), leaving this process's
    interpreter free meanwhile; how many jobs it compiled (0 when there is no usable cache
    directory or the worker cannot start). This process then loads them from the cache at
    their first call."""
    jobs = _jobs(calls)
    directory = usable_directory()
    if not jobs or directory is None:
        return 0
    own = worker is None
    try:
        worker = worker or Worker(directory)
    except OSError:
        return 0
    try:
        done = sum(worker.run(j) for j in jobs)
    finally:
        if own:
            worker.close()
    STATS["compiled"] += done
    STATS["jobs"] += len(jobs)
    return done


def precompile(programs: Sequence) -> int:
    """Compile the new kernels of ``programs`` (pairs ``(run_fn, graph)``) here and in
    worker processes (module docstring) and wait for them; returns how many compiled. Does
    nothing (0) when off, on one core, without a usable cache directory, or with fewer than
    :data:`MIN_KERNELS` kernels to compile."""
    workers = workers_wanted()
    if workers is None:   # automatic: one worker beside this process, more on free cores
        workers = max(2, free_cores()) if cores() >= 2 else 1
    if workers < 2:
        return 0
    cache = installed()
    directory = cache.directory
    try:
        if not cache._usable(directory):
            return 0
    except OSError:
        return 0
    calls = [c for run_fn, graph in programs for c in kernel_calls(run_fn, graph)]
    jobs = _jobs(calls)
    if len(jobs) < MIN_KERNELS:
        return 0
    todo: queue.Queue = queue.Queue()
    for j in jobs:
        todo.put(j)
    done = Counter()
    lock = threading.Lock()

    def serve():
        try:
            worker = Worker(str(directory))
        except OSError:
            return
        try:
            while worker.alive:
                try:
                    job = todo.get_nowait()
                except queue.Empty:
                    break
                ok = worker.run(job)
                with lock:
                    done["compiled" if ok else "failed"] += 1
        finally:   # a worker that died leaves its remaining jobs to the first calls
            worker.close()
    n = min(workers - 1, len(jobs) - 1)   # processes besides this one, which compiles too
    threads = [threading.Thread(target=serve, name=f"ember-precompile-{i}", daemon=True)
               for i in range(n)]
    for t in threads:
        t.start()
    while True:   # this process takes jobs too (in program order) while the workers start
        try:
            job = todo.get_nowait()
        except queue.Empty:
            break
        try:
            for sig in job["_types"]:
                job["_fn"].compile(sig)
            outcome = "here"
        except Exception:  # noqa: BLE001 (it compiles again, and fails, at its first call)
            outcome = "failed"
        with lock:
            done[outcome] += 1
    for t in threads:
        t.join()
    STATS.update(done)
    STATS["jobs"] += len(jobs)
    STATS["workers"] += n
    return done["compiled"] + done["here"]
