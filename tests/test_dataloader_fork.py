"""DataLoader worker processes: fork safety right after ``import ember``, honest timeout
messages, and no shared-memory litter when the training process is SIGKILLed."""
import glob
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from ember.base import MXNetError
from ember.gluon import data as gdata
from ember.gluon.data import _shm

_ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _run(code: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=_ENV)


def test_workers_forked_right_after_import_run_compiled_ops():
    # import ember starts numba's warm-up thread; workers forked while it held numba's or an
    # import lock used to hang in their first compiled op until the timeout.
    r = _run("""
        import time
        import ember as mx
        from ember import gluon, nd
        import numpy as np
        net = gluon.nn.Dense(3, in_units=4)
        net.initialize()
        net.hybridize()
        class DS(gluon.data.Dataset):
            def __len__(self):
                return 8
            def __getitem__(self, i):
                return net(nd.ones((1, 4)) * i).asnumpy()[0]
        t0 = time.perf_counter()
        out = np.concatenate([b.asnumpy() for b in
                              gluon.data.DataLoader(DS(), batch_size=4, num_workers=2,
                                                    timeout=30)])
        print("SECONDS", time.perf_counter() - t0)
        w, b = net.weight.data().asnumpy(), net.bias.data().asnumpy()
        ref = np.arange(8, dtype=np.float32)[:, None] * w.sum(axis=1)[None, :] + b
        print("MAXERR", float(np.abs(out - ref).max()))
    """)
    assert r.returncode == 0, r.stderr[-3000:]
    seconds = float(r.stdout.split("SECONDS")[1].split()[0])
    assert seconds < 20, r.stdout
    assert float(r.stdout.split("MAXERR")[1].split()[0]) < 1e-5


def test_fork_guard_holds_numba_compiler_lock_and_child_gets_a_free_one():
    from numba.core.compiler_lock import global_compiler_lock

    from ember.gluon.data import _forksafe
    got = []
    with _forksafe.fork_guard():
        t = threading.Thread(target=lambda: got.append(global_compiler_lock._lock.acquire(
            timeout=0.05)))
        t.start()
        t.join()
        held = global_compiler_lock._lock
        _forksafe.after_fork_in_child()
        fresh = global_compiler_lock._lock
        global_compiler_lock._lock = held  # this is not a child: put the held one back
    assert got == [False]  # another thread could not start compiling during the fork
    assert fresh is not held and fresh.acquire(timeout=0.05)
    fresh.release()


class _Slow(gdata.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, idx):
        time.sleep(3.0)  # _SLOW_LINE
        return np.float32(idx)


_LOCK = threading.Lock()


class _Locked(gdata.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, idx):
        with _LOCK:  # _LOCKED_LINE
            return np.float32(idx)


def _line(tag):
    with open(__file__) as f:
        return next(i for i, line in enumerate(f, 1) if line.rstrip().endswith("# " + tag))


@pytest.mark.parametrize("threads", [False, True])
def test_timeout_names_the_line_each_worker_is_in(threads):
    loader = gdata.DataLoader(_Slow(), batch_size=1, num_workers=2, timeout=0.5,
                              thread_pool=threads)
    with pytest.raises(MXNetError, match="timed out after 0.5 seconds") as e:
        list(loader)
    assert isinstance(e.value, multiprocessing.TimeoutError)  # what MXNet raises
    msg = str(e.value)
    where = f'"{__file__}", line {_line("_SLOW_LINE")} in __getitem__'
    assert msg.count(where) == 2, msg  # both workers, at the sleeping line
    assert ("thread 1" if threads else "worker 1 (pid") in msg
    assert "slow (pass a larger `timeout`)" in msg
    loader.close()


def test_timeout_of_a_worker_blocked_on_a_lock_held_at_fork_names_it():
    with _LOCK:  # held by this process when the workers are forked: held in them forever
        loader = gdata.DataLoader(_Locked(), batch_size=1, num_workers=1, timeout=0.5)
        with pytest.raises(MXNetError) as e:
            list(loader)
    assert f"line {_line('_LOCKED_LINE')} in __getitem__" in str(e.value)
    loader.close()


# ---- shared memory after SIGKILL ---------------------------------------------------------
_KILLED = """
    import numpy as np, sys, time
    from ember.gluon import data as gdata
    x = np.arange(64 * 1024, dtype=np.float32).reshape(64, 1024)
    loader = gdata.DataLoader(gdata.ArrayDataset(x), batch_size=4, num_workers=2, prefetch=8)
    it = iter(loader)
    first = next(it)
    assert np.array_equal(first.asnumpy(), x[:4])
    print("PREFIX", loader._worker_pool.prefix, flush=True)
    time.sleep(120)
"""


def _files(prefix):
    return glob.glob(os.path.join(glob.escape(_shm._shm_dir()), glob.escape(prefix) + "*"))


def _start_killable(new_session: bool):
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_KILLED)],
                         stdout=subprocess.PIPE, text=True, env=_ENV,
                         start_new_session=new_session)
    line = p.stdout.readline()
    assert line.startswith("PREFIX"), line
    prefix = line.split()[1]
    deadline = time.monotonic() + 20  # the prefetched batches land in shared memory
    while len(_files(prefix)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_files(prefix)) >= 3, _files(prefix)  # segments in flight and the lock
    return p, prefix


def _wait_gone(prefix, seconds, step=None):
    deadline = time.monotonic() + seconds
    while _files(prefix) and time.monotonic() < deadline:
        if step:
            step()
        time.sleep(0.1)
    return _files(prefix)


def test_sigkilled_parent_leaves_no_shared_memory_files():
    p, prefix = _start_killable(new_session=False)
    p.kill()  # SIGKILL of the training process; its workers live on and notice
    p.wait()
    assert _wait_gone(prefix, 15) == []


def test_files_of_a_sigkilled_process_tree_are_swept_by_the_next_loader():
    p, prefix = _start_killable(new_session=True)
    os.killpg(p.pid, signal.SIGKILL)  # parent and workers at once: nobody could clean
    p.wait()
    time.sleep(0.5)
    assert _files(prefix), "nothing left to sweep"
    x = np.arange(8, dtype=np.float32)

    def next_loader():  # any later DataLoader with workers sweeps dead pools' files
        batches = list(gdata.DataLoader(gdata.ArrayDataset(x), batch_size=4, num_workers=1))
        assert np.array_equal(np.concatenate([b.asnumpy() for b in batches]), x)

    assert _wait_gone(prefix, 10, next_loader) == []


def test_sweep_leaves_a_live_pool_alone():
    x = np.arange(16, dtype=np.float32)
    loader = gdata.DataLoader(gdata.ArrayDataset(x), batch_size=2, num_workers=1, prefetch=4)
    it = iter(loader)
    next(it)
    prefix = loader._worker_pool.prefix
    before = _files(prefix)
    assert any(f.endswith(".lock") for f in before)
    _shm.sweep_stale(_shm._shm_dir())
    assert set(before) <= set(_files(prefix))  # its lock and unread batches stay
    rest = np.concatenate([b.asnumpy() for b in it])
    assert np.array_equal(rest, x[2:])
    loader.close()
    assert _files(prefix) == []
