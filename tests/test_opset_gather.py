"""Gather, slicing and padding ops, their backward helpers and second-order gradients."""
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

RNG = np.random.default_rng(2)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def infer(name, shapes, dtypes=None, **attrs):
    op = get_op(name)
    dtypes = dtypes or ["float32"] * len(shapes)
    outs, refined = op.infer([TensorType(s, d) for s, d in zip(shapes, dtypes)],
                             normalize_attrs(op, attrs))
    return [t.shape for t in outs], [t.shape for t in refined]


def second_order(fn, x, eps=1e-6):
    """Check d/dx of z(x) = sum(grad_x(sum(w * fn(x)^2))^2) against finite differences: this
    runs the gradient rules of the backward helpers (second-order gradients)."""
    w = RNG.standard_normal(np.shape(fn(nd.array(x, dtype=np.float64))))

    def z_of(xv, want_grad):
        a = nd.array(xv, dtype=np.float64)
        a.attach_grad()
        with autograd.record():
            y = fn(a)
            obj = nd.sum(y * y * nd.array(w, dtype=np.float64))
        g = autograd.grad(obj, [a], create_graph=True)[0]
        with autograd.record():
            z = nd.sum(g * g)
        if want_grad:
            z.backward()
        return float(z.asnumpy()[0]), a.grad.asnumpy()

    x = np.asarray(x, np.float64)
    _, analytic = z_of(x, True)
    num = np.zeros_like(x)
    for j in range(x.size):
        d = np.zeros(x.size)
        d[j] = eps
        d = d.reshape(x.shape)
        num.reshape(-1)[j] = (z_of(x + d, False)[0] - z_of(x - d, False)[0]) / (2 * eps)
    np.testing.assert_allclose(analytic, num, rtol=1e-4, atol=1e-5)


# ---- take -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["clip", "wrap", "raise"])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_take(mode, axis):
    x = rand(3, 4)
    idx = np.array([[0, 2], [1, 1]], np.float32) if mode == "raise" else \
        np.array([[0, 5], [-1, 2]], np.float32)
    n = x.shape[axis]
    fixed = {"clip": np.clip(idx.astype(int), 0, n - 1), "wrap": idx.astype(int) % n,
             "raise": idx.astype(int)}[mode]
    check_forward("take", [x, idx], np.take(x, fixed, axis=axis), axis=axis, mode=mode)
    check_infer("take", [x, idx], axis=axis, mode=mode)
    check_grad(lambda a, i: nd.take(a, i, axis=axis, mode=mode), [x, idx], wrt=[0])


def test_take_defaults_repeats_and_raise():
    x = rand(4, 2)
    idx = np.array([3, 3, 0, 7], np.float32)
    check_forward("take", [x, idx], x[[3, 3, 0, 3]])
    a = nd.array(x)
    a.attach_grad()
    with autograd.record():
        y = nd.take(a, nd.array(idx))
    y.backward()
    np.testing.assert_array_equal(a.grad.asnumpy()[:, 0], [1, 0, 0, 3])
    with pytest.raises(mx.MXNetError, match="take"):
        nd.take(a, nd.array([5.0]), mode="raise")
    assert infer("take", [(None, 5), (2, 3)], axis=1)[0] == [(None, 2, 3)]


def test_take_backward_has_a_gradient_so_second_order_works():
    x = rand(3, 2)
    idx = nd.array([0, 2, 2])
    second_order(lambda a: nd.take(a, idx) * 2.0, x)
    og = rand(3, 2)
    check_grad(lambda o, d: nd.take_backward(o, idx.astype("float64"), d), [og, x], wrt=[0])


# ---- pick -------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis,keepdims", [(-1, False), (0, False), (1, True), (0, True)])
def test_pick(axis, keepdims):
    x = rand(3, 4)
    n = x.shape[axis]
    other = 1 - (axis % 2)
    idx = RNG.integers(0, n, x.shape[other]).astype(np.float32)
    exp = np.take_along_axis(x, np.expand_dims(idx.astype(int), axis), axis)
    exp = exp if keepdims else exp.squeeze(axis)
    check_forward("pick", [x, idx], exp, axis=axis, keepdims=keepdims)
    check_infer("pick", [x, idx], axis=axis, keepdims=keepdims)
    check_grad(lambda a, i: nd.pick(a, i, axis=axis, keepdims=keepdims), [x, idx], wrt=[0])


def test_pick_modes_alias_and_rules():
    x = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32)
    check_forward("pick", [x, np.array([0, 1], np.float32)], np.array([1.0, 4.0]), axis=0)
    check_forward("pick", [x, np.array([0, 1, 0], np.float32)], np.array([1.0, 4.0, 5.0]), 1)
    check_forward("pick", [x, np.array([2, -1, -2], np.float32)], np.array([1.0, 4.0, 5.0]),
                  axis=1, mode="wrap")
    check_forward("pick", [x, np.array([[1], [0], [2]], np.float32)],
                  np.array([[2.0], [3.0], [6.0]]), axis=1, keepdims=True)
    check_forward("choose_element_0index", [x, np.array([9, -3, 1], np.float32)],
                  np.array([2.0, 3.0, 6.0]))
    assert infer("pick", [(None, 4), (None,)])[0] == [(None,)]
    assert infer("pick", [(3, 4), (None,)])[1] == [(3, 4), (3,)]
    with pytest.raises(ShapeError, match="pick"):
        infer("pick", [(3, 4), (3,)], axis=None)
    second_order(lambda a: nd.pick(a, nd.array([1, 0, 1])), x)


# ---- one_hot / where --------------------------------------------------------------------------
def test_one_hot():
    idx = np.array([[1, 0], [2, 5]], np.float32)
    exp = np.zeros((2, 2, 3))
    for (i, j), v in np.ndenumerate(idx.astype(int)):
        if v < 3:
            exp[i, j, v] = 1
    out = check_forward("one_hot", [idx], exp, depth=3)
    assert out.dtype == np.float32
    out = check_forward("one_hot", [idx], exp * 8 + (1 - exp) * 1, depth=3, on_value=8,
                        off_value=1, dtype="int32")
    assert out.dtype == np.int32
    check_infer("one_hot", [idx], depth=4, dtype="float64")


@pytest.mark.parametrize("cond_shape", [(2, 3), (2,)])
def test_where(cond_shape):
    x, y = rand(2, 3), rand(2, 3)
    c = (RNG.random(cond_shape) > 0.5).astype(np.float32)
    cb = c if c.ndim == 2 else c[:, None]
    check_forward("where", [c, x, y], np.where(cb != 0, x, y))
    check_infer("where", [c, x, y])
    check_grad(lambda a, b, cc: nd.where(cc, a, b), [x, y, c], wrt=[0, 1])
    assert infer("where", [cond_shape, (None, 3), (2, None)])[0] == [(2, 3)]


def test_where_infers_nothing_before_the_condition_shape_is_known():
    # MXNet's WhereOpShape: an unknown condition dim leaves everything as it was
    shapes = [(None, 3), (2, 3), (2, None)]
    assert infer("where", shapes) == ([None], shapes)
    assert infer("where", [(None,), (2, 3), (2, 3)]) == ([None], [(None,), (2, 3), (2, 3)])
    # once it is known, x and y also take the output's dims (the backward half)
    op = get_op("where")
    back = op.infer_back([TensorType((2, 3)), TensorType((None, 3)), TensorType(None)],
                         [TensorType((2, 3))], {})
    assert [t.shape for t in back] == [(2, 3), (2, 3), (2, 3)]
    c = TensorType((None, 3))
    assert op.infer_back([c, c, c], [TensorType((2, 3))], {}) == [c, c, c]


def test_where_rejects_bad_condition():
    with pytest.raises(ShapeError, match="where"):
        infer("where", [(3,), (2, 3), (2, 3)])


# ---- gather_nd / scatter_nd -------------------------------------------------------------------
def test_gather_nd_and_scatter_nd_docstring_examples():
    data = np.array([[0, 1], [2, 3]], np.float32)
    idx = np.array([[1, 1, 0], [0, 1, 0]], np.float32)
    check_forward("gather_nd", [data, idx], np.array([2.0, 3.0, 0.0]))
    data3 = np.array([[[1, 2], [3, 4]], [[5, 6], [7, 8]]], np.float32)
    check_forward("gather_nd", [data3, np.array([[0, 1], [1, 0]], np.float32)],
                  np.array([[3.0, 4.0], [5.0, 6.0]]))
    check_infer("gather_nd", [data3, np.array([[0, 1], [1, 0]], np.float32)])
    check_forward("scatter_nd", [np.array([2, 3, 0], np.float32), idx],
                  np.array([[0.0, 0.0], [2.0, 3.0]]), shape=(2, 2))
    s = check_forward("scatter_nd", [data3, np.array([[0, 1], [1, 1]], np.float32)],
                      np.array([[[[0, 0], [0, 0]], [[1, 2], [3, 4]]],
                                [[[0, 0], [0, 0]], [[5, 6], [7, 8]]]], np.float32),
                      shape=(2, 2, 2, 2))
    assert s.shape == (2, 2, 2, 2)
    check_infer("scatter_nd", [data3, np.array([[0, 1], [1, 1]], np.float32)],
                shape=(2, 2, 2, 2))
    assert infer("gather_nd", [(None, 4, 5), (2, 7)])[0] == [(7, 5)]
    assert infer("scatter_nd", [(None, 5), (1, 7)], shape=(3, 5)) == ([(3, 5)],
                                                                     [(7, 5), (1, 7)])
    with pytest.raises(ShapeError, match="gather_nd"):  # M decides the rank: must be known
        infer("gather_nd", [(3, 4), (None, 2)])


def test_gather_scatter_nd_gradients():
    data = rand(3, 2, 2)
    idx = np.array([[0, 2, 0], [1, 0, 1]], np.float32)
    check_grad(lambda d, i: nd.gather_nd(d, i), [data, idx], wrt=[0])
    check_grad(lambda d, i: nd.scatter_nd(d, i, shape=(3, 2, 2)),
               [rand(2, 2), np.array([[0, 2], [1, 0]], np.float32)], wrt=[0])
    second_order(lambda a: nd.gather_nd(a, nd.array(idx)), data)


# ---- take_along_axis / diag -----------------------------------------------------------------
@given(st.integers(0, 1), st.data())
def test_take_along_axis_and_its_adjoint(axis, data):
    x = rand(3, 4)
    idx = np.array(data.draw(st.lists(st.lists(st.integers(0, x.shape[axis] - 1),
                                                min_size=4 if axis == 0 else 2,
                                                max_size=4 if axis == 0 else 2),
                                       min_size=2 if axis == 0 else 3,
                                       max_size=2 if axis == 0 else 3)), np.float32)
    check_forward("take_along_axis", [x, idx], np.take_along_axis(x, idx.astype(int), axis),
                  axis=axis)
    check_infer("take_along_axis", [x, idx], axis=axis)
    check_grad(lambda a, i: nd.take_along_axis(a, i, axis=axis), [x, idx], wrt=[0])


def test_sort_second_order():
    second_order(lambda a: nd.sort(a, axis=0), rand(3, 2))
    second_order(lambda a: nd.topk(a, k=2, ret_typ="value"), rand(2, 3))


@pytest.mark.parametrize("shape,k,axes", [((4,), 0, (0, 1)), ((3,), -1, (0, 1)),
                                          ((3, 4), 0, (0, 1)), ((3, 4), 1, (0, 1)),
                                          ((3, 4), -2, (0, 1)), ((2, 3, 4), 1, (1, 2)),
                                          ((2, 3, 4), 0, (2, 0))])
def test_diag(shape, k, axes):
    x = rand(*shape)
    exp = np.diag(x, k) if x.ndim == 1 else np.diagonal(x, k, *axes)
    check_forward("diag", [x], exp, k=k, axis1=axes[0], axis2=axes[1])
    check_infer("diag", [x], k=k, axis1=axes[0], axis2=axes[1])
    check_grad(lambda a: nd.diag(a, k=k, axis1=axes[0], axis2=axes[1]), [x])
    second_order(lambda a: nd.diag(a, k=k, axis1=axes[0], axis2=axes[1]), x)


# ---- slice / slice_axis / slice_like / reverse --------------------------------------------------
SLICES = [((0, 1), (2, 3), ()), ((None, 1), (None, None), (None, -1)), ((1,), (-1,), ()),
          ((-1, None, 0), (None, None, 2), (-1, 2, 1)), ((5,), (0,), ()),
          ((None, -2), (None, -5), (None, -1))]


@pytest.mark.parametrize("begin,end,step", SLICES)
def test_slice(begin, end, step):
    x = rand(3, 4, 2)
    key = tuple(slice(b, e, s) for b, e, s in zip(begin, end, step or (None,) * len(begin)))
    for name in ("slice", "crop"):
        check_forward(name, [x], x[key], begin=begin, end=end, step=step)
    check_infer("slice", [x], begin=begin, end=end, step=step)
    if x[key].size:
        check_grad(lambda a: nd.slice(a, begin=begin, end=end, step=step), [x])


def test_slice_axis_slice_like_reverse():
    x = rand(3, 4)
    check_forward("slice_axis", [x], x[:, 1:3], axis=1, begin=1, end=3)
    check_forward("slice_axis", [x], x[-2:], axis=0, begin=-2, end=None)
    check_infer("slice_axis", [x], axis=-1, begin=0, end=-1)
    check_grad(lambda a: nd.slice_axis(a, axis=1, begin=1, end=None), [x])
    like = rand(2, 3)
    check_forward("slice_like", [x, like], x[:2, :3])
    check_forward("slice_like", [x, like], x[:, :3], axes=(1,))
    check_forward("slice_like", [x, rand(2)], x[:2], axes=(0,))
    check_infer("slice_like", [x, like], axes=(-1,))
    check_grad(lambda a, b: nd.slice_like(a, b, axes=(0, 1)), [x, like], wrt=[0])
    for name in ("reverse", "flip"):
        check_forward(name, [x], x[::-1], axis=0)
    check_forward("reverse", [x], x[::-1, ::-1], axis=(0, 1))
    check_infer("reverse", [x], axis=1)
    check_grad(lambda a: nd.reverse(a, axis=1), [x])
    assert infer("slice", [(None, 5)], begin=(0, 1), end=(None, 3))[0] == [(None, 2)]
    assert infer("slice_like", [(4, 5), (None, 3)])[0] == [(None, 3)]
    assert infer("slice_axis", [(None, 5, 2)], axis=1, begin=1, end=None)[0] == [(None, 4, 2)]
    with pytest.raises(ShapeError, match="slice"):
        infer("slice", [(3,)], begin=(0, 0), end=(1, 1))


# ---- pad ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["constant", "edge", "reflect"])
def test_pad(mode):
    x = rand(1, 2, 3, 3)
    pw = (0, 0, 0, 0, 1, 2, 2, 1)
    pairs = [(0, 0), (0, 0), (1, 2), (2, 1)]
    kw = {"constant_values": 1.5} if mode == "constant" else {}
    check_forward("pad", [x], np.pad(x, pairs, mode, **kw), mode=mode, pad_width=pw,
                  constant_value=1.5)
    check_forward("Pad", [x], np.pad(x, pairs, mode, **kw), mode=mode, pad_width=pw,
                  constant_value=1.5)
    check_infer("pad", [x], mode=mode, pad_width=pw)
    check_grad(lambda a: nd.pad(a, mode=mode, pad_width=pw), [x])
    second_order(lambda a: nd.pad(a, mode=mode, pad_width=pw), x[:, :1])
    with pytest.raises(ShapeError, match="pad"):
        infer("pad", [(2, 3)], mode=mode, pad_width=(1, 1))


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


I2 = np.array([[0, 1], [1, 0]], np.float32)


@pytest.mark.parametrize("name,arrays,attrs", [
    ("take", [rand(3, 4), I2], {"axis": 1}),
    ("pick", [rand(3, 4), np.array([0, 1, 2], np.float32)], {}),
    ("one_hot", [I2], {"depth": 3}),
    ("take_along_axis", [rand(3, 4), np.zeros((3, 2), np.float32)], {"axis": 1}),
    ("diag", [rand(3, 4)], {"k": 1}),
    ("diag", [rand(3)], {}),
    ("slice", [rand(3, 4)], {"begin": (1, None), "end": (None, 2)}),
    ("slice_axis", [rand(3, 4)], {"axis": 1, "begin": 0, "end": 2}),
    ("slice_like", [rand(3, 4), rand(2, 2)], {}),
    ("reverse", [rand(3, 4)], {"axis": 0}),
    ("pad", [rand(1, 1, 2, 2)], {"mode": "edge", "pad_width": (0, 0, 0, 0, 1, 1, 1, 1)}),
])
def test_rules_with_all_dims_unknown(name, arrays, attrs):
    check_unknown(name, arrays, **attrs)
