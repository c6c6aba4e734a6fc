"""What a Symbol answers when code asks for its value.

Under ``hybridize()`` and ``@ember.compile`` the user's code runs once on Symbols to build a
graph; a Symbol is a placeholder with a shape and a dtype, never numbers. ``.asnumpy()``,
``.asscalar()``, ``float(x)`` and the like therefore raise :class:`TracedValueError` (an
MXNetError, and an AttributeError/TypeError as the plain failures were) that says so, where
the call is, and what to do instead.
"""
from __future__ import annotations

from ember.base import NotImplementedForSymbol, TracedValueError

# NDArray methods that read values (Symbol has none of them)
VALUE_METHODS = frozenset({"asnumpy", "asscalar", "item", "tolist"})


def _where() -> str:
    from .userloc import user_loc
    loc = user_loc()
    return f" at {loc}" if loc else ""


def _desc(sym) -> str:
    t = getattr(getattr(sym, "_value", None), "type", None)
    return f" (shape {t.shape}, {t.dtype})" if t is not None else ""


def no_truth(sym) -> NotImplementedForSymbol:
    """The error for ``bool(sym)``: an ``if`` on a traced value (MXNet's error class)."""
    e = NotImplementedForSymbol(type(sym).__bool__, "bool")
    e.args = (f"bool() of a Symbol{_desc(sym)}{_where()}: values are not available while "
              "hybridize() or @ember.compile traces the code, so an if/while on a tensor's "
              "value cannot be traced; use F.where (nd.where), or run without "
              "hybridize()/@ember.compile.",)
    return e


def no_value(sym, what: str) -> TracedValueError:
    """The error for ``what`` (``.asnumpy()``, ``float()``) asked of ``sym``."""
    return TracedValueError(
        f"{what} of a Symbol{_desc(sym)}{_where()}: values are not available while hybridize() or "
        "@ember.compile traces the code (it runs once on placeholders to build a graph). "
        "Compute with F.* / nd ops and return the array, then read it outside the traced "
        "code (out.asnumpy()); x.shape gives shapes while tracing; or run without "
        "hybridize()/@ember.compile to inspect values.")


class NoValues:
    """Mixin of :class:`ember.symbol.Symbol`: value reads raise :func:`no_value`."""

    __slots__ = ()

    def __getattr__(self, name):
        if name in VALUE_METHODS:
            raise no_value(self, f".{name}()")
        raise AttributeError(f"'{type(self).__name__}' object has no attribute {name!r}")

    def __float__(self):
        raise no_value(self, "float()")

    def __int__(self):
        raise no_value(self, "int()")

    def __complex__(self):
        raise no_value(self, "complex()")

    def __array__(self, dtype=None, copy=None):
        raise no_value(self, "numpy.asarray()")
