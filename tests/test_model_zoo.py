"""gluon.model_zoo.vision: every architecture against MXNet 1.9.1, and the no-download store.

The reference numbers were computed once with real MXNet 1.9.1 (``mxnet.gluon.model_zoo.
vision``): each model's parameter count and a SHA-1 over its parameter names (prefixed and
structural) and shapes after shape inference, resnet18_v1's names in full, and the outputs
of small nets whose weights are set by :func:`_fill` (the same function ran under MXNet).
"""
import hashlib
import os
import socket
import zlib

import numpy as np
import pytest

import ember as mx
from ember.base import MXNetError
from ember.gluon.model_zoo import model_store, vision

MXNET_PARAMS = {  # name: (parameter count, SHA-1 of names and shapes), MXNet 1.9.1
    "resnet18_v1": (11_699_112, "1797e1d135ecb7e67d6f55d0ca7ab0cae068698d"),
    "resnet34_v1": (21_814_696, "ef2024fe0f64138374a0440d9b25af83b7e47010"),
    "resnet50_v1": (25_629_032, "3646705055e37f47f0b797ea4806ee7f098b026f"),
    "resnet101_v1": (44_695_144, "8b4803eb35a34ee844631e726e1e1313d91c93d6"),
    "resnet152_v1": (60_404_072, "e1925a402a7249a5fea3963e6acb84c1d78d5cef"),
    "resnet18_v2": (11_695_796, "3ee2fba93f9f36611092f94a7bd90921564af84e"),
    "resnet34_v2": (21_811_380, "6f6ed9633a33faefba704d3c85ae9bf4a7a5c318"),
    "resnet50_v2": (25_595_060, "5e5f97c4b6df0107cae1e3736a89cbf3f32e60c0"),
    "resnet101_v2": (44_639_412, "2bb1f1f02c357504c67f6d5318aa04adfb5097fa"),
    "resnet152_v2": (60_329_140, "6f2cee7cc0ce16aa8e4e78892a0c3ddd95bbfeeb"),
    "vgg11": (132_863_336, "e43af7c6c594a639eee3ddb74d553c0c68aa48c8"),
    "vgg13": (133_047_848, "f92928ec58735debf87d8fe11ead25dc2ded76a9"),
    "vgg16": (138_357_544, "77d5bc99ea8e9288aea9a82be9ff6ccd8ce4d6aa"),
    "vgg19": (143_667_240, "55e369cd0d560dff0732318ad018785c22e7ca56"),
    "vgg11_bn": (132_874_344, "d147c61bbc3c05e766aa76a6e02ae8f6dcd42512"),
    "vgg13_bn": (133_059_624, "287954a19084da425b1a2a1bc5021daa156a90cf"),
    "vgg16_bn": (138_374_440, "9006c314049483e9fab0e25044991112d118432b"),
    "vgg19_bn": (143_689_256, "5c014afe2d3736baa41da2e99f2c944b76e74190"),
    "alexnet": (61_100_840, "265994b09bb31707ebbdbd3bb2e125c8c30a963b"),
    "densenet121": (8_062_504, "460fb70d11966b42876a62c9717e2a6545ee6993"),
    "densenet161": (28_900_936, "4f4df0d7fbdfd54ef7a107219c9e16692007e51f"),
    "densenet169": (14_307_880, "26371ec6606b1a89f56c77d1e958cddaaa2b74bc"),
    "densenet201": (20_242_984, "daf29453ee3c656c7b9d6c9df5813244286ff669"),
    "squeezenet1.0": (1_248_424, "1eaecd3f48bd673c7af497aa9e0a8f4c4fcfd849"),
    "squeezenet1.1": (1_235_496, "7ad4490fa3a5496567eb253401a94e3ace2ae8b8"),
    "inceptionv3": (23_869_000, "c8bbc696cae046ebcd1c6b4f419ff725c60c0ca7"),
    "mobilenet1.0": (4_253_864, "6e3c06b7e01e6fcaac85e038503d030f70a946eb"),
    "mobilenet0.75": (2_601_976, "fe04c56bba114f50cb2ada430fb9689a0e65f44c"),
    "mobilenet0.5": (1_342_536, "bd5cc24a9a04c0f317c96410f671e529e5ef56c3"),
    "mobilenet0.25": (475_544, "276fcd248545180bb505f4669f4e31fbd29a5731"),
    "mobilenetv2_1.0": (3_539_136, "8fa938709a8cba96a60aa5d9c283cedc20efd0dd"),
    "mobilenetv2_0.75": (2_653_864, "9089b110373b3965c3dacd316269261b413f6c70"),
    "mobilenetv2_0.5": (1_983_104, "933d037bfab61d434c64ae2fd7503afe8f5c9c5b"),
    "mobilenetv2_0.25": (1_526_856, "8ff2db4a34f2e5dea0ce18ad9ca53d5109dfab44"),
}
RESNET18_V1_NAMES = [
    "conv0_weight", "batchnorm0_gamma", "batchnorm0_beta", "batchnorm0_running_mean",
    "batchnorm0_running_var", "stage1_conv0_weight", "stage1_batchnorm0_gamma",
    "stage1_batchnorm0_beta", "stage1_batchnorm0_running_mean",
    "stage1_batchnorm0_running_var", "stage1_conv1_weight", "stage1_batchnorm1_gamma",
    "stage1_batchnorm1_beta", "stage1_batchnorm1_running_mean",
    "stage1_batchnorm1_running_var", "stage1_conv2_weight", "stage1_batchnorm2_gamma",
    "stage1_batchnorm2_beta", "stage1_batchnorm2_running_mean",
    "stage1_batchnorm2_running_var", "stage1_conv3_weight", "stage1_batchnorm3_gamma",
    "stage1_batchnorm3_beta", "stage1_batchnorm3_running_mean",
    "stage1_batchnorm3_running_var", "stage2_conv0_weight", "stage2_batchnorm0_gamma",
    "stage2_batchnorm0_beta", "stage2_batchnorm0_running_mean",
    "stage2_batchnorm0_running_var", "stage2_conv1_weight", "stage2_batchnorm1_gamma",
    "stage2_batchnorm1_beta", "stage2_batchnorm1_running_mean",
    "stage2_batchnorm1_running_var", "stage2_conv2_weight", "stage2_batchnorm2_gamma",
    "stage2_batchnorm2_beta", "stage2_batchnorm2_running_mean",
    "stage2_batchnorm2_running_var", "stage2_conv3_weight", "stage2_batchnorm3_gamma",
    "stage2_batchnorm3_beta", "stage2_batchnorm3_running_mean",
    "stage2_batchnorm3_running_var", "stage2_conv4_weight", "stage2_batchnorm4_gamma",
    "stage2_batchnorm4_beta", "stage2_batchnorm4_running_mean",
    "stage2_batchnorm4_running_var", "stage3_conv0_weight", "stage3_batchnorm0_gamma",
    "stage3_batchnorm0_beta", "stage3_batchnorm0_running_mean",
    "stage3_batchnorm0_running_var", "stage3_conv1_weight", "stage3_batchnorm1_gamma",
    "stage3_batchnorm1_beta", "stage3_batchnorm1_running_mean",
    "stage3_batchnorm1_running_var", "stage3_conv2_weight", "stage3_batchnorm2_gamma",
    "stage3_batchnorm2_beta", "stage3_batchnorm2_running_mean",
    "stage3_batchnorm2_running_var", "stage3_conv3_weight", "stage3_batchnorm3_gamma",
    "stage3_batchnorm3_beta", "stage3_batchnorm3_running_mean",
    "stage3_batchnorm3_running_var", "stage3_conv4_weight", "stage3_batchnorm4_gamma",
    "stage3_batchnorm4_beta", "stage3_batchnorm4_running_mean",
    "stage3_batchnorm4_running_var", "stage4_conv0_weight", "stage4_batchnorm0_gamma",
    "stage4_batchnorm0_beta", "stage4_batchnorm0_running_mean",
    "stage4_batchnorm0_running_var", "stage4_conv1_weight", "stage4_batchnorm1_gamma",
    "stage4_batchnorm1_beta", "stage4_batchnorm1_running_mean",
    "stage4_batchnorm1_running_var", "stage4_conv2_weight", "stage4_batchnorm2_gamma",
    "stage4_batchnorm2_beta", "stage4_batchnorm2_running_mean",
    "stage4_batchnorm2_running_var", "stage4_conv3_weight", "stage4_batchnorm3_gamma",
    "stage4_batchnorm3_beta", "stage4_batchnorm3_running_mean",
    "stage4_batchnorm3_running_var", "stage4_conv4_weight", "stage4_batchnorm4_gamma",
    "stage4_batchnorm4_beta", "stage4_batchnorm4_running_mean",
    "stage4_batchnorm4_running_var", "dense0_weight", "dense0_bias",
]
RESNET18_V1_STRUCT = [
    "features.0.weight", "features.1.gamma", "features.1.beta", "features.1.running_mean",
    "features.1.running_var", "features.4.0.body.0.weight", "features.4.0.body.1.gamma",
    "features.4.0.body.1.beta", "features.4.0.body.1.running_mean",
    "features.4.0.body.1.running_var", "features.4.0.body.3.weight",
    "features.4.0.body.4.gamma", "features.4.0.body.4.beta",
    "features.4.0.body.4.running_mean", "features.4.0.body.4.running_var",
    "features.4.1.body.0.weight", "features.4.1.body.1.gamma", "features.4.1.body.1.beta",
    "features.4.1.body.1.running_mean", "features.4.1.body.1.running_var",
    "features.4.1.body.3.weight", "features.4.1.body.4.gamma", "features.4.1.body.4.beta",
    "features.4.1.body.4.running_mean", "features.4.1.body.4.running_var",
    "features.5.0.body.0.weight", "features.5.0.body.1.gamma", "features.5.0.body.1.beta",
    "features.5.0.body.1.running_mean", "features.5.0.body.1.running_var",
    "features.5.0.body.3.weight", "features.5.0.body.4.gamma", "features.5.0.body.4.beta",
    "features.5.0.body.4.running_mean", "features.5.0.body.4.running_var",
    "features.5.0.downsample.0.weight", "features.5.0.downsample.1.gamma",
    "features.5.0.downsample.1.beta", "features.5.0.downsample.1.running_mean",
    "features.5.0.downsample.1.running_var", "features.5.1.body.0.weight",
    "features.5.1.body.1.gamma", "features.5.1.body.1.beta",
    "features.5.1.body.1.running_mean", "features.5.1.body.1.running_var",
    "features.5.1.body.3.weight", "features.5.1.body.4.gamma", "features.5.1.body.4.beta",
    "features.5.1.body.4.running_mean", "features.5.1.body.4.running_var",
    "features.6.0.body.0.weight", "features.6.0.body.1.gamma", "features.6.0.body.1.beta",
    "features.6.0.body.1.running_mean", "features.6.0.body.1.running_var",
    "features.6.0.body.3.weight", "features.6.0.body.4.gamma", "features.6.0.body.4.beta",
    "features.6.0.body.4.running_mean", "features.6.0.body.4.running_var",
    "features.6.0.downsample.0.weight", "features.6.0.downsample.1.gamma",
    "features.6.0.downsample.1.beta", "features.6.0.downsample.1.running_mean",
    "features.6.0.downsample.1.running_var", "features.6.1.body.0.weight",
    "features.6.1.body.1.gamma", "features.6.1.body.1.beta",
    "features.6.1.body.1.running_mean", "features.6.1.body.1.running_var",
    "features.6.1.body.3.weight", "features.6.1.body.4.gamma", "features.6.1.body.4.beta",
    "features.6.1.body.4.running_mean", "features.6.1.body.4.running_var",
    "features.7.0.body.0.weight", "features.7.0.body.1.gamma", "features.7.0.body.1.beta",
    "features.7.0.body.1.running_mean", "features.7.0.body.1.running_var",
    "features.7.0.body.3.weight", "features.7.0.body.4.gamma", "features.7.0.body.4.beta",
    "features.7.0.body.4.running_mean", "features.7.0.body.4.running_var",
    "features.7.0.downsample.0.weight", "features.7.0.downsample.1.gamma",
    "features.7.0.downsample.1.beta", "features.7.0.downsample.1.running_mean",
    "features.7.0.downsample.1.running_var", "features.7.1.body.0.weight",
    "features.7.1.body.1.gamma", "features.7.1.body.1.beta",
    "features.7.1.body.1.running_mean", "features.7.1.body.1.running_var",
    "features.7.1.body.3.weight", "features.7.1.body.4.gamma", "features.7.1.body.4.beta",
    "features.7.1.body.4.running_mean", "features.7.1.body.4.running_var", "output.weight",
    "output.bias",
]
MXNET_OUTPUTS = {  # outputs with _fill weights on _input(size), MXNet 1.9.1
    "resnet18_v1": [12.17456, 10.32035, -27.65353, -25.19635],
    "resnet50_v2": [159.4763, -411.1282, -211.092, 36.63937],
    "vgg11_bn": [-4.492627, 7.084796, -4.494789, 1.311134],
    "alexnet": [1.540782, -2.361678, -0.3957621, 3.1521],
    "squeezenet1.1": [0.007812297, 1.138078, 0.01120279, 0.1029822],
    "densenet_small": [0.5349048, 0.4127437, 0.5017549, -0.1058078],
    "mobilenet0.25": [0.413653, -0.1575716, 0.03428127, -0.1441925],
    "mobilenetv2_0.25": [-2.440957, -1.67903, -0.9338456, 2.571601],
}


def _size(name: str) -> int:
    return 299 if name == "inceptionv3" else 224


def _fill(name: str, shape) -> np.ndarray:
    """Deterministic weights by structural name (BN statistics positive, He-scaled kernels)."""
    rs = np.random.RandomState(zlib.crc32(name.encode()))
    leaf = name.rsplit(".", 1)[-1]
    if leaf in ("gamma", "running_var"):
        return rs.uniform(0.5, 1.5, shape).astype("float32")
    if leaf in ("beta", "running_mean", "bias"):
        return rs.normal(0, 0.1, shape).astype("float32")
    fan_in = int(np.prod(shape[1:]))
    return rs.normal(0, (2.0 / fan_in) ** 0.5, shape).astype("float32")


def _input(size: int) -> mx.nd.NDArray:
    x = np.random.RandomState(0).uniform(-1, 1, (1, 3, size, size)).astype("float32")
    return mx.nd.array(x)


def _set_weights(net) -> None:
    for k, p in net._collect_params_with_prefix().items():
        p.set_data(mx.nd.array(_fill(k, p.shape)))


@pytest.mark.parametrize("name", list(MXNET_PARAMS))
def test_architecture_matches_mxnet(name):
    net = vision.get_model(name)
    params = net.collect_params()
    assert any(0 in p.shape for p in params.values()), "some shapes wait for the first call"
    size = _size(name)
    net.infer_shape(mx.nd.zeros((1, 3, size, size)))
    shapes = [tuple(p.shape) for p in params.values()]
    assert all(0 not in s for s in shapes)
    count, digest = MXNET_PARAMS[name]
    assert sum(int(np.prod(s)) for s in shapes) == count
    full = [k[len(net.prefix):] for k in params.keys()]
    struct = list(net._collect_params_with_prefix())
    text = "\n".join(f"{f} {s} {sh}" for f, s, sh in zip(full, struct, shapes, strict=True))
    assert hashlib.sha1(text.encode()).hexdigest() == digest, text[:2000]


def test_resnet18_v1_parameter_names():
    net = vision.resnet18_v1()
    assert net.prefix.startswith("resnetv1") and net.prefix.endswith("_")
    assert [k[len(net.prefix):] for k in net.collect_params().keys()] == RESNET18_V1_NAMES
    assert list(net._collect_params_with_prefix()) == RESNET18_V1_STRUCT
    named = vision.resnet18_v1(prefix="resnet_")
    assert next(iter(named.collect_params().keys())) == "resnet_conv0_weight"


CASES = {"resnet18_v1": (lambda: vision.resnet18_v1(classes=4), 32),
         "resnet50_v2": (lambda: vision.resnet50_v2(classes=4), 32),
         "vgg11_bn": (lambda: vision.vgg11_bn(classes=4), 32),
         "alexnet": (lambda: vision.alexnet(classes=4), 64),
         "squeezenet1.1": (lambda: vision.squeezenet1_1(classes=4), 224),
         "densenet_small": (lambda: vision.DenseNet(8, 4, [2, 2], classes=4), 56),
         "mobilenet0.25": (lambda: vision.mobilenet0_25(classes=4), 32),
         "mobilenetv2_0.25": (lambda: vision.mobilenet_v2_0_25(classes=4), 32)}


@pytest.mark.parametrize("case", list(CASES))
def test_outputs_match_mxnet(case):
    make, size = CASES[case]
    net = make()
    net.initialize()
    x = _input(size)
    assert net(x).shape == (1, 4)
    _set_weights(net)
    np.testing.assert_allclose(net(x).asnumpy().ravel(), MXNET_OUTPUTS[case],
                               rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_inception_v3_forward():
    net = vision.inception_v3(classes=5)
    net.initialize()
    assert net(mx.nd.ones((1, 3, 299, 299))).shape == (1, 5)


def test_resnet18_v1_hybridized_equals_imperative():
    net = vision.resnet18_v1(classes=10)
    net.initialize()
    x = mx.nd.array(np.random.RandomState(1).uniform(-1, 1, (2, 3, 32, 32)))
    eager = net(x).asnumpy()
    net.hybridize()
    compiled = net(x).asnumpy()
    np.testing.assert_allclose(compiled, eager, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(net(x).asnumpy(), eager, rtol=1e-4, atol=1e-4)


def test_thumbnail_and_classes():
    net = vision.get_resnet(2, 18, thumbnail=True, classes=7)
    net.initialize()
    assert net(mx.nd.ones((2, 3, 8, 8))).shape == (2, 7)
    assert net.features[1].weight.shape == (64, 3, 3, 3)


def test_save_load_parameters_between_instances(tmp_path):
    net = vision.mobilenet_v2_0_25(classes=4)
    net.initialize()
    x = _input(32)
    net(x)
    _set_weights(net)
    path = str(tmp_path / "m.params")
    net.save_parameters(path)
    other = vision.mobilenet_v2_0_25(classes=4, prefix="other_")
    other.load_parameters(path)
    np.testing.assert_allclose(other(x).asnumpy(), net(x).asnumpy(), rtol=1e-6)


def test_get_model_names_and_errors():
    assert isinstance(vision.get_model("ResNet18_V1"), vision.ResNetV1)
    assert isinstance(vision.get_model("squeezenet1.1"), vision.SqueezeNet)
    assert isinstance(vision.get_model("mobilenetv2_0.5"), vision.MobileNetV2)
    with pytest.raises(ValueError, match=r"Model resnet19 is not supported. Available "
                                         r"options are\n\talexnet\n\tdensenet121"):
        vision.get_model("ResNet19")
    with pytest.raises(MXNetError, match="Invalid resnet version"):
        vision.get_resnet(3, 18)
    with pytest.raises(MXNetError, match="Invalid number of layers"):
        vision.get_resnet(1, 19)
    with pytest.raises(MXNetError, match="Invalid number of layers"):
        vision.get_vgg(12)
    with pytest.raises(MXNetError, match="Invalid number of layers"):
        vision.get_densenet(100)
    with pytest.raises(MXNetError, match="Unsupported SqueezeNet version 2.0"):
        vision.SqueezeNet("2.0")
    with pytest.raises(MXNetError, match="one entry more"):
        vision.ResNetV1(vision.BasicBlockV1, [2, 2], [64, 64])


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("model_zoo tried to use the network")
    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("make, file_name", [
    (lambda root: vision.resnet18_v1(pretrained=True, root=root), "resnet18_v1-a0666292"),
    (lambda root: vision.get_model("vgg11_bn", pretrained=True, root=root),
     "vgg11_bn-ee79a809"),
    (lambda root: vision.squeezenet1_1(pretrained=True, root=root), "squeezenet1.1-33ba0f93"),
    (lambda root: vision.mobilenet0_5(pretrained=True, root=root), "mobilenet0.5-8e9d539c"),
    (lambda root: vision.mobilenet_v2_0_75(pretrained=True, root=root),
     "mobilenetv2_0.75-e2be7b72"),
    (lambda root: vision.inception_v3(pretrained=True, root=root), "inceptionv3-ed47ec45"),
])
def test_pretrained_without_local_file_never_downloads(tmp_path, no_network, make, file_name):
    with pytest.raises(MXNetError) as err:
        make(str(tmp_path))
    msg = str(err.value)
    assert os.path.join(str(tmp_path), file_name + ".params") in msg
    assert "never downloads" in msg and "load_parameters" in msg
    assert os.listdir(tmp_path) == []


def test_pretrained_default_root_is_mxnet_home(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("MXNET_HOME", str(tmp_path))
    assert model_store.default_root() == os.path.join(str(tmp_path), "models")
    with pytest.raises(MXNetError, match="never downloads") as err:
        vision.alexnet(pretrained=True)
    assert os.path.join(str(tmp_path), "models", "alexnet-44335d1f.params") in str(err.value)
    monkeypatch.delenv("MXNET_HOME")
    assert model_store.default_root() == os.path.join(os.path.expanduser("~"), ".mxnet",
                                                      "models")


def test_pretrained_loads_local_file(tmp_path, monkeypatch, no_network):
    net = vision.mobilenet0_25(classes=4)
    net.initialize()
    x = _input(32)
    net(x)
    _set_weights(net)
    expected = net(x).asnumpy()
    staging = tmp_path / "staging.params"
    net.save_parameters(str(staging))
    sha1 = hashlib.sha1(staging.read_bytes()).hexdigest()
    monkeypatch.setitem(model_store._model_sha1, "mobilenet0.25", sha1)
    os.rename(staging, tmp_path / f"mobilenet0.25-{sha1[:8]}.params")
    loaded = vision.get_model("mobilenet0.25", pretrained=True, root=str(tmp_path), classes=4)
    np.testing.assert_allclose(loaded(x).asnumpy(), expected, rtol=1e-6)


def test_pretrained_file_with_other_content(tmp_path, no_network):
    (tmp_path / "squeezenet1.0-264ba497.params").write_bytes(b"not the model zoo's file")
    with pytest.raises(MXNetError, match="SHA-1 differs"):
        vision.squeezenet1_0(pretrained=True, root=str(tmp_path))


def test_model_store_helpers(tmp_path):
    assert model_store.short_hash("densenet121") == "f27dbf2d"
    with pytest.raises(ValueError, match="Pretrained model for resnet7 is not available"):
        model_store.short_hash("resnet7")
    (tmp_path / "a-12345678.params").write_bytes(b"x")
    (tmp_path / "keep.txt").write_bytes(b"x")
    model_store.purge(str(tmp_path))
    assert os.listdir(tmp_path) == ["keep.txt"]
