"""``HybridBlock.export``: MXNet's own model files, ``path-symbol.json`` and ``path-NNNN.params``.

MXNet 1.9.1 (``gluon/block.py``) exports the Symbol graph it traced when the hybridized block
first ran, with inputs named ``data`` (``data0``, ``data1``... when there are several), and a
parameter file whose keys are ``arg:<name>`` for the graph's arguments and ``aux:<name>`` for
its auxiliary states (BatchNorm's running statistics). ember does the same: it traces the
block again, in inference mode, on the input signature of its latest compiled call, so node
and parameter names are MXNet's (``dense0_fwd``, ``dense0_weight``), and each IR op is written
under its ``OpDef.mxnet_name``. An op with no MXNet equivalent cannot be written into a file
MXNet could read: every such node is named in one error.

Crash safety. MXNet's two file names are fixed, so the pair cannot be replaced by one atomic
rename; a commit record makes it all-or-nothing for every reader that goes through ember:

1. both files are written (and flushed to disk) under temporary names;
2. a journal ``.NAME-symbol.json.journal`` naming the two renames is written atomically:
   from this moment the export counts as done;
3. the two renames run, then the journal is deleted.

:func:`recover`, run by the next export and by ``SymbolBlock.imports`` before they read,
finishes the renames of a journal left by a killed export. So a kill before step 2 leaves
the old pair (and temporary files, removed by the next export), a kill after it leaves the
new pair once anything of ember reads it: old or new, never a mix. (A program that reads
the files without ember, real MXNet, may see the new parameters with the old JSON after a
kill between the two renames; it then reports parameters missing or of the wrong shape
unless both models have the same parameter names and shapes.)
"""
from __future__ import annotations

import ast
import json
import os
import re

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


def _journal(symbol_file: str) -> str:
    folder, base = os.path.split(os.path.abspath(symbol_file))
    return os.path.join(folder, f".{base}.journal")


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_text(path: str, text: str) -> None:
    with open(path, "x", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _finish(journal: str, symbol_file: str) -> None:
    """Do the renames ``journal`` records (those not done yet), then delete it. Only our
    own temporary files of this export's pair, in its folder, are ever renamed."""
    folder, symbol_base = os.path.split(os.path.abspath(symbol_file))
    prefix = re.escape(symbol_base.removesuffix("-symbol.json"))
    try:
        with open(journal, encoding="utf-8") as f:
            moves = json.load(f)["moves"]
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError):
        moves = []  # never half-written (renamed into place): not ours; drop it
    for tmp, final in moves if isinstance(moves, list) else []:
        ok = isinstance(tmp, str) and isinstance(final, str) and \
            (final == symbol_base or re.fullmatch(rf"{prefix}-\d{{4}}\.params", final)) and \
            re.fullmatch(rf"\.{re.escape(final)}\.\d+-[0-9a-f]{{12}}\.tmp", tmp)
        if ok and os.path.exists(os.path.join(folder, tmp)):
            try:
                os.replace(os.path.join(folder, tmp), os.path.join(folder, final))
            except FileNotFoundError:  # another process finished it meanwhile
                pass
    _fsync_dir(folder)
    try:
        os.unlink(journal)
    except FileNotFoundError:
        pass


def recover(symbol_file: str) -> None:
    """Finish an export of ``symbol_file``'s pair that a killed process committed but did
    not complete (see the module docstring); MXNetError if that cannot be done."""
    journal = _journal(symbol_file)
    if not os.path.exists(journal):
        return
    try:
        _finish(journal, symbol_file)
    except OSError as e:
        raise ExportError(f"{symbol_file}: an interrupted export left {journal}, and "
                          f"finishing it failed ({e.strerror or e}); the files may not "
                          "belong together") from e


def write_files(symbol_file: str, json_text: str, params_file: str, arrays: dict) -> None:
    """Write both files: temporary names first, a journal, then the renames (see the module
    docstring for what a crash at any point leaves)."""
    from ember.ndarray.utils import remove_stale_temps, temp_name, write_new
    journal = _journal(symbol_file)
    recover(symbol_file)
    for f in (symbol_file, params_file, journal):
        remove_stale_temps(f)
    tmp_json, tmp_params = temp_name(symbol_file), temp_name(params_file)
    tmp_journal = temp_name(journal)
    committed = False
    try:
        _write_text(tmp_json, json_text)
        write_new(tmp_params, arrays)
        moves = [[os.path.basename(tmp_params), os.path.basename(params_file)],
                 [os.path.basename(tmp_json), os.path.basename(symbol_file)]]
        _write_text(tmp_journal, json.dumps({"moves": moves}))
        os.replace(tmp_journal, journal)
        committed = True
        _fsync_dir(os.path.dirname(os.path.abspath(symbol_file)))
        _finish(journal, symbol_file)
    except BaseException as e:
        if not committed:
            for tmp in (tmp_json, tmp_params, tmp_journal):
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        if isinstance(e, OSError):
            raise ExportError(f"cannot export to {symbol_file!r} / {params_file!r}: "
                              f"{e.strerror or e}") from e
        if isinstance(e, MXNetError) and not isinstance(e, ExportError):
            raise ExportError(f"cannot export to {symbol_file!r} / {params_file!r}: "
                              f"{e}") from e
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


__all__ = ["export", "export_graph", "ExportError", "last_call_args", "recover"]
