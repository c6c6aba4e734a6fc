"""The verifier: valid graphs pass, each kind of defect is caught and names the statement."""
import pytest
from hypothesis import given
from test_printer import cnn, elementwise_stack, mlp

from ember.ir.errors import EmberError
from ember.ir.graph import Graph, GraphBuilder, Value, make_fused
from ember.ir.printer import parse_graph
from ember.ir.types import TensorType as T
from ember.ir.verify import compatible, verify


def small():
    b = GraphBuilder("g")
    x = b.input(T((2, 3)), "x")
    (r,) = b.emit("relu", [x])
    (e,) = b.emit("exp", [r])
    return b.build([e]), x, r, e


@given(elementwise_stack())
def test_drawn_elementwise_graphs_verify(g):
    verify(g)


@given(mlp())
def test_drawn_mlps_verify(g):
    verify(g)


@given(cnn())
def test_drawn_cnns_verify(g):
    verify(g)


def test_compatible():
    assert compatible(T((2, None)), T((2, 3)))
    assert compatible(T(None), T((2, 3)))
    assert not compatible(T((2, 4)), T((2, 3)))
    assert not compatible(T((2,)), T((2, 1)))
    assert not compatible(T((2,), "int32"), T((2,)))


def test_use_before_definition():
    g, *_ = small()
    g.nodes.reverse()
    with pytest.raises(EmberError, match=r"input 0 %0 is used before it is defined\n.*exp\("):
        verify(g)


def test_defined_twice():
    g, *_ = small()
    g.nodes.append(g.nodes[1])
    with pytest.raises(EmberError, match="defined twice"):
        verify(g)
    g, x, _, _ = small()
    g.params.append(x)
    with pytest.raises(EmberError, match=r"%x is defined twice \(parameter\)"):
        verify(g)


def test_value_not_in_graph():
    g, x, r, e = small()
    stray = Value(T((2, 3)), name_hint="stray")
    g.nodes[1].inputs[0] = stray
    with pytest.raises(EmberError, match=r"%stray \(f32\[2,3\]\) is not part of the graph"):
        verify(g)
    g, *_ = small()
    g.outputs.append(Value(T((1,))))
    with pytest.raises(EmberError, match="graph output 1 .* is not part of the graph"):
        verify(g)
    g, *_ = small()
    g.inputs.append("x")
    with pytest.raises(EmberError, match="input 'x' is not a Value"):
        verify(g)


def test_output_type_disagrees_with_rule():
    g, x, r, e = small()
    r.type = T((2, 4))
    with pytest.raises(EmberError, match=r"output 0 is recorded as f32\[2,4\], the shape rule "
                                         r"of relu gives f32\[2,3\]\n    %0: f32\[2,4\] = relu"):
        verify(g)
    g, x, r, e = small()
    r.type = T((2, 3), "float64")
    with pytest.raises(EmberError, match="recorded as f64"):
        verify(g)


def test_rule_rejects_inputs():
    b = GraphBuilder("g")
    x = b.input(T((2, 3)), "x")
    y = b.input(T((2, 3)), "y")
    (s,) = b.emit("elemwise_add", [x, y])
    g = b.build([s])
    y.type = T((4, 5))
    with pytest.raises(EmberError, match="shape rule of elemwise_add rejects its inputs"):
        verify(g)


def test_unknown_dims_agree_with_anything():
    g = parse_graph("graph g(%x: f32[?,3]) params(%w: f32[?,?]) {\n"
                    "  %0: f32[?,5] = fully_connected(%x, %w) {num_hidden=5, no_bias=True}\n"
                    "  %1: f32[*] = relu(%0)\n  return %1\n}\n")
    verify(g)


def test_bookkeeping_defects():
    g, x, r, e = small()
    r.index = 1
    with pytest.raises(EmberError, match="does not point back"):
        verify(g)
    g, x, r, e = small()
    g.nodes[0].outputs.append(Value(T((2, 3)), g.nodes[0], 1))
    with pytest.raises(EmberError, match="relu gives 1 outputs, the node has 2"):
        verify(g)
    g, *_ = small()
    g.nodes[0].attrs = (("alpha", 1.0),)
    with pytest.raises(EmberError, match="relu takes no attribute alpha"):
        verify(g)


def fused_graph():
    body_b = GraphBuilder()
    a = body_b.input(T((2, 3)), "a")
    (r,) = body_b.emit("relu", [a])
    body = body_b.build([r])
    x = Value(T((2, 3)), name_hint="x")
    node = make_fused("fused_relu_0", [x], body)
    return Graph("f", [x], [], [node], node.outputs), node


def test_fused_nodes():
    g, node = fused_graph()
    verify(g)
    node.body.outputs[0].type = T((3, 3))
    with pytest.raises(EmberError, match=r"body of fused node fused_relu_0 is invalid: "
                                         r"verify f/fused_relu_0: output 0 is recorded"):
        verify(g)
    g, node = fused_graph()
    node.inputs.append(g.inputs[0])
    with pytest.raises(EmberError, match="the body takes 1 values, the node gives it 2"):
        verify(g)
    g, node = fused_graph()
    node.outputs[0].type = T((2, 3), "int32")
    with pytest.raises(EmberError, match="the body returns f32"):
        verify(g)
