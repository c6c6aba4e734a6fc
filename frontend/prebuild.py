"""``ember prebuild``: compile the kernels every network shares (``runtime.prebuilt``).

Runs the seed networks below twice, in two processes with empty kernel caches, at two sets
of shapes and attributes that share no value, and keeps the kernel modules both generated
(a kernel whose text holds a shape or an attribute differs between the two and is left out);
``ember.runtime.prebuilt`` says how a cold kernel cache adopts them.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ember.runtime import prebuilt

# Two sets of shapes and attributes with no value in common (image channels, the stem's
# kernel/stride/pad, pooling's window/stride/pad, classes, dense units; each network at a
# small and a large (batch, image size, widths): the large ones are big enough for the
# kernels split over threads, which are other modules than the small ones' whole kernels)
SHAPES = {
    "a": dict(chans=3, stem=(7, 2, 3), pool=(3, 2, 1), classes=10, units=24,
              scales=((2, 32, (8, 16)), (4, 130, (64, 128)))),
    "b": dict(chans=4, stem=(5, 3, 2), pool=(2, 1, 0), classes=7, units=20,
              scales=((3, 36, (6, 12)), (5, 160, (80, 160)))),
}


def _seed(shapes: dict) -> None:
    """Train and run the seed networks at ``shapes`` (in a child of :func:`build`)."""
    import numpy as np

    import ember as mx
    from ember import autograd, gluon, nd
    from ember.backends import cpu_gemm, cpu_tiered
    from ember.gluon import nn

    s = shapes

    class Residual(gluon.HybridBlock):
        """A residual block; ``skip_first``: ``skip + body`` (the model zoo's order) rather
        than ``body + skip``, which fuses into other kernels."""

        def __init__(self, width, stride, skip_first, **kw):
            super().__init__(**kw)
            self.skip_first = skip_first
            self.body = nn.HybridSequential()
            self.body.add(nn.Conv2D(width, 3, stride, 1, use_bias=False), nn.BatchNorm(),
                          nn.Activation("relu"), nn.Conv2D(width, 3, 1, 1, use_bias=False),
                          nn.BatchNorm())
            self.down = None
            if stride != 1:
                self.down = nn.HybridSequential()
                self.down.add(nn.Conv2D(width, 1, stride, use_bias=False), nn.BatchNorm())

        def hybrid_forward(self, F, x):
            if self.skip_first:
                skip = x if self.down is None else self.down(x)
                return F.Activation(skip + self.body(x), act_type="relu")
            body = self.body(x)
            return F.Activation(body + (x if self.down is None else self.down(x)),
                                act_type="relu")

    def convnet(w1, w2):
        k, st, pd = s["stem"]
        pk, ps, pp = s["pool"]
        net = nn.HybridSequential()
        net.add(nn.Conv2D(w1, k, st, pd, use_bias=False), nn.BatchNorm(), nn.Activation("relu"),
                nn.MaxPool2D(pk, ps, pp), Residual(w1, 1, True), Residual(w1, 1, False),
                Residual(w2, 2, True), Residual(w2, 2, False),
                nn.Conv2D(w2, 3, 1, 1, groups=w2, use_bias=False), nn.BatchNorm(),
                nn.Activation("relu"), nn.Conv2D(w1, 1), nn.Activation("relu"),
                nn.AvgPool2D(pk, ps, pp), nn.GlobalAvgPool2D(), nn.Dense(s["classes"]))
        return net

    def mlp():
        net = nn.HybridSequential()
        net.add(nn.Dense(s["units"], activation="relu"),
                nn.Dense(s["units"], activation="tanh"), nn.Dense(s["classes"]))
        return net

    rng = np.random.default_rng(0)
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    runs = []
    for i, (n, size, (w1, w2)) in enumerate(s["scales"]):
        image = nd.array(rng.random((n, s["chans"], size, size)).astype("float32"))
        label = nd.array(rng.integers(0, s["classes"], n).astype("float32"))
        # hybridized; imperatively (the ops' own numba kernels); the small one also as one
        # compiled training step (@ember.compile: forward, loss, backward and update)
        for mode in ("hybridize", "imperative") + (("compile",) if i == 0 else ()):
            runs.append((convnet(w1, w2), image, label, "sgd",
                         {"learning_rate": 0.01, "momentum": 0.9}, mode))
    n = s["scales"][0][0]
    flat = nd.array(rng.random((n, s["units"] + 1)).astype("float32"))
    label = nd.array(rng.integers(0, s["classes"], n).astype("float32"))
    runs += [(mlp(), flat, label, "sgd", {"learning_rate": 0.01}, "hybridize"),
             (mlp(), flat, label, "sgd", {"learning_rate": 0.01}, "compile"),
             (mlp(), flat, label, "adam", {"learning_rate": 0.001}, "hybridize")]
    for net, x, y, opt, args, mode in runs:
        net.initialize(mx.init.Xavier())
        trainer = gluon.Trainer(net.collect_params(), opt, args)

        def train(x, y, net=net, trainer=trainer):
            with autograd.record():
                out = loss(net(x), y)
            out.backward()
            trainer.step(x.shape[0])
            return out

        if mode == "hybridize":
            net.hybridize()
        elif mode == "compile":
            net(x)   # the parameters' deferred initialisation, before tracing
            train = mx.compile(train)
        for _ in range(2):
            train(x, y).asnumpy()
        net(x).asnumpy()   # inference
    # cpu_gemm's tiles: one kernel for every shape (Winograd layers of 64 channels and more,
    # wider than the seed networks' layers)
    z = np.zeros
    cpu_gemm.matmuls(cpu_gemm.pack(z((1, 32, 64), np.float32)), z((1, 64, 1), np.float32),
                     np.empty((1, 32, 1), np.float32))
    cpu_tiered.wait_all(600)


def _entries(cache_dir: Path) -> set[str]:
    """Names of the modules in a kernel cache whose numba index exists."""
    return {p.name for p in cache_dir.glob("*.py")
            if any((cache_dir / "__pycache__").glob(f"{p.stem}.*.nbi"))}


def _sources() -> dict[tuple[str, str], Path]:
    """ember's source files by where numba's ``NUMBA_CACHE_DIR`` keeps their functions'
    files: (sub-directory, file stem)."""
    from numba.core.caching import _CacheLocator

    import ember
    import ember.backends
    import ember.ir
    import ember.passes
    import ember.runtime
    out = {}
    for pkg in (ember, ember.ir, ember.passes, ember.backends, ember.runtime):
        for f in Path(pkg.__file__).resolve().parent.rglob("*.py"):
            out[(_CacheLocator.get_suitable_cache_subpath(str(f)), f.stem)] = f
    return out


def _numba_files(numba_dir: Path, sources: dict) -> dict[str, Path]:
    """numba's cache files of ember's own functions under ``numba_dir``, by their place in
    the prebuilt directory: ``numba/<digest of the source file>/<file name>``."""
    out = {}
    for f in numba_dir.glob("*/*"):
        src = sources.get((f.parent.name, f.name.split(".", 1)[0]))
        if src is not None and f.suffix in (".nbi", ".nbc"):
            out[f"{prebuilt.source_digest(src)}/{f.name}"] = f
    return out


def build(dest: Path | None = None, quiet: bool = False) -> int:
    """Compile the prebuilt kernels into ``dest`` (default ``runtime.prebuilt.default_dir()``)
    and replace what was there; returns how many kernel modules."""
    dest = Path(dest) if dest is not None else prebuilt.default_dir()
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".prebuilt-", dir=dest.parent))
    try:
        runs, numba_runs, sources = {}, {}, _sources()
        for key in SHAPES:
            cache_dir = work / key
            env = {**os.environ, "EMBER_CACHE_DIR": str(cache_dir), prebuilt._ENV_OFF: "0",
                   "NUMBA_CACHE_DIR": str(work / f"{key}-numba"), "EMBER_DEFER_KERNELS": "0"}
            code = f"from ember.prebuild import _seed, SHAPES; _seed(SHAPES[{key!r}])"
            subprocess.run([sys.executable, "-c", code], env=env, check=True,
                           stdout=subprocess.DEVNULL if quiet else None)
            runs[key] = _entries(cache_dir)
            numba_runs[key] = _numba_files(work / f"{key}-numba", sources)
        keep = sorted(set.intersection(*runs.values()))
        # ember's package functions: the same text whatever the shapes; a function both runs
        # compiled (its index), with the first run's files (its signatures)
        first_numba = numba_runs[next(iter(SHAPES))]
        indexes = set.intersection(*({r for r in run if r.endswith(".nbi")}
                                     for run in numba_runs.values()))
        both = {rel for rel in first_numba if rel.endswith(".nbi") and rel in indexes or
                rel.endswith(".nbc") and rel.rsplit(".", 2)[0] + ".nbi" in indexes}
        out = work / "out"
        (out / "__pycache__").mkdir(mode=0o700, parents=True)
        out.chmod(0o755)
        (out / "__pycache__").chmod(0o755)
        first = work / next(iter(SHAPES))
        for name in keep:
            shutil.copy2(first / name, out / name)
            for f in (first / "__pycache__").glob(f"{Path(name).stem}.*"):
                if f.suffix in (".nbi", ".nbc"):
                    shutil.copy2(f, out / "__pycache__" / f.name)
        for rel in sorted(both):
            target = out / "numba" / rel
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            shutil.copy2(first_numba[rel], target)
        (out / "MANIFEST.json").write_text(json.dumps({"kernels": keep,
                                                       "functions": sorted(both)}, indent=1))
        old = work / "old"
        if dest.exists():
            os.replace(dest, old)
        os.replace(out, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not quiet:
        print(f"ember: {len(keep)} prebuilt kernels in {dest}")
    return len(keep)
