"""Tests for ember.gluon.rnn's layers (RNN, LSTM, GRU): against the cells, NumPy, and
MXNet's parameter layout (``_unfuse``, the names of saved parameters)."""
from __future__ import annotations

import numpy as np
import pytest
from test_gluon_rnn import RNG, _sig

import ember as mx
from ember.gluon import rnn


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


@pytest.mark.parametrize("cls,kwargs", [
    (rnn.LSTM, {}), (rnn.GRU, {}), (rnn.RNN, {"activation": "tanh"}),
    (rnn.RNN, {"activation": "relu"})])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_unfuse_gives_cells_sharing_the_parameters(cls, kwargs, bidirectional):
    layer = cls(3, num_layers=2, bidirectional=bidirectional, **kwargs)
    cells = layer._unfuse()
    layer.initialize(mx.init.Uniform(0.5))
    x = mx.nd.array(RNG.standard_normal((4, 2, 5)))
    out = layer(x)  # learns the input size; the cells hold the same Parameters
    assert [type(c) for c in cells._children.values()] == \
        [rnn.BidirectionalCell if bidirectional else type(cells[0])] * 2
    assert list(cells.collect_params()) == list(layer.collect_params())
    first = cells[0]._children["l_cell"] if bidirectional else cells[0]
    assert first.i2h_weight is layer.l0_i2h_weight
    ref, _ = cells.unroll(4, x, layout="TNC", merge_outputs=True)
    np.testing.assert_allclose(ref.asnumpy(), out.asnumpy(), rtol=1e-5, atol=1e-6)
    dropped = cls(3, num_layers=3, dropout=0.5, **kwargs)._unfuse()
    assert [type(c).__name__ for c in dropped._children.values()][1::2] == ["DropoutCell"] * 2


def test_unfuse_of_ones_lstm_against_numpy():
    # MXNet's test_lstm_cpu_inference: weights of ones, 6 bidirectional layers
    x = mx.nd.ones((2, 2, 2))
    layer = rnn.LSTM(2, num_layers=6, bidirectional=True)
    cells = layer._unfuse()
    layer.initialize(mx.init.One())
    out = layer(x).asnumpy()
    np.testing.assert_allclose(cells.unroll(2, x, layout="TNC", merge_outputs=True)[0]
                               .asnumpy(), out, rtol=1e-5, atol=1e-6)
    seq = np.ones((2, 2, 2))  # T, N, C
    for _ in range(6):
        outs = []
        for steps in (seq, seq[::-1]):
            h, c, hs = np.zeros((2, 2)), np.zeros((2, 2)), []
            for xt in steps:
                # weights of ones; the biases keep their own initializer, zeros
                g = xt.sum(1, keepdims=True) + h.sum(1, keepdims=True)
                c = _sig(g) * c + _sig(g) * np.tanh(g)
                h = _sig(g) * np.tanh(c)
                hs.append(h)
            outs.append(np.stack(hs))
        seq = np.concatenate([outs[0], outs[1][::-1]], axis=2)
    np.testing.assert_allclose(out, seq, rtol=1e-5, atol=1e-6)
    with pytest.raises(mx.base.MXNetError, match="projection"):
        rnn.LSTM(4, projection_size=2)._unfuse()


def test_saved_parameters_use_mxnet_names(tmp_path):
    bi = rnn.LSTM(3, num_layers=2, bidirectional=True, input_size=2)
    bi.initialize(mx.init.Uniform(0.5))
    bi.save_parameters(str(tmp_path / "bi.params"))
    saved = mx.nd.load(str(tmp_path / "bi.params"))
    assert sorted(saved) == sorted(f"_unfused.{i}.{d}_cell.{g}_{t}" for i in (0, 1)
                                   for d in "lr" for g in ("i2h", "h2h")
                                   for t in ("weight", "bias"))
    np.testing.assert_array_equal(saved["_unfused.1.r_cell.h2h_bias"].asnumpy(),
                                  bi.r1_h2h_bias.data().asnumpy())
    # a file with MXNet's names (as MXNet 1.9.1 writes a GRU layer) loads by those names
    vals = {f"_unfused.0.{g}_{t}": RNG.standard_normal(s).astype(np.float32)
            for (g, t), s in {("i2h", "weight"): (9, 2), ("h2h", "weight"): (9, 3),
                              ("i2h", "bias"): (9,), ("h2h", "bias"): (9,)}.items()}
    mx.nd.save(str(tmp_path / "gru.params"), {k: mx.nd.array(v) for k, v in vals.items()})
    net = mx.gluon.nn.HybridSequential()
    net.add(rnn.GRU(3, input_size=2))
    net[0].load_parameters(str(tmp_path / "gru.params"))
    np.testing.assert_array_equal(net[0].l0_h2h_weight.data().asnumpy(),
                                  vals["_unfused.0.h2h_weight"])
    net.save_parameters(str(tmp_path / "net.params"))
    assert "0._unfused.0.i2h_weight" in mx.nd.load(str(tmp_path / "net.params"))
