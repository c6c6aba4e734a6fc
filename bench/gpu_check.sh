#!/usr/bin/env bash
# The GPU checks of issue 14, for a person on a machine with an NVIDIA GPU. Installs nothing:
# run it from the repository with ember installed with its cuda extra
# (`pip install -e '.[test,cuda]'`, PyTorch/JAX optional for the peers), e.g.
#   bench/gpu_check.sh                   # or PYTHON=/path/to/python bench/gpu_check.sh
# It prints the device, the `gpu`-marked tests (real device, real sizes) and the GPU
# benchmark with its ratios and targets; the exit status is the tests' (or the benchmark's).
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
unset NUMBA_ENABLE_CUDASIM   # the real device, never the simulator

echo "== device"
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi || echo "(no nvidia-smi on PATH)"
"$PY" - <<'PYEOF'
import ember as mx
from ember.backends import cuda_device
print("ember sees", mx.context.num_gpus(), "GPU(s)", cuda_device.unavailable_reason())
PYEOF

echo "== pytest -m gpu"
"$PY" -m pytest -m gpu -v -rs tests
tests=$?

echo "== python -m bench gpu"
"$PY" -m bench gpu "$@"
bench=$?

echo "== gpu_check: tests exit $tests, bench exit $bench"
[ "$tests" -eq 0 ] && exit "$bench"
exit "$tests"
