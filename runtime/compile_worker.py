"""The compile worker processes of :mod:`ember.runtime.precompile` and
``backends.cpu_tiered``: both sides. The parent starts one with :class:`Worker` and sends it
jobs; the process runs :func:`main`.

Reads one JSON job a line on stdin (``source``, ``backend``, ``func``, ``sigs``: a kernel
module's text as the parent's kernel cache verified it, the function to compile and the
lists of its argument types as :func:`type_spec` data), loads the module
through the kernel cache of ``$EMBER_CACHE_DIR`` (the same file and ``__pycache__`` as the
parent's), compiles the function for those types (numba's ``cache=True`` saves the machine
code, sealed) and answers ``ok`` or ``err <exception name>`` on stdout. Ends at end of
input.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Sequence

from numba.core import types

from .cache import installed

JOB_TIMEOUT_S = 600  # a worker still compiling one kernel after this is killed
_SCALARS = {"int64", "int32", "uint64", "uint32", "float64", "float32", "boolean", "bool"}


def type_spec(t) -> list | None:
    """A numba argument type as JSON data (arrays and plain scalars only), or None."""
    if isinstance(t, types.Array) and isinstance(t.dtype, types.Number | types.Boolean):
        return ["array", str(t.dtype), t.ndim, t.layout, bool(t.mutable is False),
                bool(t.aligned)]
    if isinstance(t, types.Number | types.Boolean) and str(t) in _SCALARS:
        return ["scalar", str(t)]
    return None


def spec_type(spec: list):
    """The numba type of :func:`type_spec` data (ValueError on anything else)."""
    if spec[0] == "scalar" and spec[1] in _SCALARS:
        return getattr(types, spec[1])
    if spec[0] == "array" and len(spec) == 6 and spec[1] in _SCALARS and spec[3] in "CFA":
        return types.Array(getattr(types, spec[1]), int(spec[2]), spec[3],
                           readonly=bool(spec[4]), aligned=bool(spec[5]))
    raise ValueError(f"not an argument type ember precompiles: {spec!r}")


# The worker's start: ``ember`` as a bare package (its ``__path__`` only), so that importing
# ``ember.runtime.compile_worker`` runs none of the front end's imports (``import ember``
# took 1.1 s of the worker's start, 0.4 s without: numba, the runtime and the backends)
_BOOT = """\
import importlib.util, sys, types
spec = importlib.util.find_spec("ember")
pkg = types.ModuleType("ember")
pkg.__path__, pkg.__spec__, pkg.__file__ = list(spec.submodule_search_locations), spec, spec.origin
sys.modules["ember"] = pkg
from ember.runtime.compile_worker import main
sys.exit(main())
"""


def _worker(directory: str) -> subprocess.Popen:
    from numba.core.registry import cpu_target
    # numba keys cached code by (triple, CPU name, features): the worker must build for
    # exactly this process's (cpu_math may have set features at import, racing numba's init)
    _, cpu, features = cpu_target.target_context.codegen().magic_tuple()
    env = dict(os.environ, EMBER_CACHE_DIR=directory, EMBER_WARMUP="0", EMBER_PRECOMPILE="0",
               NUMBA_CPU_NAME=cpu, NUMBA_CPU_FEATURES=features)
    return subprocess.Popen([sys.executable, "-c", _BOOT],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env, text=True, bufsize=1)


class Worker:
    """One compile worker process (:mod:`ember.runtime.compile_worker`) on the kernel cache
    directory ``directory``; ``run`` one job at a time, ``close`` when done."""

    def __init__(self, directory: str):
        self.proc = _worker(directory)   # OSError when it cannot start
        self.alive = True

    def run(self, job: dict) -> bool:
        """Compile ``job`` (from ``precompile._jobs``) there; whether it did. A worker that dies or
        hangs past ``JOB_TIMEOUT_S`` is not alive afterwards."""
        if not self.alive:
            return False
        watchdog = threading.Timer(JOB_TIMEOUT_S, self.proc.kill)
        watchdog.start()
        try:
            data = {k: v for k, v in job.items() if not k.startswith("_")}
            self.proc.stdin.write(json.dumps(data) + "\n")
            self.proc.stdin.flush()
            reply = self.proc.stdout.readline()
        except (OSError, ValueError):
            reply = ""
        finally:
            watchdog.cancel()
        if not reply:
            self.alive = False
        return reply.strip() == "ok"

    def compile(self, calls: Sequence[tuple]) -> int:
        """``precompile.compile_in_worker`` with this worker."""
        from .precompile import compile_in_worker
        return compile_in_worker(calls, self)

    def kill(self) -> None:
        """Stop the worker now (a job it is compiling is lost)."""
        self.alive = False
        try:
            self.proc.kill()
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass

    def close(self) -> None:
        """End the worker (it finishes the job it has, then sees its input close)."""
        self.alive = False
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait()


def usable_directory() -> str | None:
    """The kernel cache directory workers can share with this process, or None."""
    cache = installed()
    try:
        return str(cache.directory) if cache._usable(cache.directory) else None
    except OSError:
        return None


def main() -> int:
    """Serve jobs until stdin closes."""
    from ember.backends import cpu_math  # noqa: F401 (numba's CPU features, as the parent's)
    from ember.runtime.cache import default_cache
    cache = default_cache()
    for line in sys.stdin:
        try:
            job = json.loads(line)
            mod = cache.load(job["source"], job["backend"])
            fn = getattr(mod, job["func"])
            for sig in job["sigs"]:
                fn.compile(tuple(spec_type(s) for s in sig))
            answer = "ok"
        except Exception as e:  # the parent's first call compiles it instead
            answer = f"err {type(e).__name__}"
        sys.stdout.write(answer + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
