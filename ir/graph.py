"""The SSA graph IR: Value, Node, Graph, and GraphBuilder (DESIGN.md s.4).

Graphs are straight-line dataflow in topological order (jaxpr style). They are built only
through :meth:`GraphBuilder.emit`, which runs the op's shape rule at once: outputs get their
types, and inputs whose types the rule refines (a lazy parameter consumed by a dense layer)
learn them on the spot.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import EmberError
from .ops import OpDef, OpKind, get_op, normalize_attrs
from .shape_rules import unify
from .types import TensorType


class Value:
    """One SSA value. Identity is object identity; names are invented when printing."""

    __slots__ = ("type", "producer", "index", "name_hint", "mem", "__weakref__")

    def __init__(self, type: TensorType, producer: Node | None = None, index: int = 0,
                 name_hint: str | None = None, mem: tuple[str, int] | None = None):
        self.type = type
        self.producer = producer
        self.index = index
        self.name_hint = name_hint
        self.mem = mem  # (arena, byte offset) once memory is planned: "@arena+offset"

    def __repr__(self) -> str:
        return f"<Value {self.name_hint or ''}: {self.type}>"


@dataclass(eq=False)
class Node:
    """An op application: inputs are Values, attrs a sorted tuple of (name, value) pairs."""

    op: OpDef
    inputs: list[Value]
    attrs: tuple[tuple[str, Any], ...]
    outputs: list[Value] = field(default_factory=list)
    loc: str | None = None
    name: str | None = None
    body: Graph | None = None  # a fused node's sub-graph: inputs/outputs match the node's

    @property
    def attr_dict(self) -> dict:
        return dict(self.attrs)


@dataclass(eq=False)
class Graph:
    """A function: inputs, parameters, nodes in topological order, outputs."""

    name: str
    inputs: list[Value]
    params: list[Value]
    nodes: list[Node]
    outputs: list[Value]
    meta: dict = field(default_factory=dict)

    def copy(self) -> Graph:
        """A deep copy: fresh Values and Nodes (fused bodies included), the same ops."""
        vmap: dict[int, Value] = {}

        def leaf(v: Value) -> Value:
            nv = Value(v.type, None, v.index, v.name_hint, v.mem)
            vmap[id(v)] = nv
            return nv

        inputs = [leaf(v) for v in self.inputs]
        params = [leaf(v) for v in self.params]
        nodes = []
        for n in self.nodes:
            body = n.body.copy() if n.body is not None else None
            c = clone_node(n, [vmap.get(id(v), v) for v in n.inputs], body=body)
            vmap.update((id(o), co) for o, co in zip(n.outputs, c.outputs))
            nodes.append(c)
        return Graph(self.name, inputs, params, nodes,
                     [vmap.get(id(v), v) for v in self.outputs], dict(self.meta))

    def users(self) -> dict[Value, list[Node]]:
        """Value -> the nodes that read it (computed on demand)."""
        out: dict[Value, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                out.setdefault(v, []).append(n)
        return out


def make_node(op: OpDef | str, inputs: list[Value], attrs: dict, loc: str | None = None,
              name: str | None = None) -> Node:
    """Create an op application, running its shape rule (inputs may learn their types).

    ``attrs`` may carry ``is_train`` for ops whose result depends on training mode. When an
    input's rank is unknown the rule cannot run yet: outputs get unknown types and the
    ``infer_shapes`` pass resolves them once input shapes are given.
    """
    op = get_op(op) if isinstance(op, str) else op
    attrs = dict(attrs)
    is_train = attrs.pop("is_train", False)
    attrs = normalize_attrs(op, attrs)
    if op.mode:
        attrs["is_train"] = bool(is_train)
    in_types = [v.type for v in inputs]
    try:
        if in_types and in_types[0].shape is None:  # no data shape yet: nothing to infer
            raise EmberError("unknown data shape")
        out_types, refined = op.infer(in_types, attrs)
    except (EmberError, TypeError, AttributeError, IndexError, ValueError) as e:
        if any(t.shape is None for t in in_types):
            # unknown data, or a rule that needs every input's rank (a parameter of unknown
            # shape, as MXNet's shape=None, is refined from known data; its dtype may be a
            # placeholder too): the outputs stay unknown until shape inference knows more
            out_types = [TensorType(None, in_types[0].dtype if in_types else "float32")] \
                * op.n_outputs(attrs)
            refined = []
        elif not isinstance(e, EmberError):
            raise
        elif loc:
            raise type(e)(f"{e} (at {loc})") from None
        else:
            raise
    for v, t in zip(inputs, refined):
        if t != v.type and t.shape is not None:   # rules refine lazy inputs (a weight's shape)
            shape = t.shape if v.type.shape is None else unify(v.type.shape, t.shape,
                                                               op.name, in_types)
            v.type = TensorType(shape, t.dtype)
    node = Node(op, list(inputs), tuple(sorted(attrs.items())), loc=loc, name=name)
    node.outputs = [Value(t, node, i) for i, t in enumerate(out_types)]
    return node


def clone_node(node: Node, inputs: list[Value], out_types: list[TensorType] | None = None,
               **changes) -> Node:
    """A copy of ``node`` reading ``inputs``, with fresh outputs (types kept unless given).

    The shape rule does not run: passes that rebuild graphs through a value map use this to
    keep what they know. ``changes`` replaces Node fields (``attrs``, ``name``, ``body``...).
    """
    fields = {"op": node.op, "attrs": node.attrs, "loc": node.loc, "name": node.name,
              "body": node.body, **changes}
    new = Node(fields["op"], list(inputs), fields["attrs"], loc=fields["loc"],
               name=fields["name"], body=fields["body"])
    types = out_types or [o.type for o in node.outputs]
    new.outputs = [Value(t, new, i, o.name_hint, o.mem)
                   for i, (t, o) in enumerate(zip(types, node.outputs))]
    return new


def _fused_compute(ins, attrs):
    raise EmberError("a fused node has no kernel of its own: backends run its body "
                     "(Node.body), one node at a time or as generated code")


def _fused_infer(in_types, attrs):
    raise EmberError("a fused node's output types are its body's output types "
                     "(Node.body.outputs); its op has no shape rule")


# The op of every fused node (not in the registry: it is not an operator users can call).
FUSED = OpDef("fused", OpKind.OPAQUE, _fused_compute, _fused_infer, inputs=("*data",))


def make_fused(name: str, inputs: list[Value], body: Graph, loc: str | None = None) -> Node:
    """A fused node calling ``body`` on ``inputs`` (one per body input); ``body.name`` is
    set to ``name``, which the text format prints in the op position."""
    body.name = name
    node = Node(FUSED, list(inputs), (), loc=loc, name=name, body=body)
    node.outputs = [Value(v.type, node, i) for i, v in enumerate(body.outputs)]
    return node


def topo_order(roots: list, parents) -> list:
    """Everything reachable from ``roots`` through ``parents(x)``, parents before children
    (iterative post-order DFS, so deep graphs do not hit Python's recursion limit)."""
    order: list = []
    seen: set[int] = set()
    stack = [(r, False) for r in reversed(roots)]
    while stack:
        item, done = stack.pop()
        if done:
            order.append(item)
            continue
        if id(item) in seen:
            continue
        seen.add(id(item))
        stack.append((item, True))
        for p in reversed(parents(item)):
            if id(p) not in seen:
                stack.append((p, False))
    return order


def kept_apart(graph: Graph) -> set[int]:
    """ids of the values a compiled program keeps out of its arena: the graph's outputs (a
    run hands them out; the next run would overwrite them there) and values a node mutates.
    ``plan_memory`` leaves them unplanned; the backends give them arrays of their own."""
    mutated = {id(n.inputs[i]) for n in graph.nodes for i in n.op.mutated(n.attr_dict)}
    return mutated | {id(v) for v in graph.outputs}


def topo_nodes(outputs: list[Value]) -> list[Node]:
    """The nodes ``outputs`` depend on, producers before users."""
    return topo_order([v.producer for v in outputs if v.producer is not None],
                      lambda n: [v.producer for v in n.inputs if v.producer is not None])


class GraphBuilder:
    """Appends nodes one at a time; every emit runs the op's shape rule."""

    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[Value] = []
        self.params: list[Value] = []
        self.nodes: list[Node] = []

    def input(self, type: TensorType, name: str | None = None) -> Value:
        v = Value(type, name_hint=name)
        self.inputs.append(v)
        return v

    def param(self, type: TensorType, name: str | None = None) -> Value:
        v = Value(type, name_hint=name)
        self.params.append(v)
        return v

    def emit(self, op: OpDef | str, inputs: list[Value], loc: str | None = None,
             name: str | None = None, **attrs) -> list[Value]:
        """Add ``op(inputs, **attrs)``; returns its output Values (types inferred)."""
        node = make_node(op, inputs, attrs, loc, name)
        self.nodes.append(node)
        return node.outputs

    def build(self, outputs: list[Value]) -> Graph:
        """The finished graph returning ``outputs``."""
        return Graph(self.name, list(self.inputs), list(self.params), list(self.nodes),
                     list(outputs))
