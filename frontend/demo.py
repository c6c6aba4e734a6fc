"""The seed program: MXNet Gluon's Fashion-MNIST MLP, run on ember (``ember demo``).

This is the MXNet half of "PyTorch to MXNet in ten minutes" with only the import changed:
Dense(256, relu) -> Dense(10), softmax cross-entropy, SGD lr 0.1, batch 128.
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


def run(epochs: int = 2, hybridize: bool = True, data_dir: str | None = None,
        batch_size: int = 128, num_workers: int = 2, out_dir: str = "demo-out",
        seed: int = 42) -> float:
    """Train the seed MLP, print progress and accuracy; returns the test accuracy."""
    import ember as mx
    from ember import autograd, gluon
    from ember.gluon import nn
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

    net = nn.HybridSequential()
    with net.name_scope():
        net.add(nn.Dense(256, activation="relu"), nn.Dense(10))
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
    return acc
