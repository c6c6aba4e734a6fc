"""Gluon parameters: ``Parameter`` (lazy shapes, deferred init), ``Constant``, ``ParameterDict``.

A shape entry of 0 is unknown (MXNet 1.x). ``initialize`` on such a parameter defers the
work: the first forward learns the shape (through the op registry's shape rules) and then
runs the initializer, exactly when MXNet would. Reading ``data()`` before that raises
``DeferredInitializationError``.
"""
from __future__ import annotations

import itertools
import threading
import warnings
import weakref
from contextlib import contextmanager

import numpy as np

from ember import autograd
from ember import trace_state as _trace
from ember.base import MXNetError
from ember.context import Context, check_device, cpu, current_context
from ember.ndarray.device import assign, place, zeros_like
from ember.ndarray.ndarray import NDArray

# id(var Value) -> Parameter, for tracers that meet a parameter's Value in a graph
_BY_VALUE: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


_SYMBOLIC = threading.local()


@contextmanager
def parameters_as_symbols():
    """While a HybridBlock is traced, ``param.data()`` is the parameter's Symbol: a Gluon-2
    style ``forward(self, x)`` that reads ``self.weight.data()`` traces into a graph input
    (never a constant holding today's values)."""
    prev = getattr(_SYMBOLIC, "on", False)
    _SYMBOLIC.on = True
    try:
        yield
    finally:
        _SYMBOLIC.on = prev


class DeferredInitializationError(MXNetError):
    """A parameter's data was read before its shape was known (call the block once first)."""


def _ctx_list(ctx) -> list[Context]:
    """The contexts a parameter lives on (each one ember can use: mx.gpu() raises)."""
    if ctx is None:
        ctx = [current_context()]
    ctxs = list(ctx) if isinstance(ctx, list | tuple) else [ctx]
    for c in ctxs:
        check_device(c)
    return ctxs


def _shape_known(shape) -> bool:
    return shape is not None and all(d > 0 for d in shape)


class Parameter:
    """A weight of a Block: data on one or more contexts, a gradient, and how to train it."""

    def __init__(self, name: str, grad_req: str = "write", shape=None, dtype=np.float32,
                 lr_mult: float = 1.0, wd_mult: float = 1.0, init=None,
                 allow_deferred_init: bool = False, differentiable: bool = True,
                 stype: str = "default", grad_stype: str = "default"):
        self.name = name
        self._shape = None if shape is None else (
            (int(shape),) if isinstance(shape, int | np.integer) else tuple(shape))
        self._dtype = np.dtype(dtype).type
        self.lr_mult = lr_mult
        self.wd_mult = wd_mult
        self.init = init
        self.allow_deferred_init = allow_deferred_init
        self._differentiable = differentiable
        self._grad_req = grad_req if differentiable else "null"
        if self._grad_req not in ("write", "add", "null"):
            raise ValueError(f"grad_req must be 'write', 'add' or 'null', not {grad_req!r}")
        self._data: list[NDArray] | None = None
        self._grad: list[NDArray] | None = None
        self._ctx_list: list[Context] | None = None
        self._deferred_init: tuple = ()
        self._var = None
        if stype != "default" or grad_stype not in ("default", "row_sparse"):
            raise MXNetError(f"Parameter {name}: sparse storage types are not supported "
                             "(only grad_stype='row_sparse', stored densely)")
        self._grad_stype = grad_stype

    def __repr__(self) -> str:
        return f"Parameter {self.name} (shape={self.shape}, dtype={self.dtype})"

    # ---- attributes ----------------------------------------------------------------------
    @property
    def shape(self):
        return self._shape

    @shape.setter
    def shape(self, new_shape):
        new_shape = tuple(new_shape)
        if self._shape is None:
            self._shape = new_shape
            return
        if len(self._shape) != len(new_shape) or any(
                old > 0 and old != new for old, new in zip(self._shape, new_shape)):
            raise MXNetError(f"Parameter {self.name}: expected shape {new_shape} is "
                             f"incompatible with given shape {self._shape}")
        self._shape = new_shape

    @property
    def dtype(self):
        return self._dtype

    @dtype.setter
    def dtype(self, dtype):
        self.cast(dtype)

    @property
    def grad_req(self) -> str:
        return self._grad_req

    @grad_req.setter
    def grad_req(self, req: str):
        if req not in ("write", "add", "null"):
            raise ValueError(f"grad_req must be 'write', 'add' or 'null', not {req!r}")
        if not self._differentiable:
            req = "null"
        if self._grad_req == req:
            return
        self._grad_req = req
        if req == "null" and self._grad is not None:
            self._grad = None
            for d in self._data or []:
                autograd.mark_variables([d], [None], "null")
        elif self._data is not None:
            self._init_grad()

    @property
    def stype(self) -> str:
        return "default"

    # ---- initialisation --------------------------------------------------------------------
    def initialize(self, init=None, ctx=None, default_init=None, force_reinit: bool = False):
        """Allocate and initialise the data (deferred while the shape has unknown dims)."""
        from ember import initializer
        if default_init is None:
            default_init = initializer.Uniform()
        if self._data is not None and not force_reinit:
            warnings.warn(f"Parameter '{self.name}' is already initialized, ignoring. "
                          "Set force_reinit=True to re-initialize.", stacklevel=2)
            return
        self._data = self._grad = None
        ctx = _ctx_list(ctx)
        if init is None:
            init = default_init if self.init is None else self.init
        if not _shape_known(self.shape):
            if self.allow_deferred_init:
                self._deferred_init = (init, ctx, default_init, None)
                return
            raise ValueError(f"Cannot initialize Parameter '{self.name}' because it has "
                             f"invalid shape: {self.shape}.")
        self._deferred_init = (init, ctx, default_init, None)
        self._finish_deferred_init()

    def _finish_deferred_init(self):
        """Run the deferred initializer now that the shape is known."""
        if not self._deferred_init:
            return
        from ember import initializer
        init, ctx, default_init, data = self._deferred_init
        self._deferred_init = ()
        if not _shape_known(self.shape):
            raise DeferredInitializationError(
                f"Parameter '{self.name}' has unknown shape {self.shape} even after the "
                "first forward; give its shape (e.g. in_units) explicitly")
        with autograd.pause():
            if data is None:
                # initialisers write host memory; _init_impl copies to each (GPU) context
                host_ctx = ctx[0] if ctx[0].device_type != "gpu" else cpu()
                data = NDArray(np.zeros(self.shape, dtype=self.dtype), host_ctx)
                initializer.create(default_init)(
                    initializer.InitDesc(self.name, {"__init__": init}), data)
            self._init_impl(data, ctx)

    def _init_impl(self, data, ctx_list):
        self._ctx_list = list(ctx_list)
        src = (data.asnumpy() if isinstance(data, NDArray) and type(data._data) is not np.ndarray
               else data._data if isinstance(data, NDArray) else np.asarray(data))
        self._data = [NDArray(place(np.array(src, dtype=self.dtype, copy=True), c), c)
                      for c in self._ctx_list]
        self._init_grad()

    def _init_grad(self):
        if self._grad_req == "null":
            self._grad = None
            return
        from ember.ndarray.sparse import RowSparseNDArray
        cls = RowSparseNDArray if getattr(self, "_grad_stype", "") == "row_sparse" else NDArray
        self._grad = [cls(zeros_like(d._data), d._ctx) for d in self._data]
        for d, g in zip(self._data, self._grad):
            autograd.mark_variables([d], [g], self._grad_req)

    def _load_init(self, data, ctx, cast_dtype=False, dtype_source="current"):
        """Set data from a loaded array (shapes must agree), initialising if needed."""
        if cast_dtype:
            if dtype_source == "current":
                data = data.astype(self.dtype, copy=False)
            else:
                self._dtype = data.dtype
        if self.shape:
            if len(self.shape) != len(data.shape) or any(
                    s > 0 and s != d for s, d in zip(self.shape, data.shape)):
                raise MXNetError(f"Failed loading Parameter '{self.name}' from saved params: "
                                 f"shape incompatible expected {self.shape} vs saved "
                                 f"{data.shape}")
        self._shape = tuple(data.shape)
        if not cast_dtype and np.dtype(self.dtype) != np.dtype(data.dtype):
            raise MXNetError(f"Failed loading Parameter '{self.name}' from saved params: "
                             f"dtype incompatible expected {np.dtype(self.dtype).name} vs "
                             f"saved {np.dtype(data.dtype).name}. Set cast_dtype=True to "
                             "cast the dtype of saved params.")
        if self._data is None:
            if self._deferred_init:
                ctx = self._deferred_init[1] if ctx is None else _ctx_list(ctx)
            self._deferred_init = ()
            self._init_impl(data, _ctx_list(ctx))
        else:
            self.set_data(data)

    # ---- access ---------------------------------------------------------------------------
    def _check_and_get(self, arr_list, ctx, kind: str | None = None):
        if getattr(_SYMBOLIC, "on", False) and kind is None \
                and (self._data is not None or self._deferred_init):
            return [self.var()] if ctx is list else self.var()
        trace = _trace.current()
        if trace is not None:  # inside @ember.compile: the traced values
            kind = kind or ("grad" if arr_list is not None and arr_list is self._grad
                            else "data")
            if self._deferred_init and self._var is not None \
                    and self._var._value.type.known:  # the trace has shown the shape
                self.shape = self._var._value.type.shape
                self._finish_deferred_init()
            if self._data is not None:
                value = trace.value_of(self) if kind == "data" else trace.grad_of(self)
                return [value] if ctx is list else value
        if arr_list is not None:
            if ctx is None or ctx is list:
                return arr_list[0] if ctx is None else arr_list
            for c, a in zip(self._ctx_list, arr_list):
                if c == ctx:
                    return a
            if len(arr_list) == 1:
                return arr_list[0]
            raise RuntimeError(f"Parameter '{self.name}' was not initialized on context {ctx}."
                               f" It was only initialized on {self._ctx_list}.")
        if self._deferred_init:
            raise DeferredInitializationError(
                f"Parameter '{self.name}' has not been initialized yet because "
                "initialization was deferred. Actual initialization happens during the "
                "first forward pass. Please pass one batch of data through the network "
                "before accessing Parameters.")
        raise RuntimeError(f"Parameter '{self.name}' has not been initialized. Note that you "
                           "should initialize parameters and create Trainer with "
                           "Block.collect_params() instead of Block.params because the "
                           "later does not include Parameters of nested child Blocks")

    def data(self, ctx=None) -> NDArray:
        """The data on ``ctx`` (the first context by default)."""
        return self._check_and_get(self._data, ctx)

    def list_data(self) -> list[NDArray]:
        return self._check_and_get(self._data, list)

    def grad(self, ctx=None) -> NDArray:
        """The gradient buffer on ``ctx``."""
        if self._data is not None and self._grad is None:
            raise RuntimeError(f"Cannot get gradient array for Parameter '{self.name}' "
                               "because grad_req='null'")
        return self._check_and_get(self._grad, ctx, "grad")

    def list_grad(self) -> list[NDArray]:
        if self._data is not None and self._grad is None:
            raise RuntimeError(f"Cannot get gradient array for Parameter '{self.name}' "
                               "because grad_req='null'")
        return self._check_and_get(self._grad, list, "grad")

    def list_ctx(self) -> list[Context]:
        if self._data is None:
            if self._deferred_init:
                return self._deferred_init[1]
            raise RuntimeError(f"Parameter '{self.name}' has not been initialized")
        return list(self._ctx_list)

    def zero_grad(self):
        """Set the gradient buffers to zero."""
        for g in self._grad or []:
            if type(g._data) is np.ndarray:
                g._data[...] = 0
            else:
                assign(g._data, 0)

    def set_data(self, data):
        """Overwrite the data on every context."""
        self.shape = tuple(data.shape)
        if self._data is None:
            if not self._deferred_init:
                raise RuntimeError(f"Parameter '{self.name}' has not been initialized")
            init, ctx, default_init, _ = self._deferred_init
            self._deferred_init = (init, ctx, default_init, data)
            return
        src = data._data if isinstance(data, NDArray) else np.asarray(data)
        for d in self._data:
            assign(d._data, src)

    def _reduce(self) -> NDArray:
        """The data gathered on the CPU (the average over contexts, as MXNet saves it)."""
        data = self.list_data()
        if len(data) == 1:
            return NDArray(data[0].asnumpy(), cpu())
        return NDArray(np.mean([d.asnumpy() for d in data], axis=0).astype(self.dtype), cpu())

    def reset_ctx(self, ctx):
        """Move the data to other contexts."""
        ctx = _ctx_list(ctx)
        if self._data is not None:
            data = self._reduce()
            with autograd.pause():
                self._init_impl(data, ctx)
        elif self._deferred_init:
            init, _, default_init, data = self._deferred_init
            self._deferred_init = (init, ctx, default_init, data)
        else:
            raise ValueError(f"Cannot reset context for Parameter '{self.name}' because it "
                             "has not been initialized.")

    def cast(self, dtype):
        """Change the data (and gradient) type."""
        self._dtype = np.dtype(dtype).type
        self._var = None  # a traced variable records the dtype: trace anew
        if self._data is None:
            return
        with autograd.pause():
            self._data = [NDArray(place(d.asnumpy().astype(self._dtype), d._ctx), d._ctx)
                          for d in self._data]
            self._init_grad()

    def var(self):
        """This parameter as a Symbol (a graph input)."""
        from ember import symbol
        if self._var is None:
            shape = None if self.shape is None else tuple(d if d > 0 else None
                                                          for d in self.shape)
            # its initializer as the variable's __init__ attribute, as MXNet's var() does
            # (Module.init_params honours it: an LSTM cell's forget-gate bias)
            self._var = symbol.var(self.name, shape=shape, dtype=self.dtype, init=self.init)
            _BY_VALUE[id(self._var._value)] = self
        return self._var


_CONSTANT_IDS = itertools.count()


class Constant(Parameter):
    """A parameter that never changes (grad_req='null'), initialised to ``value``."""

    def __init__(self, name: str, value):
        value = value if isinstance(value, NDArray) else NDArray(
            np.asarray(value, dtype=np.float32))
        self.value = value
        from ember import initializer

        class _Init(initializer.Initializer):
            def _init_weight(self, _, arr):
                arr[:] = value

        # registered under a name of its own, which the __init__ attribute of this
        # parameter's Symbol variable names (MXNet aliases it as Constant_<id>)
        _Init.__name__ = f"Constant_{name}_{next(_CONSTANT_IDS)}"
        initializer.alias(_Init.__name__)(_Init)
        super().__init__(name, grad_req="null", shape=value.shape, dtype=value.dtype,
                         init=_Init(), differentiable=False)

    @Parameter.grad_req.setter
    def grad_req(self, req):
        if req != "null":
            warnings.warn(f"Constant parameter '{self.name}' does not support grad_req other "
                          "than 'null', and new value '{req}' is ignored.", stacklevel=2)


from .parameter_dict import ParameterDict  # noqa: E402,F401  (MXNet imports it from here)
