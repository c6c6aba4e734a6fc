"""Neural-network ops: FullyConnected, activations, softmax family, normalisation, Dropout,
Embedding, L2Normalization and MXNet's loss-like output ops.

Names, attributes and defaults follow MXNet 1.9.1 (src/operator/nn/*, leaky_relu-inl.h,
tensor/indexing_op.h, softmax_output-inl.h, regression_output-inl.h). Shape rules refine the
parameters' shapes from the data (FullyConnected weight, BatchNorm gamma...), which is how
lazy Gluon layers learn theirs. Gradients are written with ops only.
"""
from __future__ import annotations

import math

import numpy as np

from . import rng
from . import shape_rules as sr
from .ops import REQUIRED, OpKind, defop, get_op, normalize_attrs
from .shape_rules import elemwise, fail, normalize_axis, refine_vector, unify, unify_dim
from .types import TensorType

OE, E, O = OpKind.OUT_EWISE, OpKind.ELEMWISE, OpKind.OPAQUE


def _prod(dims):
    return None if any(d is None for d in dims) else math.prod(dims)


# ---- FullyConnected ----------------------------------------------------------------------
def _fc(ins, at):
    x, w = ins[0], ins[1]
    x2 = x.reshape(x.shape[0], math.prod(x.shape[1:])) if at["flatten"] else x  # 0 rows too
    out = np.matmul(x2, w.T)
    if not at["no_bias"]:
        out += ins[2]
    return out.astype(x.dtype, copy=False)


def _fc_infer(in_types, at):
    op, h = "fully_connected", at["num_hidden"]
    if len(in_types) != (2 if at["no_bias"] else 3):
        fail(op, f"expected {2 if at['no_bias'] else 3} inputs (no_bias={at['no_bias']})",
             in_types)
    sr.same_dtype(op, in_types, names=("data", "weight", "bias"), ref=1)
    x, w = in_types[0], in_types[1]
    if x.ndim == 0:
        fail(op, "data must have at least one dim", in_types)
    w_shape = unify(w.shape if w.ndim == 2 else (None, None), (h, None), op, in_types)
    if at["flatten"]:
        units = _prod(x.shape[1:]) if x.ndim > 1 else 1
        out = (x.shape[0], h)
    else:
        units, out = x.shape[-1], x.shape[:-1] + (h,)
    units = unify_dim(units, w_shape[1], op, in_types)
    if x.ndim == 2 or not at["flatten"]:
        x = x.with_shape(x.shape[:-1] + (units,))
    refined = [x, w.with_shape((h, units))]
    if not at["no_bias"]:
        refined.append(refine_vector(in_types[2], h, op, in_types))
    return [TensorType(out, x.dtype)], refined


def _fc_grad(F, ins, outs, ograds, at):
    x, w, g = ins[0], ins[1], ograds[0]
    if x.ndim == 2:
        x2, g2 = x, g
    else:
        rows = _prod(x.shape[1:]) if at["flatten"] else _prod(x.shape[:-1])  # no -1: 0 rows
        x2 = F.reshape(x, shape=(x.shape[0], -1 if rows is None else rows) if at["flatten"]
                       else (-1 if rows is None else rows, x.shape[-1]))
        g2 = g if at["flatten"] else F.reshape(g, shape=(-1, at["num_hidden"]))
    dx = F.dot(g2, w)
    if x.ndim != 2:
        dx = F.reshape(dx, shape=x.shape)
    res = [dx, F.dot(g2, x2, transpose_a=True)]
    return res if at["no_bias"] else res + [F.sum_like(g, ins[2])]


def _fc_infer_back(in_types, out_types, at):
    """MXNet's FullyConnectedShape: the data's first dim is the output's (e.g. a recurrent
    cell's begin state, zeros of unknown batch size)."""
    x, y = in_types[0], out_types[0]
    if x.shape and y.shape and x.shape[0] is None and y.shape[0] is not None:
        return [x.with_shape((y.shape[0],) + x.shape[1:])] + in_types[1:]
    return in_types


defop("fully_connected", OE, _fc, _fc_infer, inputs=("data", "weight", "bias?"),
      infer_back=_fc_infer_back,
      attrs={"num_hidden": REQUIRED, "no_bias": False, "flatten": True},
      grad=_fc_grad, aliases=("FullyConnected",), mxnet_name="FullyConnected",
      doc="out = data @ weight.T + bias; weight is (num_hidden, in_units).")


# ---- activations -------------------------------------------------------------------------
def _softsign(x):
    return x / (1 + np.abs(x))


_ACT = {"relu": lambda x: np.maximum(x, 0), "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
        "tanh": np.tanh, "softrelu": lambda x: np.logaddexp(x, 0), "softsign": _softsign}


_ACT_TEMPLATE = (
    "(a if not a <= 0.0 else 0.0) if act_type == 'relu' else "
    "(1.0 / (1.0 + math.exp(-a)) if act_type == 'sigmoid' else "
    "(math.tanh(a) if act_type == 'tanh' else "
    "(max(a, 0.0) + math.log1p(math.exp(-abs(a))) if act_type == 'softrelu' else "
    "a / (1.0 + abs(a)))))")


def _activation(ins, at):
    fn = _ACT.get(at["act_type"])
    if fn is None:
        raise ValueError(f"unknown act_type {at['act_type']!r}; one of {', '.join(_ACT)}")
    with np.errstate(all="ignore"):  # exp overflows to inf as in MXNet, silently
        return np.asarray(fn(ins[0])).astype(ins[0].dtype, copy=False)


def _activation_grad(F, ins, outs, ograds, at):
    x, g, t = ins[0], ograds[0], at["act_type"]
    if t == "relu":  # NaN in, NaN gradient (MXNet's relu_grad), as the relu op's rule
        y = outs[0]
        return [g * (y > 0) + F.minimum_scalar(y, scalar=0.0)]
    if t == "sigmoid":
        return [g * F.sigmoid(x) * (1 - F.sigmoid(x))]
    if t == "tanh":
        return [g * (1 - F.square(F.tanh(x)))]
    if t == "softrelu":
        return [g * F.sigmoid(x)]
    return [g / F.square(1 + F.abs(x))]


defop("activation", E, _activation, elemwise("activation"), attrs={"act_type": REQUIRED},
      grad=_activation_grad, aliases=("Activation",), mxnet_name="Activation",
      inplace=((0, 0),), template=_ACT_TEMPLATE, positional_inputs=True,
      doc="Elementwise relu, sigmoid, tanh, softrelu or softsign.")


# ---- LeakyReLU ---------------------------------------------------------------------------
_SELU_ALPHA, _SELU_LAMBDA = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def _gamma_b(gamma, ndim):
    """PReLU's gamma shaped to broadcast over axis 1 of an ``ndim``-D array."""
    if gamma.size == 1 or ndim < 2:
        return gamma.reshape(())
    return gamma.reshape((1, -1) + (1,) * (ndim - 2))


def _erf(x):
    from scipy.special import erf
    return erf(x)


def _leaky_relu(ins, at):
    x, t, s = ins[0], at["act_type"], at["slope"]
    neg = x < 0
    if t == "leaky":
        out = np.where(neg, x * s, x)
    elif t == "prelu":
        out = np.where(neg, x * _gamma_b(ins[1], x.ndim), x)
    elif t == "elu":
        out = np.where(neg, s * np.expm1(np.minimum(x, 0)), x)
    elif t == "selu":
        out = _SELU_LAMBDA * np.where(neg, _SELU_ALPHA * np.expm1(np.minimum(x, 0)), x)
    elif t == "gelu":
        out = 0.5 * x * (1 + _erf(x / math.sqrt(2)))
    elif t == "rrelu":
        lo, hi = at["lower_bound"], at["upper_bound"]
        if at.get("is_train", False):
            slope = rng.generator().uniform(lo, hi, x.shape)
        else:
            slope = (lo + hi) / 2
        out = np.where(neg, x * slope, x)
    else:
        raise ValueError(f"unknown act_type {t!r}")
    return np.asarray(out).astype(x.dtype, copy=False)


def _leaky_relu_infer(in_types, at):
    x = in_types[0]
    if at["act_type"] != "prelu":
        if len(in_types) != 1:
            fail("leaky_relu", "only act_type='prelu' takes a gamma input", in_types)
        return [x], [x]
    if len(in_types) != 2:
        fail("leaky_relu", "act_type='prelu' needs a gamma input", in_types)
    sr.same_dtype("leaky_relu", in_types, names=("data", "gamma"), ref=1)
    gamma = in_types[1]
    if gamma.ndim == 1 and gamma.shape[0] == 1:
        return [x], list(in_types)
    c = x.shape[1] if x.ndim > 1 else 1
    return [x], [x, refine_vector(gamma, c, "leaky_relu", in_types)]


def _leaky_relu_grad(F, ins, outs, ograds, at):
    x, y, g, t, s = ins[0], outs[0], ograds[0], at["act_type"], at["slope"]
    pos = x > 0
    if t == "leaky":
        return [g * (pos + (1 - pos) * s)]
    if t == "prelu":
        gamma, neg = ins[1], 1 - pos
        flat = gamma.shape[0] == 1 or x.ndim < 2
        gb = gamma if flat else F.reshape(gamma, shape=(1, -1) + (1,) * (x.ndim - 2))
        dg = F.sum_like(g * x * neg, gb)
        return [g * (pos + neg * gb), dg if flat else F.reshape(dg, shape=gamma.shape)]
    if t == "elu":
        return [g * (pos + (1 - pos) * s * F.exp(F.minimum_scalar(x, scalar=0.0)))]
    if t == "selu":
        e = _SELU_ALPHA * F.exp(F.minimum_scalar(x, scalar=0.0))
        return [g * _SELU_LAMBDA * (pos + (1 - pos) * e)]
    if t == "gelu":
        cdf = 0.5 * (1 + F.erf(x * (1 / math.sqrt(2))))
        pdf = F.exp(-0.5 * F.square(x)) * (1 / math.sqrt(2 * math.pi))
        return [g * (cdf + x * pdf)]
    if at.get("is_train", False):   # rrelu: the random slope is y / x where x < 0
        safe = x + (x == 0)
        return [g * (pos + (1 - pos) * y / safe)]
    return [g * (pos + (1 - pos) * ((at["lower_bound"] + at["upper_bound"]) / 2))]


defop("leaky_relu", O, _leaky_relu, _leaky_relu_infer, inputs=("data", "gamma?"),
      attrs={"act_type": "leaky", "slope": 0.25, "lower_bound": 0.125, "upper_bound": 0.334},
      grad=_leaky_relu_grad, aliases=("LeakyReLU",), mxnet_name="LeakyReLU", mode=True,
      random=True, doc="leaky / prelu / elu / selu / gelu / rrelu activations.")


# ---- softmax family ----------------------------------------------------------------------
def _length_mask(x, length, axis):
    """1 where the position along ``axis`` is below ``length`` (``use_length``)."""
    pos = np.arange(x.shape[axis]).reshape((-1,) + (1,) * (x.ndim - 1 - axis))
    return pos < np.expand_dims(length, axis)


def _softmax_kernel(name, sign, log):
    def compute(ins, at):
        x = ins[0]
        axis = sr.kernel_axis(at["axis"], x, name)
        t = at["temperature"] or 1.0
        z = x.astype(np.float64) * (sign / t)
        mask = _length_mask(x, ins[1], axis) if at["use_length"] else None
        if mask is not None:
            z = np.where(mask, z, -np.inf)
        z = z - np.max(z, axis=axis, keepdims=True)
        lse = np.log(np.sum(np.exp(z), axis=axis, keepdims=True))
        out = z - lse if log else np.exp(z - lse)
        if mask is not None:
            out = np.where(mask, out, 0.0)
        return out.astype(at["dtype"] or x.dtype)
    return compute


def _softmax_rule(name):
    def infer(in_types, at):
        x = in_types[0]
        normalize_axis(at["axis"], x.ndim, name, in_types)
        if at["use_length"] != (len(in_types) == 2):
            fail(name, "a length input goes with use_length=True", in_types)
        return [TensorType(x.shape, at["dtype"] or x.dtype)], list(in_types)
    return infer


def _softmax_grad(sign, log):
    def grad(F, ins, outs, ograds, at):
        y, g = outs[0], ograds[0]
        k = sign / (at["temperature"] or 1.0)
        ax = at["axis"]
        if log:
            dx = g - F.exp(y) * F.sum(g, axis=ax, keepdims=True)
        else:
            dx = y * (g - F.sum(g * y, axis=ax, keepdims=True))
        return [dx * k] + ([None] if len(ins) == 2 else [])
    return grad


_SM = {"axis": -1, "temperature": None, "dtype": None, "use_length": False}
for _name, _mx, _sign, _log in (("softmax", "softmax", 1.0, False),
                                ("log_softmax", "log_softmax", 1.0, True),
                                ("softmin", "softmin", -1.0, False)):
    defop(_name, O, _softmax_kernel(_name, _sign, _log), _softmax_rule(_name),
          inputs=("data", "length?"),
          attrs=dict(_SM), grad=_softmax_grad(_sign, _log), mxnet_name=_mx,
          doc=f"{_name} along ``axis`` (numerically stable; ``temperature`` divides data).")


def _onehot_np(label, n, dtype):
    return (label.astype(np.int64)[..., None] == np.arange(n)).astype(dtype)


def _sce(ins, at):
    x, label = ins
    z = x.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return np.asarray(-np.sum(logp * _onehot_np(label, x.shape[1], np.float64)),
                      dtype=x.dtype).reshape(1)


def _sce_infer(in_types, at):
    x, label = in_types
    if x.ndim != 2 or label.ndim != 1:
        fail("softmax_cross_entropy", "expects data (N, C) and label (N,)", in_types)
    n = unify_dim(x.shape[0], label.shape[0], "softmax_cross_entropy", in_types)
    return [TensorType((1,), x.dtype)], [x.with_shape((n, x.shape[1])),
                                         label.with_shape((n,))]


def _sce_grad(F, ins, outs, ograds, at):
    x, label = ins
    p = F.softmax(x, axis=1) - F.one_hot(label, depth=x.shape[1], dtype=x.dtype)
    return [p * ograds[0], None]


defop("softmax_cross_entropy", O, _sce, _sce_infer, inputs=("data", "label"),
      grad=_sce_grad, mxnet_name="softmax_cross_entropy",
      doc="Total cross-entropy of softmax(data) against integer labels, shape (1,).")


# ---- Dropout -----------------------------------------------------------------------------
def _dropout(ins, at):
    x, p = ins[0], at["p"]
    active = at["mode"] == "always" or at.get("is_train", False)
    if not active or p == 0:
        return x.copy(), np.broadcast_to(np.ones((), x.dtype), x.shape)
    shape = list(x.shape)
    for a in at["axes"] or ():
        shape[a] = 1
    keep = rng.generator().random(shape) >= p
    mask = keep * (1.0 / (1.0 - p)) if p < 1 else np.zeros(shape)
    mask = np.broadcast_to(mask.astype(x.dtype), x.shape)
    return (x * mask).astype(x.dtype, copy=False), mask


def _dropout_infer(in_types, at):
    x = in_types[0]
    if not 0 <= at["p"] <= 1:
        fail("dropout", f"p={at['p']} must be in [0, 1]", in_types)
    return [x, x], [x]


defop("dropout", O, _dropout, _dropout_infer,
      attrs={"p": 0.5, "mode": "training", "axes": (), "cudnn_off": False},
      grad=lambda F, i, o, g, at: [g[0] * o[1]], num_outputs=2, visible_outputs=1,
      mode=True, random=True,
      aliases=("Dropout",), mxnet_name="Dropout",
      doc="Zero elements with probability p and scale the rest by 1/(1-p) (training "
          "only unless mode='always'). Output 1 is MXNet's hidden mask, scaled.")


# ---- Embedding ---------------------------------------------------------------------------
def _embedding(ins, at):
    idx, w = ins
    i = np.clip(idx.astype(np.int64), 0, w.shape[0] - 1)
    return w[i]   # the weight's dtype (MXNet's ``dtype`` attr describes the weight)


def _embedding_infer(in_types, at):
    idx, w = in_types
    shape = unify(w.shape if w.ndim == 2 else (None, None),
                  (at["input_dim"], at["output_dim"]), "embedding", in_types)
    return ([TensorType(idx.shape + (at["output_dim"],), w.dtype)],
            [idx, w.with_shape(shape)])


def _embedding_grad(F, ins, outs, ograds, at):
    take = get_op("take")   # Embedding is take(weight, indices, axis=0, mode='clip')
    tat = normalize_attrs(take, {"axis": 0, "mode": "clip"})
    gw = take.grad(F, [ins[1], ins[0]], outs, ograds, tat)[0]
    return [None, gw]


defop("embedding", O, _embedding, _embedding_infer, inputs=("data", "weight"),
      attrs={"input_dim": REQUIRED, "output_dim": REQUIRED, "dtype": "float32",
             "sparse_grad": False},
      grad=_embedding_grad, aliases=("Embedding",), mxnet_name="Embedding",
      doc="Rows of weight (input_dim, output_dim) picked by integer-valued indices.")


# ---- L2Normalization ---------------------------------------------------------------------
def _l2_axes(ndim, mode):
    return {"instance": tuple(range(1, ndim)), "channel": (1,),
            "spatial": tuple(range(2, ndim))}[mode]


def _l2norm(ins, at):
    x = ins[0]
    axes = _l2_axes(x.ndim, at["mode"])
    r = 1 / np.sqrt(np.sum(np.square(x, dtype=np.float64), axis=axes, keepdims=True)
                    + at["eps"])
    return (x * r).astype(x.dtype)


def _l2norm_grad(F, ins, outs, ograds, at):
    x, g = ins[0], ograds[0]
    axes = _l2_axes(x.ndim, at["mode"])
    r = F.rsqrt(F.sum(F.square(x), axis=axes, keepdims=True) + at["eps"])
    y = x * r
    return [r * (g - y * F.sum(g * y, axis=axes, keepdims=True))]


defop("l2_normalization", O, _l2norm, elemwise("l2_normalization"),
      attrs={"eps": 1e-10, "mode": "instance"}, grad=_l2norm_grad,
      aliases=("L2Normalization",), mxnet_name="L2Normalization",
      doc="x / sqrt(sum(x**2) + eps) per instance, per channel or per spatial position.")


# ---- MakeLoss: identity forward, the gradient of a loss head -------------------------------
def _make_loss_grad(F, ins, outs, g, at):
    """MXNet's MakeLoss ignores the incoming gradient: d(loss) = grad_scale, normalised."""
    x = ins[0]
    head = F.ones_like(x) * at["grad_scale"]
    if at["normalization"] == "batch":
        head = head * (1.0 / x.shape[0])
    elif at["normalization"] == "valid":
        valid = F.sum(F.greater_scalar(x, scalar=at["valid_thresh"]))
        head = F.broadcast_div(head, F.maximum_scalar(valid, scalar=1.0))
    return [head]


defop("make_loss", E, lambda ins, at: ins[0].copy(), elemwise("make_loss"),
      attrs={"grad_scale": 1.0, "valid_thresh": 0.0, "normalization": "null"},
      grad=_make_loss_grad, aliases=("MakeLoss",), mxnet_name="MakeLoss",
      doc="Identity whose gradient is grad_scale (a loss head, MXNet's MakeLoss).")
