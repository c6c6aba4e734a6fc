"""Basic names MXNet code imports from ``mxnet.base``."""
import numbers

import numpy as np

from ember.ir.errors import AttrError, EmberError, ShapeError

MXNetError = EmberError  # what MXNet users catch

integer_types = (int, np.integer)
numeric_types = (float, int, np.generic)
string_types = (str,)
py_str = str
_Null = None

__all__ = ["MXNetError", "EmberError", "ShapeError", "AttrError", "integer_types",
           "numeric_types", "string_types", "numbers"]
