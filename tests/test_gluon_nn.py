"""gluon.nn normalisation, embedding and activation layers, and Block.summary.

Each layer's output is checked against NumPy doing the same math with the layer's own
initialised parameters; deferred shapes, MXNet's parameter names and ``__repr__`` strings
are checked too.
"""
import math

import numpy as np
import pytest
from scipy.special import erf

import ember as mx
from ember.base import MXNetError
from ember.gluon import nn
from ember.gluon.parameter import DeferredInitializationError

RNG = np.random.default_rng(0)


def _x(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _init(layer, x):
    """Initialise ``layer``, give gamma/beta random values, and run one forward."""
    layer.initialize()
    out = layer(mx.nd.array(x))
    for name in ("gamma", "beta"):
        p = getattr(layer, name, None)
        if p is not None:
            p.set_data(mx.nd.array(_x(*p.shape)))
    return out


def _np(p):
    return p.data().asnumpy().astype(np.float64)


def _close(a, b, tol=1e-5):
    a = a.asnumpy() if hasattr(a, "asnumpy") else a
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


# ---- BatchNorm ---------------------------------------------------------------------------
def test_batchnorm_training_updates_running_stats_and_inference_uses_them():
    x = _x(4, 3, 2, 2) * 2 + 1
    bn = nn.BatchNorm(momentum=0.8)
    bn.initialize()
    with pytest.raises(DeferredInitializationError):
        bn.gamma.data()
    bn(mx.nd.array(x))   # inference forward: learns the shapes, stats untouched
    assert [p.shape for p in bn.collect_params().values()] == [(3,)] * 4
    np.testing.assert_array_equal(bn.running_mean.data().asnumpy(), np.zeros(3))
    g, b = _x(3), _x(3)
    bn.gamma.set_data(mx.nd.array(g))
    bn.beta.set_data(mx.nd.array(b))
    with mx.autograd.record():
        y = bn(mx.nd.array(x))
    mean = x.astype(np.float64).mean(axis=(0, 2, 3))
    var = x.astype(np.float64).var(axis=(0, 2, 3))
    bs = (1, 3, 1, 1)
    want = (x - mean.reshape(bs)) / np.sqrt(var.reshape(bs) + 1e-5) * g.reshape(bs) \
        + b.reshape(bs)
    _close(y, want)
    rm, rv = 0.2 * mean, 0.8 * 1.0 + 0.2 * var
    _close(bn.running_mean.data(), rm)
    _close(bn.running_var.data(), rv)
    y2 = bn(mx.nd.array(x))   # inference: running statistics, no update
    _close(y2, (x - rm.reshape(bs)) / np.sqrt(rv.reshape(bs) + 1e-5) * g.reshape(bs)
           + b.reshape(bs))
    _close(bn.running_mean.data(), rm)


def test_batchnorm_params_flags_and_repr():
    bn = nn.BatchNorm(scale=False, center=False, in_channels=4, epsilon=1e-3,
                      gamma_initializer=mx.init.Constant(3.0))
    assert bn.gamma.grad_req == "null" and bn.beta.grad_req == "null"
    assert bn.running_mean.grad_req == "null" and bn.running_var.grad_req == "null"
    assert bn.gamma.shape == (4,) and bn.in_channels == 4
    assert repr(bn) == ("BatchNorm(axis=1, eps=0.001, momentum=0.9, fix_gamma=True, "
                        "use_global_stats=False, in_channels=4)")
    assert repr(nn.BatchNorm()).endswith("in_channels=None)")
    bn.initialize()
    _close(bn.gamma.data(), [3.0] * 4)
    x = _x(5, 4)   # scale=False: fix_gamma, so gamma is treated as 1
    _close(bn(mx.nd.array(x)), x / np.sqrt(1 + 1e-3))


def test_batchnorm_axis_and_global_stats_and_cast():
    x = _x(2, 3, 5)
    bn = nn.BatchNorm(axis=-1, use_global_stats=True)
    bn.initialize()
    with mx.autograd.record():
        y = bn(mx.nd.array(x))
    assert bn.gamma.shape == (5,)
    _close(y, x / np.sqrt(1 + 1e-5))              # global stats: moving mean 0, var 1
    _close(bn.running_mean.data(), np.zeros(5))
    bn.cast("float16")
    assert bn.gamma.dtype == np.float32


def test_batchnorm_relu():
    x = _x(6, 2)
    layer = nn.BatchNormReLU()
    layer.initialize()
    with mx.autograd.record():
        y = layer(mx.nd.array(x))
    z = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
    _close(y, np.maximum(z, 0))


def test_batchnorm_gradients_flow_to_gamma_beta_only():
    x = mx.nd.array(_x(4, 3))
    bn = nn.BatchNorm()
    bn.initialize()
    with mx.autograd.record():
        loss = (bn(x) * mx.nd.array(_x(4, 3))).sum()
    loss.backward()
    assert np.abs(bn.gamma.grad().asnumpy()).sum() > 0
    with pytest.raises(RuntimeError):
        bn.running_mean.grad()


# ---- instance / layer / group norm -------------------------------------------------------
def _normalise(x, axes, eps):
    x = x.astype(np.float64)
    m, v = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    return (x - m) / np.sqrt(v + eps)


def test_instancenorm_axis1_and_other_axis():
    x = _x(2, 3, 4)
    layer = nn.InstanceNorm(scale=True)
    _init(layer, x)
    g, b = _np(layer.gamma), _np(layer.beta)
    want = _normalise(x, (2,), 1e-5) * g.reshape(1, 3, 1) + b.reshape(1, 3, 1)
    _close(layer(mx.nd.array(x)), want)
    assert repr(layer) == ("InstanceNorm(eps=1e-05, axis=1, center=True, scale=True, "
                           "in_channels=3)")
    assert nn.InstanceNorm().gamma.grad_req == "null"   # MXNet's default scale=False
    layer2 = nn.InstanceNorm(axis=2)
    _init(layer2, x)
    assert layer2.gamma.shape == (4,)
    g2, b2 = _np(layer2.gamma), _np(layer2.beta)
    want2 = _normalise(x, (1,), 1e-5) * g2.reshape(1, 1, 4) + b2.reshape(1, 1, 4)
    _close(layer2(mx.nd.array(x)), want2)


@pytest.mark.parametrize("axis", [-1, 1])
def test_layernorm(axis):
    x = _x(2, 3, 4)
    layer = nn.LayerNorm(axis=axis)
    assert layer.gamma.shape == (0,)
    _init(layer, x)
    c = x.shape[axis]
    assert layer.gamma.shape == (c,) and layer.beta.shape == (c,)
    bs = [1, 1, 1]
    bs[axis] = c
    want = _normalise(x, (axis,), 1e-5) * _np(layer.gamma).reshape(bs) \
        + _np(layer.beta).reshape(bs)
    _close(layer(mx.nd.array(x)), want)
    assert repr(layer) == (f"LayerNorm(eps=1e-05, axis={axis}, center=True, scale=True, "
                           f"in_channels={c})")


def test_groupnorm():
    x = _x(2, 4, 3)
    layer = nn.GroupNorm(num_groups=2)
    assert layer.gamma.shape == (2,)
    _init(layer, x)
    g, b = _np(layer.gamma), _np(layer.beta)
    xg = _normalise(x.reshape(2, 2, 6), (2,), 1e-5)
    want = (xg * g.reshape(1, 2, 1) + b.reshape(1, 2, 1)).reshape(x.shape)
    _close(layer(mx.nd.array(x)), want)
    assert repr(layer) == "GroupNorm(eps=1e-05, num_groups=2, center=True, scale=True)"


# ---- Embedding ---------------------------------------------------------------------------
def test_embedding_lookup_grad_and_repr():
    emb = nn.Embedding(10, 4)
    emb.initialize()
    assert emb.weight.shape == (10, 4)
    idx = np.array([[1, 3], [9, 1]], dtype=np.float32)
    x = mx.nd.array(idx)
    with mx.autograd.record():
        y = emb(x)
    w = emb.weight.data().asnumpy()
    _close(y, w[idx.astype(int)])
    y.backward()
    counts = np.bincount(idx.astype(int).ravel(), minlength=10)[:, None] * np.ones(4)
    _close(emb.weight.grad(), counts)
    assert repr(emb) == "Embedding(10 -> 4, float32)"
    assert emb.weight.name.startswith("embedding") and emb.weight.name.endswith("_weight")


# ---- activations -------------------------------------------------------------------------
def test_fixed_activations():
    x = _x(3, 4)
    xd = x.astype(np.float64)
    cases = [
        (nn.LeakyReLU(0.1), np.where(xd < 0, 0.1 * xd, xd)),
        (nn.ELU(), np.where(xd < 0, np.expm1(xd), xd)),
        (nn.ELU(alpha=0.5), np.where(xd < 0, 0.5 * np.expm1(xd), xd)),
        (nn.SELU(), 1.0507009873554805 * np.where(xd < 0, 1.6732632423543772 * np.expm1(xd),
                                                  xd)),
        (nn.GELU(), 0.5 * xd * (1 + erf(xd / math.sqrt(2)))),
        (nn.Swish(), xd / (1 + np.exp(-xd))),
        (nn.Swish(beta=2.0), xd / (1 + np.exp(-2 * xd))),
    ]
    for layer, want in cases:
        layer.initialize()
        _close(layer(mx.nd.array(x)), want)
    assert repr(nn.LeakyReLU(0.1)) == "LeakyReLU(0.1)"
    with pytest.raises(MXNetError):
        nn.LeakyReLU(-1)


def test_prelu_scalar_and_per_channel():
    x = _x(2, 3, 4)
    layer = nn.PReLU()
    layer.initialize()
    assert layer.alpha.shape == (1,)
    _close(layer.alpha.data(), [0.25])
    _close(layer(mx.nd.array(x)), np.where(x < 0, 0.25 * x, x))
    layer3 = nn.PReLU(alpha_initializer=mx.init.Uniform(), in_channels=3)
    layer3.initialize()
    a = _np(layer3.alpha).reshape(1, 3, 1)
    xn = mx.nd.array(x)
    with mx.autograd.record():
        y = layer3(xn)
    _close(y, np.where(x < 0, a * x, x))
    y.backward()
    _close(layer3.alpha.grad(), np.where(x < 0, x, 0).sum(axis=(0, 2)), tol=1e-4)
    assert layer3.alpha.name.startswith("prelu") and layer3.alpha.name.endswith("_alpha")


# ---- names -------------------------------------------------------------------------------
def test_names_follow_mxnet():
    with mx.name.NameManager():
        net = nn.HybridSequential()
        with net.name_scope():
            net.add(nn.BatchNorm(), nn.LayerNorm(), nn.BatchNorm(), nn.Embedding(3, 2),
                    nn.LeakyReLU(0.1), nn.PReLU(), nn.InstanceNorm(), nn.GroupNorm())
        solo = nn.BatchNorm()
    names = list(net.collect_params().keys())
    assert names[:6] == ["hybridsequential0_batchnorm0_gamma",
                         "hybridsequential0_batchnorm0_beta",
                         "hybridsequential0_batchnorm0_running_mean",
                         "hybridsequential0_batchnorm0_running_var",
                         "hybridsequential0_layernorm0_gamma",
                         "hybridsequential0_layernorm0_beta"]
    assert "hybridsequential0_batchnorm1_gamma" in names
    assert "hybridsequential0_embedding0_weight" in names
    assert "hybridsequential0_prelu0_alpha" in names
    assert "hybridsequential0_instancenorm0_beta" in names
    assert "hybridsequential0_groupnorm0_gamma" in names
    assert net[4].name == "hybridsequential0_leakyrelu0"
    assert solo.prefix == "batchnorm0_"


# ---- summary -----------------------------------------------------------------------------
def _summary_net():
    with mx.name.NameManager():
        net = nn.HybridSequential()
        with net.name_scope():
            net.add(nn.Dense(4, activation="relu"), nn.BatchNorm(), nn.Dense(2))
    net.initialize()
    return net


def test_summary_table_and_totals(capsys):
    net = _summary_net()
    net.summary(mx.nd.ones((3, 5)))
    lines = capsys.readouterr().out.splitlines()
    fmt = "{:>20}  {:>42} {:>15}"
    assert lines[0] == "-" * 80
    assert lines[1] == fmt.format("Layer (type)", "Output Shape", "Param #")
    assert lines[2] == "=" * 80
    assert lines[3:8] == [fmt.format("Input", "(3, 5)", 0),
                          fmt.format("Activation-1", "(3, 4)", 0),
                          fmt.format("Dense-2", "(3, 4)", 24),
                          fmt.format("BatchNorm-3", "(3, 4)", 16),
                          fmt.format("Dense-4", "(3, 2)", 10)]
    assert lines[8:] == ["=" * 80,
                         "Parameters in forward computation graph, duplicate included",
                         "   Total params: 50", "   Trainable params: 42",
                         "   Non-trainable params: 8",
                         "Shared params in forward computation graph: 0",
                         "Unique parameters in model: 50", "-" * 80]
    assert all(not b._forward_hooks for b in _blocks(net))


def _blocks(net):
    out = []
    net.apply(out.append)
    return out


def test_summary_shared_params_and_hook_cleanup_on_error(capsys):
    with mx.name.NameManager():
        net = nn.HybridSequential()
        with net.name_scope():
            d = nn.Dense(3, in_units=3)
            net.add(d, nn.Dense(3, in_units=3, params=d.params))
    net.initialize()
    net.summary(mx.nd.ones((2, 3)))
    out = capsys.readouterr().out
    assert "Shared params in forward computation graph: 12" in out
    assert "Unique parameters in model: 12" in out
    with pytest.raises(MXNetError):
        net.summary(mx.nd.ones((2, 7)))   # wrong width: the forward fails
    assert all(not b._forward_hooks for b in _blocks(net))
    net.hybridize()
    with pytest.raises(MXNetError, match="hybridized"):
        net.summary(mx.nd.ones((2, 3)))
    assert all(not b._forward_hooks for b in _blocks(net))


@pytest.mark.parametrize("hybridize", [False, True])
def test_parameters_of_unknown_rank_are_inferred(hybridize):
    """MXNet allows a parameter shape of None (GluonCV's pruned ResNets reset BatchNorm's
    that way): the first forward infers the whole shape from the op's rule."""
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, 3), nn.BatchNorm(), nn.Dense(5))
    for p in list(net[1].collect_params().values()) + [net[2].weight]:
        p._shape = None
    net.initialize()
    if hybridize:
        net.hybridize()
    out = net(mx.nd.ones((2, 3, 6, 6)))
    assert out.shape == (2, 5)
    assert net[1].gamma.shape == (4,) and net[1].running_var.shape == (4,)
    assert net[0].weight.shape == (4, 3, 3, 3) and net[2].weight.shape == (5, 64)


@pytest.mark.parametrize("hybrid", [False, True])
def test_embedding_sparse_grad_is_row_sparse(hybrid):
    # MXNet: Embedding(sparse_grad=True) has a row_sparse weight gradient whose data/indices
    # are the looked-up rows; ember stores it densely behind the same view
    emb = nn.Embedding(6, 2, sparse_grad=True)
    emb.initialize()
    if hybrid:
        emb.hybridize()
    x = mx.nd.array([4, 1, 4, 4])
    for _ in range(2):  # the second backward reuses (and keeps) the buffer's type
        with mx.autograd.record():
            loss = (emb(x) * mx.nd.array([[1, 2]])).sum()
        loss.backward()
    g = emb.weight.grad()
    assert g.stype == "row_sparse" and isinstance(g, mx.nd.sparse.RowSparseNDArray)
    want = np.zeros((6, 2), np.float32)
    want[1], want[4] = [1, 2], [3, 6]
    np.testing.assert_array_equal(g.asnumpy(), want)
    np.testing.assert_array_equal(g.indices.asnumpy(), [1, 4])
    assert g.indices.dtype == np.int64
    np.testing.assert_array_equal(g.data.asnumpy(), [[1, 2], [3, 6]])
    assert g.tostype("default").stype == "default"
    dense = nn.Embedding(6, 2)
    dense.initialize()
    assert dense.weight.grad().stype == "default"
