"""``mx.sym._internal``: the underscored op names MXNet code sometimes calls directly
(``mx.symbol._internal._identity_with_attr_like_rhs``), as Symbol functions."""
from ember.ir import all_names as _all_names


def _fill():
    from ember import symbol
    for name in _all_names():
        if name.startswith("_") and hasattr(symbol, name):
            globals()[name] = getattr(symbol, name)


_fill()
