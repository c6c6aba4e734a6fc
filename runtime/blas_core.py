"""Which of OpenBLAS's kernels run ember's GEMMs on AMD Zen 4.

OpenBLAS (NumPy's BLAS, built for every x86 core and choosing at load time) picks its
SkylakeX kernels, written for AVX-512 on Intel cores, wherever the CPU has AVX-512. Zen 4
runs AVX-512 as two 256-bit halves, and there OpenBLAS's Haswell (AVX2) kernels ran the
GEMMs of ember's convolutions faster: on a 2-core Zen 4 (EPYC, family 25), single precision,
two threads, GFLOP/s SkylakeX -> Haswell: (512 x 4608) @ (4608 x 49) 146-156 -> 171-174
(ResNet-18's 512-channel 3x3 layer at batch 1), (256 x 2304) @ (2304 x 196) 177-188 ->
202-203, (64 x 147) @ (147 x 12544) 145-151 -> 163-166 (its first layer), (4608 x 512) @
(512 x 784) 199-204 -> 210 (a data gradient at batch 16), (512 x 784) @ (784 x 4608)
193-196 -> 203-207 (a weight gradient).

:func:`prefer_avx2_kernels` (run when ember is imported, before any GEMM of ember's) makes
OpenBLAS choose again as if ``OPENBLAS_CORETYPE=Haswell`` had been set when it loaded: its
thread server is stopped (it restarts on the next threaded call) and its kernel table
chosen anew (``gotoblas_dynamic_quit``/``gotoblas_dynamic_init``, the functions it runs at
load). Only on AMD family 25 with AVX-512 where OpenBLAS chose SkylakeX or Cooperlake, never
when the user set ``OPENBLAS_CORETYPE`` (their choice stands), and not with
``EMBER_ADAPTIVE_THREADS=0`` (ember leaves OpenBLAS as it loaded). Results change only in
the last bits (another summation order within each dot product).
"""
from __future__ import annotations

import contextlib
import ctypes
import os

SWITCH_FROM = (b"SkylakeX", b"Cooperlake")
TARGET = "Haswell"


def _zen4(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU is AMD family 25 (Zen 3/Zen 4) with AVX-512 (Zen 4)."""
    try:
        with open(cpuinfo) as f:
            head = f.read(1 << 14)
    except OSError:
        return False
    fields = {}
    for line in head.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("vendor_id", "cpu family", "flags") and key not in fields:
            fields[key] = value.strip()
    return fields.get("vendor_id") == "AuthenticAMD" and fields.get("cpu family") == "25" \
        and "avx512f" in fields.get("flags", "").split()


def openblas_libs() -> list:
    """ctypes handles of the OpenBLAS libraries this process has loaded (none without
    threadpoolctl)."""
    try:
        import ctypes

        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    libs = []
    for info in threadpool_info():
        if info.get("internal_api") == "openblas" and info.get("filepath"):
            try:
                libs.append(ctypes.CDLL(info["filepath"]))
            except OSError:
                continue
    return libs


@contextlib.contextmanager
def env_set(name: str, value: str):
    """``name=value`` in the environment while OpenBLAS reads it, then gone again: child
    processes (peers in a benchmark) keep their own defaults."""
    os.environ[name] = value
    try:
        yield
    finally:
        del os.environ[name]


def prefer_avx2_kernels(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """Switch OpenBLAS to its Haswell kernels where the module doc says; the core name it
    runs afterwards, or None when nothing was changed."""
    if "OPENBLAS_CORETYPE" in os.environ or not _zen4(cpuinfo) or \
            os.environ.get("EMBER_ADAPTIVE_THREADS", "1").lower() in ("0", "false", "no"):
        return None
    switched = None
    for lib in openblas_libs():
        try:
            name, quit_, init = (lib.gotoblas_corename, lib.gotoblas_dynamic_quit,
                                 lib.gotoblas_dynamic_init)
            shutdown = lib.blas_thread_shutdown_
        except AttributeError:   # not a build that chooses at load time
            continue
        name.restype = ctypes.c_char_p
        if name() not in SWITCH_FROM:
            continue
        with env_set("OPENBLAS_CORETYPE", TARGET):
            shutdown()
            quit_()
            init()
        switched = name().decode()
    return switched
