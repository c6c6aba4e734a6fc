"""hybridize() and @ember.compile: compiled runs agree with imperative runs.

Forward outputs and every parameter gradient of hybridized blocks must match the eager
(imperative) run of the same block with the same parameters (float32, atol 1e-5), on
hypothesis-drawn MLP / CNN / elementwise stacks; lazy parameter shapes must come from the
trace alone.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ember as mx
from ember import autograd, gluon, nd
from ember.gluon import nn

ACTS = [None, "relu", "sigmoid", "tanh", "softrelu"]


def _run(net, x, y, loss_fn):
    with autograd.record():
        out = net(x)
        loss = loss_fn(out, y)
    loss.backward()
    grads = {k: p.grad().asnumpy().copy() for k, p in net.collect_params().items()
             if p.grad_req != "null"}
    return out.asnumpy(), grads


def _compare(make_net, x, y, loss_fn=None, atol=1e-5):
    loss_fn = loss_fn or gluon.loss.L2Loss()
    mx.random.seed(0)
    eager = make_net()
    eager.initialize(mx.init.Xavier())
    eager(x)  # shapes learnt eagerly
    hybrid = make_net()
    hybrid.initialize(mx.init.Xavier())
    hybrid.hybridize()
    out_h, grads_h = _run(hybrid, x, y, loss_fn)  # shapes learnt from the trace alone
    for (k, p), q in zip(eager.collect_params().items(), hybrid.collect_params().values()):
        assert p.shape == q.shape, k
        p.set_data(q.data())
    out_e, grads_e = _run(eager, x, y, loss_fn)
    np.testing.assert_allclose(out_h, out_e, atol=atol, rtol=1e-4)
    assert grads_h.keys() == grads_e.keys() or len(grads_h) == len(grads_e)
    for ge, gh in zip(grads_e.values(), grads_h.values()):
        np.testing.assert_allclose(gh, ge, atol=atol, rtol=1e-4)


@given(units=st.lists(st.integers(1, 6), min_size=1, max_size=3),
       acts=st.lists(st.sampled_from(ACTS), min_size=3, max_size=3),
       batch=st.integers(1, 4), features=st.integers(1, 5))
def test_mlp_hybridized_matches_imperative(units, acts, batch, features):
    def make():
        net = nn.HybridSequential()
        with net.name_scope():
            for u, a in zip(units, acts):
                net.add(nn.Dense(u, activation=a))
        return net
    rng = np.random.default_rng(batch * 7 + features)
    x = nd.array(rng.standard_normal((batch, features)))
    y = nd.array(rng.standard_normal((batch, units[-1])))
    _compare(make, x, y)


@given(channels=st.integers(1, 3), kernel=st.integers(1, 3), pool=st.booleans(),
       bn=st.booleans(), size=st.integers(4, 6))
def test_cnn_hybridized_matches_imperative(channels, kernel, pool, bn, size):
    def make():
        net = nn.HybridSequential()
        with net.name_scope():
            net.add(nn.Conv2D(channels, kernel, padding=kernel // 2))
            if bn:
                net.add(nn.BatchNorm())
            net.add(nn.Activation("relu"))
            if pool:
                net.add(nn.MaxPool2D(2))
            net.add(nn.Flatten(), nn.Dense(3))
        return net
    rng = np.random.default_rng(size + channels)
    x = nd.array(rng.standard_normal((2, 2, size, size)))
    y = nd.array(rng.standard_normal((2, 3)))
    _compare(make, x, y, atol=1e-4)


def test_elementwise_stack_matches_imperative():
    rng = np.random.default_rng(3)
    x = nd.array(rng.standard_normal((5, 3)))
    y = nd.array(rng.standard_normal((5, 4)))

    class Net(nn.HybridBlock):
        def __init__(self, **kw):
            super().__init__(**kw)
            with self.name_scope():
                self.dense = nn.Dense(4)

        def hybrid_forward(self, F, x):
            h = self.dense(x)
            return F.tanh(h) * 0.5 + F.sigmoid(h) - F.relu(h * 1.5 - 0.25) * F.exp(-h * h)

    _compare(Net, x, y)


def test_retrace_on_new_shape_and_cache_per_signature():
    net = nn.HybridSequential()
    with net.name_scope():
        net.add(nn.Dense(3, activation="relu"))
    net.initialize()
    net.hybridize(static_shape=True)  # one program per shape (batch_family: the default)
    net(nd.ones((2, 4)))
    net(nd.ones((2, 4)))
    net(nd.ones((5, 4)))
    assert len(net._cached) == 2


def test_value_dependent_control_flow_is_a_clear_error():
    class Branchy(nn.HybridBlock):
        def hybrid_forward(self, F, x):
            return x * 2 if x.sum() > 0 else x

    b = Branchy()
    b.initialize()
    b.hybridize()
    with pytest.raises(mx.MXNetError, match=r"branchy.*test_hybridize.py:\d+"):
        b(nd.ones((2, 2)))


def test_dropout_gradient_uses_the_forward_mask():
    net = nn.HybridSequential()
    with net.name_scope():
        net.add(nn.Dense(8, in_units=8), nn.Dropout(0.5))
    net.initialize(mx.init.One())
    net.hybridize()
    x = nd.ones((4, 8))
    x.attach_grad()
    with autograd.record():
        y = net(x)
    y.backward()
    # d(sum y)/dx = W^T (mask * scale): zero exactly where every unit of a row was dropped
    kept = (y.asnumpy() != 0).astype(np.float32) * 2.0
    np.testing.assert_allclose(x.grad.asnumpy(), kept @ np.ones((8, 8)), rtol=1e-5)


def test_compile_decorator_matches_eager():
    net = nn.Dense(3, in_units=4)
    net.initialize(mx.init.Xavier())

    @mx.compile
    def f(x):
        return nd.relu(net(x)) * 2 + 1

    x = nd.array(np.random.default_rng(0).standard_normal((2, 4)))
    np.testing.assert_allclose(f(x).asnumpy(), (nd.relu(net(x)) * 2 + 1).asnumpy(),
                               atol=1e-6)
    assert len(f.graphs) == 1


@pytest.mark.parametrize("inplace", [True, False])
def test_shape_methods_take_inplace_when_traced(inplace):
    # MXNet's Symbol.squeeze/flatten/expand_dims accept NDArray's inplace= flag and ignore it
    class Shapes(gluon.HybridBlock):
        def forward(self, x):
            y = x.squeeze(inplace=inplace).expand_dims(0, inplace=inplace)
            return y.flatten(inplace=inplace)

    x = nd.array(np.arange(6, dtype=np.float32).reshape(2, 3, 1))
    want = Shapes()(x).asnumpy()
    net = Shapes()
    net.hybridize()
    got = net(x).asnumpy()
    np.testing.assert_array_equal(got, np.arange(6, dtype=np.float32).reshape(1, 6))
    np.testing.assert_array_equal(got, want)
    assert mx.sym.var("x").squeeze(axis=2, inplace=inplace).name
