"""``math`` functions for generated CUDA kernels run by numba's CUDA simulator.

On a device, ``math.log(-1.0)`` in a numba-cuda kernel is libdevice's ``log``: NaN, as C and
NumPy give. The simulator runs the kernel's Python source as Python, where ``math.log(-1.0)``
raises ``ValueError`` and ``math.exp(1000.0)`` raises ``OverflowError``. Under the simulator
the code generator therefore calls these functions instead of ``math.<f>``
(``cuda_kernels.SIM_FUNCS``): NumPy's ufuncs on NumPy scalars, IEEE results without warnings,
so the simulator shows the NaN/Inf behaviour the device has.
"""
from __future__ import annotations

import math

import numpy as np

_UFUNCS = {
    "exp": np.exp, "expm1": np.expm1, "log": np.log, "log1p": np.log1p, "log2": np.log2,
    "log10": np.log10, "sqrt": np.sqrt, "sin": np.sin, "cos": np.cos, "tan": np.tan,
    "asin": np.arcsin, "acos": np.arccos, "atan": np.arctan, "sinh": np.sinh,
    "cosh": np.cosh, "tanh": np.tanh, "asinh": np.arcsinh, "acosh": np.arccosh,
    "atanh": np.arctanh, "pow": np.power, "hypot": np.hypot, "copysign": np.copysign,
    "floor": np.floor, "ceil": np.ceil, "trunc": np.trunc, "fabs": np.fabs,
}


def _ufunc(f):
    def call(*args):
        with np.errstate(all="ignore"):
            return f(*args)
    call.__name__ = f.__name__
    return call


def _math(f, on_error):
    """``math.<f>`` with the eager kernel's results where Python raises (poles, overflow:
    ``ir/opset_unary.py``'s ``_pyfunc`` fallbacks)."""
    def call(x):
        try:
            return f(x)
        except OverflowError:
            return math.inf
        except ValueError:  # gamma/lgamma at 0 and the negative integers
            return on_error(x)
    call.__name__ = f.__name__
    return call


for _name, _f in _UFUNCS.items():
    globals()[f"sim_{_name}"] = _ufunc(_f)
sim_erf = math.erf
sim_gamma = _math(math.gamma, lambda x: math.copysign(math.inf, x) if x == 0 else math.nan)
sim_lgamma = _math(math.lgamma, lambda x: math.inf)

NAMES = (*_UFUNCS, "erf", "gamma", "lgamma")
