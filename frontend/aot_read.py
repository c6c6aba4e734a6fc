"""Reading an AOT package as data (DESIGN.md s.7, docs/trust.md): nothing in it is run.

``ember.load`` trusts no byte of a package to be code. This module does the checks that
make that hold:

- every path the manifest names is confined to the package directory: relative, no ``..``,
  no absolute or Windows-style path, no symbolic link on the way (a link could point
  anywhere); every file is regular and its SHA-256 is the manifest's (a check against
  damage: whoever can edit a package can rewrite its hashes, so hashes are not what keeps
  code from running; never executing package content is);
- ``graph.ir`` is parsed (``ember.ir.printer.parse_graph``) and verified
  (``ember.ir.verify``): SSA, attributes and every type against its op's shape rule; its
  memory plan is dropped and planned again here, so arena offsets are ember's own;
- ``params.npz`` is read member by member without pickle: each ``.npy`` header is checked
  (plain dtype, declared size within the member's size) before anything is allocated, so a
  crafted or truncated file gives an ``MXNetError``, never a raw ``BadZipFile`` or a huge
  allocation; every array must have its parameter's shape and dtype in ``graph.ir``.

Kernels are generated again from the verified graph by this ember's code generator; the
package's ``kernels/*.py`` are only read back to compare (``Package.kernels_regenerated``).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from ember.base import MXNetError

FORMAT = "ember-aot"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
BACKENDS = ("cpu", "reference", "cuda")
_DEFLATE_RATIO = 1032  # deflate's largest expansion: a bigger claim is a zip bomb


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def member(directory: Path, rel, what: str = "file") -> Path:
    """``directory / rel`` for a manifest path ``rel`` that stays inside the package: a
    relative POSIX path without ``..``, every component a real (not linked) entry."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\0" in rel or ":" in rel:
        raise MXNetError(f"{directory}: the manifest names a {what} {rel!r}, not a path "
                         "inside the package")
    parts = rel.split("/")
    if PurePosixPath(rel).is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise MXNetError(f"{directory}: the manifest names a {what} {rel!r} outside the "
                         "package (absolute or with '..'); refused")
    path = directory
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise MXNetError(f"{directory}: {rel} is a symbolic link; a package holds only "
                             "its own files")
    return path


def _regular(directory: Path, rel: str, path: Path) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        raise MXNetError(f"{directory}: the package is missing {rel}") from None
    if not stat.S_ISREG(mode):
        raise MXNetError(f"{directory}: {rel} is not a regular file")


def read_manifest(directory: str | os.PathLike, verify: bool = True) -> dict:
    """The manifest of the package in ``directory``, checked: its format version is one this
    ember reads, every path it names lies inside the package, and (``verify``) every file it
    lists exists with the SHA-256 it records."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MXNetError(f"no ember AOT package at {directory}: not a directory")
    path = member(directory, MANIFEST)
    if not path.is_file():
        raise MXNetError(f"{directory} is not an ember AOT package: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
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
    files, kernels = manifest["files"], manifest.setdefault("kernels", [])
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise MXNetError(f"{path}: 'files' must map paths to SHA-256 digests")
    if not isinstance(kernels, list) or any(k not in files for k in kernels):
        raise MXNetError(f"{path}: every entry of 'kernels' must be one of its 'files'")
    if manifest["backend"] not in BACKENDS:
        raise MXNetError(f"{path}: unknown backend {manifest['backend']!r} (one of "
                         f"{', '.join(BACKENDS)})")
    for rel in ("graph.ir", "params.npz"):
        if rel not in files:
            raise MXNetError(f"{path}: the manifest does not list {rel}")
    for rel, digest in files.items():
        f = member(directory, rel)
        if verify:
            _regular(directory, rel, f)
            if sha256(f) != digest:
                raise MXNetError(f"{directory}: {rel} does not match its SHA-256 in "
                                 f"{MANIFEST}; the package was modified or damaged")
    return manifest


def _read_npy(z: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> np.ndarray:
    """One ``.npy`` member, its header checked before its data is allocated."""
    fmt = np.lib.format
    stored = info.compress_type == zipfile.ZIP_STORED
    if (stored and info.file_size > info.compress_size) or \
            info.file_size > _DEFLATE_RATIO * info.compress_size + 1024:
        raise ValueError(f"member {info.filename!r} claims {info.file_size} bytes from "
                         f"{info.compress_size}")
    with z.open(info) as f:
        version = fmt.read_magic(f)
        header = fmt.read_array_header_1_0 if version == (1, 0) else \
            fmt.read_array_header_2_0
        shape, fortran, dtype = header(f, max_header_size=10000)
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
            raise ValueError(f"member {info.filename!r} has dtype {dtype} (plain numbers "
                             "only; no pickled objects)")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > info.file_size:
            raise ValueError(f"member {info.filename!r} declares shape {shape} ({nbytes} "
                             f"bytes) in {info.file_size} bytes")
        data = f.read(nbytes)
    if len(data) != nbytes:
        raise ValueError(f"member {info.filename!r} is truncated")
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C").copy()


def read_params(directory: Path, graph, names: list[str]) -> list[np.ndarray]:
    """The parameters in ``params.npz``, in ``graph.params`` order, checked against their
    types there; MXNetError for anything else."""
    path, where = member(directory, "params.npz"), f"{directory}/params.npz"
    try:
        with zipfile.ZipFile(path) as z:
            stored = {}
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    raise ValueError(f"unexpected member {info.filename!r}")
                stored[info.filename[:-4]] = _read_npy(z, info, where)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError,
            KeyError, NotImplementedError, zlib.error) as e:
        raise MXNetError(f"{where}: damaged or not a parameter archive ({e})") from None
    lacking = [n for n in names if n not in stored]
    if lacking:
        raise MXNetError(f"{where} lacks {', '.join(lacking)}")
    out = []
    for n, v in zip(names, graph.params):
        a, t = stored[n], v.type
        if a.shape != tuple(t.shape) or a.dtype != np.dtype(t.dtype):
            raise MXNetError(f"{where}: {n} is {a.dtype}{a.shape}, graph.ir declares "
                             f"{t.dtype}{tuple(t.shape)}")
        out.append(a)
    return out


def read_graph(directory: Path):
    """``graph.ir`` parsed, verified and planned again by ember."""
    from ember.ir.errors import EmberError
    from ember.ir.printer import parse_graph
    from ember.ir.verify import verify
    from ember.passes import run_pipeline
    path = member(directory, "graph.ir")
    try:
        graph = parse_graph(path.read_text())
        verify(graph)
        if not all(v.type.known for v in (*graph.inputs, *graph.params)):
            raise EmberError("inputs and parameters must have known shapes")
        for v in (*graph.inputs, *graph.params, *(o for n in graph.nodes for o in n.outputs)):
            v.mem = None  # the package's offsets are not trusted: plan again
        return run_pipeline(graph, ["plan_memory"])
    except (EmberError, UnicodeDecodeError, RecursionError, ValueError) as e:
        raise MXNetError(f"{directory}/graph.ir: {e}") from None
