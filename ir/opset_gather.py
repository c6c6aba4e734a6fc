"""Gather ops: take, pick, one_hot, where, gather_nd, scatter_nd, diag, take_along_axis.

Index inputs may be any dtype (MXNet passes float32 indices); they are truncated to
integers. The backward helpers (``take_backward``, ``pick_backward``,
``gather_nd_backward``, ``take_along_axis_backward``, ``diag_backward``) scatter-add a head
gradient into zeros shaped like the data; each is the adjoint of its forward op, so each
one's own gradient is that forward op again and higher-order gradients work.
"""
from __future__ import annotations

import numpy as np

from .ops import REQUIRED, OpKind
from .opset_reduce import defop
from .shape_rules import fail, normalize_axis, same_dtype, unify
from .types import TensorType

INJ, O = OpKind.INJECTIVE, OpKind.OPAQUE


def _like_data(in_types, at):
    """Rule of a backward helper (ograd, index, data): the data's shape, ograd's dtype."""
    return [TensorType(in_types[-1].shape, in_types[0].dtype)], list(in_types)


def _fix_index(idx, n: int, mode: str, op: str):
    """Integer indices into an axis of size ``n`` under MXNet's clip / wrap / raise modes."""
    idx = np.asarray(idx).astype(np.int64)
    if mode == "clip":
        return np.clip(idx, 0, max(n - 1, 0))
    if mode == "wrap":
        return np.mod(idx, n)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"{op}: index out of range for axis of size {n}")
    return np.mod(idx, n)


# ---- take ------------------------------------------------------------------------------------
def _take(ins, at):
    a, idx = ins
    ax = normalize_axis(at["axis"], a.ndim, "take")
    return np.take(a, _fix_index(idx, a.shape[ax], at["mode"], "take"), axis=ax)


def _take_infer(in_types, at):
    a, idx = in_types
    ax = normalize_axis(at["axis"], a.ndim, "take", in_types)
    return [TensorType(a.shape[:ax] + idx.shape + a.shape[ax + 1:], a.dtype)], list(in_types)


def _take_backward(ins, at):
    og, idx, a = ins
    ax = normalize_axis(at["axis"], a.ndim, "take_backward")
    z = np.zeros(a.shape, og.dtype)
    np.add.at(z, (slice(None),) * ax + (_fix_index(idx, a.shape[ax], at["mode"], "take"),), og)
    return z


_TAKE = {"axis": 0, "mode": "clip"}
defop("take", INJ, _take, _take_infer, inputs=("a", "indices"), attrs=dict(_TAKE),
      grad=lambda F, i, o, g, at: [F.take_backward(g[0], i[1], i[0], **at), None],
      mxnet_name="take", doc="Take slices of `a` along `axis` at `indices` (mode clip/wrap/raise).")
defop("take_backward", O, _take_backward, _like_data, inputs=("ograd", "indices", "data"),
      attrs=dict(_TAKE),
      grad=lambda F, i, o, g, at: [F.take(g[0], i[1], **at), None, None],
      doc="Scatter-add ograd into zeros shaped like data: the adjoint of take.")


# ---- pick ------------------------------------------------------------------------------------
def _pick_axis(ndim, at, ts=()):
    if at["axis"] is None:
        fail("pick", "axis=None is not supported; give an axis", ts)
    return normalize_axis(at["axis"], ndim, "pick", ts)


def _pick_shape(shape, ax, keepdims):
    if len(shape) == 1:
        return (1,)
    return tuple(1 if i == ax else d for i, d in enumerate(shape)) if keepdims else \
        tuple(d for i, d in enumerate(shape) if i != ax)


def _pick_index(data, idx, at):
    """The index array in keepdims form, made valid by the mode."""
    ax = _pick_axis(data.ndim, at)
    idx = _fix_index(idx, data.shape[ax], at["mode"], "pick")
    return ax, idx.reshape(_pick_shape(data.shape, ax, True) if data.ndim > 1 else (-1,))


def _pick(ins, at):
    x, idx = ins
    ax, k = _pick_index(x, idx, at)
    out = np.take_along_axis(x, k, axis=ax)
    return out.reshape(_pick_shape(x.shape, ax, at["keepdims"]))


def _pick_infer(in_types, at):
    x, idx = in_types
    ax = _pick_axis(x.ndim, at, in_types)
    want = _pick_shape(x.shape, ax, idx.ndim == x.ndim)
    if idx.ndim != len(want):
        fail("pick", f"index must have shape {want}", in_types)
    refined = idx.with_shape(unify(idx.shape, want, "pick", in_types))
    return [TensorType(_pick_shape(x.shape, ax, at["keepdims"]), x.dtype)], [x, refined]


def _pick_backward(ins, at):
    og, idx, x = ins
    ax, k = _pick_index(x, idx, at)
    pos = np.arange(x.shape[ax]).reshape((-1,) + (1,) * (x.ndim - ax - 1))
    return np.where(pos == k, og.reshape(k.shape), 0).astype(og.dtype, copy=False)


_PICK = {"axis": -1, "keepdims": False, "mode": "clip"}
defop("pick", INJ, _pick, _pick_infer, inputs=("data", "index"), attrs=dict(_PICK),
      grad=lambda F, i, o, g, at: [F.pick_backward(g[0], i[1], i[0], **at), None],
      aliases=("choose_element_0index",), mxnet_name="pick",
      doc="One element per position along `axis`, chosen by `index`.")
defop("pick_backward", O, _pick_backward, _like_data, inputs=("ograd", "index", "data"),
      attrs=dict(_PICK),
      grad=lambda F, i, o, g, at: [F.pick(g[0], i[1], **at), None, None],
      doc="Put ograd at the picked positions of zeros shaped like data: the adjoint of pick.")


# ---- one_hot / where -------------------------------------------------------------------------
def _one_hot(ins, at):
    idx = np.asarray(ins[0]).astype(np.int64)
    depth = at["depth"]
    hit = idx[..., None] == np.arange(depth)
    return np.where(hit, at["on_value"], at["off_value"]).astype(at["dtype"])


defop("one_hot", INJ, _one_hot,
      lambda ts, at: ([TensorType(ts[0].shape + (at["depth"],), at["dtype"])], list(ts)),
      inputs=("indices",),
      attrs={"depth": REQUIRED, "on_value": 1.0, "off_value": 0.0, "dtype": "float32"},
      grad=lambda F, i, o, g, at: [None], mxnet_name="one_hot",
      doc="on_value at each index along a new last axis of size depth, off_value elsewhere.")


def _where(ins, at):
    c, x, y = ins
    if c.ndim != x.ndim:
        c = c.reshape((-1,) + (1,) * (x.ndim - 1))
    return np.where(c != 0, x, y).astype(x.dtype, copy=False)


def _where_infer(in_types, at):
    c, x, y = in_types
    same_dtype("where", in_types, which=(1, 2), names=("condition", "x", "y"))
    if not c.known:  # MXNet's WhereOpShape infers nothing before the condition's shape
        return [TensorType(None, x.dtype)], list(in_types)
    shape = unify(x.shape, y.shape, "where", in_types)
    if c.ndim == len(shape):
        shape = unify(shape, c.shape, "where", in_types)
        c = c.with_shape(shape)
    elif c.ndim == 1 and shape:
        n = unify((c.shape[0],), (shape[0],), "where", in_types)
        shape, c = n + shape[1:], c.with_shape(n)
    else:
        fail("where", "condition must have the shape of x or be 1-D over its first axis",
             in_types)
    return [TensorType(shape, x.dtype)], [c, x.with_shape(shape), y.with_shape(shape)]


def _where_infer_back(in_types, out_types, at):
    """MXNet's WhereOpShape: once the condition's shape is known, x and y have the output's."""
    c, x, y = in_types
    out = out_types[0]
    if not c.known or out.shape is None:
        return in_types
    return [c] + [t.with_shape(out.shape) if t.ndim in (None, out.ndim) else t
                  for t in (x, y)]


def _where_grad(F, ins, outs, g, at):
    zero = F.zeros_like(g[0])
    return [None, F.where(ins[0], g[0], zero), F.where(ins[0], zero, g[0])]


defop("where", OpKind.BROADCAST, _where, _where_infer, inputs=("condition", "x", "y"),
      infer_back=_where_infer_back,
      grad=_where_grad, mxnet_name="where",
      doc="x where condition is non-zero, else y; a 1-D condition selects whole rows.")


# ---- gather_nd / scatter_nd ------------------------------------------------------------------
def _nd_index(idx):
    return tuple(np.asarray(idx).astype(np.int64))


def _gather_nd_infer(in_types, at):
    x, idx = in_types
    m = idx.shape[0] if idx.ndim else None
    if m is None or m > x.ndim:
        fail("gather_nd", "indices must be (M, ...) with M known and <= data rank", in_types)
    return [TensorType(idx.shape[1:] + x.shape[m:], x.dtype)], list(in_types)


def _gather_nd_backward(ins, at):
    og, idx, x = ins
    z = np.zeros(x.shape, og.dtype)
    np.add.at(z, _nd_index(idx), og)
    return z


def _scatter_nd(ins, at):
    x, idx = ins
    z = np.zeros(at["shape"], x.dtype)
    z[_nd_index(idx)] = x
    return z


def _scatter_nd_infer(in_types, at):
    x, idx = in_types
    shape = tuple(at["shape"])
    m = idx.shape[0] if idx.ndim else None
    if m is None or m > len(shape):
        fail("scatter_nd", "indices must be (M, ...) with M known and <= len(shape)", in_types)
    want = idx.shape[1:] + shape[m:]
    return [TensorType(shape, x.dtype)], [x.with_shape(unify(x.shape, want, "scatter_nd",
                                                             in_types)), idx]


defop("gather_nd", INJ, lambda ins, at: np.array(ins[0][_nd_index(ins[1])]), _gather_nd_infer,
      inputs=("data", "indices"), mxnet_name="gather_nd",
      grad=lambda F, i, o, g, at: [F.gather_nd_backward(g[0], i[1], i[0]), None],
      doc="data[indices[0], ..., indices[M-1]] for indices of shape (M, ...).")
defop("gather_nd_backward", O, _gather_nd_backward, _like_data,
      inputs=("ograd", "indices", "data"),
      grad=lambda F, i, o, g, at: [F.gather_nd(g[0], i[1]), None, None],
      doc="Scatter-add ograd into zeros shaped like data: the adjoint of gather_nd.")
defop("scatter_nd", O, _scatter_nd, _scatter_nd_infer, inputs=("data", "indices"),
      attrs={"shape": REQUIRED}, mxnet_name="scatter_nd",
      grad=lambda F, i, o, g, at: [F.gather_nd(g[0], i[1]), None],
      doc="Zeros of `shape` with data written at indices (shape (M, ...)).")


# ---- take_along_axis: the gather behind sort / topk gradients --------------------------------
def _along_infer(in_types, at):
    x, idx = in_types
    ax = normalize_axis(at["axis"], x.ndim, "take_along_axis", in_types)
    if idx.ndim != x.ndim:
        fail("take_along_axis", "indices must have the data's rank", in_types)
    want = tuple(d if i == ax else x.shape[i] for i, d in enumerate(idx.shape))
    return [TensorType(want, x.dtype)], list(in_types)


def _along_backward(ins, at):
    og, idx, x = ins
    ax = normalize_axis(at["axis"], x.ndim, "take_along_axis")
    z = np.zeros(x.shape, og.dtype)
    grid = list(np.ix_(*[np.arange(n) for n in idx.shape]))
    grid[ax] = np.asarray(idx).astype(np.int64)
    np.add.at(z, tuple(grid), og)
    return z


defop("take_along_axis", INJ,
      lambda ins, at: np.take_along_axis(ins[0], np.asarray(ins[1]).astype(np.int64),
                                         axis=at["axis"]),
      _along_infer, inputs=("data", "indices"), attrs={"axis": -1},
      grad=lambda F, i, o, g, at: [F.take_along_axis_backward(g[0], i[1], i[0], **at), None],
      doc="NumPy's take_along_axis: data at `indices` along `axis`.")
defop("take_along_axis_backward", O, _along_backward, _like_data,
      inputs=("ograd", "indices", "data"), attrs={"axis": -1},
      grad=lambda F, i, o, g, at: [F.take_along_axis(g[0], i[1], **at), None, None],
      doc="Scatter-add ograd into zeros shaped like data: the adjoint of take_along_axis.")


# ---- diag ------------------------------------------------------------------------------------
def _diag(ins, at):
    x = ins[0]
    if x.ndim == 1:
        return np.diag(x, at["k"])
    return np.diagonal(x, at["k"], at["axis1"], at["axis2"]).copy()


def _diag_len(n, m, k):
    if n is None or m is None:
        return None
    return max(0, min(n + min(k, 0), m - max(k, 0)))


def _diag_infer(in_types, at):
    x, k = in_types[0], at["k"]
    if x.ndim == 0:
        fail("diag", "input must be at least 1-D", in_types)
    if x.ndim == 1:
        n = None if x.shape[0] is None else x.shape[0] + abs(k)
        return [TensorType((n, n), x.dtype)], list(in_types)
    a1, a2 = (normalize_axis(at[a], x.ndim, "diag", in_types) for a in ("axis1", "axis2"))
    if a1 == a2:
        fail("diag", "axis1 and axis2 must differ", in_types)
    rest = tuple(d for i, d in enumerate(x.shape) if i not in (a1, a2))
    return [TensorType(rest + (_diag_len(x.shape[a1], x.shape[a2], k),), x.dtype)], \
        list(in_types)


def _diag_backward(ins, at):
    og, x = ins
    k = at["k"]
    if x.ndim == 1:
        return np.diagonal(og, k).copy()
    z = np.zeros(x.shape, og.dtype)
    zm = np.moveaxis(z, (at["axis1"], at["axis2"]), (-2, -1))
    n = og.shape[-1]
    zm[..., np.arange(n) + max(-k, 0), np.arange(n) + max(k, 0)] = og
    return z


_DIAG = {"k": 0, "axis1": 0, "axis2": 1}
defop("diag", INJ, _diag, _diag_infer, attrs=dict(_DIAG), mxnet_name="diag",
      grad=lambda F, i, o, g, at: [F.diag_backward(g[0], i[0], **at)],
      doc="A 1-D input becomes a matrix with it on diagonal k; otherwise extract diagonal k "
          "of the (axis1, axis2) planes.")
defop("diag_backward", O, _diag_backward,
      lambda ts, at: ([TensorType(ts[1].shape, ts[0].dtype)], list(ts)),
      inputs=("ograd", "data"), attrs=dict(_DIAG),
      grad=lambda F, i, o, g, at: [F.diag(g[0], **at), None],
      doc="The adjoint of diag: ograd placed on (or read from) diagonal k.")
