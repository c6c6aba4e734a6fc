"""Long compiles say so on a terminal (one line naming the block and its new kernels), and
print nothing when stderr is not a terminal."""
import os
import pty
import subprocess
import sys

import pytest

SCRIPT = """
import numpy as np
import ember as mx
from ember import nd
from ember.gluon import nn
net = nn.HybridSequential(prefix="tiny_")
net.add(nn.Dense(5, activation="tanh"), nn.Dense(2))
net.initialize()
net.hybridize()
net(nd.array(np.ones((3, 4), np.float32))).asnumpy()
net(nd.array(np.ones((3, 4), np.float32))).asnumpy()
print("done")
"""


def _stderr(cache_dir, tty: bool, **env) -> str:
    env = {**{k: v for k, v in os.environ.items() if k != "EMBER_PROGRESS"},
           "EMBER_CACHE_DIR": str(cache_dir), "EMBER_DEFER_KERNELS": "0", **env}
    if not tty:
        res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        return res.stderr
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT], env=env, stdout=subprocess.PIPE,
                                stderr=slave, text=True)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=300) == 0
        assert proc.stdout.read().strip() == "done"
        proc.stdout.close()
    finally:
        os.close(master)
    return b"".join(chunks).decode()


def test_a_terminal_is_told_what_compiles_once(tmp_path):
    err = _stderr(tmp_path, tty=True)
    lines = [ln for ln in err.splitlines() if ln.startswith("ember: compiling")]
    assert len(lines) == 1, err
    assert lines[0].startswith("ember: compiling tiny (") and "new kernels) ..." in lines[0]
    warm = _stderr(tmp_path, tty=True)  # everything is in the cache: nothing to say
    assert "ember: compiling" not in warm


@pytest.mark.parametrize("env", [{}, {"EMBER_PROGRESS": "0"}])
def test_nothing_is_printed_off_a_terminal_or_when_turned_off(tmp_path, env):
    err = _stderr(tmp_path, tty=bool(env), **env)
    assert "ember: compiling" not in err


def test_progress_can_be_forced_on(tmp_path):
    assert "ember: compiling tiny (" in _stderr(tmp_path, tty=False, EMBER_PROGRESS="1")


def test_a_small_program_run_on_numpy_meanwhile_says_nothing(tmp_path):
    """With background compiles on, the tiny net runs on NumPy while a worker compiles its
    kernels (precompile.defer_small): nothing to wait for, nothing to say."""
    err = _stderr(tmp_path, tty=True, EMBER_DEFER_KERNELS="1")
    assert "ember: compiling" not in err, err
