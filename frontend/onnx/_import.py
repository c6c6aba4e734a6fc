"""ONNX model -> ember Symbol and parameters (MXNet 1.9.1's ``contrib.onnx.import_model``).

Graph inputs become variables, initializers become parameters (``arg_params``, or
``aux_params`` for what the Symbol lists as auxiliary states: BatchNorm's running
statistics), and each node is converted by the function registered for its ``op_type`` in
``_import_ops``. Initializers and ``Constant`` outputs that an op reads as settings (Reshape's
shape, Clip's bounds, Slice's starts...) are read as arrays and never become parameters.
"""
from __future__ import annotations

import numpy as np

from ember.base import MXNetError

CONVERTERS: dict[str, object] = {}


def converts(*op_types: str):
    """Register an importer for the ONNX ``op_types``."""
    def deco(fn):
        for op in op_types:
            CONVERTERS[op] = fn
        return fn
    return deco


class Importer:
    """State of one import: tensors by ONNX name, constants, created parameters."""

    def __init__(self, onnx, model, path: str):
        self.onnx, self.path = onnx, path
        self.opset = max([o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
                         or [1])
        self.consts: dict[str, np.ndarray] = {
            t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
        self.env: dict = {}
        self.params: dict[str, np.ndarray] = {}
        self.shape_of: dict = {}   # output of a Shape node -> the Symbol it measured
        self.ranks: dict[str, int | None] = {}   # ranks known without shape inference
        self.node = None

    def fail(self, why: str) -> MXNetError:
        n = self.node
        return MXNetError(f"ONNX import of {self.path!r}: cannot convert {n.op_type} "
                          f"(node {n.name or n.output[0]!r}): {why}")

    @property
    def name(self) -> str | None:
        """The node's name for the Symbol op (None: ember names it)."""
        return self.node.name.strip() or None

    def sym(self, i: int):
        """Input ``i`` of the node as a Symbol (a parameter variable for an initializer)."""
        name = self.node.input[i] if i < len(self.node.input) else ""
        if not name:
            raise self.fail(f"input {i} is missing")
        s = self.tensor(name)
        if s is None:
            raise self.fail(f"input {name!r} is not produced by any node")
        return s

    def tensor(self, name: str):
        """The Symbol of tensor ``name``, a parameter variable for a constant; None if
        nothing produced it."""
        from ember import symbol as S
        if name not in self.env and name in self.consts:
            arr = self.consts[name]
            self.params[name] = arr
            self.env[name] = S.var(name, shape=arr.shape, dtype=arr.dtype)
        return self.env.get(name)

    def rank(self, name: str) -> int | None:
        """The rank of tensor ``name`` when known here (constants, their transposes)."""
        if name in self.consts:
            return self.consts[name].ndim
        return self.ranks.get(name)

    def has(self, i: int) -> bool:
        return i < len(self.node.input) and bool(self.node.input[i])

    def const(self, i: int, what: str) -> np.ndarray:
        """Input ``i`` as an array: it must be an initializer or a Constant's output."""
        name = self.node.input[i] if i < len(self.node.input) else ""
        if name not in self.consts:
            raise self.fail(f"its {what} (input {i}) must be a constant")
        return self.consts[name]

    def maybe_const(self, i: int):
        name = self.node.input[i] if i < len(self.node.input) else ""
        return self.consts.get(name)


def _attrs(onnx, node) -> dict:
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        elif isinstance(v, onnx.TensorProto):
            v = onnx.numpy_helper.to_array(v)
        elif isinstance(v, list):
            v = [x.decode("utf-8") if isinstance(x, bytes) else x for x in v]
        out[a.name] = v
    return out


def _load(onnx, path: str):
    try:
        return onnx.load_model(path)
    except FileNotFoundError:
        raise MXNetError(f"ONNX import: no such file {path!r}") from None
    except Exception as e:  # protobuf's DecodeError, OSError...
        raise MXNetError(f"ONNX import: cannot read {path!r} as an ONNX model: {e}") from e


def from_graph(onnx, model, path: str):
    """(sym, arg_params, aux_params) of a loaded ``onnx.ModelProto``."""
    from ember import ndarray as nd
    from ember import symbol as S

    from . import _import_ops  # noqa: F401  (registers the converters)
    ix = Importer(onnx, model, path)
    g = model.graph
    for i in g.input:
        if i.name not in ix.consts:
            ix.env[i.name] = S.var(i.name)
    for node in g.node:
        ix.node = node
        conv = CONVERTERS.get(node.op_type)
        if node.domain not in ("", "ai.onnx") or conv is None:
            raise ix.fail(f"the operator {node.domain + '.' if node.domain else ''}"
                          f"{node.op_type} is not supported")
        res = conv(ix, _attrs(onnx, node))
        if res is None:   # a constant: its outputs were stored in ix.consts
            continue
        res = res if isinstance(res, list) else [res]
        for name, s in zip(node.output, res):
            if name:
                ix.env[name] = s
    outs = []
    for o in g.output:
        s = ix.tensor(o.name)
        if s is None:
            raise MXNetError(f"ONNX import of {path!r}: output {o.name!r} is not computed")
        outs.append(s)
    sym = outs[0] if len(outs) == 1 else S.Group(outs)
    args = set(sym.list_arguments())
    aux = set(sym.list_auxiliary_states())
    arg_params = {k: nd.array(v, dtype=v.dtype) for k, v in ix.params.items() if k in args}
    aux_params = {k: nd.array(v, dtype=v.dtype) for k, v in ix.params.items() if k in aux}
    return sym, arg_params, aux_params


def import_model(onnx, path: str):
    """(sym, arg_params, aux_params) of the ONNX file ``path``."""
    return from_graph(onnx, _load(onnx, path), path)


def _dims(onnx, value_info) -> tuple:
    return tuple(d.dim_value for d in value_info.type.tensor_type.shape.dim)


def get_model_metadata(onnx, path: str) -> dict:
    """MXNet's metadata dict: inputs (not initializers) and outputs with their shapes."""
    g = _load(onnx, path).graph
    inits = {t.name for t in g.initializer}
    return {"input_tensor_data": [(i.name, _dims(onnx, i), i.type.tensor_type.elem_type)
                                  for i in g.input if i.name not in inits],
            "output_tensor_data": [(o.name, _dims(onnx, o)) for o in g.output]}


def import_to_gluon(onnx, path: str, ctx=None):
    """A ``SymbolBlock`` running the ONNX model, its parameters loaded."""
    from ember import symbol as S
    from ember.gluon import SymbolBlock
    model = _load(onnx, path)
    sym, arg_params, aux_params = from_graph(onnx, model, path)
    inits = {t.name for t in model.graph.initializer}
    data = [S.var(i.name) for i in model.graph.input if i.name not in inits]
    net = SymbolBlock(outputs=sym, inputs=data)
    params = net.collect_params()
    for name, arr in {**arg_params, **aux_params}.items():
        if name in params:
            params[name].shape = arr.shape
            params[name]._load_init(arr, ctx=ctx)
    return net
