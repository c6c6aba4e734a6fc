"""The ``fuse`` pass: operator fusion on the post-dominator tree (TVM relay's FuseOps).

The algorithm is TVM's (``src/relay/transforms/fuse_ops.cc``; Chen et al., "TVM: An
Automated End-to-End Optimizing Compiler for Deep Learning", OSDI 2018, s.3):

1. Every node gets a pattern, its op's kind (``OpKind`` orders them as TVM's
   ``OpPatternKind``: ELEMWISE < BROADCAST < INJECTIVE < REDUCE < OUT_EWISE < OPAQUE).
   Nodes with side effects (``op.mutated``), randomness (``op.random``), several outputs or
   unknown shapes are OPAQUE; an ELEMWISE/BROADCAST op without a scalar template counts as
   INJECTIVE (code generators handle it as data movement, not as a template).
   Each edge producer -> consumer carries the consumer's pattern, ELEMWISE when the consumer
   broadcasts but this argument already has the output's shape.
2. The post-dominator tree, built in reverse topological order: a node's parent is the least
   common ancestor of its consumers; the path pattern is the combination (max) of the edge
   patterns met on the way. Nodes computing a graph output have no parent.
3. Union-find groups; each node in topological order tries to join its post-dominator's
   group when every node on every path between them satisfies the rule of its pattern:
   - OUT_EWISE (phase 0): the path is elementwise and the nodes on it at most BROADCAST:
     dense + bias + relu;
   - ELEMWISE/BROADCAST (phases 0 and 1): the path pattern is at most INJECTIVE or REDUCE,
     the nodes on it at most INJECTIVE and the sink any fusable group: chains, broadcast
     prologues, reduction prologues, side inputs of an epilogue;
   - INJECTIVE (phase 1, so that dense epilogues finish first): all INJECTIVE or less;
   - REDUCE (phase 0; ember's addition, TVM leaves reductions alone): an elementwise
     epilogue in the reduced space (path pattern ELEMWISE, nodes at most BROADCAST).
   Since a node only joins a node that post-dominates it, every group has one output.
   ``max_group_size`` and ``max_args`` (distinct values read from outside) refuse a merge,
   as TVM's ``max_fuse_depth`` and ``max_function_args`` do.
4. Before that, row-wise composites are matched by pattern (as TVM's MergeComposite runs
   before FuseOps): log_softmax + pick (cross-entropy) and its gradient
   ``pick_backward -> g - exp(y) * sum(g)``, each with an elementwise epilogue.

Every group of two nodes or more becomes one fused node (``ir/fused.py`` states its
contract); lone nodes stay as they are.
"""
from __future__ import annotations

import heapq
from collections.abc import Callable

from ember.ir.errors import EmberError
from ember.ir.fused import make_fused_node
from ember.ir.graph import Graph, Node, Value, clone_node
from ember.ir.ops import OpKind
from ember.passes import register_pass

E, B, INJ, R, OUT, OPQ = (k.value for k in (OpKind.ELEMWISE, OpKind.BROADCAST,
                                          OpKind.INJECTIVE, OpKind.REDUCE, OpKind.OUT_EWISE,
                                          OpKind.OPAQUE))
_KIND = {E: "elemwise", B: "broadcast", INJ: "injective", R: "reduce", OUT: "out_ewise"}


def node_pattern(node: Node) -> int:
    """The fusion pattern (an ``OpKind`` value) of one node; see the module docstring."""
    op, at = node.op, node.attr_dict
    if node.body is not None or len(node.outputs) != 1 or op.random or op.mutated(at):
        return OPQ
    if not all(v.type.known for v in (*node.inputs, *node.outputs)):
        return OPQ
    k = op.kind.value
    if k in (E, B) and op.template is None:
        return INJ
    return k


class _Fuser:
    """The indexed forward graph, its post-dominator tree and the union-find of groups."""

    def __init__(self, graph: Graph, max_group_size: int, max_args: int):
        self.nodes = graph.nodes
        self.max_size, self.max_args = max_group_size, max_args
        index = {id(n): i for i, n in enumerate(self.nodes)}
        self.pattern = [node_pattern(n) for n in self.nodes]
        n_nodes = len(self.nodes)
        # edges[i]: (consumer index, edge pattern), once per use
        self.edges: list[list[tuple[int, int]]] = [[] for _ in range(n_nodes)]
        for j, n in enumerate(self.nodes):
            out_shape = n.outputs[0].type.shape if n.outputs else None
            for v in n.inputs:
                i = index.get(id(v.producer)) if v.producer is not None else None
                if i is None:
                    continue
                p = self.pattern[j]
                if p == B and v.type.shape == out_shape:
                    p = E
                self.edges[i].append((j, p))
        outs = {id(v) for v in graph.outputs}
        self.extern = [any(id(o) in outs for o in n.outputs) for n in self.nodes]
        self._post_dominators()
        self.parent_g = list(range(n_nodes))        # union-find
        self.gpattern = list(self.pattern)          # valid at roots (and as TVM, own groups)
        self.members = [[i] for i in range(n_nodes)]
        self.locked = [False] * n_nodes             # composites: not touched again

    # ---- post-dominator tree (TVM's DominatorTree::PostDom) -------------------------------
    def _post_dominators(self) -> None:
        n = len(self.nodes)
        self.pdom: list[int | None] = [None] * n
        self.depth = [1] * n
        self.dpat = [OPQ] * n

        def lca(a: int | None, b: int | None, pat: int) -> tuple[int | None, int]:
            while a != b:
                if a is None or b is None:
                    return None, pat
                if self.depth[a] < self.depth[b]:
                    pat, b = max(pat, self.dpat[b]), self.pdom[b]
                elif self.depth[b] < self.depth[a]:
                    pat, a = max(pat, self.dpat[a]), self.pdom[a]
                else:
                    pat = max(pat, self.dpat[a], self.dpat[b])
                    a, b = self.pdom[a], self.pdom[b]
            return a, pat

        for i in reversed(range(n)):
            if self.extern[i] or not self.edges[i]:
                continue
            pat = E
            parent: int | None = self.edges[i][0][0]
            pat = max(pat, self.edges[i][0][1])
            for j, ep in self.edges[i][1:]:
                parent, pat = lca(parent, j, pat)
                pat = max(pat, ep)
            self.pdom[i] = parent
            self.dpat[i] = pat
            self.depth[i] = 1 if parent is None else self.depth[parent] + 1

    # ---- groups --------------------------------------------------------------------------
    def find(self, i: int) -> int:
        while self.parent_g[i] != i:
            self.parent_g[i] = self.parent_g[self.parent_g[i]]
            i = self.parent_g[i]
        return i

    def _path(self, src: int, sink: int) -> list[int]:
        """Nodes on the paths from ``src`` to ``sink`` (both excluded)."""
        seen, stack, out = set(), [j for j, _ in self.edges[src]], []
        while stack:
            k = stack.pop()
            if k in seen or k == sink:
                continue
            seen.add(k)
            out.append(k)
            stack.extend(j for j, _ in self.edges[k])
        return out

    def check_path(self, src: int, sink: int, fcond: Callable[[int, bool], bool]) -> bool:
        """TVM's CheckPath: ``fcond(group pattern, is_sink)`` on every node on the paths."""
        if not fcond(self.gpattern[self.find(sink)], True):
            return False
        return all(fcond(self.gpattern[self.find(k)], False) for k in self._path(src, sink))

    def try_commit(self, src: int, sink: int) -> bool:
        """Merge the groups of ``src`` and of the path into ``sink``'s, within the limits."""
        roots = {self.find(k) for k in (src, *self._path(src, sink))}
        target = self.find(sink)
        roots.discard(target)
        if any(self.locked[r] for r in roots | {target}):
            return False
        merged = [m for r in (*roots, target) for m in self.members[r]]
        if len(merged) > self.max_size or self._n_args(merged) > self.max_args:
            return False
        for r in roots:
            self.parent_g[r] = target
            self.gpattern[target] = max(self.gpattern[target], self.gpattern[r])
            self.members[target] += self.members[r]
            self.members[r] = []
        return True

    def _n_args(self, members: list[int]) -> int:
        inside = {id(self.nodes[m]) for m in members}
        return len({id(v) for m in members for v in self.nodes[m].inputs
                    if v.producer is None or id(v.producer) not in inside})

    def lock(self, group: list[int]) -> None:
        """Make ``group`` (node indices) one group that the algorithm leaves alone."""
        target = group[-1]
        for i in group:
            self.parent_g[i] = target
            self.locked[i] = True
        self.members[target] = sorted(group)
        for i in group[:-1]:
            self.members[i] = []
        self.gpattern[target] = OPQ

    def run(self) -> None:
        """TVM's RunFuse, phases 0 (everything but injective) and 1 (injective)."""
        for phase in (0, 1):
            for i in range(len(self.nodes)):
                pat, p = self.gpattern[i], self.pdom[i]
                if self.locked[i] or pat == OPQ or p is None or self.find(i) == self.find(p):
                    continue
                dpat = self.dpat[i]
                if pat == OUT:
                    ok = phase == 0 and dpat == E and self.check_path(
                        i, p, lambda k, sink: k <= B)
                elif pat <= B:
                    ok = (dpat <= INJ or dpat == R) and self.check_path(
                        i, p, lambda k, sink: k != OPQ if sink else k <= INJ)
                elif pat == INJ:
                    ok = phase == 1 and self.check_path(i, p, lambda k, sink: k <= INJ)
                else:  # REDUCE: an elementwise epilogue in the reduced space
                    ok = phase == 0 and dpat == E and self.check_path(
                        i, p, lambda k, sink: k <= B)
                if ok:
                    self.try_commit(i, p)

    def groups(self) -> list[list[int]]:
        """The groups of two nodes or more, each sorted, in order of their last node."""
        gs = [sorted(self.members[r]) for r in range(len(self.nodes))
              if self.find(r) == r and len(self.members[r]) > 1]
        return sorted(gs, key=lambda g: g[-1])


def _order(units: list[Node], producer: dict[int, Node], key: dict[int, int]) -> list[Node]:
    """Stable topological order of ``units`` (Kahn's algorithm, smallest ``key`` first);
    ``producer`` maps id(value) to the unit computing it."""
    deps = {id(n): {id(producer[id(v)]) for v in n.inputs if id(v) in producer}
            for n in units}
    users: dict[int, list[Node]] = {}
    for n in units:
        for d in deps[id(n)]:
            users.setdefault(d, []).append(n)
    waiting = {id(n): len(deps[id(n)]) for n in units}
    heap = [(key[id(n)], n) for n in units if not deps[id(n)]]
    heapq.heapify(heap)
    out: list[Node] = []
    while heap:
        _, n = heapq.heappop(heap)
        out.append(n)
        for u in users.get(id(n), []):
            waiting[id(u)] -= 1
            if waiting[id(u)] == 0:
                heapq.heappush(heap, (key[id(u)], u))
    if len(out) != len(units):
        raise EmberError("fuse: the fused graph has a cycle (a group is not convex)")
    return out


def _group_kind(members: list[Node], patterns: list[int]) -> tuple[str, int]:
    """The kind of a TVM-style group and the position of its master (or -1); a BROADCAST
    op whose inputs all have its output's shape counts as ELEMWISE here."""
    patterns = [E if p == B and all(v.type.shape == n.outputs[0].type.shape
                                    for v in n.inputs) else p
                for n, p in zip(members, patterns)]
    top = max(patterns)
    if top in (R, OUT):
        return _KIND[top], patterns.index(top)
    return _KIND[top], -1


# ---- row-wise composites (matched before the TVM algorithm, like MergeComposite) ---------
def _axis(node: Node, data: int = 0) -> int | None:
    ax, nd = node.attr_dict.get("axis"), node.inputs[data].type.ndim
    if isinstance(ax, tuple) and len(ax) == 1:
        ax = ax[0]
    return ax % nd if isinstance(ax, int) and nd else None


def _convex(graph: Graph, group: set[int], users: dict[int, list[Node]]) -> bool:
    """Whether no path leaves the group (node indices) and comes back into it."""
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    stack = [index[id(u)] for i in group for o in graph.nodes[i].outputs
             for u in users.get(id(o), []) if index[id(u)] not in group]
    seen: set[int] = set()
    while stack:
        k = stack.pop()
        if k in group:
            return False
        if k not in seen:
            seen.add(k)
            stack.extend(index[id(u)] for o in graph.nodes[k].outputs
                         for u in users.get(id(o), []))
    return True


def match_composites(graph: Graph, pattern: list[int], max_size: int
                     ) -> list[tuple[list[int], str, int]]:
    """``(node indices, kind, master index)`` of each softmax cross-entropy composite.

    ``softmax_xent``: ``pick(log_softmax(x), label)`` along one axis; ``softmax_xent_grad``:
    ``g - exp(y) * sum(g, axis, keepdims)`` with ``y = log_softmax(..)`` (log_softmax's
    gradient rule), with ``g = pick_backward(..)`` when only these read it. Both then take
    the chain of elementwise ops that alone read their result (``negative``, a scale).
    """
    nodes = graph.nodes
    index = {id(n): i for i, n in enumerate(nodes)}
    users: dict[int, list[Node]] = {}
    for n in nodes:
        for v in n.inputs:
            users.setdefault(id(v), []).append(n)
    outs = {id(v) for v in graph.outputs}
    taken: set[int] = set()
    found: list[tuple[list[int], str, int]] = []

    def only_read_by(v: Value, *readers: Node) -> bool:
        return id(v) not in outs and all(u in readers for u in users.get(id(v), []))

    def producer(v: Value, *names: str) -> Node | None:
        p = v.producer
        return p if p is not None and id(p) in index and p.op.name in names else None

    def known(group: list[int]) -> bool:
        return all(v.type.known for i in group for v in (*nodes[i].inputs, *nodes[i].outputs))

    def add(group: list[int], kind: str, master: int) -> None:
        group = sorted(group)
        while len(group) < max_size:  # elementwise epilogue
            tail = nodes[group[-1]].outputs[0]
            us = users.get(id(tail), [])
            if id(tail) in outs or len(us) != 1 or pattern[index[id(us[0])]] not in (E, B) \
                    or us[0].outputs[0].type != tail.type or index[id(us[0])] in taken \
                    or not _convex(graph, {*group, index[id(us[0])]}, users):
                break
            group.append(index[id(us[0])])
        if len(group) <= max_size and known(group) and _convex(graph, set(group), users):
            taken.update(group)
            found.append((group, kind, master))

    for i, n in enumerate(nodes):
        if n.op.name == "log_softmax" and not n.attr_dict["use_length"] and i not in taken:
            for p in users.get(id(n.outputs[0]), []):
                if p.op.name == "pick" and p.inputs[0] is n.outputs[0] \
                        and _axis(p) == _axis(n) and index[id(p)] not in taken:
                    add([i, index[id(p)]], "softmax_xent", i)
                    break
        if n.op.name not in ("sub", "elemwise_sub") or i in taken:
            continue
        g, mv = n.inputs
        m = producer(mv, "mul", "elemwise_mul")
        if m is None or not only_read_by(mv, n):
            continue
        e = next((p for v in m.inputs if (p := producer(v, "exp"))), None)
        s = next((p for v in m.inputs if (p := producer(v, "sum"))), None)
        ls = producer(e.inputs[0], "log_softmax") if e is not None else None
        if ls is None or s is None or s.inputs[0] is not g or not only_read_by(s.outputs[0], m) \
                or not s.attr_dict["keepdims"] or s.attr_dict["exclude"] \
                or _axis(s) != _axis(ls):
            continue
        group = [index[id(s)], index[id(m)], i]
        if only_read_by(e.outputs[0], m):
            group.append(index[id(e)])
        pb = producer(g, "pick_backward")
        if pb is not None and _axis(pb, 2) == _axis(ls) and only_read_by(g, s, n):
            group.append(index[id(pb)])
        if not taken.intersection(group):
            add(group, "softmax_xent_grad", index[id(s)])
    return found


@register_pass("fuse")
def fuse(graph: Graph, *, max_group_size: int = 64, max_args: int = 32) -> Graph:
    """Group the nodes of ``graph`` into fused nodes (TVM's FuseOps; module docstring).

    ``max_group_size``: most nodes in one group; ``max_args``: most distinct values a group
    reads from outside. Returns a new graph (the given one is unchanged) whose
    ``meta['fused_groups']`` counts the fused nodes.
    """
    if max_group_size < 2:
        return Graph(graph.name, list(graph.inputs), list(graph.params), list(graph.nodes),
                     list(graph.outputs), {**graph.meta, "fused_groups": 0})
    fz = _Fuser(graph, max_group_size, max_args)
    composites = match_composites(graph, fz.pattern, max_group_size)
    for group, _, _ in composites:
        fz.lock(group)
    fz.run()
    special = {g[-1]: (kind, master) for g, kind, master in composites}
    users: dict[int, list[Node]] = {}
    for n in graph.nodes:
        for v in n.inputs:
            users.setdefault(id(v), []).append(n)
    outs = {id(v) for v in graph.outputs}

    groups = fz.groups()
    in_group = {i for g in groups for i in g}
    units: list[Node] = []
    producer: dict[int, Node] = {}
    key: dict[int, int] = {}
    vmap: dict[int, Value] = {}  # id(old value) -> the value standing for it now
    for gi, g in enumerate(groups):
        members = [graph.nodes[i] for i in g]
        if g[-1] in special:
            kind, m = special[g[-1]]
            master = graph.nodes[m]
        else:
            kind, mpos = _group_kind(members, [fz.pattern[i] for i in g])
            master = members[mpos] if mpos >= 0 else None
            if kind == "out_ewise":  # the GEMM first: no member feeds it (see ir/fused.py)
                members = [master] + [n for n in members if n is not master]
        inside = {id(n) for n in members}
        escapes = [o for n in members for o in n.outputs
                   if id(o) in outs or any(id(u) not in inside for u in users.get(id(o), []))]
        name = "fused_" + "_".join(n.op.name for n in members) + f"_{gi}"
        node, replaced = make_fused_node(members, escapes, kind, name, master)
        units.append(node)
        key[id(node)] = g[-1]
        producer.update((id(old), node) for old in replaced)
        vmap.update((id(old), new) for old, new in zip(replaced, node.outputs))
    for i, n in enumerate(graph.nodes):
        if i not in in_group:
            units.append(n)
            key[id(n)] = i
            producer.update((id(o), n) for o in n.outputs)
    # rewire every unit onto the fused outputs, producers first
    fresh = {id(n) for n in units[:len(groups)]}
    new_nodes: list[Node] = []
    for n in _order(units, producer, key):
        ins = [vmap.get(id(v), v) for v in n.inputs]
        if id(n) in fresh or all(a is b for a, b in zip(ins, n.inputs)):
            n.inputs = ins  # a fused node made here, or a node left as it was
            new_nodes.append(n)
            continue
        c = clone_node(n, ins)
        vmap.update((id(o), co) for o, co in zip(n.outputs, c.outputs))
        new_nodes.append(c)
    outputs = [vmap.get(id(v), v) for v in graph.outputs]
    return Graph(graph.name, list(graph.inputs), list(graph.params), new_nodes, outputs,
                 {**graph.meta, "fused_groups": len(groups)})
