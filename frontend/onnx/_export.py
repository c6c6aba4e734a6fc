"""ember Symbol -> ONNX model: the driver that walks the typed IR graph.

The Symbol's graph is copied into an IR :class:`~ember.ir.graph.Graph` and typed by the
``infer_shapes`` pass (:class:`ember.symbol.infer.SymbolGraph`, the same path as
``Symbol.infer_shape``). Each node is handed to the converter registered for its op (modules
``_export_nn`` and ``_export_tensor``), which emits ONNX nodes through ``onnx.helper``; the
model is checked with ``onnx.checker`` before it is written. Nothing here writes protobuf by
hand.

Dynamic dimensions. Converters that must write a shape into the model (Reshape's target,
Split's sizes...) need to know which dims follow a dynamic input dim. The graph is therefore
typed twice: at the given input shapes and with every dynamic input dim changed to ``2d+1``.
A dim that differs between the two typings depends on a dynamic input dim (:meth:`Ctx.dyn`).
"""
from __future__ import annotations

import logging

import numpy as np

from ember.base import MXNetError
from ember.ir.graph import Graph, Node, Value
from ember.ir.types import TensorType
from ember.symbol.infer import SymbolGraph
from ember.symbol.nodes import node_name, variables

# op name (ember IR) -> converter(ctx, node, ins, outs); filled by the _export_* modules
CONVERTERS: dict[str, object] = {}
DEFAULT_OPSET = 13
MIN_OPSET = 13


def converts(*ops: str):
    """Register a converter for the IR ops ``ops``."""
    def deco(fn):
        for op in ops:
            CONVERTERS[op] = fn
        return fn
    return deco


def _fmt(shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


class Ctx:
    """What converters emit into: nodes, initializers, names, types and the opset."""

    def __init__(self, onnx, opset: int, types2: dict[int, TensorType] | None):
        self.onnx, self.helper, self.opset = onnx, onnx.helper, opset
        self.nodes: list = []
        self.inits: list = []
        self.names: dict[int, str] = {}
        self.taken: set[str] = set()
        self._types2 = types2 or {}
        self.node: Node | None = None   # the node being converted (for error messages)

    # ---- names and emission ----------------------------------------------------------------
    def fresh(self, base: str) -> str:
        """A tensor/node name not used yet, ``base`` itself when free."""
        name, i = base, 0
        while name in self.taken:
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name

    def emit(self, op_type: str, inputs: list[str], out: str | list[str] | None = None,
             n_out: int = 1, **attrs) -> str | list[str]:
        """Append one ONNX node; returns its output name (a list when ``n_out > 1``).
        ``out`` names the output(s); fresh names are made when it is None."""
        base = node_name(self.node) if self.node is not None else op_type.lower()
        if out is None:
            outs = [self.fresh(f"{base}_{op_type.lower()}") for _ in range(n_out)]
        else:
            outs = [out] if isinstance(out, str) else list(out)
        self.nodes.append(self.helper.make_node(op_type, inputs, outs,
                                                name=self.fresh(f"{base}/{op_type}"), **attrs))
        return outs[0] if len(outs) == 1 else outs

    def const(self, array, base: str = "const", dtype=None) -> str:
        """An initializer holding ``array`` (cast to ``dtype``); returns its name."""
        arr = np.asarray(array, dtype=dtype)
        name = self.fresh(f"{node_name(self.node) if self.node else ''}_{base}".lstrip("_"))
        self.inits.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def ints(self, values, base: str = "shape") -> str:
        """An int64 1-D initializer (shapes, axes, pads)."""
        return self.const(np.asarray(list(values), np.int64).reshape(-1), base)

    def scalar(self, value, like: Value, base: str = "scalar") -> str:
        """A 0-d initializer of ``like``'s dtype (a scalar operand of ``like``)."""
        return self.const(np.asarray(value, dtype=like.type.dtype), base)

    # ---- types -----------------------------------------------------------------------------
    def dyn(self, v: Value) -> tuple[bool, ...]:
        """Per dim of ``v``: does it follow a dynamic input dim?"""
        t2 = self._types2.get(id(v))
        if t2 is None:
            return (False,) * len(v.type.shape)
        return tuple(a != b for a, b in zip(v.type.shape, t2.shape))

    def dyn_same(self, x: Value, i: int, y: Value, j: int) -> bool:
        """Is dim ``j`` of ``y`` dim ``i`` of ``x`` in both typings?"""
        t2x, t2y = self._types2.get(id(x)), self._types2.get(id(y))
        return x.type.shape[i] == y.type.shape[j] and t2x is not None and t2y is not None \
            and t2x.shape[i] == t2y.shape[j]

    def fail(self, why: str) -> MXNetError:
        """An MXNetError naming the node being converted, its op and input shapes."""
        n = self.node
        shapes = ", ".join(_fmt(v.type.shape) for v in n.inputs)
        return MXNetError(f"ONNX export: cannot convert {n.op.mxnet_name or n.op.name} "
                          f"(node {node_name(n)!r}, inputs {shapes}): {why}")


def _typed(heads: list[Value], given: dict[int, TensorType]) -> tuple[Graph, dict]:
    """(the inferred Graph, Symbol Value id -> graph Value) for ``heads`` at ``given``."""
    sg = SymbolGraph(heads, given)
    _, graph = sg.typed()
    return graph, {k: sg._new[id(v)] for k, v in sg.index.items()}


def _check_known(graph: Graph) -> None:
    for n in graph.nodes:
        for o in n.outputs:
            if o.type.shape is None or not o.type.known:
                raise MXNetError(f"ONNX export: the shape of {node_name(n)!r} "
                                 f"({n.op.mxnet_name or n.op.name}) cannot be inferred from "
                                 "the given input shapes (in_shapes)")


def _second_typing(heads, given, dyn_dims, graph) -> dict[int, TensorType]:
    """Graph Value id -> type with the dynamic input dims changed (empty if inference
    fails there: every dim is then treated as fixed by the converters)."""
    if not any(any(d) for d in dyn_dims.values()):
        return {}
    given2 = dict(given)
    for k, dims in dyn_dims.items():
        t = given[k]
        given2[k] = TensorType(tuple(2 * s + 1 if d else s for s, d in zip(t.shape, dims)),
                               t.dtype)
    try:
        g2, _ = _typed(heads, given2)
    except MXNetError:
        return {}
    if len(g2.nodes) != len(graph.nodes) or any(not o.type.known for n in g2.nodes
                                                 for o in n.outputs):
        return {}
    out = {}
    for a, b in zip(graph.inputs + graph.params, g2.inputs + g2.params):
        out[id(a)] = b.type
    for n, m in zip(graph.nodes, g2.nodes):
        out.update((id(a), b.type) for a, b in zip(n.outputs, m.outputs))
    return out


def _out_names(n: Node) -> list[str]:
    name = node_name(n)
    k = n.op.n_visible(n.attr_dict)
    return [name] if k == 1 else [f"{name}{i}" for i in range(k)]


def build_model(onnx, heads: list[Value], data: list[Value], inputs: list[TensorType],
                params: dict[str, np.ndarray], declared: list[tuple], out_dims,
                opset: int, verbose: bool = False, graph_name: str = "mxnet_converted_model"):
    """The checked ``onnx.ModelProto`` of the graph under ``heads``.

    ``data``: the Symbol's data variables with their types ``inputs`` and the ONNX shapes
    ``declared`` for them (None or a string marks a dynamic dim); ``params``: name -> array
    of the other variables (initializers); ``out_dims(graph_value, ctx)`` -> the declared
    shape of each graph output.
    """
    given = {id(v): t for v, t in zip(data, inputs)}
    _, argv, auxv = variables(heads)
    for v in argv + auxv:
        if id(v) in given:
            continue
        arr = params.get(v.name_hint)
        if arr is None:
            raise MXNetError(f"ONNX export: the model's argument {v.name_hint!r} is neither "
                             "in params nor an input with a shape in in_shapes")
        given[id(v)] = TensorType(tuple(arr.shape), str(arr.dtype))
    graph, vmap = _typed(heads, given)
    _check_known(graph)
    dyn_dims = {id(v): tuple(d is None or isinstance(d, str) for d in decl)
                for v, decl in zip(data, declared)}
    ctx = Ctx(onnx, opset, _second_typing(heads, given, dyn_dims, graph))
    helper = onnx.helper
    data_ids = {id(vmap[id(v)]) for v in data}
    graph_inputs = []
    for v, decl in zip(data, declared):
        gv = vmap[id(v)]
        ctx.names[id(gv)] = ctx.fresh(v.name_hint)
        graph_inputs.append(helper.make_tensor_value_info(
            ctx.names[id(gv)], helper.np_dtype_to_tensor_dtype(np.dtype(gv.type.dtype)),
            list(decl)))
    for gv in graph.inputs + graph.params:
        if id(gv) not in data_ids:
            ctx.names[id(gv)] = ctx.fresh(gv.name_hint)
            ctx.inits.append(onnx.numpy_helper.from_array(
                np.ascontiguousarray(params[gv.name_hint]), ctx.names[id(gv)]))
    used = {id(v) for n in graph.nodes for v in n.inputs} | {id(v) for v in graph.outputs}
    for n in graph.nodes:
        if not any(id(o) in used for o in n.outputs):
            continue   # dead node (a hidden output nobody reads)
        conv = CONVERTERS.get(n.op.name)
        ctx.node = n
        if conv is None:
            raise ctx.fail("this operator has no ONNX conversion (mx.onnx."
                           "get_operator_support() lists those that have one)")
        ins = []
        for v in n.inputs:
            if id(v) not in ctx.names:
                raise ctx.fail(f"it reads output {v.index} of {node_name(v.producer)!r}, "
                               "which has no ONNX equivalent")
            ins.append(ctx.names[id(v)])
        outs = [ctx.fresh(s) for s in _out_names(n)]
        if verbose:
            logging.info("Converting %s (%s)", node_name(n), n.op.mxnet_name or n.op.name)
        conv(ctx, n, ins, outs)
        for o, name in zip(n.outputs, outs):
            ctx.names[id(o)] = name
    graph_outputs, seen = [], set()
    for gv in graph.outputs:
        name = ctx.names[id(gv)]
        if id(gv) in data_ids or name in seen:  # an output that is an input or repeated
            ctx.node = None
            name = ctx.emit("Identity", [name])
        seen.add(name)
        graph_outputs.append(helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(np.dtype(gv.type.dtype)),
            list(out_dims(gv, ctx))))
    read = {i for n in ctx.nodes for i in n.input} | {o.name for o in graph_outputs}
    inits = [t for t in ctx.inits if t.name in read]   # fix_gamma's gamma is never read
    g = helper.make_graph(ctx.nodes, graph_name, graph_inputs, graph_outputs, inits)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(g, opset_imports=opsets, producer_name="ember",
                              ir_version=helper.find_min_ir_version_for(opsets))
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:  # onnx's ValidationError / InferenceError: a converter's bug
        raise MXNetError(f"ONNX export: the model fails onnx.checker: {e}") from e
    return model


def get_operator_support(opset_version: int | None = None) -> list[str]:
    """MXNet operator names (and ember op names without one) that export converts."""
    from ember.ir import get_op
    return sorted({get_op(n).mxnet_name or n for n in CONVERTERS})
