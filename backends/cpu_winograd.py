"""Winograd F(2x2, 3x3) convolution for the CPU backend's 3x3, stride-1 layers.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016): each 2x2
block of outputs is ``A^T [(G g G^T) * (B^T d B)] A`` for the 4x4 input tile ``d`` under it
and the 3x3 filter ``g``; summed over input channels, the elementwise product becomes 16
GEMMs, ``M[k] = U[k] @ V[k]`` with U (16, F, C) the transformed filters and V (16, C, tiles)
the transformed tiles. That is 16 multiplies per 4 outputs instead of 36 (2.25x fewer GEMM
flops), and V holds 4x the image where im2col's columns hold 9x.

- ``WINO_W``: U from the weight (F, C, 3, 3); for a data gradient (a transposed
  convolution) from the flipped filters with F and C swapped: the data gradient of a 3x3,
  stride-1 convolution padded by p is the 3x3 convolution of the output gradient padded by
  2 - p with those filters;
- ``WINO_IN``: V, one (sample, channel) plane at a time (split over the plane range by
  ``cpu_split``): four input rows are combined down the columns once per tile row for every
  tile of that row, then along each tile's columns;
- ``WINO_OUT``: the output transform back to (N, F, OH, OW), likewise per plane; the
  convolution's fused epilogue then runs over it as after the direct depthwise kernels.

The transforms add and subtract neighbouring pixels, so an Inf or NaN in the image (or the
weight) would reach outputs whose windows do not contain it (``inf - inf``) where the direct
convolution keeps them finite: ``FINITE`` checks both first (one read, vectorised) and a
call with a non-finite value runs the im2col step instead, so results agree with the
reference everywhere. Large values can still round differently (the transforms sum up to
16 terms before the multiply): float32 results agree with im2col's to ~1e-6 relative.

Used where it paid when measured (``applies``): 3x3, stride 1, dilation 1, one group, at
least ``MIN_CHANNELS`` channels each way, output maps of at least ``MIN_MAP`` pixels a side
and ``MIN_TILES`` tiles per call. ResNet-18's layers at batch 16, im2col -> Winograd, ms
(forward / data gradient, best of 5, one process): 64 channels at 56x56 24.4 -> 25.8 /
23.5 -> 25.7 (the transforms, memory-bound, cost what the GEMMs save: 16 (64, 64) GEMMs
run at 132 GFLOP/s against 150 for the (64, 576) one); 128 at 28x28 22.0 -> 18.9 /
21.4 -> 19.2; 256 at 14x14 21.8 -> 16.1 / 23.4 -> 15.9; 512 at 7x7 21.3 -> 25.3 /
28.3 -> 24.8 (a 7x7 map computes 8x8, and the filter transform, redone every call, is 16
MB). Chunks of ``CHUNK_BYTES`` (4 MB) of transformed tiles stay in cache between the
transform and the GEMMs (32 MB chunks: 5-10% slower). ``EMBER_WINOGRAD=0`` turns it off.
"""
from __future__ import annotations

import os

import numpy as np

from .cpu_conv import Geo
from .cpu_conv_steps import Scratch, _part, _run_epilogue
from .cpu_steps import kernel, split

MIN_CHANNELS = 128
MIN_MAP = 14
MIN_TILES = 256
CHUNK_BYTES = 1 << 22
_ENABLED = os.environ.get("EMBER_WINOGRAD", "1").lower() not in ("0", "false", "no")

_HEAD = ("import numpy as np\nfrom numba import njit, prange\nfrom numba import uint64 as u\n\n"
         "_OPTS = dict(cache=True, nogil=True, error_model='numpy')\n\n\n")

FINITE = _HEAD + """@njit(parallel=False, fastmath={'contract', 'reassoc'}, **_OPTS)
def kernel(x):
    # x * 0 is 0 for finite x and NaN for Inf and NaN (no nnan/ninf flags: not folded)
    xf = x.ravel()
    s = x.dtype.type(0)
    for i in range(u(xf.size)):
        s += xf[i] * 0
    return s == 0
"""

WINO_W = _HEAD + """@njit(parallel=True, fastmath={'contract'}, **_OPTS)
def kernel(w, flip, u):
    F, C, kh, kw = w.shape
    half = w.dtype.type(0.5)
    for fi in prange(F):
        for ci in range(C):
            if flip:
                g0, g1, g2 = w[fi, ci, 2, 2], w[fi, ci, 2, 1], w[fi, ci, 2, 0]
                g3, g4, g5 = w[fi, ci, 1, 2], w[fi, ci, 1, 1], w[fi, ci, 1, 0]
                g6, g7, g8 = w[fi, ci, 0, 2], w[fi, ci, 0, 1], w[fi, ci, 0, 0]
            else:
                g0, g1, g2 = w[fi, ci, 0, 0], w[fi, ci, 0, 1], w[fi, ci, 0, 2]
                g3, g4, g5 = w[fi, ci, 1, 0], w[fi, ci, 1, 1], w[fi, ci, 1, 2]
                g6, g7, g8 = w[fi, ci, 2, 0], w[fi, ci, 2, 1], w[fi, ci, 2, 2]
            # G g (rows s0..s3, three columns each), then (G g) G^T row by row
            for a in range(4):
                if a == 0:
                    r0, r1, r2 = g0, g1, g2
                elif a == 1:
                    r0, r1, r2 = ((g0 + g3 + g6) * half, (g1 + g4 + g7) * half,
                                  (g2 + g5 + g8) * half)
                elif a == 2:
                    r0, r1, r2 = ((g0 - g3 + g6) * half, (g1 - g4 + g7) * half,
                                  (g2 - g5 + g8) * half)
                else:
                    r0, r1, r2 = g6, g7, g8
                t0, t1, t2, t3 = r0, (r0 + r1 + r2) * half, (r0 - r1 + r2) * half, r2
                if flip:
                    u[4 * a, ci, fi] = t0
                    u[4 * a + 1, ci, fi] = t1
                    u[4 * a + 2, ci, fi] = t2
                    u[4 * a + 3, ci, fi] = t3
                else:
                    u[4 * a, fi, ci] = t0
                    u[4 * a + 1, fi, ci] = t1
                    u[4 * a + 2, fi, ci] = t2
                    u[4 * a + 3, fi, ci] = t3
"""

WINO_IN = _HEAD + """@njit(parallel=True, fastmath={'contract'}, **_OPTS)
def kernel(x, ph, pw, th, tw, v):
    P, h, w = x.shape
    c = v.shape[1]
    T = th * tw
    wp = 2 * tw + 2
    c0 = min(pw, wp)
    c1 = max(min(pw + w, wp), c0)
    xf, vf = x.ravel(), v.ravel()
    kst = u(c * v.shape[2])          # distance between two of the 16 rows of v
    for q in prange(P):
        b = q // c
        ci = q - b * c
        rows = np.zeros(4 * wp, x.dtype)
        t = np.empty(4 * wp, x.dtype)
        for ty in range(th):
            for i in range(4):
                r = 2 * ty - ph + i
                ro = u(i * wp)
                if r < 0 or r >= h:
                    for col in range(wp):
                        rows[ro + u(col)] = 0
                    continue
                src = u((q * h + r) * w) - u(pw)
                for col in range(c0, c1):
                    rows[ro + u(col)] = xf[src + u(col)]
            for col in range(wp):   # B^T d: down the columns, every tile of the row at once
                d0, d1 = rows[u(col)], rows[u(wp + col)]
                d2, d3 = rows[u(2 * wp + col)], rows[u(3 * wp + col)]
                t[u(col)] = d0 - d2
                t[u(wp + col)] = d1 + d2
                t[u(2 * wp + col)] = d2 - d1
                t[u(3 * wp + col)] = d1 - d3
            base = u(ci * v.shape[2] + b * T + ty * tw)
            for i in range(4):      # (B^T d) B: along each tile's columns
                ti = u(i * wp)
                o0 = u(4 * i) * kst + base
                o1, o2, o3 = o0 + kst, o0 + 2 * kst, o0 + 3 * kst
                for tx in range(tw):
                    e = ti + u(2 * tx)
                    a0, a1, a2, a3 = t[e], t[e + u(1)], t[e + u(2)], t[e + u(3)]
                    vf[o0 + u(tx)] = a0 - a2
                    vf[o1 + u(tx)] = a1 + a2
                    vf[o2 + u(tx)] = a2 - a1
                    vf[o3 + u(tx)] = a1 - a3
"""

WINO_OUT = _HEAD + """@njit(parallel=True, fastmath={'contract'}, **_OPTS)
def kernel(m, th, tw, y):
    P, oh, ow = y.shape
    f = m.shape[1]
    T = th * tw
    mf, yf = m.ravel(), y.ravel()
    kst = u(f * m.shape[2])
    for q in prange(P):
        b = q // f
        fi = q - b * f
        r = np.empty(8 * tw, y.dtype)
        for ty in range(th):
            base = u(fi * m.shape[2] + b * T + ty * tw)
            for j in range(4):      # A^T M: down the tile's columns
                s0 = u(j) * kst + base
                s1, s2, s3 = s0 + 4 * kst, s0 + 8 * kst, s0 + 12 * kst
                r0, r1 = u(j * tw), u((4 + j) * tw)
                for tx in range(tw):
                    m0, m1 = mf[s0 + u(tx)], mf[s1 + u(tx)]
                    m2, m3 = mf[s2 + u(tx)], mf[s3 + u(tx)]
                    r[r0 + u(tx)] = m0 + m1 + m2
                    r[r1 + u(tx)] = m1 - m2 - m3
            for i in range(2):      # (A^T M) A: along the rows
                yr = 2 * ty + i
                if yr >= oh:
                    break
                ri = u(4 * i * tw)
                dst = u((q * oh + yr) * ow)
                for tx in range(ow // 2):
                    a0, a1 = r[ri + u(tx)], r[ri + u(tw + tx)]
                    a2, a3 = r[ri + u(2 * tw + tx)], r[ri + u(3 * tw + tx)]
                    yf[dst + u(2 * tx)] = a0 + a1 + a2
                    yf[dst + u(2 * tx + 1)] = a1 - a2 - a3
                if ow % 2:
                    tx = tw - 1
                    a0, a1, a2 = r[ri + u(tx)], r[ri + u(tw + tx)], r[ri + u(2 * tw + tx)]
                    yf[dst + u(2 * tx)] = a0 + a1 + a2
"""


def applies(geo: Geo, forward: bool) -> bool:
    """Whether a convolution (``forward``) or its data gradient runs as Winograd F(2,3)."""
    if not _ENABLED or geo.k != (3, 3) or geo.s != (1, 1) or geo.d != (1, 1) or geo.g != 1:
        return False
    if min(geo.c, geo.f) < MIN_CHANNELS or (not forward and max(geo.p) > 2):
        return False
    oh, ow = (geo.oh, geo.ow) if forward else (geo.h, geo.w)
    return min(oh, ow) >= MIN_MAP and geo.n * -(-oh // 2) * -(-ow // 2) >= MIN_TILES


def winograd_step(geo: Geo, dt: np.dtype, scratch: Scratch, epi, has_bias: bool,
                  n_leaves: int, sliced: list[bool], forward: bool, fallback):
    """A step with ``fallback``'s signature (``forward_step``/``dgrad_step`` of
    ``cpu_conv_steps``, which it runs for non-finite inputs) computing by Winograd."""
    if forward:   # image (n, c, h, w) -> output (n, f, oh, ow), padded by p
        cin, cout, hin, win, hout, wout = geo.c, geo.f, geo.h, geo.w, geo.oh, geo.ow
        ph, pw = geo.p
    else:         # output gradient (n, f, oh, ow) -> image gradient, padded by 2 - p
        cin, cout, hin, win, hout, wout = geo.f, geo.c, geo.oh, geo.ow, geo.h, geo.w
        ph, pw = 2 - geo.p[0], 2 - geo.p[1]
    th, tw = -(-hout // 2), -(-wout // 2)
    tiles = th * tw
    per = 16 * max(cin, cout) * tiles * dt.itemsize
    nc = max(1, min(geo.n, CHUNK_BYTES // max(1, per)))
    pieces = [((16, cout, cin), dt), ((16, cin, nc * tiles), dt), ((16, cout, nc * tiles), dt)]
    scratch.need(pieces)
    finite, wino_w = kernel(FINITE), split(WINO_W)
    wino_in, wino_out = split(WINO_IN), split(WINO_OUT)
    n, m_out = geo.n, hout * wout

    def step(x, w, *rest):
        bias = rest[0] if has_bias else None
        rest2 = rest[1:] if has_bias else rest
        leaves, y, extra = rest2[:n_leaves], rest2[n_leaves], rest2[n_leaves + 1:]
        x = np.ascontiguousarray(x)
        w = np.ascontiguousarray(w)
        if not (finite(x) and finite(w)):
            return fallback(x, w, *rest)
        u, v, mm = scratch.views(pieces)
        u = u.reshape(16, cout, cin)
        wino_w(w, not forward, u)
        x3 = x.reshape(n * cin, hin, win)
        y3 = y.reshape(n, cout, m_out)
        y_planes = y.reshape(n * cout, hout, wout)
        for a in range(0, n, nc):
            e = min(n, a + nc)
            cols = (e - a) * tiles
            vv = _part(v, (16, cin, cols))
            mv = _part(mm, (16, cout, cols))
            wino_in(x3[a * cin:e * cin], ph, pw, th, tw, vv)
            for k in range(16):
                np.matmul(u[k], vv[k], out=mv[k])
            wino_out(mv, th, tw, y_planes[a * cout:e * cout])
            if epi is not None:
                _run_epilogue(epi, y3, None, bias, leaves, sliced, extra, a, e)
    step.winograd = True
    return step

