"""The random state random ops draw from (``ember.random.seed`` resets it).

One NumPy generator serves every sampler, eager or compiled, so a seed reproduces a whole
run. Seeds are any integers, negative ones included (MXNet takes a signed int); they are
read modulo 2**64, so distinct seeds of MXNet's range give distinct streams.
"""
from __future__ import annotations

import numpy as np

_state = {"gen": np.random.default_rng(0)}


def generator() -> np.random.Generator:
    """The current NumPy generator."""
    return _state["gen"]


def seed(seed_state: int) -> None:
    """Reseed: the same seed gives the same stream of random numbers."""
    _state["gen"] = np.random.default_rng(int(seed_state) % (1 << 64))
