"""``_CachedOp``: a whole compiled graph applied as one op (MXNet's CachedOp node).

``autograd.get_symbol`` shows a hybridized block with more ops than its ``inline_limit`` as
one such node, as MXNet does. The graph travels in the ``subgraph`` attribute; the node's
inputs are the graph's inputs followed by its parameters, its outputs the graph's outputs.
The kernel runs the graph with its ops' reference kernels (``fused.interpret``).
"""
from __future__ import annotations

from .errors import ShapeError
from .fused import interpret
from .ops import REQUIRED, OpKind, defop


class Subgraph:
    """The graph held by a ``_CachedOp`` attribute (compared and hashed by identity)."""

    __slots__ = ("graph",)

    def __init__(self, graph):
        self.graph = graph

    def __repr__(self) -> str:
        return f"<graph {self.graph.name}: {len(self.graph.nodes)} ops>"


def _n_inputs(attrs) -> int:
    g = attrs["subgraph"].graph
    return len(g.inputs) + len(g.params)


def _cached_op(arrays, attrs):
    g = attrs["subgraph"].graph
    return interpret(g, arrays, [*g.inputs, *g.params])


def _infer(in_types, attrs):
    g = attrs["subgraph"].graph
    want = _n_inputs(attrs)
    if len(in_types) != want:
        raise ShapeError(f"_CachedOp {g.name}: takes {want} inputs (data, then parameters), "
                         f"got {len(in_types)}")
    return [v.type for v in g.outputs], [v.type for v in (*g.inputs, *g.params)]


defop("_CachedOp", OpKind.OPAQUE, _cached_op, _infer, inputs=("*data",),
      attrs={"subgraph": REQUIRED},
      num_outputs=lambda at: len(at["subgraph"].graph.outputs),
      doc="A compiled graph applied as one op (a hybridized block in get_symbol).")
