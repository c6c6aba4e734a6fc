"""The plan_memory pass: no two live values overlap, lower_bound <= arena <= naive, in-place
reuse on elementwise chains, and the seed MLP training step's arena near its lower bound."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_pass_fuse import mlp_arrays, mlp_train_step, random_arrays, random_graphs

from ember.backends.reference import run_graph
from ember.ir.errors import EmberError
from ember.ir.fused import inplace_pairs
from ember.ir.graph import Graph
from ember.ir.printer import parse_graph, print_graph
from ember.ir.verify import verify
from ember.passes import plan_memory as plan_memory_module
from ember.passes.fuse import fuse
from ember.passes.plan_memory import held_inputs, plan_memory


def check_plan(graph: Graph, alignment: int = 64) -> None:
    """Every node output placed, aligned, inside the arena, except graph outputs and mutated
    values (never placed); values live at one same step never overlap unless the node at that
    step computes one in place of the other."""
    first, last, step_of = {}, {}, {}
    apart = {id(v) for v in graph.outputs} | {
        id(n.inputs[i]) for n in graph.nodes for i in n.op.mutated(n.attr_dict)}
    for i, n in enumerate(graph.nodes):
        for o in n.outputs:
            if id(o) in apart:
                assert o.mem is None
                continue
            first[o] = last[o] = i
            step_of[o] = n
        for v in n.inputs:
            if v in first:
                last[v] = i
    for v in (*graph.inputs, *graph.params):
        assert v.mem is None
    arena = graph.meta["arena_bytes"]
    for v in first:
        assert v.mem is not None and v.mem[0] == "arena"
        assert v.mem[1] % alignment == 0 and v.mem[1] + v.type.nbytes <= arena
    values = list(first)
    for i, u in enumerate(values):
        for v in values[i + 1:]:
            if last[u] < first[v] or last[v] < first[u]:
                continue  # never live together
            lo_u, lo_v = u.mem[1], v.mem[1]
            if lo_u + u.type.nbytes <= lo_v or lo_v + v.type.nbytes <= lo_u:
                continue  # apart
            node = step_of[v]
            pairs = inplace_pairs(node)
            shared = lo_u == lo_v and last[u] == first[v] and any(
                node.inputs[a] is u and node.outputs[b] is v for a, b in pairs)
            assert shared, f"{u} and {v} overlap while both live"


def planned(text: str, **options) -> Graph:
    before = parse_graph(text)
    graph = plan_memory(before, **options)
    check_plan(graph, options.get("alignment", 64))
    assert all(o.mem is None for n in before.nodes for o in n.outputs)  # a copy is planned
    return graph


def test_inplace_reuse_along_an_elementwise_chain():
    graph = planned("""
graph g(%x: f32[4,8]) {
  %0 = softmax(%x)
  %1 = exp(%0)
  %2 = tanh(%1)
  %3 = negative(%2)
  return %3
}""")
    assert print_graph(graph, meta=False) == """\
graph g(%x: f32[4,8]) {
  %0: f32[4,8] @arena+0 = softmax(%x)
  %1: f32[4,8] @arena+0 = exp(%0)
  %2: f32[4,8] @arena+0 = tanh(%1)
  %3: f32[4,8] = negative(%2)
  return %3
}
"""
    assert graph.meta["inplace_reuses"] == 2
    assert graph.meta["arena_bytes"] == graph.meta["lower_bound_bytes"] == 128
    assert graph.meta["naive_bytes"] == 3 * 128


def test_graph_outputs_are_not_planned_and_leave_the_arena_to_the_rest():
    """A training forward keeps many outputs for the backward; the backends give them arrays
    of their own. Planned, each held a slot to the end and each short-lived value went above
    all of them (%1 at +128, %3 at +384: the arena grew with every layer); now they share
    one place."""
    graph = planned("""
graph g(%x: f32[4,8]) {
  %0 = softmax(%x)
  %1 = negative(%0)
  %2 = exp(%1)
  %3 = negative(%2)
  %4 = exp(%3)
  return %0, %2, %4
}""")
    assert print_graph(graph, meta=False) == """\
graph g(%x: f32[4,8]) {
  %0: f32[4,8] = softmax(%x)
  %1: f32[4,8] @arena+0 = negative(%0)
  %2: f32[4,8] = exp(%1)
  %3: f32[4,8] @arena+0 = negative(%2)
  %4: f32[4,8] = exp(%3)
  return %0, %2, %4
}
"""
    assert graph.meta["arena_bytes"] == graph.meta["lower_bound_bytes"] == 128


def test_no_inplace_while_the_input_is_still_read():
    graph = planned("""
graph g(%x: f32[4,8]) {
  %0 = softmax(%x)
  %1 = exp(%0)
  %2 = add(%1, %0)
  %3 = negative(%2)
  return %3
}""")
    ops = {n.op.name: n for n in graph.nodes}
    assert ops["exp"].outputs[0].mem != ops["softmax"].outputs[0].mem  # %0 read again later
    assert ops["add"].outputs[0].mem in (ops["exp"].outputs[0].mem,
                                         ops["softmax"].outputs[0].mem)
    assert ops["negative"].outputs[0].mem is None  # a graph output: the backend's own array
    assert graph.meta["inplace_reuses"] == 1


def test_fused_elementwise_groups_reuse_in_place_and_gemm_groups_do_not():
    graph = fuse(parse_graph("""
graph g(%x: f32[4,8]) params(%w: f32[8,8]) {
  %0 = softmax(%x)
  %1 = exp(%0)
  %2 = tanh(%1)
  %3 = softmax(%2)
  %4 = dot(%3, %w)
  %5 = relu(%4)
  %6 = add(%5, %3)
  return %6
}"""))
    graph = plan_memory(graph)
    check_plan(graph)
    kinds = [n.attr_dict.get("kind") for n in graph.nodes]
    assert kinds == [None, "elemwise", None, "out_ewise"]
    soft, ew, soft2, gemm = graph.nodes
    assert ew.outputs[0].mem == soft.outputs[0].mem
    assert gemm.outputs[0].mem != soft2.outputs[0].mem  # the GEMM would clobber its epilogue
    assert inplace_pairs(gemm) == ()


def test_greedy_by_size_places_the_largest_first():
    graph = planned("""
graph g(%x: f32[16,16]) {
  %0 = softmax(%x)
  %1 = sum(%0) {axis=1, keepdims=True}
  %2 = sub(%0, %1)
  %3 = sum(%2) {axis=0}
  %4 = softmax(%x)
  %5 = mul(%4, %3)
  return %5
}""")
    # 1 KiB tensors %0 %2 %4 %5 (%2 in place of %0, %5 of %4), 64-byte %1 and %3
    assert print_graph(graph, meta=False) == """\
graph g(%x: f32[16,16]) {
  %0: f32[16,16] @arena+0 = softmax(%x)
  %1: f32[16,1] @arena+1024 = sum(%0) {axis=1, keepdims=True}
  %2: f32[16,16] @arena+0 = sub(%0, %1)
  %3: f32[16] @arena+1024 = sum(%2) {axis=0}
  %4: f32[16,16] @arena+0 = softmax(%x)
  %5: f32[16,16] = mul(%4, %3)
  return %5
}
"""
    m = graph.meta
    assert (m["lower_bound_bytes"], m["arena_bytes"], m["naive_bytes"]) == (1088, 1088, 3200)


def test_alignment_option_and_errors():
    graph = planned("""
graph g(%x: f32[3]) {
  %0 = softmax(%x)
  %1 = sum(%0) {keepdims=True}
  %2 = add(%0, %1)
  return %2
}""", alignment=128)
    assert all(n.outputs[0].mem[1] % 128 == 0 for n in graph.nodes[:-1])
    with pytest.raises(EmberError, match="power of two"):
        plan_memory(graph, alignment=48)
    unknown = parse_graph("graph g(%x: f32[?,3]) {\n  %0: f32[?,3] = exp(%x)\n"
                          "  %1: f32[?,3] = negative(%0)\n  return %1\n}")
    with pytest.raises(EmberError, match="unknown shape"):
        plan_memory(unknown)


@given(random_graphs(), st.booleans(), st.integers(0, 2**16))
def test_plans_are_valid_on_generated_graphs(graph, fused, seed):
    if fused:
        graph = fuse(graph, max_group_size=4)
    out = plan_memory(graph)
    verify(out)
    check_plan(out)
    m = out.meta
    assert m["lower_bound_bytes"] <= m["arena_bytes"] <= m["naive_bytes"]
    inputs, params = random_arrays(graph, seed)
    for a, b in zip(run_graph(graph, inputs, params), run_graph(out, inputs, params)):
        np.testing.assert_array_equal(a, b)


def test_seed_mlp_training_step_arena_is_near_its_lower_bound():
    graph = plan_memory(fuse(mlp_train_step(128)))
    check_plan(graph)
    m = graph.meta
    assert m["lower_bound_bytes"] <= m["arena_bytes"] <= m["naive_bytes"]
    assert m["arena_bytes"] / m["lower_bound_bytes"] <= 1.15
    # the figures: the largest live set is w1's gradient and its update (2 x 784 KiB)
    # plus the hidden activations (128 KiB) and small tensors
    assert m["arena_bytes"] < m["naive_bytes"]
    inputs, params = mlp_arrays(graph)
    loss = run_graph(graph, inputs, params)[0]
    assert np.isfinite(loss).all()


_DW_PW = """
graph g(%x: f32[2,4,6,6], %y: f32[2,4,6,6]) params(%wd: f32[4,1,3,3], %wp: f32[8,4,1,1]) {{
  %0 = relu(%x)
  %1 = convolution(%0, %wd) {{kernel=(3,3), pad=(1,1), num_filter=4, num_group=4, no_bias=True}}
  %2 = exp(%y)
  %3 = convolution(%1, %wp) {{kernel=(1,1), stride={stride}, num_filter=8, no_bias=True}}
  %4 = sum(%2)
  %5 = mul(%3, %4)
  return %5{extra}
}}"""


def test_a_depthwise_convolutions_inputs_live_until_the_1x1_that_alone_reads_it():
    """``held_inputs``: %0 stays live until %3, which therefore does not take its place (it
    did: both at +0), so that a backend may run %1 at %3's step (the CPU backend does)."""
    graph = planned(_DW_PW.format(stride="(1,1)", extra=""))
    assert print_graph(graph, meta=False) == """\
graph g(%x: f32[2,4,6,6], %y: f32[2,4,6,6]) params(%wd: f32[4,1,3,3], %wp: f32[8,4,1,1]) {
  %0: f32[2,4,6,6] @arena+2304 = relu(%x)
  %1: f32[2,4,6,6] @arena+3456 = convolution(%0, %wd) {kernel=(3, 3), no_bias=True, \
num_filter=4, num_group=4, pad=(1, 1)}
  %2: f32[2,4,6,6] @arena+4608 = exp(%y)
  %3: f32[2,8,6,6] @arena+0 = convolution(%1, %wp) {kernel=(1, 1), no_bias=True, \
num_filter=8, stride=(1, 1)}
  %4: f32[1] @arena+2304 = sum(%2)
  %5: f32[2,8,6,6] = mul(%3, %4)
  return %5
}
"""
    zero, conv_dw = graph.nodes[0].outputs[0], graph.nodes[1]
    assert held_inputs(graph) == {id(zero): 3, id(conv_dw.inputs[1]): 3}


@pytest.mark.parametrize("stride, extra", [("(2,2)", ""), ("(1,1)", ", %1")])
def test_no_inputs_held_for_a_strided_1x1_or_a_second_reader(stride, extra, monkeypatch):
    text = _DW_PW.format(stride=stride, extra=extra)
    graph = planned(text)
    assert held_inputs(graph) == {}
    monkeypatch.setattr(plan_memory_module, "held_inputs", lambda graph: {})
    assert print_graph(graph, meta=False) == print_graph(planned(text), meta=False)


def test_a_conv_stacks_training_arenas_hold_one_or_two_activations_not_every_layers():
    """Eight conv + BatchNorm + relu layers trained hybridized: the forward's arena holds one
    BatchNorm output at a time (16 before: the outputs kept for the backward were planned
    too), the backward's two data gradients (9 before: every layer's lived until its weight
    gradient, all emitted at the end)."""
    from ember import autograd, nd
    from ember.gluon import nn
    net = nn.HybridSequential()
    for _ in range(8):
        net.add(nn.Conv2D(8, 3, padding=1, use_bias=False), nn.BatchNorm(), nn.Activation("relu"))
    net.initialize()
    net.hybridize(backend="reference")
    x = nd.random.uniform(shape=(2, 8, 16, 16))
    with autograd.record():
        y = net(x)
    y.backward()
    variant, = next(iter(net._cached.values()))._variants.values()
    act = x.size * 4
    for program, most in ((variant.forward, 1), (variant.backward, 2)):
        check_plan(program.graph)
        assert program.graph.meta["arena_bytes"] <= most * act, program.graph.name
