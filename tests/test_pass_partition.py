"""``split_forward_backward``: which values cross from the forward to the backward graph,
and the cheap elementwise nodes the backward recomputes instead of storing."""
from __future__ import annotations

import textwrap

import numpy as np
from test_pass_simplify import evaluate

from ember.ir.printer import parse_graph, print_graph
from ember.ir.verify import verify
from ember.passes.partition import split_forward_backward


def split(joint: str, n_out: int, n_heads: int):
    g = parse_graph(textwrap.dedent(joint))
    fwd, bwd, res = split_forward_backward(g, n_out, g.inputs[len(g.inputs) - n_heads:])
    verify(fwd)
    verify(bwd)
    return g, fwd, bwd, res


RELU = """\
    graph j(%x: f32[4], %g: f32[4]) params(%w: f32[4]) {
      %0: f32[4] = mul(%x, %w)
      %1: f32[4] = relu(%0)
      %2: f32[4] = greater_scalar(%1) {scalar=0}
      %3: f32[4] = minimum_scalar(%1) {scalar=0.0}
      %4: f32[4] = mul(%g, %2)
      %5: f32[4] = add(%4, %3)
      %6: f32[4] = mul(%5, %x)
      return %1, %6
    }
    """


def test_relu_masks_are_recomputed_from_the_output_not_stored():
    _, fwd, bwd, res = split(RELU, 1, 1)
    assert print_graph(fwd) == textwrap.dedent("""\
        graph j_forward(%x: f32[4]) params(%w: f32[4]) {
          %0: f32[4] = mul(%x, %w)
          %1: f32[4] = relu(%0)
          return %1, %1, %x
        }
        # meta: n_outputs=1
        # meta: n_residuals=2
        """)
    assert print_graph(bwd) == textwrap.dedent("""\
        graph j_backward(%residual0: f32[4], %residual1: f32[4], %g: f32[4]) params(%w: f32[4]) {
          %0: f32[4] = greater_scalar(%residual0) {scalar=0}
          %1: f32[4] = minimum_scalar(%residual0) {scalar=0.0}
          %2: f32[4] = mul(%g, %0)
          %3: f32[4] = add(%2, %1)
          %4: f32[4] = mul(%3, %residual1)
          return %4
        }
        # meta: n_residuals=2
        """)
    assert len(res) == 2


def test_the_split_graphs_compute_what_the_joint_graph_does():
    joint, fwd, bwd, _ = split(RELU, 1, 1)
    x = np.array([-1.0, 0.0, 2.0, np.nan], np.float32)
    w = np.array([1.0, 3.0, -2.0, 1.0], np.float32)
    g = np.array([0.5, 1.0, 2.0, 3.0], np.float32)
    want = evaluate(joint, [x, g, w])
    f = evaluate(fwd, [x, w])
    b = evaluate(bwd, f[1:] + [g, w])
    np.testing.assert_array_equal(f[0], want[0])
    np.testing.assert_array_equal(b[0], want[1])  # NaN where the joint graph has NaN


def test_a_node_stays_when_recomputing_it_would_store_more():
    # add(%0, %1) of two values no backward node reads: two residuals instead of one
    _, fwd, bwd, res = split("""\
        graph j(%x: f32[4], %y: f32[4], %g: f32[4]) {
          %0: f32[4] = exp(%x)
          %1: f32[4] = exp(%y)
          %2: f32[4] = add(%0, %1)
          %3: f32[4] = mul(%g, %2)
          return %0, %3
        }
        """, 1, 1)
    assert [v.producer.op.name for v in res] == ["add"]
    assert [n.op.name for n in bwd.nodes] == ["mul"]


def test_a_node_the_forward_also_reads_is_not_moved():
    _, fwd, bwd, res = split("""\
        graph j(%x: f32[4], %g: f32[4]) {
          %0: f32[4] = negative(%x)
          %1: f32[4] = exp(%0)
          %2: f32[4] = mul(%g, %0)
          return %1, %2
        }
        """, 1, 1)
    assert [n.op.name for n in fwd.nodes] == ["negative", "exp"]
    assert [v.producer.op.name for v in res] == ["negative"]
