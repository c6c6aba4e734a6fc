"""``HybridBlock.export``: MXNet's own model files, ``path-symbol.json`` and ``path-NNNN.params``.

MXNet 1.9.1 (``gluon/block.py``) exports the Symbol graph it traced when the hybridized block
first ran, with inputs named ``data`` (``data0``, ``data1``... when there are several), and a
parameter file whose keys are ``arg:<name>`` for the graph's arguments and ``aux:<name>`` for
its auxiliary states (BatchNorm's running statistics). ember does the same: it traces the
block again, in inference mode, on the input signature of its latest compiled call, so node
and parameter names are MXNet's (``dense0_fwd``, ``dense0_weight``), and each IR op is written
under its ``OpDef.mxnet_name``. An op with no MXNet equivalent cannot be written into a file
MXNet could read: every such node is named in one error.

Both files are written to temporary names in the target folder and renamed into place only
when both are complete, so a failing export leaves neither a half-written file nor a
temporary one behind (an earlier export under the same path stays as it was).
"""
from __future__ import annotations

import ast
import os
import secrets

from ember import autograd
from ember.base import MXNetError
from ember.ir.graph import Node, Value

from .cached_op import block_params_by_value, trace


class ExportError(MXNetError):
    """A block cannot be exported (not run yet, or ops MXNet does not have).

    It is also a ``RuntimeError`` (through ``MXNetError``), the class MXNet raises for an
    export before the first hybridized call.
    """


_NOT_RUN = ("Please first call block.hybridize() and then run forward with this block at "
            "least once before calling export.")


def _rebuild(key, arrays: list):
    """The call arguments described by a ``cached_op.template_key``, arrays in the slots."""
    if key == "#":
        return arrays.pop(0)
    if isinstance(key, tuple):
        kind, parts = key
        seq = [_rebuild(k, arrays) for k in parts]
        return tuple(seq) if kind == "tuple" else list(seq)
    try:
        return ast.literal_eval(key)
    except (ValueError, SyntaxError):
        raise ExportError(f"cannot export: the block was called with the argument {key}, "
                          "which cannot be rebuilt for tracing") from None


def last_call_args(block) -> tuple:
    """Arrays shaped like the block's latest compiled call (zeros), in its argument structure.

    Raises MXNet's error when the block has not been hybridized and run once.
    """
    from ember import ndarray as nd
    if not getattr(block, "_cached", None):
        raise ExportError(_NOT_RUN)
    template, signature = next(reversed(block._cached))[:2]
    arrays = [nd.zeros(shape, dtype=dtype) for shape, dtype in signature]
    return tuple(_rebuild(template, arrays))


def _input_names(n: int) -> list[str]:
    return ["data"] if n == 1 else [f"data{i}" for i in range(n)]


def export_graph(block):
    """Trace ``block`` for export: (head Values, [(Parameter, its graph Value)]).

    Inputs are renamed to MXNet's ``data``/``dataN`` and carry no shape: an exported model
    takes any batch size, as MXNet's does.
    """
    from ember.symbol import nodes as _n
    args = last_call_args(block)
    with autograd.pause(train_mode=False):
        graph, params, _ = trace(block.forward, args, block.name, block_params_by_value(block))
    for v, name in zip(graph.inputs, _input_names(len(graph.inputs))):
        v.name_hint = name
        _n._ATTRS.pop(v, None)  # the traced shape/dtype: MXNet writes no attributes here
    missing = [(n, _n.node_name(n)) for n in _n.post_order(graph.outputs)
               if isinstance(n, Node) and not n.op.mxnet_name]
    if missing:
        listed = ", ".join(f"{n.op.name} (node {name!r})" for n, name in missing)
        raise ExportError(f"cannot export {block.name}: MXNet has no operator for {listed}; "
                          "a model using them cannot be written as an MXNet symbol file")
    return graph.outputs, list(zip(params, graph.params))


def param_arrays(heads: list[Value], params) -> dict:
    """``arg:<name>`` / ``aux:<name>`` -> the parameter's data (averaged over contexts)."""
    from ember.symbol import nodes as _n
    aux = {id(v) for v in _n.variables(heads)[2]}
    out = {}
    for p, v in params:
        out[f"{'aux' if id(v) in aux else 'arg'}:{p.name}"] = p._reduce()
    return out


def _temp_name(path: str) -> str:
    folder, base = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{base}.{secrets.token_hex(6)}.tmp")


def _write_text(path: str, text: str) -> None:
    with open(path, "x", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_files(symbol_file: str, json_text: str, params_file: str, arrays: dict) -> None:
    """Write both files atomically: temporary names first, renamed once both are complete."""
    from ember import ndarray as nd
    tmp_json, tmp_params = _temp_name(symbol_file), _temp_name(params_file)
    try:
        _write_text(tmp_json, json_text)
        nd.save(tmp_params, arrays)
        os.replace(tmp_params, params_file)
        os.replace(tmp_json, symbol_file)
    except BaseException as e:
        for tmp in (tmp_json, tmp_params):
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(e, OSError):
            raise ExportError(f"cannot export to {symbol_file!r} / {params_file!r}: "
                              f"{e.strerror or e}") from e
        raise


def export(block, path: str, epoch: int = 0, remove_amp_cast: bool = True) -> tuple[str, str]:
    """Write ``path-symbol.json`` and ``path-%04d.params`` (``epoch``) for ``block``.

    Returns the two file names. ember's graphs hold no ``amp_cast`` nodes, so
    ``remove_amp_cast`` has nothing to remove; it is accepted for MXNet's signature.
    """
    from ember.symbol import Symbol
    heads, params = export_graph(block)
    sym = Symbol(heads[0]) if len(heads) == 1 else Symbol._group(heads)
    text = sym.tojson(remove_amp_cast=remove_amp_cast)
    symbol_file, params_file = f"{path}-symbol.json", f"{path}-{epoch:04d}.params"
    write_files(symbol_file, text, params_file, param_arrays(heads, params))
    return symbol_file, params_file


__all__ = ["export", "export_graph", "ExportError", "last_call_args"]
