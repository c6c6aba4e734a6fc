"""Random samplers (MXNet's ``src/operator/random``): ``_random_*`` with scalar parameters,
``_random_*_like`` in the shape and dtype of an input, ``_sample_*`` with one distribution per
element of parameter arrays, ``_sample_multinomial``, ``_sample_unique_zipfian``, ``_shuffle``.

Every sampler draws from :mod:`ember.ir.rng` when it runs (``random=True``), so it is never
constant-folded, merged by CSE or fused, and the same kernel runs eagerly and inside compiled
graphs: ``ember.random.seed`` reproduces both. As in MXNet, samplers give their inputs zero
gradients, except through the log-likelihood output of ``_sample_multinomial`` (REINFORCE).
Sample counts (Poisson, negative binomial) come back as floats, like MXNet's.
"""
from __future__ import annotations

import math

import numpy as np

from . import rng
from .errors import AttrError
from .ops import REQUIRED, OpKind, defop
from .shape_rules import elemwise, same_dtype, unify
from .types import TensorType

O = OpKind.OPAQUE
_FLOATS = ("float16", "float32", "float64")


def _tup(shape) -> tuple:
    if shape is None:
        return ()
    return (int(shape),) if isinstance(shape, int | np.integer) else tuple(int(d) for d in shape)


def _dtype(op: str, dtype, allowed=_FLOATS, default="float32") -> str:
    """MXNet's dtype enum of a sampler: None (or 'None') means ``default``."""
    name = default if dtype in (None, "None") else np.dtype(dtype).name
    if name not in allowed:
        raise AttrError(f"{op}: dtype must be one of {', '.join(allowed)}, got {name!r}")
    return name


def _need(ok, op: str, msg: str) -> None:
    if not np.all(ok):
        raise AttrError(f"{op}: {msg}")


# ---- distributions: parameter names, defaults, sample-op input names, draw(g, *params, size),
# check(*params) -> (mask of invalid parameters, message); NaN parameters pass (NaN samples)
def _nbinom(g, k, p, size):
    """Failures before the k-th success (success probability p): a Gamma-Poisson mixture."""
    with np.errstate(divide="ignore"):
        return g.poisson(g.gamma(k, (1.0 - p) / p, size))


def _gen_nbinom(g, mu, alpha, size):
    """Mean mu, dispersion alpha: Poisson(Gamma(1/alpha, alpha*mu)); Poisson(mu) at alpha 0."""
    a = np.where(alpha > 0, alpha, 1.0)
    lam = g.gamma(1.0 / a, mu * a, size)
    return g.poisson(np.where(alpha > 0, lam, np.broadcast_to(mu, lam.shape)))


DISTS = {
    "uniform": (("low", "high"), (0.0, 1.0), ("low", "high"),
                lambda g, lo, hi, size: g.uniform(lo, hi, size), None),
    "normal": (("loc", "scale"), (0.0, 1.0), ("mu", "sigma"),
               lambda g, mu, s, size: g.normal(mu, s, size),
               lambda mu, s: (s < 0, "scale (sigma) must be >= 0")),
    "gamma": (("alpha", "beta"), (1.0, 1.0), ("alpha", "beta"),
              lambda g, a, b, size: g.gamma(a, b, size),
              lambda a, b: ((a <= 0) | (b <= 0), "alpha and beta must be > 0")),
    "exponential": (("lam",), (1.0,), ("lam",),
                    lambda g, lam, size: g.exponential(1.0 / lam, size),
                    lambda lam: (lam <= 0, "lam must be > 0")),
    "poisson": (("lam",), (1.0,), ("lam",), lambda g, lam, size: g.poisson(lam, size),
                lambda lam: (lam < 0, "lam must be >= 0")),
    "negative_binomial": (("k", "p"), (1, 1.0), ("k", "p"), _nbinom,
                          lambda k, p: ((k <= 0) | (p <= 0) | (p > 1),
                                        "k must be > 0 and p in (0, 1]")),
    "generalized_negative_binomial": (
        ("mu", "alpha"), (1.0, 1.0), ("mu", "alpha"), _gen_nbinom,
        lambda mu, a: ((mu < 0) | (a < 0), "mu and alpha must be >= 0")),
}


def _draw(op: str, dist: str, params, size: tuple) -> np.ndarray:
    *_, draw, check = DISTS[dist]
    params = [np.asarray(p, dtype=np.float64) for p in params]
    if check is not None:
        bad, msg = check(*params)
        if np.any(bad):
            got = ", ".join(str(p) for p in params) if all(p.ndim == 0 for p in params) \
                else "some array elements are not"
            raise AttrError(f"{op}: {msg} (got {got})")
    return np.asarray(draw(rng.generator(), *params, size))


def _zero_grads(F, ins, outs, g, at):
    """MXNet's MakeZeroGradNodes: the inputs of a sampler get zero gradients."""
    return [F.zeros_like(x) for x in ins]


def _scalar_op(dist: str, names, defaults):
    op = f"random_{dist}"

    def compute(ins, at):
        return _draw(op, dist, [at[n] for n in names], _tup(at["shape"])).astype(
            _dtype(op, at["dtype"]), copy=False)

    def infer(in_types, at):
        return [TensorType(_tup(at["shape"]), _dtype(op, at["dtype"]))], []
    defop(op, O, compute, infer, inputs=(), random=True,
          attrs={**dict(zip(names, defaults)), "shape": (1,), "dtype": "float32"},
          aliases=(f"_random_{dist}",) + (("uniform",) if dist == "uniform" else ())
          + (("normal",) if dist == "normal" else ()), mxnet_name=f"_random_{dist}",
          doc=f"Samples of the {dist} distribution with scalar parameters "
              f"{', '.join(names)}, in ``shape``.")


def _like_op(dist: str, names, defaults):
    op = f"random_{dist}_like"

    def out_dtype(t, at):
        return t.dtype if at["dtype"] in (None, "None") else _dtype(op, at["dtype"])

    def compute(ins, at):
        x = ins[0]
        return _draw(op, dist, [at[n] for n in names], x.shape).astype(
            out_dtype(x, at), copy=False)

    def infer(in_types, at):
        return [TensorType(in_types[0].shape, out_dtype(in_types[0], at))], list(in_types)
    defop(op, O, compute, infer, random=True,
          attrs={**dict(zip(names, defaults)), "dtype": None},
          grad=_zero_grads, aliases=(f"_random_{dist}_like",),
          mxnet_name=f"_random_{dist}_like",
          doc=f"Samples of the {dist} distribution in the shape (and, unless ``dtype`` is "
              "given, the dtype) of ``data``.")


def _sample_op(dist: str, inputs):
    op = f"sample_{dist}"

    def compute(ins, at):
        shape = _tup(at["shape"])
        params = [np.asarray(p, np.float64).reshape(p.shape + (1,) * len(shape)) for p in ins]
        return _draw(op, dist, params, ins[0].shape + shape).astype(
            _dtype(op, at["dtype"]), copy=False)

    def infer(in_types, at):
        same_dtype(op, in_types, names=inputs)
        shape = in_types[0].shape
        for t in in_types[1:]:
            shape = unify(shape, t.shape, op, in_types)
        if in_types[0].dtype not in _FLOATS:
            raise AttrError(f"{op}: parameters must be float16, float32 or float64 arrays, "
                            f"got {in_types[0].dtype}")
        out = TensorType(shape + _tup(at["shape"]), _dtype(op, at["dtype"]))
        return [out], [t.with_shape(shape) for t in in_types]
    defop(op, O, compute, infer, inputs=inputs, random=True,
          attrs={"shape": (), "dtype": "float32"}, grad=_zero_grads,
          aliases=(f"_sample_{dist}",), mxnet_name=f"_sample_{dist}",
          doc=f"For each element of the {'/'.join(inputs)} arrays, ``shape`` samples of the "
              f"{dist} distribution it parameterises (output shape: parameters' + shape).")


for _dist, (_names, _defaults, _inputs, *_) in DISTS.items():
    _scalar_op(_dist, _names, _defaults)
    _like_op(_dist, _names, _defaults)
    _sample_op(_dist, _inputs)


def _randint(ins, at):
    dt = _dtype("random_randint", at["dtype"], ("int32", "int64"), "int32")
    lo, hi = int(at["low"]), int(at["high"])
    _need(lo < hi, "random_randint", f"low ({lo}) must be less than high ({hi})")
    return rng.generator().integers(lo, hi, _tup(at["shape"]), dtype=np.int64).astype(dt)


defop("random_randint", O, _randint,
      lambda ts, at: ([TensorType(_tup(at["shape"]), _dtype(
          "random_randint", at["dtype"], ("int32", "int64"), "int32"))], []),
      inputs=(), attrs={"low": REQUIRED, "high": REQUIRED, "shape": (1,), "dtype": "int32"},
      random=True, aliases=("_random_randint",), mxnet_name="_random_randint",
      doc="Integers drawn uniformly from [low, high).")


# ---- multinomial ---------------------------------------------------------------------------
# the largest class index each output dtype holds exactly
_EXACT_MAX = {"uint8": 255, "int32": 2 ** 31 - 1, "float16": 2 ** 11, "float32": 2 ** 24,
              "float64": 2 ** 53}


def _multinomial_shape(p_shape: tuple, at) -> tuple:
    shape = _tup(at["shape"])
    if len(p_shape) == 1:
        return shape or (1,)
    return tuple(p_shape[:-1]) + shape


def _multinomial_infer(in_types, at):
    p = in_types[0]
    dt = _dtype("sample_multinomial", at["dtype"], tuple(_EXACT_MAX), "int32")
    if not p.shape:
        raise AttrError("sample_multinomial: data must have at least one axis (the classes)")
    k = p.shape[-1]
    if k is not None and k - 1 > _EXACT_MAX[dt]:
        raise AttrError(f"sample_multinomial: {k} classes do not fit dtype {dt} (its largest "
                        f"exact index is {_EXACT_MAX[dt]}); pass a wider dtype")
    if p.dtype not in _FLOATS:
        raise AttrError(f"sample_multinomial: data must hold float probabilities, got {p.dtype}")
    shape = _multinomial_shape(p.shape, at)
    outs = [TensorType(shape, dt)] + ([TensorType(shape, p.dtype)] if at["get_prob"] else [])
    return outs, list(in_types)


def _multinomial(ins, at):
    """Inverse-CDF sampling: the first class whose cumulative probability exceeds U[0, 1)."""
    p = ins[0]
    _multinomial_infer([TensorType(p.shape, p.dtype.name)], at)  # eager calls check too
    k = p.shape[-1]
    rows = p.reshape(-1, k).astype(np.float64)
    n, m = rows.shape[0], max(math.prod(_tup(at["shape"])), 1)
    u = rng.generator().random((n, m))
    cdf = np.cumsum(rows, axis=1)
    # one searchsorted over all rows: row i is shifted by i * (its largest total + 1)
    step = (np.nanmax(cdf[:, -1]) if n and k else 0.0) + 1.0
    off = np.arange(n, dtype=np.float64)[:, None] * step
    idx = np.searchsorted((cdf + off).ravel(), (u + off).ravel(), side="right").reshape(n, m)
    idx = np.clip(idx - np.arange(n)[:, None] * k, 0, k - 1)
    shape = _multinomial_shape(p.shape, at)
    out = idx.reshape(shape).astype(_dtype("sample_multinomial", at["dtype"],
                                           tuple(_EXACT_MAX), "int32"))
    if not at["get_prob"]:
        return out
    with np.errstate(divide="ignore"):
        logp = np.log(np.take_along_axis(rows, idx, axis=1))
    return [out, logp.reshape(shape).astype(p.dtype)]


def _multinomial_grad(F, ins, outs, g, at):
    if not at["get_prob"]:
        return _zero_grads(F, ins, outs, g, at)
    return [F.sample_multinomial_backward(g[1], ins[0], outs[0])]


defop("sample_multinomial", O, _multinomial, _multinomial_infer, random=True,
      attrs={"shape": (), "get_prob": False, "dtype": "int32"},
      num_outputs=lambda at: 2 if at["get_prob"] else 1, grad=_multinomial_grad,
      aliases=("_sample_multinomial",), mxnet_name="_sample_multinomial",
      doc="Class indices drawn from the distributions on the last axis of ``data`` "
          "(``shape`` draws each); with ``get_prob``, also their log-probabilities.")


def _multinomial_backward(ins, at):
    """d log p[y] / d p = 1 / p[y] at the drawn class y, summed over the draws."""
    og, p, y = ins
    k = p.shape[-1]
    rows = p.reshape(-1, k)
    n = rows.shape[0]
    y = y.reshape(n, -1).astype(np.int64)
    og = og.reshape(n, -1).astype(np.float64)
    grad = np.zeros(rows.shape, np.float64)
    r = np.broadcast_to(np.arange(n)[:, None], y.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.add.at(grad, (r, y), og / rows[r, y])
    return grad.reshape(p.shape).astype(p.dtype)


defop("sample_multinomial_backward", O, _multinomial_backward,
      lambda ts, at: ([ts[1]], list(ts)), inputs=("ograd", "data", "samples"),
      aliases=("_backward_sample_multinomial",),
      doc="Gradient of sample_multinomial's log-probabilities w.r.t. its probabilities.")


# ---- unique zipfian (log-uniform candidates without replacement) ---------------------------
def _unique_zipfian(ins, at):
    """Per row, draw floor(exp(U * log(range_max)) + 0.5) - 1 until ``shape[1]`` distinct
    classes came up; also return how many draws that took (MXNet's unique_sample_op.h)."""
    (batch, n), top = _tup(at["shape"]), int(at["range_max"])
    _need(n <= top, "sample_unique_zipfian",
          f"cannot draw {n} distinct classes out of range_max={top}")
    g, log_top = rng.generator(), math.log(top)
    out, tries = np.zeros((batch, n), np.int64), np.zeros(batch, np.int64)
    for b in range(batch if n else 0):
        draws, chunk = np.zeros(0, np.int64), max(2 * n, 64)
        while True:
            new = np.floor(np.exp(g.random(chunk) * log_top) + 0.5).astype(np.int64) - 1
            draws = np.concatenate([draws, new])
            _, first = np.unique(draws, return_index=True)
            if first.size >= n:
                keep = np.sort(first)[:n]
                out[b], tries[b] = draws[keep], keep[-1] + 1
                break
            chunk *= 2
    return [out, tries]


def _unique_zipfian_infer(in_types, at):
    shape = _tup(at["shape"])
    if len(shape) != 2:
        raise AttrError(f"sample_unique_zipfian: shape must be (batch, num_sampled), got {shape}")
    return [TensorType(shape, "int64"), TensorType(shape[:1], "int64")], []


defop("sample_unique_zipfian", O, _unique_zipfian, _unique_zipfian_infer, inputs=(),
      attrs={"range_max": REQUIRED, "shape": REQUIRED}, num_outputs=2, random=True,
      aliases=("_sample_unique_zipfian",), mxnet_name="_sample_unique_zipfian",
      doc="Distinct classes from an approximately log-uniform (Zipfian) distribution over "
          "[0, range_max), per row, and the number of draws each row took.")


def _shuffle(ins, at):
    out = ins[0].copy()
    rng.generator().shuffle(out, axis=0)
    return out


defop("shuffle", O, _shuffle, elemwise("shuffle"), random=True, aliases=("_shuffle",),
      mxnet_name="_shuffle", doc="A copy of the array with its first axis permuted.")
