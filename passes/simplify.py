"""The ``simplify`` pass: algebraic identities, constant folding, CSE and DCE, to a fixed point.

Each round rebuilds the graph through a value map (old value -> new value), visiting nodes
in order; a node is first offered to the rewrite rules below, then hashed for common
subexpression elimination (the attributes are a sorted tuple, so CSE is a dict lookup, as in
TVM's and XLA's CSE); a final backward sweep drops nodes nothing reads (dead code
elimination). Rounds repeat until one changes nothing (the rules only shrink the graph).

Rules (one table, ``_RULES``; each gets the node being rebuilt and returns a replacement
value, a replacement node, or None):

- identities of the scalar ops: ``x*1, x/1, x+0, x-0, x**1 -> x`` (``x*0`` stays: NaN and
  inf times zero are not zero; ``x+0.0`` turns -0.0 into +0.0, equal under ``==``, a
  difference XLA's simplifier also ignores);
- ``identity`` (MXNet ``_copy``) -> its input; ``stop_gradient`` too once gradients are
  taken (``keep_stop_gradient=False``; ``run_pipeline`` sets it after ``autodiff``). Any rule
  that makes a value stand for another is skipped when either is written in place by an op
  (``op.mutated``), or when it would make a graph output alias an input or parameter;
- ``reshape(reshape(x))`` -> one reshape to the final shape (written explicitly, as MXNet's
  codes 0/-1 refer to the input they are applied to), and a reshape to x's own shape -> x;
- ``sum_like(x, like)``, ``broadcast_to``, ``broadcast_like`` and ``broadcast_axis`` whose
  output has x's own type -> x (the adjoint of a same-shape broadcast is no reduction, and
  keeping it would keep ``like`` alive for its shape alone: a residual per residual add);
- ``transpose(transpose(x, p), q)`` -> ``transpose(x, p[q])``, and an identity permutation
  -> x;
- constant folding. Constants are the outputs of nodes without inputs that draw no random
  numbers (zeros, ones, full, arange, linspace, eye). A deterministic node reading only
  constants is evaluated with its NumPy kernel when every array involved has at most
  ``FOLD_LIMIT`` elements; the result is kept only when it is uniform, as a ``full`` node
  (shape, value, dtype), so folded constants stay attributes: hashable, printable, with no
  arrays inside the IR. ``zeros_like``/``ones_like`` of a fully typed value are ``full``
  constants without evaluating anything.

Nodes with side effects (``op.mutated(attrs)`` not empty) or that draw random numbers are
never dropped, merged or folded; neither are fused nodes.
"""
from __future__ import annotations

import numpy as np

from ember.ir.graph import Graph, Node, Value, clone_node
from ember.ir.ops import get_op, normalize_attrs
from ember.passes import register_pass

FOLD_LIMIT = 1 << 16  # elements: larger constants are not evaluated at compile time

# scalar op -> the scalar values for which x op scalar == x
_NEUTRAL = {"mul_scalar": (1,), "div_scalar": (1,), "add_scalar": (0,), "sub_scalar": (0,),
            "power_scalar": (1,)}


class _Round:
    """One rebuilding sweep over a graph."""

    def __init__(self, graph: Graph, keep_stop_gradient: bool):
        self.graph = graph
        self.keep_stop_gradient = keep_stop_gradient
        self.vmap: dict[int, Value] = {}
        self.nodes: list[Node] = []
        self.cse: dict = {}
        self.changed = False
        self.leaves: set[int] = set()   # new inputs and params
        self.outputs = {id(v) for v in graph.outputs}  # old values the graph returns
        self.mutated: set[int] = set()  # old values some op writes in place...
        for n in graph.nodes:
            if n.body is None:
                for i in n.op.mutated(n.attr_dict):
                    self.mutated.add(id(n.inputs[i]))
        self.mutated_new: set[int] = set()  # ...and the new values standing for them

    # ---- helpers ------------------------------------------------------------------------
    def new(self, v: Value) -> Value:
        return self.vmap.get(id(v), v)

    def bind(self, old: Value, new: Value) -> None:
        self.vmap[id(old)] = new
        if id(old) in self.mutated:
            self.mutated_new.add(id(new))

    def alias(self, node: Node, src: Value) -> Value | None:
        """``src`` (a new value) to stand for node's only output, if that is safe."""
        out = node.outputs[0]
        if id(out) in self.mutated or id(src) in self.mutated_new:
            return None
        if id(out) in self.outputs and id(src) in self.leaves:
            return None
        return src

    def emit(self, op: str, inputs: list[Value], out: Value, **attrs) -> Node:
        """A new node of ``op`` standing for ``out``'s producer (same output type)."""
        opdef = get_op(op)
        node = Node(opdef, inputs, tuple(sorted(normalize_attrs(opdef, attrs).items())),
                    loc=out.producer.loc, name=out.producer.name)
        node.outputs = [Value(out.type, node, 0, out.name_hint, out.mem)]
        return node

    def constant(self, v: Value) -> np.ndarray | None:
        """The array of a constant (new) value, or None."""
        p = v.producer
        if p is None or p.inputs or p.body is not None or p.op.random \
                or p.op.mutated(p.attr_dict) or not v.type.known or v.type.size > FOLD_LIMIT:
            return None
        res = p.op.compute([], p.attr_dict)
        res = res if isinstance(res, tuple | list) else (res,)
        return np.asarray(res[v.index])

    # ---- the sweep ----------------------------------------------------------------------
    def run(self) -> Graph:
        g = self.graph
        leaves = []
        for v in g.inputs + g.params:
            nv = Value(v.type, None, 0, v.name_hint, v.mem)
            self.bind(v, nv)
            self.leaves.add(id(nv))
            leaves.append(nv)
        for node in g.nodes:
            self.visit(node)
        outputs = [self.new(v) for v in g.outputs]
        nodes = _dce(self.nodes, outputs)
        self.changed |= len(nodes) != len(self.nodes)
        return Graph(g.name, leaves[:len(g.inputs)], leaves[len(g.inputs):], nodes, outputs,
                     dict(g.meta))

    def visit(self, node: Node) -> None:
        inputs = [self.new(v) for v in node.inputs]
        if node.body is None:
            for rule in _RULES:
                res = rule(self, node, inputs)
                if isinstance(res, Value):
                    self.bind(node.outputs[0], res)
                    self.changed = True
                    return
                if isinstance(res, Node):
                    self.changed = True
                    self.add(res, node)
                    return
        self.add(clone_node(node, inputs), node)

    def add(self, new: Node, old: Node) -> None:
        """Append ``new`` (standing for ``old``) unless an equal node exists (CSE)."""
        key = None
        if new.body is None and not new.op.random and not new.op.mutated(new.attr_dict) \
                and not any(id(o) in self.mutated for o in old.outputs):
            key = (new.op.name, tuple(id(v) for v in new.inputs), new.attrs)
            try:
                same = self.cse.get(key)
            except TypeError:  # an unhashable attribute: no CSE for this node
                key, same = None, None
            if same is not None:
                for o, s in zip(old.outputs, same.outputs):
                    self.bind(o, s)
                self.changed = True
                return
        if key is not None:
            self.cse[key] = new
        self.nodes.append(new)
        for o, n in zip(old.outputs, new.outputs):
            self.bind(o, n)


def _dce(nodes: list[Node], outputs: list[Value]) -> list[Node]:
    """``nodes`` less those whose outputs nothing reads (side effects and draws stay)."""
    live = {id(v) for v in outputs}
    keep = []
    for n in reversed(nodes):
        effect = n.body is None and (n.op.random or n.op.mutated(n.attr_dict))
        if effect or any(id(o) in live for o in n.outputs):
            keep.append(n)
            live.update(id(v) for v in n.inputs)
    return keep[::-1]


# ---- rules ------------------------------------------------------------------------------
def _neutral_scalar(r: _Round, node: Node, ins: list[Value]):
    neutral = _NEUTRAL.get(node.op.name)
    if neutral is None:
        return None
    s = node.attr_dict["scalar"]
    if isinstance(s, bool) or s not in neutral:
        return None
    return r.alias(node, ins[0])


def _copies(r: _Round, node: Node, ins: list[Value]):
    if node.op.name == "identity" or (node.op.name == "stop_gradient"
                                      and not r.keep_stop_gradient):
        return r.alias(node, ins[0])
    return None


def _reshape(r: _Round, node: Node, ins: list[Value]):
    if node.op.name != "reshape":
        return None
    x, out = ins[0], node.outputs[0]
    if not out.type.known:
        return None
    if x.type == out.type:
        return r.alias(node, x)
    p = x.producer
    if p is not None and p.body is None and p.op.name == "reshape":
        return r.emit("reshape", [p.inputs[0]], out, shape=out.type.shape)
    return None


_SAME_SHAPE = frozenset({"sum_like", "broadcast_to", "broadcast_like", "broadcast_axis"})


def _same_shape(r: _Round, node: Node, ins: list[Value]):
    if node.op.name not in _SAME_SHAPE or not ins[0].type.known:
        return None
    return r.alias(node, ins[0]) if ins[0].type == node.outputs[0].type else None


def _perm(ndim: int, axes: tuple) -> tuple[int, ...]:
    return tuple(range(ndim))[::-1] if not axes else tuple(a % ndim for a in axes)


def _transpose(r: _Round, node: Node, ins: list[Value]):
    if node.op.name != "transpose" or ins[0].type.ndim is None:
        return None
    x, nd = ins[0], ins[0].type.ndim
    perm = _perm(nd, node.attr_dict["axes"])
    p = x.producer
    if p is not None and p.body is None and p.op.name == "transpose":
        inner = _perm(nd, p.attr_dict["axes"])
        perm = tuple(inner[i] for i in perm)
        x = p.inputs[0]
    if perm == tuple(range(nd)):
        return r.alias(node, x)
    if x is ins[0]:
        return None
    return r.emit("transpose", [x], node.outputs[0], axes=perm)


def _fold(r: _Round, node: Node, ins: list[Value]):
    op, attrs = node.op, node.attr_dict
    if op.random or op.mutated(attrs) or len(node.outputs) != 1:
        return None
    out = node.outputs[0]
    if not out.type.known or out.type.size > FOLD_LIMIT:
        return None
    if op.name in ("zeros_like", "ones_like"):
        fill = np.zeros if op.name == "zeros_like" else np.ones
        value = fill((), out.type.dtype).item()
    elif not ins:
        return None  # already a constant
    else:
        arrays = [r.constant(v) for v in ins]
        if any(a is None for a in arrays):
            return None
        res = op.compute(arrays, attrs)
        res = np.asarray(res[0] if isinstance(res, tuple | list) else res)
        if res.shape != out.type.shape or res.dtype.name != out.type.dtype:
            return None
        flat = res.reshape(-1)
        if flat.size and flat.tobytes() != np.full_like(flat, flat[0]).tobytes():
            return None  # not uniform (bitwise: -0.0 and NaN payloads count)
        value = flat[0].item() if flat.size else 0
    return r.emit("full", [], out, shape=out.type.shape, value=value, dtype=out.type.dtype)


_RULES = (_neutral_scalar, _copies, _reshape, _same_shape, _transpose, _fold)


@register_pass("simplify")
def simplify(graph: Graph, *, keep_stop_gradient: bool = True, max_rounds: int = 32) -> Graph:
    """A simpler graph computing the same outputs (rules: see the module docstring).

    ``keep_stop_gradient``: keep ``stop_gradient`` nodes (needed until autodiff has run).
    Inputs, parameters and outputs keep their order; side-effecting nodes stay.
    """
    for _ in range(max_rounds):
        r = _Round(graph, keep_stop_gradient)
        graph = r.run()
        if not r.changed:
            break
    return graph
