"""``mx.random``: seeding and the same samplers as ``mx.nd.random``."""
from ember.ir import rng as _rng
from ember.ndarray.random import (  # noqa: F401
    exponential,
    gamma,
    normal,
    poisson,
    randint,
    randn,
    shuffle,
    uniform,
)


def seed(seed_state: int, ctx="all") -> None:
    """Seed ember's random state (and NumPy's global one, which initializers may use)."""
    import numpy as np
    _rng.seed(seed_state)
    np.random.seed(int(seed_state) % (2 ** 32))
