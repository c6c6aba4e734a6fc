"""``mx.onnx``: ONNX export and import, as MXNet 1.9.1's ``mxnet.onnx`` and
``mxnet.contrib.onnx`` (also reachable as ``mx.contrib.onnx``).

- :func:`export_model` (MXNet's signature): a Symbol (or ``-symbol.json``) and its parameters
  (a dict, ``[arg_params, aux_params]`` or a ``.params`` file) -> an ``.onnx`` file;
- :func:`export_block`: a (hybridizable) Gluon block and example inputs or input shapes ->
  an ``.onnx`` file whose batch dimension is dynamic (``'batch'``) by default;
- :func:`import_model` -> ``(sym, arg_params, aux_params)``, :func:`get_model_metadata`,
  :func:`import_to_gluon` -> a ``SymbolBlock``.

Models are built from ember's IR with the ``onnx`` package's helper API and checked with
``onnx.checker``; the default opset is 13 (``opset_version`` may go up to what the installed
``onnx`` knows). The ``onnx`` package is optional: ``pip install 'ember[onnx]'``.
"""
from __future__ import annotations

import sys as _sys

import numpy as np

from ember.base import MXNetError

from ._export import DEFAULT_OPSET, MIN_OPSET

__all__ = ["export_model", "export_block", "import_model", "get_model_metadata",
           "import_to_gluon", "get_operator_support"]


def _onnx():
    """The ``onnx`` package with ember's converters registered, or a clear MXNetError."""
    try:
        import onnx
        import onnx.checker  # noqa: F401
        import onnx.helper  # noqa: F401
        import onnx.numpy_helper  # noqa: F401
    except ImportError as e:
        raise MXNetError("ONNX support needs the onnx package: pip install 'ember[onnx]' "
                         f"({e})") from None
    from . import _export_nn, _export_tensor  # noqa: F401  (registers the converters)
    return onnx


def _opset(onnx, opset_version) -> int:
    top = onnx.defs.onnx_opset_version()
    v = DEFAULT_OPSET if opset_version is None else int(opset_version)
    if not MIN_OPSET <= v <= top:
        raise MXNetError(f"ONNX export: opset_version {v} is not supported: ember writes "
                         f"opsets {MIN_OPSET} to {top} (the newest the installed onnx knows)")
    return v


def get_operator_support(opset_version: int | None = None) -> list[str]:
    """The MXNet operators :func:`export_model` converts (sorted names)."""
    from ._export import get_operator_support as ops
    _onnx()
    return ops(opset_version)


def _load_params(params) -> dict[str, np.ndarray]:
    from ember import ndarray as nd
    if isinstance(params, str):
        params = nd.load(params)
        if not isinstance(params, dict):
            raise MXNetError("ONNX export: the .params file holds a list, not named arrays")
    elif isinstance(params, list | tuple) and len(params) == 2:
        params = {**params[0], **params[1]}
    if not isinstance(params, dict):
        raise MXNetError("ONNX export: params must be a dict, [arg_params, aux_params] or a "
                         f".params file name, not {type(params).__name__}")
    out = {}
    for k, v in params.items():
        name = k.split(":", 1)[1] if k.startswith(("arg:", "aux:")) else k
        out[name] = v.asnumpy() if hasattr(v, "asnumpy") else np.asarray(v)
    return out


def _write(onnx, model, path: str, run_shape_inference: bool) -> str:
    if run_shape_inference:
        try:
            model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        except Exception:  # MXNet keeps the model as it was when inference fails
            pass
    try:
        onnx.save_model(model, path)
    except OSError as e:
        raise MXNetError(f"ONNX export: cannot write {path!r}: {e.strerror or e}") from e
    return path


def export_model(sym, params, in_shapes=None, in_types=np.float32,
                 onnx_file_path: str = "model.onnx", verbose: bool = False,
                 dynamic: bool = False, dynamic_input_shapes=None,
                 run_shape_inference: bool = False, input_type=None, input_shape=None,
                 opset_version: int | None = None) -> str:
    """Write the model ``sym`` with ``params`` to ``onnx_file_path`` (MXNet 1.9.1's API).

    ``sym``: a Symbol or the path of a ``-symbol.json``; ``params``: a dict name -> array,
    ``[arg_params, aux_params]`` or a ``.params`` path. ``in_shapes``/``in_types`` describe
    the data inputs (the arguments not in ``params``), in the Symbol's argument order.
    ``dynamic=True`` declares every input and output dim unknown, or the input dims given by
    ``dynamic_input_shapes`` (None or a name for a dynamic dim). ``input_shape`` and
    ``input_type`` are the old names of ``in_shapes``/``in_types``. ``opset_version``
    (ember's addition) defaults to 13. Returns the file path.
    """
    from ember import symbol as _sym
    from ember.ir.types import TensorType
    from ember.symbol.nodes import variables

    from ._export import build_model
    onnx = _onnx()
    in_types = input_type if input_type is not None else in_types
    in_shapes = input_shape if input_shape is not None else in_shapes
    if isinstance(sym, str):
        sym = _sym.load(sym)
    if not isinstance(sym, _sym.Symbol):
        raise MXNetError("ONNX export: sym must be a Symbol or a -symbol.json path")
    params = _load_params(params)
    heads = sym._value_list()
    internals = sym.get_internals()
    label = f"{internals[len(internals) - 1].name}_label"  # MXNet skips a loss's label
    data = [v for v in variables(heads)[1] if v.name_hint not in params
            and v.name_hint != label]
    if in_shapes is None or len(in_shapes) != len(data):
        raise MXNetError(f"ONNX export: in_shapes must give one shape per data input "
                         f"{[v.name_hint for v in data]}, got {in_shapes!r}")
    if not isinstance(in_types, list | tuple):
        in_types = [in_types] * len(in_shapes)
    if len(in_types) != len(in_shapes):
        raise MXNetError("ONNX export: the lengths of in_types and in_shapes must be equal")
    types = [TensorType(tuple(int(d) for d in s), str(np.dtype(t)))
             for s, t in zip(in_shapes, in_types)]
    if dynamic:
        declared = [[None] * len(s) for s in in_shapes] if dynamic_input_shapes is None \
            else [list(s) for s in dynamic_input_shapes]
        if len(declared) != len(in_shapes) or any(len(a) != len(b) for a, b in
                                                   zip(declared, in_shapes)):
            raise MXNetError("ONNX export: dynamic_input_shapes must match in_shapes in "
                             "length and in each shape's rank")
    elif dynamic_input_shapes is not None:
        raise MXNetError("ONNX export: dynamic_input_shapes is given; set dynamic=True to "
                         "use dynamic input shapes")
    else:
        declared = [list(t.shape) for t in types]
    out_dims = (lambda v, ctx: [None] * len(v.type.shape)) if dynamic else \
        (lambda v, ctx: list(v.type.shape))
    model = build_model(onnx, heads, data, types, params, declared, out_dims,
                        _opset(onnx, opset_version), verbose)
    return _write(onnx, model, onnx_file_path, run_shape_inference)


def export_block(block, inputs, onnx_file_path: str = "model.onnx", *,
                 dynamic_batch: bool = True, opset_version: int | None = None,
                 verbose: bool = False, run_shape_inference: bool = False) -> str:
    """Write a Gluon ``block`` (a HybridBlock) to ``onnx_file_path``.

    ``inputs``: an example array (NDArray or NumPy), an input shape tuple, or a list of
    either for several inputs; they are traced in inference mode (inputs named ``data``,
    ``data0``, ``data1``... as ``HybridBlock.export`` names them). With ``dynamic_batch``
    the first dim of every input and output is the symbolic ``'batch'``. Returns the path.
    """
    from ember import autograd
    from ember import ndarray as nd
    from ember.gluon.cached_op import block_params_by_value, trace
    from ember.ir.types import TensorType

    from ._export import build_model
    onnx = _onnx()
    items = inputs if isinstance(inputs, list) else [inputs]
    if items and all(isinstance(d, int | np.integer) for d in items):
        items = [tuple(items)]   # one shape given as a list
    args = []
    for x in items:
        if isinstance(x, tuple):
            args.append(nd.zeros(x))
        else:
            args.append(x if isinstance(x, nd.NDArray) else nd.array(np.asarray(x),
                                                                      dtype=np.asarray(x).dtype))
    if not hasattr(block, "hybrid_forward") and not hasattr(block, "hybridize"):
        raise MXNetError(f"ONNX export: {type(block).__name__} is not a Gluon block")
    with autograd.pause(train_mode=False):
        graph, params, _ = trace(block.forward, tuple(args), block.name,
                                 block_params_by_value(block))
    for v, name in zip(graph.inputs, ["data"] if len(args) == 1 else
                       [f"data{i}" for i in range(len(args))]):
        v.name_hint = name
    arrays = {}
    for p, v in zip(params, graph.params):
        v.name_hint = p.name
        arrays[p.name] = p._reduce().asnumpy()
    types = [TensorType(tuple(a.shape), np.dtype(a.dtype).name) for a in args]
    declared = [["batch" if dynamic_batch and i == 0 else d for i, d in enumerate(t.shape)]
                for t in types]
    batch = {t.shape[0] for t in types if t.shape}

    def out_dims(v, ctx):
        dyn = ctx.dyn(v)
        return ["batch" if d and i == 0 and n in batch else (None if d else n)
                for i, (n, d) in enumerate(zip(v.type.shape, dyn))]
    model = build_model(onnx, graph.outputs, graph.inputs, types, arrays, declared, out_dims,
                        _opset(onnx, opset_version), verbose,
                        graph_name=block.name or "ember_block")
    return _write(onnx, model, onnx_file_path, run_shape_inference)


def import_model(model_file: str):
    """Read an ONNX file into ``(sym, arg_params, aux_params)`` (MXNet's
    ``mx.contrib.onnx.import_model``)."""
    from ._import import import_model as imp
    return imp(_onnx(), model_file)


def get_model_metadata(model_file: str) -> dict:
    """``{'input_tensor_data': [(name, shape, elem_type)], 'output_tensor_data':
    [(name, shape)]}`` of an ONNX file (dynamic dims read 0, as in MXNet)."""
    from ._import import get_model_metadata as meta
    return meta(_onnx(), model_file)


def import_to_gluon(model_file: str, ctx=None):
    """An ONNX file as a ``gluon.nn.SymbolBlock`` with its parameters loaded."""
    from ._import import import_to_gluon as imp
    return imp(_onnx(), model_file, ctx)


def _alias_contrib() -> None:
    """``mx.contrib.onnx`` is this module, as in MXNet 1.x."""
    from ember import contrib
    contrib.onnx = _sys.modules[__name__]
    _sys.modules[contrib.__name__ + ".onnx"] = _sys.modules[__name__]


_alias_contrib()
