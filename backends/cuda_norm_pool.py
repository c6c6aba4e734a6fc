"""BatchNorm and pooling on the CUDA backend (their forward and backward ops as kernels).

- ``batch_norm`` / ``batch_norm_backward``: one block per channel of the data viewed as
  (P, C, Q) (the channel axis in the middle), its threads striding over the channel's P*Q
  elements; the moments and the gradient sums are float64 tree reductions in shared memory
  (two passes for the variance, as the reference's ``mean((x - mean)^2)``), then one pass
  writes the output. Training updates the moving statistics in place (thread 0), as
  ``ir/opset_norm.py``; the formulas are ``ir/opset_norm_grad.py``'s (Ioffe & Szegedy 2015).
- ``pooling`` (max / avg / sum, 2-D, any convention, global): one thread per output window;
  average divisors (``count_include_pad``, the 'full' overhang) are computed on the host at
  compile time by the reference's own rule and uploaded once;
  ``pooling_backward``: the input gradient zeroed, then one thread per window adds its
  gradient with ``cuda.atomic.add`` (windows overlap when the stride is below the kernel)
  to its first maximum in scan order (max, MXNet's/NumPy's argmax rule) or to every element
  it covers, divided by its count (avg).
"""
from __future__ import annotations

import numpy as np

from ember.ir.graph import Node
from ember.ir.opset_pool import _pool_counts, _pool_geom

from . import cuda_device as cd
from .cuda_kernels import ConstPool, _module, fill_source, kernel
from .cuda_steps import float_known


def _block_sum(var: str, out: str, threads: int, ind: str = "        ") -> list[str]:
    """Lines leaving the block-wide float64 sum of each thread's ``var`` in ``out``."""
    return [f"{ind}sh[t] = {var}", f"{ind}cuda.syncthreads()", f"{ind}h = {threads // 2}",
            f"{ind}while h > 0:", f"{ind}    if t < h:", f"{ind}        sh[t] += sh[t + h]",
            f"{ind}    cuda.syncthreads()", f"{ind}    h = h // 2",
            f"{ind}{out} = sh[0]", f"{ind}cuda.syncthreads()"]


def _moments(threads: int) -> list[str]:
    """Lines computing the channel's float64 ``mean`` and ``var`` (two passes)."""
    loop = "        for i in range(t, n, T):"
    at = "np.float64(x[i // Q, c, i % Q])"
    return ["        s = 0.0", loop, f"            s += {at}", *_block_sum("s", "tot", threads),
            "        mean = tot / n", "        s = 0.0", loop,
            f"            d = {at} - mean", "            s += d * d",
            *_block_sum("s", "tot", threads), "        var = tot / n"]


def batch_norm_source(train: bool, fix_gamma: bool, mean_var: bool, threads: int,
                      sim: bool) -> str:
    """``kernel(x, gamma, beta, mm, mv, y, [omean, oinv,] eps, momentum)`` over (P, C, Q)."""
    head = [f"    T = {threads}", "    sh = cuda.shared.array(T, np.float64)",
            "    t = cuda.threadIdx.x", "    P = x.shape[0]", "    C = x.shape[1]",
            "    Q = x.shape[2]", "    n = P * Q",
            "    for c in range(cuda.blockIdx.x, C, cuda.gridDim.x):"]
    if train:
        body = _moments(threads) + [
            "        if t == 0:",
            "            mm[c] = mm[c] * momentum + mean * (1.0 - momentum)",
            "            mv[c] = mv[c] * momentum + var * (1.0 - momentum)"]
    else:
        body = ["        mean = np.float64(mm[c])", "        var = np.float64(mv[c])"]
    body += ["        inv = 1.0 / math.sqrt(var + eps)",
             f"        g = {'1.0' if fix_gamma else 'np.float64(gamma[c])'}",
             "        b = np.float64(beta[c])",
             "        for i in range(t, n, T):",
             "            p = i // Q", "            q = i % Q",
             "            y[p, c, q] = (np.float64(x[p, c, q]) - mean) * inv * g + b"]
    if mean_var:
        body += ["        if t == 0:", "            omean[c] = mean", "            oinv[c] = inv"]
    body += ["        cuda.syncthreads()"]
    args = ["x", "gamma", "beta", "mm", "mv", "y"] + (["omean", "oinv"] if mean_var else [])
    return _module(head + body, ConstPool(), [*args, "eps", "momentum"], sim)


def bn_backward_source(train: bool, fix_gamma: bool, threads: int, sim: bool) -> str:
    """``kernel(g, x, gamma, mm, mv, dx, dgamma, dbeta, eps)`` over (P, C, Q)."""
    lines = [f"    T = {threads}", "    sh = cuda.shared.array(T, np.float64)",
             "    t = cuda.threadIdx.x", "    P = x.shape[0]", "    C = x.shape[1]",
             "    Q = x.shape[2]", "    n = P * Q",
             "    for c in range(cuda.blockIdx.x, C, cuda.gridDim.x):"]
    lines += _moments(threads) if train else \
        ["        mean = np.float64(mm[c])", "        var = np.float64(mv[c])"]
    lines += ["        inv = 1.0 / math.sqrt(var + eps)",
              f"        gm = {'1.0' if fix_gamma else 'np.float64(gamma[c])'}",
              "        s1 = 0.0", "        s2 = 0.0",
              "        for i in range(t, n, T):",
              "            gi = np.float64(g[i // Q, c, i % Q])",
              "            s1 += gi",
              "            s2 += gi * ((np.float64(x[i // Q, c, i % Q]) - mean) * inv)",
              *_block_sum("s1", "sg", threads), *_block_sum("s2", "sgx", threads),
              "        mg = sg * gm / n", "        mgx = sgx * gm / n",
              "        for i in range(t, n, T):",
              "            p = i // Q", "            q = i % Q",
              "            gi = np.float64(g[p, c, q]) * gm"]
    if train:
        lines += ["            xh = (np.float64(x[p, c, q]) - mean) * inv",
                  "            dx[p, c, q] = inv * (gi - mg - xh * mgx)"]
    else:
        lines += ["            dx[p, c, q] = gi * inv"]
    lines += ["        if t == 0:", f"            dgamma[c] = {'0.0' if fix_gamma else 'sgx'}",
              "            dbeta[c] = sg", "        cuda.syncthreads()"]
    args = ["g", "x", "gamma", "mm", "mv", "dx", "dgamma", "dbeta", "eps"]
    return _module(lines, ConstPool(), args, sim)


_POOL_ARGS = ["KH", "KW", "SH", "SW", "PH", "PW"]


def pool_source(kind: str, backward: bool, sim: bool) -> str:
    """Forward ``kernel(x, y, cnt, KH, KW, SH, SW, PH, PW)`` or backward ``kernel(x, g, dx,
    cnt, ...)`` of 2-D pooling over x (NC, H, W), y/g (NC, OH, OW); ``cnt`` (OH*OW,) holds
    the average divisors."""
    out = "g" if backward else "y"
    lines = ["    H = x.shape[1]", "    W = x.shape[2]", f"    OH = {out}.shape[1]",
             f"    OW = {out}.shape[2]",
             f"    for i in range(cuda.grid(1), {out}.shape[0] * OH * OW, cuda.gridsize(1)):",
             "        ow = i % OW", "        r = i // OW", "        oh = r % OH",
             "        nc = r // OH", "        h0 = oh * SH - PH", "        w0 = ow * SW - PW"]
    window = ["        for kh in range(KH):", "            h = h0 + kh",
              "            if h >= 0 and h < H:", "                for kw in range(KW):",
              "                    w = w0 + kw", "                    if w >= 0 and w < W:"]
    ind = "                        "
    if kind == "max":
        lines += ["        acc = -math.inf", "        bh = -1", "        bw = -1", *window,
                  f"{ind}v = x[nc, h, w]",
                  f"{ind}if v > acc or bh < 0 or (v != v and acc == acc):",
                  f"{ind}    acc = v", f"{ind}    bh = h", f"{ind}    bw = w"]
        if backward:
            lines += ["        if bh >= 0:",
                      "            cuda.atomic.add(dx, (nc, bh, bw), g[nc, oh, ow])"]
        else:
            lines += ["        y[nc, oh, ow] = acc"]
    elif backward:
        div = " / cnt[oh * OW + ow]" if kind == "avg" else ""
        lines += [f"        gv = g[nc, oh, ow]{div}", *window,
                  f"{ind}cuda.atomic.add(dx, (nc, h, w), gv)"]
    else:
        lines += ["        acc = 0.0", *window, f"{ind}acc += np.float64(x[nc, h, w])"]
        lines += [f"        y[nc, oh, ow] = acc{' / cnt[oh * OW + ow]' if kind == 'avg' else ''}"]
    args = (["x", "g", "dx"] if backward else ["x", "y"]) + ["cnt", *_POOL_ARGS]
    return _module(lines, ConstPool(), args, sim)


class NormPoolSteps:
    """BatchNorm and pooling steps (a mixin of ``cuda._Program``)."""

    def _norm_pool(self, node: Node) -> bool:
        name = node.op.name
        if name == "batch_norm":
            return self._batch_norm(node)
        if name == "batch_norm_backward":
            return self._bn_backward(node)
        if name in ("pooling", "pooling_backward"):
            return self._pooling(node)
        return False

    def _channels(self, x, axis: int):
        ax = axis % x.type.ndim
        s = x.type.shape
        return (int(np.prod(s[:ax])), s[ax], int(np.prod(s[ax + 1:])))

    def _block_launch(self, src: str, channels: int) -> str:
        threads = 32 if self.sim else 256
        blocks = 1 if self.sim else max(1, min(channels, 65535))
        return self.b.constant(kernel(src)[blocks, threads, self.stream], "k")

    def _batch_norm(self, node: Node) -> bool:
        at = node.attr_dict
        x = node.inputs[0]
        vals = [*node.inputs, *node.outputs]
        if not float_known(vals) or len({v.type.dtype for v in vals}) != 1 or x.type.size == 0:
            return False
        train = bool(at.get("is_train", False) and not at["use_global_stats"])
        ppp = self._channels(x, at["axis"])
        mv = bool(at["output_mean_var"])
        src = batch_norm_source(train, at["fix_gamma"], mv, 32 if self.sim else 256, self.sim)
        for v in node.outputs:
            self._buf(v)
        args = [self._arg(x, ppp)] + [self._arg(v) for v in node.inputs[1:]]
        args += [self.b.expr(node.outputs[0], ppp)] + [self._arg(v) for v in node.outputs[1:]]
        args += [repr(float(at["eps"])), repr(float(at["momentum"]))]
        self.b.emit(f"{self._block_launch(src, ppp[1])}({', '.join(args)})")
        self.report["batch_norm"] += 1
        return True

    def _bn_backward(self, node: Node) -> bool:
        at = node.attr_dict
        g, x = node.inputs[0], node.inputs[1]
        vals = [*node.inputs, *node.outputs]
        if not float_known(vals) or len({v.type.dtype for v in vals}) != 1 or x.type.size == 0 \
                or g.type.shape != x.type.shape:
            return False
        ppp = self._channels(x, at["axis"])
        src = bn_backward_source(bool(at["train"]), at["fix_gamma"], 32 if self.sim else 256,
                                 self.sim)
        for v in node.outputs:
            self._buf(v)
        args = [self._arg(g, ppp), self._arg(x, ppp)] + [self._arg(v) for v in node.inputs[2:]]
        args += [self.b.expr(node.outputs[0], ppp)] + [self._arg(v) for v in node.outputs[1:]]
        args.append(repr(float(at["eps"])))
        self.b.emit(f"{self._block_launch(src, ppp[1])}({', '.join(args)})")
        self.report["batch_norm_backward"] += 1
        return True

    def _pooling(self, node: Node) -> bool:
        at, name = node.attr_dict, node.op.name
        x = node.inputs[0] if name == "pooling" else node.inputs[1]
        kind = at["pool_type"]
        vals = [*node.inputs, *node.outputs]
        if x.type.ndim != 4 or kind not in ("max", "avg", "sum") or not float_known(vals) \
                or len({v.type.dtype for v in vals}) != 1 or x.type.size == 0 \
                or at.get("layout") not in (None, "NCHW"):
            return False
        n, c, h, w = x.type.shape
        k, s, pl, pr, out = _pool_geom(at, (h, w))
        cnt = np.ones(out[0] * out[1], x.type.dtype)
        if kind == "avg":  # a scalar, or (1, 1, OH, OW) divisors
            counts = np.asarray(_pool_counts((h, w), at, k, s, pl, pr, out), x.type.dtype)
            cnt[:] = np.broadcast_to(counts.reshape(counts.shape[-2:]) if counts.ndim >= 2
                                     else counts, out).reshape(-1)
        cnt_name = self.b.constant(cd.to_device(cnt, self.device_id), "A")
        geo = ", ".join(str(int(v)) for v in (*k, *s, *pl))
        nco = (n * c, *out)
        src = pool_source(kind, name == "pooling_backward", self.sim)
        y = node.outputs[0]
        self._buf(y)
        if name == "pooling":
            self.b.emit(f"{self._launch(src, n * c * out[0] * out[1])}("
                        f"{self._arg(x, (n * c, h, w))}, {self.b.expr(y, nco)}, {cnt_name}, "
                        f"{geo})")
        else:
            zero = self.b.constant(np.dtype(y.type.dtype).type(0), "c")
            fill = self._launch(fill_source(), y.type.size)
            self.b.emit(f"{fill}({self.b.expr(y, (y.type.size,))}, {zero})")
            self.b.emit(f"{self._launch(src, n * c * out[0] * out[1])}("
                        f"{self._arg(x, (n * c, h, w))}, {self._arg(node.inputs[0], nco)}, "
                        f"{self.b.expr(y, (n * c, h, w))}, {cnt_name}, {geo})")
        self.report[name] += 1
        return True
