"""Devices: ``ember.cpu()``, ``ember.gpu(i)``, ``Context`` and the default-context stack.

A ``cpu()`` array lives in host memory; a ``gpu(i)`` array in the memory of CUDA device ``i``
(``ember.backends.cuda_device``; ops on it run on the ``cuda`` backend). GPUs count only when
ember can use them: numba-cuda installed (the ``cuda`` extra) and a device present, or numba's
CUDA simulator opted in with ``NUMBA_ENABLE_CUDASIM=1``.
"""
from __future__ import annotations

import threading


class Context:
    """A device: ``Context('cpu', 0)`` or ``Context('gpu', 1)``; usable as ``with``."""

    devtype2str = {1: "cpu", 2: "gpu", 3: "cpu_pinned", 5: "cpu_shared"}
    devstr2type = {v: k for k, v in devtype2str.items()}
    _local = threading.local()

    def __init__(self, device_type, device_id: int = 0):
        if isinstance(device_type, Context):
            device_type, device_id = device_type.device_type, device_type.device_id
        if device_type not in self.devstr2type:
            raise ValueError(f"unknown device type {device_type!r}")
        self.device_type = device_type
        self.device_id = int(device_id)
        self._old = None

    @property
    def device_typeid(self) -> int:
        return self.devstr2type[self.device_type]

    def __hash__(self):
        return hash((self.device_type, self.device_id))

    def __eq__(self, other):
        return (isinstance(other, Context) and self.device_type == other.device_type
                and self.device_id == other.device_id)

    def __repr__(self):
        return f"{self.device_type}({self.device_id})"

    __str__ = __repr__

    def __enter__(self):
        self._old = current_context()
        Context._local.value = self
        return self

    def __exit__(self, *exc):
        Context._local.value = self._old

    def empty_cache(self):
        """Nothing to release: host memory is NumPy's, device memory numba-cuda's (freed when
        the arrays are)."""


def cpu(device_id: int = 0) -> Context:
    """The CPU context."""
    return Context("cpu", device_id)


def cpu_pinned(device_id: int = 0) -> Context:
    """Pinned host memory (the same as cpu for ember's host arrays)."""
    return Context("cpu_pinned", device_id)


def gpu(device_id: int = 0) -> Context:
    """The GPU context ``device_id``."""
    return Context("gpu", device_id)


def num_gpus() -> int:
    """Number of GPUs ember can use: CUDA devices numba-cuda sees (with the ``cuda`` extra),
    or 1 for numba's CUDA simulator when the user opted in with ``NUMBA_ENABLE_CUDASIM=1``."""
    from ember.backends.cuda_device import device_count
    return device_count()


def check_device(ctx: Context) -> Context:
    """``ctx`` if arrays can live there; an ``MXNetError`` for a device ember cannot use, as
    MXNet raises when an array is created on a GPU it does not have (never a silent CPU
    copy labelled ``gpu``)."""
    if ctx.device_type == "gpu":
        n = num_gpus()
        if ctx.device_id >= n or ctx.device_id < 0:
            from ember.backends.cuda_device import INSTALL_HINT, unavailable_reason
            from ember.base import MXNetError
            if n == 0:
                raise MXNetError(f"cannot place an array on {ctx}: ember has no usable GPU "
                                 f"(mx.context.num_gpus() == 0: {unavailable_reason()}); use "
                                 f"mx.cpu(), or on a machine with an NVIDIA GPU install "
                                 f"ember's CUDA extra: {INSTALL_HINT}")
            raise MXNetError(f"cannot place an array on {ctx}: ember sees {n} GPU(s) "
                             f"(mx.context.num_gpus() == {n}), so gpu(0) to gpu({n - 1})")
    return ctx


def current_context() -> Context:
    """The innermost ``with ctx:`` context, else ``cpu(0)``."""
    return getattr(Context._local, "value", None) or _CPU0


_CPU0 = Context("cpu", 0)
Context.default_ctx = _CPU0
