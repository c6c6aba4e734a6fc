"""The rest of mx.test_utils' names: `import *` exposes what MXNet's tests use."""
import numpy as np
import pytest

import ember as mx
from ember import gluon, nd
from ember.base import MXNetError


def test_star_import_exposes_mxnet_module_names():
    ns = {}
    exec("from ember.test_utils import *", ns)
    for name in ["sys", "os", "np", "npt", "rnd", "mx", "logging", "json", "time", "Features",
                 "check_consistency", "assert_almost_equal", "default_context", "DummyIter",
                 "mean_check", "var_check", "same_array", "simple_forward", "environment",
                 "new_sym_matrix_with_real_eigvals_nd", "getenv", "setenv", "OrderedDict"]:
        assert name in ns, name
    assert ns["sys"].version_info.major == 3 and ns["mx"] is mx
    from ember import test_utils
    assert test_utils.ss.norm.cdf(0.0) == 0.5     # scipy.stats, imported on first use


def test_check_consistency_compares_outputs_and_gradients():
    from ember.test_utils import check_consistency
    sym = mx.sym.FullyConnected(mx.sym.var("data"), num_hidden=3, name="fc")
    spec = {"ctx": mx.cpu(0), "data": (2, 4), "type_dict": {"data": np.float32}}
    gt = check_consistency(sym, [spec, dict(spec)])
    assert sorted(gt) == ["data", "fc_bias", "fc_output", "fc_weight"]
    assert gt["fc_weight"].shape == (3, 4)
    # a symbol that differs between the two entries is caught
    other = mx.sym.FullyConnected(mx.sym.var("data"), num_hidden=3, name="fc") * 1.5
    with pytest.raises(AssertionError):
        check_consistency([sym, other], [spec, dict(spec)])


def test_simple_forward_and_structure():
    from ember.test_utils import same_symbol_structure, simple_forward
    a = mx.sym.var("a")
    np.testing.assert_array_equal(simple_forward(a * 2 + 1, a=np.arange(3.0)), [1, 3, 5])
    s1 = mx.sym.FullyConnected(a, num_hidden=2, name="x")
    assert same_symbol_structure(s1, mx.sym.FullyConnected(a, num_hidden=2, name="y"))
    assert not same_symbol_structure(s1, mx.sym.relu(s1))


def test_sampler_statistics_checks():
    from ember.test_utils import mean_check, var_check
    rng = np.random.default_rng(0)
    assert mean_check(lambda n: rng.normal(1.0, 2.0, size=n), 1.0, 2.0, nsamples=200000)
    assert not mean_check(lambda n: rng.normal(1.2, 2.0, size=n), 1.0, 2.0, nsamples=200000)
    assert var_check(lambda n: rng.normal(0.0, 2.0, size=n), 2.0, nsamples=200000)
    assert not var_check(lambda n: rng.normal(0.0, 2.5, size=n), 2.0, nsamples=200000)


def test_matrix_builders():
    from ember import test_utils as tu
    np.random.seed(0)
    m = tu.new_matrix_with_real_eigvals_2d(4)
    assert np.allclose(np.linalg.eigvals(m).imag, 0)
    q = tu.new_orthonormal_matrix_2d(5)
    np.testing.assert_allclose(q @ q.T, np.eye(5), atol=1e-10)
    s = tu.new_sym_matrix_with_real_eigvals_nd((2, 3, 3))
    assert s.shape == (2, 3, 3) and np.allclose(s, s.transpose(0, 2, 1))
    np.testing.assert_array_equal(tu.create_2d_tensor(3, 2).asnumpy(), [[0, 0], [1, 1], [2, 2]])
    np.testing.assert_array_equal(tu.assign_each(np.array([1.0, 4.0]), np.sqrt), [1, 2])
    np.testing.assert_array_equal(tu.assign_each2(np.ones(2), np.ones(2), lambda a, b: a + b),
                                  [2, 2])


def test_same_array_and_checkshapes():
    from ember.test_utils import checkShapes, same_array
    x = nd.ones((2, 3))
    assert same_array(x, x) and not same_array(x, x.copy())
    with pytest.raises(AssertionError, match="not equal"):
        checkShapes(np.ones(2), np.ones(3))


def test_hybridize_consistency_and_no_downloads(tmp_path):
    from ember import test_utils as tu
    tu.check_gluon_hybridize_consistency(lambda: gluon.nn.Dense(3),
                                         [nd.array(np.random.rand(2, 4))])
    with pytest.raises(MXNetError, match="never downloads"):
        tu.download("http://example.invalid/x.bin", dirname=str(tmp_path))
    (tmp_path / "x.bin").write_bytes(b"1")
    assert tu.download("http://example.invalid/x.bin", dirname=str(tmp_path)).endswith("x.bin")
    with pytest.raises(RuntimeError, match="unknown"):
        tu.Features().is_enabled("NO_SUCH_FEATURE")
