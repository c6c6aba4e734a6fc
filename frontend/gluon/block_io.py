"""``Block.save(prefix)`` / ``Block.load(prefix)``: structure map plus parameters (MXNet 1.9).

``<prefix>-model.json`` records, for every block in creation order, its original name,
whether it was hybridized and the names its parent used for its children;
``<prefix>-model.params`` holds the parameters by structural name. ``load`` renames the
blocks of a freshly built, identical model to the saved names and loads the parameters.
"""
from __future__ import annotations

import json
import os
import tempfile

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
    path = prefix + "-model.json"
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".model-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(model, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
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
