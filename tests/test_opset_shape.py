"""Shape ops: reshape codes, permutations, concat/stack/split, tile/repeat, depth/space."""
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

RNG = np.random.default_rng(1)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def infer(name, shapes, **attrs):
    op = get_op(name)
    outs, refined = op.infer([TensorType(s) for s in shapes], normalize_attrs(op, attrs))
    return [t.shape for t in outs], [t.shape for t in refined]


# ---- reshape: each of MXNet's codes, from the Reshape docstring ---------------------------------
RESHAPE_CASES = [
    ((2, 3, 4), (4, 0, 2), False, (4, 3, 2)),
    ((2, 3, 4), (2, 0, 0), False, (2, 3, 4)),
    ((2, 3, 4), (6, 1, -1), False, (6, 1, 4)),
    ((2, 3, 4), (3, -1, 8), False, (3, 1, 8)),
    ((2, 3, 4), (-1,), False, (24,)),
    ((2, 3, 4), (-2,), False, (2, 3, 4)),
    ((2, 3, 4), (2, -2), False, (2, 3, 4)),
    ((2, 3, 4), (-2, 1, 1), False, (2, 3, 4, 1, 1)),
    ((2, 3, 4), (-3, 4), False, (6, 4)),
    ((2, 3, 4, 5), (-3, -3), False, (6, 20)),
    ((2, 3, 4), (0, -3), False, (2, 12)),
    ((2, 3, 4), (-3, -2), False, (6, 4)),
    ((2, 3, 4), (-4, 1, 2, -2), False, (1, 2, 3, 4)),
    ((2, 3, 4), (2, -4, -1, 3, -2), False, (2, 1, 3, 4)),
    ((10, 5, 4), (-1, 0), False, (40, 5)),
    ((10, 5, 4), (-1, 0), True, (50, 4)),
    ((2, 3, 4), (-4, 2, -1, -3), False, (2, 1, 12)),
]


@pytest.mark.parametrize("src,codes,reverse,expected", RESHAPE_CASES)
def test_reshape_codes(src, codes, reverse, expected):
    x = rand(*src)
    out = check_forward("reshape", [x], x.reshape(expected), shape=codes, reverse=reverse)
    check_forward("Reshape", [x], x.reshape(expected), shape=codes, reverse=reverse)
    check_infer("reshape", [x], shape=codes, reverse=reverse)
    assert out.shape == expected
    assert nd.array(x).reshape(codes, reverse=reverse).shape == expected


def test_reshape_method_forms_and_deprecated_target_shape():
    x = nd.array(rand(2, 3, 4))
    assert x.reshape(4, 6).shape == (4, 6)
    assert x.reshape((0, -1)).shape == (2, 12)
    assert nd.reshape(x, target_shape=(6, 0)).shape == (6, 4)
    assert nd.reshape(x, target_shape=(5, 0, 2), keep_highest=True).shape == (2, 6, 2)


@pytest.mark.parametrize("src,codes,reverse,expected", [
    ((None, 3, 4), (0, -1), False, (None, 12)),
    ((None, 3, 4), (-1, 4), False, (None, 4)),
    ((None, 3, 4), (0, -3), False, (None, 12)),
    ((None, 3, 4), (-3, 0), False, (None, 4)),
    ((None, 3, 4), (-2,), False, (None, 3, 4)),
    ((None, 12), (0, -4, -1, 3), False, (None, 4, 3)),
    ((None, 12), (0, 2, -1), False, (None, 2, 6)),
    ((3, None), (-1, 0), True, (3, None)),
    ((None, 3, 4), (-1,), False, (None,)),
    ((None, None), (0, 0, -1), False, (None, None, 1)),
])
def test_reshape_keeps_unknown_dims(src, codes, reverse, expected):
    assert infer("reshape", [src], shape=codes, reverse=reverse)[0] == [expected]


def test_reshape_learns_one_unknown_input_dim_and_rejects_bad_codes():
    assert infer("reshape", [(None, 4)], shape=(2, 3, 4))[1] == [(6, 4)]
    with pytest.raises(ShapeError, match="reshape"):
        infer("reshape", [(2, 3)], shape=(-1, -1))
    with pytest.raises(ShapeError, match="sizes differ"):
        infer("reshape", [(2, 3)], shape=(4, 2))
    with pytest.raises(mx.MXNetError, match=r"reshape.*\(2, 3\)"):
        nd.reshape(nd.ones((2, 3)), shape=(5,))


@given(st.lists(st.integers(1, 4), min_size=1, max_size=4), st.data())
def test_reshape_random_codes_agree_with_numpy(shape, data):
    codes, expected, i = [], [], 0
    while i < len(shape):
        kind = data.draw(st.sampled_from(["copy", "keep", "merge", "rest"]))
        if kind == "merge" and i + 1 < len(shape):
            codes.append(-3)
            expected.append(shape[i] * shape[i + 1])
            i += 2
        elif kind == "rest":
            codes.append(-2)
            expected.extend(shape[i:])
            i = len(shape)
        else:
            codes.append(0 if kind == "keep" else shape[i])
            expected.append(shape[i])
            i += 1
    if data.draw(st.booleans()):
        j = data.draw(st.integers(0, len(codes) - 1))
        if codes[j] not in (-2, -3) and -1 not in codes:
            codes[j] = -1
    x = rand(*shape)
    check_forward("reshape", [x], x.reshape(expected), shape=tuple(codes))
    check_infer("reshape", [x], shape=tuple(codes))


def test_reshape_family_gradients():
    x = rand(2, 3, 2)
    check_grad(lambda a: nd.reshape(a, shape=(-3, 0)), [x])
    check_grad(lambda a: nd.flatten(a), [x])
    check_grad(lambda a: nd.expand_dims(a, axis=1), [x])
    check_grad(lambda a: nd.squeeze(nd.expand_dims(a, axis=-1)), [x])
    check_grad(lambda a, b: nd.reshape_like(a, b), [x, rand(3, 4)], wrt=[0])


def test_reshape_like_flatten_expand_squeeze():
    x = rand(2, 3, 4)
    check_forward("reshape_like", [x, rand(6, 4)], x.reshape(6, 4))
    check_forward("reshape_like", [x, rand(5, 12, 2)], x.reshape(2, 12),
                  lhs_begin=1, lhs_end=None, rhs_begin=1, rhs_end=-1)
    check_infer("reshape_like", [x, rand(5, 3, 4)], lhs_begin=1, rhs_begin=1)
    for name in ("flatten", "Flatten"):
        check_forward(name, [x], x.reshape(2, 12))
    v = rand(5)
    check_forward("flatten", [v], v.reshape(5, 1))
    check_infer("flatten", [x])
    assert infer("flatten", [(None, 3, 4)])[0] == [(None, 12)]
    for axis, exp in [(0, (1, 2, 3, 4)), (3, (2, 3, 4, 1)), (-1, (2, 3, 4, 1)),
                      (-4, (1, 2, 3, 4))]:
        check_forward("expand_dims", [x], x.reshape(exp), axis=axis)
        check_infer("expand_dims", [x], axis=axis)
    y = rand(1, 3, 1)
    check_forward("squeeze", [y], y.reshape(3))
    check_forward("squeeze", [y], y.reshape(1, 3), axis=2)
    check_forward("squeeze", [y], y.reshape(3), axis=(0, -1))
    w = rand(1, 1)
    check_forward("squeeze", [w], w.reshape(1))
    check_infer("squeeze", [y], axis=0)
    assert infer("squeeze", [(None, 1, 3)])[0] == [(None, 3)]
    with pytest.raises(ShapeError, match="squeeze"):
        infer("squeeze", [(2, 3)], axis=1)


# ---- transpose / swapaxes ---------------------------------------------------------------------
@given(st.lists(st.integers(1, 3), min_size=1, max_size=4), st.randoms())
def test_transpose_random_permutations(shape, rnd):
    perm = list(range(len(shape)))
    rnd.shuffle(perm)
    x = rand(*shape)
    check_forward("transpose", [x], np.transpose(x, perm), axes=tuple(perm))
    check_forward("transpose", [x], np.transpose(x))
    check_infer("transpose", [x], axes=tuple(perm))


def test_transpose_swapaxes_gradients_and_unknown_dims():
    x = rand(2, 3, 2)
    check_grad(lambda a: nd.transpose(a, axes=(1, 2, 0)), [x])
    check_grad(lambda a: nd.swapaxes(a, dim1=0, dim2=2), [x])
    check_forward("SwapAxis", [x], np.swapaxes(x, 0, 2), dim1=0, dim2=2)
    check_forward("swapaxes", [x], x, dim1=1, dim2=1)
    check_infer("swapaxes", [x], dim1=-1, dim2=0)
    assert infer("transpose", [(None, 3, 4)], axes=(2, 0, 1))[0] == [(4, None, 3)]
    with pytest.raises(ShapeError, match="transpose"):
        infer("transpose", [(2, 3)], axes=(0, 0))


# ---- concat / stack / split ---------------------------------------------------------------------
@given(st.lists(st.integers(1, 3), min_size=1, max_size=3), st.data())
def test_concat_split_round_trip(shape, data):
    axis = data.draw(st.integers(0, len(shape) - 1))
    n = data.draw(st.integers(1, 3))
    parts = [rand(*shape) for _ in range(n)]
    whole = np.concatenate(parts, axis=axis)
    check_forward("concat", parts, whole, dim=axis)
    check_infer("concat", parts, dim=axis)
    back = nd.split(nd.array(whole), num_outputs=n, axis=axis)
    back = back if isinstance(back, list) else [back]
    for p, b in zip(parts, back):
        np.testing.assert_array_equal(p, b.asnumpy())
    check_infer("split", [whole], num_outputs=n, axis=axis)
    stacked = np.stack(parts, axis=axis)
    check_forward("stack", parts, stacked, axis=axis)
    check_infer("stack", parts, axis=axis)


def test_concat_stack_split_gradients():
    a, b, c = rand(2, 1), rand(2, 3), rand(2, 2)
    check_grad(lambda x, y, z: nd.concat(x, y, z), [a, b, c])
    check_grad(lambda x, y: nd.Concat(x, y, dim=0), [b, b + 1])
    check_grad(lambda x, y: nd.stack(x, y, axis=1), [b, b * 2])
    check_grad(lambda x: nd.stack(x), [b])
    check_grad(lambda x: nd.split(x, num_outputs=3, axis=1)[1], [b])
    check_grad(lambda x: nd.SliceChannel(x, 3, 1, True)[2] * 2, [b])
    check_grad(lambda x: nd.split(x, num_outputs=1, axis=0), [b])


def test_split_squeeze_axis_and_concat_rules_with_unknown_dims():
    x = rand(2, 3)
    outs = check_forward("split", [x], [x[:, 0], x[:, 1], x[:, 2]], num_outputs=3,
                         squeeze_axis=True)
    assert len(outs) == 3
    assert infer("concat", [(None, 3), (None, 2)])[0] == [(None, 5)]
    assert infer("concat", [(None, 3), (4, None)], dim=0)[0] == [(None, 3)]
    assert infer("concat", [(None, 3), (4, None)], dim=0)[1] == [(None, 3), (4, 3)]
    assert infer("stack", [(None, 3), (2, None)])[0] == [(2, 2, 3)]
    assert infer("split", [(None, 6)], num_outputs=3)[0] == [(None, 2)] * 3
    with pytest.raises(ShapeError, match="split"):
        infer("split", [(2, 5)], num_outputs=2)
    with pytest.raises(ShapeError, match="concat"):
        infer("concat", [(2, 3), (3, 3)])


# ---- tile / repeat ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape,reps", [((2, 3), (2, 2)), ((2, 3), (3,)), ((3,), (2, 2)),
                                        ((2, 1, 2), (1, 3, 2))])
def test_tile(shape, reps):
    x = rand(*shape)
    check_forward("tile", [x], np.tile(x, reps), reps=reps)
    check_infer("tile", [x], reps=reps)
    check_grad(lambda a: nd.tile(a, reps=reps), [x])


@pytest.mark.parametrize("axis", [None, 0, 1, -1])
def test_repeat(axis):
    x = rand(2, 3)
    check_forward("repeat", [x], np.repeat(x, 2, axis=axis), repeats=2, axis=axis)
    check_infer("repeat", [x], repeats=3, axis=axis)
    check_grad(lambda a: nd.repeat(a, repeats=2, axis=axis), [x])
    assert infer("repeat", [(None, 3)], repeats=2, axis=1)[0] == [(None, 6)]


# ---- depth_to_space / space_to_depth ------------------------------------------------------------
def test_depth_to_space_matches_mxnet_docstring():
    x = np.arange(24, dtype=np.float32).reshape(1, 4, 2, 3)
    exp = np.array([[[[0, 6, 1, 7, 2, 8], [12, 18, 13, 19, 14, 20],
                      [3, 9, 4, 10, 5, 11], [15, 21, 16, 22, 17, 23]]]], np.float32)
    check_forward("depth_to_space", [x], exp, block_size=2)
    check_forward("space_to_depth", [exp], x, block_size=2)
    check_infer("depth_to_space", [x], block_size=2)
    check_infer("space_to_depth", [exp], block_size=2)
    check_grad(lambda a: nd.depth_to_space(a, 2), [rand(1, 4, 1, 2)])
    check_grad(lambda a: nd.space_to_depth(a, 2), [rand(1, 1, 2, 4)])
    assert infer("depth_to_space", [(None, 8, 3, 3)], block_size=2)[0] == [(None, 2, 6, 6)]


def test_shape_and_size_array():
    x = rand(2, 3, 4)
    out = check_forward("shape_array", [x], np.array([2, 3, 4]))
    assert out.dtype == np.int64
    assert check_forward("size_array", [x], np.array([24])).dtype == np.int64
    check_infer("shape_array", [x])
    check_infer("size_array", [x])
    a = nd.array(x)
    a.attach_grad()
    with autograd.record():
        y = nd.sum(a) + nd.size_array(a).astype("float32")
    y.backward()
    np.testing.assert_array_equal(a.grad.asnumpy(), np.ones_like(x))


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
    ("reshape", [rand(2, 3, 4)], {"shape": (0, -1)}),
    ("reshape", [rand(2, 3, 4)], {"shape": (-4, 1, -1, -2)}),
    ("reshape", [rand(2, 3, 4)], {"shape": (4, 6)}),
    ("reshape_like", [rand(2, 3, 4), rand(6, 4)], {}),
    ("flatten", [rand(2, 3, 4)], {}),
    ("expand_dims", [rand(2, 3)], {"axis": -1}),
    ("squeeze", [rand(2, 3)], {"axis": None}),
    ("transpose", [rand(2, 3, 4)], {"axes": (1, 2, 0)}),
    ("swapaxes", [rand(2, 3, 4)], {"dim1": 0, "dim2": 2}),
    ("concat", [rand(2, 3), rand(2, 1)], {}),
    ("stack", [rand(2, 3), rand(2, 3)], {"axis": 1}),
    ("split", [rand(2, 4)], {"num_outputs": 2}),
    ("split", [rand(2, 2)], {"num_outputs": 2, "squeeze_axis": True}),
    ("tile", [rand(2, 3)], {"reps": (2, 1, 2)}),
    ("repeat", [rand(2, 3)], {"repeats": 2}),
    ("depth_to_space", [rand(1, 4, 2, 2)], {"block_size": 2}),
    ("space_to_depth", [rand(1, 1, 2, 2)], {"block_size": 2}),
    ("shape_array", [rand(2, 3)], {}),
    ("size_array", [rand(2, 3)], {}),
])
def test_rules_with_all_dims_unknown(name, arrays, attrs):
    check_unknown(name, arrays, **attrs)
