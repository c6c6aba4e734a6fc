"""SqueezeNet 1.0 (Iandola et al. 2016, arXiv:1602.07360) and 1.1 (the official repo's
cheaper variant).

Structure and parameter names follow MXNet 1.9.1's ``model_zoo.vision.squeezenet``.
"""
from __future__ import annotations

from ember.base import MXNetError
from ember.context import cpu

from ... import nn
from ...block import HybridBlock
from ...contrib.nn import HybridConcurrent
from ..model_store import load_pretrained

__all__ = ["SqueezeNet", "squeezenet1_0", "squeezenet1_1", "get_squeezenet"]


def _fire_conv(channels: int, kernel_size: int, padding: int = 0) -> nn.HybridSequential:
    out = nn.HybridSequential(prefix="")
    out.add(nn.Conv2D(channels, kernel_size, padding=padding), nn.Activation("relu"))
    return out


def _fire(squeeze: int, expand1x1: int, expand3x3: int) -> nn.HybridSequential:
    """A fire module: a 1x1 squeeze convolution, then 1x1 and 3x3 expansions concatenated."""
    out = nn.HybridSequential(prefix="")
    out.add(_fire_conv(squeeze, 1))
    paths = HybridConcurrent(axis=1, prefix="")
    paths.add(_fire_conv(expand1x1, 1))
    paths.add(_fire_conv(expand3x3, 3, 1))
    out.add(paths)
    return out


def _pool() -> nn.MaxPool2D:
    return nn.MaxPool2D(pool_size=3, strides=2, ceil_mode=True)


class SqueezeNet(HybridBlock):
    """SqueezeNet ``version`` '1.0' or '1.1' with ``classes`` outputs (a 1x1 convolution
    and a 13x13 average pool, so it expects 224x224 inputs)."""

    def __init__(self, version: str, classes: int = 1000, **kwargs):
        super().__init__(**kwargs)
        if version not in ("1.0", "1.1"):
            raise MXNetError(f"Unsupported SqueezeNet version {version}: 1.0 or 1.1 expected")
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            add = self.features.add
            if version == "1.0":
                add(nn.Conv2D(96, kernel_size=7, strides=2), nn.Activation("relu"), _pool())
                add(_fire(16, 64, 64), _fire(16, 64, 64), _fire(32, 128, 128), _pool())
                add(_fire(32, 128, 128), _fire(48, 192, 192), _fire(48, 192, 192),
                    _fire(64, 256, 256), _pool())
                add(_fire(64, 256, 256))
            else:
                add(nn.Conv2D(64, kernel_size=3, strides=2), nn.Activation("relu"), _pool())
                add(_fire(16, 64, 64), _fire(16, 64, 64), _pool())
                add(_fire(32, 128, 128), _fire(32, 128, 128), _pool())
                add(_fire(48, 192, 192), _fire(48, 192, 192), _fire(64, 256, 256),
                    _fire(64, 256, 256))
            add(nn.Dropout(0.5))
            self.output = nn.HybridSequential(prefix="")
            self.output.add(nn.Conv2D(classes, kernel_size=1), nn.Activation("relu"),
                            nn.AvgPool2D(13), nn.Flatten())

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


def get_squeezenet(version: str, pretrained: bool = False, ctx=cpu(),
                   root: str | None = None, **kwargs) -> SqueezeNet:
    """SqueezeNet ``version`` ('1.0' or '1.1').

    ``pretrained=True`` loads ``root/squeezenet<version>-<hash>.params`` (``root`` defaults
    to ``$MXNET_HOME/models``) onto ``ctx``; ember never downloads it.
    """
    net = SqueezeNet(version, **kwargs)
    if pretrained:
        load_pretrained(net, f"squeezenet{version}", root, ctx)
    return net


def squeezenet1_0(**kwargs) -> SqueezeNet:
    """SqueezeNet 1.0; keyword arguments as :func:`get_squeezenet`."""
    return get_squeezenet("1.0", **kwargs)


def squeezenet1_1(**kwargs) -> SqueezeNet:
    """SqueezeNet 1.1; keyword arguments as :func:`get_squeezenet`."""
    return get_squeezenet("1.1", **kwargs)
