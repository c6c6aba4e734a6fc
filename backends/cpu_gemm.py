"""Convolutions' GEMMs by ember's own register-blocked tiles: Winograd's per-point products, and
per-sample products where single-threaded BLAS is slowest.

Winograd (``cpu_winograd``) multiplies, per transform point k, the transformed filters
``U[k] (F, C)`` by the transformed tiles ``V[k] (C, T)``: at batch 1 these are small
products, e.g. 16 x (256, 256) @ (256, 49) for a 256-channel 14x14 layer, that OpenBLAS
runs at 75-165 GFLOP/s on this project's two Zen 4 cores: it packs U and V for every
product. Here U is packed, 32 filters along the sum (:func:`pack`), and :data:`FV`
computes blocks of 32 filters x 14 tiles with ``cpu_gemm_ir.fv_tile``: 28 vectors of sums in
registers for the whole sum over C, V read in place. When a layer's weights repeat
(inference: ``cpu_winograd.FilterCache`` keeps U) U is packed once; weights that change
(training) have it packed at each call, a NumPy copy (0.04-0.7 ms a layer of ResNet-18; a
data gradient's U^T in runs of 32), which the products repay: ResNet-18 training steps at
batch 16, two programs alternated in one process, 860 / 970 ms (best / median of 16)
against 895 / 985. (k, 32-filter block) pairs are split over the pool's threads
(``cpu_split``). Measured in one process, alternating with
``cpu_split.matmuls`` on the same operands (2 threads): 16 x (256, 256) @ (256, 49) 0.55
against 0.63 ms (188 against 164 GFLOP/s), 36 x (128, 128) @ (128, 49) 0.35 against 0.46,
36 x (64, 64) @ (64, 196) 0.38 against 0.44, and at batch 16's chunks 36 x (64, 64) @ (64,
392) 0.66 against 0.78, 36 x (128, 128) @ (128, 196) 1.17 against 1.43. One thread: 99-112
GFLOP/s against OpenBLAS's 82-89.

The same tiles run the per-sample products ``cpu_conv_steps`` gives whole samples per
thread, where single-threaded BLAS is slowest: data gradients (W^T packed at each call, runs
of 32) and, while the weights repeat (:class:`KeptPack`), 1x1 convolutions of up to
``PW_TILES_MAX_M`` pixels.

Tiles past the last multiple of 14 run as a tile of 7 (7x7-tile maps: 49 = 3 x 14 + 7)
and tiles of 4, 2 and 1.
Each output is its products in order over C, fused multiply-adds: the products BLAS forms
(NaN and infinities reach the same outputs), rounded differently (within the conv tolerance
of the tests). ``Deferred`` (``cpu_tiered``) compiles the kernel off the first call's path;
until then, and where :func:`applies` says no, ``matmuls`` runs. ``EMBER_CPU_FV=0`` turns
it off.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import os

import numpy as np

from . import cpu_gemm_ir
from .cpu_steps import split
from .cpu_tiered import Deferred

FB = 32        # filters per block (two vectors of 16)
NB = 14        # tiles per block
MIN_C = 64     # shorter sums: matmuls (Winograd's layers have 64 channels or more)
_ENABLED = os.environ.get("EMBER_CPU_FV", "1").lower() not in ("0", "false", "no")

# the IR generator, hashed into the kernel source: the kernel cache keys on source text, so
# a change to the generator compiles the kernel anew
_IR = hashlib.sha1(inspect.getsource(cpu_gemm_ir).encode()).hexdigest()[:16]

_REST = ("        r = rest\n"
         "        if r >= 7:\n"
         "            T7(up3, v, out, C, uo, vo + p, T, oo + p, T)\n"
         "            p += 7\n"
         "            r -= 7\n") + "".join(
    f"        if r & {b}:\n"
    f"            T{b}(up3, v, out, C, uo, vo + p, T, oo + p, T)\n"
    f"            p += {b}\n" for b in (4, 2, 1))

FV = f"""import numpy as np
from numba import njit, prange
from ember.backends.cpu_gemm_ir import fv_tile   # generator {_IR}

T{NB} = fv_tile({NB}, {FB // 16})
T7 = fv_tile(7, {FB // 16})
T4 = fv_tile(4, {FB // 16})
T2 = fv_tile(2, {FB // 16})
T1 = fv_tile(1, {FB // 16})


@njit(parallel=True, cache=True, nogil=True, error_model='numpy')
def kernel(up3, v, out):
    P = up3.shape[0]
    C = up3.shape[1]
    F = out.shape[1]
    T = out.shape[2]
    nfb = F // {FB}
    full = T // {NB}
    rest = T - full * {NB}
    for idx in prange(P):
        i = np.int64(idx)
        k = i // nfb
        uo = i * C * {FB}
        vo = k * C * T
        oo = (k * F + (i - k * nfb) * {FB}) * T
        for nb in range(full):
            T{NB}(up3, v, out, C, uo, vo + nb * {NB}, T, oo + nb * {NB}, T)
        p = full * {NB}
{_REST}"""


@functools.cache
def _fv():
    """:data:`FV`'s split kernel (made once: ``split`` parses the source each time)."""
    return split(FV)


def _calls():
    z, f32 = np.zeros, np.float32
    return [(_fv(), (z((1, 1, FB), f32), z((1, 1, 1), f32), z((1, FB, 1), f32)))]


TIER = Deferred(_calls, [FV])


def applies(f: int, c: int, dt: np.dtype) -> bool:
    """Whether products U (F, C) @ V (C, T) of this dtype run as tiles once U is packed."""
    return _ENABLED and dt == np.float32 and f % FB == 0 and c >= MIN_C


def pack(u: np.ndarray, out: np.ndarray | None = None, transposed: bool = False) -> np.ndarray:
    """U (kk, F, C) as (kk * F/32, C, 32), each 32-filter block's rows along the sum (into
    ``out``, of U's size, where given); ``transposed``: U^T's (kk, C, F) blocks instead, (kk *
    C/32, F, 32) (a data gradient's GEMMs, whose sum runs over F: runs of 32 copied whole)."""
    kk, f, c = u.shape
    if transposed:
        src, shape = u.reshape(kk, f, c // FB, FB).transpose(0, 2, 1, 3), (kk * (c // FB), f)
    else:
        src, shape = u.reshape(kk, f // FB, FB, c).transpose(0, 1, 3, 2), (kk * (f // FB), c)
    if out is None:
        return np.ascontiguousarray(src).reshape(*shape, FB)
    np.copyto(out.reshape(src.shape), src)
    return out.reshape(*shape, FB)


def matmuls(up3: np.ndarray, v: np.ndarray, out: np.ndarray, serial: bool = False) -> None:
    """``out[k] = U[k] @ v[k]`` for U packed by :func:`pack` (the kernel compiled);
    ``serial``: in the calling thread alone (a part of work the pool already split)."""
    fn = _fv()
    if serial and hasattr(fn, "serial"):
        fn.serial(up3, v, out, 0, up3.shape[0])
    else:
        fn(up3, v, out)


def same_bits(w: np.ndarray, last: np.ndarray | None) -> bool:
    """Whether the bits of ``w`` are ``last`` (bytes; None: no last call), the first 256
    bytes first (a training step's weights differ at once)."""
    bits = w.reshape(-1).view(np.uint8)
    return last is not None and np.array_equal(bits[:256], last[:256]) and \
        np.array_equal(bits, last)


class KeptPack:
    """A layer's weights (F, C) packed for the tiles (:func:`pack`), kept while a call's
    weights are bit for bit the last call's (inference), as ``cpu_winograd.FilterCache``
    keeps Winograd's transforms: None from a call whose weights changed (they are copied, to
    compare with the next call's) or while the kernel compiles."""

    __slots__ = ("last", "packed")

    def __init__(self):
        self.last: np.ndarray | None = None
        self.packed: np.ndarray | None = None

    def __call__(self, w: np.ndarray) -> np.ndarray | None:
        if same_bits(w, self.last):
            if self.packed is None and TIER.ready():
                self.packed = pack(w.reshape(1, *w.shape))
            return self.packed
        bits = w.reshape(-1).view(np.uint8)
        if self.last is None:
            self.last = np.empty_like(bits)
        np.copyto(self.last, bits)
        self.packed = None
        return None
