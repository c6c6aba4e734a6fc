"""``mx.sym.contrib``: MXNet's ``_contrib_*`` ops without the prefix, and ``rand_zipfian``."""
from ember.ir import all_names as _all_names


def _fill() -> None:
    from ember import symbol
    for name in _all_names():
        if name.startswith("_contrib_") and hasattr(symbol, name):
            globals().setdefault(name[len("_contrib_"):], getattr(symbol, name))
    for name in ("isnan", "isinf", "isfinite"):
        globals()[name] = getattr(symbol, name)


def rand_zipfian(true_classes, num_sampled: int, range_max: int):
    """Symbols of (sampled classes, expected counts of the true classes, expected counts of
    the sampled ones); see ``ember.nd.contrib.rand_zipfian``."""
    from ember import symbol
    from ember.ndarray.contrib import zipfian_candidates
    return zipfian_candidates(symbol, true_classes, num_sampled, range_max)


_fill()
