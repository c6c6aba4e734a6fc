"""The numba CPU backend: one generated kernel per node or fused group, run over one arena.

``compile(graph)`` turns every node into a *step* (DESIGN.md s.6):
- elementwise and broadcast ops, and fused groups made only of them: one loop kernel built
  from the ops' scalar templates (``cpu_kernels.ewise_source``; float32 exp/tanh/sigmoid
  by ``cpu_math``'s vectorisable polynomials);
- ``fully_connected`` and 2-D ``dot`` (alone or as the master of a fused group): NumPy's
  BLAS GEMM (``np.matmul(out=)``) into the output buffer, then one kernel adding the bias
  and applying the elementwise epilogue. Not numba's ``np.dot``: it links SciPy's OpenBLAS,
  whose threads spin against NumPy's on two cores (every GEMM was 10x slower);
- reductions, softmax, pick/pick_backward, reshapes, fills: ``cpu_steps``;
- a fused group no single kernel covers: its body planned node by node in place;
- pooling and BatchNorm (forward, backward): ``cpu_norm_pool``;
- anything else: the op's NumPy kernel, counted as a fallback in the backend report
  (``EMBER_DEBUG_BACKEND=1``).
The steps become one generated straight-line Python function (``cpu_run``). When memory is
planned (``Value.mem``), intermediates are views into one arena allocated once per compiled
graph and inputs are copied into their slots first; graph outputs get fresh arrays (a run
hands them out, so they never alias the arena or the caller's arrays). Parameters are bound
as given, so ops that mutate them (BatchNorm statistics, optimizer state) update the
caller's arrays, as in the reference backend.
"""
from __future__ import annotations

import math
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from ember.ir.errors import EmberError, fmt_shapes
from ember.ir.graph import Graph, Node, Value, kept_apart

from . import codegen, cpu_memo, cpu_optim
from .cpu_conv import ConvSteps
from .cpu_kernels import ewise_source, gemm_epilogue_source
from .cpu_norm_pool import NormPoolSteps
from .cpu_run import Recycler, RunBuilder, arg_checker
from .cpu_steps import _KERNELS, PARALLEL_MIN, OpSteps, kernel  # noqa: F401 (_KERNELS: tests)
from .cpu_steps import split_one_pass as _split_one_pass
from .plan import broadcast_layout, ewise_plan, gemm_plan, master_first

Compiled = Callable[[Sequence[np.ndarray], Sequence[np.ndarray]], list[np.ndarray]]
__all__ = ["PARALLEL_MIN", "broadcast_layout", "compile", "kernel"]


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two arrays are exactly the same memory (pointer, shape, dtype)."""
    return a.__array_interface__["data"][0] == b.__array_interface__["data"][0] and \
        a.size == b.size and a.dtype == b.dtype


class _Program(OpSteps, NormPoolSteps, ConvSteps):
    """Chooses a kernel per node and generates the run loop (``cpu_run.RunBuilder``)."""

    def __init__(self, graph: Graph, arena=None):
        self.graph = graph
        self.report: Counter = Counter()
        shared = getattr(arena, "shared", None)   # one recycler for a graph's batch sizes
        b = self.b = RunBuilder(graph.name, shared("recycler", Recycler) if shared else None)
        # graph outputs get fresh arrays: a run hands them out, so they may not live in the
        # arena that the next run overwrites (no copy at the end); plan_memory leaves them
        # and mutated values unplanned (kept out here too, for a graph planned otherwise)
        self.views = self._arena(graph, kept_apart(graph), arena)
        self.arena = arena  # (steps' scratch buffers come from it too, when given)
        self.aliasing: set[int] = set()  # values a fallback made: they may alias anything
        args = []
        for v in (*graph.inputs, *graph.params):
            args.append(b.bind_local(v))
        for v, name in zip(graph.inputs, args):
            view = self.views.get(id(v))
            if view is not None:
                b.emit(f"copyto({b.constant(view, 'A')}, {name})")
                b.bind_const(v, view)
        n_in = len(graph.inputs)
        for names, src in ((args[n_in:], "params"), (args[:n_in], "inputs")):
            if names:
                b.lines.insert(0, f"{', '.join(names)}, = {src}")
        for self._pos, node in enumerate(graph.nodes):
            self._plan(node)
        given = {id(v) for v in (*graph.inputs, *graph.params)}
        rets, seen = [], set()
        for v in graph.outputs:
            name = b.ref[id(v)]
            if id(v) in given or id(v) in seen or id(v) in b.const:
                name = f"{name}.copy()"
            elif id(v) in self.aliasing:
                name = f"_own({name})"
            seen.add(id(v))
            rets.append(name)
        b.ns["_own"] = lambda a: a.copy() if a.base is not None else a
        self.run_fn = b.build(["inputs", "params"], rets)
        self.check_in = arg_checker(graph.name, graph.inputs, "input")
        self.check_params = arg_checker(graph.name, graph.params, "parameter")

    @staticmethod
    def _arena(graph: Graph, keep: set, arena=None) -> dict[int, np.ndarray]:
        """Views at the planned offsets (``Value.mem``), one buffer per arena name: new, or
        ``arena.buffer(name, nbytes)`` (a buffer shared with the same graph's programs at
        other batch sizes, ``runtime.arena.SharedArena``)."""
        placed = [v for v in (*graph.inputs, *(o for n in graph.nodes for o in n.outputs))
                  if v.mem is not None and v.type.known and id(v) not in keep]
        ends: dict[str, int] = {}
        for v in placed:
            name, off = v.mem
            ends[name] = max(ends.get(name, 0), off + v.type.nbytes)
        try:
            bufs = {name: np.empty(max(end, 1) + 64, np.uint8) if arena is None else
                    arena.buffer(name, max(end, 1) + 64) for name, end in ends.items()}
        except (MemoryError, ValueError) as e:  # more than this machine can give
            big = max(placed, key=lambda v: v.type.nbytes)
            made = f"made by {big.producer.name or big.producer.op.name} ({big.producer.op.name})" \
                if big.producer is not None else "an input"
            raise EmberError(
                f"{graph.name}: cannot allocate the compiled program's arena of "
                f"{sum(ends.values()):,} bytes ({type(e).__name__}: {e}); its largest value is "
                f"{fmt_shapes([big.type.shape])} {big.type.dtype} ({big.type.nbytes:,} bytes), "
                f"{made}. Use smaller shapes (batch size).") from None
        views = {}
        for v in placed:
            name, off = v.mem
            buf = bufs[name]
            base = (-buf.ctypes.data) % 64  # align the arena to a cache line
            views[id(v)] = np.ndarray(v.type.shape, v.type.dtype, buf, base + off)
        return views

    def _buf(self, v: Value) -> str:
        """The buffer a step writes ``v`` into (its arena view, or a fresh array)."""
        b = self.b
        if id(v) not in b.ref:
            view = self.views.get(id(v))
            if view is not None:
                b.bind_const(v, view)
        return b.out(v)

    def _arg(self, v: Value, shape: tuple | None = None) -> str:
        return self.b.expr(v, shape)

    def _kernel_step(self, fn: Callable, args: list[str], outs: Sequence[Value],
                     out_shape: tuple | None = None) -> None:
        """A step calling ``fn(*args, *outs)`` (outs viewed as ``out_shape``)."""
        for v in outs:
            self._buf(v)
        views = [self.b.expr(v, out_shape) for v in outs]
        self.b.emit(f"{self.b.constant(fn, 'k')}({', '.join([*args, *views])})")

    # ---- choosing a kernel per node ---------------------------------------------------------
    def _plan(self, node: Node) -> None:
        self.b.node = node   # (what a step profile names the node's steps by)
        body = node.body
        if body is not None:
            sub = dict(zip([id(v) for v in (*body.inputs, *body.params)], node.inputs))
            outer = dict(zip([id(v) for v in body.outputs], node.outputs))
            if self._ewise(node, body.nodes, body.outputs, sub, outer) or \
                    self._gemm(node, body.nodes, body.outputs, sub, outer) or \
                    self._conv(node, body.nodes, body.outputs, sub, outer) or \
                    self._inline(node):
                return
        elif codegen.is_scalar_node(node):
            if self._ewise(node, [node], node.outputs, {}, {}):
                return
        elif self._gemm(node, [node], node.outputs, {}, {}) or \
                self._conv(node, [node], node.outputs, {}, {}) or self._op_step(node) or \
                self._norm_pool_step(node):
            return
        self._fallback(node)

    def _inline(self, node: Node) -> bool:
        """Plan the body of a group no single kernel covers node by node in this program
        (its outputs written straight into the group's buffers): no nested run."""
        body = node.body
        made = {id(o) for n in body.nodes for o in n.outputs}
        if body.params or any(id(v) not in made for v in body.outputs) or \
                len(set(map(id, body.outputs))) != len(body.outputs):
            return False
        for bv, v in zip(body.inputs, node.inputs):
            self._alias(bv, v)
        last = body.nodes[-1]
        for bv, v in zip(body.outputs, node.outputs):
            view = self.views.get(id(v))
            if view is not None and bv.producer is last:  # nothing reads after it writes
                self.views[id(bv)] = view
        for n in body.nodes:
            self._plan(n)
        for bv, v in zip(body.outputs, node.outputs):
            view = self.views.get(id(v))
            if view is not None and self.views.get(id(bv)) is not view:
                self.b.emit(f"copyto({self.b.constant(view, 'A')}, {self.b.ref[id(bv)]})")
                self.b.bind_const(v, view)
            else:
                self._alias(v, bv)
        self.report["inlined"] += 1
        return True

    def _alias(self, v: Value, src: Value) -> None:
        """``v`` names the same array as ``src``."""
        b = self.b
        b.ref[id(v)] = b.ref[id(src)]
        if id(src) in b.const:
            b.const[id(v)] = b.const[id(src)]
        if id(src) in self.aliasing:
            self.aliasing.add(id(v))

    def _ewise(self, node, nodes, outputs, sub, outer) -> bool:
        plan = ewise_plan(nodes, outputs)
        if plan is None:
            return False
        leaves, dims, reshapes, flags = plan
        parallel = math.prod(dims) >= PARALLEL_MIN
        outs = [outer.get(id(v), v) for v in outputs]
        for v in outs:
            self._buf(v)
        alias = {}
        for j, (v, fl) in enumerate(zip(leaves, flags)):
            a = self.b.const.get(id(sub.get(id(v), v)))
            for k, o in enumerate(outs):
                view = self.b.const.get(id(o))
                if a is not None and view is not None and not any(fl) and _same(a, view):
                    alias[j] = k
        key = ("ewise", cpu_memo.structure(nodes, leaves, outputs), tuple(map(tuple, flags)),
               len(dims), parallel, tuple(sorted(alias.items())))
        src = cpu_memo.source(key, lambda: ewise_source(nodes, leaves, flags, outputs,
                                                        len(dims), parallel, alias))
        args = [self._arg(sub.get(id(v), v), r) for j, (v, r) in enumerate(zip(leaves, reshapes))
                if j not in alias]
        self._kernel_step(_split_one_pass(src), args, outs, dims)
        self.report["elementwise"] += 1
        return True

    def _gemm(self, node, nodes, outputs, sub, outer) -> bool:
        p = gemm_plan(node, nodes, outputs)
        if p is None:
            return False
        master, epilogue, bias, leaves, mat = p.master, p.epilogue, p.bias, p.leaves, p.mat
        mv, ta, tb, flags = master.outputs[0], p.ta, p.tb, p.flags
        outs = [outer.get(id(v), v) for v in outputs]
        for v in outs:
            self._buf(v)
        views = [self.b.expr(v, mat) for v in outs]
        ins = [sub.get(id(v), v) for v in master.inputs]
        order = master_first(outputs, mv)  # the kernel writes outputs[0] into m
        outputs, outs, views = ([x[j] for j in order] for x in (outputs, outs, views))
        lhs, rhs = self._arg(ins[0], p.a_shape), self._arg(ins[1])
        # NumPy's matmul: faster than np.dot(out=) on a transposed operand
        self.b.emit(f"matmul({lhs}{'.T' if ta else ''}, {rhs}{'.T' if tb else ''}, "
                    f"out={views[0]})")
        looped = bool(epilogue or bias or any(v is not mv for v in outputs))
        if looped:
            parallel = mat[0] * mat[1] >= PARALLEL_MIN
            key = ("gemm", bias, cpu_memo.structure(epilogue, [mv, *leaves], outputs),
                   tuple(flags), parallel)
            src = cpu_memo.source(key, lambda: gemm_epilogue_source(
                bias, epilogue, mv, leaves, flags, outputs, parallel))
            args = [views[0]] + ([self._arg(ins[2])] if bias else [])
            args += [self._arg(sub.get(id(v), v), r) for v, r in zip(leaves, p.reshapes)]
            kfn = self.b.constant(_split_one_pass(src), 'k')
            self.b.emit(f"{kfn}({', '.join(args + views[1:])})")
        self.report["gemm" + ("+epilogue" if epilogue else "")] += 1
        return True

    def _fallback(self, node: Node) -> None:
        """The op's NumPy kernel (or a nested program for a fused body); copied into the
        arena when the output is planned there."""
        views = [self.views.get(id(v)) for v in node.outputs]
        if node.body is not None:
            prog = _Program(node.body)
            n_in = len(node.body.inputs)
            run = lambda ins, attrs: prog.run(ins[:n_in], ins[n_in:])
            self.report.update(prog.report)
            self.report["nested"] += 1
        else:  # (optimizer updates: one-pass kernels, cpu_optim)
            run = cpu_optim.update_compute(node.op) or node.op.compute
        attrs, n_out = node.attr_dict, len(node.outputs)

        def step(*ins):
            try:
                res = run(list(ins), attrs)
            except EmberError:
                raise
            except Exception as e:
                where = f" (at {node.loc})" if node.loc else ""
                raise EmberError(f"{node.op.name}{where}: {e} (input shapes "
                                 f"{fmt_shapes([a.shape for a in ins])})") from e
            res = list(res) if isinstance(res, list | tuple) else [res]
            if len(res) != n_out:
                raise EmberError(f"{node.op.name}: kernel gave {len(res)} outputs, the node "
                                 f"has {n_out}")
            for k, (r, view) in enumerate(zip(res, views)):
                if view is None:
                    res[k] = np.asarray(r)
                elif r is not view:
                    np.copyto(view, r, casting="unsafe")
                    res[k] = view
            return res
        args = [self._arg(v) for v in node.inputs]
        outs = []
        for v, view in zip(node.outputs, views):
            if view is not None:
                self.b.bind_const(v, view)
            else:
                self.aliasing.add(id(v))
            outs.append(self.b.bind_local(v) if view is None else f"_{self.b.fresh('u')}")
        self.b.emit(f"{', '.join(outs)}, = {self.b.constant(step, 'f')}({', '.join(args)})")
        if node.body is None:
            kind = "fallback" if run is node.op.compute else "update"
            self.report[f"{kind}:{node.op.name}"] += 1

    def run(self, inputs: Sequence[np.ndarray], params: Sequence[np.ndarray]) -> list:
        """Bind, step, collect: outputs never alias the arena or the caller's arrays."""
        return self.run_fn(self.check_in(inputs), self.check_params(params))


def compile(graph: Graph, arena=None) -> Compiled:
    """The backend interface: ``run(inputs, params) -> outputs`` for ``graph``.

    ``arena`` (optional) gives the buffers the intermediates live in (``arena.buffer(name,
    nbytes)``); by default the program allocates its own.

    Kernels are generated and loaded now (numba compiles each on its first call, or loads
    it from the on-disk cache). ``run.report`` counts the kernels by kind and the NumPy
    fallbacks by op; ``EMBER_DEBUG_BACKEND=1`` prints it.
    """
    prog = _Program(graph, arena)
    run_fn, check_in, check_params = prog.run_fn, prog.check_in, prog.check_params
    if os.environ.get("EMBER_DEBUG_BACKEND", "") not in ("", "0"):
        items = ", ".join(f"{k}={n}" for k, n in sorted(prog.report.items()))
        print(f"[ember cpu] {graph.name}: {items}", file=sys.stderr)

    def fn(inputs, params):
        return run_fn(check_in(inputs), check_params(params))
    fn.report = dict(prog.report)
    fn.run_fn = run_fn  # its source and constants (runtime.precompile reads its calls)
    fn.__qualname__ = f"cpu[{graph.name}]"
    return fn
