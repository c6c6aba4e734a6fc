"""MXNet's symbol JSON: files written by real MXNet 1.9.1 load in ember, and back."""
import json
import os
import subprocess

import pytest

import ember as mx
from ember.base import MXNetError

DATA = os.path.join(os.path.dirname(__file__), "data", "symbol_json")
MXPY = os.environ.get("EMBER_TEST_MXNET_PYTHON", "/tmp/mxvenv/bin/python")


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_load_mxnet_files(name):
    sym = mx.sym.load(os.path.join(DATA, f"{name}.json"))
    with open(os.path.join(DATA, f"{name}.shapes.json")) as f:
        meta = json.load(f)
    assert sym.list_arguments() == meta["arguments"]
    assert sym.list_outputs() == meta["outputs"]
    assert sym.list_auxiliary_states() == meta["aux"]
    arg, out, aux = sym.infer_shape(**{k: tuple(v) for k, v in meta["inputs"].items()})
    assert [list(s) for s in arg] == meta["arg_shapes"]
    assert [list(s) for s in out] == meta["out_shapes"]
    assert [list(s) for s in aux] == meta["aux_shapes"]


def test_json_layout():
    data = mx.sym.var("data")
    bn = mx.sym.BatchNorm(mx.sym.FullyConnected(data, num_hidden=4, name="fc1"), name="bn")
    doc = json.loads(bn.tojson())
    assert [n["op"] for n in doc["nodes"]] == ["null", "null", "null", "FullyConnected", "null",
                                               "null", "null", "null", "BatchNorm"]
    assert doc["nodes"][3]["attrs"] == {"num_hidden": "4"}
    assert doc["nodes"][8]["inputs"] == [[3, 0, 0], [4, 0, 0], [5, 0, 0], [6, 0, 1], [7, 0, 1]]
    assert doc["arg_nodes"] == [0, 1, 2, 4, 5, 6, 7]
    assert doc["node_row_ptr"][-1] == 11  # BatchNorm has three outputs in MXNet
    assert doc["heads"] == [[8, 0, 0]]
    assert doc["attrs"] == {"mxnet_version": ["int", 10901]}


def test_round_trip_keeps_attributes():
    x = mx.sym.var("x", shape=(2, 3), dtype="float16", lr_mult=2.0)
    y = mx.sym.Convolution(x, kernel=(3, 3), num_filter=4, no_bias=True, name="c",
                           attr={"__ctx_group__": "dev1"})
    back = mx.sym.load_json(y.tojson())
    assert back.tojson() == y.tojson()
    assert back.attr_dict()["x"]["__lr_mult__"] == "2.0"
    assert back.attr("ctx_group") == "dev1"
    assert back.list_attr()["kernel"] == "(3, 3)"


def test_unknown_ops_reported_together():
    doc = json.loads(mx.sym.relu(mx.sym.var("x"), name="r").tojson())
    doc["nodes"][1]["op"] = "NoSuchOp"
    doc["nodes"].append({"op": "AlsoMissing", "name": "m", "inputs": [[1, 0, 0]]})
    doc["nodes"].append({"op": "relu", "name": "r2", "attrs": {"bogus": "1"},
                         "inputs": [[0, 0, 0]]})
    with pytest.raises(MXNetError) as e:
        mx.sym.load_json(json.dumps(doc))
    msg = str(e.value)
    assert "'NoSuchOp' (node 'r')" in msg and "'AlsoMissing' (node 'm')" in msg
    assert "'bogus'" in msg


def test_irrelevant_attrs_dropped():
    sym = mx.sym.load(os.path.join(DATA, "cnn.json"))  # conv1 has workspace=512
    assert sym.get_internals()["conv1_output"].list_arguments() == \
        ["data", "conv1_weight", "conv1_bias"]


def test_save_load_file(tmp_path):
    net = mx.sym.FullyConnected(mx.sym.var("data"), num_hidden=3, name="fc")
    net.save(str(tmp_path / "s.json"))
    assert mx.sym.load(str(tmp_path / "s.json")).tojson() == net.tojson()


@pytest.mark.skipif(not os.path.exists(MXPY), reason="real MXNet venv not present")
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_ember_json_loads_in_mxnet(name, tmp_path):
    sym = mx.sym.load(os.path.join(DATA, f"{name}.json"))
    path = tmp_path / "s.json"
    sym.save(str(path))
    with open(os.path.join(DATA, f"{name}.shapes.json")) as f:
        meta = json.load(f)
    code = ("import json, sys, mxnet as mx\n"
            f"s = mx.sym.load({str(path)!r})\n"
            f"a, o, x = s.infer_shape(**{ {k: tuple(v) for k, v in meta['inputs'].items()} !r})\n"
            "print(json.dumps([s.list_arguments(), s.list_auxiliary_states(), o]))\n")
    res = subprocess.run([MXPY, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    args, aux, outs = json.loads(res.stdout.strip().splitlines()[-1])
    assert args == meta["arguments"] and aux == meta["aux"]
    assert outs == meta["out_shapes"]


# ---- attributes MXNet requires (num_args of variadic ops) ----------------------------------
_VARIADIC = ("Concat", "stack", "add_n", "ElementWiseSum")


def _zoo_json(name):
    from ember.gluon.model_zoo import vision
    return vision.get_model(name)(mx.sym.var("data")).tojson()


def _check_num_args(doc):
    found = 0
    for n in doc["nodes"]:
        if n["op"] in _VARIADIC:
            assert n["attrs"]["num_args"] == str(len(n["inputs"])), n
            found += 1
    return found


@pytest.mark.parametrize("name", ["densenet121", "squeezenet1.1", "inceptionv3"])
def test_zoo_json_has_num_args_and_round_trips(name):
    text = _zoo_json(name)
    assert _check_num_args(json.loads(text)) > 0
    back = mx.sym.load_json(text)
    assert back.tojson() == text
    assert back.infer_shape(data=(1, 3, 299, 299))[1] == [(1, 1000)]


class _Inceptionish(mx.gluon.HybridBlock):
    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.branches = mx.gluon.contrib.nn.HybridConcurrent(axis=1)
            for k in (1, 3, 5):
                self.branches.add(mx.gluon.nn.Conv2D(2, k, padding=k // 2))

    def hybrid_forward(self, F, x):
        y = self.branches(x)  # Concat of 3
        return F.stack(F.add_n(y, y, F.relu(y), y), y, axis=1)  # add_n of 4, stack of 2


def test_export_writes_num_args_and_imports_back(tmp_path):
    import numpy as np
    net = _Inceptionish(prefix="inc_")
    net.initialize()
    net.hybridize()
    x = mx.nd.array(np.random.default_rng(0).standard_normal((2, 3, 6, 6)))
    ref = net(x).asnumpy()
    sym_file, params_file = net.export(str(tmp_path / "inc"))
    with open(sym_file) as f:
        doc = json.load(f)
    counts = {n["op"]: int(n["attrs"]["num_args"]) for n in doc["nodes"] if n["op"] in _VARIADIC}
    assert counts == {"Concat": 3, "add_n": 4, "stack": 2}
    assert _check_num_args(doc) == 3
    back = mx.gluon.SymbolBlock.imports(sym_file, ["data"], params_file)
    np.testing.assert_allclose(back(x).asnumpy(), ref, rtol=1e-5, atol=1e-6)


def test_arange_and_full_write_what_mxnet_requires():
    doc = json.loads(mx.sym.Group([mx.sym.arange(0, 5), mx.sym.full((2,), 0)]).tojson())
    attrs = {n["op"]: n["attrs"] for n in doc["nodes"]}
    assert attrs["_arange"]["start"] == "0" and attrs["_full"]["value"] == "0"


@pytest.mark.skipif(not os.path.exists(MXPY), reason="real MXNet venv not present")
def test_mxnet_loads_exported_densenet_squeezenet_inception(tmp_path):
    names = ["densenet121", "squeezenet1.1", "inceptionv3"]
    for name in names:
        (tmp_path / f"{name}.json").write_text(_zoo_json(name))
    code = ("import json, sys, mxnet as mx\n"
            f"for name in {names!r}:\n"
            f"    s = mx.sym.load({str(tmp_path)!r} + '/' + name + '.json')\n"
            "    print(json.dumps(s.infer_shape(data=(1, 3, 299, 299))[1]))\n")
    res = subprocess.run([MXPY, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert [json.loads(line) for line in res.stdout.strip().splitlines()[-3:]] == \
        [[[1, 1000]]] * 3
