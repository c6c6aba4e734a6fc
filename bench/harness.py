"""Framework-neutral measurements of a model adapter (runs inside a worker process).

An adapter is what ``bench.fw_*`` builds for one framework and variant::

    step(x, y, want_loss) -> float | None   # one SGD step on NumPy x, y; the batch-mean
                                            # loss before the update when want_loss
    predict(x) -> np.ndarray                # logits as NumPy (finished, not pending)
    sync() -> None                          # wait for queued work (async engines)

Timings take a fixed number of batches per measurement and report the best and the median
chunk; converting the NumPy batch to the framework's tensor is inside the timing, as it is
in a real training loop.
"""
from __future__ import annotations

import resource
import time
import timeit

import numpy as np

from bench.common import best_median
from bench.data import BATCH, batches


def peak_rss_mb() -> float:
    """This process's peak resident set size (since the last ``reset_peak_rss``), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def rss_mb() -> float:
    """The current resident set size, MiB (0.0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return 0.0


def reset_peak_rss() -> bool:
    """Reset the peak-RSS mark to the current RSS (Linux >= 4.0: ``clear_refs`` 5), so that
    the peak measured afterwards is the training loop's, not the data loading's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def train(build, d: dict, plan: dict, image: bool = False) -> tuple[object, dict]:
    """Build the model, take the two checked steps, warm up, then time the training loop.

    ``plan``: ``chunks`` timed chunks of ``chunk`` batches after ``warmup`` batches.
    Returns the model and {first_step_s, loss0, loss1, train_best, train_median (samples/s),
    rss_before_mb, rss_peak_mb}.
    """
    head = batches(d, 0, 2 + plan["warmup"], image)
    tic = time.perf_counter()
    model = build()
    loss0 = model.step(*head[0], True)
    first = time.perf_counter() - tic
    loss1 = model.step(*head[1], True)
    for x, y in head[2:]:
        model.step(x, y, False)
    model.sync()
    getattr(model, "settle", lambda: None)()   # (background compiles: cpu_tiered)
    if head[2:]:
        model.step(*head[-1], False)   # the first step with what became ready
        model.sync()
    res = {"first_step_s": first, "loss0": loss0, "loss1": loss1, "rss_start_mb": rss_mb(),
           "rss_reset": reset_peak_rss()}
    pos, times = 2 + plan["warmup"], []
    for _ in range(plan["chunks"]):
        chunk = batches(d, pos, plan["chunk"], image)
        pos += plan["chunk"]
        tic = time.perf_counter()
        for x, y in chunk:
            model.step(x, y, False)
        model.sync()
        times.append(time.perf_counter() - tic)
    best, median = best_median(times)
    res.update(train_best=plan["chunk"] * BATCH / best, train_median=plan["chunk"] * BATCH / median,
               rss_peak_mb=peak_rss_mb(), timed_batches=plan["chunks"] * plan["chunk"])
    return model, res


def first_step(build, d: dict, image: bool = False) -> dict:
    """Only the build and first step (a warm-cache process measures just this)."""
    (x, y), = batches(d, 0, 1, image)
    tic = time.perf_counter()
    model = build()
    loss0 = model.step(x, y, True)
    return {"first_step_s": time.perf_counter() - tic, "loss0": loss0}


def infer(model, d: dict, repeat: int) -> dict:
    """Inference samples/s over the test set in batches of 128 (best of ``repeat``), test
    accuracy, and batch-1 latency in microseconds."""
    x, y = d["test_x"], d["test_y"]
    n_full = x.shape[0] // BATCH
    chunks = [x[i * BATCH:(i + 1) * BATCH] for i in range(n_full)]
    correct, times = 0, []
    for r in range(repeat):
        tic = time.perf_counter()
        outs = [model.predict(c) for c in chunks]
        times.append(time.perf_counter() - tic)
        if r == 0:
            correct = sum(int((o.argmax(1) == y[i * BATCH:(i + 1) * BATCH]).sum())
                          for i, o in enumerate(outs))
    if x.shape[0] > n_full * BATCH:  # the ragged tail counts for accuracy, not for speed
        correct += int((model.predict(x[n_full * BATCH:]).argmax(1) == y[n_full * BATCH:]).sum())
    one = x[:1].copy()
    model.predict(one)
    timer = timeit.Timer(lambda: model.predict(one))
    number = max(1, int(0.05 / max(timer.timeit(3) / 3, 1e-7)))
    lat = min(timer.repeat(repeat=max(3, repeat), number=number)) / number
    return {"infer_best": n_full * BATCH / min(times), "accuracy": correct / x.shape[0],
            "latency1_us": lat * 1e6}


def throughput(fn, nbytes: int, repeat: int) -> tuple[float, float]:
    """(best GB/s, median GB/s) of ``fn()`` that moves ``nbytes`` (fn must finish its work)."""
    fn()
    timer = timeit.Timer(fn)
    number = max(1, int(0.1 / max(timer.timeit(1), 1e-7)))
    best, median = best_median([t / number for t in timer.repeat(repeat=repeat, number=number)])
    return nbytes / best / 1e9, nbytes / median / 1e9


def elemwise_reference(x: np.ndarray) -> np.ndarray:
    """The fused-elementwise workload in NumPy float64 (the check's oracle)."""
    x = x.astype(np.float64)
    return np.maximum(x * 1.5 - 0.25, 0) * 0.5 + 1 / (1 + np.exp(-x)) - np.tanh(x) * x
