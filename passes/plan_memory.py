"""The ``plan_memory`` pass: every intermediate tensor gets an offset in ONE arena.

Three steps, run on the (fused) graph's top-level values in node order:

1. Liveness. A value lives from the step of the node computing it to the step of its last
   reader (both inclusive: a node's inputs and outputs are live together); graph outputs
   live to the end. Graph inputs and parameters are bound from outside and are not planned;
   neither are graph outputs nor values a node mutates (``op.mutated``): a run hands its
   outputs out, so the backends give them arrays of their own, never arena memory that the
   next run overwrites. (Planned among the rest, the outputs that a training forward keeps
   for the backward pass held the arena's lower part for the whole run, and each short-lived
   value found its place above all of them: ResNet-50's forward at batch 16 touched 646 MB
   of arena for BatchNorm outputs that never live more than two at a time.) The values inside a
   fused body are not planned: a generated kernel keeps them in registers (and a backend
   that interprets a body allocates them itself). One extension (:func:`held_inputs`): the
   inputs of a depthwise convolution whose output only a 1x1 convolution reads live until
   that convolution, so that a backend may run the two as one step (the CPU backend does,
   sample by sample: MobileNet's depthwise outputs are never written out).
2. In-place reuse (MXNet's ``PlanMemory`` in ``src/nnvm/plan_memory.cc``): a node may
   write an output into the buffer of an input that dies at this very node, when the
   registry allows the pair (``op.inplace``; for fused nodes
   :func:`ember.ir.fused.inplace_pairs`) and both have the same byte size and dtype. The
   output then continues that buffer's lifetime.
3. Offsets by TFLite's "greedy by size" (``GreedyBySizeOffsetCalculator`` in
   ``tensorflow/lite/delegates/gpu/common/memory_management``, Pisarchyk and Lee,
   "Efficient Memory Management for Deep Neural Net Inference", 2020): buffers sorted by
   size, largest first (ties: earliest first); each goes into the smallest gap between
   already placed buffers whose lifetimes intersect its own that is large enough, else
   after the last of them. Sizes are rounded up to ``alignment`` bytes (64), so every
   offset is aligned.

Results: ``Value.mem = ("arena", offset)`` on every planned value, and in ``graph.meta``:
``naive_bytes`` (every planned value in its own aligned slot), ``lower_bound_bytes`` (the
largest total of aligned buffers live at one step, a bound no placement can beat),
``arena_bytes``, ``inplace_reuses`` and ``alignment``.
"""
from __future__ import annotations

import numpy as np

from ember.ir.conv_kernels import _geom
from ember.ir.errors import EmberError
from ember.ir.fused import inplace_pairs
from ember.ir.graph import Graph, Node, Value, clone_node, kept_apart
from ember.passes import register_pass

ARENA = "arena"


class _Buffer:
    """One arena slot: the values sharing it (an in-place chain) and its lifetime."""

    __slots__ = ("values", "size", "dtype", "start", "end", "offset")

    def __init__(self, v: Value, size: int, start: int, end: int):
        self.values = [v]
        self.size, self.dtype = size, v.type.dtype
        self.start, self.end = start, end
        self.offset = -1


def _align(n: int, alignment: int) -> int:
    return max(alignment, -(-n // alignment) * alignment)


def _nbytes(v: Value, graph: Graph) -> int:
    n = v.type.nbytes
    if n is None:
        where = f" (computed by {v.producer.op.name})" if v.producer is not None else ""
        raise EmberError(f"plan_memory: value {v.name_hint or ''}{where} of graph "
                         f"{graph.name} has unknown shape {v.type}; run infer_shapes first")
    return n


def liveness(graph: Graph) -> dict[int, tuple[int, int]]:
    """id(value) -> (first step, last step) for every node output of ``graph``."""
    end = len(graph.nodes)
    span: dict[int, tuple[int, int]] = {}
    for i, node in enumerate(graph.nodes):
        for o in node.outputs:
            span[id(o)] = (i, i)
        for v in node.inputs:
            if id(v) in span:
                span[id(v)] = (span[id(v)][0], i)
    for v in graph.outputs:
        if id(v) in span:
            span[id(v)] = (span[id(v)][0], end)
    for vid, last in held_inputs(graph).items():
        if vid in span:
            span[vid] = (span[vid][0], max(span[vid][1], last))
    return span


def _forward_conv(node: Node) -> tuple[Node, list[Value]] | None:
    """The channels-first 2-D ``convolution`` that ``node`` is (or masters, as a fused
    group), and the node inputs that are its data and weight; None for any other node."""
    conv, ins = node, list(node.inputs)
    if node.body is not None:
        m = node.attr_dict.get("master", -1)
        body = node.body
        if not isinstance(m, int) or not 0 <= m < len(body.nodes):
            return None
        conv = body.nodes[m]
        where = {id(b): v for b, v in zip(body.inputs, node.inputs)}
        ins = [where.get(id(b)) for b in conv.inputs]
    at = conv.attr_dict
    if conv.op.name != "convolution" or len(at.get("kernel", ())) != 2 or \
            at.get("layout") not in (None, "NCHW") or None in ins[:2]:
        return None
    return conv, ins


def held_inputs(graph: Graph) -> dict[int, int]:
    """id(value) -> the step to which it stays live beyond its last reader: the inputs of a
    depthwise convolution (one input channel per group) whose one output is read only by a
    1x1, stride-1, unpadded, one-group convolution, as that convolution's data, are kept
    until that convolution's step. The nodes between them (ResNet- and MobileNet-style
    graphs compute the next BatchNorm's scale there) then write nothing over them."""
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    readers: dict[int, list[Node]] = {}
    for n in graph.nodes:
        for v in n.inputs:
            readers.setdefault(id(v), []).append(n)
    outs = {id(v) for v in graph.outputs}
    held: dict[int, int] = {}
    for n in graph.nodes:
        a = _forward_conv(n)
        if a is None or len(n.outputs) != 1 or id(n.outputs[0]) in outs:
            continue
        conv = a[0]
        at, shape = conv.attr_dict, conv.inputs[0].type.shape
        if not shape or len(shape) != 4 or at["num_group"] < 2 or shape[1] != at["num_group"]:
            continue
        us = readers.get(id(n.outputs[0]), [])
        b = _forward_conv(us[0]) if len(us) == 1 else None
        if b is None or b[1][0] is not n.outputs[0] or b[1][1] is n.outputs[0]:
            continue
        k, st, _, p = _geom(b[0].attr_dict, 2)
        if k != (1, 1) or st != (1, 1) or p != (0, 0) or b[0].attr_dict["num_group"] != 1:
            continue
        for v in n.inputs:
            held[id(v)] = max(held.get(id(v), 0), index[id(us[0])])
    return held


def _buffers(graph: Graph, alignment: int) -> tuple[list[_Buffer], int]:
    """Buffers after in-place merging (MXNet's in-place rule), and the number of merges."""
    span = liveness(graph)
    apart = kept_apart(graph)
    of: dict[int, _Buffer] = {}
    buffers: list[_Buffer] = []
    reuses = 0
    for i, node in enumerate(graph.nodes):
        donated: set[int] = set()
        taken: dict[int, _Buffer] = {}
        for a, b in inplace_pairs(node):
            if a >= len(node.inputs) or b >= len(node.outputs) or b in taken:
                continue
            v, o = node.inputs[a], node.outputs[b]
            buf = of.get(id(v))
            if buf is None or id(buf) in donated or buf.end != i or span[id(v)][1] != i:
                continue  # not planned here (input, param), or still read after this node
            if _nbytes(v, graph) != _nbytes(o, graph) or v.type.dtype != o.type.dtype:
                continue
            donated.add(id(buf))
            taken[b] = buf
        for b, o in enumerate(node.outputs):
            if id(o) in apart:
                continue
            first, last = span[id(o)]
            buf = taken.get(b)
            if buf is not None:
                buf.values.append(o)
                buf.end = last
                reuses += 1
            else:
                buf = _Buffer(o, _align(_nbytes(o, graph), alignment), first, last)
                buffers.append(buf)
            of[id(o)] = buf
    return buffers, reuses


def greedy_by_size(buffers: list[_Buffer]) -> int:
    """TFLite's greedy-by-size placement (module docstring); sets offsets, returns the size.

    Vectorised over the buffers already placed (one NumPy pass per buffer instead of a Python
    loop over every live one, which made large graphs quadratic in Python): for the placed
    buffers whose lifetimes meet this one's, in offset order (placement order on ties), the
    gap before each is its offset minus the largest end below it; the smallest gap that is
    large enough wins (the first of equal ones), else the buffer goes after all of them.
    """
    order = sorted(buffers, key=lambda b: (-b.size, b.start, b.end))
    starts = np.fromiter((b.start for b in order), np.int64, len(order))
    ends = np.fromiter((b.end for b in order), np.int64, len(order))
    offsets = np.zeros(len(order), np.int64)
    tops = np.zeros(len(order), np.int64)  # offset + size of each placed buffer
    total = 0
    for k, buf in enumerate(order):
        live = np.flatnonzero((starts[:k] <= buf.end) & (ends[:k] >= buf.start))
        offset = 0
        if live.size:
            live = live[np.argsort(offsets[live], kind="stable")]
            below = np.maximum.accumulate(tops[live])  # largest end up to each live buffer
            gaps = offsets[live]
            gaps[1:] -= below[:-1]
            fits = np.flatnonzero(gaps >= buf.size)
            if fits.size:
                j = fits[np.argmin(gaps[fits])]
                offset = int(below[j - 1]) if j else 0
            else:
                offset = int(below[-1])
        buf.offset = offset
        offsets[k], tops[k] = offset, offset + buf.size
        total = max(total, offset + buf.size)
    return total


def _lower_bound(buffers: list[_Buffer], n_steps: int) -> int:
    """The largest total size of buffers live at one step (a sweep over start/end events)."""
    delta = [0] * (n_steps + 2)
    for b in buffers:
        delta[b.start] += b.size
        delta[b.end + 1] -= b.size
    best = cur = 0
    for d in delta:
        cur += d
        best = max(best, cur)
    return best


@register_pass("plan_memory")
def plan_memory(graph: Graph, *, alignment: int = 64) -> Graph:
    """Place every node output of ``graph`` in one arena (module docstring).

    Returns a copy of ``graph`` (the given one is unchanged) whose values carry ``Value.mem``
    and whose meta gains ``naive_bytes``, ``lower_bound_bytes``, ``arena_bytes``,
    ``inplace_reuses`` and ``alignment``.
    """
    if alignment < 1 or alignment & (alignment - 1):
        raise EmberError(f"plan_memory: alignment must be a power of two, not {alignment}")
    vmap: dict[int, Value] = {}  # plan a copy: the given graph's Values stay unplanned
    nodes = []
    for n in graph.nodes:
        c = clone_node(n, [vmap.get(id(v), v) for v in n.inputs])
        vmap.update((id(o), co) for o, co in zip(n.outputs, c.outputs))
        nodes.append(c)
    graph = Graph(graph.name, list(graph.inputs), list(graph.params), nodes,
                  [vmap.get(id(v), v) for v in graph.outputs], graph.meta)
    buffers, reuses = _buffers(graph, alignment)
    arena = greedy_by_size(buffers)
    for b in buffers:
        for v in b.values:
            v.mem = (ARENA, b.offset)
    naive = sum(b.size * len(b.values) for b in buffers)  # (a chain's values: one size)
    meta = {**graph.meta, "naive_bytes": naive,
            "lower_bound_bytes": _lower_bound(buffers, len(graph.nodes)),
            "arena_bytes": arena, "inplace_reuses": reuses, "alignment": alignment}
    graph.meta = meta
    return graph
