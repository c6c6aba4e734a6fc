"""Kernels compiled at install time (runtime/prebuilt.py): an empty kernel cache adopts them
with numba's machine code, only when every check passes, and compiles otherwise."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from ember.prebuild import build
from ember.runtime.cache import KernelCache

SOURCE = "from numba import njit\n\n\n@njit(cache=True)\ndef kernel(x):\n    return x * 2.0 + 1.0\n"


def _stats(mod):
    st = mod.kernel.stats
    return sum(st.cache_hits.values()), sum(st.cache_misses.values())


@pytest.fixture
def pre(tmp_path, monkeypatch):
    """A prebuilt directory holding SOURCE's module, compiled; adoption on, from there."""
    d = tmp_path / "pre"
    mod = KernelCache(d).load(SOURCE, "cpu")
    assert mod.kernel(1.5) == 4.0 and _stats(mod) == (0, 1)   # compiled and saved
    monkeypatch.setenv("EMBER_PREBUILT", "1")
    monkeypatch.setenv("EMBER_PREBUILT_DIR", str(d))
    return d


def _load(tmp_path):
    c = KernelCache(tmp_path / "user")
    return c, c.load(SOURCE, "cpu")


def test_empty_cache_adopts_prebuilt_machine_code(pre, tmp_path):
    c, mod = _load(tmp_path)
    assert (c.adopted, c.written, c.uncompiled) == (1, 0, 0)
    assert mod.kernel(1.5) == 4.0
    assert _stats(mod) == (1, 0)   # numba loaded the machine code: nothing compiled
    # the entry is now the user's own: a second cache over the directory finds it as usual
    again = KernelCache(tmp_path / "user")
    assert again.load(SOURCE, "cpu").kernel(0.0) == 1.0 and again.adopted == 0


def _refused(tmp_path):
    c, mod = _load(tmp_path)
    assert (c.adopted, c.written, c.uncompiled) == (0, 1, 1)
    assert mod.kernel(1.5) == 4.0 and _stats(mod) == (0, 1)   # compiled here instead


def test_off_switch(pre, tmp_path, monkeypatch):
    monkeypatch.setenv("EMBER_PREBUILT", "0")
    _refused(tmp_path)


def test_writable_by_others_is_not_adopted(pre, tmp_path):
    module = next(pre.glob("cpu_*.py"))
    os.chmod(module, 0o664)
    _refused(tmp_path)


def test_other_text_is_not_adopted(pre, tmp_path):
    module = next(pre.glob("cpu_*.py"))
    module.write_text(module.read_text().replace("2.0", "3.0"))
    _refused(tmp_path)


@pytest.mark.parametrize("suffix", [".nbi", ".nbc"])
def test_broken_seal_is_not_adopted(pre, tmp_path, suffix):
    f = next((pre / "__pycache__").glob(f"*{suffix}"))
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    _refused(tmp_path)
    assert f.exists()   # the install's files are never deleted


def test_uncompiled_module_is_not_adopted(pre, tmp_path):
    for f in (pre / "__pycache__").iterdir():
        f.unlink()
    _refused(tmp_path)


@pytest.mark.slow
def test_build_keeps_only_kernels_both_shape_sets_generate(tmp_path):
    n = build(tmp_path / "out", quiet=True)
    names = json.loads((tmp_path / "out" / "MANIFEST.json").read_text())["kernels"]
    assert n == len(names) > 10
    texts = [(tmp_path / "out" / name).read_text() for name in names]
    assert any("def kernel(x, kh, kw, sh, sw" in t for t in texts)   # im2col
    assert not any("KH, KW, SH, SW, PH, PW =" in t for t in texts)   # pooling of one shape
    for name in names:
        assert list((tmp_path / "out" / "__pycache__").glob(f"{name[:-3]}.*.nbi"))


# an eager convolution, then numba's cache hits and misses of the op's package kernels
EAGER = """
import json
import numpy as np
import ember as mx
from ember.ir import conv_kernels
x = mx.nd.array(np.random.default_rng(0).random((2, 3, 9, 9)).astype("float32"))
w = mx.nd.ones((4, 3, 3, 3))
y = mx.nd.Convolution(x, w, kernel=(3, 3), num_filter=4, no_bias=True, pad=(1, 1))
st = [k.stats for k in conv_kernels._JIT.values()]
print(json.dumps({"sum": float(y.asnumpy().sum()), "hits": sum(sum(s.cache_hits.values())
      for s in st), "misses": sum(sum(s.cache_misses.values()) for s in st)}))
"""


def _eager(tmp_path, numba_dir, **env):
    env = dict(os.environ, EMBER_CACHE_DIR=str(tmp_path / "kc"),
               NUMBA_CACHE_DIR=str(numba_dir), **env)
    res = subprocess.run([sys.executable, "-c", EAGER], env=env, capture_output=True,
                         text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_package_kernels_seed_an_empty_numba_cache(tmp_path):
    from ember.prebuild import _numba_files, _sources
    first = _eager(tmp_path, tmp_path / "n0", EMBER_PREBUILT="0")
    assert first["misses"] > 0 and first["hits"] == 0
    pre = tmp_path / "pre"
    for rel, f in _numba_files(tmp_path / "n0", _sources()).items():
        (pre / "numba" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, pre / "numba" / rel)
    seeded = _eager(tmp_path, tmp_path / "n1", EMBER_PREBUILT="1", EMBER_PREBUILT_DIR=str(pre))
    assert seeded == {**first, "hits": first["misses"], "misses": 0}
    off = _eager(tmp_path, tmp_path / "n2", EMBER_PREBUILT="0", EMBER_PREBUILT_DIR=str(pre))
    assert off == first
    for f in (pre / "numba").rglob("*.nbi"):
        os.chmod(f, 0o666)   # writable by anyone: not used
    assert _eager(tmp_path, tmp_path / "n3", EMBER_PREBUILT="1",
                  EMBER_PREBUILT_DIR=str(pre)) == first
