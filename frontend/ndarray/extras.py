"""``mx.nd`` functions that are compositions or conversions rather than registry ops."""
from __future__ import annotations

import numpy as np

from ember.ir import EmberError, get_op

from .ndarray import NDArray, invoke

__all__ = ["CachedOp", "reset_arrays", "moveaxis", "concatenate", "onehot_encode",
           "from_numpy", "from_dlpack", "to_dlpack_for_read", "to_dlpack_for_write",
           "split_v2", "histogram"]


def moveaxis(tensor: NDArray, source, destination) -> NDArray:
    """Move axes of ``tensor`` to new positions (a transpose)."""
    src = [source] if isinstance(source, int) else list(source)
    dst = [destination] if isinstance(destination, int) else list(destination)
    nd_ = tensor.ndim
    for a in src + dst:
        if not -nd_ <= a < nd_:
            raise ValueError(f"moveaxis: axis {a} is out of bounds for rank {nd_}")
    src = [a % nd_ for a in src]
    dst = [a % nd_ for a in dst]
    if len(src) != len(dst) or len(set(src)) != len(src) or len(set(dst)) != len(dst):
        raise ValueError("moveaxis: source and destination must be distinct axes, equal in number")
    order = [n for n in range(nd_) if n not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return invoke(get_op("transpose"), [tensor], {"axes": tuple(order)})


def concatenate(arrays, axis: int = 0, always_copy: bool = True) -> NDArray:
    """Join arrays along an existing axis (MXNet's Python-level ``concatenate``)."""
    if not arrays:
        raise EmberError("concatenate: no arrays given")
    if len(arrays) == 1 and not always_copy:
        return arrays[0]
    return invoke(get_op("concat"), list(arrays), {"dim": axis})


def onehot_encode(indices: NDArray, out: NDArray) -> NDArray:
    """Write the one-hot encoding of ``indices`` into ``out`` (shape (n, depth))."""
    res = np.zeros(out.shape, out._data.dtype)
    res[np.arange(indices.shape[0]), indices._data.astype(np.int64)] = 1
    out._data[...] = res
    return out


def from_numpy(ndarray: np.ndarray, zero_copy: bool = True) -> NDArray:
    """An NDArray over a C-contiguous NumPy array; ``zero_copy`` shares its memory and
    makes the NumPy array read-only (as MXNet does) so only the NDArray writes it."""
    if not zero_copy:
        return NDArray(np.array(ndarray, copy=True))
    if not ndarray.flags["C_CONTIGUOUS"]:
        raise ValueError("from_numpy with zero_copy needs a C-contiguous array")
    if not ndarray.flags.writeable:
        try:  # an array an earlier from_numpy made read-only: view it writable again
            ndarray.flags.writeable = True
        except ValueError:
            raise ValueError("from_numpy with zero_copy needs an array whose memory can be "
                             "written; pass zero_copy=False") from None
    view = ndarray.view()
    ndarray.flags.writeable = False
    return NDArray(view)


class _DLPack:
    """Adapter so a DLPack capsule from to_dlpack_* can be read with NumPy."""

    def __init__(self, capsule, device):
        self._capsule, self._device = capsule, device

    def __dlpack__(self, stream=None, **kw):
        return self._capsule

    def __dlpack_device__(self):
        return self._device


def to_dlpack_for_read(data: NDArray):
    """A DLPack capsule sharing ``data``'s memory."""
    return _DLPack(data._data.__dlpack__(), data._data.__dlpack_device__())


to_dlpack_for_write = to_dlpack_for_read


def from_dlpack(dlpack) -> NDArray:
    """An NDArray sharing the memory of a DLPack capsule or DLPack-capable object."""
    return NDArray(np.from_dlpack(dlpack))


def split_v2(ary: NDArray, indices_or_sections, axis: int = 0, squeeze_axis: bool = False):
    """Split into equal sections (an int) or at the given indices (a tuple), like NumPy."""
    if isinstance(indices_or_sections, int):
        n = indices_or_sections
        if ary.shape[axis] % n:
            raise EmberError(f"split_v2: axis {axis} of size {ary.shape[axis]} does not "
                             f"divide into {n} sections")
        step = ary.shape[axis] // n
        bounds = [i * step for i in range(n)] + [ary.shape[axis]]
    else:
        bounds = [0, *indices_or_sections, ary.shape[axis]]
    op = get_op("slice_axis")
    outs = []
    for b, e in zip(bounds[:-1], bounds[1:]):
        part = invoke(op, [ary], {"axis": axis, "begin": b, "end": e})
        if squeeze_axis and e - b == 1:
            part = invoke(get_op("squeeze"), [part], {"axis": (axis,)})
        outs.append(part)
    return outs


def histogram(a: NDArray, bins=10, range=None):
    """Histogram of ``a``: (counts, bin edges)."""
    edges = bins._data if isinstance(bins, NDArray) else bins
    counts, edges = np.histogram(a._data, bins=edges, range=range)
    return NDArray(counts.astype(np.int64)), NDArray(edges.astype(a._data.dtype))


def reset_arrays(*data, num_arrays: int | None = None) -> None:
    """Set every given array to zero in place (MXNet's ``reset_arrays``, used by zero_grad)."""
    if num_arrays is not None and num_arrays != len(data):
        raise EmberError(f"reset_arrays: num_arrays={num_arrays} but {len(data)} arrays given")
    for a in data:
        a._data[...] = 0


class CachedOp:
    """MXNet's ``mx.nd.CachedOp(sym)``: a Symbol compiled once, called on NDArrays.

    The arguments are the symbol's inputs in ``list_inputs()`` order; inside
    ``autograd.record()`` the call is one tape entry with a compiled backward.
    """

    def __init__(self, sym, flags=()):
        from ember.compile import CompiledFunction
        names = sym.list_inputs()
        self._sym = sym

        def run(*arrays):
            return sym(**dict(zip(names, arrays)))
        run.__name__ = f"cachedop_{sym.name}"
        self._fn = CompiledFunction(run)

    def __call__(self, *args, out=None):
        res = self._fn(*args)
        if out is not None:
            targets = out if isinstance(out, list | tuple) else [out]
            results = res if isinstance(res, list | tuple) else [res]
            for t, r in zip(targets, results):
                t._data[...] = r._data
            return out
        return res
