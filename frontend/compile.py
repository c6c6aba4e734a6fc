"""``@ember.compile``: trace a function of NDArrays (and of hybrid blocks) into one graph.

The function runs once per input signature with Symbols in place of its arrays; the blocks
it calls trace themselves, so their parameters become graph parameters. A whole training
step works: ``autograd.record()``, ``loss.backward()`` (the ``autodiff`` pass, inline) and
``trainer.step()`` (the optimizer's update ops, with ``out=`` rebinding the parameters)
are traced too, and the compiled graph updates parameters and optimizer states in place
when it runs. Inside ``autograd.record()`` a compiled function of arrays is one tape entry
whose backward is the compiled backward graph, exactly like a hybridized block.

The per-step scalars of the optimizers on update ops (SGD, NAG, Signum, Adam, AdamW, FTML,
LAMB, RMSProp, Ftrl) are run-time inputs of the graph: the learning rate after the
``lr_scheduler`` and ``lr_mult``, Adam's bias-corrected rate, the step count. Each update op
reads them from a small float64 array (its ``hyper`` input) that the compiled step refills
before every run with the values an eager ``trainer.step`` would compute (it replays the
update counts, then calls the same functions, at the same point of the counting). The rest
is baked in when the step is traced: weight decay, ``rescale_grad``, the other
hyperparameters. (Adamax, Nadam, AdaGrad, AdaDelta, SGLD and DCASGD update by slice
assignment, which a trace does not support: they do not compile yet.) Before each run the step
compares those with what the graph baked in; where they differ, the count is undone and
the step traced again. So a schedule that changes the rate at every update, or Adam's
step count, runs one program; a new weight decay or momentum traces a new one.

The compiled signatures are kept in a :class:`SignatureCache` (at most
``$EMBER_MAX_VARIANTS``, least recently used dropped). Signatures that differ only in the
batch size share one program (``gluon.batch_family``: bound per size, not traced again),
unless the function updates parameters or states (a step bakes its optimizer's values in).
"""
from __future__ import annotations

import functools

import numpy as np

from ember import autograd
from ember.base import MXNetError
from ember.gluon.cached_op import SignatureCache
from ember.ndarray.ndarray import NDArray


def _fill(arr: NDArray, values: list) -> None:
    """Write a step's scalars into the array an update op reads them from (its buffer is
    bound to the compiled program, so in place)."""
    if type(arr._data) is np.ndarray:
        arr._data[...] = values
    else:  # on a GPU: one copy into the same device buffer, on ember's stream (ordered
        from ember.ndarray.device import assign  # with the replays of the step's graph)
        assign(arr._data, np.asarray(values, dtype=np.float64))


class _Step:
    """One compiled signature of a function that may update parameters and states."""

    def __init__(self, fn, args, training: bool, backend: str, name: str):
        from ember import compile_cache
        from ember import symbol as sym
        from ember.gluon.cached_op import (
            FORWARD_PASSES,
            LOWERING_PASSES,
            STATS,
            _flatten,
            fill,
            split_args,
        )
        from ember.gluon.parameter import _BY_VALUE
        from ember.ir.graph import Graph, topo_nodes
        from ember.runtime.executable import Executable
        from ember.trace_state import TraceState
        from ember.util import np_shape
        STATS["trace"] += 1
        arrays, template = split_args(args)
        with np_shape(True):  # a dim of 0 (an empty batch) is 0 here, not unknown
            ins = [sym.var(f"data{i}", shape=a.shape, dtype=a.dtype)
                   for i, a in enumerate(arrays)]
        state = TraceState(name, ins)
        with state, autograd.pause(training):
            out = fn(*fill(template, ins))
        outs, self.structure = _flatten(out)
        for o in outs:
            if not isinstance(o, sym.Symbol):
                raise MXNetError(f"{name}: a compiled function must return arrays computed "
                                 f"from its inputs, got {type(o).__name__}")
        self.written = list(state.written.values())
        out_values = [o._value for o in outs] + \
            [state.values[id(p)]._value for p in self.written]
        self.n_outputs = len(outs)
        nodes = topo_nodes(out_values)
        inputs = {id(s._value) for s in ins}
        captured = {id(s._value): a for a, s in state.captured.values()}
        self.bindings, leaves, seen = [], [], set()
        for v in [v for n in nodes for v in n.inputs] + out_values:
            if v.producer is not None or id(v) in inputs or id(v) in seen:
                continue
            seen.add(id(v))
            if id(v) in captured:
                self.bindings.append(("state", captured[id(v)]))
            elif id(v) in _BY_VALUE:
                self.bindings.append(("param", _BY_VALUE[id(v)]))
            else:
                raise MXNetError(f"{name}: the traced step reads {v.name_hint!r}, which is "
                                 "neither an argument, a parameter nor an array it captured")
            leaves.append(v)
        self.updates, self.reads, self.rescales = state.updates, state.reads, state.rescales
        self.feeds = state.feeds
        graph = Graph(name, [s._value for s in ins], leaves, nodes, out_values)
        before = compile_cache.new_kernels()
        self.graph = compile_cache.optimize(graph, FORWARD_PASSES + LOWERING_PASSES, backend)
        self.exe = Executable(self.graph, backend)
        compile_cache.announce(name, before, [self.exe])

    def advance(self) -> bool:
        """Do the optimizers' bookkeeping of one more step (``rescale_grad``, update
        counts), as the traced ``trainer.step`` did, and refill the per-step scalars the
        updates read as inputs (learning rates, step counts: each computed at the same
        point of the counting as in the traced step); True if every update then reads
        the same structural values as the graph baked in, else undo it (False: the step
        must be traced again)."""
        if not self.updates:
            return True
        saved = [(opt, dict(opt._index_update_count), opt.num_update, opt.rescale_grad)
                 for opt, _ in self.rescales]
        for opt, rescale in self.rescales:
            opt.rescale_grad = rescale
        reads, fed, f = [], [], 0
        for k, (opt, indices) in enumerate([(None, None), *self.updates]):
            if k:
                opt._count(indices)
                reads.append(opt._traced_reads(indices))
            while f < len(self.feeds) and self.feeds[f][0] == k:
                fed.append(self.feeds[f][1]())
                f += 1
        if reads == self.reads:
            for (_, _, arr), values in zip(self.feeds, fed):
                _fill(arr, values)
            return True
        for opt, counts, num_update, rescale in saved:
            opt._index_update_count.clear()
            opt._index_update_count.update(counts)
            opt.num_update, opt.rescale_grad = num_update, rescale
        return False

    def __call__(self, args):
        from ember.gluon.cached_op import _unflatten, split_args
        arrays, _ = split_args(args)
        ctx = arrays[0].context if arrays else None
        bound = [b.data(ctx)._data if kind == "param" else b._data
                 for kind, b in self.bindings]
        res = self.exe.run([a._data for a in arrays], bound)
        for p, new in zip(self.written, res[self.n_outputs:]):
            for d in p.list_data():
                if type(d._data) is np.ndarray:
                    np.copyto(d._data, new)
                else:  # a GPU parameter: a device-to-device copy
                    from ember.ndarray.device import assign
                    assign(d._data, new)
        outs = [NDArray(r if type(r) is not np.ndarray and hasattr(r, "copy_to_host")
                        else np.asarray(r), ctx) for r in res[:self.n_outputs]]
        return _unflatten(outs, self.structure)


class CompiledFunction:
    """A function compiled per input signature (shapes, dtypes, training mode, gradients)."""

    def __init__(self, fn, backend: str | None = None):
        functools.update_wrapper(self, fn)
        self._fn = fn
        self._backend = backend
        self._cache = SignatureCache(dynamic=True)  # (one program for every batch size)

    def __call__(self, *args):
        from ember.gluon.cached_op import CachedGraph, default_backend, split_args, template_key
        from ember.gluon.parameter import _BY_VALUE
        arrays, template = split_args(args)
        with_grad = autograd.is_recording()
        key = (template_key(template), tuple((a.shape, a.dtype) for a in arrays),
               autograd.is_training(), with_grad, type(arrays[0]._data) if arrays else None)
        cached = self._cache.lookup(key)
        if isinstance(cached, _Step) and not cached.advance():
            cached = None  # the learning rate or step count the graph baked in has moved on
        if cached is None:
            backend = default_backend(arrays[0].context if arrays else None, self._backend)

            def make():
                if with_grad:  # differentiated from outside: one tape entry, like hybridize
                    return CachedGraph(self._fn, args, key[2], True, backend,
                                       self._fn.__name__, _BY_VALUE)
                return _Step(self._fn, args, key[2], backend, self._fn.__name__)
            self._cache.pop(key, None)
            cached = self._cache.build(key, make)
        if isinstance(cached, CachedGraph):
            return cached(args, arrays[0].context if arrays else None)
        return cached(args)

    def clear(self):
        """Forget the compiled graphs (the next call traces again)."""
        self._cache.clear()

    @property
    def graphs(self) -> list:
        """The optimised graphs compiled so far (one per signature)."""
        return [c.graph for c in self._cache.values()]


def compile(fn=None, *, backend: str | None = None):
    """Decorator: ``@ember.compile`` or ``@ember.compile(backend="cpu")``."""
    if fn is None:
        return lambda f: CompiledFunction(f, backend)
    return CompiledFunction(fn, backend)
