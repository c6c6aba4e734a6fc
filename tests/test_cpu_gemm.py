"""ember's own GEMM tiles (backends/cpu_gemm.py, cpu_gemm_ir.py): Winograd's per-point
products ``out[k] = U[k] @ V[k]`` from U packed along the sum, against NumPy's matmul on
hypothesis-generated shapes (every tile width: 14, 7, 4, 2, 1 and their sums), and with NaN
and infinities, which reach exactly the outputs NumPy's products give them; and the
Winograd step that uses them once a layer's filters are kept (inference), against the
reference backend, while the weights stay, change in place and come back."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cpu_conv import _conv_graph, _rand
from test_cpu_winograd import _compiled_with_filter_cache, _small

from ember.backends import (
    cpu,
    cpu_conv,
    cpu_conv_steps,
    cpu_gemm,
    cpu_tiered,
    cpu_winograd,
    reference,
)
from ember.passes import run_pipeline


@pytest.fixture(autouse=True)
def _compiled_now():
    """The tiles compiled on first use, not in the background (``cpu_tiered``)."""
    old = cpu_gemm.TIER.background
    cpu_gemm.TIER.background = False
    yield
    cpu_gemm.TIER.background = old


def _products(kk, f, c, t, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((kk, f, c)).astype(np.float32),
            rng.standard_normal((kk, c, t)).astype(np.float32))


@settings(max_examples=40, deadline=None)
@given(kk=st.integers(1, 3), blocks=st.integers(1, 3), c=st.integers(1, 160),
       t=st.integers(1, 60), seed=st.integers(0, 2 ** 16))
def test_tiles_equal_numpy_matmul(kk, blocks, c, t, seed):
    u, v = _products(kk, 32 * blocks, c, t, seed)
    out = np.full((kk, 32 * blocks, t), np.nan, np.float32)
    assert cpu_gemm.TIER.ready()
    cpu_gemm.matmuls(cpu_gemm.pack(u), v, out)
    want = np.matmul(u.astype(np.float64), v.astype(np.float64))
    scale = np.matmul(np.abs(u).astype(np.float64), np.abs(v).astype(np.float64))
    assert np.all(np.abs(out - want) <= 1e-6 * scale + 1e-30)   # every output written


def test_pack_lays_each_32_filter_block_along_the_sum():
    u = np.arange(2 * 64 * 3, dtype=np.float32).reshape(2, 64, 3)
    p = cpu_gemm.pack(u)
    assert p.shape == (4, 3, 32) and p.flags.c_contiguous
    for k in range(2):
        for fb in range(2):
            np.testing.assert_array_equal(p[k * 2 + fb], u[k, 32 * fb:32 * fb + 32].T)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_reach_the_outputs_numpy_gives_them(bad):
    u, v = _products(2, 64, 40, 23, 7)
    u[1, 5, 3] = bad
    v[0, 7, 11] = bad
    v[1, 3, 4] = -bad
    out = np.empty((2, 64, 23), np.float32)
    cpu_gemm.matmuls(cpu_gemm.pack(u), v, out)
    want = np.matmul(u, v)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(out), np.isposinf(want))
    np.testing.assert_array_equal(np.isneginf(out), np.isneginf(want))
    ok = np.isfinite(want)
    np.testing.assert_allclose(out[ok], want[ok], rtol=1e-4, atol=1e-4)


def test_applies_to_float32_blocks_of_32_filters_with_long_sums():
    assert cpu_gemm.applies(64, 128, np.dtype(np.float32))
    assert not cpu_gemm.applies(48, 128, np.dtype(np.float32))      # F not a multiple of 32
    assert not cpu_gemm.applies(64, 32, np.dtype(np.float32))       # C under MIN_C
    assert not cpu_gemm.applies(64, 128, np.dtype(np.float64))


def test_batch_one_14x14_layers_run_winograd_only_where_the_tiles_apply():
    base = dict(n=1, c=128, f=128, g=1, hw=(14, 14), k=(3, 3), s=(1, 1), p=(1, 1),
                d=(1, 1), bias=False, epi="none")
    geo = cpu_conv.geometry(_conv_graph(base)[0].nodes[0])
    assert cpu_winograd.applies(geo, True, np.dtype(np.float32))
    assert not cpu_winograd.applies(geo, True)                      # (the weight gradient)
    assert not cpu_winograd.applies(geo, True, np.dtype(np.float64))
    assert not cpu_winograd.applies(geo, False, np.dtype(np.float32))
    assert cpu.compile(_conv_graph(base)[0]).report.get("winograd") == 1
    for other in (dict(base, hw=(7, 7)), dict(base, f=64)):   # (7x7 maps; 64 filters)
        geo = cpu_conv.geometry(_conv_graph(other)[0].nodes[0])
        assert not cpu_winograd.applies(geo, True, np.dtype(np.float32))


def test_7x7_maps_run_winograd_only_while_the_filters_are_kept(monkeypatch):
    """ResNet's 512-channel 7x7 layers at batch 16 (here 128 channels at batch 8: 128
    tiles): F(2x2) on the tiles once the filters are kept (inference); weights that change
    (training, where the transform made and packed at each call lost) take the im2col step,
    as does the first call of new weights."""
    cfg = dict(n=8, c=128, f=128, g=1, hw=(7, 7), k=(3, 3), s=(1, 1), p=(1, 1), d=(1, 1),
               bias=False, epi="relu")
    f32 = np.dtype(np.float32)
    geo = cpu_conv.geometry(_conv_graph(cfg)[0].nodes[0])
    assert cpu_winograd.applies(geo, True, f32) and cpu_winograd.kept_only(geo, True)
    assert not cpu_winograd.applies(geo, True)                  # (the weight gradient)
    assert not cpu_winograd.applies(geo, False, f32)            # (the data gradient)
    for other in (dict(cfg, n=4), dict(cfg, f=64), dict(cfg, hw=(6, 6))):
        geo = cpu_conv.geometry(_conv_graph(other)[0].nodes[0])
        assert not cpu_winograd.applies(geo, True, f32)
    monkeypatch.setattr(cpu_tiered, "_BACKGROUND", False)
    graph, _, _ = _conv_graph(cfg)
    fn = cpu.compile(graph)
    assert fn.report.get("winograd") == 1, fn.report
    calls = []
    real = cpu_gemm.matmuls
    monkeypatch.setattr(cpu_gemm, "matmuls",
                        lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    x = _rand((8, 128, 7, 7), 1)
    w = _rand((128, 128, 3, 3), 2) * 0.1

    def check():
        calls.clear()
        got = fn([x], [w])[0]
        want = reference.run_graph(graph, [x], [w])[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        return bool(calls)

    assert [check(), check(), check()] == [False, True, True]
    w[7, 9, 1, 1] += 0.25                        # changed in place: im2col, then kept again
    assert [check(), check()] == [False, True]


@pytest.mark.parametrize("m", [2, 4])
def test_kept_filters_run_as_tiles_and_follow_the_weights(m):
    cfg = dict(n=1, c=128, f=32, g=1, hw=(10, 10), k=(3, 3), s=(1, 1), p=(1, 1),
               d=(1, 1), bias=True, epi="relu")
    graph, _, _ = _conv_graph(cfg)
    x = _rand((1, 128, 10, 10), 1)
    w = _rand((32, 128, 3, 3), 2) * 0.1
    b = _rand((32,), 3)
    fn, cache = _compiled_with_filter_cache(graph, m)

    def check(image=x):
        got = fn([image], [w, b])[0]
        want = reference.run_graph(graph, [image], [w, b])[0]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        ok = np.isfinite(want)
        np.testing.assert_allclose(got[ok], want[ok], rtol=1e-4, atol=1e-4)
        return got

    check()
    assert cache.packed is True and not cache.valid        # one call: nothing kept
    check()
    assert isinstance(cache.packed, np.ndarray) and cache.u is None   # kept, packed
    first = check()                                         # the packed filters reused
    w[3, 100, 1, 2] = -w[3, 100, 1, 2] + 0.5                # changed in place
    changed = check()
    assert cache.packed is True and not cache.valid
    assert not np.array_equal(changed, first)
    kept = check()
    assert isinstance(cache.packed, np.ndarray)             # kept anew
    bad = x.copy()
    bad[0, 5, 4, 4] = np.nan                                # the im2col step, then back
    check(bad)
    np.testing.assert_array_equal(check(), kept)


@pytest.mark.parametrize("m", [2, 4])
def test_training_steps_pack_each_calls_filters_for_the_tiles(m, monkeypatch):
    # weights that change every call (training): the forward's and the data gradient's
    # transforms are packed anew each call (the data gradient's as U^T's blocks)
    cfg = dict(n=2, c=64, f=96, g=1, hw=(9, 9), k=(3, 3), s=(1, 1), p=(1, 1), d=(1, 1),
               bias=False, epi="relu")
    graph, _, _ = _conv_graph(cfg)
    joint = run_pipeline(graph, grad=True)
    calls = []
    real = cpu_gemm.matmuls
    monkeypatch.setattr(cpu_gemm, "matmuls", lambda *a: (calls.append(a[2].shape), real(*a)))
    with _small(m=m):
        fn = cpu.compile(joint)
        for seed in range(2):
            inputs = [_rand(v.type.shape, seed + j) for j, v in enumerate(joint.inputs)]
            params = [_rand(v.type.shape, 10 + seed + j) * 0.1
                      for j, v in enumerate(joint.params)]
            got = fn([a.copy() for a in inputs], [p.copy() for p in params])
            want = reference.run_graph(joint, inputs, params)
            for g, w in zip(got, want):
                np.testing.assert_allclose(g, w, rtol=1e-4, atol=2e-4)
    assert fn.report.get("winograd") == 3, fn.report
    kk = (m + 2) ** 2
    assert {s[:2] for s in calls} == {(kk, 96), (kk, 64)}   # forward (F) and data gradient (C)


@pytest.mark.parametrize("n,per_sample", [(1, False), (3, True), (40, True), (40, False)])
def test_im2col_data_gradients_of_whole_samples_run_on_the_tiles(n, per_sample, monkeypatch):
    # W^T @ gy of a stride-2 convolution (not Winograd's) where each thread takes whole
    # samples (maps from COLS_SAMPLE_M pixels): W^T packed per call for the tiles; a
    # chunk of samples keeps BLAS
    if per_sample:
        monkeypatch.setattr(cpu_conv_steps, "COLS_SAMPLE_M", 0)
    cfg = dict(n=n, c=32, f=64, g=1, hw=(9, 9), k=(3, 3), s=(2, 2), p=(1, 1), d=(1, 1),
               bias=True, epi="none")
    graph, _, _ = _conv_graph(cfg)
    joint = run_pipeline(graph, grad=True)
    calls = []
    real = cpu_gemm.matmuls
    monkeypatch.setattr(cpu_gemm, "matmuls",
                        lambda *a, **k: (calls.append(a[2].shape), real(*a, **k)))
    inputs = [_rand(v.type.shape, j) for j, v in enumerate(joint.inputs)]
    params = [_rand(v.type.shape, 10 + j) for j, v in enumerate(joint.params)]
    inputs[0][0, 3, 4, 4] = np.nan                  # NaN reaches the same image gradients
    fn = cpu.compile(joint)
    got = fn([a.copy() for a in inputs], [p.copy() for p in params])
    want = reference.run_graph(joint, [a.copy() for a in inputs], [p.copy() for p in params])
    for g, w in zip(got, want):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        ok = np.isfinite(w)
        np.testing.assert_allclose(g[ok], w[ok], rtol=1e-4, atol=1e-4)
    if per_sample:
        assert len(calls) == n and all(s == (1, 32 * 9, 25) for s in calls), calls
    else:
        assert not calls, calls


def test_pointwise_samples_run_on_the_tiles_while_the_weights_repeat(monkeypatch):
    cfg = dict(n=3, c=64, f=96, g=1, hw=(14, 14), k=(1, 1), s=(1, 1), p=(0, 0), d=(1, 1),
               bias=True, epi="relu")
    graph, _, _ = _conv_graph(cfg)
    calls = []
    real = cpu_gemm.matmuls
    monkeypatch.setattr(cpu_gemm, "matmuls",
                        lambda *a, **k: (calls.append(a[2].shape), real(*a, **k)))
    x = _rand((3, 64, 14, 14), 1)
    w = _rand((96, 64, 1, 1), 2)
    b = _rand((96,), 3)
    fn = cpu.compile(graph)

    def check(image=x):
        calls.clear()
        got = fn([image], [w, b])[0]
        want = reference.run_graph(graph, [image], [w, b])[0]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        ok = np.isfinite(want)
        np.testing.assert_allclose(got[ok], want[ok], rtol=1e-4, atol=1e-4)
        return len(calls)

    assert check() == 0                     # new weights: BLAS, their bits kept
    assert check() == 3                     # the same again: packed, one product a sample
    assert check() == 3
    w[5, 7, 0, 0] += 1.0                    # changed in place
    assert check() == 0
    bad = x.copy()
    bad[1, 4, 2, 2] = np.inf
    assert check(bad) == 3                  # (an Inf reaches the outputs BLAS gives it)
