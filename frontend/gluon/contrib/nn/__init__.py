"""``mx.gluon.contrib.nn``: concurrent containers, Identity and pixel shuffles."""
from .basic_layers import (Concurrent, HybridConcurrent, Identity, PixelShuffle1D,
                           PixelShuffle2D, PixelShuffle3D)

__all__ = ["Concurrent", "HybridConcurrent", "Identity", "PixelShuffle1D", "PixelShuffle2D",
           "PixelShuffle3D"]
