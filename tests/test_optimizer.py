"""Update ops against NumPy references of MXNet's formulas; optimizers against NumPy loops."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import ember as mx
import ember.optimizer as opt
from ember.ir import get_op

RNG = np.random.default_rng(0)
SHAPE = (3, 4)
KW = {"rescale_grad": 0.5, "wd": 0.01, "lr": 0.1}


def arrays(n, positive=()):
    out = [RNG.standard_normal(SHAPE).astype(np.float32) for _ in range(n)]
    for i in positive:
        out[i] = np.abs(out[i]) + 0.1
    return out


def rg(g, rescale, clip):
    g = g * rescale
    return np.clip(g, -clip, clip) if clip >= 0 else g


def call(name, ins, **kw):
    """Run nd.<name>(..., out=weight); returns (weight after, states after)."""
    nds = [mx.nd.array(a) for a in ins]
    getattr(mx.nd, name)(*nds, out=nds[0], **kw)
    return [x.asnumpy() for x in nds]


# ---- update ops ----------------------------------------------------------------------------
@pytest.mark.parametrize("clip", [-1.0, 0.3])
def test_sgd_family(clip):
    w, g, m = arrays(3)
    lr, wd, r = KW["lr"], KW["wd"], KW["rescale_grad"]
    out = call("sgd_update", [w, g], clip_gradient=clip, **KW)
    np.testing.assert_allclose(out[0], (1 - lr * wd) * w - lr * rg(g, r, clip), rtol=1e-5)
    out = call("sgd_mom_update", [w, g, m], momentum=0.9, clip_gradient=clip, **KW)
    mom = 0.9 * m - lr * wd * w - lr * rg(g, r, clip)
    np.testing.assert_allclose(out[2], mom, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[0], w + mom, rtol=1e-5, atol=1e-6)
    out = call("nag_mom_update", [w, g, m], momentum=0.9, clip_gradient=clip, **KW)
    step = lr * (rg(g, r, clip) + wd * w)
    np.testing.assert_allclose(out[0], w - 0.9 * m + 1.9 * (0.9 * m - step), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(out[2], 0.9 * m - step, rtol=1e-5, atol=1e-6)


def test_adaptive_ops():
    w, g, a, b, c = arrays(5, positive=(3,))
    lr, wd, r = KW["lr"], KW["wd"], KW["rescale_grad"]
    gw = r * g + wd * w
    out = call("adam_update", [w, g, a, b], beta1=0.8, beta2=0.9, epsilon=1e-3, **KW)
    mean, var = 0.8 * a + 0.2 * gw, 0.9 * b + 0.1 * gw * gw
    np.testing.assert_allclose(out[2:], [mean, var], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[0], w - lr * mean / (np.sqrt(var) + 1e-3), rtol=1e-5)
    n = np.abs(a)
    out = call("rmsprop_update", [w, g, n], gamma1=0.9, clip_weights=0.5, **KW)
    n2 = 0.9 * n + 0.1 * gw * gw
    np.testing.assert_allclose(out[2], n2, rtol=1e-5)
    np.testing.assert_allclose(out[0], np.clip(w - lr * gw / np.sqrt(n2 + 1e-8), -.5, .5),
                               rtol=1e-5)
    n, gs, d = np.abs(a) + 1, b * 0.1, c
    out = call("rmspropalex_update", [w, g, n, gs, d], gamma1=0.9, gamma2=0.8, **KW)
    n2, g2 = 0.9 * n + 0.1 * gw * gw, 0.9 * gs + 0.1 * gw
    d2 = 0.8 * d - lr * gw / np.sqrt(n2 - g2 * g2 + 1e-8)
    np.testing.assert_allclose(out[2:], [n2, g2, d2], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out[0], w + d2, rtol=1e-4, atol=1e-6)


def test_ftrl_ftml_sign_ops():
    w, g, z, n, d = arrays(5, positive=(3,))
    lr, wd, r = KW["lr"], KW["wd"], KW["rescale_grad"]
    out = call("ftrl_update", [w, g, z, n], lamda1=0.05, beta=1.5, **KW)
    gr = r * g
    z2 = z + gr - (np.sqrt(n + gr * gr) - np.sqrt(n)) * w / lr
    n2 = n + gr * gr
    w2 = (np.sign(z2) * 0.05 - z2) / ((1.5 + np.sqrt(n2)) / lr + wd) * (np.abs(z2) > 0.05)
    np.testing.assert_allclose(out[0], w2, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out[2:], [z2, n2], rtol=1e-5, atol=1e-6)
    v = np.abs(n)
    out = call("ftml_update", [w, g, d, v, z], t=3, beta1=0.6, beta2=0.9, clip_grad=0.2, **KW)
    gi = np.clip(r * g + wd * w, -0.2, 0.2)
    v2 = 0.9 * v + 0.1 * gi * gi
    dt = (1 - 0.6 ** 3) / lr * (np.sqrt(v2 / (1 - 0.9 ** 3)) + 1e-8)
    z2 = 0.6 * z + 0.4 * gi - (dt - 0.6 * d) * w
    np.testing.assert_allclose(out[2:], [dt, v2, z2], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[0], -z2 / dt, rtol=1e-4, atol=1e-5)
    out = call("signsgd_update", [w, g], **KW)
    np.testing.assert_allclose(out[0], (1 - lr * wd) * w - lr * np.sign(g), rtol=1e-6)
    out = call("signum_update", [w, g, z], momentum=0.7, wd_lh=0.2, **KW)
    mom = 0.7 * z - 0.3 * wd * w - 0.3 * r * g
    np.testing.assert_allclose(out[2], mom, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[0], (1 - lr * 0.2) * w + lr * np.sign(mom), rtol=1e-5)


def test_lamb_and_adamw_ops():
    w, g, m, v = arrays(4, positive=(3,))
    r, wd = KW["rescale_grad"], KW["wd"]
    out = mx.nd.lamb_update_phase1(*[mx.nd.array(a) for a in (w, g, m, v)], t=2, wd=wd,
                                   rescale_grad=r).asnumpy()
    m2, v2 = 0.9 * m + 0.1 * r * g, 0.999 * v + 0.001 * (r * g) ** 2
    gl = (m2 / (1 - 0.9 ** 2)) / (np.sqrt(v2 / (1 - 0.999 ** 2)) + 1e-6) + wd * w
    np.testing.assert_allclose(out, gl, rtol=1e-4, atol=1e-6)
    r1, r2 = mx.nd.array([2.0]), mx.nd.array([4.0])
    res = mx.nd.lamb_update_phase2(mx.nd.array(w), mx.nd.array(gl), r1, r2, lr=0.1,
                                   upper_bound=1.0)
    np.testing.assert_allclose(res.asnumpy(), w - 0.1 * (1.0 / 4.0) * gl, rtol=1e-5)
    nds = [mx.nd.array(a) for a in (w, g, m, v)]
    mx.nd.adamw_update(*nds, mx.nd.array([r]), lr=0.5, eta=0.1, wd=wd, out=nds[0])
    m2, v2 = 0.9 * m + 0.1 * r * g, 0.999 * v + 0.001 * (r * g) ** 2
    expect = w - 0.1 * (0.5 * m2 / (np.sqrt(v2) + 1e-8) + wd * w)
    np.testing.assert_allclose(nds[0].asnumpy(), expect, rtol=1e-5, atol=1e-6)
    before = nds[0].asnumpy()
    mx.nd.adamw_update(*nds, mx.nd.array([np.inf]), lr=0.5, eta=0.1, out=nds[0])
    np.testing.assert_array_equal(nds[0].asnumpy(), before)  # skipped: scale not finite


MUTATIONS = [("signsgd_update", 2, [0], {"clip_gradient": 1e-3}),
             ("signum_update", 3, [0, 2], {"momentum": 1e-3, "wd_lh": 1e-3}),
             ("sgd_update", 2, [0], {"clip_gradient": 1e-3}),
             ("sgd_mom_update", 3, [0, 2], {"momentum": 0.01}),
             ("nag_mom_update", 3, [0, 2], {"momentum": 0.01}),
             ("ftml_update", 5, [0, 2, 3, 4], {"t": 3, "clip_grad": 1e-3}),
             ("ftrl_update", 4, [0, 2, 3], {}), ("adam_update", 4, [0, 2, 3], {}),
             ("rmspropalex_update", 5, [0, 2, 3, 4], {}), ("rmsprop_update", 3, [0, 2], {})]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # rmspropalex may take sqrt(<0)
@pytest.mark.parametrize("name,n,mutated,kw", MUTATIONS)
def test_update_ops_mutation(name, n, mutated, kw):
    """MXNet's test_update_ops_mutation: exactly the weight and the states change."""
    pre = [np.abs(a) + 0.5 for a in arrays(n)]
    post = call(name, pre, rescale_grad=0.1, lr=0.01, wd=1e-3, **kw)
    for i, (a, b) in enumerate(zip(pre, post)):
        assert (not np.array_equal(a, b)) == (i in mutated), (name, i)
    assert get_op(name).mutates == tuple(i for i in mutated if i)
    assert get_op(name).grad is None


def test_multi_sgd_ops_match_single():
    ws, gs, ms = arrays(2), arrays(2), arrays(2)
    kw = {"rescale_grad": 0.5, "clip_gradient": 0.4, "momentum": 0.9}
    nds = [mx.nd.array(a) for trio in zip(ws, gs, ms) for a in trio]
    mx.nd.multi_sgd_mom_update(*nds, out=[nds[0], nds[3]], lrs=(0.1, 0.2), wds=(0.0, 0.01),
                               num_weights=2, **kw)
    for k, (lr, wd) in enumerate([(0.1, 0.0), (0.2, 0.01)]):
        single = call("sgd_mom_update", [ws[k], gs[k], ms[k]], lr=lr, wd=wd, **kw)
        np.testing.assert_allclose(nds[3 * k].asnumpy(), single[0], rtol=1e-6)
        np.testing.assert_allclose(nds[3 * k + 2].asnumpy(), single[2], rtol=1e-6)
    assert get_op("multi_sgd_mom_update").mutates({"num_weights": 2}) == (2, 5)
    with pytest.raises(mx.MXNetError):
        mx.nd.multi_sgd_update(*nds[:2], lrs=(0.1, 0.2), wds=(0.0,), num_weights=2)


def test_mp_sgd_ops_keep_float32_master():
    w32, g, m = arrays(3)
    w16 = w32.astype(np.float16)
    nds = [mx.nd.array(w16, dtype="float16"), mx.nd.array(g.astype(np.float16),
                                                          dtype="float16"),
           mx.nd.array(m), mx.nd.array(w32)]
    mx.nd.mp_sgd_mom_update(*nds, out=nds[0], lr=0.1, momentum=0.9)
    mom = 0.9 * m - 0.1 * g.astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(nds[3].asnumpy(), w32 + mom, rtol=1e-6, atol=1e-7)
    assert nds[0].dtype == np.float16 and nds[3].dtype == np.float32
    np.testing.assert_array_equal(nds[0].asnumpy(), (w32 + mom).astype(np.float16))


# ---- optimizers against NumPy loops ----------------------------------------------------------
def run_opt(o, steps=3, w0=None, grads=None):
    w0 = arrays(1)[0] if w0 is None else w0
    grads = grads or [arrays(1)[0] for _ in range(steps)]
    w = mx.nd.array(w0)
    upd = opt.get_updater(o)
    for g in grads:
        upd(0, mx.nd.array(g), w)
    return w0, grads, w.asnumpy(), upd


def np_adam(w, grads, lr, b1, b2, eps, wd, r):
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, 1):
        gg = r * g + wd * w
        m, v = b1 * m + (1 - b1) * gg, b2 * v + (1 - b2) * gg * gg
        w = w - lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + eps)
    return w


def test_sgd_nag_adam_optimizers():
    w0, gs, w, _ = run_opt(opt.SGD(learning_rate=0.1, momentum=0.9, wd=0.01,
                                   rescale_grad=0.5, clip_gradient=0.2))
    ref, mom = w0.copy(), np.zeros_like(w0)
    for g in gs:
        mom = 0.9 * mom - 0.1 * (np.clip(0.5 * g, -0.2, 0.2) + 0.01 * ref)
        ref = ref + mom
    np.testing.assert_allclose(w, ref, rtol=1e-5, atol=1e-6)
    w0, gs, w, _ = run_opt(opt.NAG(learning_rate=0.1, momentum=0.9))
    ref, mom = w0.copy(), np.zeros_like(w0)
    for g in gs:
        mom = 0.9 * mom
        ref = ref - mom + 1.9 * (mom - 0.1 * g)
        mom = mom - 0.1 * g
    np.testing.assert_allclose(w, ref, rtol=1e-5, atol=1e-6)
    w0, gs, w, _ = run_opt(opt.create("adam", learning_rate=0.01, wd=0.1))
    np.testing.assert_allclose(w, np_adam(w0, gs, 0.01, 0.9, 0.999, 1e-8, 0.1, 1.0),
                               rtol=1e-4, atol=1e-6)


def test_adamw_is_decoupled():
    w0, gs, w, _ = run_opt(opt.AdamW(learning_rate=0.01, wd=0.1))
    ref, m, v = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    for t, g in enumerate(gs, 1):
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        c = np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        ref = ref - 0.01 * (c * m / (np.sqrt(v) + 1e-8) + 0.1 * ref)
    np.testing.assert_allclose(w, ref, rtol=1e-4, atol=1e-6)


def test_rmsprop_adagrad_adadelta_adamax_nadam():
    w0, gs, w, _ = run_opt(opt.RMSProp(learning_rate=0.01, gamma1=0.9))
    ref, n = w0.copy(), np.zeros_like(w0)
    for g in gs:
        n = 0.9 * n + 0.1 * g * g
        ref = ref - 0.01 * g / np.sqrt(n + 1e-8)
    np.testing.assert_allclose(w, ref, rtol=1e-4, atol=1e-6)
    w0, gs, w, _ = run_opt(opt.AdaGrad(learning_rate=0.1, wd=0.01))
    ref, h = w0.copy(), np.zeros_like(w0)
    for g in gs:
        h = h + g * g
        ref = ref - 0.1 * (g / np.sqrt(h + 1e-7) + 0.01 * ref)
    np.testing.assert_allclose(w, ref, rtol=1e-4, atol=1e-6)
    w0, gs, w, _ = run_opt(opt.AdaDelta(rho=0.9))
    ref, ag, ad = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    for g in gs:
        ag = 0.9 * ag + 0.1 * g * g
        d = np.sqrt(ad + 1e-5) / np.sqrt(ag + 1e-5) * g
        ad = 0.9 * ad + 0.1 * d * d
        ref = ref - d
    np.testing.assert_allclose(w, ref, rtol=1e-4, atol=1e-6)
    w0, gs, w, _ = run_opt(opt.Adamax(learning_rate=0.01))
    ref, m, u = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    for t, g in enumerate(gs, 1):
        m, u = 0.9 * m + 0.1 * g, np.maximum(0.999 * u, np.abs(g))
        ref = ref - 0.01 / (1 - 0.9 ** t) * m / u
    np.testing.assert_allclose(w, ref, rtol=1e-4, atol=1e-6)
    w0, gs, w, _ = run_opt(opt.Nadam(learning_rate=0.01))
    ref, m, v, sched = w0.copy(), np.zeros_like(w0), np.zeros_like(w0), 1.0
    for t, g in enumerate(gs, 1):
        mt = 0.9 * (1 - 0.5 * 0.96 ** (t * 0.004))
        mt1 = 0.9 * (1 - 0.5 * 0.96 ** ((t + 1) * 0.004))
        sched *= mt
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        mbar = (1 - mt) * g / (1 - sched) + mt1 * m / (1 - sched * mt1)
        ref = ref - 0.01 * mbar / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    np.testing.assert_allclose(w, ref, rtol=1e-4, atol=1e-6)


def test_ftrl_ftml_signum_lamb_dcasgd_test_sgld_run():
    for o in (opt.Ftrl(), opt.FTML(), opt.Signum(), opt.LAMB(), opt.DCASGD(momentum=0.9),
              opt.SGLD(), opt.RMSProp(centered=True), opt.create("signum", momentum=0.0)):
        w0, _, w, upd = run_opt(o)
        assert np.all(np.isfinite(w)) and not np.allclose(w, w0), type(o).__name__
        assert o.num_update == 3
    w0, gs, w, upd = run_opt(opt.Test(rescale_grad=2.0))
    np.testing.assert_allclose(w, w0 + 2.0 * sum(gs), rtol=1e-5)
    np.testing.assert_array_equal(upd.states[0].asnumpy(), w)


def test_multi_precision_float16():
    w0 = arrays(1)[0].astype(np.float16)
    gs = [a.astype(np.float16) for a in arrays(3)]
    o = opt.SGD(learning_rate=0.01, momentum=0.9, multi_precision=True)
    w = mx.nd.array(w0, dtype="float16")
    upd = opt.get_updater(o)
    for g in gs:
        upd(0, mx.nd.array(g, dtype="float16"), w)
    mom, master = upd.states[0]
    assert master.dtype == np.float32 and mom.dtype == np.float32 and w.dtype == np.float16
    ref, m = w0.astype(np.float32), np.zeros(w0.shape, np.float32)
    for g in gs:
        m = 0.9 * m - 0.01 * g.astype(np.float32)
        ref = ref + m
    np.testing.assert_allclose(master.asnumpy(), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(w.asnumpy(), master.asnumpy().astype(np.float16))
    for o in (opt.Adam(multi_precision=True), opt.NAG(momentum=0.9, multi_precision=True),
              opt.AdamW(multi_precision=True), opt.LAMB(multi_precision=True)):
        w = mx.nd.array(w0, dtype="float16")
        upd = opt.get_updater(o)
        upd(0, mx.nd.array(gs[0], dtype="float16"), w)
        assert w.dtype == np.float16 and not np.array_equal(w.asnumpy(), w0)


def test_lr_wd_mult_and_counts():
    o = opt.SGD(learning_rate=0.5, wd=0.1, param_idx2name={0: "fc_weight", 1: "fc_bias"})
    assert o._get_wd(0) == pytest.approx(0.1) and o._get_wd(1) == 0.0
    o.set_lr_mult({0: 0.1})
    assert o._get_lr(0) == pytest.approx(0.05) and o._get_lr(1) == 0.5

    class P:
        lr_mult, wd_mult = 2.0, 3.0
    o.param_dict = {1: P()}
    assert o._get_lr(1) == 1.0 and o._get_wd(1) == pytest.approx(0.3)
    o._update_count([0, 1])
    o._update_count(0)
    assert o.num_update == 2 and o._index_update_count == {0: 2, 1: 1}
    from ember.lr_scheduler import FactorScheduler
    s = opt.create("sgd", lr_scheduler=FactorScheduler(step=1, factor=0.5, base_lr=1.0))
    with pytest.raises(UserWarning):
        s.set_learning_rate(0.1)
    with pytest.raises(ValueError):
        opt.create("no_such_optimizer")
    assert type(opt.Optimizer.create_optimizer("SGD", momentum=0.5)) is opt.SGD


def test_register_and_updater_states_roundtrip():
    @opt.register
    class MyOpt(opt.Optimizer):
        def update(self, index, weight, grad, state):
            weight[:] -= grad

    assert isinstance(opt.create("myopt"), MyOpt)
    _, _, w, upd = run_opt(opt.SGD(learning_rate=0.1, momentum=0.9))
    blob = upd.get_states(dump_optimizer=True)
    upd2 = opt.get_updater(opt.SGD())
    upd2.set_states(blob)
    assert upd2.optimizer.momentum == 0.9 and upd2.optimizer.num_update == 3
    np.testing.assert_array_equal(upd2.states[0].asnumpy(), upd.states[0].asnumpy())
    assert upd2.states_synced == {0: False}
    assert "param_dict" not in pickle.loads(blob)[1].__getstate__()


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("clip", [None, 0.2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_in_place_kernels_equal_the_update_ops(momentum, clip, dtype):
    """SGD's in-place numba path (cpu_optim) gives the update ops' results bit for bit."""
    w0, g = (RNG.standard_normal((5, 7)).astype(dtype) for _ in range(2))
    kw = {"lr": 0.1, "wd": 0.01, "rescale_grad": 0.5}
    if clip is not None:
        kw["clip_gradient"] = clip
    sgd = opt.SGD(learning_rate=0.1, momentum=momentum, wd=0.01, rescale_grad=0.5,
                  clip_gradient=clip)
    w, grad = mx.nd.array(w0, dtype=dtype), mx.nd.array(g, dtype=dtype)
    state = sgd.create_state(0, w)
    before = w._data
    for _ in range(2):
        sgd.update(0, w, grad, state)
    assert w._data is before  # updated in place, no copy
    ref_w, ref_g = mx.nd.array(w0, dtype=dtype), mx.nd.array(g, dtype=dtype)
    mom = mx.nd.zeros(w0.shape, dtype=dtype)
    for _ in range(2):
        if momentum:
            mx.nd.sgd_mom_update(ref_w, ref_g, mom, out=ref_w, momentum=momentum, **kw)
        else:
            mx.nd.sgd_update(ref_w, ref_g, out=ref_w, **kw)
    np.testing.assert_array_equal(w.asnumpy(), ref_w.asnumpy())
    if momentum:
        np.testing.assert_array_equal(state.asnumpy(), mom.asnumpy())
