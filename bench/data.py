"""The inputs every framework gets: the same images, labels, batch order and initial weights.

The parent process writes them once to an ``.npz`` file (``prepare``); each worker, whatever
its interpreter, reads it back (``load``), so first-step losses must agree to float32
rounding. Images come from ``ember.gluon.data.vision.FashionMNIST`` when its files are
installed, else they are synthetic with the same shapes (the output says which).
"""
from __future__ import annotations

import numpy as np

SEED = 20240917
BATCH = 128
MEAN, STD = 0.13, 0.31  # the seed program's transforms.Normalize(0.13, 0.31)

# parameter name -> shape, in the (out, in[, kh, kw]) layout shared by Gluon, PyTorch and
# the hand-written NumPy models; biases are 1-d
MLP_SHAPES = {"w1": (256, 784), "b1": (256,), "w2": (10, 256), "b2": (10,)}
LENET_SHAPES = {"c1": (6, 1, 5, 5), "c1b": (6,), "c2": (16, 6, 5, 5), "c2b": (16,),
                "f1": (120, 400), "f1b": (120,), "f2": (84, 120), "f2b": (84,),
                "f3": (10, 84), "f3b": (10,)}


def _fashion_mnist() -> tuple[np.ndarray, ...] | None:
    """(train images, train labels, test images, test labels) as uint8/int32, or None."""
    try:
        from ember.gluon.data.vision import FashionMNIST
        train, test = FashionMNIST(train=True), FashionMNIST(train=False)
    except Exception:  # not installed, or ember itself broken: fall back to synthetic data
        return None
    # the datasets keep the whole arrays; reading them item by item would take seconds
    return (train._data.asnumpy().reshape(-1, 784), np.asarray(train._label, np.int32),
            test._data.asnumpy().reshape(-1, 784), np.asarray(test._label, np.int32))


def _synthetic(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Random images whose label is a function of the pixels (so accuracy can rise)."""
    def make(n):
        x = rng.integers(0, 256, (n, 784), dtype=np.uint8)
        y = (x[:, :10].astype(np.int64).argmax(1)).astype(np.int32)
        return x, y
    return (*make(60000), *make(10000))


def init_weights(shapes: dict, rng: np.random.Generator) -> dict:
    """Uniform(+-sqrt(3/fan_in)) weights and small uniform biases, float32."""
    out = {}
    for name, shape in shapes.items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        scale = np.sqrt(3.0 / fan_in) if len(shape) > 1 else 0.05
        out[name] = rng.uniform(-scale, scale, shape).astype(np.float32)
    return out


def prepare(path: str, n_batches: int, synthetic: bool = False) -> str:
    """Write the shared inputs to ``path``: images, labels, the batch order of the timed
    run (``n_batches`` batches, reshuffled each epoch), and both models' weights.

    Returns the data source in words ("Fashion-MNIST ..." or "synthetic ...").
    """
    rng = np.random.default_rng(SEED)
    real = None if synthetic else _fashion_mnist()
    tx, ty, vx, vy = real if real is not None else _synthetic(rng)
    per_epoch = tx.shape[0] // BATCH
    epochs = -(-n_batches // per_epoch)
    order = np.concatenate([rng.permutation(tx.shape[0])[:per_epoch * BATCH]
                            for _ in range(epochs)])[:n_batches * BATCH].astype(np.int32)
    weights = {f"mlp_{k}": v for k, v in init_weights(MLP_SHAPES, rng).items()}
    weights.update({f"lenet_{k}": v for k, v in init_weights(LENET_SHAPES, rng).items()})
    np.savez(path, train_x=tx, train_y=ty, test_x=vx, test_y=vy, order=order, **weights)
    return (f"Fashion-MNIST ({tx.shape[0]} train / {vx.shape[0]} test images)"
            if real is not None else "SYNTHETIC data (Fashion-MNIST not found): accuracy "
            "is not comparable to real runs")


def normalize(x: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 (x/255 - mean)/std, as ToTensor + Normalize do."""
    return ((x.astype(np.float32) / np.float32(255) - np.float32(MEAN))
            / np.float32(STD)).astype(np.float32)


def load(path: str) -> dict:
    """The file ``prepare`` wrote, with images normalized to float32."""
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    d["train_x"], d["test_x"] = normalize(d["train_x"]), normalize(d["test_x"])
    return d


def weights(d: dict, model: str) -> dict:
    """One model's initial weights (fresh copies) from a loaded file."""
    pre = model + "_"
    return {k[len(pre):]: d[k].copy() for k in d if k.startswith(pre)}


def batches(d: dict, start: int, count: int, image: bool = False) -> list:
    """Batches ``start .. start+count`` of the timed order, as (x, y) NumPy pairs;
    ``image`` reshapes x to NCHW (B, 1, 28, 28)."""
    out = []
    for i in range(start, start + count):
        idx = d["order"][i * BATCH:(i + 1) * BATCH]
        x = d["train_x"][idx]
        out.append((x.reshape(-1, 1, 28, 28) if image else x, d["train_y"][idx]))
    return out

