"""gluon.data.vision.ImageRecordDataset over im2rec-style files; CIFAR batches run no code."""
import os
import pickle

import numpy as np
import pytest

from ember import gluon, recordio
from ember.base import MXNetError

pytest.importorskip("PIL")


def _write(tmp_path, images, labels):
    rec, idx = tmp_path / "imgs.rec", tmp_path / "imgs.idx"
    w = recordio.MXIndexedRecordIO(str(idx), str(rec), "w")
    for i, (img, label) in enumerate(zip(images, labels)):
        # pack_img takes OpenCV's BGR order, as MXNet's im2rec does
        w.write_idx(i, recordio.pack_img(recordio.IRHeader(0, label, i, 0), img[:, :, ::-1],
                                         img_fmt=".png"))
    w.close()
    return str(rec)


def test_images_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (5 + i, 7, 3), dtype=np.uint8) for i in range(4)]
    path = _write(tmp_path, images, [0.0, 1.0, 2.0, 3.0])
    ds = gluon.data.vision.ImageRecordDataset(path)
    assert len(ds) == 4
    for i in range(4):
        img, label = ds[i]
        np.testing.assert_array_equal(img.asnumpy(), images[i])     # RGB, HWC, uint8
        assert img.dtype == np.uint8 and label == float(i)
    gray, _ = gluon.data.vision.ImageRecordDataset(path, flag=0)[2]
    assert gray.shape == (7, 7, 1)
    doubled = gluon.data.vision.ImageRecordDataset(path, transform=lambda x, y: (x, y * 2))
    assert doubled[3][1] == 6.0
    loader = gluon.data.DataLoader(ds.transform_first(lambda x: x.astype("float32").mean()),
                                   batch_size=2, num_workers=2)
    means = np.concatenate([b[0].asnumpy().ravel() for b in loader])
    np.testing.assert_allclose(means, [im.mean() for im in images], rtol=1e-5)


def test_vector_labels(tmp_path):
    img = np.zeros((4, 4, 3), np.uint8)
    path = _write(tmp_path, [img, img], [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    _, label = gluon.data.vision.ImageRecordDataset(path)[1]
    np.testing.assert_array_equal(label, [4, 5, 6])


def test_broken_image_names_the_record(tmp_path):
    rec, idx = tmp_path / "bad.rec", tmp_path / "bad.idx"
    w = recordio.MXIndexedRecordIO(str(idx), str(rec), "w")
    w.write_idx(5, recordio.pack(recordio.IRHeader(0, 1.0, 5, 0), b"not an image"))
    w.close()
    with pytest.raises(MXNetError, match="record 5: cannot decode image"):
        gluon.data.vision.ImageRecordDataset(str(rec))[0]


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch EVIL_RAN",))


def test_cifar_python_batch_cannot_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("MXNET_HOME", "EMBER_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    d = tmp_path / "c100" / "cifar-100-python"
    d.mkdir(parents=True)
    batch = {b"data": np.zeros((1, 3072), np.uint8), b"fine_labels": [_Evil()],
             b"coarse_labels": [0]}
    (d / "train").write_bytes(pickle.dumps(batch))
    with pytest.raises(MXNetError, match="corrupt CIFAR python batch.*not allowed"):
        gluon.data.vision.CIFAR100(root=str(tmp_path / "c100"))
    assert not (tmp_path / "EVIL_RAN").exists()
