"""Helpers of the CUDA backend's simulator tests: run a graph on the cuda backend and
compare it (outputs and in-place parameter updates) with the reference backend."""
import numpy as np

from ember.backends import reference

F32 = "float32"


def rand(shape, seed=0, dtype=F32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def run_cuda(graph, inputs, params=()):
    """(outputs, params after the run) of the cuda backend, as host arrays, and the report."""
    from ember.backends import cuda
    from ember.backends import cuda_device as cd
    fn = cuda.compile(graph)
    dev_params = [cd.to_device(p) for p in params]
    outs = fn([cd.to_device(a) for a in inputs], dev_params)
    return [cd.to_host(o) for o in outs], [cd.to_host(p) for p in dev_params], fn.report


def check(graph, inputs, params=(), expect_kinds=(), rtol=1e-4, atol=1e-5):
    """cuda == reference (outputs and in-place parameter updates); returns the report."""
    got, got_params, report = run_cuda(graph, inputs, params)
    ref_params = [p.copy() for p in params]
    want = reference.run_graph(graph, [a.copy() for a in inputs], ref_params)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    for g, w in zip(got_params, ref_params):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    for k in expect_kinds:
        assert any(key.startswith(k) for key in report), report
    return report


def no_fallback(report):
    assert not any(k.startswith("fallback") for k in report), report
