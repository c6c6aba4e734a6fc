"""The fused RNN op: forward against NumPy cells and gluon.rnn's layers, gradients against
finite differences, MXNet's parameter layout, shapes and the symbol API."""
import numpy as np
import pytest

import ember as mx
from ember import autograd, gluon, nd
from ember.ir.opset_rnn import _ATTRS, param_layout, param_size


def _sig(x):
    return 1 / (1 + np.exp(-x))


def _np_layer(mode, x, h, c, w):
    """A plain NumPy loop over time for one direction (the test's own reference)."""
    ys = []
    for xt in x:
        if mode == "lstm":
            a = xt @ w["wx"].T + w["bx"] + h @ w["wh"].T + w["bh"]
            i, f, g, o = np.split(a, 4, axis=1)
            c = _sig(f) * c + _sig(i) * np.tanh(g)
            h = _sig(o) * np.tanh(c)
            if "wr" in w:
                h = h @ w["wr"].T
        elif mode == "gru":
            ax, ah = xt @ w["wx"].T + w["bx"], h @ w["wh"].T + w["bh"]
            r = _sig(ax[:, :h.shape[1]] + ah[:, :h.shape[1]])
            z = _sig(ax[:, h.shape[1]:-h.shape[1]] + ah[:, h.shape[1]:-h.shape[1]])
            n = np.tanh(ax[:, -h.shape[1]:] + r * ah[:, -h.shape[1]:])
            h = (1 - z) * n + z * h
        else:
            a = xt @ w["wx"].T + w["bx"] + h @ w["wh"].T + w["bh"]
            h = np.tanh(a) if mode == "rnn_tanh" else np.maximum(a, 0)
        ys.append(h)
    return np.stack(ys), h, c


def _np_rnn(mode, x, flat, hx, cx, at):
    layers, d = at["num_layers"], 2 if at["bidirectional"] else 1
    ws = [{k: flat[o:o + int(np.prod(s))].reshape(s) for k, (o, s) in e.items()}
          for e in param_layout(at, x.shape[2])]
    hy, cy = [], []
    for layer in range(layers):
        outs = []
        for di in range(d):
            k = layer * d + di
            seq = x if di == 0 else x[::-1]
            y, h, c = _np_layer(mode, seq, hx[k], None if cx is None else cx[k], ws[k])
            outs.append(y if di == 0 else y[::-1])
            hy.append(h)
            cy.append(c)
        x = np.concatenate(outs, axis=2)
    return x, np.stack(hy), (np.stack(cy) if cx is not None else None)


def _inputs(mode, layers, bi, t=4, n=3, i=5, h=6, proj=None, seed=0):
    rs = np.random.RandomState(seed)
    at = {**_ATTRS, "state_size": h, "num_layers": layers, "mode": mode, "bidirectional": bi,
          "state_outputs": True, "projection_size": proj}
    d, r = 2 if bi else 1, proj or h
    x = rs.randn(t, n, i)
    flat = rs.randn(param_size(at, i)) * 0.4
    hx = rs.randn(layers * d, n, r) * 0.5
    cx = rs.randn(layers * d, n, h) * 0.5 if mode == "lstm" else None
    return at, x, flat, hx, cx


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("layers,bi", [(1, False), (2, True), (2, False)])
def test_forward_matches_numpy_loops(mode, layers, bi):
    at, x, flat, hx, cx = _inputs(mode, layers, bi)
    args = [x, flat, hx] + ([cx] if cx is not None else [])
    kw = {k: at[k] for k in ("state_size", "num_layers", "mode", "bidirectional")}
    out = nd.RNN(*[nd.array(a, dtype="float64") for a in args], state_outputs=True, **kw)
    ref = _np_rnn(mode, x, flat, hx, cx, at)
    for got, want in zip(out, ref):
        np.testing.assert_allclose(got.asnumpy(), want, rtol=1e-10, atol=1e-12)


def test_param_size_is_mxnets_formula():
    at = {**_ATTRS, "state_size": 7, "num_layers": 3, "mode": "lstm", "bidirectional": True}
    # (I + H + 2) * 4H * D for the first layer, (H * D + H + 2) * 4H * D for the others
    assert param_size(at, 5) == (5 + 7 + 2) * 28 * 2 + 2 * (14 + 7 + 2) * 28 * 2
    at["projection_size"] = 3
    assert param_size(at, 5) == (5 + 3 + 2) * 56 + 2 * (6 + 3 + 2) * 56 + 3 * 7 * 3 * 2
    last = param_layout(at, 5)[-1]
    assert last["bh"][0] + last["bh"][1][0] == param_size(at, 5)


def test_lstm_projection_matches_numpy():
    at, x, flat, hx, cx = _inputs("lstm", 2, True, proj=4)
    out = nd.RNN(nd.array(x, dtype="float64"), nd.array(flat, dtype="float64"),
                 nd.array(hx, dtype="float64"), nd.array(cx, dtype="float64"), state_size=6,
                 num_layers=2, mode="lstm", bidirectional=True, projection_size=4,
                 state_outputs=True)
    assert out[0].shape == (4, 3, 8) and out[1].shape == (4, 3, 4) and out[2].shape == (4, 3, 6)
    for got, want in zip(out, _np_rnn("lstm", x, flat, hx, cx, at)):
        np.testing.assert_allclose(got.asnumpy(), want, rtol=1e-10, atol=1e-12)


def _fused_params(layer, layers, d):
    """Gluon's parameters packed as MXNet packs them: all weights, then all biases."""
    names = [f"{j}{i}_{g}_{t}" for t in ("weight", "bias") for i in range(layers)
             for j in "lr"[:d] for g in ("i2h", "h2h")]
    return np.concatenate([getattr(layer, n).data().asnumpy().ravel() for n in names])


@pytest.mark.parametrize("cls,mode", [(gluon.rnn.LSTM, "lstm"), (gluon.rnn.GRU, "gru"),
                                      (gluon.rnn.RNN, "rnn_tanh")])
def test_matches_gluon_layers_with_the_same_weights(cls, mode):
    mx.random.seed(3)
    layer = cls(6, num_layers=2, bidirectional=True, input_size=5,
                **({"activation": "tanh"} if mode == "rnn_tanh" else {}))
    layer.initialize(mx.init.Uniform(0.5))
    x = nd.array(np.random.RandomState(1).randn(4, 3, 5))
    states = layer.begin_state(3)
    states = [nd.array(np.random.RandomState(2 + i).randn(*s.shape)) for i, s in
              enumerate(states)]
    want, want_states = layer(x, states)
    flat = _fused_params(layer, 2, 2)
    got = nd.RNN(x, nd.array(flat), *states, state_size=6, num_layers=2, mode=mode,
                 bidirectional=True, state_outputs=True)
    np.testing.assert_allclose(got[0].asnumpy(), want.asnumpy(), rtol=1e-5, atol=1e-6)
    for g, w in zip(got[1:], want_states):
        np.testing.assert_allclose(g.asnumpy(), w.asnumpy(), rtol=1e-5, atol=1e-6)


def _loss(args, kw, heads):
    out = nd.RNN(*args, **kw)
    return sum((o * h).sum() for o, h in zip(out, heads))


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh", "rnn_relu"])
@pytest.mark.parametrize("lengths", [False, True])
def test_gradients_match_finite_differences(mode, lengths):
    at, x, flat, hx, cx = _inputs(mode, 2, True, t=3, n=2, i=3, h=3, seed=4)
    args = [x, flat, hx] + ([cx] if cx is not None else [])
    kw = {"state_size": 3, "num_layers": 2, "mode": mode, "bidirectional": True,
          "state_outputs": True}
    if lengths:
        args.append(np.array([3.0, 1.0]))
        kw["use_sequence_length"] = True
    arrs = [nd.array(a, dtype="float64") for a in args]
    rs = np.random.RandomState(9)
    heads = [nd.array(rs.randn(*o.shape), dtype="float64") for o in nd.RNN(*arrs, **kw)]
    n_diff = len(arrs) - lengths
    for a in arrs[:n_diff]:
        a.attach_grad()
    with autograd.record():
        loss = _loss(arrs, kw, heads)
    loss.backward()
    eps = 1e-6
    for k in range(n_diff):
        base = args[k]
        num = np.zeros(base.size)
        for j in range(0, base.size, max(1, base.size // 25)):
            plus, minus = base.copy().ravel(), base.copy().ravel()
            plus[j] += eps
            minus[j] -= eps
            vals = []
            for v in (plus, minus):
                trial = list(arrs)
                trial[k] = nd.array(v.reshape(base.shape), dtype="float64")
                vals.append(_loss(trial, kw, heads).asscalar())
            num[j] = (vals[0] - vals[1]) / (2 * eps)
            assert abs(arrs[k].grad.asnumpy().ravel()[j] - num[j]) < 1e-6 * (1 + abs(num[j])), \
                (mode, k, j)


def test_sequence_length_masks_steps_and_states():
    at, x, flat, hx, cx = _inputs("gru", 1, True, t=4, n=2)
    kw = {"state_size": 6, "num_layers": 1, "mode": "gru", "bidirectional": True,
          "state_outputs": True, "use_sequence_length": True}
    out = nd.RNN(nd.array(x), nd.array(flat), nd.array(hx), nd.array([4, 2]), **kw)
    short = nd.RNN(nd.array(x[:2, 1:]), nd.array(flat), nd.array(hx[:, 1:]),
                   state_size=6, num_layers=1, mode="gru", bidirectional=True,
                   state_outputs=True)
    np.testing.assert_allclose(out[0].asnumpy()[:2, 1:], short[0].asnumpy(), rtol=1e-5)
    assert np.all(out[0].asnumpy()[2:, 1] == 0)
    np.testing.assert_allclose(out[1].asnumpy()[:, 1:], short[1].asnumpy(), rtol=1e-5)


def test_dropout_between_layers_only_in_training():
    at, x, flat, hx, cx = _inputs("rnn_tanh", 2, False)
    args = [nd.array(a) for a in (x, flat, hx)]
    kw = {"state_size": 6, "num_layers": 2, "mode": "rnn_tanh", "p": 0.5}
    plain = nd.RNN(*args, state_size=6, num_layers=2, mode="rnn_tanh")
    np.testing.assert_allclose(nd.RNN(*args, **kw).asnumpy(), plain.asnumpy(), rtol=1e-6)
    for a in args:
        a.attach_grad()
    with autograd.record():
        y = nd.RNN(*args, **kw)
    assert np.abs(y.asnumpy() - plain.asnumpy()).max() > 1e-3
    y.backward()
    assert np.isfinite(args[1].grad.asnumpy()).all()


def test_symbol_shapes_and_arguments():
    data = mx.sym.Variable("data")
    s = mx.sym.RNN(data, state_size=10, num_layers=2, bidirectional=True, state_outputs=True,
                   mode="lstm", name="rnn")
    assert s.list_arguments() == ["data", "rnn_parameters", "rnn_state", "rnn_state_cell"]
    assert s.list_outputs() == ["rnn_output", "rnn_state", "rnn_state_cell"]
    args, outs, _ = s.infer_shape(data=(7, 3, 4))
    assert args == [(7, 3, 4), (param_size({**_ATTRS, "state_size": 10, "num_layers": 2,
                                            "mode": "lstm", "bidirectional": True}, 4),),
                    (4, 3, 10), (4, 3, 10)]
    assert outs == [(7, 3, 20), (4, 3, 10), (4, 3, 10)]
    # the input size follows from a parameter vector of known length
    args, _, _ = s.infer_shape_partial(data=(7, 3, 0), rnn_parameters=args[1])
    assert args[0] == (7, 3, 4)
    g = mx.sym.RNN(data, state_size=4, num_layers=1, mode="gru", name="g")
    assert g.list_arguments() == ["data", "g_parameters", "g_state"]
    with pytest.raises(mx.base.MXNetError):
        s.infer_shape(data=(7, 3, 4), rnn_parameters=(5,))
