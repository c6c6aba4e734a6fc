"""Creation and random ops: zeros, ones, full, arange, linspace, eye, random draws, shuffle.

Random ops draw from :mod:`ember.ir.rng`, which ``ember.random.seed`` reseeds, so a seed
reproduces a run (MXNet's ``mx.random.seed``).
"""
from __future__ import annotations

import numpy as np

from . import rng
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


# ---- random draws ------------------------------------------------------------------------
def _draw(fn):
    def compute(ins, at):
        return np.asarray(fn(rng.generator(), at)).astype(at["dtype"], copy=False)
    return compute


_RAND = {"shape": (1,), **_F32}
defop("random_uniform", O,
      _draw(lambda g, at: g.uniform(at["low"], at["high"], at["shape"])), _fixed, inputs=(),
      attrs={"low": 0.0, "high": 1.0, **_RAND}, random=True,
      aliases=("_random_uniform", "uniform"), mxnet_name="_random_uniform")
defop("random_normal", O,
      _draw(lambda g, at: g.normal(at["loc"], at["scale"], at["shape"])), _fixed, inputs=(),
      attrs={"loc": 0.0, "scale": 1.0, **_RAND}, random=True,
      aliases=("_random_normal", "normal"), mxnet_name="_random_normal")
defop("random_randint", O,
      _draw(lambda g, at: g.integers(at["low"], at["high"], at["shape"])), _fixed, inputs=(),
      attrs={"low": REQUIRED, "high": REQUIRED, "shape": (1,), "dtype": "int32"}, random=True,
      aliases=("_random_randint",), mxnet_name="_random_randint")
defop("random_exponential", O,
      _draw(lambda g, at: g.exponential(1.0 / at["lam"], at["shape"])), _fixed, inputs=(),
      attrs={"lam": 1.0, **_RAND}, random=True, aliases=("_random_exponential",),
      mxnet_name="_random_exponential")
defop("random_gamma", O,
      _draw(lambda g, at: g.gamma(at["alpha"], at["beta"], at["shape"])), _fixed, inputs=(),
      attrs={"alpha": 1.0, "beta": 1.0, **_RAND}, random=True, aliases=("_random_gamma",),
      mxnet_name="_random_gamma")
defop("random_poisson", O,
      _draw(lambda g, at: g.poisson(at["lam"], at["shape"])), _fixed, inputs=(),
      attrs={"lam": 1.0, **_RAND}, random=True, aliases=("_random_poisson",),
      mxnet_name="_random_poisson")


def _shuffle(ins, at):
    out = ins[0].copy()
    rng.generator().shuffle(out, axis=0)
    return out


defop("shuffle", O, _shuffle, elemwise("shuffle"), random=True, aliases=("_shuffle",),
      mxnet_name="_shuffle", doc="A copy of the array with its first axis permuted.")
