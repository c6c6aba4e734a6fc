"""NumPy-style binary functions of ``mx.nd`` that take arrays or numbers on either side."""
from __future__ import annotations

import numbers

import numpy as np

from .methods import BINARY, _op, apply_binary
from .ndarray import NDArray, invoke

__all__ = ["add", "subtract", "multiply", "divide", "true_divide", "modulo", "power",
           "maximum", "minimum", "hypot", "equal", "not_equal", "greater", "greater_equal",
           "lesser", "lesser_equal", "logical_and", "logical_or", "logical_xor"]

_EXTRA = {
    "maximum": ("maximum", "maximum_scalar", "maximum_scalar"),
    "minimum": ("minimum", "minimum_scalar", "minimum_scalar"),
    "hypot": ("hypot", "hypot_scalar", "hypot_scalar"),
    "logical_and": ("logical_and", "logical_and_scalar", "logical_and_scalar"),
    "logical_or": ("logical_or", "logical_or_scalar", "logical_or_scalar"),
    "logical_xor": ("logical_xor", "logical_xor_scalar", "logical_xor_scalar"),
}


def _ufunc(names, py):
    def fn(lhs, rhs, out=None):
        if isinstance(lhs, NDArray):
            return apply_binary(lhs, rhs, names, out=out)
        if isinstance(rhs, NDArray):
            return apply_binary(rhs, lhs, names, reflected=True, out=out)
        if isinstance(lhs, numbers.Number) and isinstance(rhs, numbers.Number):
            return py(lhs, rhs)
        raise TypeError(f"type {type(lhs).__name__} and {type(rhs).__name__} not supported")
    return fn


add = _ufunc(BINARY["add"], lambda a, b: a + b)
subtract = _ufunc(BINARY["sub"], lambda a, b: a - b)
multiply = _ufunc(BINARY["mul"], lambda a, b: a * b)
divide = true_divide = _ufunc(BINARY["truediv"], lambda a, b: a / b)
modulo = _ufunc(BINARY["mod"], lambda a, b: a % b)
power = _ufunc(BINARY["pow"], lambda a, b: a ** b)
equal = _ufunc(BINARY["eq"], lambda a, b: float(a == b))
not_equal = _ufunc(BINARY["ne"], lambda a, b: float(a != b))
greater = _ufunc(BINARY["gt"], lambda a, b: float(a > b))
greater_equal = _ufunc(BINARY["ge"], lambda a, b: float(a >= b))
lesser = _ufunc(BINARY["lt"], lambda a, b: float(a < b))
lesser_equal = _ufunc(BINARY["le"], lambda a, b: float(a <= b))
maximum = _ufunc(_EXTRA["maximum"], max)
minimum = _ufunc(_EXTRA["minimum"], min)
hypot = _ufunc(_EXTRA["hypot"], lambda a, b: float(np.hypot(a, b)))
logical_and = _ufunc(_EXTRA["logical_and"], lambda a, b: float(bool(a) and bool(b)))
logical_or = _ufunc(_EXTRA["logical_or"], lambda a, b: float(bool(a) or bool(b)))
logical_xor = _ufunc(_EXTRA["logical_xor"], lambda a, b: float(bool(a) != bool(b)))
_ = (_op, invoke)
