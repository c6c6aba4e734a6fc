"""``Symbol``: a traced value (an IR Value) with NDArray's operator and method surface.

``hybrid_forward(F, x, ...)`` runs with ``F = ember.sym`` when a block is traced; each op
call becomes an IR node whose shape rule runs at once (``ir.graph.make_node``), so lazy
parameters learn their shapes during the trace. A Symbol can also be built by hand
(``sym.var('x')``) and composed, as in MXNet's symbolic API. The operator surface itself is
``ember.ir.emit.Sym``'s, shared with the autodiff pass.
"""
from __future__ import annotations

import numpy as np

from ember import autograd as _ag
from ember.ir import TensorType
from ember.ir import emit as _emit
from ember.ir.graph import Value


class Symbol(_emit.Sym):
    """A symbolic tensor: the output ``index`` of an IR node (or a graph input)."""

    __slots__ = ()

    @property
    def name(self) -> str | None:
        v = self._value
        if v.producer is None:
            return v.name_hint
        base = v.producer.name or v.producer.op.name
        n_out = len(v.producer.outputs)
        return base if n_out == 1 and v.name_hint is None else f"{base}_output{v.index}"

    def __repr__(self) -> str:
        return f"<Symbol {self.name}: {self._value.type}>"

    def __iter__(self):
        raise TypeError("a Symbol of one output is not iterable")

    def __len__(self):
        raise TypeError("len() of a Symbol is unknown while tracing; use .shape")


def var(name: str, shape=None, dtype=None, **kwargs) -> Symbol:
    """A graph input named ``name`` (shape entries 0 or None are unknown)."""
    shp = None if shape is None else tuple(None if d in (0, None) else int(d) for d in shape)
    dt = "float32" if dtype is None else np.dtype(dtype).name
    return Symbol(Value(TensorType(shp, dt), name_hint=name))


Variable = var


def apply(op, inputs, attrs: dict, name: str | None = None):
    """Emit ``op`` on Symbols (training mode from autograd); a Symbol or a list."""
    if op.mode:
        attrs = {**attrs, "is_train": _ag._STATE.training}
    if not inputs:
        node_inputs: list = []
        res = _emit.apply(op, node_inputs, attrs, name=name)
        return [Symbol(s._value) for s in res] if isinstance(res, list) else Symbol(res._value)
    return _emit.apply(op, inputs, attrs, name=name)


def _bind_fluent(namespace):
    """Symbol methods call ``ember.sym`` (so training mode is honoured), not ``ir.emit.F``."""
    def make(name):
        def method(self, *args, **kwargs):
            return namespace[name](self, *args, **kwargs)
        method.__name__ = name
        return method
    for name in _emit.FLUENT:
        if name in namespace:
            setattr(Symbol, name, make(name))
