"""The op registry: every operator is defined exactly once, here or in an ``opset_*`` module.

An :class:`OpDef` carries everything the rest of ember derives from an op (DESIGN.md s.2):
its kind (for fusion), static attributes with defaults, a shape+dtype rule that may also
refine its inputs' types (how a lazy Dense weight learns its shape), optionally a rule that
fills unknown input dims from known output dims (the backward half of MXNet's FInferShape,
e.g. a split's input from one of its outputs), a NumPy reference
kernel (eager mode and the test oracle), a gradient rule written with ops (so the autograd
tape and the autodiff pass share it), in-place pairs and, for elementwise ops, a scalar
expression template for the code generators.

Gradient rules have the signature ``grad(F, inputs, outputs, ograds, attrs)`` where ``F`` is
a namespace of op functions (``ember.nd`` eagerly, ``ember.sym`` when building graphs) and
return one entry per input: a gradient or ``None`` (no gradient flows there).
"""
from __future__ import annotations

import ast
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import AttrError
from .types import TensorType


class OpKind(enum.Enum):
    """Fusion classes, as in TVM's relay.op.OpPattern."""

    ELEMWISE = 0    # out[i] = f(in[i]) over same-shaped tensors
    BROADCAST = 1   # elementwise with NumPy broadcasting
    INJECTIVE = 2   # each output element reads one input element (reshape, slice, ...)
    REDUCE = 3      # reductions along axes
    OUT_EWISE = 4   # dense / conv / matmul: an elementwise epilogue can be fused
    OPAQUE = 5      # anything else


class _Required:
    def __repr__(self):
        return "REQUIRED"


REQUIRED: Any = _Required()  # default of an attribute the caller must give

InferFn = Callable[[list[TensorType], dict], tuple[list[TensorType], list[TensorType]]]
# (input types, output types, attrs) -> refined input types
InferBackFn = Callable[[list[TensorType], list[TensorType], dict], list[TensorType]]


@dataclass(eq=False)
class OpDef:
    """One operator. See the module docstring for what each part is for."""

    name: str
    kind: OpKind
    compute: Callable[..., Any]
    infer: InferFn
    inputs: tuple[str, ...] = ("data",)   # tensor inputs; ("*data",) is variadic
    attrs: dict[str, Any] = field(default_factory=dict)
    grad: Callable[..., Any] | None = None
    num_outputs: int | Callable[[dict], int] = 1
    inplace: tuple[tuple[int, int], ...] = ()   # (input index, output index) that may share
    template: str | None = None   # scalar expression over a, b, c and attr names (ELEMWISE)
    aliases: tuple[str, ...] = ()
    mxnet_name: str | None = None  # op name in MXNet's symbol JSON
    mode: bool = False     # result depends on training mode: attrs get "is_train"
    random: bool = False   # draws from ember's random state
    mutates: tuple[int, ...] | Callable[[dict], tuple[int, ...]] = ()  # inputs updated in place
    visible_outputs: int | Callable[[dict], int] | None = None  # None: all are visible
    open_attrs: bool = False  # takes further keyword attributes too, kept as text (Custom)
    output_names: Callable[[dict], list[str]] | None = None  # MXNet's FListOutputNames
    positional_inputs: bool = False  # MXNet lists no input names: monitors say input0, ...
    doc: str = ""
    infer_back: InferBackFn | None = None  # input dims from output dims (infer_shapes pass)

    @property
    def variadic(self) -> bool:
        return bool(self.inputs) and self.inputs[0].startswith("*")

    def n_outputs(self, attrs: dict) -> int:
        n = self.num_outputs
        return n(attrs) if callable(n) else n

    def mutated(self, attrs: dict) -> tuple[int, ...]:
        """Indices of the inputs the op writes in place (optimizer states, running stats)."""
        m = self.mutates
        return tuple(m(attrs) if callable(m) else m)

    def n_visible(self, attrs: dict) -> int:
        """How many outputs users see (MXNet hides e.g. Dropout's mask)."""
        v = self.visible_outputs
        if v is None:
            return self.n_outputs(attrs)
        return v(attrs) if callable(v) else v

    def __repr__(self) -> str:
        return f"<op {self.name}>"


_OPS: dict[str, OpDef] = {}      # canonical name -> op
_ALIASES: dict[str, OpDef] = {}  # every name an op answers to (canonical, aliases, mxnet)


def register(op: OpDef) -> OpDef:
    """Add ``op`` to the registry; every name it answers to must be new."""
    names = {op.name, *op.aliases} | ({op.mxnet_name} if op.mxnet_name else set())
    for n in names:
        if n in _ALIASES and _ALIASES[n] is not op:
            raise ValueError(f"op name {n!r} is defined twice ({_ALIASES[n].name}, {op.name})")
    _OPS[op.name] = op
    for n in names:
        _ALIASES[n] = op
    return op


def defop(name: str, kind: OpKind, compute, infer, **kw) -> OpDef:
    """Build and register an :class:`OpDef` in one call (the usual way to define an op)."""
    return register(OpDef(name, kind, compute, infer, **kw))


def get_op(name: str) -> OpDef:
    """The op answering to ``name`` (canonical name, alias or MXNet name)."""
    _load()
    try:
        return _ALIASES[name]
    except KeyError:
        raise AttrError(f"unknown operator {name!r}") from None


def has_op(name: str) -> bool:
    _load()
    return name in _ALIASES


def all_ops() -> dict[str, OpDef]:
    """Canonical name -> op, for every registered op."""
    _load()
    return dict(_OPS)


def all_names() -> dict[str, OpDef]:
    """Every name (aliases included) -> op."""
    _load()
    return dict(_ALIASES)


def _freeze(v):
    if isinstance(v, np.dtype) or (isinstance(v, type) and issubclass(v, np.generic)):
        return np.dtype(v).name
    if isinstance(v, list | tuple):
        return tuple(_freeze(x) for x in v)
    if hasattr(v, "item") and getattr(v, "shape", None) == ():
        return v.item()  # NumPy scalar -> Python scalar
    return v


def parse_attr(text: str):
    """Parse one attribute written as text (MXNet JSON, IR text): '256', '(2, 2)', 'relu'."""
    if not isinstance(text, str):
        return _freeze(text)
    t = text.strip()
    if t in ("True", "true"):
        return True
    if t in ("False", "false"):
        return False
    try:
        return _freeze(ast.literal_eval(t))
    except (ValueError, SyntaxError):
        return t


def normalize_attrs(op: OpDef, given: dict) -> dict:
    """Fill defaults, freeze lists into tuples, reject unknown or missing attributes."""
    attrs = {}
    for k, v in given.items():
        if k not in op.attrs:
            if op.open_attrs:  # MXNet passes such arguments to the op as strings
                attrs[k] = v if isinstance(v, str) else str(v)
                continue
            if not op.attrs:  # MXNet ignores keyword arguments of parameter-less ops
                continue
            raise AttrError(f"{op.name}: unknown argument {k!r}; it takes "
                            f"{', '.join(op.attrs)}")
        if k == "shape" and isinstance(v, int | np.integer):  # MXNet's TShape takes an int
            v = (int(v),)
        attrs[k] = _freeze(v)
    for k, default in op.attrs.items():
        if k not in attrs:
            if default is REQUIRED:
                raise AttrError(f"{op.name}: required argument {k!r} is missing")
            attrs[k] = default
    return attrs


def _load():
    """Import the opset modules once (they register themselves)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from . import opsets  # noqa: F401


_loaded = False
