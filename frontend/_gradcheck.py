"""Gradient and forward checks of ember.test_utils (MXNet's check_numeric_gradient...)."""
from __future__ import annotations

import inspect

import numpy as np

from ember import autograd
from ember.base import MXNetError
from ember.ndarray.ndarray import NDArray, array
from ember.test_utils import (  # noqa: E402  (test_utils imports this module last)
    _np,
    assert_almost_equal,
    default_context,
    default_numeric_eps,
    get_tolerance,
)

_FLOATS = (np.float16, np.float32, np.float64)
_F64, _DEFAULT_DTYPE = np.dtype(np.float64), np.float32
_RTOLS = {np.dtype(np.float16): 1e-2, np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-5}
_ATOLS = {np.dtype(np.float16): 1e-1, np.dtype(np.float32): 1e-3, np.dtype(np.float64): 1e-20}
_EXACT = {np.dtype(t): 0 for t in (np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32,
                                   np.uint32, np.int64, np.uint64)}


def _callable(sym, who: str):
    from ember.symbol import Symbol
    if isinstance(sym, Symbol):
        return _symbol_callable(sym)
    if hasattr(sym, "list_arguments") or not callable(sym):
        raise MXNetError(f"{who}: pass an ember.sym Symbol or a Python callable taking NDArrays, "
                         f"not {type(sym).__name__}")
    return sym


def _symbol_callable(sym):
    """A Symbol as a function of its arguments (by position or name), run eagerly node by
    node as SymbolBlock does, so autograd records it like any NDArray code."""
    from ember.gluon.symbol_block import evaluate
    from ember.symbol import nodes as _n
    heads, names = sym._value_list(), sym.list_arguments()
    variables: dict[str, list] = {}
    for v in _n.variables(heads)[0]:
        variables.setdefault(_n.node_name(v), []).append(v)

    def fn(*xs, **kw):
        given = {**dict(zip(names, xs)), **kw}
        missing = [n for n in variables if n not in given]
        if missing:
            raise MXNetError(f"no values for the symbol's arguments {missing}")
        return evaluate(heads, {id(v): given[n] for n, vs in variables.items() for v in vs})
    fn.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names])
    return fn


def _bind(fn, location, dtype, ctx):
    """(names, NumPy values, call(list of NDArray) -> list of NDArray outputs)."""
    assert isinstance(location, dict | list | tuple)
    as_np = (lambda v: np.array(_np(v))) if dtype == "asnumpy" else \
        (lambda v: np.array(_np(v), dtype=dtype))
    if isinstance(location, dict):
        names, values = list(location), [as_np(v) for v in location.values()]
    else:
        values = [as_np(v) for v in location]
        try:
            params = [p.name for p in inspect.signature(fn).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        except (TypeError, ValueError):
            params = []
        names = params[:len(values)] if len(params) >= len(values) else \
            [f"arg{i}" for i in range(len(values))]
    by_name = isinstance(location, dict)

    def call(xs):
        out = fn(**dict(zip(names, xs))) if by_name else fn(*xs)
        return list(out) if isinstance(out, list | tuple) else [out]
    return names, values, call


def _nd(values, ctx):
    return [array(v, ctx=ctx, dtype=v.dtype) for v in values]


def _finite_differences(call, values, eps, train, ctx, weight=None, wrt=None) -> list:
    """Central differences of ``sum(output0 * weight)`` w.r.t. every float input (or only
    the inputs whose indices are in ``wrt``; the others get zeros)."""
    def f():
        with autograd.train_mode() if train else autograd.predict_mode():
            out = call(_nd(values, ctx))[0].asnumpy().astype(np.float64)
        return (out if weight is None else out * weight).sum()
    grads = []
    for k, v in enumerate(values):
        g = np.zeros(v.shape, dtype=v.dtype)
        flat, gflat = v.reshape(-1), g.reshape(-1)
        wanted = v.dtype.kind == "f" and (wrt is None or k in wrt)
        for i in range(flat.size if wanted else 0):
            old = flat[i]
            flat[i] = old + eps / 2.0
            plus = f()
            flat[i] = old - eps / 2.0
            gflat[i] = (plus - f()) / eps
            flat[i] = old
        grads.append(g)
    return grads


def numeric_grad(executor, location, aux_states=None, eps=1e-4, use_forward_train=True,
                 dtype=_DEFAULT_DTYPE):
    """Finite-difference gradients of ``sum(executor(*location)[0])`` (list or dict)."""
    fn = _callable(executor, "numeric_grad")
    if aux_states is not None:
        raise MXNetError("numeric_grad: a callable keeps its auxiliary states itself")
    names, values, call = _bind(fn, location, dtype, default_context())
    grads = _finite_differences(call, values, eps, use_forward_train, default_context())
    return dict(zip(names, grads, strict=True)) if isinstance(location, dict) else grads


def _grad_reqs(grad_nodes, names) -> dict:
    if grad_nodes is None:
        reqs = {k: "write" for k in names}
    elif isinstance(grad_nodes, list | tuple):
        reqs = {k: "write" for k in grad_nodes}
    elif isinstance(grad_nodes, dict):
        reqs = dict(grad_nodes)
    elif isinstance(grad_nodes, str):
        reqs = {k: grad_nodes for k in names}
    else:
        raise ValueError(f"invalid grad_nodes/grad_req {grad_nodes!r}")
    unknown = set(reqs) - set(names)
    if unknown:
        raise ValueError(f"unknown arguments {sorted(unknown)}; the arguments are {names}")
    return reqs


def _backward(call, names, values, reqs, ctx, head_grads):
    """Gradient buffers after one recorded forward+backward, as MXNet's executor leaves them."""
    xs = _nd(values, ctx)
    orig = {k: np.random.normal(0, 0.01, size=values[names.index(k)].shape) for k in reqs}
    bufs = {k: array(orig[k] if reqs[k] != "write" else np.zeros_like(orig[k]), ctx=ctx,
                     dtype=xs[names.index(k)].dtype) for k in reqs}
    for k, req in reqs.items():
        if req not in ("write", "add", "null"):
            raise ValueError(f"Invalid grad_req {req} for argument {k}")
        autograd.mark_variables([xs[names.index(k)]], [bufs[k]], req)
    with autograd.record(train_mode=True):
        outs = call(xs)
    if any(r != "null" for r in reqs.values()):
        heads = head_grads(outs)
        autograd.backward(outs if heads is None else outs[:len(heads)], heads)
    return outs, orig, bufs


def _compare_grads(expected, bufs, orig, reqs, rtol, atol, prefix, equal_nan=False):
    for k, want in expected.items():
        got = _np(bufs[k])
        got = got - orig[k] if reqs[k] == "add" else got
        want = orig[k] if reqs[k] == "null" else want
        assert_almost_equal(want, got, rtol, atol, (f"{prefix}_{k}", f"BACKWARD_{k}"),
                            equal_nan=equal_nan)


def check_numeric_gradient(sym, location, aux_states=None, numeric_eps=None, rtol=None,
                           atol=None, grad_nodes=None, use_forward_train=True, ctx=None,
                           grad_stype_dict=None, dtype=_DEFAULT_DTYPE) -> None:
    """Autograd gradients of callable ``sym`` match finite differences at ``location``.

    As MXNet: the first output is weighted by a random projection, so every output element's
    gradient counts; ``grad_nodes`` names the inputs (dict: name -> grad_req) to check.
    """
    fn = _callable(sym, "check_numeric_gradient")
    assert dtype in _FLOATS
    if aux_states is not None:
        raise MXNetError("check_numeric_gradient: a callable keeps its auxiliary states itself")
    ctx = ctx or default_context()
    names, values, call = _bind(fn, location, dtype, ctx)
    reqs = _grad_reqs(grad_nodes, names)
    with autograd.train_mode():
        out0 = call(_nd(values, ctx))[0]
    proj = (np.random.rand(*out0.shape) + 0.1).astype(dtype)
    eps = get_tolerance(out0, numeric_eps, default_numeric_eps())
    if dtype in (np.float16, np.float32):
        assert eps >= 1e-5, "finite differences need eps >= 1e-5 below float64"
    _, orig, bufs = _backward(call, names, values, reqs, ctx,
                              lambda outs: [array(proj, ctx=ctx, dtype=outs[0].dtype)])
    fd = _finite_differences(call, values, eps, use_forward_train, ctx, proj.astype(np.float64),
                             wrt={names.index(k) for k in reqs})
    expected = {k: fd[names.index(k)] for k in reqs}
    _compare_grads(expected, bufs, orig, reqs, rtol, atol, "NUMERICAL")


def check_symbolic_forward(sym, location, expected, rtol=None, atol=None, aux_states=None,
                           ctx=None, equal_nan=False, dtype=_DEFAULT_DTYPE) -> list:
    """The outputs of callable ``sym`` at ``location`` equal ``expected`` (a list)."""
    fn = _callable(sym, "check_symbolic_forward")
    if aux_states is not None or isinstance(expected, dict):
        raise MXNetError("check_symbolic_forward: with a callable, pass expected as a list and "
                         "keep auxiliary states inside the callable")
    ctx = ctx or default_context()
    _, values, call = _bind(fn, location, dtype, ctx)
    with autograd.predict_mode():
        outs = call(_nd(values, ctx))
    for i, (want, got) in enumerate(zip(expected, outs, strict=True)):
        assert_almost_equal(want, got, rtol, atol, (f"EXPECTED_output{i}", f"FORWARD_output{i}"),
                            equal_nan=equal_nan)
    return outs


def check_symbolic_backward(sym, location, out_grads, expected, rtol=None, atol=None,
                            aux_states=None, grad_req="write", ctx=None, grad_stypes=None,
                            equal_nan=False, dtype=_DEFAULT_DTYPE) -> dict:
    """Gradients of callable ``sym`` for head gradients ``out_grads`` equal ``expected``.

    ``expected`` is a list (one per argument) or a dict name -> gradient; returns the
    gradient buffers by name. ``grad_req`` 'add' and 'null' are checked as MXNet does.
    """
    fn = _callable(sym, "check_symbolic_backward")
    if aux_states is not None:
        raise MXNetError("check_symbolic_backward: a callable keeps its auxiliary states itself")
    ctx = ctx or default_context()
    names, values, call = _bind(fn, location, dtype, ctx)
    if isinstance(expected, list | tuple):
        expected = dict(zip(names, expected))
    if isinstance(grad_req, list | tuple):
        grad_req = dict(zip(names, grad_req))
    reqs = _grad_reqs(grad_req, names)
    missing = set(expected) - set(reqs)
    if missing:
        raise ValueError(f"no grad_req for {sorted(missing)}")
    reqs = {k: reqs[k] for k in expected}

    def heads(outs):
        if out_grads is None:
            return None
        grads = list(out_grads.values()) if isinstance(out_grads, dict) else list(out_grads)
        return [g if isinstance(g, NDArray) else
                array(g, ctx=ctx, dtype=o.dtype if dtype != "asnumpy" else np.asarray(g).dtype)
                for g, o in zip(grads, outs)]
    _, orig, bufs = _backward(call, names, values, reqs, ctx, heads)
    _compare_grads({k: _np(v) for k, v in expected.items()}, bufs, orig, reqs, rtol, atol,
                   "EXPECTED", equal_nan)
    return bufs
