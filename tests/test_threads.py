"""Compiled programs and autograd under threads, and the bounded cache of compiled signatures.

Several threads calling one hybridized block must get exactly the single-threaded results
(each compiled program runs over one arena); threads training their own nets must end
where sequential training ends (eager, hybridized and ``@ember.compile``); autograd's
recording and training modes are per thread, as in MXNet. A block called with many input
signatures keeps at most ``$EMBER_MAX_VARIANTS`` compiled programs.
"""
import gc
import threading
import weakref

import numpy as np
import pytest

import ember as mx
from ember import autograd, gluon, nd
from ember.gluon import nn
from ember.gluon.cached_op import DEFAULT_MAX_VARIANTS, max_variants

N_THREADS, N_CALLS = 4, 60


def _mlp():
    mx.random.seed(0)
    net = nn.HybridSequential()
    net.add(nn.Dense(32, activation="relu", in_units=8), nn.Dense(4, in_units=32))
    net.initialize(mx.init.Xavier())
    return net


def _cnn():
    mx.random.seed(0)
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, 3, in_channels=2, activation="relu"), nn.MaxPool2D(2), nn.Flatten(),
            nn.Dense(3, in_units=36))
    net.initialize(mx.init.Xavier())
    return net


def _in_threads(work, n=N_THREADS):
    """Run ``work(t)`` in ``n`` threads started together; re-raise the first error."""
    errors, start = [], threading.Barrier(n)

    def run(t):
        try:
            start.wait()
            work(t)
        except BaseException as e:  # noqa: BLE001 (handed to the main thread)
            errors.append(e)
    threads = [threading.Thread(target=run, args=(t,)) for t in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]


@pytest.mark.parametrize("make,shape", [(_mlp, (5, 8)), (_cnn, (3, 2, 8, 8))])
@pytest.mark.parametrize("record", [False, True])
def test_hybridized_block_called_from_threads_matches_one_thread(make, shape, record):
    net = make()
    net.hybridize()
    rng = np.random.default_rng(1)
    xs = [nd.array(rng.standard_normal(shape)) for _ in range(8)]

    def call(x):
        if not record:
            return net(x).asnumpy(), None
        x.attach_grad()
        with autograd.record():
            y = net(x)
        y.backward()
        return y.asnumpy(), x.grad.asnumpy()
    want = [call(x.copy()) for x in xs]
    wrong = []

    def work(t):
        for r in range(N_CALLS):
            i = (r + t) % len(xs)
            out, grad = call(xs[i].copy())
            if not np.array_equal(out, want[i][0]) or \
                    record and not np.array_equal(grad, want[i][1]):
                wrong.append((t, r))
    _in_threads(work)
    assert wrong == [], f"{len(wrong)} of {N_THREADS * N_CALLS} calls differ"


def test_threads_meeting_a_new_signature_compile_it_once():
    net = _mlp()
    net.hybridize()
    x = nd.array(np.random.default_rng(2).standard_normal((3, 8)))
    outs = [None] * N_THREADS

    def work(t):
        outs[t] = net(x).asnumpy()
    _in_threads(work)
    assert len(net._cached) == 1
    for o in outs:
        np.testing.assert_array_equal(o, outs[0])


def _train(net, kind: str, steps: int = 6):
    """Train ``net`` (SGD with momentum); its final parameters."""
    if kind == "hybrid":
        net.hybridize()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1, "momentum": 0.9})
    loss_fn = gluon.loss.L2Loss()
    rng = np.random.default_rng(3)
    x, y = nd.array(rng.standard_normal((6, 8))), nd.array(rng.standard_normal((6, 4)))

    def step(x, y):
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(6)
        return loss
    if kind == "compile":
        step = mx.compile(step)
    for _ in range(steps):
        step(x, y)
    return [p.data().asnumpy() for p in net.collect_params().values()]


@pytest.mark.parametrize("kind", ["eager", "hybrid", "compile"])
def test_threads_training_their_own_nets_match_sequential_training(kind):
    want = _train(_mlp(), kind)
    nets = [_mlp() for _ in range(N_THREADS)]  # (made here: the random seed is global)
    got = [None] * N_THREADS

    def work(t):
        got[t] = _train(nets[t], kind)
    _in_threads(work)
    for params in got:
        for p, q in zip(params, want):
            np.testing.assert_array_equal(p, q)


def test_autograd_modes_are_per_thread():
    seen = {}
    inside, done = threading.Event(), threading.Event()

    def other():
        inside.wait()  # the main thread is recording now
        seen["recording"], seen["training"] = autograd.is_recording(), autograd.is_training()
        x = nd.ones((2,))
        x.attach_grad()
        y = x * 2  # not recorded: this thread never entered record()
        seen["recorded"] = y._node is not None
        with autograd.record():
            seen["own"] = autograd.is_recording() and autograd.is_training()
        done.set()
    th = threading.Thread(target=other)
    th.start()
    with autograd.record():
        inside.set()
        done.wait(10)
        still = autograd.is_recording() and autograd.is_training()
    th.join()
    assert seen == {"recording": False, "training": False, "recorded": False, "own": True}
    assert still  # the other thread's record() scope did not end ours
    assert not autograd.is_recording() and not autograd.is_training()


# ---- the bounded cache of compiled signatures ---------------------------------------------
def test_variant_cache_is_bounded_and_evicted_signatures_recompile(monkeypatch):
    monkeypatch.setenv("EMBER_MAX_VARIANTS", "3")
    net = _mlp()
    net.hybridize(static_shape=True)  # one program per shape (else one for every batch)
    w = [p.data().asnumpy() for p in net.collect_params().values()]

    def want(x):  # the MLP in NumPy
        h = np.maximum(x @ w[0].T + w[1], 0)
        return h @ w[2].T + w[3]
    rng = np.random.default_rng(4)
    xs = {b: rng.standard_normal((b, 8)).astype(np.float32) for b in range(1, 9)}
    first = net(nd.array(xs[1]))._data
    gone = weakref.ref(net._cached.lookup(next(iter(net._cached))))
    for x in xs.values():
        np.testing.assert_allclose(net(nd.array(x)).asnumpy(), want(x), rtol=1e-5, atol=1e-5)
        assert len(net._cached) <= 3
    assert [k[1][0][0][0] for k in net._cached] == [6, 7, 8]  # least recently used went
    gc.collect()
    assert gone() is None  # its program (graph, kernels, arena) was freed
    np.testing.assert_allclose(net(nd.array(xs[1])).asnumpy(), want(xs[1]), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_array_equal(net(nd.array(xs[1])).asnumpy(), first)
    net(nd.array(xs[7]))  # a hit moves the signature to the back: 8 is now the oldest
    net(nd.array(xs[2]))
    assert [k[1][0][0][0] for k in net._cached] == [1, 7, 2]


def test_compiled_function_cache_is_bounded(monkeypatch):
    monkeypatch.setenv("EMBER_MAX_VARIANTS", "2")

    @mx.compile
    def f(x):
        return x * 2 + 1
    for n in range(1, 6):
        x = np.arange(n, dtype=np.float32)
        np.testing.assert_array_equal(f(nd.array(x)).asnumpy(), x * 2 + 1)
    assert len(f.graphs) == 2


def test_max_variants_default_and_bad_values(monkeypatch):
    monkeypatch.delenv("EMBER_MAX_VARIANTS", raising=False)
    assert max_variants() == DEFAULT_MAX_VARIANTS == 32
    for bad in ("0", "-1", "lots"):
        monkeypatch.setenv("EMBER_MAX_VARIANTS", bad)
        with pytest.raises(mx.MXNetError, match="EMBER_MAX_VARIANTS"):
            max_variants()
