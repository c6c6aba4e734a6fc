"""Contrib box ops (ir/opset_contrib_box.py, opset_contrib_multibox.py): box_nms, box_iou,
bipartite_matching, box_encode/decode, MultiBoxPrior/Target/Detection against MXNet's
documented examples, hand-checked cases and NumPy loops written here; shape rules, errors and
gradients (box_nms's routed gradient against finite differences, zeros elsewhere as MXNet).
Every op is also compared with real MXNet 1.9.1 in tests/test_opset_contrib.py."""
from __future__ import annotations

import numpy as np
import pytest
from opcheck import check_grad, check_infer

import ember as mx
from ember.base import MXNetError
from ember.ir import TensorType, get_op
from ember.ir.ops import normalize_attrs

RNG = np.random.default_rng(11)
C = mx.nd.contrib


def _nd(a):
    return mx.nd.array(a, dtype=np.asarray(a).dtype)


def _boxes(shape, rng=RNG):
    xy = rng.uniform(0, 1, shape + (2,))
    return np.concatenate([xy, xy + rng.uniform(0.05, 0.5, shape + (2,))], -1)


# ---- box_nms -------------------------------------------------------------------------------
def test_box_nms_documented_example_and_its_gradient():
    x = np.array([[0, 0.5, 0.1, 0.1, 0.2, 0.2], [1, 0.4, 0.1, 0.1, 0.2, 0.2],
                  [0, 0.3, 0.1, 0.1, 0.14, 0.14], [2, 0.6, 0.5, 0.5, 0.7, 0.8]], np.float32)
    a = _nd(x)
    a.attach_grad()
    with mx.autograd.record():
        y = C.box_nms(a, overlap_thresh=0.1, coord_start=2, score_index=1, id_index=0,
                      force_suppress=True, in_format="corner", out_format="corner")
    np.testing.assert_allclose(y.asnumpy(), [[2, 0.6, 0.5, 0.5, 0.7, 0.8],
                                             [0, 0.5, 0.1, 0.1, 0.2, 0.2],
                                             [-1] * 6, [-1] * 6], rtol=1e-6)
    y.backward(_nd(np.repeat(np.float32([[0.1], [0.2], [0.3], [0.4]]), 6, 1)))
    np.testing.assert_allclose(a.grad.asnumpy(), np.repeat([[0.2], [0], [0], [0.1]], 6, 1),
                               rtol=1e-6)


def ref_nms(x, thresh, valid=0.0, topk=-1, cs=2, si=1, ii=-1, bg=-1, force=False):
    """Greedy NMS over a (n, k) batch, written as plain loops."""
    def iou(a, b):
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        if w <= 0 or h <= 0:
            return 0.0
        area = lambda c: max(c[2] - c[0], 0) * max(c[3] - c[1], 0)  # noqa: E731
        return w * h / (area(a) + area(b) - w * h)
    rows = [i for i in range(len(x)) if x[i, si] > valid and (ii < 0 or x[i, ii] != bg)]
    rows = sorted(rows, key=lambda i: -x[i, si])
    rows = rows[:topk] if topk >= 0 else rows
    kept = []
    for i in rows:
        if all(not ((force or ii < 0 or int(x[i, ii]) == int(x[j, ii]))
                    and iou(x[i, cs:cs + 4], x[j, cs:cs + 4]) > thresh) for j in kept):
            kept.append(i)
    out = np.full(x.shape, -1.0)
    out[:len(kept)] = x[kept]
    return out


@pytest.mark.parametrize("kw", [dict(), dict(valid_thresh=0.3, topk=12),
                                dict(id_index=0), dict(id_index=0, background_id=2),
                                dict(id_index=0, force_suppress=True, topk=20)])
def test_box_nms_matches_a_greedy_loop(kw):
    x = np.concatenate([RNG.integers(0, 3, (3, 30, 1)), RNG.uniform(0, 1, (3, 30, 1)),
                        _boxes((3, 30))], -1).astype(np.float32)
    y = C.box_nms(_nd(x), overlap_thresh=0.35, **kw).asnumpy()
    attrs = dict(valid=kw.get("valid_thresh", 0.0), topk=kw.get("topk", -1),
                 ii=kw.get("id_index", -1), bg=kw.get("background_id", -1),
                 force=kw.get("force_suppress", False))
    for b in range(3):
        np.testing.assert_allclose(y[b], ref_nms(x[b], 0.35, **attrs), rtol=1e-6)
    check_infer("_contrib_box_nms", [x], overlap_thresh=0.35, **kw)


def test_box_nms_formats_layout_and_edge_cases():
    corner = np.concatenate([RNG.uniform(0, 1, (30, 1)), _boxes((30,))], -1).astype(np.float32)
    center = corner.copy()
    center[:, 1:3] = (corner[:, 1:3] + corner[:, 3:5]) / 2
    center[:, 3:5] = corner[:, 3:5] - corner[:, 1:3]
    kw = dict(overlap_thresh=0.1, coord_start=1, score_index=0)
    a = C.box_nms(_nd(corner), **kw).asnumpy()
    b = C.box_nms(_nd(center), in_format="center", out_format="corner", **kw).asnumpy()
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    c = C.box_nms(_nd(corner), out_format="center", **kw).asnumpy()
    kept = a[:, 0] >= 0
    assert 0 < kept.sum() < len(a)
    np.testing.assert_allclose(c[kept, 1:3], (a[kept, 1:3] + a[kept, 3:5]) / 2, rtol=1e-5)
    np.testing.assert_allclose(c[kept, 3:5], a[kept, 3:5] - a[kept, 1:3], rtol=1e-5)
    np.testing.assert_array_equal(c[~kept], a[~kept])   # -1 rows stay -1
    # topk=0 returns the input; nothing valid gives all -1; batch dims are kept
    np.testing.assert_array_equal(C.box_nms(_nd(corner), topk=0, **kw).asnumpy(), corner)
    assert (C.box_nms(_nd(corner), valid_thresh=2.0, **kw).asnumpy() == -1).all()
    assert C.box_nms(_nd(np.stack([corner] * 2)[None]), **kw).shape == (1, 2, 30, 5)


def test_box_nms_gradient_matches_finite_differences():
    x = np.concatenate([np.linspace(0.9, 0.1, 8)[:, None], _boxes((8,))], -1)
    x[1, 1:] = x[0, 1:] + 0.01   # overlaps box 0: suppressed, gets no gradient
    check_grad(lambda a: C.box_nms(a, overlap_thresh=0.5, coord_start=1, score_index=0),
               [x[None]])


@pytest.mark.parametrize("kw", [dict(score_index=2), dict(coord_start=3),
                                dict(id_index=1), dict(id_index=5, score_index=1),
                                dict(in_format="xyxy")])
def test_box_nms_rejects_bad_layouts(kw):
    with pytest.raises(MXNetError):
        C.box_nms(mx.nd.zeros((2, 4, 6)), **kw)
    with pytest.raises(MXNetError):
        C.box_nms(mx.nd.zeros((4,)))


# ---- box_iou, bipartite_matching -----------------------------------------------------------
def test_box_iou_documented_example_and_loop_reference():
    x = np.array([[0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5]], np.float32)
    y = np.array([[0.25, 0.25, 0.75, 0.75]], np.float32)
    np.testing.assert_allclose(C.box_iou(_nd(x), _nd(y), format="corner").asnumpy(),
                               [[0.1428571], [0.1428571]], rtol=1e-5)
    a, b = _boxes((2, 3)), _boxes((4,))
    got = C.box_iou(_nd(a), _nd(b)).asnumpy()
    assert got.shape == (2, 3, 4)
    for i in np.ndindex(2, 3):
        for j in range(4):
            p, q = a[i], b[j]
            w = max(min(p[2], q[2]) - max(p[0], q[0]), 0)
            h = max(min(p[3], q[3]) - max(p[1], q[1]), 0)
            u = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - w * h
            np.testing.assert_allclose(got[i + (j,)], w * h / u, rtol=1e-12)
    ca, cb = np.concatenate([(a[..., :2] + a[..., 2:]) / 2, a[..., 2:] - a[..., :2]], -1), \
        np.concatenate([(b[..., :2] + b[..., 2:]) / 2, b[..., 2:] - b[..., :2]], -1)
    np.testing.assert_allclose(C.box_iou(_nd(ca), _nd(cb), format="center").asnumpy(), got,
                               rtol=1e-9, atol=1e-12)
    check_infer("_contrib_box_iou", [a, b])


def test_bipartite_matching_documented_example_and_mxnet_quirks():
    s = np.array([[0.5, 0.6], [0.1, 0.2], [0.3, 0.4]], np.float32)
    x, y = C.bipartite_matching(_nd(s), threshold=1e-12, is_ascend=False)
    np.testing.assert_array_equal(x.asnumpy(), [1, -1, 0])
    np.testing.assert_array_equal(y.asnumpy(), [2, 0])
    x, y = C.bipartite_matching(_nd(s), threshold=0.45)   # stops at the first pair <= 0.45
    np.testing.assert_array_equal(x.asnumpy(), [1, -1, -1])
    x, _ = C.bipartite_matching(_nd(s), threshold=0.35, is_ascend=True)
    np.testing.assert_array_equal(x.asnumpy(), [-1, 0, -1])   # 0.4 is not < 0.35: stop
    big = RNG.permutation(30).reshape(2, 5, 3).astype(np.float32)
    for topk in (1, 2):   # MXNet stops after topk + 1 matches
        x, _ = C.bipartite_matching(_nd(big), threshold=-1, topk=topk)
        assert ((x.asnumpy() >= 0).sum(axis=1) == topk + 1).all()
    check_infer("_contrib_bipartite_matching", [big], threshold=0.5)


# ---- box_encode, box_decode ----------------------------------------------------------------
def test_box_encode_then_decode_gives_back_the_matched_refs():
    anchors, refs = _boxes((2, 6)).astype(np.float32), _boxes((2, 3)).astype(np.float32)
    samples = np.float32([[1, 1, -1, 0, 1, 1], [1, 0, 1, 1, 1, -1]])
    matches = RNG.integers(0, 3, (2, 6)).astype(np.float32)
    stds = np.float32([0.1, 0.1, 0.2, 0.2])
    t, m = C.box_encode(_nd(samples), _nd(matches), _nd(anchors), _nd(refs),
                        _nd(np.zeros(4, np.float32)), _nd(stds))
    pos = samples > 0.5
    np.testing.assert_array_equal(m.asnumpy(), np.repeat(pos[..., None], 4, -1))
    assert not t.asnumpy()[~pos].any()
    for b in range(2):
        dec = C.box_decode(_nd(t.asnumpy()[b:b + 1]), _nd(anchors[b:b + 1]), std0=0.1,
                           std1=0.1, std2=0.2, std3=0.2, format="corner").asnumpy()[0]
        want = refs[b, matches[b].astype(int)]
        np.testing.assert_allclose(dec[pos[b]], want[pos[b]], rtol=1e-5, atol=1e-6)
    check_infer("_contrib_box_encode", [samples, matches, anchors, refs, stds, stds])


def test_box_decode_center_anchors_and_clip():
    d = np.float32([[[0.5, -0.5, 1.0, 3.0]]])
    a = np.float32([[[2.0, 3.0, 4.0, 2.0]]])   # centre (2, 3), size 4 x 2
    y = C.box_decode(_nd(d), _nd(a), clip=2.0).asnumpy()[0, 0]
    cx, cy, w, h = 2 + 0.5 * 4, 3 - 0.5 * 2, 4 * np.exp(1.0), 2 * np.exp(2.0)
    np.testing.assert_allclose(y, [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2],
                               rtol=1e-6)


# ---- MultiBox ------------------------------------------------------------------------------
def test_multibox_prior_hand_checked():
    y = C.MultiBoxPrior(mx.nd.zeros((1, 3, 2, 2)), sizes=(0.5,), ratios=(1, 4)).asnumpy()
    # per cell: size 0.5 ratio 1 (half side 0.25), then size 0.5 ratio 4 (w 0.5, h 0.125)
    want = []
    for cy in (0.25, 0.75):
        for cx in (0.25, 0.75):
            want += [[cx - 0.25, cy - 0.25, cx + 0.25, cy + 0.25],
                     [cx - 0.5, cy - 0.125, cx + 0.5, cy + 0.125]]
    np.testing.assert_allclose(y, [want], rtol=1e-6)
    clipped = C.MultiBoxPrior(mx.nd.zeros((1, 3, 2, 2)), sizes=(0.5,), ratios=(1, 4),
                              clip=True).asnumpy()
    np.testing.assert_allclose(clipped, np.clip([want], 0, 1), rtol=1e-6)
    check_infer("_contrib_MultiBoxPrior", [np.zeros((2, 3, 4, 5), np.float32)],
                sizes=(0.2, 0.4), ratios=(1, 2, 0.5))


def test_multibox_target_hand_checked():
    anchors = np.float32([[[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1], [0, 0.5, 0.5, 1],
                           [0.05, 0, 0.55, 0.5]]])
    label = np.float32([[[1, 0, 0, 0.5, 0.5], [-1, -1, -1, -1, -1]]])
    cls_pred = np.zeros((1, 3, 4), np.float32)
    loc, mask, cls = C.MultiBoxTarget(_nd(anchors), _nd(label), _nd(cls_pred))
    # anchor 0 is the gt's best match, anchor 3 overlaps it by IoU 0.82 > 0.5
    np.testing.assert_array_equal(cls.asnumpy(), [[2, 0, 0, 2]])
    np.testing.assert_array_equal(mask.asnumpy(), [[1] * 4 + [0] * 8 + [1] * 4])
    want3 = [(0.25 - 0.3) / 0.5 / 0.1, 0, 0, 0]
    np.testing.assert_allclose(loc.asnumpy(), [[0] * 12 + want3], atol=1e-6)
    _, _, cls = C.MultiBoxTarget(_nd(anchors), _nd(label * 0 - 1), _nd(cls_pred))
    assert (cls.asnumpy() == -1).all()   # no ground truth: every anchor ignored
    with pytest.raises(MXNetError):
        C.MultiBoxTarget(_nd(anchors), _nd(label[:, :, :4]), _nd(cls_pred))


def test_multibox_detection_hand_checked():
    prob = np.float32([[[0.1, 0.2, 0.99], [0.8, 0.7, 0.005], [0.1, 0.1, 0.005]]])
    anchors = np.float32([[[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.52, 0.5], [0.6, 0.6, 0.9, 0.9]]])
    loc = np.zeros((1, 12), np.float32)
    y = C.MultiBoxDetection(_nd(prob), _nd(loc), _nd(anchors)).asnumpy()[0]
    # anchor 2's best class scores 0.005 < threshold; anchor 1 overlaps anchor 0 (class 0)
    np.testing.assert_allclose(y[0], [0, 0.8, 0.1, 0.1, 0.5, 0.5], rtol=1e-6)
    assert y[1, 0] == -1 and np.allclose(y[1, 1:], [0.7, 0.12, 0.1, 0.52, 0.5])
    assert (y[2] == -1).all()
    keep = C.MultiBoxDetection(_nd(prob), _nd(loc), _nd(anchors), nms_threshold=0.95)
    assert keep.asnumpy()[0, 1, 0] == 0
    check_infer("_contrib_MultiBoxDetection", [prob, loc, anchors])


# ---- rules, errors, gradients --------------------------------------------------------------
def _infer(name, types, **attrs):
    op = get_op(name)
    return op.infer([TensorType(s, "float32") for s in types], normalize_attrs(op, attrs))[0]


def test_rules_with_unknown_dims():
    assert [t.shape for t in _infer("_contrib_box_nms", [(None, 10, 6)])] == \
        [(None, 10, 6), (None, 10, 1)]
    assert _infer("_contrib_box_iou", [(None, 4), (2, None, 4)])[0].shape == (None, 2, None)
    assert [t.shape for t in _infer("_contrib_bipartite_matching", [(2, None, 3)],
                                    threshold=0.1)] == [(2, None), (2, 3)]
    assert _infer("_contrib_MultiBoxPrior", [(None, 3, None, 4)])[0].shape == (1, None, 4)
    assert [t.shape for t in _infer("_contrib_MultiBoxTarget", [(1, 5, 4), (None, 3, 5),
                                                                (None, 4, 5)])] == \
        [(None, 20), (None, 20), (None, 5)]
    assert _infer("_contrib_MultiBoxDetection", [(None, 4, 7), (None, 28),
                                                 (1, 7, 4)])[0].shape == (None, 7, 6)


@pytest.mark.parametrize("call", [
    lambda: C.box_iou(mx.nd.zeros((3, 5)), mx.nd.zeros((2, 4))),
    lambda: C.box_decode(mx.nd.zeros((2, 4)), mx.nd.zeros((1, 2, 4))),
    lambda: C.MultiBoxDetection(mx.nd.zeros((1, 3, 4)), mx.nd.zeros((1, 12)),
                                mx.nd.zeros((1, 5, 4))),
    lambda: C.MultiBoxTarget(mx.nd.zeros((2, 5, 4)), mx.nd.zeros((1, 2, 5)),
                             mx.nd.zeros((1, 3, 5))),
    lambda: C.MultiBoxPrior(mx.nd.zeros((1, 3, 4, 4)), sizes=()),
])
def test_user_errors_raise_mxnet_error(call):
    with pytest.raises(MXNetError):
        call()


def test_zero_gradients_where_mxnet_has_none():
    a, b = _nd(_boxes((3,)).astype(np.float32)), _nd(_boxes((2,)).astype(np.float32))
    s = _nd(RNG.uniform(size=(3, 2)).astype(np.float32))
    for v in (a, b, s):
        v.attach_grad()
    with mx.autograd.record():
        y = (C.box_iou(a, b).sum() + C.bipartite_matching(s, threshold=0.1)[0].sum()
             + C.box_decode(a.expand_dims(0), a.expand_dims(0)).sum()
             + C.MultiBoxPrior(s.reshape((1, 1, 3, 2))).sum())
    y.backward()
    for v in (a, b, s):
        assert not v.grad.asnumpy().any()
