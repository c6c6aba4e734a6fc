"""Vision datasets (``mx.gluon.data.vision``) read from local files; ember never downloads.

MNIST and Fashion-MNIST are read from IDX files (gzip or plain), CIFAR-10/100 from the
binary or python-pickle batches (or the archive holding them). When no file is found the
error lists every directory searched and how to get the data.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import warnings

import numpy as np

from ember import image_codec, recordio
from ember.base import MXNetError
from ember.ndarray import NDArray

from ..dataset import Dataset, RecordFileDataset, _DownloadedDataset

__all__ = ["MNIST", "FashionMNIST", "CIFAR10", "CIFAR100", "ImageFolderDataset",
           "ImageRecordDataset"]

# Debian ships datasets under /usr/share/datasets/<name> (dataset-fashion-mnist); there is no
# MNIST or CIFAR package.
_SYSTEM_DIRS = {"fashion-mnist": ["/usr/share/datasets/fashion-mnist"]}
_HOW_TO = {
    "mnist": "copy the four IDX files (train-images-idx3-ubyte.gz, ...) into one of them or "
             "pass root= a directory holding them",
    "fashion-mnist": "run `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), copy the "
                     "IDX files into one of them, or pass root= a directory holding them",
    "cifar10": "put the CIFAR-10 binary (data_batch_1.bin ... test_batch.bin) or python "
               "(data_batch_1 ... test_batch) batches, or cifar-10-binary.tar.gz / "
               "cifar-10-python.tar.gz, into one of them or pass root= that directory",
    "cifar100": "put the CIFAR-100 binary (train.bin, test.bin) or python (train, test) files, "
                "or cifar-100-binary.tar.gz / cifar-100-python.tar.gz, into one of them or "
                "pass root= that directory",
}


def search_dirs(namespace: str, root: str | None) -> list[str]:
    """Where a dataset is looked for, in order: ``root``, ``$EMBER_DATA/<namespace>``,
    ``$MXNET_HOME/datasets/<namespace>``, ``~/.mxnet/datasets/<namespace>``, system dirs."""
    dirs = [os.path.expanduser(root)] if root is not None else []
    if os.environ.get("EMBER_DATA"):
        dirs.append(os.path.join(os.path.expanduser(os.environ["EMBER_DATA"]), namespace))
    if os.environ.get("MXNET_HOME"):
        dirs.append(os.path.join(os.path.expanduser(os.environ["MXNET_HOME"]), "datasets",
                                 namespace))
    dirs.append(os.path.join(os.path.expanduser("~"), ".mxnet", "datasets", namespace))
    dirs.extend(_SYSTEM_DIRS.get(namespace, []))
    return list(dict.fromkeys(dirs))


def _missing(cls_name: str, namespace: str, wanted: list[str], dirs: list[str]) -> MXNetError:
    where = "\n".join(f"  {d}" for d in dirs)
    return MXNetError(f"{cls_name}: cannot find {', '.join(wanted)} in any of:\n{where}\n"
                      f"ember does not download data sets: {_HOW_TO[namespace]}.")


def _find(dirs: list[str], names: list[str]) -> str | None:
    for d in dirs:
        for name in names:
            path = os.path.join(d, name)
            if os.path.isfile(path):
                return path
    return None


# ---- IDX (MNIST, Fashion-MNIST) ------------------------------------------------------------
def read_idx(path: str, ndim: int) -> np.ndarray:
    """A uint8 IDX file (gzip or plain) as an array, its magic number and sizes checked."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise MXNetError(f"{path}: cannot read the IDX file: {e}") from None
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise MXNetError(f"{path}: corrupt IDX file: {len(raw)} bytes, shorter than its header")
    magic = int.from_bytes(raw[:4], "big")
    if magic != 0x0800 + ndim:
        raise MXNetError(f"{path}: corrupt IDX file: magic number 0x{magic:08x}, expected "
                         f"0x{0x0800 + ndim:08x} (unsigned bytes, {ndim} dimensions)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape, dtype=np.int64))
    if len(raw) - head != size:
        raise MXNetError(f"{path}: corrupt IDX file: header says shape {shape} "
                         f"({size} bytes) but {len(raw) - head} data bytes follow")
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(shape)


class MNIST(_DownloadedDataset):
    """MNIST handwritten digits: samples ``(image, label)``, the image a uint8 NDArray of
    shape (28, 28, 1), the label an int32.

    ``root`` is searched first, then ``$EMBER_DATA/mnist``, ``$MXNET_HOME/datasets/mnist`` and
    ``~/.mxnet/datasets/mnist``; files may be gzipped or not. ``transform(data, label)``, if
    given, is applied to each sample.
    """

    _namespace = "mnist"
    _files = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

    def __init__(self, root: str | None = None, train: bool = True, transform=None):
        self._train = train
        super().__init__(root, transform)

    def _get_data(self):
        dirs = search_dirs(self._namespace, self._root)
        paths = []
        for name in self._files[bool(self._train)]:
            path = _find(dirs, [name + ".gz", name])
            if path is None:
                raise _missing(type(self).__name__, self._namespace, [name + "[.gz]"], dirs)
            paths.append(path)
        data, label = read_idx(paths[0], 3), read_idx(paths[1], 1)
        if data.shape[0] != label.shape[0]:
            raise MXNetError(f"{paths[0]} holds {data.shape[0]} images but {paths[1]} holds "
                             f"{label.shape[0]} labels")
        self._data = NDArray(np.array(data[..., None]))  # a writable copy
        self._label = label.astype(np.int32)
        self._paths = paths


class FashionMNIST(MNIST):
    """Zalando's Fashion-MNIST, a drop-in replacement of MNIST (same files and layout).

    Besides ``root`` it searches ``$EMBER_DATA/fashion-mnist``,
    ``~/.mxnet/datasets/fashion-mnist`` and ``/usr/share/datasets/fashion-mnist`` (Debian's
    ``dataset-fashion-mnist`` package).
    """

    _namespace = "fashion-mnist"


# ---- CIFAR -----------------------------------------------------------------------------------
class CIFAR10(_DownloadedDataset):
    """CIFAR-10: samples ``(image, label)``, the image a uint8 NDArray (32, 32, 3), the label
    an int32. Reads the binary batches (``data_batch_1.bin`` ...), the python batches
    (``data_batch_1`` ...) or the archive holding either, under ``root`` or the usual dirs."""

    _namespace = "cifar10"
    _subdirs = ("", "cifar-10-batches-bin", "cifar-10-batches-py")
    _archives = ("cifar-10-binary.tar.gz", "cifar-10-python.tar.gz")
    _bin = {True: [f"data_batch_{i}.bin" for i in range(1, 6)], False: ["test_batch.bin"]}
    _py = {True: [f"data_batch_{i}" for i in range(1, 6)], False: ["test_batch"]}
    _label_bytes, _label_col, _py_key = 1, 0, b"labels"  # CIFAR-100 overrides these

    def __init__(self, root: str | None = None, train: bool = True, transform=None):
        self._train = train
        super().__init__(root, transform)

    def _read_bin(self, raw: bytes, name: str):
        width = 3072 + self._label_bytes
        if len(raw) % width:
            raise MXNetError(f"{name}: corrupt CIFAR binary batch: {len(raw)} bytes is not a "
                             f"multiple of the {width}-byte record")
        data = np.frombuffer(raw, dtype=np.uint8).reshape(-1, width)
        return (data[:, self._label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1),
                data[:, self._label_col].astype(np.int32))

    def _read_py(self, raw: bytes, name: str):
        try:
            d = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
            data = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            label = np.asarray(d[self._py_key], dtype=np.int32)
        except Exception as e:
            raise MXNetError(f"{name}: corrupt CIFAR python batch: {e}") from None
        return data.transpose(0, 2, 3, 1), label

    def _get_data(self):
        dirs = search_dirs(self._namespace, self._root)
        train = bool(self._train)
        parts = None
        for d in dirs:
            for sub in self._subdirs:
                parts = (self._load_files(os.path.join(d, sub), self._bin[train], self._read_bin)
                         or self._load_files(os.path.join(d, sub), self._py[train],
                                             self._read_py))
                if parts:
                    break
            if not parts:
                parts = self._load_archive(d, train)
            if parts:
                break
        if not parts:
            wanted = self._bin[train] + self._py[train] + list(self._archives)
            raise _missing(type(self).__name__, self._namespace, wanted, dirs)
        data, label = zip(*parts)
        self._data = NDArray(np.ascontiguousarray(np.concatenate(data)))
        self._label = np.concatenate(label)

    @staticmethod
    def _load_files(d, names, reader):
        paths = [os.path.join(d, n) for n in names]
        if not all(os.path.isfile(p) for p in paths):
            return None
        out = []
        for p in paths:
            with open(p, "rb") as f:
                out.append(reader(f.read(), p))
        return out

    def _load_archive(self, d, train):
        for arc in self._archives:
            path = os.path.join(d, arc)
            if not os.path.isfile(path):
                continue
            binary = "binary" in arc
            names, reader = (self._bin if binary else self._py)[train], (
                self._read_bin if binary else self._read_py)
            try:
                with tarfile.open(path) as tar:
                    members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
                    if not all(n in members for n in names):
                        raise MXNetError(f"{path}: archive lacks {names}")
                    return [reader(tar.extractfile(members[n]).read(), f"{path}:{n}")
                            for n in names]
            except (tarfile.TarError, OSError, EOFError) as e:
                raise MXNetError(f"{path}: cannot read the archive: {e}") from None
        return None


class CIFAR100(CIFAR10):
    """CIFAR-100; ``fine_label=True`` gives the 100 classes, else the 20 superclasses."""

    _namespace = "cifar100"
    _subdirs = ("", "cifar-100-binary", "cifar-100-python")
    _archives = ("cifar-100-binary.tar.gz", "cifar-100-python.tar.gz")
    _bin = {True: ["train.bin"], False: ["test.bin"]}
    _py = {True: ["train"], False: ["test"]}
    _label_bytes = 2

    def __init__(self, root: str | None = None, fine_label: bool = False, train: bool = True,
                 transform=None):
        self._fine_label = fine_label
        self._label_col = 1 if fine_label else 0
        self._py_key = b"fine_labels" if fine_label else b"coarse_labels"
        super().__init__(root, train, transform)


class _ArrayUnpickler(pickle.Unpickler):
    """Reads CIFAR's python batches (dicts of lists and NumPy arrays) and nothing else: the
    only callables a batch may name are NumPy's array reconstruction, so a crafted file can
    not make this run code (docs/trust.md)."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"),
                ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")
        if module.startswith("numpy.core."):  # NumPy 1's name of numpy._core
            module = "numpy._core." + module[len("numpy.core."):]
        return super().find_class(module, name)


# ---- image folders ---------------------------------------------------------------------------
class ImageFolderDataset(Dataset):
    """Images in one sub-folder per class (``root/car/0001.jpg``): samples ``(image, label)``
    with the image a uint8 HWC NDArray (``flag=0``: 1 gray channel; 1: RGB). Decoding needs
    Pillow. ``synsets[i]`` names class ``i``; ``items`` lists (filename, label) pairs.
    """

    def __init__(self, root: str, flag: int = 1, transform=None):
        image_codec.require()
        self._root = os.path.expanduser(root)
        self._flag, self._transform = flag, transform
        self._exts = [".jpg", ".jpeg", ".png"]
        self.synsets: list[str] = []
        self.items: list[tuple[str, int]] = []
        for folder in sorted(os.listdir(self._root)):
            path = os.path.join(self._root, folder)
            if not os.path.isdir(path):
                warnings.warn(f"Ignoring {path}, which is not a directory.", stacklevel=2)
                continue
            label = len(self.synsets)
            self.synsets.append(folder)
            for filename in sorted(os.listdir(path)):
                filename = os.path.join(path, filename)
                ext = os.path.splitext(filename)[1]
                if ext.lower() not in self._exts:
                    warnings.warn(f"Ignoring {filename} of type {ext}. Only support "
                                  f"{', '.join(self._exts)}", stacklevel=2)
                    continue
                self.items.append((filename, label))

    def __getitem__(self, idx):
        filename, label = self.items[idx]
        with open(filename, "rb") as f:
            img = NDArray(image_codec.decode(f.read(), flag=1 if self._flag else 0))
        if self._transform is not None:
            return self._transform(img, label)
        return img, label

    def __len__(self) -> int:
        return len(self.items)


class ImageRecordDataset(RecordFileDataset):
    """Images in a RecordIO file (what MXNet's ``im2rec`` writes): samples ``(image,
    label)`` with the image decoded to a uint8 HWC NDArray (``flag`` 1: RGB, 0: gray) and the
    label from the record's header (a float, or an array for a vector label)."""

    def __init__(self, filename: str, flag: int = 1, transform=None):
        image_codec.require()
        super().__init__(filename)
        self._flag, self._transform = flag, transform

    def __getitem__(self, idx):
        header, img = recordio.unpack(super().__getitem__(idx))
        try:
            img = NDArray(image_codec.decode(img, flag=1 if self._flag else 0))
        except MXNetError as e:
            raise MXNetError(f"{self.filename}: record {self.keys[idx]}: {e}") from None
        if self._transform is not None:
            return self._transform(img, header.label)
        return img, header.label
