"""Convolutional workloads run by ``bench.worker``: ResNet-18 v1, ResNet-50 v1 (first step
only), MobileNet 1.0 and DenseNet-121 (inference).

Every framework builds the same architecture (ember and MXNet from their model zoos, PyTorch
from ``bench.torch_convnets`` in plain ``torch.nn``) and fills it with the same values:
parameter ``i`` in registration order, of kind ``weight``/``bias``/``gamma``/``beta``/
``mean``/``var``, gets ``param_value(kind, shape, i)``; the images and labels come from
``batch``. Both use only NumPy's ``Generator.random``/``integers``, so the MXNet interpreter
(NumPy < 1.24) draws the very same numbers. The result's ``param_sig`` hashes the
(kind, shape) list, so a framework whose parameter order differs shows up in the report.

Only NumPy and the standard library at import time (the MXNet worker imports this too).
"""
from __future__ import annotations

import hashlib
import statistics
import time

import numpy as np

from bench import harness

SEED = 20261206
LR, MOMENTUM = 0.01, 0.9
MODELS = {"resnet18_v1": "ResNet-18 v1", "resnet50_v1": "ResNet-50 v1",
          "mobilenet1_0": "MobileNet 1.0", "densenet121": "DenseNet-121"}
_SUFFIX = (("running_mean", "mean"), ("running_var", "var"), ("weight", "weight"),
           ("bias", "bias"), ("gamma", "gamma"), ("beta", "beta"))


def gluon_kind(name: str) -> str:
    """The kind of a Gluon parameter from its name's suffix."""
    for suffix, kind in _SUFFIX:
        if name.endswith(suffix):
            return kind
    raise ValueError(f"bench: unknown parameter kind of {name!r}")


def param_value(kind: str, shape: tuple, index: int) -> np.ndarray:
    """The shared float32 value of parameter ``index`` (uniform, scaled per kind)."""
    u = np.random.default_rng([SEED, index]).random(shape) * 2 - 1  # uniform in [-1, 1)
    if kind == "weight":
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
        u = u * np.sqrt(6.0 / fan_in)
    elif kind in ("gamma", "var"):
        u = 1 + 0.1 * u
    else:  # bias, beta, mean
        u = 0.1 * u
    return u.astype(np.float32)


def param_sig(kinds_shapes: list) -> str:
    """A short hash of the ordered (kind, shape) list."""
    text = repr([(k, tuple(int(d) for d in s)) for k, s in kinds_shapes])
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def batch(index: int, n: int, size: int, classes: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Batch ``index``: (n, 3, size, size) float32 images in [-1, 1) and int labels."""
    rng = np.random.default_rng([SEED, 10**6 + index])
    x = (rng.random((n, 3, size, size)) * 2 - 1).astype(np.float32)
    return x, rng.integers(0, classes, n).astype(np.int32)


class GluonConvNet:
    """Adapter for ember or MXNet: the model zoo's net, SGD with momentum, softmax CE."""

    def __init__(self, mx, model: str, variant: str, size: int, backend: str | None):
        from bench.fw_gluon import _hybridize
        self.mx = mx
        net = getattr(mx.gluon.model_zoo.vision, model)()
        net.initialize()
        net(mx.nd.array(np.zeros((1, 3, size, size), np.float32)))  # finish deferred init
        params = list(net.collect_params().items())
        kinds = [(gluon_kind(name), p.shape) for name, p in params]
        for i, ((_, p), (kind, shape)) in enumerate(zip(params, kinds, strict=True)):
            p.set_data(mx.nd.array(param_value(kind, shape, i)))
        self.sig, self.net = param_sig(kinds), net
        self.loss_fn = mx.gluon.loss.SoftmaxCrossEntropyLoss()
        if variant == "hybridize":
            _hybridize(mx, net, backend)
            _hybridize(mx, self.loss_fn, backend)
        self.trainer = mx.gluon.Trainer(net.collect_params(), "sgd",
                                        {"learning_rate": LR, "momentum": MOMENTUM})

    def step(self, x, y, want_loss):
        """One SGD step; the batch-mean loss before the update when ``want_loss``."""
        nd = self.mx.nd
        with self.mx.autograd.record():
            loss = self.loss_fn(self.net(nd.array(x)), nd.array(y.astype(np.float32)))
        loss.backward()
        self.trainer.step(x.shape[0])
        return float(loss.mean().asscalar()) if want_loss else None

    def predict(self, x):
        """Logits as NumPy."""
        return self.net(self.mx.nd.array(x)).asnumpy()

    def sync(self):
        """Wait for MXNet's engine."""
        self.mx.nd.waitall()

    def settle(self):
        """Before a timed loop: ember's kernels compiled in the background (Winograd's, in
        a cold process) are ready, so the loop times the steady state."""
        if self.mx.__name__ == "ember":
            from ember.backends import cpu_tiered
            cpu_tiered.wait_all()


def build(fw: str, model: str, variant: str, size: int, backend: str | None):
    """The adapter of ``fw`` ('ember', 'mxnet' or 'torch') for ``model``."""
    if model not in MODELS:
        raise ValueError(f"bench: unknown conv net {model!r}; known: {sorted(MODELS)}")
    if fw == "torch":
        from bench import torch_convnets
        return torch_convnets.TorchConvNet(model)
    import importlib
    return GluonConvNet(importlib.import_module(fw), model, variant, size, backend)


def _times(fn, n: int, sync) -> list[float]:
    out = []
    for i in range(n):
        tic = time.perf_counter()
        fn(i)
        sync()
        out.append(time.perf_counter() - tic)
    return out


def measure(fw: str, workload: str, variant: str, opts: dict) -> dict:
    """``first_step`` (build + one training step only) or ``convnet``: first step and
    training img/s (unless ``opts['train']`` is false), then inference img/s at
    ``opts['batch']`` (unless ``opts['infer']`` is false) and batch-1 latency (if
    ``opts['latency']``); ``opts['leave_cache_complete']``: after a timed first step, one
    more step and the background compiles it starts. Keys as the other workloads:
    first_step_s (until the loss is read), first_step_sync_s (until the step is done: MXNet
    returns the loss while its engine still runs the backward pass), loss0, loss1,
    train_best/train_median and infer_best (images/s), latency1_us, train_mem_mb (the peak
    RSS after training above the RSS before the build, MiB)."""
    model, size, n = opts["model"], opts["size"], opts["batch"]
    plan = opts.get("plan", {"warmup": 1, "iters": 2})
    res: dict = {}
    x0, y0 = batch(0, n, size)
    rss0 = harness.rss_mb()
    tic = time.perf_counter()
    net = build(fw, model, variant, size, opts.get("backend"))
    res["build_s"] = time.perf_counter() - tic
    trained = workload == "first_step" or opts.get("train", True)
    res["param_sig"] = net.sig
    if trained:
        res["loss0"] = net.step(x0, y0, True)
        res["first_step_s"] = time.perf_counter() - tic
        net.sync()   # (MXNet's engine may still run the backward pass and the update)
        res["first_step_sync_s"] = time.perf_counter() - tic
        if workload == "first_step":
            if opts.get("leave_cache_complete"):   # (untimed) as a process that trains on:
                net.step(*batch(1, n, size), True)  # the second step starts ember's
                getattr(net, "settle", lambda: None)()  # background compiles; wait for them
            return res
        res["loss1"] = net.step(*batch(1, n, size), True)
        data = [batch(2 + i, n, size) for i in range(plan["warmup"] + plan["iters"])]
        for x, y in data[:plan["warmup"]]:
            net.step(x, y, False)
        getattr(net, "settle", lambda: None)()
        net.step(*data[0], False)   # (a step with whatever became ready)
        t = _times(lambda i: net.step(*data[plan["warmup"] + i], False), plan["iters"],
                   net.sync)
        res["train_best"], res["train_median"] = n / min(t), n / statistics.median(t)
        # the memory training took: the peak so far above the RSS before the build
        res["train_mem_mb"] = harness.peak_rss_mb() - rss0
    if not opts.get("infer", True):
        return res
    out = net.predict(x0)
    if not trained:  # the untrained logits are comparable across frameworks
        res["logits0"] = [float(v) for v in out[0, :8]]
    for _ in range(plan["warmup"]):
        net.predict(x0)
    getattr(net, "settle", lambda: None)()
    net.predict(x0)
    t = _times(lambda i: net.predict(x0), plan["iters"], net.sync)
    res["infer_best"], res["infer_median"] = n / min(t), n / statistics.median(t)
    if opts.get("latency"):
        one = x0[:1].copy()
        for _ in range(2):
            net.predict(one)
        # (kernels a new batch size needs compile in the background: wait, as above)
        getattr(net, "settle", lambda: None)()
        net.predict(one)
        # (batch-1 runs are short: at least 10, the best of which is robust to a busy
        # moment of a shared machine, where the best of 3 was not)
        t = _times(lambda i: net.predict(one), max(10, plan["iters"]), net.sync)
        res["latency1_us"] = min(t) * 1e6
    return res
