"""``Symbol``: a traced value (an IR Value) with NDArray's operator and method surface.

``hybrid_forward(F, x, ...)`` runs with ``F = ember.sym`` when a block is traced; each op
call becomes an IR node whose shape rule runs at once (``ir.graph.make_node``), so lazy
parameters learn their shapes during the trace. A Symbol can also be built by hand
(``sym.var('x')``) and composed, as in MXNet's symbolic API.
"""
from __future__ import annotations

import numbers

import numpy as np

from ember import autograd as _ag
from ember.ir import TensorType, get_op
from ember.ir.graph import Value, make_node


class Symbol:
    """A symbolic tensor: the output ``index`` of an IR node (or a graph input)."""

    __slots__ = ("_value", "__weakref__")
    __array_priority__ = 1000.0

    def __init__(self, value: Value):
        self._value = value

    @property
    def name(self) -> str | None:
        v = self._value
        if v.producer is None:
            return v.name_hint
        base = v.producer.name or v.producer.op.name
        n_out = len(v.producer.outputs)
        return base if n_out == 1 and v.name_hint is None else f"{base}_output{v.index}"

    @property
    def shape(self):
        return self._value.type.shape

    @property
    def dtype(self):
        return np.dtype(self._value.type.dtype).type

    @property
    def ndim(self):
        return self._value.type.ndim

    def __repr__(self) -> str:
        return f"<Symbol {self.name}: {self._value.type}>"

    def __iter__(self):
        raise TypeError("a Symbol of one output is not iterable")

    def __bool__(self):
        raise TypeError("the truth value of a Symbol is unknown while tracing: Python "
                        "control flow on tensor values cannot be hybridized")

    def __len__(self):
        raise TypeError("len() of a Symbol is unknown while tracing; use .shape")


def var(name: str, shape=None, dtype=None, **kwargs) -> Symbol:
    """A graph input named ``name`` (shape entries 0 or None are unknown)."""
    shp = None if shape is None else tuple(None if d in (0, None) else int(d) for d in shape)
    dt = "float32" if dtype is None else np.dtype(dtype).name
    return Symbol(Value(TensorType(shp, dt), name_hint=name))


Variable = var


def apply(op, inputs, attrs: dict, name: str | None = None):
    """Emit ``op`` on Symbols; returns one Symbol or a list for multi-output ops."""
    if op.mode:
        attrs = {**attrs, "is_train": _ag._STATE.training}
    node = make_node(op, [s._value for s in inputs], attrs, name=name)
    outs = [Symbol(v) for v in node.outputs[:op.n_visible(node.attr_dict)]]
    return outs[0] if len(outs) == 1 else outs


def _binary(names, reflected=False):
    arr_op, sc_op, rsc_op = names

    def method(self, other):
        if isinstance(other, Symbol):
            a, b = (other, self) if reflected else (self, other)
            return apply(get_op(arr_op), [a, b], {})
        if isinstance(other, numbers.Number | np.generic):
            return apply(get_op(rsc_op if reflected else sc_op), [self], {"scalar": other})
        return NotImplemented
    return method


def _bind_operators():
    from ember.ndarray.methods import BINARY
    for key, names in BINARY.items():
        setattr(Symbol, f"__{key}__", _binary(names))
        if key not in ("eq", "ne", "gt", "ge", "lt", "le"):
            setattr(Symbol, f"__r{key}__", _binary(names, reflected=True))
    Symbol.__neg__ = lambda self: apply(get_op("negative"), [self], {})
    Symbol.__abs__ = lambda self: apply(get_op("abs"), [self], {})
    Symbol.__hash__ = lambda self: id(self)


def _bind_fluent(namespace):
    from ember.ndarray.methods import FLUENT

    def make(name):
        def method(self, *args, **kwargs):
            return namespace[name](self, *args, **kwargs)
        method.__name__ = name
        return method
    for name in FLUENT:
        if name in namespace and not hasattr(Symbol, name):
            setattr(Symbol, name, make(name))

    def reshape(self, *shape, **kwargs):
        if len(shape) == 1 and isinstance(shape[0], list | tuple):
            shape = shape[0]
        return namespace["reshape"](self, shape=tuple(kwargs.pop("shape", shape)), **kwargs)
    Symbol.reshape = reshape
