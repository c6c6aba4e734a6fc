"""Creation ops: zeros, ones, full, arange, linspace, eye, zeros_like, ones_like.

The random samplers live in :mod:`ember.ir.opset_random`.
"""
from __future__ import annotations

import numpy as np

from .ops import REQUIRED, OpKind, defop
from .shape_rules import elemwise
from .types import TensorType

O = OpKind.OPAQUE


def _shape_rule(shape_of):
    def infer(in_types, attrs):
        return [TensorType(shape_of(attrs), attrs["dtype"])], list(in_types)
    return infer


_fixed = _shape_rule(lambda at: at["shape"])


def _arange_len(at):
    n = int(np.ceil((at["stop"] - at["start"]) / at["step"]))
    return (max(n, 0) * at["repeat"],)


def _arange(ins, at):
    v = np.arange(at["start"], at["stop"], at["step"], dtype=np.float64)
    if at["repeat"] > 1:
        v = np.repeat(v, at["repeat"])
    return v.astype(at["dtype"])


def _eye_shape(at):
    return (at["N"], at["M"] or at["N"])


_F32 = {"dtype": "float32"}
defop("zeros", O, lambda ins, at: np.zeros(at["shape"], at["dtype"]), _fixed, inputs=(),
      attrs={"shape": REQUIRED, **_F32}, aliases=("_zeros",), mxnet_name="_zeros")
defop("ones", O, lambda ins, at: np.ones(at["shape"], at["dtype"]), _fixed, inputs=(),
      attrs={"shape": REQUIRED, **_F32}, aliases=("_ones",), mxnet_name="_ones")
defop("full", O, lambda ins, at: np.full(at["shape"], at["value"], at["dtype"]), _fixed,
      inputs=(), attrs={"shape": REQUIRED, "value": 0.0, **_F32}, aliases=("_full",),
      mxnet_name="_full")
defop("arange", O, _arange, _shape_rule(_arange_len), inputs=(),
      attrs={"start": 0.0, "stop": REQUIRED, "step": 1.0, "repeat": 1, **_F32},
      aliases=("_arange",), mxnet_name="_arange")
defop("linspace", O,
      lambda ins, at: np.linspace(at["start"], at["stop"], at["num"], endpoint=at["endpoint"])
      .astype(at["dtype"]), _shape_rule(lambda at: (at["num"],)), inputs=(),
      attrs={"start": 0.0, "stop": REQUIRED, "num": REQUIRED, "endpoint": True, **_F32},
      aliases=("_linspace",), mxnet_name="_linspace")
defop("eye", O, lambda ins, at: np.eye(at["N"], at["M"] or None, at["k"], dtype=at["dtype"]),
      _shape_rule(_eye_shape), inputs=(), attrs={"N": REQUIRED, "M": 0, "k": 0, **_F32},
      aliases=("_eye",), mxnet_name="_eye")
defop("zeros_like", OpKind.ELEMWISE, lambda ins, at: np.zeros_like(ins[0]),
      elemwise("zeros_like"), mxnet_name="zeros_like", template="0.0",
      grad=lambda F, i, o, g, at: [None])
defop("ones_like", OpKind.ELEMWISE, lambda ins, at: np.ones_like(ins[0]),
      elemwise("ones_like"), mxnet_name="ones_like", template="1.0",
      grad=lambda F, i, o, g, at: [None])
