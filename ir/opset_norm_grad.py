"""``batch_norm_backward``: BatchNorm's three gradients as one op, and its own gradient.

BatchNorm's gradient written with small ops (moments again, centre, scale, two more means,
two sums) is a dozen passes over the activations; as one op it is one NumPy kernel eagerly
and one two-pass compiled kernel in the CPU backend (``backends/cpu_norm_pool.py``). With
``xhat = (x - mean) * r``, ``r = 1/sqrt(var + eps)`` per channel and ``h = g * gamma``:

- training (batch moments): ``dx = r * (h - mean(h) - xhat * mean(h * xhat))``
  (Ioffe & Szegedy 2015, s.3; MXNet 1.9.1 ``batch_norm.cc`` BatchNormBackwardImpl);
- inference (moving moments): ``dx = h * r``;
- ``dgamma = sum(g * xhat)`` (zeros with fix_gamma), ``dbeta = sum(g)``.

Its gradient (second derivatives, ``autograd.grad(create_graph=True)``) is written with ops:
for cotangents (a, b, c) of (dx, dgamma, dbeta), with ``P u = u - mean(u) - xhat*mean(u*xhat)``
(the projection BatchNorm's Jacobian applies), in training mode

- ``d/dg = gamma * r * P a + b * xhat + c`` (``b`` term only without fix_gamma);
- ``d/dgamma = sum(g * r * P a)``;
- ``d/dx = r^2 (3 xhat qa qh - xhat p - (a - mean a) qh - (h - mean h) qa) + b r P g``,
  ``qa = mean(a xhat)``, ``qh = mean(h xhat)``, ``p = mean(a (h - mean h))``
  (derived by differentiating dx through ``r`` and ``xhat``; checked against finite
  differences in tests/test_opset_norm_grad.py).
"""
from __future__ import annotations

import numpy as np

from .ops import OpKind, defop
from .shape_rules import fail


def _bshape(ndim: int, axis: int, c: int) -> tuple:
    return tuple(c if i == axis else 1 for i in range(ndim))


def _bn_backward(ins, at):
    g, x, gamma, mm, mv = ins
    ax = at["axis"] % x.ndim
    axes = tuple(i for i in range(x.ndim) if i != ax)
    bs = _bshape(x.ndim, ax, x.shape[ax])
    if g.shape != x.shape or any(a.shape != (x.shape[ax],) for a in (gamma, mm, mv)):
        raise ValueError("ograd must have the data's shape, gamma and the moving statistics "
                         "that of its channel axis")
    xf, gf = x.astype(np.float64), g.astype(np.float64)
    if at["train"]:   # the batch's moments, as batch_norm's forward computes them
        mean = xf.mean(axis=axes, keepdims=True)
        xc = xf - mean
        invstd = 1 / np.sqrt(np.square(xc).mean(axis=axes, keepdims=True) + at["eps"])
    else:   # the moving statistics, in their dtype as the forward uses them
        xc = xf - mm.reshape(bs)
        invstd = 1 / np.sqrt(mv.reshape(bs) + at["eps"])
    xhat = xc * invstd
    gs = gf if at["fix_gamma"] else gf * gamma.reshape(bs)
    if at["train"]:
        dx = invstd * (gs - gs.mean(axis=axes, keepdims=True)
                       - xhat * (gs * xhat).mean(axis=axes, keepdims=True))
    else:
        dx = gs * invstd
    pd = gamma.dtype
    dgamma = np.zeros(gamma.shape, pd) if at["fix_gamma"] else \
        (gf * xhat).sum(axis=axes).astype(pd)
    return dx.astype(x.dtype), dgamma, gf.sum(axis=axes).astype(pd)


def _bn_backward_infer(in_types, at):
    g, x, gamma = in_types[:3]
    op = "batch_norm_backward"
    if g.shape != x.shape or g.dtype != x.dtype:
        fail(op, "ograd and data must have one shape and dtype", in_types)
    if not -x.ndim <= at["axis"] < x.ndim:
        fail(op, f"axis {at['axis']} is out of range", in_types)
    c = x.shape[at["axis"] % x.ndim]
    if any(t.ndim != 1 or None not in (c, t.shape[0]) and t.shape[0] != c
           for t in in_types[2:]):
        fail(op, "gamma and the moving statistics must be vectors over the channel axis",
             in_types)
    return [x, gamma, gamma], list(in_types)


def _bn_backward_grad(F, ins, outs, ograds, at):
    g, x, gamma, mm, mv = ins
    a, b, c = ograds
    ax = at["axis"] % x.ndim
    axes = tuple(i for i in range(x.ndim) if i != ax)
    bs = _bshape(x.ndim, ax, -1)
    fix = at["fix_gamma"]

    def mean(t):
        return F.mean(t, axis=axes, keepdims=True)

    gb = None if fix else F.reshape(gamma, shape=bs)
    bb, cb = F.reshape(b, shape=bs), F.reshape(c, shape=bs)
    if at["train"]:
        xc = x - mean(x)
        r = F.rsqrt(mean(F.square(xc)) + at["eps"])
        xhat = xc * r
        h = g if fix else g * gb
        ra = r * (a - mean(a) - xhat * mean(a * xhat))   # r * P a
        qa, qh = mean(a * xhat), mean(h * xhat)
        hc = h - mean(h)
        dx = F.square(r) * (3 * xhat * qa * qh - xhat * mean(a * hc) - (a - mean(a)) * qh
                            - hc * qa)
        if not fix:
            dx = dx + bb * r * (g - mean(g) - xhat * mean(g * xhat))
    else:
        r = F.rsqrt(F.reshape(mv, shape=bs) + at["eps"])
        xhat = (x - F.reshape(mm, shape=bs)) * r
        ra = r * a
        dx = None if fix else bb * g * r
    dg = (ra if fix else gb * ra + bb * xhat) + cb
    dgamma = None if fix else F.sum(g * ra, axis=ax, exclude=True)
    return [dg, dx, dgamma, None, None]


defop("batch_norm_backward", OpKind.OPAQUE, _bn_backward, _bn_backward_infer,
      inputs=("ograd", "data", "gamma", "moving_mean", "moving_var"),
      attrs={"eps": 1e-3, "fix_gamma": True, "axis": 1, "train": True},
      num_outputs=3, grad=_bn_backward_grad,
      doc="Gradients (data, gamma, beta) of ``batch_norm``: batch moments when ``train``, "
          "the moving statistics otherwise.")
