"""Convolution, Deconvolution and Pooling (1-D, 2-D, 3-D, channels-first layouts).

Attributes and defaults are MXNet 1.9.1's (src/operator/nn/convolution-inl.h,
deconvolution-inl.h, pooling-inl.h). Kernels are vectorised NumPy: convolution is im2col by
``sliding_window_view`` (a view, no copy) contracted with the weight by ``einsum`` (BLAS),
groups by reshaping channels; the transposed direction (deconvolution, the data gradient of
pooling) adds one shifted strided slice per kernel offset, never a loop over pixels.

Gradients use ops: convolution's data gradient is a deconvolution with the same weight, its
weight gradient ``convolution_backward_weight``; deconvolution's are the mirror image; the
gradient of pooling is ``pooling_backward``. These are linear in their first argument, and
their own gradients are convolutions again, so second derivatives exist.
"""
from __future__ import annotations

import itertools

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .errors import EmberError
from .ops import REQUIRED, OpKind, defop
from .shape_rules import fail, unify_dim
from .types import TensorType

_LAYOUTS = {None, "NCW", "NCHW", "NCDHW"}
_SP, _KK = "xyz", "ijk"   # einsum labels of spatial and kernel axes


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
    return w[(Ellipsis,) + sl + tuple(slice(None, None, di) for di in d)] if nsp else w


def _pad(x, pad, right=None, value=0.0):
    right = pad if right is None else right
    widths = [(0, 0), (0, 0)] + list(zip(pad, right))
    return np.pad(x, widths, constant_values=value) if any(pad) or any(right) else x


def _conv_out(size, k, s, d, p):
    return None if size is None else (size + 2 * p - (d * (k - 1) + 1)) // s + 1


def _scatter(contrib, k, s, d, full):
    """Sum ``contrib(offset) -> (N, C, *out)`` into an array of spatial size ``full``."""
    first = None
    for off in itertools.product(*[range(ki) for ki in k]):
        c = contrib(off)
        if first is None:
            first = np.zeros(c.shape[:2] + tuple(full), c.dtype)
        sl = tuple(slice(o * di, o * di + si * (n - 1) + 1, si)
                   for o, di, si, n in zip(off, d, s, c.shape[2:]))
        first[(Ellipsis,) + sl] += c
    return first


# ---- convolution -------------------------------------------------------------------------
def _grouped(x, g):
    """(N, C, ...) -> (N, G, C/G, ...)."""
    return x.reshape((x.shape[0], g, x.shape[1] // g) + x.shape[2:])


def _conv(ins, at):
    x, w = ins[0], ins[1]
    nsp = len(at["kernel"])
    k, s, d, p = _geom(at, nsp)
    g = at["num_group"]
    out = tuple(_conv_out(n, *a) for n, a in zip(x.shape[2:], zip(k, s, d, p)))
    if min(out) <= 0:
        raise ValueError("kernel (dilated) is larger than the padded input")
    win = _grouped(_windows(_pad(x, p), k, s, d, out), g)        # N G c *out *k
    wg = w.reshape((g, w.shape[0] // g) + w.shape[1:])          # G f c *k
    sp, kk = _SP[:nsp], _KK[:nsp]
    y = np.einsum(f"ngc{sp}{kk},gfc{kk}->ngf{sp}", win, wg, optimize=True)
    y = y.reshape((x.shape[0], w.shape[0]) + out)
    if not at["no_bias"]:
        y = y + ins[2].reshape((1, -1) + (1,) * nsp)
    return np.ascontiguousarray(y, dtype=x.dtype)


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
    win = _grouped(_windows(_pad(x, p), k, s, d, g.shape[2:]), grp)   # N G c *out *k
    gg = _grouped(g, grp)                                             # N G f *out
    sp, kk = _SP[:nsp], _KK[:nsp]
    dw = np.einsum(f"ngf{sp},ngc{sp}{kk}->gfc{kk}", gg, win, optimize=True)
    return np.ascontiguousarray(dw.reshape((g.shape[1], x.shape[1] // grp) + k), dtype=x.dtype)


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
    g = at["num_group"]
    out = tuple(_deconv_out(n, *a) for n, a in zip(x.shape[2:], zip(k, s, d, p, adj)))
    if min(out) <= 0:
        raise ValueError("deconvolution output would be empty")
    xg = _grouped(x, g)                                        # N G f *in
    wg = w.reshape((g, w.shape[0] // g) + w.shape[1:])         # G f c *k
    sp, kk = _SP[:nsp], _KK[:nsp]
    cols = np.einsum(f"ngf{sp},gfc{kk}->ngc{kk}{sp}", xg, wg, optimize=True)
    cols = cols.reshape((x.shape[0], g * w.shape[1]) + k + x.shape[2:])
    full = tuple(max(si * (n - 1) + di * (ki - 1) + 1, pi + o)
                 for si, n, di, ki, pi, o in zip(s, x.shape[2:], d, k, p, out))
    y = _scatter(lambda off: cols[(slice(None), slice(None)) + off], k, s, d, full)
    y = y[(Ellipsis,) + tuple(slice(pi, pi + o) for pi, o in zip(p, out))]
    if not at["no_bias"]:
        y = y + ins[2].reshape((1, -1) + (1,) * nsp)
    return np.ascontiguousarray(y, dtype=x.dtype)


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


# ---- pooling -----------------------------------------------------------------------------
def _pool_geom(at, sp):
    """(kernel, stride, pad left, pad right incl. 'full'/'same' overhang, out) per axis."""
    nsp = len(sp)
    if at["global_pool"]:
        return tuple(sp), (1,) * nsp, (0,) * nsp, (0,) * nsp, (1,) * nsp
    k, s, _, p = _geom({**at, "dilate": ()}, nsp)
    conv = at["pooling_convention"]
    out, left, right = [], [], []
    for n, ki, si, pi in zip(sp, k, s, p):
        if n is None:
            out.append(None)
            left.append(pi)
            right.append(pi)
            continue
        if conv == "same":
            o = -(-n // si)
            tot = max((o - 1) * si + ki - n, 0)
            pl, pr = tot // 2, tot - tot // 2
        else:
            if conv == "full":
                o = -(-(n + 2 * pi - ki) // si) + 1
            else:
                o = (n + 2 * pi - ki) // si + 1
            pl, pr = pi, max(pi, (o - 1) * si + ki - n - pi)
        out.append(o)
        left.append(pl)
        right.append(pr)
    return k, s, tuple(left), tuple(right), tuple(out)


def _pool_counts(x_sp, at, k, s, pl, pr, out):
    """Number of elements each average window divides by (MXNet's rule per convention)."""
    ones = np.ones((1, 1) + tuple(x_sp))
    include = at["count_include_pad"] in (None, True)
    if include:   # padding counts, but not the overhang of the 'full' convention
        p = tuple(pl)
        ones = _pad(ones, p, tuple(min(a, b) for a, b in zip(pl, pr)), 1.0)
        ones = _pad(ones, (0,) * len(p), tuple(max(b - a, 0) for a, b in zip(pl, pr)))
    else:
        ones = _pad(ones, pl, pr)
    win = _windows(ones, k, s, (1,) * len(k), out)
    return np.maximum(win.sum(axis=tuple(range(-len(k), 0))), 1)


def _pooling(ins, at):
    x = ins[0]
    nsp = x.ndim - 2
    k, s, pl, pr, out = _pool_geom(at, x.shape[2:])
    t = at["pool_type"]
    fill = -np.inf if t == "max" else 0.0
    xp = _pad(x.astype(np.float64) if t != "max" else x, pl, pr, fill)
    win = _windows(xp, k, s, (1,) * nsp, out)
    axes = tuple(range(-nsp, 0))
    if t == "max":
        y = win.max(axis=axes)
    elif t == "sum":
        y = win.sum(axis=axes)
    elif t == "avg":
        y = win.sum(axis=axes) / _pool_counts(x.shape[2:], at, k, s, pl, pr, out)
    elif t == "lp":
        pv = at["p_value"] or 2
        y = np.power(np.power(win, pv).sum(axis=axes), 1.0 / pv)
    else:
        raise ValueError(f"unknown pool_type {t!r}")
    return np.ascontiguousarray(y, dtype=x.dtype)


def _pool_infer(in_types, at):
    op, x = "pooling", in_types[0]
    if at.get("layout") not in _LAYOUTS:
        fail(op, f"layout {at['layout']} is not supported (channels-first only)", in_types)
    if not 3 <= x.ndim <= 5:
        fail(op, "data must be 3-D, 4-D or 5-D (N, C, *spatial)", in_types)
    if not at["global_pool"] and len(at["kernel"]) != x.ndim - 2:
        fail(op, f"kernel {at['kernel']} does not match {x.ndim}-D data", in_types)
    *_, out = _pool_geom(at, x.shape[2:])
    if any(o is not None and o <= 0 for o in out):
        fail(op, "kernel is larger than the padded input", in_types)
    return [TensorType(x.shape[:2] + tuple(out), x.dtype)], [x]


def _pooling_backward(ins, at):
    g, x = ins[0], ins[1]
    nsp = x.ndim - 2
    k, s, pl, pr, out = _pool_geom(at, x.shape[2:])
    t = at["pool_type"]
    full = tuple(n + a + b for n, a, b in zip(x.shape[2:], pl, pr))
    g64 = g.astype(np.float64)
    if t in ("max", "lp"):
        xp = _pad(x.astype(np.float64), pl, pr, -np.inf if t == "max" else 0.0)
        win = _windows(xp, k, s, (1,) * nsp, out)
        flat = win.reshape(win.shape[:2 + nsp] + (-1,))
        if t == "max":
            arg = flat.argmax(axis=-1)

            def contrib(off):
                return g64 * (arg == np.ravel_multi_index(off, k))
        else:
            pv = at["p_value"] or 2
            y = np.power(np.power(flat, pv).sum(axis=-1), 1.0 / pv)
            scale = g64 * np.power(np.where(y == 0, 1.0, y), 1.0 - pv)

            def contrib(off):
                return scale * np.power(win[(Ellipsis,) + off], pv - 1)
    else:
        if t == "avg":
            g64 = g64 / _pool_counts(x.shape[2:], at, k, s, pl, pr, out)

        def contrib(off):
            return g64
    dx = _scatter(contrib, k, s, (1,) * nsp, full)
    dx = dx[(Ellipsis,) + tuple(slice(a, a + n) for a, n in zip(pl, x.shape[2:]))]
    return np.ascontiguousarray(dx, dtype=x.dtype)


def _pooling_backward_grad(F, ins, outs, ograds, at):
    if at["pool_type"] not in ("avg", "sum"):
        raise EmberError(f"second derivative of {at['pool_type']} pooling is not supported")
    return [F.pooling(ograds[0], **at), None]   # linear in ograd: its adjoint is pooling


_POOL = {"kernel": (), "pool_type": "max", "global_pool": False, "cudnn_off": False,
         "pooling_convention": "valid", "stride": (), "pad": (), "p_value": None,
         "count_include_pad": None, "layout": None}
defop("pooling", OpKind.OPAQUE, _pooling, _pool_infer, attrs=dict(_POOL),
      grad=lambda F, i, o, g, at: [F.pooling_backward(g[0], i[0], **at)],
      aliases=("Pooling",), mxnet_name="Pooling",
      doc="max / avg / sum / lp pooling over 1-D, 2-D or 3-D windows (NCW/NCHW/NCDHW).")
defop("pooling_backward", OpKind.OPAQUE, _pooling_backward,
      lambda ts, at: ([ts[1]], list(ts)), inputs=("ograd", "data"), attrs=dict(_POOL),
      grad=_pooling_backward_grad,
      doc="Gradient of ``pooling`` w.r.t. its data; max routes to each window's argmax.")
