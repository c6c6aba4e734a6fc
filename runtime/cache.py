"""The on-disk kernel cache: generated kernel modules as files, so numba's cache works.

numba's ``cache=True`` stores compiled machine code next to a function's source file
(``__pycache__/*.nbi|nbc``) and can only do so when the function comes from a real file. The
backends generate source text, so this cache writes each module to
``$EMBER_CACHE_DIR`` (default ``$XDG_CACHE_HOME/ember/kernels``, i.e.
``~/.cache/ember/kernels``) under a name derived from its key, and imports it from there: a
second process finds both the module and numba's compiled code and compiles nothing
(DESIGN.md s.6).

Key = SHA-256 of (kernel source, backend, numba version, host CPU name from llvmlite), so a
numba upgrade or another CPU never reuses machine code built for something else. Files are
written atomically (temporary file + ``os.replace``), carry a hash line that is checked
before use, and an entry that cannot be read, fails its hash, or fails to import is rebuilt
(with numba's files for it removed), never trusted.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
import types
from pathlib import Path

import llvmlite.binding as llvm
import numba

from ember.backends import codegen

_ENV = "EMBER_CACHE_DIR"
_MAGIC = "# ember-kernel sha256="


def default_dir() -> Path:
    """``$EMBER_CACHE_DIR``, else ``$XDG_CACHE_HOME/ember/kernels`` (``~/.cache``)."""
    env = os.environ.get(_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "ember" / "kernels"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class KernelCache:
    """Loads generated modules through files in a directory (``None``: :func:`default_dir`,
    looked up at each load so that ``EMBER_CACHE_DIR`` may change)."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self._directory = None if directory is None else Path(directory)
        self._modules: dict[str, types.ModuleType] = {}
        self.rebuilt = 0   # entries found corrupt and written again (for tests and reports)
        self.written = 0   # entries written because they were missing

    @property
    def directory(self) -> Path:
        return self._directory if self._directory is not None else default_dir()

    @staticmethod
    def key(source: str, backend: str) -> str:
        """The entry's name: a hash of source, backend, numba version and host CPU."""
        return codegen.source_key(source, backend, numba.__version__,
                                  llvm.get_host_cpu_name())[:24]

    def path(self, source: str, backend: str) -> Path:
        return self.directory / f"{backend}_{self.key(source, backend)}.py"

    def load(self, source: str, backend: str) -> types.ModuleType:
        """The module of ``source`` (written to the cache first if missing or corrupt).

        Falls back to an in-memory module when the directory cannot be written.
        """
        path = self.path(source, backend)
        mod = self._modules.get(str(path))
        if mod is not None:
            return mod
        text = f"{_MAGIC}{_digest(source)}\n{source}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            state = self._check(path, text)
            if state != "ok":
                self._write(path, text, corrupt=state == "corrupt")
        except OSError:
            return codegen._load_in_memory(source, backend)
        try:
            mod = self._import(path)
        except Exception:  # a file that does not import (truncated by a crash, edited...)
            self._write(path, text, corrupt=True)
            mod = self._import(path)
        self._modules[str(path)] = mod
        return mod

    __call__ = load

    @staticmethod
    def _check(path: Path, text: str) -> str:
        """'ok', 'missing' or 'corrupt' (unreadable, hash line wrong, content differs)."""
        try:
            found = path.read_text()
        except FileNotFoundError:
            return "missing"
        except (OSError, UnicodeDecodeError):
            return "corrupt"
        head, _, body = found.partition("\n")
        if found != text or head != _MAGIC + _digest(body):
            return "corrupt"
        return "ok"

    def _write(self, path: Path, text: str, corrupt: bool) -> None:
        """Atomic write; a rebuilt entry also loses numba's compiled files for it."""
        if corrupt:
            self.rebuilt += 1
            pycache = path.parent / "__pycache__"
            if pycache.is_dir():
                for f in pycache.glob(f"{path.stem}.*"):
                    f.unlink(missing_ok=True)
        else:
            self.written += 1
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    @staticmethod
    def _import(path: Path) -> types.ModuleType:
        name = f"ember_kernels.{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules[name] = mod
        return mod


_default: KernelCache | None = None


def default_cache() -> KernelCache:
    """The process-wide cache over :func:`default_dir`."""
    global _default
    if _default is None:
        _default = KernelCache()
    return _default


def install(cache: KernelCache | None = None) -> KernelCache:
    """Make the backends load generated modules through ``cache`` (default: the default)."""
    cache = cache or default_cache()
    codegen.set_module_loader(cache.load)
    return cache


def _warm_numba() -> None:
    """numba's one-time set-up, the typing and lowering registries it fills on its first
    compilation or cache load (0.3-0.4 s: it imports numba.np.*, which imports SciPy's
    BLAS); done here, under numba's compiler lock, it overlaps with what the program does
    before its first compiled call instead of delaying that call."""
    try:
        from numba.core.compiler_lock import global_compiler_lock
        from numba.core.registry import cpu_target

        from ember.backends import cpu_math  # noqa: F401 (sets numba's CPU features first)
        with global_compiler_lock:
            cpu_target.typing_context.refresh()
            cpu_target.target_context.refresh()
    except Exception:  # an optimisation only: the first compilation does it otherwise
        return


def warm_up_in_background() -> threading.Thread | None:
    """Start :func:`_warm_numba` on a daemon thread (``EMBER_WARMUP=0``: don't)."""
    if os.environ.get("EMBER_WARMUP", "1") == "0":
        return None
    thread = threading.Thread(target=_warm_numba, name="ember-numba-warmup", daemon=True)
    thread.start()
    return thread
