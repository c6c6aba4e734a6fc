"""The numba CPU backend: one generated kernel per node or fused group, run over one arena.

``compile(graph)`` turns every node into a *step* (DESIGN.md s.6):
- elementwise and broadcast ops, and fused groups made only of them: one loop kernel built
  from the ops' scalar templates (``cpu_kernels.ewise_source``);
- ``fully_connected`` and 2-D ``dot`` (alone or as the master of a fused group): BLAS GEMM
  into the output buffer with bias and the elementwise epilogue applied in the same kernel;
  ``batch_dot`` calls NumPy's matmul straight into its output;
- sum/mean/max/min/sum_like over a contiguous block of axes, softmax/log_softmax/softmin:
  single-pass kernels;
- anything else: the op's NumPy kernel (a fused body it cannot generate runs as a nested
  program), counted as a fallback in the backend report (``EMBER_DEBUG_BACKEND=1``).
When memory is planned (``Value.mem``), intermediates are views into one arena allocated
once per compiled graph, inputs are copied into their slots first, and a run allocates
nothing but its outputs. Parameters are bound as given, so ops that mutate them (BatchNorm
statistics, optimizer state) update the caller's arrays, as in the reference backend.
"""
from __future__ import annotations

import math
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from ember.ir.errors import EmberError, fmt_shapes
from ember.ir.graph import Graph, Node, Value
from ember.ir.opset_reduce import reduced_axes

from . import codegen
from .cpu_kernels import ewise_source, gemm_source, reduce_source, softmax_source

Compiled = Callable[[Sequence[np.ndarray], Sequence[np.ndarray]], list[np.ndarray]]
PARALLEL_MIN = 1 << 17  # elements below which thread start-up costs more than it saves
_REDUCE_OPS = ("sum", "mean", "max", "min", "sum_like")
_SOFTMAX = {"softmax": (1.0, False), "log_softmax": (1.0, True), "softmin": (-1.0, False)}
_KERNELS: dict[str, Callable] = {}


def kernel(source: str) -> Callable:
    """The ``kernel`` function of generated ``source`` (loaded once per process)."""
    fn = _KERNELS.get(source)
    if fn is None:
        fn = _KERNELS[source] = codegen.load_module(source, "cpu").kernel
    return fn


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


def _float_known(values: Sequence[Value]) -> bool:
    return all(v.type.known and v.type.dtype in codegen.FLOAT_DTYPES for v in values)


def _chain_io(nodes: Sequence[Node], outputs: Sequence[Value], exclude=()):
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


class _Program:
    """Steps over a list of slots; ``run`` binds inputs and params, steps, collects outputs."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.slot: dict[int, int] = {}
        self.env: list = []
        self.report: Counter = Counter()
        self.steps: list[Callable[[list], None]] = []
        mutated = {id(n.inputs[i]) for n in graph.nodes for i in n.op.mutated(n.attr_dict)}
        self.views = self._arena(graph, mutated)
        self.in_slots = [self._slot(v) for v in graph.inputs]
        self.in_views = [self.views.get(id(v)) for v in graph.inputs]
        self.param_slots = [self._slot(v) for v in graph.params]
        for node in graph.nodes:
            self._plan(node)
        self.out_slots = [self._slot(v) for v in graph.outputs]
        self.out_in_arena = [id(v) in self.views for v in graph.outputs]

    # ---- slots and the arena --------------------------------------------------------------
    def _slot(self, v: Value) -> int:
        s = self.slot.get(id(v))
        if s is None:
            s = self.slot[id(v)] = len(self.env)
            self.env.append(self.views.get(id(v)))
        return s

    @staticmethod
    def _arena(graph: Graph, mutated: set) -> dict[int, np.ndarray]:
        """Views at the planned offsets (``Value.mem``), one buffer per arena name."""
        placed = [v for v in (*graph.inputs, *(o for n in graph.nodes for o in n.outputs))
                  if v.mem is not None and v.type.known and id(v) not in mutated]
        ends: dict[str, int] = {}
        for v in placed:
            name, off = v.mem
            ends[name] = max(ends.get(name, 0), off + v.type.nbytes)
        bufs = {name: np.empty(max(end, 1) + 64, np.uint8) for name, end in ends.items()}
        views = {}
        for v in placed:
            name, off = v.mem
            buf = bufs[name]
            base = (-buf.ctypes.data) % 64  # align the arena to a cache line
            views[id(v)] = np.ndarray(v.type.shape, v.type.dtype, buf, base + off)
        return views

    def _outs(self, values: Sequence[Value]) -> list[Callable[[], np.ndarray]]:
        """Per output: a function giving its buffer (the arena view, or a fresh array)."""
        res = []
        for v in values:
            view = self.views.get(id(v))
            if view is not None:
                res.append(lambda view=view: view)
            else:
                res.append(lambda s=v.type.shape, d=np.dtype(v.type.dtype): np.empty(s, d))
        return res

    def _fetch(self, v: Value, shape: tuple | None = None) -> Callable[[list], np.ndarray]:
        s = self._slot(v)
        if shape is None or tuple(shape) == v.type.shape:
            return lambda env: env[s]
        return lambda env: env[s].reshape(shape)

    def _kernel_step(self, node: Node, fn: Callable, fetch: list, outs: Sequence[Value],
                     out_shape: tuple | None = None, m_index: int | None = None) -> None:
        """A step calling ``fn(*fetched, [m], *outs)`` (outs viewed as ``out_shape``)."""
        alloc, slots = self._outs(outs), [self._slot(v) for v in outs]
        shaped = out_shape is not None

        def step(env):
            bufs = [a() for a in alloc]
            args = [f(env) for f in fetch]
            views = [b.reshape(out_shape) for b in bufs] if shaped else bufs
            if m_index is not None:
                args.append(views[m_index])
            fn(*args, *views)
            for s, b in zip(slots, bufs):
                env[s] = b
        self.steps.append(step)

    # ---- choosing a kernel per node ---------------------------------------------------------
    def _plan(self, node: Node) -> None:
        body = node.body
        if body is not None:
            sub = dict(zip([id(v) for v in (*body.inputs, *body.params)], node.inputs))
            outer = dict(zip([id(v) for v in body.outputs], node.outputs))
            if self._ewise(node, body.nodes, body.outputs, sub, outer) or \
                    self._gemm(node, body.nodes, body.outputs, sub, outer):
                return
        elif codegen.is_scalar_node(node):
            if self._ewise(node, [node], node.outputs, {}, {}):
                return
        elif self._gemm(node, [node], node.outputs, {}, {}) or self._reduce(node) or \
                self._softmax(node) or self._batch_dot(node):
            return
        self._fallback(node)

    def _ewise(self, node, nodes, outputs, sub, outer) -> bool:
        if not all(codegen.is_scalar_node(n) for n in nodes):
            return False
        leaves = _chain_io(nodes, outputs)
        if leaves is None or not _float_known(leaves):
            return False
        shape = outputs[0].type.shape
        if any(v.type.shape != shape for v in outputs):
            return False
        layout = broadcast_layout(shape, [v.type.shape for v in leaves])
        if layout is None:
            return False
        dims, reshapes, flags = layout
        parallel = math.prod(dims) >= PARALLEL_MIN
        src = ewise_source(nodes, leaves, flags, outputs, len(dims), parallel)
        fetch = [self._fetch(sub.get(id(v), v), r) for v, r in zip(leaves, reshapes)]
        self._kernel_step(node, kernel(src), fetch, [outer.get(id(v), v) for v in outputs],
                          dims)
        self.report["elementwise"] += 1
        return True

    def _gemm(self, node, nodes, outputs, sub, outer) -> bool:
        k = node.attr_dict.get("master", 0) if node.body is not None else 0
        k = k if isinstance(k, int) and 0 <= k < len(nodes) else 0
        master, epilogue = nodes[k], [n for n in nodes if n is not nodes[k]]
        name, at = master.op.name, master.attr_dict
        if name not in ("fully_connected", "dot") or master.body is not None:
            return False
        if not all(codegen.is_scalar_node(n) for n in epilogue):
            return False
        mv = master.outputs[0]
        if not _float_known([*master.inputs, mv, *outputs]):
            return False
        if len({v.type.dtype for v in (*master.inputs, mv)}) != 1:
            return False
        shape = mv.type.shape
        if name == "fully_connected":
            x = master.inputs[0]
            rows = math.prod(shape[:-1])
            if rows == 0:
                return False
            a_shape, ta, tb, bias = (rows, x.type.size // rows), False, True, not at["no_bias"]
            if bias and master.inputs[2].type.shape != (shape[-1],):
                return False
        else:
            a, b = master.inputs
            if a.type.ndim != 2 or b.type.ndim != 2:
                return False
            a_shape, ta, tb, bias = a.type.shape, at["transpose_a"], at["transpose_b"], False
        if any(v.type.shape != shape for v in outputs):
            return False
        leaves = _chain_io(epilogue, outputs, exclude=[mv])
        if leaves is None or not _float_known(leaves):
            return False
        made = {id(o) for n in epilogue for o in n.outputs}
        if any(id(v) in made for v in master.inputs):
            return False
        mat = (math.prod(shape[:-1]), shape[-1])
        flags, reshapes = [], []
        for v in leaves:
            s = (1,) * (len(shape) - len(v.type.shape)) + tuple(v.type.shape)
            rows_b = all(d == 1 for d in s[:-1])
            if not rows_b and s[:-1] != shape[:-1] or s[-1] not in (1, shape[-1]):
                return False
            fl = (rows_b and mat[0] != 1, s[-1] == 1 and mat[1] != 1)
            flags.append(fl)
            reshapes.append(tuple(1 if f else d for f, d in zip(fl, mat)))
        m_index = next((j for j, v in enumerate(outputs) if v is mv), 0)
        parallel = mat[0] * mat[1] >= PARALLEL_MIN
        src = gemm_source(ta, tb, bias, epilogue, mv, leaves, flags, outputs, parallel)
        fetch = [self._fetch(sub.get(id(master.inputs[0]), master.inputs[0]), a_shape),
                 self._fetch(sub.get(id(master.inputs[1]), master.inputs[1]))]
        if bias:
            fetch.append(self._fetch(sub.get(id(master.inputs[2]), master.inputs[2])))
        fetch += [self._fetch(sub.get(id(v), v), r) for v, r in zip(leaves, reshapes)]
        self._kernel_step(node, kernel(src), fetch, [outer.get(id(v), v) for v in outputs],
                          mat, m_index)
        self.report["gemm" + ("+epilogue" if epilogue else "")] += 1
        return True

    def _reduce(self, node: Node) -> bool:
        name, at = node.op.name, node.attr_dict
        if name not in _REDUCE_OPS or not _float_known([node.inputs[0], node.outputs[0]]):
            return False
        x = node.inputs[0]
        shape = x.type.shape
        if name == "sum_like":
            like = node.inputs[1].type.shape
            lead = len(shape) - len(like)
            axes = set(range(lead)) | {i + lead for i, d in enumerate(like) if d == 1}
        else:
            axes = set(reduced_axes(len(shape), at["axis"], at.get("exclude", False)))
        runs: list[list] = []  # [reduced?, size] with size-1 dims dropped
        for d, size in enumerate(shape):
            if size == 1:
                continue
            red = d in axes
            if runs and runs[-1][0] == red:
                runs[-1][1] *= size
            else:
                runs.append([red, size])
        reds = [r for r in runs if r[0]]
        if len(reds) > 1:
            return False
        if not reds:
            if name in ("max", "min") and x.type.size == 0:
                return False
            ppp = (x.type.size, 1, 1)
        else:
            i = runs.index(reds[0])
            pre = math.prod(r[1] for r in runs[:i])
            ppp = (pre, reds[0][1], math.prod(r[1] for r in runs[i + 1:]))
        if ppp[1] == 0 and name in ("max", "min", "mean"):
            return False
        kind = "sum" if name == "sum_like" else name
        src = reduce_source(kind, ppp[0] >= 2 and x.type.size >= PARALLEL_MIN)
        self._kernel_step(node, kernel(src), [self._fetch(x, ppp)], node.outputs,
                          (ppp[0], ppp[2]))
        self.report["reduce"] += 1
        return True

    def _softmax(self, node: Node) -> bool:
        if node.op.name not in _SOFTMAX or len(node.inputs) != 1:
            return False
        x, y, at = node.inputs[0], node.outputs[0], node.attr_dict
        if not _float_known([x, y]) or x.type.dtype != y.type.dtype or x.type.ndim == 0:
            return False
        shape, axis = x.type.shape, at["axis"] % x.type.ndim
        ppp = (math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:]))
        sign, log = _SOFTMAX[node.op.name]
        scale = sign / (at["temperature"] or 1.0)
        src = softmax_source(log, ppp[0] >= 2 and x.type.size >= PARALLEL_MIN)
        self._kernel_step(node, kernel(src), [self._fetch(x, ppp), lambda env: scale],
                          [y], ppp)
        self.report["softmax"] += 1
        return True

    def _batch_dot(self, node: Node) -> bool:
        if node.op.name != "batch_dot" or not _float_known([*node.inputs, *node.outputs]):
            return False
        at = node.attr_dict
        fa, fb = self._fetch(node.inputs[0]), self._fetch(node.inputs[1])
        ta, tb = at["transpose_a"], at["transpose_b"]

        def mm(a, b, out):
            np.matmul(np.swapaxes(a, -1, -2) if ta else a, np.swapaxes(b, -1, -2) if tb else b,
                      out=out)
        self._kernel_step(node, mm, [fa, fb], node.outputs)
        self.report["batch_dot"] += 1
        return True

    def _fallback(self, node: Node) -> None:
        """The op's NumPy kernel (or a nested program for a fused body); copied into the
        arena when the output is planned there."""
        in_slots = [self._slot(v) for v in node.inputs]
        out_slots = [self._slot(v) for v in node.outputs]
        views = [self.views.get(id(v)) for v in node.outputs]
        if node.body is not None:
            prog = _Program(node.body)
            n_in = len(node.body.inputs)
            run = lambda ins, attrs: prog.run(ins[:n_in], ins[n_in:])
            self.report.update(prog.report)
            self.report["nested"] += 1
        else:
            run = node.op.compute
        attrs, n_out = node.attr_dict, len(node.outputs)

        def step(env):
            ins = [env[s] for s in in_slots]
            try:
                res = run(ins, attrs)
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
            for s, r, view in zip(out_slots, res, views):
                if view is None:
                    env[s] = np.asarray(r)
                elif r is not view:
                    np.copyto(view, r, casting="unsafe")
        self.steps.append(step)
        if node.body is None:
            self.report[f"fallback:{node.op.name}"] += 1

    # ---- running ----------------------------------------------------------------------------
    def run(self, inputs: Sequence[np.ndarray], params: Sequence[np.ndarray]) -> list:
        """Bind, step, collect: outputs never alias the arena or the caller's arrays."""
        g, env = self.graph, self.env
        if len(inputs) != len(self.in_slots) or len(params) != len(self.param_slots):
            raise EmberError(f"graph {g.name} takes {len(self.in_slots)} inputs and "
                             f"{len(self.param_slots)} parameters, got {len(inputs)} and "
                             f"{len(params)}")
        given = []
        for vals, arrays, slots in ((g.inputs, inputs, self.in_slots),
                                    (g.params, params, self.param_slots)):
            for v, a, s in zip(vals, arrays, slots):
                a = a if isinstance(a, np.ndarray) else np.asarray(a)
                t = v.type
                if a.dtype.name != t.dtype or (t.shape is not None and (
                        a.ndim != len(t.shape) or any(d is not None and d != n
                                                      for d, n in zip(t.shape, a.shape)))):
                    raise EmberError(f"graph {g.name}: {v.name_hint or 'argument'!r} expects "
                                     f"{t}, got shape {fmt_shapes([a.shape])} {a.dtype.name}")
                given.append(a)
                env[s] = a
        for s, view, a in zip(self.in_slots, self.in_views, inputs):
            if view is not None:
                np.copyto(view, a)
                env[s] = view
        for step in self.steps:
            step(env)
        outs = []
        for s, arena in zip(self.out_slots, self.out_in_arena):
            a = env[s]
            if arena or any(np.may_share_memory(a, x) for x in given):
                a = a.copy()
            outs.append(a)
        return outs


def compile(graph: Graph) -> Compiled:
    """The backend interface: ``run(inputs, params) -> outputs`` for ``graph``.

    Kernels are generated and loaded now (numba compiles each on its first call, or loads
    it from the on-disk cache). ``run.report`` counts the kernels by kind and the NumPy
    fallbacks by op; ``EMBER_DEBUG_BACKEND=1`` prints it.
    """
    prog = _Program(graph)
    run = prog.run
    if os.environ.get("EMBER_DEBUG_BACKEND", "") not in ("", "0"):
        items = ", ".join(f"{k}={n}" for k, n in sorted(prog.report.items()))
        print(f"[ember cpu] {graph.name}: {items}", file=sys.stderr)
    fn = lambda inputs, params: run(inputs, params)
    fn.report = dict(prog.report)
    fn.__qualname__ = f"cpu[{graph.name}]"
    return fn
