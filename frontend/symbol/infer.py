"""A Symbol's graph as an IR :class:`Graph`, typed by the ``infer_shapes`` pass.

The symbol API (``infer_shape``, ``infer_type``, ``simple_bind``, the Executor) has no
inference of its own: :func:`symbol_graph` copies the nodes under a Symbol's heads into a
Graph whose inputs are its arguments and whose parameters are its auxiliary states, typed
from what the caller gives (or the variables' declarations), with every op output unknown;
:func:`infer` runs ``ember.passes.infer_shapes`` on it (MXNet's ``InferShape``/``InferType``
are the same ``InferAttr`` fixed point) and reads the types back by the Symbol's Values.
"""
from __future__ import annotations

import numpy as np

from ember import util as _util
from ember.base import MXNetError
from ember.ir.graph import Graph, Node, Value, clone_node
from ember.ir.types import TensorType
from ember.passes.infer_shapes import infer_shapes

from .nodes import declared, node_name, post_order, variables

Types = dict[int, TensorType]


class SymbolGraph:
    """The Graph of a Symbol plus the maps between its Values and the Symbol's.

    ``graph``: inputs = arguments, params = auxiliary states (in MXNet's order), outputs =
    heads. ``index[id(symbol value)]`` is the matching graph Value; ``nodes`` are the
    Symbol's op nodes in post-order (``graph.nodes[i]`` is the copy of ``nodes[i]``).
    """

    def __init__(self, heads: list[Value], given: Types, attrs=None):
        _, argv, auxv = variables(heads)
        self.args, self.aux = argv, auxv
        self.index: dict[int, Value] = {}
        leaves = []
        for v in argv + auxv:
            shape, dtype = declared(v)
            t = given.get(id(v)) or TensorType(shape, dtype or "float32")
            nv = self.index[id(v)] = Value(t, name_hint=node_name(v))
            leaves.append(nv)
        self.nodes = [it for it in post_order(heads) if isinstance(it, Node)]
        copies = []
        for n in self.nodes:
            changes = {"name": node_name(n)}
            if attrs is not None:
                changes["attrs"] = attrs(n)
            c = clone_node(n, [self.index[id(v)] for v in n.inputs],
                           [TensorType(None, o.type.dtype) for o in n.outputs], **changes)
            self.index.update((id(o), co) for o, co in zip(n.outputs, c.outputs))
            copies.append(c)
        self.graph = Graph("symbol", leaves[:len(argv)], leaves[len(argv):], copies,
                           [self.index[id(h)] for h in heads])

    def typed(self, unknown_dtypes: list[Value] | None = None) -> tuple[Types, Graph]:
        """(type of each Symbol Value by id, the inferred Graph), inferring partially."""
        g = self.graph
        unknown = None if unknown_dtypes is None else [self.index[id(v)]
                                                        for v in unknown_dtypes]
        out = infer_shapes(g, partial=True, unknown_dtypes=unknown)
        new = {id(a): b for a, b in zip(g.inputs + g.params, out.inputs + out.params)}
        for n, m in zip(g.nodes, out.nodes):
            new.update((id(a), b) for a, b in zip(n.outputs, m.outputs))
        types = {k: new[id(v)].type for k, v in self.index.items()}
        self.result = out
        self._new = new
        return types, out

    def unknown_dtype_ids(self) -> set[int]:
        """ids of the Symbol's Values whose dtype :meth:`typed` left unknown."""
        left = {id(v) for v in self.result.meta.get("unknown_dtypes", [])}
        return {k for k, v in self.index.items() if id(self._new[id(v)]) in left}


def infer(heads: list[Value], given: Types) -> Types:
    """Types of every Value under ``heads``: variables from ``given`` (by id) or their
    declaration (an undeclared dtype reads as float32), the rest from ``infer_shapes``."""
    return SymbolGraph(heads, given).typed()[0]


# ---- Symbol.infer_shape / infer_type --------------------------------------------------------
def _given(heads: list[Value], args, kwargs, make) -> dict:
    """What the caller gives, by position (arguments) or name, keyed by the variable's id."""
    ins, argl, _ = variables(heads)
    by_name = {node_name(v): v for v in ins}
    pairs = list(zip(argl, args))
    for k, x in kwargs.items():
        if k not in by_name:
            raise MXNetError(f"{k!r} is not an input of this Symbol "
                             f"(inputs: {', '.join(by_name)})")
        pairs.append((by_name[k], x))
    return {id(v): make(v, x) for v, x in pairs if x is not None}


def _report(heads: list[Value], types, conv):
    _, argl, aux = variables(heads)
    return ([conv(types[id(v)], v) for v in argl], [conv(types[id(v)], v) for v in heads],
            [conv(types[id(v)], v) for v in aux])


def _to_dims(shape) -> tuple | None:
    """A shape as the caller wrote it (0 or -1 unknown, as MXNet's conventions say)."""
    if shape is None:
        return None
    np_shape = _util.is_np_shape()
    return tuple(None if d is None or d < 0 or (d == 0 and not np_shape) else int(d)
                 for d in shape)


def shapes(heads: list[Value], args, kwargs, partial: bool):
    """``Symbol.infer_shape(_partial)``'s (arg_shapes, out_shapes, aux_shapes)."""
    def make(v, shape):
        return TensorType(_to_dims(shape), declared(v)[1] or "float32")
    types = infer(heads, _given(heads, args, kwargs, make))
    if not partial:
        res = _report(heads, types, lambda t, v: t.shape if t.known else None)
        return (None, None, None) if any(s is None for p in res for s in p) else res
    if _util.is_np_shape():
        return _report(heads, types, lambda t, v: None if t.shape is None else
                       tuple(-1 if d is None else d for d in t.shape))
    return _report(heads, types, lambda t, v: () if t.shape is None else
                   tuple(0 if d is None else d for d in t.shape))


def dtypes(heads: list[Value], args, kwargs):
    """``Symbol.infer_type_partial``'s (arg_types, out_types, aux_types), None if unknown."""
    given = _given(heads, args, kwargs, lambda v, d: np.dtype(d).name)
    ins = variables(heads)[0]
    sg = SymbolGraph(heads, {id(v): TensorType(declared(v)[0], given[id(v)])
                             for v in ins if id(v) in given})
    types, _ = sg.typed(unknown_dtypes=[v for v in ins if id(v) not in given
                                        and declared(v)[1] is None])
    unknown = sg.unknown_dtype_ids()
    return _report(heads, types, lambda t, v: None if id(v) in unknown
                   else np.dtype(t.dtype).type)
