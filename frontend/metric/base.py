"""``mx.metric`` base: the registry, EvalMetric, CompositeEvalMetric and CustomMetric.

Each metric keeps a local and a global (since the last full ``reset``) sum and count;
``get()`` is ``sum / count`` unless the metric says otherwise. ``create`` builds one from a
registered name or alias ('acc', 'ce', 'top_k_accuracy', ...), a list, or a function.
"""
from __future__ import annotations

import json
import warnings
from collections import OrderedDict

import numpy

from ..base import numeric_types, string_types
from ..ndarray import NDArray

__all__ = ["EvalMetric", "CompositeEvalMetric", "CustomMetric", "np", "create", "register",
           "alias", "check_label_shapes"]


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
