"""``mx.gluon.contrib``: MXNet 1.9.1's contributed Gluon layers, cells, samplers, datasets
and the Estimator training loop."""
from . import nn
from . import rnn
from . import cnn
from . import data
from . import estimator
