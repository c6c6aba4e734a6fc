"""``@ember.compile``: trace a function of NDArrays (and of hybrid blocks) into one graph.

The function runs once per input signature with Symbols in place of its arrays; the blocks
it calls trace themselves, so their parameters become graph parameters. The graph goes
through the pass pipeline and a backend, and later calls run the compiled code. Inside
``autograd.record()`` the compiled function is one tape entry whose backward is the
compiled backward graph, exactly like a hybridized block.
"""
from __future__ import annotations

import functools

from ember import autograd
from ember.base import MXNetError
from ember.ndarray.ndarray import NDArray


class CompiledFunction:
    """A function compiled per input signature (shapes, dtypes, training mode, gradients)."""

    def __init__(self, fn, backend: str | None = None):
        functools.update_wrapper(self, fn)
        self._fn = fn
        self._backend = backend
        self._cache: dict = {}

    def __call__(self, *args):
        from ember.gluon.cached_op import CachedGraph
        from ember.gluon.parameter import _BY_VALUE
        for a in args:
            if not isinstance(a, NDArray):
                raise MXNetError(f"{self._fn.__name__}: compiled functions take NDArray "
                                 f"arguments only, got {type(a).__name__}")
        with_grad = autograd.is_recording()
        key = (tuple((a.shape, a.dtype) for a in args), autograd.is_training(), with_grad)
        cached = self._cache.get(key)
        if cached is None:
            from ember.gluon.cached_op import default_backend
            cached = CachedGraph(self._fn, args, key[1], with_grad,
                                 self._backend or default_backend(), self._fn.__name__,
                                 _BY_VALUE)
            self._cache[key] = cached
        return cached(args, args[0].context if args else None)

    @property
    def graphs(self) -> list:
        """The optimised graphs compiled so far (one per signature)."""
        return [c.graph for c in self._cache.values()]


def compile(fn=None, *, backend: str | None = None):
    """Decorator: ``@ember.compile`` or ``@ember.compile(backend="cpu")``."""
    if fn is None:
        return lambda f: CompiledFunction(f, backend)
    return CompiledFunction(fn, backend)
