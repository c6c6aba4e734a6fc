"""Adam-style optimizers: Adam, AdamW (decoupled weight decay), Adamax, Nadam, FTML, LAMB."""
from __future__ import annotations

import math

import numpy as np

from ember import ndarray as nd

from .optimizer import Optimizer, register

__all__ = ["Adam", "AdamW", "Adamax", "Nadam", "FTML", "LAMB"]


def _zeros(weight, dtype=None):
    return nd.zeros(weight.shape, weight.context, dtype=dtype or weight.dtype)


@register
class Adam(Optimizer):
    """Adam (Kingma & Ba) with MXNet's bias correction folded into the learning rate::

        g = clip(rescale_grad * grad + wd * weight)
        m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g**2
        weight -= lr * sqrt(1 - beta2**t) / (1 - beta1**t) * m / (sqrt(v) + epsilon)
    """

    def __init__(self, learning_rate: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 epsilon: float = 1e-8, lazy_update: bool = True, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.lazy_update = lazy_update

    def create_state(self, index, weight):
        return (_zeros(weight), _zeros(weight))  # mean, variance

    def update(self, index, weight, grad, state):
        self._update_count(index)
        kw = {"wd": self._get_wd(index)}
        lr = self._step_scalars(kw, lambda: {"lr": self._corrected_lr(index)})
        mean, var = state
        nd.adam_update(weight, grad, mean, var, *lr, out=weight, lazy_update=self.lazy_update,
                       beta1=self.beta1, beta2=self.beta2, epsilon=self.epsilon,
                       rescale_grad=self.rescale_grad, **kw, **self._clip_kw())

    def _corrected_lr(self, index) -> float:
        """The learning rate times the bias correction at this update's count."""
        lr = self._get_lr(index)
        t = self._index_update_count[index]
        lr *= math.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.beta1 ** t)
        return lr


@register
class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter), on MXNet's ``adamw_update``::

        g = clip(rescale_grad * grad)
        m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g**2
        weight -= lr * (c_t * m / (sqrt(v) + epsilon) + wd * weight)

    with ``c_t = sqrt(1 - beta2**t) / (1 - beta1**t)`` when ``correct_bias`` (the default),
    else 1. The decay is not part of the gradient, so Adam's moments never see it; it is
    scaled by the (scheduled) learning rate, as ``eta_t`` in the paper.
    """

    def __init__(self, learning_rate: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 epsilon: float = 1e-8, correct_bias: bool = True, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.correct_bias = correct_bias

    def create_state(self, index, weight):
        return (_zeros(weight), _zeros(weight))

    def _args(self, index):
        """(keyword arguments, [hyper array] or []) of this update, counted."""
        self._update_count(index)
        kw = {"wd": self._get_wd(index), "beta1": self.beta1, "beta2": self.beta2,
              "epsilon": self.epsilon, **self._clip_kw()}
        return kw, self._step_scalars(kw, lambda: self._rates(index))

    def _rates(self, index) -> dict:
        t = self._index_update_count[index]
        coef = math.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.beta1 ** t) \
            if self.correct_bias else 1.0
        return {"lr": coef, "eta": self._get_lr(index)}

    def _scale(self, weight):
        return nd.array([self.rescale_grad], ctx=weight.context, dtype=np.float32)

    def update(self, index, weight, grad, state):
        mean, var = state
        kw, hyper = self._args(index)
        nd.adamw_update(weight, grad, mean, var, self._scale(weight), *hyper, out=weight,
                        **kw)

    def update_multi_precision(self, index, weight, grad, state):
        if self.multi_precision and weight.dtype == np.float16:
            master, (mean, var) = state
            kw, hyper = self._args(index)
            nd.mp_adamw_update(weight, grad, mean, var, master, self._scale(weight), *hyper,
                               out=weight, **kw)
        else:
            self.update(index, weight, grad, state)


@register
class Adamax(Optimizer):
    """AdaMax, Adam with the infinity norm (Kingma & Ba, section 7)."""

    def __init__(self, learning_rate: float = 0.002, beta1: float = 0.9, beta2: float = 0.999,
                 **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta1 = beta1
        self.beta2 = beta2

    def create_state(self, index, weight):
        return (_zeros(weight), _zeros(weight))

    def update(self, index, weight, grad, state):
        self._update_count(index)
        lr, wd = self._get_lr(index), self._get_wd(index)
        lr /= 1.0 - self.beta1 ** self._index_update_count[index]
        grad = grad * self.rescale_grad + wd * weight
        if self.clip_gradient is not None:
            grad = nd.clip(grad, -self.clip_gradient, self.clip_gradient)
        m_t, u_t = state
        m_t[:] *= self.beta1
        m_t[:] += (1.0 - self.beta1) * grad
        u_t[:] = nd.maximum(self.beta2 * u_t, nd.abs(grad))
        weight[:] -= lr * m_t / u_t


@register
class Nadam(Optimizer):
    """Adam with Nesterov momentum and a warming momentum schedule (Dozat, 2016)."""

    def __init__(self, learning_rate: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 epsilon: float = 1e-8, schedule_decay: float = 0.004, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.schedule_decay = schedule_decay
        self.m_schedule = 1.0

    def create_state(self, index, weight):
        return (_zeros(weight), _zeros(weight))

    def update(self, index, weight, grad, state):
        self._update_count(index)
        lr, wd = self._get_lr(index), self._get_wd(index)
        t = self._index_update_count[index]
        grad = grad * self.rescale_grad + wd * weight
        if self.clip_gradient is not None:
            grad = nd.clip(grad, -self.clip_gradient, self.clip_gradient)
        mom_t = self.beta1 * (1.0 - 0.5 * pow(0.96, t * self.schedule_decay))
        mom_t1 = self.beta1 * (1.0 - 0.5 * pow(0.96, (t + 1) * self.schedule_decay))
        self.m_schedule = self.m_schedule * mom_t
        m_schedule_next = self.m_schedule * mom_t1
        m_t, v_t = state
        m_t[:] *= self.beta1
        m_t[:] += (1.0 - self.beta1) * grad
        v_t[:] *= self.beta2
        v_t[:] += (1.0 - self.beta2) * grad * grad
        grad_prime = grad / (1.0 - self.m_schedule)
        m_t_prime = m_t / (1.0 - m_schedule_next)
        v_t_prime = v_t / (1.0 - pow(self.beta2, t))
        m_t_bar = (1.0 - mom_t) * grad_prime + mom_t1 * m_t_prime
        weight[:] -= lr * m_t_bar / (nd.sqrt(v_t_prime) + self.epsilon)


@register
class FTML(Optimizer):
    """Follow the Moving Leader (Zheng & Kwok, 2017), on ``ftml_update``."""

    def __init__(self, beta1: float = 0.6, beta2: float = 0.999, epsilon: float = 1e-8,
                 **kwargs):
        super().__init__(**kwargs)
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon

    def create_state(self, index, weight):
        return (_zeros(weight), _zeros(weight), _zeros(weight))  # d, v, z

    def update(self, index, weight, grad, state):
        self._update_count(index)
        kw = {"wd": self._get_wd(index)}
        hyper = self._step_scalars(kw, lambda: {"lr": self._get_lr(index),
                                                "t": self._index_update_count[index]})
        d, v, z = state
        nd.ftml_update(weight, grad, d, v, z, *hyper, out=weight, beta1=self.beta1,
                       beta2=self.beta2, epsilon=self.epsilon, rescale_grad=self.rescale_grad,
                       **kw, **self._clip_kw("clip_grad"))


@register
class LAMB(Optimizer):
    """LAMB (You et al., 2019): Adam's direction scaled by the trust ratio
    ``||weight|| / ||direction||`` (``lamb_update_phase1`` then ``lamb_update_phase2``)."""

    def __init__(self, learning_rate: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 epsilon: float = 1e-6, lower_bound: float | None = None,
                 upper_bound: float | None = None, bias_correction: bool = True, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.lower_bound = lower_bound
        self.upper_bound = upper_bound
        self.bias_correction = bias_correction

    def create_state(self, index, weight):
        return (_zeros(weight), _zeros(weight))

    def _update_impl(self, index, weight, grad, state, multi_precision=False):
        self._update_count(index)
        kw = {"beta1": self.beta1, "beta2": self.beta2, "epsilon": self.epsilon,
              "bias_correction": self.bias_correction, "rescale_grad": self.rescale_grad,
              "wd": self._get_wd(index), **self._clip_kw()}
        t = self._step_scalars(kw, lambda: {"t": self._index_update_count[index]})
        bounds = {}
        if self.lower_bound:
            bounds["lower_bound"] = self.lower_bound
        if self.upper_bound:
            bounds["upper_bound"] = self.upper_bound
        lr = self._step_scalars(bounds, lambda: {"lr": self._get_lr(index)})
        if multi_precision:
            w32, (mean, var) = state
            g = nd.mp_lamb_update_phase1(weight, grad, mean, var, w32, *t, **kw)
            nd.mp_lamb_update_phase2(weight, g, w32.norm(), g.norm(), w32, *lr, out=weight,
                                     **bounds)
        else:
            mean, var = state
            g = nd.lamb_update_phase1(weight, grad, mean, var, *t, **kw)
            nd.lamb_update_phase2(weight, g, weight.norm(), g.norm(), *lr, out=weight,
                                  **bounds)

    def update(self, index, weight, grad, state):
        self._update_impl(index, weight, grad, state)

    def update_multi_precision(self, index, weight, grad, state):
        self._update_impl(index, weight, grad, state,
                          multi_precision=self.multi_precision and weight.dtype == np.float16)


# their update reads the step count t (bias correction)...
for _cls in (Adam, AdamW, Adamax, Nadam, FTML, LAMB):
    _cls.uses_step_count = True
# ...which those on update ops take as an input instead (a compiled step feeds it)
for _cls in (Adam, AdamW, FTML, LAMB):
    _cls.feeds_step_scalars = True
