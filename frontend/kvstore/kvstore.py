"""MXNet 1.9.1's key-value stores (``mx.kv.create``), the distributed ones on MPI.

``local``/``device`` (and ``nccl``...) hold one array per key in this process: ``push``
sums the values given for a key (one per device), and an optimizer set with
``set_optimizer`` updates the stored value with that sum (else the sum is stored);
``pull`` copies the stored value out. The ``dist_sync``/``dist_device_sync`` stores do the
same with the sum taken over every worker process too, through MPI allreduce: where MXNet's
parameter servers hold the one copy of the weights and apply the optimizer, here each rank
holds an identical copy and applies the same update to the same summed gradient (so
``update_on_kvstore`` works both ways and the optimizer states can be saved on any rank).
``init`` stores rank 0's value everywhere (MXNet: "only the value supplied by worker with
rank 0 is used"). The keys of one call travel together in fused buffers.

As in MXNet, ``dist_sync`` sums gradients over workers: ``trainer.step(batch_size)`` with
each worker's batch size makes steps ``num_workers`` times larger than one process with the
whole batch; pass the global batch size (or use ``ember.distributed.DistributedTrainer``,
which averages) for the single-process numbers.

``dist_async`` needs parameter servers that apply each worker's gradients as they arrive;
MPI collectives are synchronous, so it is refused with that reason. ``horovod`` is MXNet
2's allreduce-only store (``pushpull`` sums in place, ``broadcast`` from rank 0, no
optimizer on the store).
"""
from __future__ import annotations

import pickle

import numpy as np

from ember import optimizer as opt
from ember.base import MXNetError

from . import _mpi

__all__ = ["KVStoreBase", "KVStore", "Horovod", "create"]

_LOCAL = ("local", "device", "nccl", "local_update_cpu", "local_allreduce_cpu",
          "local_allreduce_device")
_DIST = ("dist_sync", "dist_device_sync", "dist")


def _as_list(x) -> list:
    return list(x) if isinstance(x, list | tuple) else [x]


def _pairs(key, value) -> list[tuple]:
    """(key, [arrays]) pairs of MXNet's key/value argument forms."""
    if isinstance(key, list | tuple):
        values = _as_list(value)
        if len(values) != len(key):
            raise MXNetError(f"kvstore: {len(key)} keys but {len(values)} values")
        return [(k, _as_list(v)) for k, v in zip(key, values)]
    return [(key, _as_list(value))]


class KVStoreBase:
    """The interface of every key-value store (MXNet's ``mx.kv.KVStoreBase``)."""

    OPTIMIZER = "optimizer"
    kv_registry: dict = {}

    def broadcast(self, key, value, out, priority: int = 0):
        raise NotImplementedError()

    def pushpull(self, key, value, out=None, priority: int = 0):
        raise NotImplementedError()

    def set_optimizer(self, optimizer):
        raise NotImplementedError()

    def is_capable(self, capability: str) -> bool:
        raise NotImplementedError()

    def save_optimizer_states(self, fname: str, dump_optimizer: bool = False):
        raise NotImplementedError()

    def load_optimizer_states(self, fname: str):
        raise NotImplementedError()

    @property
    def type(self) -> str:
        raise NotImplementedError()

    @property
    def rank(self) -> int:
        raise NotImplementedError()

    @property
    def num_workers(self) -> int:
        raise NotImplementedError()

    @staticmethod
    def register(klass):
        """Register a KVStoreBase subclass under its lower-case class name for ``create``."""
        KVStoreBase.kv_registry[klass.__name__.lower()] = klass
        return klass


class KVStore(KVStoreBase):
    """A local or (over MPI) synchronous distributed key-value store; see the module doc."""

    def __init__(self, kind: str = "local"):
        self._type = kind
        self._store: dict = {}
        self._updater = None
        self._world = _mpi.world() if kind.startswith("dist") else None

    @property
    def type(self) -> str:
        return self._type

    @property
    def rank(self) -> int:
        return self._world.rank if self._world else 0

    @property
    def num_workers(self) -> int:
        return self._world.size if self._world else 1

    def is_capable(self, capability: str) -> bool:
        if capability.lower() == KVStoreBase.OPTIMIZER:
            return True
        raise ValueError(f"Unknown capability: {capability}")

    def init(self, key, value):
        """Store each key's value (rank 0's, on every rank); a key is initialised once."""
        pairs = _pairs(key, value)
        for k, _ in pairs:
            if k in self._store:
                raise MXNetError(f"kvstore: key {k!r} is already initialised (duplicate "
                                 "init)")
        arrays = [np.array(v[0].asnumpy(), copy=True, order="C") for _, v in pairs]
        if self._world:
            self._world.broadcast_arrays(arrays, root=0)
        for (k, v), a in zip(pairs, arrays):
            from ember.ndarray.ndarray import NDArray
            self._store[k] = NDArray(a, v[0].context)

    def _stored(self, k):
        if k not in self._store:
            raise MXNetError(f"kvstore: key {k!r} has not been initialised (call init "
                             "first)")
        return self._store[k]

    def push(self, key, value, priority: int = 0):
        """Sum each key's values (over devices, and over workers for ``dist_*``), then
        update the stored value with it (optimizer set) or store it."""
        pairs = _pairs(key, value)
        merged = []
        for k, vals in pairs:
            stored = self._stored(k)
            total = np.array(vals[0].asnumpy(), dtype=stored.dtype, copy=True, order="C")
            for v in vals[1:]:
                total += v.asnumpy()
            merged.append(total)
        if self._world:
            self._world.allreduce_arrays(merged)
        from ember.ndarray.ndarray import NDArray
        for (k, _), total in zip(pairs, merged):
            stored = self._store[k]
            if self._updater is not None:
                self._updater(k, NDArray(total, stored.context), stored)
            else:
                stored._data[...] = total

    def pull(self, key, out=None, priority: int = 0, ignore_sparse: bool = True):
        """Copy each key's stored value into its output array(s)."""
        if out is None:
            raise MXNetError("kvstore.pull needs out= arrays to copy the values into")
        for k, outs in _pairs(key, out):
            src = self._stored(k)._data
            for o in outs:
                o._data[...] = src

    def row_sparse_pull(self, key, out=None, priority: int = 0, row_ids=None):
        """ember stores arrays densely: the whole value is pulled."""
        self.pull(key, out=out, priority=priority)

    def pushpull(self, key, value, out=None, priority: int = 0):
        """``push`` then ``pull`` (into ``value`` itself when ``out`` is None)."""
        self.push(key, value, priority)
        self.pull(key, value if out is None else out, priority)

    def broadcast(self, key, value, out, priority: int = 0):
        """``init`` with rank 0's value, then ``pull`` it into ``out``."""
        self.init(key, value)
        self.pull(key, out, priority)

    def set_optimizer(self, optimizer):
        """Update stored values with ``optimizer`` on push (on every rank alike)."""
        self._updater = opt.get_updater(optimizer)

    def set_gradient_compression(self, compression_params):
        raise MXNetError("kvstore: gradient compression is not supported by ember's MPI "
                         "kvstore (gradients travel in full precision)")

    def save_optimizer_states(self, fname: str, dump_optimizer: bool = False):
        """Write the updater's states (identical on every rank) to ``fname``."""
        if self._updater is None:
            raise MXNetError("kvstore: no optimizer is set (set_optimizer first)")
        with open(fname, "wb") as f:
            f.write(self._updater.get_states(dump_optimizer))

    def load_optimizer_states(self, fname: str):
        """Read states written by :meth:`save_optimizer_states`."""
        if self._updater is None:
            raise MXNetError("kvstore: no optimizer is set (set_optimizer first)")
        from ember.gluon.trainer import _load_states_file
        self._updater.set_states(pickle.dumps(_load_states_file(fname)))

    def barrier(self):
        """Wait for every worker (a no-op in one process)."""
        if self._world:
            self._world.barrier()

    _barrier = barrier

    def _send_command_to_servers(self, head, body):
        raise MXNetError("kvstore: ember's MPI kvstore has no server processes")


@KVStoreBase.register
class Horovod(KVStoreBase):
    """MXNet 2's ``horovod`` store: allreduce (sum) and broadcast, no optimizer."""

    def __init__(self):
        self._world = _mpi.world()

    @property
    def type(self) -> str:
        return "horovod"

    @property
    def rank(self) -> int:
        return self._world.rank

    @property
    def num_workers(self) -> int:
        return self._world.size

    def is_capable(self, capability: str) -> bool:
        if capability.lower() == KVStoreBase.OPTIMIZER:
            return False
        raise ValueError(f"Unknown capability: {capability}")

    def broadcast(self, key, value, out, priority: int = 0):
        """Rank 0's ``value`` into every ``out``."""
        for (_, vals), (_, outs) in zip(_pairs(key, value), _pairs(key, out)):
            buf = np.array(vals[0].asnumpy(), copy=True, order="C")
            self._world.broadcast_arrays([buf])
            for o in outs:
                o._data[...] = buf

    def pushpull(self, key, value, out=None, priority: int = 0):
        """Each value summed over the ranks (in place, or into ``out``), fused."""
        vals = [v for _, vs in _pairs(key, value) for v in vs]
        outs = vals if out is None else [o for _, os_ in _pairs(key, out) for o in os_]
        bufs = [np.array(v.asnumpy(), copy=True, order="C") for v in vals]
        self._world.allreduce_arrays(bufs)
        for o, b in zip(outs, bufs):
            o._data[...] = b

    def set_optimizer(self, optimizer):
        raise MXNetError("kvstore 'horovod' does not run optimizers (update_on_kvstore "
                         "must be False)")

    def save_optimizer_states(self, fname: str, dump_optimizer: bool = False):
        raise MXNetError("kvstore 'horovod' holds no optimizer states")

    load_optimizer_states = save_optimizer_states

    def barrier(self):
        self._world.barrier()

    _barrier = barrier


def create(name: str = "local") -> KVStoreBase:
    """A new key-value store: ``'local'``, ``'device'``, ``'dist_sync'``,
    ``'dist_device_sync'`` or ``'horovod'`` (or a registered KVStoreBase subclass name)."""
    if not isinstance(name, str):
        raise TypeError("name must be a string")
    name = name.lower()
    if name in KVStoreBase.kv_registry:
        return KVStoreBase.kv_registry[name]()
    if name in _LOCAL or name in _DIST:
        return KVStore(name)
    if "async" in name:
        raise MXNetError(f"kvstore '{name}': asynchronous training needs parameter servers "
                         "that apply each worker's gradients as they arrive; ember's "
                         "distributed kvstores run on MPI collectives, where every rank takes "
                         "part in each step. Use 'dist_sync' (or 'horovod').")
    known = sorted({"local", "device", "dist_sync", "dist_device_sync"}
                   | set(KVStoreBase.kv_registry))
    raise MXNetError(f"Unknown kvstore type '{name}'; ember has {', '.join(known)}")
