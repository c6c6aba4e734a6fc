"""Binary elementwise ops: broadcasting, strict and scalar forms, add_n, NDArray operators."""
import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from opcheck import check_forward, check_grad, check_infer

import ember as mx
from ember import autograd, nd
from ember.ir import OpKind, TensorType, get_op
from ember.ir.opset_elemwise import BINARY, STRICT
from ember.ndarray import methods, ufuncs

NAMES = [row[0] for row in BINARY]
REFLECTED = [row[0] for row in BINARY if row[5]]
SCALAR_OPS = [f"{n}_scalar" for n in NAMES] + [f"r{n}_scalar" for n in REFLECTED]

REF = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "mod": np.mod,
    "power": np.power, "maximum": np.maximum, "minimum": np.minimum, "hypot": np.hypot,
    "equal": np.equal, "not_equal": np.not_equal, "greater": np.greater,
    "greater_equal": np.greater_equal, "lesser": np.less, "lesser_equal": np.less_equal,
    "logical_and": np.logical_and, "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
}
DIFF = ["add", "sub", "mul", "div", "mod", "power", "maximum", "minimum", "hypot"]
LOGIC = [n for n in NAMES if n not in DIFF]


def operands(name, shape_a, shape_b, rng, dtype=np.float64):
    """Inputs where ``name`` is smooth: divisors away from 0, positive bases, ties for logic."""
    if name in LOGIC:  # small integers so that equalities and zeros happen
        return (rng.integers(-2, 3, shape_a).astype(dtype),
                rng.integers(-2, 3, shape_b).astype(dtype))
    a = rng.uniform(-3, 3, shape_a)
    b = rng.uniform(0.5, 2.5, shape_b) * rng.choice([-1.0, 1.0], shape_b)
    if name == "power":
        a = rng.uniform(0.5, 2.0, shape_a)
        b = rng.uniform(-2, 2, shape_b)
    return a.astype(dtype), b.astype(dtype)


def smooth_at(name, a, b):
    """True where finite differences of ``name`` are valid (away from kinks and jumps)."""
    if name == "mod":
        q = a / b
        return np.all(np.abs(q - np.round(q)) > 1e-3)
    if name in ("maximum", "minimum"):
        return np.all(np.abs(a - b) > 1e-3)
    return True


pair_shapes = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=1, max_dims=3,
                                                max_side=3)


# ---- broadcasting ops --------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@given(shapes=pair_shapes, seed=st.integers(0, 2**16))
def test_broadcast_forward_matches_numpy(name, shapes, seed):
    (sa, sb), _ = shapes
    a, b = operands(name, sa, sb, np.random.default_rng(seed), np.float32)
    expected = REF[name](a.astype(np.float64), b.astype(np.float64)).astype(np.float64)
    out = check_forward(name, [a, b], expected, rtol=1e-5, atol=1e-6)
    assert out.dtype == np.float32
    check_infer(name, [a, b])
    assert get_op(name).kind is OpKind.BROADCAST


@pytest.mark.parametrize("name", DIFF)
@given(shapes=pair_shapes, seed=st.integers(0, 2**16))
def test_broadcast_gradients_come_back_in_input_shapes(name, shapes, seed):
    (sa, sb), _ = shapes
    a, b = operands(name, sa, sb, np.random.default_rng(seed))
    assume(smooth_at(name, a, b))
    check_grad(getattr(nd, name), [a, b], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", LOGIC)
def test_comparisons_give_zero_gradients(name):
    a, b = nd.array([[1.0, 2.0, 3.0]]), nd.array([[2.0], [1.0]])
    for x in (a, b):
        x.attach_grad()
    with autograd.record():
        y = getattr(nd, name)(a, b) + a * b
    y.backward()
    np.testing.assert_array_equal(a.grad.asnumpy(), [[3.0, 3.0, 3.0]])
    np.testing.assert_array_equal(b.grad.asnumpy(), [[6.0], [6.0]])


@pytest.mark.parametrize("name", NAMES)
def test_int32_stays_int32(name):
    a = np.array([[7, -7, 3], [0, 2, -4]], dtype=np.int32)
    b = np.array([2, 3, -2], dtype=np.int32)
    out = getattr(nd, name)(nd.array(a, dtype=np.int32), nd.array(b, dtype=np.int32))
    assert out.dtype == np.int32
    check_infer(name, [a, b])
    if name == "div":  # C division truncates toward zero
        np.testing.assert_array_equal(out.asnumpy(), [[3, -2, -1], [0, 0, 2]])
    elif name == "power":
        np.testing.assert_array_equal(out.asnumpy(), [[49, -343, 0], [0, 8, 0]])
    elif name != "hypot":
        np.testing.assert_array_equal(out.asnumpy(), REF[name](a, b).astype(np.int32))


def test_mod_follows_divisor_sign_and_zero_divisor():
    a = nd.array([5.0, -5.0, 5.0, -5.0, 3.0])
    b = nd.array([3.0, 3.0, -3.0, -3.0, 0.0])
    np.testing.assert_array_equal((a % b).asnumpy(), [2, 1, -1, -2, 0])
    ai = nd.array([5, -5, 3], dtype=np.int32)
    np.testing.assert_array_equal((ai % nd.array([-3, 3, 0], dtype=np.int32)).asnumpy(),
                                  [-1, 1, 0])


def test_nan_propagates_through_maximum_and_minimum():
    a, b = nd.array([np.nan, 1.0]), nd.array([0.0, np.nan])
    assert np.isnan(nd.maximum(a, b).asnumpy()).all()
    assert np.isnan(nd.minimum(a, b).asnumpy()).all()


def test_shape_mismatch_names_op_and_both_shapes():
    with pytest.raises(mx.base.MXNetError) as err:
        mx.nd.ones((2, 3)) + mx.nd.ones((4, 5))
    msg = str(err.value)
    assert "add" in msg and "(2, 3)" in msg and "(4, 5)" in msg
    with pytest.raises(mx.base.MXNetError, match=r"broadcast.*\(2, 3\).*\(4, 5\)"):
        nd.broadcast_mul(nd.ones((2, 3)), nd.ones((4, 5)))


# ---- strict elemwise_* -----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(STRICT))
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=3), seed=st.integers(0, 99))
def test_strict_forward_and_gradient(name, shape, seed):
    a, b = operands(name, shape, shape, np.random.default_rng(seed))
    strict = f"elemwise_{name}"
    check_forward(strict, [a, b], REF[name](a, b), rtol=1e-12)
    check_infer(strict, [a, b])
    check_grad(getattr(nd, strict), [a, b])
    assert get_op(strict).kind is OpKind.ELEMWISE


@pytest.mark.parametrize("name", sorted(STRICT))
def test_strict_shape_error_names_op_and_both_shapes(name):
    for alias in (f"elemwise_{name}",) + STRICT[name]:
        with pytest.raises(mx.base.MXNetError) as err:
            getattr(nd, alias)(nd.ones((2, 3)), nd.ones((3,)))
        msg = str(err.value)
        assert f"elemwise_{name}" in msg and "(2, 3)" in msg and "(3" in msg, msg
        with pytest.raises(mx.base.MXNetError, match=r"\(2, 3\), \(2, 1\)"):
            getattr(nd, alias)(nd.ones((2, 3)), nd.ones((2, 1)))


# ---- add_n ---------------------------------------------------------------------------------
@given(n=st.integers(1, 4), shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=3),
       seed=st.integers(0, 99))
def test_add_n_forward_infer_gradient(n, shape, seed):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(shape) for _ in range(n)]
    check_forward("add_n", xs, sum(xs), rtol=1e-12)
    check_infer("add_n", xs)
    check_grad(lambda *v: nd.add_n(*v) * v[0], xs)


def test_add_n_aliases_dtype_and_shape_error():
    a = nd.array([1, 2], dtype=np.int32)
    out = nd.ElementWiseSum(a, a, a)
    assert out.dtype == np.int32 and out.asnumpy().tolist() == [3, 6]
    assert nd.add_n([a, a]).asnumpy().tolist() == [2, 4]
    with pytest.raises(mx.base.MXNetError, match=r"add_n.*\(2\), \(3\)"):
        nd.add_n(a, nd.ones((3,)))


# ---- scalar forms ----------------------------------------------------------------------------
def scalar_reference(sname):
    reflected = sname.startswith("r") and sname[1:-7] in REFLECTED
    base = sname[1:-7] if reflected else sname[:-7]
    fn = REF[base]
    return base, reflected, (lambda x, s: fn(s, x)) if reflected else fn


@pytest.mark.parametrize("sname", SCALAR_OPS)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=4), seed=st.integers(0, 999))
def test_scalar_forward_matches_numpy(sname, shape, seed):
    base, reflected, ref = scalar_reference(sname)
    rng = np.random.default_rng(seed)
    x, s = operands(base, shape, (), rng, np.float32)
    if reflected:
        s, x = operands(base, (), shape, rng, np.float32)
    s = float(s)
    expected = ref(x.astype(np.float64), np.float64(np.float32(s)))
    out = check_forward(sname, [x], np.asarray(expected, np.float64), rtol=1e-5, atol=1e-6,
                        scalar=s)
    assert out.dtype == np.float32
    check_infer(sname, [x], scalar=s)


@pytest.mark.parametrize("sname", [s for s in SCALAR_OPS if scalar_reference(s)[0] in DIFF])
def test_scalar_gradients(sname):
    base, reflected, _ = scalar_reference(sname)
    rng = np.random.default_rng(5)
    if reflected:
        s, x = operands(base, (), (2, 3), rng)
    else:
        x, s = operands(base, (2, 3), (), rng)
    assert smooth_at(base, *((s, x) if reflected else (x, s)))
    fn = getattr(nd, sname)
    check_grad(lambda v: fn(v, scalar=float(s)), [x])


@pytest.mark.parametrize("sname", ["add_scalar", "sub_scalar", "rsub_scalar", "mul_scalar",
                                   "div_scalar", "rdiv_scalar", "mod_scalar", "rmod_scalar",
                                   "power_scalar", "maximum_scalar", "greater_scalar"])
def test_scalar_forms_keep_int32_and_cast_the_scalar(sname):
    base, reflected, ref = scalar_reference(sname)
    x = np.array([7, -7, 3, 2], dtype=np.int32)
    out = getattr(nd, sname)(nd.array(x, dtype=np.int32), scalar=2.5)
    assert out.dtype == np.int32
    check_infer(sname, [x], scalar=2.5)
    s = np.int32(2)  # MXNet converts the scalar to the array's type first: 2.5 -> 2
    if base == "div":
        expected = np.trunc(ref(x / 1.0, 2.0))
    else:
        expected = ref(x, s)
    np.testing.assert_array_equal(out.asnumpy(), np.asarray(expected).astype(np.int32))


def test_int_division_by_scalar_stays_int():
    x = nd.array([1, 2, 7, -7], dtype=np.int32)
    assert (x / 2).dtype == np.int32
    np.testing.assert_array_equal((x / 2).asnumpy(), [0, 1, 3, -3])
    np.testing.assert_array_equal((x / 2.5).asnumpy(), [0, 1, 3, -3])
    np.testing.assert_array_equal((7 / x).asnumpy(), [7, 3, 1, -1])


# ---- templates: the code generators' scalar expressions agree with the kernels -------------
def _eval(template, **env):
    try:
        return float(eval(template, {"math": math}, env))
    except (ValueError, OverflowError, ZeroDivisionError):
        return math.nan


@pytest.mark.parametrize("name", NAMES)
def test_binary_template_equals_kernel(name):
    rng = np.random.default_rng(7)
    a, b = operands(name, (10,), (10,), rng)
    op = get_op(name)
    kernel = op.compute([a, b], {})
    strict = get_op(f"elemwise_{name}") if name in STRICT else None
    for x, y, k in zip(a, b, kernel):
        t = _eval(op.template, a=float(x), b=float(y))
        assert t == pytest.approx(k, rel=1e-12, nan_ok=True), (name, x, y)
        if strict is not None:
            assert strict.template == op.template
    for sname in [f"{name}_scalar"] + ([f"r{name}_scalar"] if name in REFLECTED else []):
        sop = get_op(sname)
        s = float(b[0])
        kern = sop.compute([a], {"scalar": s})
        for x, k in zip(a, kern):
            t = _eval(sop.template, a=float(x), scalar=s)
            assert t == pytest.approx(k, rel=1e-12, nan_ok=True), (sname, x, s)


def test_mod_template_at_zero_divisor_and_nan_maximum():
    assert _eval(get_op("mod").template, a=3.0, b=0.0) == 0.0
    assert math.isnan(_eval(get_op("maximum").template, a=math.nan, b=1.0))
    assert math.isnan(_eval(get_op("maximum").template, a=1.0, b=math.nan))
    assert math.isnan(_eval(get_op("minimum").template, a=1.0, b=math.nan))


def test_templates_compile_with_numba():
    numba = pytest.importorskip("numba")
    ops = [get_op(n) for n in NAMES + SCALAR_OPS]
    body = "".join(f"    out[{i}] = {op.template}\n" for i, op in enumerate(ops))
    ns = {"math": math, "np": np}
    exec(f"def f(a, b, scalar):\n    out = np.empty({len(ops)})\n{body}    return out\n", ns)
    got = numba.njit(ns["f"])(1.25, -0.75, 0.5)
    for op, v in zip(ops, got):
        args = [np.array([1.25]), np.array([-0.75])] if op.kind is OpKind.BROADCAST \
            else [np.array([1.25])]
        ref = op.compute(args, {"scalar": 0.5} if "scalar" in op.attrs else {})[0]
        assert v == pytest.approx(ref, rel=1e-12, nan_ok=True), op.name


# ---- names and the NDArray operators -------------------------------------------------------
def test_mxnet_names_resolve():
    for name in NAMES:
        op = get_op(name)
        assert op.mxnet_name == f"broadcast_{name}" and get_op(f"broadcast_{name}") is op
    assert get_op("broadcast_plus") is get_op("add")
    assert get_op("broadcast_minus") is get_op("sub")
    for strict, aliases in STRICT.items():
        for alias in aliases:
            assert get_op(alias) is get_op(f"elemwise_{strict}")
    for alias, name in [("_mod", "mod"), ("_Power", "power"), ("_Maximum", "maximum"),
                        ("_Not_Equal", "not_equal"), ("_Logical_Xor", "logical_xor"),
                        ("_plus_scalar", "add_scalar"), ("_PlusScalar", "add_scalar"),
                        ("_rminus_scalar", "rsub_scalar"), ("_RMinusScalar", "rsub_scalar"),
                        ("_rdiv_scalar", "rdiv_scalar"), ("_RPowerScalar", "rpower_scalar"),
                        ("_NotEqualScalar", "not_equal_scalar"),
                        ("_lesser_equal_scalar", "lesser_equal_scalar"),
                        ("_LogicalXorScalar", "logical_xor_scalar"),
                        ("ElementWiseSum", "add_n")]:
        assert get_op(alias) is get_op(name), alias
    assert get_op("_plus_scalar").mxnet_name == "_plus_scalar"


def test_every_operator_name_resolves():
    for names in list(methods.BINARY.values()) + list(ufuncs._EXTRA.values()):
        for n in names:
            get_op(n)


@given(seed=st.integers(0, 999))
def test_ndarray_operators_and_ufuncs(seed):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 2.0, (2, 3)).astype(np.float32)
    b = rng.uniform(0.5, 2.0, (3,)).astype(np.float32)
    x, y = nd.array(a), nd.array(b)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cases = [(x + y, a64 + b64), (x - y, a64 - b64), (x * y, a64 * b64), (x / y, a64 / b64),
             (x % y, np.mod(a64, b64)), (x ** y, a64 ** b64), (x + 2, a64 + 2),
             (2 - x, 2 - a64), (x * 3, a64 * 3), (2 / x, 2 / a64), (x / 2, a64 / 2),
             (3 % x, np.mod(3, a64)), (x % 0.75, np.mod(a64, np.float32(0.75))),
             (2 ** x, 2 ** a64), (x ** 2, a64 ** 2), (-x, -a64), (abs(-x), a64),
             (x > 1, a64 > 1), (1 > x, 1 > a64), (x >= y, a64 >= b64), (x == x, a64 == a64),
             (x != 1, a64 != 1), (x <= 1.5, a64 <= 1.5),
             (nd.maximum(x, 1.0), np.maximum(a64, 1)), (nd.minimum(1.0, x), np.minimum(1, a64)),
             (nd.hypot(x, y), np.hypot(a64, b64)), (nd.power(2, x), 2 ** a64),
             (nd.logical_or(x > 1, 0), a64 > 1), (nd.subtract(1, x), 1 - a64),
             (nd.divide(x, y), a64 / b64), (nd.modulo(x, 2), np.mod(a64, 2))]
    for got, want in cases:
        assert got.dtype == np.float32
        np.testing.assert_allclose(got.asnumpy(), np.asarray(want, np.float64), rtol=1e-5)
    z = x.copy()
    z += 1
    z *= y
    np.testing.assert_allclose(z.asnumpy(), (a64 + 1) * b64, rtol=1e-5)


def test_rules_with_unknown_dims():
    T = TensorType
    outs, ins = get_op("elemwise_add").infer([T((None, 3)), T((2, None))], {})
    assert outs[0].shape == (2, 3) and all(t.shape == (2, 3) for t in ins)
    outs, _ = get_op("add").infer([T((None, 3)), T((1, 3))], {})
    assert outs[0].shape == (None, 3)
    outs, _ = get_op("greater").infer([T((4, 1), "int32"), T((None,), "int32")], {})
    assert outs[0] == T((4, None), "int32")
    outs, _ = get_op("rsub_scalar").infer([T((None, 4), "int32")], {"scalar": 1.0})
    assert outs[0] == T((None, 4), "int32")
    outs, ins = get_op("add_n").infer([T((None, 3)), T((2, None)), T((None, None))], {})
    assert outs[0].shape == (2, 3) and ins[2].shape == (2, 3)
    with pytest.raises(mx.base.MXNetError, match=r"elemwise_mul.*\(2, 3\), \(4, \?\)"):
        get_op("_Mul").infer([T((2, 3)), T((4, None))], {})


def test_second_derivatives_through_binary_rules():
    x0 = np.array([0.5, 1.5, 2.0])
    x = nd.array(x0, dtype=np.float64)
    x.attach_grad()
    with autograd.record():
        y = x ** 3 + 1 / x + nd.hypot(x, 2 * x) + 2 ** x + x * x % 1.75
        (dx,) = autograd.grad(y, [x], create_graph=True)
    dx.backward()
    expected = 6 * x0 + 2 / x0 ** 3 + np.log(2) ** 2 * 2 ** x0 + 2
    np.testing.assert_allclose(x.grad.asnumpy(), expected, rtol=1e-10)
