"""The step functions of ``cpu_conv``: what runs for each convolution at run time.

Each builder returns a Python closure called from the generated run loop with the arena
arrays; it runs the numba kernels of ``cpu_conv_kernels`` and NumPy's BLAS over chunks of
samples (see ``cpu_conv``'s docstring for the algorithms). Scratch lives in one
``Scratch`` per compiled program: sized while planning, allocated on the first run.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import cpu_gemm
from .cpu_conv_kernels import COL2IM, DW_BWD_DATA, DW_BWD_WEIGHT, DW_FWD, IM2COL
from .cpu_conv_scratch import Scratch, _part, _run_epilogue, _thread_cols, _unpack, epilogue_calls
from .cpu_split import SplitKernel, matmuls, run_split, run_split_blas, threads
from .cpu_steps import kernel, split

if TYPE_CHECKING:
    from .cpu_conv import Geo

# elements of columns (or image) below which im2col/col2im run in the caller alone: handing
# parts to a worker costs ~60 us, and LeNet's first layer makes 86 calls a step over ~59K
# column elements each (training 8.1-8.9k -> 10.4-10.8k samples/s, alternating runs)
COPY_SPLIT_MIN = 1 << 18
# filters per group up to which a weight gradient's GEMM computes ``cols @ gy^T`` (and
# transposes the small result): OpenBLAS runs ``gy @ cols^T`` with few rows slowly (measured
# with K the chunk's columns: 6 x 100352 x 25 1.9 -> 1.26 ms, 16 x 12800 x 150 0.94 -> 0.50,
# 32 x 4096 x 27 1.26x faster; 64 rows even, 128 and more 5-40% slower)
WGRAD_T_MAX_F = 32
# output pixels from which a 1x1, stride-1, unpadded convolution's forward runs one GEMM per
# sample straight from the image into the output (no im2col copy, no transposing epilogue)
# rather than one per chunk of samples: MobileNet's layers at batch 16, 512 channels at 14x14
# 9.56 -> 8.87 ms, 256 at 28x28 11.43 -> 9.30; at 7x7 (49 pixels) the chunks' wider GEMMs
# won (8.96 vs 9.60 ms)
POINTWISE_SAMPLE_M = 196
# output pixels from which a strided 1x1 unpadded convolution (ResNet's downsampling) runs the
# same way, each sample's subsampled image copied by NumPy as its column matrix: no im2col
# pass, no transposing epilogue (ResNet-18's at batch 16, alternating in one process: 64->128
# at 28x28 2.93-3.29 -> 1.68 ms, 128->256 at 14x14 1.82-1.87 -> 1.34-1.38, 256->512 at 7x7
# 1.56-1.59 -> 1.38-1.41). Its gradients from ``STRIDED_PW_GRAD_M``: the data gradient as
# W^T @ gy per sample into the strided positions (2.46-2.50 -> 1.93 ms, 1.76-1.79 -> 1.54),
# the weight gradient as one product per sample summed in sample order (3.10-3.16 -> 2.07,
# 1.96-2.01 -> 1.62); at 7x7 both lost (1.42 -> 1.54, 1.87 -> 2.05)
STRIDED_PW_M = 49
STRIDED_PW_GRAD_M = 196
# output pixels from which a convolution's forward and data gradient (one group, not 1x1
# stride 1) run whole samples on each thread, each with its own column matrix: im2col (or
# col2im) and a GEMM straight into (from) the sample's planes, then its epilogue; the
# chunks' transposing copies are gone (ResNet-18's 3x3 stride-2 layers at batch 16,
# alternating in one process: forward 64->128 at 28x28 12.3 -> 10.8 ms, 128->256 at 14x14
# 11.1 -> 10.0; at 7x7 the chunks' wider GEMMs won, 10.0 against 11.1). Only where a
# sample's columns take at most ``COLS_SAMPLE_BYTES``: the threads keep their buffers
# (``cpu_conv_scratch._thread_cols``), outside the program's scratch (ResNet-18: 1.8 MB)
COLS_SAMPLE_M = 196
COLS_SAMPLE_BYTES = 1 << 23

# a depthwise forward with an epilogue splits over samples from this many per thread: each
# thread then runs the epilogue over its samples' planes while they are in cache (MobileNet
# 1.0 inference at batch 16, two networks called in turn: 143.6-145.2 ms best against
# 146.0-148.3 with the epilogue a second pass over the whole output); below it, over planes
DW_SAMPLES_PER_THREAD = 2
# a 1x1 convolution of one GEMM per sample from this many samples runs whole samples (GEMM
# at one BLAS thread, then the epilogue) on each thread: OpenBLAS's join per GEMM, and an
# epilogue too small to split, left a core idle (MobileNet 1.0 inference at batch 16, the
# two ways in turn in one process: 135.7-154.4 ms best against 148.5-159.0)
PW_SAMPLES_MIN = 2
# ... and with at most this many pixels a sample on cpu_gemm's tiles, its weights kept packed
# (one thread each, alternating with single-threaded BLAS: MobileNet 1.0's (512 x 512) @ (512
# x 196) 0.89 against 0.95 ms, (1024 x 1024) @ (1024 x 49) 0.89 against 1.09; at 3136
# pixels and more the two were within 3%)
PW_TILES_MAX_M = 1024


def _strided_pointwise(geo: Geo, min_m: int) -> bool:
    """A 1x1, strided, unpadded, ungrouped convolution (ResNet's downsampling) whose step
    runs whole samples on each thread (from ``min_m`` output pixels)."""
    return geo.k == (1, 1) and geo.p == (0, 0) and geo.s != (1, 1) and geo.g == 1 and \
        geo.n >= PW_SAMPLES_MIN and geo.m >= min_m


def _sample_cols(geo: Geo, itemsize: int) -> bool:
    """Whether a forward or data gradient runs whole samples with a column matrix each
    (``COLS_SAMPLE_M``, ``COLS_SAMPLE_BYTES``)."""
    return geo.g == 1 and not geo.depthwise and not geo.pointwise and \
        geo.n >= PW_SAMPLES_MIN and geo.m >= COLS_SAMPLE_M and \
        geo.ck * geo.m * itemsize <= COLS_SAMPLE_BYTES


def _im2col(geo: Geo):
    """``IM2COL`` split over the image's channels: in the caller alone below
    ``COPY_SPLIT_MIN`` column elements (as image elements of this geometry)."""
    per = geo.k[0] * geo.k[1] * geo.m / max(1, geo.h * geo.w)   # columns per image element
    return split(IM2COL, int(COPY_SPLIT_MIN / max(per, 1e-9)))


def forward_step(geo: Geo, dt: np.dtype, scratch: Scratch, epi, epi_t, has_bias: bool,
                  n_leaves: int, sliced: list[bool]):
    """``step(x, w, [bias], leaves.., y, others..)`` of a forward convolution."""
    nc, g, f, m = geo.chunk(dt.itemsize), geo.g, geo.f, geo.m
    if geo.pointwise and m >= POINTWISE_SAMPLE_M:
        nc = 1
    ck, fg = geo.ck // g, f // g
    direct = geo.depthwise
    pieces = [] if direct else [((geo.ck, nc, m), dt)] + ([((f, nc, m), dt)] if nc > 1 else [])
    scratch.need(pieces)
    im2col = SplitKernel(kernel(DW_FWD), 10, 0) if direct else _im2col(geo)
    gargs = geo.args()
    post = epi is not None
    per_sample = geo.pointwise and nc == 1 and g == 1 and geo.n >= PW_SAMPLES_MIN
    # a strided 1x1 (ResNet's downsampling) takes each sample's subsampled image as its
    # column matrix the same way
    sub = _strided_pointwise(geo, STRIDED_PW_M)
    per_sample = per_sample or sub
    sh, sw = geo.s
    own_cols = _sample_cols(geo, dt.itemsize) and not sub and hasattr(im2col, "serial")
    # a 1x1 convolution's samples on cpu_gemm's tiles while its weights repeat (inference)
    kept = scratch.kept(("pointwise", f, ck, dt.str), cpu_gemm.KeptPack) \
        if per_sample and not sub and m <= PW_TILES_MAX_M and cpu_gemm.applies(f, ck, dt) \
        else None

    def step(x, w, *rest):
        bias, leaves, y, extra = _unpack(rest, has_bias, n_leaves)
        x = np.ascontiguousarray(x).reshape(geo.n, geo.c, geo.h, geo.w)
        y3 = y.reshape(geo.n, f, m)
        if direct:
            planes = y.reshape(geo.n * f, geo.oh, geo.ow)
            w = np.ascontiguousarray(w)
            parts = threads()
            if post and geo.n >= DW_SAMPLES_PER_THREAD * parts:
                run_split(_dw_samples, (x, w, planes, y3, bias, leaves, extra), geo.n, parts)
                return
            im2col(x, w, *gargs, planes)
            if post:
                _run_epilogue(epi, y3, None, bias, leaves, sliced, extra, 0, geo.n)
            return
        w3 = w.reshape(g, fg, ck)
        pk = kept(w3[0]) if kept is not None else None
        if per_sample and run_split_blas(_pw_samples, (x, w3, y3, bias, leaves, extra, pk),
                                         geo.n):
            return
        if own_cols and run_split_blas(_col_samples, (x, w3[0], y3, bias, leaves, extra),
                                       geo.n):
            return
        cols, *t = scratch.views(pieces)
        for a in range(0, geo.n, nc):
            e = min(geo.n, a + nc)
            if e - a == 1:
                if geo.pointwise:
                    src = x[a].reshape(g, ck, m)
                else:
                    cc = _part(cols, (geo.ck, 1, m))
                    im2col(x[a:e], *gargs, geo.oh, geo.ow, cc)
                    src = cc.reshape(g, ck, m)
                _mm(w3, src, y3[a].reshape(g, fg, m))
                if post:
                    _run_epilogue(epi, y3, None, bias, leaves, sliced, extra, a, e)
                continue
            cc = _part(cols, (geo.ck, e - a, m))
            tt = _part(t[0], (f, e - a, m))
            im2col(x[a:e], *gargs, geo.oh, geo.ow, cc)
            _mm(w3, cc.reshape(g, ck, -1), tt.reshape(g, fg, -1))
            _run_epilogue(epi_t if post else _copy_t, y3, tt, bias, leaves, sliced, extra,
                          a, e)

    def _pw_samples(x, w3, y3, bias, leaves, extra, pk, lo, hi):
        """Samples [lo, hi) of a 1x1 convolution, one GEMM each (``pk``: the weights packed
        for cpu_gemm's tiles), and their epilogue."""
        for a in range(lo, hi):
            src = x[a, :, ::sh, ::sw] if sub else x[a]
            if pk is not None:
                cpu_gemm.matmuls(pk, src.reshape(1, ck, m), y3[a].reshape(1, f, m), True)
            else:
                np.matmul(w3[0], src.reshape(ck, m), out=y3[a])
        if post:
            _run_epilogue(epi, y3, None, bias, leaves, sliced, extra, lo, hi)

    def _col_samples(x, w2, y3, bias, leaves, extra, lo, hi):
        """Samples [lo, hi): im2col into this thread's columns, one GEMM into the sample's
        planes, then the epilogue over them."""
        cc = _thread_cols(geo.ck * m, dt).reshape(geo.ck, 1, m)
        for a in range(lo, hi):
            im2col.serial(x[a:a + 1], *gargs, geo.oh, geo.ow, cc, 0, geo.c)
            np.matmul(w2, cc.reshape(ck, m), out=y3[a])
        if post:
            _run_epilogue(epi, y3, None, bias, leaves, sliced, extra, lo, hi)

    def _dw_samples(x, w, planes, y3, bias, leaves, extra, lo, hi):
        """Samples [lo, hi) of a depthwise convolution and its epilogue, one thread: the
        epilogue reads the planes while they are in cache."""
        im2col.serial(x[lo:hi], w, *gargs, planes[lo * f:hi * f], 0, (hi - lo) * f)
        _run_epilogue(epi, y3, None, bias, leaves, sliced, extra, lo, hi)

    def kernel_calls(x, w, *rest):
        """The kernels ``step`` calls, with arguments of their types (``runtime.precompile``
        compiles them before the first run)."""
        bias, leaves, y, extra = _unpack(rest, has_bias, n_leaves)
        x = np.empty((geo.n, geo.c, geo.h, geo.w), dt)
        y3 = y.reshape(geo.n, f, m)
        if direct:
            calls = [(im2col, (x, np.empty(w.shape, dt), *gargs,
                               y.reshape(geo.n * f, geo.oh, geo.ow)))]
        else:
            calls = [(im2col, (x[:1], *gargs, geo.oh, geo.ow, np.empty((geo.ck, 1, m), dt)))]
        if post and (direct or geo.n % nc == 1 or nc == 1 or sub or own_cols):
            calls += epilogue_calls(epi, y3, None, bias, leaves, sliced, extra)
        if post and not direct and nc > 1:
            calls += epilogue_calls(epi_t, y3, np.empty((f, 1, m), dt), bias, leaves, sliced,
                                    extra)
        return calls
    step.kernel_calls = kernel_calls
    return step


def _mm(a, b, out) -> None:
    """``out[i] = a[i] @ b[i]`` by one 2-D BLAS call per group (``cpu_split.matmuls``):
    NumPy's stacked matmul often loops without BLAS (measured (1, 64, 147) @ (1, 147,
    12544): 12.6 ms, the 2-D product 1.8 ms; two stacked (64, 576) @ (576, 3136): 14.9 ms
    against 2 x 1.3 ms)."""
    if a.shape[0] == 1:
        np.matmul(a[0], b[0], out=out[0])
    else:
        matmuls(a, b, out)


def _copy_t(src, m):
    """(C, n, M) -> (n, C, M)."""
    np.copyto(m, src.transpose(1, 0, 2))


def dgrad_step(geo: Geo, dt: np.dtype, scratch: Scratch, epi, epi_t, has_bias: bool,
                n_leaves: int, sliced: list[bool]):
    """``step(gy, w, [bias], leaves.., dx, others..)`` of a data gradient (deconvolution):
    ``gy`` is the convolution's output side, ``dx`` its image."""
    nc, g, f, m = geo.chunk(dt.itemsize), geo.g, geo.f, geo.m
    ck, fg = geo.ck // g, f // g
    direct = geo.depthwise
    col2im = kernel(DW_BWD_DATA) if direct else split(COL2IM, COPY_SPLIT_MIN)
    gargs = geo.args()
    hw = geo.h * geo.w
    sub = _strided_pointwise(geo, STRIDED_PW_GRAD_M)
    sh, sw = geo.s
    own_cols = _sample_cols(geo, dt.itemsize) and not sub and hasattr(col2im, "serial")
    # whole samples per thread: W^T @ gy on cpu_gemm's tiles (W^T's rows in blocks of 32,
    # packed per call in runs of 32) where single-threaded BLAS is slowest (per sample, one
    # thread each, alternating in one process: (128 x 1152) @ (1152 x 784) 4.6 against 5.2
    # ms, (256 x 2304) @ (2304 x 196) 17.4 against 18.7 ms for 16); a chunk's wide GEMM on
    # both threads stays BLAS's (the tiles lost: 19.0 against 17.5 ms at (512, 4608, 784))
    tiles = own_cols and cpu_gemm.applies(ck, f, dt)
    pieces = [] if direct else [((geo.ck, nc, m), dt)] + ([((f, nc, m), dt)] if nc > 1 else [])
    pieces += [((f, ck), dt)] if tiles else []
    scratch.need(pieces)

    def step(gy, w, *rest):
        bias, leaves, dx, extra = _unpack(rest, has_bias, n_leaves)
        gy = np.ascontiguousarray(gy).reshape(geo.n, f, geo.oh, geo.ow)
        dx3 = dx.reshape(geo.n, geo.c, hw)
        dx = dx.reshape(geo.n, geo.c, geo.h, geo.w)
        if direct:
            col2im(gy, np.ascontiguousarray(w), *gargs, dx)
            if epi is not None:
                _run_epilogue(epi, dx3, None, bias, leaves, sliced, extra, 0, geo.n)
            return
        # W^T as a view: BLAS takes it transposed, as fast as a copy (which cost 5.3 ms a
        # call for a (512, 4608) filter, a third of the GEMM's time)
        wt = np.ascontiguousarray(w).reshape(g, fg, ck).transpose(0, 2, 1)
        g3 = gy.reshape(geo.n, f, m)
        if sub and run_split_blas(_sub_samples, (wt[0], g3, dx, dx3, bias, leaves, extra),
                                  geo.n):
            return
        cols, *t = scratch.views(pieces)
        pk = None
        if tiles and cpu_gemm.TIER.ready():
            pk = cpu_gemm.pack(w.reshape(1, f, ck), t[-1], transposed=True)
        if own_cols and run_split_blas(_col_samples, (wt[0], g3, dx, dx3, bias, leaves,
                                                      extra, pk), geo.n):
            return
        for a in range(0, geo.n, nc):
            e = min(geo.n, a + nc)
            cc = _part(cols, (geo.ck, e - a, m))
            if e - a == 1:
                src = g3[a].reshape(g, fg, m)
            else:
                tt = _part(t[0], (f, e - a, m))
                np.copyto(tt, g3[a:e].transpose(1, 0, 2))
                src = tt.reshape(g, fg, -1)
            _mm(wt, src, cc.reshape(g, ck, -1))
            col2im(cc, *gargs, geo.oh, geo.ow, dx[a:e].reshape((e - a) * geo.c, geo.h, geo.w))
            if epi is not None:
                _run_epilogue(epi, dx3, None, bias, leaves, sliced, extra, a, e)

    def _col_samples(wt, g3, dx, dx3, bias, leaves, extra, pk, lo, hi):
        """Samples [lo, hi): W^T @ gy into this thread's columns (``pk``: W^T packed for
        cpu_gemm's tiles), col2im into the sample's image gradient, then the epilogue."""
        cc = _thread_cols(geo.ck * m, dt).reshape(geo.ck, 1, m)
        for a in range(lo, hi):
            if pk is not None:
                cpu_gemm.matmuls(pk, g3[a].reshape(1, f, m), cc.reshape(1, ck, m), True)
            else:
                np.matmul(wt, g3[a], out=cc.reshape(ck, m))
            planes = dx[a].reshape(geo.c, geo.h, geo.w)
            col2im.serial(cc, *gargs, geo.oh, geo.ow, planes, 0, geo.c)
        if epi is not None:
            _run_epilogue(epi, dx3, None, bias, leaves, sliced, extra, lo, hi)

    def _sub_samples(wt, g3, dx, dx3, bias, leaves, extra, lo, hi):
        """Samples [lo, hi) of a strided 1x1 convolution's data gradient: W^T @ gy into
        the strided positions, zeros elsewhere, then the epilogue."""
        for a in range(lo, hi):
            dx[a].fill(0)
            dx[a, :, ::sh, ::sw] = np.matmul(wt, g3[a]).reshape(geo.c, geo.oh, geo.ow)
        if epi is not None:
            _run_epilogue(epi, dx3, None, bias, leaves, sliced, extra, lo, hi)

    def kernel_calls(gy, w, *rest):
        """As ``forward_step``'s."""
        bias, leaves, dx, extra = _unpack(rest, has_bias, n_leaves)
        dx4 = np.empty((geo.n, geo.c, geo.h, geo.w), dt)
        if direct:
            calls = [(col2im, (np.empty((geo.n, f, geo.oh, geo.ow), dt), np.empty(w.shape, dt),
                               *gargs, dx4))]
        else:
            calls = [(col2im, (np.empty((geo.ck, 1, m), dt), *gargs, geo.oh, geo.ow,
                               dx4[:1].reshape(geo.c, geo.h, geo.w)))]
        if epi is not None:
            calls += epilogue_calls(epi, dx.reshape(geo.n, geo.c, hw), None, bias, leaves,
                                    sliced, extra)
        return calls
    step.kernel_calls = kernel_calls
    return step


def wgrad_step(geo: Geo, dt: np.dtype, scratch: Scratch):
    """``step(gy, x, dw)`` of a weight gradient: one GEMM per chunk and group over the
    chunk's columns, accumulated over the chunks. With few filters per group (at most
    ``WGRAD_T_MAX_F``) the GEMM computes the transposed gradient, ``cols @ gy^T``, copied
    into ``dw`` at the end (see there)."""
    nc, g, f, m = geo.chunk(dt.itemsize, widest=True), geo.g, geo.f, geo.m
    ck, fg = geo.ck // g, f // g
    direct = geo.depthwise
    chunks = -(-geo.n // nc)
    flip = fg <= WGRAD_T_MAX_F
    dshape = (g, ck, fg) if flip else (g, fg, ck)   # the GEMMs' result
    pieces = [] if direct else [((geo.ck, nc, m), dt)] + \
        ([((f, nc, m), dt)] if nc > 1 else []) + ([(dshape, dt)] if chunks > 1 else []) + \
        ([(dshape, dt)] if flip else [])
    scratch.need(pieces)
    im2col = kernel(DW_BWD_WEIGHT) if direct else _im2col(geo)
    gargs = geo.args()
    sub = _strided_pointwise(geo, STRIDED_PW_GRAD_M)
    sh, sw = geo.s
    if sub:
        scratch.need([((geo.n, f, ck), dt)])

    def step(gy, x, dw):
        gy = np.ascontiguousarray(gy).reshape(geo.n, f, geo.oh, geo.ow)
        x = np.ascontiguousarray(x).reshape(geo.n, geo.c, geo.h, geo.w)
        if direct:
            im2col(gy, x, *gargs, dw)
            return
        if sub:   # one product per sample on the pool's threads, summed in sample order
            (prods,) = scratch.views([((geo.n, f, ck), dt)])
            prods = prods.reshape(geo.n, f, ck)
            g3 = gy.reshape(geo.n, f, m)
            if run_split_blas(_sub_products, (g3, x, prods), geo.n):
                np.sum(prods, axis=0, out=dw.reshape(f, ck))
                return
        views = scratch.views(pieces)
        cols = views[0]
        tt_full = views[1] if nc > 1 else None
        acc = views[1 + (nc > 1)].reshape(dshape) if chunks > 1 else None
        dw3 = dw.reshape(g, fg, ck)
        res = views[-1].reshape(dshape) if flip else dw3
        g3 = gy.reshape(geo.n, f, m)
        for a in range(0, geo.n, nc):
            e = min(geo.n, a + nc)
            cc = _part(cols, (geo.ck, e - a, m))
            if e - a == 1 and geo.pointwise:
                cs = x[a].reshape(g, ck, m)
            else:
                im2col(x[a:e], *gargs, geo.oh, geo.ow, cc)
                cs = cc.reshape(g, ck, -1)
            if e - a == 1:
                gs = g3[a].reshape(g, fg, m)
            else:
                tt = _part(tt_full, (f, e - a, m))
                np.copyto(tt, g3[a:e].transpose(1, 0, 2))
                gs = tt.reshape(g, fg, -1)
            dst = res if a == 0 else acc
            if flip:
                matmuls(cs, gs.transpose(0, 2, 1), dst)
            else:
                matmuls(gs, cs.transpose(0, 2, 1), dst)
            if a:
                res += acc
        if flip:
            np.copyto(dw3, res.transpose(0, 2, 1))

    def _sub_products(g3, x, prods, lo, hi):
        """gy[a] @ x[a]'s subsampled image^T for samples [lo, hi) (a strided 1x1)."""
        for a in range(lo, hi):
            np.matmul(g3[a], x[a, :, ::sh, ::sw].reshape(ck, m).T, out=prods[a])

    def kernel_calls(gy, x, dw):
        """As ``forward_step``'s."""
        x = np.empty((geo.n, geo.c, geo.h, geo.w), dt)
        if direct:
            return [(im2col, (np.empty((geo.n, f, geo.oh, geo.ow), dt), x, *gargs, dw))]
        return [(im2col, (x[:1], *gargs, geo.oh, geo.ow, np.empty((geo.ck, 1, m), dt)))]
    step.kernel_calls = kernel_calls
    return step

