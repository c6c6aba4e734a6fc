"""Fixed random cases of every contrib op, run by real MXNet 1.9.1 (``python
contrib_cases.py mxnet out.npz``, in a subprocess of tests/test_opset_contrib.py) and by
ember (``run(ember)``); the outputs must agree."""
import sys

import numpy as np

F32 = np.float32


def _resize_cases(add, rng, x):
    for ac in (True, False):
        add("BilinearResize2D", [x], height=11, width=5, align_corners=ac)
        add("BilinearResize2D", [x], scale_height=1.7, scale_width=0.6, align_corners=ac)
        add("BilinearResize2D", [x], scale_height=2.0, scale_width=0.5, mode="odd_scale",
            align_corners=ac)
        for m in ("to_even_down", "to_even_up", "to_odd_down", "to_odd_up"):
            add("BilinearResize2D", [x], mode=m, align_corners=ac)
        like = rng.standard_normal((1, 1, 4, 13)).astype(F32)
        add("BilinearResize2D", [x, like], mode="like", align_corners=ac)


def _roi_cases(add, rng):
    feat = rng.standard_normal((2, 8, 10, 12)).astype(F32)
    # a roi with batch index -1 is left out: MXNet 1.9.1 leaves its output uninitialised
    rois = np.array([[0, 1.2, 2.3, 15.7, 17.1], [1, 0, 0, 23, 19], [1, -3, 4, 8, 30],
                     [0, 5, 5, 5.5, 6]], F32)
    for al in (False, True):
        for sr in (-1, 2):
            add("ROIAlign", [feat, rois], pooled_size=(3, 2), spatial_scale=0.5,
                sample_ratio=sr, aligned=al)
    add("ROIAlign", [feat, rois], pooled_size=(2, 2), spatial_scale=0.5,
        position_sensitive=True)
    add("ROIPooling", [feat, rois], pooled_size=(3, 4), spatial_scale=0.5)
    add("MultiBoxPrior", [feat], sizes=(0.3, 0.5, 0.7), ratios=(1, 2, 0.5), clip=True)
    add("MultiBoxPrior", [feat], sizes=(0.3,), ratios=(1, 3), steps=(0.1, 0.08),
        offsets=(0.2, 0.7))


def _box_cases(add, rng):
    xy = rng.uniform(0, 1, (3, 40, 2))
    wh = rng.uniform(0.05, 0.5, (3, 40, 2))
    boxes = np.concatenate([xy, xy + wh], -1)
    ids = rng.integers(0, 3, (3, 40, 1))
    sc = rng.uniform(0, 1, (3, 40, 1))
    sc[0, 3] = sc[0, 5]   # a tie
    data = np.concatenate([ids, sc, boxes], -1).astype(F32)
    add("box_nms", [data], overlap_thresh=0.3)
    add("box_nms", [data], overlap_thresh=0.3, valid_thresh=0.2, topk=15, id_index=0,
        background_id=1)
    add("box_nms", [data], overlap_thresh=0.4, id_index=0, force_suppress=True,
        out_format="center")
    cen = data.copy()
    cen[..., 2:4] = (boxes[..., :2] + boxes[..., 2:]) / 2
    cen[..., 4:] = wh
    add("box_nms", [cen], overlap_thresh=0.3, in_format="center", id_index=0)
    add("box_nms", [cen], overlap_thresh=0.3, in_format="center", out_format="corner")
    d2 = np.concatenate([boxes, sc, ids], -1).astype(F32)
    add("box_nms", [d2], overlap_thresh=0.3, coord_start=0, score_index=4, id_index=5, topk=0)
    add("box_nms", [d2[0]], overlap_thresh=0.3, coord_start=0, score_index=4, id_index=5)
    add("box_iou", [boxes[0, :7].astype(F32), boxes[1:, :5].astype(F32)])
    add("box_iou", [cen[0, :7, 2:6], cen[1, :5, 2:6]], format="center")
    s = rng.uniform(0, 1, (2, 9, 5)).astype(F32)
    s[0, 2, 3] = s[0, 4, 1]
    add("bipartite_matching", [s], threshold=0.2)
    add("bipartite_matching", [s], threshold=0.6, is_ascend=True)
    add("bipartite_matching", [s], threshold=0.1, topk=2)
    anchors = boxes[:2, :10].astype(F32)
    refs = boxes[2:, :4].repeat(2, 0).astype(F32)
    samples = rng.choice([-1.0, 0.0, 1.0], (2, 10)).astype(F32)
    matches = rng.integers(0, 4, (2, 10)).astype(F32)
    means = np.array([0, 0.1, 0, -0.1], F32)
    stds = np.array([0.1, 0.1, 0.2, 0.2], F32)
    add("box_encode", [samples, matches, anchors, refs, means, stds])
    off = rng.standard_normal((2, 10, 4)).astype(F32)
    add("box_decode", [off, anchors[:1]], std0=0.1, std1=0.1, std2=0.2, std3=0.2,
        format="corner", clip=0.5)
    add("box_decode", [off, cen[:1, :10, 2:6]])
    return xy, wh, boxes


def _multibox_cases(add, rng, xy, wh, boxes):
    anc = np.concatenate([xy[0, :30], xy[0, :30] + wh[0, :30]], -1)[None].astype(F32)
    lab = np.full((2, 4, 5), -1, F32)
    lab[0, :3] = np.concatenate([rng.integers(0, 3, (3, 1)), boxes[1, :3]], -1)
    lab[1, :1] = np.concatenate([[[2]], boxes[1, 5:6]], -1)
    pred = rng.standard_normal((2, 4, 30)).astype(F32)
    add("MultiBoxTarget", [anc, lab, pred])
    add("MultiBoxTarget", [anc, lab, pred], overlap_threshold=0.1, negative_mining_ratio=3,
        negative_mining_thresh=0.4)
    add("MultiBoxTarget", [anc, lab, pred], overlap_threshold=0, negative_mining_ratio=2)
    prob = rng.uniform(0, 1, (2, 4, 30)).astype(F32)
    prob /= prob.sum(1, keepdims=True)
    locp = (rng.standard_normal((2, 120)) * 0.5).astype(F32)
    add("MultiBoxDetection", [prob, locp, anc], threshold=0.2)
    add("MultiBoxDetection", [prob, locp, anc], threshold=0.2, nms_topk=6,
        force_suppress=True, nms_threshold=0.3, clip=False)
    add("MultiBoxDetection", [prob, locp, anc], nms_threshold=0)


def cases():
    """(op name, input arrays, attributes) for each case."""
    rng = np.random.default_rng(0)
    out = []

    def add(name, ins, **kw):
        out.append((name, ins, kw))
    x = rng.standard_normal((2, 3, 7, 9)).astype(F32)
    add("AdaptiveAvgPooling2D", [x], output_size=(3, 4))
    add("AdaptiveAvgPooling2D", [x], output_size=5)
    add("AdaptiveAvgPooling2D", [x])
    _resize_cases(add, rng, x)
    _roi_cases(add, rng)
    xy, wh, boxes = _box_cases(add, rng)
    add("arange_like", [x], start=2, step=0.5, repeat=3)
    add("arange_like", [x], axis=-2)
    _multibox_cases(add, rng, xy, wh, boxes)
    return out


def run(mx):
    """Every case's outputs as NumPy arrays, through ``mx.nd.contrib`` (``mx.nd``)."""
    res = []
    for name, ins, kw in cases():
        ns = mx.nd if name == "ROIPooling" else mx.nd.contrib
        out = getattr(ns, name)(*[mx.nd.array(a, dtype=a.dtype) for a in ins], **kw)
        outs = out if isinstance(out, list | tuple) else [out]
        res.append([o.asnumpy() for o in outs])
    return res


if __name__ == "__main__":
    import mxnet
    np.savez(sys.argv[2], *[a for outs in run(mxnet) for a in outs])
