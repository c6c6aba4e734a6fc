"""``mx.nd.contrib``: every registry op MXNet names ``_contrib_X`` as ``X`` (box_nms,
BilinearResize2D, ROIAlign, MultiBoxPrior, ...; generated from the registry, as
``mx.sym.contrib``), and isnan, isinf, isfinite, rand_zipfian."""
from __future__ import annotations

from ember.ir import all_names as _all_names

from .register import make_function as _make_function


def _op_fn(name):
    def fn(*args, **kw):
        from ember import ndarray as nd
        return getattr(nd, name)(*args, **kw)
    fn.__name__ = name
    fn.__doc__ = f"Same as ``nd.{name}``."
    return fn


def _fill() -> None:
    """``X`` for every op answering to ``_contrib_X`` (real module attributes, so
    ``'box_encode' in nd.contrib.__dict__`` holds, as GluonCV tests)."""
    for name, op in _all_names().items():
        if name.startswith("_contrib_"):
            globals().setdefault(name[len("_contrib_"):], _make_function(op, name))


_fill()
isnan = _op_fn("isnan")
isinf = _op_fn("isinf")
isfinite = _op_fn("isfinite")


def zipfian_candidates(F, true_classes, num_sampled: int, range_max: int, **placement):
    """Candidate classes from the log-uniform (Zipfian) distribution over [0, range_max),
    P(c) = log((c + 2) / (c + 1)) / log(range_max + 1), drawn with replacement, and the
    expected counts of ``true_classes`` and of the candidates in ``num_sampled`` draws.
    ``F`` is ``ember.nd`` or ``ember.sym``: one formula for both namespaces."""
    import math
    log_range = math.log(range_max + 1)
    u = F.random.uniform(0.0, log_range, shape=(num_sampled,), dtype="float64", **placement)
    sampled = F.cast(F.exp(u) - 1.0, dtype="int64") % range_max  # exp(u) - 1 is log-uniform

    def expected_count(classes):
        c = F.cast(classes, dtype="float64")
        return F.log((c + 2.0) / (c + 1.0)) / log_range * num_sampled
    return sampled, expected_count(true_classes), expected_count(sampled)


def rand_zipfian(true_classes, num_sampled: int, range_max: int, ctx=None):
    """(sampled classes int64, expected count of each true class, expected count of each
    sampled class), for sampled softmax (MXNet's ``nd.contrib.rand_zipfian``)."""
    from ember import ndarray as nd
    return zipfian_candidates(nd, true_classes, num_sampled, range_max, ctx=ctx)
