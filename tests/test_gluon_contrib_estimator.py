"""gluon.contrib.estimator: Estimator.fit/evaluate, the batch processor and the event
handlers (stopping, metrics, validation, logging with a progress bar on terminals,
checkpoints with resume, early stopping, gradient updates), on tiny hermetic data."""
import io
import logging
import os

import numpy as np
import pytest

import ember as mx
from ember.gluon import data, loss, nn
from ember.gluon.contrib.estimator import (
    BatchEnd,
    BatchProcessor,
    CheckpointHandler,
    EarlyStoppingHandler,
    Estimator,
    LoggingHandler,
    TrainBegin,
    ValidationHandler,
)

RNG = np.random.default_rng(3)


def _regression(n=32, batch=8):
    x = RNG.standard_normal((n, 3)).astype(np.float32)
    y = (x @ np.array([[1.5], [-2.0], [0.5]], np.float32) + 0.3).astype(np.float32)
    return data.DataLoader(data.ArrayDataset(mx.nd.array(x), mx.nd.array(y)), batch_size=batch)


def _classes(n=32, batch=8):
    x = RNG.standard_normal((n, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    return data.DataLoader(data.ArrayDataset(mx.nd.array(x), mx.nd.array(y)), batch_size=batch)


def _estimator(net=None, lr=0.1, **kw):
    net = net or nn.Dense(1, in_units=3)
    net.initialize(mx.init.Uniform(0.1))
    trainer = mx.gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": lr})
    est = Estimator(net, loss.L2Loss(), trainer=trainer, **kw)
    est.logger.handlers[:] = [logging.StreamHandler(io.StringIO())]   # keep test output quiet
    return est


class _Count(BatchEnd):
    def __init__(self):
        self.batches = 0

    def batch_end(self, estimator, *args, **kwargs):
        self.batches += 1


def test_fit_lowers_loss_and_writes_checkpoints(tmp_path):
    train = _regression()
    net = nn.HybridSequential()
    net.add(nn.Dense(1, in_units=3))
    net.hybridize()
    est = _estimator(net)
    assert [m.name for m in est.train_metrics] == ["training l2loss"]
    assert [m.name for m in est.val_metrics] == ["validation l2loss"]
    est.evaluate(train)
    before = est.val_metrics[0].get()[1]
    ckpt = CheckpointHandler(str(tmp_path), "m", epoch_period=1, max_checkpoints=2)
    est.fit(train, val_data=train, epochs=4, event_handlers=[ckpt])
    after = est.val_metrics[0].get()[1]
    assert after < 0.2 * before
    names = sorted(os.listdir(tmp_path))
    assert names == ["m-epoch2batch12.params", "m-epoch2batch12.states",
                     "m-epoch3batch16.params", "m-epoch3batch16.states", "m-symbol.json"]
    clone = nn.HybridSequential()
    clone.add(nn.Dense(1, in_units=3))
    clone.load_parameters(str(tmp_path / "m-epoch3batch16.params"))
    x = mx.nd.ones((2, 3))
    np.testing.assert_allclose(clone(x).asnumpy(), net(x).asnumpy(), rtol=1e-6)
    sym = mx.sym.load(str(tmp_path / "m-symbol.json"))
    assert any(name.endswith("weight") for name in sym.list_arguments())


def test_resume_from_checkpoint_and_best(tmp_path):
    train = _regression()
    est = _estimator()
    metric = est.train_metrics[0]
    best = CheckpointHandler(str(tmp_path), "r", monitor=metric, save_best=True, mode="min")
    est.fit(train, epochs=2, event_handlers=[best])
    assert os.path.isfile(tmp_path / "r-best.params")
    assert os.path.isfile(tmp_path / "r-epoch1batch8.states")
    weight = est.net.weight.data().asnumpy().copy()
    seen = []

    class Snapshot(TrainBegin):
        priority = 1                          # after the checkpoint handler's train_begin

        def train_begin(self, estimator, *args, **kwargs):
            seen.append(estimator.net.weight.data().asnumpy().copy())

    est2 = _estimator()                       # fresh weights, resumed from the files
    resume = CheckpointHandler(str(tmp_path), "r", resume_from_checkpoint=True)
    counter = _Count()
    est2.fit(train, epochs=5, event_handlers=[resume, counter, Snapshot()])
    assert est2.max_epoch == 3 and counter.batches == 12
    np.testing.assert_array_equal(seen[0], weight)
    assert os.path.isfile(tmp_path / "r-epoch4batch20.params")
    with pytest.raises(ValueError, match="maximum number of epoch"):
        _estimator().fit(train, epochs=2, event_handlers=[
            CheckpointHandler(str(tmp_path), "r", resume_from_checkpoint=True)])
    with pytest.raises(AssertionError, match="same type of period"):
        _estimator().fit(train, batches=3, event_handlers=[
            CheckpointHandler(str(tmp_path), "r", resume_from_checkpoint=True)])


def test_batches_stop_early_stopping_and_validation_period():
    train = _regression()
    est = _estimator()
    counter = _Count()
    est.fit(train, batches=6, event_handlers=[counter])
    assert counter.batches == 6
    calls = []
    val = ValidationHandler(train, lambda **kw: calls.append(kw["batch_axis"]),
                            epoch_period=None, batch_period=3)
    est.fit(train, epochs=2, event_handlers=[val])
    assert calls == [0, 0]                    # after batches 3 and 6 of 8
    est = _estimator(lr=0.0)                  # nothing improves: stop after `patience`
    stopper = EarlyStoppingHandler(est.train_metrics[0], patience=2, mode="min")
    est.fit(train, epochs=10, event_handlers=[stopper])
    assert stopper.current_epoch == 3 and stopper.stopped_epoch == 2
    with pytest.warns(UserWarning, match="`greater` operator"):
        acc = mx.metric.Accuracy()
        acc.name = "training accuracy"
        EarlyStoppingHandler(acc)


def test_default_metrics_logging_and_custom_batch_processor():
    train = _classes()
    net = nn.Dense(2, in_units=4)
    net.initialize()
    calls = []

    class Processor(BatchProcessor):
        def fit_batch(self, estimator, batch, batch_axis=0):
            calls.append(batch[0].shape)
            return super().fit_batch(estimator, batch, batch_axis)

    with pytest.warns(UserWarning, match="No trainer specified"):
        est = Estimator(net, loss.SoftmaxCrossEntropyLoss(), batch_processor=Processor())
    assert [m.name for m in est.train_metrics] == ["training accuracy",
                                                  "training softmaxcrossentropyloss"]
    stream = io.StringIO()
    est.logger.handlers[:] = [logging.StreamHandler(stream)]
    log = LoggingHandler(log_interval=2, metrics=est.train_metrics)
    est.fit(train, epochs=1, event_handlers=[log])
    assert calls == [(8, 4)] * 4
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("Training begin: using optimizer SGD with current learning")
    batch_lines = [line for line in lines if line.startswith("[Epoch 0][Batch")]
    assert len(batch_lines) == 2 and "[Samples 24] time/interval:" in batch_lines[1]
    assert "training accuracy: " in batch_lines[0]
    assert any(line.startswith("[Epoch 0] Finished in ") for line in lines)
    assert lines[-1].startswith("Train finished using total")


def test_logging_handler_shows_progress_bar_on_terminal(capsys):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    est = _estimator()
    stream = Terminal()
    est.logger.handlers[:] = [logging.StreamHandler(stream)]
    est.fit(_regression(), epochs=1, event_handlers=[
        LoggingHandler(log_interval=1, metrics=est.train_metrics)])
    err = capsys.readouterr().err
    assert "Epoch 0" in err and "4/4" in err          # tqdm's bar over the 4 batches
    assert "[Batch" not in stream.getvalue()          # the bar replaces per-batch lines
    assert "[Epoch 0] Finished in" in stream.getvalue()


def test_estimator_argument_errors():
    train = _regression()
    est = _estimator()
    with pytest.raises(ValueError, match="one and only one"):
        est.fit(train, epochs=1, batches=1)
    with pytest.raises(ValueError, match="DataLoader"):
        est.fit([(mx.nd.ones((1, 3)), mx.nd.ones((1, 1)))], epochs=1)
    with pytest.raises(ValueError, match="loss must be a Loss"):
        Estimator(est.net, "l2")
    with pytest.raises(ValueError, match="context must be a Context"):
        Estimator(est.net, loss.L2Loss(), trainer=est.trainer, context="cpu")
    with pytest.raises(AssertionError, match="gpu\\(100\\) is not available"):
        Estimator(est.net, loss.L2Loss(), trainer=est.trainer, context=[mx.gpu(100)])
    with pytest.raises(ValueError, match="outside of the known"):
        est.fit(train, epochs=1, event_handlers=[LoggingHandler(metrics=[mx.metric.MAE()])])
