"""The PyTorch peer: eager, and ``torch.compile`` of the model (default inductor backend).

Weights are copied in from the shared NumPy arrays; ``nn.Linear``/``nn.Conv2d`` keep them
as (out, in[, kh, kw]) like Gluon. Loss: ``cross_entropy`` (batch mean); SGD lr 0.1.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.common import THREADS

torch.set_num_threads(THREADS)


def _load(layer, w, b):
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w))
        layer.bias.copy_(torch.from_numpy(b))


def mlp_net(w: dict):
    """Linear(784, 256) -> relu -> Linear(256, 10)."""
    net = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    _load(net[0], w["w1"], w["b1"])
    _load(net[2], w["w2"], w["b2"])
    return net


def lenet_net(w: dict):
    """LeNet-5 as in bench.fw_gluon."""
    net = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2),
                        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(),
                        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                        nn.Linear(84, 10))
    for i, k in ((0, "c1"), (3, "c2"), (7, "f1"), (9, "f2"), (11, "f3")):
        _load(net[i], w[k], w[k + "b"])
    return net


class TorchModel:
    """Adapter: eager module, or the same module under ``torch.compile``."""

    def __init__(self, net, variant: str):
        self.net = net
        self.fwd = torch.compile(net) if variant == "compile" else net
        self.opt = torch.optim.SGD(net.parameters(), lr=0.1)
        self.note = "torch.compile(model), eager optimizer" if variant == "compile" else ""

    def step(self, x, y, want_loss):
        """One training step on NumPy x, y."""
        self.opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.fwd(torch.from_numpy(x)), torch.from_numpy(y).long())
        loss.backward()
        self.opt.step()
        return loss.item() if want_loss else None

    def predict(self, x):
        """Logits as NumPy."""
        with torch.no_grad():
            return self.fwd(torch.from_numpy(x)).numpy()

    def sync(self):
        """CPU PyTorch is synchronous."""


def framework_version() -> str:
    """PyTorch's version."""
    return torch.__version__


def build(workload: str, variant: str, w: dict, opts: dict):
    """The adapter for ``workload`` and ``variant`` ('eager' or 'compile')."""
    return TorchModel((mlp_net if workload == "mlp" else lenet_net)(w), variant)


def _expr(x):
    return torch.relu(x * 1.5 - 0.25) * 0.5 + torch.sigmoid(x) - torch.tanh(x) * x


def elemwise(variant: str, x: np.ndarray):
    """(fn, to_numpy) for the elementwise expression."""
    xt = torch.from_numpy(x)
    fn = torch.compile(_expr) if variant == "compile" else _expr
    return (lambda: fn(xt)), (lambda o: o.numpy())


def gemm(variant: str, a: np.ndarray, b: np.ndarray):
    """(fn computing a @ b, to_numpy)."""
    at, bt = torch.from_numpy(a), torch.from_numpy(b)
    return (lambda: torch.mm(at, bt)), (lambda o: o.numpy())
