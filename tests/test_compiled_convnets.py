"""Small conv nets hybridized (compiled by the CPU backend) against the same nets run eagerly
(the ops' NumPy reference kernels): outputs, moving statistics, and the gradient of every
input and parameter, in training and inference mode.

Hypothesis draws stacks of 1-4 blocks (convolution with kernel 1 or 3, stride 1 or 2, pad;
3x3 depthwise convolution, stride 1 or 2; max/avg pooling; BatchNorm; relu; a residual block
conv-BN-relu-conv-BN + identity), batch 1-4 (from 2 the direct convolution kernels, from 4
their weight gradient too), 1-3 input channels, 5-12 pixels. Tolerance (float32):
|got - want| <= 2e-3 * |want| + 1e-4 * max(1, max|want|) per array: BatchNorm over a handful
of values per channel amplifies rounding (the inverse std of a near-constant channel is up
to 1/sqrt(eps)), and gradients that are zero in exact arithmetic (a bias before BatchNorm)
are rounding noise of either side.
"""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ember import autograd, nd
from ember.gluon import nn
from ember.runtime import cache

cache.install()


class Residual(nn.HybridBlock):
    """conv-BN-relu-conv-BN plus the block's input, then relu (ResNet v1's basic block)."""

    def __init__(self, channels: int, kernel: int, **kwargs):
        super().__init__(**kwargs)
        pad = kernel // 2
        self.body = nn.HybridSequential()
        self.body.add(nn.Conv2D(channels, kernel, padding=pad, use_bias=False),
                      nn.BatchNorm(), nn.Activation("relu"),
                      nn.Conv2D(channels, kernel, padding=pad, use_bias=False), nn.BatchNorm())

    def hybrid_forward(self, F, x):
        return F.relu(self.body(x) + x)


@st.composite
def nets(draw):
    """(layer specs, input shape): spatial sizes tracked so every layer has an output."""
    batch, in_chans = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    size = draw(st.integers(5, 12))
    chans = in_chans
    specs = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["conv", "dw", "pool", "bn", "relu", "res"]))
        k = draw(st.sampled_from([1, 3]))
        if kind == "conv":
            s = draw(st.sampled_from([1, 2])) if size >= 4 else 1
            p = draw(st.integers(0, k // 2))
            chans = draw(st.integers(1, 4))
            specs.append(("conv", chans, k, s, p))
            size = (size + 2 * p - k) // s + 1
        elif kind == "dw":   # depthwise 3x3
            s = draw(st.sampled_from([1, 2])) if size >= 4 else 1
            specs.append(("dw", chans, 3, s, 1))
            size = (size - 1) // s + 1
        elif kind == "pool" and size >= 3:
            kind_p = draw(st.sampled_from(["max", "avg", "avg_excl"]))
            k, s = draw(st.sampled_from([(2, 2), (3, 2), (3, 1)]))
            p = draw(st.integers(0, 1 if k == 3 else 0))
            specs.append(("pool", kind_p, k, s, p))
            size = (size + 2 * p - k) // s + 1
        elif kind == "res":
            specs.append(("res", chans, k))
        elif kind in ("bn", "relu"):
            specs.append((kind,))
    specs.append(("bn",))   # a BatchNorm before the head: every net has one
    return specs, (batch, in_chans, size)


def build(specs):
    net = nn.HybridSequential()
    for sp in specs:
        if sp[0] == "conv":
            net.add(nn.Conv2D(sp[1], sp[2], strides=sp[3], padding=sp[4],
                              use_bias=sp[5] if len(sp) > 5 else True))
        elif sp[0] == "dw":
            net.add(nn.Conv2D(sp[1], sp[2], strides=sp[3], padding=sp[4], groups=sp[1],
                              use_bias=sp[5] if len(sp) > 5 else True))
        elif sp[0] == "pool":
            if sp[1] == "max":
                net.add(nn.MaxPool2D(sp[2], sp[3], sp[4]))
            else:
                net.add(nn.AvgPool2D(sp[2], sp[3], sp[4], count_include_pad=sp[1] == "avg"))
        elif sp[0] == "res":
            net.add(Residual(sp[1], sp[2]))
        elif sp[0] == "bn":
            net.add(nn.BatchNorm(scale=True, center=True))
        else:
            net.add(nn.Activation("relu"))
    return net


def _run(net, x, head):
    """Training step (outputs, grads of x and of every parameter) then an inference output."""
    xa = nd.array(x)
    xa.attach_grad()
    with autograd.record():
        y = net(xa)
        loss = (y * nd.array(head)).sum()
    loss.backward()
    params = net.collect_params()
    grads = {n: p.grad().asnumpy() for n, p in params.items() if p.grad_req != "null"}
    stats = {n: p.data().asnumpy() for n, p in params.items() if p.grad_req == "null"}
    return y.asnumpy(), xa.grad.asnumpy(), grads, stats, net(nd.array(x)).asnumpy()


def _close(got, want, what):
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    err = np.abs(got.astype(np.float64) - want)
    bound = 2e-3 * np.abs(want) + 1e-4 * max(scale, 1.0)
    assert got.shape == want.shape and np.all(err <= bound), \
        f"{what}: max error {err.max():.3g} (bound {bound.flat[np.argmax(err - bound)]:.3g})"


def check_net(specs, shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    net = build(specs)
    net.initialize()
    net(nd.array(x))   # deferred shapes
    params = net.collect_params()
    for p in params.values():   # random weights, and statistics that are not 0/1
        a = p.data().asnumpy()
        scale = 0.5 if p.grad_req != "null" else 0.2
        p.set_data(nd.array((rng.standard_normal(a.shape) * scale + (1.0 if "var" in p.name
                                                                      else 0.0)).astype(a.dtype)))
    start = {n: p.data().asnumpy().copy() for n, p in params.items()}
    y0 = net(nd.array(x)).asnumpy()
    head = rng.standard_normal(y0.shape).astype(np.float32)
    want = _run(net, x, head)
    for n, p in params.items():
        p.set_data(nd.array(start[n]))
    net.hybridize()
    got = _run(net, x, head)
    _close(got[0], want[0], "training output")
    _close(got[1], want[1], "input gradient")
    for n in want[2]:
        _close(got[2][n], want[2][n], f"gradient of {n}")
    for n in want[3]:
        _close(got[3][n], want[3][n], f"moving statistic {n}")
    _close(got[4], want[4], "inference output")


def test_resnet_like_stack():
    check_net([("conv", 4, 3, 2, 1), ("bn",), ("relu",), ("pool", "max", 3, 2, 1),
               ("res", 4, 3), ("pool", "avg", 2, 2, 0), ("bn",)], (2, 3, 12, 12), 0)


def test_lenet_like_stack():
    """LeNet's layers (5x5 direct convolutions in every direction, 2x2/2 max pooling's
    tiling gradient) at batch 4."""
    check_net([("conv", 6, 5, 1, 2), ("relu",), ("pool", "max", 2, 2, 0),
               ("conv", 16, 5, 1, 0), ("relu",), ("pool", "max", 2, 2, 0)], (4, 1, 16, 16), 1)


def test_mobilenet_like_stack():
    """Depthwise-separable pairs (MobileNet's: no bias before BatchNorm, whose gradient would
    be rounding noise); the first (16x16 outputs, batch 2) runs as one step in inference
    (``cpu_conv_pairs.dw_pw_step``), the strided one as two."""
    check_net([("conv", 8, 3, 1, 1, False), ("bn",), ("relu",), ("dw", 8, 3, 1, 1, False), ("bn",),
               ("relu",), ("conv", 16, 1, 1, 0, False), ("bn",), ("relu",),
               ("dw", 16, 3, 2, 1, False), ("bn",), ("relu",), ("conv", 32, 1, 1, 0, False),
               ("bn",)], (2, 3, 16, 16), 2)


@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(nets(), st.integers(0, 2 ** 31))
def test_hypothesis_conv_stacks(net_shape, seed):
    specs, (batch, in_chans, size) = net_shape
    check_net(specs, (batch, in_chans, size, size), seed)
