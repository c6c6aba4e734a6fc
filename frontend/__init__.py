"""ember: MXNet 1.x Gluon's programming model on NumPy 2, with a graph compiler underneath.

``import ember as mx`` and MXNet code runs unchanged.
"""
import os as _os
import sys as _sys

# numba's OpenMP threads must sleep, not spin, between parallel kernels: spinning threads
# fight OpenBLAS's over the cores and made convolution nets 2-3x slower (set before numba
# loads libgomp; a user's own setting wins)
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

from . import base, context
from .base import EmberError, MXNetError
from .context import Context, cpu, cpu_pinned, current_context, gpu, num_gpus

from . import autograd, ndarray, random
from . import name, runtime, util
from .util import is_np_array, is_np_shape, np_shape, set_np_shape, use_np, use_np_shape

nd = ndarray
_sys.modules[__name__ + ".nd"] = ndarray

from . import symbol

sym = symbol
_sys.modules[__name__ + ".sym"] = symbol
from . import contrib
from . import operator

from . import initializer, lr_scheduler, metric, optimizer

init = initializer
from . import gluon, test_utils
from . import kvstore, distributed

kv = kvstore
from . import io, module, recordio
from . import image
img = image

mod = module
from . import model
from .compile import compile
from . import numpy

np = numpy
from .aot import export, load
from . import viz
from . import onnx
