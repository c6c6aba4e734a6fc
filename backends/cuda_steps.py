"""Steps of the CUDA backend for single ops other than elementwise chains and 2-D GEMMs.

A mixin of ``cuda._Program`` mirroring ``cpu_steps.OpSteps``: each method takes a node and
either emits its launch into the ``steps`` function (returning True) or declines, leaving the
node to the next rule or to the host round trip. Reductions, softmax and pick view their
operand as (P, R, Q) with the axis in the middle; reshape-like ops copy their input's
elements into the output's buffer; ``full`` fills it; ``batch_dot`` is a batched GEMM;
optimizer updates are ``cuda_optim``'s kernels.
"""
from __future__ import annotations

import math

import numpy as np

from ember.ir.graph import Node

from .cuda_blas import gemm_fn
from .cuda_kernels import (
    copy_source,
    fill_source,
    kernel,
    launch_dims,
    pick_source,
    reduce_source,
    softmax_source,
)
from .cuda_optim import update_calls
from .plan import float_known, pick_layout, reduce_layout, softmax_plan

_REDUCE_OPS = ("sum", "mean", "max", "min", "sum_like")
_RESHAPES = ("reshape", "reshape_like", "flatten", "expand_dims", "squeeze")
BLOCKWISE_BELOW = 4096  # outputs below which a reduction takes one block per output


class CudaSteps:
    """Single-op steps (a mixin: needs ``b``, ``sim``, ``stream``, ``report``, ``_arg``,
    ``_buf``, ``_launch``, ``_kernel_step``)."""

    def _op_step(self, node: Node) -> bool:
        """Emit the step of a plain node by one of the rules below; False if none fits."""
        return self._reduce(node) or self._softmax(node) or self._batch_dot(node) or \
            self._pick(node) or self._reshape(node) or self._full(node) or \
            self._update(node)

    def _flat(self, v) -> str:
        """``v`` viewed as 1-D."""
        return self.b.expr(v, (v.type.size,))

    def _copy_launcher(self):
        """``n -> configured copy kernel`` over ``n`` elements on the stream."""
        k = kernel(copy_source())
        return lambda n: k[(*launch_dims(n, self.sim), self.stream)]

    def _reduce(self, node: Node) -> bool:
        name = node.op.name
        if name not in _REDUCE_OPS or not float_known([node.inputs[0], node.outputs[0]]):
            return False
        x, y = node.inputs[0], node.outputs[0]
        ppp, mid = reduce_layout(node)
        if ppp is None or x.type.size == 0 or y.type.size == 0:
            return False
        n_out = ppp[1] if mid else ppp[0] * ppp[2]
        blockwise = mid or n_out < BLOCKWISE_BELOW and ppp[1] > 1
        threads = 32 if self.sim else 256
        kind = "sum" if name == "sum_like" else name
        src = reduce_source(kind, blockwise, threads, y.type.dtype, self.sim, mid)
        if blockwise:
            blocks = min(n_out, 1 if self.sim else 65535)
            launch = self.b.constant(kernel(src)[blocks, threads, self.stream], "k")
            self._buf(y)
            out = self.b.expr(y, (n_out,) if mid else (ppp[0], ppp[2]))
            self.b.emit(f"{launch}({self._arg(x, ppp)}, {out})")
        else:
            self._kernel_step(src, n_out, [self._arg(x, ppp)], [y], (ppp[0], ppp[2]))
        self.report["reduce"] += 1
        return True

    def _softmax(self, node: Node) -> bool:
        plan = softmax_plan(node)
        if plan is None:
            return False
        (ppp, log, scale), x, y = plan, node.inputs[0], node.outputs[0]
        self._kernel_step(softmax_source(log, self.sim), ppp[0] * ppp[2],
                          [self._arg(x, ppp), repr(float(scale))], [y], ppp)
        self.report["softmax"] += 1
        return True

    def _batch_dot(self, node: Node) -> bool:
        if node.op.name != "batch_dot" or not float_known([*node.inputs, *node.outputs]):
            return False
        a, b, y = node.inputs[0], node.inputs[1], node.outputs[0]
        if a.type.ndim < 3 or a.type.ndim != b.type.ndim or a.type.dtype != b.type.dtype \
                or a.type.shape[:-2] != b.type.shape[:-2] or a.type.size == 0 \
                or b.type.size == 0:
            return False
        z = math.prod(a.type.shape[:-2])
        at = node.attr_dict
        fn, how = gemm_fn(at["transpose_a"], at["transpose_b"], y.type.dtype, self.stream,
                          self.sim)
        self._buf(y)
        args = [self._arg(v, (z, *v.type.shape[-2:])) for v in (a, b, y)]
        self.b.emit(f"{self.b.constant(fn, 'g')}({', '.join(args)})")
        self.report[f"batch_dot[{how}]"] += 1
        return True

    def _pick(self, node: Node) -> bool:
        name, at, layout = node.op.name, node.attr_dict, pick_layout(node)
        if layout is None:
            return False
        (data, ppp), idx = layout, node.inputs[1]
        pq = (ppp[0], ppp[2])
        src = pick_source(at["mode"], name == "pick_backward")
        if name == "pick":
            self._kernel_step(src, pq[0] * pq[1], [self._arg(data, ppp), self._arg(idx, pq)],
                              node.outputs, pq)
        else:
            y = node.outputs[0]
            self._buf(y)
            fill = self._launch(fill_source(), y.type.size)
            self.b.emit(f"{fill}({self._flat(y)}, {self._zero(y.type.dtype)})")
            self._kernel_step(src, pq[0] * pq[1],
                              [self._arg(node.inputs[0], pq), self._arg(idx, pq)], [y], ppp)
        self.report[name] += 1
        return True

    def _zero(self, dtype: str, value=0) -> str:
        """A global name for ``value`` as a scalar of ``dtype``."""
        return self.b.constant(np.dtype(dtype).type(value), "c")

    def _reshape(self, node: Node) -> bool:
        """A reshape-like op: its input's elements in order, copied into its own buffer
        (a view would outlive the input's arena slot, which the planner may reuse)."""
        if node.op.name not in _RESHAPES or not node.inputs[0].type.known:
            return False
        x, y = node.inputs[0], node.outputs[0]
        if not y.type.known or x.type.size != y.type.size or x.type.dtype != y.type.dtype:
            return False
        self._buf(y)
        if y.type.size:
            launch = self.b.constant(self._copy_launcher()(y.type.size), "k")
            self.b.emit(f"{launch}({self._flat(x)}, {self._flat(y)})")
        self.report["reshape"] += 1
        return True

    def _full(self, node: Node) -> bool:
        if node.op.name not in ("full", "zeros", "ones") or not node.outputs[0].type.known:
            return False
        y = node.outputs[0]
        value = {"zeros": 0, "ones": 1}.get(node.op.name, node.attr_dict.get("value"))
        if not isinstance(value, int | float) or y.type.dtype == "bool":
            return False
        self._buf(y)
        if y.type.size:
            self.b.emit(f"{self._launch(fill_source(), y.type.size)}({self._flat(y)}, "
                        f"{self._zero(y.type.dtype, value)})")
        self.report["fill"] += 1
        return True

    def _update(self, node: Node) -> bool:
        """An optimizer update: one kernel per weight updating its states in place."""
        at, n_out = node.attr_dict, len(node.outputs)
        ins, fed = node.inputs, ()  # the per-step scalars' input, read by the kernels
        if at.get("hyper"):
            ins, fed = ins[:-1], (ins[-1],)
        if not float_known([*node.inputs, *node.outputs]):
            return False
        dtypes = {v.type.dtype for v in (*ins, *node.outputs)}
        if len(dtypes) != 1:
            return False
        stride = len(ins) // n_out
        sizes = [node.outputs[k].type.size for k in range(n_out)]
        calls = update_calls(node.op.name, at, dtypes.pop(), sizes, self.stream, self.sim)
        if calls is None:
            return False
        for k, (launch, _, scalars) in enumerate(calls):
            group = ins[k * stride:(k + 1) * stride]
            self._buf(node.outputs[k])
            arrays = [self._flat(v) for v in (*group, node.outputs[k], *fed)]
            if sizes[k]:
                sc = [self.b.constant(s, "c") for s in scalars]
                self.b.emit(f"{self.b.constant(launch, 'k')}({', '.join(arrays + sc)})")
        self.report[f"update:{node.op.name}"] += 1
        return True
