"""``mx.kv`` / ``mx.kvstore``: MXNet's key-value stores; the distributed ones run on MPI."""
from .kvstore import Horovod, KVStore, KVStoreBase, create

__all__ = ["KVStoreBase", "KVStore", "Horovod", "create"]
