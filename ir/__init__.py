"""ember.ir: tensor types, the op registry, and (with the compiler) the graph IR."""
from .errors import AttrError, EmberError, ShapeError
from .ops import REQUIRED, OpDef, OpKind, all_names, all_ops, defop, get_op, has_op
from .types import TensorType

__all__ = ["AttrError", "EmberError", "ShapeError", "REQUIRED", "OpDef", "OpKind", "all_names",
           "all_ops", "defop", "get_op", "has_op", "TensorType"]
