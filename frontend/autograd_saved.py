"""What autograd's tape keeps of a recorded op's inputs and outputs (``autograd._Node``).

A tape node needs, for the backward pass, only the values its op's gradient rule reads. The
rule is the registry's, shared with the ``autodiff`` pass, which runs it over IR placeholders:
run so once per op, attributes and types (:func:`reads`), it shows which inputs and outputs
the result depends on. The others are kept as their place in the graph, shape and dtype
(:class:`Unread`, :class:`Shape`: what a rule may still ask of a placeholder), so that a
value nothing else holds is freed after the forward: a ResNet's BatchNorm outputs, which
only the ReLU after each reads (its rule reads its output), and the convolutions' outputs as
such (their rule reads their inputs). Imperative ResNet-50 training at batch 16 peaked at
3.0 GB of RSS with every value kept, 2.5 GB so.
"""
from __future__ import annotations

import weakref

import numpy as np


class Shape:
    """An output the gradient rule does not read: what the rule may still ask of it (as of
    the IR's placeholders: shape, dtype, ndim)."""

    __slots__ = ("shape", "dtype")

    def __init__(self, data):
        self.shape, self.dtype = data.shape, data.dtype.type

    @property
    def ndim(self) -> int:
        return len(self.shape)


class Unread:
    """An input the gradient rule does not read, without its data: the array while it lives
    (what it is now: it may have become a variable), else its graph place, shape and dtype."""

    __slots__ = ("_ref", "_node", "_grad", "_grad_req", "shape", "dtype", "_ctx")

    def __init__(self, x):
        self._ref = weakref.ref(x)
        self._node, self._grad, self._grad_req = x._node, x._grad, x._grad_req
        self.shape, self.dtype, self._ctx = x.shape, x.dtype, x._ctx

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def live(self):
        x = self._ref()
        return self if x is None else x


_READS: dict = {}   # (op, attrs, input and output types) -> what the rule reads
_READS_MAX = 4096


def reads(op, attrs, inputs, outs):
    """(inputs read, outputs read) by ``op``'s gradient rule, found by running it once over
    placeholders of these types (its IR form, as the ``autodiff`` pass runs it) and seeing
    which of them its result depends on; None (keep everything) for ops that are not the
    registry's (hybridized blocks, custom Functions), device arrays, and where that run
    fails. (On every recorded op: kept to a dictionary lookup.)"""
    if type(op) is not _OPDEF[0]:
        if _OPDEF[0] is None:
            from ember.ir.ops import OpDef
            _OPDEF[0] = OpDef
            return reads(op, attrs, inputs, outs)
        return None
    big = False
    for arrays in (outs, inputs):
        for a in arrays:
            d = a._data
            if type(d) is not np.ndarray:   # (device arrays: everything kept)
                return None
            big = big or d.nbytes >= MIN_FREED_BYTES
    if not big:   # small arrays only: not worth a lookup on every op
        return None
    types = [(a._data.shape, a._data.dtype) for a in inputs]
    types.append(None)
    types += [(a._data.shape, a._data.dtype) for a in outs]
    try:
        key = (op, tuple(attrs.items()), tuple(types))
        found = _READS.get(key, False)
    except TypeError:   # an unhashable attribute value (a list): by its text, if plain
        if not all(_plain(v) for v in attrs.values()):
            return None
        key = (op, repr(sorted(attrs.items())), tuple(types))
        found = _READS.get(key, False)
    if found is False:
        if len(_READS) >= _READS_MAX:
            _READS.clear()
        found = None
        if op.grad is not None and op.name not in _USER_CODE:
            found = _probe(op, attrs, inputs, outs)
        _READS[key] = found
    return found


_OPDEF: list = [None]   # ember.ir.ops.OpDef (imported on first use)
MIN_FREED_BYTES = 1 << 18   # ops whose arrays are all smaller keep them all (256 KiB)
_USER_CODE = ("Custom",)   # (its shape rule runs the user's class: not for a probe)


def _plain(v) -> bool:
    """An attribute value that can key :data:`_READS` (hashable, compared by value)."""
    if isinstance(v, tuple | list):
        return all(_plain(a) for a in v)
    return v is None or type(v) in (bool, int, float, str)


def _probe(op, attrs, inputs, outs):
    """:func:`reads`' run of the rule over placeholders (None: keep everything). A
    placeholder counts as read once anything but its shape, dtype or ndim is asked of it
    (an op's input, even in a result the rule then drops)."""
    from ember.ir.emit import F, Sym
    from ember.ir.graph import Value
    from ember.ir.types import TensorType

    class Watched(Sym):
        __slots__ = ("_v", "hit")

        def __init__(self, value):   # (not Sym's: ``_value`` is the watch here)
            self._v, self.hit = value, False

        @property
        def _value(self):
            self.hit = True
            return self._v

        shape = property(lambda self: self._v.type.shape)
        dtype = property(lambda self: np.dtype(self._v.type.dtype).type)
        ndim = property(lambda self: self._v.type.ndim)

    def place(a, kind=Watched):
        return kind(Value(TensorType(a.shape, a._data.dtype.name)))
    ins, os_ = [place(a) for a in inputs], [place(a) for a in outs]
    try:
        res = op.grad(F, ins, os_, [place(a, Sym) for a in outs], dict(attrs))
    except Exception:  # a rule that needs the values themselves: keep everything
        return None
    if any(r is not None and not isinstance(r, Sym) for r in res):
        return None
    for r in res:   # (a placeholder given back as a gradient is read)
        if isinstance(r, Watched):
            r.hit = True
    return [p.hit for p in ins], [p.hit for p in os_]


def live(x):
    """A tape input as it is now (an :class:`Unread` whose array still lives: the array)."""
    return x.live() if type(x) is Unread else x
