"""``ember.sym``: symbolic twins of every ``nd`` op, for tracing and MXNet's symbol API."""
from ember.ir.emit import make_parser as _make_parser
from ember.ndarray.register import populate as _populate

from .symbol import Symbol, Variable, _bind_fluent, apply, var  # noqa: F401


def _make_function(op, name=None):
    parse = _make_parser(op, tensor_type=Symbol)
    fname = name or op.name

    def fn(*args, name=None, **kwargs):
        kwargs.pop("out", None)
        tensors, attrs = parse(args, kwargs)
        return apply(op, tensors, attrs, name=name)
    fn.__name__ = fname
    fn.__doc__ = op.doc or f"Symbolic ``{op.name}``."
    return fn


_populate(globals(), tensor_type=Symbol, factory=_make_function)
_bind_fluent(globals())


def _sym_ufunc(names):
    from ember.ir.emit import _operator
    fwd, rev = _operator(names), _operator(names, reflected=True)

    def fn(lhs, rhs):
        if isinstance(lhs, Symbol):
            return fwd(lhs, rhs)
        if isinstance(rhs, Symbol):
            return rev(rhs, lhs)
        raise TypeError(f"type {type(lhs).__name__} and {type(rhs).__name__} not supported")
    return fn


def _bind_ufuncs():
    """``sym.maximum(x, 1.0)`` etc. take a Symbol or a number on either side, like ``nd``."""
    from ember.ir.emit import OPERATORS as BINARY
    from ember.ndarray.ufuncs import _EXTRA
    pairs = {"add": "add", "subtract": "sub", "multiply": "mul", "divide": "truediv",
             "true_divide": "truediv", "modulo": "mod", "power": "pow", "equal": "eq",
             "not_equal": "ne", "greater": "gt", "greater_equal": "ge", "lesser": "lt",
             "lesser_equal": "le"}
    for fname, key in pairs.items():
        globals()[fname] = _sym_ufunc(BINARY[key])
    for fname, names in _EXTRA.items():
        globals()[fname] = _sym_ufunc(names)


_bind_ufuncs()
