"""``Module``: a Symbol plus its parameters, optimizer and executor (MXNet 1.9.1's
``mx.mod.Module``), for one context.

``bind`` allocates the executor from data/label shapes; ``init_params`` fills the module's
own copy of the parameters through an initializer called with ``InitDesc(name, attrs)`` (so
a variable's ``init=`` attribute wins) and copies them into the executor; ``update`` runs the
optimizer's ``Updater`` on the executor's weights; ``get_params`` copies them back.
"""
from __future__ import annotations

import logging
import warnings

from ember import ndarray as nd
from ember import optimizer as opt
from ember.base import MXNetError
from ember.context import Context, cpu
from ember.initializer import InitDesc, Uniform
from ember.io import DataDesc

from .base_module import BaseModule, _check_input_names, _parse_data_desc
from .checkpoint import load_checkpoint
from .executor_group import ExecutorGroup, check_kvstore

__all__ = ["Module"]

class Module(BaseModule):
    """A Symbol trained or run as a module (see the module docstring).

    ``data_names``/``label_names`` name the symbol's inputs fed by ``DataBatch.data`` and
    ``.label``; every other argument is a parameter (``fixed_param_names`` are not updated).
    """

    def __init__(self, symbol, data_names=("data",), label_names=("softmax_label",),
                 logger=logging, context=cpu(), work_load_list=None, fixed_param_names=None,
                 state_names=None, group2ctxs=None, compression_params=None):
        super().__init__(logger=logger)
        if isinstance(context, Context):
            context = [context]
        self._context = list(context)
        if work_load_list is None:
            work_load_list = [1] * len(self._context)
        if len(work_load_list) != len(self._context):
            raise ValueError("work_load_list must have one entry per context")
        self._work_load_list = work_load_list
        self._group2ctxs = group2ctxs
        self._symbol = symbol
        data_names = list(data_names) if data_names is not None else []
        label_names = list(label_names) if label_names is not None else []
        state_names = list(state_names) if state_names is not None else []
        fixed_param_names = list(fixed_param_names) if fixed_param_names is not None else []
        _check_input_names(symbol, data_names, "data", True)
        _check_input_names(symbol, label_names, "label", False)
        _check_input_names(symbol, state_names, "state", True)
        _check_input_names(symbol, fixed_param_names, "fixed_param", True)
        input_names = data_names + label_names + state_names
        self._param_names = [x for x in symbol.list_arguments() if x not in input_names]
        self._fixed_param_names = fixed_param_names
        self._aux_names = symbol.list_auxiliary_states()
        self._data_names = data_names
        self._label_names = label_names
        self._state_names = state_names
        self._output_names = symbol.list_outputs()
        self._arg_params = None
        self._aux_params = None
        self._params_dirty = False
        self._compression_params = compression_params
        self._optimizer = None
        self._kvstore = None
        self._update_on_kvstore = None
        self._updater = None
        self._preload_opt_states = None
        self._grad_req = None
        self._exec_group = None
        self._data_shapes = None
        self._label_shapes = None

    # ---- checkpoints -------------------------------------------------------------------------
    @staticmethod
    def load(prefix: str, epoch: int, load_optimizer_states: bool = False, **kwargs) -> Module:
        """A Module from ``prefix-symbol.json`` and ``prefix-%04d.params`` (and, with
        ``load_optimizer_states``, ``prefix-%04d.states`` once the optimizer is made)."""
        sym, args, auxs = load_checkpoint(prefix, epoch)
        mod = Module(symbol=sym, **kwargs)
        mod._arg_params = args
        mod._aux_params = auxs
        mod.params_initialized = True
        if load_optimizer_states:
            mod._preload_opt_states = f"{prefix}-{epoch:04d}.states"
        return mod

    def save_checkpoint(self, prefix: str, epoch: int, save_optimizer_states: bool = False,
                        remove_amp_cast: bool = True) -> None:
        """Write ``prefix-symbol.json``, ``prefix-%04d.params`` (and ``.states``)."""
        self._symbol.save(f"{prefix}-symbol.json", remove_amp_cast=remove_amp_cast)
        param_name = f"{prefix}-{epoch:04d}.params"
        self.save_params(param_name)
        logging.info('Saved checkpoint to "%s"', param_name)
        if save_optimizer_states:
            state_name = f"{prefix}-{epoch:04d}.states"
            self.save_optimizer_states(state_name)
            logging.info('Saved optimizer state to "%s"', state_name)

    def save_optimizer_states(self, fname: str) -> None:
        """Write the optimizer's per-weight states (momenta...) to ``fname``."""
        self._require(self.optimizer_initialized, "init_optimizer()")
        with open(fname, "wb") as fout:
            fout.write(self._updater.get_states())

    def load_optimizer_states(self, fname: str) -> None:
        """Read states written by :meth:`save_optimizer_states`."""
        self._require(self.optimizer_initialized, "init_optimizer()")
        with open(fname, "rb") as fin:
            self._updater.set_states(fin.read())

    # ---- properties ----------------------------------------------------------------------------
    @staticmethod
    def _require(cond: bool, what: str) -> None:
        if not cond:
            raise RuntimeError(f"call {what} first")

    def _reset_bind(self) -> None:
        self.binded = False
        self._exec_group = None
        self._data_shapes = None
        self._label_shapes = None

    @property
    def data_names(self) -> list[str]:
        """Names of the data inputs."""
        return self._data_names

    @property
    def label_names(self) -> list[str]:
        """Names of the label inputs."""
        return self._label_names

    @property
    def output_names(self) -> list[str]:
        """Names of the symbol's outputs."""
        return self._output_names

    @property
    def data_shapes(self) -> list[DataDesc]:
        """The DataDescs the module is bound with."""
        self._require(self.binded, "bind()")
        return self._data_shapes

    @property
    def label_shapes(self):
        """The label DataDescs the module is bound with (None when bound without labels)."""
        self._require(self.binded, "bind()")
        return self._label_shapes

    @property
    def output_shapes(self) -> list[tuple[str, tuple]]:
        """``[(output name, shape)]``."""
        self._require(self.binded, "bind()")
        return self._exec_group.get_output_shapes()

    # ---- parameters ----------------------------------------------------------------------------
    def get_params(self) -> tuple[dict, dict]:
        """``(arg_params, aux_params)``: the current values, copied from the executor."""
        self._require(self.params_initialized, "init_params()")
        if self._params_dirty:
            self._sync_params_from_devices()
        return self._arg_params, self._aux_params

    def init_params(self, initializer=Uniform(0.01), arg_params=None, aux_params=None,
                    allow_missing: bool = False, force_init: bool = False,
                    allow_extra: bool = False) -> None:
        """Give every parameter a value: from ``arg_params``/``aux_params`` when they have
        it, else from ``initializer`` called with ``InitDesc(name, symbol attributes)``."""
        if self.params_initialized and not force_init:
            warnings.warn("Parameters already initialized and force_init=False. "
                          "init_params call ignored.", stacklevel=2)
            return
        self._require(self.binded, "bind() before initializing the parameters;")

        def _impl(desc, arr, cache):
            if cache is not None:
                if desc in cache:
                    if cache[desc] is not arr:
                        cache[desc].copyto(arr)
                    return
                if not allow_missing:
                    raise RuntimeError(f"{desc} is not presented")
                if initializer is None:
                    return
            if initializer is None:
                raise MXNetError(f"init_params: no value and no initializer for {desc}")
            initializer(desc, arr)

        attrs = self._symbol.attr_dict()
        for name, arr in sorted(self._arg_params.items()):
            _impl(InitDesc(name, attrs.get(name, None)), arr, arg_params)
        for name, arr in sorted(self._aux_params.items()):
            _impl(InitDesc(name, attrs.get(name, None)), arr, aux_params)
        self.params_initialized = True
        self._params_dirty = False
        self._exec_group.set_params(self._arg_params, self._aux_params, allow_extra=allow_extra)

    def set_params(self, arg_params: dict, aux_params: dict, allow_missing: bool = False,
                   force_init: bool = True, allow_extra: bool = False) -> None:
        """Assign parameter values; with ``allow_missing`` the others keep their values."""
        if not allow_missing:
            self.init_params(initializer=None, arg_params=arg_params, aux_params=aux_params,
                             allow_missing=allow_missing, force_init=force_init,
                             allow_extra=allow_extra)
            return
        if self.params_initialized and not force_init:
            warnings.warn("Parameters already initialized and force_init=False. "
                          "set_params call ignored.", stacklevel=2)
            return
        self._exec_group.set_params(arg_params, aux_params, allow_extra=allow_extra)
        self._params_dirty = True
        self.params_initialized = True

    def _sync_params_from_devices(self) -> None:
        self._exec_group.get_params(self._arg_params, self._aux_params)
        self._params_dirty = False

    # ---- binding -------------------------------------------------------------------------------
    def bind(self, data_shapes, label_shapes=None, for_training: bool = True,
             inputs_need_grad: bool = False, force_rebind: bool = False, shared_module=None,
             grad_req="write") -> None:
        """Allocate the executor for these input shapes (``[(name, shape)]`` or DataDescs)."""
        if force_rebind:
            self._reset_bind()
        if self.binded:
            self.logger.warning("Already bound, ignoring bind()")
            return
        if not for_training and inputs_need_grad:
            raise ValueError("inputs_need_grad needs for_training=True")
        self.for_training = for_training
        self.inputs_need_grad = inputs_need_grad
        self._grad_req = grad_req
        self._data_shapes, self._label_shapes = _parse_data_desc(
            self.data_names, self.label_names, data_shapes, label_shapes)
        if shared_module is not None and not (isinstance(shared_module, Module)
                                              and shared_module.binded
                                              and shared_module.params_initialized):
            raise ValueError("shared_module must be a bound Module with initialized params")
        self._exec_group = ExecutorGroup(
            self._symbol, self._context, self._data_shapes, self._label_shapes,
            self._param_names, for_training, inputs_need_grad, logger=self.logger,
            fixed_param_names=self._fixed_param_names, grad_req=grad_req,
            state_names=self._state_names)
        if shared_module is not None:
            self.params_initialized = True
            self._arg_params = shared_module._arg_params
            self._aux_params = shared_module._aux_params
            self._exec_group.set_params(self._arg_params, self._aux_params)
        elif self.params_initialized:
            self._exec_group.set_params(self._arg_params, self._aux_params)
        else:
            group = self._exec_group
            self._arg_params = {name: nd.zeros(block[0].shape, dtype=block[0].dtype)
                                for name, block in zip(self._param_names, group.param_arrays)}
            self._aux_params = {name: nd.zeros(block[0].shape, dtype=block[0].dtype)
                                for name, block in zip(self._aux_names, group.aux_arrays)}
        if shared_module is not None and shared_module.optimizer_initialized:
            self.borrow_optimizer(shared_module)
        self.binded = True

    def reshape(self, data_shapes, label_shapes=None) -> None:
        """Re-bind for new input shapes (a different batch size...), keeping parameters."""
        self._require(self.binded, "bind()")
        self._data_shapes, self._label_shapes = _parse_data_desc(
            self.data_names, self.label_names, data_shapes, label_shapes)
        self._exec_group.reshape(self._data_shapes, self._label_shapes)

    # ---- optimizer -----------------------------------------------------------------------------
    def init_optimizer(self, kvstore="local", optimizer="sgd",
                       optimizer_params=(("learning_rate", 0.01),),
                       force_init: bool = False) -> None:
        """Make the optimizer (a name plus ``optimizer_params``, or an Optimizer) and its
        updater; ``rescale_grad`` defaults to 1 / batch size."""
        self._require(self.binded and self.params_initialized, "bind() and init_params()")
        if self.optimizer_initialized and not force_init:
            self.logger.warning("optimizer already initialized, ignoring...")
            return
        check_kvstore(kvstore)
        if self._params_dirty:
            self._sync_params_from_devices()
        rescale_grad = 1.0 / self._exec_group.batch_size
        idx2name = dict(enumerate(self._exec_group.param_names))
        if isinstance(optimizer, str):
            optimizer_params = dict(optimizer_params)
            optimizer_params.setdefault("rescale_grad", rescale_grad)
            optimizer = opt.create(optimizer, sym=self.symbol, param_idx2name=idx2name,
                                   **optimizer_params)
        else:
            if not isinstance(optimizer, opt.Optimizer):
                raise TypeError("optimizer must be a name or an Optimizer")
            if optimizer.rescale_grad != rescale_grad:
                warnings.warn("Optimizer created manually outside Module but rescale_grad is "
                              f"not normalized to 1.0/batch_size/num_workers "
                              f"({optimizer.rescale_grad} vs. {rescale_grad}). Is this "
                              "intended?", stacklevel=2)
            if not optimizer.idx2name:
                optimizer.idx2name = idx2name.copy()
        self._optimizer = optimizer
        self._kvstore = None
        self._update_on_kvstore = False
        self._updater = opt.get_updater(optimizer)
        self.optimizer_initialized = True
        if self._preload_opt_states is not None:
            self.load_optimizer_states(self._preload_opt_states)
            self._preload_opt_states = None

    def borrow_optimizer(self, shared_module: Module) -> None:
        """Share ``shared_module``'s optimizer and updater."""
        self._require(shared_module.optimizer_initialized, "init_optimizer() on shared_module")
        self._optimizer = shared_module._optimizer
        self._kvstore = shared_module._kvstore
        self._update_on_kvstore = shared_module._update_on_kvstore
        self._updater = shared_module._updater
        self.optimizer_initialized = True

    # ---- computing -----------------------------------------------------------------------------
    def forward(self, data_batch, is_train: bool | None = None) -> None:
        """Run the batch forward (training mode by default when bound for training); a batch
        of another shape re-binds first."""
        self._require(self.binded and self.params_initialized, "bind() and init_params()")
        batch = data_batch[0] if isinstance(data_batch, list) else data_batch
        curr = tuple(tuple(d.shape) for d in self._data_shapes)
        new = tuple(tuple(d.shape) for d in batch.data)
        if curr != new:
            if getattr(batch, "provide_data", None):
                new_dshape = batch.provide_data
            else:
                new_dshape = [DataDesc(d.name, s, d.dtype, d.layout)
                              for d, s in zip(self._data_shapes, new)]
            if getattr(batch, "provide_label", None):
                new_lshape = batch.provide_label
            elif getattr(batch, "label", None) and self._label_shapes:
                new_lshape = [DataDesc(d.name, lb.shape, d.dtype, d.layout)
                              for d, lb in zip(self._label_shapes, batch.label)]
            else:
                new_lshape = None
            self.reshape(new_dshape, new_lshape)
        self._exec_group.forward(data_batch, is_train)

    def backward(self, out_grads=None) -> None:
        """Back-propagate from the outputs (``out_grads``: gradients of non-loss outputs)."""
        self._require(self.binded and self.params_initialized, "bind() and init_params()")
        self._exec_group.backward(out_grads=out_grads)

    def update(self) -> None:
        """Apply the optimizer to every parameter that has a gradient."""
        self._require(self.binded and self.params_initialized and self.optimizer_initialized,
                      "bind(), init_params() and init_optimizer()")
        self._params_dirty = True
        group = self._exec_group
        indices, grads, weights = [], [], []
        for i, (ws, gs) in enumerate(zip(group.param_arrays, group.grad_arrays)):
            if gs[0] is None:
                continue
            indices.append(i)
            grads.append(gs[0])
            weights.append(ws[0])
        if indices:
            self._updater(indices, grads, weights)

    def get_outputs(self, merge_multi_context: bool = True) -> list:
        """The outputs of the last forward pass."""
        self._require(self.binded and self.params_initialized, "bind() and init_params()")
        return self._exec_group.get_outputs(merge_multi_context=merge_multi_context)

    def get_input_grads(self, merge_multi_context: bool = True) -> list:
        """Gradients of the data inputs (bind with ``inputs_need_grad=True``)."""
        self._require(self.binded and self.params_initialized and self.inputs_need_grad,
                      "bind(..., inputs_need_grad=True) and init_params()")
        return self._exec_group.get_input_grads(merge_multi_context=merge_multi_context)

    def get_states(self, merge_multi_context: bool = True) -> list:
        """The arrays of the inputs named by ``state_names``."""
        self._require(self.binded and self.params_initialized, "bind() and init_params()")
        return self._exec_group.get_states(merge_multi_context=merge_multi_context)

    def set_states(self, states=None, value=None) -> None:
        """Set the state inputs from ``states`` or to the scalar ``value``."""
        self._require(self.binded and self.params_initialized, "bind() and init_params()")
        self._exec_group.set_states(states, value)

    def update_metric(self, eval_metric, labels, pre_sliced: bool = False) -> None:
        """Accumulate ``eval_metric`` over the last outputs and ``labels``."""
        self._exec_group.update_metric(eval_metric, labels, pre_sliced)

    def install_monitor(self, mon) -> None:
        """Install a monitor on the executor."""
        self._require(self.binded, "bind()")
        self._exec_group.install_monitor(mon)

    def prepare(self, data_batch, sparse_row_id_fn=None) -> None:
        """Nothing to prepare without a kvstore holding row-sparse parameters."""
        self._require(self.binded, "bind()")
        if sparse_row_id_fn is not None:
            warnings.warn(UserWarning("Parameters are not updated in the KVStore. No need to "
                                      "call sparse_row_id_fn."), stacklevel=2)
