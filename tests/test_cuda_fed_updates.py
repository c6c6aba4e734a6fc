"""CUDA update kernels that read the learning rate from the op's ``hyper`` input (how a
compiled training step feeds each step's rate) against the reference, under the simulator.

The kernels derive ``lr * rescale``, ``1 - lr * wd`` and ``lr * wd`` from the float64 input
in their prologue, so the same compiled kernel gives each new rate's result.
"""
import numpy as np
import pytest
from cuda_check import check
from cuda_check import no_fallback as _no_fallback
from cuda_check import rand as _rand
from cuda_sim import simulator_module

from ember.backends import reference
from ember.ir.graph import GraphBuilder
from ember.ir.types import TensorType

CUDA_SIMULATOR_MODULE = True
test_cuda_simulator_subprocess = simulator_module(__file__)

_OPS = [("sgd_update", 0, dict(wd=0.1, rescale_grad=0.5)),
        ("sgd_update", 0, dict(clip_gradient=0.2)),
        ("sgd_mom_update", 1, dict(momentum=0.9, wd=0.01, rescale_grad=0.25)),
        ("sgd_mom_update", 1, dict(momentum=0.9, clip_gradient=0.3)),
        ("nag_mom_update", 1, dict(momentum=0.9, wd=0.01, clip_gradient=0.3)),
        ("rmsprop_update", 1, dict(wd=0.1, clip_weights=0.5)),
        ("adam_update", 2, dict(wd=0.01, rescale_grad=0.5))]


def _graph(op, n_states, attrs, dtype):
    b = GraphBuilder("fed")
    t = TensorType((7, 3), dtype)
    w, g = b.param(t, "w"), b.input(t, "g")
    states = [b.param(t, f"s{k}") for k in range(n_states)]
    hy = b.param(TensorType((1,), "float64"), "hyper")
    (new,) = b.emit(op, [w, g, *states, hy], lr=0.0, hyper=("lr",), **attrs)
    return b.build([new])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op,n_states,attrs", _OPS)
def test_fed_learning_rate_matches_the_reference(op, n_states, attrs, dtype):
    graph = _graph(op, n_states, attrs, dtype)
    for lr in (0.1, 0.0375):
        params = [_rand((7, 3), 0, dtype)] + \
            [np.abs(_rand((7, 3), k + 1, dtype)) * 0.1 for k in range(n_states)] + \
            [np.array([lr])]
        report = check(graph, [_rand((7, 3), 9, dtype)], params,
                       expect_kinds=(f"update:{op}",), rtol=1e-6, atol=1e-7)
        _no_fallback(report)


def test_one_compiled_kernel_follows_a_changing_rate():
    """The same compiled function, run with a new value in the hyper array, equals the
    attribute form at that rate (nothing is baked at compile time)."""
    from ember.backends import cuda
    from ember.backends import cuda_device as cd
    graph = _graph("sgd_mom_update", 1, dict(momentum=0.9, wd=0.01), "float32")
    fn = cuda.compile(graph)
    w, mom, g = _rand((7, 3)), np.abs(_rand((7, 3), 1)) * 0.1, _rand((7, 3), 2)
    for lr in (0.1, 0.05, 0.0):
        params = [cd.to_device(w), cd.to_device(mom), cd.to_device(np.array([lr]))]
        (got,) = fn([cd.to_device(g)], params)
        b = GraphBuilder("attr")
        t = TensorType((7, 3), "float32")
        pw, pg, pm = b.param(t, "w"), b.input(t, "g"), b.param(t, "m")
        (new,) = b.emit("sgd_mom_update", [pw, pg, pm], lr=lr, momentum=0.9, wd=0.01)
        (want,) = reference.run_graph(b.build([new]), [g.copy()], [w.copy(), mom.copy()])
        np.testing.assert_array_equal(cd.to_host(got), want)


@pytest.mark.parametrize("opt,kw", [("adam", {}), ("sgd", {"momentum": 0.9, "wd": 0.01})])
def test_compiled_step_on_gpu_follows_a_schedule_with_one_trace(opt, kw):
    """A compiled training step on mx.gpu() under a per-step schedule: one trace, the
    rate refilled on the device each step, the same weights as on the CPU."""
    import ember as mx
    from ember import autograd, gluon, nd
    from ember.gluon.cached_op import STATS

    def run(ctx):
        mx.random.seed(0)
        net = gluon.nn.Dense(3, in_units=4)
        net.initialize(mx.init.Xavier(), ctx=ctx)
        sched = mx.lr_scheduler.CosineScheduler(max_update=5, base_lr=0.5, final_lr=0.01)
        trainer = gluon.Trainer(net.collect_params(), opt, dict(kw, lr_scheduler=sched))
        loss_fn = gluon.loss.L2Loss()

        @mx.compile
        def step(x, y):
            with autograd.record():
                loss = loss_fn(net(x), y)
            loss.backward()
            trainer.step(x.shape[0])
            return loss

        rng, traces = np.random.default_rng(2), STATS["trace"]
        for _ in range(5):
            step(nd.array(rng.standard_normal((2, 4)), ctx=ctx),
                 nd.array(rng.standard_normal((2, 3)), ctx=ctx))
        assert STATS["trace"] - traces == 1
        return net.weight.data().asnumpy(), net.bias.data().asnumpy()
    for c, g in zip(run(mx.cpu()), run(mx.gpu())):
        np.testing.assert_allclose(g, c, rtol=1e-5, atol=1e-6)
