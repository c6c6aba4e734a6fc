"""``Symbol``: MXNet's symbolic graph handle over ember's IR, with NDArray's operator surface.

A Symbol holds one IR Value (``_value``) or, when grouped, several heads (``_heads``).
``hybrid_forward(F, x, ...)`` runs with ``F = ember.sym`` when a block is traced; each op call
becomes an IR node whose shape rule runs at once (``ir.graph.make_node``). Built by hand
(``sym.var('x')``, ``sym.FullyConnected(data=x, num_hidden=10, name='fc1')``), Symbols are
MXNet 1.x symbols: named nodes, auto-created parameter variables, graph queries
(``list_arguments``, ``get_internals``...), ``infer_shape``/``infer_type``, JSON, composition
by calling, and ``bind``/``simple_bind`` to an :class:`~ember.symbol.executor.Executor`.
"""
from __future__ import annotations

import numpy as np

from ember import autograd as _ag
from ember import util as _util
from ember.base import MXNetError
from ember.ir import TensorType
from ember.ir import emit as _emit
from ember.ir.graph import Node, Value

from . import infer as _infer
from . import nodes as _n
from .novalue import NoValues, no_truth


class Symbol(_emit.Sym, NoValues):
    """A symbolic tensor (one IR Value) or a group of them (MXNet's multi-output Symbol)."""

    __slots__ = ("_heads",)

    def __init__(self, value: Value | None, heads: list[Value] | None = None):
        super().__init__(value)
        self._heads = heads

    @classmethod
    def _group(cls, values: list[Value]) -> Symbol:
        values = list(values)
        return cls(values[0] if values else None, values)

    @property
    def _outputs(self) -> list[Value]:
        return self._value_list()

    def _value_list(self) -> list[Value]:
        return list(self._heads) if self._heads is not None else [self._value]

    # ---- names and structure ---------------------------------------------------------------
    @property
    def name(self) -> str | None:
        """The head node's name; None for a group of several outputs."""
        outs = self._value_list()
        return _n.node_name(_n.item_of(outs[0])) if len(outs) == 1 else None

    def __repr__(self) -> str:
        outs = self._value_list()
        if len(outs) == 1:
            return f"<Symbol {self.name}>"
        names = dict.fromkeys(_n.node_name(_n.item_of(v)) for v in outs)
        return f"<Symbol group [{', '.join(names)}]>"

    def __bool__(self):
        raise no_truth(self)

    __nonzero__ = __bool__

    def __len__(self) -> int:
        return len(self._value_list())

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __getitem__(self, index) -> Symbol:
        outs = self._value_list()
        if isinstance(index, str):
            names = self.list_outputs()
            hits = [i for i, n in enumerate(names) if n == index]
            if len(hits) != 1:
                raise ValueError(f"there are {len(hits)} outputs named {index!r} "
                                 f"(outputs: {names})")
            index = hits[0]
        if not isinstance(index, int | np.integer):
            raise TypeError(f"Symbol index must be an int or an output name, not {index!r}")
        if not -len(outs) <= index < len(outs):
            raise IndexError(f"output index {index} out of range ({len(outs)} outputs)")
        return Symbol(outs[index])

    # ---- what NDArray code run under @ember.compile reads from a traced value --------------
    def backward(self, out_grad=None, retain_graph: bool = False, train_mode: bool = True):
        """Inside ``@ember.compile``: gradients of this loss for the parameters read."""
        from ember import trace_state
        trace = trace_state.current()
        if trace is None:
            raise MXNetError("backward() of a Symbol works only inside a function being "
                             "compiled with @ember.compile")
        trace.backward(self, out_grad)

    @property
    def context(self):
        from ember.context import current_context
        return current_context()

    ctx = context

    @property
    def _fresh_grad(self) -> bool:
        return True  # a traced step's gradients are made by its own backward

    @_fresh_grad.setter
    def _fresh_grad(self, value):
        pass  # nothing to reset: every run of the compiled step recomputes them

    @property
    def stype(self) -> str:
        return "default"

    def list_outputs(self) -> list[str]:
        """Output names: ``fc1_output``, ``split0_output1``, or a variable's name."""
        return [_n.output_name(v) for v in self._value_list()]

    def list_arguments(self) -> list[str]:
        """Names of the input variables that are not auxiliary states, in DFS order."""
        return [_n.node_name(v) for v in _n.variables(self._value_list())[1]]

    def list_auxiliary_states(self) -> list[str]:
        """Names of the variables ops update in place (BatchNorm's moving mean and var)."""
        return [_n.node_name(v) for v in _n.variables(self._value_list())[2]]

    def list_inputs(self) -> list[str]:
        """Names of every input variable, arguments and auxiliary states, in DFS order."""
        return [_n.node_name(v) for v in _n.variables(self._value_list())[0]]

    def get_internals(self) -> Symbol:
        """A group of every variable and every visible node output, in DFS order."""
        outs: list[Value] = []
        for it in _n.post_order(self._value_list()):
            outs.extend(_n.visible_outputs(it))
        return Symbol._group(outs)

    def get_children(self) -> Symbol | None:
        """A group of the inputs of the head nodes; None for a variable."""
        producers = dict.fromkeys(v.producer for v in self._value_list()
                                  if v.producer is not None)
        ins = [v for node in producers for v in node.inputs]
        return Symbol._group(ins) if ins else None

    # ---- attributes ------------------------------------------------------------------------
    def _head_item(self):
        items = {id(it): it for it in map(_n.item_of, self._value_list())}
        if len(items) != 1:  # the outputs of one multi-output op share its node (MXNet)
            raise MXNetError("attributes belong to the Symbol of one node, not to groups")
        return next(iter(items.values()))

    def attr(self, key: str) -> str | None:
        """The head's attribute ``key`` as a string (or None)."""
        attrs = _item_attrs(self._head_item())
        return attrs.get(key, attrs.get(f"__{key}__"))

    def list_attr(self, recursive: bool = False) -> dict:
        """The head's attributes (all nodes' when ``recursive``, keyed ``node$attr``)."""
        if recursive:
            return {f"{k}${a}": v for k, d in self.attr_dict().items() for a, v in d.items()}
        return dict(_item_attrs(self._head_item()))

    def attr_dict(self) -> dict[str, dict[str, str]]:
        """Node name -> its attributes, for every node with some."""
        out = {}
        for it in _n.post_order(self._value_list()):
            attrs = _item_attrs(it)
            if attrs:
                out[_n.node_name(it)] = attrs
        return out

    def _set_attr(self, **kwargs) -> None:
        """Set string attributes on the head node."""
        d = _n.user_attrs(self._head_item())
        for k, v in kwargs.items():
            if not isinstance(v, str):
                raise ValueError(f"attribute {k!r} must be a string, got {type(v).__name__}")
            d[k] = v

    # ---- composition and copies -------------------------------------------------------------
    def __call__(self, *args, **kwargs) -> Symbol:
        """A copy with input variables replaced: positionally (argument order) or by name."""
        kwargs.pop("name", None)
        ins, argl, _ = _n.variables(self._value_list())
        if args and kwargs:
            raise MXNetError("compose with positional or keyword arguments, not both")
        subst: dict[int, Value] = {}
        pairs = list(zip(argl, args)) if args else []
        by_name = {_n.node_name(v): v for v in ins}
        for k, s in kwargs.items():
            if k in by_name:
                pairs.append((by_name[k], s))
        for v, s in pairs:
            if not isinstance(s, Symbol) or len(s) != 1:
                raise TypeError(f"compose: {_n.node_name(v)!r} must be one Symbol output")
            subst[id(v)] = s._value_list()[0]
        return Symbol._group(_n.copy_graph(self._value_list(), subst)) if self._heads \
            is not None else Symbol(_n.copy_graph(self._value_list(), subst)[0])

    def __copy__(self) -> Symbol:
        heads = _n.copy_graph(self._value_list())
        return Symbol._group(heads) if self._heads is not None else Symbol(heads[0])

    def __deepcopy__(self, memo) -> Symbol:
        return self.__copy__()

    def __reduce__(self):
        from .json_io import load_json
        return load_json, (self.tojson(),)

    # ---- inference (frontend/symbol/infer.py) -------------------------------------------------
    def infer_shape_partial(self, *args, **kwargs):
        """(arg_shapes, out_shapes, aux_shapes): unknown dims 0 and unknown shapes ``()``, or
        under ``mx.np_shape(True)`` unknown dims -1 and unknown shapes None (MXNet's two
        conventions)."""
        return _infer.shapes(self._value_list(), args, kwargs, partial=True)

    def infer_shape(self, *args, **kwargs):
        """Like :meth:`infer_shape_partial`, or ``(None, None, None)`` if any is unknown."""
        return _infer.shapes(self._value_list(), args, kwargs, partial=False)

    def infer_type_partial(self, *args, **kwargs):
        """(arg_types, out_types, aux_types) as NumPy types, None where unknown."""
        return _infer.dtypes(self._value_list(), args, kwargs)

    def infer_type(self, *args, **kwargs):
        """Like :meth:`infer_type_partial`, or ``(None, None, None)`` if any is unknown."""
        res = _infer.dtypes(self._value_list(), args, kwargs)
        if any(t is None for part in res for t in part):
            return None, None, None
        return res

    # ---- serialisation -------------------------------------------------------------------------
    def tojson(self, remove_amp_cast: bool = True) -> str:
        """MXNet's JSON graph format (nnvm's ``nodes``/``arg_nodes``/``heads``)."""
        from .json_io import to_json
        return to_json(self._value_list())

    def save(self, fname: str, remove_amp_cast: bool = True) -> None:
        """Write :meth:`tojson` to ``fname``."""
        with open(fname, "w") as f:
            f.write(self.tojson())

    def debug_str(self) -> str:
        """A readable listing of the graph, in MXNet's ``debug_str`` layout."""
        from .json_io import debug_text
        return debug_text(self._value_list())

    # ---- execution -----------------------------------------------------------------------------
    def bind(self, ctx, args, args_grad=None, grad_req="write", aux_states=None,
             group2ctx=None, shared_exec=None):
        """An Executor over the given argument arrays (list in argument order, or dict)."""
        from .executor import bind
        return bind(self, ctx, args, args_grad, grad_req, aux_states)

    def simple_bind(self, ctx, grad_req="write", type_dict=None, stype_dict=None,
                    group2ctx=None, shared_arg_names=None, shared_exec=None,
                    shared_buffer=None, **kwargs):
        """An Executor with arrays allocated from the input shapes given as keywords."""
        from .executor import simple_bind
        return simple_bind(self, ctx, grad_req, type_dict, kwargs)

    def eval(self, ctx=None, **kwargs) -> list:
        """Run the graph once on the keyword arrays; the list of outputs."""
        exe = self.bind(ctx, kwargs)
        return exe.forward()

    def _gen_atomic_symbol(self) -> Symbol:
        """The head op alone, applied to fresh variables named after its inputs."""
        node = self._head_item()
        if not isinstance(node, Node):
            raise MXNetError("a variable has no atomic op")
        names = [n.rstrip("?").lstrip("*") for n in node.op.inputs]
        ins = [var(names[min(i, len(names) - 1)] if names else f"arg{i}")
               for i in range(len(node.inputs))]
        attrs = {k: v for k, v in node.attrs if k != "is_train"}
        res = apply(node.op, ins, attrs, name=node.name)
        return res if isinstance(res, Symbol) else Symbol._group([s._value for s in res])


def _item_attrs(item) -> dict[str, str]:
    """User attributes plus, for an op node, its non-default parameters (as strings)."""
    from .json_io import op_attr_strings
    base = op_attr_strings(item) if isinstance(item, Node) else {}
    return {**base, **_n._ATTRS.get(item, {})}


_DTYPE_CODES = {"float32": 0, "float64": 1, "float16": 2, "uint8": 3, "int32": 4, "int8": 5,
                "int64": 6, "bool": 7, "int16": 8, "uint16": 9, "uint32": 10, "uint64": 11,
                "bfloat16": 12}


def var(name: str, attr: dict | None = None, shape=None, lr_mult=None, wd_mult=None,
        dtype=None, init=None, stype=None, **kwargs) -> Symbol:
    """A graph input named ``name`` (MXNet's ``Variable``); unknown dims are 0 or None."""
    if not isinstance(name, str):
        raise TypeError("variable name must be a string")
    dims = _infer._to_dims(shape)
    dt = None if dtype is None else np.dtype(dtype).name
    v = Value(TensorType(dims, dt or "float32"), name_hint=name)
    _n.declare(v, dims, dt)
    attrs = {k: str(x) for k, x in (attr or {}).items()}
    if shape is not None:
        unknown = -1 if _util.is_np_shape() else 0
        attrs["__shape__"] = str(tuple(unknown if d is None else d for d in dims))
    extra = {"lr_mult": lr_mult, "wd_mult": wd_mult, "dtype": dt, "storage_type": stype}
    for k, x in extra.items():
        if x is not None:
            attrs[f"__{k}__"] = str(_DTYPE_CODES.get(x, x)) if k == "dtype" else str(x)
    if init is not None:
        attrs["__init__"] = init if isinstance(init, str) else init.dumps()
    for k, x in kwargs.items():
        if not (k.startswith("__") and k.endswith("__")):
            k = f"__{k}__"
        attrs[k] = str(x)
    if attrs:
        _n.user_attrs(v).update(attrs)
    return Symbol(v)


Variable = var


def apply(op, inputs, attrs: dict, name: str | None = None):
    """Emit ``op`` on Symbols (training mode from autograd); a Symbol or a list."""
    if op.mode:
        attrs = {**attrs, "is_train": _ag._STATE.training}
    for s in inputs:
        if isinstance(s, Symbol) and s._heads is not None and len(s._heads) != 1:
            raise MXNetError(f"{op.name}: cannot use a group of {len(s._heads)} outputs as "
                             "one input; index it first")
    if not inputs:
        res = _emit.apply(op, [], attrs, name=name)
        return [Symbol(s._value) for s in res] if isinstance(res, list) else Symbol(res._value)
    inputs = [Symbol(s._value_list()[0]) if isinstance(s, Symbol) and s._heads else s
              for s in inputs]
    return _emit.apply(op, inputs, attrs, name=name)


def Group(symbols) -> Symbol:
    """One Symbol whose outputs are the outputs of ``symbols``, in order."""
    heads: list[Value] = []
    for s in symbols:
        if not isinstance(s, Symbol):
            raise TypeError("Group expects Symbols")
        heads.extend(s._value_list())
    return Symbol._group(heads)


def _named(method):
    """Wrap an operator method so the node it makes gets a NameManager name."""
    def wrapped(self, *args, **kwargs):
        res = method(self, *args, **kwargs)
        if isinstance(res, Symbol) and res._value is not None:
            node = res._value.producer
            if node is not None and node.name is None:
                _n.node_name(node)
        return res
    wrapped.__name__ = method.__name__
    return wrapped


for _k in list(_emit.OPERATORS):
    for _m in (f"__{_k}__", f"__r{_k}__"):
        if hasattr(_emit.Sym, _m):
            setattr(Symbol, _m, _named(getattr(_emit.Sym, _m)))
for _m in ("__neg__", "__abs__", "reshape", "astype"):
    setattr(Symbol, _m, _named(getattr(_emit.Sym, _m)))
Symbol.__hash__ = _emit.Sym.__hash__


def _tracing() -> bool:
    """Whether Symbols are standing for arrays (a hybridized block or ``@ember.compile``
    being traced), rather than being built with MXNet's symbol API."""
    from ember import trace_state
    from ember.gluon import parameter
    return trace_state.current() is not None or getattr(parameter._SYMBOLIC, "on", False)


def _elementwise(method, op_name: str):
    """MXNet's ``Symbol + Symbol`` is the same-shape ``_Plus`` (elemwise_add), whose shape
    rule also gives each operand the other's shape (``infer_shape`` of ``(0, 10) + (12, 0)``
    is (12, 10) for both); traced code keeps NDArray's broadcasting ``+``."""
    def wrapped(self, other):
        if isinstance(other, Symbol) and not _tracing():
            from ember import symbol
            return getattr(symbol, op_name)(self, other)
        return method(self, other)
    wrapped.__name__ = method.__name__
    return wrapped


for _m, _op in (("__add__", "_Plus"), ("__sub__", "_Minus"), ("__mul__", "_Mul"),
                ("__truediv__", "_Div")):
    setattr(Symbol, _m, _elementwise(getattr(Symbol, _m), _op))


def _bind_fluent(namespace):
    """Symbol methods call ``ember.sym`` (so training mode is honoured), not ``ir.emit.F``."""
    def make(name):
        def method(self, *args, **kwargs):
            return namespace[name](self, *args, **kwargs)
        method.__name__ = name
        return method
    for name in _emit.FLUENT:
        if name in namespace:
            setattr(Symbol, name, make(name))
    for name in ("flatten", "squeeze", "expand_dims"):  # NDArray's view flag; a graph ignores it
        if name in namespace:
            setattr(Symbol, name, _drop_inplace(getattr(Symbol, name)))


def _drop_inplace(method):
    """A shape method that accepts (and ignores) ``inplace=``, as MXNet's Symbol methods do."""
    def wrapped(self, *args, inplace=False, **kwargs):
        return method(self, *args, **kwargs)
    wrapped.__name__ = method.__name__
    return wrapped


__all__ = ["Symbol", "var", "Variable", "Group", "apply"]
