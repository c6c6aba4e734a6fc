"""Tensor types of the IR: a shape (dims may be unknown, ``None``) and a dtype name."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# short names used by the IR text format (f32[B,784])
_SHORT = {"float16": "f16", "float32": "f32", "float64": "f64", "int8": "i8", "int32": "i32",
          "int64": "i64", "uint8": "u8", "bool": "bool", "int16": "i16", "uint16": "u16",
          "uint32": "u32", "uint64": "u64", "bfloat16": "bf16"}
_LONG = {v: k for k, v in _SHORT.items()}
_CANONICAL = frozenset(_SHORT) - {"bfloat16"}  # NumPy's own names (bfloat16 is not one)

Dim = int | None


def dtype_name(dtype) -> str:
    """Canonical dtype name (``'float32'``) of anything NumPy accepts as a dtype."""
    if isinstance(dtype, str):
        if dtype in _CANONICAL:  # most calls: no NumPy lookup
            return dtype
        if dtype in _LONG:
            return _LONG[dtype]
    return np.dtype(dtype).name


def short_dtype(name: str) -> str:
    """The IR text spelling of a dtype name (``float32`` -> ``f32``)."""
    return _SHORT.get(name, name)


def long_dtype(short: str) -> str:
    """Inverse of :func:`short_dtype`."""
    return _LONG.get(short, short)


@dataclass(frozen=True, slots=True)
class TensorType:
    """Shape and dtype of one tensor; ``None`` dims are not known yet."""

    shape: tuple[Dim, ...] | None  # None: even the rank is unknown
    dtype: str = "float32"

    def __post_init__(self):
        if self.shape is not None:
            object.__setattr__(self, "shape", tuple(None if d is None else int(d)
                                                    for d in self.shape))
        object.__setattr__(self, "dtype", dtype_name(self.dtype))

    @property
    def ndim(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def known(self) -> bool:
        """True when every dim is known."""
        return self.shape is not None and all(d is not None for d in self.shape)

    @property
    def size(self) -> int | None:
        if not self.known:
            return None
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int | None:
        n = self.size
        return None if n is None else n * np.dtype(self.dtype).itemsize

    def with_shape(self, shape) -> TensorType:
        return TensorType(tuple(shape), self.dtype)

    def with_dtype(self, dtype) -> TensorType:
        return TensorType(self.shape, dtype)

    def __str__(self) -> str:
        if self.shape is None:
            return f"{short_dtype(self.dtype)}[*]"
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{short_dtype(self.dtype)}[{dims}]"
