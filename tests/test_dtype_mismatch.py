"""Inputs an op computes with together must share one dtype (MXNet's type inconsistency
error), eagerly, traced and in symbols; index inputs and scalars keep their freedom.

The issue: a uint8 row [200, 200, 200] through a Dense of ones gave uint8 88 (600 mod 256),
and float32 + float64 silently gave float32.
"""
import numpy as np
import pytest

import ember as mx
from ember.base import MXNetError
from ember.gluon import nn
from ember.ir.errors import DTypeError
from ember.ir.graph import GraphBuilder
from ember.ir.types import TensorType

nd = mx.nd
BINARY = ["add", "sub", "mul", "div", "mod", "power", "maximum", "minimum", "hypot", "equal",
          "not_equal", "greater", "greater_equal", "lesser", "lesser_equal", "logical_and",
          "logical_or", "logical_xor", "elemwise_add", "elemwise_sub", "elemwise_mul",
          "elemwise_div"]
PAIRS = [("float32", "float64"), ("float32", "int32"), ("int32", "int64"), ("uint8", "float32"),
         ("float16", "float32")]


def _dense(hybridize, **kw):
    net = nn.Dense(2, weight_initializer="ones", **kw)
    net.initialize()
    if hybridize:
        net.hybridize()
    return net


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("dtype", ["uint8", "int32", "float64"])
def test_dense_refuses_data_of_another_dtype(hybridize, dtype):
    x = nd.array([[200, 200, 200]], dtype=dtype)
    for net in (_dense(hybridize, in_units=3), _dense(hybridize)):  # known and deferred shapes
        with pytest.raises(MXNetError) as e:
            net(x)
        msg = str(e.value)
        for part in ("fully_connected", f"data {dtype}", "weight float32", "(1, 3)",
                     ".astype('float32')"):
            assert part in msg, msg
    out = _dense(hybridize, in_units=3)(x.astype("float32"))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out.asnumpy(), [[600, 600]])


@pytest.mark.parametrize("hybridize", [False, True])
def test_conv_and_batchnorm_refuse_uint8_images(hybridize):
    img = nd.array(np.full((1, 1, 4, 4), 200), dtype="uint8")
    for net in (nn.Conv2D(2, 3, in_channels=1), nn.BatchNorm(in_channels=1)):
        net.initialize()
        if hybridize:
            net.hybridize()
        with pytest.raises(DTypeError, match=r"data uint8.*\.astype\('float32'\)"):
            net(img)
        assert net(img.astype("float32")).dtype == np.float32


@pytest.mark.parametrize("lhs,rhs", PAIRS)
def test_binary_ops_refuse_mixed_dtypes_eagerly(lhs, rhs):
    a, b = nd.ones((2, 3), dtype=lhs), nd.ones((2, 3), dtype=rhs)
    for name in BINARY:
        with pytest.raises(DTypeError, match=f"{name}: .*lhs {lhs}, rhs {rhs}.*"
                                             rf"\(2, 3\), \(2, 3\)"):
            getattr(nd, name)(a, b)
    for fn in (lambda: a + b, lambda: a * b, lambda: a > b, lambda: a ** b,
               lambda: nd.broadcast_add(a, nd.ones((1, 3), dtype=rhs))):
        with pytest.raises(MXNetError):
            fn()


def test_issue_example_float32_plus_float64():
    with pytest.raises(MXNetError, match=r"add: .*float32.*float64.*\.astype\('float32'\)"):
        nd.ones(2) + nd.ones(2, dtype="float64")


def test_the_advice_never_converts_floats_to_integers():
    img, mean = nd.ones((2, 2, 3), dtype="uint8"), nd.array([0.5, 0.4, 0.3])
    with pytest.raises(DTypeError, match=r"convert the lhs with \.astype\('float32'\)"):
        img - mean
    with pytest.raises(DTypeError, match=r"convert the rhs with \.astype\('float64'\)"):
        nd.ones(3, dtype="float64") * nd.ones(3, dtype="int32")


@pytest.mark.parametrize("lhs,rhs", PAIRS)
def test_traced_graphs_refuse_mixed_dtypes(lhs, rhs):
    for name in BINARY:
        b = GraphBuilder("g")
        x, y = b.input(TensorType((2, 3), lhs), "x"), b.input(TensorType((2, 3), rhs), "y")
        with pytest.raises(DTypeError, match=name):
            b.emit(name, [x, y])


def test_symbols_refuse_mixed_dtypes():
    a, b = mx.sym.var("a"), mx.sym.var("b")
    with pytest.raises(MXNetError, match="add: .*float32.*float64"):
        (a + b).infer_type(a="float32", b="float64")   # no shapes needed
    with pytest.raises(MXNetError, match="add: .*float32.*float64"):
        (a + b).eval(a=nd.ones(2), b=nd.ones(2, dtype="float64"))
    assert (a + b).infer_type(a="float64")[1] == [np.float64]   # b takes a's dtype
    fc = mx.sym.FullyConnected(a, num_hidden=2, name="fc")
    with pytest.raises(MXNetError, match="fully_connected: .*data uint8, weight float32"):
        fc.infer_type(a="uint8", fc_weight="float32")


def test_layer_ops_refuse_mixed_dtypes():
    f32, f64 = nd.ones((2, 3)), nd.ones((2, 3), dtype="float64")
    cases = [
        lambda: nd.dot(f32, f64.T), lambda: nd.batch_dot(f32.reshape((1, 2, 3)),
                                                         f64.reshape((1, 3, 2))),
        lambda: nd.concat(f32, f64, dim=0), lambda: nd.stack(f32, f64),
        lambda: nd.where(nd.ones((2, 3)), f32, f64), lambda: nd.add_n(f32, f32, f64),
        lambda: nd.FullyConnected(f32, nd.ones((4, 3)), nd.ones(4, dtype="float64"),
                                  num_hidden=4),
        lambda: nd.Convolution(f32.reshape((1, 1, 2, 3)), nd.ones((1, 1, 1, 1), dtype="int32"),
                               kernel=(1, 1), num_filter=1, no_bias=True),
        lambda: nd.BatchNorm(f64, *[nd.ones(3)] * 4),
        lambda: nd.LayerNorm(f32, nd.ones(3), nd.ones(3, dtype="float64")),
        lambda: nd.LayerNorm(f32.astype("float16"), nd.ones(3), nd.ones(3)),  # BatchNorm's
        lambda: nd.LeakyReLU(f32, nd.ones(3, dtype="float64"), act_type="prelu"),
    ]
    for fn in cases:
        with pytest.raises(DTypeError):
            fn()


def test_index_inputs_scalars_and_float16_norms_keep_working():
    """Indices, labels, conditions and scalars may differ in dtype (as in MXNet)."""
    x = nd.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    i32 = nd.array([0, 2], dtype="int32")
    np.testing.assert_array_equal(nd.take(x, i32).asnumpy(), x.asnumpy()[[0, 1]])  # clipped
    np.testing.assert_array_equal(nd.pick(x, i32).asnumpy(), [1, 6])
    np.testing.assert_array_equal(nd.gather_nd(x, nd.array([[0, 1], [2, 0]], dtype="int64"))
                                  .asnumpy(), [3, 4])
    np.testing.assert_array_equal(nd.where(nd.array([[1, 0, 1]] * 2, dtype="int32"), x, -x)
                                  .asnumpy(), [[1, -2, 3], [4, -5, 6]])
    emb = nd.Embedding(i32, x.T, input_dim=3, output_dim=2)
    np.testing.assert_array_equal(emb.asnumpy(), [[1, 4], [3, 6]])
    loss = mx.gluon.loss.SoftmaxCrossEntropyLoss()(x, i32)
    assert loss.dtype == np.float32 and np.isfinite(loss.asnumpy()).all()
    assert nd.one_hot(i32, 3).dtype == np.float32
    assert nd.softmax(x, nd.array([2, 3], dtype="int32"), use_length=True).dtype == np.float32
    # scalars take the array's dtype, as MXNet's DType(scalar)
    assert (nd.ones(2, dtype="int32") + 1).dtype == np.int32
    assert (nd.ones(2, dtype="float64") * 2.5).dtype == np.float64
    np.testing.assert_array_equal((nd.ones(2, dtype="int32") / 2.5).asnumpy(), [0, 0])
    assert (nd.full(2, 200, dtype="uint8") + nd.full(2, 100, dtype="uint8")).dtype == np.uint8
    # float16 data with float32 BatchNorm parameters (MXNet keeps them float32)
    h = nd.ones((2, 3, 2), dtype="float16")
    assert nd.BatchNorm(h, *[nd.ones(3)] * 4).dtype == np.float16
    net = nn.BatchNorm()
    net.cast("float16")
    net.initialize()
    net.hybridize()
    assert net(h).dtype == np.float16 and net.gamma.data().dtype == np.float32


@pytest.mark.parametrize("hybridize", [False, True])
def test_float16_batchnorm_trains_with_float32_parameters(hybridize):
    """ember's own gradient rule mixed float16 data with float32 gamma (a DTypeError)."""
    x = np.random.default_rng(0).standard_normal((4, 3, 2)).astype("float32")
    grads = {}
    for dt in ("float32", "float16"):
        net = nn.BatchNorm(in_channels=3, center=True, scale=True)
        net.initialize(mx.init.Constant(0.5))
        net.cast(dt)
        if hybridize:
            net.hybridize()
        xa = nd.array(x, dtype=dt)
        xa.attach_grad()
        with mx.autograd.record():
            y = net(xa) * nd.array(np.arange(24).reshape(4, 3, 2), dtype=dt)
        y.backward()
        assert y.dtype == np.dtype(dt) and xa.grad.dtype == np.dtype(dt)
        assert net.gamma.grad().dtype == np.float32
        grads[dt] = (xa.grad.asnumpy(), net.gamma.grad().asnumpy())
    np.testing.assert_allclose(grads["float16"][0], grads["float32"][0], rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(grads["float16"][1], grads["float32"][1], rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("cell", [mx.gluon.rnn.LSTMCell, mx.gluon.rnn.GRUCell,
                                  mx.gluon.rnn.RNNCell])
def test_rnn_cell_begin_state_takes_the_inputs_dtype(cell):
    """unroll's default zero states were float32 whatever the cell's dtype."""
    net = cell(4, input_size=5)
    net.initialize()
    net.cast("float64")
    out, states = net.unroll(3, nd.ones((2, 3, 5), dtype="float64"), merge_outputs=True)
    assert out.dtype == np.float64 and all(s.dtype == np.float64 for s in states)
