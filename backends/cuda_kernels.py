"""Kernel sources of the CUDA backend: the CPU backend's template bodies in a launch skeleton.

Each builder returns Python source for one module holding one ``@cuda.jit`` function named
``kernel``; :func:`kernel` executes it once per process (numba-cuda compiles it at its first
launch). The scalar bodies come from :func:`ember.backends.codegen.scalar_body`, the same
code the CPU backend puts inside its loop nest (DESIGN.md s.2, s.6).

The launch skeleton is a grid-stride loop (NVIDIA's "CUDA Pro Tip: grid-stride loops"): each
thread starts at its global index and steps by the grid's size over the flat index of the
collapsed broadcast layout, which it unravels into per-dim indices; broadcast dims of an input
are indexed with 0 (as in ``cpu_kernels``). Any grid size covers any size, so the launch
configuration is chosen freely (``launch_dims``).

Under numba's CUDA simulator the kernels' Python source runs as Python: ``math.<f>`` calls are
replaced by ``cuda_sim_math``'s IEEE versions (``_module``), so NaN/Inf come out as on a
device instead of Python's ``ValueError``/``OverflowError``.
"""
from __future__ import annotations

import re
import types
from collections.abc import Sequence

from ember.ir.graph import Node, Value

from . import cuda_sim_math
from .codegen import ConstPool, load_module, scalar_body, source_key

_HEADER = "import math\n\nimport numpy as np\nfrom numba import cuda\n"
CACHED = "cuda.jit(cache=True)"
_KERNELS: dict[str, object] = {}


def kernel(source: str):
    """The ``kernel`` function of generated ``source``, loaded once per process (numba-cuda
    compiles it at its first launch). Device kernels (``@cuda.jit(cache=True)``) load through
    the installed module loader, the runtime's on-disk kernel cache, so numba-cuda's compiled
    code is reused by the next process (sealed files: ``runtime/numba_seal``); simulator
    kernels run in memory."""
    fn = _KERNELS.get(source)
    if fn is None:
        if CACHED in source:
            mod = load_module(source, "cuda")
        else:
            name = f"ember_cuda_{source_key(source)[:16]}"
            mod = types.ModuleType(name)
            # ``source`` is ember's own generated text from this process (the simulator's
            # kernels never touch the disk cache): nothing read from a file runs here
            exec(compile(source, f"<ember cuda {name}>", "exec"), mod.__dict__)
        fn = _KERNELS[source] = mod.kernel
    return fn


def decorator(sim: bool) -> str:
    """``@cuda.jit`` of a generated kernel: cached on disk on a device."""
    return "@cuda.jit\n" if sim else f"@{CACHED}\n"


def launch_dims(n: int, sim: bool) -> tuple[int, int]:
    """``(blocks, threads)`` for a grid-stride loop over ``n`` items: 256 threads a block,
    at most 16 blocks per SM's worth on an H100 (the loop covers the rest); the simulator
    runs every thread as a Python thread, so there one block of up to 32."""
    if sim:
        return 1, max(1, min(32, n))
    threads = 256
    return max(1, min(-(-n // threads), 132 * 16)), threads


_MATH_CALL = re.compile(r"\bmath\.(" + "|".join(cuda_sim_math.NAMES) + r")\(")


def _module(lines: Sequence[str], pool: ConstPool, args: Sequence[str], sim: bool) -> str:
    """The module source of ``kernel(args)`` with body ``lines``; under the simulator its
    ``math.<f>(`` calls go to ``cuda_sim_math.sim_<f>``."""
    body = "\n".join(lines)
    head = _HEADER
    if sim:
        used = sorted(set(_MATH_CALL.findall(body)))
        body = _MATH_CALL.sub(r"sim_\1(", body)
        if used:
            names = ", ".join(f"sim_{f}" for f in used)
            head += f"from ember.backends.cuda_sim_math import {names}\n"
    return (head + pool.source() + f"\n\n{decorator(sim)}def kernel({', '.join(args)}):\n"
            f"{body}\n")


def _index(flags: Sequence[bool]) -> str:
    return ", ".join("0" if b else f"i{d}" for d, b in enumerate(flags))


def _grid_loop(rank: int, shape_of: str) -> list[str]:
    """Open a grid-stride loop over the ``rank``-dim shape of ``shape_of``, unravelling the
    flat index into ``i0..``; the body goes at 8 spaces."""
    lines = [f"    n{d} = {shape_of}.shape[{d}]" for d in range(rank)]
    lines.append(f"    total = {' * '.join(f'n{d}' for d in range(rank))}")
    lines.append("    for i in range(cuda.grid(1), total, cuda.gridsize(1)):")
    lines.append("        r = i")
    for d in range(rank - 1, 0, -1):
        lines += [f"        i{d} = r % n{d}", f"        r = r // n{d}"]
    lines.append("        i0 = r")
    return lines


def ewise_source(nodes: Sequence[Node], inputs: Sequence[Value],
                 flags: Sequence[Sequence[bool]], outputs: Sequence[Value], rank: int,
                 sim: bool) -> str:
    """``kernel(x0.., o0..)`` computing the template chain ``nodes`` per output element.

    ``inputs``: the chain's leaves, passed reshaped to ``rank`` dims with broadcast dims
    ``flags``; ``outputs`` (values of ``nodes``) all have the iteration shape.
    """
    pool = ConstPool()
    args = [f"x{j}" for j in range(len(inputs))] + [f"o{j}" for j in range(len(outputs))]
    ind = "        "
    body, leaves = [], {}
    for j, (v, fl) in enumerate(zip(inputs, flags)):
        leaves[v] = f"l{j}"
        body.append(f"{ind}l{j} = x{j}[{_index(fl)}]")
    lines, var = scalar_body(nodes, leaves, pool, ind, None)
    body += lines
    idx = _index([False] * rank)
    body += [f"{ind}o{j}[{idx}] = {var[v]}" for j, v in enumerate(outputs)]
    return _module(_grid_loop(rank, "o0") + body, pool, args, sim)


def epilogue_source(rank: int, bias_dim: int | None, epilogue: Sequence[Node], master: Value,
                    inputs: Sequence[Value], flags: Sequence[Sequence[bool]],
                    outputs: Sequence[Value], sim: bool) -> str:
    """``kernel(m, [bias], x0.., o1..)``: one pass over an OUT_EWISE op's result ``m``
    (viewed with ``rank`` dims: (rows, cols) for a GEMM, (N, F, spatial) for a convolution)
    adding ``bias`` along dim ``bias_dim`` (None: no bias) and applying the ``epilogue``
    chain; ``outputs[0]`` is written back into ``m``, the others into ``o1..`` (as
    ``cpu_kernels.gemm_epilogue_source``)."""
    pool = ConstPool()
    bias = bias_dim is not None
    args = ["m"] + (["bias"] if bias else []) + [f"x{j}" for j in range(len(inputs))]
    args += [f"o{j}" for j in range(1, len(outputs))]
    ind = "        "
    idx = _index([False] * rank)
    lines = [f"{ind}tm = m[{idx}]" + (f" + bias[i{bias_dim}]" if bias else "")]
    leaves = {master: "tm"}
    for j, (v, fl) in enumerate(zip(inputs, flags)):
        leaves[v] = f"l{j}"
        lines.append(f"{ind}l{j} = x{j}[{_index(fl)}]")
    body, var = scalar_body(epilogue, leaves, pool, ind, None)
    lines += body
    lines += [f"{ind}{f'o{j}' if j else 'm'}[{idx}] = {var[v]}" for j, v in enumerate(outputs)]
    return _module(_grid_loop(rank, "m") + lines, pool, args, sim)


# ---- reductions over the middle axis of (P, R, Q) -------------------------------------
_INIT = {"sum": "0.0", "mean": "0.0", "max": "-math.inf", "min": "math.inf"}
# max/min propagate NaN as NumPy: a NaN seen once stays (v != v takes it, nothing beats it)
_STEP = {"sum": "acc += v", "mean": "acc += v",
         "max": "acc = v if v > acc or v != v else acc",
         "min": "acc = v if v < acc or v != v else acc"}


def _final(kind: str, acc: str, out_dtype: str, count: str = "R") -> str:
    # a mean rounds the sum to the output's dtype before dividing, as NumPy's float32 mean
    return f"np.{out_dtype}({acc}) / {count}" if kind == "mean" else acc


def reduce_source(kind: str, blockwise: bool, threads: int, out_dtype: str,
                  sim: bool = False, keep_mid: bool = False) -> str:
    """``kernel(x, out)``: ``out[p, q] = reduce(x[p, :, q])`` for x (P, R, Q), out (P, Q);
    with ``keep_mid`` (always blockwise) ``out[r] = reduce(x[:, r, :])``, out (R,): a
    reduction over all axes but one (a bias gradient of NCHW data).

    Sums accumulate in float64 (NumPy's pairwise float32 sum is about that accurate).
    ``blockwise``: one block per output, its ``threads`` threads striding over R and combining
    through shared memory by halving (the classic tree reduction, Harris, "Optimizing Parallel
    Reduction in CUDA"), for few outputs over long rows; else one thread per output.
    """
    step = _STEP[kind]
    lines = ["    P = x.shape[0]", "    R = x.shape[1]", "    Q = x.shape[2]"]
    n_out, count, load, store = "P * Q", "R", "x[p, r, q]", "out[p, q]"
    if keep_mid:
        blockwise, n_out, count, load, store = True, "R", "(P * Q)", "x[r // Q, o, r % Q]", \
            "out[o]"
    if not blockwise:
        lines += ["    for i in range(cuda.grid(1), P * Q, cuda.gridsize(1)):",
                  "        p = i // Q",
                  "        q = i % Q",
                  f"        acc = np.float64({_INIT[kind]})",
                  "        for r in range(R):",
                  "            v = np.float64(x[p, r, q])",
                  f"            {step}",
                  f"        out[p, q] = {_final(kind, 'acc', out_dtype)}"]
    else:
        combine = _STEP[kind].replace("acc", "a").replace(" v", " b").replace("v ", "b ")
        lines += [f"    sh = cuda.shared.array({threads}, np.float64)",
                  "    t = cuda.threadIdx.x",
                  f"    for o in range(cuda.blockIdx.x, {n_out}, cuda.gridDim.x):",
                  "        p = o // Q",
                  "        q = o % Q",
                  f"        acc = np.float64({_INIT[kind]})",
                  f"        for r in range(t, {count}, {threads}):",
                  f"            v = np.float64({load})",
                  f"            {step}",
                  "        sh[t] = acc",
                  "        cuda.syncthreads()",
                  f"        s = {threads // 2}",
                  "        while s > 0:",
                  "            if t < s:",
                  "                a = sh[t]",
                  "                b = sh[t + s]",
                  f"                {combine}",
                  "                sh[t] = a",
                  "            cuda.syncthreads()",
                  "            s = s // 2",
                  "        if t == 0:",
                  f"            {store} = {_final(kind, 'sh[0]', out_dtype, count)}",
                  "        cuda.syncthreads()"]
    return _module(lines, ConstPool(), ["x", "out"], sim)


def softmax_source(log: bool, sim: bool = False) -> str:
    """``kernel(x, scale, out)``: (log-)softmax of ``x * scale`` over the middle axis of
    (P, R, Q), one thread per row: max, float64 sum of exponentials, write (as the CPU's)."""
    final = "z - lse" if log else "math.exp(z - lse)"
    lines = ["    P = x.shape[0]", "    R = x.shape[1]", "    Q = x.shape[2]",
             "    for i in range(cuda.grid(1), P * Q, cuda.gridsize(1)):",
             "        p = i // Q",
             "        q = i % Q",
             "        mx = -math.inf",
             "        for r in range(R):",
             "            z = np.float64(x[p, r, q]) * scale",
             "            mx = z if z > mx or z != z else mx",
             "        s = 0.0",
             "        for r in range(R):",
             "            s += math.exp(np.float64(x[p, r, q]) * scale - mx)",
             "        lse = math.log(s)",
             "        for r in range(R):",
             "            z = np.float64(x[p, r, q]) * scale - mx",
             f"            out[p, r, q] = {final}"]
    return _module(lines, ConstPool(), ["x", "scale", "out"], sim)


# ---- pick and its adjoint over (P, R, Q), the picked axis in the middle ---------------
_PICK_FIX = {"clip": "k = min(max(k, 0), R - 1)", "wrap": "k = k % R"}


def pick_source(mode: str, backward: bool) -> str:
    """``kernel(x, idx, out)``: ``out[p, q] = x[p, idx[p, q], q]`` (``pick``), or with
    ``backward`` ``kernel(og, idx, out)``: ``out[p, idx[p, q], q] = og[p, q]`` into an output
    zeroed before (``pick_backward``). Indices truncate, then clip or wrap (MXNet's modes)."""
    src, dst = ("og[p, q]", "out[p, k, q]") if backward else ("x[p, k, q]", "out[p, q]")
    shape_of = "out" if backward else "x"
    lines = [f"    P = {shape_of}.shape[0]", f"    R = {shape_of}.shape[1]",
             f"    Q = {shape_of}.shape[2]",
             "    for i in range(cuda.grid(1), P * Q, cuda.gridsize(1)):",
             "        p = i // Q",
             "        q = i % Q",
             "        k = int(idx[p, q])",
             f"        {_PICK_FIX[mode]}",
             f"        {dst} = {src}"]
    return _module(lines, ConstPool(), ["og" if backward else "x", "idx", "out"], False)


def fill_source() -> str:
    """``kernel(out, value)``: every element of the 1-D ``out`` set to ``value``."""
    lines = ["    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):",
             "        out[i] = value"]
    return _module(lines, ConstPool(), ["out", "value"], False)


def copy_source() -> str:
    """``kernel(src, dst)``: ``dst[i] = src[i]`` over 1-D views (a reshape's copy)."""
    lines = ["    for i in range(cuda.grid(1), dst.shape[0], cuda.gridsize(1)):",
             "        dst[i] = src[i]"]
    return _module(lines, ConstPool(), ["src", "dst"], False)
