"""Unary elementwise ops: math, activations, rounding, predicates, clip, cast, identity.

Each op is one row of :data:`UNARY`: name, NumPy kernel, scalar template, gradient rule and
doc. Kernels keep the input dtype (MXNet computes in the array's own type), never warn on
domain errors (log(0) is -inf as in MXNet) and follow MXNet where NumPy differs: ``round``
rounds halves away from zero, ``rint`` rounds halves down, ``sign(nan)`` is 0.

Templates are scalar expressions over ``a`` (and attribute names) that numba compiles:
only ``math.*``, builtins, conditional expressions and immediately-called lambdas (a lambda
names a subexpression without leaking a variable into the generated loop). ``math.floor``
and friends are guarded so that NaN, inf and values beyond 2**52 (already integral) never
reach an int conversion. Gradient rules ``grad(F, x, y, g)`` give the input gradient from
the input ``x``, output ``y`` and output gradient ``g`` with ops only; non-differentiable
ops give zeros, as MXNet's ``MakeZeroGradNodes``.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import EmberError
from .ops import REQUIRED, OpKind, defop
from .shape_rules import elemwise
from .types import TensorType, dtype_name

E = OpKind.ELEMWISE
_BIG = "not abs(a) < 4503599627370496.0"  # NaN, inf or |a| >= 2**52: already integral


# kernels that cannot hit a domain error, so they skip np.errstate (about 1 us a call)
_QUIET = {"negative", "abs", "sign", "relu", "floor", "ceil", "fix", "trunc", "isnan", "isinf",
          "isfinite", "logical_not", "identity", "stop_gradient"}


def _keep(fn, quiet=False):
    """Kernel of a unary function that keeps the input dtype and never warns."""
    if quiet:
        return lambda ins, attrs: np.asarray(fn(ins[0])).astype(ins[0].dtype, copy=False)

    def compute(ins, attrs):
        a = ins[0]
        with np.errstate(all="ignore"):
            return np.asarray(fn(a)).astype(a.dtype, copy=False)
    return compute


def _pyfunc(fn, on_domain_error):
    """A NumPy kernel from a ``math`` function, with C's results where Python raises."""
    def safe(x):
        try:
            return fn(x)
        except ValueError:
            return on_domain_error(x)
        except OverflowError:
            return math.inf
    uf = np.frompyfunc(safe, 1, 1)
    return lambda a: np.asarray(uf(a), dtype=np.float64)


def _horner(coeffs, var: str) -> str:
    """Horner form of a polynomial (highest power first), as np.polyval evaluates it."""
    expr = repr(coeffs[0])
    for c in coeffs[1:]:
        expr = f"({expr}) * {var} + {c!r}"
    return expr


# ---- rounding: MXNet's round (halves away from zero) and rint (halves down) -------------
def _round(a):
    if a.dtype.kind in "iub":
        return a.copy()
    t = np.floor(np.abs(a))
    return np.copysign(t + (np.abs(a) - t >= 0.5), a)


def _rint(a):
    if a.dtype.kind in "iub":
        return a.copy()
    f, c = np.floor(a), np.ceil(a)
    return np.where(a - f <= c - a, f, c)


def _sign(a):
    return (a > 0).astype(a.dtype) - (a < 0).astype(a.dtype)


# ---- digamma: shift by 10, asymptotic series, reflection below 1/2 ----------------------
def _psi_pos_np(x):
    z = x + 10.0
    w = 1.0 / (z * z)
    tail = w * (1 / 12 - w * (1 / 120 - w * (1 / 252 - w * (1 / 240 - w / 132))))
    return np.log(z) - 0.5 / z - tail - sum(1.0 / (x + float(k)) for k in range(10))


def _psi_pos_template(x: str) -> str:
    tail = "w * (1 / 12 - w * (1 / 120 - w * (1 / 252 - w * (1 / 240 - w / 132))))"
    terms = " + ".join(f"1.0 / (x + {float(k)!r})" for k in range(10))
    return (f"(lambda x, z: math.log(z) - 0.5 / z - (lambda w: {tail})(1.0 / (z * z))"
            f" - ({terms}))({x}, {x} + 10.0)")


def _digamma(a):
    x = a.astype(np.float64)
    refl = _psi_pos_np(1.0 - x) - math.pi / np.tan(math.pi * x)
    return np.where(x >= 0.5, _psi_pos_np(x), refl)


_DIGAMMA_T = (f"{_psi_pos_template('a')} if a >= 0.5 else "
              f"{_psi_pos_template('(1.0 - a)')} - math.pi / math.tan(math.pi * a)")


# ---- erfinv: Giles' (2010) single-precision guess, then one Halley step -----------------
_GILES_1 = [2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
            -0.00125372503, -0.00417768164, 0.246640727, 1.50140941]
_GILES_2 = [-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
            -0.0076224613, 0.00943887047, 1.00167406, 2.83297682]
_TWO_RSQRT_PI = 2.0 / math.sqrt(math.pi)
_erf = _pyfunc(math.erf, lambda x: math.nan)


def _erfinv(a):
    y = a.astype(np.float64)
    w = -np.log((1.0 - y) * (1.0 + y))
    x = y * np.where(w < 5.0, np.polyval(_GILES_1, w - 2.5),
                     np.polyval(_GILES_2, np.sqrt(w) - 3.0))
    f = _erf(x) - y
    x = x - f / (_TWO_RSQRT_PI * np.exp(-x * x) + x * f)
    return np.where(np.abs(y) == 1.0, np.copysign(np.inf, y), x)


_GUESS_T = (f"(lambda y, w: y * ((lambda t: {_horner(_GILES_1, 't')})(w - 2.5) if w < 5.0 "
            f"else (lambda t: {_horner(_GILES_2, 't')})(math.sqrt(w) - 3.0)))"
            "(a, -math.log((1.0 - a) * (1.0 + a)))")
_ERFINV_T = ("math.nan if not abs(a) <= 1.0 else (math.copysign(math.inf, a) "
             "if abs(a) == 1.0 else (lambda y, x: (lambda f: x - f / "
             f"({_TWO_RSQRT_PI!r} * math.exp(-x * x) + x * f))(math.erf(x) - y))"
             f"(a, {_GUESS_T}))")

# ---- cube root: numba has no math.cbrt, so a pow guess and one Newton step -----------------
_CBRT_T = ("a if a == 0.0 or not abs(a) < math.inf else (lambda v, t: t - (t * t * t - v) / "
           "(3.0 * t * t))(a, math.copysign(abs(a) ** (1.0 / 3.0), a))")


def _no_trigamma(F, x, y, g):
    raise EmberError("digamma: its gradient (trigamma) is not an op in ember, so gamma and "
                     "gammaln can be differentiated once but not twice")


_zero = lambda F, x, y, g: F.zeros_like(x)  # MXNet's MakeZeroGradNodes
_LN2, _LN10 = math.log(2.0), math.log(10.0)
_gamma_k = _pyfunc(math.gamma, lambda x: math.copysign(math.inf, x) if x == 0 else math.nan)
_lgamma_k = _pyfunc(math.lgamma, lambda x: math.inf)

# name, kernel, template, grad(F, x, y, g), doc
UNARY = [
    ("negative", np.negative, "-a", lambda F, x, y, g: -g, "-x"),
    ("abs", np.abs, "abs(a)", lambda F, x, y, g: g * F.sign(x), "|x|"),
    ("sign", _sign, "1.0 if a > 0 else (-1.0 if a < 0 else 0.0)", _zero,
     "-1, 0 or 1 by the sign of x (0 for NaN)"),
    ("exp", np.exp, "math.exp(a)", lambda F, x, y, g: g * y, "e**x"),
    ("expm1", np.expm1, "math.expm1(a)", lambda F, x, y, g: g * (y + 1.0), "e**x - 1"),
    ("log", np.log, "math.log(a)", lambda F, x, y, g: g / x, "natural logarithm"),
    ("log1p", np.log1p, "math.log1p(a)", lambda F, x, y, g: g / (x + 1.0), "log(1 + x)"),
    ("log2", np.log2, "math.log2(a)", lambda F, x, y, g: g / (x * _LN2), "base-2 logarithm"),
    ("log10", np.log10, "math.log10(a)", lambda F, x, y, g: g / (x * _LN10),
     "base-10 logarithm"),
    ("sqrt", np.sqrt, "math.sqrt(a)", lambda F, x, y, g: g * 0.5 / y, "square root"),
    ("rsqrt", lambda a: 1.0 / np.sqrt(a), "1.0 / math.sqrt(a)",
     lambda F, x, y, g: g * -0.5 * y / x, "1 / sqrt(x)"),
    ("cbrt", np.cbrt, _CBRT_T, lambda F, x, y, g: g / (3.0 * y * y), "cube root"),
    ("rcbrt", lambda a: 1.0 / np.cbrt(a), f"1.0 / ({_CBRT_T})",
     lambda F, x, y, g: g * y / (-3.0 * x), "1 / cbrt(x)"),
    ("square", np.square, "a * a", lambda F, x, y, g: g * 2.0 * x, "x * x"),
    ("reciprocal", lambda a: 1.0 / a, "1.0 / a", lambda F, x, y, g: -g * y * y, "1 / x"),
    ("sin", np.sin, "math.sin(a)", lambda F, x, y, g: g * F.cos(x), "sine"),
    ("cos", np.cos, "math.cos(a)", lambda F, x, y, g: -g * F.sin(x), "cosine"),
    ("tan", np.tan, "math.tan(a)", lambda F, x, y, g: g * (y * y + 1.0), "tangent"),
    ("arcsin", np.arcsin, "math.asin(a)", lambda F, x, y, g: g * F.rsqrt(1.0 - x * x),
     "inverse sine"),
    ("arccos", np.arccos, "math.acos(a)", lambda F, x, y, g: -g * F.rsqrt(1.0 - x * x),
     "inverse cosine"),
    ("arctan", np.arctan, "math.atan(a)", lambda F, x, y, g: g / (x * x + 1.0),
     "inverse tangent"),
    ("sinh", np.sinh, "math.sinh(a)", lambda F, x, y, g: g * F.cosh(x), "hyperbolic sine"),
    ("cosh", np.cosh, "math.cosh(a)", lambda F, x, y, g: g * F.sinh(x), "hyperbolic cosine"),
    ("tanh", np.tanh, "math.tanh(a)", lambda F, x, y, g: g * (1.0 - y * y),
     "hyperbolic tangent"),
    ("arcsinh", np.arcsinh, "math.asinh(a)", lambda F, x, y, g: g * F.rsqrt(x * x + 1.0),
     "inverse hyperbolic sine"),
    ("arccosh", np.arccosh, "math.acosh(a)", lambda F, x, y, g: g * F.rsqrt(x * x - 1.0),
     "inverse hyperbolic cosine"),
    ("arctanh", np.arctanh, "math.atanh(a)", lambda F, x, y, g: g / (1.0 - x * x),
     "inverse hyperbolic tangent"),
    ("degrees", np.degrees, "a * (180.0 / math.pi)",
     lambda F, x, y, g: g * (180.0 / math.pi), "radians to degrees"),
    ("radians", np.radians, "a * (math.pi / 180.0)",
     lambda F, x, y, g: g * (math.pi / 180.0), "degrees to radians"),
    ("sigmoid", lambda a: 1.0 / (1.0 + np.exp(-a)), "1.0 / (1.0 + math.exp(-a))",
     lambda F, x, y, g: g * y * (1.0 - y), "1 / (1 + e**-x)"),
    ("relu", lambda a: np.maximum(a, 0), "a if not a <= 0.0 else 0.0",
     # NaN in, NaN gradient (MXNet): min(y, 0) is NaN only there (y >= 0 otherwise)
     lambda F, x, y, g: g * (y > 0) + F.minimum_scalar(y, scalar=0.0),
     "max(x, 0), NaN kept"),
    ("softrelu", lambda a: np.where(a > 20.0, a, np.log1p(np.exp(a))),
     "a if a > 20.0 else math.log1p(math.exp(a))", lambda F, x, y, g: g * F.sigmoid(x),
     "softplus log(1 + e**x), x itself above 20 (MXNet's Activation softrelu)"),
    ("softsign", lambda a: a / (1.0 + np.abs(a)), "a / (1.0 + abs(a))",
     lambda F, x, y, g: g / F.square(F.abs(x) + 1.0), "x / (1 + |x|)"),
    ("erf", _erf, "math.erf(a)",
     lambda F, x, y, g: g * _TWO_RSQRT_PI * F.exp(-(x * x)), "Gauss error function"),
    ("erfinv", _erfinv, _ERFINV_T,
     lambda F, x, y, g: g * (math.sqrt(math.pi) / 2.0) * F.exp(y * y),
     "inverse error function"),
    ("gamma", _gamma_k, "math.gamma(a)", lambda F, x, y, g: g * y * F.digamma(x),
     "gamma function"),
    ("gammaln", _lgamma_k, "math.lgamma(a)", lambda F, x, y, g: g * F.digamma(x),
     "log of the absolute value of the gamma function"),
    ("digamma", _digamma, _DIGAMMA_T, _no_trigamma,
     "psi(x), the derivative of gammaln (the gradient of gamma and gammaln)"),
    ("floor", np.floor, f"a if {_BIG} else float(math.floor(a))", _zero, "round down"),
    ("ceil", np.ceil, f"a if {_BIG} else float(math.ceil(a))", _zero, "round up"),
    ("round", _round, f"a if {_BIG} else (lambda v, t: math.copysign(t + 1.0 if abs(v) - t "
     ">= 0.5 else t, v))(a, float(math.floor(abs(a))))", _zero,
     "round to nearest, halves away from zero"),
    ("rint", _rint, f"a if {_BIG} else (lambda v, f, c: f if v - f <= c - v else c)"
     "(a, float(math.floor(a)), float(math.ceil(a)))", _zero,
     "round to nearest, halves down (MXNet's rint)"),
    ("fix", np.trunc, f"a if {_BIG} else float(math.trunc(a))", _zero, "round toward zero"),
    ("trunc", np.trunc, f"a if {_BIG} else float(math.trunc(a))", _zero,
     "round toward zero"),
    ("isnan", np.isnan, "1.0 if a != a else 0.0", _zero, "1 where x is NaN, else 0"),
    ("isinf", np.isinf, "1.0 if abs(a) == math.inf else 0.0", _zero,
     "1 where x is +-inf, else 0"),
    ("isfinite", np.isfinite, "1.0 if abs(a) < math.inf else 0.0", _zero,
     "1 where x is neither NaN nor infinite, else 0"),
    ("logical_not", np.logical_not, "0.0 if a != 0 else 1.0", _zero, "1 where x == 0, else 0"),
    ("identity", np.copy, "a", lambda F, x, y, g: g, "a copy of x"),
    ("stop_gradient", np.copy, "a", _zero, "a copy of x through which no gradient flows"),
]

# the op's name in MXNet's symbol JSON where it is not the ember name (None: MXNet has none)
_MXNET = {"identity": "_copy", "stop_gradient": "BlockGrad", "softrelu": None, "isnan": None,
          "isinf": None, "isfinite": None, "digamma": None}


def _unary_grad(fn):
    return lambda F, ins, outs, g, attrs: [fn(F, ins[0], outs[0], g[0])]


for _name, _kernel, _template, _grad, _doc in UNARY:
    defop(_name, E, _keep(_kernel, _name in _QUIET), elemwise(_name), inplace=((0, 0),),
          template=_template, grad=_unary_grad(_grad), mxnet_name=_MXNET.get(_name, _name),
          doc=_doc)


# ---- clip and cast: unary ops with attributes -------------------------------------------
def _clip(ins, attrs):
    a = ins[0]
    lo, hi = attrs["a_min"], attrs["a_max"]
    if a.dtype.kind in "iu":  # MXNet casts the bounds to the array's type
        lo, hi = int(lo), int(hi)
    return np.where(a > hi, hi, np.where(a < lo, lo, a)).astype(a.dtype, copy=False)


defop("clip", E, _clip, elemwise("clip"), attrs={"a_min": REQUIRED, "a_max": REQUIRED},
      mxnet_name="clip", inplace=((0, 0),),
      template="a_max if a > a_max else (a_min if a < a_min else a)",
      grad=lambda F, i, o, g, at: [g[0] * ((i[0] >= at["a_min"]) * (i[0] <= at["a_max"]))],
      doc="Clip x to [a_min, a_max]; the gradient passes where a_min <= x <= a_max.")


def _cast_infer(in_types, attrs):
    return [TensorType(in_types[0].shape, dtype_name(attrs["dtype"]))], list(in_types)


defop("cast", E, lambda ins, at: ins[0].astype(dtype_name(at["dtype"])), _cast_infer,
      attrs={"dtype": REQUIRED}, mxnet_name="Cast", template="a",
      grad=lambda F, i, o, g, at: [F.cast(g[0], dtype=dtype_name(i[0].dtype))],
      doc="x converted to `dtype` (a name such as 'float16' or a NumPy type); the gradient "
          "is converted back to x's dtype.")
