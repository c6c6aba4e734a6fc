"""Graphviz DOT text of a graph (``ember viz``; DESIGN.md s.7).

Ops are boxes labelled with the op name and the attributes that differ from the op's
defaults; graph inputs are blue ellipses, parameters grey boxes, outputs plain text. Edges
carry the tensor type (``f32[2,256]``), the output index of multi-output ops, and the
``@arena+offset`` placement once memory is planned. A fused node is a ``subgraph
cluster_*`` holding its body's ops, wired straight to the values outside (the way TVM's and
Netron's viewers show fused groups).
"""
from __future__ import annotations

from .graph import Graph, Node, Value
from .printer import fmt_literal, is_default_attr

_ATTR_CHARS = 28  # longer attribute values are cut in labels


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


class _Dot:
    def __init__(self, shapes: bool):
        self.shapes = shapes
        self.lines: list[str] = []
        self.src: dict[int, tuple[str, Value]] = {}  # value -> (dot node, value it came from)
        self.count = 0
        self.clusters = 0

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count - 1}"

    def edge(self, v: Value, dst: str, indent: str) -> None:
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
        node_id = self.fresh("in" if kind == "input" else "param")
        name = v.name_hint or f"{kind}{i}"
        style = ('shape=ellipse, style=filled, fillcolor="#cfe2f3"' if kind == "input"
                 else 'shape=box, style=filled, fillcolor="#d9d9d9"')
        self.lines.append(f"{indent}{node_id} [label={_q(name)}, {style}];")
        self.src[id(v)] = (node_id, v)

    def nodes(self, g: Graph, indent: str) -> None:
        for node in g.nodes:
            if node.body is None:
                node_id = self.fresh("n")
                self.lines.append(f"{indent}{node_id} [label={_q(_label(node))}, shape=box];")
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
            for v, p in zip(node.inputs, body.inputs + body.params):
                if id(v) in self.src:
                    self.src[id(p)] = self.src[id(v)]
            self.nodes(body, inner)
            self.lines.append(f"{indent}}}")
            for o, r in zip(node.outputs, body.outputs):
                if id(r) in self.src:
                    self.src[id(o)] = (self.src[id(r)][0], o)


def to_dot(graph: Graph, shapes: bool = True) -> str:
    """DOT text drawing ``graph``; ``shapes`` labels edges with types (and placements)."""
    d = _Dot(shapes)
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
