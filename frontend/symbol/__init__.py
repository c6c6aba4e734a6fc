"""``ember.sym``: symbolic twins of every ``nd`` op, for tracing and MXNet's symbol API.

Calling an op on Symbols builds a named node at once (``mx.name.NameManager`` names unnamed
ones: ``fullyconnected0``). As in MXNet, inputs left out become new variables named
``<node name>_<input name>`` (``fc1_weight``, ``bn_moving_mean``); an optional input is made
only when the op's attributes use it (a bias unless ``no_bias``, PReLU's gamma, a softmax
length when ``use_length``).
"""
from ember.ndarray.register import populate as _populate

from .compose import make_function as _make_function
from .executor import Executor  # noqa: F401
from .json_io import load, load_json  # noqa: F401
from .symbol import Group, Symbol, Variable, _bind_fluent, apply, var  # noqa: F401

_populate(globals(), tensor_type=Symbol, factory=_make_function)
_bind_fluent(globals())


def _sym_ufunc(names):
    from ember.ir.emit import _operator
    fwd, rev = _operator(names), _operator(names, reflected=True)

    def fn(lhs, rhs):
        if isinstance(lhs, Symbol):
            return fwd(lhs, rhs)
        if isinstance(rhs, Symbol):
            return rev(rhs, lhs)
        raise TypeError(f"type {type(lhs).__name__} and {type(rhs).__name__} not supported")
    return fn


def _bind_ufuncs():
    """``sym.maximum(x, 1.0)`` etc. take a Symbol or a number on either side, like ``nd``."""
    from ember.ir.emit import OPERATORS as BINARY
    from ember.ndarray.ufuncs import _EXTRA
    pairs = {"add": "add", "subtract": "sub", "multiply": "mul", "divide": "truediv",
             "true_divide": "truediv", "modulo": "mod", "power": "pow", "equal": "eq",
             "not_equal": "ne", "greater": "gt", "greater_equal": "ge", "lesser": "lt",
             "lesser_equal": "le"}
    for fname, key in pairs.items():
        globals()[fname] = _sym_ufunc(BINARY[key])
    for fname, names in _EXTRA.items():
        globals()[fname] = _sym_ufunc(names)


_bind_ufuncs()
from . import _internal, contrib, random  # noqa: E402,F401


from ember.ir import emit as _emit_module  # noqa: E402

from .userloc import EMBER_DIRS as _EMBER_DIRS  # noqa: E402,F401
from .userloc import user_loc as _user_loc  # noqa: E402

_emit_module.LOCATOR = _user_loc
