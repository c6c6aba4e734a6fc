"""``mx.nd.contrib``: the contrib functions ember has (isnan, isinf, isfinite, adamw)."""
from __future__ import annotations


def _op_fn(name):
    def fn(*args, **kw):
        from ember import ndarray as nd
        return getattr(nd, name)(*args, **kw)
    fn.__name__ = name
    fn.__doc__ = f"Same as ``nd.{name}``."
    return fn


isnan = _op_fn("isnan")
isinf = _op_fn("isinf")
isfinite = _op_fn("isfinite")
adamw_update = _op_fn("adamw_update")
mp_adamw_update = _op_fn("mp_adamw_update")
CTCLoss = _op_fn("CTCLoss")
ctc_loss = _op_fn("ctc_loss")
