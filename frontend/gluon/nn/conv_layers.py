"""Convolution, transposed convolution, pooling and padding layers.

Signatures, defaults, the ``conv`` / ``pool`` name prefixes and ``__repr__`` strings are
MXNet 1.9.1's (python/mxnet/gluon/nn/conv_layers.py). The input channel count is learnt at
the first forward when ``in_channels`` is 0: the weight is created with a 0 there and the
Convolution / Deconvolution shape rules fill it in. Convolutions run channels-first
(NCW / NCHW / NCDHW) underneath; convolutions and pooling also accept channels-last layouts
(NWC / NHWC / NDHWC, weight (out, *kernel, in / groups) as MXNet lays it out there) by
transposing around the channels-first op.
"""
from __future__ import annotations

from ember.base import MXNetError, numeric_types

from ..block import HybridBlock
from .basic_layers import Activation

__all__ = ["Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
           "Conv3DTranspose", "MaxPool1D", "MaxPool2D", "MaxPool3D", "AvgPool1D", "AvgPool2D",
           "AvgPool3D", "GlobalMaxPool1D", "GlobalMaxPool2D", "GlobalMaxPool3D",
           "GlobalAvgPool1D", "GlobalAvgPool2D", "GlobalAvgPool3D", "ReflectionPad2D"]

_FIRST = {1: "NCW", 2: "NCHW", 3: "NCDHW"}
_LAST = {1: "NWC", 2: "NHWC", 3: "NDHWC"}


def _ntuple(value, n: int, what: str, layer: str) -> tuple:
    """``value`` (a number or a sequence of ``n`` ints) as given, or repeated ``n`` times."""
    if isinstance(value, numeric_types):
        return (value,) * n
    if len(value) != n:
        raise MXNetError(f"{layer}: {what} must be a number or a list of {n} ints, "
                         f"got {value!r}")
    return value


def _check_layout(layout: str, nsp: int, layer: str, channels_last_ok: bool) -> None:
    if layout == _FIRST[nsp]:
        return
    if layout == _LAST[nsp]:
        if channels_last_ok:
            return
        raise MXNetError(f"{layer}: layout '{layout}' is not supported by ember; use "
                         f"'{_FIRST[nsp]}' (channels first)")
    raise MXNetError(f"{layer}: invalid layout '{layout}'; valid layouts are "
                     f"'{_FIRST[nsp]}' and '{_LAST[nsp]}'")


class _Conv(HybridBlock):
    """Shared body of the convolution layers (``op_name`` Convolution or Deconvolution)."""

    def __init__(self, channels, kernel_size, strides, padding, dilation, groups, layout,
                 in_channels=0, activation=None, use_bias=True, weight_initializer=None,
                 bias_initializer="zeros", op_name="Convolution", adj=None, prefix=None,
                 params=None):
        super().__init__(prefix=prefix, params=params)
        name, nsp = type(self).__name__, len(kernel_size)
        with self.name_scope():
            self._channels = channels
            self._in_channels = in_channels
            strides = _ntuple(strides, nsp, "strides", name)
            padding = _ntuple(padding, nsp, "padding", name)
            dilation = _ntuple(dilation, nsp, "dilation", name)
            if channels % groups or in_channels % groups:
                raise MXNetError(f"{name}: channels ({channels}) and in_channels "
                                 f"({in_channels}) must be divisible by groups ({groups})")
            self._op_name = op_name
            self._channels_last = layout == _LAST[nsp]
            self._kwargs = {"kernel": kernel_size, "stride": strides, "dilate": dilation,
                            "pad": padding, "num_filter": channels, "num_group": groups,
                            "no_bias": not use_bias, "layout": layout}
            if adj is not None:
                self._kwargs["adj"] = adj
            if op_name == "Convolution" and self._channels_last:  # (out, *kernel, in / g)
                wshape = (channels,) + tuple(kernel_size) + (in_channels // groups,)
            elif op_name == "Convolution":   # (out, in / groups, *kernel)
                wshape = (channels, in_channels // groups) + tuple(kernel_size)
            else:                          # (in, out / groups, *kernel)
                wshape = (in_channels, channels // groups) + tuple(kernel_size)
            self.weight = self.params.get("weight", shape=wshape, init=weight_initializer,
                                          allow_deferred_init=True)
            if use_bias:
                self.bias = self.params.get("bias", shape=(channels,), init=bias_initializer,
                                            allow_deferred_init=True)
            else:
                self.bias = None
            self.act = Activation(activation, prefix=activation + "_") \
                if activation is not None else None

    def forward(self, x, *args):
        if self._channels_last and self.weight.shape[-1] == 0:
            # the channels-first op cannot see through the weight's transpose to learn its
            # input channels, so take them from the (NDArray or traced Symbol) input here
            cin = getattr(x, "shape", None)
            if cin is not None and cin[-1]:
                groups = self._kwargs["num_group"]
                self.weight.shape = self.weight.shape[:-1] + (cin[-1] // groups,)
        return super().forward(x, *args)

    def hybrid_forward(self, F, x, weight, bias=None):
        op = getattr(F, self._op_name)
        kwargs = self._kwargs
        if self._channels_last:  # channels-first op between two transposes
            nsp = len(kwargs["kernel"])
            to_first = (0, nsp + 1) + tuple(range(1, nsp + 1))
            x, weight = F.transpose(x, to_first), F.transpose(weight, to_first)
            kwargs = {**kwargs, "layout": _FIRST[nsp]}
        if bias is None:
            out = op(x, weight, name="fwd", **kwargs)
        else:
            out = op(x, weight, bias, name="fwd", **kwargs)
        if self._channels_last:
            out = F.transpose(out, (0,) + tuple(range(2, nsp + 2)) + (1,))
        return self.act(out) if self.act is not None else out

    def _alias(self):
        return "conv"

    def __repr__(self):
        kw, n = self._kwargs, len(self._kwargs["kernel"])
        s = f"{type(self).__name__}({{mapping}}, kernel_size={kw['kernel']}, " \
            f"stride={kw['stride']}"
        if kw["pad"] != (0,) * n:
            s += f", padding={kw['pad']}"
        if kw["dilate"] != (1,) * n:
            s += f", dilation={kw['dilate']}"
        if kw["num_group"] != 1:
            s += f", groups={kw['num_group']}"
        if self.bias is None:
            s += ", bias=False"
        if self.act:
            s += f", {self.act}"
        shape = self.weight.shape
        cin = shape[-1] if self._channels_last else shape[1]
        return (s + ")").format(mapping=f"{cin if cin else None} -> {shape[0]}")


def _conv_init(cls, nsp, channels, kernel_size, strides, padding, dilation, groups, layout,
               activation, use_bias, weight_initializer, bias_initializer, in_channels,
               output_padding, kwargs):
    """Normalise one ConvND / ConvNDTranspose constructor call for ``_Conv.__init__``."""
    name = cls.__name__
    transpose = output_padding is not None
    _check_layout(layout, nsp, name, channels_last_ok=not transpose)
    kernel_size = _ntuple(kernel_size, nsp, "kernel_size", name)
    op_name = kwargs.pop("op_name", "Deconvolution" if transpose else "Convolution")
    adj = _ntuple(output_padding, nsp, "output_padding", name) if transpose else None
    return dict(channels=channels, kernel_size=kernel_size, strides=strides, padding=padding,
                dilation=dilation, groups=groups, layout=layout, in_channels=in_channels,
                activation=activation, use_bias=use_bias,
                weight_initializer=weight_initializer, bias_initializer=bias_initializer,
                op_name=op_name, adj=adj, **kwargs)


class Conv1D(_Conv):
    """1-D convolution over (N, C, W) data; ``in_channels`` is learnt when left at 0."""

    def __init__(self, channels: int, kernel_size, strides=1, padding=0, dilation=1,
                 groups: int = 1, layout: str = "NCW", activation: str | None = None,
                 use_bias: bool = True, weight_initializer=None, bias_initializer="zeros",
                 in_channels: int = 0, **kwargs):
        super().__init__(**_conv_init(type(self), 1, channels, kernel_size, strides, padding,
                                      dilation, groups, layout, activation, use_bias,
                                      weight_initializer, bias_initializer, in_channels,
                                      None, kwargs))


class Conv2D(_Conv):
    """2-D convolution over (N, C, H, W) data; ``in_channels`` is learnt when left at 0."""

    def __init__(self, channels: int, kernel_size, strides=(1, 1), padding=(0, 0),
                 dilation=(1, 1), groups: int = 1, layout: str = "NCHW",
                 activation: str | None = None, use_bias: bool = True,
                 weight_initializer=None, bias_initializer="zeros", in_channels: int = 0,
                 **kwargs):
        super().__init__(**_conv_init(type(self), 2, channels, kernel_size, strides, padding,
                                      dilation, groups, layout, activation, use_bias,
                                      weight_initializer, bias_initializer, in_channels,
                                      None, kwargs))


class Conv3D(_Conv):
    """3-D convolution over (N, C, D, H, W) data; ``in_channels`` is learnt when left at 0."""

    def __init__(self, channels: int, kernel_size, strides=(1, 1, 1), padding=(0, 0, 0),
                 dilation=(1, 1, 1), groups: int = 1, layout: str = "NCDHW",
                 activation: str | None = None, use_bias: bool = True,
                 weight_initializer=None, bias_initializer="zeros", in_channels: int = 0,
                 **kwargs):
        super().__init__(**_conv_init(type(self), 3, channels, kernel_size, strides, padding,
                                      dilation, groups, layout, activation, use_bias,
                                      weight_initializer, bias_initializer, in_channels,
                                      None, kwargs))


class Conv1DTranspose(_Conv):
    """1-D transposed convolution (deconvolution); weight is (in_channels, channels/groups,
    kernel)."""

    def __init__(self, channels: int, kernel_size, strides=1, padding=0, output_padding=0,
                 dilation=1, groups: int = 1, layout: str = "NCW",
                 activation: str | None = None, use_bias: bool = True,
                 weight_initializer=None, bias_initializer="zeros", in_channels: int = 0,
                 **kwargs):
        super().__init__(**_conv_init(type(self), 1, channels, kernel_size, strides, padding,
                                      dilation, groups, layout, activation, use_bias,
                                      weight_initializer, bias_initializer, in_channels,
                                      output_padding, kwargs))
        self.outpad = self._kwargs["adj"]


class Conv2DTranspose(_Conv):
    """2-D transposed convolution (deconvolution); weight is (in_channels,
    channels/groups, kh, kw)."""

    def __init__(self, channels: int, kernel_size, strides=(1, 1), padding=(0, 0),
                 output_padding=(0, 0), dilation=(1, 1), groups: int = 1,
                 layout: str = "NCHW", activation: str | None = None, use_bias: bool = True,
                 weight_initializer=None, bias_initializer="zeros", in_channels: int = 0,
                 **kwargs):
        super().__init__(**_conv_init(type(self), 2, channels, kernel_size, strides, padding,
                                      dilation, groups, layout, activation, use_bias,
                                      weight_initializer, bias_initializer, in_channels,
                                      output_padding, kwargs))
        self.outpad = self._kwargs["adj"]


class Conv3DTranspose(_Conv):
    """3-D transposed convolution (deconvolution); weight is (in_channels,
    channels/groups, kd, kh, kw)."""

    def __init__(self, channels: int, kernel_size, strides=(1, 1, 1), padding=(0, 0, 0),
                 output_padding=(0, 0, 0), dilation=(1, 1, 1), groups: int = 1,
                 layout: str = "NCDHW", activation: str | None = None, use_bias: bool = True,
                 weight_initializer=None, bias_initializer="zeros", in_channels: int = 0,
                 **kwargs):
        super().__init__(**_conv_init(type(self), 3, channels, kernel_size, strides, padding,
                                      dilation, groups, layout, activation, use_bias,
                                      weight_initializer, bias_initializer, in_channels,
                                      output_padding, kwargs))
        self.outpad = self._kwargs["adj"]


# ---- pooling -----------------------------------------------------------------------------
class _Pooling(HybridBlock):
    """Shared body of the pooling layers (one ``Pooling`` op)."""

    def __init__(self, pool_size, strides, padding, ceil_mode, global_pool, pool_type,
                 layout, count_include_pad=None, **kwargs):
        super().__init__(**kwargs)
        name, nsp = type(self).__name__, len(pool_size)
        _check_layout(layout, nsp, name, channels_last_ok=True)
        if strides is None:
            strides = pool_size
        strides = _ntuple(strides, nsp, "strides", name)
        padding = _ntuple(padding, nsp, "padding", name)
        self._kwargs = {"kernel": pool_size, "stride": strides, "pad": padding,
                        "global_pool": global_pool, "pool_type": pool_type, "layout": layout,
                        "pooling_convention": "full" if ceil_mode else "valid"}
        if count_include_pad is not None:
            self._kwargs["count_include_pad"] = count_include_pad

    def _alias(self):
        return "pool"

    def hybrid_forward(self, F, x):
        layout = self._kwargs["layout"]
        if layout[1] == "C":
            return F.Pooling(x, name="fwd", **self._kwargs)
        nd = len(layout)   # channels last: pool channels-first between two transposes
        x = F.transpose(x, axes=(0, nd - 1) + tuple(range(1, nd - 1)))
        out = F.Pooling(x, name="fwd", **{**self._kwargs, "layout": _FIRST[nd - 2]})
        return F.transpose(out, axes=(0,) + tuple(range(2, nd)) + (1,))

    def __repr__(self):
        kw = self._kwargs
        return (f"{type(self).__name__}(size={kw['kernel']}, stride={kw['stride']}, "
                f"padding={kw['pad']}, ceil_mode={kw['pooling_convention'] == 'full'}, "
                f"global_pool={kw['global_pool']}, pool_type={kw['pool_type']}, "
                f"layout={kw['layout']})")


def _pool_size(pool_size, nsp, cls):
    return _ntuple(pool_size, nsp, "pool_size", cls.__name__)


class MaxPool1D(_Pooling):
    """Max pooling over windows of (N, C, W) data; ``strides`` default to ``pool_size``."""

    def __init__(self, pool_size=2, strides=None, padding=0, layout: str = "NCW",
                 ceil_mode: bool = False, **kwargs):
        super().__init__(_pool_size(pool_size, 1, type(self)), strides, padding, ceil_mode,
                         False, "max", layout, **kwargs)


class MaxPool2D(_Pooling):
    """Max pooling over windows of (N, C, H, W) data; ``strides`` default to ``pool_size``."""

    def __init__(self, pool_size=(2, 2), strides=None, padding=0, layout: str = "NCHW",
                 ceil_mode: bool = False, **kwargs):
        super().__init__(_pool_size(pool_size, 2, type(self)), strides, padding, ceil_mode,
                         False, "max", layout, **kwargs)


class MaxPool3D(_Pooling):
    """Max pooling over windows of (N, C, D, H, W) data."""

    def __init__(self, pool_size=(2, 2, 2), strides=None, padding=0, ceil_mode: bool = False,
                 layout: str = "NCDHW", **kwargs):
        super().__init__(_pool_size(pool_size, 3, type(self)), strides, padding, ceil_mode,
                         False, "max", layout, **kwargs)


class AvgPool1D(_Pooling):
    """Average pooling over (N, C, W) data; ``count_include_pad`` counts padded cells."""

    def __init__(self, pool_size=2, strides=None, padding=0, layout: str = "NCW",
                 ceil_mode: bool = False, count_include_pad: bool = True, **kwargs):
        super().__init__(_pool_size(pool_size, 1, type(self)), strides, padding, ceil_mode,
                         False, "avg", layout, count_include_pad, **kwargs)


class AvgPool2D(_Pooling):
    """Average pooling over (N, C, H, W) data; ``count_include_pad`` counts padded cells."""

    def __init__(self, pool_size=(2, 2), strides=None, padding=0, ceil_mode: bool = False,
                 layout: str = "NCHW", count_include_pad: bool = True, **kwargs):
        super().__init__(_pool_size(pool_size, 2, type(self)), strides, padding, ceil_mode,
                         False, "avg", layout, count_include_pad, **kwargs)


class AvgPool3D(_Pooling):
    """Average pooling over (N, C, D, H, W) data; ``count_include_pad`` counts padding."""

    def __init__(self, pool_size=(2, 2, 2), strides=None, padding=0, ceil_mode: bool = False,
                 layout: str = "NCDHW", count_include_pad: bool = True, **kwargs):
        super().__init__(_pool_size(pool_size, 3, type(self)), strides, padding, ceil_mode,
                         False, "avg", layout, count_include_pad, **kwargs)


class _GlobalPool(_Pooling):
    """Pooling over all spatial positions (kernel 1, global_pool=True)."""

    _nsp = 0
    _type = ""

    def __init__(self, layout: str, **kwargs):
        super().__init__((1,) * self._nsp, None, 0, True, True, self._type, layout, **kwargs)


class GlobalMaxPool1D(_GlobalPool):
    """Max over the whole W axis: (N, C, W) -> (N, C, 1)."""

    _nsp, _type = 1, "max"

    def __init__(self, layout: str = "NCW", **kwargs):
        super().__init__(layout, **kwargs)


class GlobalMaxPool2D(_GlobalPool):
    """Max over H and W: (N, C, H, W) -> (N, C, 1, 1)."""

    _nsp, _type = 2, "max"

    def __init__(self, layout: str = "NCHW", **kwargs):
        super().__init__(layout, **kwargs)


class GlobalMaxPool3D(_GlobalPool):
    """Max over D, H and W: (N, C, D, H, W) -> (N, C, 1, 1, 1)."""

    _nsp, _type = 3, "max"

    def __init__(self, layout: str = "NCDHW", **kwargs):
        super().__init__(layout, **kwargs)


class GlobalAvgPool1D(_GlobalPool):
    """Mean over the whole W axis: (N, C, W) -> (N, C, 1)."""

    _nsp, _type = 1, "avg"

    def __init__(self, layout: str = "NCW", **kwargs):
        super().__init__(layout, **kwargs)


class GlobalAvgPool2D(_GlobalPool):
    """Mean over H and W: (N, C, H, W) -> (N, C, 1, 1)."""

    _nsp, _type = 2, "avg"

    def __init__(self, layout: str = "NCHW", **kwargs):
        super().__init__(layout, **kwargs)


class GlobalAvgPool3D(_GlobalPool):
    """Mean over D, H and W: (N, C, D, H, W) -> (N, C, 1, 1, 1)."""

    _nsp, _type = 3, "avg"

    def __init__(self, layout: str = "NCDHW", **kwargs):
        super().__init__(layout, **kwargs)


class ReflectionPad2D(HybridBlock):
    """Pad the H and W axes of (N, C, H, W) data by reflection; ``padding`` is an int or
    MXNet's flat 8-tuple of (before, after) widths per axis."""

    def __init__(self, padding=0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(padding, numeric_types):
            padding = (0, 0, 0, 0, padding, padding, padding, padding)
        if len(padding) != 8:
            raise MXNetError(f"ReflectionPad2D: padding must be an int or 8 widths, got "
                             f"{padding!r}")
        self._padding = tuple(padding)

    def hybrid_forward(self, F, x):
        return F.pad(x, mode="reflect", pad_width=self._padding)
