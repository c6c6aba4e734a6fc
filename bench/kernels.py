"""Two kernel-level workloads: elementwise fusion (GB/s against a plain copy) and GEMM.

``elemwise``: ``relu(x*1.5-0.25)*0.5 + sigmoid(x) - tanh(x)*x`` on 4Mi float32; effective
GB/s counts the bytes read and written once (2 x 16 MiB), so a fully fused kernel can reach
the copy's bandwidth and an unfused one reads and writes every temporary. ``gemm``:
``nd.dot`` of two 1024x1024 float32 matrices, GFLOP/s = 2n^3 / time.
"""
from __future__ import annotations

from bench import common, suite

QUICK = {"repeat": 3, "rounds": 1}
FULL = {"repeat": 7, "rounds": 2}


def _rows(args, with_copy: bool) -> list[dict]:
    rows = suite.variants(args)
    for r in rows:
        if r["fw"] == "mxnet" and not r.get("error"):
            r["name"] = "mxnet 1.9.1 " + ("hybridize" if with_copy else "nd.dot")
    if with_copy:
        rows.insert(0, dict(name="copy (np.copyto)", fw="copy", variant="copy", python=None))
    else:  # nd.dot is eager in every Gluon framework: one ember row, no compiled variants
        rows = [r for r in rows if r.get("key") is None and r["variant"] != "compile"]
    return rows


def run(args, workload: str) -> list[dict]:
    """Measure ``workload`` ('elemwise' or 'gemm') for every available variant."""
    cfg = QUICK if args.quick else FULL
    rows = _rows(args, workload == "elemwise")
    for r in rows:  # the copy row runs in the NumPy worker
        if r["fw"] == "copy":
            r["fw"] = "numpy"
    rows = suite.measure(rows, workload, "-", {"repeat": args.repeat or cfg["repeat"],
                                               "backend": args.backend},
                         cfg["rounds"], args.timeout)
    return rows


def elemwise_report(rows: list[dict]) -> str:
    """Table of GB/s and % of copy; records the fusion target."""
    copy = rows[0].get("gbps_best")
    for r in rows:
        q = common.ratio(r.get("gbps_best"), copy)
        r["pct_copy"] = None if q is None else 100 * q
    cols = [("gbps_best", "GB/s", ".2f"), ("gbps_median", "median", ".2f"),
            ("pct_copy", "% of copy", ".1f"), ("max_err", "max err", ".1e")]
    title = (f"elementwise relu(x*1.5-0.25)*0.5 + sigmoid(x) - tanh(x)*x, 4Mi float32, "
             f"{common.THREADS} threads (GB/s = 32 MiB moved / time)")
    for key in ("hybridize", "compile"):
        e = suite.find(rows, "ember", key)
        common.check(f"fused elementwise {e.get('name', key)} / copy",
                     common.ratio(e.get("gbps_best"), copy), ">=", 0.5)
    return "\n".join([common.table(title, cols, rows), "",
                      suite.ratio_table([r for r in rows if r["variant"] != "copy"],
                                        "gbps_best", "elementwise GB/s")])


def gemm_report(rows: list[dict]) -> str:
    """Table of GFLOP/s and the ratios."""
    cols = [("gflops_best", "GFLOP/s", ".1f"), ("gflops_median", "median", ".1f"),
            ("rel_err", "err/n", ".1e")]
    title = f"GEMM 1024^3 float32 (nd.dot and peers), {common.THREADS} threads"
    return "\n".join([common.table(title, cols, rows), "",
                      suite.ratio_table(rows, "gflops_best", "GEMM GFLOP/s")])


def main_elemwise(argv: list[str] | None = None) -> int:
    """``python -m bench elemwise [--quick]``."""
    args = common.parse("python -m bench elemwise", __doc__, argv)
    print(elemwise_report(run(args, "elemwise")))
    return 0


def main_gemm(argv: list[str] | None = None) -> int:
    """``python -m bench gemm [--quick]``."""
    args = common.parse("python -m bench gemm", __doc__, argv)
    print(gemm_report(run(args, "gemm")))
    return 0
