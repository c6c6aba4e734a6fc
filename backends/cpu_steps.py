"""Steps of the CPU backend for single ops other than elementwise chains and GEMMs.

A mixin of ``cpu._Program``: each method takes a node and either emits its step into the
run loop (returning True) or declines, leaving the node to the next rule or to the NumPy
fallback. Reductions and softmax view their operand as (P, R, Q) with the reduced axis in
the middle; ``pick``/``pick_backward`` likewise; reshape-like ops copy a view of their input
into the output's buffer; ``full`` fills it.
"""
from __future__ import annotations

import numpy as np

from ember.ir.graph import Node

from . import codegen
from .cpu_kernels import pick_source, reduce_mid_source, reduce_source, softmax_source
from .cpu_split import SPLIT_MIN, run_split, split_kernel, threads
from .cpu_tiered import deferred_call
from .plan import float_known, pick_layout, reduce_layout, softmax_plan

CONCAT_SPLIT_BYTES = 1 << 20
CONCAT_STEPS = True

PARALLEL_MIN = 1 << 17  # elements below which thread start-up costs more than it saves
_REDUCE_OPS = ("sum", "mean", "max", "min", "sum_like")
_RESHAPES = ("reshape", "reshape_like", "flatten", "expand_dims", "squeeze")
_KERNELS: dict[str, object] = {}


def kernel(source: str):
    """The ``kernel`` function of generated ``source`` (loaded once per process)."""
    fn = _KERNELS.get(source)
    if fn is None:
        fn = _KERNELS[source] = codegen.load_module(source, "cpu").kernel
    return fn


def split(source: str, min_size: int = 0):
    """:func:`kernel` of ``source``, its ``prange`` loop (if any) run by
    :mod:`ember.backends.cpu_split` as a serial kernel over parts of the range (in the
    caller alone below ``min_size`` elements)."""
    return split_kernel(source, kernel, min_size)   # the serial kernel loads once (kernel)


def split_one_pass(source: str):
    """:func:`split` for one-pass kernels (elementwise, GEMM epilogues): split from
    ``cpu_split.SPLIT_MIN`` elements on."""
    return split_kernel(source, kernel, SPLIT_MIN)


def _deferred_reduce(src: str, kind: str, mid: bool, x, y):
    """The reduction kernel of ``src``; a sum or mean runs NumPy until it is compiled
    (``cpu_tiered.deferred_call``): a cold first step compiled a kernel (0.3-0.5 s of numba,
    the last of ResNet-18's precompile) for a dense layer's bias gradient, a sum over 16
    rows. NumPy adds in the kernel's order, so the numbers are the same: float64 sums over
    the reduced rows one after another (``np.add.reduce`` over a middle axis, ``cumsum``
    where the reduced axis is the last), rounded to the output, then a mean's division in
    the output's dtype. Max and min compile as before (NumPy's vectorised reductions may
    pick the other of two signed zeros)."""
    fn = split(src)
    if kind not in ("sum", "mean"):
        return fn
    xd, yd = np.dtype(x.type.dtype), np.dtype(y.type.dtype)

    def in_order(a, axis):   # 0.0 + the rows along ``axis`` one after another, in float64
        if a.shape[axis] == 0 or a.ndim - 1 != axis:
            return np.add.reduce(a, axis=axis, dtype=np.float64, initial=0.0)
        return np.cumsum(a, axis=axis, dtype=np.float64)[..., -1] + 0.0   # (-0.0 -> 0.0)

    def fallback(a, out):
        if mid:   # (A, C, B) -> (C,): per channel over A, then over B
            s, n = in_order(in_order(a, 0), 1), a.shape[0] * a.shape[2]
        else:     # (P, R, Q) -> (P, Q)
            s, n = (in_order(a[:, :, 0], 1)[:, None] if a.shape[2] == 1 else
                    in_order(a, 1)), a.shape[1]
        np.copyto(out, s, casting="unsafe")
        if kind == "mean":
            out /= n
    example = (np.zeros((0,) * 3, xd), np.zeros((0,) * (1 if mid else 2), yd))
    return deferred_call(fn, fallback, example, src)


class OpSteps:
    """Single-op steps (a mixin: needs ``b``, ``views``, ``report``, ``_arg``, ``_buf``,
    ``_kernel_step``)."""

    def _op_step(self, node: Node) -> bool:
        """Emit the step of a plain node by one of the rules below; False if none fits."""
        return self._reduce(node) or self._softmax(node) or self._batch_dot(node) or \
            self._pick(node) or self._reshape(node) or self._full(node) or self._concat(node)

    def _concat(self, node: Node) -> bool:
        """``concat``: each input copied straight into its slice of the output, the rows
        before the axis split over the pool's threads from ``CONCAT_SPLIT_BYTES`` (the op's
        kernel made a new array by ``np.concatenate``, then the step copied it into the
        arena: DenseNet-121's 58 concatenations took ~200 ms of a 16-image inference)."""
        if node.op.name != "concat" or len(node.inputs) < 2 or len(node.outputs) != 1 or \
                not CONCAT_STEPS:
            return False
        y = node.outputs[0]
        values = [*node.inputs, y]
        if not all(v.type.known for v in values) or len({v.type.dtype for v in values}) != 1 \
                or any(id(v) in getattr(self, "aliasing", ()) for v in node.inputs):
            return False
        shape = y.type.shape
        ax = node.attr_dict["dim"] % len(shape)
        rows, cols = int(np.prod(shape[:ax])), int(np.prod(shape[ax + 1:]))
        sizes = [v.type.shape[ax] for v in node.inputs]
        views = [(rows, c, cols) for c in sizes]
        starts = np.cumsum([0, *sizes]).tolist()
        parts = 2 if rows >= 2 and y.type.nbytes >= CONCAT_SPLIT_BYTES else 1

        def rows_of(args, lo, hi):
            *xs, out = args
            for x, a, b in zip(xs, starts, starts[1:]):
                out[lo:hi, a:b] = x[lo:hi]

        def concat(*args):
            n = threads() if parts > 1 else 1
            if n > 1:
                run_split(rows_of, (args,), rows, n)
            else:
                rows_of(args, 0, rows)
        self._kernel_step(concat, [self._arg(v, s) for v, s in zip(node.inputs, views)],
                          [y], (rows, shape[ax], cols))
        self.report["concat"] += 1
        return True

    def _reduce(self, node: Node) -> bool:
        name = node.op.name
        if name not in _REDUCE_OPS or not float_known([node.inputs[0], node.outputs[0]]):
            return False
        x = node.inputs[0]
        ppp, mid = reduce_layout(node)
        if ppp is None:  # (one reduced run, or all but one kept run: R == 1 when none)
            return False
        kind = "sum" if name == "sum_like" else name
        if mid:   # (A, C, B) -> (C,)
            if x.type.size == 0 and kind != "sum":
                return False
            src = reduce_mid_source(kind, ppp[1] >= 2 and x.type.size >= PARALLEL_MIN)
            self._kernel_step(_deferred_reduce(src, kind, True, x, node.outputs[0]),
                              [self._arg(x, ppp)], node.outputs, (ppp[1],))
            self.report["reduce"] += 1
            return True
        if ppp[1] == 1 and name in ("max", "min") and x.type.size == 0:
            return False
        if ppp[1] == 0 and name in ("max", "min", "mean"):
            return False
        src = reduce_source(kind, ppp[0] >= 2 and x.type.size >= PARALLEL_MIN)
        self._kernel_step(_deferred_reduce(src, kind, False, x, node.outputs[0]),
                          [self._arg(x, ppp)], node.outputs, (ppp[0], ppp[2]))
        self.report["reduce"] += 1
        return True

    def _softmax(self, node: Node) -> bool:
        plan = softmax_plan(node)
        if plan is None:
            return False
        (ppp, log, scale), x, y = plan, node.inputs[0], node.outputs[0]
        src = softmax_source(log, ppp[0] >= 2 and x.type.size >= PARALLEL_MIN,
                             x.type.dtype == "float32")
        self._kernel_step(split(src), [self._arg(x, ppp), repr(float(scale))], [y], ppp)
        self.report["softmax"] += 1
        return True

    def _batch_dot(self, node: Node) -> bool:
        if node.op.name != "batch_dot" or not float_known([*node.inputs, *node.outputs]):
            return False
        at = node.attr_dict
        ta, tb = at["transpose_a"], at["transpose_b"]

        def mm(a, b, out):
            np.matmul(np.swapaxes(a, -1, -2) if ta else a, np.swapaxes(b, -1, -2) if tb else b,
                      out=out)
        self._kernel_step(mm, [self._arg(v) for v in node.inputs], node.outputs)
        self.report["batch_dot"] += 1
        return True


    def _pick(self, node: Node) -> bool:
        name, at, layout = node.op.name, node.attr_dict, pick_layout(node)
        if layout is None:
            return False
        (data, ppp), idx = layout, node.inputs[1]
        src = pick_source(at["mode"], name == "pick_backward")
        pq = (ppp[0], ppp[2])
        if name == "pick":
            args = [self._arg(data, ppp), self._arg(idx, pq)]
            self._kernel_step(kernel(src), args, node.outputs, pq)
        else:
            args = [self._arg(node.inputs[0], pq), self._arg(idx, pq)]
            self._kernel_step(kernel(src), args, node.outputs, ppp)
        self.report[name] += 1
        return True

    def _reshape(self, node: Node) -> bool:
        """A reshape-like op: its input's elements in order, copied into its own buffer
        (a view would outlive the input's arena slot, which the planner may reuse)."""
        if node.op.name not in _RESHAPES or not node.inputs[0].type.known:
            return False
        x, y = node.inputs[0], node.outputs[0]
        if not y.type.known or x.type.size != y.type.size or x.type.dtype != y.type.dtype:
            return False
        out = self._buf(y)
        self.b.emit(f"copyto({out}, {self._arg(x)}.reshape({self.b.shape(y.type.shape)}))")
        self.report["reshape"] += 1
        return True

    def _full(self, node: Node) -> bool:
        if node.op.name not in ("full", "zeros", "ones") or not node.outputs[0].type.known:
            return False
        value = {"zeros": 0, "ones": 1}.get(node.op.name, node.attr_dict.get("value"))
        if not isinstance(value, int | float):
            return False
        out = self._buf(node.outputs[0])
        self.b.emit(f"{out}.fill({self.b.constant(value, 'c')})")
        self.report["fill"] += 1
        return True
