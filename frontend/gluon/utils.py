"""``mx.gluon.utils``: data-parallel splitting, global-norm clipping, file checks.

MXNet 1.9.1's ``mxnet.gluon.utils``: ``split_data`` / ``split_and_load`` cut a batch into
near-equal slices (the first ``size % n`` slices one row longer, like ``np.array_split``),
``clip_global_norm`` rescales gradients in place, ``check_sha1`` / ``download`` fetch and
verify files. ``HookHandle`` is the handle ``register_forward_hook`` returns.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import urllib.parse
import urllib.request
import uuid
import warnings

import numpy as np

from ember import ndarray
from ember.base import MXNetError
from ember.ndarray.ndarray import NDArray
from ember.util import is_np_shape

from .block import HookHandle

__all__ = ["split_data", "split_and_load", "clip_global_norm", "check_sha1", "download",
           "replace_file", "shape_is_known", "HookHandle"]


def split_data(data: NDArray, num_slice: int, batch_axis: int = 0,
               even_split: bool = True) -> list:
    """Split ``data`` into ``num_slice`` slices along ``batch_axis`` (a list even for one).

    With ``even_split`` a size that ``num_slice`` does not divide raises ValueError;
    otherwise the first ``size % num_slice`` slices get one extra row."""
    size = data.shape[batch_axis]
    if even_split and size % num_slice != 0:
        raise ValueError(
            f"data with shape {data.shape} cannot be evenly split into {num_slice} slices "
            f"along axis {batch_axis}. Use a batch size that's multiple of {num_slice} or set "
            "even_split=False to allow uneven partitioning of data.")
    each, extras = divmod(size, num_slice)
    bounds = np.cumsum([0] + [each + 1] * extras + [each] * (num_slice - extras))
    if batch_axis == 0:
        return [data[int(bounds[i]):int(bounds[i + 1])] for i in range(num_slice)]
    return [ndarray.slice_axis(data, axis=batch_axis, begin=int(bounds[i]),
                               end=int(bounds[i + 1])) for i in range(num_slice)]


def split_and_load(data, ctx_list, batch_axis: int = 0, even_split: bool = True) -> list:
    """Split ``data`` (an NDArray, or anything ``nd.array`` takes) into ``len(ctx_list)``
    slices along ``batch_axis`` and copy each to its context."""
    if not isinstance(data, NDArray):
        data = ndarray.array(data, ctx=ctx_list[0])
    if len(ctx_list) == 1:
        return [data.as_in_context(ctx_list[0])]
    slices = split_data(data, len(ctx_list), batch_axis, even_split)
    return [s.as_in_context(ctx) for s, ctx in zip(slices, ctx_list)]


def clip_global_norm(arrays: list, max_norm: float, check_isfinite: bool = True):
    """Scale ``arrays`` in place so that their joint 2-norm is at most ``max_norm``.

    Returns the norm before clipping: a float with ``check_isfinite`` (which warns when it
    is nan or inf), else a shape-(1,) NDArray without waiting for it."""
    if not arrays:
        raise MXNetError("clip_global_norm needs at least one array")
    ctx = arrays[0].context

    def sq_norm(arr):
        flat = arr.reshape((-1,))
        return ndarray.dot(flat, flat).as_in_context(ctx)

    total = ndarray.sqrt(ndarray.add_n(*[sq_norm(a) for a in arrays]).reshape((1,)))
    if check_isfinite and not np.isfinite(total.asscalar()):
        warnings.warn(UserWarning("nan or inf is detected. Clipping results will be undefined."),
                      stacklevel=2)
    scale = max_norm / (total + 1e-8)
    scale = ndarray.min(ndarray.concat(scale, ndarray.ones(1, ctx=ctx), dim=0))
    for arr in arrays:
        arr *= scale.as_in_context(arr.context)
    return total.asscalar() if check_isfinite else total


def check_sha1(filename: str, sha1_hash: str) -> bool:
    """Whether the SHA-1 of the file's contents is ``sha1_hash`` (hex)."""
    sha1 = hashlib.sha1()
    with open(filename, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha1.update(chunk)
    return sha1.hexdigest() == sha1_hash


def replace_file(src: str, dst: str) -> None:
    """Move ``src`` over ``dst`` atomically (both on one file system)."""
    os.replace(src, dst)


def download(url: str, path: str | None = None, overwrite: bool = False,
             sha1_hash: str | None = None, retries: int = 5, verify_ssl: bool = True) -> str:
    """Fetch ``url`` to ``path`` (a file, or a directory to put it in; default: the current
    directory under the URL's file name) unless it is there already (and matches
    ``sha1_hash``, when given); returns the file's path. The download goes to a temporary
    file first, so a failed one never leaves a partial file behind."""
    if retries < 0:
        raise ValueError("Number of retries should be at least 0")
    if not verify_ssl:
        warnings.warn("Unverified HTTPS request is being made (verify_ssl=False). "
                      "Adding certificate verification is strongly advised.", stacklevel=2)
    name = os.path.basename(urllib.parse.urlparse(url).path)
    if path is None:
        fname = name
    elif os.path.isdir(os.path.expanduser(path)):
        fname = os.path.join(os.path.expanduser(path), name)
    else:
        fname = os.path.expanduser(path)
    if not overwrite and os.path.exists(fname) \
            and (not sha1_hash or check_sha1(fname, sha1_hash)):
        return fname
    dirname = os.path.dirname(os.path.abspath(fname))
    os.makedirs(dirname, exist_ok=True)
    context = None
    if not verify_ssl:
        import ssl
        context = ssl._create_unverified_context()
    for attempt in range(retries + 1):
        tmp = os.path.join(dirname, f".{os.path.basename(fname)}.{uuid.uuid4().hex}.tmp")
        try:
            with urllib.request.urlopen(url, context=context) as r, open(tmp, "wb") as f:
                shutil.copyfileobj(r, f)
            if sha1_hash and not check_sha1(tmp, sha1_hash):
                raise MXNetError(f"File {fname} is downloaded but the content hash does not "
                                 "match. The repo may be outdated or download may be "
                                 "incomplete.")
            replace_file(tmp, fname)
            return fname
        except Exception as e:
            if os.path.exists(tmp):
                os.remove(tmp)
            if attempt == retries:
                raise
            print(f"download failed due to {e!r}, retrying, {retries - attempt} "
                  f"attempt{'s' if retries - attempt > 1 else ''} left")
    raise MXNetError(f"could not download {url}")  # unreachable: the loop returns or raises


def shape_is_known(shape) -> bool:
    """Whether every dimension of ``shape`` is known. Unknown is None, or MXNet's marker:
    -1 under ``np_shape`` semantics, 0 otherwise (where a scalar shape ``()`` is unknown
    too); None as a whole shape is unknown."""
    if shape is None:
        return False
    unknown = -1 if is_np_shape() else 0
    if len(shape) == 0:
        return unknown == -1
    for d in shape:
        if d is None or d == unknown:
            return False
        if d < unknown:
            raise MXNetError(f"shape dimension size cannot be less than {unknown}, "
                             f"got {d} in {tuple(shape)}")
    return True
