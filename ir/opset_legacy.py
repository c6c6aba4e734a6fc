"""MXNet 1.x legacy ops of the symbol/Module API: loss layers that define their own gradient.

``SoftmaxOutput`` (alias ``Softmax``), ``LinearRegressionOutput``,
``LogisticRegressionOutput`` and ``MAERegressionOutput`` compute a prediction forward and,
backward, the gradient of their loss against ``label`` directly: the head gradient is
ignored (multiplied in only by SoftmaxOutput's ``out_grad=True``), as in MXNet 1.9.1
(src/operator/softmax_output-inl.h, regression_output-inl.h). Also ``batch_take`` (MXNet's
deprecated ``pick`` of the last axis, tensor/indexing_op.h; no gradient) and
``_identity_with_attr_like_rhs`` (``lhs`` passed through, with ``rhs``'s shape: a shape
constraint for backward shape inference). The fused ``RNN`` op is in ``opset_rnn``.
"""
from __future__ import annotations

import math

import numpy as np

from .ops import OpKind, defop
from .shape_rules import fail, unify
from .types import TensorType

O, E = OpKind.OPAQUE, OpKind.ELEMWISE

_SOFTMAX_ATTRS = {"grad_scale": 1.0, "ignore_label": -1.0, "multi_output": False,
                  "use_ignore": False, "preserve_shape": False, "normalization": "null",
                  "out_grad": False, "smooth_alpha": 0.0}


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _softmax_output(ins, at):
    x = ins[0]
    if x.ndim == 0 or x.size == 0:
        return x.copy()
    if at["multi_output"]:
        n, k = x.shape[0], x.shape[1]
        return _softmax(x.reshape(n, k, -1), 1).reshape(x.shape).astype(x.dtype, copy=False)
    if at["preserve_shape"]:
        return _softmax(x, -1).astype(x.dtype, copy=False)
    return _softmax(x.reshape(x.shape[0], -1), 1).reshape(x.shape).astype(x.dtype, copy=False)


def _onehot_grad(prob, label, at, axis):
    """``prob - onehot(label)`` along ``axis`` (label smoothing and ignored labels as MXNet's
    SoftmaxGrad / SmoothSoftmaxGrad), and the mask of positions whose label is kept."""
    k = prob.shape[axis]
    lab = np.asarray(label, dtype=np.float64)
    keep = np.ones(lab.shape, dtype=bool)
    if at["use_ignore"]:
        keep = lab.astype(np.int64) != int(at["ignore_label"])
    idx = lab.astype(np.int64)
    if np.any(keep & ((idx < 0) | (idx >= k))):
        raise ValueError(f"labels must lie in [0, {k}) (got {lab[keep].min()} .. "
                         f"{lab[keep].max()})")
    idx = np.where(keep, idx, 0)
    onehot = np.moveaxis(np.arange(k) == np.expand_dims(idx, -1), -1, axis)
    alpha = at["smooth_alpha"] if axis == 1 and prob.ndim == 2 else 0.0
    if alpha:
        target = np.where(onehot, 1.0 - alpha, alpha / max(k - 1, 1))
    else:
        target = onehot.astype(np.float64)
    grad = prob - target
    return grad * np.expand_dims(keep, axis), keep


def _valid_count(label, at):
    cnt = int(np.sum(np.asarray(label).astype(np.int64) != int(at["ignore_label"])))
    return max(cnt, 1)


def _softmax_output_backward(ins, at):
    out, label, head = ins[0], ins[1], ins[2]
    p = out.astype(np.float64)
    if label.shape == out.shape:  # probabilities as labels: no normalisation (MXNet)
        grad = (p - label) * at["grad_scale"]
    elif at["multi_output"]:
        n, k = out.shape[0], out.shape[1]
        p3 = p.reshape(n, k, -1)
        lab = np.asarray(label).reshape(n, p3.shape[2])
        grad, _ = _onehot_grad(p3, lab, at, 1)
        norm = at["normalization"]
        cnt = _valid_count(lab, at) if norm == "valid" else n if norm == "batch" else 1
        grad = grad * (at["grad_scale"] / (1 if norm == "valid" else p3.shape[2]) / cnt)
    else:
        p2 = p.reshape(-1, p.shape[-1]) if at["preserve_shape"] else p.reshape(p.shape[0], -1)
        lab = np.asarray(label).reshape(-1)
        if lab.size != p2.shape[0]:
            raise ValueError(f"label of {lab.size} values for {p2.shape[0]} rows")
        grad, _ = _onehot_grad(p2, lab, at, 1)
        norm = at["normalization"]
        cnt = _valid_count(lab, at) if norm == "valid" else lab.size if norm == "batch" else 1
        grad = grad * (at["grad_scale"] / cnt)
    grad = grad.reshape(out.shape)
    if at["out_grad"]:
        grad = grad * head
    return grad.astype(out.dtype, copy=False)


def _label_shape(op, data, label, at, in_types):
    """MXNet's SoftmaxOutputShape: the label's shape given the data's."""
    d = data.shape
    lab = label.shape
    if lab is not None and len(lab) == len(d) and not (
            at["multi_output"] and len(d) > 1 and lab[1] == 1 and d[1] != 1):
        return unify(d, lab, op, in_types)  # probabilities as labels
    if at["multi_output"]:
        if len(d) < 2:
            fail(op, "multi_output needs data of rank >= 2 (batch, classes, ...)", in_types)
        rest = None if any(x is None for x in d[2:]) else math.prod(d[2:])
        options = [(d[0], rest), (d[0],) + d[2:], (d[0], 1) + d[2:]]
        if lab is None:
            return options[0]
        for want in options:
            if len(want) == len(lab) and all(a is None or b is None or a == b
                                             for a, b in zip(want, lab)):
                return unify(want, lab, op, in_types)
        fail(op, f"label must be {options[0]} or {options[1]}, got {lab}", in_types)
    want = d[:-1]
    if lab is None:
        return want
    if len(lab) != len(want):
        fail(op, f"label must have shape {want} (data without its last axis)", in_types)
    return unify(want, lab, op, in_types)


def _softmax_output_infer(in_types, at):
    op = "SoftmaxOutput"
    if at["normalization"] not in ("null", "batch", "valid"):
        fail(op, f"normalization must be 'null', 'batch' or 'valid', got "
                 f"{at['normalization']!r}", in_types)
    data, label = in_types[0], in_types[1]
    if data.shape is None:
        return [TensorType(None, data.dtype)], list(in_types)
    if len(data.shape) == 0:
        fail(op, "data must have at least one dim", in_types)
    lab = _label_shape(op, data, label, at, in_types)
    return [data], [data, label.with_shape(lab)]


def _softmax_output_grad(F, ins, outs, ograds, at):
    g = F.softmax_output_backward(outs[0], ins[1], ograds[0], **at)
    return [g, F.zeros_like(ins[1])]


defop("softmax_output", O, _softmax_output, _softmax_output_infer, inputs=("data", "label"),
      attrs=dict(_SOFTMAX_ATTRS), grad=_softmax_output_grad,
      aliases=("SoftmaxOutput", "Softmax"), mxnet_name="SoftmaxOutput",
      doc="Softmax of data (over axis 1 of (n, -1); over axis 1 of (n, k, ...) when "
          "multi_output; over the last axis when preserve_shape) whose gradient is that of "
          "the cross-entropy against label, ignoring the head gradient: (softmax - "
          "onehot(label)) * grad_scale / normalisation ('null': 1, 'batch': the batch, "
          "'valid': the labels not equal to ignore_label), rows labelled ignore_label zero "
          "when use_ignore, the one-hot smoothed by smooth_alpha, times the head gradient "
          "only when out_grad. A label of data's shape holds probabilities.")


def _softmax_output_backward_infer(in_types, at):
    out, label, head = in_types
    return [out], [out, label, head.with_shape(out.shape) if out.shape else head]


defop("softmax_output_backward", O, _softmax_output_backward, _softmax_output_backward_infer,
      inputs=("out", "label", "out_grad"), attrs=dict(_SOFTMAX_ATTRS),
      mxnet_name="_backward_SoftmaxOutput",
      doc="SoftmaxOutput's gradient with respect to data from its output, label and head "
          "gradient (used only when out_grad). Not differentiable.")


# ---- regression outputs ------------------------------------------------------------------
def _regression_infer(name):
    def infer(in_types, at):
        data, label = in_types[0], in_types[1]
        d = data.shape
        if d is None or None in d:
            return [TensorType(d, data.dtype)], list(in_types)
        lab = label.shape
        if lab is None:
            lab = (d[0],) if len(d) == 2 and d[1] == 1 else d
        elif None in lab:
            if len(lab) == len(d):
                lab = unify(lab, d, name, in_types)
            elif len(lab) == 1:
                lab = unify(lab, (d[0],), name, in_types)
        if None not in lab and (lab[0] != d[0] or math.prod(lab) != math.prod(d)):
            fail(name, f"label shape {lab} is inconsistent with data shape {d}", in_types)
        return [data], [data, label.with_shape(lab)]
    return infer


def _regression_grad(kind):
    def grad(F, ins, outs, ograds, at):
        out, label = outs[0], ins[1]
        num_output = math.prod(label.shape[1:])
        diff = out - F.reshape_like(label, out)
        if kind == "mae":
            diff = F.sign(diff)
        return [diff * (at["grad_scale"] / num_output), F.zeros_like(label)]
    return grad


_REGRESSION = {
    "linear_regression_output": ("LinearRegressionOutput", lambda x: x.copy(), "linear",
                                 "data itself; gradient (out - label)"),
    "logistic_regression_output": ("LogisticRegressionOutput",
                                   lambda x: (1.0 / (1.0 + np.exp(-x))).astype(x.dtype),
                                   "logistic", "sigmoid(data); gradient (out - label)"),
    "mae_regression_output": ("MAERegressionOutput", lambda x: x.copy(), "mae",
                              "data itself; gradient sign(out - label)"),
}
for _name, (_mx, _fwd, _kind, _what) in _REGRESSION.items():
    defop(_name, O, lambda ins, at, f=_fwd: f(ins[0]), _regression_infer(_mx),
          inputs=("data", "label"), attrs={"grad_scale": 1.0}, grad=_regression_grad(_kind),
          aliases=(_mx,), mxnet_name=_mx,
          doc=f"{_mx}: the prediction is {_what} * grad_scale / (label values per sample), "
              "ignoring the head gradient (MXNet's loss layer). label has data's size; a "
              "(n, 1) data takes an (n,) label.")


# ---- batch_take --------------------------------------------------------------------------
def _batch_take(ins, at):
    a, idx = ins
    m = a.shape[-1]
    rows = a.reshape(-1, m)
    j = np.clip(np.asarray(idx).astype(np.int64).reshape(-1), 0, m - 1)
    if j.size != rows.shape[0]:
        raise ValueError(f"indices have {j.size} values for {rows.shape[0]} rows")
    return rows[np.arange(rows.shape[0]), j].reshape(np.shape(idx)).astype(a.dtype)


def _batch_take_infer(in_types, at):
    a, idx = in_types
    if a.shape is not None and len(a.shape) < 2:
        fail("batch_take", "data must have at least 2 dims", in_types)
    out = TensorType(idx.shape, a.dtype)
    if a.shape is not None and idx.shape is not None and None not in a.shape \
            and None not in idx.shape and math.prod(a.shape[:-1]) != math.prod(idx.shape):
        fail("batch_take", "indices must have as many values as data has rows "
                           "(data's size without its last axis)", in_types)
    return [out], list(in_types)


defop("batch_take", O, _batch_take, _batch_take_infer, inputs=("a", "indices"),
      mxnet_name="batch_take",
      doc="out[i] = a[i, indices[i]] over a's rows (a viewed as (-1, a.shape[-1])), indices "
          "clipped into range; out has indices' shape. Deprecated in MXNet for pick; like "
          "MXNet's, it has no gradient.")


# ---- _identity_with_attr_like_rhs --------------------------------------------------------
def _like_rhs_infer(in_types, at):
    lhs, rhs = in_types
    shape = lhs.shape
    if shape is None:
        shape = rhs.shape
    elif rhs.shape is not None:
        shape = unify(shape, rhs.shape, "_identity_with_attr_like_rhs", in_types)
    return [TensorType(shape, lhs.dtype)], [lhs.with_shape(shape), rhs.with_shape(shape)]


defop("identity_with_attr_like_rhs", E, lambda ins, at: ins[0].copy(), _like_rhs_infer,
      inputs=("lhs", "rhs"), template="a", grad=lambda F, i, o, g, at: [g[0], F.zeros_like(i[1])],
      aliases=("_identity_with_attr_like_rhs",), mxnet_name="_identity_with_attr_like_rhs",
      doc="lhs unchanged, constrained to rhs's shape (lhs, rhs and the result share one "
          "shape, inferred from whichever is known); rhs gets a zero gradient.")
