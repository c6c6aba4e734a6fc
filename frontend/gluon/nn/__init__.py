"""``gluon.nn``: neural-network layers."""
from ..block import Block, HybridBlock  # noqa: F401,E402
from ..symbol_block import SymbolBlock  # noqa: F401,E402
from .activations import ELU, GELU, SELU, LeakyReLU, PReLU, Swish  # noqa: F401
from .basic_layers import (  # noqa: F401
    Activation,
    Dense,
    Dropout,
    Flatten,
    HybridLambda,
    HybridSequential,
    Identity,
    Lambda,
    Sequential,
)
from .conv_layers import (  # noqa: F401
    AvgPool1D,
    AvgPool2D,
    AvgPool3D,
    Conv1D,
    Conv1DTranspose,
    Conv2D,
    Conv2DTranspose,
    Conv3D,
    Conv3DTranspose,
    GlobalAvgPool1D,
    GlobalAvgPool2D,
    GlobalAvgPool3D,
    GlobalMaxPool1D,
    GlobalMaxPool2D,
    GlobalMaxPool3D,
    MaxPool1D,
    MaxPool2D,
    MaxPool3D,
    ReflectionPad2D,
)
from .norm_layers import (  # noqa: F401
    BatchNorm,
    BatchNormReLU,
    Embedding,
    GroupNorm,
    InstanceNorm,
    LayerNorm,
)
