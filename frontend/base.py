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


integer_types = (int, np.integer)
numeric_types = (float, int, np.generic)
string_types = (str,)
py_str = str
_Null = None

__all__ = ["MXNetError", "EmberError", "ShapeError", "AttrError", "integer_types",
           "numeric_types", "string_types", "numbers"]
