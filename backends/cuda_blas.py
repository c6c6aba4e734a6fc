"""GEMM for the CUDA backend: cuBLAS on a device, a tiled shared-memory kernel otherwise.

Every GEMM is batched and row-major: ``c[z] = op(a[z]) @ op(b[z])`` for 3-D device arrays
(``fully_connected`` and 2-D ``dot`` pass a batch of one). :func:`gemm_fn` returns the
function a compiled program calls:

- on a real device, cuBLAS through ``nvmath.bindings.cublas`` (``sgemm``/``dgemm``, their
  strided-batched forms), the handle's stream set to ember's stream, so the calls are
  captured into the program's CUDA graph (the issue's measurements: CuPy refuses cuBLAS
  during capture, nvmath's bindings do not). cuBLAS is column-major: the row-major product
  ``C = op(A) op(B)`` is computed as ``C^T = op(B)^T op(A)^T``, which reads the row-major
  buffers as their transposes without moving them. Default math mode: no TF32;
- under numba's CUDA simulator, or where cuBLAS cannot be loaded, the tiled kernel of
  :func:`gemm_source` (Kirk & Hwu, "Programming Massively Parallel Processors", ch. 5: each
  block computes a TILE x TILE block of C, staging TILE-wide slabs of A and B through shared
  memory). Both paths are tested against NumPy for the same numbers.
"""
from __future__ import annotations

import threading

import numpy as np

from .cuda_kernels import decorator, kernel

_LOCK = threading.Lock()
_BLAS: dict = {}  # "mod": nvmath's cublas bindings or None, "handle", "workspace", "why"
WORKSPACE_BYTES = 32 << 20


def gemm_source(ta: bool, tb: bool, tile: int, dtype: str, accumulate: bool = False,
                sim: bool = False) -> str:
    """``kernel(a, b, c)``: ``c[z] = op(a[z]) @ op(b[z])`` (``+= `` with ``accumulate``), a
    (Z, M, K) or (Z, K, M) with ``ta``, b (Z, K, N) or (Z, N, K) with ``tb``; an operand
    with a batch of 1 serves every z. Blocks of (tile, tile) threads over a (ceil(N/tile),
    ceil(M/tile), Zgrid) grid, looping over z by Zgrid. Out-of-range elements of a slab are
    staged as 0 (they meet only padding); products accumulate in ``dtype``."""
    a_at = "a[za, k, row]" if ta else "a[za, row, k]"
    b_at = "b[zb, col, k]" if tb else "b[zb, k, col]"
    t = tile
    lines = [
        f"    sa = cuda.shared.array(({t}, {t}), np.{dtype})",
        f"    sb = cuda.shared.array(({t}, {t}), np.{dtype})",
        "    tx = cuda.threadIdx.x",
        "    ty = cuda.threadIdx.y",
        "    M = c.shape[1]",
        "    N = c.shape[2]",
        f"    K = a.shape[{1 if ta else 2}]",
        f"    row = cuda.blockIdx.y * {t} + ty",
        f"    col = cuda.blockIdx.x * {t} + tx",
        "    for z in range(cuda.blockIdx.z, c.shape[0], cuda.gridDim.z):",
        "        za = z if a.shape[0] > 1 else 0",
        "        zb = z if b.shape[0] > 1 else 0",
        f"        acc = np.{dtype}(0.0)",
        f"        for k0 in range(0, K, {t}):",
        "            k = k0 + tx",
        f"            sa[ty, tx] = {a_at} if row < M and k < K else np.{dtype}(0.0)",
        "            k = k0 + ty",
        f"            sb[ty, tx] = {b_at} if k < K and col < N else np.{dtype}(0.0)",
        "            cuda.syncthreads()",
        f"            for kk in range({t}):",
        "                acc += sa[ty, kk] * sb[kk, tx]",
        "            cuda.syncthreads()",
        "        if row < M and col < N:",
        "            c[z, row, col] = " + ("c[z, row, col] + acc" if accumulate else "acc"),
    ]
    return ("import numpy as np\nfrom numba import cuda\n\n\n" + decorator(sim)
            + "def kernel(a, b, c):\n" + "\n".join(lines) + "\n")


def tiled_gemm(ta: bool, tb: bool, dtype: str, stream, sim: bool, accumulate: bool = False):
    """``fn(a, b, c)`` running :func:`gemm_source`'s kernel on ``stream`` (tile 16 on a
    device; 8 under the simulator, whose threads are Python threads)."""
    tile = 8 if sim else 16
    k = kernel(gemm_source(ta, tb, tile, dtype, accumulate, sim))

    def fn(a, b, c):
        z, m, n = c.shape
        if c.size == 0:
            return
        grid = (-(-n // tile), -(-m // tile), min(z, 65535))
        k[grid, (tile, tile), stream](a, b, c)
    return fn


def stream_ptr(stream) -> int:
    """The ``CUstream`` handle of a numba-cuda stream as an integer."""
    h = stream.handle
    try:
        return int(h)
    except TypeError:  # a ctypes c_void_p (numba's ctypes binding)
        return int(h.value or 0)


def device_ptr(a) -> int:
    """Device address of a numba-cuda array's first element."""
    return int(a.__cuda_array_interface__["data"][0])


def _cublas():
    """``(bindings, handle)`` of nvmath's cuBLAS, created once; ``(None, why)`` if absent."""
    if not _BLAS:
        with _LOCK:
            if not _BLAS:
                try:
                    from nvmath.bindings import cublas

                    from . import cuda_device as cd
                    handle = cublas.create()
                    # a workspace of our own: cuBLAS allocates none during graph capture
                    # (NVIDIA's cuBLAS docs, "CUDA Graphs support"; 32 MiB for Hopper)
                    ws = cd.empty((WORKSPACE_BYTES,), np.uint8)
                    cublas.set_workspace(handle, device_ptr(ws), WORKSPACE_BYTES)
                    _BLAS.update(mod=cublas, handle=handle, workspace=ws)
                except Exception as e:  # no nvmath-python, no libcublas, no device
                    _BLAS.update(mod=None, handle=None, why=f"{type(e).__name__}: {e}")
    return _BLAS["mod"], _BLAS["handle"]


def cublas_gemm(ta: bool, tb: bool, dtype: str, stream, accumulate: bool = False):
    """``fn(a, b, c)`` calling cuBLAS ``{s,d}gemm[_strided_batched]`` on ``stream`` (beta 1
    with ``accumulate``; an operand with a batch of 1 has batch stride 0), or None when
    cuBLAS is unavailable (then :func:`tiled_gemm` serves)."""
    cublas, handle = _cublas()
    if cublas is None or dtype not in ("float32", "float64"):
        return None
    op = cublas.Operation
    sptr = stream_ptr(stream)
    one = np.ones(1, dtype)  # host scalars (pointer mode host), alive with fn
    zero = one if accumulate else np.zeros(1, dtype)
    gemm = cublas.sgemm if dtype == "float32" else cublas.dgemm
    batched = cublas.sgemm_strided_batched if dtype == "float32" else \
        cublas.dgemm_strided_batched
    op_b, op_a = (op.T if tb else op.N), (op.T if ta else op.N)

    def fn(a, b, c):
        z, m, n = c.shape
        k = a.shape[1] if ta else a.shape[2]
        if c.size == 0:
            return
        cublas.set_stream(handle, sptr)
        ldb, lda = (k if tb else n), (m if ta else k)
        args = (handle, op_b, op_a, n, m, k, one.ctypes.data)
        if z == 1:
            gemm(*args, device_ptr(b), ldb, device_ptr(a), lda, zero.ctypes.data,
                 device_ptr(c), n)
        else:
            batched(*args, device_ptr(b), ldb, k * n if b.shape[0] > 1 else 0, device_ptr(a),
                    lda, m * k if a.shape[0] > 1 else 0, zero.ctypes.data, device_ptr(c), n,
                    m * n, z)
    fn.one, fn.zero = one, zero
    return fn


def gemm_fn(ta: bool, tb: bool, dtype: str, stream, sim: bool, accumulate: bool = False):
    """The GEMM ``fn(a, b, c)`` of a compiled program: cuBLAS on a device, else the tiled
    kernel (returns ``(fn, "cublas" | "tiled")``)."""
    if not sim:
        fn = cublas_gemm(ta, tb, dtype, stream, accumulate)
        if fn is not None:
            return fn, "cublas"
    return tiled_gemm(ta, tb, dtype, stream, sim, accumulate), "tiled"
