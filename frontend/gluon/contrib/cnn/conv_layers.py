"""Deformable convolutions (MXNet 1.9.1's ``gluon.contrib.cnn``): DeformableConvolution
(Dai et al., "Deformable Convolutional Networks", ICCV 2017) and
ModulatedDeformableConvolution (Zhu et al., "Deformable ConvNets v2", CVPR 2019).

A plain convolution computes the offsets (2 per kernel tap and deformable group; v2 adds a
modulation mask, ``2 * sigmoid``); each tap then reads the input at its shifted, fractional
position by bilinear interpolation. ember composes this from registry ops, so autograd and
hybridize need nothing new: the samples are gathered with ``take`` into a "deformed image"
of shape ``(N, C, Ho*kh, Wo*kw)`` whose ``kh x kw`` blocks hold each output position's taps,
and a convolution with kernel = stride = ``(kh, kw)`` applies the weights (so weights, groups
and bias are those of MXNet's op, and the weight's input channels are inferred as usual).
Border rules are MXNet's CPU kernels': v1 samples only positions inside the image and clamps
the last row/column; v2 samples positions within one pixel of it, zero outside.
"""
from __future__ import annotations

import numbers

from ember.base import MXNetError

from ...block import HybridBlock
from ...nn import Activation

__all__ = ["DeformableConvolution", "ModulatedDeformableConvolution"]


def _pair(name: str, v) -> tuple:
    v = (int(v),) * 2 if isinstance(v, numbers.Integral) else tuple(int(x) for x in v)
    if len(v) != 2:
        raise MXNetError(f"deformable convolution: {name} must be an int or a pair, got {v}")
    return v


def _sample(F, x, offset, mask, kernel, stride, pad, dilate, dgroups: int, modulated: bool):
    """The deformed image ``(N, C, Ho*kh, Wo*kw)``: bilinear samples of ``x`` at the taps
    shifted by ``offset`` (``(N, dgroups*2*kh*kw, Ho, Wo)``, (dy, dx) per tap), times
    ``mask`` (``(N, dgroups*kh*kw, Ho, Wo)``) when given."""
    n, c, h, w = x.shape
    ho, wo = offset.shape[2], offset.shape[3]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, pad, dilate
    k, cg = kh * kw, c // dgroups
    if cg == 0:
        raise MXNetError(f"DeformableConvolution: {c} input channels cannot make "
                         f"num_deformable_group={dgroups} groups")
    # channel -> deformable group: c // cg as MXNet's kernel; the channels past
    # dgroups * cg (when dgroups does not divide C) use the last group
    group = F.clip(F.floor(F.arange(0, c) / cg), 0, dgroups - 1)
    off = F.reshape(offset, (n, dgroups, k, 2, ho, wo))
    dy = F.reshape(F.slice_axis(off, axis=3, begin=0, end=1), (n, dgroups, k, ho, wo))
    dx = F.reshape(F.slice_axis(off, axis=3, begin=1, end=2), (n, dgroups, k, ho, wo))
    # where tap (i, j) of output (ho, wo) reads without offset: ho*s - p + i*d
    tap_i = F.reshape(F.broadcast_add(F.reshape(F.arange(0, kh) * dh, (kh, 1)),
                                      F.zeros((1, kw))), (1, 1, k, 1, 1))
    tap_j = F.reshape(F.broadcast_add(F.zeros((kh, 1)), F.reshape(F.arange(0, kw) * dw,
                                                                  (1, kw))), (1, 1, k, 1, 1))
    row = F.broadcast_add(tap_i, F.reshape(F.arange(0, ho) * sh - ph, (1, 1, 1, ho, 1)))
    col = F.broadcast_add(tap_j, F.reshape(F.arange(0, wo) * sw - pw, (1, 1, 1, 1, wo)))
    py, px = F.broadcast_add(dy, row), F.broadcast_add(dx, col)   # (N, DG, K, Ho, Wo)
    y0, x0 = F.BlockGrad(F.floor(py)), F.BlockGrad(F.floor(px))
    ly, lx = py - y0, px - x0
    low = -1.0 if modulated else 0.0
    inside = F.BlockGrad((py > low) if modulated else (py >= low))
    inside = inside * F.BlockGrad((px > low) if modulated else (px >= low))
    inside = inside * F.BlockGrad(py < h) * F.BlockGrad(px < w)
    if not modulated:   # v1 clamps at the last row/column: the far corner gets no weight
        ly = ly * F.BlockGrad(y0 < h - 1)
        lx = lx * F.BlockGrad(x0 < w - 1)
    flat = F.reshape(x, (-1,))
    base = F.reshape(F.arange(0, n * c, dtype="int32") * (h * w), (n, c, 1, 1, 1))
    out = None
    for yc, wy in ((y0, 1 - ly), (y0 + 1, ly)):
        for xc, wx in ((x0, 1 - lx), (x0 + 1, lx)):
            ok = F.BlockGrad((yc >= 0) * (yc <= h - 1) * (xc >= 0) * (xc <= w - 1)) * inside
            pos = F.clip(yc, 0, h - 1) * w + F.clip(xc, 0, w - 1)   # (N, DG, K, Ho, Wo)
            pos = F.take(F.cast(pos, "int32"), group, axis=1)        # (N, C, K, Ho, Wo)
            weight = F.take(wy * wx * ok, group, axis=1)
            val = F.take(flat, F.broadcast_add(base, pos)) * weight
            out = val if out is None else out + val
    if mask is not None:
        out = out * F.take(F.reshape(mask, (n, dgroups, k, ho, wo)), group, axis=1)
    out = F.reshape(out, (n, c, kh, kw, ho, wo))
    return F.reshape(F.transpose(out, axes=(0, 1, 4, 2, 5, 3)), (n, c, ho * kh, wo * kw))


class _DeformableBase(HybridBlock):
    """Parameters and forward shared by the two deformable convolutions."""

    _offset_per_tap = 2
    _modulated = False

    def __init__(self, channels, kernel_size, strides, padding, dilation, groups,
                 num_deformable_group, layout, use_bias, in_channels, activation,
                 weight_initializer, bias_initializer, offset_weight_initializer,
                 offset_bias_initializer, offset_use_bias, op_name, adj, prefix, params):
        super().__init__(prefix=prefix, params=params)
        if layout != "NCHW":
            raise MXNetError(f"{type(self).__name__}: ember supports the 'NCHW' layout only, "
                             f"got {layout!r}")
        kernel = _pair("kernel_size", kernel_size)
        self._channels, self._in_channels, self._op_name, self._adj = (
            channels, in_channels, op_name, adj)
        taps = kernel[0] * kernel[1] * num_deformable_group
        self._split = 2 * taps
        geometry = {"kernel": kernel, "stride": _pair("strides", strides),
                    "dilate": _pair("dilation", dilation), "pad": _pair("padding", padding),
                    "num_group": groups}
        self._kwargs_offset = dict(geometry, num_filter=self._offset_per_tap * taps,
                                   no_bias=not offset_use_bias, layout=layout)
        self._kwargs_deformable_conv = dict(geometry, num_filter=channels,
                                            num_deformable_group=num_deformable_group,
                                            no_bias=not use_bias, layout=layout)
        in_per_group = in_channels // groups if in_channels else 0
        with self.name_scope():
            self._make_params(kernel, in_per_group, use_bias, offset_use_bias,
                              weight_initializer, bias_initializer,
                              offset_weight_initializer, offset_bias_initializer)
            self.act = Activation(activation, prefix=activation + "_") if activation else None

    def _offset_params(self, kernel, in_per_group, use_bias, w_init, b_init):
        n = self._kwargs_offset["num_filter"]
        self.offset_weight = self.params.get("offset_weight", shape=(n, in_per_group) + kernel,
                                             init=w_init, allow_deferred_init=True)
        self.offset_bias = self.params.get("offset_bias", shape=(n,), init=b_init,
                                           allow_deferred_init=True) if use_bias else None

    def _conv_params(self, kernel, in_per_group, use_bias, w_init, b_init):
        c = self._channels
        self.deformable_conv_weight = self.params.get(
            "deformable_conv_weight", shape=(c, in_per_group) + kernel, init=w_init,
            allow_deferred_init=True)
        self.deformable_conv_bias = self.params.get(
            "deformable_conv_bias", shape=(c,), init=b_init,
            allow_deferred_init=True) if use_bias else None

    def _make_params(self, kernel, in_per_group, use_bias, offset_use_bias, w_init, b_init,
                     ow_init, ob_init):
        self._offset_params(kernel, in_per_group, offset_use_bias, ow_init, ob_init)
        self._conv_params(kernel, in_per_group, use_bias, w_init, b_init)

    def hybrid_forward(self, F, x, offset_weight, deformable_conv_weight, offset_bias=None,
                       deformable_conv_bias=None):
        if x.shape is None or len(x.shape) != 4:
            raise MXNetError(f"{self.name}: expected NCHW data, got shape {x.shape}")
        offset = F.Convolution(x, offset_weight, offset_bias, **self._kwargs_offset)
        mask = None
        if self._modulated:
            mask = F.sigmoid(F.slice_axis(offset, axis=1, begin=self._split, end=None)) * 2
            offset = F.slice_axis(offset, axis=1, begin=0, end=self._split)
        kw = self._kwargs_deformable_conv
        image = _sample(F, x, offset, mask, kw["kernel"], kw["stride"], kw["pad"],
                        kw["dilate"], kw["num_deformable_group"], self._modulated)
        out = F.Convolution(image, deformable_conv_weight, deformable_conv_bias,
                            kernel=kw["kernel"], stride=kw["kernel"], num_filter=kw["num_filter"],
                            num_group=kw["num_group"], no_bias=kw["no_bias"], name="fwd")
        return self.act(out) if self.act is not None else out

    def __repr__(self):
        kw = self._kwargs_deformable_conv
        s = f"{type(self).__name__}({{mapping}}, kernel_size={kw['kernel']}, " \
            f"stride={kw['stride']}"
        if kw["pad"] != (0, 0):
            s += f", padding={kw['pad']}"
        if kw["dilate"] != (1, 1):
            s += f", dilation={kw['dilate']}"
        if kw["num_group"] != 1:
            s += f", groups={kw['num_group']}"
        if self.deformable_conv_bias is None:
            s += ", bias=False"
        if self.act is not None:
            s += f", {self.act}"
        shape = self.deformable_conv_weight.shape
        return s.format(mapping=f"{shape[1] if shape[1] else None} -> {shape[0]}") + ")"


class DeformableConvolution(_DeformableBase):
    """2-D deformable convolution (v1): ``channels`` filters of ``kernel_size``; an offset
    convolution (``offset_weight``/``offset_bias``, zeros by default, so training starts as
    a plain convolution) predicts ``2*kh*kw*num_deformable_group`` offsets per position.
    Parameters and defaults are MXNet 1.9.1's; NCHW only."""

    def __init__(self, channels, kernel_size=(1, 1), strides=(1, 1), padding=(0, 0),
                 dilation=(1, 1), groups=1, num_deformable_group=1, layout="NCHW",
                 use_bias=True, in_channels=0, activation=None, weight_initializer=None,
                 bias_initializer="zeros", offset_weight_initializer="zeros",
                 offset_bias_initializer="zeros", offset_use_bias=True,
                 op_name="DeformableConvolution", adj=None, prefix=None, params=None):
        super().__init__(channels, kernel_size, strides, padding, dilation, groups,
                         num_deformable_group, layout, use_bias, in_channels, activation,
                         weight_initializer, bias_initializer, offset_weight_initializer,
                         offset_bias_initializer, offset_use_bias, op_name, adj, prefix,
                         params)

    def _alias(self):
        return "deformable_conv"


class ModulatedDeformableConvolution(_DeformableBase):
    """2-D modulated deformable convolution (v2): the offset convolution also predicts a
    mask per tap (``2 * sigmoid``) that scales each sample. MXNet 1.9.1's parameters."""

    _offset_per_tap = 3
    _modulated = True

    def __init__(self, channels, kernel_size=(1, 1), strides=(1, 1), padding=(0, 0),
                 dilation=(1, 1), groups=1, num_deformable_group=1, layout="NCHW",
                 use_bias=True, in_channels=0, activation=None, weight_initializer=None,
                 bias_initializer="zeros", offset_weight_initializer="zeros",
                 offset_bias_initializer="zeros", offset_use_bias=True,
                 op_name="ModulatedDeformableConvolution", adj=None, prefix=None, params=None):
        super().__init__(channels, kernel_size, strides, padding, dilation, groups,
                         num_deformable_group, layout, use_bias, in_channels, activation,
                         weight_initializer, bias_initializer, offset_weight_initializer,
                         offset_bias_initializer, offset_use_bias, op_name, adj, prefix,
                         params)

    def _alias(self):
        return "modulated_deformable_conv"

    def _make_params(self, kernel, in_per_group, use_bias, offset_use_bias, w_init, b_init,
                     ow_init, ob_init):
        # MXNet registers the convolution's parameters first here
        self._conv_params(kernel, in_per_group, use_bias, w_init, b_init)
        self._offset_params(kernel, in_per_group, offset_use_bias, ow_init, ob_init)
