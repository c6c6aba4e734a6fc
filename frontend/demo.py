"""The seed program: MXNet Gluon's Fashion-MNIST MLP, run on ember (``ember demo``).

This is the MXNet half of "PyTorch to MXNet in ten minutes" with only the import changed:
Dense(256, relu) -> Dense(10), softmax cross-entropy, SGD lr 0.1, batch 128. After training
it writes into its output directory the parameters, MXNet's export pair (when
``HybridBlock.export`` exists), an AOT package (``ember.export``) and a drawing of the
compiled graph (SVG when Graphviz's ``dot`` is installed, DOT text otherwise).
"""
from __future__ import annotations

import os
import sys
import time


def _progress(iterable, total, desc):
    """A tqdm bar on a terminal, plain iteration otherwise."""
    if sys.stderr.isatty():
        try:
            from tqdm import tqdm
            return tqdm(iterable, total=total, desc=desc, unit="batch", leave=False)
        except ImportError:
            pass
    return iterable


def build_mlp():
    """The seed MLP: Dense(256, relu) -> Dense(10) (``ember viz ember.demo:build_mlp``)."""
    from ember.gluon import nn
    net = nn.HybridSequential()
    with net.name_scope():
        net.add(nn.Dense(256, activation="relu"), nn.Dense(10))
    return net


def build_lenet():
    """LeNet-5 for 1x28x28 images (LeCun et al. 1998, with ReLU and max pooling, as in the
    MXNet/d2l tutorials): two 5x5 convolutions, then Dense 120 -> 84 -> 10."""
    from ember.gluon import nn
    net = nn.HybridSequential(prefix="lenet_")
    with net.name_scope():
        net.add(nn.Conv2D(6, 5, padding=2, activation="relu"), nn.MaxPool2D(2, 2),
                nn.Conv2D(16, 5, activation="relu"), nn.MaxPool2D(2, 2), nn.Flatten(),
                nn.Dense(120, activation="relu"), nn.Dense(84, activation="relu"),
                nn.Dense(10))
    return net


def run(epochs: int = 2, hybridize: bool = True, data_dir: str | None = None,
        batch_size: int = 128, num_workers: int = 2, out_dir: str = "demo-out",
        seed: int = 42) -> float:
    """Train the seed MLP, print progress and accuracy; returns the test accuracy."""
    import ember as mx
    from ember import autograd, gluon
    from ember.gluon.data.vision import datasets, transforms

    mx.random.seed(seed)
    transformer = transforms.Compose([transforms.ToTensor(), transforms.Normalize(0.13, 0.31)])
    train_set = datasets.FashionMNIST(root=data_dir, train=True)
    test_set = datasets.FashionMNIST(root=data_dir, train=False)
    train_data = gluon.data.DataLoader(train_set.transform_first(transformer),
                                       batch_size=batch_size, shuffle=True,
                                       num_workers=num_workers)
    test_data = gluon.data.DataLoader(test_set.transform_first(transformer),
                                      batch_size=1000, num_workers=num_workers)

    net = build_mlp()
    net.initialize()
    if hybridize:
        net.hybridize()
    softmax_cross_entropy = gluon.loss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})

    for epoch in range(epochs):
        tic, total_loss, seen = time.time(), 0.0, 0
        for data, label in _progress(train_data, len(train_data), f"epoch {epoch}"):
            with autograd.record():
                output = net(data)
                loss = softmax_cross_entropy(output, label)
            loss.backward()
            trainer.step(data.shape[0])
            total_loss += float(loss.sum().asscalar())
            seen += data.shape[0]
        print(f"epoch {epoch}: loss {total_loss / seen:.4f}, "
              f"{seen / (time.time() - tic):.0f} samples/s")

    metric = mx.metric.Accuracy()
    for data, label in test_data:
        metric.update(label, net(data))
    acc = float(metric.get()[1])
    print(f"test accuracy: {acc:.4f}")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "mlp.params")
    net.save_parameters(path)
    print(f"parameters saved to {path}")
    save_model(net, data[:1], out_dir)
    return acc


def save_model(net, example, out_dir: str) -> None:
    """Export ``net`` (MXNet files and an AOT package) and draw its compiled graph."""
    import shutil

    import ember
    from ember.viz import graph_dot, render

    if hasattr(net, "export"):  # MXNet's export needs a hybridized block that has run
        net.hybridize()
        net(example)
        files = net.export(os.path.join(out_dir, "mlp"))
        print(f"MXNet model files: {', '.join(files or [])}")
    package = os.path.join(out_dir, "mlp-aot")
    ember.export(net, package, example, overwrite=True)
    loaded = ember.load(package)
    batches = "any batch size" if loaded.dynamic_batch else \
        f"batch {example.shape[0]} only: {loaded.manifest['dynamic'].get('why_fixed')}"
    print(f"AOT package (ember.load runs it without this code, {batches}): {package}")
    graph = loaded.graph
    ext = "svg" if shutil.which("dot") else "dot"
    picture = render(graph_dot(graph), os.path.join(out_dir, f"mlp.{ext}"))
    note = "" if ext == "svg" else " (install Graphviz for SVG: apt-get install graphviz)"
    print(f"graph picture: {picture}{note}")


def toy(steps: int = 100, lr: float = 0.1, seed: int = 0) -> int:
    """Fit a small linear model with eager autograd and report the loss falling; 0 when the
    weights are recovered."""
    import numpy as np

    import ember as mx
    from ember import autograd, nd

    mx.random.seed(seed)
    rng = np.random.default_rng(seed)
    true_w = rng.standard_normal((5, 1)).astype(np.float32)
    X = nd.array(rng.standard_normal((256, 5)))
    y = nd.dot(X, nd.array(true_w)) + 0.01 * nd.random.normal(shape=(256, 1))
    w = nd.zeros((5, 1))
    w.attach_grad()
    for step in range(steps):
        with autograd.record():
            loss = ((nd.dot(X, w) - y) ** 2).mean()
        loss.backward()
        w[:] = w - lr * w.grad
        if step % max(1, steps // 5) == 0 or step == steps - 1:
            print(f"step {step:3d}  loss {loss.asscalar():.6f}")
    err = float(np.abs(w.asnumpy() - true_w).max())
    print(f"max |w - w_true| = {err:.4f}")
    return 0 if err < 0.05 else 1
