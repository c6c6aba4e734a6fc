"""ResNet-18 v1, ResNet-50 v1, MobileNet 1.0 and DenseNet-121 in plain ``torch.nn``
(torchvision is not needed), built like the Gluon model zoo's: the same layers, strides,
paddings and parameter order, so that ``bench.convnets.param_value`` fills both with the
same numbers.

ResNet-18 v1: 7x7/2 conv, BN, ReLU, 3x3/2 max pool, four stages of two basic blocks (the
stride on the first 3x3 conv, a 1x1 projection + BN on the shortcut when the shape changes),
global average pooling, Dense(1000). ResNet-50 v1: the same stem, four stages of 3, 4, 6, 3
bottleneck blocks (1x1 with bias and the stage's stride, 3x3, 1x1 with bias, each with BN;
the projection on each stage's first block). MobileNet 1.0: 3x3/2 conv, 13
depthwise-separable pairs, global average pooling, Dense(1000). DenseNet-121: the ResNet
stem, dense blocks of 6, 12, 24, 16 layers (BN-ReLU-1x1 to 128, BN-ReLU-3x3 to 32,
concatenated) with transitions (BN-ReLU-1x1 halving, 2x2 average pool), BN-ReLU, 7x7
average pool. Convolutions have no bias (but the bottlenecks' 1x1s, as Gluon's); BN eps
1e-5.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.common import THREADS
from bench.convnets import LR, MOMENTUM, param_sig, param_value

torch.set_num_threads(THREADS)


def _conv_bn(cin: int, cout: int, k: int, stride: int, pad: int, groups: int = 1) -> list:
    return [nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps=1e-5)]


class BasicBlockV1(nn.Module):
    """Two 3x3 convolutions with BN, post-activation residual."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(cin, cout, 3, stride, 1), nn.ReLU(),
                                  *_conv_bn(cout, cout, 3, 1, 1))
        self.downsample = nn.Sequential(*_conv_bn(cin, cout, 1, stride, 0)) \
            if stride != 1 or cin != cout else None

    def forward(self, x):
        short = x if self.downsample is None else self.downsample(x)
        return F.relu(short + self.body(x))


class BottleneckV1(nn.Module):
    """1x1 (stride, bias) -> 3x3 -> 1x1 (bias), BN after each, post-activation residual."""

    def __init__(self, cin: int, cout: int, stride: int, project: bool):
        super().__init__()
        w = cout // 4
        self.body = nn.Sequential(nn.Conv2d(cin, w, 1, stride, 0), nn.BatchNorm2d(w, eps=1e-5),
                                  nn.ReLU(), *_conv_bn(w, w, 3, 1, 1), nn.ReLU(),
                                  nn.Conv2d(w, cout, 1, 1, 0), nn.BatchNorm2d(cout, eps=1e-5))
        self.downsample = nn.Sequential(*_conv_bn(cin, cout, 1, stride, 0)) if project else None

    def forward(self, x):
        short = x if self.downsample is None else self.downsample(x)
        return F.relu(self.body(x) + short)


def resnet50_v1(classes: int = 1000) -> nn.Module:
    """ResNet-50 v1 as ``gluon.model_zoo.vision.resnet50_v1``."""
    layers = [*_conv_bn(3, 64, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for i, (blocks, cout) in enumerate(zip((3, 4, 6, 3), (256, 512, 1024, 2048), strict=True)):
        stride = 1 if i == 0 else 2
        layers += [BottleneckV1(cin, cout, stride, cin != cout)]
        layers += [BottleneckV1(cout, cout, 1, False) for _ in range(blocks - 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, classes)]
    return nn.Sequential(*layers)


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv-BN-ReLU-3x3 conv, concatenated to its input (DenseNet-BC)."""

    def __init__(self, cin: int, growth: int = 32, bn_size: int = 4):
        super().__init__()
        w = bn_size * growth
        self.body = nn.Sequential(nn.BatchNorm2d(cin, eps=1e-5), nn.ReLU(),
                                  nn.Conv2d(cin, w, 1, bias=False),
                                  nn.BatchNorm2d(w, eps=1e-5), nn.ReLU(),
                                  nn.Conv2d(w, growth, 3, 1, 1, bias=False))

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


def densenet121(classes: int = 1000) -> nn.Module:
    """DenseNet-121 as ``gluon.model_zoo.vision.densenet121``."""
    layers = [*_conv_bn(3, 64, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    c = 64
    for i, n in enumerate((6, 12, 24, 16)):
        for _ in range(n):
            layers.append(DenseLayer(c))
            c += 32
        if i != 3:   # transition: BN-ReLU-1x1 conv halving the channels, 2x2 average pool
            layers += [nn.BatchNorm2d(c, eps=1e-5), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False),
                       nn.AvgPool2d(2, 2)]
            c //= 2
    layers += [nn.BatchNorm2d(c, eps=1e-5), nn.ReLU(), nn.AvgPool2d(7), nn.Flatten(),
               nn.Linear(c, classes)]
    return nn.Sequential(*layers)


def resnet18_v1(classes: int = 1000) -> nn.Module:
    """ResNet-18 v1 as ``gluon.model_zoo.vision.resnet18_v1``."""
    layers = [*_conv_bn(3, 64, 7, 2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for i, cout in enumerate((64, 128, 256, 512)):
        stride = 1 if i == 0 else 2
        layers += [BasicBlockV1(cin, cout, stride), BasicBlockV1(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes)]
    return nn.Sequential(*layers)


def mobilenet1_0(classes: int = 1000) -> nn.Module:
    """MobileNet 1.0 as ``gluon.model_zoo.vision.mobilenet1_0``."""
    dw = [32, 64] + [128] * 2 + [256] * 2 + [512] * 6 + [1024]
    pw = [64] + [128] * 2 + [256] * 2 + [512] * 6 + [1024] * 2
    strides = [1, 2] * 3 + [1] * 5 + [2, 1]
    layers = [*_conv_bn(3, 32, 3, 2, 1), nn.ReLU()]
    for d, c, s in zip(dw, pw, strides, strict=True):
        layers += [*_conv_bn(d, d, 3, s, 1, groups=d), nn.ReLU(), *_conv_bn(d, c, 1, 1, 0),
                   nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1024, classes)]
    return nn.Sequential(*layers)


def _tensors(net: nn.Module) -> list:
    """(kind, tensor) in the Gluon registration order."""
    out = []
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            out.append(("weight", m.weight))
            if m.bias is not None:
                out.append(("bias", m.bias))
        elif isinstance(m, nn.BatchNorm2d):
            out += [("gamma", m.weight), ("beta", m.bias), ("mean", m.running_mean),
                    ("var", m.running_var)]
        elif isinstance(m, nn.Linear):
            out += [("weight", m.weight), ("bias", m.bias)]
    return out


class TorchConvNet:
    """Adapter: eager module, SGD with momentum, ``cross_entropy``."""

    def __init__(self, model: str):
        self.net = {"resnet18_v1": resnet18_v1, "resnet50_v1": resnet50_v1,
                    "mobilenet1_0": mobilenet1_0, "densenet121": densenet121}[model]()
        tensors = _tensors(self.net)
        with torch.no_grad():
            for i, (kind, t) in enumerate(tensors):
                t.copy_(torch.from_numpy(param_value(kind, tuple(t.shape), i)))
        self.sig = param_sig([(k, tuple(t.shape)) for k, t in tensors])
        self.opt = torch.optim.SGD(self.net.parameters(), lr=LR, momentum=MOMENTUM)

    def step(self, x, y, want_loss):
        """One training step on NumPy x, y."""
        self.net.train()
        self.opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.net(torch.from_numpy(x)), torch.from_numpy(y).long())
        loss.backward()
        self.opt.step()
        return loss.item() if want_loss else None

    def predict(self, x):
        """Logits as NumPy (inference mode: BN uses its running statistics)."""
        self.net.eval()
        with torch.inference_mode():
            return self.net(torch.from_numpy(x)).numpy()

    def sync(self):
        """CPU PyTorch is synchronous."""
