"""ember's benchmarks against its peers (NumPy, PyTorch when installed): ``python -m bench``.

Not installed and not collected by pytest. Each module in ``BENCHMARKS`` has
``main(argv) -> int``.
"""

BENCHMARKS = {
    "op_overhead": "bench.op_overhead",  # eager dispatch cost of tiny ops, and a 256^2 matmul
}
