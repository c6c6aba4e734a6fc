"""VGG (Simonyan and Zisserman 2014, arXiv:1409.1556), with optional batch normalisation.

Structure and parameter names follow MXNet 1.9.1's ``model_zoo.vision.vgg``.
"""
from __future__ import annotations

from ember.base import MXNetError
from ember.context import cpu
from ember.initializer import Xavier

from ... import nn
from ...block import HybridBlock
from ..model_store import load_pretrained

__all__ = ["VGG", "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn",
           "vgg19_bn", "get_vgg"]


class VGG(HybridBlock):
    """VGG: blocks of ``layers[i]`` 3x3 convolutions with ``filters[i]`` channels, each block
    closed by a 2x2 max pool, then two 4096-wide Dense layers with dropout and the output.

    ``batch_norm=True`` puts a BatchNorm after every convolution.
    """

    def __init__(self, layers, filters, classes: int = 1000, batch_norm: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        if len(layers) != len(filters):
            raise MXNetError(f"VGG: layers ({len(layers)} entries) and filters "
                             f"({len(filters)} entries) must have the same length")
        with self.name_scope():
            self.features = self._make_features(layers, filters, batch_norm)
            for _ in range(2):
                self.features.add(nn.Dense(4096, activation="relu",
                                           weight_initializer="normal",
                                           bias_initializer="zeros"))
                self.features.add(nn.Dropout(rate=0.5))
            self.output = nn.Dense(classes, weight_initializer="normal",
                                   bias_initializer="zeros")

    def _make_features(self, layers, filters, batch_norm: bool) -> nn.HybridSequential:
        features = nn.HybridSequential(prefix="")
        for num, width in zip(layers, filters, strict=True):
            for _ in range(num):
                init = Xavier(rnd_type="gaussian", factor_type="out", magnitude=2)
                features.add(nn.Conv2D(width, kernel_size=3, padding=1,
                                       weight_initializer=init, bias_initializer="zeros"))
                if batch_norm:
                    features.add(nn.BatchNorm())
                features.add(nn.Activation("relu"))
            features.add(nn.MaxPool2D(strides=2))
        return features

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


# depth -> (convolutions per block, channels per block)
vgg_spec = {11: ([1, 1, 2, 2, 2], [64, 128, 256, 512, 512]),
            13: ([2, 2, 2, 2, 2], [64, 128, 256, 512, 512]),
            16: ([2, 2, 3, 3, 3], [64, 128, 256, 512, 512]),
            19: ([2, 2, 4, 4, 4], [64, 128, 256, 512, 512])}


def get_vgg(num_layers: int, pretrained: bool = False, ctx=cpu(), root: str | None = None,
            **kwargs) -> VGG:
    """VGG with ``num_layers`` (11, 13, 16, 19) weight layers.

    ``pretrained=True`` loads ``root/vgg<N>[_bn]-<hash>.params`` (``root`` defaults to
    ``$MXNET_HOME/models``) onto ``ctx``; ember never downloads it. Other keyword arguments
    (``classes``, ``batch_norm``, ``prefix``, ``params``) go to :class:`VGG`.
    """
    if num_layers not in vgg_spec:
        raise MXNetError(f"Invalid number of layers: {num_layers}. Options are "
                         f"{sorted(vgg_spec)}")
    layers, filters = vgg_spec[num_layers]
    net = VGG(layers, filters, **kwargs)
    if pretrained:
        suffix = "_bn" if kwargs.get("batch_norm") else ""
        load_pretrained(net, f"vgg{num_layers}{suffix}", root, ctx)
    return net


def vgg11(**kwargs) -> VGG:
    """VGG-11; keyword arguments as :func:`get_vgg`."""
    return get_vgg(11, **kwargs)


def vgg13(**kwargs) -> VGG:
    """VGG-13; keyword arguments as :func:`get_vgg`."""
    return get_vgg(13, **kwargs)


def vgg16(**kwargs) -> VGG:
    """VGG-16; keyword arguments as :func:`get_vgg`."""
    return get_vgg(16, **kwargs)


def vgg19(**kwargs) -> VGG:
    """VGG-19; keyword arguments as :func:`get_vgg`."""
    return get_vgg(19, **kwargs)


def vgg11_bn(**kwargs) -> VGG:
    """VGG-11 with batch normalisation; keyword arguments as :func:`get_vgg`."""
    return get_vgg(11, **{**kwargs, "batch_norm": True})


def vgg13_bn(**kwargs) -> VGG:
    """VGG-13 with batch normalisation; keyword arguments as :func:`get_vgg`."""
    return get_vgg(13, **{**kwargs, "batch_norm": True})


def vgg16_bn(**kwargs) -> VGG:
    """VGG-16 with batch normalisation; keyword arguments as :func:`get_vgg`."""
    return get_vgg(16, **{**kwargs, "batch_norm": True})


def vgg19_bn(**kwargs) -> VGG:
    """VGG-19 with batch normalisation; keyword arguments as :func:`get_vgg`."""
    return get_vgg(19, **{**kwargs, "batch_norm": True})
