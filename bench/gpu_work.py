"""The GPU workloads of ``bench.gpu``, one framework per process:
``python -m bench.gpu_work <framework> '<json options>'`` prints one marked JSON line.

Frameworks: ``ember`` (GPU arrays; the training step as one ``@ember.compile`` program, the
MLP hybridized for latency), ``ember_first`` (ResNet-18: build and first training step only,
for the cold/warm kernel-cache timing), ``torch`` (eager), ``torch_compile``, ``jax`` (jit).
Every figure is measured with the device synchronised at the end of the timed region: the
seed MLP (784-256-10, SGD lr 0.1) training samples/s at each batch size, its batch-1
inference latency, the fused expression ``relu(x*1.5-0.25)*0.5 + sigmoid(x) - tanh(x)*x``
over ``fused_n`` float32 (GB/s, read + write) beside a device-to-device copy's GB/s, and
ResNet-18 v1 training/inference images/s. float32 throughout, TF32 off.
"""
from __future__ import annotations

import json
import sys
import time
import traceback

import numpy as np

from bench import common

DEFAULTS = {"mlp_batches": [128, 4096], "steps": 50, "latency_calls": 300,
            "fused_n": 64 * 2**20, "fused_calls": 20, "resnet_batch": 64, "resnet_size": 224,
            "resnet_steps": 10, "resnet": True}


def _timed(fn, n: int, sync) -> float:
    """Seconds per call of ``fn(i)`` over ``n`` calls, the device synchronised at the end."""
    sync()
    tic = time.perf_counter()
    for i in range(n):
        fn(i)
    sync()
    return (time.perf_counter() - tic) / n


def _latency(fn, n: int, sync) -> float:
    """Median microseconds of one synchronised call."""
    t = []
    for _ in range(n):
        tic = time.perf_counter()
        fn()
        sync()
        t.append(time.perf_counter() - tic)
    return float(np.median(t) * 1e6)


def _mlp_data(batch: int, k: int = 4, n_in: int = 784):
    rng = np.random.default_rng(batch)
    return [(rng.standard_normal((batch, n_in)).astype(np.float32),
             rng.integers(0, 10, batch).astype(np.float32)) for _ in range(k)]


def _guard(res: dict, key: str, fn) -> None:
    """``res.update(fn())``; a failure is recorded under ``errors`` and the rest goes on."""
    try:
        res.update(fn())
    except Exception as e:  # a benchmark reports what failed instead of dying
        res.setdefault("errors", {})[key] = f"{type(e).__name__}: {e}"
        traceback.print_exc(file=sys.stderr)


# ---- ember -----------------------------------------------------------------------------
def ember_all(o: dict) -> dict:
    """Every workload on ember's GPU arrays."""
    import ember as mx
    from ember.backends import cuda_device
    res: dict = {"device": "simulator" if cuda_device.is_simulator() else "cuda"}
    gpu = mx.gpu()

    def sync():
        cuda_device.synchronize(0)

    def mlp(batch):
        from ember import autograd, gluon, nd
        net = gluon.nn.HybridSequential()
        net.add(gluon.nn.Dense(o.get("hidden", 256), activation="relu"), gluon.nn.Dense(10))
        net.initialize(mx.init.Xavier(), ctx=gpu)
        loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
        trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})

        @mx.compile
        def step(x, y):
            with autograd.record():
                loss = loss_fn(net(x), y)
            loss.backward()
            trainer.step(batch)
            return loss

        data = [(nd.array(x, ctx=gpu), nd.array(y, ctx=gpu))
                for x, y in _mlp_data(batch, n_in=o.get("n_in", 784))]
        for i in range(3):
            step(*data[i % len(data)])
        t = _timed(lambda i: step(*data[i % len(data)]), o["steps"], sync)
        out = {f"mlp{batch}_train": batch / t}
        if batch == o["mlp_batches"][0]:
            net.hybridize()
            x1 = nd.array(_mlp_data(1, 1, o.get("n_in", 784))[0][0], ctx=gpu)
            for _ in range(5):
                net(x1).wait_to_read()
            out["latency1_us"] = _latency(lambda: net(x1).wait_to_read(), o["latency_calls"],
                                          sync)
        return out

    for b in o["mlp_batches"]:
        _guard(res, f"mlp{b}", lambda b=b: mlp(b))
    _guard(res, "fused", lambda: _ember_fused(mx, o, sync))
    if o.get("resnet"):
        _guard(res, "resnet", lambda: _ember_resnet(mx, o, sync, first_only=False))
    return res


def _ember_fused(mx, o: dict, sync) -> dict:
    from ember import nd
    from ember.backends import cuda_device
    n = o["fused_n"]
    x = nd.array(np.random.default_rng(0).standard_normal(n).astype(np.float32), ctx=mx.gpu())

    @mx.compile
    def f(x):
        return nd.relu(x * 1.5 - 0.25) * 0.5 + nd.sigmoid(x) - nd.tanh(x) * x

    f(x).wait_to_read()
    t = _timed(lambda i: f(x), o["fused_calls"], sync)
    dst = cuda_device.empty(x.shape, x.dtype)   # a copy into a preallocated array
    tc = _timed(lambda i: cuda_device.copy_into(dst, x._data), o["fused_calls"], sync)
    return {"fused_gbs": 8 * n / t / 1e9, "copy_gbs": 8 * n / tc / 1e9}


def _ember_resnet(mx, o: dict, sync, first_only: bool) -> dict:
    from bench.convnets import LR, MOMENTUM, batch
    from ember import autograd, gluon, nd
    n, size, gpu = o["resnet_batch"], o["resnet_size"], mx.gpu()
    tic = time.perf_counter()
    net = gluon.model_zoo.vision.resnet18_v1()
    net.initialize(mx.init.Xavier(), ctx=gpu)
    net.hybridize()
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(net.collect_params(), "sgd",
                            {"learning_rate": LR, "momentum": MOMENTUM})

    @mx.compile
    def step(x, y):
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(n)
        return loss

    data = [tuple(nd.array(a.astype(np.float32), ctx=gpu) for a in batch(i, n, size))
            for i in range(2)]
    step(*data[0]).wait_to_read()
    out = {"first_step_s": time.perf_counter() - tic}
    if first_only:
        return out
    step(*data[1])
    t = _timed(lambda i: step(*data[i % 2]), o["resnet_steps"], sync)
    out["resnet_train"] = n / t
    with autograd.predict_mode():
        net(data[0][0]).wait_to_read()
        ti = _timed(lambda i: net(data[i % 2][0]), o["resnet_steps"], sync)
    out["resnet_infer"] = n / ti
    return out


def ember_first(o: dict) -> dict:
    """ResNet-18: build and first training step (kernel cache as the caller set it)."""
    import ember as mx
    from ember.backends import cuda_device
    return _ember_resnet(mx, o, lambda: cuda_device.synchronize(0), first_only=True)


# ---- PyTorch ---------------------------------------------------------------------------
def torch_all(o: dict, compiled: bool) -> dict:
    """Every workload in PyTorch eager, or with ``torch.compile`` when ``compiled``."""
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev, sync = torch.device("cuda"), torch.cuda.synchronize
    res: dict = {"device": torch.cuda.get_device_name(0), "version": torch.__version__}
    wrap = torch.compile if compiled else (lambda f, **k: f)

    def mlp(batch):
        net = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(),
                                  torch.nn.Linear(256, 10)).to(dev)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)

        def step_fn(x, y):
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            return loss
        step = wrap(step_fn)
        data = [(torch.from_numpy(x).to(dev), torch.from_numpy(y).long().to(dev))
                for x, y in _mlp_data(batch)]
        for i in range(5):
            step(*data[i % len(data)])
        t = _timed(lambda i: step(*data[i % len(data)]), o["steps"], sync)
        out = {f"mlp{batch}_train": batch / t}
        if batch == o["mlp_batches"][0]:
            infer = (torch.compile(net, mode="reduce-overhead") if compiled else net)
            x1 = torch.from_numpy(_mlp_data(1, 1)[0][0]).to(dev)
            with torch.inference_mode():
                for _ in range(10):
                    infer(x1)
                out["latency1_us"] = _latency(lambda: infer(x1), o["latency_calls"], sync)
        return out

    def fused():
        n = o["fused_n"]
        x = torch.randn(n, device=dev)
        f = wrap(lambda x: torch.relu(x * 1.5 - 0.25) * 0.5 + torch.sigmoid(x)
                 - torch.tanh(x) * x)
        f(x)
        y = torch.empty_like(x)
        t = _timed(lambda i: f(x), o["fused_calls"], sync)
        tc = _timed(lambda i: y.copy_(x), o["fused_calls"], sync)
        return {"fused_gbs": 8 * n / t / 1e9, "copy_gbs": 8 * n / tc / 1e9}

    def resnet():
        from bench import torch_convnets
        from bench.convnets import LR, MOMENTUM, batch
        n, size = o["resnet_batch"], o["resnet_size"]
        net = torch_convnets.resnet18_v1().to(dev)
        opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)

        def step_fn(x, y):
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            return loss
        step = wrap(step_fn)
        data = [tuple(torch.from_numpy(a).to(dev) for a in batch(i, n, size)) for i in range(2)]
        data = [(x, y.long()) for x, y in data]
        tic = time.perf_counter()
        net.train()
        step(*data[0])
        sync()
        out = {"first_step_s": time.perf_counter() - tic}
        step(*data[1])
        out["resnet_train"] = n / _timed(lambda i: step(*data[i % 2]), o["resnet_steps"], sync)
        net.eval()
        infer = wrap(net)
        with torch.inference_mode():
            infer(data[0][0])
            out["resnet_infer"] = n / _timed(lambda i: infer(data[i % 2][0]),
                                             o["resnet_steps"], sync)
        return out

    for b in o["mlp_batches"]:
        _guard(res, f"mlp{b}", lambda b=b: mlp(b))
    _guard(res, "fused", fused)
    if o.get("resnet"):
        _guard(res, "resnet", resnet)
    return res


# ---- JAX -------------------------------------------------------------------------------
def jax_all(o: dict) -> dict:
    """The MLP training and the fused expression under ``jax.jit``."""
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_default_matmul_precision", "highest")  # no TF32
    res: dict = {"device": str(jax.devices()[0]), "version": jax.__version__}

    def mlp(batch):
        rng = np.random.default_rng(0)
        params = [jnp.asarray(rng.standard_normal(s).astype(np.float32) * 0.05)
                  for s in [(784, 256), (256,), (256, 10), (10,)]]

        def loss_fn(p, x, y):
            h = jax.nn.relu(x @ p[0] + p[1])
            logits = h @ p[2] + p[3]
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

        @jax.jit
        def step(p, x, y):
            g = jax.grad(loss_fn)(p, x, y)
            return [a - 0.1 * b for a, b in zip(p, g)]
        data = [(jnp.asarray(x), jnp.asarray(y.astype(np.int32))) for x, y in _mlp_data(batch)]
        state = {"p": params}

        def one(i):
            state["p"] = step(state["p"], *data[i % len(data)])
        for i in range(3):
            one(i)
        t = _timed(one, o["steps"], lambda: jax.block_until_ready(state["p"]))
        return {f"mlp{batch}_train": batch / t}

    def fused():
        n = o["fused_n"]
        x = jnp.asarray(np.random.default_rng(0).standard_normal(n).astype(np.float32))
        f = jax.jit(lambda x: jax.nn.relu(x * 1.5 - 0.25) * 0.5 + jax.nn.sigmoid(x)
                    - jnp.tanh(x) * x)
        cp = jax.jit(lambda x: x + 0)
        box = {}
        f(x).block_until_ready()
        cp(x).block_until_ready()

        def sync():
            if box:
                box["r"].block_until_ready()
        t = _timed(lambda i: box.update(r=f(x)), o["fused_calls"], sync)
        tc = _timed(lambda i: box.update(r=cp(x)), o["fused_calls"], sync)
        return {"fused_gbs": 8 * n / t / 1e9, "copy_gbs": 8 * n / tc / 1e9}

    for b in o["mlp_batches"]:
        _guard(res, f"mlp{b}", lambda b=b: mlp(b))
    _guard(res, "fused", fused)
    return res


RUNNERS = {"ember": ember_all, "ember_first": ember_first, "jax": jax_all,
           "torch": lambda o: torch_all(o, False), "torch_compile": lambda o: torch_all(o, True)}


def main(argv: list[str]) -> int:
    """``python -m bench.gpu_work <framework> '<json options>'``."""
    fw, opts = argv[0], {**DEFAULTS, **json.loads(argv[1] if len(argv) > 1 else "{}")}
    res = {"framework": fw}
    _guard(res, fw, lambda: RUNNERS[fw](opts))
    common.emit(res)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
