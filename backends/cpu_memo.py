"""Generated kernel sources remembered by what they compute, never by shapes.

A graph compiled again at another batch size (``gluon.batch_family``) has the same fused
groups with other shapes, and the CPU backend's loop kernels do not name a shape (they read
their arrays' ``.shape``): the source of such a group is a function of its ops, their
attributes, dtypes and dataflow, the broadcast flags, the loop rank and the parallel
switch. Keying the generated source on exactly those skips the template expansion (Python
``ast`` work, most of the cost of compiling a graph whose kernels numba already has).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from ember.ir.graph import Node, Value

_SOURCES: dict[tuple, str] = {}


def structure(nodes: Sequence[Node], leaves: Sequence[Value], outputs: Sequence[Value]) -> tuple:
    """The shape-free description of a scalar chain: per node its op, attributes, which
    leaf or earlier result each input is and every dtype; then which values the outputs
    are. Values neither leaves nor results (inputs a template does not read) count by
    dtype only."""
    index = {id(v): k for k, v in enumerate(leaves)}
    parts = []
    for n in nodes:
        ins = tuple((index.get(id(v), -1), v.type.dtype) for v in n.inputs)
        for o in n.outputs:
            index[id(o)] = len(index)
        parts.append((n.op.name, n.attrs, ins, tuple(o.type.dtype for o in n.outputs)))
    return (tuple(parts), tuple(v.type.dtype for v in leaves),
            tuple(index.get(id(v), -1) for v in outputs))


def source(key: tuple, make: Callable[[], str]) -> str:
    """The source remembered under ``key``, made by ``make()`` the first time."""
    src = _SOURCES.get(key)
    if src is None:
        src = _SOURCES[key] = make()
    return src
