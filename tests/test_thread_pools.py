"""runtime.thread_pools: the thread pools shrink to the cores other processes leave free."""
import os
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


def test_forget_load_takes_the_next_sample_alone(monkeypatch):
    """After ember's own compile worker has finished (forget_load), the next step's sample
    replaces the average: the pools grow back at once, not over half a second."""
    g = threads.Governor()
    g.cores, g.max_threads, g.threads = 2, 2, 2
    monkeypatch.setattr(threads, "_GOVERNOR", g)
    monkeypatch.setattr(threads, "_set_blas_threads", lambda n: None)
    monkeypatch.setattr(g, "_set_numba", lambda n: None)
    busy = [2]
    monkeypatch.setattr(threads, "runnable_elsewhere", lambda: busy[0])
    for _ in range(6):   # two busy threads elsewhere: one thread
        g._next = 0.0
        g.adapt()
    assert g.threads == 1
    busy[0] = 0
    g._next = 0.0
    g.adapt()            # averaged: still one thread
    assert g.threads == 1
    threads.forget_load()
    g.adapt()            # (due at once) the fresh sample alone: both threads
    assert g.threads == 2 and g.load == 0
    busy[0] = 1
    g._next = 0.0
    g.adapt()            # and averaging again afterwards
    assert g.load == 0.5


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("EMBER_ADAPTIVE_THREADS", "0")
    monkeypatch.setattr(threads, "_GOVERNOR", None)
    threads.adapt()
    assert threads.governor() is None


_SPIN = """\
import os, sys, time
import numpy as np
from threadpoolctl import threadpool_info


def spin():
    # CPU seconds burnt in 0.3 s of sleep right after a threaded GEMM
    a = np.random.default_rng(0).random((600, 600))
    a @ a
    t = os.times()
    time.sleep(0.3)
    t2 = os.times()
    return (t2.user + t2.system) - (t.user + t.system)


blas = [i for i in threadpool_info() if i.get("internal_api") == "openblas"]
if not blas or blas[0].get("num_threads", 1) < 2:
    print("None None None")
    sys.exit()
before = spin()
import ember  # noqa: E402
import threading  # noqa: E402
for t in threading.enumerate():   # numba's warm-up at import burns CPU of its own
    if t.name == "ember-numba-warmup":
        t.join()
print(before, spin(), os.environ.get("OPENBLAS_THREAD_TIMEOUT"))
"""


def test_importing_ember_stops_openblas_idle_spin():
    # in a fresh process: OpenBLAS's workers spin ~0.1 s after each GEMM unless told not to
    # (a conv net's BLAS workers then never sleep and take the cores from ember's kernels)
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_THREAD_TIMEOUT", "EMBER_ADAPTIVE_THREADS")}
    out = subprocess.run([sys.executable, "-c", _SPIN], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    before, after, var = out.stdout.split()
    if before == "None":
        pytest.skip("NumPy's BLAS is not a threaded OpenBLAS here")
    assert float(after) < 0.03 < float(before)
    assert var == "None"  # children (benchmark peers) keep OpenBLAS's own default


def test_a_users_openblas_timeout_is_left_alone(monkeypatch):
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "20")
    assert threads.quiet_blas() is False
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT")
    monkeypatch.setenv("EMBER_ADAPTIVE_THREADS", "0")
    assert threads.quiet_blas() is False
