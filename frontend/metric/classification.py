"""Classification metrics: accuracy, top-k accuracy, F1, MCC and PCC."""
from __future__ import annotations

import math

import numpy

from .base import EvalMetric, _np, alias, check_label_shapes, register


@register
@alias("acc")
class Accuracy(EvalMetric):
    """Fraction of predictions equal to the label; scores are reduced by argmax on ``axis``
    when their shape differs from the label's."""

    def __init__(self, axis=1, name="accuracy", output_names=None, label_names=None):
        super().__init__(name, axis=axis, output_names=output_names, label_names=label_names,
                         has_global_stats=True)
        self.axis = axis

    def update(self, labels, preds):
        labels, preds = check_label_shapes(labels, preds, True)
        for label, pred in zip(labels, preds):
            pred, label = _np(pred), _np(label)
            if pred.shape != label.shape:
                pred = numpy.argmax(pred, axis=self.axis)
            pred = pred.astype("int32").ravel()
            label = label.astype("int32").ravel()
            check_label_shapes(label, pred)
            self._add(int((pred == label).sum()), len(pred))


@register
@alias("top_k_accuracy", "top_k_acc")
class TopKAccuracy(EvalMetric):
    """Fraction of samples whose label is among the ``top_k`` highest scores."""

    def __init__(self, top_k=1, name="top_k_accuracy", output_names=None, label_names=None):
        super().__init__(name, top_k=top_k, output_names=output_names, label_names=label_names,
                         has_global_stats=True)
        self.top_k = top_k
        assert self.top_k > 1, "Please use Accuracy if top_k is no more than 1"
        self.name += f"_{self.top_k}"

    def update(self, labels, preds):
        labels, preds = check_label_shapes(labels, preds, True)
        for label, pred in zip(labels, preds):
            pred = _np(pred).astype("float32")
            assert pred.ndim <= 2, "Predictions should be no more than 2 dims"
            label = _np(label).astype("int32").ravel()
            check_label_shapes(label, pred)
            if pred.ndim == 1:
                correct = int((numpy.argmax(pred) == label).sum()) if pred.size else 0
            else:
                k = min(pred.shape[1], self.top_k)
                top = numpy.argpartition(pred, -k, axis=1)[:, -k:]
                correct = int((top == label[:, None]).any(axis=1).sum())
            self._add(correct, pred.shape[0])


class _BinaryStats:
    """Confusion counts of a binary classifier, local and global."""

    def __init__(self):
        self.reset_stats()

    def update_binary_stats(self, label, pred, who: str = "F1"):
        pred, label = _np(pred), _np(label).astype("int32")
        pred_label = numpy.argmax(pred, axis=1)
        check_label_shapes(label, pred)
        if len(numpy.unique(label)) > 2:
            raise ValueError(f"{who} currently only supports binary "
                             "classification.")
        pred_true, label_true = pred_label == 1, label == 1
        counts = numpy.array([(pred_true & label_true).sum(), (pred_true & ~label_true).sum(),
                              (~pred_true & label_true).sum(), (~pred_true & ~label_true).sum()])
        self.local += counts
        self.glob += counts

    def local_reset_stats(self):
        self.local = numpy.zeros(4, numpy.int64)  # tp, fp, fn, tn

    def reset_stats(self):
        self.local_reset_stats()
        self.glob = numpy.zeros(4, numpy.int64)

    @staticmethod
    def fscore(counts) -> float:
        tp, fp, fn, _ = (float(c) for c in counts)
        precision = tp / (tp + fp) if tp + fp > 0 else 0.0
        recall = tp / (tp + fn) if tp + fn > 0 else 0.0
        if precision + recall == 0:
            return 0.0
        return 2 * precision * recall / (precision + recall)

    @staticmethod
    def matthewscc(counts) -> float:
        tp, fp, fn, tn = (float(c) for c in counts)
        if not counts.sum():
            return 0.0
        denom = 1.0
        for t in (tp + fp, tp + fn, tn + fp, tn + fn):
            if t != 0.0:
                denom *= t
        return (tp * tn - fp * fn) / math.sqrt(denom)


class _BinaryMetric(EvalMetric):
    _score = None

    def __init__(self, name, output_names=None, label_names=None, average="macro"):
        self.average = average
        self.metrics = _BinaryStats()
        super().__init__(name, output_names=output_names, label_names=label_names,
                         has_global_stats=True)

    def update(self, labels, preds):
        labels, preds = check_label_shapes(labels, preds, True)
        for label, pred in zip(labels, preds):
            self.metrics.update_binary_stats(label, pred, type(self).__name__)
        score = type(self)._score
        if self.average == "macro":  # mean of the per-update scores
            self.sum_metric += score(self.metrics.local)
            self.global_sum_metric += score(self.metrics.glob)
            self.num_inst += 1
            self.global_num_inst += 1
            self.metrics.reset_stats()
        else:  # one score over all samples seen
            n, gn = int(self.metrics.local.sum()), int(self.metrics.glob.sum())
            self.sum_metric, self.num_inst = score(self.metrics.local) * n, n
            self.global_sum_metric, self.global_num_inst = score(self.metrics.glob) * gn, gn

    def reset(self):
        super().reset()
        self.metrics.reset_stats()

    def reset_local(self):
        super().reset_local()
        self.metrics.local_reset_stats()


@register
class F1(_BinaryMetric):
    """F1 score of a binary classifier (class 1 positive); ``average='macro'`` averages the
    per-update scores, ``'micro'`` scores all samples together."""

    _score = staticmethod(_BinaryStats.fscore)

    def __init__(self, name="f1", output_names=None, label_names=None, average="macro"):
        super().__init__(name, output_names, label_names, average)


@register
class MCC(_BinaryMetric):
    """Matthews correlation coefficient of a binary classifier (macro/micro like F1)."""

    _score = staticmethod(_BinaryStats.matthewscc)

    def __init__(self, name="mcc", output_names=None, label_names=None, average="macro"):
        super().__init__(name, output_names, label_names, average)



@register
class PCC(EvalMetric):
    """Multiclass Matthews correlation (Pearson correlation of the confusion matrix)."""

    def __init__(self, name="pcc", output_names=None, label_names=None,
                 has_global_stats=True):
        self.k = 2
        super().__init__(name=name, output_names=output_names, label_names=label_names,
                         has_global_stats=has_global_stats)

    def _grow(self, inc):
        self.lcm = numpy.pad(self.lcm, ((0, inc), (0, inc)))
        self.gcm = numpy.pad(self.gcm, ((0, inc), (0, inc)))
        self.k += inc

    @staticmethod
    def _calc_mcc(cmat):
        n = cmat.sum()
        x, y = cmat.sum(axis=1), cmat.sum(axis=0)
        cov_xx, cov_yy = numpy.sum(x * (n - x)), numpy.sum(y * (n - y))
        if cov_xx == 0 or cov_yy == 0:
            return float("nan")
        cov_xy = numpy.sum(cmat.diagonal() * n - x * y)
        return cov_xy / (cov_xx * cov_yy) ** 0.5

    def update(self, labels, preds):
        labels, preds = check_label_shapes(labels, preds, True)
        for label, pred in zip(labels, preds):
            label, pred = _np(label).astype("int32").ravel(), _np(pred)
            pred = pred.argmax(axis=1) if pred.shape != label.shape else pred.astype("int32")
            pred = pred.ravel()
            n = max(pred.max(), label.max())
            if n >= self.k:
                self._grow(n + 1 - self.k)
            bcm = numpy.zeros((self.k, self.k))
            numpy.add.at(bcm, (pred, label), 1)
            self.lcm += bcm
            self.gcm += bcm
        self.num_inst += 1
        self.global_num_inst += 1

    @property
    def sum_metric(self):
        return self._calc_mcc(self.lcm) * self.num_inst

    @sum_metric.setter
    def sum_metric(self, value):
        """Derived from the confusion matrix; assignments (by ``reset``) are ignored."""

    @property
    def global_sum_metric(self):
        return self._calc_mcc(self.gcm) * self.global_num_inst

    @global_sum_metric.setter
    def global_sum_metric(self, value):
        """Derived from the confusion matrix; assignments (by ``reset``) are ignored."""

    def reset(self):
        self.global_num_inst = 0
        self.gcm = numpy.zeros((self.k, self.k))
        self.reset_local()

    def reset_local(self):
        self.num_inst = 0
        self.lcm = numpy.zeros((self.k, self.k))

