"""Reductions, broadcasts and ordering ops: values, shape rules and gradients vs NumPy."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opcheck import check_forward, check_grad, check_infer

import ember as mx
from ember import autograd, nd
from ember.ir import TensorType, get_op
from ember.ir.errors import ShapeError
from ember.ir.ops import normalize_attrs

RNG = np.random.default_rng(0)
NP = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min, "prod": np.prod,
      "nansum": np.nansum, "nanprod": np.nanprod}


def rand(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def infer(name, shapes, dtype="float32", **attrs):
    op = get_op(name)
    outs, refined = op.infer([TensorType(s, dtype) for s in shapes], normalize_attrs(op, attrs))
    return [t.shape for t in outs], [t.shape for t in refined]


def np_reduce(fn, x, axis, keepdims, exclude):
    """MXNet's reduction semantics written directly with NumPy (no axis: all, even with
    exclude)."""
    if axis is None or axis == ():
        axes = tuple(range(x.ndim))
    else:
        axes = tuple(a % x.ndim for a in ((axis,) if isinstance(axis, int) else axis))
        if exclude:
            axes = tuple(i for i in range(x.ndim) if i not in axes)
    res = fn(x, axis=axes, keepdims=keepdims)
    return np.asarray(res).reshape(res.shape or (1,))


@st.composite
def reduce_case(draw):
    shape = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=3)))
    nd_ = len(shape)
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        axis = None
    elif kind == "int":
        axis = draw(st.integers(-nd_, nd_ - 1))
    else:
        axis = tuple(draw(st.lists(st.integers(0, nd_ - 1), unique=True, max_size=nd_)))
    return shape, axis, draw(st.booleans()), draw(st.booleans())


# ---- sum / mean / max / min / prod / nansum / nanprod -----------------------------------------
@pytest.mark.parametrize("name", list(NP))
@given(case=reduce_case())
def test_reductions_match_numpy(name, case):
    shape, axis, keepdims, exclude = case
    x = rand(*shape)
    exp = np_reduce(NP[name], x, axis, keepdims, exclude)
    out = check_forward(name, [x], exp, rtol=1e-5, atol=1e-5, axis=axis, keepdims=keepdims,
                        exclude=exclude)
    assert out.dtype == np.float32
    check_infer(name, [x], axis=axis, keepdims=keepdims, exclude=exclude)


@pytest.mark.parametrize("name", ["sum", "mean", "max", "min", "prod", "nansum", "nanprod"])
@pytest.mark.parametrize("axis,keepdims,exclude", [(None, False, False), (1, False, False),
                                                   ((0, 2), True, False), (1, False, True),
                                                   ((0,), True, True), (-1, False, False)])
def test_reduction_gradients(name, axis, keepdims, exclude):
    x = RNG.uniform(0.5, 1.5, (2, 3, 2)) * RNG.choice([-1, 1], (2, 3, 2))
    check_grad(lambda a: getattr(nd, name)(a, axis=axis, keepdims=keepdims, exclude=exclude),
               [x])


def test_aliases_and_positional_attributes():
    x = rand(2, 3)
    np.testing.assert_allclose(nd.sum_axis(nd.array(x), 1).asnumpy(), x.sum(1), rtol=1e-6)
    np.testing.assert_allclose(nd.max_axis(nd.array(x), 0, True).asnumpy(),
                               x.max(0, keepdims=True))
    np.testing.assert_allclose(nd.min_axis(nd.array(x)).asnumpy(), [x.min()])
    assert nd.array(x).sum(axis=1).shape == (2,)
    assert nd.sum(nd.array(x), axis=(0, 1), keepdims=False).shape == (1,)


def test_nan_reductions_skip_nans_in_value_and_gradient():
    x = np.array([[1.0, np.nan, 2.0], [3.0, 4.0, np.nan]])
    check_forward("nansum", [x], np.array([3.0, 7.0]), axis=1)
    check_forward("nanprod", [x], np.array([2.0, 12.0]), axis=1)
    a = nd.array(x, dtype=np.float64)
    a.attach_grad()
    with autograd.record():
        y = nd.nanprod(a, axis=1)
    y.backward()
    np.testing.assert_allclose(a.grad.asnumpy(), [[2.0, 0.0, 1.0], [4.0, 3.0, 0.0]])


def test_reduction_rules_with_unknown_dims_and_errors():
    assert infer("sum", [(None, 3, 4)], axis=1)[0] == [(None, 4)]
    assert infer("mean", [(None, 3, 4)], axis=0, exclude=True, keepdims=True)[0] == \
        [(None, 1, 1)]
    assert infer("max", [(None, 3)])[0] == [(1,)]
    with pytest.raises(ShapeError, match="sum"):
        infer("sum", [(2, 3)], axis=2)
    with pytest.raises(ShapeError, match="duplicates"):
        infer("sum", [(2, 3)], axis=(1, -1))


def test_mean_gradient_with_unknown_shape_path_is_the_same():
    x = nd.array(rand(2, 3), dtype=np.float64)
    x.attach_grad()
    with autograd.record():
        y = nd.mean(x, axis=1)
    y.backward()
    np.testing.assert_allclose(x.grad.asnumpy(), np.full((2, 3), 1 / 3))


def test_max_gradient_goes_to_the_argmax():
    x = nd.array([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]])
    x.attach_grad()
    with autograd.record():
        y = nd.max(x, axis=1)
    y.backward()
    np.testing.assert_array_equal(x.grad.asnumpy(), [[0, 1, 0], [1, 0, 0]])


def test_second_order_gradient_of_sum_of_squares():
    x = nd.array([1.0, 2.0, 3.0], dtype=np.float64)
    x.attach_grad()
    with autograd.record():
        y = nd.sum(x * x * x)
    g = autograd.grad(y, [x], create_graph=True)[0]
    with autograd.record():
        z = nd.sum(g, axis=0, keepdims=True)
    z.backward()
    np.testing.assert_allclose(x.grad.asnumpy(), 6 * x.asnumpy())


# ---- norm / argmax / argmin ---------------------------------------------------------------------
@pytest.mark.parametrize("ord_", [1, 2])
@pytest.mark.parametrize("axis,keepdims", [(None, False), (1, False), ((0, 1), True), (-1, True)])
def test_norm(ord_, axis, keepdims):
    x = rand(2, 3, 2)
    fn = (lambda v, axis, keepdims: np.sum(np.abs(v), axis=axis, keepdims=keepdims)) \
        if ord_ == 1 else \
        (lambda v, axis, keepdims: np.sqrt(np.sum(v * v, axis=axis, keepdims=keepdims)))
    check_forward("norm", [x], np_reduce(fn, x, axis, keepdims, False), rtol=1e-5,
                  ord=ord_, axis=axis, keepdims=keepdims)
    check_infer("norm", [x], ord=ord_, axis=axis, keepdims=keepdims)
    check_grad(lambda a: nd.norm(a, ord=ord_, axis=axis, keepdims=keepdims),
               [RNG.uniform(0.5, 1.5, (2, 3, 2))])
    assert nd.norm(nd.array(x), out_dtype="float64").dtype == np.float64


@pytest.mark.parametrize("name,fn", [("argmax", np.argmax), ("argmin", np.argmin)])
@pytest.mark.parametrize("axis,keepdims", [(None, False), (0, False), (1, True), (-1, False)])
def test_argmax_argmin_give_float_indices(name, fn, axis, keepdims):
    x = rand(3, 4)
    if axis is None:
        exp = np.array([fn(x)])
    else:
        exp = fn(x, axis=axis)
        exp = np.expand_dims(exp, axis) if keepdims else exp
    out = check_forward(name, [x], exp, axis=axis, keepdims=keepdims)
    assert out.dtype == np.float32
    check_infer(name, [x], axis=axis, keepdims=keepdims)
    a = nd.array(x)
    a.attach_grad()
    with autograd.record():
        y = getattr(nd, name)(a, axis=axis) * 1.0
    y.backward()
    assert not a.grad.asnumpy().any()


def test_argmax_channel_and_1d():
    x = rand(3, 5)
    check_forward("argmax_channel", [x], np.argmax(x, axis=1))
    check_infer("argmax_channel", [x])
    v = rand(4)
    check_forward("argmax", [v], np.array([np.argmax(v)]), axis=0)
    check_infer("argmax", [v], axis=0, keepdims=True)


# ---- broadcasts and sum_like ------------------------------------------------------------------
def test_broadcast_to_and_axis():
    x = rand(2, 1, 3)
    check_forward("broadcast_to", [x], np.broadcast_to(x, (2, 4, 3)), shape=(0, 4, 3))
    check_infer("broadcast_to", [x], shape=(2, 4, 0))
    check_grad(lambda a: nd.broadcast_to(a, shape=(2, 4, 3)), [x])
    y = rand(1, 3, 1)
    for name in ("broadcast_axis", "broadcast_axes"):
        check_forward(name, [y], np.broadcast_to(y, (2, 3, 4)), axis=(0, 2), size=(2, 4))
    check_infer("broadcast_axis", [y], axis=(0, -1), size=(2, 4))
    check_grad(lambda a: nd.broadcast_axis(a, axis=2, size=3), [y])
    assert nd.array(x).broadcast_to((2, 5, 3)).shape == (2, 5, 3)
    with pytest.raises(mx.MXNetError):
        nd.broadcast_to(nd.array(x), shape=(3, 4, 3))
    assert infer("broadcast_to", [(None, 1)], shape=(0, 5))[0] == [(None, 5)]


def test_broadcast_like():
    x, like = rand(1, 3), rand(4, 3)
    check_forward("broadcast_like", [x, like], np.broadcast_to(x, (4, 3)))
    check_infer("broadcast_like", [x, like])
    check_grad(lambda a, b: nd.broadcast_like(a, b), [x, like], wrt=[0])
    y, like2 = rand(1, 3, 1), rand(5, 7)
    check_forward("broadcast_like", [y, like2], np.broadcast_to(y, (5, 3, 7)),
                  lhs_axes=(0, 2), rhs_axes=(0, 1))
    check_infer("broadcast_like", [y, like2], lhs_axes=(0, -1), rhs_axes=(0, -1))
    assert infer("broadcast_like", [(1, 3), (None, 3)])[0] == [(None, 3)]


@given(st.lists(st.integers(1, 3), min_size=1, max_size=3), st.data())
def test_sum_like_inverts_broadcasting(shape, data):
    small = tuple(d if data.draw(st.booleans()) else 1 for d in shape)
    lead = tuple(data.draw(st.lists(st.integers(1, 2), max_size=1)))
    x = rand(*(lead + tuple(shape)))
    like = rand(*small)
    exp = x.sum(axis=tuple(range(len(lead))) + tuple(
        i + len(lead) for i, d in enumerate(small) if d == 1), keepdims=True).reshape(small)
    check_forward("sum_like", [x, like], exp, rtol=1e-5, atol=1e-5)
    check_infer("sum_like", [x, like])


@pytest.mark.parametrize("shape,like", [((2, 3), (1, 3)), ((2, 2, 3), (2, 1)), ((2, 3), (2, 3))])
def test_sum_like_gradients_both_ways(shape, like):
    check_grad(lambda a, b: nd.sum_like(a, b), [rand(*shape), rand(*like)], wrt=[0])
    check_grad(lambda a, b: nd.broadcast_like(a, b), [rand(*like), rand(*shape)], wrt=[0])
    x = rand(2, 3)
    out = get_op("sum_like").compute([x, x], {})
    assert not np.shares_memory(out, x)


# ---- sort / argsort / topk --------------------------------------------------------------------
@pytest.mark.parametrize("axis", [-1, 0, None])
@pytest.mark.parametrize("is_ascend", [True, False])
def test_sort_argsort(axis, is_ascend):
    x = rand(3, 4)
    flat = x.reshape(-1) if axis is None else x
    ax = 0 if axis is None else axis
    order = np.argsort(flat if is_ascend else -flat, axis=ax, kind="stable")
    check_forward("sort", [x], np.take_along_axis(flat, order, ax), axis=axis,
                  is_ascend=is_ascend)
    out = check_forward("argsort", [x], order, axis=axis, is_ascend=is_ascend)
    assert out.dtype == np.float32
    assert nd.argsort(nd.array(x), axis=axis, dtype="int32").dtype == np.int32
    for name in ("sort", "argsort"):
        check_infer(name, [x], axis=axis, is_ascend=is_ascend)
    check_grad(lambda a: nd.sort(a, axis=axis, is_ascend=is_ascend), [x])


@pytest.mark.parametrize("ret_typ", ["value", "indices", "both", "mask"])
@pytest.mark.parametrize("axis,k,is_ascend", [(-1, 2, False), (0, 1, True), (None, 3, False),
                                              (1, 0, False)])
def test_topk(ret_typ, axis, k, is_ascend):
    x = rand(3, 4)
    flat = x.reshape(-1) if axis is None else x
    ax = 0 if axis is None else axis
    kk = k if k > 0 else flat.shape[ax]
    order = np.argsort(flat if is_ascend else -flat, axis=ax, kind="stable")
    idx = np.take(order, np.arange(kk), axis=ax)
    vals = np.take_along_axis(flat, idx, ax)
    mask = np.zeros_like(flat)
    np.put_along_axis(mask, idx, 1, ax)
    exp = {"value": vals, "indices": idx, "both": [vals, idx], "mask": mask.reshape(x.shape)}
    attrs = dict(axis=axis, k=k, ret_typ=ret_typ, is_ascend=is_ascend)
    check_forward("topk", [x], exp[ret_typ], **attrs)
    check_infer("topk", [x], **attrs)
    if ret_typ == "value":
        check_grad(lambda a: nd.topk(a, **attrs), [x])
    if ret_typ == "both":
        check_grad(lambda a: nd.topk(a, **attrs)[0], [x])


def test_topk_defaults_are_mxnets():
    x = nd.array([[0.3, 0.2, 0.4], [0.1, 0.3, 0.2]])
    np.testing.assert_array_equal(nd.topk(x).asnumpy(), [[2], [1]])
    assert nd.topk(x).dtype == np.float32
    np.testing.assert_allclose(nd.sort(x).asnumpy()[0], [0.2, 0.3, 0.4], rtol=1e-6)


def check_unknown(name, arrays, **attrs):
    """With every input dim unknown the rule still gives the right rank, and each dim it
    does claim to know is right."""
    op = get_op(name)
    at = normalize_attrs(op, attrs)
    res = op.compute(list(arrays), at)
    res = list(res) if isinstance(res, tuple | list) else [res]
    outs, _ = op.infer([TensorType((None,) * a.ndim, a.dtype) for a in arrays], at)
    for t, r in zip(outs, res):
        assert len(t.shape) == r.ndim, f"{name}: rank {len(t.shape)} != {r.ndim}"
        assert all(d is None or d == e for d, e in zip(t.shape, r.shape)), (t.shape, r.shape)


@pytest.mark.parametrize("name,arrays,attrs", [
    ("sum", [rand(2, 3)], {"axis": 1, "keepdims": True}),
    ("max", [rand(2, 3)], {"axis": 0, "exclude": True}),
    ("norm", [rand(2, 3)], {}),
    ("argmax", [rand(2, 3)], {"axis": 1}),
    ("argmax_channel", [rand(2, 3)], {}),
    ("broadcast_to", [rand(2, 1)], {"shape": (0, 4)}),
    ("broadcast_like", [rand(2, 1), rand(2, 4)], {}),
    ("broadcast_axis", [rand(2, 1)], {"axis": 1, "size": 3}),
    ("sum_like", [rand(2, 3), rand(1, 3)], {}),
    ("sort", [rand(2, 3)], {}),
    ("argsort", [rand(2, 3)], {"axis": None}),
    ("topk", [rand(2, 3)], {"k": 2, "ret_typ": "both"}),
    ("topk", [rand(2, 3)], {"ret_typ": "mask"}),
])
def test_rules_with_all_dims_unknown(name, arrays, attrs):
    check_unknown(name, arrays, **attrs)
