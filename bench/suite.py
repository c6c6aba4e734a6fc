"""Orchestration shared by the workload benchmarks: which peers run, shared data, rounds.

Every measurement runs in a fresh worker process (``bench.worker``). Variants run
round-robin ``rounds`` times and the best of each metric is kept, so that a burst of load
from other processes on the machine hurts all frameworks alike rather than one of them.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from bench import common

_DATA: dict = {}  # n_batches -> (path, source description), one temp file per process


def shared_data(n_batches: int) -> tuple[str, str]:
    """The ``bench.data`` file holding at least ``n_batches`` timed batches, made once."""
    from bench import data
    for n, found in _DATA.items():
        if n >= n_batches:
            return found
    tmp = tempfile.mkdtemp(prefix="ember-bench-")
    atexit.register(shutil.rmtree, tmp, True)
    path = os.path.join(tmp, "inputs.npz")
    found = (path, data.prepare(path, n_batches))
    _DATA[n_batches] = found
    return found


def variants(args, with_ember_compile: bool = True, torch_compile: bool = True) -> list[dict]:
    """The rows to measure: dicts of name, fw, variant, python (None: this interpreter),
    or an ``error`` saying why a peer is skipped."""
    backend = common.ember_backend(args.backend)
    rows = [dict(name="numpy (by hand)", fw="numpy", variant="eager"),
            dict(name="ember eager", fw="ember", variant="eager"),
            dict(name=f"ember hybridize[{backend}]", fw="ember", variant="hybridize",
                 key="hybridize")]
    if with_ember_compile:
        rows.append(dict(name=f"ember compile[{backend}]", fw="ember", variant="compile",
                         key="compile"))
    quick = "skipped with --quick (no target depends on it)"
    if not args.no_torch and common.has_module("torch"):
        rows.append(dict(name="torch eager", fw="torch", variant="eager"))
        if torch_compile:
            rows.append(dict(name="torch.compile", fw="torch", variant="compile",
                             **({"error": quick} if args.quick else {})))
    else:
        rows.append(dict(name="torch", fw="torch", variant="eager",
                         error="skipped (--no-torch or not installed)"))
    if not args.no_jax and common.has_module("jax"):
        rows.append(dict(name="jax jit", fw="jax", variant="jit",
                         **({"error": quick} if args.quick else {})))
    else:
        rows.append(dict(name="jax", fw="jax", variant="jit",
                         error="skipped (--no-jax or not installed)"))
    why = "skipped: " + (common.check_mxnet(args.mxnet_python) or "") if not args.quick \
        else quick
    rows.append(dict(name="mxnet 1.9.1 hybridize", fw="mxnet", variant="hybridize",
                     python=args.mxnet_python,
                     **({"error": why} if why != "skipped: " else {})))
    for r in rows:
        r.setdefault("python", None)
    return rows


_HIGHER = ("train_best", "train_median", "infer_best", "gbps_best", "gbps_median",
           "gflops_best", "gflops_median")
_LOWER = ("latency1_us", "first_step_s", "first_step_warm_s", "first_step_sync_s",
          "first_step_warm_sync_s", "import_s")


def _merge(old: dict | None, new: dict) -> dict:
    """Keep the best of each timing over rounds; everything else from the first round."""
    if old is None or old.get("error"):
        return new
    if new.get("error"):
        return old
    out = dict(old)
    for keys, best in ((_HIGHER, max), (_LOWER, min)):
        for k in keys:   # (None: a worker that measured nothing there)
            if new.get(k) is not None and old.get(k) is not None:
                out[k] = best(old[k], new[k])
            elif new.get(k) is not None:
                out[k] = new[k]
    return out


def measure(rows: list[dict], workload: str, data: str, opts: dict, rounds: int,
            timeout: float, warm_first_step: bool = False) -> list[dict]:
    """Run ``workload`` for each row, ``rounds`` times round-robin; merge into the rows.

    ember rows get a fresh ``EMBER_CACHE_DIR`` per round, and a fresh ``NUMBA_CACHE_DIR``
    in it (numba's cache of ember's own modules, as after an install): their first step is
    cold, but for the library kernels ``make`` prebuilt into the install
    (``runtime.prebuilt``); with ``warm_first_step`` a second process then reuses both (warm).
    """
    results: dict = {}
    for _ in range(rounds):
        for r in rows:
            if r.get("error"):
                continue
            env = None
            cache = None
            if r["fw"] == "ember":
                cache = tempfile.mkdtemp(prefix="ember-bench-cache-")
                env = dict(os.environ, EMBER_CACHE_DIR=cache,
                           NUMBA_CACHE_DIR=os.path.join(cache, "numba"))
            o = dict(opts, backend=common.ember_backend(opts.get("backend")))
            res = common.run_worker(r["fw"], workload, r["variant"], data, o, r["python"],
                                    env, timeout)
            if warm_first_step and cache and not res.get("error"):
                warm = common.run_worker(r["fw"], "first_step", r["variant"], data, o,
                                         r["python"], env, timeout)
                res["first_step_warm_s"] = warm.get("first_step_s")
                if warm.get("first_step_sync_s") is not None:   # (the conv nets' workload)
                    res["first_step_warm_sync_s"] = warm["first_step_sync_s"]
            if cache:
                shutil.rmtree(cache, ignore_errors=True)
            results[r["name"]] = _merge(results.get(r["name"]), res)
    return [{**r, **results.get(r["name"], {})} for r in rows]


def loss_check(rows: list[dict], keys=("loss0", "loss1"), tol: float = 1e-4) -> str:
    """Lines comparing each row's first-step losses with NumPy's; flags |diff| > tol."""
    ref = next((r for r in rows if r["fw"] == "numpy" and "loss0" in r), None)
    if ref is None:
        return "correctness: no NumPy losses to compare with"
    lines = [f"correctness: losses of step 1 (before any update) and step 2 (after one SGD "
             f"step) against NumPy's {ref['loss0']:.6f} / {ref['loss1']:.6f}:"]
    for r in rows:
        if "loss0" not in r:
            continue
        diffs = [abs(r[k] - ref[k]) for k in keys]
        flag = "ok" if max(diffs) <= tol else f"DISAGREES (> {tol:g})"
        lines.append(f"  {r['name']:<28}" + "".join(f"{r[k]:>12.6f}" for k in keys)
                     + f"  max diff {max(diffs):.1e}  {flag}")
    return "\n".join(lines)


def ratio_table(rows: list[dict], key: str, title: str, lower_is_better: bool = False) -> str:
    """Speed of each ember row relative to each peer row (> 1: ember is faster)."""
    ember = [r for r in rows if r["fw"] == "ember"]
    peers = [r for r in rows if r["fw"] != "ember" and isinstance(r.get(key), float)]
    if not peers:
        return f"{title}: no peer measured"
    w = max(len(r["name"]) for r in ember) + 2
    lines = [f"{title} (speed ember/peer, > 1 means ember is faster)",
             f"{'':<{w}}" + "".join(f"{p['name'][:18]:>20}" for p in peers)]
    for e in ember:
        cells = []
        for p in peers:
            q = common.ratio(p[key], e.get(key)) if lower_is_better else \
                common.ratio(e.get(key), p[key])
            cells.append(f"{q:>19.2f}x" if q is not None else f"{'n/a':>20}")
        lines.append(f"{e['name']:<{w}}" + "".join(cells))
    return "\n".join(lines)


def find(rows: list[dict], fw: str, key: str | None = None) -> dict:
    """The row of framework ``fw`` (and ember variant ``key``), or {}."""
    return next((r for r in rows if r["fw"] == fw and (key is None or r.get("key") == key)), {})
