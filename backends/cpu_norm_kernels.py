"""Kernel sources for BatchNorm and LayerNorm in the CPU backend (``cpu_norm_pool``).

Each builder returns the source of one module with one ``@njit`` function ``kernel``, loaded
through ``codegen.load_module`` (so it lands in the on-disk kernel cache); shapes are
run-time arguments. BatchNorm works on (N, C, S) views (channel axis in the middle),
parallel over channels: moments in float64, two passes (mean, then centred squares, as the
reference's ``_moments``), then one output pass.
"""
from __future__ import annotations

from .cpu_pool_kernels import _HEADER, _jit

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
