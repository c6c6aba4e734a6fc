"""Convolution and Deconvolution (1-D, 2-D, 3-D, channels-first layouts).

Attributes and defaults are MXNet 1.9.1's (src/operator/nn/convolution-inl.h,
deconvolution-inl.h). Kernels are im2col + GEMM, as Caffe's CPU path (Jia et al. 2014) and
MXNet's ``im2col.h``: the sliding windows of the padded input (a strided view) are copied
once into a contiguous column matrix and contracted with the weight by BLAS matmuls, one
per sample and group, which writes NCHW directly with no transpose of the output. The
transposed direction (deconvolution, hence the data gradient) is a GEMM to columns followed
by col2im: one vectorised add of a shifted slice per kernel offset, never a loop over pixels.
Pooling lives in ``opset_pool``.

Gradients use ops: convolution's data gradient is a deconvolution with the same weight, its
weight gradient ``convolution_backward_weight``; deconvolution's are the mirror image. These
are linear in their first argument, and their own gradients are convolutions again, so
second derivatives exist.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .ops import REQUIRED, OpKind, defop
from .shape_rules import fail, unify_dim
from .types import TensorType

_LAYOUTS = {None, "NCW", "NCHW", "NCDHW"}


def _geom(at, nsp: int):
    """(kernel, stride, dilate, pad) as ``nsp``-tuples with MXNet's defaults filled in."""
    k = tuple(at["kernel"])

    def fill(v, d):
        v = tuple(v or ())
        return v if v else (d,) * nsp
    return k, fill(at["stride"], 1), fill(at.get("dilate", ()), 1), fill(at["pad"], 0)


def _check(op, at, ndim, in_types):
    if at.get("layout") not in _LAYOUTS:
        fail(op, f"layout {at['layout']} is not supported (channels-first only)", in_types)
    nsp = len(at["kernel"])
    if nsp not in (1, 2, 3) or ndim != nsp + 2:
        fail(op, f"a {nsp}-D kernel needs {nsp + 2}-D data", in_types)
    return nsp


def _windows(xp, k, s, d, out):
    """im2col view (N, C, *out, *k) of padded ``xp`` for kernel k, stride s, dilation d."""
    nsp = len(k)
    ext = tuple((ki - 1) * di + 1 for ki, di in zip(k, d))
    w = sliding_window_view(xp, ext, axis=tuple(range(2, 2 + nsp)))
    sl = tuple(slice(0, si * (oi - 1) + 1, si) for si, oi in zip(s, out))
    return w[(Ellipsis,) + sl + tuple(slice(None, None, di) for di in d)]


def _pad(x, pad, right=None, value=0.0):
    right = pad if right is None else right
    widths = [(0, 0), (0, 0)] + list(zip(pad, right))
    return np.pad(x, widths, constant_values=value) if any(pad) or any(right) else x


def _conv_out(size, k, s, d, p):
    return None if size is None else (size + 2 * p - (d * (k - 1) + 1)) // s + 1


def _offsets(k):
    return itertools.product(*[range(ki) for ki in k])


def _im2col(x, k, s, d, p, out, g: int, per_sample: bool):
    """Column matrix of ``x``'s windows, copied once into contiguous memory.

    ``per_sample``: (N, G, c*K, OUT), one (c*K, OUT) matrix per sample and group (Caffe's
    layout); else (G, c*K, N*OUT), one matrix per group over the whole batch.
    """
    nsp = len(k)
    win = _windows(_pad(x, p), k, s, d, out)                     # N C *out *k
    n, c = x.shape[:2]
    ksp, osp = tuple(range(2 + nsp, 2 + 2 * nsp)), tuple(range(2, 2 + nsp))
    if per_sample:   # (ascontiguousarray copies faster than copyto into a fresh array)
        cols = np.ascontiguousarray(win.transpose((0, 1) + ksp + osp))
        return cols.reshape(n, g, -1, math.prod(out))
    cols = np.ascontiguousarray(win.transpose((1,) + ksp + (0,) + osp))
    return cols.reshape(g, -1, n * math.prod(out))


def _col2im(x, w, k, s, d, full, g: int):
    """Deconvolution of ``x`` (N, G*ci, *in) by ``w`` (G*ci, fo, *k) into (N, G*fo, *full).

    One GEMM per sample and group gives the columns (N, G*fo, *k, *in); col2im adds each
    kernel offset's columns into a strided slice of the output. With unit strides and at
    least 2-D, the input's last axis is first zero-padded to the output's width, so that
    each offset's slice is a plain shift of the flattened last two axes: long contiguous
    runs instead of one short row per output line (the zeros wrap into nothing).
    """
    nsp, n = len(k), x.shape[0]
    fo = w.shape[1]
    wide = nsp >= 2 and all(si == 1 for si in s)
    sp_in = x.shape[2:]
    if wide:
        sp_in = sp_in[:-1] + (full[-1],)
        x = np.pad(x, [(0, 0)] * (1 + nsp) + [(0, full[-1] - x.shape[-1])])
    xm = x.reshape(n, g, x.shape[1] // g, math.prod(sp_in))                  # N G ci IN
    wm = w.reshape(g, w.shape[0] // g, fo * math.prod(k)).swapaxes(1, 2)      # G foK ci
    cols = np.matmul(wm, xm).reshape((n, g * fo) + k + sp_in)
    y = np.zeros((n, g * fo) + tuple(full), cols.dtype)
    if wide:
        rows = sp_in[-2] * full[-1]
        yf = y.reshape(y.shape[:-2] + (full[-2] * full[-1],))
        for off in _offsets(k):
            c = cols[(slice(None), slice(None)) + off]
            c = c.reshape(c.shape[:-2] + (rows,))
            start = off[-2] * d[-2] * full[-1] + off[-1] * d[-1]
            m = min(rows, yf.shape[-1] - start)
            sl = tuple(slice(o * di, o * di + ni) for o, di, ni in zip(off, d, sp_in[:-2]))
            yf[(Ellipsis,) + sl + (slice(start, start + m),)] += c[..., :m]
        return y
    for off in _offsets(k):
        sl = tuple(slice(o * di, o * di + si * (ni - 1) + 1, si)
                   for o, di, si, ni in zip(off, d, s, sp_in))
        y[(Ellipsis,) + sl] += cols[(slice(None), slice(None)) + off]
    return y


# ---- convolution -------------------------------------------------------------------------
def _conv(ins, at):
    x, w = ins[0], ins[1]
    nsp = len(at["kernel"])
    k, s, d, p = _geom(at, nsp)
    g = at["num_group"]
    out = tuple(_conv_out(n, *a) for n, a in zip(x.shape[2:], zip(k, s, d, p)))
    if min(out) <= 0:
        raise ValueError("kernel (dilated) is larger than the padded input")
    cols = _im2col(x, k, s, d, p, out, g, per_sample=True)        # N G cK OUT
    wm = w.reshape(g, w.shape[0] // g, -1).astype(x.dtype, copy=False)   # G f cK
    y = np.matmul(wm, cols).reshape((x.shape[0], w.shape[0]) + out)
    if not at["no_bias"]:
        y += ins[2].reshape((1, -1) + (1,) * nsp).astype(x.dtype, copy=False)
    return y


def _params_refine(op, in_types, at, w_shape, nf):
    """Refined weight (and bias) types and the op's input count check."""
    if len(in_types) != (2 if at["no_bias"] else 3):
        fail(op, f"expected {2 if at['no_bias'] else 3} inputs (no_bias={at['no_bias']})",
             in_types)
    w = in_types[1]
    if w.ndim == len(w_shape):
        w_shape = tuple(unify_dim(a, b, op, in_types) for a, b in zip(w.shape, w_shape))
    elif not all(dim is None for dim in w.shape):
        fail(op, f"weight must be {len(w_shape)}-D", in_types)
    refined = [w.with_shape(w_shape)]
    if not at["no_bias"]:
        b = in_types[2]
        refined.append(b.with_shape((unify_dim(b.shape[0] if b.ndim == 1 else None, nf, op,
                                               in_types),)))
    return refined, w_shape


def _conv_infer(in_types, at):
    op, x = "convolution", in_types[0]
    nsp = _check(op, at, x.ndim, in_types)
    k, s, d, p = _geom(at, nsp)
    g, nf = at["num_group"], at["num_filter"]
    c = x.shape[1]
    if c is None and in_types[1].ndim == nsp + 2 and in_types[1].shape[1] is not None:
        c = in_types[1].shape[1] * g
    if c is not None and (c % g or nf % g):
        fail(op, f"channels {c} and num_filter {nf} must divide by num_group {g}", in_types)
    refined, _ = _params_refine(op, in_types, at, (nf, None if c is None else c // g) + k, nf)
    out = tuple(_conv_out(n, *a) for n, a in zip(x.shape[2:], zip(k, s, d, p)))
    if any(o is not None and o <= 0 for o in out):
        fail(op, "kernel (dilated) is larger than the padded input", in_types)
    x = x.with_shape((x.shape[0], c) + x.shape[2:])
    return [TensorType((x.shape[0], nf) + out, x.dtype)], [x] + refined


def _adj_for(in_size, out_size, k, s, d, p):
    """Deconvolution ``adj`` that brings ``out_size`` back to ``in_size``."""
    return in_size - ((out_size - 1) * s + d * (k - 1) + 1 - 2 * p)


def _geom_attrs(at):
    return {key: at[key] for key in ("kernel", "stride", "dilate", "pad", "num_group")}


def _conv_grad(F, ins, outs, ograds, at):
    x, w, g = ins[0], ins[1], ograds[0]
    nsp = len(at["kernel"])
    k, s, d, p = _geom(at, nsp)
    adj = tuple(_adj_for(n, o, *a) for n, o, a in zip(x.shape[2:], g.shape[2:],
                                                       zip(k, s, d, p)))
    dx = F.deconvolution(g, w, adj=adj, num_filter=x.shape[1], no_bias=True,
                         **_geom_attrs(at))
    dw = F.convolution_backward_weight(g, x, **_geom_attrs(at))
    res = [dx, dw]
    return res if at["no_bias"] else res + [F.sum(g, axis=1, exclude=True)]


_CONV = {"kernel": REQUIRED, "stride": (), "dilate": (), "pad": (), "num_filter": REQUIRED,
         "num_group": 1, "workspace": 1024, "no_bias": False, "cudnn_tune": None,
         "cudnn_off": False, "layout": None}
defop("convolution", OpKind.OUT_EWISE, _conv, _conv_infer, inputs=("data", "weight", "bias?"),
      attrs=dict(_CONV), grad=_conv_grad, aliases=("Convolution",), mxnet_name="Convolution",
      doc="N-D convolution (cross-correlation) over NCW / NCHW / NCDHW data; weight is "
          "(num_filter, channels / num_group, *kernel).")


# ---- convolution's weight gradient ------------------------------------------------------
def _conv_bw(ins, at):
    g, x = ins
    nsp = len(at["kernel"])
    k, s, d, p = _geom(at, nsp)
    grp = at["num_group"]
    out = g.shape[2:]
    n, f, m = g.shape[0], g.shape[1] // grp, math.prod(out)
    ck = x.shape[1] // grp * math.prod(k)
    if m >= ck:   # big per-sample GEMMs (N G f OUT) @ (N G OUT cK), summed over the batch
        cols = _im2col(x, k, s, d, p, out, grp, per_sample=True)
        dw = np.matmul(g.reshape(n, grp, f, m).astype(x.dtype, copy=False),
                       cols.swapaxes(-1, -2)).sum(axis=0)
    else:         # one GEMM per group over the batch: (G f N*OUT) @ (G N*OUT cK)
        cols = _im2col(x, k, s, d, p, out, grp, per_sample=False)
        gm = g.reshape(n, grp, f, m).transpose(1, 2, 0, 3).reshape(grp, f, n * m)
        gm = gm.astype(x.dtype, copy=False)   # 2-D products: a stacked matmul with a
        dw = np.stack([a @ b.T for a, b in zip(gm, cols)])   # transposed operand skips BLAS
    return dw.reshape((g.shape[1], x.shape[1] // grp) + k)


def _conv_bw_infer(in_types, at):
    g, x = in_types
    grp = at["num_group"]
    c = None if x.shape[1] is None else x.shape[1] // grp
    return [TensorType((g.shape[1], c) + tuple(at["kernel"]), x.dtype)], list(in_types)


def _conv_bw_grad(F, ins, outs, ograds, at):
    g, x, h = ins[0], ins[1], ograds[0]
    nsp = len(at["kernel"])
    k, s, d, p = _geom(at, nsp)
    adj = tuple(_adj_for(n, o, *a) for n, o, a in zip(x.shape[2:], g.shape[2:],
                                                       zip(k, s, d, p)))
    dg = F.convolution(x, h, num_filter=g.shape[1], no_bias=True, **_geom_attrs(at))
    dx = F.deconvolution(g, h, adj=adj, num_filter=x.shape[1], no_bias=True,
                         **_geom_attrs(at))
    return [dg, dx]


defop("convolution_backward_weight", OpKind.OUT_EWISE, _conv_bw, _conv_bw_infer,
      inputs=("ograd", "data"),
      attrs={"kernel": REQUIRED, "stride": (), "dilate": (), "pad": (), "num_group": 1},
      grad=_conv_bw_grad,
      doc="Weight gradient of ``convolution`` for head gradient ``ograd`` and input ``data``.")


# ---- deconvolution -----------------------------------------------------------------------
def _deconv_geom(at, in_sp):
    """(kernel, stride, dilate, pad, adj) with target_shape resolved as MXNet's InferPad."""
    nsp = len(at["kernel"])
    k, s, d, p = _geom(at, nsp)
    adj = tuple(at["adj"] or ()) or (0,) * nsp
    tgt = tuple(at["target_shape"] or ())
    if any(tgt):
        tot = [si * (n - 1) + di * (ki - 1) + 1 - t if n is not None else None
               for si, n, di, ki, t in zip(s, in_sp, d, k, tgt)]
        p = tuple(None if t is None else (t + 1) // 2 for t in tot)
        adj = tuple(None if t is None else t % 2 for t in tot)
    return k, s, d, p, adj


def _deconv_out(n, k, s, d, p, a):
    return None if n is None or p is None else s * (n - 1) + d * (k - 1) + 1 - 2 * p + a


def _deconv(ins, at):
    x, w = ins[0], ins[1]
    nsp = len(at["kernel"])
    k, s, d, p, adj = _deconv_geom(at, x.shape[2:])
    out = tuple(_deconv_out(n, *a) for n, a in zip(x.shape[2:], zip(k, s, d, p, adj)))
    if min(out) <= 0:
        raise ValueError("deconvolution output would be empty")
    full = tuple(max(si * (n - 1) + di * (ki - 1) + 1, pi + o)
                 for si, n, di, ki, pi, o in zip(s, x.shape[2:], d, k, p, out))
    y = _col2im(x, w.astype(x.dtype, copy=False), k, s, d, full, at["num_group"])
    if any(p) or full != out:
        y = np.ascontiguousarray(y[(Ellipsis,) + tuple(slice(pi, pi + o)
                                                       for pi, o in zip(p, out))])
    if not at["no_bias"]:
        y += ins[2].reshape((1, -1) + (1,) * nsp).astype(x.dtype, copy=False)
    return y


def _deconv_infer(in_types, at):
    op, x = "deconvolution", in_types[0]
    nsp = _check(op, at, x.ndim, in_types)
    k, s, d, p, adj = _deconv_geom(at, x.shape[2:])
    g, nf = at["num_group"], at["num_filter"]
    c = x.shape[1]
    if c is None and in_types[1].ndim == nsp + 2:
        c = in_types[1].shape[0]
    if c is not None and (c % g or nf % g):
        fail(op, f"channels {c} and num_filter {nf} must divide by num_group {g}", in_types)
    refined, _ = _params_refine(op, in_types, at, (c, nf // g) + k, nf)
    out = tuple(_deconv_out(n, *a) for n, a in zip(x.shape[2:], zip(k, s, d, p, adj)))
    if any(o is not None and o <= 0 for o in out):
        fail(op, "deconvolution output would be empty", in_types)
    x = x.with_shape((x.shape[0], c) + x.shape[2:])
    return [TensorType((x.shape[0], nf) + out, x.dtype)], [x] + refined


def _deconv_grad(F, ins, outs, ograds, at):
    x, w, g = ins[0], ins[1], ograds[0]
    k, s, d, p, adj = _deconv_geom(at, x.shape[2:])
    geo = {**_geom_attrs(at), "pad": p}
    dx = F.convolution(g, w, num_filter=x.shape[1], no_bias=True, **geo)
    dw = F.convolution_backward_weight(x, g, **geo)
    res = [dx, dw]
    return res if at["no_bias"] else res + [F.sum(g, axis=1, exclude=True)]


defop("deconvolution", OpKind.OUT_EWISE, _deconv, _deconv_infer,
      inputs=("data", "weight", "bias?"),
      attrs={**_CONV, "adj": (), "target_shape": (), "workspace": 512, "no_bias": True},
      grad=_deconv_grad, aliases=("Deconvolution",), mxnet_name="Deconvolution",
      doc="Transposed convolution; weight is (channels, num_filter / num_group, *kernel).")
