"""Reductions (sum, mean, max, min, prod, nansum, nanprod, norm, argmax, argmin) and their
adjoints, the broadcasts (broadcast_to, broadcast_like, broadcast_axis, sum_like).

Attribute names and shapes follow MXNet 1.x ``broadcast_reduce_op.h``: ``axis`` is None, an
int or a tuple; ``exclude`` reduces the axes NOT listed; reducing every axis without
``keepdims`` gives shape ``(1,)`` (legacy MXNet, never a 0-d array). ``argmax``/``argmin``
return indices in the input's dtype (float32 for float32 data), as MXNet does.
"""
from __future__ import annotations

import numpy as np

from .errors import ShapeError
from .ops import OpDef, OpKind
from .ops import defop as _defop
from .shape_rules import fail, normalize_axis, unify_dim
from .types import TensorType

R, B = OpKind.REDUCE, OpKind.BROADCAST


def defop(name: str, kind: OpKind, compute, infer, **kw) -> OpDef:
    """Register an op whose kernel's shape complaints are re-said by its rule.

    Kernels reuse the rules' helpers without input types at hand; a ShapeError they raise
    becomes a plain error, so eager dispatch runs the op's rule on the real input types and
    reports the op with the shapes (``ndarray.invoke``).
    """
    def checked(ins, at):
        try:
            return compute(ins, at)
        except ShapeError as e:
            raise ValueError(str(e)) from None
    return _defop(name, kind, checked, infer, **kw)


# ---- axis bookkeeping ------------------------------------------------------------------------
def reduced_axes(ndim: int, axis, exclude: bool = False, op: str = "", in_types=()) -> tuple:
    """The sorted axes a reduction with MXNet's ``axis``/``exclude`` attributes reduces."""
    if axis is None or axis == ():
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    axes = sorted(normalize_axis(a, ndim, op, in_types) for a in axes)
    if len(set(axes)) != len(axes):
        fail(op, f"reduction axes {axis} have duplicates", in_types)
    if exclude:
        return tuple(i for i in range(ndim) if i not in axes)
    return tuple(axes)


def reduced_shape(shape: tuple, axes: tuple, keepdims: bool) -> tuple:
    """Output shape of a reduction over ``axes`` (``(1,)`` when nothing is left)."""
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    out = tuple(d for i, d in enumerate(shape) if i not in axes)
    return out or (1,)


def _axes_of(x, at, name):
    if "exclude" in at:
        return reduced_axes(x.ndim, at["axis"], at["exclude"], name)
    return reduced_axes(x.ndim, at["axis"], False, name)


def keepdims_grad(F, g, x, axes: tuple, keepdims: bool):
    """``g`` (the head gradient of a reduction over ``axes``) in keepdims form."""
    if keepdims:
        return g
    if len(axes) == x.ndim:
        return F.reshape(g, shape=(1,) * x.ndim)
    for a in axes:
        g = F.expand_dims(g, axis=a)
    return g


def _reduce_infer(name, dtype=None):
    def infer(in_types, at):
        x = in_types[0]
        axes = reduced_axes(x.ndim, at["axis"], at.get("exclude", False), name, in_types)
        out = reduced_shape(x.shape, axes, at["keepdims"])
        return [TensorType(out, dtype(at, x) if dtype else x.dtype)], list(in_types)
    return infer


def _reduction(fn):
    def compute(ins, at):
        x = ins[0]
        axes = reduced_axes(x.ndim, at["axis"], at.get("exclude", False))
        res = np.asarray(fn(x, axis=axes, keepdims=True))
        return res.reshape(reduced_shape(x.shape, axes, at["keepdims"])).astype(x.dtype,
                                                                                copy=False)
    return compute


# ---- gradient rules ------------------------------------------------------------------------
def _sum_grad(F, ins, outs, g, at):
    x = ins[0]
    gk = keepdims_grad(F, g[0], x, _axes_of(x, at, "sum"), at["keepdims"])
    return [F.broadcast_like(gk, x)]


def _mean_grad(F, ins, outs, g, at):
    x = ins[0]
    axes = _axes_of(x, at, "mean")
    gk = keepdims_grad(F, g[0], x, axes, at["keepdims"])
    dims = [x.shape[a] for a in axes]
    if all(d is not None for d in dims):
        return [F.broadcast_like(gk, x) * (1.0 / max(int(np.prod(dims)), 1))]
    return [F.broadcast_like(gk / F.sum_like(F.ones_like(x), gk), x)]


def _extremum_grad(F, ins, outs, g, at):
    """Gradient to every position equal to the extremum (MXNet's ``eq`` backward)."""
    x = ins[0]
    axes = _axes_of(x, at, "max")
    gk = keepdims_grad(F, g[0], x, axes, at["keepdims"])
    yk = keepdims_grad(F, outs[0], x, axes, at["keepdims"])
    mask = F.equal(x, F.broadcast_like(yk, x))
    return [F.broadcast_like(gk, x) * mask]


def _prod_grad(F, ins, outs, g, at):
    x = ins[0]
    axes = _axes_of(x, at, "prod")
    gk = keepdims_grad(F, g[0], x, axes, at["keepdims"])
    yk = keepdims_grad(F, outs[0], x, axes, at["keepdims"])
    return [F.broadcast_like(gk * yk, x) / x]


def _nansum_grad(F, ins, outs, g, at):
    x = ins[0]
    gk = keepdims_grad(F, g[0], x, _axes_of(x, at, "nansum"), at["keepdims"])
    return [F.broadcast_like(gk, x) * F.equal(x, x)]


def _nanprod_grad(F, ins, outs, g, at):
    x = ins[0]
    axes = _axes_of(x, at, "nanprod")
    gk = keepdims_grad(F, g[0], x, axes, at["keepdims"])
    yk = keepdims_grad(F, outs[0], x, axes, at["keepdims"])
    full = F.broadcast_like(gk * yk, x)
    return [F.where(F.equal(x, x), full / x, F.zeros_like(x))]


_REDUCE_ATTRS = {"axis": None, "keepdims": False, "exclude": False}
for _name, _fn, _grad, _aliases in (
        ("sum", np.sum, _sum_grad, ("sum_axis",)),
        ("mean", np.mean, _mean_grad, ()),
        ("max", np.max, _extremum_grad, ("max_axis",)),
        ("min", np.min, _extremum_grad, ("min_axis",)),
        ("prod", np.prod, _prod_grad, ()),
        ("nansum", np.nansum, _nansum_grad, ()),
        ("nanprod", np.nanprod, _nanprod_grad, ())):
    defop(_name, R, _reduction(_fn), _reduce_infer(_name), attrs=dict(_REDUCE_ATTRS),
          grad=_grad, aliases=_aliases, mxnet_name=_name,
          doc=f"{_name} over `axis` (None: all axes; `exclude`: the axes not listed).")


# ---- norm ----------------------------------------------------------------------------------
def _norm(ins, at):
    x = ins[0]
    if at["ord"] not in (1, 2):
        raise ValueError(f"norm: ord must be 1 or 2, not {at['ord']}")
    axes = reduced_axes(x.ndim, at["axis"])
    xa = x.astype(np.float64)
    r = np.sum(np.abs(xa), axis=axes, keepdims=True) if at["ord"] == 1 else \
        np.sqrt(np.sum(xa * xa, axis=axes, keepdims=True))
    return r.reshape(reduced_shape(x.shape, axes, at["keepdims"])).astype(
        at["out_dtype"] or x.dtype)


def _norm_grad(F, ins, outs, g, at):
    x = ins[0]
    axes = reduced_axes(x.ndim, at["axis"])
    gk = keepdims_grad(F, g[0], x, axes, at["keepdims"])
    if at["ord"] == 1:
        return [F.broadcast_like(gk, x) * F.sign(x)]
    yk = keepdims_grad(F, outs[0], x, axes, at["keepdims"])
    return [F.broadcast_like(gk / yk, x) * x]


defop("norm", R, _norm, _reduce_infer("norm", lambda at, x: at["out_dtype"] or x.dtype),
      attrs={"ord": 2, "axis": None, "out_dtype": None, "keepdims": False}, grad=_norm_grad,
      mxnet_name="norm", doc="L1 (`ord=1`) or L2 (`ord=2`, Frobenius) norm over `axis`.")


# ---- argmax / argmin: indices as floats in the data's dtype (legacy MXNet) ------------------
def _arg_shape(shape, axis, keepdims):
    """MXNet's ReduceAxisShapeImpl: a global search unless `axis` is given (and ndim > 1)."""
    if axis is None or len(shape) == 1:
        return (1,) * len(shape) if keepdims else (1,)
    return reduced_shape(shape, (axis,), keepdims)


def _search(fn):
    def compute(ins, at):
        x = ins[0]
        if at["axis"] is None:
            res = np.asarray(fn(x.reshape(-1)))
        else:
            res = fn(x, axis=normalize_axis(at["axis"], x.ndim, "argmax"))
        ax = None if at["axis"] is None else normalize_axis(at["axis"], x.ndim, "argmax")
        return np.asarray(res).reshape(_arg_shape(x.shape, ax, at["keepdims"])).astype(x.dtype)
    return compute


def _arg_infer(name):
    def infer(in_types, at):
        x = in_types[0]
        ax = None if at["axis"] is None else normalize_axis(at["axis"], x.ndim, name, in_types)
        return [TensorType(_arg_shape(x.shape, ax, at["keepdims"]), x.dtype)], list(in_types)
    return infer


for _name, _fn in (("argmax", np.argmax), ("argmin", np.argmin)):
    defop(_name, R, _search(_fn), _arg_infer(_name), attrs={"axis": None, "keepdims": False},
          grad=lambda F, i, o, g, at: [None], mxnet_name=_name,
          doc=f"Indices of the {_name[3:]}ima along `axis` (first occurrence), as floats.")
defop("argmax_channel", R,
      lambda ins, at: _search(np.argmax)(ins, {"axis": 1 if ins[0].ndim > 1 else None,
                                               "keepdims": False}),
      lambda ts, at: _arg_infer("argmax_channel")(ts, {"axis": 1 if ts[0].ndim > 1 else None,
                                                       "keepdims": False}),
      grad=lambda F, i, o, g, at: [None], mxnet_name="argmax_channel",
      doc="argmax along axis 1 (legacy MXNet).")


# ---- broadcasts, and their adjoint sum_like ------------------------------------------------
def _broadcast_to_shape(shape, target, op, in_types):
    if len(shape) != len(target):
        fail(op, f"cannot broadcast to {target}: ranks differ", in_types)
    out = []
    for d, t in zip(shape, target):
        if t == 0:
            out.append(d)
        elif d is None or d == 1 or d == t:
            out.append(t)
        else:
            fail(op, f"cannot broadcast to {target}", in_types)
    return tuple(out)


def _broadcast_to_infer(in_types, at):
    x = in_types[0]
    return [TensorType(_broadcast_to_shape(x.shape, at["shape"], "broadcast_to", in_types),
                       x.dtype)], list(in_types)


def _broadcast_to(ins, at):
    x = ins[0]
    shape = _broadcast_to_shape(x.shape, at["shape"], "broadcast_to", [])
    return np.array(np.broadcast_to(x, shape))


defop("broadcast_to", B, _broadcast_to, _broadcast_to_infer, attrs={"shape": ()},
      grad=lambda F, i, o, g, at: [F.sum_like(g[0], i[0])], mxnet_name="broadcast_to",
      doc="Broadcast to `shape`; a 0 in `shape` keeps that dim.")


def _like_shape(lhs, rhs, at, in_types):
    la, ra = at["lhs_axes"], at["rhs_axes"]
    if la is None or ra is None:
        if len(lhs) < len(rhs):  # NumPy-style leading axes (a superset of MXNet)
            lhs = (1,) * (len(rhs) - len(lhs)) + tuple(lhs)
        if len(lhs) != len(rhs):
            fail("broadcast_like", "ranks differ", in_types)
        out = []
        for d, t in zip(lhs, rhs):
            if d is None or d == 1:
                out.append(t)
            elif t is None:
                out.append(d)
            else:
                out.append(unify_dim(d, t, "broadcast_like", in_types))
        return tuple(out)
    la, ra = (la,) if isinstance(la, int) else la, (ra,) if isinstance(ra, int) else ra
    if len(la) != len(ra) or not la:
        fail("broadcast_like", "lhs_axes and rhs_axes must be non-empty and match", in_types)
    out = list(lhs)
    for a, b in zip(la, ra):
        a = normalize_axis(a, len(lhs), "broadcast_like", in_types)
        b = normalize_axis(b, len(rhs), "broadcast_like", in_types)
        if lhs[a] not in (1, None, rhs[b]) and rhs[b] is not None:
            fail("broadcast_like", f"axis {a} of size {lhs[a]} cannot be broadcast", in_types)
        out[a] = rhs[b]
    return tuple(out)


def _broadcast_like(ins, at):
    x, like = ins
    shape = _like_shape(x.shape, like.shape, at, [])
    return np.array(np.broadcast_to(x, shape))


def _broadcast_like_infer(in_types, at):
    x, like = in_types
    out = _like_shape(x.shape, like.shape, at, in_types)
    return [TensorType(out, x.dtype)], list(in_types)


defop("broadcast_like", B, _broadcast_like, _broadcast_like_infer, inputs=("lhs", "rhs"),
      attrs={"lhs_axes": None, "rhs_axes": None},
      grad=lambda F, i, o, g, at: [F.sum_like(g[0], i[0]), None], mxnet_name="broadcast_like",
      doc="Broadcast `lhs` to the shape of `rhs` (or only `lhs_axes` to `rhs_axes` sizes).")


def _axis_shape(shape, at, in_types):
    axes, sizes = at["axis"], at["size"]
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    sizes = (sizes,) if isinstance(sizes, int) else tuple(sizes)
    if len(axes) != len(sizes):
        fail("broadcast_axis", "axis and size must have the same length", in_types)
    out = list(shape)
    for a, s in zip(axes, sizes):
        a = normalize_axis(a, len(shape), "broadcast_axis", in_types)
        if out[a] not in (1, None):
            fail("broadcast_axis", f"broadcasting axis {a} must have size 1", in_types)
        out[a] = s
    return tuple(out)


defop("broadcast_axis", B,
      lambda ins, at: np.array(np.broadcast_to(ins[0], _axis_shape(ins[0].shape, at, []))),
      lambda ts, at: ([TensorType(_axis_shape(ts[0].shape, at, ts), ts[0].dtype)], list(ts)),
      attrs={"axis": (), "size": ()}, aliases=("broadcast_axes",),
      grad=lambda F, i, o, g, at: [F.sum_like(g[0], i[0])], mxnet_name="broadcast_axis",
      doc="Broadcast size-1 `axis` (int or tuple) to `size`.")


def _sum_like_compute(ins, attrs):
    """Sum ``x`` down to the shape of ``like`` (the adjoint of broadcasting)."""
    x, like = ins
    shape = like.shape
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, d in enumerate(shape)
                                      if d == 1 and x.shape[i + lead] != 1)
    out = x.sum(axis=axes, keepdims=True) if axes else x.copy()
    return out.reshape(shape).astype(x.dtype, copy=False)


def _sum_like_infer(in_types, attrs):
    x, like = in_types
    return [TensorType(like.shape, x.dtype)], list(in_types)


defop("sum_like", R, _sum_like_compute, _sum_like_infer, inputs=("data", "like"),
      grad=lambda F, i, o, g, at: [F.broadcast_like(g[0], i[0]), None],
      doc="Sum `data` over the axes that broadcasting `like` to it would expand.")
