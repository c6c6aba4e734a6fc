"""numba kernel sources of the CPU backend's convolution steps (``cpu_conv``).

Fixed sources (one module each, shared by every layer: the shapes are run-time arguments, so
a network compiles each kernel once per dtype) and one generated epilogue per fused group:

- ``IM2COL``: the windows of a chunk of samples ``x (n, C, H, W)`` copied into columns
  ``cols (C*kh*kw, n, OH*OW)`` (Caffe's im2col, Jia et al. 2014, with the batch inside each
  row so that one GEMM covers the chunk), from zero-padded copies of the planes;
- ``COL2IM``: the adjoint, ``dx[b, c]`` accumulated from the rows of channel ``c``, one
  (sample, channel) plane at a time, each zeroed and summed while in cache.
  Both split their outer loop over ``cpu_split``'s threads (``dx`` viewed as (N*C, H, W)).
  They were serial while OpenBLAS's workers spun ~0.1 s after each GEMM and a parallel
  im2col beside them waited for its straggler (ResNet-18 layer 1, batch 16: 52-62 ms
  parallel, 24 ms serial); with the spin cut to 2**16 cycles (``runtime.thread_pools``)
  the split halves pay;
- ``DW_FWD``, ``DW_BWD_DATA``, ``DW_BWD_WEIGHT``: direct kernels for convolutions with one
  input channel per group (depthwise, as in MobileNet): a GEMM of one row would waste BLAS
  (the forward a serial kernel over a range of output planes, split by ``cpu_split``);
- ``conv_epilogue_source``: bias + an elementwise epilogue over the (n, F, OH*OW) result,
  optionally reading it from the transposed (F, n, OH*OW) layout of a batched GEMM.

Indices are uint64 (``u``): numba's wraparound test on signed indices keeps LLVM from
vectorising the inner loops (as ``ir/conv_kernels``). The reductions of the depthwise weight
gradient allow ``reassoc`` (vectorised sums; NaN and Inf still propagate).
"""
from __future__ import annotations

from collections.abc import Sequence

from ember.ir.graph import Node, Value

from .codegen import ConstPool, scalar_body
from .cpu_kernels import FUNCS, _decorator, _header

_HEAD = ("import numpy as np\nfrom numba import njit, prange\nfrom numba import uint64 as u\n\n"
         "_OPTS = dict(cache=True, nogil=True, error_model='numpy')\n\n\n")

# IM2COL over a range of input channels (split by ``cpu_split``): each channel's planes of
# the chunk are first copied into zero-padded planes (the loops then need no bounds), then
# every (kernel row, column) tap's rows of the columns are read from them: rows of output
# width up to 14 as one gather over the whole map (an index table), wider ones a row at a
# time. The former kernel (one row of the columns at a time, three ranges per output row
# for the padding) spent its time in loop overhead on small maps, measured serial against
# this one: 512 channels at 7x7 0.235 -> 0.092 ms (batch 16: 2.71 -> 1.46), 256 at 14x14
# 0.198 -> 0.153, stride 2 0.102 -> 0.052, 128 at 28x28 batch 4 0.663 -> 0.518, 64 at 56x56
# 0.236 -> 0.146; 64 at 56x56 stride 2, batch 4 0.552 -> 0.604 the one loss seen
IM2COL = _HEAD + """@njit(parallel=True, fastmath={'contract'}, **_OPTS)
def kernel(x, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow, cols):
    n, c, h, w = x.shape
    C = x.shape[1]
    m = oh * ow
    hp, wp = h + 2 * ph, w + 2 * pw
    pl = hp * wp
    xf, cf = x.ravel(), cols.ravel()
    idx = np.empty(m, np.int64)
    for y in range(oh):
        for q in range(ow):
            idx[y * ow + q] = y * sh * wp + q * sw
    xp = np.zeros(n * pl, x.dtype)   # only the interiors are written: the pads stay zero
    for ci in prange(C):
        for b in range(n):
            src = u((b * c + ci) * h * w)
            for r in range(h):
                d0 = u(b * pl + (r + ph) * wp + pw)
                s0 = src + u(r * w)
                for q in range(w):
                    xp[d0 + u(q)] = xf[s0 + u(q)]
        for i in range(kh):
            for j in range(kw):
                for b in range(n):
                    base = u(b * pl + i * dh * wp + j * dw)
                    o = u(((ci * kh * kw + i * kw + j) * n + b) * m)
                    if ow <= 14:
                        for t in range(m):
                            cf[o + u(t)] = xp[base + u(idx[t])]
                    elif sw == 1:
                        for y in range(oh):
                            s0 = base + u(y * sh * wp)
                            d0 = o + u(y * ow)
                            for q in range(ow):
                                cf[d0 + u(q)] = xp[s0 + u(q)]
                    else:
                        for y in range(oh):
                            s0 = base + u(y * sh * wp)
                            d0 = o + u(y * ow)
                            for q in range(ow):
                                cf[d0 + u(q)] = xp[s0 + u(q * sw)]
"""

COL2IM = _HEAD + """@njit(parallel=True, fastmath={'contract'}, **_OPTS)
def kernel(cols, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow, dx):
    P, h, w = dx.shape
    n = cols.shape[1]
    c = P // n
    m = oh * ow
    cf, xf = cols.ravel(), dx.ravel()
    for p in prange(P):
        b = p // c
        ci = p % c
        base = u(p * h * w)
        for t in range(h * w):
            xf[base + u(t)] = 0
        for i in range(kh):
            for j in range(kw):
                r = (ci * kh + i) * kw + j
                off = j * dw - pw
                q0 = min(max(0, (sw - 1 - off) // sw), ow)
                q1 = max(min(ow, (w - 1 - off) // sw + 1), q0)
                for y in range(oh):
                    iy = y * sh + i * dh - ph
                    if iy < 0 or iy >= h or q1 <= q0:
                        continue
                    o = u((r * n + b) * m + y * ow + q0)
                    dst = base + u(iy * w + q0 * sw + off)
                    if sw == 1:
                        for q in range(q1 - q0):
                            xf[dst + u(q)] += cf[o + u(q)]
                    else:
                        for q in range(q1 - q0):
                            xf[dst + u(q * sw)] += cf[o + u(q)]
"""

# Depthwise forward: each (sample, channel) plane is first copied into a zero-padded plane (in
# L1/L2), so the loops need no bounds and multiply the padding's zeros as the reference does
# (0 * inf is NaN in both). ``mult`` output channels per input channel (F = G * mult). (The
# same for the two gradients measured slower than bounds per row: they keep those.)
# A serial kernel over the output planes [lo_, hi_) of y viewed as (N*F, OH, OW), split by
# ``cpu_split.SplitKernel``: the padded plane is made once per call and only its interior is
# rewritten per plane (a parfor allocated and zeroed one per plane: MobileNet's 1024-channel
# 7x7 layer at batch 16 made 16K of them, 2.1 GB/s).
# 3x3 kernels (MobileNet's) take all nine taps in one pass, each output written once, and
# outputs rows of ``ROW_MIN`` or more straight into y (no wide plane and copy): at batch 16,
# 2 threads, stride 1, 32 channels at 112x112 3.45 -> 2.33 ms, 128 at 56x56 3.30 -> 2.12,
# 256 at 28x28 1.12 -> 0.94, 512 at 14x14 0.82 -> 0.65, 1024 at 7x7 0.93 -> 0.66 (the same
# sums in the same order: equal results)
DW_FWD = _HEAD + """ROW_MIN = 16


@njit(parallel=False, fastmath={'contract'}, **_OPTS)
def kernel(x, wt, kh, kw, sh, sw, dh, dw, ph, pw, y, lo_, hi_):
    n, c, h, w = x.shape
    P, oh, ow = y.shape
    f = P // n
    mult = f // c
    hp, wp = h + 2 * ph, w + 2 * pw
    xf, wf, yf = x.ravel(), wt.ravel(), y.ravel()
    xp = np.zeros(hp * wp + (kw - 1) * dw, x.dtype)
    wide = np.empty(oh * wp, y.dtype)
    hq, wq = (hp + 1) // 2, (wp + 1) // 2
    two = sh == 2 and sw == 2 and dh == 1 and dw == 1
    nine = kh == 3 and kw == 3 and dh == 1 and dw == 1
    psz = (hq + 1) * wq
    phases = np.zeros(4 * psz if two else 0, x.dtype)
    for p in range(u(lo_), u(min(hi_, P))):
        b = p // f
        fo = p % f
        ci = fo // mult
        src = u((b * c + ci) * h * w)
        base = u(p * oh * ow)
        if two:
            # stride 2: the padded plane split into its four (row, column) parity planes,
            # where every tap is a stride-1 shifted pass, as above (strided reads of every
            # tap ran 4-5x slower per output than stride 1)
            for t in range(4 * psz):
                phases[t] = 0
            qa = (pw + 1) // 2               # padded columns 2q, 2q + 1 both inside x
            qb = max(qa, (w - 2 + pw) // 2 + 1)  # for q in [qa, qb)
            for r in range(h):   # each row split into its even and odd padded columns
                pr = r + ph
                d0 = u((pr % 2) * 2 * psz + (pr // 2) * wq)
                d1 = d0 + u(psz)
                s0 = src + u(r * w) - u(pw)  # x's element of padded column k: s0 + k
                for q in range(qa, qb):
                    phases[d0 + u(q)] = xf[s0 + u(2 * q)]
                    phases[d1 + u(q)] = xf[s0 + u(2 * q + 1)]
                for q in range(qa):          # the edges (pads stay zero)
                    for k in range(2 * q, 2 * q + 2):
                        if pw <= k < pw + w:
                            phases[d0 + u(k % 2) * u(psz) + u(q)] = xf[s0 + u(k)]
                for q in range(qb, wq):
                    for k in range(2 * q, 2 * q + 2):
                        if pw <= k < pw + w:
                            phases[d0 + u(k % 2) * u(psz) + u(q)] = xf[s0 + u(k)]
            ln = u(oh * wq)
            if kh == 3 and kw == 3:   # all nine taps in one pass, each output written once
                k0 = u(fo * 9)
                a0, a1, a2 = wf[k0], wf[k0 + u(1)], wf[k0 + u(2)]
                b0, b1, b2 = wf[k0 + u(3)], wf[k0 + u(4)], wf[k0 + u(5)]
                c0, c1, c2 = wf[k0 + u(6)], wf[k0 + u(7)], wf[k0 + u(8)]
                # tap (i, j) reads parity plane (i % 2, j % 2) from row i // 2, column j // 2
                e0, e1, e2 = u(0), u(psz), u(1)
                m0, m1, m2 = u(2 * psz), u(3 * psz), u(2 * psz + 1)
                g0, g1, g2 = u(wq), u(psz + wq), u(wq + 1)
                for yy in range(oh if ow >= ROW_MIN else 0):   # rows straight into y
                    s0 = u(yy * wq)
                    row = base + u(yy * ow)
                    for q in range(ow):
                        t = s0 + u(q)
                        r0 = a0 * phases[e0 + t] + a1 * phases[e1 + t] + a2 * phases[e2 + t]
                        r1 = b0 * phases[m0 + t] + b1 * phases[m1 + t] + b2 * phases[m2 + t]
                        r2 = c0 * phases[g0 + t] + c1 * phases[g1 + t] + c2 * phases[g2 + t]
                        yf[row + u(q)] = r0 + r1 + r2
                if ow >= ROW_MIN:
                    continue
                for t in range(ln):
                    r0 = a0 * phases[e0 + t] + a1 * phases[e1 + t] + a2 * phases[e2 + t]
                    r1 = b0 * phases[m0 + t] + b1 * phases[m1 + t] + b2 * phases[m2 + t]
                    r2 = c0 * phases[g0 + t] + c1 * phases[g1 + t] + c2 * phases[g2 + t]
                    wide[t] = r0 + r1 + r2
            else:
                for t in range(ln):
                    wide[t] = 0
            for i in range(kh if not (kh == 3 and kw == 3) else 0):
                for j in range(0, kw, 3):   # up to three taps of the row per pass
                    nt = min(3, kw - j)
                    w0 = wf[u((fo * kh + i) * kw + j)]
                    o0 = u(((i % 2) * 2 + j % 2) * psz + (i // 2) * wq + j // 2)
                    if nt == 1:
                        for t in range(ln):
                            wide[t] += w0 * phases[o0 + t]
                        continue
                    w1 = wf[u((fo * kh + i) * kw + j + 1)]
                    o1 = u(((i % 2) * 2 + (j + 1) % 2) * psz + (i // 2) * wq + (j + 1) // 2)
                    if nt == 2:
                        for t in range(ln):
                            wide[t] += w0 * phases[o0 + t] + w1 * phases[o1 + t]
                        continue
                    w2 = wf[u((fo * kh + i) * kw + j + 2)]
                    o2 = u(((i % 2) * 2 + (j + 2) % 2) * psz + (i // 2) * wq + (j + 2) // 2)
                    for t in range(ln):
                        wide[t] += (w0 * phases[o0 + t] + w1 * phases[o1 + t]
                                    + w2 * phases[o2 + t])
            for yy in range(oh):
                r0 = u(yy * wq)
                row = base + u(yy * ow)
                for q in range(ow):
                    yf[row + u(q)] = wide[r0 + u(q)]
            continue
        for r in range(h):
            d0 = u((r + ph) * wp + pw)
            s0 = src + u(r * w)
            for q in range(w):
                xp[d0 + u(q)] = xf[s0 + u(q)]
        if sh == 1 and sw == 1:
            # stride 1: every tap is a shifted pass over the plane computed at the padded
            # width (the wp - ow extra columns are dropped), long contiguous vectorised loops
            # where the rows of a 7x7 map are 7 elements; up to three taps of a kernel row
            # share a pass (MobileNet's stride-1 3x3 layers at batch 16: 10-25% faster than
            # one pass per tap, stride 2 unchanged)
            ln = u(oh * wp)
            if nine:   # 3x3: all nine taps in one pass, each output written once
                k0 = u(fo * 9)
                a0, a1, a2 = wf[k0], wf[k0 + u(1)], wf[k0 + u(2)]
                b0, b1, b2 = wf[k0 + u(3)], wf[k0 + u(4)], wf[k0 + u(5)]
                c0, c1, c2 = wf[k0 + u(6)], wf[k0 + u(7)], wf[k0 + u(8)]
                o1, o2 = u(wp), u(2 * wp)
                for yy in range(oh if ow >= ROW_MIN else 0):   # rows straight into y
                    s0 = u(yy * wp)
                    row = base + u(yy * ow)
                    for q in range(ow):
                        t = s0 + u(q)
                        r0 = a0 * xp[t] + a1 * xp[t + u(1)] + a2 * xp[t + u(2)]
                        r1 = b0 * xp[o1 + t] + b1 * xp[o1 + t + u(1)] + b2 * xp[o1 + t + u(2)]
                        r2 = c0 * xp[o2 + t] + c1 * xp[o2 + t + u(1)] + c2 * xp[o2 + t + u(2)]
                        yf[row + u(q)] = r0 + r1 + r2
                if ow >= ROW_MIN:
                    continue
                for t in range(ln):
                    r0 = a0 * xp[t] + a1 * xp[t + u(1)] + a2 * xp[t + u(2)]
                    r1 = b0 * xp[o1 + t] + b1 * xp[o1 + t + u(1)] + b2 * xp[o1 + t + u(2)]
                    r2 = c0 * xp[o2 + t] + c1 * xp[o2 + t + u(1)] + c2 * xp[o2 + t + u(2)]
                    wide[t] = r0 + r1 + r2
            else:
                for t in range(ln):
                    wide[t] = 0
            for i in range(kh if not nine else 0):
                for j in range(0, kw, 3):   # up to three taps of the row per pass
                    nt = min(3, kw - j)
                    w0 = wf[u((fo * kh + i) * kw + j)]
                    o0 = u(i * dh * wp + j * dw)
                    if nt == 1:
                        for t in range(ln):
                            wide[t] += w0 * xp[o0 + t]
                        continue
                    w1 = wf[u((fo * kh + i) * kw + j + 1)]
                    o1 = o0 + u(dw)
                    if nt == 2:
                        for t in range(ln):
                            wide[t] += w0 * xp[o0 + t] + w1 * xp[o1 + t]
                        continue
                    w2 = wf[u((fo * kh + i) * kw + j + 2)]
                    o2 = o1 + u(dw)
                    for t in range(ln):
                        wide[t] += w0 * xp[o0 + t] + w1 * xp[o1 + t] + w2 * xp[o2 + t]
            for yy in range(oh):
                r0 = u(yy * wp)
                row = base + u(yy * ow)
                for q in range(ow):
                    yf[row + u(q)] = wide[r0 + u(q)]
            continue
        for yy in range(oh):
            row = base + u(yy * ow)
            for q in range(ow):
                yf[row + u(q)] = 0
            for i in range(kh):
                r0 = u((yy * sh + i * dh) * wp)
                for j in range(kw):
                    wv = wf[u((fo * kh + i) * kw + j)]
                    c0 = r0 + u(j * dw)
                    if sw == 1:
                        for q in range(ow):
                            yf[row + u(q)] += wv * xp[c0 + u(q)]
                    else:
                        for q in range(ow):
                            yf[row + u(q)] += wv * xp[c0 + u(q * sw)]
"""

DW_BWD_DATA = _HEAD + """@njit(parallel=True, fastmath={'contract'}, **_OPTS)
def kernel(g, wt, kh, kw, sh, sw, dh, dw, ph, pw, dx):
    n, f, oh, ow = g.shape
    c, h, w = dx.shape[1], dx.shape[2], dx.shape[3]
    mult = f // c
    gf, wf, xf = g.ravel(), wt.ravel(), dx.ravel()
    for p in prange(n * c):
        b = p // c
        ci = p % c
        base = u(p * h * w)
        for t in range(h * w):
            xf[base + u(t)] = 0
        for fo in range(ci * mult, ci * mult + mult):
            for i in range(kh):
                for j in range(kw):
                    wv = wf[u((fo * kh + i) * kw + j)]
                    off = j * dw - pw
                    q0 = min(max(0, (sw - 1 - off) // sw), ow)
                    q1 = max(min(ow, (w - 1 - off) // sw + 1), q0)
                    for yy in range(oh):
                        iy = yy * sh + i * dh - ph
                        if iy < 0 or iy >= h or q1 <= q0:
                            continue
                        src = u(((b * f + fo) * oh + yy) * ow + q0)
                        dst = base + u(iy * w + q0 * sw + off)
                        if sw == 1:
                            for q in range(q1 - q0):
                                xf[dst + u(q)] += wv * gf[src + u(q)]
                        else:
                            for q in range(q1 - q0):
                                xf[dst + u(q * sw)] += wv * gf[src + u(q)]
"""

DW_BWD_WEIGHT = _HEAD + """@njit(parallel=True, fastmath={'contract', 'reassoc'}, **_OPTS)
def kernel(g, x, kh, kw, sh, sw, dh, dw, ph, pw, dwt):
    n, f, oh, ow = g.shape
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    mult = f // c
    gf, xf, wf = g.ravel(), x.ravel(), dwt.ravel()
    for fo in prange(f):
        ci = fo // mult
        for i in range(kh):
            for j in range(kw):
                off = j * dw - pw
                q0 = min(max(0, (sw - 1 - off) // sw), ow)
                q1 = max(min(ow, (w - 1 - off) // sw + 1), q0)
                acc = 0.0
                pad = 0.0   # the gradients met by padding: they add g * 0 (NaN for inf g)
                for b in range(n):
                    for yy in range(oh):
                        iy = yy * sh + i * dh - ph
                        row = u(((b * f + fo) * oh + yy) * ow)
                        if iy < 0 or iy >= h:
                            for q in range(ow):
                                pad += gf[row + u(q)]
                            continue
                        for q in range(q0):
                            pad += gf[row + u(q)]
                        for q in range(q1, ow):
                            pad += gf[row + u(q)]
                        src = row + u(q0)
                        xs = u(((b * c + ci) * h + iy) * w + q0 * sw + off)
                        s = 0.0
                        if sw == 1:
                            for q in range(q1 - q0):
                                s += gf[src + u(q)] * xf[xs + u(q)]
                        else:
                            for q in range(q1 - q0):
                                s += gf[src + u(q)] * xf[xs + u(q * sw)]
                        acc += s
                wf[u((fo * kh + i) * kw + j)] = acc + pad * 0.0
"""


def conv_epilogue_source(bias: bool, epilogue: Sequence[Node], master: Value,
                         inputs: Sequence[Value], flags: Sequence[Sequence[bool]],
                         outputs: Sequence[Value], parallel: bool, transposed: bool) -> str:
    """``kernel([src], m, [bias], x0.., o1..)``: one pass over a convolution's result viewed
    as (n, F, M) adding ``bias[F]`` and applying the ``epilogue`` chain; ``outputs[0]`` is
    written into ``m`` (the master's result in place when not ``transposed``), the others
    into ``o1..``. ``transposed``: the result is read from ``src`` (F, n, M), the layout of
    one GEMM over a chunk of samples, and written in NCHW order (the transpose is free
    inside the pass). Inputs ``x{j}`` are (n|1, F|1, M|1) with broadcast ``flags``.
    """
    pool = ConstPool()
    args = (["src", "m"] if transposed else ["m"]) + (["bias"] if bias else [])
    args += [f"x{j}" for j in range(len(inputs))] + [f"o{j}" for j in range(1, len(outputs))]
    rng = "prange" if parallel else "range"
    ind = " " * 12
    lines = ["    n0, n1, n2 = m.shape",
             f"    for p in {rng}(n0 * n1):",
             "        i0 = p // n1",
             "        i1 = p % n1",
             "        for i2 in range(n2):"]
    src = "src[i1, i0, i2]" if transposed else "m[i0, i1, i2]"
    lines.append(f"{ind}tm = {src}" + (" + bias[i1]" if bias else ""))
    leaves = {master: "tm"}
    for j, (v, fl) in enumerate(zip(inputs, flags)):
        leaves[v] = f"l{j}"
        idx = ", ".join("0" if b else f"i{d}" for d, b in enumerate(fl))
        lines.append(f"{ind}l{j} = x{j}[{idx}]")
    body, var = scalar_body(epilogue, leaves, pool, ind, FUNCS)
    lines += body
    lines += [f"{ind}{f'o{j}' if j else 'm'}[i0, i1, i2] = {var[v]}"
              for j, v in enumerate(outputs)]
    return (_header(lines) + pool.source() + "\n\n" + _decorator(parallel)
            + f"def kernel({', '.join(args)}):\n" + "\n".join(lines) + "\n")
