"""Helpers that check one optimizer against another (MXNet's ``test_utils.compare_optimizer``).

MXNet's optimizer tests write a plain Python reference optimizer and compare it with the
built-in one: both start from the same weight, gradient and state, take one
``update_multi_precision`` step, and must agree on the new weight and states.
``ember.test_utils`` re-exports these two functions under MXNet's names.
"""
from __future__ import annotations

import copy

from ember import random as _random
from ember.base import MXNetError
from ember.context import current_context

__all__ = ["compare_ndarray_tuple", "compare_optimizer"]


def compare_ndarray_tuple(t1, t2, rtol: float | None = None, atol: float | None = None) -> None:
    """Assert two optimizer states are almost equal: NDArrays, or (nested) tuples of them;
    nothing is checked when either is None."""
    from ember.test_utils import assert_almost_equal

    if t1 is None or t2 is None:
        return
    if isinstance(t1, tuple):
        for s1, s2 in zip(t1, t2):
            compare_ndarray_tuple(s1, s2, rtol, atol)
    else:
        assert_almost_equal(t1, t2, rtol=rtol, atol=atol)


def _uniform(shape, dtype):
    return _random.uniform(shape=shape, ctx=current_context(), dtype=dtype)


def compare_optimizer(opt1, opt2, shape, dtype, w_stype: str = "default",
                      g_stype: str = "default", rtol: float = 1e-4, atol: float = 1e-5,
                      compare_states: bool = True, ntensors: int = 1) -> None:
    """One update of ``opt1`` and ``opt2`` from the same random weight and gradient; assert
    the states and new weights agree. A list of shapes tests a multi-tensor ``opt2``
    (one call updating ``ntensors`` weights) against a single-tensor ``opt1``.

    ember stores arrays densely: ``w_stype``/``g_stype`` other than 'default' raise
    MXNetError (MXNet would use row_sparse or csr arrays there)."""
    from ember.test_utils import assert_almost_equal

    for stype in (w_stype, g_stype):
        if stype != "default":
            raise MXNetError(f"storage type {stype!r} is not supported; ember is dense only")
    if not isinstance(shape, list):
        if ntensors != 1:
            raise MXNetError("compare_optimizer: ntensors > 1 needs a list of shapes")
        w2 = _uniform(shape, dtype)
        w1 = w2.copyto(current_context())
        g2 = _uniform(shape, dtype)
        g1 = g2.copyto(current_context())
        state1 = opt1.create_state_multi_precision(0, w1)
        state2 = opt2.create_state_multi_precision(0, w2)
        if compare_states:
            compare_ndarray_tuple(state1, state2)
        opt1.update_multi_precision(0, w1, g1, state1)
        opt2.update_multi_precision(0, w2, g2, state2)
        if compare_states:
            compare_ndarray_tuple(state1, state2, rtol=rtol, atol=atol)
        assert_almost_equal(w1, w2, rtol=rtol, atol=atol)
        return
    w1 = tuple(_uniform(s, dtype) for s in shape)
    g1 = tuple(_uniform(s, dtype) for s in shape)
    w2, g2 = copy.deepcopy(w1), copy.deepcopy(g1)
    state2 = [opt2.create_state_multi_precision(0, w2[i]) for i in range(ntensors)]
    opt2.update_multi_precision(list(range(ntensors)), w2, g2, state2)
    for i in range(ntensors):
        state1 = opt1.create_state_multi_precision(i, w1[i])
        opt1.update_multi_precision(i, w1[i], g1[i], state1)
        if compare_states:
            compare_ndarray_tuple(state1, state2[i], rtol, atol)
        compare_ndarray_tuple(w1[i], w2[i], rtol, atol)
