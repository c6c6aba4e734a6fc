"""Model files written by real MXNet 1.9.1 load into ember and give MXNet's outputs.

The fixtures under tests/data/mxnet_models/ come from tests/data/make_mxnet_models.py (run
with MXNet 1.9.1 in a separate virtualenv): ``save_parameters`` files of a small MLP and a
small CNN, their input batch and MXNet's outputs on it. ember builds the same architectures,
loads the files, and must reproduce the outputs; its own save/load must round-trip, and a
damaged file must be refused with an MXNetError naming it.
"""
import os

import numpy as np
import pytest

import ember as mx
from ember import autograd
from ember.base import MXNetError
from ember.gluon import nn

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "mxnet_models")


def build_mlp():
    """8 -> Dense(16, relu) -> Dense(4), as in make_mxnet_models.py."""
    net = nn.HybridSequential(prefix="mlp_")
    with net.name_scope():
        net.add(nn.Dense(16, activation="relu"), nn.Dense(4))
    return net


def build_cnn():
    """1x8x8 -> Conv2D(4, 3) -> BatchNorm -> relu -> MaxPool2D -> Flatten -> Dense(3)."""
    net = nn.HybridSequential(prefix="cnn_")
    with net.name_scope():
        net.add(nn.Conv2D(4, 3), nn.BatchNorm(), nn.Activation("relu"), nn.MaxPool2D(),
                nn.Flatten(), nn.Dense(3))
    return net


BUILDERS = {"mlp": build_mlp, "cnn": build_cnn}


def _io(name):
    return np.load(os.path.join(DATA, f"{name}_io.npz"))


def _loaded(name):
    net = BUILDERS[name]()
    net.load_parameters(os.path.join(DATA, f"{name}.params"))
    return net


def test_fixtures_are_present_and_tiny():
    names = ["mlp.params", "cnn.params", "mlp-symbol.json", "mlp-0000.params",
             "cnn-symbol.json", "cnn-0000.params", "mlp_io.npz", "cnn_io.npz"]
    sizes = [os.path.getsize(os.path.join(DATA, n)) for n in names]
    assert all(s > 0 for s in sizes) and sum(sizes) < 50_000


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_mxnet_params_give_mxnet_outputs(name):
    io = _io(name)
    net = _loaded(name)
    out = net(mx.nd.array(io["x"]))
    assert out.shape == io["y"].shape
    np.testing.assert_allclose(out.asnumpy(), io["y"], rtol=0, atol=1e-5)


def test_mxnet_params_values_match_the_file():
    """Each parameter holds exactly the array stored under its structural name."""
    stored = mx.nd.load(os.path.join(DATA, "cnn.params"))
    net = _loaded("cnn")
    params = net._collect_params_with_prefix()
    assert sorted(params) == sorted(stored)
    for key, arr in stored.items():
        np.testing.assert_array_equal(params[key].data().asnumpy(), arr.asnumpy())
    # the BatchNorm running statistics are the trained ones, not the initial 0 / 1
    assert not np.allclose(params["1.running_mean"].data().asnumpy(), 0)
    assert not np.allclose(params["1.running_var"].data().asnumpy(), 1)


def test_cnn_training_mode_matches_mxnet():
    """In training mode BatchNorm normalises with the batch's statistics, as MXNet did."""
    io = _io("cnn")
    net = _loaded("cnn")
    with autograd.record():
        out = net(mx.nd.array(io["x"]))
    np.testing.assert_allclose(out.asnumpy(), io["y_train"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_save_load_parameters_round_trip(name, tmp_path):
    io = _io(name)
    net = _loaded(name)
    path = str(tmp_path / f"{name}.params")
    net.save_parameters(path)
    again = BUILDERS[name]()
    again.load_parameters(path)
    np.testing.assert_array_equal(again(mx.nd.array(io["x"])).asnumpy(),
                                  net(mx.nd.array(io["x"])).asnumpy())
    # ember's file is MXNet's format: the same names and values as the MXNet-made one
    mine, theirs = mx.nd.load(path), mx.nd.load(os.path.join(DATA, f"{name}.params"))
    assert sorted(mine) == sorted(theirs)
    for key in theirs:
        np.testing.assert_array_equal(mine[key].asnumpy(), theirs[key].asnumpy())


def test_parameter_dict_save_load_round_trip(tmp_path):
    io = _io("mlp")
    net = _loaded("mlp")
    path = str(tmp_path / "pdict.params")
    net.collect_params().save(path)
    assert sorted(mx.nd.load(path)) == sorted(net.collect_params().keys())
    again = build_mlp()
    again.collect_params().load(path)
    np.testing.assert_array_equal(again(mx.nd.array(io["x"])).asnumpy(),
                                  net(mx.nd.array(io["x"])).asnumpy())
    # strip_prefix / restore_prefix move the names under another prefix
    net.collect_params().save(path, strip_prefix="mlp_")
    assert sorted(mx.nd.load(path)) == ["dense0_bias", "dense0_weight", "dense1_bias",
                                        "dense1_weight"]
    third = build_mlp()
    third.collect_params().load(path, restore_prefix="mlp_")
    np.testing.assert_allclose(third(mx.nd.array(io["x"])).asnumpy(), io["y"], rtol=0, atol=1e-5)


def _damaged_files(tmp_path):
    raw = open(os.path.join(DATA, "mlp.params"), "rb").read()
    cases = {"truncated-half": raw[: len(raw) // 2], "truncated-tail": raw[:-3],
             "empty": b"", "garbage": b"not an ndarray file" * 4,
             "bad-magic": b"\0" * 8 + raw[8:]}
    for label, data in cases.items():
        path = tmp_path / f"{label}.params"
        path.write_bytes(data)
        yield label, str(path)


def test_damaged_params_file_is_refused_naming_it(tmp_path):
    for label, path in _damaged_files(tmp_path):
        net = build_mlp()
        with pytest.raises(MXNetError, match=os.path.basename(path)):
            net.load_parameters(path)
        with pytest.raises(MXNetError, match=os.path.basename(path)):
            build_mlp().collect_params().load(path)
        assert label  # each case was exercised


def test_missing_params_file_is_refused(tmp_path):
    path = str(tmp_path / "absent.params")
    with pytest.raises(MXNetError, match="absent.params"):
        build_mlp().load_parameters(path)
