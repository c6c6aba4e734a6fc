"""Recurrent cells (MXNet 1.x ``gluon.rnn``): one time step per call, ``unroll`` over many.

Gate orders and parameter names follow MXNet: LSTM gates are (i, f, c, o), GRU gates are
(r, z, n) with the reset gate applied to ``h2h`` after its bias. Variable-length sequences
(``valid_length``) are masked with elementwise ops (ember has no SequenceMask op).
"""
from __future__ import annotations

from ember import ndarray, symbol
from ember.base import MXNetError
from ember.ndarray.ndarray import NDArray

from ..block import Block, HybridBlock

_TENSORS = (NDArray, symbol.Symbol)


def _as_list(x):
    if isinstance(x, symbol.Symbol):
        return [x[i] for i in range(len(x))] if len(x) > 1 else [x]
    return list(x) if isinstance(x, list | tuple) else [x]


def _cells_state_info(cells, batch_size):
    return sum([c.state_info(batch_size) for c in cells], [])


def _cells_begin_state(cells, **kwargs):
    return sum([c.begin_state(**kwargs) for c in cells], [])


def _get_begin_state(cell, F, begin_state, inputs, batch_size):
    if begin_state is None:
        first = inputs[0] if isinstance(inputs, list | tuple) else inputs
        dtype = first.dtype   # a float64 cell's states are float64
        if F is ndarray:
            begin_state = cell.begin_state(func=F.zeros, batch_size=batch_size,
                                           ctx=first.context, dtype=dtype)
        else:
            begin_state = cell.begin_state(func=F.zeros, batch_size=batch_size, dtype=dtype)
    return begin_state


def _make_state(func, name, info):
    """``func(name=name, **info)``, as MXNet's begin_state calls it."""
    return func(name=name, **info)


def _format_sequence(length, inputs, layout, merge, in_layout=None):
    """Bring ``inputs`` to a list of steps (merge False) or one tensor (merge True)."""
    if inputs is None:
        raise MXNetError("unroll(inputs=None) is not supported; create the inputs first")
    axis, batch_axis = layout.find("T"), layout.find("N")
    in_axis = in_layout.find("T") if in_layout is not None else axis
    batch_size = 0
    if isinstance(inputs, _TENSORS):
        F = symbol if isinstance(inputs, symbol.Symbol) else ndarray
        if F is ndarray:
            batch_size = inputs.shape[batch_axis]
        if merge is False:
            shape = inputs.shape  # a Symbol's may be unknown: then ``length`` steps
            steps = shape[in_axis] if shape is not None and len(shape) > in_axis else None
            if length is not None and steps not in (None, length):
                raise MXNetError(f"unroll: length {length} but inputs have {steps} steps")
            if steps is None:
                if length is None:
                    raise MXNetError("unroll: give length (the inputs' number of steps "
                                     "is not known)")
                steps = length
            inputs = _as_list(F.split(inputs, axis=in_axis, num_outputs=steps,
                                      squeeze_axis=True))
    else:
        if length is not None and len(inputs) != length:
            raise MXNetError(f"unroll: length {length} but {len(inputs)} inputs given")
        F = symbol if isinstance(inputs[0], symbol.Symbol) else ndarray
        if F is ndarray:
            batch_size = inputs[0].shape[0]
        if merge is True:
            inputs = F.stack(*inputs, axis=axis)
            in_axis = axis
    if isinstance(inputs, _TENSORS) and axis != in_axis:
        inputs = F.swapaxes(inputs, dim1=axis, dim2=in_axis)
    return inputs, axis, F, batch_size


def _mask_steps(F, steps, valid_length):
    """Zero the steps past each sequence's ``valid_length`` (MXNet's SequenceMask)."""
    return [F.broadcast_mul(s, F.expand_dims(valid_length > t, axis=1))
            for t, s in enumerate(steps)]


def _last_states(F, all_states, valid_length):
    """The state at step ``valid_length - 1`` of each sequence (MXNet's SequenceLast)."""
    out = []
    for ele_list in zip(*all_states):
        acc = None
        for t, s in enumerate(ele_list):
            pick = F.broadcast_mul(s, F.expand_dims(valid_length == t + 1, axis=1))
            acc = pick if acc is None else acc + pick
        out.append(acc)
    return out


def _reverse_sequences(F, steps, valid_length=None):
    """Reverse a list of steps; with ``valid_length`` only each sequence's valid part."""
    if valid_length is None:
        return list(reversed(steps))
    n = len(steps)
    out = []
    for t in range(n):
        acc = F.broadcast_mul(steps[t], F.expand_dims(valid_length <= t, axis=1))
        for s in range(n):
            acc = acc + F.broadcast_mul(steps[s], F.expand_dims(valid_length == s + t + 1,
                                                                axis=1))
        out.append(acc)
    return out


def _merge(F, steps, axis):
    return F.stack(*steps, axis=axis)


class RecurrentCell(Block):
    """Abstract base class of recurrent cells; ``forward(inputs, states)`` is one step."""

    def __init__(self, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        self._modified = False
        self.reset()

    def reset(self):
        """Reset the step counters before re-using the cell on a new sequence."""
        self._init_counter = -1
        self._counter = -1
        for cell in self._children.values():
            cell.reset()

    def state_info(self, batch_size: int = 0) -> list:
        """Shape and layout of each state (``[{'shape': ..., '__layout__': 'NC'}]``)."""
        raise MXNetError(f"{type(self).__name__} does not define state_info")

    def begin_state(self, batch_size: int = 0, func=ndarray.zeros, **kwargs) -> list:
        """Initial states made by ``func(name=..., shape=..., **kwargs)`` (zeros by default)."""
        if self._modified:
            raise MXNetError("After applying modifier cells (e.g. ResidualCell) the base cell "
                             "cannot be called directly. Call the modifier cell instead.")
        states = []
        for info in self.state_info(batch_size):
            self._init_counter += 1
            info = dict(info or {})
            info.pop("__layout__", None)
            info.update(kwargs)
            states.append(_make_state(func, f"{self._prefix}begin_state_{self._init_counter}",
                                      info))
        return states

    def unroll(self, length: int, inputs, begin_state=None, layout: str = "NTC",
               merge_outputs: bool | None = None, valid_length=None):
        """Run the cell over ``length`` steps; returns ``(outputs, states)``.

        ``inputs`` is one tensor laid out as ``layout`` or a list of ``(N, C)`` steps;
        ``merge_outputs`` picks a stacked tensor (True) or a list (False) of outputs.
        ``valid_length`` (shape ``(N,)``) masks padded outputs to 0 and returns each
        sequence's last valid state.
        """
        self.reset()
        inputs, axis, F, batch_size = _format_sequence(length, inputs, layout, False)
        states = _get_begin_state(self, F, begin_state, inputs, batch_size)
        outputs, all_states = [], []
        for i in range(length):
            output, states = self(inputs[i], states)
            outputs.append(output)
            if valid_length is not None:
                all_states.append(states)
        if valid_length is not None:  # masked outputs are one tensor, as MXNet's SequenceMask
            states = _last_states(F, all_states, valid_length)
            outputs = _merge(F, _mask_steps(F, outputs, valid_length), axis)
        outputs, _, _, _ = _format_sequence(length, outputs, layout, merge_outputs)
        return outputs, states

    def _get_activation(self, F, inputs, activation, **kwargs):
        """Apply ``activation`` (a name, a LeakyReLU block or a callable)."""
        func = {"tanh": F.tanh, "relu": F.relu, "sigmoid": F.sigmoid,
                "softsign": F.softsign}.get(activation) if isinstance(activation, str) else None
        if func is not None:
            return func(inputs, **kwargs)
        if isinstance(activation, str):
            return F.Activation(inputs, act_type=activation, **kwargs)
        alpha = getattr(activation, "_alpha", None)
        if alpha is not None:
            return F.LeakyReLU(inputs, act_type="leaky", slope=alpha, **kwargs)
        return activation(inputs, **kwargs)

    def forward(self, inputs, states):
        """One time step: ``(output, new_states)``."""
        self._counter += 1
        return super().forward(inputs, states)


class HybridRecurrentCell(RecurrentCell, HybridBlock):
    """A recurrent cell whose step is a ``hybrid_forward`` (so it can be hybridized)."""

    def __init__(self, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)

    def hybrid_forward(self, F, x, *args, **kwargs):
        raise MXNetError(f"{type(self).__name__} must define hybrid_forward()")


class _GatedCell(HybridRecurrentCell):
    """Shared parameter set-up of RNN/LSTM/GRU cells: ``ngates * hidden_size`` rows."""

    _ngates = 1
    _nstates = 1

    def __init__(self, hidden_size, i2h_weight_initializer, h2h_weight_initializer,
                 i2h_bias_initializer, h2h_bias_initializer, input_size, prefix, params):
        super().__init__(prefix=prefix, params=params)
        self._hidden_size = hidden_size
        self._input_size = input_size
        rows = self._ngates * hidden_size
        self.i2h_weight = self.params.get("i2h_weight", shape=(rows, input_size),
                                          init=i2h_weight_initializer,
                                          allow_deferred_init=True)
        self.h2h_weight = self.params.get("h2h_weight", shape=(rows, hidden_size),
                                          init=h2h_weight_initializer,
                                          allow_deferred_init=True)
        self.i2h_bias = self.params.get("i2h_bias", shape=(rows,), init=i2h_bias_initializer,
                                        allow_deferred_init=True)
        self.h2h_bias = self.params.get("h2h_bias", shape=(rows,), init=h2h_bias_initializer,
                                        allow_deferred_init=True)

    def state_info(self, batch_size=0):
        return [{"shape": (batch_size, self._hidden_size), "__layout__": "NC"}
                for _ in range(self._nstates)]

    def __repr__(self):
        shape = self.i2h_weight.shape
        mapping = f"{shape[1] if shape[1] else None} -> {shape[0]}"
        return f"{type(self).__name__}({mapping})"

    def _affine(self, F, inputs, states, i2h_weight, i2h_bias, h2h_weight, h2h_bias):
        n = self._ngates * self._hidden_size
        prefix = f"t{self._counter}_"
        i2h = F.FullyConnected(inputs, i2h_weight, i2h_bias, num_hidden=n, name=prefix + "i2h")
        h2h = F.FullyConnected(states[0], h2h_weight, h2h_bias, num_hidden=n,
                               name=prefix + "h2h")
        return i2h, h2h


class RNNCell(_GatedCell):
    """Elman cell: ``h' = activation(W_ih x + b_ih + W_hh h + b_hh)``."""

    def __init__(self, hidden_size: int, activation="tanh", i2h_weight_initializer=None,
                 h2h_weight_initializer=None, i2h_bias_initializer="zeros",
                 h2h_bias_initializer="zeros", input_size: int = 0, prefix=None, params=None):
        super().__init__(hidden_size, i2h_weight_initializer, h2h_weight_initializer,
                         i2h_bias_initializer, h2h_bias_initializer, input_size, prefix, params)
        self._activation = activation

    def _alias(self):
        return "rnn"

    def hybrid_forward(self, F, inputs, states, i2h_weight, h2h_weight, i2h_bias, h2h_bias):
        i2h, h2h = self._affine(F, inputs, states, i2h_weight, i2h_bias, h2h_weight, h2h_bias)
        t = f"t{self._counter}_"
        out = self._get_activation(F, F.elemwise_add(i2h, h2h, name=t + "plus0"),
                                   self._activation, name=t + "out")
        return out, [out]


class LSTMCell(_GatedCell):
    """LSTM cell; gates (i, f, c, o) are the row blocks of the weights, in that order."""

    _ngates = 4
    _nstates = 2

    def __init__(self, hidden_size: int, i2h_weight_initializer=None,
                 h2h_weight_initializer=None, i2h_bias_initializer="zeros",
                 h2h_bias_initializer="zeros", input_size: int = 0, prefix=None, params=None,
                 activation="tanh", recurrent_activation="sigmoid"):
        super().__init__(hidden_size, i2h_weight_initializer, h2h_weight_initializer,
                         i2h_bias_initializer, h2h_bias_initializer, input_size, prefix, params)
        self._activation = activation
        self._recurrent_activation = recurrent_activation

    def _alias(self):
        return "lstm"

    def hybrid_forward(self, F, inputs, states, i2h_weight, h2h_weight, i2h_bias, h2h_bias):
        i2h, h2h = self._affine(F, inputs, states, i2h_weight, i2h_bias, h2h_weight, h2h_bias)
        t = f"t{self._counter}_"
        gates = F.elemwise_add(i2h, h2h, name=t + "plus0")
        gi, gf, gc, go = _as_list(F.SliceChannel(gates, num_outputs=4, axis=1, name=t + "slice"))
        act, ract = self._activation, self._recurrent_activation
        in_gate = self._get_activation(F, gi, ract, name=t + "i")
        forget_gate = self._get_activation(F, gf, ract, name=t + "f")
        in_transform = self._get_activation(F, gc, act, name=t + "c")
        out_gate = self._get_activation(F, go, ract, name=t + "o")
        next_c = F.elemwise_add(F.elemwise_mul(forget_gate, states[1], name=t + "mul0"),
                                F.elemwise_mul(in_gate, in_transform, name=t + "mul1"),
                                name=t + "state")
        next_h = F.elemwise_mul(out_gate,
                                self._get_activation(F, next_c, act, name=t + "activation0"),
                                name=t + "out")
        return next_h, [next_h, next_c]


class GRUCell(_GatedCell):
    """GRU cell (gates r, z, n): ``n = tanh(x_n + r * (W_hn h + b_hn))``,
    ``h' = (1 - z) * n + z * h``."""

    _ngates = 3

    def __init__(self, hidden_size: int, i2h_weight_initializer=None,
                 h2h_weight_initializer=None, i2h_bias_initializer="zeros",
                 h2h_bias_initializer="zeros", input_size: int = 0, prefix=None, params=None,
                 activation="tanh", recurrent_activation="sigmoid"):
        super().__init__(hidden_size, i2h_weight_initializer, h2h_weight_initializer,
                         i2h_bias_initializer, h2h_bias_initializer, input_size, prefix, params)
        self._activation = activation
        self._recurrent_activation = recurrent_activation

    def _alias(self):
        return "gru"

    def hybrid_forward(self, F, inputs, states, i2h_weight, h2h_weight, i2h_bias, h2h_bias):
        i2h, h2h = self._affine(F, inputs, states, i2h_weight, i2h_bias, h2h_weight, h2h_bias)
        t = f"t{self._counter}_"
        i2h_r, i2h_z, i2h_n = _as_list(F.SliceChannel(i2h, num_outputs=3, axis=1,
                                                      name=t + "i2h_slice"))
        h2h_r, h2h_z, h2h_n = _as_list(F.SliceChannel(h2h, num_outputs=3, axis=1,
                                                      name=t + "h2h_slice"))
        ract = self._recurrent_activation
        reset_gate = self._get_activation(F, F.elemwise_add(i2h_r, h2h_r, name=t + "plus0"),
                                          ract, name=t + "r_act")
        update_gate = self._get_activation(F, F.elemwise_add(i2h_z, h2h_z, name=t + "plus1"),
                                           ract, name=t + "z_act")
        reset_h2h = F.elemwise_mul(reset_gate, h2h_n, name=t + "mul0")
        cand = self._get_activation(F, F.elemwise_add(i2h_n, reset_h2h, name=t + "plus2"),
                                    self._activation, name=t + "h_act")
        ones = F.ones_like(update_gate, name=t + "ones_like0")
        keep = F.elemwise_sub(ones, update_gate, name=t + "minus0")
        next_h = F.elemwise_add(F.elemwise_mul(keep, cand, name=t + "mul1"),
                                F.elemwise_mul(update_gate, states[0], name=t + "mul20"),
                                name=t + "out")
        return next_h, [next_h]
