"""``ember.nd``: eager NDArrays and one function per registry op (MXNet's ``mx.nd``)."""
from ember.ir import all_names as _all_names

from . import contrib, random, register, sparse  # noqa: F401
from .creation import arange, eye, full, linspace, ones, zeros  # noqa: F401
from .extras import *  # noqa: F401,F403
from .ndarray import NDArray, array, empty, invoke, py_slice, waitall  # noqa: F401
from .ufuncs import *  # noqa: F401,F403
from .utils import load, load_frombuffer, save  # noqa: F401

register.populate(globals())
from . import indexing, methods, state  # noqa: E402,F401

methods.bind_fluent(globals())
from . import _internal  # noqa: E402,F401

_all_names()  # registry loaded; nd.* complete
