"""Gluon's naming scopes and hook handles.

``_BlockScope`` is the ``with block.name_scope():`` stack that gives children MXNet 1.x's
prefixes (``dense0_``, ``sequential1_dense0_``); ``HookHandle`` is what
``register_forward_hook`` returns.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

from ember import name as _name

from .parameter import ParameterDict


class _BlockScope:
    """The ``with block.name_scope():`` stack that gives children their prefixes."""

    _current = threading.local()

    def __init__(self, block):
        self._block = block
        self._counter: dict[str, int] = {}
        self._old_scope = None
        self._name_scope = None

    @staticmethod
    def create(prefix, params, hint):
        """Prefix and ParameterDict for a new block of kind ``hint``."""
        current = getattr(_BlockScope._current, "value", None)
        if current is None:
            if prefix is None:
                prefix = _name.NameManager.current().get(None, hint) + "_"
            params = ParameterDict(prefix) if params is None else \
                ParameterDict(params.prefix, params)
            return prefix, params
        if prefix is None:
            count = current._counter.get(hint, 0)
            prefix = f"{hint}{count}_"
            current._counter[hint] = count + 1
        if params is None:
            parent = current._block.params
            params = ParameterDict(parent.prefix + prefix, parent._shared)
        else:
            params = ParameterDict(params.prefix, params)
        return current._block.prefix + prefix, params

    def __enter__(self):
        if self._block._empty_prefix:
            return self
        self._old_scope = getattr(_BlockScope._current, "value", None)
        _BlockScope._current.value = self
        self._name_scope = _name.Prefix(self._block.prefix)
        self._name_scope.__enter__()
        return self

    def __exit__(self, *exc):
        if self._block._empty_prefix:
            return
        self._name_scope.__exit__(*exc)
        self._name_scope = None
        _BlockScope._current.value = self._old_scope


class HookHandle:
    """Removes a registered forward hook (``handle.detach()``)."""

    def __init__(self, hooks: OrderedDict, hook):
        self._hooks = hooks
        self._id = id(hook)
        hooks[self._id] = hook

    def detach(self):
        self._hooks.pop(self._id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.detach()
