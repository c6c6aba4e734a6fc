"""How the registry op ``Custom`` runs a user's ``CustomOpProp`` and ``CustomOp``.

``ember.ir.opset_custom`` defines the op; this module is the resolver it calls
(``RESOLVER(attrs)``): the registered prop class is looked up by ``op_type`` and made with
the node's other attributes as keyword strings (once per distinct attribute set), and
:class:`UserOp` answers the op's questions from it: the counts, the shape and dtype rule
(``infer_shape`` / ``infer_type``, with MXNet's checks of what they return), which tensors
the backward reads (``declare_backward_dependency``), and the kernels, which call the
operator's ``forward`` and ``backward`` on NDArrays with autograd recording paused.

The operator instance (``prop.create_operator(ctx, shapes, dtypes)``) lives in a table
keyed by the node's ``_uid`` and the input shapes: a traced node keeps one instance for all
its runs (MXNet's executor makes one per node), an eager call gets its own, dropped when its
outputs and tape entry are gone. So ``backward`` always runs on the instance that ran
``forward``, and state a user keeps in ``self`` between them survives.
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict

import numpy as np

from ember import autograd as _ag
from ember.base import MXNetError
from ember.context import current_context
from ember.ir import opset_custom
from ember.ir.types import TensorType
from ember.ndarray.ndarray import NDArray

REGISTRY: dict[str, type] = {}   # op_type -> CustomOpProp subclass (mx.operator.register)
_PROPS: dict[tuple, UserOp] = {}  # (prop class, op_type, kwargs) -> its UserOp
_NOT_KWARGS = ("op_type", "_uid", "is_train")
# MXNet's dtype codes, which create_operator receives
_DTYPE_CODES = {"float32": 0, "float64": 1, "float16": 2, "uint8": 3, "int32": 4, "int8": 5,
                "int64": 6, "bool": 7, "int16": 8, "uint16": 9, "uint32": 10, "uint64": 11}


def resolve(attrs: dict) -> UserOp:
    """The :class:`UserOp` behind a Custom node's attributes (the ir op's RESOLVER)."""
    op_type = attrs.get("op_type")
    cls = REGISTRY.get(op_type)
    if cls is None:
        known = ", ".join(sorted(REGISTRY)) or "none"
        raise MXNetError(f"Custom: cannot find custom operator {op_type!r}; register its "
                         f"CustomOpProp with @mx.operator.register({op_type!r}) first "
                         f"(registered: {known})")
    kwargs = tuple(sorted((k, v) for k, v in attrs.items() if k not in _NOT_KWARGS))
    key = (cls, op_type, kwargs)
    user = _PROPS.get(key)
    if user is None:
        try:
            prop = cls(**dict(kwargs))
        except Exception as e:
            raise MXNetError(f"Custom op {op_type!r}: {cls.__name__}({_kw_text(kwargs)}) "
                             f"failed: {type(e).__name__}: {e}") from e
        user = _PROPS[key] = UserOp(op_type, prop)
    return user


def _kw_text(kwargs) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs)


def _readonly(a: np.ndarray, ctx) -> NDArray:
    """An NDArray view of ``a`` that refuses writes (MXNet's ``writable=False``)."""
    v = a.view()
    v.flags.writeable = False
    return NDArray(v, ctx)


class UserOp:
    """A registered prop made with one set of keyword arguments, as the op's rules see it."""

    def __init__(self, op_type: str, prop):
        self.op_type, self.prop = op_type, prop
        self.args = self._names("list_arguments")
        self.outputs = self._names("list_outputs")
        self.aux = self._names("list_auxiliary_states")
        self.n_args, self.n_outputs, self.n_aux = len(self.args), len(self.outputs), \
            len(self.aux)
        if not self.n_outputs:
            raise MXNetError(f"Custom op {op_type!r}: {type(prop).__name__}.list_outputs() "
                             "names no output")
        n_out, n_args = self.n_outputs, self.n_args
        og, ind = list(range(n_out)), list(range(n_out, n_out + n_args))
        od = list(range(n_out + n_args, 2 * n_out + n_args))
        deps = {int(d) for d in self._call(prop, "declare_backward_dependency", og, ind, od)}
        # what the backward node reads besides the arguments and auxiliary states (MXNet
        # keeps only the declared tensors; the others reach backward as zeros)
        self.dep_ograds = tuple(i for i in range(n_out) if og[i] in deps)
        self.dep_outputs = tuple(i for i in range(n_out) if od[i] in deps)
        self._out_types: dict[tuple, list[TensorType]] = {}

    def _call(self, obj, method: str, *args, **kwargs):
        """``obj.method(...)``; anything it raises becomes an MXNetError naming the op."""
        try:
            return getattr(obj, method)(*args, **kwargs)
        except Exception as e:
            raise MXNetError(f"Custom op {self.op_type!r}: {type(obj).__name__}.{method} "
                             f"failed: {type(e).__name__}: {e}") from e

    def _names(self, method: str) -> list[str]:
        return [str(n) for n in self._call(self.prop, method)]

    # ---- the shape and dtype rule --------------------------------------------------------
    def _unpack(self, ret, method: str, what: str) -> tuple[list, list, list]:
        """(inputs, outputs, aux) from what infer_shape/infer_type returned, checked as
        MXNet checks them."""
        ret = list(ret) if isinstance(ret, list | tuple) else [ret]
        if len(ret) not in (2, 3):
            raise MXNetError(f"Custom op {self.op_type!r}: {type(self.prop).__name__}."
                             f"{method} must return 2 or 3 lists, got {len(ret)}")
        ins, outs, aux = (list(r) for r in ret) if len(ret) == 3 else (*map(list, ret), [])
        for got, n, kind in ((outs, self.n_outputs, "output"), (ins, self.n_args, "input"),
                             (aux, self.n_aux, "aux state")):
            if len(got) != n:
                raise MXNetError(f"Custom op {self.op_type!r}: {type(self.prop).__name__}."
                                 f"{method}: expecting {n} entries in returned {kind} {what}, "
                                 f"got {len(got)}")
        return ins, outs, aux

    def infer(self, in_types: list[TensorType]):
        """(output types, refined input types) from the prop's infer_shape and infer_type.

        As in MXNet, an unknown shape reaches the prop as ``[]`` and an unknown dim as 0;
        unless every input shape was known, the ``[]`` and 0 it returns are unknown again.
        """
        args = in_types[:self.n_args]
        unknown = any(t.shape is None or None in t.shape for t in args)
        shapes = [[] if t.shape is None else [0 if d is None else int(d) for d in t.shape]
                  for t in args]
        ishape, oshape, ashape = self._unpack(
            self._call(self.prop, "infer_shape", shapes), "infer_shape", "shapes")
        dtypes = [np.dtype(t.dtype).type for t in args]
        itype, otype, atype = self._unpack(
            self._call(self.prop, "infer_type", dtypes), "infer_type", "types")

        def typed(shape, dtype) -> TensorType:
            try:
                dims = tuple(None if unknown and int(d) == 0 else int(d) for d in shape)
                return TensorType(None if unknown and not dims else dims, np.dtype(dtype).name)
            except (TypeError, ValueError) as e:
                raise MXNetError(f"Custom op {self.op_type!r}: infer_shape/infer_type gave "
                                 f"shape {shape!r} dtype {dtype!r}: {e}") from None
        outs = [typed(s, d) for s, d in zip(oshape, otype)]
        refined = [typed(s, d) for s, d in zip(ishape, itype)]
        refined += [typed(s, d) for s, d in zip(ashape, atype)]
        return outs, refined

    def out_types(self, ins: list[np.ndarray]) -> list[TensorType]:
        """The output types for these input arrays (the rule run once per shape)."""
        key = tuple((a.shape, a.dtype.str) for a in ins)
        types = self._out_types.get(key)
        if types is None:
            types = self.infer([TensorType(a.shape, a.dtype) for a in ins])[0]
            for t in types:
                if not t.known:
                    raise MXNetError(f"Custom op {self.op_type!r}: infer_shape left output "
                                     f"shape {t.shape} unknown for input shapes "
                                     f"{[a.shape for a in ins]}")
            self._out_types[key] = types
        return types

    # ---- the kernels ---------------------------------------------------------------------
    def operator(self, uid: str, ins: list[np.ndarray]):
        """The CustomOp instance of node or call ``uid`` for these inputs (made once)."""
        key = tuple((a.shape, a.dtype.str) for a in ins)
        per = INSTANCES.get(uid)
        op = per.get(key)
        if op is None:
            shapes = [list(a.shape) for a in ins]
            dtypes = [_DTYPE_CODES.get(a.dtype.name, -1) for a in ins]
            op = per[key] = self._call(self.prop, "create_operator", current_context(),
                                       shapes, dtypes)
        return op

    def forward(self, ins: list[np.ndarray], at: dict) -> list[np.ndarray]:
        """Run the operator's forward into fresh outputs; auxiliary states in place."""
        is_train = bool(at.get("is_train", False))
        ctx = current_context()
        outs = [np.zeros(t.shape, t.dtype) for t in self.out_types(ins)]
        op = self.operator(at.get("_uid", ""), ins)
        with _ag._scope(False, is_train):
            self._call(op, "forward", is_train=is_train, req=["write"] * self.n_outputs,
                       in_data=[_readonly(a, ctx) for a in ins[:self.n_args]],
                       out_data=[NDArray(o, ctx) for o in outs],
                       aux=[NDArray(a, ctx) for a in ins[self.n_args:]])
        return outs

    def backward(self, ins: list[np.ndarray], at: dict) -> list[np.ndarray]:
        """Run the forward instance's backward: one gradient per argument."""
        ctx = current_context()
        it = iter(ins)
        given_og = [next(it) for _ in self.dep_ograds]
        args = [next(it) for _ in range(self.n_args)]
        given_out = [next(it) for _ in self.dep_outputs]
        aux = list(it)
        types = self.out_types(args + aux)
        ograds = [np.zeros(t.shape, t.dtype) for t in types]
        outs = [np.zeros(t.shape, t.dtype) for t in types]
        for i, a in zip(self.dep_ograds, given_og):
            ograds[i] = a
        for i, a in zip(self.dep_outputs, given_out):
            outs[i] = a
        grads = [np.zeros(a.shape, a.dtype) for a in args]
        op = self.operator(at.get("_uid", ""), args + aux)
        with _ag._scope(False, True):
            self._call(op, "backward", req=["write"] * self.n_args,
                       out_grad=[_readonly(g, ctx) for g in ograds],
                       in_data=[_readonly(a, ctx) for a in args],
                       out_data=[_readonly(o, ctx) for o in outs],
                       in_grad=[NDArray(g, ctx) for g in grads],
                       aux=[NDArray(a, ctx) for a in aux])
        return grads


class _Instances:
    """``_uid`` -> {input signature: CustomOp}, least recently used first.

    Eager calls remove their entry when done (:func:`release_when_gone`); traced nodes
    keep theirs while the table holds fewer than ``limit`` (a node whose instance was
    evicted gets a new one on its next forward).
    """

    def __init__(self, limit: int = 4096):
        self.limit = limit
        self._table: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, uid: str) -> dict:
        with self._lock:
            per = self._table.get(uid)
            if per is None:
                per = self._table[uid] = {}
                while len(self._table) > self.limit:
                    self._table.popitem(last=False)
            else:
                self._table.move_to_end(uid)
            return per

    def drop(self, uid: str) -> None:
        with self._lock:
            self._table.pop(uid, None)

    def __len__(self) -> int:
        return len(self._table)


INSTANCES = _Instances()


def release_when_gone(uid: str, outs: list) -> None:
    """After an eager call: drop its instance now, or once its tape entry is gone."""
    node = outs[0]._node if outs else None
    if node is None or node[0] is _ag._CONSTANT or not node[0].out_data:
        INSTANCES.drop(uid)
        return
    weakref.finalize(node[0].out_data[0], INSTANCES.drop, uid)


opset_custom.RESOLVER = resolve
