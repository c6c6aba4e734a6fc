"""Checks of an MXNet symbol JSON document before ember builds a graph from it.

A file can be damaged, hand-edited or written by another tool; every fault becomes one
``MXNetError`` that names the file, the node (index, name, op) and what is wrong, never a
``KeyError`` from deep inside the loader. Checked: JSON syntax (with line and column), the
document's layout (``nodes``, ``heads``, ``attrs``), each node's ``op``/``name``/``inputs``,
input entries ``[node, output, version]`` that must name an earlier node (nnvm writes nodes
in topological order) and one of its outputs, and attribute values of the wrong kind: a
``kernel`` of ``"abc"`` is refused here instead of being read character by character.
"""
from __future__ import annotations

import json

from ember.base import MXNetError
from ember.ir.ops import REQUIRED, OpDef, parse_attr

# the kind of a required attribute, whose default cannot tell it
_TUPLE_KEYS = frozenset({"kernel", "shape", "reps", "pad_width", "lrs", "wds"})
_STR_KEYS = frozenset({"act_type", "mode"})
_INT_KEYS = frozenset({"num_filter", "num_hidden", "num_outputs", "depth", "input_dim",
                       "output_dim", "block_size", "N", "repeats", "num"})
_POSITIVE = frozenset({"kernel", "stride", "dilate"})  # tuple attributes of sizes >= 1
_NON_NEGATIVE = frozenset({"pad", "adj"})
_FLOAT_WORDS = frozenset({"inf", "-inf", "+inf", "nan", "infinity", "-infinity"})


def where(source: str | None) -> str:
    """How errors name the document: its file, or 'symbol JSON' for text."""
    return f"symbol file {source!r}" if source else "symbol JSON"


def parse(text, src: str) -> dict:
    """The JSON document of ``text``, with its layout checked."""
    if isinstance(text, bytes | bytearray):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MXNetError(f"{src} is not UTF-8 text: {e}") from None
    if not isinstance(text, str):
        raise MXNetError(f"{src}: expected JSON text, got {type(text).__name__}")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise MXNetError(f"{src} is not valid JSON: {e.msg} at line {e.lineno} column "
                         f"{e.colno}") from None
    except RecursionError:
        raise MXNetError(f"{src} is not a symbol file: JSON nested too deeply") from None
    _check_layout(doc, src)
    return doc


def _fail(msg: str):
    raise MXNetError(msg)


def _check_layout(doc, src: str) -> None:
    if not isinstance(doc, dict) or "nodes" not in doc or "heads" not in doc:
        _fail(f"{src} is not a symbol JSON document: 'nodes' and 'heads' are required")
    nodes = doc["nodes"]
    if not isinstance(nodes, list) or not nodes:
        _fail(f"{src}: 'nodes' must be a non-empty list, got {_show(nodes)}")
    for i, n in enumerate(nodes):
        _check_node(i, n, src)
    heads = doc["heads"]
    if not isinstance(heads, list) or not heads:
        _fail(f"{src}: 'heads' must be a non-empty list of [node, output, version], got "
              f"{_show(heads)}")
    for h in heads:
        _check_entry(h, len(nodes), f"{src}: head", "head")
    attrs = doc.get("attrs", {})
    if not isinstance(attrs, dict):
        _fail(f"{src}: graph 'attrs' must be an object, got {_show(attrs)}")
    for key in ("is_np_shape", "mxnet_version"):
        if key in attrs:
            v = attrs[key]
            if not (isinstance(v, list) and len(v) == 2 and _is_int(v[1])):
                _fail(f"{src}: graph attribute {key!r} must be [\"int\", number], got {_show(v)}")


def _check_node(i: int, n, src: str) -> None:
    if not isinstance(n, dict):
        _fail(f"{src}: node {i} must be an object, got {_show(n)}")
    op, name = n.get("op"), n.get("name")
    if not isinstance(op, str) or not op:
        _fail(f"{src}: node {i} has no 'op' string (got {_show(op)})")
    if not isinstance(name, str):
        _fail(f"{src}: node {i} ({op}) has no 'name' string (got {_show(name)})")
    what = f"{src}: node {i} ({name!r}, {op})"
    inputs = n.get("inputs")
    if not isinstance(inputs, list):
        _fail(f"{what}: 'inputs' must be a list of [node, output, version], got "
              f"{_show(inputs)}")
    if op == "null" and inputs:
        _fail(f"{what}: a variable has no inputs, got {len(inputs)}")
    for e in inputs:
        _check_entry(e, i, what, "input")
    for key in ("attrs", "param", "attr"):
        table = n.get(key)
        if table is None:
            continue
        if not isinstance(table, dict):
            _fail(f"{what}: {key!r} must be an object of strings, got {_show(table)}")
        for k, v in table.items():
            if not isinstance(v, str | int | float) or isinstance(v, bool):
                _fail(f"{what}: attribute {k!r} must be a string, got {_show(v)}")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_entry(e, limit: int, what: str, role: str) -> None:
    if not (isinstance(e, list) and len(e) in (2, 3) and all(_is_int(x) for x in e)):
        _fail(f"{what}: {role} {_show(e)} is not [node, output, version] of integers")
    if not 0 <= e[0] < limit:
        later = " (nodes refer only to earlier nodes)" if role == "input" else ""
        _fail(f"{what}: {role} {_show(e)} refers to node {e[0]}, not one of nodes 0.."
              f"{limit - 1}{later}")
    if e[1] < 0 or (len(e) == 3 and e[2] < 0):
        _fail(f"{what}: {role} {_show(e)} has a negative output index or version")


def resolve(outs: list, e: list, nodes: list, what: str, role: str = "input"):
    """The Value an input or head entry names (its node is already built)."""
    produced = outs[e[0]]
    if e[1] >= len(produced):
        src = nodes[e[0]]
        _fail(f"{what}: {role} {_show(e)} asks for output {e[1]} of node {e[0]} "
              f"({src['name']!r}, {src['op']}), which has {len(produced)}")
    return produced[e[1]]


def coerce(op: OpDef, key: str, text: str, what: str):
    """The value of attribute ``key`` of ``op`` written as ``text``, checked against the kind
    the op's default (or, for required attributes, the name) implies."""
    default = op.attrs[key]
    value = parse_attr(text)
    if value is None:  # MXNet's "unset"
        if default is REQUIRED:
            _fail(f"{what}: attribute {key} is required, got {text!r}")
        return default
    if default is REQUIRED:
        kind = ("str" if key in _STR_KEYS else "tuple" if key in _TUPLE_KEYS
                else "int" if key in _INT_KEYS else "nonstr")
    elif isinstance(default, bool):
        kind = "bool"
    elif isinstance(default, int | float):
        kind = "number"
    elif isinstance(default, tuple):
        kind = "tuple"
    elif isinstance(default, str):
        kind = "str"
    else:
        return value
    if kind == "str":
        return text if not isinstance(value, str) else value
    if isinstance(value, str):
        if kind in ("number", "nonstr") and value.strip().lower() in _FLOAT_WORDS:
            return float(value)
        _fail(f"{what}: attribute {key}={text!r} is not a "
              f"{'shape tuple' if kind == 'tuple' else kind.replace('nonstr', 'number')}")
    if kind == "bool":
        if value in (0, 1) and not isinstance(value, float):
            return bool(value)
        _fail(f"{what}: attribute {key}={text!r} is not a boolean")
    if kind == "int" and not _is_int(value):
        _fail(f"{what}: attribute {key}={text!r} is not an integer")
    if kind == "number" and isinstance(default, int):
        if not _is_int(value):
            _fail(f"{what}: attribute {key}={text!r} is not an integer")
    elif kind == "number" and not isinstance(value, int | float):
        _fail(f"{what}: attribute {key}={text!r} is not a number")
    if kind == "tuple":
        if _is_int(value):
            value = (value,)  # MXNet reads a lone number as a 1-tuple
        if not isinstance(value, tuple) or not all(
                x is None or isinstance(x, int | float) for x in value):
            _fail(f"{what}: attribute {key}={text!r} is not a shape tuple")
        low = 1 if key in _POSITIVE else 0 if key in _NON_NEGATIVE else None
        if low is not None and not all(_is_int(x) and x >= low for x in value):
            _fail(f"{what}: attribute {key}={text!r} must hold integers >= {low}")
    return value


def _show(x, limit: int = 60) -> str:
    s = json.dumps(x) if not isinstance(x, str) else repr(x)
    return s if len(s) <= limit else s[:limit - 3] + "..."
