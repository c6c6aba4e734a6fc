"""OpenBLAS's kernels on Zen 4 (runtime/blas_core.py): which CPUs switch, the user's
``OPENBLAS_CORETYPE`` wins, and where the switch happens GEMMs stay right."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ember.runtime import blas_core

_ZEN4 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
         "flags\t\t: fpu sse2 avx2 fma avx512f avx512bw\n\nprocessor\t: 1\n")


@pytest.mark.parametrize("text,zen4", [
    (_ZEN4, True),
    (_ZEN4.replace("avx512f avx512bw", ""), False),            # Zen 3: no AVX-512
    (_ZEN4.replace(": 25", ": 26"), False),                    # Zen 5: full-width AVX-512
    (_ZEN4.replace("AuthenticAMD", "GenuineIntel"), False),
    ("", False)])
def test_only_amd_family_25_with_avx512_is_zen4(tmp_path, text, zen4):
    info = tmp_path / "cpuinfo"
    info.write_text(text)
    assert blas_core._zen4(str(info)) is zen4
    assert not blas_core._zen4(str(tmp_path / "missing"))


def test_the_users_coretype_and_other_cpus_are_left_alone(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text(_ZEN4.replace("AuthenticAMD", "GenuineIntel"))
    assert blas_core.prefer_avx2_kernels(str(info)) is None
    info.write_text(_ZEN4)
    monkeypatch.setenv("OPENBLAS_CORETYPE", "SkylakeX")
    assert blas_core.prefer_avx2_kernels(str(info)) is None
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    monkeypatch.setenv("EMBER_ADAPTIVE_THREADS", "0")
    assert blas_core.prefer_avx2_kernels(str(info)) is None


_PROBE = """
import ctypes, json, numpy as np
from threadpoolctl import threadpool_info
def names():
    out = {}
    for i in threadpool_info():
        if i["internal_api"] == "openblas":
            lib = ctypes.CDLL(i["filepath"])
            lib.gotoblas_corename.restype = ctypes.c_char_p
            out[i["filepath"]] = lib.gotoblas_corename().decode()
    return out
before = names()
import ember
rng = np.random.default_rng(0)
a, b = rng.standard_normal((300, 200)), rng.standard_normal((200, 100))
ok = bool(np.allclose((a.astype("f4") @ b.astype("f4")), a @ b, rtol=1e-4, atol=1e-4))
print(json.dumps({"before": before, "after": names(), "ok": ok}))
"""


def test_on_zen4_numpys_openblas_runs_its_haswell_kernels():
    if not blas_core._zen4():
        pytest.skip("not an AMD Zen 4 CPU")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_CORETYPE", "EMBER_ADAPTIVE_THREADS")}
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         env=env, timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["ok"] and got["before"]
    for path, before in got["before"].items():   # (libraries loaded later choose alone)
        want = blas_core.TARGET if before.encode() in blas_core.SWITCH_FROM else before
        assert got["after"][path] == want, got
