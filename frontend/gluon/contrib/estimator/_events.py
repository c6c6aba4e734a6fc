"""The six events of an Estimator run: a handler subclasses the ones it answers to."""
from __future__ import annotations

import warnings

import numpy as np


class EventHandler:
    """Base of every event handler."""


def _check_event_handlers(handlers) -> list:
    """A fresh list of handlers from one handler, a list or None."""
    if isinstance(handlers, EventHandler):
        return [handlers]
    handlers = list(handlers or [])
    if not all(isinstance(h, EventHandler) for h in handlers):
        raise ValueError("handlers must be an EventHandler or a list of EventHandler, "
                         f"got: {handlers}")
    return handlers


class TrainBegin(EventHandler):
    def train_begin(self, estimator, *args, **kwargs):
        """Called once before the first epoch."""


class TrainEnd(EventHandler):
    def train_end(self, estimator, *args, **kwargs):
        """Called once after training stopped."""


class EpochBegin(EventHandler):
    def epoch_begin(self, estimator, *args, **kwargs):
        """Called before each epoch (and before each evaluation pass)."""


class EpochEnd(EventHandler):
    def epoch_end(self, estimator, *args, **kwargs) -> bool:
        """Called after each epoch; returning True stops training."""
        return False


class BatchBegin(EventHandler):
    def batch_begin(self, estimator, *args, **kwargs):
        """Called before each batch with ``batch=``."""


class BatchEnd(EventHandler):
    def batch_end(self, estimator, *args, **kwargs) -> bool:
        """Called after each batch with ``batch, pred, label, loss``; True stops training."""
        return False


def _monitor_op(owner: str, mode: str, monitor):
    """``np.less`` or ``np.greater`` for ``mode`` 'min' / 'max'; 'auto' picks greater for
    accuracy and F1 metrics and less for anything else (a loss, an error)."""
    if mode not in ("auto", "min", "max"):
        warnings.warn(f"{owner} mode {mode} is unknown, fallback to auto mode. {owner} will "
                      "use max mode for f1 and accuracy metric comparison and use min mode "
                      "other wise", RuntimeWarning, stacklevel=3)
        mode = "auto"
    if mode == "min":
        return np.less
    if mode == "max":
        return np.greater
    name = monitor.get()[0]
    if any(key in str(name).lower() for key in ("acc", "f1")):
        warnings.warn(f"`greater` operator will be used to determine if {name} has improved. "
                      "Please specify `mode='min'` to use the `less` operator. Specify "
                      "`mode='max' to disable this warning.`", stacklevel=3)
        return np.greater
    warnings.warn(f"`less` operator will be used to determine if {name} has improved. Please "
                  "specify `mode='max'` to use the `greater` operator. Specify `mode='min' "
                  "to disable this warning.`", stacklevel=3)
    return np.less
