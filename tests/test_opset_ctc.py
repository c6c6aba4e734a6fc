"""Tests of the CTC ops: the loss against brute-force enumeration of alignments (and PyTorch
when it is installed), both blank conventions, length inputs, MXNet's hidden gradient output
and ``ctc_loss_backward`` against finite differences, and the shape rule."""
import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opcheck import check_forward, check_grad, check_infer

import ember as mx
from ember.ir import TensorType, get_op
from ember.ir.ops import normalize_attrs

U = TensorType
rng = np.random.default_rng(0)


def _infer(name, types, **attrs):
    op = get_op(name)
    return op.infer(types, normalize_attrs(op, attrs))


def _collapse(path, blank):
    """Graves' map B: merge repeated symbols, then drop blanks."""
    out = [k for i, k in enumerate(path) if i == 0 or k != path[i - 1]]
    return tuple(k for k in out if k != blank)


def brute_nll(x, target, blank):
    """-log sum over every alignment of ``x`` (T, C) that collapses to ``target``; 0 when
    there is none (MXNet's convention for infeasible sequences)."""
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    total = sum(np.prod(p[np.arange(len(path)), path])
                for path in itertools.product(range(x.shape[1]), repeat=x.shape[0])
                if _collapse(path, blank) == tuple(target))
    return -np.log(total) if total > 0 else 0.0


@st.composite
def ctc_case(draw):
    """Tiny random cases: T <= 4, alphabet <= 3 (blank included), label length <= 2."""
    t, c, n = draw(st.integers(1, 4)), draw(st.integers(2, 3)), draw(st.integers(1, 2))
    first = draw(st.booleans())
    symbols = list(range(1, c)) if first else list(range(c - 1))
    width = draw(st.integers(1, min(2, t)))
    targets = [draw(st.lists(st.sampled_from(symbols), max_size=width)) for _ in range(n)]
    seed = draw(st.integers(0, 2 ** 16))
    data = np.random.default_rng(seed).standard_normal((t, n, c)).astype(np.float32)
    return data, targets, width, first


def _padded(targets, width, pad):
    return np.array([tg + [pad] * (width - len(tg)) for tg in targets], dtype=np.float32)


@given(ctc_case())
def test_loss_matches_enumeration_padded_labels(case):
    data, targets, width, first = case
    blank = 0 if first else data.shape[2] - 1
    label = _padded(targets, width, 0 if first else -1)
    exp = [brute_nll(data[:, i].astype(np.float64), tg, blank) for i, tg in enumerate(targets)]
    check_forward("CTCLoss", [data, label], np.array(exp), rtol=1e-5, atol=1e-5,
                  blank_label="first" if first else "last")
    check_infer("ctc_loss", [data, label], blank_label="first" if first else "last")


@given(ctc_case(), st.data())
def test_loss_with_data_and_label_lengths(case, draw):
    data, targets, width, first = case
    t, n, c = data.shape
    blank = 0 if first else c - 1
    dlen = np.array([draw.draw(st.integers(0, t)) for _ in range(n)], dtype=np.float32)
    llen = np.array([len(tg) for tg in targets], dtype=np.float32)
    # garbage after each label's length: ignored when label_lengths is given
    label = _padded(targets, width, 1 if first else 0)
    exp = [brute_nll(data[:int(dlen[i]), i].astype(np.float64), tg, blank) if dlen[i] else 0.0
           for i, tg in enumerate(targets)]
    at = {"use_data_lengths": True, "use_label_lengths": True,
          "blank_label": "first" if first else "last"}
    check_forward("ctc_loss", [data, label, dlen, llen], np.array(exp), rtol=1e-5, atol=1e-5,
                  **at)
    check_infer("ctc_loss", [data, label, dlen, llen], **at)
    # only label_lengths: it is then the third input
    exp = [brute_nll(data[:, i].astype(np.float64), tg, blank) for i, tg in enumerate(targets)]
    check_forward("ctc_loss", [data, label, llen], np.array(exp), rtol=1e-5, atol=1e-5,
                  use_label_lengths=True, blank_label=at["blank_label"])


def test_mxnet_reference_values():
    """MXNet 1.9.1 test_loss.test_ctc_loss's numbers, on the op, in both conventions."""
    data = np.ones((20, 2, 4), dtype=np.float32)
    exp = np.array([18.82820702, 16.50581741])
    check_forward("CTCLoss", [data, np.array([[1, 0, -1, -1], [2, 1, 1, -1]], np.float32)],
                  exp, blank_label="last")
    check_forward("_contrib_CTCLoss", [data, np.array([[2, 1, 0, 0], [3, 2, 2, 0]],
                                                      np.float32)], exp)
    out = mx.nd._contrib_ctc_loss(mx.nd.array(data), mx.nd.array([[2, 1, 0, 0], [3, 2, 2, 0]]))
    assert out.dtype == np.float32 and out.shape == (2,)


def test_infeasible_sequence_gives_zero_loss_and_gradient():
    data = rng.standard_normal((3, 2, 3)).astype(np.float32)
    label = np.array([[1, 1], [1, 2]], np.float32)  # "1 1" needs 3 steps, "1 2" needs 2
    dlen = np.array([2, 2], np.float32)
    loss, grad = get_op("ctc_loss").compute([data, label, dlen],
                                            normalize_attrs(get_op("ctc_loss"),
                                                            {"use_data_lengths": True}))
    assert loss[0] == 0 and np.all(grad[:, 0] == 0)
    assert loss[1] > 0 and np.all(grad[2, 1] == 0) and np.any(grad[:2, 1] != 0)


def test_bad_inputs_raise():
    data, label = np.zeros((3, 2, 4), np.float32), np.zeros((2, 2), np.float32)
    with pytest.raises(mx.base.MXNetError, match="ctc_loss"):
        mx.nd.CTCLoss(mx.nd.array(data), mx.nd.array(np.zeros((3, 2))))
    with pytest.raises(mx.base.MXNetError, match="sequence length"):
        mx.nd.CTCLoss(mx.nd.array(data), mx.nd.array(np.zeros((2, 4))))
    with pytest.raises(mx.base.MXNetError, match="label values"):
        mx.nd.CTCLoss(mx.nd.array(data), mx.nd.array([[1, 4], [1, 1]]))
    with pytest.raises(mx.base.MXNetError, match="data_lengths"):
        mx.nd.CTCLoss(mx.nd.array(data), mx.nd.array(label), mx.nd.array([4, 1]),
                      use_data_lengths=True)
    with pytest.raises(mx.base.MXNetError, match="3 inputs"):
        mx.nd.CTCLoss(mx.nd.array(data), mx.nd.array(label), use_label_lengths=True)


# ---- PyTorch as a second oracle on larger cases ----------------------------------------------
@pytest.mark.parametrize("blank_label", ["first", "last"])
def test_against_torch(blank_label):
    torch = pytest.importorskip("torch")
    t, n, c, width = 12, 4, 6, 5
    blank = 0 if blank_label == "first" else c - 1
    data = rng.standard_normal((t, n, c))
    llen = np.array([5, 3, 0, 4])
    dlen = np.array([12, 9, 4, 10])
    symbols = np.arange(1, c) if blank_label == "first" else np.arange(c - 1)
    label = rng.choice(symbols, size=(n, width)).astype(np.float64)
    label[1, :2] = label[1, 2]  # a repeat
    x = torch.tensor(data, requires_grad=True)
    ref = torch.nn.functional.ctc_loss(x.log_softmax(2), torch.tensor(label).long(),
                                       torch.tensor(dlen), torch.tensor(llen), blank=blank,
                                       reduction="none")
    ref.sum().backward()
    at = {"use_data_lengths": True, "use_label_lengths": True, "blank_label": blank_label}
    ins = [data, label, dlen.astype(np.float64), llen.astype(np.float64)]
    check_forward("ctc_loss", ins, ref.detach().numpy(), rtol=1e-10, atol=1e-10, **at)
    loss, grad = get_op("ctc_loss").compute(ins, normalize_attrs(get_op("ctc_loss"), at))
    np.testing.assert_allclose(grad, x.grad.numpy(), rtol=1e-9, atol=1e-10)


# ---- gradients -----------------------------------------------------------------------------
@pytest.mark.parametrize("blank_label", ["first", "last"])
def test_gradient_finite_differences(blank_label):
    pad = 0 if blank_label == "first" else -1
    a, b = (1, 2) if blank_label == "first" else (0, 1)
    label = np.array([[a, a], [b, pad], [a, b]], np.float64)
    dlen = np.array([4, 2, 3], np.float64)
    check_grad(lambda x, lab: mx.nd.CTCLoss(x, lab, blank_label=blank_label),
               [rng.standard_normal((4, 3, 3)), label], wrt=[0])
    check_grad(lambda x, lab, d: mx.nd.CTCLoss(x, lab, d, use_data_lengths=True,
                                               blank_label=blank_label),
               [rng.standard_normal((4, 3, 3)), label, dlen], wrt=[0])


def test_gradient_is_zero_beyond_data_lengths():
    x = mx.nd.array(rng.standard_normal((5, 2, 3)), dtype="float64")
    x.attach_grad()
    with mx.autograd.record():
        out = mx.nd.CTCLoss(x, mx.nd.array([[1, 2], [2, 0]]), mx.nd.array([3, 5]),
                            use_data_lengths=True)
    out.backward()
    g = x.grad.asnumpy()
    assert np.all(g[3:, 0] == 0) and np.all(g[:3, 0] != 0) and np.all(g[:, 1] != 0)
    # softmax minus posteriors: each step's gradient sums to zero over the alphabet
    np.testing.assert_allclose(g.sum(axis=2), 0, atol=1e-12)


@given(ctc_case())
def test_backward_helper_matches_hidden_output(case):
    data, targets, width, first = case
    label = _padded(targets, width, 0 if first else -1)
    at = {"blank_label": "first" if first else "last"}
    head = rng.standard_normal(data.shape[1]).astype(np.float32)
    _, hidden = get_op("ctc_loss").compute([data, label],
                                           normalize_attrs(get_op("ctc_loss"), at))
    check_forward("ctc_loss_backward", [head, data, label], hidden * head[None, :, None],
                  rtol=1e-5, atol=1e-6, **at)
    check_infer("ctc_loss_backward", [head, data, label], **at)


def test_backward_helper_finite_differences():
    data, label = rng.standard_normal((4, 2, 3)), np.array([[1, 2], [1, 0]], np.float64)
    llen = np.array([2, 1], np.float64)
    head = rng.standard_normal(2)
    at = {"use_label_lengths": True}
    grad = get_op("ctc_loss_backward").compute(
        [head, data, label, llen], normalize_attrs(get_op("ctc_loss_backward"), at))
    num, eps = np.zeros_like(data), 1e-6
    for i in np.ndindex(*data.shape):
        d = np.zeros_like(data)
        d[i] = eps
        plus = mx.nd.CTCLoss(*[mx.nd.array(a, dtype="float64") for a in
                               (data + d, label, llen)], **at).asnumpy()
        minus = mx.nd.CTCLoss(*[mx.nd.array(a, dtype="float64") for a in
                                (data - d, label, llen)], **at).asnumpy()
        num[i] = np.sum((plus - minus) * head) / (2 * eps)
    np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-7)


# ---- shape rule ----------------------------------------------------------------------------
def test_infer_with_unknown_dims():
    outs, ref = _infer("ctc_loss", [U((None, None, 5)), U((8, None))])
    assert [o.shape for o in outs] == [(8,), (None, 8, 5)]
    assert ref[0].shape == (None, 8, 5) and ref[1].shape == (8, None)
    outs, ref = _infer("CTCLoss", [U(None), U(None), U((None,), "int32")],
                       use_label_lengths=True)
    assert outs[0].shape == (None,) and outs[1].shape == (None, None, None)
    outs, ref = _infer("CTCLoss", [U((10, None, 4), "float64"), U((None, 3)), U((None,)),
                                   U((6,))], use_data_lengths=True, use_label_lengths=True)
    assert outs[0] == U((6,), "float64") and outs[1] == U((10, 6, 4), "float64")
    assert [r.shape for r in ref] == [(10, 6, 4), (6, 3), (6,), (6,)]
    outs, ref = _infer("ctc_loss_backward", [U((6,)), U((10, None, 4)), U((None, 3))])
    assert outs[0].shape == (10, 6, 4) and ref[2].shape == (6, 3)


def test_infer_errors():
    err = mx.base.MXNetError
    with pytest.raises(err, match="batch|disagree"):
        _infer("ctc_loss", [U((10, 4, 5)), U((3, 2))])
    with pytest.raises(err, match="data must be"):
        _infer("ctc_loss", [U((10, 5)), U((4, 2))])
    with pytest.raises(err, match="label must be"):
        _infer("ctc_loss", [U((10, 4, 5)), U((4,))])
    with pytest.raises(err, match="cannot exceed"):
        _infer("ctc_loss", [U((3, 4, 5)), U((4, 4))])
    with pytest.raises(err, match="vectors"):
        _infer("ctc_loss", [U((10, 4, 5)), U((4, 2)), U((4, 1))], use_data_lengths=True)
    with pytest.raises(err, match="blank_label"):
        _infer("ctc_loss", [U((10, 4, 5)), U((4, 2))], blank_label="middle")


def test_registry_names():
    op = get_op("ctc_loss")
    assert op.mxnet_name == "CTCLoss" and op.n_outputs({}) == 2 and op.n_visible({}) == 1
    for name in ("CTCLoss", "ctc_loss", "_contrib_CTCLoss", "_contrib_ctc_loss"):
        assert get_op(name) is op
