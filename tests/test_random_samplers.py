"""Random samplers (ir/opset_random.py), their densities (ir/opset_random_pdf.py) and the
``nd.random`` / ``sym.random`` / ``mx.random`` namespaces: moments against the distributions'
formulas, shapes and dtypes, densities against scipy.stats, density gradients against finite
differences, eager against hybridized, seeding."""
import math

import numpy as np
import pytest
import scipy.stats as ss

import ember as mx
from ember.base import MXNetError
from ember.ir.opset_random_pdf import lgamma, lgamma_numpy

N = 40000  # samples per moment check: the bounds below are 6 standard errors


def _moments_ok(x, mean, var):
    x = np.asarray(x, np.float64).ravel()
    n = x.size
    assert abs(x.mean() - mean) < 6 * math.sqrt(var / n) + 1e-9, (x.mean(), mean)
    # the sample variance's standard error, with a generous kurtosis allowance
    assert abs(x.var() - var) < 6 * var * math.sqrt(8.0 / n) + 1e-9, (x.var(), var)


# (sampler call, mean, variance)
CASES = {
    "uniform": (lambda r, **k: r.uniform(-1.5, 3.0, **k), 0.75, 4.5 ** 2 / 12),
    "normal": (lambda r, **k: r.normal(10.0, 0.5, **k), 10.0, 0.25),
    "randn": (lambda r, shape, **k: r.randn(*shape, loc=2.0, scale=3.0, **k), 2.0, 9.0),
    "gamma": (lambda r, **k: r.gamma(9.0, 0.5, **k), 4.5, 9.0 * 0.25),
    "exponential": (lambda r, **k: r.exponential(0.25, **k), 0.25, 0.0625),
    "poisson": (lambda r, **k: r.poisson(4.0, **k), 4.0, 4.0),
    "negative_binomial": (lambda r, **k: r.negative_binomial(3, 0.4, **k), 4.5, 4.5 / 0.4),
    "generalized_negative_binomial": (
        lambda r, **k: r.generalized_negative_binomial(2.0, 0.3, **k), 2.0, 2.0 + 0.3 * 4.0),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_scalar_samplers_have_the_distributions_moments(name):
    draw, mean, var = CASES[name]
    mx.random.seed(11)
    x = draw(mx.nd.random, shape=(N // 100, 100))
    assert x.shape == (N // 100, 100) and x.dtype == np.float32
    _moments_ok(x.asnumpy(), mean, var)


@pytest.mark.parametrize("name", ["uniform", "normal", "gamma", "exponential", "poisson"])
def test_moment_checks_can_fail(name):
    """The bounds are tight enough to catch a wrong parameter (mean off by 5%)."""
    draw, mean, var = CASES[name]
    mx.random.seed(11)
    x = draw(mx.nd.random, shape=(N,)).asnumpy()
    with pytest.raises(AssertionError):
        _moments_ok(x, mean * 1.05 + 0.05, var)


PER_ROW = {  # nd.random.<name>(arrays...) -> per-row (mean, var) of the parameters
    "uniform": ([[0.0, 2.5], [-9.75, -1.0]], [[1.0, 3.7], [4.2, 10.5]],
                lambda a, b: ((a + b) / 2, (b - a) ** 2 / 12)),
    "normal": ([[0.0, 2.5], [-9.75, -7.0]], [[1.0, 3.7], [4.2, 1.5]], lambda m, s: (m, s * s)),
    "gamma": ([[0.5, 2.5], [9.75, 11.0]], [[1.0, 0.7], [0.5, 0.3]],
              lambda a, b: (a * b, a * b * b)),
    "exponential": ([[1.0, 1 / 8.5], [1 / 2.7, 2.0]], None, lambda s: (s, s * s)),
    "poisson": ([[25.0, 8.5], [2.7, 0.5]], None, lambda lam: (lam, lam)),
    "negative_binomial": ([[3, 4], [5, 6]], [[0.4, 0.77], [0.5, 0.84]],
                          lambda k, p: (k * (1 - p) / p, k * (1 - p) / p ** 2)),
    "generalized_negative_binomial": ([[2.0, 2.5], [1.3, 1.9]], [[1.0, 0.1], [0.2, 0.5]],
                                      lambda m, a: (m, m + a * m * m)),
}


@pytest.mark.parametrize("name", sorted(PER_ROW))
def test_array_parameters_sample_one_distribution_per_element(name):
    p1, p2, moments = PER_ROW[name]
    params = [np.array(p, np.float64) for p in (p1, p2) if p is not None]
    mx.random.seed(5)
    x = getattr(mx.nd.random, name)(*[mx.nd.array(p) for p in params], shape=(50, 200),
                                    dtype="float64")
    assert x.shape == (2, 2, 50, 200) and x.dtype == np.float64
    for i in range(2):
        for j in range(2):
            mean, var = moments(*[p[i, j] for p in params])
            _moments_ok(x.asnumpy()[i, j], mean, var)


def test_samplers_give_their_parameters_zero_gradients():
    mu = mx.nd.array([1.0, 2.0])
    mu.attach_grad()
    mu.grad[:] = 7.0  # MXNet writes zeros (grad_req write), it does not leave old values
    with mx.autograd.record():
        y = mx.nd.random.normal(mu, mx.nd.ones(2)) + mx.nd.random.uniform_like(mu)
        y.backward()
    assert mu.grad.asnumpy().tolist() == [0.0, 0.0]


def test_sample_ops_shapes_dtypes_and_names():
    mu, sigma = mx.nd.array([0.0, 10.0]), mx.nd.array([1.0, 2.0])
    assert mx.nd.sample_normal(mu, sigma).shape == (2,)
    assert mx.nd.sample_normal(mu=mu, sigma=sigma, shape=(3, 4)).shape == (2, 3, 4)
    assert mx.nd.random.normal(mu, sigma, shape=3, dtype="float16").dtype == np.float16
    assert mx.nd._internal._sample_uniform(mu, sigma + 10, shape=2).shape == (2, 2)
    with pytest.raises(MXNetError, match="all numbers or all arrays"):
        mx.nd.random.normal(mu, 1.0)
    with pytest.raises(MXNetError, match="dtype"):
        mx.nd.random.uniform(shape=2, dtype="int32")
    with pytest.raises(MXNetError, match="scale"):
        mx.nd.random.normal(0.0, -1.0)
    with pytest.raises(MXNetError, match=r"p in \(0, 1\]"):
        mx.nd.random.negative_binomial(3, 1.5)
    with pytest.raises(MXNetError, match="lam"):
        mx.nd.sample_poisson(mx.nd.array([1.0, -2.0]))


def test_like_samplers_take_the_shape_and_dtype_of_data():
    data = mx.nd.ones((3, 5), dtype="float64")
    for name in ("uniform", "normal", "gamma", "exponential", "poisson", "negative_binomial",
                 "generalized_negative_binomial"):
        y = getattr(mx.nd.random, f"{name}_like")(data)
        assert y.shape == (3, 5) and y.dtype == np.float64, name
    assert mx.nd.random.uniform_like(data, low=2.0, high=3.0).asnumpy().min() >= 2.0
    assert mx.nd.random.normal_like(data, dtype="float16").dtype == np.float16
    mx.random.seed(2)
    _moments_ok(mx.nd.random.exponential_like(mx.nd.ones((N,)), lam=4.0).asnumpy(),
                0.25, 0.0625)


def test_seeds_reproduce_and_negative_seeds_work():
    for seed in (128, -1, -(1 << 31), 1 << 40):
        mx.random.seed(seed)
        a = mx.nd.random.uniform(shape=(4,)).asnumpy()
        mx.random.seed(seed)
        assert (mx.nd.random.uniform(shape=(4,)).asnumpy() == a).all()
    mx.random.seed(-1)
    a = mx.random.uniform(shape=(8,)).asnumpy()
    mx.random.seed(1)
    assert not (mx.random.uniform(shape=(8,)).asnumpy() == a).all()
    mx.random.seed(3, ctx=mx.cpu())
    with pytest.raises(MXNetError, match="integer"):
        mx.random.seed(1.5)


def test_randint():
    mx.random.seed(0)
    x = mx.nd.random.randint(-3, 4, shape=(N,))
    assert x.dtype == np.int32 and x.asnumpy().min() == -3 and x.asnumpy().max() == 3
    _moments_ok(x.asnumpy(), 0.0, (7 ** 2 - 1) / 12)
    big = mx.nd.random.randint(50000000, 50000010, dtype="int64")
    assert big.dtype == np.int64 and 50000000 <= big.asscalar() < 50000010
    with pytest.raises(MXNetError, match="less than"):
        mx.nd.random.randint(3, 3)


def test_multinomial_frequencies_log_probs_and_gradient():
    probs = np.array([[0.0, 0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1, 0.0]])
    x = mx.nd.array(probs)
    x.attach_grad()
    mx.random.seed(9)
    with mx.autograd.record():
        y, logp = mx.nd.random.multinomial(x, shape=N // 4, get_prob=True)
        (logp * 5).backward()
    y = y.asnumpy()
    assert y.shape == (2, N // 4) and y.dtype == np.int32
    for i in range(2):
        freq = np.bincount(y[i], minlength=5) / y.shape[1]
        np.testing.assert_allclose(freq, probs[i], atol=0.02)
        assert freq[probs[i] == 0].sum() == 0  # never a class of probability 0
        np.testing.assert_allclose(logp.asnumpy()[i], np.log(probs[i][y[i]]), rtol=1e-6)
        want = np.bincount(y[i], minlength=5) * 5.0 / np.where(probs[i] > 0, probs[i], 1)
        np.testing.assert_allclose(x.grad.asnumpy()[i], want, rtol=1e-5)


def test_multinomial_shapes_dtypes_and_class_bounds():
    p = mx.nd.array([0.25, 0.25, 0.5])
    assert mx.nd.random.multinomial(p).shape == (1,)
    assert mx.nd.random.multinomial(p, shape=(2, 3)).shape == (2, 3)
    two = mx.nd.random.multinomial(mx.nd.array(np.full((4, 3), 1 / 3)), shape=2, dtype="uint8")
    assert two.shape == (4, 2) and two.dtype == np.uint8
    assert isinstance(mx.nd.random.multinomial(p, get_prob=True), list)
    assert mx.nd.random.multinomial(p, dtype="float16").dtype == np.float16
    for dtype in ("uint8", "float16", "float32"):  # 2**25 classes: indices would collide
        with pytest.raises(MXNetError, match="classes do not fit"):
            mx.nd.random.multinomial(mx.nd.zeros(2 ** 25), dtype=dtype)


def test_unique_zipfian_and_rand_zipfian():
    mx.random.seed(4)
    classes, tries = mx.nd._internal._sample_unique_zipfian(1000, shape=(3, 100))
    assert classes.dtype == np.int64 and tries.shape == (3,)
    for row, t in zip(classes.asnumpy(), tries.asnumpy()):
        assert np.unique(row).size == 100 and row.min() >= 0 and row.max() < 1000 and t >= 100
    with pytest.raises(MXNetError, match="distinct"):
        mx.nd._internal._sample_unique_zipfian(10, shape=(1, 11))
    true = mx.nd.array([0, 3, 7], dtype="int64")
    sampled, e_true, e_sampled = mx.nd.contrib.rand_zipfian(true, 2000, 20)
    prob = lambda c: np.log((c + 2.0) / (c + 1.0)) / np.log(21.0)  # noqa: E731
    s = sampled.asnumpy()
    assert s.dtype == np.int64 and s.min() >= 0 and s.max() < 20
    np.testing.assert_allclose(e_true.asnumpy(), prob(np.array([0, 3, 7])) * 2000)
    np.testing.assert_allclose(e_sampled.asnumpy(), prob(s) * 2000)
    np.testing.assert_allclose(np.bincount(s, minlength=20) / 2000, prob(np.arange(20)),
                               atol=0.03)
    outs = mx.sym.contrib.rand_zipfian(mx.sym.var("t"), 50, 20)
    got = mx.sym.Group(list(outs)).eval(t=true)
    np.testing.assert_allclose(got[1].asnumpy(), e_true.asnumpy() * 50 / 2000)
    np.testing.assert_allclose(got[2].asnumpy(), prob(got[0].asnumpy()) * 50)
    assert mx.contrib.nd.rand_zipfian is mx.nd.contrib.rand_zipfian


# ---- densities -------------------------------------------------------------------------------
PDFS = {  # name -> (scipy density, parameter arrays (2, 3), sample generator)
    "uniform": (lambda x, lo, hi: ss.uniform.pdf(x, lo, hi - lo),
                [[-1.0, 0.0, 2.0], [0.5, -3.0, 1.0]], [[1.0, 2.0, 5.0], [0.7, 4.0, 1.5]]),
    "normal": (ss.norm.pdf, [[0.0, 2.5, -1.0], [3.0, -9.75, 1.0]],
               [[1.0, 3.7, 0.3], [4.2, 1.5, 2.0]]),
    "gamma": (lambda x, a, b: ss.gamma.pdf(x, a, 0, 1 / b), [[0.5, 2.5, 9.75], [1.0, 3.0, 11.0]],
              [[1.0, 0.7, 0.5], [0.3, 2.0, 1.5]]),
    "exponential": (lambda x, lam: ss.expon.pdf(x, 0, 1 / lam),
                    [[1.0, 8.5, 0.5], [2.7, 0.2, 1.3]], None),
    "poisson": (ss.poisson.pmf, [[25.0, 8.5, 2.7], [0.5, 1.0, 4.0]], None),
    "negative_binomial": (ss.nbinom.pmf, [[3.0, 4.0, 1.5], [5.0, 6.0, 2.0]],
                          [[0.4, 0.77, 0.5], [0.5, 0.84, 0.2]]),
    "generalized_negative_binomial": (
        lambda x, mu, a: ss.nbinom.pmf(x, 1 / a, 1 / (mu * a + 1)),
        [[2.0, 2.5, 1.3], [1.9, 4.0, 0.5]], [[1.0, 0.1, 0.2], [0.5, 0.3, 2.0]]),
}
DISCRETE = {"poisson", "negative_binomial", "generalized_negative_binomial"}


def _pdf_case(name, rng, n=4):
    _, p1, p2 = PDFS[name]
    params = [np.array(p) for p in (p1, p2) if p is not None]
    if name == "uniform":
        x = params[0][..., None] + rng.uniform(0.05, 0.95, (2, 3, n)) * \
            (params[1] - params[0])[..., None]
    elif name in DISCRETE:
        x = rng.integers(0, 12, (2, 3, n)).astype(np.float64)
    else:
        x = rng.uniform(0.2, 3.0, (2, 3, n)) + (params[0][..., None] if name == "normal" else 0)
    return x, params


@pytest.mark.parametrize("name", sorted(PDFS))
def test_densities_match_scipy(name):
    x, params = _pdf_case(name, np.random.default_rng(1))
    want = PDFS[name][0](x, *[p[..., None] for p in params])
    arrays = [mx.nd.array(a, dtype="float64") for a in (x, *params)]
    fn = getattr(mx.nd.random, f"pdf_{name}")
    np.testing.assert_allclose(fn(*arrays).asnumpy(), want, rtol=1e-10)
    np.testing.assert_allclose(fn(*arrays, is_log=True).asnumpy(), np.log(want), rtol=1e-10)
    with pytest.raises(MXNetError, match=f"random_pdf_{name}"):  # (2, 3) is not (1,)
        fn(arrays[0], *[mx.nd.ones(1, dtype="float64") for _ in params])
    got32 = getattr(mx.nd, f"random_pdf_{name}")(*[a.astype("float32") for a in arrays])
    assert got32.dtype == np.float32 and got32.shape == x.shape
    np.testing.assert_allclose(got32.asnumpy(), want, rtol=1e-4)


def test_dirichlet_density_matches_scipy_and_drops_the_vector_axis():
    rng = np.random.default_rng(2)
    alpha = rng.uniform(0.5, 2.0, (2, 3))
    x = np.stack([ss.dirichlet.rvs(a, size=5, random_state=1) for a in alpha])  # (2, 5, 3)
    want = np.stack([ss.dirichlet.logpdf(x[i].T, alpha[i]) for i in range(2)])
    got = mx.sym.random_pdf_dirichlet(mx.sym.var("x"), mx.sym.var("a"), is_log=True).eval(
        x=mx.nd.array(x, dtype="float64"), a=mx.nd.array(alpha, dtype="float64"))[0]
    assert got.shape == (2, 5)
    np.testing.assert_allclose(got.asnumpy(), want, rtol=1e-10)
    one = mx.nd.random.pdf_dirichlet(mx.nd.array(x[0, 0]), mx.nd.array(alpha[0]))
    assert one.shape == (1,)
    np.testing.assert_allclose(one.asnumpy(), np.exp(want[0, :1]), rtol=1e-5)
    with pytest.raises(MXNetError):
        mx.nd.random.pdf_dirichlet(mx.nd.ones((2, 4)), mx.nd.ones((2, 3)))


@pytest.mark.parametrize("name", sorted(PDFS) + ["dirichlet"])
@pytest.mark.parametrize("is_log", [False, True])
def test_density_gradients_match_finite_differences(name, is_log):
    rng = np.random.default_rng(3)
    if name == "dirichlet":
        arrays = [rng.dirichlet([1.0, 2.0, 3.0], size=(2, 2)), rng.uniform(0.5, 2.0, (2, 3))]
    else:
        x, params = _pdf_case(name, rng, n=2)
        arrays = [x, *params]
    names = [f"v{i}" for i in range(len(arrays))]
    sym = getattr(mx.sym, f"random_pdf_{name}")(*map(mx.sym.var, names), is_log=is_log)
    wrt = names[1:] if name in DISCRETE else names
    mx.test_utils.check_numeric_gradient(sym, arrays, grad_nodes=wrt, numeric_eps=1e-6,
                                         rtol=1e-4, atol=1e-7, dtype=np.float64)
    if name in DISCRETE or name == "uniform":  # MXNet's zero gradient w.r.t. such samples
        xs = [mx.nd.array(a, dtype="float64") for a in arrays]
        xs[0].attach_grad()
        with mx.autograd.record():
            getattr(mx.nd.random, f"pdf_{name}")(*xs, is_log=is_log).backward()
        assert not xs[0].grad.asnumpy().any()


def test_lgamma_fallback_matches_math_lgamma():
    xs = np.concatenate([np.linspace(-30.25, 300.0, 4001), [1e-9, 0.5, 1.0, 2.0, 1e6]])
    want = np.array([math.lgamma(v) for v in xs])
    for fn in (lgamma, lgamma_numpy):
        np.testing.assert_allclose(fn(xs), want, rtol=1e-12, atol=1e-12)
    assert np.isinf(lgamma_numpy(np.array([0.0, -1.0, -7.0]))).all()


# ---- the symbolic namespace, hybridization, compile --------------------------------------
def test_sym_random_namespace_builds_the_same_ops():
    v1, v2 = mx.sym.var("v1"), mx.sym.var("v2")
    mu, sigma = mx.nd.array([0.0, 100.0]), mx.nd.array([1.0, 1.0])
    out = mx.sym.random.normal(v1, v2, shape=(3,)).eval(v1=mu, v2=sigma)[0]
    assert out.shape == (2, 3) and (out.asnumpy()[1] > 90).all()
    assert mx.sym.random.uniform(shape=(2, 3), dtype="float64").eval()[0].dtype == np.float64
    like = mx.sym.random.randn(loc=10.0, scale=0.5, data=mx.sym.ones((4, 5))).eval()[0]
    assert like.shape == (4, 5)
    p = mx.sym.var("p")
    assert len(mx.sym.random.multinomial(p, shape=3).list_outputs()) == 2  # get_prob: True
    assert len(mx.sym.random.multinomial(p, get_prob=False).list_outputs()) == 1
    for name in ("uniform_like", "pdf_normal", "pdf_dirichlet", "shuffle", "randint"):
        assert callable(getattr(mx.sym.random, name)) and callable(getattr(mx.nd.random, name))


def test_executor_and_eager_draw_the_same_numbers_for_a_seed():
    x = mx.sym.var("x")
    y = mx.sym.random.gamma(alpha=2.0, beta=3.0, shape=(3, 4)) + x
    exe = y.bind(mx.cpu(), {"x": mx.nd.zeros((3, 4))})
    mx.random.seed(21)
    a = exe.forward()[0].asnumpy()
    mx.random.seed(21)
    assert (exe.forward()[0].asnumpy() == a).all()
    mx.random.seed(21)
    assert (mx.nd.random.gamma(2.0, 3.0, shape=(3, 4)).asnumpy() == a).all()


class _Noisy(mx.gluon.HybridBlock):
    def hybrid_forward(self, F, x):
        return F.random.normal(1.0, 2.0, shape=(2, 3)) + F.random.uniform_like(x) \
            + F.random.normal(x, F.ones_like(x) * 0.5) + F.random.poisson_like(x, lam=3.0)


def test_hybridized_blocks_draw_what_eager_ones_draw():
    block, x = _Noisy(), mx.nd.array(np.arange(6.0).reshape(2, 3))
    mx.random.seed(7)
    eager = [block(x).asnumpy() for _ in range(2)]
    block.hybridize()
    mx.random.seed(7)
    hybrid = [block(x).asnumpy() for _ in range(2)]
    np.testing.assert_array_equal(eager[0], hybrid[0])
    np.testing.assert_array_equal(eager[1], hybrid[1])
    assert not (hybrid[0] == hybrid[1]).all()


def test_compiled_functions_draw_fresh_numbers_each_call():
    @mx.compile
    def step(x):
        return mx.nd.random.uniform(shape=(3,)) + x

    zero = mx.nd.zeros((3,))
    mx.random.seed(3)
    got = [step(zero).asnumpy() for _ in range(2)]
    mx.random.seed(3)
    want = [mx.nd.random.uniform(shape=(3,)).asnumpy() for _ in range(2)]
    np.testing.assert_array_equal(got, want)

    @mx.compile
    def pick(p):
        return mx.nd.random.multinomial(p, shape=4)  # one output, as nd's default says

    assert pick(mx.nd.array([0.0, 1.0])).asnumpy().tolist() == [1, 1, 1, 1]


# ---- test_utils on Symbols ---------------------------------------------------------------
def test_gradient_checks_take_symbols_and_difference_only_requested_inputs():
    a, b = mx.sym.var("a"), mx.sym.var("b")
    mx.test_utils.check_symbolic_forward(a * b, [np.ones(2), np.full(2, 3.0)], [np.full(2, 3.0)])
    mx.test_utils.check_numeric_gradient(a * mx.sym.exp(b), {"a": np.ones(3), "b": np.zeros(3)},
                                         grad_nodes=["b"], dtype=np.float64)
    calls = []

    def f(x, big):
        calls.append(1)
        return x * 2.0 + mx.nd.sum(big)
    mx.test_utils.check_numeric_gradient(f, [np.ones(2), np.ones(500)], grad_nodes=["x"],
                                         dtype=np.float64)
    assert len(calls) < 20  # 2 per element of x, none for the 500 of big
