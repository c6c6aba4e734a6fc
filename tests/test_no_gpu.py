"""Without a GPU ember can use, mx.gpu() arrays are refused at creation, as MXNet refuses
them, never computed on the CPU while labelled gpu(0) (d2lzh's try_gpu relies on this)."""
import numpy as np
import pytest

import ember as mx
from ember import gluon, nd
from ember.base import MXNetError

# on a machine with a GPU ember can use, these checks do not apply (tests/test_cuda_* do)
pytestmark = pytest.mark.skipif(mx.context.num_gpus() > 0, reason="a usable GPU is present")


def test_num_gpus_counts_devices_ember_uses():
    assert mx.context.num_gpus() == 0 and mx.num_gpus() == 0


@pytest.mark.parametrize("make", [
    lambda: nd.zeros((1,), ctx=mx.gpu()),
    lambda: nd.ones((2, 2), ctx=mx.gpu(1)),
    lambda: nd.array([1.0, 2.0], ctx=mx.gpu()),
    lambda: nd.arange(3, ctx=mx.gpu()),
    lambda: nd.ones(2).as_in_context(mx.gpu()),
    lambda: nd.ones(2).copyto(mx.gpu()),
    lambda: gluon.nn.Dense(2, in_units=3).initialize(ctx=mx.gpu()),
    lambda: gluon.nn.Dense(2).initialize(ctx=[mx.cpu(), mx.gpu()]),
])
def test_gpu_arrays_are_refused(make):
    with pytest.raises(MXNetError, match="no usable GPU"):
        make()


def test_gpu_default_context_is_refused_at_creation():
    x = nd.ones(2)
    with mx.gpu():                       # entering the context is allowed, as in MXNet
        with pytest.raises(MXNetError, match="gpu\\(0\\)"):
            nd.zeros((3,))
        with pytest.raises(MXNetError, match="gpu\\(0\\)"):
            nd.array(np.ones(3))
        np.testing.assert_array_equal((x + 1).asnumpy(), [2, 2])  # ops keep their inputs'


def test_try_gpu_idiom_falls_back_to_cpu():
    def try_gpu():   # what the Gluon book's d2lzh does
        try:
            ctx = mx.gpu()
            _ = nd.zeros((1,), ctx=ctx)
        except mx.base.MXNetError:
            ctx = mx.cpu()
        return ctx
    assert try_gpu() == mx.cpu()


def test_no_device_error_says_why_and_which_extra():
    with pytest.raises(MXNetError) as e:
        nd.zeros((1,), ctx=mx.gpu())
    msg = str(e.value)
    assert "gpu(0)" in msg and "num_gpus() == 0" in msg and "ember[cuda]" in msg


def test_numbas_own_cuda_target_is_not_a_usable_gpu(monkeypatch):
    from numba import cuda

    from ember.backends import cuda_device
    monkeypatch.setattr(cuda, "implementation", "Numba", raising=False)
    cuda_device._reset_for_tests()
    try:
        assert cuda_device.device_count() == 0
        assert "built-in CUDA target" in cuda_device.unavailable_reason()
        assert "ember[cuda]" in cuda_device.unavailable_reason()
    finally:
        monkeypatch.undo()
        cuda_device._reset_for_tests()
    assert "no CUDA device found" in cuda_device.unavailable_reason()
