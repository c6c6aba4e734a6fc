"""``Block.summary``: one forward pass, then MXNet 1.9.1's table of each layer's output shape
and parameter count (python/mxnet/gluon/block.py, ``Block.summary``).

A forward hook on every descendant (containers excluded) records a row when that block
finishes, so rows come in the order blocks complete. Hooks fired while a lazy layer traces
itself symbolically to learn its parameter shapes are ignored: they have no values yet.
"""
from __future__ import annotations

from collections import OrderedDict

from ember.base import MXNetError
from ember.ndarray.ndarray import NDArray

from .block import Block, HybridBlock

_LINE = "{:>20}  {:>42} {:>15}"



class HybridizedSummaryError(MXNetError, AssertionError):
    """summary() of a hybridized block (MXNet asserts; both kinds of handler catch it)."""

def _flatten(args):
    """Nested lists/tuples -> (flat leaves, format to regroup them)."""
    if not isinstance(args, list | tuple):
        return [args], 0
    flat, fmts = [], []
    for a in args:
        leaves, fmt = _flatten(a)
        flat.extend(leaves)
        fmts.append(fmt)
    return flat, fmts


def _regroup(args, fmt):
    if isinstance(fmt, int):
        return (args[0], args[1:]) if fmt == 0 else (args[:fmt], args[fmt:])
    ret = []
    for f in fmt:
        res, args = _regroup(args, f)
        ret.append(res)
    return ret, args


def shape_str(args) -> str:
    """MXNet's text for the shapes of a (nested) output: ``(2, 8)`` or ``(2, 8), (2,)``."""
    flat, fmts = _flatten(args)
    shapes = _regroup([x.shape if isinstance(x, NDArray) else x for x in flat], fmts)[0]
    text = str(shapes)[1:-1] if isinstance(shapes, list) else str(shapes)
    return text.replace("L", "")


def _is_symbolic(outputs) -> bool:
    from ember.symbol import Symbol
    return any(isinstance(x, Symbol) for x in _flatten(outputs)[0])


def print_block_summary(block: Block, *inputs) -> None:
    """Run ``block(*inputs)`` once and print its layer table with parameter totals."""
    from .nn.basic_layers import HybridSequential, Sequential
    summary: OrderedDict[str, dict] = OrderedDict()
    seen: set[int] = set()
    hooks = []

    def _hook(blk, _, outputs):
        if _is_symbolic(outputs):
            return
        key = f"{type(blk).__name__}-{len(summary)}"
        row = {"output_shape": shape_str(outputs), "n_params": 0, "trainable": 0,
               "shared": 0}
        for p in blk.params.values():
            size = p.data().size
            row["n_params"] += size
            row["trainable"] += 0 if p.grad_req == "null" else size
            if id(p) in seen:
                row["shared"] += size
            else:
                seen.add(id(p))
        summary[key] = row

    def _register(blk):
        if isinstance(blk, HybridBlock) and blk._active:
            raise HybridizedSummaryError(f'"{blk.name}" must not be hybridized to print '
                                         'summary.')
        if not isinstance(blk, Sequential | HybridSequential):
            hooks.append(blk.register_forward_hook(_hook))

    summary["Input"] = {"output_shape": shape_str(inputs), "n_params": 0, "trainable": 0,
                        "shared": 0}
    try:
        block.apply(_register)
        block(*inputs)
        lines = ["-" * 80, _LINE.format("Layer (type)", "Output Shape", "Param #"), "=" * 80]
        total = trainable = shared = 0
        for layer, row in summary.items():
            lines.append(_LINE.format(layer, str(row["output_shape"]), row["n_params"]))
            total += row["n_params"]
            trainable += row["trainable"]
            shared += row["shared"]
        lines += ["=" * 80,
                  "Parameters in forward computation graph, duplicate included",
                  f"   Total params: {total}",
                  f"   Trainable params: {trainable}",
                  f"   Non-trainable params: {total - trainable}",
                  f"Shared params in forward computation graph: {shared}",
                  f"Unique parameters in model: {total - shared}",
                  "-" * 80]
        print("\n".join(lines))
    finally:
        for h in hooks:
            h.detach()
