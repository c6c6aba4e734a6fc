"""backends.cpu_run.profiling: the steps of programs built under it are timed and named."""
import numpy as np

import ember as mx
from ember.backends import cpu_run
from ember.gluon import nn


def _net():
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, 3, padding=1), nn.BatchNorm(), nn.Activation("relu"),
            nn.MaxPool2D(2), nn.Dense(3))
    net.initialize(mx.init.Xavier())
    net.hybridize()
    return net


def _train_step(net, x):
    with mx.autograd.record():
        out = net(x)
    out.backward()
    return out.asnumpy()


def test_profile_times_each_step_of_programs_built_under_it():
    x = mx.nd.array(np.random.default_rng(0).standard_normal((2, 1, 6, 6)).astype(np.float32))
    with cpu_run.profiling() as prof:
        net = _net()
        want = _train_step(net, x)
        prof.clear()
        assert not any(prof.calls.values())
        got = _train_step(net, x)
    np.testing.assert_array_equal(got, want)   # timing changes no result
    assert prof.calls and all(n == 1 for n in prof.calls.values())
    assert all(t >= 0 for t in prof.seconds.values())
    kinds = {k for k, t, n in prof.by_kind()}
    assert any("conv" in k for k in kinds), kinds
    graphs = {g for g, _ in prof.seconds}
    assert any(g.endswith("forward") for g in graphs) and any(g.endswith("backward")
                                                               for g in graphs)
    labels = list(prof.lines.values())
    assert any(lab.startswith("(2, 4, 6, 6) ") for lab in labels), labels
    by_kind = sum(t for _, t, _ in prof.by_kind())
    assert abs(by_kind - sum(prof.seconds.values())) < 1e-9


def test_programs_built_outside_a_profile_are_not_timed():
    x = mx.nd.array(np.ones((2, 1, 6, 6), np.float32))
    net = _net()
    _train_step(net, x)
    with cpu_run.profiling() as prof:
        _train_step(net, x)           # built before: its steps are not wrapped
    assert not prof.seconds
    assert cpu_run._profile is None   # and the profile is uninstalled on leaving
