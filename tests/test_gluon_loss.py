"""ember.gluon.loss: values against NumPy references, gradients against finite differences,
and the same hybrid_forward traced with F = ember.sym."""
import numpy as np
import pytest
from opcheck import check_grad

import ember as mx
from ember import symbol as sym
from ember.base import MXNetError
from ember.gluon import HybridBlock
from ember.gluon import loss as gloss
from ember.ir.graph import topo_nodes

RNG = np.random.default_rng(7)


def rand(*shape, low=-2.0, high=2.0):
    return RNG.uniform(low, high, size=shape)


def nd(a, dtype="float64"):
    return mx.nd.array(np.asarray(a), dtype=dtype)


def per_sample_mean(x, batch_axis=0):
    axes = tuple(i for i in range(x.ndim) if i != batch_axis)
    return x.mean(axis=axes) if axes else x


def log_softmax(x, axis=-1):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def close(out, expected, rtol=1e-6, atol=1e-8):
    expected = np.asarray(expected, dtype=np.float64)
    assert out.shape == expected.shape, f"shape {out.shape} != {expected.shape}"
    np.testing.assert_allclose(out.asnumpy().astype(np.float64), expected, rtol=rtol, atol=atol)


# ---- regression losses ---------------------------------------------------------------------
def test_l2_loss():
    p, lab, sw = rand(4, 3, 2), rand(4, 6), rand(4, 1, 1, low=0, high=1)
    ref = 0.5 * (lab.reshape(4, 3, 2) - p) ** 2
    close(gloss.L2Loss()(nd(p), nd(lab)), per_sample_mean(ref))
    close(gloss.L2Loss(weight=3.0)(nd(p), nd(lab), nd(sw)), per_sample_mean(3 * ref * sw))
    close(gloss.L2Loss(batch_axis=1)(nd(p), nd(lab)), per_sample_mean(ref, 1))


def test_one_dimensional_pred_keeps_batch():
    p, lab = rand(5), rand(5)
    close(gloss.L2Loss()(nd(p), nd(lab)), 0.5 * (lab - p) ** 2)
    close(gloss.L1Loss()(nd(p), nd(lab)), np.abs(lab - p))


def test_l1_loss():
    p, lab, sw = rand(5, 4), rand(5, 4), rand(5, 1)
    ref = np.abs(lab - p)
    close(gloss.L1Loss()(nd(p), nd(lab)), ref.mean(1))
    close(gloss.L1Loss(weight=0.5)(nd(p), nd(lab), nd(sw)), (0.5 * ref * sw).mean(1))


@pytest.mark.parametrize("rho", [1, 0.5])
def test_huber_loss(rho):
    p, lab = rand(6, 5), rand(6, 5)
    d = np.abs(lab - p)
    ref = np.where(d > rho, d - 0.5 * rho, 0.5 / rho * d ** 2)
    close(gloss.HuberLoss(rho=rho)(nd(p), nd(lab)), ref.mean(1))


def test_hinge_losses():
    p, lab = rand(6, 4), np.sign(rand(6, 4))
    ref = np.maximum(0, 1.5 - p * lab)
    close(gloss.HingeLoss(margin=1.5)(nd(p), nd(lab)), ref.mean(1))
    close(gloss.SquaredHingeLoss(margin=1.5)(nd(p), nd(lab)), (ref ** 2).mean(1))
    sw = rand(6, 1, low=0, high=1)
    close(gloss.HingeLoss(weight=2.0)(nd(p), nd(lab), nd(sw)),
          (2 * np.maximum(0, 1 - p * lab) * sw).mean(1))


@pytest.mark.parametrize("fmt", ["signed", "binary"])
def test_logistic_loss(fmt):
    p = rand(5, 3)
    lab = (rand(5, 3) > 0).astype(np.float64)
    given = 2 * lab - 1 if fmt == "signed" else lab
    ref = np.log1p(np.exp(-p * (2 * lab - 1)))
    close(gloss.LogisticLoss(label_format=fmt)(nd(p), nd(given)), ref.mean(1))
    with pytest.raises(ValueError, match="label_format"):
        gloss.LogisticLoss(label_format="ternary")


# ---- classification losses -----------------------------------------------------------------
def test_sigmoid_bce_from_logits():
    p, lab = rand(4, 5, low=-6, high=6), (rand(4, 5) > 0).astype(np.float64)
    s = sigmoid(p)
    ref = -(lab * np.log(s) + (1 - lab) * np.log(1 - s))
    close(gloss.SigmoidBinaryCrossEntropyLoss()(nd(p), nd(lab)), ref.mean(1))
    pw = rand(1, 5, low=0.5, high=3)
    ref_pw = -(pw * lab * np.log(s) + (1 - lab) * np.log(1 - s))
    sw = rand(4, 1, low=0, high=1)
    close(gloss.SigmoidBCELoss(weight=2.0)(nd(p), nd(lab), nd(sw), nd(pw)),
          (2 * ref_pw * sw).mean(1))


def test_sigmoid_bce_from_sigmoid():
    prob, lab = rand(4, 3, low=0.05, high=0.95), rand(4, 3, low=0, high=1)
    eps = 1e-12
    ref = -(np.log(prob + eps) * lab + np.log(1 - prob + eps) * (1 - lab))
    close(gloss.SigmoidBCELoss(from_sigmoid=True)(nd(prob), nd(lab)), ref.mean(1))
    pw = rand(1, 3, low=0.5, high=3)
    ref_pw = -(np.log(prob + eps) * lab * pw + np.log(1 - prob + eps) * (1 - lab))
    close(gloss.SigmoidBCELoss(from_sigmoid=True)(nd(prob), nd(lab), None, nd(pw)),
          ref_pw.mean(1))


def test_softmax_ce_sparse_dense_logits():
    p = rand(5, 4)
    lab = np.array([0, 3, 1, 1, 2])
    lsm = log_softmax(p)
    ref = -lsm[np.arange(5), lab]
    close(gloss.SoftmaxCrossEntropyLoss()(nd(p), nd(lab)), ref)
    close(gloss.SoftmaxCELoss()(nd(p, "float32"), nd(lab, "float32")), ref, rtol=1e-5)
    close(gloss.SoftmaxCELoss(from_logits=True)(nd(lsm), nd(lab)), ref)
    close(gloss.SoftmaxCELoss()(nd(p), nd(lab[:, None])), ref)  # (N, 1) labels work too
    close(gloss.SoftmaxCELoss()(nd(p), nd(lab, "int32")), ref)
    dist = np.exp(log_softmax(rand(5, 4)))
    close(gloss.SoftmaxCELoss(sparse_label=False)(nd(p), nd(dist)), -(lsm * dist).sum(1))
    sw = rand(5, 1, low=0, high=1)
    close(gloss.SoftmaxCELoss(weight=0.5)(nd(p), nd(lab), nd(sw)), 0.5 * ref * sw[:, 0])


def test_softmax_ce_other_axis():
    p = rand(2, 3, 4)  # classes on axis 1
    lab = np.array([[0, 2, 1, 1], [2, 2, 0, 1]])
    lsm = log_softmax(p, axis=1)
    picked = np.take_along_axis(lsm, lab[:, None, :], axis=1)
    close(gloss.SoftmaxCELoss(axis=1)(nd(p), nd(lab)), -picked.mean(axis=(1, 2)))


def test_kldiv_loss():
    logp = log_softmax(rand(3, 5))
    lab = np.exp(log_softmax(rand(3, 5)))
    ref = lab * (np.log(lab + 1e-12) - logp)
    close(gloss.KLDivLoss()(nd(logp), nd(lab)), ref.sum(1))
    raw = rand(3, 5)
    ref2 = lab * (np.log(lab + 1e-12) - log_softmax(raw))
    close(gloss.KLDivLoss(from_logits=False, weight=2.0)(nd(raw), nd(lab)), 2 * ref2.sum(1))


# ---- metric losses -------------------------------------------------------------------------
def test_triplet_loss():
    p, pos, neg = rand(4, 6), rand(4, 6), rand(4, 6)
    ref = np.maximum(((pos - p) ** 2 - (neg - p) ** 2).sum(1) + 0.5, 0)
    close(gloss.TripletLoss(margin=0.5)(nd(p), nd(pos), nd(neg)), ref)
    close(gloss.TripletLoss(weight=3.0)(nd(p), nd(pos), nd(neg)),
          3 * np.maximum(((pos - p) ** 2 - (neg - p) ** 2).sum(1) + 1, 0))


@pytest.mark.parametrize("margin", [0, 0.2])
def test_cosine_embedding_loss(margin):
    a, b = rand(6, 5), rand(6, 5)
    b[0] = 3 * a[0]  # perfectly similar pair
    lab = np.array([1, -1, 1, -1, -1, 1])
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1),
                                      1e-12)
    ref = np.where(lab == 1, 1 - cos, np.maximum(0, cos - margin))[:, None]
    out = gloss.CosineEmbeddingLoss(margin=margin)(nd(a), nd(b), nd(lab))
    close(out, ref)
    assert abs(out.asnumpy()[0, 0]) < 1e-12


def test_poisson_nll_loss():
    p, t = rand(3, 4, low=0.1, high=3), np.array([[0, 1, 2, 5]] * 3, dtype=np.float64)
    close(gloss.PoissonNLLLoss()(nd(p), nd(t)), [np.mean(np.exp(p) - t * p)])
    close(gloss.PoissonNLLLoss(from_logits=False)(nd(p), nd(t)),
          [np.mean(p - t * np.log(p + 1e-8))])
    tf = rand(2, 3, low=1, high=5)
    pf = rand(2, 3, low=1, high=5)
    full = pf - tf * np.log(pf + 1e-8) + (tf * np.log(tf) - tf + 0.5 * np.log(2 * tf * np.pi))
    close(gloss.PoissonNLLLoss(from_logits=False, compute_full=True)(nd(pf), nd(tf)),
          [full.mean()])
    # targets <= 1 get no Stirling term (and no NaN from 0 * log 0)
    out = gloss.PoissonNLLLoss(compute_full=True)(nd(p), nd(t))
    safe = np.maximum(t, 1)
    stir = np.where(t > 1, safe * np.log(safe) - safe + 0.5 * np.log(2 * safe * np.pi), 0)
    close(out, [np.mean(np.exp(p) - t * p + stir)])


def test_sdml_loss():
    x1, x2 = rand(4, 3), rand(4, 3)
    d = ((x1[:, None, :] - x2[None, :, :]) ** 2).sum(2)
    logp = log_softmax(-d, axis=1)
    s = 0.3
    lab = np.eye(4) * (1 - s) + (1 - np.eye(4)) * s / 3
    ref = (lab * (np.log(lab + 1e-12) - logp)).sum(1)
    close(gloss.SDMLLoss()(nd(x1), nd(x2)), ref, rtol=1e-5)
    with pytest.raises(MXNetError):
        gloss.SDMLLoss()(nd(x1), nd(rand(3, 3)))


# ---- gradients -----------------------------------------------------------------------------
GRAD_CASES = [
    ("l2", lambda p, lab: gloss.L2Loss()(p, lab), (3, 4), lambda: rand(3, 4)),
    ("l1", lambda p, lab: gloss.L1Loss(weight=2.0)(p, lab), (3, 4), lambda: rand(3, 4)),
    ("huber", lambda p, lab: gloss.HuberLoss(rho=0.7)(p, lab), (3, 4), lambda: rand(3, 4)),
    ("hinge", lambda p, lab: gloss.HingeLoss()(p, lab), (3, 4),
     lambda: np.sign(rand(3, 4))),
    ("sqhinge", lambda p, lab: gloss.SquaredHingeLoss()(p, lab), (3, 4),
     lambda: np.sign(rand(3, 4))),
    ("logistic", lambda p, lab: gloss.LogisticLoss()(p, lab), (3, 4),
     lambda: np.sign(rand(3, 4))),
    ("bce", lambda p, lab: gloss.SigmoidBCELoss()(p, lab), (3, 4),
     lambda: rand(3, 4, low=0, high=1)),
    ("bce_sigmoid", lambda p, lab: gloss.SigmoidBCELoss(from_sigmoid=True)(
        mx.nd.sigmoid(p), lab), (3, 4), lambda: rand(3, 4, low=0, high=1)),
    ("sce_sparse", lambda p, lab: gloss.SoftmaxCELoss()(p, lab), (3, 5),
     lambda: np.array([4.0, 0.0, 2.0])),
    ("sce_dense", lambda p, lab: gloss.SoftmaxCELoss(sparse_label=False)(p, lab), (3, 5),
     lambda: np.exp(log_softmax(rand(3, 5)))),
    ("sce_axis1", lambda p, lab: gloss.SoftmaxCELoss(axis=1)(p, lab), (2, 3, 2),
     lambda: np.array([[0.0, 2.0], [1.0, 1.0]])),
    ("kldiv", lambda p, lab: gloss.KLDivLoss(from_logits=False)(p, lab), (3, 4),
     lambda: np.exp(log_softmax(rand(3, 4)))),
    ("poisson", lambda p, lab: gloss.PoissonNLLLoss(compute_full=True)(p, lab), (3, 4),
     lambda: np.floor(rand(3, 4, low=0, high=5))),
    ("poisson_raw", lambda p, lab: gloss.PoissonNLLLoss(from_logits=False)(mx.nd.exp(p), lab),
     (3, 4), lambda: np.floor(rand(3, 4, low=0, high=5))),
]


@pytest.mark.parametrize("name,fn,shape,label", GRAD_CASES, ids=[c[0] for c in GRAD_CASES])
def test_gradient_wrt_pred(name, fn, shape, label):
    check_grad(fn, [rand(*shape), label()], wrt=[0])


def test_gradient_with_weights():
    sw = rand(3, 1, low=0.1, high=1)
    check_grad(lambda p, lab, w: gloss.SigmoidBCELoss(weight=1.5)(p, lab, None, w),
               [rand(3, 4), rand(3, 4, low=0, high=1), rand(1, 4, low=0.5, high=2)], wrt=[0])
    check_grad(lambda p, lab, s: gloss.L2Loss(weight=0.3)(p, lab, s),
               [rand(3, 4), rand(3, 4), sw], wrt=[0])


def test_gradient_multi_input_losses():
    check_grad(lambda p, a, b: gloss.TripletLoss(margin=5)(p, a, b),
               [rand(3, 4), rand(3, 4), rand(3, 4)])
    lab = np.array([1.0, -1.0, 1.0, -1.0])
    check_grad(lambda a, b, lab: gloss.CosineEmbeddingLoss(margin=-0.9)(a, b, lab),
               [rand(4, 3), rand(4, 3), lab], wrt=[0, 1])
    check_grad(lambda a, b: gloss.SDMLLoss()(a, b), [rand(3, 2), rand(3, 2)])


# ---- tracing with F = ember.sym ------------------------------------------------------------
def run_traced(block, arrays):
    """Trace ``block`` on Symbols and evaluate the graph with the registry's kernels."""
    vars_ = [sym.var(f"in{i}", shape=a.shape, dtype=a.dtype) for i, a in enumerate(arrays)]
    out = block(*vars_)
    env = {v._value: a for v, a in zip(vars_, arrays)}
    for node in topo_nodes([out._value]):
        res = node.op.compute([env[v] for v in node.inputs], dict(node.attrs))
        res = list(res) if isinstance(res, tuple | list) else [res]
        env.update({v: np.asarray(r) for v, r in zip(node.outputs, res)})
    assert tuple(out.shape) == env[out._value].shape
    return env[out._value]


TRACE_CASES = [
    (gloss.L2Loss(), [rand(3, 4), rand(3, 4), rand(3, 1)]),
    (gloss.L1Loss(), [rand(3, 4), rand(12)]),
    (gloss.SigmoidBCELoss(), [rand(3, 4), rand(3, 4, low=0, high=1)]),
    (gloss.SoftmaxCELoss(), [rand(3, 4), np.array([0.0, 3.0, 1.0])]),
    (gloss.SoftmaxCELoss(sparse_label=False), [rand(3, 4), rand(3, 4, low=0, high=1)]),
    (gloss.KLDivLoss(from_logits=False), [rand(3, 4), rand(3, 4, low=0, high=1)]),
    (gloss.HuberLoss(), [rand(3, 4), rand(3, 4)]),
    (gloss.LogisticLoss(), [rand(3, 4), np.sign(rand(3, 4))]),
    (gloss.TripletLoss(), [rand(3, 4), rand(3, 4), rand(3, 4)]),
    (gloss.PoissonNLLLoss(compute_full=True), [rand(3, 4), rand(3, 4, low=0, high=4)]),
    (gloss.CosineEmbeddingLoss(), [rand(3, 4), rand(3, 4), np.array([1.0, -1.0, 1.0])]),
    (gloss.SDMLLoss(), [rand(3, 4), rand(3, 4)]),
    (gloss.SigmoidBCELoss(), [rand(3, 4), rand(3, 4, low=0, high=1), rand(3, 1), rand(1, 4)]),
    (gloss.SoftmaxCELoss(axis=1), [rand(2, 3, 2), np.array([[0.0, 2.0], [1.0, 1.0]])]),
    (gloss.L2Loss(), [rand(5), rand(5)]),
]


@pytest.mark.parametrize("block,arrays", TRACE_CASES, ids=[type(c[0]).__name__ + str(i)
                                                           for i, c in enumerate(TRACE_CASES)])
def test_traced_matches_eager(block, arrays):
    arrays = [a.astype(np.float32) for a in arrays]
    eager = block(*[nd(a, "float32") for a in arrays]).asnumpy()
    np.testing.assert_allclose(run_traced(block, arrays), eager, rtol=1e-5, atol=1e-6)


# ---- misc ----------------------------------------------------------------------------------
def test_repr_and_bad_weight():
    assert repr(gloss.L2Loss()) == "L2Loss(batch_axis=0, w=1.0)"
    assert repr(gloss.L1Loss(batch_axis=1)) == "L1Loss(batch_axis=1, w=None)"
    with pytest.raises(MXNetError, match="weight"):
        gloss.L1Loss(weight="heavy")(nd(rand(2, 2)), nd(rand(2, 2)))
    assert gloss.SigmoidBCELoss is gloss.SigmoidBinaryCrossEntropyLoss
    assert gloss.SoftmaxCELoss is gloss.SoftmaxCrossEntropyLoss
    assert isinstance(gloss.L2Loss(), HybridBlock)


def test_loss_in_training_loop():
    x = mx.nd.array(rand(4, 3), dtype="float32")
    lab = mx.nd.array([0, 1, 2, 1], dtype="float32")
    x.attach_grad()
    with mx.autograd.record():
        out = gloss.SoftmaxCELoss()(x, lab)
    out.backward()
    p = np.exp(log_softmax(x.asnumpy().astype(np.float64)))
    expected = p - np.eye(3)[[0, 1, 2, 1]]
    np.testing.assert_allclose(x.grad.asnumpy(), expected, rtol=1e-5, atol=1e-6)


# ---- CTCLoss -------------------------------------------------------------------------------
def ctc_op(pred_tnc, label_nt, pred_lengths=None, label_lengths=None):
    """The ``CTCLoss`` op on TNC data with the blank last: what gluon's CTCLoss must give."""
    lengths = [nd(x) for x in (pred_lengths, label_lengths) if x is not None]
    return mx.nd.CTCLoss(nd(pred_tnc), nd(label_nt), *lengths, blank_label="last",
                         use_data_lengths=pred_lengths is not None,
                         use_label_lengths=label_lengths is not None).asnumpy()


@pytest.mark.parametrize("layout,label_layout", [("NTC", "NT"), ("TNC", "NT"), ("TNC", "TN"),
                                                 ("NTC", "TN")])
def test_ctc_loss_layouts_and_lengths(layout, label_layout):
    tnc = rand(7, 3, 5)
    label = np.array([[0, 1, 3, -1], [2, 2, -1, -1], [3, 0, 1, 1]], dtype=np.float64)
    plen, llen = np.array([7, 5, 6.0]), np.array([3, 1, 4.0])
    pred = tnc if layout == "TNC" else tnc.transpose(1, 0, 2)
    lab = label if label_layout == "NT" else label.T
    loss = gloss.CTCLoss(layout=layout, label_layout=label_layout)
    close(loss(nd(pred), nd(lab)), ctc_op(tnc, label))
    close(loss(nd(pred), nd(lab), nd(plen)), ctc_op(tnc, label, plen))
    close(loss(nd(pred), nd(lab), None, nd(llen)), ctc_op(tnc, label, None, llen))
    close(loss(nd(pred), nd(lab), nd(plen), nd(llen)), ctc_op(tnc, label, plen, llen))
    assert not np.allclose(ctc_op(tnc, label, plen), ctc_op(tnc, label))


def test_ctc_loss_weights_and_mxnet_values():
    pred, label, sw = rand(2, 6, 4), np.array([[1, 0, -1], [2, 1, 1]]), rand(2, low=0, high=1)
    ref = ctc_op(pred.transpose(1, 0, 2), label)
    close(gloss.CTCLoss(weight=2.5)(nd(pred), nd(label), None, None, nd(sw)), 2.5 * ref * sw)
    out = gloss.CTCLoss()(mx.nd.ones((2, 20, 4)), mx.nd.array([[1, 0, -1, -1], [2, 1, 1, -1]]))
    close(out, [18.82820702, 16.50581741], rtol=1e-6)
    assert out.dtype == np.float32 and out.shape == (2,)
    with pytest.raises(MXNetError, match="layout"):
        gloss.CTCLoss(layout="NCT")
    with pytest.raises(MXNetError, match="layout"):
        gloss.CTCLoss(label_layout="NC")


def test_ctc_loss_gradient_and_trace():
    label, plen = np.array([[0.0, 1.0], [2.0, -1.0]]), np.array([4.0, 3.0])
    check_grad(lambda p, lab, n: gloss.CTCLoss()(p, lab, n), [rand(2, 4, 3), label, plen],
               wrt=[0])
    check_grad(lambda p, lab: gloss.CTCLoss(layout="TNC", weight=0.5)(p, lab),
               [rand(4, 2, 3), label], wrt=[0])
    arrays = [rand(2, 5, 4).astype(np.float32), label.astype(np.float32),
              plen.astype(np.float32)]
    eager = gloss.CTCLoss()(*[nd(a, "float32") for a in arrays]).asnumpy()
    np.testing.assert_allclose(run_traced(gloss.CTCLoss(), arrays), eager, rtol=1e-6)
