"""gluon.utils (splitting, global-norm clipping, file helpers), gluon.contrib.nn layers and
the optimizer comparison helpers of ember.optimizer.testing."""
import hashlib
import pathlib
import warnings

import numpy as np
import pytest

import ember as mx
from ember.base import MXNetError
from ember.gluon import nn, utils
from ember.gluon.contrib import nn as cnn
from ember.optimizer.testing import compare_ndarray_tuple, compare_optimizer

RNG = np.random.default_rng(0)


def _arr(*shape):
    return mx.nd.array(RNG.standard_normal(shape).astype(np.float32))


@pytest.mark.parametrize("num, axis, even", [(8, 0, True), (3, 1, True), (4, 1, False),
                                             (15, 1, False), (5, 2, False)])
def test_split_data_matches_array_split(num, axis, even):
    x = _arr(16, 33, 10)
    parts = utils.split_data(x, num, axis, even_split=even)
    assert len(parts) == num
    for got, want in zip(parts, np.array_split(x.asnumpy(), num, axis=axis)):
        np.testing.assert_array_equal(got.asnumpy(), want)


def test_split_data_uneven_refused_when_even_split():
    with pytest.raises(ValueError, match="cannot be evenly split into 4 slices along axis 1"):
        utils.split_data(_arr(2, 33), 4, 1)


def test_split_and_load():
    ctxs = [mx.cpu(0), mx.cpu(0)]
    parts = utils.split_and_load(np.arange(12, dtype=np.float32).reshape(6, 2), ctxs)
    assert [p.shape for p in parts] == [(3, 2), (3, 2)]
    assert all(p.context == mx.cpu(0) for p in parts)
    one = utils.split_and_load(_arr(5, 2), [mx.cpu(0)])
    assert len(one) == 1 and one[0].shape == (5, 2)


def test_clip_global_norm():
    x1, x2 = mx.nd.ones((3, 3)), mx.nd.ones((4, 4))
    norm = utils.clip_global_norm([x1, x2], 1.0)
    assert norm == pytest.approx(5.0)
    np.testing.assert_allclose(x1.asnumpy(), np.ones((3, 3)) / 5, rtol=1e-6)
    np.testing.assert_allclose(x2.asnumpy(), np.ones((4, 4)) / 5, rtol=1e-6)
    small = mx.nd.array([0.3, 0.4])  # norm 0.5 < max_norm: left as it is
    total = utils.clip_global_norm([small], 1.0, check_isfinite=False)
    assert isinstance(total, mx.nd.NDArray) and total.shape == (1,)
    np.testing.assert_allclose(small.asnumpy(), [0.3, 0.4], rtol=1e-6)
    for check in (True, False):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            utils.clip_global_norm([mx.nd.array([1.0, float("nan")])], 2.0,
                                   check_isfinite=check)
        assert len(w) == check
    with pytest.raises(MXNetError):
        utils.clip_global_norm([], 1.0)


def test_check_sha1_and_download_from_file_url(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"ember" * 100)
    sha1 = hashlib.sha1(src.read_bytes()).hexdigest()
    assert utils.check_sha1(str(src), sha1) and not utils.check_sha1(str(src), "0" * 40)
    dest = tmp_path / "out"
    dest.mkdir()
    got = utils.download(pathlib.Path(src).as_uri(), path=str(dest), sha1_hash=sha1)
    assert got == str(dest / "src.bin") and utils.check_sha1(got, sha1)
    with pytest.raises(MXNetError, match="hash does not match"):
        utils.download(pathlib.Path(src).as_uri(), path=str(dest / "bad.bin"),
                       sha1_hash="0" * 40, retries=0)
    assert not (dest / "bad.bin").exists() and len(list(dest.iterdir())) == 1


def test_shape_is_known():
    assert utils.shape_is_known((2, 3)) and not utils.shape_is_known((2, 0))
    assert not utils.shape_is_known(None) and not utils.shape_is_known(())
    assert not utils.shape_is_known((None, 3))


@pytest.mark.parametrize("hybrid", [True, False])
def test_concurrent_concatenates_children(hybrid):
    net = cnn.HybridConcurrent(axis=1) if hybrid else cnn.Concurrent(axis=1)
    with net.name_scope():
        net.add(nn.Dense(3), nn.Dense(2), cnn.Identity())
    net.initialize()
    x = _arr(4, 5)
    out = net(x)
    assert out.shape == (4, 10)
    np.testing.assert_allclose(out.asnumpy()[:, 5:], x.asnumpy())
    np.testing.assert_allclose(out.asnumpy()[:, :3], net[0](x).asnumpy(), rtol=1e-6)


def _shuffle_ref(x, factors):
    """NumPy pixel shuffle: (N, C*prod(f), *S) -> (N, C, *(S * f))."""
    n, c, *sp = x.shape
    k = len(factors)
    c_out = c // int(np.prod(factors))
    y = x.reshape(n, c_out, *factors, *sp)
    order = [0, 1] + [i for d in range(k) for i in (2 + k + d, 2 + d)]
    return y.transpose(order).reshape(n, c_out, *[s * f for s, f in zip(sp, factors)])


@pytest.mark.parametrize("layer, factors, shape", [
    (cnn.PixelShuffle1D(3), (3,), (2, 6, 5)),
    (cnn.PixelShuffle2D((2, 3)), (2, 3), (2, 12, 3, 3)),
    (cnn.PixelShuffle3D((2, 1, 2)), (2, 1, 2), (2, 8, 2, 3, 4))])
def test_pixel_shuffle(layer, factors, shape):
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    np.testing.assert_array_equal(layer(mx.nd.array(x)).asnumpy(), _shuffle_ref(x, factors))


def test_compare_optimizer_agrees_and_disagrees():
    compare_optimizer(mx.optimizer.SGD(learning_rate=0.1, momentum=0.9),
                      mx.optimizer.SGD(learning_rate=0.1, momentum=0.9), (3, 4), np.float32)
    with pytest.raises(AssertionError):
        compare_optimizer(mx.optimizer.SGD(learning_rate=0.1),
                          mx.optimizer.SGD(learning_rate=0.2), (3, 4), np.float32)
    with pytest.raises(MXNetError, match="row_sparse"):
        compare_optimizer(mx.optimizer.SGD(), mx.optimizer.SGD(), (3, 4), np.float32,
                          g_stype="row_sparse")
    a = mx.nd.ones((2,))
    compare_ndarray_tuple((a, (a, None)), (a.copy(), (a.copy(), a)))
    with pytest.raises(AssertionError):
        compare_ndarray_tuple((a,), (a * 2,))
