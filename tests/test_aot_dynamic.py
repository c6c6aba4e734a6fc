"""AOT packages with a dynamic batch: exported once, run at any batch size in a fresh process;
graphs whose attributes bake the batch in stay fixed and say why."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ember as mx
from ember import nd
from ember.base import MXNetError
from ember.gluon import nn

BATCHES = (1, 7, 128)

# Knows nothing of the models, cannot trace: loads the package and runs each batch size.
LOADER = textwrap.dedent("""
    import sys
    import numpy as np
    import ember
    from ember.gluon import cached_op

    def no_tracing(*args, **kwargs):
        raise AssertionError("ember.load traced the model")
    cached_op.trace = no_tracing
    pkg = ember.load(sys.argv[1])
    assert pkg.dynamic_batch
    for path in sys.argv[2:]:
        np.save(path.replace("x", "y"), pkg(np.load(path)).asnumpy())
    print(repr(pkg))
""")


def seed_mlp():
    """The seed program's network: 784-256-10, hybridized."""
    net = nn.HybridSequential()
    with net.name_scope():
        net.add(nn.Dense(256, activation="relu"), nn.Dense(10))
    return net


def small_cnn():
    net = nn.HybridSequential()
    with net.name_scope():
        net.add(nn.Conv2D(4, 3, padding=1), nn.BatchNorm(), nn.Activation("relu"),
                nn.MaxPool2D(), nn.Flatten(), nn.Dense(5))
    return net


FEATURES = {"mlp": (784,), "cnn": (1, 8, 8)}


def built(kind, batch=1):
    mx.random.seed(5)
    net = seed_mlp() if kind == "mlp" else small_cnn()
    net.initialize(mx.init.Xavier())
    net.hybridize()
    x = nd.array(np.random.default_rng(1).uniform(-1, 1, (batch, *FEATURES[kind])))
    net(x)
    for p in net.collect_params().values():  # running statistics off their start values
        if p.name.endswith(("running_mean", "running_var")):
            p.set_data(nd.array(np.linspace(0.5, 1.5, p.shape[0])))
    return net, x


@pytest.mark.parametrize("kind,example_batch", [("mlp", 1), ("cnn", 2)])
def test_any_batch_in_a_fresh_process(kind, example_batch, tmp_path):
    net, x = built(kind, example_batch)
    pkg = mx.export(net, tmp_path / "pkg", x)
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert manifest["dynamic"] == {"inputs": [[0]], "outputs": [[0]]}
    assert manifest["inputs"][0]["shape"] == [example_batch, *FEATURES[kind]]
    rng = np.random.default_rng(2)
    paths = []
    for b in BATCHES:
        paths.append(tmp_path / f"x{b}.npy")
        np.save(paths[-1], rng.uniform(-1, 1, (b, *FEATURES[kind])).astype(np.float32))
    (tmp_path / "load.py").write_text(LOADER)
    proc = subprocess.run([sys.executable, "load.py", str(pkg), *map(str, paths)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "float32(B, " in proc.stdout
    for b, path in zip(BATCHES, paths):
        got = np.load(str(path).replace("x", "y"))
        want = net(nd.array(np.load(path))).asnumpy()  # the eager model
        assert got.shape == want.shape == (b, 10 if kind == "mlp" else 5)
        diff = float(np.abs(got - want).max())
        print(f"{kind} batch {b}: max abs diff vs eager {diff:.3g}")
        assert diff <= 1e-5


def test_wrong_feature_dim_and_dtype_are_refused(tmp_path):
    net, x = built("mlp")
    pkg = mx.load(mx.export(net, tmp_path / "pkg", x))
    for bad in (np.zeros((5, 783), np.float32), np.zeros((5, 784), np.float64),
                np.zeros((784,), np.float32)):
        with pytest.raises(MXNetError, match=r"input 'data0' must be float32\(B, 784\) for "
                                              r"any batch size B, got"):
            pkg(bad)
    with pytest.raises(MXNetError, match="at least 1"):
        pkg(np.zeros((0, 784), np.float32))


class BakedReshape(nn.HybridBlock):
    """Reshapes with the traced batch size as a number: right only at that batch."""

    def hybrid_forward(self, F, x):
        return x.reshape((x.shape[0], -1, 2)) * 2.0


def test_batch_baked_into_an_attribute_stays_fixed(tmp_path):
    x = nd.array(np.arange(4.0).reshape(1, 4))
    # re-specialised to batch 2 the graph would reshape 8 values to (1, -1, 2): it retypes,
    # but the trace at batch 2 reshapes to (2, -1, 2), so the batch is not dynamic
    with pytest.raises(MXNetError, match=r"cannot have a dynamic batch: an attribute or a "
                                         r"branch depends on the batch size"):
        mx.export(BakedReshape(), tmp_path / "strict", x, dynamic_batch=True)
    assert not (tmp_path / "strict").exists()
    pkg = mx.load(mx.export(BakedReshape(), tmp_path / "pkg", x))
    manifest = pkg.manifest
    assert manifest["dynamic"]["inputs"] == [[]] and manifest["dynamic"]["outputs"] == [[]]
    assert "reshape" in manifest["dynamic"]["why_fixed"]
    assert not pkg.dynamic_batch
    np.testing.assert_array_equal(pkg(x).asnumpy(), x.asnumpy().reshape(1, 2, 2) * 2)
    with pytest.raises(MXNetError, match=r"input 'data0' must be float32\(1, 4\) \(its batch "
                                         r"is fixed: an attribute or a branch depends"):
        pkg(np.zeros((2, 4), np.float32))


class Doubled(nn.HybridBlock):
    def hybrid_forward(self, F, x):
        return x.reshape((x.shape[0] * 2, -1))


def test_batch_the_graph_cannot_run_stays_fixed(tmp_path):
    pkg = mx.export(Doubled(), tmp_path / "pkg", nd.ones((3, 4)))
    why = json.loads((pkg / "manifest.json").read_text())["dynamic"]["why_fixed"]
    assert "cannot run batch 4" in why and "reshape" in why


def test_dynamic_batch_false_keeps_the_example_batch(tmp_path):
    net, x = built("mlp")
    pkg = mx.load(mx.export(net, tmp_path / "pkg", x, dynamic_batch=False))
    assert pkg.manifest["dynamic"]["why_fixed"] == "exported with dynamic_batch=False"
    with pytest.raises(MXNetError, match=r"must be float32\(1, 784\)"):
        pkg(np.zeros((2, 784), np.float32))


def test_old_package_without_dynamic_entry_keeps_its_shapes(tmp_path):
    net, x = built("mlp")
    pkg = mx.export(net, tmp_path / "pkg", x)
    manifest = json.loads((pkg / "manifest.json").read_text())
    del manifest["dynamic"]  # as packages written before dynamic batches
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    old = mx.load(pkg)
    assert not old.dynamic_batch
    np.testing.assert_allclose(old(x).asnumpy(), net(x).asnumpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(MXNetError, match=r"input 'data0' must be float32\(1, 784\), got "
                                         r"float32\(7, 784\)"):
        old(np.zeros((7, 784), np.float32))


@pytest.mark.parametrize("entry", [{"inputs": [[1]], "outputs": [[0]]}, {"inputs": [[0, 0]]},
                                   {"inputs": []}, [[0]], "yes"])
def test_malformed_dynamic_entry_is_refused(tmp_path, entry):
    net, x = built("mlp")
    pkg = mx.export(net, tmp_path / "pkg", x)
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["dynamic"] = entry
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MXNetError, match="'dynamic' entry"):
        mx.load(pkg)


def test_unbatched_inputs_and_moved_batch_dims(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBER_MAX_VARIANTS", "2")
    w = nd.array(np.linspace(-1, 1, 12).reshape(4, 3))

    def f(x, table):  # x carries the batch, table (another first dim) does not
        return nd.transpose(nd.dot(x, table)), x.sum(axis=1)

    x = nd.array(np.ones((2, 4)))
    pkg = mx.load(mx.export(f, tmp_path / "pkg", [x, w]))
    assert pkg.manifest["dynamic"] == {"inputs": [[0], []], "outputs": [[1], [0]]}
    rng = np.random.default_rng(3)
    for b in (5, 6, 2, 9, 5):
        xb = rng.uniform(-1, 1, (b, 4)).astype(np.float32)
        t, s = pkg(xb, w)
        np.testing.assert_allclose(t.asnumpy(), (xb @ w.asnumpy()).T, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s.asnumpy(), xb.sum(axis=1), rtol=1e-5, atol=1e-6)
    assert sorted(pkg._variants) == [5, 9]  # the example's batch 2 is the package's own
    with pytest.raises(MXNetError, match=r"input 'data1' must be float32\(4, 3\), got"):
        pkg(xb, np.zeros((5, 3), np.float32))


def test_dynamic_claim_on_a_fixed_graph_gives_an_mxnet_error(tmp_path):
    pkg = mx.export(Doubled(), tmp_path / "pkg", nd.ones((3, 4)))
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["dynamic"] = {"inputs": [[0]], "outputs": [[0]]}  # edited: the graph cannot
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    loaded = mx.load(pkg)
    assert loaded(np.ones((3, 4), np.float32)).shape == (6, 2)
    with pytest.raises(MXNetError, match=r"graph.ir cannot run batch 4: reshape"):
        loaded(np.ones((4, 4), np.float32))
