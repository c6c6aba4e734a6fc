"""``mx.image`` functions: read, decode, resize, pad, crop, normalise and rotate images.

As MXNet 1.9.1's ``mxnet/image/image.py``: images are ``HxWxC`` NDArrays (``uint8`` from the
decoder, RGB by default), sizes are given as ``(width, height)``, and the random functions draw
from Python's ``random`` module (``random_rotate``: ``np.random``), so seeding them reproduces
MXNet's choices. MXNet calls OpenCV; ember decodes through Pillow (the ``image`` extra) and
resizes and pads with NumPy kernels that follow OpenCV's conventions (``_resample``).
"""
from __future__ import annotations

import os
import random
import warnings
from numbers import Number

import numpy as np

from .. import image_codec
from .. import ndarray as nd
from ..base import MXNetError
from . import _resample

__all__ = ["imread", "imdecode", "imresize", "scale_down", "copyMakeBorder", "resize_short",
           "fixed_crop", "random_crop", "center_crop", "color_normalize", "random_size_crop",
           "imrotate", "random_rotate"]


def _np(x) -> np.ndarray:
    """The NumPy data of an NDArray (no copy), or ``x`` as an array."""
    return x._data if isinstance(x, nd.NDArray) else np.asarray(x)


def _result(arr: np.ndarray, out=None, what: str = "image"):
    """Wrap ``arr`` as an NDArray, or write it into ``out`` (checking the shape) and return it."""
    if out is None:
        return nd.NDArray(np.ascontiguousarray(arr))
    if tuple(out.shape) != arr.shape:
        raise MXNetError(f"{what}: out has shape {tuple(out.shape)}, the result {arr.shape}")
    out[:] = arr.astype(out.dtype, copy=False)
    return out


def _decode(buf: bytes, flag: int, to_rgb: bool, source: str) -> np.ndarray:
    if len(buf) == 0:
        raise MXNetError(f"imdecode: {source} is empty: there is no image to decode")
    try:
        img = image_codec.decode(buf, flag=1 if flag != 0 else 0, to_rgb=bool(to_rgb))
    except MXNetError as e:
        if str(e) == image_codec.EXTRA_HINT:
            raise
        raise MXNetError(f"imdecode: cannot decode {source}: {e}") from None
    return img


def imdecode(buf, flag: int = 1, to_rgb: bool = True, out=None):
    """Decode an encoded image (JPEG, PNG, ...) to a ``uint8`` HxWx3 NDArray (``flag=0``:
    HxWx1 grayscale); ``to_rgb=False`` gives OpenCV's BGR order."""
    if isinstance(buf, nd.NDArray):
        buf = buf._data
    if isinstance(buf, np.ndarray):
        buf = np.ascontiguousarray(buf, dtype=np.uint8).tobytes()
    elif not isinstance(buf, bytes | bytearray | memoryview):
        raise ValueError("buf must be of type bytes, bytearray or numpy.ndarray, if you would "
                         "like to input type str, please convert to bytes")
    return _result(_decode(bytes(buf), flag, to_rgb, f"a buffer of {len(buf)} bytes"), out,
                   "imdecode")


def imread(filename, flag: int = 1, to_rgb: bool = True, out=None):
    """Read and decode an image file to a ``uint8`` HxWxC NDArray (see ``imdecode``)."""
    try:
        with open(os.fspath(filename), "rb") as f:
            buf = f.read()
    except OSError as e:
        raise MXNetError(f"imread: {str(filename)!r} couldn't open file: {e.strerror}") from None
    return _result(_decode(buf, flag, to_rgb, f"file {str(filename)!r}"), out, "imread")


def imresize(src, w: int, h: int, interp: int = 1, out=None):
    """Resize an HxWxC image to ``h x w`` with OpenCV's interpolation codes: 0 nearest,
    1 bilinear, 2 bicubic, 3 area, 4 Lanczos (see ``_resample`` for the conventions)."""
    if int(interp) not in (0, 1, 2, 3, 4):
        raise MXNetError(f"imresize: unknown interpolation method {interp}; use 0-4 "
                         "(or pass 9/10 through _get_interp_method)")
    return _result(_resample.resize(_np(src), int(w), int(h), int(interp)), out, "imresize")


def scale_down(src_size, size):
    """Scale the crop ``size`` (w, h) down to fit ``src_size`` (w, h), keeping its aspect."""
    w, h = size
    sw, sh = src_size
    if sh < h:
        w, h = float(w * sh) / h, sh
    if sw < w:
        w, h = sw, float(h * sw) / w
    return int(w), int(h)


def copyMakeBorder(src, top: int, bot: int, left: int, right: int, type: int = 0,
                   value: float = 0.0, values=(), out=None):
    """Pad an HxWxC image as OpenCV's ``copyMakeBorder``: ``type`` 0 constant (``values`` per
    channel, or ``value``), 1 replicate, 2 reflect, 3 wrap, 4 reflect-101."""
    if isinstance(values, Number):         # one fill value for every channel
        values = [values] * 4
    res = _resample.make_border(_np(src), int(top), int(bot), int(left), int(right), type,
                                float(value), [float(v) for v in values or ()])
    return _result(res, out, "copyMakeBorder")


def _get_interp_method(interp: int, sizes=()) -> int:
    """The interpolation method: 9 picks bicubic to enlarge, area to shrink, bilinear
    otherwise (``sizes`` = old h, old w, new h, new w); 10 picks one of 0-4 at random."""
    if interp == 9:
        if sizes:
            assert len(sizes) == 4
            oh, ow, nh, nw = sizes
            if nh > oh and nw > ow:
                return 2
            if nh < oh and nw < ow:
                return 3
            return 1
        return 2
    if interp == 10:
        return random.randint(0, 4)
    if interp not in (0, 1, 2, 3, 4):
        raise ValueError(f"Unknown interp method {interp}")
    return interp


def resize_short(src, size: int, interp: int = 2):
    """Resize so that the shorter edge is ``size``, keeping the aspect ratio."""
    h, w, _ = src.shape
    if h > w:
        new_h, new_w = size * h // w, size
    else:
        new_h, new_w = size, size * w // h
    return imresize(src, new_w, new_h, interp=_get_interp_method(interp, (h, w, new_h, new_w)))


def fixed_crop(src, x0: int, y0: int, w: int, h: int, size=None, interp: int = 2):
    """Crop ``w x h`` at (x0, y0), then resize to ``size`` (w, h) if given and different."""
    out = src[y0:y0 + h, x0:x0 + w]
    if size is not None and (w, h) != tuple(size):
        sizes = (h, w, size[1], size[0])
        out = imresize(out, *size, interp=_get_interp_method(interp, sizes))
    return out


def random_crop(src, size, interp: int = 2):
    """Crop ``size`` (w, h) at a random place (scaled down to fit, then resized back);
    returns the crop and (x0, y0, w, h)."""
    h, w, _ = src.shape
    new_w, new_h = scale_down((w, h), size)
    x0 = random.randint(0, w - new_w)
    y0 = random.randint(0, h - new_h)
    return fixed_crop(src, x0, y0, new_w, new_h, size, interp), (x0, y0, new_w, new_h)


def center_crop(src, size, interp: int = 2):
    """Crop ``size`` (w, h) from the centre; returns the crop and (x0, y0, w, h)."""
    h, w, _ = src.shape
    new_w, new_h = scale_down((w, h), size)
    x0 = int((w - new_w) / 2)
    y0 = int((h - new_h) / 2)
    return fixed_crop(src, x0, y0, new_w, new_h, size, interp), (x0, y0, new_w, new_h)


def color_normalize(src, mean, std=None):
    """``(src - mean) / std``, in place as MXNet's."""
    if mean is not None:
        src -= mean
    if std is not None:
        src /= std
    return src


def random_size_crop(src, size, area, ratio, interp: int = 2, **kwargs):
    """Crop a random area fraction (``area``: min or (min, max)) with a random aspect ratio
    (log-uniform in ``ratio``), resized to ``size``; ten tries, then a centre crop."""
    h, w, _ = src.shape
    src_area = h * w
    if "min_area" in kwargs:
        warnings.warn("`min_area` is deprecated. Please use `area` instead.",
                      DeprecationWarning, stacklevel=2)
        area = kwargs.pop("min_area")
    assert not kwargs, "unexpected keyword arguments for `random_size_crop`."
    if isinstance(area, Number):
        area = (area, 1.0)
    for _ in range(10):
        target_area = random.uniform(area[0], area[1]) * src_area
        log_ratio = (np.log(ratio[0]), np.log(ratio[1]))
        new_ratio = np.exp(random.uniform(*log_ratio))
        new_w = int(round(np.sqrt(target_area * new_ratio)))
        new_h = int(round(np.sqrt(target_area / new_ratio)))
        if new_w <= w and new_h <= h:
            x0 = random.randint(0, w - new_w)
            y0 = random.randint(0, h - new_h)
            return fixed_crop(src, x0, y0, new_w, new_h, size, interp), (x0, y0, new_w, new_h)
    return center_crop(src, size, interp)


def _zoom(h: float, w: float, rad: np.ndarray, zoom_out: bool) -> np.ndarray:
    """MXNet's per-image scale so that the rotated image fills (zoom in) or contains (zoom
    out) the frame."""
    f32 = np.float32
    rho = np.sqrt(f32(h * h + w * w))
    ang = np.arctan(f32(h) / f32(w))
    a = np.abs(rad)
    max_x = np.maximum(np.abs(rho * np.cos(ang + a)), np.abs(rho * np.cos(ang - a)))
    max_y = np.maximum(np.abs(rho * np.sin(ang + a)), np.abs(rho * np.sin(ang - a)))
    if zoom_out:
        return np.maximum(max_x / f32(w), max_y / f32(h))
    return np.minimum(f32(w) / max_x, f32(h) / max_y)


def imrotate(src, rotation_degrees, zoom_in: bool = False, zoom_out: bool = False):
    """Rotate a float32 CHW image (scalar angle) or NCHW batch (scalar or one angle per
    image) counter-clockwise by ``rotation_degrees``, bilinear, zero outside; ``zoom_in``
    scales so no padding shows, ``zoom_out`` so the whole image stays in the frame."""
    if zoom_in and zoom_out:
        raise ValueError("`zoom_in` and `zoom_out` cannot be both True")
    if np.dtype(src.dtype) != np.dtype(np.float32):
        raise TypeError("Only `float32` images are supported by this function")
    data = _np(src)
    expanded = data.ndim == 3
    if expanded:
        data = data[None]
        if not isinstance(rotation_degrees, Number):
            raise TypeError("When a single image is passed the rotation angle is "
                            "required to be a scalar.")
    elif data.ndim != 4:
        raise ValueError("Only 3D and 4D are supported by this function")
    if isinstance(rotation_degrees, Number):
        degrees = np.full(len(data), rotation_degrees, np.float32)
    else:
        degrees = np.asarray(_np(rotation_degrees), np.float32).reshape(-1)
    if len(data) != len(degrees):
        raise ValueError("The number of images must be equal to the number of rotation angles")
    rad = (np.pi * degrees / 180).astype(np.float32)[:, None, None]
    _, _, h, w = data.shape
    hscale, wscale = np.float32((h - 1) / 2), np.float32((w - 1) / 2)
    hm = (np.arange(h, dtype=np.float32)[:, None] - hscale)[None]
    wm = (np.arange(w, dtype=np.float32)[None, :] - wscale)[None]
    cos, sin = np.cos(rad), np.sin(rad)
    wrot = (wm * cos - hm * sin) / wscale
    hrot = (wm * sin + hm * cos) / hscale
    grid = np.stack([wrot, hrot], axis=1)
    if zoom_in or zoom_out:
        grid = grid * _zoom(h, w, rad, zoom_out)[:, None]
    out = _resample.bilinear_sample(data, grid.astype(np.float32))
    return nd.NDArray(out[0] if expanded else out)


def random_rotate(src, angle_limits, zoom_in: bool = False, zoom_out: bool = False):
    """Rotate by an angle drawn from ``np.random.uniform(*angle_limits)`` (one per image of
    a batch)."""
    if src.ndim == 3:
        rotation_degrees = np.random.uniform(*angle_limits)
    else:
        rotation_degrees = nd.array(np.random.uniform(*angle_limits, size=src.shape[0]))
    return imrotate(src, rotation_degrees, zoom_in=zoom_in, zoom_out=zoom_out)
