"""Convolution steps of the CPU backend: forward, data gradient, weight gradient (1-D and 2-D,
channels first).

A mixin of ``cpu._Program`` (as ``cpu_steps.OpSteps``). ``_conv`` takes a node, or a fused
group whose master is ``convolution``/``deconvolution`` with an elementwise epilogue, and
emits one step; it declines (False) what it does not cover, which keeps the op's NumPy
kernel: 3-D kernels, channels-last layouts, mixed or integer dtypes, negative padding, a
weight gradient with an epilogue, empty shapes. A 1-D convolution runs as the 2-D one of
height 1. All three directions are one convolution geometry: the *image* (N, C, H, W), the
*output* (N, F, OH, OW) and the weight (F, C/G, kh, kw); ``deconvolution(x, w)`` is the data
gradient of the convolution whose output is ``x`` (its own use as a transposed convolution
too).

Algorithms (Chellapilla et al. 2006 / Caffe's im2col + GEMM, with the batch folded into the
GEMM as in Chetlur et al. 2014's cuDNN "batched im2col"):
- forward: the windows of a chunk of ``nc`` samples are copied once (``IM2COL``, split)
  into columns (C*K, nc, M), ``nc`` chosen by ``Geo.chunk``; one BLAS GEMM per group,
  (F, C*K) @ (C*K, nc*M), NumPy's ``np.matmul(out=)`` (one BLAS thread pool); the (F, nc, M)
  result is transposed to NCHW by the epilogue pass, which also adds the bias and applies the
  fused elementwise chain. A chunk of one sample writes NCHW directly; a 1x1, stride-1,
  unpadded convolution of one sample needs no im2col at all.
- data gradient: (C*K, F) @ (F, nc*M) into the columns, then ``COL2IM`` (split over the
  (sample, channel) planes) into the output, then the epilogue in place.
- weight gradient: one GEMM per chunk and group over the chunk's nc*M columns,
  (F, nc*M) @ (nc*M, C*K), accumulated over the chunks (not one GEMM per sample and a sum);
  its chunks are as wide as ``CHUNK_BYTES`` allows.
- one group and ``COLS_SAMPLE_M`` output pixels or more: the forward and data gradient run
  whole samples on each thread instead, one GEMM per sample from (into) the thread's own
  columns straight into (from) the sample's planes, no transposing pass; a strided, unpadded
  1x1 (ResNet's downsampling) from each sample's subsampled image, its weight gradient one
  product per sample summed in sample order (``STRIDED_PW_M``, ``STRIDED_PW_GRAD_M``).
- one input channel per group (depthwise): direct numba kernels (``DW_*``).
- 3x3, stride 1 (forward, data and weight gradient), where it measured faster: Winograd
  F(4x4, 3x3) or F(2x2, 3x3) (``cpu_winograd``), the im2col step kept for calls with
  non-finite values and until the Winograd kernels are compiled (``cpu_tiered``).
Scratch (columns, transposed operands) is one buffer per compiled program (or the shared
arena of a graph's programs at several batch sizes), allocated at the largest size a step
asked for while planning; steps run one at a time (``cpu_conv_scratch``; steps that run whole
samples on each thread use each thread's own column buffer). The run-time steps are in
``cpu_conv_steps``, the numba sources in ``cpu_conv_kernels``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ember.ir.conv_kernels import _geom
from ember.ir.graph import Node
from ember.ir.opset_conv import _deconv_geom

from . import codegen, cpu_memo
from .cpu_conv_kernels import conv_epilogue_source
from .cpu_conv_pairs import dw_pw_step
from .cpu_conv_scratch import Scratch
from .cpu_conv_steps import POINTWISE_SAMPLE_M, PW_SAMPLES_MIN, dgrad_step, forward_step, wgrad_step
from .cpu_steps import PARALLEL_MIN, float_known, kernel
from .plan import epilogue_leaves, master_first

# a depthwise convolution and the 1x1 that alone reads it as one step (``_dw_pw``)
FUSE_DW_PW = True
CONV_OPS = ("convolution", "deconvolution", "convolution_backward_weight")
# Samples per chunk: the fewest whose GEMM has MIN_COLS columns, at most CHUNK_BYTES of
# columns. Fewer samples keep the columns that im2col just wrote in cache for the GEMM; more
# columns keep BLAS efficient where one sample has few output pixels. Measured on ResNet-18's
# layers at batch 16 (programs alternated in one process), against 32 MB chunks: layers 1-2
# 150/150/119 GFLOP/s (fwd/dgrad/wgrad of layer 1) instead of 122/112/106, layers 3-4 equal.
MIN_COLS = 2048
CHUNK_BYTES = 1 << 25


@dataclass(frozen=True)
class Geo:
    """One convolution's geometry: image (n, c, h, w), output (f, oh, ow), kernel, groups."""
    n: int
    c: int
    h: int
    w: int
    f: int
    oh: int
    ow: int
    k: tuple
    s: tuple
    d: tuple
    p: tuple
    g: int

    @property
    def ck(self) -> int:
        """Rows of the column matrix: C * kh * kw."""
        return self.c * self.k[0] * self.k[1]

    @property
    def m(self) -> int:
        return self.oh * self.ow

    @property
    def pointwise(self) -> bool:
        """1x1, stride 1, no padding: the image is its own column matrix."""
        return self.k == (1, 1) and self.s == (1, 1) and self.p == (0, 0)

    @property
    def depthwise(self) -> bool:
        return self.g > 1 and self.c == self.g

    def args(self) -> tuple:
        return (*self.k, *self.s, *self.d, *self.p)

    def chunk(self, itemsize: int, widest: bool = False) -> int:
        """Samples per chunk: enough for ``MIN_COLS`` GEMM columns, within ``CHUNK_BYTES``;
        ``widest``: as many as fit in ``CHUNK_BYTES`` (the weight gradient, whose GEMM
        reduces over the columns: fewer, longer GEMMs and fewer partial sums to add; measured
        on ResNet-18's 256-channel 14x14 layer at batch 16: two chunks 29-42 ms, one 23-25)."""
        cap = CHUNK_BYTES // max(1, self.ck * self.m * itemsize)
        want = cap if widest else -(-MIN_COLS // self.m)
        return max(1, min(self.n, want, cap))


def geometry(node: Node) -> Geo | None:
    """The geometry of a 1-D or 2-D channels-first conv-family node with known shapes, or
    None. A 1-D convolution is the 2-D one of height 1 (NCW viewed as NC1W)."""
    at = node.attr_dict
    nsp = len(at["kernel"])
    if nsp not in (1, 2) or at.get("layout") not in (None, "NCW", "NCHW"):
        return None
    name = node.op.name
    if name == "deconvolution":
        x, img = node.inputs[0].type.shape, node.outputs[0].type.shape
        k, s, d, p, _ = _deconv_geom(at, x[2:])
        if any(v is None for v in p):
            return None
    else:
        k, s, d, p = _geom(at, nsp)
        if name == "convolution":
            img, x = node.inputs[0].type.shape, node.outputs[0].type.shape
        else:
            x, img = node.inputs[0].type.shape, node.inputs[1].type.shape
    if len(img) != nsp + 2 or len(x) != nsp + 2:
        return None
    if nsp == 1:   # height 1
        img, x = img[:2] + (1,) + img[2:], x[:2] + (1,) + x[2:]
        k, s, d, p = (1, *k), (1, *s), (1, *d), (0, *p)
    geo = Geo(img[0], img[1], img[2], img[3], x[1], x[2], x[3], tuple(k), tuple(s),
              tuple(d), tuple(p), at["num_group"])
    if 0 in (geo.n, geo.c, geo.h, geo.w, geo.f, geo.oh, geo.ow) or geo.c % geo.g \
            or geo.f % geo.g or min(geo.p) < 0:
        return None
    return geo


@dataclass
class _Conv:
    """A forward convolution's planned step: its geometry, the step and its argument
    sources, the values it reads (x, w, bias, leaves) and writes, its epilogue's pieces;
    ``text``/``line``/``pos``: its line of the run function, where, and its node's place in
    the graph."""
    geo: Geo
    dt: np.dtype
    step: object
    args: list
    used: list
    outs: list
    epi: object
    bias: bool
    n_leaves: int
    sliced: list
    serial_epi: object = None   # () -> the epilogue's serial kernel (None: no epilogue)
    text: str = ""
    line: int = -1
    pos: int = -1


class ConvSteps:
    """Convolution steps (a mixin: needs ``b``, ``report``, ``_arg``, ``_buf``)."""

    def _conv(self, node, nodes, outputs, sub, outer) -> bool:
        """Emit a conv-family master (alone or with its fused epilogue); False if not
        covered."""
        k = node.attr_dict.get("master", 0) if node.body is not None else 0
        k = k if isinstance(k, int) and 0 <= k < len(nodes) else 0
        master, epilogue = nodes[k], [n for n in nodes if n is not nodes[k]]
        name = master.op.name
        if name not in CONV_OPS or master.body is not None:
            return False
        if not all(codegen.is_scalar_node(n) for n in epilogue):
            return False
        mv = master.outputs[0]
        if not float_known([*master.inputs, mv, *outputs]):
            return False
        if len({v.type.dtype for v in (*master.inputs, mv)}) != 1:
            return False
        geo = geometry(master)
        if geo is None:
            return False
        if name == "convolution_backward_weight":
            if epilogue or len(outputs) != 1 or outputs[0] is not mv:
                return False
            return self._conv_wgrad(geo, master, sub, outer)
        shape = mv.type.shape
        if any(v.type.shape != shape for v in outputs):
            return False
        leaves = epilogue_leaves(master, epilogue, outputs)
        if leaves is None:
            return False
        view = (shape[0], shape[1], math.prod(shape[2:]))
        flags, reshapes = [], []
        for v in leaves:
            fl = _leaf_flags(v.type.shape, shape)
            if fl is None:
                return False
            flags.append(fl)
            reshapes.append(tuple(1 if f else d for f, d in zip(fl, view)))
        outputs = [outputs[j] for j in master_first(outputs, mv)]
        outs = [outer.get(id(v), v) for v in outputs]
        for v in outs:
            self._buf(v)
        ins = [sub.get(id(v), v) for v in master.inputs]
        bias = len(ins) > 2 and not master.attr_dict["no_bias"]
        dt = np.dtype(mv.type.dtype)
        forward = name == "convolution"
        from . import cpu_direct  # (it imports this module's steps)
        from .cpu_winograd import applies, tile, winograd_step
        wino = applies(geo, forward, dt)
        direct = not wino and cpu_direct.applies(geo, "forward" if forward else "dgrad")
        epi: dict = {}
        if epilogue or bias or len(outputs) > 1:
            # serial after a GEMM, like IM2COL (cpu_conv_kernels); the direct kernels run
            # no BLAS
            parallel = (geo.depthwise or direct) and math.prod(view) >= PARALLEL_MIN
            shape_free = cpu_memo.structure(epilogue, [mv, *leaves], outputs)
            for tr in (False, True):  # (sources by structure: cpu_memo)
                epi[tr] = kernel(cpu_memo.source(
                    ("conv", bias, shape_free, tuple(map(tuple, flags)), parallel, tr),
                    lambda: conv_epilogue_source(bias, epilogue, mv, leaves, flags, outputs,
                                                 parallel, tr)))
            # (one sample's, in a thread of the pool: ``_dw_pw``)
            epi["serial"] = lambda: kernel(cpu_memo.source(
                ("conv", bias, shape_free, tuple(map(tuple, flags)), False, False),
                lambda: conv_epilogue_source(bias, epilogue, mv, leaves, flags, outputs,
                                             False, False)))
        make = forward_step if forward else dgrad_step
        sliced = [not fl[0] for fl in flags]
        self._conv_scratch().layer = node.name
        step = make(geo, dt, self._conv_scratch(), epi.get(False), epi.get(True), bias,
                    len(leaves), sliced)
        if wino:  # 3x3 stride 1: Winograd, im2col for non-finite inputs
            step = winograd_step(geo, dt, self._conv_scratch(), epi.get(False), bias,
                                 len(leaves), sliced, forward, step, tile(geo, forward))
            self.report["winograd"] += 1
        elif direct and forward:
            step = cpu_direct.forward_step(geo, dt, epi.get(False), bias, len(leaves), sliced,
                                           step)
            self.report["direct"] += 1
        elif direct:   # im2col for a non-finite filter
            step = cpu_direct.dgrad_step(geo, dt, self._conv_scratch(), epi.get(False), bias,
                                         len(leaves), sliced, step)
            self.report["direct"] += 1
        args = [self._arg(v) for v in ins[:3 if bias else 2]]
        args += [self._arg(sub.get(id(v), v), r) for v, r in zip(leaves, reshapes)]
        args += [self.b.expr(outs[0])] + [self.b.expr(v, view) for v in outs[1:]]
        kind = "conv" if forward else "conv_dgrad"
        self.report[kind + ("+epilogue" if epilogue else "")] += 1
        used = [*ins[:3 if bias else 2], *(sub.get(id(v), v) for v in leaves)]
        one = _Conv(geo, dt, step, args, used, outs, epi.get(False), bias, len(leaves), sliced,
                    epi.get("serial"))
        if forward and not wino and not direct and self._dw_pw(one):
            return True
        one.text = f"{self.b.constant(step, 'k')}({', '.join(args)})"
        self.b.emit(one.text)
        self._pending_dw = one if forward and geo.depthwise else None
        one.line, one.pos = len(self.b.lines) - 1, getattr(self, "_pos", -1)
        return True

    def _dw_pw(self, b: _Conv) -> bool:
        """Whether the 1x1 convolution ``b`` took the depthwise convolution whose step was
        the last conv step emitted, and whose output only ``b`` reads, into one step
        (``cpu_conv_pairs.dw_pw_step``); its step's line is then removed. The depthwise
        step then runs at ``b``'s place: only where no node between them writes memory it
        reads, nor ``b`` writes it (the plan gave their buffers lifetimes ending at the
        depthwise step)."""
        a = getattr(self, "_pending_dw", None)
        self._pending_dw = None
        g = b.geo
        if a is None or not FUSE_DW_PW or \
                not (g.pointwise and g.g == 1 and g.n >= PW_SAMPLES_MIN and
                     g.m >= POINTWISE_SAMPLE_M) or b.used[0] is not a.outs[0] or \
                len(a.outs) != 1 or any(a.sliced) or a.geo.n != g.n or a.dt != b.dt or \
                self.b.lines[a.line] != a.text or getattr(self, "_pos", -1) <= a.pos:
            return False
        graph = self.graph
        out = a.outs[0]
        if id(out) not in self.views or any(v is out for v in graph.outputs) or \
                sum(v is out for n in graph.nodes for v in n.inputs) != 1:
            return False
        reads = [self.views[id(v)] for v in a.used if id(v) in self.views]
        ids = {id(v) for v in a.used}
        for node in (*graph.nodes[a.pos + 1:self._pos], None):
            written = b.outs if node is None else node.outputs
            if node is not None and any(id(node.inputs[i]) in ids
                                        for i in node.op.mutated(node.attr_dict)):
                return False
            for v in written:
                view = self.views.get(id(v))
                if view is not None and any(np.may_share_memory(view, r) for r in reads):
                    return False
        step = dw_pw_step(a.geo, g, b.dt, self._conv_scratch(), a.step, b.step,
                          a.serial_epi() if a.serial_epi is not None else None, b.epi,
                          a.bias, a.n_leaves, b.bias, b.n_leaves, b.sliced)
        self.b.lines[a.line] = "pass"
        self.b.emit(f"{self.b.constant(step, 'k')}({', '.join([*a.args, *b.args[1:]])})")
        self.report["conv_dw_pw"] += 1
        return True

    def _conv_scratch(self) -> Scratch:
        scr = getattr(self, "_scratch_conv", None)
        if scr is None:
            scr = self._scratch_conv = Scratch(getattr(self, "arena", None))
        return scr

    def _conv_wgrad(self, geo: Geo, master: Node, sub, outer) -> bool:
        ins = [sub.get(id(v), v) for v in master.inputs]
        out = outer.get(id(master.outputs[0]), master.outputs[0])
        self._buf(out)
        dt = np.dtype(out.type.dtype)
        step = wgrad_step(geo, dt, self._conv_scratch())
        from . import cpu_direct
        from .cpu_winograd import applies, tile, wgrad_winograd_step
        if applies(geo, True):   # the weight gradient of a convolution Winograd runs
            step = wgrad_winograd_step(geo, dt, self._conv_scratch(), step, tile(geo, True))
            self.report["winograd"] += 1
        elif cpu_direct.applies(geo, "wgrad"):
            step = cpu_direct.wgrad_step(geo, dt, self._conv_scratch(), step)
            self.report["direct"] += 1
        args = [self._arg(v) for v in ins] + [self.b.expr(out)]
        self.b.emit(f"{self.b.constant(step, 'k')}({', '.join(args)})")
        self.report["conv_wgrad"] += 1
        return True


def _leaf_flags(s: tuple, out: tuple) -> tuple | None:
    """Broadcast flags of an epilogue input of shape ``s`` over the (N, C, spatial) view of
    ``out``, or None when it broadcasts along only part of the spatial dims."""
    if len(s) > len(out):
        return None
    s = (1,) * (len(out) - len(s)) + tuple(s)
    if s[2:] == out[2:]:
        fm = False
    elif all(v == 1 for v in s[2:]):
        fm = math.prod(out[2:]) != 1
    else:
        return None
    return (s[0] == 1 and out[0] != 1, s[1] == 1 and out[1] != 1, fm)
