"""``mx.operator``: operators written in Python, as MXNet 1.x has them.

Subclass :class:`CustomOpProp` to say what the operator takes and gives (``list_arguments``,
``list_outputs``, ``list_auxiliary_states``, ``infer_shape``, ``infer_type``,
``declare_backward_dependency``) and to make the worker (``create_operator``), and
:class:`CustomOp` for the work (``forward`` and ``backward`` on NDArrays, writing results
with ``self.assign(dst, req, src)``). Register the prop with ``@mx.operator.register(name)``
and call it with ``mx.nd.Custom(x, op_type=name, **kwargs)``, ``mx.sym.Custom(...)``, or
``F.Custom(...)`` in ``hybrid_forward``; keyword arguments reach the prop as strings.

Every such call is the registry op ``Custom`` (``ember.ir.opset_custom``; run by
``ember.custom_run``), so eager calls, autograd, hybridized blocks, ``@ember.compile`` and the
Symbol Executor share one path. The deprecated ``PythonOp``/``NumpyOp``/``NDArrayOp`` run
on it too.
"""
from __future__ import annotations

import collections
import warnings

from ember import ndarray as _nd
from ember import symbol as _sym
from ember.base import MXNetError
from ember.ir import all_names, get_op
from ember.ir.emit import Sym
from ember.ir.ops import REQUIRED
from ember.ir.opset_custom import new_uid
from ember.name import current as _current_names
from ember.ndarray.ndarray import NDArray, invoke
from ember.symbol.nodes import item_of, user_attrs

from . import custom_run as _run

__all__ = ["CustomOp", "CustomOpProp", "register", "PythonOp", "NumpyOp", "NDArrayOp",
           "get_all_registered_operators", "get_operator_arguments", "OperatorArguments"]


class CustomOp:
    """Base class of the worker of a Python operator: override ``forward``/``backward``."""

    def __init__(self):
        pass

    def forward(self, is_train, req, in_data, out_data, aux):
        """Compute ``out_data`` from ``in_data`` (lists of NDArrays); ``req[i]`` says how to
        write output i ('write', 'add', 'null'; ``self.assign`` follows it); ``aux`` are the
        auxiliary states, updated in place."""

    def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
        """Compute ``in_grad`` (one NDArray per argument, written as ``req`` says) from the
        output gradients and the forward's inputs and outputs."""

    def assign(self, dst, req, src):
        """Write ``src`` into ``dst`` as ``req`` says: 'write'/'inplace' store, 'add' adds,
        'null' leaves ``dst`` alone."""
        if req == "null":
            return
        key = () if getattr(dst, "ndim", 1) == 0 else slice(None)
        if req in ("write", "inplace"):
            dst[key] = src
        elif req == "add":
            dst[key] += src
        else:
            raise MXNetError(f"assign: req must be 'write', 'add', 'inplace' or 'null', "
                             f"not {req!r}")


class CustomOpProp:
    """Base class of what a Python operator takes and gives; see the module docstring.

    ``need_top_grad``: whether backward reads the output gradients (False for a loss
    that makes its own gradient); the default ``declare_backward_dependency`` uses it.
    """

    def __init__(self, need_top_grad=True):
        self.need_top_grad_ = need_top_grad

    def infer_shape(self, in_shape):
        """(input shapes, output shapes[, aux shapes]); default: all like the first input."""
        return in_shape, (in_shape[0],) * len(self.list_outputs()), ()

    def infer_type(self, in_type):
        """(input dtypes, output dtypes[, aux dtypes]); default: all the first input's."""
        return in_type, [in_type[0]] * len(self.list_outputs()), \
            [in_type[0]] * len(self.list_auxiliary_states())

    def infer_storage_type(self, in_stype):
        """Storage types (ember stores every array densely: 'default')."""
        return in_stype, ["default"] * len(self.list_outputs()), \
            ["default"] * len(self.list_auxiliary_states())

    def infer_storage_type_backward(self, ograd_stype, in_stype, out_stype, igrad_stype,
                                    aux_stype):
        """Storage types of the backward (all 'default' in ember)."""
        return ograd_stype, in_stype, out_stype, ["default"] * len(igrad_stype), aux_stype

    def list_outputs(self):
        """Names of the outputs."""
        return ["output"]

    def list_arguments(self):
        """Names of the inputs."""
        return ["data"]

    def list_auxiliary_states(self):
        """Names of the auxiliary states (inputs forward updates in place)."""
        return []

    def declare_backward_dependency(self, out_grad, in_data, out_data):
        """Which of the ids in ``out_grad``, ``in_data``, ``out_data`` backward reads."""
        deps = list(out_grad) if self.need_top_grad_ else []
        return deps + list(in_data) + list(out_data)

    def create_operator(self, ctx, in_shapes, in_dtypes):
        """The :class:`CustomOp` doing the work for these input shapes and dtype codes."""
        return CustomOp()


def register(reg_name):
    """Class decorator: register a :class:`CustomOpProp` subclass as ``op_type=reg_name``."""
    def do_register(prop_cls):
        if not (isinstance(prop_cls, type) and issubclass(prop_cls, CustomOpProp)):
            raise MXNetError(f"mx.operator.register({reg_name!r}) decorates a CustomOpProp "
                             f"subclass, not {prop_cls!r}")
        _run.REGISTRY[reg_name] = prop_cls
        _run._PROPS.clear()  # a name registered again means the new class from now on
        return prop_cls
    return do_register


register("custom_op")(CustomOpProp)


# ---- nd.Custom and sym.Custom ----------------------------------------------------------------
def _parse(args, kwargs, tensor_type):
    """(op_type, {input name: tensor}, positional tensors, attrs, UserOp) of a Custom call."""
    op_type = kwargs.pop("op_type", None)
    if op_type is None:
        raise MXNetError("Custom: required argument 'op_type' is missing")
    named = {k: kwargs.pop(k) for k in list(kwargs) if isinstance(kwargs[k], tensor_type)}
    for a in args:
        if not isinstance(a, tensor_type):
            raise MXNetError(f"Custom(op_type={op_type!r}): positional arguments must be "
                             f"arrays, got {type(a).__name__}; give parameters by keyword")
    attrs = {"op_type": str(op_type), **{k: str(v) for k, v in kwargs.items()}}
    user = _run.resolve(attrs)
    names = user.args + user.aux
    if len(args) > len(names):
        raise MXNetError(f"Custom(op_type={op_type!r}) takes {len(names)} inputs "
                         f"({', '.join(names) or 'none'}), got {len(args)}")
    inputs = dict(zip(names, args))
    for k, v in named.items():
        if k not in names:
            raise MXNetError(f"Custom(op_type={op_type!r}) has no input {k!r}; its inputs "
                             f"are {', '.join(names) or 'none'}")
        if k in inputs:
            raise MXNetError(f"Custom(op_type={op_type!r}): input {k!r} given twice")
        inputs[k] = v
    return inputs, attrs, user


def _traced(args, kwargs) -> bool:
    return any(isinstance(a, Sym) for a in (*args, *kwargs.values()))


def nd_custom(*args, out=None, name=None, attr=None, **kwargs):
    """``mx.nd.Custom(*inputs, op_type=..., **kwargs)``: run a registered Python operator."""
    if _traced(args, kwargs):  # nd.Custom on traced values (@ember.compile, Gluon 2 forward)
        from ember.ndarray.register import _traced_call
        return _traced_call("Custom", args, {**kwargs, "name": name}, out)
    inputs, attrs, user = _parse(args, kwargs, NDArray)
    missing = [n for n in user.args + user.aux if n not in inputs]
    if missing:
        raise MXNetError(f"Custom(op_type={attrs['op_type']!r}): input "
                         f"{', '.join(map(repr, missing))} is missing")
    uid = attrs["_uid"] = new_uid()
    res = invoke(get_op("Custom"), [inputs[n] for n in user.args + user.aux], attrs, out=out)
    outs = res if isinstance(res, list | tuple) else [res]
    _run.release_when_gone(uid, outs if out is None else [])
    return res


def sym_custom(*args, name=None, attr=None, **kwargs):
    """``mx.sym.Custom(*inputs, op_type=..., name=..., **kwargs)``: a Python operator node;
    inputs left out become variables ``<name>_<input>``, as in MXNet."""
    kwargs.pop("out", None)
    inputs, attrs, user = _parse(args, kwargs, _sym.Symbol)
    node_name = _current_names().get(name, "custom")
    tensors = [inputs[n] if n in inputs else _sym.var(f"{node_name}_{n}")
               for n in user.args + user.aux]
    attrs["_uid"] = new_uid()
    res = _sym.apply(get_op("Custom"), tensors, attrs, name=node_name)
    if isinstance(res, list):
        res = _sym.Symbol._group([s._value for s in res])
    if attr:
        user_attrs(item_of(res._value_list()[0])).update({k: str(v) for k, v in attr.items()})
    return res


nd_custom.__name__ = sym_custom.__name__ = "Custom"
_nd.Custom = nd_custom
_sym.Custom = sym_custom


# ---- the deprecated Python operators (MXNet's PythonOp, NumpyOp, NDArrayOp) --------------------
class PythonOp:
    """Deprecated base of NumpyOp and NDArrayOp (use CustomOp): forward and backward in one
    object; ``get_symbol(*inputs, name=...)`` makes the node."""

    def __init__(self, need_top_grad=True):
        self.need_top_grad_ = need_top_grad
        warnings.warn("PythonOp has been deprecated. Please use CustomOp", stacklevel=2)

    def __call__(self, *args, **kwargs):
        return self.get_symbol(*args, **kwargs)

    def get_symbol(self, *args, **kwargs):
        raise NotImplementedError("Must override this")

    def forward(self, in_data, out_data):
        """Default: the identity."""
        out_data[0][:] = in_data[0]

    def backward(self, out_grad, in_data, out_data, in_grad):
        """Default: the gradient passes through."""
        in_grad[0][:] = out_grad[0]

    def infer_shape(self, in_shape):
        """(input shapes, output shapes); default: one output like the first input."""
        return in_shape, [in_shape[0]]

    def list_outputs(self):
        return ["output"]

    def list_arguments(self):
        return ["data"]

    def need_top_grad(self):
        return self.need_top_grad_

    def _symbol(self, as_numpy: bool, args, kwargs):
        op_type = f"_python_op_{id(self):x}"
        _LEGACY[op_type] = self  # the op lives as long as the process, as in MXNet
        pyop = self

        class _Worker(CustomOp):
            def forward(self, is_train, req, in_data, out_data, aux):
                ins = [a.asnumpy() for a in in_data] if as_numpy else in_data
                pyop.forward(ins, [o._data for o in out_data] if as_numpy else out_data)

            def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
                conv = (lambda xs: [x.asnumpy() for x in xs]) if as_numpy else list
                pyop.backward(conv(out_grad), conv(in_data), conv(out_data),
                              [g._data for g in in_grad] if as_numpy else in_grad)

        class _Prop(CustomOpProp):
            def __init__(self):
                super().__init__(pyop.need_top_grad())

            def list_arguments(self):
                return pyop.list_arguments()

            def list_outputs(self):
                return pyop.list_outputs()

            def infer_shape(self, in_shape):
                return pyop.infer_shape(in_shape)

            def create_operator(self, ctx, in_shapes, in_dtypes):
                return _Worker()

        register(op_type)(_Prop)
        return _sym.Custom(*args, op_type=op_type, **kwargs)


_LEGACY: dict[str, PythonOp] = {}


class NumpyOp(PythonOp):
    """Deprecated: a PythonOp whose forward/backward get NumPy arrays (write outputs in
    place, ``out_data[0][:] = ...``)."""

    def get_symbol(self, *args, **kwargs):
        return self._symbol(True, args, kwargs)


class NDArrayOp(PythonOp):
    """Deprecated: a PythonOp whose forward/backward get NDArrays."""

    def get_symbol(self, *args, **kwargs):
        return self._symbol(False, args, kwargs)

    def declare_backward_dependency(self, out_grad, in_data, out_data):
        deps = list(out_grad) if self.need_top_grad() else []
        return deps + list(in_data) + list(out_data)


# ---- operator listings ---------------------------------------------------------------------
OperatorArguments = collections.namedtuple("OperatorArguments", ["narg", "names", "types"])


def get_all_registered_operators() -> list[str]:
    """Every operator name ember answers to (MXNet names and aliases included)."""
    return sorted(all_names())


def _type_text(default) -> str:
    if default is REQUIRED:
        return "required"
    kind = {bool: "boolean", int: "int", float: "float", str: "string",
            tuple: "Shape(tuple)"}.get(type(default), "string")
    if default is None:
        kind = "string"
    return f"{kind}, optional, default={default!r}"


def get_operator_arguments(op_name: str) -> OperatorArguments:
    """(narg, names, types) of an operator's inputs and parameters, as MXNet lists them."""
    try:
        op = get_op(op_name)
    except MXNetError:
        raise MXNetError(f"get_operator_arguments: no operator named {op_name!r}") from None
    names, types = [], []
    for spec in op.inputs:
        names.append(spec.strip("*?"))
        types.append("NDArray-or-Symbol[]" if spec.startswith("*") else "NDArray-or-Symbol")
    for k, default in op.attrs.items():
        if not k.startswith("_"):
            names.append(k)
            types.append(_type_text(default))
    return OperatorArguments(len(names), names, types)
