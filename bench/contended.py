"""The seed MLP's training speed with one busy process beside it, as a fraction of quiet.

``python -m bench contended``. For each row (ember imperative and hybridize, PyTorch eager,
MXNet 1.9.1 hybridized) the MLP training workload of ``bench.mlp`` runs in a worker process
quiet, then again while one other process spins a core (``while True: pass``); the rounds
alternate. The kept fraction is contended / quiet training samples/s (best chunk of each);
the target: ember keeps at least 60%. ``--smoke`` (tests only): a few synthetic batches,
ember imperative only.
"""
from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time

from bench import common, convbench, data, suite

PLANS = {"full": ({"warmup": 10, "chunks": 8, "chunk": 39}, 2),
         "quick": ({"warmup": 3, "chunks": 3, "chunk": 20}, 1),
         "smoke": ({"warmup": 1, "chunks": 2, "chunk": 2}, 1)}


def busy() -> subprocess.Popen:
    """Start one process that keeps a core busy until terminated."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.2)  # let it get scheduled
    return proc


def _data(args, plan: dict) -> str:
    n = 2 + plan["warmup"] + plan["chunks"] * plan["chunk"]
    if not args.smoke:
        return suite.shared_data(n)[0]
    tmp = tempfile.mkdtemp(prefix="ember-bench-")
    atexit.register(shutil.rmtree, tmp, True)
    path = os.path.join(tmp, "inputs.npz")
    data.prepare(path, n, synthetic=True)
    return path


def run(args) -> list[dict]:
    """Quiet and contended training samples/s per row; ``kept`` = their ratio."""
    plan, rounds = PLANS["smoke" if args.smoke else "quick" if args.quick else "full"]
    path = _data(args, plan)
    rows = [dict(r) for r in convbench.rows_for(args)]
    opts = {"plan": plan, "repeat": 1, "backend": common.ember_backend(args.backend),
            "train_only": True}
    for _ in range(rounds):
        for r in rows:
            if r.get("error"):
                continue
            for key in ("quiet", "contended"):
                cache = tempfile.mkdtemp(prefix="ember-bench-cache-")
                env = dict(os.environ, EMBER_CACHE_DIR=cache)
                spinner = busy() if key == "contended" else None
                try:
                    res = common.run_worker(r["fw"], "mlp", r["variant"], path, opts,
                                            r["python"], env, args.timeout)
                finally:
                    if spinner is not None:
                        spinner.terminate()
                        spinner.wait()
                    shutil.rmtree(cache, ignore_errors=True)
                if res.get("error"):
                    r["error"] = f"{key}: {res['error']}"
                    break
                r[key] = max(r.get(key, 0.0), res["train_best"])
    for r in rows:
        r["kept"] = common.ratio(r.get("contended"), r.get("quiet"))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run, print the table, record the target."""
    args = convbench.parse("python -m bench contended", argv)
    rows = run(args)
    plan, rounds = PLANS["smoke" if args.smoke else "quick" if args.quick else "full"]
    title = (f"seed MLP training with one busy process beside it, {common.THREADS} threads, "
             f"batch {data.BATCH}\ntimed: {plan['chunks']} chunks x {plan['chunk']} batches "
             f"after {plan['warmup']} warm-up, best of {rounds} round(s) each way")
    cols = [("quiet", "quiet/s", ".0f"), ("contended", "busy/s", ".0f"),
            ("kept", "kept", ".2f")]
    print(common.table(title, cols, rows))
    for key in ("eager", "hybridize"):
        e = suite.find(rows, "ember", key)
        common.check(f"MLP kept beside a busy process, {e.get('name')}", e.get("kept"),
                     ">=", 0.6)
    return 0
