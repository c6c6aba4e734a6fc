"""One hybridized block called at many batch sizes: resident memory and the cost of the
first call at a new batch size (issue 13 item 5).

``python -m bench.dynamic_batch [--model mlp|cnn] [--sizes N] [--train]`` runs, each in its
own process, ``hybridize()`` (batch sizes share one compiled program) and
``hybridize(static_shape=True)`` (one program per shape, ember's behaviour before), calling
the block at batch sizes 1..N in one shuffled order, each size twice in a row. It prints the
resident memory before and after, and the median time of the first call at a size minus the
second (what a new size costs beyond running it), and the ratio of the two modes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from bench import common


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def model(kind: str):
    """A small MLP or CNN (conv/BN/pool/dense), initialised; and its input's sample shape."""
    import ember as mx
    from ember.gluon import nn
    net = nn.HybridSequential()
    if kind == "mlp":
        net.add(nn.Dense(256, activation="relu"), nn.Dense(256, activation="relu"),
                nn.Dense(10))
        shape = (784,)
    else:
        net.add(nn.Conv2D(8, 3, padding=1), nn.BatchNorm(), nn.Activation("relu"),
                nn.MaxPool2D(2), nn.Conv2D(16, 3, padding=1), nn.Activation("relu"),
                nn.GlobalAvgPool2D(), nn.Dense(10))
        shape = (1, 12, 12)
    net.initialize(mx.init.Xavier())
    return net, shape


def worker(args) -> dict:
    """Measure one mode in this process."""
    import numpy as np

    import ember as mx
    net, shape = model(args.model)
    net.hybridize(static_shape=args.static)
    rng = np.random.default_rng(0)
    sizes = rng.permutation(np.arange(1, args.sizes + 1)).tolist()

    def call(x) -> float:
        t = time.perf_counter()
        if args.train:
            with mx.autograd.record():
                y = net(x)
            y.backward()
        else:
            y = net(x)
        y.wait_to_read()
        return time.perf_counter() - t
    for b in (8, 9, 8):
        call(mx.nd.ones((b, *shape)))
    rss0 = rss_mb()
    extra = []
    for b in sizes:
        x = mx.nd.array(rng.standard_normal((b, *shape)).astype(np.float32))
        first = call(x)
        extra.append(first - call(x))
    return {"rss0": rss0, "rss1": rss_mb(), "new_ms": statistics.median(extra) * 1e3}


def main() -> None:
    """Parse the options; run both modes in subprocesses (or one, as a worker); print."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="mlp", choices=("mlp", "cnn"))
    ap.add_argument("--sizes", type=int, default=1000)
    ap.add_argument("--train", action="store_true", help="record and run backward too")
    ap.add_argument("--static", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        common.pin_threads()
        print(common.MARK + json.dumps(worker(args)))
        return
    rows = {}
    for static in (True, False):
        cmd = [sys.executable, "-m", "bench.dynamic_batch", "--worker", "--model", args.model,
               "--sizes", str(args.sizes)] + ["--train"] * args.train + ["--static"] * static
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=common.ROOT,
                             env=common.thread_env(), check=True).stdout
        rows[static] = json.loads(out.split(common.MARK)[-1])
    what = f"{args.model} {'training' if args.train else 'inference'}, {args.sizes} batch sizes"
    for static, name in ((True, "static_shape=True (per shape)"), (False, "hybridize()")):
        r = rows[static]
        print(f"{what}, {name:30s}: RSS {r['rss0']:.0f} -> {r['rss1']:.0f} MiB, "
              f"a new size costs {r['new_ms']:.3f} ms")
    grow = [rows[s]["rss1"] - rows[s]["rss0"] for s in (True, False)]
    print(f"{what}: RSS growth {grow[0]:.0f} -> {grow[1]:.0f} MiB; new-size cost ratio "
          f"{rows[True]['new_ms'] / max(rows[False]['new_ms'], 1e-9):.1f}x lower")


if __name__ == "__main__":
    main()
