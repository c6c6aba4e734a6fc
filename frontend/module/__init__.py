"""``ember.module`` (``mx.mod``): MXNet's symbolic training API, ``Module`` over a Symbol.

``Module`` binds a Symbol to an ``Executor`` for the shapes a ``DataIter`` provides, keeps
its parameters, runs the optimizer, and trains with ``fit`` / evaluates with ``score`` and
``predict``. ``save_checkpoint``/``load_checkpoint`` read and write MXNet's checkpoint files
(``prefix-symbol.json`` and ``prefix-%04d.params``).
"""
from .base_module import BaseModule, BatchEndParam
from .checkpoint import load_checkpoint, load_params, save_checkpoint
from .module import Module

__all__ = ["BaseModule", "BatchEndParam", "Module", "load_checkpoint", "load_params",
           "save_checkpoint"]
