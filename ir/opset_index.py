"""NumPy-style indexing as ops, so ``x[key]`` is differentiable and traceable.

The index is a static attribute: a tuple of encoded items (``('s', start, stop, step)`` for
a slice, ``('i', n)`` for an integer, ``('a', nested tuple)`` for an integer array, ``('n',)``
for ``None`` and ``('e',)`` for ``...``). MXNet 1.x returns shape ``(1,)`` where NumPy
would return a 0-d scalar.
"""
from __future__ import annotations

import numpy as np

from .ops import OpKind, defop
from .shape_rules import by_eval
from .types import TensorType

_ENC = {type(None): ("n",), type(Ellipsis): ("e",)}


def encode_key(key) -> tuple:
    """The hashable attribute form of a NumPy index."""
    items = key if isinstance(key, tuple) else (key,)
    out = []
    for k in items:
        if type(k) in _ENC:
            out.append(_ENC[type(k)])
        elif isinstance(k, slice):
            out.append(("s", *(None if v is None else int(v) for v in (k.start, k.stop,
                                                                        k.step))))
        elif isinstance(k, int | np.integer):
            out.append(("i", int(k)))
        else:
            arr = np.asarray(k)
            if arr.dtype == np.bool_:
                out.append(("b", _nested(arr)))
            else:
                out.append(("a", _nested(arr.astype(np.int64))))
    return tuple(out)


def _nested(arr):
    return tuple(_nested(a) for a in arr) if arr.ndim else int(arr)


def decode_key(code: tuple):
    """The NumPy index an encoded key stands for."""
    out = []
    for item in code:
        tag = item[0]
        if tag == "n":
            out.append(None)
        elif tag == "e":
            out.append(Ellipsis)
        elif tag == "s":
            out.append(slice(*item[1:]))
        elif tag == "i":
            out.append(item[1])
        else:
            out.append(np.array(item[1], dtype=bool if tag == "b" else np.int64))
    return tuple(out)


def _getitem(ins, at):
    res = ins[0][decode_key(at["key"])]
    if np.ndim(res) == 0:
        return np.reshape(res, (1,))
    return np.array(res, copy=True)


def _getitem_backward(ins, at):
    og, x = ins
    z = np.zeros_like(x)
    key = decode_key(at["key"])
    np.add.at(z, key, og.reshape(np.shape(x[key])))
    return z


def _grad_backward_infer(in_types, at):
    return [TensorType(in_types[1].shape, in_types[0].dtype)], list(in_types)


defop("getitem", OpKind.INJECTIVE, _getitem, by_eval("getitem", _getitem),
      attrs={"key": ()},
      grad=lambda F, i, o, g, at: [F.getitem_backward(g[0], i[0], key=at["key"])],
      doc="x[key] with NumPy semantics (a copy), shape (1,) for a single element.")
defop("getitem_backward", OpKind.INJECTIVE, _getitem_backward, _grad_backward_infer,
      inputs=("ograd", "data"), attrs={"key": ()},
      grad=lambda F, i, o, g, at: [F.getitem(g[0], key=at["key"]).reshape(i[0].shape), None],
      doc="Scatter-add ograd into zeros shaped like data at key: the adjoint of getitem.")


# ---- assignment into a region (MXNet's _slice_assign / _crop_assign) ----------------------
def _region(shape, at):
    begin, end = at["begin"], at["end"]
    step = at["step"] or (None,) * len(begin)
    key = tuple(slice(b, e, s) for b, e, s in zip(begin, end, step))
    return key + (slice(None),) * (len(shape) - len(key))


def _slice_assign(ins, at):
    out = ins[0].copy()
    out[_region(out.shape, at)] = ins[1]
    return out


def _slice_assign_scalar(ins, at):
    out = ins[0].copy()
    out[_region(out.shape, at)] = at["scalar"]
    return out


def _same_as_data(in_types, at):
    return [in_types[0]], list(in_types)


_REGION = {"begin": (), "end": (), "step": ()}
defop("slice_assign", OpKind.INJECTIVE, _slice_assign, _same_as_data, inputs=("lhs", "rhs"),
      attrs=dict(_REGION), aliases=("_slice_assign", "_crop_assign"),
      mxnet_name="_slice_assign",
      grad=lambda F, i, o, g, at: [F.slice_assign_scalar(g[0], scalar=0.0, begin=at["begin"],
                                                         end=at["end"], step=at["step"]),
                                   F.slice(g[0], begin=at["begin"], end=at["end"],
                                           step=at["step"])],
      doc="lhs with the region begin:end:step replaced by rhs.")
defop("slice_assign_scalar", OpKind.INJECTIVE, _slice_assign_scalar, _same_as_data,
      attrs={"scalar": 0.0, **_REGION},
      aliases=("_slice_assign_scalar", "_crop_assign_scalar"),
      mxnet_name="_slice_assign_scalar",
      grad=lambda F, i, o, g, at: [F.slice_assign_scalar(g[0], scalar=0.0, begin=at["begin"],
                                                         end=at["end"], step=at["step"])],
      doc="data with the region begin:end:step set to scalar.")


def _fill_element_0index(ins, at):
    lhs, mhs, rhs = ins
    out = lhs.copy()
    out[np.arange(lhs.shape[0]), rhs.astype(np.int64)] = mhs
    return out


defop("fill_element_0index", OpKind.INJECTIVE, _fill_element_0index, _same_as_data,
      inputs=("lhs", "mhs", "rhs"),
      grad=lambda F, i, o, g, at: [F.fill_element_0index(g[0], F.zeros_like(i[1]), i[2]),
                                   F.pick(g[0], i[2], axis=1), None],
      doc="out = lhs; out[i, rhs[i]] = mhs[i] for each row i.")
