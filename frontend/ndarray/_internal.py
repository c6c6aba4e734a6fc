"""``mx.nd._internal``: the underscored op names MXNet code sometimes calls directly."""
from ember.ir import all_names as _all_names


def _fill():
    from ember import ndarray as nd
    for name in _all_names():
        if name.startswith("_") and hasattr(nd, name):
            globals()[name] = getattr(nd, name)


_fill()
