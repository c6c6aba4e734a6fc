"""Backend-independent planning shared by the CPU and CUDA backends.

Pure functions over IR nodes and values that return plain data (layouts, broadcast flags,
shapes, which values are leaves); each backend turns the plan into its own kernels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from ember.ir.graph import Node, Value
from ember.ir.opset_reduce import reduced_axes

from . import codegen


def float_known(values) -> bool:
    """Whether every value has a known shape and a float dtype the kernels handle."""
    return all(v.type.known and v.type.dtype in codegen.FLOAT_DTYPES for v in values)


def broadcast_layout(out_shape: tuple, in_shapes: Sequence[tuple]):
    """Collapse the iteration space of a broadcast: ``(shape, in_reshapes, in_flags)``.

    Dims of size 1 drop out; adjacent dims merge when every input broadcasts both or
    neither (NumPy's iterator coalescing). Each input is then viewed with the collapsed rank,
    1 on its broadcast dims (``flags``). None when an input does not broadcast to the shape.
    """
    n = len(out_shape)
    aligned = []
    for s in in_shapes:
        if len(s) > n:
            return None
        s = (1,) * (n - len(s)) + tuple(s)
        if any(d != o and d != 1 for d, o in zip(s, out_shape)):
            return None
        aligned.append(s)
    dims: list[int] = []
    flags: list[list[bool]] = [[] for _ in in_shapes]
    for d, size in enumerate(out_shape):
        if size == 1:
            continue
        bits = [s[d] == 1 for s in aligned]
        if dims and all(f[-1] == b for f, b in zip(flags, bits)):
            dims[-1] *= size
        else:
            dims.append(size)
            for f, b in zip(flags, bits):
                f.append(b)
    if not dims:
        dims, flags = [1], [[False] for _ in in_shapes]
    reshapes = [tuple(1 if b else d for d, b in zip(dims, f)) for f in flags]
    return tuple(dims), reshapes, flags


def chain_io(nodes: Sequence[Node], outputs: Sequence[Value], exclude=()):
    """Leaves (values read but not computed by ``nodes``) or None if an output is a leaf."""
    made = {id(o) for n in nodes for o in n.outputs} | {id(v) for v in exclude}
    if any(id(v) not in made for v in outputs):
        return None
    leaves: list[Value] = []
    for n in nodes:
        for v in n.inputs[:codegen.n_scalar_args(n)]:
            if id(v) not in made and all(v is not x for x in leaves):
                leaves.append(v)
    return leaves


def ewise_plan(nodes: Sequence[Node], outputs: Sequence[Value]):
    """Plan an elementwise chain ``nodes`` as one loop: ``(leaves, dims, reshapes, flags)``
    (``broadcast_layout`` of the leaves over the outputs' shape), or None."""
    if not all(codegen.is_scalar_node(n) for n in nodes):
        return None
    leaves = chain_io(nodes, outputs)
    if leaves is None or not float_known(leaves):
        return None
    shape = outputs[0].type.shape
    if any(v.type.shape != shape for v in outputs):
        return None
    layout = broadcast_layout(shape, [v.type.shape for v in leaves])
    if layout is None:
        return None
    return (leaves, *layout)


def epilogue_leaves(master: Node, epilogue: Sequence[Node],
                    outputs: Sequence[Value]) -> list[Value] | None:
    """The leaves of the elementwise ``epilogue`` after ``master`` (a GEMM or convolution),
    or None when one is not a known float or the epilogue computes one of the master's
    inputs (the master runs first)."""
    leaves = chain_io(epilogue, outputs, exclude=[master.outputs[0]])
    if leaves is None or not float_known(leaves):
        return None
    made = {id(o) for n in epilogue for o in n.outputs}
    if any(id(v) in made for v in master.inputs):
        return None
    return leaves


def master_first(outputs: Sequence[Value], mv: Value) -> list[int]:
    """The order of ``outputs`` that puts the master's output ``mv`` first (the epilogue
    kernels write ``outputs[0]`` in place over the master's result)."""
    m = next((j for j, v in enumerate(outputs) if v is mv), 0)
    return [m] + [j for j in range(len(outputs)) if j != m]


class GemmPlan(NamedTuple):
    """A fully_connected/dot master with an elementwise epilogue over its (rows, cols)
    matrix ``mat``: leaf ``flags`` (broadcast over rows, over cols) and ``reshapes``."""

    master: Node
    epilogue: list[Node]
    a_shape: tuple
    ta: bool
    tb: bool
    bias: bool
    leaves: list[Value]
    mat: tuple[int, int]
    flags: list[tuple[bool, bool]]
    reshapes: list[tuple]


def gemm_plan(node: Node, nodes: Sequence[Node], outputs: Sequence[Value],
              nonempty: bool = False) -> GemmPlan | None:
    """Plan a fused group ``nodes`` (of ``node``) as one GEMM plus an epilogue, or None.

    ``nonempty``: also refuse zero-size operands (a BLAS call that cannot take them)."""
    k = node.attr_dict.get("master", 0) if node.body is not None else 0
    k = k if isinstance(k, int) and 0 <= k < len(nodes) else 0
    master, epilogue = nodes[k], [n for n in nodes if n is not nodes[k]]
    name, at = master.op.name, master.attr_dict
    if name not in ("fully_connected", "dot") or master.body is not None:
        return None
    if not all(codegen.is_scalar_node(n) for n in epilogue):
        return None
    mv = master.outputs[0]
    if not float_known([*master.inputs, mv, *outputs]):
        return None
    if len({v.type.dtype for v in (*master.inputs, mv)}) != 1:
        return None
    shape = mv.type.shape
    if name == "fully_connected":
        x = master.inputs[0]
        rows = math.prod(shape[:-1])
        if rows == 0 or nonempty and x.type.size == 0:
            return None
        a_shape, ta, tb, bias = (rows, x.type.size // rows), False, True, not at["no_bias"]
        if bias and master.inputs[2].type.shape != (shape[-1],):
            return None
    else:
        a, b = master.inputs
        if a.type.ndim != 2 or b.type.ndim != 2:
            return None
        if nonempty and (a.type.size == 0 or b.type.size == 0):
            return None
        a_shape, ta, tb, bias = a.type.shape, at["transpose_a"], at["transpose_b"], False
    if any(v.type.shape != shape for v in outputs):
        return None
    leaves = epilogue_leaves(master, epilogue, outputs)
    if leaves is None:
        return None
    mat = (math.prod(shape[:-1]), shape[-1])
    flags, reshapes = [], []
    for v in leaves:
        s = (1,) * (len(shape) - len(v.type.shape)) + tuple(v.type.shape)
        rows_b = all(d == 1 for d in s[:-1])
        if not rows_b and s[:-1] != shape[:-1] or s[-1] not in (1, shape[-1]):
            return None
        fl = (rows_b and mat[0] != 1, s[-1] == 1 and mat[1] != 1)
        flags.append(fl)
        reshapes.append(tuple(1 if f else d for f, d in zip(fl, mat)))
    return GemmPlan(master, epilogue, a_shape, ta, tb, bias, leaves, mat, flags, reshapes)


def axis_runs(shape: tuple, axis: int) -> tuple[int, int, int]:
    """``(P, R, Q)``: ``shape`` viewed as the dims before ``axis``, ``axis``, the dims after."""
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


def reduce_runs(shape: tuple, axes: set) -> tuple[tuple[int, int, int] | None, bool]:
    """``((P, R, Q), False)`` of a reduction over ``axes`` when the reduced dims (size-1 dims
    dropped) form one run R; ``((P, C, Q), True)`` when they are all but one run C; else
    ``(None, False)``. R is never 1 when a dim is reduced (size-1 dims drop out)."""
    runs: list[list] = []
    for d, size in enumerate(shape):
        if size == 1:
            continue
        red = d in axes
        if runs and runs[-1][0] == red:
            runs[-1][1] *= size
        else:
            runs.append([red, size])
    reds = [r for r in runs if r[0]]
    if len(runs) == 3 and [r[0] for r in runs] == [True, False, True]:
        return (runs[0][1], runs[1][1], runs[2][1]), True
    if len(reds) > 1:
        return None, False
    if not reds:
        return (math.prod(shape), 1, 1), False
    i = runs.index(reds[0])
    return (math.prod(r[1] for r in runs[:i]), reds[0][1],
            math.prod(r[1] for r in runs[i + 1:])), False


def reduce_layout(node: Node) -> tuple[tuple[int, int, int] | None, bool]:
    """``reduce_runs`` of a reduction node (``sum_like``: the dims its second input has as
    1 or lacks; else the op's ``axis``/``exclude``) over its input's shape."""
    shape, at = node.inputs[0].type.shape, node.attr_dict
    if node.op.name == "sum_like":
        like = node.inputs[1].type.shape
        lead = len(shape) - len(like)
        axes = set(range(lead)) | {i + lead for i, d in enumerate(like) if d == 1}
    else:
        axes = set(reduced_axes(len(shape), at["axis"], at.get("exclude", False)))
    return reduce_runs(shape, axes)


_SOFTMAX = {"softmax": (1.0, False), "log_softmax": (1.0, True), "softmin": (-1.0, False)}


def softmax_plan(node: Node) -> tuple[tuple[int, int, int], bool, float] | None:
    """``((P, R, Q), log, scale)`` of a single-input softmax/log_softmax/softmin node over its
    axis (``scale``: the sign over the temperature), or None."""
    if node.op.name not in _SOFTMAX or len(node.inputs) != 1:
        return None
    x, y, at = node.inputs[0], node.outputs[0], node.attr_dict
    if not float_known([x, y]) or x.type.dtype != y.type.dtype or x.type.ndim == 0:
        return None
    sign, log = _SOFTMAX[node.op.name]
    return axis_runs(x.type.shape, at["axis"] % x.type.ndim), log, \
        sign / (at["temperature"] or 1.0)


def pick_layout(node: Node) -> tuple[Value, tuple[int, int, int]] | None:
    """``(data, (P, R, Q))`` of a pick / pick_backward node in clip or wrap mode (data: the
    array picked from, R its picked axis), or None when it does not fit the kernels."""
    name, at = node.op.name, node.attr_dict
    if name not in ("pick", "pick_backward") or at["mode"] not in ("clip", "wrap"):
        return None
    data = node.inputs[0] if name == "pick" else node.inputs[2]
    idx, vals = node.inputs[1], [node.inputs[0], node.outputs[0]]
    if data.type.ndim < 2 or not float_known(vals) or not idx.type.known \
            or not data.type.known or data.type.shape[at["axis"] % data.type.ndim] == 0:
        return None
    return data, axis_runs(data.type.shape, at["axis"] % data.type.ndim)
