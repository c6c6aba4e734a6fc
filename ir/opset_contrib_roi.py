"""MXNet's region-of-interest ops: ROIAlign (contrib) and ROIPooling.

Semantics are MXNet 1.9.1's (src/operator/contrib/roi_align.cc, src/operator/roi_pooling.cc):
ROIAlign samples ``ceil(roi / pooled)`` points per bin side unless ``sample_ratio`` is set,
gives a roi with a negative batch index zeros, and its bilinear weights are separable, so
each roi is ``A_h @ x[b] @ A_w.T`` and the gradient the adjoint (an op whose own gradient
is ROIAlign again). ROIPooling rounds the scaled roi to whole cells, takes each bin's first
maximum and routes the gradient there through a hidden argmax output (MXNet's ``max_idx``).
rois get no gradient, as in MXNet.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import ShapeError
from .ops import REQUIRED, OpKind, defop
from .opset_contrib import _is4d, _pair, _types
from .shape_rules import fail
from .types import TensorType


# ---- ROIAlign ------------------------------------------------------------------------------
def _rois_check(op, in_types, cols=(5,)):
    x, r = in_types[0], in_types[1]
    n, c, _, _ = _is4d(op, in_types)
    if r.shape is not None and (len(r.shape) != 2 or r.shape[1] not in (None, *cols)):
        fail(op, "rois must be 2-D (num_rois, 5): [batch_index, x1, y1, x2, y2]", in_types)
    if x.dtype != r.dtype:
        fail(op, f"data ({x.dtype}) and rois ({r.dtype}) must share one dtype", in_types)
    return c, (None if r.shape is None else r.shape[0])


def _roi_align_infer(in_types, at):
    op = "ROIAlign"
    c, nr = _rois_check(op, in_types)
    ph, pw = _pair(at["pooled_size"], op, "pooled_size")
    if at["position_sensitive"] and c is not None:
        if c % (ph * pw):
            fail(op, f"channels ({c}) must be a multiple of pooled_size[0] * pooled_size[1] "
                     "when position_sensitive", in_types)
        c //= ph * pw
    return [TensorType((nr, c, ph, pw), in_types[0].dtype)], list(in_types)


def _sample_matrix(start, bin_size, pooled, grid, size):
    """(pooled, size): the mean over each bin's ``grid`` sample points of their bilinear
    weights along one axis (MXNet's bilinear_interpolate, separable in y and x)."""
    p = np.arange(pooled)[:, None]
    g = np.arange(grid)[None, :]
    pos = start + p * bin_size + (g + 0.5) * bin_size / grid          # (pooled, grid)
    ok = (pos >= -1.0) & (pos <= size)
    pos = np.maximum(pos, 0.0)
    lo = pos.astype(np.int64)
    edge = lo >= size - 1
    lo = np.where(edge, size - 1, lo)
    hi = np.where(edge, size - 1, lo + 1)
    lam = np.where(edge, 0.0, pos - lo)
    a = np.zeros((pooled, size))
    rows = np.broadcast_to(p, pos.shape)
    np.add.at(a, (rows, lo), np.where(ok, 1.0 - lam, 0.0) / grid)
    np.add.at(a, (rows, hi), np.where(ok, lam, 0.0) / grid)
    return a


def _roi_align_plan(roi, at, h, w):
    """(batch index, A_h, A_w) of one roi, or None for a roi MXNet skips."""
    b = int(roi[0])
    if b < 0:
        return None
    ph, pw = _pair(at["pooled_size"], "ROIAlign", "pooled_size")
    off = 0.5 if at["aligned"] else 0.0
    x1, y1, x2, y2 = (float(v) * at["spatial_scale"] - off for v in roi[1:5])
    rw, rh = x2 - x1, y2 - y1
    if at["aligned"]:
        if rw <= 0 or rh <= 0:
            raise ShapeError(f"ROIAlign: roi {list(map(float, roi))} has no area "
                             "(aligned=True needs x2 > x1 and y2 > y1)")
    else:
        rw, rh = max(rw, 1.0), max(rh, 1.0)
    sr = at["sample_ratio"]
    gh = sr if sr > 0 else math.ceil(rh / ph)
    gw = sr if sr > 0 else math.ceil(rw / pw)
    return (b, _sample_matrix(y1, rh / ph, ph, gh, h), _sample_matrix(x1, rw / pw, pw, gw, w))


def _roi_align(ins, at):
    (out_t,), _ = _roi_align_infer(_types(ins), at)
    x, rois = ins
    out = np.zeros(out_t.shape, np.float64)
    ph, pw = out_t.shape[2:]
    x64 = x.astype(np.float64)
    for r, roi in enumerate(rois):
        plan = _roi_align_plan(roi, at, x.shape[2], x.shape[3])
        if plan is None:
            continue
        b, ah, aw = plan
        if at["position_sensitive"]:
            xb = x64[b].reshape(-1, ph, pw, *x.shape[2:])
            out[r] = np.einsum("ph,cpqhw,qw->cpq", ah, xb, aw)
        else:
            out[r] = ah @ x64[b] @ aw.T
    return out.astype(x.dtype)


def _roi_align_backward(ins, at):
    g, x, rois = ins
    dx = np.zeros(x.shape, np.float64)
    ph, pw = g.shape[2:]
    for r, roi in enumerate(rois):
        plan = _roi_align_plan(roi, at, x.shape[2], x.shape[3])
        if plan is None:
            continue
        b, ah, aw = plan
        gr = g[r].astype(np.float64)
        if at["position_sensitive"]:
            dx[b] += np.einsum("ph,cpq,qw->cpqhw", ah, gr, aw).reshape(x.shape[1:])
        else:
            dx[b] += ah.T @ gr @ aw
    return dx.astype(x.dtype)


_ROI_ALIGN = {"pooled_size": REQUIRED, "spatial_scale": REQUIRED, "sample_ratio": -1,
              "position_sensitive": False, "aligned": False}
defop("roi_align", OpKind.OPAQUE, _roi_align, _roi_align_infer, inputs=("data", "rois"),
      attrs=dict(_ROI_ALIGN), mxnet_name="_contrib_ROIAlign",
      grad=lambda F, i, o, g, at: [F.roi_align_backward(g[0], i[0], i[1], **at),
                                   F.zeros_like(i[1])],
      doc="ROIAlign (He et al., Mask R-CNN, 2017): average of bilinear samples of NCHW data "
          "over each of pooled_size bins of each roi [batch_index, x1, y1, x2, y2] (scaled "
          "by spatial_scale); sample_ratio points per bin side (-1: ceil(roi / pooled)); "
          "aligned shifts by half a pixel; position_sensitive reads channel group (i, j) "
          "for bin (i, j). rois get no gradient, as in MXNet.")
defop("roi_align_backward", OpKind.OPAQUE, _roi_align_backward,
      lambda ts, at: ([ts[1]], list(ts)), inputs=("ograd", "data", "rois"),
      attrs=dict(_ROI_ALIGN),
      grad=lambda F, i, o, g, at: [F.roi_align(g[0], i[2], **at), None, None],
      doc="Gradient of ROIAlign w.r.t. its data (the adjoint of the sampling).")


# ---- ROIPooling ----------------------------------------------------------------------------
def _roi_pool_infer(in_types, at):
    op = "ROIPooling"
    c, nr = _rois_check(op, in_types)
    ph, pw = _pair(at["pooled_size"], op, "pooled_size")
    return [TensorType((nr, c, ph, pw), in_types[0].dtype),
            TensorType((nr, c, ph, pw), "int64")], list(in_types)


def _round(v):
    return int(math.floor(v + 0.5)) if v >= 0 else -int(math.floor(-v + 0.5))  # std::round


def _roi_pool(ins, at):
    (out_t, _), _ = _roi_pool_infer(_types(ins), at)
    x, rois = ins
    n, c, h, w = x.shape
    ph, pw = out_t.shape[2:]
    out = np.zeros(out_t.shape, x.dtype)
    arg = np.full(out_t.shape, -1, np.int64)
    f = rois.dtype.type if rois.dtype.kind == "f" else np.float32
    scale = f(at["spatial_scale"])
    plane = np.arange(h * w).reshape(h, w)
    for r, roi in enumerate(rois):
        b = int(roi[0])
        if not 0 <= b < n:
            continue
        x1, y1, x2, y2 = (_round(float(f(v) * scale)) for v in roi[1:5])
        bh = f(max(y2 - y1 + 1, 1)) / f(ph)
        bw = f(max(x2 - x1 + 1, 1)) / f(pw)
        for i in range(ph):
            hs = min(max(int(math.floor(f(i) * bh)) + y1, 0), h)
            he = min(max(int(math.ceil(f(i + 1) * bh)) + y1, 0), h)
            for j in range(pw):
                ws = min(max(int(math.floor(f(j) * bw)) + x1, 0), w)
                we = min(max(int(math.ceil(f(j + 1) * bw)) + x1, 0), w)
                if he <= hs or we <= ws:
                    continue
                win = x[b, :, hs:he, ws:we].reshape(c, -1)
                k = np.argmax(win, axis=1)   # the first maximum, as MXNet's strict '>'
                out[r, :, i, j] = win[np.arange(c), k]
                arg[r, :, i, j] = (b * c + np.arange(c)) * h * w + \
                    plane[hs:he, ws:we].reshape(-1)[k]
    return out, arg


def _roi_pool_backward(ins, at):
    g, arg, x = ins
    dx = np.zeros(x.size, np.float64)
    ok = arg >= 0
    np.add.at(dx, arg[ok], g[ok].astype(np.float64))
    return dx.reshape(x.shape).astype(x.dtype)


_ROI_POOL = {"pooled_size": REQUIRED, "spatial_scale": REQUIRED}
defop("roi_pooling", OpKind.OPAQUE, _roi_pool, _roi_pool_infer, inputs=("data", "rois"),
      attrs=dict(_ROI_POOL), num_outputs=2, visible_outputs=1, mxnet_name="ROIPooling",
      grad=lambda F, i, o, g, at: [F.roi_pooling_backward(g[0], o[1], i[0], **at),
                                   F.zeros_like(i[1])],
      doc="ROI max pooling (Girshick, Fast R-CNN, 2015): each roi [batch_index, x1, y1, "
          "x2, y2], scaled by spatial_scale and rounded, is cut into pooled_size bins and "
          "each bin's maximum taken (0 for an empty bin). Output 1 (hidden) is the flat "
          "index of each maximum in data, where the gradient goes.")
defop("roi_pooling_backward", OpKind.OPAQUE, _roi_pool_backward,
      lambda ts, at: ([ts[2]], list(ts)), inputs=("ograd", "argmax", "data"),
      attrs=dict(_ROI_POOL),
      doc="Gradient of ROIPooling w.r.t. its data: ograd added at each bin's argmax. "
          "Not differentiable (no second order).")
