"""``ember.gluon.rnn``: recurrent cells (one step at a time) and layers (whole sequences)."""
from .rnn_cell import (  # noqa: F401
    GRUCell,
    HybridRecurrentCell,
    LSTMCell,
    RecurrentCell,
    RNNCell,
)
from .rnn_layer import GRU, LSTM, RNN  # noqa: F401
from .rnn_wrappers import (  # noqa: F401
    BidirectionalCell,
    DropoutCell,
    HybridSequentialRNNCell,
    ModifierCell,
    ResidualCell,
    SequentialRNNCell,
    ZoneoutCell,
)
