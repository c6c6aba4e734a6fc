"""Binary elementwise ops: broadcasting forms, strict same-shape forms, scalar forms, add_n.

Every binary op is one row of :data:`BINARY`, from which three families are built:
- the broadcasting op (``add``; MXNet ``broadcast_add``), kind BROADCAST, whose gradients
  go through ``sum_like`` so each comes back in its input's shape;
- the scalar forms (``add_scalar``; MXNet ``_plus_scalar``) with attribute ``scalar`` and,
  for the non-commutative ones, the reflected form (``rsub_scalar`` is ``scalar - x``);
- for add/sub/mul/div, MXNet's strict ``elemwise_*`` ops (aliases ``_plus``, ``_sub``...),
  which insist on equal shapes.
MXNet's other underscored same-shape names (``_mod``, ``_power``, ``_maximum``, ``_equal``...)
are aliases of the broadcasting ops, which accept everything they accept.

dtype semantics are MXNet's: the result has the first array's dtype; comparisons give 0/1
in it; a scalar is first converted to the array's dtype (an int32 array divided by 2.5 is
divided by 2, truncating, as ``DType(scalar)`` in MXNet); mod takes the divisor's sign and
is 0 for a zero divisor. Templates are written with ``{a}``/``{b}`` placeholders so the
scalar forms reuse them with ``scalar`` in place of one operand. Derivative rules
``d(F, a, b, y, g)`` are written with operators so they also serve the scalar forms, where
one of ``a``/``b`` is a Python number.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .ops import OpKind, defop
from .shape_rules import broadcasting, elemwise, fail
from .types import TensorType

E, B = OpKind.ELEMWISE, OpKind.BROADCAST


def _div(a, b):
    if a.dtype.kind in "iub":  # C integer division truncates toward zero
        q = np.true_divide(a, b)
        return np.where(np.isfinite(q), np.trunc(q), 0)
    return np.true_divide(a, b)


def _mod(a, b):
    return np.where(b == 0, 0, np.mod(a, b))


def _power(a, b):
    if a.dtype.kind in "iub":  # MXNet computes pow in floating point and casts back
        return np.power(a.astype(np.float64), b)
    out = np.power(a, b)
    if np.size(b) == 1 and b == 0.5:  # NumPy takes sqrt for ** 0.5: NaN at -inf, where C's
        out[np.isneginf(a)] = np.inf  # pow (MXNet's, the compiled kernels') gives inf
    return out


def _ln(F, v):
    if isinstance(v, numbers.Number):  # NumPy's log, not Python's ValueError, at v <= 0
        return math.log(v) if v > 0 else (-math.inf if v == 0 else math.nan)
    return F.log(v)


_ones = (lambda F, a, b, y, g: g)
_zero_a = (lambda F, a, b, y, g: F.zeros_like(a))
_zero_b = (lambda F, a, b, y, g: F.zeros_like(b))
_CMP = "1.0 if {a} %s {b} else 0.0"

# name, kernel, template, d/da, d/db, has a reflected scalar form, doc
BINARY = [
    ("add", np.add, "{a} + {b}", _ones, _ones, False, "a + b"),
    ("sub", np.subtract, "{a} - {b}", _ones, lambda F, a, b, y, g: -g, True, "a - b"),
    ("mul", np.multiply, "{a} * {b}", lambda F, a, b, y, g: g * b,
     lambda F, a, b, y, g: g * a, False, "a * b"),
    ("div", _div, "{a} / {b}", lambda F, a, b, y, g: g / b,
     lambda F, a, b, y, g: -g * a / (b * b), True, "a / b (integers truncate toward zero)"),
    ("mod", _mod, "({a}) % ({b}) if {b} != 0 else 0.0", _ones,
     lambda F, a, b, y, g: -g * F.floor(a / b), True,
     "a mod b with the sign of b (NumPy's), 0 where b == 0"),
    ("power", _power, "math.pow({a}, {b})", lambda F, a, b, y, g: g * b * a ** (b - 1.0),
     lambda F, a, b, y, g: g * y * _ln(F, a), True, "a ** b"),
    ("maximum", np.maximum, "{a} if {a} > {b} or {a} != {a} else {b}",
     lambda F, a, b, y, g: g * (a >= b), lambda F, a, b, y, g: g * (a < b), False,
     "the larger of a and b (NaN wins)"),
    ("minimum", np.minimum, "{a} if {a} < {b} or {a} != {a} else {b}",
     lambda F, a, b, y, g: g * (a <= b), lambda F, a, b, y, g: g * (a > b), False,
     "the smaller of a and b (NaN wins)"),
    ("hypot", np.hypot, "math.hypot({a}, {b})", lambda F, a, b, y, g: g * a / y,
     lambda F, a, b, y, g: g * b / y, False, "sqrt(a**2 + b**2)"),
    ("equal", np.equal, _CMP % "==", _zero_a, _zero_b, False, "1 where a == b, else 0"),
    ("not_equal", np.not_equal, _CMP % "!=", _zero_a, _zero_b, False,
     "1 where a != b, else 0"),
    ("greater", np.greater, _CMP % ">", _zero_a, _zero_b, False, "1 where a > b, else 0"),
    ("greater_equal", np.greater_equal, _CMP % ">=", _zero_a, _zero_b, False,
     "1 where a >= b, else 0"),
    ("lesser", np.less, _CMP % "<", _zero_a, _zero_b, False, "1 where a < b, else 0"),
    ("lesser_equal", np.less_equal, _CMP % "<=", _zero_a, _zero_b, False,
     "1 where a <= b, else 0"),
    ("logical_and", np.logical_and, "1.0 if {a} != 0 and {b} != 0 else 0.0", _zero_a,
     _zero_b, False, "1 where both are nonzero, else 0"),
    ("logical_or", np.logical_or, "1.0 if {a} != 0 or {b} != 0 else 0.0", _zero_a, _zero_b,
     False, "1 where either is nonzero, else 0"),
    ("logical_xor", np.logical_xor, "1.0 if ({a} != 0) != ({b} != 0) else 0.0", _zero_a,
     _zero_b, False, "1 where exactly one is nonzero, else 0"),
]

# MXNet's strict same-shape ops and the underscored names that MXNet gives them
STRICT = {"add": ("_add", "_plus", "_Plus"), "sub": ("_sub", "_minus", "_Minus"),
          "mul": ("_mul", "_Mul"), "div": ("_div", "_Div")}
_MX_WORD = {"add": "plus", "sub": "minus"}  # MXNet's word in _plus_scalar, _PlusScalar
_MX_EXTRA = {"add": ("broadcast_plus",), "sub": ("broadcast_minus",)}


def _camel(word: str) -> str:
    return "".join(w.capitalize() for w in word.split("_"))


# kernels that cannot hit a domain error, so they skip np.errstate (about 1 us a call)
_QUIET = {"add", "sub", "mul", "maximum", "minimum", "equal", "not_equal", "greater",
          "greater_equal", "lesser", "lesser_equal", "logical_and", "logical_or",
          "logical_xor"}


def _kernel(name, fn):
    """Kernel of a binary op: the result keeps the first input's dtype, nothing warns."""
    if name in _QUIET:
        return lambda ins, attrs: np.asarray(fn(ins[0], ins[1])).astype(ins[0].dtype,
                                                                        copy=False)

    def compute(ins, attrs):
        a, b = ins
        with np.errstate(all="ignore"):
            return np.asarray(fn(a, b)).astype(a.dtype, copy=False)
    return compute


def _strict_kernel(name, fn):
    """Kernel that first insists on equal shapes, with the op's shape-rule error."""
    rule, inner = elemwise(name), _kernel(name[len("elemwise_"):], fn)

    def compute(ins, attrs):
        if ins[0].shape != ins[1].shape:
            rule([TensorType(x.shape, x.dtype) for x in ins], attrs)
        return inner(ins, attrs)
    return compute


def _in_dtype(scalar, dtype):
    """``DType(scalar)``: the scalar converted to the array's type (ints truncate)."""
    try:
        return dtype.type(scalar)
    except (ValueError, OverflowError):  # NaN or inf into an integer type
        with np.errstate(all="ignore"):
            return np.asarray(scalar).astype(dtype)


def _scalar_kernel(name, fn, reflected):
    """``fn(x, scalar)`` (or ``fn(scalar, x)``) with the scalar in x's dtype, as MXNet."""
    quiet = name in _QUIET

    def compute(ins, attrs):
        a = ins[0]
        s = _in_dtype(attrs["scalar"], a.dtype)
        lhs, rhs = (s, a) if reflected else (a, s)
        if quiet:
            return np.asarray(fn(lhs, rhs)).astype(a.dtype, copy=False)
        with np.errstate(all="ignore"):
            return np.asarray(fn(lhs, rhs)).astype(a.dtype, copy=False)
    return compute


def _broadcast_grad(da, db):
    def grad(F, ins, outs, g, attrs):
        a, b = ins
        return [F.sum_like(da(F, a, b, outs[0], g[0]), a),
                F.sum_like(db(F, a, b, outs[0], g[0]), b)]
    return grad


def _strict_grad(da, db):
    def grad(F, ins, outs, g, attrs):
        a, b = ins
        return [da(F, a, b, outs[0], g[0]), db(F, a, b, outs[0], g[0])]
    return grad


def _scalar_grad(d, reflected):
    if reflected:
        return lambda F, ins, outs, g, at: [d(F, at["scalar"], ins[0], outs[0], g[0])]
    return lambda F, ins, outs, g, at: [d(F, ins[0], at["scalar"], outs[0], g[0])]


for _name, _fn, _tpl, _da, _db, _refl, _doc in BINARY:
    _title = "_".join(w.capitalize() for w in _name.split("_"))  # MXNet's _Not_Equal
    _under = () if _name in STRICT else (f"_{_name}", f"_{_title}")
    defop(_name, B, _kernel(_name, _fn), broadcasting(_name), inputs=("lhs", "rhs"),
          aliases=_MX_EXTRA.get(_name, ()) + _under, mxnet_name=f"broadcast_{_name}",
          inplace=((0, 0), (1, 0)), template=_tpl.format(a="a", b="b"),
          grad=_broadcast_grad(_da, _db), doc=f"{_doc}, with NumPy broadcasting.")
    if _name in STRICT:
        defop(f"elemwise_{_name}", E, _strict_kernel(f"elemwise_{_name}", _fn),
              elemwise(f"elemwise_{_name}"), inputs=("lhs", "rhs"), aliases=STRICT[_name],
              mxnet_name=f"elemwise_{_name}", inplace=((0, 0), (1, 0)),
              template=_tpl.format(a="a", b="b"), grad=_strict_grad(_da, _db),
              doc=f"{_doc} for arrays of one shape (no broadcasting).")
    _word = _MX_WORD.get(_name, _name)
    for _r in (False, True) if _refl else (False,):
        _p, _P = ("r", "R") if _r else ("", "")
        _sname = f"{_p}{_name}_scalar"
        defop(_sname, E, _scalar_kernel(_name, _fn, _r), elemwise(_sname),
              attrs={"scalar": 1.0}, aliases=(f"_{_P}{_camel(_word)}Scalar",),
              mxnet_name=f"_{_p}{_word}_scalar", inplace=((0, 0),),
              template=_tpl.format(a="scalar", b="a") if _r else _tpl.format(a="a", b="scalar"),
              grad=_scalar_grad(_db if _r else _da, _r),
              doc=f"{_doc} with {'a = scalar, b = x' if _r else 'a = x, b = scalar'}.")


# ---- add_n: the sum of any number of same-shaped arrays ---------------------------------
def _add_n_infer(in_types, attrs):
    if not in_types:
        fail("add_n", "needs at least one input", in_types)
    return elemwise("add_n")(in_types, attrs)


def _add_n(ins, attrs):
    if not ins or any(x.shape != ins[0].shape for x in ins):
        _add_n_infer([TensorType(x.shape, x.dtype) for x in ins], attrs)
    out = ins[0].copy()
    with np.errstate(all="ignore"):
        for x in ins[1:]:
            np.add(out, x, out=out, casting="unsafe")
    return out


defop("add_n", E, _add_n, _add_n_infer, inputs=("*args",), aliases=("ElementWiseSum",),
      mxnet_name="add_n", inplace=((0, 0),),
      grad=lambda F, ins, outs, g, attrs: [g[0]] * len(ins),
      doc="The sum of any number of arrays of one shape (MXNet's add_n / ElementWiseSum).")
