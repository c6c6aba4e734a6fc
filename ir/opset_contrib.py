"""MXNet's contrib resampling ops: AdaptiveAvgPooling2D, BilinearResize2D, and arange_like
(ROIAlign/ROIPooling are in ``opset_contrib_roi``, the box ops in ``opset_contrib_box`` and
``opset_contrib_multibox``).

Semantics are MXNet 1.9.1's (src/operator/contrib/adaptive_avg_pooling.cc,
bilinear_resize-inl.h, tensor/init_op.h), quirks included: BilinearResize2D's ``size`` mode
takes the width scale only when ``scale_height`` is given, and its sampling grid is computed
in float32 as MXNet's CPU kernel does.

Adaptive pooling and bilinear resizing are linear and separable in the two spatial axes:
each is ``out = A_h @ x @ A_w.T`` for small per-axis weight matrices, so the forward kernel
is two matmuls and the gradient the adjoint ``A_h.T @ g @ A_w``, itself an op
(``*_backward``) whose own gradient is the forward op again.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import ShapeError
from .ops import OpKind, defop
from .shape_rules import fail, normalize_axis
from .types import TensorType


def _types(ins):
    return [TensorType(a.shape, a.dtype) for a in ins]


def _pair(v, op, name):
    v = (v,) if isinstance(v, int | float) else tuple(v)
    if len(v) == 1:
        v = v * 2
    if len(v) != 2:
        raise ShapeError(f"{op}: {name} must have 1 or 2 values, got {v}")
    return v


def _is4d(op, in_types, k=0):
    t = in_types[k]
    if t.shape is not None and len(t.shape) != 4:
        fail(op, "data must be 4-D (N, C, H, W)", in_types)
    return t.shape if t.shape is not None else (None,) * 4


def _spatial(x, a_h, a_w):
    """``A_h @ x @ A_w.T`` over the last two axes of NCHW ``x`` (float64 accumulation; two
    broadcast matmuls, ~20x faster than ``einsum`` here)."""
    return (a_h @ x.astype(np.float64, copy=False) @ a_w.T).astype(x.dtype, copy=False)


def _spatial_t(g, a_h, a_w, dtype):
    """The adjoint: ``A_h.T @ g @ A_w``."""
    return (a_h.T @ g.astype(np.float64, copy=False) @ a_w).astype(dtype, copy=False)


# ---- AdaptiveAvgPooling2D ------------------------------------------------------------------
def _adaptive_size(at, op="AdaptiveAvgPooling2D"):
    s = at["output_size"]
    s = () if s is None else ((s,) if isinstance(s, int) else tuple(s))
    if len(s) == 1:
        return (s[0], s[0])
    if len(s) == 2:
        return s
    return (1, 1)   # MXNet: an empty (or longer) tuple means 1x1


def _adaptive_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Row o averages input cells [floor(o n_in / n_out), ceil((o + 1) n_in / n_out))."""
    a = np.zeros((n_out, n_in))
    for o in range(n_out):
        lo, hi = (o * n_in) // n_out, -((-(o + 1) * n_in) // n_out)
        a[o, lo:hi] = 1.0 / (hi - lo)
    return a


def _adaptive_infer(in_types, at):
    n, c, _, _ = _is4d("AdaptiveAvgPooling2D", in_types)
    oh, ow = _adaptive_size(at)
    return [TensorType((n, c, oh, ow), in_types[0].dtype)], [in_types[0]]


def _adaptive(ins, at):
    x = ins[0]
    _adaptive_infer(_types(ins), at)
    oh, ow = _adaptive_size(at)
    return _spatial(x, _adaptive_matrix(x.shape[2], oh), _adaptive_matrix(x.shape[3], ow))


def _adaptive_backward(ins, at):
    g, x = ins
    oh, ow = _adaptive_size(at)
    return _spatial_t(g, _adaptive_matrix(x.shape[2], oh), _adaptive_matrix(x.shape[3], ow),
                      x.dtype)


_ADAPTIVE = {"output_size": ()}
defop("adaptive_avg_pooling2d", OpKind.OPAQUE, _adaptive, _adaptive_infer,
      attrs=dict(_ADAPTIVE), mxnet_name="_contrib_AdaptiveAvgPooling2D",
      grad=lambda F, i, o, g, at: [F.adaptive_avg_pooling2d_backward(g[0], i[0], **at)],
      doc="Adaptive average pooling of NCHW data to output_size (an int, (h, w), or () "
          "for 1x1): output cell (i, j) averages rows [floor(i H / h), ceil((i + 1) H / h)) "
          "and the same for columns.")
defop("adaptive_avg_pooling2d_backward", OpKind.OPAQUE, _adaptive_backward,
      lambda ts, at: ([ts[1]], list(ts)), inputs=("ograd", "data"), attrs=dict(_ADAPTIVE),
      grad=lambda F, i, o, g, at: [F.adaptive_avg_pooling2d(g[0], **at), None],
      doc="Gradient of AdaptiveAvgPooling2D w.r.t. its data (the adjoint of the pooling).")


# ---- BilinearResize2D ----------------------------------------------------------------------
_MODES = ("size", "odd_scale", "like", "to_even_down", "to_even_up", "to_odd_down",
          "to_odd_up")


def _resize_dim(n, mode, size, scale, op, in_types):
    """One output dim of BilinearResize2D (MXNet's BilinearSampleOpInferShape)."""
    if mode == "size" and scale is None:
        return size
    if n is None:
        return None
    if mode == "size":
        return int(scale * n)
    if mode == "odd_scale":
        if scale is None:
            fail(op, "mode 'odd_scale' needs scale_height and scale_width", in_types)
        return int(n * scale) if n % 2 == 0 else int((n - 1) * scale) + 1
    odd = n % 2
    return {"to_even_down": n - odd, "to_even_up": n + odd,
            "to_odd_down": n - 1 + odd, "to_odd_up": n + 1 - odd}[mode]


def _resize_infer(in_types, at):
    op, mode = "BilinearResize2D", at["mode"]
    if mode not in _MODES:
        fail(op, f"unknown mode {mode!r}; one of {', '.join(_MODES)}", in_types)
    if (len(in_types) == 2) != (mode == "like"):
        fail(op, "mode 'like' takes data and like, the other modes data alone", in_types)
    n, c, h, w = _is4d(op, in_types)
    if mode == "like":
        _, _, oh, ow = _is4d(op, in_types, 1)
    else:
        sh, sw = at["scale_height"], at["scale_width"]
        if mode == "size":   # MXNet reads scale_width only when scale_height is given
            if sh is not None and sw is None:
                fail(op, "scale_height is given without scale_width", in_types)
            sw = sw if sh is not None else None
        oh = _resize_dim(h, mode, at["height"], sh, op, in_types)
        ow = _resize_dim(w, mode, at["width"], sw, op, in_types)
    for d in (oh, ow):
        if d is not None and d < 1:
            fail(op, f"output size ({oh}, {ow}) must be positive", in_types)
    return [TensorType((n, c, oh, ow), in_types[0].dtype)], list(in_types)


def _resize_matrix(n_in: int, n_out: int, align: bool) -> np.ndarray:
    """Interpolation weights (n_out, n_in), computed in float32 like MXNet's CPU kernel."""
    f32 = np.float32
    if n_out > 1:
        scale = f32(n_in - 1) / f32(n_out - 1) if align else f32(n_in) / f32(n_out)
    else:
        scale = f32(0)
    d = np.arange(n_out, dtype=f32)
    src = scale * d if align else np.maximum(scale * (d + f32(0.5)) - f32(0.5), f32(0))
    i0 = src.astype(np.int64)
    lam = (src - i0.astype(f32)).astype(np.float64)
    i1 = i0 + (i0 < n_in - 1)
    a = np.zeros((n_out, n_in))
    np.add.at(a, (np.arange(n_out), i0), 1.0 - lam)
    np.add.at(a, (np.arange(n_out), i1), lam)
    return a


def _resize(ins, at):
    (out,), _ = _resize_infer(_types(ins), at)
    x, (oh, ow) = ins[0], out.shape[2:]
    ac = at["align_corners"]
    return _spatial(x, _resize_matrix(x.shape[2], oh, ac), _resize_matrix(x.shape[3], ow, ac))


def _resize_backward(ins, at):
    g, x = ins[0], ins[1]
    ac = at["align_corners"]
    return _spatial_t(g, _resize_matrix(x.shape[2], g.shape[2], ac),
                      _resize_matrix(x.shape[3], g.shape[3], ac), x.dtype)


def _resize_grad(F, ins, outs, ograds, at):
    dx = F.bilinear_resize2d_backward(ograds[0], ins[0], **at)
    return [dx] + [F.zeros_like(t) for t in ins[1:]]   # like: no gradient (MXNet: zeros)


def _resize_backward_grad(F, ins, outs, ograds, at):
    like = [ins[0]] if at["mode"] == "like" else []
    return [F.bilinear_resize2d(ograds[0], *like, **at), None]


_RESIZE = {"height": 1, "width": 1, "scale_height": None, "scale_width": None,
           "mode": "size", "align_corners": True}
defop("bilinear_resize2d", OpKind.OPAQUE, _resize, _resize_infer, inputs=("data", "like?"),
      attrs=dict(_RESIZE), grad=_resize_grad, mxnet_name="_contrib_BilinearResize2D",
      doc="Bilinear resizing of NCHW data. mode 'size': to (height, width), or to "
          "int(scale * size) when scale_height (and scale_width) are given; 'odd_scale': "
          "odd sizes map to (n - 1) * scale + 1; 'like': to the spatial size of the second "
          "input; 'to_even_down/up', 'to_odd_down/up': to the nearest even / odd size. "
          "align_corners=True maps corner pixel centres onto each other.")
defop("bilinear_resize2d_backward", OpKind.OPAQUE, _resize_backward,
      lambda ts, at: ([ts[1]], list(ts)), inputs=("ograd", "data"), attrs=dict(_RESIZE),
      grad=_resize_backward_grad,
      doc="Gradient of BilinearResize2D w.r.t. its data (the adjoint of the interpolation).")


# ---- arange_like ---------------------------------------------------------------------------
def _arange_like_infer(in_types, at):
    t = in_types[0]
    if at["axis"] is None:
        return [t], [t]
    if t.shape is None:
        return [TensorType((None,), t.dtype)], [t]
    ax = normalize_axis(at["axis"], len(t.shape), "arange_like", in_types)
    return [TensorType((t.shape[ax],), t.dtype)], [t]


def _arange_like(ins, at):
    (out,), _ = _arange_like_infer(_types(ins), at)
    i = np.arange(math.prod(out.shape)) // max(int(at["repeat"]), 1)
    return (at["start"] + i * at["step"]).astype(ins[0].dtype).reshape(out.shape)


defop("arange_like", OpKind.OPAQUE, _arange_like, _arange_like_infer,
      attrs={"start": 0.0, "step": 1.0, "repeat": 1, "axis": None},
      mxnet_name="_contrib_arange_like",
      grad=lambda F, i, o, g, at: [F.zeros_like(i[0])],
      doc="start + step * (i // repeat) in the shape of data (or along one axis of it), in "
          "data's dtype; data's values are not read.")
