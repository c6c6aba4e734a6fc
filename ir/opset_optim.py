"""Optimizer update ops (MXNet's ``sgd_update``, ``adam_update``, ``multi_sgd_update``...).

Formulas follow MXNet 1.9.1's ``src/operator/optimizer_op-inl.h`` (and
``contrib/adamw-inl.h``): the gradient is ``rescale_grad * grad``, clipped to
``[-clip_gradient, clip_gradient]`` only when ``clip_gradient >= 0``; where the weight decay
enters (into the gradient, the momentum, or decoupled) is each op's own. The kernels update
their state inputs (momentum, mean, var, the float32 master weight...) IN PLACE, as MXNet's
do (``mutates`` names them), and return the new weight as a fresh array, so that
``nd.sgd_update(w, g, lr=0.1, out=w)`` updates ``w`` in place. They have no gradient.
The ``multi_*`` ops update several weights in one call: inputs are the per-weight groups
``(weight, grad[, mom][, weight32])`` flattened, with ``lrs``/``wds`` tuples (MXNet's
multi-tensor kernels); the ``preloaded_*`` forms take ``lrs``/``wds`` as two last arrays.
The single-weight ops take an optional last input ``hyper`` whose values replace the
attributes named in ``hyper=(...)`` (how a compiled training step feeds each step's learning
rate and step count; ``optim_rules``).
"""
from __future__ import annotations

import numpy as np

from .ops import REQUIRED, OpKind, defop
from .optim_rules import fed, multi_rule, update_rule

O = OpKind.OPAQUE
_F32 = np.float32


# ---- shared pieces -----------------------------------------------------------------------
def _rg(g, at, key="clip_gradient"):
    """``rescale_grad * grad``, clipped to ``[-c, c]`` when ``c >= 0`` (MXNet's rule)."""
    r = g * at["rescale_grad"]
    c = at[key]
    if c >= 0:
        np.clip(r, -c, c, out=r)
    return r


def _clip_to(x, c):
    if c >= 0:
        np.clip(x, -c, c, out=x)
    return x


def _f32(x):
    return x.astype(_F32, copy=False)


_COMMON = {"wd": 0.0, "rescale_grad": 1.0, "clip_gradient": -1.0}


def _update(name, compute, inputs, attrs, mutates, n_shaped=None, f32=(), out_dtype=None,
            doc="", **kw):
    defop(name, O, fed(name, compute), update_rule(name, n_shaped, f32, out_dtype),
          inputs=(*inputs, "hyper?"), attrs={**attrs, "hyper": ()}, mutates=mutates,
          doc=doc + " (attributes named in hyper come from the last input)", **kw)


# ---- SGD family --------------------------------------------------------------------------
def _step(g, at):
    """``lr * clip(rescale_grad * grad)`` as one fresh array (the scaling fused when
    there is no clipping, MXNet's ``(lr * rescale_grad) * grad``)."""
    if at["clip_gradient"] >= 0:
        s = _rg(g, at)
        s *= at["lr"]
        return s
    return g * (at["lr"] * at["rescale_grad"])


def _sgd(ins, at):
    w, g = ins
    step = _step(g, at)
    decay = 1.0 - at["lr"] * at["wd"]
    return np.subtract(w * decay if decay != 1.0 else w, step, out=step)


def _mom_update(w, g, mom, at):
    """mom = momentum*mom - lr*wd*w - lr*clip(rescale_grad*grad), with one temporary."""
    step = _step(g, at)
    mom *= at["momentum"]
    mom -= step
    if at["wd"]:
        np.multiply(w, at["lr"] * at["wd"], out=step)
        mom -= step


def _sgd_mom(ins, at):
    w, g, mom = ins
    _mom_update(w, g, mom, at)
    return w + mom


def _mp_sgd(ins, at):
    w, g, w32 = ins
    step = _step(_f32(g), at)
    decay = 1.0 - at["lr"] * at["wd"]
    if decay != 1.0:
        w32 *= decay
    w32 -= step
    return w32.astype(w.dtype)


def _mp_sgd_mom(ins, at):
    w, g, mom, w32 = ins
    _mom_update(w32, _f32(g), mom, at)
    w32 += mom
    return w32.astype(w.dtype)


def _nag_step(w, g, mom, at):
    """MXNet's NAG: mom*=m; out = w - mom + (1+m)(mom - step); mom -= step."""
    step = _rg(g, at)
    step += w * at["wd"]
    step *= at["lr"]
    mom *= at["momentum"]
    out = w - mom
    out += (mom - step) * (at["momentum"] + 1.0)
    mom -= step
    return out


def _nag_mom(ins, at):
    w, g, mom = ins
    return _nag_step(w, g, mom, at)


def _mp_nag_mom(ins, at):
    w, g, mom, w32 = ins
    w32[...] = _nag_step(w32, _f32(g), mom, at)
    return w32.astype(w.dtype)


_SGD = {"lr": REQUIRED, **_COMMON, "lazy_update": True}
_MOM = {"lr": REQUIRED, "momentum": 0.0, **_COMMON, "lazy_update": True}
_NAG = {"lr": REQUIRED, "momentum": 0.0, **_COMMON}
_update("sgd_update", _sgd, ("weight", "grad"), _SGD, (),
        doc="weight = (1 - lr*wd)*weight - lr*clip(rescale_grad*grad)")
_update("sgd_mom_update", _sgd_mom, ("weight", "grad", "mom"), _MOM, (2,),
        doc="mom = momentum*mom - lr*wd*weight - lr*clip(rescale_grad*grad); weight += mom")
_update("mp_sgd_update", _mp_sgd, ("weight", "grad", "weight32"), _SGD, (2,), f32=(2,),
        doc="sgd_update on the float32 master copy weight32; returns it cast to weight's type")
_update("mp_sgd_mom_update", _mp_sgd_mom, ("weight", "grad", "mom", "weight32"), _MOM,
        (2, 3), f32=(2, 3), doc="sgd_mom_update on the float32 master copy weight32")
_update("nag_mom_update", _nag_mom, ("weight", "grad", "mom"), _NAG, (2,),
        doc="Nesterov momentum update (MXNet's nag_mom_update)")
_update("mp_nag_mom_update", _mp_nag_mom, ("weight", "grad", "mom", "weight32"), _NAG, (2, 3),
        f32=(2, 3), doc="nag_mom_update on the float32 master copy weight32")


# ---- multi-tensor SGD --------------------------------------------------------------------
def _multi(kernel, stride, preloaded=False):
    """Run ``kernel`` once per (weight, grad, ...) group with that weight's lr and wd."""
    def compute(ins, at):
        n = at["num_weights"]
        if preloaded:
            lrs, wds = ins[-2].tolist(), ins[-1].tolist()
        else:
            lrs, wds = at["lrs"], at["wds"]
        sub = dict(at)
        outs = []
        for k in range(n):
            sub["lr"], sub["wd"] = lrs[k], wds[k]
            outs.append(kernel(ins[k * stride:(k + 1) * stride], sub))
        return tuple(outs)
    return compute


def _strided(stride, offsets):
    return lambda at: tuple(k * stride + j for k in range(at["num_weights"]) for j in offsets)


_MULTI = {"lrs": REQUIRED, "wds": REQUIRED, "rescale_grad": 1.0, "clip_gradient": -1.0,
          "num_weights": 1}
_MULTI_MOM = {"lrs": REQUIRED, "wds": REQUIRED, "momentum": 0.0, "rescale_grad": 1.0,
              "clip_gradient": -1.0, "num_weights": 1}
_PRE = {"rescale_grad": 1.0, "clip_gradient": -1.0, "num_weights": 1}
_PRE_MOM = {"momentum": 0.0, **_PRE}
for _name, _kernel, _stride, _attrs, _mut, _f in (
        ("multi_sgd_update", _sgd, 2, _MULTI, (), ()),
        ("multi_sgd_mom_update", _sgd_mom, 3, _MULTI_MOM, (2,), ()),
        ("multi_mp_sgd_update", _mp_sgd, 3, _MULTI, (2,), (2,)),
        ("multi_mp_sgd_mom_update", _mp_sgd_mom, 4, _MULTI_MOM, (2, 3), (2, 3))):
    defop(_name, O, _multi(_kernel, _stride), multi_rule(_name, _stride, _f),
          inputs=("*data",), attrs=_attrs, num_outputs=lambda at: at["num_weights"],
          mutates=_strided(_stride, _mut),
          doc=f"{_name[6:]} over num_weights (weight, grad, ...) groups in one call, "
              "weight k with lrs[k] and wds[k]")
    _pre = "preloaded_" + _name
    defop(_pre, O, _multi(_kernel, _stride, preloaded=True),
          multi_rule(_pre, _stride, _f, extra=2), inputs=("*data",),
          attrs=_PRE_MOM if "mom" in _name else _PRE,
          num_outputs=lambda at: at["num_weights"], mutates=_strided(_stride, _mut),
          doc=f"{_name} with lrs and wds given as the two last (float32) arrays")


# ---- adaptive methods --------------------------------------------------------------------
def _adam(ins, at):
    w, g, mean, var = ins
    gr = _clip_to(g * at["rescale_grad"] + w * at["wd"], at["clip_gradient"])
    mean *= at["beta1"]
    mean += gr * (1.0 - at["beta1"])
    var *= at["beta2"]
    var += np.square(gr) * (1.0 - at["beta2"])
    return w - at["lr"] * mean / (np.sqrt(var) + at["epsilon"])


def _ftml(ins, at):
    w, g, d, v, z = ins
    b1, b2, t = at["beta1"], at["beta2"], at["t"]
    gr = _clip_to(g * at["rescale_grad"] + w * at["wd"], at["clip_grad"])
    v *= b2
    v += np.square(gr) * (1.0 - b2)
    d_t = (np.sqrt(v / (1.0 - b2 ** t)) + at["epsilon"]) * ((1.0 - b1 ** t) / at["lr"])
    z *= b1
    z += gr * (1.0 - b1)
    z -= (d_t - d * b1) * w
    d[...] = d_t
    return -z / d_t


def _rmsprop(ins, at):
    w, g, n = ins
    gr = _clip_to(g * at["rescale_grad"] + w * at["wd"], at["clip_gradient"])
    n *= at["gamma1"]
    n += np.square(gr) * (1.0 - at["gamma1"])
    return _clip_to(w - at["lr"] * (gr / np.sqrt(n + at["epsilon"])), at["clip_weights"])


def _rmspropalex(ins, at):
    w, g, n, gs, delta = ins
    g1 = at["gamma1"]
    gr = _clip_to(g * at["rescale_grad"] + w * at["wd"], at["clip_gradient"])
    n *= g1
    n += np.square(gr) * (1.0 - g1)
    gs *= g1
    gs += gr * (1.0 - g1)
    delta *= at["gamma2"]
    delta -= at["lr"] * gr / np.sqrt(n - np.square(gs) + at["epsilon"])
    return _clip_to(w + delta, at["clip_weights"])


def _ftrl(ins, at):
    w, g, z, n = ins
    lr = at["lr"]
    gr = _rg(g, at)
    z += gr - (np.sqrt(n + np.square(gr)) - np.sqrt(n)) * w / lr
    n += np.square(gr)
    out = (np.sign(z) * at["lamda1"] - z) / ((at["beta"] + np.sqrt(n)) / lr + at["wd"])
    return out * (np.abs(z) > at["lamda1"]).astype(w.dtype)


def _signsgd(ins, at):
    w, g = ins
    return w * (1.0 - at["lr"] * at["wd"]) - np.sign(g) * at["lr"]


def _signum(ins, at):
    w, g, mom = ins
    m1 = 1.0 - at["momentum"]
    mom *= at["momentum"]
    mom -= w * (m1 * at["wd"])
    mom -= _rg(g, at) * m1
    return w * (1.0 - at["lr"] * at["wd_lh"]) + np.sign(mom) * at["lr"]


_ADAM = {"lr": REQUIRED, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, **_COMMON,
         "lazy_update": True}
_update("adam_update", _adam, ("weight", "grad", "mean", "var"), _ADAM, (2, 3),
        doc="Adam: g = clip(rescale_grad*grad + wd*weight); mean, var moving averages; "
            "weight -= lr*mean/(sqrt(var)+epsilon)")
_update("ftml_update", _ftml, ("weight", "grad", "d", "v", "z"),
        {"lr": REQUIRED, "beta1": 0.6, "beta2": 0.999, "epsilon": 1e-8, "t": REQUIRED,
         "wd": 0.0, "rescale_grad": 1.0, "clip_grad": -1.0}, (2, 3, 4),
        doc="FTML (Follow the Moving Leader) update")
_RMS = {"lr": REQUIRED, "gamma1": 0.95, "epsilon": 1e-8, **_COMMON, "clip_weights": -1.0}
_update("rmsprop_update", _rmsprop, ("weight", "grad", "n"), _RMS, (2,),
        doc="RMSProp (Tieleman & Hinton)")
_update("rmspropalex_update", _rmspropalex, ("weight", "grad", "n", "g", "delta"),
        {**_RMS, "gamma2": 0.9}, (2, 3, 4), doc="Centered RMSProp (Graves 2013)")
_update("ftrl_update", _ftrl, ("weight", "grad", "z", "n"),
        {"lr": REQUIRED, "lamda1": 0.01, "beta": 1.0, **_COMMON}, (2, 3),
        doc="FTRL-proximal update")
_update("signsgd_update", _signsgd, ("weight", "grad"), {"lr": REQUIRED, **_COMMON}, (),
        doc="weight = (1 - lr*wd)*weight - lr*sign(grad)")
_update("signum_update", _signum, ("weight", "grad", "mom"),
        {"lr": REQUIRED, "momentum": 0.0, **_COMMON, "wd_lh": 0.0}, (2,),
        doc="Signum: sign of the momentum, with decoupled decay wd_lh")


# ---- LAMB --------------------------------------------------------------------------------
def _lamb1(w, g, mean, var, at):
    b1, b2, t = at["beta1"], at["beta2"], at["t"]
    gr = _rg(g, at)
    mean *= b1
    mean += gr * (1.0 - b1)
    var *= b2
    var += np.square(gr) * (1.0 - b2)
    m, v = (mean / (1.0 - b1 ** t), var / (1.0 - b2 ** t)) if at["bias_correction"] \
        else (mean, var)
    return m / (np.sqrt(v) + at["epsilon"]) + w * at["wd"]


def _lamb_ratio(r1, r2, at):
    r1 = float(np.asarray(r1).reshape(-1)[0])
    r2 = float(np.asarray(r2).reshape(-1)[0])
    if at["lower_bound"] >= 0:
        r1 = max(r1, at["lower_bound"])
    if at["upper_bound"] >= 0:
        r1 = min(r1, at["upper_bound"])
    return at["lr"] if r1 == 0.0 or r2 == 0.0 else at["lr"] * r1 / r2


def _lamb_phase2(ins, at):
    w, g, r1, r2 = ins
    return w - g * _lamb_ratio(r1, r2, at)


def _mp_lamb_phase2(ins, at):
    w, g, r1, r2, w32 = ins
    w32 -= g * _lamb_ratio(r1, r2, at)
    return w32.astype(w.dtype)


_LAMB1 = {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-6, "t": REQUIRED,
          "bias_correction": True, "wd": REQUIRED, "rescale_grad": 1.0, "clip_gradient": -1.0}
_LAMB2 = {"lr": REQUIRED, "lower_bound": -1.0, "upper_bound": -1.0}
_update("lamb_update_phase1", lambda ins, at: _lamb1(*ins, at),
        ("weight", "grad", "mean", "var"), _LAMB1, (2, 3),
        doc="LAMB phase 1: updates mean and var, returns the direction g")
_update("lamb_update_phase2", _lamb_phase2, ("weight", "g", "r1", "r2"), _LAMB2, (),
        n_shaped=2, doc="LAMB phase 2: weight - lr * (r1/r2) * g (trust ratio of the norms)")
_update("mp_lamb_update_phase1",
        lambda ins, at: _lamb1(ins[4], _f32(ins[1]), ins[2], ins[3], at),
        ("weight", "grad", "mean", "var", "weight32"), _LAMB1, (2, 3), f32=(2, 3, 4),
        out_dtype="float32", doc="lamb_update_phase1 on the float32 master copy")
_update("mp_lamb_update_phase2", _mp_lamb_phase2, ("weight", "g", "r1", "r2", "weight32"),
        _LAMB2, (4,), n_shaped=2, f32=(1, 4),
        doc="lamb_update_phase2 on the float32 master copy weight32 (updated in place)")


# ---- AdamW (decoupled weight decay, MXNet's contrib op) ----------------------------------
def _adamw_step(w, g, mean, var, scale, at):
    gr = _clip_to(g * scale, at["clip_gradient"])
    mean *= at["beta1"]
    mean += gr * (1.0 - at["beta1"])
    var *= at["beta2"]
    var += np.square(gr) * (1.0 - at["beta2"])
    return w - at["eta"] * (at["lr"] * mean / (np.sqrt(var) + at["epsilon"]) + w * at["wd"])


def _scale_of(arr):
    s = float(np.asarray(arr).reshape(-1)[0])
    return s if np.isfinite(s) and s != 0.0 else None


def _adamw(ins, at):
    w, g, mean, var, rescale = ins
    s = _scale_of(rescale)
    return w.copy() if s is None else _adamw_step(w, g, mean, var, s, at)


def _mp_adamw(ins, at):
    w, g, mean, var, w32, rescale = ins
    s = _scale_of(rescale)
    if s is not None:
        w32[...] = _adamw_step(w32, _f32(g), mean, var, s, at)
    return w32.astype(w.dtype)


_ADAMW = {"lr": REQUIRED, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8, "wd": 0.0,
          "eta": REQUIRED, "clip_gradient": -1.0}
_update("adamw_update", _adamw, ("weight", "grad", "mean", "var", "rescale_grad"), _ADAMW,
        (2, 3), n_shaped=4, aliases=("_adamw_update", "_contrib_adamw_update"),
        mxnet_name="_adamw_update",
        doc="AdamW: weight -= eta*(lr*mean/(sqrt(var)+epsilon) + wd*weight); skipped when "
            "the rescale_grad array is 0, NaN or Inf")
_update("mp_adamw_update", _mp_adamw,
        ("weight", "grad", "mean", "var", "weight32", "rescale_grad"), _ADAMW, (2, 3, 4),
        n_shaped=5, f32=(2, 3, 4), aliases=("_mp_adamw_update", "_contrib_mp_adamw_update"),
        mxnet_name="_mp_adamw_update", doc="adamw_update on the float32 master copy weight32")
