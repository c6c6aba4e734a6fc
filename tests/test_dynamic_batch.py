"""gluon.batch_family: one compiled program for every batch size (issue 13 item 5)."""
import contextlib
import gc
import threading
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ember as mx
from ember import autograd, nd
from ember.backends import cpu_steps
from ember.gluon import cached_op, nn


def _mlp():
    net = nn.HybridSequential()
    net.add(nn.Dense(16, activation="relu"), nn.Dense(16, activation="tanh"), nn.Dense(5))
    return net


def _cnn():
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, 3, padding=1), nn.BatchNorm(), nn.Activation("relu"),
            nn.MaxPool2D(2), nn.Conv2D(6, 3), nn.Activation("relu"), nn.AvgPool2D(2),
            nn.Dense(5))
    return net


def _pair(make, shape):
    """(a hybridized net, the same net with the same weights run eagerly)."""
    net, eager = make(), make()
    for n in (net, eager):
        n.initialize(mx.init.Xavier(rnd_type="gaussian", magnitude=2))
        n(nd.zeros((1, *shape)))
    for p, q in zip(net.collect_params().values(), eager.collect_params().values()):
        q.set_data(p.data())
    net.hybridize()
    return net, eager


def _family(net):
    fams = list(net._cached.families.values())
    assert len(fams) >= 1
    return fams[-1]


def _stats():
    return dict(cached_op.STATS)


def _delta(before, key):
    return cached_op.STATS[key] - before.get(key, 0)


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("make,shape,sizes", [(_mlp, (12,), 40), (_cnn, (2, 10, 10), 16)])
def test_many_batch_sizes_match_eager_with_one_compile(make, shape, sizes):
    net, eager = _pair(make, shape)
    rng = np.random.default_rng(0)
    # batch 1 first: its kernels may differ (size-1 dims fold away), so later sizes add none
    order = [1, *rng.permutation(np.arange(2, sizes + 1)).tolist()]
    before, kernels = _stats(), None
    for i, b in enumerate(order):
        x = rng.standard_normal((b, *shape)).astype(np.float32)
        _close(net(nd.array(x)).asnumpy(), eager(nd.array(x)).asnumpy())
        if i == 3:
            kernels = len(cpu_steps._KERNELS)
    traces = _delta(before, "trace")
    assert traces in (2, 3)  # the first size and the second to check it (a third when the
    # graph of batch 1 was simplified in a way only right at batch 1)
    assert _delta(before, "bind") == sizes - traces + 1
    assert len(cpu_steps._KERNELS) == kernels  # later sizes generated no new kernel
    assert _family(net).state == "dynamic"


@pytest.mark.parametrize("make,shape,sizes", [(_mlp, (12,), 24), (_cnn, (2, 10, 10), 8)])
def test_many_batch_sizes_backward_matches_eager(make, shape, sizes):
    net, eager = _pair(make, shape)
    rng = np.random.default_rng(1)
    before = _stats()
    for b in rng.permutation(np.arange(1, sizes + 1)).tolist():
        x = rng.standard_normal((b, *shape)).astype(np.float32)
        head = rng.standard_normal((b, 5)).astype(np.float32)
        grads = []
        for n in (net, eager):
            xa = nd.array(x)
            xa.attach_grad()
            with autograd.record():
                y = n(xa)
            y.backward(nd.array(head))
            grads.append([y.asnumpy(), xa.grad.asnumpy()]
                         + [p.grad().asnumpy() for p in n.collect_params().values()
                            if p.grad_req != "null"])
        for a, e in zip(*grads):
            _close(a, e)
    assert _delta(before, "trace") == 2
    for p, q in zip(net.collect_params().values(), eager.collect_params().values()):
        _close(p.data().asnumpy(), q.data().asnumpy())  # BatchNorm's running statistics


def test_a_reshape_naming_the_batch_moves_with_it():
    class Pairs(nn.HybridBlock):
        def hybrid_forward(self, F, x):  # the traced reshape names the batch size
            return x.reshape((x.shape[0], 2, -1)).sum(axis=2) * 2

    net = Pairs()
    net.hybridize()
    before = _stats()
    rng = np.random.default_rng(2)
    for b in (4, 6, 5, 3, 7, 4):
        x = rng.standard_normal((b, 8)).astype(np.float32)
        _close(net(nd.array(x)).asnumpy(), x.reshape(b, 2, 4).sum(axis=2) * 2)
    assert _family(net).state == "dynamic" and _delta(before, "trace") == 2


def test_a_graph_that_depends_on_the_batch_is_compiled_per_size():
    class Half(nn.HybridBlock):
        def hybrid_forward(self, F, x):  # the first half of the batch: not polymorphic
            return F.slice_axis(x, axis=0, begin=0, end=x.shape[0] // 2) * 3

    net = Half()
    net.hybridize()
    before = _stats()
    rng = np.random.default_rng(2)
    for b in (4, 6, 5, 3, 8, 4):
        x = rng.standard_normal((b, 8)).astype(np.float32)
        _close(net(nd.array(x)).asnumpy(), x[:b // 2] * 3)
    assert _family(net).state == "fixed"
    assert _delta(before, "bind") == 0 and _delta(before, "trace") == 5


@pytest.mark.parametrize("make,shape,n", [(_mlp, (12,), 300), (_cnn, (2, 10, 10), 80)])
def test_arena_stays_flat_across_many_batch_sizes(make, shape, n):
    net, _ = _pair(make, shape)
    rng = np.random.default_rng(3)
    order = rng.permutation(np.arange(1, n + 1)).tolist()
    xs = {b: nd.array(rng.standard_normal((b, *shape)).astype(np.float32)) for b in order}
    net(xs[n])
    net(xs[n - 1])  # the family is dynamic from here on
    net(xs[n])  # its arena (and the convolutions' scratch) is sized for n rows
    fam = _family(net)
    held = fam.arena_bytes()
    planned = max(net._cached[k].forward.graph.meta["arena_bytes"] for k in net._cached)
    assert planned < held <= 2 * planned + (8 << 20)
    tracemalloc.start()
    try:
        for b in order[:40]:
            net(xs[b])
        gc.collect()
        start = tracemalloc.get_traced_memory()[0]
        for b in order[40:]:
            net(xs[b])
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert fam.arena_bytes() == held
    assert grown < 1 << 18, grown  # the 260 later sizes held no arena, graph or program


def test_batch_of_zero_rows_still_gives_empty_results():
    net, eager = _pair(_mlp, (12,))
    for b in (3, 5, 0, 4, 0):
        x = nd.array(np.ones((b, 12), np.float32))
        out = net(x)
        assert out.shape == (b, 5)
        _close(out.asnumpy(), eager(x).asnumpy())


def test_static_shape_keeps_one_program_per_shape():
    net, eager = _pair(_mlp, (12,))
    net.hybridize(static_shape=True, static_alloc=True)
    before = _stats()
    for b in (2, 3, 4, 3):
        x = nd.array(np.full((b, 12), 0.5, np.float32))
        _close(net(x).asnumpy(), eager(x).asnumpy())
    assert _delta(before, "trace") == 3 and _delta(before, "bind") == 0
    assert len(net._cached) == 3


def test_an_input_needing_gradients_later_compiles_its_own_variant():
    net, eager = _pair(_mlp, (12,))
    rng = np.random.default_rng(5)
    for b in (3, 4, 5):  # the family is checked for calls whose input needs no gradient
        with autograd.record():
            y = net(nd.array(rng.standard_normal((b, 12)).astype(np.float32)))
        y.backward()
    x = rng.standard_normal((6, 12)).astype(np.float32)
    grads = []
    for n in (net, eager):
        xa = nd.array(x)
        xa.attach_grad()
        with autograd.record():
            y = n(xa)
        y.backward()
        grads.append(xa.grad.asnumpy())
    _close(*grads)


def test_threads_calling_many_batch_sizes_share_the_arena_safely():
    net, eager = _pair(_mlp, (12,))
    rng = np.random.default_rng(6)
    xs = [rng.standard_normal((b, 12)).astype(np.float32) for b in range(1, 33)]
    want = [eager(nd.array(x)).asnumpy() for x in xs]
    net(nd.array(xs[0]))
    errors = []

    def work(k):
        try:
            for i in range(k, len(xs) * 3, 4):
                j = i % len(xs)
                _close(net(nd.array(xs[j])).asnumpy(), want[j])
        except Exception as e:  # reported in the main thread
            errors.append(e)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_compiled_function_binds_new_batch_sizes():
    net, eager = _pair(_mlp, (12,))

    @mx.compile
    def f(x):
        return nd.softmax(net(x) * 2)
    before = _stats()
    rng = np.random.default_rng(7)
    for b in (5, 9, 2, 1, 14, 9):
        x = rng.standard_normal((b, 12)).astype(np.float32)
        _close(f(nd.array(x)).asnumpy(), nd.softmax(eager(nd.array(x)) * 2).asnumpy())
    assert _delta(before, "trace") == 2 and _delta(before, "bind") >= 4  # (9 again: rebound
    # after 14 grew the arena)


def test_compiled_training_step_keeps_one_program_per_shape():
    net, eager = _pair(_mlp, (12,))
    loss_fn = mx.gluon.loss.L2Loss()
    trainers = [mx.gluon.Trainer(n.collect_params(), "sgd", {"learning_rate": 0.1})
                for n in (net, eager)]

    def step(n, trainer, x, y):
        with autograd.record():
            loss = loss_fn(n(x), y)
        loss.backward()
        trainer.step(4)  # a fixed rescale: what the step bakes in does not move
        return loss
    compiled = mx.compile(lambda x, y: step(net, trainers[0], x, y))
    rng = np.random.default_rng(8)
    for b in (4, 6, 3):
        x = nd.array(rng.standard_normal((b, 12)).astype(np.float32))
        y = nd.array(rng.standard_normal((b, 5)).astype(np.float32))
        _close(compiled(x, y).asnumpy(), step(eager, trainers[1], x, y).asnumpy())
    for p, q in zip(net.collect_params().values(), eager.collect_params().values()):
        _close(p.data().asnumpy(), q.data().asnumpy())


@settings(max_examples=12, deadline=None)
@given(units=st.lists(st.integers(1, 7), min_size=1, max_size=3),
       act=st.sampled_from(["relu", "tanh", "sigmoid", None]),
       sizes=st.lists(st.integers(0, 9), min_size=2, max_size=8), record=st.booleans())
def test_any_sequence_of_batch_sizes_matches_eager(units, act, sizes, record):
    def make():
        net = nn.HybridSequential()
        for u in units:
            net.add(nn.Dense(u, activation=act))
        return net
    net, eager = _pair(make, (3,))
    rng = np.random.default_rng(len(sizes))
    for b in sizes:
        x = rng.standard_normal((b, 3)).astype(np.float32)
        outs = []
        for n in (net, eager):
            with autograd.record() if record else contextlib.nullcontext():
                y = n(nd.array(x))
            if record:
                y.backward()
            outs.append([y.asnumpy()] + [p.grad().asnumpy() for p in
                                         n.collect_params().values()] * record)
        for a, e in zip(*outs):
            _close(a, e)


def test_a_loaded_package_keeps_one_arena_for_all_batch_sizes(tmp_path):
    net, eager = _pair(_mlp, (12,))
    x0 = nd.array(np.ones((4, 12), np.float32))
    compiled = mx.compile(lambda x: net(x))
    compiled(x0)
    mx.export(compiled, str(tmp_path / "pkg"), x0)
    pkg = mx.load(str(tmp_path / "pkg"))
    assert pkg.dynamic_batch
    rng = np.random.default_rng(9)
    held = []
    for b in [60, *rng.permutation(np.arange(1, 60)).tolist()]:
        x = rng.standard_normal((b, 12)).astype(np.float32)
        _close(pkg(x).asnumpy(), eager(nd.array(x)).asnumpy())
        held.append(pkg._arena.nbytes)
    assert len(set(held)) == 1  # sized by batch 60, the others fit in it


def test_bench_worker_smoke():
    import argparse

    from bench import dynamic_batch
    args = argparse.Namespace(model="mlp", sizes=4, train=True, static=False)
    row = dynamic_batch.worker(args)
    assert row["rss0"] > 0 and row["rss1"] > 0 and np.isfinite(row["new_ms"])


def test_kept_filter_transforms_are_held_once_for_all_batch_sizes():
    """A Winograd layer's kept transform (inference) belongs to the family's arena, not to
    each batch size's program: one per layer however many sizes run (``Scratch.kept``)."""
    def make():
        net = nn.HybridSequential()
        net.add(nn.Conv2D(64, 3, padding=1, in_channels=64), nn.Activation("relu"),
                nn.Conv2D(64, 3, padding=1, in_channels=64))
        return net
    net, eager = _pair(make, (64, 14, 14))
    rng = np.random.default_rng(5)
    xs = {b: rng.standard_normal((b, 64, 14, 14)).astype(np.float32) for b in (4, 5, 6, 7)}
    for _ in range(3):
        for x in xs.values():
            _close(net(nd.array(x)).asnumpy(), eager(nd.array(x)).asnumpy())
    fam = _family(net)
    kept = [v for a in fam.arenas.values() for k, v in a._shared.items() if k[0] == "kept"]
    assert len(kept) == 2, kept   # the two layers' FilterCaches
    assert all(c.valid or not isinstance(c.packed, bool) for c in kept)   # and kept
