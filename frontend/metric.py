"""Online evaluation metrics (``mx.metric``), computed in NumPy from the NDArrays given.

Each metric keeps a local and a global (since the last full ``reset``) sum and count;
``get()`` is ``sum / count`` unless the metric says otherwise. ``create`` builds one from a
registered name or alias ('acc', 'ce', 'top_k_accuracy', ...), a list, or a function.
"""
from __future__ import annotations

import json
import math
import warnings
from collections import OrderedDict

import numpy

from .base import numeric_types, string_types
from .ndarray import NDArray

__all__ = ["EvalMetric", "CompositeEvalMetric", "Accuracy", "TopKAccuracy", "F1", "MCC",
           "Perplexity", "MAE", "MSE", "RMSE", "CrossEntropy", "NegativeLogLikelihood",
           "PearsonCorrelation", "PCC", "Loss", "Torch", "Caffe", "CustomMetric", "np",
           "create", "register", "alias", "check_label_shapes"]


def _np(x) -> numpy.ndarray:
    return x.asnumpy() if isinstance(x, NDArray) else numpy.asarray(x)


def check_label_shapes(labels, preds, wrap: bool = False, shape: bool = False):
    """Raise ValueError unless ``labels`` and ``preds`` have equal lengths (``shape=True``:
    equal shapes); ``wrap`` puts a single NDArray into a list."""
    if not shape:
        label_shape, pred_shape = len(labels), len(preds)
    else:
        label_shape, pred_shape = labels.shape, preds.shape
    if label_shape != pred_shape:
        raise ValueError(f"Shape of labels {label_shape} does not match shape of "
                         f"predictions {pred_shape}")
    if wrap:
        if isinstance(labels, NDArray | numpy.ndarray):
            labels = [labels]
        if isinstance(preds, NDArray | numpy.ndarray):
            preds = [preds]
    return labels, preds


# ---- registry ------------------------------------------------------------------------------
_REGISTRY: dict[str, type] = {}


def register(klass, name: str | None = None):
    """Register a metric class under its lower-cased name (or ``name``) for :func:`create`."""
    if not (isinstance(klass, type) and issubclass(klass, EvalMetric)):
        raise TypeError("Can only register subclass of EvalMetric")
    key = (name or klass.__name__).lower()
    if key in _REGISTRY and _REGISTRY[key] is not klass:
        warnings.warn(f"New metric {klass.__module__}.{klass.__name__} registered with name "
                      f"{key} is overriding existing metric {_REGISTRY[key].__name__}",
                      UserWarning, stacklevel=2)
    _REGISTRY[key] = klass
    return klass


def alias(*aliases: str):
    """Class decorator registering a metric under extra names."""
    def reg(klass):
        for name in aliases:
            register(klass, name)
        return klass
    return reg


def _create(metric, *args, **kwargs):
    if isinstance(metric, EvalMetric):
        assert not args and not kwargs, \
            "metric is already an instance. Additional arguments are invalid"
        return metric
    if isinstance(metric, dict):
        return _create(**{**metric, **kwargs})
    if not isinstance(metric, string_types):
        raise TypeError(f"metric must be a name, an EvalMetric, a list or a function; got "
                        f"{type(metric).__name__}")
    if metric.startswith("["):
        name, kw = json.loads(metric)
        return _create(name, **kw)
    if metric.startswith("{"):
        return _create(**json.loads(metric))
    key = metric.lower()
    if key not in _REGISTRY:
        raise ValueError(f"Metric {metric!r} is not registered (known: "
                         f"{', '.join(sorted(_REGISTRY))}); register it with mx.metric.register")
    return _REGISTRY[key](*args, **kwargs)


def create(metric=None, *args, **kwargs):
    """A metric from a name, an instance, a list of those, a config dict, or a function
    ``feval(label, pred)`` (made a :class:`CustomMetric`)."""
    if metric is None:
        metric = kwargs.pop("metric")
    if callable(metric) and not isinstance(metric, EvalMetric | type):
        return CustomMetric(metric, *args, **kwargs)
    if isinstance(metric, list):
        composite = CompositeEvalMetric()
        for child in metric:
            composite.add(create(child, *args, **kwargs))
        return composite
    return _create(metric, *args, **kwargs)


# ---- base classes ----------------------------------------------------------------------------
class EvalMetric:
    """Base class of metrics: ``update(labels, preds)`` accumulates, ``get()`` reports.

    ``output_names``/``label_names`` pick the arrays ``update_dict`` uses (all by default).
    """

    def __init__(self, name, output_names=None, label_names=None, **kwargs):
        self.name = str(name)
        self.output_names = output_names
        self.label_names = label_names
        self._has_global_stats = kwargs.pop("has_global_stats", False)
        self._kwargs = kwargs
        self.reset()

    def __str__(self):
        return f"EvalMetric: {dict(self.get_name_value())}"

    def get_config(self) -> dict:
        """The arguments that rebuild this metric through ``create(**config)``."""
        config = self._kwargs.copy()
        config.update({"metric": type(self).__name__, "name": self.name,
                       "output_names": self.output_names, "label_names": self.label_names})
        return config

    def update_dict(self, label: dict, pred: dict):
        """Update with name -> array mappings, picked by ``label_names``/``output_names``."""
        pred = ([pred[n] for n in self.output_names] if self.output_names is not None
                else list(pred.values()))
        label = ([label[n] for n in self.label_names] if self.label_names is not None
                 else list(label.values()))
        self.update(label, pred)

    def update(self, labels, preds):
        """Accumulate a batch of ``labels`` and ``preds`` (lists of NDArrays, or one each)."""
        raise TypeError(f"{type(self).__name__} must define update()")

    def _add(self, value, count):
        self.sum_metric += value
        self.global_sum_metric += value
        self.num_inst += count
        self.global_num_inst += count

    def reset(self):
        """Clear local and global statistics."""
        self.num_inst = 0
        self.sum_metric = 0.0
        self.global_num_inst = 0
        self.global_sum_metric = 0.0

    def reset_local(self):
        """Clear the local statistics only."""
        self.num_inst = 0
        self.sum_metric = 0.0

    def get(self):
        """``(name, value)``; the value is NaN before any update."""
        if self.num_inst == 0:
            return (self.name, float("nan"))
        return (self.name, self.sum_metric / self.num_inst)

    def get_global(self):
        """``(name, value)`` over everything since the last ``reset``."""
        if not self._has_global_stats:
            return self.get()
        if self.global_num_inst == 0:
            return (self.name, float("nan"))
        return (self.name, self.global_sum_metric / self.global_num_inst)

    def get_name_value(self) -> list:
        """``[(name, value), ...]``."""
        return _zip_name_value(*self.get())

    def get_global_name_value(self) -> list:
        """``[(name, value), ...]`` of the global statistics."""
        return _zip_name_value(*self.get_global())


def _zip_name_value(name, value):
    name = name if isinstance(name, list) else [name]
    value = value if isinstance(value, list) else [value]
    return list(zip(name, value))


@register
@alias("composite")
class CompositeEvalMetric(EvalMetric):
    """Several metrics updated together; ``get()`` gives lists of names and values."""

    def __init__(self, metrics=None, name="composite", output_names=None, label_names=None):
        super().__init__(name, output_names=output_names, label_names=label_names,
                         has_global_stats=True)
        self.metrics = [create(m) for m in (metrics or [])]

    def add(self, metric):
        """Add a child metric (anything :func:`create` accepts)."""
        self.metrics.append(create(metric))

    def get_metric(self, index: int):
        """The child metric at ``index``."""
        try:
            return self.metrics[index]
        except IndexError:
            raise ValueError(f"Metric index {index} is out of range 0 and "
                             f"{len(self.metrics)}") from None

    def update_dict(self, labels, preds):
        if self.label_names is not None:
            labels = OrderedDict(i for i in labels.items() if i[0] in self.label_names)
        if self.output_names is not None:
            preds = OrderedDict(i for i in preds.items() if i[0] in self.output_names)
        for metric in self.metrics:
            metric.update_dict(labels, preds)

    def update(self, labels, preds):
        for metric in self.metrics:
            metric.update(labels, preds)

    def reset(self):
        for metric in getattr(self, "metrics", []):
            metric.reset()

    def reset_local(self):
        for metric in self.metrics:
            metric.reset_local()

    def _collect(self, getter):
        names, values = [], []
        for metric in self.metrics:
            name, value = getter(metric)
            names.extend([name] if isinstance(name, string_types) else name)
            values.extend([value] if isinstance(value, numeric_types) else value)
        return (names, values)

    def get(self):
        return self._collect(lambda m: m.get())

    def get_global(self):
        return self._collect(lambda m: m.get_global())

    def get_config(self):
        config = super().get_config()
        config.update({"metrics": [m.get_config() for m in self.metrics]})
        return config


# ---- classification ----------------------------------------------------------------------------
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


# ---- probabilities ---------------------------------------------------------------------------
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


# ---- regression ------------------------------------------------------------------------------
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


# ---- losses and user functions ---------------------------------------------------------------
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


@register
class CustomMetric(EvalMetric):
    """A metric from ``feval(label, pred)`` on NumPy arrays, returning a value (averaged
    over updates) or a ``(sum, count)`` pair."""

    def __init__(self, feval, name=None, allow_extra_outputs=False, output_names=None,
                 label_names=None):
        if name is None:
            name = feval.__name__
            if "<" in name:
                name = f"custom({name})"
        super().__init__(name, feval=feval, allow_extra_outputs=allow_extra_outputs,
                         output_names=output_names, label_names=label_names,
                         has_global_stats=True)
        self._feval = feval
        self._allow_extra_outputs = allow_extra_outputs

    def update(self, labels, preds):
        if not self._allow_extra_outputs:
            labels, preds = check_label_shapes(labels, preds, True)
        else:
            labels = [labels] if isinstance(labels, NDArray) else labels
            preds = [preds] if isinstance(preds, NDArray) else preds
        for pred, label in zip(preds, labels):
            reval = self._feval(_np(label), _np(pred))
            if isinstance(reval, tuple):
                self._add(reval[0], reval[1])
            else:
                self._add(reval, 1)

    def get_config(self):
        # MXNet raises this exact error: a Python function has no config to rebuild it from
        raise NotImplementedError("CustomMetric cannot be serialized")


def np(numpy_feval, name=None, allow_extra_outputs=False) -> CustomMetric:
    """A :class:`CustomMetric` from ``numpy_feval(label, pred)`` on NumPy arrays."""
    def feval(label, pred):
        return numpy_feval(label, pred)
    feval.__name__ = numpy_feval.__name__
    return CustomMetric(feval, name, allow_extra_outputs)
