"""Fused groups: the contract of a fused node, and the helpers that cut groups out.

The ``fuse`` pass (``passes/fuse.py``) replaces each group it forms with ONE node of the op
:data:`~ember.ir.graph.FUSED` (defined in ``ir/graph.py`` next to ``make_fused``, so that the
printer, the verifier and every backend share one op object; it is not a registered,
user-callable operator). This module documents what such a node promises and builds it.

Contract of a fused node ``n`` (what interpreters, printers and code generators rely on):

- ``n.op is FUSED`` and ``n.body`` is a :class:`~ember.ir.graph.Graph` named like the node
  (``n.name == n.body.name``, printed in the op position). ``n.body.inputs[i]`` has the
  type of ``n.inputs[i]``; ``n.body.params`` is empty; ``n.body.outputs[j]`` has the type
  of ``n.outputs[j]``. Body Values belong to the body (none is shared with the enclosing
  graph). Body nodes are plain ops in topological order: never nested fused nodes, never
  ops with side effects (``op.mutated``) or randomness (``op.random``), always one output.
- ``n.attrs`` is ``(("kind", K), ("master", M))``. ``K``, the group's pattern:
  ``elemwise`` (ELEMWISE ops only: one loop over the output's elements, each op's scalar
  ``template`` evaluated in registers), ``broadcast`` (ELEMWISE and BROADCAST ops: the same
  loop, each input indexed with NumPy broadcasting against the output's shape),
  ``injective`` (data movement such as reshape/transpose/slice, or an ELEMWISE/BROADCAST op
  without a template, mixed with elementwise ops: each output element reads one element of
  each input), ``reduce`` (one REDUCE op, the master: the body nodes it depends on are an
  elementwise *prologue* evaluated in the reduction's input space, the others an
  elementwise *epilogue* evaluated in its output space), ``out_ewise`` (one OUT_EWISE op,
  the master and always ``body.nodes[0]``: fully_connected, dot, batch_dot, convolution,
  computed by BLAS; every later body node is its elementwise epilogue, applied per output
  element in the same kernel before the result is written; epilogue nodes may read other
  inputs of the group), and the row-wise composites ``softmax_xent`` (log_softmax, then
  pick along the same axis, then an elementwise epilogue: one pass per row) and
  ``softmax_xent_grad`` (its gradient: pick_backward, the row sum, ``g - exp(y) * sum``,
  then an elementwise epilogue). ``M``: index in ``body.nodes`` of the reduce, out_ewise or
  composite anchor (log_softmax, the row sum), ``-1`` for the loop kinds.
- Names are ``fused_<op>_<op>_<n>``: the body's op names in order and a counter unique in
  the graph (the kernel's name).
- Groups formed by the TVM-style algorithm have exactly ONE output (every other body value
  is used only inside the body). Composites may also return an intermediate (log_softmax's
  output, which the backward pass reads).
- :func:`inplace_pairs` gives the (input, output) buffer pairs a memory planner may share.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

from .errors import EmberError
from .graph import FUSED, Graph, Node, Value, make_fused

KINDS = ("elemwise", "broadcast", "injective", "reduce", "out_ewise", "softmax_xent",
         "softmax_xent_grad")


def interpret(body: Graph, arrays: Sequence, values: Sequence[Value] | None = None) -> list:
    """Run ``body`` on NumPy arrays with its ops' reference kernels; its outputs. The arrays
    bind ``values`` (default: the body's inputs)."""
    env: dict[Value, object] = dict(zip(body.inputs if values is None else values, arrays))
    for node in body.nodes:
        res = node.op.compute([env[v] for v in node.inputs], node.attr_dict)
        res = list(res) if isinstance(res, tuple | list) else [res]
        env.update(zip(node.outputs, res))
    return [env[v] for v in body.outputs]


def is_fused(node: Node) -> bool:
    """Whether ``node`` is a fused group."""
    return node.op is FUSED and node.body is not None


def fused_node(body: Graph, inputs: Sequence[Value], kind: str, master: int = -1,
               loc: str | None = None) -> Node:
    """The fused node applying ``body`` (named already) to ``inputs``."""
    if kind not in KINDS:
        raise EmberError(f"fused node {body.name}: unknown kind {kind!r}")
    if len(inputs) != len(body.inputs) or body.params:
        raise EmberError(f"fused node {body.name}: {len(inputs)} inputs for a body taking "
                         f"{len(body.inputs)} (and no params)")
    node = make_fused(body.name, list(inputs), body, loc)
    node.attrs = (("kind", kind), ("master", int(master)))
    for o, bv in zip(node.outputs, body.outputs):
        o.name_hint = bv.name_hint
    return node


def make_fused_node(nodes: Sequence[Node], escapes: Iterable[Value], kind: str, name: str,
                    master: Node | None = None) -> tuple[Node, list[Value]]:
    """Cut ``nodes`` (in topological order) out into one fused node.

    ``escapes``: the values of ``nodes`` that are read outside the group or are graph
    outputs (the caller knows the graph's users). The body's inputs are the values the group
    reads from outside, in first-use order; its outputs the escaping values, in node order.
    Returns ``(node, replaced)``: ``node.outputs[j]`` stands for ``replaced[j]`` in the
    enclosing graph. The given nodes are left untouched (the body holds copies).
    """
    inside = {id(n) for n in nodes}
    escaping = {id(v) for v in escapes}
    vmap: dict[int, Value] = {}
    body_inputs: list[Value] = []
    outer_inputs: list[Value] = []
    body_nodes: list[Node] = []
    replaced: list[Value] = []
    body_outputs: list[Value] = []
    for n in nodes:
        for v in n.inputs:
            if id(v) not in vmap:
                if v.producer is not None and id(v.producer) in inside:
                    raise EmberError(f"make_fused_node: {n.op.name} reads a value of the "
                                     "group before it is computed (nodes not in order)")
                bv = Value(v.type, name_hint=v.name_hint)
                vmap[id(v)] = bv
                body_inputs.append(bv)
                outer_inputs.append(v)
        copy = Node(n.op, [vmap[id(v)] for v in n.inputs], n.attrs, loc=n.loc, name=n.name)
        copy.outputs = [Value(o.type, copy, o.index, o.name_hint) for o in n.outputs]
        body_nodes.append(copy)
        for o, c in zip(n.outputs, copy.outputs):
            vmap[id(o)] = c
            if id(o) in escaping:
                replaced.append(o)
                body_outputs.append(c)
    if not body_outputs:
        raise EmberError(f"make_fused_node {name}: the group computes nothing used outside")
    m = -1 if master is None else [id(n) for n in nodes].index(id(master))
    body = Graph(name, body_inputs, [], body_nodes, body_outputs, {})
    return fused_node(body, outer_inputs, kind, m, loc=nodes[-1].loc), replaced


def inplace_pairs(node: Node) -> tuple[tuple[int, int], ...]:
    """(input index, output index) pairs whose buffers ``node`` may share.

    A plain op: its registry's ``inplace``. A fused ``elemwise``/``broadcast`` group: each
    input with exactly the type of an output (the loop reads element k of such an input only
    to write element k of the output). Other fused kinds share nothing: a GEMM or a
    reduction writes its output before its epilogue has read all of its inputs, and
    injective ops read other positions than they write.
    """
    if not is_fused(node):
        return tuple(node.op.inplace)
    if node.attr_dict["kind"] not in ("elemwise", "broadcast"):
        return ()
    return tuple((i, j) for i, v in enumerate(node.inputs)
                 for j, o in enumerate(node.outputs) if v.type == o.type)
