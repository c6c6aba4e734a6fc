"""Unary elementwise ops: forward vs NumPy/SciPy, shape rules, gradients, templates, MXNet edges."""
import math

import numpy as np
import pytest
import scipy.special as sp
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from opcheck import check_forward, check_grad, check_infer

import ember as mx
from ember import autograd, nd
from ember.ir import EmberError, OpKind, TensorType, get_op
from ember.ir.opset_unary import UNARY

NAMES = [row[0] for row in UNARY]

# independent references (NumPy / SciPy / closed forms)
REF = {
    "negative": np.negative, "abs": np.abs, "sign": np.sign, "exp": np.exp,
    "expm1": np.expm1, "log": np.log, "log1p": np.log1p, "log2": np.log2, "log10": np.log10,
    "sqrt": np.sqrt, "rsqrt": lambda x: x ** -0.5, "cbrt": np.cbrt,
    "rcbrt": lambda x: np.sign(x) * np.abs(x) ** (-1 / 3), "square": lambda x: x * x,
    "reciprocal": lambda x: 1 / x, "sin": np.sin, "cos": np.cos, "tan": np.tan,
    "arcsin": np.arcsin, "arccos": np.arccos, "arctan": np.arctan, "sinh": np.sinh,
    "cosh": np.cosh, "tanh": np.tanh, "arcsinh": np.arcsinh, "arccosh": np.arccosh,
    "arctanh": np.arctanh, "degrees": lambda x: x * 180 / np.pi,
    "radians": lambda x: x * np.pi / 180, "sigmoid": sp.expit,
    "relu": lambda x: np.where(x > 0, x, 0), "softrelu": lambda x: np.logaddexp(0, x),
    "softsign": lambda x: x / (1 + np.abs(x)), "erf": sp.erf, "erfinv": sp.erfinv,
    "gamma": sp.gamma, "gammaln": sp.gammaln, "digamma": sp.digamma, "floor": np.floor,
    "ceil": np.ceil, "round": lambda x: np.sign(x) * np.floor(np.abs(x) + 0.5),
    "rint": lambda x: np.ceil(x - 0.5), "fix": np.fix, "trunc": np.trunc,
    "isnan": np.isnan, "isinf": np.isinf, "isfinite": np.isfinite,
    "logical_not": lambda x: (x == 0) * 1.0, "identity": lambda x: x, "stop_gradient": lambda x: x,
}
# where each op is smooth (and defined); "+-" ranges exclude a neighbourhood of zero
DOMAIN = {
    "log": (0.1, 5), "log2": (0.1, 5), "log10": (0.1, 5), "sqrt": (0.1, 5),
    "rsqrt": (0.1, 5), "log1p": (-0.5, 3), "arcsin": (-0.9, 0.9), "arccos": (-0.9, 0.9),
    "arctanh": (-0.9, 0.9), "erfinv": (-0.95, 0.95), "arccosh": (1.1, 5), "tan": (-1.2, 1.2),
    "gamma": (0.2, 5), "gammaln": (0.2, 5), "digamma": (0.2, 5), "cbrt": "+-",
    "rcbrt": "+-", "reciprocal": "+-", "abs": "+-", "relu": "+-", "softsign": "+-",
}
NONDIFF = {"sign", "floor", "ceil", "round", "rint", "fix", "trunc", "isnan", "isinf",
           "isfinite", "logical_not", "stop_gradient"}
# ops defined everywhere, checked on NaN, inf and huge values too
TOTAL = NONDIFF | {"negative", "abs", "relu", "identity"}
SPECIAL = [math.nan, math.inf, -math.inf, 1e300, -1e300, 2.5, -2.5, 0.5, -0.5, 0.0, 3.0]


def sample(name, shape, rng, dtype=np.float64):
    dom = DOMAIN.get(name, (-3, 3))
    if dom == "+-":
        x = rng.uniform(0.2, 3, shape) * rng.choice([-1.0, 1.0], shape)
    else:
        x = rng.uniform(*dom, shape)
    return x.astype(dtype)


shapes = hnp.array_shapes(min_dims=1, max_dims=3, max_side=4)


@pytest.mark.parametrize("name", NAMES)
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_forward_matches_reference(name, shape, seed):
    x = sample(name, shape, np.random.default_rng(seed), np.float32)
    expected = np.asarray(REF[name](x.astype(np.float64)), dtype=np.float64)
    out = check_forward(name, [x], expected, rtol=2e-5, atol=1e-5)
    assert out.dtype == np.float32


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_infer_and_dtype_kept(name, dtype):
    x = sample(name, (2, 3), np.random.default_rng(0), dtype)
    check_infer(name, [x])
    op = get_op(name)
    assert op.kind is OpKind.ELEMWISE and op.inplace == ((0, 0),)
    assert getattr(nd, name)(nd.array(x, dtype=dtype)).dtype == dtype


@pytest.mark.parametrize("name", ["negative", "abs", "sign", "square", "relu", "floor",
                                  "round", "identity", "logical_not", "reciprocal"])
def test_int32_stays_int32(name):
    x = np.array([[-3, -1, 0], [1, 2, 7]], dtype=np.int32)
    out = getattr(nd, name)(nd.array(x, dtype=np.int32))
    assert out.dtype == np.int32
    with np.errstate(all="ignore"):
        ref = np.trunc(REF[name](x.astype(np.float64)))
    np.testing.assert_array_equal(out.asnumpy()[x != 0], ref[x != 0])
    check_infer(name, [x])


@pytest.mark.parametrize("name", sorted(set(NAMES) - NONDIFF - {"digamma"}))
def test_gradient_matches_finite_differences(name):
    x = sample(name, (2, 3), np.random.default_rng(1))
    check_grad(getattr(nd, name), [x], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", sorted(NONDIFF))
def test_nondifferentiable_ops_give_zero_gradients(name):
    x = nd.array(sample(name, (2, 3), np.random.default_rng(2)))
    x.attach_grad()
    with autograd.record():
        y = getattr(nd, name)(x) * 3.0 + x
    y.backward()
    np.testing.assert_array_equal(x.grad.asnumpy(), np.ones((2, 3)))


@pytest.mark.parametrize("name,second", [
    ("sin", lambda x: -np.sin(x)), ("tanh", lambda x: -2 * np.tanh(x) / np.cosh(x) ** 2),
    ("sigmoid", lambda x: sp.expit(x) * (1 - sp.expit(x)) * (1 - 2 * sp.expit(x))),
    ("sqrt", lambda x: -0.25 * x ** -1.5), ("arctan", lambda x: -2 * x / (1 + x * x) ** 2),
    ("softrelu", lambda x: sp.expit(x) * (1 - sp.expit(x))), ("log", lambda x: -1 / x ** 2),
])
def test_second_derivatives_through_create_graph(name, second):
    x0 = np.array([0.3, 1.7, 2.4])
    x = nd.array(x0, dtype=np.float64)
    x.attach_grad()
    with autograd.record():
        y = getattr(nd, name)(x)
        (dx,) = autograd.grad(y, [x], create_graph=True)
    dx.backward()
    np.testing.assert_allclose(x.grad.asnumpy(), second(x0), rtol=1e-7)


def test_gamma_twice_says_trigamma_is_missing():
    x = nd.array([1.5, 2.5], dtype=np.float64)
    x.attach_grad()
    with autograd.record():
        (dx,) = autograd.grad(nd.gammaln(x), [x], create_graph=True)
    np.testing.assert_allclose(dx.asnumpy(), sp.digamma([1.5, 2.5]), rtol=1e-12)
    with pytest.raises(EmberError, match="trigamma"):
        dx.backward()


def _eval_template(template, **env):
    try:
        return float(eval(template, {"math": math}, env))
    except (ValueError, OverflowError, ZeroDivisionError):
        return math.nan  # Python's math raises where C (and numba) return NaN/inf


@pytest.mark.parametrize("name", NAMES)
def test_template_equals_kernel(name):
    op = get_op(name)
    xs = sample(name, (12,), np.random.default_rng(3))
    if name in TOTAL:
        xs = np.concatenate([xs, SPECIAL])
    kernel = op.compute([xs], {})
    for x, k in zip(xs, kernel):
        t = _eval_template(op.template, a=float(x))
        assert (math.isnan(t) and math.isnan(k)) or t == pytest.approx(k, rel=1e-12), \
            f"{name}({x!r}): template {t!r}, kernel {k!r}"


def test_templates_compile_with_numba():
    numba = pytest.importorskip("numba")
    ops = [get_op(n) for n in NAMES] + [get_op("clip"), get_op("cast")]
    body = "".join(f"    out[{i}] = {op.template}\n" for i, op in enumerate(ops))
    ns = {"math": math, "np": np}
    exec(f"def f(a, a_min, a_max):\n    out = np.empty({len(ops)})\n{body}    return out\n",
         ns)
    got = numba.njit(ns["f"])(0.375, -1.0, 1.0)
    for op, v in zip(ops, got):
        ref = op.compute([np.array([0.375])], {"a_min": -1.0, "a_max": 1.0,
                                              "dtype": "float64"})[0]
        assert v == pytest.approx(ref, rel=1e-12, nan_ok=True), op.name


# ---- MXNet semantics where NumPy differs ---------------------------------------------------
def test_rounding_follows_mxnet():
    x = nd.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, -2.1, 1.9])
    np.testing.assert_array_equal(nd.round(x).asnumpy(), [-3, -2, -1, 1, 2, 3, -2, 2])
    np.testing.assert_array_equal(nd.rint(x).asnumpy(), [-3, -2, -1, 0, 1, 2, -2, 2])
    np.testing.assert_array_equal(nd.fix(x).asnumpy(), [-2, -1, 0, 0, 1, 2, -2, 1])
    np.testing.assert_array_equal(x.round().asnumpy(), nd.round(x).asnumpy())


def test_nan_handling_follows_mxnet():
    x = nd.array([np.nan, -1.0, 2.0])
    np.testing.assert_array_equal(nd.sign(x).asnumpy(), [0, -1, 1])
    assert np.isnan(nd.relu(x).asnumpy()[0])
    np.testing.assert_array_equal(nd.isnan(x).asnumpy(), [1, 0, 0])
    assert nd.isnan(x).dtype == np.float32
    with np.errstate(all="raise"):  # no NumPy warning escapes a kernel
        assert nd.log(nd.array([0.0, -1.0])).asnumpy()[0] == -np.inf


def test_softrelu_is_linear_above_20_and_stable():
    out = nd.softrelu(nd.array([25.0, 1000.0, -1000.0])).asnumpy()
    np.testing.assert_array_equal(out, [25.0, 1000.0, 0.0])


def test_special_functions_at_poles_and_edges():
    np.testing.assert_array_equal(nd.erfinv(nd.array([1.0, -1.0, 0.0])).asnumpy(),
                                  [np.inf, -np.inf, 0.0])
    assert np.isnan(nd.erfinv(nd.array([1.5])).asnumpy()[0])
    g = nd.gamma(nd.array([0.0, -1.0, 200.0], dtype=np.float64)).asnumpy()
    assert g[0] == np.inf and np.isnan(g[1]) and g[2] == np.inf
    assert nd.gammaln(nd.array([-2.0])).asnumpy()[0] == np.inf
    x = np.array([-2.5, -0.3, 0.7, 30.0, 1e6])
    np.testing.assert_allclose(nd.digamma(nd.array(x, dtype=np.float64)).asnumpy(),
                               sp.digamma(x), rtol=1e-12)
    y = np.linspace(-0.999, 0.999, 41)
    np.testing.assert_allclose(nd.erfinv(nd.array(y, dtype=np.float64)).asnumpy(),
                               sp.erfinv(y), rtol=1e-12)


def test_clip_values_gradient_and_int_bounds():
    x = nd.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    x.attach_grad()
    with autograd.record():
        y = nd.clip(x, -1.0, 1.0)
    y.backward()
    np.testing.assert_array_equal(y.asnumpy(), [-1, -1, 0, 1, 1])
    np.testing.assert_array_equal(x.grad.asnumpy(), [0, 1, 1, 1, 0])
    np.testing.assert_array_equal(x.clip(a_min=0, a_max=0.5).asnumpy(), [0, 0, 0, 0.5, 0.5])
    i = nd.clip(nd.array([-3, 0, 3], dtype=np.int32), -1.5, 2.7)
    assert i.dtype == np.int32
    np.testing.assert_array_equal(i.asnumpy(), [-1, 0, 2])
    check_infer("clip", [np.zeros((2, 3), np.float32)], a_min=0.0, a_max=1.0)
    check_grad(lambda v: nd.clip(v, a_min=-0.5, a_max=0.5),
               [np.array([-0.9, -0.2, 0.1, 0.4, 0.8])])
    with pytest.raises(mx.base.MXNetError, match="a_max"):
        nd.clip(x, a_min=0.0)


@pytest.mark.parametrize("dtype", ["float16", np.float16, np.dtype("float16")])
def test_cast_normalises_dtype_and_casts_gradient_back(dtype):
    x = nd.array([1.7, -2.5, 3.0])
    x.attach_grad()
    with autograd.record():
        y = nd.cast(x, dtype=dtype)
    assert y.dtype == np.float16
    y.backward(nd.array([1.0, 2.0, 3.0], dtype=np.float16))
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.asnumpy(), [1, 2, 3])
    check_infer("cast", [np.zeros((2, 3), np.float32)], dtype=dtype)
    np.testing.assert_array_equal(nd.Cast(x, dtype="int32").asnumpy(), [1, -2, 3])


def test_mxnet_names_resolve():
    assert get_op("_copy") is get_op("identity")
    assert get_op("BlockGrad") is get_op("stop_gradient")
    assert get_op("Cast") is get_op("cast") and get_op("cast").mxnet_name == "Cast"
    assert get_op("exp").mxnet_name == "exp" and get_op("softrelu").mxnet_name is None
    for name in ("BlockGrad", "stop_gradient", "identity", "_copy", "erfinv", "gammaln"):
        assert callable(getattr(nd, name))
    x = nd.array([1.0, 2.0])
    x.attach_grad()
    with autograd.record():
        y = nd.BlockGrad(x * 2) + x
    y.backward()
    np.testing.assert_array_equal(x.grad.asnumpy(), [1, 1])


def test_rules_with_unknown_dims():
    outs, ins = get_op("exp").infer([TensorType((None, 3), "float16")], {})
    assert outs[0] == TensorType((None, 3), "float16") and ins[0].shape == (None, 3)
    outs, _ = get_op("cast").infer([TensorType((None,), "float32")], {"dtype": np.int8})
    assert outs[0] == TensorType((None,), "int8")
    outs, _ = get_op("clip").infer([TensorType((2, None), "int32")], {"a_min": 0, "a_max": 1})
    assert outs[0] == TensorType((2, None), "int32")
