"""Output arrays of compiled CPU programs are reused once nobody holds them, never before;
autograd drops a hybridized block's residuals when its backward has run."""
from __future__ import annotations

import numpy as np

import ember as mx
from ember import autograd, gluon, nd
from ember.backends import cpu
from ember.ir.graph import GraphBuilder
from ember.ir.types import TensorType
from ember.runtime import cache

cache.install()


def _program():
    b = GraphBuilder("g")
    x = b.input(TensorType((64, 32), "float32"), "x")
    (y,) = b.emit("exp", [x])
    (z,) = b.emit("mul_scalar", [y], scalar=2.0)
    return cpu.compile(b.build([y, z]))


def _addr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def test_a_dropped_output_is_reused_by_the_next_run():
    fn = _program()
    x = np.random.default_rng(0).standard_normal((64, 32)).astype("float32")
    y, z = fn([x], [])
    where = _addr(y), _addr(z)
    del y, z
    x1 = x + 1
    taken = [np.empty((64, 32), "float32") for _ in range(4)]  # malloc's freed chunks
    y2, z2 = fn([x1], [])
    assert (_addr(y2), _addr(z2)) == where
    np.testing.assert_allclose(y2, np.exp(x1), rtol=1e-6)
    np.testing.assert_allclose(z2, 2 * np.exp(x1), rtol=1e-6)
    assert all(not np.shares_memory(t, y2) for t in taken)


def test_an_output_still_held_is_never_overwritten():
    fn = _program()
    x = np.ones((64, 32), "float32")
    y, z = fn([x], [])
    view = z[3:5]           # a view keeps its base alive: z must not be reused either
    del z
    keep = y.copy(), view.copy()
    for k in range(4):       # more runs than the recycler keeps arrays per output
        y2, z2 = fn([x * (k + 2)], [])
        assert not np.shares_memory(y2, y) and not np.shares_memory(z2, view)
        np.testing.assert_allclose(z2, 2 * np.exp(x * (k + 2)), rtol=1e-6)
    np.testing.assert_array_equal(y, keep[0])
    np.testing.assert_array_equal(view, keep[1])


def test_backward_releases_a_hybridized_blocks_residuals():
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(8, activation="relu"), gluon.nn.Dense(3))
    net.initialize(mx.init.Xavier())
    net.hybridize()
    x = nd.array(np.random.default_rng(1).standard_normal((4, 5)).astype("float32"))
    with autograd.record():
        out = net(x)
    entry = out._node[0].op
    assert entry.residuals is not None
    out.backward()
    # the output is still alive (and can be in a reference cycle with its tape entry), but
    # the saved activations are not
    assert entry.residuals is None
    with autograd.record():
        out2 = net(x)
    out2.backward()
    np.testing.assert_array_equal(out.asnumpy(), out2.asnumpy())


def test_programs_sharing_an_arena_share_one_recycler():
    # a graph's programs at many batch sizes share one arena; with a recycler each, 200
    # batch sizes of a small CNN kept 200 sets of residuals (RSS 177 -> 409 MiB, not 203)
    from ember.runtime.arena import SharedArena
    arena = SharedArena()
    progs = []
    for n in (3, 5):
        b = GraphBuilder("g")
        x = b.input(TensorType((n, 32), "float32"), "x")
        (y,) = b.emit("exp", [x])
        progs.append(cpu.compile(b.build([y]), arena))
    takes = [p.run_fn.__globals__["take"].__self__ for p in progs]
    assert takes[0] is takes[1]
    y3 = progs[0]([np.ones((3, 32), "float32")], [])[0]
    held = [a for pair in takes[0].arrays for a in pair if a is not None]
    del y3
    progs[1]([np.ones((5, 32), "float32")], [])
    held2 = [a for pair in takes[0].arrays for a in pair if a is not None]
    assert len(held) == 1 and len(held2) == 2   # bounded: two arrays per output line


def test_recyclers_keep_no_more_than_their_budget(monkeypatch):
    import gc

    from ember.backends import cpu_run
    gc.collect()   # other tests' programs: their finalizers only ever lower the count
    fn = _program()
    x = np.ones((64, 32), "float32")
    fn([x], [])
    held = cpu_run._held[0]
    assert held >= 2 * x.nbytes                 # its two outputs
    monkeypatch.setattr(cpu_run, "BUDGET", held)  # full: new arrays are not kept
    y, z = fn([x], [])                            # held: the next run cannot reuse them
    y2, z2 = fn([x], [])
    assert not np.shares_memory(y2, y) and cpu_run._held[0] <= held
    del fn, y, z, y2, z2
    gc.collect()
    assert cpu_run._held[0] < held              # a dropped program returns its bytes
