"""``ember.distributed``: Horovod's MXNet API on MPI (``import ember.distributed as hvd``).

Data-parallel training runs one process per core or device, started by
``mpirun -n N python train.py`` (or ``ember launch -n N train.py``); every process builds
the same model, trains on its shard of the data, and the gradients are summed over the
processes before each update::

    import ember as mx
    import ember.distributed as hvd
    hvd.init()
    net = ...; net.initialize()
    params = net.collect_params()
    hvd.broadcast_parameters(params)           # rank 0's initial weights everywhere
    trainer = hvd.DistributedTrainer(params, "sgd", {"learning_rate": 0.1})
    ...                                        # forward, backward as usual
    trainer.step(batch_size)                   # batch_size: this rank's batch

``DistributedTrainer`` averages the gradients (Horovod's ``rescale_grad / size``), so N
ranks at batch b train exactly like one process at batch N*b. Gradients travel in a few
large fused allreduces (``$EMBER_FUSION_BYTES``, 64 MiB by default), not one per parameter.
Parameters whose shapes are deferred to the first forward are broadcast when that forward
initialises them (as Horovod's binding does). A rank that fails makes the whole job end
(``MPI_Abort``), and a collective that waits more than ``$EMBER_DIST_TIMEOUT`` seconds
(300) for a lost rank aborts it: a job never hangs forever. Without ``mpirun`` everything
works in one process (size 1).
"""
from __future__ import annotations

import copy
import types

import numpy as np

from ember import trace_state
from ember.base import MXNetError
from ember.gluon.parameter import Parameter
from ember.gluon.trainer import Trainer
from ember.kvstore import _mpi
from ember.kvstore._ops import fused_allreduce
from ember.ndarray.ndarray import NDArray

__all__ = ["init", "shutdown", "is_initialized", "rank", "size", "local_rank", "local_size",
           "allreduce", "allreduce_", "grouped_allreduce", "grouped_allreduce_", "broadcast",
           "broadcast_", "allgather", "barrier", "broadcast_parameters", "allreduce_metric",
           "DistributedTrainer", "mpi_threads_supported"]


def init(comm=None):
    """Join the job's process group (MPI's COMM_WORLD); safe to call more than once."""
    if comm is not None:
        raise MXNetError("ember.distributed.init: only the whole job (COMM_WORLD) is "
                         "supported as the process group")
    _mpi.world()


def shutdown():
    """Nothing to release: MPI is finalised when the process exits."""


def is_initialized() -> bool:
    """True after :func:`init` (or any distributed kvstore) set the process group up."""
    return _mpi.initialized()


def _w():
    if not _mpi.initialized():
        raise MXNetError("ember.distributed: call ember.distributed.init() first")
    return _mpi.world()


def rank() -> int:
    """This process' rank in the job, 0 .. size()-1."""
    return _w().rank


def size() -> int:
    """The number of processes in the job."""
    return _w().size


def local_rank() -> int:
    """This process' rank among the processes on its host."""
    return _w().local_rank


def local_size() -> int:
    """The number of processes of the job on this host."""
    return _w().local_size


def mpi_threads_supported() -> bool:
    """True when the MPI library runs with MPI_THREAD_MULTIPLE."""
    w = _w()
    return w.MPI.Query_thread() == w.MPI.THREAD_MULTIPLE


def barrier():
    """Wait until every rank calls ``barrier``."""
    _w().barrier()


def grouped_allreduce_(tensors: list, average: bool = True, name=None, priority: int = 0,
                       prescale_factor: float = 1.0, postscale_factor: float = 1.0) -> list:
    """Sum (``average``: mean) each NDArray over the ranks, in place, in fused buffers."""
    if trace_state.current() is not None or any(not isinstance(t, NDArray) for t in tensors):
        raise MXNetError("ember.distributed.allreduce_ works on NDArrays; inside traced "
                         "code use allreduce (an op of the graph)")
    bufs = [np.array(t.asnumpy(), copy=True, order="C") for t in tensors]
    for b in bufs:
        if prescale_factor != 1.0:
            b *= prescale_factor
    _w().allreduce_arrays(bufs, average=average)
    for t, b in zip(tensors, bufs):
        if postscale_factor != 1.0:
            b *= postscale_factor
        t._data[...] = b
    return tensors


def allreduce_(tensor, average: bool = True, name=None, priority: int = 0,
               prescale_factor: float = 1.0, postscale_factor: float = 1.0):
    """``tensor`` summed (``average``: averaged) over the ranks, in place."""
    return grouped_allreduce_([tensor], average, name, priority, prescale_factor,
                              postscale_factor)[0]


def grouped_allreduce(tensors: list, average: bool = True, name=None, priority: int = 0,
                      prescale_factor: float = 1.0, postscale_factor: float = 1.0) -> list:
    """New arrays: each tensor summed (or averaged) over the ranks, one fused allreduce.
    Works on Symbols too (inside hybridized or compiled code, as graph ops)."""
    _w()
    if tensors and not isinstance(tensors[0], NDArray):  # traced: graph ops
        from ember import symbol as F
        scaled = [t * prescale_factor if prescale_factor != 1.0 else t for t in tensors]
        out = fused_allreduce(F, scaled, average)
        return [o * postscale_factor if postscale_factor != 1.0 else o for o in out]
    copies = [NDArray(np.array(t.asnumpy(), copy=True), t.context) for t in tensors]
    return grouped_allreduce_(copies, average, name, priority, prescale_factor,
                              postscale_factor)


def allreduce(tensor, average: bool = True, name=None, priority: int = 0,
              prescale_factor: float = 1.0, postscale_factor: float = 1.0):
    """A new array: ``tensor`` summed (``average``: averaged) over the ranks."""
    return grouped_allreduce([tensor], average, name, priority, prescale_factor,
                             postscale_factor)[0]


def broadcast_(tensor, root_rank: int = 0, name=None, priority: int = 0):
    """Overwrite ``tensor`` with ``root_rank``'s, in place."""
    buf = np.array(tensor.asnumpy(), copy=True, order="C")
    _w().broadcast_arrays([buf], root=root_rank)
    tensor._data[...] = buf
    return tensor


def broadcast(tensor, root_rank: int = 0, name=None, priority: int = 0):
    """A new array holding ``root_rank``'s ``tensor``."""
    return broadcast_(NDArray(np.array(tensor.asnumpy(), copy=True), tensor.context),
                      root_rank)


def allgather(tensor, name=None, priority: int = 0):
    """Every rank's ``tensor`` concatenated on axis 0 in rank order (first dims may differ)."""
    parts = _w().allgather_object(tensor.asnumpy())
    return NDArray(np.concatenate(parts, axis=0), tensor.context)


def _broadcast_when_initialised(param: Parameter, root_rank: int):
    """Horovod's deferred-init hook: once the first forward has initialised ``param``
    (``_init_impl``), broadcast it, then drop the hook."""
    original = param._init_impl

    def init_then_broadcast(self, data, ctx_list):
        original(data, ctx_list)
        del self._init_impl  # back to the class's method
        arrays = [d._data for d in self._data]
        _w().broadcast_arrays(arrays[:1], root=root_rank)
        for a in arrays[1:]:
            a[...] = arrays[0]
    param._init_impl = types.MethodType(init_then_broadcast, param)


def broadcast_parameters(params, root_rank: int = 0, prefix=None):
    """Copy ``root_rank``'s parameters to every rank (fused). ``params``: a ParameterDict,
    a dict of Parameters or of NDArrays (``net.collect_params()``, ``arg_params``).
    Parameters still waiting for their shape are broadcast when the first forward
    initialises them: every rank must run that forward."""
    if not isinstance(params, dict) and not hasattr(params, "items"):
        raise ValueError(f"invalid params of type: {type(params)}")
    arrays = []
    for _, p in sorted(params.items(), key=lambda kv: kv[0]):
        if isinstance(p, Parameter):
            if p._deferred_init:
                _broadcast_when_initialised(p, root_rank)
                continue
            if p._data is None:
                raise MXNetError(f"broadcast_parameters: Parameter {p.name!r} is not "
                                 "initialized; call initialize() first")
            arrays.append([d._data for d in p._data])
        elif isinstance(p, NDArray):
            arrays.append([p._data])
        else:
            raise ValueError(f"invalid params of type: {type(p)}")
    _w().broadcast_arrays([a[0] for a in arrays], root=root_rank)
    for copies in arrays:
        for a in copies[1:]:
            a[...] = copies[0]


def _metric_state(m) -> list:
    """The additive state of one metric: arrays that sum over ranks to the whole job's."""
    from ember.metric.classification import PCC, _BinaryMetric
    from ember.metric.regression import PearsonCorrelation
    if isinstance(m, PearsonCorrelation) and m.average != "macro":
        raise MXNetError("allreduce_metric: PearsonCorrelation(average='micro') keeps "
                         "running moments that do not add over ranks; use average='macro'")
    counts = [float(m.num_inst), float(m.global_num_inst)]
    if isinstance(m, PCC):
        k = max(_w().allgather_object(m.k))
        if k > m.k:
            m._grow(k - m.k)
        return [np.array(counts), m.lcm, m.gcm]
    state = [np.array(counts + [float(m.sum_metric), float(m.global_sum_metric)])]
    if isinstance(m, _BinaryMetric) and m.average != "macro":
        state.append(m.metrics.local.astype(np.float64))
        state.append(m.metrics.glob.astype(np.float64))
    return state


def allreduce_metric(metric):
    """A copy of ``metric`` holding the whole job's state (every rank's updates), so that
    ``get()``/``get_global()`` give the metric of all the data; ``metric`` is unchanged.
    Every rank must call it."""
    from ember.metric.base import CompositeEvalMetric
    from ember.metric.classification import PCC, _BinaryMetric
    out = copy.deepcopy(metric)
    leaves = out.metrics if isinstance(out, CompositeEvalMetric) else [out]
    states = [[np.asarray(s, np.float64).copy() for s in _metric_state(m)] for m in leaves]
    _w().allreduce_arrays([s for st in states for s in st])
    for m, st in zip(leaves, states):
        m.num_inst, m.global_num_inst = int(st[0][0]), int(st[0][1])
        if isinstance(m, PCC):
            m.lcm, m.gcm = st[1], st[2]
            continue
        if isinstance(m, _BinaryMetric) and m.average != "macro":
            m.metrics.local, m.metrics.glob = st[1].astype(np.int64), st[2].astype(np.int64)
            score = type(m)._score
            m.sum_metric = score(m.metrics.local) * m.num_inst
            m.global_sum_metric = score(m.metrics.glob) * m.global_num_inst
            continue
        m.sum_metric, m.global_sum_metric = st[0][2], st[0][3]
    return out


def allreduce_param_grads(params: list, average: bool = False):
    """Sum (or average) the gradients of ``params`` over the ranks (and their contexts) in
    fused buffers; inside a traced ``@ember.compile`` step, as graph ops between the
    backward and the update."""
    params = [p for p in params if p.grad_req != "null"]
    state = trace_state.current()
    if state is not None:
        from ember import symbol as F
        traced = [p for p in params if id(p) in state.grads]
        reduced = fused_allreduce(F, [state.grads[id(p)] for p in traced], average)
        for p, g in zip(traced, reduced):
            state.grads[id(p)] = g
        return
    live = [p for p in params if p._grad is not None]
    bufs = []
    for p in live:
        grads = [g._data for g in p._grad]
        total = np.array(grads[0], copy=True, order="C")
        for g in grads[1:]:
            total += g
        bufs.append(total)
    _w().allreduce_arrays(bufs, average=average)
    for p, total in zip(live, bufs):
        for g in p._grad:
            g._data[...] = total


class DistributedTrainer(Trainer):
    """A Trainer whose gradients are averaged over the ranks before each update (Horovod's
    ``hvd.DistributedTrainer``): ``step(batch_size)`` with each rank's batch size."""

    def __init__(self, params, optimizer, optimizer_params=None, compression=None,
                 gradient_predivide_factor: float = 1.0, prefix=None, num_groups: int = 0):
        if compression not in (None, "none") and type(compression).__name__ != "NoneCompressor":
            raise MXNetError("DistributedTrainer: gradient compression is not supported")
        super().__init__(params, optimizer, optimizer_params=optimizer_params, kvstore=None)
        init()
        # Horovod: rescale by 1/size, which averages the summed gradients. Its
        # gradient_predivide_factor divides before the sum and multiplies after: the same
        # numbers up to rounding, so it is accepted and has no effect here.
        self._scale /= size()

    def _allreduce_grads(self):
        if size() > 1:
            allreduce_param_grads(self._params, average=False)

