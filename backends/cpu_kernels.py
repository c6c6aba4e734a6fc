"""Kernel sources of the CPU backend: loop nests around template bodies, GEMM with fused
epilogues, single-pass reductions and softmax (DESIGN.md s.6).

Each builder returns Python source for one module holding one ``@njit`` function named
``kernel``; the backend loads it through :func:`ember.backends.codegen.load_module`, so equal
kernels share one module (and one numba compilation) across graphs and processes.

Broadcasting is by index arithmetic: the backend collapses the iteration space (adjacent
dims that every input broadcasts alike merge, as NumPy's iterator coalesces them) and passes
each input reshaped to the collapsed rank with 1 on its broadcast dims; the loop indexes
those dims with 0. ``fastmath`` keeps IEEE NaN/inf semantics (templates test ``a != a``):
only contraction into FMA is allowed. Not ``afn``: with it LLVM expands ``pow(x, 2.5)`` into
``x * x * sqrt(x)``, NaN at -inf where C's pow (and NumPy) give inf; float32 exp/tanh
vectorise through ``cpu_math`` without it.
"""
from __future__ import annotations

from collections.abc import Sequence

from ember.ir.graph import Node, Value

from . import cpu_math
from .codegen import ConstPool, scalar_body

FASTMATH = "{'contract'}"
_HEADER = "import math\n\nimport numpy as np\nfrom numba import njit, prange\n\n"
# float32 exp/tanh by cpu_math's vectorisable polynomials instead of scalar expf/tanhf calls
FUNCS = {"float32": {"exp": "exp32", "tanh": "tanh32", "op:sigmoid": "sigmoid32"}}


def _header(lines: Sequence[str]) -> str:
    """The module header, importing cpu_math's functions when the body calls them (its
    VERSION in the source keys the kernel cache to that file's contents)."""
    used = sorted({f for f in FUNCS["float32"].values() if any(f + "(" in ln for ln in lines)})
    if not used:
        return _HEADER
    return (_HEADER + f"from ember.backends.cpu_math import {', '.join(used)}  "
            f"# cpu_math {cpu_math.VERSION}\n\n")


def _decorator(parallel: bool) -> str:
    # error_model='numpy': x / 0 is inf or NaN as in NumPy, not ZeroDivisionError
    return (f"@njit(cache=True, fastmath={FASTMATH}, parallel={parallel}, nogil=True, "
            "error_model='numpy')\n")


def _loop_nest(rank: int, parallel: bool, shape_of: str) -> tuple[list[str], str]:
    """Lines opening a ``rank``-deep loop nest over ``shape_of``.shape and the indent inside."""
    lines = [f"    n{d} = {shape_of}.shape[{d}]" for d in range(rank)]
    ind = "    "
    for d in range(rank):
        rng = "prange" if parallel and d == 0 else "range"
        lines.append(f"{ind}for i{d} in {rng}(n{d}):")
        ind += "    "
    return lines, ind


def _index(flags: Sequence[bool]) -> str:
    """Subscript of an input with broadcast ``flags`` (True: that dim is broadcast)."""
    return ", ".join("0" if b else f"i{d}" for d, b in enumerate(flags))


def ewise_source(nodes: Sequence[Node], inputs: Sequence[Value], flags: Sequence[Sequence[bool]],
                 outputs: Sequence[Value], rank: int, parallel: bool,
                 alias: dict[int, int] | None = None) -> str:
    """One loop kernel ``kernel(x0.., o0..)`` computing the template chain ``nodes``.

    ``inputs`` are the chain's leaves, passed reshaped to ``rank`` dims with broadcast dims
    ``flags``; ``outputs`` (values of ``nodes``) all have the iteration shape. ``alias``:
    input j -> output k when they are one buffer (memory planned in place): the kernel
    reads ``o{k}`` and takes no ``x{j}``, since two arguments that overlap make LLVM's
    runtime alias check fall back to its scalar loop (3x slower).
    """
    alias = alias or {}
    pool = ConstPool()
    args = [f"x{j}" for j in range(len(inputs)) if j not in alias]
    args += [f"o{j}" for j in range(len(outputs))]
    head, ind = _loop_nest(rank, parallel, "o0")
    body = []
    leaves = {}
    for j, (v, fl) in enumerate(zip(inputs, flags)):
        leaves[v] = f"l{j}"
        src = f"o{alias[j]}" if j in alias else f"x{j}"
        body.append(f"{ind}l{j} = {src}[{_index(fl)}]")
    lines, var = scalar_body(nodes, leaves, pool, ind, FUNCS)
    body += lines
    idx = _index([False] * rank)
    body += [f"{ind}o{j}[{idx}] = {var[v]}" for j, v in enumerate(outputs)]
    return (_header(body) + pool.source() + "\n\n" + _decorator(parallel)
            + f"def kernel({', '.join(args)}):\n" + "\n".join(head + body) + "\n")


def gemm_epilogue_source(bias: bool, epilogue: Sequence[Node], master: Value,
                         inputs: Sequence[Value], flags: Sequence[Sequence[bool]],
                         outputs: Sequence[Value], parallel: bool) -> str:
    """``kernel(m, [bias], x0.., o..)``: one pass over a GEMM's (rows, cols) result ``m``
    adding ``bias`` and applying the ``epilogue`` chain; ``outputs[0]`` is written back
    into ``m`` (the caller's buffer for it), the others into ``o1..`` (no overlapping
    arguments: LLVM would take its scalar loop).

    The GEMM itself is NumPy's (``np.matmul`` from the run loop): numba's ``np.dot`` links
    SciPy's OpenBLAS, a second thread pool next to NumPy's, and two spinning pools on two
    cores made every GEMM 10x slower. ``m`` may be the same array as ``o0`` (each element is
    read before it is written).
    """
    pool = ConstPool()
    args = ["m"] + (["bias"] if bias else []) + [f"x{j}" for j in range(len(inputs))]
    args += [f"o{j}" for j in range(1, len(outputs))]
    head, ind = _loop_nest(2, parallel, "m")
    lines = list(head)
    lines.append(f"{ind}tm = m[i0, i1]" + (" + bias[i1]" if bias else ""))
    leaves = {master: "tm"}
    for j, (v, fl) in enumerate(zip(inputs, flags)):
        leaves[v] = f"l{j}"
        lines.append(f"{ind}l{j} = x{j}[{_index(fl)}]")
    body, var = scalar_body(epilogue, leaves, pool, ind, FUNCS)
    lines += body
    lines += [f"{ind}{f'o{j}' if j else 'm'}[i0, i1] = {var[v]}" for j, v in enumerate(outputs)]
    return (_header(lines) + pool.source() + "\n\n" + _decorator(parallel)
            + f"def kernel({', '.join(args)}):\n" + "\n".join(lines) + "\n")


# ---- reductions over the middle axis of (P, R, Q) -------------------------------------
_REDUCE_INIT = {"sum": "0.0", "mean": "0.0", "max": "x[p, 0, q]", "min": "x[p, 0, q]"}
_REDUCE_STEP = {"sum": "acc += v", "mean": "acc += v",
                "max": "acc = v if v > acc or v != v else acc",
                "min": "acc = v if v < acc or v != v else acc"}


def reduce_source(kind: str, parallel: bool) -> str:
    """``kernel(x, out)``: ``out[p, q] = reduce(x[p, :, q])`` for x (P, R, Q), out (P, Q).

    Sums accumulate in float64 (NumPy's pairwise float32 sum is that accurate; a float32
    running sum over thousands of terms is not). A mean rounds the sum to the output's dtype
    before dividing, as NumPy's float32 mean does: a float32 sum that overflows is inf in both.
    ``max``/``min`` propagate NaN, as NumPy.
    """
    acc0 = _REDUCE_INIT[kind]
    step = _REDUCE_STEP[kind]
    mean = kind == "mean"
    wide = kind in ("sum", "mean")
    lines = ["    P, R, Q = x.shape",
             f"    for p in {'prange' if parallel else 'range'}(P):"]
    if wide:
        # Q accumulators, rows streamed in order: unit-stride inner loops vectorise
        lines += ["        if Q == 1:",
                  "            s = 0.0",
                  "            for r in range(R):",
                  "                s += x[p, r, 0]",
                  "            out[p, 0] = s",
                  *(["            out[p, 0] /= R"] if mean else []),
                  "            continue",
                  "        acc = np.zeros(Q, np.float64)",
                  "        for r in range(R):",
                  "            for q in range(Q):",
                  "                acc[q] += x[p, r, q]",
                  "        for q in range(Q):",
                  "            out[p, q] = acc[q]",
                  *(["            out[p, q] /= R"] if mean else [])]
    else:
        lines += ["        for q in range(Q):",
                  f"            acc = {acc0}",
                  "            for r in range(1, R):",
                  "                v = x[p, r, q]",
                  f"                {step}",
                  "            out[p, q] = acc"]
    return _HEADER + "\n" + _decorator(parallel) + "def kernel(x, out):\n" + \
        "\n".join(lines) + "\n"


def reduce_mid_source(kind: str, parallel: bool) -> str:
    """``kernel(x, out)``: ``out[c] = reduce(x[:, c, :])`` for x (A, C, B), out (C,): a
    reduction over every axis but one (a convolution bias's gradient over N, H and W). Per
    channel as :func:`reduce_source` (B float64 accumulators over the A rows, unit-stride),
    then the sum of the accumulators."""
    lines = ["    A, C, B = x.shape", f"    for c in {'prange' if parallel else 'range'}(C):"]
    if kind in ("sum", "mean"):
        lines += ["        acc = np.zeros(B, np.float64)",
                  "        for a in range(A):",
                  "            for b in range(B):",
                  "                acc[b] += x[a, c, b]",
                  "        s = 0.0",
                  "        for b in range(B):",
                  "            s += acc[b]",
                  "        out[c] = s",
                  *(["        out[c] /= A * B"] if kind == "mean" else [])]
    else:
        lines += ["        acc = x[0, c, 0]",
                  "        for a in range(A):",
                  "            for b in range(B):",
                  "                v = x[a, c, b]",
                  f"                {_REDUCE_STEP[kind]}",
                  "        out[c] = acc"]
    return _HEADER + "\n" + _decorator(parallel) + "def kernel(x, out):\n" + \
        "\n".join(lines) + "\n"


def softmax_source(log: bool, parallel: bool, f32: bool = False) -> str:
    """``kernel(x, scale, out)``: (log-)softmax of ``x * scale`` over the middle axis of
    (P, R, Q), one row at a time: max, sum of exponentials (float64), write.

    ``f32``: float32 data, whose exponentials (of ``z - max <= 0``) use ``cpu_math.exp32``
    (vectorised, 3 ulp) instead of float64 ``math.exp`` calls; sums stay float64.
    """
    if f32:
        ex = "np.float64(exp32(np.float32(np.float64(x[p, r, q]) * scale - mx)))"
    else:
        ex = "math.exp(np.float64(x[p, r, q]) * scale - mx)"
    final = "z - lse" if log else ("exp32(np.float32(z - lse))" if f32 else "math.exp(z - lse)")
    lines = ["    P, R, Q = x.shape",
             f"    for p in {'prange' if parallel else 'range'}(P):",
             "        for q in range(Q):",
             "            mx = -np.inf",
             "            for r in range(R):",
             "                z = np.float64(x[p, r, q]) * scale",
             "                mx = z if z > mx or z != z else mx",
             "            s = 0.0",
             "            for r in range(R):",
             f"                s += {ex}",
             "            lse = math.log(s)",
             "            for r in range(R):",
             "                z = np.float64(x[p, r, q]) * scale - mx",
             f"                out[p, r, q] = {final}"]
    return _header(lines) + "\n" + _decorator(parallel) + "def kernel(x, scale, out):\n" + \
        "\n".join(lines) + "\n"


# ---- pick and its adjoint over (P, R, Q), the picked axis in the middle ---------------
_PICK_FIX = {"clip": "k = min(max(k, 0), R - 1)", "wrap": "k = k % R"}


def pick_source(mode: str, backward: bool) -> str:
    """``kernel(x, idx, out)``: ``out[p, q] = x[p, idx[p, q], q]`` (``pick``), or with
    ``backward`` ``kernel(og, idx, out)``: zeros but ``out[p, idx[p, q], q] = og[p, q]``
    (``pick_backward``). Indices truncate to integers, then clip or wrap (MXNet's modes)."""
    fix = _PICK_FIX[mode]
    if backward:
        lines = ["    P, R, Q = out.shape",
                 "    out[...] = 0",
                 "    for p in range(P):",
                 "        for q in range(Q):",
                 "            k = int(idx[p, q])",
                 f"            {fix}",
                 "            out[p, k, q] = og[p, q]"]
        head = "def kernel(og, idx, out):\n"
    else:
        lines = ["    P, R, Q = x.shape",
                 "    for p in range(P):",
                 "        for q in range(Q):",
                 "            k = int(idx[p, q])",
                 f"            {fix}",
                 "            out[p, q] = x[p, k, q]"]
        head = "def kernel(x, idx, out):\n"
    return _HEADER + "\n" + _decorator(False) + head + "\n".join(lines) + "\n"
