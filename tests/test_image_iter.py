"""mx.image's iterators: ImageIter over image lists and RecordIO files (batching, the last
batch, shuffling, parts, errors naming the broken image) and ImageDetIter with the detection
augmenters (boxes move with the image, labels padded with -1 rows)."""
import random

import numpy as np
import pytest

import ember as mx
from ember import image_codec, recordio
from ember.base import MXNetError

RNG = np.random.default_rng(0)

# ---- ImageIter -----------------------------------------------------------------------------
N_IMG = 7


def _image_files(tmp_path):
    names = []
    for k in range(N_IMG):
        a = np.full((6 + k, 8, 3), 10 * k, np.uint8)        # each image its own grey level
        names.append(f"im{k}.png")
        (tmp_path / names[-1]).write_bytes(image_codec.encode(a, img_fmt=".png"))
    return names


def _levels(batch):
    return [int(round(float(v))) // 10 for v in batch.data[0].asnumpy()[:, 0, 0, 0]]


def test_imageiter_list_batches_and_last_batch(tmp_path):
    names = _image_files(tmp_path)
    lst = tmp_path / "a.lst"
    lst.write_text("".join(f"{k}\t{k % 3}\t{n}\n" for k, n in enumerate(names)))
    kw = dict(path_root=str(tmp_path), data_shape=(3, 4, 4))
    for src in (dict(path_imglist=str(lst)), dict(imglist=[[k % 3, n] for k, n in
                                                           enumerate(names)])):
        it = mx.image.ImageIter(3, last_batch_handle="pad", **kw, **src)
        assert it.provide_data == [("data", (3, 3, 4, 4))]
        assert it.provide_label == [("softmax_label", (3,))]
        batches = list(it)
        assert [b.pad for b in batches] == [0, 0, 2]
        assert [_levels(b) for b in batches] == [[0, 1, 2], [3, 4, 5], [6, 0, 1]]
        np.testing.assert_array_equal(batches[1].label[0].asnumpy(), [0, 1, 2])
        it.reset()
        assert len(list(it)) == 3
        it = mx.image.ImageIter(3, last_batch_handle="discard", **kw, **src)
        assert [_levels(b) for b in it] == [[0, 1, 2], [3, 4, 5]]
        it = mx.image.ImageIter(3, last_batch_handle="roll_over", **kw, **src)
        assert [_levels(b) for b in it] == [[0, 1, 2], [3, 4, 5]]
        it.reset()
        first = it.next()
        assert _levels(first) == [6, 0, 1] and first.pad == 2       # MXNet reports the pad
        assert [_levels(b) for b in it] == [[2, 3, 4]]
        it.reset()
        assert [_levels(b) for b in it] == [[5, 6, 0], [1, 2, 3], [4, 5, 6]]
        it.hard_reset()
        assert _levels(it.next()) == [0, 1, 2]


def test_imageiter_rec_shuffle_parts_and_errors(tmp_path):
    rec, idx = str(tmp_path / "d.rec"), str(tmp_path / "d.idx")
    w = recordio.MXIndexedRecordIO(idx, rec, "w")
    for k in range(N_IMG):
        a = np.full((5, 7, 3), 10 * k, np.uint8)
        w.write_idx(k, recordio.pack_img(recordio.IRHeader(0, [k, -k], k, 0), a,
                                         img_fmt=".png"))
    w.close()
    it = mx.image.ImageIter(2, (3, 4, 4), label_width=2, path_imgrec=rec)
    b = it.next()
    assert _levels(b) == [0, 1] and it.provide_label[0][1] == (2, 2)
    np.testing.assert_array_equal(b.label[0].asnumpy(), [[0, 0], [1, -1]])
    it = mx.image.ImageIter(2, (3, 4, 4), label_width=2, path_imgrec=rec, path_imgidx=idx,
                            shuffle=True)
    random.seed(5)
    it.reset()
    seen = [v for b in it for v in _levels(b)[:2 - b.pad]]
    assert sorted(seen) == list(range(N_IMG)) and seen != list(range(N_IMG))
    parts = [[v for b in mx.image.ImageIter(1, (3, 4, 4), label_width=2, path_imgrec=rec,
                                            path_imgidx=idx, part_index=p, num_parts=2)
              for v in _levels(b)] for p in range(2)]
    assert parts == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(MXNetError, match="path_imgidx"):
        mx.image.ImageIter(2, (3, 4, 4), path_imgrec=rec, shuffle=True)
    # broken images are reported by record index and by file name
    w = recordio.MXRecordIO(str(tmp_path / "bad.rec"), "w")
    w.write(recordio.pack_img(recordio.IRHeader(0, 1.0, 0, 0), np.zeros((4, 5, 3), np.uint8),
                              img_fmt=".png"))
    w.write(recordio.pack(recordio.IRHeader(0, 2.0, 1, 0), b"not an image"))
    w.close()
    with pytest.raises(MXNetError, match="Broken image index: 1"):
        list(mx.image.ImageIter(1, (3, 4, 4), path_imgrec=str(tmp_path / "bad.rec")))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(MXNetError, match="broken.png"):
        list(mx.image.ImageIter(1, (3, 4, 4), imglist=[[0, "broken.png"]],
                                path_root=str(tmp_path)))
    with pytest.raises(MXNetError, match="missing.png"):
        list(mx.image.ImageIter(1, (3, 4, 4), imglist=[[0, "missing.png"]],
                                path_root=str(tmp_path)))
    bad_lst = tmp_path / "bad.lst"
    bad_lst.write_text("0\t1\tim0.png\nx\t1\tim1.png\n")
    with pytest.raises(MXNetError, match="line 2"):
        mx.image.ImageIter(1, (3, 4, 4), path_imglist=str(bad_lst), path_root=str(tmp_path))


# ---- detection -----------------------------------------------------------------------------
def test_det_augmenters_and_iter(tmp_path):
    label = np.array([[1, 0.1, 0.2, 0.5, 0.6], [2, 0.4, 0.4, 0.9, 1.0]])
    src = mx.nd.array(RNG.random((20, 30, 3)))
    out, lab = mx.image.det.DetHorizontalFlipAug(1.0)(src, label.copy())
    np.testing.assert_array_equal(out.asnumpy(), src.asnumpy()[:, ::-1])
    np.testing.assert_allclose(lab[:, [1, 3]], 1 - label[:, [3, 1]])
    random.seed(2)
    pad = mx.image.DetRandomPadAug(area_range=(1.5, 3.0), pad_val=(1, 2, 3))
    out, lab = pad(src, label.copy())
    h, w = out.shape[:2]
    assert h > 20 and w > 30
    arr = out.asnumpy()
    ys, xs = np.nonzero((arr != [1, 2, 3]).any(axis=2))
    y0, x0 = ys.min(), xs.min()                         # where the image was placed
    np.testing.assert_allclose(lab[:, 1], (label[:, 1] * 30 + x0) / w)
    np.testing.assert_allclose(lab[:, 4], (label[:, 4] * 20 + y0) / h)
    random.seed(3)
    crop = mx.image.DetRandomCropAug(min_object_covered=0.3, area_range=(0.3, 1.0))
    for _ in range(10):
        out, lab = crop(src, label.copy())
        assert (lab[:, 1:5] >= 0).all() and (lab[:, 1:5] <= 1).all()
        assert (lab[:, 3] > lab[:, 1]).all() and lab.shape[1] == 5
    names = _image_files(tmp_path)
    objs = [[2, 5] + [0, 0.1, 0.1, 0.5, 0.5] * (1 + k % 3) for k in range(N_IMG)]
    imglist = [o + [n] for o, n in zip(objs, names)]
    it = mx.image.ImageDetIter(2, (3, 8, 8), imglist=imglist, path_root=str(tmp_path),
                               rand_crop=0.5, rand_pad=0.5, rand_mirror=True, mean=True,
                               std=True, brightness=0.1)
    assert it.label_shape == (3, 5) and it.provide_label == [("label", (2, 3, 5))]
    batches = list(it)
    assert len(batches) == 4 and batches[-1].pad == 1
    lab = batches[0].label[0].asnumpy()
    assert lab.shape == (2, 3, 5) and (lab[0, 1:] == -1).all() and (lab[1, 2:] == -1).all()
    val = mx.image.ImageDetIter(2, (3, 8, 8), imglist=imglist[:1], path_root=str(tmp_path))
    assert val.label_shape == (1, 5)
    assert it.sync_label_shape(val) is val and val.label_shape == (3, 5)
    assert val.next().label[0].shape == (2, 3, 5)
    drawn = next(mx.image.ImageDetIter(1, (3, 8, 8), imglist=imglist, path_root=str(tmp_path))
                 .draw_next(color=(255, 0, 0)))
    assert drawn.dtype == np.uint8 and (drawn[1, 1:4] == [0, 0, 255]).all()
