"""The less common initializers of ``mx.init``: Load, Mixed, Orthogonal, Xavier, MSRAPrelu,
Bilinear, LSTMBias (MXNet 1.x semantics). ``ember.initializer`` re-exports them."""
from __future__ import annotations

import logging
import re

import numpy as np

from ember.ndarray import random as _nd_random
from ember.ndarray.ndarray import NDArray

from .initializer import (
    Initializer,
    InitializerError,
    _without_init,
    bilinear_kernel,
    create,
    random_fill,
    register,
)


# ---- composite initializers ----------------------------------------------------------------
class Load:
    """Initialise variables from a file or a dict of name -> NDArray.

    Names prefixed ``arg:`` or ``aux:`` are matched with the prefix dropped; a variable not in
    ``param`` goes to ``default_init`` (an error when there is none).
    """

    def __init__(self, param, default_init=None, verbose: bool = False):
        if isinstance(param, str):
            from ember import ndarray as nd
            param = nd.load(param)
        if not isinstance(param, dict):
            raise InitializerError("Load needs a dict of name -> NDArray (or a file that holds "
                                   f"one), got {type(param).__name__}")
        self.param = {}
        for name, arr in param.items():
            key = name[4:] if name.startswith(("arg:", "aux:")) else name
            self.param[key] = arr
        self.default_init = default_init
        self.verbose = verbose

    def __call__(self, name, arr: NDArray) -> None:
        """Copy the stored array called ``name`` into ``arr``, else use ``default_init``."""
        if name in self.param:
            src = self.param[name]
            if tuple(arr.shape) != tuple(src.shape):
                raise InitializerError(
                    f"Parameter {name} cannot be initialized from loading. Shape mismatch, "
                    f"target {arr.shape} vs loaded {src.shape}")
            arr[:] = src
            if self.verbose:
                logging.info("Initialized %s by loading", name)
            return
        if self.default_init is None:
            raise InitializerError(f"Cannot Initialize {name}. Not found in loaded param and "
                                   "no default Initializer is provided.")
        self.default_init(_without_init(name, self), arr)
        if self.verbose:
            logging.info("Initialized %s by default", name)


class Mixed:
    """Initialise each variable with the first initializer whose regex ``re.match``-es its
    name (``Mixed(['bias', '.*'], [mx.init.Zero(), mx.init.Uniform(0.1)])``)."""

    def __init__(self, patterns: list[str], initializers: list):
        if len(patterns) != len(initializers):
            raise InitializerError(f"Mixed: {len(patterns)} patterns but "
                                   f"{len(initializers)} initializers")
        self.map = [(re.compile(p), create(i)) for p, i in zip(patterns, initializers)]

    def __call__(self, name, arr: NDArray) -> None:
        """Apply the initializer of the first pattern matching ``name``."""
        for prog, init in self.map:
            if prog.match(name):
                init(_without_init(name, self), arr)
                return
        raise InitializerError(f"Parameter name {name} did not match any pattern. Consider "
                               'add a ".*" pattern at the and with default Initializer.')


@register
class Orthogonal(Initializer):
    """Initialise a weight as a (scaled) orthogonal matrix (Saxe et al., arXiv:1312.6120).

    The weight is viewed as ``(shape[0], prod(shape[1:]))``; a random matrix of that shape
    (``rand_type`` 'uniform' on [-1, 1] or 'normal') is replaced by the factor of its SVD that
    has its shape, so rows (or columns, whichever are fewer) are orthonormal, times ``scale``.
    """

    def __init__(self, scale: float = 1.414, rand_type: str = "uniform"):
        super().__init__(scale=scale, rand_type=rand_type)
        if rand_type not in ("uniform", "normal"):
            raise InitializerError(f"Orthogonal: rand_type must be 'uniform' or 'normal', "
                                   f"not {rand_type!r}")
        self.scale = scale
        self.rand_type = rand_type

    def _init_weight(self, name, arr):
        if len(arr.shape) < 1 or arr.size == 0:
            raise InitializerError(f"Orthogonal initializer cannot be applied to {name} of "
                                   f"shape {arr.shape}")
        nout = arr.shape[0]
        nin = int(np.prod(arr.shape[1:]))
        if self.rand_type == "uniform":
            tmp = _nd_random.uniform(-1.0, 1.0, shape=(nout, nin), dtype="float64").asnumpy()
        else:
            tmp = _nd_random.normal(0.0, 1.0, shape=(nout, nin), dtype="float64").asnumpy()
        u, _, v = np.linalg.svd(tmp, full_matrices=False)
        res = u if u.shape == tmp.shape else v
        arr[:] = self.scale * res.reshape(arr.shape)


def _fans(name, shape: tuple) -> tuple[float, float]:
    if len(shape) < 2:
        raise InitializerError(f"Xavier initializer cannot be applied to vector {name}. It "
                               f"requires at least 2D (shape {tuple(shape)}).")
    hw_scale = float(np.prod(shape[2:])) if len(shape) > 2 else 1.0
    return shape[1] * hw_scale, shape[0] * hw_scale


@register
class Xavier(Initializer):
    """"Xavier" (Glorot) initialisation: keeps the scale of gradients alike in all layers.

    With ``n_in = shape[1] * receptive field`` and ``n_out = shape[0] * receptive field``,
    ``factor`` is their mean ('avg'), ``n_in`` ('in') or ``n_out`` ('out'), and
    ``scale = sqrt(magnitude / factor)``; weights are drawn from U[-scale, scale]
    (``rnd_type='uniform'``) or N(0, scale^2) (``'gaussian'``).
    """

    def __init__(self, rnd_type: str = "uniform", factor_type: str = "avg",
                 magnitude: float = 3):
        super().__init__(rnd_type=rnd_type, factor_type=factor_type, magnitude=magnitude)
        if rnd_type not in ("uniform", "gaussian"):
            raise InitializerError(f"Unknown random type {rnd_type!r} (use 'uniform' or "
                                   "'gaussian')")
        if factor_type not in ("avg", "in", "out"):
            raise InitializerError(f"Incorrect factor type {factor_type!r} (use 'avg', 'in' "
                                   "or 'out')")
        self.rnd_type = rnd_type
        self.factor_type = factor_type
        self.magnitude = float(magnitude)

    def _init_weight(self, name, arr):
        fan_in, fan_out = _fans(name, arr.shape)
        factor = {"avg": (fan_in + fan_out) / 2.0, "in": fan_in, "out": fan_out}[
            self.factor_type]
        scale = float(np.sqrt(self.magnitude / factor))
        if self.rnd_type == "uniform":
            random_fill("uniform", -scale, scale, arr)
        else:
            random_fill("normal", 0.0, scale, arr)


@register
class MSRAPrelu(Xavier):
    """He et al.'s initialisation for (P)ReLU nets (arXiv:1502.01852): Gaussian Xavier with
    ``magnitude = 2 / (1 + slope^2)``."""

    def __init__(self, factor_type: str = "avg", slope: float = 0.25):
        magnitude = 2.0 / (1 + slope ** 2)
        super().__init__("gaussian", factor_type, magnitude)
        self._kwargs = {"factor_type": factor_type, "slope": slope}


@register
class Bilinear(Initializer):
    """Initialise a 4-D weight as a bilinear-upsampling kernel (for Deconvolution)."""

    def __init__(self):
        super().__init__()

    def _init_weight(self, name, arr):
        arr[:] = bilinear_kernel(name, arr.shape)


@register
class LSTMBias(Initializer):
    """All LSTM biases 0 except the forget gate's (the second of the 4 gates): ``forget_bias``
    (Jozefowicz et al. 2015 recommend 1.0)."""

    def __init__(self, forget_bias: float = 1.0):
        super().__init__(forget_bias=forget_bias)
        self.forget_bias = forget_bias

    def _init_weight(self, name, arr):
        arr[:] = 0.0
        num_hidden = int(arr.shape[0] / 4)
        arr[num_hidden:2 * num_hidden] = self.forget_bias
