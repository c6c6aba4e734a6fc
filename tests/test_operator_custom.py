"""mx.operator: Python custom operators (CustomOp / CustomOpProp / register, nd.Custom,
sym.Custom, F.Custom) eagerly, under autograd, hybridized, compiled and in the Executor."""
import gc

import numpy as np
import pytest

import ember as mx
from ember import autograd, custom_run, nd
from ember.base import MXNetError
from ember.gluon import nn

RNG = np.random.default_rng(7)


# ---- operators the tests use ------------------------------------------------------------------
class Sigmoid(mx.operator.CustomOp):
    def forward(self, is_train, req, in_data, out_data, aux):
        x = in_data[0].asnumpy()
        self.assign(out_data[0], req[0], nd.array(1 / (1 + np.exp(-x))))

    def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
        y = out_data[0]
        self.assign(in_grad[0], req[0], out_grad[0] * y * (1 - y))


@mx.operator.register("t_sigmoid")
class SigmoidProp(mx.operator.CustomOpProp):
    def __init__(self):
        super().__init__(need_top_grad=True)

    def create_operator(self, ctx, shapes, dtypes):
        return Sigmoid()


class Scale(mx.operator.CustomOp):
    """y = scale * x ** 2; keeps its input in self between forward and backward."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, is_train, req, in_data, out_data, aux):
        self.saved = in_data[0].asnumpy().copy()
        aux[0][:] = aux[0] + 1  # counts the forward calls of this state
        self.assign(out_data[0], req[0], nd.array(self.scale * self.saved ** 2))

    def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
        g = out_grad[0].asnumpy() * 2 * self.scale * self.saved  # from self, not in_data
        self.assign(in_grad[0], req[0], nd.array(g))


@mx.operator.register("t_scale")
class ScaleProp(mx.operator.CustomOpProp):
    seen_kwargs = []

    def __init__(self, scale="1"):
        super().__init__()
        ScaleProp.seen_kwargs.append(scale)
        self.scale = float(scale)

    def list_auxiliary_states(self):
        return ["count"]

    def infer_shape(self, in_shape):
        return in_shape, [in_shape[0]], [[1]]

    def create_operator(self, ctx, shapes, dtypes):
        return Scale(self.scale)


class SoftmaxLoss(mx.operator.CustomOp):
    """MXNet's example custom softmax: backward makes its own gradient (need_top_grad=0)."""

    def forward(self, is_train, req, in_data, out_data, aux):
        x = in_data[0].asnumpy()
        y = np.exp(x - x.max(axis=1, keepdims=True))
        self.assign(out_data[0], req[0], nd.array(y / y.sum(axis=1, keepdims=True)))

    def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
        assert not out_grad[0].asnumpy().any()  # not a dependency: never handed over
        label = in_data[1].asnumpy().astype(int)
        g = out_data[0].asnumpy()
        g[np.arange(label.shape[0]), label] -= 1
        self.assign(in_grad[0], req[0], nd.array(g))
        self.assign(in_grad[1], req[1], 0)


@mx.operator.register("t_softmax")
class SoftmaxProp(mx.operator.CustomOpProp):
    def __init__(self):
        super().__init__(need_top_grad=False)

    def list_arguments(self):
        return ["data", "label"]

    def infer_shape(self, in_shape):
        return [in_shape[0], [in_shape[0][0]]], [in_shape[0]], []

    def create_operator(self, ctx, shapes, dtypes):
        return SoftmaxLoss()


class SplitStats(mx.operator.CustomOp):
    """Two outputs: row sums and the input times two (float64 sums)."""

    def forward(self, is_train, req, in_data, out_data, aux):
        x = in_data[0]
        self.assign(out_data[0], req[0], x.sum(axis=1).astype("float64"))
        self.assign(out_data[1], req[1], x * 2)

    def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
        g_sum = out_grad[0].astype("float32").reshape((-1, 1))
        self.assign(in_grad[0], req[0], nd.broadcast_to(g_sum, in_data[0].shape)
                    + 2 * out_grad[1])


@mx.operator.register("t_split")
class SplitProp(mx.operator.CustomOpProp):
    def list_outputs(self):
        return ["sum", "double"]

    def infer_shape(self, in_shape):
        return in_shape, [[in_shape[0][0]], in_shape[0]], []

    def infer_type(self, in_type):
        return in_type, [np.float64, in_type[0]], []

    def create_operator(self, ctx, shapes, dtypes):
        return SplitStats()


def _numeric_grad(f, x, eps=1e-3):
    """Central differences of sum(f(x)) (float64)."""
    x = x.astype(np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = eps
        g[i] = (f(x + d).sum() - f(x - d).sum()) / (2 * eps)
    return g


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


# ---- eager and autograd --------------------------------------------------------------------------
def test_eager_forward_and_gradient_match_numpy_and_finite_differences():
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    a = nd.array(x)
    a.attach_grad()
    with autograd.record():
        y = nd.Custom(a, op_type="t_sigmoid")
    y.backward(nd.array(np.full((3, 4), 2.0)))
    np.testing.assert_allclose(y.asnumpy(), _sigmoid(x), rtol=1e-6)
    want = 2 * _numeric_grad(lambda v: _sigmoid(v), x)
    np.testing.assert_allclose(a.grad.asnumpy(), want, rtol=1e-4, atol=1e-6)


def test_kwargs_reach_the_prop_as_strings_and_state_pairs_forward_with_backward():
    x1, x2 = RNG.standard_normal((2, 3)), RNG.standard_normal((2, 3))
    a, b = nd.array(x1), nd.array(x2)
    a.attach_grad()
    b.attach_grad()
    count = nd.zeros((1,))
    ScaleProp.seen_kwargs.clear()
    with autograd.record():  # two live instances: each backward needs its own forward
        y = nd.Custom(a, count, op_type="t_scale", scale=2.5) \
            + nd.Custom(b, count, op_type="t_scale", scale=2.5)
    y.backward()
    assert ScaleProp.seen_kwargs == ["2.5"]  # one prop for one set of arguments, text
    np.testing.assert_allclose(y.asnumpy(), 2.5 * (x1 ** 2 + x2 ** 2), rtol=1e-5)
    np.testing.assert_allclose(a.grad.asnumpy(), 5 * x1.astype(np.float32), rtol=1e-5)
    np.testing.assert_allclose(b.grad.asnumpy(), 5 * x2.astype(np.float32), rtol=1e-5)
    assert count.asnumpy()[0] == 2  # auxiliary states are updated in place


def test_eager_instances_are_released():
    before = len(custom_run.INSTANCES)
    x = nd.ones((2, 2))
    nd.Custom(x, op_type="t_sigmoid")  # not recorded: released at once
    assert len(custom_run.INSTANCES) == before
    x.attach_grad()
    with autograd.record():
        y = nd.Custom(x, op_type="t_sigmoid")
    assert len(custom_run.INSTANCES) == before + 1  # kept for the backward
    y.backward()
    del y
    gc.collect()
    assert len(custom_run.INSTANCES) == before


def test_loss_style_op_ignores_head_gradients():
    x = RNG.standard_normal((4, 5)).astype(np.float32)
    label = np.array([0, 3, 1, 4], dtype=np.float32)
    a = nd.array(x)
    a.attach_grad()
    with autograd.record():
        p = nd.Custom(a, nd.array(label), op_type="t_softmax")
    p.backward(nd.array(RNG.standard_normal((4, 5))))  # need_top_grad=False: ignored
    soft = np.exp(x - x.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    np.testing.assert_allclose(p.asnumpy(), soft, rtol=1e-5)
    np.testing.assert_allclose(a.grad.asnumpy(), soft - np.eye(5)[label.astype(int)],
                               rtol=1e-5, atol=1e-6)


def test_multiple_outputs_with_their_own_dtypes():
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    a = nd.array(x)
    a.attach_grad()
    with autograd.record():
        s, d = nd.Custom(a, op_type="t_split")
        loss = (s * 3).astype("float32").sum() + d.sum()
    loss.backward()
    assert s.dtype == np.float64 and d.dtype == np.float32
    pair = mx.sym.Custom(mx.sym.var("x"), name="st", op_type="t_split")
    assert pair.list_outputs() == ["st_sum", "st_double"]  # named by the prop, as in MXNet
    assert pair["st_double"].list_outputs() == ["st_double"]
    np.testing.assert_allclose(s.asnumpy(), x.sum(1), rtol=1e-5)
    np.testing.assert_allclose(a.grad.asnumpy(), np.full((3, 4), 5.0), rtol=1e-6)


def test_no_input_op_made_from_string_arguments():
    class Ones(mx.operator.CustomOp):
        def __init__(self, n, m):
            super().__init__()
            self.out = np.ones((n, m), np.float32)

        def forward(self, is_train, req, in_data, out_data, aux):
            self.assign(out_data[0], req[0], self.out)

    @mx.operator.register("t_ones")
    class OnesProp(mx.operator.CustomOpProp):
        def __init__(self, length, depth):
            super().__init__()
            self.n, self.m = int(length), int(depth)

        def list_arguments(self):
            return []

        def infer_shape(self, in_shape):
            return [], [(self.n, self.m)], []

        def infer_type(self, in_type):
            return [], [np.float32], []

        def create_operator(self, ctx, shapes, dtypes):
            return Ones(self.n, self.m)

    with autograd.record():
        x = nd.Custom(length=3, depth=2, op_type="t_ones")
    np.testing.assert_array_equal(x.asnumpy(), np.ones((3, 2)))


def test_every_keyword_but_op_type_name_out_reaches_the_prop():
    got = {}

    @mx.operator.register("t_kwargs")
    class KwProp(mx.operator.CustomOpProp):
        def __init__(self, ctx, flag, shape):
            super().__init__()
            got.update(ctx=ctx, flag=flag, shape=shape)

        def create_operator(self, ctx, shapes, dtypes):
            return Sigmoid()

    nd.Custom(nd.zeros((1,)), op_type="t_kwargs", name="k", ctx="gpu", flag=True, shape=(2, 3))
    assert got == {"ctx": "gpu", "flag": "True", "shape": "(2, 3)"}


@pytest.mark.parametrize("req,want", [("write", [5, 5]), ("add", [6, 6]), ("null", [1, 1])])
def test_assign_follows_req(req, want):
    dst = nd.ones((2,))
    mx.operator.CustomOp().assign(dst, req, nd.array([5, 5]))
    np.testing.assert_array_equal(dst.asnumpy(), want)


# ---- hybridized, compiled, Executor -----------------------------------------------------------
class _Net(nn.HybridBlock):
    def __init__(self):
        super().__init__()
        with self.name_scope():
            self.dense = nn.Dense(5, in_units=4)

    def hybrid_forward(self, F, x, label):
        h = F.Custom(self.dense(x), op_type="t_sigmoid")
        s, d = F.Custom(h, op_type="t_split")
        p = F.Custom(d, label, op_type="t_softmax")
        return p + F.reshape(s, shape=(-1, 1)).astype("float32")


def test_hybridized_block_matches_eager_values_and_gradients():
    x = nd.array(RNG.standard_normal((3, 4)))
    label = nd.array([1, 0, 4])
    net = _Net()
    net.initialize(mx.init.Xavier())
    results = []
    for hybrid in (False, True):
        if hybrid:
            net.hybridize()
        with autograd.record():
            out = net(x, label)
        out.backward()
        results.append((out.asnumpy(), net.dense.weight.grad().asnumpy().copy()))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-5, atol=1e-6)


def test_identical_custom_nodes_are_not_merged():
    class Twice(nn.HybridBlock):
        def hybrid_forward(self, F, x, count):
            return F.Custom(x, count, op_type="t_scale", scale=1) \
                + F.Custom(x, count, op_type="t_scale", scale=1)

    net = Twice()
    net.hybridize()
    x, count = nd.array([[1.0, 2.0]]), nd.zeros((1,))
    y = net(x, count)
    np.testing.assert_allclose(y.asnumpy(), [[2.0, 8.0]])
    assert count.asnumpy()[0] == 2  # both nodes ran: no CSE of user code


def test_compiled_training_step_matches_eager():
    x = nd.array(RNG.standard_normal((3, 4)))
    label = nd.array([2, 0, 1])
    nets = []
    for _ in range(2):
        mx.random.seed(3)
        net = _Net()
        net.initialize(mx.init.Xavier())
        nets.append((net, mx.gluon.Trainer(net.collect_params(), "sgd",
                                           {"learning_rate": 0.5})))

    @mx.compile
    def step(x, label):
        with autograd.record():
            loss = nets[1][0](x, label).sum()
        loss.backward()
        nets[1][1].step(3)
        return loss

    for _ in range(3):
        with autograd.record():
            la = nets[0][0](x, label).sum()
        la.backward()
        nets[0][1].step(3)
        lb = step(x, label)
        np.testing.assert_allclose(lb.asnumpy(), la.asnumpy(), rtol=1e-5)
    np.testing.assert_allclose(nets[1][0].dense.weight.data().asnumpy(),
                               nets[0][0].dense.weight.data().asnumpy(), rtol=1e-5, atol=1e-6)


def test_symbol_simple_bind_with_aux_states_and_learned_input_shape():
    data = mx.sym.var("data")
    out = mx.sym.Custom(data=data, name="sq", op_type="t_scale", scale=3)
    assert out.list_arguments() == ["data"]
    assert out.list_auxiliary_states() == ["sq_count"]
    loss = mx.sym.Custom(data=out, name="sm", op_type="t_softmax")  # label made: sm_label
    assert loss.list_arguments() == ["data", "sm_label"]
    arg_shapes, out_shapes, aux_shapes = loss.infer_shape(data=(2, 3))
    assert arg_shapes == [(2, 3), (2,)] and out_shapes == [(2, 3)] and aux_shapes == [(1,)]
    x = RNG.standard_normal((2, 3)).astype(np.float32)
    ex = loss.simple_bind(mx.cpu(), data=(2, 3))
    ex.arg_dict["data"][:] = x
    ex.arg_dict["sm_label"][:] = [2, 1]
    ex.forward(is_train=True)
    ex.backward()
    z = 3 * x.astype(np.float64) ** 2
    soft = np.exp(z - z.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    np.testing.assert_allclose(ex.outputs[0].asnumpy(), soft, rtol=1e-5)
    want = (soft - np.eye(3)[[2, 1]]) * 6 * x
    np.testing.assert_allclose(ex.grad_dict["data"].asnumpy(), want, rtol=1e-4, atol=1e-6)
    assert ex.aux_dict["sq_count"].asnumpy()[0] == 1


def test_ir_text_round_trips_open_attributes():
    from ember.ir import printer
    from ember.symbol.infer import SymbolGraph
    data = mx.sym.var("data", shape=(2, 3))
    out = mx.sym.Custom(data=data, op_type="t_scale", scale="1e-3")
    graph = SymbolGraph(out._value_list(), {}).graph
    text = printer.print_graph(graph)
    assert "scale='1e-3'" in text and "op_type='t_scale'" in text
    assert printer.print_graph(printer.parse_graph(text)) == text


def test_symbol_json_round_trip_keeps_arguments_and_not_instance_keys():
    data = mx.sym.var("data")
    out = mx.sym.Custom(data=mx.sym.Custom(data=data, name="a", op_type="t_scale", scale=2),
                        name="b", op_type="t_scale", scale=2)
    text = out.tojson()
    assert '"scale": "2"' in text and "_uid" not in text
    back = mx.sym.load_json(text)
    assert back.list_auxiliary_states() == ["a_count", "b_count"]
    ex = back.simple_bind(mx.cpu(), data=(1, 2))
    ex.arg_dict["data"][:] = [[1.0, -2.0]]
    ex.forward(is_train=True)
    ex.backward()
    np.testing.assert_allclose(ex.outputs[0].asnumpy(), [[8.0, 128.0]])
    # d/dx 2 (2 x^2)^2 = 32 x^3; each node's backward ran on its own saved input
    np.testing.assert_allclose(ex.grad_dict["data"].asnumpy(), [[32.0, -256.0]])


# ---- errors ---------------------------------------------------------------------------------
def test_unregistered_op_type_is_a_clear_error():
    with pytest.raises(MXNetError, match="cannot find custom operator 'no_such_op'"):
        nd.Custom(nd.ones((2,)), op_type="no_such_op")
    with pytest.raises(MXNetError, match="cannot find custom operator"):
        mx.sym.Custom(mx.sym.var("x"), op_type="no_such_op")


def test_user_errors_become_mxnet_errors_naming_the_op():
    class Bad(mx.operator.CustomOp):
        def forward(self, is_train, req, in_data, out_data, aux):
            in_data[0][:] = 0  # inputs are read-only

    @mx.operator.register("t_bad")
    class BadProp(mx.operator.CustomOpProp):
        def create_operator(self, ctx, shapes, dtypes):
            return Bad()

    @mx.operator.register("t_bad_shape")
    class BadShapeProp(mx.operator.CustomOpProp):
        def infer_shape(self, in_shape):
            return in_shape, [], []

    with pytest.raises(MXNetError, match=r"'t_bad'.*Bad.forward failed.*read-only"):
        nd.Custom(nd.ones((2,)), op_type="t_bad")
    with pytest.raises(MXNetError, match="expecting 1 entries in returned output shapes"):
        nd.Custom(nd.ones((2,)), op_type="t_bad_shape")
    with pytest.raises(MXNetError, match="input 'label' is missing"):
        nd.Custom(nd.ones((2, 2)), op_type="t_softmax")
    with pytest.raises(MXNetError, match="has no input 'weight'"):
        nd.Custom(data=nd.ones((2,)), weight=nd.ones((2,)), op_type="t_sigmoid")
    with pytest.raises(MXNetError, match="required argument 'op_type'"):
        nd.Custom(nd.ones((2,)))


# ---- the deprecated PythonOp family and the operator listings -------------------------------
def test_numpy_op_runs_through_custom():
    class Double(mx.operator.NumpyOp):
        def forward(self, in_data, out_data):
            out_data[0][:] = in_data[0] * 2

        def backward(self, out_grad, in_data, out_data, in_grad):
            in_grad[0][:] = out_grad[0] * 2

    with pytest.warns(UserWarning, match="deprecated"):
        op = Double()
    s = op.get_symbol(mx.sym.var("X"), name="np_op")
    dx = nd.zeros((4,))
    ex = s.bind(mx.cpu(), args=[nd.ones((4,)) * 10], args_grad={"X": dx})
    ex.forward(is_train=True)
    ex.backward(nd.ones((4,)))
    np.testing.assert_array_equal(ex.outputs[0].asnumpy(), np.full(4, 20.0))
    np.testing.assert_array_equal(dx.asnumpy(), np.full(4, 2.0))


def test_operator_listings():
    assert "Activation" in mx.operator.get_all_registered_operators()
    args = mx.operator.get_operator_arguments("Activation")
    assert args.names[0] == "data" and "act_type" in args.names
    assert args.narg == len(args.names) == len(args.types)


def test_names_mxnet_operator_tests_import():
    """MXNet's test_operator.py: `from mxnet.operator import *` brings only the API, and the
    names it takes from mxnet.base and mxnet exist."""
    from ember.base import _as_list
    namespace = {}
    exec("from ember.operator import *", namespace)
    assert {"CustomOp", "CustomOpProp", "register", "NumpyOp"} <= set(namespace)
    assert "np" not in namespace and "nd" not in namespace
    assert _as_list(1) == [1] and _as_list((1, 2)) == (1, 2)
    assert mx.use_np_shape and mx.is_np_shape() is False
