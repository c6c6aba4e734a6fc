"""ember.initializer: MXNet 1.9.1's initializers, registry, name dispatch, dumps/create."""
import json
import warnings

import numpy as np
import pytest

import ember as mx
import ember.initializer as init
from ember.base import MXNetError
from ember.initializer import InitDesc


def run(initializer, name, shape, dtype="float32", attrs=None):
    arr = mx.nd.zeros(shape, dtype=dtype) - 7 if np.dtype(dtype).kind == "f" else \
        mx.nd.zeros(shape, dtype=dtype)
    initializer(InitDesc(name, attrs), arr)
    return arr


# ---- suffix dispatch -----------------------------------------------------------------------
@pytest.mark.parametrize("name,expected", [
    ("dense0_bias", 0.0), ("bn_gamma", 1.0), ("bn_beta", 0.0), ("q_min", 0.0), ("q_max", 1.0)])
def test_suffix_dispatch(name, expected):
    arr = run(init.Uniform(0.5), name, (4,))
    np.testing.assert_array_equal(arr.asnumpy(), np.full(4, expected, np.float32))


def test_weight_suffix_uses_init_weight():
    arr = run(init.Constant(3.5), "fc_weight", (2, 3))
    np.testing.assert_array_equal(arr.asnumpy(), np.full((2, 3), 3.5))


def test_unknown_pattern_raises_naming_parameter():
    with pytest.raises(ValueError, match="foo_running"):
        run(init.Uniform(), "foo_running", (3,))
    with pytest.raises(MXNetError):
        run(init.Uniform(), "foo_running", (3,))


def test_init_attr_overrides_suffix():
    # gluon gives each parameter its own initializer through attrs['__init__']
    arr = run(init.Uniform(), "dense0_bias", (3,), attrs={"__init__": init.One()})
    np.testing.assert_array_equal(arr.asnumpy(), np.ones(3))
    arr = run(init.Uniform(), "bn_gamma", (3,), attrs={"__init__": "zeros"})
    np.testing.assert_array_equal(arr.asnumpy(), np.zeros(3))
    arr = run(init.Zero(), "anything", (2, 2), attrs={"__init__": init.Constant(2).dumps()})
    np.testing.assert_array_equal(arr.asnumpy(), np.full((2, 2), 2.0))


def test_global_init_is_recorded():
    desc = InitDesc("w_weight")
    u = init.Uniform()
    u(desc, mx.nd.zeros((2, 2)))
    assert desc.global_init is u and isinstance(desc, str) and desc == "w_weight"


def test_legacy_string_call():
    u = init.Uniform(0.1)
    for name, value in [("bn_moving_mean", 0.0), ("bn_moving_var", 1.0),
                        ("bn_moving_inv_var", 0.0), ("x_moving_avg", 0.0),
                        ("stn_loc_weight", 0.0)]:
        arr = mx.nd.ones((6,)) * 5
        with pytest.warns(DeprecationWarning):
            u(name, arr)
        np.testing.assert_array_equal(arr.asnumpy(), np.full(6, value), err_msg=name)
    arr = mx.nd.zeros((6,))
    with pytest.warns(DeprecationWarning):
        u("stn_loc_bias", arr)
    np.testing.assert_array_equal(arr.asnumpy(), [1, 0, 0, 0, 1, 0])
    arr = mx.nd.zeros((1, 1, 4, 4))
    with pytest.warns(DeprecationWarning):
        u("upsampling0_weight", arr)
    np.testing.assert_allclose(arr.asnumpy(), init.bilinear_kernel("u", (1, 1, 4, 4)))


# ---- individual initializers ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_dtype_kept(dtype):
    for ini in (init.Uniform(), init.Normal(), init.Xavier(), init.Orthogonal(), init.One()):
        arr = run(ini, "w_weight", (4, 6), dtype=dtype)
        assert arr.dtype == np.dtype(dtype).type, type(ini)


def test_zero_one_constant():
    np.testing.assert_array_equal(run(init.Zero(), "w_weight", (2, 3)).asnumpy(), 0)
    np.testing.assert_array_equal(run(init.One(), "w_weight", (2, 3)).asnumpy(), 1)
    val = np.arange(6, dtype=np.float32).reshape(2, 3)
    arr = run(init.Constant(mx.nd.array(val)), "w_weight", (2, 3))
    np.testing.assert_array_equal(arr.asnumpy(), val)
    arr = run(init.Constant(val), "w_weight", (2, 3))
    np.testing.assert_array_equal(arr.asnumpy(), val)
    with pytest.raises(MXNetError, match="w_weight"):
        run(init.Constant(val), "w_weight", (3, 3))


def test_uniform_normal_statistics():
    mx.random.seed(1)
    u = run(init.Uniform(0.2), "w_weight", (200, 100)).asnumpy()
    assert u.min() >= -0.2 and u.max() <= 0.2 and u.max() > 0.19 and u.min() < -0.19
    assert abs(u.mean()) < 0.005
    np.testing.assert_allclose(u.std(), 0.4 / np.sqrt(12), rtol=0.02)
    n = run(init.Normal(0.5), "w_weight", (200, 100)).asnumpy()
    assert abs(n.mean()) < 0.02
    np.testing.assert_allclose(n.std(), 0.5, rtol=0.02)


def test_seed_reproduces():
    mx.random.seed(42)
    a = run(init.Xavier(), "w_weight", (5, 7)).asnumpy()
    mx.random.seed(42)
    b = run(init.Xavier(), "w_weight", (5, 7)).asnumpy()
    c = run(init.Xavier(), "w_weight", (5, 7)).asnumpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(b, c)


@pytest.mark.parametrize("factor_type", ["avg", "in", "out"])
def test_xavier_uniform_bounds(factor_type):
    mx.random.seed(0)
    shape = (64, 32, 3, 3)
    fan_in, fan_out = 32 * 9, 64 * 9
    factor = {"avg": (fan_in + fan_out) / 2, "in": fan_in, "out": fan_out}[factor_type]
    bound = np.sqrt(2.5 / factor)
    w = run(init.Xavier(factor_type=factor_type, magnitude=2.5), "c_weight", shape).asnumpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.98 * bound
    np.testing.assert_allclose(w.std(), bound / np.sqrt(3), rtol=0.03)


def test_xavier_gaussian_and_msra():
    mx.random.seed(3)
    w = run(init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2), "w_weight",
            (400, 250)).asnumpy()
    np.testing.assert_allclose(w.std(), np.sqrt(2 / 250), rtol=0.02)
    w = run(init.MSRAPrelu(factor_type="out", slope=0.5), "w_weight", (300, 200)).asnumpy()
    np.testing.assert_allclose(w.std(), np.sqrt(2 / 1.25 / 300), rtol=0.02)
    assert init.MSRAPrelu().dumps() == '["msraprelu", {"factor_type": "avg", "slope": 0.25}]'


def test_xavier_rejects_vectors_and_bad_args():
    with pytest.raises(ValueError, match="fc_weight"):
        run(init.Xavier(), "fc_weight", (10,))
    with pytest.raises(ValueError, match="factor"):
        init.Xavier(factor_type="sideways")
    with pytest.raises(ValueError, match="random type"):
        init.Xavier(rnd_type="cauchy")


@pytest.mark.parametrize("shape,rand_type", [((3, 8), "uniform"), ((8, 3), "normal"),
                                             ((4, 2, 3), "uniform")])
def test_orthogonal(shape, rand_type):
    w = run(init.Orthogonal(scale=2.0, rand_type=rand_type), "w_weight", shape).asnumpy()
    m = w.reshape(shape[0], -1).astype(np.float64) / 2.0
    small = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    np.testing.assert_allclose(small, np.eye(small.shape[0]), atol=1e-5)


def test_bilinear_against_hand_computation():
    w = run(init.Bilinear(), "up_weight", (2, 1, 3, 3)).asnumpy()
    # f = ceil(3/2) = 2, c = (2*2 - 1 - 0) / 4 = 0.75; 1-D profile 1 - |x/2 - 0.75|
    prof = np.array([0.25, 0.75, 0.75])
    np.testing.assert_allclose(w[0, 0], np.outer(prof, prof))
    np.testing.assert_allclose(w[1, 0], np.outer(prof, prof))
    w = run(init.Bilinear(), "up_weight", (1, 1, 4, 4)).asnumpy()
    prof = np.array([0.25, 0.75, 0.75, 0.25])  # f = 2, c = 0.75
    np.testing.assert_allclose(w[0, 0], np.outer(prof, prof))
    with pytest.raises(MXNetError, match="up_weight"):
        run(init.Bilinear(), "up_weight", (4, 4))


def test_lstm_bias():
    arr = run(init.Uniform(), "lstm_i2h_bias", (12,), attrs={"__init__": init.LSTMBias(2.5)})
    np.testing.assert_array_equal(arr.asnumpy(), [0] * 3 + [2.5] * 3 + [0] * 6)


# ---- composites ----------------------------------------------------------------------------
def test_mixed_pattern_dispatch():
    mixed = init.Mixed(["bias", ".*gamma", ".*"], [init.Constant(5), "ones", init.Constant(2)])
    b = mx.nd.zeros((3,))
    mixed(InitDesc("bias"), b)  # re.match anchors at the start: 'bias' matches 'bias...'
    np.testing.assert_array_equal(b.asnumpy(), 0)  # Constant's bias suffix rule: zero
    g = mx.nd.zeros((3,))
    mixed(InitDesc("bn_gamma"), g)
    np.testing.assert_array_equal(g.asnumpy(), 1)
    w = mx.nd.zeros((2, 2))
    mixed(InitDesc("fc_weight"), w)
    np.testing.assert_array_equal(w.asnumpy(), 2)
    with pytest.raises(ValueError, match="fc_weight"):
        init.Mixed(["bias"], [init.Zero()])(InitDesc("fc_weight"), w)
    with pytest.raises(ValueError):
        init.Mixed(["a", "b"], [init.Zero()])


def test_mixed_as_global_gluon_style():
    # Parameter passes the global initializer both as caller and as attrs['__init__']
    mixed = init.Mixed(["fc_.*", ".*"], [init.Constant(3), init.Zero()])
    w = mx.nd.zeros((2, 2))
    init.create(mixed)(InitDesc("fc_weight", {"__init__": mixed}), w)
    np.testing.assert_array_equal(w.asnumpy(), 3)


def test_load(tmp_path):
    params = {"arg:fc_weight": mx.nd.array([[1, 2], [3, 4]]), "aux:bn_moving_var": mx.nd.ones(3),
              "plain": mx.nd.array([7.0])}
    loader = init.Load(params, default_init=init.Constant(9))
    w = mx.nd.zeros((2, 2))
    loader(InitDesc("fc_weight"), w)
    np.testing.assert_array_equal(w.asnumpy(), [[1, 2], [3, 4]])
    p = mx.nd.zeros((1,))
    loader("plain", p)
    np.testing.assert_array_equal(p.asnumpy(), [7])
    other = mx.nd.zeros((2,))
    loader(InitDesc("other_weight"), other)
    np.testing.assert_array_equal(other.asnumpy(), 9)
    with pytest.raises(MXNetError, match="fc_weight"):
        loader(InitDesc("fc_weight"), mx.nd.zeros((3, 2)))
    with pytest.raises(MXNetError, match="missing_weight"):
        init.Load(params)(InitDesc("missing_weight"), mx.nd.zeros((1,)))
    fname = str(tmp_path / "p.params")
    mx.nd.save(fname, params)
    w2 = mx.nd.zeros((2, 2))
    init.Load(fname)(InitDesc("fc_weight"), w2)
    np.testing.assert_array_equal(w2.asnumpy(), [[1, 2], [3, 4]])


# ---- registry ------------------------------------------------------------------------------
@pytest.mark.parametrize("ini", [init.Zero(), init.One(), init.Constant(0.5), init.Uniform(0.3),
                                 init.Normal(0.2), init.Orthogonal(2.0, "normal"),
                                 init.Xavier("gaussian", "in", 2.0), init.MSRAPrelu("in", 0.1),
                                 init.Bilinear(), init.LSTMBias(0.7)])
def test_dumps_create_round_trip(ini):
    text = ini.dumps()
    name, kwargs = json.loads(text)
    assert name == type(ini).__name__.lower()
    assert init.create(text) == ini
    assert init.create(name, **kwargs) == ini
    assert init.create({"initializer": name, **kwargs}) == ini


def test_dumps_matches_mxnet_text():
    assert init.Normal(0.5).dumps() == '["normal", {"sigma": 0.5}]'
    assert init.Xavier(factor_type="in", magnitude=2.34).dumps() == \
        '["xavier", {"rnd_type": "uniform", "factor_type": "in", "magnitude": 2.34}]'
    assert init.Constant(np.array([1.0, 2.0])).dumps() == '["constant", {"value": [1.0, 2.0]}]'


def test_create_names_and_aliases():
    assert isinstance(init.create("zeros"), init.Zero)
    assert isinstance(init.create("ONES"), init.One)
    assert isinstance(init.create("msraprelu"), init.MSRAPrelu)
    u = init.Uniform()
    assert init.create(u) is u
    assert init.create("uniform", scale=0.2).scale == 0.2
    with pytest.raises(MXNetError, match="nosuchinit"):
        init.create("nosuchinit")
    with pytest.raises(MXNetError):
        init.create(u, scale=3)
    assert mx.nd is not None and init.Initializer is not None


def test_register_custom():
    @init.register
    @init.alias("myinit_alias")
    class MyInit(init.Initializer):
        def __init__(self, v=0.25):
            super().__init__(v=v)
            self.v = v

        def _init_weight(self, _, arr):
            arr[:] = self.v

        def _init_bias(self, _, arr):
            arr[:] = -1

    w = run(init.create("myinit", v=0.5), "a_weight", (2,))
    np.testing.assert_array_equal(w.asnumpy(), 0.5)
    b = run(init.create("myinit_alias"), "a_bias", (2,))
    np.testing.assert_array_equal(b.asnumpy(), -1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        init.register(type("MyInit", (init.Initializer,), {}))
    assert any("overriding" in str(w.message) for w in caught)
    with pytest.raises(MXNetError):
        init.register(int)


def test_base_initializer_weight_is_an_error():
    with pytest.raises(MXNetError, match="x_weight"):
        run(init.Initializer(), "x_weight", (2,))


def test_verbose_logging(caplog):
    import logging
    caplog.set_level(logging.INFO)
    ini = init.One().set_verbosity(True)
    run(ini, "v_weight", (4,))
    assert any("v_weight" in r.getMessage() and "1.0" in r.getMessage() for r in caplog.records)


def test_quantized_weight():
    arr = mx.nd.zeros((50,), dtype="int8")
    init.Uniform()(InitDesc("conv_weight_quantize"), arr)
    a = arr.asnumpy()
    assert a.dtype == np.int8 and a.min() >= -127 and a.max() < 127 and np.any(a != 0)
