"""Reverse-mode automatic differentiation of eager code (MXNet's ``mx.autograd``).

While ``record()`` is active, each op applied to an array that needs a gradient becomes a
tape node (op, attrs, input arrays, output data); the output arrays point at their node, so
the tape is the graph reachable from the heads (as in micrograd, but over whole tensors).
``backward`` walks it in reverse topological order and applies each op's gradient rule from
the registry, with ``F = ember.nd``: the rule's own ops are recorded when
``create_graph=True``, which is all that higher-order gradients need.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np

from ember.ir import EmberError

from .autograd_saved import Shape, Unread, live, reads


class _State(threading.local):
    """Recording and training mode, per thread (as MXNet keeps them): a new thread starts
    with both off, and ``record()`` in one thread is not seen by another."""

    recording = False
    training = False


_STATE = _State()


class _Node:
    """One recorded op application: of its inputs and outputs, what the gradient rule reads
    (``autograd_saved``: the others as their graph place, shape and dtype)."""

    __slots__ = ("op", "attrs", "inputs", "out_data", "out_ctx", "freed")

    def __init__(self, op, attrs, inputs, outs):
        self.op = op
        self.attrs = attrs
        self.out_ctx = outs[0]._ctx if outs else None
        self.freed = False
        keep = reads(op, attrs, inputs, outs)
        if keep is None:
            self.inputs = list(inputs)
            self.out_data = [o._data for o in outs]
        else:
            ins, outs_kept = keep
            self.inputs = [x if k or x._node is None else Unread(x)
                           for x, k in zip(inputs, ins)]
            self.out_data = [o._data if k else Shape(o._data)
                             for o, k in zip(outs, outs_kept)]


_CONSTANT = _Node(None, None, (), ())  # producer of values recorded from no variable


def _needs_grad(x) -> bool:
    """Whether ``x`` depends on a variable through recorded ops (or is one)."""
    return (x._node is not None and x._node[0] is not _CONSTANT) or x._grad is not None


def _record(op, attrs, inputs, outs):
    """Put one op application on the tape if any input takes part in differentiation."""
    for x in inputs:
        if _needs_grad(x):
            break
    else:  # recorded, but constant: MXNet differentiates it to zero, not to an error
        node = _CONSTANT
        for i, o in enumerate(outs):
            o._node = (node, i)
        return
    node = _Node(op, attrs, inputs, outs)
    for i, o in enumerate(outs):
        o._node = (node, i)


# ---- scopes ------------------------------------------------------------------------------
def set_recording(is_recording: bool) -> bool:
    """Turn recording on or off; returns the previous state."""
    prev, _STATE.recording = _STATE.recording, bool(is_recording)
    return prev


def set_training(train_mode: bool) -> bool:
    """Turn training mode on or off; returns the previous state."""
    prev, _STATE.training = _STATE.training, bool(train_mode)
    return prev


def is_recording() -> bool:
    return _STATE.recording


def is_training() -> bool:
    return _STATE.training


@contextmanager
def _scope(recording, training):
    prev_r = set_recording(recording) if recording is not None else None
    prev_t = set_training(training) if training is not None else None
    try:
        yield
    finally:
        if recording is not None:
            set_recording(prev_r)
        if training is not None:
            set_training(prev_t)


def record(train_mode: bool = True):
    """Record ops for differentiation (``with autograd.record():``)."""
    return _scope(True, train_mode)


def pause(train_mode: bool = False):
    """Stop recording inside a ``record()`` block."""
    return _scope(False, train_mode)


def train_mode():
    """Training-mode behaviour (Dropout, BatchNorm) without changing recording."""
    return _scope(None, True)


def predict_mode():
    """Inference-mode behaviour without changing recording."""
    return _scope(None, False)


# ---- variables ---------------------------------------------------------------------------
def mark_variables(variables, gradients, grad_reqs="write"):
    """Make ``variables`` leaves whose gradients go into ``gradients``."""
    if not isinstance(variables, list | tuple):
        variables, gradients = [variables], [gradients]
    reqs = [grad_reqs] * len(variables) if isinstance(grad_reqs, str) else list(grad_reqs)
    for v, g, r in zip(variables, gradients, reqs):
        if r not in ("write", "add", "null", "inplace"):
            raise EmberError(f"grad_req must be 'write', 'add' or 'null', not {r!r}")
        v._grad, v._grad_req, v._node = (None if r == "null" else g), r, None
        v._fresh_grad = False
        if r == "inplace":
            v._grad_req = "write"


# ---- the reverse sweep -------------------------------------------------------------------
def _topo(heads):
    """Tape nodes reachable from ``heads``, inputs before users."""
    from ember.ir.graph import topo_order
    return topo_order([h._node[0] for h in heads if h._node is not None],
                      lambda n: [] if n.freed else
                      [x._node[0] for x in map(live, n.inputs or ()) if x._node is not None])


def _run(heads, head_grads, retain_graph, create_graph, train_mode):
    """Gradients of the heads w.r.t. every leaf reached: {id(leaf): (leaf, grad)}."""
    from ember import ndarray as nd
    from ember.ndarray.ndarray import NDArray

    acc: dict = {}     # (id(node), out index) -> grad
    leaves: dict = {}  # id(array) -> (array, grad)

    def add(x, g):
        if x._node is not None:
            key = (id(x._node[0]), x._node[1])
            acc[key] = g if key not in acc else acc[key] + g
        elif x._grad is not None:
            k = id(x)
            leaves[k] = (x, g if k not in leaves else leaves[k][1] + g)

    if head_grads is None:
        head_grads = [None] * len(heads)
    for h, hg in zip(heads, head_grads):
        if h._node is not None and h._node[0] is _CONSTANT:
            continue  # recorded from no variable: every gradient of it is zero
        if not _needs_grad(h):
            raise EmberError("cannot differentiate: the head is not in a recorded graph; "
                             "call attach_grad() on inputs and compute inside autograd.record()")
        if h._node is not None and h._node[0].freed:
            raise EmberError(f"{h._node[0].op.name}: this graph was freed by an earlier "
                             "backward; pass retain_graph=True to differentiate it twice")
        if hg is None:
            hg = NDArray(_filled_like(h._data, 1), h._ctx)
        elif not isinstance(hg, NDArray):
            hg = NDArray(_on_device_of(h._data, np.asarray(hg, dtype=h._data.dtype)), h._ctx)
        add(h, hg)
    order = _topo(heads)
    with _scope(create_graph, train_mode):
        for node in reversed(order):
            ogs = [acc.pop((id(node), i), None) for i in range(len(node.out_data))]
            if all(g is None for g in ogs):
                continue
            if node.freed:  # history freed by an earlier backward: a constant now (MXNet)
                continue
            ogs = [NDArray(_filled_like(d, 0), node.out_ctx) if g is None else g
                   for g, d in zip(ogs, node.out_data)]
            if node.op.grad is None:  # (MXNet's words)
                raise EmberError(f"Operator {node.op.name} is non-differentiable because it "
                                 "didn't register FGradient attribute (it was applied inside "
                                 "autograd.record() to an array that needs a gradient)")
            outs = [NDArray(d, node.out_ctx, (node, i)) if type(d) is not Shape else d
                    for i, d in enumerate(node.out_data)]
            inputs = [live(x) for x in node.inputs]
            grads = node.op.grad(nd, inputs, outs, ogs, node.attrs)
            for x, g in zip(inputs, grads):
                if g is not None and _needs_grad(x):
                    if g.shape != x.shape:
                        raise EmberError(f"{node.op.name}: gradient rule gave shape {g.shape} "
                                         f"for an input of shape {x.shape}")
                    add(x, g)
            if not retain_graph:  # release the saved arrays; the node stays as a marker
                node.freed, node.inputs, node.out_data = True, None, []
                release = getattr(node.op, "release", None)
                if release is not None:  # an op holding saved arrays of its own
                    release()
    return leaves


def _filled_like(data, value):
    """An array of ``value`` shaped like ``data``, in the same memory (host or GPU)."""
    if type(data) is np.ndarray:
        return np.full_like(data, value)
    if type(data) is Shape:   # (kept for host arrays only)
        return np.full(data.shape, value, data.dtype)
    return _on_device_of(data, np.full(data.shape, value, dtype=data.dtype))


def _on_device_of(data, host):
    """Host array ``host`` in the memory ``data`` lives in."""
    if type(data) is np.ndarray:
        return host
    from ember.backends import cuda_device
    return cuda_device.to_device(host, cuda_device.device_of(data))


def backward(heads, head_grads=None, retain_graph: bool = False, train_mode: bool = True):
    """Accumulate the heads' gradients into the marked variables' ``.grad`` buffers."""
    heads = heads if isinstance(heads, list | tuple) else [heads]
    if head_grads is not None and not isinstance(head_grads, list | tuple):
        head_grads = [head_grads]
    leaves = _run(heads, head_grads, retain_graph, False, train_mode)
    # a freshly computed gradient array can become the buffer instead of being copied into
    # it, unless something else may hold it: the caller's head gradients, another leaf
    taken = {id(getattr(h, "_data", h)) for h in head_grads or ()}
    for var, g in leaves.values():
        var._fresh_grad = True
        buf, new = var._grad._data, g._data
        if type(buf) is not np.ndarray:  # a GPU array: add on the device, copy into the buffer
            from ember.ndarray.device import assign
            if var._grad_req == "add":
                new = (var._grad + g)._data
            assign(buf, new)
        elif var._grad_req == "add":
            buf += new
        elif var._grad_req == "write":
            if (type(new) is np.ndarray and new.base is None and id(new) not in taken
                    and new.shape == buf.shape and new.dtype == buf.dtype
                    and new.flags.c_contiguous and new.flags.writeable):
                var._grad._data = new
                taken.add(id(new))
            else:
                buf[...] = new


def grad(heads, variables, head_grads=None, retain_graph=None, create_graph: bool = False,
         train_mode: bool = True):
    """Gradients of ``heads`` w.r.t. ``variables`` (a list, as MXNet), returned not stored.

    With ``create_graph=True`` the returned gradients are themselves recorded, so they can
    be differentiated again (higher-order gradients).
    """
    from ember.ndarray.ndarray import NDArray
    heads = heads if isinstance(heads, list | tuple) else [heads]
    variables = list(variables) if isinstance(variables, list | tuple) else [variables]
    if head_grads is not None and not isinstance(head_grads, list | tuple):
        head_grads = [head_grads]
    if retain_graph is None:
        retain_graph = create_graph
    for v in variables:
        if v._grad is None:
            raise EmberError("autograd.grad: every variable must have attach_grad() called "
                             "(or be marked with mark_variables) before recording")
    leaves = _run(heads, head_grads, retain_graph, create_graph, train_mode)
    out = []
    for v in variables:
        g = leaves.get(id(v))
        out.append(g[1] if g is not None else NDArray(_filled_like(v._data, 0), v._ctx))
    return out


class _CustomOp:
    """Adapter giving an ``autograd.Function`` instance the registry op interface."""

    def __init__(self, fn):
        self.fn = fn
        self.name = type(fn).__name__

    def grad(self, F, inputs, outputs, ograds, attrs):
        from ember.ndarray.ndarray import NDArray
        with pause():
            res = self.fn.backward(*ograds)
        res = list(res) if isinstance(res, list | tuple) else [res]
        if len(res) != len(inputs):
            raise EmberError(f"{self.name}.backward returned {len(res)} gradients for "
                             f"{len(inputs)} inputs")
        return [r if isinstance(r, NDArray) or r is None else NDArray(np.asarray(r))
                for r in res]


class Function:
    """A custom differentiable function: subclass, define ``forward`` and ``backward``.

    ``forward`` runs with recording paused; ``backward(*output_grads)`` returns one gradient
    per input. Use ``save_for_backward`` to keep tensors for the backward pass.
    """

    def __init__(self):
        self.saved_tensors = ()

    def save_for_backward(self, *args):
        self.saved_tensors = args

    def forward(self, *inputs):
        raise EmberError(f"{type(self).__name__} must define forward()")

    def backward(self, *output_grads):
        raise EmberError(f"{type(self).__name__} must define backward()")

    def __call__(self, *inputs):
        with pause(_STATE.training):
            outputs = self.forward(*inputs)
        outs = list(outputs) if isinstance(outputs, list | tuple) else [outputs]
        if _STATE.recording:
            _record(_CustomOp(self), {}, inputs, outs)
        return outputs


def get_symbol(x):
    """The computation recorded for ``x`` as a Symbol (its leaves become variables).

    Variables (arrays with ``attach_grad``) and other leaves become ``var0``, ``var1``...
    in the order they are met. A hybridized block appears as its graph's ops when it has at
    most ``hybridize(inline_limit=...)`` ops (default 2), else as one ``_CachedOp`` node, as
    in MXNet; a custom ``Function`` has no symbolic form and raises.
    """
    from ember import symbol as sym
    made: dict = {}
    leaves = [0]

    def to_sym(arr):
        node = arr._node
        if node is None or node[0] is _CONSTANT:
            key = id(arr)
            if key not in made:
                made[key] = sym.var(f"var{leaves[0]}", shape=arr.shape, dtype=arr.dtype)
                leaves[0] += 1
            return made[key]
        n, i = node
        if id(n) not in made:
            expand = getattr(n.op, "symbolic", None)  # a hybridized block's graph
            if expand is None and not hasattr(n.op, "infer"):
                raise EmberError(f"get_symbol: {n.op.name} (a custom Function) has no "
                                 "symbolic form")
            ins = [to_sym(live(v)) for v in n.inputs]
            if expand is not None:
                out = expand(ins)
            else:
                attrs = {k: v for k, v in n.attrs.items() if k != "is_train"}
                out = sym.apply(n.op, ins, attrs)
            made[id(n)] = out
        out = made[id(n)]
        return out[i] if len(n.out_data) > 1 else out

    return to_sym(x)
