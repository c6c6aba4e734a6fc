"""Training-mode Dropout on the CUDA backend, drawn on the device (no host round trip).

Each element's uniform number is a counter-based hash (Salmon et al. 2011, "Parallel random
numbers: as easy as 1, 2, 3": the stream is a pure function of (key, counter), so threads
need no state): SplitMix64's finaliser (Steele et al. 2014) of ``seed``, the node's step
count and the element's index, its top 24 bits as ``u`` in [0, 1); kept when ``u >= p``
as the reference's ``random(shape) >= p``. The seed and the step count live in a small
device array per node (the seed drawn from ember's random state when the program is
compiled), and a one-thread kernel after the mask advances the step count, so every run,
and every replay of a captured CUDA graph, draws a fresh mask. The masks are not the host
reference's draws (MXNet's GPU masks differ from its CPU ones too); their law is, and the
gradient reads the mask the forward wrote. Dropout over ``axes`` (a shared mask) keeps the
round trip.
"""
from __future__ import annotations

import numpy as np

from ember.ir import rng
from ember.ir.graph import Node

from . import cuda_device as cd
from .cuda_kernels import ConstPool, _module
from .cuda_steps import float_known

_MIX = ["        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)",
        "        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)",
        "        z = z ^ (z >> np.uint64(31))"]


def dropout_source(sim: bool) -> str:
    """``kernel(x, ctr, p, scale, out, mask)``: ``mask[i] = scale`` where ``u(i) >= p``
    else 0, ``out[i] = x[i] * mask[i]`` over 1-D views; ``ctr`` = (seed, step)."""
    lines = ["    key = np.uint64(ctr[0]) ^ (np.uint64(ctr[1]) * np.uint64(0x9E3779B97F4A7C15))",
             "    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):",
             "        z = key + np.uint64(i) * np.uint64(0xD1B54A32D192ED03)", *_MIX,
             "        u = np.float64(z >> np.uint64(40)) * (1.0 / 16777216.0)",
             "        m = scale if u >= p else 0.0",
             "        mask[i] = m",
             "        out[i] = x[i] * mask[i]"]
    return _module(lines, ConstPool(), ["x", "ctr", "p", "scale", "out", "mask"], sim)


def advance_source(sim: bool) -> str:
    """``kernel(ctr)``: the step count ``ctr[1]`` plus one (one thread)."""
    lines = ["    if cuda.grid(1) == 0:", "        ctr[1] += 1"]
    return _module(lines, ConstPool(), ["ctr"], sim)


class RandomSteps:
    """Device-drawn dropout (a mixin of ``cuda._Program``)."""

    def _dropout_train(self, node: Node) -> bool:
        at = node.attr_dict
        if node.op.name != "dropout" or at["axes"] or \
                not (at["mode"] == "always" or at.get("is_train", False)):
            return False
        x, (y, mask) = node.inputs[0], node.outputs
        if not float_known([x, y, mask]) or len({v.type.dtype for v in (x, y, mask)}) != 1:
            return False
        p = float(at["p"])
        seed = int(rng.generator().integers(0, 2 ** 62))
        ctr = self.b.constant(cd.to_device(np.array([seed, 0], np.int64), self.device_id),
                              "A")
        for v in (y, mask):
            self._buf(v)
        if x.type.size:
            scale = 1.0 / (1.0 - p) if p < 1 else 0.0
            self.b.emit(f"{self._launch(dropout_source(self.sim), x.type.size)}("
                        f"{self._flat(x)}, {ctr}, {p!r}, {scale!r}, {self._flat(y)}, "
                        f"{self._flat(mask)})")
            self.b.emit(f"{self._launch(advance_source(self.sim), 1)}({ctr})")
        self.report["dropout"] += 1
        return True
