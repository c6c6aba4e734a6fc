"""``mx.io.ImageRecordIter`` and ``ImageRecordUInt8Iter``: MXNet 1.9.1's C++ RecordIO image
iterator (``iter_image_recordio_2.cc``) in Python.

Records of a ``.rec`` file (``recordio.pack_img``) are decoded in OpenCV's BGR order, run
through the default augmenter (``_image_record_aug``), then normalised channel by channel in
RGB order: ``((pixel - mean_c) * contrast + illumination) * scale / std_c`` (``mean_img``
replaces the per-channel means), mirrored when asked. Labels come from the record header (a
vector label when ``label_width > 1``) or from ``path_imglist``.

Order and batching as MXNet's: records in file order (``num_parts``/``part_index`` split by
record count with a ``.idx``, by byte range without one); ``shuffle`` (with ``seed``) shuffles
each pass; ``round_batch=True`` fills the last batch from the start of the next pass (``pad``
counts those) and the following epoch continues after them. Differences, all deliberate:
``round_batch=False`` gives ``pad`` = the number of missing examples, zero-filled (MXNet reports
0 and leaves stale data); random draws use NumPy's generator (same distributions, other
values); a keyword MXNet does not know raises instead of being ignored. ``preprocess_threads``,
``prefetch_buffer``, ``ctx``, ``device_id`` and ``verbose`` tune speed or logging only.
"""
from __future__ import annotations

import os
import struct

import numpy as np

from ember import nd
from ember.base import MXNetError
from ember.image_codec import decode
from ember.recordio import read_record, unpack

from ._image_record_aug import DefaultAugmenter
from .io import DataBatch, DataDesc, DataIter

__all__ = ["ImageRecordIter", "ImageRecordUInt8Iter", "ImageRecordInt8Iter"]

_MAGIC = 0xCED7230A
_RAND_MAGIC = 111

# name -> (default, converter); every keyword MXNet's ImageRecordIter accepts
_bool = lambda v: bool(int(v)) if isinstance(v, str) and v.isdigit() else (  # noqa: E731
    v.lower() == "true" if isinstance(v, str) else bool(v))
_PARAMS = {
    "path_imgrec": ("", str), "path_imgidx": ("", str), "path_imglist": ("", str),
    "aug_seq": ("aug_default", str), "label_width": (1, int), "data_shape": (None, tuple),
    "preprocess_threads": (4, int), "verbose": (True, _bool), "num_parts": (1, int),
    "part_index": (0, int), "device_id": (0, int), "shuffle_chunk_size": (0, int),
    "shuffle_chunk_seed": (0, int), "seed_aug": (None, int), "shuffle": (False, _bool),
    "seed": (0, int), "batch_size": (None, int), "round_batch": (True, _bool),
    "prefetch_buffer": (4, int), "ctx": ("gpu", str), "dtype": (None, str),
    "resize": (-1, int), "rand_crop": (False, _bool), "random_resized_crop": (False, _bool),
    "max_rotate_angle": (0, int), "max_aspect_ratio": (0.0, float),
    "min_aspect_ratio": (None, float), "max_shear_ratio": (0.0, float),
    "max_crop_size": (-1, int), "min_crop_size": (-1, int), "max_random_scale": (1.0, float),
    "min_random_scale": (1.0, float), "max_random_area": (1.0, float),
    "min_random_area": (1.0, float), "max_img_size": (1e10, float),
    "min_img_size": (0.0, float), "brightness": (0.0, float), "contrast": (0.0, float),
    "saturation": (0.0, float), "pca_noise": (0.0, float), "random_h": (0, int),
    "random_s": (0, int), "random_l": (0, int), "rotate": (-1, int), "fill_value": (255, int),
    "inter_method": (1, int), "pad": (0, int), "rotate_list": ((), tuple),
    "mirror": (False, _bool), "rand_mirror": (False, _bool), "mean_img": ("", str),
    "mean_r": (0.0, float), "mean_g": (0.0, float), "mean_b": (0.0, float),
    "mean_a": (0.0, float), "std_r": (1.0, float), "std_g": (1.0, float),
    "std_b": (1.0, float), "std_a": (1.0, float), "scale": (1.0, float),
    "max_random_contrast": (0.0, float), "max_random_illumination": (0.0, float),
    "data_name": ("data", str), "label_name": ("softmax_label", str),
}
_NORMALIZE = ("mean_r", "mean_g", "mean_b", "mean_a", "std_r", "std_g", "std_b", "std_a",
              "scale", "max_random_contrast", "max_random_illumination")


def _tuple(v) -> tuple:
    if isinstance(v, str):
        v = [x for x in v.strip("()[] ").split(",") if x.strip()]
    if isinstance(v, int | np.integer):
        v = (v,)
    return tuple(int(x) for x in v)


def _parse(kwargs: dict, name: str) -> dict:
    unknown = sorted(set(kwargs) - set(_PARAMS))
    if unknown:
        raise MXNetError(f"{name}: unknown parameter(s) {unknown}")
    p = {}
    for k, (default, conv) in _PARAMS.items():
        v = kwargs.get(k, default)
        if v is not None and k in kwargs:
            try:
                v = _tuple(v) if conv is tuple else conv(v)
            except (TypeError, ValueError):
                raise MXNetError(f"{name}: invalid value {kwargs[k]!r} for {k}") from None
        p[k] = v
    for k in ("data_shape", "batch_size"):
        if p[k] is None:
            raise MXNetError(f"{name}: the required parameter {k} is missing")
    if len(p["data_shape"]) != 3 or min(p["data_shape"]) <= 0 \
            or p["data_shape"][0] not in (1, 3, 4):
        raise MXNetError(f"{name}: data_shape must be (channels, height, width) with 1, 3 or "
                         f"4 channels, got {p['data_shape']}")
    if p["batch_size"] <= 0 or p["label_width"] < 1:
        raise MXNetError(f"{name}: batch_size and label_width must be positive")
    if not p["path_imgrec"]:
        raise MXNetError(f"{name}: path_imgrec must be given")
    if p["aug_seq"] != "aug_default":
        raise MXNetError(f"{name}: aug_seq {p['aug_seq']!r} is not supported (only "
                         "'aug_default')")
    if p["shuffle_chunk_size"] > 0:
        raise MXNetError(f"{name}: shuffle_chunk_size (chunk shuffling of a .rec without "
                         "index) is not supported; give path_imgidx and shuffle=True")
    if not 0 <= p["part_index"] < p["num_parts"]:
        raise MXNetError(f"{name}: part_index {p['part_index']} is not in "
                         f"[0, num_parts={p['num_parts']})")
    return p


def _record_offsets(path: str) -> tuple[list[int], int]:
    """Start offsets of the logical records of a .rec file, and the file size."""
    offs = []
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        pos = 0
        while pos + 8 <= size:
            f.seek(pos)
            magic, lrec = struct.unpack("<II", f.read(8))
            if magic != _MAGIC:
                raise MXNetError(f"ImageRecordIter: {path!r} is not a RecordIO file (bad magic "
                                 f"at byte {pos})")
            length = lrec & ((1 << 29) - 1)
            if lrec >> 29 in (0, 1):
                offs.append(pos)
            pos += 8 + length + (-length % 4)
    return offs, size


def _read_index(path: str) -> list[int]:
    try:
        with open(path) as f:
            rows = [line.split() for line in f if line.strip()]
        return sorted(int(r[1]) for r in rows)
    except (OSError, ValueError, IndexError) as e:
        raise MXNetError(f"ImageRecordIter: cannot read the index {path!r}: {e}") from None


def _read_imglist(path: str, width: int) -> dict:
    labels = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if not parts:
                    continue
                if len(parts) < 1 + width:
                    raise MXNetError(f"ImageRecordIter: bad image list line in {path!r}: "
                                     f"{line.strip()!r}")
                labels[int(float(parts[0]))] = np.array(parts[1:1 + width], np.float32)
    except OSError as e:
        raise MXNetError(f"ImageRecordIter: cannot read {path!r}: {e}") from None
    return labels


class ImageRecordIter(DataIter):
    """Batches of augmented, normalised images from a RecordIO file (see the module doc);
    keywords as MXNet 1.9.1's ``mx.io.ImageRecordIter``."""

    _default_dtype = "float32"

    def __init__(self, **kwargs):
        name = type(self).__name__
        p = _parse(kwargs, name)
        super().__init__(p["batch_size"])
        self.p = p
        dtype = p["dtype"] or self._default_dtype
        if dtype not in ("float32", "uint8", "int8"):
            raise MXNetError(f"{name}: dtype {dtype!r} is not supported (float32, uint8, int8)")
        unused = _NORMALIZE if dtype == "uint8" else _NORMALIZE[4:] if dtype == "int8" else ()
        for k in unused:
            if k in kwargs and p[k] != _PARAMS[k][0]:
                raise MXNetError(f"{name}: {k} has no effect on {dtype} output")
        self.dtype = np.dtype(dtype)
        self.aug = DefaultAugmenter(p)
        self.path = p["path_imgrec"]
        n, k = p["num_parts"], p["part_index"]
        if p["path_imgidx"]:
            offs = _read_index(p["path_imgidx"])
            step = (len(offs) + n - 1) // n
            self.offsets = offs[min(k * step, len(offs)):min((k + 1) * step, len(offs))]
        else:
            offs, size = _record_offsets(self.path)
            step = (size + n - 1) // n
            step = (step + 3) // 4 * 4
            lo, hi = min(k * step, size), min((k + 1) * step, size)
            self.offsets = [o for o in offs if lo <= o < hi]
        self.labels = _read_imglist(p["path_imglist"], p["label_width"]) \
            if p["path_imglist"] else None
        self._order_rng = np.random.RandomState(_RAND_MAGIC + p["seed"])
        self._aug_rng = np.random.RandomState(_RAND_MAGIC)
        c, h, w = p["data_shape"]
        self.provide_data = [DataDesc(p["data_name"], (self.batch_size, c, h, w),
                                      self.dtype.type)]
        lshape = (self.batch_size,) if p["label_width"] == 1 else \
            (self.batch_size, p["label_width"])
        self.provide_label = [DataDesc(p["label_name"], lshape, np.float32)]
        self.meanimg = None
        self._file = open(self.path, "rb")  # noqa: SIM115 (lives as long as the iterator)
        self._new_pass()
        self._overflow = False
        self._batch = None
        if p["mean_img"] and self.dtype != np.uint8:
            self._load_or_make_mean(p["mean_img"])

    # ----- order -----
    def _new_pass(self) -> None:
        order = np.arange(len(self.offsets))
        if self.p["shuffle"]:
            self._order_rng.shuffle(order)
        self._order, self._pos = order, 0

    def reset(self) -> None:
        if self._overflow and self.p["round_batch"]:
            self._overflow = False       # continue after the examples that filled the pad
        else:
            self._overflow = False
            self._new_pass()

    # ----- one record -----
    def _load(self, i: int):
        self._file.seek(self.offsets[i])
        rec = read_record(self._file, self.path)
        header, payload = unpack(rec)
        c = self.p["data_shape"][0]
        img = decode(payload, flag={1: 0, 3: 1, 4: -1}[c], to_rgb=False)
        if img.ndim == 2:
            img = img[:, :, None]
        if img.shape[2] != c:
            raise MXNetError(f"{type(self).__name__}: image with index {header.id} has "
                             f"{img.shape[2]} channels, data_shape asks for {c}")
        width = self.p["label_width"]
        if self.labels is not None:
            if int(header.id) not in self.labels:
                raise MXNetError(f"ImageRecordIter: no label in path_imglist for image "
                                 f"{header.id}")
            label = self.labels[int(header.id)]
        elif header.flag > 0:
            if header.flag != width:
                raise MXNetError(f"ImageRecordIter: rec file provides {header.flag}-dimensional "
                                 f"labels but label_width is {width}")
            label = np.asarray(header.label, np.float32)
        else:
            if width != 1:
                raise MXNetError("ImageRecordIter: label_width must be 1 unless an imglist is "
                                 "provided or the rec file is packed with vector labels")
            label = np.array([header.label], np.float32)
        return img, label, int(header.id)

    def _process(self, img: np.ndarray, slot: int) -> np.ndarray:
        p = self.p
        rng = self._aug_rng
        if p["seed_aug"] is not None:
            rng = np.random.RandomState((slot + p["seed_aug"] + _RAND_MAGIC) % 2**32)
        img = self.aug(img, rng)
        flip = (p["rand_mirror"] and rng.uniform() < 0.5) or p["mirror"]
        c = img.shape[2]
        if c >= 3:                           # BGR(A) -> RGB(A)
            img = np.concatenate([img[:, :, 2::-1], img[:, :, 3:]], axis=2)
        chw = img.transpose(2, 0, 1)
        if self.dtype == np.uint8:
            out = chw
        elif self.dtype == np.int8:
            mean = np.rint(self.meanimg) if self.meanimg is not None else \
                np.rint(self._means(c))[:, None, None]
            out = np.clip(chw.astype(np.int16) - mean.astype(np.int16), -128, 127)
        else:
            mc, mi = p["max_random_contrast"], p["max_random_illumination"]
            contrast = np.float32((rng.uniform() * mc * 2 - mc + 1) * p["scale"])
            illum = np.float32((rng.uniform() * mi * 2 - mi) * p["scale"])
            std = np.array([p["std_r"], p["std_g"], p["std_b"], p["std_a"]][:c], np.float32)
            if c == 1:
                std = np.array([p["std_r"]], np.float32)
            mult, bias = (contrast / std)[:, None, None], (illum / std)[:, None, None]
            mean = self.meanimg if self.meanimg is not None else self._means(c)[:, None, None]
            out = (chw.astype(np.float32) - mean) * mult + bias
        if flip:
            out = out[:, :, ::-1]
        return out.astype(self.dtype)

    def _means(self, c: int) -> np.ndarray:
        p = self.p
        return np.array([p["mean_r"], p["mean_g"], p["mean_b"], p["mean_a"]][:c], np.float32)

    def _load_or_make_mean(self, path: str) -> None:
        if os.path.exists(path):
            arrs = nd.load(path)
            arrs = list(arrs.values()) if isinstance(arrs, dict) else list(arrs)
            if len(arrs) != 1:
                raise MXNetError(f"ImageRecordIter: invalid mean image file {path!r}")
            mean = arrs[0].asnumpy().astype(np.float32)
            if mean.shape != tuple(self.p["data_shape"]):
                raise MXNetError(f"ImageRecordIter: mean image {path!r} has shape {mean.shape}, "
                                 f"data_shape is {self.p['data_shape']}")
            self.meanimg = mean
            return
        total, count = None, 0      # MXNet: the mean of one pass's outputs, saved to path
        for i in range(len(self.offsets)):
            img = self._process(self._load(i)[0], i).astype(np.float32)
            total = img if total is None else total + img
            count += 1
        if count == 0:
            raise MXNetError(f"ImageRecordIter: no images to compute mean image {path!r}")
        self.meanimg = total / np.float32(count)
        nd.save(path, {"mean_img": nd.array(self.meanimg)})
        self.reset()

    # ----- batches -----
    def iter_next(self) -> bool:
        if self._overflow or not len(self.offsets):
            return False
        bs, p = self.batch_size, self.p
        if self._pos >= len(self._order):
            return False
        data = np.zeros(self.provide_data[0].shape, self.dtype)
        label = np.zeros((bs, p["label_width"]), np.float32)
        index = np.zeros(bs, np.uint64)
        pad = 0
        for slot in range(bs):
            if self._pos >= len(self._order):
                if not p["round_batch"]:
                    pad = bs - slot
                    break
                if self._overflow:
                    raise MXNetError(f"{type(self).__name__}: the number of images "
                                     f"({len(self.offsets)}) must be bigger than the batch "
                                     f"size ({bs})")
                pad, self._overflow = bs - slot, True
                self._new_pass()          # round_batch: fill from the start of the next pass
            img, lab, idx = self._load(int(self._order[self._pos]))
            self._pos += 1
            data[slot] = self._process(img, slot)
            label[slot], index[slot] = lab, idx
        lab = label[:, 0] if p["label_width"] == 1 else label
        self._batch = DataBatch([nd.array(data, dtype=self.dtype)],
                                [nd.array(lab, dtype=np.float32)], pad=pad, index=index,
                                provide_data=self.provide_data,
                                provide_label=self.provide_label)
        return True

    def next(self) -> DataBatch:
        if self.iter_next():
            return self._batch
        raise StopIteration

    def getdata(self):
        return self._batch.data

    def getlabel(self):
        return self._batch.label

    def getindex(self):
        return self._batch.index

    def getpad(self):
        return self._batch.pad

    def __del__(self):
        f = getattr(self, "_file", None)
        if f is not None:
            f.close()


class ImageRecordUInt8Iter(ImageRecordIter):
    """``ImageRecordIter`` with ``uint8`` output (augmented, not normalised)."""

    _default_dtype = "uint8"


class ImageRecordInt8Iter(ImageRecordIter):
    """``ImageRecordIter`` with ``int8`` output (``pixel - round(mean)``, saturated)."""

    _default_dtype = "int8"
