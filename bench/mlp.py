"""The seed MLP (784-256-10, relu, softmax cross-entropy, SGD lr 0.1, batch 128) everywhere.

Per framework variant, in its own process: training samples/s (best and median chunk of
the timed batches), inference samples/s at batch 128, batch-1 latency, time to the first
step (ember: cold kernel cache, then warm in a second process), test accuracy after the
timed batches, and peak RSS of the training loop.
"""
from __future__ import annotations

from bench import common, suite

FULL = {"plan": {"warmup": 10, "chunks": 24, "chunk": 39}, "repeat": 5, "rounds": 2}
QUICK = {"plan": {"warmup": 3, "chunks": 3, "chunk": 20}, "repeat": 2, "rounds": 1}
COLUMNS = [("train_best", "train/s", ".0f"), ("train_median", "median/s", ".0f"),
           ("infer_best", "infer/s", ".0f"), ("latency1_us", "b1 us", ".1f"),
           ("import_s", "import s", ".2f"), ("first_step_s", "1st step s", ".3f"),
           ("first_step_warm_s", "warm 1st s", ".3f"), ("accuracy", "test acc", ".4f"),
           ("rss_start_mb", "RSS0 MiB", ".0f"), ("rss_peak_mb", "peak MiB", ".0f")]


def n_batches(quick: bool) -> int:
    """Batches of the timed order this benchmark consumes."""
    plan = (QUICK if quick else FULL)["plan"]
    return 2 + plan["warmup"] + plan["chunks"] * plan["chunk"]


def run(args) -> list[dict]:
    """Measure every available variant; the rows with their results."""
    cfg = QUICK if args.quick else FULL
    path, source = suite.shared_data(n_batches(args.quick))
    rows = suite.variants(args)
    opts = {"plan": cfg["plan"], "repeat": args.repeat or cfg["repeat"],
            "backend": args.backend}
    rows = suite.measure(rows, "mlp", path, opts, cfg["rounds"], args.timeout,
                         warm_first_step=True)
    for r in rows:
        r["source"] = source
    return rows


def report(rows: list[dict], args) -> str:
    """The tables, the loss check and the ratios; records the targets for the summary."""
    cfg = QUICK if args.quick else FULL
    plan = cfg["plan"]
    title = (f"seed MLP, float32, {common.THREADS} threads, data: {rows[0]['source']}\n"
             f"timed: {plan['chunks']} chunks x {plan['chunk']} batches of 128 after "
             f"{plan['warmup']} warm-up, best of {cfg['rounds']} round(s); 1st step = build + "
             "first step after imports (ember: fresh EMBER_CACHE_DIR; warm: same dir, new "
             "process); RSS0 = resident at loop start, peak = loop's peak")
    out = [common.table(title, COLUMNS, rows), "", suite.loss_check(rows), "",
           suite.ratio_table(rows, "train_best", "MLP training samples/s"),
           suite.ratio_table(rows, "infer_best", "MLP inference samples/s, batch 128"),
           suite.ratio_table(rows, "latency1_us", "MLP batch-1 latency", lower_is_better=True)]
    np_row = suite.find(rows, "numpy")
    for key, goal in (("hybridize", 0.75), ("compile", 1.0)):
        e = suite.find(rows, "ember", key)
        common.check(f"MLP train {e.get('name', key)} / NumPy",
                     common.ratio(e.get("train_best"), np_row.get("train_best")), ">=", goal)
    hyb = suite.find(rows, "ember", "hybridize")
    common.check(f"MLP batch-1 latency, {hyb.get('name')}", hyb.get("latency1_us"), "<", 40,
                 " us")
    common.check(f"first step warm, {hyb.get('name')}", hyb.get("first_step_warm_s"), "<", 0.3,
                 " s")
    common.check(f"first step cold, {hyb.get('name')}", hyb.get("first_step_s"), "<", 3, " s")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run and print; ``python -m bench mlp [--quick]``."""
    args = common.parse("python -m bench mlp", __doc__, argv)
    print(report(run(args), args))
    return 0
