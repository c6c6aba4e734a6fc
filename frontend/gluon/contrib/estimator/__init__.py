"""``mx.gluon.contrib.estimator``: the Estimator training loop, its batch processor and
event handlers (MXNet 1.9.1's)."""
from . import batch_processor, estimator, event_handler
from .batch_processor import *
from .estimator import *
from .event_handler import *
