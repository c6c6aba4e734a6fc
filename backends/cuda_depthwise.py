"""Depthwise 2-D convolution on the CUDA backend (``num_group`` = channels = filters, as in
MobileNet): direct kernels, no im2col (each output reads one channel's K*K window).

- forward: one thread per output element summing its window times the channel's filter;
- data gradient (``deconvolution`` with the same groups): one thread per input element
  gathering the outputs whose window covers it (as ``cuda_conv``'s col2im);
- weight gradient: one block per (channel, kh, kw) reducing ``og * x`` over the batch and
  the output positions in float64 through shared memory.
Bias and fused epilogues follow in ``cuda_conv``'s epilogue kernel.
"""
from __future__ import annotations

from ember.ir.conv_kernels import _geom
from ember.ir.opset_conv import _deconv_geom

from .cuda_kernels import ConstPool, _module, kernel

_GEO = ["KH", "KW", "SH", "SW", "PH", "PW", "DH", "DW"]


def depthwise_source(kind: str, threads: int, sim: bool) -> str:
    """``kind``: "forward" ``kernel(x, w, y, ...)``, "data" ``kernel(g, w, dx, ...)`` or
    "weight" ``kernel(g, x, dw, ...)``, geometry KH.. DW after the arrays."""
    if kind == "forward":
        lines = ["    N, C, OH, OW = y.shape", "    H = x.shape[2]", "    W = x.shape[3]",
                 "    for i in range(cuda.grid(1), N * C * OH * OW, cuda.gridsize(1)):",
                 "        ow = i % OW", "        oh = (i // OW) % OH",
                 "        c = (i // (OW * OH)) % C",
                 "        n = i // (OW * OH * C)", "        acc = 0.0",
                 "        for kh in range(KH):", "            h = oh * SH - PH + kh * DH",
                 "            if h >= 0 and h < H:", "                for kw in range(KW):",
                 "                    v = ow * SW - PW + kw * DW",
                 "                    if v >= 0 and v < W:",
                 "                        acc += x[n, c, h, v] * w[c, 0, kh, kw]",
                 "        y[n, c, oh, ow] = acc"]
        args = ["x", "w", "y"]
    elif kind == "data":
        lines = ["    N, C, H, W = dx.shape", "    OH = g.shape[2]", "    OW = g.shape[3]",
                 "    for i in range(cuda.grid(1), N * C * H * W, cuda.gridsize(1)):",
                 "        x0 = i % W", "        y0 = (i // W) % H",
                 "        c = (i // (W * H)) % C",
                 "        n = i // (W * H * C)", "        acc = 0.0",
                 "        for kh in range(KH):", "            ty = y0 + PH - kh * DH",
                 "            if ty >= 0 and ty % SH == 0 and ty // SH < OH:",
                 "                for kw in range(KW):",
                 "                    tx = x0 + PW - kw * DW",
                 "                    if tx >= 0 and tx % SW == 0 and tx // SW < OW:",
                 "                        acc += g[n, c, ty // SH, tx // SW] * w[c, 0, kh, kw]",
                 "        dx[n, c, y0, x0] = acc"]
        args = ["g", "w", "dx"]
    else:
        lines = [f"    sh = cuda.shared.array({threads}, np.float64)",
                 "    t = cuda.threadIdx.x",
                 "    N, C, OH, OW = g.shape", "    H = x.shape[2]", "    W = x.shape[3]",
                 "    for o in range(cuda.blockIdx.x, C * KH * KW, cuda.gridDim.x):",
                 "        kw = o % KW", "        kh = (o // KW) % KH",
                 "        c = o // (KW * KH)",
                 "        acc = 0.0",
                 f"        for j in range(t, N * OH * OW, {threads}):",
                 "            ow = j % OW", "            oh = (j // OW) % OH",
                 "            n = j // (OW * OH)",
                 "            h = oh * SH - PH + kh * DH", "            v = ow * SW - PW + kw * DW",
                 "            if h >= 0 and h < H and v >= 0 and v < W:",
                 "                acc += np.float64(g[n, c, oh, ow]) * np.float64(x[n, c, h, v])",
                 "        sh[t] = acc", "        cuda.syncthreads()",
                 f"        s = {threads // 2}",
                 "        while s > 0:", "            if t < s:",
                 "                sh[t] += sh[t + s]",
                 "            cuda.syncthreads()", "            s = s // 2",
                 "        if t == 0:", "            dw[c, 0, kh, kw] = sh[0]",
                 "        cuda.syncthreads()"]
        args = ["g", "x", "dw"]
    return _module(lines, ConstPool(), [*args, *_GEO], sim)


class DepthwiseSteps:
    """Depthwise steps (a mixin of ``cuda._Program``, called by ``cuda_conv._conv``)."""

    @staticmethod
    def _depthwise(name: str, ins, out, at) -> bool:
        """Whether this grouped convolution op is depthwise with one filter per channel."""
        g = at["num_group"]
        chans = ins[1].type.shape[1] if name == "convolution_backward_weight" else \
            ins[0].type.shape[1]
        filters = out.type.shape[0] if name == "convolution_backward_weight" else \
            out.type.shape[1]
        return g > 1 and chans == g and filters == g

    def _depthwise_step(self, name: str, ins, y, at) -> str:
        if name == "deconvolution":
            k, s, d, p, _ = _deconv_geom(at, ins[0].type.shape[2:])
        else:
            k, s, d, p = _geom(at, 2)
        geo = ", ".join(str(int(v)) for v in (*k, *s, *p, *d))
        threads = 32 if self.sim else 256
        kind = {"convolution": "forward", "deconvolution": "data"}.get(name, "weight")
        src = depthwise_source(kind, threads, self.sim)
        arrays = f"{self._arg(ins[0])}, {self._arg(ins[1])}, {self.b.expr(y)}"
        if kind == "weight":
            blocks = 1 if self.sim else min(y.type.size, 65535)
            launch = self.b.constant(kernel(src)[blocks, threads, self.stream], "k")
        else:
            launch = self._launch(src, y.type.size)
        self.b.emit(f"{launch}({arrays}, {geo})")
        return "depthwise"
