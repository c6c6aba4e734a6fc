"""ember.metric against references computed here in plain NumPy."""
import math

import numpy as np
import pytest

import ember as mx
from ember import metric

RNG = np.random.RandomState(0)


def _probs(n, k):
    p = RNG.rand(n, k).astype(np.float32) + 0.05
    return p / p.sum(axis=1, keepdims=True)


def _nd(*arrays):
    return [mx.nd.array(a, dtype=a.dtype) for a in arrays]


def test_create_names_aliases_and_config():
    for name, cls in (("acc", metric.Accuracy), ("accuracy", metric.Accuracy),
                      ("ce", metric.CrossEntropy), ("top_k_accuracy", metric.TopKAccuracy),
                      ("top_k_acc", metric.TopKAccuracy),
                      ("nll_loss", metric.NegativeLogLikelihood),
                      ("pearsonr", metric.PearsonCorrelation), ("F1", metric.F1),
                      ("mcc", metric.MCC), ("rmse", metric.RMSE), ("loss", metric.Loss),
                      ("composite", metric.CompositeEvalMetric), ("pcc", metric.PCC)):
        kwargs = {"top_k": 3} if cls is metric.TopKAccuracy else {}
        assert type(metric.create(name, **kwargs)) is cls
    acc = metric.Accuracy(axis=0)
    assert metric.create(acc) is acc
    rebuilt = metric.create(acc.get_config())
    assert type(rebuilt) is metric.Accuracy and rebuilt.axis == 0
    assert metric.create('["acc", {"axis": 0}]').axis == 0
    comp = metric.create(["acc", "mse", lambda label, pred: 0.5])
    assert isinstance(comp, metric.CompositeEvalMetric) and len(comp.metrics) == 3
    with pytest.raises(ValueError, match="not registered"):
        metric.create("no-such-metric")

    @metric.register
    class Twice(metric.EvalMetric):
        def __init__(self):
            super().__init__("twice")

        def update(self, labels, preds):
            self.sum_metric += 2
            self.num_inst += 1

    m = metric.create("twice")
    m.update(None, None)
    assert m.get() == ("twice", 2.0)
    with pytest.raises(TypeError):
        metric.register(int)


def test_accuracy_and_top_k():
    pred, label = _probs(20, 5), RNG.randint(0, 5, 20).astype(np.float32)
    m = metric.Accuracy()
    assert math.isnan(m.get()[1])
    m.update(_nd(label), _nd(pred))
    ref = (pred.argmax(1) == label).mean()
    assert m.get() == ("accuracy", pytest.approx(ref))
    m.update(_nd(label), _nd(label))  # same shape: predictions are class indices
    assert m.get()[1] == pytest.approx((ref * 20 + 20) / 40)
    m.reset_local()
    assert math.isnan(m.get()[1]) and m.get_global()[1] == pytest.approx((ref * 20 + 20) / 40)
    m.reset()
    assert math.isnan(m.get_global()[1])
    single = metric.Accuracy()
    single.update(mx.nd.array(label), mx.nd.array(pred))  # bare NDArrays
    assert single.get()[1] == pytest.approx(ref)
    with pytest.raises(ValueError, match="does not match"):
        single.update(_nd(label, label), _nd(pred))

    top = metric.TopKAccuracy(top_k=3)
    assert top.name == "top_k_accuracy_3"
    top.update(_nd(label), _nd(pred))
    ranks = (pred > pred[np.arange(20), label.astype(int)][:, None]).sum(axis=1)
    assert top.get()[1] == pytest.approx((ranks < 3).mean())
    with pytest.raises(AssertionError):
        metric.TopKAccuracy(top_k=1)


def _confusion(label, pred):
    p = pred.argmax(axis=1)
    tp = int(((p == 1) & (label == 1)).sum())
    fp = int(((p == 1) & (label == 0)).sum())
    fn = int(((p == 0) & (label == 1)).sum())
    tn = int(((p == 0) & (label == 0)).sum())
    return tp, fp, fn, tn


def _f1(tp, fp, fn, tn):
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    return 2 * prec * rec / (prec + rec) if prec + rec else 0.0


def _mcc(tp, fp, fn, tn):
    den = math.prod(t for t in (tp + fp, tp + fn, tn + fp, tn + fn) if t)
    return (tp * tn - fp * fn) / math.sqrt(den)


@pytest.mark.parametrize("cls,ref", [(metric.F1, _f1), (metric.MCC, _mcc)])
def test_f1_and_mcc(cls, ref):
    batches = [(RNG.randint(0, 2, 16).astype(np.float32), _probs(16, 2)) for _ in range(3)]
    macro, micro = cls(), cls(average="micro")
    for label, pred in batches:
        macro.update(_nd(label), _nd(pred))
        micro.update(_nd(label), _nd(pred))
    per_batch = [ref(*_confusion(lab, p)) for lab, p in batches]
    assert macro.get()[1] == pytest.approx(np.mean(per_batch))
    total = np.sum([_confusion(lab, p) for lab, p in batches], axis=0)
    assert micro.get()[1] == pytest.approx(ref(*total))
    assert micro.get_global()[1] == pytest.approx(ref(*total))
    with pytest.raises(ValueError, match="only supports binary"):
        macro.update(_nd(np.array([0, 1, 2.0])), _nd(_probs(3, 3)))


def test_regression_metrics():
    batches = [(RNG.rand(8).astype(np.float32), RNG.rand(8, 1).astype(np.float32))
               for _ in range(3)]
    refs = {metric.MAE: lambda d: np.abs(d).mean(), metric.MSE: lambda d: (d ** 2).mean(),
            metric.RMSE: lambda d: np.sqrt((d ** 2).mean())}
    for cls, ref in refs.items():
        m = cls()
        for label, pred in batches:
            m.update(_nd(label), _nd(pred))
        expect = np.mean([ref(lab[:, None] - p) for lab, p in batches])
        assert m.get()[1] == pytest.approx(expect, rel=1e-6)


def test_cross_entropy_nll_perplexity():
    pred, label = _probs(12, 4), RNG.randint(0, 4, 12).astype(np.float32)
    picked = pred[np.arange(12), label.astype(int)]
    for cls, name in ((metric.CrossEntropy, "cross-entropy"),
                      (metric.NegativeLogLikelihood, "nll-loss")):
        m = cls()
        m.update(_nd(label), _nd(pred))
        assert m.get() == (name, pytest.approx(-np.log(picked + 1e-12).mean(), rel=1e-5))
    ppl = metric.Perplexity(ignore_label=None)
    ppl.update(_nd(label), _nd(pred))
    assert ppl.get()[1] == pytest.approx(np.exp(-np.log(picked).mean()), rel=1e-5)
    ign = metric.Perplexity(ignore_label=2)
    ign.update(_nd(label), _nd(pred))
    keep = label != 2
    assert ign.get()[1] == pytest.approx(np.exp(-np.log(picked[keep]).mean()), rel=1e-5)
    seq = metric.Perplexity(None)  # (batch, time, classes) scores, (batch, time) labels
    seq.update(_nd(label.reshape(3, 4)), _nd(pred.reshape(3, 4, 4)))
    assert seq.get()[1] == pytest.approx(np.exp(-np.log(picked).mean()), rel=1e-5)


def test_pearson_and_pcc():
    batches = [(RNG.rand(10).astype(np.float32), RNG.rand(10).astype(np.float32))
               for _ in range(3)]
    macro, micro = metric.PearsonCorrelation(), metric.PearsonCorrelation(average="micro")
    for label, pred in batches:
        macro.update(_nd(label), _nd(pred))
        micro.update(_nd(label), _nd(pred))
    assert macro.get()[1] == pytest.approx(np.mean([np.corrcoef(p, lab)[0, 1]
                                                    for lab, p in batches]))
    all_l = np.concatenate([lab for lab, _ in batches]).astype(np.float64)
    all_p = np.concatenate([p for _, p in batches]).astype(np.float64)
    assert micro.get()[1] == pytest.approx(np.corrcoef(all_p, all_l)[0, 1], rel=1e-9)

    label, pred = RNG.randint(0, 4, 30), _probs(30, 4)
    pcc = metric.PCC()
    pcc.update(_nd(label.astype(np.float32)), _nd(pred))
    cm = np.zeros((4, 4))
    for i, j in zip(pred.argmax(1), label):
        cm[i, j] += 1
    n, x, y = cm.sum(), cm.sum(axis=1), cm.sum(axis=0)
    ref = (np.trace(cm) * n - x @ y) / math.sqrt((n * n - x @ x) * (n * n - y @ y))
    assert pcc.get()[1] == pytest.approx(ref)


def test_loss_composite_custom():
    losses = RNG.rand(5, 2).astype(np.float32)
    loss = metric.Loss()
    loss.update(None, mx.nd.array(losses))
    assert loss.get() == ("loss", pytest.approx(losses.mean(), rel=1e-6))

    pred, label = _probs(6, 3), RNG.randint(0, 3, 6).astype(np.float32)
    comp = metric.CompositeEvalMetric([metric.Accuracy(), "ce"])
    comp.update(_nd(label), _nd(pred))
    names, values = comp.get()
    assert names == ["accuracy", "cross-entropy"]
    assert values[0] == pytest.approx((pred.argmax(1) == label).mean())
    assert comp.get_metric(1).name == "cross-entropy"
    assert dict(comp.get_name_value())["accuracy"] == values[0]
    comp.update_dict({"lab": mx.nd.array(label)}, {"out": mx.nd.array(pred)})
    assert comp.get_metric(0).num_inst == 12
    with pytest.raises(ValueError, match="out of range"):
        comp.get_metric(5)

    def mean_abs(label, pred):
        return np.abs(label - pred).sum(), label.size

    custom = metric.create(mean_abs)
    assert custom.name == "mean_abs"
    a, b = RNG.rand(4).astype(np.float32), RNG.rand(4).astype(np.float32)
    custom.update(_nd(a), _nd(b))
    assert custom.get()[1] == pytest.approx(np.abs(a - b).mean(), rel=1e-6)
    wrapped = metric.np(lambda label, pred: float((label == pred).mean()))
    assert wrapped.name == "custom(<lambda>)"
    wrapped.update(_nd(a), _nd(a))
    wrapped.update(_nd(a), _nd(b))
    assert wrapped.get()[1] == 0.5
    with pytest.raises(NotImplementedError):
        custom.get_config()
    named = metric.EvalMetric("x", output_names=["out"], label_names=["lab"])
    assert named.get_name_value()[0][0] == "x" and "EvalMetric" in str(named)
