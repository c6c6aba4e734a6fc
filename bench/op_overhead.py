"""Eager op overhead: ember against NumPy (and PyTorch eager when installed), same run.

Tiny ops measure what dispatch costs on top of the NumPy kernel (DESIGN.md s.3: keep it
cheap); the 256x256 matmul shows the overhead vanishing behind real work. Each figure is the
best of ``repeat`` timeit runs, in microseconds per call.
"""
from __future__ import annotations

import argparse
import importlib.util
import timeit

import numpy as np

SHAPE, MATMUL_N = (2, 3), 256
CASES = ("x + 1", "relu(x)", "x.sum()", "dot 256x256")


def _ember_ops(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict:
    import ember as mx
    xe, ae, be = mx.nd.array(x), mx.nd.array(a), mx.nd.array(b)
    return dict(zip(CASES, (lambda: xe + 1, lambda: mx.nd.relu(xe), lambda: xe.sum(),
                            lambda: mx.nd.dot(ae, be)), strict=True))


def _numpy_ops(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict:
    return dict(zip(CASES, (lambda: x + 1, lambda: np.maximum(x, 0), lambda: x.sum(),
                            lambda: np.dot(a, b)), strict=True))


def _torch_ops(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict:
    import torch
    xt, at, bt = (torch.from_numpy(v.copy()) for v in (x, a, b))
    return dict(zip(CASES, (lambda: xt + 1, lambda: torch.relu(xt), lambda: xt.sum(),
                            lambda: torch.mm(at, bt)), strict=True))


def has_torch() -> bool:
    """Whether PyTorch can be imported here."""
    return importlib.util.find_spec("torch") is not None


def time_call(fn, number: int | None = None, repeat: int = 5, budget_s: float = 0.1) -> float:
    """Best microseconds per call of ``fn()`` over ``repeat`` runs of ``number`` calls.

    ``number=None`` picks it so that one run takes about ``budget_s`` seconds.
    """
    timer = timeit.Timer(fn)
    if number is None:
        per_call = max(timer.timeit(3) / 3, 1e-8)
        number = max(1, int(budget_s / per_call))
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e6


def run(number: int | None = None, repeat: int = 5, torch: bool | None = None) -> list[dict]:
    """One row per case: microseconds per call for each framework, and ember/NumPy.

    A framework whose op fails (e.g. not defined yet) gets the error text instead of a time.
    """
    rng = np.random.default_rng(0)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    a, b = (rng.standard_normal((MATMUL_N, MATMUL_N)).astype(np.float32) for _ in range(2))
    frameworks = {"ember": _ember_ops, "numpy": _numpy_ops}
    if has_torch() if torch is None else torch:
        frameworks["torch"] = _torch_ops
    ops = {name: make(x, a, b) for name, make in frameworks.items()}
    rows = []
    for case in CASES:
        row = {"case": case}
        for name, table in ops.items():
            try:
                table[case]()  # warm up, and fail here rather than inside timeit
                row[name] = time_call(table[case], number, repeat)
            except Exception as e:  # a missing op is a result to show, not a crash
                row[name] = f"{type(e).__name__}: {e}"
        ok = all(isinstance(row[k], float) for k in ("ember", "numpy"))
        row["ratio"] = row["ember"] / row["numpy"] if ok else None
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    """The rows as a fixed-width text table (times in microseconds)."""
    names = [k for k in ("ember", "numpy", "torch") if k in rows[0]]
    lines = [f"{'op':<14}" + "".join(f"{n + ' us':>12}" for n in names) + f"{'ember/numpy':>13}"]
    notes = []
    for r in rows:
        cells = []
        for n in names:
            if isinstance(r[n], float):
                cells.append(f"{r[n]:>12.2f}")
            else:
                cells.append(f"{'n/a':>12}")
                notes.append(f"  {r['case']} ({n}): {r[n]}")
        ratio = f"{r['ratio']:>12.1f}x" if r["ratio"] is not None else f"{'n/a':>13}"
        lines.append(f"{r['case']:<14}" + "".join(cells) + ratio)
    return "\n".join(lines + (["failures:"] + notes if notes else []))


def main(argv: list[str] | None = None) -> int:
    """Print the table; ``--number``/``--repeat`` set timeit's loop sizes."""
    p = argparse.ArgumentParser(prog="python -m bench.op_overhead", description=__doc__)
    p.add_argument("--number", type=int, default=None, help="calls per run (default: auto)")
    p.add_argument("--repeat", type=int, default=None, help="runs; the best one counts")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    p.add_argument("--quick", action="store_true", help="3 runs of ~0.1 s per case")
    args, _ = p.parse_known_args(argv)  # options of the other benchmarks are ignored
    args.repeat = args.repeat or (3 if args.quick else 5)
    rows = run(args.number, args.repeat, torch=False if args.no_torch else None)
    print(f"eager op overhead, float32, best of {args.repeat} (microseconds per call)")
    print(format_table(rows))
    if "torch" not in rows[0]:
        print("(PyTorch not installed: its column is skipped)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
