"""MXNet's JSON graph format (nnvm's ``Graph`` saver), written and read.

The layout, as MXNet 1.9.1 writes it::

    {"nodes": [{"op": "null", "name": "data", "inputs": []},
               {"op": "FullyConnected", "name": "fc1", "attrs": {"num_hidden": "10"},
                "inputs": [[0, 0, 0], [1, 0, 0], [2, 0, 0]]}, ...],
     "arg_nodes": [0, 1, 2], "node_row_ptr": [0, 1, 2, 3, 4],
     "heads": [[3, 0, 0]], "attrs": {"mxnet_version": ["int", 10901]}}

``inputs`` entries are ``[node, output index, version]`` (version 1 marks a variable an op
updates in place); ``node_row_ptr[i]`` is the first output slot of node ``i``. Ops are named
with ``OpDef.mxnet_name``; attributes are strings, and only those differing from the op's
defaults are written, as MXNet writes only what the user gave, plus what MXNet requires:
``num_args`` of variadic ops (Concat, stack, add_n) and the few parameters MXNet has no default
for. Files of MXNet 0.8 (``param`` and ``attr`` instead of ``attrs``, two-element inputs) are
read too; a damaged document is refused by :mod:`.json_check` with one MXNetError.
"""
from __future__ import annotations

import json
import re

from ember import util as _util
from ember.base import MXNetError
from ember.ir.errors import fmt_shapes
from ember.ir.graph import Node, Value, make_node
from ember.ir.ops import get_op, has_op, parse_attr
from ember.ir.opset_custom import new_uid
from ember.ir.types import TensorType

from . import json_check as _jc
from . import nodes as _n
from .compose import unknown_dims

MXNET_VERSION = 10901
# MXNet parameters that tune kernels or select libraries and change no result: dropped on
# load when an ember op does not declare them.
_IRRELEVANT = frozenset({"workspace", "cudnn_tune", "cudnn_off", "num_args", "ctx",
                         "min_calib_range", "max_calib_range"})
# attributes that are ember's own state of a node, not parameters (Custom's instance key)
_NODE_STATE = ("is_train", "_uid")
# MXNet ops with hidden outputs that ember does not materialise
_MX_OUTPUTS = {"BatchNorm": 3}
# MXNet 1.9.1's variadic ops: their ``num_args`` (key_var_num_args) must be in the file, and
# MXNet refuses a node without it ("Required parameter num_args ... is not presented")
_MX_NUM_ARGS = frozenset({
    "Concat", "concat", "Crop", "ElementWiseSum", "add_n", "UpSampling", "stack", "khatri_rao",
    "_rnn_param_concat", "_contrib_quantized_concat", "_npi_concatenate", "_npi_stack",
    "_npi_vstack", "_npi_hstack", "_npi_dstack", "_npi_column_stack", "_npi_einsum",
    "_npi_rnn_param_concat"})
# parameters MXNet 1.9.1 requires where ember's op has a default (written even when equal)
_MX_REQUIRED = {"_arange": ("start",), "_linspace": ("start",), "_full": ("value",),
                "_slice_assign": ("begin", "end"), "_slice_assign_scalar": ("begin", "end")}
_DTYPES = {0: "float32", 1: "float64", 2: "float16", 3: "uint8", 4: "int32", 5: "int8",
           6: "int64", 7: "bool", 8: "int16", 9: "uint16", 10: "uint32", 11: "uint64",
           12: "bfloat16"}


def _attr_text(v) -> str:
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, tuple) and None in v:  # an unknown dim of a shape: 0 (legacy) or -1
        unknown = -1 if _util.is_np_shape() else 0
        return str(tuple(unknown if d is None else d for d in v))
    return str(v)


def op_attr_strings(node: Node) -> dict[str, str]:
    """The node's parameters that differ from its op's defaults, and those MXNet requires
    (``num_args`` of variadic ops: the input count), as MXNet strings."""
    defaults = node.op.attrs
    required = _MX_REQUIRED.get(op_name(node), ())
    out = {k: _attr_text(v) for k, v in node.attrs
           if k not in _NODE_STATE and (k not in defaults or defaults[k] != v
                                   or type(defaults[k]) is not type(v) or k in required)}
    if op_name(node) in _MX_NUM_ARGS:
        out["num_args"] = str(len(node.inputs))
    return out


def op_name(node: Node) -> str:
    """The op's MXNet name (its canonical name when MXNet has no such op)."""
    return node.op.mxnet_name or node.op.name


def to_json(heads: list[Value]) -> str:
    """The JSON text of the graph under ``heads``."""
    items = _n.post_order(heads)
    index: dict[int, int] = {}
    nodes, arg_nodes, row_ptr = [], [], [0]
    for i, it in enumerate(items):
        index[id(it)] = i
        if isinstance(it, Value):
            entry = {"op": "null", "name": _n.node_name(it)}
            attrs = dict(_n._ATTRS.get(it, {}))
            inputs: list = []
            arg_nodes.append(i)
            n_out = 1
        else:
            mutated = set(it.op.mutated(it.attr_dict))
            entry = {"op": op_name(it), "name": _n.node_name(it)}
            attrs = {**op_attr_strings(it), **_n._ATTRS.get(it, {})}
            inputs = [[index[id(_n.item_of(v))], v.index,
                       int(k in mutated and v.producer is None)]
                      for k, v in enumerate(it.inputs)]
            n_out = max(len(it.outputs), _MX_OUTPUTS.get(entry["op"], 0))
        if attrs:
            entry["attrs"] = dict(sorted(attrs.items()))  # nnvm keeps them in a std::map
        entry["inputs"] = inputs
        nodes.append(entry)
        row_ptr.append(row_ptr[-1] + n_out)
    graph_attrs: dict = {"mxnet_version": ["int", MXNET_VERSION]}
    if _util.is_np_shape():
        graph_attrs["is_np_shape"] = ["int", 1]
    doc = {"nodes": nodes, "arg_nodes": arg_nodes, "node_row_ptr": row_ptr,
           "heads": [[index[id(_n.item_of(h))], h.index, 0] for h in heads],
           "attrs": graph_attrs}
    text = json.dumps(doc, indent=2)
    # MXNet keeps lists of numbers and strings on one line
    return _FLAT.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
                     text)


_FLAT = re.compile(r"\[\s+([^\[\]{}]*?)\s+\]")


def _user_key(k: str) -> bool:
    return k.startswith("__") and k.endswith("__")


def _check(doc: dict, src: str) -> None:
    """Every unknown op and unsupported attribute of the file, in one error."""
    problems = []
    for n in doc["nodes"]:
        op = n["op"]
        if op == "null":
            continue
        if not has_op(op):
            problems.append(f"unknown operator {op!r} (node {n['name']!r})")
            continue
        if get_op(op).open_attrs:  # Custom: any keyword argument goes to the user's prop
            continue
        known = get_op(op).attrs
        for k in n.get("attrs", n.get("param", {})) or {}:
            if k not in known and k not in _IRRELEVANT and not _user_key(k):
                problems.append(f"operator {op!r} (node {n['name']!r}) has no "
                                f"attribute {k!r}")
    if problems:
        raise MXNetError(f"cannot load {src}: " + "; ".join(problems))


def _variable(n: dict, attrs: dict, np_shape: bool, what: str) -> Value:
    from .symbol import var
    user = dict(attrs)
    shape = parse_attr(user.pop("__shape__")) if "__shape__" in user else None
    code = user.pop("__dtype__", None)
    if shape is not None and not (isinstance(shape, tuple) and all(
            isinstance(d, int) and not isinstance(d, bool) for d in shape)):
        raise MXNetError(f"{what}: __shape__={attrs['__shape__']!r} is not a shape tuple")
    dtype = _DTYPES.get(int(code)) if code is not None and code.strip().isdigit() else None
    if code is not None and dtype is None:
        raise MXNetError(f"{what}: __dtype__={code!r} is not one of MXNet's dtype codes "
                         f"{sorted(_DTYPES)}")
    if shape is not None:
        shape = tuple(None if d < 0 or (d == 0 and not np_shape) else d for d in shape)
    v = var(n["name"], dtype=dtype)._value
    if shape is not None:
        v.type = TensorType(shape, v.type.dtype)
        _n.declare(v, shape, dtype)
    _n.user_attrs(v).update(attrs)
    return v


def load_json(json_str: str, source: str | None = None):
    """The Symbol described by MXNet JSON text (see the module docstring); a damaged or
    foreign document raises MXNetError naming ``source`` (a file name), the node and the
    fault (:mod:`.json_check`)."""
    from .symbol import Symbol
    src = _jc.where(source)
    doc = _jc.parse(json_str, src)
    _check(doc, src)
    np_shape = bool((doc.get("attrs", {}).get("is_np_shape") or [0, 0])[1])
    outs: list[list[Value]] = []
    nodes = doc["nodes"]
    for i, n in enumerate(nodes):
        what = f"{src}: node {i} ({n['name']!r}, {n['op']})"
        attrs = {k: str(v) for k, v in (n.get("attrs", n.get("param", {})) or {}).items()}
        old_user = {f"__{k}__" if not _user_key(k) else k: str(v)
                    for k, v in (n.get("attr") or {}).items()}
        if n["op"] == "null":
            outs.append([_variable(n, {**attrs, **old_user}, np_shape, what)])
            continue
        op = get_op(n["op"])
        if op.open_attrs:  # Custom: the user's arguments, as strings; a fresh instance key
            params = {k: v for k, v in attrs.items() if not _user_key(k)}
            params["_uid"] = new_uid()
        else:
            params = {k: _jc.coerce(op, k, v, what) for k, v in attrs.items() if k in op.attrs}
        user = {**{k: v for k, v in attrs.items() if _user_key(k)}, **old_user}
        inputs = [_jc.resolve(outs, e, nodes, what) for e in n["inputs"]]
        if n["op"] in _MX_NUM_ARGS and "num_args" in attrs \
                and parse_attr(attrs["num_args"]) != len(inputs):
            raise MXNetError(f"{what}: num_args={attrs['num_args']!r} but the node has "
                             f"{len(inputs)} inputs")
        if op.mode:
            params["is_train"] = False
        params = unknown_dims(op, len(inputs), params, np_shape)
        node = _make(op, inputs, params, n["name"], what)
        if user:
            _n.user_attrs(node).update(user)
        outs.append(node.outputs)
    heads = [_jc.resolve(outs, h, nodes, f"{src}: head", "head") for h in doc["heads"]]
    return Symbol(heads[0]) if len(heads) == 1 else Symbol._group(heads)


def _make(op, inputs, params, name, what):
    """``make_node``, any failure of the op's rule on these attributes an MXNetError."""
    try:
        return make_node(op, inputs, params, name=name)
    except MXNetError as e:
        raise MXNetError(f"cannot load {what}: {e}") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError,
            OverflowError) as e:
        shapes = fmt_shapes([v.type.shape for v in inputs])
        raise MXNetError(f"cannot load {what}: its attributes {params} do not fit the op "
                         f"(inputs {shapes or 'none'}): {type(e).__name__}: {e}") from e


def load(fname: str):
    """The Symbol saved in the JSON file ``fname``."""
    try:
        with open(fname, "rb") as f:
            text = f.read()
    except OSError as e:
        raise MXNetError(f"cannot read symbol file {fname!r}: {e.strerror or e}") from None
    return load_json(text, fname)


def debug_text(heads: list[Value]) -> str:
    """MXNet's ``debug_str`` listing: outputs, then variables and ops in DFS order."""
    lines = ["Symbol Outputs:"]
    lines += [f"\toutput[{i}]={_n.node_name(_n.item_of(h))}({h.index})"
              for i, h in enumerate(heads)]
    for it in _n.post_order(heads):
        if isinstance(it, Value):
            lines.append(f"Variable:{_n.node_name(it)}")
            continue
        lines += ["-" * 20, f"Op:{op_name(it)}, Name={_n.node_name(it)}", "Inputs:"]
        mutated = set(it.op.mutated(it.attr_dict))
        for k, v in enumerate(it.inputs):
            src = _n.node_name(_n.item_of(v))
            lines.append(f"\targ[{k}]={src}({v.index})" + (
                f" version={int(k in mutated)}" if v.producer is None else ""))
        attrs = op_attr_strings(it)
        if attrs:
            lines.append("Attrs:")
            lines += [f"\t{k}={v}" for k, v in attrs.items()]
    return "\n".join(lines) + "\n"
