"""Build features, as ``mx.runtime.Features()`` reports them for MXNet builds."""
from __future__ import annotations

import collections

Feature = collections.namedtuple("Feature", ["name", "enabled"])


def _probe() -> dict[str, bool]:
    """What this machine and installation give ember (CPU features as LLVM sees them)."""
    try:
        from numba import cuda
        has_cuda = bool(cuda.is_available())
    except Exception:
        has_cuda = False
    try:
        import llvmlite.binding as llvm
        cpu = dict(llvm.get_host_cpu_features())
    except Exception:
        cpu = {}
    try:
        import scipy.linalg.blas  # noqa: F401  (numba reaches BLAS/LAPACK through SciPy)
        has_blas = True
    except ImportError:
        has_blas = False
    return {"CUDA": has_cuda, "CUDNN": False, "NCCL": False, "CUDA_RTC": False,
            "TENSORRT": False, "CPU_SSE": bool(cpu.get("sse")),
            "CPU_SSE2": bool(cpu.get("sse2")), "CPU_SSE3": bool(cpu.get("sse3")),
            "CPU_AVX": bool(cpu.get("avx")), "CPU_AVX2": bool(cpu.get("avx2")),
            "CPU_AVX512F": bool(cpu.get("avx512f")), "BLAS_OPEN": has_blas,
            "LAPACK": has_blas, "MKLDNN": False, "OPENCV": False, "DIST_KVSTORE": False,
            "INT64_TENSOR_SIZE": True, "SIGNAL_HANDLER": False, "DEBUG": False,
            "TVM_OP": False}


class Features(collections.OrderedDict):
    """Which features this build of ember has (``is_enabled('CUDA')``)."""

    def __init__(self):
        super().__init__((k, Feature(k, v)) for k, v in _probe().items())

    def is_enabled(self, feature_name: str) -> bool:
        name = feature_name.upper()
        if name not in self:
            raise RuntimeError(f"feature {feature_name!r} is unknown; known: {', '.join(self)}")
        return self[name].enabled


def feature_list() -> list[Feature]:
    """All features with their state."""
    return list(Features().values())
