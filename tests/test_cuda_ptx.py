"""Every kernel the CUDA backend generates for a device compiles to PTX for sm_90.

The simulator runs kernels as Python, so it cannot catch what only numba-cuda's typing and
NVVM see. Here programs are planned for a (pretend) device in the main process, their
launches intercepted and each kernel compiled with ``numba.cuda.compile_ptx`` for the
argument types of its launch (NVVM from the ``cuda`` extra; no GPU needed). Skipped where
numba-cuda or NVVM is missing; ``slow`` (NVVM takes seconds): ``pytest -m slow`` runs them.
"""
import contextlib

import numpy as np
import pytest


def _nvvm_works() -> bool:
    import numba
    from numba import cuda
    try:
        cuda.compile_ptx(lambda a: None, (numba.float32[::1],), cc=(9, 0))
        return True
    except Exception:
        return False


class _Compile:
    """A kernel whose launches compile it to PTX for their argument types."""

    failures: list = []
    compiled: set = set()

    def __init__(self, source, fn):
        self.source, self.fn = source, fn

    def __getitem__(self, config):
        return self

    def __call__(self, *args):
        import numba
        from numba import cuda
        sig = tuple(numba.typeof(a) for a in args)
        if (self.source, sig) in _Compile.compiled:
            return
        _Compile.compiled.add((self.source, sig))
        try:
            cuda.compile_ptx(self.fn.py_func, sig, cc=(9, 0))
        except Exception as e:
            _Compile.failures.append((sig, f"{type(e).__name__}: {e}", self.source))


@pytest.fixture
def pretend_device(monkeypatch):
    """Plan programs for a device that is not there: NumPy arrays for device memory, the
    tiled GEMM (no cuBLAS), launches compiled instead of run."""
    pytest.importorskip("numba.cuda")
    if not _nvvm_works():
        pytest.skip("numba-cuda cannot reach NVVM")
    from numba import cuda

    from ember.backends import cuda as backend
    from ember.backends import (
        cuda_blas,
        cuda_conv,
        cuda_depthwise,
        cuda_kernels,
        cuda_layout,
        cuda_norm_pool,
        cuda_optim,
        cuda_random,
        cuda_steps,
    )
    from ember.backends import cuda_device as cd
    real = cuda_kernels.kernel
    fake = lambda source: _Compile(source, real(source))  # noqa: E731
    for mod in (backend, cuda_blas, cuda_conv, cuda_depthwise, cuda_kernels, cuda_layout,
                cuda_norm_pool, cuda_optim, cuda_random, cuda_steps):
        if hasattr(mod, "kernel"):
            monkeypatch.setattr(mod, "kernel", fake)

    class Stream:
        handle = 0
    for name, fn in dict(cuda_module=lambda: cuda, is_simulator=lambda: False,
                         stream=lambda device_id=0: Stream(),
                         empty=lambda shape, dtype, device_id=0: np.empty(shape, dtype),
                         device=lambda device_id=0: contextlib.nullcontext(),
                         to_device=lambda a, device_id=0: np.array(a),
                         to_host=np.array, copy_into=np.copyto,
                         is_device_array=lambda a: isinstance(a, np.ndarray)).items():
        monkeypatch.setattr(cd, name, fn)
    monkeypatch.setattr(cuda_blas, "cublas_gemm", lambda *a, **k: None)
    monkeypatch.setattr(backend, "_checker",
                        lambda graph, values, what, device_id: lambda arrays: list(arrays))
    _Compile.failures.clear()
    return backend


def _run(backend, graph, inputs, params=()):
    backend.compile(graph)([np.asarray(a) for a in inputs], [np.array(p) for p in params])


def _assert_compiled():
    msgs = [f"{sig}: {err}\n{src}" for sig, err, src in _Compile.failures[:3]]
    assert not _Compile.failures, "\n\n".join(msgs)


@pytest.mark.slow
def test_every_template_compiles_in_one_device_kernel(pretend_device):
    """All scalar templates, float32 and float64, as the chains of one elementwise kernel
    per dtype (what a fused group compiles to)."""
    from ember.backends import codegen
    from ember.backends.cuda_kernels import ewise_source, kernel
    from ember.ir.graph import GraphBuilder
    from ember.ir.ops import all_ops
    from ember.ir.types import TensorType
    for dt in ("float32", "float64"):
        b = GraphBuilder("templates")
        xs = [b.input(TensorType((8,), dt), f"x{i}") for i in range(2)]
        outs = []
        for name, op in sorted(all_ops().items()):
            if codegen.template_of(op) is None or name in ("zeros_like", "ones_like") \
                    or op.kind.name == "BROADCAST" and len(op.inputs) == 1:
                continue
            attrs = {"scalar": 0.75} if "scalar" in op.attrs else {}
            attrs.update({"clip": dict(a_min=-0.5, a_max=0.8), "cast": dict(dtype=dt),
                          "activation": dict(act_type="softrelu")}.get(name, {}))
            outs.append(b.emit(name, xs[:2 if len(op.inputs) == 2 else 1], **attrs)[0])
        nodes = [v.producer for v in outs]
        src = ewise_source(nodes, xs, [[False], [False]], outs, 1, sim=False)
        arr = np.zeros(8, dt)
        kernel(src)[1, 32](*([arr] * (2 + len(outs))))
    _assert_compiled()


@pytest.mark.slow
def test_training_graph_kernels_compile(pretend_device):
    """The kernels of an MLP's and a conv-BatchNorm-pool block's forward+backward with their
    updates, reductions, softmax, pick, layout ops and device dropout."""
    from ember.ir.graph import GraphBuilder
    from ember.ir.types import TensorType
    from ember.passes import run_pipeline
    f32 = "float32"
    b = GraphBuilder("net")
    x = b.input(TensorType((4, 2, 6, 6), f32), "x")
    w = b.param(TensorType((3, 2, 3, 3), f32), "w")
    dw = b.param(TensorType((3, 1, 3, 3), f32), "dw")
    ps = [b.param(TensorType((3,), f32), n) for n in ("gamma", "beta", "mm", "mv")]
    fc = b.param(TensorType((5, 3), f32), "fc")
    (h,) = b.emit("convolution", [x, w], kernel=(3, 3), num_filter=3, pad=(1, 1),
                  no_bias=True)
    (h,) = b.emit("convolution", [h, dw], kernel=(3, 3), num_filter=3, num_group=3,
                  pad=(1, 1), no_bias=True)
    (h,) = b.emit("batch_norm", [h, *ps], fix_gamma=False, is_train=True)
    (h,) = b.emit("relu", [h])
    (h,) = b.emit("pooling", [h], kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max")
    (h,) = b.emit("pooling", [h], kernel=(2, 2), stride=(2, 2), pool_type="avg")
    (h,) = b.emit("flatten", [h])
    (h,) = b.emit("dropout", [h], p=0.5, is_train=True)[:1]
    (z,) = b.emit("fully_connected", [h, fc], num_hidden=5, no_bias=True)
    (p,) = b.emit("log_softmax", [z], axis=-1)
    (loss,) = b.emit("mean", [p])
    joint = run_pipeline(b.build([loss]), grad=True, head_grads="ones")
    params = [np.ones(v.type.shape, v.type.dtype) for v in joint.params]
    _run(pretend_device, joint, [np.ones((4, 2, 6, 6), np.float32)], params)
    gb = GraphBuilder("ops")
    a = gb.input(TensorType((3, 4), f32), "a")
    idx = gb.input(TensorType((3,), "int64"), "idx")
    m = gb.param(TensorType((3, 4), f32), "m")
    hy = gb.param(TensorType((1,), "float64"), "hy")  # a learning rate fed at run time
    outs = [gb.emit("transpose", [a])[0], gb.emit("concat", [a, a], dim=0)[0],
            gb.emit("take", [a, idx], axis=1)[0], gb.emit("pick", [a, idx])[0],
            gb.emit("slice", [a], begin=(1,), end=(3,))[0],
            gb.emit("cast", [a], dtype="int32")[0], gb.emit("add_n", [a, a, a])[0],
            gb.emit("sgd_mom_update", [a, a, m], lr=0.1, momentum=0.9, wd=0.1)[0],
            gb.emit("adam_update", [a, a, m, m], lr=0.1)[0],
            gb.emit("sgd_update", [a, a, hy], lr=0.0, wd=0.1, hyper=("lr",))[0],
            gb.emit("sgd_mom_update", [a, a, m, hy], lr=0.0, momentum=0.9, wd=0.1,
                    hyper=("lr",))[0],
            gb.emit("adam_update", [a, a, m, m, hy], lr=0.0, hyper=("lr",))[0]]
    _run(pretend_device, gb.build(outs), [np.ones((3, 4), np.float32), np.zeros(3, np.int64)],
         [np.ones((3, 4), np.float32), np.array([0.1])])
    _assert_compiled()
    assert len(_Compile.compiled) > 30
