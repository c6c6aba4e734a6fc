"""Steps of the CPU backend for pooling and BatchNorm: compiled kernels, not the NumPy ones.

A mixin of ``cpu._Program`` (as ``cpu_steps.OpSteps``): each rule takes a node and either
emits a step calling a numba kernel of ``cpu_pool_kernels`` or ``cpu_norm_kernels`` into the
planned buffers (True) or declines, leaving the node to the NumPy fallback. Covered:

- ``pooling`` / ``pooling_backward``: max, avg (count_include_pad both ways), sum; 1-D and 2-D
  channels-first data, windows, global pooling, all conventions (the geometry is
  ``ir/opset_pool._pool_geom``'s); float32/float64. 3-D and lp pooling stay NumPy's. The
  kernels run the op's NumPy code until they are compiled, off the first call's path
  (``cpu_tiered.deferred_call``).
- ``layer_norm`` forward (its gradient is reductions over one axis and elementwise ops,
  which ``cpu_steps`` and the fused kernels compile);
- ``batch_norm`` (and SyncBatchNorm) forward in training and inference mode, updating the
  moving statistics in place, with or without the mean/inverse-std outputs; and
  ``batch_norm_backward`` (its gradient op, ``ir/opset_norm_grad.py``). Any channel axis:
  the data is viewed as (N, C, S).
"""
from __future__ import annotations

import math

import numpy as np

from ember.ir.graph import Node
from ember.ir.opset_norm import _as_batch_norm
from ember.ir.opset_pool import _pool_geom, pooling_backward_numpy

from .cpu_norm_kernels import batch_norm_backward_source, batch_norm_source, layer_norm_source
from .cpu_pool_kernels import (
    global_pool_backward_source,
    global_pool_source,
    pool_backward_source,
    pool_source,
)
from .cpu_split import run_split, threads
from .cpu_steps import PARALLEL_MIN, float_known, split
from .cpu_tiered import deferred_call

_POOL_KINDS = ("max", "avg", "sum")
_BN_OPS = ("batch_norm", "_contrib_SyncBatchNorm")


def _deferred_pool(kernel, node: Node, example: tuple, src: str):
    """The pooling (or its gradient) ``kernel(*ins, [lh, lw, include,] out)`` over planes,
    NumPy's op (the reference: ``node.op.compute``; for the gradient
    ``pooling_backward_numpy``, which compiles nothing) until it is compiled
    (``cpu_tiered.deferred_call``): the same numbers either way (the kernels sum in the
    reference's order; global average pooling's vectorised float64 sum may round its
    float32 result differently in the last place). NumPy's loops let go of the interpreter,
    so the stand-in runs over the samples on the split pool's threads (ResNet-18's first
    max pooling's gradient at batch 16: 0.6 s on one thread)."""
    n_in = len(node.inputs)
    shapes = [v.type.shape for v in node.inputs]
    out_shape, attrs = node.outputs[0].type.shape, node.attr_dict
    compute = pooling_backward_numpy if node.op.name == "pooling_backward" else node.op.compute

    def part(args, lo, hi):   # samples [lo, hi): every input and the output lead with N
        ins = [a.reshape(s)[lo:hi] for a, s in zip(args[:n_in], shapes)]
        np.copyto(args[-1].reshape(out_shape)[lo:hi], compute(ins, attrs))

    def fallback(*args):
        run_split(part, (args,), out_shape[0], threads())
    return deferred_call(kernel, fallback, example, src)


def _ncs(shape: tuple, axis: int) -> tuple[int, int, int]:
    """(N, C, S): the dims before the channel axis, the channel axis, those after it."""
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


class NormPoolSteps:
    """Pooling and BatchNorm steps (a mixin: needs ``b``, ``report``, ``_arg``, ``_buf``)."""

    def _norm_pool_step(self, node: Node) -> bool:
        """Emit the step of a pooling or BatchNorm node; False if no rule fits."""
        name = node.op.name
        if name in ("pooling", "pooling_backward"):
            return self._pool(node)
        if name in _BN_OPS:
            return self._batch_norm(node)
        if name == "batch_norm_backward":
            return self._bn_backward(node)
        if name == "layer_norm":
            return self._layer_norm(node)
        return False

    def _call(self, fn, args: list[str], outs: list[tuple]) -> None:
        """Emit ``fn(*args, *outs)``; ``outs``: (value, the shape it is viewed as)."""
        for v, _ in outs:
            self._buf(v)
        views = [self.b.expr(v, shape) for v, shape in outs]
        self.b.emit(f"{self.b.constant(fn, 'k')}({', '.join([*args, *views])})")

    # ---- pooling ----------------------------------------------------------------------------
    def _pool(self, node: Node) -> bool:
        at = node.attr_dict
        backward = node.op.name == "pooling_backward"
        x = node.inputs[1] if backward else node.inputs[0]
        y = node.outputs[0]
        kind = at["pool_type"]
        if kind not in _POOL_KINDS or not float_known([*node.inputs, y]) or \
                len({v.type.dtype for v in (*node.inputs, y)}) != 1 or \
                x.type.ndim not in (3, 4) or x.type.size == 0 or y.type.size == 0:
            return False
        dt = x.type.dtype
        shape = x.type.shape
        sp = shape[2:]
        planes = shape[0] * shape[1]
        g_shape = node.inputs[0].type.shape if backward else y.type.shape
        parallel = planes >= 2 and x.type.size >= PARALLEL_MIN // 4
        npd = np.dtype(dt)
        if at["global_pool"]:
            ps = (planes, math.prod(sp))
            if backward:
                src = global_pool_backward_source(kind, dt, parallel)
                example = (np.zeros(0, npd), np.zeros((0, ps[1]), npd),
                           np.zeros((0, ps[1]), npd))
                args = [self._arg(node.inputs[0], (planes,)), self._arg(x, ps)]
                self._call(_deferred_pool(split(src), node, example, src), args, [(y, ps)])
            else:
                src = global_pool_source(kind, parallel)
                example = (np.zeros((0, ps[1]), npd), np.zeros(0, npd))
                self._call(_deferred_pool(split(src), node, example, src),
                           [self._arg(x, ps)], [(y, (planes,))])
            self.report[node.op.name] += 1
            return True
        k, s, pl, pr, out = _pool_geom(at, sp)
        if len(sp) == 1:   # 1-D windows as 2-D ones of height 1
            sp, k, s, pl, pr, out = (1, *sp), (1, *k), (1, *s), (0, *pl), (0, *pr), (1, *out)
        if tuple(g_shape[2:]) != (out if len(shape) == 4 else out[1:]):
            return False
        lim = [n + min(a, b) for n, a, b in zip(sp, pl, pr)]
        include = at["count_include_pad"] in (None, True)
        geom = (*k, *s, *pl)   # built into the kernel (its body unrolled over the window)
        args = [repr(int(d)) for d in lim] + [repr(bool(include))]
        x3, g3 = (planes, *sp), (planes, *out)
        if backward:
            src = pool_backward_source(kind, dt, parallel, geom)
            example = (np.zeros((0, *out), npd), np.zeros((0, *sp), npd), 1, 1, True,
                       np.zeros((0, *sp), npd))
            step = _deferred_pool(split(src), node, example, src)
            args = [self._arg(node.inputs[0], g3), self._arg(x, x3), *args]
            self._call(step, args, [(y, x3)])
            self.report["pooling_backward"] += 1
        else:
            src = pool_source(kind, dt, parallel, geom)
            example = (np.zeros((0, *sp), npd), 1, 1, True, np.zeros((0, *out), npd))
            step = _deferred_pool(split(src), node, example, src)
            self._call(step, [self._arg(x, x3), *args], [(y, g3)])
            self.report["pooling"] += 1
        return True

    # ---- BatchNorm --------------------------------------------------------------------------
    @staticmethod
    def _bn_fits(x, params) -> bool:
        """Whether a kernel takes data ``x`` and ``params`` (known shapes, one float dtype)."""
        return float_known([x, *params]) and len({v.type.dtype for v in params}) == 1 and \
            params[0].type.dtype == x.type.dtype and x.type.size > 0

    def _batch_norm(self, node: Node) -> bool:
        at = node.attr_dict
        if node.op.name != "batch_norm":
            at = {**_as_batch_norm(at), "is_train": at.get("is_train", False)}
        x, gamma, beta, mm, mv = node.inputs
        if not self._bn_fits(x, [gamma, beta, mm, mv, *node.outputs[1:]]) or \
                not float_known(node.outputs[:1]) or node.outputs[0].type.dtype != x.type.dtype:
            return False
        ncs = _ncs(x.type.shape, at["axis"] % x.type.ndim)
        c, pd = ncs[1], np.dtype(gamma.type.dtype)
        train = bool(at.get("is_train", False) and not at["use_global_stats"])
        ps = [self._arg(v) for v in (gamma, beta, mm, mv)]
        consts = [repr(float(at["eps"])), self.b.constant(pd.type(at["eps"]), "c"),
                  repr(float(at["momentum"])), self.b.constant(pd.type(at["momentum"]), "c"),
                  repr(bool(at["fix_gamma"])), repr(train)]
        outs = [(node.outputs[0], ncs)]
        if at["output_mean_var"]:
            outs += [(v, (c,)) for v in node.outputs[1:]]
        else:   # the kernel writes them anyway: scratch, made once
            consts += [self.b.constant(np.empty(c, pd), "S"), self.b.constant(np.empty(c, pd),
                                                                               "S")]
        src = batch_norm_source(c >= 2 and x.type.size >= PARALLEL_MIN // 4,
                                one_pass=np.dtype(x.type.dtype).itemsize < 8)
        args = [self._arg(x, ncs), *ps, *consts]
        if at["output_mean_var"]:
            self._call(split(src), args, outs)
        else:
            self._buf(outs[0][0])
            out = self.b.expr(outs[0][0], ncs)
            k = self.b.constant(split(src), "k")
            self.b.emit(f"{k}({', '.join(args[:-2] + [out] + args[-2:])})")
        self.report["batch_norm"] += 1
        return True

    def _bn_backward(self, node: Node) -> bool:
        at = node.attr_dict
        g, x, gamma, mm, mv = node.inputs
        dx, dgamma, dbeta = node.outputs
        if not self._bn_fits(x, [gamma, mm, mv, dgamma, dbeta]) or \
                not float_known([g, dx]) or g.type.dtype != x.type.dtype or \
                dx.type.dtype != x.type.dtype:
            return False
        ncs = _ncs(x.type.shape, at["axis"] % x.type.ndim)
        pd = np.dtype(gamma.type.dtype)
        args = [self._arg(g, ncs), self._arg(x, ncs), *(self._arg(v) for v in (gamma, mm, mv)),
                repr(float(at["eps"])), self.b.constant(pd.type(at["eps"]), "c"),
                repr(bool(at["fix_gamma"])), repr(bool(at["train"]))]
        src = batch_norm_backward_source(ncs[1] >= 2 and x.type.size >= PARALLEL_MIN // 4,
                                         one_pass=np.dtype(x.type.dtype).itemsize < 8)
        self._call(split(src), args, [(dx, ncs), (dgamma, None), (dbeta, None)])
        self.report["batch_norm_backward"] += 1
        return True

    def _layer_norm(self, node: Node) -> bool:
        at = node.attr_dict
        x, gamma, beta = node.inputs
        if not self._bn_fits(x, [gamma, beta, *node.outputs]):
            return False
        ax = at["axis"] % x.type.ndim
        ppp = _ncs(x.type.shape, ax)
        pq = (ppp[0], ppp[2])
        outs = [(node.outputs[0], ppp)]
        scratch = []
        if at["output_mean_var"]:
            outs += [(v, pq) for v in node.outputs[1:]]
        else:   # the kernel writes them anyway: scratch, made once
            scratch = [self.b.constant(np.empty(pq, x.type.dtype), "S") for _ in range(2)]
        src = layer_norm_source(ppp[0] >= 2 and x.type.size >= PARALLEL_MIN // 4)
        args = [self._arg(x, ppp), self._arg(gamma), self._arg(beta), repr(float(at["eps"]))]
        for v, _ in outs:
            self._buf(v)
        views = [self.b.expr(v, shape) for v, shape in outs] + scratch
        self.b.emit(f"{self.b.constant(split(src), 'k')}({', '.join([*args, *views])})")
        self.report["layer_norm"] += 1
        return True
