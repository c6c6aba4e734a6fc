"""Ordering ops: sort, argsort, topk (MXNet's ordering_op-inl.h); gradients gather back."""
from __future__ import annotations

import numpy as np

from .ops import OpKind
from .opset_reduce import defop
from .shape_rules import normalize_axis
from .types import TensorType


# ---- ordering: sort, argsort, topk (MXNet's ordering_op-inl.h) -------------------------------
def _order(x, axis, is_ascend):
    """Stable sort order along ``axis`` (flattened when None); ties keep their order."""
    if axis is None:
        x, axis = x.reshape(-1), 0
    keys = x if is_ascend else -x
    return x, axis, np.argsort(keys, axis=axis, kind="stable")


def _sort(ins, at):
    x, ax, idx = _order(ins[0], at["axis"], at["is_ascend"])
    return np.take_along_axis(x, idx, axis=ax)


def _argsort(ins, at):
    return _order(ins[0], at["axis"], at["is_ascend"])[2].astype(at["dtype"])


def _topk_k(n, k):
    return n if k <= 0 or n is None else min(k, n)


def _topk(ins, at):
    x0 = ins[0]
    x, ax, idx = _order(x0, at["axis"], at["is_ascend"])
    k = _topk_k(x.shape[ax], at["k"])
    idx = np.take(idx, np.arange(k), axis=ax)
    if at["ret_typ"] == "mask":
        mask = np.zeros(x.shape, x0.dtype)
        np.put_along_axis(mask, idx, 1, axis=ax)
        return mask.reshape(x0.shape)
    if at["ret_typ"] not in ("value", "indices", "both"):
        raise ValueError(f"topk: ret_typ must be value, indices, mask or both, "
                         f"not {at['ret_typ']!r}")
    vals = np.take_along_axis(x, idx, axis=ax)
    if at["ret_typ"] == "value":
        return vals
    return (vals, idx.astype(at["dtype"])) if at["ret_typ"] == "both" else \
        idx.astype(at["dtype"])


def _order_shape(x, at, ts, k=None):
    if at["axis"] is None:
        n = x.size
        return (n if k is None else _topk_k(n, k),)
    ax = normalize_axis(at["axis"], x.ndim, "topk", ts)
    if k is None:
        return x.shape
    return x.shape[:ax] + (_topk_k(x.shape[ax], k),) + x.shape[ax + 1:]


def _topk_infer(in_types, at):
    x = in_types[0]
    if at["ret_typ"] == "mask":
        return [x], list(in_types)
    shape = _order_shape(x, at, in_types, at["k"])
    vals, idx = TensorType(shape, x.dtype), TensorType(shape, at["dtype"])
    outs = {"value": [vals], "indices": [idx], "both": [vals, idx]}[at["ret_typ"]]
    return outs, list(in_types)


def _gather_grad(F, x, g, idx, axis):
    """Gradient of ``take_along_axis(x, idx, axis)`` (flattened x when axis is None)."""
    if axis is None:
        flat = F.reshape(x, shape=(-1,))
        return F.reshape_like(F.take_along_axis_backward(g, idx, flat, axis=0), x)
    return F.take_along_axis_backward(g, idx, x, axis=axis)


def _sort_grad(F, ins, outs, g, at):
    x = ins[0]
    idx = F.argsort(x, axis=at["axis"], is_ascend=at["is_ascend"], dtype="int64")
    return [_gather_grad(F, x, g[0], idx, at["axis"])]


def _topk_grad(F, ins, outs, g, at):
    x = ins[0]
    if at["ret_typ"] == "both":
        idx = outs[1]
    elif at["ret_typ"] == "value":
        idx = F.topk(x, **{**at, "ret_typ": "indices", "dtype": "int64"})
    else:
        return [None]
    return [_gather_grad(F, x, g[0], idx, at["axis"])]


_ORDER = {"axis": -1, "is_ascend": True}
defop("sort", OpKind.OPAQUE, _sort,
      lambda ts, at: ([TensorType(_order_shape(ts[0], at, ts), ts[0].dtype)], list(ts)),
      attrs=dict(_ORDER), grad=_sort_grad, mxnet_name="sort",
      doc="Sorted along `axis` (flattened when None), ascending unless is_ascend=False.")
defop("argsort", OpKind.OPAQUE, _argsort,
      lambda ts, at: ([TensorType(_order_shape(ts[0], at, ts), at["dtype"])], list(ts)),
      attrs={**_ORDER, "dtype": "float32"}, grad=lambda F, i, o, g, at: [None],
      mxnet_name="argsort", doc="Indices that sort along `axis`, as `dtype` (float32).")
defop("topk", OpKind.OPAQUE, _topk, _topk_infer,
      attrs={"axis": -1, "k": 1, "ret_typ": "indices", "is_ascend": False, "dtype": "float32"},
      num_outputs=lambda at: 2 if at["ret_typ"] == "both" else 1, grad=_topk_grad,
      mxnet_name="topk",
      doc="The k largest (smallest if is_ascend) along `axis`: their indices, values, both "
          "(values, indices) or a 0/1 mask.")
