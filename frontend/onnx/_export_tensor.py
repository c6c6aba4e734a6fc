"""ONNX converters for tensor ops: elementwise arithmetic (tensor and scalar forms),
comparisons, unary math, reductions, and the shape family (reshape, transpose, concat,
stack, split, slice, pad, tile, broadcast...)."""
from __future__ import annotations

import math

import numpy as np

from ._export import converts
from ._export_nn import reduce

_INT_MAX = 2 ** 63 - 1

_BINARY = {"add": "Add", "elemwise_add": "Add", "sub": "Sub", "elemwise_sub": "Sub",
           "mul": "Mul", "elemwise_mul": "Mul", "div": "Div", "elemwise_div": "Div",
           "maximum": "Max", "minimum": "Min", "power": "Pow"}
_SCALAR = {"add_scalar": "Add", "sub_scalar": "Sub", "mul_scalar": "Mul", "div_scalar": "Div",
           "power_scalar": "Pow", "maximum_scalar": "Max", "minimum_scalar": "Min",
           "rsub_scalar": "-Sub", "rdiv_scalar": "-Div", "rpower_scalar": "-Pow"}
_COMPARE = {"equal": ("Equal", False), "not_equal": ("Equal", True),
            "greater": ("Greater", False), "greater_equal": ("GreaterOrEqual", False),
            "lesser": ("Less", False), "lesser_equal": ("LessOrEqual", False)}
_UNARY = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "exp": "Exp", "log": "Log",
          "sqrt": "Sqrt", "abs": "Abs", "negative": "Neg", "reciprocal": "Reciprocal",
          "floor": "Floor", "ceil": "Ceil", "sin": "Sin", "cos": "Cos", "tan": "Tan",
          "arcsin": "Asin", "arccos": "Acos", "arctan": "Atan", "sinh": "Sinh", "cosh": "Cosh",
          "arcsinh": "Asinh", "arccosh": "Acosh", "arctanh": "Atanh", "erf": "Erf",
          "sign": "Sign", "softsign": "Softsign", "softrelu": "Softplus"}


@converts(*_BINARY)
def _binary(ctx, node, ins, outs):
    ctx.emit(_BINARY[node.op.name], ins, outs[0])


@converts(*_SCALAR)
def _scalar(ctx, node, ins, outs):
    op = _SCALAR[node.op.name]
    c = ctx.scalar(node.attr_dict["scalar"], node.inputs[0])
    ctx.emit(op.lstrip("-"), [c, ins[0]] if op[0] == "-" else [ins[0], c], outs[0])


def _compare(ctx, node, a, b, out):
    op, negate = _COMPARE[node.op.name.removesuffix("_scalar")]
    r = ctx.emit(op, [a, b])
    if negate:
        r = ctx.emit("Not", [r])
    dt = ctx.helper.np_dtype_to_tensor_dtype(np.dtype(node.outputs[0].type.dtype))
    ctx.emit("Cast", [r], out, to=dt)   # MXNet's comparisons give 0/1 in the input dtype


@converts(*_COMPARE)
def _compare_tensor(ctx, node, ins, outs):
    _compare(ctx, node, ins[0], ins[1], outs[0])


@converts(*(k + "_scalar" for k in _COMPARE))
def _compare_scalar(ctx, node, ins, outs):
    _compare(ctx, node, ins[0], ctx.scalar(node.attr_dict["scalar"], node.inputs[0]), outs[0])


@converts(*_UNARY)
def _unary(ctx, node, ins, outs):
    ctx.emit(_UNARY[node.op.name], ins, outs[0])


@converts("square", "rsqrt", "log2", "log10", "log1p", "expm1")
def _composed_unary(ctx, node, ins, outs):
    x, v, op = ins[0], node.inputs[0], node.op.name
    if op == "square":
        ctx.emit("Mul", [x, x], outs[0])
    elif op == "rsqrt":
        ctx.emit("Reciprocal", [ctx.emit("Sqrt", [x])], outs[0])
    elif op in ("log2", "log10"):
        base = math.log(2 if op == "log2" else 10)
        ctx.emit("Div", [ctx.emit("Log", [x]), ctx.scalar(base, v, "ln_base")], outs[0])
    elif op == "log1p":
        ctx.emit("Log", [ctx.emit("Add", [x, ctx.scalar(1, v, "one")])], outs[0])
    else:
        ctx.emit("Sub", [ctx.emit("Exp", [x]), ctx.scalar(1, v, "one")], outs[0])


@converts("add_n")
def _add_n(ctx, node, ins, outs):
    ctx.emit("Sum", ins, outs[0])


@converts("clip")
def _clip(ctx, node, ins, outs):
    a, v = node.attr_dict, node.inputs[0]
    ctx.emit("Clip", [ins[0], ctx.scalar(a["a_min"], v, "min"), ctx.scalar(a["a_max"], v, "max")],
             outs[0])


@converts("cast")
def _cast(ctx, node, ins, outs):
    dt = ctx.helper.np_dtype_to_tensor_dtype(np.dtype(node.outputs[0].type.dtype))
    ctx.emit("Cast", ins, outs[0], to=dt)


@converts("where")
def _where(ctx, node, ins, outs):
    cond = ctx.emit("Cast", [ins[0]], to=ctx.onnx.TensorProto.BOOL)
    ctx.emit("Where", [cond] + ins[1:], outs[0])


_REDUCE = {"sum": "ReduceSum", "mean": "ReduceMean", "max": "ReduceMax", "min": "ReduceMin",
           "prod": "ReduceProd"}


@converts(*_REDUCE)
def _reduce(ctx, node, ins, outs):
    a, rank = node.attr_dict, len(node.inputs[0].type.shape)
    axis = a["axis"]
    axes = None if axis is None or axis == () else \
        sorted({int(i) % rank for i in ((axis,) if isinstance(axis, int) else axis)})
    if a["exclude"]:
        axes = [i for i in range(rank) if i not in (axes or [])]
    if axes == [] and not a["exclude"]:
        axes = None
    if axes == []:   # nothing to reduce
        ctx.emit("Identity", ins, outs[0])
        return
    reduce(ctx, _REDUCE[node.op.name], ins[0], axes, outs[0], keepdims=a["keepdims"])


@converts("flatten")
def _flatten(ctx, node, ins, outs):
    ctx.emit("Flatten", ins, outs[0], axis=1)


def _target_shape(ctx, x, y, what):
    """An ONNX Reshape/Expand target for ``y``'s shape: fixed dims as numbers, the dims that
    follow a dynamic input dim as 0 (copy the same position of ``x``) or -1 (one at most)."""
    xs, ys, xd, yd = x.type.shape, y.type.shape, ctx.dyn(x), ctx.dyn(y)
    out = []
    for i, (n, d) in enumerate(zip(ys, yd)):
        if not d:
            out.append(n)
        elif i < len(xs) and xd[i] and xs[i] == n and ctx.dyn_same(x, i, y, i):
            out.append(0)
        else:
            out.append(-1)
    if out.count(-1) > 1:
        raise ctx.fail(f"the {what} mixes several dynamic dims; export with fixed shapes")
    if 0 in ys:
        raise ctx.fail(f"a {what} to a shape with a 0 dim")
    return out


@converts("reshape", "reshape_like")
def _reshape(ctx, node, ins, outs):
    x, y = node.inputs[0], node.outputs[0]
    if node.op.name == "reshape_like" and any(ctx.dyn(y)) and \
            node.inputs[1].type.shape == y.type.shape:
        ctx.emit("Reshape", [ins[0], ctx.emit("Shape", [ins[1]])], outs[0])
        return
    ctx.emit("Reshape", [ins[0], ctx.ints(_target_shape(ctx, x, y, "reshape"))], outs[0])


@converts("transpose", "swapaxes")
def _transpose(ctx, node, ins, outs):
    a, rank = node.attr_dict, len(node.inputs[0].type.shape)
    if node.op.name == "swapaxes":
        perm = list(range(rank))
        i, j = int(a["dim1"]) % rank, int(a["dim2"]) % rank
        perm[i], perm[j] = perm[j], perm[i]
    else:
        perm = [int(i) % rank for i in a["axes"]] or list(reversed(range(rank)))
    ctx.emit("Transpose", ins, outs[0], perm=perm)


@converts("expand_dims")
def _expand_dims(ctx, node, ins, outs):
    axis = int(node.attr_dict["axis"]) % len(node.outputs[0].type.shape)
    ctx.emit("Unsqueeze", [ins[0], ctx.ints([axis], "axes")], outs[0])


@converts("squeeze")
def _squeeze(ctx, node, ins, outs):
    axis, x = node.attr_dict["axis"], node.inputs[0]
    if axis is None:
        axes = [i for i, n in enumerate(x.type.shape) if n == 1 and not ctx.dyn(x)[i]]
    else:
        axes = [int(i) % len(x.type.shape) for i in ((axis,) if isinstance(axis, int) else axis)]
    ctx.emit("Squeeze", [ins[0], ctx.ints(axes, "axes")], outs[0])


@converts("concat")
def _concat(ctx, node, ins, outs):
    ctx.emit("Concat", ins, outs[0], axis=int(node.attr_dict["dim"]))


@converts("stack")
def _stack(ctx, node, ins, outs):
    axis = int(node.attr_dict["axis"]) % len(node.outputs[0].type.shape)
    axes = ctx.ints([axis], "axes")
    ctx.emit("Concat", [ctx.emit("Unsqueeze", [x, axes]) for x in ins], outs[0], axis=axis)


@converts("split")
def _split(ctx, node, ins, outs):
    a, x = node.attr_dict, node.inputs[0]
    axis, k = int(a["axis"]) % len(x.type.shape), int(a["num_outputs"])
    if ctx.dyn(x)[axis]:
        raise ctx.fail("splitting a dynamic dim")
    sizes = ctx.ints([x.type.shape[axis] // k] * k, "split")
    if not a["squeeze_axis"]:
        ctx.emit("Split", [ins[0], sizes], outs, axis=axis)
        return
    pieces = ctx.emit("Split", [ins[0], sizes], n_out=k, axis=axis)
    pieces = [pieces] if k == 1 else pieces
    for p, o in zip(pieces, outs):
        ctx.emit("Squeeze", [p, ctx.ints([axis], "axes")], o)


def _slice(ctx, ins, out, starts, ends, axes, steps):
    ctx.emit("Slice", [ins[0], ctx.ints(starts, "starts"), ctx.ints(ends, "ends"),
                       ctx.ints(axes, "axes"), ctx.ints(steps, "steps")], out)


@converts("slice")
def _slice_op(ctx, node, ins, outs):
    a = node.attr_dict
    begin, end = list(a["begin"]), list(a["end"])
    step = list(a["step"] or ()) + [None] * (len(begin) - len(a["step"] or ()))
    starts, ends, steps = [], [], []
    for b, e, s in zip(begin, end, step):
        s = 1 if s is None else int(s)
        starts.append((0 if s > 0 else -1) if b is None else int(b))
        ends.append((_INT_MAX if s > 0 else -_INT_MAX - 1) if e is None else int(e))
        steps.append(s)
    _slice(ctx, ins, outs[0], starts, ends, list(range(len(begin))), steps)


@converts("slice_axis")
def _slice_axis(ctx, node, ins, outs):
    a = node.attr_dict
    end = _INT_MAX if a["end"] is None else int(a["end"])
    _slice(ctx, ins, outs[0], [int(a["begin"])], [end], [int(a["axis"])], [1])


@converts("pad")
def _pad(ctx, node, ins, outs):
    a, x = node.attr_dict, node.inputs[0]
    pw = [int(p) for p in a["pad_width"]]
    pads = pw[0::2] + pw[1::2]
    ctx.emit("Pad", [ins[0], ctx.ints(pads, "pads"),
                     ctx.scalar(a["constant_value"], x, "value")], outs[0], mode=a["mode"])


@converts("tile")
def _tile(ctx, node, ins, outs):
    reps, rank = [int(r) for r in node.attr_dict["reps"]], len(node.inputs[0].type.shape)
    if len(reps) > rank:
        raise ctx.fail("reps longer than the input's rank")
    ctx.emit("Tile", [ins[0], ctx.ints([1] * (rank - len(reps)) + reps, "reps")], outs[0])


@converts("broadcast_to", "broadcast_axis")
def _broadcast_to(ctx, node, ins, outs):
    x, y = node.inputs[0], node.outputs[0]
    shape = []
    for n, m, d in zip(x.type.shape, y.type.shape, ctx.dyn(y)):
        if n == m:
            shape.append(1)   # Expand broadcasts both ways: 1 keeps the input's dim
        elif d:
            raise ctx.fail("broadcasting to a dynamic dim")
        else:
            shape.append(m)
    ctx.emit("Expand", [ins[0], ctx.ints(shape)], outs[0])


@converts("broadcast_like")
def _broadcast_like(ctx, node, ins, outs):
    a = node.attr_dict
    if a.get("lhs_axes") is not None or a.get("rhs_axes") is not None:
        raise ctx.fail("broadcast_like with lhs_axes/rhs_axes")
    ctx.emit("Expand", [ins[0], ctx.emit("Shape", [ins[1]])], outs[0])


def _swap_last(ctx, name, rank):
    return ctx.emit("Transpose", [name], perm=list(range(rank - 2)) + [rank - 1, rank - 2])


@converts("dot", "batch_dot")
def _dot(ctx, node, ins, outs):
    a = node.attr_dict
    lhs, rhs = node.inputs
    ra, rb = len(lhs.type.shape), len(rhs.type.shape)
    if node.op.name == "dot" and (rb != 2 or (a["transpose_a"] and ra != 2)):
        raise ctx.fail("dot other than (N-D x 2-D) or (2-D x 2-D) with transpose_a")
    x = _swap_last(ctx, ins[0], ra) if a["transpose_a"] else ins[0]
    y = _swap_last(ctx, ins[1], rb) if a["transpose_b"] else ins[1]
    ctx.emit("MatMul", [x, y], outs[0])
