"""runtime/cuda_graph: a compiled CUDA program captured once and replayed.

Under numba's CUDA simulator (its own pytest subprocess, tests/cuda_sim.py) the runner's
slots, copies, keys and warm-up run are tested with the recorded launch sequence standing in
for the graph; ``-m gpu`` tests capture real CUDA graphs (numba-cuda kernels and cuBLAS on
ember's stream) and check replays against direct runs.
"""
import numpy as np
import pytest
from cuda_sim import simulator_module

from ember.backends import reference
from ember.ir.graph import GraphBuilder
from ember.ir.types import TensorType

CUDA_SIMULATOR_MODULE = True
# the simulator runs kernels as Python: NumPy scalars warn where a device wraps (uint64 hash)
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in scalar:RuntimeWarning")
test_cuda_simulator_subprocess = simulator_module(__file__)
F32 = "float32"


def _rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(F32)


def _sgd_graph():
    b = GraphBuilder("sgd")
    w = b.param(TensorType((5, 3), F32), "w")
    g = b.input(TensorType((5, 3), F32), "g")
    mom = b.param(TensorType((5, 3), F32), "mom")
    (r,) = b.emit("relu", [g])
    (new_w,) = b.emit("sgd_mom_update", [w, r, mom], lr=0.1, momentum=0.9)
    (s,) = b.emit("sum", [new_w], axis=None)
    return b.build([new_w, s])


def test_replays_match_direct_runs_and_mutate_once_per_call():
    from ember.backends import cuda
    from ember.backends import cuda_device as cd
    from ember.runtime.cuda_graph import GraphRunner, graphed
    graph = _sgd_graph()
    run = cuda.compile(graph)
    runner = graphed(run)
    assert isinstance(runner, GraphRunner)
    w, mom = _rand((5, 3)), _rand((5, 3), 1)
    dw, dmom = cd.to_device(w), cd.to_device(mom)
    ref_w, ref_mom = w.copy(), mom.copy()
    seen = []
    for step in range(3):
        g = _rand((5, 3), 2 + step)
        outs = runner([cd.to_device(g)], [dw, dmom])
        want = reference.run_graph(graph, [g], [ref_w, ref_mom])
        ref_w = want[0].copy()
        cd.copy_into(dw, outs[0])  # the caller writes the new weight back, as Trainer does
        for o, e in zip(outs, want):
            np.testing.assert_allclose(cd.to_host(o), e, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(cd.to_host(dmom), ref_mom, rtol=1e-5, atol=1e-6)
        assert all(o is not s for o in outs for s in runner._slots_out)
        seen += outs
    assert runner.captures == 1
    assert len({id(o) for o in seen}) == len(seen)  # fresh arrays every call


def test_new_parameter_arrays_capture_again():
    from ember.backends import cuda
    from ember.backends import cuda_device as cd
    from ember.runtime.cuda_graph import GraphRunner
    graph = _sgd_graph()
    runner = GraphRunner(cuda.compile(graph))
    g = cd.to_device(_rand((5, 3), 3))
    a = [cd.to_device(_rand((5, 3))), cd.to_device(_rand((5, 3), 1))]
    b = [cd.to_device(_rand((5, 3), 4)), cd.to_device(_rand((5, 3), 5))]
    runner([g], a)
    out_b = runner([g], b)
    runner([g], a)
    assert runner.captures == 2
    want = reference.run_graph(graph, [_rand((5, 3), 3)], [_rand((5, 3), 4), _rand((5, 3), 5)])
    np.testing.assert_allclose(cd.to_host(out_b[0]), want[0], rtol=1e-5, atol=1e-6)


def test_replays_draw_new_dropout_masks():
    """The dropout step count lives on the device, so each replay draws a new mask."""
    from ember.backends import cuda
    from ember.backends import cuda_device as cd
    from ember.runtime.cuda_graph import GraphRunner
    b = GraphBuilder("drop")
    x = b.input(TensorType((32, 16), F32), "x")
    runner = GraphRunner(cuda.compile(b.build(b.emit("dropout", [x], p=0.5,
                                                     is_train=True)[1:])))
    xs = cd.to_device(np.ones((32, 16), np.float32))
    masks = [cd.to_host(runner([xs], [])[0]) for _ in range(3)]
    assert runner.captures == 1
    assert (masks[0] != masks[1]).any() and (masks[1] != masks[2]).any()


def test_programs_with_a_round_trip_are_not_captured_on_a_device():
    from ember.runtime.cuda_graph import graphed

    def run(inputs, params):
        return []
    run.capturable, run.simulator = False, False
    assert graphed(run) is run


def test_a_refused_capture_warns_once_and_runs_kernel_by_kernel(monkeypatch):
    """Where the driver refuses the capture (in both modes), the runner keeps the warm-up
    run's results and runs the program directly from then on."""
    from ember.backends import cuda
    from ember.backends import cuda_device as cd
    from ember.runtime import cuda_graph
    graph = _sgd_graph()
    prog = cuda.compile(graph)

    def run(inputs, params):
        return prog(inputs, params)
    for name in ("steps", "new_outputs", "lock", "check_inputs", "check_params", "stream",
                 "device_id", "report", "output_types"):
        setattr(run, name, getattr(prog, name))
    run.capturable, run.simulator = True, False  # as on a device

    def refuse(launch, stream, mode):
        raise cuda_graph.EmberError(f"capture refused in {mode}")
    monkeypatch.setattr(cuda_graph, "CudaGraph", refuse)
    runner = cuda_graph.GraphRunner(run)
    monkeypatch.setattr(cuda_graph, "device_ptr", lambda a: a.__array_interface__["data"][0])
    g, w, mom = _rand((5, 3), 3), _rand((5, 3)), _rand((5, 3), 1)
    dev = [cd.to_device(w), cd.to_device(mom)]
    with pytest.warns(RuntimeWarning, match="THREAD_LOCAL.*RELAXED"):
        first = runner([cd.to_device(g)], dev)
    second = runner([cd.to_device(g)], dev)
    ref = [w.copy(), mom.copy()]
    want1 = reference.run_graph(graph, [g], ref)
    want2 = reference.run_graph(graph, [g], ref)
    np.testing.assert_allclose(cd.to_host(first[0]), want1[0], rtol=1e-5)
    np.testing.assert_allclose(cd.to_host(second[0]), want2[0], rtol=1e-5)
    assert runner.captures == 0 and runner._direct


def test_executable_on_cuda_replays():
    from ember.backends import cuda_device as cd
    from ember.runtime.cuda_graph import GraphRunner
    from ember.runtime.executable import Executable
    graph = _sgd_graph()
    exe = Executable(graph, "cuda")
    assert isinstance(exe._fn, GraphRunner)
    g, w, mom = _rand((5, 3), 3), _rand((5, 3)), _rand((5, 3), 1)
    outs = exe.run([cd.to_device(g)], [cd.to_device(w), cd.to_device(mom)])
    want = reference.run_graph(graph, [g], [w, mom])
    np.testing.assert_allclose(cd.to_host(outs[1]), want[1], rtol=1e-5)


# ---- on a real device (pytest -m gpu) --------------------------------------------------
@pytest.mark.gpu
def test_gpu_mlp_training_step_captured_once_replays_exactly():
    """The fused, planned MLP forward+backward with cuBLAS GEMMs and the momentum update,
    captured into one CUDA graph: each replay equals a direct run of the same program."""
    from ember.backends import cuda
    from ember.backends import cuda_device as cd
    from ember.passes import run_pipeline
    from ember.runtime.cuda_graph import CudaGraph, GraphRunner
    b = GraphBuilder("mlp")
    x = b.input(TensorType((128, 784), F32), "x")
    w0 = b.param(TensorType((256, 784), F32), "w0")
    b0 = b.param(TensorType((256,), F32), "b0")
    w1 = b.param(TensorType((10, 256), F32), "w1")
    (h,) = b.emit("fully_connected", [x, w0, b0], num_hidden=256)
    (h,) = b.emit("relu", [h])
    (z,) = b.emit("fully_connected", [h, w1], num_hidden=10, no_bias=True)
    (p,) = b.emit("log_softmax", [z], axis=-1)
    (loss,) = b.emit("mean", [p])
    joint = run_pipeline(b.build([loss]), grad=True, head_grads="ones")
    params = [_rand(v.type.shape, i) * 0.05 for i, v in enumerate(joint.params)]
    direct, graphed_run = cuda.compile(joint), GraphRunner(cuda.compile(joint))
    assert direct.capturable and "gemm[cublas]+epilogue" in direct.report
    dev = [cd.to_device(p) for p in params]
    for step in range(3):
        xs = cd.to_device(_rand((128, 784), 10 + step))
        want = [cd.to_host(o) for o in direct([xs], dev)]
        got = [cd.to_host(o) for o in graphed_run([xs], dev)]
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    assert graphed_run.captures == 1
    assert all(isinstance(g, CudaGraph) for g in graphed_run._graphs.values())
    graphed_run.close()


@pytest.mark.gpu
def test_gpu_captured_updates_mutate_parameters_like_direct_runs():
    from ember.backends import cuda
    from ember.backends import cuda_device as cd
    from ember.runtime.cuda_graph import GraphRunner
    graph = _sgd_graph()
    runner, direct = GraphRunner(cuda.compile(graph)), cuda.compile(graph)
    pa = [cd.to_device(_rand((5, 3))), cd.to_device(_rand((5, 3), 1))]
    pb = [cd.to_device(_rand((5, 3))), cd.to_device(_rand((5, 3), 1))]
    for step in range(4):
        g = cd.to_device(_rand((5, 3), 2 + step))
        ga, da = runner([g], pa), direct([g], pb)
        np.testing.assert_array_equal(cd.to_host(ga[0]), cd.to_host(da[0]))
        np.testing.assert_array_equal(cd.to_host(pa[1]), cd.to_host(pb[1]))
    assert runner.captures == 1
