"""Shared checks for op tests: eager result vs NumPy, shape rule vs kernel, finite differences.

Every opset test module uses these, so each op is checked the same way:
- ``check_forward``: ``nd.<op>`` on float32 inputs equals a NumPy reference;
- ``check_infer``: the op's shape+dtype rule predicts the kernel's output exactly, also with
  all dims unknown where the rule claims to handle that;
- ``check_grad``: the registry gradient rule, run through autograd in float64, matches
  central finite differences of ``sum(out * head_grad)`` for a random ``head_grad``.
"""
from __future__ import annotations

import numpy as np

import ember as mx
from ember.ir import TensorType, get_op
from ember.ir.ops import normalize_attrs


def nd_call(name, arrays, **attrs):
    """Call ``nd.<name>`` on NumPy inputs, returning the NDArray result(s)."""
    fn = getattr(mx.nd, name)
    return fn(*[mx.nd.array(a, dtype=a.dtype) for a in arrays], **attrs)


def check_forward(name, arrays, expected, rtol=1e-5, atol=1e-6, **attrs):
    """``nd.<name>(*arrays, **attrs)`` equals ``expected`` (array or list of arrays)."""
    out = nd_call(name, arrays, **attrs)
    outs = out if isinstance(out, list) else [out]
    exps = expected if isinstance(expected, list | tuple) else [expected]
    assert len(outs) == len(exps), f"{name}: {len(outs)} outputs, expected {len(exps)}"
    for o, e in zip(outs, exps):
        e = np.asarray(e)
        assert o.shape == e.shape, f"{name}: shape {o.shape} != expected {e.shape}"
        np.testing.assert_allclose(o.asnumpy().astype(np.float64), e.astype(np.float64),
                                   rtol=rtol, atol=atol, err_msg=name)
    return out


def check_infer(name, arrays, **attrs):
    """The shape rule of ``name`` agrees with what its kernel returns."""
    op = get_op(name)
    at = normalize_attrs(op, attrs)
    if op.mode:
        at["is_train"] = False
    res = op.compute(list(arrays), at)
    res = list(res) if isinstance(res, tuple | list) else [res]
    outs, refined = op.infer([TensorType(a.shape, a.dtype) for a in arrays], at)
    assert len(outs) == len(res), f"{name}: rule gives {len(outs)} outputs, kernel {len(res)}"
    for t, r in zip(outs, res):
        r = np.asarray(r)
        assert t.shape == r.shape, f"{name}: rule says {t.shape}, kernel gives {r.shape}"
        assert t.dtype == r.dtype.name, f"{name}: rule says {t.dtype}, kernel gives {r.dtype}"
    assert len(refined) == len(arrays)


def check_grad(fn, arrays, rtol=1e-4, atol=1e-6, eps=1e-6, seed=0, wrt=None):
    """Autograd gradients of ``fn`` (NDArrays -> NDArray) match finite differences (float64).

    ``wrt`` lists the indices of the inputs to differentiate (default: all).
    """
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(a, dtype=np.float64) if np.asarray(a).dtype.kind == "f" else
              np.asarray(a) for a in arrays]
    wrt = list(range(len(arrays))) if wrt is None else list(wrt)
    xs = [mx.nd.array(a, dtype=a.dtype) for a in arrays]
    for i in wrt:
        xs[i].attach_grad()
    with mx.autograd.record():
        out = fn(*xs)
    head = rng.standard_normal(out.shape)
    out.backward(mx.nd.array(head, dtype=np.float64))

    def objective(vals):
        with mx.autograd.pause():
            y = fn(*[mx.nd.array(v, dtype=v.dtype) for v in vals]).asnumpy()
        return float(np.sum(y * head))

    for i in wrt:
        num = np.zeros_like(arrays[i])
        flat = num.reshape(-1)
        for j in range(flat.size):
            plus = [a.copy() for a in arrays]
            minus = [a.copy() for a in arrays]
            plus[i].reshape(-1)[j] += eps
            minus[i].reshape(-1)[j] -= eps
            flat[j] = (objective(plus) - objective(minus)) / (2 * eps)
        np.testing.assert_allclose(xs[i].grad.asnumpy(), num, rtol=rtol, atol=atol,
                                   err_msg=f"gradient of input {i}")
