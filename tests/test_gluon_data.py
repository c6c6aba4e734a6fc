"""ember.gluon.data: samplers, datasets (RecordIO, IDX, CIFAR) and the DataLoader."""
import gc
import glob
import gzip
import mmap
import multiprocessing
import os
import pickle
import struct
import time

import numpy as np
import pytest

import ember as mx
from ember.base import MXNetError
from ember.gluon import data as gdata
from ember.gluon.data import _workers as dl_workers
from ember.gluon.data.vision import datasets as vds


# ---- samplers ------------------------------------------------------------------------------
def test_sequential_and_random_sampler():
    assert list(gdata.SequentialSampler(4, start=3)) == [3, 4, 5, 6]
    assert len(gdata.SequentialSampler(4, 3)) == 4
    mx.random.seed(7)
    a = list(gdata.RandomSampler(20))
    b = list(gdata.RandomSampler(20))
    assert sorted(a) == list(range(20)) and sorted(b) == list(range(20)) and a != b
    mx.random.seed(7)
    assert list(gdata.RandomSampler(20)) == a


def test_batch_sampler_last_batch_modes():
    seq = gdata.SequentialSampler(10)
    keep = gdata.BatchSampler(seq, 3, "keep")
    assert list(keep) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]] and len(keep) == 4
    discard = gdata.BatchSampler(seq, 3, "discard")
    assert list(discard) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]] and len(discard) == 3
    roll = gdata.BatchSampler(seq, 3, "rollover")
    assert len(roll) == 3
    assert list(roll) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert len(roll) == 3  # (1 left over + 10) // 3
    assert list(roll) == [[9, 0, 1], [2, 3, 4], [5, 6, 7]]
    assert list(roll)[0] == [8, 9, 0]
    bad = gdata.BatchSampler(seq, 3, "nope")
    with pytest.raises(ValueError, match="last_batch must be one of"):
        list(bad)
    with pytest.raises(ValueError, match="last_batch must be one of"):
        len(bad)


# ---- datasets ------------------------------------------------------------------------------
def test_simple_and_array_dataset():
    ds = gdata.SimpleDataset([1, 2, 3])
    assert len(ds) == 3 and ds[1] == 2
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    ad = gdata.ArrayDataset(mx.nd.array(x), mx.nd.array([5, 6, 7, 8]), [9, 10, 11, 12])
    d, lab, extra = ad[2]
    assert isinstance(d, mx.nd.NDArray) and np.array_equal(d.asnumpy(), x[2])
    assert isinstance(lab, np.float32) and lab == 7  # 1-D NDArrays become NumPy
    assert extra == 11 and len(ad) == 4
    single = gdata.ArrayDataset(x)
    assert np.array_equal(single[1], x[1])
    with pytest.raises(AssertionError, match="same length"):
        gdata.ArrayDataset(x, [1, 2])


def test_dataset_views():
    ds = gdata.ArrayDataset(np.arange(10), np.arange(10) * 10)
    lazy = ds.transform(lambda a, b: (a + 1, b))
    assert lazy[3] == (4, 30)
    calls = []
    eager = ds.transform(lambda a, b: calls.append(a) or a, lazy=False)
    assert len(calls) == 10 and eager[4] == 4 and len(calls) == 10
    first = ds.transform_first(lambda a: -a)
    assert first[2] == (-2, 20)
    assert gdata.SimpleDataset([5, 6]).transform_first(lambda a: a * 2)[1] == 12
    evens = ds.filter(lambda s: s[0] % 2 == 0)
    assert len(evens) == 5 and evens[4] == (8, 80)
    shards = [ds.shard(3, i) for i in range(3)]
    assert [len(s) for s in shards] == [4, 3, 3]
    assert [s[0][0] for s in shards] == [0, 4, 7]
    assert len(ds.take(4)) == 4 and len(ds.take(None)) == 10 and len(ds.take(99)) == 10
    picked = ds.sample(gdata.BatchSampler(gdata.SequentialSampler(4), 2))
    assert len(picked) == 2
    with pytest.raises(TypeError, match="Invalid sampler"):
        ds.sample([1, 2])
    with pytest.raises(AssertionError):
        ds.shard(2, 2)


def _write_rec(path, records):
    """dmlc-core's writer: split payloads at aligned magic words, pad to 4 bytes."""
    magic = struct.pack("<I", 0xCED7230A)
    with open(path, "wb") as f, open(path[:-4] + ".idx", "w") as fidx:
        for key, rec in records:
            fidx.write(f"{key}\t{f.tell()}\n")
            start = 0
            for i in range(0, len(rec) - len(rec) % 4, 4):
                if rec[i:i + 4] == magic:
                    f.write(magic + struct.pack("<I", ((1 if start == 0 else 2) << 29)
                                                | (i - start)) + rec[start:i])
                    start = i + 4
            f.write(magic + struct.pack("<I", ((3 if start else 0) << 29) | (len(rec) - start)))
            f.write(rec[start:] + b"\0" * (-len(rec) % 4))


def test_record_file_dataset(tmp_path):
    magic = struct.pack("<I", 0xCED7230A)
    records = [(0, b"hello"), (7, b""), (3, b"abcd" + magic + b"efgh" + magic + b"xy"),
               (9, bytes(range(256)) * 3)]
    path = str(tmp_path / "d.rec")
    _write_rec(path, records)
    ds = gdata.RecordFileDataset(path)
    assert len(ds) == 4 and ds.keys == [0, 7, 3, 9]
    assert [ds[i] for i in range(4)] == [r for _, r in records]
    assert ds.read_idx(3) == records[2][1]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone[3] == records[3][1]
    loader = gdata.DataLoader(ds, batch_size=2, num_workers=2, batchify_fn=list)
    assert [r for b in loader for r in b] == [r for _, r in records]
    with open(path, "r+b") as f:  # break the second record's magic word
        f.seek(int(open(path[:-4] + ".idx").read().split()[3]))
        f.write(b"\0\0\0\0")
    with pytest.raises(MXNetError, match="invalid RecordIO magic"):
        gdata.RecordFileDataset(path)[1]
    with pytest.raises(MXNetError, match="does not exist"):
        gdata.RecordFileDataset(str(tmp_path / "none.rec"))


# ---- vision datasets ---------------------------------------------------------------------
def _idx_bytes(arr):
    head = struct.pack(">I", 0x0800 + arr.ndim) + b"".join(struct.pack(">I", s)
                                                           for s in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def _write_mnist(d, n, train=True, gz=True, rows=28, seed=0):
    rng = np.random.RandomState(seed)
    images = rng.randint(0, 256, size=(n, rows, rows)).astype(np.uint8)
    labels = rng.randint(0, 10, size=n).astype(np.uint8)
    pre = "train" if train else "t10k"
    os.makedirs(d, exist_ok=True)
    for name, arr in ((f"{pre}-images-idx3-ubyte", images), (f"{pre}-labels-idx1-ubyte", labels)):
        raw = _idx_bytes(arr)
        if gz:
            with gzip.open(os.path.join(d, name + ".gz"), "wb") as f:
                f.write(raw)
        else:
            with open(os.path.join(d, name), "wb") as f:
                f.write(raw)
    return images, labels


@pytest.fixture
def no_data_dirs(tmp_path, monkeypatch):
    """Point every default search place at empty temporary folders."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EMBER_DATA", str(tmp_path / "edata"))
    monkeypatch.delenv("MXNET_HOME", raising=False)
    monkeypatch.setattr(vds, "_SYSTEM_DIRS", {"fashion-mnist": [str(tmp_path / "sys")]})
    return tmp_path


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_reads_idx(no_data_dirs, gz):
    root = str(no_data_dirs / "m")
    images, labels = _write_mnist(root, 5, train=True, gz=gz)
    test_images, _ = _write_mnist(root, 3, train=False, gz=gz, seed=1)
    ds = gdata.vision.MNIST(root=root)
    assert len(ds) == 5
    img, lab = ds[2]
    assert isinstance(img, mx.nd.NDArray) and img.shape == (28, 28, 1) and img.dtype == np.uint8
    assert np.array_equal(img.asnumpy()[..., 0], images[2])
    assert lab == labels[2] and isinstance(lab, np.int32)
    test = gdata.vision.MNIST(root=root, train=False,
                              transform=lambda d, lab: (d.astype("float32") / 255, lab))
    timg, _ = test[1]
    assert timg.dtype == np.float32 and np.allclose(timg.asnumpy()[..., 0], test_images[1] / 255)


def test_fashion_mnist_search_order(no_data_dirs):
    images, _ = _write_mnist(str(no_data_dirs / "sys"), 2, seed=3)
    assert np.array_equal(gdata.vision.FashionMNIST()[1][0].asnumpy()[..., 0], images[1])
    images, _ = _write_mnist(str(no_data_dirs / "edata" / "fashion-mnist"), 3, seed=4)
    ds = gdata.vision.FashionMNIST()  # $EMBER_DATA comes before the system folder
    assert len(ds) == 3 and np.array_equal(ds[0][0].asnumpy()[..., 0], images[0])
    images, _ = _write_mnist(str(no_data_dirs / "home/.mxnet/datasets/fashion-mnist"), 4,
                             gz=False, seed=5)
    assert len(gdata.vision.FashionMNIST(root=str(no_data_dirs / "nothing-here"))) == 3


def test_mnist_missing_files_error(no_data_dirs):
    root = str(no_data_dirs / "empty")
    with pytest.raises(MXNetError) as e:
        gdata.vision.FashionMNIST(root=root)
    msg = str(e.value)
    for d in (root, str(no_data_dirs / "edata" / "fashion-mnist"),
              str(no_data_dirs / "home" / ".mxnet" / "datasets" / "fashion-mnist"),
              str(no_data_dirs / "sys")):
        assert d in msg
    assert "train-images-idx3-ubyte" in msg and "apt-get install dataset-fashion-mnist" in msg
    assert "root=" in msg
    with pytest.raises(MXNetError, match="does not download"):
        gdata.vision.MNIST(root=root, train=False)
    assert not os.path.exists(root)  # nothing created


def test_mnist_corrupt_files(no_data_dirs):
    root = str(no_data_dirs / "bad")
    _write_mnist(root, 4, gz=False)
    img_path = os.path.join(root, "train-images-idx3-ubyte")
    raw = open(img_path, "rb").read()
    open(img_path, "wb").write(struct.pack(">I", 0x0801) + raw[4:])
    with pytest.raises(MXNetError, match="train-images-idx3-ubyte: corrupt IDX file: magic"):
        gdata.vision.MNIST(root=root)
    open(img_path, "wb").write(raw[:-5])
    with pytest.raises(MXNetError, match="train-images-idx3-ubyte: corrupt IDX.*4, 28, 28"):
        gdata.vision.MNIST(root=root)
    open(img_path, "wb").write(raw)
    lab_path = os.path.join(root, "train-labels-idx1-ubyte")
    open(lab_path, "wb").write(_idx_bytes(np.zeros(3)))
    with pytest.raises(MXNetError, match="4 images but .* 3 labels"):
        gdata.vision.MNIST(root=root)
    with open(os.path.join(root, "t10k-images-idx3-ubyte.gz"), "wb") as f:
        f.write(b"not gzip at all")
    _write_mnist(root, 1, train=False, gz=False)
    os.remove(os.path.join(root, "t10k-images-idx3-ubyte"))
    with pytest.raises(MXNetError, match="t10k-images-idx3-ubyte.gz: cannot read"):
        gdata.vision.MNIST(root=root, train=False)


def test_cifar10_binary_and_cifar100_python(no_data_dirs):
    rng = np.random.RandomState(0)
    root = no_data_dirs / "c10" / "cifar-10-batches-bin"
    root.mkdir(parents=True)
    expect = []
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        rows = rng.randint(0, 256, size=(2, 3073)).astype(np.uint8)
        rows[:, 0] %= 10
        (root / name).write_bytes(rows.tobytes())
        expect.append(rows)
    ds = gdata.vision.CIFAR10(root=str(no_data_dirs / "c10"))
    assert len(ds) == 10
    img, lab = ds[3]
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and isinstance(lab, np.int32)
    ref = expect[1][1]
    assert lab == ref[0] and np.array_equal(img.asnumpy(), ref[1:].reshape(3, 32, 32)
                                            .transpose(1, 2, 0))
    assert len(gdata.vision.CIFAR10(root=str(no_data_dirs / "c10"), train=False)) == 2

    d = no_data_dirs / "c100" / "cifar-100-python"
    d.mkdir(parents=True)
    pix = rng.randint(0, 256, size=(3, 3072)).astype(np.uint8)
    batch = {b"data": pix, b"fine_labels": [5, 77, 99], b"coarse_labels": [1, 2, 3]}
    (d / "train").write_bytes(pickle.dumps(batch))
    fine = gdata.vision.CIFAR100(root=str(no_data_dirs / "c100"), fine_label=True)
    coarse = gdata.vision.CIFAR100(root=str(no_data_dirs / "c100"))
    assert fine[1][1] == 77 and coarse[1][1] == 2
    assert np.array_equal(fine[2][0].asnumpy(), pix[2].reshape(3, 32, 32).transpose(1, 2, 0))
    with pytest.raises(MXNetError, match="test.bin"):
        gdata.vision.CIFAR100(root=str(no_data_dirs / "c100"), train=False)
    (d / "train").write_bytes(b"garbage")
    with pytest.raises(MXNetError, match="corrupt CIFAR python batch"):
        gdata.vision.CIFAR100(root=str(no_data_dirs / "c100"))


def test_image_folder_dataset(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    try:
        from PIL import Image
    except ImportError:
        with pytest.raises(MXNetError, match="needs Pillow"):
            gdata.vision.ImageFolderDataset(str(tmp_path))
        return
    img = np.random.RandomState(0).randint(0, 256, (5, 4, 3)).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "dog" / "a.png")
    ds = gdata.vision.ImageFolderDataset(str(tmp_path))
    assert ds.synsets == ["cat", "dog"] and len(ds) == 1
    x, lab = ds[0]
    assert lab == 1 and np.array_equal(x.asnumpy(), img)


# ---- DataLoader ------------------------------------------------------------------------------
def _dataset(n=37):
    x = np.random.RandomState(1).rand(n, 2, 3).astype(np.float32)
    return x, gdata.ArrayDataset(mx.nd.array(x), np.arange(n, dtype=np.int32))


def test_dataloader_argument_errors():
    _, ds = _dataset()
    with pytest.raises(ValueError, match="batch_size must be specified"):
        gdata.DataLoader(ds)
    with pytest.raises(ValueError, match="shuffle must not be specified"):
        gdata.DataLoader(ds, 4, shuffle=True, sampler=gdata.SequentialSampler(len(ds)))
    bs = gdata.BatchSampler(gdata.SequentialSampler(len(ds)), 4)
    for kw in ({"batch_size": 4}, {"shuffle": True}, {"last_batch": "keep"},
               {"sampler": gdata.SequentialSampler(3)}):
        with pytest.raises(ValueError, match="must not be specified if batch_sampler"):
            gdata.DataLoader(ds, batch_sampler=bs, **kw)
    with pytest.raises(AssertionError, match="timeout must be positive"):
        gdata.DataLoader(ds, 4, timeout=0)


@pytest.mark.parametrize("workers,threads", [(0, False), (2, False), (2, True)])
def test_dataloader_epochs_cover_every_index(workers, threads):
    x, ds = _dataset()
    loader = gdata.DataLoader(ds, batch_size=5, shuffle=True, num_workers=workers,
                              thread_pool=threads)
    assert len(loader) == 8
    orders = []
    for _ in range(2):
        seen = []
        for data, label in loader:
            assert isinstance(data, mx.nd.NDArray) and isinstance(label, mx.nd.NDArray)
            assert data.dtype == np.float32 and label.dtype == np.int32
            idx = label.asnumpy()
            assert np.array_equal(data.asnumpy(), x[idx])
            seen.extend(idx.tolist())
        assert sorted(seen) == list(range(37))
        orders.append(seen)
    assert orders[0] != orders[1]
    loader = gdata.DataLoader(ds, batch_size=5, last_batch="discard", num_workers=workers,
                              thread_pool=threads)
    assert [b[1].shape[0] for b in loader] == [5] * 7
    loader = gdata.DataLoader(ds, batch_size=5, last_batch="rollover", num_workers=workers,
                              thread_pool=threads)
    first = [b[1].asnumpy().tolist() for b in loader]
    second = [b[1].asnumpy().tolist() for b in loader]
    assert len(first) == 7 and second[0] == [35, 36, 0, 1, 2]


def test_default_batchify_dtypes():
    out = gdata.default_batchify_fn([(np.int32(1), 2, 0.5, np.ones(2, np.uint8))] * 3)
    assert [o.dtype for o in out] == [np.int32, np.int64, np.float64, np.uint8]
    assert out[3].shape == (3, 2)
    nd = gdata.default_batchify_fn([mx.nd.ones((2,)), mx.nd.zeros((2,))])
    assert np.array_equal(nd.asnumpy(), [[1, 1], [0, 0]])


def _pairs(samples):
    return [s[1] * 2 for s in samples]


@pytest.mark.parametrize("workers,threads", [(0, False), (2, False), (2, True)])
def test_dataloader_custom_batchify_and_numpy_leaves(workers, threads):
    _, ds = _dataset(10)
    loader = gdata.DataLoader(ds, batch_size=4, batchify_fn=_pairs, num_workers=workers,
                              thread_pool=threads)
    assert [b for b in loader] == [[0, 2, 4, 6], [8, 10, 12, 14], [16, 18]]
    arrays = gdata.DataLoader(gdata.SimpleDataset(list(range(6))), batch_size=3,
                              batchify_fn=lambda s: {"a": np.array(s), "n": len(s)},
                              num_workers=workers, thread_pool=threads)
    got = list(arrays)
    assert isinstance(got[1]["a"], np.ndarray) and got[1]["a"].tolist() == [3, 4, 5]
    assert got[0]["n"] == 3
    pinned = gdata.DataLoader(ds, batch_size=4, pin_memory=True, num_workers=workers,
                              thread_pool=threads)
    assert next(iter(pinned))[0].context == mx.cpu_pinned(0)


class _Boom(gdata.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, idx):
        if idx == 5:
            raise KeyError(f"sample {idx} is broken")
        return np.float32(idx)


@pytest.mark.parametrize("threads", [False, True])
def test_worker_exception_is_reraised(threads):
    loader = gdata.DataLoader(_Boom(), batch_size=2, num_workers=2, thread_pool=threads)
    got = []
    with pytest.raises(KeyError) as e:
        for b in loader:
            got.append(b.asnumpy().tolist())
    assert got == [[0, 1], [2, 3]]
    if not threads:  # the text carries the worker's traceback
        assert "DataLoader worker process" in str(e.value)
        assert "__getitem__" in str(e.value) and "sample 5 is broken" in str(e.value)
    assert len(list(gdata.DataLoader(_Boom().take(4), 2, num_workers=2))) == 2


class _Dies(gdata.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, idx):
        os._exit(3)


class _Slow(gdata.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, idx):
        time.sleep(1.0)
        return np.float32(idx)


def test_worker_death_and_timeout():
    with pytest.raises(MXNetError, match="exited unexpectedly with exit code 3"):
        list(gdata.DataLoader(_Dies(), batch_size=2, num_workers=1))
    with pytest.raises(multiprocessing.TimeoutError, match="timed out after 0.3"):
        list(gdata.DataLoader(_Slow(), batch_size=1, num_workers=1, timeout=0.3))


def _owner(arr):
    while isinstance(arr, np.ndarray):
        arr = arr.base
    return getattr(arr, "obj", arr)


def _ember_shm_files():
    return set(glob.glob(os.path.join(dl_workers._shm_dir(), "ember-dataloader-*")))


def test_workers_shut_down_and_shared_memory_is_freed():
    before = _ember_shm_files()
    x, ds = _dataset(40)
    loader = gdata.DataLoader(ds, batch_size=4, num_workers=2, prefetch=6)
    it = iter(loader)
    first = next(it)
    assert isinstance(_owner(first[0]._data), mmap.mmap)  # mapped, not unpickled
    assert isinstance(_owner(first[1]._data), mmap.mmap)
    pool = loader._worker_pool
    workers = list(pool._workers)
    assert all(w.is_alive() for w in workers)
    del it  # dropped mid-epoch: its in-flight batches are discarded
    gc.collect()
    batches = list(loader)  # the next epoch starts clean, on the same workers
    assert len(batches) == 10 and batches[0][1].asnumpy().tolist() == [0, 1, 2, 3]
    assert loader._worker_pool is pool and all(w.is_alive() for w in workers)
    assert np.array_equal(first[0].asnumpy(), x[:4])  # still readable (mapped, unlinked)
    del loader, pool, batches
    gc.collect()
    deadline = time.monotonic() + 5
    while any(w.is_alive() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(w.is_alive() for w in workers)
    assert _ember_shm_files() <= before


def test_auto_reload_prefetches():
    _, ds = _dataset(8)
    loader = gdata.DataLoader(ds, batch_size=4, num_workers=1, auto_reload=True)
    assert loader._iter is not None
    assert len(list(loader)) == 2 and loader._iter is not None
    assert len(list(loader)) == 2


# ---- transforms ------------------------------------------------------------------------------
T = gdata.vision.transforms


def _img(h=6, w=8, c=3, dtype=np.uint8, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (h, w, c)).astype(dtype)


def test_to_tensor_normalize_cast():
    x = _img()
    out = T.ToTensor()(mx.nd.array(x, dtype=np.uint8))
    assert out.dtype == np.float32 and out.shape == (3, 6, 8)
    assert np.allclose(out.asnumpy(), x.transpose(2, 0, 1) / 255.0)
    batch = T.ToTensor()(mx.nd.array(np.stack([x, x]), dtype=np.uint8))
    assert batch.shape == (2, 3, 6, 8)
    chw = out.asnumpy()
    norm = T.Normalize(mean=(0.1, 0.2, 0.3), std=(1.0, 2.0, 4.0))(out).asnumpy()
    ref = (chw - np.array([0.1, 0.2, 0.3])[:, None, None]) / np.array([1, 2, 4.0])[:, None, None]
    assert np.allclose(norm, ref, atol=1e-6)
    assert np.allclose(T.Normalize(0.5, 0.25)(out).asnumpy(), (chw - 0.5) / 0.25, atol=1e-6)
    with pytest.raises(MXNetError, match="mean must have either 1 or 3 elements"):
        T.Normalize(mean=(0.1, 0.2))(out)
    assert T.Cast("float16")(out).dtype == np.float16
    with pytest.raises(MXNetError, match="expected an NDArray"):
        T.ToTensor()([1, 2, 3])
    assert isinstance(T.ToTensor(), mx.gluon.HybridBlock)
    assert isinstance(T.CenterCrop(2), mx.gluon.Block)


def _bilinear_ref(x, h, w):
    H, W = x.shape[:2]
    out = np.zeros((h, w, x.shape[2]))
    for i in range(h):
        sy = min(max((i + 0.5) * H / h - 0.5, 0), H - 1)
        y0 = int(np.floor(sy))
        y1, fy = min(y0 + 1, H - 1), sy - y0
        for j in range(w):
            sx = min(max((j + 0.5) * W / w - 0.5, 0), W - 1)
            x0 = int(np.floor(sx))
            x1, fx = min(x0 + 1, W - 1), sx - x0
            out[i, j] = ((1 - fy) * ((1 - fx) * x[y0, x0] + fx * x[y0, x1])
                         + fy * ((1 - fx) * x[y1, x0] + fx * x[y1, x1]))
    return out


def test_resize():
    x = _img(dtype=np.float32)
    for h, w in ((12, 16), (3, 5), (6, 11)):
        out = T.Resize((w, h))(mx.nd.array(x)).asnumpy()
        assert out.shape == (h, w, 3)
        assert np.allclose(out, _bilinear_ref(x, h, w), atol=1e-4)
        near = T.Resize((w, h), interpolation=0)(mx.nd.array(x)).asnumpy()
        ys, xs = (np.arange(h) * 6 // h), (np.arange(w) * 8 // w)
        assert np.array_equal(near, x[ys][:, xs])
    area = T.Resize((4, 3), interpolation=3)(mx.nd.array(x)).asnumpy()
    assert np.allclose(area, x.reshape(3, 2, 4, 2, 3).mean(axis=(1, 3)), atol=1e-4)
    u8 = T.Resize(4)(mx.nd.array(_img(), dtype=np.uint8))
    assert u8.dtype == np.uint8 and u8.shape == (4, 4, 3)
    assert T.Resize(3, keep_ratio=True)(mx.nd.array(x)).shape == (3, 4, 3)
    assert T.Resize(3, keep_ratio=True)(mx.nd.array(x.transpose(1, 0, 2))).shape == (4, 3, 3)
    assert T.Resize((5, 2))(mx.nd.array(np.stack([x, x]))).shape == (2, 2, 5, 3)
    for interp in (2, 4):  # bicubic and Lanczos keep a constant image constant
        flat = T.Resize((5, 9), interpolation=interp)(mx.nd.full((6, 8, 3), 7.0)).asnumpy()
        assert np.allclose(flat, 7.0, atol=1e-4)


def test_crops():
    x = _img(10, 12)
    out = T.CenterCrop((4, 6))(mx.nd.array(x, dtype=np.uint8)).asnumpy()
    assert np.array_equal(out, x[2:8, 4:8])
    small = _img(4, 4, dtype=np.float32)
    up = T.CenterCrop(8)(mx.nd.array(small)).asnumpy()
    assert np.allclose(up, _bilinear_ref(small, 8, 8), atol=1e-4)
    xf = _img(8, 8, dtype=np.float32)
    full = T.RandomResizedCrop(4, scale=(1.0, 1.0), ratio=(1.0, 1.0))(mx.nd.array(xf))
    assert np.allclose(full.asnumpy(), T.Resize(4)(mx.nd.array(xf)).asnumpy())
    mx.random.seed(3)
    for _ in range(5):
        assert T.RandomResizedCrop((5, 3))(mx.nd.array(x, dtype=np.uint8)).shape == (3, 5, 3)
    crop = T.CropResize(1, 2, 3, 4)(mx.nd.array(x, dtype=np.uint8)).asnumpy()
    assert np.array_equal(crop, x[2:6, 1:4])


def test_random_flips():
    x = _img()
    mx.random.seed(0)
    lr = [T.RandomFlipLeftRight()(mx.nd.array(x, dtype=np.uint8)).asnumpy() for _ in range(20)]
    flipped = [np.array_equal(o, x[:, ::-1]) for o in lr]
    assert all(f or np.array_equal(o, x) for f, o in zip(flipped, lr)) and 0 < sum(flipped) < 20
    tb = [T.RandomFlipTopBottom()(mx.nd.array(x, dtype=np.uint8)).asnumpy() for _ in range(20)]
    flipped = [np.array_equal(o, x[::-1]) for o in tb]
    assert all(f or np.array_equal(o, x) for f, o in zip(flipped, tb)) and 0 < sum(flipped) < 20


_COEF = np.array([0.299, 0.587, 0.114])


def _seeded(transform, x, seed):
    mx.random.seed(seed)
    return transform(mx.nd.array(x, dtype=x.dtype)).asnumpy()


def test_brightness_contrast_saturation_lighting():
    x = _img()
    out = _seeded(T.RandomBrightness(0.5), x, 1)
    np.random.seed(1)
    a = np.random.uniform(0.5, 1.5)
    assert out.dtype == np.uint8 and np.array_equal(out, np.clip(np.rint(x * np.float32(a)),
                                                                  0, 255))
    xf = x.astype(np.float32)
    out = _seeded(T.RandomContrast(0.5), xf, 2)
    np.random.seed(2)
    a = np.random.uniform(0.5, 1.5)
    assert np.allclose(out, xf * a + (1 - a) * (xf @ _COEF).mean(), atol=1e-3)
    out = _seeded(T.RandomSaturation(0.5), xf, 3)
    np.random.seed(3)
    a = np.random.uniform(0.5, 1.5)
    assert np.allclose(out, (xf @ _COEF)[..., None] * (1 - a) + xf * a, atol=1e-3)
    out = _seeded(T.RandomLighting(0.1), xf, 4)
    np.random.seed(4)
    alpha = np.random.normal(0, 0.1, 3)
    eig = np.array([[55.46 * -0.5675, 4.794 * 0.7192, 1.148 * 0.4009],
                    [55.46 * -0.5808, 4.794 * -0.0045, 1.148 * -0.8140],
                    [55.46 * -0.5836, 4.794 * -0.6948, 1.148 * 0.4203]])
    assert np.allclose(out, xf + eig @ alpha, atol=1e-3)
    gray = _img(c=1)
    assert np.array_equal(_seeded(T.RandomSaturation(0.5), gray, 0), gray)


def test_hue_and_color_jitter():
    import colorsys
    xf = _img(3, 4).astype(np.float32)
    out = _seeded(T.RandomHue(0.3), xf, 5)
    np.random.seed(5)
    a = np.random.uniform(0.7, 1.3)
    ref = np.zeros_like(xf)
    for i in range(3):
        for j in range(4):
            h, lum, s = colorsys.rgb_to_hls(*(xf[i, j] / 255.0))
            ref[i, j] = np.array(colorsys.hls_to_rgb((h + a) % 1.0, lum, s)) * 255
    assert np.allclose(out, ref, atol=1e-2)
    x = _img()
    out = _seeded(T.RandomColorJitter(brightness=0.4), x, 6)
    np.random.seed(6)
    np.random.permutation(4)
    a = 1 + np.random.uniform(-0.4, 0.4)
    assert np.array_equal(out, np.clip(np.rint(x * np.float32(a)), 0, 255))
    full = T.RandomColorJitter(0.2, 0.2, 0.2, 0.1)(mx.nd.array(x, dtype=np.uint8))
    assert full.shape == x.shape and full.dtype == np.uint8


def test_compose_in_a_loader():
    x = _img(8, 8)
    tf = T.Compose([T.Resize(4), T.ToTensor(), T.Normalize(0.5, 0.25)])
    ref = (T.Resize(4)(mx.nd.array(x, dtype=np.uint8)).asnumpy().transpose(2, 0, 1) / 255.0
           - 0.5) / 0.25
    assert np.allclose(tf(mx.nd.array(x, dtype=np.uint8)).asnumpy(), ref, atol=1e-5)
    hybrid = T.HybridCompose([T.Cast("float32"), T.ToTensor()])
    hybrid.hybridize()
    assert hybrid(mx.nd.array(x, dtype=np.uint8)).shape == (3, 8, 8)
    ds = gdata.ArrayDataset(mx.nd.array(np.stack([x] * 6), dtype=np.uint8), np.arange(6))
    loader = gdata.DataLoader(ds.transform_first(tf), batch_size=3, num_workers=2)
    batches = list(loader)
    assert batches[0][0].shape == (3, 3, 4, 4)
    assert np.allclose(batches[1][0].asnumpy()[2], ref, atol=1e-5)
    mx.random.seed(0)
    apply = T.RandomApply(T.Cast("float16"), p=0.5)
    applied = [apply(mx.nd.array(x)).dtype == np.float16 for _ in range(20)]
    assert 0 < sum(applied) < 20
