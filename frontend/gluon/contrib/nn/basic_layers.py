"""MXNet 1.9.1's ``gluon.contrib.nn`` layers: Concurrent / HybridConcurrent feed one input to
every child and concatenate the outputs; PixelShuffle{1,2,3}D move channel blocks into the
spatial axes (sub-pixel convolution, Shi et al. 2016); SparseEmbedding (dense gradients in
ember) and SyncBatchNorm (one process: BatchNorm with MXNet's SyncBatchNorm signature)."""
from __future__ import annotations

import warnings

from ember import ndarray as nd

from ...block import Block, HybridBlock
from ...nn import BatchNorm, HybridSequential, Identity, Sequential

__all__ = ["Concurrent", "HybridConcurrent", "Identity", "SparseEmbedding", "SyncBatchNorm",
           "PixelShuffle1D", "PixelShuffle2D", "PixelShuffle3D"]


class Concurrent(Sequential):
    """Feeds the input to every child Block and concatenates their outputs on ``axis``."""

    def __init__(self, axis: int = -1, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        self.axis = axis

    def forward(self, x):
        return nd.concat(*[block(x) for block in self._children.values()], dim=self.axis)


class HybridConcurrent(HybridSequential):
    """Feeds the input to every child HybridBlock and concatenates their outputs on
    ``axis``; hybridizable as one graph."""

    def __init__(self, axis: int = -1, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        self.axis = axis

    def hybrid_forward(self, F, x):
        return F.concat(*[block(x) for block in self._children.values()], dim=self.axis)


_SPARSE_WARNED = []


class SparseEmbedding(Block):
    """Turns non-negative integer indices into rows of a ``(input_dim, output_dim)`` weight.

    MXNet stores this layer's weight and gradient as ``row_sparse`` arrays for distributed
    training with huge vocabularies. ember stores arrays densely: the weight and its
    gradient here are ordinary dense arrays (the gradient's untouched rows are zero, the
    same numbers MXNet's sparse gradient holds), and any optimizer can update them. The
    first SparseEmbedding made in a process warns once that storage is dense.

    Inputs: ``data`` of shape ``(x1, ..., xk)``; output ``(x1, ..., xk, output_dim)``.
    """

    def __init__(self, input_dim: int, output_dim: int, dtype="float32",
                 weight_initializer=None, **kwargs):
        super().__init__(**kwargs)
        if not _SPARSE_WARNED:
            _SPARSE_WARNED.append(True)
            warnings.warn("SparseEmbedding: ember stores arrays densely; the weight and its "
                          "gradient are dense arrays (same values as MXNet's row_sparse ones)",
                          UserWarning, stacklevel=2)
        self._kwargs = {"input_dim": input_dim, "output_dim": output_dim, "dtype": dtype,
                        "sparse_grad": True}
        self.weight = self.params.get("weight", shape=(input_dim, output_dim),
                                      init=weight_initializer, dtype=dtype)

    def forward(self, x):
        return nd.Embedding(x, self.weight.data(x.context), name="fwd", **self._kwargs)

    def __repr__(self):
        k = self._kwargs
        return (f"{type(self).__name__}({k['input_dim']} -> {k['output_dim']}, "
                f"{k['dtype']})")


class SyncBatchNorm(BatchNorm):
    """Cross-device synchronised batch normalisation (Zhang et al., "Context Encoding for
    Semantic Segmentation", CVPR 2018), with MXNet 1.9.1's signature.

    ember runs one device per process, so on one process this is ``nn.BatchNorm`` over
    axis 1 (the batch statistics of the whole local batch): same parameters (``gamma``,
    ``beta``, ``running_mean``, ``running_var``), same numbers, same saved files. In a
    data-parallel job of several ranks (``ember.distributed``, ``dist_sync``) training
    normalises with the statistics of the whole job's batch: per-channel sums and sums of
    squares are summed over the ranks (one allreduce, whose backward is the allreduce of
    their gradients), so N ranks at batch b give what BatchNorm gives at batch N*b, eagerly,
    hybridized and compiled; ``num_devices`` is recorded but has no effect.

    Parameters: ``in_channels`` (0: inferred at the first forward), ``num_devices``
    (default: the number of visible GPUs, at least 1, with MXNet's warning), ``momentum``,
    ``epsilon``, ``center``, ``scale``, ``use_global_stats`` and the four initializers.
    """

    def __init__(self, in_channels: int = 0, num_devices: int | None = None,
                 momentum: float = 0.9, epsilon: float = 1e-5, center: bool = True,
                 scale: bool = True, use_global_stats: bool = False,
                 beta_initializer="zeros", gamma_initializer="ones",
                 running_mean_initializer="zeros", running_variance_initializer="ones",
                 **kwargs):
        super().__init__(axis=1, momentum=momentum, epsilon=epsilon, center=center,
                         scale=scale, use_global_stats=use_global_stats,
                         beta_initializer=beta_initializer,
                         gamma_initializer=gamma_initializer,
                         running_mean_initializer=running_mean_initializer,
                         running_variance_initializer=running_variance_initializer,
                         in_channels=in_channels, **kwargs)
        if num_devices is None:
            num_devices = self._get_num_devices()
        self.num_devices = int(num_devices)

    def hybrid_forward(self, F, x, gamma, beta, running_mean, running_var):
        from ember import autograd
        from ember.kvstore import _mpi
        world = _mpi.world() if _mpi.initialized() else None
        if world is None or world.size == 1 or not autograd.is_training() \
                or self._kwargs["use_global_stats"]:
            return super().hybrid_forward(F, x, gamma, beta, running_mean, running_var)
        return _sync_batch_norm(F, x, gamma, beta, running_mean, running_var, self._kwargs)

    def _get_num_devices(self) -> int:
        from ember import context
        warnings.warn("Caution using SyncBatchNorm: if not using all the GPUs, please "
                      "mannually set num_devices", UserWarning, stacklevel=3)
        return max(context.num_gpus(), 1)

    def __repr__(self):
        k = self._kwargs
        shown = {"eps": k["eps"], "momentum": k["momentum"], "fix_gamma": k["fix_gamma"],
                 "use_global_stats": k["use_global_stats"], "ndev": self.num_devices,
                 "key": self.prefix}
        in_channels = self.gamma.shape[0]
        body = ", ".join(f"{n}={v!r}" for n, v in shown.items())
        return f"{type(self).__name__}({body}, in_channels={in_channels or None})"


def _sync_batch_norm(F, x, gamma, beta, running_mean, running_var, kw):
    """BatchNorm over axis 1 with the moments of every rank's batch."""
    from ember.kvstore._ops import sync_moments
    mean, var = sync_moments(F, x, running_mean, running_var, kw["momentum"])
    bshape = (1, -1) + (1,) * (len(x.shape) - 2)
    out = F.broadcast_div(F.broadcast_sub(x, F.reshape(mean, shape=bshape)),
                          F.reshape(F.sqrt(var + kw["eps"]), shape=bshape))
    if not kw["fix_gamma"]:
        out = F.broadcast_mul(out, F.reshape(gamma, shape=bshape))
    return F.broadcast_add(out, F.reshape(beta, shape=bshape))


def _factors(factor, n: int) -> tuple:
    if isinstance(factor, int):
        return (factor,) * n
    factors = tuple(int(f) for f in factor)
    if len(factors) != n:
        raise ValueError(f"wrong length {len(factors)} of factor, expected {n}")
    return factors


class PixelShuffle1D(HybridBlock):
    """(N, f*C, W) -> (N, C, W*f): channel blocks become sub-pixel positions."""

    def __init__(self, factor: int):
        super().__init__()
        self._factor = int(factor)

    def hybrid_forward(self, F, x):
        f = self._factor
        x = F.reshape(x, (0, -4, -1, f, 0))       # (N, C, f, W)
        x = F.transpose(x, (0, 1, 3, 2))           # (N, C, W, f)
        return F.reshape(x, (0, 0, -3))            # (N, C, W*f)

    def __repr__(self):
        return f"{type(self).__name__}({self._factor})"


class PixelShuffle2D(HybridBlock):
    """(N, f1*f2*C, H, W) -> (N, C, H*f1, W*f2); ``factor`` an int or a pair."""

    def __init__(self, factor):
        super().__init__()
        self._factors = _factors(factor, 2)

    def hybrid_forward(self, F, x):
        f1, f2 = self._factors
        x = F.reshape(x, (0, -4, -1, f1 * f2, 0, 0))   # (N, C, f1*f2, H, W)
        x = F.reshape(x, (0, 0, -4, f1, f2, 0, 0))     # (N, C, f1, f2, H, W)
        x = F.transpose(x, (0, 1, 4, 2, 5, 3))         # (N, C, H, f1, W, f2)
        return F.reshape(x, (0, 0, -3, -3))            # (N, C, H*f1, W*f2)

    def __repr__(self):
        return f"{type(self).__name__}({self._factors})"


class PixelShuffle3D(HybridBlock):
    """(N, f1*f2*f3*C, D, H, W) -> (N, C, D*f1, H*f2, W*f3); ``factor`` an int or a
    triple."""

    def __init__(self, factor):
        super().__init__()
        self._factors = _factors(factor, 3)

    def hybrid_forward(self, F, x):
        f1, f2, f3 = self._factors
        x = F.reshape(x, (0, -4, -1, f1 * f2 * f3, 0, 0, 0))   # (N, C, f1*f2*f3, D, H, W)
        x = F.swapaxes(x, 2, 3)                                # (N, C, D, f1*f2*f3, H, W)
        x = F.reshape(x, (0, 0, 0, -4, f1, f2 * f3, 0, 0))     # (N, C, D, f1, f2*f3, H, W)
        x = F.reshape(x, (0, 0, -3, 0, 0, 0))                  # (N, C, D*f1, f2*f3, H, W)
        x = F.swapaxes(x, 3, 4)                                # (N, C, D*f1, H, f2*f3, W)
        x = F.reshape(x, (0, 0, 0, 0, -4, f2, f3, 0))          # (N, C, D*f1, H, f2, f3, W)
        x = F.reshape(x, (0, 0, 0, -3, 0, 0))                  # (N, C, D*f1, H*f2, f3, W)
        x = F.swapaxes(x, 4, 5)                                # (N, C, D*f1, H*f2, W, f3)
        return F.reshape(x, (0, 0, 0, 0, -3))                  # (N, C, D*f1, H*f2, W*f3)

    def __repr__(self):
        return f"{type(self).__name__}({self._factors})"
