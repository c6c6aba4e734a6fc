"""Devices: ``ember.cpu()``, ``ember.gpu(i)``, ``Context`` and the default-context stack.

ember's eager arrays live in host memory; a GPU context is carried along (and honoured by
the CUDA backend of compiled code), as MXNet code passes contexts around everywhere.
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
        """Nothing to release: host memory is NumPy's."""


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
    """Number of GPUs ember can use: 0, since this ember computes on the CPU only (a GPU
    that numba sees but no ember backend uses is not counted)."""
    return 0


def check_device(ctx: Context) -> Context:
    """``ctx`` if arrays can live there; an ``MXNetError`` for a device ember cannot use, as
    MXNet raises when an array is created on a GPU it does not have (never a silent CPU
    copy labelled ``gpu``)."""
    if ctx.device_type == "gpu" and ctx.device_id >= num_gpus():
        from ember.base import MXNetError
        raise MXNetError(f"cannot place an array on {ctx}: ember has no usable GPU "
                         f"(mx.context.num_gpus() == {num_gpus()}; ember computes on the CPU, "
                         "use mx.cpu())")
    return ctx


def current_context() -> Context:
    """The innermost ``with ctx:`` context, else ``cpu(0)``."""
    return getattr(Context._local, "value", None) or _CPU0


_CPU0 = Context("cpu", 0)
Context.default_ctx = _CPU0
