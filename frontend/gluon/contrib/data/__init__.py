"""``mx.gluon.contrib.data``: IntervalSampler and the text datasets (``data.text``)."""
from . import sampler, text
from .sampler import IntervalSampler

__all__ = ["IntervalSampler"]
