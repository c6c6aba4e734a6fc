"""LeNet-5 training samples/s (batch 128, NCHW 1x28x28, relu + max pooling), every framework.

The NumPy peer is im2col by hand (bench.fw_numpy); the target is ember >= 1.2x PyTorch eager.
"""
from __future__ import annotations

from bench import common, suite

FULL = {"plan": {"warmup": 3, "chunks": 6, "chunk": 15}, "repeat": 3, "rounds": 2}
QUICK = {"plan": {"warmup": 1, "chunks": 2, "chunk": 4}, "repeat": 2, "rounds": 1}
COLUMNS = [("train_best", "train/s", ".0f"), ("train_median", "median/s", ".0f"),
           ("import_s", "import s", ".2f"), ("first_step_s", "1st step s", ".3f"),
           ("rss_peak_mb", "peak MiB", ".0f")]


def run(args) -> list[dict]:
    """Measure every available variant; the rows with their results."""
    cfg = QUICK if args.quick else FULL
    plan = cfg["plan"]
    path, source = suite.shared_data(2 + plan["warmup"] + plan["chunks"] * plan["chunk"])
    rows = suite.measure(suite.variants(args), "lenet", path,
                         {"plan": plan, "repeat": args.repeat or cfg["repeat"],
                          "backend": args.backend}, cfg["rounds"], args.timeout)
    for r in rows:
        r["source"] = source
    return rows


def report(rows: list[dict], args) -> str:
    """The table, the loss check, the ratios; records the LeNet target."""
    cfg = QUICK if args.quick else FULL
    plan = cfg["plan"]
    title = (f"LeNet-5 training, float32, {common.THREADS} threads, data: {rows[0]['source']}\n"
             f"timed: {plan['chunks']} chunks x {plan['chunk']} batches of 128 after "
             f"{plan['warmup']} warm-up, best of {cfg['rounds']} round(s)")
    torch_row = suite.find(rows, "torch")
    for key in ("hybridize", "compile"):
        e = suite.find(rows, "ember", key)
        common.check(f"LeNet train {e.get('name', key)} / torch eager",
                     common.ratio(e.get("train_best"), torch_row.get("train_best")), ">=", 1.2)
    return "\n".join([common.table(title, COLUMNS, rows), "", suite.loss_check(rows), "",
                      suite.ratio_table(rows, "train_best", "LeNet training samples/s")])


def main(argv: list[str] | None = None) -> int:
    """Run and print; ``python -m bench lenet [--quick]``."""
    args = common.parse("python -m bench lenet", __doc__, argv)
    print(report(run(args), args))
    return 0
