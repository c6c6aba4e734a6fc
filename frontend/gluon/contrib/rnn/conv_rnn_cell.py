"""Convolutional recurrent cells (MXNet 1.9.1's ``gluon.contrib.rnn.conv_rnn_cell``).

The gates are convolutions instead of matrix products (ConvLSTM: Shi et al., "Convolutional
LSTM Network", NIPS 2015): ``i2h`` convolves the input ``x_t`` with the learnt kernel (any
padding and dilation, stride 1), ``h2h`` convolves the previous hidden state with an odd
kernel padded to keep the state's spatial size. Parameter names (``i2h_weight``,
``h2h_weight``, ``i2h_bias``, ``h2h_bias``), their shapes, gate orders (LSTM: i, f, c, o;
GRU: r, z, o) and output names (``t<k>_out``) are MXNet's, so saved parameter files load
both ways. Sums and products are the elementwise ops (as MXNet's symbol ``+`` and ``*``),
so a begin state of unknown batch size learns it from the input. Channels-last layouts
(NWC, NHWC, NDHWC) transpose around ember's channels-first convolution.
"""
from __future__ import annotations

import numbers

from ember.base import MXNetError

from ...rnn.rnn_cell import HybridRecurrentCell, _as_list

__all__ = ["Conv1DRNNCell", "Conv2DRNNCell", "Conv3DRNNCell",
           "Conv1DLSTMCell", "Conv2DLSTMCell", "Conv3DLSTMCell",
           "Conv1DGRUCell", "Conv2DGRUCell", "Conv3DGRUCell"]

_LAYOUTS = {1: ("NCW", "NWC"), 2: ("NCHW", "NHWC"), 3: ("NCDHW", "NDHWC")}


def _conv_out_size(dims, kernels, pads, dilates) -> tuple:
    """Spatial output size of a stride-1 convolution; unknown (0) dims stay 0."""
    return tuple(x + 2 * p - d * (k - 1) if x else 0
                 for x, k, p, d in zip(dims, kernels, pads, dilates))


def _tuple(name: str, spec, dims: int) -> tuple:
    if isinstance(spec, numbers.Integral):
        return (int(spec),) * dims
    spec = tuple(int(s) for s in spec)
    if len(spec) != dims:
        raise MXNetError(f"For {dims}D convolution, the convolution settings can only be "
                         f"either int or list/tuple of length {dims}; {name}={spec}")
    return spec


class _BaseConvRNNCell(HybridRecurrentCell):
    """Parameters, shapes and the two convolutions shared by the conv RNN/LSTM/GRU cells."""

    _gate_names: tuple = ("",)
    _num_states = 1

    def __init__(self, input_shape, hidden_channels, i2h_kernel, h2h_kernel, i2h_pad,
                 i2h_dilate, h2h_dilate, i2h_weight_initializer, h2h_weight_initializer,
                 i2h_bias_initializer, h2h_bias_initializer, dims, conv_layout, activation,
                 prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        if conv_layout not in _LAYOUTS[dims]:
            raise MXNetError(f"{type(self).__name__}: conv_layout {conv_layout!r} is not one "
                             f"of {_LAYOUTS[dims]}")
        input_shape = tuple(int(s) for s in input_shape)
        if len(input_shape) != dims + 1:
            raise MXNetError(f"{type(self).__name__}: input_shape {input_shape} must have "
                             f"{dims + 1} entries (channels and {dims} spatial dims, "
                             f"laid out as {conv_layout[1:]})")
        self._hidden_channels = hidden_channels
        self._input_shape = input_shape
        self._conv_layout = conv_layout
        self._activation = activation
        self._dims = dims
        self._i2h_kernel = _tuple("i2h_kernel", i2h_kernel, dims)
        self._i2h_pad = _tuple("i2h_pad", i2h_pad, dims)
        self._i2h_dilate = _tuple("i2h_dilate", i2h_dilate, dims)
        self._h2h_kernel = _tuple("h2h_kernel", h2h_kernel, dims)
        self._h2h_dilate = _tuple("h2h_dilate", h2h_dilate, dims)
        self._stride = (1,) * dims
        if not all(k % 2 == 1 for k in self._h2h_kernel):
            raise MXNetError(f"Only support odd number, get h2h_kernel= {h2h_kernel}")
        self._h2h_pad = tuple(d * (k - 1) // 2 for d, k in zip(self._h2h_dilate,
                                                                self._h2h_kernel))
        self._channel_axis = conv_layout.find("C")
        first = self._channel_axis == 1
        self._in_channels = input_shape[0] if first else input_shape[-1]
        spatial = input_shape[1:] if first else input_shape[:-1]
        out_size = _conv_out_size(spatial, self._i2h_kernel, self._i2h_pad, self._i2h_dilate)
        total = hidden_channels * self._num_gates
        if first:
            i2h_shape = (total, self._in_channels) + self._i2h_kernel
            h2h_shape = (total, hidden_channels) + self._h2h_kernel
            self._state_shape = (hidden_channels,) + out_size
        else:
            i2h_shape = (total,) + self._i2h_kernel + (self._in_channels,)
            h2h_shape = (total,) + self._h2h_kernel + (hidden_channels,)
            self._state_shape = out_size + (hidden_channels,)
        self.i2h_weight = self.params.get("i2h_weight", shape=i2h_shape,
                                          init=i2h_weight_initializer,
                                          allow_deferred_init=True)
        self.h2h_weight = self.params.get("h2h_weight", shape=h2h_shape,
                                          init=h2h_weight_initializer,
                                          allow_deferred_init=True)
        self.i2h_bias = self.params.get("i2h_bias", shape=(total,), init=i2h_bias_initializer,
                                        allow_deferred_init=True)
        self.h2h_bias = self.params.get("h2h_bias", shape=(total,), init=h2h_bias_initializer,
                                        allow_deferred_init=True)

    @property
    def _num_gates(self) -> int:
        return len(self._gate_names)

    def state_info(self, batch_size=0):
        return [{"shape": (batch_size,) + self._state_shape, "__layout__": self._conv_layout}
                for _ in range(self._num_states)]

    def __repr__(self):
        shape = self.i2h_weight.shape
        in_channels = shape[1 if self._channel_axis == 1 else -1]
        mapping = f"{in_channels if in_channels else None} -> {shape[0]}"
        return f"{type(self).__name__}({mapping}, {self._activation}, {self._conv_layout})"

    def _conv(self, F, x, weight, bias, kernel, pad, dilate, name):
        nsp = self._dims
        last = self._channel_axis != 1
        if last:   # channels-last: run ember's channels-first convolution in between
            to_first = (0, nsp + 1) + tuple(range(1, nsp + 1))
            x = F.transpose(x, axes=to_first)
            weight = F.transpose(weight, axes=to_first)
        out = F.Convolution(data=x, weight=weight, bias=bias,
                            num_filter=self._hidden_channels * self._num_gates,
                            kernel=kernel, stride=self._stride, pad=pad, dilate=dilate,
                            name=name)
        if last:
            out = F.transpose(out, axes=(0,) + tuple(range(2, nsp + 2)) + (1,))
        return out

    def _conv_forward(self, F, inputs, states, i2h_weight, h2h_weight, i2h_bias, h2h_bias):
        """This step's name prefix (``t<k>_``) and its two convolutions (input, hidden)."""
        prefix = f"t{self._counter}_"
        i2h = self._conv(F, inputs, i2h_weight, i2h_bias, self._i2h_kernel, self._i2h_pad,
                         self._i2h_dilate, prefix + "i2h")
        h2h = self._conv(F, states[0], h2h_weight, h2h_bias, self._h2h_kernel, self._h2h_pad,
                         self._h2h_dilate, prefix + "h2h")
        return prefix, i2h, h2h

    def _slice(self, F, x, n, name):
        return _as_list(F.SliceChannel(x, num_outputs=n, axis=self._channel_axis, name=name))


class _ConvRNNCell(_BaseConvRNNCell):
    """``h_t = activation(W_i * x_t + b_i + R_i * h_{t-1} + b_h)``."""

    def _alias(self):
        return "conv_rnn"

    def hybrid_forward(self, F, inputs, states, i2h_weight, h2h_weight, i2h_bias, h2h_bias):
        prefix, i2h, h2h = self._conv_forward(F, inputs, states, i2h_weight, h2h_weight,
                                              i2h_bias, h2h_bias)
        output = self._get_activation(F, F.elemwise_add(i2h, h2h, name=prefix + "plus0"),
                                      self._activation, name=prefix + "out")
        return output, [output]


class _ConvLSTMCell(_BaseConvRNNCell):
    """ConvLSTM: gates (i, f, c, o); ``c_t = f * c_{t-1} + i * act(c~)``,
    ``h_t = o * act(c_t)``; states are ``[h, c]``."""

    _gate_names = ("_i", "_f", "_c", "_o")
    _num_states = 2

    def _alias(self):
        return "conv_lstm"

    def hybrid_forward(self, F, inputs, states, i2h_weight, h2h_weight, i2h_bias, h2h_bias):
        prefix, i2h, h2h = self._conv_forward(F, inputs, states, i2h_weight, h2h_weight,
                                              i2h_bias, h2h_bias)
        gates = F.elemwise_add(i2h, h2h, name=prefix + "plus0")
        gi, gf, gc, go = self._slice(F, gates, 4, prefix + "slice")
        in_gate = F.Activation(gi, act_type="sigmoid", name=prefix + "i")
        forget_gate = F.Activation(gf, act_type="sigmoid", name=prefix + "f")
        in_transform = self._get_activation(F, gc, self._activation, name=prefix + "c")
        out_gate = F.Activation(go, act_type="sigmoid", name=prefix + "o")
        next_c = F.elemwise_add(F.elemwise_mul(forget_gate, states[1], name=prefix + "mul0"),
                                F.elemwise_mul(in_gate, in_transform, name=prefix + "mul1"),
                                name=prefix + "state")
        next_h = F.elemwise_mul(out_gate, self._get_activation(F, next_c, self._activation),
                                name=prefix + "out")
        return next_h, [next_h, next_c]


class _ConvGRUCell(_BaseConvRNNCell):
    """ConvGRU: gates (r, z, o); ``h~ = act(x_o + r * h_o)``, ``h_t = (1 - z) h~ + z h``."""

    _gate_names = ("_r", "_z", "_o")

    def _alias(self):
        return "conv_gru"

    def hybrid_forward(self, F, inputs, states, i2h_weight, h2h_weight, i2h_bias, h2h_bias):
        prefix, i2h, h2h = self._conv_forward(F, inputs, states, i2h_weight, h2h_weight,
                                              i2h_bias, h2h_bias)
        i2h_r, i2h_z, i2h_o = self._slice(F, i2h, 3, prefix + "i2h_slice")
        h2h_r, h2h_z, h2h_o = self._slice(F, h2h, 3, prefix + "h2h_slice")
        reset_gate = F.Activation(F.elemwise_add(i2h_r, h2h_r, name=prefix + "plus0"),
                                  act_type="sigmoid", name=prefix + "r_act")
        update_gate = F.Activation(F.elemwise_add(i2h_z, h2h_z, name=prefix + "plus1"),
                                   act_type="sigmoid", name=prefix + "z_act")
        reset_h2h = F.elemwise_mul(reset_gate, h2h_o, name=prefix + "mul0")
        cand = self._get_activation(F, F.elemwise_add(i2h_o, reset_h2h, name=prefix + "plus2"),
                                    self._activation, name=prefix + "h_act")
        keep = F.elemwise_mul(1. - update_gate, cand, name=prefix + "mul1")
        next_h = F.elemwise_add(keep, F.elemwise_mul(update_gate, states[0],
                                                     name=prefix + "mul2"),
                                name=prefix + "out")
        return next_h, [next_h]


def _make(base, dims: int, kind: str, formula: str):
    """One public class per (kind, dims) with MXNet's constructor and defaults."""
    layout = _LAYOUTS[dims][0]
    zero, one = (0,) * dims, (1,) * dims

    def __init__(self, input_shape, hidden_channels, i2h_kernel, h2h_kernel, i2h_pad=zero,
                 i2h_dilate=one, h2h_dilate=one, i2h_weight_initializer=None,
                 h2h_weight_initializer=None, i2h_bias_initializer="zeros",
                 h2h_bias_initializer="zeros", conv_layout=layout, activation="tanh",
                 prefix=None, params=None):
        base.__init__(self, input_shape, hidden_channels, i2h_kernel, h2h_kernel, i2h_pad,
                      i2h_dilate, h2h_dilate, i2h_weight_initializer, h2h_weight_initializer,
                      i2h_bias_initializer, h2h_bias_initializer, dims, conv_layout,
                      activation, prefix=prefix, params=params)

    name = f"Conv{dims}D{kind}Cell"
    doc = (f"{dims}-D convolutional {kind} cell: {formula}\n\n"
           f"``input_shape`` is one sample's step without the batch axis, laid out as "
           f"``conv_layout`` (default {layout!r}; also {_LAYOUTS[dims][1]!r}); a 0 channel "
           f"count is inferred at the first forward. ``h2h_kernel`` must be odd. "
           f"``activation`` is a name or a block.")
    return type(name, (base,), {"__init__": __init__, "__doc__": doc,
                                "__module__": __name__, "__qualname__": name})


_RNN = "h_t = act(W_i * x_t + R_i * h_{t-1} + b)."
_LSTM = "ConvLSTM with gates (i, f, c, o) and states [h, c]."
_GRU = "ConvGRU with gates (r, z, o) and state [h]."
Conv1DRNNCell = _make(_ConvRNNCell, 1, "RNN", _RNN)
Conv2DRNNCell = _make(_ConvRNNCell, 2, "RNN", _RNN)
Conv3DRNNCell = _make(_ConvRNNCell, 3, "RNN", _RNN)
Conv1DLSTMCell = _make(_ConvLSTMCell, 1, "LSTM", _LSTM)
Conv2DLSTMCell = _make(_ConvLSTMCell, 2, "LSTM", _LSTM)
Conv3DLSTMCell = _make(_ConvLSTMCell, 3, "LSTM", _LSTM)
Conv1DGRUCell = _make(_ConvGRUCell, 1, "GRU", _GRU)
Conv2DGRUCell = _make(_ConvGRUCell, 2, "GRU", _GRU)
Conv3DGRUCell = _make(_ConvGRUCell, 3, "GRU", _GRU)
