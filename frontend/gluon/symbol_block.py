"""``gluon.SymbolBlock``: a HybridBlock made from a Symbol graph (a loaded MXNet model).

As in MXNet 1.9.1 (``gluon/block.py``), the graph's arguments other than the inputs become
Parameters and its auxiliary states Parameters with ``grad_req='null'``; ``imports`` reads a
``-symbol.json`` file and its ``.params`` file (``arg:``/``aux:`` keys). The forward pass
interprets the graph node by node through ember's ops: on NDArrays it runs eagerly (the
autograd tape records each op), on Symbols it emits the same nodes again under their saved
names (MXNet's ``_compose``), which is also how ``hybridize()`` traces it into one compiled
graph, and how a SymbolBlock nests in other hybridized blocks.
"""
from __future__ import annotations

import numpy as np

from ember.base import MXNetError
from ember.ir.graph import Value

from .block import HybridBlock
from .parameter import ParameterDict


class SparseParameterError(MXNetError, AssertionError):
    """A graph variable has a sparse storage type (MXNet asserts this away too)."""


def _flatten(args, what: str):
    """(flat list of Symbols/NDArrays, MXNet's format: 0 one, n>1 a group, list nested)."""
    from ember.ndarray.ndarray import NDArray
    from ember.symbol import Symbol
    if isinstance(args, NDArray):
        return [args], 0
    if isinstance(args, Symbol):
        n = len(args)
        return [args], n if n > 1 else 0
    if not isinstance(args, list | tuple):
        raise MXNetError(f"SymbolBlock {what}s must be (nested lists of) Symbols or NDArrays, "
                         f"not {type(args).__name__}")
    flat, fmt = [], []
    for a in args:
        f, s = _flatten(a, what)
        flat.extend(f)
        fmt.append(s)
    return flat, fmt


def _regroup(flat: list, fmt):
    """Rebuild the structure :func:`_flatten` recorded from a flat list of single outputs."""
    if isinstance(fmt, int):
        if fmt == 0:
            return flat.pop(0)
        out = flat[:fmt]
        del flat[:fmt]
        return out
    return [_regroup(flat, f) for f in fmt]


def _common_prefix(names: list[str]) -> str:
    prefix = names[0] if names else ""
    for name in names:
        i = 0
        while i < len(prefix) and i < len(name) and prefix[i] == name[i]:
            i += 1
        prefix = prefix[:i]
    return prefix


def evaluate(heads: list[Value], env: dict[int, object]) -> list:
    """Run the graph under ``heads`` with its variables bound in ``env`` (``id(Value)`` ->
    NDArray or Symbol): eagerly through ``nd`` kernels, or emitting nodes on Symbols."""
    from ember.ndarray.ndarray import invoke
    from ember.symbol import Symbol, apply
    from ember.symbol import nodes as _n
    vals = dict(env)
    types = None
    tracing = any(isinstance(x, Symbol) for x in env.values())
    for item in _n.post_order(heads):
        if isinstance(item, Value):
            if id(item) not in vals:
                raise MXNetError(f"SymbolBlock: variable {_n.node_name(item)!r} has no value")
            continue
        ins = [vals[id(v)] if id(v) in vals else _hidden(item, v) for v in item.inputs]
        attrs = {k: v for k, v in item.attrs if k != "is_train"}  # the caller's mode rules
        if (tracing and not ins) or any(isinstance(x, Symbol) for x in ins):
            res = apply(item.op, ins, attrs, name=_n.node_name(item))
        elif not ins and None in (attrs.get("shape") or ()):
            # zeros((0, h)) of a recurrent begin state: the graph's inference gives the shape
            types = _infer_types(heads, env) if types is None else types
            attrs["shape"] = _known_shape(types[id(item.outputs[0])], item)
            res = invoke(item.op, ins, attrs, ctx=None)
        else:
            res = invoke(item.op, ins, attrs, ctx=None)
        res = res if isinstance(res, list) else [res]
        for o, r in zip(item.outputs, res):
            vals[id(o)] = r
    return [vals[id(h)] if id(h) in vals else _hidden(None, h) for h in heads]


def _infer_types(heads: list[Value], env: dict[int, object]) -> dict:
    """The types ``infer_shapes`` gives the graph's values for the NDArrays of ``env``."""
    from ember.ir.types import TensorType
    from ember.symbol.infer import infer
    return infer(heads, {k: TensorType(a.shape, np.dtype(a.dtype).name)
                         for k, a in env.items()})


def _known_shape(t, node) -> tuple:
    from ember.symbol import nodes as _n
    if not t.known:
        raise MXNetError(f"SymbolBlock: cannot infer the unknown dims (0) of the shape of "
                         f"node {_n.node_name(node)!r} ({node.op.name}) from the inputs: {t}")
    return t.shape


def _hidden(node, v: Value):
    from ember.symbol import nodes as _n
    where = f" (read by node {_n.node_name(node)!r})" if node is not None else ""
    raise MXNetError(f"SymbolBlock: output {v.index} of node {_n.node_name(v.producer)!r} "
                     f"is hidden in ember{where}")


class SymbolBlock(HybridBlock):
    """A block computing ``outputs`` from the variables ``inputs``; other variables of the
    graph are parameters (shared with ``params`` when given)."""

    def __init__(self, outputs, inputs, params: ParameterDict | None = None):
        from ember.symbol import Group, Symbol
        from ember.symbol import nodes as _n
        super().__init__(prefix=None, params=None)
        self._prefix = ""
        self._params = ParameterDict("", params)
        if isinstance(inputs, Symbol) and len(inputs) == 1:
            inputs = [inputs]
        if isinstance(outputs, list | tuple) and len(outputs) == 1:
            outputs = outputs[0]
        syms, self._in_format = _flatten(inputs, "input")
        outs, self._out_format = _flatten(outputs, "output")
        for s in syms:
            if len(s) != 1 or s._value_list()[0].producer is not None:
                raise MXNetError(f"SymbolBlock: inputs must be variables, but {s} is an "
                                 "output of operators")
        self._input_names = [s.name for s in syms]
        out = Group(outs) if len(outs) > 1 else outs[0]
        self._symbol = out
        self._heads = out._value_list()
        all_vars, args, aux = _n.variables(self._heads)
        for v in all_vars:
            stype = _n._ATTRS.get(v, {}).get("__storage_type__", "0")
            stype = {"1": "row_sparse", "2": "csr"}.get(stype, stype)
            if stype in ("row_sparse", "csr"):
                raise SparseParameterError(
                    f"SymbolBlock doesn't support Parameter '{_n.node_name(v)}' because its "
                    f"storage type is '{stype}'.")
        self._vars: dict[str, list[Value]] = {}
        for v in all_vars:
            self._vars.setdefault(_n.node_name(v), []).append(v)
        unknown = [n for n in self._input_names if n not in self._vars]
        if unknown:
            raise MXNetError(f"SymbolBlock: inputs {unknown} are not variables of the graph "
                             f"(its variables: {', '.join(self._vars)})")
        given = set(self._input_names)
        for vs, null in ((args, False), (aux, True)):
            for v in vs:
                name = _n.node_name(v)
                if name in given or self._params._get_impl(name) is not None:
                    continue  # an input, or a parameter shared through ``params``
                extra = {"grad_req": "null"} if null else {}
                self.params.get(name, allow_deferred_init=True, **extra, **_declared(v))
        cut = len(_common_prefix(list(self._params.keys())))
        self._reg_params = {key[cut:]: val for key, val in self._params.items()}

    @staticmethod
    def imports(symbol_file: str, input_names, param_file: str | None = None, ctx=None,
                allow_missing: bool = False, ignore_extra: bool = False) -> SymbolBlock:
        """A SymbolBlock from ``HybridBlock.export``'s files (MXNet's or ember's).

        Unknown operators in the file are all reported in one MXNetError naming each node.
        Parameters take the saved dtypes. An export of this pair that a killed process
        committed is finished first (``gluon.export.recover``), so the two files match.
        """
        from ember import symbol

        from .export import recover
        recover(symbol_file)
        sym = symbol.load(symbol_file)
        if isinstance(input_names, str):
            input_names = [input_names]
        inputs = [symbol.var(name) for name in input_names]
        block = SymbolBlock(sym, inputs)
        if param_file is not None:
            block.collect_params().load(param_file, ctx, allow_missing, ignore_extra,
                                        cast_dtype=True, dtype_source="saved")
        return block

    def __repr__(self) -> str:
        n_out = len(self._symbol.list_outputs())
        return f"{type(self).__name__}(\n{self._symbol} : {len(self._input_names)} -> " \
               f"{n_out}\n)"

    def hybrid_forward(self, F, x, *args, **kwargs):
        """Evaluate the graph on the inputs (NDArrays or Symbols) and parameters given."""
        inputs, fmt = _flatten([x, *args], "input")
        if len(inputs) != len(self._input_names):
            raise MXNetError(f"{self.name}: takes {len(self._input_names)} inputs "
                             f"({', '.join(self._input_names)}), got {len(inputs)}")
        if fmt != self._in_format:
            raise MXNetError(f"{self.name}: inputs nested as {fmt}, expected "
                             f"{self._in_format} (MXNet's format: 0 is one array)")
        env: dict[int, object] = {}
        for name, value in zip(self._input_names, inputs):
            for v in self._vars.get(name, []):
                env[id(v)] = value
        for key, p in self._reg_params.items():
            for v in self._vars.get(p.name, []):
                env[id(v)] = kwargs[key]
        outs = evaluate(self._heads, env)
        return _regroup(outs, self._out_format)

    def _deferred_infer_shape(self, *args):
        """Learn unknown parameter shapes with the graph's shape inference (MXNet's
        ``infer_shape`` on the cached graph)."""
        from .cached_op import split_args
        arrays, _ = split_args(args)
        given = {name: a.shape for name, a in zip(self._input_names, arrays)
                 if name in self._vars}
        try:
            arg_shapes, _, aux_shapes = self._symbol.infer_shape_partial(**given)
        except MXNetError as e:
            raise MXNetError(f"{self.name}: cannot infer parameter shapes from inputs "
                             f"{[a.shape for a in arrays]}: {e}") from None
        names = self._symbol.list_arguments() + self._symbol.list_auxiliary_states()
        shapes = dict(zip(names, arg_shapes + aux_shapes))
        for p in self.collect_params().values():
            shape = shapes.get(p.name)
            if shape:
                p.shape = shape

    def cast(self, dtype):
        """Cast the parameters; in float16, BatchNorm's stay float32 (as MXNet keeps them)."""
        self._clear_cached_op()
        super().cast(dtype)
        if np.dtype(dtype).name != "float16":
            return
        inputs = set(self._symbol.list_inputs())
        for name in inputs:
            for var, mean in (("running_var", "running_mean"), ("moving_var", "moving_mean")):
                base = name[:-len(var)]
                group = [name, base + mean, base + "gamma", base + "beta"]
                if name.endswith(var) and all(g in inputs for g in group):
                    for g in group:
                        if g in self.params:
                            self.params[g].cast("float32")


def _declared(v: Value) -> dict:
    """Parameter keywords from a variable's declared shape and dtype (``__shape__``...)."""
    from ember.symbol import nodes as _n
    shape, dtype = _n.declared(v)
    kw: dict = {}
    if dtype is not None:
        kw["dtype"] = dtype
    if shape is not None:
        kw["shape"] = tuple(0 if d is None else d for d in shape)
    return kw


__all__ = ["SymbolBlock", "SparseParameterError", "evaluate"]
