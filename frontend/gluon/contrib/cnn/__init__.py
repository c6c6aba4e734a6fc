"""``mx.gluon.contrib.cnn``: deformable convolutions (v1 and modulated v2)."""
from .conv_layers import DeformableConvolution, ModulatedDeformableConvolution

__all__ = ["DeformableConvolution", "ModulatedDeformableConvolution"]
