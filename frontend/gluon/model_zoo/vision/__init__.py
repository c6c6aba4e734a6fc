"""``model_zoo.vision``: MXNet 1.9.1's predefined image-classification networks.

AlexNet, DenseNet, Inception v3, ResNet V1/V2, SqueezeNet, VGG, MobileNet and MobileNetV2,
with MXNet's constructors, block structure and parameter names::

    from ember.gluon.model_zoo import vision
    net = vision.resnet18_v1(classes=10)
    net = vision.get_model("mobilenetv2_0.5")

``pretrained=True`` loads MXNet's published parameter file from ``root`` (default
``$MXNET_HOME/models``) when it is there; ember never downloads (see ``model_store``).
Pretrained models expect RGB images in [0, 1] normalised with mean (0.485, 0.456, 0.406)
and std (0.229, 0.224, 0.225), at least 224x224 (299x299 for Inception v3).
"""
from __future__ import annotations

from .alexnet import *  # noqa: F401,F403
from .alexnet import alexnet
from .densenet import *  # noqa: F401,F403
from .densenet import densenet121, densenet161, densenet169, densenet201
from .inception import *  # noqa: F401,F403
from .inception import inception_v3
from .mobilenet import *  # noqa: F401,F403
from .mobilenet import (
    mobilenet0_5,
    mobilenet0_25,
    mobilenet0_75,
    mobilenet1_0,
    mobilenet_v2_0_5,
    mobilenet_v2_0_25,
    mobilenet_v2_0_75,
    mobilenet_v2_1_0,
)
from .resnet import *  # noqa: F401,F403
from .resnet import (
    resnet18_v1,
    resnet18_v2,
    resnet34_v1,
    resnet34_v2,
    resnet50_v1,
    resnet50_v2,
    resnet101_v1,
    resnet101_v2,
    resnet152_v1,
    resnet152_v2,
)
from .squeezenet import *  # noqa: F401,F403
from .squeezenet import squeezenet1_0, squeezenet1_1
from .vgg import *  # noqa: F401,F403
from .vgg import vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn

_models = {
    "resnet18_v1": resnet18_v1, "resnet34_v1": resnet34_v1, "resnet50_v1": resnet50_v1,
    "resnet101_v1": resnet101_v1, "resnet152_v1": resnet152_v1,
    "resnet18_v2": resnet18_v2, "resnet34_v2": resnet34_v2, "resnet50_v2": resnet50_v2,
    "resnet101_v2": resnet101_v2, "resnet152_v2": resnet152_v2,
    "vgg11": vgg11, "vgg13": vgg13, "vgg16": vgg16, "vgg19": vgg19,
    "vgg11_bn": vgg11_bn, "vgg13_bn": vgg13_bn, "vgg16_bn": vgg16_bn, "vgg19_bn": vgg19_bn,
    "alexnet": alexnet,
    "densenet121": densenet121, "densenet161": densenet161, "densenet169": densenet169,
    "densenet201": densenet201,
    "squeezenet1.0": squeezenet1_0, "squeezenet1.1": squeezenet1_1,
    "inceptionv3": inception_v3,
    "mobilenet1.0": mobilenet1_0, "mobilenet0.75": mobilenet0_75,
    "mobilenet0.5": mobilenet0_5, "mobilenet0.25": mobilenet0_25,
    "mobilenetv2_1.0": mobilenet_v2_1_0, "mobilenetv2_0.75": mobilenet_v2_0_75,
    "mobilenetv2_0.5": mobilenet_v2_0_5, "mobilenetv2_0.25": mobilenet_v2_0_25,
}


def get_model(name: str, **kwargs):
    """The predefined model ``name`` (case-insensitive), e.g. ``'resnet50_v2'``,
    ``'squeezenet1.1'``, ``'mobilenetv2_0.5'``.

    Keyword arguments go to the model's constructor: ``classes``, ``pretrained`` (load
    MXNet's parameter file from ``root``; ember never downloads), ``ctx``, ``root`` (default
    ``$MXNET_HOME/models``), ``prefix``... Unknown names raise ``ValueError`` listing the
    available ones.
    """
    name = name.lower()
    if name not in _models:
        raise ValueError("Model {} is not supported. Available options are\n\t{}".format(
            name, "\n\t".join(sorted(_models))))
    return _models[name](**kwargs)
