"""DOT output, checked by reading the text back structurally (and with ``dot`` if present)."""
import re
import shutil
import subprocess

import pytest
from hypothesis import given
from test_printer import cnn, mlp

from ember.ir.dot import to_dot
from ember.ir.graph import Graph, GraphBuilder, make_fused
from ember.ir.types import TensorType as T

NODE = re.compile(r'^\s*(\w+) \[label="((?:[^"\\]|\\.)*)"(.*)\];$')
EDGE = re.compile(r'^\s*(\w+) -> (\w+)(?: \[label="((?:[^"\\]|\\.)*)"\])?;$')


def read(text):
    """(nodes: id -> (label, style), edges: [(src, dst, label)], cluster labels)."""
    lines = text.splitlines()
    assert lines[0].startswith("digraph ") and lines[-1] == "}"
    assert text.count("{") == text.count("}")
    nodes, edges = {}, []
    for ln in lines:
        if m := EDGE.match(ln):
            edges.append(m.groups())
        elif m := NODE.match(ln):
            assert m.group(1) not in nodes
            nodes[m.group(1)] = (m.group(2), m.group(3))
    clusters = re.findall(r'subgraph (cluster_\d+) \{\n\s*label="([^"]*)"', text)
    for src, dst, _ in edges:
        assert src in nodes and dst in nodes
    return nodes, edges, clusters


def check_counts(g: Graph, text: str):
    nodes, edges, _ = read(text)
    ops = [k for k in nodes if k.startswith("n")]
    assert len(ops) == len(g.nodes)
    assert sum(k.startswith("in") for k in nodes) == len(g.inputs)
    assert sum(k.startswith("param") for k in nodes) == len(g.params)
    assert sum(k.startswith("out") for k in nodes) == len(g.outputs)
    assert len(edges) == sum(len(n.inputs) for n in g.nodes) + len(g.outputs)
    for k in nodes:
        if k.startswith("param"):
            assert 'shape=box, style=filled, fillcolor="#d9d9d9"' in nodes[k][1]
        if k.startswith("in"):
            assert "shape=ellipse" in nodes[k][1]
    return nodes, edges


@given(mlp())
def test_mlp_nodes_edges_and_shapes(g):
    text = to_dot(g)
    nodes, edges = check_counts(g, text)
    labels = [lab for _, _, lab in edges]
    assert all(lab and re.match(r"(\[\d\] )?f32\[", lab) for lab in labels)
    assert any(lab.startswith("fully_connected\\nnum_hidden=") for lab, _ in nodes.values())
    assert all(lab is None for _, _, lab in read(to_dot(g, shapes=False))[1])


@given(cnn())
def test_cnn_attrs_in_labels(g):
    nodes, _ = check_counts(g, to_dot(g))
    conv = next(lab for lab, _ in nodes.values() if lab.startswith("convolution"))
    assert "kernel=(3, 3)" in conv and "num_filter=4" in conv and "workspace" not in conv
    bn = next(lab for lab, _ in nodes.values() if lab.startswith("batch_norm"))
    assert "is_train=True" in bn


def test_fused_cluster_and_memory_offsets():
    b = GraphBuilder('say "hi"')
    x = b.input(T((2, 8)), "x")
    w = b.param(T((4, 8)), "w")
    (h,) = b.emit("fully_connected", [x, w], num_hidden=4, no_bias=True)
    body_b = GraphBuilder()
    a = body_b.input(T((2, 4)), "a")
    (r,) = body_b.emit("relu", [a])
    (e,) = body_b.emit("exp", [r])
    node = make_fused("fused_relu_exp_0", [h], body_b.build([e, a]))
    h.mem, node.outputs[0].mem = ("arena", 0), ("arena", 64)
    g = Graph(b.name, [x], [w], b.nodes + [node], [node.outputs[0], node.outputs[1]])
    text = to_dot(g)
    nodes, edges, clusters = read(text)
    assert text.startswith('digraph "say \\"hi\\"" {')
    assert clusters == [("cluster_0", "fused_relu_exp_0")]
    body_ids = [k for k, (lab, _) in nodes.items() if lab in ("relu", "exp")]
    cluster_text = text[text.index("subgraph cluster_0"):]
    assert all(f"  {k} [" in cluster_text for k in body_ids)
    fc = next(k for k, (lab, _) in nodes.items() if lab.startswith("fully_connected"))
    relu = next(k for k, (lab, _) in nodes.items() if lab == "relu")
    assert (fc, relu, "f32[2,4]\\n@arena+0") in edges
    assert (fc, "out6", "[1] f32[2,4]") in edges  # body output 1 passes its input on
    exp = next(k for k, (lab, _) in nodes.items() if lab == "exp")
    assert (exp, "out5", "[0] f32[2,4]\\n@arena+64") in edges


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz 'dot' is not installed")
@given(cnn())
def test_graphviz_accepts_the_text(g):
    res = subprocess.run(["dot", "-Tsvg"], input=to_dot(g), capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 0, res.stderr
    assert "<svg" in res.stdout


# ---- weights hidden, tooltips, collapsed blocks ---------------------------------------------
def seed_mlp():
    """The seed MLP's graph (784 -> 256 relu -> 10) with Gluon's names."""
    b = GraphBuilder("mlp")
    x = b.input(T((2, 784)), "data")
    w0, b0 = b.param(T((256, 784)), "dense0_weight"), b.param(T((256,)), "dense0_bias")
    w1, b1 = b.param(T((10, 256)), "dense1_weight"), b.param(T((10,)), "dense1_bias")
    (h,) = b.emit("fully_connected", [x, w0, b0], num_hidden=256, name="mlp0_dense0_fwd",
                  loc="train.py:12")
    (r,) = b.emit("relu", [h], name="mlp0_dense0_relu_fwd")
    (y,) = b.emit("fully_connected", [r, w1, b1], num_hidden=10, name="mlp0_dense1_fwd")
    return b.build([y])


def tooltips(text):
    return {k: re.search(r'tooltip="((?:[^"\\]|\\.)*)"', style).group(1)
            for k, (_, style) in read(text)[0].items() if "tooltip=" in style}


def test_mlp_with_and_without_weights():
    g = seed_mlp()
    shown = to_dot(g)
    nodes, edges, _ = read(shown)
    assert sorted(lab for k, (lab, _) in nodes.items() if k.startswith("param")) == \
        ["dense0_bias", "dense0_weight", "dense1_bias", "dense1_weight"]
    assert len(edges) == 8  # 3 + 1 + 3 inputs, 1 output
    hidden = to_dot(g, weights=False)
    nodes, edges, _ = read(hidden)
    assert not any(k.startswith("param") for k in nodes) and "weight" not in hidden.split(
        "tooltip")[0]
    assert [(s[:2], d[:1]) for s, d, _ in edges] == [("in", "n"), ("n1", "n"), ("n2", "n"),
                                                      ("n3", "o")]
    assert [lab for _, _, lab in edges] == ["f32[2,784]", "f32[2,256]", "f32[2,256]",
                                            "f32[2,10]"]
    # what the drawing leaves out is in the tooltips: every attribute, types, params, line
    tip = tooltips(hidden)["n1"]
    assert tip.split("\\n") == [
        "name: mlp0_dense0_fwd", "op: fully_connected", "  flatten=True", "  no_bias=False",
        "  num_hidden=256", "in[0]: data f32[2,784]", "param[1]: dense0_weight f32[256,784]",
        "param[2]: dense0_bias f32[256]", "out[0]: f32[2,256]", "at: train.py:12"]
    assert 'class="op"' in nodes["n1"][1] and 'class="input"' in nodes["in0"][1]


def test_tooltips_carry_arena_offsets():
    g = seed_mlp()
    g.nodes[0].outputs[0].mem = ("arena", 0)
    g.nodes[1].outputs[0].mem = ("arena", 2048)
    tips = tooltips(to_dot(g, weights=False))
    relu = next(t for t in tips.values() if "op: relu" in t)
    assert "in[0]: mlp0_dense0_fwd f32[2,256] @arena+0" in relu
    assert "out[0]: f32[2,256] @arena+2048" in relu


def unit_stack(units=3, width=4, prefix="net0", downsample_first=False):
    """``units`` residual units (fc, relu, fc, add, relu), each its own Gluon scope
    ``{prefix}_unit{k}``, or all in one scope ``{prefix}`` when ``prefix`` ends in '!'."""
    b = GraphBuilder("stack")
    h = b.input(T((2, width)), "data")
    for k in range(units):
        scope = prefix[:-1] if prefix.endswith("!") else f"{prefix}_unit{k}"
        w0, w1 = b.param(T((width, width)), f"w{k}a"), b.param(T((width, width)), f"w{k}b")
        skip = h
        if downsample_first and k == 0:
            ws = b.param(T((width, width)), "ws")
            (skip,) = b.emit("fully_connected", [h, ws], num_hidden=width, no_bias=True,
                             name=f"{scope}_down0_fwd")
        (a,) = b.emit("fully_connected", [h, w0], num_hidden=width, no_bias=True,
                      name=f"{scope}_dense{2 * k}_fwd")
        (a,) = b.emit("relu", [a], name=f"{scope}_relu{k}")
        (a,) = b.emit("fully_connected", [a, w1], num_hidden=width, no_bias=True,
                      name=f"{scope}_dense{2 * k + 1}_fwd")
        (a,) = b.emit("elemwise_add", [skip, a], name=f"{scope}__plus{k}")
        (h,) = b.emit("relu", [a], name=f"{scope}_activation{k}")
    (y,) = b.emit("sum", [h], name="head0_sum0")
    return b.build([y])


def groups_of(text):
    nodes = read(text)[0]
    return {k: lab for k, (lab, style) in nodes.items() if 'class="group"' in style}


def test_collapse_repeated_blocks_into_one_box():
    g = unit_stack()
    text = to_dot(g, weights=False, collapse=2)
    boxes = groups_of(text)
    assert list(boxes.values()) == ["net0_unit0..2\\n3 units x 5 ops\\nfully_connected x6\\n"
                                    "relu x6\\nelemwise_add x3"]
    (box,) = boxes
    nodes, edges, _ = read(text)
    assert [lab for lab, _ in nodes.values() if not lab.startswith("net0")] == \
        ["data", "sum\\n(head0_sum0)", "output 0"]
    assert ("in0", box, "f32[2,4]") in edges and sum(d == box for _, d, _ in edges) == 1
    assert to_dot(g, weights=False, collapse="unit\\d+") == text  # the same, by name
    assert not groups_of(to_dot(g, collapse=3))  # no scope 3 deep: nothing collapses
    # with the weights drawn, each of the box's weights is one edge into it
    shown = to_dot(g, collapse=2)
    (box,) = groups_of(shown)
    assert sum(d == box for _, d, _ in read(shown)[1]) == 7


def test_collapse_finds_units_inside_one_scope():
    # Gluon's ResNet stages: the residual units have no scope of their own
    same = groups_of(to_dot(unit_stack(2, prefix="stage1!"), collapse=1))
    assert [lab.split("\\n")[:2] for lab in same.values()] == [["stage1", "2 units x 5 ops"]]
    down = groups_of(to_dot(unit_stack(2, prefix="stage2!", downsample_first=True),
                            collapse="stage\\d"))
    assert [lab.split("\\n")[:2] for lab in down.values()] == [["stage2", "2 units, 11 ops"]]
    # sibling blocks whose attributes differ are separate boxes
    g = unit_stack(2)
    g.nodes[0].attrs = (("no_bias", True), ("num_hidden", 4), ("flatten", False))
    assert [lab.split("\\n")[:2] for lab in groups_of(to_dot(g, collapse=2)).values()] == \
        [["net0_unit0", "5 ops"], ["net0_unit1", "5 ops"]]


def test_collapse_leaves_a_non_convex_scope_expanded():
    # a0 -> b -> a1 with a0, a1 in scope blk0 and b outside: one box would draw a cycle
    b = GraphBuilder("g")
    x = b.input(T((2, 3)), "x")
    (h,) = b.emit("relu", [x], name="blk0_relu0")
    (h,) = b.emit("exp", [h], name="other0_exp0")
    (h,) = b.emit("tanh", [h], name="blk0_tanh0")
    text = to_dot(b.build([h]), collapse=1)
    assert not groups_of(text) and len(read(text)[0]) == 5


def test_collapse_of_fused_nodes_and_bad_specs():
    from ember.passes import run_pipeline
    g = run_pipeline(unit_stack(2), ["infer_shapes", "fuse", "plan_memory"])
    text = to_dot(g, collapse=2)
    (lab,) = groups_of(text).values()
    assert lab.startswith("net0_unit0..1\\n2 units x 5 ops")  # fused bodies counted as ops
    assert "cluster" not in text and "@arena+" in text
    with pytest.raises(ValueError, match="a depth is 1 or more"):
        to_dot(g, collapse=0)
    with pytest.raises(ValueError, match="not a depth or a regular expression"):
        to_dot(g, collapse="stage(")


def test_scope_paths():
    from ember.ir.dot_groups import scope_path
    assert scope_path("resnetv10_stage1_conv0_fwd") == ("resnetv10", "stage1", "conv0")
    assert scope_path("resnetv10_stage1__plus0") == ("resnetv10", "stage1")
    assert scope_path("resnetv10_stage1_activation0") == ("resnetv10", "stage1")
    assert scope_path("hybridsequential0_dense0_relu_fwd") == ("hybridsequential0", "dense0")
    assert scope_path("relu") == () and scope_path(None) == ()
