"""DenseNet-BC (Huang et al. 2016, arXiv:1608.06993).

Structure and parameter names follow MXNet 1.9.1's ``model_zoo.vision.densenet``.
"""
from __future__ import annotations

from ember.base import MXNetError
from ember.context import cpu

from ... import nn
from ...block import HybridBlock
from ...contrib.nn import HybridConcurrent, Identity
from ..model_store import load_pretrained

__all__ = ["DenseNet", "densenet121", "densenet161", "densenet169", "densenet201",
           "get_densenet"]


def _dense_layer(growth_rate: int, bn_size: int, dropout: float) -> HybridConcurrent:
    """BN-ReLU-1x1 conv-BN-ReLU-3x3 conv, concatenated to its own input."""
    new_features = nn.HybridSequential(prefix="")
    new_features.add(nn.BatchNorm(), nn.Activation("relu"),
                     nn.Conv2D(bn_size * growth_rate, kernel_size=1, use_bias=False),
                     nn.BatchNorm(), nn.Activation("relu"),
                     nn.Conv2D(growth_rate, kernel_size=3, padding=1, use_bias=False))
    if dropout:
        new_features.add(nn.Dropout(dropout))
    out = HybridConcurrent(axis=1, prefix="")
    out.add(Identity(), new_features)
    return out


def _dense_block(num_layers: int, bn_size: int, growth_rate: int, dropout: float,
                 index: int) -> nn.HybridSequential:
    block = nn.HybridSequential(prefix=f"stage{index}_")
    with block.name_scope():
        for _ in range(num_layers):
            block.add(_dense_layer(growth_rate, bn_size, dropout))
    return block


def _transition(channels: int) -> nn.HybridSequential:
    """BN-ReLU-1x1 conv to ``channels``, then a 2x2 average pool."""
    out = nn.HybridSequential(prefix="")
    out.add(nn.BatchNorm(), nn.Activation("relu"),
            nn.Conv2D(channels, kernel_size=1, use_bias=False),
            nn.AvgPool2D(pool_size=2, strides=2))
    return out


class DenseNet(HybridBlock):
    """DenseNet-BC: a ``num_init_features``-wide stem, dense blocks of ``block_config[i]``
    layers each adding ``growth_rate`` channels (bottleneck ``bn_size * growth_rate``),
    transitions halving the channels, and a 7x7 average pool (224x224 inputs)."""

    def __init__(self, num_init_features: int, growth_rate: int, block_config,
                 bn_size: int = 4, dropout: float = 0, classes: int = 1000, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            self.features.add(nn.Conv2D(num_init_features, kernel_size=7, strides=2,
                                        padding=3, use_bias=False),
                              nn.BatchNorm(), nn.Activation("relu"),
                              nn.MaxPool2D(pool_size=3, strides=2, padding=1))
            channels = num_init_features
            for i, num_layers in enumerate(block_config):
                self.features.add(_dense_block(num_layers, bn_size, growth_rate, dropout,
                                               i + 1))
                channels += num_layers * growth_rate
                if i != len(block_config) - 1:
                    channels //= 2
                    self.features.add(_transition(channels))
            self.features.add(nn.BatchNorm(), nn.Activation("relu"),
                              nn.AvgPool2D(pool_size=7), nn.Flatten())
            self.output = nn.Dense(classes)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


# depth -> (stem width, growth rate, layers per dense block)
densenet_spec = {121: (64, 32, [6, 12, 24, 16]),
                 161: (96, 48, [6, 12, 36, 24]),
                 169: (64, 32, [6, 12, 32, 32]),
                 201: (64, 32, [6, 12, 48, 32])}


def get_densenet(num_layers: int, pretrained: bool = False, ctx=cpu(),
                 root: str | None = None, **kwargs) -> DenseNet:
    """DenseNet-BC with ``num_layers`` (121, 161, 169, 201) layers.

    ``pretrained=True`` loads ``root/densenet<N>-<hash>.params`` (``root`` defaults to
    ``$MXNET_HOME/models``) onto ``ctx``; ember never downloads it.
    """
    if num_layers not in densenet_spec:
        raise MXNetError(f"Invalid number of layers: {num_layers}. Options are "
                         f"{sorted(densenet_spec)}")
    net = DenseNet(*densenet_spec[num_layers], **kwargs)
    if pretrained:
        load_pretrained(net, f"densenet{num_layers}", root, ctx)
    return net


def densenet121(**kwargs) -> DenseNet:
    """DenseNet-BC 121; keyword arguments as :func:`get_densenet`."""
    return get_densenet(121, **kwargs)


def densenet161(**kwargs) -> DenseNet:
    """DenseNet-BC 161; keyword arguments as :func:`get_densenet`."""
    return get_densenet(161, **kwargs)


def densenet169(**kwargs) -> DenseNet:
    """DenseNet-BC 169; keyword arguments as :func:`get_densenet`."""
    return get_densenet(169, **kwargs)


def densenet201(**kwargs) -> DenseNet:
    """DenseNet-BC 201; keyword arguments as :func:`get_densenet`."""
    return get_densenet(201, **kwargs)
