"""Gluon 2 style HybridBlocks (``forward(self, x)``, no ``hybrid_forward``) compile too."""
import numpy as np

import ember as mx
from ember import autograd, nd
from ember.gluon import SymbolBlock, nn


class Scaled(nn.HybridBlock):
    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.dense = nn.Dense(4)
            self.w = self.params.get("w", shape=(4,), init=mx.init.Constant(0.5))

    def forward(self, x):
        return (self.dense(x) * self.w.data()).relu() + 1


class Parent(nn.HybridBlock):
    """Old style parent around a Gluon 2 child."""

    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.body = Scaled()
            self.out = nn.Dense(2)

    def hybrid_forward(self, F, x):
        return self.out(self.body(x))


def _grads(net, x):
    with autograd.record():
        y = net(x)
        loss = (y * y).sum()
    loss.backward()
    return {k: p.grad().asnumpy().copy() for k, p in net.collect_params().items()}


def test_forward_style_block_is_compiled_and_matches_eager():
    net = Scaled()
    net.initialize()
    x = nd.array(np.random.RandomState(0).randn(3, 5))
    eager = net(x).asnumpy()
    g_eager = _grads(net, x)
    net.hybridize()
    hyb = net(x).asnumpy()
    assert len(net._cached) == 1            # traced and compiled, not run eagerly
    np.testing.assert_allclose(hyb, eager, rtol=1e-5, atol=1e-6)
    g_hyb = _grads(net, x)
    assert set(g_hyb) == set(g_eager)
    for k in g_eager:
        np.testing.assert_allclose(g_hyb[k], g_eager[k], rtol=1e-4, atol=1e-5)
    # the parameter is a graph input: a new value is seen without retracing
    compiled = len(net._cached)
    net.w.set_data(nd.ones((4,)) * 2)
    np.testing.assert_allclose(net(x).asnumpy(),
                               np.maximum(net.dense(x).asnumpy() * 2, 0) + 1, rtol=1e-5)
    assert len(net._cached) == compiled


def test_forward_style_block_exports(tmp_path):
    net = Scaled()
    net.initialize()
    net.hybridize()
    x = nd.array(np.random.RandomState(1).randn(2, 5))
    want = net(x).asnumpy()
    net.export(str(tmp_path / "g2"))
    back = SymbolBlock.imports(str(tmp_path / "g2-symbol.json"), ["data"],
                               str(tmp_path / "g2-0000.params"))
    np.testing.assert_allclose(back(x).asnumpy(), want, rtol=1e-5, atol=1e-6)


def test_forward_style_child_inside_hybridized_parent():
    net = Parent()
    net.initialize()
    x = nd.array(np.random.RandomState(2).randn(4, 3))
    eager = net(x).asnumpy()
    net.hybridize()
    np.testing.assert_allclose(net(x).asnumpy(), eager, rtol=1e-5, atol=1e-6)
