"""Kernel sources for pooling and BatchNorm in the CPU backend (``cpu_norm_pool``).

Each builder returns the source of one module with one ``@njit`` function ``kernel``, loaded
through ``codegen.load_module`` (so it lands in the on-disk kernel cache). Shapes, windows and
strides are run-time arguments: one compilation per kind and dtype serves every layer.

Pooling works on (P, H, W) planes (P = N*C, 1-D data as H = 1), parallel over planes; the
windows follow ``ir/opset_pool.py`` (MXNet 1.9.1 ``pool.h``): a window starts at
``o*stride - pad_left``; max ignores positions outside the data (they are -inf there) and
propagates NaN as ``np.maximum``; avg divides by the window's count (the padded window
clipped to ``H + min(pad_left, pad_right)`` with count_include_pad, to the data without it).
Max pooling's gradient goes to each window's first maximum (strict ``>``, as the reference's
router and ``argmax``). BatchNorm works on (N, C, S) views (channel axis in the middle),
parallel over channels: moments in float64, two passes (mean, then centred squares, as the
reference's ``_moments``), then one output pass.
"""
from __future__ import annotations

_HEADER = "import numpy as np\nfrom numba import njit, prange\n\n"
# error_model='numpy': x / 0 is inf or NaN as in NumPy; 'reassoc' lets the float64 sums
# vectorise (no 'nnan'/'ninf': NaN and inf propagate as in NumPy)
_JIT = ("@njit(cache=True, parallel={par}, nogil=True, error_model='numpy', "
        "fastmath={fm})\n")


def _jit(parallel: bool, reassoc: bool = False) -> str:
    return _JIT.format(par=parallel, fm="{'contract', 'reassoc'}" if reassoc else "{'contract'}")


def _window_head(indent: str) -> list[str]:
    """Lines computing the window of output (oy, ox): rows [ya, yb), cols [xa, xb)."""
    i = indent
    return [f"{i}y0 = oy * sh - ph",
            f"{i}ya = max(y0, 0)",
            f"{i}yb = min(y0 + kh, H)",
            f"{i}x0 = ox * sw - pw",
            f"{i}xa = max(x0, 0)",
            f"{i}xb = min(x0 + kw, W)"]


def pool_source(kind: str, dtype: str, parallel: bool) -> str:
    """``kernel(x, kh, kw, sh, sw, ph, pw, lh, lw, include, out)``: max/avg/sum pooling of
    x (P, H, W) into out (P, OH, OW). avg's count with ``include``: the window clipped to
    rows < lh and cols < lw (the data plus the padding that counts)."""
    lines = ["    P, H, W = x.shape",
             "    OH, OW = out.shape[1], out.shape[2]",
             f"    for p in {'prange' if parallel else 'range'}(P):",
             "        for oy in range(OH):",
             "            for ox in range(OW):",
             *_window_head("                ")]
    if kind == "max":
        lines += ["                m = -np.inf",
                  "                for yy in range(ya, yb):",
                  "                    for xx in range(xa, xb):",
                  "                        v = x[p, yy, xx]",
                  "                        m = v if v > m or v != v else m",
                  "                out[p, oy, ox] = m"]
    else:
        # the data's dtype and the offsets' order, as the reference's sum of slices
        lines += [f"                acc = np.{dtype}(0.0)",
                  "                for yy in range(ya, yb):",
                  "                    for xx in range(xa, xb):",
                  "                        acc += x[p, yy, xx]"]
        if kind == "avg":
            lines += ["                if include:",
                      "                    cnt = (min(y0 + kh, lh) - y0) * (min(x0 + kw, lw) - x0)",
                      "                else:",
                      "                    cnt = (yb - ya) * (xb - xa)",
                      f"                acc = acc / np.{dtype}(max(cnt, 1))"]
        lines += ["                out[p, oy, ox] = acc"]
    return _HEADER + _jit(parallel) + \
        "def kernel(x, kh, kw, sh, sw, ph, pw, lh, lw, include, out):\n" + "\n".join(lines) + "\n"


def pool_backward_source(kind: str, dtype: str, parallel: bool) -> str:
    """``kernel(g, x, kh, kw, sh, sw, ph, pw, lh, lw, include, dx)``: the gradient of
    :func:`pool_source`'s pooling w.r.t. x (P, H, W), scattered plane by plane."""
    lines = ["    P, H, W = x.shape",
             "    OH, OW = g.shape[1], g.shape[2]",
             f"    for p in {'prange' if parallel else 'range'}(P):",
             "        for yy in range(H):",
             "            for xx in range(W):",
             "                dx[p, yy, xx] = 0",
             "        for oy in range(OH):",
             "            for ox in range(OW):",
             *_window_head("                ")]
    if kind == "max":
        # the window's first position is where the reference's router starts (-inf when it
        # is padding): strict '>' from there picks the first maximum, NaN never wins
        lines += ["                by, bx = -1, -1",
                  "                m = -np.inf",
                  "                if 0 <= y0 < H and 0 <= x0 < W:",
                  "                    by, bx = y0, x0",
                  "                    m = x[p, y0, x0]",
                  "                for yy in range(ya, yb):",
                  "                    for xx in range(xa, xb):",
                  "                        v = x[p, yy, xx]",
                  "                        if v > m:",
                  "                            m = v",
                  "                            by, bx = yy, xx",
                  "                if by >= 0:",
                  "                    dx[p, by, bx] += g[p, oy, ox]"]
    else:
        lines += ["                v = g[p, oy, ox]"]
        if kind == "avg":
            lines += ["                if include:",
                      "                    cnt = (min(y0 + kh, lh) - y0) * (min(x0 + kw, lw) - x0)",
                      "                else:",
                      "                    cnt = (yb - ya) * (xb - xa)",
                      f"                v = v / np.{dtype}(max(cnt, 1))"]
        lines += ["                for yy in range(ya, yb):",
                  "                    for xx in range(xa, xb):",
                  "                        dx[p, yy, xx] += v"]
    return _HEADER + _jit(parallel) + \
        "def kernel(g, x, kh, kw, sh, sw, ph, pw, lh, lw, include, dx):\n" + \
        "\n".join(lines) + "\n"


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


_BN_MOMENTS = """\
        s = 0.0
        for n in range(N):
            for i in range(S):
                s += x[n, c, i]
        mean = s / M
        v = 0.0
        for n in range(N):
            for i in range(S):
                d = x[n, c, i] - mean
                v += d * d
        var = v / M
"""


def batch_norm_source(parallel: bool) -> str:
    """``kernel(x, gamma, beta, mm, mv, eps, eps_p, mom, mom_p, fix_gamma, train, out,
    mean_out, invstd_out)`` over x (N, C, S): BatchNorm's forward as the reference computes
    it. Training uses the batch's moments and updates mm/mv in place
    (``moving * momentum + batch * (1 - momentum)``: the product in the statistics' dtype,
    the sum in float64, as NumPy evaluates the reference); inference uses mm/mv with the
    inverse std in their dtype. ``eps_p``/``mom_p``: eps and momentum in that dtype."""
    body = "\n".join([
        "    N, C, S = x.shape",
        "    M = N * S",
        f"    for c in {'prange' if parallel else 'range'}(C):",
        "        if train:",
        *("    " + ln for ln in _BN_MOMENTS.splitlines()),
        "            iv = 1.0 / np.sqrt(var + eps)",
        "            mm[c] = np.float64(mm[c] * mom_p) + mean * (1.0 - mom)",
        "            mv[c] = np.float64(mv[c] * mom_p) + var * (1.0 - mom)",
        "        else:",
        "            mean = np.float64(mm[c])",
        "            iv = np.float64(1 / np.sqrt(mv[c] + eps_p))",
        "        gm = 1.0 if fix_gamma else np.float64(gamma[c])",
        "        b = np.float64(beta[c])",
        "        for n in range(N):",
        "            for i in range(S):",
        "                out[n, c, i] = (x[n, c, i] - mean) * iv * gm + b",
        "        mean_out[c] = mean",
        "        invstd_out[c] = iv",
    ])
    return _HEADER + _jit(parallel, reassoc=True) + \
        ("def kernel(x, gamma, beta, mm, mv, eps, eps_p, mom, mom_p, fix_gamma, train, out, "
         "mean_out, invstd_out):\n") + body + "\n"


def batch_norm_backward_source(parallel: bool) -> str:
    """``kernel(g, x, gamma, mm, mv, eps, eps_p, fix_gamma, train, dx, dgamma, dbeta)``
    over (N, C, S): ``batch_norm_backward`` in three passes per channel (float64 sums of x
    and g, centred sums, then ``dx = A*g + B*(x - mean) + D``: the op's formula with the per-channel
    factors taken out, ``ir/opset_norm_grad.py``)."""
    body = "\n".join([
        "    N, C, S = x.shape",
        "    M = N * S",
        f"    for c in {'prange' if parallel else 'range'}(C):",
        "        if train:",
        *("    " + ln for ln in _BN_MOMENTS.splitlines()),
        "            r = 1.0 / np.sqrt(var + eps)",
        "        else:",
        "            mean = np.float64(mm[c])",
        "            r = np.float64(1 / np.sqrt(mv[c] + eps_p))",
        "        sg = 0.0",
        "        sgx = 0.0",
        "        for n in range(N):",
        "            for i in range(S):",
        "                gv = np.float64(g[n, c, i])",
        "                sg += gv",
        "                sgx += gv * (x[n, c, i] - mean)",
        "        gm = 1.0 if fix_gamma else np.float64(gamma[c])",
        "        A = r * gm",
        "        if train:",
        "            B = -A * r * r * sgx / M",
        "            D = -A * sg / M",
        "            for n in range(N):",
        "                for i in range(S):",
        "                    dx[n, c, i] = A * g[n, c, i] + B * (x[n, c, i] - mean) + D",
        "        else:",
        "            for n in range(N):",
        "                for i in range(S):",
        "                    dx[n, c, i] = A * g[n, c, i]",
        "        dgamma[c] = 0.0 if fix_gamma else sgx * r",
        "        dbeta[c] = sg",
    ])
    return _HEADER + _jit(parallel, reassoc=True) + \
        ("def kernel(g, x, gamma, mm, mv, eps, eps_p, fix_gamma, train, dx, dgamma, "
         "dbeta):\n") + body + "\n"
