"""Every model-zoo network exports files that real MXNet 1.9.1 loads, with ember's outputs.

Each network is built with random weights, hybridized, run once and exported; a real MXNet
1.9.1 interpreter (``EMBER_TEST_MXNET_PYTHON``; ``make test`` installs one) imports the files
with ``SymbolBlock.imports`` and runs the same input. A handful of networks that cover the
variadic ops (Concat in DenseNet/SqueezeNet/Inception) run in the normal suite; the whole zoo
is marked ``slow``.
"""
import json
import os
import subprocess

import numpy as np
import pytest

import ember as mx
from ember.gluon.model_zoo import vision

MXNET_PYTHON = os.environ.get("EMBER_TEST_MXNET_PYTHON", "")
needs_mxnet = pytest.mark.skipif(not os.path.exists(MXNET_PYTHON),
                                 reason="no MXNet 1.9.1 interpreter (EMBER_TEST_MXNET_PYTHON)")

QUICK = ["densenet121", "squeezenet1.1", "inceptionv3", "resnet18_v1", "mobilenetv2_0.25"]
ALL = sorted(vision._models)

_SCRIPT = """
import json, sys
import numpy as np
import mxnet as mx
cases = json.load(open(sys.argv[1]))
out = {}
for name, prefix in cases.items():
    net = mx.gluon.SymbolBlock.imports(prefix + '-symbol.json', ['data'],
                                       prefix + '-0000.params')
    x = mx.nd.array(np.load(prefix + '-input.npy'))
    out[name] = net(x).asnumpy()
np.savez(sys.argv[2], **out)
"""


def _size(name: str) -> int:
    return 299 if name.startswith("inception") else 224


def _check(names, tmp_path):
    cases, expected = {}, {}
    rng = np.random.default_rng(0)
    for name in names:
        net = vision.get_model(name, classes=10)
        net.initialize(mx.init.Xavier(magnitude=2.0))
        net.hybridize()
        x = rng.standard_normal((1, 3, _size(name), _size(name))).astype(np.float32)
        expected[name] = net(mx.nd.array(x)).asnumpy()
        prefix = str(tmp_path / name.replace(".", "_"))
        net.export(prefix)
        np.save(prefix + "-input.npy", x)
        cases[name] = prefix
        with open(prefix + "-symbol.json") as f:
            for node in json.load(f)["nodes"]:
                if node["op"] in ("Concat", "add_n", "ElementWiseSum", "stack"):
                    assert int(node["attrs"]["num_args"]) == len(node["inputs"]), node
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    script = tmp_path / "load.py"
    script.write_text(_SCRIPT)
    proc = subprocess.run([MXNET_PYTHON, str(script), str(tmp_path / "cases.json"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    for name in names:
        scale = max(1.0, float(np.abs(expected[name]).max()))
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-4 * scale,
                                   err_msg=name)


@needs_mxnet
def test_zoo_exports_load_in_real_mxnet_quick(tmp_path):
    _check(QUICK, tmp_path)


@needs_mxnet
@pytest.mark.slow
def test_whole_zoo_exports_load_in_real_mxnet(tmp_path):
    _check([n for n in ALL if n not in QUICK], tmp_path)
