"""Pooling (max / avg / sum / lp over 1-D, 2-D, 3-D windows, channels-first layouts).

Attributes and defaults are MXNet 1.9.1's (src/operator/nn/pooling-inl.h, pool.h). The
forward pass and the avg/sum/lp backward loop over the kernel offsets, each step one
vectorised ufunc over a strided slice of the (padded) input, as Caffe's and MXNet's CPU
pooling loops run over windows, but turned inside out so the inner loops are NumPy's.
Max pooling's backward routes each window's gradient to its first maximum (MXNet's and
NumPy's ``argmax`` tie rule) with a numba kernel parallel over images and channels: one
pass over the input instead of one masked pass per offset (about 2.5x faster on 2 cores at
LeNet's shapes; flat uint64 indexing and a branch-free maximum another ~1.5x); it is
compiled on first use and cached on disk. 3-D data takes the NumPy route (the router's
choice by one masked pass per offset), and so does ``pooling_backward_numpy``, the compiled
backend's stand-in until its own kernel is compiled: a cold first step compiled the router
there (numba's parallel pipeline, 1.5 s of ResNet-18's first step) for one call.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import EmberError
from .ops import OpKind, defop
from .opset_conv import _LAYOUTS, _geom, _offsets, _pad, _windows
from .shape_rules import fail
from .types import TensorType


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
    include = at["count_include_pad"] in (None, True)
    if not any(pl) and all(si * (o - 1) + ki <= n for si, o, ki, n in zip(s, out, k, x_sp)):
        return math.prod(k)   # every window lies inside the data
    ones = np.ones((1, 1) + tuple(x_sp))
    if include:   # padding counts, but not the overhang of the 'full' convention
        p = tuple(pl)
        ones = _pad(ones, p, tuple(min(a, b) for a, b in zip(pl, pr)), 1.0)
        ones = _pad(ones, (0,) * len(p), tuple(max(b - a, 0) for a, b in zip(pl, pr)))
    else:
        ones = _pad(ones, pl, pr)
    win = _windows(ones, k, s, (1,) * len(k), out)
    return np.maximum(win.sum(axis=tuple(range(-len(k), 0))), 1)


def _tap(off, s, out):
    """The strided slice of the padded input that kernel offset ``off`` reads."""
    return (Ellipsis,) + tuple(slice(o, o + si * (n - 1) + 1, si)
                               for o, si, n in zip(off, s, out))


def _pooling(ins, at):
    x = ins[0]
    nsp = x.ndim - 2
    t = at["pool_type"]
    if t not in ("max", "avg", "sum", "lp"):
        raise ValueError(f"unknown pool_type {t!r}")
    pv = at["p_value"] or 2
    axes = tuple(range(2, 2 + nsp))
    if at["global_pool"]:
        if t == "max":
            return x.max(axis=axes, keepdims=True)
        if t == "lp":
            s = np.power(x.astype(np.float64), pv).sum(axis=axes, keepdims=True)
            return np.power(s, 1.0 / pv).astype(x.dtype)
        y = x.sum(axis=axes, keepdims=True, dtype=np.float64)
        return (y / math.prod(x.shape[2:]) if t == "avg" else y).astype(x.dtype)
    k, s, pl, pr, out = _pool_geom(at, x.shape[2:])
    xp = _pad(x if t != "lp" else x.astype(np.float64), pl, pr,
              -np.inf if t == "max" else 0.0)
    y = None
    for off in _offsets(k):
        v = xp[_tap(off, s, out)]
        if t == "lp":
            v = np.power(v, pv)
        if y is None:
            y = v.copy()
        elif t == "max":
            np.maximum(y, v, out=y)
        else:
            y += v
    if t == "avg":
        y /= np.asarray(_pool_counts(x.shape[2:], at, k, s, pl, pr, out), y.dtype)
    elif t == "lp":
        y = np.power(y, 1.0 / pv)
    return y.astype(x.dtype, copy=False)


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


# ---- max pooling's backward --------------------------------------------------------------
def _max_route_py(xp, g, dx, kh, kw, sh, sw):   # pragma: no cover (runs compiled)
    """dx[first maximum of each window] += g, over the (N*C) planes in parallel (numba).

    Flat uint64 indices (numba's wraparound test on signed ones blocks LLVM's optimisation
    of the inner loops, see ``opset_conv``) and a branch-free running maximum."""
    n, c, hp, wp = xp.shape
    oh, ow = g.shape[2], g.shape[3]
    xf, gf, df = xp.ravel(), g.ravel(), dx.ravel()
    for pl in _prange(n * c):
        xb, gb = pl * hp * wp, pl * oh * ow
        for y in range(oh):
            for x in range(ow):
                best = _u64(xb + y * sh * wp + x * sw)
                m = xf[best]
                for i in range(kh):
                    r = _u64(xb + (y * sh + i) * wp + x * sw)
                    for j in range(kw):
                        v = xf[r + _u64(j)]
                        take = v > m   # strict: the first maximum wins, as argmax
                        m = v if take else m
                        best = (r + _u64(j)) if take else best
                df[best] += gf[_u64(gb + y * ow + x)]


_u64, _prange = int, range
_MAX_ROUTE = []


def _max_route_kernel():
    """The compiled router, built on first use (numba is imported then, not at import)."""
    if not _MAX_ROUTE:
        global _u64, _prange
        import numba
        _u64, _prange = numba.uint64, numba.prange
        _MAX_ROUTE.append(numba.njit(parallel=True, cache=True)(_max_route_py))
    return _MAX_ROUTE[0]


def _max_backward(g, xp, k, s, out, jit: bool = True):
    """Gradient w.r.t. padded ``xp`` of max pooling: each window's first maximum gets g (by
    the numba router for 1-D and 2-D data with ``jit``, else by NumPy: :func:`_max_pick`)."""
    dx = np.zeros(xp.shape, np.result_type(xp, g))
    if jit and xp.ndim <= 4 and xp.dtype in (np.float32, np.float64) and dx.dtype == xp.dtype:
        lift = (1,) * (4 - xp.ndim)   # 1-D as (1, W)
        xp4, g4, dx4 = (a.reshape(a.shape[:2] + lift + a.shape[2:])
                        for a in (np.ascontiguousarray(xp), np.ascontiguousarray(g, xp.dtype), dx))
        _max_route_kernel()(xp4, g4, dx4, *(lift + k), *(lift + s))
        return dx
    offsets = list(_offsets(k))
    pick = _max_pick(xp, k, s, out, offsets)
    # each position sums the gradients of the windows that picked it in the router's order
    # (windows row-major: for one position that is its offsets backwards), the same rounding
    for n in range(len(offsets) - 1, -1, -1):
        dx[_tap(offsets[n], s, out)] += np.where(pick == n, g, 0)
    return dx


def _max_pick(xp, k, s, out, offsets):
    """Which offset of each window is its router's choice: the first element, replaced only
    by a strictly greater value in scan order (ties: the first maximum, as ``argmax``; a NaN
    is never taken, a leading NaN keeps its window)."""
    best = xp[_tap(offsets[0], s, out)].copy()
    pick = np.zeros(best.shape, np.int8 if len(offsets) < 128 else np.intp)
    for n, off in enumerate(offsets[1:], 1):
        v = xp[_tap(off, s, out)]
        take = v > best
        np.copyto(best, v, where=take)
        np.copyto(pick, n, where=take)
    return pick


def pooling_backward_numpy(ins, at):
    """``pooling_backward``'s reference computed by NumPy alone (max pooling's router is
    not compiled): the compiled backend's stand-in until its own kernel is ready."""
    return _pooling_backward(ins, at, jit=False)


def _pooling_backward(ins, at, jit: bool = True):
    g, x = ins[0], ins[1]
    k, s, pl, pr, out = _pool_geom(at, x.shape[2:])
    t = at["pool_type"]
    if t == "max":
        dx = _max_backward(g, _pad(x, pl, pr, -np.inf), k, s, out, jit)
    else:
        full = tuple(n + a + b for n, a, b in zip(x.shape[2:], pl, pr))
        dx = np.zeros(x.shape[:2] + full, np.float64 if t == "lp" else x.dtype)
        if t == "lp":
            pv = at["p_value"] or 2
            xp = _pad(x.astype(np.float64), pl, pr)
            y = np.zeros(g.shape)
            for off in _offsets(k):
                y += np.power(xp[_tap(off, s, out)], pv)
            y = np.power(y, 1.0 / pv)
            gs = g * np.power(np.where(y == 0, 1.0, y), 1.0 - pv)
        else:
            gs = g.astype(x.dtype, copy=False)
            if t == "avg":
                gs = gs / np.asarray(_pool_counts(x.shape[2:], at, k, s, pl, pr, out),
                                     x.dtype)
        for off in _offsets(k):
            tap = _tap(off, s, out)
            dx[tap] += gs * np.power(xp[tap], pv - 1) if t == "lp" else gs
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
