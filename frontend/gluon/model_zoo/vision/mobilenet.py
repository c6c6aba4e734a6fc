"""MobileNet (Howard et al. 2017, arXiv:1704.04861) and MobileNetV2 (Sandler et al. 2018,
arXiv:1801.04381), with width multipliers.

Structure and parameter names follow MXNet 1.9.1's ``model_zoo.vision.mobilenet``.
"""
from __future__ import annotations

from ember.context import cpu

from ... import nn
from ...block import HybridBlock
from ..model_store import load_pretrained

__all__ = ["MobileNet", "MobileNetV2", "mobilenet1_0", "mobilenet_v2_1_0", "mobilenet0_75",
           "mobilenet_v2_0_75", "mobilenet0_5", "mobilenet_v2_0_5", "mobilenet0_25",
           "mobilenet_v2_0_25", "get_mobilenet", "get_mobilenet_v2"]


class RELU6(HybridBlock):
    """``min(max(x, 0), 6)``, the activation of MobileNetV2."""

    def hybrid_forward(self, F, x):
        return F.clip(x, 0, 6, name="relu6")


def _add_conv(out: nn.HybridSequential, channels: int = 1, kernel: int = 1, stride: int = 1,
              pad: int = 0, num_group: int = 1, active: bool = True,
              relu6: bool = False) -> None:
    """Append convolution (no bias), BatchNorm and, if ``active``, ReLU or ReLU6."""
    out.add(nn.Conv2D(channels, kernel, stride, pad, groups=num_group, use_bias=False))
    out.add(nn.BatchNorm(scale=True))
    if active:
        out.add(RELU6() if relu6 else nn.Activation("relu"))


def _add_conv_dw(out: nn.HybridSequential, dw_channels: int, channels: int, stride: int,
                 relu6: bool = False) -> None:
    """Append a depthwise 3x3 convolution and a pointwise 1x1 convolution."""
    _add_conv(out, channels=dw_channels, kernel=3, stride=stride, pad=1,
              num_group=dw_channels, relu6=relu6)
    _add_conv(out, channels=channels, relu6=relu6)


class LinearBottleneck(HybridBlock):
    """MobileNetV2's inverted residual: 1x1 expansion by ``t``, depthwise 3x3 with
    ``stride``, linear 1x1 projection to ``channels``; a shortcut when shapes allow."""

    def __init__(self, in_channels: int, channels: int, t: int, stride: int, **kwargs):
        super().__init__(**kwargs)
        self.use_shortcut = stride == 1 and in_channels == channels
        with self.name_scope():
            self.out = nn.HybridSequential()
            wide = in_channels * t
            _add_conv(self.out, wide, relu6=True)
            _add_conv(self.out, wide, kernel=3, stride=stride, pad=1, num_group=wide,
                      relu6=True)
            _add_conv(self.out, channels, active=False, relu6=True)

    def hybrid_forward(self, F, x):
        out = self.out(x)
        return F.elemwise_add(out, x) if self.use_shortcut else out


def _scaled(widths, multiplier: float) -> list[int]:
    return [int(w * multiplier) for w in widths]


class MobileNet(HybridBlock):
    """MobileNet V1: a strided 3x3 convolution and 13 depthwise-separable convolutions whose
    widths are scaled by ``multiplier`` (>= 0.25), global pooling, ``classes`` outputs."""

    def __init__(self, multiplier: float = 1.0, classes: int = 1000, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            with self.features.name_scope():
                _add_conv(self.features, channels=int(32 * multiplier), kernel=3, pad=1,
                          stride=2)
                dw_channels = _scaled([32, 64] + [128] * 2 + [256] * 2 + [512] * 6 + [1024],
                                      multiplier)
                channels = _scaled([64] + [128] * 2 + [256] * 2 + [512] * 6 + [1024] * 2,
                                   multiplier)
                strides = [1, 2] * 3 + [1] * 5 + [2, 1]
                for dwc, c, s in zip(dw_channels, channels, strides, strict=True):
                    _add_conv_dw(self.features, dw_channels=dwc, channels=c, stride=s)
                self.features.add(nn.GlobalAvgPool2D(), nn.Flatten())
            self.output = nn.Dense(classes)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


class MobileNetV2(HybridBlock):
    """MobileNetV2: 17 linear bottlenecks with widths scaled by ``multiplier``, a 1x1
    convolution to 1280 channels (scaled only when ``multiplier > 1``), global pooling and a
    1x1 convolution to ``classes``."""

    def __init__(self, multiplier: float = 1.0, classes: int = 1000, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="features_")
            with self.features.name_scope():
                _add_conv(self.features, int(32 * multiplier), kernel=3, stride=2, pad=1,
                          relu6=True)
                in_group = _scaled([32] + [16] + [24] * 2 + [32] * 3 + [64] * 4 + [96] * 3
                                   + [160] * 3, multiplier)
                out_group = _scaled([16] + [24] * 2 + [32] * 3 + [64] * 4 + [96] * 3
                                    + [160] * 3 + [320], multiplier)
                expansions = [1] + [6] * 16
                strides = [1, 2] * 2 + [1, 1, 2] + [1] * 6 + [2] + [1] * 3
                for in_c, c, t, s in zip(in_group, out_group, expansions, strides,
                                         strict=True):
                    self.features.add(LinearBottleneck(in_channels=in_c, channels=c, t=t,
                                                       stride=s))
                last = int(1280 * multiplier) if multiplier > 1.0 else 1280
                _add_conv(self.features, last, relu6=True)
                self.features.add(nn.GlobalAvgPool2D())
            self.output = nn.HybridSequential(prefix="output_")
            with self.output.name_scope():
                self.output.add(nn.Conv2D(classes, 1, use_bias=False, prefix="pred_"),
                                nn.Flatten())

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


def _version_suffix(multiplier: float) -> str:
    """The model-zoo spelling of a multiplier: 1.0, 0.75, 0.5, 0.25."""
    suffix = f"{multiplier:.2f}"
    return suffix[:-1] if suffix in ("1.00", "0.50") else suffix


def get_mobilenet(multiplier: float, pretrained: bool = False, ctx=cpu(),
                  root: str | None = None, **kwargs) -> MobileNet:
    """MobileNet with width ``multiplier``.

    ``pretrained=True`` loads ``root/mobilenet<multiplier>-<hash>.params`` (``root``
    defaults to ``$MXNET_HOME/models``) onto ``ctx``; ember never downloads it.
    """
    net = MobileNet(multiplier, **kwargs)
    if pretrained:
        load_pretrained(net, f"mobilenet{_version_suffix(multiplier)}", root, ctx)
    return net


def get_mobilenet_v2(multiplier: float, pretrained: bool = False, ctx=cpu(),
                     root: str | None = None, **kwargs) -> MobileNetV2:
    """MobileNetV2 with width ``multiplier``.

    ``pretrained=True`` loads ``root/mobilenetv2_<multiplier>-<hash>.params`` (``root``
    defaults to ``$MXNET_HOME/models``) onto ``ctx``; ember never downloads it.
    """
    net = MobileNetV2(multiplier, **kwargs)
    if pretrained:
        load_pretrained(net, f"mobilenetv2_{_version_suffix(multiplier)}", root, ctx)
    return net


def mobilenet1_0(**kwargs) -> MobileNet:
    """MobileNet, width multiplier 1.0; keyword arguments as :func:`get_mobilenet`."""
    return get_mobilenet(1.0, **kwargs)


def mobilenet0_75(**kwargs) -> MobileNet:
    """MobileNet, width multiplier 0.75; keyword arguments as :func:`get_mobilenet`."""
    return get_mobilenet(0.75, **kwargs)


def mobilenet0_5(**kwargs) -> MobileNet:
    """MobileNet, width multiplier 0.5; keyword arguments as :func:`get_mobilenet`."""
    return get_mobilenet(0.5, **kwargs)


def mobilenet0_25(**kwargs) -> MobileNet:
    """MobileNet, width multiplier 0.25; keyword arguments as :func:`get_mobilenet`."""
    return get_mobilenet(0.25, **kwargs)


def mobilenet_v2_1_0(**kwargs) -> MobileNetV2:
    """MobileNetV2, width multiplier 1.0; keyword arguments as :func:`get_mobilenet_v2`."""
    return get_mobilenet_v2(1.0, **kwargs)


def mobilenet_v2_0_75(**kwargs) -> MobileNetV2:
    """MobileNetV2, width multiplier 0.75; keyword arguments as :func:`get_mobilenet_v2`."""
    return get_mobilenet_v2(0.75, **kwargs)


def mobilenet_v2_0_5(**kwargs) -> MobileNetV2:
    """MobileNetV2, width multiplier 0.5; keyword arguments as :func:`get_mobilenet_v2`."""
    return get_mobilenet_v2(0.5, **kwargs)


def mobilenet_v2_0_25(**kwargs) -> MobileNetV2:
    """MobileNetV2, width multiplier 0.25; keyword arguments as :func:`get_mobilenet_v2`."""
    return get_mobilenet_v2(0.25, **kwargs)
