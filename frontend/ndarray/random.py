"""``mx.nd.random``: samplers drawing from ember's seeded random state (``mx.random.seed``).

Each function picks a registry op by its parameters, as MXNet's ``random.py`` does: numbers
select ``_random_<dist>`` (``shape`` samples), arrays select ``_sample_<dist>`` (``shape``
samples per parameter element, output shape = parameters' shape + ``shape``). Every other
``_random_*`` registry op appears here without its prefix (``uniform_like``, ``pdf_normal``).

:func:`namespace` builds the same functions over any op-function factory; ``mx.sym.random``
is it over the Symbol factory, so ``F.random.normal`` works in ``hybrid_forward`` either way.
"""
from __future__ import annotations

import numbers

from ember import trace_state
from ember.base import MXNetError
from ember.ir import all_names, get_op
from ember.ir.emit import Sym
from ember.ir.opset_random import DISTS

from .ndarray import NDArray
from .register import make_function


def _shape(shape, default):
    if shape is None or (isinstance(shape, tuple | list) and not len(shape)):
        return default
    return (int(shape),) if isinstance(shape, numbers.Integral) \
        else tuple(int(d) for d in shape)


def namespace(factory, tensor_types: tuple, eager: bool, get_prob: bool) -> dict:
    """The ``random`` namespace over ``factory(op, name)`` (nd or sym op functions).

    ``eager``: calls take ``ctx`` and ``out``; ``get_prob``: ``multinomial``'s default
    (False in ``nd``, True in ``sym``, as in MXNet).
    """
    fns: dict = {}

    def op(name):
        if name not in fns:
            fns[name] = factory(get_op(name), name)
        return fns[name]

    def placement(ctx, out):
        return {"ctx": ctx, "out": out} if eager else {}

    def draw(dist, params, shape, dtype, ctx, out, kw):
        """MXNet's _random_helper: all numbers or all arrays, never a mix."""
        is_t = [isinstance(p, tensor_types) for p in params]
        if any(is_t) and not all(is_t) or not all(
                t or isinstance(p, numbers.Real) for t, p in zip(is_t, params)):
            kinds = ", ".join(type(p).__name__ for p in params)
            raise MXNetError(f"random.{dist}: distribution parameters must be all numbers or "
                             f"all arrays of one kind, got {kinds}")
        if dtype is None and out is not None:
            dtype = out.dtype
        dtype = "float32" if dtype is None else dtype
        if all(is_t):
            return op(f"_sample_{dist}")(*params, shape=_shape(shape, ()), dtype=dtype,
                                         **placement(None, out), **kw)
        if shape is None and out is not None:
            shape = out.shape
        attrs = {n: float(p) for n, p in zip(DISTS[dist][0], params)}
        return op(f"_random_{dist}")(shape=_shape(shape, (1,)), dtype=dtype, **attrs,
                                     **placement(ctx, out), **kw)

    def uniform(low=0.0, high=1.0, shape=None, dtype=None, ctx=None, out=None, **kw):
        """Samples of U[low, high) (arrays: one distribution per element)."""
        return draw("uniform", [low, high], shape, dtype, ctx, out, kw)

    def normal(loc=0.0, scale=1.0, shape=None, dtype=None, ctx=None, out=None, **kw):
        """Samples of N(loc, scale^2) (arrays: one distribution per element)."""
        return draw("normal", [loc, scale], shape, dtype, ctx, out, kw)

    def randn(*shape, loc=0.0, scale=1.0, dtype=None, ctx=None, out=None, **kw):
        """Normal samples of shape ``shape`` (positional); with no shape but ``data=``, in
        the shape of ``data``."""
        if len(shape) == 1 and isinstance(shape[0], tuple | list):
            shape = tuple(shape[0])
        if not shape and "data" in kw and not isinstance(loc, tensor_types):
            return op("_random_normal_like")(kw.pop("data"), loc=float(loc),
                                             scale=float(scale), dtype=dtype, **kw)
        return draw("normal", [loc, scale], shape or None, dtype, ctx, out, kw)

    def poisson(lam=1.0, shape=None, dtype=None, ctx=None, out=None, **kw):
        """Samples of Poisson(lam), as floats."""
        return draw("poisson", [lam], shape, dtype, ctx, out, kw)

    def exponential(scale=1.0, shape=None, dtype=None, ctx=None, out=None, **kw):
        """Samples of the exponential distribution of mean ``scale`` (rate 1/scale)."""
        return draw("exponential", [1.0 / scale], shape, dtype, ctx, out, kw)

    def gamma(alpha=1.0, beta=1.0, shape=None, dtype=None, ctx=None, out=None, **kw):
        """Samples of Gamma(shape alpha, scale beta)."""
        return draw("gamma", [alpha, beta], shape, dtype, ctx, out, kw)

    def negative_binomial(k=1, p=1.0, shape=None, dtype=None, ctx=None, out=None, **kw):
        """Failures before the k-th success, success probability p, as floats."""
        return draw("negative_binomial", [k, p], shape, dtype, ctx, out, kw)

    def generalized_negative_binomial(mu=1.0, alpha=1.0, shape=None, dtype=None, ctx=None,
                                      out=None, **kw):
        """Negative binomial samples of mean ``mu`` and dispersion ``alpha`` (k = 1/alpha)."""
        return draw("generalized_negative_binomial", [mu, alpha], shape, dtype, ctx, out, kw)

    def multinomial(data, shape=None, get_prob=get_prob, out=None, dtype="int32", **kw):
        """Class indices drawn from the distributions on ``data``'s last axis; with
        ``get_prob``, also their log-probabilities (a list of two)."""
        return op("_sample_multinomial")(data, shape=_shape(shape, ()), get_prob=get_prob,
                                         dtype=dtype, **placement(None, out), **kw)

    def shuffle(data, **kw):
        """A copy of ``data`` with its first axis randomly permuted."""
        return op("_shuffle")(data, **kw)

    def randint(low, high, shape=None, dtype=None, ctx=None, out=None, **kw):
        """Integers drawn uniformly from [low, high) (int32 unless ``dtype`` is int64)."""
        if not all(isinstance(v, numbers.Integral) for v in (low, high)):
            raise MXNetError(f"random.randint: low and high must be integers, got "
                             f"{type(low).__name__} and {type(high).__name__}")
        if dtype is None:
            dtype = out.dtype if out is not None else "int32"
        if shape is None and out is not None:
            shape = out.shape
        return op("_random_randint")(low=int(low), high=int(high), shape=_shape(shape, (1,)),
                                     dtype=dtype, **placement(ctx, out), **kw)

    ns = {f.__name__: f for f in (uniform, normal, randn, poisson, exponential, gamma,
                                  negative_binomial, generalized_negative_binomial,
                                  multinomial, shuffle, randint)}
    for name in all_names():  # uniform_like, pdf_normal, ...: MXNet's _random_ prefix
        if name.startswith("_random_") and name[8:] not in ns:
            ns[name[8:]] = op(name)
    return ns


def _trace_aware(name: str, fn):
    """Inside ``@ember.compile``'s trace, draw in the graph (fresh numbers every run), not
    once at trace time: the ``mx.sym.random`` twin, with NDArray arguments captured."""
    def call(*args, **kw):
        trace = trace_state.current()
        if trace is None or kw.get("out") is not None:
            return fn(*args, **kw)
        from ember.symbol import random as sym_random
        kw.pop("out", None)
        kw.pop("ctx", None)
        if name == "multinomial" and len(args) < 3:  # nd's default, not sym's
            kw.setdefault("get_prob", False)

        def cap(v):
            return trace.capture(v) if isinstance(v, NDArray) else v
        return getattr(sym_random, name)(*map(cap, args), **{k: cap(v) for k, v in kw.items()})
    call.__name__, call.__qualname__, call.__doc__ = name, name, fn.__doc__
    return call


_NS = {k: _trace_aware(k, f) for k, f in
       namespace(make_function, (NDArray, Sym), eager=True, get_prob=False).items()}
globals().update(_NS)
__all__ = sorted(_NS)
