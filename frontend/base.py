"""Basic names MXNet code imports from ``mxnet.base``."""
import numbers

import numpy as np

from ember.ir.errors import AttrError, EmberError, ShapeError

MXNetError = EmberError  # what MXNet users catch


class NotImplementedForSymbol(MXNetError):
    """An NDArray feature that a Symbol does not have (raised while tracing)."""

    def __init__(self, function, alias, *args):
        super().__init__(f"Function {getattr(function, '__name__', function)}"
                         f"{' (namely operator ' + repr(alias) + ')' if alias else ''} "
                         "is not implemented for Symbol and only available in NDArray.")
        self.function, self.alias, self.call_args = function, alias, args


class TracedValueError(MXNetError, AttributeError, TypeError):
    """A value (``asnumpy()``, ``float()``) asked of a Symbol: while tracing there is none."""


def name_block_in_error(exc: BaseException, block) -> None:
    """Prefix ``exc``'s message with the Gluon block it was raised in (``dense0 (Dense): ``).

    Called by every ``Block.__call__`` an error passes through: the innermost block names
    itself; an outer block adds ``in <outer>`` only when its name is not already the start of
    the inner one (MXNet's nested prefixes, ``sequential0_dense0``, already show the path).
    """
    if len(exc.args) != 1 or not isinstance(exc.args[0], str):
        return
    name = block.name
    seen = getattr(exc, "_ember_blocks", None)
    if seen is None:
        exc._ember_blocks = [name]
        if not exc.args[0].startswith((name + ":", name + " ")):
            exc.args = (f"{name} ({type(block).__name__}): {exc.args[0]}",)
        return
    inner = seen[-1]
    seen.append(name)
    if inner.startswith(name):
        return
    head, sep, rest = exc.args[0].partition(": ")
    if sep and head.startswith(seen[0]):
        exc.args = (f"{head} in {name}: {rest}",)


integer_types = (int, np.integer)
numeric_types = (float, int, np.generic)
string_types = (str,)
py_str = str
_Null = None
mx_real_t = np.float32  # MXNet's default real type (mxnet.base.mx_real_t)


def _as_list(obj) -> list | tuple:
    """``obj`` itself when it is a list or tuple, else ``[obj]`` (MXNet's helper)."""
    return obj if isinstance(obj, list | tuple) else [obj]


__all__ = ["MXNetError", "EmberError", "ShapeError", "AttrError", "TracedValueError",
           "name_block_in_error", "integer_types",
           "numeric_types", "string_types", "numbers"]
