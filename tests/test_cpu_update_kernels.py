"""The CPU backend's one-pass kernels of sgd_update, sgd_mom_update and adam_update (in
compiled graphs, ``backends/cpu_optim``) equal the NumPy reference bit for bit: new weight and
in-place states, float32 and float64, every branch, NaN and Inf among the values, the
learning rate as an attribute or as the hyper input."""
import numpy as np
import pytest

from ember.backends import cpu, reference
from ember.ir.graph import GraphBuilder
from ember.ir.types import TensorType

# (the reference warns on the NaN and Inf it is given; the values are what is compared)
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

_CASES = [("sgd_update", 0, dict(lr=0.1, wd=0.1, rescale_grad=0.5)),
          ("sgd_update", 0, dict(lr=0.1, clip_gradient=0.2)),
          ("sgd_update", 0, dict(lr=0.1)),
          ("sgd_mom_update", 1, dict(lr=0.1, momentum=0.9, wd=0.01, rescale_grad=0.25)),
          ("sgd_mom_update", 1, dict(lr=0.3, momentum=0.9, clip_gradient=0.3)),
          ("adam_update", 2, dict(lr=0.01, wd=0.01, rescale_grad=0.5)),
          ("adam_update", 2, dict(lr=0.01, clip_gradient=0.1, beta1=0.8, epsilon=1e-6))]


def _values(shape, seed, dtype, special):
    a = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    if special:
        a.reshape(-1)[:3] = [np.nan, np.inf, -np.inf]
    return a


@pytest.mark.parametrize("fed", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op,n_states,attrs", _CASES)
def test_update_kernels_equal_the_reference_bitwise(op, n_states, attrs, dtype, fed):
    b = GraphBuilder("upd")
    t = TensorType((6, 5), dtype)
    w, g = b.param(t, "w"), b.input(t, "g")
    states = [b.param(t, f"s{k}") for k in range(n_states)]
    extra, at = [], dict(attrs)
    if fed:
        extra = [b.param(TensorType((1,), "float64"), "hyper")]
        at.update(lr=0.0, hyper=("lr",))
    (new,) = b.emit(op, [w, g, *states, *extra], **at)
    graph = b.build([new])
    fn = cpu.compile(graph)
    for special in (False, True):
        params = [_values((6, 5), 0, dtype, special)] + \
            [np.abs(_values((6, 5), k + 1, dtype, special)) for k in range(n_states)] + \
            ([np.array([attrs["lr"]])] if fed else [])
        grad = _values((6, 5), 9, dtype, special)
        mine = [p.copy() for p in params]
        theirs = [p.copy() for p in params]
        (got,) = fn([grad.copy()], mine)
        (want,) = reference.run_graph(graph, [grad.copy()], theirs)
        np.testing.assert_array_equal(got, want)
        for m, r in zip(mine, theirs):
            np.testing.assert_array_equal(m, r)
    assert fn.report[f"update:{op}"] == 1 and not any(k.startswith("fallback") for k in
                                                      fn.report)


def test_non_contiguous_state_takes_the_reference_and_still_updates_in_place():
    b = GraphBuilder("upd")
    t = TensorType((4, 3), "float32")
    w, g, m = b.param(t, "w"), b.input(t, "g"), b.param(t, "m")
    (new,) = b.emit("sgd_mom_update", [w, g, m], lr=0.1, momentum=0.9)
    graph = b.build([new])
    mom_t = np.ones((3, 4), np.float32)
    mom = mom_t.T  # a transposed view: the kernel cannot take it
    (got,) = cpu.compile(graph)([np.ones((4, 3), np.float32)], [np.zeros((4, 3), np.float32),
                                                                 mom])
    np.testing.assert_allclose(mom_t, np.full((3, 4), 0.9 - 0.1, np.float32))
    np.testing.assert_allclose(got, np.full((4, 3), 0.8, np.float32))
