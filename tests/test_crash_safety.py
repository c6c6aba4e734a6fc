"""Saves survive a SIGKILL at any moment: old or new files, never neither, never a mix, and
no litter after the next save (ember.export packages, HybridBlock.export pairs, nd.save).

The writers are forked children of the test process (no second import of ember per trial),
killed with SIGKILL at a random moment or at their K-th ``os.replace``."""
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import ember as mx
from ember.gluon import SymbolBlock, nn

X = mx.nd.array(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3))


def model(seed, sizes):
    mx.random.seed(seed)
    net = nn.HybridSequential()
    for n in sizes:
        net.add(nn.Dense(n, activation="tanh"))
    net.initialize(mx.init.Uniform(1.0))
    net.hybridize()
    return net


@pytest.fixture(scope="module")
def nets():
    """Two models with different parameter names and shapes, and their outputs on X."""
    pair = [model(1, [4]), model(2, [5, 4])]
    return pair, [net(X).asnumpy() for net in pair]


def save(kind, path, net, i):
    if kind == "aot":
        mx.export(net, path, X[:i + 1], overwrite=True, backend="reference")
    else:
        net.export(str(path))


def fork(fn) -> int:
    """Run ``fn`` in a forked child that never returns here."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            fn()
        finally:
            os._exit(3)
    return pid


def reap(pid, timeout=60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("the writer hung")


def state(kind, path, outs) -> int:
    """Which model the files hold (0 or 1), read the way users read them."""
    if kind == "aot":
        pkg = mx.load(path)
        i = pkg.manifest["inputs"][0]["shape"][0] - 1
        np.testing.assert_allclose(pkg(X[:i + 1]).asnumpy(), outs[i][:i + 1], rtol=1e-5,
                                   atol=1e-6)
        return i
    net = SymbolBlock.imports(f"{path}-symbol.json", ["data"], f"{path}-0000.params")
    got = net(X).asnumpy()
    matches = [i for i in (0, 1) if got.shape == outs[i].shape and
               np.allclose(got, outs[i], rtol=1e-5, atol=1e-6)]
    assert len(matches) == 1, "the files are from two models"
    return matches[0]


def litter(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


# os.replace calls while B is written over A: aot: old aside, new in; pair: the journal
# (the commit point), the parameters, the JSON
KILLS = [("aot", 1, 0), ("aot", 2, 1), ("pair", 1, 1), ("pair", 2, 1), ("pair", 3, 1)]


@pytest.mark.parametrize("kind,k,expected", KILLS)
def test_killed_at_each_rename(nets, tmp_path, kind, k, expected):
    (a, b), outs = nets
    path = tmp_path / "m"
    save(kind, path, a, 0)

    def write_b_and_die():
        real, calls = os.replace, [0]

        def dying(src, dst):
            real(src, dst)
            calls[0] += 1
            if calls[0] == k:
                os.kill(os.getpid(), signal.SIGKILL)
        os.replace = dying
        save(kind, path, b, 1)
    status = reap(fork(write_b_and_die))
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert state(kind, path, outs) == expected
    assert state(kind, path, outs) == expected  # a recovery is not undone by reading
    save(kind, path, a, 0)  # the next save tidies up
    assert litter(tmp_path) == [] and state(kind, path, outs) == 0


def random_kills(nets, tmp_path, kind, trials, seed):
    (a, b), outs = nets
    path = tmp_path / "m"
    save(kind, path, a, 0)
    rng, seen = random.Random(seed), []
    start = time.perf_counter()
    save(kind, path, b, 1)
    per_save = time.perf_counter() - start

    def loop():
        for i in range(10 ** 9):
            save(kind, path, (a, b)[i % 2], i % 2)
    for _ in range(trials):
        pid = fork(loop)
        time.sleep(rng.uniform(0.0, 3 * per_save))
        os.kill(pid, signal.SIGKILL)
        reap(pid)
        seen.append(state(kind, path, outs))
    save(kind, path, a, 0)
    assert litter(tmp_path) == []
    return seen


@pytest.mark.parametrize("kind", ["aot", "pair"])
def test_random_kills(nets, tmp_path, kind):
    assert set(random_kills(nets, tmp_path, kind, 15, seed=5)) <= {0, 1}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["aot", "pair"])
def test_random_kills_long(nets, tmp_path, kind):
    assert set(random_kills(nets, tmp_path, kind, 120, seed=11)) == {0, 1}


def test_nd_save_removes_a_killed_writers_temporary_file(tmp_path):
    from ember.ndarray.utils import temp_name
    target = tmp_path / "a.nd"
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = temp_name(target).replace(f".{os.getpid()}-", f".{proc.stdout.strip()}-")
    open(dead, "w").close()
    live = temp_name(target)  # this process is alive: its file is left alone
    open(live, "w").close()
    mx.nd.save(str(target), [mx.nd.ones(2)])
    assert sorted(os.listdir(tmp_path)) == sorted(["a.nd", os.path.basename(live)])
    np.testing.assert_array_equal(mx.nd.load(str(target))[0].asnumpy(), [1.0, 1.0])
