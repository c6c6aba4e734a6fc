"""The benchmarks run end to end with a handful of iterations and report sane numbers."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common, data, op_overhead, suite, worker  # noqa: E402
from bench.__main__ import main as bench_main  # noqa: E402

TINY = {"plan": {"warmup": 1, "chunks": 2, "chunk": 2}, "repeat": 1}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("bench") / "inputs.npz")
    assert data.prepare(path, 8, synthetic=True).startswith("SYNTHETIC")
    return path


def test_op_overhead_rows_and_table():
    rows = op_overhead.run(number=10, repeat=2, torch=False)
    assert [r["case"] for r in rows] == list(op_overhead.CASES)
    for r in rows:
        assert isinstance(r["numpy"], float) and r["numpy"] > 0
        if isinstance(r["ember"], float):
            assert r["ratio"] == r["ember"] / r["numpy"]
    table = op_overhead.format_table(rows)
    assert table.splitlines()[0].split()[:3] == ["op", "ember", "us"]


def test_time_call_counts_microseconds():
    assert 0 < op_overhead.time_call(lambda: None, number=100, repeat=2) < 1000


@pytest.mark.parametrize("workload", ["mlp", "lenet"])
def test_ember_and_numpy_agree_on_the_first_steps(inputs, workload):
    rows = [{"name": fw, "fw": fw, **worker.measure(fw, workload, "eager", inputs, TINY)}
            for fw in ("numpy", "ember")]
    for r in rows:
        assert r["train_best"] > 0 and r["first_step_s"] > 0 and r["rss_peak_mb"] > 0
    assert "DISAGREES" not in suite.loss_check(rows)
    if workload == "mlp":
        assert 0 <= rows[0]["accuracy"] <= 1 and rows[0]["latency1_us"] > 0
    rows[1]["loss1"] += 1e-3  # a wrong update must be caught
    assert "DISAGREES" in suite.loss_check(rows)


def test_kernels_report_bandwidth_and_flops():
    copy = worker.measure("numpy", "elemwise", "copy", "-", {"repeat": 1})
    expr = worker.measure("numpy", "elemwise", "eager", "-", {"repeat": 1})
    assert copy["gbps_best"] > 0 and copy["max_err"] == 0 and expr["max_err"] < 1e-5
    gemm = worker.measure("numpy", "gemm", "eager", "-", {"repeat": 1})
    assert gemm["gflops_best"] > 0 and gemm["rel_err"] < 1e-5


def test_worker_process_reports_errors_as_results():
    res = common.run_worker("numpy", "no_such_workload", "eager", "-", {}, timeout=60)
    assert "error" in res


def test_summary_verdicts():
    common.clear_summary()
    common.check("fast", 2.0, ">=", 1.0)
    common.check("slow", 50.0, "<", 40, " us")
    common.check("absent", None, ">=", 1.0)
    text = common.summary()
    assert [line.split()[-1] for line in text.splitlines()[2:]] == ["MET", "missed", "measured"]
    common.clear_summary()


def test_bench_main_rejects_unknown_names(capsys):
    assert bench_main(["no_such_bench"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["resnet", "mobilenet", "firststep", "contended"])
def test_conv_and_contended_benches_run_tiny(name, capsys):
    common.clear_summary()
    assert bench_main([name, "--smoke", "--no-torch", "--mxnet-python", ""]) == 0
    out = capsys.readouterr().out
    assert "ember imperative" in out and "error" not in out.lower().replace("errors", "")
    assert "== summary: targets" in out
    if name == "resnet":
        assert "train MiB" in out
    common.clear_summary()


def test_conv_nets_share_weights_and_agree():
    from bench import convbench, convnets
    opts = {"model": "mobilenet1_0", "size": 32, "batch": 2, "train": False,
            "plan": {"warmup": 0, "iters": 1}}
    a = worker.measure("ember", "convnet", "eager", "-", opts)
    assert a["infer_best"] > 0 and len(a["logits0"]) == 8
    x, y = convnets.batch(0, 2, 32)
    assert x.shape == (2, 3, 32, 32) and (convnets.batch(0, 2, 32)[0] == x).all()
    assert convnets.param_value("var", (4,), 3).min() > 0.85
    rows = [{"name": "ember imperative", **a}, {"name": "peer", **a}]
    assert "ok" in convbench.agreement(rows)
    rows[1] = {**a, "name": "peer", "logits0": [v + 0.01 for v in a["logits0"]]}
    assert "DISAGREES" in convbench.agreement(rows)
    rows[1] = {**a, "name": "peer", "param_sig": "other"}
    assert "DIFFERENT PARAMETERS" in convbench.agreement(rows)


def test_rounds_merge_keeps_each_best_and_skips_what_a_round_did_not_measure():
    """(A round whose worker measured no warm first step left None: the full mlp bench of
    two rounds failed comparing None with None.)"""
    from bench import suite
    old = {"train_best": 1.0, "first_step_s": 2.0, "first_step_warm_sync_s": None}
    new = {"train_best": 2.0, "first_step_s": None, "first_step_warm_sync_s": 1.5}
    assert suite._merge(old, new) == {"train_best": 2.0, "first_step_s": 2.0,
                                      "first_step_warm_sync_s": 1.5}
