"""Where a compiled training (or inference) step of a model-zoo network spends its time, step
by step: ``python -m bench.step_profile [--model resnet18_v1] [--batch 16] [--size 224]
[--infer] [--top 25]``.

The CPU backend's programs are built under ``backends.cpu_run.profiling``, which times every
kernel step of their run functions; after warm-up steps and the background compiles
(``cpu_tiered.wait_all``), ``--iters`` steps are timed. It prints the wall time of a step,
the share of it the timed steps account for, the time per kind of step (the module and
function that made it: Winograd, im2col + GEMM, direct convolution, split kernels for
BatchNorm, elementwise and reductions, pooling's deferred kernels...) and the ``--top``
steps with the nodes they run. No peers: this is a tool for finding what to
make faster, not a benchmark (``python -m bench resnet`` compares frameworks).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from bench import common


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet18_v1")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--infer", action="store_true", help="time inference, not training")
    args = ap.parse_args(argv)
    common.pin_threads()
    import ember as mx
    from ember.backends import cpu_run, cpu_tiered
    from ember.gluon.model_zoo import vision

    rng = np.random.default_rng(0)
    x = mx.nd.array(rng.random((args.batch, 3, args.size, args.size), np.float32))
    y = mx.nd.array(rng.integers(0, 1000, args.batch).astype(np.float32))
    with cpu_run.profiling() as prof:
        net = getattr(vision, args.model)(classes=1000)
        net.initialize(mx.init.Xavier())
        net.hybridize(static_alloc=True, static_shape=True)
        loss_fn = mx.gluon.loss.SoftmaxCrossEntropyLoss()
        trainer = mx.gluon.Trainer(net.collect_params(), "sgd",
                                   {"learning_rate": 0.01, "momentum": 0.9})

        def step():
            if args.infer:
                net(x).wait_to_read()
                return
            with mx.autograd.record():
                loss = loss_fn(net(x), y)
            loss.backward()
            trainer.step(args.batch)
            loss.wait_to_read()
        for _ in range(3):
            step()
        cpu_tiered.wait_all()
        step()
        prof.clear()
        tic = time.perf_counter()
        for _ in range(args.iters):
            step()
        wall = (time.perf_counter() - tic) / args.iters
    n = args.iters
    timed = sum(prof.seconds.values()) / n
    what = "inference" if args.infer else "training"
    print(f"{args.model} {what} step, batch {args.batch}, {args.size}x{args.size}: "
          f"{wall * 1e3:.1f} ms; the timed steps {timed * 1e3:.1f} ms ({timed / wall:.0%})")
    print(f"{'ms':>9} {'steps':>6}  kind")
    for kind, t, steps in prof.by_kind():
        if t > 0:
            print(f"{t / n * 1e3:9.2f} {steps:6d}  {kind}")
    print(f"\nthe {args.top} longest steps (graph, kind, the node's output shape and name):")
    top = sorted(prof.seconds, key=lambda k: -prof.seconds[k])[:args.top]
    for key in top:
        graph = key[0].rsplit("_", 1)[-1]
        print(f"{prof.seconds[key] / n * 1e3:9.2f}  {graph:8s} {prof.kinds[key]:38s} "
              f"{prof.lines.get(key, '')[:70]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
