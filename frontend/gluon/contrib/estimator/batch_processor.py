"""``BatchProcessor``: how the Estimator trains and evaluates one batch (MXNet 1.9.1's
``gluon.contrib.estimator.batch_processor``); subclass it to customise a step."""
from __future__ import annotations

from ember import autograd

from ...utils import split_and_load

__all__ = ["BatchProcessor"]


class BatchProcessor:
    """Default ``fit_batch`` / ``evaluate_batch``: split the batch over the estimator's
    contexts, run the net and the loss (recording for training, then ``backward``)."""

    def _get_data_and_label(self, batch, ctx, batch_axis=0):
        data = split_and_load(batch[0], ctx_list=ctx, batch_axis=batch_axis)
        label = split_and_load(batch[1], ctx_list=ctx, batch_axis=batch_axis)
        return data, label

    def evaluate_batch(self, estimator, val_batch, batch_axis=0):
        """Run ``estimator.val_net`` and ``val_loss`` on one validation batch; returns
        ``(data, label, pred, loss)``, each a list over contexts."""
        data, label = self._get_data_and_label(val_batch, estimator.context, batch_axis)
        pred = [estimator.val_net(x) for x in data]
        loss = [estimator.val_loss(y_hat, y) for y_hat, y in zip(pred, label)]
        return data, label, pred, loss

    def fit_batch(self, estimator, train_batch, batch_axis=0):
        """Forward and backward on one training batch (the update is the
        GradientUpdateHandler's); returns ``(data, label, pred, loss)`` lists."""
        data, label = self._get_data_and_label(train_batch, estimator.context, batch_axis)
        with autograd.record():
            pred = [estimator.net(x) for x in data]
            loss = [estimator.loss(y_hat, y) for y_hat, y in zip(pred, label)]
        for value in loss:
            value.backward()
        return data, label, pred, loss
