"""Shape and dtype inference over a Symbol's graph (MXNet's ``InferShape``/``InferType``).

The graph is never mutated: types live in a table keyed by ``id(Value)``. Every op's rule
``infer(in_types, attrs) -> (out_types, refined_in_types)`` runs in a forward sweep over the
nodes; its refined input types flow back into the table (how ``fc1_weight`` learns its
shape from ``data``), and sweeps repeat until nothing changes, as nnvm's ``InferAttr`` repeats
its forward and backward passes to a fixed point. A rule that cannot run yet (an input of
unknown rank) is skipped this sweep. Elementwise ops also tell an input of unknown rank the
shape of the others, as MXNet's ``ElemwiseShape`` does.
"""
from __future__ import annotations

from ember.base import MXNetError
from ember.ir.errors import ShapeError
from ember.ir.graph import Node, Value
from ember.ir.ops import OpKind
from ember.ir.shape_rules import unify
from ember.ir.types import TensorType

from .nodes import declared, node_name, post_order

Types = dict[int, TensorType]
_WEIGHT_LIKE_DATA = ("convolution", "deconvolution")


def _merge(types: Types, v: Value, t: TensorType, node: Node) -> bool:
    """Refine ``types[v]`` with ``t``; True when it changed. A conflict is an error."""
    old = types[id(v)]
    if t.shape is None:
        shape = old.shape
    elif old.shape is None:
        shape = t.shape
    else:
        shape = unify(old.shape, t.shape, f"{node.op.name} (node {node_name(node)})",
                      [old, t])
    new = TensorType(shape, t.dtype)
    if new == old:
        return False
    types[id(v)] = new
    return True


def _run_rule(node: Node, ins: list[TensorType], outs: list[TensorType]):
    """The op's (out_types, refined) for these input types, or None if it cannot run yet."""
    partial = any(t.shape is None for t in ins)
    if partial and node.op.kind is OpKind.ELEMWISE:
        shape = next((t.shape for t in ins + outs if t.shape is not None), None)
        if shape is not None:
            ins = [t if t.shape is not None else t.with_shape(shape) for t in ins]
            partial = False
    if ins and all(t.shape is None for t in ins):
        return None
    if partial and node.op.name in _WEIGHT_LIKE_DATA and ins[0].shape is not None \
            and len(ins) > 1 and ins[1].shape is None:
        # a convolution's weight has its data's rank (the rule needs the rank given)
        ins = [ins[0], ins[1].with_shape((None,) * len(ins[0].shape)), *ins[2:]]
    try:
        return node.op.infer(ins, node.attr_dict)
    except ShapeError as e:
        if partial:
            return None
        raise ShapeError(f"node {node_name(node)!r}: {e}") from None
    except MXNetError:
        raise
    except Exception:  # a rule written for known ranks, given an unknown one
        if partial:
            return None
        raise


def infer(heads: list[Value], given: Types) -> Types:
    """Types of every value under ``heads``: variables start from ``given`` (by id) or
    their declaration (unknown dtype reads as float32), then rules run to a fixed point."""
    items = post_order(heads)
    types: Types = {}
    nodes = []
    for it in items:
        if isinstance(it, Value):
            shape, dtype = declared(it)
            types[id(it)] = given.get(id(it)) or TensorType(shape, dtype or "float32")
        else:
            nodes.append(it)
            for o in it.outputs:
                types[id(o)] = TensorType(None, o.type.dtype)
    for _ in range(len(nodes) + 2):
        changed = False
        for node in nodes:
            res = _run_rule(node, [types[id(v)] for v in node.inputs],
                            [types[id(v)] for v in node.outputs])
            if res is None:
                continue
            outs, refined = res
            for v, t in zip(node.inputs, refined):
                changed |= _merge(types, v, t, node)
            for v, t in zip(node.outputs, outs):
                changed |= _merge(types, v, t, node)
        if not changed:
            break
    return types


def known_dtypes(heads: list[Value], types: Types, given: set[int]) -> set[int]:
    """ids of the values whose dtype is determined (MXNet's partial ``infer_type``).

    A variable's is known when given or declared, or when it meets a known input at the
    same node (``ElemwiseType``: FullyConnected's weight takes its data's dtype); an op's
    outputs are known when all its inputs are or the op fixes a ``dtype`` itself.
    ``types`` is updated for variables that take a dtype from a neighbour.
    """
    items = post_order(heads)
    known = {id(it) for it in items
             if isinstance(it, Value) and (id(it) in given or declared(it)[1] is not None)}
    nodes = [it for it in items if isinstance(it, Node)]
    for _ in range(len(nodes) + 2):
        before = len(known)
        for node in nodes:
            ins = node.inputs
            ref = next((v for v in ins if id(v) in known), None)
            for v in ins:
                if id(v) not in known and v.producer is None and ref is not None:
                    types[id(v)] = types[id(v)].with_dtype(types[id(ref)].dtype)
                    known.add(id(v))
            fixed = node.attr_dict.get("dtype") not in (None, "None")
            if fixed or all(id(v) in known for v in ins):
                known.update(id(o) for o in node.outputs)
        if len(known) == before:
            break
    return known
