"""The default augmenter of MXNet 1.9.1's ``ImageRecordIter`` (``aug_default``) on NumPy.

Images are HxWxC ``uint8`` arrays in OpenCV's BGR order, as the C++ iterator holds them
between decoding and normalisation. The steps run in MXNet's order: resize of the short side,
the affine warp (rotation, shear, random scale and aspect ratio, min/max image size), padding,
the crop (random resized crop, a crop of random size, or the fixed-size crop with upscaling
to fit), brightness/contrast/saturation in random order, HSL jitter and PCA lighting noise.
Arithmetic follows OpenCV's 8-bit conventions (saturating, rounding half to even); random
numbers come from a NumPy ``RandomState``, so random draws differ from MXNet's ``mt19937``
streams while having the same distributions.
"""
from __future__ import annotations

import math

import numpy as np

from ember.base import MXNetError

# MXNet's PCA lighting basis (eigenvalue times eigenvector, rows R, G, B)
_EIGVEC = np.array([[55.46 * -0.5675, 4.794 * 0.7192, 1.148 * 0.4009],
                    [55.46 * -0.5808, 4.794 * -0.0045, 1.148 * -0.8140],
                    [55.46 * -0.5836, 4.794 * -0.6948, 1.148 * 0.4203]], np.float32)


def _sat8(x: np.ndarray) -> np.ndarray:
    """OpenCV's ``saturate_cast<uchar>`` of float values (round half to even, clip)."""
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _inter(method: int, ow: int, oh: int, nw: int, nh: int, rng) -> int:
    """MXNet's ``GetInterMethod``: 9 picks by size change, 10 a random method."""
    if method == 9:
        if nw > ow and nh > oh:
            return 2
        if nw < ow and nh < oh:
            return 3
        return 1
    if method == 10:
        return int(rng.randint(0, 5))
    return method


def _rs():
    """``ember.image._resample``, imported late (``ember.image`` imports ``ember.io``)."""
    from ember.image import _resample
    return _resample


def _resize(img: np.ndarray, w: int, h: int, method: int) -> np.ndarray:
    return _rs().resize(img, int(w), int(h), method)


def _cv_round(x: np.ndarray) -> np.ndarray:
    return np.rint(x).astype(np.int64)


def warp_affine(img: np.ndarray, m: np.ndarray, w: int, h: int, method: int,
                fill: float) -> np.ndarray:
    """OpenCV's ``warpAffine`` of a uint8 image (forward matrix ``m``, constant border
    ``fill``), with its fixed point: the inverse map in 1/1024 steps, source positions in
    1/32 pixel, weights in 1/32768: nearest (``method`` 0), bilinear (1, and 3 as OpenCV's
    warps do), bicubic (2) or Lanczos-4 (4)."""
    m = m.astype(np.float64)
    det = m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]
    det = 1.0 / det if det != 0 else 0.0
    a00, a11, a01, a10 = m[1, 1] * det, m[0, 0] * det, -m[0, 1] * det, -m[1, 0] * det
    b0 = -a00 * m[0, 2] - a01 * m[1, 2]
    b1 = -a10 * m[0, 2] - a11 * m[1, 2]
    xs, ys = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
    near = method == 0
    shift, delta = (10, 512) if near else (5, 16)
    ax, bx = _cv_round(a00 * xs * 1024), _cv_round(a10 * xs * 1024)
    ay, by = _cv_round((a01 * ys + b0) * 1024) + delta, _cv_round((a11 * ys + b1) * 1024) + delta
    X = (ay[:, None] + ax[None, :]) >> shift
    Y = (by[:, None] + bx[None, :]) >> shift
    sh, sw, c = img.shape
    src = img.astype(np.int64)

    def take(yy, xx):
        ok = (xx >= 0) & (xx < sw) & (yy >= 0) & (yy < sh)
        val = np.full((h, w, c), int(np.clip(round(fill), 0, 255)), np.int64)
        val[ok] = src[yy[ok], xx[ok]]
        return val

    if near:
        return take(Y, X).astype(np.uint8)
    x0, y0, fx, fy = X >> 5, Y >> 5, X & 31, Y & 31
    tab = _remap_table(method)
    k = tab.shape[2]
    acc = np.zeros((h, w, c), np.int64)
    for k1 in range(k):
        for k2 in range(k):
            acc += take(y0 + k1 - (k // 2 - 1), x0 + k2 - (k // 2 - 1)) \
                * tab[fy, fx, k1, k2][..., None]
    return np.clip((acc + (1 << 14)) >> 15, 0, 255).astype(np.uint8)


_TABLES: dict = {}


def _remap_table(method: int) -> np.ndarray:
    """OpenCV's ``initInterTab2D``: for each (y, x) fraction in 1/32, the k x k fixed-point
    weights (scale 32768) of bilinear (k = 2), bicubic (4) or Lanczos-4 (8) remapping, their
    rounding error put on the largest (or smallest) central weight."""
    kind = {2: "cubic", 4: "lanczos"}.get(method, "linear")
    if kind not in _TABLES:
        f = np.arange(32, dtype=np.float32) / np.float32(32)
        rs = _rs()
        one = (np.stack([1 - f, f], 1) if kind == "linear" else rs._cubic_coeffs(f)
               if kind == "cubic" else rs._lanczos4_coeffs(f.astype(np.float64)))
        one = one.astype(np.float32)
        k = one.shape[1]
        v = one[:, None, :, None] * one[None, :, None, :]       # (fy, fx, k1, k2)
        it = np.rint(v * np.float32(32768)).astype(np.int64)
        c0 = k // 2
        for i in range(32):
            for j in range(32):
                t = it[i, j]
                diff = int(t.sum()) - 32768
                if diff == 0:
                    continue
                mn = mx = (c0, c0)
                for a in range(c0, c0 + 2):
                    for b in range(c0, c0 + 2):
                        if t[a, b] < t[mn]:
                            mn = (a, b)
                        elif t[a, b] > t[mx]:
                            mx = (a, b)
                if diff < 0:
                    t[mx] -= diff
                else:
                    t[mn] -= diff
        _TABLES[kind] = it
    return _TABLES[kind]


def _gray(img: np.ndarray) -> np.ndarray:
    """OpenCV's fixed-point ``CV_RGB2GRAY`` (channel 0 weighted as red, as MXNet applies it
    to its BGR images)."""
    i = img.astype(np.int64)
    return ((i[..., 0] * 4899 + i[..., 1] * 9617 + i[..., 2] * 1868 + 8192) >> 14).astype(
        np.uint8)


def bgr_to_hls(img: np.ndarray) -> np.ndarray:
    """OpenCV's 8-bit ``BGR2HLS``: H in [0, 180), L and S in [0, 255]."""
    f = img.astype(np.float32) / np.float32(255.0)
    b, g, r = f[..., 0], f[..., 1], f[..., 2]
    vmax, vmin = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
    diff = vmax - vmin
    lum = (vmax + vmin) * np.float32(0.5)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(lum < 0.5, diff / (vmax + vmin), diff / (np.float32(2.0) - vmax - vmin))
        d = np.float32(60.0) / diff
        hue = np.where(vmax == r, (g - b) * d,
                       np.where(vmax == g, (b - r) * d + 120, (r - g) * d + 240))
    s = np.where(diff > np.finfo(np.float32).eps, s, 0)
    hue = np.where(diff > np.finfo(np.float32).eps, hue, 0)
    hue = np.where(hue < 0, hue + 360, hue)
    return np.stack([_sat8(hue * np.float32(0.5)), _sat8(lum * 255), _sat8(s * 255)], axis=-1)


def hls_to_bgr(img: np.ndarray) -> np.ndarray:
    """OpenCV's 8-bit ``HLS2BGR``, the inverse of :func:`bgr_to_hls`."""
    f = img.astype(np.float32)
    h = f[..., 0] * np.float32(2.0)
    lum, s = f[..., 1] / np.float32(255.0), f[..., 2] / np.float32(255.0)
    p2 = np.where(lum <= 0.5, lum * (1 + s), lum + s - lum * s)
    p1 = 2 * lum - p2
    h6 = h / np.float32(60.0)
    h6 = np.where(h6 < 0, h6 + 6, np.where(h6 >= 6, h6 - 6, h6))
    sector = np.floor(h6).astype(np.int64)
    frac = h6 - sector
    tab = [p2, p1, p1 + (p2 - p1) * (1 - frac), p1 + (p2 - p1) * frac]
    # (b, g, r) picks from tab per sector, as OpenCV's sector table
    order = [(1, 3, 0), (1, 0, 2), (3, 0, 1), (0, 2, 1), (0, 1, 3), (2, 1, 0)]
    out = np.empty(img.shape, np.float32)
    for k in range(6):
        sel = sector == k
        for ch in range(3):
            out[..., ch][sel] = tab[order[k][ch]][sel]
    gray = s == 0
    for ch in range(3):
        out[..., ch][gray] = lum[gray]
    return _sat8(out * 255)


class DefaultAugmenter:
    """``aug_default`` with the iterator's parsed parameters ``p`` (a dict)."""

    def __init__(self, p: dict):
        self.p = p
        if p["min_aspect_ratio"] is not None:
            self.ratio = (float(p["min_aspect_ratio"]), float(p["max_aspect_ratio"]))
        else:
            self.ratio = (1 - p["max_aspect_ratio"], 1 + p["max_aspect_ratio"])
        if p["inter_method"] not in (0, 1, 2, 3, 4, 9, 10):
            raise MXNetError(f"ImageRecordIter: invalid inter_method {p['inter_method']}; "
                             "valid values are 0-4, 9 and 10")
        if p["random_resized_crop"] and not (
                p["min_random_scale"] == 1 and p["max_random_scale"] == 1
                and p["min_crop_size"] == -1 and p["max_crop_size"] == -1
                and not p["rand_crop"]):
            raise MXNetError("ImageRecordIter: random_resized_crop=True conflicts with "
                             "min_random_scale, max_random_scale, min_crop_size, "
                             "max_crop_size and rand_crop")
        self.affine = (p["max_rotate_angle"] > 0 or p["max_shear_ratio"] > 0 or p["rotate"] > 0
                       or bool(p["rotate_list"]) or p["max_random_scale"] != 1
                       or p["min_random_scale"] != 1
                       or (not p["random_resized_crop"] and self.ratio != (1.0, 1.0))
                       or p["max_img_size"] != 1e10 or p["min_img_size"] != 0)

    def __call__(self, img: np.ndarray, rng) -> np.ndarray:
        p = self.p
        _, dh, dw = p["data_shape"]
        if p["resize"] != -1:
            r = p["resize"]
            rows, cols = img.shape[:2]
            nh, nw = (r * rows // cols, r) if rows > cols else (r, r * cols // rows)
            img = _resize(img, nw, nh, _inter(p["inter_method"], cols, rows, nw, nh, rng))
        if self.affine:
            img = self._warp(img, rng)
        if p["pad"] > 0:
            img = _rs().make_border(img, *(p["pad"],) * 4, 0, p["fill_value"], None)
        img = self._crop(img, dh, dw, rng)
        if p["brightness"] > 0 or p["contrast"] > 0 or p["saturation"] > 0:
            img = self._color(img, rng)
        if p["random_h"] or p["random_s"] or p["random_l"]:
            img = self._hsl(img, rng)
        if p["pca_noise"] > 0:
            alpha = rng.normal(0, p["pca_noise"], 3).astype(np.float32)
            rgb = _EIGVEC @ alpha
            self._need3(img, "pca_noise")
            # int += float truncates toward zero, then clips
            v = np.trunc(img.astype(np.float32) + rgb[::-1].astype(np.float32))
            img = np.clip(v, 0, 255).astype(np.uint8)
        return img

    @staticmethod
    def _need3(img, what):
        if img.shape[2] != 3:
            raise MXNetError(f"ImageRecordIter: {what} needs 3-channel images, got "
                             f"{img.shape[2]} channels")

    def _warp(self, img, rng):
        p = self.p
        s = rng.uniform() * p["max_shear_ratio"] * 2 - p["max_shear_ratio"]
        angle = int(rng.randint(-p["max_rotate_angle"], p["max_rotate_angle"] + 1))
        if p["rotate"] > 0:
            angle = p["rotate"]
        if p["rotate_list"]:
            angle = p["rotate_list"][rng.randint(0, len(p["rotate_list"]))]
        a, b = math.cos(angle / 180.0 * math.pi), math.sin(angle / 180.0 * math.pi)
        scale = ratio = 1.0
        if not p["random_resized_crop"]:
            scale = rng.uniform() * (p["max_random_scale"] - p["min_random_scale"]) \
                + p["min_random_scale"]
            ratio = rng.uniform() * (self.ratio[1] - self.ratio[0]) + self.ratio[0]
        hs = 2 * scale / (1 + ratio)
        ws = ratio * hs
        rows, cols = img.shape[:2]
        nw = max(p["min_img_size"], min(p["max_img_size"], scale * cols))
        nh = max(p["min_img_size"], min(p["max_img_size"], scale * rows))
        m = np.array([[hs * a - s * b * ws, hs * b + s * a * ws, 0.0],
                      [-b * ws, a * ws, 0.0]], np.float32)
        m[0, 2] = (nw - (m[0, 0] * cols + m[0, 1] * rows)) / 2
        m[1, 2] = (nh - (m[1, 0] * cols + m[1, 1] * rows)) / 2
        if p["inter_method"] == 0:
            raise MXNetError("ImageRecordIter: inter_method 0 is not valid with rotation, "
                             "shear, random scale, aspect ratio or min/max_img_size (MXNet "
                             "accepts 1-4, 9, 10 there)")
        w, h = int(nw), int(nh)
        method = _inter(p["inter_method"], cols, rows, w, h, rng)
        return warp_affine(img, m, w, h, method, p["fill_value"])

    def _crop(self, img, dh, dw, rng):
        p = self.p
        rows, cols = img.shape[:2]
        if p["random_resized_crop"]:
            lo, hi = self.ratio
            if (p["max_random_area"], p["min_random_area"], lo, hi) != (1, 1, 1, 1):
                if not (lo > 0 and p["min_random_area"] <= p["max_random_area"] and lo <= hi):
                    raise MXNetError("ImageRecordIter: random_resized_crop needs "
                                     "0 < min_aspect_ratio <= max_aspect_ratio and "
                                     "min_random_area <= max_random_area")
                area = rows * cols
                for _ in range(10):
                    target = area * rng.uniform(p["min_random_area"], p["max_random_area"])
                    ratio = rng.uniform(lo, hi)
                    yh = int(round(math.sqrt(target / ratio)))
                    xw = int(round(math.sqrt(target * ratio)))
                    if rng.uniform() > 0.5:
                        yh, xw = xw, yh
                    if yh <= rows and xw <= cols:
                        y = int(rng.randint(0, rows - yh + 1))
                        x = int(rng.randint(0, cols - xw + 1))
                        m = _inter(p["inter_method"], xw, yh, dw, dh, rng)
                        return _resize(img[y:y + yh, x:x + xw], dw, dh, m)
        elif p["max_crop_size"] != -1 or p["min_crop_size"] != -1:
            if not (cols >= p["max_crop_size"] and rows >= p["max_crop_size"]
                    and p["max_crop_size"] >= p["min_crop_size"]):
                raise MXNetError(f"ImageRecordIter: image of {rows}x{cols} is smaller than "
                                 f"max_crop_size {p['max_crop_size']} (or min_crop_size > "
                                 "max_crop_size)")
            size = int(rng.randint(p["min_crop_size"], p["max_crop_size"] + 1))
            y, x = rows - size, cols - size
            if p["rand_crop"]:
                y, x = int(rng.randint(0, y + 1)), int(rng.randint(0, x + 1))
            else:
                y, x = y // 2, x // 2
            m = _inter(p["inter_method"], size, size, dw, dh, rng)
            return _resize(img[y:y + size, x:x + size], dw, dh, m)
        m = _inter(p["inter_method"], cols, rows, dw, dh, rng)
        if rows < dh:
            cols = int(np.float32(dh) / np.float32(rows) * np.float32(cols))
            img = _resize(img, cols, dh, m)
            rows = dh
        if cols < dw:
            rows = int(np.float32(dw) / np.float32(cols) * np.float32(rows))
            img = _resize(img, dw, rows, m)
            cols = dw
        if rows < dh or cols < dw:
            raise MXNetError(f"ImageRecordIter: image of {rows}x{cols} is smaller than the "
                             f"output shape {dh}x{dw}")
        y, x = rows - dh, cols - dw
        if p["rand_crop"]:
            y, x = int(rng.randint(0, y + 1)), int(rng.randint(0, x + 1))
        else:
            y, x = y // 2, x // 2
        return img[y:y + dh, x:x + dw]

    def _color(self, img, rng):
        p = self.p
        self._need3(img, "brightness/contrast/saturation")
        ab = 1.0 + rng.uniform(-p["brightness"], p["brightness"])
        ac = 1.0 + rng.uniform(-p["contrast"], p["contrast"])
        asat = 1.0 + rng.uniform(-p["saturation"], p["saturation"])
        for i in rng.permutation(3):
            f = img.astype(np.float32)
            if i == 0:
                img = _sat8(f * np.float32(ab))
            elif i == 1:
                mean = float(_gray(img).mean())
                img = _sat8(f * np.float32(ac) + np.float32((1 - ac) * mean))
            else:
                g = _gray(img).astype(np.float64)[..., None]
                img = _sat8(img.astype(np.float64) * asat + g * (1 - asat))
        return img

    def _hsl(self, img, rng):
        p = self.p
        self._need3(img, "random_h/random_s/random_l")
        hls = bgr_to_hls(img).astype(np.int64)
        d = []
        for lim in (p["random_h"], p["random_s"], p["random_l"]):
            r = (rng.uniform() + 4 * rng.uniform()) / 5
            d.append(int(r * lim * 2 - lim))
        h, s, lum = d
        hls = np.clip(hls + np.array([h, lum, s]), 0, np.array([180, 255, 255]))
        return hls_to_bgr(hls.astype(np.uint8))
