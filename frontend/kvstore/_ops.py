"""The allreduce as a graph op: a ``Custom`` operator ``_ember_allreduce``.

Traced code (``@ember.compile`` training steps, hybridized SyncBatchNorm) needs the sum over
ranks *inside* its graph, between the backward and the optimizer's update ops. The registry
op ``Custom`` already runs Python inside eager calls, autograd, hybridized blocks and
compiled graphs alike, so the allreduce is one registered ``CustomOpProp``: forward sums its
input over the ranks (fused into one MPI call by :func:`fused_allreduce`, which packs many
tensors into one flat input first), backward sums the output gradient the same way (a sum
over ranks is its own adjoint).
"""
from __future__ import annotations

import numpy as np

OP_TYPE = "_ember_allreduce"
_registered: list = []


def _register():
    if _registered:
        return
    from ember import operator
    from ember.ndarray.ndarray import NDArray

    from ._mpi import world

    def reduced(arr, average: bool):
        buf = np.array(arr.asnumpy(), copy=True, order="C")
        world().allreduce_arrays([buf], average=average)
        return NDArray(buf, arr.context)

    class _AllreduceOp(operator.CustomOp):
        def __init__(self, average: bool):
            super().__init__()
            self.average = average

        def forward(self, is_train, req, in_data, out_data, aux):
            self.assign(out_data[0], req[0], reduced(in_data[0], self.average))

        def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
            self.assign(in_grad[0], req[0], reduced(out_grad[0], self.average))

    @operator.register(OP_TYPE)
    class _AllreduceProp(operator.CustomOpProp):
        def __init__(self, average="0"):
            super().__init__(need_top_grad=True)
            self.average = average in ("1", "True", "true")

        def list_arguments(self):
            return ["data"]

        def list_outputs(self):
            return ["output"]

        def infer_shape(self, in_shape):
            return in_shape, [in_shape[0]], []

        def create_operator(self, ctx, in_shapes, in_dtypes):
            return _AllreduceOp(self.average)

    _registered.append(True)


MOMENTS = "_ember_sync_moments"


def _register_moments():
    from ember import operator
    from ember.ndarray.ndarray import NDArray

    from ._mpi import world

    class _MomentsOp(operator.CustomOp):
        """Per-channel (axis 1) mean and biased variance of every rank's batch: sums and
        sums of squares in one float64 allreduce; the moving statistics are updated as
        MXNet's BatchNorm does. Backward: the ranks' output gradients are summed, then
        dx = (dmean + 2 dvar (x - mean)) / N (Zhang et al. 2018's synchronised BN)."""

        def __init__(self, momentum: float):
            super().__init__()
            self.momentum = momentum

        def forward(self, is_train, req, in_data, out_data, aux):
            x = in_data[0].asnumpy()
            c = x.shape[1]
            axes = tuple(i for i in range(x.ndim) if i != 1)
            buf = np.concatenate([x.sum(axis=axes, dtype=np.float64),
                                  np.square(x, dtype=np.float64).sum(axis=axes),
                                  [x.size // max(c, 1)]])
            world().allreduce_arrays([buf])
            self.n = buf[-1]
            mean = buf[:c] / self.n
            var = np.maximum(buf[c:2 * c] / self.n - mean * mean, 0.0)
            self.mean = mean
            if is_train:
                m = self.momentum
                for a, v in zip(aux, (mean, var)):
                    a._data[...] = a._data * m + v * (1 - m)
            self.assign(out_data[0], req[0], NDArray(mean.astype(x.dtype), in_data[0].context))
            self.assign(out_data[1], req[1], NDArray(var.astype(x.dtype), in_data[0].context))

        def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
            x = in_data[0].asnumpy()
            c = x.shape[1]
            buf = np.concatenate([out_grad[0].asnumpy().astype(np.float64),
                                  out_grad[1].asnumpy().astype(np.float64)])
            world().allreduce_arrays([buf])
            bshape = (1, c) + (1,) * (x.ndim - 2)
            dmean, dvar = buf[:c].reshape(bshape), buf[c:].reshape(bshape)
            dx = (dmean + 2 * dvar * (x - self.mean.reshape(bshape))) / self.n
            self.assign(in_grad[0], req[0], NDArray(dx.astype(x.dtype), in_data[0].context))

    @operator.register(MOMENTS)
    class _MomentsProp(operator.CustomOpProp):
        def __init__(self, momentum="0.9"):
            super().__init__(need_top_grad=True)
            self.momentum = float(momentum)

        def list_arguments(self):
            return ["data"]

        def list_auxiliary_states(self):
            return ["moving_mean", "moving_var"]

        def list_outputs(self):
            return ["mean", "var"]

        def infer_shape(self, in_shape):
            c = [in_shape[0][1]]
            return in_shape, [c, c], [c, c]

        def create_operator(self, ctx, in_shapes, in_dtypes):
            return _MomentsOp(self.momentum)


def sync_moments(F, x, moving_mean, moving_var, momentum: float):
    """(mean, var) over axis 1 of the whole job's batch, updating the moving statistics:
    an op of ``F`` (eager, hybridized or compiled alike)."""
    if not _registered_moments:
        _register_moments()
        _registered_moments.append(True)
    return F.Custom(x, moving_mean, moving_var, op_type=MOMENTS, momentum=repr(momentum))


_registered_moments: list = []


def allreduce_op(F, x, average: bool = False):
    """``x`` summed (or averaged) over the ranks, as an op of ``F`` (``nd`` or ``sym``)."""
    _register()
    return F.Custom(x, op_type=OP_TYPE, average="1" if average else "0")


def fused_allreduce(F, tensors: list, average: bool = False) -> list:
    """Each tensor summed over the ranks through ONE allreduce: flattened, concatenated,
    reduced, split and reshaped back (the fusion buffer as graph ops)."""
    if not tensors:
        return []
    flat = [F.reshape(t, shape=(-1,)) for t in tensors]
    joined = flat[0] if len(flat) == 1 else F.concat(*flat, dim=0)
    total = allreduce_op(F, joined, average)
    out, off = [], 0
    for t in tensors:
        n = int(np.prod(t.shape))
        part = F.slice_axis(total, axis=0, begin=off, end=off + n)
        out.append(F.reshape(part, shape=t.shape))
        off += n
    return out
