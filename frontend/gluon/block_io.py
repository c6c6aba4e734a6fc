"""Block files: ``save_parameters``/``load_parameters``, and ``Block.save``/``load`` (MXNet 1.9).

``<prefix>-model.json`` records, for every block in creation order, its original name,
whether it was hybridized and the names its parent used for its children;
``<prefix>-model.params`` holds the parameters by structural name. ``load`` renames the
blocks of a freshly built, identical model to the saved names and loads the parameters.
"""
from __future__ import annotations

import json
import os

from ember.base import MXNetError


def save(block, prefix: str):
    """Write ``<prefix>-model.json`` and ``<prefix>-model.params``."""
    from .block import HybridBlock
    model: dict = {}
    index = [0]

    def visit(blk, structure):
        mdl = {"orig_name": blk.name,
               "hybridized": bool(isinstance(blk, HybridBlock) and blk._active),
               "children": {}}
        structure[type(blk).__name__.lower() + str(index[0])] = mdl
        for ch_name, child in blk._children.items():
            index[0] += 1
            mdl["children"][child.name] = ch_name
            visit(child, mdl)

    visit(block, model)
    from ember.ndarray.utils import remove_stale_temps, temp_name
    path = prefix + "-model.json"
    remove_stale_temps(path)
    tmp = temp_name(path)
    try:
        with open(tmp, "x") as f:
            json.dump(model, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise MXNetError(f"cannot save model structure {path!r}: "
                             f"{e.strerror or e}") from e
        raise
    block.save_parameters(prefix + "-model.params")


def load(block, prefix: str):
    """Restore names, children keys and parameters saved by :func:`save`."""
    from .block import HybridBlock
    path = prefix + "-model.json"
    try:
        with open(path) as f:
            model = json.load(f)
    except (OSError, ValueError) as e:
        raise MXNetError(f"cannot load model structure {path!r}: {e}") from None
    index = [0]

    def visit(blk, structure):
        key = type(blk).__name__.lower() + str(index[0])
        if key not in structure:
            raise MXNetError(f"{path}: no saved block {key!r}; the model must be built in "
                             "the same order as when it was saved")
        mdl = structure[key]
        blk._name = mdl["orig_name"]
        for pname in list(blk.params.keys()):
            param = blk.params._params.pop(pname)
            blk.params._params[blk.name + "_" + pname[len(blk.params._prefix):]] = param
        for child in list(blk._children.values()):
            index[0] += 1
            visit(child, mdl)
        renamed = {mdl["children"].get(child.name, key_): child
                   for key_, child in blk._children.items()}
        blk._children.clear()
        blk._children.update(renamed)
        if isinstance(blk, HybridBlock) and mdl.get("hybridized"):
            blk.hybridize()

    visit(block, model)
    block.load_parameters(prefix + "-model.params")


def save_parameters(block, filename: str, deduplicate: bool = False):
    """Write parameters by structural name (``0.weight``) in MXNet's .params format."""
    from ember import ndarray as nd
    params = block._collect_params_with_prefix()
    if deduplicate:
        inv = {id(v): k for k, v in reversed(list(params.items()))}
        params = {k: v for k, v in params.items() if inv[id(v)] == k}
    nd.save(filename, {k: v._reduce() for k, v in params.items()})


def _check_all(params: dict, loaded: dict, filename: str, cast_dtype: bool) -> None:
    """Every array fits its parameter (rank, known dims, dtype unless cast): checked for all
    before any is assigned, so a mismatch leaves the block as it was."""
    import numpy as np
    for k, arr in loaded.items():
        p = params.get(k)
        if p is None:
            continue
        if p.shape and (len(p.shape) != len(arr.shape) or
                        any(s > 0 and s != d for s, d in zip(p.shape, arr.shape))):
            raise MXNetError(f"Failed loading Parameter '{k}' from {filename!r}: shape "
                             f"incompatible expected {p.shape} vs saved {arr.shape}; "
                             "nothing was loaded")
        if not cast_dtype and np.dtype(p.dtype) != np.dtype(arr.dtype):
            raise MXNetError(f"Failed loading Parameter '{k}' from {filename!r}: dtype "
                             f"incompatible expected {np.dtype(p.dtype).name} vs saved "
                             f"{np.dtype(arr.dtype).name}. Set cast_dtype=True to cast the "
                             "dtype of saved params; nothing was loaded")


def load_parameters(block, filename: str, ctx=None, allow_missing: bool = False,
                    ignore_extra: bool = False, cast_dtype: bool = False,
                    dtype_source: str = "current"):
    """Read parameters saved by ``save_parameters`` (or by MXNet's). Names, shapes and dtypes
    are all checked before any parameter is assigned."""
    from ember import ndarray as nd
    loaded = nd.load(filename)
    if isinstance(loaded, list):
        raise MXNetError(f"{filename}: holds an unnamed list of arrays, not parameters")
    params = block._collect_params_with_prefix()
    if not loaded and not params:
        return
    if not any("." in k for k in loaded):  # MXNet's full names (``dense0_weight``)
        pdict = block.collect_params()
        full = {block.prefix + (k[4:] if k.startswith(("arg:", "aux:")) else k): v
                for k, v in loaded.items()}
        extra = [k[len(block.prefix):] for k in full if k not in pdict.keys()]
        if extra and not ignore_extra:
            raise MXNetError(f"Parameter '{extra[0]}' loaded from file: {filename} is not "
                             f"present in ParameterDict, choices are: "
                             f"{', '.join(pdict.keys())}. Set ignore_extra to True to "
                             "ignore.")
        _check_all(dict(pdict.items()), full, filename, cast_dtype)
        pdict.load_dict(loaded, ctx, allow_missing, ignore_extra, block.prefix, filename,
                        cast_dtype=cast_dtype, dtype_source=dtype_source)
        return
    if not allow_missing:
        have = {}
        for k, v in params.items():
            have.setdefault(id(v), []).append(k)
        for k, v in params.items():
            if not any(p in loaded for p in have[id(v)]):
                raise MXNetError(f"Parameter '{k}' is missing in file '{filename}', which "
                                 f"contains parameters: {', '.join(sorted(loaded))}. Set "
                                 "allow_missing=True to ignore missing parameters.")
    extra = [k for k in loaded if k not in params]
    if extra and not ignore_extra:
        raise MXNetError(f"Parameter '{extra[0]}' loaded from file '{filename}' is not "
                         f"present in ParameterDict, which contains parameters "
                         f"{', '.join(sorted(params))}. Set ignore_extra=True to ignore.")
    _check_all(params, loaded, filename, cast_dtype)
    for k, v in loaded.items():
        if k in params:
            params[k]._load_init(v, ctx, cast_dtype=cast_dtype, dtype_source=dtype_source)
