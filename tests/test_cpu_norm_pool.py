"""Pooling and BatchNorm compiled by the CPU backend (backends/cpu_norm_pool.py) against the
reference backend: forward, every gradient, moving statistics, NaN/Inf, and no fallback.

Graphs go through the passes a hybridized block's do (autodiff with head gradients as
inputs, fuse, plan_memory), so the kernels write into planned arena buffers. Tolerances:
float32 rtol 1e-4 / atol 1e-5 (sums in another order), float64 1e-10.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ember.backends import cpu, reference
from ember.ir.graph import GraphBuilder
from ember.ir.types import TensorType
from ember.passes import run_pipeline
from ember.runtime import cache

cache.install()
TOL = {"float32": (1e-4, 1e-5), "float64": (1e-10, 1e-12)}
SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def _joint(graph, grad=True):
    passes = ["infer_shapes", "simplify"]
    if grad:
        passes += ["autodiff", "infer_shapes", "simplify"]
    return run_pipeline(graph, passes + ["fuse", "plan_memory"], head_grads="input")


def _compare(graph, inputs, params, dtype, no_fallback=()):
    """cpu == reference on the graph's outputs and on the (mutated) parameters."""
    fn = cpu.compile(graph)
    p_cpu, p_ref = [p.copy() for p in params], [p.copy() for p in params]
    got = fn([a.copy() for a in inputs], p_cpu)
    want = reference.run_graph(graph, [a.copy() for a in inputs], p_ref)
    rtol, atol = TOL[dtype]
    for k, (g, w) in enumerate([*zip(got, want), *zip(p_cpu, p_ref)]):
        assert g.shape == w.shape and g.dtype == w.dtype, k
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=f"output {k}")
    bad = [k for k in fn.report if k.startswith("fallback:") and k[9:] in no_fallback]
    assert not bad, fn.report
    return fn.report


# ---- pooling ----------------------------------------------------------------------------------
@st.composite
def pool_cases(draw):
    nsp = draw(st.sampled_from([1, 2]))
    k = tuple(draw(st.integers(1, 3)) for _ in range(nsp))
    s = tuple(draw(st.integers(1, 3)) for _ in range(nsp))
    p = tuple(draw(st.integers(0, ki // 2)) for ki in k)
    conv = draw(st.sampled_from(["valid", "full"]))
    sp = tuple(draw(st.integers(max(ki - 2 * pi, 1), 9)) for ki, pi in zip(k, p))
    at = dict(kernel=k, stride=s, pad=p, pooling_convention=conv,
              pool_type=draw(st.sampled_from(["max", "avg", "sum"])),
              count_include_pad=draw(st.sampled_from([None, True, False])),
              global_pool=draw(st.booleans()) and draw(st.booleans()))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3))) + sp
    return shape, at, draw(st.sampled_from(["float32", "float64"]))


def _pool_graph(shape, at, dtype):
    b = GraphBuilder("pool")
    x = b.input(TensorType(shape, dtype), "x")
    (y,) = b.emit("pooling", [x], **at)
    return b.build([y])


@SETTINGS
@given(pool_cases(), st.integers(0, 2 ** 31))
def test_pooling_forward_and_gradient(case, seed):
    shape, at, dtype = case
    joint = _joint(_pool_graph(shape, at, dtype))
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(v.type.shape).astype(dtype) for v in joint.inputs]
    if at["pool_type"] == "max" and rng.random() < 0.5:   # ties: the first maximum wins
        arrays[0] = np.round(arrays[0]).astype(dtype)
    rep = _compare(joint, arrays, [], dtype, ("pooling", "pooling_backward"))
    assert rep.get("pooling") == 1 and rep.get("pooling_backward") == 1, rep


@pytest.mark.parametrize("kind", ["max", "avg", "sum"])
@pytest.mark.parametrize("global_pool,window", [
    (False, dict(kernel=(3, 3), stride=(2, 2), pad=(1, 1))), (True, {}),
    # windows that tile the plane (max's gradient: cpu_pool_kernels's tiling kernel),
    # with an uncovered last row, and clipped by the edge
    (False, dict(kernel=(2, 2), stride=(2, 2), pad=(0, 0))),
    (False, dict(kernel=(2, 2), stride=(2, 2), pad=(0, 0), pooling_convention="full"))])
def test_pooling_nan_and_inf_propagate_as_eager(kind, global_pool, window):
    at = dict(kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type=kind, global_pool=global_pool)
    at.update(window)
    joint = _joint(_pool_graph((2, 2, 7, 6), at, "float32"))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2, 7, 6)).astype(np.float32)
    x[0, 0, 1, 1], x[0, 1, 4, 2], x[1, 0, 0, 5], x[1, 1, 6, 0] = np.nan, np.inf, -np.inf, np.nan
    x[1, 1, 3, 3] = x[1, 0, 2, 2] = np.nan   # (2, 2): a 2x2 window's first position
    g = rng.standard_normal(joint.inputs[1].type.shape).astype(np.float32)
    g.reshape(-1)[1] = np.inf
    fn = cpu.compile(joint)
    got = fn([x.copy(), g.copy()], [])
    want = reference.run_graph(joint, [x, g], [])
    for a, w in zip(got, want):
        assert np.array_equal(np.isnan(a), np.isnan(w))
        np.testing.assert_allclose(a, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k,s,p", [((3, 3), (2, 2), (1, 1)), ((2, 2), (2, 2), (0, 0)),
                                   ((3, 2), (1, 2), (1, 0)), ((5, 4), (1, 2), (2, 1)),
                                   ((2, 3), (2, 3), "full"), (None, None, None)])
def test_max_pooling_gradient_goes_to_the_first_maximum_of_ties(k, s, p):
    """Windows full of equal values, inside the data and on its edges (None: global;
    "full": no padding, windows clipped by the edge)."""
    full = p == "full"
    p = (0, 0) if full else p
    at = dict(kernel=k, stride=s, pad=p, pool_type="max") if k else \
        dict(kernel=(1, 1), pool_type="max", global_pool=True)
    if full:
        at["pooling_convention"] = "full"
    joint = _joint(_pool_graph((2, 3, 9, 8), at, "float32"))
    rng = np.random.default_rng(5)
    x = rng.integers(0, 2, (2, 3, 9, 8)).astype(np.float32)
    x[1, 2] = -np.inf   # a plane of -inf: windows with padding route to no position
    g = rng.standard_normal(joint.inputs[1].type.shape).astype(np.float32)
    got = cpu.compile(joint)([x, g], [])
    want = reference.run_graph(joint, [x, g], [])
    for a, w in zip(got, want):
        np.testing.assert_array_equal(a, w)


@st.composite
def max_pool_cases(draw):
    """Max pooling windows of 1-5 a side (larger than the steps, padded up to the window,
    'full' windows past the edge), 1-D and 2-D; values with ties, NaN and infinities."""
    nsp = draw(st.sampled_from([1, 2]))
    k = tuple(draw(st.integers(1, 5)) for _ in range(nsp))
    s = tuple(draw(st.integers(1, 4)) for _ in range(nsp))
    p = tuple(draw(st.integers(0, ki - 1)) for ki in k)
    sp = tuple(draw(st.integers(max(ki - 2 * pi, 1), 11)) for ki, pi in zip(k, p))
    conv = draw(st.sampled_from(["valid", "full"]))
    return (draw(st.integers(1, 2)), draw(st.integers(1, 3))) + sp, \
        dict(kernel=k, stride=s, pad=p, pooling_convention=conv, pool_type="max")


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(max_pool_cases(), st.integers(0, 2 ** 31))
def test_max_pooling_forward_equals_the_reference_exactly(case, seed):
    """The row-buffer max pooling kernel (each output row from the elementwise maximum of
    its window's rows): the same values as the reference, NaN where it has NaN (signed
    zeros compare equal: the taps are visited in another order)."""
    shape, at = case
    graph = run_pipeline(_pool_graph(shape, at, "float32"), ["infer_shapes", "plan_memory"])
    rng = np.random.default_rng(seed)
    x = np.round(rng.standard_normal(shape) * 2).astype(np.float32)
    special = rng.random(shape)
    x[special < 0.05] = np.nan
    x[(special >= 0.05) & (special < 0.1)] = np.inf
    x[(special >= 0.1) & (special < 0.15)] = -np.inf
    fn = cpu.compile(graph)
    assert fn.report.get("pooling") == 1, fn.report
    (got,), (want,) = fn([x.copy()], []), reference.run_graph(graph, [x], [])
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kind", ["max", "avg", "sum"])
@pytest.mark.parametrize("include", [True, False])
def test_pooling_with_windows_too_large_to_unroll(kind, include):
    at = dict(kernel=(5, 4), stride=(2, 1), pad=(2, 1), pool_type=kind,
              count_include_pad=include, pooling_convention="full")
    joint = _joint(_pool_graph((2, 2, 9, 7), at, "float64"))
    rng = np.random.default_rng(6)
    arrays = [rng.standard_normal(v.type.shape) for v in joint.inputs]
    _compare(joint, arrays, [], "float64", ("pooling", "pooling_backward"))


def test_resnet_stem_pool_has_no_fallback():
    at = dict(kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max")
    joint = _joint(_pool_graph((2, 4, 16, 16), at, "float32"))
    rep = cpu.compile(joint).report
    assert rep.get("pooling") == 1 and rep.get("pooling_backward") == 1, rep
    assert not any(k.startswith("fallback") for k in rep), rep


# ---- BatchNorm --------------------------------------------------------------------------------
@st.composite
def bn_cases(draw):
    ndim = draw(st.integers(2, 4))
    shape = tuple(draw(st.integers(1, 5)) for _ in range(ndim))
    axis = draw(st.integers(-ndim, ndim - 1))
    at = dict(axis=axis, fix_gamma=draw(st.booleans()), use_global_stats=draw(st.booleans()),
              output_mean_var=draw(st.booleans()), eps=draw(st.sampled_from([1e-3, 1e-5])),
              momentum=draw(st.sampled_from([0.9, 0.5])), is_train=draw(st.booleans()))
    return shape, at, draw(st.sampled_from(["float32", "float64"]))


def _bn_graph(shape, at, dtype):
    c = shape[at["axis"] % len(shape)]
    b = GraphBuilder("bn")
    x = b.input(TensorType(shape, dtype), "x")
    gamma = b.input(TensorType((c,), dtype), "gamma")
    beta = b.input(TensorType((c,), dtype), "beta")
    mm = b.param(TensorType((c,), dtype), "mm")
    mv = b.param(TensorType((c,), dtype), "mv")
    outs = b.emit("batch_norm", [x, gamma, beta, mm, mv], **at)
    return b.build(list(outs)), c


def _bn_arrays(graph, c, dtype, rng):
    ins = [(rng.standard_normal(v.type.shape) * 1.5 + 0.3).astype(dtype) for v in graph.inputs]
    params = [rng.standard_normal(c).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype)]
    return ins, params


@SETTINGS
@given(bn_cases(), st.integers(0, 2 ** 31))
def test_batch_norm_forward_gradients_and_moving_statistics(case, seed):
    shape, at, dtype = case
    graph, c = _bn_graph(shape, at, dtype)
    joint = _joint(graph)
    ins, params = _bn_arrays(joint, c, dtype, np.random.default_rng(seed))
    rep = _compare(joint, ins, params, dtype, ("batch_norm", "batch_norm_backward"))
    assert rep.get("batch_norm") == 1 and rep.get("batch_norm_backward") == 1, rep


def test_batch_norm_resnet_shape_runs_compiled_and_updates_statistics_in_place():
    at = dict(axis=1, fix_gamma=False, is_train=True, momentum=0.9, eps=1e-5)
    graph, c = _bn_graph((4, 8, 10, 10), at, "float32")
    joint = _joint(graph)
    ins, params = _bn_arrays(joint, c, "float32", np.random.default_rng(0))
    before = [p.copy() for p in params]
    fn = cpu.compile(joint)
    fn(ins, params)
    assert not any(k.startswith("fallback") for k in fn.report), fn.report
    assert not np.array_equal(before[0], params[0]) and not np.array_equal(before[1], params[1])
    _compare(joint, ins, before, "float32")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batch_norm_moments_in_one_pass_keep_their_digits(dtype):
    """The moments' one shifted pass for float32 (``cpu_norm_kernels``; float64 keeps two)
    against the reference's two: a mean far from zero (1e4 times the spread in float32; in
    float64 less: the outputs' own rounding there is that of the data's magnitude, beyond
    the 1e-12 tolerance), a first value far out, a constant channel (variance 0)."""
    at = dict(axis=1, fix_gamma=False, is_train=True, momentum=0.9, eps=1e-5)
    graph, c = _bn_graph((6, 3, 7, 5), at, dtype)
    joint = _joint(graph)
    ins, params = _bn_arrays(joint, c, dtype, np.random.default_rng(5))
    x = ins[0]
    x[:, 0] = (1e4 if dtype == "float32" else 30.0) + 0.5 * x[:, 0]
    x[0, 1, 0, 0] = 1e3          # the shift of channel 1: an outlier
    x[:, 2] = 3.25               # channel 2 constant
    _compare(joint, ins, params, dtype, ("batch_norm", "batch_norm_backward"))


@pytest.mark.parametrize("train", [True, False])
def test_batch_norm_nan_and_inf_propagate_as_eager(train):
    at = dict(axis=1, fix_gamma=False, is_train=train)
    graph, c = _bn_graph((3, 4, 5), at, "float32")
    joint = _joint(graph)
    ins, params = _bn_arrays(joint, c, "float32", np.random.default_rng(1))
    ins[0][0, 1, 2], ins[0][1, 2, 0] = np.nan, np.inf
    ins[3][2, 3, 4] = -np.inf   # a head gradient
    fn = cpu.compile(joint)
    p_cpu = [p.copy() for p in params]
    got = fn([a.copy() for a in ins], p_cpu)
    want = reference.run_graph(joint, [a.copy() for a in ins], params)
    for a, w in zip([*got, *p_cpu], [*want, *params]):
        assert np.array_equal(np.isnan(a), np.isnan(w)) and \
            np.array_equal(np.isinf(a), np.isinf(w))
        np.testing.assert_allclose(a, w, rtol=1e-4, atol=1e-5)


def test_sync_batch_norm_runs_the_batch_norm_kernel():
    b = GraphBuilder("sbn")
    x = b.input(TensorType((2, 3, 4), "float32"), "x")
    ps = [b.param(TensorType((3,), "float32"), n) for n in ("g", "b", "mm", "mv")]
    (y,) = b.emit("_contrib_SyncBatchNorm", [x, *ps], fix_gamma=False, is_train=True)
    graph = _joint(b.build([y]), grad=False)
    rng = np.random.default_rng(2)
    params = [rng.standard_normal(3).astype(np.float32) for _ in range(3)]
    params.append(rng.uniform(0.5, 2, 3).astype(np.float32))
    rep = _compare(graph, [rng.standard_normal((2, 3, 4)).astype(np.float32)], params,
                   "float32", ("_contrib_SyncBatchNorm",))
    assert rep.get("batch_norm") == 1


# ---- LayerNorm --------------------------------------------------------------------------------
@SETTINGS
@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.data(),
       st.sampled_from(["float32", "float64"]), st.booleans(), st.integers(0, 2 ** 31))
def test_layer_norm_forward_and_gradients(shape, data, dtype, mean_var, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    c = shape[axis]
    b = GraphBuilder("ln")
    x = b.input(TensorType(tuple(shape), dtype), "x")
    gamma, beta = (b.input(TensorType((c,), dtype), n) for n in ("gamma", "beta"))
    outs = b.emit("layer_norm", [x, gamma, beta], axis=axis, eps=1e-5, output_mean_var=mean_var)
    joint = _joint(b.build(list(outs)))
    rng = np.random.default_rng(seed)
    ins = [(rng.standard_normal(v.type.shape) + 0.5).astype(dtype) for v in joint.inputs]
    rep = _compare(joint, ins, [], dtype, ("layer_norm",))
    assert rep.get("layer_norm") == 1, rep
