"""Imports every opset module so that each registers its ops (done once, lazily)."""
from . import (  # noqa: F401
    opset_elemwise,
    opset_index,
    opset_init,
    opset_reduce,
)
