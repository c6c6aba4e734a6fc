"""ember's benchmarks against its peers (NumPy; PyTorch, JAX, MXNet 1.9.1 when available).

``python -m bench [name ...] [--quick] [--backend cpu] ...``. Not installed and not collected
by pytest. Each entry of ``BENCHMARKS`` is ``"module:function"`` with ``function(argv) ->
int``; the workloads run each framework in a worker process (``bench.worker``).
"""

BENCHMARKS = {
    "mlp": "bench.mlp:main",  # the seed MLP: train/infer/latency/first step/accuracy/RSS
    "lenet": "bench.lenet:main",  # LeNet-5 training
    "elemwise": "bench.kernels:main_elemwise",  # fused elementwise GB/s against a copy
    "gemm": "bench.kernels:main_gemm",  # 1024^3 nd.dot GFLOP/s
    "op_overhead": "bench.op_overhead:main",  # eager dispatch cost of tiny ops, 256^2 matmul
    "resnet": "bench.convbench:main_resnet",  # ResNet-18 v1 224x224: latency, infer, train
    "mobilenet": "bench.convbench:main_mobilenet",  # MobileNet 1.0 inference, batch 16
    "densenet": "bench.convbench:main_densenet",  # DenseNet-121 inference, batch 16
    "firststep": "bench.convbench:main_firststep",  # ResNet-18 first step, cold/warm cache
    "contended": "bench.contended:main",  # MLP training kept beside one busy process
    "dist": "bench.dist:main",  # 1 process x 2 threads vs 2 MPI ranks; allreduce GB/s
    "gpu": "bench.gpu:main",  # CUDA: MLP, latency, fused GB/s, ResNet-18 vs PyTorch/JAX
}
