"""The ``infer_shapes`` pass: give every value of a graph its full type.

The algorithm is MXNet's ``InferAttr`` (src/executor/infer_graph_attr_pass.cc): sweep the
nodes forward, running each op's shape rule on what is known of its inputs, then backward
in reverse order so that what a consumer learns about its inputs (the refined input types
every rule returns) reaches the producers of those inputs; repeat until nothing changes.
Types only ever get more precise (an unknown dim becomes known, an unknown rank a rank), so
the iteration reaches a fixed point. An op's ``infer_back`` rule fills unknown input dims
from its known output dims (the backward half of MXNet's FInferShape: a split's input from
an output, a convolution's batch and stride-1 spatial dims, concat's other dims, dense's
batch). Facts the rules cannot express run beside them: an ELEMWISE op's inputs and outputs
share one shape (so a known output shape flows back to its inputs), and a fused node's
values have its body's types.

This is how a lazy Gluon parameter learns its shape: the traced graph has a Dense weight
typed ``f32[256,?]``; fully_connected's rule refines it from the data, and the new graph's
parameter carries the refined type, which the front end reads back to run the initialiser.
"""
from __future__ import annotations

from collections.abc import Sequence

from ember.ir.errors import DimConflict, DTypeError, EmberError
from ember.ir.graph import Graph, Node, Value, clone_node
from ember.ir.ops import OpKind
from ember.ir.printer import Namer, format_node
from ember.ir.shape_rules import unify
from ember.ir.types import TensorType
from ember.passes import register_pass

_WEIGHT_HAS_DATA_RANK = ("convolution", "deconvolution")


class _Types:
    """The current type of each value, refined in place; ``changed`` records progress."""

    def __init__(self, graph: Graph, unknown_dtypes=None):
        self.graph = graph
        # ids of the values whose dtype is not known yet (None: every dtype is known)
        self.dtype_unknown: set[int] | None = None
        if unknown_dtypes is not None:
            self.dtype_unknown = {id(v) for v in unknown_dtypes}
            self.dtype_unknown.update(id(o) for n in graph.nodes for o in n.outputs)
        self.of: dict[int, TensorType] = {}
        for v in graph.inputs + graph.params:
            self.of[id(v)] = v.type
        for n in graph.nodes:
            for o in n.outputs:
                self.of[id(o)] = o.type
        self.changed = False

    def fail(self, node: Node, msg: str):
        namer = Namer()
        for v in self.graph.inputs + self.graph.params:
            namer.define(v)
        for n in self.graph.nodes:
            if n is node:
                break
            for o in n.outputs:
                namer.define(o)
        where = f" (at {node.loc})" if node.loc else ""
        raise EmberError(f"infer_shapes {self.graph.name}: {msg}{where}\n    "
                         + format_node(node, namer))

    def merge(self, v: Value, new: TensorType, node: Node, dtype: bool = True) -> None:
        """Refine ``v`` with ``new`` (its dtype too unless ``dtype`` is False)."""
        old = self.of[id(v)]
        shape = old.shape
        if new.shape is not None:
            if shape is None:
                shape = new.shape
            else:
                try:
                    shape = unify(shape, new.shape, node.op.name)
                except EmberError:
                    self.fail(node, f"a value typed {old} cannot also be {new}")
        t = TensorType(shape, new.dtype if dtype else old.dtype)
        if t != old:
            self.of[id(v)] = t
            self.changed = True

    def visit_dtypes(self, node: Node) -> None:
        """MXNet's ``ElemwiseType``: a leaf of unknown dtype takes a known input's dtype at
        the same node; outputs are known once every input is (or the op fixes ``dtype``)."""
        unknown = self.dtype_unknown
        ref = next((v for v in node.inputs if id(v) not in unknown), None)
        for v in node.inputs:
            if id(v) in unknown and v.producer is None and ref is not None:
                unknown.discard(id(v))
                self.of[id(v)] = self.of[id(v)].with_dtype(self.of[id(ref)].dtype)
                self.changed = True
        fixed = node.attr_dict.get("dtype") not in (None, "None")
        if any(id(o) in unknown for o in node.outputs) and \
                (fixed or all(id(v) not in unknown for v in node.inputs)):
            for o in node.outputs:
                unknown.discard(id(o))
                if self.of[id(o)].shape is None and (fixed or node.inputs):
                    # the shape rule cannot run yet: the op's dtype, or its input's
                    dt = node.attr_dict["dtype"] if fixed else self.of[id(node.inputs[0])].dtype
                    self.of[id(o)] = self.of[id(o)].with_dtype(dt)
            self.changed = True

    def visit(self, node: Node) -> None:
        if self.dtype_unknown is not None:
            self.visit_dtypes(node)
        if node.body is not None:
            body = node.body
            for v, p in zip(node.inputs, body.inputs + body.params):
                self.merge(v, p.type, node)
            for o, r in zip(node.outputs, body.outputs):
                self.merge(o, r.type, node)
            return
        if node.op.kind is OpKind.ELEMWISE:  # one shape for all inputs and outputs
            for v in node.inputs + node.outputs:
                for w in node.inputs + node.outputs:
                    if w is not v:
                        self.merge(v, self.of[id(w)], node, dtype=False)
        if node.op.infer_back is not None:
            try:
                back = node.op.infer_back([self.of[id(v)] for v in node.inputs],
                                          [self.of[id(o)] for o in node.outputs],
                                          node.attr_dict)
            except EmberError as e:  # e.g. two outputs of a split that disagree
                self.fail(node, str(e))
            for v, t in zip(node.inputs, back):
                self.merge(v, t, node, dtype=False)
        in_types = [self.of[id(v)] for v in node.inputs]
        unknown = self.dtype_unknown
        if unknown and any(id(v) in unknown for v in node.inputs):
            # a dtype not known yet is a placeholder: the rule sees a known input's instead
            dt = next((t.dtype for v, t in zip(node.inputs, in_types) if id(v) not in unknown),
                      None)
            if dt is not None:
                in_types = [t.with_dtype(dt) if id(v) in unknown else t
                            for v, t in zip(node.inputs, in_types)]
        if node.op.name in _WEIGHT_HAS_DATA_RANK and len(in_types) > 1 \
                and in_types[0].shape is not None and in_types[1].shape is None:
            # a convolution's weight has its data's rank (MXNet's ConvolutionShape assumes
            # it); the rule needs that rank to refine the weight of a symbol variable
            in_types[1] = in_types[1].with_shape((None,) * len(in_types[0].shape))
        ranked = all(t.shape is not None for t in in_types)
        try:
            outs, refined = node.op.infer(in_types, node.attr_dict)
        except EmberError as e:
            if ranked or isinstance(e, DTypeError | DimConflict):
                # dtypes need no shapes to disagree, nor do two known values of one dim
                self.fail(node, str(e))
            return  # a rule that needs every input's rank: wait until the ranks are known
        except (TypeError, AttributeError, IndexError, ValueError):
            if ranked:
                raise
            return  # this rule needs every input's rank (some rules, like dense, do not)
        for v, t in zip(node.inputs, refined):
            self.merge(v, t, node)
        for o, t in zip(node.outputs, outs):
            self.merge(o, t, node)


def _init_shape(node: Node, types: _Types) -> dict:
    """nnvm's InitShape: an op without inputs (zeros, ones, full, random draws) whose
    ``shape`` attribute has unknown dims (MXNet's legacy 0, e.g. a recurrent cell's begin
    state) takes the shape inferred for its output; ``clone_node``'s changes, or none."""
    shape = None if node.inputs else node.attr_dict.get("shape")
    if not isinstance(shape, tuple) or None not in shape:
        return {}
    out = types.of[id(node.outputs[0])]
    if not out.known:
        return {}
    return {"attrs": tuple(sorted({**node.attr_dict, "shape": out.shape}.items()))}


def _first_unknown(g: Graph) -> str | None:
    """A message naming the first value of ``g`` whose type is not fully known."""
    namer = Namer()
    users: dict[int, list[Node]] = {}
    for v in g.inputs + g.params:
        namer.define(v)
    for n in g.nodes:
        for v in n.inputs:
            users.setdefault(id(v), []).append(n)
        for o in n.outputs:
            namer.define(o)
    for kind, vals in (("input", g.inputs), ("parameter", g.params)):
        for v in vals:
            if not v.type.known:
                read = users.get(id(v), [])
                how = ("none of the ops reading it determines it; the first is\n    "
                       + format_node(read[0], namer, define=False) if read
                       else "no op reads it")
                return f"the shape of {kind} {namer(v)}: {v.type} is not known: {how}"
    for n in g.nodes:
        for o in n.outputs:
            if not o.type.known:
                return (f"op {n.op.name} could not resolve the shape of {namer(o)}: "
                        f"{o.type}\n    {format_node(n, namer, define=False)}")
    return None


@register_pass("infer_shapes")
def infer_shapes(graph: Graph, *, partial: bool = False,
                 unknown_dtypes: Sequence[Value] | None = None) -> Graph:
    """A copy of ``graph`` with every value's type as precise as the shape rules make it.

    Raises :class:`EmberError` naming the value and the op when a dim stays unknown, unless
    ``partial`` (MXNet's ``infer_shape_partial``), which returns what could be inferred.
    Parameters keep their order, so the new ``params[i]`` is the refined ``params[i]``.

    ``unknown_dtypes`` (MXNet's ``infer_type``): inputs and parameters whose dtype is only a
    placeholder. Dtypes then flow as well, even where shapes cannot: an unknown one takes
    the dtype of a known input of the same op, and an op's outputs are known once all its
    inputs are. ``meta["unknown_dtypes"]`` of the result lists the values (of the new graph)
    whose dtype stayed unknown. Either way, a value whose type is not ``known`` in a
    ``partial`` result is one whose shape could not be inferred.
    """
    types = _Types(graph, unknown_dtypes)
    for _ in range(2 * len(graph.nodes) + 2):  # each round refines something, or stops
        types.changed = False
        for node in graph.nodes:
            types.visit(node)
        for node in reversed(graph.nodes):
            types.visit(node)
        if not types.changed:
            break

    vmap: dict[int, Value] = {}

    def leaf(v: Value) -> Value:
        nv = Value(types.of[id(v)], None, 0, v.name_hint, v.mem)
        vmap[id(v)] = nv
        return nv

    inputs = [leaf(v) for v in graph.inputs]
    params = [leaf(v) for v in graph.params]
    nodes = []
    for n in graph.nodes:
        c = clone_node(n, [vmap.get(id(v), v) for v in n.inputs],
                       [types.of[id(o)] for o in n.outputs], **_init_shape(n, types))
        vmap.update((id(o), co) for o, co in zip(n.outputs, c.outputs))
        nodes.append(c)
    out = Graph(graph.name, inputs, params, nodes, [vmap.get(id(v), v) for v in graph.outputs],
                dict(graph.meta))
    if types.dtype_unknown is not None:
        vals = [*graph.inputs, *graph.params, *(o for n in graph.nodes for o in n.outputs)]
        out.meta["unknown_dtypes"] = [vmap[id(v)] for v in vals
                                      if id(v) in types.dtype_unknown]
    if not partial:
        msg = _first_unknown(out)
        if msg is not None:
            raise EmberError(f"infer_shapes {graph.name}: {msg}")
    return out
