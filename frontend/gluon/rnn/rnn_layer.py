"""Recurrent layers ``RNN``, ``LSTM``, ``GRU`` (MXNet 1.x ``gluon.rnn``).

MXNet runs these with one fused (cuDNN-style) ``RNN`` op over a packed parameter vector.
ember has no such op: the layers unroll the cells' step equations over time with ordinary
ops (FullyConnected, slicing, elementwise), which gives the same results, the same
parameter names (``l0_i2h_weight``, ``r0_h2h_bias``...) and lets the graph compiler see,
fuse and differentiate every step.
"""
from __future__ import annotations

import re

from ember import ndarray, symbol
from ember.base import MXNetError
from ember.ndarray.ndarray import NDArray

from ..block import HybridBlock
from .rnn_cell import _as_list, _last_states, _make_state, _mask_steps, _reverse_sequences

# a layer's parameter names: direction, layer, what (``r1_h2h_bias``)
_PARAM_KEY = re.compile(r"([lr])(\d+)_((?:i2h|h2h|h2r)_(?:weight|bias))\Z")


class _RNNLayer(HybridBlock):
    """Shared implementation of the recurrent layers."""

    def __init__(self, hidden_size, num_layers, layout, dropout, bidirectional, input_size,
                 i2h_weight_initializer, h2h_weight_initializer, i2h_bias_initializer,
                 h2h_bias_initializer, mode, projection_size, h2r_weight_initializer,
                 lstm_state_clip_min, lstm_state_clip_max, lstm_state_clip_nan, dtype,
                 use_sequence_length=False, **kwargs):
        super().__init__(**kwargs)
        if layout not in ("TNC", "NTC"):
            raise MXNetError(f"Invalid layout {layout}; must be one of ['TNC' or 'NTC']")
        self._hidden_size = hidden_size
        self._projection_size = projection_size if projection_size else None
        self._num_layers = num_layers
        self._mode = mode
        self._layout = layout
        self._dropout = dropout
        self._dir = 2 if bidirectional else 1
        self._input_size = input_size
        self._lstm_state_clip_min = lstm_state_clip_min
        self._lstm_state_clip_max = lstm_state_clip_max
        self._lstm_state_clip_nan = lstm_state_clip_nan
        self._dtype = dtype
        self._use_sequence_length = use_sequence_length
        self.skip_states = None
        self._gates = {"rnn_relu": 1, "rnn_tanh": 1, "lstm": 4, "gru": 3}[mode]
        self._inits = {"i2h_weight_initializer": i2h_weight_initializer,
                       "h2h_weight_initializer": h2h_weight_initializer,
                       "i2h_bias_initializer": i2h_bias_initializer,
                       "h2h_bias_initializer": h2h_bias_initializer}
        ng, ni, nh = self._gates, input_size, hidden_size
        nr = self._projection_size or nh
        for i in range(num_layers):
            for j in "lr"[:self._dir]:
                self._register_param(f"{j}{i}_i2h_weight", (ng * nh, ni),
                                     i2h_weight_initializer, dtype)
                self._register_param(f"{j}{i}_h2h_weight", (ng * nh, nr),
                                     h2h_weight_initializer, dtype)
                self._register_param(f"{j}{i}_i2h_bias", (ng * nh,), i2h_bias_initializer,
                                     dtype)
                self._register_param(f"{j}{i}_h2h_bias", (ng * nh,), h2h_bias_initializer,
                                     dtype)
                if self._projection_size:
                    self._register_param(f"{j}{i}_h2r_weight", (nr, nh),
                                         h2r_weight_initializer, dtype)
            ni = nr * self._dir

    def _register_param(self, name, shape, init, dtype):
        p = self.params.get(name, shape=shape, init=init, allow_deferred_init=True,
                            dtype=dtype)
        setattr(self, name, p)
        return p

    def __repr__(self):
        s = f"{type(self).__name__}({{mapping}}, {self._layout}"
        if self._num_layers != 1:
            s += f", num_layers={self._num_layers}"
        if self._dropout != 0:
            s += f", dropout={self._dropout}"
        if self._dir == 2:
            s += ", bidirectional"
        shape = self.l0_i2h_weight.shape
        mapping = f"{shape[1] if shape[1] else None} -> {shape[0] // self._gates}"
        return (s + ")").format(mapping=mapping)

    def _collect_params_with_prefix(self, prefix: str = "") -> dict:
        """Parameters under the names MXNet's files use (``save_parameters``): those of
        the cell stack ``_unfuse`` builds, ``_unfused.<layer>.i2h_weight``, with
        ``l_cell.``/``r_cell.`` before the name when bidirectional."""
        if prefix:
            prefix += "."
        ret = {}
        for key, p in self._reg_params.items():
            m = _PARAM_KEY.match(key)
            if m is None:
                ret[prefix + key] = p
                continue
            d, layer, name = m.groups()
            cell = f"{d}_cell." if self._dir == 2 else ""
            ret[f"{prefix}_unfused.{layer}.{cell}{name}"] = p
        for name, child in self._children.items():
            ret.update(child._collect_params_with_prefix(prefix + name))
        return ret

    def _unfuse(self):
        """The same network as a stack of recurrent cells sharing this layer's parameters
        (``l0_`` cells, bidirectional ``l0_``/``r0_`` pairs, DropoutCells between layers)."""
        if self._projection_size:
            raise MXNetError(f"{self.name}: _unfuse does not support a projection layer")
        if self._lstm_state_clip_min is not None or self._lstm_state_clip_max is not None:
            raise MXNetError(f"{self.name}: _unfuse does not support state clipping")
        from .rnn_cell import GRUCell, LSTMCell, RNNCell
        from .rnn_wrappers import BidirectionalCell, DropoutCell, HybridSequentialRNNCell
        make = {"rnn_relu": lambda **kw: RNNCell(activation="relu", **kw),
                "rnn_tanh": lambda **kw: RNNCell(activation="tanh", **kw),
                "lstm": LSTMCell, "gru": GRUCell}[self._mode]
        stack = HybridSequentialRNNCell(prefix=self.prefix, params=self.params)
        with stack.name_scope():
            ni = self._input_size
            for i in range(self._num_layers):
                kw = {"hidden_size": self._hidden_size, "input_size": ni, **self._inits}
                if self._dir == 2:
                    stack.add(BidirectionalCell(make(prefix=f"l{i}_", **kw),
                                                make(prefix=f"r{i}_", **kw)))
                else:
                    stack.add(make(prefix=f"l{i}_", **kw))
                if self._dropout > 0 and i != self._num_layers - 1:
                    stack.add(DropoutCell(self._dropout))
                ni = self._hidden_size * self._dir
        return stack

    def state_info(self, batch_size: int = 0) -> list:
        """Shapes of the begin states: ``(num_layers * directions, N, hidden)`` each."""
        h = self._projection_size or self._hidden_size
        info = [{"shape": (self._num_layers * self._dir, batch_size, h), "__layout__": "LNC",
                 "dtype": self._dtype}]
        if self._mode == "lstm":
            info.append({"shape": (self._num_layers * self._dir, batch_size,
                                   self._hidden_size), "__layout__": "LNC",
                         "dtype": self._dtype})
        return info

    def cast(self, dtype):
        super().cast(dtype)
        self._dtype = dtype

    def begin_state(self, batch_size: int = 0, func=ndarray.zeros, **kwargs) -> list:
        """Initial states made by ``func(name=..., shape=..., dtype=..., **kwargs)``."""
        states = []
        for i, info in enumerate(self.state_info(batch_size)):
            info = dict(info)
            info.pop("__layout__", None)
            info.update(kwargs)
            states.append(_make_state(func, f"{self.prefix}h0_{i}", info))
        return states

    def __call__(self, inputs, states=None, sequence_length=None):
        """Run the layer; returns ``outputs`` alone when no ``states`` were given, else
        ``(outputs, new_states)``."""
        skip_states = states is None
        self.skip_states = skip_states
        if states is None:
            if isinstance(inputs, NDArray):
                batch_size = inputs.shape[self._layout.find("N")]
                states = self.begin_state(batch_size, ctx=inputs.context, dtype=inputs.dtype)
            else:  # batch size unknown: the kernel makes zero states from the input
                states = []
        if isinstance(states, NDArray | symbol.Symbol):
            states = [states]
        if self._use_sequence_length:
            out = super().__call__(inputs, states, sequence_length)
        else:
            out = super().__call__(inputs, states)
        return out[0] if skip_states else out

    def hybrid_forward(self, F, inputs, states, sequence_length=None, **params):
        if F is ndarray:
            batch_size = inputs.shape[self._layout.find("N")]
            for state, info in zip(states, self.state_info(batch_size)):
                if state.shape != info["shape"]:
                    raise ValueError(f"Invalid recurrent state shape. Expecting "
                                     f"{info['shape']}, got {state.shape}.")
        return self._forward_kernel(F, inputs, states, sequence_length, params)

    def _step(self, F, x, h, c, p):
        """One step of one direction of one layer: ``(output, h, c)``."""
        ng = self._gates * self._hidden_size
        gates = F.FullyConnected(x, p["i2h_weight"], p["i2h_bias"], num_hidden=ng)
        h2h = F.FullyConnected(h, p["h2h_weight"], p["h2h_bias"], num_hidden=ng)
        if self._mode in ("rnn_relu", "rnn_tanh"):
            h = F.Activation(gates + h2h, act_type=self._mode[4:])
        elif self._mode == "gru":
            xr, xz, xn = _as_list(F.SliceChannel(gates, num_outputs=3, axis=1))
            hr, hz, hn = _as_list(F.SliceChannel(h2h, num_outputs=3, axis=1))
            r = F.sigmoid(xr + hr)
            z = F.sigmoid(xz + hz)
            n = F.tanh(xn + r * hn)
            h = (F.ones_like(z) - z) * n + z * h
        else:
            gi, gf, gc, go = _as_list(F.SliceChannel(gates + h2h, num_outputs=4, axis=1))
            c = F.sigmoid(gf) * c + F.sigmoid(gi) * F.tanh(gc)
            if self._lstm_state_clip_min is not None or self._lstm_state_clip_max is not None:
                lo = self._lstm_state_clip_min
                hi = self._lstm_state_clip_max
                c = F.clip(c, a_min=float("-inf") if lo is None else lo,
                           a_max=float("inf") if hi is None else hi)
            h = F.sigmoid(go) * F.tanh(c)
            if self._projection_size:
                h = F.FullyConnected(h, p["h2r_weight"], no_bias=True,
                                     num_hidden=self._projection_size)
        return h, c

    @staticmethod
    def _zero_state(F, step, size):
        """Zeros of shape ``(N, size)`` for a step ``(N, C)`` whose batch size is unknown."""
        col = F.zeros_like(F.slice_axis(step, axis=1, begin=0, end=1))
        return F.broadcast_axis(col, axis=1, size=size)

    def _forward_kernel(self, F, inputs, states, sequence_length, params):
        if self._layout == "NTC":
            inputs = F.swapaxes(inputs, dim1=0, dim2=1)
        shape = inputs.shape
        if shape is None or shape[0] in (None, 0):
            raise MXNetError(f"{self.name}: the input's sequence length must be known "
                             "(ember unrolls the layer over time); give the Symbol a shape")
        length = shape[0]
        steps = _as_list(F.split(inputs, num_outputs=length, axis=0, squeeze_axis=True))
        nstates = self._num_layers * self._dir
        if states:
            per_state = [_as_list(F.split(s, num_outputs=nstates, axis=0, squeeze_axis=True))
                         for s in states]
        else:
            per_state = [[self._zero_state(F, steps[0], info["shape"][2])] * nstates
                         for info in self.state_info()]
        valid = sequence_length if self._use_sequence_length else None
        new_h, new_c = [], []
        for i in range(self._num_layers):
            dir_outputs = []
            for d, j in enumerate("lr"[:self._dir]):
                k = i * self._dir + d
                p = {name[3:]: v for name, v in params.items() if name.startswith(f"{j}{i}_")}
                h = per_state[0][k]
                c = per_state[1][k] if self._mode == "lstm" else None
                xs = steps if d == 0 else _reverse_sequences(F, steps, valid)
                outs, hist = [], []
                for x in xs:
                    h, c = self._step(F, x, h, c, p)
                    outs.append(h)
                    hist.append([h] if c is None else [h, c])
                if valid is not None:
                    last = _last_states(F, hist, valid)
                    h, c = last[0], (last[1] if c is not None else None)
                    outs = _mask_steps(F, outs, valid)
                if d == 1:
                    outs = _reverse_sequences(F, outs, valid)
                dir_outputs.append(outs)
                new_h.append(h)
                new_c.append(c)
            steps = dir_outputs[0] if self._dir == 1 else \
                [F.concat(lo, ro, dim=1) for lo, ro in zip(*dir_outputs)]
            if self._dropout > 0 and i != self._num_layers - 1:
                steps = [F.Dropout(s, p=self._dropout) for s in steps]
        outputs = F.stack(*steps, axis=0)
        if self._layout == "NTC":
            outputs = F.swapaxes(outputs, dim1=0, dim2=1)
        out_states = [F.stack(*new_h, axis=0)]
        if self._mode == "lstm":
            out_states.append(F.stack(*new_c, axis=0))
        return outputs, out_states


class RNN(_RNNLayer):
    """Multi-layer Elman RNN, ``h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`` with
    act ``'relu'`` or ``'tanh'``. Inputs ``(T, N, C)`` for layout 'TNC' (default)."""

    def __init__(self, hidden_size: int, num_layers: int = 1, activation: str = "relu",
                 layout: str = "TNC", dropout: float = 0, bidirectional: bool = False,
                 i2h_weight_initializer=None, h2h_weight_initializer=None,
                 i2h_bias_initializer="zeros", h2h_bias_initializer="zeros",
                 input_size: int = 0, dtype="float32", **kwargs):
        if activation not in ("relu", "tanh"):
            raise MXNetError(f"Invalid activation {activation}; must be 'relu' or 'tanh'")
        super().__init__(hidden_size, num_layers, layout, dropout, bidirectional, input_size,
                         i2h_weight_initializer, h2h_weight_initializer,
                         i2h_bias_initializer, h2h_bias_initializer, "rnn_" + activation,
                         None, None, None, None, False, dtype, **kwargs)


class LSTM(_RNNLayer):
    """Multi-layer LSTM (gates i, f, c, o), optionally projected (LSTMP) and with the cell
    state clipped to ``[state_clip_min, state_clip_max]``."""

    def __init__(self, hidden_size: int, num_layers: int = 1, layout: str = "TNC",
                 dropout: float = 0, bidirectional: bool = False, input_size: int = 0,
                 i2h_weight_initializer=None, h2h_weight_initializer=None,
                 i2h_bias_initializer="zeros", h2h_bias_initializer="zeros",
                 projection_size: int | None = None, h2r_weight_initializer=None,
                 state_clip_min=None, state_clip_max=None, state_clip_nan: bool = False,
                 dtype="float32", **kwargs):
        super().__init__(hidden_size, num_layers, layout, dropout, bidirectional, input_size,
                         i2h_weight_initializer, h2h_weight_initializer,
                         i2h_bias_initializer, h2h_bias_initializer, "lstm",
                         projection_size, h2r_weight_initializer, state_clip_min,
                         state_clip_max, state_clip_nan, dtype, **kwargs)


class GRU(_RNNLayer):
    """Multi-layer GRU (gates r, z, n; ``n = tanh(x_n + r * (W_hn h + b_hn))``)."""

    def __init__(self, hidden_size: int, num_layers: int = 1, layout: str = "TNC",
                 dropout: float = 0, bidirectional: bool = False, input_size: int = 0,
                 i2h_weight_initializer=None, h2h_weight_initializer=None,
                 i2h_bias_initializer="zeros", h2h_bias_initializer="zeros",
                 dtype="float32", **kwargs):
        super().__init__(hidden_size, num_layers, layout, dropout, bidirectional, input_size,
                         i2h_weight_initializer, h2h_weight_initializer,
                         i2h_bias_initializer, h2h_bias_initializer, "gru", None, None, None,
                         None, False, dtype, **kwargs)
