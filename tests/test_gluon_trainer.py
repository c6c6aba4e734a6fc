"""gluon.Trainer on Parameters built directly: steps, stale gradients, states, lr, kvstores."""
from __future__ import annotations

import os

import numpy as np
import pytest

import ember as mx
import ember.optimizer as opt
from ember.gluon.parameter import Parameter, ParameterDict
from ember.gluon.trainer import Trainer

X = np.arange(8, dtype=np.float32).reshape(4, 2) / 8


def make_param(name="w", ctx=None, **kw):
    p = Parameter(name, shape=(2, 3), **kw)
    p.initialize(ctx=ctx)
    for d in p.list_data():
        d._data[...] = 0.5
    return p


def backward(params, x=X):
    """loss = sum(x @ w) for each parameter (per context); returns d loss / d w."""
    for p in params:
        for d in p.list_data():
            with mx.autograd.record():
                loss = mx.nd.sum(mx.nd.dot(mx.nd.array(x, ctx=d.context), d))
            loss.backward()
    return np.repeat(x.sum(axis=0)[:, None], 3, axis=1)


def test_step_sgd_momentum_matches_numpy():
    p = make_param()
    tr = Trainer([p], "sgd", {"learning_rate": 0.1, "momentum": 0.9, "wd": 0.01})
    ref, mom = np.full((2, 3), 0.5, np.float32), np.zeros((2, 3), np.float32)
    for _ in range(3):
        g = backward([p])
        tr.step(4)
        mom = 0.9 * mom - 0.1 * (g / 4 + 0.01 * ref)
        ref = ref + mom
    np.testing.assert_allclose(p.data().asnumpy(), ref, rtol=1e-5)
    assert tr.optimizer.num_update == 3 and tr.optimizer.rescale_grad == 0.25


def test_params_as_dict_paramdict_and_lr_mult():
    pd = ParameterDict("net_")
    a = pd.get("a", shape=(2, 3))
    b = pd.get("b", shape=(2, 3), lr_mult=0.0)
    pd.initialize()
    before = b.data().asnumpy()
    tr = Trainer(pd, "sgd", {"learning_rate": 1.0})
    assert [p.name for p in tr._params] == ["net_a", "net_b"]
    backward([a, b])
    tr.step(1)
    np.testing.assert_array_equal(b.data().asnumpy(), before)  # lr_mult 0: frozen
    b.lr_mult = 1.0  # the param_dict is shared, so this takes effect
    backward([a, b])
    tr.step(1)
    assert not np.array_equal(b.data().asnumpy(), before)
    Trainer({"x": a}, "adam")
    with pytest.raises(ValueError):
        Trainer(a, "sgd")
    with pytest.raises(ValueError):
        Trainer([a, "b"], "sgd")


def test_stale_gradient():
    p, q = make_param("p"), make_param("q")
    tr = Trainer([p, q], "sgd", {"learning_rate": 0.1})
    backward([p, q])
    tr.step(1)
    backward([p])
    q_before = q.data().asnumpy()
    with pytest.raises(UserWarning, match="Gradient of Parameter `q` on context cpu"):
        tr.step(1)
    backward([p])
    tr.step(1, ignore_stale_grad=True)
    np.testing.assert_array_equal(q.data().asnumpy(), q_before)
    assert not p.data()._fresh_grad
    q.grad_req = "null"
    backward([p])
    tr.step(1)  # grad_req='null' parameters are skipped


def test_save_load_states_roundtrip(tmp_path):
    p = make_param()
    tr = Trainer([p], "adam", {"learning_rate": 0.01})
    backward([p])
    tr.step(1)
    fname = str(tmp_path / "t.states")
    tr.save_states(fname)
    assert os.listdir(tmp_path) == ["t.states"]  # no temporary left behind
    mean, var = (s.asnumpy() for s in tr._updaters[0].states[0])
    backward([p])
    tr.step(1)
    p2 = make_param()
    p2.set_data(p.data())
    tr2 = Trainer([p2], "sgd")
    tr2.load_states(fname)
    assert isinstance(tr2.optimizer, opt.Adam)
    assert tr2.optimizer.param_dict[0] is p2 and tr2.optimizer.num_update == 1
    np.testing.assert_array_equal(tr2._updaters[0].states[0][0].asnumpy(), mean)
    np.testing.assert_array_equal(tr2._updaters[0].states[0][1].asnumpy(), var)
    # both continue identically from the saved point
    tr.load_states(fname)
    p.set_data(p2.data())
    backward([p, p2])
    tr.step(1)
    tr2.step(1)
    np.testing.assert_allclose(p.data().asnumpy(), p2.data().asnumpy(), rtol=1e-6)


def test_learning_rate_changes():
    p = make_param()
    tr = Trainer([p], "sgd", {"learning_rate": 0.1})
    assert tr.learning_rate == 0.1
    tr.set_learning_rate(0.5)
    assert tr.learning_rate == 0.5 and tr.optimizer.lr == 0.5
    before = p.data().asnumpy()
    g = backward([p])
    tr.step(2)
    np.testing.assert_allclose(p.data().asnumpy(), before - 0.5 * g / 2, rtol=1e-6)
    from ember.lr_scheduler import FactorScheduler
    tr2 = Trainer([p], "sgd", {"lr_scheduler": FactorScheduler(1, 0.5, base_lr=1.0)})
    with pytest.raises(UserWarning):
        tr2.set_learning_rate(0.1)


@pytest.mark.parametrize("kvstore", ["device", "local", None])
def test_multi_context_kvstores(kvstore):
    ctx = [mx.cpu(0), mx.cpu(1)]
    p = make_param(ctx=ctx)
    tr = Trainer([p], "sgd", {"learning_rate": 0.1}, kvstore=kvstore)
    d0, d1 = p.list_data()
    with mx.autograd.record():
        l0 = mx.nd.sum(mx.nd.dot(mx.nd.array(X), d0))
    l0.backward()
    with mx.autograd.record():
        l1 = mx.nd.sum(mx.nd.dot(mx.nd.array(2 * X, ctx=ctx[1]), d1))
    l1.backward()
    g = np.repeat(X.sum(axis=0)[:, None], 3, axis=1)
    tr.step(1)
    if kvstore is None:  # each context keeps its own gradient
        np.testing.assert_allclose(d0.asnumpy(), 0.5 - 0.1 * g, rtol=1e-6)
        np.testing.assert_allclose(d1.asnumpy(), 0.5 - 0.2 * g, rtol=1e-6)
    else:  # summed over contexts; copies stay equal
        np.testing.assert_allclose(d0.asnumpy(), 0.5 - 0.3 * g, rtol=1e-6)
        np.testing.assert_array_equal(d0.asnumpy(), d1.asnumpy())


def test_kvstore_kinds_checked():
    """dist_sync & co run on MPI (tests/test_kvstore.py, tests/test_distributed.py)."""
    p = make_param()
    with pytest.raises(TypeError, match="kvstore must be"):
        Trainer([p], "sgd", kvstore=object())
    with pytest.raises(mx.MXNetError, match="asynchronous"):
        Trainer([p], "sgd", kvstore="dist_async")


def test_deferred_parameter_and_allreduce_update():
    p = Parameter("d", shape=(0, 3), allow_deferred_init=True)
    p.initialize()
    tr = Trainer([p], "sgd", {"learning_rate": 0.1})
    p.shape = (2, 3)
    p._finish_deferred_init()
    before = p.data().asnumpy()
    g = backward([p])
    tr.allreduce_grads()
    tr.update(4)
    np.testing.assert_allclose(p.data().asnumpy(), before - 0.1 * g / 4, rtol=1e-6)
    assert 0 in tr._updaters[0].states


def test_hybridized_training_matches_eager_and_skips_unneeded_input_gradients():
    """A hybridized MLP + loss trains like the eager one; the compiled backward computes the
    data gradient only when the data asks for one (attach_grad)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 6)).astype(np.float32)
    y = rng.integers(0, 3, 8).astype(np.float32)

    def build(hybrid):
        net = mx.gluon.nn.HybridSequential()
        net.add(mx.gluon.nn.Dense(5, activation="relu", in_units=6),
                mx.gluon.nn.Dense(3, in_units=5))
        net.initialize(mx.init.Constant(0.1))
        loss = mx.gluon.loss.SoftmaxCrossEntropyLoss()
        if hybrid:
            net.hybridize(backend="cpu")
            loss.hybridize(backend="cpu")
        return net, loss, Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})

    results = []
    for hybrid in (False, True):
        net, loss_fn, trainer = build(hybrid)
        xs = mx.nd.array(x)
        for step in range(3):
            if step == 2:
                xs.attach_grad()
            with mx.autograd.record():
                loss = loss_fn(net(xs), mx.nd.array(y))
            loss.backward()
            trainer.step(8)
        results.append(([p.data().asnumpy() for p in net.collect_params().values()],
                         xs.grad.asnumpy()))
        if hybrid:
            variants = next(iter(net._cached.values()))._variants
            assert set(variants) == {(False,), (True,)}
    for a, b in zip(results[0][0], results[1][0]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5, atol=1e-6)
