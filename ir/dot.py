"""Graphviz DOT text of a graph (``ember viz``; DESIGN.md s.7).

Ops are boxes labelled with the op name and the attributes that differ from the op's
defaults; graph inputs are blue ellipses, parameters grey boxes, outputs plain text. Edges
carry the tensor type (``f32[2,256]``), the output index of multi-output ops, and the
``@arena+offset`` placement once memory is planned. A fused node is a ``subgraph
cluster_*`` holding its body's ops, wired straight to the values outside (the way TVM's and
Netron's viewers show fused groups).

``weights=False`` leaves parameters (weights, biases, BatchNorm's running statistics) out, as
MXNet's ``plot_network(hide_weights=True)`` does; they are listed in the tooltips of the ops
that read them. ``collapse`` draws each repeated block as one box (:mod:`ember.ir.dot_groups`).
Every op carries a ``tooltip`` (name, op, all its attributes, input and output types, arena
offsets, source line) and a ``class`` (``op``, ``group``, ``input``, ``param``), which SVG
output keeps: the HTML view searches and shows them.
"""
from __future__ import annotations

from .dot_groups import Group, find_groups
from .graph import Graph, Node, Value
from .printer import fmt_literal, is_default_attr

_ATTR_CHARS = 28  # longer attribute values are cut in labels
_TIP_LINES = 40  # longer tooltips are cut


def _q(text: str) -> str:
    """A DOT double-quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _label(node: Node) -> str:
    parts = [node.op.name]
    for k, v in node.attrs:
        if is_default_attr(node.op.attrs, k, v) or (k == "is_train" and not v):
            continue
        text = fmt_literal(v)
        if len(text) > _ATTR_CHARS:
            text = text[:_ATTR_CHARS - 3] + "..."
        parts.append(f"{k}={text}")
    if node.name:
        parts.append(f"({node.name})")
    return "\n".join(parts)


def _vtext(v: Value) -> str:
    """A value's type and, once planned, its placement."""
    text = str(v.type)
    if v.producer is not None and len(v.producer.outputs) > 1:
        text = f"[{v.index}] {text}"
    return text + (f" @{v.mem[0]}+{v.mem[1]}" if v.mem is not None else "")


def _source(v: Value) -> str:
    if v.name_hint:
        return v.name_hint
    if v.producer is not None:
        return v.producer.name or v.producer.op.name
    return "?"


def _tooltip(node: Node, params: set[int], outer: dict[int, Value]) -> str:
    """Everything about one op: name, op, attributes, inputs, outputs, source line
    (``outer``: a fused body's values -> the node's own, which carry the placements)."""
    lines = [f"name: {node.name}"] if node.name else []
    lines.append(f"op: {node.op.name}")
    lines += [f"  {k}={fmt_literal(v)}" for k, v in node.attrs]
    for i, v in enumerate(node.inputs):
        kind = "param" if id(v) in params else "in"
        v = outer.get(id(v), v)
        lines.append(f"{kind}[{i}]: {_source(v)} {_vtext(v)}")
    lines += [f"out[{i}]: {_vtext(outer.get(id(o), o))}" for i, o in enumerate(node.outputs)]
    if node.loc:
        lines.append(f"at: {node.loc}")
    return _cut(lines)


def _cut(lines: list[str]) -> str:
    if len(lines) > _TIP_LINES:
        lines = lines[:_TIP_LINES - 1] + [f"... {len(lines) - _TIP_LINES + 1} more lines"]
    return "\n".join(lines)


class _Dot:
    def __init__(self, graph: Graph, shapes: bool, weights: bool, groups: list[Group]):
        self.shapes, self.weights = shapes, weights
        self.lines: list[str] = []
        self.src: dict[int, tuple[str, Value]] = {}  # value -> (dot node, value it came from)
        self.hidden: set[int] = set()  # values of parameters left out of the drawing
        self.params = {id(v) for v in graph.params}
        self.outer: dict[int, Value] = {}  # a fused body's inputs and outputs -> the node's
        self.group_of = {m: g for g in groups for m in g.members}
        self.group_id: dict[int, str] = {}  # id(group) -> its dot node, once drawn
        self.group_edges: set[tuple[int, str]] = set()  # (value, box) edges already drawn
        self.count = 0
        self.clusters = 0

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count - 1}"

    def edge(self, v: Value, dst: str, indent: str) -> None:
        if id(v) in self.hidden:
            return
        if id(v) not in self.src:  # a value the graph does not define (an invalid graph)
            ghost = self.fresh("undef")
            self.lines.append(f'{indent}{ghost} [label="undefined", shape=point];')
            self.src[id(v)] = (ghost, v)
        node_id, val = self.src[id(v)]
        attrs = ""
        if self.shapes:
            text = str(val.type)
            if val.producer is not None and len(val.producer.outputs) > 1:
                text = f"[{val.index}] {text}"
            if val.mem is not None:
                text += f"\n@{val.mem[0]}+{val.mem[1]}"
            attrs = f" [label={_q(text)}]"
        self.lines.append(f"{indent}{node_id} -> {dst}{attrs};")

    def leaf(self, v: Value, kind: str, i: int, indent: str) -> None:
        if kind == "param" and not self.weights:
            self.hidden.add(id(v))
            return
        node_id = self.fresh("in" if kind == "input" else "param")
        name = v.name_hint or f"{kind}{i}"
        style = ('shape=ellipse, style=filled, fillcolor="#cfe2f3"' if kind == "input"
                 else 'shape=box, style=filled, fillcolor="#d9d9d9"')
        tip = _q(f"{kind}: {name}\n{v.type}")
        self.lines.append(f'{indent}{node_id} [label={_q(name)}, {style}, tooltip={tip}, '
                          f'class="{kind}"];')
        self.src[id(v)] = (node_id, v)

    def group(self, node: Node, g: Group, indent: str) -> None:
        """``node`` drawn as part of its group's box (the box drawn with its first node)."""
        box = self.group_id.get(id(g))
        if box is None:
            box = self.group_id[id(g)] = self.fresh("g")
            inside = {id(o) for n in g.nodes for o in n.outputs}
            ins = list({id(v): v for n in g.nodes for v in n.inputs
                        if id(v) not in inside}.values())
            tip = [f"group: {g.name}", g.label().split("\n")[1]]
            tip += [f"in: {_source(v)} {_vtext(v)}" for v in ins if id(v) not in self.params]
            tip += [f"  {n.name or '?'}: {n.op.name}" + (
                    f"({', '.join(b.op.name for b in n.body.nodes)})" if n.body else "")
                    for n in g.nodes]
            style = 'shape=box, style="rounded,filled,bold", fillcolor="#fce5cd", peripheries=2'
            self.lines.append(f"{indent}{box} [label={_q(g.label())}, {style}, "
                              f'tooltip={_q(_cut(tip))}, class="group"];')
        produced = {id(o) for n in g.nodes for o in n.outputs}
        for v in node.inputs:
            if id(v) not in produced and (id(v), box) not in self.group_edges:
                self.group_edges.add((id(v), box))
                self.edge(v, box, indent)
        for o in node.outputs:
            self.src[id(o)] = (box, o)

    def nodes(self, g: Graph, indent: str) -> None:
        for node in g.nodes:
            grp = self.group_of.get(id(node))
            if grp is not None:
                self.group(node, grp, indent)
                continue
            if node.body is None:
                node_id = self.fresh("n")
                tip = _q(_tooltip(node, self.params, self.outer))
                self.lines.append(f"{indent}{node_id} [label={_q(_label(node))}, shape=box, "
                                  f'tooltip={tip}, class="op"];')
                for v in node.inputs:
                    self.edge(v, node_id, indent)
                for o in node.outputs:
                    self.src[id(o)] = (node_id, o)
                continue
            body = node.body
            self.clusters += 1
            self.lines.append(f"{indent}subgraph cluster_{self.clusters - 1} {{")
            inner = indent + "  "
            self.lines.append(f"{inner}label={_q(node.name or body.name)};")
            self.lines.append(f'{inner}style="rounded,filled"; fillcolor="#fff2cc";')
            for o, r in zip(node.outputs, body.outputs):
                self.outer.setdefault(id(r), self.outer.get(id(o), o))
            for v, p in zip(node.inputs, body.inputs + body.params):
                self.outer[id(p)] = self.outer.get(id(v), v)
                if id(v) in self.src:
                    self.src[id(p)] = self.src[id(v)]
                if id(v) in self.hidden:
                    self.hidden.add(id(p))
                if id(v) in self.params:
                    self.params.add(id(p))
            self.nodes(body, inner)
            self.lines.append(f"{indent}}}")
            for o, r in zip(node.outputs, body.outputs):
                if id(r) in self.src:
                    self.src[id(o)] = (self.src[id(r)][0], o)


def to_dot(graph: Graph, shapes: bool = True, weights: bool = True,
           collapse: int | str | None = None) -> str:
    """DOT text drawing ``graph``; ``shapes`` labels edges with types (and placements);
    ``weights=False`` leaves the parameters out; ``collapse`` (a scope depth or a regular
    expression, :func:`ember.ir.dot_groups.find_groups`) draws repeated blocks as boxes."""
    d = _Dot(graph, shapes, weights, find_groups(graph, collapse))
    d.lines += [f"digraph {_q(graph.name)} {{", "  rankdir=TB;",
                '  node [fontname="Helvetica", fontsize=10];',
                '  edge [fontname="Helvetica", fontsize=9];']
    for i, v in enumerate(graph.inputs):
        d.leaf(v, "input", i, "  ")
    for i, v in enumerate(graph.params):
        d.leaf(v, "param", i, "  ")
    d.nodes(graph, "  ")
    for i, v in enumerate(graph.outputs):
        out = d.fresh("out")
        d.lines.append(f"  {out} [label={_q(f'output {i}')}, shape=plaintext];")
        d.edge(v, out, "  ")
    d.lines.append("}")
    return "\n".join(d.lines) + "\n"
