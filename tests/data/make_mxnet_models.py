"""Write the model fixtures of tests/test_gluon_mxnet_files.py with real MXNet 1.9.1.

Run it under a throwaway virtualenv outside the repository, never under ember's:

    python3 -m venv /tmp/mxvenv
    /tmp/mxvenv/bin/pip install mxnet==1.9.1 'numpy<1.24'
    /tmp/mxvenv/bin/python tests/data/make_mxnet_models.py

Two small Gluon models are built with fixed seeds:

- ``mlp``: HybridSequential(Dense(16, relu), Dense(4)) on 8 inputs;
- ``cnn``: HybridSequential(Conv2D(4, 3), BatchNorm, Activation(relu), MaxPool2D, Flatten,
  Dense(3)) on 1x8x8 inputs. Three training steps (forward and backward, no update) go
  through it first so that the BatchNorm running statistics are not their initial zeros
  and ones (MXNet 1.x moves them in BatchNorm's backward, not in its forward).

For each, ``mxnet_models/`` gets ``<name>.params`` (``save_parameters``), the
``export`` pair ``<name>-symbol.json`` / ``<name>-0000.params``, and ``<name>_io.npz``
with the input batch ``x`` and MXNet's inference output ``y`` (the CNN also
``y_train``: its training-mode output on ``x``, which normalises with batch statistics).
Everything together is a few kilobytes.
"""
import os

import mxnet as mx
import numpy as np
from mxnet import autograd
from mxnet.gluon import nn

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mxnet_models")


def build_mlp():
    """The MLP: 8 -> Dense(16, relu) -> Dense(4)."""
    net = nn.HybridSequential(prefix="mlp_")
    with net.name_scope():
        net.add(nn.Dense(16, activation="relu"), nn.Dense(4))
    return net


def build_cnn():
    """The CNN: 1x8x8 -> Conv2D(4, 3) -> BatchNorm -> relu -> MaxPool2D -> Flatten -> Dense(3)."""
    net = nn.HybridSequential(prefix="cnn_")
    with net.name_scope():
        net.add(nn.Conv2D(4, 3), nn.BatchNorm(), nn.Activation("relu"), nn.MaxPool2D(),
                nn.Flatten(), nn.Dense(3))
    return net


def save(net, name, x, **extra):
    """Write the parameter files, the export pair and the input/output batch of ``net``."""
    y = net(mx.nd.array(x)).asnumpy()
    net.save_parameters(os.path.join(OUT, f"{name}.params"))
    net.hybridize()
    y_hybrid = net(mx.nd.array(x)).asnumpy()
    assert np.allclose(y, y_hybrid, atol=1e-6)
    net.export(os.path.join(OUT, name), epoch=0)
    np.savez(os.path.join(OUT, f"{name}_io.npz"), x=x, y=y, **extra)
    return y


def main():
    """Build both models with fixed seeds and write their files next to this script."""
    os.makedirs(OUT, exist_ok=True)
    mx.random.seed(7)
    np.random.seed(7)

    mlp = build_mlp()
    mlp.initialize(mx.init.Xavier())
    x_mlp = np.random.uniform(-1, 1, (4, 8)).astype(np.float32)
    save(mlp, "mlp", x_mlp)

    cnn = build_cnn()
    cnn.initialize(mx.init.Xavier())
    for _ in range(3):  # move the BatchNorm running statistics off their initial values
        with autograd.record():
            out = cnn(mx.nd.array(np.random.uniform(0, 2, (4, 1, 8, 8)).astype(np.float32)))
        out.backward()  # MXNet 1.x updates the running statistics in BatchNorm's backward
    x_cnn = np.random.uniform(-1, 1, (4, 1, 8, 8)).astype(np.float32)
    with autograd.record():  # training mode: BatchNorm normalises with batch statistics
        y_train = cnn(mx.nd.array(x_cnn)).asnumpy()
    save(cnn, "cnn", x_cnn, y_train=y_train)

    # MXNet reads its own files back and reproduces the outputs
    for name, build in (("mlp", build_mlp), ("cnn", build_cnn)):
        io = np.load(os.path.join(OUT, f"{name}_io.npz"))
        net = build()
        net.load_parameters(os.path.join(OUT, f"{name}.params"))
        assert np.allclose(net(mx.nd.array(io["x"])).asnumpy(), io["y"], atol=1e-6)
        imported = mx.gluon.SymbolBlock.imports(os.path.join(OUT, f"{name}-symbol.json"),
                                                ["data"],
                                                os.path.join(OUT, f"{name}-0000.params"))
        assert np.allclose(imported(mx.nd.array(io["x"])).asnumpy(), io["y"], atol=1e-6)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, to {OUT}")


if __name__ == "__main__":
    main()
