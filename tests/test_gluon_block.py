"""Gluon Block / HybridBlock / Parameter: naming, deferred shapes, save/load, hooks."""
import numpy as np
import pytest

import ember as mx
from ember import autograd, gluon, nd
from ember.gluon import nn


def _mlp():
    net = nn.Sequential()
    with net.name_scope():
        net.add(nn.Dense(8, activation="relu"), nn.Dense(3))
    return net


def test_names_follow_mxnet():
    with mx.name.NameManager():
        net = _mlp()
        other = nn.Dense(2)
    assert net.prefix == "sequential0_"
    assert list(net.collect_params().keys()) == [
        "sequential0_dense0_weight", "sequential0_dense0_bias",
        "sequential0_dense1_weight", "sequential0_dense1_bias"]
    assert other.name == "dense0"
    assert list(net.collect_params(".*bias").keys()) == [
        "sequential0_dense0_bias", "sequential0_dense1_bias"]


def test_deferred_init_learns_shapes_at_first_call():
    net = _mlp()
    net.initialize()
    w = net[0].weight
    assert w.shape == (8, 0)
    with pytest.raises(gluon.DeferredInitializationError):
        w.data()
    x = nd.array(np.random.default_rng(0).standard_normal((4, 5)))
    y = net(x)
    assert y.shape == (4, 3)
    assert w.shape == (8, 5) and net[1].weight.shape == (3, 8)
    w0, b0 = net[0].weight.data().asnumpy(), net[0].bias.data().asnumpy()
    w1, b1 = net[1].weight.data().asnumpy(), net[1].bias.data().asnumpy()
    ref = np.maximum(x.asnumpy() @ w0.T + b0, 0) @ w1.T + b1
    np.testing.assert_allclose(y.asnumpy(), ref, rtol=1e-5, atol=1e-6)


def test_parameter_gradients_match_finite_differences():
    net = nn.Dense(2, in_units=3)
    net.initialize()
    x = nd.array(np.random.default_rng(1).standard_normal((4, 3)))
    with autograd.record():
        loss = (net(x) ** 2).sum()
    loss.backward()
    w = net.weight.data().asnumpy().astype(np.float64)
    b = net.bias.data().asnumpy()
    xs = x.asnumpy().astype(np.float64)
    np.testing.assert_allclose(net.weight.grad().asnumpy(),
                               2 * (xs @ w.T + b).T @ xs, rtol=1e-4, atol=1e-5)


def test_hybrid_forward_with_F_broadcast_mul():
    class Scale(nn.HybridBlock):
        def __init__(self, **kw):
            super().__init__(**kw)
            with self.name_scope():
                self.weight = self.params.get("weight", shape=(1, 4))

        def hybrid_forward(self, F, x, weight):
            return F.broadcast_mul(x, weight)

    blk = Scale()
    blk.initialize(mx.init.One())
    x = nd.ones((2, 4)) * 3
    out = blk(x)
    np.testing.assert_array_equal(out.asnumpy(), np.full((2, 4), 3.0))


def test_block_with_python_control_flow():
    class Gate(nn.Block):
        def __init__(self, **kw):
            super().__init__(**kw)
            with self.name_scope():
                self.dense = nn.Dense(2, in_units=2)

        def forward(self, x):
            y = self.dense(x)
            return y * 2 if y.sum().asscalar() > 0 else -y

    g = Gate()
    g.initialize(mx.init.One())
    np.testing.assert_allclose(g(nd.ones((1, 2))).asnumpy(), [[4.0, 4.0]])
    np.testing.assert_allclose(g(-nd.ones((1, 2))).asnumpy(), [[2.0, 2.0]])


def test_save_load_parameters_round_trip(tmp_path):
    net = _mlp()
    net.initialize()
    net(nd.ones((1, 5)))
    path = str(tmp_path / "net.params")
    net.save_parameters(path)
    net2 = _mlp()
    net2.load_parameters(path)
    for p, q in zip(net.collect_params().values(), net2.collect_params().values()):
        np.testing.assert_array_equal(p.data().asnumpy(), q.data().asnumpy())
    bad = _mlp()
    with bad.name_scope():
        bad.add(nn.Dense(4))
    with pytest.raises(mx.MXNetError, match="missing"):
        bad.load_parameters(path)
    bad.load_parameters(path, allow_missing=True)


def test_forward_hooks_run_and_detach():
    net = nn.Dense(2, in_units=2)
    net.initialize()
    seen = []
    h = net.register_forward_hook(lambda blk, inp, out: seen.append(out.shape))
    net(nd.ones((3, 2)))
    h.detach()
    net(nd.ones((3, 2)))
    assert seen == [(3, 2)]


def test_sequential_slicing_and_len():
    net = _mlp()
    assert len(net) == 2
    assert isinstance(net[1], nn.Dense)
    assert len(net[:1]) == 1


class _AddOpt(gluon.HybridBlock):
    def hybrid_forward(self, F, a, b=None):
        return a if b is None else a + b


def test_hybridized_block_refuses_argument_misuse_as_mxnet():
    # MXNet's CachedOp: arrays/None only, one context, and the argument structure of the first
    # call (up to trailing None defaults) until hybridize() is called again
    one = nd.ones((3,))
    net = _AddOpt()
    net.hybridize()
    with pytest.raises(ValueError, match="must be NDArrays.*got 1 of type int"):
        net(one, 1)
    np.testing.assert_array_equal(net(one, None).asnumpy(), np.ones(3))
    np.testing.assert_array_equal(net(one).asnumpy(), np.ones(3))  # trailing None: a default
    with pytest.raises(ValueError, match="stored format = \\(0, -1\\), input format = \\(0, 0\\)"):
        net(one, one)
    net.hybridize()
    np.testing.assert_array_equal(net(one, one).asnumpy(), 2 * np.ones(3))
    with pytest.raises(mx.base.MXNetError, match="several contexts"):
        net(nd.ones((3,), ctx=mx.cpu(1)), nd.ones((3,), ctx=mx.cpu(2)))
    eager = _AddOpt()  # not hybridized: any Python values, as a Block
    np.testing.assert_array_equal(eager(one, 1).asnumpy(), 2 * np.ones(3))


def test_op_hook_sees_every_op_with_mxnet_names():
    net = nn.HybridSequential(prefix="m_")
    with net.name_scope():
        net.add(nn.Dense(2), nn.Activation("relu"), nn.Dense(3, use_bias=False))
    net.initialize()
    net.hybridize()
    x = nd.array(np.linspace(-1, 1, 12, dtype=np.float32).reshape(2, 6))
    plain = net(x).asnumpy()
    seen = []
    net.register_op_hook(lambda name, op, arr: seen.append((name, op, arr.asnumpy())))
    out = net(x).asnumpy()
    assert [(n, o) for n, o, _ in seen] == [
        ("m_dense0_fwd_output", "FullyConnected"), ("m_relu0_fwd_output", "Activation"),
        ("m_dense1_fwd_output", "FullyConnected")]
    w0, b0, w1 = (p.data().asnumpy() for p in net.collect_params().values())
    h = x.asnumpy() @ w0.T + b0
    np.testing.assert_allclose(seen[0][2], h, rtol=1e-6)
    np.testing.assert_allclose(seen[1][2], np.maximum(h, 0), rtol=1e-6)
    np.testing.assert_allclose(out, np.maximum(h, 0) @ w1.T, rtol=1e-5)
    np.testing.assert_allclose(out, plain, rtol=1e-6)

    seen.clear()
    net.register_op_hook(lambda name, op, arr: seen.append(name), monitor_all=True)
    with autograd.record():  # recorded calls are watched too, and still differentiate
        y = net(x)
    y.backward()
    assert seen == ["m_dense0_fwd_data", "m_dense0_fwd_weight", "m_dense0_fwd_bias",
                    "m_dense0_fwd_output", "m_relu0_fwd_input0", "m_relu0_fwd_output",
                    "m_dense1_fwd_data", "m_dense1_fwd_weight", "m_dense1_fwd_output"]


@pytest.mark.parametrize("record", [False, True])
def test_op_hook_updates_moving_statistics_once(record):
    x = nd.array(np.arange(12, dtype=np.float32).reshape(4, 3))
    stats = []
    for hooked in (False, True):
        bn = nn.BatchNorm(in_channels=3, prefix="bn_")
        bn.initialize()
        bn.hybridize()
        if hooked:
            bn.register_op_hook(lambda *a: None, monitor_all=True)
        with autograd.record(train_mode=True):
            y = bn(x) if record else None
        with autograd.train_mode():
            y = y if record else bn(x)
        stats.append((y.asnumpy(), bn.running_mean.data().asnumpy()))
    np.testing.assert_allclose(stats[1][0], stats[0][0], rtol=1e-6)
    np.testing.assert_allclose(stats[1][1], stats[0][1], rtol=1e-6)
    assert not np.allclose(stats[0][1], 0)
