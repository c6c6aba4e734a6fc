"""Test settings: hypothesis profiles sized for a 2-core CI machine; the real-MXNet peer."""
import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Compiled programs run their compiled kernels from the first call, whatever the kernel cache
# holds: deterministic numbers and numba work, on a fresh machine as on a warm one. The
# background compiles (backends/cpu_tiered.py, runtime/precompile.defer_small) have their
# own tests, which turn them on.
os.environ.setdefault("EMBER_DEFER_KERNELS", "0")
# ... and compile their kernels themselves: the install's prebuilt kernels
# (runtime/prebuilt.py) are not adopted, but by the tests of that
os.environ["EMBER_PREBUILT"] = "0"

# Real MXNet 1.9.1 for the file round-trip tests: `make test` installs it in .venv-mxnet
_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO_MXNET = os.path.join(os.path.dirname(_HERE), ".venv-mxnet", "bin", "python")
os.environ.setdefault("EMBER_TEST_MXNET_PYTHON",
                      _REPO_MXNET if os.path.exists(_REPO_MXNET) else "/tmp/mxvenv/bin/python")


def pytest_collection_modifyitems(config, items):
    """CUDA simulator modules run in their own subprocess (tests/cuda_sim.py says how)."""
    from cuda_sim import select_items
    select_items(config, items)
