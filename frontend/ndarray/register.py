"""Generate the ``nd.*`` op functions from the registry (one per op name and alias).

Call convention (MXNet's): tensor inputs first, positionally or by name (``data=``,
``weight=``...), then attributes positionally in declaration order or by keyword. ``out=``
writes the result into an existing array; ``name=`` and ``attr=`` are accepted and ignored
eagerly (they name graph nodes when tracing). An input named with a trailing ``?`` is
optional (``bias?``); a variadic op (``*data``) takes any number of arrays.
"""
from __future__ import annotations

from ember.ir import AttrError, all_names
from ember.ir.ops import normalize_attrs

from .ndarray import NDArray, invoke

_IGNORED = ("name", "attr", "num_args")


def make_function(op, name: str | None = None):
    """The eager function of ``op``; the tracer builds its twin from the same parsing."""
    parse = make_parser(op)
    fname = name or op.name

    def fn(*args, out=None, ctx=None, **kwargs):
        tensors, attrs = parse(args, kwargs)
        return invoke(op, tensors, attrs, out=out, ctx=ctx)

    fn.__name__ = fname
    fn.__qualname__ = fname
    fn.__doc__ = op.doc or f"The ``{op.name}`` operator (see ember.ir op registry)."
    return fn


def make_parser(op, tensor_type=NDArray):
    """A function ``(args, kwargs) -> (tensor inputs, attrs)`` for ``op``."""
    attr_names = list(op.attrs)
    if op.variadic:
        def parse(args, kwargs):
            tensors = list(args[0]) if len(args) == 1 and isinstance(args[0], list | tuple) \
                else list(args)
            if not tensors and op.inputs[0][1:] in kwargs:
                tensors = list(kwargs.pop(op.inputs[0][1:]))
            for k in _IGNORED:
                kwargs.pop(k, None)
            for t in tensors:
                if not isinstance(t, tensor_type):
                    raise AttrError(f"{op.name}: expected arrays, got {type(t).__name__}")
            return tensors, normalize_attrs(op, kwargs)
        return parse

    names = [n.rstrip("?") for n in op.inputs]
    optional = [n.endswith("?") for n in op.inputs]
    n_in = len(names)

    def parse(args, kwargs):
        k = 0
        while k < min(len(args), n_in) and (isinstance(args[k], tensor_type)
                                            or (args[k] is None and optional[k])):
            k += 1
        tensors, extra = list(args[:k]), args[k:]
        for i in range(k, n_in):
            tensors.append(kwargs.pop(names[i], None))
        for i, t in enumerate(tensors):
            if t is None and not optional[i]:
                raise AttrError(f"{op.name}: input {names[i]!r} is missing")
            if t is not None and not isinstance(t, tensor_type):
                raise AttrError(f"{op.name}: input {names[i]!r} must be an array, "
                                f"got {type(t).__name__}")
        while tensors and tensors[-1] is None:
            tensors.pop()
        if None in tensors:
            raise AttrError(f"{op.name}: optional inputs may only be left out at the end")
        for key in _IGNORED:
            kwargs.pop(key, None)
        if extra:
            if len(extra) > len(attr_names):
                raise AttrError(f"{op.name}: too many positional arguments")
            for key, v in zip(attr_names, extra):
                if key in kwargs:
                    raise AttrError(f"{op.name}: argument {key!r} given twice")
                kwargs[key] = v
        return tensors, normalize_attrs(op, kwargs)
    return parse


def populate(namespace: dict, tensor_type=NDArray, factory=make_function) -> list[str]:
    """Add a function for every op name and alias not already defined in ``namespace``."""
    added = []
    for name, op in all_names().items():
        if name not in namespace:
            namespace[name] = factory(op, name)
            added.append(name)
    return added
