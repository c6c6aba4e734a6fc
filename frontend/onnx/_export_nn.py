"""ONNX converters for the neural-network layers: convolution, dense, normalisation,
activations, pooling, softmax, dropout and embedding (inference semantics, as MXNet 1.9.1's
``mx.onnx`` exports them; opset 13 and newer)."""
from __future__ import annotations

import math

import numpy as np

from ._export import converts

_SELU_ALPHA, _SELU_GAMMA = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def _attr(node, key, default=None):
    v = node.attr_dict.get(key, default)
    return default if v is None else v


def _nchw(ctx, node):
    layout = node.attr_dict.get("layout")
    if layout not in (None, "NCW", "NCHW", "NCDHW"):
        raise ctx.fail(f"layout {layout!r}: ONNX has channels-first layouts only")


def _geom(node, nsp):
    """(kernel, stride, dilate, pad) of a convolution or pooling node, defaults filled."""
    a = node.attr_dict
    k = tuple(a.get("kernel") or ())
    s = tuple(a.get("stride") or ()) or (1,) * nsp
    d = tuple(a.get("dilate") or ()) or (1,) * nsp
    p = tuple(a.get("pad") or ()) or (0,) * nsp
    return k, s, d, p


@converts("convolution")
def _conv(ctx, node, ins, outs):
    _nchw(ctx, node)
    nsp = len(node.inputs[0].type.shape) - 2
    k, s, d, p = _geom(node, nsp)
    ctx.emit("Conv", ins, outs[0], kernel_shape=list(k), strides=list(s), dilations=list(d),
             pads=list(p) * 2, group=int(node.attr_dict["num_group"]))


@converts("deconvolution")
def _deconv(ctx, node, ins, outs):
    _nchw(ctx, node)
    x, y = node.inputs[0].type.shape, node.outputs[0].type.shape
    nsp = len(x) - 2
    k, s, d, p = _geom(node, nsp)
    if not node.attr_dict.get("target_shape"):
        adj = list(node.attr_dict.get("adj") or ()) or [0] * nsp
    elif any(ctx.dyn(node.inputs[0])[2:]):
        raise ctx.fail("target_shape with dynamic spatial input dims")
    else:   # target_shape: the output_padding that gives the inferred output size
        adj = [o - (si * (n - 1) + (ki - 1) * di + 1 - 2 * pi)
               for o, n, ki, si, di, pi in zip(y[2:], x[2:], k, s, d, p)]
        if any(a < 0 for a in adj):
            raise ctx.fail("target_shape needs asymmetric padding, which this export lacks")
    ctx.emit("ConvTranspose", ins, outs[0], kernel_shape=list(k), strides=list(s),
             dilations=list(d), pads=list(p) * 2, output_padding=adj,
             group=int(node.attr_dict["num_group"]))


@converts("fully_connected")
def _dense(ctx, node, ins, outs):
    x = ins[0]
    rank = len(node.inputs[0].type.shape)
    if node.attr_dict["flatten"] or rank == 2:
        if rank != 2:
            x = ctx.emit("Flatten", [x], axis=1)
        ctx.emit("Gemm", [x] + ins[1:], outs[0], transB=1)
        return
    wt = ctx.emit("Transpose", [ins[1]], perm=[1, 0])
    if len(ins) == 2:
        ctx.emit("MatMul", [x, wt], outs[0])
    else:
        ctx.emit("Add", [ctx.emit("MatMul", [x, wt]), ins[2]], outs[0])


def _move_axis(ctx, node, x, axis, rank, emit_core):
    """Run ``emit_core(x_with_axis_at_1) -> name`` with ``axis`` moved to position 1."""
    axis %= rank
    if axis == 1:
        return emit_core(x, None)
    perm = [0, axis] + [i for i in range(1, rank) if i != axis]
    inv = [perm.index(i) for i in range(rank)]
    return emit_core(ctx.emit("Transpose", [x], perm=perm), inv)


@converts("batch_norm")
def _batch_norm(ctx, node, ins, outs):
    a = node.attr_dict
    if a.get("output_mean_var"):
        raise ctx.fail("output_mean_var=True has no ONNX inference equivalent")
    gamma = ins[1]
    if a["fix_gamma"]:  # gamma is read as ones (MXNet's fix_gamma)
        gv = node.inputs[1]
        gamma = ctx.const(np.ones(gv.type.shape, gv.type.dtype), "gamma_ones")
    rank = len(node.inputs[0].type.shape)

    def core(x, inv):
        y = ctx.emit("BatchNormalization", [x, gamma] + ins[2:5],
                     outs[0] if inv is None else None, epsilon=float(a["eps"]))
        return y if inv is None else ctx.emit("Transpose", [y], outs[0], perm=inv)
    _move_axis(ctx, node, ins[0], int(a["axis"]), rank, core)


@converts("instance_norm")
def _instance_norm(ctx, node, ins, outs):
    ctx.emit("InstanceNormalization", ins, outs[0], epsilon=float(node.attr_dict["eps"]))


@converts("layer_norm")
def _layer_norm(ctx, node, ins, outs):
    a = node.attr_dict
    if a.get("output_mean_var"):
        raise ctx.fail("output_mean_var=True has no ONNX equivalent")
    rank = len(node.inputs[0].type.shape)
    axis, eps = int(a["axis"]) % rank, float(a["eps"])
    if axis == rank - 1 and ctx.opset >= 17:
        ctx.emit("LayerNormalization", ins, outs[0], axis=-1, epsilon=eps)
        return
    x = ins[0]
    mean = reduce(ctx, "ReduceMean", x, [axis], keepdims=1)
    dev = ctx.emit("Sub", [x, mean])
    var = reduce(ctx, "ReduceMean", ctx.emit("Mul", [dev, dev]), [axis], keepdims=1)
    std = ctx.emit("Sqrt", [ctx.emit("Add", [var, ctx.scalar(eps, node.inputs[0], "eps")])])
    shape = [-1] + [1] * (rank - 1 - axis)
    g = ctx.emit("Reshape", [ins[1], ctx.ints(shape)])
    b = ctx.emit("Reshape", [ins[2], ctx.ints(shape)])
    ctx.emit("Add", [ctx.emit("Mul", [ctx.emit("Div", [dev, std]), g]), b], outs[0])


def reduce(ctx, op_type, x, axes, out=None, keepdims=1):
    """Reduce* over ``axes`` (None: all), axes as an attribute or input by opset."""
    attrs = {"keepdims": int(keepdims)}
    if axes is None:
        return ctx.emit(op_type, [x], out, **attrs)
    if op_type == "ReduceSum" or ctx.opset >= 18:
        return ctx.emit(op_type, [x, ctx.ints(axes, "axes")], out, **attrs)
    return ctx.emit(op_type, [x], out, axes=list(axes), **attrs)


_ACT = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softrelu": "Softplus",
        "softsign": "Softsign"}


@converts("activation")
def _activation(ctx, node, ins, outs):
    t = node.attr_dict["act_type"]
    if t not in _ACT:
        raise ctx.fail(f"act_type {t!r} has no ONNX conversion")
    ctx.emit(_ACT[t], ins, outs[0])


@converts("leaky_relu")
def _leaky_relu(ctx, node, ins, outs):
    a, x = node.attr_dict, node.inputs[0]
    t = a["act_type"]
    if t == "leaky":
        ctx.emit("LeakyRelu", ins[:1], outs[0], alpha=float(a["slope"]))
    elif t == "rrelu":   # inference: the mean slope
        ctx.emit("LeakyRelu", ins[:1], outs[0],
                 alpha=float((a["lower_bound"] + a["upper_bound"]) / 2))
    elif t == "elu":
        ctx.emit("Elu", ins[:1], outs[0], alpha=float(a["slope"]))
    elif t == "selu":
        ctx.emit("Selu", ins[:1], outs[0], alpha=_SELU_ALPHA, gamma=_SELU_GAMMA)
    elif t == "prelu":   # gamma broadcasts over axis 1 (ONNX's slope broadcasts from the end)
        rank = len(x.type.shape)
        gshape = [-1] + [1] * (rank - 2) if rank > 1 and node.inputs[1].type.shape[0] > 1 \
            else [1]
        ctx.emit("PRelu", [ins[0], ctx.emit("Reshape", [ins[1], ctx.ints(gshape)])], outs[0])
    elif t == "gelu":   # 0.5 x (1 + erf(x / sqrt 2))
        e = ctx.emit("Erf", [ctx.emit("Div", [ins[0], ctx.scalar(math.sqrt(2), x, "sqrt2")])])
        half = ctx.emit("Mul", [ins[0], ctx.scalar(0.5, x, "half")])
        ctx.emit("Mul", [half, ctx.emit("Add", [e, ctx.scalar(1, x, "one")])], outs[0])
    else:
        raise ctx.fail(f"act_type {t!r} has no ONNX conversion")


def _ceil_out(n, k, s, p):
    """ONNX's output size with ceil_mode=1: a last window starting in the right padding is
    dropped (MXNet's 'full' convention keeps it; then explicit pads are used instead)."""
    o = -(-(n + 2 * p - k) // s) + 1
    return o - 1 if (o - 1) * s >= n + p else o


@converts("pooling")
def _pooling(ctx, node, ins, outs):
    _nchw(ctx, node)
    a, x, y = node.attr_dict, node.inputs[0], node.outputs[0]
    t = a["pool_type"]
    if t not in ("max", "avg", "lp"):
        raise ctx.fail(f"pool_type {t!r} has no ONNX conversion")
    p_attr = {"p": int(a["p_value"] or 2)} if t == "lp" else {}
    if a["global_pool"]:
        op = {"max": "GlobalMaxPool", "avg": "GlobalAveragePool", "lp": "GlobalLpPool"}[t]
        ctx.emit(op, ins, outs[0], **p_attr)
        return
    nsp = len(x.type.shape) - 2
    k, s, _, p = _geom(node, nsp)
    # right pads that reach the last window MXNet's convention places (its 'full'/'same'
    # overhang): exact for max and for averages that do not count padding
    n, o = x.type.shape[2:], y.type.shape[2:]
    conv = a["pooling_convention"]
    spatial_dyn = any(ctx.dyn(x)[2:])
    if spatial_dyn and conv == "same":
        raise ctx.fail("convention 'same' with dynamic spatial input dims")
    if conv == "same":
        tot = [max((oi - 1) * si + ki - ni, 0) for ni, oi, ki, si in zip(n, o, k, s)]
        left, right = [t_ // 2 for t_ in tot], [t_ - t_ // 2 for t_ in tot]
    else:
        left = list(p)
        right = [max(pi, (oi - 1) * si + ki - ni - pi) for ni, oi, ki, si, pi in
                 zip(n, o, k, s, p)]
    attrs = {"kernel_shape": list(k), "strides": list(s), **p_attr}
    include = t == "avg" and a["count_include_pad"] in (None, True)
    if conv == "full" and (spatial_dyn or all(_ceil_out(*g) == oi
                                              for g, oi in zip(zip(n, k, s, p), o))):
        attrs.update(pads=list(p) * 2, ceil_mode=1)   # the same windows, symmetric pads
    elif include and right != left:
        raise ctx.fail(f"average pooling (convention {conv!r}) that counts padding, with "
                       "windows ONNX places differently")
    else:
        attrs["pads"] = left + right
    if t == "avg":
        attrs["count_include_pad"] = int(include)
    ctx.emit({"max": "MaxPool", "avg": "AveragePool", "lp": "LpPool"}[t], ins, outs[0],
             **attrs)


def _softmax_family(onnx_op, negate=False):
    def conv(ctx, node, ins, outs):
        a, x = node.attr_dict, node.inputs[0]
        if a.get("use_length"):
            raise ctx.fail("use_length=True has no ONNX conversion")
        if a.get("dtype") not in (None, x.type.dtype):
            raise ctx.fail("a dtype other than the input's")
        data = ins[0]
        if a.get("temperature") not in (None, 1.0):
            data = ctx.emit("Div", [data, ctx.scalar(a["temperature"], x, "temperature")])
        if negate:
            data = ctx.emit("Neg", [data])
        ctx.emit(onnx_op, [data], outs[0], axis=int(a["axis"]))
    return conv


converts("softmax")(_softmax_family("Softmax"))
converts("log_softmax")(_softmax_family("LogSoftmax"))
converts("softmin")(_softmax_family("Softmax", negate=True))


@converts("dropout", "identity", "stop_gradient", "make_loss")
def _identity(ctx, node, ins, outs):
    ctx.emit("Identity", ins[:1], outs[0])


@converts("embedding")
def _embedding(ctx, node, ins, outs):
    idx = ctx.emit("Cast", [ins[0]], to=ctx.onnx.TensorProto.INT64)
    ctx.emit("Gather", [ins[1], idx], outs[0], axis=0)


@converts("l2_normalization")
def _l2_normalization(ctx, node, ins, outs):
    a, x = node.attr_dict, node.inputs[0]
    rank = len(x.type.shape)
    axes = {"instance": list(range(1, rank)), "channel": [1],
            "spatial": list(range(2, rank))}[a["mode"]]
    sq = reduce(ctx, "ReduceSum", ctx.emit("Mul", [ins[0], ins[0]]), axes, keepdims=1)
    norm = ctx.emit("Sqrt", [ctx.emit("Add", [sq, ctx.scalar(a["eps"], x, "eps")])])
    ctx.emit("Div", [ins[0], norm], outs[0])
