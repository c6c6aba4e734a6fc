"""Convolutional networks against PyTorch eager and MXNet 1.9.1 hybridized, same weights.

``python -m bench resnet``: ResNet-18 v1 at 224x224 (batch-1 inference latency, batch-16
inference img/s, batch-16 training img/s with SGD + momentum, first training step).
``python -m bench mobilenet``: MobileNet 1.0 inference img/s at batch 16.
``python -m bench densenet``: DenseNet-121 inference img/s at batch 16.
``python -m bench firststep``: ResNet-18's and ResNet-50's build + first training step at batch
16 in a fresh process; ember with a fresh ``EMBER_CACHE_DIR`` (cold) and again in a second process
on the same directory (warm).

Rows: ember imperative, ember ``hybridize()``, PyTorch eager (``bench.torch_convnets``, plain
``torch.nn``) when importable, MXNet 1.9.1 hybridized (its own model zoo) through
``--mxnet-python``/``EMBER_BENCH_MXNET_PYTHON``. Weights and inputs are generated identically
in every worker (``bench.convnets``); the losses of the first two steps (or the untrained
logits) are compared with ember imperative's. ``--smoke`` is for the test suite only: 32x32
images, batch 2, ember imperative only, one iteration.
"""
from __future__ import annotations

from bench import common, suite

FULL = {"size": 224, "batch": 16, "plan": {"warmup": 2, "iters": 5}, "rounds": 2}
QUICK = {"size": 224, "batch": 16, "plan": {"warmup": 1, "iters": 2}, "rounds": 1}
SMOKE = {"size": 32, "batch": 2, "plan": {"warmup": 0, "iters": 1}, "rounds": 1}


def parse(prog: str, argv: list[str] | None):
    """The shared options plus ``--smoke``."""
    p = common.parser(prog, __doc__)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for the test suite")
    args, _ = p.parse_known_args(argv)
    return args


def config(args) -> dict:
    """FULL, QUICK or SMOKE."""
    return SMOKE if args.smoke else QUICK if args.quick else FULL


def rows_for(args) -> list[dict]:
    """ember imperative and hybridize, torch eager, mxnet hybridize (or why each is
    skipped)."""
    backend = common.ember_backend(args.backend)
    rows = [dict(name="ember imperative", fw="ember", variant="eager", key="eager"),
            dict(name=f"ember hybridize[{backend}]", fw="ember", variant="hybridize",
                 key="hybridize")]
    smoke = {"error": "skipped with --smoke"} if args.smoke else {}
    if smoke:
        rows[1].update(smoke)
    if not args.no_torch and common.has_module("torch"):
        rows.append(dict(name="torch eager", fw="torch", variant="eager", **smoke))
    else:
        rows.append(dict(name="torch", fw="torch", variant="eager",
                         error="skipped (--no-torch or not installed)"))
    why = common.check_mxnet(args.mxnet_python)
    rows.append(dict(name="mxnet 1.9.1 hybridize", fw="mxnet", variant="hybridize",
                     python=args.mxnet_python,
                     **({"error": f"skipped: {why}"} if why else smoke)))
    for r in rows:
        r.setdefault("python", None)
    return rows


def agreement(rows: list[dict], tol: float = 1e-3) -> str:
    """Lines comparing each row's losses (or untrained logits) and parameter order with
    ember imperative's; relative differences above ``tol`` are flagged."""
    ref = rows[0]
    keys = [k for k in ("loss0", "loss1") if k in ref] or (["logits0"] if "logits0" in ref
                                                           else [])
    if not keys:
        return "correctness: ember imperative measured nothing to compare with"
    lines = [f"correctness against ember imperative ({', '.join(keys)}; rel. tol {tol:g}; "
             "BN on a batch of 16 amplifies float32 rounding):"]
    for r in rows[1:]:
        if not all(k in r for k in keys):
            continue
        a = [v for k in keys for v in (r[k] if k == "logits0" else [r[k]])]
        b = [v for k in keys for v in (ref[k] if k == "logits0" else [ref[k]])]
        scale = max(1.0, *(abs(v) for v in b))
        diff = max(abs(x - y) for x, y in zip(a, b, strict=True)) / scale
        same = r.get("param_sig") == ref.get("param_sig")
        flag = "ok" if diff <= tol and same else \
            ("DISAGREES" if same else "DIFFERENT PARAMETERS")
        lines.append(f"  {r['name']:<28} max rel diff {diff:.1e}  {flag}")
    return "\n".join(lines)


def _measure(args, model: str, workload: str, extra: dict, warm: bool = False) -> list[dict]:
    cfg = config(args)
    opts = {"model": model, "size": cfg["size"], "batch": cfg["batch"], "plan": cfg["plan"],
            "backend": args.backend, **extra}
    return suite.measure(rows_for(args), workload, "-", opts, cfg["rounds"], args.timeout,
                         warm_first_step=warm)


def _title(what: str, args) -> str:
    cfg = config(args)
    p = cfg["plan"]
    return (f"{what}, {cfg['size']}x{cfg['size']}, batch {cfg['batch']}, float32, "
            f"{common.THREADS} threads, random weights and images\ntimed: {p['iters']} "
            f"iterations after {p['warmup']} warm-up, best of {cfg['rounds']} round(s)")


def _mx_speedup(rows, key: str, lower: bool = False):
    hyb, mx = suite.find(rows, "ember", "hybridize"), suite.find(rows, "mxnet")
    a, b = hyb.get(key), mx.get(key)
    return common.ratio(b, a) if lower else common.ratio(a, b)


RESNET_COLUMNS = [("latency1_us", "b1 us", ".0f"), ("infer_best", "infer img/s", ".1f"),
                  ("train_best", "train img/s", ".2f"), ("train_median", "median", ".2f"),
                  ("train_mem_mb", "train MiB", ".0f"), ("first_step_s", "1st step s", ".2f"),
                  ("import_s", "import s", ".2f")]


def main_resnet(argv: list[str] | None = None) -> int:
    """ResNet-18 v1: latency, inference and training; ratios; records the targets."""
    args = parse("python -m bench resnet", argv)
    rows = _measure(args, "resnet18_v1", "convnet", {"latency": True})
    name = suite.find(rows, "ember", "hybridize").get("name")
    print("\n".join([
        common.table(_title("ResNet-18 v1 (model zoo)", args), RESNET_COLUMNS, rows), "",
        agreement(rows), "",
        suite.ratio_table(rows, "latency1_us", "ResNet-18 batch-1 latency", lower_is_better=True),
        suite.ratio_table(rows, "infer_best", "ResNet-18 inference img/s"),
        suite.ratio_table(rows, "train_best", "ResNet-18 training img/s (SGD + momentum)")]))
    common.check(f"ResNet-18 train {name} / mxnet", _mx_speedup(rows, "train_best"), ">=", 1.0)
    common.check(f"ResNet-18 infer {name} / mxnet", _mx_speedup(rows, "infer_best"), ">=", 1.0)
    common.check(f"ResNet-18 b1 latency speed {name} / mxnet",
                 _mx_speedup(rows, "latency1_us", lower=True), ">=", 1.0)
    return 0


def main_mobilenet(argv: list[str] | None = None) -> int:
    """MobileNet 1.0 inference at batch 16; ratios; records the target."""
    args = parse("python -m bench mobilenet", argv)
    rows = _measure(args, "mobilenet1_0", "convnet", {"train": False})
    name = suite.find(rows, "ember", "hybridize").get("name")
    cols = [("infer_best", "infer img/s", ".1f"), ("infer_median", "median", ".1f"),
            ("import_s", "import s", ".2f")]
    print("\n".join([
        common.table(_title("MobileNet 1.0 inference (model zoo)", args), cols, rows), "",
        agreement(rows), "", suite.ratio_table(rows, "infer_best", "MobileNet 1.0 img/s")]))
    common.check(f"MobileNet infer {name} / mxnet", _mx_speedup(rows, "infer_best"), ">=", 1.0)
    return 0


def main_densenet(argv: list[str] | None = None) -> int:
    """DenseNet-121 inference at batch 16 (no target of its own: the issue's table had it
    2.1x slower than MXNet)."""
    args = parse("python -m bench densenet", argv)
    if args.smoke:   # (its 7x7 average pool needs 224x224 images)
        print("densenet: nothing to smoke-test at 32x32")
        return 0
    rows = _measure(args, "densenet121", "convnet", {"train": False})
    cols = [("infer_best", "infer img/s", ".1f"), ("infer_median", "median", ".1f"),
            ("import_s", "import s", ".2f")]
    print("\n".join([
        common.table(_title("DenseNet-121 inference (model zoo)", args), cols, rows), "",
        agreement(rows), "", suite.ratio_table(rows, "infer_best", "DenseNet-121 img/s")]))
    return 0


def _prebuilt_line() -> str:
    """What the cold ember rows start from besides an empty kernel cache."""
    import json

    from ember.runtime import prebuilt
    d = prebuilt.directory()
    try:
        n = len(json.loads((d / "MANIFEST.json").read_text())["kernels"]) if d else 0
    except (OSError, ValueError, KeyError):
        n = 0
    if n:
        return (f"ember's cold rows start from the install's {n} prebuilt library kernels "
                "(`ember prebuild`, run by make; EMBER_PREBUILT=0 measures without)")
    return "no prebuilt kernels (`make prebuild`): ember's cold rows compile every kernel"


# (model, name, cold target, warm target in seconds; None: no target)
FIRST_STEP_MODELS = (("resnet18_v1", "ResNet-18", 3.0, 0.5),
                     ("resnet50_v1", "ResNet-50", None, 1.0))


def main_firststep(argv: list[str] | None = None) -> int:
    """ResNet-18's and ResNet-50's first training step, cold and warm kernel cache; records
    the targets (ResNet-50's: warm only; with ``--smoke`` ResNet-18 only)."""
    args = parse("python -m bench firststep", argv)
    cols = [("first_step_s", "cold s", ".2f"), ("first_step_warm_s", "warm s", ".2f"),
            ("first_step_sync_s", "done s", ".2f"), ("build_s", "build s", ".2f"),
            ("import_s", "import s", ".2f")]
    out = []
    for model, name, cold_goal, warm_goal in FIRST_STEP_MODELS[:1 if args.smoke else None]:
        rows = _measure(args, model, "first_step", {"leave_cache_complete": True}, warm=True)
        title = (_title(f"{name} v1 first training step (build + 1 step)",
                        args).splitlines()[0]
                 + "\ncold: fresh process and EMBER_CACHE_DIR; warm: a second process on the "
                 "same directory once the first (after one more, untimed step) finished the "
                 "kernels it compiles in the background (ember only); done: until the step "
                 "has run (MXNet returns the loss before its engine has run the backward "
                 "pass and the update)\n" + _prebuilt_line())
        out += [common.table(title, cols, rows), "", agreement(rows), "",
                suite.ratio_table(rows, "first_step_s", f"{name} first step, cold",
                                  lower_is_better=True), ""]
        for key in ("eager", "hybridize"):
            e = suite.find(rows, "ember", key)
            if cold_goal is not None:
                common.check(f"{name} first step cold, {e.get('name')}",
                             e.get("first_step_s"), "<", cold_goal, " s")
            common.check(f"{name} first step warm, {e.get('name')}",
                         e.get("first_step_warm_s"), "<", warm_goal, " s")
    print("\n".join(out))
    return 0
