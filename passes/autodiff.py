"""The ``autodiff`` pass: reverse-mode differentiation of a graph (DESIGN.md s.5).

The same gradient rules that the eager tape runs (``frontend/autograd.py``) run here on
:class:`~ember.ir.emit.Sym` wrappers of the forward graph's own Values, with
``F = ember.ir.emit.F``, so each rule *emits* its backward nodes instead of computing
numbers. This is the classic reverse sweep over a straight-line program (Griewank and
Walther, "Evaluating Derivatives", ch. 3; JAX's ``backward_pass`` over a jaxpr; nnvm's
``Gradient`` pass in MXNet): visit nodes in reverse topological order, sum the adjoints of
values read several times, call the node's rule, hand each input its share.

The result is ONE graph computing outputs and gradients together, so later passes (CSE,
fusion, memory planning) share work between them; ``passes/partition.py`` splits it when a
CachedOp needs forward and backward apart. Rules read the forward Values directly: nothing
is recomputed, and Dropout's backward reads the very mask (hidden output 1) its forward drew.
"""
from __future__ import annotations

from collections.abc import Sequence

from ember.ir.emit import F, Sym
from ember.ir.errors import EmberError, fmt_shapes
from ember.ir.graph import Graph, Node, Value, topo_nodes
from ember.ir.types import TensorType
from ember.passes import register_pass

_FLOAT = ("float16", "float32", "float64", "bfloat16")


def _is_float(t: TensorType) -> bool:
    return t.dtype in _FLOAT


def _no_gradient_by_nature(node: Node) -> bool:
    """Whether an op without a gradient rule is *declared* non-differentiable.

    Its outputs carry no gradient by nature: it reads no tensors (creation ops), it draws
    random numbers (a sample's derivative w.r.t. its parameters is not what users mean; MXNet
    gives ``_shuffle`` and the samplers no gradient either), or its outputs are not floats
    (indices, masks). Such a node is differentiated as zero. Any other op without a rule
    (optimizer updates) raises when a gradient must flow through it.
    """
    return (not node.inputs or node.op.random
            or not any(_is_float(v.type) for v in node.outputs))


def _is_zero(v: Value) -> bool:
    """Whether ``v`` is a zero gradient from a rule (``stop_gradient``, ``floor``, ...)."""
    return v.producer is not None and v.producer.op.name == "zeros_like"


def _name(v: Value, fallback: str) -> str:
    if v.name_hint:
        return v.name_hint
    if v.producer is not None and v.producer.name:
        p = v.producer
        return p.name if len(p.outputs) == 1 else f"{p.name}_output{v.index}"
    return fallback


def _wrt_names(wrt: list[Value]) -> list[str]:
    return [_name(v, f"wrt{i}") for i, v in enumerate(wrt)]


def _total(parts: list[Value]) -> Value:
    """One adjoint from the contributions of several uses: ``add``, or ``add_n`` for 3+."""
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return F.add(Sym(parts[0]), Sym(parts[1]))._value
    return F.add_n(*[Sym(p) for p in parts])._value


def _where(node: Node) -> str:
    return f" (at {node.loc})" if node.loc else ""


def _check_grad(node: Node, x: Value, g) -> Value:
    """The rule's gradient for input ``x``: a Sym whose shape fits ``x`` where both are known."""
    if not isinstance(g, Sym):
        raise EmberError(f"autodiff: the gradient rule of {node.op.name} returned "
                         f"{type(g).__name__}, not a graph value{_where(node)}")
    gt, xt = g._value.type, x.type
    if gt.shape is not None and xt.shape is not None:
        same = len(gt.shape) == len(xt.shape) and all(
            a is None or b is None or a == b for a, b in zip(gt.shape, xt.shape))
        if not same:
            raise EmberError(f"autodiff: the gradient rule of {node.op.name} gave shape "
                             f"{fmt_shapes([gt.shape])} for an input of shape "
                             f"{fmt_shapes([xt.shape])}{_where(node)}")
    return g._value


def _known_values(graph: Graph) -> set[int]:
    known = {id(v) for v in graph.inputs} | {id(v) for v in graph.params}
    for n in graph.nodes:
        known.update(id(o) for o in n.outputs)
    return known


def _by_readiness(graph: Graph, wrt: list[Value], grads: list[Value]) -> list[Value]:
    """``grads`` in the order the reverse sweep completes them: the gradient of a value
    whose first reader comes later in the forward first (ties keep ``wrt``'s order).

    The backward nodes are emitted depth first from these roots, so each layer's weight
    gradient follows the data gradient it reads, which then dies; from the gradients in
    ``wrt``'s (the parameters') order, the first root pulled in the whole chain of data
    gradients and every weight gradient came after it, each data gradient living until the
    end (ResNet-50's backward at batch 16 held 695 MB at its peak)."""
    first: dict[int, int] = {}
    for i, n in enumerate(graph.nodes):
        for x in n.inputs:
            first.setdefault(id(x), i)
    order = sorted(range(len(grads)), key=lambda k: -first.get(id(wrt[k]), -1))
    return [grads[k] for k in order]


@register_pass("autodiff")
def autodiff(graph: Graph, *, wrt: Sequence[Value] | None = None,
             head_grads: str = "input") -> Graph:
    """Append the reverse-mode gradient of ``graph`` w.r.t. ``wrt`` to it.

    ``wrt``: Values of the graph to differentiate (default: every input and parameter of a
    float dtype). ``head_grads``: ``"input"`` adds one graph input per output, of the
    output's type, named ``<output>_grad`` (``head_grad{i}`` when the output has no name):
    what a CachedOp's backward receives; ``"ones"`` seeds every output with ones (a scalar
    loss). The result's outputs are the original ones followed by one gradient per ``wrt``
    Value; ``meta['n_forward_outputs']`` and ``meta['grad_wrt']`` record the split.
    """
    if head_grads not in ("input", "ones"):
        raise EmberError(f"autodiff: head_grads must be 'input' or 'ones', not {head_grads!r}")
    if wrt is None:
        wrt = [v for v in (*graph.inputs, *graph.params) if _is_float(v.type)]
    wrt = list(wrt)
    known = _known_values(graph)
    for v in wrt:
        if not isinstance(v, Value) or id(v) not in known:
            raise EmberError(f"autodiff: wrt entry {v!r} is not a value of graph {graph.name}")

    # forward sweep: which values depend on a wrt value (only those need adjoints)
    active = {id(v) for v in wrt}
    for n in graph.nodes:
        if any(id(v) in active for v in n.inputs):
            active.update(id(o) for o in n.outputs)

    parts: dict[int, list[Value]] = {}  # id(value) -> contributions to its adjoint
    new_inputs: list[Value] = []
    for i, out in enumerate(graph.outputs):
        if head_grads == "input":
            base = _name(out, "")
            seed = Value(out.type, name_hint=f"{base}_grad" if base else f"head_grad{i}")
            new_inputs.append(seed)
        elif id(out) in active:
            seed = F.ones_like(Sym(out))._value
        else:
            continue
        if id(out) in active:
            parts.setdefault(id(out), []).append(seed)

    adjoint: dict[int, Value] = {}  # summed adjoints of node outputs that are wrt values
    wanted = {id(v) for v in wrt}
    for node in reversed(graph.nodes):
        ogs, zero = [], True
        for o in node.outputs:
            p = parts.pop(id(o), None)
            zero = zero and all(_is_zero(v) for v in p or ())
            g = _total(p) if p else None
            if g is not None and id(o) in wanted:
                adjoint[id(o)] = g
            ogs.append(g)
        if all(g is None for g in ogs):
            continue
        need = [id(x) in active for x in node.inputs]
        if not any(need):
            continue
        if node.op.grad is None:
            if _no_gradient_by_nature(node) or zero:  # nnvm's CheckGradAllZero
                continue
            raise EmberError(f"autodiff: operator {node.op.name} has no gradient, but the "
                             f"gradient of {', '.join(_wrt_names(wrt))} flows through it"
                             f"{_where(node)}")
        og_syms = [Sym(g) if g is not None else F.zeros_like(Sym(o))
                   for g, o in zip(ogs, node.outputs)]
        try:
            res = node.op.grad(F, [Sym(x) for x in node.inputs],
                               [Sym(o) for o in node.outputs], og_syms, node.attr_dict)
        except Exception as e:  # a rule failing on these types: name the op, keep the cause
            raise EmberError(f"autodiff: gradient of {node.op.name}{_where(node)}: {e}") \
                from e
        if len(res) < len(node.inputs):
            raise EmberError(f"autodiff: the gradient rule of {node.op.name} gave "
                             f"{len(res)} gradients for {len(node.inputs)} inputs")
        for x, g, n in zip(node.inputs, res, need):
            if g is not None and n:
                parts.setdefault(id(x), []).append(_check_grad(node, x, g))

    grads: list[Value] = []
    for v in wrt:
        g = adjoint.get(id(v))
        if g is None:
            p = parts.pop(id(v), None)
            g = _total(p) if p else F.zeros_like(Sym(v))._value
            adjoint[id(v)] = g
        grads.append(g)

    outputs = list(graph.outputs) + grads
    forward = {id(n) for n in graph.nodes}
    backward = [n for n in topo_nodes(list(graph.outputs) + _by_readiness(graph, wrt, grads))
                if id(n) not in forward]
    meta = {**graph.meta, "n_forward_outputs": len(graph.outputs),
            "grad_wrt": _wrt_names(wrt)}
    return Graph(graph.name, list(graph.inputs) + new_inputs, list(graph.params),
                 list(graph.nodes) + backward, outputs, meta)
