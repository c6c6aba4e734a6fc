"""Inception v3 (Szegedy et al. 2015, arXiv:1512.00567), for 299x299 inputs.

Structure and parameter names follow MXNet 1.9.1's ``model_zoo.vision.inception``: each
mixed module is a HybridConcurrent of branches (named ``A1_`` ... ``E2_``), each branch a
sequence of conv-BN(eps 1e-3)-ReLU units, some behind a pooling layer.
"""
from __future__ import annotations

from ember.context import cpu

from ... import nn
from ...block import HybridBlock
from ...contrib.nn import HybridConcurrent
from ..model_store import load_pretrained

__all__ = ["Inception3", "inception_v3"]


def _basic_conv(**kwargs) -> nn.HybridSequential:
    """Convolution without bias, BatchNorm (epsilon 0.001) and ReLU."""
    out = nn.HybridSequential(prefix="")
    out.add(nn.Conv2D(use_bias=False, **kwargs), nn.BatchNorm(epsilon=0.001),
            nn.Activation("relu"))
    return out


def _branch(pool: str | None, *convs) -> nn.HybridSequential:
    """A branch: an optional 'avg' (3x3/1, pad 1) or 'max' (3x3/2) pool, then one basic
    convolution per ``(channels, kernel_size, strides, padding)`` (None: the default)."""
    out = nn.HybridSequential(prefix="")
    if pool == "avg":
        out.add(nn.AvgPool2D(pool_size=3, strides=1, padding=1))
    elif pool == "max":
        out.add(nn.MaxPool2D(pool_size=3, strides=2))
    for setting in convs:
        names = ("channels", "kernel_size", "strides", "padding")
        out.add(_basic_conv(**{k: v for k, v in zip(names, setting) if v is not None}))
    return out


def _mixed(prefix: str, *branches) -> HybridConcurrent:
    """Concatenate (on channels) the branches built by the ``branches`` thunks, in order."""
    out = HybridConcurrent(axis=1, prefix=prefix)
    with out.name_scope():
        for make in branches:
            out.add(make())
    return out


def _make_A(pool_features: int, prefix: str) -> HybridConcurrent:
    return _mixed(prefix,
                  lambda: _branch(None, (64, 1, None, None)),
                  lambda: _branch(None, (48, 1, None, None), (64, 5, None, 2)),
                  lambda: _branch(None, (64, 1, None, None), (96, 3, None, 1),
                                  (96, 3, None, 1)),
                  lambda: _branch("avg", (pool_features, 1, None, None)))


def _make_B(prefix: str) -> HybridConcurrent:
    return _mixed(prefix,
                  lambda: _branch(None, (384, 3, 2, None)),
                  lambda: _branch(None, (64, 1, None, None), (96, 3, None, 1),
                                  (96, 3, 2, None)),
                  lambda: _branch("max"))


def _make_C(c7: int, prefix: str) -> HybridConcurrent:
    row, col = ((1, 7), None, (0, 3)), ((7, 1), None, (3, 0))
    return _mixed(prefix,
                  lambda: _branch(None, (192, 1, None, None)),
                  lambda: _branch(None, (c7, 1, None, None), (c7, *row), (192, *col)),
                  lambda: _branch(None, (c7, 1, None, None), (c7, *col), (c7, *row),
                                  (c7, *col), (192, *row)),
                  lambda: _branch("avg", (192, 1, None, None)))


def _make_D(prefix: str) -> HybridConcurrent:
    return _mixed(prefix,
                  lambda: _branch(None, (192, 1, None, None), (320, 3, 2, None)),
                  lambda: _branch(None, (192, 1, None, None), (192, (1, 7), None, (0, 3)),
                                  (192, (7, 1), None, (3, 0)), (192, 3, 2, None)),
                  lambda: _branch("max"))


def _split_3x3(*head_convs) -> nn.HybridSequential:
    """A branch of ``head_convs`` followed by parallel 1x3 and 3x1 convolutions (384
    channels each), concatenated."""
    seq = nn.HybridSequential(prefix="")
    seq.add(_branch(None, *head_convs))
    split = HybridConcurrent(axis=1, prefix="")
    seq.add(split)
    split.add(_branch(None, (384, (1, 3), None, (0, 1))))
    split.add(_branch(None, (384, (3, 1), None, (1, 0))))
    return seq


def _make_E(prefix: str) -> HybridConcurrent:
    return _mixed(prefix,
                  lambda: _branch(None, (320, 1, None, None)),
                  lambda: _split_3x3((384, 1, None, None)),
                  lambda: _split_3x3((448, 1, None, None), (384, 3, None, 1)),
                  lambda: _branch("avg", (192, 1, None, None)))


def make_aux(classes: int) -> nn.HybridSequential:
    """The auxiliary classifier head of the paper (MXNet defines it but does not use it)."""
    out = nn.HybridSequential(prefix="")
    out.add(nn.AvgPool2D(pool_size=5, strides=3), _basic_conv(channels=128, kernel_size=1),
            _basic_conv(channels=768, kernel_size=5), nn.Flatten(), nn.Dense(classes))
    return out


class Inception3(HybridBlock):
    """Inception v3 with ``classes`` outputs; expects 299x299 inputs (an 8x8 average pool
    closes the features)."""

    def __init__(self, classes: int = 1000, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            self.features.add(_basic_conv(channels=32, kernel_size=3, strides=2),
                              _basic_conv(channels=32, kernel_size=3),
                              _basic_conv(channels=64, kernel_size=3, padding=1),
                              nn.MaxPool2D(pool_size=3, strides=2),
                              _basic_conv(channels=80, kernel_size=1),
                              _basic_conv(channels=192, kernel_size=3),
                              nn.MaxPool2D(pool_size=3, strides=2))
            self.features.add(_make_A(32, "A1_"), _make_A(64, "A2_"), _make_A(64, "A3_"),
                              _make_B("B_"))
            self.features.add(_make_C(128, "C1_"), _make_C(160, "C2_"), _make_C(160, "C3_"),
                              _make_C(192, "C4_"))
            self.features.add(_make_D("D_"), _make_E("E1_"), _make_E("E2_"),
                              nn.AvgPool2D(pool_size=8), nn.Dropout(0.5))
            self.output = nn.Dense(classes)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


def inception_v3(pretrained: bool = False, ctx=cpu(), root: str | None = None,
                 **kwargs) -> Inception3:
    """Inception v3. ``pretrained=True`` loads ``root/inceptionv3-<hash>.params`` (``root``
    defaults to ``$MXNET_HOME/models``) onto ``ctx``; ember never downloads it."""
    net = Inception3(**kwargs)
    if pretrained:
        load_pretrained(net, "inceptionv3", root, ctx)
    return net
