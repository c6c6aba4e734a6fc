"""Kernel sources for BatchNorm and LayerNorm in the CPU backend (``cpu_norm_pool``).

Each builder returns the source of one module with one ``@njit`` function ``kernel``, loaded
through ``codegen.load_module`` (so it lands in the on-disk kernel cache); shapes are
run-time arguments. BatchNorm works on (N, C, S) views (channel axis in the middle),
parallel over channels: moments in float64; for float32 data in one pass, shifted by the
channel's first value
(``_BN_MOMENTS``: sums of ``x - K`` and its squares, the mean ``K + s1/M`` and the variance
``s2/M - (s1/M)^2``; with K a value of the data the cancellation costs float64 digits only,
and a non-finite K is replaced by 0 so that Inf and NaN come out as the reference's two
passes give them), then one output pass. The gradient's sums of g and g*(x - mean) share
that pass (``g*(x - K)`` then corrected by ``(s1/M) * sum(g)``). One pass instead of two
(the forward) and three (the gradient) over a plane too large for the caches: at 16x64x112x
112 the forward read x three times and the gradient four times. float64 data keeps the
reference's two passes (mean, then centred squares): there the shift's cancellation shows.
"""
from __future__ import annotations

from .cpu_pool_kernels import _HEADER, _jit

_BN_TWO_PASS = """\
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
_BN_SHIFT = """\
        K = np.float64(x[0, c, 0]) if M > 0 else 0.0
        if not np.isfinite(K):
            K = 0.0
"""
_BN_MOMENTS = _BN_SHIFT + """\
        s1 = 0.0
        s2 = 0.0
        for n in range(N):
            for i in range(S):
                d = np.float64(x[n, c, i]) - K
                s1 += d
                s2 += d * d
        d1 = s1 / M
        mean = K + d1
        var = s2 / M - d1 * d1
        if var < 0.0:   # (rounding; NaN stays NaN)
            var = 0.0
"""


def batch_norm_source(parallel: bool, one_pass: bool = True) -> str:
    """``kernel(x, gamma, beta, mm, mv, eps, eps_p, mom, mom_p, fix_gamma, train, out,
    mean_out, invstd_out)`` over x (N, C, S): BatchNorm's forward as the reference computes
    it. Training uses the batch's moments and updates mm/mv in place
    (``moving * momentum + batch * (1 - momentum)``: the product in the statistics' dtype,
    the sum in float64, as NumPy evaluates the reference); inference uses mm/mv with the
    inverse std in their dtype. ``eps_p``/``mom_p``: eps and momentum in that dtype.
    ``one_pass``: the moments in one shifted pass (float32 data), else the reference's two
    (float64 data, whose digits the shift's cancellation would cost)."""
    body = "\n".join([
        "    N, C, S = x.shape",
        "    M = N * S",
        f"    for c in {'prange' if parallel else 'range'}(C):",
        "        if train:",
        *("    " + ln for ln in (_BN_MOMENTS if one_pass else _BN_TWO_PASS).splitlines()),
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


def _bn_sums_one_pass() -> list[str]:
    """The gradient's per-channel sums with the moments, one shifted pass (module doc)."""
    return [
        "        if train:",
        *("    " + ln for ln in _BN_SHIFT.splitlines()),
        "        else:",
        "            K = np.float64(mm[c])",
        "        s1 = 0.0",
        "        s2 = 0.0",
        "        sg = 0.0",
        "        sgk = 0.0",
        "        for n in range(N):",
        "            for i in range(S):",
        "                d = np.float64(x[n, c, i]) - K",
        "                gv = np.float64(g[n, c, i])",
        "                s1 += d",
        "                s2 += d * d",
        "                sg += gv",
        "                sgk += gv * d",
        "        if train:",
        "            d1 = s1 / M",
        "            mean = K + d1",
        "            var = s2 / M - d1 * d1",
        "            if var < 0.0:",
        "                var = 0.0",
        "            r = 1.0 / np.sqrt(var + eps)",
        "            sgx = sgk - d1 * sg",
        "            if not np.isfinite(sgx):   # Inf in g: the centred sum, as the reference's",
        "                sgx = 0.0",
        "                for n in range(N):",
        "                    for i in range(S):",
        "                        sgx += np.float64(g[n, c, i]) * (x[n, c, i] - mean)",
        "        else:",
        "            mean = K",
        "            r = np.float64(1 / np.sqrt(mv[c] + eps_p))",
        "            sgx = sgk",
    ]


def _bn_sums_two_pass() -> list[str]:
    """The gradient's per-channel sums: the moments' two passes, then the centred sums."""
    return [
        "        if train:",
        *("    " + ln for ln in _BN_TWO_PASS.splitlines()),
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
        "                sgx += gv * (x[n, c, i] - mean)"]


def batch_norm_backward_source(parallel: bool, one_pass: bool = True) -> str:
    """``kernel(g, x, gamma, mm, mv, eps, eps_p, fix_gamma, train, dx, dgamma, dbeta)``
    over (N, C, S): ``batch_norm_backward`` in two passes per channel (the float64 sums of
    x and g, shifted, then ``dx = A*g + B*(x - mean) + D``: the op's formula with the
    per-channel factors taken out, ``ir/opset_norm_grad.py``); three without ``one_pass``
    (the moments, the centred sums of g, then dx), as :func:`batch_norm_source`."""
    body = "\n".join([
        "    N, C, S = x.shape",
        "    M = N * S",
        f"    for c in {'prange' if parallel else 'range'}(C):",
        *(_bn_sums_one_pass() if one_pass else _bn_sums_two_pass()),
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


def layer_norm_source(parallel: bool) -> str:
    """``kernel(x, gamma, beta, eps, out, mean_out, std_out)`` over x (P, R, Q): LayerNorm
    over the middle axis as the reference computes it (float64 two-pass moments,
    ``(x - mean) / sqrt(var + eps) * gamma + beta``); mean/std outputs (P, Q)."""
    body = "\n".join([
        "    P, R, Q = x.shape",
        f"    for p in {'prange' if parallel else 'range'}(P):",
        "        for q in range(Q):",
        "            s = 0.0",
        "            for r in range(R):",
        "                s += x[p, r, q]",
        "            mean = s / R",
        "            v = 0.0",
        "            for r in range(R):",
        "                d = x[p, r, q] - mean",
        "                v += d * d",
        "            std = np.sqrt(v / R + eps)",
        "            for r in range(R):",
        "                out[p, r, q] = (x[p, r, q] - mean) / std * np.float64(gamma[r]) "
        "+ np.float64(beta[r])",
        "            mean_out[p, q] = mean",
        "            std_out[p, q] = std",
    ])
    return _HEADER + _jit(parallel, reassoc=True) + \
        "def kernel(x, gamma, beta, eps, out, mean_out, std_out):\n" + body + "\n"
