"""Per-layer GFLOP/s of the CPU backend's convolution steps against a plain GEMM of the same size.

``python -m bench.conv_layers [--batch 16] [--ref] [--mobilenet]``. For each distinct conv
layer of ResNet-18 v1 at 224x224 (and MobileNet 1.0's depthwise layers with
``--mobilenet``), one graph per direction (forward ``convolution``, data gradient
``deconvolution``, weight gradient ``convolution_backward_weight``) is compiled by the CPU
backend and timed (best of a few runs), beside ``np.matmul`` of that direction's GEMM,
(F, C*K) @ (C*K, N*M), (C*K, F) @ (F, N*M) and (F, N*M) @ (N*M, C*K), on contiguous
operands in the same process: the ratio is the step's speed as a fraction of the BLAS bound
(im2col, col2im and the epilogue are the overhead). ``--ref`` adds the ops' NumPy kernels
(eager mode). Run it under ``flock`` on a shared machine.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from ember.backends import cpu
from ember.ir.graph import GraphBuilder
from ember.ir.ops import get_op
from ember.ir.types import TensorType
from ember.runtime import cache

# (label, C, F, H, kernel, stride, pad, groups)
RESNET18 = [("conv1 7x7/2", 3, 64, 224, 7, 2, 3, 1),
            ("l1 3x3 64", 64, 64, 56, 3, 1, 1, 1),
            ("l2 3x3/2 64-128", 64, 128, 56, 3, 2, 1, 1),
            ("l2 3x3 128", 128, 128, 28, 3, 1, 1, 1),
            ("l2 1x1/2 ds", 64, 128, 56, 1, 2, 0, 1),
            ("l3 3x3/2 128-256", 128, 256, 28, 3, 2, 1, 1),
            ("l3 3x3 256", 256, 256, 14, 3, 1, 1, 1),
            ("l4 3x3/2 256-512", 256, 512, 14, 3, 2, 1, 1),
            ("l4 3x3 512", 512, 512, 7, 3, 1, 1, 1)]
MOBILENET = [("dw 3x3 32 @112", 32, 32, 112, 3, 1, 1, 32),
             ("dw 3x3/2 64 @112", 64, 64, 112, 3, 2, 1, 64),
             ("dw 3x3 256 @28", 256, 256, 28, 3, 1, 1, 256),
             ("dw 3x3 1024 @7", 1024, 1024, 7, 3, 1, 1, 1024),
             ("pw 1x1 512 @14", 512, 512, 14, 1, 1, 0, 1)]


def _best(fns, reps: int) -> list[float]:
    """Best time of each of ``fns``, run alternately (``reps`` rounds), so that a load that
    comes and goes hits them alike."""
    for f in fns:
        f()
    best = [float("inf")] * len(fns)
    for _ in range(reps):
        for j, f in enumerate(fns):
            t = time.perf_counter()
            f()
            best[j] = min(best[j], time.perf_counter() - t)
    return best


def _graphs(n, c, f, h, k, s, p, g):
    """{direction: (graph, inputs, params)} of one layer."""
    o = (h + 2 * p - k) // s + 1
    at = dict(kernel=(k, k), stride=(s, s), pad=(p, p), num_group=g)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, h)).astype(np.float32)
    w = rng.standard_normal((f, c // g, k, k)).astype(np.float32)
    gy = rng.standard_normal((n, f, o, o)).astype(np.float32)
    out = {}
    for name, ins, attrs in (
            ("fwd", [x, w], dict(op="convolution", num_filter=f, no_bias=True)),
            ("dgrad", [gy, w], dict(op="deconvolution", num_filter=c, no_bias=True,
                                    adj=((h + 2 * p - k) % s,) * 2)),
            ("wgrad", [gy, x], dict(op="convolution_backward_weight"))):
        b = GraphBuilder(name)
        vals = [b.input(TensorType(a.shape, "float32"), f"a{j}") for j, a in enumerate(ins)]
        op = attrs.pop("op")
        (y,) = b.emit(op, vals, **at, **attrs)
        out[name] = (b.build([y]), ins, op, {**at, **attrs})
    return out, o


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--ref", action="store_true")
    ap.add_argument("--mobilenet", action="store_true")
    args = ap.parse_args(argv)
    cache.install()
    n = args.batch
    layers = MOBILENET if args.mobilenet else RESNET18
    print(f"batch {n}; GFLOP/s of the compiled step / of np.matmul of its GEMM (ratio)"
          + ("; NumPy reference kernel" if args.ref else ""))
    tot = {"step": 0.0, "gemm": 0.0, "ref": 0.0}
    for label, c, f, h, k, s, p, g in layers:
        graphs, o = _graphs(n, c, f, h, k, s, p, g)
        ck, m = c // g * k * k, n * o * o
        flops = 2.0 * f * ck * m
        rng = np.random.default_rng(1)
        cells = []
        for d, (graph, ins, op, at) in graphs.items():
            if label.startswith("conv1") and d == "dgrad":
                continue
            fn = cpu.compile(graph)
            fns = [lambda: fn(ins, [])]
            if g == 1:
                a_shape, b_shape = {"fwd": ((f, ck), (ck, m)), "dgrad": ((ck, f), (f, m)),
                                    "wgrad": ((f, m), (m, ck))}[d]
                a = rng.standard_normal(a_shape).astype(np.float32)
                bm = rng.standard_normal(b_shape).astype(np.float32)
                res = np.empty((a_shape[0], b_shape[1]), np.float32)
                fns.append(lambda: np.matmul(a, bm, out=res))
            times = _best(fns, args.reps)
            t, tg = times[0], times[1] if g == 1 else float("nan")
            cell = f"{d} {flops / t / 1e9:6.1f}/{flops / tg / 1e9:6.1f} ({tg / t:4.2f})"
            tot["step"] += t
            tot["gemm"] += tg if g == 1 else 0.0
            if args.ref:
                compute = get_op(op).compute
                tr = _best([lambda: compute(ins, {**get_op(op).attrs, **at})], 1)[0]
                tot["ref"] += tr
                cell += f" ref {flops / tr / 1e9:5.1f}"
            cells.append(cell)
        print(f"{label:18s} " + " | ".join(cells), flush=True)
    print(f"total: steps {tot['step'] * 1e3:.1f} ms, GEMMs {tot['gemm'] * 1e3:.1f} ms"
          + (f", reference {tot['ref'] * 1e3:.1f} ms" if args.ref else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
