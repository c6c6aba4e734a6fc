"""Data helpers of ``mx.test_utils`` (``ember.test_utils`` re-exports them).

MXNet's versions download MNIST, CIFAR and model files; ember never downloads at run time,
so these read local files (``path=``) or raise an ``MXNetError`` that says so.
"""
from __future__ import annotations

import os

import numpy as np

from ember.base import MXNetError


class DummyIter:
    """Yields the first batch of ``real_iter`` forever (for speed tests without I/O)."""

    def __init__(self, real_iter):
        self.real_iter = real_iter
        self.provide_data = real_iter.provide_data
        self.provide_label = real_iter.provide_label
        self.batch_size = real_iter.batch_size
        self.the_batch = next(iter(real_iter))

    def __iter__(self):
        return self

    def __next__(self):
        return self.the_batch

    next = __next__


def get_im2rec_path(home_env="MXNET_HOME"):
    """MXNet's im2rec tool is not part of ember: use ``ember.recordio`` to write .rec files."""
    raise MXNetError("ember has no im2rec.py; write RecordIO files with mx.recordio "
                     "(MXIndexedRecordIO + pack_img)")


def _no_download(what: str):
    raise MXNetError(f"{what}: ember never downloads at run time; put the files in a local "
                     "directory and read them from there (e.g. gluon.data.vision.MNIST(root=))")


def download(url, fname=None, dirname=None, overwrite=False, retries=5):
    """Refuses: ember never downloads (returns the local path when the file is there)."""
    path = os.path.join(dirname or ".", fname or url.split("/")[-1])
    if os.path.exists(path) and not overwrite:
        return path
    _no_download(f"download({url!r})")


def download_model(model_name, dst_dir="./", meta_info=None):
    _no_download(f"download_model({model_name!r})")


def get_mnist(path="data"):
    """MNIST from local IDX files under ``path`` as MXNet's dict of arrays."""
    from ember.gluon.data.vision import MNIST
    out = {}
    for split, train in (("train", True), ("test", False)):
        ds = MNIST(root=path, train=train)
        out[f"{split}_data"] = (ds._data.asnumpy().reshape(-1, 1, 28, 28)
                                .astype(np.float32) / 255)
        out[f"{split}_label"] = np.asarray(ds._label, dtype=np.float32)
    return out


def get_mnist_pkl(path="data"):
    _no_download("get_mnist_pkl")


def get_mnist_ubyte(path="data"):
    """MNIST's IDX files must already be under ``path`` (never downloaded)."""
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]
    missing = [n for n in names if not os.path.exists(os.path.join(path, n))]
    if missing:
        _no_download(f"get_mnist_ubyte: {missing} not in {path!r}")


def get_cifar10(path="data"):
    _no_download("get_cifar10")


def get_mnist_iterator(batch_size, input_shape, num_parts=1, part_index=0, path="data"):
    """(train, val) NDArrayIters over local MNIST files under ``path``."""
    from ember.io import NDArrayIter
    d = get_mnist(path)
    shape = (-1, *input_shape)
    train = NDArrayIter(d["train_data"].reshape(shape), d["train_label"], batch_size,
                        shuffle=True)
    val = NDArrayIter(d["test_data"].reshape(shape), d["test_label"], batch_size)
    return train, val


def get_zip_data(data_dir, url, data_origin_name):
    _no_download(f"get_zip_data({url!r})")


def get_bz2_data(data_dir, data_name, url, data_origin_name):
    _no_download(f"get_bz2_data({url!r})")
