"""backends/cuda_device: discovery, the simulator opt-in, allocation and copies (under numba's
CUDA simulator in a subprocess, see tests/cuda_sim.py; on a real device with -m gpu)."""
import numpy as np
import pytest
from cuda_sim import simulator_module

from ember.backends import cuda_device as cd

CUDA_SIMULATOR_MODULE = True
test_cuda_simulator_subprocess = simulator_module(__file__)


def _round_trips():
    for a in [np.arange(6, dtype=np.float32).reshape(2, 3), np.float64(2.5),
              np.zeros((0, 4), np.int32), np.arange(12, dtype=np.int64)[::2],
              np.array([True, False])]:
        d = cd.to_device(a)
        assert cd.is_device_array(d) and not cd.is_device_array(np.asarray(a))
        h = cd.to_host(d)
        assert h.shape == np.shape(a) and h.dtype == np.asarray(a).dtype
        np.testing.assert_array_equal(h, a)
        np.testing.assert_array_equal(cd.to_host(cd.copy(d)), a)


def test_simulator_is_a_device_when_opted_in():
    assert cd.simulator_opted_in() and cd.is_simulator()
    assert cd.device_count() == 1 and cd.unavailable_reason() == ""


def test_round_trips_and_copies():
    _round_trips()


def test_empty_full_copy_into():
    e = cd.empty((2, 3), np.float32)
    assert e.shape == (2, 3) and e.dtype == np.float32
    cd.copy_into(e, 1.5)
    np.testing.assert_array_equal(cd.to_host(e), np.full((2, 3), 1.5, np.float32))
    cd.copy_into(e, cd.full((2, 3), 7, np.float32))
    np.testing.assert_array_equal(cd.to_host(e), np.full((2, 3), 7, np.float32))
    cd.copy_into(e, np.arange(3))     # broadcast from the host, cast to the device dtype
    np.testing.assert_array_equal(cd.to_host(e), np.tile(np.arange(3, dtype=np.float32), (2, 1)))
    cd.synchronize()


def test_missing_device_id_is_refused():
    with pytest.raises(RuntimeError, match="gpu\\(3\\) does not exist"):
        cd.to_device(np.ones(2), 3)


@pytest.mark.gpu
def test_real_device_round_trips():
    assert cd.device_count() >= 1 and not cd.is_simulator(), cd.unavailable_reason()
    _round_trips()
    big = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    np.testing.assert_array_equal(cd.to_host(cd.copy(cd.to_device(big))), big)
