"""MXNet 1.x's symbol API: composition, names, graph queries, inference, copies."""
import copy
import json
import pickle

import numpy as np
import pytest

import ember as mx
from ember.base import MXNetError, NotImplementedForSymbol


def mlp():
    data = mx.sym.var("data")
    fc1 = mx.sym.FullyConnected(data=data, name="fc1", num_hidden=10)
    act = mx.sym.Activation(fc1, act_type="relu", name="relu1")
    return mx.sym.FullyConnected(data=act, name="fc2", num_hidden=4)


def test_missing_inputs_become_variables():
    net = mlp()
    assert net.list_arguments() == ["data", "fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias"]
    assert net.list_outputs() == ["fc2_output"]
    assert net.name == "fc2"
    nb = mx.sym.FullyConnected(mx.sym.var("x"), num_hidden=3, no_bias=True, name="f")
    assert nb.list_arguments() == ["x", "f_weight"]


def test_auto_names_and_aux_states():
    with mx.name.NameManager():
        x = mx.sym.var("x")
        bn = mx.sym.BatchNorm(mx.sym.FullyConnected(x, num_hidden=3))
        y = bn + 1
    assert bn.list_arguments() == ["x", "fullyconnected0_weight", "fullyconnected0_bias",
                                   "batchnorm0_gamma", "batchnorm0_beta"]
    assert bn.list_auxiliary_states() == ["batchnorm0_moving_mean", "batchnorm0_moving_var"]
    assert bn.list_inputs()[-2:] == bn.list_auxiliary_states()
    assert y.list_outputs()[0].endswith("_output") and y.name != "batchnorm0"


def test_internals_children_and_indexing():
    net = mlp()
    internals = net.get_internals()
    assert internals.list_outputs() == ["data", "fc1_weight", "fc1_bias", "fc1_output",
                                        "relu1_output", "fc2_weight", "fc2_bias", "fc2_output"]
    fc1 = internals["fc1_output"]
    assert fc1.list_arguments() == ["data", "fc1_weight", "fc1_bias"]
    assert net.get_children().list_outputs() == ["relu1_output", "fc2_weight", "fc2_bias"]
    assert mx.sym.var("v").get_children() is None
    parts = mx.sym.split(mx.sym.var("d"), num_outputs=3, axis=1, name="s")
    assert len(parts) == 3 and parts.list_outputs() == ["s_output0", "s_output1", "s_output2"]
    assert [p.list_outputs()[0] for p in parts] == parts.list_outputs()
    with pytest.raises(MXNetError):
        mx.sym.relu(parts)
    with pytest.raises(IndexError):
        parts[3]


def test_group_and_compose():
    net1 = mlp()
    net2 = mx.sym.FullyConnected(name="fc3", num_hidden=5)
    assert net2.list_arguments() == ["fc3_data", "fc3_weight", "fc3_bias"]
    composed = net2(fc3_data=net1)
    assert composed.list_arguments() == net1.list_arguments() + ["fc3_weight", "fc3_bias"]
    assert net2.list_arguments()[0] == "fc3_data"  # the original is unchanged
    grouped = mx.sym.Group([composed, net1])
    assert grouped.list_outputs() == ["fc3_output", "fc2_output"] and len(grouped) == 2
    assert grouped.name is None


def test_bool_raises():
    with pytest.raises(NotImplementedForSymbol):
        bool(mx.sym.var("x"))


def test_infer_shape_and_partial():
    data, prev = mx.sym.var("data"), mx.sym.var("prev")
    out = mx.sym.FullyConnected(data, num_hidden=8, name="x2h") + \
        mx.sym.FullyConnected(prev, num_hidden=8, name="h2h")
    assert out.infer_shape(data=(3, 5)) == (None, None, None)
    arg, outs, aux = out.infer_shape_partial(data=(3, 5))
    shapes = dict(zip(out.list_arguments(), arg))
    assert shapes["x2h_weight"] == (8, 5) and shapes["h2h_weight"] == ()
    arg, outs, aux = out.infer_shape(data=(3, 5), prev=(3, 2))
    assert dict(zip(out.list_arguments(), arg))["h2h_weight"] == (8, 2)
    assert outs == [(3, 8)] and aux == []


def test_infer_shape_positional_backward_and_conflict():
    a, b = mx.sym.var("a", shape=(2, 3)), mx.sym.var("b")
    c = mx.sym.elemwise_add(a, b)
    assert c.infer_shape() == ([(2, 3), (2, 3)], [(2, 3)], [])
    assert c.infer_shape((5, 6)) == ([(5, 6), (5, 6)], [(5, 6)], [])
    with pytest.raises(MXNetError):
        c.infer_shape(a=(2, 3), b=(3, 2))
    with pytest.raises(MXNetError):
        c.infer_shape(nope=(1,))


def test_infer_type():
    data = mx.sym.var("data")
    net = mx.sym.FullyConnected(mx.sym.Cast(data, dtype="float32"), num_hidden=4, name="fc")
    arg, out, aux = net.infer_type(data=np.float16)
    assert arg == [np.float16, np.float32, np.float32] and out == [np.float32]
    arg, out, aux = net.infer_type_partial()
    assert arg == [None, np.float32, np.float32]
    assert net.infer_type() == (None, None, None)
    half = mx.sym.FullyConnected(data, num_hidden=4, name="fc")
    arg, out, _ = half.infer_type(data="float16")
    assert arg == [np.float16] * 3 and out == [np.float16]
    arg, out, _ = mx.sym.Cast(half, dtype="float64").infer_type(data="float16")
    assert out == [np.float64]


def test_attributes():
    x = mx.sym.var("x", lr_mult=0.5, shape=(2,))
    y = mx.sym.relu(x, name="r", attr={"__mirror_stage__": "1"})
    y._set_attr(note="hi")
    assert x.attr("lr_mult") == "0.5" and y.attr("note") == "hi"
    assert y.attr_dict()["x"]["__shape__"] == "(2,)"
    assert y.list_attr() == {"__mirror_stage__": "1", "note": "hi"}
    with pytest.raises(ValueError):
        y._set_attr(note=1)


def test_copies_and_pickle():
    net = mlp()
    for other in (copy.copy(net), copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert other.tojson() == net.tojson()
        assert other._value is not net._value


def test_debug_str():
    text = mlp().debug_str()
    assert "Op:FullyConnected, Name=fc1" in text and "Variable:fc2_bias" in text
    assert "num_hidden=4" in text


def test_gluon_style_trace_keeps_given_inputs():
    x = mx.sym.var("x", shape=(2, 3))
    w = mx.sym.var("w", shape=(4, None))
    y = mx.sym.FullyConnected(x, w, num_hidden=4, no_bias=True)
    assert y.list_arguments() == ["x", "w"] and w.shape == (4, 3)


def test_zero_dims_of_created_arrays_are_unknown_in_legacy_shapes():
    # MXNet's legacy shape semantics: zeros((0, 3)) has an unknown first dim, inferred from
    # the graph (an RNN cell's begin state); with np_shape it is a real empty array
    z = mx.sym.zeros(shape=(0, 3), name="z")
    y = mx.sym.elemwise_add(mx.sym.var("x"), z)
    assert y.infer_shape(x=(4, 3))[1] == [(4, 3)]
    got = y.eval(x=mx.nd.array(np.arange(6.0).reshape(2, 3)))[0]
    np.testing.assert_array_equal(got.asnumpy(), np.arange(6).reshape(2, 3))
    doc = json.loads(z.tojson())
    assert doc["nodes"][0]["attrs"]["shape"] == "(0, 3)"  # as MXNet writes it
    again = mx.sym.load_json(y.tojson())
    assert again.infer_shape(x=(5, 3))[1] == [(5, 3)]
    with pytest.raises(MXNetError, match="zeros"):
        mx.sym.zeros(shape=(0, 3)).eval()
    with mx.util.np_shape(True):
        empty = mx.sym.zeros(shape=(0, 3))
        assert empty.infer_shape()[1] == [(0, 3)]
        assert json.loads(empty.tojson())["nodes"][0]["attrs"]["shape"] == "(0, 3)"


def test_creation_ops_take_ctx_and_int_shapes_as_mxnet():
    """GluonCV's GroupNorm calls F.ones(n, ctx=x.context) on Symbols: MXNet records ctx and
    takes an int shape as a 1-tuple; a device ember cannot use is refused."""
    s = mx.sym.ones(6, ctx=mx.cpu())
    assert s.infer_shape()[1] == [(6,)]
    assert mx.sym.zeros(3, ctx="cpu(0)").infer_shape()[1] == [(3,)]
    with pytest.raises(MXNetError, match="no usable GPU"):
        mx.sym.zeros(3, ctx=mx.gpu())


def test_ops_on_data_of_unknown_shape_stay_unknown_until_inferred():
    """A rule never guesses from data of unknown shape (flatten gave f32[1,1] once)."""
    flat = mx.sym.flatten(mx.sym.var("data"))
    assert flat._value_list()[0].type.shape is None
    y = mx.sym.FullyConnected(flat, num_hidden=3, name="fc")
    _, out, _ = y.infer_shape(data=(2, 4, 5))
    assert out == [(2, 3)]
    assert dict(zip(y.list_arguments(), y.infer_shape(data=(2, 4, 5))[0])) == {
        "data": (2, 4, 5), "fc_weight": (3, 20), "fc_bias": (3,)}
