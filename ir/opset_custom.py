"""``Custom``: operators written in Python by users (MXNet's ``mx.operator.CustomOp``).

One op stands for every user operator. Its attributes are ``op_type`` (the name the user's
``CustomOpProp`` was registered under), ``_uid`` (which node or eager call this is: the
user's ``CustomOp`` instance is kept under it, so that the backward runs on the instance
that ran the forward, as MXNet's stateful op does) and the user's own keyword arguments,
as strings (open attributes: MXNet passes them to the prop as text).

Everything else (input, output and auxiliary-state counts, the shape and dtype rule, the
forward and backward kernels) comes from the user's prop through :data:`RESOLVER`, which
``ember.operator`` installs when it is imported (``ir`` does not import the front end).
``RESOLVER(attrs)`` returns an object with

- ``n_args``, ``n_outputs``, ``n_aux``: how many arguments, outputs and auxiliary states;
- ``infer(in_types) -> (out_types, refined_in_types)``: the prop's ``infer_shape`` and
  ``infer_type`` (inputs are the arguments, then the auxiliary states);
- ``forward(ins, attrs) -> outputs``: ``create_operator(...).forward`` on NDArrays;
  auxiliary states (the last ``n_aux`` inputs) are updated in place;
- ``dep_ograds``, ``dep_outputs``: which output gradients and outputs the backward reads
  (the prop's ``declare_backward_dependency``; a loss that makes its own gradient reads no
  output gradient, so nothing upstream of it has to be computed);
- ``backward(ins, attrs) -> in_grads``: the same instance's ``backward``; ``ins`` are the
  output gradients it reads, the arguments, the outputs it reads and the auxiliary states.

Both ops are marked impure (``random``): user code may keep state or have effects, so
simplify never merges, folds or drops them, and fusion leaves them alone (backends run them
as opaque nodes with these kernels). The gradient of ``Custom`` is ``_backward_Custom``,
which has no gradient of its own (as in MXNet).
"""
from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable
from typing import Any

from .errors import EmberError, ShapeError, fmt_shapes
from .ops import REQUIRED, OpKind, defop

RESOLVER: Callable[[dict], Any] | None = None  # attrs -> the user's op (set by the front end)
_HIDDEN = ("is_train",)
_UID_PREFIX = secrets.token_hex(4)  # unique across processes (AOT packages carry uids)
_uids = itertools.count()


def new_uid() -> str:
    """A fresh ``_uid`` for one Custom node or eager call."""
    return f"{_UID_PREFIX}.{next(_uids)}"


def resolve(attrs: dict):
    """The user's operator behind a ``Custom`` node's attributes."""
    if RESOLVER is None:
        raise EmberError(f"Custom: no custom operator {attrs.get('op_type')!r} can run before "
                         "ember.operator is imported")
    return RESOLVER(attrs)


def _check_count(name: str, in_types, want: int, what: str, at: dict):
    if len(in_types) != want:
        raise ShapeError(f"{name}(op_type={at.get('op_type')!r}) takes {want} inputs "
                         f"({what}), got {len(in_types)}: "
                         f"{fmt_shapes([t.shape for t in in_types])}")


def _custom_infer(in_types, at):
    spec = resolve(at)
    _check_count("Custom", in_types, spec.n_args + spec.n_aux,
                 f"{spec.n_args} arguments, {spec.n_aux} auxiliary states", at)
    return spec.infer(list(in_types))


def _custom(ins, at):
    return resolve(at).forward(list(ins), at)


def _user_attrs(at: dict) -> dict:
    return {k: v for k, v in at.items() if k not in _HIDDEN}


def _custom_grad(F, ins, outs, ograds, at):
    spec = resolve(at)
    if spec.n_args == 0:
        return [None] * len(ins)
    args, aux = list(ins[:spec.n_args]), list(ins[spec.n_args:])
    og = [ograds[i] for i in spec.dep_ograds]
    od = [outs[i] for i in spec.dep_outputs]
    grads = F._backward_Custom(*og, *args, *od, *aux, **_user_attrs(at))
    grads = list(grads) if isinstance(grads, list | tuple) else [grads]
    return grads + [None] * len(aux)


def _backward_infer(in_types, at):
    spec = resolve(at)
    n_og, n_args = len(spec.dep_ograds), spec.n_args
    _check_count("_backward_Custom", in_types,
                 n_og + n_args + len(spec.dep_outputs) + spec.n_aux,
                 "output gradients, arguments, outputs, auxiliary states", at)
    return list(in_types[n_og:n_og + n_args]), list(in_types)


def _backward(ins, at):
    return resolve(at).backward(list(ins), at)


def _n_outputs(at):
    return resolve(at).n_outputs


def _aux_inputs(at):
    spec = resolve(at)
    return tuple(range(spec.n_args, spec.n_args + spec.n_aux))


_ATTRS = {"op_type": REQUIRED, "_uid": ""}
defop("Custom", OpKind.OPAQUE, _custom, _custom_infer, inputs=("*data",), attrs=dict(_ATTRS),
      open_attrs=True, grad=_custom_grad, num_outputs=_n_outputs, mutates=_aux_inputs,
      output_names=lambda at: resolve(at).outputs,
      mode=True, random=True, mxnet_name="Custom",
      doc="A user operator registered with mx.operator.register(op_type): its inputs are "
          "the prop's arguments, then its auxiliary states; other keyword arguments go to "
          "the prop as strings.")
defop("_backward_Custom", OpKind.OPAQUE, _backward, _backward_infer, inputs=("*data",),
      attrs=dict(_ATTRS), open_attrs=True, num_outputs=lambda at: resolve(at).n_args,
      random=True, doc="The gradient of Custom: the user CustomOp's backward.")
