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
