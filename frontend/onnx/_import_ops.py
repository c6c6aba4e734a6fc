"""ONNX op -> ember Symbol converters for :mod:`ember.onnx._import` (the op set ember's
exporter writes, plus the common variants of those ops in models from other tools)."""
from __future__ import annotations

import numpy as np

from ember import symbol as S

from ._import import converts

_BIG = 2 ** 62   # Slice ends at or past this mean "to the end"


def _pads(ix, a, nsp):
    pads = list(a.get("pads", [0] * 2 * nsp))
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise ix.fail(f"auto_pad={a['auto_pad']!r}; export the model with explicit pads")
    if pads[:nsp] != pads[nsp:]:
        raise ix.fail(f"asymmetric pads {pads}: ember's layers pad both sides alike")
    return tuple(pads[:nsp])


@converts("Conv", "ConvTranspose")
def _conv(ix, a):
    w = ix.const(1, "weight")
    nsp = w.ndim - 2
    kw = {"kernel": tuple(a.get("kernel_shape", w.shape[2:])),
          "stride": tuple(a.get("strides", [1] * nsp)),
          "dilate": tuple(a.get("dilations", [1] * nsp)), "pad": _pads(ix, a, nsp),
          "num_group": int(a.get("group", 1)), "no_bias": not ix.has(2)}
    ins = [ix.sym(0), ix.sym(1)] + ([ix.sym(2)] if ix.has(2) else [])
    if ix.node.op_type == "Conv":
        return S.Convolution(*ins, num_filter=w.shape[0], name=ix.name, **kw)
    if "output_shape" in a:
        raise ix.fail("output_shape; export the model with pads and output_padding")
    return S.Deconvolution(*ins, num_filter=w.shape[1] * kw["num_group"],
                           adj=tuple(a.get("output_padding", [0] * nsp)), name=ix.name, **kw)


@converts("Gemm")
def _gemm(ix, a):
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    x = ix.sym(0)
    if a.get("transA", 0):
        x = S.transpose(x)
    w = ix.maybe_const(1)
    c = ix.maybe_const(2) if ix.has(2) else None
    if w is not None and w.ndim == 2 and alpha == 1.0 and beta == 1.0 and \
            (c is None or c.shape == (w.shape[0 if a.get("transB", 0) else 1],)):
        weight = ix.sym(1) if a.get("transB", 0) else S.transpose(ix.sym(1))
        ins = [x, weight] + ([ix.sym(2)] if ix.has(2) else [])
        return S.FullyConnected(*ins, num_hidden=w.shape[0 if a.get("transB", 0) else 1],
                                no_bias=not ix.has(2), flatten=True, name=ix.name)
    y = S.dot(x, ix.sym(1), transpose_b=bool(a.get("transB", 0)))
    y = y * alpha if alpha != 1.0 else y
    if ix.has(2):
        y = S.broadcast_add(y, ix.sym(2) * beta if beta != 1.0 else ix.sym(2))
    return y


@converts("MatMul")
def _matmul(ix, a):
    w = ix.maybe_const(1)
    if w is not None and w.ndim == 2:   # x @ W: a dense layer on the last axis
        return S.FullyConnected(ix.sym(0), S.transpose(ix.sym(1)), num_hidden=w.shape[1],
                                no_bias=True, flatten=False, name=ix.name)
    if ix.rank(ix.node.input[1]) == 2:   # N-D x 2-D: MXNet's dot contracts the same axes
        return S.dot(ix.sym(0), ix.sym(1), name=ix.name)
    return S.batch_dot(ix.sym(0), ix.sym(1), name=ix.name)


@converts("BatchNormalization")
def _batch_norm(ix, a):
    return S.BatchNorm(*[ix.sym(i) for i in range(5)], eps=float(a.get("epsilon", 1e-5)),
                       momentum=float(a.get("momentum", 0.9)), fix_gamma=False,
                       use_global_stats=True, name=ix.name)


@converts("InstanceNormalization")
def _instance_norm(ix, a):
    return S.InstanceNorm(ix.sym(0), ix.sym(1), ix.sym(2), eps=float(a.get("epsilon", 1e-5)),
                          name=ix.name)


@converts("LayerNormalization")
def _layer_norm(ix, a):
    if not ix.has(2):
        raise ix.fail("LayerNormalization without a bias")
    return S.LayerNorm(ix.sym(0), ix.sym(1), ix.sym(2), axis=int(a.get("axis", -1)),
                       eps=float(a.get("epsilon", 1e-5)), name=ix.name)


_ACTS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Softplus": "softrelu",
         "Softsign": "softsign"}


@converts(*_ACTS)
def _activation(ix, a):
    return S.Activation(ix.sym(0), act_type=_ACTS[ix.node.op_type], name=ix.name)


@converts("LeakyRelu", "Elu", "Selu", "PRelu")
def _leaky(ix, a):
    op = ix.node.op_type
    if op == "PRelu":
        slope = ix.maybe_const(1)   # MXNet's gamma is 1-D: (C,) broadcast over axis 1
        if slope is not None:
            ix.consts[ix.node.input[1]] = slope.reshape(-1)
            gamma = ix.sym(1)
        else:
            gamma = S.Reshape(ix.sym(1), shape=(-1,))
        return S.LeakyReLU(ix.sym(0), gamma, act_type="prelu", name=ix.name)
    if op == "Selu":
        if abs(a.get("alpha", 1.67326) - 1.67326) > 1e-4 or \
                abs(a.get("gamma", 1.0507) - 1.0507) > 1e-4:
            raise ix.fail("Selu with other constants than SELU's")
        return S.LeakyReLU(ix.sym(0), act_type="selu", name=ix.name)
    slope = float(a.get("alpha", 0.01 if op == "LeakyRelu" else 1.0))
    return S.LeakyReLU(ix.sym(0), act_type="leaky" if op == "LeakyRelu" else "elu",
                       slope=slope, name=ix.name)


@converts("MaxPool", "AveragePool", "LpPool")
def _pool(ix, a):
    k = tuple(a["kernel_shape"])
    nsp = len(k)
    if any(d != 1 for d in a.get("dilations", [1] * nsp)):
        raise ix.fail("dilated pooling")
    pads = list(a.get("pads", [0] * 2 * nsp))
    t = {"MaxPool": "max", "AveragePool": "avg", "LpPool": "lp"}[ix.node.op_type]
    kw = {"kernel": k, "stride": tuple(a.get("strides", [1] * nsp)), "pool_type": t,
          "pooling_convention": "full" if a.get("ceil_mode", 0) else "valid"}
    x = ix.sym(0)
    if pads[:nsp] != pads[nsp:]:   # max: pad the larger side by hand with -inf
        if t != "max":
            raise ix.fail(f"asymmetric pads {pads} of an {t} pooling")
        width = (0, 0, 0, 0) + tuple(v for pair in zip(pads[:nsp], pads[nsp:]) for v in pair)
        x = S.Pad(x, mode="constant", pad_width=width, constant_value=-np.inf)
        pads = [0] * 2 * nsp
    kw["pad"] = tuple(pads[:nsp])
    if t == "avg":
        kw["count_include_pad"] = bool(a.get("count_include_pad", 0))
    if t == "lp":
        kw["p_value"] = int(a.get("p", 2))
    return S.Pooling(x, name=ix.name, **kw)


@converts("GlobalMaxPool", "GlobalAveragePool", "GlobalLpPool")
def _global_pool(ix, a):
    t = {"GlobalMaxPool": "max", "GlobalAveragePool": "avg", "GlobalLpPool": "lp"}
    kw = {"p_value": int(a.get("p", 2))} if ix.node.op_type == "GlobalLpPool" else {}
    return S.Pooling(ix.sym(0), kernel=(1, 1), global_pool=True,
                     pool_type=t[ix.node.op_type], name=ix.name, **kw)


def _flatten_to_2d(x, axis: int):
    """ONNX's 2-D flattening at ``axis`` (> 0): merge the leading dims, then Flatten."""
    for _ in range(axis - 1):
        x = S.Reshape(x, shape=(-3, -2))
    return S.Flatten(x)


@converts("Flatten")
def _flatten(ix, a):
    axis = int(a.get("axis", 1))
    if axis == 0:
        return S.Reshape(ix.sym(0), shape=(1, -1), name=ix.name)
    if axis < 0:
        raise ix.fail("a negative axis (the input's rank is not known here)")
    return _flatten_to_2d(ix.sym(0), axis) if axis > 1 else S.Flatten(ix.sym(0), name=ix.name)


@converts("Softmax", "LogSoftmax")
def _softmax(ix, a):
    fn = S.softmax if ix.node.op_type == "Softmax" else S.log_softmax
    axis = int(a.get("axis", -1 if ix.opset >= 13 else 1))
    if ix.opset >= 13 or axis == -1:
        return fn(ix.sym(0), axis=axis, name=ix.name)
    x = ix.sym(0)   # before opset 13: over the 2-D flattening at axis
    if axis < 0:
        raise ix.fail("a negative axis before opset 13")
    flat = _flatten_to_2d(x, axis) if axis > 0 else S.Reshape(x, shape=(1, -1))
    return S.reshape_like(fn(flat, axis=-1), x, name=ix.name)


@converts("Concat")
def _concat(ix, a):
    ins = [ix.sym(i) for i in range(len(ix.node.input))]
    return S.Concat(*ins, dim=int(a["axis"]), name=ix.name)


_BINARY = {"Add": ("broadcast_add", "__add__"), "Sub": ("broadcast_sub", "__sub__"),
           "Mul": ("broadcast_mul", "__mul__"), "Div": ("broadcast_div", "__truediv__"),
           "Max": ("broadcast_maximum", None), "Min": ("broadcast_minimum", None),
           "Pow": ("broadcast_power", "__pow__")}
_REVERSED = {"__add__": "__radd__", "__sub__": "__rsub__", "__mul__": "__rmul__",
             "__truediv__": "__rtruediv__", "__pow__": "__rpow__"}


@converts(*_BINARY)
def _binary(ix, a):
    if len(ix.node.input) != 2:
        if ix.node.op_type not in ("Max", "Min"):
            raise ix.fail("other than two inputs")
        ys = [ix.sym(i) for i in range(len(ix.node.input))]
        fn = getattr(S, _BINARY[ix.node.op_type][0])
        out = ys[0]
        for y in ys[1:]:
            out = fn(out, y)
        return out
    bop, method = _BINARY[ix.node.op_type]
    lc, rc = ix.maybe_const(0), ix.maybe_const(1)
    if method and rc is not None and rc.size == 1 and lc is None:   # tensor op scalar
        return getattr(ix.sym(0), method)(float(rc.reshape(())))
    if method and lc is not None and lc.size == 1 and rc is None:   # scalar op tensor
        return getattr(ix.sym(1), _REVERSED[method])(float(lc.reshape(())))
    return getattr(S, bop)(ix.sym(0), ix.sym(1), name=ix.name)


@converts("Sum")
def _sum(ix, a):
    return S.add_n(*[ix.sym(i) for i in range(len(ix.node.input))], name=ix.name)


_COMPARE = {"Equal": "broadcast_equal", "Greater": "broadcast_greater",
            "GreaterOrEqual": "broadcast_greater_equal", "Less": "broadcast_lesser",
            "LessOrEqual": "broadcast_lesser_equal"}


@converts(*_COMPARE)
def _compare(ix, a):   # ONNX's booleans are MXNet's 0/1 of the input dtype
    return getattr(S, _COMPARE[ix.node.op_type])(ix.sym(0), ix.sym(1), name=ix.name)


_UNARY = {"Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Abs": "abs", "Neg": "negative",
          "Reciprocal": "reciprocal", "Floor": "floor", "Ceil": "ceil", "Sin": "sin",
          "Cos": "cos", "Tan": "tan", "Asin": "arcsin", "Acos": "arccos", "Atan": "arctan",
          "Sinh": "sinh", "Cosh": "cosh", "Asinh": "arcsinh", "Acosh": "arccosh",
          "Atanh": "arctanh", "Erf": "erf", "Sign": "sign", "Not": "logical_not",
          "Identity": "identity", "Dropout": "identity"}


@converts(*_UNARY)
def _unary(ix, a):
    return getattr(S, _UNARY[ix.node.op_type])(ix.sym(0), name=ix.name)


@converts("Constant")
def _constant(ix, a):
    for key in ("value", "value_float", "value_int", "value_floats", "value_ints"):
        if key in a:
            ix.consts[ix.node.output[0]] = np.asarray(a[key])
            return None
    raise ix.fail(f"attributes {sorted(a)}")


@converts("Shape")
def _shape(ix, a):
    if a.get("start", 0) != 0 or "end" in a:
        raise ix.fail("Shape with start/end")
    ix.shape_of[ix.node.output[0]] = ix.sym(0)
    return S.shape_array(ix.sym(0))


@converts("Reshape")
def _reshape(ix, a):
    if ix.node.input[1] in ix.shape_of:
        return S.reshape_like(ix.sym(0), ix.shape_of[ix.node.input[1]], name=ix.name)
    shape = [int(d) for d in ix.const(1, "shape")]
    if a.get("allowzero", 0) and 0 in shape:
        raise ix.fail("allowzero=1 with a 0 in the shape")
    return S.Reshape(ix.sym(0), shape=tuple(shape), name=ix.name)


@converts("Expand")
def _expand(ix, a):
    if ix.node.input[1] in ix.shape_of:
        return S.broadcast_like(ix.sym(0), ix.shape_of[ix.node.input[1]], name=ix.name)
    shape = tuple(0 if d == 1 else int(d) for d in ix.const(1, "shape"))  # 0 keeps the dim
    return S.broadcast_to(ix.sym(0), shape=shape, name=ix.name)


@converts("Transpose")
def _transpose(ix, a):
    ix.ranks[ix.node.output[0]] = ix.rank(ix.node.input[0])
    return S.transpose(ix.sym(0), axes=tuple(a.get("perm", ())), name=ix.name)


@converts("Clip")
def _clip(ix, a):
    big = float(np.finfo(np.float32).max)
    lo = ix.const(1, "min") if ix.has(1) else a.get("min", -big)
    hi = ix.const(2, "max") if ix.has(2) else a.get("max", big)
    return S.clip(ix.sym(0), a_min=float(np.asarray(lo)), a_max=float(np.asarray(hi)),
                  name=ix.name)


def _axes(ix, a, i: int):
    """A node's ``axes`` (an attribute before opset 13/18, an input after), or None."""
    if "axes" in a:
        return [int(x) for x in a["axes"]]
    if ix.has(i):
        return [int(x) for x in ix.const(i, "axes").reshape(-1)]
    return None


@converts("Unsqueeze")
def _unsqueeze(ix, a):
    x = ix.sym(0)
    axes = _axes(ix, a, 1)
    if any(i < 0 for i in axes):
        raise ix.fail("negative axes (the output's rank is not known here)")
    for i in sorted(axes):
        x = S.expand_dims(x, axis=i)
    return x


@converts("Squeeze")
def _squeeze(ix, a):
    axes = _axes(ix, a, 1)
    return S.squeeze(ix.sym(0), axis=None if axes is None else tuple(axes), name=ix.name)


@converts("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd")
def _reduce(ix, a):
    fn = {"ReduceSum": S.sum, "ReduceMean": S.mean, "ReduceMax": S.max, "ReduceMin": S.min,
          "ReduceProd": S.prod}[ix.node.op_type]
    axes = _axes(ix, a, 1)
    if not axes and a.get("noop_with_empty_axes", 0):
        return S.identity(ix.sym(0), name=ix.name)
    return fn(ix.sym(0), axis=tuple(axes) if axes else None,
              keepdims=bool(a.get("keepdims", 1)), name=ix.name)


@converts("Cast")
def _cast(ix, a):
    dt = ix.onnx.helper.tensor_dtype_to_np_dtype(int(a["to"]))
    if dt == np.bool_:   # MXNet has no booleans: nonzero as 0/1 of the input dtype
        return S.broadcast_not_equal(ix.sym(0), S.zeros_like(ix.sym(0)), name=ix.name)
    return S.Cast(ix.sym(0), dtype=np.dtype(dt).name, name=ix.name)


@converts("Where")
def _where(ix, a):
    return S.where(ix.sym(0), ix.sym(1), ix.sym(2), name=ix.name)


@converts("Gather")
def _gather(ix, a):
    axis = int(a.get("axis", 0))
    return S.take(ix.sym(0), ix.sym(1), axis=axis, mode="wrap", name=ix.name)


@converts("Slice")
def _slice(ix, a):
    starts, ends = ix.const(1, "starts"), ix.const(2, "ends")
    axes = ix.const(3, "axes") if ix.has(3) else np.arange(len(starts))
    steps = ix.const(4, "steps") if ix.has(4) else np.ones(len(starts), np.int64)
    if (axes < 0).any():
        raise ix.fail("negative axes (the input's rank is not known here)")
    n = int(axes.max()) + 1
    begin, end, step = [None] * n, [None] * n, [None] * n
    for ax, b, e, s in zip(axes, starts, ends, steps):
        begin[ax] = int(b) if not (s < 0 and b >= _BIG) else None
        end[ax] = None if abs(int(e)) >= _BIG else int(e)
        step[ax] = int(s)
    return S.slice(ix.sym(0), begin=tuple(begin), end=tuple(end), step=tuple(step),
                   name=ix.name)


@converts("Split")
def _split(ix, a):
    axis, k = int(a.get("axis", 0)), len(ix.node.output)
    sizes = ix.maybe_const(1) if ix.has(1) else a.get("split")
    if sizes is not None and len(set(int(s) for s in sizes)) > 1:
        raise ix.fail("unequal split sizes")
    out = S.SliceChannel(ix.sym(0), num_outputs=k, axis=axis, name=ix.name)
    return [out[i] for i in range(k)] if k > 1 else [out]


@converts("Pad")
def _pad(ix, a):
    pads = [int(p) for p in (ix.const(1, "pads") if ix.has(1) else a["pads"])]
    if ix.has(3):
        raise ix.fail("Pad with axes")
    value = float(ix.const(2, "value")) if ix.has(2) else float(a.get("value", 0.0))
    n = len(pads) // 2
    width = tuple(v for pair in zip(pads[:n], pads[n:]) for v in pair)
    return S.Pad(ix.sym(0), mode=a.get("mode", "constant"), pad_width=width,
                 constant_value=value, name=ix.name)


@converts("Tile")
def _tile(ix, a):
    reps = tuple(int(r) for r in ix.const(1, "repeats"))
    return S.tile(ix.sym(0), reps=reps, name=ix.name)
