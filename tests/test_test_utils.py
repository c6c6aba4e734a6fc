"""ember.test_utils: MXNet's test helpers behave as MXNet's and fail when they should."""
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ember as mx
from ember import autograd
from ember import test_utils as tu
from ember.base import MXNetError


# ---- tolerances ----------------------------------------------------------------------------------
def test_default_tolerances_follow_mxnet():
    assert tu.get_rtol() == 1e-5 and tu.get_atol() == 1e-20
    assert tu.get_rtol(dtype=np.float32) == 1e-4 and tu.get_atol(dtype=np.float16) == 1e-1
    assert tu.get_rtol(0.5) == 0.5 and tu.get_etol() == 0 and tu.get_etol(0.1) == 0.1
    f16, f32 = np.ones(2, np.float16), mx.nd.ones((2,))
    assert tu.get_tols(f16, f32, None, None) == (1e-2, 1e-1)  # the looser of the two
    assert tu.get_tols(f32, 1.0, None, {np.dtype(np.float32): 7.0}) == (1e-4, 7.0)
    assert tu.get_tols(np.ones(2, np.int32), np.ones(2, np.int64), None, None) == (0, 0)
    assert tu.default_numeric_eps()[np.dtype(np.float32)] == 1.0 / 2**9
    assert tu.effective_dtype(f32) == np.dtype(np.float32)
    assert tu.default_dtype() is np.float32


# ---- assert_almost_equal -------------------------------------------------------------------------
def test_assert_almost_equal_passes_within_tolerance():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    tu.assert_almost_equal(a, a + 5e-4)  # float32 default atol 1e-3
    tu.assert_almost_equal(mx.nd.array(a), a * (1 + 5e-5))
    tu.assert_almost_equal(a, a[0], rtol=10, atol=10)  # broadcasting compare
    tu.assert_allclose(a, a.copy())
    assert tu.almost_equal(a, a + 1e-4, rtol=1e-3, atol=1e-3)
    assert not tu.almost_equal(a, a + 1e-4)  # MXNet: None means float64's 1e-5 / 1e-20


def test_assert_almost_equal_names_the_worst_position():
    a = np.zeros((3, 4), dtype=np.float32)
    b = a.copy()
    b[1, 2], b[2, 0] = 5.0, 0.5
    with pytest.raises(AssertionError) as err:
        tu.assert_almost_equal(a, b, names=("ours", "theirs"))
    msg = str(err.value)
    assert "Location of maximum error: (1, 2), ours=0.00000000, theirs=5.00000000" in msg
    assert "(2, 0)" in msg and "mismatch 16.666667%" in msg
    assert "rtol=1.000000e-04, atol=1.000000e-03" in msg


def test_assert_almost_equal_mismatches_limits_the_list():
    a, b = np.arange(50.0) + 1, np.zeros(50)
    with pytest.raises(AssertionError) as err:
        tu.assert_almost_equal(a, b, mismatches=(3, 3))
    lines = [ln for ln in str(err.value).splitlines() if ": Error " in ln]
    assert len(lines) == 3 and "(49,)" in lines[0]


def test_assert_almost_equal_nan_shape_and_bool():
    nan = np.array([1.0, np.nan])
    tu.assert_almost_equal(nan, nan, equal_nan=True)
    with pytest.raises(AssertionError, match=r"Location of maximum error: \(1,\)"):
        tu.assert_almost_equal(nan, nan)
    with pytest.raises(AssertionError, match="shape"):
        tu.assert_almost_equal(np.ones((2, 1)), np.ones((2, 2)), use_broadcast=False)
    with pytest.raises(AssertionError, match="do not broadcast"):
        tu.assert_almost_equal(np.ones(3), np.ones(4))
    tu.assert_almost_equal(np.array([True, False]), np.array([True, False]))
    with pytest.raises(AssertionError):
        tu.assert_almost_equal(np.array([True, False]), np.array([True, True]))


def test_assert_almost_equal_integers_are_exact():
    a = np.array([1, 2, 3], dtype=np.int32)
    tu.assert_almost_equal(a, a.copy())
    with pytest.raises(AssertionError, match=r"\(2,\)"):
        tu.assert_almost_equal(a, a + np.array([0, 0, 1], dtype=np.int32))


def test_assert_almost_equal_with_err_tolerates_a_fraction():
    a = np.zeros(10)
    b = a.copy()
    b[3] = 1
    tu.assert_almost_equal_with_err(a, b, etol=0.2)
    with pytest.raises(AssertionError, match=r"\(3,\)"):
        tu.assert_almost_equal_with_err(a, b, etol=0.05)
    with pytest.raises(AssertionError):
        tu.assert_almost_equal_with_err(a, b)  # etol 0: plain assert_almost_equal
    tu.assert_almost_equal_ignore_nan(np.array([np.nan, 1.0]), np.array([2.0, 1.0]))


def test_same_and_assert_exception():
    assert tu.same(np.arange(3), mx.nd.array([0, 1, 2], dtype="int64"))
    assert not tu.same(np.arange(3), np.arange(1, 4))
    tu.assert_exception(int, ValueError, "x")
    with pytest.raises(AssertionError, match="did not raise"):
        tu.assert_exception(int, ValueError, "3")


# ---- contexts and environment --------------------------------------------------------------------
def test_default_context_can_be_set():
    assert tu.default_context() == mx.current_context()
    try:
        tu.set_default_context(mx.cpu(1))
        assert tu.default_context() == mx.cpu(1) and mx.nd.zeros((1,)).context == mx.cpu(1)
    finally:
        tu.set_default_context(mx.cpu(0))
    assert tu.default_context() == mx.cpu(0)


def test_environment_sets_and_restores():
    os.environ.pop("EMBER_T1", None)
    os.environ["EMBER_T2"] = "old"
    with tu.environment("EMBER_T1", "1"):
        assert os.environ["EMBER_T1"] == "1"
    assert "EMBER_T1" not in os.environ
    with pytest.raises(RuntimeError):
        with tu.environment({"EMBER_T1": "a", "EMBER_T2": None}):
            assert os.environ["EMBER_T1"] == "a" and "EMBER_T2" not in os.environ
            raise RuntimeError
    assert "EMBER_T1" not in os.environ and os.environ.pop("EMBER_T2") == "old"


# ---- random data ---------------------------------------------------------------------------------
@given(st.integers(1, 6), st.integers(1, 5), st.booleans())
def test_rand_shapes_in_range(num_dim, dim, zero):
    for shape in (tu.rand_shape_nd(num_dim, dim, zero), tu.rand_shape_2d(dim, dim, zero),
                  tu.rand_shape_3d(dim, dim, dim, zero)):
        assert all((0 if zero else 1) <= d <= dim for d in shape)
    assert len(tu.rand_shape_nd(num_dim, dim)) == num_dim
    x, y = tu.rand_coord_2d(0, dim, 10, 10 + dim)
    assert 0 <= x < dim and 10 <= y < 10 + dim


def test_random_arrays_and_rand_ndarray():
    a = tu.random_arrays((2, 3))
    assert a.shape == (2, 3) and a.dtype == np.float32
    s, b = tu.random_arrays((), (4,))
    assert s.shape == () and b.shape == (4,)
    (u,) = tu.random_uniform_arrays((100,), low=2, high=3, dtype=np.float64)
    assert u.dtype == np.float64 and (u >= 2).all() and (u < 3).all()
    pick = tu.random_sample(list(range(10)), 4)
    assert len(set(pick)) == 4 and set(pick) <= set(range(10))
    x = tu.rand_ndarray((3, 2), dtype="float64")
    assert isinstance(x, mx.nd.NDArray) and x.shape == (3, 2) and x.dtype == np.float64
    with pytest.raises(MXNetError, match="csr"):
        tu.rand_ndarray((3, 2), stype="csr")


# ---- NumPy references ----------------------------------------------------------------------------
@given(st.lists(st.integers(1, 4), min_size=1, max_size=4), st.data(), st.booleans())
def test_np_reduce_matches_numpy(shape, data, keepdims):
    x = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    axes = data.draw(st.lists(st.integers(0, len(shape) - 1), unique=True, max_size=len(shape)))
    got = tu.np_reduce(x, axes, keepdims, np.sum)
    np.testing.assert_array_equal(got, np.sum(x, axis=tuple(axes), keepdims=keepdims))
    np.testing.assert_array_equal(tu.np_reduce(x, None, False, np.max), x.max())


def test_collapse_sum_like():
    a = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(tu.collapse_sum_like(a, (3, 1)), a.sum(axis=(0, 2))[:, None])
    np.testing.assert_array_equal(tu.collapse_sum_like(a, (1, 4)), a.sum(axis=(0, 1))[None])
    assert tu.collapse_sum_like(np.zeros((0, 3)), (3,)).shape == (3,)
    assert tu.is_op_runnable()


# ---- gradient checks of callables ----------------------------------------------------------------
class WrongSquare(autograd.Function):
    """x * x with a backward that forgets the factor 2."""

    def forward(self, x):
        self.save_for_backward(x)
        return x * x

    def backward(self, dy):
        (x,) = self.saved_tensors
        return dy * x


def test_numeric_grad_of_square():
    x = np.array([[1.0, -2.0], [0.5, 3.0]])
    g = tu.numeric_grad(lambda x: x * x, {"x": x}, eps=1e-4, dtype=np.float64)
    np.testing.assert_allclose(g["x"], 2 * x, rtol=1e-6)
    np.testing.assert_array_equal(x, [[1.0, -2.0], [0.5, 3.0]])  # location left unchanged


def test_check_numeric_gradient_passes_and_catches_a_wrong_rule():
    a, b = np.random.rand(2, 3) + 0.5, np.random.rand(2, 3) + 0.5
    tu.check_numeric_gradient(lambda a, b: a * b + a / b, [a, b])
    tu.check_numeric_gradient(lambda a, b: a * b, {"a": a, "b": b},
                              grad_nodes={"a": "add", "b": "null"}, dtype=np.float64)
    tu.check_numeric_gradient(lambda a, b: a * b, [a, b], grad_nodes=["b"])
    with pytest.raises(AssertionError, match="NUMERICAL_x"):
        tu.check_numeric_gradient(lambda x: WrongSquare()(x), [a], dtype=np.float64)


def test_check_symbolic_forward_and_backward():
    a, b = np.random.rand(2, 3), np.random.rand(2, 3)
    outs = tu.check_symbolic_forward(lambda a, b: a * b, [a, b], [a * b])
    assert isinstance(outs[0], mx.nd.NDArray)
    with pytest.raises(AssertionError, match="EXPECTED_output0"):
        tu.check_symbolic_forward(lambda a, b: a * b, [a, b], [a * b + 1])
    og = np.random.rand(2, 3)
    grads = tu.check_symbolic_backward(lambda a, b: a * b, [a, b], [og], [og * b, og * a])
    tu.assert_almost_equal(grads["a"], og * b)
    tu.check_symbolic_backward(lambda a, b: a * b, {"a": a, "b": b}, None, {"a": b},
                               grad_req={"a": "add", "b": "null"})
    with pytest.raises(AssertionError, match="BACKWARD_a"):
        tu.check_symbolic_backward(lambda a, b: a * b, [a, b], [og], [og * a, og * a])


def test_symbols_are_refused_until_the_compiler():
    class FakeSymbol:
        def list_arguments(self):
            return ["x"]

        def __call__(self, *args):
            return self

    for check in (lambda: tu.check_numeric_gradient(FakeSymbol(), [np.ones(2)]),
                  lambda: tu.check_symbolic_forward(FakeSymbol(), [np.ones(2)], [np.ones(2)]),
                  lambda: tu.check_symbolic_backward(FakeSymbol(), [np.ones(2)], None, [])):
        with pytest.raises(MXNetError, match="ember.sym"):
            check()


# ---- random generator checks ---------------------------------------------------------------------
def test_verify_generator_accepts_right_and_rejects_wrong_distribution():
    ss = pytest.importorskip("scipy.stats")
    buckets, probs = tu.gen_buckets_probs_with_ppf(lambda p: ss.norm.ppf(p, 0, 1), 5)
    np.random.seed(0)
    ps = tu.verify_generator(lambda n: np.random.normal(0, 1, size=n), buckets, probs,
                             nsamples=20000, nrepeat=3)
    assert len(ps) == 3
    with pytest.raises(AssertionError, match="Generator test fails"):
        tu.verify_generator(lambda n: np.random.normal(0.3, 1, size=n), buckets, probs,
                            nsamples=20000, nrepeat=3)
    tu.verify_generator(lambda n: np.random.randint(0, 3, size=n), [0, 1, 2], [1 / 3] * 3,
                        nsamples=20000, nrepeat=3)
