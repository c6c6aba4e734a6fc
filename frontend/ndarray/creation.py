"""Array-creation functions with MXNet's signatures (``zeros(shape, ctx=None, dtype=None)``).

Each is a thin wrapper over a registry creation op: the wrapper exists only because MXNet
puts ``ctx`` second, where the generic op function would expect an attribute.
"""
from __future__ import annotations

from ember.ir import get_op
from ember.ir.ops import normalize_attrs

from .ndarray import NDArray, invoke


def _shape(shape):
    return (int(shape),) if isinstance(shape, int) or hasattr(shape, "__index__") \
        else tuple(int(d) for d in shape)


def _dt(dtype):
    import numpy as np
    return "float32" if dtype is None else np.dtype(dtype).name


def _create(op_name, ctx, **attrs):
    stype = attrs.pop("stype", None)
    if stype not in (None, "default"):
        from ember.base import MXNetError
        raise MXNetError(f"{op_name}: storage type {stype!r} is not supported; ember stores "
                         "arrays densely")
    op = get_op(op_name)
    attrs.pop("name", None)
    out = attrs.pop("out", None)
    return invoke(op, [], normalize_attrs(op, attrs), out=out, ctx=ctx)


def zeros(shape, ctx=None, dtype=None, **kwargs) -> NDArray:
    """An array of zeros."""
    return _create("zeros", ctx, shape=_shape(shape), dtype=_dt(dtype), **kwargs)


def ones(shape, ctx=None, dtype=None, **kwargs) -> NDArray:
    """An array of ones."""
    return _create("ones", ctx, shape=_shape(shape), dtype=_dt(dtype), **kwargs)


def full(shape, val, ctx=None, dtype=None, out=None) -> NDArray:
    """An array filled with ``val``."""
    return _create("full", ctx, shape=_shape(shape), value=float(val), dtype=_dt(dtype), out=out)


def arange(start, stop=None, step=1.0, repeat=1, infer_range=None, ctx=None,
           dtype=None) -> NDArray:
    """Evenly spaced values in ``[start, stop)``, each repeated ``repeat`` times."""
    if stop is None:
        start, stop = 0, start
    return _create("arange", ctx, start=float(start), stop=float(stop), step=float(step),
                   repeat=int(repeat), dtype=_dt(dtype))


def linspace(start, stop, num, endpoint=True, ctx=None, dtype=None) -> NDArray:
    """``num`` evenly spaced values from ``start`` to ``stop``."""
    return _create("linspace", ctx, start=float(start), stop=float(stop), num=int(num),
                   endpoint=bool(endpoint), dtype=_dt(dtype))


def eye(N, M=0, k=0, ctx=None, dtype=None, **kwargs) -> NDArray:
    """A 2-D array with ones on the ``k``-th diagonal."""
    return _create("eye", ctx, N=int(N), M=int(M), k=int(k), dtype=_dt(dtype), **kwargs)
