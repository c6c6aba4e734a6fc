"""The CUDA backend against the reference backend, under numba's CUDA simulator.

The module runs in its own pytest subprocess with ``NUMBA_ENABLE_CUDASIM=1`` (see
``tests/cuda_sim.py``), so the rest of the suite keeps seeing no GPU; shapes are tiny
because the simulator runs every CUDA thread as a Python thread. ``gpu``-marked tests run on
a real device with ``pytest -m gpu tests/test_cuda_backend.py`` (cuBLAS, larger shapes; the
CUDA-graph runtime is tested in tests/test_cuda_backend_graph.py, convolution, BatchNorm and
pooling in tests/test_cuda_backend_nn.py).
"""
import numpy as np
import pytest
from cuda_check import F32, check, run_cuda
from cuda_check import no_fallback as _no_fallback
from cuda_check import rand as _rand
from cuda_sim import simulator_module
from hypothesis import given, settings
from hypothesis import strategies as st

from ember.backends import reference
from ember.ir.graph import GraphBuilder
from ember.ir.types import TensorType

CUDA_SIMULATOR_MODULE = True
# the simulator runs kernels as Python: x / 0.0 on NumPy scalars warns where a device is silent
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in scalar:RuntimeWarning")
test_cuda_simulator_subprocess = simulator_module(__file__)


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


@settings(max_examples=6, deadline=None)
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


def test_nan_inf_agree_with_eager():
    """IEEE specials through templates (log, sqrt, pow, gamma...), reductions and softmax:
    the simulator runs them with C's results, as a device does."""
    ops = ["log", "sqrt", "exp", "sigmoid", "tanh", "relu", "reciprocal", "gamma", "gammaln",
           "rsqrt", "arcsin", "erf", "cbrt", "floor", "round"]
    b = GraphBuilder("specials")
    x = b.input(TensorType((10,), F32), "x")
    outs = [b.emit(op, [x])[0] for op in ops]
    outs.append(b.emit("power_scalar", [x], scalar=2.5)[0])
    outs.append(b.emit("power_scalar", [x], scalar=-1.5)[0])
    outs.append(b.emit("div", [x, x])[0])
    outs += [b.emit(op, [x], axis=0)[0] for op in ("max", "min", "sum")]
    outs.append(b.emit("softmax", [x], axis=0)[0])
    xs = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, -1.0, 1000.0, 0.5, -2.5, 3.0], F32)
    got, _, report = run_cuda(b.build(outs), [xs])
    want = reference.run_graph(b.build(outs), [xs], [])
    for g, w, name in zip(got, want, ops + ["pow2.5", "pow-1.5", "div", "max", "min", "sum",
                                            "softmax"]):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=name)
    _no_fallback(report)


def test_every_template_op_matches_reference():
    """Every op with a scalar template, float32 and float64, over values that include
    0, +-inf, NaN and points where libm branches: all in one graph per dtype."""
    from ember.backends import codegen
    from ember.ir.ops import all_ops
    x0 = np.concatenate([_rand(24) * 3, [0.0, 0.5, -0.5, 2.5, np.inf, -np.inf, np.nan, 30.0]])
    for dt in ("float32", "float64"):
        b = GraphBuilder("templates")
        xs = [b.input(TensorType((x0.size,), dt), f"x{i}") for i in range(2)]
        outs, names = [], []
        for name, op in sorted(all_ops().items()):
            if codegen.template_of(op) is None or name in ("zeros_like", "ones_like") \
                    or op.kind.name == "BROADCAST" and len(op.inputs) == 1:
                continue
            attrs = {"scalar": 0.75} if "scalar" in op.attrs else {}
            attrs.update({"clip": dict(a_min=-0.5, a_max=0.8), "cast": dict(dtype=dt),
                          "activation": dict(act_type="softrelu")}.get(name, {}))
            outs.append(b.emit(name, xs[:2 if len(op.inputs) == 2 else 1], **attrs)[0])
            names.append(name)
        arrays = [x0.astype(dt), np.roll(x0, 3).astype(dt)]
        graph = b.build(outs)
        got, _, report = run_cuda(graph, arrays)
        want = reference.run_graph(graph, arrays, [])
        for g, w, name in zip(got, want, names):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=f"{name} {dt}")
        _no_fallback(report)


def test_dense_bias_relu_dot_transposes_and_batch_dot():
    """GEMM shapes that are no multiple of the tile (8 under the simulator)."""
    b = GraphBuilder("dense")
    x = b.input(TensorType((5, 2, 7), F32), "x")
    w = b.param(TensorType((9, 14), F32), "w")
    bias = b.param(TensorType((9,), F32), "bias")
    (h,) = b.emit("fully_connected", [x, w, bias], num_hidden=9)
    (r,) = b.emit("relu", [h])
    (d1,) = b.emit("dot", [r, w])
    (d2,) = b.emit("dot", [h, r], transpose_a=True)
    (d3,) = b.emit("dot", [r, h], transpose_b=True)
    (d4,) = b.emit("batch_dot", [x, x], transpose_b=True)
    (d5,) = b.emit("batch_dot", [x, x], transpose_a=True)
    report = check(b.build([r, d1, d2, d3, d4, d5]), [_rand((5, 2, 7))],
                   [_rand((9, 14), 1), _rand((9,), 2)], expect_kinds=("gemm", "batch_dot"))
    _no_fallback(report)


@pytest.mark.parametrize("op", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize("axis,blockwise", [(None, True), (1, True), ((0, 1), True),
                                            ((0, 2), True), (None, False), (1, False),
                                            (-1, False)])
def test_reductions_match_reference(op, axis, blockwise, monkeypatch):
    """One block per output (tree reduction in shared memory) or one thread per output;
    axes (0, 2) keep the middle axis (a bias gradient's pattern)."""
    from ember.backends import cuda_steps
    monkeypatch.setattr(cuda_steps, "BLOCKWISE_BELOW", 1 << 30 if blockwise else 0)
    b = GraphBuilder("red")
    x = b.input(TensorType((3, 12, 5), F32), "x")
    (y,) = b.emit(op, [x], axis=axis, keepdims=axis == 1)
    report = check(b.build([y]), [_rand((3, 12, 5))], expect_kinds=("reduce",))
    _no_fallback(report)


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "softmin"])
@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax_family(op, axis):
    b = GraphBuilder("sm")
    x = b.input(TensorType((3, 4, 5), F32), "x")
    (y,) = b.emit(op, [x], axis=axis, temperature=2.0 if op == "softmin" else None)
    check(b.build([y]), [_rand((3, 4, 5)) * 5], expect_kinds=("softmax",))


@pytest.mark.parametrize("mode", ["clip", "wrap"])
@pytest.mark.parametrize("axis", [-1, 0])
def test_pick_and_pick_backward(mode, axis):
    b = GraphBuilder("pick")
    x = b.input(TensorType((4, 5, 3), F32), "x")
    n_idx = {-1: (4, 5), 0: (5, 3)}[axis]
    idx = b.input(TensorType(n_idx, F32), "idx")
    (p,) = b.emit("pick", [x, idx], axis=axis, mode=mode)
    (g,) = b.emit("pick_backward", [p, idx, x], axis=axis, mode=mode)
    index = np.random.default_rng(3).integers(-7, 9, n_idx).astype(np.float32)
    report = check(b.build([p, g]), [_rand((4, 5, 3)), index],
                   expect_kinds=("pick", "pick_backward"))
    _no_fallback(report)


def test_reshape_fill_inlined_groups_and_outputs_that_are_inputs():
    from ember.passes import run_pipeline
    b = GraphBuilder("xent")
    z = b.input(TensorType((6, 4), F32), "z")
    y = b.input(TensorType((6,), F32), "y")
    (ls,) = b.emit("log_softmax", [z], axis=-1)
    (p,) = b.emit("pick", [ls, y], axis=-1, keepdims=True)
    (n,) = b.emit("negative", [p])
    (e,) = b.emit("expand_dims", [y], axis=1)
    (f,) = b.emit("full", [], shape=(6,), value=2.5)
    graph = run_pipeline(b.build([n, e, f, z, n]), ["infer_shapes", "fuse", "plan_memory"])
    labels = np.array([0, 3, 1, 2, 9, -1], np.float32)
    report = check(graph, [_rand((6, 4)), labels], expect_kinds=("reshape", "fill", "inlined"))
    _no_fallback(report)


def _mlp(batch=6, n_in=10, hidden=9, classes=4):
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
    shapes = [(hidden, n_in), (hidden,), (classes, hidden), (classes,)]
    params = [_rand(s, i + 1) * 0.3 for i, s in enumerate(shapes)]
    return b.build([loss]), ([_rand((batch, n_in))], params)


def test_mlp_forward_and_backward_fused_and_planned():
    from ember.passes import run_pipeline
    graph, (inputs, params) = _mlp()
    check(graph, inputs, params, expect_kinds=("gemm", "softmax", "reduce"))
    joint = run_pipeline(graph, grad=True, head_grads="ones")
    assert any(n.body is not None for n in joint.nodes)
    assert any(v.mem is not None for n in joint.nodes for v in n.outputs)
    report = check(joint, inputs, params, expect_kinds=("gemm[tiled]+epilogue",))
    _no_fallback(report)


@pytest.mark.parametrize("opt,kw", [
    ("sgd", {"learning_rate": 0.1, "momentum": 0.9, "wd": 0.01}),
    ("adam", {"learning_rate": 0.01})])
def test_mlp_training_step_matches_reference_without_fallback(opt, kw):
    """The seed MLP's whole training step (forward, softmax cross-entropy, backward, the
    optimizer update) as @ember.compile traces it, compiled for cuda."""
    import ember as mx
    from ember import autograd, gluon, nd
    from ember.gluon import nn
    mx.random.seed(0)
    net = nn.HybridSequential()
    net.add(nn.Dense(9, activation="relu", in_units=6), nn.Dense(4, in_units=9))
    net.initialize(mx.init.Xavier())
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(net.collect_params(), opt, dict(kw))

    @mx.compile(backend="reference")
    def step(x, y):
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(5)
        return loss
    x, y = _rand((5, 6)), (np.arange(5) % 4).astype(np.float32)
    step(nd.array(x), nd.array(y))
    graph = step.graphs[0]
    params = [(_rand(v.type.shape, i) * 0.2 if "state" not in (v.name_hint or "")
               else np.abs(_rand(v.type.shape, i)) * 0.01).astype(v.type.dtype)
              for i, v in enumerate(graph.params)]  # (the float64 learning-rate input too)
    inputs = [x, y.astype(graph.inputs[1].type.dtype)]
    report = check(graph, inputs, params, rtol=1e-4, atol=1e-5)
    _no_fallback(report)
    assert any(k.startswith("update:") for k in report), report


def test_multi_sgd_and_plain_sgd_updates_in_place():
    b = GraphBuilder("upd")
    w0, w1 = b.param(TensorType((4, 3), F32), "w0"), b.param(TensorType((5,), F32), "w1")
    g0, g1 = b.input(TensorType((4, 3), F32), "g0"), b.input(TensorType((5,), F32), "g1")
    m0, m1 = b.param(TensorType((4, 3), F32), "m0"), b.param(TensorType((5,), F32), "m1")
    outs = b.emit("multi_sgd_mom_update", [w0, g0, m0, w1, g1, m1], lrs=(0.1, 0.2),
                  wds=(0.0, 0.01), momentum=0.9, rescale_grad=0.5, num_weights=2)
    (s,) = b.emit("sgd_update", [w1, g1], lr=0.3, wd=0.1)
    (s2,) = b.emit("multi_sgd_update", [w0, g0], lrs=(0.1,), wds=(0.2,), clip_gradient=0.1)
    (s3,) = b.emit("nag_mom_update", [w0, g0, m0], lr=0.1, momentum=0.9, wd=0.01,
                   clip_gradient=0.3)
    (s4,) = b.emit("rmsprop_update", [w1, g1, m1], lr=0.01, wd=0.1, clip_weights=0.5)
    params = [_rand((4, 3)), _rand((5,), 1), _rand((4, 3), 2), np.abs(_rand((5,), 3))]
    report = check(b.build([*outs, s, s2, s3, s4]), [_rand((4, 3), 4), _rand((5,), 5)], params,
                   expect_kinds=("update:multi_sgd_mom_update", "update:sgd_update",
                                 "update:multi_sgd_update", "update:nag_mom_update",
                                 "update:rmsprop_update"))
    _no_fallback(report)


@pytest.mark.parametrize("dtype", ["float32", "int64"])
def test_transpose_swapaxes_and_concat(dtype):
    b = GraphBuilder("layout")
    x = b.input(TensorType((2, 3, 4), dtype), "x")
    z = b.input(TensorType((2, 1, 4), dtype), "z")
    (t,) = b.emit("transpose", [x], axes=(2, 0, 1))
    (r,) = b.emit("transpose", [x])
    (s,) = b.emit("swapaxes", [x], dim1=0, dim2=2)
    (c,) = b.emit("concat", [x, z, x], dim=1)
    (c0,) = b.emit("concat", [x, x], dim=0)
    (a,) = b.emit("add_n", [x, x, x])
    if dtype == "float32":  # outside training: a copy (and its mask of ones)
        x = b.emit("dropout", [x], p=0.5, is_train=False)[0]
    (f,) = b.emit("cast", [x], dtype="float32" if dtype == "int64" else "int32")
    (i,) = b.emit("cast", [f], dtype="int64")
    data = (_rand((2, 3, 4)) * 10).astype(dtype)
    report = check(b.build([t, r, s, c, c0, f, i, a]),
                   [data, (_rand((2, 1, 4), 1) * 10).astype(dtype)],
                   expect_kinds=("transpose", "concat", "cast", "add_n"))
    _no_fallback(report)


def test_slices_getitem_and_its_adjoint():
    """Strided slices (negative steps, integer indices) as one gather, the adjoint as zeros
    and one scatter."""
    from ember.ir.opset_index import encode_key
    b = GraphBuilder("slices")
    x = b.input(TensorType((4, 5, 6), F32), "x")
    like = b.input(TensorType((2, 3), F32), "like")
    (s1,) = b.emit("slice", [x], begin=(1, None), end=(4, None), step=(2, -2))
    (s2,) = b.emit("slice_axis", [x], axis=2, begin=1, end=-1)
    (s3,) = b.emit("slice_like", [x, like], axes=(0, 1))
    key = encode_key((1, slice(None, None, -1), slice(2, 5)))
    (s4,) = b.emit("getitem", [x], key=key)
    og = b.input(s4.type, "og")
    (s5,) = b.emit("getitem_backward", [og, x], key=key)
    report = check(b.build([s1, s2, s3, s4, s5]),
                   [_rand((4, 5, 6)), _rand((2, 3), 1), _rand(s4.type.shape, 2)],
                   expect_kinds=("slice",))
    _no_fallback(report)


@pytest.mark.parametrize("mode", ["clip", "wrap"])
def test_take_embedding_and_take_backward(mode):
    """Repeated and out-of-range indices (the backward's atomic adds, clip and wrap)."""
    b = GraphBuilder("take")
    a = b.input(TensorType((3, 5, 2), F32), "a")
    idx = b.input(TensorType((2, 3), F32), "idx")
    w = b.param(TensorType((6, 4), F32), "w")
    (t,) = b.emit("take", [a, idx], axis=1, mode=mode)
    og = b.input(t.type, "og")
    (tb,) = b.emit("take_backward", [og, idx, a], axis=1, mode=mode)
    (e,) = b.emit("embedding", [idx, w], input_dim=6, output_dim=4)
    index = np.array([[0, 4, 4], [-2, 7, 1.7]], np.float32)
    report = check(b.build([t, tb, e]), [_rand((3, 5, 2)), index, _rand(t.type.shape, 1)],
                   [_rand((6, 4), 2)], expect_kinds=("take", "take_backward", "embedding"))
    _no_fallback(report)


def test_fallback_round_trip_is_counted_and_writes_mutated_inputs_back():
    b = GraphBuilder("fb")
    x = b.input(TensorType((3, 4), F32), "x")
    (t,) = b.emit("softmax_output", [x, b.input(TensorType((3,), F32), "label")])
    (y,) = b.emit("relu", [t])
    w, g = b.param(TensorType((4,), F32), "w"), b.input(TensorType((4,), F32), "g")
    z, n = b.param(TensorType((4,), F32), "z"), b.param(TensorType((4,), F32), "n")
    (r,) = b.emit("ftrl_update", [w, g, z, n], lr=0.1)  # no kernel: a host round trip
    report = check(b.build([y, r]), [_rand((3, 4)), np.array([0, 2, 1], np.float32),
                                     _rand((4,), 1)],
                   [_rand((4,), 2), _rand((4,), 6), np.abs(_rand((4,), 3))])
    assert report["fallback:softmax_output"] == 1 and report["fallback:ftrl_update"] == 1
    assert report["elementwise"] == 1


def test_runs_twice_fresh_outputs_and_rejects_wrong_shapes():
    from ember.backends import cuda
    from ember.backends import cuda_device as cd
    from ember.ir.errors import EmberError
    graph, (inputs, params) = _mlp()
    fn = cuda.compile(graph)
    dev = [cd.to_device(p) for p in params]
    first = fn([cd.to_device(inputs[0])], dev)
    second = fn([cd.to_device(inputs[0] * 2)], dev)
    want = reference.run_graph(graph, [inputs[0] * 2], params)
    np.testing.assert_allclose(cd.to_host(second[0]), want[0], rtol=1e-4, atol=1e-5)
    assert first[0] is not second[0]
    assert not fn.capturable  # no CUDA graphs under the simulator
    with pytest.raises(EmberError, match="expects"):
        fn([cd.to_device(inputs[0][:, :3])], dev)


# ---- on a real device (pytest -m gpu) --------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gpu_cublas_and_tiled_gemm_agree_with_numpy(ta, tb, dtype):
    from ember.backends import cuda_blas
    from ember.backends import cuda_device as cd
    z, m, n, k = 3, 67, 45, 130
    a = _rand((z, k, m) if ta else (z, m, k), 1, dtype)
    b = _rand((z, n, k) if tb else (z, k, n), 2, dtype)
    want = np.matmul(a.swapaxes(1, 2) if ta else a, b.swapaxes(1, 2) if tb else b)
    stream = cd.stream()
    for fn in (cuda_blas.cublas_gemm(ta, tb, dtype, stream),
               cuda_blas.tiled_gemm(ta, tb, dtype, stream, False)):
        assert fn is not None
        c = cd.empty((z, m, n), dtype)
        fn(cd.to_device(a), cd.to_device(b), c)
        np.testing.assert_allclose(cd.to_host(c), want, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_gpu_mlp_step_larger_shapes():
    from ember.passes import run_pipeline
    graph, (inputs, params) = _mlp(batch=256, n_in=784, hidden=256, classes=10)
    joint = run_pipeline(graph, grad=True, head_grads="ones")
    report = check(joint, inputs, params, expect_kinds=("gemm[cublas]",), rtol=1e-3,
                   atol=1e-4)
    _no_fallback(report)
