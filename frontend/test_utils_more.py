"""The rest of ``mx.test_utils``' module-level names (``ember.test_utils`` re-exports them).

MXNet's tests do ``from mxnet.test_utils import *`` and then use what that module happened to
import (``sys``, ``os``, ``np``, ``logging``, ...) as well as its helpers: symbol consistency
checks across contexts and dtypes (``check_consistency``), statistics checks of samplers
(``mean_check``/``var_check``), matrix builders for linalg tests. The data helpers
(``DummyIter``, ``download``, ``get_mnist``...) are in ``test_utils_data``.
"""
from __future__ import annotations

import bz2  # noqa: F401  (names MXNet's test_utils exposes to `import *`)
import errno  # noqa: F401
import gzip  # noqa: F401
import json  # noqa: F401
import logging  # noqa: F401
import os
import platform
import struct  # noqa: F401
import sys  # noqa: F401
import time
import traceback  # noqa: F401
import zipfile  # noqa: F401
from collections import OrderedDict  # noqa: F401

import numpy as np
import numpy.testing as npt

import ember.ndarray as _nd
from ember.context import cpu
from ember.symbol.symbol import Symbol  # noqa: F401
from ember.util import getenv, setenv  # noqa: F401  (MXNet's test_utils has both)


def __getattr__(name):
    # ``ss`` (scipy.stats) as in MXNet's module, imported on first use: it takes seconds
    if name == "ss":
        try:
            import scipy.stats as stats
        except ImportError:
            return None
        return stats
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Features(dict):
    """``mx.runtime.Features()``: what this build has, by MXNet's feature names."""

    _ON = {"CPU_SSE", "CPU_SSE2", "CPU_AVX", "BLAS_OPEN", "SIGNAL_HANDLER", "DEBUG"}

    def __init__(self):
        names = ["CUDA", "CUDNN", "NCCL", "TENSORRT", "CPU_SSE", "CPU_SSE2", "CPU_AVX",
                 "F16C", "BLAS_OPEN", "BLAS_MKL", "LAPACK", "MKLDNN", "OPENCV", "CAFFE",
                 "DIST_KVSTORE", "INT64_TENSOR_SIZE", "SIGNAL_HANDLER", "DEBUG", "TVM_OP"]
        super().__init__((n, n in self._ON) for n in names)

    def is_enabled(self, name: str) -> bool:
        """Whether feature ``name`` is on (an unknown name is an error, as in MXNet)."""
        if name.upper() not in self:
            raise RuntimeError(f"Feature '{name}' is unknown, known features are: "
                               f"{list(self)}")
        return self[name.upper()]


def assign_each(the_input, function):
    """``function`` applied to each element of ``the_input`` (float64 result)."""
    if function is None:
        return np.array(the_input)
    return np.vectorize(function, otypes=[np.float64])(np.asarray(the_input))


def assign_each2(input1, input2, function):
    """``function`` applied elementwise to two equally shaped arrays (float64 result)."""
    if function is None:
        return np.array(input1)
    a, b = np.asarray(input1), np.asarray(input2)
    assert a.shape == b.shape
    return np.vectorize(function, otypes=[np.float64])(a, b)


def create_2d_tensor(rows: int, columns: int, dtype=np.int64):
    """Row ``i`` filled with ``i`` (MXNet's large-tensor tests)."""
    return _nd.array(np.broadcast_to(np.arange(rows, dtype=dtype)[:, None], (rows, columns)),
                     dtype=dtype)


def create_vector(size: int, dtype=np.int64):
    """``0 .. size-1``."""
    return _nd.array(np.arange(size, dtype=dtype), dtype=dtype)


def get_identity_mat(size: int):
    return _nd.array(np.eye(size, dtype=np.float32))


def get_identity_mat_batch(size: int):
    return _nd.array(np.stack([np.eye(size, dtype=np.float32)] * 2))


def checkShapes(a, b):  # noqa: N802 (MXNet's name)
    """AssertionError unless ``a`` and ``b`` have one shape."""
    if a.shape != b.shape:
        raise AssertionError(npt.build_err_msg(
            [a, b], err_msg=f"a.shape = {a.shape} and b.shape = {b.shape} are not equal"))


def locationError(a, b, index, names, maxError=False):  # noqa: N802,N803
    """The mismatch message ``assert_almost_equal`` prints for one location."""
    which = "maximum " if maxError else ""
    return (f"Location of {which}error: {index}, {names[0]}={a[index]:.8f}, "
            f"{names[1]}={b[index]:.8f}")


def same_array(array1, array2) -> bool:
    """Whether two NDArrays share memory (a write through one shows in the other)."""
    return array1.shape == array2.shape and np.shares_memory(array1._data, array2._data)


def simple_forward(sym, ctx=None, is_train=False, **inputs):
    """The outputs (NumPy) of ``sym`` on the NumPy ``inputs``, by name."""
    ctx = ctx or cpu()
    exe = sym.bind(ctx, args={k: _nd.array(v) for k, v in inputs.items()})
    exe.forward(is_train=is_train)
    outs = [o.asnumpy() for o in exe.outputs]
    return outs[0] if len(outs) == 1 else outs


def same_symbol_structure(sym1, sym2) -> bool:
    """Whether two symbols have the same graph (ops and wiring; names may differ)."""
    g1, g2 = json.loads(sym1.tojson()), json.loads(sym2.tojson())
    n1, n2 = g1["nodes"], g2["nodes"]
    if len(n1) != len(n2):
        return False
    return all(a["op"] == b["op"] and [i[:2] for i in a["inputs"]] ==
               [i[:2] for i in b["inputs"]] for a, b in zip(n1, n2))


def check_speed(sym, location=None, ctx=None, N=20, grad_req=None, typ="whole",  # noqa: N803
                **kwargs) -> float:
    """Seconds per forward (``typ='forward'``) or forward+backward (``'whole'``) of ``sym``
    on random inputs of the shapes in ``kwargs`` (or the arrays in ``location``)."""
    ctx = ctx or cpu()
    grad_req = grad_req or ("write" if typ == "whole" else "null")
    if location is None:
        exe = sym.simple_bind(ctx, grad_req=grad_req, **kwargs)
        location = {k: np.random.normal(size=a.shape, scale=1.0)
                    for k, a in exe.arg_dict.items()}
    else:
        exe = sym.simple_bind(ctx, grad_req=grad_req,
                              **{k: v.shape for k, v in location.items()})
    for name, value in location.items():
        exe.arg_dict[name][:] = value
    if typ not in ("whole", "forward"):
        raise ValueError(f'typ can only be "whole" or "forward", got {typ!r}')

    def once():
        exe.forward(is_train=typ == "whole")
        if typ == "whole":
            exe.backward([_nd.ones(o.shape, dtype=o.dtype) for o in exe.outputs])
        for o in exe.outputs:
            o.wait_to_read()
    once()
    tic = time.time()
    for _ in range(N):
        once()
    return (time.time() - tic) / N


def _dtype_rank(dt) -> int:
    return {np.float16: 0, np.float32: 1, np.float64: 2}.get(np.dtype(dt).type, 1)


def check_consistency(sym, ctx_list, scale=1.0, grad_req="write", arg_params=None,
                      aux_params=None, rtol=None, atol=None, raise_on_err=True,
                      ground_truth=None, equal_nan=False, use_uniform=False,
                      rand_type=np.float64):
    """Run ``sym`` once per entry of ``ctx_list`` (``{'ctx': ..., '<input>': shape,
    'type_dict': {...}}``) on the same random inputs and compare the outputs, then (unless
    ``grad_req='null'``) every gradient, against the most precise entry. Returns the ground
    truth (outputs and gradients by name), as MXNet's does."""
    from ember.test_utils import assert_almost_equal
    assert len(ctx_list) > 1
    syms = list(sym) if isinstance(sym, (list, tuple)) else [sym] * len(ctx_list)
    output_names = syms[0].list_outputs()
    arg_names = syms[0].list_arguments()
    exes = []
    for s, spec in zip(syms, ctx_list):
        spec = dict(spec)
        ctx = spec.pop("ctx", cpu())
        type_dict = spec.pop("type_dict", {})
        exes.append(s.simple_bind(ctx, grad_req=grad_req, type_dict=type_dict, **spec))
    arg_params = {} if arg_params is None else dict(arg_params)
    aux_params = {} if aux_params is None else dict(aux_params)
    for name, arr in sorted(exes[0].arg_dict.items()):  # a reproducible order
        if name not in arg_params:
            if use_uniform:
                arg_params[name] = np.random.uniform(-0.92 * scale, 0.92 * scale,
                                                     size=arr.shape).astype(rand_type)
            else:
                arg_params[name] = np.random.normal(size=arr.shape,
                                                    scale=scale).astype(rand_type)
    for name in exes[0].aux_dict:
        aux_params.setdefault(name, 0)
    for exe in exes:
        for name, arr in exe.arg_dict.items():
            arr[:] = arg_params[name]
        for name, arr in exe.aux_dict.items():
            arr[:] = aux_params[name]
        if grad_req == "add":
            for arr in exe.grad_dict.values():
                if arr is not None:
                    arr[:] = 0
    for exe in exes:
        exe.forward(is_train=False)
    ranks = [_dtype_rank(exe.outputs[0].dtype) for exe in exes]
    gt_idx = int(np.argmax(ranks))
    gt = ground_truth
    if gt is None:
        gt = {n: o.asnumpy() for n, o in zip(output_names, exes[gt_idx].outputs)}

    def compare(i, name, arr, ref, what):
        try:
            assert_almost_equal(arr, ref, rtol=rtol, atol=atol, equal_nan=equal_nan,
                                names=(f"ctx{i}.{name}", f"ctx{gt_idx}.{name}"))
        except AssertionError:
            print(f"{what} Err: ctx {i} vs ctx {gt_idx} at {name}")
            if raise_on_err:
                raise
    for i, exe in enumerate(exes):
        if i != gt_idx:
            for name, out in zip(output_names, exe.outputs):
                compare(i, name, out.asnumpy(), gt[name], "Predict")
    if grad_req == "null":
        return gt
    for exe in exes:
        exe.forward(is_train=True)
    least = min(range(len(exes)), key=lambda j: ranks[j])
    heads = [np.random.normal(size=o.shape, scale=scale).astype(exes[least].outputs[k].dtype)
             for k, o in enumerate(exes[0].outputs)]
    for exe in exes:
        exe.backward([_nd.array(h, dtype=o.dtype) for h, o in zip(heads, exe.outputs)])
    if ground_truth is None:
        gt = {n: o.asnumpy() for n, o in zip(output_names, exes[gt_idx].outputs)}
        gt.update({n: (g.asnumpy() if g is not None else None)
                   for n, g in exes[gt_idx].grad_dict.items()})
    for i, exe in enumerate(exes):
        if i == gt_idx:
            continue
        pairs = list(zip(output_names, exe.outputs)) + [(n, exe.grad_dict.get(n))
                                                        for n in arg_names]
        for name, arr in pairs:
            if gt.get(name) is None:
                assert arr is None
                continue
            compare(i, name, arr.asnumpy(), gt[name], "Train")
    return gt


def mean_check(generator, mu, sigma, nsamples=1000000) -> bool:
    """Whether the sample mean of ``generator(nsamples)`` is within 3 standard errors of
    ``mu`` (``sigma`` the distribution's standard deviation)."""
    samples = np.asarray(generator(nsamples), dtype=np.float64)
    return bool(abs(samples.mean() - mu) < 3 * sigma / np.sqrt(nsamples))


def var_check(generator, sigma, nsamples=1000000) -> bool:
    """Whether the sample variance of ``generator(nsamples)`` is within 3 standard errors of
    ``sigma**2`` (normal-theory error of the variance)."""
    samples = np.asarray(generator(nsamples), dtype=np.float64)
    return bool(abs(samples.var() - sigma ** 2) < 3 * np.sqrt(2 * sigma ** 4 / (nsamples - 1)))


def new_matrix_with_real_eigvals_2d(n: int) -> np.ndarray:
    """A random n x n matrix whose eigenvalues are real and distinct (Q diag(d) Q^-1)."""
    shape = (n, n)
    q = np.random.normal(size=shape)
    while abs(np.linalg.det(q)) < 1e-2:
        q = np.random.normal(size=shape)
    d = np.sort(np.random.uniform(1, 10, size=n)) * np.random.choice([-1, 1], size=n)
    return q @ np.diag(d) @ np.linalg.inv(q)


def new_matrix_with_real_eigvals_nd(shape) -> np.ndarray:
    """A batch of :func:`new_matrix_with_real_eigvals_2d` (shape ``(..., n, n)``)."""
    n = shape[-1]
    batch = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return np.stack([new_matrix_with_real_eigvals_2d(n) for _ in range(batch)]).reshape(shape)


def new_orthonormal_matrix_2d(n: int) -> np.ndarray:
    """A random n x n orthonormal matrix (QR of a Gaussian matrix)."""
    q, _ = np.linalg.qr(np.random.normal(size=(n, n)))
    return q


def new_sym_matrix_with_real_eigvals_2d(n: int) -> np.ndarray:
    """A random symmetric n x n matrix with distinct eigenvalues (Q diag(d) Q^T)."""
    q = new_orthonormal_matrix_2d(n)
    d = np.sort(np.random.uniform(-10, 10, size=n))
    return q @ np.diag(d) @ q.T


def new_sym_matrix_with_real_eigvals_nd(shape) -> np.ndarray:
    """A batch of :func:`new_sym_matrix_with_real_eigvals_2d`."""
    n = shape[-1]
    batch = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    return np.stack([new_sym_matrix_with_real_eigvals_2d(n)
                     for _ in range(batch)]).reshape(shape)


def list_gpus() -> list:
    """GPU indices ember can use (none: ember runs on the CPU)."""
    from ember.context import num_gpus
    return list(range(num_gpus()))


def is_cd_run() -> bool:
    return os.environ.get("CD_JOB", "0") == "1"


def is_aarch64_run() -> bool:
    return platform.machine() == "aarch64"


def has_tvm_ops() -> bool:
    return False


def check_gluon_hybridize_consistency(net_builder, data_l, numpy_func=None, test_grad=True,
                                      rtol=1e-4, atol=1e-4):
    """The block ``net_builder()`` gives the same outputs (and input/parameter gradients)
    eagerly and hybridized, and matches ``numpy_func`` when given."""
    from ember import autograd
    from ember.test_utils import assert_almost_equal
    saved_out, saved_grads, params = None, None, None
    for hybridize in (False, True):
        np.random.seed(0)
        net = net_builder()
        net.initialize()
        net(*data_l)   # finish deferred initialisation
        if params is None:   # the second net (other prefixes) gets the first one's values
            params = [v.data().copy() for v in net.collect_params().values()]
        else:
            for v, value in zip(net.collect_params().values(), params):
                v.set_data(value)
        if hybridize:
            net.hybridize()
        ins = [d.copy() for d in data_l]
        for x in ins:
            x.attach_grad()
        with autograd.record():
            out = net(*ins)
        if numpy_func is not None:
            assert_almost_equal(out.asnumpy(),
                                numpy_func(*[d.asnumpy() for d in data_l]), rtol, atol)
        if test_grad:
            out.backward(_nd.ones(out.shape, dtype=out.dtype))
            grads = [x.grad.asnumpy() for x in ins]
        if saved_out is None:
            saved_out, saved_grads = out.asnumpy(), grads if test_grad else None
        else:
            assert_almost_equal(out.asnumpy(), saved_out, rtol, atol)
            if test_grad:
                for g, s in zip(grads, saved_grads):
                    assert_almost_equal(g, s, rtol, atol)
