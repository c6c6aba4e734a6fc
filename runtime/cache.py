"""The on-disk kernel cache: generated kernel modules as files, so numba's cache works.

numba's ``cache=True`` stores compiled machine code next to a function's source file
(``__pycache__/*.nbi|nbc``) and can only do so when the function comes from a real file. The
backends generate source text, so this cache writes each module to
``$EMBER_CACHE_DIR`` (default ``$XDG_CACHE_HOME/ember/kernels``, i.e.
``~/.cache/ember/kernels``) under a name derived from its key: a second process finds both
the module and numba's compiled code and compiles nothing (DESIGN.md s.6).

Key = SHA-256 of (kernel source, backend, numba version, host CPU name from llvmlite), so a
numba upgrade or another CPU never reuses machine code built for something else.

Only ember's own files are ever loaded (docs/trust.md):

- the directory (and its ``__pycache__``) is created 0700 and used only while it is owned by
  this user and not group- or world-writable; otherwise kernels compile in memory, uncached,
  with one warning;
- a module is never imported from the file: the file must hold exactly the text ember
  generates (hash line included), and that verified text, not the file, is compiled and run,
  with ``__file__`` set so numba's cache locator finds the file; Python's ``.pyc`` files are
  neither read nor written;
- numba's index and data files of ember's kernels (``ember_kernels.*.nbi|nbc``) are sealed by
  :mod:`ember.runtime.numba_seal`: written with a SHA-256 header, and read only when they
  belong to this user, are not group/world-writable and match their seal. A damaged,
  truncated or foreign file is deleted and the kernel recompiled (and cached again).

A missing entry is first looked for among the kernels compiled at install time
(:mod:`ember.runtime.prebuilt`), with the same checks.

Files are written atomically (temporary file + ``os.replace``); temporary files of a killed
writer are removed by the next write of the same entry.
"""
from __future__ import annotations

import hashlib
import os
import stat
import sys
import tempfile
import threading
import types
import warnings
from pathlib import Path

import llvmlite.binding as llvm
import numba

from ember.backends import codegen

from . import numba_seal, prebuilt
from .numba_seal import unsafe_reason

_ENV = "EMBER_CACHE_DIR"
_MAGIC = "# ember-kernel sha256="
_MODULE_PREFIX = numba_seal.MODULE_PREFIX


def default_dir() -> Path:
    """``$EMBER_CACHE_DIR``, else ``$XDG_CACHE_HOME/ember/kernels`` (``~/.cache``)."""
    env = os.environ.get(_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "ember" / "kernels"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def prepare_dir(directory: Path) -> str | None:
    """Create ``directory`` and its ``__pycache__`` 0700 if missing; the reason they may
    not be used, or None. (OSError when they cannot be created.)"""
    for d in (directory, directory / "__pycache__"):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = os.stat(d)
        if not stat.S_ISDIR(st.st_mode):
            return f"{d} is not a directory"
        reason = unsafe_reason(st)
        if reason:
            return f"{d} is {reason}"
    return None


class KernelCache:
    """Loads generated modules through files in a directory (``None``: :func:`default_dir`,
    looked up at each load so that ``EMBER_CACHE_DIR`` may change)."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self._directory = None if directory is None else Path(directory)
        self._modules: dict[str, types.ModuleType] = {}
        self._refused: dict[Path, str] = {}  # directories found unsafe (warned once each)
        self.rebuilt = 0   # entries found corrupt and written again (for tests and reports)
        self.written = 0   # entries written because they were missing
        self.adopted = 0   # entries copied from the install's prebuilt kernels (prebuilt)
        self.uncompiled = 0  # modules loaded without numba's compiled code (compile at 1st call)
        self.sources: dict[str, str] = {}  # module name -> the verified source it runs
        numba_seal.install()

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

    def _usable(self, directory: Path) -> bool:
        """Whether ``directory`` may hold cache files (warns once when it may not)."""
        if directory in self._refused:
            return False
        reason = prepare_dir(directory)
        if reason is None:
            return True
        self._refused[directory] = reason
        warnings.warn(f"ember kernel cache not used: {reason}; kernels are compiled in "
                      f"memory, uncached (set {_ENV} to a private directory)",
                      RuntimeWarning, stacklevel=3)
        return False

    def load(self, source: str, backend: str) -> types.ModuleType:
        """The module of ``source`` (written to the cache first if missing or corrupt).

        Falls back to an in-memory module when the directory cannot be written or trusted.
        """
        path = self.path(source, backend)
        mod = self._modules.get(str(path))
        if mod is not None:
            return mod
        text = f"{_MAGIC}{_digest(source)}\n{source}"
        try:
            if not self._usable(path.parent):
                return self._in_memory(source, backend)
            state = self._check(path, text)
            if state == "missing" and prebuilt.adopt(path, text):
                state = "ok"
                self.adopted += 1
            if state != "ok":
                self._write(path, text, corrupt=state == "corrupt")
        except OSError:
            return self._in_memory(source, backend)
        if backend == "cuda":  # numba-cuda has its own copy of numba's cache file class
            numba_seal.install_cuda()
        mod = self._exec(path, text)
        self._modules[str(path)] = mod
        self.sources[mod.__name__] = source
        if state != "ok" or not self._compiled(path):
            self.uncompiled += 1
        return mod

    def _in_memory(self, source: str, backend: str) -> types.ModuleType:
        self.uncompiled += 1
        return codegen._load_in_memory(source, backend)

    @staticmethod
    def backend_of(module_name: str) -> str:
        """The backend a kernel module loaded by this cache was generated for."""
        return module_name[len(_MODULE_PREFIX):].split("_", 1)[0]

    def compiled_before(self, source: str, backend: str) -> bool:
        """Whether numba's index for ``source``'s module exists (``_compiled``)."""
        return self._compiled(self.path(source, backend))

    @staticmethod
    def _compiled(path: Path) -> bool:
        """Whether numba's index of the module at ``path`` exists (its kernels were
        compiled and saved by some process; whether for these argument types is numba's
        to find out)."""
        return path.stem in _indexed(path.parent / "__pycache__")

    __call__ = load

    @staticmethod
    def _check(path: Path, text: str) -> str:
        """'ok', 'missing' or 'corrupt' (unreadable, not ours, hash line wrong, differs)."""
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return "missing"
        except OSError:
            return "corrupt"
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or unsafe_reason(st):
                return "corrupt"
            with os.fdopen(fd, "rb", closefd=False) as f:
                found = f.read(len(text.encode()) + 1).decode()
        except (OSError, UnicodeDecodeError):
            return "corrupt"
        finally:
            os.close(fd)
        head, _, body = found.partition("\n")
        if found != text or head != _MAGIC + _digest(body):
            return "corrupt"
        return "ok"

    def _write(self, path: Path, text: str, corrupt: bool) -> None:
        """Atomic write; a rebuilt entry also loses numba's compiled files for it, and a
        killed writer's temporary files of this entry go."""
        if corrupt:
            self.rebuilt += 1
            numba_seal.remove_numba_files(path)
            path.unlink(missing_ok=True)  # also a symlink or a foreign file
        else:
            self.written += 1
        for stale in path.parent.glob(f".{path.stem}.*.tmp"):
            stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    @staticmethod
    def _exec(path: Path, text: str) -> types.ModuleType:
        """Run the verified ``text`` as the module of ``path``: compiled here, never imported
        (so no ``.pyc`` is read or written); ``__file__`` lets numba find its cache."""
        name = f"{_MODULE_PREFIX}{path.stem}"
        mod = types.ModuleType(name)
        mod.__file__ = str(path)
        # text is ember's own generated source, checked against its hash line before this
        exec(compile(text, str(path), "exec", dont_inherit=True), mod.__dict__)
        sys.modules[name] = mod
        return mod


_default: KernelCache | None = None


def default_cache() -> KernelCache:
    """The process-wide cache over :func:`default_dir`."""
    global _default
    if _default is None:
        _default = KernelCache()
    return _default


_INDEXED: dict[str, tuple[int, frozenset]] = {}
_indexed_lock = threading.Lock()


def _indexed(folder: Path) -> frozenset:
    """The module stems with a numba index (``<stem>.<function>-<line>.pyXY.nbi``) in
    ``folder``, listed again only when the folder changed (its mtime): a glob per kernel
    listed the whole folder each time, 0.26 s of a warm ResNet-18 first step over a cache
    of 7,000 files."""
    try:
        mtime = os.stat(folder).st_mtime_ns
    except OSError:
        return frozenset()
    with _indexed_lock:
        got = _INDEXED.get(str(folder))
        if got is not None and got[0] == mtime:
            return got[1]
        try:
            names = os.listdir(folder)
        except OSError:
            return frozenset()
        stems = frozenset(n.split(".", 1)[0] for n in names if n.endswith(".nbi"))
        _INDEXED[str(folder)] = (mtime, stems)
        return stems


def installed() -> KernelCache:
    """The cache the backends load generated modules through (:func:`install`'s), else the
    default."""
    cache = getattr(codegen._loader, "__self__", None)
    return cache if isinstance(cache, KernelCache) else default_cache()


def install(cache: KernelCache | None = None) -> KernelCache:
    """Make the backends load generated modules through ``cache`` (default: the default)."""
    # numba's CPU features are part of every cached kernel's key and are fixed when numba
    # first compiles or loads anything: cpu_math sets them at import (8 ms), so do that now,
    # not in the warm-up thread, which raced with the first kernel of a process
    from ember.backends import cpu_math  # noqa: F401
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
