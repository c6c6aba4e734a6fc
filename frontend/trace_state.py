"""What ``@ember.compile`` knows while it traces a whole training step.

Tracing runs the user's function once on Symbols. Inside, ``loss.backward()`` on a Symbol
asks the ``autodiff`` pass for the gradients of every trainable parameter read so far,
``param.data()``/``param.grad()`` return the parameter's current Symbol and its gradient,
``nd.<op>(..., out=weight)`` (how optimizers update) makes the result the parameter's new
value, and concrete NDArrays an op reads (optimizer states such as momentum) become graph
parameters bound to their own buffers, so ops that update them in place keep doing so.
After the run, the new values of updated parameters are copied into their arrays.
"""
from __future__ import annotations

import threading

import numpy as np

from ember.base import MXNetError

_local = threading.local()


def current() -> TraceState | None:
    """The trace in progress in this thread, if any."""
    return getattr(_local, "state", None)


class TraceState:
    """Parameters read, gradients made, states captured and values written by one trace."""

    def __init__(self, name: str, inputs: list):
        self.name = name
        self.inputs = inputs            # Symbols standing for the call's arrays
        self.values: dict = {}          # id(Parameter) -> its current Symbol
        self.params: dict = {}          # id(Parameter) -> Parameter
        self.grads: dict = {}           # id(Parameter) -> gradient Symbol
        self.captured: dict = {}        # id(NDArray) -> (NDArray, Symbol)
        self.written: dict = {}         # id(Parameter) -> Parameter whose value changed
        self.updates: list = []         # (optimizer, indices) counted by the traced step
        self.reads: list = []           # what each of those updates read once counted
        self.rescales: list = []        # (optimizer, rescale_grad the step set)
        self.feeds: list = []           # (updates counted before, values fn, array): see feed
        self._prev = None

    def __enter__(self):
        self._prev = current()
        _local.state = self
        return self

    def __exit__(self, *exc):
        _local.state = self._prev

    # ---- parameters ------------------------------------------------------------------------
    def value_of(self, param):
        """The parameter's current value in the trace (its variable until it is updated)."""
        key = id(param)
        if key not in self.values:
            self.values[key] = param.var()
            self.params[key] = param
        return self.values[key]

    def grad_of(self, param):
        g = self.grads.get(id(param))
        if g is None:
            raise MXNetError(f"{self.name}: the gradient of {param.name} was read before "
                             "loss.backward() in the compiled function")
        return g

    def capture(self, array):
        """A graph parameter standing for a concrete NDArray (bound to its buffer)."""
        from ember import symbol as sym
        key = id(array)
        if key not in self.captured:
            self.captured[key] = (array, sym.var(f"state{len(self.captured)}",
                                                 shape=array.shape, dtype=array.dtype))
        return self.captured[key][1]

    def assign(self, target, value):
        """``out=target``: ``value`` becomes what ``target`` holds from now on."""
        for key, cur in self.values.items():
            if cur is target:
                self.values[key] = value
                self.written[key] = self.params[key]
                return
        raise MXNetError(f"{self.name}: out= must name a parameter's array while tracing")

    def context_of(self, value):
        """The context of the parameter whose current value is the Symbol ``value``, or None
        (a Symbol itself only knows the default context)."""
        for key, cur in self.values.items():
            if cur is value:
                return self.params[key].list_ctx()[0]
        return None

    # ---- optimizers ------------------------------------------------------------------------
    def count_updates(self, optimizer, index):
        """Remember that the step counted updates of ``index`` (a compiled step replays the
        count before each run), what the update reads once counted (learning rate, step
        count...: baked into the graph) and the ``rescale_grad`` the step set."""
        index = list(index) if isinstance(index, list | tuple) else [index]
        if all(opt is not optimizer for opt, _ in self.updates):
            self.rescales.append((optimizer, optimizer.rescale_grad))
        self.updates.append((optimizer, index))
        self.reads.append(optimizer._traced_reads(index))

    def feed(self, values_of, values: list):
        """A float64 array holding ``values``, the per-step scalars of an update (learning
        rate, step count) that the update op reads as an input: a compiled step refills it
        with ``values_of()`` before each run, at the same point of its replayed update
        counts, instead of tracing again. The op reading it captures it like a state."""
        from ember import ndarray as nd
        from ember.context import current_context
        ctxs = [p.list_ctx()[0] for p in self.params.values() if p._data is not None]
        arr = nd.array(np.array(values, dtype=np.float64), ctx=ctxs[0] if ctxs
                       else current_context(), dtype=np.float64)
        self.feeds.append((len(self.updates), values_of, arr))
        return arr

    # ---- backward ----------------------------------------------------------------------------
    def backward(self, head, head_grad=None):
        """Gradients of ``head`` for every trainable parameter read so far (autodiff pass)."""
        from ember.ir.graph import Graph, topo_nodes
        from ember.passes.autodiff import autodiff
        from ember.symbol import Symbol
        if head_grad is not None:
            raise MXNetError(f"{self.name}: backward(out_grad) is not supported while "
                             "compiling; reduce the loss to the value to differentiate")
        from ember.gluon.parameter import _BY_VALUE
        nodes = topo_nodes([head._value])
        used = {id(v) for n in nodes for v in n.inputs}
        for n in nodes:  # parameters blocks read through their variables
            for v in n.inputs:
                p = _BY_VALUE.get(id(v)) if v.producer is None else None
                if p is not None and self.value_of(p)._value is v:
                    pass
        trainable = [p for p in self.params.values()
                     if p.grad_req != "null" and id(self.values[id(p)]._value) in used]
        params = [self.values[id(p)]._value for p in trainable]
        graph = Graph(self.name, [s._value for s in self.inputs], params, nodes,
                      [head._value])
        joint = autodiff(graph, wrt=params, head_grads="ones")
        for p, g in zip(trainable, joint.outputs[1:]):
            self.grads[id(p)] = Symbol(g)
