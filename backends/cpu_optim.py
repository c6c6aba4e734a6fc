"""In-place optimizer kernels for the eager ``Trainer.step`` path (numba, one pass each).

The update ops of ``ir/opset_optim.py`` return a fresh weight that ``out=`` copies back: two
extra passes over every weight and a temporary per step. These kernels update the arrays in
place with the same formulas and float order (MXNet 1.9.1 ``optimizer_op-inl.h``; scalars
arrive in the weight's dtype, no ``fastmath``, so no contraction changes the rounding):

- ``sgd``: ``w = (1 - lr*wd) * w - lr * clip(rescale * g)``;
- ``sgd_mom``: ``mom = momentum*mom - lr*clip(rescale*g) - (lr*wd)*w; w += mom``.

``clip < 0`` means no clipping. Arrays are 1-D views of contiguous buffers.
"""
from __future__ import annotations

from numba import njit


@njit(cache=True, nogil=True)
def _clip(x, c):
    if c >= 0:
        if x > c:
            return c
        if x < -c:
            return -c
    return x


@njit(cache=True, nogil=True)
def sgd(w, g, lr, rescale, decay, clip, lr_rescale):
    """``w = decay*w - step``; ``step = lr_rescale*g`` unclipped, else ``lr*clip(rescale*g)``."""
    if clip >= 0:
        for i in range(w.shape[0]):
            s = _clip(g[i] * rescale, clip) * lr
            w[i] = w[i] * decay - s if decay != 1 else w[i] - s
    elif decay != 1:
        for i in range(w.shape[0]):
            w[i] = w[i] * decay - g[i] * lr_rescale
    else:
        for i in range(w.shape[0]):
            w[i] = w[i] - g[i] * lr_rescale


@njit(cache=True, nogil=True)
def sgd_mom(w, g, mom, lr, rescale, momentum, lr_wd, clip, lr_rescale):
    """``mom = momentum*mom - step - lr_wd*w; w += mom`` (``step`` as in :func:`sgd`)."""
    for i in range(w.shape[0]):
        if clip >= 0:
            s = _clip(g[i] * rescale, clip) * lr
        else:
            s = g[i] * lr_rescale
        m = mom[i] * momentum - s
        if lr_wd != 0:
            m = m - w[i] * lr_wd
        mom[i] = m
        w[i] = w[i] + m
