"""Tests of dot and batch_dot: forward vs NumPy, shape rules, gradients."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opcheck import check_forward, check_grad, check_infer

import ember as mx
from ember.ir import TensorType, get_op
from ember.ir.ops import normalize_attrs

rng = np.random.default_rng(0)


def _r(*shape):
    return rng.standard_normal(shape).astype(np.float32)


@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4),
       st.booleans(), st.booleans())
def test_dot_2d(m, k, n, ta, tb):
    a = _r(k, m) if ta else _r(m, k)
    b = _r(n, k) if tb else _r(k, n)
    exp = (a.T if ta else a) @ (b.T if tb else b)
    check_forward("dot", [a, b], exp, rtol=1e-5, atol=1e-5, transpose_a=ta, transpose_b=tb)
    check_infer("dot", [a, b], transpose_a=ta, transpose_b=tb)


def test_dot_nd_and_vectors():
    a, b = _r(2, 3, 4), _r(4, 5)
    check_forward("dot", [a, b], np.tensordot(a, b, 1), atol=1e-5)
    a, b = _r(4, 2, 3), _r(5, 4)
    exp = np.einsum("kij,nk->ijn", a, b)     # MXNet: contract a's first, b's last axis
    check_forward("dot", [a, b], exp, atol=1e-5, transpose_a=True, transpose_b=True)
    check_infer("dot", [a, b], transpose_a=True, transpose_b=True)
    v, w = _r(3), _r(3)
    check_forward("dot", [v, w], np.array([v @ w]), atol=1e-5)
    check_infer("dot", [v, w])
    assert mx.nd.dot(mx.nd.array(_r(3)), mx.nd.array(_r(3, 2))).shape == (2,)


def test_dot_rule_refines_and_rejects():
    op = get_op("dot")
    at = normalize_attrs(op, {"transpose_b": True})
    outs, ref = op.infer([TensorType((5, 7)), TensorType((3, None))], at)
    assert outs[0].shape == (5, 3) and ref[1].shape == (3, 7)
    with pytest.raises(mx.base.MXNetError):
        op.infer([TensorType((5, 7)), TensorType((6, 3))], normalize_attrs(op, {}))


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_dot_grad(ta, tb):
    a = _r(3, 2) if ta else _r(2, 3)
    b = _r(4, 3) if tb else _r(3, 4)
    check_grad(lambda x, y: mx.nd.dot(x, y, transpose_a=ta, transpose_b=tb), [a, b])


def test_dot_grad_nd():
    check_grad(lambda x, y: mx.nd.dot(x, y), [_r(2, 2, 3), _r(3, 2)])
    check_grad(lambda x, y: mx.nd.dot(x, y), [_r(3), _r(3)])
    check_grad(lambda x, y: mx.nd.dot(x, y, transpose_a=True), [_r(3, 2, 2), _r(3, 2)])


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.booleans(), st.booleans())
def test_batch_dot(m, k, n, ta, tb):
    a = _r(2, k, m) if ta else _r(2, m, k)
    b = _r(2, n, k) if tb else _r(2, k, n)
    exp = np.einsum("bij,bjk->bik", a.transpose(0, 2, 1) if ta else a,
                    b.transpose(0, 2, 1) if tb else b)
    check_forward("batch_dot", [a, b], exp, atol=1e-5, transpose_a=ta, transpose_b=tb)
    check_infer("batch_dot", [a, b], transpose_a=ta, transpose_b=tb)


@pytest.mark.parametrize("ta,tb", [(False, False), (True, True)])
def test_batch_dot_grad(ta, tb):
    check_grad(lambda x, y: mx.nd.batch_dot(x, y, transpose_a=ta, transpose_b=tb),
               [_r(2, 2, 3), _r(2, 3, 2)])


def test_batch_dot_infers_once_both_contracted_dims_are_known():
    # MXNet's BatchDotShape: nothing (not even a rank) before both contracted dims are
    # known, and one operand's dims never fill the other's contracted dim
    op = get_op("batch_dot")
    at = normalize_attrs(op, {})
    ins = [TensorType((2, 5, 3)), TensorType((None, None, 4))]
    outs, ref = op.infer(ins, at)
    assert outs[0].shape is None and ref == ins
    # then the batch dims must agree: a known one fills the other's
    outs, ref = op.infer([TensorType((2, 5, 3)), TensorType((None, 3, 4))], at)
    assert outs[0].shape == (2, 5, 4) and ref[1].shape == (2, 3, 4)
    # with transposes the contracted dims are the other ones
    at = normalize_attrs(op, {"transpose_a": True, "transpose_b": True})
    outs, _ = op.infer([TensorType((None, 3, None)), TensorType((None, None, 3))], at)
    assert outs[0].shape == (None, None, None)
    outs, _ = op.infer([TensorType((None, None, 5)), TensorType((None, 4, 3))], at)
    assert outs[0].shape is None
