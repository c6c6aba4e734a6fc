"""How the CUDA simulator tests run inside the normal suite without leaking into other tests.

numba reads ``NUMBA_ENABLE_CUDASIM`` once, when it is first imported, and ember counts the
simulator as a device only when the user opted in through that variable; every other test
must keep seeing no GPU (``mx.context.num_gpus() == 0``). So a simulator test module runs in
its own pytest subprocess with ``NUMBA_ENABLE_CUDASIM=1``:

    # tests/test_cuda_something.py
    from cuda_sim import SIM, simulator_module
    CUDA_SIMULATOR_MODULE = True                       # the conftest hook looks for this
    test_cuda_simulator_subprocess = simulator_module(__file__)

    def test_x(): ...                                  # runs only in the subprocess
    @pytest.mark.gpu
    def test_y(): ...                                  # runs in the main process, -m gpu

The conftest hook (:func:`select_items`, called from ``pytest_collection_modifyitems``)
keeps, in such a module, only ``test_cuda_simulator_subprocess`` and the ``gpu``-marked tests
when the suite runs normally, and everything except those when it runs in the simulator
(``SIM``). ``test_cuda_simulator_subprocess`` runs ``pytest <module>`` in a subprocess with
the variable set and fails with the subprocess's output when any test there fails; the
subprocess inherits the marker selection (``-m``) of the parent run and ``-x``/``-k`` are not
passed on. To debug one module directly: ``NUMBA_ENABLE_CUDASIM=1 pytest tests/<module>``.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

SIM = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
_RUNNER = "test_cuda_simulator_subprocess"
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def simulator_module(path: str, timeout: float = 240.0):
    """The runner test of the simulator module at ``path`` (assign it to a module-level name
    ``test_cuda_simulator_subprocess``)."""

    def test_cuda_simulator_subprocess(request):
        if SIM:
            pytest.skip("already under the simulator")
        env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
        env.pop("PYTEST_ADDOPTS", None)
        args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path]
        mark = request.config.getoption("markexpr", "")
        if mark:
            args += ["-m", mark]
        r = subprocess.run(args, cwd=_ROOT, env=env, capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode not in (0, 5):  # 5: every test deselected
            pytest.fail(f"simulator tests of {os.path.basename(path)} failed "
                        f"(rc {r.returncode}):\n{r.stdout[-20000:]}\n{r.stderr[-5000:]}",
                        pytrace=False)

    return test_cuda_simulator_subprocess


def select_items(config, items) -> None:
    """Deselect, in simulator modules, what does not belong to this process (see above)."""
    keep, drop = [], []
    for item in items:
        mod = getattr(item, "module", None)
        if mod is None or not getattr(mod, "CUDA_SIMULATOR_MODULE", False):
            keep.append(item)
            continue
        runner = item.originalname == _RUNNER if hasattr(item, "originalname") else False
        gpu = item.get_closest_marker("gpu") is not None
        here = (not runner and not gpu) if SIM else (runner or gpu)
        (keep if here else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
