"""Compiled code and eager agree on NaN, +-inf, huge and subnormal values (DESIGN.md s.8).

Every elementwise op with a scalar template is run by the cpu backend (all of them in one
generated kernel per arity and dtype, so a new op is covered as soon as it is registered)
and by its NumPy reference kernel on special values, and must give NaN in the same places
and equal values elsewhere. So must the GEMM epilogues (dense + relu was the bug: NaN came
out as 0), the compiled reductions and softmax, a hybridized Dense against an eager one
(values and gradients), and relu's gradient, which is NaN where its input is (MXNet's).
"""
import math
import platform
import re

import numpy as np
import pytest

import ember as mx
from ember import autograd
from ember.backends import codegen, cpu, reference
from ember.backends.codegen import is_scalar_node, template_of
from ember.backends.cpu_kernels import ewise_source
from ember.gluon import nn
from ember.ir.fused import make_fused_node
from ember.ir.graph import Graph, GraphBuilder
from ember.ir.ops import all_ops
from ember.ir.types import TensorType
from ember.passes import run_pipeline
from ember.runtime import cache

cache.install()
NAN, INF = math.nan, math.inf
SPECIAL = [NAN, -NAN, INF, -INF, 0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 0.999, -0.999, 2.5, -3.7,
           20.5, 88.8, -88.8, 100.0, -100.0, 1e30, -1e30, 3e38, -3e38, 2.0 ** 60,
           1e-40, -1e-40, 1e-45]   # the last three: subnormal in float32
SCALARS = [2.5, -1.0, 0.0, 0.5, -0.5, 1e30, 1e-40, INF, -INF, NAN]
# power_scalar's exponents that codegen computes by products, sqrt and a reciprocal
POWERS = [1.5, -1.5, 2.0, -2.0, 3.0, -3.0, 3.5, -3.5, 4.0, -4.0, -2.5, 0.25]
ATTRS = {"activation": [{"act_type": t} for t in
                        ("relu", "sigmoid", "tanh", "softrelu", "softsign")],
         "clip": [{"a_min": -1.0, "a_max": 2.0}, {"a_min": 0.0, "a_max": INF}],
         "cast": [{"dtype": "float32"}, {"dtype": "float64"}]}
COPIES = {"broadcast_axis", "broadcast_like", "broadcast_to"}  # template "a": a copy
RTOL = {"float32": 1e-4, "float64": 1e-9}


def template_cases():
    """(op name, attrs, arity) for every op with a scalar template."""
    cases = []
    for name, op in sorted(all_ops().items()):
        if template_of(op) is None or name in COPIES:
            continue
        if name in ATTRS:
            settings = ATTRS[name]
        elif "scalar" in op.attrs:
            settings = [{"scalar": s} for s in SCALARS + (POWERS if name == "power_scalar" else [])]
        else:
            settings = [{}]
        cases += [(name, at, len(op.inputs)) for at in settings]
    return cases


def assert_same(got, want, rtol, what, inputs=(), atol=1e-30):
    """NaN in the same places, equal values (infinities with their sign) elsewhere."""
    assert got.dtype == want.dtype and got.shape == want.shape, what
    with np.errstate(all="ignore"):
        bad = np.isnan(got) != np.isnan(want)
        bad |= ~np.isclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol,
                           atol=atol, equal_nan=True)
    if bad.any():
        k = np.flatnonzero(bad)[:4]
        at = f" at inputs {[tuple(float(x[i]) for x in inputs) for i in k]}" if inputs else ""
        raise AssertionError(f"{what}: {bad.sum()} values differ{at}: compiled "
                             f"{got.reshape(-1)[k]}, eager {want.reshape(-1)[k]}")


def _fused(graph, kind, master=None):
    """``graph`` (one fused node over all its nodes) and the nodes' outputs."""
    node, _ = make_fused_node(graph.nodes, graph.outputs, kind, f"fused_{kind}", master)
    return Graph(graph.name, graph.inputs, graph.params, [node], list(node.outputs), {})


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("arity", [1, 2])
def test_every_template_agrees_with_eager_on_special_values(dtype, arity):
    v = np.array(SPECIAL, dtype)
    ins = [v] if arity == 1 else [a.ravel() for a in np.meshgrid(v, v)]  # every pair
    cases = [c for c in template_cases() if c[2] == arity]
    b = GraphBuilder("special")
    xs = [b.input(TensorType(ins[0].shape, dtype), f"x{k}") for k in range(arity)]
    outs = [b.emit(name, xs, **at)[0] for name, at, _ in cases]
    g = b.build(outs)
    fn = cpu.compile(_fused(g, "elemwise"))
    assert fn.report == {"elementwise": 1}  # one generated kernel, no NumPy fallback
    got = fn([a.copy() for a in ins], [])
    with np.errstate(all="ignore"):
        want = reference.run_graph(g, [a.copy() for a in ins], [])
    for (name, at, _), gg, ww in zip(cases, got, want):
        assert_same(gg, ww, RTOL[dtype], f"{name} {at} {dtype}", ins)


def test_every_template_op_is_covered():
    have = {name for name, _, _ in template_cases()}
    want = {n for n, op in all_ops().items() if template_of(op) is not None} - COPIES
    assert have == want and len(have) > 90
    assert {a for _, _, a in template_cases()} == {1, 2}


def _gradient_run(cases, dtype):
    """Compiled and eager (reference) gradients of ``op(x_k)`` for each case, on SPECIAL.

    The backward graph's elementwise nodes become ONE generated kernel (what the fuse pass
    would make of one op's backward), so a sweep compiles a few kernels, not hundreds."""
    v = np.array(SPECIAL, dtype)
    b = GraphBuilder("grads")
    xs = [b.input(TensorType(v.shape, dtype), f"x{k}") for k in range(len(cases))]
    outs = [b.emit(name, [x], **at)[0] for (name, at), x in zip(cases, xs)]
    joint = run_pipeline(b.build(outs), ["infer_shapes", "autodiff", "infer_shapes",
                                         "simplify"], head_grads="input")
    loops = [n for n in joint.nodes if is_scalar_node(n)]
    made = {id(o) for n in loops for o in n.outputs}
    node, replaced = make_fused_node(loops, [o for o in joint.outputs if id(o) in made],
                                     "elemwise", "fused_grads")
    outer = {id(r): o for r, o in zip(replaced, node.outputs)}
    rest = [n for n in joint.nodes if not is_scalar_node(n)]   # zeros for constant ops
    g = Graph("grads", joint.inputs, [], rest + [node],
              [outer.get(id(o), o) for o in joint.outputs], {})
    fn = cpu.compile(g)
    assert fn.report.get("elementwise") == 1 and not any("fallback" in k for k in fn.report)
    heads = [np.full(v.shape, 0.75, h.type.dtype) for h in joint.inputs[len(cases):]]
    ins = [v] * len(cases) + heads
    got = fn([a.copy() for a in ins], [])
    with np.errstate(all="ignore"):
        want = reference.run_graph(joint, [a.copy() for a in ins], [])
    n = len(cases)
    for (name, at), gg, ww in zip(cases, got[n:], want[n:]):
        assert_same(gg, ww, RTOL[dtype], f"gradient of {name} {at} {dtype}", [v])


def _unary_cases(every_setting):
    cases = [(name, at) for name, at, arity in template_cases()
             if arity == 1 and name != "digamma"]   # digamma has no gradient (no trigamma)
    if every_setting:
        return cases
    firsts = {name: at for name, at in reversed(cases)}
    extra = [("power_scalar", {"scalar": s}) for s in (0.0, -1.0, 0.5, 3.0)]
    extra += [("rpower_scalar", {"scalar": s}) for s in (0.0, -1.0)]
    return list(firsts.items()) + extra + [("activation", at) for at in ATTRS["activation"]]


def test_gradients_of_unary_templates_agree_with_eager():
    """Every unary op (first attribute setting), float32: the backward graph compiled."""
    cases = _unary_cases(False)
    for k in range(0, len(cases), 30):
        _gradient_run(cases[k:k + 30], "float32")


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gradients_of_every_unary_template_setting_agree_with_eager(dtype):
    cases = _unary_cases(True)
    for k in range(0, len(cases), 30):
        _gradient_run(cases[k:k + 30], dtype)


_PACKED = re.compile(r"\bv?(max|min|cmp\w*|and|andn|or|xor|blendv|blendm\w*|add|mul|sub|div|"
                     r"fn?m(add|sub)\w*)p[sd]\s[^\n]*%[xyz]mm")


def _packed_arithmetic(name, dtype="float32", **at):
    """SIMD arithmetic instructions (``vmaxps %ymm...``) in one op's generated loop."""
    b = GraphBuilder("vec")
    x = b.input(TensorType((4096,), dtype), "x")
    (y,) = b.emit(name, [x], **at)
    src = ewise_source([y.producer], [x], [[False]], [y], 1, False)
    k = codegen._load_in_memory(src, "vec").kernel   # compiled here: its assembly is kept
    k(np.ones(4096, dtype), np.empty(4096, dtype))
    return len(_PACKED.findall("\n".join(k.inspect_asm().values())))


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="reads x86 assembly")
def test_nan_propagating_templates_still_vectorise():
    """``a if not a <= 0 else 0`` and friends compile to compares and blends on vectors."""
    for name, at in [("relu", {}), ("activation", {"act_type": "relu"}),
                     ("maximum_scalar", {"scalar": 0.0}), ("minimum_scalar", {"scalar": 1.0}),
                     ("clip", {"a_min": -1.0, "a_max": 1.0}), ("sign", {}), ("abs", {}),
                     ("sigmoid", {}), ("tanh", {}), ("exp", {}),
                     ("power_scalar", {"scalar": 3.0})]:
        assert _packed_arithmetic(name, **at) >= 6, name
    assert _packed_arithmetic("softrelu") < 6   # libm log1p per element: the check can fail


EPILOGUES = [("relu", {}), ("activation", {"act_type": "relu"}),
             ("activation", {"act_type": "softrelu"}), ("activation", {"act_type": "sigmoid"}),
             ("tanh", {}), ("maximum_scalar", {"scalar": 0.0}),
             ("minimum_scalar", {"scalar": 0.0}), ("clip", {"a_min": -1.0, "a_max": 1.0}),
             ("abs", {}), ("sign", {}), ("greater_scalar", {"scalar": 0.0}), ("exp", {})]


def _special_rows(dtype, cols=3):
    rows = [[s, 1.0, -2.0][:cols] for s in SPECIAL] + [[1.0, s, 0.5][:cols] for s in SPECIAL]
    return np.array(rows, dtype)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")   # NumPy's matmul says so
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gemm_epilogues_keep_nan_and_inf(dtype):
    """fully_connected + bias + epilogue in one kernel after the BLAS GEMM."""
    x = _special_rows(dtype)
    w = np.random.default_rng(0).standard_normal((4, 3)).astype(dtype)
    w[1] = [1e30, 1e30, 1e30]   # overflows to inf for large inputs
    bias = np.array([0.5, -0.5, 0.0, INF], dtype)
    b = GraphBuilder("dense")
    xv = b.input(TensorType(x.shape, dtype), "x")
    wv, bv = b.param(TensorType(w.shape, dtype), "w"), b.param(TensorType((4,), dtype), "b")
    (h,) = b.emit("fully_connected", [xv, wv, bv], num_hidden=4)
    outs = [b.emit(name, [h], **at)[0] for name, at in EPILOGUES]
    g = b.build(outs)
    fn = cpu.compile(_fused(g, "out_ewise", g.nodes[0]))
    assert fn.report == {"gemm+epilogue": 1}
    got = fn([x.copy()], [w, bias])
    with np.errstate(all="ignore"):
        want = reference.run_graph(g, [x.copy()], [w, bias])
    assert np.isnan(want[0]).any() and np.isinf(want[0]).any()
    for (name, at), gg, ww in zip(EPILOGUES, got, want):
        assert_same(gg, ww, RTOL[dtype], f"dense + {name} {at}")


REDUCTIONS = [("max", {"axis": 1}), ("min", {"axis": 1}), ("max", {"axis": 0}),
              ("min", {"axis": ()}), ("sum", {"axis": 1}), ("mean", {"axis": 1}),
              ("mean", {"axis": 0}), ("argmax", {"axis": 1}), ("argmin", {"axis": 1}),
              ("softmax", {"axis": 1}), ("log_softmax", {"axis": 1}), ("softmin", {"axis": 0}),
              ("softmax", {"axis": 0})]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_reductions_and_softmax_agree_on_special_values(dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((len(SPECIAL) ** 2, 5))
    x[:, 1] = np.repeat(SPECIAL, len(SPECIAL))   # every pair of specials in one row
    x[:, 3] = np.tile(SPECIAL, len(SPECIAL))
    x = x.astype(dtype)
    for name, at in REDUCTIONS:
        b = GraphBuilder("red")
        xv = b.input(TensorType(x.shape, dtype), "x")
        g = b.build(list(b.emit(name, [xv], **at)))
        fn = cpu.compile(g)
        with np.errstate(all="ignore"):
            want = reference.run_graph(g, [x.copy()], [])
        for gg, ww in zip(fn([x.copy()], []), want):
            assert_same(gg, ww, RTOL[dtype], f"{name} {at} {dtype}")


def _dense_run(hybridize, x, act="relu"):
    mx.random.seed(0)
    net = nn.Dense(4, activation=act, in_units=3)
    net.initialize(mx.init.Xavier())
    if hybridize:
        net.hybridize()
    xa = mx.nd.array(x)
    xa.attach_grad()
    with autograd.record():
        y = net(xa)
    y.backward(mx.nd.ones_like(y))
    return [y.asnumpy(), xa.grad.asnumpy(), net.weight.grad().asnumpy(),
            net.bias.grad().asnumpy()]


@pytest.mark.parametrize("act", ["relu", "softrelu", "sigmoid", "tanh"])
def test_hybridized_dense_matches_eager_on_nan_and_inf(act):
    """The issue's repro: Dense(4, activation='relu') gave 0 for a NaN row once hybridized."""
    x = _special_rows("float32")
    eager, compiled = _dense_run(False, x, act), _dense_run(True, x, act)
    if act == "relu":
        assert np.isnan(eager[0][0]).all()   # the NaN sample's row is NaN, not 0
    for what, e, c in zip(("out", "data grad", "weight grad", "bias grad"), eager, compiled):
        assert_same(c, e, 1e-4, f"Dense({act}) {what}", atol=1e-6)


@pytest.mark.parametrize("op", ["relu", "Activation"])
def test_relu_gradient_of_nan_is_nan(op):
    """MXNet's relu_grad: NaN where the input is NaN, 1 above 0, 0 at and below 0."""
    for hybridize in (False, True):
        class Net(nn.HybridBlock):
            def hybrid_forward(self, F, x):
                return F.relu(x) if op == "relu" else F.Activation(x, act_type="relu")
        net = Net()
        if hybridize:
            net.hybridize()
        x = mx.nd.array([NAN, 2.0, -1.0, 0.0, INF, -INF])
        x.attach_grad()
        with autograd.record():
            y = net(x)
        y.backward()
        np.testing.assert_array_equal(y.asnumpy(), [NAN, 2.0, 0.0, 0.0, INF, 0.0])
        np.testing.assert_array_equal(x.grad.asnumpy(), [NAN, 1.0, 0.0, 0.0, 1.0, 0.0])


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")   # 0 * inf, eagerly
@pytest.mark.parametrize("base", [0.0, -1.0, 2.0])
def test_gradient_of_scalar_to_the_x_at_nonpositive_bases(base):
    """d(s ** x)/dx = s ** x * log(s): NumPy's log (-inf at 0, NaN below), not a Python
    ValueError from math.log, eagerly and hybridized."""
    xs = np.array([-1.0, 0.0, 0.5, 2.0, NAN, INF], np.float32)
    with np.errstate(all="ignore"):
        want = (np.float32(base) ** xs) * np.float32(np.log(np.float64(base)))
    for hybridize in (False, True):
        class Net(nn.HybridBlock):
            def hybrid_forward(self, F, x):
                return base ** x
        net = Net()
        if hybridize:
            net.hybridize()
        x = mx.nd.array(xs)
        x.attach_grad()
        with autograd.record():
            y = net(x)
        y.backward()
        assert_same(x.grad.asnumpy(), want.astype(np.float32), 1e-6, f"{base} ** x")


@pytest.mark.parametrize("how", ["hybridize", "compile"])
def test_one_nan_sample_poisons_compiled_training_as_eager(how):
    """A NaN sample gave finite, falling losses while the weights turned NaN (hybridized
    blocks, and ``@ember.compile`` of the whole training step)."""
    def losses(mode):
        mx.random.seed(0)
        net = nn.HybridSequential()
        net.add(nn.Dense(8, activation="relu", in_units=3), nn.Dense(1, in_units=8))
        net.initialize(mx.init.Xavier())
        if mode == "hybridize":
            net.hybridize()
        trainer = mx.gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
        x = np.random.default_rng(0).standard_normal((6, 3)).astype("float32")
        x[2, 1] = NAN

        def step(x, y):
            with autograd.record():
                loss = mx.gluon.loss.L2Loss()(net(x), y)
            loss.backward()
            trainer.step(6)
            return loss
        step = mx.compile(step) if mode == "compile" else step
        out = [step(mx.nd.array(x), mx.nd.zeros((6, 1))).asnumpy() for _ in range(3)]
        return np.array(out), net[0].weight.data().asnumpy()
    (le, we), (lc, wc) = losses("eager"), losses(how)
    assert np.isnan(le[0, 2]) and np.isnan(we).any()
    assert_same(lc, le, 1e-4, "losses", atol=1e-6)
    assert_same(wc, we, 1e-4, "weights", atol=1e-6)


def test_max_pooling_propagates_nan_compiled_as_eager():
    x = np.random.default_rng(2).standard_normal((1, 2, 4, 4)).astype("float32")
    x[0, 0, 1, 1], x[0, 1, 2, 3] = NAN, -INF
    res = []
    for hybridize in (False, True):
        net = nn.MaxPool2D(2)
        if hybridize:
            net.hybridize()
        res.append(net(mx.nd.array(x)).asnumpy())
    assert np.isnan(res[0][0, 0, 0, 0])
    assert_same(res[1], res[0], 0, "max pooling")
