"""Reductions: sum, mean, max, min, prod, norm, argmax, argmin (axis/keepdims/exclude)."""
from __future__ import annotations

import numpy as np

from .ops import OpKind, defop
from .types import TensorType

R = OpKind.REDUCE


def _sum_like_compute(ins, attrs):
    """Sum ``x`` down to the shape of ``like`` (the adjoint of broadcasting)."""
    x, like = ins
    shape = like.shape
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, d in enumerate(shape)
                                      if d == 1 and x.shape[i + lead] != 1)
    out = x.sum(axis=axes, keepdims=True) if axes else x
    return out.reshape(shape).astype(x.dtype, copy=False)


def _sum_like_infer(in_types, attrs):
    x, like = in_types
    return [TensorType(like.shape, x.dtype)], list(in_types)


defop("sum_like", R, _sum_like_compute, _sum_like_infer, inputs=("data", "like"),
      grad=lambda F, i, o, g, at: [F.broadcast_like(g[0], i[0]), None],
      doc="Sum `data` over the axes that broadcasting `like` to it would expand.")
