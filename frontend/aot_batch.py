"""Batch-polymorphic AOT packages (DESIGN.md s.7): which dims of a package may vary, and
the package's graph specialised again for another batch size.

A package stores its optimised graph at the example inputs' shapes together with the map of
its dynamic dims (manifest ``"dynamic"``: ``{"inputs": [[0], ...], "outputs": [[0], ...]}``).
The batch is the first dim of the inputs that have one; ``ember.load`` runs another batch size
by :func:`retype`: the same nodes, attributes and fused bodies, every type recomputed by the
ops' shape rules from the new input types, then verified and planned as the package's graph
is. Nothing of the model is traced again.

That is only right when no attribute and no traced branch depends on the batch size (a
``reshape`` to ``(x.shape[0], -1)``, a slice ending at the batch, Python code testing
``x.shape[0]``). :func:`batch_polymorphism` checks it the way ONNX exporters check their
dynamic axes: the model is traced and optimised once more at batch B+1, and the graph of
batch B re-specialised to B+1 must print exactly as that trace (same ops, attributes and
types). A graph that fails keeps its fixed batch, and the manifest says why.
"""
from __future__ import annotations

import numpy as np

from ember.base import MXNetError
from ember.ir.errors import EmberError
from ember.ir.graph import Graph, Value, clone_node
from ember.ir.printer import print_graph
from ember.ir.types import TensorType

__all__ = ["batch_polymorphism", "batched_inputs", "dynamic_entry", "input_batch",
           "read_dynamic", "retype", "shape_text", "specialise"]


def retype(graph: Graph, types: list[TensorType], attrs=None) -> Graph:
    """A copy of ``graph`` whose inputs (then parameters, for the rest of ``types``) have
    ``types``, every node's outputs retyped by its shape rule (a fused node's by its body,
    retyped the same way); memory offsets are left out. EmberError when a rule refuses.
    ``attrs(node)``, when given, may return a node's new attributes (a dict; None keeps
    them): ``gluon.batch_family`` moves explicit batch sizes with it."""
    vmap: dict[int, Value] = {}
    leaves = graph.inputs + graph.params
    types = list(types) + [v.type for v in leaves[len(types):]]

    def leaf(v: Value, t: TensorType) -> Value:
        vmap[id(v)] = nv = Value(t, None, v.index, v.name_hint)
        return nv

    inputs = [leaf(v, t) for v, t in zip(graph.inputs, types)]
    params = [leaf(v, t) for v, t in zip(graph.params, types[len(graph.inputs):])]
    nodes = []
    for n in graph.nodes:
        ins = [vmap.get(id(v), v) for v in n.inputs]
        in_types = [v.type for v in ins]
        body, at = None, attrs(n) if attrs is not None else None
        changes = {} if at is None else {"attrs": tuple(sorted(at.items()))}
        at = n.attr_dict if at is None else at
        if n.body is not None:
            body = retype(n.body, in_types, attrs)
            body.name = n.body.name
            outs = [r.type for r in body.outputs]
        else:
            try:
                outs, refined = n.op.infer(in_types, at)
            except (EmberError, TypeError, ValueError, IndexError, AttributeError) as e:
                raise EmberError(f"{n.op.name} ({n.name or '?'}) refuses inputs "
                                 f"{', '.join(map(str, in_types))}: {e}") from None
            for i, (t, r) in enumerate(zip(in_types, refined)):
                if r.shape is not None and r.shape != t.shape:
                    raise EmberError(f"{n.op.name} ({n.name or '?'}): input {i} is {t}, its "
                                     f"shape rule needs {r}")
        new = clone_node(n, ins, list(outs), body=body, **changes)
        for o, old in zip(new.outputs, n.outputs):
            o.mem = None
            vmap[id(old)] = o
        nodes.append(new)
    meta = {k: v for k, v in graph.meta.items() if not k.endswith("_bytes")}
    return Graph(graph.name, inputs, params, nodes, [vmap.get(id(v), v) for v in graph.outputs],
                 meta)


def batched_inputs(types: list[TensorType]) -> list[bool]:
    """Which inputs carry the batch: those with a first dim equal to the first input's."""
    ranked = [t for t in types if t.shape]
    if not ranked:
        return [False] * len(types)
    batch = ranked[0].shape[0]
    return [bool(t.shape) and t.shape[0] == batch for t in types]


def at_batch(types: list[TensorType], batched: list[bool], batch: int) -> list[TensorType]:
    return [t.with_shape((batch, *t.shape[1:])) if b else t for t, b in zip(types, batched)]


def _plain(graph: Graph) -> str:
    """The graph's text without memory offsets, meta lines and node names (a function's
    nodes are named by a counter that differs from trace to trace), for comparing graphs."""
    graph = graph.copy()
    stack = [graph]
    while stack:
        g = stack.pop()
        for v in (*g.inputs, *g.params, *(o for n in g.nodes for o in n.outputs)):
            v.mem = None
        for n in g.nodes:
            n.name = None
            if n.body is not None:
                n.body.name = "fused"
                stack.append(n.body)
    return print_graph(graph, meta=False)


def batch_polymorphism(graph: Graph, trace_at) -> tuple[dict, str | None]:
    """(the manifest's ``"dynamic"`` entry, None) when ``graph`` (optimised, at its example
    batch B) may run at any batch; (a fixed entry, the reason) when not. ``trace_at(b)``
    traces and optimises the model at batch ``b`` (its example inputs' first dims set to b)."""
    in_types = [v.type for v in graph.inputs]
    batched = batched_inputs(in_types)
    fixed = {"inputs": [[] for _ in graph.inputs], "outputs": [[] for _ in graph.outputs]}

    def refuse(why: str) -> tuple[dict, str]:
        return {**fixed, "why_fixed": why}, why
    if not any(batched):
        return refuse("no input has a batch dim")
    batch = in_types[batched.index(True)].shape[0]
    try:
        other = trace_at(batch + 1)
    except Exception as e:  # the model's own code may refuse another batch size
        return refuse(f"tracing at batch {batch + 1} failed ({type(e).__name__}: {e})")
    try:
        moved = retype(graph, at_batch(in_types, batched, batch + 1))
    except EmberError as e:
        return refuse(f"the graph of batch {batch} cannot run batch {batch + 1}: {e}")
    mine, theirs = _plain(moved).splitlines(), _plain(other).splitlines()
    if mine != theirs:
        diffs = [(a, b) for a, b in zip(mine, theirs) if a != b]
        diff = next((d for d in diffs if " fused(" not in d[0]), None) or \
            (diffs[0] if diffs else (f"{len(mine)} lines", f"{len(theirs)} lines"))
        return refuse(f"an attribute or a branch depends on the batch size: at batch "
                      f"{batch + 1} the trace gives\n    {diff[1].strip()}\nwhere the graph "
                      f"of batch {batch} gives\n    {diff[0].strip()}")
    outputs = [[d for d, (a, b) in enumerate(zip(v.type.shape, w.type.shape)) if a != b]
               for v, w in zip(graph.outputs, moved.outputs)]
    return {"inputs": [[0] if b else [] for b in batched], "outputs": outputs}, None


def dynamic_entry(graph: Graph, arrays: list, wanted: bool | None, trace) -> dict:
    """The manifest's ``"dynamic"`` entry for ``graph`` traced from ``arrays`` (NDArrays);
    ``wanted`` is ``export``'s ``dynamic_batch``, ``trace(arrays)`` the optimised graph of
    the model for other arrays."""
    from ember.ndarray.ndarray import NDArray
    if wanted is False:
        return {"inputs": [[] for _ in graph.inputs], "outputs": [[] for _ in graph.outputs],
                "why_fixed": "exported with dynamic_batch=False"}
    batched = batched_inputs([v.type for v in graph.inputs])

    def trace_at(batch: int) -> Graph:
        rows = [np.take(a.asnumpy(), np.arange(batch) % a.shape[0], axis=0) if b else None
                for a, b in zip(arrays, batched)]  # the example's rows, repeated
        return trace([NDArray(r) if b else a for a, r, b in zip(arrays, rows, batched)])
    entry, why = batch_polymorphism(graph, trace_at)
    if why is not None and wanted:
        raise MXNetError(f"export: {graph.name} cannot have a dynamic batch: {why}; export "
                         "it with dynamic_batch=False (or None) to keep the example's batch")
    return entry


def read_dynamic(manifest: dict, graph: Graph, where) -> list[bool] | None:
    """Which inputs of the package's graph take any batch size (None: a fixed package, as
    every package written before dynamic batches); MXNetError for a malformed entry."""
    doc = manifest.get("dynamic")
    if doc is None:
        return None
    ranks = [len(v.type.shape) for v in graph.inputs]
    ok = isinstance(doc, dict) and isinstance(doc.get("inputs"), list) and \
        len(doc["inputs"]) == len(ranks) and \
        all(d in ([], [0]) and (not d or r > 0) for d, r in zip(doc["inputs"], ranks))
    if not ok:
        raise MXNetError(f"{where}: the manifest's 'dynamic' entry must list, for each input, "
                         "[0] (a batch dim) or [] (fixed)")
    batched = [d == [0] for d in doc["inputs"]]
    if len({v.type.shape[0] for v, b in zip(graph.inputs, batched) if b}) > 1:
        raise MXNetError(f"{where}: the manifest's dynamic inputs do not share one batch dim")
    return batched if any(batched) else None


def specialise(graph: Graph, batched: list[bool], batch: int) -> Graph:
    """``graph`` retyped for ``batch``, verified and planned (EmberError when it cannot)."""
    from ember.ir.verify import verify
    from ember.passes import run_pipeline
    moved = retype(graph, at_batch([v.type for v in graph.inputs], batched, batch))
    verify(moved)
    return run_pipeline(moved, ["plan_memory"])


def shape_text(shape, batched: bool) -> str:
    """``(B, 784)`` for a batched input's shape, ``(1, 784)`` for a fixed one."""
    dims = ["B" if batched and i == 0 else str(d) for i, d in enumerate(shape)]
    return f"({', '.join(dims)}{',' if len(dims) == 1 else ''})"


def input_batch(manifest: dict, batched: list[bool] | None, arrays: list) -> int | None:
    """The batch size of a call's ``arrays`` (None for a fixed package); MXNetError naming
    the input whose count, dtype or fixed dims are not the package's."""
    want, name = manifest["inputs"], manifest["name"]
    if len(arrays) != len(want):
        raise MXNetError(f"{name}: the package takes {len(want)} inputs, got {len(arrays)}")
    flags = batched or [False] * len(want)
    batch = next((a.shape[0] for a, b in zip(arrays, flags) if b and a.ndim), None)
    for a, w, b in zip(arrays, want, flags):
        shape = [batch if b and i == 0 else d for i, d in enumerate(w["shape"])]
        if list(a.shape) != shape or a.dtype.name != w["dtype"]:
            why = manifest.get("dynamic")
            why = why.get("why_fixed") if isinstance(why, dict) else None
            more = " for any batch size B" if b else \
                f" (its batch is fixed: {why})" if isinstance(why, str) and why else ""
            raise MXNetError(f"{name}: input {w['name']!r} must be {w['dtype']}"
                             f"{shape_text(w['shape'], b)}{more}, got {a.dtype.name}{a.shape}")
    if batch is not None and batch < 1:
        raise MXNetError(f"{name}: the batch size must be at least 1, got {batch}")
    return batch
