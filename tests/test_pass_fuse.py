"""The fuse pass: one before/expected IR test per fusion rule, and semantics kept on
hypothesis-generated graphs (the fused graph run by the reference backend equals the
unfused one)."""
import dataclasses

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from ember.backends.reference import run_graph
from ember.ir.emit import F, Sym
from ember.ir.fused import interpret, is_fused
from ember.ir.graph import Graph, Value, topo_nodes
from ember.ir.ops import get_op
from ember.ir.printer import parse_graph, print_graph
from ember.ir.types import TensorType
from ember.ir.verify import verify
from ember.passes.autodiff import autodiff
from ember.passes.fuse import fuse, node_pattern


def fused(text: str, **options) -> str:
    graph = fuse(parse_graph(text), **options)
    verify(graph)
    return print_graph(graph, meta=False)


def check(before: str, expected: str, **options) -> None:
    got = fused(before, **options)
    assert got == expected.strip() + "\n", got
    assert print_graph(parse_graph(got), meta=False) == got  # the fused text round-trips


# ---- one rule each -------------------------------------------------------------------------
def test_dense_bias_relu_is_one_out_ewise_group():
    check("""
graph g(%x: f32[4,8]) params(%w: f32[16,8], %b: f32[16]) {
  %0 = fully_connected(%x, %w) {num_hidden=16, no_bias=True}
  %1 = add(%0, %b)
  %2 = relu(%1)
  return %2
}""", """
graph g(%x: f32[4,8]) params(%w: f32[16,8], %b: f32[16]) {
  %0: f32[4,16] = fused_fully_connected_add_relu_0(%x, %w, %b) {kind='out_ewise', master=0} \
fused(%x: f32[4,8], %w: f32[16,8], %b: f32[16]) {
    %0: f32[4,16] = fully_connected(%x, %w) {no_bias=True, num_hidden=16}
    %1: f32[4,16] = add(%0, %b)
    %2: f32[4,16] = relu(%1)
    return %2
  }
  return %0
}""")


def test_gemm_master_comes_first_with_side_inputs_in_its_epilogue():
    # relu's backward: dot(g, w) * (y > 0); the mask is computed in the GEMM's epilogue
    check("""
graph g(%g: f32[4,3], %w: f32[3,8], %y: f32[4,8]) {
  %0 = greater_scalar(%y) {scalar=0.0}
  %1 = dot(%g, %w)
  %2 = mul(%1, %0)
  return %2
}""", """
graph g(%g: f32[4,3], %w: f32[3,8], %y: f32[4,8]) {
  %0: f32[4,8] = fused_dot_greater_scalar_mul_0(%g, %w, %y) {kind='out_ewise', master=0} \
fused(%g: f32[4,3], %w: f32[3,8], %y: f32[4,8]) {
    %0: f32[4,8] = dot(%g, %w)
    %1: f32[4,8] = greater_scalar(%y) {scalar=0.0}
    %2: f32[4,8] = mul(%0, %1)
    return %2
  }
  return %0
}""")


def test_elementwise_chain():
    check("""
graph g(%x: f32[4,8]) {
  %0 = exp(%x)
  %1 = mul_scalar(%0) {scalar=2.0}
  %2 = tanh(%1)
  return %2
}""", """
graph g(%x: f32[4,8]) {
  %0: f32[4,8] = fused_exp_mul_scalar_tanh_0(%x) {kind='elemwise', master=-1} fused(%x: f32[4,8]) {
    %0: f32[4,8] = exp(%x)
    %1: f32[4,8] = mul_scalar(%0) {scalar=2.0}
    %2: f32[4,8] = tanh(%1)
    return %2
  }
  return %0
}""")


def test_broadcast_prologue():
    check("""
graph g(%x: f32[4,8], %b: f32[8]) {
  %0 = sigmoid(%b)
  %1 = mul(%x, %0)
  %2 = negative(%1)
  return %2
}""", """
graph g(%x: f32[4,8], %b: f32[8]) {
  %0: f32[4,8] = fused_sigmoid_mul_negative_0(%b, %x) {kind='broadcast', master=-1} fused(%b: \
f32[8], %x: f32[4,8]) {
    %0: f32[8] = sigmoid(%b)
    %1: f32[4,8] = mul(%x, %0)
    %2: f32[4,8] = negative(%1)
    return %2
  }
  return %0
}""")


def test_reduction_prologue_and_epilogue():
    check("""
graph g(%x: f32[4,8]) {
  %0 = square(%x)
  %1 = sum(%0) {axis=1}
  %2 = sqrt(%1)
  return %2
}""", """
graph g(%x: f32[4,8]) {
  %0: f32[4] = fused_square_sum_sqrt_0(%x) {kind='reduce', master=1} fused(%x: f32[4,8]) {
    %0: f32[4,8] = square(%x)
    %1: f32[4] = sum(%0) {axis=1}
    %2: f32[4] = sqrt(%1)
    return %2
  }
  return %0
}""")


def test_injective_ops_join_elementwise_groups():
    check("""
graph g(%x: f32[4,8]) {
  %0 = reshape(%x) {shape=(8,4)}
  %1 = transpose(%0)
  %2 = exp(%1)
  return %2
}""", """
graph g(%x: f32[4,8]) {
  %0: f32[4,8] = fused_reshape_transpose_exp_0(%x) {kind='injective', master=-1} fused(%x: \
f32[4,8]) {
    %0: f32[8,4] = reshape(%x) {shape=(8, 4)}
    %1: f32[4,8] = transpose(%0)
    %2: f32[4,8] = exp(%1)
    return %2
  }
  return %0
}""")


def test_diamond_is_fused_once():
    check("""
graph g(%x: f32[4,8]) {
  %0 = exp(%x)
  %1 = relu(%0)
  %2 = tanh(%0)
  %3 = add(%1, %2)
  return %3
}""", """
graph g(%x: f32[4,8]) {
  %0: f32[4,8] = fused_exp_relu_tanh_add_0(%x) {kind='elemwise', master=-1} fused(%x: f32[4,8]) {
    %0: f32[4,8] = exp(%x)
    %1: f32[4,8] = relu(%0)
    %2: f32[4,8] = tanh(%0)
    %3: f32[4,8] = add(%1, %2)
    return %3
  }
  return %0
}""")


def test_value_with_two_consumers_in_different_groups_is_not_duplicated():
    # exp feeds an elementwise chain and a reduction returned apart: no post-dominator,
    # so it stays alone and is computed once
    check("""
graph g(%x: f32[4,8]) {
  %0 = exp(%x)
  %1 = relu(%0)
  %2 = tanh(%1)
  %3 = sum(%0) {axis=1}
  return %2, %3
}""", """
graph g(%x: f32[4,8]) {
  %0: f32[4,8] = exp(%x)
  %1: f32[4,8] = fused_relu_tanh_0(%0) {kind='elemwise', master=-1} fused(%0: f32[4,8]) {
    %1: f32[4,8] = relu(%0)
    %2: f32[4,8] = tanh(%1)
    return %2
  }
  %2: f32[4] = sum(%0) {axis=1}
  return %1, %2
}""")


def test_opaque_op_breaks_groups():
    check("""
graph g(%x: f32[4,8]) {
  %0 = exp(%x)
  %1 = negative(%0)
  %2 = softmax(%1)
  %3 = tanh(%2)
  %4 = mul_scalar(%3) {scalar=3.0}
  return %4
}""", """
graph g(%x: f32[4,8]) {
  %0: f32[4,8] = fused_exp_negative_0(%x) {kind='elemwise', master=-1} fused(%x: f32[4,8]) {
    %0: f32[4,8] = exp(%x)
    %1: f32[4,8] = negative(%0)
    return %1
  }
  %1: f32[4,8] = softmax(%0)
  %2: f32[4,8] = fused_tanh_mul_scalar_1(%1) {kind='elemwise', master=-1} fused(%0: f32[4,8]) {
    %1: f32[4,8] = tanh(%0)
    %2: f32[4,8] = mul_scalar(%1) {scalar=3.0}
    return %2
  }
  return %2
}""")


def test_group_size_limit():
    check("""
graph g(%x: f32[4,8]) {
  %0 = exp(%x)
  %1 = tanh(%0)
  %2 = sin(%1)
  %3 = cos(%2)
  %4 = relu(%3)
  return %4
}""", """
graph g(%x: f32[4,8]) {
  %0: f32[4,8] = fused_exp_tanh_0(%x) {kind='elemwise', master=-1} fused(%x: f32[4,8]) {
    %0: f32[4,8] = exp(%x)
    %1: f32[4,8] = tanh(%0)
    return %1
  }
  %1: f32[4,8] = fused_sin_cos_1(%0) {kind='elemwise', master=-1} fused(%0: f32[4,8]) {
    %1: f32[4,8] = sin(%0)
    %2: f32[4,8] = cos(%1)
    return %2
  }
  %2: f32[4,8] = relu(%1)
  return %2
}""", max_group_size=2)


def test_argument_count_limit():
    check("""
graph g(%x: f32[4], %y: f32[4], %z: f32[4], %w: f32[4]) {
  %0 = add(%x, %y)
  %1 = add(%0, %z)
  %2 = add(%1, %w)
  return %2
}""", """
graph g(%x: f32[4], %y: f32[4], %z: f32[4], %w: f32[4]) {
  %0: f32[4] = fused_add_add_0(%x, %y, %z) {kind='elemwise', master=-1} fused(%x: f32[4], %y: \
f32[4], %z: f32[4]) {
    %0: f32[4] = add(%x, %y)
    %1: f32[4] = add(%0, %z)
    return %1
  }
  %1: f32[4] = add(%0, %w)
  return %1
}""", max_args=3)


def test_softmax_cross_entropy_and_its_gradient_are_composites():
    check("""
graph loss(%z: f32[4,3], %label: f32[4], %g: f32[4,1]) {
  %0 = log_softmax(%z)
  %1 = pick(%0, %label) {keepdims=True}
  %2 = negative(%1)
  %3 = pick_backward(%g, %label, %0) {keepdims=True}
  %4 = exp(%0)
  %5 = sum(%3) {axis=-1, keepdims=True}
  %6 = mul(%4, %5)
  %7 = sub(%3, %6)
  %8 = mul_scalar(%7) {scalar=0.5}
  return %2, %8
}""", """
graph loss(%z: f32[4,3], %label: f32[4], %g: f32[4,1]) {
  %0: f32[4,3], %1: f32[4,1] = fused_log_softmax_pick_negative_0(%z, %label) \
{kind='softmax_xent', master=0} fused(%z: f32[4,3], %label: f32[4]) {
    %0: f32[4,3] = log_softmax(%z)
    %1: f32[4,1] = pick(%0, %label) {keepdims=True}
    %2: f32[4,1] = negative(%1)
    return %0, %2
  }
  %2: f32[4,3] = fused_pick_backward_exp_sum_mul_sub_mul_scalar_1(%g, %label, %0) \
{kind='softmax_xent_grad', master=2} fused(%g: f32[4,1], %label: f32[4], %0: f32[4,3]) {
    %1: f32[4,3] = pick_backward(%g, %label, %0) {keepdims=True}
    %2: f32[4,3] = exp(%0)
    %3: f32[4,1] = sum(%1) {axis=-1, keepdims=True}
    %4: f32[4,3] = mul(%2, %3)
    %5: f32[4,3] = sub(%1, %4)
    %6: f32[4,3] = mul_scalar(%5) {scalar=0.5}
    return %6
  }
  return %1, %2
}""")


def test_side_effects_and_randomness_are_never_fused():
    check("""
graph g(%w: f32[4], %g: f32[4], %m: f32[4]) {
  %0 = exp(%g)
  %1 = sgd_mom_update(%w, %0, %m) {lr=0.1, momentum=0.9}
  %2 = negative(%1)
  return %2
}""", """
graph g(%w: f32[4], %g: f32[4], %m: f32[4]) {
  %0: f32[4] = exp(%g)
  %1: f32[4] = sgd_mom_update(%w, %0, %m) {lr=0.1, momentum=0.9}
  %2: f32[4] = negative(%1)
  return %2
}""")
    graph = parse_graph("graph g(%x: f32[4]) {\n  %0 = exp(%x)\n  return %0\n}")
    node = graph.nodes[0]
    assert node_pattern(node) == get_op("exp").kind.value
    node.op = dataclasses.replace(get_op("exp"), random=True)
    assert node_pattern(node) == get_op("softmax").kind.value  # OPAQUE


def test_interpret_runs_a_body_with_the_reference_kernels():
    graph = fuse(parse_graph("""
graph g(%x: f32[2,3]) params(%w: f32[4,3], %b: f32[4]) {
  %0 = fully_connected(%x, %w, %b) {num_hidden=4}
  %1 = relu(%0)
  return %1
}"""))
    (node,) = graph.nodes
    rng = np.random.default_rng(1)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((2, 3), (4, 3), (4,)))
    (y,) = interpret(node.body, [x, w, b])
    np.testing.assert_allclose(y, np.maximum(x @ w.T + b, 0), rtol=1e-6)


# ---- the seed MLP training step --------------------------------------------------------------
def mlp_train_step(batch: int = 128) -> Graph:
    """784-256-10 MLP, relu, log_softmax + pick cross-entropy, SGD on its 4 parameters."""
    x = Value(TensorType((batch, 784)), name_hint="x")
    label = Value(TensorType((batch,)), name_hint="label")
    params = [Value(TensorType(s), name_hint=n) for n, s in
              (("w1", (256, 784)), ("b1", (256,)), ("w2", (10, 256)), ("b2", (10,)))]
    w1, b1, w2, b2 = (Sym(p) for p in params)
    h = F.relu(F.fully_connected(Sym(x), w1, b1, num_hidden=256))
    logits = F.fully_connected(h, w2, b2, num_hidden=10)
    nll = -F.pick(F.log_softmax(logits, axis=-1), Sym(label), axis=-1, keepdims=True)
    loss = F.mean(F.mean(nll, axis=0, exclude=True))._value
    fwd = Graph("mlp", [x, label], params, topo_nodes([loss]), [loss])
    joint = autodiff(fwd, wrt=params, head_grads="ones")
    new = [F.sgd_update(Sym(w), Sym(g), lr=0.1)._value
           for w, g in zip(params, joint.outputs[1:])]
    outs = [loss, *new]
    return Graph("train_step", [x, label], params, topo_nodes(outs), outs)


def mlp_arrays(graph: Graph, seed: int = 0):
    rng = np.random.default_rng(seed)
    n = graph.inputs[0].type.shape[0]
    x = rng.standard_normal((n, 784)).astype(np.float32)
    label = rng.integers(0, 10, n).astype(np.float32)
    params = [(rng.standard_normal(p.type.shape) * 0.05).astype(np.float32)
              for p in graph.params]
    return [x, label], params


def test_mlp_training_step_fuses_and_keeps_its_numbers():
    graph = mlp_train_step(16)
    out = fuse(graph)
    verify(out)
    kinds = sorted(n.attr_dict["kind"] for n in out.nodes if is_fused(n))
    assert kinds == ["injective", "out_ewise", "out_ewise", "softmax_xent",
                     "softmax_xent_grad"]
    names = [n.name for n in out.nodes if is_fused(n)]
    assert names[0] == "fused_fully_connected_relu_0"
    inputs, params = mlp_arrays(graph)
    want = run_graph(graph, inputs, [p.copy() for p in params])
    got = run_graph(out, inputs, [p.copy() for p in params])
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)


# ---- semantics on generated graphs -------------------------------------------------------------
UNARY = ("relu", "tanh", "sigmoid", "negative", "abs", "square", "sin")


@st.composite
def random_graphs(draw):
    """Stacks of elementwise, broadcast, dense, injective, reduce and opaque ops."""
    rows, cols = draw(st.integers(1, 3)), draw(st.integers(2, 5))
    x = Value(TensorType((rows, cols)), name_hint="x")
    params: list[Value] = []

    def param(shape):
        p = Value(TensorType(shape), name_hint=f"p{len(params)}")
        params.append(p)
        return Sym(p)

    vals = [Sym(x)]
    for _ in range(draw(st.integers(1, 12))):
        a = draw(st.sampled_from(vals))
        kind = draw(st.sampled_from(["unary", "unary", "binary", "bias", "dense", "sum",
                                     "transpose", "softmax", "scalar"]))
        if kind == "unary":
            v = getattr(F, draw(st.sampled_from(UNARY)))(a)
        elif kind == "binary":
            fits = [b for b in vals if len(b.shape) == len(a.shape) and all(
                p == q or q == 1 for p, q in zip(a.shape, b.shape))]
            b = draw(st.sampled_from(fits))
            v = getattr(F, draw(st.sampled_from(["add", "mul", "sub", "maximum"])))(a, b)
        elif kind == "bias":
            v = a + param((a.shape[-1],))
        elif kind == "dense":
            k = draw(st.integers(1, 4))
            v = F.fully_connected(a, param((k, a.shape[-1])), param((k,)), num_hidden=k)
        elif kind == "sum":
            v = F.sum(a, axis=len(a.shape) - 1, keepdims=True)
        elif kind == "transpose":
            v = F.transpose(a)
        elif kind == "softmax":
            v = F.softmax(a, axis=-1)
        else:
            v = a * draw(st.sampled_from([0.5, -2.0]))
        vals.append(v)
    extra = draw(st.lists(st.sampled_from(vals[1:]), max_size=2))
    outs = [vals[-1]._value] + [v._value for v in extra]
    return Graph("random", [x], params, topo_nodes(outs), outs)


def random_arrays(graph: Graph, seed: int):
    rng = np.random.default_rng(seed)
    return ([rng.standard_normal(v.type.shape).astype(np.float32) for v in graph.inputs],
            [rng.standard_normal(v.type.shape).astype(np.float32) for v in graph.params])


@given(random_graphs(), st.integers(2, 6), st.integers(0, 2**16))
def test_fusion_keeps_semantics(graph, max_size, seed):
    out = fuse(graph, max_group_size=max_size)
    verify(out)
    inputs, params = random_arrays(graph, seed)
    want = run_graph(graph, inputs, params)
    got = run_graph(out, inputs, params)
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)
    n_grouped = 0
    for n in out.nodes:
        if is_fused(n):
            assert 2 <= len(n.body.nodes) <= max_size
            assert len(n.outputs) == 1  # TVM groups have one root
            n_grouped += len(n.body.nodes)
    assert len(out.nodes) - sum(is_fused(n) for n in out.nodes) + n_grouped == len(graph.nodes)
    assert out.meta["fused_groups"] == sum(is_fused(n) for n in out.nodes)
    again = fuse(out, max_group_size=max_size)  # fused nodes are opaque: nothing changes
    assert print_graph(again, meta=False) == print_graph(out, meta=False)
