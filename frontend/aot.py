"""Ahead-of-time packages: ``ember.export`` writes one, ``ember.load`` runs it (DESIGN.md s.7).

A package is a directory that runs a model without its Python code and without tracing::

    manifest.json   format and ember versions, input/output/parameter signatures, backend,
                    numba version, memory figures, and the SHA-256 of every other file
    graph.ir        the optimised graph in IR text (fused bodies, ``@arena+offset``)
    params.npz      the parameters, by name, in the graph's parameter order
    kernels/*.py    the CPU backend's generated kernel modules
    symbol.json     the traced graph before optimisation, in MXNet's JSON (for ``ember
                    summary`` and ``ember viz --after``; loading does not read it)

``export`` traces a block or function on example inputs in predict mode, runs the pass
pipeline through ``plan_memory``, compiles it once (which also warms the kernel cache) and
writes everything into a temporary directory renamed into place, so a failed export leaves
nothing behind. ``load`` checks the manifest (format version, every hash, every file),
parses ``graph.ir``, puts the package's kernel sources into the kernel cache and compiles
the graph, whose kernels then come from there (TVM's ``export_library``/``load_module``
and torch.export's archive are the models; the format is ember's own).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ember import autograd
from ember.base import MXNetError
from ember.ir.graph import Graph
from ember.ir.printer import parse_graph, print_graph

FORMAT = "ember-aot"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


# ---- helpers ------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
           backend: str | None = None, overwrite: bool = False) -> Path:
    """Compile ``model`` (a HybridBlock or a function of NDArrays) for ``example_inputs``
    and write an AOT package to ``directory``; returns its path.

    The graph is traced in predict mode (Dropout off, BatchNorm on its running statistics)
    for the shapes and dtypes of ``example_inputs`` (an array or a list of them); the
    package runs exactly those. ``backend``: ``cpu`` (default, ``$EMBER_BACKEND``) or
    ``reference``. ``overwrite`` replaces an existing package.
    """
    import numba

    from ember import __version__
    from ember.gluon.cached_op import default_backend
    from ember.passes import pipeline, run_pipeline
    from ember.runtime.executable import Executable
    from ember.symbol.json_io import to_json

    directory = Path(directory)
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
    with _recording_kernels() as sources:
        exe = Executable(graph, backend)
    exe.run([a.asnumpy() for a in arrays], values)  # numba compiles now: loads are warm

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp",
                                dir=directory.parent))
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
            _structure_json(structure), "memory": meta,
            "kernels": [_kernel_file(s) for s in sources],
            "files": {rel: _sha256(tmp / rel) for rel in sorted([*files, "params.npz"])},
        }
        (tmp / MANIFEST).write_text(_dump_json(manifest))
        if directory.exists():  # overwrite: move the old one aside, then swap
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".old",
                                        dir=directory.parent))
            os.replace(directory, old / "pkg")
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


# ---- load -----------------------------------------------------------------------------------
def read_manifest(directory: str | os.PathLike, verify: bool = True) -> dict:
    """The manifest of the package in ``directory``, checked: its format version is one this
    ember reads, and (``verify``) every file it lists exists with the SHA-256 it records."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MXNetError(f"no ember AOT package at {directory}: not a directory")
    path = directory / MANIFEST
    if not path.is_file():
        raise MXNetError(f"{directory} is not an ember AOT package: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MXNetError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise MXNetError(f"{path}: not an ember AOT manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise MXNetError(f"{path}: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise MXNetError(f"{directory}: package format version {version} is newer than this "
                         f"ember reads (up to {FORMAT_VERSION}; ember "
                         f"{manifest.get('ember_version', '?')} wrote it): upgrade ember")
    for key in ("files", "inputs", "outputs", "params", "backend"):
        if key not in manifest:
            raise MXNetError(f"{path}: the manifest has no {key!r} entry")
    if verify:
        for rel, digest in manifest["files"].items():
            f = directory / rel
            if not f.is_file():
                raise MXNetError(f"{directory}: the package is missing {rel}")
            if _sha256(f) != digest:
                raise MXNetError(f"{directory}: {rel} does not match its SHA-256 in "
                                 f"{MANIFEST}; the package was modified or damaged")
    for rel in ("graph.ir", "params.npz"):
        if rel not in manifest["files"]:
            raise MXNetError(f"{path}: the manifest does not list {rel}")
    return manifest


class Package:
    """A loaded AOT package: call it with the example inputs' shapes and dtypes.

    ``graph`` is the parsed optimised graph, ``manifest`` the checked manifest,
    ``kernels_regenerated`` how many kernels the backend generated that the package did not
    hold (0 unless this ember's code generator differs from the exporting one).
    """

    def __init__(self, directory: str | os.PathLike):
        from ember.backends import codegen
        from ember.runtime.executable import Executable
        self.directory = Path(directory)
        self.manifest = m = read_manifest(self.directory)
        try:
            self.graph = parse_graph((self.directory / "graph.ir").read_text())
        except MXNetError as e:
            raise MXNetError(f"{self.directory}/graph.ir: {e}") from None
        with np.load(self.directory / "params.npz", allow_pickle=False) as npz:
            stored = {k: npz[k] for k in npz.files}
        self.param_names = [p["name"] for p in m["params"]]
        lacking = [n for n in self.param_names if n not in stored]
        if lacking or len(self.param_names) != len(self.graph.params):
            raise MXNetError(f"{self.directory}: params.npz lacks {', '.join(lacking)}"
                             if lacking else f"{self.directory}: the manifest lists "
                             f"{len(self.param_names)} parameters, graph.ir has "
                             f"{len(self.graph.params)}")
        hints = [v.name_hint for v in self.graph.params]
        if hints != self.param_names:
            raise MXNetError(f"{self.directory}: graph.ir's parameters {hints} are not the "
                             f"manifest's {self.param_names}")
        self.params = [stored[n] for n in self.param_names]
        ours = [(self.directory / rel).read_text() for rel in m.get("kernels", [])]
        backend = m["backend"]
        for src in ours:  # into the kernel cache: the backend finds them there
            codegen.load_module(src, backend)
        with _recording_kernels() as asked:
            self.executable = Executable(self.graph, backend)
        self.kernels_regenerated = len(set(asked) - set(ours))
        self._structure = _structure_py(m.get("output_structure"))

    @property
    def input_types(self):
        return self.executable.input_types

    def __call__(self, *inputs):
        """Run the graph; NDArray results (nested as the exported model returned them)."""
        from ember.gluon.cached_op import _unflatten
        from ember.ndarray.ndarray import NDArray
        arrays = [a.asnumpy() if isinstance(a, NDArray) else np.asarray(a) for a in inputs]
        want = self.manifest["inputs"]
        if len(arrays) != len(want):
            raise MXNetError(f"{self.manifest['name']}: the package takes {len(want)} inputs, "
                             f"got {len(arrays)}")
        for a, w in zip(arrays, want):
            if list(a.shape) != w["shape"] or a.dtype.name != w["dtype"]:
                raise MXNetError(f"{self.manifest['name']}: input {w['name']!r} must be "
                                 f"{w['dtype']}{tuple(w['shape'])}, got "
                                 f"{a.dtype.name}{a.shape}")
        outs = [NDArray(np.asarray(r)) for r in self.executable.run(arrays, self.params)]
        return _unflatten(outs, self._structure)

    def __repr__(self) -> str:
        ins = ", ".join(f"{i['dtype']}{tuple(i['shape'])}" for i in self.manifest["inputs"])
        return f"<ember AOT package {self.manifest['name']}({ins}) at {self.directory}>"


def load(directory: str | os.PathLike) -> Package:
    """Load the AOT package in ``directory`` (see :func:`export`): a callable model."""
    return Package(directory)
