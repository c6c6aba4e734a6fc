"""The CPU backend's run loop, generated as one straight-line Python function per graph.

A compiled graph runs as ``run(inputs, params)``: bind the arguments to local variables,
then one line per step calling a prebound kernel with its arguments, then return the
outputs (torch.fx's code generation of an interpreter loop into Python source). Values
planned into the arena are module-level constants (views made once, reshaped once), so a
step costs one kernel call and the lookups of its non-constant arguments; there are no
per-call dicts, lists of closures, or lookups by slot.

Values are named as they are bound:
- arena views (``Value.mem``) and other constants: globals of the generated function;
- inputs, parameters, fresh outputs and fallback results: locals.

Fresh outputs come from the program's :class:`Recycler`: the array a line made on the last
run, when nothing outside the recycler refers to it any more (CPython's reference count
says so, as every view keeps its base alive), else a new one. A training step's forward
returns its residuals (for ResNet-18 at batch 16, ~100 MB) and the backward drops them: new
arrays each step cost 26k page faults and up to 0.6 s of system time per step (measured),
reused ones none. The programs of one graph at several batch sizes share one recycler (through
their ``SharedArena``), so that 1,000 batch sizes do not keep 1,000 sets of outputs. A
caller holding an output (or a view of it) keeps it from reuse, so a
run never writes an array somebody can still read.
"""
from __future__ import annotations

import os
import sys
import threading
import weakref
from collections.abc import Callable, Sequence

import numpy as np

from ember.ir.errors import EmberError, fmt_shapes
from ember.ir.graph import Value

_CODE: dict[str, object] = {}  # run sources -> their code objects (a graph at many sizes)
_CODE_MAX = 256


class StepProfile:
    """Seconds and calls per step of the programs built while it is installed
    (:func:`profiling`), keyed by (graph, step name): where a compiled step's time goes
    (``python -m bench.step_profile``). ``kinds[key]`` names the step's kind (the module and
    function that made it), ``lines[key]`` the node it runs (output shape, name)."""

    def __init__(self):
        self.seconds: dict[tuple, float] = {}
        self.calls: dict[tuple, int] = {}
        self.kinds: dict[tuple, str] = {}
        self.lines: dict[tuple, str] = {}

    def clear(self) -> None:
        """Forget the times so far (after warm-up runs); the steps stay timed."""
        self.seconds = dict.fromkeys(self.seconds, 0.0)
        self.calls = dict.fromkeys(self.calls, 0)

    def wrap(self, graph: str, name: str, fn: Callable) -> Callable:
        from time import perf_counter
        key = (graph, name)
        qual = getattr(fn, "__qualname__", type(fn).__qualname__).replace(".<locals>", "")
        mod = (getattr(fn, "__module__", None) or type(fn).__module__ or "").split(".")[-1]
        self.kinds[key] = f"{mod}.{qual}"
        self.seconds.setdefault(key, 0.0)
        self.calls.setdefault(key, 0)

        def timed(*args, **kwargs):
            t = perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[key] += perf_counter() - t
                self.calls[key] += 1
        return timed

    def by_kind(self) -> list[tuple[str, float, int]]:
        """(kind, seconds, steps) over every timed step, the most time first."""
        out: dict[str, list] = {}
        for key, t in self.seconds.items():
            row = out.setdefault(self.kinds[key], [0.0, 0])
            row[0] += t
            row[1] += 1
        return sorted(((k, t, n) for k, (t, n) in out.items()), key=lambda r: -r[1])


_profile: StepProfile | None = None


class profiling:
    """``with profiling() as prof:`` times every step of the programs built inside (a
    program built before keeps its untimed steps: profile from a fresh process)."""

    def __enter__(self) -> StepProfile:
        global _profile
        self.prev, _profile = _profile, StepProfile()
        return _profile

    def __exit__(self, *exc) -> None:
        global _profile
        _profile = self.prev


def _budget() -> int:
    """Bytes all recyclers together may hold: a quarter of the machine's memory."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (AttributeError, ValueError, OSError):
        return 2 << 30


BUDGET = _budget()
_held = [0]             # bytes in every live recycler's slots
_held_lock = threading.Lock()


def _release(box: list) -> None:
    with _held_lock:
        _held[0] -= box[0]


class Recycler:
    """Two reusable output arrays per ``out`` line of a program (see the module doc): two,
    because some outputs are held until the next run's have been made (a gradient becomes
    the parameter's ``.grad`` buffer, replaced by the next step's). All recyclers together
    keep at most ``BUDGET`` bytes: a program per input shape (``static_shape=True``, or
    shapes other than the batch) each keeping a training step's residuals would add up;
    past the budget an output is a plain new array, as without recycling."""

    __slots__ = ("arrays", "held", "__weakref__")

    def __init__(self):
        self.arrays: list[list] = []
        self.held = [0]   # this recycler's bytes (boxed: its finalizer returns them)
        weakref.finalize(self, _release, self.held)

    def slot(self, i: int) -> int:
        """Make slot ``i`` (programs of one graph at several batch sizes share a recycler
        and number their ``out`` lines alike)."""
        while len(self.arrays) <= i:
            self.arrays.append([None, None])
        return i

    def take(self, i: int, shape: tuple, dt: np.dtype) -> np.ndarray:
        pair = self.arrays[i]
        for k in (0, 1):
            a = pair[k]
            # 3 references: the pair's, ``a`` and getrefcount's argument: nobody else's
            if a is not None and a.shape == shape and a.dtype is dt \
                    and sys.getrefcount(a) == 3:
                return a
        a = np.empty(shape, dt)
        old = pair[1]
        change = a.nbytes - (old.nbytes if old is not None else 0)
        with _held_lock:
            if _held[0] + change > BUDGET:
                return a
            _held[0] += change
        self.held[0] += change
        pair[0], pair[1] = a, pair[0]
        return a


class RunBuilder:
    """Collects the lines and constants of a generated ``run`` function."""

    def __init__(self, name: str, recycler: Recycler | None = None):
        self.name = name
        self.recycler = recycler if recycler is not None else Recycler()
        self._slots = 0
        self.ns: dict = {"empty": np.empty, "take": self.recycler.take, "copyto": np.copyto,
                         "matmul": np.matmul}
        self.lines: list[str] = []
        self.ref: dict[int, str] = {}      # id(Value) -> local or global name
        self.const: dict[int, np.ndarray] = {}  # id(Value) -> its fixed array
        self._n = 0
        self.node = None   # the node being planned (set by the backend; a profile's label)
        self.labels: dict[str, str] = {}

    def fresh(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def constant(self, obj, prefix: str = "K") -> str:
        """A global name bound to ``obj``."""
        name = self.fresh(prefix)
        self.ns[name] = obj
        if _profile is not None and prefix == "k" and self.node is not None:
            out = self.node.outputs[0].type.shape if self.node.outputs else ()
            self.labels[name] = f"{fmt_shapes([out])} {self.node.name or self.node.op.name}"
        return name

    def bind_const(self, v: Value, array: np.ndarray) -> None:
        """``v`` lives in ``array`` for every run (an arena view)."""
        self.const[id(v)] = array
        self.ref[id(v)] = self.constant(array, "A")

    def bind_local(self, v: Value) -> str:
        name = self.fresh("v")
        self.ref[id(v)] = name
        return name

    def expr(self, v: Value, shape: tuple | None = None) -> str:
        """Source for ``v`` viewed as ``shape`` (a reshaped constant is made once)."""
        name = self.ref[id(v)]
        if shape is None or tuple(shape) == v.type.shape:
            return name
        arr = self.const.get(id(v))
        if arr is not None:
            return self.constant(arr.reshape(shape), "A")
        return f"{name}.reshape({self.shape(shape)})"

    def shape(self, shape: tuple) -> str:
        """A global name bound to ``shape``: shapes are never literals in the source, so
        the graph's programs at other batch sizes have the same source (compiled once)."""
        return self.constant(tuple(shape), "S")

    def out(self, v: Value) -> str:
        """The name of ``v``'s buffer: its arena view, or a fresh array made by this line."""
        if id(v) in self.ref:
            return self.ref[id(v)]
        name = self.bind_local(v)
        dt = self.constant(np.dtype(v.type.dtype), "D")
        slot = self.constant(self.recycler.slot(self._slots), "R")
        self._slots += 1
        self.lines.append(f"{name} = take({slot}, {self.shape(v.type.shape)}, {dt})")
        return name

    def emit(self, line: str) -> None:
        self.lines.append(line)

    def build(self, params: Sequence[str], ret: Sequence[str]) -> Callable:
        """Compile the function ``run(<params>)`` returning the list ``ret``."""
        body = self.lines or ["pass"]
        src = (f"def run({', '.join(params)}):\n"
               + "".join(f"    {ln}\n" for ln in body)
               + f"    return [{', '.join(ret)}]\n")
        code = _CODE.get(src)
        if code is None:
            if len(_CODE) >= _CODE_MAX:
                _CODE.clear()
            code = _CODE[src] = compile(src, f"<ember cpu run {self.name}>", "exec")
        if _profile is not None:
            for name in [n for n in self.ns if n[0] == "k" and n[1:].isdigit()]:
                if callable(self.ns[name]):
                    self.ns[name] = _profile.wrap(self.name, name, self.ns[name])
                    _profile.lines[(self.name, name)] = self.labels.get(name, "")
        exec(code, self.ns)
        fn = self.ns["run"]
        fn.source = src
        return fn


def arg_checker(graph_name: str, values: Sequence[Value], what: str):
    """``check(arrays) -> arrays`` validating dtypes and shapes (fast path: exact match)."""
    n = len(values)
    want = [(np.dtype(v.type.dtype), v.type.shape) for v in values]
    static = all(s is not None and None not in s for _, s in want)

    def slow(arrays):
        out = []
        for v, a in zip(values, arrays):
            a = a if isinstance(a, np.ndarray) else np.asarray(a)
            t = v.type
            if a.dtype.name != t.dtype or (t.shape is not None and (
                    a.ndim != len(t.shape) or any(d is not None and d != k
                                                  for d, k in zip(t.shape, a.shape)))):
                raise EmberError(f"graph {graph_name}: {v.name_hint or what!r} expects "
                                 f"{t}, got shape {fmt_shapes([a.shape])} {a.dtype.name}")
            out.append(a)
        return out

    def check(arrays):
        if len(arrays) != n:
            raise EmberError(f"graph {graph_name} takes {n} {what}s, got {len(arrays)}")
        if static:
            for a, (dt, shape) in zip(arrays, want):
                if type(a) is not np.ndarray or a.dtype is not dt or a.shape != shape:
                    return slow(arrays)
            return arrays
        return slow(arrays)
    return check
