"""gluon.contrib: SparseEmbedding, SyncBatchNorm, deformable convolutions, IntervalSampler and
the WikiText datasets, each checked against NumPy, and all of gluon.contrib against real MXNet
when given (the recurrent cells are tested in test_gluon_contrib_rnn.py, the Estimator in
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
from ember.gluon.contrib.cnn import DeformableConvolution, ModulatedDeformableConvolution
from ember.gluon.contrib.data import IntervalSampler
from ember.gluon.contrib.data.text import WikiText2

RNG = np.random.default_rng(7)


def _arr(*shape, scale=1.0):
    return mx.nd.array((RNG.standard_normal(shape) * scale).astype(np.float32))


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


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
