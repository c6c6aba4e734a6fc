"""CUDA devices and device memory for ember: discovery, the simulator opt-in, allocation,
host/device copies and one stream per device.

Everything numba-cuda is imported lazily, so ember without the ``cuda`` extra (or without a
GPU) pays nothing and behaves as before. A device counts when numba-cuda imports AND either
a driver reports GPUs, or the user opted in to numba's CUDA simulator with
``NUMBA_ENABLE_CUDASIM=1`` in the environment (numba reads it when it is first imported; the
simulator runs kernels in Python threads on host memory, which is what the test suite uses
without a GPU).

Device arrays are numba-cuda ``DeviceNDArray`` objects (the simulator's ``FakeCUDAArray``
under the simulator). All copies and allocations go through the device's ember stream
(:func:`stream`), an external non-default stream, so the CUDA backend can capture the work
it launches on it into a CUDA graph; a copy to the host synchronises that stream.
"""
from __future__ import annotations

import contextlib
import os
import threading

import numpy as np

_LOCK = threading.Lock()
_STATE: dict = {}          # "cuda": the module or None, "reason": why none, "count": int
_STREAMS: dict[int, object] = {}

INSTALL_HINT = "pip install 'ember[cuda]'"


def simulator_opted_in() -> bool:
    """Whether the environment asks for numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``),
    read as numba reads it (an integer, nonzero means on)."""
    try:
        return int(os.environ.get("NUMBA_ENABLE_CUDASIM", "0") or 0) != 0
    except ValueError:
        return False


def _discover() -> dict:
    """Import numba-cuda once and count the devices; never raises."""
    if _STATE:
        return _STATE
    with _LOCK:
        if _STATE:
            return _STATE
        state = {"cuda": None, "count": 0, "simulator": False, "reason": ""}
        try:
            from numba import cuda
            try:  # numba-cuda's own configuration (0.30); numba's before it moved
                from numba.cuda.core import config
            except ImportError:
                from numba.core import config
        except Exception as e:  # not installed, or broken (numba-cuda 0.30 with NumPy 2.5)
            state["reason"] = (f"numba-cuda cannot be imported ({type(e).__name__}: {e}); "
                               f"install the CUDA extra: {INSTALL_HINT}")
            _STATE.update(state)
            return _STATE
        sim = bool(getattr(config, "ENABLE_CUDASIM", False))
        if getattr(cuda, "implementation", None) != "NVIDIA":  # numba's deprecated own target
            state["reason"] = ("numba.cuda is numba's built-in CUDA target, not NVIDIA's "
                               f"numba-cuda package; install the CUDA extra: {INSTALL_HINT}")
        elif sim and not simulator_opted_in():
            state["reason"] = ("numba runs its CUDA simulator but NUMBA_ENABLE_CUDASIM is not "
                               "set in the environment; ember counts the simulator only when "
                               "the user opted in")
        elif sim:
            state.update(cuda=cuda, simulator=True, count=len(cuda.gpus))
        elif simulator_opted_in():
            state["reason"] = ("NUMBA_ENABLE_CUDASIM=1 was set after numba.cuda was imported; "
                               "set it before importing ember")
        else:
            try:
                ok = cuda.is_available()
                count = len(cuda.gpus) if ok else 0
            except Exception as e:  # no driver library, driver too old, ...
                ok, count = False, 0
                state["reason"] = f"no usable CUDA driver ({type(e).__name__}: {e})"
            if ok and count:
                state.update(cuda=cuda, count=count)
            elif not state["reason"]:
                state["reason"] = ("no CUDA device found (numba.cuda.is_available() is False: "
                                   "no NVIDIA driver or GPU on this machine)")
        _STATE.update(state)
        return _STATE


def device_count() -> int:
    """How many CUDA devices ember can use (0 without numba-cuda, a driver or a GPU)."""
    return _discover()["count"]


def unavailable_reason() -> str:
    """Why no device is usable ('' when one is)."""
    return _discover()["reason"]


def is_simulator() -> bool:
    """Whether the devices are numba's CUDA simulator (opted in by the user)."""
    return _discover()["simulator"]


def cuda_module():
    """The ``numba.cuda`` module; ``RuntimeError`` saying why when no device is usable."""
    st = _discover()
    if st["cuda"] is None:
        raise RuntimeError(st["reason"])
    return st["cuda"]


def _check_id(device_id: int) -> None:
    n = device_count()
    if not 0 <= device_id < n:
        raise RuntimeError(f"gpu({device_id}) does not exist: ember sees {n} CUDA device(s)"
                           + (f" ({unavailable_reason()})" if n == 0 else ""))


@contextlib.contextmanager
def device(device_id: int = 0):
    """Make ``device_id`` numba-cuda's current device inside the block."""
    _check_id(device_id)
    cuda = cuda_module()
    if is_simulator() or device_count() == 1:
        yield  # the only device is always current
        return
    with cuda.gpus[device_id]:
        yield


def stream(device_id: int = 0):
    """ember's stream on ``device_id`` (created once): every ember copy and kernel goes on it."""
    s = _STREAMS.get(device_id)
    if s is None:
        with device(device_id):
            s = _STREAMS.setdefault(device_id, cuda_module().stream())
    return s


def synchronize(device_id: int = 0) -> None:
    """Wait for all work queued on ember's stream of ``device_id``."""
    stream(device_id).synchronize()


def is_device_array(x) -> bool:
    """Whether ``x`` is a numba-cuda device array (or the simulator's)."""
    st = _discover()
    return st["cuda"] is not None and st["cuda"].devicearray.is_cuda_ndarray(x)


def to_device(a, device_id: int = 0):
    """A new device array holding a copy of host array ``a`` (made C-contiguous)."""
    a = np.asarray(a, order="C")
    with device(device_id):
        return cuda_module().to_device(a, stream=stream(device_id))


def to_host(d) -> np.ndarray:
    """A new NumPy array holding a copy of device array ``d`` (waits for the copy)."""
    s = _stream_of(d)
    h = d.copy_to_host(stream=s)
    s.synchronize()
    return h


def empty(shape, dtype, device_id: int = 0):
    """An uninitialised device array."""
    with device(device_id):
        return cuda_module().device_array(tuple(shape), dtype=np.dtype(dtype),
                                          stream=stream(device_id))


def full(shape, value, dtype, device_id: int = 0):
    """A device array filled with ``value`` (a host fill copied over: creation is rare)."""
    return to_device(np.full(tuple(shape), value, dtype=np.dtype(dtype)), device_id)


def copy(d, device_id: int | None = None):
    """A new device array with the contents of device array ``d``, on ``device_id`` (by default
    ``d``'s device). Same device: a device-to-device copy; another device: through the host."""
    src = device_of(d)
    dst = src if device_id is None else device_id
    if dst != src:
        return to_device(to_host(d), dst)
    with device(dst):
        out = cuda_module().device_array(d.shape, dtype=d.dtype, stream=stream(dst))
        if d.size:
            out.copy_to_device(d, stream=stream(dst))
    return out


def copy_into(dst, src) -> None:
    """Write ``src`` (host or device array of ``dst``'s shape) into device array ``dst``."""
    if dst.size == 0:
        return
    if is_device_array(src):
        if device_of(src) != device_of(dst):
            src = to_host(src)
        else:
            dst.copy_to_device(src, stream=_stream_of(dst))
            return
    src = np.asarray(np.broadcast_to(np.asarray(src, dtype=dst.dtype), dst.shape), order="C")
    dst.copy_to_device(src, stream=_stream_of(dst))


def device_of(d) -> int:
    """The device id a device array was allocated on."""
    if is_simulator() or device_count() == 1:
        return 0
    ctx = getattr(getattr(d, "gpu_data", None), "context", None)
    dev = getattr(ctx, "device", None)
    return int(getattr(dev, "id", 0))


def _stream_of(d):
    return stream(device_of(d))


def _reset_for_tests() -> None:
    """Forget the discovery (tests that change the environment call this)."""
    with _LOCK:
        _STATE.clear()
        _STREAMS.clear()
