"""backends/cpu_tiered.py: kernels compiled off the first call's path, and a Winograd step
that runs im2col until its kernels are ready, then Winograd, with the reference's numbers
throughout."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from test_cpu_conv import _conv_graph, _rand

from ember.backends import cpu, cpu_steps, cpu_tiered, cpu_winograd, reference
from ember.runtime import cache, precompile


def _deferred(warm, cached=False):
    class D(cpu_tiered.Deferred):
        def _cached(self):
            return cached
    d = D(None, [], warm=warm)
    d.background = True
    return d


def test_cold_kernels_compile_in_a_thread_from_the_second_call():
    started = threading.Event()
    release = threading.Event()

    def warm():
        started.set()
        release.wait(10)
    d = _deferred(warm)
    assert d.ready() is False and d.state == "new"          # first call: the fallback
    assert d.ready() is False and d.state == "compiling"    # second: the thread starts
    assert started.wait(10)
    assert d.ready() is False                               # still compiling
    assert not cpu_tiered.wait_all(0.01)                    # wait_all sees it running
    release.set()
    assert cpu_tiered.wait_all(10) and d.ready()


def test_warm_kernels_are_used_from_the_first_call():
    calls = []
    d = _deferred(lambda: calls.append(1), cached=True)
    assert d.ready() and calls == [1]
    assert d.ready() and calls == [1]


def test_a_failed_compile_keeps_the_fallback():
    def warm():
        raise RuntimeError("no")
    d = _deferred(warm)
    d.ready()
    d.ready()
    assert not d.wait(10) and d.state == "failed"
    assert not d.ready()


def test_a_winograd_step_switches_from_im2col_once_compiled(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_winograd, "MIN_TILES", 1)
    monkeypatch.setattr(cpu_winograd, "MIN_CHANNELS", 1)
    monkeypatch.setattr(cpu_winograd, "MIN_MAP", 1)
    monkeypatch.setattr(cpu_tiered, "_BACKGROUND", True)
    monkeypatch.setattr(cpu_steps, "_KERNELS", {})   # this process's dispatchers too
    cache.install(cache.KernelCache(tmp_path))   # cold: nothing compiled
    try:
        cfg = dict(n=2, c=5, f=4, g=1, hw=(9, 8), k=(3, 3), s=(1, 1), p=(1, 1), d=(1, 1),
                   bias=True, epi="relu")
        graph, _, _ = _conv_graph(cfg)
        fn = cpu.compile(graph)
        assert fn.report.get("winograd") == 1
        step = next(v for v in fn.run_fn.__globals__.values()
                    if getattr(v, "deferred", None) is not None)
        x = _rand((2, 5, 9, 8), 1)
        params = [_rand((4, 5, 3, 3), 2), _rand((4,), 3)]
        want = reference.run_graph(graph, [x], params)[0]
        compiled = precompile.STATS["compiled"]
        states = []
        for _ in range(3):
            got = fn([x.copy()], [p.copy() for p in params])[0]
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
            states.append(step.deferred.state)
        assert states[0] == "new" and states[1] in ("compiling", "ready")
        assert step.deferred.wait(120)
        # a worker process compiled them (this process only loaded them from the cache)
        assert precompile.STATS["compiled"] > compiled
        got = fn([x.copy()], [p.copy() for p in params])[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    finally:
        cache.install()


def test_pooling_runs_numpy_until_its_kernel_is_compiled(tmp_path, monkeypatch):
    """Max and global average pooling and their gradients (``cpu_tiered.deferred_call``):
    NumPy's op on a cold first call (max pooling's gradient without compiling the
    reference's numba router), the kernel once compiled in the background; the reference's
    numbers (ties, NaN and Inf included) every time."""
    from ember.ir import opset_pool
    from ember.ir.graph import GraphBuilder
    from ember.ir.types import TensorType
    from ember.passes import run_pipeline
    monkeypatch.setattr(cpu_tiered, "_BACKGROUND", True)
    monkeypatch.setattr(cpu_steps, "_KERNELS", {})
    cache.install(cache.KernelCache(tmp_path))   # cold: nothing compiled
    try:
        b = GraphBuilder("pool")
        x = b.input(TensorType((2, 3, 9, 10), "float32"), "x")
        (y,) = b.emit("pooling", [x], kernel=(3, 3), stride=(2, 2), pad=(1, 1),
                      pool_type="max")
        (z,) = b.emit("pooling", [x], kernel=(1, 1), global_pool=True, pool_type="avg")
        joint = run_pipeline(b.build([y, z]), grad=True, head_grads="ones")
        fn = cpu.compile(joint)
        steps = [v for v in fn.run_fn.__globals__.values()
                 if getattr(v, "deferred", None) is not None]
        assert len(steps) == 4 and fn.report.get("pooling") == 2
        xs = _rand((2, 3, 9, 10), 4)
        xs[0, 0, 2:4, 2:4] = 1.5          # ties: the first maximum takes the gradient
        xs[1, 1, 4, 4], xs[1, 2, 0, 0] = np.nan, np.inf
        want = reference.run_graph(joint, [xs], [])

        def no_router():
            raise AssertionError("the stand-in compiled max pooling's numba router")
        monkeypatch.setattr(opset_pool, "_max_route_kernel", no_router)
        states = []
        for _ in range(3):
            got = fn([xs.copy()], [])
            for g, w in zip(got, want):   # (a global average may round its last place)
                np.testing.assert_allclose(g, w, rtol=1e-6, atol=0)
            states.append({s.deferred.state for s in steps})
        assert states[0] == {"new"}   # the first call ran NumPy's, compiling nothing
        assert states[1] <= {"compiling", "ready"}
        assert all(s.deferred.wait(120) for s in steps)
        for g, w in zip(fn([xs.copy()], []), want):   # now the kernels'
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=0)
    finally:
        cache.install()


def test_without_a_worker_the_thread_compiles_them(tmp_path, monkeypatch):
    """A worker that cannot start leaves the compile to the serving thread."""
    def no_worker(directory):
        raise OSError("no processes here")
    monkeypatch.setattr(precompile, "Worker", no_worker)
    monkeypatch.setattr(cpu_tiered, "_BACKGROUND", True)
    cache.install(cache.KernelCache(tmp_path))
    try:
        from ember.backends import cpu_steps
        src = cpu_winograd.FINITE + "\n# a module of this test alone\n"
        k = cpu_steps.kernel(src)
        d = cpu_tiered.Deferred(lambda: [(k, (np.zeros((1, 1, 1, 1), np.float64),))], [src])
        d.background = True
        assert d.ready() is False and d.ready() is False
        assert d.wait(120) and d.ready()
        assert len(k.overloads) == 1
    finally:
        cache.install()


def test_queued_compiles_are_all_served():
    """Several Deferreds queued at once: the one serving thread compiles each in turn."""
    done = []
    ds = [_deferred(lambda i=i: done.append(i)) for i in range(4)]
    for d in ds:
        d.ready()
        d.ready()
    assert cpu_tiered.wait_all(30)
    assert sorted(done) == [0, 1, 2, 3] and all(d.ready() for d in ds)


def test_a_small_program_runs_numpy_until_a_worker_compiled_it(tmp_path, monkeypatch):
    """precompile.defer_small: a small program with kernels to compile runs on the
    reference backend (NumPy) from its first run; its second starts the background
    compile; once done, the compiled program runs. Compiled before, or too big: compiled
    from the first run."""
    from test_precompile import _graph

    from ember.backends import cpu_steps
    from ember.runtime import executable
    monkeypatch.setattr(cpu_tiered, "_BACKGROUND", True)
    monkeypatch.setattr(cpu_steps, "_KERNELS", {})   # new dispatchers: nothing compiled yet
    cache.install(cache.KernelCache(tmp_path))
    try:
        graph = _graph()
        exe = executable.Executable(graph, "cpu")
        assert precompile.defer_small([exe]) == [exe]
        assert isinstance(exe._fn, executable._Tiered) and exe._fn.report  # (the compiled's)
        x, w = np.linspace(-1, 1, 64 * 32, dtype=np.float32).reshape(64, 32), \
            np.full((16, 32), 0.01, np.float32)
        want = reference.run_graph(graph, [x], [w])
        compiled = precompile.STATS["compiled"]
        for _ in range(2):   # the reference's numbers exactly
            for g, r in zip(exe.run([x], [w]), want):
                np.testing.assert_array_equal(g, r)
        assert cpu_tiered.wait_all(120)
        assert precompile.STATS["compiled"] > compiled   # by the worker process
        got = exe.run([x], [w])
        assert not isinstance(exe._fn, executable._Tiered)   # the compiled program now
        # its sum's kernel compiled with the rest: ready at once, no second background
        # compile (a worker beside the steps, NumPy's sum meanwhile)
        steps = [v for v in exe._fn.run_fn.__globals__.values()
                 if getattr(v, "deferred", None) is not None]
        assert steps and all(s.deferred.state == "ready" for s in steps)
        assert not cpu_tiered._PENDING
        for g, r in zip(got, want):
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)
        monkeypatch.setattr(cpu_steps, "_KERNELS", {})   # compiled before (this cache)
        assert precompile.defer_small([executable.Executable(graph, "cpu")]) == []
        monkeypatch.setattr(precompile, "SMALL_BYTES", 1000)   # too big
        cache.install(cache.KernelCache(tmp_path / "other"))
        monkeypatch.setattr(cpu_steps, "_KERNELS", {})
        assert precompile.defer_small([executable.Executable(graph, "cpu")]) == []
    finally:
        cache.install()


_EXITS_WHILE_COMPILING = r"""
import time
import numpy as np
import pytest
from ember.backends import cpu_steps, cpu_tiered, cpu_winograd
cpu_tiered._BACKGROUND = True
src = cpu_winograd.in_source(4)
k = cpu_steps.split(src)
d = cpu_tiered.Deferred(lambda: [(k, (np.zeros((0, 1, 1), np.float32), 0, 0, 1, 1,
                                      np.zeros((36, 1, 1), np.float32)))], [src])
d.ready()
d.ready()   # queued: a worker starts and compiles
for _ in range(200):
    if cpu_tiered._LIVE:
        break
    time.sleep(0.05)
print([w.proc.pid for w in cpu_tiered._LIVE], flush=True)
"""


def test_a_program_that_exits_while_a_worker_compiles_stops_it(tmp_path):
    """A process ending during a background compile stops its worker (an orphan went on
    compiling after it, taking a core from whatever ran next)."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, EMBER_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", _EXITS_WHILE_COMPILING], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    pids = [int(p) for p in out.stdout.strip().strip("[]").split(",") if p.strip()]
    assert len(pids) == 1
    try:
        os.kill(pids[0], 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive


def test_sgd_runs_its_update_ops_until_the_in_place_kernel_is_compiled(tmp_path, monkeypatch):
    """A cold process: ``Trainer.step``'s first SGD update runs the update ops (nothing
    compiled on its path), a worker compiles the in-place kernel from the second, and the
    kernel updates in place after that; the same numbers every step."""
    import ember as mx
    import ember.optimizer as opt
    from ember.backends import cpu_optim
    monkeypatch.setattr(cpu_tiered, "_BACKGROUND", True)
    monkeypatch.setattr(cpu_optim, "_GATES", {})
    monkeypatch.setattr(cpu_optim, "_MODULE", [])
    cache.install(cache.KernelCache(tmp_path))   # cold: nothing compiled
    try:
        rng = np.random.default_rng(3)
        w0, g0 = (rng.standard_normal((6, 5)).astype(np.float32) for _ in range(2))
        sgd = opt.SGD(learning_rate=0.1, momentum=0.9, wd=0.01, rescale_grad=0.5)
        w, g = mx.nd.array(w0), mx.nd.array(g0)
        state = sgd.create_state(0, w)
        ref_w, ref_g, ref_m = mx.nd.array(w0), mx.nd.array(g0), mx.nd.zeros(w0.shape)
        kw = dict(lr=0.1, momentum=0.9, wd=0.01, rescale_grad=0.5)
        states = []
        for _ in range(3):
            sgd.update(0, w, g, state)
            mx.nd.sgd_mom_update(ref_w, ref_g, ref_m, out=ref_w, **kw)
            np.testing.assert_array_equal(w.asnumpy(), ref_w.asnumpy())
            np.testing.assert_array_equal(state.asnumpy(), ref_m.asnumpy())
            states.append(cpu_optim._GATES[(True, np.dtype(np.float32))].state)
            if len(states) == 1:   # the first ran the update ops, compiling nothing
                assert not cpu_optim.kernels().sgd_mom.signatures
        assert states[0] == "new" and states[1] in ("compiling", "ready")
        gate = cpu_optim._GATES[(True, np.dtype(np.float32))]
        assert gate.wait(120)
        before = w._data
        sgd.update(0, w, g, state)   # the kernel's, in place
        mx.nd.sgd_mom_update(ref_w, ref_g, ref_m, out=ref_w, **kw)
        assert w._data is before and cpu_optim.kernels().sgd_mom.signatures
        np.testing.assert_array_equal(w.asnumpy(), ref_w.asnumpy())
    finally:
        cache.install()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op,shape,axis", [
    ("sum", (4, 16, 40), 1), ("mean", (4, 16, 40), 1),   # rows one after another (P, R, Q)
    ("sum", (5, 300), 1), ("mean", (3, 4, 300), -1),      # the last axis: (P, R, 1)
    ("sum", (6, 3, 5, 7), (0, 2, 3)), ("mean", (16, 40), 0)])   # all axes but one (A, C, B)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")   # (the reference's inf - inf)
def test_sums_run_numpy_until_their_kernel_is_compiled(tmp_path, monkeypatch, op, shape, axis,
                                                       dtype):
    """Sums and means (``cpu_steps._deferred_reduce``): NumPy on a cold first call, the
    kernel once compiled, bit for bit the same (values of mixed magnitude whose sum depends
    on the order, -0.0, Inf and NaN), both the reference's within rounding."""
    from ember.ir.graph import GraphBuilder
    from ember.ir.types import TensorType
    monkeypatch.setattr(cpu_tiered, "_BACKGROUND", True)
    monkeypatch.setattr(cpu_steps, "_KERNELS", {})
    cache.install(cache.KernelCache(tmp_path))   # cold: nothing compiled
    try:
        b = GraphBuilder("red")
        x = b.input(TensorType(shape, dtype), "x")
        (y,) = b.emit(op, [x], axis=axis)
        fn = cpu.compile(b.build([y]))
        (step,) = [v for v in fn.run_fn.__globals__.values()
                   if getattr(v, "deferred", None) is not None]
        rng = np.random.default_rng(7)
        xs = (rng.standard_normal(shape) * 10.0 ** rng.integers(-6, 8, shape)).astype(dtype)
        flat = xs.reshape(-1)
        flat[:3], flat[-2:] = [np.inf, -np.inf, np.nan], -0.0
        if len(shape) == 3 and axis == 1:
            xs[:, :, 1] = -0.0   # a column of -0.0 sums to 0.0, as the kernel's 0.0 + ...
        first = fn([xs.copy()], [])[0]
        assert step.deferred.state == "new"   # NumPy's: nothing compiled
        fn([xs.copy()], [])
        assert step.deferred.wait(120)
        again = fn([xs.copy()], [])[0]
        np.testing.assert_array_equal(first, again)
        assert np.signbit(first).tolist() == np.signbit(again).tolist()
        want = reference.run_graph(b.build([y]), [xs], [])[0]
        np.testing.assert_allclose(first, want, rtol=1e-5 if dtype == "float32" else 1e-12)
    finally:
        cache.install()
