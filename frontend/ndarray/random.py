"""``mx.nd.random``: draws from ember's seeded random state (see ``ember.random.seed``)."""
from __future__ import annotations

from .creation import _create, _dt, _shape


def _s(shape):
    return (1,) if shape is None else _shape(shape)


def uniform(low=0.0, high=1.0, shape=None, dtype=None, ctx=None, out=None, **kw):
    """Samples from U[low, high)."""
    return _create("random_uniform", ctx, low=float(low), high=float(high), shape=_s(shape),
                   dtype=_dt(dtype), out=out)


def normal(loc=0.0, scale=1.0, shape=None, dtype=None, ctx=None, out=None, **kw):
    """Samples from N(loc, scale^2)."""
    return _create("random_normal", ctx, loc=float(loc), scale=float(scale), shape=_s(shape),
                   dtype=_dt(dtype), out=out)


def randn(*shape, loc=0.0, scale=1.0, dtype=None, ctx=None, **kw):
    """Standard normal samples of the given shape."""
    return normal(loc, scale, shape, dtype, ctx)


def randint(low, high, shape=None, dtype=None, ctx=None, out=None, **kw):
    """Integers drawn uniformly from [low, high)."""
    return _create("random_randint", ctx, low=int(low), high=int(high), shape=_s(shape),
                   dtype=dtype or "int32", out=out)


def exponential(scale=1.0, shape=None, dtype=None, ctx=None, out=None, **kw):
    """Samples from an exponential distribution with mean ``scale``."""
    return _create("random_exponential", ctx, lam=1.0 / float(scale), shape=_s(shape),
                   dtype=_dt(dtype), out=out)


def gamma(alpha=1.0, beta=1.0, shape=None, dtype=None, ctx=None, out=None, **kw):
    """Samples from Gamma(alpha, beta)."""
    return _create("random_gamma", ctx, alpha=float(alpha), beta=float(beta), shape=_s(shape),
                   dtype=_dt(dtype), out=out)


def poisson(lam=1.0, shape=None, dtype=None, ctx=None, out=None, **kw):
    """Samples from Poisson(lam)."""
    return _create("random_poisson", ctx, lam=float(lam), shape=_s(shape), dtype=_dt(dtype),
                   out=out)


def shuffle(data, **kw):
    """A copy of ``data`` with its first axis randomly permuted."""
    from ember.ir import get_op

    from .ndarray import invoke
    return invoke(get_op("shuffle"), [data], {})
