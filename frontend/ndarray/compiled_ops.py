"""Eager calls of the heavy ops through the compiled CPU backend.

Imperative code (``nd.Convolution(...)``, a Gluon block that is not hybridized, and the
gradients ``autograd.backward`` computes for it) runs each op's NumPy kernel: for a
convolution im2col and a GEMM per sample, for BatchNorm's gradient float64 temporaries over
the whole batch. An imperative ResNet-18 training step at batch 16 took 4.4 s, half of it in
BatchNorm's gradient and forward, against ~0.9 s for the same step hybridized. Here the ops
in :data:`EAGER_OPS` run as a one-node graph compiled by the CPU backend instead (the same
steps a hybridized graph runs: Winograd, split im2col + GEMM, the pooling and BatchNorm
kernels), one program per (op, input shapes, dtype, attributes), kept in a bounded cache:
the way JAX runs an un-jitted primitive and PyTorch eager calls its fused kernels.

Taken only when it can pay and cannot change what the caller sees: every input a float32
or float64 NumPy array of one dtype, at least :data:`MIN_BYTES` of them (tiny ops keep the
NumPy kernel: a program costs milliseconds to build), no NumPy fallback in the program (it
would run the same kernel with more overhead), and the eager lock free (the programs share
one scratch arena; a second thread runs the NumPy kernel meanwhile). Outputs are fresh
arrays (``backends.cpu``: a run never hands out its arena), the inputs are read in place, and
the inputs an op updates (BatchNorm's moving statistics) are the program's parameters,
updated in place as by the NumPy kernel.
Results are the compiled backend's: equal to the NumPy kernels within the backend's stated
tolerances, NaN and Inf included (its conv steps fall back to im2col for non-finite data).
``EMBER_EAGER_COMPILE=0`` keeps every op on its NumPy kernel.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict

import numpy as np

EAGER_OPS = frozenset({"convolution", "deconvolution", "convolution_backward_weight",
                       "pooling", "pooling_backward", "batch_norm", "batch_norm_backward"})
MIN_BYTES = 1 << 18
MAX_PROGRAMS = 256
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

_lock = threading.Lock()
_programs: OrderedDict = OrderedDict()
_arena = None


def enabled() -> bool:
    """Whether eager heavy ops may run compiled (``EMBER_EAGER_COMPILE``, default on)."""
    return os.environ.get("EMBER_EAGER_COMPILE", "1").lower() not in ("0", "false", "no")


def run(op, datas: list, attrs: dict):
    """``op``'s result on ``datas`` from its compiled program, or None when the op's own
    kernel should run (not covered, too small, not compilable, the lock busy)."""
    if op.name not in EAGER_OPS or not datas or not enabled():
        return None
    dt = datas[0].dtype
    if dt not in _FLOATS or sum(d.nbytes for d in datas) < MIN_BYTES or \
            any(type(d) is not np.ndarray or d.dtype != dt for d in datas):
        return None
    try:
        key = (op.name, tuple(d.shape for d in datas), dt.str, repr(sorted(attrs.items())))
    except TypeError:   # attributes that do not sort (mixed key types): not cached
        return None
    if not _lock.acquire(blocking=False):
        return None
    try:
        fn = _programs.get(key, False)
        if fn is False:
            fn = _programs[key] = _build(op, datas, attrs)
            while len(_programs) > MAX_PROGRAMS:
                _programs.popitem(last=False)
        else:
            _programs.move_to_end(key)
        if fn is None:
            return None
        mutated = fn.mutated
        outs = fn([d for i, d in enumerate(datas) if i not in mutated],
                  [datas[i] for i in sorted(mutated)])
    finally:
        _lock.release()
    return outs[0] if len(outs) == 1 else list(outs)


def _build(op, datas: list, attrs: dict):
    """The CPU backend's program of one ``op`` node on inputs like ``datas``; None when it
    would run the op's NumPy kernel anyway, or the graph does not build."""
    global _arena
    from ember.backends import cpu
    from ember.ir.graph import GraphBuilder
    from ember.ir.types import TensorType
    from ember.passes import run_pipeline
    from ember.runtime.arena import SharedArena
    if _arena is None:
        _arena = SharedArena()
    try:
        mutated = frozenset(op.mutated(attrs))
        b = GraphBuilder(f"eager_{op.name}")
        vals = [(b.param if i in mutated else b.input)(TensorType(d.shape, d.dtype.name),
                                                        f"x{i}")
                for i, d in enumerate(datas)]
        outs = b.emit(op.name, vals, **attrs)
        graph = run_pipeline(b.build(list(outs)), ["infer_shapes"])
        fn = cpu.compile(graph, arena=_arena)
    except Exception:   # (the op's own kernel reports bad input in its own words)
        return None
    if any(k.startswith("fallback:") for k in fn.report):
        return None
    fn.mutated = mutated   # (inputs the op updates in place: the program's parameters)
    return fn


def clear() -> None:
    """Drop the compiled programs (tests; memory)."""
    with _lock:
        _programs.clear()
