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
