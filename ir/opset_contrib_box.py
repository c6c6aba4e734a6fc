"""MXNet's contrib bounding-box ops: box_nms, box_iou, bipartite_matching, box_encode,
and box_decode (MultiBoxTarget and MultiBoxDetection are in
``opset_contrib_multibox``).

Semantics are MXNet 1.9.1's (src/operator/contrib/bounding_box-inl.h, multibox_target.cc,
multibox_detection.cc), its quirks included, so that detection models give MXNet's boxes:
box_nms keeps a box's first coordinate as the "is a row" mark when it converts formats (a
row whose first coordinate is negative is left as it is), bipartite_matching's ``topk``
stops after topk + 1 matches, MultiBoxDetection leaves the rows cut by ``nms_topk``
unsorted with class -1. Ties are broken as MXNet's stable sorts do (lower index first).

Greedy matchings are written as "repeatedly take the best remaining pair" (one ``argmax``
over a masked matrix per match) rather than a walk over all sorted pairs: the same pairs in
the same order, in min(rows, cols) NumPy steps.

Gradients: box_nms routes the output gradient back to the rows each kept box came from (a
hidden record output, as MXNet); the others have MXNet's zero gradients.
"""
from __future__ import annotations

import numpy as np

from .ops import REQUIRED, OpKind, defop
from .shape_rules import fail, same_dtype
from .types import TensorType


def _types(ins):
    return [TensorType(a.shape, a.dtype) for a in ins]


def _zero_grads(F, ins, outs, ograds, at):
    return [F.zeros_like(x) for x in ins]   # MXNet's MakeZeroGradNodes


def _intersect(a_lo, a_hi, b_lo, b_hi, center: bool):
    """Overlap length along one axis (MXNet's Intersect): [lo, hi] or [centre, extent]."""
    if center:
        a_lo, a_hi = a_lo - a_hi / 2, a_lo + a_hi / 2
        b_lo, b_hi = b_lo - b_hi / 2, b_lo + b_hi / 2
    w = np.minimum(a_hi, b_hi) - np.maximum(a_lo, b_lo)
    return np.where(w > 0, w, 0).astype(w.dtype)


def _area(b, center: bool):
    """Box areas, 0 for a box of negative width or height (MXNet's BoxArea)."""
    w, h = (b[..., 2], b[..., 3]) if center else (b[..., 2] - b[..., 0], b[..., 3] - b[..., 1])
    return np.where((w < 0) | (h < 0), 0, w * h).astype(b.dtype)


def _iou(a, b, center: bool):
    """IoU of boxes ``a`` (..., 4) and ``b`` (..., 4), broadcast; 0 where they miss."""
    inter = _intersect(a[..., 0], a[..., 2], b[..., 0], b[..., 2], center) * \
        _intersect(a[..., 1], a[..., 3], b[..., 1], b[..., 3], center)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (_area(a, center) + _area(b, center) - inter)
    return np.where(inter <= 0, 0, iou).astype(a.dtype)


def _format(name, at, op, in_types=()):
    v = at[name]
    if v not in ("corner", "center"):
        fail(op, f"{name} must be 'corner' or 'center', got {v!r}", in_types)
    return v == "center"


# ---- box_nms -------------------------------------------------------------------------------
def _nms_infer(in_types, at):
    op, t = "box_nms", in_types[0]
    if t.shape is not None and len(t.shape) < 2:
        fail(op, "data must have at least 2 dims (..., num_boxes, box_width)", in_types)
    width = None if t.shape is None else t.shape[-1]
    cs, si, ii = at["coord_start"], at["score_index"], at["id_index"]
    if width is not None:
        if width < (6 if ii >= 0 else 5):
            fail(op, f"box width {width} is too small: a box needs a score and 4 "
                     "coordinates (and a class id when id_index >= 0)", in_types)
        if not 0 <= si < width or cs <= si <= cs + 3:
            fail(op, f"score_index {si} is out of range or inside the coordinates "
                     f"[{cs}, {cs + 3}]", in_types)
        if not (0 <= cs and cs + 3 < width):
            fail(op, f"coordinates [{cs}, {cs + 3}] are out of range for width {width}",
                 in_types)
        if ii >= 0 and (ii >= width or cs <= ii <= cs + 3 or ii == si):
            fail(op, f"id_index {ii} is out of range or clashes with the score or the "
                     "coordinates", in_types)
    _format("in_format", at, op, in_types)
    _format("out_format", at, op, in_types)
    rec = None if t.shape is None else t.shape[:-1] + (1,)
    return [t, TensorType(rec, t.dtype)], [t]


def _box_nms(ins, at):
    _nms_infer(_types(ins), at)
    data = ins[0]
    shape = data.shape
    n, k = shape[-2], shape[-1]
    x = data.reshape(-1, n, k)
    nb = x.shape[0]
    cs, si, ii = at["coord_start"], at["score_index"], at["id_index"]
    center = at["in_format"] == "center"
    topk = n if at["topk"] < 0 else min(n, at["topk"])
    if topk < 1:
        rec = np.arange(nb * n, dtype=data.dtype).reshape(shape[:-1] + (1,))
        return data.copy(), rec
    out = np.full(x.shape, -1, data.dtype)
    rec = np.full((nb, n), -1, data.dtype)
    scores = x[..., si]
    valid = scores > at["valid_thresh"]
    if ii >= 0:
        valid &= x[..., ii] != at["background_id"]
    for b in range(nb):
        idx = np.flatnonzero(valid[b])
        idx = idx[np.argsort(-scores[b, idx], kind="stable")][:topk]
        boxes = x[b, idx, cs:cs + 4]
        ids = x[b, idx, ii].astype(np.int64) if ii >= 0 and not at["force_suppress"] else None
        area = _area(boxes, center)
        alive = np.ones(len(idx), bool)
        for r in range(len(idx)):   # greedy: each surviving box suppresses later ones
            if not alive[r]:
                continue
            rest = np.flatnonzero(alive[r + 1:]) + r + 1
            if ids is not None:
                rest = rest[ids[rest] == ids[r]]
            if not len(rest):
                continue
            inter = _intersect(boxes[r, 0], boxes[r, 2], boxes[rest, 0], boxes[rest, 2],
                               center) * \
                _intersect(boxes[r, 1], boxes[r, 3], boxes[rest, 1], boxes[rest, 3], center)
            with np.errstate(divide="ignore", invalid="ignore"):
                iou = inter / (area[r] + area[rest] - inter)
            alive[rest[iou > at["overlap_thresh"]]] = False
        keep = idx[alive]
        out[b, :len(keep)] = x[b, keep]
        rec[b, :len(keep)] = keep + b * n   # flat box index, for the gradient
    if at["in_format"] != at["out_format"]:
        c = out[..., cs:cs + 4]
        mark = c[..., 0] >= 0   # MXNet converts rows whose first coordinate is >= 0
        if at["out_format"] == "center":
            new = np.stack([(c[..., 0] + c[..., 2]) / 2, (c[..., 1] + c[..., 3]) / 2,
                            c[..., 2] - c[..., 0], c[..., 3] - c[..., 1]], -1)
        else:
            new = np.stack([c[..., 0] - c[..., 2] / 2, c[..., 1] - c[..., 3] / 2,
                            c[..., 0] + c[..., 2] / 2, c[..., 1] + c[..., 3] / 2], -1)
        out[..., cs:cs + 4] = np.where(mark[..., None], new, c)
    return out.reshape(shape), rec.reshape(shape[:-1] + (1,))


def _box_nms_backward(ins, at):
    g, rec = ins
    shape = g.shape
    g2 = g.reshape(-1, shape[-1])
    r = rec.reshape(-1).astype(np.int64)
    dx = np.zeros(g2.shape, g.dtype)
    ok = r >= 0
    dx[r[ok]] = g2[ok]
    return dx.reshape(shape)


_NMS = {"overlap_thresh": 0.5, "valid_thresh": 0.0, "topk": -1, "coord_start": 2,
        "score_index": 1, "id_index": -1, "background_id": -1, "force_suppress": False,
        "in_format": "corner", "out_format": "corner"}
defop("box_nms", OpKind.OPAQUE, _box_nms, _nms_infer, attrs=dict(_NMS),
      num_outputs=2, visible_outputs=1, mxnet_name="_contrib_box_nms",
      aliases=("_contrib_box_non_maximum_suppression",),
      grad=lambda F, i, o, g, at: [F.box_nms_backward(g[0], o[1], **at)],
      doc="Non-maximum suppression of boxes (..., n, width) rows [id, score, x1, y1, x2, y2, "
          "...] (the positions are attributes): per batch, boxes with score > valid_thresh "
          "(and id != background_id) sorted by score, the topk best kept, and a box "
          "dropped when its IoU with a kept better box of the same class (any class with "
          "force_suppress) exceeds overlap_thresh. Kept rows come first, the rest is -1. "
          "Output 1 (hidden) records each output row's source row for the gradient.")
defop("box_nms_backward", OpKind.OPAQUE, _box_nms_backward,
      lambda ts, at: ([ts[0]], list(ts)), inputs=("ograd", "record"), attrs=dict(_NMS),
      doc="Gradient of box_nms: each output row's gradient goes back to its source row, "
          "suppressed rows get 0. Not differentiable (no second order).")


# ---- box_iou, bipartite_matching -----------------------------------------------------------
def _iou_infer(in_types, at):
    op = "box_iou"
    same_dtype(op, in_types)
    for t in in_types:
        if t.shape is not None and (len(t.shape) < 2 or t.shape[-1] not in (None, 4)):
            fail(op, "lhs and rhs must be (..., 4) with at least 2 dims", in_types)
    _format("format", at, op, in_types)
    lhs, rhs = in_types
    shape = None if lhs.shape is None or rhs.shape is None else lhs.shape[:-1] + rhs.shape[:-1]
    return [TensorType(shape, lhs.dtype)], list(in_types)


def _box_iou(ins, at):
    _iou_infer(_types(ins), at)
    lhs, rhs = ins
    a = lhs.reshape(lhs.shape[:-1] + (1,) * (rhs.ndim - 1) + (4,))
    return _iou(a, rhs, at["format"] == "center")


defop("box_iou", OpKind.OPAQUE, _box_iou, _iou_infer, inputs=("lhs", "rhs"),
      attrs={"format": "corner"}, mxnet_name="_contrib_box_iou", grad=_zero_grads,
      doc="Intersection over union of every box of lhs (..., 4) with every box of rhs "
          "(..., 4): shape lhs.shape[:-1] + rhs.shape[:-1]; format 'corner' [x1, y1, x2, y2] "
          "or 'center' [x, y, w, h]. Zero gradients, as in MXNet.")


def _match_infer(in_types, at):
    t = in_types[0]
    if t.shape is not None and len(t.shape) < 2:
        fail("bipartite_matching", "the score matrix must have at least 2 dims", in_types)
    if t.shape is None:
        return [t, t], [t]
    return [t.with_shape(t.shape[:-1]), t.with_shape(t.shape[:-2] + t.shape[-1:])], [t]


def _bipartite(ins, at):
    _match_infer(_types(ins), at)
    x = ins[0]
    n, m = x.shape[-2:]
    s = x.reshape(-1, n, m)
    asc, thr, topk = at["is_ascend"], at["threshold"], at["topk"]
    rows = np.full((s.shape[0], n), -1, x.dtype)
    cols = np.full((s.shape[0], m), -1, x.dtype)
    if n * m == 0:
        return rows.reshape(x.shape[:-1]), cols.reshape(x.shape[:-2] + (m,))
    for b in range(s.shape[0]):
        free = np.ones((n, m), bool)
        key = -s[b] if not asc else s[b]   # best pair = smallest key, first in flat order
        count = 0
        while free.any():
            j = int(np.argmin(np.where(free, key, np.inf)))
            r, c = divmod(j, m)
            v = s[b, r, c]
            if not free[r, c] or not (v < thr if asc else v > thr):
                break   # the best remaining pair misses the threshold: MXNet stops
            rows[b, r], cols[b, c] = c, r
            free[r, :] = False
            free[:, c] = False
            count += 1
            if topk > 0 and count > topk:
                break
    return rows.reshape(x.shape[:-1]), cols.reshape(x.shape[:-2] + (m,))


defop("bipartite_matching", OpKind.OPAQUE, _bipartite, _match_infer,
      attrs={"is_ascend": False, "threshold": REQUIRED, "topk": -1}, num_outputs=2,
      mxnet_name="_contrib_bipartite_matching", grad=_zero_grads,
      doc="Greedy bipartite matching of a score matrix (..., N, M): repeatedly the best "
          "(highest, or lowest with is_ascend) pair of an unmatched row and column is "
          "matched while its score passes threshold. Returns the column of each row (-1: "
          "none) and the row of each column. Zero gradients, as in MXNet.")


# ---- box_encode, box_decode ----------------------------------------------------------------
def _encode_infer(in_types, at):
    op = "box_encode"
    s, m, a, r = in_types[:4]
    ok = (s.shape is None or len(s.shape) == 2) and (m.shape is None or len(m.shape) >= 2)
    for t in (a, r):
        ok &= t.shape is None or (len(t.shape) >= 3 and t.shape[-1] in (None, 4))
    if not ok:
        fail(op, "expected samples (B, N), matches (B, N), anchors (B, N, 4), refs "
                 "(B, M, 4), means (4,), stds (4,)", in_types)
    same_dtype(op, in_types, names=("samples", "matches", "anchors", "refs", "means", "stds"))
    vec = [t.with_shape((4,)) for t in in_types[4:]]
    return [a, a], list(in_types[:4]) + vec


def _box_encode(ins, at):
    _encode_infer(_types(ins), at)
    samples, matches, anchors, refs, means, stds = ins
    b, n = anchors.shape[:2]
    m = refs.shape[1]
    anchors = anchors.reshape(b, n, 4)
    idx = np.clip(matches.reshape(b, n).astype(np.int64), 0, max(m - 1, 0))
    ref = np.take_along_axis(refs.reshape(b, m, 4), idx[..., None], axis=1)
    dt = anchors.dtype.type
    half = dt(0.5)

    def centre(v):
        w, h = v[..., 2] - v[..., 0], v[..., 3] - v[..., 1]
        return v[..., 0] + w * half, v[..., 1] + h * half, w, h
    rx, ry, rw, rh = centre(ref)
    ax, ay, aw, ah = centre(anchors)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.stack([(rx - ax) / aw, (ry - ay) / ah, np.log(rw / aw), np.log(rh / ah)], -1)
        t = (t - means.astype(t.dtype)) / stds.astype(t.dtype)
    valid = (samples.reshape(b, n) > 0.5)[..., None]
    mask = np.broadcast_to(valid, t.shape).astype(anchors.dtype)
    return np.where(valid, t, 0).astype(anchors.dtype), mask


defop("box_encode", OpKind.OPAQUE, _box_encode, _encode_infer,
      inputs=("samples", "matches", "anchors", "refs", "means", "stds"), num_outputs=2,
      mxnet_name="_contrib_box_encode", grad=_zero_grads,
      doc="Training targets of corner boxes: for each anchor whose sample is positive "
          "(> 0.5), the offsets of its matched ref's centre and log size from the anchor's, "
          "normalised by (t - means) / stds; 0 elsewhere. Returns (targets, masks), both "
          "(B, N, 4). Zero gradients, as in MXNet.")


def _decode_infer(in_types, at):
    op = "box_decode"
    d, a = in_types
    if d.shape is not None and (len(d.shape) != 3 or d.shape[-1] not in (None, 4)):
        fail(op, "data must be (B, N, 4)", in_types)
    if a.shape is not None and (len(a.shape) < 3 or a.shape[-1] not in (None, 4)):
        fail(op, "anchors must be (1, N, 4)", in_types)
    same_dtype(op, in_types, names=("data", "anchors"))
    _format("format", at, op, in_types)
    return [d], list(in_types)


def _box_decode(ins, at):
    _decode_infer(_types(ins), at)
    x, anchors = ins
    b, n = x.shape[:2]
    a = anchors.reshape(-1, 4)[:n]
    dt = x.dtype.type
    ax, ay, aw, ah = a[:, 0], a[:, 1], a[:, 2], a[:, 3]
    if at["format"] == "corner":
        aw, ah = aw - ax, ah - ay
        ax, ay = ax + aw * dt(0.5), ay + ah * dt(0.5)
    std = [dt(at[f"std{i}"]) for i in range(4)]
    ox = x[..., 0] * std[0] * aw + ax
    oy = x[..., 1] * std[1] * ah + ay
    dw, dh = x[..., 2] * std[2], x[..., 3] * std[3]
    if at["clip"] > 0:
        dw, dh = np.minimum(dw, dt(at["clip"])), np.minimum(dh, dt(at["clip"]))
    with np.errstate(over="ignore"):
        ow, oh = np.exp(dw) * aw * dt(0.5), np.exp(dh) * ah * dt(0.5)
    return np.stack([ox - ow, oy - oh, ox + ow, oy + oh], -1).astype(x.dtype)


defop("box_decode", OpKind.OPAQUE, _box_decode, _decode_infer, inputs=("data", "anchors"),
      attrs={"std0": 1.0, "std1": 1.0, "std2": 1.0, "std3": 1.0, "clip": -1.0,
             "format": "center"}, mxnet_name="_contrib_box_decode", grad=_zero_grads,
      doc="Corner boxes from predicted offsets data (B, N, 4) and anchors (1, N, 4) in "
          "'center' or 'corner' format: centre + d * std * size, size * exp(d * std) (the "
          "log-size term clipped at clip when clip > 0). Zero gradients, as in MXNet.")
