"""One compiled program for every batch size (issue 13 item 5; MXNet's ``static_shape=False``).

A hybridized block called with inputs that differ only in their first dim (the batch) is a
*family* of signatures. The first batch size is compiled as before (trace, passes, numba);
so is the second, and the family becomes *dynamic* when the first size's compiled graphs,
re-specialised to the second size by the ops' shape rules (:func:`ember.aot_batch.retype`),
print exactly as the second size's own (the check of ``ember.export``'s dynamic batch, here
on the lowered forward and backward graphs that actually run). From then on a new batch
size is *bound*, not compiled: the lowered graphs are retyped (an explicit ``shape``
attribute that starts with the batch moves with it: :func:`moved_batch`), planned
(``plan_memory``, the only pass that runs again) and handed to the backend over arena buffers
shared by the whole family (:class:`ember.runtime.arena.SharedArena`, grown to the largest
size seen), so a new size costs no tracing, no optimisation pass and no numba compile (the
kernels are found by their source, which does not name the batch: ``backends.cpu_memo``),
and memory stays that of the largest batch.

A family whose graphs differ (a slice ending at half the batch, Python code branching on
``x.shape[0]``, a simplification that only holds at batch 1) gets one more chance with the
second size as its template, then stays *fixed*: one compiled program per shape, as before
(and as with ``hybridize(static_shape=True)``). A size the graphs cannot be retyped to, and
a batch of 0, are compiled on their own too. Results never depend on the path taken. The
check compares two batch sizes, as ONNX exporters check their dynamic axes: code that
branches on the batch size only beyond both is not caught.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

from ember import autograd
from ember.aot_batch import _plain as plain_text  # graph text without offsets or names
from ember.aot_batch import at_batch, retype
from ember.ir.errors import EmberError
from ember.ir.graph import Graph
from ember.ir.types import TensorType
from ember.passes import run_pipeline
from ember.runtime.arena import SharedArena
from ember.runtime.executable import Executable

from .cached_op import STATS, CachedGraph, NDArray, _Variant, split_args

MAX_STRIKES = 2  # templates tried before a family stays fixed
MAX_FAMILIES = 64


def batch_of(key) -> tuple[tuple, int, tuple[bool, ...]] | None:
    """(family key, batch, which inputs carry it) of a signature key ``(template, ((shape,
    dtype), ...), *rest)``; None when no input has a batch of at least 1 (those signatures
    compile on their own, as before)."""
    if not isinstance(key, tuple) or len(key) < 2 or not isinstance(key[1], tuple):
        return None
    shapes = [s[0] if isinstance(s, tuple) and len(s) == 2 else None for s in key[1]]
    if any(not isinstance(s, tuple) for s in shapes):
        return None
    ranked = [s for s in shapes if s]
    if not ranked or not isinstance(ranked[0][0], int) or ranked[0][0] < 1:
        return None
    batch = ranked[0][0]
    batched = tuple(bool(s) and s[0] == batch for s in shapes)
    general = tuple(((None, *s[1:]) if b else s, dt) for (s, dt), b in zip(key[1], batched))
    return (key[0], general, *key[2:]), batch, batched


class FamilyTable(OrderedDict):
    """The families of one signature cache, by family key (least recently made first)."""

    def family(self, fkey, batched) -> BatchFamily:
        """The family for ``fkey`` (made on first sight)."""
        fam = self.get(fkey)
        if fam is None:
            fam = self[fkey] = BatchFamily(batched)
            while len(self) > MAX_FAMILIES:
                self.popitem(last=False)
        return fam


def build(cache, key, make):
    """The program for signature ``key`` of ``cache`` (a ``SignatureCache`` whose
    ``families`` is a :class:`FamilyTable`), bound from its family when it can be; called
    under the cache's lock, stores it under ``key``."""
    found = batch_of(key)
    if found is None:
        made = make()
    else:
        fkey, batch, batched = found
        made = cache.families.family(fkey, batched).get(cache, key, batch, make)
    cache.put(key, made)
    return made


class BatchFamily:
    """The signatures of one block that differ only in the batch size (module docstring)."""

    def __init__(self, batched: tuple[bool, ...]):
        self.batched = list(batched)
        self.state = "new"  # -> "checking" -> "dynamic" | "fixed"
        self.strikes = 0
        self.template = None  # the CachedGraph compiled first, until the family is dynamic
        self.template_key = None
        self.batch = 0  # the template's
        self.proto: dict = {}  # dynamic: what a BoundGraph copies (no programs, no arenas)
        self.lowered: dict = {}  # role -> the template's Executable, whose graph is retyped
        self.variants: dict = {}  # gradient mask -> (residual sources, gradient slots)
        self.arenas: dict = {}  # role -> SharedArena
        self.bound: set = set()  # keys of the bindings in the cache

    def arena_bytes(self) -> int:
        """Bytes of the family's shared arenas (flat once the largest batch was seen)."""
        return sum(a.nbytes for a in self.arenas.values())

    def get(self, cache, key, batch: int, make):
        """The program for ``key`` at ``batch``: bound, or compiled by ``make()``."""
        if self.state == "dynamic":
            try:
                return self._bind(cache, key, batch)
            except EmberError:  # a size the graphs refuse: compiled on its own
                return make()
        made = make()
        if self.state == "fixed" or _kind(made) is None:
            self.state = "fixed"
            return made
        if self.template is not None:
            masks = self._same(self.template, made, batch)
            if masks is not None:
                self._go_dynamic(cache, masks)
                try:
                    return self._bind(cache, key, batch)
                except EmberError:
                    return made
            self.strikes += 1
            if self.strikes >= MAX_STRIKES:
                self.state, self.template = "fixed", None
                return made
        self.template, self.template_key, self.batch = made, key, batch
        self.state = "checking"
        return made

    # ---- checking ---------------------------------------------------------------------------
    def _in_types(self, exe, batch: int) -> list[TensorType]:
        return at_batch(list(exe.input_types), self.batched, batch)

    @staticmethod
    def _bwd_types(residual_src, fwd_in: list, fwd_out: list, n_outputs: int) -> list:
        """The backward graph's input types: the residuals', then the head gradients'."""
        res = [fwd_in[k] if src == "in" else fwd_out[k] for src, k in residual_src]
        return res + list(fwd_out[:n_outputs])

    def _same(self, t, other, batch: int) -> list | None:
        """The gradient masks (``[]`` without gradients) whose lowered graphs of ``t``,
        retyped to ``batch``, print as ``other``'s; None when they differ (or none match)."""
        if _kind(t) != _kind(other) or t.n_outputs != other.n_outputs or \
                t.structure != other.structure:
            return None
        hook = moved_batch(self.batch, batch)
        if _kind(t) == "step":  # a compiled function without updates: one program
            same = t.exe.backend == other.exe.backend and \
                [(k, id(b)) for k, b in t.bindings] == [(k, id(b)) for k, b in other.bindings]
            try:
                same = same and _same_graph(t.exe.graph, other.exe.graph,
                                            self._in_types(t.exe, batch), hook)
            except EmberError:
                return None
            return [] if same else None
        if t.backend != other.backend or \
                [id(p) for p in t.params] != [id(p) for p in other.params] or \
                (t.forward is None) != (other.forward is None):
            return None
        try:
            if t.forward is not None:
                same = _same_graph(t.forward.graph, other.forward.graph,
                                   self._in_types(t.forward, batch), hook)
                return [] if same else None
            masks = [m for m in t._variants if m in other._variants]
            for m in masks:
                tv, ov = t._variants[m], other._variants[m]
                if tv.residual_src != ov.residual_src or tv.grad_slots != ov.grad_slots:
                    return None
                ins = self._in_types(tv.forward, batch)
                if not _same_graph(tv.forward.graph, ov.forward.graph, ins, hook):
                    return None
                mine = self._bwd_types(tv.residual_src, list(tv.forward.input_types),
                                       list(tv.forward.output_types), t.n_outputs)
                if mine != list(tv.backward.input_types):
                    return None  # not the input order this module assumes
                bwd = self._bwd_types(tv.residual_src, ins, list(ov.forward.output_types),
                                      t.n_outputs)
                if not _same_graph(tv.backward.graph, ov.backward.graph, bwd, hook):
                    return None
        except EmberError:
            return None
        return masks or None

    def _go_dynamic(self, cache, masks: list) -> None:
        """Keep the template's graphs (not its programs: their arenas go with its cache
        entry); every size, the template's own included, is bound from now on."""
        t = self.template
        if _kind(t) == "step":
            self.lowered["step"] = _Lowered(t.exe)
            self.proto = {k: v for k, v in t.__dict__.items() if k not in ("exe", "graph")}
        elif t.forward is not None:
            self.lowered["forward"] = _Lowered(t.forward)
        for m in masks:
            v = t._variants[m]
            self.lowered[("fwd", m)] = _Lowered(v.forward)
            self.lowered[("bwd", m)] = _Lowered(v.backward)
            self.variants[m] = (list(v.residual_src), list(v.grad_slots))
        if _kind(t) == "graph":
            self.proto = BoundGraph.prototype(t)
        cache.pop(self.template_key, None)
        self.template = self.template_key = None
        self.state = "dynamic"
        STATS["dynamic"] += 1

    # ---- binding ----------------------------------------------------------------------------
    def _program(self, role, in_types: list, hook) -> Executable:
        """The lowered graph of ``role`` retyped to ``in_types``, planned, compiled over
        the role's shared arena (the CPU backend's; other backends allocate their own)."""
        low = self.lowered[role]
        planned = run_pipeline(retype(low.graph, in_types, hook), ["plan_memory"])
        arena = None
        if low.backend == "cpu":
            arena = self.arenas.get(role)
            if arena is None:
                arena = self.arenas[role] = SharedArena()
        return Executable(planned, low.backend, arena=arena)

    def _bind(self, cache, key, batch: int) -> BoundGraph:
        """A :class:`BoundGraph` at ``batch`` (older bindings go when an arena grew)."""
        before = {r: a.generation for r, a in self.arenas.items()}
        hook = moved_batch(self.batch, batch)
        if "step" in self.lowered:
            bound = _step_type().__new__(_step_type())
            bound.__dict__.update(self.proto)
            bound.exe = self._program("step", self._in_types(self.lowered["step"], batch), hook)
            bound.graph = bound.exe.graph
            self._bound(cache, key, before)
            return bound
        first = self.lowered.get("forward") or self.lowered[("fwd", next(iter(self.variants)))]
        bound = BoundGraph(self.proto, self._in_types(first, batch), hook)
        if "forward" in self.lowered:
            bound.forward = self._program("forward", bound.input_types, hook)
        for m, (residual_src, grad_slots) in self.variants.items():
            ins = self._in_types(self.lowered[("fwd", m)], batch)
            fwd = self._program(("fwd", m), ins, hook)
            bwd = self._program(("bwd", m), self._bwd_types(
                residual_src, ins, list(fwd.output_types), bound.n_outputs), hook)
            bound.add_variant(m, fwd, bwd, residual_src, grad_slots)
        self._bound(cache, key, before)
        return bound

    def _bound(self, cache, key, before: dict) -> None:
        """Count a binding for ``key``; when it grew an arena, the older ones go."""
        if any(a.generation != before[r] for r, a in self.arenas.items() if r in before):
            for k in self.bound:  # they point into the old buffers: let them go
                if k != key:
                    cache.pop(k, None)
            self.bound.clear()
        self.bound.add(key)
        if len(self.bound) > 2 * len(cache) + 8:
            self.bound = {k for k in self.bound if k in cache} | {key}
        STATS["bind"] += 1


def _step_type():
    from ember.compile import _Step  # (ember.compile imports this package)
    return _Step


def _kind(made) -> str | None:
    """``"graph"`` for a CachedGraph, ``"step"`` for an ``@ember.compile`` program that
    updates nothing (a step that updates parameters bakes its optimizer's state: fixed)."""
    if type(made) is CachedGraph:
        return "graph"
    if type(made) is _step_type() and not made.updates and not made.written:
        return "step"
    return None


def moved_batch(old: int, new: int):
    """``retype``'s attribute hook from batch ``old`` to ``new``: an explicit ``shape``
    attribute that starts with the old batch, on a node whose output does, starts with the
    new one. Autodiff's rules and simplify's reshape folding write the batch into such
    attributes; a shape that starts with the batch size by coincidence differs from the
    second size's trace, so the family's check catches it."""
    def attrs(node):
        shape = node.attrs and node.attr_dict.get("shape")
        if isinstance(shape, tuple) and shape and shape[0] == old and node.outputs and \
                node.outputs[0].type.shape and node.outputs[0].type.shape[0] == old:
            return {**node.attr_dict, "shape": (new, *shape[1:])}
        return None
    return attrs


def _same_graph(mine, theirs, types, hook) -> bool:
    """Whether ``mine`` retyped to ``types`` prints as ``theirs`` (source lines aside: the
    two sizes were traced from different calls)."""
    return _text(retype(mine, types, hook)) == _text(theirs.copy())


def _text(graph) -> str:
    """``graph``'s text without offsets, node names or source lines (strips them in place:
    pass a copy)."""
    stack = [graph]
    while stack:
        g = stack.pop()
        for n in g.nodes:
            n.loc = None
            if n.body is not None:
                stack.append(n.body)
    return plain_text(graph)


class _Lowered:
    """A compiled program's graph, input types and backend, without the program itself
    (nor its arena)."""

    __slots__ = ("graph", "backend", "input_types")

    def __init__(self, exe: Executable):
        self.graph, self.backend, self.input_types = exe.graph, exe.backend, exe.input_types


class BoundGraph(CachedGraph):
    """A :class:`CachedGraph` at another batch size, bound by :mod:`.batch_family` from the
    family's lowered graphs: no trace, no passes but memory planning, no numba compile.

    It runs the gradient masks the family checked; a call with another mask is compiled on
    its own (as a CachedGraph for that signature) and delegated to.
    """

    @staticmethod
    def prototype(template: CachedGraph) -> dict:
        """What every binding of ``template``'s family shares (no programs)."""
        proto = {k: v for k, v in template.__dict__.items()
                 if k not in ("forward", "backward", "_variants", "_lock", "graph")}
        proto["_template_graph"] = template.graph
        return proto

    def __init__(self, proto: dict, input_types: list, attrs=None):
        self.__dict__.update(proto)
        self.input_types, self._attrs = input_types, attrs
        self.forward = self.backward = self._own = self._graph = None
        self._variants = {}
        self._lock = threading.Lock()

    @property
    def graph(self) -> Graph:
        """The optimised graph at this batch size (retyped when first asked for)."""
        if self._graph is None:
            self._graph = retype(self._template_graph, self.input_types, self._attrs)
        return self._graph

    def add_variant(self, mask: tuple, forward, backward, residual_src, grad_slots) -> None:
        """Run calls whose inputs need gradients as ``mask`` says with these programs."""
        v = _Variant.__new__(_Variant)
        v.forward, v.backward, v.residual_src, v.grad_slots = \
            forward, backward, residual_src, grad_slots
        self._variants[mask] = v
        if self.backward is None:
            self.backward = backward

    def __call__(self, args, ctx):
        if self.forward is None:
            arrays = args if all(type(a) is NDArray for a in args) else split_args(args)[0]
            if tuple(autograd._needs_grad(a) for a in arrays) not in self._variants:
                own = self._own
                if own is None:
                    with self._lock:
                        if self._own is None:
                            fn, *rest = self._remake
                            self._own = CachedGraph(fn, args, *rest)
                        own = self._own
                return own(args, ctx)
        return super().__call__(args, ctx)
