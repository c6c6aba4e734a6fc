"""The direct convolution kernels for few filters (backends/cpu_direct.py).

The generated kernels against a float64 NumPy convolution for several filter blocks (the
block and the one-filter tail), then whole graphs (forward, data and weight gradient, bias,
fused epilogues, 1-D) through the CPU backend against the reference backend, the direct
path asserted by the backend's report; NaN and Inf as in eager, an infinite filter in a data
gradient through the im2col step.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ember.backends import cpu, cpu_direct, cpu_steps, cpu_tiered, reference
from ember.backends.cpu_conv import Geo
from ember.backends.cpu_steps import split
from ember.ir.graph import GraphBuilder
from ember.ir.types import TensorType
from ember.passes import run_pipeline
from ember.runtime import cache, precompile

cache.install()
F32 = "float32"


def _rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(F32)


def _np_conv(x, w, s, ph, pw):
    """float64 convolution of stride s, padded by (ph, pw)."""
    kh, kw = w.shape[2:]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh, ow = (xp.shape[2] - kh) // s + 1, (xp.shape[3] - kw) // s + 1
    y = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for i in range(kh):
        for j in range(kw):
            win = xp[:, :, i:i + s * (oh - 1) + 1:s, j:j + s * (ow - 1) + 1:s]
            y += np.einsum("fc,nchw->nfhw", w[:, :, i, j], win)
    return y


def _np_wgrad(g, x, kh, kw, s, ph, pw):
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh, ow = g.shape[2:]
    dw = np.zeros((g.shape[1], x.shape[1], kh, kw))
    for i in range(kh):
        for j in range(kw):
            win = xp[:, :, i:i + s * (oh - 1) + 1:s, j:j + s * (ow - 1) + 1:s]
            dw[:, :, i, j] = np.einsum("nfhw,nchw->fc", g, win)
    return dw


@pytest.mark.parametrize("fb", [cpu_direct.FB, cpu_direct.FB_WIDE])
@pytest.mark.parametrize("n,c,f,hw,k,s,p", [(3, 1, 5, (9, 7), (3, 3), 1, (1, 1)),
                                            (2, 4, 7, (6, 8), (5, 2), 1, (2, 0)),
                                            (1, 2, 2, (5, 5), (1, 4), 1, (0, 3)),
                                            (2, 3, 5, (11, 10), (7, 7), 2, (3, 3)),
                                            (3, 2, 3, (8, 9), (3, 2), 2, (1, 0)),
                                            (2, 2, 4, (9, 8), (4, 3), 3, (2, 1))])
def test_kernels_match_numpy(fb, n, c, f, hw, k, s, p):
    """The backend's two filter blocks (and the one-filter tail where F is not a multiple),
    strides 1, 2 and 3, odd and even sizes (an odd padded height leaves the last row phase
    one row short)."""
    x = _rand((n, c, *hw))
    w = _rand((f, c, *k), 1)
    want = _np_conv(x, w, s, *p)
    for rows in (False, True) if s == 1 else (False,):
        # (with finite filters, skipping stride 1's padding rows changes nothing)
        for g in (d for d in (1, 2, 3, 5) if f % d == 0):   # filter groups per sample
            y = np.full(want.shape, np.nan, np.float32)
            yg = y.reshape(n * g, f // g, *want.shape[2:])
            split(cpu_direct.forward_source(fb, k[1]))(x, w, s, *p, rows, yg)
            np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    g = _rand(want.shape, 2)
    acc = np.full((5, f, c, *k), np.nan, np.float32)   # more parts than samples: some empty
    split(cpu_direct.wgrad_source(fb, k[1]))(g, x, s, *p, acc)
    np.testing.assert_allclose(acc.sum(0), _np_wgrad(g, x, *k, s, *p), rtol=1e-5, atol=1e-5)


def _graph(n, c, f, hw, k, p, bias, epi, s=1, grad=True):
    b = GraphBuilder("conv")
    x = b.input(TensorType((n, c, *hw), F32), "x")
    ins = [x, b.param(TensorType((f, c, *k), F32), "w")]
    if bias:
        ins.append(b.param(TensorType((f,), F32), "b"))
    (y,) = b.emit("convolution", ins, kernel=k, stride=(s,) * len(k), pad=p,
                  dilate=(1,) * len(k), num_filter=f, num_group=1, no_bias=not bias)
    if epi == "relu":
        (y,) = b.emit("relu", [y])
    elif epi == "residual":
        (y,) = b.emit("add", [y, b.input(y.type, "r")])
        (y,) = b.emit("tanh", [y])
    if not grad:
        return run_pipeline(b.build([y]))
    return run_pipeline(b.build([y]), grad=True, head_grads="ones")


def _compare(joint, inputs, params, rtol=1e-4, atol=1e-4):
    fn = cpu.compile(joint)
    got = fn([a.copy() for a in inputs], [q.copy() for q in params])
    want = reference.run_graph(joint, [a.copy() for a in inputs], [q.copy() for q in params])
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return fn.report


def _data(joint, seed=0):
    return ([_rand(v.type.shape, seed + j) for j, v in enumerate(joint.inputs)],
            [_rand(v.type.shape, seed + 10 + j) for j, v in enumerate(joint.params)])


def test_filter_groups_give_small_batches_work_for_every_thread():
    assert cpu_direct.groups(16, 64, 4, 2) == 1
    assert cpu_direct.groups(2, 64, 4, 2) == 1     # one sample per thread
    assert cpu_direct.groups(1, 64, 4, 2) == 2 and cpu_direct.groups(1, 64, 4, 4) == 4
    assert cpu_direct.groups(3, 64, 4, 2) == 2     # 6 units: 3 per thread, not 2 and 1
    assert cpu_direct.groups(5, 64, 4, 2) == 1     # two units per thread or more
    assert cpu_direct.groups(1, 6, 2, 2) == 2      # 3 filters each, at least FB = 2
    assert cpu_direct.groups(1, 7, 2, 2) == 1      # no power of two divides 7
    assert cpu_direct.groups(1, 8, 4, 8) == 2      # 4 filters each at least


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 6), st.integers(1, 5), st.sampled_from([1, 7, 32, 33]),
       st.integers(5, 9), st.integers(5, 9), st.integers(1, 5), st.integers(2, 5),
       st.integers(0, 3), st.integers(0, 3), st.integers(1, 2), st.booleans(),
       st.sampled_from(["none", "relu", "residual"]))
def test_graphs_match_reference(n, c, f, h, w, kh, kw, ph, pw, s, bias, epi):
    """Both filter blocks (``FB`` and ``FB_WIDE`` from ``FB_WIDE_MIN_F`` filters), strides 1
    and 2 (whose data gradient stays im2col's)."""
    kh, kw = min(kh, h + 2 * ph), min(kw, w + 2 * pw)
    joint = _graph(n, c, f, (h, w), (kh, kw), (ph, pw), bias, epi, s)
    rep = _compare(joint, *_data(joint))
    geo = Geo(n, c, h, w, f, (h + 2 * ph - kh) // s + 1, (w + 2 * pw - kw) // s + 1,
              (kh, kw), (s, s), (1, 1), (ph, pw), 1)
    assert rep.get("direct", 0) == sum(cpu_direct.applies(geo, kind)
                                       for kind in ("forward", "dgrad", "wgrad")), rep
    if kw >= cpu_direct.MIN_KW:
        assert cpu_direct.applies(geo, "forward")


def test_one_dimensional_and_declined_shapes():
    joint = _graph(5, 3, 4, (11,), (3,), (1,), True, "relu")   # NCW as height 1
    assert _compare(joint, *_data(joint)).get("direct") == 3
    joint = _graph(1, 3, 4, (8, 8), (3, 3), (1, 1), True, "relu")  # too few samples
    assert "direct" not in _compare(joint, *_data(joint))
    joint = _graph(2, 3, 4, (8, 8), (3, 3), (1, 1), True, "relu")  # not for the weight grad
    assert _compare(joint, *_data(joint)).get("direct") == 2
    assert not cpu_direct.applies(Geo(8, 3, 8, 8, 4, 8, 8, (3, 3), (1, 1), (1, 1), (3, 3), 1),
                                  "dgrad")    # pad > k - 1: the gradient would need a crop
    dense = dict(n=16, f=32, k=(3, 3), s=(1, 1), d=(1, 1), p=(1, 1), g=1)   # DenseNet's
    assert cpu_direct.applies(Geo(c=128, h=14, w=14, oh=14, ow=14, **dense), "forward")
    assert not cpu_direct.applies(Geo(c=128, h=7, w=7, oh=7, ow=7, **dense), "forward")
    assert cpu_direct.applies(Geo(c=6, h=7, w=7, oh=7, ow=7, **dense), "forward")


@pytest.mark.parametrize("k,s,p", [(3, 1, 1), (7, 2, 3)])
def test_batch_of_one_runs_the_forward_in_one_filter_group_per_thread(k, s, p):
    """A single sample with enough outputs (``MIN_OUT_B1``): the forward is direct, split
    into filter groups; the gradients keep im2col."""
    h = 24 * s
    joint = _graph(1, 3, 32, (h, h), (k, k), (p, p), True, "relu", s)
    assert _compare(joint, *_data(joint)).get("direct") == 1
    geo = Geo(1, 3, h, h, 32, 24, 24, (k, k), (s, s), (1, 1), (p, p), 1)
    assert geo.f * geo.m >= cpu_direct.MIN_OUT_B1 and cpu_direct.applies(geo, "forward")
    assert not cpu_direct.applies(geo, "dgrad") and not cpu_direct.applies(geo, "wgrad")


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_nan_and_inf_as_the_reference():
    joint = _graph(4, 3, 4, (7, 6), (3, 3), (1, 1), True, "relu")
    inputs, params = _data(joint)
    inputs[0][0, 0, 1, 2] = np.nan
    inputs[0][1, -1, 0, 0] = np.inf
    inputs[0][2, 1, 3, 3] = -np.inf
    assert _compare(joint, inputs, params).get("direct") == 3
    # an infinite filter: 0 * inf is NaN where the forward's padding meets it, but the data
    # gradient's extra padding would make NaN where the reference has none
    inputs, params = _data(joint)
    params[0][1, 2, 2, 2] = np.inf
    _compare(joint, inputs, params)


def test_the_im2col_step_runs_until_the_kernel_is_compiled(tmp_path, monkeypatch):
    """With background compiles and a cold kernel cache, the first calls run the im2col
    step, the second queues the direct kernel for a worker process, later ones use it."""
    monkeypatch.setattr(cpu_tiered, "_BACKGROUND", True)
    monkeypatch.setattr(cpu_steps, "_KERNELS", {})   # this process's dispatchers too
    cache.install(cache.KernelCache(tmp_path))   # cold: nothing compiled
    try:
        graph = _graph(4, 3, 5, (9, 8), (5, 5), (2, 2), True, "relu", s=2, grad=False)
        fn = cpu.compile(graph)
        assert fn.report.get("direct") == 1
        step = next(v for v in fn.run_fn.__globals__.values()
                    if getattr(v, "deferred", None) is not None)
        inputs, params = _data(graph)
        want = reference.run_graph(graph, inputs, params)[0]
        compiled = precompile.STATS["compiled"]
        states = []
        for _ in range(3):
            got = fn([a.copy() for a in inputs], [q.copy() for q in params])[0]
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
            states.append(step.deferred.state)
        assert states[0] == "new" and states[1] in ("compiling", "ready")
        assert step.deferred.wait(120)
        assert precompile.STATS["compiled"] > compiled
        got = fn([a.copy() for a in inputs], [q.copy() for q in params])[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    finally:
        cache.install()
