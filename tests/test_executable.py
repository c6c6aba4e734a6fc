"""Executable: a graph compiled by a backend, with its signature and a tight ``run``."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from ember.backends.reference import run_graph
from ember.ir import EmberError, get_op
from ember.ir.emit import F, Sym, apply
from ember.ir.graph import Graph, Value, topo_nodes
from ember.ir.types import TensorType
from ember.passes.autodiff import autodiff
from ember.runtime.executable import Executable, available_backends


def build(fn, inputs, params=(), name="net") -> Graph:
    ins = [Value(TensorType(s, d), name_hint=n) for n, s, d in inputs]
    ps = [Value(TensorType(s, d), name_hint=n) for n, s, d in params]
    res = fn(*[Sym(v) for v in ins + ps])
    outs = [r._value for r in (res if isinstance(res, list | tuple) else [res])]
    return Graph(name, ins, ps, topo_nodes(outs), outs)


def dense():
    return build(lambda x, w, b: F.tanh(F.fully_connected(x, w, b, num_hidden=3)),
                 [("x", (2, 4), "float64")], [("w", (3, 4), "float64"), ("b", (3,), "float64")])


def test_signature_and_run_match_the_interpreter():
    graph = dense()
    exe = Executable(graph)
    assert exe.backend == "reference" and exe.graph is graph
    assert exe.input_types == (TensorType((2, 4), "float64"),)
    assert exe.param_names == ("w", "b")
    assert exe.output_types == (TensorType((2, 3), "float64"),)
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 4)), rng.standard_normal((3, 4)), rng.standard_normal(3)
    (y,) = exe.run([x], [w, b])
    np.testing.assert_array_equal(y, run_graph(graph, [x], [w, b])[0])
    np.testing.assert_allclose(y, np.tanh(x @ w.T + b))
    assert "net" in repr(exe) and "reference" in repr(exe)


def test_argument_errors():
    exe = Executable(dense())
    with pytest.raises(EmberError, match="expected 1 inputs and 2 parameters, got 1 and 1"):
        exe.run([np.zeros((2, 4))], [np.zeros((3, 4))])
    with pytest.raises(EmberError, match=r"'x' expects shape \(2, 4\)"):
        exe.run([np.zeros((2, 5))], [np.zeros((3, 4)), np.zeros(3)])


def test_unknown_backend_lists_the_available_ones():
    assert "reference" in available_backends()
    with pytest.raises(EmberError, match="unknown backend 'tpu'.*reference"):
        Executable(dense(), backend="tpu")


def test_from_graph_runs_passes_then_compiles():
    graph = build(lambda x: F.sum(F.square(x)), [("x", (3,), "float64")])
    exe = Executable.from_graph(graph, passes=[functools.partial(autodiff, head_grads="ones")])
    assert exe.graph.meta["grad_wrt"] == ["x"]
    loss, dx = exe.run([np.array([1.0, 2.0, 3.0])])
    assert np.allclose(loss, 14.0) and np.allclose(dx, [2.0, 4.0, 6.0])
    with pytest.raises(EmberError, match="returned NoneType, not a Graph"):
        Executable.from_graph(graph, passes=[lambda g: None])


def test_parameters_updated_in_place_through_run():
    def fn(x, gamma, beta, mean, var):
        return apply(get_op("batch_norm"), [x, gamma, beta, mean, var],
                     {"momentum": 0.0, "is_train": True})
    c = (2,)
    graph = build(fn, [("x", (3, 2), "float32")],
                  [(n, c, "float32") for n in ("gamma", "beta", "mean", "var")])
    exe = Executable(graph)
    x = np.array([[1, 2], [3, 4], [5, 9]], np.float32)
    params = [np.ones(2, np.float32), np.zeros(2, np.float32), np.zeros(2, np.float32),
              np.ones(2, np.float32)]
    exe.run([x], params)
    np.testing.assert_allclose(params[2], x.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(params[3], x.var(axis=0), rtol=1e-6)


def test_the_whole_pipeline_with_fusion_runs_on_the_reference_backend():
    from ember.passes import run_pipeline

    def mlp(x, label, w1, b1, w2, b2):
        h = F.relu(F.fully_connected(x, w1, b1, num_hidden=5))
        out = F.fully_connected(h, w2, b2, num_hidden=3)
        return -F.mean(F.pick(F.log_softmax(out), label))
    specs = [("w1", (5, 6)), ("b1", (5,)), ("w2", (3, 5)), ("b2", (3,))]
    graph = build(mlp, [("x", (4, 6), "float64"), ("label", (4,), "int32")],
                  [(n, s, "float64") for n, s in specs])
    rng = np.random.default_rng(0)
    ins = [rng.standard_normal((4, 6)), np.array([0, 2, 1, 1], np.int32)]
    params = [rng.standard_normal(s) for _, s in specs]
    want = run_graph(autodiff(graph, head_grads="ones"), ins, params)
    compile_all = functools.partial(run_pipeline, grad=True, verify=True, head_grads="ones")
    exe = Executable.from_graph(graph, passes=[compile_all])
    assert any(n.body is not None for n in exe.graph.nodes)
    got = exe.run(ins, params)
    assert len(got) == len(want) == 6
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)
