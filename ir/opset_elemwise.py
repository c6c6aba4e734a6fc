"""Elementwise ops: unary math, binary arithmetic with broadcasting, scalar forms.

Templates are Python scalar expressions over ``a`` (and ``b``) and attribute names; the
CPU and CUDA code generators paste them into loops, so they may use ``math`` and builtins
numba understands.
"""
from __future__ import annotations

import numpy as np

from .ops import OpKind, defop
from .shape_rules import broadcasting, elemwise

E, B = OpKind.ELEMWISE, OpKind.BROADCAST


def _keep(fn):
    """Wrap a NumPy ufunc so the result keeps the input's dtype (MXNet semantics)."""
    def compute(ins, attrs):
        a = ins[0]
        return np.asarray(fn(a)).astype(a.dtype, copy=False)
    return compute


# ---- unary -----------------------------------------------------------------------------
defop("negative", E, _keep(np.negative), elemwise("negative"), inplace=((0, 0),),
      template="-a", grad=lambda F, i, o, g, at: [-g[0]])
defop("relu", E, lambda ins, at: np.maximum(ins[0], 0).astype(ins[0].dtype, copy=False),
      elemwise("relu"), inplace=((0, 0),), template="a if a > 0.0 else 0.0",
      grad=lambda F, i, o, g, at: [g[0] * (o[0] > 0)])
defop("exp", E, _keep(np.exp), elemwise("exp"), inplace=((0, 0),), template="math.exp(a)",
      grad=lambda F, i, o, g, at: [g[0] * o[0]])
defop("sigmoid", E, _keep(lambda a: 1 / (1 + np.exp(-a))), elemwise("sigmoid"),
      inplace=((0, 0),), template="1.0 / (1.0 + math.exp(-a))",
      grad=lambda F, i, o, g, at: [g[0] * o[0] * (1 - o[0])])


# ---- binary with broadcasting ----------------------------------------------------------
def _binary_grad(da, db):
    """Gradient of a broadcasting binary op from its two partial derivatives."""
    def grad(F, ins, outs, g, attrs):
        a, b = ins
        return [F.sum_like(da(F, a, b, outs[0], g[0]), a),
                F.sum_like(db(F, a, b, outs[0], g[0]), b)]
    return grad


defop("add", B, lambda ins, at: np.add(ins[0], ins[1]), broadcasting("add"),
      aliases=("broadcast_add", "broadcast_plus"), mxnet_name="broadcast_add",
      inplace=((0, 0), (1, 0)), template="a + b",
      grad=_binary_grad(lambda F, a, b, o, g: g, lambda F, a, b, o, g: g))
defop("mul", B, lambda ins, at: np.multiply(ins[0], ins[1]), broadcasting("mul"),
      aliases=("broadcast_mul",), mxnet_name="broadcast_mul",
      inplace=((0, 0), (1, 0)), template="a * b",
      grad=_binary_grad(lambda F, a, b, o, g: g * b, lambda F, a, b, o, g: g * a))


# ---- with a scalar ---------------------------------------------------------------------
def _scalar(fn):
    def compute(ins, attrs):
        a = ins[0]
        return np.asarray(fn(a, attrs["scalar"])).astype(a.dtype, copy=False)
    return compute


defop("add_scalar", E, _scalar(np.add), elemwise("add_scalar"), attrs={"scalar": 0.0},
      aliases=("_plus_scalar",), mxnet_name="_plus_scalar", inplace=((0, 0),),
      template="a + scalar", grad=lambda F, i, o, g, at: [g[0]])
defop("mul_scalar", E, _scalar(np.multiply), elemwise("mul_scalar"), attrs={"scalar": 1.0},
      aliases=("_mul_scalar",), mxnet_name="_mul_scalar", inplace=((0, 0),),
      template="a * scalar", grad=lambda F, i, o, g, at: [g[0] * at["scalar"]])
