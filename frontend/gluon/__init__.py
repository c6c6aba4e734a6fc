"""``ember.gluon``: MXNet Gluon's high-level interface (blocks, parameters, training)."""
from . import contrib, data, loss, nn, utils  # noqa: F401
from . import rnn  # noqa: F401
from . import model_zoo  # noqa: F401
from .block import Block, HybridBlock  # noqa: F401
from .symbol_block import SymbolBlock  # noqa: F401
from .parameter import Constant, DeferredInitializationError, Parameter, ParameterDict  # noqa: F401
from .trainer import Trainer  # noqa: F401
