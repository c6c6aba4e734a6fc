"""Normalisation ops: BatchNorm, LayerNorm, GroupNorm, InstanceNorm (MXNet 1.9.1 semantics).

Shape rules refine gamma/beta/moving statistics from the data's channel axis; BatchNorm
updates its moving statistics in place in training mode. Gradients are written with ops.
"""
from __future__ import annotations

import numpy as np

from .ops import OpKind, defop
from .shape_rules import fail, kernel_axis, normalize_axis, refine_vector, same_dtype, unify_dim

OE, E, O = OpKind.OUT_EWISE, OpKind.ELEMWISE, OpKind.OPAQUE


# ---- normalisation -----------------------------------------------------------------------
def _bshape(ndim, axis, c):
    """Shape that broadcasts a per-channel vector over ``axis`` of an ``ndim``-D array."""
    return tuple(c if i == axis else 1 for i in range(ndim))


def _param_dtypes(op, in_types):
    """gamma, beta (and moving statistics) share the data's dtype; BatchNorm's are float32
    for float16 data (MXNet's BatchNormType: statistics accumulate in float32)."""
    names = ("data", "gamma", "beta", "moving_mean", "moving_var")
    same_dtype(op, in_types, which=range(1, len(in_types)), names=names)
    x = in_types[0]
    if len(in_types) > 1 and in_types[1].dtype != x.dtype and not (
            op == "batch_norm" and (x.dtype, in_types[1].dtype) == ("float16", "float32")):
        same_dtype(op, in_types, names=names, ref=1)


def _moments(x, axes):
    xf = x.astype(np.float64)
    mean = xf.mean(axis=axes, keepdims=True)
    return xf, mean, np.square(xf - mean).mean(axis=axes, keepdims=True)


def _batch_norm(ins, at):
    x, gamma, beta, mm, mv = ins
    ax = kernel_axis(at["axis"], x, "batch_norm")
    axes = tuple(i for i in range(x.ndim) if i != ax)
    bs = _bshape(x.ndim, ax, x.shape[ax])
    if at.get("is_train", False) and not at["use_global_stats"]:
        xf, mean, var = _moments(x, axes)
        m = at["momentum"]   # MXNet: moving = moving * momentum + batch * (1 - momentum)
        mm[...] = mm * m + mean.reshape(-1) * (1 - m)
        mv[...] = mv * m + var.reshape(-1) * (1 - m)
    else:
        xf, mean, var = x.astype(np.float64), mm.reshape(bs), mv.reshape(bs)
    invstd = 1 / np.sqrt(var + at["eps"])
    g = 1.0 if at["fix_gamma"] else gamma.reshape(bs)
    out = ((xf - mean) * invstd * g + beta.reshape(bs)).astype(x.dtype)
    if not at["output_mean_var"]:
        return out
    pd = gamma.dtype   # MXNet's visible "var" output holds the inverse std
    return out, mean.reshape(-1).astype(pd), invstd.reshape(-1).astype(pd)


def _batch_norm_infer(in_types, at):
    x = in_types[0]
    op = "batch_norm"
    if len(in_types) != 5:
        fail(op, "expects data, gamma, beta, moving_mean, moving_var", in_types)
    _param_dtypes(op, in_types)
    ax = normalize_axis(at["axis"], x.ndim, op, in_types)
    c = x.shape[ax]
    for t in in_types[1:]:
        c = unify_dim(c, t.shape[0] if t.ndim == 1 else None, op, in_types)
    params = [refine_vector(t, c, op, in_types) for t in in_types[1:]]
    x = x.with_shape(x.shape[:ax] + (c,) + x.shape[ax + 1:])
    outs = [x] + ([params[0].with_shape((c,))] * 2 if at["output_mean_var"] else [])
    return outs, [x] + params


def _norm_dx(F, x, gs, axes, eps, mean=None, var=None):
    """d(out)/dx of ``(x - mean) / sqrt(var + eps)`` times ``gs``; batch moments if no mean.

    Returns (dx, xhat). With given (fixed) moments the map is affine: dx = gs * invstd.
    """
    if mean is None:
        mean = F.mean(x, axis=axes, keepdims=True)
        xc = x - mean
        invstd = F.rsqrt(F.mean(F.square(xc), axis=axes, keepdims=True) + eps)
        xhat = xc * invstd
        dx = invstd * (gs - F.mean(gs, axis=axes, keepdims=True)
                       - xhat * F.mean(gs * xhat, axis=axes, keepdims=True))
        return dx, xhat
    invstd = F.rsqrt(var + eps)
    return gs * invstd, (x - mean) * invstd


def _batch_norm_grad(F, ins, outs, ograds, at):
    x, gamma = ins[0], ins[1]
    g = ograds[0]
    low = x.dtype != gamma.dtype   # float16 data, float32 parameters: work in float32
    if not low:   # one op: one compiled kernel in the CPU backend, not a dozen small ops
        train = bool(at.get("is_train", False) and not at["use_global_stats"])
        r = F.batch_norm_backward(g, x, gamma, ins[3], ins[4], eps=at["eps"],
                                  fix_gamma=at["fix_gamma"], axis=at["axis"], train=train)
        return [r[0], r[1], r[2], None, None]
    if low:
        x, g = F.cast(x, dtype="float32"), F.cast(g, dtype="float32")
    ax = at["axis"] % x.ndim
    axes = tuple(i for i in range(x.ndim) if i != ax)
    bs = _bshape(x.ndim, ax, -1)
    gb = F.reshape(gamma, shape=bs)
    gs = g if at["fix_gamma"] else g * gb
    if at.get("is_train", False) and not at["use_global_stats"]:
        dx, xhat = _norm_dx(F, x, gs, axes, at["eps"])
    else:
        dx, xhat = _norm_dx(F, x, gs, axes, at["eps"], F.reshape(ins[3], shape=bs),
                            F.reshape(ins[4], shape=bs))
    dgamma = F.zeros_like(gamma) if at["fix_gamma"] else \
        F.sum(g * xhat, axis=ax, exclude=True)
    dx = F.cast(dx, dtype="float16") if low else dx
    return [dx, dgamma, F.sum(g, axis=ax, exclude=True), None, None]


defop("batch_norm", O, _batch_norm, _batch_norm_infer,
      inputs=("data", "gamma", "beta", "moving_mean", "moving_var"),
      attrs={"eps": 1e-3, "momentum": 0.9, "fix_gamma": True, "use_global_stats": False,
             "output_mean_var": False, "axis": 1, "cudnn_off": False,
             "min_calib_range": None, "max_calib_range": None},
      num_outputs=lambda at: 3 if at["output_mean_var"] else 1, mode=True, mutates=(3, 4),
      grad=_batch_norm_grad, aliases=("BatchNorm",), mxnet_name="BatchNorm",
      doc="Batch normalisation over all axes but ``axis``; training updates the moving "
          "statistics in place. With output_mean_var it also returns mean and inverse std.")


def _as_batch_norm(at) -> dict:
    """A SyncBatchNorm's attributes as batch_norm's (channels on axis 1, as MXNet's)."""
    bn = {k: v for k, v in at.items() if k not in ("ndev", "key")}
    bn.update(axis=1, cudnn_off=False, min_calib_range=None, max_calib_range=None)
    return bn


defop("_contrib_SyncBatchNorm", O, lambda ins, at: _batch_norm(ins, _as_batch_norm(at)),
      lambda in_types, at: _batch_norm_infer(in_types, _as_batch_norm(at)),
      inputs=("data", "gamma", "beta", "moving_mean", "moving_var"),
      attrs={"eps": 1e-3, "momentum": 0.9, "fix_gamma": True, "use_global_stats": False,
             "output_mean_var": False, "ndev": 1, "key": ""},
      num_outputs=lambda at: 3 if at["output_mean_var"] else 1, mode=True, mutates=(3, 4),
      grad=lambda F, ins, outs, ograds, at: _batch_norm_grad(F, ins, outs, ograds,
                                                             _as_batch_norm(at)),
      aliases=("SyncBatchNorm",), mxnet_name="_contrib_SyncBatchNorm",
      doc="MXNet's SyncBatchNorm: batch normalisation over axis 1 whose statistics MXNet "
          "synchronises across the ``ndev`` devices of one process. ember runs one device per "
          "process, so it is batch_norm; gluon.contrib.nn.SyncBatchNorm synchronises across "
          "processes when training is distributed.")


def _layer_norm(ins, at):
    x, gamma, beta = ins
    ax = kernel_axis(at["axis"], x, "layer_norm")
    xf, mean, var = _moments(x, (ax,))
    std = np.sqrt(var + at["eps"])
    bs = _bshape(x.ndim, ax, x.shape[ax])
    out = ((xf - mean) / std * gamma.reshape(bs) + beta.reshape(bs)).astype(x.dtype)
    if not at["output_mean_var"]:
        return out
    return out, mean.astype(x.dtype), std.astype(x.dtype)


def _layer_norm_infer(in_types, at):
    x, op = in_types[0], "layer_norm"
    _param_dtypes(op, in_types)
    ax = normalize_axis(at["axis"], x.ndim, op, in_types)
    c = x.shape[ax]
    for t in in_types[1:]:
        c = unify_dim(c, t.shape[0] if t.ndim == 1 else None, op, in_types)
    x = x.with_shape(x.shape[:ax] + (c,) + x.shape[ax + 1:])
    stats = x.with_shape(x.shape[:ax] + (1,) + x.shape[ax + 1:])
    outs = [x] + ([stats] * 2 if at["output_mean_var"] else [])
    return outs, [x] + [refine_vector(t, c, op, in_types) for t in in_types[1:]]


def _layer_norm_grad(F, ins, outs, ograds, at):
    x, gamma, g = ins[0], ins[1], ograds[0]
    ax = at["axis"] % x.ndim
    gb = F.reshape(gamma, shape=_bshape(x.ndim, ax, -1))
    dx, xhat = _norm_dx(F, x, g * gb, (ax,), at["eps"])
    return [dx, F.sum(g * xhat, axis=ax, exclude=True), F.sum(g, axis=ax, exclude=True)]


defop("layer_norm", O, _layer_norm, _layer_norm_infer, inputs=("data", "gamma", "beta"),
      attrs={"axis": -1, "eps": 1e-5, "output_mean_var": False},
      num_outputs=lambda at: 3 if at["output_mean_var"] else 1, grad=_layer_norm_grad,
      aliases=("LayerNorm",), mxnet_name="LayerNorm",
      doc="Normalise over ``axis``, then scale by gamma and shift by beta (per position).")


def _group_norm(ins, at):
    x, gamma, beta = ins
    n, ng = x.shape[0], at["num_groups"]
    if x.ndim < 2 or x.shape[1] % ng:
        raise ValueError(f"{x.shape[1] if x.ndim > 1 else 0} channels do not split into "
                         f"num_groups={ng} groups")
    xg = x.reshape(n, ng, -1)
    xf, mean, var = _moments(xg, (2,))
    std = np.sqrt(var + at["eps"])
    y = ((xf - mean) / std * gamma.reshape(1, ng, 1) + beta.reshape(1, ng, 1))
    out = y.reshape(x.shape).astype(x.dtype)
    if not at["output_mean_var"]:
        return out
    return out, mean.reshape(n, ng).astype(x.dtype), std.reshape(n, ng).astype(x.dtype)


def _group_norm_infer(in_types, at):
    x, op, ng = in_types[0], "group_norm", at["num_groups"]
    _param_dtypes(op, in_types)
    if x.ndim < 3:
        fail(op, "data must be at least 3-D (N, C, ...)", in_types)
    if x.shape[1] is not None and x.shape[1] % ng:
        fail(op, f"{x.shape[1]} channels are not divisible into {ng} groups", in_types)
    outs = [x] + ([x.with_shape((x.shape[0], ng))] * 2 if at["output_mean_var"] else [])
    return outs, [x] + [refine_vector(t, ng, op, in_types) for t in in_types[1:]]


def _group_norm_grad(F, ins, outs, ograds, at):
    x, gamma, g = ins[0], ins[1], ograds[0]
    ng = at["num_groups"]
    xg = F.reshape(x, shape=(x.shape[0], ng, -1))
    gg = F.reshape(g, shape=(x.shape[0], ng, -1))
    dx, xhat = _norm_dx(F, xg, gg * F.reshape(gamma, shape=(1, ng, 1)), (2,), at["eps"])
    return [F.reshape(dx, shape=x.shape), F.sum(gg * xhat, axis=1, exclude=True),
            F.sum(gg, axis=1, exclude=True)]


defop("group_norm", O, _group_norm, _group_norm_infer, inputs=("data", "gamma", "beta"),
      attrs={"num_groups": 1, "eps": 1e-5, "output_mean_var": False},
      num_outputs=lambda at: 3 if at["output_mean_var"] else 1, grad=_group_norm_grad,
      aliases=("GroupNorm",), mxnet_name="GroupNorm",
      doc="Normalise each of num_groups channel groups; gamma/beta are (num_groups,).")


def _instance_norm(ins, at):
    x, gamma, beta = ins
    axes = tuple(range(2, x.ndim))
    xf, mean, var = _moments(x, axes)
    bs = _bshape(x.ndim, 1, x.shape[1])
    y = (xf - mean) / np.sqrt(var + at["eps"]) * gamma.reshape(bs) + beta.reshape(bs)
    return y.astype(x.dtype)


def _instance_norm_infer(in_types, at):
    x, op = in_types[0], "instance_norm"
    _param_dtypes(op, in_types)
    if x.ndim < 3:
        fail(op, "data must be at least 3-D (N, C, ...)", in_types)
    c = x.shape[1]
    for t in in_types[1:]:
        c = unify_dim(c, t.shape[0] if t.ndim == 1 else None, op, in_types)
    x = x.with_shape((x.shape[0], c) + x.shape[2:])
    return [x], [x] + [refine_vector(t, c, op, in_types) for t in in_types[1:]]


def _instance_norm_grad(F, ins, outs, ograds, at):
    x, gamma, g = ins[0], ins[1], ograds[0]
    gb = F.reshape(gamma, shape=_bshape(x.ndim, 1, -1))
    dx, xhat = _norm_dx(F, x, g * gb, tuple(range(2, x.ndim)), at["eps"])
    return [dx, F.sum(g * xhat, axis=1, exclude=True), F.sum(g, axis=1, exclude=True)]


defop("instance_norm", O, _instance_norm, _instance_norm_infer,
      inputs=("data", "gamma", "beta"), attrs={"eps": 1e-3}, grad=_instance_norm_grad,
      aliases=("InstanceNorm",), mxnet_name="InstanceNorm",
      doc="Normalise each (sample, channel) over its spatial positions.")
