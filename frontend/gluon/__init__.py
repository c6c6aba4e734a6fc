"""``ember.gluon``: MXNet Gluon's high-level interface (blocks, parameters, training)."""
from . import data, loss, nn  # noqa: F401
from .block import Block, HybridBlock  # noqa: F401
from .parameter import Constant, DeferredInitializationError, Parameter, ParameterDict  # noqa: F401
from .trainer import Trainer  # noqa: F401
