"""Convolution on the CUDA backend: im2col / col2im kernels around the backend's GEMM.

2-D, NCHW, one group (what ResNet-18's training step needs) or depthwise
(``cuda_depthwise``); other convolutions take the host round trip. As Caffe's GPU path
(Jia et al. 2014) and MXNet's ``im2col.cuh``:

- ``convolution``: per chunk of samples, im2col writes the windows as columns (nc, C*KH*KW,
  OH*OW) and one batched GEMM contracts them with the weight (its batch stride 0) straight
  into NCHW; a 1x1, stride-1, unpadded convolution skips im2col (the input is the columns);
- ``deconvolution`` (convolution's data gradient): a batched GEMM with the transposed weight
  to columns (nc, F*KH*KW, H*W), then a col2im that *gathers*, one thread per output
  element summing the column entries that land on it (no atomics; padding crops and ``adj``
  extends for free);
- ``convolution_backward_weight``: the columns laid out (C*KH*KW, nc*OH*OW) and the output
  gradient transposed to (F, nc*OH*OW), so each chunk is ONE GEMM into the weight gradient,
  accumulating (beta = 1) over chunks.
Bias and a fused elementwise epilogue (the ``fuse`` pass's out_ewise groups) follow in one
kernel (``cuda_kernels.epilogue_source``). Chunks keep the columns under
:data:`SCRATCH_BYTES`; scratch buffers are planned per program (``_scratch``), shared by all
its convolutions since its steps run one after another on one stream.
"""
from __future__ import annotations

import math

import numpy as np

from ember.ir.conv_kernels import _geom
from ember.ir.graph import Node
from ember.ir.opset_conv import _deconv_geom

from . import codegen
from . import cuda_device as cd
from .cuda_blas import gemm_fn
from .cuda_kernels import ConstPool, _module, epilogue_source
from .cuda_steps import float_known
from .plan import epilogue_leaves, master_first

SCRATCH_BYTES = 256 << 20  # im2col columns of one chunk of samples, at most
_CONV_OPS = ("convolution", "deconvolution", "convolution_backward_weight")
_GEOM = "C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW"


def im2col_source(knm: bool, sim: bool) -> str:
    """``kernel(x, n0, cols, zero, <geometry>)``: the windows of samples n0.. of x (N, C, H,
    W) as ``cols[z, ck, m]`` (or ``cols[ck, z, m]`` with ``knm``), ck = (c, kh, kw) and
    m = (oh, ow) row-major, 0 where a window reads padding."""
    nc = "cols.shape[1]" if knm else "cols.shape[0]"
    split = ["        z = r % nc", "        ck = r // nc"] if knm else \
        ["        ck = r % CK", "        z = r // CK"]
    store = "cols[ck, z, m]" if knm else "cols[z, ck, m]"
    lines = [f"    nc = {nc}", "    CK = C * KH * KW", "    M = OH * OW",
             "    for i in range(cuda.grid(1), nc * CK * M, cuda.gridsize(1)):",
             "        m = i % M", "        r = i // M", *split,
             "        ow = m % OW", "        oh = m // OW",
             "        kw = ck % KW", "        r2 = ck // KW", "        kh = r2 % KH",
             "        c = r2 // KH",
             "        h = oh * SH - PH + kh * DH", "        w = ow * SW - PW + kw * DW",
             "        v = zero",
             "        if h >= 0 and h < H and w >= 0 and w < W:",
             "            v = x[n0 + z, c, h, w]",
             f"        {store} = v"]
    return _module(lines, ConstPool(), ["x", "n0", "cols", "zero", *_GEOM.split(", ")], sim)


def col2im_source(sim: bool) -> str:
    """``kernel(cols, n0, y, zero, <geometry>)``: deconvolution's output samples n0.. of y
    (N, F, OH, OW) from cols (nc, F*KH*KW, H*W): each output element gathers the entries
    ``cols[z, (f, kh, kw), (h, w)]`` with ``h*SH + kh*DH - PH == oy`` (same for x)."""
    lines = ["    nc = cols.shape[0]", "    F = y.shape[1]",
             "    for i in range(cuda.grid(1), nc * F * OH * OW, cuda.gridsize(1)):",
             "        ox = i % OW", "        r = i // OW", "        oy = r % OH",
             "        r = r // OH", "        f = r % F", "        z = r // F",
             "        acc = zero",
             "        for kh in range(KH):",
             "            ty = oy + PH - kh * DH",
             "            if ty >= 0 and ty % SH == 0 and ty // SH < H:",
             "                h = ty // SH",
             "                for kw in range(KW):",
             "                    tx = ox + PW - kw * DW",
             "                    if tx >= 0 and tx % SW == 0 and tx // SW < W:",
             "                        acc += cols[z, (f * KH + kh) * KW + kw, h * W + tx // SW]",
             "        y[n0 + z, f, oy, ox] = acc"]
    return _module(lines, ConstPool(), ["cols", "n0", "y", "zero", *_GEOM.split(", ")], sim)


def transpose_source(sim: bool) -> str:
    """``kernel(src, n0, dst)``: ``dst[f, z, m] = src[n0 + z, f, m]`` (N, F, M) -> (F, nc, M)."""
    lines = ["    F = dst.shape[0]", "    nc = dst.shape[1]", "    M = dst.shape[2]",
             "    for i in range(cuda.grid(1), F * nc * M, cuda.gridsize(1)):",
             "        m = i % M", "        r = i // M", "        z = r % nc", "        f = r // nc",
             "        dst[f, z, m] = src[n0 + z, f, m]"]
    return _module(lines, ConstPool(), ["src", "n0", "dst"], sim)


def _epilogue_flags(shape: tuple, leaf: tuple):
    """(flags, reshape) of an epilogue leaf over an (N, F, *spatial) result viewed as (N, F,
    M), or None when it does not broadcast that way."""
    s = (1,) * (len(shape) - len(leaf)) + tuple(leaf)
    sp, osp = s[2:], shape[2:]
    if s[0] not in (1, shape[0]) or s[1] not in (1, shape[1]) or \
            not (all(d == 1 for d in sp) or sp == osp):
        return None
    mat = (shape[0], shape[1], math.prod(osp))
    fl = (s[0] == 1 and mat[0] != 1, s[1] == 1 and mat[1] != 1,
          all(d == 1 for d in sp) and mat[2] != 1)
    return fl, tuple(1 if f else d for f, d in zip(fl, mat))


class ConvSteps:
    """Convolution steps (a mixin of ``cuda._Program``: needs ``b``, ``sim``, ``stream``,
    ``report``, ``_arg``, ``_buf``, ``_launch``, ``_scratches``)."""

    def _scratch(self, slot: int, shape: tuple, dtype: str) -> str:
        """A global name for a view of scratch buffer ``slot``, bound by ``_bind_scratch``."""
        name = self.b.fresh("S")
        self._scratches.append((name, slot, tuple(shape), np.dtype(dtype)))
        return name

    def _bind_scratch(self) -> None:
        """Allocate each scratch slot once, as large as its largest view (steps run in
        order on one stream, so all convolutions of the program share the slots)."""
        sizes: dict[int, int] = {}
        for _, slot, shape, dt in self._scratches:
            sizes[slot] = max(sizes.get(slot, 0), math.prod(shape) * dt.itemsize)
        bufs = {slot: cd.empty((max(n, 1),), np.uint8, self.device_id)
                for slot, n in sizes.items()}
        for name, slot, shape, dt in self._scratches:
            n = math.prod(shape) * dt.itemsize
            self.b.ns[name] = bufs[slot][:n].view(dt).reshape(shape)

    def _rows(self, v, shape: tuple, a: int, e: int) -> str:
        """``v`` viewed as ``shape``, rows a:e of its first dim."""
        full = self.b.expr(v, shape)
        if (a, e) == (0, shape[0]):
            return full
        arr = self.b.const.get(id(v))
        if arr is not None:
            return self.b.constant(arr.reshape(shape)[a:e], "A")
        return f"{full}[{a}:{e}]"

    def _conv(self, node: Node, nodes, outputs, sub, outer) -> bool:
        k = node.attr_dict.get("master", 0) if node.body is not None else 0
        k = k if isinstance(k, int) and 0 <= k < len(nodes) else 0
        master, epilogue = nodes[k], [n for n in nodes if n is not nodes[k]]
        name, at = master.op.name, master.attr_dict
        if name not in _CONV_OPS or master.body is not None or len(at["kernel"]) != 2:
            return False
        if at.get("layout") not in (None, "NCHW") or \
                not all(codegen.is_scalar_node(n) for n in epilogue):
            return False
        mv = master.outputs[0]
        ins = [sub.get(id(v), v) for v in master.inputs]
        if not float_known([*master.inputs, mv, *outputs]) or \
                len({v.type.dtype for v in (*master.inputs, mv)}) != 1 or \
                any(v.type.size == 0 for v in (*master.inputs, mv)):
            return False
        if any(v.type.shape != mv.type.shape for v in outputs):
            return False
        if at["num_group"] != 1 and not self._depthwise(name, ins, mv, at):
            return False
        leaves = epilogue_leaves(master, epilogue, outputs)
        if leaves is None:
            return False
        shape = mv.type.shape
        lay = [_epilogue_flags(shape, v.type.shape) for v in leaves]
        if any(x is None for x in lay) or (epilogue and name == _CONV_OPS[2]):
            return False
        outputs = [outputs[j] for j in master_first(outputs, mv)]
        outs = [outer.get(id(v), v) for v in outputs]
        for v in outs:
            self._buf(v)
        dt = mv.type.dtype
        if at["num_group"] != 1:
            how = self._depthwise_step(name, ins, outs[0], at)
        elif name == "convolution":
            how = self._conv_forward(ins, outs[0], at, dt)
        elif name == "deconvolution":
            how = self._deconv(ins, outs[0], at, dt)
        else:
            how = self._conv_wgrad(ins, outs[0], at, dt)
        bias = name != _CONV_OPS[2] and not at["no_bias"]
        if epilogue or bias or len(outputs) > 1:
            mat = (shape[0], shape[1], math.prod(shape[2:]))
            src = epilogue_source(3, 1 if bias else None, epilogue, mv, leaves,
                                  [f for f, _ in lay], outputs, self.sim)
            args = [self.b.expr(outs[0], mat)] + ([self._arg(ins[2])] if bias else [])
            args += [self._arg(sub.get(id(v), v), r) for v, (_, r) in zip(leaves, lay)]
            args += [self.b.expr(v, mat) for v in outs[1:]]
            self.b.emit(f"{self._launch(src, math.prod(mat))}({', '.join(args)})")
        short = {"convolution": "conv", "deconvolution": "deconv"}.get(name, "conv_wgrad")
        self.report[f"{short}[{how}]" + ("+epilogue" if epilogue else "")] += 1
        return True

    def _geometry(self, c, h, w, k, s, d, p, oh, ow) -> str:
        vals = (c, h, w, k[0], k[1], s[0], s[1], p[0], p[1], d[0], d[1], oh, ow)
        return ", ".join(str(int(v)) for v in vals)

    def _chunk(self, n: int, per_sample: int) -> int:
        return n if self.sim else max(1, min(n, SCRATCH_BYTES // max(per_sample, 1)))

    def _conv_forward(self, ins, y, at, dt) -> str:
        x, w = ins[0], ins[1]
        (n, c, h, wd), (f, oh, ow) = x.type.shape, (y.type.shape[1], *y.type.shape[2:])
        k, s, d, p = _geom(at, 2)
        ck, m = c * k[0] * k[1], oh * ow
        fn, how = gemm_fn(False, False, dt, self.stream, self.sim)
        g = self.b.constant(fn, "g")
        wm = self._arg(w, (1, f, ck))
        if k == (1, 1) and s == (1, 1) and p == (0, 0):  # the input is the columns
            self.b.emit(f"{g}({wm}, {self._arg(x, (n, c, m))}, {self.b.expr(y, (n, f, m))})")
            return how
        nc = self._chunk(n, ck * m * np.dtype(dt).itemsize)
        im2col = self._launch(im2col_source(False, self.sim), nc * ck * m)
        zero, geo = self.b.constant(np.dtype(dt).type(0), "c"), \
            self._geometry(c, h, wd, k, s, d, p, oh, ow)
        for a in range(0, n, nc):
            e = min(n, a + nc)
            cols = self._scratch(0, (e - a, ck, m), dt)
            self.b.emit(f"{im2col}({self._arg(x)}, {a}, {cols}, {zero}, {geo})")
            self.b.emit(f"{g}({wm}, {cols}, {self._rows(y, (n, f, m), a, e)})")
        return how

    def _deconv(self, ins, y, at, dt) -> str:
        x, w = ins[0], ins[1]
        n, c, h, wd = x.type.shape
        f, oh, ow = y.type.shape[1], *y.type.shape[2:]
        k, s, d, p, _ = _deconv_geom(at, x.type.shape[2:])
        fkk, hw = f * k[0] * k[1], h * wd
        fn, how = gemm_fn(True, False, dt, self.stream, self.sim)
        g = self.b.constant(fn, "g")
        nc = self._chunk(n, fkk * hw * np.dtype(dt).itemsize)
        col2im = self._launch(col2im_source(self.sim), nc * f * oh * ow)
        zero, geo = self.b.constant(np.dtype(dt).type(0), "c"), \
            self._geometry(c, h, wd, k, s, d, p, oh, ow)
        wm = self._arg(w, (1, c, fkk))
        for a in range(0, n, nc):
            e = min(n, a + nc)
            cols = self._scratch(0, (e - a, fkk, hw), dt)
            self.b.emit(f"{g}({wm}, {self._rows(x, (n, c, hw), a, e)}, {cols})")
            self.b.emit(f"{col2im}({cols}, {a}, {self.b.expr(y)}, {zero}, {geo})")
        return how

    def _conv_wgrad(self, ins, dw, at, dt) -> str:
        og, x = ins[0], ins[1]
        n, c, h, wd = x.type.shape
        f, oh, ow = og.type.shape[1], *og.type.shape[2:]
        k, s, d, p = _geom(at, 2)
        ck, m = c * k[0] * k[1], oh * ow
        size = np.dtype(dt).itemsize
        nc = self._chunk(n, (ck + f) * m * size)
        im2col = self._launch(im2col_source(True, self.sim), nc * ck * m)
        trans = self._launch(transpose_source(self.sim), nc * f * m)
        zero, geo = self.b.constant(np.dtype(dt).type(0), "c"), \
            self._geometry(c, h, wd, k, s, d, p, oh, ow)
        out = self.b.expr(dw, (1, f, ck))
        how = ""
        for a in range(0, n, nc):
            e = min(n, a + nc)
            fn, how = gemm_fn(False, True, dt, self.stream, self.sim, accumulate=a > 0)
            cols = self._scratch(0, (ck, e - a, m), dt)
            ogt = self._scratch(1, (f, e - a, m), dt)
            self.b.emit(f"{im2col}({self._arg(x)}, {a}, {cols}, {zero}, {geo})")
            self.b.emit(f"{trans}({self.b.expr(og, (n, f, m))}, {a}, {ogt})")
            # the same slots as matrices: (F, nc*M) @ (CK, nc*M)^T
            lhs = self._scratch(1, (1, f, (e - a) * m), dt)
            rhs = self._scratch(0, (1, ck, (e - a) * m), dt)
            self.b.emit(f"{self.b.constant(fn, 'g')}({lhs}, {rhs}, {out})")
        return how
