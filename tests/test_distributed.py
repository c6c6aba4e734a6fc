"""Data-parallel training over MPI: 2 processes started with ``mpirun -n 2`` on loopback.

Each job runs one worker script (written by the test) that trains the same small MLP
data-parallel with every trainer kind (``kvstore='dist_sync'`` with ``update_on_kvstore``
both ways, ``kvstore='horovod'``, ``ember.distributed.DistributedTrainer``) and, on rank
0, one process on the whole batch; the parameters after N steps must agree. Deferred
shapes are used throughout, so the broadcast of parameters initialised by the first
forward is exercised; rank 1 draws different initial weights, which the broadcast must
overwrite. Other tests kill or lose a rank and check that the job ends with an error.
Skipped, saying why, only when MPI (``pip install 'ember[dist]'``) is not installed.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ember.kvstore import _mpi

pytestmark = pytest.mark.skipif(
    not _mpi.available(), reason="MPI is not installed (pip install 'ember[dist]')")

WORKER = textwrap.dedent('''
    import json, sys
    import numpy as np
    import ember as mx
    import ember.distributed as hvd
    from ember import autograd, gluon, nd
    from ember.gluon import nn

    mode, out = sys.argv[1], sys.argv[2]
    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    B, STEPS = 4, 3
    rng = np.random.RandomState(0)
    X = rng.standard_normal((STEPS * B * size, 5)).astype("float32")
    Y = (np.arange(STEPS * B * size) % 3).astype("float32")
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()

    def make(seed):
        mx.random.seed(seed)
        net = nn.HybridSequential()
        net.add(nn.Dense(8, activation="relu"), nn.Dense(3))   # deferred in_units
        net.initialize(mx.init.Xavier())
        if mode != "eager":
            net.hybridize()
        return net

    def train(net, trainer, rows, batch_size):
        step = None
        if mode == "compiled":
            @mx.compile
            def step(x, y):
                with autograd.record():
                    loss = loss_fn(net(x), y)
                loss.backward()
                trainer.step(batch_size)
                return loss
        for s in range(STEPS):
            lo = s * B * size
            idx = np.arange(lo, lo + B * size)[rows]
            x, y = nd.array(X[idx]), nd.array(Y[idx])
            if step is not None and s > 0:   # first step eager: initialises the shapes
                step(x, y)
                continue
            with autograd.record():
                loss = loss_fn(net(x), y)
            loss.backward()
            trainer.step(batch_size)
        return {f"{i}:{k.split('_', 1)[1]}": v.data().asnumpy().tolist()
                for i, (k, v) in enumerate(net.collect_params().items())}

    opt = ("sgd", {"learning_rate": 0.1, "momentum": 0.9, "wd": 1e-3})
    mine = slice(rank * B, (rank + 1) * B)
    results = {}
    kinds = [("dist_sync", True), ("dist_sync", False), ("horovod", None), ("hvd", None)]
    for kind, uok in kinds:
        net = make(1 + rank)            # rank 1 starts from other weights
        if kind == "hvd":
            hvd.broadcast_parameters(net.collect_params())  # deferred: at first forward
            trainer = hvd.DistributedTrainer(net.collect_params(), *opt)
            bs = B                      # averaged: each rank's batch
        else:
            trainer = gluon.Trainer(net.collect_params(), *opt, kvstore=kind,
                                    update_on_kvstore=uok)
            bs = B * size               # summed (MXNet dist_sync): the global batch
        results[f"{kind}-{uok}"] = train(net, trainer, mine, bs)
    if rank == 0:
        net = make(1)
        trainer = gluon.Trainer(net.collect_params(), *opt, kvstore=None)
        results["single"] = train(net, trainer, slice(None), B * size)
    results["size"] = size
    with open(f"{out}.{rank}", "w") as f:
        json.dump(results, f)
''')


def mpirun(n: int, script: str, *args, timeout: float = 120, env=None):
    """Run ``script`` on ``n`` ranks through ``ember launch`` (mpiexec underneath)."""
    full = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    cmd = [sys.executable, "-m", "ember", "launch", "-n", str(n), script, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full)


def _check_equal(results: dict):
    single = results["single"]
    for kind, params in results.items():
        if kind in ("single", "size"):
            continue
        for name, ref in single.items():
            np.testing.assert_allclose(np.array(params[name]), np.array(ref), rtol=1e-5,
                                       atol=2e-6, err_msg=f"{kind}: {name}")


@pytest.mark.parametrize("mode", ["eager", "hybridized", "compiled"])
def test_two_ranks_train_like_one_process_at_twice_the_batch(mode, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "res"
    r = mpirun(2, str(script), mode, str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    r0 = json.loads((tmp_path / "res.0").read_text())
    r1 = json.loads((tmp_path / "res.1").read_text())
    assert r0["size"] == 2
    _check_equal(r0)
    for kind in r1:
        if kind != "size":
            for name, v in r1[kind].items():  # both ranks hold the same weights
                np.testing.assert_array_equal(np.array(v), np.array(r0[kind][name]))


EXTRAS = textwrap.dedent('''
    import json, sys
    import numpy as np
    import ember as mx
    import ember.distributed as hvd
    from ember import autograd, gluon, nd
    from ember.gluon import nn
    from ember.gluon.contrib.nn import SyncBatchNorm
    from ember.kvstore import _mpi

    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    out = {}
    rng = np.random.RandomState(0)
    X = (rng.standard_normal((8, 3, 2)) * 2 + 1).astype("float32")
    W = rng.standard_normal((8, 3, 2)).astype("float32")
    mine = slice(rank * 4, rank * 4 + 4)

    def bn(layer, rows, hybridize=False):
        layer.initialize()
        if hybridize:
            layer.hybridize()
        x = nd.array(X[rows])
        x.attach_grad()
        with autograd.record():
            y = layer(x)
            loss = (y * nd.array(W[rows])).sum()
        loss.backward()
        return [y.asnumpy(), x.grad.asnumpy(), layer.gamma.grad().asnumpy(),
                layer.beta.grad().asnumpy(), layer.running_mean.data().asnumpy(),
                layer.running_var.data().asnumpy()]
    ref = bn(nn.BatchNorm(in_channels=3), slice(None))
    ref[0], ref[1] = ref[0][mine], ref[1][mine]
    for hybrid in (False, True):
        got = bn(SyncBatchNorm(in_channels=3, num_devices=1), mine, hybrid)
        for i in (2, 3):   # parameter gradients: each rank holds its part of the sum
            got[i] = hvd.allreduce(nd.array(got[i]), average=False).asnumpy()
        out[f"syncbn{hybrid}"] = [float(np.abs(a - b).max()) for a, b in zip(got, ref)]

    labels, preds = np.arange(8) % 2, rng.rand(8, 2)
    for name, make in [("acc", mx.metric.Accuracy),
                       ("f1", lambda: mx.metric.F1(average="micro")),
                       ("ce", mx.metric.CrossEntropy)]:
        m, r = make(), make()
        m.update([nd.array(labels[mine])], [nd.array(preds[mine])])
        r.update([nd.array(labels)], [nd.array(preds)])
        out[name] = [hvd.allreduce_metric(m).get()[1], r.get()[1]]

    net = nn.HybridSequential()
    net.add(nn.Dense(4, in_units=3), nn.Dense(4, in_units=4), nn.Dense(2, in_units=4))
    net.initialize()
    hvd.broadcast_parameters(net.collect_params())
    calls = {}
    for kind in ("hvd", "dist_sync"):
        trainer = (hvd.DistributedTrainer(net.collect_params(), "sgd") if kind == "hvd" else
                   gluon.Trainer(net.collect_params(), "sgd", kvstore="dist_sync"))
        with autograd.record():
            loss = net(nd.ones((2, 3)) * rank).sum()
        loss.backward()
        before = _mpi.world().calls
        trainer.step(2)
        calls[kind] = _mpi.world().calls - before
    out["calls"] = calls
    out["split"] = list(gluon.data.SplitSampler(10, shuffle=False))
    out["gather"] = hvd.allgather(nd.ones((rank + 1, 2)) * rank).asnumpy().tolist()
    out["bcast"] = hvd.broadcast(nd.ones((2,)) * (rank + 5), root_rank=1).asnumpy().tolist()
    with open(f"{sys.argv[1]}.{rank}", "w") as f:
        json.dump(out, f)
''')


def test_syncbatchnorm_metrics_fusion_and_collectives_across_two_ranks(tmp_path):
    script = tmp_path / "extras.py"
    script.write_text(EXTRAS)
    r = mpirun(2, str(script), str(tmp_path / "res"))
    assert r.returncode == 0, r.stdout + r.stderr
    for rank in (0, 1):
        out = json.loads((tmp_path / f"res.{rank}").read_text())
        # outputs, input gradients, gamma/beta gradients, running statistics of 2 ranks
        # at batch 4 = BatchNorm at batch 8
        for hybrid in (False, True):   # eager and hybridized
            assert max(out[f"syncbn{hybrid}"]) < 1e-5, out
        for name in ("acc", "f1", "ce"):
            np.testing.assert_allclose(out[name][0], out[name][1], rtol=1e-6, err_msg=name)
        # 6 parameters' gradients in ONE fused allreduce per step
        assert out["calls"] == {"hvd": 1, "dist_sync": 1}, out["calls"]
        assert out["split"] == list(range(rank * 5, rank * 5 + 5))
        assert out["gather"] == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]
        assert out["bcast"] == [6.0, 6.0]


DIE = textwrap.dedent('''
    import os, signal, sys, time
    import numpy as np
    import ember.distributed as hvd
    from ember import nd
    hvd.init()
    x = nd.ones((4,))
    hvd.allreduce_(x)
    how = sys.argv[1]
    if hvd.rank() == 1:
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if how == "raise":
            raise ValueError("rank 1 broke")
        sys.exit(0)                      # "leave": quits the training loop early
    for _ in range(1000):
        hvd.allreduce_(x)
        time.sleep(0.01)
    print("rank 0 finished without rank 1", flush=True)
''')


@pytest.mark.parametrize("how", ["kill", "raise", "leave"])
def test_a_lost_rank_ends_the_job_with_an_error(how, tmp_path):
    script = tmp_path / "die.py"
    script.write_text(DIE)
    r = mpirun(2, str(script), how, timeout=60, env={"EMBER_DIST_TIMEOUT": "3"})
    text = r.stdout + r.stderr
    assert r.returncode != 0, text
    assert "finished without rank 1" not in text
    assert "ember launch: the job failed" in text, text
    if how == "raise":
        assert "ValueError: rank 1 broke" in text and "aborting all 2 ranks" in text, text
    # "leave": either rank 0's watchdog reports the wait ("waited more than 3 s"), or MPI's
    # process manager stops the job first on seeing rank 1 exit without MPI_Finalize; both end
    # the job with an error within the bound, which is what is asserted above
