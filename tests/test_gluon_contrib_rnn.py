"""gluon.contrib.rnn: the convolutional RNN/LSTM/GRU cells (1-3 D, channels first and last),
LSTMPCell, VariationalDropoutCell and dynamic_unroll, each checked against NumPy."""
import numpy as np
import pytest

import ember as mx
from ember.base import MXNetError
from ember.gluon.contrib import rnn as crnn

RNG = np.random.default_rng(7)


def _arr(*shape, scale=1.0):
    return mx.nd.array((RNG.standard_normal(shape) * scale).astype(np.float32))


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _conv(x, w, b, pad, dilate=None):
    """Stride-1 N-D cross-correlation (NC + spatial) by summing shifted slices."""
    nsp = x.ndim - 2
    dilate = dilate or (1,) * nsp
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pad])
    out_sp = [xp.shape[2 + i] - dilate[i] * (w.shape[2 + i] - 1) for i in range(nsp)]
    out = np.zeros((x.shape[0], w.shape[0], *out_sp))
    for tap in np.ndindex(*w.shape[2:]):
        sl = tuple(slice(t * d, t * d + o) for t, d, o in zip(tap, dilate, out_sp))
        out += np.einsum("nc...,fc->nf...", xp[(slice(None), slice(None)) + sl],
                         w[(slice(None), slice(None)) + tap])
    return out + b.reshape((1, -1) + (1,) * nsp)


# ---- convolutional RNN cells ---------------------------------------------------------------
def _params(cell):
    return {k[len(cell.prefix):]: v.data().asnumpy().astype(np.float64)
            for k, v in cell.collect_params().items()}


@pytest.mark.parametrize("cls, shape, kind", [
    (crnn.Conv1DRNNCell, (3, 7), "rnn"), (crnn.Conv2DLSTMCell, (2, 5, 4), "lstm"),
    (crnn.Conv1DGRUCell, (3, 6), "gru"), (crnn.Conv3DRNNCell, (2, 4, 3, 3), "rnn")])
def test_conv_rnn_cell_step_matches_numpy(cls, shape, kind):
    dims = len(shape) - 1
    cell = cls(shape, 4, 3, 3, i2h_pad=1, h2h_dilate=1, prefix="c_")
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
    expect = {"i2h_weight": (4 * gates, shape[0]) + (3,) * dims,
              "h2h_weight": (4 * gates, 4) + (3,) * dims,
              "i2h_bias": (4 * gates,), "h2h_bias": (4 * gates,)}
    assert {k[2:]: v.shape for k, v in cell.collect_params().items()} == expect
    cell.initialize(mx.init.Uniform(0.5))
    x = _arr(2, *shape)
    states = [_arr(2, 4, *shape[1:], scale=0.5) for _ in cell.state_info()]
    out, new = cell(x, states)
    p = _params(cell)
    i2h = _conv(x.asnumpy(), p["i2h_weight"], p["i2h_bias"], (1,) * dims)
    h2h = _conv(states[0].asnumpy(), p["h2h_weight"], p["h2h_bias"], (1,) * dims)
    if kind == "rnn":
        want = [np.tanh(i2h + h2h)]
    elif kind == "lstm":
        gi, gf, gc, go = np.split(i2h + h2h, 4, axis=1)
        c = _sigmoid(gf) * states[1].asnumpy() + _sigmoid(gi) * np.tanh(gc)
        want = [_sigmoid(go) * np.tanh(c), c]
    else:
        (xr, xz, xo), (hr, hz, ho) = np.split(i2h, 3, axis=1), np.split(h2h, 3, axis=1)
        r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
        want = [(1 - z) * np.tanh(xo + r * ho) + z * states[0].asnumpy()]
    np.testing.assert_allclose(out.asnumpy(), want[0], rtol=1e-4, atol=1e-5)
    for got, w in zip(new, want):
        np.testing.assert_allclose(got.asnumpy(), w, rtol=1e-4, atol=1e-5)
    cell.hybridize()
    out_h, _ = cell(x, states)
    np.testing.assert_allclose(out_h.asnumpy(), out.asnumpy(), rtol=1e-5, atol=1e-6)


def test_conv_lstm_channels_last_equals_channels_first():
    first = crnn.Conv1DLSTMCell((3, 6), 2, 3, 5, i2h_dilate=2, h2h_dilate=1)
    last = crnn.Conv1DLSTMCell((6, 3), 2, 3, 5, i2h_dilate=2, conv_layout="NWC")
    assert last.i2h_weight.shape == (8, 3, 3) and last.h2h_weight.shape == (8, 5, 2)
    first.initialize(mx.init.Uniform(0.5))
    last.initialize()
    for a, b in zip(first.collect_params().values(), last.collect_params().values()):
        data = a.data().asnumpy()
        b.set_data(mx.nd.array(np.moveaxis(data, 1, -1) if data.ndim == 3 else data))
    x = _arr(2, 3, 6)
    assert first.state_info(2)[0]["shape"] == (2, 2, 2)
    outs_f, _ = first.unroll(2, [x, x * 2], merge_outputs=False)
    x_l = mx.nd.array(np.moveaxis(x.asnumpy(), 1, -1))
    outs_l, _ = last.unroll(2, [x_l, x_l * 2], merge_outputs=False)
    for f, l in zip(outs_f, outs_l):
        np.testing.assert_allclose(np.moveaxis(l.asnumpy(), -1, 1), f.asnumpy(), rtol=1e-5,
                                   atol=1e-6)


def test_conv_rnn_cell_errors_and_deferred_channels():
    with pytest.raises(MXNetError, match="odd"):
        crnn.Conv2DRNNCell((3, 5, 5), 2, 3, (3, 2))
    with pytest.raises(MXNetError, match="length 2"):
        crnn.Conv2DGRUCell((3, 5, 5), 2, (3, 3, 3), 3)
    cell = crnn.Conv1DGRUCell((0, 7), 3, 3, 3)
    cell.initialize()
    cell(_arr(2, 5, 7), cell.begin_state(batch_size=2))
    assert cell.i2h_weight.shape == (9, 5, 3)
    assert repr(cell) == "Conv1DGRUCell(5 -> 9, tanh, NCW)"


# ---- LSTMP, variational dropout, dynamic_unroll -----------------------------------------------
def test_lstmp_cell_matches_numpy():
    cell = crnn.LSTMPCell(6, 3, input_size=4, prefix="p_")
    assert {k: v.shape for k, v in cell.collect_params().items()} == {
        "p_i2h_weight": (24, 4), "p_h2h_weight": (24, 3), "p_h2r_weight": (3, 6),
        "p_i2h_bias": (24,), "p_h2h_bias": (24,)}
    cell.initialize(mx.init.Uniform(0.5))
    x, r, c = _arr(2, 4), _arr(2, 3), _arr(2, 6)
    out, (r1, c1) = cell(x, [r, c])
    p = _params(cell)
    g = x.asnumpy() @ p["i2h_weight"].T + p["i2h_bias"] + r.asnumpy() @ p["h2h_weight"].T \
        + p["h2h_bias"]
    gi, gf, gc, go = np.split(g, 4, axis=1)
    c_want = _sigmoid(gf) * c.asnumpy() + _sigmoid(gi) * np.tanh(gc)
    r_want = (_sigmoid(go) * np.tanh(c_want)) @ p["h2r_weight"].T
    np.testing.assert_allclose(c1.asnumpy(), c_want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.asnumpy(), r_want, rtol=1e-4, atol=1e-5)
    assert r1 is out and repr(cell) == "LSTMPCell(4 -> 24 -> 3)"


@pytest.mark.parametrize("drop_states", [0.0, 0.5])
def test_variational_dropout_keeps_one_mask_per_sequence(drop_states):
    base = mx.gluon.rnn.RNNCell(8, prefix="r_")
    cell = crnn.VariationalDropoutCell(base, drop_inputs=0.5, drop_states=drop_states,
                                       drop_outputs=0.5)
    cell.initialize(mx.init.Uniform(0.5))
    x = mx.nd.ones((16, 4, 5))
    with mx.autograd.record():
        out1, _ = cell.unroll(4, x, merge_outputs=True)
        out2, _ = cell.unroll(4, x, merge_outputs=True)
    zero1 = out1.asnumpy() == 0
    assert zero1.any() and (zero1 == zero1[:, :1]).all()       # same output units, all steps
    assert (zero1 != (out2.asnumpy() == 0)).any()              # a new mask per sequence
    out3, _ = cell.unroll(4, x, merge_outputs=False)          # inference: no dropout
    assert len(out3) == 4 and all((o.asnumpy() != 0).all() for o in out3)


def test_dynamic_unroll_matches_unroll_with_valid_length():
    cell = mx.gluon.rnn.LSTMCell(5, input_size=3)
    cell.initialize(mx.init.Uniform(0.5))
    x = _arr(4, 2, 3)                                 # TNC
    begin = [_arr(2, 5), _arr(2, 5)]
    valid = mx.nd.array([2, 4])
    out, states = crnn.rnn_cell.dynamic_unroll(cell, x, begin, layout="TNC",
                                               valid_length=valid)
    ref, ref_states = cell.unroll(4, x, begin, layout="TNC", merge_outputs=True,
                                  valid_length=valid)
    np.testing.assert_allclose(out.asnumpy(), ref.asnumpy(), rtol=1e-5, atol=1e-6)
    assert (out.asnumpy()[2:, 0] == 0).all()
    for a, b in zip(states, ref_states):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-5, atol=1e-6)
