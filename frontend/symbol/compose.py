"""Calling an op on Symbols, MXNet style: named nodes and auto-created input variables.

Unnamed nodes take a name from ``mx.name.NameManager`` (``fullyconnected0``). Inputs left
out become new variables named ``<node name>_<input name>`` (``fc1_weight``,
``bn_moving_mean``), as nnvm's ``Symbol::Compose`` makes them; an optional input is made
only when the op's attributes use it (a bias unless ``no_bias``, PReLU's gamma, a softmax
length when ``use_length``).
"""
from __future__ import annotations

from ember import util as _util
from ember.ir.emit import make_parser
from ember.ir.ops import parse_attr
from ember.name import current as current_names

from .nodes import item_of, user_attrs
from .symbol import Symbol, apply, var

# optional input -> whether the op's attributes call for it
_OPTIONAL = {
    "bias": lambda at: not at("no_bias"),
    "gamma": lambda at: at("act_type") == "prelu",
    "length": lambda at: bool(at("use_length")),
    "state_cell": lambda at: at("mode") == "lstm",  # the fused RNN's
    "sequence_length": lambda at: bool(at("use_sequence_length")),
}


# MXNet's per-op initializers of inputs (nnvm's FSetInputVarAttrOnCompose)
_DEFAULT_INIT = {
    ("batch_norm", 3): '["zero", {}]', ("batch_norm", 4): '["one", {}]',
    ("leaky_relu", 1): '["Constant", {"value": 0.25}]',
}
# attributes MXNet keeps on the node (as __key__) and copies to variables it creates
_HIDDEN = ("lr_mult", "wd_mult", "ctx_group", "force_mirroring", "mirror_stage",
           "profiler_scope")


def fill_inputs(op, name: str, args: tuple, kwargs: dict, hidden: dict | None = None) -> None:
    """Add a new variable to ``kwargs`` for each tensor input the call leaves out."""
    n_in = len(op.inputs)
    k = 0
    while k < min(len(args), n_in) and (isinstance(args[k], Symbol) or args[k] is None):
        k += 1

    def attr(key):
        v = kwargs.get(key, op.attrs.get(key))
        return parse_attr(v) if isinstance(v, str) else v
    for spec in op.inputs[k:]:
        inp = spec.rstrip("?")
        if inp in kwargs:
            continue
        if spec.endswith("?") and not _OPTIONAL.get(inp, lambda at: False)(attr):
            continue
        kwargs[inp] = var(f"{name}_{inp}", attr=dict(hidden or {}))


def unknown_dims(op, n_inputs: int, attrs: dict, np_shape: bool) -> dict:
    """``attrs`` with each unknown dim in the ``shape`` of an op without tensor inputs
    (zeros, ones, full, random draws) made None: -1, and 0 unless ``np_shape``.

    MXNet's legacy shape semantics: 0 is an unknown dim, and nnvm's InitShape lets graph
    inference fill it (a recurrent cell's ``begin_state`` is ``zeros(shape=(0, hidden))``,
    whose batch size the first step's elementwise ops give). ``infer_shapes`` writes the
    inferred shape back into the attribute.
    """
    shape = attrs.get("shape")
    if n_inputs or not isinstance(shape, tuple):
        return attrs
    dims = tuple(None if d == -1 or (d == 0 and not np_shape) else d for d in shape)
    return attrs if dims == shape else {**attrs, "shape": dims}


def make_function(op, name=None):
    parse = make_parser(op, tensor_type=Symbol)
    fname = name or op.name
    hint = fname.lower()

    def fn(*args, name=None, attr=None, **kwargs):
        kwargs.pop("out", None)
        if "ctx" in kwargs and "ctx" not in op.attrs:  # MXNet's creation ops record a device;
            _check_ctx(kwargs.pop("ctx"))            # a Symbol computes wherever it is bound
        node_name = current_names().get(name, hint)
        hidden = {f"__{k}__": str(kwargs.pop(k)) for k in _HIDDEN if k in kwargs}
        if not op.variadic:
            fill_inputs(op, node_name, args, kwargs, hidden)
        tensors, attrs = parse(args, kwargs)
        attrs = unknown_dims(op, len(tensors), attrs, _util.is_np_shape())
        for i, t in enumerate(tensors):  # MXNet's default initializers of some inputs
            init = _DEFAULT_INIT.get((op.name, i))
            if init and isinstance(t, Symbol) and t._value_list()[0].producer is None:
                user_attrs(item_of(t._value_list()[0])).setdefault("__init__", init)
        res = apply(op, tensors, attrs, name=node_name)
        if hidden:
            user_attrs(item_of(res._value_list()[0])).update(hidden)
        if isinstance(res, list):
            res = Symbol._group([s._value for s in res])
        if attr:
            user_attrs(item_of(res._value_list()[0])).update(
                {k: str(v) for k, v in attr.items()})
        return res
    fn.__name__ = fname
    fn.__doc__ = op.doc or f"Symbolic ``{op.name}``."
    return fn


def _check_ctx(ctx) -> None:
    """A ``ctx=`` given to a Symbol op must be a device ember can use."""
    from ember.context import Context, check_device
    if isinstance(ctx, str):
        kind, _, rest = ctx.partition("(")
        ctx = Context(kind, int(rest.rstrip(")") or 0)) if kind in ("cpu", "gpu") else None
    if isinstance(ctx, Context):
        check_device(ctx)
