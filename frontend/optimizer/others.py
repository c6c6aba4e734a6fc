"""RMSProp, AdaGrad, AdaDelta, Ftrl and the ``Test`` optimizer of MXNet's unit tests."""
from __future__ import annotations

from ember import ndarray as nd

from .optimizer import Optimizer, register

__all__ = ["RMSProp", "AdaGrad", "AdaDelta", "Ftrl", "Test"]


def _zeros(weight):
    return nd.zeros(weight.shape, weight.context)


@register
class RMSProp(Optimizer):
    """RMSProp: Tieleman & Hinton's (``rmsprop_update``), or Graves's centered version
    (``rmspropalex_update``) with ``centered=True``; ``clip_weights`` bounds the weights."""

    def __init__(self, learning_rate: float = 0.001, gamma1: float = 0.9, gamma2: float = 0.9,
                 epsilon: float = 1e-8, centered: bool = False,
                 clip_weights: float | None = None, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.gamma1 = gamma1
        self.gamma2 = gamma2
        self.centered = centered
        self.epsilon = epsilon
        self.clip_weights = clip_weights

    def create_state(self, index, weight):
        if self.centered:
            return (_zeros(weight), _zeros(weight), _zeros(weight))  # n, g, delta
        return (_zeros(weight),)  # n

    def update(self, index, weight, grad, state):
        self._update_count(index)
        kw = {"wd": self._get_wd(index), "gamma1": self.gamma1,
              "epsilon": self.epsilon, "rescale_grad": self.rescale_grad, **self._clip_kw()}
        lr = self._step_scalars(kw, lambda: {"lr": self._get_lr(index)})
        if self.clip_weights:
            kw["clip_weights"] = self.clip_weights
        if self.centered:
            n, g, delta = state
            nd.rmspropalex_update(weight, grad, n, g, delta, *lr, out=weight,
                                  gamma2=self.gamma2, **kw)
        else:
            (n,) = state
            nd.rmsprop_update(weight, grad, n, *lr, out=weight, **kw)


@register
class AdaGrad(Optimizer):
    """AdaGrad (Duchi et al.)::

        grad = clip(rescale_grad * grad);  history += grad**2
        weight -= lr * (grad / sqrt(history + eps) + wd * weight)
    """

    def __init__(self, eps: float = 1e-7, **kwargs):
        super().__init__(**kwargs)
        self.float_stable_eps = eps

    def create_state(self, index, weight):
        return _zeros(weight)  # history

    def update(self, index, weight, grad, state):
        self._update_count(index)
        lr, wd = self._get_lr(index), self._get_wd(index)
        grad = grad * self.rescale_grad
        if self.clip_gradient is not None:
            grad = nd.clip(grad, -self.clip_gradient, self.clip_gradient)
        state[:] += nd.square(grad)
        div = grad / nd.sqrt(state + self.float_stable_eps)
        weight[:] += (div + weight * wd) * -lr


@register
class AdaDelta(Optimizer):
    """AdaDelta (Zeiler, 2012); the learning rate is not used, as in MXNet."""

    def __init__(self, rho: float = 0.90, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.rho = rho
        self.epsilon = epsilon

    def create_state(self, index, weight):
        return (_zeros(weight), _zeros(weight))  # accumulated g, accumulated delta

    def update(self, index, weight, grad, state):
        wd = self._get_wd(index)
        self._update_count(index)
        grad = grad * self.rescale_grad
        if self.clip_gradient is not None:
            grad = nd.clip(grad, -self.clip_gradient, self.clip_gradient)
        acc_g, acc_delta = state
        acc_g[:] *= self.rho
        acc_g[:] += (1.0 - self.rho) * grad * grad
        delta = nd.sqrt(acc_delta + self.epsilon) / nd.sqrt(acc_g + self.epsilon) * grad
        acc_delta[:] *= self.rho
        acc_delta[:] += (1.0 - self.rho) * delta * delta
        weight[:] -= delta + wd * weight


@register
class Ftrl(Optimizer):
    """FTRL-proximal (McMahan et al., 2013), on ``ftrl_update``."""

    def __init__(self, lamda1: float = 0.01, learning_rate: float = 0.1, beta: float = 1,
                 **kwargs):
        super().__init__(**kwargs)
        self.lamda1 = lamda1
        self.beta = beta
        self.lr = learning_rate

    def create_state(self, index, weight):
        return (_zeros(weight), _zeros(weight))  # z, n

    def update(self, index, weight, grad, state):
        self._update_count(index)
        kw = {"wd": self._get_wd(index)}
        lr = self._step_scalars(kw, lambda: {"lr": self._get_lr(index)})
        z, n = state
        nd.ftrl_update(weight, grad, z, n, *lr, out=weight, lamda1=self.lamda1,
                       beta=self.beta, rescale_grad=self.rescale_grad, **kw,
                       **self._clip_kw())


RMSProp.feeds_step_scalars = Ftrl.feeds_step_scalars = True


@register
class Test(Optimizer):
    """MXNet's unit-test optimizer: ``weight += rescale_grad * grad``; state = weight."""

    def create_state(self, index, weight):
        return _zeros(weight)

    def update(self, index, weight, grad, state):
        weight[:] += grad * self.rescale_grad
        state[:] = weight
