"""Tests of Convolution, Deconvolution and Pooling against SciPy and explicit loops."""
import itertools

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from opcheck import check_forward, check_grad, check_infer
from scipy.signal import correlate

import ember as mx
from ember.ir import TensorType, get_op
from ember.ir.ops import normalize_attrs

rng = np.random.default_rng(0)


def _r(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def _conv_ref(x, w, s, d, p, g):
    """Grouped, strided, dilated cross-correlation with scipy.signal.correlate."""
    nsp = x.ndim - 2
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + [(pi, pi) for pi in p])
    kd = np.zeros(w.shape[:2] + tuple((k - 1) * di + 1 for k, di in zip(w.shape[2:], d)))
    kd[(Ellipsis,) + tuple(slice(None, None, di) for di in d)] = w
    cg, fg = x.shape[1] // g, w.shape[0] // g
    outs = []
    for n in range(x.shape[0]):
        rows = []
        for f in range(w.shape[0]):
            grp = f // fg
            acc = sum(correlate(xp[n, grp * cg + c], kd[f, c], mode="valid") for c in range(cg))
            rows.append(acc[tuple(slice(None, None, si) for si in s)])
        outs.append(rows)
    return np.array(outs).reshape((x.shape[0], w.shape[0]) + np.shape(outs[0][0])[:nsp])


@given(st.integers(1, 2), st.integers(1, 2), st.integers(1, 2), st.integers(0, 1),
       st.integers(1, 2), st.integers(1, 2))
def test_convolution_2d(n, s, d, p, g, fg):
    x, w, b = _r(n, 2 * g, 6, 5), _r(fg * g, 2, 2, 3), _r(fg * g)
    at = dict(kernel=(2, 3), stride=(s, s), dilate=(d, d), pad=(p, p), num_filter=fg * g,
              num_group=g)
    exp = _conv_ref(x, w, (s, s), (d, d), (p, p), g) + b.reshape(1, -1, 1, 1)
    check_forward("Convolution", [x, w, b], exp, atol=1e-4, **at)
    check_infer("convolution", [x, w, b], **at)


@pytest.mark.parametrize("nsp", [1, 3])
def test_convolution_1d_3d(nsp):
    x, w = _r(1, 2, *(4,) * nsp), _r(3, 2, *(2,) * nsp)
    at = dict(kernel=(2,) * nsp, stride=(2,) * nsp, pad=(1,) * nsp, num_filter=3, no_bias=True)
    exp = _conv_ref(x, w, (2,) * nsp, (1,) * nsp, (1,) * nsp, 1)
    check_forward("Convolution", [x, w], exp, atol=1e-4, **at)
    check_infer("convolution", [x, w], **at)


def test_convolution_refines_weight():
    op = get_op("Convolution")
    at = normalize_attrs(op, dict(kernel=(3, 3), num_filter=8, num_group=2, pad=(1, 1)))
    outs, ref = op.infer([TensorType((4, 6, 9, 9)), TensorType((None,) * 4),
                          TensorType((None,))], at)
    assert outs[0].shape == (4, 8, 9, 9)
    assert ref[1].shape == (8, 3, 3, 3) and ref[2].shape == (8,)
    with pytest.raises(mx.base.MXNetError):
        op.infer([TensorType((4, 5, 9, 9)), TensorType((8, 3, 3, 3))], at)


@pytest.mark.parametrize("s,d,p,g", [(1, 1, 0, 1), (2, 1, 1, 2), (1, 2, 1, 1)])
def test_convolution_grad(s, d, p, g):
    at = dict(kernel=(2, 2), stride=(s, s), dilate=(d, d), pad=(p, p), num_filter=2,
              num_group=g)
    check_grad(lambda x, w, b: mx.nd.Convolution(x, w, b, **at),
               [_r(1, 2, 4, 5), _r(2, 2 // g, 2, 2), _r(2)])


def _deconv_ref(x, w, s, p, adj, g):
    """Transposed convolution by explicit scatter (2-D)."""
    n, c, h, wd = x.shape
    k = w.shape[2:]
    fo = w.shape[1]
    full = np.zeros((n, fo * g, (h - 1) * s + k[0] + adj, (wd - 1) * s + k[1] + adj))
    cg = c // g
    for i, j, ci in itertools.product(range(h), range(wd), range(c)):
        grp = ci // cg
        full[:, grp * fo:(grp + 1) * fo, i * s:i * s + k[0], j * s:j * s + k[1]] += \
            x[:, ci, i, j][:, None, None, None] * w[ci][None]
    return full[:, :, p:full.shape[2] - p, p:full.shape[3] - p]


@given(st.integers(1, 2), st.integers(0, 1), st.integers(1, 2), st.integers(0, 1))
def test_deconvolution(s, p, g, adj):
    adj = min(adj, s - 1)
    x, w = _r(1, 2 * g, 3, 2), _r(2 * g, 2, 3, 2)
    at = dict(kernel=(3, 2), stride=(s, s), pad=(p, p), adj=(adj, adj), num_filter=2 * g,
              num_group=g)
    check_forward("Deconvolution", [x, w], _deconv_ref(x, w, s, p, adj, g), atol=1e-4, **at)
    check_infer("deconvolution", [x, w], **at)


def test_deconvolution_target_shape_and_grad():
    x, w = _r(1, 2, 3, 3), _r(2, 3, 3, 3)
    y = mx.nd.Deconvolution(mx.nd.array(x), mx.nd.array(w), kernel=(3, 3), stride=(2, 2),
                            num_filter=3, target_shape=(6, 6))
    assert y.shape == (1, 3, 6, 6)
    at = dict(kernel=(2, 2), stride=(2, 2), pad=(1, 1), num_filter=2, no_bias=False)
    check_grad(lambda a, b, c: mx.nd.Deconvolution(a, b, c, **at), [_r(1, 2, 2, 3),
                                                                     _r(2, 2, 2, 2), _r(2)])
    op = get_op("Deconvolution")
    _, ref = op.infer([TensorType((1, 4, 5, 5)), TensorType((None,) * 4)],
                      normalize_attrs(op, dict(kernel=(3, 3), num_filter=6, num_group=2)))
    assert ref[1].shape == (4, 3, 3, 3)


def test_conv_second_order():
    x, w = mx.nd.array(_r(1, 1, 4, 4), dtype=np.float64), mx.nd.array(_r(1, 1, 2, 2),
                                                                       dtype=np.float64)
    x.attach_grad()
    w.attach_grad()
    with mx.autograd.record():
        y = mx.nd.Convolution(x, w, kernel=(2, 2), num_filter=1, no_bias=True)
        gx, = mx.autograd.grad((y * y).sum(), [x], create_graph=True)
        z = gx.sum()
    z.backward()   # d/dw of sum(d/dx sum(y^2)) exists and is finite
    assert np.isfinite(w.grad.asnumpy()).all() and np.abs(w.grad.asnumpy()).sum() > 0


# ---- pooling -----------------------------------------------------------------------------
def _pool_ref(x, k, s, p, kind, conv="valid", include=True):
    n, c, h, w = x.shape
    if conv == "full":
        oh, ow = [int(np.ceil((a + 2 * p - kk) / s)) + 1 for a, kk in zip((h, w), k)]
    else:
        oh, ow = [(a + 2 * p - kk) // s + 1 for a, kk in zip((h, w), k)]
    out = np.zeros((n, c, oh, ow))
    for i, j in itertools.product(range(oh), range(ow)):
        h0, w0 = i * s - p, j * s - p
        h1, w1 = min(h0 + k[0], h + p), min(w0 + k[1], w + p)
        area = (h1 - h0) * (w1 - w0)
        hs, ws = max(h0, 0), max(w0, 0)
        he, we = min(h1, h), min(w1, w)
        win = x[:, :, hs:he, ws:we].astype(np.float64)
        if kind == "max":
            out[:, :, i, j] = win.max(axis=(2, 3))
        elif kind == "sum":
            out[:, :, i, j] = win.sum(axis=(2, 3))
        else:
            cnt = area if include else (he - hs) * (we - ws)
            out[:, :, i, j] = win.sum(axis=(2, 3)) / cnt
    return out


@given(st.sampled_from(["max", "avg", "sum"]), st.integers(1, 3), st.integers(0, 1),
       st.sampled_from(["valid", "full"]), st.booleans())
def test_pooling_2d(kind, s, p, conv, include):
    p = 0 if conv == "full" else p   # 'full' + pad can make windows of padding only
    x = _r(2, 2, 5, 6)
    at = dict(kernel=(2, 3), stride=(s, s), pad=(p, p), pool_type=kind,
              pooling_convention=conv, count_include_pad=include)
    check_forward("Pooling", [x], _pool_ref(x, (2, 3), s, p, kind, conv, include), **at)
    check_infer("pooling", [x], **at)


def test_pooling_global_lp_1d_3d():
    x = _r(2, 3, 4, 5)
    check_forward("Pooling", [x], x.max(axis=(2, 3), keepdims=True), global_pool=True)
    check_forward("Pooling", [x], x.mean(axis=(2, 3), keepdims=True), global_pool=True,
                  pool_type="avg", kernel=(1, 1))
    exp = np.sqrt(_pool_ref(x ** 2, (2, 2), 2, 0, "sum"))
    check_forward("Pooling", [x], exp, kernel=(2, 2), stride=(2, 2), pool_type="lp",
                  p_value=2, rtol=1e-4)
    x1 = _r(1, 2, 7)
    check_forward("Pooling", [x1], x1[..., :6].reshape(1, 2, 3, 2).max(-1), kernel=(2,),
                  stride=(2,))
    check_forward("Pooling", [x1], x1[..., [0, 1, 2, 3, 4, 5, 6, 6]].reshape(1, 2, 4, 2)
                  .max(-1), kernel=(2,), stride=(2,), pooling_convention="same")
    x3 = _r(1, 1, 4, 4, 4)
    exp = x3.reshape(1, 1, 2, 2, 2, 2, 2, 2).mean(axis=(3, 5, 7))
    check_forward("Pooling", [x3], exp, kernel=(2, 2, 2), stride=(2, 2, 2), pool_type="avg")
    check_infer("pooling", [x3], kernel=(2, 2, 2), stride=(2, 2, 2))


@pytest.mark.parametrize("kind", ["max", "avg", "sum", "lp"])
def test_pooling_grad(kind):
    x = rng.permutation(40).reshape(1, 2, 4, 5).astype(np.float32) / 10 + 0.5  # no ties
    at = dict(kernel=(2, 2), stride=(2, 1), pad=(1, 0), pool_type=kind, p_value=3,
              pooling_convention="full")
    check_grad(lambda a: mx.nd.Pooling(a, **at), [x])


def test_avg_pooling_second_order():
    x = mx.nd.array(_r(1, 1, 4, 4), dtype=np.float64)
    x.attach_grad()
    with mx.autograd.record():
        y = mx.nd.Pooling(x, kernel=(2, 2), pool_type="avg")
        gx, = mx.autograd.grad((y * y).sum(), [x], create_graph=True)
        z = (gx * gx).sum()
    z.backward()
    assert np.isfinite(x.grad.asnumpy()).all()


# ---- the fast kernels against the first (einsum / per-window) implementation ---------------
def _slow_windows(xp, k, s, d, out):
    from numpy.lib.stride_tricks import sliding_window_view
    w = sliding_window_view(xp, tuple((a - 1) * b + 1 for a, b in zip(k, d)),
                            axis=tuple(range(2, 2 + len(k))))
    sl = tuple(slice(0, si * (oi - 1) + 1, si) for si, oi in zip(s, out))
    return w[(Ellipsis,) + sl + tuple(slice(None, None, di) for di in d)]


def _slow_conv(x, w, k, s, d, p, g):
    """einsum over the windows view (no im2col copy), float64."""
    sp, kk = "xyz"[:len(k)], "ijk"[:len(k)]
    out = tuple((n + 2 * pi - (di * (ki - 1) + 1)) // si + 1
                for n, ki, si, di, pi in zip(x.shape[2:], k, s, d, p))
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + [(a, a) for a in p])
    win = _slow_windows(xp, k, s, d, out)
    win = win.reshape((x.shape[0], g, -1) + win.shape[2:])
    wg = w.reshape((g, -1) + w.shape[1:])
    y = np.einsum(f"ngc{sp}{kk},gfc{kk}->ngf{sp}", win, wg)
    return y.reshape((x.shape[0], w.shape[0]) + out)


def _slow_deconv(x, w, k, s, d, p, g, out):
    """Transposed convolution as the adjoint of ``_slow_conv`` (one vjp by np.einsum)."""
    full = tuple(max(si * (n - 1) + di * (ki - 1) + 1, pi + o)
                 for si, n, di, ki, pi, o in zip(s, x.shape[2:], d, k, p, out))
    sp, kk = "xyz"[:len(k)], "ijk"[:len(k)]
    xg = x.astype(np.float64).reshape((x.shape[0], g, -1) + x.shape[2:])
    cols = np.einsum(f"ngf{sp},gfc{kk}->ngc{kk}{sp}", xg, w.reshape((g, -1) + w.shape[1:]))
    cols = cols.reshape((x.shape[0], -1) + k + x.shape[2:])
    y = np.zeros(cols.shape[:2] + full)
    for off in itertools.product(*[range(a) for a in k]):
        sl = tuple(slice(o * di, o * di + si * (n - 1) + 1, si)
                   for o, di, si, n in zip(off, d, s, x.shape[2:]))
        y[(Ellipsis,) + sl] += cols[(slice(None), slice(None)) + off]
    return y[(Ellipsis,) + tuple(slice(a, a + o) for a, o in zip(p, out))]


_geoms = st.tuples(st.integers(1, 3), st.integers(1, 2), st.integers(1, 2), st.integers(0, 2),
                   st.integers(1, 2), st.integers(1, 3))


@given(_geoms, st.sampled_from([1, 2, 3]))
def test_fast_conv_kernels_match_slow_reference(geo, nsp):
    kern, s, d, p, g, fg = geo
    k = (kern,) * nsp
    assume((kern - 1) * d + 1 <= [6, 5, 4][nsp - 1] + 2 * p)
    x = _r(2, 2 * g, *[6, 5, 4][:nsp])
    w = _r(fg * g, 2, *k)
    geom = dict(kernel=k, stride=(s,) * nsp, dilate=(d,) * nsp, pad=(p,) * nsp, num_group=g)
    y = mx.nd.Convolution(mx.nd.array(x), mx.nd.array(w), num_filter=fg * g, no_bias=True,
                          **geom).asnumpy()
    exp = _slow_conv(x, w, k, (s,) * nsp, (d,) * nsp, (p,) * nsp, g)
    np.testing.assert_allclose(y, exp, rtol=1e-4, atol=1e-5)
    gy = _r(*y.shape)
    dw = mx.nd.convolution_backward_weight(mx.nd.array(gy), mx.nd.array(x), **geom).asnumpy()
    xg = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + [(p, p)] * nsp)
    win = _slow_windows(xg, k, (s,) * nsp, (d,) * nsp, y.shape[2:])
    win = win.reshape((2, g, -1) + win.shape[2:])
    sp, kk = "xyz"[:nsp], "ijk"[:nsp]
    exp_dw = np.einsum(f"ngf{sp},ngc{sp}{kk}->gfc{kk}", gy.reshape((2, g, -1) + y.shape[2:]),
                       win).reshape(w.shape)
    np.testing.assert_allclose(dw, exp_dw, rtol=1e-4, atol=1e-4)
    adj = tuple(n + 2 * p - ((o - 1) * s + d * (kern - 1) + 1)
                for n, o in zip(x.shape[2:], y.shape[2:]))
    dx = mx.nd.Deconvolution(mx.nd.array(gy), mx.nd.array(w), adj=adj, num_filter=2 * g,
                             **geom).asnumpy()
    exp_dx = _slow_deconv(gy, w, k, (s,) * nsp, (d,) * nsp, (p,) * nsp, g, x.shape[2:])
    np.testing.assert_allclose(dx, exp_dx, rtol=1e-4, atol=1e-4)


def _slow_max_pool_backward(g, x, k, s, pl, pr, out):
    """Route by ``argmax`` over each flattened window (the first maximum wins)."""
    xp = np.pad(x, [(0, 0), (0, 0)] + list(zip(pl, pr)), constant_values=-np.inf)
    win = _slow_windows(xp, k, s, (1,) * len(k), out)
    arg = win.reshape(win.shape[:2 + len(k)] + (-1,)).argmax(axis=-1)
    dx = np.zeros(xp.shape)
    for off in itertools.product(*[range(a) for a in k]):
        sl = tuple(slice(o, o + si * (n - 1) + 1, si) for o, si, n in zip(off, s, out))
        dx[(Ellipsis,) + sl] += g * (arg == np.ravel_multi_index(off, k))
    return dx[(Ellipsis,) + tuple(slice(a, a + n) for a, n in zip(pl, x.shape[2:]))]


@given(st.sampled_from([1, 2, 3]), st.integers(1, 3), st.integers(1, 3), st.integers(0, 1),
       st.sampled_from(["valid", "full", "same"]), st.booleans())
def test_fast_max_pool_backward_matches_argmax(nsp, kern, s, p, conv, ties):
    from ember.ir.opset_pool import _pool_geom
    x = _r(2, 3, *[7, 6, 5][:nsp])
    if ties:   # flat regions: the gradient must go to the first maximum of each window
        x = np.round(x)
    at = dict(kernel=(kern,) * nsp, stride=(s,) * nsp, pad=(min(p, kern - 1),) * nsp,
              pooling_convention=conv)
    y = mx.nd.Pooling(mx.nd.array(x), **at)
    g = _r(*y.shape)
    dx = mx.nd.pooling_backward(mx.nd.array(g), mx.nd.array(x), **at).asnumpy()
    full_at = normalize_attrs(get_op("pooling"), at)
    k, st_, pl, pr, out = _pool_geom(full_at, x.shape[2:])
    np.testing.assert_allclose(dx, _slow_max_pool_backward(g, x, k, st_, pl, pr, out),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("s,d,p,g,bias", [((1, 1), (1, 1), (2, 2), 1, True),
                                          ((1, 1), (2, 1), (1, 0), 2, False),
                                          ((2, 1), (1, 2), (0, 1), 1, True)])
def test_numba_conv_kernels_by_chunks(monkeypatch, dtype, s, d, p, g, bias):
    """The numba im2col (plain and wide), crop+bias and col2im kernels, one sample per chunk
    and the whole batch in one chunk, against the einsum reference (float64)."""
    from ember.ir import opset_conv
    k = (3, 2)
    x, w, b = _r(3, 2 * g, 9, 8).astype(dtype), _r(3 * g, 2, *k).astype(dtype), _r(3 * g)
    geom = dict(kernel=k, stride=s, dilate=d, pad=p, num_group=g)
    conv, bw, deconv = (get_op(n) for n in ("convolution", "convolution_backward_weight",
                                            "deconvolution"))
    exp = _slow_conv(x, w, k, s, d, p, g) + (b.reshape(1, -1, 1, 1) if bias else 0)
    gy = _r(*exp.shape).astype(dtype)
    xg = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + [(a, a) for a in p])
    win = _slow_windows(xg, k, s, d, exp.shape[2:]).reshape((3, g, -1) + exp.shape[2:] + k)
    exp_dw = np.einsum("ngfxy,ngcxyij->gfcij", gy.reshape((3, g, -1) + exp.shape[2:]),
                       win).reshape(w.shape)
    adj = tuple(n + 2 * pi - ((o - 1) * si + di * (ki - 1) + 1)
                for n, o, si, di, ki, pi in zip(x.shape[2:], exp.shape[2:], s, d, k, p))
    exp_dx = _slow_deconv(gy, w, k, s, d, p, g, x.shape[2:])
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    for budget in (1, 1 << 19):
        monkeypatch.setattr(opset_conv._chunks, "__defaults__", (budget,))
        y = conv.compute([x, w, b.astype(dtype)] if bias else [x, w], normalize_attrs(
            conv, dict(geom, num_filter=3 * g, no_bias=not bias)))
        assert y.dtype == dtype and y.flags.c_contiguous
        np.testing.assert_allclose(y, exp, **tol)
        np.testing.assert_allclose(bw.compute([gy, x], normalize_attrs(bw, geom)), exp_dw,
                                   **tol)
        dx = deconv.compute([gy, w], normalize_attrs(deconv, dict(geom, num_filter=2 * g,
                                                                  adj=adj)))
        np.testing.assert_allclose(dx, exp_dx, **tol)


@given(st.sampled_from([1, 2]), st.integers(1, 3), st.integers(1, 3), st.integers(0, 2),
       st.sampled_from(["valid", "full"]), st.integers(0, 2**32 - 1))
def test_max_pool_backward_by_numpy_is_the_routers(nsp, kern, s, p, conv, seed):
    """``pooling_backward_numpy`` (the compiled backend's stand-in) routes as the numba
    router, bit for bit: ties, NaN (leading a window and later in it), +-Inf, windows that
    overlap (their sums in the router's order) and padding."""
    from ember.ir.opset_pool import _pool_geom, _pooling_backward, pooling_backward_numpy
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, (2, 3, *[9, 8][:nsp])).astype(np.float32)   # many ties
    flat = x.reshape(-1)
    for v in (np.nan, np.nan, np.inf, -np.inf):
        flat[rng.integers(flat.size)] = v
    at = normalize_attrs(get_op("pooling"), dict(
        kernel=(kern,) * nsp, stride=(s,) * nsp, pad=(min(p, kern - 1),) * nsp,
        pooling_convention=conv, pool_type="max"))
    g = rng.standard_normal((2, 3, *_pool_geom(at, x.shape[2:])[-1])).astype(np.float32)
    want = _pooling_backward([g, x], at)   # the router
    got = pooling_backward_numpy([g, x], at)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
