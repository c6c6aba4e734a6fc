"""``mx.sym.random``: ``mx.nd.random``'s samplers emitting graph nodes (the same factory).

Scalar parameters make ``_random_<dist>`` nodes, Symbol parameters ``_sample_<dist>`` nodes;
``uniform_like``, ``pdf_normal`` ... are the ``_random_*`` registry ops without the prefix.
``multinomial`` returns the log-probabilities too unless ``get_prob=False``, as in MXNet.
"""
from ember.ndarray.random import namespace as _namespace

from .compose import make_function as _make_function
from .symbol import Symbol as _Symbol

globals().update(_namespace(_make_function, (_Symbol,), eager=False, get_prob=True))
