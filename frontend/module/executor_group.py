"""The executor behind a ``Module``: one Symbol bound on one context.

MXNet's ``DataParallelExecutorGroup`` splits each batch over several devices; ember runs
on one context, so the group holds one ``Executor``. It keeps MXNet's attribute layout
(``execs``, and ``param_arrays``/``grad_arrays``/``aux_arrays`` as one list per parameter
with one array per device), so code that reads ``mod._exec_group`` keeps working.
"""
from __future__ import annotations

import logging

import numpy as np

from ember.base import MXNetError
from ember.io import DataDesc
from ember.ndarray.ndarray import NDArray

__all__ = ["ExecutorGroup", "check_kvstore"]

_LOCAL_KVSTORES = ("local", "device", "nccl", "local_update_cpu", "local_allreduce_cpu",
                   "local_allreduce_device")


def check_kvstore(kvstore) -> None:
    """ember trains in one process: only local kvstore names (or None) are accepted."""
    if kvstore is None or kvstore is False:
        return
    if not isinstance(kvstore, str):
        raise MXNetError(f"kvstore objects ({type(kvstore).__name__}) are not supported: "
                         "ember's Module trains in one process; use kvstore='local' or None.")
    if "dist" in kvstore or kvstore in ("horovod", "byteps"):
        raise MXNetError(f"kvstore '{kvstore}': distributed training is not supported in "
                         "ember; use kvstore='local' or None.")
    if kvstore not in _LOCAL_KVSTORES:
        raise MXNetError(f"Unknown kvstore type '{kvstore}'")


def _grad_reqs(grad_req, arg_names, param_names, data_names, fixed, inputs_need_grad) -> dict:
    """Per-argument grad_req: parameters learn (unless fixed), data only when
    ``inputs_need_grad``, labels and other inputs never (MXNet's rules)."""
    if isinstance(grad_req, list | tuple):
        return dict(zip(arg_names, grad_req))
    if not isinstance(grad_req, str | dict):
        raise ValueError("grad_req must be one of str, list, tuple, or dict.")
    base = grad_req if isinstance(grad_req, str) else "write"
    reqs = {}
    for k in arg_names:
        if k in param_names:
            reqs[k] = "null" if k in fixed else base
        elif k in data_names:
            reqs[k] = base if inputs_need_grad else "null"
        else:
            reqs[k] = "null"
    if isinstance(grad_req, dict):
        reqs.update(grad_req)
    return reqs


class ExecutorGroup:
    """One executor of ``symbol`` for the given data and label shapes."""

    def __init__(self, symbol, contexts: list, data_shapes, label_shapes, param_names: list,
                 for_training: bool, inputs_need_grad: bool, logger=logging,
                 fixed_param_names=None, grad_req="write", state_names=None):
        if len(contexts) != 1:
            raise MXNetError(f"Module runs on one context in ember; got {len(contexts)} "
                             f"({contexts}). Data-parallel training over several devices is "
                             "not supported.")
        self.symbol = symbol
        self.contexts = contexts
        self.param_names = list(param_names)
        self.arg_names = symbol.list_arguments()
        self.aux_names = symbol.list_auxiliary_states()
        self.for_training = for_training
        self.inputs_need_grad = inputs_need_grad
        self.logger = logger
        self.fixed_param_names = list(fixed_param_names or [])
        self.state_names = list(state_names or [])
        data_shapes = [x if isinstance(x, DataDesc) else DataDesc(*x) for x in data_shapes]
        if label_shapes is not None:
            label_shapes = [x if isinstance(x, DataDesc) else DataDesc(*x)
                            for x in label_shapes]
        self.grad_req = _grad_reqs("null" if not for_training else grad_req, self.arg_names,
                                   self.param_names, [x.name for x in data_shapes],
                                   self.fixed_param_names, inputs_need_grad)
        self.output_names = symbol.list_outputs()
        self.num_outputs = len(self.output_names)
        self.output_layouts = [DataDesc.get_batch_axis(symbol[i].attr("__layout__"))
                               for i in range(self.num_outputs)]
        self.execs: list = []
        self._default_execs = None
        self._total_exec_bytes = 0
        self.bind_exec(data_shapes, label_shapes)

    # ---- binding -----------------------------------------------------------------------------
    def _batch_size(self, descs) -> int | None:
        for desc in descs:
            axis = DataDesc.get_batch_axis(desc.layout)
            if axis < 0:
                continue
            if self.batch_size is None:
                self.batch_size = desc.shape[axis]
            elif desc.shape[axis] != self.batch_size:
                raise MXNetError(f"all data must have the same batch size: batch_size = "
                                 f"{self.batch_size}, but {desc.name} has shape {desc.shape}")
        return self.batch_size

    def _input_shapes_types(self, data_shapes, label_shapes) -> tuple[dict, dict]:
        args = set(self.arg_names)
        attrs = self.symbol.attr_dict()
        shapes, types = {}, {}
        descs = [(d, True) for d in data_shapes] + [(d, False) for d in label_shapes or []]
        for desc, is_data in descs:
            if desc.name not in args:
                continue  # a label the symbol does not use (MXNet would fail to bind)
            shapes[desc.name] = tuple(desc.shape)
            declared = attrs.get(desc.name, {}).get("__dtype__", "-1")
            if not is_data or declared == "-1":
                types[desc.name] = desc.dtype  # else the data's declared __dtype__ wins
        return shapes, types

    def bind_exec(self, data_shapes, label_shapes, reshape: bool = False) -> None:
        """Bind (or, with ``reshape``, re-shape) the executor for these input shapes."""
        self.batch_size = None
        self.data_layouts = [DataDesc.get_batch_axis(x.layout) for x in data_shapes]
        self._batch_size(data_shapes)
        self.label_layouts = None
        if label_shapes is not None:
            self.label_layouts = [DataDesc.get_batch_axis(x.layout) for x in label_shapes]
            self._batch_size(label_shapes)
        shapes, types = self._input_shapes_types(data_shapes, label_shapes)
        if reshape:
            self.execs = [self._default_execs[0].reshape(allow_up_sizing=True, **shapes)]
        else:
            self.execs = [self.symbol.simple_bind(self.contexts[0], grad_req=self.grad_req,
                                                  type_dict=types, **shapes)]
        self.data_shapes = data_shapes
        self.label_shapes = label_shapes
        self.data_names = [x.name for x in data_shapes]
        self.label_names = [x.name for x in label_shapes] if label_shapes is not None else None
        self._collect_arrays()

    def _collect_arrays(self) -> None:
        exe = self.execs[0]
        args = exe.arg_dict
        self.data_arrays = [args.get(name) for name in self.data_names]
        self.label_arrays = None if self.label_shapes is None else \
            [args.get(name) for name in self.label_names]
        self.state_arrays = [[args[name]] for name in self.state_names]
        self.param_arrays = [[exe.arg_arrays[i]] for i, name in enumerate(self.arg_names)
                             if name in self.param_names]
        self.grad_arrays = None
        if self.for_training:
            self.grad_arrays = [[exe.grad_arrays[i]] for i, name in enumerate(self.arg_names)
                                if name in self.param_names]
        self.input_grad_arrays = None
        if self.inputs_need_grad:
            grads = exe.grad_dict
            self.input_grad_arrays = [[grads[name]] for name in self.data_names
                                      if name in grads]
        self.aux_arrays = [[a] for a in exe.aux_arrays]

    def reshape(self, data_shapes, label_shapes) -> None:
        """Re-bind for new input shapes; parameters of unchanged shape are shared."""
        if data_shapes == self.data_shapes and label_shapes == self.label_shapes:
            return
        if self._default_execs is None:
            self._default_execs = list(self.execs)
        self.bind_exec(data_shapes, label_shapes, reshape=True)

    # ---- parameters --------------------------------------------------------------------------
    def set_params(self, arg_params: dict, aux_params: dict, allow_extra: bool = False) -> None:
        """Copy parameter values into the executor."""
        for exe in self.execs:
            exe.copy_params_from(arg_params, aux_params, allow_extra_params=allow_extra)

    def get_params(self, arg_params: dict, aux_params: dict) -> None:
        """Copy the executor's parameter values into ``arg_params``/``aux_params``."""
        for name, block in zip(self.param_names, self.param_arrays):
            block[0].astype(arg_params[name].dtype).copyto(arg_params[name])
        for name, block in zip(self.aux_names, self.aux_arrays):
            block[0].astype(aux_params[name].dtype).copyto(aux_params[name])

    # ---- running -----------------------------------------------------------------------------
    @staticmethod
    def _load(sources, targets) -> None:
        for src, dst in zip(sources, targets):
            if dst is None:
                continue
            if isinstance(src, list | tuple):  # one batch per device: ember has one
                src = src[0]
            if not isinstance(src, NDArray):
                src = NDArray(np.asarray(src))
            if tuple(src.shape) != tuple(dst.shape):
                raise MXNetError(f"batch array of shape {tuple(src.shape)} does not fit the "
                                 f"bound input of shape {tuple(dst.shape)}")
            src.copyto(dst)

    def forward(self, data_batch, is_train: bool | None = None) -> None:
        """Load the batch's data (and labels, when it has them) and run forward."""
        batch = data_batch[0] if isinstance(data_batch, list) else data_batch
        self._load(batch.data, self.data_arrays)
        if is_train is None:
            is_train = self.for_training
        if self.label_arrays is not None and batch.label:
            self._load(batch.label, self.label_arrays)
        for exe in self.execs:
            exe.forward(is_train=is_train)

    def backward(self, out_grads=None) -> None:
        """Back-propagate ``out_grads`` (ones for loss heads when None)."""
        if not self.for_training:
            raise MXNetError("re-bind with for_training=True to run backward")
        if out_grads is not None and not isinstance(out_grads, list | tuple):
            out_grads = [out_grads]
        for exe in self.execs:
            exe.backward(out_grads=list(out_grads) if out_grads else None)

    def get_output_shapes(self) -> list[tuple[str, tuple]]:
        """``[(output name, shape)]`` with the batch axis at the batch size."""
        out = []
        for name, arr, axis in zip(self.output_names, self.execs[0].outputs,
                                   self.output_layouts):
            shape = list(arr.shape)
            if axis >= 0:
                shape[axis] = self.batch_size
            out.append((name, tuple(shape)))
        return out

    def get_outputs(self, merge_multi_context: bool = True, begin: int = 0,
                    end: int | None = None) -> list:
        """The outputs (a list of NDArrays; one list per output when not merged)."""
        end = self.num_outputs if end is None else end
        outputs = [[exe.outputs[i] for exe in self.execs] for i in range(begin, end)]
        return [o[0] for o in outputs] if merge_multi_context else outputs

    def get_input_grads(self, merge_multi_context: bool = True) -> list:
        """Gradients of the data inputs (bound with ``inputs_need_grad``)."""
        if merge_multi_context:
            return [g[0] for g in self.input_grad_arrays]
        return self.input_grad_arrays

    def get_states(self, merge_multi_context: bool = True) -> list:
        """The state arrays named by ``state_names``."""
        if merge_multi_context:
            raise ValueError("merge_multi_context=True is not supported for get_states yet.")
        return self.state_arrays

    def set_states(self, states=None, value=None) -> None:
        """Copy ``states`` (one list per state) into the state arrays, or fill with ``value``."""
        if states is not None:
            if value is not None:
                raise ValueError("Only one of states & value can be specified.")
            for src, dst in zip(states, self.state_arrays):
                src = src[0] if isinstance(src, list | tuple) else src
                src.copyto(dst[0])
            return
        if value is None:
            raise ValueError("At least one of states & value must be specified.")
        for dst in self.state_arrays:
            dst[0][:] = value

    def update_metric(self, eval_metric, labels, pre_sliced: bool = False) -> None:
        """Update ``eval_metric`` with the labels and this batch's outputs, by name."""
        if pre_sliced:
            labels = labels[0]
        labels = list(labels or [])
        # bound without labels: still score against the batch's labels, named by position
        names = self.label_names or [f"_{i}_label" for i in range(len(labels))]
        labels_ = dict(zip(names, labels))
        preds = dict(zip(self.output_names, self.execs[0].outputs))
        eval_metric.update_dict(labels_, preds)

    def install_monitor(self, mon) -> None:
        """Hand each executor to ``mon.install``."""
        for exe in self.execs:
            mon.install(exe)
