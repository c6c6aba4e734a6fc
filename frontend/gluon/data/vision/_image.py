"""NumPy image kernels behind the vision transforms: saturation to a dtype, OpenCV-grid
resizing (nearest, bilinear, bicubic, area, Lanczos), crops and the colour adjustments
of MXNet's ``src/operator/image/image_random-inl.h``. Images are HWC or NHWC."""
from __future__ import annotations

import numpy as np

from ember.base import MXNetError, numeric_types

_GRAY = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601 luma, as MXNet uses
_EIG = np.array([[55.46 * -0.5675, 4.794 * 0.7192, 1.148 * 0.4009],  # AlexNet PCA lighting
                 [55.46 * -0.5808, 4.794 * -0.0045, 1.148 * -0.8140],
                 [55.46 * -0.5836, 4.794 * -0.6948, 1.148 * 0.4203]], np.float32)


def _saturate(v: np.ndarray, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind in "iub":
        info = np.iinfo(dtype) if dtype.kind != "b" else None
        lo, hi = (info.min, info.max) if info is not None else (0, 1)
        return np.clip(np.rint(v), lo, hi).astype(dtype)
    return v.astype(dtype, copy=False)


def _check_image(x: np.ndarray, name: str):
    if x.ndim not in (3, 4):
        raise MXNetError(f"{name}: expected an HWC image or an NHWC batch, got shape {x.shape}")


def _cubic(t, a=-0.75):  # Keys' kernel with OpenCV's a
    t = np.abs(t)
    return np.where(t <= 1, ((a + 2) * t - (a + 3)) * t * t + 1,
                    np.where(t < 2, ((a * t - 5 * a) * t + 8 * a) * t - 4 * a, 0.0))


def _lanczos(t, a=4):
    return np.where(np.abs(t) < a, np.sinc(t) * np.sinc(t / a), 0.0)


def _weights(n_in: int, n_out: int, interp: int) -> np.ndarray:
    """The (n_out, n_in) matrix that resamples one axis with OpenCV's conventions."""
    scale = n_in / n_out
    w = np.zeros((n_out, n_in), np.float64)
    rows = np.arange(n_out)
    if interp == 3 and n_out < n_in:  # area: average over each output pixel's footprint
        lo, hi = rows * scale, (rows + 1) * scale
        src = np.arange(n_in)
        overlap = np.minimum(hi[:, None], src[None] + 1) - np.maximum(lo[:, None], src[None])
        return np.clip(overlap, 0, None) / scale
    centre = (rows + 0.5) * scale - 0.5
    if interp in (1, 3):
        centre = np.clip(centre, 0, n_in - 1)
        x0 = np.floor(centre).astype(np.int64)
        frac = centre - x0
        x1 = np.minimum(x0 + 1, n_in - 1)
        np.add.at(w, (rows, x0), 1 - frac)
        np.add.at(w, (rows, x1), frac)
        return w
    taps, kernel = (2, _cubic) if interp == 2 else (4, _lanczos)
    x0 = np.floor(centre).astype(np.int64)
    for k in range(1 - taps, taps + 1):
        idx = x0 + k
        coef = kernel(centre - idx)
        np.add.at(w, (rows, np.clip(idx, 0, n_in - 1)), coef)
    return w / w.sum(axis=1, keepdims=True)


def _interp_method(interp: int, sizes) -> int:
    if interp == 9:  # cubic to enlarge, area to shrink, bilinear otherwise
        oh, ow, nh, nw = sizes
        return 2 if nh > oh and nw > ow else 3 if nh < oh and nw < ow else 1
    if interp == 10:
        return int(np.random.randint(0, 5))
    if interp not in (0, 1, 2, 3, 4):
        raise MXNetError(f"Unknown interp method {interp}")
    return interp


def imresize(x: np.ndarray, w: int, h: int, interp: int = 1) -> np.ndarray:
    """Resize an HWC image (or NHWC batch) to width ``w`` and height ``h``."""
    _check_image(x, "Resize")
    H, W = x.shape[-3], x.shape[-2]
    if (H, W) == (h, w):
        return x.copy()
    interp = _interp_method(interp, (H, W, h, w))
    if interp == 0:  # OpenCV's nearest: floor(dst * scale)
        ys = np.minimum((np.arange(h) * (H / h)).astype(np.int64), H - 1)
        xs = np.minimum((np.arange(w) * (W / w)).astype(np.int64), W - 1)
        return x[..., ys, :, :][..., xs, :]
    wy = _weights(H, h, interp).astype(np.float32)
    wx = _weights(W, w, interp).astype(np.float32)
    out = np.einsum("yY,...YXc->...yXc", wy, x.astype(np.float32), optimize=True)
    out = np.einsum("xX,...yXc->...yxc", wx, out, optimize=True)
    return _saturate(out, x.dtype)


def _resized_hw(h: int, w: int, size, keep_ratio: bool) -> tuple[int, int]:
    if isinstance(size, numeric_types):
        size = (int(size),)
    size = tuple(int(s) for s in size)
    if len(size) not in (1, 2) or min(size) <= 0:
        raise MXNetError(f"Resize: size must be a positive int or (width, height), got {size}")
    if len(size) == 2:
        return size[1], size[0]
    if not keep_ratio:
        return size[0], size[0]
    if h > w:
        return h * size[0] // w, size[0]
    return size[0], w * size[0] // h



def _fixed_crop(x, x0, y0, w, h, size=None, interp=1):
    out = x[..., y0:y0 + h, x0:x0 + w, :]
    if size is not None and (w, h) != tuple(size):
        out = imresize(out, size[0], size[1], _interp_method(interp, (h, w, size[1], size[0])))
    return out


def _center_crop(x, size, interp):
    h, w = x.shape[-3], x.shape[-2]
    cw, ch = size
    if h < ch:  # scale the crop down to fit, keeping its aspect ratio (MXNet scale_down)
        cw, ch = cw * h / ch, h
    if w < cw:
        cw, ch = w, ch * w / cw
    cw, ch = int(cw), int(ch)
    return _fixed_crop(x, int((w - cw) / 2), int((h - ch) / 2), cw, ch, size, interp)


def _pair(size):
    return (size, size) if isinstance(size, numeric_types) else tuple(size)



def adjust_brightness(x, alpha):
    """``x * alpha``."""
    return _saturate(x.astype(np.float32) * np.float32(alpha), x.dtype)


def adjust_contrast(x, alpha):
    """Blend with the mean gray level of each image: ``x * alpha + (1 - alpha) * mean``."""
    f = x.astype(np.float32)
    gray = f[..., :3] @ _GRAY if x.shape[-1] > 1 else f[..., 0]
    mean = gray.mean(axis=(-2, -1), keepdims=True)[..., None]
    return _saturate(f * np.float32(alpha) + (1 - np.float32(alpha)) * mean, x.dtype)


def adjust_saturation(x, alpha):
    """Blend each pixel with its gray level: ``gray * (1 - alpha) + x * alpha``."""
    if x.shape[-1] == 1:
        return x.copy()
    f = x.astype(np.float32)
    gray = (f[..., :3] @ _GRAY)[..., None]
    return _saturate(gray * (1 - np.float32(alpha)) + f * np.float32(alpha), x.dtype)


def adjust_hue(x, alpha):
    """Rotate the hue by ``alpha * 360`` degrees in HLS space (values on the 0-255 scale)."""
    if x.shape[-1] == 1:
        return x.copy()
    rgb = x[..., :3].astype(np.float32) / np.float32(255.0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    vmax, vmin = rgb.max(axis=-1), rgb.min(axis=-1)
    diff, light = vmax - vmin, (vmax + vmin) / 2
    chroma = diff > np.finfo(np.float32).eps
    safe = np.where(chroma, diff, 1)
    sat = np.where(light < 0.5, diff / np.where(chroma, vmax + vmin, 1),
                   diff / np.where(chroma, 2 - vmax - vmin, 1))
    hue = np.where(vmax == r, (g - b) * 60 / safe,
                   np.where(vmax == g, (b - r) * 60 / safe + 120, (r - g) * 60 / safe + 240))
    hue = np.where(chroma, hue % 360, 0) + np.float32(alpha * 360.0)
    sat = np.where(chroma, sat, 0)
    p2 = np.where(light <= 0.5, light * (1 + sat), light + sat - light * sat)
    p1 = 2 * light - p2

    def channel(h):  # the standard HLS -> RGB component for hue h (degrees)
        h = h % 360
        return np.where(h < 60, p1 + (p2 - p1) * h / 60, np.where(
            h < 180, p2, np.where(h < 240, p1 + (p2 - p1) * (240 - h) / 60, p1)))

    out = np.stack([channel(hue + 120), channel(hue), channel(hue - 120)], axis=-1) * 255
    out = np.where(chroma[..., None], out, rgb * 255)
    res = x.astype(np.float32)
    res[..., :3] = out
    return _saturate(res, x.dtype)


def adjust_lighting(x, alpha_rgb):
    """Add the AlexNet PCA colour offset ``eig @ alpha_rgb`` to every pixel."""
    if x.shape[-1] == 1:
        return x.copy()
    res = x.astype(np.float32)
    res[..., :3] += _EIG @ np.asarray(alpha_rgb, np.float32)
    return _saturate(res, x.dtype)
