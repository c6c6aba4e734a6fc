"""Regression metrics: MAE, MSE, RMSE and Pearson correlation."""
from __future__ import annotations

import math

import numpy

from .base import EvalMetric, _np, alias, check_label_shapes, register


def _as_2d(x):
    x = _np(x)
    return x.reshape(x.shape[0], 1) if x.ndim == 1 else x


class _Regression(EvalMetric):
    def __init__(self, name, output_names=None, label_names=None):
        super().__init__(name, output_names=output_names, label_names=label_names,
                         has_global_stats=True)

    def update(self, labels, preds):
        labels, preds = check_label_shapes(labels, preds, True)
        for label, pred in zip(labels, preds):  # one value per batch, as MXNet averages
            self._add(float(self._batch(_as_2d(label), _as_2d(pred))), 1)


@register
class MAE(_Regression):
    """Mean absolute error, averaged per batch."""

    def __init__(self, name="mae", output_names=None, label_names=None):
        super().__init__(name, output_names, label_names)

    @staticmethod
    def _batch(label, pred):
        return numpy.abs(label - pred).mean()


@register
class MSE(_Regression):
    """Mean squared error, averaged per batch."""

    def __init__(self, name="mse", output_names=None, label_names=None):
        super().__init__(name, output_names, label_names)

    @staticmethod
    def _batch(label, pred):
        return ((label - pred) ** 2.0).mean()


@register
class RMSE(_Regression):
    """Root mean squared error of each batch, averaged over batches."""

    def __init__(self, name="rmse", output_names=None, label_names=None):
        super().__init__(name, output_names, label_names)

    @staticmethod
    def _batch(label, pred):
        return numpy.sqrt(((label - pred) ** 2.0).mean())


class _CoMoments:
    """Count, means and (co)moments of two streams, merged batch by batch (Chan et al.)."""

    def __init__(self):
        self.n, self.mx, self.my, self.cxx, self.cyy, self.cxy = 0, 0.0, 0.0, 0.0, 0.0, 0.0

    def add(self, x, y):
        nb = x.size
        if nb == 0:
            return
        bx, by = x.mean(), y.mean()
        dx, dy = x - bx, y - by
        n = self.n + nb
        f = self.n * nb / n
        ex, ey = bx - self.mx, by - self.my
        self.cxx += (dx * dx).sum() + ex * ex * f
        self.cyy += (dy * dy).sum() + ey * ey * f
        self.cxy += (dx * dy).sum() + ex * ey * f
        self.mx += ex * nb / n
        self.my += ey * nb / n
        self.n = n

    def corr(self) -> float:
        return float(self.cxy / math.sqrt(self.cxx * self.cyy))


@register
@alias("pearsonr")
class PearsonCorrelation(EvalMetric):
    """Pearson correlation of predictions and labels: ``average='macro'`` averages the
    per-batch coefficients, ``'micro'`` computes one over all values seen."""

    def __init__(self, name="pearsonr", output_names=None, label_names=None, average="macro"):
        self.average = average
        super().__init__(name, output_names=output_names, label_names=label_names,
                         has_global_stats=True)

    def reset(self):
        super().reset()
        self._local, self._global = _CoMoments(), _CoMoments()

    def reset_local(self):
        super().reset_local()
        self._local = _CoMoments()

    def update(self, labels, preds):
        labels, preds = check_label_shapes(labels, preds, True)
        for label, pred in zip(labels, preds):
            check_label_shapes(label, pred, False, True)
            label = _np(label).ravel().astype(numpy.float64)
            pred = _np(pred).ravel().astype(numpy.float64)
            if self.average == "macro":
                self._add(float(numpy.corrcoef(pred, label)[0, 1]), 1)
            else:
                self._local.add(pred, label)
                self._global.add(pred, label)
                self.num_inst += 1
                self.global_num_inst += 1

    def get(self):
        if self.num_inst == 0 or self.average == "macro":
            return super().get()
        return (self.name, self._local.corr())

    def get_global(self):
        if self.global_num_inst == 0 or self.average == "macro":
            return super().get_global()
        return (self.name, self._global.corr())
