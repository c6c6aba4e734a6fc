"""mx.io: DataDesc, DataBatch, NDArrayIter's last-batch modes and shuffle, Resize/Prefetching."""
import numpy as np
import pytest

import ember as mx
from ember.base import MXNetError


def _firsts(it):
    """(first feature of each example, pad) per batch of one epoch."""
    return [(b.data[0].asnumpy()[:, 0].tolist(), b.pad) for b in it]


def _data(n=10):
    return np.arange(n * 2, dtype=np.float32).reshape(n, 2) / 2  # row i starts with i


def test_datadesc_fields_and_helpers():
    d = mx.io.DataDesc("data", (4, 3), np.float64, layout="NC")
    name, shape = d
    assert (name, shape, d.dtype, d.layout) == ("data", (4, 3), np.float64, "NC")
    assert repr(d) == "DataDesc[data,(4, 3),<class 'numpy.float64'>,NC]"
    assert mx.io.DataDesc("x", (1,)).dtype is np.float32
    assert mx.io.DataDesc.get_batch_axis("TNC") == 1
    assert mx.io.DataDesc.get_batch_axis(None) == 0
    descs = mx.io.DataDesc.get_list([("a", (2, 3)), ("b", (2,))], [("a", np.int32),
                                                                   ("b", np.float16)])
    assert [(x.name, x.shape, x.dtype) for x in descs] == [("a", (2, 3), np.int32),
                                                           ("b", (2,), np.float16)]


def test_databatch_fields():
    x, y = mx.nd.ones((2, 3)), mx.nd.zeros((2,))
    b = mx.io.DataBatch([x], [y], pad=1, index=np.array([4, 5]), bucket_key=7,
                        provide_data=[("data", (2, 3))], provide_label=[("l", (2,))])
    assert b.data[0] is x and b.label[0] is y and b.pad == 1 and b.bucket_key == 7
    assert b.index.tolist() == [4, 5] and b.provide_data == [("data", (2, 3))]
    assert b.provide_label == [("l", (2,))]
    assert str(b) == "DataBatch: data shapes: [(2, 3)] label shapes: [(2,)]"
    assert mx.io.DataBatch([x]).label is None
    with pytest.raises(MXNetError):
        mx.io.DataBatch(x)


def test_pad_mode_wraps_to_the_start():
    it = mx.io.NDArrayIter(_data(), np.arange(10), batch_size=3)
    expect = [([0, 1, 2], 0), ([3, 4, 5], 0), ([6, 7, 8], 0), ([9, 0, 1], 2)]
    assert _firsts(it) == expect
    it.reset()
    assert _firsts(it) == expect  # same again after reset
    it.reset()
    labels = [b.label[0].asnumpy().tolist() for b in it]
    assert labels[-1] == [9, 0, 1]


def test_pad_mode_batch_larger_than_data_tiles():
    it = mx.io.NDArrayIter(_data(3), batch_size=8)
    batches = _firsts(it)
    assert batches == [([0, 1, 2, 0, 1, 2, 0, 1], 5)]


def test_discard_mode_drops_the_short_batch():
    it = mx.io.NDArrayIter(_data(), batch_size=3, last_batch_handle="discard")
    for _ in range(2):
        assert _firsts(it) == [([0, 1, 2], 0), ([3, 4, 5], 0), ([6, 7, 8], 0)]
        it.reset()


def test_roll_over_mode_carries_the_tail_into_the_next_epoch():
    it = mx.io.NDArrayIter(_data(), np.arange(10), batch_size=3,
                           last_batch_handle="roll_over")
    assert _firsts(it) == [([0, 1, 2], 0), ([3, 4, 5], 0), ([6, 7, 8], 0)]
    it.reset()
    first = it.next()
    assert first.data[0].asnumpy()[:, 0].tolist() == [9, 0, 1]
    assert first.label[0].asnumpy().tolist() == [9, 0, 1]
    assert first.pad == 1
    assert _firsts(it) == [([2, 3, 4], 0), ([5, 6, 7], 0)]  # 8, 9 roll over again
    it.hard_reset()
    assert _firsts(it)[0] == ([0, 1, 2], 0)


def test_shuffle_keeps_data_and_label_aligned():
    np.random.seed(3)
    data = _data(12)
    it = mx.io.NDArrayIter(data, np.arange(12), batch_size=4, shuffle=True)
    seen = []
    for b in it:
        x, y = b.data[0].asnumpy(), b.label[0].asnumpy()
        np.testing.assert_array_equal(x[:, 0], y)
        seen += y.tolist()
    assert sorted(seen) == list(range(12))
    assert seen != list(range(12))
    it.reset()
    again = [v for b in it for v in b.label[0].asnumpy().tolist()]
    assert sorted(again) == list(range(12)) and again != seen  # reshuffled at reset


def test_dict_and_list_inputs_are_named_and_sorted():
    data = {"b": np.zeros((6, 2)), "a": np.ones((6, 3))}
    it = mx.io.NDArrayIter(data, {"lab": np.arange(6)}, batch_size=4)
    assert [(d.name, d.shape) for d in it.provide_data] == [("a", (4, 3)), ("b", (4, 2))]
    assert [(d.name, d.shape) for d in it.provide_label] == [("lab", (4,))]
    batch = it.next()
    assert batch.data[0].shape == (4, 3) and batch.data[1].shape == (4, 2)
    it = mx.io.NDArrayIter([np.zeros((5, 1)), np.ones((5, 2))], batch_size=5)
    assert [d.name for d in it.provide_data] == ["_0_data", "_1_data"]
    it = mx.io.NDArrayIter(mx.nd.ones((5, 2)), mx.nd.zeros((5,)), batch_size=5,
                           data_name="x", label_name="y")
    assert [d.name for d in it.provide_data + it.provide_label] == ["x", "y"]
    assert it.provide_data[0].dtype == np.float32


def test_layout_puts_the_batch_on_its_axis():
    data = np.arange(2 * 7 * 3, dtype=np.float32).reshape(2, 7, 3)  # T=2, N=7, C=3
    it = mx.io.NDArrayIter(data, batch_size=4, layout="TNC", last_batch_handle="discard")
    assert it.provide_data[0].shape == (2, 4, 3)
    batch = it.next()
    np.testing.assert_array_equal(batch.data[0].asnumpy(), data[:, :4])


def test_ndarrayiter_errors():
    with pytest.raises(MXNetError):
        mx.io.NDArrayIter(_data(), batch_size=2, last_batch_handle="keep")
    with pytest.raises(MXNetError):
        mx.io.NDArrayIter(_data(4), np.arange(3), batch_size=2)
    with pytest.raises(TypeError):
        mx.io.NDArrayIter("not an array")


def test_resize_iter_repeats_or_cuts():
    base = mx.io.NDArrayIter(_data(4), batch_size=2)
    it = mx.io.ResizeIter(base, 5)
    assert it.batch_size == 2 and it.provide_data == base.provide_data
    assert [f for f, _ in _firsts(it)] == [[0, 1], [2, 3], [0, 1], [2, 3], [0, 1]]
    it.reset()
    assert len(list(it)) == 5


def test_prefetching_iter_joins_and_renames():
    it1 = mx.io.NDArrayIter({"data": _data(6)}, np.arange(6), batch_size=3)
    it2 = mx.io.NDArrayIter({"data": _data(6) * 10}, batch_size=3)
    pit = mx.io.PrefetchingIter([it1, it2], rename_data=[{"data": "d1"}, {"data": "d2"}])
    try:
        assert [d.name for d in pit.provide_data] == ["d1", "d2"]
        assert pit.batch_size == 3
        for _ in range(2):
            batches = list(pit)
            assert len(batches) == 2
            b = batches[1]
            assert b.data[0].asnumpy()[:, 0].tolist() == [3, 4, 5]
            assert b.data[1].asnumpy()[:, 0].tolist() == [30, 40, 50]
            assert b.label[0].asnumpy().tolist() == [3, 4, 5]
            pit.reset()
    finally:
        pit.close()


def test_base_dataiter_protocol():
    class Count(mx.io.DataIter):
        def __init__(self):
            super().__init__(batch_size=1)
            self.i = 0

        def iter_next(self):
            self.i += 1
            return self.i <= 2

        def getdata(self):
            return [mx.nd.array([self.i])]

        def getpad(self):
            return 0

    batches = list(Count())
    assert [b.data[0].asscalar() for b in batches] == [1, 2]
    assert batches[0].label is None and batches[0].index is None
