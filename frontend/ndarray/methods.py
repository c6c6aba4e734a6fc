"""NDArray's operators and fluent methods, bound to registry ops once at import.

Binary operators pick the broadcasting op for two arrays and the ``*_scalar`` op for a
Python number (MXNet's ``_ufunc_helper``); the reflected forms use the ``r*_scalar`` ops.
"""
from __future__ import annotations

import numbers

import numpy as np

from ember.ir import TensorType, get_op
from ember.ir.emit import FLUENT, OPERATORS
from ember.ir.ops import normalize_attrs

from .ndarray import NDArray, invoke

BINARY = OPERATORS


def _as_array(x, like):
    if isinstance(x, NDArray):
        return x
    if isinstance(x, np.ndarray):
        return NDArray(x.astype(like._data.dtype, copy=False), like._ctx)
    return None


def apply_binary(lhs, rhs, names, reflected=False, out=None):
    """``lhs <op> rhs`` for an NDArray ``lhs`` and an array or number ``rhs``."""
    arr_op, sc_op, rsc_op = names
    other = _as_array(rhs, lhs)
    if other is not None:
        a, b = (other, lhs) if reflected else (lhs, other)
        return invoke(_op(arr_op), [a, b], {}, out=out)
    if not isinstance(rhs, numbers.Number | np.generic):
        return NotImplemented
    return invoke(_op(rsc_op if reflected else sc_op), [lhs], {"scalar": rhs}, out=out)


_OPS: dict = {}


def _op(name):
    op = _OPS.get(name)
    if op is None:
        op = _OPS[name] = get_op(name)
    return op


def _binary_methods(key, names):
    def fwd(self, other):
        return apply_binary(self, other, names)

    def rev(self, other):
        return apply_binary(self, other, names, reflected=True)

    def inplace(self, other):
        if not self.writable:
            raise ValueError("trying to modify a read-only array")
        res = apply_binary(self, other, names)
        if res is NotImplemented:
            return res
        self._data[...] = res._data
        self._node = res._node
        return self
    return fwd, rev, inplace


for _key, _names in BINARY.items():
    _f, _r, _i = _binary_methods(_key, _names)
    setattr(NDArray, f"__{_key}__", _f)
    if _key not in ("eq", "ne", "gt", "ge", "lt", "le"):
        setattr(NDArray, f"__r{_key}__", _r)
        setattr(NDArray, f"__i{_key}__", _i)
NDArray.__div__ = NDArray.__truediv__
NDArray.__rdiv__ = NDArray.__rtruediv__
NDArray.__idiv__ = NDArray.__itruediv__
NDArray.__hash__ = lambda self: id(self)
NDArray.__neg__ = lambda self: invoke(_op("negative"), [self], {})
NDArray.__abs__ = lambda self: invoke(_op("abs"), [self], {})
NDArray.__pos__ = lambda self: self


# ---- fluent methods: x.sum(axis=1) is nd.sum(x, axis=1) ------------------------------------
def _fluent(name):
    def method(self, *args, **kwargs):
        from ember import ndarray as nd
        return getattr(nd, name)(self, *args, **kwargs)
    method.__name__ = name
    return method


def bind_fluent(namespace: dict):
    """Give NDArray a method for every fluent op present in the registry namespace."""
    for name in FLUENT:
        if name in namespace and not hasattr(NDArray, name):
            setattr(NDArray, name, _fluent(name))


def _reshape(self, *shape, **kwargs):
    """``x.reshape((2, 3))`` or ``x.reshape(2, 3)``: a view sharing memory, as in MXNet;
    MXNet's codes 0/-1/-2/-3/-4 and ``reverse`` work."""
    if len(shape) == 1 and isinstance(shape[0], list | tuple):
        shape = shape[0]
    shape = kwargs.pop("shape", shape)
    op = _op("reshape")
    attrs = normalize_attrs(op, {"shape": tuple(shape), **kwargs})
    return _view_or_op(self, op, attrs)


def _view_or_op(self, op, attrs):
    """A view of ``self`` with the op's output shape, or the recorded op under autograd."""
    from ember import autograd
    if autograd.is_recording() and autograd._needs_grad(self):
        return invoke(op, [self], attrs)
    out_t, _ = op.infer([TensorType(self.shape, self._data.dtype)], attrs)
    return NDArray(self._data.reshape(out_t[0].shape), self._ctx)


def _broadcast_to(self, shape):
    op = _op("broadcast_to")
    return invoke(op, [self], normalize_attrs(op, {"shape": tuple(shape)}))


def _shape_method(name, key="axis"):
    """flatten/squeeze/expand_dims: a copy, or with ``inplace=True`` a view, as in MXNet."""
    def method(self, *args, inplace=False, **kwargs):
        op = _op(name)
        attrs = normalize_attrs(op, {**dict(zip([key], args)), **kwargs})
        return _view_or_op(self, op, attrs) if inplace else invoke(op, [self], attrs)
    method.__name__ = name
    return method


def _split_v2(self, *args, **kwargs):
    from .extras import split_v2
    return split_v2(self, *args, **kwargs)


NDArray.reshape = _reshape
NDArray.broadcast_to = _broadcast_to
NDArray.flatten = _shape_method("flatten")
NDArray.squeeze = _shape_method("squeeze")
NDArray.expand_dims = _shape_method("expand_dims")
NDArray.split_v2 = _split_v2
