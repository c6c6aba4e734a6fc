"""Ahead-of-time packages: ``ember.export`` writes one, ``ember.load`` runs it (DESIGN.md s.7).

A package is a directory that runs a model without its Python code and without tracing::

    manifest.json   format and ember versions, input/output/parameter signatures, backend,
                    numba version, memory figures, the dynamic (batch) dims, and the
                    SHA-256 of every other file
    graph.ir        the optimised graph in IR text (fused bodies, ``@arena+offset``)
    params.npz      the parameters, by name, in the graph's parameter order
    kernels/*.py    the CPU backend's generated kernel modules
    symbol.json     the traced graph before optimisation, in MXNet's JSON (for ``ember
                    summary`` and ``ember viz --after``; loading does not read it)

``export`` traces a block or function on example inputs in predict mode, runs the pass
pipeline through ``plan_memory``, compiles it once (which also warms the kernel cache) and
writes everything into a temporary directory renamed into place, so a failed export leaves
nothing behind. Replacing a package (``overwrite=True``) renames the old one aside
(``.NAME.PID-HEX.old``), the new one in, then deletes the old: a process killed between the
two renames leaves the complete old package aside, which ``load`` uses while the path is
missing and the next export puts back or deletes; temporary directories of killed exports
are removed by the next export into the same folder (old or new, never neither, no litter).

``load`` treats the package as data (docs/trust.md; :mod:`ember.aot_read` does the checks):
manifest paths confined to the package, every hash, ``graph.ir`` parsed, verified and
planned again, ``params.npz`` read without pickle and checked against the graph; the kernels
are generated again from the graph by this ember, never imported from the package (TVM's
``export_library``/``load_module`` and torch.export's archive are the models; the format is
ember's own).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ember import autograd
from ember.base import MXNetError
from ember.ir.graph import Graph
from ember.ir.printer import print_graph
from ember.ndarray.utils import pid_alive
from ember.runtime.arena import SharedArena

from .aot_batch import dynamic_entry, input_batch, read_dynamic, shape_text, specialise
from .aot_read import FORMAT, FORMAT_VERSION, MANIFEST, read_graph, read_manifest, read_params
from .aot_read import sha256 as _sha256

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "Package", "export", "load",
           "read_manifest"]


# ---- helpers ------------------------------------------------------------------------------
def _signature(values, names=None) -> list[dict]:
    """Name, shape and dtype of each value (``names`` overrides the values' name hints)."""
    names = names or [v.name_hint or f"output{i}" for i, v in enumerate(values)]
    return [{"name": n, "shape": list(v.type.shape), "dtype": v.type.dtype}
            for v, n in zip(values, names)]


def _structure_json(structure):
    """The traced output nesting (``cached_op._flatten``) as JSON: null for one array."""
    if structure is None:
        return None
    kind, parts = structure
    return {"list" if kind is list else "tuple": [_structure_json(p) for p in parts]}


def _structure_py(doc):
    if doc is None:
        return None
    (kind, parts), = doc.items()
    return (list if kind == "list" else tuple, [_structure_py(p) for p in parts])


@contextmanager
def _recording_kernels():
    """Collect the generated module sources the backends load while compiling.

    Every generated kernel module goes through ``ember.backends.codegen.load_module``,
    which is wrapped for the duration; the backends' per-process memos of loaded kernels
    (``_KERNELS``) are set aside meanwhile so that kernels this process loaded before are
    asked for again. (The backends expose no list of a graph's kernel sources.)
    """
    from ember.backends import codegen
    sources: list[str] = []
    original = codegen.load_module
    memos = [m for name, m in list(sys.modules.items())
             if name.startswith("ember.backends.") and isinstance(getattr(m, "_KERNELS", None),
                                                                  dict)]
    saved = [m._KERNELS for m in memos]

    def recording(source: str, name: str):
        if source not in sources:
            sources.append(source)
        return original(source, name)
    codegen.load_module = recording
    for m in memos:
        m._KERNELS = {}
    try:
        yield sources
    finally:
        codegen.load_module = original
        for m, old in zip(memos, saved):
            old.update(m._KERNELS)
            m._KERNELS = old


def _dump_json(doc: dict) -> str:
    """Indented JSON with lists of numbers (shapes) kept on one line."""
    text = json.dumps(doc, indent=2)
    return re.sub(r"\[\s+([-\d,\s]*?)\s+\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
                  text) + "\n"


def _kernel_file(source: str) -> str:
    return f"kernels/k_{hashlib.sha256(source.encode()).hexdigest()[:20]}.py"


# ---- export ---------------------------------------------------------------------------------
def _as_arrays(example_inputs) -> list:
    from ember.ndarray.ndarray import NDArray
    items = example_inputs if isinstance(example_inputs, list | tuple) else [example_inputs]
    out = []
    for a in items:
        if isinstance(a, NDArray):
            out.append(a)
        elif isinstance(a, np.ndarray | np.generic | float | int):
            out.append(NDArray(np.asarray(a)))
        else:
            raise MXNetError(f"export: example inputs must be NDArrays or NumPy arrays, got "
                             f"{type(a).__name__}")
    if not out:
        raise MXNetError("export: give at least one example input")
    return out


def _trace(model, arrays: list) -> tuple[Graph, list, object, str]:
    """(graph before passes, Parameters in graph order, output structure, name)."""
    from ember.compile import CompiledFunction
    from ember.gluon.block import Block, HybridBlock
    from ember.gluon.cached_op import block_params_by_value, trace
    from ember.gluon.parameter import _BY_VALUE
    if isinstance(model, Block):
        if not isinstance(model, HybridBlock):
            raise MXNetError(f"export: {model.name} is a Block; only HybridBlocks (and "
                             "functions of NDArrays) can be traced")
        missing = [p.name for p in model.collect_params().values()
                   if p._data is None and not p._deferred_init]
        if missing:
            raise MXNetError(f"export: {model.name} has uninitialized parameters "
                             f"({', '.join(missing[:3])}); call initialize() first")
        fn, name, by_value = model.forward, model.name, block_params_by_value(model)
    elif callable(model):
        fn = model._fn if isinstance(model, CompiledFunction) else model
        name, by_value = getattr(fn, "__name__", "function"), _BY_VALUE
    else:
        raise MXNetError(f"export: expected a HybridBlock or a function, got "
                         f"{type(model).__name__}")
    with autograd.pause(train_mode=False):
        graph, params, structure = trace(fn, tuple(arrays), name, by_value)
    return graph, params, structure, name


def export(model, directory: str | os.PathLike, example_inputs, *,
           backend: str | None = None, overwrite: bool = False,
           dynamic_batch: bool | None = None) -> Path:
    """Compile ``model`` (a HybridBlock or a function of NDArrays) for ``example_inputs``
    and write an AOT package to ``directory``; returns its path.

    The graph is traced in predict mode (Dropout off, BatchNorm on its running statistics)
    for the shapes and dtypes of ``example_inputs`` (an array or a list of them). The
    package runs those, and any batch size (the first dim of the inputs that share the
    first input's first dim) when the graph is batch-polymorphic (:mod:`ember.aot_batch`
    checks it by tracing once more at batch B+1): ``dynamic_batch=None`` (default) makes
    the batch dynamic when the graph allows it, ``True`` raises when it does not, ``False``
    keeps it fixed. The manifest's ``"dynamic"`` entry lists the dynamic dims (and, for a
    fixed package, why). ``backend``: ``cpu`` (default, ``$EMBER_BACKEND``) or
    ``reference``. ``overwrite`` replaces an existing package.
    """
    import numba

    from ember import __version__
    from ember.gluon.cached_op import default_backend
    from ember.passes import pipeline, run_pipeline
    from ember.runtime.executable import Executable
    from ember.symbol.json_io import to_json

    directory = Path(directory)
    _tidy(directory)
    if directory.exists() and not overwrite:
        raise MXNetError(f"export: {directory} exists (pass overwrite=True to replace it)")
    backend = backend or default_backend()
    arrays = _as_arrays(example_inputs)
    traced, params, structure, name = _trace(model, arrays)
    graph = run_pipeline(traced, pipeline(grad=False))
    if len(graph.params) != len(params):
        raise MXNetError(f"export: the optimised graph reads {len(graph.params)} parameters, "
                         f"the trace {len(params)}")
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        raise MXNetError(f"export: parameter names are not unique: {names}")
    values = [p.data().asnumpy() for p in params]
    dynamic = dynamic_entry(graph, arrays, dynamic_batch, lambda again: run_pipeline(
        _trace(model, again)[0], pipeline(grad=False)))
    with _recording_kernels() as sources:
        exe = Executable(graph, backend)
    exe.run([a.asnumpy() for a in arrays], values)  # numba compiles now: loads are warm

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh(directory, ".tmp")
    tmp.mkdir(mode=0o755)
    try:
        files = {"graph.ir": print_graph(graph), "symbol.json": to_json(traced.outputs)}
        for src in sources:
            files[_kernel_file(src)] = src
        for rel, text in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text)
        with open(tmp / "params.npz", "wb") as f:
            np.savez(f, **dict(zip(names, values)))
        meta = {k: v for k, v in graph.meta.items()
                if k in ("naive_bytes", "lower_bound_bytes", "arena_bytes")}
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "ember_version": __version__,
            "name": name, "backend": backend, "numba_version": numba.__version__,
            "inputs": _signature(graph.inputs), "outputs": _signature(graph.outputs),
            "params": _signature(graph.params, names), "output_structure":
            _structure_json(structure), "dynamic": dynamic, "memory": meta,
            "kernels": [_kernel_file(s) for s in sources],
            "files": {rel: _sha256(tmp / rel) for rel in sorted([*files, "params.npz"])},
        }
        (tmp / MANIFEST).write_text(_dump_json(manifest))
        _fsync_tree(tmp)
        _swap_in(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


# ---- crash safety ---------------------------------------------------------------------------
def _ours(directory: Path, suffix: str) -> list[tuple[Path, int]]:
    """(path, writer pid) of this package's temporary (``.tmp``) or aside (``.old``) entries."""
    pat = re.compile(rf"\.{re.escape(directory.name)}\.(\d+)-[0-9a-f]+\{suffix}")
    try:
        names = os.listdir(directory.parent)
    except OSError:
        return []
    return [(directory.parent / n, int(m.group(1))) for n in names
            if (m := pat.fullmatch(n))]


def _aside(directory: Path) -> Path | None:
    """The old package a killed ``export(overwrite=True)`` left aside, if the path is gone."""
    if directory.exists():
        return None
    found = sorted((p for p, _ in _ours(directory, ".old") if (p / MANIFEST).is_file()),
                   key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _tidy(directory: Path) -> None:
    """Put back an old package left aside by a killed export; remove dead writers' litter."""
    old = _aside(directory)
    if old is not None:
        os.replace(old, directory)
    for suffix in (".tmp", ".old"):
        for p, pid in _ours(directory, suffix):
            if not pid_alive(pid):
                shutil.rmtree(p, ignore_errors=True)


def _fresh(directory: Path, suffix: str) -> Path:
    return directory.parent / f".{directory.name}.{os.getpid()}-{os.urandom(6).hex()}{suffix}"


def _swap_in(tmp: Path, directory: Path) -> None:
    """Rename ``tmp`` to ``directory``, the old package (if any) aside first."""
    if not directory.exists():
        os.replace(tmp, directory)
        return
    old = _fresh(directory, ".old")
    os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    """Flush the package's files (and folders) before it is renamed into place."""
    for folder, _, names in os.walk(root):
        for n in [*names, "."]:
            fd = os.open(os.path.join(folder, n), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


# ---- load -----------------------------------------------------------------------------------
class Package:
    """A loaded AOT package: call it with the example inputs' shapes and dtypes, or (when
    ``dynamic_batch``) another batch size, for which the graph is specialised again
    (:func:`ember.aot_batch.specialise`; the last ``$EMBER_MAX_VARIANTS`` are kept).

    ``graph`` is the parsed, verified and planned graph, ``manifest`` the checked manifest,
    ``kernels_regenerated`` how many of the kernels this ember generated for the graph the
    package's ``kernels/`` did not hold (0 unless the exporting ember's code generator
    differs). The package's kernel sources are only compared, never run.
    """

    def __init__(self, directory: str | os.PathLike):
        from ember.gluon.cached_op import SignatureCache
        from ember.runtime.executable import Executable
        self.directory = Path(directory)
        if (old := _aside(self.directory)) is not None:  # a killed export(overwrite=True)
            self.directory = old
        self.manifest = m = read_manifest(self.directory)
        self.graph = read_graph(self.directory)
        self.param_names = [p.get("name") if isinstance(p, dict) else p for p in m["params"]]
        hints = [v.name_hint for v in self.graph.params]
        if hints != self.param_names:
            raise MXNetError(f"{self.directory}: graph.ir's parameters {hints} are not the "
                             f"manifest's {self.param_names}")
        for what, values in (("inputs", self.graph.inputs), ("outputs", self.graph.outputs)):
            if m[what] != _signature(values, [d.get("name") for d in m[what]]
                                     if isinstance(m[what], list) and
                                     all(isinstance(d, dict) for d in m[what]) else None):
                raise MXNetError(f"{self.directory}: the manifest's {what} are not graph.ir's")
        self.params = read_params(self.directory, self.graph, self.param_names)
        shipped = {(self.directory / rel).read_text(errors="replace") for rel in m["kernels"]}
        try:
            with _recording_kernels() as generated:  # this ember's code generator
                self.executable = Executable(self.graph, m["backend"])
        except MemoryError:
            raise MXNetError(f"{self.directory}: graph.ir needs "
                             f"{self.graph.meta.get('arena_bytes', '?')} bytes of working "
                             "memory, more than this machine can give") from None
        self.kernels_regenerated = len(set(generated) - shipped)
        self._structure = _structure_py(m.get("output_structure"))
        self.batched = read_dynamic(m, self.graph, self.directory)
        self._variants = SignatureCache()  # other batch sizes' programs (LRU)
        self._arena = SharedArena()  # theirs, grown to the largest batch (runtime.arena)

    @property
    def dynamic_batch(self) -> bool:
        """Whether the package runs any batch size (else only its inputs' shapes)."""
        return self.batched is not None

    def _program(self, batch: int):
        """The Executable for ``batch`` (the package's own, or its graph specialised)."""
        from ember.ir.errors import EmberError
        from ember.runtime.executable import Executable
        if batch == self.executable.input_types[self.batched.index(True)].shape[0]:
            return self.executable

        def make():
            backend = self.manifest["backend"]
            arena = self._arena if backend == "cpu" else None
            grown = arena.generation if arena is not None else 0
            try:
                exe = Executable(specialise(self.graph, self.batched, batch), backend,
                                 arena=arena)
            except EmberError as e:
                raise MXNetError(f"{self.directory}: graph.ir cannot run batch {batch}: "
                                 f"{e}") from None
            if arena is not None and arena.generation != grown:
                self._variants.clear()  # they point into the buffer that just grew
            return exe
        return self._variants.build(batch, make)

    def _check(self, arrays: list):
        """The program for ``arrays``; MXNetError naming the input that does not fit."""
        batch = input_batch(self.manifest, self.batched, arrays)
        return self.executable if batch is None else self._program(batch)

    @property
    def input_types(self):
        return self.executable.input_types

    def __call__(self, *inputs):
        """Run the graph; NDArray results (nested as the exported model returned them)."""
        from ember.gluon.cached_op import _unflatten
        from ember.ndarray.ndarray import NDArray
        arrays = [a.asnumpy() if isinstance(a, NDArray) else np.asarray(a) for a in inputs]
        program = self._check(arrays)
        outs = [NDArray(np.asarray(r)) for r in program.run(arrays, self.params)]
        return _unflatten(outs, self._structure)

    def __repr__(self) -> str:
        batched = self.batched or [False] * len(self.manifest["inputs"])
        ins = ", ".join(f"{i['dtype']}{shape_text(i['shape'], b)}"
                        for i, b in zip(self.manifest["inputs"], batched))
        return f"<ember AOT package {self.manifest['name']}({ins}) at {self.directory}>"


def load(directory: str | os.PathLike) -> Package:
    """Load the AOT package in ``directory`` (see :func:`export`): a callable model."""
    return Package(directory)
