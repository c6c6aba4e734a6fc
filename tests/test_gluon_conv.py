"""gluon.nn convolution, transposed convolution, pooling and padding layers.

Outputs are checked against direct NumPy loops (one output position at a time) using the
layers' own initialised parameters; deferred input channels, MXNet's names and reprs, and
the gradients of a small conv net against central finite differences.
"""
import itertools

import numpy as np
import pytest

import ember as mx
from ember.base import MXNetError
from ember.gluon import nn
from ember.gluon.parameter import DeferredInitializationError

RNG = np.random.default_rng(1)


def _x(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _close(a, b, tol=1e-4):
    a = a.asnumpy() if hasattr(a, "asnumpy") else a
    assert a.shape == np.shape(b), f"{a.shape} != {np.shape(b)}"
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def _np(p):
    return p.data().asnumpy().astype(np.float64)


# ---- NumPy references --------------------------------------------------------------------
def conv_ref(x, w, b, stride, pad, dilate, groups):
    """Direct cross-correlation, NC* layout, weight (F, C/g, *k)."""
    nsp = x.ndim - 2
    k = w.shape[2:]
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + [(p, p) for p in pad])
    out = [(xp.shape[2 + i] - dilate[i] * (k[i] - 1) - 1) // stride[i] + 1 for i in range(nsp)]
    f, cg = w.shape[0], w.shape[1]
    fg = f // groups
    y = np.zeros((x.shape[0], f, *out))
    for pos in itertools.product(*[range(o) for o in out]):
        sl = tuple(slice(p * s, p * s + d * (kk - 1) + 1, d)
                   for p, s, d, kk in zip(pos, stride, dilate, k))
        patch = xp[(slice(None), slice(None)) + sl]          # N, C, *k
        for g in range(groups):
            pg = patch[:, g * cg:(g + 1) * cg]
            wg = w[g * fg:(g + 1) * fg]
            y[(slice(None), slice(g * fg, (g + 1) * fg)) + pos] = \
                np.tensordot(pg, wg, axes=(list(range(1, nsp + 2)), list(range(1, nsp + 2))))
    if b is not None:
        y += b.reshape((1, -1) + (1,) * nsp)
    return y


def deconv_ref(x, w, b, stride, pad, dilate, adj, groups):
    """Direct transposed convolution, weight (C, F/g, *k): scatter each input position."""
    nsp = x.ndim - 2
    k, cin, fg = w.shape[2:], x.shape[1], w.shape[1]
    cg = cin // groups
    full = [(x.shape[2 + i] - 1) * stride[i] + dilate[i] * (k[i] - 1) + 1 + adj[i]
            for i in range(nsp)]
    y = np.zeros((x.shape[0], fg * groups, *full))
    for pos in itertools.product(*[range(n) for n in x.shape[2:]]):
        for off in itertools.product(*[range(kk) for kk in k]):
            tgt = tuple(p * s + o * d for p, s, o, d in zip(pos, stride, off, dilate))
            for g in range(groups):
                xv = x[(slice(None), slice(g * cg, (g + 1) * cg)) + pos]         # N, cg
                wv = w[(slice(g * cg, (g + 1) * cg), slice(None)) + off]         # cg, fg
                y[(slice(None), slice(g * fg, (g + 1) * fg)) + tgt] += xv @ wv
    out = [(x.shape[2 + i] - 1) * stride[i] - 2 * pad[i] + dilate[i] * (k[i] - 1) + 1 + adj[i]
           for i in range(nsp)]
    y = y[(Ellipsis,) + tuple(slice(p, p + o) for p, o in zip(pad, out))]
    if b is not None:
        y += b.reshape((1, -1) + (1,) * nsp)
    return y


def pool_ref(x, k, stride, pad, kind, ceil=False, include_pad=True):
    """Max / average pooling by explicit windows (MXNet's valid / full conventions)."""
    nsp = x.ndim - 2
    sp = x.shape[2:]
    rnd = np.ceil if ceil else np.floor
    out = [int(rnd((sp[i] + 2 * pad[i] - k[i]) / stride[i])) + 1 for i in range(nsp)]
    y = np.zeros(x.shape[:2] + tuple(out))
    for pos in itertools.product(*[range(o) for o in out]):
        lo = [p * s - pd for p, s, pd in zip(pos, stride, pad)]
        hi = [min(a + kk, n + pd) for a, kk, n, pd in zip(lo, k, sp, pad)]
        size = np.prod([h - a for a, h in zip(lo, hi)])
        sl = tuple(slice(max(a, 0), min(h, n)) for a, h, n in zip(lo, hi, sp))
        win = x[(slice(None), slice(None)) + sl].reshape(x.shape[:2] + (-1,))
        if kind == "max":
            y[(Ellipsis,) + pos] = win.max(-1)
        else:
            y[(Ellipsis,) + pos] = win.sum(-1) / (size if include_pad else win.shape[-1])
    return y


# ---- convolution -------------------------------------------------------------------------
CONV_CASES = [
    (nn.Conv1D, dict(channels=4, kernel_size=3, strides=2, padding=1), (2, 3, 7)),
    (nn.Conv2D, dict(channels=4, kernel_size=(3, 2), padding=(1, 0), dilation=(1, 2),
                     groups=2), (2, 4, 5, 6)),
    (nn.Conv2D, dict(channels=3, kernel_size=1, use_bias=False), (1, 2, 3, 3)),
    (nn.Conv3D, dict(channels=2, kernel_size=2, strides=(1, 2, 1)), (1, 3, 3, 4, 3)),
]


@pytest.mark.parametrize("cls,kw,shape", CONV_CASES)
def test_conv_forward_and_deferred_in_channels(cls, kw, shape):
    layer = cls(bias_initializer="normal", **kw)
    nsp = len(shape) - 2
    k = kw["kernel_size"]
    k = (k,) * nsp if isinstance(k, int) else k
    assert layer.weight.shape == (kw["channels"], 0) + k
    layer.initialize()
    with pytest.raises(DeferredInitializationError):
        layer.weight.data()
    x = _x(*shape)
    y = layer(mx.nd.array(x))
    g = kw.get("groups", 1)
    assert layer.weight.shape == (kw["channels"], shape[1] // g) + k
    b = None if layer.bias is None else _np(layer.bias)

    def tup(name, d):
        v = kw.get(name, d)
        return (v,) * nsp if isinstance(v, int) else v
    want = conv_ref(x, _np(layer.weight), b, tup("strides", 1), tup("padding", 0),
                    tup("dilation", 1), g)
    _close(y, want)


DECONV_CASES = [
    (nn.Conv1DTranspose, dict(channels=3, kernel_size=3, strides=2, padding=1,
                              output_padding=1), (2, 2, 4)),
    (nn.Conv2DTranspose, dict(channels=4, kernel_size=(2, 3), strides=(2, 1), padding=(0, 1),
                              groups=2), (1, 4, 3, 3)),
    (nn.Conv2DTranspose, dict(channels=2, kernel_size=3, dilation=2, use_bias=False),
     (1, 3, 2, 2)),
    (nn.Conv3DTranspose, dict(channels=2, kernel_size=2, strides=2), (1, 2, 2, 2, 2)),
]


@pytest.mark.parametrize("cls,kw,shape", DECONV_CASES)
def test_conv_transpose_forward(cls, kw, shape):
    layer = cls(bias_initializer="normal", **kw)
    nsp = len(shape) - 2
    g = kw.get("groups", 1)
    layer.initialize()
    x = _x(*shape)
    y = layer(mx.nd.array(x))
    k = kw["kernel_size"]
    k = (k,) * nsp if isinstance(k, int) else k
    assert layer.weight.shape == (shape[1], kw["channels"] // g) + k

    def tup(name, d):
        v = kw.get(name, d)
        return (v,) * nsp if isinstance(v, int) else v
    b = None if layer.bias is None else _np(layer.bias)
    want = deconv_ref(x, _np(layer.weight), b, tup("strides", 1), tup("padding", 0),
                      tup("dilation", 1), tup("output_padding", 0), g)
    _close(y, want)


def test_conv_activation_and_known_in_channels():
    layer = nn.Conv2D(3, 3, activation="relu", in_channels=2)
    assert layer.weight.shape == (3, 2, 3, 3)
    layer.initialize()
    assert layer.weight.data().shape == (3, 2, 3, 3)   # not deferred
    x = _x(1, 2, 4, 4)
    want = np.maximum(conv_ref(x, _np(layer.weight), _np(layer.bias), (1, 1), (0, 0),
                               (1, 1), 1), 0)
    _close(layer(mx.nd.array(x)), want)
    tr = nn.Conv2DTranspose(4, 2, in_channels=3)
    assert tr.weight.shape == (3, 4, 2, 2)


def test_conv_reprs():
    c = nn.Conv2D(8, 3)
    assert repr(c) == "Conv2D(None -> 8, kernel_size=(3, 3), stride=(1, 1))"
    c.initialize()
    c(mx.nd.ones((1, 3, 5, 5)))
    assert repr(c) == "Conv2D(3 -> 8, kernel_size=(3, 3), stride=(1, 1))"
    c2 = nn.Conv1D(4, 3, strides=2, padding=1, dilation=2, groups=2, use_bias=False,
                   activation="tanh", in_channels=2)
    assert repr(c2) == ("Conv1D(1 -> 4, kernel_size=(3,), stride=(2,), padding=(1,), "
                        "dilation=(2,), groups=2, bias=False, Activation(tanh))")
    t = nn.Conv2DTranspose(4, 2, strides=2, output_padding=1, in_channels=3)
    assert repr(t) == "Conv2DTranspose(4 -> 3, kernel_size=(2, 2), stride=(2, 2))"
    assert t.outpad == (1, 1)
    assert repr(nn.MaxPool2D()) == ("MaxPool2D(size=(2, 2), stride=(2, 2), padding=(0, 0), "
                                    "ceil_mode=False, global_pool=False, pool_type=max, "
                                    "layout=NCHW)")
    assert repr(nn.GlobalAvgPool1D()) == ("GlobalAvgPool1D(size=(1,), stride=(1,), "
                                          "padding=(0,), ceil_mode=True, global_pool=True, "
                                          "pool_type=avg, layout=NCW)")


@pytest.mark.parametrize("nsp", [1, 2, 3])
@pytest.mark.parametrize("in_channels", [4, 0])
def test_channels_last_convolution(nsp, in_channels):
    """NWC / NHWC / NDHWC: weight (out, *kernel, in / groups) as MXNet lays it out, and the
    same result as the channels-first layer on transposed data and weight."""
    layout = {1: "NWC", 2: "NHWC", 3: "NDHWC"}[nsp]
    cls = {1: nn.Conv1D, 2: nn.Conv2D, 3: nn.Conv3D}[nsp]
    last = cls(6, 3, layout=layout, in_channels=in_channels, groups=2, strides=2, padding=1)
    last.initialize()
    x = mx.nd.array(_x(2, *([7] * nsp), 4))
    y = last(x)
    assert last.weight.shape == (6,) + (3,) * nsp + (2,)
    first = cls(6, 3, in_channels=4, groups=2, strides=2, padding=1)
    first.initialize()
    to_first = (0, nsp + 1) + tuple(range(1, nsp + 1))
    first.weight.set_data(last.weight.data().transpose(to_first))
    first.bias.set_data(last.bias.data())
    ref = first(x.transpose(to_first)).transpose((0,) + tuple(range(2, nsp + 2)) + (1,))
    assert y.shape == (2,) + (4,) * nsp + (6,)
    _close(y, ref, 1e-5)
    assert repr(last).startswith(f"{cls.__name__}(2 -> 6, kernel_size=")  # in / groups


def test_channels_last_learns_in_channels_inside_a_network():
    net = nn.HybridSequential()
    net.add(nn.Conv2D(8, 3, layout="NHWC"), nn.MaxPool2D(layout="NHWC"),
            nn.Conv2D(4, 3, layout="NHWC"))
    net.initialize()
    assert net(mx.nd.array(_x(1, 10, 10, 3))).shape == (1, 2, 2, 4)
    assert net[0].weight.shape == (8, 3, 3, 3) and net[2].weight.shape == (4, 3, 3, 8)


def test_layout_and_argument_errors():
    with pytest.raises(MXNetError, match="Conv2DTranspose.*NHWC"):
        nn.Conv2DTranspose(4, 3, layout="NHWC")
    with pytest.raises(MXNetError, match="Conv3DTranspose.*invalid layout"):
        nn.Conv3DTranspose(4, 3, layout="NCHW")
    with pytest.raises(MXNetError, match="kernel_size"):
        nn.Conv2D(4, (3, 3, 3))
    with pytest.raises(MXNetError, match="MaxPool1D.*invalid layout"):
        nn.MaxPool1D(layout="NCHW")
    with pytest.raises(MXNetError, match="groups"):
        nn.Conv2D(5, 3, groups=2)
    with pytest.raises(MXNetError):
        nn.ReflectionPad2D((1, 2))


# ---- pooling and padding -----------------------------------------------------------------
POOL_CASES = [
    (nn.MaxPool1D, dict(pool_size=3, strides=2, padding=1), (2, 2, 7), "max", {}),
    (nn.MaxPool2D, dict(pool_size=(2, 3), ceil_mode=True), (1, 2, 5, 7), "max",
     dict(ceil=True)),
    (nn.MaxPool3D, dict(pool_size=2, strides=1), (1, 1, 3, 3, 3), "max", {}),
    (nn.AvgPool1D, dict(pool_size=2), (2, 3, 6), "avg", {}),
    (nn.AvgPool2D, dict(pool_size=3, strides=2, padding=1), (1, 2, 5, 5), "avg", {}),
    (nn.AvgPool2D, dict(pool_size=3, strides=2, padding=1, count_include_pad=False),
     (1, 2, 5, 5), "avg", dict(include_pad=False)),
    (nn.AvgPool3D, dict(pool_size=(1, 2, 2)), (1, 2, 2, 4, 4), "avg", {}),
]


@pytest.mark.parametrize("cls,kw,shape,kind,extra", POOL_CASES)
def test_pooling_forward(cls, kw, shape, kind, extra):
    nsp = len(shape) - 2
    layer = cls(**kw)
    x = _x(*shape)

    def tup(v):
        return (v,) * nsp if isinstance(v, int) else v
    k = tup(kw["pool_size"])
    s = tup(kw.get("strides") or k)
    want = pool_ref(x, k, s, tup(kw.get("padding", 0)), kind, **extra)
    _close(layer(mx.nd.array(x)), want)
    assert layer.name.startswith("pool")


def test_global_pooling_and_channels_last():
    x = _x(2, 3, 4, 5)
    _close(nn.GlobalAvgPool2D()(mx.nd.array(x)), x.mean(axis=(2, 3), keepdims=True))
    _close(nn.GlobalMaxPool2D()(mx.nd.array(x)), x.max(axis=(2, 3), keepdims=True))
    x1, x3 = _x(2, 3, 4), _x(1, 2, 2, 3, 2)
    _close(nn.GlobalMaxPool1D()(mx.nd.array(x1)), x1.max(axis=2, keepdims=True))
    _close(nn.GlobalAvgPool1D()(mx.nd.array(x1)), x1.mean(axis=2, keepdims=True))
    _close(nn.GlobalAvgPool3D()(mx.nd.array(x3)), x3.mean(axis=(2, 3, 4), keepdims=True))
    _close(nn.GlobalMaxPool3D()(mx.nd.array(x3)), x3.max(axis=(2, 3, 4), keepdims=True))
    nhwc = x.transpose(0, 2, 3, 1)
    y = nn.MaxPool2D(layout="NHWC")(mx.nd.array(nhwc))
    _close(y, pool_ref(x, (2, 2), (2, 2), (0, 0), "max").transpose(0, 2, 3, 1))


def test_reflection_pad():
    x = _x(1, 2, 3, 4)
    _close(nn.ReflectionPad2D(2)(mx.nd.array(x)),
           np.pad(x, [(0, 0), (0, 0), (2, 2), (2, 2)], mode="reflect"))
    p = nn.ReflectionPad2D((0, 0, 0, 0, 1, 0, 0, 2))
    _close(p(mx.nd.array(x)), np.pad(x, [(0, 0), (0, 0), (1, 0), (0, 2)], mode="reflect"))


# ---- names -------------------------------------------------------------------------------
def test_names_and_prefixes_follow_mxnet():
    with mx.name.NameManager():
        net = nn.HybridSequential()
        with net.name_scope():
            net.add(nn.Conv2D(8, 3), nn.MaxPool2D(), nn.Conv2DTranspose(4, 2),
                    nn.GlobalAvgPool2D(), nn.Conv1D(2, 1, activation="relu"))
        solo = nn.Conv2D(2, 1)
    assert list(net.collect_params().keys()) == [
        "hybridsequential0_conv0_weight", "hybridsequential0_conv0_bias",
        "hybridsequential0_conv1_weight", "hybridsequential0_conv1_bias",
        "hybridsequential0_conv2_weight", "hybridsequential0_conv2_bias"]
    assert [b.name for b in net._children.values()] == [
        "hybridsequential0_conv0", "hybridsequential0_pool0", "hybridsequential0_conv1",
        "hybridsequential0_pool1", "hybridsequential0_conv2"]
    assert net[4].act.prefix == "hybridsequential0_conv2_relu_"
    assert solo.prefix == "conv0_"


# ---- gradients ---------------------------------------------------------------------------
def _small_net():
    net = nn.HybridSequential()
    with net.name_scope():
        net.add(nn.Conv2D(3, 2, padding=1), nn.BatchNorm(), nn.Activation("tanh"),
                nn.MaxPool2D(2), nn.Conv2DTranspose(2, 2, strides=2, groups=1),
                nn.AvgPool2D(2, strides=1), nn.Dense(2))
    return net


def test_small_conv_net_gradients_match_finite_differences():
    net = _small_net()
    net.initialize(mx.init.Normal(0.5))
    x = _x(2, 2, 3, 3).astype(np.float64)
    head = RNG.standard_normal((2, 2))
    net(mx.nd.array(x, dtype="float32"))          # learn the shapes
    net.cast("float64")
    xs = mx.nd.array(x, dtype="float64")

    def objective():
        with mx.autograd.pause(train_mode=True):
            return float((net(xs).asnumpy() * head).sum())

    with mx.autograd.record():
        loss = (net(xs) * mx.nd.array(head, dtype="float64")).sum()
    loss.backward()
    checked = 0
    for name, p in net.collect_params().items():
        if p.grad_req == "null":
            continue
        data = p.data()._data
        grad = p.grad().asnumpy()
        num = np.zeros_like(data)
        eps = 1e-6
        for i in np.ndindex(data.shape):
            old = data[i]
            data[i] = old + eps
            hi = objective()
            data[i] = old - eps
            lo = objective()
            data[i] = old
            num[i] = (hi - lo) / (2 * eps)
        np.testing.assert_allclose(grad, num, rtol=1e-4, atol=1e-6, err_msg=name)
        checked += 1
    assert checked == 8   # conv0 w/b, batchnorm gamma/beta, conv1 w/b, dense w/b
