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
from ._image import (
    _center_crop,
    _check_image,
    _fixed_crop,
    _pair,
    _resized_hw,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_lighting,
    adjust_saturation,
    imresize,
)

__all__ = ["Compose", "HybridCompose", "Cast", "ToTensor", "Normalize", "Resize", "CropResize",
           "CenterCrop", "RandomResizedCrop", "RandomFlipLeftRight", "RandomFlipTopBottom",
           "RandomBrightness", "RandomContrast", "RandomSaturation", "RandomHue",
           "RandomColorJitter", "RandomLighting", "RandomApply"]


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
