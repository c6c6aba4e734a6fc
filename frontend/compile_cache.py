"""The front end's compilations through the whole-program cache, with a progress line.

``hybridize()`` and ``@ember.compile`` run the passes here: :func:`optimize` (the traced
graph's ``infer_shapes, simplify``), :func:`lower` (``fuse, plan_memory`` of a graph that is
compiled as it is) and :func:`split` (autodiff, the passes, the forward/backward split and
the lowering of both halves). Each looks the result up in
:mod:`ember.runtime.program_cache` first, keyed by the IR text it starts from, so a second
process with the same model runs no pass at all.

:func:`announce` prints ``ember: compiling <name> (<n> new kernels) ...`` on stderr when it
is a terminal and kernels of the programs just built have no compiled code in the kernel
cache yet (numba compiles them on the first run: seconds each); nothing otherwise.
``EMBER_PROGRESS=1`` always prints the line, ``0`` never. It then has them compiled on
every core before the first run (:mod:`ember.runtime.precompile`). Small programs (a loss)
run on the reference backend instead until a worker process has compiled their kernels
(``precompile.defer_small``), and say nothing.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from ember.ir.graph import Graph

_HERE = Path(__file__).resolve()


def _code() -> tuple[str, ...]:
    """The sources whose behaviour a cached program depends on: the ops and IR (ir/), the
    passes (passes/) and the split into forward and backward (cached_op, this file)."""
    import ember.ir
    import ember.passes
    return (str(Path(ember.ir.__file__).parent), str(Path(ember.passes.__file__).parent),
            str(_HERE.parent / "gluon" / "cached_op.py"), str(_HERE))


def _cached(graph: Graph, request: str, backend: str, build: Callable) -> tuple[list, dict]:
    from ember.runtime import program_cache
    return program_cache.cached(graph, request, backend, _code(), build)


def optimize(graph: Graph, passes: list[str], backend: str) -> Graph:
    """``run_pipeline(graph, passes)``, or its cached result."""
    from ember.passes import run_pipeline
    graphs, _ = _cached(graph, "optimize:" + ",".join(passes), backend,
                        lambda: ([run_pipeline(graph, passes)], {}))
    return graphs[0]


def lower(graph: Graph, passes: list[str], backend: str) -> Graph:
    """The lowering ``passes`` (``fuse, plan_memory``) of ``graph``, or their cached result."""
    from ember.passes import run_pipeline
    graphs, _ = _cached(graph, "lower:" + ",".join(passes), backend,
                        lambda: ([run_pipeline(graph, passes)], {}))
    return graphs[0]


def split(graph: Graph, n_outputs: int, wrt: list, backend: str,
          build: Callable[[], tuple[Graph, Graph, list]]) -> tuple[Graph, Graph, list]:
    """``build()``'s lowered forward and backward graphs and residual sources for the
    gradients of ``graph`` w.r.t. the Values ``wrt``, or their cached copies."""
    pos = {id(v): f"i{k}" for k, v in enumerate(graph.inputs)}
    pos.update((id(v), f"p{k}") for k, v in enumerate(graph.params))
    request = f"split:{n_outputs}:" + ",".join(pos.get(id(v), "?") for v in wrt)

    def make():
        fwd, bwd, residual_src = build()
        return [fwd, bwd], {"residual_src": [list(r) for r in residual_src]}
    if "?" in request:  # a Value that is neither input nor parameter: not describable
        fwd, bwd, residual_src = build()
        return fwd, bwd, residual_src
    (fwd, bwd), extra = _cached(graph, request, backend, make)
    return fwd, bwd, [tuple(r) for r in extra["residual_src"]]


# ---- progress ---------------------------------------------------------------------------
def _wanted() -> bool:
    mode = os.environ.get("EMBER_PROGRESS", "")
    if mode in ("0", "1"):
        return mode == "1"
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def new_kernels() -> int:
    """Kernels loaded so far whose compiled code the kernel cache did not have."""
    from ember.runtime.cache import default_cache
    return default_cache().uncompiled


def announce(name: str, since: int, executables=()) -> None:
    """When kernels loaded since the count ``since`` (from :func:`new_kernels`) have no
    compiled code yet: let the small CPU programs among ``executables`` run on NumPy
    meanwhile (``precompile.defer_small``), say on a terminal that ``name``'s kernels are
    being compiled and compile them on every core (:mod:`ember.runtime.precompile`) for
    the other CPU programs, before their first run."""
    n = new_kernels() - since
    if n <= 0:
        return
    from ember.runtime.precompile import defer_small, precompile
    deferred = defer_small(executables)
    if deferred and len(deferred) == len(executables):
        return   # they run on NumPy meanwhile: nothing to wait for
    if _wanted():
        sys.stderr.write(f"ember: compiling {name} ({n} new kernel{'s' * (n != 1)}) ...\n")
        sys.stderr.flush()
    programs = [(exe._fn.run_fn, exe.graph) for exe in executables
                if exe.backend == "cpu" and hasattr(exe._fn, "run_fn") and
                exe not in deferred]
    if programs:
        precompile(programs)
