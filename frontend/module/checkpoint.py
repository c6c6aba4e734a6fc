"""MXNet's checkpoint files: ``prefix-symbol.json`` plus ``prefix-%04d.params`` (``arg:`` and
``aux:`` keyed NDArrays in MXNet's binary format), as ``mx.model.save_checkpoint`` and
``load_checkpoint`` write and read them."""
from __future__ import annotations

import logging

from ember import ndarray as nd
from ember import symbol as sym
from ember.base import MXNetError
from ember.context import cpu

__all__ = ["save_checkpoint", "load_checkpoint", "load_params", "split_params"]


def split_params(save_dict: dict, fname: str = "") -> tuple[dict, dict]:
    """``({name: arg}, {name: aux})`` from ``{'arg:name': ..., 'aux:name': ...}``."""
    arg_params, aux_params = {}, {}
    for key, value in (save_dict or {}).items():
        kind, _, name = key.partition(":")
        if kind == "arg" and name:
            arg_params[name] = value
        elif kind == "aux" and name:
            aux_params[name] = value
        else:
            raise MXNetError(f"Invalid param file {fname}: key {key!r} is neither 'arg:<name>' "
                             "nor 'aux:<name>'")
    return arg_params, aux_params


def save_checkpoint(prefix: str, epoch: int, symbol, arg_params: dict, aux_params: dict,
                    remove_amp_cast: bool = True) -> None:
    """Write ``prefix-symbol.json`` (when ``symbol`` is given) and ``prefix-%04d.params``."""
    if symbol is not None:
        symbol.save(f"{prefix}-symbol.json", remove_amp_cast=remove_amp_cast)
    save_dict = {f"arg:{k}": v.as_in_context(cpu()) for k, v in arg_params.items()}
    save_dict.update({f"aux:{k}": v.as_in_context(cpu()) for k, v in aux_params.items()})
    param_name = f"{prefix}-{epoch:04d}.params"
    nd.save(param_name, save_dict)
    logging.info('Saved checkpoint to "%s"', param_name)


def load_params(prefix: str, epoch: int) -> tuple[dict, dict]:
    """``(arg_params, aux_params)`` from ``prefix-%04d.params``."""
    fname = f"{prefix}-{epoch:04d}.params"
    return split_params(nd.load(fname), fname)


def load_checkpoint(prefix: str, epoch: int):
    """``(symbol, arg_params, aux_params)`` from the files :func:`save_checkpoint` wrote."""
    symbol = sym.load(f"{prefix}-symbol.json")
    arg_params, aux_params = load_params(prefix, epoch)
    return symbol, arg_params, aux_params
