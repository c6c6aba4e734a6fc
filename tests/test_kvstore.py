"""ember.kvstore (mx.kv) in one process: MXNet's local store semantics, the refusals, and a
Trainer on a distributed kvstore run as a job of one rank (the multi-rank tests are in
tests/test_distributed.py)."""
import builtins
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ember as mx
from ember import gluon, nd
from ember.kvstore import _mpi


def test_init_push_pull_sum_values_of_devices():
    kv = mx.kv.create("local")
    assert (kv.type, kv.rank, kv.num_workers) == ("local", 0, 1)
    kv.init(3, nd.ones((2, 3)) * 2)
    out = nd.zeros((2, 3))
    kv.pull(3, out=out)
    np.testing.assert_array_equal(out.asnumpy(), np.full((2, 3), 2.0))
    kv.push(3, [nd.ones((2, 3)), nd.ones((2, 3)) * 3])  # no updater: the sum is stored
    outs = [nd.zeros((2, 3)), nd.zeros((2, 3))]
    kv.pull(3, out=outs)
    for o in outs:
        np.testing.assert_array_equal(o.asnumpy(), np.full((2, 3), 4.0))
    with pytest.raises(mx.MXNetError, match="already initialised"):
        kv.init(3, nd.ones((2, 3)))
    with pytest.raises(mx.MXNetError, match="not been initialised"):
        kv.pull("nope", out=out)


def test_lists_of_keys_pushpull_and_broadcast():
    kv = mx.kv.create("device")
    kv.init(["a", "b"], [nd.zeros((2,)), nd.zeros((3,))])
    a, b = nd.array([1.0, 2.0]), nd.array([1.0, 1.0, 1.0])
    kv.pushpull(["a", "b"], [a, b])  # out=None: into the values themselves
    np.testing.assert_array_equal(a.asnumpy(), [1.0, 2.0])
    out = nd.zeros((2, 2))
    kv.broadcast("c", nd.ones((2, 2)) * 5, out=out)
    np.testing.assert_array_equal(out.asnumpy(), np.full((2, 2), 5.0))


def test_set_optimizer_updates_the_stored_value_and_states_round_trip(tmp_path):
    kv = mx.kv.create("local")
    kv.set_optimizer(mx.optimizer.SGD(learning_rate=0.1, momentum=0.9))
    w = np.arange(4, dtype=np.float32)
    kv.init(0, nd.array(w))
    g = np.array([1.0, -1.0, 0.5, 2.0], np.float32)
    kv.push(0, nd.array(g))
    kv.push(0, nd.array(g))
    out = nd.zeros((4,))
    kv.pull(0, out=out)
    mom = -0.1 * g
    expect = w + mom
    mom = 0.9 * mom - 0.1 * g
    np.testing.assert_allclose(out.asnumpy(), expect + mom, rtol=1e-6)
    kv.save_optimizer_states(str(tmp_path / "s"))
    kv2 = mx.kv.create("local")
    kv2.set_optimizer(mx.optimizer.SGD(learning_rate=0.1, momentum=0.9))
    kv2.load_optimizer_states(str(tmp_path / "s"))
    np.testing.assert_allclose(kv2._updater.states[0].asnumpy(), mom, rtol=1e-6)


def test_dist_async_and_unknown_kinds_are_refused_with_reasons():
    with pytest.raises(mx.MXNetError, match="asynchronous training needs parameter servers"):
        mx.kv.create("dist_async")
    net = gluon.nn.Dense(2, in_units=2)
    net.initialize()
    with pytest.raises(mx.MXNetError, match="asynchronous"):
        gluon.Trainer(net.collect_params(), "sgd", kvstore="dist_async")
    with pytest.raises(mx.MXNetError, match="Unknown kvstore type"):
        mx.kv.create("bogus")
    with pytest.raises(mx.MXNetError, match="compression"):
        mx.kv.create("local").set_gradient_compression({"type": "2bit"})


def test_without_mpi4py_dist_kvstores_say_how_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_mpi(name, *args, **kwargs):
        if name.startswith("mpi4py"):
            raise ImportError("No module named 'mpi4py'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_mpi)
    net = gluon.nn.Dense(2, in_units=2)
    net.initialize()
    with pytest.raises(mx.MXNetError, match=r"pip install 'ember\[dist\]'"):
        gluon.Trainer(net.collect_params(), "sgd", kvstore="dist_sync")


needs_mpi = pytest.mark.skipif(not _mpi.available(),
                               reason="MPI is not installed (pip install 'ember[dist]')")


ONE_RANK = textwrap.dedent('''
    import sys
    import numpy as np
    import ember as mx
    from ember import autograd, gluon, nd

    def run(kvstore, uok):
        mx.random.seed(3)
        net = gluon.nn.Dense(3, in_units=4)
        net.initialize()
        tr = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1,
                                                         "momentum": 0.9},
                           kvstore=kvstore, update_on_kvstore=uok)
        x = nd.array(np.random.RandomState(0).standard_normal((5, 4)))
        for _ in range(3):
            with autograd.record():
                loss = (net(x) ** 2).sum()
            loss.backward()
            tr.step(5)
        return net, tr
    for uok in (True, False):
        net, tr = run("dist_sync", uok)
        ref, _ = run(None, None)
        assert tr._update_on_kvstore is uok and tr._distributed
        np.testing.assert_allclose(net.weight.data().asnumpy(), ref.weight.data().asnumpy(),
                                   rtol=1e-6)
        tr.save_states(sys.argv[1])
        tr.load_states(sys.argv[1])
        if uok:
            try:
                tr.allreduce_grads()
                raise SystemExit("allreduce_grads with update_on_kvstore did not raise")
            except mx.MXNetError as e:
                assert "updated on kvstore" in str(e)
            try:
                tr.step(7)
                raise SystemExit("a changed batch size did not raise")
            except UserWarning as e:
                assert "batch_size" in str(e)
    print("ok")
''')


@needs_mpi
def test_dist_sync_trainer_of_one_rank_trains_like_local(tmp_path):
    """A job of one rank (MPI initialised in a subprocess, never in the test process)."""
    r = subprocess.run([sys.executable, "-c", ONE_RANK, str(tmp_path / "t.states")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr


def test_split_sampler_shards_the_dataset():
    parts = [list(gluon.data.SplitSampler(10, 3, i, shuffle=False)) for i in range(3)]
    assert parts == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    shuffled = list(gluon.data.SplitSampler(10, 3, 1))
    assert sorted(shuffled) == [3, 4, 5] and len(gluon.data.SplitSampler(10, 3, 1)) == 3
    with pytest.raises(ValueError, match="part_index"):
        gluon.data.SplitSampler(10, 2, 2)
