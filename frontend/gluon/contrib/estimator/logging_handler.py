"""``LoggingHandler``: training progress through the estimator's logger, with MXNet
1.9.1's messages; on a terminal the per-batch lines become a tqdm progress bar."""
from __future__ import annotations

import math
import sys
import time

from ._events import BatchBegin, BatchEnd, EpochBegin, EpochEnd, TrainBegin, TrainEnd
from .utils import _check_metrics

__all__ = ["LoggingHandler"]


def _metric_text(metrics) -> str:
    parts = []
    for metric in metrics:
        name, value = metric.get()
        parts.append(f"{name}: {value:.4f}")
    return ", ".join(parts)


def _on_terminal(logger) -> bool:
    """True when the logger writes to an interactive terminal (then a bar is shown)."""
    streams = [getattr(h, "stream", None) for h in getattr(logger, "handlers", [])]
    streams = [s for s in streams if s is not None] or [sys.stdout]
    try:
        return all(s.isatty() for s in streams)
    except (AttributeError, ValueError):
        return False


class LoggingHandler(TrainBegin, TrainEnd, EpochBegin, EpochEnd, BatchBegin, BatchEnd):
    """Logs the optimizer and learning rate at train begin, each epoch's time and
    ``metrics`` at epoch end, a summary at train end and, with an integer
    ``log_interval`` k, the metrics every k batches (``'epoch'``: only per epoch).

    When the estimator's logger writes to a terminal, each training epoch shows a tqdm
    progress bar over its batches, with the metrics on the bar in place of the per-batch
    lines; in files, pipes and captured output every line is logged as MXNet logs it.
    """

    def __init__(self, log_interval="epoch", metrics=None, priority=math.inf):
        if not isinstance(log_interval, int) and log_interval != "epoch":
            raise ValueError("log_interval must be either an integer or string 'epoch'")
        self.metrics = _check_metrics(metrics)
        self.batch_index = 0
        self.current_epoch = 0
        self.processed_samples = 0
        self.priority = priority
        self.log_interval = log_interval
        self.log_interval_time = 0
        self.train_start = self.epoch_start = self.batch_start = time.time()
        self._bar = None

    def _is_training(self) -> bool:
        return any("training" in metric.name for metric in self.metrics)

    def train_begin(self, estimator, *args, **kwargs):
        self.train_start = time.time()
        trainer = estimator.trainer
        estimator.logger.info("Training begin: using optimizer %s with current learning rate "
                              "%.4f ", type(trainer.optimizer).__name__,
                              trainer.learning_rate)
        if estimator.max_epoch:
            estimator.logger.info("Train for %d epochs.", estimator.max_epoch)
        else:
            estimator.logger.info("Train for %d batches.", estimator.max_batch)
        self.current_epoch = 0
        self.batch_index = 0
        self.processed_samples = 0
        self.log_interval_time = 0

    def train_end(self, estimator, *args, **kwargs):
        self._close_bar()
        train_time = time.time() - self.train_start
        msg = f"Train finished using total {int(train_time)}s with {self.current_epoch} epochs. "
        estimator.logger.info((msg + _metric_text(self.metrics)).rstrip(", "))

    def batch_begin(self, estimator, *args, **kwargs):
        if isinstance(self.log_interval, int):
            self.batch_start = time.time()

    def batch_end(self, estimator, *args, **kwargs):
        interval = self.log_interval if isinstance(self.log_interval, int) else None
        due = interval is not None and self.batch_index % interval == 0
        if self._bar is not None:
            self._bar.update(1)
            if due or interval is None:
                self._bar.set_postfix_str(_metric_text(self.metrics), refresh=False)
        if interval is not None:
            self.log_interval_time += time.time() - self.batch_start
            self.processed_samples += kwargs["batch"][0].shape[0]
            if due:
                msg = (f"[Epoch {self.current_epoch}][Batch {self.batch_index}]"
                       f"[Samples {self.processed_samples}] "
                       f"time/interval: {self.log_interval_time:.3f}s ")
                self.log_interval_time = 0
                if self._bar is None:
                    estimator.logger.info((msg + _metric_text(self.metrics)).rstrip(", "))
        self.batch_index += 1

    def epoch_begin(self, estimator, *args, **kwargs):
        self.epoch_start = time.time()
        if self._is_training():
            estimator.logger.info("[Epoch %d] Begin, current learning rate: %.4f",
                                  self.current_epoch, estimator.trainer.learning_rate)
            if _on_terminal(estimator.logger):
                from tqdm import tqdm
                self._bar = tqdm(total=getattr(estimator, "_epoch_batches", None),
                                 desc=f"Epoch {self.current_epoch}", unit="batch",
                                 leave=True)
        else:
            estimator.logger.info("Validation Begin")

    def epoch_end(self, estimator, *args, **kwargs):
        self._close_bar()
        epoch_time = time.time() - self.epoch_start
        msg = f"[Epoch {self.current_epoch}] Finished in {epoch_time:.3f}s, "
        estimator.logger.info((msg + _metric_text(self.metrics)).rstrip(", "))
        self.current_epoch += 1
        self.batch_index = 0

    def _close_bar(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
