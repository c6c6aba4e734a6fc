"""Convolution and pooling kernels at LeNet-5's shapes, and LeNet eager training, before/after.

``python -m bench.conv_kernels [--quick]``. "before" is ``ir/opset_conv.py`` at commit
``BEFORE`` (einsum over ``sliding_window_view``, per-offset masked pooling), loaded from git
into a private namespace; "after" is the registry's kernels. Both are timed in the same
process, alternating, so the ratios hold on a shared machine even when absolute times
drift. Each kernel is also compared with one GEMM of the same FLOPs (the lower bound of
any im2col method) and checked against "before" (float32, rtol 1e-4, atol 1e-5).
"""
from __future__ import annotations

import argparse
import math
import subprocess
import time
import timeit

import numpy as np

from bench.common import ROOT

BEFORE = "af39929cdf9da1415870a9da48df879ef4b8b509"
B = 128


def _old_kernels() -> dict | None:
    """{op name: compute} of the pre-optimisation module, or None when git cannot give it."""
    try:
        src = subprocess.run(["git", "-C", ROOT, "show", f"{BEFORE}:ir/opset_conv.py"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    found = {}
    src = src.replace("from .", "from ember.ir.")
    ns = {"__name__": "bench_old_conv"}
    exec(compile(src.replace("from ember.ir.ops import REQUIRED, OpKind, defop",
                             "from ember.ir.ops import REQUIRED, OpKind"), "old_conv", "exec"),
         {**ns, "defop": lambda name, kind, compute, *a, **k: found.__setitem__(name, compute)})
    return found


def _cases(rng):
    """(label, op, inputs, attrs, GEMM (m, k, n) of the same FLOPs or None)."""
    def r(*s):
        return rng.standard_normal(s).astype(np.float32)
    x1, w1, b1 = r(B, 1, 28, 28), r(6, 1, 5, 5), r(6)
    x2, w2, b2 = r(B, 6, 14, 14), r(16, 6, 5, 5), r(16)
    g1, g2 = r(B, 6, 28, 28), r(B, 16, 10, 10)
    c1 = dict(kernel=(5, 5), pad=(2, 2))
    c2 = dict(kernel=(5, 5))
    p = dict(kernel=(2, 2), stride=(2, 2))
    return [
        ("conv1 forward", "convolution", [x1, w1, b1], dict(c1, num_filter=6), (B * 784, 25, 6)),
        ("conv2 forward", "convolution", [x2, w2, b2], dict(c2, num_filter=16),
         (B * 100, 150, 16)),
        ("conv1 weight grad", "convolution_backward_weight", [g1, x1], c1, (6, B * 784, 25)),
        ("conv2 weight grad", "convolution_backward_weight", [g2, x2], c2, (16, B * 100, 150)),
        ("conv1 data grad", "deconvolution", [g1, w1], dict(c1, num_filter=1),
         (B * 784, 6, 25)),
        ("conv2 data grad", "deconvolution", [g2, w2], dict(c2, num_filter=6),
         (B * 100, 16, 150)),
        ("pool1 forward", "pooling", [g1], p, None),
        ("pool2 forward", "pooling", [g2], p, None),
        ("pool1 backward", "pooling_backward", [r(B, 6, 14, 14), g1], p, None),
        ("pool2 backward", "pooling_backward", [r(B, 16, 5, 5), g2], p, None),
    ]


def _best(fn, number: int, repeat: int) -> float:
    fn()
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def kernels(old: dict | None, repeat: int) -> list[str]:
    """One line per kernel: ms before, after, speed-up, GEMM bound."""
    from ember.ir import get_op
    from ember.ir.ops import normalize_attrs
    rng = np.random.default_rng(0)
    lines = [f"{'kernel (LeNet, batch 128)':26s} {'before ms':>10s} {'after ms':>9s} "
             f"{'speed-up':>9s} {'GEMM ms':>8s} {'after/GEMM':>10s}"]
    for label, name, ins, at, mkn in _cases(rng):
        op = get_op(name)
        a = normalize_attrs(op, at)
        new = _best(lambda: op.compute(ins, a), 3, repeat)
        gemm_t = None
        if mkn:
            ga, gb = rng.standard_normal(mkn[:2], np.float32), rng.standard_normal(mkn[1:],
                                                                                    np.float32)
            gemm_t = _best(lambda: ga @ gb, 3, repeat)
        before = None
        if old:
            ref, got = old[name](ins, a), op.compute(ins, a)
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5, err_msg=label)
            before = _best(lambda: old[name](ins, a), 3, repeat)
        fmt = lambda v, f=".2f": "-" if v is None else format(v, f)  # noqa: E731
        lines.append(f"{label:26s} {fmt(before and before * 1e3):>10s} {new * 1e3:>9.2f} "
                     f"{fmt(before and before / new, '.1f'):>9s} "
                     f"{fmt(gemm_t and gemm_t * 1e3):>8s} "
                     f"{fmt(gemm_t and new / gemm_t, '.1f'):>10s}")
    return lines


def _swap(computes: dict) -> dict:
    """Install ``computes`` in the registry; the replaced ones are returned."""
    from ember.ir import get_op
    prev = {}
    for name, fn in computes.items():
        op = get_op(name)
        prev[name], op.compute = op.compute, fn
    return prev


def lenet(old: dict | None, steps: int, rounds: int) -> list[str]:
    """Eager LeNet-5 training samples/s with the old and the new kernels, alternating."""
    import ember as mx
    from bench.data import LENET_SHAPES, init_weights
    from bench.fw_gluon import GluonModel, lenet_net
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, B)
    res = {"after": [], "before": []}
    for _ in range(rounds):
        for which in ("after", "before") if old else ("after",):
            prev = _swap(old) if which == "before" else None
            model = GluonModel(mx, lenet_net(mx, init_weights(LENET_SHAPES, rng)), "eager",
                               None)
            model.step(x, y, False)   # warm-up: numba compiles (or loads) its kernels
            t0 = time.perf_counter()
            for _ in range(steps):
                model.step(x, y, False)
            model.sync()
            res[which].append(steps * B / (time.perf_counter() - t0))
            if prev:
                _swap(prev)
    out = [f"LeNet-5 eager training, batch {B}: samples/s, best of {rounds} x {steps} steps"]
    for which, v in res.items():
        if v:
            out.append(f"  {which:7s} best {max(v):7.0f}   median {np.median(v):7.0f}")
    if old:
        out.append(f"  speed-up (best / best) {max(res['after']) / max(res['before']):.2f}x")
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the kernel table and the LeNet training line."""
    ap = argparse.ArgumentParser("python -m bench.conv_kernels", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and steps")
    args = ap.parse_args(argv)
    old = _old_kernels()
    if old is None:
        print(f"(commit {BEFORE[:12]} not available: 'before' columns are empty)")
    print("\n".join(kernels(old, 3 if args.quick else 7)))
    print()
    print("\n".join(lenet(old, 5 if args.quick else 20, 2 if args.quick else 3)))
    print(f"\n(numba threads: 2 cores shared; GEMM = one float32 matmul of the same FLOPs, "
          f"{math.prod((B, 784, 25, 6)) * 2 / 1e6:.0f} MFLOP for conv1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
