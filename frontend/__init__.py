"""ember: MXNet 1.x Gluon's programming model on NumPy 2, with a graph compiler underneath.

``import ember as mx`` and MXNet code runs unchanged.
"""
import sys as _sys

__version__ = "0.1.0"

from . import base, context  # noqa: E402
from .base import EmberError, MXNetError  # noqa: E402,F401
from .context import Context, cpu, cpu_pinned, current_context, gpu, num_gpus  # noqa: E402,F401

from . import autograd  # noqa: E402
from . import ndarray  # noqa: E402
from . import random  # noqa: E402

nd = ndarray
_sys.modules[__name__ + ".nd"] = ndarray

# from . import test_utils  # noqa: E402,F401
