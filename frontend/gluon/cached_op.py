"""What ``hybridize()`` turns a HybridBlock into: traced, optimised, compiled graphs.

One :class:`CachedGraph` per input signature (shapes, dtypes, training mode, whether
gradients are wanted), as MXNet's CachedOp keeps one per shape. Inside
``autograd.record()`` the block is ONE tape entry: the forward graph runs at the call and
also returns the residuals the backward needs; the backward graph (from the ``autodiff``
pass, split off by ``split_forward_backward``) runs when the tape reaches the entry.
"""
from __future__ import annotations

import os
import threading
from collections import Counter, OrderedDict

from ember import autograd
from ember.base import MXNetError, NotImplementedForSymbol
from ember.ir.graph import Graph, topo_nodes
from ember.ndarray.ndarray import NDArray
from ember.util import np_shape

FORWARD_PASSES = ["infer_shapes", "simplify"]   # on the traced graph
LOWERING_PASSES = ["fold_batch_norm", "fuse", "plan_memory"]  # on each compiled graph
# "trace": signatures traced, optimised and compiled; "bind": batch sizes bound to an
# already compiled family (batch_family); "dynamic": families that became batch-polymorphic
STATS: Counter = Counter()


def default_backend(ctx=None, requested: str | None = None) -> str:
    """The backend for arrays on ``ctx``: ``cuda`` on a GPU (its arrays are device memory);
    else ``requested``, else ``$EMBER_BACKEND`` (``cpu`` or ``reference``), ``cpu`` when
    unset."""
    if ctx is not None and ctx.device_type == "gpu":
        return "cuda"
    return requested or os.environ.get("EMBER_BACKEND", "cpu")


DEFAULT_MAX_VARIANTS = 32


def max_variants() -> int:
    """``$EMBER_MAX_VARIANTS``: compiled signatures a block or compiled function keeps
    (default 32); the least recently used one is dropped past it."""
    raw = os.environ.get("EMBER_MAX_VARIANTS", "")
    if not raw:
        return DEFAULT_MAX_VARIANTS
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise MXNetError(f"EMBER_MAX_VARIANTS must be a positive integer, got {raw!r}")
    return n


class SignatureCache(OrderedDict):
    """Compiled programs by input signature, least recently used first (an LRU bounded by
    :func:`max_variants`: each program holds its graph, kernels and arena, so a block called
    with a thousand batch sizes must not keep a thousand).

    ``lookup`` is the lock-free hit path; ``build`` compiles a miss under the cache's lock,
    so threads meeting a new signature together compile it once. With ``dynamic`` set
    (hybridize's ``static_shape=False``), signatures that differ only in the batch size
    share one compiled program family (:mod:`.batch_family`).
    """

    def __init__(self, dynamic: bool = False):
        super().__init__()
        self.lock = threading.RLock()
        self.dynamic = dynamic
        self.families = None  # batch_family.FamilyTable, made on first use

    def __reduce__(self):  # a copied or pickled block compiles again
        return SignatureCache, (self.dynamic,)

    def clear(self) -> None:
        """Forget every compiled signature and family."""
        super().clear()
        self.families = None

    def lookup(self, key):
        """The program for ``key`` (now the most recently used), or None."""
        try:
            self.move_to_end(key)
        except KeyError:
            return None
        return self.get(key)

    def build(self, key, make):
        """The program for ``key``, made by ``make()`` if missing; evicts past the bound."""
        with self.lock:
            found = self.lookup(key)
            if found is not None:
                return found
            if self.dynamic:
                from . import batch_family
                if self.families is None:
                    self.families = batch_family.FamilyTable()
                return batch_family.build(self, key, make)
            made = make()
            self.put(key, made)
            return made

    def put(self, key, made) -> None:
        """Store ``made`` under ``key``, evicting the least recently used past the bound."""
        self[key] = made
        limit = max_variants()
        while len(self) > limit:
            self.popitem(last=False)


class InputError(MXNetError, ValueError):
    """A block was called with arguments it cannot take."""


def input_format(args, name: str) -> tuple:
    """MXNet's format of a hybridized call's arguments: 0 for an NDArray, -1 for ``None``, a
    tuple for a nested list/tuple. Other values (numbers, Symbols) raise :class:`InputError`:
    a compiled graph takes arrays only, as in MXNet."""
    def fmt(a):
        if isinstance(a, NDArray):
            return 0
        if a is None:
            return -1
        if isinstance(a, list | tuple):
            return tuple(fmt(x) for x in a)
        raise InputError(f"{name}: when hybridized, the inputs must be NDArrays, None or "
                         f"(nested) lists of them, but got {a!r} of type {type(a).__name__}")
    return tuple(fmt(a) for a in args)


def check_format(stored: tuple, fmt: tuple, name: str) -> None:
    """Raise unless ``fmt`` is the structure the block was first called with, up to trailing
    ``None`` arguments left to their defaults (MXNet's rule)."""
    n = min(len(stored), len(fmt))
    longer = stored if len(stored) > len(fmt) else fmt
    if stored[:n] != fmt[:n] or any(f != -1 for f in longer[n:]):
        raise InputError(f"{name}: the argument structure of the hybridized block does not "
                         f"match the cached version: stored format = {stored}, input format = "
                         f"{fmt} (0: NDArray, -1: None); call hybridize() again to re-trace")


def check_one_context(arrays, name: str) -> None:
    """A hybridized block runs on one context: its array inputs must share it."""
    first = arrays[0].context
    if any(a.context != first for a in arrays[1:]):
        ctxs = sorted({str(a.context) for a in arrays})
        raise InputError(f"{name}: the inputs are on several contexts ({', '.join(ctxs)}); "
                         "a hybridized block takes inputs on one context")


class _Slot:
    """Where the i-th array argument goes in a call's (nested) argument structure."""

    __slots__ = ("i",)

    def __init__(self, i: int):
        self.i = i


def split_args(args, kind=NDArray):
    """(the ``kind`` leaves of nested lists/tuples ``args``, a template to rebuild them).

    Other leaves (``None``, numbers) stay in the template: they are static, part of the
    signature a graph is compiled for.
    """
    leaves: list = []

    def walk(a):
        if isinstance(a, kind):
            leaves.append(a)
            return _Slot(len(leaves) - 1)
        if isinstance(a, list | tuple):
            return type(a)(walk(x) for x in a)
        return a
    return leaves, walk(tuple(args))


def fill(template, values):
    """Rebuild the structure of :func:`split_args` with ``values`` in the array slots."""
    if isinstance(template, _Slot):
        return values[template.i]
    if isinstance(template, list | tuple):
        return type(template)(fill(t, values) for t in template)
    return template


def template_key(template):
    """A hashable description of the static part of an argument structure."""
    if isinstance(template, _Slot):
        return "#"
    if isinstance(template, list | tuple):
        return (type(template).__name__, tuple(template_key(t) for t in template))
    return repr(template)


def trace(fn, args, name: str, params_by_value: dict) -> tuple[Graph, list, object]:
    """Run ``fn`` on Symbols standing for ``args``.

    Returns (graph, the Parameters read, in graph-param order, output structure).
    ``params_by_value`` maps ``id(param.var()._value)`` to the Parameter.
    """
    from ember import symbol as sym
    arrays, template = split_args(args)
    with np_shape(True):  # the arrays' shapes as they are: a batch of 0 rows is 0, not unknown
        ins = [sym.var(f"data{i}", shape=a.shape, dtype=a.dtype) for i, a in enumerate(arrays)]
    from .parameter import parameters_as_symbols
    try:
        with autograd.pause(autograd.is_training()), parameters_as_symbols():
            out = fn(*fill(template, ins))
    except NotImplementedForSymbol as e:
        raise MXNetError(f"{name}: cannot compile{_user_line(e)}: {e} Python control flow "
                         "that depends on tensor values cannot be traced (run it without "
                         "hybridize(), or use F.where)") from None
    except TypeError as e:
        if "truth value" in str(e) or "len()" in str(e):
            raise MXNetError(f"{name}: cannot compile{_user_line(e)}: {e} (run it without "
                             "hybridize(), or use F.where)") from None
        raise
    outs, structure = _flatten(out)
    nodes = topo_nodes([o._value for o in outs])
    inputs = {id(s._value) for s in ins}
    params, pvals, seen = [], [], set()
    for v in [v for n in nodes for v in n.inputs] + [o._value for o in outs]:
        if v.producer is not None or id(v) in inputs or id(v) in seen:
            continue
        seen.add(id(v))
        p = params_by_value.get(id(v))
        if p is None:
            raise MXNetError(f"{name}: the traced graph reads {v.name_hint!r}, which is "
                             "neither an input nor a parameter")
        params.append(p)
        pvals.append(v)
    for p, v in zip(params, pvals):  # lazy parameters learnt their shapes while tracing
        if p._deferred_init and v.type.known:
            p.shape = v.type.shape
            p._finish_deferred_init()
    graph = Graph(name, [s._value for s in ins], pvals, nodes, [o._value for o in outs])
    return graph, params, structure


def _user_line(exc) -> str:
    """`` at file.py:12`` for the innermost user frame of ``exc``'s traceback, if any."""
    from ember.symbol.userloc import traceback_loc
    loc = traceback_loc(exc)
    return f" at {loc}" if loc else ""


def block_params_by_value(block) -> dict:
    """``id(var value) -> Parameter`` for every parameter of ``block``."""
    return {id(p.var()._value): p for p in block.collect_params().values()}


def _flatten(out):
    if isinstance(out, list | tuple):
        flat, structure = [], []
        for o in out:
            f, s = _flatten(o)
            flat.extend(f)
            structure.append(s)
        return flat, (type(out), structure)
    return [out], None


def _unflatten(flat, structure):
    if structure is None:
        return flat.pop(0)
    kind, parts = structure
    return kind(_unflatten(flat, s) for s in parts)


class _Backward:
    """The tape entry's op: runs the compiled backward graph with the saved residuals."""

    __slots__ = ("variant", "residuals", "param_arrays", "ctx", "name", "owner")

    def __init__(self, variant, residuals, param_arrays, ctx, name, owner):
        self.variant, self.residuals, self.param_arrays, self.ctx = \
            variant, residuals, param_arrays, ctx
        self.name, self.owner = name, owner

    def symbolic(self, inputs):
        """The block's graph on Symbols, for ``autograd.get_symbol``."""
        from .graph_views import graph_symbol
        return graph_symbol(self.owner.graph, self.owner.inline_limit, inputs)

    def grad(self, F, inputs, outputs, ograds, attrs):
        heads = [g._data for g in ograds]
        grads = self.variant.backward.run(self.residuals + heads, self.param_arrays)
        out = [None] * len(inputs)
        ctx = self.ctx
        for slot, g in zip(self.variant.grad_slots, grads):
            out[slot] = NDArray(g, ctx)
        return out

    def release(self) -> None:
        """Drop the residuals once autograd has freed this entry: the output NDArrays and
        the entry can stay alive (in a reference cycle until the garbage collector runs),
        but the forward's saved activations go now, and the compiled forward's recycler
        (``backends.cpu_run.Recycler``) reuses their memory on the next step."""
        self.residuals = self.param_arrays = None


def compile_split(graph: Graph, n_outputs: int, wrt: list, backend: str):
    """Compile ``graph``'s forward and, apart, the backward for the Values ``wrt``.

    One joint graph from ``autodiff`` (head gradients as inputs) is optimised, split by
    ``split_forward_backward`` and lowered twice. Returns ``(forward, backward,
    residual_src)``: the forward Executable returns the outputs followed by the residuals
    the backward needs, except residuals that are forward inputs, which the caller passes
    from its own arguments; ``residual_src[i]`` is ``("in", input index)`` or
    ``("out", output index)``.
    """
    from ember.compile_cache import split
    from ember.runtime.executable import Executable
    fwd, bwd, residual_src = split(graph, n_outputs, wrt, backend,
                                   lambda: _split_graphs(graph, n_outputs, wrt))
    return Executable(fwd, backend), Executable(bwd, backend), residual_src


def _split_graphs(graph: Graph, n_outputs: int, wrt: list):
    """:func:`compile_split`'s passes: the lowered forward and backward graphs."""
    from ember.passes import run_pipeline
    from ember.passes.autodiff import autodiff
    from ember.passes.partition import split_forward_backward
    n_args = len(graph.inputs)
    joint = autodiff(graph, wrt=wrt, head_grads="input")
    joint = run_pipeline(joint, FORWARD_PASSES, keep_stop_gradient=False)
    fwd, bwd, _ = split_forward_backward(joint, n_outputs, joint.inputs[n_args:])
    position = {id(v): i for i, v in enumerate(fwd.inputs)}
    kept, residual_src = list(fwd.outputs[:n_outputs]), []
    for v in fwd.outputs[n_outputs:]:
        if id(v) in position:
            residual_src.append(("in", position[id(v)]))
        else:
            residual_src.append(("out", len(kept)))
            kept.append(v)
    fwd = Graph(fwd.name, fwd.inputs, fwd.params, fwd.nodes, kept, dict(fwd.meta))
    return (run_pipeline(fwd, LOWERING_PASSES), run_pipeline(bwd, LOWERING_PASSES),
            residual_src)


class _Variant:
    """The forward+backward pair compiled for one set of inputs that need gradients.

    ``residual_src[k]``: where residual k comes from, ``('out', j)`` (forward output j) or
    ``('in', i)`` (data input i itself, which the forward graph then does not return: the
    tape keeps the caller's array, as MXNet's CachedOp keeps its input NDArrays).
    """

    __slots__ = ("forward", "backward", "grad_slots", "residual_src")

    def __init__(self, graph: Graph, n_outputs: int, wrt_inputs: list[int],
                 wrt_params: list[int], backend: str):
        n_args = len(graph.inputs)
        wrt = [graph.inputs[i] for i in wrt_inputs] + [graph.params[i] for i in wrt_params]
        self.forward, self.backward, self.residual_src = compile_split(
            graph, n_outputs, wrt, backend)
        # tape-entry input slot of each gradient: data inputs first, then the params
        self.grad_slots = list(wrt_inputs) + [n_args + i for i in wrt_params]


class CachedGraph:
    """The compiled forward (and, when gradients are wanted, backward) of one signature.

    With gradients, one :class:`_Variant` per set of data inputs that need them (compiled
    on first sight): a gradient nobody reads, such as the batch's, is never computed.
    """

    def __init__(self, fn, args, training: bool, with_grad: bool, backend: str, name: str,
                 params_by_value: dict, inline_limit: int = 2):
        from ember import compile_cache
        from ember.runtime.executable import Executable
        self.name, self.inline_limit = name, inline_limit
        self.backend = backend
        # how to compile this signature again for other arguments (BoundGraph's fallback)
        self._remake = (fn, training, with_grad, backend, name, params_by_value, inline_limit)
        STATS["trace"] += 1
        graph, self.params, self.structure = trace(fn, args, name, params_by_value)
        self.n_outputs = len(graph.outputs)
        graph = compile_cache.optimize(graph, FORWARD_PASSES, backend)
        self.graph = graph
        self.backward = None
        self._variants: dict[tuple, _Variant] = {}
        self._lock = threading.Lock()
        self._wrt_params = [i for i, p in enumerate(self.params) if p.grad_req != "null"]
        self._bwd_name = f"{name}_backward"
        before = compile_cache.new_kernels()
        if not with_grad:
            self.forward = Executable(compile_cache.lower(graph, LOWERING_PASSES, backend),
                                      backend)
            compile_cache.announce(name, before, [self.forward])
            return
        self.forward = None
        variant = self._variant(tuple(autograd._needs_grad(a) for a in split_args(args)[0]))
        self.backward = variant.backward
        compile_cache.announce(name, before, [variant.forward, variant.backward])

    def _variant(self, mask: tuple) -> _Variant:
        v = self._variants.get(mask)
        if v is None:
            with self._lock:  # (compiled once when threads meet it together)
                v = self._variants.get(mask)
                if v is None:
                    wrt_inputs = [i for i, m in enumerate(mask) if m]
                    v = self._variants[mask] = _Variant(
                        self.graph, self.n_outputs, wrt_inputs, self._wrt_params, self.backend)
        return v

    def _param_data(self, ctx) -> list:
        """Each parameter's NDArray on ``ctx`` (one context: its only copy, no lookup)."""
        out = []
        for p in self.params:
            d = p._data
            out.append(d[0] if d is not None and len(d) == 1 else p.data(ctx))
        return out

    def __call__(self, args, ctx):
        if not all(type(a) is NDArray for a in args):
            args = split_args(args)[0]
        params = self._param_data(ctx)
        param_arrays = [d._data for d in params]
        in_arrays = [a._data for a in args]
        n = self.n_outputs
        if self.forward is not None:
            res = self.forward.run(in_arrays, param_arrays)
            outs = [NDArray(r, ctx) for r in res[:n]]
            return outs[0] if self.structure is None else _unflatten(outs, self.structure)
        needs = autograd._needs_grad
        variant = self._variant(tuple(needs(a) for a in args))
        res = variant.forward.run(in_arrays, param_arrays)
        outs = [NDArray(r, ctx) for r in res[:n]]
        residuals = [res[k] if src == "out" else in_arrays[k]
                     for src, k in variant.residual_src]
        entry = _Backward(variant, residuals, param_arrays, ctx, self._bwd_name, self)
        autograd._record(entry, {}, list(args) + params, outs)
        return outs[0] if self.structure is None else _unflatten(outs, self.structure)
