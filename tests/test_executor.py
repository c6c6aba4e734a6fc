"""Executor: bind/simple_bind, forward against NumPy, backward against finite differences."""
import numpy as np
import pytest

import ember as mx
from ember.base import MXNetError


def _net():
    x = mx.sym.var("x")
    fc = mx.sym.FullyConnected(x, num_hidden=3, name="fc")
    return mx.sym.sum(mx.sym.tanh(fc), name="loss")


def _np_loss(x, w, b):
    return np.tanh(x @ w.T + b).sum()


def test_simple_bind_forward_matches_numpy():
    exe = _net().simple_bind(mx.cpu(), x=(4, 5))
    assert [a.shape for a in exe.arg_arrays] == [(4, 5), (3, 5), (3,)]
    assert sorted(exe.grad_dict) == ["fc_bias", "fc_weight", "x"]
    rng = np.random.default_rng(0)
    vals = {k: rng.standard_normal(a.shape).astype(np.float32) for k, a in exe.arg_dict.items()}
    out = exe.forward(**vals)
    np.testing.assert_allclose(out[0].asnumpy(), _np_loss(vals["x"], vals["fc_weight"],
                                                          vals["fc_bias"]), rtol=1e-5)
    assert exe.outputs[0] is out[0]


def test_backward_matches_finite_differences():
    rng = np.random.default_rng(1)
    x, w, b = (rng.standard_normal(s) for s in ((2, 4), (3, 4), (3,)))
    args = {"x": mx.nd.array(x, dtype="float64"), "fc_weight": mx.nd.array(w, dtype="float64"),
            "fc_bias": mx.nd.array(b, dtype="float64")}
    grads = {k: mx.nd.zeros(v.shape, dtype="float64") for k, v in args.items()}
    exe = _net().bind(mx.cpu(), args, args_grad=grads)
    exe.forward(is_train=True)
    exe.backward()
    eps = 1e-6
    params = {"x": x, "w": w, "b": b}
    for name, key in (("x", "x"), ("fc_weight", "w"), ("fc_bias", "b")):
        base = params[key]
        num = np.zeros_like(base)
        for i in np.ndindex(base.shape):
            hi, lo = base.copy(), base.copy()
            hi[i] += eps
            lo[i] -= eps
            num[i] = (_np_loss(**{**params, key: hi})
                      - _np_loss(**{**params, key: lo})) / (2 * eps)
        np.testing.assert_allclose(exe.grad_dict[name].asnumpy(), num, rtol=1e-5, atol=1e-7)


def test_grad_req_add_and_null():
    x = mx.sym.var("x")
    y = x * x
    exe = y.simple_bind(mx.cpu(), grad_req="add", x=(3,))
    exe.arg_dict["x"][:] = mx.nd.array([1.0, 2.0, 3.0])
    for _ in range(2):
        exe.forward(is_train=True)
        exe.backward()
    np.testing.assert_allclose(exe.grad_dict["x"].asnumpy(), [4.0, 8.0, 12.0])
    exe = y.simple_bind(mx.cpu(), grad_req="null", x=(3,))
    assert exe.grad_arrays == [None]
    exe.forward(is_train=True)
    exe.backward()


def test_stop_gradient_and_out_grads():
    x = mx.sym.var("x")
    y = mx.sym.Group([x * 2, mx.sym.BlockGrad(x * 3)])
    exe = y.simple_bind(mx.cpu(), x=(2,))
    exe.forward(is_train=True, x=mx.nd.array([1.0, 1.0]))
    exe.backward([mx.nd.array([1.0, 0.5]), mx.nd.ones((2,))])
    np.testing.assert_allclose(exe.grad_dict["x"].asnumpy(), [2.0, 1.0])


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_batchnorm_aux_states_update_in_training(backend, monkeypatch):
    monkeypatch.setenv("EMBER_BACKEND", backend)
    data = mx.sym.var("data")
    bn = mx.sym.BatchNorm(data, name="bn", momentum=0.5, fix_gamma=False)
    exe = bn.simple_bind(mx.cpu(), data=(4, 2))
    assert sorted(exe.aux_dict) == ["bn_moving_mean", "bn_moving_var"]
    exe.arg_dict["bn_gamma"][:] = 1
    exe.aux_dict["bn_moving_var"][:] = 1
    x = np.array([[1, 2], [3, 4], [5, 6], [7, 8]], np.float32)
    exe.forward(is_train=True, data=x)
    np.testing.assert_allclose(exe.aux_dict["bn_moving_mean"].asnumpy(), [2.0, 2.5], rtol=1e-5)
    out = exe.forward(is_train=False, data=x)[0].asnumpy()
    assert out.shape == (4, 2)


def test_eval_bind_errors_and_copy_params():
    a = mx.sym.var("a")
    b = mx.sym.transpose(a) + 1
    (res,) = b.eval(ctx=mx.cpu(), a=mx.nd.array([[1.0, 2.0]]))
    np.testing.assert_allclose(res.asnumpy(), [[2.0], [3.0]])
    with pytest.raises(MXNetError):
        b.bind(mx.cpu(), [])
    with pytest.raises(MXNetError):  # q's shape cannot be inferred through broadcasting
        mx.sym.broadcast_add(mx.sym.var("p"), mx.sym.var("q")).simple_bind(mx.cpu(), p=(2,))
    # while MXNet's Symbol + Symbol is the same-shape elemwise_add: q is (2,) too
    exe = (mx.sym.var("p") + mx.sym.var("q")).simple_bind(mx.cpu(), p=(2,))
    assert exe.arg_dict["q"].shape == (2,)
    exe = _net().simple_bind(mx.cpu(), x=(1, 2))
    exe.copy_params_from({"fc_bias": mx.nd.ones((3,))})
    np.testing.assert_allclose(exe.arg_dict["fc_bias"].asnumpy(), 1.0)
    with pytest.raises(MXNetError):
        exe.copy_params_from({"nope": mx.nd.ones((1,))})
    new = exe.reshape(x=(5, 2))
    assert new.arg_dict["x"].shape == (5, 2) and new.arg_dict["fc_bias"] is exe.arg_dict["fc_bias"]


def test_debug_str_memory():
    data = mx.sym.var("data")
    y = data
    for _ in range(4):
        y = y * y

    def total(sym, **kw):
        text = sym.simple_bind(mx.cpu(), data=(256, 1024), **kw).debug_str()
        return int(text.rsplit("Total ", 1)[1].split()[0])
    assert total(y) == 4 and total(y, grad_req="null") == 2
    assert total(mx.sym.stop_gradient(y)) == 2


def test_backward_reuses_the_forward_run_dropout_mask():
    """backward runs only the backward half: the dropout mask of forward is the one used."""
    x = mx.sym.var("x")
    y = mx.sym.Dropout(x, p=0.5, name="drop")
    exe = y.simple_bind(mx.cpu(), x=(64,))
    out = exe.forward(is_train=True, x=np.ones(64, np.float32))[0].asnumpy()
    assert 0 < (out == 0).sum() < 64
    exe.backward(mx.nd.ones((64,)))
    np.testing.assert_allclose(exe.grad_dict["x"].asnumpy(), out)  # mask * 1/(1-p) each
    assert (exe.forward(is_train=False)[0].asnumpy() == 1).all()


def test_forward_runs_an_executable_of_the_default_backend(monkeypatch):
    monkeypatch.setenv("EMBER_BACKEND", "reference")
    exe = _net().simple_bind(mx.cpu(), x=(2, 4))
    exe.forward(is_train=True)
    exe.forward()
    progs = exe._programs
    assert sorted(progs) == [(False, False), (True, True)]
    assert all(p.forward.backend == "reference" for p in progs.values())
    assert progs[(True, True)].backward.backend == "reference"
    assert progs[(False, False)].backward is None


def test_bind_raises_when_a_gradient_must_flow_through_an_op_without_one():
    # MXNet builds the backward graph at bind: batch_take has no gradient (test_zero_prop2)
    x, idx = mx.sym.var("x"), mx.sym.var("idx")
    y = mx.sym.batch_take(x, idx)
    kw = dict(x=(4, 3), idx=(4,), type_dict={"x": np.float32, "idx": np.int32})
    with pytest.raises(MXNetError, match="bind: .*batch_take has no gradient"):
        y.simple_bind(mx.cpu(), **kw)
    with pytest.raises(MXNetError, match="batch_take"):
        y.bind(mx.cpu(), {"x": np.ones((4, 3), np.float32), "idx": np.zeros(4, np.int32)},
               args_grad={"x": mx.nd.zeros((4, 3))})
    # stop_gradient cuts the path, and without gradient buffers nothing flows
    exe = mx.sym.stop_gradient(y).simple_bind(mx.cpu(), **kw)
    exe.forward(is_train=True)
    exe.backward()
    assert not exe.grad_dict["x"].asnumpy().any()
    exe = y.simple_bind(mx.cpu(), grad_req="null", **kw)
    data = np.arange(12, dtype=np.float32).reshape(4, 3)
    out = exe.forward(x=data, idx=np.array([0, 2, 1, 2]))[0].asnumpy()
    np.testing.assert_array_equal(out, data[np.arange(4), [0, 2, 1, 2]])
