"""The ``fold_batch_norm`` pass: inference BatchNorm after a convolution as a per-channel
scale and shift that fuses into the convolution's epilogue.

BatchNorm with fixed statistics (inference, or ``use_global_stats``) is an affine map per
channel (Ioffe & Szegedy 2015), ``y = x * s + (beta - mean * s)`` with
``s = gamma / sqrt(var + eps)``. The pass rewrites it as those elementwise nodes: ``s`` and
the shift are computed from the parameters (F elements per run), and the per-pixel
``mul``/``add`` are broadcast ops that ``fuse`` puts into the convolution's epilogue with
the following activation or residual add, so the pass over the activations that BatchNorm
took is gone. Scaling the weights instead (``w * s``, TVM's FoldScaleAxis, TensorRT) costs
F*C*K multiplications per run, more than the activations of a batch-1 inference; the
epilogue costs two flops per output element, in cache.

The rewrite applies when the BatchNorm's data comes from a convolution, it normalises axis
1, has one output, and all values share one float dtype. Results move by float rounding
(the reference computes in float64 from ``x - mean``).
"""
from __future__ import annotations

from ember.ir.graph import Graph, Node, Value, clone_node, make_node
from ember.passes import register_pass


def _foldable(bn: Node) -> bool:
    """Whether ``bn`` is an inference BatchNorm of a convolution's output."""
    at = bn.attr_dict
    if bn.op.name != "batch_norm" or len(bn.outputs) != 1 or at["output_mean_var"]:
        return False
    if at.get("is_train", False) and not at["use_global_stats"]:
        return False
    conv = bn.inputs[0].producer
    if conv is None or conv.op.name != "convolution" or conv.body is not None:
        return False
    x = bn.inputs[0]
    if at["axis"] not in (1, 1 - x.type.ndim) or x.type.ndim < 2:
        return False
    vals = [*bn.inputs, *bn.outputs]
    if not all(v.type.known for v in vals) or len({v.type.dtype for v in vals}) != 1:
        return False
    return x.type.dtype in ("float32", "float64")


def _emit(nodes: list[Node], op: str, inputs: list[Value], loc, **attrs) -> Value:
    node = make_node(op, inputs, attrs, loc)
    nodes.append(node)
    return node.outputs[0]


def _scale_shift(nodes: list[Node], bn: Node, new) -> Value:
    """Nodes computing ``x * s + shift`` for ``bn``; returns its output."""
    x, gamma, beta, mean, var = (new(v) for v in bn.inputs)
    at, loc = bn.attr_dict, bn.loc
    s = _emit(nodes, "rsqrt", [_emit(nodes, "add_scalar", [var], loc, scalar=at["eps"])], loc)
    if not at["fix_gamma"]:
        s = _emit(nodes, "mul", [s, gamma], loc)
    shift = _emit(nodes, "sub", [beta, _emit(nodes, "mul", [mean, s], loc)], loc)
    bshape = (1, x.type.shape[1]) + (1,) * (x.type.ndim - 2)
    s = _emit(nodes, "reshape", [s], loc, shape=bshape)
    shift = _emit(nodes, "reshape", [shift], loc, shape=bshape)
    return _emit(nodes, "add", [_emit(nodes, "mul", [x, s], loc), shift], loc)


@register_pass("fold_batch_norm")
def fold_batch_norm(graph: Graph) -> Graph:
    """``graph`` with every inference BatchNorm of a convolution as a scale and shift."""
    if not any(_foldable(n) for n in graph.nodes):
        return graph
    vmap: dict[int, Value] = {}

    def new(v: Value) -> Value:
        return vmap.get(id(v), v)
    nodes: list[Node] = []
    for n in graph.nodes:
        if _foldable(n):
            vmap[id(n.outputs[0])] = _scale_shift(nodes, n, new)
            continue
        ins = [new(v) for v in n.inputs]
        if all(a is b for a, b in zip(ins, n.inputs)):
            nodes.append(n)
            continue
        c = clone_node(n, ins)
        nodes.append(c)
        for o, co in zip(n.outputs, c.outputs):
            vmap[id(o)] = co
    return Graph(graph.name, list(graph.inputs), list(graph.params), nodes,
                 [new(v) for v in graph.outputs], dict(graph.meta))
