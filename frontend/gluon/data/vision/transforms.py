"""Image transforms (``mx.gluon.data.vision.transforms``), computed in NumPy.

Images are HWC (or NHWC batches) until ``ToTensor`` makes them CHW float32 in [0, 1]. The
colour jitters follow MXNet's kernels (``src/operator/image/image_random-inl.h``): a factor
drawn uniformly, results saturated to the input dtype (rounded and clipped for integers).
Resizing uses OpenCV's sampling grid (pixel centres, replicated borders). Random choices
come from NumPy's global RandomState, which ``mx.random.seed`` seeds. These Blocks run
eagerly: ``hybridize()`` leaves them as they are.
"""
from __future__ import annotations

import numpy as np

from ember.base import MXNetError, numeric_types
from ember.ndarray import NDArray

from ...block import Block, HybridBlock
from ...nn import HybridSequential, Sequential

__all__ = ["Compose", "HybridCompose", "Cast", "ToTensor", "Normalize", "Resize", "CropResize",
           "CenterCrop", "RandomResizedCrop", "RandomFlipLeftRight", "RandomFlipTopBottom",
           "RandomBrightness", "RandomContrast", "RandomSaturation", "RandomHue",
           "RandomColorJitter", "RandomLighting", "RandomApply"]

_GRAY = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601 luma, as MXNet uses
_EIG = np.array([[55.46 * -0.5675, 4.794 * 0.7192, 1.148 * 0.4009],  # AlexNet PCA lighting
                 [55.46 * -0.5808, 4.794 * -0.0045, 1.148 * -0.8140],
                 [55.46 * -0.5836, 4.794 * -0.6948, 1.148 * 0.4203]], np.float32)


class _Eager:
    """Mixin: ``forward`` runs ``_apply`` on the NumPy data and wraps the result back."""

    def forward(self, x):
        if isinstance(x, NDArray):
            return NDArray(np.ascontiguousarray(self._apply(x._data)), x._ctx)
        if isinstance(x, np.ndarray):
            return self._apply(x)
        raise MXNetError(f"{type(self).__name__}: expected an NDArray image, got "
                         f"{type(x).__name__} (image transforms run eagerly and cannot be "
                         "hybridized into a graph)")

    def hybrid_forward(self, F, x):
        """The same computation (``F`` must be ``ember.nd``)."""
        return self.forward(x)

    def hybridize(self, active: bool = True, **kwargs):
        """Image transforms stay eager (NumPy); accepted for MXNet compatibility."""

    def _apply(self, x: np.ndarray) -> np.ndarray:
        raise MXNetError(f"{type(self).__name__} must define _apply")


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


# ---- composition -----------------------------------------------------------------------
class Compose(Sequential):
    """Applies ``transforms`` one after the other."""

    def __init__(self, transforms):
        super().__init__()
        for t in transforms:
            if t is not None:
                self.add(t)


class HybridCompose(HybridSequential):
    """``Compose`` for HybridBlock transforms (MXNet 2.x); runs the same way, eagerly."""

    def __init__(self, transforms):
        super().__init__()
        for t in transforms:
            if t is not None:
                self.add(t)

    def forward(self, x, *args):
        for block in self._children.values():
            x = block(x, *args)
            args = ()
            if isinstance(x, tuple | list):
                x, *args = x
        return x

    def hybridize(self, active: bool = True, **kwargs):
        """Children are eager transforms; accepted for MXNet compatibility."""


class RandomApply(Sequential):
    """Applies ``transforms`` with probability ``p``, else returns the input unchanged."""

    def __init__(self, transforms, p: float = 0.5):
        super().__init__()
        self.transforms = transforms
        self.p = p

    def forward(self, x):
        if self.p < np.random.random_sample():
            return x
        return self.transforms(x)


# ---- dtype and layout --------------------------------------------------------------------
class Cast(_Eager, HybridBlock):
    """Casts the input to ``dtype``."""

    def __init__(self, dtype="float32"):
        super().__init__()
        self._dtype = np.dtype(dtype)

    def _apply(self, x):
        return x.astype(self._dtype)


class ToTensor(_Eager, HybridBlock):
    """HWC (or NHWC) values in [0, 255] to CHW (or NCHW) float32 values in [0, 1]."""

    def _apply(self, x):
        _check_image(x, "ToTensor")
        return np.moveaxis(x, -1, -3).astype(np.float32) / np.float32(255.0)


class Normalize(_Eager, HybridBlock):
    """``(x[c] - mean[c]) / std[c]`` per channel of a CHW tensor or NCHW batch; a scalar (or
    one-element) mean or std applies to every channel."""

    def __init__(self, mean=0.0, std=1.0):
        super().__init__()
        self._mean, self._std = mean, std

    def _apply(self, x):
        if x.ndim not in (3, 4):
            raise MXNetError(f"Normalize: expected a CHW tensor or NCHW batch, got {x.shape}")
        c = x.shape[-3]
        dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
        stats = []
        for name, v in (("mean", self._mean), ("std", self._std)):
            v = np.atleast_1d(np.asarray(v, np.float32))
            if v.size not in (1, c):
                raise MXNetError(f"Normalize: invalid {name} for input with shape {x.shape}: "
                                 f"{name} must have either 1 or {c} elements, but got {v.size}")
            stats.append(np.broadcast_to(v, (c,)).reshape(c, 1, 1))
        return ((x - stats[0]) / stats[1]).astype(dtype, copy=False)


# ---- geometry ------------------------------------------------------------------------------
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


class Resize(_Eager, HybridBlock):
    """Resize to ``size`` = (width, height), or to a square ``size`` (the short edge to
    ``size`` with ``keep_ratio``). ``interpolation``: 0 nearest, 1 bilinear, 2 bicubic,
    3 area, 4 Lanczos, 9 auto, 10 random."""

    def __init__(self, size, keep_ratio: bool = False, interpolation: int = 1):
        super().__init__()
        self._size, self._keep, self._interpolation = size, keep_ratio, interpolation

    def _apply(self, x):
        _check_image(x, "Resize")
        h, w = _resized_hw(x.shape[-3], x.shape[-2], self._size, self._keep)
        return imresize(x, w, h, self._interpolation)


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


class CropResize(_Eager, HybridBlock):
    """Crop the box at (``x``, ``y``) of ``width`` x ``height``, then resize it to ``size``."""

    def __init__(self, x, y, width, height, size=None, interpolation=None):
        super().__init__()
        self._box = (x, y, width, height)
        self._size = None if size is None else _pair(size)
        self._interpolation = 1 if interpolation is None else interpolation

    def _apply(self, x):
        _check_image(x, "CropResize")
        return _fixed_crop(x, *self._box, self._size, self._interpolation)


class CenterCrop(_Eager, Block):
    """The central ``size`` = (width, height) crop, resized up when the image is smaller."""

    def __init__(self, size, interpolation: int = 1):
        super().__init__()
        self._size, self._interpolation = _pair(size), interpolation

    def _apply(self, x):
        _check_image(x, "CenterCrop")
        return _center_crop(x, self._size, self._interpolation)


class RandomResizedCrop(_Eager, Block):
    """A crop of random area (``scale`` of the image's) and aspect ratio (``ratio``, drawn
    log-uniformly), resized to ``size``; after 10 misses, the center crop."""

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0),
                 interpolation: int = 1):
        super().__init__()
        self._size, self._scale, self._ratio = _pair(size), scale, ratio
        self._interpolation = interpolation

    def _apply(self, x):
        _check_image(x, "RandomResizedCrop")
        h, w = x.shape[-3], x.shape[-2]
        area = self._scale if not isinstance(self._scale, numeric_types) else (self._scale, 1.0)
        for _ in range(10):
            target = np.random.uniform(area[0], area[1]) * h * w
            aspect = np.exp(np.random.uniform(np.log(self._ratio[0]), np.log(self._ratio[1])))
            cw, ch = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
            if cw <= w and ch <= h:
                x0, y0 = np.random.randint(0, w - cw + 1), np.random.randint(0, h - ch + 1)
                return _fixed_crop(x, x0, y0, cw, ch, self._size, self._interpolation)
        return _center_crop(x, self._size, self._interpolation)


class RandomFlipLeftRight(_Eager, HybridBlock):
    """Mirrors the image left-right with probability 0.5."""

    def _apply(self, x):
        return x[..., ::-1, :].copy() if np.random.random_sample() < 0.5 else x.copy()


class RandomFlipTopBottom(_Eager, HybridBlock):
    """Flips the image top-bottom with probability 0.5."""

    def _apply(self, x):
        return x[..., ::-1, :, :].copy() if np.random.random_sample() < 0.5 else x.copy()


# ---- colour --------------------------------------------------------------------------------
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


class _RandomEnhance(_Eager, HybridBlock):
    _fn = None

    def __init__(self, amount: float):
        super().__init__()
        self._args = (max(0.0, 1.0 - amount), 1.0 + amount)

    def _apply(self, x):
        _check_image(x, type(self).__name__)
        return type(self)._fn(x, np.random.uniform(*self._args))


class RandomBrightness(_RandomEnhance):
    """Scales brightness by a factor drawn from ``[max(0, 1 - brightness), 1 + brightness]``."""

    _fn = staticmethod(adjust_brightness)


class RandomContrast(_RandomEnhance):
    """Scales contrast by a factor drawn from ``[max(0, 1 - contrast), 1 + contrast]``."""

    _fn = staticmethod(adjust_contrast)


class RandomSaturation(_RandomEnhance):
    """Scales saturation by a factor drawn from ``[max(0, 1 - saturation), 1 + saturation]``."""

    _fn = staticmethod(adjust_saturation)


class RandomHue(_RandomEnhance):
    """Shifts hue by ``alpha * 360`` degrees, alpha drawn from ``[max(0, 1 - hue), 1 + hue]``."""

    _fn = staticmethod(adjust_hue)


class RandomColorJitter(_Eager, HybridBlock):
    """Brightness, contrast, saturation and hue jitter, in a random order; each factor is
    ``1 + U(-amount, amount)`` (the hue shift ``U(-hue, hue)``); zero amounts are skipped."""

    def __init__(self, brightness=0, contrast=0, saturation=0, hue=0):
        super().__init__()
        self._args = (brightness, contrast, saturation, hue)

    def _apply(self, x):
        _check_image(x, "RandomColorJitter")
        fns = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
        for i in np.random.permutation(4):
            amount = self._args[i]
            if amount > 0:
                alpha = np.random.uniform(-amount, amount)
                x = fns[i](x, alpha if i == 3 else 1.0 + alpha)
        return x.copy()


class RandomLighting(_Eager, HybridBlock):
    """AlexNet-style PCA lighting noise with per-channel weights drawn from N(0, alpha)."""

    def __init__(self, alpha: float):
        super().__init__()
        self._alpha = alpha

    def _apply(self, x):
        _check_image(x, "RandomLighting")
        return adjust_lighting(x, np.random.normal(0, self._alpha, size=3))
