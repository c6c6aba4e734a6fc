"""``CheckpointHandler``: saves the model's parameters and the trainer's states every
``epoch_period`` epochs / ``batch_period`` batches as ``<prefix>-epoch<E>batch<B>.params``
and ``.states`` (MXNet 1.9.1's names), keeps the newest ``max_checkpoints``, optionally the
best by a monitored metric (``<prefix>-best``), the symbol file of a hybridized net, and
resumes training from the newest checkpoint found in ``model_dir``."""
from __future__ import annotations

import math
import os
import re
import warnings

import numpy as np

from ember.base import MXNetError
from ember.metric import EvalMetric

from ._events import BatchEnd, EpochEnd, TrainBegin, _monitor_op
from .utils import EstimatorAssertionError

__all__ = ["CheckpointHandler"]

_NAME = re.compile(r"-epoch(\d+)batch(\d+)\.params$")


class CheckpointHandler(TrainBegin, BatchEnd, EpochEnd):
    """Save checkpoints during ``Estimator.fit``.

    Parameters: ``model_dir`` (created if absent), ``model_prefix``, ``monitor`` (an
    estimator metric) with ``save_best`` and ``mode`` ('auto', 'min', 'max'), ``verbose``,
    ``epoch_period`` (default 1), ``batch_period``, ``max_checkpoints`` (default 5; the best
    one is not counted), ``resume_from_checkpoint``.
    """

    def __init__(self, model_dir, model_prefix="model", monitor=None, verbose=0,
                 save_best=False, mode="auto", epoch_period=1, batch_period=None,
                 max_checkpoints=5, resume_from_checkpoint=False):
        self.monitor = monitor
        self.verbose = verbose
        os.makedirs(model_dir, exist_ok=True)
        self.model_dir = model_dir
        self.model_prefix = model_prefix
        self.save_best = save_best
        if save_best and not isinstance(monitor, EvalMetric):
            raise ValueError("To save best model only, please provide one of the metric "
                             "objects from estimator.train_metrics and estimator.val_metrics "
                             "as monitor.")
        self.epoch_period = epoch_period
        self.batch_period = batch_period
        self.current_batch = 0
        self.current_epoch = 0
        self.max_checkpoints = max_checkpoints
        self.resume_from_checkpoint = resume_from_checkpoint
        self.saved_checkpoints = []
        self.trained_epoch = self.trained_batch = -1
        if save_best:
            self.monitor_op = _monitor_op("ModelCheckpoint", mode, monitor)
            self.best = math.inf if self.monitor_op is np.less else -math.inf

    def train_begin(self, estimator, *args, **kwargs):
        self.current_epoch = 0
        self.current_batch = 0
        if self.save_best:
            self.best = math.inf if self.monitor_op is np.less else -math.inf
        if self.resume_from_checkpoint:
            msg = ("To use resume from checkpoint, you must only specify the same type of "
                   "period you used for training. For example, if you are training based on "
                   "number of epochs, you must save only based on epochs, and set "
                   "batch_period to None.")
            if estimator.max_batch and (not self.batch_period or self.epoch_period):
                raise EstimatorAssertionError(msg)
            if estimator.max_epoch and (not self.epoch_period or self.batch_period):
                raise EstimatorAssertionError(msg)
            self._resume_from_checkpoint(estimator)

    def batch_end(self, estimator, *args, **kwargs):
        if self.current_batch == 0:   # the architecture once, after the first batch
            self._save_symbol(estimator)
        if self.batch_period and (self.current_batch + 1) % self.batch_period == 0:
            self._save_checkpoint(estimator)
        self.current_batch += 1

    def epoch_end(self, estimator, *args, **kwargs):
        if self.epoch_period and (self.current_epoch + 1) % self.epoch_period == 0:
            self._save_checkpoint(estimator)
        self.current_epoch += 1

    def _save_checkpoint(self, estimator):
        if self.resume_from_checkpoint:   # number on from the resumed checkpoint
            epoch = self.current_epoch + self.trained_epoch + 1
            batch = self.current_batch + self.trained_batch + (0 if estimator.max_epoch else 1)
        else:
            epoch, batch = self.current_epoch, self.current_batch
        prefix = f"{self.model_prefix}-epoch{epoch}batch{batch}"
        self._save_params_and_trainer(estimator, prefix)
        if self.verbose > 0:
            estimator.logger.info("[Epoch %d] CheckpointHandler: trained total %d batches, "
                                  "saving model at %s with prefix: %s", self.current_epoch,
                                  self.current_batch + 1, self.model_dir, prefix)
        if self.save_best:
            self._save_best(estimator)

    def _save_best(self, estimator):
        name, value = self.monitor.get()
        if np.isnan(value):
            warnings.warn(f"Skipping save best because {name} is not updated, make sure you "
                          "pass one of the metric objects estimator.train_metrics and "
                          "estimator.val_metrics as monitor", RuntimeWarning, stacklevel=3)
        elif self.monitor_op(value, self.best):
            prefix = self.model_prefix + "-best"
            self._save_params_and_trainer(estimator, prefix)
            if self.verbose > 0:
                estimator.logger.info("[Epoch %d] CheckpointHandler: %s improved from %0.5f to "
                                      "%0.5f, updating best model at %s with prefix: %s",
                                      self.current_epoch, name, self.best, value,
                                      self.model_dir, prefix)
            self.best = value
        elif self.verbose > 0:
            estimator.logger.info("[Epoch %d] CheckpointHandler: %s did not improve from "
                                  "%0.5f, skipping updating best model", self.current_epoch,
                                  name, self.best)

    def _save_symbol(self, estimator):
        symbol_file = os.path.join(self.model_dir, self.model_prefix + "-symbol.json")
        net = estimator.net
        if getattr(net, "_cached", None):   # hybridized and run: write its graph
            from ember.symbol import Symbol

            from ...export import export_graph
            try:
                heads = export_graph(net)[0]
            except MXNetError as e:
                estimator.logger.info("Model architecture(symbol file) is not saved: %s", e)
                return
            sym = Symbol(heads[0]) if len(heads) == 1 else Symbol._group(heads)
            sym.save(symbol_file)
        else:
            estimator.logger.info("Model architecture(symbol file) is not saved, please use "
                                  "HybridBlock to construct your model, and call "
                                  "net.hybridize() before passing to Estimator in order to "
                                  "save model architecture as %s.", symbol_file)

    def _save_params_and_trainer(self, estimator, file_prefix):
        estimator.net.save_parameters(os.path.join(self.model_dir, file_prefix + ".params"))
        estimator.trainer.save_states(os.path.join(self.model_dir, file_prefix + ".states"))
        if "best" in file_prefix:
            return
        self.saved_checkpoints.append(file_prefix)
        if len(self.saved_checkpoints) > self.max_checkpoints:   # drop the oldest
            old = self.saved_checkpoints.pop(0)
            for suffix in (".params", ".states"):
                path = os.path.join(self.model_dir, old + suffix)
                if os.path.exists(path):
                    os.remove(path)

    def _checkpoints(self) -> list[tuple[int, int, str]]:
        """(epoch, batch, prefix) of each ``<model_prefix>-epochEbatchB.params`` here."""
        found = []
        for fname in os.listdir(self.model_dir):
            if not fname.startswith(self.model_prefix + "-epoch"):
                continue
            match = _NAME.search(fname[len(self.model_prefix):])
            if match is None:
                if fname.endswith(".params"):
                    raise ValueError("Error parsing checkpoint file, please check your "
                                     "checkpoints have the format: {model_name}-epoch"
                                     "{epoch_number}batch{batch_number}.params, there should "
                                     f"also be a .states file for each .params file: {fname}")
                continue
            found.append((int(match.group(1)), int(match.group(2)), fname[:-len(".params")]))
        return sorted(found)

    def _resume_from_checkpoint(self, estimator):
        found = self._checkpoints()
        if not found:
            self.trained_epoch = self.trained_batch = -1
            what = (f"{estimator.max_batch} batches" if estimator.max_batch
                    else f"{estimator.max_epoch} epochs")
            estimator.logger.info("CheckpointHandler: No checkpoint found, training from "
                                  "scratch for %s", what)
            return
        self.saved_checkpoints = [prefix for _, _, prefix in found]
        self.trained_epoch, self.trained_batch, prefix = found[-1]
        msg = (f"CheckpointHandler: Checkpoint resumed from epoch {self.trained_epoch} batch "
               f"{self.trained_batch}, continue to train for ")
        for unit, units, trained in (("epoch", "epochs", self.trained_epoch),
                                     ("batch", "batches", self.trained_batch)):
            limit = getattr(estimator, f"max_{unit}")
            if not limit:
                continue
            if trained >= limit - 1:
                shown = limit if unit == "epoch" else trained   # MXNet's two messages differ
                raise ValueError(f"Found checkpoint with maximum number of {unit} {shown} "
                                 "reached, please specify resume_from_checkpoint=False "
                                 "(default value) if you wan to train from scratch.")
            setattr(estimator, f"max_{unit}", limit - (trained + 1))
            msg += f"{limit - (trained + 1)} {units} "
        for suffix in (".params", ".states"):
            path = os.path.join(self.model_dir, prefix + suffix)
            if not os.path.exists(path):
                raise EstimatorAssertionError(f"Failed to load checkpoint, {path} does not exist")
        estimator.net.load_parameters(os.path.join(self.model_dir, prefix + ".params"),
                                      ctx=estimator.context)
        estimator.trainer.load_states(os.path.join(self.model_dir, prefix + ".states"))
        estimator.logger.warning(msg)
