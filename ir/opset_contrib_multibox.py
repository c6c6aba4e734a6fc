"""MXNet's SSD ops: MultiBoxPrior, MultiBoxTarget and MultiBoxDetection (contrib).

Semantics are MXNet 1.9.1's (src/operator/contrib/multibox_prior.cc, multibox_target.cc,
multibox_detection.cc), computed in the data's dtype as MXNet's CPU kernels do. Quirks kept:
MultiBoxTarget ignores ``minimum_negative_samples`` (MXNet's CPU kernel never reads it);
MultiBoxDetection ignores ``background_id`` (class 0 is the background), keeps the rows cut
by ``nms_topk`` unsorted with class -1, and suppresses at IoU >= nms_threshold (box_nms: >).
All three have MXNet's zero gradients.
"""
from __future__ import annotations

import numpy as np

from .errors import ShapeError
from .ops import OpKind, defop
from .opset_contrib import _is4d, _types
from .opset_contrib_box import _zero_grads
from .shape_rules import fail, same_dtype
from .types import TensorType


# ---- MultiBoxPrior -------------------------------------------------------------------------
def _prior_infer(in_types, at):
    _, _, h, w = _is4d("MultiBoxPrior", in_types)
    sizes, ratios = _floats(at["sizes"]), _floats(at["ratios"])
    if not sizes or not ratios:
        fail("MultiBoxPrior", "sizes and ratios must not be empty", in_types)
    if len(_floats(at["steps"])) != 2 or len(_floats(at["offsets"])) != 2:
        fail("MultiBoxPrior", "steps and offsets must have 2 values (y, x)", in_types)
    n = None if h is None or w is None else h * w * (len(sizes) + len(ratios) - 1)
    return [TensorType((1, n, 4), in_types[0].dtype)], list(in_types)


def _floats(v):
    return (float(v),) if isinstance(v, int | float) else tuple(float(a) for a in v)


def _prior(ins, at):
    _prior_infer(_types(ins), at)
    f = np.float32
    h, w = ins[0].shape[2:]
    sizes = np.array(_floats(at["sizes"]), f)
    ratios = np.sqrt(np.array(_floats(at["ratios"]), f))
    sy, sx = _floats(at["steps"])
    if sy <= 0 or sx <= 0:   # MXNet: a step <= 0 means 1 / the feature map size
        sy, sx = 1.0 / h, 1.0 / w
    oy, ox = _floats(at["offsets"])
    cy = (np.arange(h, dtype=f) + f(oy)) * f(sy)
    cx = (np.arange(w, dtype=f) + f(ox)) * f(sx)
    # anchors per location: every size at the first ratio, then the first size at the others
    size = np.concatenate([sizes, np.full(len(ratios) - 1, sizes[0], f)])
    ratio = np.concatenate([np.full(len(sizes), ratios[0], f), ratios[1:]])
    hw = size * f(h) / f(w) * ratio / f(2)
    hh = size / ratio / f(2)
    cyy, cxx = np.broadcast_to(cy[:, None, None], (h, w, 1)), \
        np.broadcast_to(cx[None, :, None], (h, w, 1))
    out = np.stack([cxx - hw, cyy - hh, cxx + hw, cyy + hh], axis=-1).reshape(1, -1, 4)
    if at["clip"]:
        out = np.clip(out, 0.0, 1.0)
    return out.astype(ins[0].dtype)


defop("multibox_prior", OpKind.OPAQUE, _prior, _prior_infer,
      attrs={"sizes": (1.0,), "ratios": (1.0,), "clip": False, "steps": (-1.0, -1.0),
             "offsets": (0.5, 0.5)}, mxnet_name="_contrib_MultiBoxPrior",
      grad=_zero_grads,
      doc="SSD prior (anchor) boxes (Liu et al., 2016) for an NCHW feature map, (1, H * W * "
          "(len(sizes) + len(ratios) - 1), 4) corners [xmin, ymin, xmax, ymax]: at each "
          "location every size with the first ratio, then the first size with each other "
          "ratio; steps (y, x) default to 1 / the map size; clip to [0, 1].")


# ---- MultiBoxTarget ------------------------------------------------------------------------
def _target_infer(in_types, at):
    op = "MultiBoxTarget"
    a, lab, p = in_types
    same_dtype(op, in_types, names=("anchor", "label", "cls_pred"))
    if a.shape is not None and (len(a.shape) != 3 or a.shape[0] not in (None, 1)
                                or a.shape[2] not in (None, 4)):
        fail(op, "anchor must be (1, num_anchors, 4), shared by the batch", in_types)
    if lab.shape is not None and (len(lab.shape) != 3 or (lab.shape[2] or 5) < 5):
        fail(op, "label must be (batch, num_labels, width >= 5): [class, x1, y1, x2, y2]",
             in_types)
    if p.shape is not None and len(p.shape) != 3:
        fail(op, "cls_pred must be (batch, num_classes, num_anchors)", in_types)
    na = None if a.shape is None else a.shape[1]
    if p.shape is not None and None not in (na, p.shape[2]) and na != p.shape[2]:
        fail(op, f"cls_pred has {p.shape[2]} anchors, anchor {na}", in_types)
    na = na if na is not None else (None if p.shape is None else p.shape[2])
    b = None if lab.shape is None else lab.shape[0]
    loc = TensorType((b, None if na is None else 4 * na), a.dtype)
    return [loc, loc, TensorType((b, na), a.dtype)], list(in_types)


def _num_gt(label, b):
    """Valid ground truths of image ``b``: the rows before the first class id -1."""
    stop = np.flatnonzero(label[:, 0] == -1)
    n = int(stop[0]) if len(stop) else len(label)
    if len(stop) and np.any(label[n, 1:5] != -1):
        raise ShapeError(f"MultiBoxTarget: label row {n} of image {b} has class -1 but "
                         "coordinates that are not -1 (a padding row is all -1)")
    return n


def _overlaps(anchors, gts):
    """IoU (num_anchors, num_gt); 0 where the union is 0 (MXNet's safe_divide)."""
    a, g = anchors[:, None, :], gts[None, :, :]
    inter = np.maximum(0, np.minimum(a[..., 2], g[..., 2]) - np.maximum(a[..., 0], g[..., 0]))
    inter = inter * np.maximum(
        0, np.minimum(a[..., 3], g[..., 3]) - np.maximum(a[..., 1], g[..., 1]))
    union = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]) + \
        (g[..., 2] - g[..., 0]) * (g[..., 3] - g[..., 1]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union == 0, 0, inter / union).astype(anchors.dtype)


def _match_anchors(iou, thr):
    """Anchor -> (best IoU, gt) and the positive flags: first each gt takes its best free
    anchor (greedy, best pair first), then each other anchor its best gt if above thr."""
    na, ng = iou.shape
    best = np.full(na, -1.0)
    gt = np.full(na, -1, np.int64)
    pos = np.zeros(na, bool)
    free = np.ones((na, ng), bool)
    while free.any():
        j = int(np.argmax(np.where(free, iou, -np.inf)))
        a, k = divmod(j, ng)
        if not iou[a, k] > 1e-6:
            break
        best[a], gt[a], pos[a] = iou[a, k], k, True
        free[a, :] = False
        free[:, k] = False
    if thr > 0:
        rest = ~pos
        k = np.argmax(iou[rest], axis=1)
        best[rest], gt[rest] = iou[rest, k], k
        pos[rest] = best[rest] > thr
    return best, gt, pos


def _target(ins, at):
    (loc_t, _, cls_t), _ = _target_infer(_types(ins), at)
    anchor, label, cls_pred = ins
    dt = anchor.dtype
    a = anchor.reshape(-1, 4)
    na = len(a)
    loc = np.zeros((len(label), na, 4), dt)
    mask = np.zeros((len(label), na, 4), dt)
    cls = np.full((len(label), na), at["ignore_label"], dt)
    var = [np.float32(v) for v in at["variances"]]
    if len(var) != 4:
        raise ShapeError(f"MultiBoxTarget: variances must have 4 values, got {len(var)}")
    ratio = at["negative_mining_ratio"]
    for b in range(len(label)):
        ng = _num_gt(label[b], b)
        if ng == 0:
            continue
        gts = label[b, :ng]
        iou = _overlaps(a, gts[:, 1:5])
        best, gt, pos = _match_anchors(iou, at["overlap_threshold"])
        neg = ~pos
        if ratio > 0:
            npos = int(pos.sum())
            nneg = min(int(npos * ratio), na - npos)
            neg[:] = False
            if nneg > 0:
                unset = best < 0   # anchors the threshold pass did not visit
                best[unset] = iou[unset].max(axis=1)
                cand = np.flatnonzero(~pos & (best < at["negative_mining_thresh"]))
                if len(cand) < nneg:
                    raise ShapeError(f"MultiBoxTarget: image {b} has {len(cand)} negative "
                                     f"candidates for {nneg} negatives")
                p = cls_pred[b][:, cand]
                e = np.exp(p - p.max(axis=0))
                bg = e[0] / e.sum(axis=0)   # background probability: hardest = lowest
                neg[cand[np.argsort(bg, kind="stable")[:nneg]]] = True
        cls[b, neg] = 0
        m = gts[gt[pos]]
        cls[b, pos] = m[:, 0] + 1
        mask[b, pos] = 1
        f = np.float32
        aa, g = a[pos].astype(f), m[:, 1:5].astype(f)
        aw, ah = aa[:, 2] - aa[:, 0], aa[:, 3] - aa[:, 1]
        gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            loc[b, pos] = np.stack([
                ((g[:, 0] + g[:, 2]) * f(0.5) - (aa[:, 0] + aa[:, 2]) * f(0.5)) / aw / var[0],
                ((g[:, 1] + g[:, 3]) * f(0.5) - (aa[:, 1] + aa[:, 3]) * f(0.5)) / ah / var[1],
                np.log(gw / aw) / var[2], np.log(gh / ah) / var[3]], -1)
    return loc.reshape(loc_t.shape), mask.reshape(loc_t.shape), cls.reshape(cls_t.shape)


defop("multibox_target", OpKind.OPAQUE, _target, _target_infer,
      inputs=("anchor", "label", "cls_pred"), num_outputs=3,
      attrs={"overlap_threshold": 0.5, "ignore_label": -1.0, "negative_mining_ratio": -1.0,
             "negative_mining_thresh": 0.5, "minimum_negative_samples": 0,
             "variances": (0.1, 0.1, 0.2, 0.2)},
      output_names=lambda at: ["loc_target", "loc_mask", "cls_target"],
      mxnet_name="_contrib_MultiBoxTarget", grad=_zero_grads,
      doc="SSD training targets: each ground truth (label rows [class, x1, y1, x2, y2], "
          "padded with -1 rows) takes its best anchor, other anchors their best ground "
          "truth when IoU > overlap_threshold. Returns loc_target and loc_mask (B, 4 * "
          "anchors) (centre offsets / variances, log size ratios / variances) and "
          "cls_target (B, anchors): class + 1, 0 for negatives (all others, or the hardest "
          "negative_mining_ratio * positives by background probability), ignore_label else.")


# ---- MultiBoxDetection ---------------------------------------------------------------------
def _detect_infer(in_types, at):
    op = "MultiBoxDetection"
    c, loc, a = in_types
    same_dtype(op, in_types, names=("cls_prob", "loc_pred", "anchor"))
    if (c.shape is not None and len(c.shape) != 3) or \
            (loc.shape is not None and len(loc.shape) != 2) or \
            (a.shape is not None and (len(a.shape) != 3 or a.shape[2] not in (None, 4))):
        fail(op, "expected cls_prob (B, classes, anchors), loc_pred (B, 4 * anchors), "
                 "anchor (1, anchors, 4)", in_types)
    na = None if c.shape is None else c.shape[2]
    if None not in (na, a.shape and a.shape[1]) and na != a.shape[1]:
        fail(op, f"cls_prob has {na} anchors, anchor {a.shape[1]}", in_types)
    if None not in (na, loc.shape and loc.shape[1]) and 4 * na != loc.shape[1]:
        fail(op, f"loc_pred needs 4 * {na} values per image, has {loc.shape[1]}", in_types)
    b = None if c.shape is None else c.shape[0]
    return [TensorType((b, na, 6), c.dtype)], list(in_types)


def _decode_rows(a, p, var, clip):
    """Corner boxes from anchors and SSD offsets (MXNet's TransformLocations)."""
    dt = a.dtype.type
    aw, ah = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    ax, ay = (a[:, 0] + a[:, 2]) / dt(2), (a[:, 1] + a[:, 3]) / dt(2)
    ox, oy = p[:, 0] * var[0] * aw + ax, p[:, 1] * var[1] * ah + ay
    with np.errstate(over="ignore"):
        ow = np.exp(p[:, 2] * var[2]) * aw / dt(2)
        oh = np.exp(p[:, 3] * var[3]) * ah / dt(2)
    box = np.stack([ox - ow, oy - oh, ox + ow, oy + oh], -1)
    return np.clip(box, 0, 1) if clip else box


def _detect_iou(a, b):
    w = np.maximum(0, np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]))
    h = np.maximum(0, np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]))
    i = w * h
    u = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - i
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(u <= 0, 0, i / u)


def _detect(ins, at):
    (out_t,), _ = _detect_infer(_types(ins), at)
    prob, loc, anchor = ins
    dt = prob.dtype.type
    nb, nc, na = prob.shape
    var = [dt(v) for v in at["variances"]]
    if len(var) != 4:
        raise ShapeError(f"MultiBoxDetection: variances must have 4 values, got {len(var)}")
    a = anchor.reshape(-1, 4)[:na]
    out = np.full((nb, na, 6), -1, prob.dtype)
    thr = at["nms_threshold"]
    for b in range(nb):
        if nc > 1:
            cid = np.argmax(prob[b, 1:], axis=0) + 1
            score = prob[b, 1:].max(axis=0)
            none = ~(score > -1)   # MXNet starts from score -1 with a strict '>'
            cid[none], score[none] = 0, -1
        else:
            cid, score = np.zeros(na, np.int64), np.full(na, -1, prob.dtype)
        cid[(cid > 0) & (score < at["threshold"])] = 0
        rows = np.concatenate([(cid - 1).astype(prob.dtype)[:, None], score[:, None],
                               _decode_rows(a, loc[b].reshape(na, 4), var, at["clip"])], 1)
        rows = rows[cid > 0]
        nv = len(rows)
        out[b, :nv] = rows
        if nv < 1 or thr <= 0 or thr > 1:
            continue
        order = np.argsort(-rows[:, 1], kind="stable")
        keep = nv if not 0 < at["nms_topk"] < nv else at["nms_topk"]
        out[b, keep:nv, 0] = -1
        top = out[b, :keep]
        top[:] = rows[order[:keep]]
        for i in range(keep):
            if top[i, 0] < 0:
                continue
            j = np.arange(i + 1, keep)
            j = j[top[j, 0] >= 0]
            if not at["force_suppress"]:
                j = j[top[j, 0] == top[i, 0]]
            top[j[_detect_iou(top[i, 2:], top[j, 2:]) >= thr], 0] = -1
    return out


defop("multibox_detection", OpKind.OPAQUE, _detect, _detect_infer,
      inputs=("cls_prob", "loc_pred", "anchor"),
      attrs={"clip": True, "threshold": 0.01, "background_id": 0, "nms_threshold": 0.5,
             "force_suppress": False, "variances": (0.1, 0.1, 0.2, 0.2), "nms_topk": -1},
      mxnet_name="_contrib_MultiBoxDetection", grad=_zero_grads,
      doc="SSD detections (B, anchors, 6) rows [class, score, x1, y1, x2, y2]: each "
          "anchor's best non-background class (kept if its probability >= threshold), its "
          "box decoded from loc_pred with variances (clipped to [0, 1]), valid rows first, "
          "then sorted by score and suppressed (class -1) at IoU >= nms_threshold with a "
          "better box of the same class (any, with force_suppress); the rest is -1.")
