"""Activation layers with their own arguments or parameters: LeakyReLU, PReLU, ELU, SELU,
GELU, Swish (MXNet 1.9.1's python/mxnet/gluon/nn/activations.py; ``Activation`` itself lives
in ``basic_layers``). All but Swish are one ``LeakyReLU`` op with the matching ``act_type``.
"""
from __future__ import annotations

from ember import initializer
from ember.base import MXNetError

from ..block import HybridBlock
from .basic_layers import Activation

__all__ = ["Activation", "LeakyReLU", "PReLU", "ELU", "SELU", "Swish", "GELU"]


class LeakyReLU(HybridBlock):
    """``x`` where ``x >= 0``, ``alpha * x`` elsewhere (a fixed slope)."""

    def __init__(self, alpha: float, **kwargs):
        if alpha < 0:
            raise MXNetError("Slope coefficient for LeakyReLU must be no less than 0.")
        super().__init__(**kwargs)
        self._alpha = alpha

    def hybrid_forward(self, F, x):
        return F.LeakyReLU(x, act_type="leaky", slope=self._alpha, name="fwd")

    def __repr__(self):
        return f"{type(self).__name__}({self._alpha})"


class PReLU(HybridBlock):
    """LeakyReLU with a learnt slope ``alpha``: one value, or one per channel (axis 1)
    when ``in_channels`` is the input's channel count (He et al., 2015)."""

    def __init__(self, alpha_initializer=initializer.Constant(0.25), in_channels: int = 1,
                 **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.alpha = self.params.get("alpha", shape=(in_channels,),
                                         init=alpha_initializer)

    def hybrid_forward(self, F, x, alpha):
        return F.LeakyReLU(x, gamma=alpha, act_type="prelu", name="fwd")


class ELU(HybridBlock):
    """Exponential linear unit: ``alpha * (exp(x) - 1)`` for ``x < 0`` (Clevert et al.)."""

    def __init__(self, alpha: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self._alpha = alpha

    def hybrid_forward(self, F, x):
        return F.LeakyReLU(x, act_type="elu", slope=self._alpha)


class SELU(HybridBlock):
    """Scaled exponential linear unit (Klambauer et al., 2017)."""

    def hybrid_forward(self, F, x):
        return F.LeakyReLU(x, act_type="selu", name="fwd")


class GELU(HybridBlock):
    """Gaussian error linear unit ``x * Phi(x)`` (Hendrycks and Gimpel, 2016)."""

    def hybrid_forward(self, F, x):
        return F.LeakyReLU(x, act_type="gelu", name="fwd")


class Swish(HybridBlock):
    """``x * sigmoid(beta * x)`` (Ramachandran et al., 2017)."""

    def __init__(self, beta: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self._beta = beta

    def hybrid_forward(self, F, x):
        return x * F.sigmoid(self._beta * x, name="fwd")
