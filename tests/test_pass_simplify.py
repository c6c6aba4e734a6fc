"""simplify: one before / expected IR test per rewrite, a numeric property test, and the
pass pipeline (registry, verification, timing, EMBER_DUMP)."""
import textwrap

import numpy as np
import pytest
from hypothesis import given
from test_printer import elementwise_stack, mlp

from ember.ir.errors import EmberError
from ember.ir.graph import Graph
from ember.ir.printer import parse_graph, print_graph
from ember.ir.types import TensorType as T
from ember.ir.verify import verify
from ember.passes import PIPELINE, pipeline, register_pass, registered_passes, run_pipeline
from ember.passes.infer_shapes import infer_shapes
from ember.passes.simplify import simplify


def check(before: str, expected: str, **options):
    g = parse_graph(textwrap.dedent(before))
    out = simplify(g, **options)
    verify(out)
    assert print_graph(out) == textwrap.dedent(expected)
    return out


def evaluate(g: Graph, arrays):
    """Run ``g`` node by node with the ops' NumPy kernels (the reference semantics)."""
    env = {id(v): a for v, a in zip(g.inputs + g.params, arrays)}
    for n in g.nodes:
        res = n.op.compute([env[id(v)] for v in n.inputs], n.attr_dict)
        res = res if isinstance(res, tuple | list) else (res,)
        env.update((id(o), np.asarray(r)) for o, r in zip(n.outputs, res))
    return [env[id(v)] for v in g.outputs]


def test_dead_code_goes_but_side_effects_and_draws_stay():
    check("""\
        graph g(%x: f32[2,3]) params(%m: f32[3], %v: f32[3]) {
          %0: f32[2,3] = relu(%x)
          %1: f32[2,3] = exp(%0)
          %2: f32[4] = random_uniform() {shape=(4,)}
          %3: f32[2,3] = batch_norm(%x, %m, %v, %m, %v) {is_train=True}
          return %0
        }
        """, """\
        graph g(%x: f32[2,3]) params(%m: f32[3], %v: f32[3]) {
          %0: f32[2,3] = relu(%x)
          %1: f32[4] = random_uniform() {shape=(4,)}
          %2: f32[2,3] = batch_norm(%x, %m, %v, %m, %v) {is_train=True}
          return %0
        }
        """)


def test_common_subexpressions_merge_but_random_ops_do_not():
    check("""\
        graph g(%x: f32[2,3]) {
          %0: f32[2,3] = relu(%x)
          %1: f32[2,3] = relu(%x)
          %2: f32[2,1] = sum(%0) {axis=1, keepdims=True}
          %3: f32[2,1] = sum(%1) {axis=1, keepdims=True}
          %4: f32[1,3] = sum(%1) {axis=0, keepdims=True}
          %5: f32[2,3], %6: f32[2,3] = dropout(%x) {is_train=True}
          %7: f32[2,3], %8: f32[2,3] = dropout(%x) {is_train=True}
          return %2, %3, %4, %5, %7
        }
        """, """\
        graph g(%x: f32[2,3]) {
          %0: f32[2,3] = relu(%x)
          %1: f32[2,1] = sum(%0) {axis=1, keepdims=True}
          %2: f32[1,3] = sum(%0) {axis=0, keepdims=True}
          %3: f32[2,3], %4: f32[2,3] = dropout(%x) {is_train=True}
          %5: f32[2,3], %6: f32[2,3] = dropout(%x) {is_train=True}
          return %1, %1, %2, %3, %5
        }
        """)


def test_constant_folding_keeps_uniform_results_as_full():
    check("""\
        graph g(%x: f32[3]) {
          %0: f32[3] = zeros() {shape=(3,)}
          %1: f32[3] = add_scalar(%0) {scalar=2.5}
          %2: f32[3] = ones() {shape=(3,)}
          %3: f32[3] = elemwise_mul(%1, %2)
          %4: f32[3] = arange() {stop=3.0}
          %5: f32[3] = mul_scalar(%4) {scalar=2.0}
          %6: f32[3] = zeros_like(%x)
          %7: i32[3] = cast(%3) {dtype='int32'}
          return %3, %5, %6, %7
        }
        """, """\
        graph g(%x: f32[3]) {
          %0: f32[3] = full() {shape=(3,), value=2.5}
          %1: f32[3] = arange() {stop=3.0}
          %2: f32[3] = mul_scalar(%1) {scalar=2.0}
          %3: f32[3] = full() {shape=(3,)}
          %4: i32[3] = full() {dtype='int32', shape=(3,), value=2}
          return %0, %2, %3, %4
        }
        """)


def test_scalar_identities_but_not_times_zero():
    check("""\
        graph g(%x: f32[2]) {
          %0: f32[2] = mul_scalar(%x) {scalar=1.0}
          %1: f32[2] = add_scalar(%0) {scalar=0}
          %2: f32[2] = sub_scalar(%1) {scalar=0.0}
          %3: f32[2] = div_scalar(%2) {scalar=1}
          %4: f32[2] = power_scalar(%3) {scalar=1.0}
          %5: f32[2] = mul_scalar(%4) {scalar=0.0}
          %6: f32[2] = rsub_scalar(%4) {scalar=0.0}
          %7: f32[2] = elemwise_add(%5, %6)
          return %7
        }
        """, """\
        graph g(%x: f32[2]) {
          %0: f32[2] = mul_scalar(%x) {scalar=0.0}
          %1: f32[2] = rsub_scalar(%x) {scalar=0.0}
          %2: f32[2] = elemwise_add(%0, %1)
          return %2
        }
        """)


def test_reshape_of_reshape_is_one_reshape():
    check("""\
        graph g(%x: f32[2,3,4]) {
          %0: f32[6,4] = reshape(%x) {shape=(-1, 4)}
          %1: f32[24] = reshape(%0) {shape=(-1,)}
          %2: f32[4,6] = reshape(%1) {shape=(4, 0)}
          %3: f32[2,3,4] = reshape(%x) {shape=(0, 0, 0)}
          %4: f32[2,3,4] = exp(%3)
          return %2, %4
        }
        """, """\
        graph g(%x: f32[2,3,4]) {
          %0: f32[4,6] = reshape(%x) {shape=(4, 6)}
          %1: f32[2,3,4] = exp(%x)
          return %0, %1
        }
        """)


def test_same_shape_broadcasts_and_sum_like_go():
    # the residual-add gradient: sum_like(g, y) of equal shapes kept y alive for its shape;
    # an output may not become an input (%4 stays)
    check("""\
        graph g(%x: f32[2,3], %y: f32[2,3], %b: f32[1,3]) {
          %0: f32[2,3] = sum_like(%x, %y)
          %1: f32[1,3] = sum_like(%x, %b)
          %2: f32[2,3] = broadcast_to(%y) {shape=(2, 3)}
          %3: f32[2,3] = broadcast_like(%b, %x)
          %4: f32[2,3] = broadcast_like(%y, %x)
          %5: f32[2,3] = elemwise_add(%0, %2)
          return %5, %1, %3, %4
        }
        """, """\
        graph g(%x: f32[2,3], %y: f32[2,3], %b: f32[1,3]) {
          %0: f32[1,3] = sum_like(%x, %b)
          %1: f32[2,3] = broadcast_like(%b, %x)
          %2: f32[2,3] = broadcast_like(%y, %x)
          %3: f32[2,3] = elemwise_add(%x, %y)
          return %3, %0, %1, %2
        }
        """)


def test_transpose_of_transpose_composes():
    check("""\
        graph g(%x: f32[2,3,4]) {
          %0: f32[3,4,2] = transpose(%x) {axes=(1, 2, 0)}
          %1: f32[4,2,3] = transpose(%0) {axes=(1, 2, 0)}
          %2: f32[4,3,2] = transpose(%x)
          %3: f32[2,3,4] = transpose(%2)
          %4: f32[2,3,4] = transpose(%x) {axes=(0, 1, 2)}
          %5: f32[2,3,4] = elemwise_add(%3, %4)
          return %1, %5
        }
        """, """\
        graph g(%x: f32[2,3,4]) {
          %0: f32[4,2,3] = transpose(%x) {axes=(2, 0, 1)}
          %1: f32[2,3,4] = elemwise_add(%x, %x)
          return %0, %1
        }
        """)


def test_identity_goes_stop_gradient_stays_until_asked():
    before = """\
        graph g(%x: f32[2]) {
          %0: f32[2] = _copy(%x)
          %1: f32[2] = BlockGrad(%0)
          %2: f32[2] = exp(%1)
          return %2
        }
        """
    check(before, """\
        graph g(%x: f32[2]) {
          %0: f32[2] = stop_gradient(%x)
          %1: f32[2] = exp(%0)
          return %1
        }
        """)
    check(before, """\
        graph g(%x: f32[2]) {
          %0: f32[2] = exp(%x)
          return %0
        }
        """, keep_stop_gradient=False)


def test_no_alias_where_semantics_forbid():
    """A copy of an input that is returned, or of a value written in place, stays."""
    same = """\
        graph g(%x: f32[2,3]) params(%m: f32[3], %v: f32[3]) {
          %0: f32[2,3] = identity(%x)
          %1: f32[3] = identity(%m)
          %2: f32[3] = mul_scalar(%v)
          %3: f32[2,3] = batch_norm(%x, %m, %v, %m, %v) {is_train=True}
          %4: f32[3] = elemwise_add(%1, %2)
          return %0, %3, %4
        }
        """
    check(same, same)


def test_rewrites_reach_a_fixed_point():
    check("""\
        graph g(%x: f32[2,6]) {
          %0: f32[12] = reshape(%x) {shape=(12,)}
          %1: f32[12] = mul_scalar(%0) {scalar=1}
          %2: f32[3,4] = reshape(%1) {shape=(3, 4)}
          %3: f32[2,6] = reshape(%2) {shape=(2, 6)}
          %4: f32[2,6] = identity(%3)
          %5: f32[2,6] = relu(%4)
          %6: f32[2,6] = relu(%x)
          %7: f32[2,6] = elemwise_sub(%5, %6)
          return %7
        }
        """, """\
        graph g(%x: f32[2,6]) {
          %0: f32[2,6] = relu(%x)
          %1: f32[2,6] = elemwise_sub(%0, %0)
          return %1
        }
        """)


@given(elementwise_stack())
def test_simplify_keeps_the_numbers(g):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(v.type.shape).astype(np.float32) for v in g.inputs]
    out = simplify(g)
    verify(out)
    for a, b in zip(evaluate(g, arrays), evaluate(out, arrays)):
        np.testing.assert_array_equal(a, b)


# ---- the pipeline ---------------------------------------------------------------------------
def test_pipeline_is_one_literal_list():
    assert PIPELINE == ["infer_shapes", "simplify", "autodiff", "infer_shapes", "simplify",
                        "fold_batch_norm", "fuse", "plan_memory"]
    assert pipeline(grad=False) == ["infer_shapes", "simplify", "fold_batch_norm", "fuse",
                                    "plan_memory"]
    assert pipeline(grad=True) == PIPELINE


@given(mlp())
def test_pipeline_runs_verifies_and_times(g):
    g.inputs[0].type = T((g.inputs[0].type.shape[0] or 3, 6))
    out = run_pipeline(g, ["infer_shapes", "simplify"], verify=True)
    assert all(v.type.known for v in out.params)
    assert {"pass_ms.infer_shapes", "pass_ms.simplify"} <= set(out.meta)
    assert print_graph(out, meta=False) == print_graph(simplify(infer_shapes(g)))
    full = run_pipeline(g, verify=True)  # the whole forward pipeline, whatever is registered
    assert all(f"pass_ms.{p}" in full.meta for p in pipeline() if p in registered_passes())
    assert print_graph(parse_graph(print_graph(full))) == print_graph(full)


def test_pipeline_options_reach_the_passes_that_take_them():
    g = parse_graph("graph g(%x: f32[?,2]) {\n  %0: f32[?,2] = identity(%x)\n"
                    "  %1: f32[?,2] = relu(%0)\n  return %1\n}\n")
    with pytest.raises(EmberError, match="is not known"):
        run_pipeline(g, ["infer_shapes"])
    out = run_pipeline(g, ["infer_shapes", "simplify", "infer_shapes"], partial=True)
    assert len(out.nodes) == 1 and out.meta["pass_ms.infer_shapes"] >= 0
    with pytest.raises(EmberError, match="unknown pass 'nope'"):
        run_pipeline(g, ["nope"])


def test_pass_requirements_are_checked():
    @register_pass("test_needs_shapes", requires=("infer_shapes",))
    def needs_shapes(graph: Graph) -> Graph:
        return graph

    g = parse_graph("graph g(%x: f32[2]) {\n  return %x\n}\n")
    with pytest.raises(EmberError, match="test_needs_shapes needs infer_shapes"):
        run_pipeline(g, ["test_needs_shapes"])
    run_pipeline(g, ["infer_shapes", "test_needs_shapes"])
    run_pipeline(run_pipeline(g, ["infer_shapes"]), ["test_needs_shapes"])


def test_dump_prints_the_ir_after_named_passes(monkeypatch, capsys):
    g = parse_graph("graph g(%x: f32[2]) {\n  %0: f32[2] = _copy(%x)\n"
                    "  %1: f32[2] = exp(%0)\n  return %1\n}\n")
    monkeypatch.setenv("EMBER_DUMP", "simplify")
    run_pipeline(g, ["infer_shapes", "simplify"])
    err = capsys.readouterr().err
    assert err.startswith("# ---- IR after pass simplify (")
    assert "infer_shapes (" not in err
    assert "  %0: f32[2] = exp(%x)\n  return %0\n}\n" in err
    monkeypatch.setenv("EMBER_DUMP", "all")
    run_pipeline(g, ["infer_shapes", "simplify"])
    headers = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("# ----")]
    assert [h.split()[5] for h in headers] == ["infer_shapes", "simplify"]
    monkeypatch.delenv("EMBER_DUMP")
    run_pipeline(g, ["simplify"])
    assert capsys.readouterr().err == ""
    run_pipeline(g, ["simplify"], dump="simplify")
    assert "IR after pass simplify" in capsys.readouterr().err
