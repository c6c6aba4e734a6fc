"""ember.viz: print_summary against MXNet 1.9.1's numbers, plot_network, DOT/HTML output."""
import io
import json
import re
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import pytest

import ember as mx
from ember import viz
from ember.base import MXNetError
from ember.ir.graph import GraphBuilder
from ember.ir.types import TensorType
from ember.passes import run_pipeline

MODELS = Path(__file__).parent / "data" / "mxnet_models"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot missing")

# mx.viz.print_summary rows (layer, output shape, params, previous layer) and totals, as
# MXNet 1.9.1 printed them for these files (/tmp/mxvenv, mxnet==1.9.1).
MXNET_ROWS = {
    ("mlp", True): (212, [
        ("data(null)", "8", 0, ""),
        ("mlp_dense0_fwd(FullyConnected)", "16", 144, "data"),
        ("mlp_dense0_relu_fwd(Activation)", "16", 0, "mlp_dense0_fwd"),
        ("mlp_dense1_fwd(FullyConnected)", "4", 68, "mlp_dense0_relu_fwd")]),
    ("mlp", False): (20, [
        ("data(null)", "", 0, ""),
        ("mlp_dense0_fwd(FullyConnected)", "", 16, "data"),
        ("mlp_dense0_relu_fwd(Activation)", "", 0, "mlp_dense0_fwd"),
        ("mlp_dense1_fwd(FullyConnected)", "", 4, "mlp_dense0_relu_fwd")]),
    ("cnn", True): (159, [
        ("data(null)", "1x8x8", 0, ""),
        ("cnn_conv0_fwd(Convolution)", "4x6x6", 40, "data"),
        ("cnn_batchnorm0_fwd(BatchNorm)", "4x6x6", 8, "cnn_conv0_fwd"),
        ("cnn_relu0_fwd(Activation)", "4x6x6", 0, "cnn_batchnorm0_fwd"),
        ("cnn_pool0_fwd(Pooling)", "4x3x3", 0, "cnn_relu0_fwd"),
        ("cnn_flatten0_flatten0(Flatten)", "36", 0, "cnn_pool0_fwd"),
        ("cnn_dense0_fwd(FullyConnected)", "3", 111, "cnn_flatten0_flatten0")]),
    ("cnn", False): (7, [
        ("data(null)", "", 0, ""),
        ("cnn_conv0_fwd(Convolution)", "", 4, "data"),
        ("cnn_batchnorm0_fwd(BatchNorm)", "", 0, "cnn_conv0_fwd"),
        ("cnn_relu0_fwd(Activation)", "", 0, "cnn_batchnorm0_fwd"),
        ("cnn_pool0_fwd(Pooling)", "", 0, "cnn_relu0_fwd"),
        ("cnn_flatten0_flatten0(Flatten)", "", 0, "cnn_pool0_fwd"),
        ("cnn_dense0_fwd(FullyConnected)", "", 3, "cnn_flatten0_flatten0")]),
}
SHAPES = {"mlp": (4, 8), "cnn": (4, 1, 8, 8)}

# A branching symbol written by MXNet 1.9.1 (grouped conv without bias, concat, BatchNorm),
# and MXNet's rows for data=(2, 4, 6, 6): total 643.
BRANCH_JSON = (
    '{"nodes":[{"op":"null","name":"data","inputs":[]},{"op":"null","name":"conv_weight",'
    '"inputs":[]},{"op":"Convolution","name":"conv","attrs":{"kernel":"(3, 3)","no_bias":'
    '"True","num_filter":"4","num_group":"2"},"inputs":[[0,0,0],[1,0,0]]},{"op":"null",'
    '"name":"side_weight","inputs":[]},{"op":"null","name":"side_bias","inputs":[]},{"op":'
    '"Convolution","name":"side","attrs":{"kernel":"(3, 3)","num_filter":"2","stride":'
    '"(1, 1)"},"inputs":[[0,0,0],[3,0,0],[4,0,0]]},{"op":"Concat","name":"cat","attrs":'
    '{"dim":"1","num_args":"2"},"inputs":[[2,0,0],[5,0,0]]},{"op":"null","name":"bn_gamma",'
    '"inputs":[]},{"op":"null","name":"bn_beta","inputs":[]},{"op":"null","name":'
    '"bn_moving_mean","inputs":[]},{"op":"null","name":"bn_moving_var","inputs":[]},{"op":'
    '"BatchNorm","name":"bn","inputs":[[6,0,0],[7,0,0],[8,0,0],[9,0,1],[10,0,1]]},{"op":'
    '"Flatten","name":"flat","inputs":[[11,0,0]]},{"op":"null","name":"fc_weight","inputs":'
    '[]},{"op":"null","name":"fc_bias","inputs":[]},{"op":"FullyConnected","name":"fc",'
    '"attrs":{"num_hidden":"5"},"inputs":[[12,0,0],[13,0,0],[14,0,0]]}],"arg_nodes":'
    '[0,1,3,4,7,8,9,10,13,14],"node_row_ptr":[0,1,2,3,4,5,6,7,8,9,10,11,14,15,16,17,18],'
    '"heads":[[15,0,0]],"attrs":{"mxnet_version":["int",10901]}}')
BRANCH_ROWS = (643, [
    ("data(null)", "4x6x6", 0, ""), ("conv(Convolution)", "4x4x4", 72, "data"),
    ("side(Convolution)", "2x4x4", 74, "data"), ("cat(Concat)", "6x4x4", 0, "conv"),
    ("", "", "", "side"), ("bn(BatchNorm)", "6x4x4", 12, "cat"),
    ("flat(Flatten)", "96", 0, "bn"), ("fc(FullyConnected)", "5", 485, "flat")])


def parse_table(text: str):
    """(total, rows) of a print_summary table at MXNet's default column positions."""
    lines = text.splitlines()
    assert all(len(line) == 120 for line in lines if not line.startswith("Total"))
    assert lines[1].split() == ["Layer", "(type)", "Output", "Shape", "Param", "#",
                                "Previous", "Layer"]
    rows, total = [], None
    for line in lines[3:]:
        if line.startswith("Total params: "):
            total = int(line.split(": ")[1])
        elif line.strip("_=") and line.strip():
            cols = [line[:52].strip(), line[52:76].strip(), line[76:88].strip(),
                    line[88:].strip()]
            cols[2] = int(cols[2]) if cols[2] else ""
            rows.append(tuple(cols))
    return total, rows


@pytest.mark.parametrize("name,with_shape", list(MXNET_ROWS))
def test_print_summary_matches_mxnet(name, with_shape):
    sym = mx.sym.load(str(MODELS / f"{name}-symbol.json"))
    buf = io.StringIO()
    with redirect_stdout(buf):
        mx.viz.print_summary(sym, shape={"data": SHAPES[name]} if with_shape else None)
    assert parse_table(buf.getvalue()) == MXNET_ROWS[(name, with_shape)]


def test_print_summary_branches_match_mxnet():
    sym = mx.sym.load_json(BRANCH_JSON)
    text = viz.summary_text(sym, shape={"data": (2, 4, 6, 6)})
    assert parse_table(text) == BRANCH_ROWS
    assert text.splitlines()[-2] == "Total params: 643"


def test_print_summary_layout_options():
    sym = mx.sym.load(str(MODELS / "mlp-symbol.json"))
    text = viz.summary_text(sym, shape={"data": (4, 8)}, line_length=80)
    assert text.splitlines()[0] == "_" * 80
    with pytest.raises(TypeError):
        viz.print_summary("not a symbol")


def test_plot_network_is_mxnet_style():
    sym = mx.sym.load(str(MODELS / "cnn-symbol.json"))
    dot = viz.plot_network(sym, shape={"data": (4, 1, 8, 8)}, title="cnn")
    src = dot.source
    assert src.startswith('digraph "cnn" {')
    assert '"cnn_conv0_fwd" [label="Convolution\\n3x3/1x1, 4"' in src
    assert '"cnn_pool0_fwd" [label="Pooling\\nmax, 2x2/2x2"' in src
    assert "weight" not in src and "gamma" not in src  # weights hidden
    assert '"cnn_relu0_fwd" -> "cnn_batchnorm0_fwd" [dir=back, arrowtail=open, ' \
           'label="4x6x6"]' in src
    shown = viz.plot_network(sym, hide_weights=False).source
    assert '  "cnn_conv0_weight" [' not in shown  # MXNet leaves weights out as nodes...
    assert '-> "cnn_conv0_weight"' in shown  # ...but keeps their edges (empty ovals)


@needs_dot
def test_digraph_render(tmp_path):
    sym = mx.sym.load(str(MODELS / "mlp-symbol.json"))
    dot = viz.plot_network(sym, save_format="svg")
    out = dot.render(str(tmp_path / "net"))
    assert out.endswith("net.svg") and Path(out).read_text().lstrip().startswith("<?xml")
    assert (tmp_path / "net").read_text() == dot.source
    assert dot.pipe("png")[:8] == b"\x89PNG\r\n\x1a\n"


def fused_graph():
    b = GraphBuilder("g")
    x = b.input(TensorType((2, 8)), "x")
    w = b.param(TensorType((4, 8)), "w")
    bias = b.param(TensorType((4,)), "b")
    h, = b.emit("fully_connected", [x, w, bias], num_hidden=4)
    y, = b.emit("relu", [h])
    z, = b.emit("sum", [y])
    return run_pipeline(b.build([z]), ["infer_shapes", "fuse", "plan_memory"])


def test_graph_dot_keeps_only_body_ops_in_clusters():
    text = viz.graph_dot(fused_graph(), weights=True)
    assert "subgraph cluster_0" in text
    inside, depth = [], 0
    for line in text.splitlines():
        s = line.strip()
        if depth > 1:
            inside.append(s)
        depth += s.endswith("{") - (s == "}")
    assert inside and not any("->" in s for s in inside)  # edges all at the top level
    assert 'label="f32[2,8]"' in text and "@arena+" in text
    assert re.search(r'param\d+ -> n\d+ \[label="f32\[4,8\]"\];', text)


def test_graph_dot_hides_weights_unless_asked():
    hidden, shown = viz.graph_dot(fused_graph()), viz.graph_dot(fused_graph(), weights=True)
    assert not re.search(r"param\d+ ", hidden) and 'label="w"' not in hidden
    assert len(re.findall(r"param\d+ -> ", shown)) == 2
    assert "param[1]: w f32[4,8]" in hidden  # in the fused op's tooltip
    with pytest.raises(MXNetError, match="not a depth or a regular expression"):
        viz.graph_dot(fused_graph(), collapse="(")


def test_render_dot_and_errors(tmp_path):
    text = viz.graph_dot(fused_graph())
    p = viz.render(text, tmp_path / "g.dot")
    assert p.read_text() == text
    with pytest.raises(MXNetError, match="one of .dot, .svg"):
        viz.render(text, tmp_path / "g.jpeg")


def test_render_without_graphviz(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(MXNetError, match="apt-get install graphviz"):
        viz.render("digraph g {}", tmp_path / "g.svg")
    assert not (tmp_path / "g.svg").exists()
    viz.render("digraph g {}", tmp_path / "g.dot")  # DOT text needs nothing


@needs_dot
def test_render_images_and_html(tmp_path):
    text = viz.graph_dot(fused_graph())
    assert viz.render(text, tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
    assert viz.render(text, tmp_path / "g.pdf").read_bytes()[:4] == b"%PDF"
    assert "<svg" in viz.render(text, tmp_path / "g.svg").read_text()
    page = viz.render(text, tmp_path / "g.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    assert "addEventListener('wheel'" in page and "viewBox" in page
    assert not re.search(r'(src|href)="https?:', page)  # self-contained: nothing to fetch
    assert "<script src" not in page and "@import" not in page and "<link" not in page
    # a search box, and per-node tooltip data the page's script shows and searches
    assert '<input id="q" type="search"' in page and "dataset.key.includes" in page
    svg = page[page.index("<svg"):page.index("</svg>")]
    tips = re.findall(r'<g id="[^"]*" class="node (\w+)">\n<title>[^<]*</title>\n'
                      r'<g id="[^"]*"><a xlink:title="([^"]*)">', svg)
    kinds = sorted(k for k, _ in tips)
    assert kinds == ["input", "op", "op", "op"]  # x; fully_connected, relu, sum
    fc = next(t for _, t in tips if "op: fully_connected" in t)
    assert "num_hidden=4" in fc and "in[0]: x f32[2,8]" in fc
    assert "param[1]: w f32[4,8]" in fc and "@arena" not in fc  # inside the fused kernel
    relu = next(t for _, t in tips if "op: relu" in t)  # the fused group's output
    assert re.search(r"out\[0\]: f32\[2,4\] @arena\+\d+", relu)
    with pytest.raises(MXNetError, match="dot failed"):
        viz.render("digraph {{{", tmp_path / "bad.svg")


def test_symbol_to_graph_splits_inputs_and_params():
    sym = mx.sym.load(str(MODELS / "cnn-symbol.json"))
    assert viz.data_names(sym) == ["data"]
    g = run_pipeline(viz.symbol_to_graph(sym, {"data": (4, 1, 8, 8)}, "cnn"),
                     ["infer_shapes"])
    assert [v.name_hint for v in g.inputs] == ["data"]
    assert [v.name_hint for v in g.params][:2] == ["cnn_conv0_weight", "cnn_conv0_bias"]
    assert g.params[0].type.shape == (4, 1, 3, 3)
    assert g.outputs[0].type.shape == (4, 3)
    with pytest.raises(MXNetError, match="no input images"):
        viz.symbol_to_graph(sym, {"images": (1, 1, 8, 8)})
    unshaped = viz.symbol_to_graph(sym)
    assert unshaped.inputs[0].type.shape is None and len(unshaped.params) == 8


def test_summary_table_of_the_files_is_json_consistent():
    # the shapes print_summary shows come from the same infer_shape users call
    sym = mx.sym.load(str(MODELS / "cnn-symbol.json"))
    _, outs, _ = sym.get_internals().infer_shape(data=(4, 1, 8, 8))
    names = sym.get_internals().list_outputs()
    assert dict(zip(names, outs))["cnn_pool0_fwd_output"] == (4, 4, 3, 3)
    assert json.loads(sym.tojson())["heads"] == [[14, 0, 0]]
