"""gluon.contrib: SparseEmbedding, SyncBatchNorm, convolutional RNN cells, LSTMPCell,
VariationalDropoutCell, dynamic_unroll, deformable convolutions, IntervalSampler and the
WikiText datasets, each checked against NumPy (the Estimator is in
test_gluon_contrib_estimator.py)."""
import json
import os
import subprocess
import warnings
import zipfile

import numpy as np
import pytest

import ember as mx
from ember.base import MXNetError
from ember.gluon import contrib
from ember.gluon.contrib import nn as cnn
from ember.gluon.contrib import rnn as crnn
from ember.gluon.contrib.cnn import DeformableConvolution, ModulatedDeformableConvolution
from ember.gluon.contrib.data import IntervalSampler
from ember.gluon.contrib.data.text import WikiText2

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


# ---- nn ---------------------------------------------------------------------------------------
def test_sparse_embedding_dense_gradient_and_single_warning(monkeypatch):
    from ember.gluon.contrib.nn import basic_layers
    monkeypatch.setattr(basic_layers, "_SPARSE_WARNED", [])
    with pytest.warns(UserWarning, match="densely"):
        layer = cnn.SparseEmbedding(10, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cnn.SparseEmbedding(3, 2)          # the warning comes once per process
    layer.initialize()
    x = mx.nd.array([3, 4, 2, 0, 3])
    with mx.autograd.record():
        y = layer(x)
    y.backward()
    np.testing.assert_array_equal(y.asnumpy(), layer.weight.data().asnumpy()[[3, 4, 2, 0, 3]])
    want = np.zeros((10, 4))
    np.add.at(want, [3, 4, 2, 0, 3], 1.0)
    np.testing.assert_array_equal(layer.weight.grad().asnumpy(), want)
    assert repr(layer) == "SparseEmbedding(10 -> 4, float32)"


def test_sync_batchnorm_is_batchnorm_on_one_process():
    with pytest.warns(UserWarning, match="num_devices"):
        sbn = cnn.SyncBatchNorm()
    sbn = cnn.SyncBatchNorm(in_channels=3, num_devices=1, momentum=0.8, prefix="sbn_")
    assert sorted(sbn.collect_params()) == ["sbn_beta", "sbn_gamma", "sbn_running_mean",
                                           "sbn_running_var"]
    sbn.initialize()
    x = _arr(4, 3, 5, 2)
    with mx.autograd.record():
        y = sbn(x)
    xn = x.asnumpy().astype(np.float64)
    mean, var = xn.mean(axis=(0, 2, 3)), xn.var(axis=(0, 2, 3))
    want = (xn - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(y.asnumpy(), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(sbn.running_mean.data().asnumpy(), 0.2 * mean, rtol=1e-4,
                               atol=1e-6)
    assert "ndev=1, key='sbn_'" in repr(sbn) and repr(sbn).endswith("in_channels=3)")


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


# ---- deformable convolution --------------------------------------------------------------------
def _deform_ref(x, off, mask, wt, b, k, s, p, d, dg, modulated):
    """Direct loops of MXNet's CPU deformable_im2col (v1) / modulated (v2) + a GEMM."""
    n_, c_, h, w = x.shape
    ho, wo = off.shape[2:]
    kk = k[0] * k[1]
    cols = np.zeros((n_, c_, kk, ho, wo))
    for n, c, i, j, a, e in np.ndindex(n_, c_, k[0], k[1], ho, wo):
        g, t = min(c // (c_ // dg), dg - 1), i * k[1] + j
        y = a * s[0] - p[0] + i * d[0] + off[n, g * 2 * kk + 2 * t, a, e]
        z = e * s[1] - p[1] + j * d[1] + off[n, g * 2 * kk + 2 * t + 1, a, e]
        inside = (-1 < y < h and -1 < z < w) if modulated else (0 <= y < h and 0 <= z < w)
        if not inside:
            continue
        y0, z0 = int(np.floor(y)), int(np.floor(z))
        ly, lz = y - y0, z - z0
        if not modulated:
            ly, lz = (0.0 if y0 >= h - 1 else ly), (0.0 if z0 >= w - 1 else lz)
        v = 0.0
        for yc, wy in ((y0, 1 - ly), (y0 + 1, ly)):
            for zc, wz in ((z0, 1 - lz), (z0 + 1, lz)):
                if 0 <= yc < h and 0 <= zc < w:
                    v += wy * wz * x[n, c, yc, zc]
        cols[n, c, t, a, e] = v * (mask[n, g * kk + t, a, e] if modulated else 1.0)
    out = np.einsum("fk,nkl->nfl", wt.reshape(wt.shape[0], -1), cols.reshape(n_, -1, ho * wo))
    return out.reshape(n_, -1, ho, wo) + b[None, :, None, None]


@pytest.mark.parametrize("cls, modulated", [(DeformableConvolution, False),
                                            (ModulatedDeformableConvolution, True)])
def test_deformable_convolution_matches_numpy(cls, modulated):
    net = cls(3, kernel_size=(3, 2), strides=(1, 2), padding=(1, 1), dilation=(2, 1),
              num_deformable_group=2, offset_weight_initializer=mx.init.Normal(0.5),
              offset_bias_initializer=mx.init.Normal(1.5), prefix="d_")
    net.initialize()
    x = _arr(2, 5, 5, 6)   # 5 channels, 2 deformable groups: the 5th channel uses group 1
    y = net(x)
    kw = {k: v for k, v in net._kwargs_offset.items() if k != "layout"}
    off = mx.nd.Convolution(x, net.offset_weight.data(), net.offset_bias.data(), **kw)
    off = off.asnumpy().astype(np.float64)
    mask = 2 * _sigmoid(off[:, net._split:]) if modulated else None
    want = _deform_ref(x.asnumpy().astype(np.float64), off[:, :net._split], mask,
                       net.deformable_conv_weight.data().asnumpy(),
                       net.deformable_conv_bias.data().asnumpy(), (3, 2), (1, 2), (1, 1),
                       (2, 1), 2, modulated)
    np.testing.assert_allclose(y.asnumpy(), want, rtol=1e-4, atol=1e-5)
    assert net.deformable_conv_weight.shape == (3, 5, 3, 2)
    net.hybridize()
    np.testing.assert_allclose(net(x).asnumpy(), y.asnumpy(), rtol=1e-5, atol=1e-6)


def test_deformable_convolution_zero_offsets_is_convolution_and_grads():
    net = DeformableConvolution(4, kernel_size=3, padding=1, in_channels=2,
                                activation="relu")
    net.initialize(mx.init.Uniform(0.5))
    assert net.offset_weight.shape == (18, 2, 3, 3)
    x = _arr(1, 2, 4, 4)
    conv = mx.nd.Convolution(x, net.deformable_conv_weight.data(),
                             net.deformable_conv_bias.data(), kernel=(3, 3), pad=(1, 1),
                             num_filter=4)
    np.testing.assert_allclose(net(x).asnumpy(), np.maximum(conv.asnumpy(), 0), rtol=1e-5,
                               atol=1e-6)
    assert "DeformableConvolution(2 -> 4, kernel_size=(3, 3)" in repr(net)
    # offsets' gradient against central differences; offsets stay >= 0.1 from the integer
    # grid, so no sample crosses a kink of the bilinear interpolation or the border rule
    net = DeformableConvolution(3, kernel_size=3, in_channels=2)
    net.initialize(mx.init.Uniform(0.5))
    shift = RNG.uniform(0.1, 0.4, 18) * RNG.choice([-1, 1], 18)
    net.offset_bias.set_data(mx.nd.array(shift))
    x = _arr(1, 2, 5, 5)

    def loss():
        with mx.autograd.record():
            out = (net(x) * mx.nd.arange(0, 27).reshape((1, 3, 3, 3))).sum()
        return out
    loss().backward()
    grad = net.offset_bias.grad().asnumpy()
    assert np.abs(grad).max() > 0.1
    for i in range(0, 18, 4):
        num = []
        for sign in (1, -1):
            b = shift.copy()
            b[i] += sign * 1e-2
            net.offset_bias.set_data(mx.nd.array(b))
            num.append(loss().asscalar())
        assert abs((num[0] - num[1]) / 2e-2 - grad[i]) < 1e-2 * max(1, abs(grad[i]))

# ---- data ------------------------------------------------------------------------------------
def test_interval_sampler():
    assert list(IntervalSampler(13, 3)) == [0, 3, 6, 9, 12, 1, 4, 7, 10, 2, 5, 8, 11]
    assert list(IntervalSampler(13, 3, rollover=False)) == [0, 3, 6, 9, 12]
    assert len(IntervalSampler(7, 2)) == 7
    with pytest.raises(AssertionError, match="Interval 5"):
        IntervalSampler(4, 5)


def test_wikitext_reads_local_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("EMBER_DATA", "MXNET_HOME"):
        monkeypatch.delenv(var, raising=False)
    train = "b a c\n\n a  b b\n"
    (tmp_path / "wiki.train.tokens").write_text(train)
    with zipfile.ZipFile(tmp_path / "wikitext-2-v1.zip", "w") as zf:
        zf.writestr("wikitext-2/wiki.valid.tokens", "a d\n")
    ds = WikiText2(root=str(tmp_path), seq_len=2)
    vocab = ds.vocabulary
    assert vocab.idx_to_token == ["<unk>", "<eos>", "b", "a", "c"]
    assert dict(ds.frequencies) == {"b": 3, "a": 2, "c": 1}
    ids = [2, 3, 4, 1, 3, 2, 2, 1]           # b a c <eos> a b b <eos>
    assert len(ds) == 3
    np.testing.assert_array_equal(ds[1][0].asnumpy(), ids[2:4])
    np.testing.assert_array_equal(ds[1][1].asnumpy(), ids[3:5])
    val = WikiText2(root=str(tmp_path), segment="validation", vocab=vocab, seq_len=1)
    np.testing.assert_array_equal([v[0].asscalar() for v in val], [3, 0])   # d is unknown
    with pytest.raises(MXNetError, match="(?s)wiki.test.tokens.*does not download"):
        WikiText2(root=str(tmp_path / "none"), segment="test")
    assert contrib.data.text.WikiText103 is not None


# ---- against real MXNet 1.9.1 ------------------------------------------------------------------
MXNET_PYTHON = os.environ.get("EMBER_TEST_MXNET_PYTHON", "")
# (constructor, input shape, state shapes or None, run under autograd.record)
_CASES = {
    "convlstm": ("contrib.rnn.Conv2DLSTMCell((3, 6, 5), 4, 3, 3, i2h_pad=(1, 0))",
                 (2, 3, 6, 5), [(2, 4, 6, 3)] * 2, False),
    "convgru": ("contrib.rnn.Conv1DGRUCell((3, 9), 5, 3, 5, i2h_dilate=2, h2h_dilate=2)",
                (2, 3, 9), [(2, 5, 5)], False),
    "conv3drnn": ("contrib.rnn.Conv3DRNNCell((2, 4, 4, 3), 3, 1, 3, activation='relu')",
                  (1, 2, 4, 4, 3), [(1, 3, 4, 4, 3)], False),
    "lstmp": ("contrib.rnn.LSTMPCell(6, 3)", (2, 4), [(2, 3), (2, 6)], False),
    "deform": ("contrib.cnn.DeformableConvolution(4, (3, 3), padding=1, num_deformable_group=2,"
               " offset_weight_initializer=mx.init.Uniform(0.3),"
               " offset_bias_initializer=mx.init.Uniform(1.5))", (2, 4, 5, 6), None, False),
    "mdeform": ("contrib.cnn.ModulatedDeformableConvolution(3, (2, 3), strides=(2, 1),"
                " dilation=(1, 2), offset_weight_initializer=mx.init.Uniform(0.3),"
                " offset_bias_initializer=mx.init.Uniform(1.5))", (1, 2, 6, 7), None, False),
    "syncbn": ("contrib.nn.SyncBatchNorm(in_channels=3, num_devices=1)", (4, 3, 2, 2), None,
               True),
}
_MX_SCRIPT = """
import json, sys
import numpy as np
import mxnet as mx
from mxnet.gluon import contrib
cases, inputs = json.load(open(sys.argv[1])), np.load(sys.argv[2])
res = {}
for name, (make, _, states, record) in cases.items():
    mx.random.seed(1)
    block = eval(make)
    block.initialize(mx.init.Uniform(0.5))
    args = [mx.nd.array(inputs[name + "/x"])]
    if states:
        args.append([mx.nd.array(inputs[f"{name}/s{i}"]) for i in range(len(states))])
    if record:   # the statistics before the step (its parameters have known shapes)
        block.save_parameters(f"{sys.argv[3]}/{name}.params")
    with mx.autograd.record(train_mode=record):
        out = block(*args)
    outs = [out[0]] + list(out[1]) if states else [out]
    if record:   # MXNet updates the running statistics in the backward pass
        out.backward()
        outs.append(block.running_mean.data())
    else:        # after the first forward: deferred shapes are known
        block.save_parameters(f"{sys.argv[3]}/{name}.params")
    for i, o in enumerate(outs):
        res[f"{name}/{i}"] = o.asnumpy()
np.savez(f"{sys.argv[3]}/out.npz", **res)
text = open(f"{sys.argv[3]}/wiki.train.tokens").read()
counter = mx.contrib.text.utils.count_tokens_from_str(text)
vocab = mx.contrib.text.vocab.Vocabulary(counter=counter, reserved_tokens=["<eos>"])
json.dump(vocab.idx_to_token, open(f"{sys.argv[3]}/vocab.json", "w"))
"""


@pytest.mark.skipif(not os.path.exists(MXNET_PYTHON),
                    reason="no MXNet 1.9.1 interpreter (EMBER_TEST_MXNET_PYTHON)")
def test_same_numbers_and_parameter_files_as_real_mxnet(tmp_path):
    inputs = {}
    for name, (_, shape, states, _) in _CASES.items():
        inputs[f"{name}/x"] = RNG.standard_normal(shape).astype(np.float32)
        for i, s in enumerate(states or []):
            inputs[f"{name}/s{i}"] = RNG.standard_normal(s).astype(np.float32) * 0.5
    (tmp_path / "cases.json").write_text(json.dumps(_CASES))
    np.savez(tmp_path / "inputs.npz", **inputs)
    (tmp_path / "run.py").write_text(_MX_SCRIPT)
    (tmp_path / "wiki.train.tokens").write_text(" = Tie = \n\n b a <unk> c d d a b e\n z y\n")
    proc = subprocess.run([MXNET_PYTHON, str(tmp_path / "run.py"), str(tmp_path / "cases.json"),
                           str(tmp_path / "inputs.npz"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    want = np.load(tmp_path / "out.npz")
    for name, (make, _, states, record) in _CASES.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            block = eval(make, {"contrib": contrib, "mx": mx})
        block.load_parameters(str(tmp_path / f"{name}.params"))   # MXNet's names and shapes
        args = [mx.nd.array(inputs[f"{name}/x"])]
        if states:
            args.append([mx.nd.array(inputs[f"{name}/s{i}"]) for i in range(len(states))])
        with mx.autograd.record(train_mode=record):
            out = block(*args)
        outs = [out[0]] + list(out[1]) if states else [out]
        if record:
            out.backward()
            outs.append(block.running_mean.data())
        for i, o in enumerate(outs):
            np.testing.assert_allclose(o.asnumpy(), want[f"{name}/{i}"], rtol=1e-4, atol=1e-5,
                                       err_msg=f"{name} output {i}")
    vocab = WikiText2(root=str(tmp_path)).vocabulary        # MXNet's token order, ties too
    assert vocab.idx_to_token == json.loads((tmp_path / "vocab.json").read_text())
