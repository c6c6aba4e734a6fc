"""Tests of the nn ops: forward vs NumPy/SciPy, shape rules (with parameter refinement),
gradients by finite differences, and training-mode behaviour (BatchNorm, Dropout)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opcheck import check_forward, check_grad, check_infer
from scipy.special import erf, log_softmax, softmax

import ember as mx
from ember.ir import TensorType, get_op
from ember.ir.ops import normalize_attrs

rng = np.random.default_rng(0)
U = TensorType


def _r(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def _infer(name, types, **attrs):
    op = get_op(name)
    at = normalize_attrs(op, attrs)
    if op.mode:
        at["is_train"] = False
    return op.infer(types, at)


# ---- FullyConnected ----------------------------------------------------------------------
@given(st.booleans(), st.booleans())
def test_fully_connected(flatten, no_bias):
    x, w, b = _r(2, 3, 4), _r(5, 12 if flatten else 4), _r(5)
    ins = [x, w] if no_bias else [x, w, b]
    exp = (x.reshape(2, -1) if flatten else x) @ w.T + (0 if no_bias else b)
    check_forward("FullyConnected", ins, exp, atol=1e-5, num_hidden=5, flatten=flatten,
                  no_bias=no_bias)
    check_infer("fully_connected", ins, num_hidden=5, flatten=flatten, no_bias=no_bias)


def test_fully_connected_refines_lazy_weight():
    outs, ref = _infer("FullyConnected", [U((8, 3, 4)), U((None, None)), U((None,))],
                       num_hidden=16)
    assert outs[0].shape == (8, 16) and ref[1].shape == (16, 12) and ref[2].shape == (16,)
    outs, ref = _infer("FullyConnected", [U((8, 3, 4)), U((None, None))], num_hidden=16,
                       flatten=False, no_bias=True)
    assert outs[0].shape == (8, 3, 16) and ref[1].shape == (16, 4)
    with pytest.raises(mx.base.MXNetError):
        _infer("FullyConnected", [U((8, 4)), U((16, 5)), U((16,))], num_hidden=16)


@pytest.mark.parametrize("flatten", [True, False])
def test_fully_connected_grad(flatten):
    w = _r(3, 4 if flatten else 2)
    check_grad(lambda x, w, b: mx.nd.FullyConnected(x, w, b, num_hidden=3, flatten=flatten),
               [_r(2, 2, 2), w, _r(3)])


# ---- activations -------------------------------------------------------------------------
_ACTS = {"relu": lambda x: np.maximum(x, 0), "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
         "tanh": np.tanh, "softrelu": lambda x: np.log1p(np.exp(x)),
         "softsign": lambda x: x / (1 + np.abs(x))}


@pytest.mark.parametrize("act", list(_ACTS))
def test_activation(act):
    x = _r(3, 4) + 0.1
    check_forward("Activation", [x], _ACTS[act](x.astype(np.float64)), act_type=act)
    check_infer("activation", [x], act_type=act)
    check_grad(lambda a: mx.nd.Activation(a, act_type=act), [x])
    tmpl = get_op("activation").template   # the code generators' template computes the same
    for v in (-1.5, 0.3):
        got = eval(tmpl, {"math": __import__("math")}, {"a": v, "act_type": act})
        assert abs(got - _ACTS[act](np.float64(v))) < 1e-12


_LEAKY = {"leaky": lambda x: np.where(x > 0, x, 0.25 * x),
          "elu": lambda x: np.where(x > 0, x, 0.25 * np.expm1(x)),
          "selu": lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772
                                                          * np.expm1(x)),
          "gelu": lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2))),
          "rrelu": lambda x: np.where(x > 0, x, (0.125 + 0.334) / 2 * x)}


@pytest.mark.parametrize("act", list(_LEAKY))
def test_leaky_relu(act):
    x = _r(3, 4) + 0.05
    check_forward("LeakyReLU", [x], _LEAKY[act](x.astype(np.float64)), atol=1e-6,
                  act_type=act)
    check_infer("leaky_relu", [x], act_type=act)
    def fn(a):
        with mx.autograd.predict_mode():   # rrelu is random in training
            return mx.nd.LeakyReLU(a, act_type=act)
    check_grad(fn, [x])


def test_prelu_and_rrelu_training():
    x, gamma = _r(2, 3, 4) + 0.05, np.array([0.1, 0.2, 0.3], np.float32)
    exp = np.where(x > 0, x, x * gamma.reshape(1, 3, 1))
    check_forward("LeakyReLU", [x, gamma], exp, act_type="prelu")
    check_grad(lambda a, g: mx.nd.LeakyReLU(a, g, act_type="prelu"), [x, gamma])
    check_grad(lambda a, g: mx.nd.LeakyReLU(a, g, act_type="prelu"), [x, gamma[:1]])
    _, ref = _infer("LeakyReLU", [U((2, 3, 4)), U((None,))], act_type="prelu")
    assert ref[1].shape == (3,)
    xx = mx.nd.array(-np.abs(x) - 0.1)
    xx.attach_grad()
    with mx.autograd.record():
        y = mx.nd.LeakyReLU(xx, act_type="rrelu")
    y.backward()
    slope = y.asnumpy() / xx.asnumpy()
    assert np.all((slope >= 0.125) & (slope <= 0.334)) and slope.std() > 0
    np.testing.assert_allclose(xx.grad.asnumpy(), slope, rtol=1e-5)


# ---- softmax family ----------------------------------------------------------------------
@given(st.integers(-2, 1), st.sampled_from([None, 0.5, 2.0]))
def test_softmax_family(axis, temp):
    x = _r(3, 4) * 10
    x64 = x.astype(np.float64) / (temp or 1.0)
    check_forward("softmax", [x], softmax(x64, axis=axis), axis=axis, temperature=temp)
    check_forward("log_softmax", [x], log_softmax(x64, axis=axis), atol=1e-5, axis=axis,
                  temperature=temp)
    check_forward("softmin", [x], softmax(-x64, axis=axis), axis=axis, temperature=temp)
    check_infer("softmax", [x], axis=axis)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmin"])
def test_softmax_grad(name):
    check_grad(lambda a: getattr(mx.nd, name)(a, axis=0, temperature=2.0), [_r(3, 2)])


@pytest.mark.parametrize("axis", [2, 5, -3])
def test_axis_out_of_range_raises_eager_and_hybridized(axis):
    """An axis beyond the rank wrapped silently in the eager kernels (axis % ndim)."""
    x, p = mx.nd.ones((2, 3)), mx.nd.ones(3)
    calls = {"softmax": lambda F, a: F.softmax(a, axis=axis),
             "log_softmax": lambda F, a: F.log_softmax(a, axis=axis),
             "softmin": lambda F, a: F.softmin(a, axis=axis),
             "batch_norm": lambda F, a: F.BatchNorm(a, p, p, p, p, axis=axis),
             "layer_norm": lambda F, a: F.LayerNorm(a, p, p, axis=axis)}
    for name, call in calls.items():
        msg = f"{name}: axis {axis} is out of range for rank 2"
        with pytest.raises(mx.base.MXNetError, match=msg):
            call(mx.nd, x)

        class Net(mx.gluon.HybridBlock):
            def hybrid_forward(self, F, a):
                return call(F, a)
        if name in ("softmax", "log_softmax", "softmin"):   # the others read p eagerly
            net = Net()
            net.hybridize()
            with pytest.raises(mx.base.MXNetError, match=msg):
                net(x)
            with pytest.raises(mx.base.MXNetError, match=msg):
                call(mx.sym, mx.sym.var("a")).infer_shape(a=(2, 3))


def test_softmax_stable_and_length():
    big = np.array([[1000.0, 0.0, -1000.0]], np.float32)
    np.testing.assert_allclose(mx.nd.softmax(mx.nd.array(big)).asnumpy(), [[1, 0, 0]])
    x, ln = _r(2, 4), np.array([2, 3], np.int32)
    exp = np.zeros((2, 4))
    exp[0, :2], exp[1, :3] = softmax(x[0, :2]), softmax(x[1, :3])
    check_forward("softmax", [x, ln], exp, use_length=True)


def test_softmax_cross_entropy():
    x, lab = _r(3, 4), np.array([0, 3, 1], np.float32)
    exp = -np.sum(log_softmax(x.astype(np.float64), axis=1)[np.arange(3), [0, 3, 1]])
    check_forward("softmax_cross_entropy", [x, lab], np.array([exp]), atol=1e-5)
    check_infer("softmax_cross_entropy", [x, lab])
    check_grad(lambda a, b: mx.nd.softmax_cross_entropy(a, b), [x, lab], wrt=[0])


# ---- normalisation -----------------------------------------------------------------------
def _bn_ref(x, gamma, beta, mean, var, eps, axis=1):
    shp = [1] * x.ndim
    shp[axis] = -1
    r = lambda v: v.reshape(shp)  # noqa: E731
    return (x - r(mean)) / np.sqrt(r(var) + eps) * r(gamma) + r(beta)


def test_batch_norm_inference_and_training():
    x = _r(4, 3, 2, 2)
    gamma, beta = _r(3), _r(3)
    mm, mv = _r(3), np.abs(_r(3)) + 0.5
    exp = _bn_ref(x, gamma, beta, mm, mv, 1e-3)
    check_forward("BatchNorm", [x, gamma, beta, mm, mv], exp, atol=1e-5, fix_gamma=False)
    check_infer("batch_norm", [x, gamma, beta, mm, mv], fix_gamma=False)
    check_infer("batch_norm", [x, gamma, beta, mm, mv], output_mean_var=True)
    nds = [mx.nd.array(a) for a in (x, gamma, beta, mm, mv)]
    with mx.autograd.train_mode():
        out = mx.nd.BatchNorm(*nds, fix_gamma=True, momentum=0.8)
    bm, bv = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    np.testing.assert_allclose(out.asnumpy(), _bn_ref(x, np.ones(3), beta, bm, bv, 1e-3),
                               atol=1e-5)
    np.testing.assert_allclose(nds[3].asnumpy(), mm * 0.8 + bm * 0.2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nds[4].asnumpy(), mv * 0.8 + bv * 0.2, rtol=1e-5)
    xt = x.transpose(0, 2, 3, 1)
    with mx.autograd.train_mode():
        out, m, invstd = mx.nd.BatchNorm(mx.nd.array(xt), *nds[1:], output_mean_var=True,
                                         axis=-1)
    np.testing.assert_allclose(m.asnumpy(), bm, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(invstd.asnumpy(), 1 / np.sqrt(bv + 1e-3), rtol=1e-4)


def test_batch_norm_refines_params():
    outs, ref = _infer("BatchNorm", [U((8, 5, 7, 7))] + [U((None,))] * 4)
    assert outs[0].shape == (8, 5, 7, 7) and all(t.shape == (5,) for t in ref[1:])


@pytest.mark.parametrize("fix_gamma", [True, False])
def test_batch_norm_grad_training(fix_gamma):
    def fn(x, g, b):
        mm, mv = mx.nd.zeros((2,), dtype=np.float64), mx.nd.ones((2,), dtype=np.float64)
        with mx.autograd.train_mode():
            return mx.nd.BatchNorm(x, g, b, mm, mv, fix_gamma=fix_gamma, axis=1)
    check_grad(fn, [_r(3, 2, 2), _r(2), _r(2)], rtol=1e-3, atol=1e-5)


def test_batch_norm_grad_inference():
    mv = np.abs(_r(2)) + 0.5
    check_grad(lambda x, g, b, m, v: mx.nd.BatchNorm(x, g, b, m, v, fix_gamma=False,
                                                     use_global_stats=True),
               [_r(3, 2, 2), _r(2), _r(2), _r(2), mv], wrt=[0, 1, 2])


def test_layer_group_instance_norm():
    x = _r(2, 4, 3)
    g4, b4 = _r(4), _r(4)
    m, v = x.mean(axis=1, keepdims=True), x.var(axis=1, keepdims=True)
    exp = (x - m) / np.sqrt(v + 1e-5) * g4.reshape(1, 4, 1) + b4.reshape(1, 4, 1)
    check_forward("LayerNorm", [x, g4, b4], exp, atol=1e-5, axis=1)
    check_infer("layer_norm", [x, g4, b4], axis=1, output_mean_var=True)
    check_grad(lambda a, g, b: mx.nd.LayerNorm(a, g, b, axis=1), [x, g4, b4], rtol=1e-3)
    g2, b2 = _r(2), _r(2)
    xg = x.reshape(2, 2, -1)
    y = (xg - xg.mean(-1, keepdims=True)) / np.sqrt(xg.var(-1, keepdims=True) + 1e-5)
    exp = (y * g2.reshape(1, 2, 1) + b2.reshape(1, 2, 1)).reshape(x.shape)
    check_forward("GroupNorm", [x, g2, b2], exp, atol=1e-5, num_groups=2)
    check_infer("group_norm", [x, g2, b2], num_groups=2, output_mean_var=True)
    check_grad(lambda a, g, b: mx.nd.GroupNorm(a, g, b, num_groups=2), [x, g2, b2],
               rtol=1e-3)
    m, v = x.mean(axis=2, keepdims=True), x.var(axis=2, keepdims=True)
    exp = (x - m) / np.sqrt(v + 1e-3) * g4.reshape(1, 4, 1) + b4.reshape(1, 4, 1)
    check_forward("InstanceNorm", [x, g4, b4], exp, atol=1e-5)
    check_grad(lambda a, g, b: mx.nd.InstanceNorm(a, g, b), [x, g4, b4], rtol=1e-3)
    _, ref = _infer("LayerNorm", [U((2, 4, 3))] + [U((None,))] * 2)
    assert ref[1].shape == (3,)
    _, ref = _infer("GroupNorm", [U((2, 4, 3))] + [U((None,))] * 2, num_groups=4)
    assert ref[2].shape == (4,)


# ---- Dropout -----------------------------------------------------------------------------
def test_dropout():
    x = _r(50, 40) + 3.0
    assert isinstance(mx.nd.Dropout(mx.nd.array(x)), mx.nd.NDArray)   # the mask is hidden
    np.testing.assert_array_equal((mx.nd.Dropout(mx.nd.array(x))).asnumpy(), x)
    xx = mx.nd.array(x)
    xx.attach_grad()
    with mx.autograd.record():
        y = (mx.nd.Dropout(xx, p=0.3))
    y.backward()
    yv = y.asnumpy()
    kept = yv != 0
    assert 0.6 < kept.mean() < 0.8
    np.testing.assert_allclose(yv[kept], x[kept] / 0.7, rtol=1e-6)
    np.testing.assert_allclose(xx.grad.asnumpy(), kept / 0.7, rtol=1e-6)  # the same mask
    y = (mx.nd.Dropout(mx.nd.array(x), p=0.5, mode="always", axes=(1,))).asnumpy()
    assert np.all((y == 0).all(axis=1) == (y == 0).any(axis=1))   # mask shared on axis 1
    assert 0 < (y == 0).all(axis=1).mean() < 1
    check_infer("dropout", [x], p=0.3)


# ---- Embedding, L2Normalization ----------------------------------------------------------
def test_embedding():
    w, idx = _r(5, 3), np.array([[0, 4], [2, 9]], np.float32)
    check_forward("Embedding", [idx, w], w[np.clip(idx.astype(int), 0, 4)], input_dim=5,
                  output_dim=3)
    check_infer("embedding", [idx, w], input_dim=5, output_dim=3)
    outs, ref = _infer("Embedding", [U((2, 7)), U((None, None))], input_dim=5, output_dim=3)
    assert outs[0].shape == (2, 7, 3) and ref[1].shape == (5, 3)
    check_grad(lambda i, w: mx.nd.Embedding(i, w, input_dim=5, output_dim=3), [idx, w],
               wrt=[1])


@pytest.mark.parametrize("mode,axes", [("instance", (1, 2, 3)), ("channel", (1,)),
                                       ("spatial", (2, 3))])
def test_l2_normalization(mode, axes):
    x = _r(2, 3, 2, 2)
    exp = x / np.sqrt(np.sum(x.astype(np.float64) ** 2, axis=axes, keepdims=True) + 1e-10)
    check_forward("L2Normalization", [x], exp, mode=mode)
    check_infer("l2_normalization", [x], mode=mode)
    check_grad(lambda a: mx.nd.L2Normalization(a, mode=mode), [x])


def test_make_loss_gradient_ignores_the_head_and_normalises():
    import ember as mx
    x = mx.nd.array([[0.5, -1.0], [2.0, 3.0]])
    for norm, expected in [("null", 2.0), ("batch", 1.0), ("valid", 2.0 / 3)]:
        x.attach_grad()
        with mx.autograd.record():
            y = mx.nd.MakeLoss(x, grad_scale=2.0, normalization=norm)
        y.backward(mx.nd.full((2, 2), 7.0))
        np.testing.assert_allclose(y.asnumpy(), x.asnumpy())
        np.testing.assert_allclose(x.grad.asnumpy(), np.full((2, 2), expected), rtol=1e-6)
