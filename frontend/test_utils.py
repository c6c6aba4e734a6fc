"""``ember.test_utils``: the helpers of ``mxnet.test_utils`` that MXNet 1.9.1's tests import.

Same names, signatures and tolerances as MXNet's. The gradient checkers take a Python
callable over NDArrays where MXNet takes a Symbol; Symbols arrive with the compiler (ember.sym).
"""
from __future__ import annotations

import numbers
import os
from contextlib import contextmanager

import numpy as np
import numpy.random as rnd
import numpy.testing as npt

from ember.base import MXNetError
from ember.context import Context, current_context
from ember.ndarray.ndarray import NDArray, array

_FLOATS = (np.float16, np.float32, np.float64)
_F64, _DEFAULT_DTYPE = np.dtype(np.float64), np.float32
_RTOLS = {np.dtype(np.float16): 1e-2, np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-5}
_ATOLS = {np.dtype(np.float16): 1e-1, np.dtype(np.float32): 1e-3, np.dtype(np.float64): 1e-20}
_EXACT = {np.dtype(t): 0 for t in (np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32,
                                   np.uint32, np.int64, np.uint64)}


# ---- contexts, dtypes, tolerances ----------------------------------------------------------------
def default_context() -> Context:
    """The context tests run on: the current one."""
    return current_context()


def set_default_context(ctx: Context) -> None:
    """Make ``ctx`` the current context of this thread."""
    Context._local.value = ctx


def default_dtype():
    """The dtype tests create arrays with."""
    return _DEFAULT_DTYPE


def default_rtols() -> dict:
    """Relative tolerance per dtype (0 for integers and bool)."""
    return {**_RTOLS, **_EXACT}


def default_atols() -> dict:
    """Absolute tolerance per dtype (0 for integers and bool)."""
    return {**_ATOLS, **_EXACT}


def default_numeric_eps() -> dict:
    """Finite-difference step per float dtype (powers of two: no bits lost as a delta)."""
    return {np.dtype(np.float16): 1.0 / 2**6, np.dtype(np.float32): 1.0 / 2**9,
            np.dtype(np.float64): 1.0 / 2**14}


def effective_dtype(dat) -> np.dtype:
    """The dtype whose tolerance applies to ``dat`` (ember runs no TF32 math: its own)."""
    return np.dtype(dat.dtype) if hasattr(dat, "dtype") else np.asarray(dat).dtype


def get_tolerance(dat, tol, default_tol: dict):
    """``tol`` if a number, else its (or ``default_tol``'s) entry for ``dat``'s dtype."""
    if isinstance(tol, numbers.Number):
        return tol
    dtype = effective_dtype(dat)
    tol = {} if tol is None else tol
    return tol.get(dtype, default_tol.get(dtype, 0))


def get_tols(x, y, rtol, atol) -> tuple:
    """(rtol, atol) for comparing ``x`` and ``y``: the looser default of the two dtypes."""
    x = np.array(x) if isinstance(x, numbers.Number) else x
    y = np.array(y) if isinstance(y, numbers.Number) else y
    return (max(get_tolerance(x, rtol, default_rtols()), get_tolerance(y, rtol, default_rtols())),
            max(get_tolerance(x, atol, default_atols()), get_tolerance(y, atol, default_atols())))


def get_atol(atol=None, dtype=_F64):
    """``atol``, or the default absolute tolerance of ``dtype``."""
    return default_atols()[np.dtype(dtype)] if atol is None else atol


def get_rtol(rtol=None, dtype=_F64):
    """``rtol``, or the default relative tolerance of ``dtype``."""
    return default_rtols()[np.dtype(dtype)] if rtol is None else rtol


def get_etol(etol=None):
    """``etol`` (the tolerated fraction of mismatching elements), default 0."""
    return 0 if etol is None else etol


# ---- random data ---------------------------------------------------------------------------------
def random_arrays(*shapes):
    """Standard-normal NumPy arrays of ``default_dtype()``; one array for one shape."""
    arrays = [np.array(np.random.randn(), dtype=_DEFAULT_DTYPE) if len(s) == 0
              else np.random.randn(*s).astype(default_dtype()) for s in shapes]
    return arrays[0] if len(arrays) == 1 else arrays


def random_uniform_arrays(*shapes, low=0.0, high=1.0, dtype=None) -> list:
    """Uniform [low, high) NumPy arrays, one per shape (always a list)."""
    dtype = default_dtype() if dtype is None else dtype
    return [np.random.uniform(low, high, size=s).astype(dtype) for s in shapes]


def random_sample(population, k: int) -> list:
    """``k`` elements of ``population`` drawn without replacement."""
    assert 0 <= k <= len(population)
    population = list(population)
    np.random.shuffle(population)
    return population[:k]


def rand_ndarray(shape, stype="default", density=None, dtype=None, modifier_func=None,
                 shuffle_csr_indices=False, distribution=None, ctx=None) -> NDArray:
    """A standard-normal NDArray of ``shape`` (dense storage only)."""
    if stype != "default":
        raise MXNetError(f"rand_ndarray: storage type {stype!r} is not supported; ember arrays "
                         "are dense only (stype='default')")
    return array(random_arrays(shape), ctx=ctx or default_context(), dtype=dtype)


def rand_shape_2d(dim0=10, dim1=10, allow_zero_size=False) -> tuple:
    """A random 2-d shape with dims in [1, dim] (or [0, dim])."""
    low = 0 if allow_zero_size else 1
    return rnd.randint(low, dim0 + 1), rnd.randint(low, dim1 + 1)


def rand_shape_3d(dim0=10, dim1=10, dim2=10, allow_zero_size=False) -> tuple:
    """A random 3-d shape with dims in [1, dim] (or [0, dim])."""
    low = 0 if allow_zero_size else 1
    return rnd.randint(low, dim0 + 1), rnd.randint(low, dim1 + 1), rnd.randint(low, dim2 + 1)


def rand_shape_nd(num_dim, dim=10, allow_zero_size=False) -> tuple:
    """A random ``num_dim``-d shape with dims in [1, dim] (or [0, dim])."""
    low = 0 if allow_zero_size else 1
    return tuple(int(d) for d in rnd.randint(low, dim + 1, size=num_dim))


def rand_coord_2d(x_low, x_high, y_low, y_high) -> tuple:
    """A random integer point of [x_low, x_high) x [y_low, y_high)."""
    return (np.random.randint(x_low, x_high, dtype=np.int64),
            np.random.randint(y_low, y_high, dtype=np.int64))


# ---- NumPy references ----------------------------------------------------------------------------
def np_reduce(dat, axis, keepdims, numpy_reduce_func):
    """Reduce ``dat`` over ``axis`` (int, list or None) one axis at a time."""
    axis = [axis] if isinstance(axis, int) else \
        list(axis) if axis is not None else list(range(dat.ndim))
    ret = dat
    for i in sorted(axis, reverse=True):
        ret = numpy_reduce_func(ret, axis=i)
    if keepdims:
        shape = list(dat.shape)
        for i in axis:
            shape[i] = 1
        ret = ret.reshape(shape)
    return ret


def collapse_sum_like(a, shape):
    """Sum ``a`` over the axes that ``shape`` broadcasts along, giving ``shape``."""
    assert len(a.shape) >= len(shape)
    if np.prod(shape) == 0 or a.size == 0:
        return np.zeros(shape, dtype=a.dtype)
    lead = len(a.shape) - len(shape)
    axes = list(range(lead))
    for i, s in enumerate(shape):
        if s != a.shape[i + lead]:
            assert s == 1
            axes.append(i + lead)
    return np.sum(a, axis=tuple(axes)).reshape(shape)


# ---- comparisons ---------------------------------------------------------------------------------
def _np(x):
    return x.asnumpy() if isinstance(x, NDArray) else np.asarray(x)


def same(a, b) -> bool:
    """Whether two arrays have equal shapes and elements."""
    return np.array_equal(_np(a), _np(b))


def _check_shapes(a, b):
    if a.shape != b.shape:
        raise AssertionError(npt.build_err_msg([a, b], err_msg=f"a.shape = {a.shape} and "
                                               f"b.shape = {b.shape} are not equal"))


def almost_equal(a, b, rtol=None, atol=None, equal_nan=False, use_broadcast=True) -> bool:
    """Whether ``|a - b| <= atol + rtol * |b|`` everywhere (``np.allclose``)."""
    a, b = _np(a), _np(b)
    if not use_broadcast:
        _check_shapes(a, b)
    return bool(np.allclose(a, b, rtol=get_rtol(rtol), atol=get_atol(atol), equal_nan=equal_nan))


def _violations(a, b, rtol, atol, equal_nan):
    """Per element: how many times over the tolerance ``|a - b|`` is (0 where close)."""
    a, b = np.broadcast_arrays(a, b)
    close = np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan)
    with np.errstate(all="ignore"):
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        viol = diff / (atol + rtol * np.abs(b.astype(np.float64)) + 1e-20)
    return a, b, np.where(close, 0.0, np.nan_to_num(viol, nan=np.inf, posinf=np.inf))


def _location(a, b, index, names, maximum=False) -> str:
    return (f"Location of {'maximum ' if maximum else ''}error: {index}, "
            f"{names[0]}={float(a[index]):.8f}, {names[1]}={float(b[index]):.8f}")


def _mismatch_message(a, b, rtol, atol, names, equal_nan, mismatches) -> str:
    try:
        a, b, viol = _violations(a, b, rtol, atol, equal_nan)
    except ValueError:
        return f"shapes {np.shape(a)} and {np.shape(b)} do not broadcast together"
    bad = np.flatnonzero(viol)
    order = bad[np.argsort(-viol.reshape(-1)[bad], kind="stable")]
    first = tuple(int(i) for i in np.unravel_index(order[0], viol.shape))
    lines = [f"Error {viol[first]:f} exceeds tolerance rtol={rtol:e}, atol={atol:e} "
             f"(mismatch {100 * len(bad) / viol.size:f}%).",
             _location(a, b, first, names, maximum=True)]
    for i, flat in enumerate(order[:max(mismatches[0], 0)]):
        idx = tuple(int(i) for i in np.unravel_index(flat, viol.shape))
        lines.append(f"{i + 1:3d}: Error {viol[idx]:f}  {_location(a, b, idx, names)}")
    with np.printoptions(threshold=4, suppress=True):
        return npt.build_err_msg([a, b], err_msg="\n".join(lines), names=names)


def assert_almost_equal(a, b, rtol=None, atol=None, names=("a", "b"), equal_nan=False,
                        use_broadcast=True, mismatches=(10, 10)) -> None:
    """Raise ``AssertionError`` naming the worst positions unless ``a`` and ``b`` are close.

    ``rtol``/``atol`` are numbers, dicts dtype -> tolerance, or ``None`` for the defaults of
    the two dtypes; ``mismatches[0]`` positions are listed in the message.
    """
    rtol, atol = get_tols(a, b, rtol, atol)
    a, b = _np(a), _np(b)
    if not use_broadcast:
        _check_shapes(a, b)
    if a.dtype == np.bool_ and b.dtype == np.bool_:
        npt.assert_equal(a, b)
        return
    try:
        if np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan):
            return
    except ValueError:
        pass
    raise AssertionError(_mismatch_message(a, b, rtol, atol, names, equal_nan, mismatches))


def assert_allclose(a, b, rtol=1e-07, atol=0, equal_nan=True) -> None:
    """``assert_almost_equal`` with NumPy's ``assert_allclose`` defaults."""
    assert_almost_equal(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan)


def assert_almost_equal_with_err(a, b, rtol=None, atol=None, etol=None, names=("a", "b"),
                                 equal_nan=False, mismatches=(10, 10)) -> None:
    """Like ``assert_almost_equal`` but tolerates a fraction ``etol`` of mismatches."""
    etol = get_etol(etol)
    if etol <= 0:
        assert_almost_equal(a, b, rtol=rtol, atol=atol, names=names, equal_nan=equal_nan,
                            mismatches=mismatches)
        return
    rtol, atol = get_tols(a, b, rtol, atol)
    a, b = _np(a), _np(b)
    equals = np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan)
    if 1 - np.count_nonzero(equals) / equals.size > etol:
        raise AssertionError(_mismatch_message(a, b, rtol, atol, names, equal_nan, mismatches))


def assert_almost_equal_ignore_nan(a, b, rtol=None, atol=None, names=("a", "b")) -> None:
    """``assert_almost_equal`` after zeroing the positions where either side is NaN."""
    a, b = np.copy(_np(a)), np.copy(_np(b))
    nan = np.logical_or(np.isnan(a), np.isnan(b))
    a[nan], b[nan] = 0, 0
    assert_almost_equal(a, b, rtol, atol, names)


def assert_exception(f, exception_type, *args, **kwargs) -> None:
    """Assert that ``f(*args, **kwargs)`` raises ``exception_type``."""
    try:
        f(*args, **kwargs)
    except exception_type:
        return
    raise AssertionError(f"{getattr(f, '__name__', f)} did not raise {exception_type.__name__}")


def retry(n: int):
    """Decorator: run a stochastic test up to ``n`` times until it passes."""
    assert n > 0

    def decorate(f):
        def wrapper(*args, **kwargs):
            for i in range(n):
                try:
                    return f(*args, **kwargs)
                except AssertionError:
                    if i == n - 1:
                        raise
        return wrapper
    return decorate


@contextmanager
def environment(*args):
    """Set environment variables for a ``with`` block: ``(name, value)`` or ``({name: value})``.

    A value of ``None`` unsets the variable; the previous state is restored afterwards.
    """
    if len(args) == 1 and isinstance(args[0], dict):
        env = args[0]
    else:
        assert len(args) == 2, "Expecting one dict arg or two args: env var name and value"
        env = {args[0]: args[1]}
    saved = {k: os.environ.get(k) for k in env}

    def apply(values):
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    apply(env)
    try:
        yield
    finally:
        apply(saved)


def is_op_runnable() -> bool:
    """Every ember op runs on every context (no TVM-generated ops to skip)."""
    return True


# ---- random generator checks ---------------------------------------------------------------------
def gen_buckets_probs_with_ppf(ppf, nbuckets: int) -> tuple:
    """``nbuckets`` equal-probability buckets from a quantile function ``ppf``."""
    assert nbuckets > 0
    probs = [1.0 / nbuckets] * nbuckets
    return [(ppf(i / nbuckets), ppf((i + 1) / nbuckets)) for i in range(nbuckets)], probs


def chi_square_check(generator, buckets, probs, nsamples=1000000) -> tuple:
    """(p value, observed, expected frequencies) of a chi-square test of ``generator(n)``.

    ``buckets`` are (low, high) ranges for a continuous distribution, else the values.
    """
    import scipy.stats as ss
    assert isinstance(buckets, list) and len(probs) == len(buckets)
    samples = np.asarray(_np(generator(nsamples))).reshape(-1)
    expected = (nsamples * np.array(probs, dtype=np.float64)).astype(np.int64)
    if isinstance(buckets[0], list | tuple):
        edges = np.array(buckets, dtype=np.float32).reshape(-1)
        ids = np.searchsorted(edges, samples, side="right") // 2
        observed = np.array([(ids == i).sum() for i in range(len(buckets))])
    else:
        observed = np.array([(samples == v).sum() for v in buckets])
    scaled = expected * (observed.sum() / max(expected.sum(), 1))  # scipy wants equal sums
    _, p = ss.chisquare(f_obs=observed, f_exp=scaled)
    return p, observed, expected


def verify_generator(generator, buckets, probs, nsamples=1000000, nrepeat=5, success_rate=0.2,
                     alpha=0.05) -> list:
    """Chi-square test ``generator`` ``nrepeat`` times; fail if too few p values exceed alpha."""
    results = [chi_square_check(generator, buckets, probs, nsamples) for _ in range(nrepeat)]
    ps = [r[0] for r in results]
    if (np.array(ps) > alpha).sum() < nrepeat * success_rate:
        raise AssertionError(f"Generator test fails, Chi-square p={ps}, "
                             f"obs_freq={[r[1] for r in results]}, "
                             f"expected_freq={[r[2] for r in results]}.\n"
                             f"buckets={buckets}, probs={probs}")
    return ps


import ember as mx  # noqa: E402,F401  (MXNet's tests reach mx through test_utils' *)
from ember.optimizer.testing import compare_ndarray_tuple, compare_optimizer  # noqa: E402,F401
from ember.util import use_np  # noqa: E402,F401


@contextmanager
def discard_stderr():
    """Silence what the block writes to the process's stderr (file descriptor 2)."""
    import sys
    with open(os.devnull, "w") as sink:
        try:
            fd = sys.stderr.fileno()
        except (AttributeError, OSError):
            yield
            return
        saved = os.dup(fd)
        try:
            os.dup2(sink.fileno(), fd)
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
from ember._gradcheck import (  # noqa: E402,F401
    check_numeric_gradient,
    check_symbolic_backward,
    check_symbolic_forward,
    numeric_grad,
)
from ember.test_utils_data import *  # noqa: E402,F401,F403  (the rest of MXNet's names)
from ember.test_utils_more import *  # noqa: E402,F401,F403
from ember.test_utils_more import __getattr__  # noqa: E402,F401  (scipy.stats as ``ss``)
