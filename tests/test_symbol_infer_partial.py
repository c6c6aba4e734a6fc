"""Symbol.infer_shape_partial's two reporting conventions, MXNet's same-shape Symbol
arithmetic, and shape conflicts reported while other inputs are still unknown."""
import numpy as np
import pytest

import ember as mx


def test_legacy_reports_unknown_dims_as_0_and_unknown_shapes_as_empty():
    ret = mx.sym.sin(mx.sym.var("data"))
    assert ret.infer_shape_partial() == ([()], [()], [])
    z = mx.sym.dot(mx.sym.var("x"), mx.sym.var("y"))
    assert z.infer_shape_partial(x=(0, 3, 4), y=(4, 5))[1] == [(0, 3, 5)]


def test_np_shape_reports_unknown_dims_as_minus_1_and_unknown_shapes_as_none():
    with mx.np_shape(True):
        ret = mx.sym.sin(mx.sym.var("data"))
        assert ret.infer_shape_partial() == ([None], [None], [])
        z = mx.sym.dot(mx.sym.var("x"), mx.sym.var("y"))
        assert z.infer_shape_partial(x=(-1, 3, 4), y=(4, 5))[1] == [(-1, 3, 5)]
        # a 0 is a real (empty) dim here
        assert z.infer_shape_partial(x=(0, 3, 4), y=(4, 5))[1] == [(0, 3, 5)]


def test_symbol_arithmetic_is_same_shape_and_infers_both_operands():
    a = mx.sym.Variable("a", shape=(0, 10))
    b = mx.sym.Variable("b", shape=(12, 0))
    for c in (a + b, a - b, a * b, a / b):
        args, outs, _ = c.infer_shape()
        assert args == [(12, 10), (12, 10)] and outs == [(12, 10)]
    assert (a + b).tojson().count('"elemwise_add"') == 1
    # explicit broadcasting stays available
    args, outs, _ = mx.sym.broadcast_add(mx.sym.var("p"), mx.sym.var("q")).infer_shape(
        p=(3, 1), q=(1, 4))
    assert outs == [(3, 4)]


def test_traced_arithmetic_still_broadcasts():
    class Net(mx.gluon.HybridBlock):
        def hybrid_forward(self, F, x, y):
            return x + y

    net = Net()
    net.hybridize()
    out = net(mx.nd.ones((3, 1)), mx.nd.ones((1, 4)))
    assert out.shape == (3, 4)


def test_known_dims_that_disagree_raise_while_other_inputs_are_unknown():
    data = mx.sym.var("data")
    out = mx.sym.FullyConnected(data, name="fc1", num_hidden=1000)  # fc1_bias unknown
    for infer in (out.infer_shape, out.infer_shape_partial):
        with pytest.raises(mx.base.MXNetError, match="1000"):
            infer(data=(100, 100), fc1_weight=(1, 100))


def test_mx_real_t_and_infer_type():
    assert mx.base.mx_real_t is np.float32
    out = mx.sym.FullyConnected(mx.sym.var("data"), name="fc1", num_hidden=4)
    arg, out_t, _ = out.infer_type(data=mx.base.mx_real_t)
    assert arg == [np.float32] * 3 and out_t == [np.float32]


def test_optimized_symbol_merges_common_subexpressions_unless_disabled_at_bind(monkeypatch):
    a, b = mx.sym.var("a"), mx.sym.var("b")
    d = a + 1
    for sym, saved in (((a + b) + (a + b), 1), (mx.sym.Group([a * d, a * d]), 0),
                       (mx.sym.Group([a * d + b, a * d + b]), 1),
                       (mx.sym.Dropout(a) + mx.sym.Dropout(a), 0)):
        shapes = {k: (2, 3) for k in sym.list_inputs()}
        monkeypatch.setenv("MXNET_ELIMINATE_COMMON_EXPR", "0")
        plain = sym.simple_bind(mx.cpu(), **shapes)
        monkeypatch.setenv("MXNET_ELIMINATE_COMMON_EXPR", "1")
        cse = sym.simple_bind(mx.cpu(), **shapes)
        n_plain = len(plain.get_optimized_symbol().get_internals())
        assert len(cse.get_optimized_symbol().get_internals()) + saved == n_plain


def test_a_multi_output_op_is_one_node():
    s = mx.sym.RNN(mx.sym.var("data"), mx.sym.var("p"), mx.sym.var("h0"), mx.sym.var("h1"),
                   state_size=10, num_layers=2, bidirectional=True, state_outputs=True,
                   mode="lstm", name="r")
    assert s.attr("mode") == "lstm"
    atomic = s._gen_atomic_symbol()
    assert atomic.list_outputs() == ["r_output", "r_state", "r_state_cell"]
    with pytest.raises(mx.base.MXNetError):
        mx.sym.Group([mx.sym.var("x"), mx.sym.var("y")]).attr("mode")


def test_an_input_learns_its_unknown_dims_from_its_consumers_output():
    # MXNet's shape functions fill an input's unknown dims from the output's: split,
    # convolution (batch, stride-1 spatial dims) and concat (the dims off the joined axis)
    a = mx.sym.Variable("a", shape=(0, 15, 0))
    d = mx.sym.SliceChannel(a, num_outputs=3)[1] + mx.sym.Variable("c", shape=(3, 5, 2))
    assert d.infer_shape()[0][0] == (3, 15, 2)
    a = mx.sym.Variable("a", shape=(0, 10, 0, 0))
    b = mx.sym.Convolution(a, num_filter=21, kernel=(3, 3), pad=(1, 1), name="conv")
    d = b + mx.sym.Variable("c", shape=(5, 21, 32, 32))
    assert d.infer_shape()[0][0] == (5, 10, 32, 32)
    a, b = mx.sym.Variable("a", shape=(0, 10)), mx.sym.Variable("b", shape=(0, 5))
    d = mx.sym.Variable("d", shape=(2, 0)) + mx.sym.Concat(a, b, dim=1)
    assert d.infer_shape()[0] == [(2, 15), (2, 10), (2, 5)]


def test_batch_dot_and_where_infer_only_from_the_inputs_mxnet_needs():
    x, y, cond = mx.sym.var("x"), mx.sym.var("y"), mx.sym.var("cond")
    z = mx.sym.batch_dot(x, y)
    assert z.infer_shape_partial(x=(0, 3, 4), y=(0, 4, 5))[1] == [(0, 3, 5)]
    # rhs's contracted dim unknown: nothing, and rhs is not filled from lhs
    assert z.infer_shape_partial(x=(0, 3, 4), y=(0, 0, 5))[:2] == (
        [(0, 3, 4), (0, 0, 5)], [()])
    w = mx.sym.where(cond, x, y)
    assert w.infer_shape_partial(cond=(0, 2), x=(0, 2), y=(0, 2))[1] == [()]
    assert w.infer_shape_partial(cond=(0,), x=(2, 2), y=(2, 2)) == (
        [(0,), (2, 2), (2, 2)], [()], [])
    assert w.infer_shape_partial(cond=(3,), x=(0, 2), y=(3, 0))[1] == [(3, 2)]
    with mx.np_shape(True):
        assert z.infer_shape_partial(x=(-1, 3, 4), y=(-1, -1, 5))[1] == [None]
        assert w.infer_shape_partial(cond=(-1,), x=(2, 2), y=(2, 2))[1] == [None]
