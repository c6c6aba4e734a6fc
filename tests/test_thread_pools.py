"""runtime.thread_pools: the thread pools shrink to the cores other processes leave free."""
import subprocess
import sys
import time

import numpy as np
import pytest

from ember.runtime import thread_pools as threads


def test_target_leaves_busy_cores_and_keeps_one_thread():
    g = threads.Governor()
    g.cores, g.max_threads = 4, 4
    assert [g.target(x) for x in (0, 0.4, 1, 1.6, 3, 7)] == [4, 4, 3, 2, 1, 1]
    g.max_threads = 2  # never more than the pools were started with
    assert g.target(0) == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_runnable_elsewhere_excludes_this_process():
    n = threads.runnable_elsewhere()
    assert isinstance(n, int) and n >= 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_busy_processes_shrink_blas_and_numba_pools():
    numba = pytest.importorskip("numba")
    threadpoolctl = pytest.importorskip("threadpoolctl")
    g = threads.Governor()
    if g.max_threads < 2:
        pytest.skip("one core: nothing to shrink")
    spin = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(g.cores)]
    try:
        time.sleep(0.3)
        deadline = time.monotonic() + 10
        while g.threads > 1 and time.monotonic() < deadline:
            g._next = 0.0
            g.adapt()
            time.sleep(0.05)
        assert g.threads == 1 and g.changes >= 1
        assert numba.get_num_threads() == 1
        blas = threadpoolctl.threadpool_info()
        assert all(i["num_threads"] == 1 for i in blas if i["user_api"] == "blas")
        a = np.random.default_rng(0).random((64, 64))
        np.testing.assert_allclose(a @ a, np.einsum("ij,jk->ik", a, a), rtol=1e-12)
    finally:
        for p in spin:
            p.kill()
            p.wait()
        g.threads, g.load = 1, 0.0
        threads._set_blas_threads(g.max_threads)
        numba.set_num_threads(g.max_threads)


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("EMBER_ADAPTIVE_THREADS", "0")
    monkeypatch.setattr(threads, "_GOVERNOR", None)
    threads.adapt()
    assert threads.governor() is None
