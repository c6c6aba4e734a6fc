"""The JAX peer: the whole training step under ``jax.jit`` (params donated), CPU only.

Parameters live in a dict of (out, in[, kh, kw]) arrays like Gluon's; convolutions are
``lax.conv_general_dilated`` in NCHW/OIHW, pooling is ``lax.reduce_window``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

LR = 0.1


def _dense(p, k, x):
    return x @ p[k].T + p[k + "b"] if k + "b" in p else x @ p[k].T


def mlp_forward(p, x):
    """relu(x W1^T + b1) W2^T + b2."""
    return jnp.maximum(x @ p["w1"].T + p["b1"], 0) @ p["w2"].T + p["b2"]


def _conv(x, w, b, pad):
    y = lax.conv_general_dilated(x, w, (1, 1), [(pad, pad), (pad, pad)],
                                 dimension_numbers=("NCHW", "OIHW", "NCHW"))
    return y + b[None, :, None, None]


def _pool(x):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")


def lenet_forward(p, x):
    """LeNet-5 as in bench.fw_gluon."""
    x = _pool(jax.nn.relu(_conv(x, p["c1"], p["c1b"], 2)))
    x = _pool(jax.nn.relu(_conv(x, p["c2"], p["c2b"], 0)))
    x = x.reshape(x.shape[0], -1)
    x = jax.nn.relu(_dense(p, "f1", x))
    x = jax.nn.relu(_dense(p, "f2", x))
    return _dense(p, "f3", x)


def _make_step(forward):
    def loss_fn(p, x, y):
        logits = forward(p, x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))

    def step(p, x, y):
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        return jax.tree_util.tree_map(lambda a, b: a - LR * b, p, g), loss
    return jax.jit(step, donate_argnums=0)


class JaxModel:
    """Adapter: jitted train step and forward."""

    def __init__(self, forward, w: dict):
        self.p = {k: jnp.asarray(v) for k, v in w.items()}
        self._step = _make_step(forward)
        self._predict = jax.jit(forward)
        self.note = "jax.jit of the whole step"

    def step(self, x, y, want_loss):
        """One training step on NumPy x, y."""
        self.p, loss = self._step(self.p, jnp.asarray(x), jnp.asarray(y))
        return float(loss) if want_loss else None

    def predict(self, x):
        """Logits as NumPy."""
        return np.asarray(self._predict(self.p, jnp.asarray(x)))

    def sync(self):
        """Wait for the dispatched steps."""
        jax.block_until_ready(self.p)


def framework_version() -> str:
    """JAX's version."""
    return jax.__version__


def build(workload: str, variant: str, w: dict, opts: dict):
    """The adapter for ``workload`` (JAX has one variant, 'jit')."""
    return JaxModel(mlp_forward if workload == "mlp" else lenet_forward, w)


def elemwise(variant: str, x: np.ndarray):
    """(fn, to_numpy) for the jitted elementwise expression."""
    xj = jnp.asarray(x)
    fn = jax.jit(lambda v: jax.nn.relu(v * 1.5 - 0.25) * 0.5 + jax.nn.sigmoid(v)
                 - jnp.tanh(v) * v)
    return (lambda: fn(xj).block_until_ready()), np.asarray


def gemm(variant: str, a: np.ndarray, b: np.ndarray):
    """(fn computing a @ b, to_numpy)."""
    aj, bj = jnp.asarray(a), jnp.asarray(b)
    fn = jax.jit(jnp.dot)
    return (lambda: fn(aj, bj).block_until_ready()), np.asarray
