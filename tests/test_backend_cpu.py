"""The numba CPU backend against the reference backend (float32 atol 1e-5, rtol 1e-4).

Graphs are built with GraphBuilder (hypothesis picks ops and shapes) and run by both
backends; fused and planned forms come from the passes when they are registered. Kernels
load through the kernel cache, so the numba compilations of one run serve the next.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ember.backends import cpu, reference
from ember.ir.graph import GraphBuilder
from ember.ir.types import TensorType
from ember.runtime import cache

cache.install()
F32 = "float32"


def _rand(shape, seed=0, dtype=F32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def check(graph, inputs, params=(), expect_kinds=()):
    """cpu == reference on copies of the arrays; returns the cpu run's report."""
    fn = cpu.compile(graph)
    got = fn([a.copy() for a in inputs], [p.copy() for p in params])
    want = reference.run_graph(graph, [a.copy() for a in inputs], [p.copy() for p in params])
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    for k in expect_kinds:
        assert fn.report.get(k, 0) > 0, fn.report
    return fn.report


def test_broadcast_layout_collapses_dims():
    dims, reshapes, flags = cpu.broadcast_layout((8, 4, 5), [(8, 4, 5), (5,), (8, 1, 1)])
    assert dims == (8, 4, 5)
    assert reshapes == [(8, 4, 5), (1, 1, 5), (8, 1, 1)]
    dims, reshapes, flags = cpu.broadcast_layout((8, 4, 5), [(8, 4, 5), (4, 5)])
    assert dims == (8, 20) and reshapes == [(8, 20), (1, 20)] and flags[1] == [True, False]
    assert cpu.broadcast_layout((3, 4), [(2, 4)]) is None
    assert cpu.broadcast_layout((), [()])[0] == (1,)


UNARY = ["relu", "sigmoid", "tanh", "negative", "square", "abs", "exp"]
BINARY = ["add", "sub", "mul", "maximum"]
SHAPES = [(6, 5), (2, 3, 4), (7,)]


@st.composite
def chains(draw):
    """A random elementwise/broadcast chain over one full input and one broadcast input."""
    shape = draw(st.sampled_from(SHAPES))
    k = draw(st.integers(0, len(shape)))
    small = tuple(1 if draw(st.booleans()) else d for d in shape[k:])
    ops = draw(st.lists(st.sampled_from(UNARY + BINARY + ["mul_scalar"]), min_size=1,
                        max_size=4))
    return shape, small, ops


@settings(max_examples=10)
@given(chains())
def test_elementwise_chain_matches_reference(chain):
    shape, small, ops = chain
    b = GraphBuilder("chain")
    x = b.input(TensorType(shape, F32), "x")
    y = b.input(TensorType(small, F32), "y")
    v = x
    for name in ops:
        if name in BINARY:
            (v,) = b.emit(name, [v, y])
        elif name == "mul_scalar":
            (v,) = b.emit(name, [v], scalar=0.5)
        else:
            (v,) = b.emit(name, [v])
    check(b.build([v]), [_rand(shape), _rand(small, 1)], expect_kinds=("elementwise",))


def _mlp(batch=16, n_in=12, hidden=8, classes=4):
    b = GraphBuilder("mlp")
    x = b.input(TensorType((batch, n_in), F32), "x")
    w0 = b.param(TensorType((hidden, n_in), F32), "w0")
    b0 = b.param(TensorType((hidden,), F32), "b0")
    w1 = b.param(TensorType((classes, hidden), F32), "w1")
    b1 = b.param(TensorType((classes,), F32), "b1")
    (h,) = b.emit("fully_connected", [x, w0, b0], num_hidden=hidden)
    (h,) = b.emit("relu", [h])
    (z,) = b.emit("fully_connected", [h, w1, b1], num_hidden=classes)
    (p,) = b.emit("log_softmax", [z], axis=-1)
    (loss,) = b.emit("mean", [p])
    graph = b.build([loss])
    shapes = [(hidden, n_in), (hidden,), (classes, hidden), (classes,)]
    params = [_rand(s, i + 1) * 0.3 for i, s in enumerate(shapes)]
    return graph, ([_rand((batch, n_in))], params)


def test_dense_bias_relu_and_dot_transposes():
    b = GraphBuilder("dense")
    x = b.input(TensorType((5, 2, 3), F32), "x")
    w = b.param(TensorType((4, 6), F32), "w")
    bias = b.param(TensorType((4,), F32), "bias")
    (h,) = b.emit("fully_connected", [x, w, bias], num_hidden=4)
    (r,) = b.emit("relu", [h])
    (d1,) = b.emit("dot", [r, w])
    (d2,) = b.emit("dot", [h, r], transpose_a=True)
    (d3,) = b.emit("batch_dot", [x, x], transpose_b=True)
    check(b.build([r, d1, d2, d3]), [_rand((5, 2, 3))], [_rand((4, 6), 1), _rand((4,), 2)],
          expect_kinds=("gemm", "batch_dot"))


@settings(max_examples=16)
@given(op=st.sampled_from(["sum", "mean", "max", "min"]),
       axis=st.sampled_from([None, 0, 1, 2, (0, 1), (1, 2), -1, (0, 2)]), keepdims=st.booleans(),
       nan=st.booleans())
def test_reductions_match_reference(op, axis, keepdims, nan):
    """... (0, 2): every axis but the middle one (a conv bias's gradient), its own kernel;
    NaN propagates as in NumPy."""
    b = GraphBuilder("red")
    x = b.input(TensorType((3, 4, 5), F32), "x")
    (y,) = b.emit(op, [x], axis=axis, keepdims=keepdims)
    data = _rand((3, 4, 5))
    if nan:
        data[1, 2, 3] = np.nan
    check(b.build([y]), [data], expect_kinds=("reduce",))


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "softmin"])
@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax_family(op, axis):
    b = GraphBuilder("sm")
    x = b.input(TensorType((3, 4, 5), F32), "x")
    (y,) = b.emit(op, [x], axis=axis, temperature=2.0 if op == "softmin" else None)
    check(b.build([y]), [_rand((3, 4, 5)) * 5], expect_kinds=("softmax",))


def test_mlp_forward_and_gradients():
    from ember.passes import run_pipeline
    graph, (inputs, params) = _mlp()
    check(graph, inputs, params, expect_kinds=("gemm", "softmax", "reduce"))
    joint = run_pipeline(graph, grad=True, head_grads="ones")
    report = check(joint, inputs, params)
    assert not any(k.startswith("fallback:fully") for k in report)


def test_params_mutated_in_place():
    b = GraphBuilder("step")
    w = b.param(TensorType((4, 3), F32), "w")
    g = b.input(TensorType((4, 3), F32), "g")
    mom = b.param(TensorType((4, 3), F32), "mom")
    (new_w,) = b.emit("sgd_mom_update", [w, g, mom], lr=0.1, momentum=0.9, wd=0.01)
    graph = b.build([new_w])
    params = [_rand((4, 3)), _rand((4, 3), 1)]
    ref_params = [p.copy() for p in params]
    grad = _rand((4, 3), 2)
    got = cpu.compile(graph)([grad], params)
    want = reference.run_graph(graph, [grad], ref_params)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    np.testing.assert_allclose(params[1], ref_params[1], rtol=1e-6)  # mom updated in place
    assert not np.array_equal(params[1], _rand((4, 3), 1))


def test_planned_arena_runs_twice_and_outputs_do_not_alias():
    graph, (inputs, params) = _mlp()
    offset = 0
    for v in [*graph.inputs, *(o for n in graph.nodes for o in n.outputs)]:
        v.mem = ("arena", offset)   # no reuse: every value its own slot
        offset += -(-v.type.nbytes // 64) * 64
    graph.meta["arena_bytes"] = offset
    fn = cpu.compile(graph)
    first = fn(inputs, params)
    second = fn([inputs[0] * 2], params)
    want = reference.run_graph(graph, [inputs[0] * 2], params)
    np.testing.assert_allclose(second[0], want[0], rtol=1e-4, atol=1e-5)
    assert not np.shares_memory(first[0], second[0])


def test_fused_and_planned_pipeline_matches_reference():
    from ember.passes import _PASSES, run_pipeline
    if "fuse" not in _PASSES:
        pytest.skip("the fuse pass is not registered yet")
    graph, (inputs, params) = _mlp()
    joint = run_pipeline(graph, grad=True, head_grads="ones")
    assert any(n.body is not None for n in joint.nodes)
    check(joint, inputs, params)


def test_fallback_ops_still_run_and_are_counted():
    b = GraphBuilder("fb")
    x = b.input(TensorType((3, 4), F32), "x")
    (t,) = b.emit("transpose", [x])
    (y,) = b.emit("relu", [t])
    report = check(b.build([y]), [_rand((3, 4))])
    assert report["fallback:transpose"] == 1 and report["elementwise"] == 1


@pytest.mark.slow
def test_every_template_op_matches_reference():
    from ember.backends import codegen
    from ember.ir.ops import all_ops
    x0 = np.concatenate([_rand(64) * 3, [0.0, 0.5, -0.5, 2.5, np.inf, -np.inf, 0.999, 30.0]])
    for name, op in sorted(all_ops().items()):
        if codegen.template_of(op) is None or op.name in ("zeros_like", "ones_like") \
                or op.kind.name == "BROADCAST" and len(op.inputs) == 1:
            continue
        for dt in ("float32", "float64"):
            b = GraphBuilder(name)
            ins = [b.input(TensorType((x0.size,), dt), f"x{i}") for i in
                   range(2 if len(op.inputs) == 2 else 1)]
            attrs = {"scalar": 0.75} if "scalar" in op.attrs else {}
            attrs.update({"clip": dict(a_min=-0.5, a_max=0.8), "cast": dict(dtype=dt),
                          "activation": dict(act_type="tanh")}.get(name, {}))
            (o,) = b.emit(name, ins, **attrs)
            arrays = [x0.astype(dt), np.roll(x0, 3).astype(dt)][:len(ins)]
            got = cpu.compile(b.build([o]))(arrays, [])[0]
            want = reference.run_graph(b.build([o]), arrays, [])[0]
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("mode", ["clip", "wrap"])
@pytest.mark.parametrize("axis", [-1, 1, 0])
def test_pick_and_pick_backward_kernels(mode, axis):
    b = GraphBuilder("pick")
    x = b.input(TensorType((4, 5, 3), F32), "x")
    n_idx = {-1: (4, 5), 1: (4, 3), 0: (5, 3)}[axis]
    idx = b.input(TensorType(n_idx, F32), "idx")
    (p,) = b.emit("pick", [x, idx], axis=axis, mode=mode)
    (g,) = b.emit("pick_backward", [p, idx, x], axis=axis, mode=mode)
    index = np.random.default_rng(3).integers(-7, 9, n_idx).astype(np.float32)
    report = check(b.build([p, g]), [_rand((4, 5, 3)), index],
                   expect_kinds=("pick", "pick_backward"))
    assert not any(k.startswith("fallback") for k in report)


def test_reshape_fill_and_inlined_groups_have_no_fallbacks():
    """The softmax cross-entropy graphs of the seed MLP: fused groups no single kernel
    covers are planned node by node (no nested program), reshapes copy, ``full`` fills."""
    from ember.passes import run_pipeline
    b = GraphBuilder("xent")
    z = b.input(TensorType((6, 4), F32), "z")
    y = b.input(TensorType((6,), F32), "y")
    (ls,) = b.emit("log_softmax", [z], axis=-1)
    (p,) = b.emit("pick", [ls, y], axis=-1, keepdims=True)
    (n,) = b.emit("negative", [p])
    (e,) = b.emit("expand_dims", [y], axis=1)
    (f,) = b.emit("full", [], shape=(6,), value=2.5)
    graph = run_pipeline(b.build([n, e, f]), ["infer_shapes", "fuse", "plan_memory"])
    labels = np.array([0, 3, 1, 2, 9, -1], np.float32)
    report = check(graph, [_rand((6, 4)), labels], expect_kinds=("reshape", "fill"))
    assert not any(k.startswith("fallback") or k == "nested" for k in report), report


def test_generated_run_is_straight_line_and_reusable():
    graph, (inputs, params) = _mlp()
    fn = cpu.compile(graph)
    first = fn(inputs, params)[0].copy()
    np.testing.assert_array_equal(fn(inputs, params)[0], first)
    with pytest.raises(Exception, match="expects"):
        fn([inputs[0][:, :3]], params)


def test_vector_math_matches_numpy_everywhere():
    """cpu_math's float32 exp/tanh/sigmoid: a few ulp over the whole range, IEEE specials."""
    from numba import njit

    from ember.backends.cpu_math import exp32, sigmoid32, tanh32

    @njit
    def apply(x, out):
        for i in range(x.shape[0]):
            out[i, 0], out[i, 1], out[i, 2] = exp32(x[i]), tanh32(x[i]), sigmoid32(x[i])
    x = np.concatenate([np.linspace(-100, 100, 20001, dtype=np.float32),
                        np.float32([0, -0.0, 1e-30, 0.6249, 0.6251, 88.72, 88.73, -87.5,
                                    np.inf, -np.inf, np.nan])])
    out = np.empty((x.size, 3), np.float32)
    apply(x, out)
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore"):
        refs = [np.exp(x64), np.tanh(x64), 1 / (1 + np.exp(-x64))]
        refs = [r.astype(np.float32) for r in refs]
    for j, ref in enumerate(refs):
        np.testing.assert_allclose(out[:, j], ref, rtol=1e-6, atol=1e-37, equal_nan=True)


@settings(max_examples=20, deadline=None)
@given(shapes=st.lists(st.integers(0, 5), min_size=2, max_size=4),
       rest=st.lists(st.integers(1, 40), min_size=1, max_size=3), dim=st.integers(0, 3),
       dtype=st.sampled_from(["float32", "float64", "int32"]), big=st.booleans())
def test_concat_copies_each_input_into_its_slice(shapes, rest, dim, dtype, big):
    """``concat`` as its own step (no NumPy fallback), along any axis, split over the pool's
    threads from CONCAT_SPLIT_BYTES (``big``: every output)."""
    from ember.backends import cpu_steps
    dim %= len(rest) + 1
    b = GraphBuilder("cat")
    ins = []
    for i, k in enumerate(shapes):
        shape = list(rest)
        shape.insert(dim, k)
        ins.append(b.input(TensorType(tuple(shape), dtype), f"x{i}"))
    (y,) = b.emit("concat", ins, dim=dim, num_args=len(ins))
    (z,) = b.emit("relu", [y]) if dtype != "int32" else (y,)
    graph = b.build([z])
    from ember.passes import run_pipeline
    graph = run_pipeline(graph, ["infer_shapes", "plan_memory"])
    old = cpu_steps.CONCAT_SPLIT_BYTES
    cpu_steps.CONCAT_SPLIT_BYTES = 0 if big else old
    try:
        rng = np.random.default_rng(len(shapes))
        arrays = [(rng.standard_normal(v.type.shape) * 10).astype(dtype) for v in graph.inputs]
        report = check(graph, arrays)
    finally:
        cpu_steps.CONCAT_SPLIT_BYTES = old
    assert report.get("concat") == 1 and "fallback:concat" not in report, report
