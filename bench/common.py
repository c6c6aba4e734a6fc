"""What every benchmark shares: thread pinning, options, worker subprocesses, tables, targets.

Only the standard library and NumPy are imported here, because the MXNet worker imports this
module too, under another interpreter (MXNet 1.9.1 needs NumPy < 1.24).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

THREADS = 2
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK = "@@BENCH-JSON@@ "  # a worker's result line on stdout
_SUMMARY: list[dict] = []  # filled by check(), printed by bench.__main__


def thread_env(threads: int = THREADS, env: dict | None = None) -> dict:
    """``env`` (default: ``os.environ``) with every framework's thread count set."""
    env = dict(os.environ if env is None else env)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    # XLA (JAX) ignores OMP_NUM_THREADS; it reads its intra-op pool size from XLA_FLAGS
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=true"
                        f" intra_op_parallelism_threads={threads}").strip()
    env["JAX_PLATFORMS"] = "cpu"
    return env


def pin_threads(threads: int = THREADS) -> None:
    """Set the thread variables in this process (call before importing any framework)."""
    os.environ.update(thread_env(threads))


def parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The options every benchmark module understands (unknown ones are ignored)."""
    p = argparse.ArgumentParser(prog=prog, description=doc)
    p.add_argument("--quick", action="store_true", help="a short run (the whole suite < 60 s)")
    p.add_argument("--backend", default=None,
                   help="ember backend for hybridize/compile (default: cpu if present, else "
                        "reference)")
    p.add_argument("--repeat", type=int, default=None, help="timed repeats (best/median)")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    p.add_argument("--no-jax", action="store_true", help="skip JAX even if installed")
    p.add_argument("--mxnet-python", default=os.environ.get("EMBER_BENCH_MXNET_PYTHON"),
                   help="interpreter with mxnet 1.9.1 (default: $EMBER_BENCH_MXNET_PYTHON)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per worker process")
    return p


def parse(prog: str, doc: str | None, argv: list[str] | None) -> argparse.Namespace:
    """Parse the shared options, ignoring the ones meant for other benchmarks."""
    args, _ = parser(prog, doc).parse_known_args(argv)
    return args


def ember_backend(requested: str | None = None) -> str:
    """The backend to compile with: ``requested``, else ``cpu`` once it exists, else
    ``reference``."""
    if requested:
        return requested
    import importlib.util
    try:
        found = importlib.util.find_spec("ember.backends.cpu") is not None
    except ImportError:
        found = False
    return "cpu" if found else "reference"


def has_module(name: str) -> bool:
    """Whether ``import name`` can work in this interpreter (without importing it)."""
    import importlib.util
    return importlib.util.find_spec(name) is not None


def check_mxnet(python: str | None) -> str | None:
    """Why the MXNet interpreter cannot be used, or None when it has mxnet 1.9.1."""
    if not python:
        return "no interpreter given (set EMBER_BENCH_MXNET_PYTHON)"
    try:
        out = subprocess.run([python, "-c", "import mxnet; print(mxnet.__version__)"],
                             capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{python}: {e}"
    version = out.stdout.strip().splitlines()[-1:] or [""]
    if out.returncode or not version[0].startswith("1.9"):
        return f"{python}: mxnet 1.9 not importable ({(out.stderr or out.stdout)[-200:]})"
    return None


def run_worker(fw: str, workload: str, variant: str, data: str, opts: dict,
               python: str | None = None, env: dict | None = None,
               timeout: float = 900) -> dict:
    """Run ``python -m bench.worker`` in a fresh process; its JSON result, or
    ``{"error": ...}`` when it failed (a missing framework is a result, not a crash)."""
    cmd = [python or sys.executable, "-m", "bench.worker", fw, workload, variant, data,
           json.dumps(opts)]
    tic = time.perf_counter()
    try:
        out = subprocess.run(cmd, cwd=ROOT, env=thread_env(env=env), capture_output=True,
                             text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(out.stdout.splitlines()):
        if line.startswith(MARK):
            res = json.loads(line[len(MARK):])
            res["process_s"] = time.perf_counter() - tic
            return res
    tail = (out.stderr.strip() or out.stdout.strip()).splitlines()[-1:] or ["no output"]
    return {"error": f"exit {out.returncode}: {tail[0][:300]}"}


def emit(result: dict) -> None:
    """Print a worker's result as the marked JSON line ``run_worker`` looks for."""
    print(MARK + json.dumps(result), flush=True)


def best_median(samples: list[float]) -> tuple[float, float]:
    """(min, median) of timings."""
    return min(samples), statistics.median(samples)


def timed_chunks(fn, n_chunks: int, sync=None) -> list[float]:
    """Seconds of each of ``n_chunks`` calls ``fn(i)``, ``sync()`` closing each timing."""
    times = []
    for i in range(n_chunks):
        tic = time.perf_counter()
        fn(i)
        if sync is not None:
            sync()
        times.append(time.perf_counter() - tic)
    return times


def fmt(v, spec: str = ".1f", width: int = 10) -> str:
    """A number right-aligned in ``width``, or ``n/a`` for None/strings."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return f"{'n/a' if not isinstance(v, str) or not v else v:>{width}}"
    return f"{v:>{width}{spec}}"


def table(title: str, columns: list[tuple[str, str, str]], rows: list[dict],
          first: str = "framework") -> str:
    """A text table: ``columns`` are (key, header, format spec); rows are dicts."""
    w = max([len(first)] + [len(r["name"]) for r in rows]) + 2
    head = f"{first:<{w}}" + "".join(f"{h:>{max(len(h) + 2, 10)}}" for _, h, _ in columns)
    lines = [title, head]
    for r in rows:
        cells = "".join(fmt(r.get(k), spec, max(len(h) + 2, 10)) for k, h, spec in columns)
        lines.append(f"{r['name']:<{w}}" + cells)
    notes = [f"  {r['name']}: {r['error']}" for r in rows if r.get("error")]
    notes += [f"  {r['name']}: {r['note']}" for r in rows if r.get("note")]
    return "\n".join(lines + (["notes:"] + notes if notes else []))


def ratio(a, b) -> float | None:
    """a/b when both are numbers (b non-zero), else None."""
    ok = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
    return a / b if ok and b else None


def check(label: str, value: float | None, op: str, target: float, unit: str = "x") -> None:
    """Record ``value op target`` (op ``>=`` or ``<``) for the final summary."""
    ok = None if value is None else (value >= target if op == ">=" else value < target)
    _SUMMARY.append({"label": label, "value": value, "op": op, "target": target,
                     "unit": unit, "ok": ok})


def summary() -> str:
    """The recorded target checks as a table (empty string when none were recorded)."""
    if not _SUMMARY:
        return ""
    w = max(len(s["label"]) for s in _SUMMARY) + 2
    lines = ["== summary: targets", f"{'target':<{w}}{'measured':>12}{'goal':>12}  verdict"]
    for s in _SUMMARY:
        val = "n/a" if s["value"] is None else f"{s['value']:.3g}{s['unit']}"
        verdict = {True: "MET", False: "missed", None: "not measured"}[s["ok"]]
        goal = s["op"] + format(s["target"], "g") + s["unit"]
        lines.append(f"{s['label']:<{w}}{val:>12}{goal:>12}  {verdict}")
    return "\n".join(lines)


def clear_summary() -> None:
    """Forget the recorded checks (between runs in one process, e.g. tests)."""
    _SUMMARY.clear()
