"""The MPI layer under ember's data parallelism (``dist_*`` kvstores, ``ember.distributed``).

MPI comes from ``mpi4py`` (``pip install 'ember[dist]'`` brings it with an MPI library);
the process group is ``MPI.COMM_WORLD`` as ``mpirun -n N`` (or ``ember launch``) starts it.
Gradients travel as few large messages: :func:`allreduce_arrays` packs many arrays of one
dtype into one flat buffer of at most ``$EMBER_FUSION_BYTES`` (64 MiB by default, Horovod's
fusion buffer) and makes one ``MPI_Allreduce`` per buffer.

A job never hangs on a lost rank: an uncaught exception on any rank prints its traceback
and calls ``MPI_Abort`` (which ends every rank: the launcher kills them), and a watchdog
thread aborts the job with a message naming the collective when one waits longer than
``$EMBER_DIST_TIMEOUT`` seconds (300 by default, 0 disables it): a rank that left the
training loop early, or died in a way the launcher did not see, ends the job instead.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np

from ember.base import MXNetError

INSTALL_HINT = "pip install 'ember[dist]'"
ABORT_GRACE_S = 0.3   # before MPI_Abort, for mpiexec to forward what the rank wrote
_MPI_DTYPES = ("float32", "float64", "int32", "int64", "uint8", "int8")
_lock = threading.Lock()
_world: World | None = None


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise MXNetError(f"distributed training needs MPI through mpi4py, which is not "
                         f"installed ({e}): {INSTALL_HINT} installs mpi4py with an MPI "
                         "library; then start the job with `mpirun -n N python train.py` "
                         "or `ember launch -n N train.py`") from None
    except RuntimeError as e:  # mpi4py present, no MPI library it can load
        raise MXNetError(f"mpi4py cannot load an MPI library ({e}): {INSTALL_HINT} "
                         "installs one (MPICH from PyPI), or install Open MPI or MPICH "
                         "from your system's packages") from None
    return MPI


def available() -> bool:
    """True when mpi4py is installed (checked without initialising MPI in this process)."""
    import importlib.util
    return importlib.util.find_spec("mpi4py") is not None


class World:
    """The process group (MPI's COMM_WORLD) with ranks on this host, a watchdog and fused
    scratch buffers."""

    def __init__(self):
        MPI = self.MPI = _import_mpi()
        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        started = max(int(os.environ.get(v, "1") or 1) for v in ("PMI_SIZE",
                                                                   "OMPI_COMM_WORLD_SIZE"))
        if self.size == 1 and started > 1:
            raise MXNetError(f"this process was started as one of {started} ranks, but the "
                             f"MPI library mpi4py loaded ({MPI.Get_library_version()[:40]!r}) "
                             "sees one: the mpiexec that started the job belongs to another "
                             "MPI library; use `ember launch` or that library's mpiexec")
        self.timeout = float(os.environ.get("EMBER_DIST_TIMEOUT", "300"))
        self.fusion_bytes = int(os.environ.get("EMBER_FUSION_BYTES", str(64 << 20)))
        self._scratch: dict = {}
        self.calls = 0                    # MPI collectives made (fusion keeps this low)
        self._busy: tuple | None = None   # (what, since) of the collective in progress
        if self.size > 1:
            self._install_abort_on_error()
            if self.timeout > 0:
                threading.Thread(target=self._watch, name="ember-dist-watchdog",
                                 daemon=True).start()

    # ---- failure handling ------------------------------------------------------------------
    def _install_abort_on_error(self):
        previous = sys.excepthook

        def abort_on_error(kind, value, tb):
            previous(kind, value, tb)
            self._abort(f"rank {self.rank} stopped with an uncaught {kind.__name__}")
        sys.excepthook = abort_on_error

    def _abort(self, why: str):
        msg = (f"ember.distributed: {why}; aborting all {self.size} ranks of the job "
               "(MPI_Abort)\n")
        try:
            for f in (sys.stdout, sys.stderr):
                try:
                    f.flush()
                except (AttributeError, OSError, ValueError):
                    pass
            os.write(2, msg.encode())
            # mpiexec forwards a rank's output through a pipe; MPI_Abort at once lost the
            # end of the traceback and this line (seen under load): give it a moment
            time.sleep(ABORT_GRACE_S)
        finally:
            self.comm.Abort(1)

    def _watch(self):
        step = min(1.0, self.timeout / 4)
        while True:
            time.sleep(step)
            busy = self._busy
            if busy is not None and time.monotonic() - busy[1] > self.timeout:
                self._abort(f"rank {self.rank} waited more than {self.timeout:g} s in "
                            f"{busy[0]} for the other ranks: a rank died, hangs or left the "
                            "training loop early (set $EMBER_DIST_TIMEOUT to wait longer)")

    @contextmanager
    def _guard(self, what: str):
        self.calls += 1
        self._busy = (what, time.monotonic())
        try:
            yield
        except self.MPI.Exception as e:
            raise MXNetError(f"ember.distributed: {what} failed on rank {self.rank} of "
                             f"{self.size}: {e.Get_error_string()}") from None
        finally:
            self._busy = None

    # ---- collectives ----------------------------------------------------------------------
    def barrier(self):
        """Wait until every rank reaches this call."""
        with self._guard("barrier"):
            self.comm.Barrier()

    def bcast_object(self, obj, root: int = 0):
        """A picklable object from ``root`` on every rank."""
        with self._guard("broadcast of an object"):
            return self.comm.bcast(obj, root=root)

    def allgather_object(self, obj) -> list:
        """Every rank's object, in rank order."""
        with self._guard("allgather of objects"):
            return self.comm.allgather(obj)

    def _buffer(self, dtype, n: int) -> np.ndarray:
        buf = self._scratch.get(dtype)
        if buf is None or buf.size < n:
            buf = self._scratch[dtype] = np.empty(max(n, 1), dtype)
        return buf[:n]

    def _buckets(self, arrays: list[np.ndarray]):
        """Groups of indices into ``arrays``: one dtype each, at most fusion_bytes (an array
        larger than that alone), in the given order."""
        by_dtype: dict = {}
        for i, a in enumerate(arrays):
            by_dtype.setdefault(a.dtype, []).append(i)
        for idx in by_dtype.values():
            group, nbytes = [], 0
            for i in idx:
                if group and nbytes + arrays[i].nbytes > self.fusion_bytes:
                    yield group
                    group, nbytes = [], 0
                group.append(i)
                nbytes += arrays[i].nbytes
            if group:
                yield group

    def allreduce_arrays(self, arrays: list[np.ndarray], average: bool = False) -> int:
        """Sum (or average) each array over the ranks, in place, in fused buffers; returns the
        number of MPI calls made."""
        if self.size == 1:
            return 0
        calls = 0
        for group in self._buckets(arrays):
            dtype = arrays[group[0]].dtype
            wire = dtype if dtype.name in _MPI_DTYPES else np.dtype("float32")
            total = sum(arrays[i].size for i in group)
            buf = self._buffer(wire, total)
            off = 0
            for i in group:
                buf[off:off + arrays[i].size] = arrays[i].reshape(-1)
                off += arrays[i].size
            with self._guard(f"allreduce of {len(group)} arrays ({buf.nbytes} bytes)"):
                self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
            calls += 1
            if average:
                buf /= self.size  # float division; integer arrays round toward zero below
            off = 0
            for i in group:
                a = arrays[i]
                a[...] = buf[off:off + a.size].reshape(a.shape).astype(a.dtype, copy=False)
                off += a.size
        return calls

    def broadcast_arrays(self, arrays: list[np.ndarray], root: int = 0) -> int:
        """Overwrite each array with ``root``'s, in fused buffers; returns the MPI calls made.
        Every rank must pass arrays of the same shapes and dtypes (checked first)."""
        if self.size == 1:
            return 0
        sig = [(a.shape, a.dtype.str) for a in arrays]
        sigs = self.allgather_object(sig)
        for r, other in enumerate(sigs):
            if other != sig:
                bad = next((i for i, (x, y) in enumerate(zip(sig, other)) if x != y),
                           min(len(sig), len(other)))
                raise MXNetError(f"ember.distributed: broadcast of {len(sig)} arrays: rank "
                                 f"{r} has {len(other)} arrays, array {bad} differs "
                                 f"({other[bad:bad + 1]} on rank {r}, {sig[bad:bad + 1]} on "
                                 f"rank {self.rank}): every rank must build the same model")
        calls = 0
        for group in self._buckets(arrays):
            dtype = arrays[group[0]].dtype
            total = sum(arrays[i].size for i in group)
            buf = self._buffer(np.dtype(dtype), total)
            off = 0
            if self.rank == root:
                for i in group:
                    buf[off:off + arrays[i].size] = arrays[i].reshape(-1)
                    off += arrays[i].size
            with self._guard(f"broadcast of {len(group)} arrays ({buf.nbytes} bytes)"):
                self.comm.Bcast(buf.view(np.uint8), root=root)
            calls += 1
            off = 0
            for i in group:
                arrays[i][...] = buf[off:off + arrays[i].size].reshape(arrays[i].shape)
                off += arrays[i].size
        return calls


def world() -> World:
    """The process group, set up at the first call (MPI initialised by mpi4py)."""
    global _world
    with _lock:
        if _world is None:
            _world = World()
        return _world


def initialized() -> bool:
    """True once :func:`world` has set the process group up."""
    return _world is not None
