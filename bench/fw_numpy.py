"""The hand-written NumPy peer: forward, backward and SGD written out, float32 throughout.

Same math as every other framework: ``relu(x W1^T + b1) W2^T + b2``, softmax cross-entropy
averaged over the batch, SGD with lr 0.1. LeNet's convolutions are im2col + GEMM
(``sliding_window_view``), as Caffe's CPU path does them.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

LR = np.float32(0.1)


def _softmax_ce(z: np.ndarray, y: np.ndarray, want_loss: bool):
    """(d loss / d z for the batch-mean loss, the loss or None)."""
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(z.shape[0])
    loss = float((np.log(s[:, 0]) + m[:, 0] - z[rows, y]).mean()) if want_loss else None
    dz = e / s
    dz[rows, y] -= 1
    dz /= np.float32(z.shape[0])
    return dz, loss


class MLP:
    """784-256-10 with relu, trained by hand."""

    def __init__(self, w: dict):
        self.w1, self.b1, self.w2, self.b2 = w["w1"], w["b1"], w["w2"], w["b2"]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Logits."""
        h = np.maximum(x @ self.w1.T + self.b1, 0)
        return h @ self.w2.T + self.b2

    def step(self, x, y, want_loss):
        """One SGD step; returns the pre-update loss when asked."""
        h = x @ self.w1.T
        h += self.b1
        a = np.maximum(h, 0)
        z = a @ self.w2.T
        z += self.b2
        dz, loss = _softmax_ce(z, y, want_loss)
        da = dz @ self.w2
        da *= h > 0
        self.w2 -= LR * (dz.T @ a)
        self.b2 -= LR * dz.sum(0)
        self.w1 -= LR * (da.T @ x)
        self.b1 -= LR * da.sum(0)
        return loss

    def sync(self):
        """NumPy is synchronous."""


def _conv(x, w, b, pad):
    """(output NCHW, im2col matrix) of a stride-1 convolution."""
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    o, c, kh, kw = w.shape
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))  # B, C, Ho, Wo, kh, kw
    bsz, _, ho, wo = win.shape[:4]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(bsz * ho * wo, c * kh * kw)
    out = cols @ w.reshape(o, -1).T + b
    return out.reshape(bsz, ho, wo, o).transpose(0, 3, 1, 2), cols


def _conv_back(dout, cols, w, x_shape, pad):
    """(dx, dw, db) of ``_conv``; col2im adds each kernel tap's slice back."""
    o, c, kh, kw = w.shape
    bsz, _, ho, wo = dout.shape
    dmat = dout.transpose(0, 2, 3, 1).reshape(-1, o)
    dw = (dmat.T @ cols).reshape(w.shape)
    dcols = (dmat @ w.reshape(o, -1)).reshape(bsz, ho, wo, c, kh, kw)
    h, wd = x_shape[2] + 2 * pad, x_shape[3] + 2 * pad
    dx = np.zeros((bsz, c, h, wd), np.float32)
    for i in range(kh):
        for j in range(kw):
            dx[:, :, i:i + ho, j:j + wo] += dcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    if pad:
        dx = dx[:, :, pad:-pad, pad:-pad]
    return dx, dw, dout.sum(axis=(0, 2, 3))


def _pool(x):
    """2x2 max pooling, stride 2: (output, index of each window's first maximum)."""
    b, c, h, w = x.shape
    win = x.reshape(b, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
    win = win.reshape(b, c, h // 2, w // 2, 4)
    arg = win.argmax(axis=-1)[..., None]  # ties (flat background) go to the first, as in
    return np.take_along_axis(win, arg, -1)[..., 0], arg  # MXNet and PyTorch


def _pool_back(dout, arg):
    """Route each window's gradient to the element the forward picked."""
    b, c, h2, w2 = dout.shape
    g = np.zeros((b, c, h2, w2, 4), np.float32)
    np.put_along_axis(g, arg, dout[..., None], -1)
    return g.reshape(b, c, h2, w2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(b, c, h2 * 2,
                                                                              w2 * 2)


class LeNet:
    """conv(6,5,pad 2)-relu-pool-conv(16,5)-relu-pool-dense(120)-relu-dense(84)-relu-dense(10)."""

    def __init__(self, w: dict):
        self.w = w

    def _forward(self, x):
        w, t = self.w, {}
        t["c1"], t["cols1"] = _conv(x, w["c1"], w["c1b"], 2)
        t["p1"], t["win1"] = _pool(np.maximum(t["c1"], 0))
        t["c2"], t["cols2"] = _conv(t["p1"], w["c2"], w["c2b"], 0)
        t["p2"], t["win2"] = _pool(np.maximum(t["c2"], 0))
        t["flat"] = t["p2"].reshape(x.shape[0], -1)
        t["h1"] = t["flat"] @ w["f1"].T + w["f1b"]
        t["a1"] = np.maximum(t["h1"], 0)
        t["h2"] = t["a1"] @ w["f2"].T + w["f2b"]
        t["a2"] = np.maximum(t["h2"], 0)
        return t["a2"] @ w["f3"].T + w["f3b"], t

    def predict(self, x):
        """Logits."""
        return self._forward(x)[0]

    def step(self, x, y, want_loss):
        """One SGD step; returns the pre-update loss when asked."""
        w = self.w
        z, t = self._forward(x)
        dz, loss = _softmax_ce(z, y, want_loss)
        g = {"f3": dz.T @ t["a2"], "f3b": dz.sum(0)}
        d2 = (dz @ w["f3"]) * (t["h2"] > 0)
        g["f2"], g["f2b"] = d2.T @ t["a1"], d2.sum(0)
        d1 = (d2 @ w["f2"]) * (t["h1"] > 0)
        g["f1"], g["f1b"] = d1.T @ t["flat"], d1.sum(0)
        dp2 = (d1 @ w["f1"]).reshape(t["p2"].shape)
        dc2 = _pool_back(dp2, t["win2"]) * (t["c2"] > 0)
        dp1, g["c2"], g["c2b"] = _conv_back(dc2, t["cols2"], w["c2"], t["p1"].shape, 0)
        dc1 = _pool_back(dp1, t["win1"]) * (t["c1"] > 0)
        _, g["c1"], g["c1b"] = _conv_back(dc1, t["cols1"], w["c1"], x.shape, 2)
        for k, v in g.items():
            w[k] -= LR * v.astype(np.float32, copy=False)
        return loss

    def sync(self):
        """NumPy is synchronous."""


def framework_version() -> str:
    """NumPy's version."""
    return np.__version__


def build(workload: str, variant: str, w: dict, opts: dict):
    """The model adapter for ``workload`` ('mlp' or 'lenet'); NumPy has one variant."""
    return {"mlp": MLP, "lenet": LeNet}[workload](w)


def elemwise(variant: str, x: np.ndarray):
    """(fn, to_numpy) for the elementwise workload; ``copy`` is the bandwidth bar."""
    out = np.empty_like(x)
    if variant == "copy":
        return (lambda: np.copyto(out, x) or out), np.asarray
    half, a, b = np.float32(0.5), np.float32(1.5), np.float32(0.25)
    return (lambda: np.maximum(x * a - b, 0) * half + 1 / (1 + np.exp(-x)) - np.tanh(x) * x,
            np.asarray)


def gemm(variant: str, a: np.ndarray, b: np.ndarray):
    """(fn computing a @ b, to_numpy)."""
    return (lambda: np.dot(a, b)), np.asarray
