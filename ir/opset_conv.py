"""Convolution and Deconvolution (1-D, 2-D, 3-D, channels-first layouts).

Attributes and defaults are MXNet 1.9.1's (src/operator/nn/convolution-inl.h,
deconvolution-inl.h). Kernels are im2col + GEMM, as Caffe's CPU path (Jia et al. 2014) and
MXNet's ``im2col.h``: the input's windows are copied into a column matrix and contracted
with the weight by BLAS matmuls, one per sample and group, which writes NCHW directly with
no transpose of the output. The batch runs in chunks whose columns fit in L2 (``_chunks``),
so the GEMM reads them back from cache. 2-D float32/float64 data takes numba kernels
(compiled on first use, cached on disk): im2col with the padding tested per row range; for
unit strides a "wide" im2col whose rows are single contiguous copies of the padded input, the
GEMM then running over whole padded rows and a fused crop + bias pass dropping the junk
columns; and col2im. Other data takes NumPy: an ``ascontiguousarray`` of the strided window
view, col2im as one vectorised add of a shifted slice per kernel offset. The transposed
direction (deconvolution, hence the data gradient) is a GEMM to columns followed by col2im.
Pooling lives in ``opset_pool``.

Gradients use ops: convolution's data gradient is a deconvolution with the same weight, its
weight gradient ``convolution_backward_weight``; deconvolution's are the mirror image. These
are linear in their first argument, and their own gradients are convolutions again, so
second derivatives exist.
"""
from __future__ import annotations

import math

import numpy as np

from .conv_kernels import (  # noqa: F401  (opset_pool and tests use these through here)
    _LAYOUTS,
    _check,
    _chunks,
    _col2im,
    _conv_out,
    _crop_bias_py,
    _geom,
    _im2col,
    _jit,
    _offsets,
    _pad,
    _wide,
    _windows,
)
from .ops import REQUIRED, OpKind, defop
from .shape_rules import fail, same_dtype, unify_dim
from .types import TensorType


# ---- convolution -------------------------------------------------------------------------
def _conv(ins, at):
    x, w = ins[0], ins[1]
    nsp = len(at["kernel"])
    k, s, d, p = _geom(at, nsp)
    g = at["num_group"]
    out = tuple(_conv_out(n, *a) for n, a in zip(x.shape[2:], zip(k, s, d, p)))
    if min(out) <= 0:
        raise ValueError("kernel (dilated) is larger than the padded input")
    n, nf = x.shape[0], w.shape[0]
    wm = w.reshape(g, nf // g, -1).astype(x.dtype, copy=False)           # G f cK
    bias = None if at["no_bias"] else ins[2].astype(x.dtype, copy=False)
    wide = _wide(x, s)
    if wide:   # GEMM over whole padded rows, the junk columns cropped (see _im2col)
        x, p = _pad(x, p), (0, 0)
    m = out[0] * x.shape[3] if wide else math.prod(out)
    y = np.empty((n, nf) + out, x.dtype)
    for a, e in _chunks(n, wm.shape[2] * g * m * x.itemsize):
        cols = _im2col(x[a:e], k, s, d, p, out, g, per_sample=True, wide=wide)
        if wide:   # crop and bias in one pass, while the chunk is in cache
            res = np.matmul(wm, cols)
            _jit(_crop_bias_py)(res, np.zeros(nf, x.dtype) if bias is None else bias,
                                y[a:e], x.shape[3])
            continue
        yc = y[a:e]
        np.matmul(wm, cols, out=yc.reshape(e - a, g, nf // g, -1))
        if bias is not None:
            yc += bias.reshape((1, -1) + (1,) * nsp)
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
    same_dtype(op, in_types, names=("data", "weight", "bias"), ref=1)
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


def _conv_infer_back(in_types, out_types, at):
    """MXNet's ConvolutionShape backward: the data's batch is the output's, and a spatial dim
    of stride 1 is the output's plus the dilated kernel's extent less the padding."""
    x, y = in_types[0], out_types[0]
    nsp = len(at["kernel"])
    if x.ndim != nsp + 2 or y.ndim != nsp + 2:
        return in_types
    k, s, d, p = _geom(at, nsp)
    spatial = tuple(o + dj * (kj - 1) - 2 * pj if o is not None and sj == 1
                    and o + dj * (kj - 1) > 2 * pj else n
                    for n, o, kj, sj, dj, pj in zip(x.shape[2:], y.shape[2:], k, s, d, p))
    batch = y.shape[0] if x.shape[0] is None else x.shape[0]
    return [x.with_shape((batch, x.shape[1]) + spatial)] + in_types[1:]


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
      infer_back=_conv_infer_back,
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
    dw = np.zeros((grp, f, ck), x.dtype)
    for a, e in _chunks(n, grp * ck * m * x.itemsize):
        gc = g[a:e].reshape(e - a, grp, f, m).astype(x.dtype, copy=False)
        if m >= ck:   # big per-sample GEMMs (n' G f OUT) @ (n' G OUT cK), summed
            cols = _im2col(x[a:e], k, s, d, p, out, grp, per_sample=True)
            dw += np.matmul(gc, cols.swapaxes(-1, -2)).sum(axis=0)
        else:         # one GEMM per group over the chunk: (G f n'*OUT) @ (G n'*OUT cK)
            cols = _im2col(x[a:e], k, s, d, p, out, grp, per_sample=False)
            gm = gc.transpose(1, 2, 0, 3).reshape(grp, f, (e - a) * m)
            for gi in range(grp):   # 2-D products (a stacked matmul with a transposed
                dw[gi] += (cols[gi] @ gm[gi].T).T   # operand skips BLAS); cols x ograd^T
                # runs 2x faster in OpenBLAS than ograd x cols^T for these skinny shapes
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
    same_dtype(op, in_types, names=("data", "weight", "bias"), ref=1)
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
