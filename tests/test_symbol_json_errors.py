"""Damaged symbol JSON: every fault is one MXNetError naming the file, node and problem.

A fuzzer mutates a valid exported document a few thousand times (keys dropped, values of
the wrong type, node indices out of range or negative, odd attribute strings, truncated
text); loading must then either work or raise MXNetError, never a raw Python error.
"""
import copy
import json
import random

import numpy as np
import pytest

import ember as mx
from ember import gluon
from ember.base import MXNetError


class _Net(gluon.HybridBlock):
    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.conv = gluon.nn.Conv2D(4, 3, padding=1)
            self.bn = gluon.nn.BatchNorm()
            self.pool = gluon.nn.MaxPool2D()
            self.b1 = gluon.nn.Conv2D(2, 1)
            self.b2 = gluon.nn.Conv2D(2, 3, padding=1)
            self.fc = gluon.nn.Dense(5)

    def hybrid_forward(self, F, x):
        y = self.pool(F.relu(self.bn(self.conv(x))))
        y = F.concat(self.b1(y), self.b2(y), dim=1)
        z = F.stack(F.add_n(y, y, y), y, axis=1).reshape((0, -1))
        return F.softmax(self.fc(F.Dropout(z, p=0.5)))


def _doc():
    return json.loads(_Net(prefix="net_")(mx.sym.var("data")).tojson())


def _load(doc):
    return mx.sym.load_json(json.dumps(doc))


def _node(doc, op):
    return next(i for i, n in enumerate(doc["nodes"]) if n["op"] == op)


# ---- named faults ------------------------------------------------------------------------
def test_syntax_error_names_the_file_line_and_column(tmp_path):
    path = tmp_path / "m-symbol.json"
    path.write_text('{"nodes": [\n  {"op": "null", "name": "x", "inputs": []}\n  "heads": []}')
    with pytest.raises(MXNetError, match=r"m-symbol.json' is not valid JSON: Expecting ',' "
                                         r"delimiter at line 3 column 3"):
        mx.sym.load(str(path))
    with pytest.raises(MXNetError, match="cannot read symbol file .*missing-symbol.json"):
        mx.sym.load(str(tmp_path / "missing-symbol.json"))


def test_imports_names_the_file_of_a_malformed_document(tmp_path):
    doc = _doc()
    del doc["nodes"][_node(doc, "Convolution")]["inputs"]
    path = tmp_path / "bad-symbol.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(MXNetError, match=r"bad-symbol.json': node \d+ \('net_conv0_fwd', "
                                         r"Convolution\): 'inputs' must be a list"):
        gluon.SymbolBlock.imports(str(path), ["data"])


@pytest.mark.parametrize("entry, match", [
    ([-1, 0, 0], "refers to node -1"),
    ([999, 0, 0], "refers to node 999"),
    (["0", 0, 0], "is not \\[node, output, version\\] of integers"),
    ([0], "is not \\[node, output, version\\]"),
    ([0, -1, 0], "has a negative output index"),
])
def test_bad_input_entries(entry, match):
    doc = _doc()
    doc["nodes"][_node(doc, "Convolution")]["inputs"][0] = entry
    with pytest.raises(MXNetError, match=r"node \d+ \('net_conv0_fwd', Convolution\): input "
                                         r"\[.*\] " + match):
        _load(doc)


def test_forward_reference_and_missing_outputs():
    doc = _doc()
    conv = _node(doc, "Convolution")
    doc["nodes"][conv]["inputs"][0] = [conv + 1, 0, 0]  # a later node: not topological
    with pytest.raises(MXNetError, match=r"refers to node \d+, not one of nodes 0..\d+ \(nodes "
                                         r"refer only to earlier nodes\)"):
        _load(doc)
    doc = _doc()
    doc["nodes"][_node(doc, "relu")]["inputs"][0] = [_node(doc, "Convolution"), 3, 0]
    with pytest.raises(MXNetError, match=r"asks for output 3 of node \d+ \('net_conv0_fwd', "
                                         r"Convolution\), which has 1"):
        _load(doc)
    doc = _doc()
    doc["heads"] = [[len(doc["nodes"]), 0, 0]]
    with pytest.raises(MXNetError, match="head .* refers to node"):
        _load(doc)


@pytest.mark.parametrize("key, value, match", [
    ("kernel", "abc", "kernel='abc' is not a shape tuple"),  # was read character by character
    ("kernel", "(0, 3)", "kernel='\\(0, 3\\)' must hold integers >= 1"),
    ("stride", "(1, x)", "stride=.* is not a shape tuple"),
    ("num_filter", "(4, 4)", "num_filter='\\(4, 4\\)' is not an integer"),
    ("num_group", "1.5", "num_group='1.5' is not an integer"),
    ("no_bias", "7", "no_bias='7' is not a boolean"),
    ("kernel", "None", "kernel is required"),
])
def test_attribute_values_of_the_wrong_kind(key, value, match):
    doc = _doc()
    doc["nodes"][_node(doc, "Convolution")]["attrs"][key] = value
    with pytest.raises(MXNetError, match=r"\('net_conv0_fwd', Convolution\): attribute " + match):
        _load(doc)


def test_attribute_values_that_mxnet_accepts():
    doc = _doc()
    conv = doc["nodes"][_node(doc, "Convolution")]["attrs"]
    conv.update(kernel="[3, 3]", no_bias="0", num_group="1")
    sym = _load(doc)
    assert sym.infer_shape(data=(2, 3, 8, 8))[1] == [(2, 5)]
    doc = json.loads(mx.sym.clip(mx.sym.var("x"), a_min="-inf", a_max=1).tojson())
    doc["nodes"][1]["attrs"]["a_min"] = "-inf"
    out = _load(doc).eval(x=mx.nd.array([-1e30, 0.5, 3]))[0]
    assert np.array_equal(out.asnumpy(), np.float32([-1e30, 0.5, 1]))


def test_layout_faults():
    cases = [
        ([], "'nodes' and 'heads' are required"),
        ({"nodes": [], "heads": [[0, 0, 0]]}, "'nodes' must be a non-empty list"),
        ({"nodes": [1], "heads": [[0, 0, 0]]}, "node 0 must be an object"),
        ({"nodes": [{"name": "x", "inputs": []}], "heads": [[0, 0, 0]]}, "no 'op' string"),
        ({"nodes": [{"op": "null", "inputs": []}], "heads": [[0, 0, 0]]}, "no 'name' string"),
        ({"nodes": [{"op": "null", "name": "x", "inputs": [[0, 0, 0]]}], "heads": [[0, 0, 0]]},
         "a variable has no inputs"),
        ({"nodes": [{"op": "null", "name": "x", "inputs": [], "attrs": [1]}],
          "heads": [[0, 0, 0]]}, "'attrs' must be an object"),
        ({"nodes": [{"op": "null", "name": "x", "inputs": [], "attrs": {"__shape__": "ab"}}],
          "heads": [[0, 0, 0]]}, "__shape__='ab' is not a shape tuple"),
        ({"nodes": [{"op": "null", "name": "x", "inputs": [], "attrs": {"__dtype__": "99"}}],
          "heads": [[0, 0, 0]]}, "__dtype__='99' is not one of MXNet's dtype codes"),
        ({"nodes": [{"op": "null", "name": "x", "inputs": []}], "heads": [[0, 0, 0]],
          "attrs": {"is_np_shape": 1}}, "'is_np_shape' must be"),
        ({"nodes": [{"op": "null", "name": "x", "inputs": []}], "heads": []},
         "'heads' must be a non-empty list"),
    ]
    for doc, match in cases:
        with pytest.raises(MXNetError, match=match):
            _load(doc)


def test_num_args_must_match_the_inputs():
    doc = _doc()
    doc["nodes"][_node(doc, "Concat")]["attrs"]["num_args"] = "3"
    with pytest.raises(MXNetError, match=r"Concat\): num_args='3' but the node has 2 inputs"):
        _load(doc)


# ---- fuzzing -------------------------------------------------------------------------------
_VALUES = [None, True, 0, 1, -1, 7, 10**12, -(10**12), 1.5, float("nan"), "", "a", "abc", "0",
           "-1", "(3, 3)", "(0, 0)", "(-1, 2)", "[1]", "None", "relu", "1e30", "inf",
           "(1, 2, 3, 4, 5)", [], [0], [0, 0, 0], [-1, 0, 0], [99, 0, 0], [0, 5, 0],
           [0, 0, 7], ["0", 0, 0], [[0, 0, 0]], {}, {"a": "b"}, {"kernel": "abc"}, [1, 0],
           [0.5, 0, 0], [True, 0, 0]]
_KEYS = ["kernel", "num_args", "axis", "dim", "p", "num_hidden", "pad", "stride", "zz",
         "__shape__", "__dtype__", "is_np_shape", "op", "name", "inputs"]


def _paths(obj, prefix=()):
    yield prefix
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) \
        if isinstance(obj, list) else ()
    for k, v in items:
        yield from _paths(v, prefix + (k,))


def _mutate(doc, rng):
    doc = copy.deepcopy(doc)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        paths = list(_paths(doc))[1:]
        if not paths:
            break
        path = rng.choice(paths)
        parent = doc
        for p in path[:-1]:
            parent = parent[p]
        key, r, value = path[-1], rng.random(), copy.deepcopy(rng.choice(_VALUES))
        if r < 0.3:
            del parent[key]
        elif r < 0.4 and isinstance(parent, list):
            parent.insert(key, value)
        elif r < 0.55 and isinstance(parent, dict):
            parent[rng.choice(_KEYS)] = value
        elif r < 0.65 and isinstance(parent, list) and isinstance(parent[key], int):
            parent[key] += rng.choice([-2, -1, 1, 2])
        else:
            parent[key] = value
    text = json.dumps(doc)
    return text[:rng.randrange(len(text))] if rng.random() < 0.05 else text


def test_fuzzed_documents_load_or_raise_mxnet_error():
    base, rng = _doc(), random.Random(20261206)
    loaded = refused = 0
    for i in range(2500):
        text = _mutate(base, rng)
        try:
            sym = mx.sym.load_json(text)
            if i % 4 == 0:  # and a quarter go on to shape inference
                sym.infer_shape_partial(data=(2, 3, 8, 8))
            loaded += 1
        except MXNetError:
            refused += 1
        except Exception as e:  # noqa: BLE001 - the point of the test
            raise AssertionError(f"raw {type(e).__name__} for mutation {i}: {e}\n{text}") from e
    assert loaded > 300 and refused > 1500  # both kinds of outcome were exercised
