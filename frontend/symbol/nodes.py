"""The graph behind a Symbol, seen as MXNet sees it: variables and op nodes with names.

A Symbol's heads are IR Values. Walking their producers yields MXNet's node list: variables
(Values with no producer) and op nodes, in the depth-first post-order of nnvm's ``DFSVisit``
(inputs in order, each node once), which fixes the order of ``list_arguments`` and of the
JSON ``nodes`` array. User attributes (``attr={...}``, ``__shape__``, ``lr_mult``) live in a
side table keyed by the Value or Node, so the IR stays free of front-end concerns.
"""
from __future__ import annotations

import weakref

from ember import name as _name
from ember.ir.graph import Node, Value
from ember.ir.types import TensorType

Item = Value | Node  # a variable or an op node

# user attributes: variable Value or op Node -> {key: string value}
_ATTRS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# declared type of a variable (what `var(shape=, dtype=)` said; dtype None when not said)
_DECLARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def user_attrs(item: Item) -> dict:
    """The (mutable) user attribute dict of a variable or node."""
    d = _ATTRS.get(item)
    if d is None:
        d = _ATTRS[item] = {}
    return d


def declare(v: Value, shape, dtype: str | None) -> None:
    """Record a variable's declared shape (tuple with None dims, or None) and dtype."""
    _DECLARED[v] = (shape, dtype)


def declared(v: Value) -> tuple:
    """(shape or None, dtype or None) as declared; a variable never declared has neither."""
    return _DECLARED.get(v, (v.type.shape, v.type.dtype))


def item_of(v: Value) -> Item:
    return v if v.producer is None else v.producer


def _inputs(item: Item) -> list[Value]:
    return item.inputs if isinstance(item, Node) else []


def post_order(heads: list[Value]) -> list[Item]:
    """Variables and nodes reachable from ``heads``, in nnvm's DFS post-order."""
    order: list[Item] = []
    seen: set[int] = set()
    for h in heads:
        start = item_of(h)
        if id(start) in seen:
            continue
        seen.add(id(start))
        stack = [(start, iter(_inputs(start)))]
        while stack:
            item, it = stack[-1]
            for v in it:
                child = item_of(v)
                if id(child) not in seen:
                    seen.add(id(child))
                    stack.append((child, iter(_inputs(child))))
                    break
            else:
                stack.pop()
                order.append(item)
    return order


def node_name(item: Item) -> str:
    """MXNet's name of a variable or node; an unnamed node gets one from the NameManager."""
    if isinstance(item, Value):
        return item.name_hint or ""
    if item.name is None:
        item.name = _name.current().get(None, (item.op.mxnet_name or item.op.name).lower())
    return item.name


def n_visible(node: Node) -> int:
    return node.op.n_visible(node.attr_dict)


def output_name(v: Value) -> str:
    """``fc1_output``, ``split0_output1`` or a variable's own name."""
    if v.producer is None:
        return node_name(v)
    base = node_name(v.producer)
    named = v.producer.op.output_names
    if named is not None:  # the op names its outputs (a Custom op's list_outputs)
        return f"{base}_{named(v.producer.attr_dict)[v.index]}"
    return f"{base}_output" if n_visible(v.producer) == 1 else f"{base}_output{v.index}"


def visible_outputs(item: Item) -> list[Value]:
    return [item] if isinstance(item, Value) else item.outputs[:n_visible(item)]


def aux_vars(items: list[Item]) -> set[int]:
    """ids of the variables some node updates in place (BatchNorm's moving stats)."""
    aux: set[int] = set()
    for it in items:
        if isinstance(it, Node):
            for i in it.op.mutated(it.attr_dict):
                if i < len(it.inputs) and it.inputs[i].producer is None:
                    aux.add(id(it.inputs[i]))
    return aux


def variables(heads: list[Value]) -> tuple[list[Value], list[Value], list[Value]]:
    """(all inputs, arguments, auxiliary states) in MXNet's order."""
    items = post_order(heads)
    aux = aux_vars(items)
    ins = [it for it in items if isinstance(it, Value)]
    return ins, [v for v in ins if id(v) not in aux], [v for v in ins if id(v) in aux]


def copy_graph(heads: list[Value], subst: dict[int, Value] | None = None) -> list[Value]:
    """A fresh copy of the graph under ``heads``; variables whose id is in ``subst`` are
    replaced by the given Values (MXNet's ``_compose``). Names and attributes are kept."""
    subst = subst or {}
    vmap: dict[int, Value] = {}
    for it in post_order(heads):
        if isinstance(it, Value):
            if id(it) in subst:
                vmap[id(it)] = subst[id(it)]
                continue
            nv = Value(it.type, name_hint=it.name_hint)
            if it in _DECLARED:
                _DECLARED[nv] = _DECLARED[it]
            vmap[id(it)] = nv
        else:
            node = Node(it.op, [vmap[id(v)] for v in it.inputs], it.attrs, loc=it.loc,
                        name=node_name(it))
            node.outputs = [Value(o.type, node, o.index, o.name_hint) for o in it.outputs]
            for o in it.outputs:
                vmap[id(o)] = node.outputs[o.index]
            nv = node
        if it in _ATTRS:
            _ATTRS[nv] = dict(_ATTRS[it])
    return [vmap[id(h)] for h in heads]


def unknown() -> TensorType:
    return TensorType(None, "float32")


def eliminate_common(heads: list[Value]) -> list[Value]:
    """A copy of the graph under ``heads`` with identical op nodes merged (MXNet's
    ``MXNET_ELIMINATE_COMMON_EXPR`` pass): the same op, attributes and inputs, unless the op
    draws random numbers or updates an input. Variables are shared with the original; a head
    that the merging repeats is given through a ``_copy`` node, as MXNet keeps outputs apart."""
    from ember.ir import get_op
    vmap: dict[int, Value] = {}
    seen: dict[tuple, Node] = {}
    for it in post_order(heads):
        if isinstance(it, Value):
            vmap[id(it)] = it
            continue
        ins = [vmap[id(v)] for v in it.inputs]
        key = (it.op.name, it.attrs, tuple(id(v) for v in ins))
        pure = not (it.op.random or it.op.mutated(it.attr_dict))
        if pure and key in seen:
            for o in it.outputs:
                vmap[id(o)] = seen[key].outputs[o.index]
            continue
        node = Node(it.op, ins, it.attrs, loc=it.loc, name=node_name(it))
        node.outputs = [Value(o.type, node, o.index, o.name_hint) for o in it.outputs]
        if it in _ATTRS:
            _ATTRS[node] = dict(_ATTRS[it])
        for o in it.outputs:
            vmap[id(o)] = node.outputs[o.index]
        if pure:
            seen[key] = node
    out: list[Value] = []
    for h in heads:
        v = vmap[id(h)]
        if any(v is w for w in out):
            copy = Node(get_op("_copy"), [v], ())
            copy.outputs = [Value(v.type, copy, 0)]
            v = copy.outputs[0]
        out.append(v)
    return out
