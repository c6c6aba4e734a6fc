"""batch_norm_backward: equal to the gradient of BatchNorm written with small ops, and its own
gradient (second derivatives) equal to finite differences."""
from __future__ import annotations

import numpy as np
import pytest

from ember import autograd, nd
from ember.ir.ops import get_op


def _inputs(rng, shape, axis):
    c = shape[axis]
    g = rng.normal(size=shape)
    x = rng.normal(size=shape) * 2 + 0.5
    gamma, mm, mv = rng.normal(size=c), rng.normal(size=c), rng.uniform(0.5, 2, c)
    return [g, x, gamma, mm, mv]


def _chain(ins, at):
    """The gradient as the ops-only rule computed it before the op (float64 NumPy)."""
    g, x, gamma, mm, mv = ins
    ax = at["axis"] % x.ndim
    axes = tuple(i for i in range(x.ndim) if i != ax)
    bs = tuple(-1 if i == ax else 1 for i in range(x.ndim))
    gs = g if at["fix_gamma"] else g * gamma.reshape(bs)
    if at["train"]:
        xc = x - x.mean(axis=axes, keepdims=True)
        r = 1 / np.sqrt((xc ** 2).mean(axis=axes, keepdims=True) + at["eps"])
        xhat = xc * r
        dx = r * (gs - gs.mean(axis=axes, keepdims=True)
                  - xhat * (gs * xhat).mean(axis=axes, keepdims=True))
    else:
        r = 1 / np.sqrt(mv.reshape(bs) + at["eps"])
        xhat = (x - mm.reshape(bs)) * r
        dx = gs * r
    dgamma = np.zeros_like(gamma) if at["fix_gamma"] else (g * xhat).sum(axis=axes)
    return dx, dgamma, g.sum(axis=axes)


CASES = [((3, 4, 5), 1, True, True), ((3, 4, 5), 1, False, True), ((2, 3, 2, 2), 1, False, False),
         ((4, 3), -1, True, False), ((2, 3, 4), 2, False, True), ((5, 2), 1, True, True)]


@pytest.mark.parametrize("shape,axis,fix_gamma,train", CASES)
def test_kernel_equals_the_small_op_gradient(shape, axis, fix_gamma, train):
    rng = np.random.default_rng(1)
    ins = _inputs(rng, shape, axis)
    at = {"eps": 1e-3, "fix_gamma": fix_gamma, "axis": axis, "train": train}
    got = get_op("batch_norm_backward").compute(ins, at)
    for a, b in zip(got, _chain(ins, at)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    got32 = get_op("batch_norm_backward").compute([a.astype(np.float32) for a in ins], at)
    assert all(a.dtype == np.float32 for a in got32)
    for a, b in zip(got32, got):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape,axis,fix_gamma,train", CASES)
def test_second_derivative_equals_finite_differences(shape, axis, fix_gamma, train):
    """The rule's vector-Jacobian product of (dx, dgamma, dbeta) with random cotangents,
    against central differences of the op's float64 kernel."""
    rng = np.random.default_rng(2)
    ins = _inputs(rng, shape, axis)
    at = {"eps": 1e-3, "fix_gamma": fix_gamma, "axis": axis, "train": train}
    op = get_op("batch_norm_backward")
    cot = [rng.normal(size=o.shape) for o in op.compute(ins, at)]

    def f(arrays):
        return sum(float((o * c).sum()) for o, c in zip(op.compute(arrays, at), cot))

    rule = op.grad(nd, [nd.array(a, dtype="float64") for a in ins], None,
                   [nd.array(c, dtype="float64") for c in cot], at)
    for k in range(3):   # ograd, data, gamma (the moving statistics get no gradient)
        want = np.zeros_like(ins[k])
        for i in np.ndindex(ins[k].shape):
            hi = [a.copy() for a in ins]
            lo = [a.copy() for a in ins]
            hi[k][i] += 1e-6
            lo[k][i] -= 1e-6
            want[i] = (f(hi) - f(lo)) / 2e-6
        got = np.zeros_like(want) if rule[k] is None else rule[k].asnumpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"input {k}")
    assert rule[3] is None and rule[4] is None


def test_batch_norm_second_derivative_through_autograd():
    """autograd.grad(create_graph=True) through BatchNorm in training mode, then backward:
    the gradient of sum(dL/dx * w) w.r.t. x equals finite differences."""
    rng = np.random.default_rng(3)
    x0 = rng.normal(size=(3, 2, 4))
    gamma, beta = nd.array(rng.normal(size=2), dtype="float64"), nd.zeros(2, dtype="float64")
    w = rng.normal(size=x0.shape)
    head = rng.normal(size=x0.shape)

    def first(xv, create):
        x = nd.array(xv, dtype="float64")
        x.attach_grad()
        with autograd.record(train_mode=True):
            y = nd.BatchNorm(x, gamma, beta, nd.zeros(2, dtype="float64"),
                             nd.ones(2, dtype="float64"), fix_gamma=False)
            loss = (y * nd.array(head, dtype="float64")).sum()
            (dx,) = autograd.grad(loss, [x], create_graph=create, retain_graph=create)
            z = (dx * nd.array(w, dtype="float64")).sum()
        return x, z

    x, z = first(x0, True)
    z.backward()
    want = np.zeros_like(x0)
    for i in np.ndindex(x0.shape):
        hi, lo = x0.copy(), x0.copy()
        hi[i] += 1e-6
        lo[i] -= 1e-6
        want[i] = (first(hi, False)[1].asscalar() - first(lo, False)[1].asscalar()) / 2e-6
    np.testing.assert_allclose(x.grad.asnumpy(), want, rtol=1e-5, atol=1e-6)
