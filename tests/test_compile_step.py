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


def test_a_new_learning_rate_applies_without_tracing_again():
    from ember.gluon.cached_op import STATS
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

    traces = STATS["trace"]
    step(x)
    step(x)
    trainer.set_learning_rate(0.0)
    before = [p.data().asnumpy().copy() for p in net.collect_params().values()]
    step(x)
    after = [p.data().asnumpy() for p in net.collect_params().values()]
    for u, v in zip(before, after):
        np.testing.assert_array_equal(u, v)  # lr 0 (fed to the same program): nothing moves
    assert STATS["trace"] - traces == 1


def test_backward_of_a_symbol_outside_compile_is_a_clear_error():
    with pytest.raises(mx.MXNetError, match="ember.compile"):
        (mx.sym.var("x", shape=(2,)) * 2).backward()


# ---- learning-rate schedules and step counts -------------------------------------------------
_SCHEDULERS = {
    "factor1": lambda: mx.lr_scheduler.FactorScheduler(step=1, factor=0.5, base_lr=0.1),
    "factor2": lambda: mx.lr_scheduler.FactorScheduler(step=2, factor=0.7, base_lr=0.1),
    "multifactor": lambda: mx.lr_scheduler.MultiFactorScheduler(step=[2, 4], factor=0.3,
                                                                base_lr=0.1),
    "poly": lambda: mx.lr_scheduler.PolyScheduler(max_update=6, base_lr=0.1, pwr=2),
    "cosine": lambda: mx.lr_scheduler.CosineScheduler(max_update=5, base_lr=0.1,
                                                      final_lr=0.01),
    "warmup": lambda: mx.lr_scheduler.FactorScheduler(step=3, factor=0.5, base_lr=0.1,
                                                      warmup_steps=2, warmup_begin_lr=0.02),
}
_OPTIMIZERS = [("sgd", {}), ("sgd", {"momentum": 0.9, "wd": 0.01}), ("nag", {"momentum": 0.9}),
               ("adam", {}), ("adamw", {"wd": 0.1}), ("rmsprop", {}), ("ftml", {}),
               ("lamb", {}), ("signum", {})]


def _pair(opt, params, sched):
    """Two equal nets with their own trainers (and scheduler instances: they keep state)."""
    nets, trainers = [], []
    for _ in range(2):
        net = _net()
        kw = dict(params, lr_scheduler=_SCHEDULERS[sched]()) if sched else dict(params)
        nets.append(net)
        trainers.append(gluon.Trainer(net.collect_params(), opt, kw))
    return nets, trainers


@pytest.mark.parametrize("sched", sorted(_SCHEDULERS))
@pytest.mark.parametrize("opt,params", _OPTIMIZERS[:1] + _OPTIMIZERS[3:4])
def test_compiled_step_follows_every_lr_scheduler(opt, params, sched):
    _compare_step_by_step(opt, params, sched)


@pytest.mark.parametrize("opt,params", _OPTIMIZERS)
def test_compiled_step_with_a_scheduler_matches_each_optimizer(opt, params):
    _compare_step_by_step(opt, params, "factor1")


def _compare_step_by_step(opt, params, sched, steps=6):
    rng = np.random.default_rng(0)
    x, y = nd.array(rng.standard_normal((8, 6))), nd.array(np.arange(8) % 4)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    (a, b), (ta, tb) = _pair(opt, params, sched)

    @mx.compile
    def step(x, y):
        with autograd.record():
            loss = loss_fn(b(x), y)
        loss.backward()
        tb.step(8)
        return loss

    for k in range(steps):
        with autograd.record():
            la = loss_fn(a(x), y)
        la.backward()
        ta.step(8)
        lb = step(x, y)
        np.testing.assert_allclose(lb.asnumpy(), la.asnumpy(), rtol=1e-5, atol=1e-6)
        for p, q in zip(a.collect_params().values(), b.collect_params().values()):
            np.testing.assert_allclose(q.data().asnumpy(), p.data().asnumpy(), rtol=1e-5,
                                       atol=1e-6, err_msg=f"{p.name} after step {k + 1}")
        assert tb.learning_rate == ta.learning_rate
        assert tb.optimizer.num_update == ta.optimizer.num_update == k + 1


def test_each_new_learning_rate_applies_at_its_own_step():
    """One weight, gradient 1, lr halved every update: w = -(1 + 0.5 + 0.25 + ...)."""
    w = gluon.Parameter("w", shape=(1,), init=mx.init.Zero())
    w.initialize()
    sched = mx.lr_scheduler.FactorScheduler(step=1, factor=0.5, base_lr=1.0)
    trainer = gluon.Trainer([w], "sgd", {"lr_scheduler": sched})

    @mx.compile
    def step(x):
        with autograd.record():
            loss = (w.data() * x).sum()
        loss.backward()
        trainer.step(1)
        return loss

    got = []
    for _ in range(4):
        step(nd.ones((1,)))
        got.append(float(w.data().asnumpy()[0]))
    np.testing.assert_allclose(got, -np.cumsum([1.0, 0.5, 0.25, 0.125]))


def test_a_steady_step_is_traced_once_and_batch_sizes_do_not_retrace():
    rng = np.random.default_rng(1)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    (a, b), (ta, tb) = _pair("sgd", {"learning_rate": 0.1, "momentum": 0.9}, None)
    traces = []

    @mx.compile
    def step(x, y):
        traces.append(x.shape)  # Python runs only while tracing
        with autograd.record():
            loss = loss_fn(b(x), y)
        loss.backward()
        tb.step(x.shape[0])
        return loss

    batches = [(nd.array(rng.standard_normal((n, 6))), nd.array(np.arange(n) % 4))
               for n in (8, 3)]
    for k in range(6):  # alternating batch sizes: trainer.step(n) sets rescale_grad = 1/n
        x, y = batches[k % 2]
        with autograd.record():
            la = loss_fn(a(x), y)
        la.backward()
        ta.step(x.shape[0])
        step(x, y)
        for p, q in zip(a.collect_params().values(), b.collect_params().values()):
            np.testing.assert_allclose(q.data().asnumpy(), p.data().asnumpy(), rtol=1e-5,
                                       atol=1e-6)
    assert traces == [(8, 6), (3, 6)]
    assert tb.optimizer.rescale_grad == ta.optimizer.rescale_grad
