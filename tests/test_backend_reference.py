"""The reference backend: a NumPy interpreter of graphs, checked against NumPy itself."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ember.backends import reference
from ember.backends.reference import run_graph
from ember.ir import EmberError, OpDef, OpKind, get_op
from ember.ir.emit import F, Sym, apply
from ember.ir.graph import Graph, GraphBuilder, Value, make_fused, topo_nodes
from ember.ir.types import TensorType


def build(fn, inputs, params=(), name="g") -> Graph:
    """Graph of ``fn(*syms)`` for (name, shape, dtype) specs of inputs then params."""
    ins = [Value(TensorType(s, d), name_hint=n) for n, s, d in inputs]
    ps = [Value(TensorType(s, d), name_hint=n) for n, s, d in params]
    res = fn(*[Sym(v) for v in ins + ps])
    outs = [r._value for r in (res if isinstance(res, list | tuple) else [res])]
    return Graph(name, ins, ps, topo_nodes(outs), outs)


_UNARY = {"exp": np.exp, "tanh": np.tanh, "negative": np.negative, "abs": np.abs,
          "square": np.square}
_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "maximum": np.maximum}


@st.composite
def _programs(draw):
    """A random straight-line program over broadcastable float32 tensors, as op names."""
    n = draw(st.integers(1, 6))
    steps = []
    for i in range(n):
        if draw(st.booleans()):
            steps.append((draw(st.sampled_from(sorted(_UNARY))), draw(st.integers(0, i + 1))))
        else:
            steps.append((draw(st.sampled_from(sorted(_BINARY))), draw(st.integers(0, i + 1)),
                          draw(st.integers(0, i + 1))))
    return steps


@given(prog=_programs(), rows=st.integers(1, 3), cols=st.integers(1, 4),
       seed=st.integers(0, 999))
def test_random_elementwise_programs_match_numpy(prog, rows, cols, seed):
    def run(env, fns, unary, binary):
        vals = list(env)
        for step in prog:
            if len(step) == 2:
                vals.append(unary[step[0]](vals[step[1]]))
            else:
                vals.append(binary[step[0]](vals[step[1]], vals[step[2]]))
        return vals[-1]
    graph = build(lambda a, b: run([a, b], F, {k: getattr(F, k) for k in _UNARY},
                                   {k: getattr(F, k) for k in _BINARY}),
                  [("a", (rows, cols), "float32"), ("b", (1, cols), "float32")])
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((rows, cols)).astype(np.float32)
    b = rng.standard_normal((1, cols)).astype(np.float32)
    (got,) = run_graph(graph, [a, b], [])
    want = run([a, b], np, _UNARY, _BINARY)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_dense_relu_matches_numpy():
    graph = build(lambda x, w, b: F.relu(F.fully_connected(x, w, b, num_hidden=4)),
                  [("x", (3, 5), "float32")], [("w", (4, 5), "float32"), ("b", (4,), "float32")])
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in [(3, 5), (4, 5), (4,)])
    (y,) = run_graph(graph, [x], [w, b])
    np.testing.assert_allclose(y, np.maximum(x @ w.T + b, 0), rtol=1e-5, atol=1e-6)


def test_multi_output_nodes():
    graph = build(lambda x: F.split(x, num_outputs=3, axis=1), [("x", (2, 6), "float64")])
    x = np.arange(12.0).reshape(2, 6)
    outs = run_graph(graph, [x], [])
    assert len(outs) == 3
    for o, e in zip(outs, np.split(x, 3, axis=1)):
        assert np.array_equal(o, e)


def _bn_graph(train: bool):
    def fn(x, gamma, beta, mean, var):
        return apply(get_op("batch_norm"), [x, gamma, beta, mean, var],
                     {"fix_gamma": False, "momentum": 0.5, "is_train": train})
    c = (3,)
    return build(fn, [("x", (4, 3), "float64")],
                 [("gamma", c, "float64"), ("beta", c, "float64"),
                  ("moving_mean", c, "float64"), ("moving_var", c, "float64")])


def test_batch_norm_updates_the_callers_moving_statistics_in_place():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3))
    gamma, beta, mean, var = np.ones(3), np.zeros(3), np.zeros(3), np.ones(3)
    mean_id = id(mean)
    (y,) = run_graph(_bn_graph(True), [x], [gamma, beta, mean, var])
    assert id(mean) == mean_id
    np.testing.assert_allclose(mean, 0.5 * x.mean(axis=0))
    np.testing.assert_allclose(var, 0.5 + 0.5 * x.var(axis=0))
    np.testing.assert_allclose(y, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3), rtol=1e-10)
    before = mean.copy(), var.copy()
    run_graph(_bn_graph(False), [x], [gamma, beta, mean, var])
    assert np.array_equal(mean, before[0]) and np.array_equal(var, before[1])


def test_optimizer_state_updated_in_place():
    graph = build(lambda g, w, mom: F.sgd_mom_update(w, g, mom, lr=0.1, momentum=0.9),
                  [("g", (3,), "float32")], [("w", (3,), "float32"), ("mom", (3,), "float32")])
    g = np.ones(3, np.float32)
    w, mom = np.zeros(3, np.float32), np.ones(3, np.float32)
    (new_w,) = run_graph(graph, [g], [w, mom])
    np.testing.assert_allclose(mom, 0.9 * 1 - 0.1 * 1)
    np.testing.assert_allclose(new_w, mom)


def test_outputs_do_not_alias_the_callers_arrays():
    graph = build(lambda x: [x, F.reshape(x, shape=(6,))], [("x", (2, 3), "float32")])
    x = np.ones((2, 3), np.float32)
    outs = run_graph(graph, [x], [])
    assert not any(np.may_share_memory(o, x) for o in outs)


def test_input_mismatches_name_the_input_and_both_shapes():
    graph = build(lambda x, w: F.dot(x, w), [("x", (2, 3), "float32")],
                  [("w", (3, 4), "float32")])
    w = np.ones((3, 4), np.float32)
    with pytest.raises(EmberError, match=r"input 'x' expects shape \(2, 3\).*got shape "
                                         r"\(2, 4\)"):
        run_graph(graph, [np.ones((2, 4), np.float32)], [w])
    with pytest.raises(EmberError, match=r"'x'.*float32.*float64"):
        run_graph(graph, [np.ones((2, 3))], [w])
    with pytest.raises(EmberError, match=r"parameter 'w' expects shape \(3, 4\)"):
        run_graph(graph, [np.ones((2, 3), np.float32)], [np.ones(3, np.float32)])
    with pytest.raises(EmberError, match="takes 1 inputs, got 2"):
        run_graph(graph, [w, w], [w])


def test_unknown_dims_accept_any_size():
    b = GraphBuilder("g")
    x = b.input(TensorType((None, 3), "float32"), "x")
    (y,) = b.emit("exp", [x])
    graph = b.build([y])
    for n in (1, 5):
        (out,) = run_graph(graph, [np.zeros((n, 3), np.float32)], [])
        assert out.shape == (n, 3)


def test_kernel_failures_become_ember_errors():
    graph = build(lambda x: F.exp(x), [("x", (2,), "float32")])
    graph.nodes[0].op = OpDef("broken", OpKind.ELEMWISE, lambda ins, at: 1 / 0,
                              get_op("exp").infer)
    with pytest.raises(EmberError, match="broken.*division by zero"):
        run_graph(graph, [np.ones(2, np.float32)], [])


def test_fused_nodes_run_their_body():
    body = build(lambda a, b: F.relu(a * b + 1.0), [("a", (2, 2), "float32"),
                                                    ("b", (2, 2), "float32")], name="body")

    x = Value(TensorType((2, 2), "float32"), name_hint="x")
    node = make_fused("fused_relu_0", [x, x], body)
    graph = Graph("g", [x], [], [node], node.outputs)
    xs = np.array([[1, -2], [0.5, 3]], np.float32)
    (y,) = run_graph(graph, [xs], [])
    np.testing.assert_allclose(y, np.maximum(xs * xs + 1, 0))


def test_compile_is_the_backend_interface():
    graph = build(lambda x: F.exp(x), [("x", (2,), "float64")])
    fn = reference.compile(graph)
    (y,) = fn([np.zeros(2)], [])
    assert np.array_equal(y, np.ones(2))
