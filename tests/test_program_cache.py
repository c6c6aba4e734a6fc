"""The whole-program cache: a warm process runs no pass and compiles no kernel; damaged
entries are discarded and rebuilt; identical layers share their kernels."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ember import compile_cache, nd
from ember.gluon import cached_op, nn
from ember.ir.printer import print_graph
from ember.runtime import program_cache as pc

# one process: train a hybridized net one step; report what ran
SCRIPT = """
import json
import numpy as np
from numba.core import event
import ember as mx
import ember.passes
from ember import autograd, gluon, nd
from ember.gluon import nn
from ember.runtime import program_cache

runs = []
real = ember.passes.run_pipeline
ember.passes.run_pipeline = lambda g, *a, **k: runs.append(g.name) or real(g, *a, **k)
compiled = []

class Count(event.Listener):
    def on_start(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__module__)
    def on_end(self, ev):
        pass
event.register("numba:compile", Count())

net = nn.HybridSequential()
net.add(nn.Dense(16, activation="tanh"), nn.Dense(4))
net.initialize(mx.init.Constant(0.05))
net.hybridize()
x = nd.array(np.linspace(-1, 1, 24, dtype=np.float32).reshape(3, 8))
with autograd.record():
    loss = (net(x) ** 2).sum()
loss.backward()
grads = [float(p.grad().asnumpy().sum()) for p in net.collect_params().values()]
print(json.dumps({"loss": float(loss.asnumpy().sum()), "grads": grads, "passes": len(runs),
                  "numba": sum(m.startswith("ember_kernels.") for m in compiled),
                  "stats": dict(program_cache.STATS)}))
"""


def _run(cache_dir, **env):
    # (programs compiled from their first run: a warm process then compiles nothing)
    env = dict(os.environ, EMBER_CACHE_DIR=str(cache_dir), EMBER_DEFER_KERNELS="0", **env)
    res = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_a_warm_process_runs_no_pass_and_compiles_nothing(tmp_path):
    cold = _run(tmp_path)
    assert cold["passes"] > 0 and cold["numba"] > 0
    assert cold["stats"].get("stored", 0) >= 2 and not cold["stats"].get("hit")
    assert len(list(tmp_path.glob("program_*.ir"))) == cold["stats"]["stored"]
    warm = _run(tmp_path)
    assert warm["passes"] == 0 and warm["numba"] == 0
    assert warm["stats"] == {"hit": cold["stats"]["stored"]}
    assert warm["loss"] == cold["loss"] and warm["grads"] == cold["grads"]
    off = _run(tmp_path, EMBER_PROGRAM_CACHE="0")  # switched off: passes run again
    assert off["passes"] > 0 and off["stats"] == {} and off["grads"] == cold["grads"]
    # EMBER_DUMP prints the IR after passes: a warm entry must not skip them silently
    dump = _run(tmp_path, EMBER_DUMP="fuse")
    assert dump["passes"] > 0 and dump["stats"] == {} and dump["grads"] == cold["grads"]


def _graph():
    net = nn.HybridSequential()
    net.add(nn.Dense(6, activation="relu"), nn.Dense(2))
    net.initialize()
    x = nd.array(np.ones((2, 5), np.float32))
    net(x)
    graph, _, _ = cached_op.trace(net.forward, [x], "net", cached_op.block_params_by_value(net))
    return compile_cache.optimize(graph, cached_op.FORWARD_PASSES, "cpu")


def _entry(tmp_path):
    files = list(tmp_path.glob("program_*.ir"))
    assert len(files) == 1
    return files[0]


@pytest.mark.parametrize("damage", ["truncate", "flip", "bad_ir", "group_writable", "symlink"])
def test_a_damaged_entry_is_discarded_and_rebuilt(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path))
    with monkeypatch.context() as m:
        m.setenv("EMBER_CACHE_DIR", str(tmp_path / "scratch"))
        graph = _graph()   # optimised elsewhere: only the lowering's entry lands here
    want = print_graph(compile_cache.lower(graph, cached_op.LOWERING_PASSES, "cpu"))
    path = _entry(tmp_path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[:len(data) // 2])
    elif damage == "flip":
        path.write_bytes(data[:-40] + bytes([data[-40] ^ 1]) + data[-39:])
    elif damage == "bad_ir":  # a correct hash line over text that is not a program
        body = json.dumps({"graphs": ["graph g( {"], "extra": {}})
        path.write_text(f"{pc._MAGIC}{pc.hashlib.sha256(body.encode()).hexdigest()}\n{body}")
    elif damage == "group_writable":
        path.chmod(0o664)
    else:
        other = tmp_path / "elsewhere.ir"
        other.write_bytes(data)
        path.unlink()
        path.symlink_to(other)
    before = dict(pc.STATS)
    got = compile_cache.lower(graph, cached_op.LOWERING_PASSES, "cpu")
    assert pc.STATS["discarded"] == before.get("discarded", 0) + 1
    assert pc.STATS["stored"] == before.get("stored", 0) + 1
    assert pc._strip_timings(print_graph(got)) == pc._strip_timings(want)
    assert not path.is_symlink() and path.stat().st_mode & 0o022 == 0
    again = compile_cache.lower(graph, cached_op.LOWERING_PASSES, "cpu")   # now a hit
    assert pc.STATS["hit"] == before.get("hit", 0) + 1
    assert pc._strip_timings(print_graph(again)) == pc._strip_timings(want)


def test_key_follows_the_code_that_made_the_entry(tmp_path):
    (tmp_path / "a.py").write_text("X = 1\n")
    first = pc.code_fingerprint([tmp_path])
    pc._FINGERPRINTS.clear()
    (tmp_path / "a.py").write_text("X = 2\n")
    assert pc.code_fingerprint([tmp_path]) != first
    k = pc.key("graph g() {\n}", "lower:fuse", "cpu", first)
    assert k != pc.key("graph g() {\n}", "lower:fuse", "cpu", "other code")
    assert k != pc.key("graph g() {\n}", "lower:plan_memory", "cpu", first)
    assert k == pc.key("graph g() {\n}\n# meta: pass_ms.fuse=1.5", "lower:fuse", "cpu", first)


def _stack_kernels(tmp_path, monkeypatch, depth: int, widen: int = 0) -> int:
    """Kernel modules written for a hybridized stack of ``depth`` conv blocks, each
    ``widen`` channels wider than the one before (forward and backward built, nothing run,
    so numba compiles nothing)."""
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path))
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, 3, padding=1, in_channels=3), nn.Activation("relu"))
    c = 4
    for _ in range(depth):
        net.add(nn.Conv2D(c + widen, 3, padding=1, in_channels=c),
                nn.BatchNorm(in_channels=c + widen), nn.Activation("relu"))
        c += widen
    net.add(nn.Dense(3, in_units=c * 6 * 6))
    net.initialize()
    x = nd.array(np.ones((2, 3, 6, 6), np.float32))
    graph, _, _ = cached_op.trace(net.forward, [x], "net", cached_op.block_params_by_value(net))
    graph = compile_cache.optimize(graph, cached_op.FORWARD_PASSES, "cpu")
    cached_op.compile_split(graph, 1, list(graph.params), "cpu")
    return len(list(tmp_path.glob("cpu_*.py")))


def test_identical_layers_share_their_kernels(tmp_path, monkeypatch):
    from ember.backends import cpu_steps
    monkeypatch.setattr(cpu_steps, "_KERNELS", {})  # count every module this test needs
    shallow = _stack_kernels(tmp_path / "d2", monkeypatch, 2)
    monkeypatch.setattr(cpu_steps, "_KERNELS", {})
    deep = _stack_kernels(tmp_path / "d8", monkeypatch, 8)
    monkeypatch.setattr(cpu_steps, "_KERNELS", {})
    widening = _stack_kernels(tmp_path / "w8", monkeypatch, 8, widen=2)
    assert 0 < deep == shallow == widening  # kernel sources do not embed shapes


STEP = """
import json
import numpy as np
import ember
import ember.passes
from ember import autograd, gluon, nd
from ember.gluon import nn
from ember.runtime import program_cache

runs = []
real = ember.passes.run_pipeline
ember.passes.run_pipeline = lambda g, *a, **k: runs.append(g.name) or real(g, *a, **k)
net = nn.Dense(3, in_units=4)
net.initialize(ember.init.Constant(0.1))
trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})

@ember.compile
def step(x):
    with autograd.record():
        loss = (net(x) ** 2).sum()
    loss.backward()
    trainer.step(2)
    return loss

x = nd.array(np.arange(8, dtype=np.float32).reshape(2, 4))
loss = float(step(x).asnumpy().sum())
print(json.dumps({"loss": loss, "w": float(net.weight.data().asnumpy().sum()),
                  "passes": len(runs), "stats": dict(program_cache.STATS)}))
"""


def test_a_compiled_training_step_is_cached_too(tmp_path):
    env = dict(os.environ, EMBER_CACHE_DIR=str(tmp_path))
    out = []
    for _ in range(2):
        res = subprocess.run([sys.executable, "-c", STEP], env=env, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        out.append(json.loads(res.stdout.strip().splitlines()[-1]))
    cold, warm = out
    assert cold["passes"] > 0 and cold["stats"] == {"miss": 1, "stored": 1}
    assert warm["passes"] == 0 and warm["stats"] == {"hit": 1}
    assert warm["loss"] == cold["loss"] and warm["w"] == cold["w"]


def test_a_graph_with_an_object_attribute_is_not_cached(tmp_path, monkeypatch):
    from ember.ir.graph import GraphBuilder
    from ember.ir.types import TensorType
    monkeypatch.setenv("EMBER_CACHE_DIR", str(tmp_path))
    b = GraphBuilder("g")
    x = b.input(TensorType((2, 3), "float32"), "x")
    (y,) = b.emit("relu", [x])
    plain = b.build([y])
    assert pc.cacheable(plain)
    node = plain.nodes[0]
    node.attrs = (("table", np.arange(2000.0)),)   # prints as a summary: "[0. 1. ... 1999.]"
    assert not pc.cacheable(plain)
    before = dict(pc.STATS)
    built = []
    graphs, _ = pc.cached(plain, "test", "cpu", [], lambda: (built.append(1) or [plain], {}))
    assert built and graphs[0] is plain and not list(tmp_path.glob("program_*.ir"))
    assert pc.STATS["uncacheable"] == before.get("uncacheable", 0) + 1
