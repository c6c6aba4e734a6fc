"""The IR text format (DESIGN.md s.4): :func:`print_graph` and :func:`parse_graph`.

Printing then parsing gives a structurally identical graph, and printing that gives the same
text. Names are invented at print time (as in JAX's jaxprs): a value with a ``name_hint``
prints as ``%hint`` (``%'odd name'`` when the hint is not an identifier, ``%x.1`` for the
second value hinted ``x``), any other value as ``%0, %1, ...`` in order of definition. One
statement a line::

    graph mlp(%x: f32[2,784]) params(%w: f32[256,784], %b: f32[256]) {
      %0: f32[2,256] = fully_connected(%x, %w, %b) {num_hidden=256} as dense0_fwd  # mlp.py:7
      %1: f32[2,128], %2: f32[2,128] = split(%0) {num_outputs=2}
      %3: f32[2,128] @arena+1024 = fused_relu_0(%1) fused(%a: f32[2,128]) {
        %0: f32[2,128] = relu(%a)
        return %0
      }
      return %3
    }
    # meta: arena_bytes=2048

``{...}`` holds the attributes that differ from the op's defaults (sorted, Python literals;
``nan``/``inf`` for the special floats; ``is_train`` of mode-dependent ops always shows),
``as NAME`` the node's MXNet name, ``# ...`` its source location, ``@arena+offset`` the
memory planner's placement. A fused node prints its name in the op position and its
body (a graph with its own names) indented under it. ``# meta: key=value`` lines after a
closing brace hold the graph's literal-valued meta entries. Hand-written text may leave out
output types (``%0 = relu(%x)``): the op's shape rule then gives them. The parser lives in
:mod:`ember.ir.parser`.
"""
from __future__ import annotations

import ast
import math
import re

import numpy as np

from .graph import Graph, Node, Value

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_META_KEY = re.compile(r"[A-Za-z0-9_.\-]+\Z")


# ---- printing ----------------------------------------------------------------------------
def _word(s: str) -> str:
    """An identifier as is, anything else as a Python string literal."""
    return s if _IDENT.match(s) else repr(s)


def fmt_literal(v) -> str:
    """An attribute or meta value as text that :func:`parse_literal` reads back exactly."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, tuple):
        inner = ", ".join(fmt_literal(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    if isinstance(v, list):
        return "[" + ", ".join(fmt_literal(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{fmt_literal(k)}: {fmt_literal(x)}" for k, x in v.items()) + "}"
    return repr(v)


def _is_literal(v) -> bool:
    if isinstance(v, list | tuple):
        return all(_is_literal(x) for x in v)
    return v is None or isinstance(v, bool | int | float | str | np.generic)


class Namer:
    """Invents the printed names of values, in order of definition (see module docstring)."""

    def __init__(self):
        self.names: dict[int, str] = {}
        self._seen: dict[str, int] = {}
        self._counter = 0

    def define(self, v: Value) -> str:
        if v.name_hint is None:
            name = f"%{self._counter}"
            self._counter += 1
        else:
            base = _word(v.name_hint)
            k = self._seen.get(base, 0)
            self._seen[base] = k + 1
            name = f"%{base}.{k}" if k else f"%{base}"
        self.names[id(v)] = name
        return name

    def __call__(self, v: Value) -> str:
        """The name of ``v`` (a value not defined yet is named on the spot)."""
        name = self.names.get(id(v))
        return name if name is not None else self.define(v)


def _decl(v: Value, namer: Namer) -> str:
    mem = f" @{v.mem[0]}+{v.mem[1]}" if v.mem is not None else ""
    return f"{namer.define(v)}: {v.type}{mem}"


def _signature(g: Graph, namer: Namer) -> str:
    text = "(" + ", ".join(_decl(v, namer) for v in g.inputs) + ")"
    if g.params:
        text += " params(" + ", ".join(_decl(v, namer) for v in g.params) + ")"
    return text


def _loc(loc: str | None) -> str:
    if loc is None:
        return ""
    plain = loc == loc.strip() and loc and "\n" not in loc and loc[0] not in "'\""
    return "  # " + (loc if plain else repr(loc))


def is_default_attr(defaults: dict, key: str, v) -> bool:
    """Whether attribute ``key`` has its default (same type too, so parsing restores it)."""
    if key not in defaults:
        return False
    d = defaults[key]
    return type(d) is type(v) and fmt_literal(d) == fmt_literal(v)


def format_node(node: Node, namer: Namer, define: bool = True) -> str:
    """One statement (a fused node: its first line); ``define`` names the outputs anew."""
    lhs = ", ".join(_decl(o, namer) if define else f"{namer(o)}: {o.type}"
                    for o in node.outputs)
    args = ", ".join(namer(v) for v in node.inputs)
    shown = [(k, v) for k, v in node.attrs if not is_default_attr(node.op.attrs, k, v)]
    attrs = " {" + ", ".join(f"{k}={fmt_literal(v)}" for k, v in shown) + "}" if shown else ""
    if node.body is not None:
        name = node.name if node.name is not None else node.body.name
        return f"{lhs} = {_word(name)}({args}){attrs} fused{_signature(node.body, Namer())} {{"
    name = f" as {_word(node.name)}" if node.name is not None else ""
    return f"{lhs} = {node.op.name}({args}){attrs}{name}"


def _meta_lines(g: Graph, indent: str) -> list[str]:
    out = []
    for k, v in g.meta.items():
        if isinstance(k, str) and _is_literal(v):
            key = k if _META_KEY.match(k) else repr(k)
            out.append(f"{indent}# meta: {key}={fmt_literal(v)}")
    return out


def _print_body(g: Graph, namer: Namer, indent: str, lines: list[str], meta: bool) -> None:
    for node in g.nodes:
        if node.body is None:
            lines.append(indent + format_node(node, namer) + _loc(node.loc))
            continue
        head = format_node(node, namer)  # names the body's inputs in the body's own scope
        lines.append(indent + head + _loc(node.loc))
        inner = Namer()
        for v in node.body.inputs + node.body.params:
            inner.define(v)
        _print_body(node.body, inner, indent + "  ", lines, meta)
        lines.append(indent + "}")
        if meta:
            lines.extend(_meta_lines(node.body, indent))
    ret = ", ".join(namer(v) for v in g.outputs)
    lines.append(f"{indent}return {ret}".rstrip())


def print_graph(graph: Graph, *, meta: bool = True) -> str:
    """The text form of ``graph`` (``meta=False`` leaves out the ``# meta:`` lines)."""
    namer = Namer()
    lines = [f"graph {_word(graph.name)}{_signature(graph, namer)} {{"]
    _print_body(graph, namer, "  ", lines, meta)
    lines.append("}")
    if meta:
        lines.extend(_meta_lines(graph, ""))
    return "\n".join(lines) + "\n"


def literal_value(node: ast.AST):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in ("nan", "inf"):
        return float(node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = literal_value(node.operand)
        if isinstance(v, int | float) and not isinstance(v, bool):
            return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.Tuple | ast.List):
        items = [literal_value(x) for x in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.Dict):
        return {literal_value(k): literal_value(v) for k, v in zip(node.keys, node.values)}
    raise ValueError(f"not a literal: {ast.unparse(node)}")


def parse_literal(text: str):
    """Read a value written by :func:`fmt_literal` (Python literals plus nan and inf)."""
    return literal_value(ast.parse(text.strip(), mode="eval").body)


def parse_graph(text: str) -> Graph:
    """The graph written in ``text`` (the format of :func:`print_graph`; op aliases work)."""
    from .parser import Parser
    return Parser(text).graph()
