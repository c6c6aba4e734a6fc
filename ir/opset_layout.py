"""Layout ops: tile, repeat, depth_to_space, space_to_depth, shape_array, size_array."""
from __future__ import annotations

import numpy as np

from .ops import REQUIRED, OpKind
from .opset_reduce import defop
from .opset_shape import _prod, _same
from .shape_rules import fail, normalize_axis
from .types import TensorType

INJ = OpKind.INJECTIVE


# ---- tile / repeat ---------------------------------------------------------------------------
def _tile_reps(ndim, reps):
    reps = (reps,) if isinstance(reps, int) else tuple(reps)
    n = max(ndim, len(reps))
    return (1,) * (n - len(reps)) + reps, n


def _tile_shape(s, at, ts):
    reps, n = _tile_reps(len(s), at["reps"])
    s = (1,) * (n - len(s)) + tuple(s)
    return tuple(None if d is None else d * r for d, r in zip(s, reps))


def _tile_grad(F, ins, outs, g, at):
    reps, n = _tile_reps(ins[0].ndim, at["reps"])
    codes = sum(((-4, r, -1) for r in reps), ())
    summed = F.sum(F.reshape(g[0], shape=codes), axis=tuple(range(0, 2 * n, 2)))
    return [F.reshape_like(summed, ins[0])]


defop("tile", INJ, lambda ins, at: np.tile(ins[0], at["reps"]), _same(_tile_shape),
      attrs={"reps": REQUIRED}, grad=_tile_grad, mxnet_name="tile",
      doc="Repeat the whole array `reps` times per axis (NumPy's tile).")


def _repeat_shape(s, at, ts):
    r, axis = at["repeats"], at["axis"]
    if axis is None:
        return (None if None in s else _prod(s) * r,)
    ax = normalize_axis(axis, len(s), "repeat", ts)
    return tuple(s[:ax]) + (None if s[ax] is None else s[ax] * r,) + tuple(s[ax + 1:])


def _repeat_grad(F, ins, outs, g, at):
    r, axis = at["repeats"], at["axis"]
    if axis is None:
        return [F.reshape_like(F.sum(F.reshape(g[0], shape=(-4, -1, r)), axis=1), ins[0])]
    ax = normalize_axis(axis, ins[0].ndim, "repeat")
    return [F.sum(F.reshape(g[0], shape=(0,) * ax + (-4, -1, r, -2)), axis=ax + 1)]


defop("repeat", INJ, lambda ins, at: np.repeat(ins[0], at["repeats"], axis=at["axis"]),
      _same(_repeat_shape), attrs={"repeats": REQUIRED, "axis": None}, grad=_repeat_grad,
      mxnet_name="repeat", doc="Repeat each element `repeats` times (flattened if no axis).")


# ---- depth_to_space / space_to_depth (NCHW) --------------------------------------------------
def _d2s_shape(s, at, ts):
    b = at["block_size"]
    if len(s) != 4:
        fail("depth_to_space", "input must be 4-D (NCHW)", ts)
    n, c, h, w = s
    if c is not None and c % (b * b):
        fail("depth_to_space", f"channels {c} do not divide by block_size^2", ts)
    return (n, None if c is None else c // (b * b), None if h is None else h * b,
            None if w is None else w * b)


def _d2s(ins, at):
    x, b = ins[0], at["block_size"]
    n, c, h, w = x.shape
    y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    return y.copy().reshape(_d2s_shape(x.shape, at, ()))


def _s2d_shape(s, at, ts):
    b = at["block_size"]
    if len(s) != 4:
        fail("space_to_depth", "input must be 4-D (NCHW)", ts)
    n, c, h, w = s
    for d in (h, w):
        if d is not None and d % b:
            fail("space_to_depth", f"height and width must divide by block_size {b}", ts)
    return (n, None if c is None else c * b * b, None if h is None else h // b,
            None if w is None else w // b)


def _s2d(ins, at):
    x, b = ins[0], at["block_size"]
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4)
    return y.copy().reshape(_s2d_shape(x.shape, at, ()))


defop("depth_to_space", INJ, _d2s, _same(_d2s_shape), attrs={"block_size": REQUIRED},
      grad=lambda F, i, o, g, at: [F.space_to_depth(g[0], block_size=at["block_size"])],
      mxnet_name="depth_to_space", doc="Move depth blocks into spatial blocks (NCHW).")
defop("space_to_depth", INJ, _s2d, _same(_s2d_shape), attrs={"block_size": REQUIRED},
      grad=lambda F, i, o, g, at: [F.depth_to_space(g[0], block_size=at["block_size"])],
      mxnet_name="space_to_depth", doc="Move spatial blocks into depth (NCHW).")


# ---- shape_array / size_array ----------------------------------------------------------------
defop("shape_array", OpKind.OPAQUE, lambda ins, at: np.array(ins[0].shape, dtype=np.int64),
      lambda ts, at: ([TensorType((ts[0].ndim,), "int64")], list(ts)),
      grad=lambda F, i, o, g, at: [None], mxnet_name="shape_array",
      doc="The shape of the input as a 1-D int64 array.")
defop("size_array", OpKind.OPAQUE, lambda ins, at: np.array([ins[0].size], dtype=np.int64),
      lambda ts, at: ([TensorType((1,), "int64")], list(ts)),
      grad=lambda F, i, o, g, at: [None], mxnet_name="size_array",
      doc="The number of elements of the input as a (1,) int64 array.")
