"""``mx.gluon.contrib``: MXNet's contributed Gluon layers (the ``nn`` subset ember has)."""
from . import nn  # noqa: F401
