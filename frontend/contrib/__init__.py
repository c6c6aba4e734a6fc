"""``mx.contrib``: MXNet's contrib namespaces (``nd``/``ndarray``, ``sym``/``symbol``),
``autograd`` (MXNet's ``contrib.autograd`` became ``mx.autograd``; the names it has are the
same functions here) and ``text`` (vocabularies and token embeddings)."""
from ember import autograd  # noqa: F401
from ember.ndarray import contrib as ndarray
from ember.symbol import contrib as symbol

from . import text  # noqa: F401

nd, sym = ndarray, symbol
