"""``IntervalSampler`` (MXNet 1.9.1's ``gluon.contrib.data.sampler``)."""
from __future__ import annotations

from collections.abc import Iterator

from ember.base import MXNetError

from ...data import sampler

__all__ = ["IntervalSampler"]


class SamplerError(MXNetError, AssertionError):
    """An impossible sampler (MXNet asserts); an MXNetError that is also an AssertionError."""


class IntervalSampler(sampler.Sampler):
    """Samples ``[0, length)`` at a fixed ``interval``: 0, i, 2i, ...; with ``rollover``
    (the default) it then starts again from 1, 2, ... until every index was visited.

    >>> list(IntervalSampler(13, interval=3))
    [0, 3, 6, 9, 12, 1, 4, 7, 10, 2, 5, 8, 11]
    >>> list(IntervalSampler(13, interval=3, rollover=False))
    [0, 3, 6, 9, 12]
    """

    def __init__(self, length: int, interval: int, rollover: bool = True):
        if interval > length:
            raise SamplerError(f"Interval {interval} must be smaller than or equal to length "
                             f"{length}")
        self._length = length
        self._interval = interval
        self._rollover = rollover

    def __iter__(self) -> Iterator[int]:
        for start in range(self._interval if self._rollover else 1):
            yield from range(start, self._length, self._interval)

    def __len__(self) -> int:
        return self._length
