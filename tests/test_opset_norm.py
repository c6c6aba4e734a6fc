"""Normalisation ops of ir/opset_norm.py beyond what test_opset_nn covers."""
import numpy as np


def test_sync_batch_norm_is_batch_norm_on_one_process():
    """MXNet's _contrib_SyncBatchNorm (GluonCV calls F.contrib.SyncBatchNorm): on one process
    it equals BatchNorm over axis 1, outputs, moving statistics and gradients alike."""
    from ember import autograd, nd
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    gamma, beta = rng.random(3).astype(np.float32) + 0.5, rng.random(3).astype(np.float32)
    results = []
    for op, extra in ((nd.contrib.SyncBatchNorm, {"ndev": 2, "key": "bn0"}),
                      (nd.BatchNorm, {})):
        xs, g, b = nd.array(x), nd.array(gamma), nd.array(beta)
        mm, mv = nd.zeros(3), nd.ones(3)
        for a in (xs, g, b):
            a.attach_grad()
        with autograd.record():
            y = op(xs, g, b, mm, mv, fix_gamma=False, momentum=0.5, **extra)
            loss = (y * y * nd.arange(48).reshape((4, 3, 2, 2))).sum()
        loss.backward()
        results.append([a.asnumpy() for a in (y, mm, mv, xs.grad, g.grad, b.grad)])
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert not np.allclose(results[0][1], 0)       # moving mean was updated in training
