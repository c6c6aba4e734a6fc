"""Densities of the sampled distributions: MXNet's ``_random_pdf_*`` ops (``pdf_op.cc``).

``random_pdf_<dist>(sample, *params, is_log=False)``: the parameter arrays share one shape,
which is the leftmost part of the sample's shape; each sample element is scored under the
distribution its leading index selects. The output has the sample's shape, except for the
Dirichlet, whose samples are vectors on the last axis (``alpha`` ends with that axis too), so
its output drops that axis. Counts (Poisson, negative binomial) score without checking that
samples are integers, and the uniform density does not check the support, both as in MXNet.

Gradients are written with ops from d(log pdf): the density's own gradient is that times the
output. The gradient w.r.t. a discrete sample (and a uniform one) is zero, as in MXNet.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from .errors import AttrError
from .ops import OpKind, defop
from .shape_rules import fail, same_dtype, unify
from .types import TensorType

_FLOATS = ("float16", "float32", "float64")


# Lanczos' approximation (g = 7, 9 terms; Numerical Recipes 3rd ed. s.6.1), with the
# reflection formula below 1/2: about 1e-15 relative error in Gamma, vectorised in NumPy
_LANCZOS_G = 7.0
_LANCZOS = (0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
            -176.61502916214059, 12.507343278686905, -0.13857109526572012,
            9.9843695780195716e-6, 1.5056327351493116e-7)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@functools.cache
def _scipy_gammaln():
    """SciPy's ``gammaln``, or None without SciPy: imported on first use (SciPy's import
    was ~0.13 s of ember's)."""
    try:
        from scipy.special import gammaln
    except ImportError:  # SciPy is optional: the NumPy series below serves
        return None
    return gammaln


def _lgamma_from_half(x: np.ndarray) -> np.ndarray:
    z = x - 1.0
    acc = np.full_like(z, _LANCZOS[0])
    for i, c in enumerate(_LANCZOS[1:], start=1):
        acc += c / (z + i)
    t = z + _LANCZOS_G + 0.5
    return _HALF_LOG_2PI + (z + 0.5) * np.log(t) - t + np.log(acc)


def lgamma(a, scipy: bool = True) -> np.ndarray:
    """log|Gamma(a)| elementwise in float64 (+inf at the poles 0, -1, -2, ...): SciPy's
    ``gammaln`` when SciPy is installed (5-10x faster) and ``scipy``, else Lanczos' series
    in NumPy."""
    x = np.asarray(a, dtype=np.float64)
    gammaln = _scipy_gammaln() if scipy else None
    if gammaln is not None:
        return gammaln(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        big = _lgamma_from_half(np.where(x >= 0.5, x, 1.0))
        small = np.log(math.pi / np.abs(np.sin(math.pi * x))) \
            - _lgamma_from_half(np.where(x < 0.5, 1.0 - x, 1.0))
    out = np.where(x >= 0.5, big, small)
    return np.where(np.isposinf(x) | ((x <= 0) & (x == np.floor(x))), np.inf, out)


def lgamma_numpy(a) -> np.ndarray:
    """:func:`lgamma` without SciPy (the fallback; tests compare the two)."""
    return lgamma(a, scipy=False)


# ---- log densities (NumPy, parameters already broadcastable against the samples) ----------
def _nbinom_logpdf(x, k, p):
    return lgamma(x + k) - lgamma(x + 1) - lgamma(k) + k * np.log(p) + x * np.log1p(-p)


LOGPDF = {
    "uniform": lambda x, lo, hi: np.broadcast_to(-np.log(hi - lo), x.shape),
    "normal": lambda x, mu, s: -0.5 * ((x - mu) / s) ** 2 - np.log(math.sqrt(2 * math.pi) * s),
    "gamma": lambda x, a, b: a * np.log(b) + (a - 1) * np.log(x) - b * x - lgamma(a),
    "exponential": lambda x, lam: np.log(lam) - lam * x,
    "poisson": lambda x, lam: x * np.log(lam) - lgamma(x + 1) - lam,
    "negative_binomial": _nbinom_logpdf,
    "generalized_negative_binomial":
        lambda x, mu, a: _nbinom_logpdf(x, 1.0 / a, 1.0 / (mu * a + 1.0)),
}


# ---- d(log pdf) / d(sample, params), written with ops (F: ember.nd or ember.sym) ----------
def _d_nbinom(F, x, k, p):
    """(d/dk, d/dp) of the negative binomial log density."""
    return F.digamma(x + k) - F.digamma(k) + F.log(p), k / p - x / (1.0 - p)


def _d_gen_nbinom(F, x, mu, a):
    den = mu * a + 1.0
    dk, dp = _d_nbinom(F, x, 1.0 / a, 1.0 / den)
    return [None, -dp * a / (den * den), -dk / (a * a) - dp * mu / (den * den)]


DLOGPDF = {
    "uniform": lambda F, x, lo, hi: [None, F.reciprocal(hi - lo), F.reciprocal(lo - hi)],
    "normal": lambda F, x, mu, s: [(mu - x) / (s * s), (x - mu) / (s * s),
                                   ((x - mu) * (x - mu) - s * s) / (s * s * s)],
    "gamma": lambda F, x, a, b: [(a - 1.0) / x - b, F.log(b) + F.log(x) - F.digamma(a),
                                 a / b - x],
    "exponential": lambda F, x, lam: [-lam, F.reciprocal(lam) - x],
    "poisson": lambda F, x, lam: [None, x / lam - 1.0],
    "negative_binomial": lambda F, x, k, p: [None, *_d_nbinom(F, x, k, p)],
    "generalized_negative_binomial": _d_gen_nbinom,
}

PARAMS = {"uniform": ("low", "high"), "normal": ("mu", "sigma"), "gamma": ("alpha", "beta"),
          "exponential": ("lam",), "poisson": ("lam",), "negative_binomial": ("k", "p"),
          "generalized_negative_binomial": ("mu", "alpha"), "dirichlet": ("alpha",)}


def _check_types(op, in_types):
    same_dtype(op, in_types, names=("sample", *PARAMS[op[len("random_pdf_"):]]))
    if in_types[0].dtype not in _FLOATS:
        raise AttrError(f"{op}: samples and parameters must be float arrays, got "
                        f"{in_types[0].dtype}")
    pshape = in_types[1].shape
    for t in in_types[2:]:
        pshape = unify(pshape, t.shape, op, in_types)
    if len(pshape) > len(in_types[0].shape):
        fail(op, "the parameters' rank exceeds the sample's", in_types)
    return pshape


def _infer(dist):
    op = f"random_pdf_{dist}"

    def infer(in_types, at):
        pshape = _check_types(op, in_types)
        x = in_types[0]
        lead = unify(x.shape[:len(pshape)], pshape, op, in_types)
        xs = lead + x.shape[len(pshape):]
        return [TensorType(xs, x.dtype)], [x.with_shape(xs)] + \
            [t.with_shape(lead) for t in in_types[1:]]
    return infer


def _expand(p: np.ndarray, ndim: int) -> np.ndarray:
    return p.reshape(p.shape + (1,) * (ndim - p.ndim))


def _types(ins) -> list[TensorType]:
    return [TensorType(a.shape, a.dtype.name) for a in ins]


def _compute(dist):
    infer = _infer(dist)

    def compute(ins, at):
        infer(_types(ins), at)  # eager calls get the shape rule's checks too
        x = ins[0].astype(np.float64)
        ps = [_expand(p.astype(np.float64), x.ndim) for p in ins[1:]]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            lp = LOGPDF[dist](x, *ps)
            return (lp if at["is_log"] else np.exp(lp)).astype(ins[0].dtype)
    return compute


def _grad(dist):
    def grad(F, ins, outs, g, at):
        x, ps = ins[0], ins[1:]
        extra = x.ndim - ps[0].ndim
        bps = [F.reshape(p, shape=(0,) * p.ndim + (1,) * extra) if extra else p for p in ps]
        scale = g[0] if at["is_log"] else g[0] * outs[0]
        ds = DLOGPDF[dist](F, x, *bps)
        axes = tuple(range(ps[0].ndim, x.ndim))
        res = [F.zeros_like(x) if ds[0] is None else scale * ds[0]]
        for d in ds[1:]:
            res.append(F.sum(scale * d, axis=axes) if axes else scale * d)
        return res
    return grad


for _dist in LOGPDF:
    defop(f"random_pdf_{_dist}", OpKind.OPAQUE, _compute(_dist), _infer(_dist),
          inputs=("sample", *PARAMS[_dist]), attrs={"is_log": False}, grad=_grad(_dist),
          aliases=(f"_random_pdf_{_dist}",), mxnet_name=f"_random_pdf_{_dist}",
          doc=f"Density (``is_log``: log density) of ``sample`` under {_dist} distributions "
              f"with parameters {', '.join(PARAMS[_dist])}.")


# ---- Dirichlet: vector samples on the last axis ------------------------------------------
def _dirichlet_infer(in_types, at):
    op = "random_pdf_dirichlet"
    _check_types(op, in_types)
    x, a = in_types
    if not a.shape:
        fail(op, "alpha needs an axis of concentrations", in_types)
    k = unify(x.shape[-1:], a.shape[-1:], op, in_types)
    m = len(a.shape) - 1
    lead = unify(x.shape[:m], a.shape[:-1], op, in_types)
    xs = lead + x.shape[m:-1] + k
    out = xs[:-1] if len(xs) > 1 else (1,)
    return [TensorType(out, x.dtype)], [x.with_shape(xs), a.with_shape(lead + k)]


def _dirichlet_alpha(a: np.ndarray, ndim: int) -> np.ndarray:
    return a.reshape(a.shape[:-1] + (1,) * (ndim - a.ndim) + a.shape[-1:])


def _dirichlet(ins, at):
    _dirichlet_infer(_types(ins), at)
    x = ins[0].astype(np.float64)
    a = _dirichlet_alpha(ins[1].astype(np.float64), x.ndim)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        lp = ((a - 1.0) * np.log(x)).sum(-1) + lgamma(a.sum(-1)) - lgamma(a).sum(-1)
        out = lp if at["is_log"] else np.exp(lp)
    return np.asarray(out).reshape(x.shape[:-1] or (1,)).astype(ins[0].dtype)


def _dirichlet_grad(F, ins, outs, g, at):
    x, a = ins
    extra = x.ndim - a.ndim
    ba = F.reshape(a, shape=(0,) * (a.ndim - 1) + (1,) * extra + (-1,)) if extra else a
    scale = g[0] if at["is_log"] else g[0] * outs[0]
    if x.ndim > 1:
        scale = F.expand_dims(scale, axis=-1)
    dx = scale * (ba - 1.0) / x
    da = scale * (F.log(x) + F.digamma(F.sum(ba, axis=-1, keepdims=True)) - F.digamma(ba))
    axes = tuple(range(a.ndim - 1, a.ndim - 1 + extra))
    return [dx, F.sum(da, axis=axes) if axes else da]


defop("random_pdf_dirichlet", OpKind.OPAQUE, _dirichlet, _dirichlet_infer,
      inputs=("sample", "alpha"), attrs={"is_log": False}, grad=_dirichlet_grad,
      aliases=("_random_pdf_dirichlet",), mxnet_name="_random_pdf_dirichlet",
      doc="Density (``is_log``: log density) of vector samples (last axis) under Dirichlet "
          "distributions with concentrations ``alpha``; the output drops the last axis.")
