"""Split a joint forward+backward graph into a forward and a backward graph.

``autodiff`` yields one graph computing outputs and gradients together (so passes can share
work). A hybridized block inside ``autograd.record()`` must run its forward when called and
its backward later, once head gradients are known, without recomputing the forward (random
ops such as Dropout would draw a different mask). Nodes that depend on a head-gradient
input form the backward graph; every value the backward reads from the forward side is a
*residual*: an extra forward output and a backward input (the split of JAX's
``partial_eval`` / functorch's partitioner, without rematerialisation).
"""
from __future__ import annotations

from ember.ir.graph import Graph, Node, Value


def split_forward_backward(joint: Graph, n_forward_outputs: int,
                           head_grads: list[Value]) -> tuple[Graph, Graph, list[Value]]:
    """``(forward, backward, residuals)`` of ``joint``.

    forward: the joint inputs (less ``head_grads``) and params -> the first
    ``n_forward_outputs`` outputs followed by the residuals.
    backward: inputs = residuals (fresh Values, in order) + ``head_grads``; params = the
    joint params; outputs = the remaining joint outputs (the gradients).
    ``residuals`` are the forward-side Values the backward reads, in the order used.
    """
    heads = {id(v) for v in head_grads}
    tainted = set(heads)
    fwd_nodes, bwd_nodes = [], []
    for n in joint.nodes:
        if any(id(v) in tainted for v in n.inputs):
            bwd_nodes.append(n)
            tainted.update(id(o) for o in n.outputs)
        else:
            fwd_nodes.append(n)
    params = {id(v) for v in joint.params}
    residuals: list[Value] = []
    seen: set[int] = set()

    def need(v: Value):
        if id(v) not in tainted and id(v) not in params and id(v) not in seen:
            seen.add(id(v))
            residuals.append(v)

    for n in bwd_nodes:
        for v in n.inputs:
            need(v)
    grads = joint.outputs[n_forward_outputs:]
    for v in grads:
        need(v)

    inputs = [v for v in joint.inputs if id(v) not in heads]
    forward = Graph(joint.name + "_forward", inputs, list(joint.params), fwd_nodes,
                    list(joint.outputs[:n_forward_outputs]) + residuals,
                    {"n_outputs": n_forward_outputs, "n_residuals": len(residuals)})
    vmap: dict[int, Value] = {}
    res_inputs = []
    for i, v in enumerate(residuals):
        nv = Value(v.type, name_hint=f"residual{i}")
        vmap[id(v)] = nv
        res_inputs.append(nv)
    new_nodes = []
    for n in bwd_nodes:
        node = Node(n.op, [vmap.get(id(v), v) for v in n.inputs], n.attrs, loc=n.loc,
                    name=n.name)
        node.outputs = [Value(o.type, node, i, o.name_hint) for i, o in enumerate(n.outputs)]
        for o, no in zip(n.outputs, node.outputs):
            vmap[id(o)] = no
        new_nodes.append(node)
    backward = Graph(joint.name + "_backward", res_inputs + list(head_grads),
                     list(joint.params), new_nodes, [vmap.get(id(v), v) for v in grads],
                     {"n_residuals": len(residuals)})
    return forward, backward, residuals
