"""Generate the ``nd.*`` op functions from the registry (one per op name and alias).

Call convention (MXNet's): tensor inputs first, positionally or by name (``data=``,
``weight=``...), then attributes positionally in declaration order or by keyword. ``out=``
writes the result into an existing array; ``name=`` and ``attr=`` are accepted and ignored
eagerly (they name graph nodes when tracing). An input named with a trailing ``?`` is
optional (``bias?``); a variadic op (``*data``) takes any number of arrays.
"""
from __future__ import annotations

from ember.ir import AttrError, all_names
from ember.ir.emit import Sym
from ember.ir.emit import make_parser as _make_parser

from .ndarray import NDArray, invoke


def make_function(op, name: str | None = None):
    """The eager function of ``op``; the tracer builds its twin from the same parsing."""
    parse = make_parser(op)
    fname = name or op.name

    def fn(*args, out=None, ctx=None, **kwargs):
        try:
            tensors, attrs = parse(args, dict(kwargs))
        except AttrError:
            if _traced(args, kwargs):  # code written with nd.* being traced: emit nodes
                return _traced_call(fname, args, kwargs, out)
            raise
        return invoke(op, tensors, attrs, out=out, ctx=ctx)

    fn.__name__ = fname
    fn.__qualname__ = fname
    fn.__doc__ = op.doc or f"The ``{op.name}`` operator (see ember.ir op registry)."
    return fn


def _traced(args, kwargs) -> bool:
    return any(isinstance(a, Sym) for a in (*args, *kwargs.values()))


def _traced_call(fname, args, kwargs, out):
    """``nd.<op>`` on Symbols: emit the node; inside ``@ember.compile`` concrete arrays
    become captured graph parameters and ``out=`` rebinds the parameter it names."""
    from ember import symbol, trace_state
    trace = trace_state.current()
    if trace is not None:
        args = tuple(trace.capture(a) if isinstance(a, NDArray) else a for a in args)
        kwargs = {k: trace.capture(v) if isinstance(v, NDArray) else v
                  for k, v in kwargs.items()}
    res = getattr(symbol, fname)(*args, **kwargs)
    if out is not None:
        if trace is None:
            raise AttrError(f"{fname}: out= is not available on Symbols")
        targets = out if isinstance(out, list | tuple) else [out]
        results = [res[i] for i in range(len(targets))] if len(targets) > 1 else [res]
        for t, r in zip(targets, results):
            trace.assign(t, r)
    return res


def make_parser(op, tensor_type=NDArray):
    """The argument parser of ``op`` for NDArray inputs (see ``ember.ir.emit``)."""
    return _make_parser(op, tensor_type)


def populate(namespace: dict, tensor_type=NDArray, factory=make_function) -> list[str]:
    """Add a function for every op name and alias not already defined in ``namespace``."""
    added = []
    for name, op in all_names().items():
        if name not in namespace:
            namespace[name] = factory(op, name)
            added.append(name)
    return added
