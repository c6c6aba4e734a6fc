"""``gluon.Trainer``: applies an optimizer to a set of Parameters after ``backward``.

MXNet 1.9.1's Trainer: with ``kvstore`` ``'device'``/``'local'`` (or ``None``) the
gradients of a parameter's contexts are summed (MXNet's allreduce) and every context's copy
is then updated by its own Updater, so the copies stay equal. With a distributed kvstore
(``'dist_sync'``, ``'dist_device_sync'``, ``'horovod'`` or a KVStore object; MPI, see
``ember.kvstore``) rank 0's parameters are broadcast when the Trainer is made (deferred
ones when the first forward initialises them: earlier than MXNet, which broadcasts at the
first step, after each rank's first backward), gradients are summed over the workers in
fused allreduces and the update runs on the kvstore (``update_on_kvstore``, the default
for ``dist_*``) or here.
Inside a compiled ``@ember.compile`` step the sum is an op of the graph between the
backward and the update. A parameter whose gradient was not written by ``backward``
since the last step is stale (``_fresh_grad`` on its data array, set by ember's autograd):
``step`` raises, or skips it with ``ignore_stale_grad=True``.
"""
from __future__ import annotations

import io
import os
import pickle

import numpy as np

from ember import optimizer as opt
from ember import trace_state
from ember.base import MXNetError
from ember.ndarray.device import assign
from ember.runtime import thread_pools as _threads

from .parameter import Parameter, ParameterDict

__all__ = ["Trainer"]

_LOCAL_KVSTORES = ("local", "device", "nccl", "local_update_cpu", "local_allreduce_cpu",
                   "local_allreduce_device")


def _check_kvstore(kvstore):
    from ember.kvstore import KVStoreBase, create
    from ember.kvstore._mpi import _import_mpi
    if kvstore is None or kvstore is False or isinstance(kvstore, KVStoreBase):
        return
    if not isinstance(kvstore, str):
        raise TypeError("kvstore must be KVStore, str or None")
    if _is_distributed(kvstore):
        if "async" in kvstore:
            create(kvstore)  # raises, saying why
        _import_mpi()  # without mpi4py: says how to install it
        return
    if kvstore not in _LOCAL_KVSTORES:
        raise MXNetError(f"Unknown kvstore type '{kvstore}'; ember supports 'device', "
                         "'local', 'dist_sync', 'dist_device_sync', 'horovod' and None.")


def _is_distributed(kvstore) -> bool:
    """A kvstore name or object that makes a kvstore in this Trainer (dist_* or horovod,
    or a KVStore object); local names sum over contexts here."""
    if isinstance(kvstore, str):
        return kvstore.startswith("dist") or kvstore == "horovod"
    return kvstore is not None and kvstore is not False


class Trainer:
    """Applies an :class:`~ember.optimizer.Optimizer` on a set of Parameters.

    ``params``: a ParameterDict, a dict or a list of Parameters; ``optimizer``: a name
    (``'sgd'``) or an Optimizer instance; ``optimizer_params``: its constructor arguments
    (``{'learning_rate': 0.1}``).
    """

    def __init__(self, params, optimizer, optimizer_params: dict | None = None,
                 kvstore="device", compression_params: dict | None = None,
                 update_on_kvstore: bool | None = None):
        if isinstance(params, dict | ParameterDict):
            params = [params[key] for key in sorted(params.keys())]
        if not isinstance(params, list | tuple):
            raise ValueError(f"First argument must be a list or dict of Parameters, got "
                             f"{type(params)}.")
        self._params: list[Parameter] = []
        self._param2idx: dict[str, int] = {}
        for i, param in enumerate(params):
            if not isinstance(param, Parameter):
                raise ValueError(f"First argument must be a list or dict of Parameters, got "
                                 f"list of {type(param)}.")
            self._param2idx[param.name] = i
            self._params.append(param)
            if hasattr(param, "_set_trainer"):
                param._set_trainer(self)
        _check_kvstore(kvstore)
        if compression_params:
            raise MXNetError("gradient compression needs a distributed kvstore, which ember "
                             "does not support yet")
        self._compression_params = compression_params
        self._contexts = self._check_contexts()
        self._init_optimizer(optimizer, optimizer_params or {})
        self._scale = self._optimizer.rescale_grad
        self._kvstore_params = {"kvstore": kvstore, "update_on_kvstore": update_on_kvstore}
        self._kvstore = None
        self._update_on_kvstore = False
        self._distributed = False
        self._kv_initialized = not _is_distributed(kvstore)
        self._params_to_init = list(self._params)
        self._rescale_set = False
        if _is_distributed(kvstore):
            self._sync_initial_params()

    def _sync_initial_params(self):
        """Rank 0's initial values everywhere before any gradient is computed: those of
        initialised parameters now (the kvstore is made here), deferred ones when the first
        forward initialises them. MXNet broadcasts only at the first step, after the first
        backward ran on each rank's own initial values."""
        from ember.distributed import _broadcast_when_initialised
        for p in self._params:
            if p._deferred_init:
                _broadcast_when_initialised(p, 0)
        self._prepare_kvstore()

    def _check_contexts(self):
        contexts = None
        for param in self._params:
            ctx = param.list_ctx()
            if contexts is not None and contexts != ctx:
                raise MXNetError(f"All Parameters must be initialized on the same set of "
                                 f"contexts, but Parameter {param.name} is initialized on "
                                 f"{ctx} while previous Parameters are initialized on "
                                 f"{contexts}.")
            contexts = ctx
        return contexts or []

    def _init_optimizer(self, optimizer, optimizer_params: dict):
        param_dict = dict(enumerate(self._params))
        if isinstance(optimizer, opt.Optimizer):
            if optimizer_params:
                raise MXNetError("optimizer_params must be None if optimizer is an instance "
                                 "of Optimizer instead of str")
            self._optimizer = optimizer
            # not copied: lr_mult/wd_mult changed on a Parameter later take effect
            self._optimizer.param_dict = param_dict
        else:
            self._optimizer = opt.create(optimizer, param_dict=param_dict, **optimizer_params)
        self._updaters = [opt.get_updater(self._optimizer) for _ in self._contexts]

    # ---- learning rate ---------------------------------------------------------------------
    @property
    def learning_rate(self) -> float:
        """The optimizer's current learning rate."""
        return self._optimizer.learning_rate

    @property
    def optimizer(self) -> opt.Optimizer:
        return self._optimizer

    def set_learning_rate(self, lr: float):
        """Set the optimizer's learning rate."""
        self._optimizer.set_learning_rate(lr)

    # ---- distributed kvstore ---------------------------------------------------------------
    def _init_kvstore(self):
        """Make the distributed kvstore (MXNet's ``_init_kvstore`` for dense parameters):
        ``update_on_kvstore`` defaults to True for ``dist_*`` ($MXNET_UPDATE_ON_KVSTORE)."""
        from ember.kvstore import KVStoreBase, create
        config = self._kvstore_params
        kv = config["kvstore"]
        kv = kv if isinstance(kv, KVStoreBase) else create(kv)
        self._distributed = "dist" in kv.type
        update = self._distributed and bool(int(os.getenv("MXNET_UPDATE_ON_KVSTORE", "1")))
        if config["update_on_kvstore"] is not None:
            update = bool(config["update_on_kvstore"])
        if update and not kv.is_capable(kv.OPTIMIZER):
            if config["update_on_kvstore"]:
                raise ValueError(f"Please set update_on_kvstore=False when training with "
                                 f"{type(kv)}")
            update = False
        if update:
            kv.set_optimizer(self._optimizer)
        self._kvstore, self._update_on_kvstore = kv, update
        self._kv_initialized = True

    def _init_params(self):
        """Broadcast rank 0's values of the initialised parameters (one fused call); those
        still deferred wait for a later step."""
        ready = [p for p in self._params_to_init if not p._deferred_init and p._data]
        self._params_to_init = [p for p in self._params_to_init if p not in ready]
        if ready:
            keys = [self._param2idx[p.name] for p in ready]
            self._kvstore.broadcast(keys, [p._data[0] for p in ready],
                                    [list(p._data) for p in ready])

    def _prepare_kvstore(self):
        if not self._kv_initialized:
            self._init_kvstore()
        if self._kvstore is not None and self._params_to_init:
            self._init_params()

    def _check_and_rescale_grad(self, scale: float):
        if self._update_on_kvstore and self._distributed and self._rescale_set \
                and self._optimizer.rescale_grad != scale:
            raise UserWarning("Possible change in the `batch_size` from previous `step` "
                              "detected. Optimizer gradient normalizing factor will not "
                              "change w.r.t new batch_size when update_on_kvstore=True and "
                              "when distributed kvstore is used.")
        self._optimizer.rescale_grad = scale
        self._rescale_set = True  # MXNet: the servers keep the first step's factor

    def _kvstore_allreduce(self):
        """Gradients summed over the workers: pushpull of every key in one call (fused);
        traced: graph ops, and the kvstore's update then runs in the graph on the
        parameters, which the kvstore holds from then on."""
        live = [p for p in self._params if p.grad_req != "null"]
        if trace_state.current() is not None:
            from ember.distributed import allreduce_param_grads
            allreduce_param_grads(live)
            if self._update_on_kvstore:
                for p in live:
                    self._kvstore._store[self._param2idx[p.name]] = p._data[0]
            return
        live = [p for p in live if p._grad is not None]
        keys = [self._param2idx[p.name] for p in live]
        grads = [list(p._grad) for p in live]
        if self._update_on_kvstore:
            self._kvstore.pushpull(keys, grads, out=[list(p._data) for p in live])
        else:
            self._kvstore.pushpull(keys, grads)

    # ---- steps ----------------------------------------------------------------------------
    def step(self, batch_size: int, ignore_stale_grad: bool = False):
        """Sum the gradients over contexts (and workers), then update with them scaled by
        1/batch_size."""
        _threads.adapt()  # fit the thread pools to the cores other processes leave free
        self._check_and_rescale_grad(self._scale / batch_size)
        self._prepare_kvstore()
        self._allreduce_grads()
        self._update(ignore_stale_grad)

    def _check_not_on_kvstore(self, what: str):
        self._prepare_kvstore()
        if self._kvstore is not None and self._update_on_kvstore:
            raise MXNetError(f"{what}() when parameters are updated on kvstore is not "
                             "supported. Try setting `update_on_kvstore` to False when "
                             "creating trainer.")

    def allreduce_grads(self):
        """Sum each parameter's gradients over its contexts (for use before ``update``)."""
        self._check_not_on_kvstore("allreduce_grads")
        self._allreduce_grads()

    def update(self, batch_size: int, ignore_stale_grad: bool = False):
        """The update half of ``step`` (after ``allreduce_grads``)."""
        self._check_not_on_kvstore("update")
        self._check_and_rescale_grad(self._scale / batch_size)
        self._update(ignore_stale_grad)

    def _allreduce_grads(self):
        if self._kvstore is not None:
            return self._kvstore_allreduce()
        if self._kvstore_params["kvstore"] is None:
            return  # MXNet: without a kvstore each context keeps its own gradient
        for param in self._params:
            if param.grad_req == "null" or param._data is None or len(param._data) == 1:
                continue
            grads = param.list_grad()
            if len(grads) > 1:  # (GPU gradients: summed on the host, copied back)
                total = np.sum([g._data if type(g._data) is np.ndarray else g.asnumpy()
                                for g in grads], axis=0, dtype=grads[0].dtype)
                for g in grads:
                    assign(g._data, total)

    @staticmethod
    def _arrays(param: Parameter) -> tuple[list, list]:
        """(data, grad) arrays of ``param`` on its contexts; its lists themselves outside a
        traced step (``_check_and_get`` would return the traced values inside one)."""
        if param._data is not None and param._grad is not None and trace_state.current() is None:
            return param._data, param._grad
        return param._check_and_get(param._data, list), param.list_grad()

    def _update(self, ignore_stale_grad: bool = False):
        updates: list[list] = [[] for _ in self._updaters]
        for i, param in enumerate(self._params):
            if param.grad_req == "null":
                continue
            datas, grads = self._arrays(param)
            if not ignore_stale_grad:
                for data in datas:
                    if not data._fresh_grad:
                        raise UserWarning(
                            f"Gradient of Parameter `{param.name}` on context {data.context} "
                            "has not been updated by backward since last `step`. This could "
                            "mean a bug in your model that made it only use a subset of the "
                            "Parameters (Blocks) for this iteration. If you are intentionally "
                            "only using a subset, call step with ignore_stale_grad=True to "
                            "suppress this warning and skip updating of Parameters with "
                            "stale gradient")
            for upd, arr, grad in zip(updates, datas, grads):
                if not ignore_stale_grad or arr._fresh_grad:
                    upd.append((i, grad, arr))
                    arr._fresh_grad = False
        updaters = self._updaters
        if self._kvstore is not None and self._update_on_kvstore:
            if trace_state.current() is None:
                return  # the kvstore's pushpull updated the parameters
            updaters = [self._kvstore._updater] * len(updates)  # traced: in the graph
        for updater, upd in zip(updaters, updates):
            if upd:
                i, g, w = zip(*upd)
                updater(list(i), list(g), list(w))

    # ---- states ---------------------------------------------------------------------------
    def save_states(self, fname: str):
        """Write the optimizer and its states (momentum...) to ``fname``: atomically, so a
        failure (a full disk) raises MXNetError and leaves an earlier file as it was."""
        from ember.ndarray.utils import remove_stale_temps, temp_name
        self._prepare_kvstore()
        updaters = [self._kvstore._updater] if self._update_on_kvstore else self._updaters
        data = updaters[0].get_states(dump_optimizer=True) if updaters else \
            opt.get_updater(self._optimizer).get_states(dump_optimizer=True)
        remove_stale_temps(fname)
        tmp = temp_name(fname)
        try:
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, fname)
        except BaseException as e:
            if os.path.exists(tmp):
                os.unlink(tmp)
            if isinstance(e, OSError):
                raise MXNetError(f"cannot save trainer states to {fname!r}: "
                                 f"{e.strerror or e}") from e
            raise

    def load_states(self, fname: str):
        """Read states written by :meth:`save_states` (or MXNet's); Parameters'
        lr_mult/wd_mult stay. The file is a pickle, as MXNet's is, read by an unpickler that
        only builds optimizers, learning-rate schedulers, NDArrays and plain containers
        (docs/trust.md); anything else, or a damaged file, raises MXNetError."""
        states = pickle.dumps(_load_states_file(fname))  # only allowed classes inside
        self._prepare_kvstore()
        updaters = [self._kvstore._updater] if self._update_on_kvstore else self._updaters
        for updater in updaters:
            updater.set_states(states)
            updater.optimizer = updaters[0].optimizer
        if updaters:
            self._optimizer = updaters[0].optimizer
        self._optimizer.param_dict = dict(enumerate(self._params))


class _StatesUnpickler(pickle.Unpickler):
    """Builds only what a states file holds: classes already imported (never imports a
    module) that are Optimizers, LRSchedulers, NDArray or plain containers."""

    _PLAIN = {("builtins", n) for n in ("bytearray", "set", "frozenset", "complex", "slice",
                                        "range")} | {("collections", "OrderedDict"),
                                                     ("copyreg", "_reconstructor")}

    def find_class(self, module: str, name: str):
        import sys

        from ember.lr_scheduler import LRScheduler
        from ember.ndarray.ndarray import NDArray
        if module == "mxnet" or module.startswith("mxnet."):  # MXNet's files name its modules
            module = "ember" + module[len("mxnet"):]
        obj = getattr(sys.modules.get(module), name, None) if "." not in name else None
        if obj is None and module.startswith("ember.optimizer"):  # MXNet keeps all in one
            obj = opt.Optimizer.opt_registry.get(name.lower())
        if (module, name) in self._PLAIN and obj is not None:
            return obj
        if isinstance(obj, type) and (obj is NDArray or issubclass(obj, (
                opt.Optimizer, LRScheduler))):
            return obj
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a states file")


def _load_states_file(fname: str):
    try:
        with open(fname, "rb") as f:
            data = f.read()
    except OSError as e:
        raise MXNetError(f"cannot load trainer states {fname!r}: {e.strerror or e}") from e
    try:
        return _StatesUnpickler(io.BytesIO(data)).load()
    except Exception as e:  # noqa: BLE001 - any failure of a damaged or foreign file
        raise MXNetError(f"cannot load trainer states {fname!r}: not a states file or "
                         f"damaged ({type(e).__name__}: {e})") from None
