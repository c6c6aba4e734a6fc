"""Slicing and padding: slice, slice_axis, slice_like, reverse, pad (MXNet semantics)."""
from __future__ import annotations

import numpy as np

from .ops import REQUIRED, OpKind
from .opset_reduce import defop
from .shape_rules import fail, normalize_axis
from .types import TensorType

INJ, O = OpKind.INJECTIVE, OpKind.OPAQUE


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
