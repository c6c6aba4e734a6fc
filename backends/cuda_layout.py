"""Data movement on the CUDA backend: axis permutations (``transpose``, ``swapaxes``) and
``concat`` for any dtype, ``cast`` between numeric dtypes (float casts are templates), and
the gathers ``take``/``embedding`` with ``take_backward`` (atomic adds), strided slices
(``slice``, ``slice_axis``, ``slice_like``, ``getitem``) and their adjoint.

A permutation is one gather kernel over the output's flat index: each thread unravels its
index over the output's dims and sums the matching input strides (the permuted input
strides are kernel arguments, so one compiled kernel serves every permutation of a rank).
``concat`` copies each input into its slab of the output viewed as (P, axis, Q), one launch
per input.
"""
from __future__ import annotations

import math

import numpy as np

from ember.ir.graph import Node
from ember.ir.opset_shape import _perm, _swap_perm
from ember.ir.opset_slice import _slice_axis_key, _slice_key, _slice_like_key

from .cuda_kernels import ConstPool, _module, fill_source


def permute_source(rank: int, sim: bool, scatter: bool = False) -> str:
    """``kernel(x, o, base, n0.., s0..)``: ``o[i] = x[base + sum(i_d * s_d)]`` over 1-D views,
    i unravelled over the dims ``n`` (a permutation, a strided slice); ``s`` the strides
    (elements, negative for reversed steps) in ``x`` of each dim. ``scatter``: the other way,
    ``o[base + sum(i_d * s_d)] = x[i]``, i over ``x`` (a slice's adjoint into zeros)."""
    over = "x" if scatter else "o"
    lines = [f"    for i in range(cuda.grid(1), {over}.shape[0], cuda.gridsize(1)):",
             "        r = i", "        src = base"]
    for d in range(rank - 1, 0, -1):
        lines += [f"        src += (r % n{d}) * s{d}", f"        r = r // n{d}"]
    lines += ["        src += r * s0",
              "        o[src] = x[i]" if scatter else "        o[i] = x[src]"]
    args = ["x", "o", "base", *(f"n{d}" for d in range(rank)), *(f"s{d}" for d in range(rank))]
    return _module(lines, ConstPool(), args, sim)


def strided_view(shape: tuple, key: tuple):
    """``(base, dims, strides)`` of ``x[key]`` as a strided view of contiguous ``x`` (element
    units), for keys of slices and integers only (``ir/opset_index``'s encoding); None for
    other keys."""
    if len(key) > len(shape) or any(k[0] not in ("s", "i") for k in key):
        return None
    strides = [math.prod(shape[d + 1:]) for d in range(len(shape))]
    base, dims, steps = 0, [], []
    for d, n in enumerate(shape):
        k = key[d] if d < len(key) else ("s", None, None, None)
        if k[0] == "i":
            if not -n <= k[1] < n:
                return None
            base += (k[1] % n) * strides[d]
            continue
        start, stop, step = slice(*k[1:]).indices(n)
        base += start * strides[d]
        dims.append(len(range(start, stop, step)))
        steps.append(strides[d] * step)
    return base, dims or [1], steps or [0]


def slab_source(sim: bool) -> str:
    """``kernel(x, o, off)``: ``o[p, off + r, q] = x[p, r, q]``."""
    lines = ["    R = x.shape[1]", "    Q = x.shape[2]",
             "    for i in range(cuda.grid(1), x.shape[0] * R * Q, cuda.gridsize(1)):",
             "        q = i % Q", "        r = (i // Q) % R", "        p = i // (Q * R)",
             "        o[p, off + r, q] = x[p, r, q]"]
    return _module(lines, ConstPool(), ["x", "o", "off"], sim)


def cast_source(sim: bool) -> str:
    """``kernel(x, o)``: ``o[i] = x[i]`` over 1-D views of two dtypes (numba's conversion:
    C's, float to int truncating, as NumPy's ``astype``)."""
    lines = ["    for i in range(cuda.grid(1), o.shape[0], cuda.gridsize(1)):",
             "        o[i] = x[i]"]
    return _module(lines, ConstPool(), ["x", "o"], sim)


def add_n_source(n: int, sim: bool) -> str:
    """``kernel(x0.., o)``: ``o[i] = ((x0[i] + x1[i]) + ...)`` left to right, as the
    reference's running ``np.add``."""
    total = " + ".join(f"x{j}[i]" for j in range(n))
    lines = ["    for i in range(cuda.grid(1), o.shape[0], cuda.gridsize(1)):",
             f"        o[i] = {total}"]
    return _module(lines, ConstPool(), [*(f"x{j}" for j in range(n)), "o"], sim)


_KEYS = {"slice": lambda s, o, at, ts: _slice_key(len(s), at, ts),
         "slice_axis": _slice_axis_key, "slice_like": _slice_like_key}
_FIX = {"clip": "k = min(max(k, 0), A - 1)", "wrap": "k = k % A"}


def take_source(mode: str, backward: bool, sim: bool) -> str:
    """``kernel(a, idx, out)``: ``out[p, i, q] = a[p, fix(idx[i]), q]`` over (P, A, Q) and
    (P, I, Q) views (``take``, ``embedding``), or with ``backward`` ``kernel(og, idx, out)``
    adding ``og[p, i, q]`` into ``out[p, fix(idx[i]), q]`` atomically (repeated indices),
    the output zeroed before. Indices truncate to integers, then clip or wrap (MXNet)."""
    src, n = ("og", "og") if backward else ("a", "out")
    lines = [f"    P = {n}.shape[0]", f"    I = {n}.shape[1]", f"    Q = {n}.shape[2]",
             f"    A = {'out' if backward else 'a'}.shape[1]",
             "    for j in range(cuda.grid(1), P * I * Q, cuda.gridsize(1)):",
             "        q = j % Q", "        i = (j // Q) % I", "        p = j // (Q * I)",
             "        k = int(idx[i])", f"        {_FIX[mode]}"]
    lines.append("        cuda.atomic.add(out, (p, k, q), og[p, i, q])" if backward else
                 "        out[p, i, q] = a[p, k, q]")
    return _module(lines, ConstPool(), [src, "idx", "out"], sim)


# dtypes a numba-cuda kernel converts between exactly as NumPy's astype (not bool, float16)
_NUMERIC = ("float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
            "uint32", "uint64")


class LayoutSteps:
    """Permutation, concat and cast steps (a mixin of ``cuda._Program``)."""

    def _layout(self, node: Node) -> bool:
        name = node.op.name
        if name in ("transpose", "swapaxes"):
            return self._permute(node)
        if name == "concat":
            return self._concat(node)
        if name == "cast":
            return self._cast(node)
        if name in ("take", "embedding", "take_backward"):
            return self._take(node)
        if name == "dropout":
            return self._inactive_dropout(node)
        if name in _KEYS or name in ("getitem", "getitem_backward"):
            return self._slice(node)
        if name == "add_n":
            return self._add_n(node)
        return False

    def _add_n(self, node: Node) -> bool:
        y = node.outputs[0]
        if not all(v.type.known and v.type.shape == y.type.shape and v.type.dtype ==
                   y.type.dtype for v in node.inputs) or y.type.dtype not in _NUMERIC:
            return False
        self._buf(y)
        if y.type.size:
            args = [self._flat(v) for v in (*node.inputs, y)]
            self.b.emit(f"{self._launch(add_n_source(len(node.inputs), self.sim), y.type.size)}"
                        f"({', '.join(args)})")
        self.report["add_n"] += 1
        return True

    def _slice(self, node: Node) -> bool:
        """slice / slice_axis / slice_like / getitem (slices and integers) as one strided
        gather, getitem_backward as zeros and one strided scatter."""
        name, at = node.op.name, node.attr_dict
        x = node.inputs[1] if name == "getitem_backward" else node.inputs[0]
        y = node.outputs[0]
        if not all(v.type.known for v in node.inputs) or y.type.dtype != x.type.dtype:
            return False
        if name in _KEYS:
            others = [v.type.shape for v in node.inputs[1:]]
            key = _KEYS[name](x.type.shape, others, at, ())
        else:
            key = at["key"]
        view = strided_view(x.type.shape, tuple(key))
        if view is None or math.prod(view[1]) != node.inputs[0].type.size \
                and name == "getitem_backward":
            return False
        base, dims, steps = view
        self._buf(y)
        args = [str(base), *map(str, dims), *map(str, steps)]
        n = math.prod(dims)
        if name == "getitem_backward":
            zero = self.b.constant(np.dtype(y.type.dtype).type(0), "c")
            self.b.emit(f"{self._launch(fill_source(), y.type.size)}({self._flat(y)}, {zero})")
            src = permute_source(len(dims), self.sim, scatter=True)
            if n:
                self.b.emit(f"{self._launch(src, n)}({self._flat(node.inputs[0])}, "
                            f"{self._flat(y)}, {', '.join(args)})")
        elif n:
            self.b.emit(f"{self._launch(permute_source(len(dims), self.sim), n)}("
                        f"{self._flat(x)}, {self._flat(y)}, {', '.join(args)})")
        self.report["slice"] += 1
        return True

    def _inactive_dropout(self, node: Node) -> bool:
        """Dropout outside training (or p = 0): a copy and a mask of ones, as the reference
        (training draws from ember's host random state: a round trip)."""
        at = node.attr_dict
        if at["mode"] == "always" or at.get("is_train", False) and at["p"] != 0:
            return False
        x, (y, mask) = node.inputs[0], node.outputs
        if not x.type.known or x.type.dtype not in _NUMERIC:
            return False
        for v in (y, mask):
            self._buf(v)
        if x.type.size:
            one = self.b.constant(np.dtype(mask.type.dtype).type(1), "c")
            self.b.emit(f"{self._launch(cast_source(self.sim), x.type.size)}("
                        f"{self._flat(x)}, {self._flat(y)})")
            self.b.emit(f"{self._launch(fill_source(), x.type.size)}({self._flat(mask)}, {one})")
        self.report["dropout(inactive)"] += 1
        return True

    def _take(self, node: Node) -> bool:
        """``take`` (clip/wrap), ``embedding`` (take of its weight's rows, clipped) and
        ``take_backward``."""
        at, name = node.attr_dict, node.op.name
        y = node.outputs[0]
        if name == "embedding":
            idx, a, ax, mode = node.inputs[0], node.inputs[1], 0, "clip"
        elif name == "take":
            a, idx, ax, mode = node.inputs[0], node.inputs[1], at["axis"], at["mode"]
        else:
            idx, a, ax, mode = node.inputs[1], node.inputs[2], at["axis"], at["mode"]
        if mode not in _FIX or not all(v.type.known for v in node.inputs) or a.type.ndim == 0 \
                or a.type.shape[ax % a.type.ndim] == 0 or y.type.dtype != a.type.dtype:
            return False
        if name == "take_backward" and y.type.dtype not in ("float32", "float64"):
            return False
        shape = a.type.shape
        ax %= len(shape)
        p, q, n_idx = math.prod(shape[:ax]), math.prod(shape[ax + 1:]), idx.type.size
        ppp, piq = (p, shape[ax], q), (p, n_idx, q)
        self._buf(y)
        src = take_source(mode, name == "take_backward", self.sim)
        flat_idx = self._flat(idx)
        if name == "take_backward":
            zero = self.b.constant(np.dtype(y.type.dtype).type(0), "c")
            self.b.emit(f"{self._launch(fill_source(), y.type.size)}({self._flat(y)}, {zero})")
            args = [self._arg(node.inputs[0], piq), flat_idx, self.b.expr(y, ppp)]
        else:
            args = [self._arg(a, ppp), flat_idx, self.b.expr(y, piq)]
        if y.type.size and n_idx:
            self.b.emit(f"{self._launch(src, p * n_idx * q)}({', '.join(args)})")
        self.report[name] += 1
        return True

    def _cast(self, node: Node) -> bool:
        """``cast`` between numeric dtypes the float templates do not cover (ints)."""
        x, y = node.inputs[0], node.outputs[0]
        if not x.type.known or x.type.dtype not in _NUMERIC or y.type.dtype not in _NUMERIC:
            return False
        self._buf(y)
        if y.type.size:
            self.b.emit(f"{self._launch(cast_source(self.sim), y.type.size)}("
                        f"{self._flat(x)}, {self._flat(y)})")
        self.report["cast"] += 1
        return True

    def _permute(self, node: Node) -> bool:
        x, y = node.inputs[0], node.outputs[0]
        if not x.type.known or not y.type.known or x.type.dtype != y.type.dtype \
                or x.type.ndim == 0:
            return False
        nd = x.type.ndim
        perm = _perm(nd, node.attr_dict["axes"]) if node.op.name == "transpose" else \
            _swap_perm(nd, node.attr_dict)
        strides = [math.prod(x.type.shape[k + 1:]) for k in range(nd)]
        args = ["0"] + [str(d) for d in y.type.shape] + [str(strides[p]) for p in perm]
        self._buf(y)
        if y.type.size:
            self.b.emit(f"{self._launch(permute_source(nd, self.sim), y.type.size)}("
                        f"{self._flat(x)}, {self._flat(y)}, {', '.join(args)})")
        self.report["transpose"] += 1
        return True

    def _concat(self, node: Node) -> bool:
        y = node.outputs[0]
        vals = [*node.inputs, y]
        if not all(v.type.known for v in vals) or len({v.type.dtype for v in vals}) != 1:
            return False
        shape = y.type.shape
        ax = node.attr_dict["dim"] % len(shape)
        p, q = math.prod(shape[:ax]), math.prod(shape[ax + 1:])
        self._buf(y)
        out = self.b.expr(y, (p, shape[ax], q))
        off = 0
        for x in node.inputs:
            r = x.type.shape[ax]
            if x.type.size:
                self.b.emit(f"{self._launch(slab_source(self.sim), x.type.size)}("
                            f"{self._arg(x, (p, r, q))}, {out}, {off})")
            off += r
        self.report["concat"] += 1
        return True
