"""Gluon models for ember and for MXNet 1.9.1: the same code, ``mx`` is either module.

That is the point of ember (``import ember as mx``), and it keeps the comparison honest.
Variants: ``eager`` (no hybridize), ``hybridize`` (ember: ``hybridize(backend=...)``;
MXNet: ``hybridize(static_alloc=True, static_shape=True)``) and, for ember only, ``compile``
(``@ember.compile`` of the whole training step: forward, loss, backward, SGD update).
"""
from __future__ import annotations

import numpy as np

from bench.data import BATCH


def _is_ember(mx) -> bool:
    return mx.__name__ == "ember"


def _hybridize(mx, block, backend: str | None) -> None:
    if _is_ember(mx):
        block.hybridize(backend=backend or "reference")
    else:
        block.hybridize(static_alloc=True, static_shape=True)


def mlp_net(mx, w: dict):
    """Dense(256, relu) -> Dense(10), with the given weights."""
    nn = mx.gluon.nn
    net = nn.HybridSequential()
    with net.name_scope():
        net.add(nn.Dense(256, activation="relu", in_units=784), nn.Dense(10, in_units=256))
    net.initialize()
    for layer, (wk, bk) in zip(net, (("w1", "b1"), ("w2", "b2")), strict=True):
        layer.weight.set_data(mx.nd.array(w[wk]))
        layer.bias.set_data(mx.nd.array(w[bk]))
    return net


def lenet_net(mx, w: dict):
    """LeNet-5 (relu, max pooling) with the given weights."""
    nn = mx.gluon.nn
    net = nn.HybridSequential()
    with net.name_scope():
        net.add(nn.Conv2D(6, 5, padding=2, activation="relu", in_channels=1),
                nn.MaxPool2D(2, 2),
                nn.Conv2D(16, 5, activation="relu", in_channels=6),
                nn.MaxPool2D(2, 2),
                nn.Dense(120, activation="relu", in_units=400),
                nn.Dense(84, activation="relu", in_units=120),
                nn.Dense(10, in_units=84))
    net.initialize()
    names = [("c1", "c1b"), None, ("c2", "c2b"), None, ("f1", "f1b"), ("f2", "f2b"),
             ("f3", "f3b")]
    for layer, keys in zip(net, names, strict=True):
        if keys:
            layer.weight.set_data(mx.nd.array(w[keys[0]]))
            layer.bias.set_data(mx.nd.array(w[keys[1]]))
    return net


class GluonModel:
    """Adapter: a Gluon net trained with SoftmaxCrossEntropyLoss and SGD(lr 0.1)."""

    def __init__(self, mx, net, variant: str, backend: str | None):
        self.mx, self.net = mx, net
        self.loss_fn = mx.gluon.loss.SoftmaxCrossEntropyLoss()
        self.trainer = mx.gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
        self.note = ""
        if variant == "hybridize":
            _hybridize(mx, net, backend)
            _hybridize(mx, self.loss_fn, backend)
        self._step = self._eager_step
        if variant == "compile":
            self._step = mx.compile(backend=backend or "reference")(self._eager_step)

    def _eager_step(self, x, y):
        with self.mx.autograd.record():
            loss = self.loss_fn(self.net(x), y)
        loss.backward()
        self.trainer.step(BATCH)
        return loss

    def step(self, x, y, want_loss):
        """One training step on NumPy x, y."""
        nd = self.mx.nd
        loss = self._step(nd.array(x), nd.array(y.astype(np.float32)))
        return float(loss.mean().asscalar()) if want_loss else None

    def predict(self, x):
        """Logits as NumPy."""
        return self.net(self.mx.nd.array(x)).asnumpy()

    def sync(self):
        """Wait for MXNet's engine (ember runs synchronously; waitall is cheap)."""
        self.mx.nd.waitall()

    def settle(self):
        """Before the timed loop: kernels ember compiles in the background (a small
        program's, run on NumPy meanwhile) are ready, so the loop times the steady state."""
        if self.mx.__name__ == "ember":
            from ember.backends import cpu_tiered
            cpu_tiered.wait_all()


def build(mx, workload: str, variant: str, w: dict, opts: dict):
    """The adapter for ``workload`` ('mlp' or 'lenet') and ``variant``."""
    if variant == "compile" and getattr(mx, "compile", None) is None:
        raise RuntimeError(f"{mx.__name__} has no compile() yet")
    net = (mlp_net if workload == "mlp" else lenet_net)(mx, w)
    return GluonModel(mx, net, variant, opts.get("backend"))


def _expr(F, x):
    return F.relu(x * 1.5 - 0.25) * 0.5 + F.sigmoid(x) - F.tanh(x) * x


def elemwise(mx, variant: str, x: np.ndarray, backend: str | None):
    """(fn, to_numpy) computing the elementwise expression, finished on return."""
    class Expr(mx.gluon.HybridBlock):
        def hybrid_forward(self, F, x):
            return _expr(F, x)

    xe = mx.nd.array(x)
    if variant == "compile":
        if getattr(mx, "compile", None) is None:
            raise RuntimeError(f"{mx.__name__} has no compile() yet")
        fn = mx.compile(backend=backend or "reference")(
            lambda v: _expr(mx.sym if isinstance(v, mx.sym.Symbol) else mx.nd, v))
    else:
        fn = Expr()
        if variant == "hybridize":
            _hybridize(mx, fn, backend)

    def run():
        out = fn(xe)
        out.wait_to_read()
        return out
    return run, lambda o: o.asnumpy()


def gemm(mx, variant: str, a: np.ndarray, b: np.ndarray):
    """(fn computing nd.dot(a, b), finished on return, to_numpy)."""
    ae, be = mx.nd.array(a), mx.nd.array(b)

    def run():
        out = mx.nd.dot(ae, be)
        out.wait_to_read()
        return out
    return run, lambda o: o.asnumpy()
