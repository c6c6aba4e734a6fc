"""What ``hybridize()`` turns a HybridBlock into: traced, optimised, compiled graphs.

One :class:`CachedGraph` per input signature (shapes, dtypes, training mode, whether
gradients are wanted), as MXNet's CachedOp keeps one per shape. Inside
``autograd.record()`` the block is ONE tape entry: the forward graph runs at the call and
also returns the residuals the backward needs; the backward graph (from the ``autodiff``
pass, split off by ``split_forward_backward``) runs when the tape reaches the entry.
"""
from __future__ import annotations

import os

import numpy as np

from ember import autograd
from ember.base import MXNetError, NotImplementedForSymbol
from ember.ir.graph import Graph, topo_nodes
from ember.ndarray.ndarray import NDArray

FORWARD_PASSES = ["infer_shapes", "simplify"]   # on the traced graph
LOWERING_PASSES = ["fuse", "plan_memory"]       # on each graph that is compiled


def default_backend() -> str:
    """``$EMBER_BACKEND`` (``cpu`` or ``reference``), ``cpu`` when unset."""
    return os.environ.get("EMBER_BACKEND", "cpu")


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
    ins = [sym.var(f"data{i}", shape=a.shape, dtype=a.dtype) for i, a in enumerate(arrays)]
    try:
        with autograd.pause(autograd.is_training()):
            out = fn(*fill(template, ins))
    except NotImplementedForSymbol as e:
        raise MXNetError(f"{name}: cannot compile: {e} Python control flow that depends on "
                         "tensor values cannot be traced (run it without hybridize(), or use "
                         "F.where)") from None
    except TypeError as e:
        if "truth value" in str(e) or "len()" in str(e):
            raise MXNetError(f"{name}: cannot compile: {e} (run it without hybridize(), or "
                             "use F.where)") from None
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

    def __init__(self, cached, residuals, param_arrays, ctx):
        self.cached, self.residuals, self.param_arrays, self.ctx = \
            cached, residuals, param_arrays, ctx
        self.name = f"{cached.name}_backward"

    def grad(self, F, inputs, outputs, ograds, attrs):
        heads = [g._data for g in ograds]
        grads = self.cached.backward.run(self.residuals + heads, self.param_arrays)
        out = [None] * len(inputs)
        for slot, g in zip(self.cached.grad_slots, grads):
            out[slot] = NDArray(np.asarray(g), self.ctx)
        return out


class CachedGraph:
    """The compiled forward (and, when gradients are wanted, backward) of one signature."""

    def __init__(self, fn, args, training: bool, with_grad: bool, backend: str, name: str,
                 params_by_value: dict):
        from ember.passes import run_pipeline
        from ember.runtime.executable import Executable
        self.name = name
        graph, self.params, self.structure = trace(fn, args, name, params_by_value)
        self.n_outputs = len(graph.outputs)
        graph = run_pipeline(graph, FORWARD_PASSES)
        self.graph = graph
        if not with_grad:
            self.forward = Executable(run_pipeline(graph, LOWERING_PASSES), backend)
            self.backward = None
            return
        from ember.passes.autodiff import autodiff
        from ember.passes.partition import split_forward_backward
        wrt_params = [i for i, p in enumerate(self.params) if p.grad_req != "null"]
        n_args = len(graph.inputs)
        wrt = list(graph.inputs) + [graph.params[i] for i in wrt_params]
        joint = autodiff(graph, wrt=wrt, head_grads="input")
        joint = run_pipeline(joint, FORWARD_PASSES, keep_stop_gradient=False)
        heads = joint.inputs[n_args:]
        fwd, bwd, _ = split_forward_backward(joint, self.n_outputs, heads)
        self.forward = Executable(run_pipeline(fwd, LOWERING_PASSES), backend)
        self.backward = Executable(run_pipeline(bwd, LOWERING_PASSES), backend)
        # tape-entry input slot of each gradient: data inputs first, then the params
        self.grad_slots = list(range(n_args)) + [n_args + i for i in wrt_params]

    def __call__(self, args, ctx):
        args, _ = split_args(args)
        params = [p.data(ctx) for p in self.params]
        param_arrays = [d._data for d in params]
        res = self.forward.run([a._data for a in args], param_arrays)
        outs = [NDArray(np.asarray(r), ctx) for r in res[:self.n_outputs]]
        if self.backward is not None:
            residuals = [np.asarray(r) for r in res[self.n_outputs:]]
            autograd._record(_Backward(self, residuals, param_arrays, ctx), {},
                             list(args) + params, outs)
        return _unflatten(list(outs), self.structure)
