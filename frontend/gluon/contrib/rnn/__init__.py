"""``mx.gluon.contrib.rnn``: convolutional RNN/LSTM/GRU cells (1-D, 2-D, 3-D),
VariationalDropoutCell, LSTMPCell and ``rnn_cell.dynamic_unroll`` (MXNet 1.9.1's)."""
from . import conv_rnn_cell, rnn_cell
from .conv_rnn_cell import *
from .rnn_cell import LSTMPCell, VariationalDropoutCell

__all__ = conv_rnn_cell.__all__ + ["VariationalDropoutCell", "LSTMPCell"]
