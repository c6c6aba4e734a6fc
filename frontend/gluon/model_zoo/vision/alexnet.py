"""AlexNet, the one-GPU variant of Krizhevsky 2014 ("One weird trick", arXiv:1404.5997).

Structure and parameter names follow MXNet 1.9.1's ``model_zoo.vision.alexnet``.
"""
from __future__ import annotations

from ember.context import cpu

from ... import nn
from ...block import HybridBlock
from ..model_store import load_pretrained

__all__ = ["AlexNet", "alexnet"]


class AlexNet(HybridBlock):
    """Five convolutions (three max pools) and two 4096-wide Dense layers with dropout,
    then a ``classes``-wide output layer."""

    def __init__(self, classes: int = 1000, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            with self.features.name_scope():
                # (channels, kernel, stride, padding, max pool after it)
                for channels, kernel, stride, pad, pool in [(64, 11, 4, 2, True),
                                                            (192, 5, 1, 2, True),
                                                            (384, 3, 1, 1, False),
                                                            (256, 3, 1, 1, False),
                                                            (256, 3, 1, 1, True)]:
                    self.features.add(nn.Conv2D(channels, kernel_size=kernel, strides=stride,
                                                padding=pad, activation="relu"))
                    if pool:
                        self.features.add(nn.MaxPool2D(pool_size=3, strides=2))
                self.features.add(nn.Flatten())
                for _ in range(2):
                    self.features.add(nn.Dense(4096, activation="relu"))
                    self.features.add(nn.Dropout(0.5))
            self.output = nn.Dense(classes)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


def alexnet(pretrained: bool = False, ctx=cpu(), root: str | None = None,
            **kwargs) -> AlexNet:
    """AlexNet. ``pretrained=True`` loads ``root/alexnet-<hash>.params`` (``root`` defaults
    to ``$MXNET_HOME/models``) onto ``ctx``; ember never downloads it."""
    net = AlexNet(**kwargs)
    if pretrained:
        load_pretrained(net, "alexnet", root, ctx)
    return net
