"""NDArrays in GPU memory: eager ops on them, copies, and the helpers the rest of the front
end uses where it touches an array's storage.

A ``gpu(i)`` NDArray holds a numba-cuda device array (``ember.backends.cuda_device``) and
its Context. The CPU dispatch path (``ndarray.invoke``) looks at device storage only after
the first GPU array of the process exists (one flag), so CPU-only programs pay nothing.

An eager op on GPU arrays runs as a one-node graph compiled by the ``cuda`` backend (cached
per op, attributes and input types), the same kernels a hybridized block uses; inputs the
op updates in place (optimizer states, running statistics) are the graph's parameters, so
the backend writes them on the device. When the backend cannot be imported, the op runs
through a host round trip (copy to host, the op's NumPy kernel, copy back). Arrays on
different contexts in one op raise MXNet's error naming both contexts.
"""
from __future__ import annotations

import numpy as np

from ember.base import MXNetError
from ember.context import Context, check_device, cpu

from . import ndarray as _nd
from .ndarray import NDArray

_PROGRAMS: dict = {}   # (op name, attrs, input shapes/dtypes) -> compiled one-node run function
_MAX_PROGRAMS = 2048
_NO_BACKEND: list = []  # the reason the cuda backend could not be imported, once known
_CPU0 = cpu(0)


def _cd():
    from ember.backends import cuda_device
    return cuda_device


def is_gpu(ctx) -> bool:
    """Whether ``ctx`` is a GPU context."""
    return ctx is not None and ctx.device_type == "gpu"


def is_device_data(data) -> bool:
    """Whether ``data`` (an NDArray's storage) is in device memory."""
    return type(data) is not np.ndarray and _cd().is_device_array(data)


def place(host, ctx: Context):
    """Storage for ``ctx`` holding a copy of host array ``host``: a device array on a GPU
    context (checked to exist), else ``host`` itself."""
    if not is_gpu(ctx):
        return host
    check_device(ctx)
    d = _cd().to_device(np.asarray(host), ctx.device_id)
    _nd._GPU_IN_USE = True
    return d


def host(data) -> np.ndarray:
    """A host copy of device ``data``; host ``data`` itself."""
    return _cd().to_host(data) if is_device_data(data) else data


def zeros_like(data, ctx: Context | None = None):
    """Zeros of ``data``'s shape and dtype, on ``data``'s memory (or ``ctx``)."""
    if is_device_data(data) or is_gpu(ctx):
        dev = ctx.device_id if is_gpu(ctx) else _cd().device_of(data)
        d = _cd().empty(data.shape, data.dtype, dev)
        _cd().copy_into(d, 0)
        _nd._GPU_IN_USE = True
        return d
    return np.zeros_like(data)


def assign(dst, src) -> None:
    """``dst[...] = src`` for storage ``dst`` and host or device ``src`` (broadcast)."""
    if is_device_data(dst):
        _cd().copy_into(dst, src)
    else:
        dst[...] = host(src)


def copy_to(x: NDArray, ctx: Context) -> NDArray:
    """A copy of NDArray ``x`` on ``ctx`` (host or device on either side)."""
    check_device(ctx)
    src_dev = is_device_data(x._data)
    if is_gpu(ctx):
        data = (_cd().copy(x._data, ctx.device_id) if src_dev
                else _cd().to_device(x._data, ctx.device_id))
        _nd._GPU_IN_USE = True
        return NDArray(data, ctx)
    return NDArray(_cd().to_host(x._data) if src_dev else x._data.copy(), ctx)


def creation_outputs(outs: list, ctx: Context) -> list:
    """Move the host results of a creation op (zeros, arange, random...) to GPU ``ctx``."""
    for o in outs:
        o._data = place(o._data, ctx)
        o._ctx = ctx
    return outs


def where(x: NDArray) -> Context:
    """The context whose memory holds ``x``'s storage (a host array is on the CPU even
    inside ``with mx.gpu():``)."""
    if is_device_data(x._data):
        return x._ctx
    c = x._ctx
    return c if c is not None and c.device_type != "gpu" else _CPU0


def synchronize(data) -> None:
    """Wait for the work queued on the stream of device array ``data``."""
    _cd().synchronize(_cd().device_of(data))


def _contexts_error(op, inputs) -> MXNetError | None:
    first = where(inputs[0])
    for i, x in enumerate(inputs[1:], 2):
        c = where(x)
        if c != first:  # MXNet's imperative_utils.h GetContext check, in its words
            return MXNetError(f"Operator {op.name} require all inputs live on the same "
                              f"context. But the first argument is on {first} while the "
                              f"{i}-th argument is on {c}")
    return None


def invoke_device(op, inputs: list, datas: list, attrs: dict, out=None):
    """``ndarray.invoke`` for inputs of which some may live on a GPU; ``NotImplemented``
    when none does (the CPU path runs)."""
    if not any(is_device_data(d) for d in datas):
        return NotImplemented
    err = _contexts_error(op, inputs)
    if err is not None:
        raise err
    ctx = where(inputs[0])
    if op.mode:
        from ember import autograd as _ag
        attrs = {**attrs, "is_train": _ag._STATE.training}
    return _finish(op, _run(op, datas, attrs, ctx), inputs, attrs, ctx, out)


def gpu_creation(op, res, attrs: dict, ctx: Context, out=None):
    """The tail of ``invoke`` for a creation op on GPU ``ctx``: its host results moved there."""
    res = res if isinstance(res, tuple | list) else [res]
    return _finish(op, [place(np.asarray(r), ctx) for r in res], [], attrs, ctx, out)


def _finish(op, res: list, inputs: list, attrs: dict, ctx: Context, out):
    outs = [NDArray(r, ctx) for r in res]
    from ember import autograd as _ag
    if _ag._STATE.recording:
        _ag._record(op, attrs, inputs, outs)
    if op.visible_outputs is not None:
        outs = outs[:op.n_visible(attrs)]
    if out is not None:
        targets = out if isinstance(out, list | tuple) else [out]
        for t, o in zip(targets, outs):
            if t.shape != o.shape:
                from ember.ir import ShapeError
                raise ShapeError(f"{op.name}: out= has shape {t.shape}, result has {o.shape}")
            if t.context != ctx:
                raise MXNetError(f"{op.name}: out= is on {t.context}, the inputs on {ctx}")
            assign(t._data, o._data)
            t._node = o._node
        return out
    return outs[0] if len(outs) == 1 else outs


def _run(op, datas: list, attrs: dict, ctx: Context) -> list:
    """The op's outputs as device arrays: the cuda backend's one-node graph, or a host round
    trip when the backend is unavailable."""
    try:
        fn = _program(op, datas, attrs)
        mutated = op.mutated(attrs)
        if fn is not None:
            ins = [d for i, d in enumerate(datas) if i not in mutated]
            params = [datas[i] for i in mutated]
            return list(fn(ins, params))
    except MXNetError:
        raise
    except Exception as e:  # a numba-cuda complaint becomes the op's own error
        fake = [NDArray(np.empty(d.shape, d.dtype)) for d in datas]
        raise _nd._op_error(op, fake, attrs, e) from None
    cd = _cd()
    hosts = [cd.to_host(d) for d in datas]
    try:
        res = op.compute(hosts, attrs)
    except MXNetError:
        raise
    except Exception as e:
        raise _nd._op_error(op, [NDArray(h) for h in hosts], attrs, e) from None
    for i in mutated:  # the NumPy kernel updated the host copy: write it back
        cd.copy_into(datas[i], hosts[i])
    res = res if isinstance(res, tuple | list) else [res]
    return [cd.to_device(np.asarray(r), ctx.device_id) for r in res]


def _program(op, datas: list, attrs: dict):
    """The cuda backend's compiled one-node graph of ``op`` for these inputs (cached), or
    None when the backend cannot be imported."""
    try:
        key = (op.name, tuple(attrs.items()), tuple((d.shape, d.dtype) for d in datas))
        fn = _PROGRAMS.get(key)
    except TypeError:  # an attribute that cannot be hashed: compile uncached
        key = fn = None
    if fn is not None:
        return fn
    if _NO_BACKEND:
        return None
    try:
        from ember.backends import cuda as backend
    except ImportError as e:
        _NO_BACKEND.append(str(e))
        return None
    from ember.ir.graph import GraphBuilder
    from ember.ir.types import TensorType
    types = [TensorType(tuple(d.shape), np.dtype(d.dtype)) for d in datas]
    mutated = op.mutated(attrs)
    b = GraphBuilder(f"eager_{op.name}")
    vals = [None] * len(types)
    for i, t in enumerate(types):  # the graph's inputs first, then its parameters
        if i not in mutated:
            vals[i] = b.input(t, f"in{i}")
    for i in mutated:
        vals[i] = b.param(types[i], f"state{i}")
    outs = b.emit(op, vals, **attrs)
    fn = backend.compile(b.build(list(outs)))
    if key is not None:
        if len(_PROGRAMS) >= _MAX_PROGRAMS:  # bounded: drop the oldest (insertion order)
            _PROGRAMS.pop(next(iter(_PROGRAMS)), None)
        _PROGRAMS[key] = fn
    return fn
