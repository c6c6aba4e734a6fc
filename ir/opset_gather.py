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
from .shape_rules import fail, normalize_axis, unify
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


def _where_grad(F, ins, outs, g, at):
    zero = F.zeros_like(g[0])
    return [None, F.where(ins[0], g[0], zero), F.where(ins[0], zero, g[0])]


defop("where", OpKind.BROADCAST, _where, _where_infer, inputs=("condition", "x", "y"),
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


# ---- slicing: slice, slice_axis, slice_like, reverse (gradients via getitem_backward) --------
def _slice_key(ndim, at, ts=()):
    """The encoded getitem key (see opset_index) of MXNet's slice(begin, end, step)."""
    begin, end, step = tuple(at["begin"]), tuple(at["end"]), tuple(at["step"])
    if len(begin) != len(end) or len(begin) > ndim or (step and len(step) != len(begin)):
        fail("slice", "begin, end (and step) must have the same length <= the rank", ts)
    step = step or (None,) * len(begin)
    if any(s == 0 for s in step):
        fail("slice", "step cannot be 0", ts)
    return tuple(("s", b, e, s) for b, e, s in zip(begin, end, step))


def _key_shape(shape, key):
    out = list(shape)
    for i, (_, b, e, s) in enumerate(key):
        if shape[i] is not None and e != "?":
            out[i] = len(range(*slice(b, e, s).indices(shape[i])))
        else:
            out[i] = None
    return tuple(out)


def _sliced(key_of):
    def compute(ins, at):
        key = key_of(ins[0].shape, ins[1:], at, ())
        return ins[0][tuple(slice(*k[1:]) for k in key)].copy()

    def infer(in_types, at):
        x = in_types[0]
        key = key_of(x.shape, [t.shape for t in in_types[1:]], at, in_types)
        return [TensorType(_key_shape(x.shape, key), x.dtype)], list(in_types)

    def grad(F, ins, outs, g, at):
        key = key_of(ins[0].shape, [t.shape for t in ins[1:]], at, ())
        return [F.getitem_backward(g[0], ins[0], key=key)] + [None] * (len(ins) - 1)
    return compute, infer, grad


def _slice_axis_key(shape, others, at, ts):
    ax = normalize_axis(at["axis"], len(shape), "slice_axis", ts)
    return tuple(("s", None, None, None) for _ in range(ax)) + (("s", at["begin"], at["end"],
                                                                 None),)


def _slice_like_key(shape, others, at, ts):
    like = tuple(others[0]) if not hasattr(others[0], "shape") else others[0].shape
    axes = at["axes"]
    if not axes:
        if len(like) != len(shape):
            fail("slice_like", "ranks differ; give axes", ts)
        axes = range(len(shape))
    key = [("s", None, None, None)] * len(shape)
    for a in axes:
        a = normalize_axis(a, len(shape), "slice_like", ts)
        if a >= len(like):
            fail("slice_like", f"axis {a} exceeds the rank of the second input", ts)
        key[a] = ("s", 0, "?" if like[a] is None else like[a], None)  # "?": unknown size
    return tuple(key)


for _name, _key_of, _inputs, _attrs, _aliases, _doc in (
        ("slice", lambda s, o, at, ts: _slice_key(len(s), at, ts), ("data",),
         {"begin": REQUIRED, "end": REQUIRED, "step": ()}, ("crop",),
         "data[begin:end:step] per axis; None entries take the default."),
        ("slice_axis", _slice_axis_key, ("data",),
         {"axis": REQUIRED, "begin": REQUIRED, "end": REQUIRED}, (),
         "data[begin:end] along `axis` (end None: to the end)."),
        ("slice_like", _slice_like_key, ("data", "shape_like"), {"axes": ()}, (),
         "data sliced from 0 to the second input's size on `axes` (default all).")):
    _c, _i, _g = _sliced(_key_of)
    defop(_name, INJ, _c, _i, inputs=_inputs, attrs=_attrs, grad=_g, aliases=_aliases,
          mxnet_name=_name, doc=_doc)


def _rev_axes(ndim, axis, ts=()):
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(normalize_axis(a, ndim, "reverse", ts) for a in axes)


def _reverse_infer(in_types, at):
    _rev_axes(in_types[0].ndim, at["axis"], in_types)
    return [in_types[0]], list(in_types)


defop("reverse", INJ, lambda ins, at: np.flip(ins[0], _rev_axes(ins[0].ndim, at["axis"])).copy(),
      _reverse_infer,
      attrs={"axis": REQUIRED}, aliases=("flip",), mxnet_name="reverse",
      grad=lambda F, i, o, g, at: [F.reverse(g[0], axis=at["axis"])],
      doc="Reverse the order of elements along `axis` (int or tuple).")


# ---- pad (MXNet's flat pad_width: before_0, after_0, before_1, after_1, ...) -----------------
def _widths(ndim, pad_width, ts=()):
    pw = tuple(pad_width)
    if len(pw) != 2 * ndim:
        fail("pad", f"pad_width needs 2*ndim = {2 * ndim} entries, got {len(pw)}", ts)
    return [(pw[2 * i], pw[2 * i + 1]) for i in range(ndim)]


def _pad(ins, at):
    x = ins[0]
    w = _widths(x.ndim, at["pad_width"])
    if at["mode"] == "constant":
        return np.pad(x, w, "constant", constant_values=at["constant_value"]).astype(x.dtype)
    if at["mode"] not in ("edge", "reflect"):
        raise ValueError(f"pad: mode must be constant, edge or reflect, not {at['mode']!r}")
    return np.pad(x, w, at["mode"])


def _pad_backward(ins, at):
    """Fold each padded border back onto the cells it copies (axis by axis)."""
    og, x = ins
    g = og
    for ax, (b, a) in enumerate(_widths(x.ndim, at["pad_width"])):
        n = x.shape[ax]
        src = np.pad(np.arange(n), (b, a), "constant" if at["mode"] == "constant" else
                     at["mode"], **({"constant_values": -1} if at["mode"] == "constant" else {}))
        keep = src >= 0
        gm = np.moveaxis(g, ax, 0)
        out = np.zeros((n,) + gm.shape[1:], og.dtype)
        np.add.at(out, src[keep], gm[keep])
        g = np.moveaxis(out, 0, ax)
    return np.ascontiguousarray(g)


def _pad_infer(in_types, at):
    x = in_types[0]
    w = _widths(x.ndim, at["pad_width"], in_types)
    out = tuple(None if d is None else d + b + a for d, (b, a) in zip(x.shape, w))
    return [TensorType(out, x.dtype)], list(in_types)


_PAD = {"mode": REQUIRED, "pad_width": REQUIRED, "constant_value": 0.0}
defop("pad", INJ, _pad, _pad_infer, attrs=dict(_PAD), aliases=("Pad",), mxnet_name="Pad",
      grad=lambda F, i, o, g, at: [F.pad_backward(g[0], i[0], **at)],
      doc="Pad with a constant, the edge values, or a reflection; pad_width is MXNet's flat "
          "(before_0, after_0, before_1, after_1, ...).")
defop("pad_backward", O, _pad_backward,
      lambda ts, at: ([TensorType(ts[1].shape, ts[0].dtype)], list(ts)),
      inputs=("ograd", "data"), attrs=dict(_PAD),
      grad=lambda F, i, o, g, at: [F.pad(g[0], **{**at, "constant_value": 0.0}), None],
      doc="The adjoint of pad: the padded borders' gradients folded back onto the input.")
