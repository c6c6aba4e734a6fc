"""Pooling and BatchNorm per layer at ResNet-18 v1 shapes (batch 16): the CPU backend's
compiled kernels against the ops' NumPy reference kernels, as ratios measured in one run.
BatchNorm's backward is also timed as the chain of small ops its gradient rule emitted
before ``batch_norm_backward`` existed (``opset_norm._norm_dx``), compiled by the same
backend (fused elementwise kernels and reductions): what a hybridized net ran before.

``python -m bench.norm_pool [--reps N]`` (run it under the shared bench lock).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from ember.backends import cpu
from ember.ir.emit import F, Sym
from ember.ir.graph import Graph, GraphBuilder, topo_nodes
from ember.ir.ops import get_op
from ember.ir.opset_norm import _norm_dx
from ember.ir.types import TensorType
from ember.passes import run_pipeline
from ember.runtime import cache

BN_SHAPES = [(16, 64, 112, 112), (16, 64, 56, 56), (16, 128, 28, 28), (16, 256, 14, 14),
             (16, 512, 7, 7)]
POOLS = [("max 3x3 s2 p1", (16, 64, 112, 112),
          dict(kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max")),
         ("global avg", (16, 512, 7, 7), dict(kernel=(7, 7), pool_type="avg", global_pool=True))]


def _best(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _case(op: str, ins: list[np.ndarray], n_in: int, attrs: dict, reps: int):
    """(compiled seconds, reference seconds) of one ``op`` node; the first ``n_in`` arrays
    are graph inputs, the rest parameters (BatchNorm's moving statistics)."""
    b = GraphBuilder(op)
    vals = [b.input(TensorType(a.shape, a.dtype.name), f"i{k}") for k, a in enumerate(ins[:n_in])]
    vals += [b.param(TensorType(a.shape, a.dtype.name), f"p{k}")
             for k, a in enumerate(ins[n_in:])]
    outs = b.emit(op, vals, **attrs)
    graph = run_pipeline(b.build(list(outs)), ["infer_shapes", "plan_memory"])
    fn = cpu.compile(graph)
    assert not any(k.startswith("fallback") for k in fn.report), fn.report
    ref = get_op(op).compute
    ref_attrs = dict(graph.nodes[0].attr_dict)
    return (_best(lambda: fn(ins[:n_in], ins[n_in:]), reps),
            _best(lambda: ref(ins, ref_attrs), reps))


def _chain_backward(g: np.ndarray, x: np.ndarray, gamma: np.ndarray, reps: int) -> float:
    """Seconds of BatchNorm's training-mode gradient as the former small-op rule, compiled."""
    b = GraphBuilder("bn_chain")
    gv, xv, wv = (b.input(TensorType(a.shape, "float32"), n)
                  for a, n in ((g, "g"), (x, "x"), (gamma, "gamma")))
    gs = Sym(gv) * F.reshape(Sym(wv), shape=(1, -1, 1, 1))
    dx, xhat = _norm_dx(F, Sym(xv), gs, (0, 2, 3), 1e-5)
    outs = [dx._value, F.sum(Sym(gv) * xhat, axis=1, exclude=True)._value,
            F.sum(Sym(gv), axis=1, exclude=True)._value]
    graph = Graph("bn_chain", [gv, xv, wv], [], topo_nodes(outs), outs, {})
    graph = run_pipeline(graph, ["infer_shapes", "simplify", "fuse", "plan_memory"])
    fn = cpu.compile(graph)
    return _best(lambda: fn([g, x, gamma], []), reps)


def main(argv=None) -> None:
    """Print one line per layer: compiled ms, NumPy ms, and their ratio."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    cache.install()
    rng = np.random.default_rng(0)
    rows, chain = [], []
    for shape in BN_SHAPES:
        c = shape[1]
        x = rng.standard_normal(shape, np.float32)
        g = rng.standard_normal(shape, np.float32)
        gamma, beta = np.ones(c, np.float32), np.zeros(c, np.float32)
        mm, mv = np.zeros(c, np.float32), np.ones(c, np.float32)
        bn = dict(fix_gamma=False, eps=1e-5, is_train=True)
        rows.append((f"BN fwd train {shape}", *_case("batch_norm", [x, gamma, beta, mm, mv],
                                                     3, bn, args.reps)))
        tc, tr = _case("batch_norm_backward", [g, x, gamma, mm, mv], 5,
                       dict(fix_gamma=False, eps=1e-5, train=True), args.reps)
        rows.append((f"BN bwd train {shape}", tc, tr))
        chain.append((shape, tc, _chain_backward(g, x, gamma, args.reps)))
    for name, shape, at in POOLS:
        x = rng.standard_normal(shape, np.float32)
        rows.append((f"pool fwd {name} {shape}", *_case("pooling", [x], 1, at, args.reps)))
        out = get_op("pooling").compute([x], {**get_op("pooling").attrs, **at})
        gy = rng.standard_normal(out.shape, np.float32)
        rows.append((f"pool bwd {name} {shape}",
                     *_case("pooling_backward", [gy, x], 2, at, args.reps)))
    tot_c = tot_r = 0.0
    for name, tc, tr in rows:
        tot_c, tot_r = tot_c + tc, tot_r + tr
        print(f"{name:44s} compiled {tc * 1e3:8.2f} ms  numpy {tr * 1e3:8.2f} ms  "
              f"speedup {tr / tc:6.2f}x")
    print(f"{'all layers above':44s} compiled {tot_c * 1e3:8.2f} ms  numpy {tot_r * 1e3:8.2f} ms"
          f"  speedup {tot_r / tot_c:6.2f}x")
    for shape, tc, tch in chain:
        print(f"BN bwd {str(shape):37s} kernel {tc * 1e3:8.2f} ms  small ops compiled "
              f"{tch * 1e3:8.2f} ms  speedup {tch / tc:6.2f}x")


if __name__ == "__main__":
    main()
