"""Tests for ember.gluon.rnn: cells against NumPy gate equations, layers against cells."""
from __future__ import annotations

import json

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


def _unroll_names(cell, n=2, **kwargs):
    """Output and state names of ``cell`` unrolled over Symbol steps ``rnn_t<i>_data``."""
    with mx.name.NameManager():  # fresh counters for auto-named nodes (elemwise_add0...)
        outs, states = cell.unroll(n, [mx.sym.var(f"rnn_t{i}_data") for i in range(n)],
                                   **kwargs)
    outs = mx.sym.Group(outs if isinstance(outs, list) else [outs])
    return outs.list_outputs(), mx.sym.Group(states).list_outputs() if states else []


def test_unrolled_names_match_mxnet():
    # every list below is what MXNet 1.9.1 gives for the same calls
    for make in (rnn.RNNCell, rnn.LSTMCell, rnn.GRUCell):
        outs, _ = _unroll_names(make(4, prefix="rnn_"))
        assert outs == ["rnn_t0_out_output", "rnn_t1_out_output"]
    assert _unroll_names(rnn.LSTMCell(4, prefix="rnn_"))[1] == \
        ["rnn_t1_out_output", "rnn_t1_state_output"]
    with mx.name.NameManager():
        lstm = rnn.LSTMCell(4, prefix="rnn_").unroll(1, [mx.sym.var("rnn_t0_data")])[0][0]
    assert lstm.get_internals().list_outputs() == [
        "rnn_t0_data", "rnn_i2h_weight", "rnn_i2h_bias", "rnn_t0_i2h_output",
        "rnn_begin_state_0_output", "rnn_h2h_weight", "rnn_h2h_bias", "rnn_t0_h2h_output",
        "rnn_t0_plus0_output", "rnn_t0_slice_output0", "rnn_t0_slice_output1",
        "rnn_t0_slice_output2", "rnn_t0_slice_output3", "rnn_t0_o_output", "rnn_t0_f_output",
        "rnn_begin_state_1_output", "rnn_t0_mul0_output", "rnn_t0_i_output",
        "rnn_t0_c_output", "rnn_t0_mul1_output", "rnn_t0_state_output",
        "rnn_t0_activation0_output", "rnn_t0_out_output"]
    assert _unroll_names(rnn.ResidualCell(rnn.GRUCell(4, prefix="rnn_"))) == \
        (["elemwise_add0_output", "elemwise_add1_output"], ["rnn_t1_out_output"])
    assert _unroll_names(rnn.ZoneoutCell(rnn.RNNCell(4, prefix="rnn_"), 0.5, 0.5)) == \
        (["rnn_zoneoutwhere0_output"] * 2, ["rnn_zoneoutwhere1_output"])
    assert _unroll_names(rnn.DropoutCell(0.5, prefix="drop_")) == \
        (["drop_t0_fwd_output", "drop_t1_fwd_output"], [])
    bi = rnn.BidirectionalCell(rnn.LSTMCell(4, prefix="l_"), rnn.LSTMCell(4, prefix="r_"))
    states = ["l_t1_out_output", "l_t1_state_output", "r_t1_out_output", "r_t1_state_output"]
    assert _unroll_names(bi) == (["bi_t0_output", "bi_t1_output"], states)
    assert _unroll_names(bi, merge_outputs=True) == (["bi_out_output"], states)
    stack = rnn.HybridSequentialRNNCell(prefix="h_")
    with stack.name_scope():
        stack.add(rnn.RNNCell(4))
        stack.add(rnn.ZoneoutCell(rnn.LSTMCell(4), 0.1, 0.1))
    assert _unroll_names(stack) == (
        ["h_h_lstm0_zoneoutwhere0_output"] * 2,
        ["h_rnn0_t1_out_output", "h_h_lstm0_zoneoutwhere1_output",
         "h_h_lstm0_zoneoutwhere2_output"])


class _Unrolled(mx.gluon.HybridBlock):
    """A block unrolling ``cell`` without begin states (they are zeros((0, hidden)))."""

    def __init__(self, cell, length, **kwargs):
        super().__init__()
        self.length, self.kwargs = length, kwargs
        with self.name_scope():
            self.cell = cell

    def hybrid_forward(self, F, x, *valid_length):
        outs, states = self.cell.unroll(self.length, x, merge_outputs=True, layout="NTC",
                                        valid_length=valid_length[0] if valid_length else None,
                                        **self.kwargs)
        return outs, states[0]


@pytest.mark.parametrize("make", [
    lambda: rnn.RNNCell(3), lambda: rnn.LSTMCell(3), lambda: rnn.GRUCell(3),
    lambda: rnn.BidirectionalCell(rnn.LSTMCell(3), rnn.GRUCell(3)),
    lambda: rnn.ResidualCell(rnn.GRUCell(2))])
def test_hybridized_unroll_without_begin_state_compiles_on_first_call(make):
    x = mx.nd.array(RNG.standard_normal((4, 3, 2)))
    vl = mx.nd.array([3, 1, 2, 3])
    net = _Unrolled(make(), 3)
    net.initialize(mx.init.Uniform(0.5))
    ref_out, ref_state = net(x)  # eager
    ref_masked = net(x, vl)
    net.hybridize()
    out, state = net(x)  # the first call traces, infers the batch of the zeros, compiles
    assert out.shape == ref_out.shape and out.shape[:2] == (4, 3)
    np.testing.assert_allclose(out.asnumpy(), ref_out.asnumpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.asnumpy(), ref_state.asnumpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="argument structure"):  # as MXNet's CachedOp
        net(x, vl)
    net.hybridize()  # a new argument structure wants a fresh trace
    for got, want in zip(net(x, vl), ref_masked):
        np.testing.assert_allclose(got.asnumpy(), want.asnumpy(), rtol=1e-5, atol=1e-6)


def test_unrolled_cell_against_numpy_export_and_import(tmp_path):
    x = RNG.standard_normal((2, 3, 4))
    net = _Unrolled(rnn.RNNCell(5), 3)
    net.initialize(mx.init.Uniform(0.5))
    net.hybridize()
    out, _ = net(mx.nd.array(x))
    h = np.zeros((2, 5))
    for t in range(3):
        h = np_rnn(x[:, t], h, *_weights(net.cell))
        np.testing.assert_allclose(out.asnumpy()[:, t], h, rtol=1e-5, atol=1e-6)
    net.export(str(tmp_path / "cell"))
    doc = json.loads((tmp_path / "cell-symbol.json").read_text())
    assert [n["attrs"]["shape"] for n in doc["nodes"] if n["op"] == "_zeros"] == ["(0, 5)"]
    loaded = mx.gluon.SymbolBlock.imports(str(tmp_path / "cell-symbol.json"), ["data"],
                                          str(tmp_path / "cell-0000.params"))
    got, _ = loaded(mx.nd.array(x))  # eager: the zeros' batch comes from the graph's inference
    np.testing.assert_allclose(got.asnumpy(), out.asnumpy(), rtol=1e-5, atol=1e-6)
    loaded.hybridize()
    got, _ = loaded(mx.nd.array(x))
    np.testing.assert_allclose(got.asnumpy(), out.asnumpy(), rtol=1e-5, atol=1e-6)


def test_unroll_symbol_of_unknown_shape_and_forget_bias_through_module():
    stack = rnn.SequentialRNNCell()
    stack.add(rnn.LSTMCell(4, i2h_bias_initializer=mx.init.LSTMBias(2.0), prefix="l0_"))
    stack.add(rnn.LSTMCell(4, prefix="l1_"))
    out, _ = stack.unroll(2, mx.sym.var("data"), merge_outputs=True)  # length from the call
    assert out.infer_shape(data=(3, 2, 5))[1] == [(3, 2, 4)]
    mod = mx.mod.Module(out, label_names=None)
    mod.bind(data_shapes=[("data", (3, 2, 5))])
    mod.init_params()
    np.testing.assert_array_equal(mod.get_params()[0]["l0_i2h_bias"].asnumpy(),
                                  np.repeat([0.0, 2.0, 0.0, 0.0], 4))


@pytest.mark.parametrize("layout", ["NTC", "TNC"])
def test_valid_length_unroll_merges_outputs_by_default(layout):
    x = mx.nd.array(RNG.standard_normal((3, 2, 4) if layout == "NTC" else (2, 3, 4)))
    vl = mx.nd.array([1, 2, 2])
    for cell in (rnn.GRUCell(3), rnn.BidirectionalCell(rnn.GRUCell(3), rnn.GRUCell(3))):
        cell.initialize()
        outs, _ = cell.unroll(2, x, layout=layout, valid_length=vl)
        assert isinstance(outs, mx.nd.NDArray)  # MXNet's SequenceMask gives one tensor
        assert outs.shape[layout.find("N")] == 3 and outs.shape[layout.find("T")] == 2
        first_padded = outs[0, 1] if layout == "NTC" else outs[1, 0]
        np.testing.assert_array_equal(first_padded.asnumpy(), 0)
        listed, _ = cell.unroll(2, x, layout=layout, valid_length=vl, merge_outputs=False)
        assert isinstance(listed, list) and len(listed) == 2
