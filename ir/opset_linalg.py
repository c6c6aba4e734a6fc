"""Linear algebra ops: ``dot`` and ``batch_dot`` (MXNet's semantics).

MXNet's ``dot`` of N-D arrays is a matrix product of 2-D views (src/operator/tensor/dot-inl.h,
``DotShape``): ``a`` is seen as ``(prod(a.shape[:-1]), a.shape[-1])``, or with ``transpose_a``
as ``(a.shape[0], prod(a.shape[1:]))`` transposed; ``b`` likewise with its first axis (last
with ``transpose_b``) contracted. The output keeps the remaining dims in order; 1-D with 1-D
gives shape ``(1,)``. Gradients are dots of the same kind, so they differentiate again.
"""
from __future__ import annotations

import math

import numpy as np

from .ops import OpKind, defop
from .shape_rules import fail, same_dtype, unify_dim
from .types import TensorType

_T = {"transpose_a": False, "transpose_b": False, "forward_stype": None}


def _dot_split(shape, trans, left: bool):
    """(kept dims, contracted size) of one operand of ``dot``."""
    if len(shape) == 1:
        return (), shape[0]
    if left != trans:   # a without transpose, or b with it: last axis contracted
        return tuple(shape[:-1]), shape[-1]
    return tuple(shape[1:]), shape[0]


def _dot_2d(x, trans, left: bool):
    """The 2-D matrix (already transposed) that ``x`` stands for in ``dot``."""
    if x.ndim == 1:
        return x.reshape(1, -1) if left else x.reshape(-1, 1)
    if left != trans:  # sizes spelt out: -1 is ambiguous when a dim is 0
        m = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])
    else:
        m = x.reshape(x.shape[0], math.prod(x.shape[1:]))
    return m.T if trans else m


def _dot(ins, at):
    a, b = ins
    if a.ndim == 1 and b.ndim == 1:
        if at["transpose_a"] or at["transpose_b"]:
            raise ValueError("Cannot transpose vectors")
        return np.asarray(np.dot(a, b), dtype=a.dtype).reshape(1)
    ka, _ = _dot_split(a.shape, at["transpose_a"], True)
    kb, _ = _dot_split(b.shape, at["transpose_b"], False)
    out = _dot_2d(a, at["transpose_a"], True) @ _dot_2d(b, at["transpose_b"], False)
    return np.ascontiguousarray(out.reshape(ka + kb)).astype(a.dtype, copy=False)


def _dot_infer(in_types, at):
    a, b = in_types
    same_dtype("dot", in_types)
    if a.ndim == 0 or b.ndim == 0:
        fail("dot", "scalar tensor is not supported", in_types)
    if a.ndim == 1 and b.ndim == 1:
        if at["transpose_a"] or at["transpose_b"]:
            fail("dot", "cannot transpose vectors", in_types)
        k = unify_dim(a.shape[0], b.shape[0], "dot", in_types)
        return [TensorType((1,), a.dtype)], [a.with_shape((k,)), b.with_shape((k,))]
    ka, na = _dot_split(a.shape, at["transpose_a"], True)
    kb, nb = _dot_split(b.shape, at["transpose_b"], False)
    k = unify_dim(na, nb, "dot", in_types)   # always one axis each (DotShape)
    sa, sb = list(a.shape), list(b.shape)
    sa[0 if at["transpose_a"] else -1] = k
    sb[-1 if at["transpose_b"] else 0] = k
    refined = [a.with_shape(sa), b.with_shape(sb)]
    return [TensorType(ka + kb, a.dtype)], refined


def _mat2(F, x, trans, left: bool):
    """``x`` as the 2-D (untransposed) matrix ``dot`` sees, built with ops."""
    if x.ndim == 2:
        return x
    if x.ndim == 1:
        return F.reshape(x, shape=(1, -1) if left != trans else (-1, 1))
    if left != trans:
        return F.reshape(x, shape=(-1, x.shape[-1]))
    return F.reshape(x, shape=(x.shape[0], -1))


def _matmul_grads(F, mm, a, b, g, ta, tb):
    """Gradients of ``mm(a, b, ta, tb)`` for 2-D (or batched) matrices (the classic table)."""
    if not ta and not tb:
        return mm(g, b, False, True), mm(a, g, True, False)
    if ta and not tb:
        return mm(b, g, False, True), mm(a, g, False, False)
    if not ta and tb:
        return mm(g, b, False, False), mm(g, a, True, False)
    return mm(b, g, True, True), mm(g, a, True, True)


def _dot_grad(F, ins, outs, ograds, at):
    a, b = ins
    ta, tb = at["transpose_a"], at["transpose_b"]

    def mm(x, y, tx, ty):
        return F.dot(x, y, transpose_a=tx, transpose_b=ty)

    if a.ndim == 2 and b.ndim == 2:
        da, db = _matmul_grads(F, mm, a, b, ograds[0], ta, tb)
        return [da, db]
    a2, b2 = _mat2(F, a, ta, True), _mat2(F, b, tb, False)
    rows = a2.shape[1] if ta else a2.shape[0]
    cols = b2.shape[0] if tb else b2.shape[1]
    g2 = F.reshape(ograds[0], shape=(rows, cols))
    da, db = _matmul_grads(F, mm, a2, b2, g2, ta, tb)
    return [F.reshape(da, shape=a.shape), F.reshape(db, shape=b.shape)]


defop("dot", OpKind.OUT_EWISE, _dot, _dot_infer, inputs=("lhs", "rhs"), attrs=dict(_T),
      grad=_dot_grad, mxnet_name="dot",
      doc="Dot product (MXNet ``dot``): N-D arrays are multiplied as 2-D views.")


# ---- batch_dot ---------------------------------------------------------------------------
def _bt(x, t):
    return np.swapaxes(x, -1, -2) if t else x


def _batch_dot(ins, at):
    a, b = ins
    if a.ndim < 3 or a.ndim != b.ndim:
        raise ValueError("batch_dot only supports N-D x N-D arrays (N >= 3)")
    out = np.matmul(_bt(a, at["transpose_a"]), _bt(b, at["transpose_b"]))
    return out.astype(a.dtype, copy=False)


def _batch_dot_infer(in_types, at):
    a, b = in_types
    op = "batch_dot"
    same_dtype(op, in_types)
    if a.ndim < 3 or a.ndim != b.ndim:
        fail(op, "only N-D x N-D arrays (N >= 3) are supported", in_types)
    ta, tb = at["transpose_a"], at["transpose_b"]
    m, ka = (a.shape[-1], a.shape[-2]) if ta else (a.shape[-2], a.shape[-1])
    n, kb = (b.shape[-2], b.shape[-1]) if tb else (b.shape[-1], b.shape[-2])
    if ka is None or kb is None:
        # MXNet's BatchDotShape infers nothing (not even the output's rank) before both
        # contracted dims are known, and never fills one operand's dims from the other's
        return [TensorType(None, a.dtype)], list(in_types)
    unify_dim(ka, kb, op, in_types)
    # MXNet requires equal batch dims here: a known one may fill the other's unknown one
    batch = tuple(unify_dim(x, y, op, in_types) for x, y in zip(a.shape[:-2], b.shape[:-2]))
    return [TensorType(batch + (m, n), a.dtype)], [a.with_shape(batch + a.shape[-2:]),
                                                  b.with_shape(batch + b.shape[-2:])]


def _batch_dot_grad(F, ins, outs, ograds, at):
    def mm(x, y, tx, ty):
        return F.batch_dot(x, y, transpose_a=tx, transpose_b=ty)

    da, db = _matmul_grads(F, mm, ins[0], ins[1], ograds[0], at["transpose_a"],
                           at["transpose_b"])
    return [da, db]


defop("batch_dot", OpKind.OUT_EWISE, _batch_dot, _batch_dot_infer, inputs=("lhs", "rhs"),
      attrs=dict(_T), grad=_batch_dot_grad, mxnet_name="batch_dot",
      doc="Batched matrix product over the leading axes of two N-D arrays (N >= 3).")
