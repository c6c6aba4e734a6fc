"""``mx.np.random``: NumPy-style samplers (``size=``) drawing from ember's seeded state."""
from __future__ import annotations

from ember.ndarray import random as _ndr


def uniform(low=0.0, high=1.0, size=None, dtype=None, ctx=None):
    """Samples from U[low, high)."""
    return _ndr.uniform(low, high, shape=size if size is not None else (1,), dtype=dtype,
                        ctx=ctx)


def normal(loc=0.0, scale=1.0, size=None, dtype=None, ctx=None):
    """Samples from N(loc, scale^2)."""
    return _ndr.normal(loc, scale, shape=size if size is not None else (1,), dtype=dtype,
                       ctx=ctx)


def randint(low, high=None, size=None, dtype=None, ctx=None):
    """Integers from [low, high)."""
    if high is None:
        low, high = 0, low
    return _ndr.randint(low, high, shape=size if size is not None else (1,), dtype=dtype,
                        ctx=ctx)
