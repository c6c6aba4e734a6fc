"""Two views of a hybridized block's graph beside its compiled program.

``run_monitored``: MXNet's ``register_op_hook``: the block's (unfused) graph runs node by
node in the reference interpreter and a callback sees every op's outputs (and, with
``monitor_all``, its inputs) under MXNet's names: ``<node>_output``, ``<node>_<input>``
or ``<node>_input0`` for ops that list no input names.

``graph_symbol``: the graph as a Symbol for ``autograd.get_symbol``: inlined (its nodes
appear, names kept) when it has at most ``inline_limit`` ops, else one ``_CachedOp`` node,
as MXNet's CachedOp does.
"""
from __future__ import annotations

from ember import autograd
from ember.ndarray.ndarray import NDArray


def input_names(node) -> list[str]:
    """MXNet's names of a node's inputs, as its monitor shows them."""
    op, n = node.op, len(node.inputs)
    if op.positional_inputs or not op.inputs:
        return [f"input{i}" for i in range(n)]
    if op.variadic:
        stem = op.inputs[0].lstrip("*")
        return [f"{stem}{i}" for i in range(n)]
    names = [s.rstrip("?") for s in op.inputs]
    return names[:n] + [f"input{i}" for i in range(len(names), n)]


def output_names(node) -> list[str]:
    """MXNet's names of a node's outputs (``output``, ``output0``... or the op's own)."""
    op, n = node.op, len(node.outputs)
    if op.output_names is not None:
        return list(op.output_names(node.attr_dict))[:n]
    return ["output"] if n == 1 else [f"output{i}" for i in range(n)]


def monitor(callback, monitor_all: bool, ctx):
    """A reference-interpreter monitor calling ``callback(name, op_name, NDArray)``."""
    def on_node(node, ins, outs):
        op_name = node.op.mxnet_name or node.op.name
        base = node.name or op_name.lower()
        if outs is None:
            if monitor_all:
                for name, a in zip(input_names(node), ins):
                    callback(f"{base}_{name}", op_name, NDArray(a.copy(), ctx))
            return
        for name, a in zip(output_names(node), outs):
            callback(f"{base}_{name}", op_name, NDArray(a.copy(), ctx))
    return on_node


def run_monitored(cached, args, ctx, callback, monitor_all: bool):
    """Call a block's :class:`CachedGraph` with its op hook watching every node.

    Outside ``autograd.record()`` the interpreter's results are the call's results. When
    the call is recorded, the compiled program runs as usual (it makes the tape entry) and
    the graph runs once more for the hook, on copies of the parameters (moving statistics
    are not updated twice).
    """
    from ember.backends.reference import run_graph

    from .cached_op import _unflatten, split_args
    arrays = list(args) if all(type(a) is NDArray for a in args) else split_args(args)[0]
    params = [p._data for p in cached._param_data(ctx)]
    watch = monitor(callback, monitor_all, ctx)
    ins = [a._data for a in arrays]
    if cached.forward is None or autograd.is_recording():
        out = cached(args, ctx)
        run_graph(cached.graph, ins, [p.copy() for p in params], watch)
        return out
    res = run_graph(cached.graph, ins, params, watch)
    outs = [NDArray(r, ctx) for r in res[:cached.n_outputs]]
    return outs[0] if cached.structure is None else _unflatten(outs, cached.structure)


def graph_symbol(graph, inline_limit: int, inputs: list):
    """``graph`` applied to the Symbols ``inputs`` (its inputs, then its parameters)."""
    from ember import symbol as sym
    from ember.ir.ops import get_op
    from ember.ir.opset_subgraph import Subgraph
    from ember.symbol.nodes import copy_graph
    leaves = [*graph.inputs, *graph.params]
    if len(graph.nodes) > inline_limit:
        return sym.apply(get_op("_CachedOp"), inputs, {"subgraph": Subgraph(graph)})
    heads = copy_graph(graph.outputs, {id(v): s._value for v, s in zip(leaves, inputs)})
    if len(heads) == 1:
        return sym.Symbol(heads[0])
    return [sym.Symbol(h) for h in heads]
