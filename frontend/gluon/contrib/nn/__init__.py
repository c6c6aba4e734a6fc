"""``mx.gluon.contrib.nn``: concurrent containers, Identity, SparseEmbedding,
SyncBatchNorm and pixel shuffles (MXNet 1.9.1's contrib layers)."""
from .basic_layers import (Concurrent, HybridConcurrent, Identity, PixelShuffle1D,
                           PixelShuffle2D, PixelShuffle3D, SparseEmbedding, SyncBatchNorm)

__all__ = ["Concurrent", "HybridConcurrent", "Identity", "SparseEmbedding", "SyncBatchNorm",
           "PixelShuffle1D", "PixelShuffle2D", "PixelShuffle3D"]
