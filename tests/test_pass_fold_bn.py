"""fold_batch_norm: inference BatchNorm after a convolution becomes a per-channel scale and
shift (before / expected IR), which fuses into the convolution's epilogue; numbers equal the
reference's, training BatchNorm and BatchNorm of other producers stay."""
import textwrap

import numpy as np
from test_pass_simplify import evaluate

from ember.backends import cpu
from ember.ir.printer import parse_graph, print_graph
from ember.ir.verify import verify
from ember.passes import run_pipeline
from ember.passes.fold_bn import fold_batch_norm

BEFORE = """\
    graph g(%x: f32[2,3,5,5]) params(%w: f32[4,3,3,3], %gamma: f32[4], %beta: f32[4], \
%mean: f32[4], %var: f32[4], %c3: f32[3]) {
      %0: f32[2,4,3,3] = convolution(%x, %w) {kernel=(3, 3), no_bias=True, num_filter=4}
      %1: f32[2,4,3,3] = batch_norm(%0, %gamma, %beta, %mean, %var) {eps=1e-05, \
fix_gamma=False}
      %2: f32[2,4,3,3] = relu(%1)
      %3: f32[2,3,5,5] = batch_norm(%x, %c3, %c3, %c3, %c3) {fix_gamma=False}
      return %2, %3
    }
    """


def _parse(text):
    return parse_graph(textwrap.dedent(text))


def test_inference_batch_norm_of_a_convolution_becomes_scale_and_shift():
    out = fold_batch_norm(_parse(BEFORE))
    verify(out)
    assert print_graph(out) == textwrap.dedent("""\
        graph g(%x: f32[2,3,5,5]) params(%w: f32[4,3,3,3], %gamma: f32[4], %beta: f32[4], \
%mean: f32[4], %var: f32[4], %c3: f32[3]) {
          %0: f32[2,4,3,3] = convolution(%x, %w) {kernel=(3, 3), no_bias=True, num_filter=4}
          %1: f32[4] = add_scalar(%var) {scalar=1e-05}
          %2: f32[4] = rsqrt(%1)
          %3: f32[4] = mul(%2, %gamma)
          %4: f32[4] = mul(%mean, %3)
          %5: f32[4] = sub(%beta, %4)
          %6: f32[1,4,1,1] = reshape(%3) {shape=(1, 4, 1, 1)}
          %7: f32[1,4,1,1] = reshape(%5) {shape=(1, 4, 1, 1)}
          %8: f32[2,4,3,3] = mul(%0, %6)
          %9: f32[2,4,3,3] = add(%8, %7)
          %10: f32[2,4,3,3] = relu(%9)
          %11: f32[2,3,5,5] = batch_norm(%x, %c3, %c3, %c3, %c3) {fix_gamma=False, \
is_train=False}
          return %10, %11
        }
        """)


def test_training_batch_norm_and_fix_gamma():
    train = BEFORE.replace("fix_gamma=False}\n      %2", "fix_gamma=False, is_train=True}\n"
                           "      %2")
    g = _parse(train)
    assert fold_batch_norm(g) is g
    fixed = fold_batch_norm(_parse(BEFORE.replace("eps=1e-05, fix_gamma=False",
                                                  "eps=1e-05, fix_gamma=True")))
    assert "mul(%2, %gamma)" not in print_graph(fixed)


def test_numbers_match_and_the_scale_fuses_into_the_convolution():
    g = _parse(BEFORE)
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(v.type.shape).astype(np.float32)
              for v in (*g.inputs, *g.params)]
    for j in (-1, -2):   # variances
        arrays[j] = np.abs(arrays[j]) + 0.5
    want = evaluate(g, [a.copy() for a in arrays])
    folded = fold_batch_norm(g)
    for a, b in zip(evaluate(folded, [a.copy() for a in arrays]), want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    lowered = run_pipeline(g, ["fold_batch_norm", "fuse", "plan_memory"])
    fn = cpu.compile(lowered)
    got = fn(arrays[:1], arrays[1:])
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert fn.report.get("conv+epilogue") == 1, fn.report
