"""``mx.util``: NumPy-shape semantics switches (ember keeps MXNet 1.x legacy shapes)."""
from __future__ import annotations

import functools
from contextlib import contextmanager

_STATE = {"np_shape": False, "np_array": False}


def is_np_shape() -> bool:
    """True inside ``np_shape(True)``: zero-dim and zero-size shapes are real shapes."""
    return _STATE["np_shape"]


def set_np_shape(active: bool) -> bool:
    """Switch NumPy shape semantics; returns the previous setting."""
    prev, _STATE["np_shape"] = _STATE["np_shape"], bool(active)
    return prev


@contextmanager
def np_shape(active: bool = True):
    """Scope with NumPy shape semantics on (or off)."""
    prev = set_np_shape(active)
    try:
        yield
    finally:
        set_np_shape(prev)


def use_np_shape(func):
    """Decorator: run ``func`` with NumPy shape semantics."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with np_shape(True):
            return func(*args, **kwargs)
    return wrapper


def is_np_array() -> bool:
    return _STATE["np_array"]


def use_np(func):
    """Decorator: run ``func`` (or every method of a class) with NumPy semantics on."""
    if isinstance(func, type):
        for k, v in list(vars(func).items()):
            if callable(v) and not k.startswith("__"):
                setattr(func, k, use_np(v))
        return func

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        prev_shape, prev_array = _STATE["np_shape"], _STATE["np_array"]
        _STATE["np_shape"] = _STATE["np_array"] = True
        try:
            return func(*args, **kwargs)
        finally:
            _STATE["np_shape"], _STATE["np_array"] = prev_shape, prev_array
    return wrapper


def set_np(shape: bool = True, array: bool = True) -> None:
    """Turn NumPy semantics on; ember supports only the shape half."""
    set_np_shape(shape)


def reset_np() -> None:
    set_np_shape(False)


def getenv(name: str):
    import os
    return os.environ.get(name)


def setenv(name: str, value) -> None:
    import os
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = str(value)
