"""Weight initializers: ``mx.init`` / ``mx.initializer`` with MXNet 1.x's API and semantics.

An initializer is called as ``init(InitDesc(name, attrs), arr)`` and fills the NDArray ``arr``
in place, keeping its dtype. With no ``'__init__'`` attribute it dispatches on the name's
suffix (``weight`` -> ``_init_weight``, ``bias``/``beta`` -> 0, ``gamma`` -> 1, ...), exactly as
MXNet does; ``attrs['__init__']`` (an initializer, a registry name or a ``dumps()`` string)
overrides that. Random draws come from ``ember.nd.random``, which ``mx.random.seed`` reseeds.
"""
from __future__ import annotations

import json
import logging
import warnings
from math import sqrt

import numpy as np

from ember.base import MXNetError
from ember.ndarray import random as _nd_random
from ember.ndarray.ndarray import NDArray

__all__ = ["InitDesc", "Initializer", "InitializerError", "register", "alias", "create",
           "Load", "Mixed", "Zero", "One", "Constant", "Uniform", "Normal", "Orthogonal",
           "Xavier", "MSRAPrelu", "Bilinear", "LSTMBias"]


class InitializerError(MXNetError, ValueError):
    """An initializer cannot be built or cannot fill a parameter (names the parameter)."""


class InitDesc(str):
    """The name of a variable to initialise plus its attributes (MXNet's ``InitDesc``).

    ``attrs`` may hold ``'__init__'``: the initializer this variable asks for. ``global_init``
    is the initializer to fall back to (set by the first initializer that sees it).
    """

    def __new__(cls, name: str, attrs: dict | None = None, global_init=None):
        ret = super().__new__(cls, name)
        ret.attrs = attrs or {}
        ret.global_init = global_init
        return ret


# ---- registry ------------------------------------------------------------------------------
_REGISTRY: dict[str, type] = {}


def _register_as(klass: type, name: str) -> type:
    if not (isinstance(klass, type) and issubclass(klass, Initializer)):
        raise InitializerError(f"can only register subclasses of Initializer, not {klass!r}")
    name = name.lower()
    old = _REGISTRY.get(name)
    if old is not None and old is not klass:
        warnings.warn(f"New initializer {klass.__module__}.{klass.__name__} registered with "
                      f"name {name} is overriding existing initializer "
                      f"{old.__module__}.{old.__name__}", UserWarning, stacklevel=3)
    _REGISTRY[name] = klass
    return klass


def register(klass: type) -> type:
    """Class decorator: make ``klass`` creatable by its lower-case class name."""
    return _register_as(klass, klass.__name__)


def alias(*aliases: str):
    """Class decorator: register the class under each of ``aliases`` as well."""
    def reg(klass):
        for name in aliases:
            _register_as(klass, name)
        return klass
    return reg


def create(*args, **kwargs):
    """An initializer from an instance (returned as is), a registry name plus keyword
    arguments, a JSON string (``'["normal", {"sigma": 0.5}]'`` as ``dumps`` writes), or a dict
    ``{"initializer": name, **kwargs}``."""
    if args:
        name, args = args[0], args[1:]
    elif "initializer" in kwargs:
        name = kwargs.pop("initializer")
    else:
        raise InitializerError("create() needs an initializer name or instance")
    if isinstance(name, Initializer | Load | Mixed):
        if args or kwargs:
            raise InitializerError("initializer is already an instance. Additional arguments "
                                   "are invalid")
        return name
    if isinstance(name, dict):
        return create(**name)
    if not isinstance(name, str):
        raise InitializerError(f"initializer must be a name, a JSON string or an Initializer, "
                               f"not {type(name).__name__}")
    if name.startswith("["):
        if args or kwargs:
            raise InitializerError("a JSON initializer takes no further arguments")
        name, kwargs = json.loads(name)
        return create(name, **kwargs)
    if name.startswith("{"):
        if args or kwargs:
            raise InitializerError("a JSON initializer takes no further arguments")
        return create(**json.loads(name))
    klass = _REGISTRY.get(name.lower())
    if klass is None:
        raise InitializerError(f"{name} is not registered. Please register with "
                               f"initializer.register first (known: {sorted(_REGISTRY)})")
    return klass(*args, **kwargs)


# ---- base class ----------------------------------------------------------------------------
def _default_stat(x: NDArray) -> str:
    """||x|| / sqrt(size): the statistic verbose mode logs."""
    from ember import ndarray as nd
    return str((nd.norm(x) / sqrt(x.size)).asscalar())


class Initializer:
    """The base class of initializers; subclasses override ``_init_weight``."""

    def __init__(self, **kwargs):
        self._kwargs = kwargs
        self._verbose = False
        self._print_func = None

    def set_verbosity(self, verbose: bool = False, print_func=None) -> Initializer:
        """Log each initialised array with ``print_func(arr)`` (default: ||x||/sqrt(size))."""
        self._verbose = verbose
        self._print_func = _default_stat if print_func is None else print_func
        return self

    def _verbose_print(self, desc, init, arr) -> None:
        if self._verbose and self._print_func:
            logging.info("Initialized %s as %s: %s", desc, init, self._print_func(arr))

    def dumps(self) -> str:
        """This initializer as JSON, ``'["name", {kwargs}]'``, which ``create`` reads back."""
        return json.dumps([self.__class__.__name__.lower(), self._kwargs])

    def __call__(self, desc, arr: NDArray) -> None:
        """Fill ``arr`` (in place) for the variable described by ``desc``."""
        if not isinstance(desc, InitDesc):
            self._legacy_init(desc, arr)
            return
        if desc.global_init is None:
            desc.global_init = self
        init = desc.attrs.get("__init__", "")
        if init:
            chosen = create(init)
            if isinstance(chosen, Initializer):
                chosen._init_weight(desc, arr)
            else:  # Mixed / Load chosen per variable: let it dispatch by name
                chosen(_without_init(desc, chosen), arr)
            self._verbose_print(desc, init, arr)
            return
        for suffix, method in (("weight", self._init_weight), ("bias", self._init_bias),
                               ("gamma", self._init_gamma), ("beta", self._init_beta),
                               ("min", self._init_zero), ("max", self._init_one),
                               ("weight_quantize", self._init_quantized_weight),
                               ("bias_quantize", self._init_quantized_bias)):
            if desc.endswith(suffix):
                method(desc, arr)
                self._verbose_print(desc, suffix, arr)
                return
        self._init_default(desc, arr)

    def _legacy_init(self, name, arr) -> None:
        """``init(str, arr)``: MXNet's older name-pattern rules (deprecated there too)."""
        warnings.warn("Calling initializer with init(str, NDArray) has been deprecated. "
                      "please use init(mx.init.InitDesc(...), NDArray) instead.",
                      DeprecationWarning, stacklevel=3)
        if not isinstance(name, str):
            raise TypeError("name must be string")
        if not isinstance(arr, NDArray):
            raise TypeError("arr must be NDArray")
        if name.startswith("upsampling"):
            self._init_bilinear(name, arr)
        elif name.startswith("stn_loc") and name.endswith("weight"):
            self._init_zero(name, arr)
        elif name.startswith("stn_loc") and name.endswith("bias"):
            self._init_loc_bias(name, arr)
        else:
            for suffix, method in (("bias", self._init_bias), ("gamma", self._init_gamma),
                                   ("beta", self._init_beta), ("weight", self._init_weight),
                                   ("moving_mean", self._init_zero),
                                   ("moving_var", self._init_one),
                                   ("moving_inv_var", self._init_zero),
                                   ("moving_avg", self._init_zero),
                                   ("min", self._init_zero), ("max", self._init_one)):
                if name.endswith(suffix):
                    method(name, arr)
                    return
            self._init_default(name, arr)

    def _init_bilinear(self, name, arr) -> None:
        arr[:] = bilinear_kernel(name, arr.shape)

    def _init_loc_bias(self, name, arr) -> None:
        if arr.shape[0] != 6:
            raise InitializerError(f"{name}: an stn_loc bias needs 6 entries, got {arr.shape}")
        arr[:] = np.array([1.0, 0, 0, 0, 1.0, 0])

    def _init_zero(self, _, arr) -> None:
        arr[:] = 0.0

    def _init_one(self, _, arr) -> None:
        arr[:] = 1.0

    def _init_bias(self, _, arr) -> None:
        arr[:] = 0.0

    def _init_quantized_bias(self, _, arr) -> None:
        arr[:] = 0

    def _init_gamma(self, _, arr) -> None:
        arr[:] = 1.0

    def _init_beta(self, _, arr) -> None:
        arr[:] = 0.0

    def _init_weight(self, name, arr) -> None:
        raise InitializerError(f"{type(self).__name__} does not define how to initialise the "
                               f"weight {name!s}; subclasses must override _init_weight")

    def _init_quantized_weight(self, _, arr) -> None:
        arr[:] = _nd_random.randint(-127, 127, shape=arr.shape, dtype="int32").asnumpy()

    def _init_default(self, name, _) -> None:
        raise InitializerError(
            f"Unknown initialization pattern for {name}. Default initialization is now "
            'limited to "weight", "bias", "gamma" (1.0), and "beta" (0.0). Please use '
            "mx.sym.Variable(init=mx.init.*) to set initialization pattern")

    def __eq__(self, other):
        if not isinstance(other, Initializer):
            return NotImplemented
        return type(self) is type(other) and self._kwargs == other._kwargs

    __hash__ = None

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._kwargs.items())
        return f"{type(self).__name__}({args})"


def _without_init(desc, owner) -> InitDesc:
    """``desc`` minus an ``'__init__'`` attribute naming ``owner`` (no endless recursion)."""
    if not isinstance(desc, InitDesc):
        return desc
    attrs = {k: v for k, v in desc.attrs.items() if not (k == "__init__" and v is owner)}
    return InitDesc(str(desc), attrs, desc.global_init)


def random_fill(kind: str, a: float, b: float, arr: NDArray) -> None:
    """Fill ``arr`` in place with U[a, b) (``kind='uniform'``) or N(a, b^2) draws."""
    dt = np.dtype(arr.dtype)
    dtype = dt.name if dt.kind == "f" else "float32"
    if kind == "uniform":
        _nd_random.uniform(a, b, shape=arr.shape, dtype=dtype, out=arr)
    else:
        _nd_random.normal(a, b, shape=arr.shape, dtype=dtype, out=arr)


def bilinear_kernel(name, shape: tuple) -> np.ndarray:
    """The bilinear-upsampling kernel MXNet's ``Bilinear`` writes into a 4-D weight."""
    if len(shape) != 4:
        raise InitializerError(f"Bilinear initializer needs a 4-D weight (out, in, h, w); "
                               f"{name} has shape {shape}")
    f = np.ceil(shape[3] / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    idx = np.arange(int(np.prod(shape)))
    x = idx % shape[3]
    y = (idx // shape[3]) % shape[2]
    weight = (1 - np.abs(x / f - c)) * (1 - np.abs(y / f - c))
    return weight.astype(np.float32).reshape(shape)


# ---- simple initializers -------------------------------------------------------------------
@register
@alias("zeros")
class Zero(Initializer):
    """Initialise weights to zero."""

    def __init__(self):
        super().__init__()

    def _init_weight(self, _, arr):
        arr[:] = 0


@register
@alias("ones")
class One(Initializer):
    """Initialise weights to one."""

    def __init__(self):
        super().__init__()

    def _init_weight(self, _, arr):
        arr[:] = 1


@register
class Constant(Initializer):
    """Initialise weights to ``value``: a scalar, or an array of the parameter's shape."""

    def __init__(self, value):
        super().__init__(value=value)
        self.value = value

    def _init_weight(self, name, arr):
        if not np.isscalar(self.value):
            val = self.value.asnumpy() if isinstance(self.value, NDArray) else \
                np.asarray(self.value)
            try:
                np.broadcast_to(val, arr.shape)
            except ValueError:
                raise InitializerError(f"Constant: value of shape {val.shape} does not fit "
                                       f"{name} of shape {arr.shape}") from None
            arr[:] = val
            return
        arr[:] = self.value

    def dumps(self) -> str:
        val = self._kwargs["value"]
        if not np.isscalar(val):
            val = val.asnumpy() if isinstance(val, NDArray) else np.asarray(val)
            self._kwargs["value"] = val.tolist()
        return json.dumps([self.__class__.__name__.lower(), self._kwargs])


@register
class Uniform(Initializer):
    """Initialise weights with draws from U[-scale, scale]."""

    def __init__(self, scale: float = 0.07):
        super().__init__(scale=scale)
        self.scale = scale

    def _init_weight(self, _, arr):
        random_fill("uniform", -self.scale, self.scale, arr)


@register
class Normal(Initializer):
    """Initialise weights with draws from N(0, sigma^2)."""

    def __init__(self, sigma: float = 0.01):
        super().__init__(sigma=sigma)
        self.sigma = sigma

    def _init_weight(self, _, arr):
        random_fill("normal", 0.0, self.sigma, arr)


from .initializers_extra import (  # noqa: E402
    Bilinear,
    Load,
    LSTMBias,
    Mixed,
    MSRAPrelu,
    Orthogonal,
    Xavier,
)
