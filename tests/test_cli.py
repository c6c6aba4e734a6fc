"""The ``ember`` command: viz, summary, ir, demo; exit codes through main() and python -m."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ember as mx
from ember.cli import main

MODELS = Path(__file__).parent / "data" / "mxnet_models"
MLP_JSON = str(MODELS / "mlp-symbol.json")
CNN_JSON = str(MODELS / "cnn-symbol.json")
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot missing")


def run_module(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ember", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


@pytest.mark.parametrize("cmd", [[], ["viz"], ["summary"], ["ir"], ["demo"]])
def test_help_everywhere(cmd, capsys):
    assert main([*cmd, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: ember {' '.join(cmd)}".rstrip())


@pytest.mark.parametrize("argv", [[], ["bogus"], ["viz"], ["viz", MLP_JSON, "--after"],
                                  ["ir", MLP_JSON, "--after", "nosuchpass",
                                   "--input-shape", "4,8"],
                                  ["ir", MLP_JSON, "--after", "fuse"],
                                  ["summary", MLP_JSON, "--input-shape", "4,a"],
                                  ["summary", "ember.demo:build_mlp"],
                                  ["summary", "not-a-model"]])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_failures_exit_1_with_one_line(tmp_path, capsys):
    assert main(["viz", str(tmp_path / "missing.json")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.json" in err and "Traceback" not in err
    bad = tmp_path / "bad-symbol.json"
    bad.write_text("{not json")
    assert main(["summary", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "not a symbol JSON document" in err or "is not valid JSON" in err
    with pytest.raises(FileNotFoundError):  # --debug: the exception itself
        main(["viz", "--debug", str(tmp_path / "missing.json")])


def test_exit_codes_through_python_m(tmp_path):
    ok = run_module("summary", MLP_JSON, "--input-shape", "4,8")
    assert ok.returncode == 0 and "Total params: 212" in ok.stdout
    usage = run_module("viz")
    assert usage.returncode == 2 and "usage: ember viz" in usage.stderr
    fail = run_module("ir", str(tmp_path / "nope.json"))
    assert fail.returncode == 1 and "Traceback" not in fail.stderr
    assert len(fail.stderr.strip().splitlines()) == 1
    debug = run_module("ir", "--debug", str(tmp_path / "nope.json"))
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_summary_numbers(capsys):
    assert main(["summary", CNN_JSON, "--input-shape", "data=4,1,8,8"]) == 0
    out = capsys.readouterr().out
    assert "cnn_batchnorm0_fwd(BatchNorm)" in out and "Total params: 159" in out
    assert main(["summary", CNN_JSON]) == 0  # no shapes: cnn-0000.params next to it has them
    assert "Total params: 159" in capsys.readouterr().out
    # module:callable: 784*256 + 256 + 256*10 + 10
    assert main(["summary", "ember.demo:build_mlp", "--input-shape", "1,784"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 203530" in out and "(FullyConnected)" in out


def summary_rows(out: str) -> tuple[int, list[int]]:
    counts = [int(line[76:88]) for line in out.splitlines()
              if ")" in line[:52] and line[76:88].strip().isdigit()]
    total = int(next(line for line in out.splitlines() if line.startswith("Total")).split()[2])
    return total, counts


@pytest.mark.parametrize("model,shape", [(MLP_JSON, "4,8"), (CNN_JSON, "4,1,8,8")])
def test_summary_counts_equal_mxnets_where_its_rules_hold(model, shape, capsys, tmp_path):
    # MXNet's print_summary (viz.summary_text) guesses counts from input dims; on these
    # files its guesses are right, and ember summary's exact counts must be the same rows
    from ember import viz
    expected = summary_rows(viz.summary_text(mx.sym.load(model), {"data": tuple(
        int(d) for d in shape.split(","))}))
    assert main(["summary", model, "--input-shape", shape]) == 0
    assert summary_rows(capsys.readouterr().out) == expected
    lone = tmp_path / Path(model).name  # no parameter file beside it
    shutil.copy(model, lone)
    assert main(["summary", str(lone), "--input-shape", shape]) == 0
    assert summary_rows(capsys.readouterr().out) == expected


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory):
    """The demo's MLP on image-shaped input (1, 1, 28, 28): its export pair and package."""
    from ember.demo import build_mlp
    net = build_mlp()
    net.initialize()
    net.hybridize()
    x = mx.nd.array(np.ones((1, 1, 28, 28), np.float32))
    net(x)
    out = tmp_path_factory.mktemp("demo")
    net.export(str(out / "mlp"))
    mx.export(net, out / "mlp-aot", x)
    sizes = sum(p.data().size for p in net.collect_params().values())
    return out, sizes


def test_summary_of_the_demo_files_counts_every_weight(demo_files, capsys, tmp_path):
    # MXNet's rule counts a Dense on 4-D input as (channels + 1) * units: 3082, not 203530
    out, sizes = demo_files
    assert sizes == 784 * 256 + 256 + 256 * 10 + 10
    for argv in (["summary", str(out / "mlp-symbol.json")],  # shapes from mlp-0000.params
                 ["summary", str(out / "mlp-symbol.json"), "--input-shape", "1,1,28,28"],
                 ["summary", str(out / "mlp-aot")]):
        assert main(argv) == 0
        assert summary_rows(capsys.readouterr().out) == (sizes, [0, 200960, 0, 2570])
    lone = tmp_path / "mlp-symbol.json"
    shutil.copy(out / "mlp-symbol.json", lone)
    assert main(["summary", str(lone), "--params", str(out / "mlp-0000.params")]) == 0
    assert summary_rows(capsys.readouterr().out)[0] == sizes
    assert main(["summary", str(lone)]) == 1  # nothing to learn the weights' shapes from
    err = capsys.readouterr().err
    assert "cannot count parameters" in err and "_dense0_weight" in err
    assert "Total params" not in capsys.readouterr().out


def test_ir_after_every_pass(capsys):
    assert main(["ir", MLP_JSON, "--input-shape", "4,8"]) == 0
    out = capsys.readouterr().out
    names = ("infer_shapes", "simplify", "fold_batch_norm", "fuse", "plan_memory")
    for name in names:
        assert f"# ---- IR after pass {name} (" in out
    assert out.count("graph mlp(%data: f32[4,8])") == len(names)
    assert "# memory: naive " in out and " lower bound " in out and " arena " in out


def test_ir_after_one_pass(capsys):
    assert main(["ir", MLP_JSON, "--input-shape", "4,8", "--after", "fuse", "--no-meta"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines[:4]] == \
        ["# pass infer_shapes", "# pass simplify", "# pass fold_batch_norm", "# pass fuse"]
    assert lines[4].startswith("# ---- IR after pass fuse (")
    assert " fused(" in out and "@arena" not in out and "# meta:" not in out
    assert main(["ir", MLP_JSON, "--input-shape", "4,8", "--after", "trace"]) == 0
    assert "f32[*]" in capsys.readouterr().out  # the file's graph, before inference


def test_ir_with_gradients(capsys):
    assert main(["ir", MLP_JSON, "--input-shape", "4,8", "--grad", "--after", "autodiff"]) == 0
    assert "# ---- IR after pass autodiff (" in capsys.readouterr().out


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    from ember.demo import build_mlp
    net = build_mlp()
    net.initialize()
    x = mx.nd.array(np.ones((2, 784), np.float32))
    return mx.export(net, tmp_path_factory.mktemp("cli") / "mlp-pkg", x)


def test_models_from_packages(package, capsys, tmp_path):
    assert main(["ir", str(package)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# ---- IR after package graph.ir ----")
    assert "@arena+" in out and "# memory: naive" in out
    assert main(["summary", str(package)]) == 0
    assert "Total params: 203530" in capsys.readouterr().out
    assert main(["viz", str(package), "-o", str(tmp_path / "p.dot")]) == 0
    assert "subgraph cluster_0" in (tmp_path / "p.dot").read_text()
    assert main(["ir", str(package), "--input-shape", "1,784"]) == 2


def test_viz_dot_content(tmp_path, capsys):
    out = tmp_path / "cnn.dot"
    assert main(["viz", CNN_JSON, "--input-shape", "4,1,8,8", "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    text = out.read_text()
    assert 'label="data", shape=ellipse' in text
    assert 'label="cnn_conv0_weight"' not in text  # weights hidden, as in mx.viz
    assert "param[1]: cnn_conv0_weight f32[4,1,3,3]" in text  # but in the conv's tooltip
    assert 'label="f32[4,4,6,6]"' in text and "cluster" not in text and "@arena" not in text
    assert main(["viz", CNN_JSON, "--input-shape", "4,1,8,8", "--show-weights",
                 "-o", str(out)]) == 0
    assert 'label="cnn_conv0_weight", shape=box, style=filled' in out.read_text()
    assert main(["viz", "ember.demo:build_mlp", "--input-shape", "2,784", "--after", "fuse",
                 "--no-shapes", "-o", str(out)]) == 0
    text = out.read_text()
    assert "subgraph cluster_0" in text and "fused_fully_connected_activation_0" in text
    assert not re.search(r"-> \w+ \[label=", text)  # no edge labels (types in tooltips)
    assert main(["viz", "ember.demo:build_mlp", "--input-shape", "2,784", "--after",
                 "plan_memory", "-o", str(out)]) == 0
    assert "@arena+" in out.read_text()


def test_viz_collapses_resnet18_stages(tmp_path, capsys):
    out = tmp_path / "r18.dot"
    assert main(["viz", "ember.gluon.model_zoo.vision:resnet18_v1", "--input-shape",
                 "1,3,32,32", "--collapse", "2", "-o", str(out)]) == 0
    text = out.read_text()
    boxes = re.findall(r'\[label="([^"]*)", shape=box, style="rounded,filled,bold"', text)
    assert [b.split("\\n")[:2] for b in boxes] == [
        ["resnetv10_stage1", "2 units x 7 ops"], ["resnetv10_stage2", "2 units, 16 ops"],
        ["resnetv10_stage3", "2 units, 16 ops"], ["resnetv10_stage4", "2 units, 16 ops"]]
    assert "convolution x5\\nbatch_norm x5\\nactivation x4\\nelemwise_add x2" in boxes[1]
    assert "_weight" not in text.split("tooltip")[0] and text.count('class="op"') == 6
    assert main(["viz", "ember.gluon.model_zoo.vision:resnet18_v1", "--input-shape",
                 "1,3,32,32", "--collapse", "stage[12]", "-o", str(out)]) == 0
    assert out.read_text().count('class="group"') == 2
    assert main(["viz", MLP_JSON, "--collapse", "(", "-o", str(out)]) == 1
    assert "not a depth or a regular expression" in capsys.readouterr().err


def test_viz_without_graphviz(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert main(["viz", MLP_JSON, "-o", str(tmp_path / "m.svg")]) == 1
    assert "apt-get install graphviz" in capsys.readouterr().err
    assert not (tmp_path / "m.svg").exists()


@needs_dot
@pytest.mark.parametrize("ext,magic", [("svg", b"<?xml"), ("png", b"\x89PNG"),
                                       ("pdf", b"%PDF"), ("html", b"<!DOCTYPE html>")])
def test_viz_images(tmp_path, ext, magic):
    out = tmp_path / f"lenet.{ext}"
    assert main(["viz", "ember.demo:build_lenet", "--input-shape", "1,1,28,28", "--after",
                 "fuse", "-o", str(out)]) == 0
    assert out.read_bytes().startswith(magic)


def test_viz_default_output_name(tmp_path):
    proc = run_module("viz", MLP_JSON, "--input-shape", "4,8", cwd=tmp_path)
    if shutil.which("dot") is None:
        assert proc.returncode == 1 and "graphviz" in proc.stderr
    else:
        assert proc.returncode == 0 and (tmp_path / "mlp.svg").is_file()


def test_demo_toy_and_save_model(tmp_path, capsys):
    assert main(["demo", "--toy", "--steps", "60"]) == 0
    assert "max |w - w_true|" in capsys.readouterr().out
    from ember.demo import build_mlp, save_model
    net = build_mlp()
    net.initialize()
    save_model(net, mx.nd.ones((1, 784)), str(tmp_path))
    out = capsys.readouterr().out
    assert "AOT package" in out and "graph picture" in out
    pkg = mx.load(tmp_path / "mlp-aot")
    assert pkg(np.ones((1, 784), np.float32)).shape == (1, 10)
    pictures = [p for p in os.listdir(tmp_path) if p.startswith("mlp.")]
    assert pictures == (["mlp.svg"] if shutil.which("dot") else ["mlp.dot"])
