"""Optimizer kernels (numba, one pass each): in place for the eager ``Trainer.step`` path, and
the CPU backend's kernels of the update ops in compiled graphs (end of the file).

The update ops of ``ir/opset_optim.py`` return a fresh weight that ``out=`` copies back: two
extra passes over every weight and a temporary per step. These kernels update the arrays in
place with the same formulas and float order (MXNet 1.9.1 ``optimizer_op-inl.h``; scalars
arrive in the weight's dtype, no ``fastmath``, so no contraction changes the rounding):

- ``sgd``: ``w = (1 - lr*wd) * w - lr * clip(rescale * g)``;
- ``sgd_mom``: ``mom = momentum*mom - lr*clip(rescale*g) - (lr*wd)*w; w += mom``.

``clip < 0`` means no clipping. Arrays are 1-D views of contiguous buffers.

The kernels are one generated module (``SOURCE``) loaded through the kernel cache
(:func:`kernels`), like the backend's, so that a compile worker can compile them and a cold
process need not: ``Trainer.step``'s first update took 0.7 s of numba (with numba's
package cache cold) for a loop NumPy's update ops run in ~0.1 s. The in-place path asks
:func:`in_place_ready` first (a ``cpu_tiered.Deferred``: ready at once when the cache has
them or with ``EMBER_DEFER_KERNELS=0``, else the update ops run while a worker compiles
them, from the second step).
"""
from __future__ import annotations

import numpy as np

from . import codegen
from .cpu_tiered import Deferred

SOURCE = """import numpy as np
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
    '''``w = decay*w - step``; ``step = lr_rescale*g`` unclipped, else ``lr*clip(rescale*g)``.'''
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
    '''``mom = momentum*mom - step - lr_wd*w; w += mom`` (``step`` as in :func:`sgd`).'''
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


@njit(cache=True, nogil=True)
def sgd_out(w, g, out, lr, rescale, decay, clip, lr_rescale, decays):
    '''``out = decay*w - step`` (``w - step`` unless ``decays``), ``step`` as in ``sgd``.'''
    for i in range(w.shape[0]):
        if clip >= 0:
            s = _clip(g[i] * rescale, clip) * lr
        else:
            s = g[i] * lr_rescale
        out[i] = w[i] * decay - s if decays else w[i] - s


@njit(cache=True, nogil=True)
def sgd_mom_out(w, g, mom, out, lr, rescale, momentum, lr_wd, clip, lr_rescale, use_wd):
    '''``mom = momentum*mom - step [- lr_wd*w]; out = w + mom``.'''
    for i in range(w.shape[0]):
        if clip >= 0:
            s = _clip(g[i] * rescale, clip) * lr
        else:
            s = g[i] * lr_rescale
        m = mom[i] * momentum - s
        if use_wd:
            m = m - w[i] * lr_wd
        mom[i] = m
        out[i] = w[i] + m


@njit(cache=True, nogil=True)
def adam_out(w, g, mean, var, out, lr, rescale, wd, beta1, one_m_b1, beta2, one_m_b2, eps,
             clip):
    '''MXNet's Adam: ``gr = clip(rescale*g + wd*w)``; moving averages; ``out = w -
    lr*mean/(sqrt(var) + eps)`` (the reference kernel's order of operations).'''
    for i in range(w.shape[0]):
        gr = _clip(g[i] * rescale + w[i] * wd, clip)
        m = mean[i] * beta1 + gr * one_m_b1
        v = var[i] * beta2 + (gr * gr) * one_m_b2
        mean[i] = m
        var[i] = v
        out[i] = w[i] - (lr * m) / (np.sqrt(v) + eps)
"""
_MODULE: list = []
_GATES: dict = {}


def kernels():
    """The kernels' module (``SOURCE`` through the kernel cache, loaded once)."""
    if not _MODULE:
        _MODULE.append(codegen.load_module(SOURCE, "cpu"))
    return _MODULE[0]


def in_place_ready(momentum: bool, dtype) -> bool:
    """Whether SGD's in-place kernel (``sgd_mom`` or ``sgd``) for ``dtype`` may run for
    this update (module doc); False: run the update ops this time."""
    dt = np.dtype(dtype)
    key = (momentum, dt)
    gate = _GATES.get(key)
    if gate is None:
        z, f = np.zeros(0, dt), dt.type(0)
        fn = kernels().sgd_mom if momentum else kernels().sgd
        args = (z, z, z, *(f,) * 6) if momentum else (z, z, *(f,) * 5)
        gate = _GATES[key] = Deferred(lambda: [(fn, args)], [SOURCE])
    return gate.ready()


# ---- update ops inside a compiled graph ------------------------------------------------------
# The CPU backend runs ``sgd_update``, ``sgd_mom_update`` and ``adam_update`` nodes with the
# one-pass kernels ``sgd_out``, ``sgd_mom_out`` and ``adam_out`` instead of their NumPy
# reference (several temporaries per weight). Same contract as the reference: the new weight
# goes to ``out`` (the weight itself is left alone: the graph may read it after the update),
# the states are updated in place, and every scalar is computed in double precision as the
# reference does, then rounded to the weight's dtype.


def _flat_args(ins, n):
    """The first ``n`` arrays as 1-D views of one float dtype, or None (then the reference
    kernel runs: another dtype, a non-contiguous or read-only array)."""
    w = ins[0]
    if w.dtype not in (np.float32, np.float64):
        return None
    out = []
    for a in ins[:n]:
        if type(a) is not np.ndarray or a.dtype != w.dtype or a.shape != w.shape \
                or not a.flags.c_contiguous or not a.flags.writeable:
            return None
        out.append(a.reshape(-1))
    return out


def _sgd_compute(ins, at):
    arrs = _flat_args(ins, 2)
    if arrs is None:
        return None
    w, g = arrs
    f = w.dtype.type
    lr, wd, rescale = at["lr"], at["wd"], at["rescale_grad"]
    out = np.empty_like(ins[0])
    decay = 1.0 - lr * wd
    kernels().sgd_out(w, g, out.reshape(-1), f(lr), f(rescale), f(decay),
                      f(at["clip_gradient"]), f(lr * rescale), decay != 1.0)
    return out


def _sgd_mom_compute(ins, at):
    arrs = _flat_args(ins, 3)
    if arrs is None:
        return None
    w, g, mom = arrs
    f = w.dtype.type
    lr, wd, rescale = at["lr"], at["wd"], at["rescale_grad"]
    out = np.empty_like(ins[0])
    kernels().sgd_mom_out(w, g, mom, out.reshape(-1), f(lr), f(rescale), f(at["momentum"]),
                          f(lr * wd), f(at["clip_gradient"]), f(lr * rescale), bool(wd))
    return out


def _adam_compute(ins, at):
    arrs = _flat_args(ins, 4)
    if arrs is None:
        return None
    w, g, mean, var = arrs
    f = w.dtype.type
    out = np.empty_like(ins[0])
    kernels().adam_out(w, g, mean, var, out.reshape(-1), f(at["lr"]), f(at["rescale_grad"]),
                       f(at["wd"]), f(at["beta1"]), f(1.0 - at["beta1"]), f(at["beta2"]),
                       f(1.0 - at["beta2"]), f(at["epsilon"]), f(at["clip_gradient"]))
    return out


_COMPUTES = {"sgd_update": _sgd_compute, "sgd_mom_update": _sgd_mom_compute,
             "adam_update": _adam_compute}


def update_compute(op):
    """A ``compute(ins, attrs)`` for the update op ``op`` with the kernels above (the
    attributes named in ``hyper`` read from its last input, as the reference does), falling
    back to the reference kernel for arrays they do not take; None for other ops."""
    fast = _COMPUTES.get(op.name)
    if fast is None:
        return None
    from ember.ir.optim_rules import fed

    def compute(ins, at):
        res = fast(ins, at)
        return op.compute._base(ins, at) if res is None else res
    return fed(op.name, compute)
