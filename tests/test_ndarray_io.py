"""nd.save / nd.load / nd.load_frombuffer: MXNet 1.9.1's NDArray file format.

The fixtures in tests/data were written by real MXNet 1.9.1 (tests/data/make_mxnet_fixtures.py);
the values they hold are stated again here, independently.
"""
import os
import pickle
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ember as mx
from ember.base import MXNetError

DATA = os.path.join(os.path.dirname(__file__), "data")

DICT_VALUES = {
    "f32_2d": np.arange(6, dtype=np.float32).reshape(2, 3) / 4,
    "f64_1d": np.arange(5, dtype=np.float64) * 0.1 - 0.2,
    "i32_3d": np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 7,
    "u8_1d": np.arange(10, dtype=np.uint8) * 25,
    "i64_4d": np.arange(16, dtype=np.int64).reshape(1, 2, 2, 4) * -3 + (1 << 40),
    "f16_2d": np.arange(4, dtype=np.float16).reshape(2, 2) / 8,
    "i8_1d": np.arange(-3, 3, dtype=np.int8),
    "empty_f32": np.zeros((0, 3), dtype=np.float32),
}
LIST_VALUES = [np.arange(3, dtype=np.float32) + 0.5, np.arange(4, dtype=np.int32).reshape(2, 2)]
DTYPES = ["float32", "float64", "float16", "uint8", "int32", "int8", "int64", "bool",
          "int16", "uint16", "uint32", "uint64"]


def fixture(name):
    return os.path.join(DATA, name)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def assert_same(got, want):
    assert isinstance(got, mx.nd.NDArray)
    assert got.shape == want.shape and got.dtype == want.dtype.type
    np.testing.assert_array_equal(got.asnumpy(), want)


def as_nd(values):
    return {k: mx.nd.array(v, dtype=v.dtype) for k, v in values.items()}


# ---- reading what MXNet wrote --------------------------------------------------------------------
def test_load_mxnet_dict():
    d = mx.nd.load(fixture("mxnet_dict.params"))
    assert isinstance(d, dict) and list(d) == list(DICT_VALUES)
    for k, v in DICT_VALUES.items():
        assert_same(d[k], v)
        assert d[k].context == mx.cpu(0)


def test_load_mxnet_list_and_single():
    got = mx.nd.load(fixture("mxnet_list.nd"))
    assert isinstance(got, list) and len(got) == 2
    for g, v in zip(got, LIST_VALUES, strict=True):
        assert_same(g, v)
    (one,) = mx.nd.load(fixture("mxnet_single.nd"))
    assert_same(one, np.arange(4, dtype=np.float64).reshape(2, 2))


def test_load_mxnet_np_shape_v3_scalar_and_empty():
    with mx.np_shape(True):
        scalar, empty = mx.nd.load(fixture("mxnet_npshape.nd"))
    assert_same(scalar, np.array(2.5, dtype=np.float32))
    assert_same(empty, np.zeros((0, 2), dtype=np.float32))


def test_load_refuses_mixed_np_shape_semantics(tmp_path):
    # MXNet's NDArray::Load: a file saved under np_shape (V3) loads only under np_shape, and
    # a V2 file only outside it; save writes V3 under np_shape, zero-size shapes or not
    with pytest.raises(MXNetError, match="np_shape\\(True\\)"):
        mx.nd.load(fixture("mxnet_npshape.nd"))
    with mx.np_shape(True), pytest.raises(MXNetError, match="np_shape\\(False\\)"):
        mx.nd.load(fixture("mxnet_list.nd"))
    path = str(tmp_path / "z.nd")
    arrays = [mx.nd.zeros((2, 0, 1)), mx.nd.ones((0,))]
    with mx.np_shape(True):
        mx.nd.save(path, arrays)
    assert read(path)[24:28] == (0xF993FACA).to_bytes(4, "little")
    with pytest.raises(MXNetError, match="z.nd.*array 0 was saved in np shape"):
        mx.nd.load(path)
    with mx.np_shape(True):
        got = mx.nd.load(path)
    assert [g.shape for g in got] == [(2, 0, 1), (0,)]
    mx.nd.save(path, arrays)
    assert [g.shape for g in mx.nd.load(path)] == [(2, 0, 1), (0,)]


def test_load_mxnet_sparse_as_dense():
    d = mx.nd.load(fixture("mxnet_sparse.nd"))
    dense = np.array([[0, 1.5, 0], [0, 0, 0], [2, 0, -3]], dtype=np.float32)
    assert_same(d["csr"], dense)
    assert_same(d["rsp"], dense)


def test_load_frombuffer_matches_load():
    buf = read(fixture("mxnet_dict.params"))
    d = mx.nd.load_frombuffer(buf)
    for k, v in DICT_VALUES.items():
        assert_same(d[k], v)
    assert_same(mx.nd.load_frombuffer(bytearray(read(fixture("mxnet_list.nd"))))[1],
                LIST_VALUES[1])
    with pytest.raises(TypeError):
        mx.nd.load_frombuffer(42)


# ---- writing exactly what MXNet writes -----------------------------------------------------------
@pytest.mark.parametrize("name,data", [
    ("mxnet_dict.params", lambda: as_nd(DICT_VALUES)),
    ("mxnet_list.nd", lambda: [mx.nd.array(v, dtype=v.dtype) for v in LIST_VALUES]),
    ("mxnet_single.nd", lambda: mx.nd.array(np.arange(4.0).reshape(2, 2), dtype="float64")),
    ("mxnet_npshape.nd", lambda: [mx.nd.array(np.float32(2.5).reshape(()), dtype="float32"),
                                  mx.nd.zeros((0, 2))]),
])
def test_save_bytes_identical_to_mxnet(tmp_path, name, data):
    out = tmp_path / "out.nd"
    mx.nd.save(str(out), data())
    assert read(out) == read(fixture(name))


# ---- round trips ---------------------------------------------------------------------------------
@given(st.sampled_from(DTYPES),
       st.lists(st.integers(0, 4), min_size=0, max_size=4),
       st.booleans())
def test_round_trip_any_dtype_and_rank(tmp_path_factory, dtype, shape, as_dict):
    rng = np.random.default_rng(len(shape))
    a = np.abs(rng.standard_normal(shape) * 50).astype(dtype)
    x = mx.nd.array(a, dtype=dtype)
    path = str(tmp_path_factory.mktemp("rt") / "x.params")
    mx.nd.save(path, {"w": x, "b": mx.nd.ones((2,))} if as_dict else [x])
    with mx.np_shape(not shape):  # a 0-d array is saved as MXNet's np_shape does (V3)
        got = mx.nd.load(path)
        assert_same(got["w"] if as_dict else got[0], a)
        assert_same(mx.nd.load_frombuffer(read(path))["w"] if as_dict
                    else mx.nd.load_frombuffer(read(path))[0], a)


def test_round_trip_keeps_names_order_and_unicode(tmp_path):
    data = {"z": mx.nd.ones((1,)), "ä/weight": mx.nd.zeros((2, 2)), "a": mx.nd.ones((3,))}
    path = tmp_path / "p.params"
    mx.nd.save(path, data)  # os.PathLike works too
    got = mx.nd.load(path)
    assert list(got) == list(data)
    for k in data:
        assert_same(got[k], data[k].asnumpy())


def test_round_trip_non_contiguous_and_gpu_context(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    x = mx.nd.NDArray(a.T, mx.gpu(1))  # a transposed view, on a GPU context
    path = str(tmp_path / "t.nd")
    mx.nd.save(path, [x])
    raw = read(path)
    assert struct.unpack_from("<2i", raw, 24 + 12 + 8 * 2) == (2, 1)  # dev_type, dev_id
    assert_same(mx.nd.load(path)[0], a.T)


def test_empty_list_and_dict(tmp_path):
    path = str(tmp_path / "e.nd")
    mx.nd.save(path, [])
    assert mx.nd.load(path) == []
    mx.nd.save(path, {})
    assert mx.nd.load(path) == []  # MXNet cannot tell an empty dict from an empty list


def test_pickle_round_trip():
    x = mx.nd.array(np.arange(6).reshape(2, 3), dtype="int32")
    y = pickle.loads(pickle.dumps(x))
    assert_same(y, x.asnumpy())


# ---- legacy formats MXNet 1.9.1 still reads ------------------------------------------------------
def list_file(records, names=()):
    out = struct.pack("<QQQ", 0x112, 0, len(records)) + b"".join(records)
    out += struct.pack("<Q", len(names))
    return out + b"".join(struct.pack("<Q", len(n)) + n.encode() for n in names)


def test_load_v1_and_first_format():
    a = np.arange(6, dtype=np.float64).reshape(3, 2)
    v1 = struct.pack("<Ii2q2ii", 0xF993FAC8, 2, 3, 2, 1, 0, 1) + a.tobytes()
    v0 = struct.pack("<I2I2ii", 2, 3, 2, 1, 0, 1) + a.tobytes()  # magic word = ndim, u32 dims
    none = struct.pack("<Ii", 0xF993FAC8, 0)  # V1 empty array: ndim 0, nothing after
    got = mx.nd.load_frombuffer(list_file([v1, v0, none], ["v1", "v0", "none"]))
    assert_same(got["v1"], a)
    assert_same(got["v0"], a)
    assert got["none"] is None


def test_load_bfloat16_as_float32():
    vals = np.array([1.0, -2.5, 0.15625], dtype=np.float32)
    bf16 = (vals.view(np.uint32) >> 16).astype("<u2")
    rec = struct.pack("<Iiiq3i", 0xF993FAC9, 0, 1, 3, 1, 0, 12) + bf16.tobytes()
    assert_same(mx.nd.load_frombuffer(list_file([rec]))[0], vals)


# ---- refusing bad files --------------------------------------------------------------------------
@pytest.mark.parametrize("cut", [0, 5, 16, 23, 30, 60, 200, 700, 770])
def test_truncated_file_raises_naming_file(tmp_path, cut):
    path = tmp_path / "cut.params"
    path.write_bytes(read(fixture("mxnet_dict.params"))[:cut])
    with pytest.raises(MXNetError, match=r"cut\.params.*truncated"):
        mx.nd.load(str(path))


@pytest.mark.parametrize("offset,value,message", [
    (0, b"\x13", "list magic"),
    (24, b"\x00\x00\x00\x00", "unknown magic"),   # first array's magic word
    (28, b"\x07", "storage type"),
    (32, b"\xff\x00\x00\x00", "ndim 255"),
    (36, b"\xfe\xff\xff\xff\xff\xff\xff\xff", "negative dimension"),
    (60, b"\x63", "type flag 99"),
    (16, b"\xff\xff\xff\xff", "array count"),
])
def test_corrupted_file_raises_naming_file(tmp_path, offset, value, message):
    raw = bytearray(read(fixture("mxnet_dict.params")))
    raw[offset:offset + len(value)] = value
    path = tmp_path / "bad.params"
    path.write_bytes(bytes(raw))
    with pytest.raises(MXNetError, match=rf"bad\.params.*{message}"):
        mx.nd.load(str(path))


def test_huge_declared_size_is_refused_without_allocating():
    rec = struct.pack("<Iii3q3i", 0xF993FAC9, 0, 3, 1 << 30, 1 << 30, 1 << 20, 1, 0, 0)
    with pytest.raises(MXNetError, match="<buffer>.*(truncated|impossible shape)"):
        mx.nd.load_frombuffer(list_file([rec]))


def test_names_count_mismatch_and_bad_utf8():
    rec = struct.pack("<Iiiq3i", 0xF993FAC9, 0, 1, 1, 1, 0, 0) + b"\0\0\0\0"
    with pytest.raises(MXNetError, match="2 names for 1 arrays"):
        mx.nd.load_frombuffer(list_file([rec], ["a", "b"]))
    bad = list_file([rec])[:-8] + struct.pack("<QQ", 1, 1) + b"\xff"
    with pytest.raises(MXNetError, match="UTF-8"):
        mx.nd.load_frombuffer(bad)


def test_missing_file_raises(tmp_path):
    with pytest.raises(MXNetError, match="nope.params"):
        mx.nd.load(str(tmp_path / "nope.params"))


# ---- failing saves leave nothing behind ----------------------------------------------------------
def test_save_rejects_non_ndarrays_like_mxnet(tmp_path):
    path = tmp_path / "x.nd"
    with pytest.raises(TypeError):
        mx.nd.save(str(path), [mx.nd.ones((2,)), np.ones(2)])
    with pytest.raises(TypeError):
        mx.nd.save(str(path), {1: mx.nd.ones((2,))})
    with pytest.raises(ValueError):
        mx.nd.save(str(path), "not data")
    assert os.listdir(tmp_path) == []


def test_failure_mid_write_leaves_no_file_and_keeps_old_one(tmp_path):
    path = tmp_path / "model.params"
    good = {"a": mx.nd.ones((1000,)), "b": mx.nd.ones((3,))}
    bad = {"a": mx.nd.ones((1000,)), "c": mx.nd.NDArray(np.ones(3, dtype=np.complex64))}
    with pytest.raises(MXNetError, match=r"model\.params.*'c'.*complex64"):
        mx.nd.save(str(path), bad)
    assert os.listdir(tmp_path) == []
    mx.nd.save(str(path), good)
    before = read(path)
    with pytest.raises(MXNetError):
        mx.nd.save(str(path), bad)
    assert os.listdir(tmp_path) == ["model.params"] and read(path) == before


def test_save_into_missing_directory_raises(tmp_path):
    with pytest.raises(MXNetError, match="no_dir"):
        mx.nd.save(str(tmp_path / "no_dir" / "x.nd"), [mx.nd.ones((1,))])
