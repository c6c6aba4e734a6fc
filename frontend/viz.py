"""``ember.viz`` (MXNet's ``mx.viz``): layer tables, network drawings, and Graphviz output.

- :func:`print_summary` prints the table of MXNet 1.9.1's ``mx.viz.print_summary``
  (python/mxnet/visualization.py) for a Symbol, with its parameter counting rules, its
  column layout and its quirks, so the numbers match MXNet's for the same file.
- :func:`plot_network` draws a Symbol the way MXNet does (one box per op, weights hidden,
  MXNet's colours) and returns a :class:`Digraph` holding DOT text; the PyPI ``graphviz``
  package MXNet used is not needed: images come from Graphviz's ``dot`` program.
- :func:`render` writes DOT text as ``.dot``, ``.svg``, ``.png``, ``.pdf`` or a
  self-contained ``.html`` page with pan, zoom, search and tooltips (the ``ember viz``
  command uses it with :func:`graph_dot`; both live in ``ember._viz_draw``).
- :func:`symbol_to_graph` turns a Symbol into an IR graph, given input shapes, so the pass
  pipeline can run on files made by MXNet.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from ember import _viz_draw
from ember.base import MXNetError
from ember.ir.graph import Graph, Value, topo_nodes
from ember.ir.types import TensorType

# the drawing half, as ember.viz.* (see ember._viz_draw)
FORMATS, dot_program, run_dot = _viz_draw.FORMATS, _viz_draw.dot_program, _viz_draw.run_dot
render, html_page, graph_dot = _viz_draw.render, _viz_draw.html_page, _viz_draw.graph_dot
_WEIGHT_SUFFIXES = ("_weight", "_bias", "_beta", "_gamma", "_moving_var", "_moving_mean",
                    "_running_var", "_running_mean")


# ---- print_summary ------------------------------------------------------------------------
def _digits(text: str) -> list[int]:
    return [int(d) for d in re.findall(r"\d+", text)]


def _layer_params(node: dict, pre_filter: int, out_key: str, shapes: dict | None) -> int:
    """MXNet's parameter count of one layer (Convolution, FullyConnected, BatchNorm,
    Embedding; 0 for every other op). ``pre_filter`` is the sum of the inputs' first
    non-batch dims, which is what MXNet multiplies by (so a Dense on 4-D input without
    Flatten counts channels only, as MXNet does)."""
    op, attrs = node["op"], node.get("attrs", {})
    no_bias = attrs.get("no_bias") == "True"
    if op == "Convolution":
        n = pre_filter * int(attrs["num_filter"]) // int(attrs.get("num_group", "1"))
        for k in _digits(attrs["kernel"]):
            n *= k
        return n if no_bias else n + int(attrs["num_filter"])
    if op == "FullyConnected":
        return (pre_filter + (0 if no_bias else 1)) * int(attrs["num_hidden"])
    if op == "BatchNorm":
        return 2 * int(shapes[out_key][1]) if shapes is not None else 0  # gamma and beta
    if op == "Embedding":
        return int(attrs["input_dim"]) * int(attrs["output_dim"])
    return 0


def summary_text(symbol, shape: dict | None = None, line_length: int = 120,
                 positions: Sequence[float] = (.44, .64, .74, 1.),
                 counts: dict[str, int] | None = None) -> str:
    """The text :func:`print_summary` prints. ``counts`` (op node name -> parameter count)
    replaces MXNet's counting rules, which guess from the inputs' first dims (``ember
    summary`` passes the exact sizes of each layer's weights)."""
    from ember.symbol import Symbol
    if not isinstance(symbol, Symbol):
        raise TypeError("symbol must be Symbol")
    shapes = None
    if shape is not None:
        internals = symbol.get_internals()
        _, out_shapes, _ = internals.infer_shape(**shape)
        if out_shapes is None:
            raise ValueError("Input shape is incomplete")
        shapes = dict(zip(internals.list_outputs(), out_shapes))
    conf = json.loads(symbol.tojson())
    nodes = conf["nodes"]
    # MXNet takes the *first head entry* [node, index, version] as a set of node ids: node 0
    # (the data) counts as a head, so it shows as a previous layer. Kept for equal output.
    heads = set(conf["heads"][0])
    if positions[-1] <= 1:
        positions = [int(line_length * p) for p in positions]
    lines: list[str] = []

    def row(fields):
        line = ""
        for field, end in zip(fields, positions):
            line = (line + str(field))[:end]
            line += " " * (end - len(line))
        lines.append(line)

    def key_of(node: dict) -> str:
        return node["name"] + ("_output" if node["op"] != "null" else "")

    lines.append("_" * line_length)
    row(["Layer (type)", "Output Shape", "Param #", "Previous Layer"])
    lines.append("=" * line_length)
    total = 0
    for i, node in enumerate(nodes):
        if node["op"] == "null" and i > 0:
            continue
        previous, pre_filter = [], 0
        if node["op"] != "null":
            for item in node["inputs"]:
                src = nodes[item[0]]
                if src["op"] != "null" or item[0] in heads:
                    previous.append(src["name"])
                    if shapes is not None and key_of(src) in shapes:
                        pre_filter += int(shapes[key_of(src)][1:][0])
        out_shape = []
        if shapes is not None and key_of(node) in shapes:
            out_shape = shapes[key_of(node)][1:]
        n = (_layer_params(node, pre_filter, key_of(node), shapes) if counts is None
             else counts.get(node["name"], 0) if node["op"] != "null" else 0)
        row([f"{node['name']}({node['op']})", "x".join(str(d) for d in out_shape), n,
             previous[0] if previous else ""])
        for name in previous[1:]:
            row(["", "", "", name])
        total += n
        lines.append(("=" if i == len(nodes) - 1 else "_") * line_length)
    lines.append(f"Total params: {total}")
    lines.append("_" * line_length)
    return "\n".join(lines) + "\n"


def print_summary(symbol, shape: dict | None = None, line_length: int = 120,
                  positions: Sequence[float] = (.44, .64, .74, 1.),
                  counts: dict[str, int] | None = None) -> None:
    """Print each layer of ``symbol`` with its output shape (given input ``shape``, a dict
    name -> tuple), parameter count and previous layer, then the total (MXNet's table;
    ``counts``: see :func:`summary_text`)."""
    print(summary_text(symbol, shape, line_length, positions, counts), end="")


# ---- plot_network ---------------------------------------------------------------------------
def _q(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class Digraph:
    """DOT text with the parts of ``graphviz.Digraph`` MXNet users call: ``source``,
    ``save``, ``pipe``, ``render`` (images through the ``dot`` program)."""

    def __init__(self, name: str, source: str, format: str = "pdf"):
        self.name, self.source, self.format = name, source, format

    def __str__(self) -> str:
        return self.source

    def save(self, filename: str | None = None) -> str:
        """Write the DOT text (default ``<name>.gv``); returns the path."""
        filename = filename or f"{self.name}.gv"
        Path(filename).write_text(self.source)
        return filename

    def pipe(self, format: str | None = None) -> bytes:
        """The drawing in ``format`` (default: this graph's), as bytes."""
        return run_dot(self.source, format or self.format)

    def render(self, filename: str | None = None, directory: str | None = None,
               view: bool = False, cleanup: bool = False, format: str | None = None) -> str:
        """Save the DOT text and draw it to ``<filename>.<format>``; returns that path."""
        path = self.save(os.path.join(directory or "", filename or f"{self.name}.gv"))
        out = f"{path}.{format or self.format}"
        Path(out).write_bytes(self.pipe(format))
        if cleanup:
            os.remove(path)
        return out

    def _repr_svg_(self) -> str:  # Jupyter
        return self.pipe("svg").decode()


def plot_network(symbol, title: str = "plot", save_format: str = "pdf", shape=None,
                 dtype=None, node_attrs: dict | None = None, hide_weights: bool = True):
    """MXNet's drawing of ``symbol``: a :class:`Digraph` (DOT text; ``render()`` it)."""
    from ember.symbol import Symbol
    if not isinstance(symbol, Symbol):
        raise TypeError("symbol must be a Symbol")
    internals = symbol.get_internals()
    out_shapes = out_types = None
    if shape is not None:
        _, sh, _ = internals.infer_shape(**shape)
        if sh is None:
            raise ValueError("Input shape is incomplete")
        out_shapes = dict(zip(internals.list_outputs(), sh))
    if dtype is not None:
        _, ty, _ = internals.infer_type(**dtype)
        if ty is None:
            raise ValueError("Input type is incomplete")
        out_types = dict(zip(internals.list_outputs(), ty))
    nodes = json.loads(symbol.tojson())["nodes"]
    base = {"shape": "box", "fixedsize": "true", "width": "1.3", "height": "0.8034",
            "style": "filled", **(node_attrs or {})}
    colours = ("#8dd3c7", "#fb8072", "#ffffb3", "#bebada", "#80b1d3", "#fdb462", "#b3de69",
               "#fccde5")
    lines = [f"digraph {_q(title)} {{"]
    hidden = set()
    for node in nodes:
        op, name, attrs = node["op"], node["name"], node.get("attrs", {})
        attr, label = dict(base), name
        if op == "null":
            if name.endswith(_WEIGHT_SUFFIXES):
                if hide_weights:
                    hidden.add(name)
                continue
            attr.update(shape="oval", fillcolor=colours[0])
        else:
            label, colour = _mx_label(op, attrs, name)
            attr["fillcolor"] = colours[colour]
        body = ", ".join(f"{k}={_q(v)}" for k, v in attr.items())
        lines.append(f"  {_q(name)} [label={_q(label)}, {body}];")
    for node in nodes:
        if node["op"] == "null":
            continue
        for item in node["inputs"]:
            src = nodes[item[0]]
            if src["name"] in hidden:
                continue
            key = src["name"] if src["op"] == "null" else src["name"] + "_output"
            label = ""
            if out_shapes is not None and key in out_shapes:
                label = "x".join(str(d) for d in out_shapes[key][1:])
            if out_types is not None and key in out_types:
                label += f"({out_types[key].__name__})"
            # MXNet draws the edge from the consumer back to its input
            lines.append(f"  {_q(node['name'])} -> {_q(src['name'])} [dir=back, "
                         f"arrowtail=open, label={_q(label)}];")
    lines.append("}")
    return Digraph(title, "\n".join(lines) + "\n", save_format)


def _mx_label(op: str, attrs: dict, name: str) -> tuple[str, int]:
    """(label, colour index) of an op node, as MXNet's plot_network writes them."""
    def xs(key, default):
        return "x".join(str(d) for d in _digits(attrs[key])) if key in attrs else default
    if op == "Convolution":
        return f"Convolution\n{xs('kernel', '')}/{xs('stride', '1')}, {attrs['num_filter']}", 1
    if op == "FullyConnected":
        return f"FullyConnected\n{attrs['num_hidden']}", 1
    if op == "BatchNorm":
        return name, 3
    if op in ("Activation", "LeakyReLU"):
        return f"{op}\n{attrs.get('act_type', 'Leaky')}", 2
    if op == "Pooling":
        return f"Pooling\n{attrs.get('pool_type', 'max')}, {xs('kernel', '[]')}/" \
               f"{xs('stride', '1')}", 4
    if op in ("Concat", "Flatten", "Reshape"):
        return name, 5
    if op == "Softmax":
        return name, 6
    return name, 7


# ---- Symbol -> IR graph ---------------------------------------------------------------------
def data_names(symbol) -> list[str]:
    """The arguments of ``symbol`` that are data rather than weights: no declared shape and
    no weight-like name (MXNet's ``plot_network`` rule), in argument order."""
    from ember.symbol import nodes as _n
    names = []
    for v in _n.variables(symbol._value_list())[1]:
        name = _n.node_name(v)
        if "__shape__" not in _n.user_attrs(v) and not name.endswith(_WEIGHT_SUFFIXES):
            names.append(name)
    return names


def symbol_to_graph(symbol, shapes: dict | None = None, name: str = "main") -> Graph:
    """An IR graph computing ``symbol``: the variables named in ``shapes`` (name -> shape;
    default: :func:`data_names`, shapes unknown) are its inputs, every other variable a
    parameter. Types are as declared; run ``infer_shapes`` to complete them."""
    from ember.symbol import nodes as _n
    heads = symbol._value_list()
    wanted = dict(shapes) if shapes is not None else {n: None for n in data_names(symbol)}
    all_vars = _n.variables(heads)[0]
    known = {_n.node_name(v) for v in all_vars}
    unknown = sorted(set(wanted) - known)
    if unknown:
        raise MXNetError(f"the symbol has no input {', '.join(unknown)}; its variables are "
                         f"{', '.join(sorted(known))}")
    subst, inputs = {}, {}
    for v in all_vars:
        vname = _n.node_name(v)
        if vname in wanted:
            shp = wanted[vname]
            t = v.type if shp is None else TensorType(tuple(shp), v.type.dtype)
            subst[id(v)] = inputs[vname] = Value(t, name_hint=vname)
    outs = _n.copy_graph(heads, subst)
    nodes = topo_nodes(outs)
    seen, params = set(), []
    for v in [v for n in nodes for v in n.inputs]:
        if v.producer is None and id(v) not in seen and all(v is not i for i in inputs.values()):
            seen.add(id(v))
            if v.name_hint is None:
                v.name_hint = _n.node_name(v)
            params.append(v)
    return Graph(name, [inputs[n] for n in wanted], params, nodes, outs)
