"""Kernel sources for pooling in the CPU backend (``cpu_norm_pool``).

Each builder returns the source of one module with one ``@njit`` function ``kernel``, loaded
through ``codegen.load_module`` (so it lands in the on-disk kernel cache). Shapes are
run-time arguments; the window and strides are built into unrolled bodies.

Pooling works on (P, H, W) planes (P = N*C, 1-D data as H = 1), parallel over planes; the
windows follow ``ir/opset_pool.py`` (MXNet 1.9.1 ``pool.h``): a window starts at
``o*stride - pad_left``; max ignores positions outside the data (they are -inf there) and
propagates NaN as ``np.maximum``; avg divides by the window's count (the padded window
clipped to ``H + min(pad_left, pad_right)`` with count_include_pad, to the data without it).
Max pooling's gradient goes to each window's first maximum (strict ``>``, as the reference's
router and ``argmax``). The header and decorator are shared with ``cpu_norm_kernels``.
"""
from __future__ import annotations

_HEADER = "import numpy as np\nfrom numba import njit, prange\n\n"
# error_model='numpy': x / 0 is inf or NaN as in NumPy; 'reassoc' lets the float64 sums
# vectorise (no 'nnan'/'ninf': NaN and inf propagate as in NumPy)
_JIT = ("@njit(cache=True, parallel={par}, nogil=True, error_model='numpy', "
        "fastmath={fm})\n")


def _jit(parallel: bool, reassoc: bool = False) -> str:
    return _JIT.format(par=parallel, fm="{'contract', 'reassoc'}" if reassoc else "{'contract'}")


MAX_UNROLL = 16   # windows up to 4x4 get an unrolled body; larger ones the generic loops


def _taps(kh: int, kw: int) -> list[tuple[int, int]]:
    """The window's offsets in the reference's order (rows, then columns)."""
    return [(i, j) for i in range(kh) for j in range(kw)]


def _generic(kind: str, dtype: str) -> str:
    """njit helpers for avg/sum windows that overlap the padding: ``_win`` (the pooled
    value) and ``_count`` (avg's divisor)."""
    win = [f"    acc = np.{dtype}(0.0)",
           "    ya, xa = max(y0, 0), max(x0, 0)",
           "    for yy in range(ya, min(y0 + KH, H)):",
           "        for xx in range(xa, min(x0 + KW, W)):",
           "            acc += x[p, yy, xx]"]
    if kind == "avg":
        win += [f"    return acc / np.{dtype}(_count(y0, x0, H, W, lh, lw, include))"]
    else:
        win += ["    return acc"]
    # the window's count (MXNet's rule, ir/opset_pool._pool_counts): with include, the
    # window clipped to the data plus the padding that counts (rows < lh, cols < lw)
    count = ["    if include:",
             "        ch = min(y0 + KH, lh) - y0",
             "        cw = min(x0 + KW, lw) - x0",
             "    else:",
             "        ch = min(y0 + KH, H) - max(y0, 0)",
             "        cw = min(x0 + KW, W) - max(x0, 0)",
             "    return max(max(ch, 0) * max(cw, 0), 1)"]
    jit = "@njit(cache=True, nogil=True, error_model='numpy', fastmath={'contract'})\n"
    return (jit + "def _count(y0, x0, H, W, lh, lw, include):\n" + "\n".join(count) + "\n\n\n"
            + jit + "def _win(x, p, y0, x0, H, W, lh, lw, include):\n" + "\n".join(win)
            + "\n\n\n")


def _consts(geom: tuple) -> str:
    kh, kw, sh, sw, ph, pw = geom
    return f"KH, KW, SH, SW, PH, PW = {kh}, {kw}, {sh}, {sw}, {ph}, {pw}\n\n\n"


_SCAN = """\
    P, H, W = x.shape
    OH, OW = {oshape}
    lo = min(OW, -(-PW // SW))   # windows of ox in [lo, hi) lie inside the columns
    hi = max(lo, min(OW, (W - KW + PW) // SW + 1))
    for p in {loop}(P):
{zero}        for oy in range(OH):
            y0 = oy * SH - PH
            a, b = (lo, hi) if y0 >= 0 and y0 + KH <= H else (0, 0)
            for ox in range(a, b):   # inside the data: the unrolled body
                x0 = ox * SW - PW
"""


def _edges(generic: list[str]) -> list[str]:
    """The windows of a row that touch the padding (before ``a``, from ``b``): ``generic``."""
    out = []
    for rng in ("range(0, a)", "range(b, OW)"):
        out += [f"            for ox in {rng}:", "                x0 = ox * SW - PW",
                *("                " + g for g in generic)]
    return out


def pool_source(kind: str, dtype: str, parallel: bool, geom: tuple) -> str:
    """``kernel(x, lh, lw, include, out)``: max/avg/sum pooling of x (P, H, W) into out
    (P, OH, OW) with the window ``geom`` = (kh, kw, sh, sw, pad_top, pad_left) built in.

    Max: :func:`_max_source`. Sums: windows inside the data run a fully unrolled body over
    constant offsets (the reference's order, so sums agree bit for bit); windows that touch
    the padding call the generic ``_win``. avg's count with ``include``: the window clipped
    to rows < lh and cols < lw (the data plus the padding that counts)."""
    if kind == "max":
        return _max_source(parallel, geom)
    taps = _taps(geom[0], geom[1])
    body = [f"v{k} = x[p, y0 + {i}, x0 + {j}]" for k, (i, j) in enumerate(taps)]
    body += ["acc = v0"] + [f"acc += v{k}" for k in range(1, len(taps))]
    res = "acc" if kind == "sum" else f"acc / np.{dtype}({len(taps)})"
    ind = " " * 16
    generic = "out[p, oy, ox] = _win(x, p, y0, x0, H, W, lh, lw, include)"
    if len(taps) > MAX_UNROLL:
        body, res = [], None
    lines = [_SCAN.format(oshape="out.shape[1], out.shape[2]", zero="",
                          loop="prange" if parallel else "range").rstrip("\n"),
             *(ind + b for b in body),
             ind + (f"out[p, oy, ox] = {res}" if res else generic),
             *_edges([generic])]
    return _HEADER + _consts(geom) + _generic(kind, dtype) + _jit(parallel) + \
        "def kernel(x, lh, lw, include, out):\n" + "\n".join(lines) + "\n"


_MAX_ROWS = """\
    P, H, W = x.shape
    OH, OW = out.shape[1], out.shape[2]
    R = max((OW - 1) * SW + KW, PW + W)
    for p in {loop}(P):
        r = np.full(u(R), -np.inf, x.dtype)   # (the padding's columns stay -inf)
        for oy in range(OH):
            y0 = oy * SH - PH
            ya, yb = max(y0, 0), min(y0 + KH, H)
            if ya < yb:
                for xx in range(u(W)):
                    r[u(PW + xx)] = x[p, u(ya), xx]
            else:
                for xx in range(u(W)):
                    r[u(PW + xx)] = -np.inf
            for yy in range(ya + 1, yb):
                for xx in range(u(W)):
                    v = x[p, u(yy), xx]
                    m = r[u(PW + xx)]
                    r[u(PW + xx)] = v if v > m or v != v else m
            for ox in range(u(OW)):
                b = ox * u(SW)
                m = r[b]
"""


def _max_source(parallel: bool, geom: tuple) -> str:
    """Max pooling, each output row from one pass over its window's rows (the element-wise
    maximum of the KH rows into a row buffer padded with -inf, unit stride, vectorised),
    then the KW-wide maxima along that row at the stride. The per-window unrolled body it
    replaced gathered each output's taps apart: ResNet's 3x3/2 pooling on two cores, the
    two kernels in turn in one process, 5.7 -> 2.6 ms at 16x64x112x112, 0.48 -> 0.22 ms at
    batch 1. Windows over the padding see -inf there, as the reference; NaN wins
    (``np.maximum``); a window whose maxima are signed zeros may give the other zero (the
    taps are visited in another order)."""
    lines = [_MAX_ROWS.format(loop="prange" if parallel else "range").rstrip("\n")]
    lines += [f"                v = r[b + u({j})]\n"
              f"                m = v if v > m or v != v else m" for j in range(1, geom[1])]
    lines.append("                out[p, oy, ox] = m")
    return _HEADER + "from numba import uint64 as u\n\n" + _consts(geom) + _jit(parallel) + \
        "def kernel(x, lh, lw, include, out):\n" + "\n".join(lines) + "\n"


def _max_backward_source(dtype: str, parallel: bool, geom: tuple) -> str:
    """Max pooling's gradient, window by window with the window's bounds clipped to the data
    and a branch per new maximum: windows of more than ``MAX_UNROLL`` taps (an unrolled
    body of selects computing the index was slower at ResNet's 3x3/2, 37 vs 26 ms for
    16x64x112x112 on two cores; :func:`_first_max_body`'s masks, 15.4 vs 22.3, are not)."""
    lines = ["    P, H, W = x.shape",
             "    OH, OW = g.shape[1], g.shape[2]",
             f"    for p in {'prange' if parallel else 'range'}(P):",
             "        for yy in range(H):",
             "            for xx in range(W):",
             "                dx[p, yy, xx] = 0",
             "        for oy in range(OH):",
             "            y0 = oy * SH - PH",
             "            ya, yb = max(y0, 0), min(y0 + KH, H)",
             "            for ox in range(OW):",
             "                x0 = ox * SW - PW",
             "                by, bx = -1, -1",
             "                m = -np.inf",
             "                if 0 <= y0 < H and 0 <= x0 < W:",
             "                    by, bx = y0, x0",
             "                    m = x[p, y0, x0]",
             "                for yy in range(ya, yb):",
             "                    for xx in range(max(x0, 0), min(x0 + KW, W)):",
             "                        v = x[p, yy, xx]",
             "                        if v > m:",
             "                            m = v",
             "                            by, bx = yy, xx",
             "                if by >= 0:",
             "                    dx[p, by, bx] += g[p, oy, ox]"]
    return _HEADER + _consts(geom) + _jit(parallel) + \
        "def kernel(g, x, lh, lw, include, dx):\n" + "\n".join(lines) + "\n"


def _first_max_body(taps: list, at) -> list[str]:
    """Unrolled lines setting ``w<t>``: whether tap t is its window's first maximum (the
    first position when it is NaN, else the first equal to the strict-``>`` maximum), by
    comparisons and selects only: a chain of ``k = t if v > m else k`` compiled to branches
    that random data mispredicts (4x slower). ``at(i, j)``: the index expression of a tap."""
    body = [f"v{t} = {at(i, j)}" for t, (i, j) in enumerate(taps)]
    body += ["m = v0"] + [f"m = v{t} if v{t} > m else m" for t in range(1, len(taps))]
    body += ["w0 = (v0 == m) | (m != m)", "seen = w0"]
    for t in range(1, len(taps)):
        body += [f"w{t} = (v{t} == m) & ~seen", f"seen = seen | w{t}"]
    return body


def _overlap_max_backward_source(dtype: str, parallel: bool, geom: tuple) -> str:
    """Max pooling's gradient for overlapping windows: zero the plane, then each window
    inside the data adds the gradient at its first maximum (:func:`_first_max_body`, every
    tap's add unconditional, zero elsewhere); windows over the padding as
    :func:`_max_backward_source`."""
    taps = _taps(geom[0], geom[1])
    body = ["gv = g[p, oy, ox]"] + _first_max_body(
        taps, lambda i, j: f"x[p, y0 + {i}, x0 + {j}]")
    body += [f"dx[p, y0 + {i}, x0 + {j}] += gv if w{t} else zero"
             for t, (i, j) in enumerate(taps)]
    generic = ["by, bx = -1, -1",
               "m = -np.inf",
               "if 0 <= y0 < H and 0 <= x0 < W:",
               "    by, bx = y0, x0",
               "    m = x[p, y0, x0]",
               "for yy in range(max(y0, 0), min(y0 + KH, H)):",
               "    for xx in range(max(x0, 0), min(x0 + KW, W)):",
               "        v = x[p, yy, xx]",
               "        if v > m:",
               "            m = v",
               "            by, bx = yy, xx",
               "if by >= 0:",
               "    dx[p, by, bx] += g[p, oy, ox]"]
    zero = ("        for yy in range(H):\n"
            "            for xx in range(W):\n"
            "                dx[p, yy, xx] = 0\n")
    ind = " " * 16
    scan = _SCAN.format(oshape="g.shape[1], g.shape[2]", zero=zero,
                        loop="prange" if parallel else "range").rstrip("\n")
    # the windows of a row in order, as the reference adds them: those over the left
    # padding, those inside, those over the right padding
    head, inner = scan.rsplit("\n", 2)[0], scan.rsplit("\n", 2)[1:]
    left, right = _edges(generic)[:len(generic) + 2], _edges(generic)[len(generic) + 2:]
    lines = ["    zero = x.dtype.type(0)", head, *left, *inner, *(ind + b for b in body), *right]
    return _HEADER + _consts(geom) + _jit(parallel) + \
        "def kernel(g, x, lh, lw, include, dx):\n" + "\n".join(lines) + "\n"


def _tiling_max_backward_source(dtype: str, parallel: bool, geom: tuple) -> str:
    """Max pooling's gradient where the windows tile the plane (window = stride, no left
    padding: LeNet's 2x2/2): every position lies in at most one window, so each window
    writes its positions once, the gradient at its maximum and zeros elsewhere, and the
    positions no window covers are zeroed: no zeroing pass, no scatter, a branch-free body
    (LeNet's 128x6x28x28 2x2/2 gradient: 0.89 -> 0.2 ms on two threads). The maximum as in
    :func:`_max_backward_source` (the first position, then strict ``>``; the first position
    when it is NaN): the first position equal to it."""
    kh, kw = geom[0], geom[1]
    taps = _taps(kh, kw)
    offs = [f"c + u({i} * W + {j})" for i, j in taps]
    body = ["gv = gf[go + ox]", "c = r0 + u(KW) * ox"]
    body += _first_max_body(taps, lambda i, j: f"xf[c + u({i} * W + {j})]")
    body += [f"df[{o}] = gv if w{t} else zero" for t, o in enumerate(offs)]
    ind = " " * 16
    lines = ["    P, H, W = x.shape",
             "    OH, OW = g.shape[1], g.shape[2]",
             "    xf, gf, df = x.ravel(), g.ravel(), dx.ravel()",
             "    zero = x.dtype.type(0)",
             "    hc, wc = min(OH * KH, H), min(OW * KW, W)   # rows, columns in windows",
             "    hi, wi = min(OH, H // KH), min(OW, W // KW)  # windows inside the plane",
             f"    for p in {'prange' if parallel else 'range'}(P):",
             "        for yy in range(hc, H):",
             "            for xx in range(W):",
             "                dx[p, yy, xx] = 0",
             "        for yy in range(hc):",
             "            for xx in range(wc, W):",
             "                dx[p, yy, xx] = 0",
             "        for oy in range(OH):",
             "            y0 = oy * KH",
             "            r0 = u((p * H + y0) * W)",
             "            go = u((p * OH + oy) * OW)",
             "            for ox in range(u(wi if oy < hi else 0)):",
             *(ind + b for b in body),
             "            for ox in range(wi if oy < hi else 0, OW):   # clipped by the edge",
             "                x0 = ox * KW",
             "                by, bx = y0, x0",
             "                m = x[p, y0, x0]",
             "                for yy in range(y0, min(y0 + KH, H)):",
             "                    for xx in range(x0, min(x0 + KW, W)):",
             "                        v = x[p, yy, xx]",
             "                        if v > m:",
             "                            m = v",
             "                            by, bx = yy, xx",
             "                for yy in range(y0, min(y0 + KH, H)):",
             "                    for xx in range(x0, min(x0 + KW, W)):",
             "                        dx[p, yy, xx] = g[p, oy, ox] if yy == by and xx == bx "
             "else zero"]
    return "from numba import uint64 as u\n" + _HEADER + _consts(geom) + _jit(parallel) + \
        "def kernel(g, x, lh, lw, include, dx):\n" + "\n".join(lines) + "\n"


def pool_backward_source(kind: str, dtype: str, parallel: bool, geom: tuple) -> str:
    """``kernel(g, x, lh, lw, include, dx)``: the gradient of :func:`pool_source`'s pooling
    w.r.t. x (P, H, W), scattered window by window within each plane.

    max: the reference's router: start at the window's first position (-inf when it is
    padding), then the offsets in order with a strict ``>`` (the first maximum wins; NaN
    never does), then ``dx[best] += g`` (:func:`_tiling_max_backward_source` where windows
    tile the plane, :func:`_overlap_max_backward_source` for other unrolled windows,
    :func:`_max_backward_source` for large ones); avg/sum: unrolled for windows inside the
    data."""
    if kind == "max" and geom[0] == geom[2] and geom[1] == geom[3] and geom[4:] == (0, 0) \
            and len(_taps(geom[0], geom[1])) <= MAX_UNROLL:
        return _tiling_max_backward_source(dtype, parallel, geom)
    if kind == "max" and len(_taps(geom[0], geom[1])) <= MAX_UNROLL:
        return _overlap_max_backward_source(dtype, parallel, geom)
    if kind == "max":
        return _max_backward_source(dtype, parallel, geom)
    taps = _taps(geom[0], geom[1])
    ind = " " * 16
    div = f" / np.{dtype}({len(taps)})" if kind == "avg" else ""
    body = [f"v = g[p, oy, ox]{div}"] + [f"dx[p, y0 + {i}, x0 + {j}] += v" for i, j in taps]
    cnt = f" / np.{dtype}(_count(y0, x0, H, W, lh, lw, include))" if kind == "avg" else ""
    generic = [f"v = g[p, oy, ox]{cnt}",
               "for yy in range(max(y0, 0), min(y0 + KH, H)):",
               "    for xx in range(max(x0, 0), min(x0 + KW, W)):",
               "        dx[p, yy, xx] += v"]
    if len(taps) > MAX_UNROLL:
        body = generic
    zero = ("        for yy in range(H):\n"
            "            for xx in range(W):\n"
            "                dx[p, yy, xx] = 0\n")
    lines = [_SCAN.format(oshape="g.shape[1], g.shape[2]", zero=zero,
                          loop="prange" if parallel else "range").rstrip("\n"),
             *(ind + b for b in body),
             *_edges(generic)]
    return _HEADER + _consts(geom) + _generic(kind, dtype) + _jit(parallel) + \
        "def kernel(g, x, lh, lw, include, dx):\n" + "\n".join(lines) + "\n"


def global_pool_source(kind: str, parallel: bool) -> str:
    """``kernel(x, out)``: max / avg / sum of each plane of x (P, S) into out (P,): max
    propagates NaN, sums accumulate in float64 (the reference's ``sum(dtype=float64)``)."""
    lines = ["    P, S = x.shape",
             f"    for p in {'prange' if parallel else 'range'}(P):"]
    if kind == "max":
        lines += ["        m = -np.inf",
                  "        for i in range(S):",
                  "            v = x[p, i]",
                  "            m = v if v > m or v != v else m",
                  "        out[p] = m"]
    else:
        lines += ["        s = 0.0",
                  "        for i in range(S):",
                  "            s += x[p, i]",
                  "        out[p] = s / S" if kind == "avg" else "        out[p] = s"]
    return _HEADER + _jit(parallel, reassoc=kind != "max") + "def kernel(x, out):\n" + \
        "\n".join(lines) + "\n"


def global_pool_backward_source(kind: str, dtype: str, parallel: bool) -> str:
    """``kernel(g, x, dx)``: the gradient of global pooling for g (P,), x and dx (P, S): avg
    spreads ``g / S`` (in the data's dtype, as the reference divides), sum spreads g, max
    routes g to the plane's first maximum (strict ``>`` from position 0, as the router)."""
    lines = ["    P, S = x.shape",
             f"    for p in {'prange' if parallel else 'range'}(P):"]
    if kind == "max":
        lines += ["        m = x[p, 0]",
                  "        k = 0",
                  "        for i in range(S):",
                  "            dx[p, i] = 0",
                  "            v = x[p, i]",
                  "            t = v > m",
                  "            m = v if t else m",
                  "            k = i if t else k",
                  "        dx[p, k] = g[p]"]
    else:
        div = f" / np.{dtype}(S)" if kind == "avg" else ""
        lines += [f"        v = g[p]{div}",
                  "        for i in range(S):",
                  "            dx[p, i] = v"]
    return _HEADER + _jit(parallel) + "def kernel(g, x, dx):\n" + "\n".join(lines) + "\n"
