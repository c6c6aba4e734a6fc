"""GPU benchmark (issue 14): ember's CUDA backend against PyTorch eager, torch.compile and
JAX jit, in one run on one device, each framework in its own process (``bench.gpu_work``).

Measured: the seed MLP (784-256-10, SGD) training at batch 128 and 4096, batch-1 MLP
inference latency, the fused expression ``relu(x*1.5-0.25)*0.5 + sigmoid(x) - tanh(x)*x`` on
64Mi float32 against a device-to-device copy's bandwidth, ResNet-18 v1 training and
inference (batch 64, 224x224), and ember's ResNet-18 first step with a cold and a warm kernel
cache. Prints the ratios and the issue's targets. Without a CUDA device (or without the
``cuda`` extra) it says that it skipped and why. ``--quick``: small sizes, no ResNet.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time

from bench import common

QUICK = {"mlp_batches": [128, 4096], "steps": 10, "latency_calls": 50,
         "fused_n": 16 * 2**20, "fused_calls": 5, "resnet": False}
COLUMNS = [("mlp128_train", "MLP b128/s", ".0f"), ("mlp4096_train", "MLP b4096/s", ".0f"),
           ("latency1_us", "b1 us", ".1f"), ("fused_gbs", "fused GB/s", ".0f"),
           ("copy_gbs", "copy GB/s", ".0f"), ("fused_pct", "% of copy", ".1f"),
           ("resnet_train", "R18 train/s", ".1f"), ("resnet_infer", "R18 infer/s", ".1f"),
           ("first_step_s", "1st step s", ".2f"), ("first_step_warm_s", "warm 1st s", ".2f")]
ISSUE = ("issue 14's H100 figures: MLP b128 PyTorch 134k/s, torch.compile 122k, JAX 125k; "
         "b4096 PyTorch 4.0M, JAX 5.5M; b1 latency PyTorch 53 us; copy 2.93 TB/s")


def device_reason() -> str:
    """'' when ember sees a real CUDA device, else why the benchmark skips."""
    try:
        from ember.backends import cuda_device
    except Exception as e:  # ember itself broken: say so rather than crash the suite
        return f"ember.backends.cuda_device cannot be imported: {e}"
    if cuda_device.device_count() == 0:
        return cuda_device.unavailable_reason()
    if cuda_device.is_simulator():
        return "numba's CUDA simulator is not a GPU (unset NUMBA_ENABLE_CUDASIM to benchmark)"
    return ""


def _env(cache_dir: str | None = None) -> dict:
    env = common.thread_env()
    env.pop("JAX_PLATFORMS", None)  # the device machine's JAX uses its GPU
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    if cache_dir:
        env["EMBER_CACHE_DIR"] = cache_dir
    return env


def run_one(fw: str, opts: dict, timeout: float, cache_dir: str | None = None) -> dict:
    """One framework's results from its own process (``{"error": ...}`` when it failed)."""
    cmd = [sys.executable, "-m", "bench.gpu_work", fw, json.dumps(opts)]
    tic = time.perf_counter()
    try:
        out = subprocess.run(cmd, cwd=common.ROOT, env=_env(cache_dir), capture_output=True,
                             text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(out.stdout.splitlines()):
        if line.startswith(common.MARK):
            res = json.loads(line[len(common.MARK):])
            res["process_s"] = time.perf_counter() - tic
            return res
    tail = (out.stderr.strip() or out.stdout.strip()).splitlines()[-1:] or ["no output"]
    return {"error": f"exit {out.returncode}: {tail[0][:300]}"}


def run(args) -> list[dict]:
    """Every available framework's row."""
    opts = dict(QUICK) if args.quick else {}
    rows = []
    wanted = [("ember", "ember (cuda)"), ("torch", "PyTorch eager"),
              ("torch_compile", "torch.compile"), ("jax", "JAX jit")]
    for fw, name in wanted:
        mod = {"torch": "torch", "torch_compile": "torch", "jax": "jax"}.get(fw)
        if mod and (not common.has_module(mod) or getattr(args, f"no_{mod}", False)):
            rows.append({"name": name, "note": f"{mod} not installed (or skipped)"})
            continue
        row = {"name": name, **run_one(fw, opts, args.timeout)}
        if fw == "ember" and not args.quick:
            with tempfile.TemporaryDirectory(prefix="ember-gpu-cache-") as cache:
                cold = run_one("ember_first", opts, args.timeout, cache)
                warm = run_one("ember_first", opts, args.timeout, cache)
            row["first_step_s"] = cold.get("first_step_s")
            row["first_step_warm_s"] = warm.get("first_step_s")
            for r in (cold, warm):
                if r.get("error") or r.get("errors"):
                    row.setdefault("errors", {})["first_step"] = r.get("error") or r["errors"]
        if isinstance(row.get("fused_gbs"), float) and isinstance(row.get("copy_gbs"), float):
            row["fused_pct"] = 100 * row["fused_gbs"] / row["copy_gbs"]
        if row.get("errors"):
            row["note"] = "; ".join(f"{k}: {v}" for k, v in row["errors"].items())[:600]
        rows.append(row)
    return rows


def report(rows: list[dict], args) -> str:
    """The table, ember's ratios to each peer, and the targets (recorded for the summary)."""
    find = {r["name"]: r for r in rows}
    em = find.get("ember (cuda)", {})
    dev = next((r["device"] for r in rows if r.get("device") not in (None, "cuda")), "")
    title = (f"GPU benchmark on {dev or 'the CUDA device'}, float32, TF32 off"
             f"{' (--quick: smaller sizes, no ResNet)' if args.quick else ''}\n{ISSUE}")
    lines = [common.table(title, COLUMNS, rows), "", "ember / peer (higher is better; "
             "latency: peer / ember)"]
    for r in rows:
        if r is em or not any(k in r for k, _, _ in COLUMNS):
            continue
        parts = []
        for key, label in (("mlp128_train", "MLP b128"), ("mlp4096_train", "MLP b4096"),
                           ("resnet_train", "R18 train"), ("resnet_infer", "R18 infer")):
            v = common.ratio(em.get(key), r.get(key))
            if v is not None:
                parts.append(f"{label} {v:.2f}x")
        v = common.ratio(r.get("latency1_us"), em.get("latency1_us"))
        if v is not None:
            parts.append(f"b1 latency {v:.2f}x")
        lines.append(f"  vs {r['name']}: {', '.join(parts) or 'n/a'}")
    torch_row, jax_row = find.get("PyTorch eager", {}), find.get("JAX jit", {})
    common.check("GPU MLP b128 train, ember / PyTorch eager",
                 common.ratio(em.get("mlp128_train"), torch_row.get("mlp128_train")), ">=", 5)
    common.check("GPU MLP b4096 train, ember / JAX jit",
                 common.ratio(em.get("mlp4096_train"), jax_row.get("mlp4096_train")), ">=", 2)
    common.check("GPU MLP batch-1 latency, ember", em.get("latency1_us"), "<", 25.001, " us")
    pct = em.get("fused_pct")
    common.check("GPU fused expression, % of copy bandwidth", pct, ">=", 90, "%")
    common.check("GPU ResNet-18 train, ember / PyTorch eager",
                 common.ratio(em.get("resnet_train"), torch_row.get("resnet_train")), ">=", 1.0)
    common.check("GPU ResNet-18 first step, warm cache", em.get("first_step_warm_s"), "<", 1.0,
                 " s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench gpu [--quick]``: run and print, or say why it skipped."""
    args = common.parse("python -m bench gpu", __doc__, argv)
    reason = device_reason()
    if reason:
        print(f"gpu: skipped: no CUDA device ember can use ({reason})")
        print("gpu: on a machine with an NVIDIA GPU: pip install 'ember[cuda]', then "
              "bench/gpu_check.sh")
        return 0
    print(report(run(args), args))
    return 0
