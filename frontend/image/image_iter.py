"""``mx.image.ImageIter``: batches of augmented images from a RecordIO file or an image list.

MXNet 1.9.1's Python iterator (not the C++ ``ImageRecordIter``): images come from a ``.rec``
file (``path_imgrec``; with ``path_imgidx`` for shuffling and partitions), or from files under
``path_root`` listed in a ``.lst`` file (``index\\tlabel(s)\\tpath`` lines) or an ``imglist``
(``[label(s)..., path]`` items). Each is decoded, passed through the augmenters
(``CreateAugmenter(data_shape, **kwargs)`` by default), transposed to CHW and batched;
``last_batch_handle`` pads the last batch with images from the start, discards it or rolls it
over into the next epoch, as MXNet's does. A broken image raises an error naming its file or
record index.
"""
from __future__ import annotations

import logging
import os
import random
from numbers import Number

from .. import io, recordio
from .. import ndarray as nd
from ..base import MXNetError
from .augmenters import CreateAugmenter
from .image import imdecode

__all__ = ["ImageIter"]

_LAST_BATCH = ("pad", "discard", "roll_over")


class ImageIter(io.DataIter):
    """Image iterator over ``path_imgrec`` (+``path_imgidx``), ``path_imglist`` +
    ``path_root``, or ``imglist``; batches of ``(batch_size,) + data_shape`` float32 data
    and ``(batch_size,)`` (or ``(batch_size, label_width)``) labels. ``kwargs`` go to
    ``CreateAugmenter`` unless ``aug_list`` is given."""

    def __init__(self, batch_size, data_shape, label_width=1, path_imgrec=None,
                 path_imglist=None, path_root=None, path_imgidx=None, shuffle=False,
                 part_index=0, num_parts=1, aug_list=None, imglist=None, data_name="data",
                 label_name="softmax_label", dtype="float32", last_batch_handle="pad",
                 **kwargs):
        super().__init__()
        assert path_imgrec or path_imglist or (isinstance(imglist, list))
        assert dtype in ["int32", "float32", "int64", "float64"], dtype + " label not supported"
        if last_batch_handle not in _LAST_BATCH:
            raise ValueError(f"last_batch_handle must be one of {_LAST_BATCH}, "
                             f"got {last_batch_handle!r}")
        name = self.__class__.__name__
        if path_imgrec:
            logging.info("%s: loading recordio %s...", name, path_imgrec)
            if path_imgidx:
                self.imgrec = recordio.MXIndexedRecordIO(path_imgidx, path_imgrec, "r")
                self.imgidx = list(self.imgrec.keys)
            else:
                self.imgrec = recordio.MXRecordIO(path_imgrec, "r")
                self.imgidx = None
        else:
            self.imgrec = None
        imgkeys = []
        if path_imglist:
            logging.info("%s: loading image list %s...", name, path_imglist)
            self.imglist = _read_list(path_imglist, dtype, imgkeys)
        elif isinstance(imglist, list):
            logging.info("%s: loading image list...", name)
            self.imglist = {}
            for index, img in enumerate(imglist, start=1):
                if len(img) > 2:
                    label = nd.array(img[:-1], dtype=dtype)
                elif isinstance(img[0], Number):
                    label = nd.array([img[0]], dtype=dtype)
                else:
                    label = nd.array(img[0], dtype=dtype)
                self.imglist[str(index)] = (label, img[-1])
                imgkeys.append(str(index))
        else:
            self.imglist = None
        self.path_root = path_root
        self.check_data_shape(data_shape)
        self.provide_data = [(data_name, (batch_size,) + tuple(data_shape))]
        if label_width > 1:
            self.provide_label = [(label_name, (batch_size, label_width))]
        else:
            self.provide_label = [(label_name, (batch_size,))]
        self.batch_size = batch_size
        self.data_shape = tuple(data_shape)
        self.label_width = label_width
        self.shuffle = shuffle
        if self.imgrec is None:
            self.seq = imgkeys
        elif shuffle or num_parts > 1 or path_imgidx:
            if self.imgidx is None:
                raise MXNetError(f"{name}: shuffle and num_parts > 1 need path_imgidx, the "
                                 f"index of {path_imgrec!r}")
            self.seq = self.imgidx
        else:
            self.seq = None
        if num_parts > 1:
            assert part_index < num_parts
            C = len(self.seq) // num_parts
            self.seq = self.seq[part_index * C:(part_index + 1) * C]
        self.auglist = CreateAugmenter(data_shape, **kwargs) if aug_list is None else aug_list
        self.cur = 0
        self._allow_read = True
        self.last_batch_handle = last_batch_handle
        self.num_image = len(self.seq) if self.seq is not None else None
        self._cache_data = None
        self._cache_label = None
        self._cache_idx = None
        self._record = -1           # position of the last record read sequentially
        self._last_key = None       # the sample being decoded, for error messages
        self.reset()

    def reset(self):
        """Back to the beginning (rolled-over samples are kept for the next batch)."""
        if self.seq is not None and self.shuffle:
            random.shuffle(self.seq)
        if self.last_batch_handle != "roll_over" or self._cache_data is None:
            if self.imgrec is not None:
                self.imgrec.reset()
                self._record = -1
            self.cur = 0
            self._allow_read = True

    def hard_reset(self):
        """Back to the beginning, dropping rolled-over samples."""
        if self.seq is not None and self.shuffle:
            random.shuffle(self.seq)
        if self.imgrec is not None:
            self.imgrec.reset()
            self._record = -1
        self.cur = 0
        self._allow_read = True
        self._cache_data = None
        self._cache_label = None
        self._cache_idx = None

    def next_sample(self):
        """The next (label, encoded image bytes); ``StopIteration`` at the end."""
        if self._allow_read is False:
            raise StopIteration
        if self.seq is None:
            s = self.imgrec.read()
            if s is None:
                if self.last_batch_handle != "discard":
                    self.imgrec.reset()
                    self._record = -1
                raise StopIteration
            self._record += 1
            self._last_key = f"index: {self._record}"
            header, img = recordio.unpack(s)
            return header.label, img
        if self.cur >= self.num_image:
            if self.last_batch_handle != "discard":
                self.cur = 0
            raise StopIteration
        idx = self.seq[self.cur]
        self.cur += 1
        if self.imgrec is not None:
            self._last_key = f"index: {idx}"
            header, img = recordio.unpack(self.imgrec.read_idx(idx))
            if self.imglist is None:
                return header.label, img
            return self.imglist[idx][0], img
        label, fname = self.imglist[idx]
        self._last_key = f"filename: {fname}"
        return label, self.read_image(fname)

    def _batchify(self, batch_data, batch_label, start=0):
        """Fill ``batch_data``/``batch_label`` from position ``start``; how many are full."""
        i = start
        try:
            while i < self.batch_size:
                label, s = self.next_sample()
                data = self.imdecode(s)
                try:
                    self.check_valid_image(data)
                except RuntimeError as e:
                    logging.debug("Invalid image, skipping:  %s", str(e))
                    continue
                data = self.augmentation_transform(data)
                batch_data[i] = self.postprocess_data(data)
                batch_label[i] = label
                i += 1
        except StopIteration:
            if not i:
                raise
        return i

    def next(self):
        """The next ``DataBatch``; ``pad`` counts the samples repeated from the start."""
        c, h, w = self.data_shape
        if self._cache_data is not None:        # the rolled-over end of the last epoch
            batch_data, batch_label, i = self._cache_data, self._cache_label, self._cache_idx
        else:
            batch_data = nd.zeros((self.batch_size, c, h, w))
            batch_label = self._empty_labels()
            i = self._batchify(batch_data, batch_label)
        pad = self.batch_size - i
        if pad != 0:
            if self.last_batch_handle == "discard":
                raise StopIteration
            if self.last_batch_handle == "roll_over" and self._cache_data is None:
                self._cache_data, self._cache_label, self._cache_idx = batch_data, batch_label, i
                raise StopIteration
            self._batchify(batch_data, batch_label, i)
            if self.last_batch_handle == "pad":
                self._allow_read = False
            else:
                self._cache_data = self._cache_label = self._cache_idx = None
        return io.DataBatch([batch_data], [batch_label], pad=pad)

    def _empty_labels(self):
        """The label array of a new batch (``provide_label``'s shape)."""
        return nd.empty(self.provide_label[0][1])

    def check_data_shape(self, data_shape):
        """``data_shape`` must be (3, H, W)."""
        if not len(data_shape) == 3:
            raise ValueError("data_shape should have length 3, with dimensions CxHxW")
        if not data_shape[0] == 3:
            raise ValueError("This iterator expects inputs to have 3 channels.")

    def check_valid_image(self, data):
        """Raise RuntimeError for an image without pixels (it is skipped)."""
        if len(data[0].shape) == 0:
            raise RuntimeError("Data shape is wrong")

    def imdecode(self, s):
        """Decode one image (``mx.image.imdecode``); a broken one raises an error naming its
        file or record index."""
        try:
            return imdecode(s)
        except Exception as e:
            raise MXNetError(f"Broken image {self._last_key}, {e}") from None

    def read_image(self, fname):
        """The bytes of image file ``fname`` under ``path_root``."""
        path = os.path.join(self.path_root, fname) if self.path_root else fname
        try:
            with open(path, "rb") as fin:
                return fin.read()
        except OSError as e:
            raise MXNetError(f"{self.__class__.__name__}: cannot read image {path!r}: "
                             f"{e.strerror}") from None

    def augmentation_transform(self, data):
        """Apply the augmenters in order."""
        for aug in self.auglist:
            data = aug(data)
        return data

    def postprocess_data(self, datum):
        """HWC -> CHW."""
        return nd.transpose(datum, axes=(2, 0, 1))


def _read_list(path, dtype, keys) -> dict:
    """Parse a ``.lst`` file: ``index\\tlabel...\\tpath`` per line."""
    out = {}
    with open(path) as fin:
        for lineno, raw in enumerate(fin, start=1):
            line = raw.strip().split("\t")
            if not raw.strip():
                continue
            try:
                if len(line) < 3:
                    raise ValueError("expected index, label(s) and path separated by tabs")
                key = int(line[0])
                label = nd.array([float(v) for v in line[1:-1]], dtype=dtype)
            except ValueError as e:
                raise MXNetError(f"image list {str(path)!r}, line {lineno}: {e}") from None
            out[key] = (label, line[-1])
            keys.append(key)
    return out
