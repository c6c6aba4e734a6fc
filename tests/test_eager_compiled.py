"""Eager heavy ops run by the compiled CPU backend (frontend/ndarray/compiled_ops.py): the
same results as the ops' NumPy kernels (forward, every gradient through autograd, BatchNorm's moving
statistics, NaN and Inf), one program per signature, small ops and busy locks on NumPy.

Shapes are just above ``eager.MIN_BYTES`` (the NumPy kernels run below it). Tolerances as
the CPU backend's conv tests: float32 rtol 1e-4 / atol 1e-4 (Winograd and BLAS sum in
another order), float64 1e-9.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

import ember as mx
from ember import autograd, nd
from ember.ndarray import compiled_ops as eager

TOL = {"float32": (1e-4, 1e-4), "float64": (1e-9, 1e-9)}


@pytest.fixture(autouse=True)
def _fresh():
    eager.clear()
    yield
    eager.clear()


def _conv_bn_pool(x, w, gamma, beta, mm, mv):
    y = nd.Convolution(x, w, kernel=(3, 3), pad=(1, 1), num_filter=w.shape[0], no_bias=True)
    y = nd.BatchNorm(y, gamma, beta, mm, mv, fix_gamma=False)
    y = nd.relu(y)
    y = nd.Pooling(y, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max")
    y = nd.Convolution(y, _w2(w), kernel=(1, 1),
                       stride=(2, 2), num_filter=8, no_bias=True)
    return y


def _w2(w):
    return nd.array(np.linspace(-1, 1, 8 * w.shape[0]).reshape(8, -1, 1, 1), dtype=w.dtype)


def _run(dtype, compiled, monkeypatch, seed=0, special=False):
    """Outputs, input gradients and moving statistics of a conv/BN/ReLU/pool/conv stack in
    training mode, eager ops compiled or not."""
    monkeypatch.setenv("EMBER_EAGER_COMPILE", "1" if compiled else "0")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, 16, 32, 32)).astype(dtype)
    if special:
        x[0, 1, 2, 3], x[1, 2, 5, 5], x[2, 0, 0, 0] = np.nan, np.inf, -np.inf
    w = (rng.standard_normal((16, 16, 3, 3)) * 0.1).astype(dtype)
    arrs = [nd.array(a, dtype=dtype) for a in (x, w, rng.random(16) + 0.5,
                                               rng.standard_normal(16), np.zeros(16),
                                               np.ones(16))]
    for a in arrs[:4]:
        a.attach_grad()
    with autograd.record():
        y = _conv_bn_pool(*arrs)
        loss = (y * y).sum()
    loss.backward()
    return [y.asnumpy()] + [a.grad.asnumpy() for a in arrs[:4]] + \
        [arrs[4].asnumpy(), arrs[5].asnumpy()]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_compiled_eager_ops_equal_their_numpy_kernels(dtype, monkeypatch):
    want = _run(dtype, False, monkeypatch)
    assert not eager._programs
    got = _run(dtype, True, monkeypatch)
    kinds = {k[0] for k, fn in eager._programs.items() if fn is not None}
    assert kinds >= {"convolution", "deconvolution", "convolution_backward_weight",
                     "pooling", "pooling_backward", "batch_norm", "batch_norm_backward"}, kinds
    rtol, atol = TOL[dtype]
    names = ["y", "dx", "dw", "dgamma", "dbeta", "moving_mean", "moving_var"]
    for name, g, w in zip(names, got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape, name
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol * max(1, np.abs(w).max()),
                                   err_msg=name)


def test_nan_and_inf_propagate_as_the_numpy_kernels(monkeypatch):
    want = _run("float32", False, monkeypatch, special=True)
    got = _run("float32", True, monkeypatch, special=True)
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(np.isnan(g), np.isnan(w))
        assert np.array_equal(np.isinf(g), np.isinf(w))
        fin = np.isfinite(w)
        np.testing.assert_allclose(g[fin], w[fin], rtol=1e-3,
                                   atol=1e-3 * max(1, np.abs(w[fin]).max(initial=0)))


def test_one_program_per_signature_and_small_ops_stay_on_numpy():
    rng = np.random.default_rng(1)
    w = nd.array(rng.standard_normal((8, 16, 3, 3)).astype(np.float32))
    for _ in range(3):
        x = nd.array(rng.standard_normal((4, 16, 32, 32)).astype(np.float32))
        nd.Convolution(x, w, kernel=(3, 3), num_filter=8, no_bias=True)
    assert len(eager._programs) == 1
    small = nd.array(rng.standard_normal((1, 16, 4, 4)).astype(np.float32))
    want = nd.Convolution(small, w, kernel=(3, 3), num_filter=8, no_bias=True)
    assert len(eager._programs) == 1   # (below MIN_BYTES: the NumPy kernel)
    assert want.shape == (1, 8, 2, 2)


def test_threads_get_their_own_results():
    """Two threads calling the same compiled op at once: the one that finds the lock busy
    runs the NumPy kernel; both results are their own inputs' convolutions."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((8, 16, 3, 3)).astype(np.float32)
    xs = [rng.standard_normal((4, 16, 32, 32)).astype(np.float32) for _ in range(4)]
    from ember.ir.ops import get_op
    op = get_op("convolution")
    attrs = {**op.attrs, "kernel": (3, 3), "num_filter": 8, "no_bias": True}
    want = [op.compute([x, w], attrs) for x in xs]
    got: dict = {}

    def work(i):
        for _ in range(5):
            got[i] = nd.Convolution(nd.array(xs[i]), nd.array(w), kernel=(3, 3), num_filter=8,
                                    no_bias=True).asnumpy()
    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for i in range(4):
        np.testing.assert_allclose(got[i], want[i], rtol=1e-4, atol=1e-3)


def test_bad_input_keeps_the_op_error():
    x = nd.array(np.zeros((4, 16, 32, 32), np.float32))
    w = nd.array(np.zeros((8, 15, 3, 3), np.float32))   # channels disagree
    with pytest.raises(mx.MXNetError, match="onvolution"):
        nd.Convolution(x, w, kernel=(3, 3), num_filter=8, no_bias=True).wait_to_read()
