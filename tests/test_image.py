"""mx.image: decoding, OpenCV-convention resizing and padding, crops, rotation and augmenters,
checked against NumPy formulas (and real MXNet 1.9.1 when given); the iterators are in
test_image_iter.py."""
import json
import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ember as mx
from ember import image_codec
from ember.base import MXNetError

MXPY = os.environ.get("EMBER_TEST_MXNET_PYTHON", "")
RNG = np.random.default_rng(0)


def _img(h=6, w=9, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---- decoding ------------------------------------------------------------------------------
def test_imread_imdecode_png(tmp_path):
    a = _img()
    path = tmp_path / "a.png"
    path.write_bytes(image_codec.encode(a, img_fmt=".png"))
    assert mx.img is mx.image
    x = mx.image.imread(str(path))
    assert x.dtype == np.uint8 and x.shape == (6, 9, 3)
    np.testing.assert_array_equal(x.asnumpy(), a)
    np.testing.assert_array_equal(mx.image.imread(path, to_rgb=False).asnumpy(), a[:, :, ::-1])
    buf = path.read_bytes()
    for b in (buf, bytearray(buf), np.frombuffer(buf, np.uint8)):
        np.testing.assert_array_equal(mx.image.imdecode(b).asnumpy(), a)
    gray = mx.image.imdecode(buf, flag=0).asnumpy()
    ref = a.astype(np.float64) @ [0.299, 0.587, 0.114]
    assert gray.shape == (6, 9, 1) and np.abs(gray[:, :, 0] - ref).max() <= 1
    out = mx.nd.zeros((6, 9, 3), dtype="uint8")
    assert mx.image.imdecode(buf, out=out) is out
    np.testing.assert_array_equal(out.asnumpy(), a)


def test_decode_errors(tmp_path, monkeypatch):
    with pytest.raises(MXNetError, match="blah.jpg"):
        mx.image.imread(str(tmp_path / "nowhere" / "blah.jpg"))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"clearly not image content")
    with pytest.raises(MXNetError, match="bad.jpg"):
        mx.image.imread(str(bad))
    with pytest.raises(MXNetError):
        mx.image.imdecode(b"clearly not image content")
    with pytest.raises(MXNetError, match="empty"):
        mx.image.imdecode(b"")
    with pytest.raises(ValueError):
        mx.image.imdecode("a string")
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(MXNetError, match=r"ember\[image\]"):
        mx.image.imdecode(image_codec.encode(_img(), img_fmt=".png"))


# ---- resizing ------------------------------------------------------------------------------
def _bilinear_ref(src, w, h):
    """cv2.resize INTER_LINEAR written out: half-pixel centres, edge clamped."""
    sh, sw = src.shape[:2]

    def axis(n_out, n_in):
        f = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        i0 = np.floor(f).astype(int)
        t = f - i0
        t[i0 < 0] = 0
        t[i0 >= n_in - 1] = 0
        i0 = np.clip(i0, 0, n_in - 1)
        return i0, np.minimum(i0 + 1, n_in - 1), t
    y0, y1, ty = axis(h, sh)
    x0, x1, tx = axis(w, sw)
    s = src.astype(np.float64)
    top = s[y0][:, x0] * (1 - tx)[None, :, None] + s[y0][:, x1] * tx[None, :, None]
    bot = s[y1][:, x0] * (1 - tx)[None, :, None] + s[y1][:, x1] * tx[None, :, None]
    return top * (1 - ty)[:, None, None] + bot * ty[:, None, None]


@pytest.mark.parametrize("shape,size", [((7, 11), (5, 4)), ((4, 5), (13, 9)), ((9, 6), (6, 12)),
                                        ((1, 8), (3, 2)), ((10, 10), (5, 5))])
@pytest.mark.parametrize("c", [1, 3])
def test_imresize_nearest_bilinear(shape, size, c):
    src = RNG.integers(0, 256, shape + (c,), dtype=np.uint8)
    w, h = size
    ref = _bilinear_ref(src, w, h)
    out_f = mx.image.imresize(mx.nd.array(src, dtype="float32"), w, h, interp=1)
    assert out_f.dtype == np.float32 and out_f.shape == (h, w, c)
    np.testing.assert_allclose(out_f.asnumpy(), ref, atol=1e-3)
    out_u = mx.image.imresize(mx.nd.array(src, dtype="uint8"), w, h).asnumpy()
    assert out_u.dtype == np.uint8 and np.abs(out_u - ref).max() <= 1    # fixed point
    iy = np.minimum(np.floor(np.arange(h) * shape[0] / h).astype(int), shape[0] - 1)
    ix = np.minimum(np.floor(np.arange(w) * shape[1] / w).astype(int), shape[1] - 1)
    near = mx.image.imresize(mx.nd.array(src, dtype="uint8"), w, h, interp=0).asnumpy()
    np.testing.assert_array_equal(near, src[iy][:, ix])


def test_imresize_other_methods():
    src = RNG.random((8, 12, 3)).astype(np.float32) * 255
    for m in range(5):             # same size is the identity for every method
        np.testing.assert_allclose(mx.image.imresize(mx.nd.array(src), 12, 8, m).asnumpy(),
                                   src, atol=1e-3)
    # area shrinking by an integer factor is the block mean
    area = mx.image.imresize(mx.nd.array(src), 4, 2, interp=3).asnumpy()
    np.testing.assert_allclose(area, src.reshape(2, 4, 4, 3, 3).mean(axis=(1, 3)), atol=1e-3)
    # interpolating kernels keep a constant image constant, enlarging and shrinking
    const = np.full((5, 7, 3), 77, np.uint8)
    for m in (2, 3, 4):
        for w, h in ((15, 11), (3, 2)):
            np.testing.assert_array_equal(
                mx.image.imresize(mx.nd.array(const, dtype="uint8"), w, h, m).asnumpy(), 77)
    out = mx.nd.zeros((4, 6, 3))
    assert mx.image.imresize(mx.nd.array(src), 6, 4, interp=2, out=out) is out
    with pytest.raises(MXNetError, match="interpolation"):
        mx.image.imresize(mx.nd.array(src), 6, 4, interp=7)
    with pytest.raises(MXNetError, match="float16"):
        mx.image.imresize(mx.nd.array(src, dtype="float16"), 6, 4)
    assert mx.image.imresize(mx.nd.array(src, dtype="float64"), 6, 4).dtype == np.float64
    assert mx.image.image._get_interp_method(9, (5, 5, 10, 10)) == 2
    assert mx.image.image._get_interp_method(9, (5, 5, 2, 2)) == 3
    assert mx.image.image._get_interp_method(9, (5, 5, 10, 2)) == 1
    random.seed(3)
    picks = [mx.image.image._get_interp_method(10) for _ in range(50)]
    random.seed(3)
    assert picks == [random.randint(0, 4) for _ in range(50)]


# uint8 results of OpenCV 5.1's cv2.resize for GOLD_SRC, where ember agrees bit for bit
GOLD_SRC = (np.arange(20).reshape(4, 5, 1) * 37 % 251).astype(np.uint8)
GOLD = {
    (1, 3, 3): [[43, 63, 125], [164, 101, 78], [76, 138, 172]],
    (3, 3, 3): [[61, 70, 117], [167, 126, 84], [84, 144, 165]],
    (3, 7, 6): [[0, 22, 44, 74, 104, 126, 148], [93, 115, 112, 41, 71, 93, 115],
                [185, 207, 179, 8, 38, 60, 82], [119, 141, 163, 193, 223, 144, 16],
                [86, 108, 130, 160, 190, 161, 109], [53, 75, 97, 127, 157, 179, 201]],
    (4, 7, 6): [[0, 0, 39, 86, 114, 136, 151], [91, 134, 108, 16, 24, 96, 135],
                [186, 244, 182, 30, 43, 79, 56], [138, 169, 172, 171, 221, 129, 0],
                [68, 85, 124, 185, 231, 174, 94], [49, 71, 99, 115, 135, 184, 223]],
}


@pytest.mark.parametrize("key", sorted(GOLD))
def test_imresize_matches_opencv_values(key):
    interp, w, h = key
    out = mx.image.imresize(mx.nd.array(GOLD_SRC, dtype="uint8"), w, h, interp=interp)
    np.testing.assert_array_equal(out.asnumpy()[:, :, 0], GOLD[key])


def test_imresize_bicubic_formula():
    """Keys' cubic with OpenCV's A = -0.75, half-pixel centres, edge-clamped taps."""
    src = RNG.random((1, 6, 1)).astype(np.float32)
    out = mx.image.imresize(mx.nd.array(src), 15, 1, interp=2).asnumpy()[0, :, 0]

    def kernel(t, A=-0.75):
        t = abs(t)
        if t <= 1:
            return (A + 2) * t ** 3 - (A + 3) * t ** 2 + 1
        return A * t ** 3 - 5 * A * t ** 2 + 8 * A * t - 4 * A if t < 2 else 0.0
    ref = []
    for dx in range(15):
        f = (dx + 0.5) * 6 / 15 - 0.5
        x0 = int(np.floor(f))
        ref.append(sum(kernel(f - k) * src[0, min(max(k, 0), 5), 0]
                       for k in range(x0 - 1, x0 + 3)))
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_copy_make_border():
    src = _img(4, 5)
    x = mx.nd.array(src, dtype="uint8")
    for t, mode in [(1, "edge"), (2, "symmetric"), (3, "wrap"), (4, "reflect")]:
        np.testing.assert_array_equal(mx.image.copyMakeBorder(x, 1, 2, 3, 4, type=t).asnumpy(),
                                      np.pad(src, ((1, 2), (3, 4), (0, 0)), mode=mode))
    out = mx.image.copyMakeBorder(x, 2, 1, 1, 3, values=[10, 20, 30]).asnumpy()
    assert out.shape == (7, 9, 3)
    np.testing.assert_array_equal(out[2:6, 1:6], src)
    np.testing.assert_array_equal(out[0, 0], [10, 20, 30])
    np.testing.assert_array_equal(out[:, -1], np.tile([10, 20, 30], (7, 1)))
    assert (mx.image.copyMakeBorder(x, 1, 1, 1, 1, value=5).asnumpy()[0] == 5).all()


# ---- crops ---------------------------------------------------------------------------------
def test_crops_and_sizes():
    assert mx.image.scale_down((640, 480), (720, 120)) == (640, 106)
    assert mx.image.scale_down((360, 1000), (480, 500)) == (360, 375)
    assert mx.image.scale_down((300, 400), (0, 0)) == (0, 0)
    src = RNG.random((20, 30, 3)).astype(np.float32)
    x = mx.nd.array(src)
    assert mx.image.resize_short(x, 10).shape == (10, 15, 3)
    assert mx.image.resize_short(mx.nd.array(src.transpose(1, 0, 2)), 10).shape == (15, 10, 3)
    np.testing.assert_array_equal(mx.image.fixed_crop(x, 3, 2, 7, 5).asnumpy(),
                                  src[2:7, 3:10])
    assert mx.image.fixed_crop(x, 3, 2, 7, 5, size=(14, 10)).shape == (10, 14, 3)
    c, rect = mx.image.center_crop(x, (10, 8))
    assert rect == (10, 6, 10, 8)
    np.testing.assert_array_equal(c.asnumpy(), src[6:14, 10:20])
    random.seed(7)
    c, (x0, y0, w, h) = mx.image.random_crop(x, (10, 8))
    random.seed(7)
    assert (x0, y0) == (random.randint(0, 20), random.randint(0, 12))
    np.testing.assert_array_equal(c.asnumpy(), src[y0:y0 + 8, x0:x0 + 10])
    random.seed(1)
    for _ in range(20):
        c, (x0, y0, w, h) = mx.image.random_size_crop(x, (8, 8), 0.1, (0.75, 1.33))
        assert c.shape == (8, 8, 3) and x0 + w <= 30 and y0 + h <= 20
        if (x0, y0, w, h) != mx.image.center_crop(x, (8, 8))[1]:
            assert 0.75 - 0.1 <= w / h <= 1.33 + 0.1
    mean, std = RNG.random(3) * 255, RNG.random(3) + 1
    src2 = RNG.random((4, 5, 3)) * 255
    out = mx.image.color_normalize(mx.nd.array(src2), mx.nd.array(mean), mx.nd.array(std))
    np.testing.assert_allclose(out.asnumpy(), (src2 - mean) / std, rtol=1e-4, atol=1e-3)


# ---- rotation ------------------------------------------------------------------------------
def _rotate_ref(img, deg):
    """Bilinear rotation about the centre, zeros outside (MXNet's BilinearSampler)."""
    c, h, w = img.shape
    a = np.deg2rad(deg)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    xc, yc = xx - (w - 1) / 2, yy - (h - 1) / 2
    xs = xc * np.cos(a) - yc * np.sin(a) + (w - 1) / 2
    ys = xc * np.sin(a) + yc * np.cos(a) + (h - 1) / 2
    out = np.zeros_like(img, dtype=np.float64)
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    for dy in (0, 1):
        for dx in (0, 1):
            wgt = (1 - abs(xs - (x0 + dx))) * (1 - abs(ys - (y0 + dy)))
            ok = (x0 + dx >= 0) & (x0 + dx < w) & (y0 + dy >= 0) & (y0 + dy < h)
            v = img[:, np.clip(y0 + dy, 0, h - 1), np.clip(x0 + dx, 0, w - 1)]
            out += np.where(ok, v, 0) * wgt
    return out


def test_imrotate():
    img = RNG.random((2, 9, 13)).astype(np.float32)
    for deg in (0, 6, -30, 90):
        got = mx.image.imrotate(mx.nd.array(img), deg).asnumpy()
        np.testing.assert_allclose(got, _rotate_ref(img, deg), atol=1e-5)
    batch = mx.nd.array(np.stack([img, img]))
    got = mx.image.imrotate(batch, mx.nd.array([6, -30])).asnumpy()
    np.testing.assert_allclose(got[1], _rotate_ref(img, -30), atol=1e-5)
    zin = mx.image.imrotate(mx.nd.array(img + 1), 30, zoom_in=True).asnumpy()
    assert (zin > 0.5).all()                       # no padding shows
    zout = mx.image.imrotate(mx.nd.array(img + 1), 30, zoom_out=True).asnumpy()
    assert (zout[:, 0, 0] == 0).all() and zout.sum() < zin.sum()
    with pytest.raises(ValueError):
        mx.image.imrotate(mx.nd.array(img), 5, zoom_in=True, zoom_out=True)
    with pytest.raises(TypeError):
        mx.image.imrotate(mx.nd.array(img), mx.nd.array([1, 2]))
    with pytest.raises(TypeError):
        mx.image.imrotate(mx.nd.array(img, dtype="uint8"), 5)
    np.random.seed(4)
    got = mx.image.random_rotate(mx.nd.array(img), (-5, 5)).asnumpy()
    np.random.seed(4)
    np.testing.assert_allclose(got, _rotate_ref(img, np.random.uniform(-5, 5)), atol=1e-5)
    assert mx.image.random_rotate(batch, (-5, 5)).shape == (2, 2, 9, 13)


# ---- augmenters ----------------------------------------------------------------------------
GRAY = np.array([0.299, 0.587, 0.114])


def test_color_augmenters_match_formulas():
    src = RNG.random((5, 6, 3)) * 255
    x = lambda: mx.nd.array(src)                                    # noqa: E731
    random.seed(11)
    a = 1 + random.uniform(-0.3, 0.3)
    random.seed(11)
    np.testing.assert_allclose(mx.image.BrightnessJitterAug(0.3)(x()).asnumpy(), src * a,
                               rtol=1e-5)
    random.seed(12)
    a = 1 + random.uniform(-0.3, 0.3)
    random.seed(12)
    ref = src * a + (1 - a) * 3.0 * (src * GRAY).sum() / src.size
    np.testing.assert_allclose(mx.image.ContrastJitterAug(0.3)(x()).asnumpy(), ref, rtol=1e-4)
    random.seed(13)
    a = 1 + random.uniform(-0.3, 0.3)
    random.seed(13)
    ref = src * a + (1 - a) * (src * GRAY).sum(axis=2, keepdims=True)
    np.testing.assert_allclose(mx.image.SaturationJitterAug(0.3)(x()).asnumpy(), ref,
                               rtol=1e-4)
    random.seed(14)
    a = random.uniform(-0.2, 0.2) * np.pi
    random.seed(14)
    yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.321], [0.211, -0.523, 0.311]])
    iyiq = np.array([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.107, 1.705]])
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ref = src @ (iyiq @ rot @ yiq).T
    np.testing.assert_allclose(mx.image.HueJitterAug(0.2)(x()).asnumpy(), ref, rtol=1e-4,
                               atol=1e-3)
    ev, evec = np.array([55.46, 4.794, 1.148]), RNG.random((3, 3))
    np.random.seed(15)
    alpha = np.random.normal(0, 0.1, size=(3,))
    np.random.seed(15)
    ref = src + evec @ (alpha * ev)
    np.testing.assert_allclose(mx.image.LightingAug(0.1, ev, evec)(x()).asnumpy(), ref,
                               rtol=1e-5)
    gray = mx.image.RandomGrayAug(1.0)(x()).asnumpy()
    np.testing.assert_allclose(gray, np.repeat(src @ [0.21, 0.72, 0.07], 3).reshape(src.shape),
                               rtol=1e-5)
    np.testing.assert_array_equal(mx.image.RandomGrayAug(0.0)(x()).asnumpy(), x().asnumpy())
    np.testing.assert_array_equal(mx.image.HorizontalFlipAug(1.0)(x()).asnumpy(),
                                  x().asnumpy()[:, ::-1])
    cn = mx.image.ColorNormalizeAug(mean=mx.nd.array([1.0, 2, 3]), std=np.array([2.0, 4, 8]))
    np.testing.assert_allclose(cn(x()).asnumpy(), (src - [1, 2, 3]) / [2, 4, 8], rtol=1e-5)
    assert mx.image.CastAug()(mx.nd.array(src, dtype="uint8")).dtype == np.float32


def test_create_augmenter_and_dumps():
    augs = mx.image.CreateAugmenter((3, 8, 8), resize=10, rand_crop=True, rand_resize=True,
                                    rand_mirror=True, mean=True, std=np.array([1.0, 2, 3]),
                                    brightness=0.1, contrast=0.1, saturation=0.1, hue=0.1,
                                    pca_noise=0.1, rand_gray=0.2)
    names = [type(a).__name__ for a in augs]
    assert names == ["ResizeAug", "RandomSizedCropAug", "HorizontalFlipAug", "CastAug",
                     "ColorJitterAug", "HueJitterAug", "LightingAug", "RandomGrayAug",
                     "ColorNormalizeAug"]
    assert json.loads(augs[0].dumps()) == ["resizeaug", {"size": 10, "interp": 2}]
    assert augs[4].dumps()[0] == "colorjitteraug" and len(augs[4].dumps()[1]) == 3
    assert json.loads(augs[-1].dumps())[1]["std"] == [1.0, 2.0, 3.0]
    random.seed(0)
    np.random.seed(0)
    img = mx.nd.array(_img(12, 16), dtype="uint8")
    for a in augs:
        img = a(img)
    assert img.shape == (8, 8, 3) and img.dtype == np.float32
    assert [type(a).__name__ for a in mx.image.CreateAugmenter((3, 4, 5))] == \
        ["CenterCropAug", "CastAug"]


def test_mxnet_alias_reaches_image():
    code = ("from ember import mxnet_alias; mxnet_alias.activate()\n"
            "import mxnet.image, mxnet as mx, ember\n"
            "from mxnet.image import det\n"
            "assert mxnet.image is ember.image and mx.img is ember.image\n"
            "assert det is ember.image.detection\n"
            "assert mx.image.image.ImageIter is mx.image.ImageIter")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


# ---- against real MXNet 1.9.1 --------------------------------------------------------------
@pytest.mark.skipif(not (MXPY and os.path.exists(MXPY)),
                    reason="no MXNet 1.9.1 interpreter (EMBER_TEST_MXNET_PYTHON)")
def test_matches_real_mxnet(tmp_path):
    """The same seeded calls in MXNet and ember: dumps, scale_down, jitters, rotation."""
    script = textwrap.dedent("""
        import json, random, sys
        import numpy as np
        import {mod} as mx
        src = np.load(sys.argv[1])
        res = {{}}
        augs = mx.image.CreateAugmenter((3, 8, 8), resize=10, rand_crop=True, rand_resize=True,
            rand_mirror=True, mean=True, std=True, brightness=0.1, contrast=0.2,
            saturation=0.3, hue=0.1, pca_noise=0.1, rand_gray=0.2)
        res["dumps"] = [a.dumps() for a in augs]
        res["scale"] = [mx.image.scale_down((640, 480), (720, 120)),
                        mx.image.scale_down((360, 1000), (480, 500))]
        random.seed(1)
        np.random.seed(1)
        x = mx.nd.array(src)
        for a in augs[4:8]:                  # jitters, hue, lighting, gray
            x = a(x)
        res["jitter"] = x.asnumpy().tolist()
        img = mx.nd.array(src.transpose(2, 0, 1))
        res["rot"] = [mx.image.imrotate(img, 17, zoom_in=zi, zoom_out=zo).asnumpy().tolist()
                      for zi, zo in ((False, False), (True, False), (False, True))]
        print(json.dumps(res))
    """)
    data = str(tmp_path / "src.npy")
    np.save(data, (RNG.random((6, 7, 3)) * 255).astype(np.float32))
    results = []
    for py, mod in ((MXPY, "mxnet"), (sys.executable, "ember")):
        run = subprocess.run([py, "-c", script.format(mod=mod), data], capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        results.append(json.loads(run.stdout.strip().splitlines()[-1]))
    ref, got = results
    assert got["dumps"] == ref["dumps"]
    assert got["scale"] == ref["scale"]
    np.testing.assert_allclose(got["jitter"], ref["jitter"], rtol=1e-4, atol=1e-3)
    for g, r in zip(got["rot"], ref["rot"]):
        np.testing.assert_allclose(g, r, atol=1e-3)
