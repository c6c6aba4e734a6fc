"""MXNet 1.9.1's ``gluon.contrib.rnn.rnn_cell``: VariationalDropoutCell, LSTMPCell and
``dynamic_unroll``.

Variational dropout (Gal and Ghahramani, "A Theoretically Grounded Application of Dropout in
Recurrent Neural Networks", 2016) draws one mask per sequence for inputs, states and outputs
and keeps it over all time steps. LSTMP (Sak et al., "Long Short-Term Memory Recurrent Neural
Network Architectures for Large Scale Acoustic Modeling", 2014) projects the hidden state
through ``h2r_weight`` before it recurs. ``dynamic_unroll`` is MXNet's ``foreach``-based
unroll; ember traces Python loops, so here it is a loop over the time axis, with the same
results (states frozen past each sequence's ``valid_length``, padded outputs zero).
"""
from __future__ import annotations

from ember import ndarray, symbol
from ember.base import MXNetError

from ...rnn.rnn_cell import (
    _TENSORS,
    HybridRecurrentCell,
    _as_list,
    _format_sequence,
    _get_begin_state,
    _merge,
)
from ...rnn.rnn_wrappers import BidirectionalCell, ModifierCell, SequentialRNNCell

__all__ = ["VariationalDropoutCell", "LSTMPCell", "dynamic_unroll"]


def _mask_padded(F, steps, valid_length):
    """Zero each sequence's steps at and past its ``valid_length`` (MXNet's SequenceMask);
    ``where`` with a per-sample (N,) condition selects whole samples."""
    return [F.where(valid_length > t, s, F.zeros_like(s)) for t, s in enumerate(steps)]


class VariationalDropoutCell(ModifierCell):
    """Applies variational dropout to ``base_cell``: the masks for inputs, states (the first
    state, ``h``) and outputs are drawn at the first step and reused until ``reset()``
    (``unroll`` resets), so every time step of a sequence drops the same units.

    Parameters: ``base_cell``, ``drop_inputs``, ``drop_states``, ``drop_outputs`` (rates;
    0 turns that dropout off). While a hybridized cell is traced the masks live inside the
    compiled step, which draws new ones at each call (as MXNet's cached graph does).
    """

    def __init__(self, base_cell, drop_inputs: float = 0., drop_states: float = 0.,
                 drop_outputs: float = 0.):
        if drop_states and isinstance(base_cell, BidirectionalCell):
            raise MXNetError("BidirectionalCell doesn't support variational state dropout. "
                             "Please add VariationalDropoutCell to the cells underneath "
                             "instead.")
        if drop_states and isinstance(base_cell, SequentialRNNCell) and any(
                isinstance(c, BidirectionalCell) for c in base_cell._children.values()):
            raise MXNetError("Bidirectional SequentialRNNCell doesn't support variational "
                             "state dropout. Please add VariationalDropoutCell to the cells "
                             "underneath instead.")
        super().__init__(base_cell)
        self.drop_inputs = drop_inputs
        self.drop_states = drop_states
        self.drop_outputs = drop_outputs
        self.drop_inputs_mask = None
        self.drop_states_mask = None
        self.drop_outputs_mask = None

    def _alias(self):
        return "vardrop"

    def reset(self):
        super().reset()
        self.drop_inputs_mask = None
        self.drop_states_mask = None
        self.drop_outputs_mask = None

    def _mask(self, F, attr: str, p: float, like):
        """The mask stored in ``attr`` (drawn now if absent); traced masks are not kept."""
        mask = getattr(self, attr)
        tracing = F is symbol
        if mask is None or tracing or isinstance(mask, symbol.Symbol):
            mask = F.Dropout(F.ones_like(like), p=p)
            if not tracing:
                setattr(self, attr, mask)
        return mask

    def hybrid_forward(self, F, inputs, states):
        if self.drop_states:
            states = list(states)   # only h, always the first state, is dropped
            states[0] = states[0] * self._mask(F, "drop_states_mask", self.drop_states,
                                               states[0])
        if self.drop_inputs:
            inputs = inputs * self._mask(F, "drop_inputs_mask", self.drop_inputs, inputs)
        next_output, next_states = self.base_cell(inputs, states)
        if self.drop_outputs:
            next_output = next_output * self._mask(F, "drop_outputs_mask", self.drop_outputs,
                                                   next_output)
        return next_output, next_states

    def __repr__(self):
        return (f"{type(self).__name__}(p_out = {self.drop_outputs}, "
                f"p_state = {self.drop_states})")

    def unroll(self, length, inputs, begin_state=None, layout="NTC", merge_outputs=None,
               valid_length=None):
        """Unroll over ``length`` steps. Without state dropout the input and output masks
        are applied to whole sequences at once (one mask broadcast over the time axis)."""
        if self.drop_states:
            return super().unroll(length, inputs, begin_state, layout, merge_outputs,
                                  valid_length=valid_length)
        self.reset()
        inputs, axis, F, batch_size = _format_sequence(length, inputs, layout, True)
        states = _get_begin_state(self, F, begin_state, inputs, batch_size)
        if self.drop_inputs:
            inputs = F.Dropout(inputs, p=self.drop_inputs, axes=(axis,))
        steps = _as_list(F.split(inputs, axis=axis, num_outputs=length, squeeze_axis=True))
        self.base_cell._modified = False
        try:
            outputs, states = self.base_cell.unroll(length, steps, states, layout,
                                                    merge_outputs=True,
                                                    valid_length=valid_length)
        finally:
            self.base_cell._modified = True
        if self.drop_outputs:
            outputs = F.Dropout(outputs, p=self.drop_outputs, axes=(axis,))
        if merge_outputs is None:
            merge_outputs = isinstance(outputs, _TENSORS)
        if not merge_outputs:
            outputs = _as_list(F.split(outputs, axis=axis, num_outputs=length,
                                       squeeze_axis=True))
        return outputs, states


class LSTMPCell(HybridRecurrentCell):
    """LSTM with a projected recurrent state (LSTMP, Sak et al. 2014):
    ``r_t = W_hr h_t`` feeds back instead of ``h_t``.

    Parameters ``i2h_weight (4*hidden, input)``, ``h2h_weight (4*hidden, projection)``,
    ``h2r_weight (projection, hidden)``, ``i2h_bias``, ``h2h_bias (4*hidden,)``; gates
    (i, f, c, o). States ``[r (N, projection_size), c (N, hidden_size)]``; the output is
    ``r_t``.
    """

    def __init__(self, hidden_size: int, projection_size: int, i2h_weight_initializer=None,
                 h2h_weight_initializer=None, h2r_weight_initializer=None,
                 i2h_bias_initializer="zeros", h2h_bias_initializer="zeros",
                 input_size: int = 0, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        self._hidden_size = hidden_size
        self._input_size = input_size
        self._projection_size = projection_size
        self.i2h_weight = self.params.get("i2h_weight", shape=(4 * hidden_size, input_size),
                                          init=i2h_weight_initializer,
                                          allow_deferred_init=True)
        self.h2h_weight = self.params.get("h2h_weight",
                                          shape=(4 * hidden_size, projection_size),
                                          init=h2h_weight_initializer,
                                          allow_deferred_init=True)
        self.h2r_weight = self.params.get("h2r_weight", shape=(projection_size, hidden_size),
                                          init=h2r_weight_initializer,
                                          allow_deferred_init=True)
        self.i2h_bias = self.params.get("i2h_bias", shape=(4 * hidden_size,),
                                        init=i2h_bias_initializer, allow_deferred_init=True)
        self.h2h_bias = self.params.get("h2h_bias", shape=(4 * hidden_size,),
                                        init=h2h_bias_initializer, allow_deferred_init=True)

    def state_info(self, batch_size=0):
        return [{"shape": (batch_size, self._projection_size), "__layout__": "NC"},
                {"shape": (batch_size, self._hidden_size), "__layout__": "NC"}]

    def _alias(self):
        return "lstmp"

    def __repr__(self):
        shape, proj = self.i2h_weight.shape, self.h2r_weight.shape
        return (f"{type(self).__name__}({shape[1] if shape[1] else None} -> {shape[0]} -> "
                f"{proj[0]})")

    def hybrid_forward(self, F, inputs, states, i2h_weight, h2h_weight, h2r_weight,
                       i2h_bias, h2h_bias):
        prefix = f"t{self._counter}_"
        n = 4 * self._hidden_size
        i2h = F.FullyConnected(data=inputs, weight=i2h_weight, bias=i2h_bias, num_hidden=n,
                               name=prefix + "i2h")
        h2h = F.FullyConnected(data=states[0], weight=h2h_weight, bias=h2h_bias,
                               num_hidden=n, name=prefix + "h2h")
        gi, gf, gc, go = _as_list(F.SliceChannel(i2h + h2h, num_outputs=4,
                                                 name=prefix + "slice"))
        in_gate = F.Activation(gi, act_type="sigmoid", name=prefix + "i")
        forget_gate = F.Activation(gf, act_type="sigmoid", name=prefix + "f")
        in_transform = F.Activation(gc, act_type="tanh", name=prefix + "c")
        out_gate = F.Activation(go, act_type="sigmoid", name=prefix + "o")
        next_c = F.elemwise_add(forget_gate * states[1], in_gate * in_transform,
                                name=prefix + "state")
        hidden = F.elemwise_mul(out_gate, F.Activation(next_c, act_type="tanh"),
                                name=prefix + "hidden")
        next_r = F.FullyConnected(data=hidden, num_hidden=self._projection_size,
                                  weight=h2r_weight, no_bias=True, name=prefix + "out")
        return next_r, [next_r, next_c]


def dynamic_unroll(cell, inputs, begin_state, drop_inputs: float = 0,
                   drop_outputs: float = 0, layout: str = "TNC", valid_length=None):
    """Run ``cell`` over every step of ``inputs`` (laid out as ``layout``, 'TNC' or 'NTC')
    from ``begin_state``; returns ``(outputs, states)`` with outputs merged in ``layout``.

    With ``valid_length`` (shape ``(N,)``) each sequence's states stop changing after its
    last valid step and its padded outputs are zero. ``drop_inputs`` / ``drop_outputs``
    apply dropout with one mask over the time axis. The number of steps is read from the
    input's shape (known eagerly and while a hybridized block is traced).
    """
    if not isinstance(inputs, _TENSORS):
        raise MXNetError("dynamic_unroll: inputs must be one NDArray or Symbol laid out as "
                         f"{layout!r}, got {type(inputs).__name__}")
    axis = layout.find("T")
    if inputs.shape is None or inputs.shape[axis] is None:
        raise MXNetError("dynamic_unroll: the number of time steps must be known (axis "
                         f"{axis} of the inputs, layout {layout!r})")
    F = symbol if isinstance(inputs, symbol.Symbol) else ndarray
    length = inputs.shape[axis]
    if drop_inputs:
        inputs = F.Dropout(inputs, p=drop_inputs, axes=(axis,))
    steps = _as_list(F.split(inputs, axis=axis, num_outputs=length, squeeze_axis=True))
    states = list(_as_list(begin_state))
    outputs = []
    for t in range(length):
        out, new_states = cell(steps[t], states)
        if valid_length is not None:   # finished sequences keep their last valid state
            live = valid_length > t
            new_states = [F.where(live, new, old) for new, old in zip(new_states, states)]
        states = list(new_states)
        outputs.append(out)
    if valid_length is not None:
        outputs = _mask_padded(F, outputs, valid_length)
    outputs = _merge(F, outputs, axis)
    if drop_outputs:
        outputs = F.Dropout(outputs, p=drop_outputs, axes=(axis,))
    return outputs, states
