"""``mx.image.ImageDetIter``: ``ImageIter`` for object detection (boxes move with the image).

Labels are batched as (batch, max objects, object width), rows past an image's objects
filled with -1; the object count is estimated by reading every label once at construction,
and ``sync_label_shape`` widens a train and a validation iterator to the same count.
"""
from __future__ import annotations

import logging
import warnings

import numpy as np

from .. import ndarray as nd
from .augmenters import MEAN_RGB, STD_RGB
from .detection import CreateDetAugmenter
from .image_iter import ImageIter

__all__ = ["ImageDetIter"]


class ImageDetIter(ImageIter):
    """Detection iterator: ``ImageIter``'s sources and batching; ``kwargs`` go to
    ``CreateDetAugmenter`` unless ``aug_list`` (of ``DetAugmenter``) is given."""

    def __init__(self, batch_size, data_shape, path_imgrec=None, path_imglist=None,
                 path_root=None, path_imgidx=None, shuffle=False, part_index=0, num_parts=1,
                 aug_list=None, imglist=None, data_name="data", label_name="label",
                 last_batch_handle="pad", **kwargs):
        super().__init__(batch_size=batch_size, data_shape=data_shape, path_imgrec=path_imgrec,
                         path_imglist=path_imglist, path_root=path_root,
                         path_imgidx=path_imgidx, shuffle=shuffle, part_index=part_index,
                         num_parts=num_parts, aug_list=[], imglist=imglist,
                         data_name=data_name, label_name=label_name,
                         last_batch_handle=last_batch_handle)
        self.auglist = CreateDetAugmenter(data_shape, **kwargs) if aug_list is None else aug_list
        label_shape = self._estimate_label_shape()
        self.provide_label = [(label_name, (self.batch_size, label_shape[0], label_shape[1]))]
        self.label_shape = label_shape

    def _check_valid_label(self, label):
        if len(label.shape) != 2 or label.shape[1] < 5:
            raise RuntimeError(f"Label with shape (1+, 5+) required, {label} received.")
        # MXNet passes the ymax > ymin test as logical_and's ``out``: only these two count
        valid = np.where(np.logical_and(label[:, 0] >= 0, label[:, 3] > label[:, 1]))[0]
        if valid.size < 1:
            raise RuntimeError("Invalid label occurs.")

    def _estimate_label_shape(self):
        max_count, label = 0, None
        self.reset()
        try:
            while True:
                label, _ = self.next_sample()
                label = self._parse_label(label)
                max_count = max(max_count, label.shape[0])
        except StopIteration:
            pass
        self.reset()
        return (max_count, label.shape[1] if label is not None else 5)

    def _parse_label(self, label):
        """Flat raw label -> (objects, width) array of the valid boxes."""
        if isinstance(label, nd.NDArray):
            label = label.asnumpy()
        raw = np.asarray(label).ravel()
        if raw.size < 7:
            raise RuntimeError("Label shape is invalid: " + str(raw.shape))
        header_width, obj_width = int(raw[0]), int(raw[1])
        if obj_width <= 0 or (raw.size - header_width) % obj_width != 0:
            raise RuntimeError(f"Label shape {raw.shape} inconsistent with annotation width "
                               f"{obj_width}.")
        out = np.reshape(raw[header_width:], (-1, obj_width))
        valid = np.where(np.logical_and(out[:, 3] > out[:, 1], out[:, 4] > out[:, 2]))[0]
        if valid.size < 1:
            raise RuntimeError("Encounter sample with no valid label.")
        return out[valid, :]

    def reshape(self, data_shape=None, label_shape=None):
        """Change the data shape (C, H, W) and/or the label shape (objects, width)."""
        if data_shape is not None:
            self.check_data_shape(data_shape)
            self.provide_data = [(self.provide_data[0][0], (self.batch_size,) + data_shape)]
            self.data_shape = data_shape
        if label_shape is not None:
            self.check_label_shape(label_shape)
            self.provide_label = [(self.provide_label[0][0], (self.batch_size,) + label_shape)]
            self.label_shape = label_shape

    def _batchify(self, batch_data, batch_label, start=0):
        i = start
        try:
            while i < self.batch_size:
                label, s = self.next_sample()
                data = self.imdecode(s)
                try:
                    self.check_valid_image([data])
                    label = self._parse_label(label)
                    data, label = self.augmentation_transform(data, label)
                    self._check_valid_label(label)
                except RuntimeError as e:
                    logging.debug("Invalid image, skipping:  %s", str(e))
                    continue
                batch_data[i] = self.postprocess_data(data)
                num_object = label.shape[0]
                batch_label[i][0:num_object] = nd.array(label)
                if num_object < batch_label[i].shape[0]:
                    batch_label[i][num_object:] = -1
                i += 1
        except StopIteration:
            if not i:
                raise
        return i

    def _empty_labels(self):
        """A new batch's labels, every row -1 until an object fills it."""
        batch_label = super()._empty_labels()
        batch_label[:] = -1
        return batch_label

    def augmentation_transform(self, data, label):
        """Apply the detection augmenters in order."""
        for aug in self.auglist:
            data, label = aug(data, label)
        return data, label

    def check_label_shape(self, label_shape):
        """A new label shape may add objects, not remove them or change their width."""
        if not len(label_shape) == 2:
            raise ValueError("label_shape should have length 2")
        if label_shape[0] < self.label_shape[0]:
            raise ValueError(f"Attempts to reduce label count from {self.label_shape[0]} to "
                             f"{label_shape[0]}, not allowed.")
        if label_shape[1] != self.provide_label[0][1][2]:
            raise ValueError("label_shape object width inconsistent: "
                             f"{self.provide_label[0][1][2]} vs {label_shape[1]}.")

    def draw_next(self, color=None, thickness=2, mean=None, std=None, clip=True,
                  waitKey=None, window_name="draw_next", id2labels=None):
        """Yield the next augmented images (uint8 HxWx3, BGR as MXNet's) with their boxes
        drawn as rectangles. ember opens no windows and writes no class names: ``waitKey``
        and ``id2labels`` are accepted and ignored with a warning."""
        if waitKey is not None or id2labels is not None:
            warnings.warn("draw_next: ember draws boxes only; it shows no window and writes "
                          "no class names", stacklevel=2)
        std = np.array(STD_RGB) if std is True else std
        mean = np.array(MEAN_RGB) if mean is True else mean
        while True:
            try:
                label, s = self.next_sample()
            except StopIteration:
                return
            data = self.imdecode(s)
            try:
                self.check_valid_image([data])
                label = self._parse_label(label)
            except RuntimeError as e:
                logging.debug("Invalid image, skipping:  %s", str(e))
                continue
            data, label = self.augmentation_transform(data, label)
            image = data.asnumpy().astype(np.float64)
            if std is not None:
                image *= std
            if mean is not None:
                image += mean
            image = image[:, :, (2, 1, 0)]
            if clip:
                image = np.clip(image, 0, 255)
            image = np.ascontiguousarray(image.astype(np.uint8))
            _draw_boxes(image, label, color, thickness)
            yield image

    def sync_label_shape(self, it, verbose=False):
        """Give this iterator and ``it`` the same (larger) label object count; returns ``it``."""
        assert isinstance(it, ImageDetIter), "Synchronize with invalid iterator."
        train_label_shape, val_label_shape = self.label_shape, it.label_shape
        assert train_label_shape[1] == val_label_shape[1], "object width mismatch."
        max_count = max(train_label_shape[0], val_label_shape[0])
        if max_count > train_label_shape[0]:
            self.reshape(None, (max_count, train_label_shape[1]))
        if max_count > val_label_shape[0]:
            it.reshape(None, (max_count, val_label_shape[1]))
        if verbose and max_count > min(train_label_shape[0], val_label_shape[0]):
            logging.info("Resized label_shape to (%d, %d).", max_count, train_label_shape[1])
        return it


def _draw_boxes(image, label, color, thickness):
    """Rectangles of ``thickness`` pixels for each box (colour BGR; random when None)."""
    height, width, _ = image.shape
    t = max(1, int(thickness))
    for row in label:
        x1 = int(row[1] * width)
        if x1 < 0:
            continue
        y1, x2, y2 = int(row[2] * height), int(row[3] * width), int(row[4] * height)
        bc = np.random.rand(3) * 255 if not color else np.asarray(color)[::-1]
        x1, x2 = sorted((min(max(x1, 0), width - 1), min(max(x2, 0), width - 1)))
        y1, y2 = sorted((min(max(y1, 0), height - 1), min(max(y2, 0), height - 1)))
        image[y1:min(y1 + t, y2 + 1), x1:x2 + 1] = bc
        image[max(y2 - t + 1, y1):y2 + 1, x1:x2 + 1] = bc
        image[y1:y2 + 1, x1:min(x1 + t, x2 + 1)] = bc
        image[y1:y2 + 1, max(x2 - t + 1, x1):x2 + 1] = bc
