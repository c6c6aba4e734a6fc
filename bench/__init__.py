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
    "dist": "bench.dist:main",  # 1 process x 2 threads vs 2 MPI ranks; allreduce GB/s
}
