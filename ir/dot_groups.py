"""Which ops ``ember viz --collapse`` draws as one box (used by :mod:`ember.ir.dot`).

Traced nodes carry Gluon's names, whose prefixes are the block scopes that made them:
``resnetv10_stage1_conv0_fwd`` is op ``fwd`` of layer ``conv0`` in block ``stage1`` of
``resnetv10``. :func:`scope_path` reads that path back (the tokens ending in a counter, up to
the op's own part). A collapse picks, for each node, one scope: the first ``depth`` levels
(``--collapse 2``), or the outermost scope whose name matches a regular expression
(``--collapse 'stage\\d+'``). The nodes of one scope become a :class:`Group`, drawn as a
single box, when there are at least two of them and the group is convex (no path leaves it
and comes back, which would draw a cycle).

A box says how often its contents repeat. Consecutive sibling scopes with the same stem and
the same ops and attributes (``unit0``, ``unit1``, ... of one block class) merge into one
box ``xN``. Inside one scope (a ResNet stage, whose residual units have no scope of their
own in Gluon's model zoo) the units are found from the dataflow: a unit ends where a single
value is all that flows on (every other value is consumed), the way a residual unit's output
is; N identical units say ``N x``, differing ones (a first unit that downsamples) ``N units``.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from .graph import Graph, Node
from .printer import fmt_literal, is_default_attr

_SCOPE = re.compile(r"[A-Za-z][A-Za-z0-9]*?\d+")


def scope_path(name: str | None) -> tuple[str, ...]:
    """The block scopes of a Gluon name: ``resnetv10_stage1_conv0_fwd`` gives
    ``('resnetv10', 'stage1', 'conv0')``; the last token (the op's own) is never one."""
    if not name:
        return ()
    tokens = name.split("_")[:-1]
    path = []
    for tok in tokens:
        if not _SCOPE.fullmatch(tok):
            break
        path.append(tok)
    return tuple(path)


def node_scope(node: Node) -> tuple[str, ...]:
    """A node's scope path; a fused node's is the common prefix of its body ops' paths."""
    if node.body is None:
        return scope_path(node.name)
    paths = [node_scope(n) for n in node.body.nodes]
    if not paths:
        return ()
    common = paths[0]
    for p in paths[1:]:
        k = 0
        while k < min(len(common), len(p)) and common[k] == p[k]:
            k += 1
        common = common[:k]
    return common


def op_counts(nodes: list[Node]) -> Counter:
    """Ops by name, counting the bodies of fused nodes rather than the fused nodes."""
    c: Counter = Counter()
    for n in nodes:
        if n.body is not None:
            c.update(op_counts(n.body.nodes))
        else:
            c[n.op.name] += 1
    return c


def _signature(nodes: list[Node]) -> tuple:
    """What makes two runs of ops the same block: ops and their non-default attributes."""
    sig = []
    for n in nodes:
        attrs = tuple((k, fmt_literal(v)) for k, v in n.attrs
                      if not is_default_attr(n.op.attrs, k, v))
        sig.append((n.op.name, attrs, _signature(n.body.nodes) if n.body is not None else ()))
    return tuple(sig)


@dataclass(eq=False)
class Group:
    """Nodes drawn as one box: their scope's name, and how often their contents repeat."""

    name: str
    nodes: list[Node]
    repeats: int = 1
    identical: bool = True  # the repeats are the same ops with the same attributes
    members: set = field(default_factory=set)  # id() of the nodes

    def label(self) -> str:
        counts = op_counts(self.nodes)
        total = sum(counts.values())
        if self.repeats > 1 and self.identical:
            head = f"{self.repeats} units x {total // self.repeats} ops"
        elif self.repeats > 1:
            head = f"{self.repeats} units, {total} ops"
        else:
            head = f"{total} ops"
        lines = [self.name, head]
        items = counts.most_common()
        lines += [f"{k} x{n}" if n > 1 else k for k, n in items[:6]]
        if len(items) > 6:
            lines.append(f"+{len(items) - 6} more kinds")
        return "\n".join(lines)


def _units(nodes: list[Node], params: set[int]) -> list[list[Node]]:
    """``nodes`` cut where exactly one value, the last op's output, flows on."""
    pos = {id(n): i for i, n in enumerate(nodes)}
    last_use: dict[int, int] = {}
    produced_at: dict[int, int] = {}
    for i, n in enumerate(nodes):
        for v in n.inputs:
            if id(v) not in params:
                last_use[id(v)] = i
                produced_at.setdefault(id(v), pos.get(id(v.producer), -1)
                                       if v.producer is not None else -1)
    units, start = [], 0
    for i, n in enumerate(nodes[:-1]):
        live = [v for v, end in last_use.items() if end > i and produced_at[v] <= i]
        if len(live) == 1 and any(id(o) == live[0] for o in n.outputs):
            units.append(nodes[start:i + 1])
            start = i + 1
    units.append(nodes[start:])
    return units


def _period(units: list[list[Node]]) -> int:
    """How many times the shortest repeating run of ``units`` repeats (1: none repeats)."""
    n, sigs = len(units), [_signature(u) for u in units]
    for p in range(1, n // 2 + 1):
        if n % p == 0 and all(sigs[i] == sigs[i + p] for i in range(n - p)):
            return n // p
    return 1


def _repeats(nodes: list[Node], params: set[int]) -> tuple[int, bool]:
    """(repeat count, whether identical) of one scope's nodes, from their dataflow units:
    identical runs of units first; else units with a branch each (a single op after a
    branch, such as the relu after a residual add, joins the unit before it)."""
    units = _units(nodes, params)
    r = _period(units)
    if r > 1:
        return r, True
    merged: list[list[Node]] = []
    for u in units:
        if merged and (len(u) == 1 or len(merged[-1]) == 1):
            merged[-1] = merged[-1] + u
        else:
            merged.append(u)
    r = _period(merged)
    if r > 1:
        return r, True
    if len(merged) > 1 and all(len(u) > 2 for u in merged):
        return len(merged), False
    return 1, True


def _convex(graph: Graph, members: set[int]) -> bool:
    """Whether no path leaves the member nodes and comes back to them."""
    tainted: set[int] = set()  # values reachable from a member through a non-member
    for n in graph.nodes:
        from_member = any(v.producer is not None and id(v.producer) in members
                          for v in n.inputs)
        from_tainted = any(id(v) in tainted for v in n.inputs)
        if id(n) in members:
            if from_tainted:
                return False
        elif from_member or from_tainted:
            tainted.update(id(o) for o in n.outputs)
    return True


def _key(path: tuple[str, ...], collapse) -> tuple[str, ...] | None:
    if isinstance(collapse, int):
        return path[:collapse] if len(path) >= collapse else None
    for k in range(1, len(path) + 1):
        if collapse.fullmatch(path[k - 1]) or collapse.fullmatch("_".join(path[:k])):
            return path[:k]
    return None


def parse_collapse(spec: str | int | None):
    """``--collapse``'s value: a depth (an int, or digits) or a regular expression."""
    if spec is None or isinstance(spec, int):
        return spec
    if isinstance(spec, str) and spec.strip().isdigit():
        return int(spec)
    try:
        return re.compile(spec)
    except re.error as e:
        raise ValueError(f"--collapse {spec!r}: not a depth or a regular expression ({e})") \
            from None


def find_groups(graph: Graph, collapse) -> list[Group]:
    """The boxes of ``graph`` for a collapse spec (see :func:`parse_collapse`), in order."""
    collapse = parse_collapse(collapse)
    if collapse is None:
        return []
    if isinstance(collapse, int) and collapse < 1:
        raise ValueError(f"--collapse {collapse}: a depth is 1 or more")
    by_key: dict[tuple, list[Node]] = {}
    for n in graph.nodes:
        key = _key(node_scope(n), collapse)
        if key:
            by_key.setdefault(key, []).append(n)
    params = {id(v) for v in graph.params}
    groups = []
    for key, nodes in by_key.items():
        members = {id(n) for n in nodes}
        if len(nodes) > 1 and _convex(graph, members):
            r, same = _repeats(nodes, params)
            groups.append(Group("_".join(key), nodes, r, same, members))
    return _merge_siblings(graph, groups)


def _stem(name: str) -> tuple[str, str, str]:
    """(parent scope, last scope without its counter, the counter)."""
    parent, _, last = name.rpartition("_")
    m = re.fullmatch(r"(.*?)(\d+)", last)
    return (parent, m.group(1), m.group(2)) if m else (parent, last, "")


def _merge_siblings(graph: Graph, groups: list[Group]) -> list[Group]:
    """Runs of consecutive sibling groups of one block class with the same ops become one
    group whose repeat count is the run's length."""
    out: list[Group] = []
    run: list[Group] = []

    def flush():
        if len(run) > 1:
            parent, stem, first = _stem(run[0].name)
            last = _stem(run[-1].name)[2]
            name = f"{parent}_{stem}{first}..{last}" if parent else f"{stem}{first}..{last}"
            nodes = [n for g in run for n in g.nodes]
            members = set().union(*(g.members for g in run))
            if _convex(graph, members):
                out.append(Group(name, nodes, len(run), True, members))
                return
        out.extend(run)

    for g in groups:
        if run and (_stem(g.name)[:2] != _stem(run[-1].name)[:2] or not _stem(g.name)[2]
                    or _signature(g.nodes) != _signature(run[-1].nodes)):
            flush()
            run = []
        run.append(g)
    flush()
    return out
