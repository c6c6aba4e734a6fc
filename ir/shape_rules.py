"""Building blocks for op shape+dtype rules.

A rule is ``infer(in_types, attrs) -> (out_types, refined_in_types)``. Dims may be ``None``
(unknown); rules propagate what they know in both directions, which is how
``infer_shapes`` learns a lazy parameter's shape from its consumer (MXNet's InferShape).

dtypes are never converted implicitly (MXNet's ``ElemwiseType``): inputs that an op computes
with together (both operands of ``add``, a Dense layer's data, weight and bias) must share
one dtype, or :func:`same_dtype` raises a :class:`DTypeError` naming the op, the dtypes and
the shapes; index inputs (``take``'s indices, labels, lengths) are not checked. Eager calls
run the rule only when their inputs' dtypes differ, so the check costs nothing otherwise.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import DimConflict, DTypeError, ShapeError, fmt_shapes
from .types import Dim, TensorType


def fail(op: str, msg: str, in_types: Sequence[TensorType]):
    """Raise a ShapeError naming the op and the input shapes."""
    raise ShapeError(f"{op}: {msg} (input shapes {fmt_shapes([t.shape for t in in_types])})")


def same_dtype(op: str, in_types: Sequence[TensorType], which: Sequence[int] | None = None,
               names: Sequence[str] | None = None, ref: int | None = None) -> None:
    """Raise a DTypeError unless the inputs at ``which`` (default: all) share one dtype.

    ``names`` label the inputs in the message (default lhs/rhs or input k); ``ref`` is the
    input whose dtype the others should be converted to (a layer's weight; default the
    first checked input, whose dtype the result of a binary op has, as in MXNet), unless
    that is an integer type and another is a float type: then the message says the float.
    """
    idx = range(len(in_types)) if which is None else which
    idx = [i for i in idx if i < len(in_types)]
    if len({in_types[i].dtype for i in idx}) <= 1:
        return
    if names is None:
        names = ("lhs", "rhs") if len(in_types) == 2 else \
            tuple(f"input {k}" for k in range(len(in_types)))
    want = in_types[idx[0] if ref is None else ref].dtype
    floats = [in_types[i].dtype for i in idx if np.dtype(in_types[i].dtype).kind == "f"]
    if np.dtype(want).kind != "f" and floats:  # uint8 images - float32 mean: never to uint8
        want = floats[0]
    odd = [names[i] for i in idx if in_types[i].dtype != want]
    got = ", ".join(f"{names[i]} {in_types[i].dtype}" for i in idx)
    raise DTypeError(
        f"{op}: inputs must share one dtype, got {got} (input shapes "
        f"{fmt_shapes([t.shape for t in in_types])}); ember, like MXNet, never converts "
        f"them implicitly: convert the {' and '.join(odd)} with .astype('{want}')")


def unify_dim(a: Dim, b: Dim, op: str = "", in_types=()) -> Dim:
    """The dim that is both ``a`` and ``b`` (None matches anything)."""
    if a is None:
        return b
    if b is None or a == b:
        return a
    raise DimConflict(f"{op}: dims {a} and {b} disagree (input shapes "
                      f"{fmt_shapes([t.shape for t in in_types])})")


def unify(a: tuple, b: tuple, op: str = "", in_types=()) -> tuple:
    """The shape that is both ``a`` and ``b``."""
    if len(a) != len(b):
        fail(op, f"ranks {len(a)} and {len(b)} disagree", in_types)
    return tuple(unify_dim(x, y, op, in_types) for x, y in zip(a, b))


def broadcast(a: tuple, b: tuple, op: str = "", in_types=()) -> tuple:
    """NumPy broadcasting of two shapes with unknown dims."""
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    out = []
    for x, y in zip(a, b):
        if x == 1:
            out.append(y)
        elif y == 1:
            out.append(x)
        elif x is None or y is None:
            out.append(x if y is None else y)
        elif x == y:
            out.append(x)
        else:
            fail(op, f"shapes {fmt_shapes([a[-len(a):]])} and {fmt_shapes([b])} "
                     "cannot be broadcast together", in_types)
    return tuple(out)


def elemwise(op: str, n_out: int = 1, dtype: str | None = None):
    """Rule of an op whose inputs and outputs all share one shape and one dtype (``dtype``:
    the outputs' dtype instead)."""
    def infer(in_types, attrs):
        if len(in_types) > 1:
            same_dtype(op, in_types)
        shape = in_types[0].shape
        for t in in_types[1:]:
            shape = unify(shape, t.shape, op, in_types)
        out = TensorType(shape, dtype or in_types[0].dtype)
        return [out] * n_out, [t.with_shape(shape) for t in in_types]
    return infer


def broadcasting(op: str, dtype: str | None = None):
    """Rule of a binary op with NumPy broadcasting (both operands of one dtype)."""
    def infer(in_types, attrs):
        a, b = in_types
        if a.dtype != b.dtype:
            same_dtype(op, in_types)
        shape = broadcast(a.shape, b.shape, op, in_types)
        return [TensorType(shape, dtype or a.dtype)], list(in_types)
    return infer


def by_eval(op_name: str, compute, n_out: int = 1):
    """Rule that runs the NumPy kernel on zero-stride dummies (for shape-only ops).

    Only usable when every input shape is known; otherwise outputs are left unknown with
    the rank the kernel gives for ones in place of unknown dims, which is still useful.
    """
    def infer(in_types, attrs):
        known = all(t.known for t in in_types)
        dummies = [np.broadcast_to(np.zeros((), t.dtype),
                                   tuple(1 if d is None else d for d in t.shape))
                   for t in in_types]
        try:
            res = compute(dummies, attrs)
        except Exception as e:  # the kernel's complaint, re-said with the op and shapes
            fail(op_name, str(e), in_types)
        res = res if isinstance(res, tuple | list) else (res,)
        outs = [TensorType(r.shape if known else (None,) * r.ndim, r.dtype.name) for r in res]
        return outs, list(in_types)
    return infer


def normalize_axis(axis: int, ndim: int, op: str, in_types=()) -> int:
    """Axis in [0, ndim), accepting negative axes."""
    if not -ndim <= axis < max(ndim, 1):
        fail(op, f"axis {axis} is out of range for rank {ndim}", in_types)
    return axis % max(ndim, 1)


def kernel_axis(axis: int, x: np.ndarray, op: str) -> int:
    """``axis`` of array ``x`` in [0, ndim), for a NumPy kernel: eager calls run kernels
    without the rule, so one out of range raises the rule's error here, never wraps."""
    nd = x.ndim
    if -nd <= axis < nd:
        return axis % nd
    return normalize_axis(axis, nd, op, [TensorType(x.shape, x.dtype.name)])


def refine_vector(t: TensorType, n: Dim, op: str, in_types=()) -> TensorType:
    """``t`` (a 1-D parameter such as a bias or gamma) refined to shape ``(n,)``."""
    if t.shape is not None and t.ndim not in (0, 1):
        fail(op, f"expected a 1-D parameter of size {n}, got rank {t.ndim}", in_types)
    have = t.shape[0] if t.shape else None
    return t.with_shape((unify_dim(have, n, op, in_types),))
