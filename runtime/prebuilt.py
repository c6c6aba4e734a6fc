"""Library kernels compiled at install time: a cold kernel cache starts with them.

PyTorch and MXNet ship their kernels compiled. ember's are numba modules, compiled on first use
and kept in the kernel cache (:mod:`ember.runtime.cache`), so a new install's first training
step compiled kernels whose text is the same for every network: im2col and col2im, BatchNorm's
forward and backward, the optimizers' updates, common elementwise epilogues (ResNet-18 with
every cache cold: 1-2 s of its first step on two cores). ``ember prebuild`` (``make`` runs it
after installing; ``ember.prebuild.build``) compiles them once, into ``_prebuilt/`` beside
this module (:func:`default_dir`; ``EMBER_PREBUILT_DIR``: elsewhere):

- it runs a fixed set of small networks (``ember.prebuild``, whose networks are
  Gluon's, beside the frontend: convolutions of several kinds with
  BatchNorm, ReLU, residual adds and pooling, a depthwise block, dense layers, softmax
  cross-entropy; training with SGD and Adam, then inference) twice, in two processes, each
  with its own empty kernel cache, at two sets of shapes and layer attributes that share no
  value (:data:`SHAPES`);
- it keeps the kernel modules that both runs generated (the cache names a module by a hash
  of its text): a kernel whose text holds a shape or an attribute differs between the runs
  and is left out, so only kernels that every network of those ops would compile the same
  way are prebuilt, never one of a given model's shapes;
- the entries (module text and numba's sealed files) go to a new directory that replaces
  the old one at once.

:meth:`KernelCache.load` adopts a prebuilt entry when its own has none (:func:`adopt`): the
module text must be exactly the one it generated, numba's files must match their seals,
and the directory and files must belong to this user or root and not be group- or
world-writable (as the installed package itself); the copies get the prebuilt module's
modification time, which numba's index records with the size. The entries' names hash the
numba version and the CPU, so prebuilt kernels of another machine are never used: they
just miss. ``EMBER_PREBUILT=0`` turns adoption off (the tests do, but for their own).

ember's own package functions that numba caches (``cache=True``: the eager ops' convolution
and pooling kernels in ``ir.conv_kernels`` and ``ir.opset_pool``, 2-3 s of a cold imperative
ResNet-18 step) are prebuilt too, their numba files kept under ``numba/<digest of the source
file>/``: a cache locator ahead of numba's (:func:`install_locator`) copies a function's files
into the place numba then uses (``NUMBA_CACHE_DIR`` or the package's ``__pycache__``) when
that holds no index of the function, with the same ownership checks; numba itself checks the
source file's stamp and the machine.
"""
from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path

from . import numba_seal

_ENV_DIR = "EMBER_PREBUILT_DIR"
_ENV_OFF = "EMBER_PREBUILT"
def directory() -> Path | None:
    """Where prebuilt kernels are read from; None when adoption is off."""
    if os.environ.get(_ENV_OFF, "1").lower() in ("0", "false", "no"):
        return None
    env = os.environ.get(_ENV_DIR)
    return Path(env).expanduser() if env else default_dir()


def default_dir() -> Path:
    """``_prebuilt/`` beside this module: where ``ember prebuild`` puts them."""
    return Path(__file__).resolve().parent / "_prebuilt"


def _trusted(st: os.stat_result, is_dir: bool) -> bool:
    """A directory or regular file of this user or root, not group- or world-writable."""
    kind = stat.S_ISDIR(st.st_mode) if is_dir else stat.S_ISREG(st.st_mode)
    return kind and st.st_uid in (os.geteuid(), 0) and \
        not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _read(path: Path) -> bytes | None:
    """The bytes of a trusted regular file (never through a symlink); None otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not _trusted(os.fstat(f.fileno()), is_dir=False):
            return None
        return f.read()


def _put(path: Path, data: bytes, mtime_ns: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically (mode 0600), with ``mtime_ns`` if given."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if mtime_ns is not None:
            os.utime(tmp, ns=(mtime_ns, mtime_ns))
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def adopt(path: Path, text: str) -> bool:
    """Copy the prebuilt entry named like ``path`` (a missing kernel cache entry whose module
    text is ``text``) with numba's files into ``path``'s directory; whether it did (module
    doc for what is checked)."""
    src_dir = directory()
    if src_dir is None:
        return False
    src, pycache = src_dir / path.name, src_dir / "__pycache__"
    try:
        if not (_trusted(os.stat(src_dir), True) and _trusted(os.stat(pycache), True)):
            return False
        data = _read(src)
        if data is None or data != text.encode():
            return False
        files = {}
        for f in pycache.glob(f"{path.stem}.*"):
            if f.suffix in (".nbi", ".nbc"):
                payload = _read(f)
                if numba_seal.unseal(payload) is None:
                    return False
                files[f.name] = payload
        if not any(name.endswith(".nbi") for name in files):
            return False
        mtime_ns = os.stat(src).st_mtime_ns
        dest = path.parent / "__pycache__"
        # data files, the module, the index last: a process that finds the index finds the rest
        for name in sorted(files, key=lambda n: n.endswith(".nbi")):
            if name.endswith(".nbc"):
                _put(dest / name, files[name])
        _put(path, data, mtime_ns)
        for name in files:
            if name.endswith(".nbi"):
                _put(dest / name, files[name])
    except OSError:
        return False
    return True


_DIGESTS: dict[str, str] = {}


def source_digest(py_file) -> str:
    """The first 24 hex digits of the SHA-256 of a source file's bytes."""
    key = str(py_file)
    got = _DIGESTS.get(key)
    if got is None:
        with open(py_file, "rb") as f:
            got = _DIGESTS[key] = hashlib.sha256(f.read()).hexdigest()[:24]
    return got


def seed_numba_cache(cache_path, py_func, py_file) -> bool:
    """Copy numba's prebuilt files of ember's package function ``py_func`` (from
    ``py_file``) into ``cache_path``, where numba looks for them, when it holds no index of
    that function; whether it did. Files are found by the digest of the source file they
    were compiled from (an edited file has none) and must be trusted (module doc); numba
    checks the source file's stamp and the machine itself."""
    src = directory()
    if src is None:
        return False
    prefix = f"{Path(py_file).stem}.{py_func.__qualname__}-"
    try:
        dest = Path(cache_path)
        if any(f.name.startswith(prefix) and f.suffix == ".nbi" for f in dest.iterdir()):
            return False
        base = src / "numba" / source_digest(py_file)
        for d in (src, src / "numba", base):
            if not _trusted(os.stat(d), True):
                return False
        files = {}
        for f in base.iterdir():
            if f.name.startswith(prefix) and f.suffix in (".nbi", ".nbc"):
                data = _read(f)
                if data is None:
                    return False
                files[f.name] = data
        if not any(name.endswith(".nbi") for name in files):
            return False
        for name in sorted(files, key=lambda n: n.endswith(".nbi")):   # the index last
            _put(dest / name, files[name])
    except OSError:
        return False
    return True


def install_locator() -> None:
    """Put a cache locator ahead of numba's that seeds the cache place numba would choose for
    a function of ember's own package with its prebuilt files (:func:`seed_numba_cache`)."""
    from numba.core import caching

    classes = caching.CacheImpl._locator_classes
    if any(getattr(c, "_ember_seed", False) for c in classes):
        return

    class PrebuiltSeedLocator(caching._CacheLocator):
        _ember_seed = True

        @classmethod
        def from_function(cls, py_func, py_file):
            mod = getattr(py_func, "__module__", None) or ""
            if not mod.startswith("ember.") or directory() is None:
                return None
            for other in caching.CacheImpl._locator_classes:
                if other is cls:
                    continue
                loc = other.from_function(py_func, py_file)
                if loc is not None:
                    seed_numba_cache(loc.get_cache_path(), py_func, py_file)
                    return loc
            return None

    caching.CacheImpl._locator_classes = [PrebuiltSeedLocator, *classes]
