"""Direct convolution for layers with few filters (LeNet's; first layers): forward, data and
weight gradient.

im2col + GEMM (``cpu_conv``) copies each input pixel kh*kw times and then runs a GEMM with
F rows; with F = 6 or 16 and C*kh*kw = 25 or 150 (LeNet-5) the copy is most of the work
and BLAS runs such thin products far below its peak. Here each sample's image is copied
only kw times, shifted and, for stride s, with its rows split by phase:
``xs[j, c, a, r, q] = xpad[c, s*r + a, s*q + j]`` for the kernel's columns j, so that every
tap (i, j) of channel c is the contiguous run of rows ``r = oy + i // s`` of phase
``i % s``, read as one flat vector of OH*OW elements aligned with the output plane. The
kernels are then long, unit-stride loops (vectorised by LLVM) over the output plane with a
block of the kernel row's taps in registers:

- forward: ``y[f] += sum_j w[f, c, i, j] * xs[j, c, i % s, i // s:]`` for a block of
  ``FB`` (``FB_WIDE``) filters at once (the kw loads shared by the block's filters), over
  the channels and kernel rows;
- data gradient of a stride-1 convolution: the forward of the output gradient padded by
  ``k - 1 - p`` with the filters flipped and F, C swapped (as ``cpu_winograd``'s), the
  products of the padding rows skipped;
- weight gradient: ``dw[f, c, i, j] = sum_n sum_t g[n, f, t] * xs_n[j, c, ...][t]``, the
  FB*kw sums of a (filter block, channel, row) kept in registers over the plane, the
  samples split into ``PARTS`` fixed parts summed at the end (the same result on any
  number of threads).

Each sum has exactly the products the im2col step's GEMM has (padding zeros included, so
``0 * inf`` is NaN in both), in another order. The data gradient's padding is the
exception: it multiplies the filters by zeros that the reference never pairs them with, so
a non-finite filter runs the im2col step (``FINITE`` of ``cpu_winograd``). Strides 1 and 2,
dilation 1, one group; used where it measured faster than im2col + GEMM (:func:`applies`).
The kernels take the shapes and the stride at run time; the filter block and kw are built
in (the unrolled body). Like Winograd's, they are compiled off the first call's path
(``cpu_tiered.Deferred``): with a cold kernel cache the first steps run the im2col step.
"""
from __future__ import annotations

import os
import textwrap
from typing import TYPE_CHECKING

import numpy as np

from .cpu_conv_scratch import Scratch, _run_epilogue, _unpack, epilogue_calls
from .cpu_split import threads
from .cpu_steps import kernel, split
from .cpu_tiered import Deferred
from .cpu_winograd import FINITE

if TYPE_CHECKING:
    from .cpu_conv import Geo

_HEAD = ("import numpy as np\nfrom numba import njit, prange\nfrom numba import uint64 as u\n\n"
         "_OPTS = dict(cache=True, nogil=True, error_model='numpy')\n\n\n")

# the shifted copies of one sample, xs (KW, C, s, Hq, OW) from x[n] (C, H, W):
# xs[j, c, a, r, q] = xpad[c, s*r + a, s*q + j] (padding zeros), the padded rows split by
# their phase a = row % s, so that tap (i, j) reads rows r = oy + i // s of phase i % s:
# a flat run from ((i % s) * Hq + i // s) * OW, one element per output pixel
_FILL = """\
        for j in range(KW):
            off = j - pw
            q0 = min(max(0, (s - 1 - off) // s), OW)
            q1 = max(min(OW, (W - 1 - off) // s + 1), q0)
            for c in range(C):
                for a in range(s):
                    for r in range(Hq):
                        o = u(j * S + c * R + (a * Hq + r) * OW)
                        iy = s * r + a - ph
                        if iy < 0 or iy >= H:
                            for q in range(OW):
                                xs[o + u(q)] = 0
                            continue
                        for q in range(q0):
                            xs[o + u(q)] = 0
                        src = u(((n * C + c) * H + iy) * W + s * q0 + off)
                        if s == 1:
                            for q in range(q1 - q0):
                                xs[o + u(q0 + q)] = xf[src + u(q)]
                        else:
                            for q in range(q1 - q0):
                                xs[o + u(q0 + q)] = xf[src + u(s * q)]
                        for q in range(q1, OW):
                            xs[o + u(q)] = 0
"""

_SHAPES = """\
    N, C, H, W = x.shape
    Hq = (H + 2 * ph + s - 1) // s
    M = OH * OW
    R = s * Hq * OW
    S = C * R
    xf = x.ravel()
"""


def _tap_starts(kw: int) -> list[str]:
    """Where the runs of kernel row i's taps start in xs (channel c)."""
    return [f"        s{j} = u({j} * S + c * R + ((i % s) * Hq + i // s) * OW)"
            for j in range(kw)]


def _tap_loads(kw: int) -> list[str]:
    """The taps' values at output pixel t."""
    return [f"            a{j} = xs[s{j} + t]" for j in range(kw)]


def _block_fwd(fb: int, kw: int, ind: str) -> list[str]:
    """The forward's body for filters f0 .. f0+fb-1: zero their planes, then add the taps."""
    lines = [f"for t in range(u({fb} * M)):", "    yf[yb + u(f0 * M) + t] = 0",
             "for c in range(C):", "    for i in range(KH):",
             "        r0, r1 = (max(0, ph - i), max(0, min(OH, H + ph - i))) if rows else (0, OH)",
             "        r0 = min(r0, r1)"]
    for b in range(fb):
        for j in range(kw):
            lines.append(f"        w{b}_{j} = "
                         f"wf[u((((fo + f0 + {b}) * C + c) * KH + i) * KW + {j})]")
    lines += _tap_starts(kw)
    for b in range(fb):
        lines.append(f"        d{b} = yb + u((f0 + {b}) * M)")
    lines.append("        for t in range(u(r0 * OW), u(r1 * OW)):")
    lines += _tap_loads(kw)
    for b in range(fb):
        terms = " + ".join(f"w{b}_{j} * a{j}" for j in range(kw))
        lines.append(f"            yf[d{b} + t] += {terms}")
    return [ind + ln for ln in lines]


def forward_source(fb: int, kw: int) -> str:
    """``kernel(x, w, s, ph, pw, rows, y)``: the convolution of x (N, C, H, W) padded by
    (ph, pw) with w (F, C, KH, kw), stride s, into y viewed as (N*G, F/G, OH, OW): each of
    the N*G units computes F/G filters of one sample (G > 1 gives small batches parallel
    work), ``fb`` filters per pass. ``rows`` (stride 1 only): skip the products of the
    padding rows (zero where w is finite: the data gradient, whose gradient is padded by
    k - 1 - p, 8 of LeNet's 18 rows)."""
    ind = " " * 12
    body = [f"    KW = {kw}", "    KH = w.shape[2]",
            "    U = y.shape[0]", "    FG, OH, OW = y.shape[1], y.shape[2], y.shape[3]",
            _SHAPES.rstrip("\n"), "    G = U // N", "    wf, yf = w.ravel(), y.ravel()",
            "    for p in prange(U):", "        n = p // G", "        fo = (p % G) * FG",
            "        xs = np.empty(KW * S, x.dtype)",
            _FILL.rstrip("\n"), "        yb = u(p * FG * M)",
            f"        nb = FG // {fb} * {fb}",
            f"        for f0 in range(0, nb, {fb}):", *_block_fwd(fb, kw, ind),
            "        for f0 in range(nb, FG):", *_block_fwd(1, kw, ind)]
    return _HEAD + "@njit(parallel=True, fastmath={'contract'}, **_OPTS)\n" + \
        "def kernel(x, w, s, ph, pw, rows, y):\n" + "\n".join(body) + "\n"


def groups(n: int, f: int, fb: int, threads: int) -> int:
    """Filter groups per sample: the fewest (a power of two dividing ``f``, at least ``fb``
    filters each) that give the threads equal shares of units or two units each (each unit
    copies its sample's image: one unit per thread at batch 1, not two)."""
    g = 1
    while (n * g) % threads and n * g < 2 * threads and f % (2 * g) == 0 and \
            f // (2 * g) >= fb:
        g *= 2
    return g


def _block_wgrad(fb: int, kw: int, ind: str) -> list[str]:
    """The weight gradient's sums for filters f0 .. f0+fb-1 of one sample."""
    lines = ["for c in range(C):", "    for i in range(KH):", *_tap_starts(kw)]
    for b in range(fb):
        lines.append(f"        g{b} = gb + u((f0 + {b}) * M)")
        for j in range(kw):
            lines.append(f"        r{b}_{j} = zero")
    lines.append("        for t in range(u(M)):")
    lines += _tap_loads(kw)
    for b in range(fb):
        lines.append(f"            h{b} = gf[g{b} + t]")
        for j in range(kw):
            lines.append(f"            r{b}_{j} += h{b} * a{j}")
    for b in range(fb):
        for j in range(kw):
            lines.append(f"        af[ab + u((((f0 + {b}) * C + c) * KH + i) * KW + {j})] += "
                         f"r{b}_{j}")
    return [ind + ln for ln in lines]


def wgrad_source(fb: int, kw: int) -> str:
    """``kernel(g, x, ph, pw, acc)``: acc (P, F, C, KH, kw) = the weight gradient of the
    stride-1 convolution of x (N, C, H, W) padded by (ph, pw) whose output gradient is g
    (N, F, OH, OW), over the samples of each of the P parts (sum acc over its first axis)."""
    ind = " " * 12
    body = [f"    KW = {kw}", "    P = acc.shape[0]", "    F, KH = acc.shape[1], acc.shape[3]",
            "    OH, OW = g.shape[2], g.shape[3]", _SHAPES.rstrip("\n"),
            "    gf, af = g.ravel(), acc.ravel()", "    zero = x.dtype.type(0)",
            "    per = F * C * KH * KW",
            "    for p in prange(P):", "        ab = u(p * per)",
            "        for t in range(u(per)):", "            af[ab + t] = 0",
            "        xs = np.empty(KW * S, x.dtype)",
            "        for n in range(N * p // P, N * (p + 1) // P):",
            textwrap.indent(_FILL.rstrip("\n"), "    "),
            "            gb = u(n * F * M)",
            f"            nb = F // {fb} * {fb}",
            f"            for f0 in range(0, nb, {fb}):", *_block_wgrad(fb, kw, ind + "    "),
            "            for f0 in range(nb, F):", *_block_wgrad(1, kw, ind + "    ")]
    return _HEAD + "@njit(parallel=True, fastmath={'contract', 'reassoc'}, **_OPTS)\n" + \
        "def kernel(g, x, s, ph, pw, acc):\n" + "\n".join(body) + "\n"


# ---- when: measured against im2col + GEMM (``cpu_conv_steps``) ------------------------------
# Speed-ups at batch 64, 28x28 and 14x14 maps, 5x5 and 3x3 kernels, padded to keep the map,
# two threads (forward / weight gradient / data gradient): LeNet's layers 3.3-6.5x; F up
# to 32 1.4-9x in every direction but the data gradient of C = 1 (0.6-1.4x) and of C = 3
# with F >= 64 (0.7-1.0x); F = 64 1.0-3.2x (the data gradient of C <= 16: 0.7-1.3x); F =
# 128 0.9-2.2x forward and weight gradient, 0.6-1.5x data gradient. Stride 2 (first layers,
# batch 16): ResNet's 7x7 C=3 F=64 1.4x forward, 2.0x weight gradient; 3x3 C=32 F=64 at 56x56
# 2.2x / 1.7x; F = 128 only the weight gradient gained (1.3x, C = 64), F >= 256 lost 2-4x.
# 1x1 kernels keep the GEMM (one tap per row leaves the loop nothing to share). The forward
# splits over samples and, for batches the threads cannot share equally, filter groups
# (:func:`groups`): at batch 2 ResNet's first layer 3.7 -> 2.7 ms. At batch 1 two groups a
# thread lost (1.88 vs 2.0 ms: each group copies the image again); one group a thread wins,
# with the fused bias and ReLU, alternating in one process: ResNet's first layer 2.23-2.34
# -> 1.49-1.51 ms, MobileNet's (3x3/2, F = 32) 0.36 -> 0.33, DenseNet's 3x3 C=128 F=32 at
# 56x56 2.54 -> 1.65 and at 28x28 0.54 -> 0.40, 3x3/2 C=F=64 at 56x56 0.48 -> 0.46; LeNet's
# layers at batch 1 (a few thousand outputs) lost to the threads' hand-off (0.023 -> 0.025,
# 0.030 -> 0.040 ms), hence ``MIN_OUT_B1`` (and the data gradient, not measured at batch 1,
# keeps im2col there). The weight gradient splits over samples only (``MIN_N_WGRAD``).
# Small maps of many channels keep the GEMM, whose reduction (C*kh*kw) is then long and
# efficient: DenseNet's 3x3 C=128 F=32 layers at batch 16 gained 1.1-2.0x at 56x56 to 14x14
# and lost 1.05-1.25x at 7x7, C=512 F=64 at 7x7 lost 1.2-1.6x.
MAX_F = 64
MIN_N = 1
MIN_OUT_B1 = 1 << 14   # outputs (F x OH x OW) a sample of a batch of one needs
MIN_N_WGRAD = 4
SMALL_MAP = 196     # output pixels (14x14) below which ...
WIDE_CK = 576       # ... a reduction this long (64 channels of 3x3) keeps the GEMM
MIN_KW = 2
# filters per pass: LeNet's layers (F = 6, 16) 2 and 3 alike, 1 and 4 slower; from
# FB_WIDE_MIN_F filters on FB_WIDE (ResNet's 7x7/2 first layer at batch 16, forward 29.5 ->
# 21.5 ms, weight gradient 28.2 -> 22.4 ms; im2col + GEMM 30.0 and 45.8)
FB = 2
FB_WIDE = 4
FB_WIDE_MIN_F = 32
PARTS = 8       # the weight gradient's partial sums (a fixed count: the same sum order on
                # any number of threads)
_ENABLED = os.environ.get("EMBER_DIRECT_CONV", "1").lower() not in ("0", "false", "no")


def applies(geo: Geo, kind: str) -> bool:
    """Whether ``kind`` ('forward', 'dgrad', 'wgrad') of ``geo`` runs here."""
    if not _ENABLED or geo.s not in ((1, 1), (2, 2)) or geo.d != (1, 1) or geo.g != 1 or \
            geo.k[1] < MIN_KW or geo.f > MAX_F or (geo.m < SMALL_MAP and geo.ck >= WIDE_CK):
        return False
    if kind == "wgrad":
        return geo.n >= MIN_N_WGRAD
    if geo.n < MIN_N or (geo.n == 1 and (kind != "forward" or geo.f * geo.m < MIN_OUT_B1)):
        return False
    if kind == "forward":
        return True
    if geo.s != (1, 1):
        return False
    # the forward of the output gradient padded by k - 1 - p must give back the image
    qh, qw = geo.k[0] - 1 - geo.p[0], geo.k[1] - 1 - geo.p[1]
    if min(qh, qw) < 0 or (geo.oh + 2 * qh - geo.k[0] + 1, geo.ow + 2 * qw - geo.k[1] + 1) \
            != (geo.h, geo.w):
        return False
    return geo.c >= 16 or (geo.c >= 3 and geo.f <= 32)


def _fb(f: int) -> int:
    return FB_WIDE if f >= FB_WIDE_MIN_F else FB


def _grouped(y: np.ndarray, n: int, f: int, fb: int) -> np.ndarray:
    """The output (n, f, ...) viewed as :func:`forward_source`'s units (n*G, f/G, ...)."""
    g = groups(n, f, fb, threads())
    return y.reshape(n * g, f // g, *y.shape[2:])


def forward_step(geo: Geo, dt: np.dtype, epi, has_bias: bool, n_leaves: int, sliced: list,
                 fallback):
    """``step(x, w, [bias], leaves.., y, others..)`` as ``cpu_conv_steps.forward_step``'s
    (``fallback``, which runs until the kernel is compiled: ``cpu_tiered``)."""
    fb = _fb(geo.f)
    src = forward_source(fb, geo.k[1])
    conv = split(src)
    n, f, m = geo.n, geo.f, geo.m
    x4, y4 = (n, geo.c, geo.h, geo.w), (n, f, geo.oh, geo.ow)
    w4 = (f, geo.c, *geo.k)
    ph, pw = geo.p
    st = geo.s[0]
    tier = Deferred(lambda: [(conv, (np.empty((0, *x4[1:]), dt), np.empty(w4, dt), st, ph,
                                     pw, False, np.empty((0, *y4[1:]), dt)))], [src])

    def step(x, w, *rest):
        if not tier.ready():
            return fallback(x, w, *rest)
        bias, leaves, y, extra = _unpack(rest, has_bias, n_leaves)
        conv(np.ascontiguousarray(x).reshape(x4), np.ascontiguousarray(w).reshape(w4), st, ph,
             pw, False, _grouped(y.reshape(y4), n, f, fb))
        if epi is not None:
            _run_epilogue(epi, y.reshape(n, f, m), None, bias, leaves, sliced, extra, 0, n)

    def own_calls(x, w, *rest):
        """The epilogue's kernels (the direct kernel is ``tier``'s)."""
        if epi is None:
            return []
        bias, leaves, y, extra = _unpack(rest, has_bias, n_leaves)
        return epilogue_calls(epi, y.reshape(n, f, m), None, bias, leaves, sliced, extra)

    def kernel_calls(x, w, *rest):
        """The fallback's (which a cold first call runs) and the epilogue's."""
        return fallback.kernel_calls(x, w, *rest) + own_calls(x, w, *rest)
    step.deferred = tier
    step.kernel_calls, step.own_calls = kernel_calls, own_calls
    return step


def dgrad_step(geo: Geo, dt: np.dtype, scratch: Scratch, epi, has_bias: bool, n_leaves: int,
               sliced: list, fallback):
    """``step(gy, w, [bias], leaves.., dx, others..)`` as ``cpu_conv_steps.dgrad_step``'s:
    the forward kernel over gy padded by k - 1 - p with the flipped filters (C, F, kh, kw);
    ``fallback`` (the im2col step) for a non-finite filter and until the kernel is
    compiled."""
    fb = _fb(geo.c)
    src = forward_source(fb, geo.k[1])
    conv, finite = split(src), kernel(FINITE)
    n, c, f = geo.n, geo.c, geo.f
    g4, dx4 = (n, f, geo.oh, geo.ow), (n, c, geo.h, geo.w)
    w4, wt4 = (f, c, *geo.k), (c, f, *geo.k)
    qh, qw = geo.k[0] - 1 - geo.p[0], geo.k[1] - 1 - geo.p[1]
    pieces = [(wt4, dt)]
    scratch.need(pieces)
    hw = geo.h * geo.w
    tier = Deferred(lambda: [(finite, (np.zeros(w4, dt),)),
                             (conv, (np.empty((0, *g4[1:]), dt), np.empty(wt4, dt), 1, qh, qw,
                                     True, np.empty((0, *dx4[1:]), dt)))], [FINITE, src])

    def step(gy, w, *rest):
        w = np.ascontiguousarray(w).reshape(w4)
        if not (tier.ready() and finite(w)):
            return fallback(gy, w, *rest)
        bias, leaves, dx, extra = _unpack(rest, has_bias, n_leaves)
        wt = scratch.views(pieces)[0].reshape(wt4)
        np.copyto(wt, w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
        conv(np.ascontiguousarray(gy).reshape(g4), wt, 1, qh, qw, True,
             _grouped(dx.reshape(dx4), n, c, fb))
        if epi is not None:
            _run_epilogue(epi, dx.reshape(n, c, hw), None, bias, leaves, sliced, extra, 0, n)

    def own_calls(gy, w, *rest):
        """As ``forward_step``'s."""
        if epi is None:
            return []
        bias, leaves, dx, extra = _unpack(rest, has_bias, n_leaves)
        return epilogue_calls(epi, dx.reshape(n, c, hw), None, bias, leaves, sliced, extra)

    def kernel_calls(gy, w, *rest):
        """As ``forward_step``'s."""
        return fallback.kernel_calls(gy, w, *rest) + own_calls(gy, w, *rest)
    step.deferred = tier
    step.kernel_calls, step.own_calls = kernel_calls, own_calls
    return step


def wgrad_step(geo: Geo, dt: np.dtype, scratch: Scratch, fallback):
    """``step(gy, x, dw)`` as ``cpu_conv_steps.wgrad_step``'s: ``PARTS`` partial sums over
    the samples, then their sum (``fallback`` until the kernel is compiled)."""
    src = wgrad_source(_fb(geo.f), geo.k[1])
    conv = split(src)
    n, c, f = geo.n, geo.c, geo.f
    g4, x4 = (n, f, geo.oh, geo.ow), (n, c, geo.h, geo.w)
    acc5 = (PARTS, f, c, *geo.k)
    pieces = [(acc5, dt)]
    scratch.need(pieces)
    ph, pw = geo.p
    st = geo.s[0]
    tier = Deferred(lambda: [(conv, (np.empty((0, *g4[1:]), dt), np.empty((0, *x4[1:]), dt),
                                     st, ph, pw, np.empty((0, *acc5[1:]), dt)))], [src])

    def step(gy, x, dw):
        if not tier.ready():
            return fallback(gy, x, dw)
        acc = scratch.views(pieces)[0].reshape(acc5)
        conv(np.ascontiguousarray(gy).reshape(g4), np.ascontiguousarray(x).reshape(x4), st, ph,
             pw, acc)
        np.sum(acc, axis=0, out=dw.reshape(acc5[1:]))

    step.deferred = tier
    step.kernel_calls, step.own_calls = fallback.kernel_calls, lambda *args: []
    return step
