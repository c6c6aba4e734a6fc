"""The kernel cache loads only ember's own files: planted ``.pyc`` and numba files are not
run, unsafe directories are refused, and damaged numba files are discarded and rebuilt."""
import importlib._bootstrap_external as bootstrap
import json
import os
import pickle
import random
import subprocess
import sys
import warnings

import numba
import numpy as np
import pytest

from ember.runtime import numba_seal
from ember.runtime.cache import KernelCache

SOURCE = "import numpy as np\n\nVALUE = 41 + 1\n"
KERNEL = ("import numba\n\n\n@numba.njit(cache=True)\ndef kernel(x):\n"
          "    return x * 2.0 + 1.0\n")
is_root = os.geteuid() == 0


def numba_files(directory):
    return sorted(p for p in (directory / "__pycache__").glob("*.nb[ic]"))


def compiled(directory):
    """A fresh cache over ``directory`` and its kernel run once (numba's files written)."""
    c = KernelCache(directory)
    assert c.load(KERNEL, "cpu").kernel(3.0) == 7.0
    return c


class Planted:
    """Unpickling this creates ``path``: what a malicious pickle could do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_planted_pyc_with_matching_header_is_not_run(tmp_path):
    c = KernelCache(tmp_path)
    path = c.path(SOURCE, "cpu")
    assert c.load(SOURCE, "cpu").VALUE == 42
    st = path.stat()  # a .pyc Python's import would accept for this file: mtime and size
    evil = compile("VALUE = 666\n", str(path), "exec")
    pyc = tmp_path / "__pycache__" / f"{path.stem}.{sys.implementation.cache_tag}.pyc"
    pyc.write_bytes(bootstrap._code_to_timestamp_pyc(evil, int(st.st_mtime), st.st_size))
    assert KernelCache(tmp_path).load(SOURCE, "cpu").VALUE == 42


@pytest.mark.parametrize("how", ["unsealed", "world-writable", "other-user"])
def test_planted_numba_index_is_not_unpickled(tmp_path, how):
    compiled(tmp_path)
    index = next(p for p in numba_files(tmp_path) if p.suffix == ".nbi")
    marker = tmp_path / "pwned"
    payload = pickle.dumps(numba.__version__) + pickle.dumps(Planted(marker))
    if how == "unsealed":
        index.write_bytes(payload)
    else:  # sealed as ember would, but by a writer the cache does not trust
        if how == "other-user" and not is_root:
            pytest.skip("needs root to give a file to another user")
        index.write_bytes(numba_seal.seal(payload))
        if how == "world-writable":
            index.chmod(0o666)
        else:
            os.chown(index, 65534, 65534)
    before = numba_seal.discarded
    assert KernelCache(tmp_path).load(KERNEL, "cpu").kernel(3.0) == 7.0
    assert not marker.exists()
    assert numba_seal.discarded > before
    assert numba_seal.read_sealed(str(index)) is not None  # rewritten, sealed, ours


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_unsafe_cache_directory_is_refused_with_one_warning(tmp_path, mode):
    d = tmp_path / "cache"
    d.mkdir()
    d.chmod(mode)
    c = KernelCache(d)
    with pytest.warns(RuntimeWarning, match="group- or world-writable"):
        assert c.load(SOURCE, "cpu").VALUE == 42
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert c.load(KERNEL, "cpu").kernel(1.0) == 3.0  # in memory, no second warning
    assert not list(d.iterdir())


@pytest.mark.skipif(not is_root, reason="needs root to give a directory to another user")
def test_cache_directory_of_another_user_is_refused(tmp_path):
    d = tmp_path / "cache"
    d.mkdir(mode=0o700)
    os.chown(d, 65534, 65534)
    with pytest.warns(RuntimeWarning, match="owned by uid 65534"):
        assert KernelCache(d).load(SOURCE, "cpu").VALUE == 42
    assert not list(d.iterdir())


def test_new_cache_directory_is_private(tmp_path):
    KernelCache(tmp_path / "a" / "cache").load(SOURCE, "cpu")
    for d in (tmp_path / "a" / "cache", tmp_path / "a" / "cache" / "__pycache__"):
        assert d.stat().st_mode & 0o777 == 0o700


def damage(path, rng: random.Random, kind: str | None = None) -> str:
    data = path.read_bytes()
    kind = kind or rng.choice(["zero", "truncate", "flip"])
    if kind == "zero":
        path.write_bytes(b"")
    elif kind == "truncate":
        path.write_bytes(data[:rng.randrange(len(data))])
    else:
        buf = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(buf))
    return kind


def test_damaged_files_are_discarded_and_repaired(tmp_path):
    rng = random.Random(1234)
    compiled(tmp_path)
    kinds = []
    for _ in range(40):
        files = numba_files(tmp_path) + list(tmp_path.glob("cpu_*.py"))
        victim = rng.choice(files)
        kinds.append(damage(victim, rng))
        x = rng.uniform(-10, 10)
        assert KernelCache(tmp_path).load(KERNEL, "cpu").kernel(x) == x * 2.0 + 1.0
        after = numba_files(tmp_path)  # repaired: every numba file is present and sealed
        assert {p.suffix for p in after} == {".nbi", ".nbc"}
        for p in after:
            assert numba_seal.read_sealed(str(p)) is not None
    assert set(kinds) == {"zero", "truncate", "flip"}


SCRIPT = """
import json
import numpy as np
from ember.backends import cpu
from ember.ir.graph import GraphBuilder
from ember.ir.types import TensorType
from ember.runtime import cache
cache.install()
b = GraphBuilder("g")
x = b.input(TensorType((8, 4), "float32"), "x")
(y,) = b.emit("tanh", [x])
(s,) = b.emit("sum", [y], axis=1)
out = cpu.compile(b.build([s]))([np.full((8, 4), 0.5, np.float32)], [])[0]
misses = sum(sum(k.stats.cache_misses.values()) for k in cpu._KERNELS.values())
print(json.dumps({"misses": misses, "out": out.tolist()}))
"""


def run_process(cache_dir):
    env = dict(os.environ, EMBER_CACHE_DIR=str(cache_dir))
    res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    assert "Error" not in res.stderr, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_damaged_cache_of_a_compiled_graph_heals_in_a_fresh_process(tmp_path):
    want = np.full(8, np.tanh(np.float32(0.5)) * 4, np.float32)
    first = run_process(tmp_path)
    assert first["misses"] > 0
    rng = random.Random(7)
    for kind in ("zero", "truncate", "flip"):
        for p in numba_files(tmp_path):
            damage(p, rng, kind)
        res = run_process(tmp_path)
        np.testing.assert_allclose(res["out"], want, rtol=1e-6)
        assert res["misses"] > 0  # recompiled...
    assert run_process(tmp_path)["misses"] == 0  # ...and cached again
