"""ember.export / ember.load: AOT packages round-trip in a fresh process, and refuse damage."""
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import ember as mx
from ember import nd
from ember.aot import FORMAT_VERSION
from ember.base import MXNetError
from ember.gluon import nn
from ember.ir.printer import parse_graph

# A script that knows nothing of the models: it imports ember only, makes tracing fail
# loudly, loads the package and saves what it computes.
LOADER = textwrap.dedent("""
    import sys
    import numpy as np
    import ember
    from ember.gluon import cached_op

    def no_tracing(*args, **kwargs):
        raise AssertionError("ember.load traced the model")
    cached_op.trace = no_tracing
    pkg = ember.load(sys.argv[1])
    x = np.load(sys.argv[2])
    out = pkg(x)
    np.save(sys.argv[3], out.asnumpy())
    print(pkg.kernels_regenerated, len(pkg.manifest["kernels"]))
""")


def mlp():
    net = nn.HybridSequential()
    with net.name_scope():
        net.add(nn.Dense(32, activation="relu"), nn.Dropout(0.5), nn.Dense(10))
    return net


def cnn():
    net = nn.HybridSequential()
    with net.name_scope():
        net.add(nn.Conv2D(4, 3, padding=1), nn.BatchNorm(), nn.Activation("relu"),
                nn.MaxPool2D(), nn.Flatten(), nn.Dense(5))
    return net


def built(kind):
    mx.random.seed(3)
    net = mlp() if kind == "mlp" else cnn()
    net.initialize(mx.init.Xavier())
    shape = (3, 20) if kind == "mlp" else (2, 1, 8, 8)
    x = nd.array(np.random.default_rng(0).uniform(-1, 1, shape))
    net(x)  # parameters get their shapes
    for p in net.collect_params().values():  # running statistics off their start values
        if p.name.endswith(("running_mean", "running_var")):
            p.set_data(nd.array(np.linspace(0.5, 1.5, p.shape[0])))
    return net, x


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_round_trip_in_a_fresh_process(kind, tmp_path):
    net, x = built(kind)
    expected = net(x).asnumpy()  # predict mode: Dropout off, BatchNorm on running stats
    pkg = mx.export(net, tmp_path / "pkg", x)
    np.save(tmp_path / "x.npy", x.asnumpy())
    (tmp_path / "load.py").write_text(LOADER)
    proc = subprocess.run([sys.executable, "load.py", str(pkg), "x.npy", "y.npy"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    regenerated, n_kernels = map(int, proc.stdout.split())
    assert regenerated == 0 and n_kernels > 0  # every kernel came from the package
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-6)


def test_package_contents(tmp_path):
    net, x = built("cnn")
    pkg = mx.export(net, tmp_path / "cnn", x)
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["ember_version"] == mx.__version__ and manifest["backend"] == "cpu"
    assert manifest["inputs"] == [{"name": "data0", "shape": [2, 1, 8, 8],
                                   "dtype": "float32"}]
    assert manifest["outputs"][0]["shape"] == [2, 5]
    assert [p["name"] for p in manifest["params"]] == list(net.collect_params().keys())
    assert set(manifest["files"]) == {"graph.ir", "params.npz", "symbol.json",
                                      *manifest["kernels"]}
    m = manifest["memory"]
    assert 0 < m["lower_bound_bytes"] <= m["arena_bytes"] <= m["naive_bytes"]
    text = (pkg / "graph.ir").read_text()
    assert "@arena+" in text
    assert len(parse_graph(text).params) == len(manifest["params"])
    for rel in manifest["kernels"]:
        assert "def kernel(" in (pkg / rel).read_text()
    assert sorted(os.listdir(tmp_path)) == ["cnn"]  # no temporary directory left


def test_function_export_keeps_output_structure(tmp_path):
    net, x = built("mlp")

    def two_heads(data):
        y = net(data)
        return y.softmax(), (y * 2.0, nd.relu(y))

    pkg = mx.load(mx.export(two_heads, tmp_path / "f", x))
    assert pkg.manifest["kernels"] and pkg.kernels_regenerated == 0  # found in this process
    soft, (double, relu) = pkg(x)
    y = net(x).asnumpy()
    np.testing.assert_allclose(double.asnumpy(), 2 * y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(relu.asnumpy(), np.maximum(y, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(soft.asnumpy().sum(axis=1), 1.0, rtol=1e-5)
    with pytest.raises(MXNetError, match="must be float32"):
        pkg(np.zeros((4, 21), np.float32))
    with pytest.raises(MXNetError, match="takes 1 inputs"):
        pkg(x, x)


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    net, x = built("mlp")
    return mx.export(net, tmp_path_factory.mktemp("aot") / "mlp", x)


def copy_of(package, tmp_path) -> Path:
    import shutil
    dst = tmp_path / "copy"
    shutil.copytree(package, dst)
    return dst


def test_graph_ir_holds_fused_bodies(package):
    text = (package / "graph.ir").read_text()
    assert " = fused_fully_connected_activation_0(" in text and " fused(" in text
    assert "# meta: arena_bytes=" in text


def test_tampered_files_are_refused(package, tmp_path):
    pkg = copy_of(package, tmp_path)
    mx.load(pkg)  # intact
    with open(pkg / "params.npz", "r+b") as f:
        f.seek(-20, os.SEEK_END)
        f.write(b"\x00" * 4)
    with pytest.raises(MXNetError, match="params.npz does not match its SHA-256"):
        mx.load(pkg)
    pkg = copy_of(package, tmp_path / "b")
    kernel = json.loads((pkg / "manifest.json").read_text())["kernels"][0]
    (pkg / kernel).write_text((pkg / kernel).read_text() + "\nimport os\n")
    with pytest.raises(MXNetError, match="modified or damaged"):
        mx.load(pkg)


def test_newer_format_is_refused(package, tmp_path):
    pkg = copy_of(package, tmp_path)
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MXNetError, match=f"format version {FORMAT_VERSION + 1} is newer"):
        mx.load(pkg)


@pytest.mark.parametrize("victim", ["graph.ir", "params.npz", "kernel", "manifest.json"])
def test_missing_files_are_refused(package, tmp_path, victim):
    pkg = copy_of(package, tmp_path)
    if victim == "kernel":
        victim = json.loads((pkg / "manifest.json").read_text())["kernels"][0]
    os.remove(pkg / victim)
    with pytest.raises(MXNetError, match=f"missing {victim}|{victim} is missing"):
        mx.load(pkg)
    with pytest.raises(MXNetError, match="no ember AOT package"):
        mx.load(tmp_path / "nowhere")


class Broken(nn.HybridBlock):
    def hybrid_forward(self, F, x):
        raise MXNetError("broken on purpose")


def test_failed_export_leaves_nothing(tmp_path, monkeypatch):
    with pytest.raises(MXNetError, match="broken on purpose"):
        mx.export(Broken(), tmp_path / "pkg", nd.ones((2, 3)))
    assert os.listdir(tmp_path) == []
    net, x = built("mlp")

    def full_disk(*args, **kwargs):
        raise OSError("No space left on device")
    monkeypatch.setattr(np, "savez", full_disk)  # fails halfway through writing
    with pytest.raises(OSError, match="No space"):
        mx.export(net, tmp_path / "pkg", x)
    assert os.listdir(tmp_path) == []


def test_existing_directory_needs_overwrite(package, tmp_path):
    net, x = built("mlp")
    target = copy_of(package, tmp_path)
    before = (target / "manifest.json").read_text()
    with pytest.raises(MXNetError, match="exists"):
        mx.export(net, target, x)
    assert (target / "manifest.json").read_text() == before
    small = x[:1]
    mx.export(net, target, small, overwrite=True)
    assert mx.load(target).manifest["inputs"][0]["shape"] == [1, 20]
    assert sorted(os.listdir(tmp_path)) == ["copy"]


def test_export_refuses_what_it_cannot_trace(tmp_path):
    with pytest.raises(MXNetError, match="uninitialized"):
        mx.export(mlp(), tmp_path / "a", nd.ones((2, 3)))
    with pytest.raises(MXNetError, match="HybridBlock"):
        mx.export(object(), tmp_path / "b", nd.ones((2, 3)))
    with pytest.raises(MXNetError, match="NDArrays or NumPy"):
        mx.export(lambda a: a, tmp_path / "c", ["text"])
    assert os.listdir(tmp_path) == []


def test_reference_backend_package(tmp_path):
    net, x = built("cnn")
    pkg = mx.load(mx.export(net, tmp_path / "ref", x, backend="reference"))
    assert pkg.manifest["backend"] == "reference" and pkg.manifest["kernels"] == []
    np.testing.assert_allclose(pkg(x).asnumpy(), net(x).asnumpy(), rtol=1e-5, atol=1e-6)


# ---- the package is data: nothing in it runs, nothing outside it is read -----------------------
def rehash(pkg: Path, **changes) -> dict:
    """What anyone who can edit a package can do: update the manifest and its hashes."""
    from ember.aot_read import sha256
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest.update(changes)
    manifest["files"] = {rel: sha256(pkg / rel) if (pkg / rel).is_file() else digest
                         for rel, digest in manifest["files"].items()}
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def test_shipped_kernel_sources_are_never_run(package, tmp_path):
    net, x = built("mlp")
    pkg = copy_of(package, tmp_path)
    marker = tmp_path / "pwned"
    evil = f"open({str(marker)!r}, 'w').close()\n"
    kernels = json.loads((pkg / "manifest.json").read_text())["kernels"]
    for rel in kernels:
        (pkg / rel).write_text(evil + (pkg / rel).read_text().replace("+", "-"))
    rehash(pkg)
    loaded = mx.load(pkg)
    np.testing.assert_allclose(loaded(x).asnumpy(), net(x).asnumpy(), rtol=1e-5, atol=1e-6)
    assert not marker.exists()
    assert loaded.kernels_regenerated == len(kernels)  # none of the shipped ones was used


@pytest.mark.parametrize("rel", ["../outside.py", "/tmp/outside.py", "kernels/../../o.py",
                                 "kernels\\..\\o.py", "C:/o.py", ""])
def test_manifest_paths_stay_inside_the_package(package, tmp_path, rel):
    pkg = copy_of(package, tmp_path)
    marker = tmp_path / "pwned"
    (tmp_path / "outside.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["kernels"].append(rel)  # listed as a kernel, hashed or not
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MXNetError, match="one of its 'files'"):
        mx.load(pkg)
    manifest["files"][rel] = "0" * 64
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MXNetError, match="outside the package|not a path inside"):
        mx.load(pkg)
    assert not marker.exists()


def test_symbolic_links_are_refused(package, tmp_path):
    pkg = copy_of(package, tmp_path)
    rel = json.loads((pkg / "manifest.json").read_text())["kernels"][0]
    outside = tmp_path / "outside.py"
    outside.write_text((pkg / rel).read_text())
    (pkg / rel).unlink()
    (pkg / rel).symlink_to(outside)  # same bytes, same hash: still refused
    with pytest.raises(MXNetError, match="symbolic link"):
        mx.load(pkg)
    pkg = copy_of(package, tmp_path / "b")
    shutil_move = (pkg / "kernels").rename(tmp_path / "kernels")
    (pkg / "kernels").symlink_to(shutil_move)
    with pytest.raises(MXNetError, match="symbolic link"):
        mx.load(pkg)


def npz_bytes(**arrays) -> bytes:
    import io
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_hostile_params_archives_give_mxnet_errors(package, tmp_path):
    good = (package / "params.npz").read_bytes()
    names = [p["name"] for p in json.loads((package / "manifest.json").read_text())["params"]]
    with np.load(package / "params.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    huge_header = npz_bytes(**arrays).replace(b"'shape': (32, 20)", b"'shape': (9999999999,")
    cases = {
        "truncated": good[:len(good) // 2],
        "empty": b"",
        "pickled objects": npz_bytes(**{**arrays, names[0]: np.array([{"a": 1}],
                                                                       dtype=object)}),
        "declared too big": huge_header,
        "wrong shape": npz_bytes(**{**arrays, names[0]: arrays[names[0]][:3]}),
        "missing": npz_bytes(**{k: v for k, v in arrays.items() if k != names[0]}),
    }
    assert huge_header != npz_bytes(**arrays)
    for what, data in cases.items():
        pkg = copy_of(package, tmp_path / what.replace(" ", "_"))
        (pkg / "params.npz").write_bytes(data)
        rehash(pkg)
        with pytest.raises(MXNetError, match="params.npz") as e:
            mx.load(pkg)
        assert type(e.value).__name__ in ("MXNetError", "EmberError"), what


def test_graph_ir_is_verified_and_its_memory_plan_is_not_trusted(package, tmp_path):
    net, x = built("mlp")
    pkg = copy_of(package, tmp_path)
    text = (pkg / "graph.ir").read_text()
    (pkg / "graph.ir").write_text(re.sub(r"@arena\+\d+", "@arena+0", text))  # all aliased
    rehash(pkg)
    np.testing.assert_allclose(mx.load(pkg)(x).asnumpy(), net(x).asnumpy(), rtol=1e-5,
                               atol=1e-6)
    (pkg / "graph.ir").write_text(text.replace("f32[3,32]", "f32[3,33]", 1))  # types lie
    rehash(pkg)
    with pytest.raises(MXNetError, match="graph.ir"):
        mx.load(pkg)
