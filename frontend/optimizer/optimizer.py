"""The optimizer base class, its registry, and the Updater that keeps per-weight states.

MXNet 1.9.1's ``mxnet.optimizer.Optimizer`` semantics: learning rate from ``learning_rate``
or an ``lr_scheduler`` (evaluated at ``num_update``, the largest per-index update count),
per-parameter ``lr_mult``/``wd_mult`` looked up in ``param_dict`` (Gluon Parameters), then
in the ``set_lr_mult``/``set_wd_mult`` tables (by index, then by name via
``param_idx2name``; names not ending in ``_weight``/``_gamma`` get ``wd_mult`` 0 there).
"""
from __future__ import annotations

import os
import pickle
import warnings

import numpy as np

from ember import ndarray as nd
from ember.base import MXNetError
from ember.ndarray.ndarray import NDArray

__all__ = ["Optimizer", "Updater", "create", "get_updater", "register"]

# set by the step itself (its count; trainer.step's 1/batch_size), so a compiled step replays
# them instead of comparing them
_REPLAYED = ("num_update", "rescale_grad")


class Optimizer:
    """Base class of all optimizers (see the module docstring for the lr/wd rules)."""

    uses_step_count = False  # whether an update reads the step count (Adam's t)
    # whether every update passes its learning rate and step count through _step_scalars
    # (so a compiled step feeds them per run instead of tracing again when they change)
    feeds_step_scalars = False

    opt_registry: dict[str, type] = {}

    def __init__(self, rescale_grad: float = 1.0, param_idx2name: dict | None = None,
                 wd: float = 0.0, clip_gradient: float | None = None,
                 learning_rate: float | None = None, lr_scheduler=None, sym=None,
                 begin_num_update: int = 0, multi_precision: bool = False,
                 param_dict: dict | None = None):
        self.rescale_grad = rescale_grad
        self.lr_scheduler = lr_scheduler
        if lr_scheduler is None and learning_rate is None:
            learning_rate = 0.01
        self.lr = learning_rate
        if lr_scheduler is not None and learning_rate is not None \
                and lr_scheduler.base_lr != learning_rate:
            print(UserWarning("learning rate from ``lr_scheduler`` has been overwritten by "
                              "``learning_rate`` in optimizer."))
            lr_scheduler.base_lr = learning_rate
        self.wd = wd
        self.lr_mult: dict = {}
        self.wd_mult: dict = {}
        self.begin_num_update = begin_num_update
        self.num_update = begin_num_update
        self._all_index_update_counts: dict = {0: {}}
        self._index_update_count = self._all_index_update_counts[0]
        self.clip_gradient = clip_gradient
        self.multi_precision = multi_precision
        self.aggregate_num = 0
        if param_idx2name is None:
            param_idx2name = {}
        if not isinstance(param_idx2name, dict):
            raise MXNetError("param_idx2name should be a dict of param indexes to names.")
        self.idx2name = param_idx2name.copy()
        self.sym_info = (sym.attr_dict(), sym.list_arguments()) if sym is not None else ()
        self.param_dict = param_dict if param_dict else {}
        self.allow_np_array = False
        self.set_lr_mult({})
        self.set_wd_mult({})

    # ---- registry ------------------------------------------------------------------------
    @staticmethod
    def register(klass: type) -> type:
        """Register an optimizer class under its lower-cased name (a class decorator)."""
        if not isinstance(klass, type):
            raise MXNetError("register expects an Optimizer class")
        name = klass.__name__.lower()
        if name in Optimizer.opt_registry:
            old = Optimizer.opt_registry[name]
            warnings.warn(f"WARNING: New optimizer {klass.__module__}.{klass.__name__} is "
                          f"overriding existing optimizer {old.__module__}.{old.__name__}",
                          stacklevel=2)
        Optimizer.opt_registry[name] = klass
        return klass

    @staticmethod
    def create_optimizer(name: str, **kwargs) -> Optimizer:
        """An instance of the optimizer registered as ``name`` (case-insensitive)."""
        if name.lower() in Optimizer.opt_registry:
            return Optimizer.opt_registry[name.lower()](**kwargs)
        raise ValueError(f"Cannot find optimizer {name}")

    # ---- learning rate -------------------------------------------------------------------
    @property
    def learning_rate(self) -> float:
        if self.lr_scheduler is not None:
            return self.lr_scheduler(self.num_update)
        return self.lr

    def set_learning_rate(self, lr: float):
        """Set the learning rate (only when no lr_scheduler is used, as in MXNet)."""
        if self.lr_scheduler is not None:
            raise UserWarning("LRScheduler of the optimizer has already been defined. Note "
                              "that set_learning_rate can mutate the value of the learning "
                              "rate of the optimizer only when the LRScheduler of the "
                              "optimizer is undefined.")
        self.lr = lr

    def set_lr_scale(self, args_lrscale):
        """[DEPRECATED] use set_lr_mult."""
        raise DeprecationWarning

    def set_lr_mult(self, args_lr_mult: dict):
        """Per-parameter learning-rate multipliers, by index or name."""
        self.lr_mult = {}
        if self.sym_info:
            attr, arg_names = self.sym_info
            for name in arg_names:
                if name in attr and "__lr_mult__" in attr[name]:
                    self.lr_mult[name] = float(attr[name]["__lr_mult__"])
        self.lr_mult.update(args_lr_mult)

    def set_wd_mult(self, args_wd_mult: dict):
        """Per-parameter weight-decay multipliers; names not ending in _weight/_gamma get 0."""
        self.wd_mult = {}
        for n in self.idx2name.values():
            if not (n.endswith("_weight") or n.endswith("_gamma")):
                self.wd_mult[n] = 0.0
        if self.sym_info:
            attr, arg_names = self.sym_info
            for name in arg_names:
                if name in attr and "__wd_mult__" in attr[name]:
                    self.wd_mult[name] = float(attr[name]["__wd_mult__"])
        self.wd_mult.update(args_wd_mult)

    def _set_current_context(self, device_id: int):
        """Switch the per-index update counts to those of device ``device_id``."""
        if device_id not in self._all_index_update_counts:
            self._all_index_update_counts[device_id] = {}
        self._index_update_count = self._all_index_update_counts[device_id]

    def _update_count(self, index):
        """Count one more update of ``index`` (an index or a list of them)."""
        from ember import trace_state
        self._count(index)
        trace = trace_state.current()
        if trace is not None:  # a compiled step replays the count before each run
            trace.count_updates(self, index)

    def _count(self, index):
        counts = self._index_update_count
        for idx in index if isinstance(index, list | tuple) else [index]:
            if idx not in counts:
                counts[idx] = self.begin_num_update
            counts[idx] += 1
            self.num_update = max(counts[idx], self.num_update)

    def _traced_reads(self, indices: list) -> tuple:
        """What an update of ``indices``, once counted, reads from the Python side and a
        compiled step bakes into its graph: learning rates (``lr_scheduler`` at the new
        ``num_update``, ``lr_mult``) and weight decays, the update counts where the update
        reads them (Adam's t), and the other scalar hyperparameters. ``ember.compile``
        compares them step by step and traces again when they differ."""
        wds = tuple(self._get_wds(indices))
        if self.feeds_step_scalars:  # fed per run (_step_scalars): no retrace when they move
            hyper = tuple((k, v) for k, v in vars(self).items()
                          if type(v) in (int, float, bool) and k not in _REPLAYED + ("lr",))
            return None, wds, None, hyper
        ts = tuple(self._index_update_count[i] for i in indices) \
            if self.uses_step_count else None
        hyper = tuple((k, v) for k, v in vars(self).items()
                      if type(v) in (int, float, bool) and k not in _REPLAYED)
        return tuple(self._get_lrs(indices)), wds, ts, hyper

    def _step_scalars(self, kw: dict, values_of) -> list:
        """Put an update's per-step scalars, ``values_of()`` (attribute -> value: the
        learning rate, Adam's bias-corrected rate, the step count...; called once the update
        is counted), into the op's keyword arguments ``kw``. Eagerly they are attributes and
        nothing is returned. In a traced step they become the op's ``hyper`` input (returned
        as ``[array]``, to pass after the op's other arrays), which a compiled step refills
        with ``values_of()`` before every run: a new rate or step count runs the same graph.
        The attributes it names keep a placeholder 0."""
        from ember import trace_state
        values = values_of()
        trace = trace_state.current()
        if trace is None:
            kw.update(values)
            return []
        kw.update(dict.fromkeys(values, 0.0), hyper=tuple(values))
        return [trace.feed(lambda: list(values_of().values()), list(values.values()))]

    def _mults(self, indices, base, attr, table):
        out = [base] * len(indices)
        for i, index in enumerate(indices):
            if index in self.param_dict:
                out[i] *= getattr(self.param_dict[index], attr)
            elif index in table:
                out[i] *= table[index]
            elif index in self.idx2name:
                out[i] *= table.get(self.idx2name[index], 1.0)
        return out

    def _get_lrs(self, indices) -> list[float]:
        lr = self.lr_scheduler(self.num_update) if self.lr_scheduler is not None else self.lr
        return self._mults(indices, lr, "lr_mult", self.lr_mult)

    def _get_lr(self, index) -> float:
        return self._get_lrs([index])[0]

    def _get_wds(self, indices) -> list[float]:
        return self._mults(indices, self.wd, "wd_mult", self.wd_mult)

    def _get_wd(self, index) -> float:
        return self._get_wds([index])[0]

    def _clip_kw(self, key: str = "clip_gradient") -> dict:
        """The clip argument of the update ops: given only when clip_gradient is truthy."""
        return {key: self.clip_gradient} if self.clip_gradient else {}

    # ---- states and updates --------------------------------------------------------------
    def create_state(self, index, weight: NDArray):
        """The auxiliary state of one weight (momentum...); ``None`` when it needs none."""
        return None

    def create_state_multi_precision(self, index, weight: NDArray):
        """State plus a float32 master copy for float16 weights when multi_precision."""
        if self.multi_precision and weight.dtype == np.float16:
            master = weight.astype(np.float32)
            return (master, self.create_state(index, master))
        if weight.dtype == np.float16 and not self.multi_precision:
            warnings.warn("Accumulating with float16 in optimizer can lead to poor accuracy "
                          "or slow convergence. Consider using multi_precision=True option "
                          "of the optimizer", stacklevel=2)
        return self.create_state(index, weight)

    def update(self, index, weight: NDArray, grad: NDArray, state):
        """Update ``weight`` in place from ``grad`` and ``state``."""
        raise MXNetError(f"{type(self).__name__} does not define update()")

    def update_multi_precision(self, index, weight: NDArray, grad: NDArray, state):
        """``update``, through the float32 master copy for float16 weights."""
        if self.multi_precision and weight.dtype == np.float16:
            master, inner = state
            self.update(index, master, grad.astype(np.float32), inner)
            nd.cast(master, dtype=weight.dtype, out=weight)
        else:
            self.update(index, weight, grad, state)

    def __getstate__(self):
        ret = self.__dict__.copy()
        del ret["param_dict"]  # Parameters are not pickled: the Trainer sets them again
        return ret

    def __setstate__(self, state):
        self.__dict__ = state
        self.param_dict = {}


register = Optimizer.register
create = Optimizer.create_optimizer


def _aggregation_size(default: str) -> int:
    return int(os.getenv("MXNET_OPTIMIZER_AGGREGATION_SIZE", default))


class Updater:
    """Applies an optimizer to (index, grad, weight) triples, creating states lazily."""

    def __init__(self, optimizer: Optimizer):
        self.optimizer = optimizer
        self.states: dict = {}
        self.states_synced: dict = {}
        self.aggregate_updates = optimizer.aggregate_num > 0

    def __call__(self, index, grad, weight):
        """Update ``weight`` (or lists of them) with ``grad``; MXNet's argument order."""
        if not isinstance(index, list | tuple):
            indices, grads, weights = [index], [grad], [weight]
        else:
            indices, grads, weights = list(index), list(grad), list(weight)
        if weights:
            self.optimizer._set_current_context(weights[0].context.device_id)
        for i, idx in enumerate(indices):
            if isinstance(idx, bytes):
                idx = indices[i] = idx.decode()
            if idx not in self.states:
                state = self.optimizer.create_state_multi_precision(idx, weights[i])
                ctx = _traced_context(weights[i])
                self.states[idx] = state if ctx is None else self.sync_state_context(state, ctx)
                self.states_synced[idx] = True
            elif not self.states_synced[idx]:
                self.states[idx] = self.sync_state_context(self.states[idx],
                                                           weights[i].context)
                self.states_synced[idx] = True
        opt = self.optimizer
        if not (self.aggregate_updates and opt.aggregate_num > 0):  # may be a loaded one
            for i, w, g in zip(indices, weights, grads):
                opt.update_multi_precision(i, w, g, self.states[i])
            return
        by_type: dict = {}
        for i, w, g in zip(indices, weights, grads):
            by_type.setdefault(w.dtype, []).append((i, w, g))
        n = opt.aggregate_num
        for group in by_type.values():
            idx, ws, gs = (list(x) for x in zip(*group))
            for s in range(0, len(idx), n):
                opt.update_multi_precision(idx[s:s + n], ws[s:s + n], gs[s:s + n],
                                           [self.states[k] for k in idx[s:s + n]])

    def sync_state_context(self, state, context):
        """The state moved to ``context`` (NDArrays inside tuples and lists too)."""
        if isinstance(state, NDArray):
            return state.as_in_context(context)
        if isinstance(state, list | tuple):
            synced = [self.sync_state_context(s, context) for s in state]
            return tuple(synced) if isinstance(state, tuple) else synced
        return state

    def set_states(self, states: bytes):
        """Restore states written by :meth:`get_states` (with or without the optimizer)."""
        states = pickle.loads(states)
        if isinstance(states, tuple) and len(states) == 2:
            self.states, self.optimizer = states
        else:
            self.states = states
        self.states_synced = dict.fromkeys(self.states.keys(), False)

    def get_states(self, dump_optimizer: bool = False) -> bytes:
        """The states pickled; with ``dump_optimizer`` the optimizer (lr, counts) too."""
        return pickle.dumps((self.states, self.optimizer) if dump_optimizer else self.states)


def _traced_context(weight):
    """Inside ``@ember.compile``, the context of the parameter a traced weight stands for:
    its states must live there (a Symbol's own context is only the default one, so a GPU
    step's momentum was made on the host and its in-place updates were lost); else None."""
    from ember import trace_state
    trace = trace_state.current()
    if trace is None or isinstance(weight, NDArray):
        return None
    return trace.context_of(weight)


def get_updater(optimizer: Optimizer) -> Updater:
    """The :class:`Updater` of ``optimizer`` (MXNet's kvstore updater closure)."""
    return Updater(optimizer)
