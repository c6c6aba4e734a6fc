"""Tests of backends/cpu_split.py: parallel kernels as serial kernels over parts of their outer
range, run by a small thread pool; results equal the serial kernel's bit for bit."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from ember.backends import cpu_split
from ember.backends.cpu_kernels import reduce_mid_source, reduce_source, softmax_source
from ember.backends.cpu_norm_kernels import (
    batch_norm_backward_source,
    batch_norm_source,
    layer_norm_source,
)
from ember.backends.cpu_pool_kernels import (
    global_pool_backward_source,
    global_pool_source,
    pool_backward_source,
    pool_source,
)
from ember.backends.cpu_steps import kernel
from ember.runtime import cache

cache.install()

GEOM = (3, 3, 2, 2, 1, 1)
BUILDERS = {
    "reduce": (reduce_source, ("sum",), (0, 0)),
    "reduce_mid": (reduce_mid_source, ("sum",), (0, 1)),
    "softmax": (softmax_source, (True,), (0, 0)),
    "pool": (pool_source, ("max", "float32"), (0, 0)),
    "pool_bwd_max": (pool_backward_source, ("max", "float32"), (1, 0)),
    "pool_bwd_avg": (pool_backward_source, ("avg", "float32"), (1, 0)),
    "global_pool": (global_pool_source, ("avg",), (0, 0)),
    "global_pool_bwd": (global_pool_backward_source, ("max", "float32"), (1, 0)),
    "batch_norm": (batch_norm_source, (), (0, 1)),
    "batch_norm_bwd": (batch_norm_backward_source, (), (1, 1)),
    "layer_norm": (layer_norm_source, (), (0, 0)),
}


def _source(name: str, parallel: bool) -> str:
    fn, args, _ = BUILDERS[name]
    if name.startswith("pool"):
        return fn(*args, parallel, GEOM)
    if name == "softmax":
        return fn(args[0], parallel, True)
    return fn(*args, parallel)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_parallel_kernel_becomes_serial_over_a_range(name):
    out = cpu_split.serial_source(_source(name, True))
    assert out is not None
    text, arg, axis = out
    assert (arg, axis) == BUILDERS[name][2]
    assert "prange(" not in text and "parallel=True" not in text
    assert "lo_, hi_):" in text and "range(_u64(lo_), _u64(min(hi_, " in text


def test_serial_and_unsplittable_sources_are_left_alone():
    assert cpu_split.serial_source(reduce_source("sum", False)) is None
    two = reduce_source("max", True).replace("for q in range(Q)", "for q in prange(Q)")
    assert cpu_split.serial_source(two) is None


@pytest.fixture
def parts(monkeypatch):
    """Split into 3 parts whatever the machine (odd extents give unequal parts), however
    small the data."""
    monkeypatch.setattr(cpu_split, "_thread_source", lambda: 3)
    monkeypatch.setattr(cpu_split, "SPLIT_MIN", 0)


def test_batch_norm_split_equals_serial(parts):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 7, 50)).astype(np.float32)
    x[1, 2, 5] = np.nan
    p = [rng.random(7).astype(np.float32) + 0.5 for _ in range(4)]
    results = []
    for fn in (kernel(batch_norm_source(False)),
               cpu_split.split_kernel(batch_norm_source(True), kernel)):
        mm, mv = p[2].copy(), p[3].copy()
        out, mean, invstd = np.empty_like(x), np.empty(7, np.float32), np.empty(7, np.float32)
        fn(x, p[0], p[1], mm, mv, 1e-5, np.float32(1e-5), 0.9, np.float32(0.9), False, True,
           out, mean, invstd)
        results.append((out, mean, invstd, mm, mv))
    assert isinstance(cpu_split.split_kernel(batch_norm_source(True), kernel),
                      cpu_split.SplitKernel)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_max_pool_backward_split_equals_serial(parts):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 9, 11)).astype(np.float32)
    g = rng.standard_normal((5, 5, 6)).astype(np.float32)
    outs = []
    for fn in (kernel(pool_backward_source("max", "float32", False, GEOM)),
               cpu_split.split_kernel(pool_backward_source("max", "float32", True, GEOM),
                                      kernel)):
        dx = np.full_like(x, 7.0)   # every element written, the old contents never read
        fn(g, x, 10, 12, True, dx)
        outs.append(dx)
    np.testing.assert_array_equal(*outs)


def _reduce_pair():
    return (kernel(reduce_source("sum", False)),
            cpu_split.split_kernel(reduce_source("sum", True), kernel))


def test_two_threads_at_once_neither_waits_nor_mixes(parts):
    """Programs run from several threads: a split job that finds the pool busy runs in its
    own thread; every call's result is the serial one."""
    serial, split = _reduce_pair()
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((31, 40, 3)) for _ in range(2)]
    want = []
    for x in xs:
        out = np.empty((31, 3))
        serial(x, out)
        want.append(out)
    errors = []

    def work(i):
        out = np.empty((31, 3))
        for _ in range(200):
            out[...] = 0
            split(xs[i], out)
            if not np.array_equal(out, want[i]):
                errors.append(i)
                return

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads) and not errors


def test_the_caller_waits_for_the_parts_not_for_a_late_worker(monkeypatch):
    """A split call whose worker thread cannot start (busy with something else) finishes
    when its parts are done, all by the caller; the worker's task, run later, touches
    nothing; an exception in a part reaches the caller."""
    from concurrent.futures import ThreadPoolExecutor
    monkeypatch.setattr(cpu_split, "_thread_source", lambda: 2)
    pool = ThreadPoolExecutor(max_workers=1)
    monkeypatch.setattr(cpu_split, "_workers", lambda n: pool)
    release = threading.Event()
    blocker = pool.submit(release.wait, 30)   # the only worker, held
    try:
        seen = []
        out = np.zeros(100)

        def fill(a, lo, hi):
            seen.append(threading.get_ident())
            a[lo:hi] = np.arange(lo, hi)
        done = threading.Event()
        t = threading.Thread(target=lambda: (cpu_split.run_split(fill, (out,), 100, 2),
                                             done.set()))
        t.start()
        assert done.wait(10), "the call waited for the held worker"
        assert np.array_equal(out, np.arange(100)) and set(seen) == {t.ident}

        def fail(a, lo, hi):
            raise ValueError("part")
        with pytest.raises(ValueError, match="part"):
            cpu_split.run_split(fail, (out,), 100, 2)
    finally:
        release.set()
    blocker.result(10)
    out[:] = -1
    pool.submit(lambda: None).result(10)   # the stale tasks have run: nothing changed
    assert (out == -1).all()
    pool.shutdown()


def test_one_thread_runs_the_whole_range_in_the_caller(monkeypatch):
    monkeypatch.setattr(cpu_split, "_thread_source", lambda: 1)
    calls = []
    sk = cpu_split.SplitKernel(lambda x, lo, hi: calls.append((lo, hi)), 0, 0, min_size=21)
    sk(np.empty((10, 2)))
    assert calls == [(0, 10)]
    monkeypatch.setattr(cpu_split, "_thread_source", lambda: 2)
    calls.clear()
    sk(np.empty((10, 2)))   # 20 elements, below min_size: the caller runs it all
    assert calls == [(0, 10)]
    calls.clear()
    sk(np.empty((10, 3)))
    assert len(calls) == 8 and sorted(calls)[-1][1] == 10
    calls.clear()
    cpu_split.run_split(lambda x, lo, hi: calls.append((lo, hi)), (None,), 10, 3)
    assert sorted(calls) == [(i, i + 1) for i in range(10)]   # chunks cover the range once
    calls.clear()
    cpu_split.run_split(lambda x, lo, hi: calls.append((lo, hi)), (None,), 100, 2)
    assert sorted(calls) == [(i * 100 // 8, (i + 1) * 100 // 8) for i in range(8)]


def test_the_governor_sets_the_parts(monkeypatch):
    from ember.runtime import thread_pools

    class Gov:
        threads = 1
    monkeypatch.setattr(thread_pools, "_GOVERNOR", Gov())
    assert cpu_split.threads() == 1
    monkeypatch.setattr(thread_pools, "_GOVERNOR", None)
    assert cpu_split.threads() == cpu_split._CORES


def _blas_threads():
    return [lib.get_num_threads() for lib in cpu_split._openblas()]


@pytest.mark.parametrize("transpose", [False, True])
def test_matmuls_equal_one_gemm_after_another_and_restore_blas_threads(monkeypatch, transpose):
    """The stack of GEMMs split over the pool (OpenBLAS at one thread meanwhile) gives each
    product of the same BLAS call, for transposed views too; OpenBLAS's thread count is
    what it was before, also when a product raises."""
    monkeypatch.setattr(cpu_split, "_thread_source", lambda: 2)
    rng = np.random.default_rng(3)
    a = rng.standard_normal((9, 24, 40)).astype(np.float32)
    b = rng.standard_normal((9, 56, 40) if transpose else (9, 40, 56)).astype(np.float32)
    bb = b.transpose(0, 2, 1) if transpose else b
    before = _blas_threads()
    got = np.full((9, 24, 56), np.nan, np.float32)
    cpu_split.matmuls(a, bb, got)
    want = np.stack([a[k] @ bb[k] for k in range(9)])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(got, a.astype(np.float64) @ bb.astype(np.float64), rtol=1e-4,
                               atol=1e-4)
    assert _blas_threads() == before
    with pytest.raises(ValueError):
        cpu_split.matmuls(a, bb, np.empty((9, 24, 55), np.float32))
    assert _blas_threads() == before


def test_matmuls_use_the_pool_only_when_free(monkeypatch):
    """With the pool busy (another program's split job) or one thread, every product runs
    in the caller with OpenBLAS's threads left alone."""
    seen = []
    real = cpu_split._matmul_range

    def spy(a, b, out, lo, hi):
        seen.append((threading.get_ident(), lo, hi, _blas_threads()))
        real(a, b, out, lo, hi)
    monkeypatch.setattr(cpu_split, "_matmul_range", spy)
    a = np.ones((8, 4, 4), np.float32)
    out = np.empty((8, 4, 4), np.float32)
    before = _blas_threads()
    monkeypatch.setattr(cpu_split, "_thread_source", lambda: 1)
    cpu_split.matmuls(a, a, out)
    assert [s[1:] for s in seen] == [(0, 8, before)]
    monkeypatch.setattr(cpu_split, "_thread_source", lambda: 2)
    seen.clear()
    with cpu_split._busy:
        cpu_split.matmuls(a, a, out)
    assert [s[1:] for s in seen] == [(0, 8, before)]
    seen.clear()
    cpu_split.matmuls(a, a, out)
    if cpu_split._openblas():   # NumPy on OpenBLAS: parts of the stack, one BLAS thread each
        assert sorted(s[1:3] for s in seen) == [(i, i + 1) for i in range(8)]
        assert all(t == [1] * len(before) for *_, t in seen)
    np.testing.assert_array_equal(out, np.full((8, 4, 4), 4, np.float32))
    assert _blas_threads() == before
