"""Split a joint forward+backward graph into a forward and a backward graph.

``autodiff`` yields one graph computing outputs and gradients together (so passes can share
work). A hybridized block inside ``autograd.record()`` must run its forward when called and
its backward later, once head gradients are known, without recomputing the forward (random
ops such as Dropout would draw a different mask). Nodes that depend on a head-gradient
input form the backward graph; every value the backward reads from the forward side is a
*residual*: an extra forward output and a backward input (the split of JAX's
``partial_eval`` / functorch's partitioner).

Cheap elementwise forward nodes that only the backward reads are recomputed there instead
of stored (functorch's min-cut partitioner recomputes pointwise ops for the same reason):
relu's gradient reads ``y > 0`` and ``min(y, 0)``, two arrays written by the forward and
read back, where the backward can read ``y`` once and fuse both masks into the consumer of
the gradient. A node moves when every reader of its output is on the backward side and the
residuals it adds (its inputs not already kept) take no more bytes than the one it removes.
"""
from __future__ import annotations

from ember.ir.graph import Graph, Node, Value
from ember.ir.ops import OpKind


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
    keep = {id(v) for v in joint.outputs}  # forward outputs and gradients that are forward values
    moved = _recompute(fwd_nodes, bwd_nodes, tainted, params, keep)
    fwd_nodes = [n for n in fwd_nodes if id(n) not in moved]
    bwd_nodes = [n for n in joint.nodes if id(n) in moved] + bwd_nodes
    tainted.update(id(n.outputs[0]) for n in bwd_nodes if id(n) in moved)
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


_CHEAP = (OpKind.ELEMWISE, OpKind.BROADCAST)


def _cheap(n: Node) -> bool:
    """An elementwise node the backward may recompute: one output, a scalar template (so
    the fusion pass folds it into its consumer), no randomness or side effects."""
    return (n.body is None and len(n.outputs) == 1 and n.op.kind in _CHEAP
            and n.op.template is not None and not n.op.random and not n.op.mutated(n.attr_dict))


def _size(vs: list[Value]) -> float:
    sizes = [v.type.nbytes for v in vs]
    return float("inf") if any(s is None for s in sizes) else sum(sizes)


def _recompute(fwd_nodes: list[Node], bwd_nodes: list[Node], tainted: set[int],
               params: set[int], keep: set[int]) -> set[int]:
    """The ids of the forward nodes to move into the backward (see the module docstring),
    chosen from the last forward node to the first so that chains move whole."""
    readers: dict[int, list[Node]] = {}
    for n in fwd_nodes + bwd_nodes:
        for v in n.inputs:
            readers.setdefault(id(v), []).append(n)
    back = {id(n) for n in bwd_nodes}
    kept = {id(v) for n in bwd_nodes for v in n.inputs
            if id(v) not in tainted and id(v) not in params}
    moved: set[int] = set()
    for n in reversed(fwd_nodes):
        out = n.outputs[0] if len(n.outputs) == 1 else None
        if out is None or id(out) in keep or not _cheap(n) or id(out) not in kept:
            continue
        if not all(id(r) in back for r in readers.get(id(out), ())):
            continue
        new = list({id(v): v for v in n.inputs
                    if id(v) not in params and id(v) not in kept}.values())
        if _size(new) > _size([out]):
            continue
        moved.add(id(n))
        back.add(id(n))
        kept.discard(id(out))
        kept.update(id(v) for v in new)
    return moved
