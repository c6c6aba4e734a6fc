"""``mx.random``: seeding, and the samplers of ``mx.nd.random``."""
from ember.base import MXNetError
from ember.ir import rng as _rng
from ember.ndarray import random as _nd_random

globals().update(_nd_random._NS)


class SeedError(MXNetError, ValueError):
    """``mx.random.seed`` got something other than an integer."""


def seed(seed_state: int, ctx="all") -> None:
    """Seed ember's random state (and NumPy's global one, which initializers and data
    transforms use). Any integer works, negative ones included, as in MXNet; ``ctx`` is
    accepted for MXNet's signature (one random state serves every context)."""
    import numbers

    import numpy as np
    if isinstance(seed_state, bool) or not isinstance(seed_state, numbers.Integral):
        raise SeedError(f"mx.random.seed: seed_state must be an integer, got "
                        f"{type(seed_state).__name__} {seed_state!r}")
    _rng.seed(int(seed_state))
    np.random.seed(int(seed_state) % (2 ** 32))
