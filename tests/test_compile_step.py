"""@ember.compile of a whole training step: forward, loss, backward and trainer.step.

The compiled step must leave parameters (and optimizer states) exactly where the eager
step leaves them, step after step, for optimizers whose Python side bakes constants into
the graph (SGD with momentum) and for ones that read the step count (Adam).
"""
import numpy as np
import pytest

import ember as mx
from ember import autograd, gluon, nd
from ember.gluon import nn


def _net():
    mx.random.seed(0)
    net = nn.HybridSequential()
    with net.name_scope():
        net.add(nn.Dense(16, activation="relu", in_units=6), nn.Dense(4, in_units=16))
    net.initialize(mx.init.Xavier())
    return net


@pytest.mark.parametrize("opt,params", [("sgd", {"learning_rate": 0.1, "momentum": 0.9}),
                                        ("adam", {"learning_rate": 0.01})])
def test_compiled_step_matches_eager_steps(opt, params):
    rng = np.random.default_rng(0)
    x, y = nd.array(rng.standard_normal((8, 6))), nd.array(np.arange(8) % 4)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    a, b = _net(), _net()
    ta = gluon.Trainer(a.collect_params(), opt, dict(params))
    tb = gluon.Trainer(b.collect_params(), opt, dict(params))

    @mx.compile
    def step(x, y):
        with autograd.record():
            loss = loss_fn(b(x), y)
        loss.backward()
        tb.step(8)
        return loss

    for _ in range(4):
        with autograd.record():
            la = loss_fn(a(x), y)
        la.backward()
        ta.step(8)
        lb = step(x, y)
        np.testing.assert_allclose(lb.asnumpy(), la.asnumpy(), rtol=1e-5, atol=1e-6)
    for p, q in zip(a.collect_params().values(), b.collect_params().values()):
        np.testing.assert_allclose(q.data().asnumpy(), p.data().asnumpy(), atol=1e-5)
    assert tb._optimizer.num_update == ta._optimizer.num_update


def test_changing_the_learning_rate_traces_again():
    net = _net()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
    x = nd.ones((2, 6))

    @mx.compile
    def step(x):
        with autograd.record():
            loss = (net(x) ** 2).sum()
        loss.backward()
        trainer.step(2)
        return loss

    step(x)
    step(x)
    trainer.set_learning_rate(0.0)
    before = [p.data().asnumpy().copy() for p in net.collect_params().values()]
    step(x)
    after = [p.data().asnumpy() for p in net.collect_params().values()]
    for u, v in zip(before, after):
        np.testing.assert_array_equal(u, v)  # lr 0: the new trace must not move anything


def test_backward_of_a_symbol_outside_compile_is_a_clear_error():
    with pytest.raises(mx.MXNetError, match="ember.compile"):
        (mx.sym.var("x", shape=(2,)) * 2).backward()
