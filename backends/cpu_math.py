"""Branch-free float32 ``exp`` and ``tanh`` that LLVM vectorises (the CPU kernels' math).

numba lowers ``math.exp``/``math.tanh`` on float32 to scalar ``expf``/``tanhf`` calls, which
LLVM cannot vectorise (Intel SVML, which would supply vector versions, does not load with
this llvmlite): a fused ``sigmoid``/``tanh`` chain ran at 0.3 GB/s. These versions are
Cephes' ``expf`` and ``tanhf`` (S. L. Moshier, Cephes Math Library): range reduction
``x = n ln2 + r`` with ``|r| <= ln2/2`` and a degree-7 minimax polynomial for ``e**r``,
``2**n`` built from exponent bits; ``tanh`` by an odd polynomial below 0.625 and
``1 - 2 / (exp(2|x|) + 1)`` above. Every branch is a select, so the loops vectorise.
Error: about 2 ulp. NaN propagates; ``exp`` overflows to inf above 88.72 and flushes to 0
below -87 (NumPy returns subnormals there, within any absolute tolerance).
"""
from __future__ import annotations

import hashlib
import os
import pathlib

import llvmlite.binding as llvm
from llvmlite import ir
from numba import config, njit, types
from numba.extending import intrinsic

# generated kernels that call these embed VERSION, so the kernel cache (keyed by source)
# never reuses machine code built against an older version of this file
VERSION = hashlib.sha256(pathlib.Path(__file__).read_bytes()).hexdigest()[:16]


def prefer_512_bit_vectors() -> bool:
    """Let LLVM use 512-bit vectors on AVX-512 hosts (it prefers 256 bits there by default,
    a tuning for Skylake-X's frequency drops): these polynomial kernels run 1.5x faster.

    Applies to the numba code of this process when numba has not been given
    ``NUMBA_CPU_FEATURES`` and has not compiled anything yet; ``EMBER_CPU_512=0`` turns it
    off. Numba's cache keys compiled code by the features, so nothing stale is reused.
    """
    if os.environ.get("EMBER_CPU_512", "1") == "0" or config.CPU_FEATURES is not None:
        return False
    features = llvm.get_host_cpu_features()
    if not features.get("avx512f"):
        return False
    config.CPU_FEATURES = features.flatten() + ",-prefer-256-bit"
    return True


PREFER_512 = prefer_512_bit_vectors()


@intrinsic
def _floor32(typingctx, x):
    """``floor`` of a float32 as a float32 (``llvm.floor.f32``: one vector instruction)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.floor", [ir.FloatType()])
        return builder.call(fn, [args[0]])
    return types.float32(types.float32), codegen


@intrinsic
def _exp2_biased(typingctx, n):
    """``2**(n - 1)`` for an integral float32 ``n`` in [-125, 128]: the float32 whose exponent
    field is ``n + 126`` (int32 arithmetic and a bitcast, which vectorise)."""
    if n != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        k = builder.fptosi(args[0], i32)
        k = builder.shl(builder.add(k, ir.Constant(i32, 126)), ir.Constant(i32, 23))
        return builder.bitcast(k, ir.FloatType())
    return types.float32(types.float32), codegen


_F = types.float32
_LOG2E = _F(1.44269504088896341)
_LN2_HI = _F(0.693359375)
_LN2_LO = _F(-2.12194440e-4)
_HI, _LO = _F(88.72283), _F(-87.0)
_P0, _P1, _P2 = _F(1.9875691500e-4), _F(1.3981999507e-3), _F(8.3334519073e-3)
_P3, _P4, _P5 = _F(4.1665795894e-2), _F(1.6666665459e-1), _F(5.0000001201e-1)
_T0, _T1, _T2 = _F(-5.70498872745e-3), _F(2.06390887954e-2), _F(-5.37397155531e-2)
_T3, _T4 = _F(1.33314422036e-1), _F(-3.33332819422e-1)
_ONE, _TWO, _HALF, _ZERO = _F(1.0), _F(2.0), _F(0.5), _F(0.0)
_INF = _F(float("inf"))
_SMALL = _F(0.625)


@njit(cache=True, inline="always", fastmath={"contract"})
def exp32(x):
    """``e**x`` for float32 ``x`` (Cephes expf)."""
    x = _F(x)
    xc = min(max(x, _LO), _HI)
    n = _floor32(xc * _LOG2E + _HALF)
    r = xc - n * _LN2_HI - n * _LN2_LO
    p = (((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5) * r * r + r + _ONE
    y = p * _exp2_biased(n) * _TWO
    y = _INF if x > _HI else y
    y = _ZERO if x < _LO else y
    return x if x != x else y


@njit(cache=True, inline="always", fastmath={"contract"})
def _exp_neg(z):
    """``e**z`` for float32 ``z <= 0`` (NaN-free): no overflow or NaN handling, and below
    -87 the result is ``e**-87`` (1.6e-38) rather than 0; callers only add it to 1."""
    zc = max(z, _LO)
    n = _floor32(zc * _LOG2E + _HALF)
    r = zc - n * _LN2_HI - n * _LN2_LO
    p = (((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5) * r * r + r + _ONE
    return p * _exp2_biased(n) * _TWO


@njit(cache=True, inline="always", fastmath={"contract"})
def tanh32(x):
    """``tanh(x)`` for float32 ``x`` (Cephes tanhf): an odd polynomial below 0.625, else
    ``(1 - e) / (1 + e)`` with ``e = exp(-2|x|)``."""
    x = _F(x)
    ax = abs(x)
    z = x * x
    small = ((((_T0 * z + _T1) * z + _T2) * z + _T3) * z + _T4) * z * x + x
    e = _exp_neg(-_TWO * ax)
    t = (_ONE - e) / (_ONE + e)
    big = t if x >= _ZERO else -t
    y = small if ax < _SMALL else big
    return x if x != x else y


@njit(cache=True, inline="always", fastmath={"contract"})
def sigmoid32(x):
    """``1 / (1 + exp(-x))`` for float32 ``x``: ``e = exp(-|x|)`` never overflows;
    ``1 / (1 + e)`` for ``x >= 0``, ``e / (1 + e)`` below."""
    x = _F(x)
    e = _exp_neg(-abs(x))
    r = _ONE / (_ONE + e)
    y = r if x >= _ZERO else e * r
    return x if x != x else y
