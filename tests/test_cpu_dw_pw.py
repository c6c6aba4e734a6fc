"""A depthwise convolution whose output only a 1x1 convolution reads runs with it as one step
(``cpu_conv_pairs.dw_pw_step``: each sample's depthwise result and epilogue in the thread's
own buffer, the sample's GEMM from it), where ``plan_memory`` kept the depthwise's inputs
live until the 1x1 (``held_inputs``). Against the reference backend on hypothesis-generated
shapes, bit for bit against the same program planned without the fusion, with NaN and
infinities, on one thread (the two steps, as before), and not where another node reads the
depthwise output."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ember.backends import cpu, cpu_conv, cpu_gemm, cpu_split, reference
from ember.ir.graph import GraphBuilder
from ember.ir.types import TensorType
from ember.passes import run_pipeline

F32 = "float32"


@pytest.fixture(autouse=True)
def _tiles_compiled_now(monkeypatch):
    """cpu_gemm's tiles compiled on first use, not in the background."""
    monkeypatch.setattr(cpu_gemm.TIER, "background", False)


def _graph(n, c, mult, f, h, stride, epi=True, bias=False, second=False):
    """relu(x) -> 3x3 depthwise (``mult`` filters a channel) [-> *s + t, relu] -> a node
    between -> 1x1 to ``f`` [+ bias] -> *s2 + exp(t2), relu (the MobileNet pattern);
    ``second``: the depthwise output is a graph output too."""
    b = GraphBuilder("dwpw")
    x = b.input(TensorType((n, c, h, h), F32), "x")
    wd = b.param(TensorType((c * mult, 1, 3, 3), F32), "wd")
    s1 = b.param(TensorType((1, c * mult, 1, 1), F32), "s1")
    t1 = b.param(TensorType((1, c * mult, 1, 1), F32), "t1")
    wp = b.param(TensorType((f, c * mult, 1, 1), F32), "wp")
    s2 = b.param(TensorType((1, f, 1, 1), F32), "s2")
    t2 = b.param(TensorType((1, f, 1, 1), F32), "t2")
    ins = [wp] + ([b.param(TensorType((f,), F32), "bp")] if bias else [])
    (x0,) = b.emit("relu", [x])
    (a,) = b.emit("convolution", [x0, wd], kernel=(3, 3), stride=(stride, stride),
                  pad=(1, 1), num_filter=c * mult, num_group=c, no_bias=True)
    if epi:
        (a,) = b.emit("broadcast_mul", [a, s1])
        (a,) = b.emit("broadcast_add", [a, t1])
        (a,) = b.emit("relu", [a])
    (t3,) = b.emit("exp", [t2])
    (y,) = b.emit("convolution", [a, *ins], kernel=(1, 1), num_filter=f, no_bias=not bias)
    (y,) = b.emit("broadcast_mul", [y, s2])
    (y,) = b.emit("broadcast_add", [y, t3])
    (y,) = b.emit("relu", [y])
    graph = b.build([y, a] if second else [y])
    return run_pipeline(graph, ["infer_shapes", "simplify", "fuse", "plan_memory"])


def _arrays(graph, seed):
    rng = np.random.default_rng(seed)
    ins = [rng.standard_normal(v.type.shape).astype(F32) for v in graph.inputs]
    ps = [(rng.standard_normal(v.type.shape) * 0.5).astype(F32) for v in graph.params]
    return ins, ps


def _compiled(graph, fuse=True):
    old = cpu_conv.FUSE_DW_PW
    cpu_conv.FUSE_DW_PW = fuse
    try:
        return cpu.compile(graph)
    finally:
        cpu_conv.FUSE_DW_PW = old


def _check(graph, ins, ps, fused=1):
    """Two calls each (the second with the 1x1's weights kept packed where the tiles
    apply), against the program without the fusion and the reference backend."""
    fn, plain = _compiled(graph), _compiled(graph, fuse=False)
    assert fn.report.get("conv_dw_pw", 0) == fused and "conv_dw_pw" not in plain.report
    want = reference.compile(graph)(ins, ps)
    with np.errstate(invalid="ignore", over="ignore"):
        for _ in range(2):
            got, same = fn(ins, ps), plain(ins, ps)
            for g, s, w in zip(got, same, want, strict=True):
                np.testing.assert_array_equal(g, s)   # the same sums in the same order
                np.testing.assert_allclose(g, w, rtol=2e-4,
                                           atol=2e-4 * max(1.0, np.nanmax(np.abs(w))))
    return got


@settings(max_examples=12, deadline=None)
@given(n=st.integers(2, 4), c=st.sampled_from([3, 8, 32]), mult=st.sampled_from([1, 2]),
       f=st.sampled_from([5, 32, 64]), size=st.sampled_from([(14, 1), (16, 1), (28, 2)]),
       epi=st.booleans(), bias=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_fused_step_matches_reference_and_the_two_steps(n, c, mult, f, size, epi, bias, seed):
    """Both GEMM paths: cpu_gemm's tiles (64 channels, filters in blocks of 32) and
    NumPy's matmul."""
    graph = _graph(n, c, mult, f, size[0], size[1], epi, bias)
    _check(graph, *_arrays(graph, seed))


def test_nan_and_infinities_reach_the_same_outputs():
    graph = _graph(2, 32, 2, 64, 14, 1)
    ins, ps = _arrays(graph, 1)
    ins[0][0, 3, 4, 5], ins[0][1, 7, 0, 0], ins[0][1, 9, 13, 13] = np.nan, np.inf, -np.inf
    ps[0][5, 0, 1, 1] = np.inf   # a depthwise filter tap
    out = _check(graph, ins, ps)[0]
    assert np.isnan(out).any() and np.isfinite(out).any()


def test_one_thread_runs_the_two_steps():
    graph = _graph(3, 8, 1, 32, 16, 1)
    ins, ps = _arrays(graph, 2)
    want = _compiled(graph, fuse=False)(ins, ps)
    fn = _compiled(graph)
    old = cpu_split._thread_source
    cpu_split.set_thread_source(lambda: 1)
    try:
        got = fn(ins, ps)
    finally:
        cpu_split.set_thread_source(old)
    np.testing.assert_array_equal(got[0], want[0])


def test_not_fused_where_another_node_reads_the_depthwise_output():
    graph = _graph(2, 8, 1, 32, 16, 1, second=True)
    _check(graph, *_arrays(graph, 3), fused=0)


def test_not_fused_at_batch_one_or_below_196_pixels():
    for n, h in ((1, 16), (2, 12)):
        graph = _graph(n, 8, 1, 32, h, 1)
        _check(graph, *_arrays(graph, 4), fused=0)
