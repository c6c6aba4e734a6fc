"""Image encoding and decoding through Pillow (the ``image`` extra: ``pip install ember[image]``).

MXNet decodes with OpenCV; ember uses Pillow, a maintained library made for the job, and
returns the same arrays: ``uint8`` HxWxC, channels in RGB order (``to_rgb=True``, what
``mx.image.imdecode`` gives) or BGR (OpenCV's order, what ``recordio.unpack_img`` gives).
Without Pillow every entry point raises an ``MXNetError`` that names the extra to install.
"""
from __future__ import annotations

import io

import numpy as np

from .base import MXNetError

EXTRA_HINT = "image decoding needs Pillow: pip install 'ember[image]' (or pip install Pillow)"


def require() -> None:
    """Raise the MXNetError naming the extra unless Pillow is installed."""
    _pil()


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise MXNetError(EXTRA_HINT) from None
    return Image


def decode(buf: bytes, flag: int = 1, to_rgb: bool = True) -> np.ndarray:
    """Decode an encoded image (JPEG, PNG, ...) to a uint8 array.

    ``flag`` 1: three channels; 0: one channel (HxWx1); -1: as stored (HxW for grayscale,
    HxWx4 keeps alpha). ``to_rgb`` False returns OpenCV's BGR order."""
    Image = _pil()
    try:
        img = Image.open(io.BytesIO(bytes(buf)))
        img.load()
    except Exception as e:    # Pillow raises many kinds for damaged data
        raise MXNetError(f"cannot decode image ({len(buf)} bytes): {e}") from None
    if flag == 0:
        arr = np.asarray(img.convert("L"))[:, :, None]
    elif flag > 0:
        arr = np.asarray(img.convert("RGB"))
    else:
        if img.mode not in ("L", "RGB", "RGBA"):
            img = img.convert("RGBA" if "A" in img.getbands() else "RGB")
        arr = np.asarray(img)
    if not to_rgb and arr.ndim == 3 and arr.shape[2] >= 3:
        arr = np.concatenate([arr[:, :, 2::-1], arr[:, :, 3:]], axis=2)
    return np.ascontiguousarray(arr, dtype=np.uint8)


def encode(img, quality: int = 95, img_fmt: str = ".jpg", bgr: bool = False) -> bytes:
    """Encode a uint8 HxW or HxWxC array (RGB, or BGR with ``bgr=True``) as JPEG or PNG."""
    Image = _pil()
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise MXNetError(f"images are encoded from uint8 arrays, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and bgr:
        arr = np.concatenate([arr[:, :, 2::-1], arr[:, :, 3:]], axis=2)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise MXNetError(f"cannot encode an image of shape {arr.shape}: expected HxW, HxWx1, "
                         "HxWx3 or HxWx4")
    fmt = img_fmt.lower().lstrip(".")
    out = io.BytesIO()
    pil = Image.fromarray(np.ascontiguousarray(arr))
    if fmt in ("jpg", "jpeg"):
        pil.save(out, format="JPEG", quality=int(quality))
    elif fmt == "png":
        pil.save(out, format="PNG", compress_level=min(max(int(quality), 0), 9))
    else:
        raise MXNetError(f"unsupported image format {img_fmt!r}: use '.jpg' or '.png'")
    return out.getvalue()
