"""One measurement in a fresh process: ``python -m bench.worker FW WORKLOAD VARIANT DATA OPTS``.

FW is numpy, ember, mxnet, torch or jax; WORKLOAD is mlp (train + infer), first_step (mlp,
build and first step only: the warm-cache run), lenet (train), elemwise or gemm (with
``model`` in OPTS, convnet and first_step run ``bench.convnets``); DATA is the ``.npz`` from
``bench.data.prepare`` ('-' when unused); OPTS a JSON object (``plan``, ``repeat``,
``backend``). Prints one marked JSON line (``bench.common.emit``). A fresh process
per measurement gives each framework its own peak RSS, a cold start, and its own imports.
"""
from __future__ import annotations

import importlib
import json
import sys
import time

from bench.common import THREADS, emit, pin_threads

GEMM_N, ELEMWISE_N = 1024, 4 * 1024 * 1024


def _framework(fw: str):
    """(module with build/elemwise/gemm taking the fw's arguments, version string)."""
    if fw in ("ember", "mxnet"):
        from bench import fw_gluon
        mx = importlib.import_module(fw)

        class Gluon:  # binds the mx module into fw_gluon's functions
            build = staticmethod(lambda *a: fw_gluon.build(mx, *a))
            elemwise = staticmethod(lambda v, x, backend=None: fw_gluon.elemwise(mx, v, x,
                                                                                 backend))
            gemm = staticmethod(lambda *a: fw_gluon.gemm(mx, *a))
        return Gluon, getattr(mx, "__version__", "?")
    mod = importlib.import_module(f"bench.fw_{fw}")
    return mod, mod.framework_version()


def measure(fw: str, workload: str, variant: str, data: str, opts: dict) -> dict:
    """Run one workload for one framework variant; the result dict for the parent."""
    import numpy as np
    tic = time.perf_counter()
    mod, version = _framework(fw)
    res = {"import_s": time.perf_counter() - tic, "version": version}
    repeat = opts.get("repeat", 5)
    if opts.get("model") and workload in ("convnet", "first_step"):
        from bench import convnets
        return {**res, **convnets.measure(fw, workload, variant, opts)}
    if workload in ("mlp", "lenet", "first_step"):
        from bench import data as bdata
        from bench import harness
        d = bdata.load(data)
        model_name = "lenet" if workload == "lenet" else "mlp"
        w = bdata.weights(d, model_name)
        build = lambda: mod.build(model_name, variant, w, opts)  # noqa: E731
        if workload == "first_step":
            return {**res, **harness.first_step(build, d)}
        model, r = harness.train(build, d, opts["plan"], image=workload == "lenet")
        res.update(r, note=getattr(model, "note", ""))
        if workload == "mlp" and not opts.get("train_only"):
            res.update(harness.infer(model, d, repeat))
        return res
    rng = np.random.default_rng(0)
    if workload == "elemwise":
        from bench.harness import elemwise_reference, throughput
        x = rng.standard_normal(ELEMWISE_N).astype(np.float32)
        args = (variant, x) if fw not in ("ember", "mxnet") else (variant, x, opts.get("backend"))
        fn, to_numpy = mod.elemwise(*args)
        out = to_numpy(fn())
        want = x if variant == "copy" else elemwise_reference(x)
        res["max_err"] = float(np.abs(out.astype(np.float64) - want).max())
        res["gbps_best"], res["gbps_median"] = throughput(fn, 2 * x.nbytes, repeat)
        return res
    if workload == "gemm":
        from bench.harness import throughput
        a, b = (rng.standard_normal((GEMM_N, GEMM_N)).astype(np.float32) for _ in range(2))
        fn, to_numpy = mod.gemm(variant, a, b)
        out = to_numpy(fn())
        res["rel_err"] = float(np.abs(out - a.astype(np.float64) @ b).max() / GEMM_N)
        flops = 2 * GEMM_N ** 3  # throughput() divides "bytes" by seconds: here flops
        res["gflops_best"], res["gflops_median"] = throughput(fn, flops, repeat)
        return res
    raise SystemExit(f"unknown workload {workload!r}")


def main(argv: list[str]) -> int:
    """Parse the five arguments, measure, print the marked JSON line."""
    pin_threads(THREADS)
    fw, workload, variant, data, opts = argv
    try:
        emit(measure(fw, workload, variant, data, json.loads(opts)))
    except Exception as e:  # reported to the parent as this row's error
        emit({"error": f"{type(e).__name__}: {str(e)[:400]}"})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
