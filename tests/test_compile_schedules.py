"""A compiled training step runs ONE program while its learning rate or step count moves.

The optimizers on update ops feed the learning rate (after the scheduler), Adam's
bias-corrected rate and the step count as a run-time input of the graph (the update op's
``hyper`` input); only structural changes (momentum, weight decay, another batch size)
trace again. The compiled parameters must still equal the eager ones step by step.
"""
import numpy as np
import pytest

import ember as mx
from ember import autograd, gluon, nd
from ember.gluon import nn
from ember.gluon.cached_op import STATS


def _net():
    mx.random.seed(0)
    net = nn.HybridSequential()
    net.add(nn.Dense(16, activation="relu", in_units=6), nn.Dense(4, in_units=16))
    net.initialize(mx.init.Xavier())
    return net


def _cosine():
    return mx.lr_scheduler.CosineScheduler(max_update=20, base_lr=0.05, final_lr=0.001)


_CASES = {
    "sgd-cosine": ("sgd", lambda: {"momentum": 0.9, "lr_scheduler": _cosine()}),
    "sgd-plain-cosine": ("sgd", lambda: {"wd": 0.01, "lr_scheduler": _cosine()}),
    "adam": ("adam", lambda: {"learning_rate": 0.01}),
    "adam-cosine": ("adam", lambda: {"lr_scheduler": _cosine()}),
    "adamw-cosine": ("adamw", lambda: {"wd": 0.1, "lr_scheduler": _cosine()}),
    "nag-cosine": ("nag", lambda: {"momentum": 0.9, "lr_scheduler": _cosine()}),
    "rmsprop-cosine": ("rmsprop", lambda: {"lr_scheduler": _cosine()}),
    "ftml": ("ftml", lambda: {}),
    "lamb-cosine": ("lamb", lambda: {"lr_scheduler": _cosine()}),
    "signum-cosine": ("signum", lambda: {"lr_scheduler": _cosine()}),
    "ftrl-cosine": ("ftrl", lambda: {"lr_scheduler": _cosine()}),
}


@pytest.mark.parametrize("case", sorted(_CASES))
def test_twenty_steps_trace_once_and_match_eager(case):
    opt, params = _CASES[case]
    rng = np.random.default_rng(0)
    x, y = nd.array(rng.standard_normal((8, 6))), nd.array(np.arange(8) % 4)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    a, b = _net(), _net()
    ta = gluon.Trainer(a.collect_params(), opt, params())
    tb = gluon.Trainer(b.collect_params(), opt, params())

    @mx.compile
    def step(x, y):
        with autograd.record():
            loss = loss_fn(b(x), y)
        loss.backward()
        tb.step(8)
        return loss

    traces = STATS["trace"]
    rates = set()
    for k in range(20):
        with autograd.record():
            la = loss_fn(a(x), y)
        la.backward()
        ta.step(8)
        step(x, y)
        rates.add(tb.learning_rate)
        for p, q in zip(a.collect_params().values(), b.collect_params().values()):
            np.testing.assert_allclose(q.data().asnumpy(), p.data().asnumpy(), rtol=1e-5,
                                       atol=1e-6, err_msg=f"{p.name} after step {k + 1}")
    assert STATS["trace"] - traces == 1
    assert tb.optimizer.num_update == ta.optimizer.num_update == 20
    assert len(rates) == (1 if "cosine" not in case else 20)  # the rate did move


def _one_weight_step(trainer, w):
    @mx.compile
    def step(x):
        with autograd.record():
            loss = (w.data() * x).sum()
        loss.backward()
        trainer.step(1)
        return loss
    return step


def test_each_fed_rate_is_exactly_the_eager_one():
    """One weight, gradient 1, plain SGD: after each step the weight moved by exactly the
    scheduled rate of that step (float32 of MXNet's formula), with one trace."""
    w = gluon.Parameter("w", shape=(1,), init=mx.init.Zero())
    w.initialize()
    sched = mx.lr_scheduler.PolyScheduler(max_update=8, base_lr=1.0, pwr=2)
    trainer = gluon.Trainer([w], "sgd", {"lr_scheduler": sched})
    step = _one_weight_step(trainer, w)
    ref = mx.lr_scheduler.PolyScheduler(max_update=8, base_lr=1.0, pwr=2)
    traces, want = STATS["trace"], np.zeros(1, np.float32)
    for k in range(1, 9):
        step(nd.ones((1,)))
        want = want - np.float32(ref(k))
        np.testing.assert_array_equal(w.data().asnumpy(), want)
    assert STATS["trace"] - traces == 1


def test_structural_changes_still_trace_again():
    """A new weight decay is baked into the graph: it traces again (and applies)."""
    w = gluon.Parameter("w", shape=(1,), init=mx.init.One())
    w.initialize()
    trainer = gluon.Trainer([w], "sgd", {"learning_rate": 0.5})
    step = _one_weight_step(trainer, w)
    traces = STATS["trace"]
    step(nd.zeros((1,)))
    step(nd.zeros((1,)))
    trainer.optimizer.wd = 1.0
    step(nd.zeros((1,)))  # gradient 0: w *= 1 - lr * wd
    assert STATS["trace"] - traces == 2
    np.testing.assert_array_equal(w.data().asnumpy(), [0.5])


def test_update_op_hyper_input_equals_the_attribute_form():
    """Eagerly, an update op given its learning rate as the hyper input computes what the
    attribute form computes, bit for bit; a wrong hyper input is a clear error."""
    rng = np.random.default_rng(3)
    w, g = (nd.array(rng.standard_normal((5, 4))) for _ in range(2))
    mean, var = nd.zeros((5, 4)), nd.zeros((5, 4))
    mean2, var2 = nd.zeros((5, 4)), nd.zeros((5, 4))
    lr = 0.0123456789
    hy = nd.array(np.array([lr]), dtype=np.float64)
    got = nd.adam_update(w, g, mean, var, hy, hyper=("lr",), lr=0.0, wd=0.01)
    want = nd.adam_update(w, g, mean2, var2, lr=lr, wd=0.01)
    np.testing.assert_array_equal(got.asnumpy(), want.asnumpy())
    np.testing.assert_array_equal(var.asnumpy(), var2.asnumpy())
    with pytest.raises(mx.MXNetError, match="hyper"):
        nd.sgd_update(w, g, nd.array(np.zeros(2), dtype=np.float64), hyper=("lr",), lr=0.0)
