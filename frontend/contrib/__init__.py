"""``mx.contrib``: MXNet's contrib namespaces (``nd``/``ndarray``, ``sym``/``symbol``) and
``autograd`` (MXNet's ``contrib.autograd`` became ``mx.autograd``; the names it has are the
same functions here)."""
from ember import autograd  # noqa: F401
from ember.ndarray import contrib as ndarray
from ember.symbol import contrib as symbol

nd, sym = ndarray, symbol
