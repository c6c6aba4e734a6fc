"""Shape rules of the optimizer update ops (``opset_optim``) and their optional ``hyper``
input: the per-step scalars (learning rate, step count) given as a run-time array."""
from __future__ import annotations

import numpy as np

from .shape_rules import fail, unify
from .types import TensorType


# ---- shape rules -------------------------------------------------------------------------
def same_shape(name, types):
    shape = None
    for t in types:
        if t.shape is None:
            continue
        shape = t.shape if shape is None else unify(shape, t.shape, name, types)
    return shape


def update_rule(name, n_shaped=None, f32=(), out_dtype=None):
    """Rule of an update op: the first ``n_shaped`` inputs share the weight's shape, inputs
    at ``f32`` are float32 (master copies, fp32 states), the output is the weight's type.
    The optional last input ``hyper`` (see :func:`fed`) is a float vector of
    ``len(hyper)`` values."""
    def infer(in_types, at):
        if at.get("hyper"):
            in_types = check_hyper(name, in_types, at)
            outs, refined = infer(in_types[:-1], {**at, "hyper": ()})
            return outs, [*refined, in_types[-1]]
        k = len(in_types) if n_shaped is None else n_shaped
        shape = same_shape(name, in_types[:k])
        refined = [t.with_shape(shape) if i < k and shape is not None else t
                   for i, t in enumerate(in_types)]
        for i in f32:
            refined[i] = TensorType(refined[i].shape, "float32")
        return [TensorType(shape, out_dtype or in_types[0].dtype)], refined
    return infer


def multi_rule(name, stride, f32=(), extra=0):
    """Rule of a multi-tensor op: one output per ``stride``-sized input group."""
    def infer(in_types, at):
        n = at["num_weights"]
        if len(in_types) != stride * n + extra:
            fail(name, f"expected {stride * n + extra} inputs for num_weights={n}, "
                       f"got {len(in_types)}", in_types)
        if extra == 0 and (len(at["lrs"]) != n or len(at["wds"]) != n):
            fail(name, f"lrs and wds must have num_weights={n} entries, got "
                       f"{len(at['lrs'])} and {len(at['wds'])}", in_types)
        outs, refined = [], list(in_types)
        for k in range(n):
            group = in_types[k * stride:(k + 1) * stride]
            shape = same_shape(name, group)
            for j in range(stride):
                t = group[j].with_shape(shape) if shape is not None else group[j]
                refined[k * stride + j] = TensorType(t.shape, "float32") if j in f32 else t
            outs.append(TensorType(shape, group[0].dtype))
        return outs, refined
    return infer


# ---- per-step scalars as a run-time input ------------------------------------------------
# An update op given ``hyper=("lr", ...)`` takes one more, last input: a float vector (float64
# for exact values) whose entries replace those attributes when the op runs. A compiled
# training step feeds the learning rate (after its scheduler) and the step count through it,
# so that a new value is new data, not a new graph; the attributes named there are then
# placeholders. Branches stay on the other attributes (clipping on, weight decay zero...).
def check_hyper(name, in_types, at):
    t = in_types[-1]
    n = len(at["hyper"])
    if t.shape is not None and (len(t.shape) != 1 or t.shape[0] not in (None, n)) \
            or t.dtype not in ("float32", "float64"):
        fail(name, f"the hyper input must be a float32/float64 vector of {n} values "
                   f"({', '.join(at['hyper'])})", in_types)
    for k in at["hyper"]:
        if k not in at or k == "hyper":
            fail(name, f"hyper names {k!r}, which is not a scalar attribute", in_types)
    return in_types


def fed(name, compute):
    """``compute`` with the attributes named in ``hyper`` read from the last input."""
    def run(ins, at):
        names = at["hyper"]
        if not names:
            return compute(ins, at)
        values = np.asarray(ins[-1])
        if values.ndim != 1 or values.size != len(names) or values.dtype.kind != "f":
            fail(name, f"the hyper input must be a float vector of {len(names)} values "
                       f"({', '.join(names)}), got {values.dtype.name}{list(values.shape)}",
                 [TensorType(np.shape(x), np.asarray(x).dtype.name) for x in ins])
        return compute(ins[:-1], {**at, **dict(zip(names, values.tolist()))})
    run._base = compute  # (the CPU backend's kernels fall back to it)
    return run
