"""The on-disk kernel cache: entries are reused across processes, corrupt ones rebuilt."""
import json
import os
import subprocess
import sys

import numpy as np

from ember.backends import codegen
from ember.runtime.cache import KernelCache

SOURCE = "import numpy as np\n\nVALUE = 41 + 1\n"

# one process: compile a small graph on the cpu backend, report numba's cache hits/misses
SCRIPT = """
import json, time
import numpy as np
t0 = time.perf_counter()
from ember.backends import cpu
from ember.ir.graph import GraphBuilder
from ember.ir.types import TensorType
from ember.runtime import cache
cache.install()
b = GraphBuilder("g")
x = b.input(TensorType((64, 32), "float32"), "x")
w = b.param(TensorType((16, 32), "float32"), "w")
(h,) = b.emit("fully_connected", [x, w], num_hidden=16, no_bias=True)
(y,) = b.emit("tanh", [h])
(s,) = b.emit("sum", [y], axis=1)
t1 = time.perf_counter()
out = cpu.compile(b.build([s]))([np.ones((64, 32), np.float32)],
                                [np.full((16, 32), 0.01, np.float32)])[0]
t2 = time.perf_counter()
hits = sum(sum(k.stats.cache_hits.values()) for k in cpu._KERNELS.values())
misses = sum(sum(k.stats.cache_misses.values()) for k in cpu._KERNELS.values())
print(json.dumps({"compile_s": t2 - t1, "hits": hits, "misses": misses,
                  "out": float(out[0])}))
"""


def _run(cache_dir, **env_vars):
    env = dict(os.environ, EMBER_CACHE_DIR=str(cache_dir), **env_vars)
    res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_entry_written_atomically_and_reused(tmp_path):
    c = KernelCache(tmp_path)
    mod = c.load(SOURCE, "cpu")
    assert mod.VALUE == 42 and c.written == 1
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["__pycache__", c.path(SOURCE, "cpu").name]  # no temporary file left
    assert not list((tmp_path / "__pycache__").iterdir())  # and no .pyc written
    assert c.load(SOURCE, "cpu") is mod
    again = KernelCache(tmp_path)
    assert again.load(SOURCE, "cpu").VALUE == 42 and again.written == again.rebuilt == 0


def test_key_depends_on_source_and_backend(tmp_path):
    c = KernelCache(tmp_path)
    assert c.key(SOURCE, "cpu") != c.key(SOURCE, "cuda")
    assert c.key(SOURCE, "cpu") != c.key(SOURCE + "\n", "cpu")


def test_corrupt_entries_are_rebuilt(tmp_path):
    c = KernelCache(tmp_path)
    path = c.path(SOURCE, "cpu")
    for garbage in ("VALUE = 0\n", "", "\x00\xff not python", None):
        if garbage is None:  # right hash line, tampered body
            text = path.read_text().replace("41", "40")
            path.write_text(text)
        else:
            path.write_bytes(garbage.encode("latin-1"))
        fresh = KernelCache(tmp_path)
        assert fresh.load(SOURCE, "cpu").VALUE == 42
        assert fresh.rebuilt == 1


def test_unwritable_directory_falls_back_to_memory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    c = KernelCache(blocker / "sub")
    assert c.load(SOURCE, "cpu").VALUE == 42


def test_second_process_compiles_nothing_and_corruption_is_rebuilt(tmp_path):
    first = _run(tmp_path)
    second = _run(tmp_path)
    assert first["misses"] > 0
    assert second["misses"] == 0 and second["hits"] == first["misses"]
    assert second["out"] == first["out"]
    print(f"cold compile {first['compile_s']:.2f} s, warm {second['compile_s']:.2f} s")
    victim = sorted(tmp_path.glob("cpu_*.py"))[0]
    victim.write_text("this is not python")
    third = _run(tmp_path)
    assert third["out"] == first["out"] and third["misses"] >= 1
    assert codegen.source_key("x") != codegen.source_key("y")
    np.testing.assert_allclose(third["out"], np.tanh(0.32) * 16, rtol=1e-5)


def test_numba_cache_dir_does_not_move_the_kernels_files(tmp_path):
    """With ``NUMBA_CACHE_DIR`` set, numba's files of ember's kernels stay in the kernel
    cache's ``__pycache__``, where a warm process looks for them: it compiles nothing and
    finds each kernel compiled before (it found none, so its precompile workers and the
    tiered steps' background compiles loaded them all again)."""
    kernels, elsewhere = tmp_path / "kernels", tmp_path / "numba"
    first = _run(kernels, NUMBA_CACHE_DIR=str(elsewhere))
    second = _run(kernels, NUMBA_CACHE_DIR=str(elsewhere))
    assert first["misses"] > 0 and second["misses"] == 0
    assert not list(elsewhere.rglob("cpu_*.nb*"))
    compiled = [p for p in kernels.glob("cpu_*.py") if KernelCache._compiled(p)]
    assert len(compiled) == first["misses"]   # (each kernel here has one signature)


def test_compiled_sees_numba_indexes_added_later(tmp_path):
    """``_compiled`` lists numba's index folder once and again when it changes, not per
    kernel (a glob per kernel over a big cache cost a warm first step 0.26 s)."""
    from pathlib import Path
    pyc = tmp_path / "__pycache__"
    pyc.mkdir()
    (pyc / "cpu_a.kernel-10.py311.nbi").write_bytes(b"")
    (pyc / "cpu_b.kernel-10.py311.nbc").write_bytes(b"")   # data without its index
    a, b = Path(tmp_path / "cpu_a.py"), Path(tmp_path / "cpu_b.py")
    assert KernelCache._compiled(a) and not KernelCache._compiled(b)
    (pyc / "cpu_b.kernel-10.py311.nbi").write_bytes(b"")
    later = os.stat(pyc).st_mtime_ns + 10 ** 9   # (a coarse clock may not have moved)
    os.utime(pyc, ns=(later, later))
    assert KernelCache._compiled(b)
    assert not KernelCache._compiled(Path(tmp_path / "missing" / "cpu_c.py"))
