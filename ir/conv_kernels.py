"""Convolution kernels: geometry, im2col / col2im (NumPy and lazily compiled numba), chunking.

Shared by ``opset_conv`` (convolution, deconvolution, weight gradient) and ``opset_pool``;
see ``opset_conv``'s docstring for the algorithm.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .shape_rules import fail

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


# ---- numba kernels (2-D, float32 / float64) ----------------------------------------------
# im2col and col2im as plain loops over flat arrays (MXNet's im2col.h / Caffe's loops), the
# padding handled by row ranges instead of np.pad. Indices are uint64: numba's negative-index
# wraparound test on signed indices keeps LLVM from vectorising the inner loops (about 3x
# slower). Compiled on first use and cached on disk: numba is not imported with ember.
def _im2col2d_py(x, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow, cols, sb, sr):  # pragma: no cover
    """Flat ``cols[b*sb + ((c*kh + i)*kw + j)*sr + y*ow + q]`` = padded
    ``x[b, c, y*sh + i*dh, q*sw + j*dw]``: sample stride ``sb``, row stride ``sr``."""
    n, c, h, w = x.shape
    xf, cf = x.ravel(), cols.ravel()
    for bc in range(n * c):
        b, ci = bc // c, bc % c
        for i in range(kh):
            for j in range(kw):
                off = j * dw - pw   # ix = q*sw + off lies in [0, w) for q in [q0, q1)
                q0 = min(max(0, (sw - 1 - off) // sw), ow)
                q1 = max(min(ow, (w - 1 - off) // sw + 1), q0)
                for y in range(oh):
                    iy = y * sh + i * dh - ph
                    o = _u64(b * sb + ((ci * kh + i) * kw + j) * sr + y * ow)
                    if iy < 0 or iy >= h:
                        q0_, q1_ = ow, ow
                    else:
                        q0_, q1_ = q0, q1
                    for q in range(q0_):
                        cf[o + _u64(q)] = 0
                    src = _u64((bc * h + iy) * w + off) if q1_ > q0_ else _u64(0)
                    if sw == 1:
                        for q in range(q0_, q1_):
                            cf[o + _u64(q)] = xf[src + _u64(q)]
                    else:
                        for q in range(q0_, q1_):
                            cf[o + _u64(q)] = xf[src + _u64(q * sw)]
                    for q in range(q1_, ow):
                        cf[o + _u64(q)] = 0


def _im2col_wide_py(x, kh, kw, dh, dw, oh, cols, sb, sr):  # pragma: no cover
    """Stride 1, no padding: flat ``cols[b*sb + ((c*kh + i)*kw + j)*sr + t]`` =
    ``x[b, c].flat[i*dh*w + j*dw + t]`` for t < oh*w, one contiguous run per row; the
    columns with ``t % w >= ow`` are junk (they wrap into the next input row), cropped later.
    """
    n, c, h, w = x.shape
    m = oh * w
    xf, cf = x.ravel(), cols.ravel()
    for bc in range(n * c):
        b, ci = bc // c, bc % c
        for i in range(kh):
            for j in range(kw):
                src = _u64(bc * h * w + i * dh * w + j * dw)
                o = _u64(b * sb + ((ci * kh + i) * kw + j) * sr)
                run = min(m, h * w - i * dh * w - j * dw)
                for t in range(run):
                    cf[o + _u64(t)] = xf[src + _u64(t)]
                for t in range(run, m):
                    cf[o + _u64(t)] = 0


def _crop_bias_py(res, bias, y, wp):  # pragma: no cover
    """``y[b, f, r, q] = res[b, f].flat[r*wp + q] + bias[f]``: the wide GEMM's valid
    columns, with the bias, in one pass."""
    n, f, oh, ow = y.shape
    rf, yf = res.ravel(), y.ravel()
    for bf in range(n * f):
        bv = bias[bf % f]
        for r in range(oh):
            s0 = _u64((bf * oh + r) * wp)
            d0 = _u64((bf * oh + r) * ow)
            for q in range(ow):
                yf[d0 + _u64(q)] = rf[s0 + _u64(q)] + bv


def _col2im2d_py(cols, n, f, kh, kw, h, w, sb, sr, sh, sw, dh, dw, y):  # pragma: no cover
    """``y[b, fi, r*sh + i*dh, q*sw + j*dw] += cols.flat[b*sb + ((fi*kh + i)*kw + j)*sr
    + r*w + q]``: sample stride ``sb``, row stride ``sr`` (y zeroed, uncropped)."""
    fh, fw = y.shape[2], y.shape[3]
    cf, yf = cols.ravel(), y.ravel()
    for bf in range(n * f):
        b, fi = bf // f, bf % f
        for i in range(kh):
            for j in range(kw):
                for r in range(h):
                    c0 = _u64(b * sb + ((fi * kh + i) * kw + j) * sr + r * w)
                    y0 = _u64((bf * fh + r * sh + i * dh) * fw + j * dw)
                    if sw == 1:
                        for q in range(w):
                            yf[y0 + _u64(q)] += cf[c0 + _u64(q)]
                    else:
                        for q in range(w):
                            yf[y0 + _u64(q * sw)] += cf[c0 + _u64(q)]


_u64 = int
_JIT: dict = {}


def _jit(fn):
    """``fn`` compiled by numba (``cache=True``), built on first use; numba imported then."""
    got = _JIT.get(fn.__name__)
    if got is None:
        global _u64
        import numba
        _u64 = numba.uint64
        got = _JIT[fn.__name__] = numba.njit(cache=True)(fn)
    return got


def _fast(*arrays) -> bool:
    """Whether the numba kernels take these arrays (same float32/float64 dtype)."""
    dt = arrays[0].dtype
    return dt in (np.float32, np.float64) and all(a.dtype == dt for a in arrays)


def _wide(x, s) -> bool:
    """Whether ``_im2col`` can take the wide layout: 2-D, unit strides, numba dtypes."""
    return len(s) == 2 and s == (1, 1) and _fast(x)


def _im2col(x, k, s, d, p, out, g: int, per_sample: bool, wide: bool = False):
    """Column matrix of ``x``'s windows, copied once into contiguous memory.

    ``per_sample``: (N, G, c*K, OUT), one (c*K, OUT) matrix per sample and group (Caffe's
    layout); else (G, c*K, N*OUT), one matrix per group over the whole batch. ``wide``
    (``_wide`` holds, ``x`` already padded, ``p`` zero): OUT is oh * (x's width), each row
    one contiguous copy of the input; the output columns past ``ow`` of each row are junk.
    """
    nsp = len(k)
    n, c = x.shape[:2]
    if nsp == 2 and _fast(x):
        ck = c * math.prod(k)
        m = out[0] * x.shape[3] if wide else math.prod(out)
        cols = np.empty((n, ck, m) if per_sample else (ck, n, m), x.dtype)
        strides = (ck * m, m) if per_sample else (m, n * m)
        xc = np.ascontiguousarray(x)
        if wide:
            _jit(_im2col_wide_py)(xc, *k, *d, out[0], cols, *strides)
        else:
            _jit(_im2col2d_py)(xc, *k, *s, *d, *p, *out, cols, *strides)
        return cols.reshape((n, g, ck // g, m) if per_sample else (g, ck // g, n * m))
    win = _windows(_pad(x, p), k, s, d, out)                     # N C *out *k
    ksp, osp = tuple(range(2 + nsp, 2 + 2 * nsp)), tuple(range(2, 2 + nsp))
    if per_sample:   # (ascontiguousarray copies faster than copyto into a fresh array)
        cols = np.ascontiguousarray(win.transpose((0, 1) + ksp + osp))
        return cols.reshape(n, g, -1, math.prod(out))
    cols = np.ascontiguousarray(win.transpose((1,) + ksp + (0,) + osp))
    return cols.reshape(g, -1, n * math.prod(out))


def _col2im_fast(x, w, k, s, d, full, g: int):
    """``_col2im`` for 2-D float data by chunks of samples: per chunk the per-sample GEMMs,
    (G foK ci) @ (n' G ci IN), and the numba col2im reading them back from cache."""
    n, ci, fo = x.shape[0], x.shape[1] // g, w.shape[1]
    m = math.prod(x.shape[2:])
    wm = w.reshape(g, ci, fo * math.prod(k)).swapaxes(1, 2)                   # G foK ci
    y = np.zeros((n, g * fo) + tuple(full), x.dtype)
    for a, e in _chunks(n, g * fo * math.prod(k) * m * x.itemsize):
        cols = np.matmul(wm, x[a:e].reshape(e - a, g, ci, m))                # n' G foK IN
        _jit(_col2im2d_py)(cols, e - a, g * fo, *k, *x.shape[2:], cols[0].size, m, *s, *d,
                           y[a:e])
    return y


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
    if nsp == 2 and _fast(x, w):
        return _col2im_fast(x, w, k, s, d, full, g)
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



def _chunks(n: int, sample_bytes: int, budget: int = 1 << 19):
    """Sample ranges whose column matrices fit ``budget`` bytes (about L2): im2col writes a
    chunk and its GEMM reads it back from cache instead of memory (as MXNet's and Caffe's
    per-sample loops do)."""
    step = max(1, budget // max(sample_bytes, 1))
    return [(a, min(n, a + step)) for a in range(0, n, step)]
