"""A depthwise convolution and the 1x1 convolution that alone reads its output, as one step of
the CPU backend (``cpu_conv.ConvSteps._dw_pw`` makes it; ``plan_memory.held_inputs`` keeps
the depthwise's inputs live until the 1x1, so it may run there): MobileNet's depthwise
outputs, 8 MB an image at batch 16, are never written to memory and read back."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import cpu_gemm
from .cpu_conv_kernels import DW_FWD
from .cpu_conv_scratch import Scratch, _run_epilogue, _thread_cols, _unpack, epilogue_calls
from .cpu_conv_steps import PW_TILES_MAX_M
from .cpu_split import SplitKernel, run_split_blas
from .cpu_steps import kernel

if TYPE_CHECKING:
    from .cpu_conv import Geo


def dw_pw_step(geo_a: Geo, geo_b: Geo, dt: np.dtype, scratch: Scratch, step_a, step_b, epi_a,
               epi_b, has_bias_a: bool, n_leaves_a: int, has_bias_b: bool, n_leaves_b: int,
               sliced_b: list[bool]):
    """``step(*args_a, *args_b)``: a depthwise convolution (``step_a``'s arguments, its
    output last) whose only reader is the 1x1 convolution ``step_b`` (its arguments after
    its input), run sample by sample on each thread: the depthwise result of a sample
    and its epilogue go into the thread's own buffer, which the sample's GEMM reads while
    it is in cache, so the depthwise output (MobileNet: 8 MB an image) is neither written
    to memory nor read back (``DW_PW``). Where the pool cannot split it, ``step_a`` then
    ``step_b`` as before. ``epi_a``: a serial epilogue (one sample, in a thread of the
    pool), whose leaves are per channel (not per sample)."""
    f_a, m_a, f, ck, m = geo_a.f, geo_a.m, geo_b.f, geo_b.c, geo_b.m
    n_a = 3 + has_bias_a + n_leaves_a
    dw = SplitKernel(kernel(DW_FWD), 10, 0)
    gargs = geo_a.args()
    kept = scratch.kept(("pointwise", f, ck, dt.str), cpu_gemm.KeptPack) \
        if m <= PW_TILES_MAX_M and cpu_gemm.applies(f, ck, dt) else None

    def step(*args):
        xa, wa, *ra = args[:n_a]
        bias_a, leaves_a, ya, _ = _unpack(ra, has_bias_a, n_leaves_a)
        wb, *rb = args[n_a:]
        bias_b, leaves_b, yb, extra_b = _unpack(rb, has_bias_b, n_leaves_b)
        w2 = wb.reshape(f, ck)
        pk = kept(w2) if kept is not None else None
        xa = np.ascontiguousarray(xa).reshape(geo_a.n, geo_a.c, geo_a.h, geo_a.w)
        yb3 = yb.reshape(geo_b.n, f, m)
        if not run_split_blas(_samples, (xa, np.ascontiguousarray(wa), bias_a, leaves_a, w2,
                                         pk, yb3, bias_b, leaves_b, extra_b), geo_b.n):
            step_a(*args[:n_a])
            step_b(ya, *args[n_a:])

    def _samples(xa, wa, bias_a, leaves_a, w2, pk, yb3, bias_b, leaves_b, extra_b, lo, hi):
        """Samples [lo, hi): depthwise and its epilogue into this thread's buffer, then the
        sample's GEMM from it; the 1x1's epilogue over the samples at the end."""
        loc = _thread_cols(f_a * m_a, dt)
        planes, loc3 = loc.reshape(f_a, geo_a.oh, geo_a.ow), loc.reshape(1, f_a, m_a)
        for a in range(lo, hi):
            dw.serial(xa[a:a + 1], wa, *gargs, planes, 0, f_a)
            if epi_a is not None:
                _run_epilogue(epi_a, loc3, None, bias_a, leaves_a, [False] * n_leaves_a, (),
                              0, 1)
            if pk is not None:
                cpu_gemm.matmuls(pk, loc3, yb3[a].reshape(1, f, m), True)
            else:
                np.matmul(w2, loc.reshape(ck, m), out=yb3[a])
        if epi_b is not None:
            _run_epilogue(epi_b, yb3, None, bias_b, leaves_b, sliced_b, extra_b, lo, hi)

    def kernel_calls(*args):
        """Both steps' kernels (the same types as this step's calls), ``epi_a`` on one
        sample."""
        xa, wa, *ra = args[:n_a]
        bias_a, leaves_a, ya, _ = _unpack(ra, has_bias_a, n_leaves_a)
        one = [] if epi_a is None else epilogue_calls(
            epi_a, ya.reshape(geo_a.n, f_a, m_a)[:1], None, bias_a, leaves_a,
            [False] * n_leaves_a, ())
        return step_a.kernel_calls(*args[:n_a]) + \
            step_b.kernel_calls(ya, *args[n_a:]) + one
    step.kernel_calls = kernel_calls
    return step
