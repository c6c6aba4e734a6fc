"""Winograd F(2x2, 3x3) and F(4x4, 3x3) convolutions of the CPU backend
(backends/cpu_winograd.py) against the reference backend: forward and data gradient, padding
0-2, sizes that are and are not multiples of the tile, ragged chunks, fused epilogues; calls
with Inf or NaN take the im2col step and agree exactly where the reference is not finite.
float32 tolerances as tests/test_cpu_conv.py (rtol/atol 1e-4): the transforms sum in
another order."""
import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cpu_conv import _compare, _conv_graph, _rand

from ember.backends import cpu, cpu_conv, cpu_tiered, cpu_winograd, reference
from ember.passes import run_pipeline


@contextlib.contextmanager
def _small(tiles=1, chunk=None, m=2):
    """Winograd F(m x m) for small test shapes; ``chunk``: CHUNK_BYTES (ragged chunks)."""
    w = cpu_winograd
    old = w.MIN_TILES, w.MIN_CHANNELS, w.MIN_MAP, w.CHUNK_BYTES, w.TILE, cpu_tiered._BACKGROUND
    w.MIN_TILES, w.MIN_CHANNELS, w.MIN_MAP, w.TILE = tiles, 1, 1, m
    cpu_tiered._BACKGROUND = False    # compiled before the first call: it runs Winograd
    if chunk is not None:
        w.CHUNK_BYTES = chunk
    try:
        yield
    finally:
        (w.MIN_TILES, w.MIN_CHANNELS, w.MIN_MAP, w.CHUNK_BYTES, w.TILE,
         cpu_tiered._BACKGROUND) = old


@st.composite
def convs3x3(draw):
    n = draw(st.integers(1, 4))
    c, f = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    p = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    hw = (draw(st.integers(3, 11)), draw(st.integers(3, 11)))
    return dict(n=n, c=c, f=f, g=1, hw=hw, k=(3, 3), s=(1, 1), p=p, d=(1, 1),
                bias=draw(st.booleans()), epi=draw(st.sampled_from(["none", "relu", "residual"])),
                per_chunk=draw(st.sampled_from([1, 2, 64])))


def _per_sample_bytes(cfg, m):
    h, w = cfg["hw"]
    oh, ow = h + 2 * cfg["p"][0] - 2, w + 2 * cfg["p"][1] - 2
    tiles = max(-(-oh // m) * -(-ow // m), -(-h // m) * -(-w // m))
    return (m + 2) ** 2 * max(cfg["c"], cfg["f"]) * tiles * 4


@pytest.mark.parametrize("m", [2, 4])
@settings(max_examples=20, deadline=None)
@given(cfg=convs3x3())
def test_winograd_forward_and_data_gradient_match_reference(m, cfg):
    graph, _, _ = _conv_graph(cfg)
    joint = run_pipeline(graph, grad=True)      # head gradients are inputs: random
    inputs = [_rand(v.type.shape, j) for j, v in enumerate(joint.inputs)]
    params = [_rand(v.type.shape, 10 + j) for j, v in enumerate(joint.params)]
    with _small(chunk=cfg["per_chunk"] * _per_sample_bytes(cfg, m), m=m):
        rep = _compare(joint, inputs, params)
    # forward, data gradient (its padding 2 - p is not negative) and weight gradient
    assert rep.get("winograd", 0) == 3, rep


@pytest.mark.parametrize("m", [2, 4])
def test_large_channels_and_an_odd_map_as_in_resnet(m):
    cfg = dict(n=3, c=32, f=48, g=1, hw=(7, 7), k=(3, 3), s=(1, 1), p=(1, 1), d=(1, 1),
               bias=False, epi="relu")
    graph, _, _ = _conv_graph(cfg)
    joint = run_pipeline(graph, grad=True)
    inputs = [_rand(v.type.shape, j) for j, v in enumerate(joint.inputs)]
    params = [_rand(v.type.shape, 10 + j) for j, v in enumerate(joint.params)]
    with _small(m=m):   # outputs reach ~20: F(4x4)'s float32 error then reaches 1e-4-6e-4
        rep = _compare(joint, inputs, params, atol=5e-4)   # (F(2x2)'s ~4e-5), over seeds
    assert rep.get("winograd") == 3, rep


def test_defaults_keep_im2col_where_winograd_does_not_pay():
    big = dict(n=2, c=64, f=64, g=1, hw=(24, 24), k=(3, 3), s=(1, 1), p=(1, 1),
               d=(1, 1), bias=False, epi="none")
    cases = [big, dict(big, c=32), dict(big, hw=(7, 7), n=32), dict(big, n=1, hw=(14, 14)),
             dict(big, s=(2, 2))]
    reps = [cpu.compile(_conv_graph(cfg)[0]).report for cfg in cases]
    assert [r.get("winograd", 0) for r in reps] == [1, 0, 0, 0, 0], reps
    geo = cpu_conv.geometry(_conv_graph(big)[0].nodes[0])
    assert cpu_winograd.tile(geo, True) == 2
    assert cpu_winograd.tile(cpu_conv.geometry(_conv_graph(dict(big, hw=(56, 56)))[0]
                                               .nodes[0]), True) == 4


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("where", ["image", "weight"])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_values_give_the_reference_result(where, bad, m):
    # the transforms would spread an Inf to outputs whose windows do not hold it (inf - inf)
    cfg = dict(n=2, c=4, f=3, g=1, hw=(8, 8), k=(3, 3), s=(1, 1), p=(1, 1), d=(1, 1),
               bias=True, epi="none")
    graph, _, _ = _conv_graph(cfg)
    x = _rand((2, 4, 8, 8), 1)
    w = _rand((3, 4, 3, 3), 2)
    if where == "image":
        x[1, 2, 3, 5] = bad
    else:
        w[1, 0, 2, 2] = bad
    params = [w, _rand((3,), 3)]
    with _small(m=m):
        fn = cpu.compile(graph)
        got = fn([x.copy()], [p.copy() for p in params])[0]
    want = reference.run_graph(graph, [x.copy()], [p.copy() for p in params])[0]
    assert fn.report.get("winograd") == 1, fn.report
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = np.isfinite(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_a_non_finite_output_gradient_gives_the_reference_weight_gradient(bad, m):
    cfg = dict(n=2, c=3, f=4, g=1, hw=(9, 9), k=(3, 3), s=(1, 1), p=(1, 1), d=(1, 1),
               bias=False, epi="none")
    graph, _, _ = _conv_graph(cfg)
    joint = run_pipeline(graph, grad=True)
    inputs = [_rand(v.type.shape, j) for j, v in enumerate(joint.inputs)]
    inputs[-1][1, 2, 4, 0] = bad       # the head gradient
    params = [_rand(v.type.shape, 10 + j) for j, v in enumerate(joint.params)]
    with _small(m=m):
        fn = cpu.compile(joint)
        got = fn([a.copy() for a in inputs], [p.copy() for p in params])
    want = reference.run_graph(joint, [a.copy() for a in inputs], [p.copy() for p in params])
    assert fn.report.get("winograd") == 3, fn.report
    for g, w in zip(got, want):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_array_equal(np.isinf(g), np.isinf(w))
        ok = np.isfinite(w)
        np.testing.assert_allclose(g[ok], w[ok], rtol=1e-4, atol=1e-4)


def _compiled_with_filter_cache(graph, m):
    """The program of a one-convolution ``graph`` run by Winograd F(m x m), and its step's
    ``FilterCache``."""
    with _small(m=m):
        fn = cpu.compile(graph)
    assert fn.report.get("winograd") == 1, fn.report
    (step,) = [s for s in fn.run_fn.__globals__.values()
               if getattr(s, "__name__", "") == "step" and hasattr(s, "deferred")]
    return fn, next(c.cell_contents for c in step.__closure__
                    if isinstance(c.cell_contents, cpu_winograd.FilterCache))


@pytest.mark.parametrize("m", [2, 4])
def test_transformed_filters_are_reused_only_while_the_weights_stay_bit_for_bit(m):
    # inference calls a layer with the same weights: the filter transform is kept from the
    # second call on; a change in place (even only a zero's sign) is seen at the next call
    cfg = dict(n=2, c=5, f=4, g=1, hw=(9, 9), k=(3, 3), s=(1, 1), p=(1, 1), d=(1, 1),
               bias=False, epi="none")
    graph, _, _ = _conv_graph(cfg)
    x = _rand((2, 5, 9, 9), 1)
    w = _rand((4, 5, 3, 3), 2)
    fn, cache = _compiled_with_filter_cache(graph, m)

    def check():
        got = fn([x], [w])[0]
        want = reference.run_graph(graph, [x], [w])[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        return got

    first = check()
    assert not cache.valid                  # one call: weights copied, nothing kept
    np.testing.assert_array_equal(check(), first)
    assert cache.valid                      # the same weights again: kept...
    kept = cache.u.copy()
    np.testing.assert_array_equal(check(), first)
    np.testing.assert_array_equal(cache.u, kept)   # ...and reused
    w[1, 2, 0, 1] += 1.0                    # changed in place, the same array
    changed = check()
    assert not cache.valid and not np.array_equal(changed, first)
    check()
    assert cache.valid
    w[0, 0, 0, 0] = 0.0
    check()
    check()
    w[0, 0, 0, 0] = -0.0                    # equal as numbers, other bits: not reused
    check()
    assert not cache.valid


def test_32_filter_layers_run_f4_forward_on_maps_of_28_and_more(monkeypatch):
    """DenseNet's 128 -> 32 3x3 layers (``MIN_CHANNELS_F4``): F(4x4) forward from 28x28
    maps; not their gradients, not at 14x14 (F(2x2) lost there), not under 32 channels."""
    base = dict(n=2, c=128, f=32, g=1, hw=(28, 28), k=(3, 3), s=(1, 1), p=(1, 1), d=(1, 1),
                bias=True, epi="relu")
    f32 = np.dtype(np.float32)

    def geo(**change):
        return cpu_conv.geometry(_conv_graph(dict(base, **change))[0].nodes[0])
    assert cpu_winograd.applies(geo(), True, f32) and cpu_winograd.tile(geo(), True) == 4
    assert not cpu_winograd.applies(geo(), True)                  # (the weight gradient)
    assert not cpu_winograd.applies(geo(), False, f32)            # (the data gradient)
    assert not cpu_winograd.applies(geo(hw=(14, 14)), True, f32)
    assert not cpu_winograd.applies(geo(f=16), True, f32)
    monkeypatch.setattr(cpu_tiered, "_BACKGROUND", False)
    graph, _, _ = _conv_graph(base)
    x, w, b = _rand((2, 128, 28, 28), 1), _rand((32, 128, 3, 3), 2) * 0.1, _rand((32,), 3)
    fn = cpu.compile(graph)
    assert fn.report.get("winograd") == 1, fn.report
    want = reference.run_graph(graph, [x], [w, b])[0]
    for _ in range(3):   # (new weights, then kept and packed for the tiles)
        np.testing.assert_allclose(fn([x], [w, b])[0], want, rtol=1e-4, atol=1e-4)
