"""Kernels of a new program compile in worker processes before its first run: the calls
and argument types are found from the generated run loop, the workers' machine code is
what the program then loads, and the numbers do not change."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from numba.core import types

from ember.backends import cpu, cpu_steps
from ember.ir.graph import GraphBuilder
from ember.ir.types import TensorType
from ember.runtime import compile_worker, precompile


def test_argument_types_travel_as_data():
    arr = types.Array(types.float32, 3, "C")
    for t in (arr, types.Array(types.float64, 1, "A", readonly=True), types.int64,
              types.float64, types.boolean):
        assert compile_worker.spec_type(json.loads(json.dumps(compile_worker.type_spec(t)))) == t
    assert compile_worker.type_spec(types.UniTuple(types.int64, 2)) is None
    for bad in (["scalar", "__import__"], ["array", "object", 1, "C", False, True],
                ["array", "float32", 1, "Z", False, True], ["call", "x"]):
        with pytest.raises(ValueError):
            compile_worker.spec_type(bad)


def _graph():
    b = GraphBuilder("g")
    x = b.input(TensorType((64, 32), "float32"), "x")
    w = b.param(TensorType((16, 32), "float32"), "w")
    (h,) = b.emit("fully_connected", [x, w], num_hidden=16, no_bias=True)
    (y,) = b.emit("tanh", [h])
    (z,) = b.emit("broadcast_mul", [y, y])
    (s,) = b.emit("sum", [z], axis=1)
    (m,) = b.emit("softmax", [z], axis=1)
    return b.build([s, m])


def test_found_calls_are_the_calls_the_program_makes(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_steps, "_KERNELS", {})   # new dispatchers: nothing compiled yet
    graph = _graph()
    fn = cpu.compile(graph)
    calls = precompile.kernel_calls(fn.run_fn, graph)
    assert len(calls) >= 3
    assert all(not k.overloads for k, _ in calls)
    fn([np.ones((64, 32), np.float32)], [np.full((16, 32), 0.01, np.float32)])
    for k, sig in calls:   # each kernel was called with exactly the types found
        assert tuple(sig) in k.overloads


def test_a_worker_compiles_what_this_process_then_loads(tmp_path, monkeypatch):
    """A worker process compiles the found calls into the kernel cache; this process then
    loads them, compiling nothing; the worker starts without ember's front end."""
    from numba.core import event
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_steps, "_KERNELS", {})
    graph = _graph()
    fn = cpu.compile(graph)
    calls = precompile.kernel_calls(fn.run_fn, graph)
    jobs = len(precompile._jobs(calls))
    assert jobs >= 3 and precompile.compile_in_worker(calls) == jobs
    with event.install_recorder("numba:compile") as rec:
        fn([np.ones((64, 32), np.float32)], [np.full((16, 32), 0.01, np.float32)])
    assert not [e for _, e in rec.buffer
                if e.data["dispatcher"].py_func.__module__.startswith("ember_kernels.")]
    probe = compile_worker._BOOT.replace("sys.exit(main())", "print(sorted(m for m in sys.modules"
                                     " if m.startswith(('ember.gluon', 'ember.ndarray'))))")
    assert probe != compile_worker._BOOT
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


_CONVS = [  # plain + bias + residual epilogue, chunked; grouped; depthwise; 1x1 strided
    dict(n=3, c=4, f=6, g=1, hw=(7, 6), k=(3, 3), s=(1, 1), p=(1, 1), d=(1, 1), bias=True,
         epi="residual", chunk=1),
    dict(n=2, c=4, f=4, g=2, hw=(6, 6), k=(3, 3), s=(2, 2), p=(0, 1), d=(1, 1), bias=False,
         epi="relu", chunk=2),
    dict(n=2, c=4, f=4, g=4, hw=(8, 8), k=(3, 3), s=(1, 1), p=(1, 1), d=(1, 1), bias=True,
         epi="relu", chunk=2),
    dict(n=2, c=3, f=5, g=1, hw=(6, 5), k=(1, 1), s=(2, 2), p=(0, 0), d=(1, 1), bias=False,
         epi="none", chunk=1)]


@pytest.mark.parametrize("cfg", _CONVS, ids=["residual", "grouped", "depthwise", "1x1"])
def test_conv_steps_tell_their_kernels(tmp_path, monkeypatch, cfg):
    """A convolution step calls its kernels itself (im2col, col2im, the fused epilogue):
    it says which, with what types, so that compiling the found calls leaves nothing for
    the first run to compile."""
    from numba.core import event
    from test_cpu_conv import _chunk_bytes, _conv_graph, _rand

    from ember.passes import run_pipeline
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_steps, "_KERNELS", {})   # new dispatchers: nothing compiled yet
    graph, _, _ = _conv_graph(cfg)
    joint = run_pipeline(graph, grad=True, head_grads="ones")
    out = graph.outputs[0].type.shape
    with _chunk_bytes(cfg["chunk"] * cfg["c"] * 9 * out[2] * out[3] * 4):
        fn = cpu.compile(joint)
    calls = precompile.kernel_calls(fn.run_fn, joint)
    steps = [v for v in fn.run_fn.__globals__.values()   # (not a bias gradient's sum)
             if callable(getattr(v, "kernel_calls", None)) and "deferred" not in v.__qualname__]
    assert len(steps) == 3 and len(calls) >= 2   # forward, dgrad, wgrad (im2col shared)
    for k, sig in calls:
        k.compile(sig)
    with event.install_recorder("numba:compile") as rec:
        fn([_rand(v.type.shape, j) for j, v in enumerate(joint.inputs)],
           [_rand(v.type.shape, 10 + j) for j, v in enumerate(joint.params)])
    compiled = {ev.data["dispatcher"].py_func.__module__ for _, ev in rec.buffer}
    assert not {m for m in compiled if m.startswith("ember_kernels.")}


SCRIPT = """
import json
import numpy as np
from numba.core import event
import ember as mx
from ember import autograd, nd
from ember.gluon import nn
from ember.runtime import precompile
compiled = []

class Count(event.Listener):
    def on_start(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__module__)
    def on_end(self, ev):
        pass
event.register("numba:compile", Count())
net = nn.HybridSequential()
net.add(nn.Conv2D(4, 3, padding=1), nn.BatchNorm(), nn.Activation("relu"), nn.Dense(3))
net.initialize(mx.init.Constant(0.05))
net.hybridize()
x = nd.array(np.linspace(-1, 1, 2 * 3 * 6 * 6, dtype=np.float32).reshape(2, 3, 6, 6))
with autograd.record():
    loss = (net(x) ** 2).sum()
loss.backward()
grads = [float(p.grad().asnumpy().sum()) for p in net.collect_params().values()
         if p.grad_req != "null"]
print(json.dumps({"loss": float(loss.asnumpy().sum()), "grads": grads,
                  "numba": sum(m.startswith("ember_kernels.") for m in compiled),
                  "pre": dict(precompile.STATS)}))
"""


def _run(cache_dir, workers: str):
    env = dict(os.environ, EMBER_CACHE_DIR=str(cache_dir), EMBER_PRECOMPILE=workers)
    res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_workers_compile_what_the_first_run_would_have(tmp_path):
    serial = _run(tmp_path / "serial", "0")
    assert serial["pre"] == {} and serial["numba"] >= precompile.MIN_KERNELS
    parallel = _run(tmp_path / "parallel", "2")
    pre = parallel["pre"]
    # (how the jobs divide depends on how fast the worker starts)
    assert pre["workers"] == 1 and pre["compiled"] >= 1 and pre["here"] >= 1, parallel
    assert pre.get("failed", 0) == 0
    # every kernel compiled once: by the worker (then loaded here), here, or at first call
    assert parallel["numba"] + pre["compiled"] == serial["numba"]
    assert parallel["loss"] == serial["loss"] and parallel["grads"] == serial["grads"]
    warm = _run(tmp_path / "parallel", "2")   # all compiled: no worker is started
    assert warm["pre"] == {} and warm["numba"] == 0 and warm["grads"] == serial["grads"]
