"""Contrib resampling ops (ir/opset_contrib.py, opset_contrib_roi.py): AdaptiveAvgPooling2D,
BilinearResize2D, ROIAlign, ROIPooling, arange_like against direct NumPy loops written here,
their shape rules, finite-difference gradients, eager vs hybridized, the nd/sym/F.contrib
namespaces, and a subprocess comparison of every contrib op with real MXNet 1.9.1."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from opcheck import check_grad, check_infer

import ember as mx
from ember.base import MXNetError
from ember.gluon import nn
from ember.ir import TensorType, get_op
from ember.ir.ops import normalize_attrs

RNG = np.random.default_rng(7)
HERE = os.path.dirname(os.path.abspath(__file__))
MXNET_PYTHON = os.environ.get("EMBER_TEST_MXNET_PYTHON", "")


def _nd(a):
    return mx.nd.array(a, dtype=np.asarray(a).dtype)


# ---- NumPy references (direct loops over output cells) -------------------------------------
def ref_adaptive(x, oh, ow):
    n, c, h, w = x.shape
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        h0, h1 = math.floor(i * h / oh), math.ceil((i + 1) * h / oh)
        for j in range(ow):
            w0, w1 = math.floor(j * w / ow), math.ceil((j + 1) * w / ow)
            y[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return y


def ref_resize(x, oh, ow, align):
    n, c, h, w = x.shape

    def src(d, n_in, n_out):
        if n_out == 1:
            return 0.0
        if align:
            return d * (n_in - 1) / (n_out - 1)
        return max((d + 0.5) * n_in / n_out - 0.5, 0.0)
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        sy = src(i, h, oh)
        y0 = int(sy)
        y1, ly = min(y0 + 1, h - 1), sy - y0
        for j in range(ow):
            sx = src(j, w, ow)
            x0 = int(sx)
            x1, lx = min(x0 + 1, w - 1), sx - x0
            y[:, :, i, j] = ((1 - ly) * ((1 - lx) * x[:, :, y0, x0] + lx * x[:, :, y0, x1])
                             + ly * ((1 - lx) * x[:, :, y1, x0] + lx * x[:, :, y1, x1]))
    return y


def _bilinear(img, y, x):
    h, w = img.shape[-2:]
    if y < -1 or y > h or x < -1 or x > w:
        return np.zeros(img.shape[:-2])
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * img[..., y0, x0] + (1 - ly) * lx * img[..., y0, x1]
            + ly * (1 - lx) * img[..., y1, x0] + ly * lx * img[..., y1, x1])


def ref_roi_align(x, rois, ph, pw, scale, ratio=-1, aligned=False):
    out = np.zeros((len(rois), x.shape[1], ph, pw))
    for r, (b, *box) in enumerate(rois):
        if b < 0:
            continue
        off = 0.5 if aligned else 0.0
        x1, y1, x2, y2 = (v * scale - off for v in box)
        rw, rh = x2 - x1, y2 - y1
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        gh = ratio if ratio > 0 else math.ceil(rh / ph)
        gw = ratio if ratio > 0 else math.ceil(rw / pw)
        for i in range(ph):
            for j in range(pw):
                acc = 0.0
                for iy in range(gh):
                    yy = y1 + i * rh / ph + (iy + 0.5) * rh / ph / gh
                    for ix in range(gw):
                        xx = x1 + j * rw / pw + (ix + 0.5) * rw / pw / gw
                        acc = acc + _bilinear(x[int(b)], yy, xx)
                out[r, :, i, j] = acc / (gh * gw)
    return out


def ref_roi_pool(x, rois, ph, pw, scale):
    out = np.zeros((len(rois), x.shape[1], ph, pw))
    h, w = x.shape[2:]
    for r, (b, *box) in enumerate(rois):
        # C's round: halves away from zero (-1.5 -> -2)
        x1, y1, x2, y2 = (int(math.copysign(math.floor(abs(v * scale) + 0.5), v))
                          for v in box)
        bh, bw = max(y2 - y1 + 1, 1) / ph, max(x2 - x1 + 1, 1) / pw
        for i in range(ph):
            hs = min(max(math.floor(i * bh) + y1, 0), h)
            he = min(max(math.ceil((i + 1) * bh) + y1, 0), h)
            for j in range(pw):
                ws = min(max(math.floor(j * bw) + x1, 0), w)
                we = min(max(math.ceil((j + 1) * bw) + x1, 0), w)
                if he > hs and we > ws:
                    out[r, :, i, j] = x[int(b), :, hs:he, ws:we].max(axis=(1, 2))
    return out


# ---- forward against the references --------------------------------------------------------
@pytest.mark.parametrize("size,expect", [((3, 4), (3, 4)), (5, (5, 5)), ((), (1, 1)),
                                         ((7, 9), (7, 9)), ((10, 2), (10, 2))])
def test_adaptive_avg_pooling(size, expect):
    x = RNG.standard_normal((2, 3, 7, 9)).astype(np.float32)
    y = mx.nd.contrib.AdaptiveAvgPooling2D(_nd(x), output_size=size)
    np.testing.assert_allclose(y.asnumpy(), ref_adaptive(x, *expect), rtol=1e-5, atol=1e-6)
    check_infer("_contrib_AdaptiveAvgPooling2D", [x], output_size=size)


@pytest.mark.parametrize("align", [True, False])
@pytest.mark.parametrize("kw,shape", [
    (dict(height=11, width=5), (11, 5)),
    (dict(height=1, width=1), (1, 1)),
    (dict(scale_height=1.7, scale_width=0.6), (11, 5)),
    (dict(height=3, width=4, scale_width=2.0), (3, 4)),    # scale_width alone: ignored
    (dict(mode="odd_scale", scale_height=2.0, scale_width=0.5), (13, 5)),
    (dict(mode="to_even_down"), (6, 8)), (dict(mode="to_even_up"), (8, 10)),
    (dict(mode="to_odd_down"), (7, 9)), (dict(mode="to_odd_up"), (7, 9))])
def test_bilinear_resize_modes(kw, shape, align):
    x = RNG.standard_normal((2, 3, 7, 9)).astype(np.float32)
    y = mx.nd.contrib.BilinearResize2D(_nd(x), align_corners=align, **kw)
    assert y.shape == (2, 3) + shape
    np.testing.assert_allclose(y.asnumpy(), ref_resize(x, *shape, align), rtol=1e-5,
                               atol=1e-5)
    check_infer("_contrib_BilinearResize2D", [x], align_corners=align, **kw)


def test_bilinear_resize_like_and_even_input():
    x = RNG.standard_normal((1, 2, 6, 4)).astype(np.float32)
    like = np.zeros((3, 5, 9, 2), np.float32)
    y = mx.nd.contrib.BilinearResize2D(_nd(x), _nd(like), mode="like")
    np.testing.assert_allclose(y.asnumpy(), ref_resize(x, 9, 2, True), rtol=1e-5, atol=1e-6)
    assert mx.nd.contrib.BilinearResize2D(_nd(x), mode="to_odd_up").shape == (1, 2, 7, 5)
    assert mx.nd.contrib.BilinearResize2D(_nd(x), mode="odd_scale", scale_height=0.5,
                                          scale_width=3).shape == (1, 2, 3, 12)


ROIS = np.array([[0, 1.2, 2.3, 15.7, 17.1], [1, 0, 0, 23, 19], [1, -3, 4, 8, 30],
                 [0, 5, 5, 5.5, 6], [-1, 1, 1, 5, 5]], np.float32)


@pytest.mark.parametrize("kw", [dict(), dict(sample_ratio=2), dict(aligned=True),
                                dict(sample_ratio=3, aligned=True)])
def test_roi_align(kw):
    x = RNG.standard_normal((2, 4, 10, 12)).astype(np.float32)
    y = mx.nd.contrib.ROIAlign(_nd(x), _nd(ROIS), pooled_size=(3, 2), spatial_scale=0.5, **kw)
    ref = ref_roi_align(x, ROIS, 3, 2, 0.5, kw.get("sample_ratio", -1),
                        kw.get("aligned", False))
    np.testing.assert_allclose(y.asnumpy(), ref, rtol=1e-5, atol=1e-5)
    assert not y.asnumpy()[4].any()   # a negative batch index gives zeros
    check_infer("_contrib_ROIAlign", [x, ROIS], pooled_size=(3, 2), spatial_scale=0.5, **kw)


def test_roi_align_position_sensitive():
    x = RNG.standard_normal((2, 12, 8, 8)).astype(np.float32)
    y = mx.nd.contrib.ROIAlign(_nd(x), _nd(ROIS[:4]), pooled_size=(2, 3), spatial_scale=0.5,
                               position_sensitive=True).asnumpy()
    full = ref_roi_align(x, ROIS[:4], 2, 3, 0.5)   # all channels, then pick group (i, j)
    assert y.shape == (4, 2, 2, 3)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(y[:, :, i, j], full[:, i * 3 + j::6, i, j],
                                       rtol=1e-5, atol=1e-5)


def test_roi_pooling():
    x = RNG.standard_normal((2, 3, 10, 12)).astype(np.float32)
    y = mx.nd.ROIPooling(_nd(x), _nd(ROIS[:4]), pooled_size=(3, 4), spatial_scale=0.5)
    np.testing.assert_allclose(y.asnumpy(), ref_roi_pool(x, ROIS[:4], 3, 4, 0.5), rtol=1e-6)
    check_infer("ROIPooling", [x, ROIS[:4]], pooled_size=(3, 4), spatial_scale=0.5)


def test_arange_like_docs_example():
    x = np.zeros((3, 4), np.float32)
    np.testing.assert_array_equal(mx.nd.contrib.arange_like(_nd(x)).asnumpy(),
                                  np.arange(12.0).reshape(3, 4))
    np.testing.assert_array_equal(mx.nd.contrib.arange_like(_nd(x), axis=-1).asnumpy(),
                                  np.arange(4.0))
    y = mx.nd.contrib.arange_like(_nd(x), start=1, step=0.5, repeat=5).asnumpy().ravel()
    np.testing.assert_array_equal(y, 1 + 0.5 * (np.arange(12) // 5))


# ---- shape rules and errors ----------------------------------------------------------------
def _infer(name, types, **attrs):
    op = get_op(name)
    return op.infer([TensorType(s, d) for s, d in types], normalize_attrs(op, attrs))[0]


def test_rules_with_unknown_dims():
    f = "float32"
    assert _infer("_contrib_AdaptiveAvgPooling2D", [((None, 3, None, None), f)],
                  output_size=2)[0].shape == (None, 3, 2, 2)
    assert _infer("_contrib_BilinearResize2D", [((None, 3, None, 8), f)],
                  mode="to_odd_down")[0].shape == (None, 3, None, 7)
    assert _infer("_contrib_BilinearResize2D", [((2, 3, 4, 4), f), ((1, 1, None, 6), f)],
                  mode="like")[0].shape == (2, 3, None, 6)
    assert _infer("_contrib_ROIAlign", [((2, 8, None, None), f), ((None, 5), f)],
                  pooled_size=(2, 2), spatial_scale=1.0,
                  position_sensitive=True)[0].shape == (None, 2, 2, 2)
    assert _infer("_contrib_arange_like", [((3, None), f)], axis=1)[0].shape == (None,)


@pytest.mark.parametrize("call", [
    lambda x: mx.nd.contrib.AdaptiveAvgPooling2D(x[0, 0]),
    lambda x: mx.nd.contrib.BilinearResize2D(x, mode="odd_scale"),
    lambda x: mx.nd.contrib.BilinearResize2D(x, mode="bicubic"),
    lambda x: mx.nd.contrib.BilinearResize2D(x, mode="like"),
    lambda x: mx.nd.contrib.BilinearResize2D(x, scale_height=2.0),
    lambda x: mx.nd.contrib.ROIAlign(x, mx.nd.zeros((2, 4)), pooled_size=2, spatial_scale=1.),
    lambda x: mx.nd.contrib.ROIAlign(x, mx.nd.zeros((2, 5)), pooled_size=(2, 2),
                                     spatial_scale=1., position_sensitive=True),
    lambda x: mx.nd.contrib.ROIAlign(x, mx.nd.array([[0, 1, 1, 1, 3]]), pooled_size=2,
                                     spatial_scale=1., aligned=True),
    lambda x: mx.nd.ROIPooling(x, mx.nd.zeros((2, 5), dtype="float64"), pooled_size=2,
                               spatial_scale=1.),
    lambda x: mx.nd.contrib.arange_like(x, axis=4),
])
def test_user_errors_raise_mxnet_error(call):
    with pytest.raises(MXNetError):
        call(mx.nd.zeros((1, 3, 4, 4)))


# ---- gradients -----------------------------------------------------------------------------
def test_gradients_match_finite_differences():
    x = RNG.standard_normal((1, 2, 5, 6))
    check_grad(lambda a: mx.nd.contrib.AdaptiveAvgPooling2D(a, output_size=(3, 4)), [x])
    for align in (True, False):
        check_grad(lambda a: mx.nd.contrib.BilinearResize2D(a, height=7, width=4,
                                                            align_corners=align), [x])
    like = np.zeros((1, 1, 3, 9))
    check_grad(lambda a, b: mx.nd.contrib.BilinearResize2D(a, b, mode="like"), [x, like])
    rois = np.array([[0, 0.4, 0.3, 4.1, 3.7], [0, 1.5, 0.2, 5.8, 4.6]])
    for kw in (dict(), dict(aligned=True, sample_ratio=2)):
        check_grad(lambda a, r: mx.nd.contrib.ROIAlign(a, r, pooled_size=(2, 3),
                                                       spatial_scale=1.0, **kw),
                   [x, rois], wrt=[0])
    distinct = RNG.permutation(60).reshape(1, 2, 5, 6) * 0.1   # no ties in a bin's max
    check_grad(lambda a, r: mx.nd.ROIPooling(a, r, pooled_size=(2, 2), spatial_scale=1.0),
               [distinct, rois], wrt=[0])


def test_gradient_of_the_backward_ops_is_the_forward_op():
    """Second order: each linear op's backward is its adjoint, whose gradient is the op."""
    x = RNG.standard_normal((1, 2, 5, 6))
    rois = np.array([[0, 0.4, 0.3, 4.1, 3.7]])
    g = RNG.standard_normal((1, 2, 3, 4))
    for name, extra, attrs in [
            ("adaptive_avg_pooling2d_backward", [x], dict(output_size=(3, 4))),
            ("bilinear_resize2d_backward", [x], dict(height=3, width=4)),
            ("roi_align_backward", [x, rois], dict(pooled_size=(3, 4), spatial_scale=1.0))]:
        fn = getattr(mx.nd, name)
        check_grad(lambda a, *rest: fn(a, *rest, **attrs), [g] + extra, wrt=[0])


def test_no_gradient_where_mxnet_has_none():
    x = _nd(RNG.standard_normal((1, 2, 4, 4)).astype(np.float32))
    rois = _nd(np.array([[0, 0, 0, 3, 3]], np.float32))
    x.attach_grad()
    rois.attach_grad()
    with mx.autograd.record():
        y = (mx.nd.contrib.ROIAlign(x, rois, pooled_size=2, spatial_scale=1.0).sum()
             + mx.nd.contrib.arange_like(x).sum())
    y.backward()
    assert not rois.grad.asnumpy().any() and x.grad.asnumpy().any()


# ---- namespaces, eager vs hybridized -------------------------------------------------------
def test_contrib_namespaces_are_generated_from_the_registry():
    for name in ("box_nms", "box_non_maximum_suppression", "box_iou", "box_encode",
                 "box_decode", "bipartite_matching", "AdaptiveAvgPooling2D",
                 "BilinearResize2D", "ROIAlign", "MultiBoxPrior", "MultiBoxTarget",
                 "MultiBoxDetection", "arange_like", "ctc_loss", "adamw_update"):
        assert name in mx.nd.contrib.__dict__, name   # GluonCV tests __dict__ membership
        assert name in mx.sym.contrib.__dict__, name
    assert hasattr(mx.nd, "ROIPooling") and hasattr(mx.sym, "ROIPooling")


class _Net(nn.HybridBlock):
    def hybrid_forward(self, F, x, rois, dets):
        a = F.contrib.AdaptiveAvgPooling2D(x, output_size=(3, 2))
        b = F.contrib.BilinearResize2D(x, height=5, width=6, align_corners=False)
        c = F.contrib.BilinearResize2D(x, b, mode="like")
        r = F.contrib.ROIAlign(x, rois, pooled_size=(2, 2), spatial_scale=1.0)
        p = F.ROIPooling(x, rois, pooled_size=(2, 2), spatial_scale=1.0)
        n = F.contrib.box_nms(dets, overlap_thresh=0.3, id_index=0)
        prior = F.contrib.MultiBoxPrior(x, sizes=[0.5, 0.2], ratios=[1, 2])
        iou = F.contrib.box_iou(F.slice_axis(dets, axis=-1, begin=2, end=6), prior)
        loss = a.sum() + b.sum() + c.sum() + (r * r).sum() + p.sum() + (n * n).sum()
        return loss, iou, F.contrib.arange_like(x, axis=1)


def test_eager_and_hybridized_agree_values_and_gradients():
    net = _Net()
    x = _nd(RNG.standard_normal((2, 3, 6, 7)).astype(np.float32))
    rois = _nd(np.array([[0, 0, 0, 4, 4], [1, 1, 2, 6, 5]], np.float32))
    d = RNG.uniform(0, 1, (2, 8, 6)).astype(np.float32)
    d[..., 0] = RNG.integers(0, 2, (2, 8))
    d[..., 4:] += d[..., 2:4]
    dets = _nd(d)
    results = []
    for hybrid in (False, True):
        if hybrid:
            net.hybridize()
        x.attach_grad()
        dets.attach_grad()
        with mx.autograd.record():
            loss, iou, ar = net(x, rois, dets)
        loss.backward()
        results.append([v.asnumpy().copy() for v in (loss, iou, ar, x.grad, dets.grad)])
    for e, h in zip(*results):
        np.testing.assert_allclose(h, e, rtol=1e-5, atol=1e-6)
    assert results[0][4].any()   # box_nms routes gradient to the kept boxes


# ---- against real MXNet 1.9.1 --------------------------------------------------------------
@pytest.mark.skipif(not os.path.exists(MXNET_PYTHON),
                    reason="no MXNet 1.9.1 interpreter (EMBER_TEST_MXNET_PYTHON)")
def test_every_contrib_op_matches_real_mxnet(tmp_path):
    """The same fixed random cases (tests/data/contrib_cases.py) through real MXNet in a
    subprocess and through ember: every output equal to float32 rounding."""
    script = os.path.join(HERE, "data", "contrib_cases.py")
    ref = tmp_path / "mxnet.npz"
    proc = subprocess.run([MXNET_PYTHON, script, "mxnet", str(ref)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sys.path.insert(0, os.path.join(HERE, "data"))
    try:
        import contrib_cases
    finally:
        sys.path.pop(0)
    got = contrib_cases.run(mx)
    want = np.load(ref)
    cases = contrib_cases.cases()
    assert len(want.files) == sum(len(o) for o in got) and len(cases) >= 45
    k = 0
    for (name, _, kw), outs in zip(cases, got):
        for o in outs:
            np.testing.assert_allclose(o, want[f"arr_{k}"], rtol=1e-4, atol=1e-5,
                                       err_msg=f"{name} {kw}")
            k += 1
