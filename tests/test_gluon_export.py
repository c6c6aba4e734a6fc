"""MXNet model files both ways: ``HybridBlock.export`` and ``gluon.SymbolBlock``.

Files MXNet 1.9.1 exported (tests/data/mxnet_models/, made by make_mxnet_models.py) load into
ember's SymbolBlock and give MXNet's saved outputs; ember's exports load back into ember and,
when an interpreter with MXNet 1.9.1 is given (EMBER_TEST_MXNET_PYTHON, default a
throwaway virtualenv at /tmp/mxvenv), into real MXNet with the same outputs.
"""
import json
import os
import subprocess
import textwrap

import numpy as np
import pytest

import ember as mx
from ember import autograd
from ember.base import MXNetError
from ember.gluon import SymbolBlock, nn
from ember.gluon.export import ExportError

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "mxnet_models")
MXNET_PYTHON = os.environ.get("EMBER_TEST_MXNET_PYTHON", "/tmp/mxvenv/bin/python")


def _mxnet_file(name):
    io = np.load(os.path.join(DATA, f"{name}_io.npz"))
    net = SymbolBlock.imports(os.path.join(DATA, f"{name}-symbol.json"), ["data"],
                              os.path.join(DATA, f"{name}-0000.params"))
    return net, io


def build_mlp():
    net = nn.HybridSequential(prefix="mlp_")
    with net.name_scope():
        net.add(nn.Dense(16, activation="relu"), nn.Dense(4))
    return net


def build_cnn():
    """Conv2D -> BatchNorm (trained-looking running statistics) -> relu -> pool -> Dense."""
    net = nn.HybridSequential(prefix="cnn_")
    with net.name_scope():
        net.add(nn.Conv2D(4, 3), nn.BatchNorm(), nn.Activation("relu"), nn.MaxPool2D(),
                nn.Flatten(), nn.Dense(3))
    return net


class TwoInputs(nn.HybridBlock):
    """out = dense(a) + relu(b): a block with two inputs (``data0``, ``data1``)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.dense = nn.Dense(5)

    def hybrid_forward(self, F, a, b):
        return self.dense(a) + F.relu(b)


def _ready(net, *xs):
    """Initialise, run once hybridized (MXNet's rule for export); BatchNorm stats moved."""
    net.initialize(mx.init.Xavier())
    net(*xs)
    for name, p in net.collect_params().items():
        if name.endswith("running_mean"):
            p.set_data(mx.nd.array(np.linspace(-0.5, 0.5, p.shape[0])))
        if name.endswith("running_var"):
            p.set_data(mx.nd.array(np.linspace(0.5, 2.0, p.shape[0])))
    net.hybridize(backend="reference")
    return net(*xs)


rng = np.random.default_rng(0)
CASES = {
    "mlp": (build_mlp, ["data"], [rng.uniform(-1, 1, (4, 8))]),
    "cnn": (build_cnn, ["data"], [rng.uniform(-1, 1, (4, 1, 8, 8))]),
    "two": (lambda: TwoInputs(prefix="two_"), ["data0", "data1"],
            [rng.uniform(-1, 1, (3, 6)), rng.uniform(-1, 1, (3, 5))]),
}


def _exported(name, tmp_path):
    build, input_names, xs = CASES[name]
    xs = [mx.nd.array(x) for x in xs]
    net = build()
    y = _ready(net, *xs)
    prefix = os.path.join(tmp_path, name)
    net.export(prefix)
    return prefix, input_names, xs, y


# ---- MXNet's files in ember --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_mxnet_exports_give_mxnet_outputs(name):
    net, io = _mxnet_file(name)
    x = mx.nd.array(io["x"])
    np.testing.assert_allclose(net(x).asnumpy(), io["y"], rtol=0, atol=1e-5)
    net.hybridize(backend="reference")
    np.testing.assert_allclose(net(x).asnumpy(), io["y"], rtol=0, atol=1e-5)


def test_mxnet_cnn_training_mode_uses_batch_statistics():
    net, io = _mxnet_file("cnn")
    with autograd.record():
        y = net(mx.nd.array(io["x"]))
    np.testing.assert_allclose(y.asnumpy(), io["y_train"], rtol=0, atol=1e-5)


def test_imports_makes_arguments_and_auxiliary_states_parameters():
    net, _ = _mxnet_file("cnn")
    params = net.collect_params()
    assert params["cnn_batchnorm0_running_mean"].grad_req == "null"
    assert params["cnn_batchnorm0_running_var"].grad_req == "null"
    assert params["cnn_conv0_weight"].grad_req == "write"
    assert params["cnn_conv0_weight"].shape == (4, 1, 3, 3)
    assert "data" not in params
    assert str(net).splitlines()[0] == "SymbolBlock(" and str(net).splitlines()[2] == ")"


def test_unknown_ops_of_a_foreign_file_are_all_named(tmp_path):
    doc = json.load(open(os.path.join(DATA, "mlp-symbol.json")))
    doc["nodes"][3]["op"] = "NoSuchOp"
    doc["nodes"][4]["op"] = "AlsoMissing"
    bad = tmp_path / "bad-symbol.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(MXNetError) as e:
        SymbolBlock.imports(str(bad), ["data"])
    msg = str(e.value)
    assert "'NoSuchOp'" in msg and doc["nodes"][3]["name"] in msg
    assert "'AlsoMissing'" in msg and doc["nodes"][4]["name"] in msg


# ---- ember's exports --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mlp", "cnn", "two"])
def test_export_imports_round_trip(name, tmp_path):
    prefix, input_names, xs, y = _exported(name, tmp_path)
    back = SymbolBlock.imports(f"{prefix}-symbol.json", input_names, f"{prefix}-0000.params")
    np.testing.assert_allclose(back(*xs).asnumpy(), y.asnumpy(), rtol=0, atol=1e-5)
    back.hybridize(backend="reference")
    np.testing.assert_allclose(back(*xs).asnumpy(), y.asnumpy(), rtol=0, atol=1e-5)
    # a hybridized SymbolBlock exports again, to the same graph
    back.export(os.path.join(tmp_path, "again"))
    again = json.load(open(os.path.join(tmp_path, "again-symbol.json")))
    first = json.load(open(f"{prefix}-symbol.json"))
    assert [(n["op"], n["name"]) for n in again["nodes"]] == \
        [(n["op"], n["name"]) for n in first["nodes"]]


def test_export_files_use_mxnet_names(tmp_path):
    prefix, _, _, _ = _exported("cnn", tmp_path)
    doc = json.load(open(f"{prefix}-symbol.json"))
    names = [(n["op"], n["name"]) for n in doc["nodes"]]
    assert names[:4] == [("null", "data"), ("null", "cnn_conv0_weight"),
                         ("null", "cnn_conv0_bias"), ("Convolution", "cnn_conv0_fwd")]
    assert ("BatchNorm", "cnn_batchnorm0_fwd") in names
    assert ("FullyConnected", "cnn_dense0_fwd") in names
    assert "attrs" not in doc["nodes"][0]  # the input keeps no traced shape: any batch size
    params = mx.nd.load(f"{prefix}-0000.params")
    assert sorted(k for k in params if k.startswith("aux:")) == \
        ["aux:cnn_batchnorm0_running_mean", "aux:cnn_batchnorm0_running_var"]
    assert "arg:cnn_conv0_weight" in params and len(params) == 8
    two, _, _, _ = _exported("two", tmp_path)
    doc = json.load(open(f"{two}-symbol.json"))
    assert [n["name"] for n in doc["nodes"] if n["op"] == "null"] == \
        ["data0", "two_dense0_weight", "two_dense0_bias", "data1"]


def test_lazily_shaped_block_exports_after_one_call(tmp_path):
    net = nn.HybridSequential()
    net.add(nn.Dense(7), nn.Dense(2))   # no in_units: shapes come from the first call
    x = mx.nd.array(rng.uniform(-1, 1, (5, 11)))
    y = _ready(net, x)
    net.export(os.path.join(tmp_path, "lazy"), epoch=3)
    params = mx.nd.load(os.path.join(tmp_path, "lazy-0003.params"))
    assert params[f"arg:{net[0].weight.name}"].shape == (7, 11)
    back = SymbolBlock.imports(os.path.join(tmp_path, "lazy-symbol.json"), "data",
                               os.path.join(tmp_path, "lazy-0003.params"))
    np.testing.assert_allclose(back(x).asnumpy(), y.asnumpy(), rtol=0, atol=1e-5)


def test_export_needs_a_hybridized_call(tmp_path):
    net = build_mlp()
    net.initialize()
    msg = "Please first call block.hybridize() and then run forward"
    with pytest.raises(RuntimeError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        net.export(os.path.join(tmp_path, "m"))
    net(mx.nd.ones((2, 8)))  # run, but not hybridized
    with pytest.raises(ExportError):
        net.export(os.path.join(tmp_path, "m"))
    net.hybridize(backend="reference")  # hybridized, not run since
    with pytest.raises(ExportError):
        net.export(os.path.join(tmp_path, "m"))
    assert os.listdir(tmp_path) == []


def test_ops_without_mxnet_equivalent_are_named(tmp_path):
    class NaNs(nn.HybridBlock):
        def hybrid_forward(self, F, x):
            return F.isnan(F.relu(x)) + F.isnan(x)

    net = NaNs(prefix="nans_")
    net.hybridize(backend="reference")
    net(mx.nd.ones((2, 3)))
    with pytest.raises(ExportError, match=r"isnan \(node 'nans_isnan0'\), isnan \(node "
                                          r"'nans_isnan1'\)"):
        net.export(os.path.join(tmp_path, "n"))
    assert os.listdir(tmp_path) == []


def test_failing_export_leaves_no_partial_file(tmp_path, monkeypatch):
    from ember.ndarray import utils
    prefix, _, _, _ = _exported("mlp", tmp_path)
    before = {f: open(os.path.join(tmp_path, f), "rb").read() for f in os.listdir(tmp_path)}
    net = build_mlp()
    _ready(net, mx.nd.ones((2, 8)))
    real, calls = utils._write_array, []

    def fail_on_third(f, x, magic, what):
        calls.append(what)
        if len(calls) == 3:   # two arrays and the JSON are on disk by now
            raise OSError(28, "No space left on device")
        real(f, x, magic, what)
    monkeypatch.setattr(utils, "_write_array", fail_on_third)
    with pytest.raises(MXNetError, match="No space left"):
        net.export(prefix)
    assert len(calls) == 3
    after = {f: open(os.path.join(tmp_path, f), "rb").read() for f in os.listdir(tmp_path)}
    assert after == before   # the earlier export is intact, no temporary file is left
    fresh = os.path.join(tmp_path, "fresh")
    os.mkdir(fresh)
    calls.clear()
    with pytest.raises(MXNetError):
        net.export(os.path.join(fresh, "m"))
    assert os.listdir(fresh) == []


# ---- SymbolBlock from Symbols -----------------------------------------------------------------
def test_symbol_block_of_internals_and_nesting():
    model = nn.HybridSequential()
    model.add(nn.Dense(12, activation="tanh"), nn.Dropout(0.5), nn.Dense(6, in_units=12))
    model.initialize()
    inputs = mx.sym.var("data")
    outputs = model(inputs).get_internals()
    smodel = SymbolBlock(outputs, inputs, params=model.collect_params())
    x = mx.nd.array(rng.uniform(-1, 1, (4, 10)))
    outs = smodel(x)
    assert len(outs) == len(outputs.list_outputs())
    np.testing.assert_allclose(outs[-1].asnumpy(), model(x).asnumpy(), rtol=0, atol=1e-6)
    assert len(smodel(mx.sym.var("in"))) == len(outputs.list_outputs())

    class Net(nn.HybridBlock):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def hybrid_forward(self, F, x):
            return F.add_n(*[o.sum() for o in self.inner(x)])

    net = Net(smodel)
    eager = net(x).asnumpy()
    net.hybridize(backend="reference")
    np.testing.assert_allclose(net(x).asnumpy(), eager, rtol=1e-5)


def test_symbol_block_infers_deferred_shapes_and_trains():
    data = mx.sym.var("data")
    out = mx.sym.FullyConnected(mx.sym.Activation(mx.sym.FullyConnected(
        data, num_hidden=8, name="fc1"), act_type="relu"), num_hidden=3, name="fc2")
    net = SymbolBlock(out, data)
    net.initialize()
    x = mx.nd.array(rng.uniform(-1, 1, (4, 5)))
    y = net(x)
    assert net.collect_params()["fc1_weight"].shape == (8, 5) and y.shape == (4, 3)
    grads = {}
    for hybrid in (False, True):
        if hybrid:
            net.hybridize(backend="reference")
        with autograd.record():
            loss = (net(x) ** 2).sum()
        loss.backward()
        grads[hybrid] = net.collect_params()["fc1_weight"].grad().asnumpy().copy()
    np.testing.assert_allclose(grads[True], grads[False], rtol=1e-5, atol=1e-6)
    assert np.abs(grads[False]).sum() > 0


def test_symbol_block_rejects_sparse_parameters_and_non_variable_inputs():
    data = mx.sym.var("data")
    weight = mx.sym.var("weight", stype="row_sparse")
    out = mx.sym.broadcast_add(mx.sym.dot(data, weight), mx.sym.var("bias"))
    with pytest.raises(AssertionError, match="row_sparse"):
        SymbolBlock(out, data)
    dense = mx.sym.dot(data, mx.sym.var("weight"))
    with pytest.raises(MXNetError, match="must be variables"):
        SymbolBlock(dense, mx.sym.relu(data))
    with pytest.raises(MXNetError, match="not variables of the graph"):
        SymbolBlock(dense, mx.sym.var("nope"))


def test_legacy_save_params_into_symbol_block(tmp_path):
    net = nn.HybridSequential(prefix="")
    with net.name_scope():
        net.add(nn.Conv2D(3, (3, 3)), nn.Dense(5))
    net.initialize()
    x = mx.nd.array(rng.uniform(-1, 1, (1, 1, 6, 6)))
    y = net(x)
    net(mx.sym.var("data")).save(str(tmp_path / "t.json"))
    net.save_params(str(tmp_path / "t.params"))
    model = nn.SymbolBlock(outputs=mx.sym.load_json(open(tmp_path / "t.json").read()),
                           inputs=mx.sym.var("data"))
    model.load_params(str(tmp_path / "t.params"), ctx=mx.cpu())
    np.testing.assert_allclose(model(x).asnumpy(), y.asnumpy(), rtol=0, atol=1e-6)


# ---- ember's exports in real MXNet 1.9.1 ---------------------------------------------------------
_MX_SCRIPT = textwrap.dedent("""
    import json, sys, numpy as np, mxnet as mx
    cases, inputs = json.load(open(sys.argv[1])), np.load(sys.argv[2])
    res = {}
    for name, (prefix, input_names) in cases.items():
        net = mx.gluon.SymbolBlock.imports(prefix + "-symbol.json", input_names,
                                           prefix + "-0000.params")
        xs = [mx.nd.array(inputs[name + "/" + i]) for i in input_names]
        res[name] = net(*xs).asnumpy()
    np.savez(sys.argv[3], **res)
""")


@pytest.mark.skipif(not os.path.exists(MXNET_PYTHON),
                    reason="no MXNet 1.9.1 interpreter (EMBER_TEST_MXNET_PYTHON)")
def test_real_mxnet_loads_ember_exports(tmp_path):
    cases, inputs, expected = {}, {}, {}
    for name in CASES:
        prefix, input_names, xs, y = _exported(name, tmp_path)
        cases[name] = (prefix, input_names)
        inputs.update({f"{name}/{i}": x.asnumpy() for i, x in zip(input_names, xs)})
        expected[name] = y.asnumpy()
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    np.savez(tmp_path / "inputs.npz", **inputs)
    script = tmp_path / "check.py"
    script.write_text(_MX_SCRIPT)
    proc = subprocess.run([MXNET_PYTHON, str(script), str(tmp_path / "cases.json"),
                           str(tmp_path / "inputs.npz"), str(tmp_path / "out.npz")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = np.load(tmp_path / "out.npz")
    for name in CASES:
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-5)
