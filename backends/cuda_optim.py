"""Optimizer update kernels of the CUDA backend (``ir/opset_optim.py``'s SGD, momentum SGD,
NAG, RMSProp, Adam and the multi-tensor SGD forms).

One grid-stride kernel per (op, branch) updates the state inputs in place (momentum, mean,
var: the arrays the op ``mutates``) and writes the new weight into the op's output, with the
reference kernels' formulas and float order (MXNet 1.9.1 ``optimizer_op-inl.h``): scalars are
rounded to the weight's dtype as NumPy's weak Python scalars are, no fastmath. Branches on
attributes (clipping, weight decay) are decided when the source is generated; the scalar
values are kernel arguments, so a new learning rate compiles nothing. ``multi_*`` ops launch
the single-weight kernel once per weight. An op whose learning rate is its ``hyper`` input
(a compiled training step feeds it per run) reads it from that float64 device array in the
kernel's prologue and derives ``lr * rescale``, ``1 - lr * wd``... there in float64, as the
host does, so a CUDA-graph replay picks up each step's rate.
"""
from __future__ import annotations

import numpy as np

from .cuda_kernels import decorator, kernel, launch_dims

_HEAD = "import math\n\nimport numpy as np\nfrom numba import cuda\n\n\n"
_LOOP = "    for i in range(cuda.grid(1), w.shape[0], cuda.gridsize(1)):\n"


def _step(clip: bool) -> list[str]:
    """``s = lr * clip(rescale * g)``, or ``(lr * rescale) * g`` unclipped (as ``_step``)."""
    if clip:
        return ["        s = g[i] * rescale",
                "        s = c if s > c else (-c if s < -c else s)",
                "        s = s * lr"]
    return ["        s = g[i] * lr_rescale"]


def _source(op: str, clip: bool, wd: bool, clip_w: bool = False, sim: bool = False,
            fed: str | None = None) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(source, array args, scalar args) of the kernel of ``op`` for these branches; with
    ``fed`` (the weight's dtype) the learning rate comes from a last array ``hy``."""
    if op == "sgd":
        arrays, scalars = ("w", "g", "out"), ("rescale", "c", "lr", "lr_rescale", "decay")
        body = _step(clip) + [f"        out[i] = {'w[i] * decay' if wd else 'w[i]'} - s"]
    elif op == "sgd_mom":
        arrays = ("w", "g", "mom", "out")
        scalars = ("rescale", "c", "lr", "lr_rescale", "momentum", "lr_wd")
        body = _step(clip) + ["        m = mom[i] * momentum - s"]
        if wd:
            body.append("        m = m - w[i] * lr_wd")
        body += ["        mom[i] = m", "        out[i] = w[i] + m"]
    elif op == "adam":
        arrays = ("w", "g", "mean", "var", "out")
        scalars = ("rescale", "c", "lr", "wd", "beta1", "one_m_b1", "beta2", "one_m_b2", "eps")
        body = ["        gr = g[i] * rescale + w[i] * wd"]
        if clip:
            body.append("        gr = c if gr > c else (-c if gr < -c else gr)")
        body += ["        m = mean[i] * beta1 + gr * one_m_b1",
                 "        v = var[i] * beta2 + (gr * gr) * one_m_b2",
                 "        mean[i] = m",
                 "        var[i] = v",
                 "        out[i] = w[i] - (lr * m) / (math.sqrt(v) + eps)"]
    elif op == "nag":  # MXNet's NAG: mom*=m; out = w - mom + (1+m)(mom - step); mom -= step
        arrays = ("w", "g", "mom", "out")
        scalars = ("rescale", "c", "lr", "wd", "momentum", "mom_p1")
        body = ["        s = g[i] * rescale"]
        if clip:
            body.append("        s = c if s > c else (-c if s < -c else s)")
        body += ["        s = (s + w[i] * wd) * lr", "        m = mom[i] * momentum",
                 "        out[i] = (w[i] - m) + (m - s) * mom_p1", "        mom[i] = m - s"]
    elif op == "rmsprop":
        arrays = ("w", "g", "n", "out")
        scalars = ("rescale", "c", "lr", "wd", "gamma1", "one_m_g1", "eps", "cw")
        body = ["        gr = g[i] * rescale + w[i] * wd"]
        if clip:
            body.append("        gr = c if gr > c else (-c if gr < -c else gr)")
        body += ["        v = n[i] * gamma1 + (gr * gr) * one_m_g1", "        n[i] = v",
                 "        r = w[i] - lr * (gr / math.sqrt(v + eps))"]
        if clip_w:
            body.append("        r = cw if r > cw else (-cw if r < -cw else r)")
        body.append("        out[i] = r")
    else:
        raise KeyError(op)
    head = []
    if fed:  # the learning rate from the op's hyper input: derived scalars as on the host
        arrays += ("hy",)
        scalars, head = _fed_scalars(scalars, fed)
    src = _HEAD + decorator(sim) + f"def kernel({', '.join(arrays + scalars)}):\n"
    src += "".join(h + "\n" for h in head) + _LOOP
    src += "\n".join(body)
    return src + "\n", arrays, scalars


# scalars that depend on the learning rate, computed in float64 as the host does, from the
# float64 ``lr64`` read off the hyper input and float64 ``rescale64``/``wd64`` arguments
_FROM_LR = {"lr": "lr64", "lr_rescale": "lr64 * rescale64", "decay": "1.0 - lr64 * wd64",
            "lr_wd": "lr64 * wd64"}


def _fed_scalars(scalars: tuple, dtype: str) -> tuple[tuple[str, ...], list[str]]:
    """(kernel scalar arguments, prologue lines) when the learning rate is fed at run time."""
    kept = tuple(k for k in scalars if k not in _FROM_LR) + ("rescale64", "wd64")
    head = ["    lr64 = hy[0]"]
    head += [f"    {k} = np.{dtype}({_FROM_LR[k]})" for k in scalars if k in _FROM_LR]
    return kept, head


_SINGLE = {"sgd_update": ("sgd", 2), "sgd_mom_update": ("sgd_mom", 3),
           "adam_update": ("adam", 4), "nag_mom_update": ("nag", 3),
           "rmsprop_update": ("rmsprop", 3)}
_MULTI = {"multi_sgd_update": ("sgd", 2), "multi_sgd_mom_update": ("sgd_mom", 3)}
OPS = (*_SINGLE, *_MULTI)


def _scalars(op: str, at: dict, lr: float, wd: float, dtype) -> dict:
    f = np.dtype(dtype).type
    s = {"rescale": at["rescale_grad"], "c": max(at["clip_gradient"], 0.0), "lr": lr}
    if op == "sgd":
        s.update(lr_rescale=lr * at["rescale_grad"], decay=1.0 - lr * wd)
    elif op == "sgd_mom":
        s.update(lr_rescale=lr * at["rescale_grad"], momentum=at["momentum"], lr_wd=lr * wd)
    elif op == "nag":
        s.update(wd=wd, momentum=at["momentum"], mom_p1=at["momentum"] + 1.0)
    elif op == "rmsprop":
        s.update(wd=wd, gamma1=at["gamma1"], one_m_g1=1.0 - at["gamma1"], eps=at["epsilon"],
                 cw=max(at["clip_weights"], 0.0))
    else:
        s.update(wd=wd, beta1=at["beta1"], one_m_b1=1.0 - at["beta1"], beta2=at["beta2"],
                 one_m_b2=1.0 - at["beta2"], eps=at["epsilon"])
    return {k: f(v) for k, v in s.items()}


def update_calls(op_name: str, at: dict, dtype: str, sizes: list[int], stream, sim: bool):
    """``[(launch, n_arrays, scalars)]``, one per weight of an update op: ``launch(*arrays,
    *scalars)`` with the group's arrays (weight, grad, states..., out) as 1-D views; None when
    the op has no kernel here."""
    fed = at.get("hyper", ())
    if op_name in _SINGLE and fed in ((), ("lr",)):
        op, stride = _SINGLE[op_name]
        groups = [(at["lr"], at["wd"])]
    elif op_name in _MULTI and not fed:
        op, stride = _MULTI[op_name]
        groups = list(zip(at["lrs"], at["wds"]))
    else:
        return None
    calls = []
    for (lr, wd), n in zip(groups, sizes):
        sc = _scalars(op, at, lr, wd, dtype)
        sc.update(rescale64=np.float64(at["rescale_grad"]), wd64=np.float64(wd))
        decays = (sc.get("decay", 1.0) != 1.0 if op == "sgd" and not fed else wd != 0)
        src, arrays, names = _source(op, at["clip_gradient"] >= 0, bool(decays),
                                     at.get("clip_weights", -1.0) >= 0, sim,
                                     np.dtype(dtype).name if fed else None)
        blocks, threads = launch_dims(n, sim)
        launch = kernel(src)[blocks, threads, stream]
        calls.append((launch, stride, tuple(sc[k] for k in names)))
    return calls
