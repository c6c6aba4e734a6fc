"""bench/gpu.py: skips with its reason without a device; the report's ratios and targets; the
ember GPU workloads run end to end under numba's CUDA simulator at toy sizes (slow)."""
import argparse
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import common, gpu  # noqa: E402


def test_skips_without_a_device_and_says_why(capsys):
    assert gpu.main([]) == 0
    out = capsys.readouterr().out
    assert "gpu: skipped: no CUDA device ember can use (" in out and "ember[cuda]" in out


def test_report_ratios_and_targets():
    common.clear_summary()
    rows = [{"name": "ember (cuda)", "device": "cuda", "mlp128_train": 1.0e6,
             "mlp4096_train": 12e6, "latency1_us": 20.0, "fused_gbs": 2700.0,
             "copy_gbs": 2900.0, "fused_pct": 100 * 2700 / 2900, "resnet_train": 900.0,
             "first_step_warm_s": 0.5},
            {"name": "PyTorch eager", "device": "NVIDIA H100", "mlp128_train": 1.25e5,
             "latency1_us": 50.0, "resnet_train": 1000.0},
            {"name": "JAX jit", "mlp4096_train": 5e6}]
    text = gpu.report(rows, argparse.Namespace(quick=False))
    assert "vs PyTorch eager: MLP b128 8.00x, R18 train 0.90x, b1 latency 2.50x" in text
    assert "vs JAX jit: MLP b4096 2.40x" in text
    verdicts = {s["label"]: s["ok"] for s in common._SUMMARY}
    assert verdicts == {
        "GPU MLP b128 train, ember / PyTorch eager": True,
        "GPU MLP b4096 train, ember / JAX jit": True,
        "GPU MLP batch-1 latency, ember": True,
        "GPU fused expression, % of copy bandwidth": True,
        "GPU ResNet-18 train, ember / PyTorch eager": False,
        "GPU ResNet-18 first step, warm cache": True}
    common.clear_summary()


@pytest.mark.slow
def test_ember_workloads_under_the_simulator():
    opts = {"mlp_batches": [2, 4], "steps": 1, "latency_calls": 1, "fused_n": 256,
            "fused_calls": 1, "resnet": False, "hidden": 4, "n_in": 6}
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    r = subprocess.run([sys.executable, "-m", "bench.gpu_work", "ember", json.dumps(opts)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    line = [x for x in r.stdout.splitlines() if x.startswith(common.MARK)][-1]
    res = json.loads(line[len(common.MARK):])
    assert res["device"] == "simulator" and "errors" not in res, res
    for key in ("mlp2_train", "mlp4_train", "latency1_us", "fused_gbs", "copy_gbs"):
        assert res[key] > 0, key
