"""Data-parallel training on this machine: 1 process x 2 threads against 2 processes x 1
thread, and allreduce bandwidth of ember's fused path against mpi4py's own.

``python -m bench dist [--quick]`` (needs ``pip install 'ember[dist]'``). Training: the
seed MLP (784-256-10, hybridized, SGD) on synthetic data at a global batch of 128, samples/s
of one process with 2 BLAS/numba threads, then of ``ember launch -n 2`` with
``DistributedTrainer`` at 64 per rank and 1 thread each (scaling efficiency is their
ratio), and the same as one ``@ember.compile`` step whose graph holds the allreduce; then
LeNet-5 (relu, max pooling, 1x28x28) the same two ways.
Allreduce: float32 buffers of 1 to 64 MiB on 2 ranks, the best of several calls, as
algorithm bandwidth (bytes / time) for ember's ``allreduce_arrays`` (packs into its fusion
buffer, reduces, unpacks) and mpi4py's ``Allreduce(IN_PLACE)`` on the same buffer.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

GLOBAL_BATCH = 128


def _net(model: str):
    from ember.gluon import nn
    net = nn.HybridSequential()
    if model == "lenet":
        net.add(nn.Conv2D(6, 5, activation="relu"), nn.MaxPool2D(2, 2),
                nn.Conv2D(16, 5, activation="relu"), nn.MaxPool2D(2, 2),
                nn.Dense(120, activation="relu"), nn.Dense(84, activation="relu"), nn.Dense(10))
    else:
        net.add(nn.Dense(256, activation="relu", in_units=784), nn.Dense(10, in_units=256))
    return net


def _train(steps: int, compiled: bool = False, model: str = "mlp") -> dict:
    import numpy as np

    import ember as mx
    import ember.distributed as hvd
    from ember import autograd, gluon, nd
    hvd.init()
    size, rank = hvd.size(), hvd.rank()
    b = GLOBAL_BATCH // size
    rng = np.random.RandomState(rank)
    shape = (b, 1, 28, 28) if model == "lenet" else (b, 784)
    xs = [nd.array(rng.standard_normal(shape).astype("float32")) for _ in range(8)]
    ys = [nd.array(rng.randint(0, 10, b).astype("float32")) for _ in range(8)]
    mx.random.seed(0)
    net = _net(model)
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(xs[0])  # deferred shapes, then every rank starts from rank 0's weights
    hvd.broadcast_parameters(net.collect_params())
    trainer = hvd.DistributedTrainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()

    def eager_step(x, y):
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(b)
        return loss
    run = mx.compile(eager_step) if compiled else eager_step

    def step(i):
        run(xs[i % 8], ys[i % 8])
    for i in range(5):
        step(i)
    hvd.barrier()
    tic = time.perf_counter()
    for i in range(steps):
        step(i)
    hvd.barrier()
    return {"samples_per_s": steps * GLOBAL_BATCH / (time.perf_counter() - tic),
            "size": size}


def _allreduce(repeat: int) -> dict:
    import numpy as np

    from ember.kvstore import _mpi
    w = _mpi.world()
    rows = []
    for mib in (1, 4, 16, 64):
        buf = np.ones(mib * (1 << 20) // 4, np.float32)
        ours, theirs = [], []
        for _ in range(repeat):
            w.barrier()
            t = time.perf_counter()
            w.allreduce_arrays([buf])
            ours.append(time.perf_counter() - t)
            w.barrier()
            t = time.perf_counter()
            w.comm.Allreduce(w.MPI.IN_PLACE, buf, op=w.MPI.SUM)
            theirs.append(time.perf_counter() - t)
        nbytes = buf.nbytes
        rows.append({"MiB": mib, "ember_GBps": nbytes / min(ours) / 1e9,
                     "mpi4py_GBps": nbytes / min(theirs) / 1e9})
    return {"rows": rows, "size": w.size}


def _env(threads: int) -> dict:
    env = dict(os.environ)
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
              "NUMBA_NUM_THREADS"):
        env[v] = str(threads)
    return env


def _run(cmd: list[str], threads: int) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(threads), timeout=600)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(lines[0])


def main(argv: list[str] | None = None) -> int:
    """Run both measurements and print their tables."""
    argv = sys.argv[1:] if argv is None else argv
    if "--worker" in argv:
        what = argv[argv.index("--worker") + 1]
        quick = "--quick" in argv
        steps = 20 if quick else 100
        model = "lenet" if "--lenet" in argv else "mlp"
        res = (_train(steps, model=model) if what == "train"
               else _train(steps, True, model) if what == "compiled"
               else _allreduce(3 if quick else 10))
        if int(os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0"))) == 0:
            print(json.dumps(res), flush=True)
        return 0
    from ember.kvstore import _mpi
    if not _mpi.available():
        print("bench dist: MPI is not installed (pip install 'ember[dist]')")
        return 0
    me, extra = os.path.abspath(__file__), [a for a in argv if a == "--quick"]
    launch = [sys.executable, "-m", "ember", "launch", "-n", "2", me]
    one = _run([sys.executable, me, "--worker", "train", *extra], threads=2)
    two = _run(launch + ["--worker", "train", *extra], threads=1)
    print(f"seed MLP, global batch {GLOBAL_BATCH}, samples/s")
    print(f"  1 process x 2 threads : {one['samples_per_s']:10.0f}")
    print(f"  2 processes x 1 thread: {two['samples_per_s']:10.0f}   "
          f"scaling efficiency {two['samples_per_s'] / one['samples_per_s']:.2f}")
    comp = _run(launch + ["--worker", "compiled", *extra], threads=1)
    print(f"  2 processes x 1 thread, @ember.compile step (allreduce op in the graph): "
          f"{comp['samples_per_s']:.0f}")
    one = _run([sys.executable, me, "--worker", "train", "--lenet", *extra], threads=2)
    two = _run(launch + ["--worker", "train", "--lenet", *extra], threads=1)
    print(f"LeNet-5, global batch {GLOBAL_BATCH}, samples/s")
    print(f"  1 process x 2 threads : {one['samples_per_s']:10.0f}")
    print(f"  2 processes x 1 thread: {two['samples_per_s']:10.0f}   "
          f"scaling efficiency {two['samples_per_s'] / one['samples_per_s']:.2f}")
    bw = _run(launch + ["--worker", "allreduce", *extra], threads=1)
    print("allreduce on 2 ranks, float32, GB/s (bytes / time)")
    print(f"  {'MiB':>4} {'ember':>8} {'mpi4py':>8}")
    for r in bw["rows"]:
        print(f"  {r['MiB']:>4} {r['ember_GBps']:8.2f} {r['mpi4py_GBps']:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
