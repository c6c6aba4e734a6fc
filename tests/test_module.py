"""mx.mod.Module on ember's symbol Executor: bind/init/forward/backward/update against NumPy,
fit on a separable problem, score/predict, checkpoints, and the error paths."""
import numpy as np
import pytest

import ember as mx
from ember.base import MXNetError


def _mlp(label=True):
    data = mx.sym.var("data")
    fc1 = mx.sym.FullyConnected(data, name="fc1", num_hidden=5)
    act = mx.sym.Activation(fc1, name="relu1", act_type="relu")
    out = mx.sym.FullyConnected(act, name="fc2", num_hidden=3)
    if not label:
        return out
    return mx.gluon.loss.SoftmaxCrossEntropyLoss()(out, mx.sym.var("label"))


def _np_mlp(x, p):
    h = np.maximum(x @ p["fc1_weight"].T + p["fc1_bias"], 0)
    return h, h @ p["fc2_weight"].T + p["fc2_bias"]


def _params(mod):
    return {k: v.asnumpy() for k, v in mod.get_params()[0].items()}


def _bound(sym=None, batch=4, **kw):
    mod = mx.mod.Module(sym if sym is not None else _mlp(False), label_names=None, **kw)
    mod.bind(data_shapes=[("data", (batch, 6))])
    mod.init_params(mx.init.Uniform(0.5))
    return mod


def test_names_and_shapes_after_bind():
    mod = mx.mod.Module(_mlp(), data_names=("data",), label_names=("label",))
    assert mod.data_names == ["data"] and mod.label_names == ["label"]
    assert mod._param_names == ["fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias"]
    mod.bind(data_shapes=[("data", (4, 6))], label_shapes=[("label", (4,))])
    assert mod.binded and mod.data_shapes[0].shape == (4, 6)
    assert mod.label_shapes[0].name == "label"
    assert mod.output_shapes == [(mod.output_names[0], (4,))]
    mod.init_params()
    args, aux = mod.get_params()
    assert args["fc1_weight"].shape == (5, 6) and aux == {}
    assert np.abs(args["fc1_weight"].asnumpy()).max() <= 0.01  # Uniform(0.01) by default
    assert not args["fc1_bias"].asnumpy().any()


def test_forward_backward_update_match_numpy():
    np.random.seed(0)
    mod = _bound()
    p = _params(mod)
    x = np.random.uniform(-1, 1, (4, 6)).astype(np.float32)
    mod.forward(mx.io.DataBatch([mx.nd.array(x)]), is_train=True)
    h, y = _np_mlp(x, p)
    out = mod.get_outputs()[0]
    np.testing.assert_allclose(out.asnumpy(), y, rtol=1e-5, atol=1e-6)
    head = np.random.uniform(-1, 1, y.shape).astype(np.float32)
    mod.backward([mx.nd.array(head)])
    g_w2 = head.T @ h
    dh = (head @ p["fc2_weight"]) * (h > 0)
    g_w1 = dh.T @ x
    grads = dict(zip(mod._exec_group.param_names, mod._exec_group.grad_arrays))
    np.testing.assert_allclose(grads["fc2_weight"][0].asnumpy(), g_w2, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads["fc1_weight"][0].asnumpy(), g_w1, rtol=1e-4, atol=1e-5)
    mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.1})
    assert mod._optimizer.rescale_grad == 0.25  # 1 / batch size
    mod.update()
    new = _params(mod)
    np.testing.assert_allclose(new["fc1_weight"], p["fc1_weight"] - 0.1 * g_w1 / 4,
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(new["fc2_bias"], p["fc2_bias"] - 0.1 * head.sum(0) / 4,
                               rtol=1e-4, atol=1e-6)


def test_input_grads_and_fixed_params():
    np.random.seed(1)
    mod = mx.mod.Module(_mlp(False), label_names=None, fixed_param_names=["fc1_weight"])
    mod.bind(data_shapes=[("data", (2, 6))], inputs_need_grad=True)
    mod.init_params(mx.init.Uniform(0.5))
    mod.init_optimizer(optimizer_params={"learning_rate": 1.0})
    p = _params(mod)
    x = np.random.uniform(-1, 1, (2, 6)).astype(np.float32)
    mod.forward(mx.io.DataBatch([mx.nd.array(x)]))
    mod.backward([mx.nd.ones((2, 3))])
    h, _ = _np_mlp(x, p)
    dx = ((np.ones((2, 3)) @ p["fc2_weight"]) * (h > 0)) @ p["fc1_weight"]
    np.testing.assert_allclose(mod.get_input_grads()[0].asnumpy(), dx, rtol=1e-4, atol=1e-5)
    mod.update()
    new = _params(mod)
    np.testing.assert_array_equal(new["fc1_weight"], p["fc1_weight"])
    assert not np.allclose(new["fc2_weight"], p["fc2_weight"])


def test_init_params_uses_variable_init_and_given_values():
    data = mx.sym.var("data")
    gamma = mx.sym.var("gamma", init=mx.init.One())
    sym = mx.sym.LeakyReLU(data=data, gamma=gamma, act_type="prelu")
    mod = mx.mod.Module(sym, label_names=None)
    mod.bind(data_shapes=[("data", (3, 4))])
    mod.init_params(mx.init.Uniform(5.0))
    assert (mod.get_params()[0]["gamma"].asnumpy() == 1).all()
    mod = _bound()
    given = {"fc1_weight": mx.nd.full((5, 6), 2.0)}
    with pytest.raises(RuntimeError):
        mod.init_params(arg_params=given, force_init=True)
    mod.init_params(mx.init.Zero(), arg_params=given, allow_missing=True, force_init=True)
    p = _params(mod)
    assert (p["fc1_weight"] == 2).all() and (p["fc2_weight"] == 0).all()
    mod.set_params({"fc2_bias": mx.nd.ones((3,))}, {}, allow_missing=True)
    assert (_params(mod)["fc2_bias"] == 1).all() and (_params(mod)["fc1_weight"] == 2).all()


def _separable(n=40):
    rng = np.random.RandomState(0)
    y = rng.randint(0, 3, n)
    x = rng.normal(0, 0.3, (n, 6)).astype(np.float32)
    x[np.arange(n), y] += 2.0
    return x, y.astype(np.float32)


def test_fit_reduces_the_loss_and_predict_classifies():
    np.random.seed(0)
    mx.random.seed(0)
    x, y = _separable()
    it = mx.io.NDArrayIter(x, y, batch_size=8, shuffle=True, label_name="label")
    mod = mx.mod.Module(_mlp(), label_names=("label",))
    mod.bind(it.provide_data, it.provide_label)
    mod.init_params(mx.init.Xavier())
    before = mod.score(it, mx.metric.Loss())[0][1]
    it.reset()  # score leaves the iterator at its end; fit starts where it is (as MXNet)
    seen, scores = [], []
    with pytest.warns(UserWarning, match="already initialized"):
        mod.fit(it, num_epoch=30, optimizer="adam", optimizer_params={"learning_rate": 0.05},
                eval_metric=mx.metric.Loss(),
                batch_end_callback=lambda p: seen.append(p.nbatch),
                epoch_end_callback=lambda e, s, a, x_: seen.append(("epoch", e)),
                eval_data=mx.io.NDArrayIter(x, y, batch_size=8, label_name="label"),
                eval_end_callback=lambda p: scores.append(p.eval_metric.get()[1]))
    after = mod.score(it, mx.metric.Loss())[0][1]
    assert after < before / 5 and after < 0.1
    assert seen[:6] == [0, 1, 2, 3, 4, ("epoch", 0)]
    assert len(scores) == 30 and scores[-1] < scores[0] / 5  # validated after each epoch
    # the logits of the trained network classify the data
    logits = mx.sym.load_json(mod.symbol.tojson()).get_internals()["fc2_output"]
    pred_mod = mx.mod.Module(logits, label_names=None)
    pred_mod.bind([("data", (8, 6))], for_training=False)
    pred_mod.set_params(*mod.get_params())
    out = pred_mod.predict(mx.io.NDArrayIter(x, batch_size=16))  # 40 = 16 + 16 + 8 (+8 pad)
    assert out.shape == (40, 3)
    assert (out.asnumpy().argmax(1) == y).mean() == 1.0
    acc = pred_mod.score(mx.io.NDArrayIter(x, y, batch_size=8), "acc")
    assert acc == [("accuracy", 1.0)]
    parts = list(pred_mod.iter_predict(mx.io.NDArrayIter(x, batch_size=16)))
    assert [o[0].shape[0] for o, _, _ in parts] == [16, 16, 8]


def test_checkpoint_round_trip(tmp_path):
    np.random.seed(2)
    x, y = _separable(16)
    it = mx.io.NDArrayIter(x, y, batch_size=8, label_name="label")
    mod = mx.mod.Module(_mlp(), label_names=("label",))
    mod.fit(it, num_epoch=2, optimizer="sgd",
            optimizer_params={"learning_rate": 0.1, "momentum": 0.9},
            eval_metric=mx.metric.Loss())
    prefix = str(tmp_path / "net")
    mod.save_checkpoint(prefix, 3, save_optimizer_states=True)
    for suffix in ("-symbol.json", "-0003.params", "-0003.states"):
        assert (tmp_path / f"net{suffix}").exists()
    saved = mx.nd.load(prefix + "-0003.params")
    assert sorted(saved) == ["arg:fc1_bias", "arg:fc1_weight", "arg:fc2_bias", "arg:fc2_weight"]
    loaded = mx.mod.Module.load(prefix, 3, load_optimizer_states=True, label_names=("label",))
    loaded.bind(it.provide_data, it.provide_label)
    loaded.init_optimizer(optimizer="sgd",
                          optimizer_params={"learning_rate": 0.1, "momentum": 0.9})
    for k, v in _params(mod).items():
        np.testing.assert_array_equal(_params(loaded)[k], v)
    states = mod._updater.states
    assert loaded._updater.states.keys() == states.keys()
    np.testing.assert_array_equal(loaded._updater.states[0].asnumpy(), states[0].asnumpy())
    batch = mx.io.DataBatch([mx.nd.array(x[:8])], [mx.nd.array(y[:8])])
    mod.forward(batch, is_train=False)
    loaded.forward(batch, is_train=False)
    np.testing.assert_allclose(loaded.get_outputs()[0].asnumpy(),
                               mod.get_outputs()[0].asnumpy(), rtol=1e-6)
    sym, args, aux = mx.mod.load_checkpoint(prefix, 3)
    assert sym.list_arguments() == mod.symbol.list_arguments() and aux == {}
    mx.mod.save_checkpoint(prefix + "2", 1, sym, args, aux)
    _, args2, _ = mx.mod.load_checkpoint(prefix + "2", 1)
    np.testing.assert_array_equal(args2["fc2_weight"].asnumpy(), args["fc2_weight"].asnumpy())


def test_forward_with_another_batch_size_rebinds():
    mod = _bound(batch=4)
    mod.forward(mx.io.DataBatch([mx.nd.ones((3, 6))]), is_train=False)
    assert mod.get_outputs()[0].shape == (3, 3) and mod.data_shapes[0].shape == (3, 6)
    p = _params(mod)
    x = np.random.uniform(-1, 1, (7, 6)).astype(np.float32)
    np.testing.assert_allclose(mod.predict(x).asnumpy(), _np_mlp(x, p)[1], rtol=1e-5,
                               atol=1e-6)
    w = mod.get_params()[0]["fc1_weight"].asnumpy()
    np.testing.assert_array_equal(mod._exec_group.execs[0].arg_dict["fc1_weight"].asnumpy(), w)


def test_aux_states_are_initialised_and_updated():
    data = mx.sym.var("data")
    sym = mx.sym.BatchNorm(data=data, name="bn",
                           moving_mean=mx.sym.var("bn_moving_mean", init=mx.init.Zero()),
                           moving_var=mx.sym.var("bn_moving_var", init=mx.init.One()))
    mod = mx.mod.Module(sym, label_names=None)
    mod.bind(data_shapes=[("data", (8, 2, 3, 3))])
    mod.init_params()
    _, aux = mod.get_params()
    assert (aux["bn_moving_var"].asnumpy() == 1).all()
    assert (aux["bn_moving_mean"].asnumpy() == 0).all()
    mod.init_optimizer()
    mod.forward(mx.io.DataBatch([mx.nd.ones((8, 2, 3, 3)) * 5]), is_train=True)
    mod.backward()
    mod.update()  # marks the parameters dirty: get_params copies them back
    _, aux = mod.get_params()
    assert (aux["bn_moving_mean"].asnumpy() > 0).all()


def test_module_errors():
    with pytest.raises(ValueError):
        mx.mod.Module(_mlp(False), data_names=("x",))
    with pytest.raises(MXNetError):
        m = mx.mod.Module(_mlp(False), label_names=None, context=[mx.cpu(0), mx.cpu(1)])
        m.bind([("data", (2, 6))])
    with pytest.raises(ValueError):
        mx.mod.Module(_mlp(False), label_names=None).bind([("x", (2, 6))])
    mod = _bound()
    with pytest.raises(MXNetError):
        mod.init_optimizer(kvstore="dist_sync")
    with pytest.raises(RuntimeError):
        mx.mod.Module(_mlp(False), label_names=None).init_params()
    with pytest.raises(ValueError):
        mod.fit(mx.io.NDArrayIter(np.zeros((4, 6))))
    inference = mx.mod.Module(_mlp(False), label_names=None)
    inference.bind([("data", (2, 6))], for_training=False)
    inference.init_params()
    inference.forward(mx.io.DataBatch([mx.nd.ones((2, 6))]))
    with pytest.raises(MXNetError):
        inference.backward()
