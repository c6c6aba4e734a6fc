"""``ParameterDict``: Parameters sharing a name prefix, created on first ``get``."""
from __future__ import annotations

import re
from collections import OrderedDict

import numpy as np

from ember.base import MXNetError

from .parameter import Constant, Parameter


class ParameterDict:
    """An ordered dict of Parameters sharing a name prefix; ``get`` creates or reuses."""

    def __init__(self, prefix: str = "", shared: ParameterDict | None = None):
        self._prefix = prefix
        self._params: OrderedDict[str, Parameter] = OrderedDict()
        self._shared = shared

    def __repr__(self):
        body = "\n".join(f"  {v}" for v in self.values())
        return f"{self._prefix} (\n{body}\n)"

    def __getitem__(self, key):
        return self._params[key]

    def __iter__(self):
        return iter(self._params)

    def __len__(self):
        return len(self._params)

    def __contains__(self, key):
        return key in self._params

    def items(self):
        return self._params.items()

    def keys(self):
        return self._params.keys()

    def values(self):
        return self._params.values()

    @property
    def prefix(self) -> str:
        return self._prefix

    def _get_impl(self, name):
        if name in self._params:
            return self._params[name]
        if self._shared is not None and name in self._shared._params:
            self._params[name] = self._shared._params[name]
            return self._params[name]
        return None

    def get(self, name: str, **kwargs) -> Parameter:
        """The parameter ``prefix + name``, created with ``kwargs`` if it does not exist."""
        full = self._prefix + name
        param = self._get_impl(full)
        if param is None:
            param = Parameter(full, **kwargs)
            self._params[full] = param
            return param
        for k, v in kwargs.items():
            existing = getattr(param, k, None)
            if existing is None:
                setattr(param, k, v)
            elif k == "shape" and v is not None and len(v) == len(existing):
                merged = []
                for a, b in zip(v, existing):
                    if a > 0 and b > 0 and a != b:
                        raise MXNetError(f"Cannot retrieve Parameter '{full}': shape {v} "
                                         f"does not match stored {existing}")
                    merged.append(a if a > 0 else b)
                param._shape = tuple(merged)
            elif k == "dtype" and np.dtype(v) == np.dtype(existing):
                continue
            elif v is not None and v != existing:
                raise MXNetError(f"Cannot retrieve Parameter '{full}' because desired "
                                 f"attribute does not match with stored for attribute "
                                 f"'{k}': desired '{v}' vs stored '{existing}'.")
        return param

    def get_constant(self, name: str, value=None) -> Constant:
        """The constant ``prefix + name``, created from ``value`` if it does not exist."""
        full = self._prefix + name
        param = self._get_impl(full)
        if param is None:
            if value is None:
                raise KeyError(f"No constant named '{full}'. Please specify value if you "
                               "want to create a new constant.")
            param = Constant(full, value)
            self._params[full] = param
        elif value is not None and not isinstance(param, Constant):
            raise MXNetError(f"Parameter '{full}' already exists but it is not a constant.")
        return param

    def update(self, other: ParameterDict):
        """Add ``other``'s parameters (a name may not refer to two different ones)."""
        for k, v in other.items():
            if k in self._params and self._params[k] is not v:
                raise MXNetError(f"Cannot update self with other because they have different "
                                 f"Parameters with the same name '{k}'")
        for k, v in other.items():
            self._params[k] = v

    def initialize(self, init=None, ctx=None, verbose: bool = False,
                   force_reinit: bool = False):
        """Initialise every parameter (``init`` is the default for those without one)."""
        from ember import initializer
        init = initializer.Uniform() if init is None else init
        if verbose and hasattr(init, "set_verbosity"):
            init.set_verbosity(verbose=verbose)
        for v in self.values():
            v.initialize(None, ctx, init, force_reinit=force_reinit)

    def zero_grad(self):
        for v in self.values():
            v.zero_grad()

    def reset_ctx(self, ctx):
        for v in self.values():
            v.reset_ctx(ctx)

    def list_ctx(self):
        out = []
        for v in self.values():
            out.extend(c for c in v.list_ctx() if c not in out)
        return out

    def setattr(self, name: str, value):
        """Set an attribute (``grad_req``, ``lr_mult``...) on every parameter."""
        for v in self.values():
            setattr(v, name, value)

    def select(self, pattern: str) -> ParameterDict:
        """The parameters whose names match the regular expression ``pattern``."""
        out = ParameterDict(self._prefix)
        rx = re.compile(pattern)
        for k, v in self.items():
            if rx.match(k):
                out._params[k] = v
        return out

    def save(self, filename: str, strip_prefix: str = ""):
        """Write the parameters to ``filename`` in MXNet's .params format."""
        from ember import ndarray as nd
        arg = {}
        for p in self.values():
            if not p.name.startswith(strip_prefix):
                raise ValueError(f"Prefix '{strip_prefix}' is to be striped before saving, but"
                                 f" Parameter's name '{p.name}' does not start with it.")
            arg[p.name[len(strip_prefix):]] = p._reduce()
        nd.save(filename, arg)

    def load(self, filename: str, ctx=None, allow_missing: bool = False,
             ignore_extra: bool = False, restore_prefix: str = "", cast_dtype: bool = False,
             dtype_source: str = "current"):
        """Read parameters written by ``save`` (or by MXNet)."""
        from ember import ndarray as nd
        if restore_prefix:
            for name in self.keys():
                if not name.startswith(restore_prefix):
                    raise MXNetError(f"restore_prefix is '{restore_prefix}' but Parameter "
                                     f"name '{name}' does not start with it")
        self.load_dict(nd.load(filename), ctx, allow_missing, ignore_extra, restore_prefix,
                       filename, cast_dtype, dtype_source)

    def load_dict(self, param_dict, ctx=None, allow_missing=False, ignore_extra=False,
                  restore_prefix="", filename=None, cast_dtype=False, dtype_source="current"):
        """Set parameters from a dict of name -> NDArray (``arg:``/``aux:`` prefixes ok)."""
        where = f"file: {filename}" if filename else "param_dict"
        arg = {restore_prefix + (k[4:] if k.startswith(("arg:", "aux:")) else k): v
               for k, v in param_dict.items()}
        if not allow_missing:
            for name in self.keys():
                if name not in arg:
                    raise MXNetError(f"Parameter '{name[len(restore_prefix):]}' is missing in "
                                     f"{where}, which contains parameters: "
                                     f"{', '.join(sorted(arg))}")
        for name, value in arg.items():
            if name not in self._params:
                if not ignore_extra:
                    raise MXNetError(f"Parameter '{name[len(restore_prefix):]}' loaded from "
                                     f"{where} is not present in ParameterDict, choices are: "
                                     f"{', '.join(self._params)}. Set ignore_extra to True "
                                     "to ignore.")
                continue
            self._params[name]._load_init(value, ctx, cast_dtype=cast_dtype,
                                          dtype_source=dtype_source)
