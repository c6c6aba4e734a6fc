"""Imports every opset module so that each registers its ops (done once, lazily)."""
from . import (  # noqa: F401
    opset_conv,
    opset_ctc,
    opset_elemwise,
    opset_gather,
    opset_index,
    opset_init,
    opset_layout,
    opset_linalg,
    opset_nn,
    opset_norm,
    opset_optim,
    opset_reduce,
    opset_shape,
    opset_slice,
    opset_sort,
    opset_unary,
)
