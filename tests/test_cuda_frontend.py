"""GPU NDArrays and Gluon on ``mx.gpu()``: device storage, copies, eager ops, autograd,
Trainer, hybridize and ``@ember.compile`` agree with the same code on ``mx.cpu()``.

Runs under numba's CUDA simulator in its own subprocess (tests/cuda_sim.py), tiny shapes;
the ``gpu``-marked tests repeat the checks at real sizes on a CUDA device (``-m gpu``).
"""
import numpy as np
import pytest
from cuda_sim import simulator_module

import ember as mx
from ember import autograd, gluon, nd
from ember.backends import cuda_device
from ember.base import MXNetError

CUDA_SIMULATOR_MODULE = True
test_cuda_simulator_subprocess = simulator_module(__file__)

RNG = np.random.default_rng(0)


def _on_device(x) -> bool:
    return x.context == mx.gpu() and cuda_device.is_device_array(x._data)


def _rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def test_num_gpus_counts_the_opted_in_simulator():
    assert mx.context.num_gpus() == 1 and mx.num_gpus() == 1
    with pytest.raises(MXNetError, match=r"gpu\(1\).*sees 1 GPU"):
        nd.zeros((2,), ctx=mx.gpu(1))


def test_creation_round_trip_and_printing():
    a = _rand(2, 3)
    g = mx.gpu()
    for x in [nd.array(a, ctx=g), nd.zeros((2, 3), ctx=g), nd.ones((2, 3), ctx=g, dtype="int32"),
              nd.full((2, 3), 7, ctx=g), nd.empty((2, 3), ctx=g), nd.arange(6, ctx=g)]:
        assert _on_device(x), x
    np.testing.assert_array_equal(nd.array(a, ctx=g).asnumpy(), a)
    np.testing.assert_array_equal(nd.full((2,), 7, ctx=g).asnumpy(), [7, 7])
    assert nd.ones((2, 3), ctx=g, dtype="int32").dtype == np.int32
    np.testing.assert_array_equal(nd.arange(4, ctx=g).asnumpy(), np.arange(4))
    with g:                                              # the default context makes GPU arrays
        z = nd.zeros((3,))
    assert _on_device(z)
    assert "@gpu(0)" in repr(nd.array(a, ctx=g))
    assert nd.array([2.5], ctx=g).asscalar() == 2.5
    nd.waitall()
    np.testing.assert_array_equal(np.asarray(nd.array(a, ctx=g)), a)


def test_copies_between_host_and_device():
    a = _rand(3, 4)
    x = nd.array(a)
    y = x.as_in_context(mx.gpu())
    assert _on_device(y) and y.as_in_context(mx.gpu()) is y
    z = y.copyto(mx.cpu())
    assert z.context == mx.cpu() and type(z._data) is np.ndarray
    np.testing.assert_array_equal(z.asnumpy(), a)
    w = nd.zeros((3, 4), ctx=mx.gpu())
    x.copyto(w)                                          # host -> existing device array
    np.testing.assert_array_equal(w.asnumpy(), a)
    c = nd.zeros((3, 4))
    w.copyto(c)                                          # device -> existing host array
    np.testing.assert_array_equal(c.asnumpy(), a)
    d = y.copy()
    assert _on_device(d) and d._data is not y._data
    np.testing.assert_array_equal(d.asnumpy(), a)


def test_eager_ops_equal_cpu():
    a, b, v = _rand(3, 4), _rand(4, 5), _rand(4)
    cases = [
        lambda m, n, u: m * 1.5 - 0.25,
        lambda m, n, u: nd.relu(m) + nd.sigmoid(m) - nd.tanh(m) * m,
        lambda m, n, u: nd.dot(m, n),
        lambda m, n, u: m.sum(axis=1),
        lambda m, n, u: nd.softmax(m, axis=-1),
        lambda m, n, u: nd.broadcast_add(m, u.reshape((1, 4))),
        lambda m, n, u: m.T,
        lambda m, n, u: nd.concat(m, m, dim=0),
    ]
    for f in cases:
        want = f(nd.array(a), nd.array(b), nd.array(v))
        got = f(nd.array(a, ctx=mx.gpu()), nd.array(b, ctx=mx.gpu()), nd.array(v, ctx=mx.gpu()))
        assert _on_device(got)
        np.testing.assert_allclose(got.asnumpy(), want.asnumpy(), rtol=1e-5, atol=1e-6)


def test_out_and_in_place_on_device():
    a = _rand(2, 3)
    x = nd.array(a, ctx=mx.gpu())
    out = nd.zeros((2, 3), ctx=mx.gpu())
    buf = out._data
    nd.relu(x, out=out)
    assert out._data is buf
    np.testing.assert_array_equal(out.asnumpy(), np.maximum(a, 0))
    x += 1
    np.testing.assert_allclose(x.asnumpy(), a + 1, rtol=1e-6)
    x[:] = 3
    np.testing.assert_array_equal(x.asnumpy(), np.full((2, 3), 3, np.float32))
    x[0, 1] = 5
    assert x.asnumpy()[0, 1] == 5 and _on_device(x)
    row = x[1]
    assert _on_device(row) and row.shape == (3,)
    np.testing.assert_array_equal(row.asnumpy(), [3, 3, 3])


def test_mixing_contexts_names_both():
    x, y = nd.ones((2,), ctx=mx.gpu()), nd.ones((2,))
    with pytest.raises(MXNetError, match=r"first argument is on gpu\(0\) while the 2-th "
                                         r"argument is on cpu\(0\)"):
        x + y
    with pytest.raises(MXNetError, match=r"cpu\(0\).*gpu\(0\)"):
        nd.dot(y.reshape((1, 2)), x.reshape((2, 1)))
    with mx.gpu():   # a host array stays on the CPU inside `with mx.gpu()`
        with pytest.raises(MXNetError, match="same context"):
            y * x


def _grads(ctx, req="write"):
    rng = np.random.default_rng(3)
    a, w = (rng.standard_normal(s).astype(np.float32) for s in [(3, 4), (4, 2)])
    x, wt = nd.array(a, ctx=ctx), nd.array(w, ctx=ctx)
    x.attach_grad()
    wt.attach_grad(grad_req=req)
    for _ in range(2 if req == "add" else 1):
        with autograd.record():
            y = nd.tanh(nd.dot(x, wt)).sum() + (x * x).mean()
        y.backward()
    return x.grad, wt.grad, y


def test_autograd_on_gpu_equals_cpu():
    for req in ("write", "add"):
        cpu, gpu = _grads(mx.cpu(), req), _grads(mx.gpu(), req)
        for c, g in zip(cpu, gpu):
            assert _on_device(g)
            np.testing.assert_allclose(g.asnumpy(), c.asnumpy(), rtol=1e-5, atol=1e-6)


def _mlp_steps(ctx, hybrid=False, steps=3, batch=4, n_in=5, hidden=8, n_out=3):
    mx.random.seed(0)
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(hidden, activation="relu"), gluon.nn.Dense(n_out))
    net.initialize(mx.init.Xavier(), ctx=ctx)
    if hybrid:
        net.hybridize()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1, "momentum": 0.9})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    rng = np.random.default_rng(1)
    for _ in range(steps):
        x = nd.array(rng.standard_normal((batch, n_in))).as_in_context(ctx)
        y = nd.array(rng.integers(0, n_out, batch)).as_in_context(ctx)
        with autograd.record():
            loss = loss_fn(net(x), y)
        loss.backward()
        trainer.step(batch)
    return net, [p.data() for p in net.collect_params().values()], loss


def _check_mlp(hybrid, rtol=1e-4, atol=1e-5, **sizes):
    _, want, lw = _mlp_steps(mx.cpu(), hybrid, **sizes)
    net, got, lg = _mlp_steps(mx.gpu(), hybrid, **sizes)
    for p in net.collect_params().values():
        assert p.list_ctx() == [mx.gpu()] and _on_device(p.data()) and _on_device(p.grad())
    for g, w in zip(got + [lg], want + [lw]):
        np.testing.assert_allclose(g.asnumpy(), w.asnumpy(), rtol=rtol, atol=atol)
    return net


def test_gluon_mlp_trainer_on_gpu_equals_cpu():
    _check_mlp(hybrid=False)


def test_hybridized_on_gpu_compiles_for_cuda_and_equals_eager():
    net = _check_mlp(hybrid=True)
    backends = {c.backend for c in net._cached.values()}
    assert backends == {"cuda"}, backends
    x = nd.array(_rand(2, 5), ctx=mx.gpu())
    out = net(x)
    assert _on_device(out)
    net.hybridize(False)
    np.testing.assert_allclose(out.asnumpy(), net(x).asnumpy(), rtol=1e-5, atol=1e-6)


def test_compiled_training_step_on_gpu_equals_cpu():
    def run(ctx):
        mx.random.seed(0)
        net = gluon.nn.Dense(3, in_units=4)
        net.initialize(mx.init.Xavier(), ctx=ctx)
        trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.5})
        loss_fn = gluon.loss.L2Loss()

        @mx.compile
        def step(x, y):
            with autograd.record():
                loss = loss_fn(net(x), y)
            loss.backward()
            trainer.step(x.shape[0])
            return loss

        rng = np.random.default_rng(2)
        for _ in range(3):
            x = nd.array(rng.standard_normal((2, 4)), ctx=ctx)
            y = nd.array(rng.standard_normal((2, 3)), ctx=ctx)
            loss = step(x, y)
        return net.weight.data(), loss
    (wc, lc), (wg, lg) = run(mx.cpu()), run(mx.gpu())
    assert _on_device(wg) and _on_device(lg)
    np.testing.assert_allclose(wg.asnumpy(), wc.asnumpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lg.asnumpy(), lc.asnumpy(), rtol=1e-5, atol=1e-6)


def test_split_and_load_and_dataloader_batches():
    a = _rand(4, 3)
    parts = gluon.utils.split_and_load(nd.array(a), [mx.gpu()])
    assert len(parts) == 1 and _on_device(parts[0])
    np.testing.assert_array_equal(parts[0].asnumpy(), a)
    ds = gluon.data.ArrayDataset(a, np.arange(4, dtype=np.float32))
    for xb, yb in gluon.data.DataLoader(ds, batch_size=2):
        xg, yg = xb.as_in_context(mx.gpu()), yb.as_in_context(mx.gpu())
        assert _on_device(xg) and _on_device(yg)
        np.testing.assert_array_equal((xg * 2).asnumpy(), xb.asnumpy() * 2)


# ---- on a real CUDA device (pytest -m gpu; bench/gpu_check.sh) ----------------------------
@pytest.mark.gpu
def test_real_device_ops_autograd_and_training():
    assert mx.context.num_gpus() >= 1 and not cuda_device.is_simulator(), \
        cuda_device.unavailable_reason()
    test_creation_round_trip_and_printing()
    test_copies_between_host_and_device()
    test_eager_ops_equal_cpu()
    test_out_and_in_place_on_device()
    test_mixing_contexts_names_both()
    test_autograd_on_gpu_equals_cpu()
    big = _rand(512, 1024)
    g = nd.array(big, ctx=mx.gpu())
    np.testing.assert_allclose(nd.dot(g, g.T).asnumpy(), big @ big.T, rtol=1e-3, atol=1e-2)


@pytest.mark.gpu
def test_real_device_mlp_training_and_hybridize():
    sizes = dict(batch=128, n_in=784, hidden=256, n_out=10, steps=5)
    _check_mlp(hybrid=False, rtol=2e-3, atol=2e-4, **sizes)
    _check_mlp(hybrid=True, rtol=2e-3, atol=2e-4, **sizes)
    test_compiled_training_step_on_gpu_equals_cpu()


def test_save_load_and_pickle_keep_the_gpu(tmp_path):
    import pickle
    a = _rand(2, 3)
    x = nd.array(a, ctx=mx.gpu())
    nd.save(str(tmp_path / "x.params"), {"x": x})
    y = nd.load(str(tmp_path / "x.params"))["x"]
    assert _on_device(y)
    np.testing.assert_array_equal(y.asnumpy(), a)
    z = pickle.loads(pickle.dumps(x))
    assert _on_device(z)
    np.testing.assert_array_equal(z.asnumpy(), a)


def test_parameter_on_cpu_and_gpu_sums_gradients_over_both():
    net = gluon.nn.Dense(2, in_units=3)
    net.initialize(ctx=[mx.cpu(), mx.gpu()])
    assert _on_device(net.weight.data(mx.gpu())) and net.weight.data(mx.cpu()).context == mx.cpu()
    w0 = net.weight.data(mx.cpu()).asnumpy()
    np.testing.assert_array_equal(net.weight.data(mx.gpu()).asnumpy(), w0)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 1.0})
    a = _rand(2, 3)
    for ctx in (mx.cpu(), mx.gpu()):
        with autograd.record():
            loss = net(nd.array(a, ctx=ctx)).sum()
        loss.backward()
    trainer.step(1)
    want = w0 - 2 * np.tile(a.sum(axis=0), (2, 1))   # each context's gradient, summed
    for ctx in (mx.cpu(), mx.gpu()):
        np.testing.assert_allclose(net.weight.data(ctx).asnumpy(), want, rtol=1e-5, atol=1e-5)


def test_host_round_trip_when_the_cuda_backend_is_missing(monkeypatch):
    from ember.ndarray import device
    monkeypatch.setattr(device, "_PROGRAMS", {})
    monkeypatch.setattr(device, "_NO_BACKEND", ["(test) no cuda backend"])
    a, g = _rand(2, 3), _rand(2, 3)
    y = nd.relu(nd.array(a, ctx=mx.gpu())) * 2
    assert _on_device(y)
    np.testing.assert_allclose(y.asnumpy(), np.maximum(a, 0) * 2, rtol=1e-6)
    results = []
    for ctx in (mx.cpu(), mx.gpu()):   # the momentum state is updated in place on the device
        w, gr, mom = (nd.array(v, ctx=ctx) for v in (a, g, np.ones_like(a)))
        nd.sgd_mom_update(w, gr, mom, lr=0.1, momentum=0.9, out=w)
        results.append((w.asnumpy(), mom.asnumpy()))
    for got, want in zip(results[1], results[0]):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert not np.allclose(results[1][1], 1)


def test_symbol_executor_on_gpu_equals_cpu():
    from ember import sym
    x = sym.var("x")
    net = sym.FullyConnected(sym.Activation(sym.FullyConnected(x, num_hidden=4), "relu"),
                             num_hidden=2)
    rng = np.random.default_rng(4)
    values, results = None, []
    for ctx in (mx.cpu(), mx.gpu()):
        ex = net.simple_bind(ctx, x=(3, 5))
        if values is None:
            values = {k: rng.standard_normal(a.shape).astype(np.float32)
                      for k, a in ex.arg_dict.items()}
        ex.copy_params_from({k: nd.array(v) for k, v in values.items()})
        out = ex.forward(is_train=True)[0]
        ex.backward(nd.ones(out.shape, ctx=ctx))
        assert out.context == ctx and (ctx == mx.cpu() or _on_device(out))
        results.append([out.asnumpy()] + [g.asnumpy() for g in ex.grad_arrays])
    for g, c in zip(results[1], results[0]):
        np.testing.assert_allclose(g, c, rtol=1e-5, atol=1e-6)


def test_module_fit_on_gpu_equals_cpu():
    from ember import sym
    net = sym.SoftmaxOutput(sym.FullyConnected(sym.var("data"), num_hidden=3),
                            sym.var("softmax_label"), name="softmax")
    rng = np.random.default_rng(5)
    X, Y = rng.standard_normal((8, 4)).astype(np.float32), rng.integers(0, 3, 8)
    params = []
    for ctx in (mx.cpu(), mx.gpu()):
        mx.random.seed(0)
        mod = mx.mod.Module(net, context=ctx)
        mod.fit(mx.io.NDArrayIter(X, Y.astype(np.float32), batch_size=4), num_epoch=2,
                optimizer="sgd", optimizer_params={"learning_rate": 0.1},
                initializer=mx.init.Xavier())
        pred = mod.predict(mx.io.NDArrayIter(X, Y.astype(np.float32), batch_size=4))
        assert pred.context == ctx
        params.append({k: v.asnumpy() for k, v in mod.get_params()[0].items()})
    for k in params[0]:
        np.testing.assert_allclose(params[1][k], params[0][k], rtol=1e-5, atol=1e-6)


def test_shape_errors_on_gpu_name_the_op_and_shapes():
    a = nd.ones((2, 3), ctx=mx.gpu())
    with pytest.raises(MXNetError, match=r"dot.*\(2, 3\), \(2, 3\)"):
        nd.dot(a, a)
    with pytest.raises(MXNetError, match=r"add.*\(2, 3\).*\(4, 5\)"):
        a + nd.ones((4, 5), ctx=mx.gpu())
