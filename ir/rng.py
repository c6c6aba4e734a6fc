"""The random state random ops draw from (``ember.random.seed`` resets it)."""
from __future__ import annotations

import numpy as np

_state = {"gen": np.random.default_rng(0)}


def generator() -> np.random.Generator:
    """The current NumPy generator."""
    return _state["gen"]


def seed(seed_state: int) -> None:
    """Reseed: the same seed gives the same stream of random numbers."""
    _state["gen"] = np.random.default_rng(int(seed_state))
