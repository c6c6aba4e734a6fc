"""The numba-cuda backend: the CPU backend's program structure with kernels launched on a
device stream, over one device arena (DESIGN.md s.6; issue 14).

``compile(graph)`` turns every node into a *step*, chosen as the CPU backend chooses:
- elementwise and broadcast ops, and fused groups made only of them: one grid-stride kernel
  from the ops' scalar templates (``cuda_kernels.ewise_source``);
- ``fully_connected``, 2-D ``dot`` and ``batch_dot`` (alone or as the master of a fused
  group): a GEMM (cuBLAS on a device, a tiled kernel under the simulator: ``cuda_blas``)
  into the output buffer, then one kernel for the bias and the elementwise epilogue;
- 2-D convolution, its data and weight gradients (alone or as masters): im2col/col2im
  kernels around the same GEMM (``cuda_conv``), then the bias/epilogue kernel;
- reductions, softmax, pick/pick_backward, reshapes, fills, optimizer updates:
  ``cuda_steps``; BatchNorm and pooling, forward and backward: ``cuda_norm_pool``;
  transpose/swapaxes, concat, cast, take/embedding: ``cuda_layout``; training-mode dropout
  drawn on the device: ``cuda_random``;
- a fused group no single kernel covers: its body planned node by node;
- anything else: a host round trip (copy the inputs to the host, the op's NumPy kernel, copy
  the results and the inputs it mutates back), counted as ``fallback:<op>`` in the report
  (``EMBER_DEBUG_BACKEND=1`` prints it), exactly like the CPU backend's NumPy fallback.

The steps become one generated straight-line function ``steps(inputs, params, outputs)``
(``cpu_run.RunBuilder``) over device arrays: intermediates live in views of one device arena
allocated at compile time at the offsets ``plan_memory`` chose (``Value.mem``); values
without a planned slot get their own buffer, also allocated now. Nothing is allocated or
synchronised inside ``steps`` (but in a fallback's round trip), and every launch goes on
ember's stream of the device (``cuda_device.stream``), so ``runtime/cuda_graph.py`` can
capture it as one CUDA graph and replay it. The plain ``run(inputs, params)`` allocates the
outputs (fresh device arrays) and calls ``steps`` with the caller's arrays: parameters the
graph mutates (BatchNorm statistics, optimizer state) are updated in place on the device.
"""
from __future__ import annotations

import math
import os
import sys
import threading
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from ember.ir.errors import EmberError, fmt_shapes
from ember.ir.fused import interpret
from ember.ir.graph import Graph, Node, Value, kept_apart

from . import codegen
from . import cuda_device as cd
from .cpu_run import RunBuilder
from .cuda_blas import gemm_fn
from .cuda_conv import ConvSteps
from .cuda_depthwise import DepthwiseSteps
from .cuda_kernels import epilogue_source, ewise_source, kernel, launch_dims
from .cuda_layout import LayoutSteps
from .cuda_norm_pool import NormPoolSteps
from .cuda_random import RandomSteps
from .cuda_steps import CudaSteps
from .plan import ewise_plan, gemm_plan, master_first

__all__ = ["compile"]


class _Program(CudaSteps, ConvSteps, DepthwiseSteps, NormPoolSteps, LayoutSteps, RandomSteps):
    """Chooses a kernel per node and generates the ``steps`` function."""

    def __init__(self, graph: Graph, device_id: int = 0):
        self.graph, self.device_id = graph, device_id
        self.cuda = cd.cuda_module()
        self.sim = cd.is_simulator()
        self.stream = cd.stream(device_id)
        self.report: Counter = Counter()
        self.fallbacks = 0
        self._scratches: list = []
        b = self.b = RunBuilder(graph.name)
        keep = kept_apart(graph)   # (plan_memory's: outputs and mutated values)
        with cd.device(device_id):
            self.views = self._arena(graph, keep)
        for v in (*graph.inputs, *graph.params):
            b.bind_local(v)
        given = {id(v) for v in (*graph.inputs, *graph.params)}
        n_in = len(graph.inputs)
        names = [b.ref[id(v)] for v in (*graph.inputs, *graph.params)]
        outs = [b.fresh("out") for _ in graph.outputs]
        for ns, src in ((names[n_in:], "params"), (names[:n_in], "inputs"), (outs, "outputs")):
            if ns:
                b.emit(f"{', '.join(ns)}, = {src}")
        copies, seen = [], set()
        for v, name in zip(graph.outputs, outs):
            if id(v) in given or id(v) in seen:  # an argument or a repeat: copied at the end
                copies.append((v, name))
            else:
                b.ref[id(v)] = name
            seen.add(id(v))
        for node in graph.nodes:
            self._plan(node)
        with cd.device(device_id):
            self._bind_scratch()
        copy = None
        for v, name in copies:
            copy = copy or self._copy_launcher()
            if v.type.size:
                b.emit(f"{b.constant(copy(v.type.size), 'k')}({self._flat(v)}, "
                       f"{name}.reshape(({v.type.size},)))")
        self.steps = b.build(["inputs", "params", "outputs"], [])

    # ---- memory ------------------------------------------------------------------------
    def _arena(self, graph: Graph, keep: set) -> dict:
        """Device views at the planned offsets of node outputs (``Value.mem``), one device
        buffer per arena name, allocated now."""
        placed = [o for n in graph.nodes for o in n.outputs
                  if o.mem is not None and o.type.known and id(o) not in keep]
        ends: dict[str, int] = {}
        for v in placed:
            name, off = v.mem
            ends[name] = max(ends.get(name, 0), off + v.type.nbytes)
        try:
            bufs = {name: cd.empty((max(end, 1),), np.uint8, self.device_id)
                    for name, end in ends.items()}
        except Exception as e:  # out of device memory
            raise EmberError(f"{graph.name}: cannot allocate the compiled program's device "
                             f"arena of {sum(ends.values()):,} bytes ({type(e).__name__}: "
                             f"{e}). Use smaller shapes (batch size).") from None
        views = {}
        for v in placed:
            name, off = v.mem
            raw = bufs[name][off:off + v.type.nbytes]
            views[id(v)] = raw.view(np.dtype(v.type.dtype)).reshape(v.type.shape)
        return views

    def _buf(self, v: Value) -> str:
        """The buffer a step writes ``v`` into: its output slot, arena view, or a buffer of
        its own allocated now (never during a run)."""
        b = self.b
        if id(v) not in b.ref:
            view = self.views.get(id(v))
            if view is None:
                view = self.views[id(v)] = cd.empty(v.type.shape, v.type.dtype, self.device_id)
            b.bind_const(v, view)
        return b.ref[id(v)]

    def _arg(self, v: Value, shape: tuple | None = None) -> str:
        return self.b.expr(v, shape)

    def _launch(self, source: str, n: int) -> str:
        """A global name for ``source``'s kernel configured for ``n`` items on the stream."""
        blocks, threads = launch_dims(n, self.sim)
        return self.b.constant(kernel(source)[blocks, threads, self.stream], "k")

    def _kernel_step(self, source: str, n: int, args: list[str], outs: Sequence[Value],
                     out_shape: tuple | None = None) -> None:
        """A step launching ``source``'s kernel over ``n`` items with ``args`` then ``outs``
        (viewed as ``out_shape``)."""
        for v in outs:
            self._buf(v)
        views = [self.b.expr(v, out_shape) for v in outs]
        self.b.emit(f"{self._launch(source, n)}({', '.join([*args, *views])})")

    # ---- choosing a kernel per node ----------------------------------------------------
    def _plan(self, node: Node) -> None:
        body = node.body
        if body is not None:
            sub = dict(zip([id(v) for v in (*body.inputs, *body.params)], node.inputs))
            outer = dict(zip([id(v) for v in body.outputs], node.outputs))
            if self._ewise(body.nodes, body.outputs, sub, outer) or \
                    self._gemm(node, body.nodes, body.outputs, sub, outer) or \
                    self._conv(node, body.nodes, body.outputs, sub, outer) or \
                    self._inline(node):
                return
        elif codegen.is_scalar_node(node):
            if self._ewise([node], node.outputs, {}, {}):
                return
        elif self._gemm(node, [node], node.outputs, {}, {}) or \
                self._conv(node, [node], node.outputs, {}, {}) or self._op_step(node) or \
                self._norm_pool(node) or self._layout(node) or self._dropout_train(node):
            return
        self._fallback(node)

    def _inline(self, node: Node) -> bool:
        """Plan the body of a group no single kernel covers node by node, its outputs
        written into the group's buffers (as the CPU backend's ``_inline``)."""
        body, b = node.body, self.b
        made = {id(o) for n in body.nodes for o in n.outputs}
        if body.params or any(id(v) not in made for v in body.outputs) or \
                len(set(map(id, body.outputs))) != len(body.outputs):
            return False
        for bv, v in zip(body.inputs, node.inputs):
            self._alias(bv, v)
        last = body.nodes[-1]
        for bv, v in zip(body.outputs, node.outputs):
            if bv.producer is last:  # nothing in the body reads it after it is written
                self._buf(v)
                self._alias(bv, v)
        for n in body.nodes:
            self._plan(n)
        for bv, v in zip(body.outputs, node.outputs):
            if b.ref.get(id(bv)) != b.ref.get(id(v)):
                self._buf(v)
                if v.type.size:
                    b.emit(f"{b.constant(self._copy_launcher()(v.type.size), 'k')}("
                           f"{self._flat(bv)}, {self._flat(v)})")
        self.report["inlined"] += 1
        return True

    def _alias(self, v: Value, src: Value) -> None:
        b = self.b
        b.ref[id(v)] = b.ref[id(src)]
        if id(src) in b.const:
            b.const[id(v)] = b.const[id(src)]

    def _ewise(self, nodes, outputs, sub, outer) -> bool:
        plan = ewise_plan(nodes, outputs)
        if plan is None:
            return False
        leaves, dims, reshapes, flags = plan
        src = ewise_source(nodes, leaves, flags, outputs, len(dims), self.sim)
        args = [self._arg(sub.get(id(v), v), r) for v, r in zip(leaves, reshapes)]
        outs = [outer.get(id(v), v) for v in outputs]
        self._kernel_step(src, math.prod(dims), args, outs, dims)
        self.report["elementwise"] += 1
        return True

    def _gemm(self, node, nodes, outputs, sub, outer) -> bool:
        p = gemm_plan(node, nodes, outputs, nonempty=True)
        if p is None:
            return False
        epilogue, bias, leaves, mat, mv = p.epilogue, p.bias, p.leaves, p.mat, p.master.outputs[0]
        order = master_first(outputs, mv)  # the epilogue writes outputs[0] into m
        outputs = [outputs[j] for j in order]
        outs = [outer.get(id(v), v) for v in outputs]
        for v in outs:
            self._buf(v)
        ins = [sub.get(id(v), v) for v in p.master.inputs]
        fn, how = gemm_fn(p.ta, p.tb, mv.type.dtype, self.stream, self.sim)
        b_shape = ins[1].type.shape
        lhs, rhs = self._arg(ins[0], (1, *p.a_shape)), self._arg(ins[1], (1, *b_shape))
        self.b.emit(f"{self.b.constant(fn, 'g')}({lhs}, {rhs}, "
                    f"{self.b.expr(outs[0], (1, *mat))})")
        if epilogue or bias or len(outputs) > 1:
            src = epilogue_source(2, 1 if bias else None, epilogue, mv, leaves, p.flags,
                                  outputs, self.sim)
            args = [self.b.expr(outs[0], mat)] + ([self._arg(ins[2])] if bias else [])
            args += [self._arg(sub.get(id(v), v), r) for v, r in zip(leaves, p.reshapes)]
            args += [self.b.expr(v, mat) for v in outs[1:]]
            self.b.emit(f"{self._launch(src, math.prod(mat))}({', '.join(args)})")
        self.report[f"gemm[{how}]" + ("+epilogue" if epilogue else "")] += 1
        return True

    # ---- host round trip ---------------------------------------------------------------
    def _fallback(self, node: Node) -> None:
        """The op's NumPy kernel (a fused body interpreted) on host copies of the inputs;
        results, and the inputs the op mutates, copied back to the device."""
        body = node.body
        run = (lambda ins, attrs: interpret(body, ins)) if body is not None else \
            node.op.compute
        attrs, n_out = node.attr_dict, len(node.outputs)
        mutated = node.op.mutated(attrs) if body is None else ()
        label = node.op.name if body is None else node.name

        def step(*arrays):
            ins, outs = arrays[:len(arrays) - n_out], arrays[len(arrays) - n_out:]
            seen: dict = {}  # one host copy per device array, as the op sees one array
            host = [seen[id(a)] if id(a) in seen else seen.setdefault(id(a), cd.to_host(a))
                    for a in ins]
            try:
                res = run(host, attrs)
            except EmberError:
                raise
            except Exception as e:
                where = f" (at {node.loc})" if node.loc else ""
                raise EmberError(f"{label}{where}: {e} (input shapes "
                                 f"{fmt_shapes([a.shape for a in host])})") from e
            res = list(res) if isinstance(res, list | tuple) else [res]
            if len(res) != n_out:
                raise EmberError(f"{label}: kernel gave {len(res)} outputs, the node has "
                                 f"{n_out}")
            for i in mutated:
                cd.copy_into(ins[i], host[i])
            for r, o in zip(res, outs):
                cd.copy_into(o, np.asarray(r))
        args = [self._arg(v) for v in node.inputs] + [self._buf(v) for v in node.outputs]
        self.b.emit(f"{self.b.constant(step, 'f')}({', '.join(args)})")
        self.report[f"fallback:{label if body is None else 'fused'}"] += 1
        self.fallbacks += 1


def _checker(graph: Graph, values: Sequence[Value], what: str, device_id: int):
    """``check(arrays) -> device arrays`` validating shapes and dtypes; NumPy arrays are
    copied to the device (updates a graph makes to them are then not seen by the caller)."""
    want = [(np.dtype(v.type.dtype), v.type.shape) for v in values]

    def check(arrays):
        if len(arrays) != len(want):
            raise EmberError(f"graph {graph.name} takes {len(want)} {what}s, got {len(arrays)}")
        out = list(arrays)
        for i, (a, (dt, shape), v) in enumerate(zip(arrays, want, values)):
            if not cd.is_device_array(a) or not a.is_c_contiguous():
                a = out[i] = cd.to_device(np.asarray(a) if not cd.is_device_array(a)
                                          else cd.to_host(a), device_id)
            if a.dtype != dt or (shape is not None and (len(a.shape) != len(shape) or any(
                    d is not None and d != k for d, k in zip(shape, a.shape)))):
                raise EmberError(f"graph {graph.name}: {v.name_hint or what!r} expects "
                                 f"{v.type}, got shape {fmt_shapes([a.shape])} {a.dtype.name}")
        return out
    return check


def compile(graph: Graph, device_id: int = 0) -> Callable:
    """The backend interface: ``run(inputs, params) -> outputs`` over device arrays.

    Kernels are generated now (numba-cuda compiles each at its first launch); the arena is
    allocated now. ``run.steps(inputs, params, outputs)`` is the launch sequence alone
    (what ``runtime/cuda_graph.py`` captures; hold ``run.lock`` around it: the program's
    scratch buffers are shared), ``run.capturable`` whether it has no host round trip,
    ``run.report`` the kernels by kind and the fallbacks by op.
    """
    if any(not v.type.known for v in graph.outputs):
        raise EmberError(f"graph {graph.name}: the cuda backend needs known output shapes; "
                         "run infer_shapes first")
    prog = _Program(graph, device_id)
    if os.environ.get("EMBER_DEBUG_BACKEND", "") not in ("", "0"):
        items = ", ".join(f"{k}={n}" for k, n in sorted(prog.report.items()))
        print(f"[ember cuda] {graph.name}: {items}", file=sys.stderr)
    check_in = _checker(graph, graph.inputs, "input", device_id)
    check_params = _checker(graph, graph.params, "parameter", device_id)
    steps, out_types = prog.steps, [v.type for v in graph.outputs]

    def new_outputs() -> list:
        return [cd.empty(t.shape, t.dtype, device_id) for t in out_types]

    lock = threading.Lock()  # scratch and arena are shared by the program's runs

    def run(inputs, params):
        ins, ps = check_in(inputs), check_params(params)
        outs = new_outputs()
        with lock, cd.device(device_id):
            steps(ins, ps, outs)
        return outs
    run.steps, run.new_outputs, run.lock = steps, new_outputs, lock
    run.output_types = out_types
    run.check_inputs, run.check_params = check_in, check_params
    run.capturable = prog.fallbacks == 0 and not prog.sim
    run.stream, run.device_id, run.simulator = prog.stream, device_id, prog.sim
    run.report = dict(prog.report)
    run.__qualname__ = f"cuda[{graph.name}]"
    return run
