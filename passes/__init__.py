"""ember.passes: the pass registry and the pipeline (DESIGN.md s.5).

A pass is a function ``Graph -> Graph`` with keyword options, registered under a name with
:func:`register_pass`. :data:`PIPELINE` is the whole compiler in one readable list (as in
tinygrad); :func:`run_pipeline` runs it, or any list of pass names, verifying the IR after
each pass when asked, timing each, and printing the IR after the passes named in
``EMBER_DUMP`` (Numba's ``NUMBA_DUMP_*`` idea).
"""
from __future__ import annotations

import inspect
import os
import sys
import time
from collections.abc import Callable, Sequence

from ember.ir.errors import EmberError
from ember.ir.graph import Graph

PassFn = Callable[..., Graph]

# The compiler, in order. The steps from "autodiff" up to "fuse" run only when gradients are
# asked for (run_pipeline(..., grad=True)): infer_shapes and simplify then type and clean the
# backward nodes.
PIPELINE = ["infer_shapes", "simplify", "autodiff", "infer_shapes", "simplify",
            "fold_batch_norm", "fuse", "plan_memory"]

# Passes other people are still writing: skipped while they are not registered.


class PassInfo:
    """A registered pass: its function, what must run before it, the options it takes."""

    def __init__(self, name: str, fn: PassFn, requires: tuple[str, ...]):
        self.name, self.fn, self.requires = name, fn, requires
        params = inspect.signature(fn).parameters.values()
        self.any_option = any(p.kind is p.VAR_KEYWORD for p in params)
        self.options = {p.name for p in params if p.kind is p.KEYWORD_ONLY}

    def __call__(self, graph: Graph, **options) -> Graph:
        return self.fn(graph, **options)


_PASSES: dict[str, PassInfo] = {}


def register_pass(name: str, requires: Sequence[str] = ()) -> Callable[[PassFn], PassFn]:
    """Decorator: register ``fn(graph, *, **options) -> Graph`` as pass ``name``.

    ``requires`` names passes that must have run on the graph first (``run_pipeline``
    checks it against the ``pass_ms.<name>`` entries it records in ``graph.meta``).
    """
    def deco(fn: PassFn) -> PassFn:
        if name in _PASSES and _PASSES[name].fn is not fn:
            raise ValueError(f"pass {name!r} is registered twice")
        _PASSES[name] = PassInfo(name, fn, tuple(requires))
        return fn
    return deco


def get_pass(name: str) -> PassInfo:
    """The registered pass called ``name``."""
    try:
        return _PASSES[name]
    except KeyError:
        raise EmberError(f"unknown pass {name!r}; registered: {', '.join(sorted(_PASSES))}") \
            from None


def registered_passes() -> list[str]:
    """Names of all registered passes."""
    return sorted(_PASSES)


def pipeline(grad: bool = False) -> list[str]:
    """:data:`PIPELINE` without its gradient steps unless ``grad``."""
    if grad:
        return list(PIPELINE)
    start = PIPELINE.index("autodiff")
    return PIPELINE[:start] + PIPELINE[PIPELINE.index("fold_batch_norm"):]


def _dump_set(dump: str | None) -> set[str]:
    text = os.environ.get("EMBER_DUMP", "") if dump is None else dump
    return {p.strip() for p in text.split(",") if p.strip()}


def run_pipeline(graph: Graph, passes: Sequence[str] | None = None, *, verify: bool = False,
                 dump: str | None = None, grad: bool = False, **options) -> Graph:
    """Run ``passes`` (default: :func:`pipeline` of ``grad``) over ``graph``.

    Each pass gets the keyword ``options`` its signature names (``partial=True`` reaches
    ``infer_shapes``, ``wrt=`` reaches ``autodiff``). ``simplify`` after ``autodiff`` may
    drop ``stop_gradient`` (gradients are taken by then). ``verify`` checks the IR after
    each pass. Wall time lands in ``graph.meta['pass_ms.<name>']`` (summed over repeats).
    ``dump`` (default: the ``EMBER_DUMP`` variable), a comma list of pass names or ``all``,
    prints the IR after those passes to stderr under a header naming the pass.
    """
    from ember.ir.printer import print_graph
    from ember.ir.verify import verify as verify_graph

    names = pipeline(grad) if passes is None else list(passes)
    wanted = _dump_set(dump)
    done: list[str] = []
    for name in names:
        if name not in _PASSES:
            get_pass(name)  # raises: unknown pass
        info = _PASSES[name]
        missing = [r for r in info.requires
                   if r not in done and f"pass_ms.{r}" not in graph.meta]
        if missing:
            raise EmberError(f"pass {name} needs {', '.join(missing)} to run first")
        opts = dict(options) if info.any_option else \
            {k: v for k, v in options.items() if k in info.options}
        if name == "simplify" and "autodiff" in done and "keep_stop_gradient" in info.options:
            opts.setdefault("keep_stop_gradient", False)
        t0 = time.perf_counter()
        out = info(graph, **opts)
        ms = (time.perf_counter() - t0) * 1e3
        if not isinstance(out, Graph):
            raise EmberError(f"pass {name} returned {type(out).__name__}, not a Graph")
        out.meta = {**graph.meta, **out.meta}
        key = f"pass_ms.{name}"
        out.meta[key] = round(graph.meta.get(key, 0.0) + ms, 3)
        graph = out
        done.append(name)
        if verify:
            verify_graph(graph)
        if "all" in wanted or name in wanted:
            sys.stderr.write(f"# ---- IR after pass {name} ({ms:.3f} ms) ----\n"
                             + print_graph(graph))
    return graph


# Each pass module registers itself on import.
from . import autodiff, fold_bn, fuse, infer_shapes, plan_memory, simplify  # noqa: E402,F401
