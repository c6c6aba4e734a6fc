"""Gluon Blocks: ``Block`` (imperative), ``HybridBlock`` (traceable), and their naming.

Names and prefixes follow MXNet 1.x exactly (``dense0_``, ``sequential1_dense0_weight``), so
parameter files and user code that refers to names keep working. A HybridBlock whose
parameters have unknown dims infers them at the first call by tracing ``hybrid_forward``
with ``F = ember.sym``: every op's shape rule runs as the node is made, and the parameter
Values learn their shapes (MXNet's deferred initialisation).
"""
from __future__ import annotations

import re
import warnings
from collections import OrderedDict

import numpy as np

from ember.base import MXNetError, name_block_in_error
from ember.ndarray.ndarray import NDArray

from .block_scope import HookHandle, _BlockScope
from .cached_op import InputError, SignatureCache
from .parameter import DeferredInitializationError, Parameter, ParameterDict


def _indent(text: str, n: int) -> str:
    lines = text.split("\n")
    return "\n".join([lines[0]] + [" " * n + ln for ln in lines[1:]])


class Block:
    """Base class of all layers and models; subclasses define ``forward``."""

    def __init__(self, prefix: str | None = None, params: ParameterDict | None = None):
        self._empty_prefix = prefix == ""
        self._prefix, self._params = _BlockScope.create(prefix, params, self._alias())
        self._name = self._prefix[:-1] if self._prefix.endswith("_") else self._prefix
        self._scope = _BlockScope(self)
        self._children: OrderedDict[str, Block] = OrderedDict()
        self._reg_params: dict[str, Parameter] = {}
        self._forward_hooks: OrderedDict = OrderedDict()
        self._forward_pre_hooks: OrderedDict = OrderedDict()

    def __repr__(self):
        body = "\n".join(f"  ({k}): {_indent(repr(b), 2)}" for k, b in self._children.items())
        return f"{type(self).__name__}(\n{body}\n)"

    def __setattr__(self, name, value):
        existing = self.__dict__.get(name)
        if isinstance(existing, Parameter | Block) and not isinstance(value, type(existing)):
            raise TypeError(f"Changing attribute type for {name} from {type(existing)} to "
                            f"{type(value)} is not allowed.")
        if isinstance(value, Block):
            self.register_child(value, name)
        elif isinstance(value, Parameter):
            if name in self.__dict__.get("_reg_params", {}):
                raise MXNetError(f"Overriding Parameter attribute {name} is not allowed. If "
                                 "you want to share parameters between blocks, please set "
                                 "'params' at Block construction instead.")
            self._reg_params[name] = value
        super().__setattr__(name, value)

    def _alias(self) -> str:
        return type(self).__name__.lower()

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def name(self) -> str:
        return self._name

    @property
    def params(self) -> ParameterDict:
        """This block's own parameters (not its children's)."""
        return self._params

    def name_scope(self):
        """``with self.name_scope():`` children created inside get this block's prefix."""
        return self._scope

    def _check_container_with_block(self):
        """Warn about Blocks kept in a plain list/tuple/dict attribute: not registered."""
        children = set(map(id, self._children.values()))

        def hidden(data):
            if isinstance(data, list | tuple):
                return any(hidden(x) for x in data)
            if isinstance(data, dict):
                return any(hidden(x) for x in data.values())
            return isinstance(data, Block) and id(data) not in children

        for k, v in self.__dict__.items():
            if isinstance(v, list | tuple | dict) and not k.startswith("__") \
                    and k != "_children" and hidden(v):
                warnings.warn(f'"{type(self).__name__}.{k}" is an unregistered container with '
                              "Blocks. Note that Blocks inside the list, tuple or dict will not "
                              "be registered automatically. Make sure to register them using "
                              "register_child() or switching to nn.Sequential/"
                              "nn.HybridSequential instead.", stacklevel=3)

    def collect_params(self, select: str | None = None) -> ParameterDict:
        """This block's and all descendants' parameters, optionally filtered by regex."""
        self._check_container_with_block()
        ret = ParameterDict(self._params.prefix)
        if not select:
            ret.update(self.params)
        else:
            rx = re.compile(select)
            ret.update({k: v for k, v in self.params.items() if rx.match(k)})
        for child in self._children.values():
            ret.update(child.collect_params(select=select))
        return ret

    def _collect_params_with_prefix(self, prefix: str = "") -> dict[str, Parameter]:
        if prefix:
            prefix += "."
        ret = {prefix + k: v for k, v in self._reg_params.items()}
        for name, child in self._children.items():
            ret.update(child._collect_params_with_prefix(prefix + name))
        return ret

    def register_child(self, block: Block, name: str | None = None):
        """Make ``block`` a child (attributes that are Blocks are registered by themselves)."""
        self._children[str(len(self._children)) if name is None else name] = block

    def register_forward_pre_hook(self, hook) -> HookHandle:
        """``hook(block, inputs)`` runs before each forward."""
        return HookHandle(self._forward_pre_hooks, hook)

    def register_forward_hook(self, hook) -> HookHandle:
        """``hook(block, inputs, outputs)`` runs after each forward."""
        return HookHandle(self._forward_hooks, hook)

    def register_op_hook(self, callback, monitor_all: bool = False):
        """Install ``callback(name, op_name, NDArray)`` on the hybridized blocks inside."""
        for child in self._children.values():
            child.register_op_hook(callback, monitor_all)

    def apply(self, fn):
        """Call ``fn(block)`` on every descendant and on this block."""
        for child in self._children.values():
            child.apply(fn)
        fn(self)
        return self

    def initialize(self, init=None, ctx=None, verbose: bool = False,
                   force_reinit: bool = False):
        """Initialise all parameters (deferred where shapes are not known yet)."""
        self.collect_params().initialize(init, ctx, verbose, force_reinit)

    def hybridize(self, active: bool = True, **kwargs):
        """Turn compilation on for every HybridBlock inside."""
        for child in self._children.values():
            child.hybridize(active, **kwargs)

    def cast(self, dtype):
        """Cast all parameters to ``dtype``."""
        for child in self._children.values():
            child.cast(dtype)
        for p in self.params.values():
            p.cast(dtype)

    def zero_grad(self):
        self.collect_params().zero_grad()

    def reset_ctx(self, ctx):
        self.collect_params().reset_ctx(ctx)

    def __call__(self, *args):
        for hook in list(self._forward_pre_hooks.values()):
            hook(self, args)
        try:
            out = self.forward(*args)
        except MXNetError as e:  # name the block (free when nothing is raised)
            name_block_in_error(e, self)
            raise
        for hook in list(self._forward_hooks.values()):
            hook(self, args, out)
        return out

    def forward(self, *args):
        """Override to define the computation."""
        raise MXNetError(f"{type(self).__name__} must define forward()")

    # ---- parameter files -------------------------------------------------------------------
    def save_parameters(self, filename: str, deduplicate: bool = False):
        """Write parameters by structural name (``0.weight``) in MXNet's .params format."""
        from . import block_io
        block_io.save_parameters(self, filename, deduplicate)

    def save_params(self, filename: str):
        """Deprecated MXNet form: parameters by full name, without this block's prefix."""
        self.collect_params().save(filename, strip_prefix=self.prefix)

    def load_parameters(self, filename: str, ctx=None, allow_missing: bool = False,
                        ignore_extra: bool = False, cast_dtype: bool = False,
                        dtype_source: str = "current"):
        """Read parameters saved by ``save_parameters`` (or by MXNet's)."""
        from . import block_io
        block_io.load_parameters(self, filename, ctx, allow_missing, ignore_extra, cast_dtype,
                                 dtype_source)

    load_params = load_parameters

    def save(self, prefix: str):
        """Save structure names and parameters (``<prefix>-model.json``/``.params``)."""
        from . import block_io
        block_io.save(self, prefix)

    def load(self, prefix: str):
        """Load what :meth:`save` wrote into an identically built model."""
        from . import block_io
        block_io.load(self, prefix)

    def summary(self, *inputs):
        """Print each layer's output shape and parameter count for one forward pass."""
        from .summary import print_block_summary
        print_block_summary(self, *inputs)


class HybridBlock(Block):
    """A Block whose ``hybrid_forward(F, x, ...)`` works on NDArrays and on Symbols."""

    def __init__(self, prefix=None, params=None):
        super().__init__(prefix, params)
        self._active = False
        self._flags: dict = {}
        self._cached = SignatureCache()

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if isinstance(value, HybridBlock):
            self._clear_cached_op()

    def _clear_cached_op(self):
        self.__dict__.setdefault("_cached", SignatureCache()).clear()
        self.__dict__.pop("_all_params", None)
        self.__dict__.pop("_call_format", None)

    def hybridize(self, active: bool = True, backend: str | None = None, **kwargs):
        """Compile this block: the next call traces ``hybrid_forward`` into a graph, runs the
        passes and compiles it (one cached graph per input signature).

        Calls whose inputs differ only in the batch size share one compiled program and
        arena (bound per size without tracing again, when the graph does not depend on the
        batch: ``batch_family``), unless ``static_shape=True`` asks for one program per input
        shape, as MXNet's CachedOp keeps. ``static_alloc`` is accepted (ember always plans
        memory statically); ``backend`` picks the code generator (``cpu``, the default from
        ``$EMBER_BACKEND``, or ``reference``).
        """
        self._active = active
        self._flags = {"backend": backend, **kwargs}
        self._clear_cached_op()
        self._cached.dynamic = not kwargs.get("static_shape", False)
        super().hybridize(active, backend=backend, **kwargs)

    def cast(self, dtype):
        """Cast all parameters; compiled graphs are traced again with the new types."""
        self._clear_cached_op()
        super().cast(dtype)

    def __call__(self, *args):
        # Gluon 2 style: a subclass that defines forward(self, x) instead of hybrid_forward
        # is traced and compiled too once hybridized (HybridBlock.forward does it otherwise)
        if self._active and type(self).forward is not HybridBlock.forward and args \
                and all(type(a) is NDArray for a in args):
            for hook in list(self._forward_pre_hooks.values()):
                hook(self, args)
            try:
                out = self._call_cached_op(*args)
            except MXNetError as e:
                name_block_in_error(e, self)
                raise
            for hook in list(self._forward_hooks.values()):
                hook(self, args, out)
            return out
        return super().__call__(*args)

    def register_op_hook(self, callback, monitor_all: bool = False):
        """``callback(name, op_name, NDArray)`` on each compiled op's outputs (and, with
        ``monitor_all``, inputs) under MXNet's names; on this block and its children."""
        for b in (self, *self._children.values()):
            b.__dict__["_op_hook"] = (callback, monitor_all)

    def hybrid_forward(self, F, x, *args, **kwargs):
        """Override: the computation, written with ``F.<op>`` (F = ember.nd or ember.sym)."""
        raise MXNetError(f"{type(self).__name__} must define hybrid_forward()")

    def forward(self, x, *args):
        """Run ``hybrid_forward`` with ``F = nd`` on arrays or ``F = sym`` on Symbols.

        Arguments may be NDArrays, Symbols, ``None`` or lists/tuples of them, as in MXNet.
        """
        from ember import ndarray as nd
        from ember import symbol as sym

        from .cached_op import check_one_context, split_args
        symbols = split_args((x, *args), sym.Symbol)[0]
        arrays, _ = split_args((x, *args))
        if symbols and arrays:
            raise InputError(f"{self.name}: inputs mix NDArrays and Symbols; pass one kind")
        if symbols:
            params = {k: v.var() for k, v in self._reg_params.items()}
            with self.name_scope():
                return self.hybrid_forward(sym, x, *args, **params)
        if not arrays:
            raise InputError(f"{self.name}: expected at least one NDArray or Symbol input, "
                             f"got {', '.join(type(a).__name__ for a in (x, *args))}")
        ctx = arrays[0].context
        if self._active:
            check_one_context(arrays, self.name)
            return self._call_cached_op(x, *args)
        try:
            params = {k: v.data(ctx) for k, v in self._reg_params.items()}
        except DeferredInitializationError:
            self._deferred_infer_shape(x, *args)
            for p in self.collect_params().values():
                p._finish_deferred_init()
            params = {k: v.data(ctx) for k, v in self._reg_params.items()}
        return self.hybrid_forward(nd, x, *args, **params)

    def register_child(self, block, name=None):
        super().register_child(block, name)
        self._clear_cached_op()

    def _call_cached_op(self, *args):
        """Run the compiled graph for this input signature (tracing it on first sight)."""
        from ember import autograd

        from .cached_op import (
            CachedGraph,
            block_params_by_value,
            check_format,
            default_backend,
            input_format,
            split_args,
            template_key,
        )
        params = self.__dict__.get("_all_params")
        if params is None:  # first call since (re)hybridizing: finish lazy shapes once
            with self._cached.lock:  # (once, even when threads make the first call together)
                params = self.__dict__.get("_all_params")
                if params is None:
                    params = list(self.collect_params().values())
                    if any(p._deferred_init for p in params):
                        self._deferred_infer_shape(*args)
                        for p in params:
                            p._finish_deferred_init()
                    self._all_params = params
        if all(type(a) is NDArray for a in args):  # the common call: flat array arguments
            arrays, tkey, fmt = args, ("tuple", ("#",) * len(args)), (0,) * len(args)
        else:
            fmt = input_format(args, self.name)
            arrays, template = split_args(args)
            tkey = template_key(template)
        stored = self.__dict__.get("_call_format")
        if stored is None:
            self._call_format = fmt
        elif fmt != stored:
            check_format(stored, fmt, self.name)
        training = autograd.is_training()
        with_grad = autograd.is_recording() and (
            any(p.grad_req != "null" for p in params)
            or any(autograd._needs_grad(a) for a in arrays))
        # (the storage type tells host from GPU arrays: each compiles for its own backend)
        key = (tkey, tuple((a.shape, a.dtype) for a in arrays), training, with_grad,
               type(arrays[0]._data))
        cached = self._cached.lookup(key)
        if cached is None:  # (compiled once; the least recently used signature may go)
            cached = self._cached.build(key, lambda: CachedGraph(
                self.forward, args, training, with_grad,
                default_backend(arrays[0].context, self._flags.get("backend")), self.name,
                block_params_by_value(self), self._flags.get("inline_limit", 2)))
        hook = self.__dict__.get("_op_hook")
        if hook is not None:  # register_op_hook: the graph runs op by op, watched
            from .graph_views import run_monitored
            return run_monitored(cached, args, arrays[0].context, *hook)
        return cached(args, arrays[0].context)

    def _deferred_infer_shape(self, *args):
        """Learn unknown parameter shapes by tracing one call symbolically."""
        from ember import autograd
        from ember import symbol as sym

        from .cached_op import fill, split_args
        arrays, template = split_args(args)
        ins = [sym.var(f"data{i}", shape=a.shape, dtype=a.dtype) for i, a in enumerate(arrays)]
        from .parameter import parameters_as_symbols
        try:
            with autograd.pause(autograd.is_training()), parameters_as_symbols():
                self.forward(*fill(template, ins))
        except MXNetError as e:
            raise MXNetError(f"{self.name}: cannot infer parameter shapes from inputs "
                             f"{[a.shape for a in arrays]}: {e}") from None
        for p in self.collect_params().values():
            if p._var is not None and p._var._value.type.shape is not None:
                p.shape = tuple(0 if d is None else d for d in p._var._value.type.shape)

    def infer_shape(self, *args):
        """Infer and set the shapes of this block's parameters from example inputs."""
        self._deferred_infer_shape(*args)

    def infer_type(self, *args):
        """Parameters take their inputs' float dtype (ember keeps declared dtypes)."""
        return [np.dtype(getattr(a, "dtype", np.float32)) for a in args]

    def export(self, path: str, epoch: int = 0, remove_amp_cast: bool = True):
        """Write MXNet's ``path-symbol.json`` and ``path-%04d.params`` (see gluon.export)."""
        from .export import export
        return export(self, path, epoch, remove_amp_cast)
