"""Shape ops: reshape (MXNet's codes 0/-1/-2/-3/-4), flatten, expand_dims, squeeze, transpose,
swapaxes, concat, stack, split, tile, repeat, depth_to_space, space_to_depth, shape_array.

Rules follow MXNet 1.x ``matrix_op-inl.h`` and keep unknown (None) dims wherever the answer
does not depend on them: ``reshape(x: (B, 3, 4), shape=(0, -1))`` is ``(B, 12)``.
"""
from __future__ import annotations

import numpy as np

from .ops import REQUIRED, OpKind
from .opset_reduce import defop
from .shape_rules import fail, normalize_axis, same_dtype, unify, unify_dim
from .types import TensorType

INJ = OpKind.INJECTIVE


def _prod(dims):
    n = 1
    for d in dims:
        n *= d
    return n


def _same(fn):
    """Shape rule of a unary op whose output shape is ``fn(shape, attrs, in_types)``."""
    def infer(in_types, at):
        x = in_types[0]
        return [TensorType(fn(x.shape, at, in_types), x.dtype)], list(in_types)
    return infer


def _reshape_like_grad(F, ins, outs, g, at):
    return [F.reshape_like(g[0], ins[0])] + [None] * (len(ins) - 1)


# ---- reshape ---------------------------------------------------------------------------------
def _codes(dshape, codes, op, in_types):
    """MXNet's InferReshapeShape, left to right, with unknown dims kept symbolic."""
    tmp, copied, src, inf, i = [], [], 0, -1, 0
    n = len(dshape)

    def need(k):
        if src + k > n:
            fail(op, f"shape {codes} uses more dims than the input has", in_types)

    while i < len(codes):
        c = codes[i]
        if c == 0:
            need(1)
            copied.append(src)
            tmp.append(dshape[src])
            src += 1
        elif c == -1:
            if inf >= 0:
                fail(op, "one and only one dim can be inferred (-1)", in_types)
            inf = len(tmp)
            tmp.append(1)
            src += 1
        elif c == -2:
            copied.extend(range(src, n))
            tmp.extend(dshape[src:])
            src = n
        elif c == -3:
            need(2)
            d1, d2 = dshape[src], dshape[src + 1]
            tmp.append(None if d1 is None or d2 is None else d1 * d2)
            src += 2
        elif c == -4:
            if i + 2 >= len(codes):
                fail(op, "-4 must be followed by two dims", in_types)
            need(1)
            d0, d1, d2 = dshape[src], codes[i + 1], codes[i + 2]
            src, i = src + 1, i + 2
            if d1 == -1 and d2 == -1:
                fail(op, "split dims of -4 cannot both be -1", in_types)
            if d1 == -1:
                d1 = None if d0 is None else d0 // d2
            if d2 == -1:
                d2 = None if d0 is None else d0 // d1
            if d0 is not None and d1 * d2 != d0:
                fail(op, f"split dims {d1}, {d2} do not divide dim {d0}", in_types)
            tmp.extend([d1, d2])
        elif c > 0:
            tmp.append(c)
            src += 1
        else:
            fail(op, f"unknown reshape code {c}", in_types)
        i += 1
    if inf >= 0:
        tmp[inf] = _infer_minus_one(dshape, tmp, inf, copied, op, in_types)
    return tmp


def _infer_minus_one(dshape, tmp, inf, copied, op, in_types):
    """The size of the -1 dim; unknown input dims cancel when copied through unchanged."""
    unknown = {k for k, d in enumerate(dshape) if d is None}
    copies = [j for j in copied if dshape[j] is None]
    if not unknown <= set(copies):
        return None
    rest = [d for j, d in enumerate(tmp) if j != inf]
    if rest.count(None) != len(copies):
        return None
    num = _prod(d for d in dshape if d is not None)
    den = _prod(d for d in rest if d is not None)
    if den == 0 or num % den:
        fail(op, f"cannot infer -1: {num} elements do not divide by {den}", in_types)
    return num // den


def reshape_shape(dshape: tuple, at: dict, op: str = "reshape", in_types=()) -> tuple:
    """Output shape of MXNet's Reshape for input ``dshape`` (dims may be None)."""
    shape, dshape = tuple(at["shape"]), tuple(dshape)
    if shape:
        if at["reverse"]:
            out = _codes(dshape[::-1], shape[::-1], op, in_types)[::-1]
        else:
            out = _codes(dshape, shape, op, in_types)
    elif at["target_shape"]:  # deprecated form: one 0 is inferred, keep_highest keeps dim 0
        out = list(at["target_shape"])
        if at["keep_highest"]:
            out[0] = dshape[0]
        zeros = [j for j in range(1 if at["keep_highest"] else 0, len(out)) if out[j] == 0]
        if len(zeros) == 1:
            known = None not in dshape and None not in out[:zeros[0]] + out[zeros[0] + 1:]
            out[zeros[0]] = 1
            out[zeros[0]] = _prod(dshape) // _prod(out) if known else None
    else:
        fail(op, "shape is required", in_types)
    out = tuple(out)
    if None not in dshape and None not in out and _prod(dshape) != _prod(out):
        fail(op, f"cannot reshape to {out}: sizes differ", in_types)
    return out


def _reshape_infer(in_types, at):
    x = in_types[0]
    out = reshape_shape(x.shape, at, "reshape", in_types)
    refined = x
    if None not in out and x.shape.count(None) == 1:  # MXNet's ReverseReshapeInferShape
        k = x.shape.index(None)
        rest = _prod(d for d in x.shape if d is not None)
        if rest and _prod(out) % rest == 0:
            refined = x.with_shape(x.shape[:k] + (_prod(out) // rest,) + x.shape[k + 1:])
    return [TensorType(out, x.dtype)], [refined]


defop("reshape", INJ, lambda ins, at: ins[0].reshape(reshape_shape(ins[0].shape, at)),
      _reshape_infer, attrs={"shape": (), "reverse": False, "target_shape": (),
                             "keep_highest": False},
      grad=_reshape_like_grad, aliases=("Reshape",), mxnet_name="Reshape",
      doc="Reshape with MXNet's codes: 0 copy, -1 infer, -2 copy rest, -3 merge two, "
          "-4 split one into the next two; `reverse` applies them right to left.")


def _reshape_like_shape(ls, rs, at, in_types):
    def bound(v, default, n):
        v = default if v is None else v
        return v + n if v < 0 else v
    lb, le = bound(at["lhs_begin"], 0, len(ls)), bound(at["lhs_end"], len(ls), len(ls))
    rb, re = bound(at["rhs_begin"], 0, len(rs)), bound(at["rhs_end"], len(rs), len(rs))
    out = tuple(ls[:lb]) + tuple(rs[rb:re]) + tuple(ls[le:])
    if None not in ls and None not in out and _prod(ls) != _prod(out):
        fail("reshape_like", f"cannot reshape lhs to {out}: sizes differ", in_types)
    return out


defop("reshape_like", INJ,
      lambda ins, at: ins[0].reshape(_reshape_like_shape(ins[0].shape, ins[1].shape, at, ())),
      lambda ts, at: ([TensorType(_reshape_like_shape(ts[0].shape, ts[1].shape, at, ts),
                                  ts[0].dtype)], list(ts)),
      inputs=("lhs", "rhs"),
      attrs={"lhs_begin": None, "lhs_end": None, "rhs_begin": None, "rhs_end": None},
      grad=_reshape_like_grad, mxnet_name="reshape_like",
      doc="Reshape lhs[lhs_begin:lhs_end] dims to rhs[rhs_begin:rhs_end] dims.")


def _flatten_shape(s, at, ts):
    if not s:
        return (1, 1)
    rest = s[1:]
    return (s[0], None if None in rest else _prod(rest))


defop("flatten", INJ, lambda ins, at: ins[0].reshape(_flatten_shape(ins[0].shape, at, ())),
      _same(_flatten_shape), grad=_reshape_like_grad, aliases=("Flatten",),
      mxnet_name="Flatten", doc="Collapse all dims but the first: (d0, d1*...*dk).")


def _expand_shape(s, at, ts):
    a = at["axis"]
    if not -len(s) - 1 <= a <= len(s):
        fail("expand_dims", f"axis {a} is out of range for rank {len(s)}", ts)
    a = a + len(s) + 1 if a < 0 else a
    return tuple(s[:a]) + (1,) + tuple(s[a:])


defop("expand_dims", INJ, lambda ins, at: ins[0].reshape(_expand_shape(ins[0].shape, at, ())),
      _same(_expand_shape), attrs={"axis": REQUIRED}, grad=_reshape_like_grad,
      mxnet_name="expand_dims", doc="Insert a size-1 axis at `axis` (in [-ndim-1, ndim]).")


def _squeeze_shape(s, at, ts):
    axis = at["axis"]
    if axis is None:
        drop = {i for i, d in enumerate(s) if d == 1}  # unknown dims are taken as not 1
    else:
        axes = (axis,) if isinstance(axis, int) else axis
        drop = set()
        for a in axes:
            a = normalize_axis(a, len(s), "squeeze", ts)
            if s[a] not in (1, None) or a in drop:
                fail("squeeze", f"cannot squeeze axis {a} of size {s[a]}", ts)
            drop.add(a)
    return tuple(d for i, d in enumerate(s) if i not in drop) or (1,)


defop("squeeze", INJ, lambda ins, at: ins[0].reshape(_squeeze_shape(ins[0].shape, at, ())),
      _same(_squeeze_shape), attrs={"axis": None}, grad=_reshape_like_grad,
      mxnet_name="squeeze", doc="Remove size-1 axes (all, or those in `axis`); (1,) if none left.")


# ---- permutations ----------------------------------------------------------------------------
def _perm(ndim, axes, ts=()):
    if not axes:
        return tuple(range(ndim))[::-1]
    axes = tuple(normalize_axis(a, ndim, "transpose", ts) for a in axes)
    if sorted(axes) != list(range(ndim)):
        fail("transpose", f"axes {axes} are not a permutation of {ndim} axes", ts)
    return axes


def _transpose_grad(F, ins, outs, g, at):
    perm = _perm(ins[0].ndim, at["axes"])
    return [F.transpose(g[0], axes=tuple(int(i) for i in np.argsort(perm)))]


defop("transpose", INJ, lambda ins, at: np.transpose(ins[0], _perm(ins[0].ndim, at["axes"])).copy(),
      _same(lambda s, at, ts: tuple(s[i] for i in _perm(len(s), at["axes"], ts))),
      attrs={"axes": ()}, grad=_transpose_grad, mxnet_name="transpose",
      doc="Permute axes (`axes=()` reverses them).")


def _swap_perm(ndim, at, ts=()):
    p = list(range(ndim))
    a, b = (normalize_axis(at[k], ndim, "swapaxes", ts) for k in ("dim1", "dim2"))
    p[a], p[b] = p[b], p[a]
    return p


defop("swapaxes", INJ,
      lambda ins, at: np.transpose(ins[0], _swap_perm(ins[0].ndim, at)).copy(),
      _same(lambda s, at, ts: tuple(s[i] for i in _swap_perm(len(s), at, ts))),
      attrs={"dim1": 0, "dim2": 0}, aliases=("SwapAxis",), mxnet_name="SwapAxis",
      grad=lambda F, i, o, g, at: [F.swapaxes(g[0], dim1=at["dim1"], dim2=at["dim2"])],
      doc="Interchange axes `dim1` and `dim2`.")


# ---- concat / stack / split ------------------------------------------------------------------
def _concat_infer(in_types, at):
    if not in_types:
        fail("concat", "needs at least one input", in_types)
    same_dtype("concat", in_types)
    nd = in_types[0].ndim
    ax = normalize_axis(at["dim"], nd, "concat", in_types)
    other = list(in_types[0].shape)
    for t in in_types:
        if t.ndim != nd:
            fail("concat", "inputs must have the same rank", in_types)
        for k in range(nd):
            if k != ax:
                other[k] = unify_dim(other[k], t.shape[k], "concat", in_types)
    sizes = [t.shape[ax] for t in in_types]
    other[ax] = None if None in sizes else sum(sizes)
    refined = [t.with_shape(other[:ax] + [t.shape[ax]] + other[ax + 1:]) for t in in_types]
    return [TensorType(tuple(other), in_types[0].dtype)], refined


def _concat_infer_back(in_types, out_types, at):
    """MXNet's ConcatShape: every input has the output's dims off the joined axis."""
    y = out_types[0]
    if y.shape is None:
        return in_types
    ax = normalize_axis(at["dim"], y.ndim, "concat", in_types)
    return [t.with_shape(y.shape[:ax] + (t.shape[ax],) + y.shape[ax + 1:])
            if t.ndim == y.ndim else t for t in in_types]


def _concat_grad(F, ins, outs, g, at):
    ax = normalize_axis(at["dim"], ins[0].ndim, "concat")
    sizes = [x.shape[ax] for x in ins]
    res = []
    for j, n in enumerate(sizes):
        left = None if None in sizes[:j] else sum(sizes[:j])
        right = None if None in sizes[j + 1:] else sum(sizes[j + 1:])
        if left is not None and n is not None:
            begin, end = left, left + n
        elif left is not None and right is not None:
            begin, end = left, -right or None
        elif right is not None and n is not None:
            begin, end = -(right + n), -right or None
        else:
            fail("concat", "gradient needs the sizes of all but one input along dim", [])
        res.append(F.slice_axis(g[0], axis=ax, begin=begin, end=end))
    return res


defop("concat", INJ,
      lambda ins, at: np.concatenate(ins, axis=at["dim"]) if len(ins) > 1 else ins[0].copy(),
      _concat_infer, inputs=("*data",), attrs={"dim": 1, "num_args": None},
      infer_back=_concat_infer_back,
      grad=_concat_grad, aliases=("Concat",), mxnet_name="Concat",
      doc="Join arrays along `dim` (default 1).")


def _stack_infer(in_types, at):
    if not in_types:
        fail("stack", "needs at least one input", in_types)
    same_dtype("stack", in_types)
    shape = in_types[0].shape
    for t in in_types[1:]:
        shape = unify(shape, t.shape, "stack", in_types)
    ax = normalize_axis(at["axis"], len(shape) + 1, "stack", in_types)
    out = shape[:ax] + (len(in_types),) + shape[ax:]
    return [TensorType(out, in_types[0].dtype)], [t.with_shape(shape) for t in in_types]


def _stack_grad(F, ins, outs, g, at):
    if len(ins) == 1:
        return [F.reshape_like(g[0], ins[0])]
    ax = normalize_axis(at["axis"], ins[0].ndim + 1, "stack")
    return list(F.split(g[0], num_outputs=len(ins), axis=ax, squeeze_axis=True))


defop("stack", INJ, lambda ins, at: np.stack(ins, axis=at["axis"]), _stack_infer,
      inputs=("*data",), attrs={"axis": 0, "num_args": None}, grad=_stack_grad,
      mxnet_name="stack", doc="Join same-shaped arrays along a new axis `axis`.")


def _split_shape(s, at, ts):
    n = at["num_outputs"]
    ax = normalize_axis(at["axis"], len(s), "split", ts)
    d = s[ax]
    if d is not None and d % n:
        fail("split", f"{n} outputs do not evenly divide axis {ax} of size {d}", ts)
    if at["squeeze_axis"]:
        if d not in (n, None):
            fail("split", "squeeze_axis needs the axis size to equal num_outputs", ts)
        return tuple(s[:ax]) + tuple(s[ax + 1:])
    return tuple(s[:ax]) + (None if d is None else d // n,) + tuple(s[ax + 1:])


def _split(ins, at):
    x = ins[0]
    shape = _split_shape(x.shape, at, ())
    return tuple(p.copy().reshape(shape)
                 for p in np.split(x, at["num_outputs"], axis=at["axis"]))


def _split_infer(in_types, at):
    x = in_types[0]
    return [TensorType(_split_shape(x.shape, at, in_types), x.dtype)] * at["num_outputs"], \
        list(in_types)


def _split_infer_back(in_types, out_types, at):
    """MXNet's SliceChannel: the input is an output with the split axis num_outputs times as
    long (or, with squeeze_axis, put back with size num_outputs)."""
    x, n = in_types[0], at["num_outputs"]
    if x.shape is None:
        return in_types
    ax = normalize_axis(at["axis"], x.ndim, "split", in_types)
    res = x
    for y in out_types:
        if at["squeeze_axis"] and y.ndim == x.ndim - 1:
            shape = y.shape[:ax] + (n,) + y.shape[ax:]
        elif not at["squeeze_axis"] and y.ndim == x.ndim:
            d = y.shape[ax]
            shape = y.shape[:ax] + (None if d is None else d * n,) + y.shape[ax + 1:]
        else:
            continue
        res = res.with_shape(unify(res.shape, shape, "split", in_types))
    return [res]


def _split_grad(F, ins, outs, g, at):
    ax = normalize_axis(at["axis"], ins[0].ndim, "split")
    gs = [F.expand_dims(x, axis=ax) for x in g] if at["squeeze_axis"] else list(g)
    return [F.concat(*gs, dim=ax) if len(gs) > 1 else F.reshape_like(gs[0], ins[0])]


defop("split", INJ, _split, _split_infer, infer_back=_split_infer_back,
      attrs={"num_outputs": REQUIRED, "axis": 1, "squeeze_axis": False},
      num_outputs=lambda at: at["num_outputs"], grad=_split_grad, aliases=("SliceChannel",),
      mxnet_name="SliceChannel",
      doc="Split into `num_outputs` equal parts along `axis` (optionally dropping the axis).")
