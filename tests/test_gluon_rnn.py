"""Tests for ember.gluon.rnn: cells against NumPy gate equations, layers against cells."""
from __future__ import annotations

import numpy as np
import pytest
from opcheck import check_grad

import ember as mx
from ember.gluon import rnn

RNG = np.random.default_rng(0)


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _weights(cell):
    p = {name: getattr(cell, name).data().asnumpy().astype(np.float64)
         for name in ("i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias")}
    return p["i2h_weight"], p["h2h_weight"], p["i2h_bias"], p["h2h_bias"]


def np_rnn(x, h, wi, wh, bi, bh, act="tanh"):
    pre = x @ wi.T + bi + h @ wh.T + bh
    return np.tanh(pre) if act == "tanh" else np.maximum(pre, 0)


def np_lstm(x, h, c, wi, wh, bi, bh):
    g = x @ wi.T + bi + h @ wh.T + bh
    i, f, cc, o = np.split(g, 4, axis=1)
    c2 = _sig(f) * c + _sig(i) * np.tanh(cc)
    return _sig(o) * np.tanh(c2), c2


def np_gru(x, h, wi, wh, bi, bh):
    xr, xz, xn = np.split(x @ wi.T + bi, 3, axis=1)
    hr, hz, hn = np.split(h @ wh.T + bh, 3, axis=1)
    r, z = _sig(xr + hr), _sig(xz + hz)
    n = np.tanh(xn + r * hn)
    return (1 - z) * n + z * h


def _init(block, x, *extra):
    block.initialize(mx.init.Uniform(0.5))
    block(x, *extra)  # finish deferred init
    return block


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_rnn_cell_step(act):
    x, h = RNG.standard_normal((3, 4)), RNG.standard_normal((3, 5))
    cell = _init(rnn.RNNCell(5, activation=act), mx.nd.array(x), [mx.nd.array(h)])
    assert cell.i2h_weight.shape == (5, 4)
    out, states = cell(mx.nd.array(x), [mx.nd.array(h)])
    ref = np_rnn(x, h, *_weights(cell), act=act)
    np.testing.assert_allclose(out.asnumpy(), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(states[0].asnumpy(), ref, rtol=1e-5, atol=1e-5)


def test_lstm_cell_step():
    x, h, c = (RNG.standard_normal(s) for s in [(3, 4), (3, 5), (3, 5)])
    cell = _init(rnn.LSTMCell(5), mx.nd.array(x), [mx.nd.array(h), mx.nd.array(c)])
    assert [k[len(cell.prefix):] for k in cell.collect_params()] == \
        ["i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias"]
    assert cell.i2h_weight.shape == (20, 4) and cell.h2h_weight.shape == (20, 5)
    out, (h2, c2) = cell(mx.nd.array(x), [mx.nd.array(h), mx.nd.array(c)])
    rh, rc = np_lstm(x, h, c, *_weights(cell))
    np.testing.assert_allclose(out.asnumpy(), rh, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h2.asnumpy(), rh, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(c2.asnumpy(), rc, rtol=1e-5, atol=1e-5)


def test_gru_cell_step():
    x, h = RNG.standard_normal((3, 4)), RNG.standard_normal((3, 5))
    cell = _init(rnn.GRUCell(5), mx.nd.array(x), [mx.nd.array(h)])
    out, states = cell(mx.nd.array(x), [mx.nd.array(h)])
    np.testing.assert_allclose(out.asnumpy(), np_gru(x, h, *_weights(cell)),
                               rtol=1e-5, atol=1e-5)
    assert len(states) == 1 and cell.state_info(3) == [{"shape": (3, 5), "__layout__": "NC"}]


@pytest.mark.parametrize("layout", ["NTC", "TNC"])
@pytest.mark.parametrize("merge", [True, False])
def test_unroll_layouts(layout, merge):
    xs = RNG.standard_normal((2, 3, 4))  # N, T, C
    cell = rnn.LSTMCell(5, input_size=4)
    cell.initialize(mx.init.Uniform(0.5))
    data = xs if layout == "NTC" else xs.transpose(1, 0, 2)
    outs, states = cell.unroll(3, mx.nd.array(data), layout=layout, merge_outputs=merge)
    h, c = np.zeros((2, 5)), np.zeros((2, 5))
    ref = []
    for t in range(3):
        h, c = np_lstm(xs[:, t], h, c, *_weights(cell))
        ref.append(h)
    if merge:
        got = outs.asnumpy()
        expected = np.stack(ref, axis=layout.find("T"))
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    else:
        assert isinstance(outs, list) and len(outs) == 3
        for o, r in zip(outs, ref):
            np.testing.assert_allclose(o.asnumpy(), r, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(states[1].asnumpy(), c, rtol=1e-5, atol=1e-5)


def test_unroll_list_inputs_and_valid_length():
    xs = RNG.standard_normal((2, 4, 3))
    cell = rnn.GRUCell(4, input_size=3)
    cell.initialize(mx.init.Uniform(0.5))
    steps = [mx.nd.array(xs[:, t]) for t in range(4)]
    full, _ = cell.unroll(4, steps, merge_outputs=False)
    vl = mx.nd.array([2, 4])
    outs, states = cell.unroll(4, mx.nd.array(xs), merge_outputs=True, valid_length=vl)
    got = outs.asnumpy()
    assert got.shape == (2, 4, 4)
    np.testing.assert_allclose(got[0, 2:], 0)
    np.testing.assert_allclose(got[0, :2], np.stack([f.asnumpy()[0] for f in full[:2]]),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(states[0].asnumpy()[0], full[1].asnumpy()[0], rtol=1e-5)
    np.testing.assert_allclose(states[0].asnumpy()[1], full[3].asnumpy()[1], rtol=1e-5)


def test_sequential_residual_dropout_cells():
    xs = mx.nd.array(RNG.standard_normal((2, 3, 4)))
    seq = rnn.SequentialRNNCell()
    with seq.name_scope():
        seq.add(rnn.LSTMCell(4, input_size=4))
        seq.add(rnn.DropoutCell(0.0))
        seq.add(rnn.ResidualCell(rnn.GRUCell(4, input_size=4)))
    seq.initialize(mx.init.Uniform(0.5))
    assert len(seq.state_info(2)) == 3
    outs, states = seq.unroll(3, xs, merge_outputs=True)
    assert outs.shape == (2, 3, 4) and [s.shape for s in states] == [(2, 4)] * 3
    l_out, _ = seq[0].unroll(3, xs, merge_outputs=True)
    # by hand: GRU over the LSTM outputs, plus the residual
    h = np.zeros((2, 4))
    ref = []
    for t in range(3):
        x_t = l_out.asnumpy()[:, t].astype(np.float64)
        h = np_gru(x_t, h, *_weights(seq[2].base_cell))
        ref.append(h + x_t)
    np.testing.assert_allclose(outs.asnumpy(), np.stack(ref, 1), rtol=1e-5, atol=1e-5)
    hseq = rnn.HybridSequentialRNNCell()
    hseq.add(rnn.RNNCell(3, input_size=4))
    hseq.add(rnn.RNNCell(3, input_size=3))
    hseq.initialize()
    out_imp, st = hseq(xs[:, 0], hseq.begin_state(batch_size=2))
    hseq.hybridize()
    out_hyb, _ = hseq(xs[:, 0], hseq.begin_state(batch_size=2))
    np.testing.assert_allclose(out_imp.asnumpy(), out_hyb.asnumpy(), rtol=1e-5, atol=1e-6)


def _cells_from_layer(layer, mode, hidden, num_layers, bidirectional):
    """A SequentialRNNCell with the layer's parameters, to unroll by hand."""
    make = {"lstm": rnn.LSTMCell, "gru": rnn.GRUCell}[mode]
    stack = rnn.SequentialRNNCell()
    lp = {k[len(layer.prefix):]: v for k, v in layer.collect_params().items()}
    for i in range(num_layers):
        dirs = []
        for j in "lr"[:2 if bidirectional else 1]:
            cell = make(hidden)
            cell.initialize()
            for g in ("i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias"):
                p = getattr(cell, g)
                p.shape = lp[f"{j}{i}_{g}"].shape
                p._finish_deferred_init()
                p.set_data(lp[f"{j}{i}_{g}"].data())
            dirs.append(cell)
        stack.add(rnn.BidirectionalCell(*dirs) if bidirectional else dirs[0])
    return stack


@pytest.mark.parametrize("mode,num_layers,bidirectional",
                         [("lstm", 1, False), ("lstm", 2, True), ("gru", 2, False),
                          ("gru", 1, True)])
def test_layer_against_cells(mode, num_layers, bidirectional):
    hidden, n, t, c = 3, 2, 4, 5
    cls = {"lstm": rnn.LSTM, "gru": rnn.GRU}[mode]
    layer = cls(hidden, num_layers=num_layers, bidirectional=bidirectional)
    layer.initialize(mx.init.Uniform(0.5))
    x = mx.nd.array(RNG.standard_normal((t, n, c)))
    out, states = layer(x, layer.begin_state(batch_size=n))
    d = 2 if bidirectional else 1
    assert out.shape == (t, n, d * hidden)
    assert [s.shape for s in states] == [(num_layers * d, n, hidden)] * len(states)
    assert len(states) == (2 if mode == "lstm" else 1)
    cells = _cells_from_layer(layer, mode, hidden, num_layers, bidirectional)
    ref, ref_states = cells.unroll(t, x, layout="TNC", merge_outputs=True)
    np.testing.assert_allclose(out.asnumpy(), ref.asnumpy(), rtol=1e-5, atol=1e-6)
    # cells order states per layer (h, c per direction); the layer stacks them by kind
    nk = len(states)
    for k in range(nk):
        np.testing.assert_allclose(states[k].asnumpy(),
                                   np.stack([s.asnumpy() for s in ref_states[k::nk]]),
                                   rtol=1e-5, atol=1e-6)
    # NTC layout gives the transposed result; no states in -> outputs only
    layer_ntc = cls(hidden, num_layers=num_layers, bidirectional=bidirectional,
                    layout="NTC", params=layer.collect_params())
    out_ntc = layer_ntc(mx.nd.array(x.asnumpy().transpose(1, 0, 2)))
    np.testing.assert_allclose(out_ntc.asnumpy(), out.asnumpy().transpose(1, 0, 2),
                               rtol=1e-5, atol=1e-6)


def test_lstm_parameter_names_and_errors():
    layer = rnn.LSTM(8, num_layers=2, prefix="lstm0_")
    assert list(layer.collect_params()) == [
        "lstm0_l0_i2h_weight", "lstm0_l0_h2h_weight", "lstm0_l0_i2h_bias",
        "lstm0_l0_h2h_bias", "lstm0_l1_i2h_weight", "lstm0_l1_h2h_weight",
        "lstm0_l1_i2h_bias", "lstm0_l1_h2h_bias"]
    assert layer.l0_i2h_weight.shape == (32, 0) and layer.l1_i2h_weight.shape == (32, 8)
    bi = rnn.GRU(4, bidirectional=True, input_size=3, prefix="gru0_")
    assert "gru0_r0_h2h_bias" in bi.collect_params()
    layer.initialize()
    out = layer(mx.nd.ones((5, 2, 3)))
    assert out.shape == (5, 2, 8) and layer.l0_i2h_weight.shape == (32, 3)
    assert repr(layer) == "LSTM(3 -> 8, TNC, num_layers=2)"
    with pytest.raises(ValueError):
        layer(mx.nd.ones((5, 2, 3)), [mx.nd.zeros((2, 2, 7)), mx.nd.zeros((2, 2, 8))])
    with pytest.raises(mx.base.MXNetError):
        rnn.LSTM(8, layout="CTN")
    with pytest.raises(mx.base.MXNetError):
        rnn.BidirectionalCell(rnn.RNNCell(2), rnn.RNNCell(2))(mx.nd.ones((1, 2)), [])


def test_lstm_cell_gradients():
    cell = rnn.LSTMCell(3, input_size=2)
    x = RNG.standard_normal((2, 2, 2))
    h0, c0 = RNG.standard_normal((2, 3)), RNG.standard_normal((2, 3))
    w = [RNG.standard_normal(s) * 0.5 for s in [(12, 2), (12, 3), (12,), (12,)]]

    def fn(x, h, c, wi, wh, bi, bh):
        states = [h, c]
        outs = []
        for t in range(2):
            cell._counter += 1
            out, states = cell.hybrid_forward(mx.nd, x[t], states, wi, wh, bi, bh)
            outs.append(out)
        return mx.nd.stack(*outs, states[1], axis=0)

    check_grad(fn, [x, h0, c0, *w], rtol=1e-4, atol=1e-6)


def test_lstm_layer_gradient_and_hybridize():
    layer = rnn.LSTM(3, num_layers=2, bidirectional=True, input_size=2, prefix="lstmg_")
    layer.initialize(mx.init.Uniform(0.5))
    x = mx.nd.array(RNG.standard_normal((3, 2, 2)))
    x.attach_grad()
    with mx.autograd.record():
        out = layer(x)
    out.backward()
    grads = {k: v.grad().asnumpy().copy() for k, v in layer.collect_params().items()}
    assert all(np.abs(g).sum() > 0 for g in grads.values())
    xg = x.grad.asnumpy().copy()
    layer.hybridize()
    x2 = x.copy()
    x2.attach_grad()
    with mx.autograd.record():
        out2 = layer(x2)
    out2.backward()
    np.testing.assert_allclose(out2.asnumpy(), out.asnumpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x2.grad.asnumpy(), xg, rtol=1e-4, atol=1e-6)
    for k, v in layer.collect_params().items():
        np.testing.assert_allclose(v.grad().asnumpy(), grads[k], rtol=1e-4, atol=1e-6)
    out3, states = layer(x, layer.begin_state(batch_size=2))
    np.testing.assert_allclose(out3.asnumpy(), out.asnumpy(), rtol=1e-5, atol=1e-6)
    assert [s.shape for s in states] == [(4, 2, 3), (4, 2, 3)]


def test_sequence_length_layer_matches_bidirectional_cell():
    x = mx.nd.array(RNG.standard_normal((4, 2, 2)))
    vl = mx.nd.array([2, 4])
    layer = rnn.LSTM(3, bidirectional=True, use_sequence_length=True, input_size=2)
    layer.initialize(mx.init.Uniform(0.5))
    out, states = layer(x, layer.begin_state(batch_size=2), vl)
    cells = _cells_from_layer(layer, "lstm", 3, 1, True)[0]
    ref, ref_states = cells.unroll(4, x, layout="TNC", merge_outputs=True, valid_length=vl)
    np.testing.assert_allclose(out.asnumpy(), ref.asnumpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.asnumpy()[2:, 0], 0)
    np.testing.assert_allclose(states[0].asnumpy(),
                               np.stack([ref_states[0].asnumpy(), ref_states[2].asnumpy()]),
                               rtol=1e-5, atol=1e-6)
    # backward direction of sequence 0 starts at its last valid step: equals a 2-step run
    short, _ = cells.unroll(2, x[:2, :1], layout="TNC", merge_outputs=True)
    np.testing.assert_allclose(out.asnumpy()[:2, :1], short.asnumpy(), rtol=1e-5, atol=1e-6)


def test_lstm_projection_and_clip():
    x = RNG.standard_normal((3, 2, 2))
    layer = rnn.LSTM(4, projection_size=2, state_clip_min=-0.2, state_clip_max=0.2,
                     input_size=2, prefix="lstmp_")
    layer.initialize(mx.init.Uniform(0.5))
    assert layer.l0_h2r_weight.shape == (2, 4) and layer.l0_h2h_weight.shape == (16, 2)
    out, (h, c) = layer(mx.nd.array(x), layer.begin_state(batch_size=2))
    p = {k[len("lstmp_l0_"):]: v.data().asnumpy().astype(np.float64)
         for k, v in layer.collect_params().items()}
    hh, cc = np.zeros((2, 2)), np.zeros((2, 4))
    for t in range(3):
        g = x[t] @ p["i2h_weight"].T + p["i2h_bias"] + hh @ p["h2h_weight"].T + p["h2h_bias"]
        i, f, n, o = np.split(g, 4, axis=1)
        cc = np.clip(_sig(f) * cc + _sig(i) * np.tanh(n), -0.2, 0.2)
        hh = (_sig(o) * np.tanh(cc)) @ p["h2r_weight"].T
        np.testing.assert_allclose(out.asnumpy()[t], hh, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c.asnumpy()[0], cc, rtol=1e-5, atol=1e-6)
    assert h.shape == (1, 2, 2)


def test_symbolic_layer_and_training_dropout():
    x = mx.nd.array(RNG.standard_normal((4, 2, 2)))
    layer = rnn.GRU(3, num_layers=2, input_size=2)
    layer.initialize(mx.init.Uniform(0.5))
    ref = layer(x)
    out = layer(mx.sym.var("data", shape=(4, 2, 2)))
    assert out.infer_shape()[1] == [(4, 2, 3)]
    args = {"data": x, **{k: v.data() for k, v in layer.collect_params().items()}}
    got = out.bind(mx.cpu(), args).forward()[0]
    np.testing.assert_allclose(got.asnumpy(), ref.asnumpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(mx.base.MXNetError):
        layer(mx.sym.var("data"))
    drop = rnn.DropoutCell(0.5)
    ones = mx.nd.ones((4, 8, 8))
    with mx.autograd.train_mode():
        dropped, _ = drop.unroll(4, ones, layout="TNC", merge_outputs=True)
    vals = np.unique(dropped.asnumpy())
    assert set(vals.tolist()) == {0.0, 2.0}
    kept, _ = drop.unroll(4, ones, layout="TNC", merge_outputs=False)
    assert len(kept) == 4 and all((k.asnumpy() == 1).all() for k in kept)


def test_hybridized_cell_unroll_and_package():
    assert mx.gluon.rnn.LSTMCell is rnn.LSTMCell
    x = mx.nd.array(RNG.standard_normal((2, 3, 4)))
    cell = rnn.GRUCell(5)
    cell.initialize(mx.init.Uniform(0.5))
    ref, _ = cell.unroll(3, x, merge_outputs=True)
    cell.hybridize()
    got, states = cell.unroll(3, x, merge_outputs=True)
    np.testing.assert_allclose(got.asnumpy(), ref.asnumpy(), rtol=1e-5, atol=1e-6)
    assert repr(cell) == "GRUCell(4 -> 15)" and states[0].shape == (2, 5)
    assert [s.shape for s in cell.begin_state(batch_size=7)] == [(7, 5)]
