"""Whole compiled programs on disk: a warm process skips the passes (DESIGN.md s.6).

The kernel cache (:mod:`ember.runtime.cache`) keeps each generated kernel and numba's
machine code for it. This cache keeps what produced them: the optimised, fused and
memory-planned IR of every graph a compilation made (as the IR text of
:mod:`ember.ir.printer`), plus a little JSON the caller needs with them (which forward
outputs are the backward's residuals). Its key hashes the IR text given to the passes, the
caller's description of what it asked for (pass lists, which gradients), the backend, the
numba version, the host CPU, and the source files of the code that made the entry (the ops
and passes: an edited pass never meets an entry of its old self). A second process with the
same model thus traces (cheap), reads this entry instead of running autodiff, shape
inference, simplification, fusion and memory planning, generates the run loop from the
planned IR and loads every kernel from the kernel cache: no numba compilation.

Entries live in the kernel cache's directory as ``program_<hash>.ir`` and follow its trust
rules (docs/trust.md): used only while the directory is private to this user; a file is
read only when it is a regular file of this user, not group- or world-writable, and its
first line holds the SHA-256 of the rest; the rest is JSON (never pickle) whose graph texts
are parsed, not executed, and verified. Anything else (truncated, edited, foreign, not
parsable) is deleted, counted in :data:`STATS` ``["discarded"]``, and the program built and
stored again. ``EMBER_PROGRAM_CACHE=0`` turns the cache off.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import llvmlite.binding as llvm
import numba
import numpy as np

from ember.ir.graph import Graph
from ember.ir.printer import parse_graph, print_graph
from ember.ir.verify import verify

from .cache import default_cache
from .numba_seal import unsafe_reason

_MAGIC = "# ember-program sha256="
_FORMAT = "1"
# "hit", "miss", "stored", "discarded" (damaged entries deleted), "unusable" (no cache dir),
# "uncacheable" (a graph whose text does not say everything about it: see cacheable)
STATS: Counter = Counter()
_FINGERPRINTS: dict[tuple, str] = {}
_LOCK = threading.Lock()

Build = Callable[[], tuple[Sequence[Graph], dict]]


def enabled() -> bool:
    """Whether whole programs are cached (``EMBER_PROGRAM_CACHE``, default on). Off while
    ``EMBER_DUMP`` asks for the IR after passes: a hit would run no pass, so print nothing."""
    if os.environ.get("EMBER_DUMP", "").strip():
        return False
    return os.environ.get("EMBER_PROGRAM_CACHE", "1") != "0"


def code_fingerprint(sources: Iterable[str | os.PathLike]) -> str:
    """SHA-256 over the ``.py`` files of ``sources`` (directories, searched recursively, or
    files): names and contents. Computed once per process for each set of sources."""
    key = tuple(str(s) for s in sources)
    with _LOCK:
        found = _FINGERPRINTS.get(key)
    if found is not None:
        return found
    h = hashlib.sha256()
    for src in key:
        p = Path(src)
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        for f in files:
            h.update(f"\0{f.relative_to(p) if p.is_dir() else f.name}\0".encode())
            with open(f, "rb") as fh:
                h.update(hashlib.file_digest(fh, "sha256").digest())
    digest = h.hexdigest()
    with _LOCK:
        _FINGERPRINTS[key] = digest
    return digest


def _strip_timings(text: str) -> str:
    """IR text without its ``pass_ms`` meta lines (wall times, different every run)."""
    return "\n".join(ln for ln in text.split("\n") if not ln.startswith("# meta: pass_ms."))


def key(graph_text: str, request: str, backend: str, code: str) -> str:
    """The entry's hash: the input IR, the request, backend, numba, CPU and code versions."""
    h = hashlib.sha256()
    for part in (_FORMAT, _strip_timings(graph_text), request, backend, numba.__version__,
                 llvm.get_host_cpu_name(), code):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:32]


def _plain_value(v) -> bool:
    if v is None or isinstance(v, bool | int | float | str | np.generic):
        return True
    if isinstance(v, tuple | list):
        return all(_plain_value(x) for x in v)
    if isinstance(v, dict):
        return all(_plain_value(k) and _plain_value(x) for k, x in v.items())
    return False


def cacheable(graph: Graph) -> bool:
    """Whether ``graph``'s text says all there is to it: every attribute a plain literal.
    (An array or object attribute prints as a summary or an address: two different graphs
    could share a key.)"""
    for node in graph.nodes:
        if not all(_plain_value(v) for _, v in node.attrs or ()):
            return False
        body = getattr(node, "body", None)
        if body is not None and not cacheable(body):
            return False
    return True


def _read(path: Path) -> str | None:
    """The verified body of the entry at ``path``; None when missing; raises ValueError
    when it exists but may not be used."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ValueError(f"cannot open: {e}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        reason = unsafe_reason(st)
        if reason:
            raise ValueError(reason)
        data = f.read()
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    head, _, body = text.partition("\n")
    if head != _MAGIC + hashlib.sha256(body.encode()).hexdigest():
        raise ValueError("its hash line does not match its content")
    return body


def _decode(body: str, n_graphs: int | None = None) -> tuple[list[Graph], dict]:
    """Graphs and extra data of a verified entry body (ValueError when malformed)."""
    try:
        doc = json.loads(body)   # data only: JSON, never pickle
        texts, extra = doc["graphs"], doc["extra"]
        if not isinstance(texts, list) or not isinstance(extra, dict):
            raise TypeError("bad layout")
        graphs = [parse_graph(t) for t in texts]  # a parser: nothing in it is executed
        for g in graphs:
            verify(g)
    except Exception as e:
        raise ValueError(f"malformed entry ({type(e).__name__}: {e})") from None
    return graphs, extra


def _write(path: Path, graphs: Sequence[Graph], extra: dict) -> None:
    body = json.dumps({"graphs": [print_graph(g) for g in graphs], "extra": extra})
    text = f"{_MAGIC}{hashlib.sha256(body.encode()).hexdigest()}\n{body}"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def directory() -> Path | None:
    """Where entries live (the kernel cache's directory), or None when it is unusable."""
    cache = default_cache()
    d = cache.directory
    try:
        return d if cache._usable(d) else None
    except OSError:
        return None


def cached(graph: Graph, request: str, backend: str, code: Iterable[str | os.PathLike],
           build: Build) -> tuple[list[Graph], dict]:
    """The graphs and extra data that ``build()`` makes from ``graph``, from the cache when
    a process already built them for the same key (module docstring), else built and
    stored. ``request`` describes everything besides ``graph`` that the result depends on;
    ``code`` the source directories or files of the code that builds it.

    The graphs returned on a hit are parsed from the entry: new Values, in the same order
    (inputs, params, outputs) as the built ones.
    """
    if not enabled():
        graphs, extra = build()
        return list(graphs), extra
    where = directory()
    if where is None or not cacheable(graph):
        STATS["unusable" if where is None else "uncacheable"] += 1
        graphs, extra = build()
        return list(graphs), extra
    path = where / f"program_{key(print_graph(graph), request, backend, code_fingerprint(code))}.ir"
    try:
        body = _read(path)
        if body is not None:
            graphs, extra = _decode(body)
            STATS["hit"] += 1
            return graphs, extra
        STATS["miss"] += 1
    except ValueError:
        STATS["discarded"] += 1
        try:
            path.unlink()
        except OSError:
            pass
    graphs, extra = build()
    graphs = list(graphs)
    try:
        _write(path, graphs, extra)
        STATS["stored"] += 1
    except (OSError, TypeError, ValueError):  # a full disk or an extra that is not JSON:
        pass                                  # the program still runs, uncached
    return graphs, extra
