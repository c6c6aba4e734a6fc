"""IR text format: exact round trips (hypothesis-drawn graphs, hand-built corner cases)."""
import math
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ember.ir.emit import F, Sym, apply
from ember.ir.errors import EmberError
from ember.ir.graph import Graph, GraphBuilder, Value, make_fused, topo_nodes
from ember.ir.ops import get_op
from ember.ir.printer import fmt_literal, parse_graph, parse_literal, print_graph
from ember.ir.types import TensorType as T


def graph_of(name, inputs, params, outs, meta=None):
    """A Graph from Values built with ``ir.emit.F`` (nodes in dependency order)."""
    vals = [o._value for o in outs]
    return Graph(name, inputs, params, topo_nodes(vals), vals, dict(meta or {}))


def same_literal(a, b):
    return type(a) is type(b) and fmt_literal(a) == fmt_literal(b)


def assert_same(g1: Graph, g2: Graph):
    """Structural identity: names, types, hints, placements, ops, attrs, wiring, meta."""
    pos1, pos2 = {}, {}

    def leaves(a, b, tag):
        assert len(a) == len(b), tag
        for k, (u, v) in enumerate(zip(a, b)):
            assert (u.type, u.name_hint, u.mem) == (v.type, v.name_hint, v.mem), tag
            pos1[id(u)] = pos2[id(v)] = (tag, k)

    assert g1.name == g2.name
    leaves(g1.inputs, g2.inputs, "in")
    leaves(g1.params, g2.params, "param")
    assert len(g1.nodes) == len(g2.nodes)
    for i, (m, n) in enumerate(zip(g1.nodes, g2.nodes)):
        assert m.op is n.op and (m.loc, m.name) == (n.loc, n.name)
        assert [k for k, _ in m.attrs] == [k for k, _ in n.attrs]
        assert all(same_literal(a, b) for (_, a), (_, b) in zip(m.attrs, n.attrs))
        assert [pos1[id(v)] for v in m.inputs] == [pos2[id(v)] for v in n.inputs]
        assert (m.body is None) == (n.body is None)
        if m.body is not None:
            assert_same(m.body, n.body)
        leaves(m.outputs, n.outputs, f"node{i}")
        assert all(o.producer is n and o.index == k for k, o in enumerate(n.outputs))
    assert [pos1[id(v)] for v in g1.outputs] == [pos2[id(v)] for v in g2.outputs]
    assert g1.meta.keys() == g2.meta.keys()
    assert all(same_literal(g1.meta[k], g2.meta[k]) for k in g1.meta)


def round_trip(g: Graph) -> str:
    text = print_graph(g)
    back = parse_graph(text)
    assert print_graph(back) == text
    assert_same(g, back)
    return text


# ---- hypothesis-drawn graphs ---------------------------------------------------------------
UNARY = ["relu", "sigmoid", "tanh", "exp", "abs", "square", "negative"]


@st.composite
def elementwise_stack(draw):
    n = draw(st.integers(1, 4))
    x = Value(T((draw(st.integers(1, 3)), n)), name_hint="x")
    y = Value(T((1, n)), name_hint=draw(st.sampled_from(["y", "x", "a b", "0"])))
    h, outs = Sym(x), []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["unary", "binary", "scalar", "reduce", "split"]))
        if kind == "unary":
            h = getattr(F, draw(st.sampled_from(UNARY)))(h)
        elif kind == "binary":
            h = draw(st.sampled_from([h + Sym(y), h * Sym(y), F.maximum(h, Sym(y))]))
        elif kind == "scalar":
            s = draw(st.one_of(st.floats(width=32, allow_nan=True, allow_infinity=True),
                               st.integers(-3, 3)))
            h = draw(st.sampled_from([lambda v: v * s, lambda v: v - s, lambda v: s / v]))(h)
        elif kind == "reduce":
            outs.append(F.sum(h, axis=1, keepdims=True))
        else:
            parts = F.split(F.concat(h, h, dim=1), num_outputs=2, axis=1)
            h = parts[0] + parts[1]
    return graph_of("ew", [x, y], [], [h, *outs])


@st.composite
def mlp(draw):
    x = Value(T((draw(st.sampled_from([None, 1, 4])), 6)), name_hint="data")
    h, params = Sym(x), []
    for i in range(draw(st.integers(1, 3))):
        w = Value(T((None, None)), name_hint=f"dense{i}_weight")
        b = Value(T((None,)), name_hint=f"dense{i}_bias")
        params += [w, b]
        h = F.FullyConnected(h, Sym(w), Sym(b), num_hidden=draw(st.integers(1, 5)))
        h = F.Activation(h, act_type=draw(st.sampled_from(["relu", "tanh", "softrelu"])))
        if draw(st.booleans()):
            h = apply(get_op("Dropout"), [h], {"p": 0.25, "is_train": draw(st.booleans())})
    g = graph_of("mlp", [x], params, [F.log_softmax(h, axis=-1)])
    for i, n in enumerate(g.nodes):
        n.loc, n.name = f"model.py:{10 + i}", draw(st.sampled_from([None, f"op{i}_fwd"]))
    return g


@st.composite
def cnn(draw):
    c = draw(st.integers(1, 3))
    x = Value(T((2, c, 8, 8)), name_hint="data")
    w = Value(T((4, c, 3, 3)), name_hint="conv0_weight")
    b = Value(T((4,)), name_hint="conv0_bias")
    gamma, beta, mean, var = (Value(T((4,)), name_hint=f"bn_{k}")
                              for k in ("gamma", "beta", "mean", "var"))
    h = F.Convolution(Sym(x), Sym(w), Sym(b), kernel=(3, 3), num_filter=4,
                      pad=draw(st.sampled_from([(), (1, 1)])))
    h = apply(get_op("BatchNorm"), [h] + [Sym(v) for v in (gamma, beta, mean, var)],
              {"is_train": True})
    h = F.Pooling(F.relu(h), kernel=(2, 2), stride=(2, 2), pool_type="max")
    h = F.transpose(F.reshape(F.flatten(h), shape=(0, -1, 1)), axes=(2, 0, 1))
    return graph_of("cnn", [x], [w, b, gamma, beta, mean, var], [h],
                    {"note": draw(st.text(max_size=5)), "n": draw(st.integers())})


@given(elementwise_stack())
def test_round_trip_elementwise(g):
    round_trip(g)


@given(mlp())
def test_round_trip_mlp(g):
    text = round_trip(g)
    assert "fully_connected(" in text and "# model.py:10" in text


@given(cnn())
def test_round_trip_cnn(g):
    text = round_trip(g)
    assert "batch_norm(" in text and "is_train=True" in text


# ---- hand-written cases ----------------------------------------------------------------------
def test_golden_text_and_aliases():
    text = """
    graph mlp(%x: f32[2,784]) params(%w: f32[256,784], %b: f32[256]) {
      %0 = FullyConnected(%x, %w, %b) {num_hidden=256}
      %1 = Activation(%0) {act_type='relu'}
      return %1
    }
    """
    g = parse_graph(textwrap.dedent(text))
    assert print_graph(g) == textwrap.dedent("""\
        graph mlp(%x: f32[2,784]) params(%w: f32[256,784], %b: f32[256]) {
          %0: f32[2,256] = fully_connected(%x, %w, %b) {num_hidden=256}
          %1: f32[2,256] = activation(%0) {act_type='relu'}
          return %1
        }
        """)


def test_names_are_unique_quoted_and_reversible():
    b = GraphBuilder("g 1")
    vals = [b.input(T((2,)), n) for n in ("x", "x", "a b", "0", None, "x.1", "return")]
    (s,) = b.emit("add_n", vals)
    s.name_hint = "total"
    (r,) = b.emit("relu", [s], name="weird name")
    g = b.build([r, vals[4]])
    text = round_trip(g)
    assert text.splitlines()[0] == ("graph 'g 1'(%x: f32[2], %x.1: f32[2], %'a b': f32[2], "
                                    "%'0': f32[2], %0: f32[2], %'x.1': f32[2], "
                                    "%return: f32[2]) {")
    assert "%total: f32[2] = add_n(" in text and "as 'weird name'" in text


def test_types_and_special_floats():
    b = GraphBuilder("t")
    x = b.input(T(None, "float16"), "x")
    y = b.input(T((None, 3), "int32"), "y")
    z = b.input(T((), "float64"), "z")
    (u,) = b.emit("mul_scalar", [z], scalar=math.inf)
    (v,) = b.emit("add_scalar", [z], scalar=-0.0)
    (w,) = b.emit("sub_scalar", [z], scalar=math.nan)
    g = b.build([x, y, u, v, w])
    text = round_trip(g)
    assert "f16[*]" in text and "i32[?,3]" in text and "f64[]" in text
    assert "{scalar=inf}" in text and "{scalar=-0.0}" in text and "{scalar=nan}" in text
    assert math.copysign(1, parse_literal("-0.0")) == -1


def test_fused_body_memory_and_meta():
    b = GraphBuilder("f")
    x = b.input(T((2, 8)), "x")
    w = b.param(T((4, 8)), "w")
    (h,) = b.emit("fully_connected", [x, w], num_hidden=4, no_bias=True, loc="net.py:3")
    body_b = GraphBuilder()
    a = body_b.input(T((2, 4)), "a")
    (r,) = body_b.emit("relu", [a])
    parts = body_b.emit("split", [r], num_outputs=2)
    body = body_b.build(parts)
    body.meta["group"] = "relu+split"
    node = make_fused("fused_rs_0", [h], body, loc="n.py:4")
    node.outputs[0].mem, node.outputs[1].mem = ("a", 0), ("a", 32)
    h.mem = ("arena", 64)
    g = Graph("f", [x], [w], b.nodes + [node], node.outputs,
              {"arena_bytes": 96, "pass_ms.fuse": 0.25, "ok": True})
    text = round_trip(g)
    assert text == textwrap.dedent("""\
        graph f(%x: f32[2,8]) params(%w: f32[4,8]) {
          %0: f32[2,4] @arena+64 = fully_connected(%x, %w) {no_bias=True, num_hidden=4}  # net.py:3
          %1: f32[2,2] @a+0, %2: f32[2,2] @a+32 = fused_rs_0(%0) fused(%a: f32[2,4]) {  # n.py:4
            %0: f32[2,4] = relu(%a)
            %1: f32[2,2], %2: f32[2,2] = split(%0) {num_outputs=2}
            return %1, %2
          }
          # meta: group='relu+split'
          return %1, %2
        }
        # meta: arena_bytes=96
        # meta: pass_ms.fuse=0.25
        # meta: ok=True
        """)
    assert "meta" not in print_graph(g, meta=False)


def test_odd_locations_and_strings_with_hash():
    b = GraphBuilder("g")
    x = b.input(T((2,)), "x")
    (y,) = b.emit("cast", [x], dtype="float64", loc=" spaced # loc ")
    (z,) = b.emit("relu", [y], loc="")
    round_trip(b.build([z]))


@pytest.mark.parametrize("text, msg", [
    ("graph g(%x: f32[2]) {\n  %0 = relu(%y)\n  return %0\n}\n", "used before it is defined"),
    ("graph g(%x: f32[2]) {\n  %x = relu(%x)\n  return %x\n}\n", "defined twice"),
    ("graph g(%x: f32[2) {\n  return %x\n}\n", "closing"),
    ("graph g(%x: q[2]) {\n  return %x\n}\n", "q"),
    ("graph g(%x: f32[2]) {\n  %0 = no_such_op(%x)\n  return %0\n}\n", "no_such_op"),
    ("graph g(%x: f32[2]) {\n  %0 = relu(%x) {alpha=1}\n  return %0\n}\n", "alpha"),
    ("graph g(%x: f32[2]) {\n  %0, %1 = relu(%x)\n  return %0\n}\n", "2 names for 1"),
    ("graph g(%x: f32[2]) {\n  return %x\n", "expected .}. after return"),
    ("graph g(%x: f32[2]) {\n  %0 = relu(%x)\n", "ends inside"),
])
def test_parse_errors_name_the_line(text, msg):
    with pytest.raises(EmberError, match=msg):
        parse_graph(text)
