"""``Executable``: a graph compiled by one backend, ready to run (DESIGN.md s.6).

The backend interface is one function, ``ember.backends.<name>.compile(graph)``, returning
``run(inputs, params) -> outputs``. An Executable holds that function with the graph's
signature, so the call path is an argument check and one call. The runtime may not import
the passes (DESIGN.md s.1), so :meth:`Executable.from_graph` takes the passes to run as
callables (``ember.passes.run_pipeline`` partially applied, or single pass functions),
chosen by the front end.

A compiled program owns one arena (its intermediates' buffers), so two runs at once would
write each other's intermediates: ``run`` holds the Executable's lock (outputs are fresh
arrays, so nothing of a run is shared once it returns). Threads calling different
Executables do not wait for each other.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
import threading
from collections.abc import Callable, Sequence

import numpy as np

import ember.backends
from ember.ir.errors import EmberError
from ember.ir.graph import Graph
from ember.ir.types import TensorType

from .thread_pools import adapt as adapt_threads


def available_backends() -> list[str]:
    """Names of the backend modules (each defines ``compile(graph)``)."""
    return sorted(m.name for m in pkgutil.iter_modules(ember.backends.__path__)
                  if not m.name.startswith("_"))


def _load_backend(name: str):
    mod = sys.modules.get(f"ember.backends.{name}")
    if mod is not None and callable(getattr(mod, "compile", None)):
        return mod  # (loaded before: no directory listing per compiled program)
    if name not in available_backends():
        raise EmberError(f"unknown backend {name!r}; available: "
                         f"{', '.join(available_backends())}")
    mod = importlib.import_module(f"ember.backends.{name}")
    if not callable(getattr(mod, "compile", None)):
        raise EmberError(f"backend {name!r} defines no compile(graph)")
    return mod


class Executable:
    """``graph`` compiled by ``backend``; ``run(inputs, params)`` executes it."""

    __slots__ = ("graph", "backend", "input_types", "param_types", "param_names",
                 "output_types", "_fn", "_n_in", "_n_params", "_lock")

    def __init__(self, graph: Graph, backend: str = "reference", arena=None):
        self.graph = graph
        self.backend = backend
        self.input_types: tuple[TensorType, ...] = tuple(v.type for v in graph.inputs)
        self.param_types: tuple[TensorType, ...] = tuple(v.type for v in graph.params)
        self.param_names: tuple[str, ...] = tuple(v.name_hint or f"param{i}"
                                                  for i, v in enumerate(graph.params))
        self.output_types: tuple[TensorType, ...] = tuple(v.type for v in graph.outputs)
        self._n_in, self._n_params = len(graph.inputs), len(graph.params)
        if arena is None:
            self._fn = _load_backend(backend).compile(graph)
            self._lock = threading.Lock()
        else:  # over buffers shared with the graph's programs at other batch sizes
            self._fn = _load_backend(backend).compile(graph, arena=arena)
            self._lock = arena.lock  # (one run at a time over them: runtime.arena)
        if backend == "cuda":  # captured once as a CUDA graph, then replayed
            from .cuda_graph import graphed
            self._fn = graphed(self._fn)

    @classmethod
    def from_graph(cls, graph: Graph, passes: Sequence[Callable[[Graph], Graph]] = (),
                   backend: str = "reference") -> Executable:
        """Run ``passes`` (functions ``Graph -> Graph``) in order, then compile the result."""
        for p in passes:
            graph = p(graph)
            if not isinstance(graph, Graph):
                raise EmberError(f"pass {getattr(p, '__name__', p)!r} returned "
                                 f"{type(graph).__name__}, not a Graph")
        return cls(graph, backend)

    def run(self, inputs: Sequence[np.ndarray],
            params: Sequence[np.ndarray] = ()) -> list[np.ndarray]:
        """The graph's outputs for ``inputs`` and ``params`` (in the graph's order).

        Parameters that the graph updates in place (BatchNorm statistics, optimizer state)
        are updated in the arrays passed.
        """
        if len(inputs) != self._n_in or len(params) != self._n_params:
            raise EmberError(f"{self.graph.name}: expected {self._n_in} inputs and "
                             f"{self._n_params} parameters, got {len(inputs)} and "
                             f"{len(params)}")
        adapt_threads()  # as many threads as the machine has free cores (runtime.thread_pools)
        with self._lock:  # one run at a time over the arena
            return self._fn(inputs, params)

    def run_reference_until(self, tier) -> None:
        """Run the graph on the reference backend (NumPy) until ``tier`` (a
        ``backends.cpu_tiered.Deferred`` of the compiled program's kernels, compiled in the
        background from its second run) is ready, then the compiled program. Which runs
        are NumPy's depends on how fast the compile is: ``EMBER_DEFER_KERNELS=0`` (no
        tiers) for numbers that do not."""
        compiled = self._fn
        ref = _load_backend("reference").compile(self.graph)
        self._fn = _Tiered(self, compiled, ref, tier)

    def __repr__(self) -> str:
        ins = ", ".join(str(t) for t in self.input_types)
        return f"<Executable {self.graph.name}({ins}) on {self.backend}>"


class _Tiered:
    """An Executable's function while its kernels compile: the reference backend's run
    until ``tier.ready()``, then the compiled one, which it puts back in the Executable.
    Attributes (``run_fn``, ``report``) are the compiled function's."""

    __slots__ = ("exe", "compiled", "ref", "tier")

    def __init__(self, exe: Executable, compiled, ref, tier):
        self.exe, self.compiled, self.ref, self.tier = exe, compiled, ref, tier

    def __call__(self, inputs, params):
        if self.tier.ready():   # (its second call queues the background compile)
            self.exe._fn = self.compiled
            return self.compiled(inputs, params)
        return self.ref(inputs, params)

    def __getattr__(self, name):
        return getattr(self.compiled, name)
