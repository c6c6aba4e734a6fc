"""``Executor``: a Symbol bound to arrays (MXNet's ``bind``/``simple_bind`` result).

The Symbol's graph (arguments as inputs, auxiliary states as parameters, ``is_train`` set on
mode-dependent ops) goes through the pass pipeline and runs as an ``Executable`` on the
default backend, compiled once per mode. When gradients are wanted, the ``autodiff`` pass
makes one forward+backward graph with head-gradient inputs, and ``split_forward_backward``
cuts it (as a hybridized block's CachedGraph does): ``forward`` runs the forward half and
keeps its residuals, ``backward`` runs the rest, so forward work is not repeated and random
ops are not redrawn. Ops that update auxiliary states (BatchNorm's running statistics)
write into the bound arrays. ``debug_str`` reports the memory the forward pass holds.
"""
from __future__ import annotations

import os

import numpy as np

from ember.base import MXNetError
from ember.context import current_context
from ember.ir.graph import Node
from ember.ir.types import TensorType
from ember.ndarray.device import assign, host, place
from ember.ndarray.ndarray import NDArray

from . import infer as _infer
from . import nodes as _n
from .infer import SymbolGraph

_NO_GRAD_OPS = ("stop_gradient",)


def _grad_reqs(grad_req, names: list[str]) -> list[str]:
    if isinstance(grad_req, str):
        reqs = [grad_req] * len(names)
    elif isinstance(grad_req, dict):
        reqs = [grad_req.get(n, "null") for n in names]
    else:
        reqs = list(grad_req)
    for r in reqs:
        if r not in ("write", "add", "null", "inplace"):
            raise MXNetError(f"grad_req must be 'write', 'add' or 'null', not {r!r}")
    return ["write" if r == "inplace" else r for r in reqs]


def _arrays(given, names: list[str], what: str) -> list:
    if given is None:
        return [None] * len(names)
    if isinstance(given, dict):
        missing = [n for n in names if n not in given and what != "args_grad"]
        if missing:
            raise MXNetError(f"bind: {what} lacks {', '.join(missing)}")
        return [given.get(n) for n in names]
    given = list(given)
    if len(given) != len(names):
        raise MXNetError(f"bind: {what} has {len(given)} arrays, the symbol needs "
                         f"{len(names)} ({', '.join(names)})")
    return given


def _with_mode(is_train: bool):
    """attrs of a node copy: ``is_train`` set for ops whose result depends on the mode."""
    def attrs(node: Node) -> tuple:
        if not node.op.mode:
            return node.attrs
        return tuple(sorted({**dict(node.attrs), "is_train": bool(is_train)}.items()))
    return attrs


class _Program:
    """The compiled graph of one mode: ``forward`` alone, or the forward/backward split of
    the joint graph from the ``autodiff`` pass (as a hybridized block's CachedGraph)."""

    def __init__(self, sg: SymbolGraph, n_out: int, wrt: list[int] | None, ctx=None):
        from ember.gluon.cached_op import (
            FORWARD_PASSES,
            LOWERING_PASSES,
            compile_split,
            default_backend,
        )
        from ember.passes import run_pipeline
        from ember.runtime.executable import Executable
        backend = default_backend(ctx)  # (cuda for arrays bound on a GPU)
        graph = run_pipeline(sg.graph, FORWARD_PASSES)
        self.backward = None
        if wrt is None:
            self.forward = Executable(run_pipeline(graph, LOWERING_PASSES), backend)
            return
        # a residual that is an argument is read from the bound array, not returned
        self.forward, self.backward, self.residual_src = compile_split(
            graph, n_out, [graph.inputs[i] for i in wrt], backend)
        self.wrt = wrt


class Executor:
    """Arrays bound to a Symbol's inputs; ``forward`` and ``backward`` run the graph.

    Each mode's graph goes through the pass pipeline once and runs as an
    :class:`~ember.runtime.executable.Executable`; with gradients, ``forward`` runs the
    forward half of the ``autodiff`` joint graph and keeps its residuals for ``backward``.
    """

    def __init__(self, symbol, ctx, args: list, grads: list, reqs: list[str], aux: list):
        self._symbol = symbol
        self._cse = os.environ.get("MXNET_ELIMINATE_COMMON_EXPR", "1") != "0"  # at bind
        self._ctx = ctx or current_context()
        heads = symbol._value_list()
        self._heads = heads
        _, argv, auxv = _n.variables(heads)
        self._arg_vars, self._aux_vars = argv, auxv
        self._arg_names = [_n.node_name(v) for v in argv]
        self._aux_names = [_n.node_name(v) for v in auxv]
        self.arg_arrays, self.grad_arrays, self.aux_arrays = args, grads, aux
        self._reqs = [r if g is not None else "null" for r, g in zip(reqs, grads)]
        self._given = {id(v): TensorType(a.shape, a.dtype)
                       for v, a in zip(argv + auxv, args + aux)}
        sg = SymbolGraph(heads, self._given)
        self._nodes = sg.nodes
        types, _ = sg.typed()
        self.outputs = [_zeros(types[id(h)], self._ctx) if types[id(h)].known else None
                        for h in heads]
        self._types = types
        self._programs: dict[tuple, _Program] = {}
        self._saved = None  # (program, residuals) of the last forward(is_train=True)
        self._check_gradients(sg)

    def _check_gradients(self, sg: SymbolGraph) -> None:
        """MXNet builds the backward graph at bind: a gradient that must flow (from an output
        to an argument with a gradient buffer) through an op without a gradient rule is an
        error then (nnvm's "is non-differentiable"), not at ``backward``."""
        wrt = [i for i, r in enumerate(self._reqs) if r != "null"]
        if not wrt or all(node.op.grad is not None for node in self._nodes):
            return
        from ember.passes import run_pipeline
        from ember.passes.autodiff import autodiff
        graph = run_pipeline(sg.graph, ["infer_shapes"])
        try:
            autodiff(graph, wrt=[graph.inputs[i] for i in wrt])
        except MXNetError as e:
            raise MXNetError(f"bind: {e}") from None

    # ---- dictionaries ----------------------------------------------------------------------
    @property
    def arg_dict(self) -> dict:
        return dict(zip(self._arg_names, self.arg_arrays))

    @property
    def grad_dict(self) -> dict:
        return dict(zip(self._arg_names, self.grad_arrays))

    @property
    def aux_dict(self) -> dict:
        return dict(zip(self._aux_names, self.aux_arrays))

    @property
    def output_dict(self) -> dict:
        return dict(zip(self._symbol.list_outputs(), self.outputs))

    # ---- running ---------------------------------------------------------------------------
    def _wants_grad(self) -> bool:
        """Whether any argument with a gradient buffer is reachable from an output through
        differentiable ops (``stop_gradient`` cuts the path: MXNet's zero-gradient pruning)."""
        need = {id(v) for v, r in zip(self._arg_vars, self._reqs) if r != "null"}
        if not need:
            return False
        reach: set[int] = set(need)
        for node in self._nodes:
            if node.op.name in _NO_GRAD_OPS or node.op.grad is None:
                continue
            if any(id(v) in reach for v in node.inputs):
                reach.update(id(o) for o in node.outputs)
        return any(id(h) in reach for h in self._heads)

    def forward(self, is_train: bool = False, **kwargs) -> list:
        """Copy keyword arrays into the arguments, run the graph; the outputs."""
        for k, x in kwargs.items():
            if k not in self._arg_names:
                raise MXNetError(f"forward: {k!r} is not an argument "
                                 f"({', '.join(self._arg_names)})")
            dst = self.arg_arrays[self._arg_names.index(k)]
            src = x._data if isinstance(x, NDArray) else np.asarray(x)
            if src.shape != dst.shape:
                raise MXNetError(f"forward: {k!r} has shape {src.shape}, bound as {dst.shape}")
            assign(dst._data, src)
        grad = bool(is_train) and self._wants_grad()
        prog = self._program(bool(is_train), grad)
        ins = [a._data for a in self.arg_arrays]
        res = prog.forward.run(ins, [a._data for a in self.aux_arrays])
        n = len(self._heads)
        self.outputs = [NDArray(r, self._ctx) for r in res[:n]]
        self._saved = None
        if grad:
            self._saved = (prog, [res[k] if src == "out" else ins[k]
                                  for src, k in prog.residual_src])
        return self.outputs

    def _program(self, is_train: bool, grad: bool) -> _Program:
        key = (is_train, grad)
        prog = self._programs.get(key)
        if prog is None:
            sg = SymbolGraph(self._heads, self._given, attrs=_with_mode(is_train))
            wrt = [i for i, r in enumerate(self._reqs) if r != "null"] if grad else None
            prog = self._programs[key] = _Program(sg, len(self._heads), wrt, self._ctx)
        return prog

    def _last_use(self) -> dict[int, int]:
        last: dict[int, int] = {}
        for i, node in enumerate(self._nodes):
            for v in node.inputs:
                last[id(v)] = i
        return last

    def backward(self, out_grads=None, is_train: bool = True) -> None:
        """Gradients of the outputs (times ``out_grads``, ones by default) into grad_arrays."""
        if not any(r != "null" for r in self._reqs):
            return
        if self._saved is None:
            if not self._wants_grad():
                for g, r in zip(self.grad_arrays, self._reqs):
                    if r == "write":
                        assign(g._data, 0)
                return
            raise MXNetError("backward: call forward(is_train=True) first")
        if out_grads is not None and not isinstance(out_grads, list | tuple):
            out_grads = [out_grads]
        prog, residuals = self._saved
        if out_grads is None:
            heads = [np.ones(o.shape, o.dtype) for o in self.outputs]
        else:
            heads = [np.asarray(host(g._data) if isinstance(g, NDArray) else g, dtype=o.dtype)
                     .reshape(o.shape) for g, o in zip(out_grads, self.outputs)]
        heads = [place(h, self._ctx) for h in heads]  # (on the bound GPU, if any)
        grads = prog.backward.run(residuals + heads, [a._data for a in self.aux_arrays])
        for i, g in zip(prog.wrt, grads):
            dst = self.grad_arrays[i]._data
            if type(dst) is not np.ndarray:  # a GPU array (add: through the host)
                assign(dst, host(dst) + host(g) if self._reqs[i] == "add" else g)
            elif self._reqs[i] == "add":
                dst += g
            else:
                dst[...] = g
        self._saved = None

    # ---- parameters and shapes ----------------------------------------------------------------
    def copy_params_from(self, arg_params: dict, aux_params: dict | None = None,
                         allow_extra_params: bool = False) -> None:
        """Copy arrays by name into the bound arguments and auxiliary states."""
        for params, names, arrays in ((arg_params, self._arg_names, self.arg_arrays),
                                      (aux_params or {}, self._aux_names, self.aux_arrays)):
            for k, x in params.items():
                if k in names:
                    assign(arrays[names.index(k)]._data,
                           x.asnumpy() if isinstance(x, NDArray) else np.asarray(x))
                elif not allow_extra_params:
                    raise MXNetError(f"copy_params_from: {k!r} is not an input of the symbol")

    def reshape(self, partial_shaping: bool = False, allow_up_sizing: bool = False,
                **kwargs) -> Executor:
        """A new executor for new input shapes; arrays of unchanged shape are shared."""
        shapes = {n: a.shape for n, a in zip(self._arg_names, self.arg_arrays)}
        shapes.update({k: tuple(v) for k, v in kwargs.items()})
        types = {n: a.dtype for n, a in zip(self._arg_names, self.arg_arrays)}
        new = simple_bind(self._symbol, self._ctx, dict(zip(self._arg_names, self._reqs)),
                          types, shapes)
        for lst_new, lst_old in ((new.arg_arrays, self.arg_arrays),
                                 (new.grad_arrays, self.grad_arrays),
                                 (new.aux_arrays, self.aux_arrays)):
            for i, (a, b) in enumerate(zip(lst_new, lst_old)):
                if a is not None and b is not None and a.shape == b.shape:
                    lst_new[i] = b
        return new

    def get_optimized_symbol(self):
        """The bound symbol with common subexpressions merged, unless the environment set
        ``MXNET_ELIMINATE_COMMON_EXPR=0`` at bind time (ember's passes optimise when
        compiling whatever this says)."""
        from .symbol import Symbol
        if not self._cse:
            return self._symbol.__copy__()
        return Symbol._group(_n.eliminate_common(self._symbol._value_list()))

    def debug_str(self) -> str:
        """The symbol's listing and the memory the forward (and backward) pass holds."""
        nbytes = [self._types[id(o)].nbytes or 0 for node in self._nodes for o in node.outputs]
        if self._wants_grad():
            total = sum(nbytes)  # every value is kept for the backward pass
        else:
            total, live, last, k = 0, {}, self._last_use(), 0
            for i, node in enumerate(self._nodes):
                for o in node.outputs:
                    live[id(o)] = nbytes[k]
                    k += 1
                total = max(total, sum(live.values()))
                for v in node.inputs:
                    if last.get(id(v)) == i:
                        live.pop(id(v), None)
        return self._symbol.debug_str() + f"Total {total >> 20} MB allocated\n"


def _zeros(t: TensorType, ctx) -> NDArray:
    return NDArray(place(np.zeros(t.shape, t.dtype), ctx), ctx)


def simple_bind(symbol, ctx, grad_req, type_dict, shapes: dict) -> Executor:
    """Allocate arguments, gradients and auxiliary states from input shapes and bind."""
    heads = symbol._value_list()
    ins, argv, auxv = _n.variables(heads)
    names = {_n.node_name(v): v for v in ins}
    given = {}
    for k in shapes:
        if k not in names:
            raise MXNetError(f"simple_bind: {k!r} is not an input of the symbol")
    for k, v in names.items():
        dt = (type_dict or {}).get(k)
        dt = np.dtype(dt).name if dt is not None else (_n.declared(v)[1] or "float32")
        shape = shapes.get(k)
        dims = tuple(None if d == 0 else d for d in shape) if shape is not None \
            else _n.declared(v)[0]
        given[id(v)] = TensorType(dims, dt)
    types = _infer.infer(heads, given)
    unknown = [_n.node_name(v) for v in argv + auxv if not types[id(v)].known]
    if unknown:
        raise MXNetError(f"simple_bind: cannot infer the shapes of {', '.join(unknown)} from "
                         f"{shapes}")
    ctx = ctx or current_context()
    arg_names = [_n.node_name(v) for v in argv]
    reqs = _grad_reqs(grad_req, arg_names)
    args = [_zeros(types[id(v)], ctx) for v in argv]
    grads = [None if r == "null" else _zeros(types[id(v)], ctx) for v, r in zip(argv, reqs)]
    aux = [_zeros(types[id(v)], ctx) for v in auxv]
    return Executor(symbol, ctx, args, grads, reqs, aux)


def _as_nd(x, ctx) -> NDArray:
    return x if isinstance(x, NDArray) or x is None else NDArray(place(np.asarray(x), ctx), ctx)


def bind(symbol, ctx, args, args_grad=None, grad_req="write", aux_states=None) -> Executor:
    """An Executor over given arrays (lists in argument order, or dicts by name)."""
    ctx = ctx or current_context()
    _, argv, auxv = _n.variables(symbol._value_list())
    arg_names = [_n.node_name(v) for v in argv]
    aux_names = [_n.node_name(v) for v in auxv]
    arg_arrays = [_as_nd(a, ctx) for a in _arrays(args, arg_names, "args")]
    grads = [_as_nd(g, ctx) for g in _arrays(args_grad, arg_names, "args_grad")]
    aux = [_as_nd(a, ctx) for a in _arrays(aux_states, aux_names, "aux_states")]
    if any(a is None for a in arg_arrays + aux):
        raise MXNetError("bind: every argument and auxiliary state needs an array")
    return Executor(symbol, ctx, arg_arrays, grads, _grad_reqs(grad_req, arg_names), aux)


__all__ = ["Executor", "bind", "simple_bind"]
