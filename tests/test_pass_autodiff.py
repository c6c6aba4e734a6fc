"""The autodiff pass: gradients of graphs against eager autograd and finite differences.

Forward graphs are built with ``ember.ir.emit.F`` from the same model functions that run
eagerly with ``F = ember.nd`` under ``autograd.record()``; both see the same float64 NumPy
values, so the graph gradients (run by the reference backend) must equal the tape's, and
central finite differences of ``sum(out * head_grad)``. Structure is checked on printed IR.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ember as mx
from ember.backends.reference import run_graph
from ember.ir import EmberError, all_ops, get_op
from ember.ir.emit import F, Sym, apply, make_parser
from ember.ir.graph import Graph, Value, topo_nodes
from ember.ir.printer import parse_graph, print_graph
from ember.ir.types import TensorType
from ember.ir.verify import verify
from ember.passes.autodiff import autodiff

F8 = "float64"


class _TrainF:
    """``emit.F`` in training mode: mode ops get ``is_train=True`` (as traced under record)."""

    def __getattr__(self, name):
        op = get_op(name)
        if not op.mode:
            return getattr(F, name)
        parse = make_parser(op, Sym)

        def fn(*args, **kwargs):
            tensors, attrs = parse(args, dict(kwargs))
            return apply(op, tensors, {**attrs, "is_train": True})
        return fn


TF = _TrainF()


def trace(fn, inputs, params=()) -> Graph:
    """A Graph of ``fn(F, *inputs, *params)``; specs are (name, shape[, dtype])."""
    def value(spec):
        n, shape, *dt = spec
        return Value(TensorType(shape, dt[0] if dt else F8), name_hint=n)
    ins, ps = [value(s) for s in inputs], [value(s) for s in params]
    res = fn(TF, *[Sym(v) for v in ins + ps])
    outs = [r._value for r in (res if isinstance(res, list | tuple) else [res])]
    return Graph("f", ins, ps, topo_nodes(outs), outs)


def eager(fn, arrays, heads):
    """Outputs and gradients of ``fn(nd, *arrays)`` for ``heads``, by the autograd tape."""
    xs = [mx.nd.array(a, dtype=a.dtype) for a in arrays]
    for x in xs:
        x.attach_grad()
    with mx.autograd.record():
        res = fn(mx.nd, *xs)
    outs = list(res) if isinstance(res, list | tuple) else [res]
    mx.autograd.backward(outs, head_grads=[mx.nd.array(h, dtype=h.dtype) for h in heads])
    return [o.asnumpy() for o in outs], [x.grad.asnumpy() for x in xs]


def numeric(graph, arrays, heads, which, eps=1e-6):
    """Central differences of ``sum(out * head)`` w.r.t. ``arrays[i]`` for i in ``which``."""
    k = len(graph.inputs)

    def f(arrs):
        outs = run_graph(graph, arrs[:k], [a.copy() for a in arrs[k:]])
        return sum(float((o * h).sum()) for o, h in zip(outs, heads))
    grads = []
    for i in which:
        g = np.zeros_like(arrays[i])
        for j in np.ndindex(arrays[i].shape):
            arrs = [a.copy() for a in arrays]
            arrs[i][j] += eps
            up = f(arrs)
            arrs[i][j] -= 2 * eps
            g[j] = (up - f(arrs)) / (2 * eps)
        grads.append(g)
    return grads


def run_joint(graph, joint, arrays, heads):
    """Run an autodiff'ed graph with head gradients fed as its extra inputs."""
    k = len(graph.inputs)
    outs = run_graph(joint, list(arrays[:k]) + list(heads), [a.copy() for a in arrays[k:]])
    n = joint.meta["n_forward_outputs"]
    return outs[:n], outs[n:]


def check_model(fn, inputs, params, arrays, rng, fd=True, rtol=1e-6, atol=1e-8):
    """Graph gradients == eager gradients (and == finite differences when ``fd``)."""
    graph = trace(fn, inputs, params)
    joint = autodiff(graph)
    verify(joint)
    heads = [rng.standard_normal(v.type.shape) for v in graph.outputs]
    outs, grads = run_joint(graph, joint, arrays, heads)
    e_outs, e_grads = eager(fn, arrays, heads)
    for o, e in zip(outs, e_outs):
        np.testing.assert_allclose(o, e, rtol=rtol, atol=atol)
    wrt = joint.meta["grad_wrt"]
    assert wrt == [s[0] for s in (*inputs, *params) if (s[2:] or [F8])[0] == F8]
    idx = [i for i, s in enumerate((*inputs, *params)) if s[0] in wrt]
    for g, i, name in zip(grads, idx, wrt):
        np.testing.assert_allclose(g, e_grads[i], rtol=rtol, atol=atol, err_msg=name)
    if fd:
        for g, n, name in zip(grads, numeric(graph, arrays, heads, idx), wrt):
            np.testing.assert_allclose(g, n, rtol=1e-5, atol=1e-6, err_msg=f"fd {name}")
    return graph, joint


# ---- structure: before / expected IR text ---------------------------------------------
def check_ir(before: str, expected: str, **options):
    """autodiff(parse(before)) prints as ``expected``, which parses and prints back.

    ``wrt`` may be a list of value names of ``before``.
    """
    graph = parse_graph(before)
    if "wrt" in options:
        by_name = {v.name_hint: v for v in (*graph.inputs, *graph.params)}
        options["wrt"] = [by_name[n] for n in options["wrt"]]
    joint = autodiff(graph, **options)
    verify(joint)
    after = print_graph(joint)
    assert after.strip() == expected.strip(), after
    assert print_graph(parse_graph(after)) == after


def test_ir_product_rule_shared_input_and_unused_param():
    check_ir("""
graph f(%x: f64[3]) params(%w: f64[3], %u: f64[2]) {
  %0: f64[3] = mul(%x, %w)
  %1: f64[3] = tanh(%0)
  %2: f64[3] = mul(%1, %x)
  return %2
}""", """
graph f(%x: f64[3], %head_grad0: f64[3]) params(%w: f64[3], %u: f64[2]) {
  %0: f64[3] = mul(%x, %w)
  %1: f64[3] = tanh(%0)
  %2: f64[3] = mul(%1, %x)
  %3: f64[3] = mul(%head_grad0, %1)
  %4: f64[3] = sum_like(%3, %x)
  %5: f64[3] = mul(%head_grad0, %x)
  %6: f64[3] = sum_like(%5, %1)
  %7: f64[3] = mul(%1, %1)
  %8: f64[3] = rsub_scalar(%7)
  %9: f64[3] = mul(%6, %8)
  %10: f64[3] = mul(%9, %w)
  %11: f64[3] = sum_like(%10, %x)
  %12: f64[3] = add(%4, %11)
  %13: f64[3] = mul(%9, %x)
  %14: f64[3] = sum_like(%13, %w)
  %15: f64[2] = zeros_like(%u)
  return %2, %12, %14, %15
}
# meta: n_forward_outputs=1
# meta: grad_wrt=['x', 'w', 'u']""")


def test_ir_each_weight_gradient_follows_the_data_gradient_it_reads():
    """The backward is emitted from the gradients in the order the sweep completes them:
    w2's (%7) right after the data gradient %6 it reads, which then dies at %8; from the
    parameters' order (x, w1, w2) the chain down to x came first and %7 last, keeping %6
    live to the end (a conv net's every data gradient: ResNet-50's backward held 695 MB)."""
    check_ir("""
graph f(%x: f32[2,3]) params(%w1: f32[3,4], %w2: f32[4,5]) {
  %0: f32[2,4] = dot(%x, %w1)
  %1: f32[2,4] = tanh(%0)
  %2: f32[2,5] = dot(%1, %w2)
  %3: f32[2,5] = tanh(%2)
  return %3
}""", """
graph f(%x: f32[2,3], %head_grad0: f32[2,5]) params(%w1: f32[3,4], %w2: f32[4,5]) {
  %0: f32[2,4] = dot(%x, %w1)
  %1: f32[2,4] = tanh(%0)
  %2: f32[2,5] = dot(%1, %w2)
  %3: f32[2,5] = tanh(%2)
  %4: f32[2,5] = mul(%3, %3)
  %5: f32[2,5] = rsub_scalar(%4)
  %6: f32[2,5] = mul(%head_grad0, %5)
  %7: f32[4,5] = dot(%1, %6) {transpose_a=True}
  %8: f32[2,4] = dot(%6, %w2) {transpose_b=True}
  %9: f32[2,4] = mul(%1, %1)
  %10: f32[2,4] = rsub_scalar(%9)
  %11: f32[2,4] = mul(%8, %10)
  %12: f32[2,3] = dot(%11, %w1) {transpose_b=True}
  %13: f32[3,4] = dot(%x, %11) {transpose_a=True}
  return %3, %12, %13, %7
}
# meta: n_forward_outputs=1
# meta: grad_wrt=['x', 'w1', 'w2']""")


def test_ir_three_uses_sum_with_add_n_and_ones_seed_the_heads():
    check_ir("""
graph f(%x: f64[3]) {
  %0: f64[3] = mul(%x, %x)
  %1: f64[3] = add(%0, %x)
  return %1
}""", """
graph f(%x: f64[3]) {
  %0: f64[3] = mul(%x, %x)
  %1: f64[3] = add(%0, %x)
  %2: f64[3] = ones_like(%1)
  %3: f64[3] = sum_like(%2, %x)
  %4: f64[3] = sum_like(%2, %0)
  %5: f64[3] = mul(%4, %x)
  %6: f64[3] = sum_like(%5, %x)
  %7: f64[3] = mul(%4, %x)
  %8: f64[3] = sum_like(%7, %x)
  %9: f64[3] = add_n(%3, %6, %8)
  return %1, %9
}
# meta: n_forward_outputs=1
# meta: grad_wrt=['x']""", head_grads="ones")


def test_ir_dropout_backward_reads_the_forward_mask():
    check_ir("""
graph f(%x: f32[4]) {
  %y: f32[4], %mask: f32[4] = dropout(%x) {is_train=True, p=0.25}
  return %y
}""", """
graph f(%x: f32[4], %y_grad: f32[4]) {
  %y: f32[4], %mask: f32[4] = dropout(%x) {is_train=True, p=0.25}
  %0: f32[4] = mul(%y_grad, %mask)
  return %y, %0
}
# meta: n_forward_outputs=1
# meta: grad_wrt=['x']""")


def test_ir_random_op_without_rule_stops_gradient_and_int_wrt_is_zero():
    check_ir("""
graph f(%x: f64[3], %k: i32[3]) {
  %0: f64[3] = shuffle(%x)
  %1: f64[3] = exp(%x)
  %2: f64[3] = add(%0, %1)
  return %2
}""", """
graph f(%x: f64[3], %k: i32[3], %head_grad0: f64[3]) {
  %0: f64[3] = shuffle(%x)
  %1: f64[3] = exp(%x)
  %2: f64[3] = add(%0, %1)
  %3: f64[3] = sum_like(%head_grad0, %1)
  %4: f64[3] = mul(%3, %1)
  %5: i32[3] = zeros_like(%k)
  return %2, %4, %5
}
# meta: n_forward_outputs=1
# meta: grad_wrt=['x', 'k']""", wrt=["x", "k"])


# ---- numbers against the tape and finite differences ---------------------------------
def mlp(F, x, label, w1, b1, w2, b2):
    h = F.relu(F.fully_connected(x, w1, b1, num_hidden=5))
    out = F.fully_connected(h, w2, b2, num_hidden=3)
    return -F.mean(F.pick(F.log_softmax(out), label))


def test_mlp_softmax_cross_entropy():
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((4, 6)), np.array([0, 2, 1, 1], np.int32),
              rng.standard_normal((5, 6)), rng.standard_normal(5),
              rng.standard_normal((3, 5)), rng.standard_normal(3)]
    check_model(mlp, [("x", (4, 6)), ("label", (4,), "int32")],
                [("w1", (5, 6)), ("b1", (5,)), ("w2", (3, 5)), ("b2", (3,))], arrays, rng)


def cnn(F, x, w, b, gamma, beta, mean, var, fw):
    h = F.convolution(x, w, b, kernel=(3, 3), num_filter=3, pad=(1, 1))
    h = F.batch_norm(h, gamma, beta, mean, var, fix_gamma=False)
    h = F.pooling(F.relu(h), kernel=(2, 2), stride=(2, 2), pool_type="max")
    return F.fully_connected(h, fw, num_hidden=2, no_bias=True)


def test_small_cnn_with_batch_norm_in_training_mode():
    rng = np.random.default_rng(1)
    shapes = [(2, 2, 4, 4), (3, 2, 3, 3), (3,), (3,), (3,), (3,), (3,), (2, 12)]
    arrays = [rng.standard_normal(s) for s in shapes]
    arrays[3] = np.abs(arrays[3]) + 0.5
    arrays[6] = np.abs(arrays[6]) + 0.5
    names = ["x", "w", "b", "gamma", "beta", "mean", "var", "fw"]
    specs = [(n, s) for n, s in zip(names, shapes)]
    _, joint = check_model(cnn, specs[:1], specs[1:], arrays, rng)
    # the running statistics get no gradient: zeros, like MXNet's
    assert [v.producer.op.name for v in joint.outputs[6:8]] == ["zeros_like", "zeros_like"]


_UNARY = ["tanh", "sigmoid", "sin", "cos", "relu", "softsign", "arctan"]  # bounded: FD stays exact


def _stack(ops):
    def fn(F, a, b, c):
        h = a * b + c
        for name in ops:
            h = getattr(F, name)(h)
        return F.sum(h / (1.0 + F.square(b)), axis=-1, keepdims=True) - c * a
    return fn


@st.composite
def _broadcast_triplet(draw):
    shape = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    def sub(): return tuple(d if draw(st.booleans()) else 1 for d in shape)
    return tuple(shape), sub(), sub()


@given(shapes=_broadcast_triplet(), ops=st.lists(st.sampled_from(_UNARY), max_size=3),
       seed=st.integers(0, 2**16))
def test_elementwise_stacks_with_broadcasting(shapes, ops, seed):
    rng = np.random.default_rng(seed)
    sa, sb, sc = shapes
    arrays = [rng.standard_normal(s) for s in shapes]
    check_model(_stack(ops), [("a", sa), ("b", sb), ("c", sc)], [], arrays, rng)


def test_several_outputs_and_head_gradient_inputs():
    def fn(F, x, w):
        y = F.tanh(x * w)
        return [y, F.sum(y * x, axis=1)]
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal((2, 3)), rng.standard_normal((3,))]
    graph, joint = check_model(fn, [("x", (2, 3))], [("w", (3,))], arrays, rng)
    heads = joint.inputs[len(graph.inputs):]
    assert [v.type for v in heads] == [v.type for v in graph.outputs]
    assert [v.name_hint for v in heads] == ["head_grad0", "head_grad1"]
    graph.outputs[0].name_hint = "act"
    assert autodiff(graph).inputs[1].name_hint == "act_grad"
    assert joint.meta["n_forward_outputs"] == 2
    assert joint.outputs[:2] == graph.outputs


def test_outputs_that_are_inputs_or_repeated():
    graph = trace(lambda F, x, w: [x, F.exp(w), x], [("x", (2,)), ("w", (2,))])
    joint = autodiff(graph)
    h = [np.array([1.0, 2.0]), np.array([3.0, 4.0]), np.array([10.0, 20.0])]
    outs, (dx, dw) = run_joint(graph, joint, [np.zeros(2), np.zeros(2)], h)
    assert np.array_equal(dx, h[0] + h[2]) and np.array_equal(dw, h[1])


def test_ones_seeds_a_scalar_loss():
    graph = trace(lambda F, x: F.sum(F.square(x)), [("x", (3,))])
    joint = autodiff(graph, head_grads="ones")
    assert joint.inputs == graph.inputs
    x = np.array([1.0, -2.0, 0.5])
    loss, dx = run_graph(joint, [x], [])
    assert np.allclose(loss, 5.25) and np.allclose(dx, 2 * x)


# ---- every gradient rule of the registry, emitted vs eager --------------------------
def _arity(op):
    return None if op.variadic else sum(not n.endswith("?") for n in op.inputs)


_RULED = sorted(n for n, op in all_ops().items()
                if op.grad is not None and not (op.mode or op.random) and _arity(op))


@pytest.mark.parametrize("name", _RULED)
def test_every_rule_emits_what_the_tape_computes(name):
    """First order for every op with a rule; second order for the one-input ones."""
    rng = np.random.default_rng(len(name))
    k = _arity(get_op(name))
    arrays = [rng.uniform(0.3, 0.9, (3, 4)) for _ in range(k)]
    fn = (lambda F, *xs: F.sum(getattr(F, name)(*xs) * 1.5))
    try:
        (loss,), grads = eager(fn, arrays, [np.ones(1)])
        graph = trace(fn, [(f"a{i}", (3, 4)) for i in range(k)])
    except EmberError as e:  # the op needs attributes or other shapes: not this test's
        pytest.skip(f"{name} does not take {k} float (3, 4) arrays: {e}")
    joint = autodiff(graph, head_grads="ones")
    verify(joint)
    res = run_graph(joint, arrays, [])
    np.testing.assert_allclose(res[0], loss, rtol=1e-12)
    for g, e in zip(res[1:], grads):
        np.testing.assert_allclose(g, e, rtol=1e-7, atol=1e-12)
    if k == 1:
        _second_order_matches_the_tape(name, fn, joint, arrays[0], rng.standard_normal((3, 4)))


def _second_order_matches_the_tape(name, fn, joint, a, v):
    dx_graph = Graph(name, joint.inputs, [], joint.nodes, joint.outputs[1:])
    x = mx.nd.array(a, dtype=F8)
    x.attach_grad()
    try:
        with mx.autograd.record():
            (gx,) = mx.autograd.grad(fn(mx.nd, x), [x], create_graph=True)
        gx.backward(mx.nd.array(v, dtype=F8))
        want = x.grad.asnumpy()
    except EmberError as e:
        if "not in a recorded graph" not in str(e):  # no second derivative: both refuse
            with pytest.raises(EmberError, match=name):
                autodiff(dx_graph)
            return
        want = np.zeros_like(a)  # the first derivative is constant
    second = autodiff(dx_graph)
    verify(second)
    _, hvp = run_graph(second, [a, v], [])
    np.testing.assert_allclose(hvp, want, rtol=1e-7, atol=1e-12)


# ---- second order --------------------------------------------------------------------
def test_second_order_by_running_autodiff_twice():
    def fn(F, x, w):
        return F.sum(F.tanh(x * w) * x)
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal(4), rng.standard_normal(4)
    graph = trace(fn, [("x", (4,))], [("w", (4,))])
    first = autodiff(graph, wrt=[graph.inputs[0]], head_grads="ones")
    dx_graph = Graph("dx", first.inputs, first.params, first.nodes, first.outputs[1:])
    second = autodiff(dx_graph, wrt=[dx_graph.inputs[0], dx_graph.params[0]])
    verify(second)
    v = rng.standard_normal(4)
    (dx,), hvp = run_joint(dx_graph, second, [x, w], [v])
    # eager: grad with create_graph, then differentiate <grad, v>
    xs, ws = mx.nd.array(x, dtype=F8), mx.nd.array(w, dtype=F8)
    xs.attach_grad()
    ws.attach_grad()
    with mx.autograd.record():
        (g,) = mx.autograd.grad(fn(mx.nd, xs, ws), [xs], create_graph=True)
    g.backward(mx.nd.array(v, dtype=F8))
    np.testing.assert_allclose(dx, g.asnumpy(), rtol=1e-10)
    np.testing.assert_allclose(hvp[0], xs.grad.asnumpy(), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(hvp[1], ws.grad.asnumpy(), rtol=1e-8, atol=1e-12)
    for g2, n in zip(hvp, numeric(dx_graph, [x, w], [v], [0, 1])):
        np.testing.assert_allclose(g2, n, rtol=1e-5, atol=1e-6)


# ---- zeros, sums, stops and errors ---------------------------------------------------
def test_unused_wrt_gets_zeros_and_shared_values_are_summed():
    graph = trace(lambda F, x, u: x * x + F.exp(x), [("x", (3,))], [("u", (2, 2))])
    joint = autodiff(graph)
    x = np.array([0.5, -1.0, 2.0])
    _, (dx, du) = run_joint(graph, joint, [x, np.ones((2, 2))], [np.ones(3)])
    assert np.allclose(dx, 2 * x + np.exp(x))
    assert np.array_equal(du, np.zeros((2, 2)))
    names = [n.op.name for n in joint.nodes]
    assert "add_n" in names and "zeros_like" in names


def test_nothing_is_recomputed_and_dropout_reads_its_mask():
    graph = trace(lambda F, x: F.dropout(F.exp(x), p=0.5), [("x", (50,))])
    joint = autodiff(graph)
    assert sum(n.op.name == "dropout" for n in joint.nodes) == 1
    assert sum(n.op.name == "exp" for n in joint.nodes) == 1
    x, h = np.linspace(-1, 1, 50), np.linspace(1, 2, 50)
    (y,), (dx,) = run_joint(graph, joint, [x], [h])
    kept = y != 0
    assert 0 < kept.sum() < 50
    np.testing.assert_allclose(dx, np.where(kept, 2 * h * np.exp(x), 0.0))


def test_ops_without_gradient_by_nature_differentiate_as_zero():
    def fn(F, x):
        idx = F.argmax(x, axis=1)
        noise = F.shuffle(x)
        return F.sum(x * 2.0) + F.sum(noise) + F.sum(idx)
    graph = trace(fn, [("x", (2, 3))])
    joint = autodiff(graph)
    _, (dx,) = run_joint(graph, joint, [np.arange(6.0).reshape(2, 3)], [np.ones(1)])
    assert np.array_equal(dx, np.full((2, 3), 2.0))


def test_a_gradient_through_an_op_without_one_raises_naming_it():
    def step(F, w, g):
        return F.sgd_update(w * 1.0, g, lr=0.1)
    graph = trace(step, [("w", (3,)), ("g", (3,))])
    with pytest.raises(EmberError, match="sgd_update"):
        autodiff(graph)
    # not needed for the wrt asked for: no error
    graph = trace(lambda F, w, m, g: [F.sgd_update(w, m, lr=0.1), F.exp(g)],
                  [("w", (3,)), ("m", (3,)), ("g", (3,))])
    joint = autodiff(graph, wrt=[graph.inputs[2]])
    _, (dg,) = run_joint(graph, joint, [np.zeros(3)] * 3, [np.ones(3), np.ones(3)])
    assert np.allclose(dg, 1.0)


def test_only_zero_gradients_reaching_an_op_without_one_are_no_error():
    # nnvm's CheckGradAllZero: stop_gradient and floor give zeros, so nothing flows back
    # into sgd_update; x's gradient is the exp branch's alone
    def fn(F, w, x):
        u = F.sgd_update(w * x, x, lr=0.1)
        return F.sum(F.stop_gradient(u)) + F.sum(F.floor(u)) + F.sum(F.exp(x))
    graph = trace(fn, [("w", (3,)), ("x", (3,))])
    joint = autodiff(graph, wrt=[graph.inputs[1]])
    x = np.array([0.5, 1.0, -1.0])
    _, (dx,) = run_joint(graph, joint, [np.ones(3), x], [np.ones(1)])
    assert np.allclose(dx, np.exp(x))


def test_wrt_an_intermediate_value():
    graph = trace(lambda F, x: F.sum(F.square(F.exp(x))), [("x", (3,))])
    mid = graph.nodes[0].outputs[0]
    joint = autodiff(graph, wrt=[mid, graph.inputs[0]], head_grads="ones")
    x = np.array([0.1, 0.2, 0.3])
    _, dmid, dx = run_graph(joint, [x], [])
    assert np.allclose(dmid, 2 * np.exp(x)) and np.allclose(dx, 2 * np.exp(2 * x))


def test_bad_arguments():
    graph = trace(lambda F, x: F.exp(x), [("x", (3,))])
    with pytest.raises(EmberError, match="head_grads"):
        autodiff(graph, head_grads="zeros")
    with pytest.raises(EmberError, match="not a value of graph"):
        autodiff(graph, wrt=[Value(TensorType((3,), F8))])


def test_registered_as_a_pass():
    from ember import passes
    joint = passes.run_pipeline(trace(lambda F, x: F.exp(x), [("x", (3,))]), ["autodiff"])
    assert joint.meta["grad_wrt"] == ["x"]

