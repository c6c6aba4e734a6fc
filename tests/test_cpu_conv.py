"""The CPU backend's convolution steps (backends/cpu_conv.py) against the reference backend.

Graphs of one 2-D convolution (grouped, depthwise, strided, dilated, padded, with bias and
a fused epilogue) go through the whole pipeline with gradients (forward, data gradient as
``deconvolution``, weight gradient as ``convolution_backward_weight``) and run on both
backends; hypothesis picks the shapes, and the chunk size so that whole-batch, one-sample
and ragged chunks all run. float32: rtol 1e-4, atol 1e-4 (GEMMs sum in other orders).
"""
import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ember.backends import cpu, cpu_conv, cpu_conv_steps, cpu_direct, cpu_split, reference
from ember.ir.graph import GraphBuilder
from ember.ir.types import TensorType
from ember.passes import run_pipeline
from ember.runtime import cache

cache.install()
F32 = "float32"


def _rand(shape, seed=0, dtype=F32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@contextlib.contextmanager
def _chunk_bytes(n):
    old = cpu_conv.CHUNK_BYTES
    cpu_conv.CHUNK_BYTES = n
    try:
        yield
    finally:
        cpu_conv.CHUNK_BYTES = old


def _compare(graph, inputs, params, rtol=1e-4, atol=1e-4):
    fn = cpu.compile(graph)
    got = fn([a.copy() for a in inputs], [p.copy() for p in params])
    want = reference.run_graph(graph, [a.copy() for a in inputs], [p.copy() for p in params])
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    assert not any(k.startswith("fallback:conv") or k.startswith("fallback:deconv")
                   for k in fn.report), fn.report
    return fn.report


@st.composite
def convs(draw):
    """(n, c, f, g, hw, kernel, stride, pad, dilate, bias, epilogue, chunk samples)."""
    g = draw(st.sampled_from([1, 1, 2, "dw"]))
    c = draw(st.integers(1, 3)) * (2 if g == 2 else 1)
    if g == "dw":
        g = c = draw(st.integers(1, 4))
        f = c * draw(st.sampled_from([1, 2]))
    else:
        f = draw(st.integers(1, 3)) * g
    k = (draw(st.sampled_from([1, 2, 3])), draw(st.sampled_from([1, 3])))
    s = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    d = (draw(st.integers(1, 2)), 1)
    p = (draw(st.integers(0, 2)), draw(st.integers(0, 1)))
    hw = (draw(st.integers(5, 9)), draw(st.integers(5, 9)))
    n = draw(st.integers(1, 3))
    return dict(n=n, c=c, f=f, g=g, hw=hw, k=k, s=s, p=p, d=d, bias=draw(st.booleans()),
                epi=draw(st.sampled_from(["none", "relu", "residual"])),
                chunk=draw(st.sampled_from([1, 2, 64])))


def _conv_graph(cfg):
    b = GraphBuilder("conv")
    x = b.input(TensorType((cfg["n"], cfg["c"]) + cfg["hw"], F32), "x")
    w = b.param(TensorType((cfg["f"], cfg["c"] // cfg["g"]) + cfg["k"], F32), "w")
    ins = [x, w]
    if cfg["bias"]:
        ins.append(b.param(TensorType((cfg["f"],), F32), "b"))
    (y,) = b.emit("convolution", ins, kernel=cfg["k"], stride=cfg["s"], pad=cfg["p"],
                  dilate=cfg["d"], num_filter=cfg["f"], num_group=cfg["g"],
                  no_bias=not cfg["bias"])
    extra = []
    if cfg["epi"] == "relu":
        (y,) = b.emit("relu", [y])
    elif cfg["epi"] == "residual":
        r = b.input(y.type, "r")
        extra.append(r)
        (y,) = b.emit("add", [y, r])
        (y,) = b.emit("relu", [y])
    return b.build([y]), ins, extra


@settings(max_examples=25, deadline=None)
@given(convs(), st.booleans())
def test_conv_forward_and_gradients_match_reference(cfg, flip):
    """... with the weight gradient's GEMM either way round (``WGRAD_T_MAX_F``)."""
    old = cpu_conv_steps.WGRAD_T_MAX_F
    cpu_conv_steps.WGRAD_T_MAX_F = 64 if flip else 0
    try:
        _forward_and_gradients(cfg)
    finally:
        cpu_conv_steps.WGRAD_T_MAX_F = old


def _forward_and_gradients(cfg):
    graph, ins, extra = _conv_graph(cfg)
    joint = run_pipeline(graph, grad=True, head_grads="ones")
    inputs = [_rand(v.type.shape, j) for j, v in enumerate(joint.inputs)]
    params = [_rand(v.type.shape, 10 + j) for j, v in enumerate(joint.params)]
    itemsize = 4
    ck = cfg["c"] * cfg["k"][0] * cfg["k"][1]
    out = graph.outputs[0].type.shape
    with _chunk_bytes(cfg["chunk"] * ck * out[2] * out[3] * itemsize):
        rep = _compare(joint, inputs, params)
    assert rep.get("conv_wgrad", 0) == 1, rep
    assert any(k.startswith("conv") and "grad" not in k for k in rep), rep


@settings(max_examples=15, deadline=None)
@given(convs(), st.integers(0, 1), st.integers(0, 1))
def test_deconvolution_op_matches_reference(cfg, adj0, adj1):
    """deconvolution as a user's transposed convolution (bias, adj, groups)."""
    n, c, f, g = cfg["n"], cfg["c"], cfg["f"], cfg["g"]
    s, k, p, d = cfg["s"], cfg["k"], cfg["p"], cfg["d"]
    adj = (min(adj0, s[0] - 1), min(adj1, s[1] - 1))
    b = GraphBuilder("deconv")
    x = b.input(TensorType((n, f) + cfg["hw"], F32), "x")
    w = b.param(TensorType((f, c // g) + k, F32), "w")
    ins = [x, w] + ([b.param(TensorType((c,), F32), "b")] if cfg["bias"] else [])
    (y,) = b.emit("deconvolution", ins, kernel=k, stride=s, pad=p, dilate=d, adj=adj,
                  num_filter=c, num_group=g, no_bias=not cfg["bias"])
    (y,) = b.emit("tanh", [y])
    graph = run_pipeline(b.build([y]))
    rep = _compare(graph, [_rand(x.type.shape)],
                   [_rand(v.type.shape, 3 + j) for j, v in enumerate(graph.params)])
    assert rep.get("conv_dgrad+epilogue", 0) + rep.get("conv_dgrad", 0) == 1, rep


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nan_and_inf_propagate_as_in_eager():
    for g, c, f in ((1, 3, 4), (3, 3, 3)):   # GEMM path and depthwise
        cfg = dict(n=2, c=c, f=f, g=g, hw=(6, 7), k=(3, 3), s=(1, 1), p=(1, 1), d=(1, 1),
                   bias=True, epi="relu")
        graph, _, _ = _conv_graph(cfg)
        joint = run_pipeline(graph, grad=True, head_grads="ones")
        inputs = [_rand(v.type.shape, j) for j, v in enumerate(joint.inputs)]
        inputs[0][0, 0, 1, 2] = np.nan
        inputs[0][1, -1, 0, 0] = np.inf
        inputs[0][1, 0, 3, 3] = -np.inf
        params = [_rand(v.type.shape, 10 + j) for j, v in enumerate(joint.params)]
        _compare(joint, inputs, params)
        # an infinite weight meets the zero padding: 0 * inf is NaN in both
        params[0][0, 0, 0, 0] = np.inf
        _compare(graph_fwd := run_pipeline(graph), inputs[:1], params)
        assert graph_fwd is not None


def test_float64_and_pointwise_paths():
    for k, s, p in (((1, 1), (1, 1), (0, 0)), ((3, 3), (2, 2), (1, 1))):
        b = GraphBuilder("conv64")
        x = b.input(TensorType((3, 4, 6, 6), "float64"), "x")
        w = b.param(TensorType((5, 4) + k, "float64"), "w")
        (y,) = b.emit("convolution", [x, w], kernel=k, stride=s, pad=p, num_filter=5,
                      no_bias=True)
        joint = run_pipeline(b.build([y]), grad=True, head_grads="ones")
        inputs = [_rand(v.type.shape, j, "float64") for j, v in enumerate(joint.inputs)]
        params = [_rand(v.type.shape, 9, "float64") for v in joint.params]
        for chunk in (1, 2, 100):
            with _chunk_bytes(chunk * 4 * k[0] * k[1] * 36 * 8):
                rep = _compare(joint, inputs, params, rtol=1e-10, atol=1e-10)
        assert rep.get("conv_wgrad") == 1 and rep.get("conv_dgrad", 0) + \
            rep.get("conv_dgrad+epilogue", 0) == 1, rep


@pytest.mark.parametrize("per_sample", [True, False])
def test_pointwise_forward_per_sample_or_in_chunks(per_sample, monkeypatch):
    """A 1x1 convolution's forward from ``POINTWISE_SAMPLE_M`` output pixels on runs one
    GEMM per sample from the image into the output (bias, fused residual epilogue)."""
    monkeypatch.setattr(cpu_conv_steps, "POINTWISE_SAMPLE_M", 16 if per_sample else 10 ** 9)
    cfg = dict(n=3, c=5, f=4, g=1, hw=(4, 5), k=(1, 1), s=(1, 1), p=(0, 0), d=(1, 1),
               bias=True, epi="residual")
    graph, _, _ = _conv_graph(cfg)
    joint = run_pipeline(graph, grad=True, head_grads="ones")
    inputs = [_rand(v.type.shape, j) for j, v in enumerate(joint.inputs)]
    params = [_rand(v.type.shape, 10 + j) for j, v in enumerate(joint.params)]
    _compare(joint, inputs, params)


def test_outputs_run_twice_and_the_scratch_is_shared():
    """Two convolutions of one program share one scratch buffer; a second run equals the
    first (nothing left over in the columns)."""
    b = GraphBuilder("two")
    x = b.input(TensorType((2, 3, 8, 8), F32), "x")
    w1 = b.param(TensorType((4, 3, 3, 3), F32), "w1")
    w2 = b.param(TensorType((6, 4, 3, 3), F32), "w2")
    (y,) = b.emit("convolution", [x, w1], kernel=(3, 3), pad=(1, 1), num_filter=4,
                  no_bias=True)
    (y,) = b.emit("convolution", [y, w2], kernel=(3, 3), stride=(2, 2), num_filter=6,
                  no_bias=True)
    graph = run_pipeline(b.build([y]))
    fn = cpu.compile(graph)
    ins, ps = [_rand((2, 3, 8, 8))], [_rand((4, 3, 3, 3), 1), _rand((6, 4, 3, 3), 2)]
    a = fn(ins, ps)[0].copy()
    np.testing.assert_array_equal(fn(ins, ps)[0], a)
    want = reference.run_graph(graph, ins, ps)[0]
    np.testing.assert_allclose(a, want, rtol=1e-4, atol=1e-4)
    assert fn.report.get("conv") == 2


def test_hybridized_conv_bn_relu_blocks_fold_and_match_eager(monkeypatch, capsys):
    """Inference of a depthwise + pointwise block and a residual block through hybridize():
    BatchNorm folds into the convolutions' epilogues, nothing falls back, results equal
    eager mode's."""
    import ember as mx
    from ember import nd
    from ember.gluon import nn

    class Block(nn.HybridBlock):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.dw = nn.Conv2D(4, 3, padding=1, groups=4, in_channels=4, use_bias=False)
            self.bn1 = nn.BatchNorm(in_channels=4)
            self.pw = nn.Conv2D(4, 1, in_channels=4, use_bias=False)
            self.bn2 = nn.BatchNorm(in_channels=4)

        def hybrid_forward(self, F, x):
            y = F.relu(self.bn1(self.dw(x)))
            return F.relu(self.bn2(self.pw(y)) + x)

    monkeypatch.setenv("EMBER_DEBUG_BACKEND", "1")
    net = Block()
    net.initialize(mx.init.Xavier())
    rng = np.random.default_rng(0)
    for p in net.collect_params().values():   # statistics that are not 0 and 1
        if p.name.endswith(("running_var", "gamma")):
            p.set_data(nd.array(rng.uniform(0.5, 2.0, p.shape)))
        elif p.name.endswith(("running_mean", "beta")):
            p.set_data(nd.array(rng.standard_normal(p.shape)))
    x = nd.array(rng.standard_normal((2, 4, 7, 6)).astype(np.float32))
    want = net(x).asnumpy()
    net.hybridize()
    got = net(x).asnumpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    report = capsys.readouterr().err
    assert "conv+epilogue=2" in report, report
    assert "fallback" not in report and "batch_norm" not in report, report


def test_one_dimensional_convolutions_run_as_height_one():
    for g, c, f, k, s, p, d in ((1, 3, 4, 3, 1, 1, 1), (2, 4, 2, 2, 2, 0, 2),
                                (3, 3, 6, 3, 2, 2, 1)):
        cfg = dict(n=3, c=c, f=f, g=g, hw=(9,), k=(k,), s=(s,), p=(p,), d=(d,), bias=True,
                   epi="residual")
        graph, _, _ = _conv_graph(cfg)
        joint = run_pipeline(graph, grad=True, head_grads="ones")
        inputs = [_rand(v.type.shape, j) for j, v in enumerate(joint.inputs)]
        params = [_rand(v.type.shape, 10 + j) for j, v in enumerate(joint.params)]
        with _chunk_bytes(2 * c * k * 9 * 4):
            rep = _compare(joint, inputs, params)
        assert rep.get("conv_wgrad") == 1, rep
        assert rep.get("conv", 0) + rep.get("conv+epilogue", 0) == 1, rep
        assert rep.get("conv_dgrad", 0) + rep.get("conv_dgrad+epilogue", 0) == 1, rep


def test_single_channel_convolution_takes_the_gemm_path():
    """One input channel and one group (LeNet's first layer) is an ordinary convolution: the
    depthwise kernels (one channel per group, several groups) ran it 1.4x slower."""
    from ember.backends.cpu_conv import Geo
    geo = dict(n=8, h=28, w=28, f=6, oh=28, ow=28, k=(5, 5), s=(1, 1), d=(1, 1), p=(2, 2))
    assert not Geo(c=1, g=1, **geo).depthwise
    assert Geo(c=6, g=6, **geo).depthwise and not Geo(c=6, g=3, **geo).depthwise


@pytest.mark.parametrize("hw,k,p,mult", [((8, 8), (3, 3), (1, 1), 1), ((9, 7), (3, 3), (1, 0), 1),
                                         ((7, 10), (5, 5), (2, 2), 2), ((6, 5), (1, 1), (0, 0), 1),
                                         ((11, 9), (3, 1), (0, 1), 1), ((5, 5), (5, 5), (0, 0), 1)])
def test_depthwise_stride_two_by_parity_planes(hw, k, p, mult):
    """A stride-2 depthwise convolution runs as stride-1 passes over the input's four
    (row, column) parity planes: odd and even sizes, pads and kernels as the reference."""
    cfg = dict(n=2, c=3, f=3 * mult, g=3, hw=hw, k=k, s=(2, 2), p=p, d=(1, 1), bias=True,
               epi="relu", chunk=64)
    graph, _, _ = _conv_graph(cfg)
    joint = run_pipeline(graph, grad=True, head_grads="ones")
    inputs = [_rand(v.type.shape, j) for j, v in enumerate(joint.inputs)]
    params = [_rand(v.type.shape, 10 + j) for j, v in enumerate(joint.params)]
    _compare(joint, inputs, params)


@pytest.mark.parametrize("epi,s,mult,n", [("relu", (1, 1), 1, 4), ("residual", (2, 2), 2, 7),
                                          ("none", (1, 1), 1, 5)])
def test_depthwise_forward_split_over_samples_with_its_epilogue(monkeypatch, epi, s, mult, n):
    """From ``DW_SAMPLES_PER_THREAD`` samples per thread, each thread runs a depthwise
    forward over its samples and then their epilogue (bias, relu, a residual): the result
    is the reference's, an odd count of samples included."""
    from ember.backends import cpu_split
    monkeypatch.setattr(cpu_split, "_thread_source", lambda: 2)
    calls = []
    real = cpu_conv_steps.run_split
    monkeypatch.setattr(cpu_conv_steps, "run_split",
                        lambda fn, args, m, parts: calls.append(m) or real(fn, args, m, parts))
    cfg = dict(n=n, c=3, f=3 * mult, g=3, hw=(9, 8), k=(3, 3), s=s, p=(1, 1), d=(1, 1),
               bias=epi != "none", epi=epi, chunk=64)
    graph, _, _ = _conv_graph(cfg)
    inputs = [_rand(v.type.shape, j) for j, v in enumerate(graph.inputs)]
    params = [_rand(v.type.shape, 10 + j) for j, v in enumerate(graph.params)]
    _compare(graph, inputs, params)
    assert calls == ([n] if epi != "none" else []), calls   # no epilogue: split over planes


@pytest.mark.parametrize("k,d", [((5, 5), (1, 1)), ((3, 2), (1, 1)), ((1, 4), (1, 1)),
                                 ((3, 5), (2, 2)), ((2, 7), (1, 1))])
def test_depthwise_stride_one_row_passes(k, d):
    """The stride-1 depthwise forward adds up to three taps of a kernel row per pass over
    the plane: rows of 1 to 7 taps (passes of 3, 2 and 1), dilated, as the reference."""
    cfg = dict(n=2, c=3, f=6, g=3, hw=(9, 11), k=k, s=(1, 1), p=(k[0] // 2, k[1] // 2), d=d,
               bias=True, epi="relu", chunk=64)
    graph, _, _ = _conv_graph(cfg)
    joint = run_pipeline(graph, grad=True, head_grads="ones")
    inputs = [_rand(v.type.shape, j) for j, v in enumerate(joint.inputs)]
    params = [_rand(v.type.shape, 10 + j) for j, v in enumerate(joint.params)]
    _compare(joint, inputs, params)


@pytest.mark.parametrize("epi,bias,n", [("relu", True, 11), ("residual", False, 2),
                                        ("none", False, 3)])
def test_pointwise_samples_run_whole_on_each_thread(monkeypatch, epi, bias, n):
    """1x1 convolutions of one GEMM per sample run whole samples (GEMM at one BLAS thread,
    then the epilogue) on each thread: the reference's result, with or without epilogue."""
    from ember.backends import cpu_split
    monkeypatch.setattr(cpu_split, "_thread_source", lambda: 2)
    monkeypatch.setattr(cpu_conv_steps, "POINTWISE_SAMPLE_M", 1)
    calls = []
    real = cpu_conv_steps.run_split_blas
    monkeypatch.setattr(cpu_conv_steps, "run_split_blas",
                        lambda fn, args, m: calls.append(m) or real(fn, args, m))
    cfg = dict(n=n, c=5, f=7, g=1, hw=(6, 5), k=(1, 1), s=(1, 1), p=(0, 0), d=(1, 1),
               bias=bias, epi=epi, chunk=64)
    graph, _, _ = _conv_graph(cfg)
    inputs = [_rand(v.type.shape, j) for j, v in enumerate(graph.inputs)]
    params = [_rand(v.type.shape, 10 + j) for j, v in enumerate(graph.params)]
    _compare(graph, inputs, params)
    assert calls == [n], calls


def _im2col_reference(x, k, s, d, p):
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    oh = (h + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    ow = (w + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    cols = np.empty((c, k[0], k[1], n, oh, ow), x.dtype)
    for i in range(k[0]):
        for j in range(k[1]):
            win = xp[:, :, i * d[0]:i * d[0] + s[0] * (oh - 1) + 1:s[0],
                     j * d[1]:j * d[1] + s[1] * (ow - 1) + 1:s[1]]
            cols[:, i, j] = win.transpose(1, 0, 2, 3)
    return cols.reshape(c * k[0] * k[1], n, oh * ow), oh, ow


@pytest.mark.parametrize("n,c,hw,k,s,d,p", [
    (2, 3, (7, 7), (3, 3), (1, 1), (1, 1), (1, 1)),      # gathered rows (width <= 14)
    (1, 4, (14, 14), (3, 3), (2, 2), (1, 1), (1, 1)),
    (3, 2, (20, 17), (3, 3), (1, 1), (1, 1), (1, 1)),    # row copies
    (2, 2, (31, 33), (3, 2), (2, 3), (1, 2), (2, 0)),
    (1, 3, (16, 29), (5, 5), (1, 1), (2, 2), (3, 1)),
    (2, 1, (9, 40), (1, 1), (1, 1), (1, 1), (0, 0))])
def test_im2col_copies_every_window_from_padded_planes(n, c, hw, k, s, d, p):
    """IM2COL (``cpu_conv_kernels``) over ranges of channels equals NumPy's windows, the
    pads zero, Inf and NaN copied as they are, on both sides of its gathered-row width."""
    from ember.backends.cpu_conv_kernels import IM2COL
    from ember.backends.cpu_steps import split
    x = _rand((n, c) + hw, seed=sum(hw))
    x[0, 0, 1, 2], x[-1, -1, -1, -1] = np.inf, np.nan
    want, oh, ow = _im2col_reference(x, k, s, d, p)
    im2col = split(IM2COL)
    args = (k[0], k[1], s[0], s[1], d[0], d[1], p[0], p[1], oh, ow)
    whole = np.full(want.shape, 7.0, np.float32)
    im2col(x, *args, whole)
    np.testing.assert_array_equal(whole, want)
    parts = np.full(want.shape, 7.0, np.float32)
    for lo in range(c):   # one channel a call, as a split part
        im2col.serial(x, *args, parts, lo, lo + 1)
    np.testing.assert_array_equal(parts, want)


@pytest.mark.parametrize("hw,s,p,mult", [
    ((9, 11), (1, 1), (1, 1), 1), ((18, 20), (1, 1), (1, 1), 2), ((17, 16), (1, 1), (0, 2), 1),
    ((9, 12), (2, 2), (1, 1), 1), ((36, 33), (2, 2), (1, 1), 1), ((35, 40), (2, 2), (0, 1), 2)])
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_depthwise_3x3_in_one_pass(hw, s, p, mult):
    """3x3 depthwise kernels add all nine taps in one pass, rows of ``ROW_MIN`` outputs or
    more straight into the output: both ways, both strides, Inf and NaN as the reference."""
    cfg = dict(n=2, c=3, f=3 * mult, g=3, hw=hw, k=(3, 3), s=s, p=p, d=(1, 1), bias=True,
               epi="relu", chunk=64)
    graph, _, _ = _conv_graph(cfg)
    inputs = [_rand(v.type.shape, j) for j, v in enumerate(graph.inputs)]
    inputs[0][0, 1, 2, 3], inputs[0][1, 2, -1, -2] = np.inf, np.nan
    params = [_rand(v.type.shape, 10 + j) for j, v in enumerate(graph.params)]
    fn = cpu.compile(graph)
    got = fn([a.copy() for a in inputs], [q.copy() for q in params])
    want = reference.run_graph(graph, [a.copy() for a in inputs], [q.copy() for q in params])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-4)
    assert np.array_equal(np.isnan(got[0]), np.isnan(want[0]))


@settings(max_examples=20, deadline=None)
@given(n=st.integers(2, 4), c=st.integers(1, 5), f=st.integers(1, 5),
       s=st.tuples(st.integers(1, 3), st.integers(1, 3)).filter(lambda s: s != (1, 1)),
       hw=st.tuples(st.integers(1, 9), st.integers(1, 9)), bias=st.booleans(),
       epi=st.sampled_from(["none", "relu", "residual"]))
def test_strided_1x1_runs_whole_samples_and_matches_reference(n, c, f, s, hw, bias, epi):
    """ResNet's downsampling (1x1, stride 2, no padding): forward, data and weight gradient
    one sample at a time on the pool's threads (``STRIDED_PW_M``), odd sizes and unequal
    strides included, with the fused epilogues; each of the three steps takes that path."""
    cfg = dict(n=n, c=c, f=f, g=1, hw=hw, k=(1, 1), s=s, p=(0, 0), d=(1, 1), bias=bias,
               epi=epi)
    graph, _, _ = _conv_graph(cfg)
    joint = run_pipeline(graph, grad=True, head_grads="ones")
    inputs = [_rand(v.type.shape, j) for j, v in enumerate(joint.inputs)]
    params = [_rand(v.type.shape, 10 + j) for j, v in enumerate(joint.params)]
    taken = []
    real = cpu_conv_steps.run_split_blas

    def spy(fn, args, count):
        ran = real(fn, args, count)
        if ran:
            taken.append(fn.__name__)
        return ran
    old = (cpu_conv_steps.STRIDED_PW_M, cpu_conv_steps.STRIDED_PW_GRAD_M,
           cpu_conv_steps.run_split_blas)
    cpu_conv_steps.STRIDED_PW_M = cpu_conv_steps.STRIDED_PW_GRAD_M = 1
    cpu_conv_steps.run_split_blas = spy
    try:
        _compare(joint, inputs, params)
    finally:
        (cpu_conv_steps.STRIDED_PW_M, cpu_conv_steps.STRIDED_PW_GRAD_M,
         cpu_conv_steps.run_split_blas) = old
    if cpu_split.threads() > 1:   # (one thread: the chunked steps, checked elsewhere)
        assert {"_pw_samples", "_sub_samples", "_sub_products"} <= set(taken), taken


@settings(max_examples=25, deadline=None)
@given(convs().filter(lambda cfg: cfg["g"] == 1 and cfg["n"] >= 2 and
                      (cfg["k"] != (1, 1) or cfg["s"] != (1, 1) or cfg["p"] != (0, 0))))
def test_whole_samples_with_their_own_columns_match_reference(cfg):
    """The forward and data gradient of one sample per GEMM (``COLS_SAMPLE_M``): im2col or
    col2im through the thread's own columns, any kernel, stride, padding and dilation, with
    the fused epilogues; both steps take that path."""
    taken = []
    real = cpu_conv_steps.run_split_blas

    def spy(fn, args, count):
        ran = real(fn, args, count)
        if ran:
            taken.append(fn.__qualname__.split(".")[0] + "." + fn.__name__)
        return ran
    old = (cpu_conv_steps.COLS_SAMPLE_M, cpu_conv_steps.STRIDED_PW_M,
           cpu_conv_steps.STRIDED_PW_GRAD_M, cpu_conv_steps.run_split_blas, cpu_direct._ENABLED)
    cpu_conv_steps.COLS_SAMPLE_M = 1
    cpu_conv_steps.STRIDED_PW_M = cpu_conv_steps.STRIDED_PW_GRAD_M = 10**9
    cpu_conv_steps.run_split_blas = spy
    cpu_direct._ENABLED = False   # (the few-filter layers' direct kernels: not these steps)
    try:
        _forward_and_gradients(cfg)
    finally:
        (cpu_conv_steps.COLS_SAMPLE_M, cpu_conv_steps.STRIDED_PW_M,
         cpu_conv_steps.STRIDED_PW_GRAD_M, cpu_conv_steps.run_split_blas,
         cpu_direct._ENABLED) = old
    if cpu_split.threads() > 1:
        assert {"forward_step._col_samples", "dgrad_step._col_samples"} <= set(taken), taken


def test_whole_samples_only_where_a_samples_columns_are_small():
    """The threads keep their column buffers: a sample's columns above COLS_SAMPLE_BYTES
    (a 64-channel 3x3 layer at 112x112: 29 MB) keep the chunked steps, ResNet's 3x3/2 and
    maps under COLS_SAMPLE_M too."""
    def geo(**kw):
        cfg = dict(n=2, c=64, f=128, g=1, hw=(56, 56), k=(3, 3), s=(2, 2), p=(1, 1),
                   d=(1, 1), bias=False, epi="none")
        cfg.update(kw)
        return cpu_conv.geometry(_conv_graph(cfg)[0].nodes[0])
    assert cpu_conv_steps._sample_cols(geo(), 4)
    assert not cpu_conv_steps._sample_cols(geo(hw=(112, 112), s=(1, 1)), 4)
    assert not cpu_conv_steps._sample_cols(geo(hw=(14, 14)), 4)         # 7x7 outputs
    assert not cpu_conv_steps._sample_cols(geo(n=1), 4)
