"""Building IR by calling ops: the ``F`` namespace that gradient rules and tracers use.

``Sym`` wraps an IR :class:`~ember.ir.graph.Value` with the operator and method surface of an
NDArray (``a * b``, ``x.shape``, ``x.reshape(...)``, ``x.sum(axis=1)``), so an op's gradient
rule, written once with ``F.<op>`` calls and operators, runs eagerly on NDArrays and emits
graph nodes here. The calling convention of ops (tensors first, then attributes
positionally or by keyword) and the operator table live here too, shared by ``ember.nd``
and ``ember.sym``.
"""
from __future__ import annotations

import numbers

import numpy as np

from .errors import AttrError
from .graph import Value, make_node
from .ops import OpDef, get_op, has_op, normalize_attrs

# Python operator -> (array op, scalar op, reflected scalar op)  (MXNet's _ufunc_helper)
OPERATORS = {
    "add": ("add", "add_scalar", "add_scalar"),
    "sub": ("sub", "sub_scalar", "rsub_scalar"),
    "mul": ("mul", "mul_scalar", "mul_scalar"),
    "truediv": ("div", "div_scalar", "rdiv_scalar"),
    "mod": ("mod", "mod_scalar", "rmod_scalar"),
    "pow": ("power", "power_scalar", "rpower_scalar"),
    "eq": ("equal", "equal_scalar", "equal_scalar"),
    "ne": ("not_equal", "not_equal_scalar", "not_equal_scalar"),
    "gt": ("greater", "greater_scalar", "lesser_scalar"),
    "ge": ("greater_equal", "greater_equal_scalar", "lesser_equal_scalar"),
    "lt": ("lesser", "lesser_scalar", "greater_scalar"),
    "le": ("lesser_equal", "lesser_equal_scalar", "greater_equal_scalar"),
}
COMPARISONS = ("eq", "ne", "gt", "ge", "lt", "le")

# ops available as methods: x.sum(axis=1) is F.sum(x, axis=1)
FLUENT = """abs sign round rint fix floor ceil trunc sin cos tan arcsin arccos arctan degrees
radians sinh cosh tanh arcsinh arccosh arctanh exp expm1 log log10 log2 log1p sqrt rsqrt cbrt
rcbrt square reciprocal relu sigmoid softmax log_softmax softmin clip sum nansum prod nanprod
mean max min norm argmax argmin argmax_channel transpose swapaxes flip tile repeat pad
broadcast_to broadcast_like broadcast_axes split slice slice_axis slice_like take pick one_hot
sort argsort topk flatten expand_dims squeeze reshape_like zeros_like ones_like diag
depth_to_space space_to_depth shape_array size_array where""".split()

_IGNORED = ("name", "attr", "num_args")


def make_parser(op: OpDef, tensor_type):
    """A function ``(args, kwargs) -> (tensor inputs, attrs)`` for calls of ``op``.

    Tensor inputs come first, positionally or by name (``data=``, ``weight=``); an input
    named with a trailing ``?`` is optional; ``("*data",)`` is variadic. The remaining
    positional arguments are attributes in declaration order.
    """
    attr_names = list(op.attrs)
    if op.variadic:
        def parse_variadic(args, kwargs):
            tensors = list(args[0]) if len(args) == 1 and isinstance(args[0], list | tuple) \
                else list(args)
            if not tensors and op.inputs[0][1:] in kwargs:
                tensors = list(kwargs.pop(op.inputs[0][1:]))
            for k in _IGNORED:
                kwargs.pop(k, None)
            for t in tensors:
                if not isinstance(t, tensor_type):
                    raise AttrError(f"{op.name}: expected arrays, got {type(t).__name__}")
            return tensors, normalize_attrs(op, kwargs)
        return parse_variadic

    names = [n.rstrip("?") for n in op.inputs]
    optional = [n.endswith("?") for n in op.inputs]
    n_in = len(names)

    def parse(args, kwargs):
        k = 0
        while k < min(len(args), n_in) and (isinstance(args[k], tensor_type)
                                            or (args[k] is None and optional[k])):
            k += 1
        tensors, extra = list(args[:k]), args[k:]
        for i in range(k, n_in):
            tensors.append(kwargs.pop(names[i], None))
        for i, t in enumerate(tensors):
            if t is None and not optional[i]:
                raise AttrError(f"{op.name}: input {names[i]!r} is missing")
            if t is not None and not isinstance(t, tensor_type):
                raise AttrError(f"{op.name}: input {names[i]!r} must be an array, "
                                f"got {type(t).__name__}")
        tensors = [t for t in tensors if t is not None]  # MXNet packs the given inputs
        for key in _IGNORED:
            kwargs.pop(key, None)
        if extra:
            if len(extra) > len(attr_names):
                raise AttrError(f"{op.name}: too many positional arguments")
            for key, v in zip(attr_names, extra):
                if key in kwargs:
                    raise AttrError(f"{op.name}: argument {key!r} given twice")
                kwargs[key] = v
        return tensors, normalize_attrs(op, kwargs)
    return parse


class Sym:
    """An IR Value with NDArray's operators and methods; operations emit nodes."""

    __slots__ = ("_value", "__weakref__")
    __array_priority__ = 1000.0

    def __init__(self, value: Value):
        self._value = value

    @property
    def shape(self):
        return self._value.type.shape

    @property
    def dtype(self):
        return np.dtype(self._value.type.dtype).type

    @property
    def ndim(self):
        return self._value.type.ndim

    def __hash__(self):
        return id(self)

    def __bool__(self):
        raise TypeError("the truth value of a traced value is unknown: Python control flow "
                        "on tensor values cannot be compiled")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._value.type}>"

    def __neg__(self):
        return apply(get_op("negative"), [self], {})

    def __abs__(self):
        return apply(get_op("abs"), [self], {})

    def reshape(self, *shape, **kwargs):
        if len(shape) == 1 and isinstance(shape[0], list | tuple):
            shape = shape[0]
        shape = kwargs.pop("shape", shape)
        op = get_op("reshape")
        return apply(op, [self], normalize_attrs(op, {"shape": tuple(shape), **kwargs}))

    def astype(self, dtype, copy: bool = True):
        op = get_op("cast")
        return apply(op, [self], normalize_attrs(op, {"dtype": np.dtype(dtype).name}))


# ``() -> "file.py:12"``: the user's source line of the op being emitted; the front end
# installs one that skips ember's own frames (ir/ knows nothing of the front end)
LOCATOR = None


def apply(op: OpDef, inputs: list, attrs: dict, name: str | None = None,
          loc: str | None = None):
    """Emit ``op`` on Syms; one result of the inputs' class, or a list for several."""
    cls = type(inputs[0]) if inputs else Sym
    if loc is None and LOCATOR is not None and cls is not Sym:  # traced user code
        loc = LOCATOR()
    node = make_node(op, [s._value for s in inputs], attrs, name=name, loc=loc)
    outs = [cls(v) for v in node.outputs[:op.n_visible(node.attr_dict)]]
    return outs[0] if len(outs) == 1 else outs


def _operator(names, reflected=False):
    arr_op, sc_op, rsc_op = names

    def method(self, other):
        if isinstance(other, Sym):
            a, b = (other, self) if reflected else (self, other)
            return apply(get_op(arr_op), [a, b], {})
        if isinstance(other, numbers.Number | np.generic):
            op = get_op(rsc_op if reflected else sc_op)
            return apply(op, [self], {"scalar": other})
        return NotImplemented
    return method


for _k, _names in OPERATORS.items():
    setattr(Sym, f"__{_k}__", _operator(_names))
    if _k not in COMPARISONS:
        setattr(Sym, f"__r{_k}__", _operator(_names, reflected=True))


def _fluent(name):
    def method(self, *args, **kwargs):
        return getattr(F, name)(self, *args, **kwargs)
    method.__name__ = name
    return method


class Namespace:
    """``F.<op name>(...)``: op calls that emit nodes on ``Sym`` values (cached per name)."""

    def __init__(self, tensor_type=Sym):
        self._tensor_type = tensor_type
        self._fns: dict = {}

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        fn = self._fns.get(name)
        if fn is None:
            if not has_op(name):
                raise AttributeError(f"no op named {name!r}")
            op = get_op(name)
            parse = make_parser(op, self._tensor_type)

            def fn(*args, **kwargs):
                tensors, attrs = parse(args, dict(kwargs))
                return apply(op, tensors, attrs)
            self._fns[name] = fn
        return fn


F = Namespace()

for _name in FLUENT:
    if not hasattr(Sym, _name):
        setattr(Sym, _name, _fluent(_name))
