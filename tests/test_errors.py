"""Errors a user can cause are MXNetErrors that name the block, op, shapes or value involved:
nd.array of ragged or string data, empty batches, values read while tracing, shape errors
inside nested blocks, and a compiled program's arena that does not fit in memory."""
import numpy as np
import pytest

import ember as mx
from ember import autograd, gluon, nd
from ember.base import MXNetError, TracedValueError


# ---- nd.array input checks -------------------------------------------------------------------
@pytest.mark.parametrize("source, match", [
    ([[1, 2], [3]], r"ragged: item \[1\] has length 1 but item \[0\] has length 2"),
    ([[[1], [2]], [[1], [2, 3]]], r"ragged: item \[1\]\[1\] has length 2 but item \[1\]\[0\] "
                                  r"has length 1"),
    ([[1, 2], 3], r"ragged: item \[1\] has a scalar but item \[0\] has length 2"),
    (["a"], r"item \[0\] 'a' is not a real number"),
    ([[1.0, "x"]], r"item \[0\]\[1\] 'x' is not a real number"),
    ("abc", r"the source 'abc' is not a real number"),
    ([1 + 2j], r"is not a real number"),
    (np.array(["a", "b"]), r"holds numbers or booleans, not <U1"),
])
def test_nd_array_of_ragged_or_non_numeric_data(source, match):
    with pytest.raises(MXNetError, match=r"^nd.array: .*" + match):
        nd.array(source)


def test_nd_array_of_good_data_still_works():
    assert nd.array([[1, 2], [3, 4]]).shape == (2, 2)
    assert nd.array([True, False]).asnumpy().tolist() == [1.0, 0.0]
    assert nd.array(np.arange(3)).dtype == np.int64
    assert nd.array(np.zeros((0, 3))).shape == (0, 3)


# ---- a batch of 0 rows (MXNet 1.9.1 with NumPy shapes: an empty (0, units) output) ----------
def _dense():
    net = gluon.nn.Dense(3, in_units=4)
    net.initialize()
    return net


@pytest.mark.parametrize("mode", ["eager", "hybridized", "compiled"])
def test_dense_on_an_empty_batch_gives_an_empty_output(mode):
    net = _dense()
    fn = net
    if mode == "hybridized":
        net.hybridize()
    elif mode == "compiled":
        fn = mx.compile(lambda x: net(x))
    out = fn(nd.zeros((0, 4)))
    assert out.shape == (0, 3) and out.dtype == np.float32
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    w, b = net.weight.data().asnumpy(), net.bias.data().asnumpy()
    np.testing.assert_allclose(fn(nd.array(x)).asnumpy(), x @ w.T + b, rtol=1e-5, atol=1e-6)
    assert fn(nd.zeros((0, 4))).shape == (0, 3)


@pytest.mark.parametrize("hybridize", [False, True])
@pytest.mark.parametrize("shape", [(0, 4), (0, 2, 2)])
def test_gradients_of_an_empty_batch_are_zero(hybridize, shape):
    net = gluon.nn.Dense(3, in_units=4)
    net.initialize()
    if hybridize:
        net.hybridize()
    x = nd.zeros(shape)
    x.attach_grad()
    with autograd.record():
        loss = net(x).sum()
    loss.backward()
    assert net.weight.grad().shape == (3, 4) and not net.weight.grad().asnumpy().any()
    assert x.grad.shape == shape


# ---- values of traced Symbols ----------------------------------------------------------------
class _Reads(gluon.HybridBlock):
    def __init__(self, how, **kw):
        super().__init__(**kw)
        self.how = how

    def hybrid_forward(self, F, x):
        y = x * 2
        _read(y, self.how)
        return y


def _read(y, how):
    if how == "asnumpy":
        y.asnumpy()  # READ_LINE
    elif how == "asscalar":
        y.sum().asscalar()  # READ_LINE
    elif how == "float":
        float(y.sum())  # READ_LINE
    elif how == "int":
        int(y.sum())  # READ_LINE
    elif how == "numpy":
        np.asarray(y)  # READ_LINE
    elif how == "bool":
        if y.sum() > 0:  # READ_LINE
            pass


_MARK = {"asnumpy": " y.asnumpy()", "asscalar": ".asscalar()", "float": "float(y",
         "int": " int(y", "numpy": "np.asarray(y)", "bool": "if y.sum()"}


def _read_line(how):
    with open(__file__) as f:
        lines = f.read().splitlines()
    return next(i + 1 for i, line in enumerate(lines)
                if line.rstrip().endswith("# READ_LINE") and _MARK[how] in line)


@pytest.mark.parametrize("how", ["asnumpy", "asscalar", "float", "int", "numpy", "bool"])
@pytest.mark.parametrize("where", ["hybridized", "compiled"])
def test_reading_a_traced_value_says_values_are_not_available(how, where):
    if where == "hybridized":
        block = _Reads(how, prefix="reads_")
        block.hybridize()
        fn = block
    else:
        def fn(x):
            y = x * 2
            _read(y, how)
            return y
        fn = mx.compile(fn)
    with pytest.raises(MXNetError) as e:
        fn(nd.ones((2,)))
    msg = str(e.value)
    assert "values are not available while hybridize() or @ember.compile traces" in msg
    assert f"test_errors.py:{_read_line(how)}" in msg
    assert "F.where" in msg if how == "bool" else "read it outside the traced code" in msg
    if where == "hybridized":  # the block is named
        assert msg.startswith("reads (_Reads): " if how != "bool" else "reads: cannot compile")
    if how != "bool":
        assert isinstance(e.value, TracedValueError)


def test_symbols_still_have_no_value_methods_for_duck_typing():
    s = mx.sym.var("x")
    assert not hasattr(s, "asnumpy") and not hasattr(s, "asscalar")
    with pytest.raises(AttributeError):
        s.no_such_method  # noqa: B018
    with pytest.raises(TypeError):  # what float() of a non-number raises
        float(s)


# ---- errors inside blocks name the block --------------------------------------------------
def _seq():
    net = gluon.nn.HybridSequential(prefix="seq_")
    with net.name_scope():
        net.add(gluon.nn.Dense(3, in_units=4), gluon.nn.Dense(2, in_units=5))
    net.initialize()
    return net


@pytest.mark.parametrize("mode", ["eager", "hybridized", "compiled"])
def test_shape_error_names_the_innermost_block_once(mode):
    net = _seq()
    fn = net
    if mode == "hybridized":
        net.hybridize()
    elif mode == "compiled":
        fn = mx.compile(lambda x: net(x))
    with pytest.raises(MXNetError) as e:
        fn(nd.ones((2, 4)))
    msg = str(e.value)
    assert msg.startswith("seq_dense1 (Dense): fully_connected: dims 3 and 5 disagree "
                          "(input shapes (2, 3), (2, 5), (2))"), msg
    assert msg.count("(Dense)") == 1 and msg.count("seq_dense1") == 1


class _Pair(gluon.HybridBlock):  # children made without a name scope: names do not nest
    def __init__(self):
        super().__init__()
        self.a = gluon.nn.Dense(3, in_units=4)
        self.b = gluon.nn.Dense(2, in_units=5)

    def forward(self, x):
        return self.b(self.a(x))


class _Outer(gluon.HybridBlock):
    def __init__(self):
        super().__init__()
        self.pair = _Pair()

    def forward(self, x):
        return self.pair(x)


@pytest.mark.parametrize("hybridize", [False, True])
def test_error_in_blocks_without_nested_names_shows_the_path(hybridize):
    net = _Outer()
    net.initialize()
    if hybridize:
        net.hybridize()
    with pytest.raises(MXNetError) as e:
        net(nd.ones((2, 4)))
    b, pair, outer = net.pair.b.name, net.pair.name, net.name
    assert str(e.value).startswith(f"{b} (Dense) in {pair} in {outer}: fully_connected: "), \
        str(e.value)


def test_errors_already_naming_the_block_are_not_prefixed_twice():
    net = _dense()
    with pytest.raises(MXNetError) as e:
        net(nd.ones((2, 4)), mx.sym.var("y"))
    assert str(e.value).startswith(f"{net.name}: inputs mix NDArrays and Symbols")


# ---- a compiled program's arena larger than memory ----------------------------------------
def test_arena_that_cannot_be_allocated_names_graph_bytes_and_largest_value():
    def huge(x):
        return nd.sort(nd.broadcast_to(x, shape=(1 << 20, 1 << 20)), axis=1).sum()
    with pytest.raises(MXNetError) as e:
        mx.compile(huge)(nd.ones((1, 1)))
    msg = str(e.value)
    assert msg.startswith("huge: cannot allocate the compiled program's arena of ")
    assert "its largest value is (1048576, 1048576) float32 (4,398,046,511,104 bytes)" in msg
    assert "(broadcast_to)" in msg
