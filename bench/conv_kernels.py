"""Convolution and pooling kernels at LeNet-5's shapes, and LeNet eager training, before/after.

``python -m bench.conv_kernels [--quick] [--before COMMIT]``. "before" is
``ir/opset_conv.py`` and ``ir/opset_pool.py`` at commit ``--before`` (default ``BEFORE``: im2col
by a NumPy copy, col2im by strided slice adds, pooling by offset loops; ``af39929`` gives the
first einsum version), loaded from git into a private namespace; "after" is the registry's
kernels. Both are timed in the same process, alternating, so the ratios hold on a shared
machine even when absolute times drift; LeNet training is timed eager and hybridized (CPU
backend; a fresh net per round binds the kernels then installed). Each kernel is also
compared with one GEMM of the same FLOPs (the lower bound of any im2col method) and checked
against "before" (float32, rtol 1e-4, atol 1e-5 plus 1e-6 of the largest magnitude: weight
gradients sum 12800 products, and a different summation order alone moves them by more).
"""
from __future__ import annotations

import argparse
import math
import subprocess
import time
import timeit

import numpy as np

from bench.common import ROOT

BEFORE = "499885c838fd915ed24765b54e5df6b6572e3c91"
B = 128


def _old_kernels(commit: str = BEFORE) -> dict | None:
    """{op name: compute} of the conv and pool modules at ``commit``, None when git lacks it.

    Each module runs with ``defop`` replaced by a collector, so nothing is re-registered."""
    found: dict = {}

    def collect(name, kind, compute, *a, **k):
        found[name] = compute
    for mod in ("opset_conv", "opset_pool"):
        try:
            src = subprocess.run(["git", "-C", ROOT, "show", f"{commit}:ir/{mod}.py"],
                                 capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return None
        src = src.replace("from .", "from ember.ir.").replace(", defop\n", "\n")
        src = src.replace("cache=True", "cache=False")   # exec'd code has no file to cache by
        exec(compile(src, f"old_{mod}", "exec"),   # noqa: S102 (our own git history)
             {"__name__": f"bench_old_{mod}", "defop": collect})
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
            np.testing.assert_allclose(got, ref, rtol=1e-4, err_msg=label,
                                       atol=1e-5 + 1e-6 * float(np.abs(ref).max()))
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
    """LeNet-5 training ms/step, eager and hybridized, old and new kernels alternating."""
    import ember as mx
    from bench.data import LENET_SHAPES, init_weights
    from bench.fw_gluon import GluonModel, lenet_net
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, B)
    out = [f"LeNet-5 training, batch {B}: ms/step, best of {rounds} x {steps} steps"]
    for variant in ("eager", "hybridize"):
        res: dict = {"after": [], "before": []}
        for _ in range(rounds):
            for which in ("after", "before") if old else ("after",):
                prev = _swap(old) if which == "before" else None
                model = GluonModel(mx, lenet_net(mx, init_weights(LENET_SHAPES, rng)),
                                   variant, "cpu")
                model.step(x, y, False)   # warm-up: numba compiles (or loads) its kernels
                t0 = time.perf_counter()
                for _ in range(steps):
                    model.step(x, y, False)
                model.sync()
                res[which].append((time.perf_counter() - t0) / steps * 1e3)
                if prev:
                    _swap(prev)
        for which, v in res.items():
            if v:
                out.append(f"  {variant:9s} {which:7s} best {min(v):6.2f}   "
                           f"median {np.median(v):6.2f}")
        if old:
            out.append(f"  {variant:9s} speed-up (best / best) "
                       f"{min(res['before']) / min(res['after']):.2f}x")
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the kernel table and the LeNet training line."""
    ap = argparse.ArgumentParser("python -m bench.conv_kernels", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and steps")
    ap.add_argument("--before", default=BEFORE, help="git commit of the 'before' kernels")
    args = ap.parse_args(argv)
    old = _old_kernels(args.before)
    if old is None:
        print(f"(commit {args.before[:12]} not available: 'before' columns are empty)")
    print("\n".join(kernels(old, 3 if args.quick else 7)))
    print()
    print("\n".join(lenet(old, 5 if args.quick else 20, 2 if args.quick else 3)))
    print(f"\n(numba threads: 2 cores shared; GEMM = one float32 matmul of the same FLOPs, "
          f"{math.prod((B, 784, 25, 6)) * 2 / 1e6:.0f} MFLOP for conv1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
