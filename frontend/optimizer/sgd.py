"""SGD-style optimizers: SGD (multi-tensor updates), NAG, Signum, SGLD, DCASGD, ccSGD."""
from __future__ import annotations

import math
import warnings

import numpy as np

from ember import autograd, trace_state
from ember import ndarray as nd
from ember.backends import cpu_optim
from ember.ndarray.ndarray import NDArray

from .optimizer import Optimizer, _aggregation_size, register

__all__ = ["SGD", "NAG", "Signum", "SGLD", "DCASGD", "ccSGD"]


def _zeros_like(weight: NDArray, dtype=None) -> NDArray:
    return nd.zeros(weight.shape, weight.context, dtype=dtype or weight.dtype)


def _as_list(x) -> list:
    return list(x) if isinstance(x, list | tuple) else [x]


class _MasterCopyFirstState:
    """SGD and NAG keep multi-precision state as ``(momentum, float32 master copy)``."""

    def create_state_multi_precision(self, index, weight):
        if self.multi_precision and weight.dtype == np.float16:
            master = weight.astype(np.float32)
            return (self.create_state(index, master), master)
        if weight.dtype == np.float16 and not self.multi_precision:
            warnings.warn("Accumulating with float16 in optimizer can lead to poor accuracy "
                          "or slow convergence. Consider using multi_precision=True option "
                          f"of the {type(self).__name__} optimizer", stacklevel=2)
        return self.create_state(index, weight)


@register
class SGD(_MasterCopyFirstState, Optimizer):
    """SGD with momentum and weight decay (MXNet's ``sgd_mom_update`` formula)::

        mom = momentum * mom - lr * (clip(rescale_grad * grad) + wd * weight)
        weight += mom

    Weights are updated ``aggregate_num`` at a time (env ``MXNET_OPTIMIZER_AGGREGATION_SIZE``,
    default 4) with the multi-tensor ops ``multi_sgd_update``/``multi_sgd_mom_update``
    (``multi_mp_*`` for float16 weights with ``multi_precision=True``). ``lazy_update``
    matters only for sparse gradients, which ember does not have.
    """

    def __init__(self, momentum: float = 0.0, lazy_update: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.momentum = momentum
        self.lazy_update = lazy_update
        self.aggregate_num = _aggregation_size("4")

    def create_state(self, index, weight):
        return _zeros_like(weight) if self.momentum != 0.0 else None

    def _update_impl(self, indices, weights, grads, states, multi_precision=False):
        if not isinstance(indices, list | tuple):
            indices, weights, grads, states = [indices], [weights], [grads], [states]
        indices, weights, grads, states = (list(x) for x in (indices, weights, grads, states))
        self._update_count(indices)
        if not multi_precision and _update_in_place(self, indices, weights, grads, states):
            return
        if trace_state.current() is not None:
            self._traced_update(indices, weights, grads, states, multi_precision)
            return
        kw = {"rescale_grad": self.rescale_grad, "lrs": self._get_lrs(indices),
              "wds": self._get_wds(indices), "num_weights": len(weights),
              **self._clip_kw()}
        if self.momentum > 0:
            kw["momentum"] = self.momentum
        groups: list = []
        if not multi_precision:
            if self.momentum > 0:
                for w, g, s in zip(weights, grads, states):
                    groups += (w, g, s)
                nd.multi_sgd_mom_update(*groups, out=weights, **kw)
            else:
                for w, g in zip(weights, grads):
                    groups += (w, g)
                nd.multi_sgd_update(*groups, out=weights, **kw)
        elif self.momentum > 0:
            for w, g, (mom, w32) in zip(weights, grads, states):
                groups += (w, g, mom, w32)
            nd.multi_mp_sgd_mom_update(*groups, out=weights, **kw)
        else:
            for w, g, (_, w32) in zip(weights, grads, states):
                groups += (w, g, w32)
            nd.multi_mp_sgd_update(*groups, out=weights, **kw)

    def _traced_update(self, indices, weights, grads, states, multi_precision):
        """Inside ``@ember.compile``: one single-weight update op per weight (the same
        formulas as the multi-tensor ops), each reading its learning rate as an input."""
        wds = self._get_wds(indices)
        for idx, w, g, st, wd in zip(indices, weights, grads, states, wds):
            kw = {"rescale_grad": self.rescale_grad, "wd": wd, **self._clip_kw()}
            if self.momentum > 0:
                kw["momentum"] = self.momentum
            lr = self._step_scalars(kw, lambda idx=idx: {"lr": self._get_lr(idx)})
            if not multi_precision:
                arrays = (w, g, st) if self.momentum > 0 else (w, g)
                op = nd.sgd_mom_update if self.momentum > 0 else nd.sgd_update
            else:
                mom, w32 = st
                arrays = (w, g, mom, w32) if self.momentum > 0 else (w, g, w32)
                op = nd.mp_sgd_mom_update if self.momentum > 0 else nd.mp_sgd_update
            op(*arrays, *lr, out=w, **kw)

    def update(self, index, weight, grad, state):
        self._update_impl(index, weight, grad, state, multi_precision=False)

    def update_multi_precision(self, index, weight, grad, state):
        first = _as_list(weight)[0]
        self._update_impl(index, weight, grad, state,
                          multi_precision=self.multi_precision and first.dtype == np.float16)


def _flat(x: NDArray):
    """``x``'s array as a 1-D view, or None when a kernel cannot update it in place."""
    a = x._data if type(x) is NDArray else None
    if type(a) is not np.ndarray or a.dtype not in _KERNEL_DTYPES or not a.flags.c_contiguous \
            or not a.flags.writeable:
        return None
    return a.reshape(-1)


_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _update_in_place(opt: SGD, indices, weights, grads, states) -> bool:
    """SGD's update straight into the weights (and momenta) with one-pass numba kernels
    (``ember.backends.cpu_optim``): the same formulas as ``multi_sgd(_mom)_update``,
    without the temporaries and ``out=`` copies. False (nothing done) when an array does not
    qualify, inside a traced step (``@ember.compile`` records the update ops instead), or
    while autograd records."""
    if trace_state.current() is not None or autograd.is_recording():
        return False
    mom = opt.momentum > 0
    flat = []
    for w, g, st in zip(weights, grads, states):
        fw, fg = _flat(w), _flat(g)
        fm = _flat(st) if mom and isinstance(st, NDArray) else None
        if fw is None or fg is None or fg.dtype != fw.dtype or fg.size != fw.size \
                or mom and (fm is None or fm.dtype != fw.dtype or fm.size != fw.size):
            return False
        flat.append((fw, fg, fm))
    if not all(cpu_optim.in_place_ready(mom, dt) for dt in {fw.dtype for fw, _, _ in flat}):
        return False   # (a cold process: the update ops run while a worker compiles them)
    lrs, wds = opt._get_lrs(indices), opt._get_wds(indices)
    clip = opt.clip_gradient if opt.clip_gradient else -1.0  # as _clip_kw: 0 is off
    rescale = opt.rescale_grad
    kern = cpu_optim.kernels()
    for (fw, fg, fm), lr, wd in zip(flat, lrs, wds):
        f = fw.dtype.type
        if mom:
            kern.sgd_mom(fw, fg, fm, f(lr), f(rescale), f(opt.momentum), f(lr * wd),
                         f(clip), f(lr * rescale))
        else:
            kern.sgd(fw, fg, f(lr), f(rescale), f(1.0 - lr * wd), f(clip), f(lr * rescale))
    return True


@register
class ccSGD(SGD):  # noqa: N801 (MXNet's name)
    """[DEPRECATED] Same as :class:`SGD`."""


@register
class NAG(_MasterCopyFirstState, Optimizer):
    """Nesterov accelerated gradient (MXNet's ``nag_mom_update``)."""

    def __init__(self, momentum: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.momentum = momentum

    def create_state(self, index, weight):
        return _zeros_like(weight) if self.momentum != 0.0 else None

    def _update_impl(self, index, weight, grad, state, multi_precision=False):
        self._update_count(index)
        kw = {"rescale_grad": self.rescale_grad, "wd": self._get_wd(index),
              **self._clip_kw()}
        lr = self._step_scalars(kw, lambda: {"lr": self._get_lr(index)})
        if self.momentum > 0:
            kw["momentum"] = self.momentum
        if not multi_precision:
            if state is not None:
                nd.nag_mom_update(weight, grad, state, *lr, out=weight, **kw)
            else:
                nd.sgd_update(weight, grad, *lr, out=weight, **kw)
        elif state[0] is not None:
            nd.mp_nag_mom_update(weight, grad, state[0], state[1], *lr, out=weight, **kw)
        else:
            nd.mp_sgd_update(weight, grad, state[1], *lr, out=weight, **kw)

    def update(self, index, weight, grad, state):
        self._update_impl(index, weight, grad, state, multi_precision=False)

    def update_multi_precision(self, index, weight, grad, state):
        use_mp = self.multi_precision and weight.dtype == np.float16 \
            and isinstance(state, list | tuple)
        self._update_impl(index, weight, grad, state, multi_precision=use_mp)


@register
class Signum(Optimizer):
    """Signum (sign of the momentum) or signSGD when ``momentum`` is 0; ``wd_lh`` is the
    decoupled weight decay of Loshchilov & Hutter."""

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.9, wd_lh: float = 0.0,
                 **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.momentum = momentum
        self.wd_lh = wd_lh

    def create_state(self, index, weight):
        return _zeros_like(weight) if self.momentum != 0.0 else None

    def update(self, index, weight, grad, state):
        self._update_count(index)
        kw = {"rescale_grad": self.rescale_grad, "wd": self._get_wd(index),
              **self._clip_kw()}
        lr = self._step_scalars(kw, lambda: {"lr": self._get_lr(index)})
        if self.momentum > 0:
            kw["momentum"] = self.momentum
        if state is not None:
            if self.wd_lh:
                kw["wd_lh"] = self.wd_lh
            nd.signum_update(weight, grad, state, *lr, out=weight, **kw)
        else:
            nd.signsgd_update(weight, grad, *lr, out=weight, **kw)


for _cls in (SGD, NAG, Signum):
    _cls.feeds_step_scalars = True


@register
class SGLD(Optimizer):
    """Stochastic Gradient Langevin Dynamics: a half SGD step plus N(0, lr) noise."""

    def update(self, index, weight, grad, state):
        self._update_count(index)
        lr, wd = self._get_lr(index), self._get_wd(index)
        grad = grad * self.rescale_grad
        if self.clip_gradient is not None:
            grad = nd.clip(grad, -self.clip_gradient, self.clip_gradient)
        weight[:] += -lr / 2 * (grad + wd * weight)
        weight[:] += nd.random.normal(0, math.sqrt(lr), shape=weight.shape,
                                      dtype=weight.dtype, ctx=weight.context)


@register
class DCASGD(Optimizer):
    """Delay-compensated asynchronous SGD (Zheng et al., 2016)."""

    def __init__(self, momentum: float = 0.0, lamda: float = 0.04, **kwargs):
        super().__init__(**kwargs)
        self.momentum = momentum
        self.weight_previous: dict = {}
        self.lamda = lamda

    def create_state(self, index, weight):
        mom = _zeros_like(weight) if self.momentum != 0.0 else None
        return (mom, weight.copy())

    def update(self, index, weight, grad, state):
        self._update_count(index)
        lr, wd = self._get_lr(index), self._get_wd(index)
        grad = grad * self.rescale_grad
        if self.clip_gradient is not None:
            grad = nd.clip(grad, -self.clip_gradient, self.clip_gradient)
        mom, previous = state
        step = -lr * (grad + wd * weight + self.lamda * grad * grad * (weight - previous))
        if mom is not None:
            mom[:] *= self.momentum
            mom[:] += step
        else:
            mom = step
        previous[:] = weight
        weight[:] += mom
