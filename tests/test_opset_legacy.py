"""MXNet's legacy loss layers (SoftmaxOutput, regression outputs), batch_take and
_identity_with_attr_like_rhs: forward and their own gradients against NumPy, shapes, and
Module training with SoftmaxOutput."""
import numpy as np
import pytest

import ember as mx
from ember import autograd, nd


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _grad_of(fn, x, *rest, head=None):
    x = nd.array(x, dtype="float64")
    x.attach_grad()
    with autograd.record():
        y = fn(x, *[nd.array(r, dtype="float64") for r in rest])
    y.backward(None if head is None else nd.array(head, dtype="float64"))
    return y.asnumpy(), x.grad.asnumpy()


@pytest.mark.parametrize("norm", ["null", "batch", "valid"])
def test_softmax_output_gradient_is_softmax_minus_onehot(norm):
    rs = np.random.RandomState(0)
    x, lab = rs.randn(5, 4), np.array([0, 3, 1, 1, 2])
    head = rs.randn(5, 4)  # ignored: SoftmaxOutput defines its own gradient
    y, g = _grad_of(lambda a, b: nd.SoftmaxOutput(a, b, grad_scale=1.5, normalization=norm),
                    x, lab, head=head)
    p = _softmax(x, 1)
    np.testing.assert_allclose(y, p, rtol=1e-12)
    scale = 1.5 / (1 if norm == "null" else 5)
    np.testing.assert_allclose(g, (p - np.eye(4)[lab]) * scale, rtol=1e-12)


def test_softmax_output_ignore_label_valid_normalisation_and_smoothing():
    rs = np.random.RandomState(1)
    x, lab = rs.randn(4, 3), np.array([2, -1, 0, -1])
    _, g = _grad_of(lambda a, b: nd.SoftmaxOutput(a, b, use_ignore=True, ignore_label=-1,
                                                  normalization="valid"), x, lab)
    p = _softmax(x, 1)
    want = p - np.eye(3)[np.where(lab < 0, 0, lab)]
    want[lab < 0] = 0
    np.testing.assert_allclose(g, want / 2, rtol=1e-12)
    _, g = _grad_of(lambda a, b: nd.SoftmaxOutput(a, b, smooth_alpha=0.3), x, [2, 1, 0, 0])
    target = np.full((4, 3), 0.15)
    target[np.arange(4), [2, 1, 0, 0]] = 0.7
    np.testing.assert_allclose(g, p - target, rtol=1e-12)


def test_softmax_output_multi_output_preserve_shape_probabilities_and_out_grad():
    rs = np.random.RandomState(2)
    x, lab = rs.randn(2, 3, 4), rs.randint(0, 3, (2, 4))
    y, g = _grad_of(lambda a, b: nd.SoftmaxOutput(a, b, multi_output=True), x, lab)
    p = _softmax(x, 1)
    np.testing.assert_allclose(y, p, rtol=1e-12)
    onehot = np.moveaxis(np.eye(3)[lab], -1, 1)
    np.testing.assert_allclose(g, (p - onehot) / 4, rtol=1e-12)  # 'null': / spatial size
    y, g = _grad_of(lambda a, b: nd.SoftmaxOutput(a, b, preserve_shape=True), x, lab[:, :3])
    np.testing.assert_allclose(y, _softmax(x, -1), rtol=1e-12)
    prob = _softmax(rs.randn(2, 5), 1)
    x2, head = rs.randn(2, 5), rs.randn(2, 5)
    _, g = _grad_of(lambda a, b: nd.SoftmaxOutput(a, b, out_grad=True, grad_scale=2.0), x2,
                    prob, head=head)
    np.testing.assert_allclose(g, 2 * (_softmax(x2, 1) - prob) * head, rtol=1e-12)


def test_regression_outputs():
    rs = np.random.RandomState(3)
    x, lab = rs.randn(4, 3), rs.randn(4, 3)
    for fn, fwd, grad in (
            (nd.LinearRegressionOutput, lambda v: v, lambda o: o - lab),
            (nd.LogisticRegressionOutput, lambda v: 1 / (1 + np.exp(-v)), lambda o: o - lab),
            (nd.MAERegressionOutput, lambda v: v, lambda o: np.sign(o - lab))):
        y, g = _grad_of(lambda a, b, f=fn: f(a, b, grad_scale=3.0), x, lab, head=lab * 7)
        np.testing.assert_allclose(y, fwd(x), rtol=1e-12)
        np.testing.assert_allclose(g, grad(fwd(x)) * 3.0 / 3, rtol=1e-12)
    # an (n, 1) prediction takes an (n,) label
    s = mx.sym.LinearRegressionOutput(mx.sym.var("d"), name="lro")
    args, outs, _ = s.infer_shape(d=(6, 1))
    assert args == [(6, 1), (6,)] and outs == [(6, 1)]
    with pytest.raises(mx.base.MXNetError):
        s.infer_shape(d=(6, 2), lro_label=(5, 2))


def test_batch_take_and_its_missing_gradient():
    a = np.arange(12.0).reshape(3, 4)
    out = nd.batch_take(nd.array(a), nd.array([1, 7, -2], dtype="int32"))
    np.testing.assert_allclose(out.asnumpy(), [1.0, 7.0, 8.0])  # indices clipped
    x = nd.array(a)
    x.attach_grad()
    with autograd.record():
        y = nd.batch_take(x, nd.array([0, 1, 2], dtype="int32"))
    with pytest.raises(mx.base.MXNetError):
        y.backward()


def test_identity_with_attr_like_rhs_shapes_both_ways():
    w = mx.sym.var("w")
    t = mx.sym._internal._identity_with_attr_like_rhs(mx.sym.broadcast_add(w, mx.sym.var(
        "s", shape=(1,))), w)
    net = mx.sym.FullyConnected(mx.sym.var("data"), weight=t, num_hidden=11, no_bias=True)
    args, _, _ = net.infer_shape(data=(7, 100))
    assert dict(zip(net.list_arguments(), args))["w"] == (11, 100)
    lhs, rhs = nd.array([1.0, 2.0]), nd.array([5.0, 6.0])
    lhs.attach_grad()
    rhs.attach_grad()
    with autograd.record():
        y = nd._identity_with_attr_like_rhs(lhs, rhs)
    y.backward(nd.array([3.0, 4.0]))
    np.testing.assert_allclose(lhs.grad.asnumpy(), [3.0, 4.0])
    np.testing.assert_allclose(rhs.grad.asnumpy(), [0.0, 0.0])


def test_softmax_output_symbol_label_and_types():
    fc = mx.sym.FullyConnected(mx.sym.Cast(mx.sym.var("data"), dtype="float32"), num_hidden=4,
                               name="fc1")
    net = mx.sym.SoftmaxOutput(fc, name="softmax")
    assert net.list_arguments() == ["data", "fc1_weight", "fc1_bias", "softmax_label"]
    args, outs, _ = net.infer_shape(data=(8, 3))
    assert args[-1] == (8,) and outs == [(8, 4)]
    arg, out, _ = net.infer_type(data=np.float16)
    assert arg == [np.float16, np.float32, np.float32, np.float32] and out == [np.float32]


def test_module_trains_with_softmax_output():
    rs = np.random.RandomState(0)
    x = rs.randn(64, 2).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("float32")
    net = mx.sym.SoftmaxOutput(mx.sym.FullyConnected(mx.sym.var("data"), num_hidden=2),
                               name="softmax")
    it = mx.io.NDArrayIter(x, y, batch_size=16, label_name="softmax_label")
    mod = mx.mod.Module(net, data_names=["data"], label_names=["softmax_label"])
    mx.random.seed(0)
    mod.fit(it, num_epoch=20, optimizer="sgd", optimizer_params={"learning_rate": 0.5},
            initializer=mx.init.Xavier())
    it.reset()
    acc = mod.score(it, mx.metric.Accuracy())[0][1]
    assert acc > 0.95
