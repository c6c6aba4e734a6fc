"""Probability and loss metrics: perplexity, cross-entropy, NLL and loss averages."""
from __future__ import annotations

import math

import numpy

from ..ndarray import NDArray
from .base import EvalMetric, _np, alias, check_label_shapes, register


def _picked(label, pred, axis=-1):
    """``pred``'s probability of each label, classes on ``axis``; labels flattened."""
    pred = numpy.moveaxis(_np(pred), axis, -1)
    pred = pred.reshape(-1, pred.shape[-1])
    label = _np(label).ravel().astype(numpy.int64)
    if label.shape[0] != pred.shape[0]:
        raise ValueError(f"shape mismatch: {label.shape[0]} labels for {pred.shape[0]} "
                         "predictions")
    return label, pred[numpy.arange(label.shape[0]), label]


@register
class Perplexity(EvalMetric):
    """``exp`` of the mean negative log-probability of the labels; labels equal to
    ``ignore_label`` do not count."""

    def __init__(self, ignore_label, axis=-1, name="perplexity", output_names=None,
                 label_names=None):
        super().__init__(name, ignore_label=ignore_label, output_names=output_names,
                         label_names=label_names, has_global_stats=True)
        self.ignore_label = ignore_label
        self.axis = axis

    def update(self, labels, preds):
        labels, preds = check_label_shapes(labels, preds, True)
        loss, num = 0.0, 0
        for label, pred in zip(labels, preds):
            label, prob = _picked(label, pred, self.axis)
            if self.ignore_label is not None:
                keep = label != self.ignore_label
                prob = numpy.where(keep, prob, 1.0)
                num -= int((~keep).sum())
            loss -= float(numpy.log(numpy.maximum(1e-10, prob)).sum())
            num += prob.size
        self._add(loss, num)

    def get(self):
        if self.num_inst == 0:
            return (self.name, float("nan"))
        return (self.name, math.exp(self.sum_metric / self.num_inst))

    def get_global(self):
        if self.global_num_inst == 0:
            return (self.name, float("nan"))
        return (self.name, math.exp(self.global_sum_metric / self.global_num_inst))


@register
@alias("ce")
class CrossEntropy(EvalMetric):
    """Mean ``-log(p[label] + eps)`` over samples; ``pred`` rows are class probabilities."""

    def __init__(self, eps=1e-12, name="cross-entropy", output_names=None, label_names=None):
        super().__init__(name, eps=eps, output_names=output_names, label_names=label_names,
                         has_global_stats=True)
        self.eps = eps

    def update(self, labels, preds):
        labels, preds = check_label_shapes(labels, preds, True)
        for label, pred in zip(labels, preds):
            label, prob = _picked(label, pred)
            self._add(float((-numpy.log(prob + self.eps)).sum()), label.shape[0])


@register
@alias("nll_loss")
class NegativeLogLikelihood(CrossEntropy):
    """Mean negative log-likelihood of the labels (the same sum as CrossEntropy)."""

    def __init__(self, eps=1e-12, name="nll-loss", output_names=None, label_names=None):
        super().__init__(eps=eps, name=name, output_names=output_names,
                         label_names=label_names)


@register
class Loss(EvalMetric):
    """Mean of the given loss values (labels are ignored)."""

    def __init__(self, name="loss", output_names=None, label_names=None):
        super().__init__(name, output_names=output_names, label_names=label_names,
                         has_global_stats=True)

    def update(self, _, preds):
        if isinstance(preds, NDArray | numpy.ndarray):
            preds = [preds]
        for pred in preds:
            pred = _np(pred)
            self._add(float(pred.sum()), pred.size)


@register
class Torch(Loss):
    """Dummy metric for torch criterions (a Loss)."""

    def __init__(self, name="torch", output_names=None, label_names=None):
        super().__init__(name, output_names=output_names, label_names=label_names)


@register
class Caffe(Loss):
    """Dummy metric for caffe criterions (a Loss)."""

    def __init__(self, name="caffe", output_names=None, label_names=None):
        super().__init__(name, output_names=output_names, label_names=label_names)
