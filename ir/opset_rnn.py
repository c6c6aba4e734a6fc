"""MXNet's fused ``RNN`` op (src/operator/rnn-inl.h, rnn_impl.h) and its backward op.

Modes ``rnn_relu``, ``rnn_tanh``, ``lstm`` (gates i, f, g, o), ``gru`` (gates r, z, n with
``n = tanh(x_n + b_xn + r * (W_hn h + b_hn))``); ``num_layers`` stacked, ``bidirectional``
(the reverse direction's output after the forward one's), dropout ``p`` between layers in
training, LSTM projection ``projection_size`` (LSTMP: ``r = W_hr h``), cell-state clipping,
and ``use_sequence_length`` (steps past a sequence's length give zero output and leave the
state alone; the reverse direction starts at the last valid step).

``parameters`` is MXNet's flat vector: first every weight, for each layer and direction in
turn ``W_x (G*H, in)``, ``W_h (G*H, R)`` and, with a projection, ``W_r (P, H)``; then every
bias, ``b_x (G*H)`` and ``b_h (G*H)`` per layer and direction (``G`` gates, ``H`` the state
size, ``R`` the recurrent size: ``P`` or ``H``). Gluon's ``_rnn_param_concat`` and MXNet's
.params files use this order. The kernels are NumPy loops over time in float64; the gradient
is back-propagation through time in ``rnn_backward``, which recomputes the forward pass.
"""
from __future__ import annotations

import numpy as np

from . import rng
from .ops import REQUIRED, OpKind, defop
from .shape_rules import fail, same_dtype, unify_dim
from .types import TensorType

_GATES = {"rnn_relu": 1, "rnn_tanh": 1, "lstm": 4, "gru": 3}
_ATTRS = {"state_size": REQUIRED, "num_layers": REQUIRED, "bidirectional": False,
          "mode": REQUIRED, "p": 0.0, "state_outputs": False, "projection_size": None,
          "lstm_state_clip_min": None, "lstm_state_clip_max": None,
          "lstm_state_clip_nan": False, "use_sequence_length": False}


def _dims(at):
    """(gates, H, R, P or 0, directions, layers)."""
    h, p = int(at["state_size"]), at["projection_size"]
    p = int(p) if p not in (None, "None", 0) else 0
    return _GATES[at["mode"]], h, p or h, p, 2 if at["bidirectional"] else 1, int(
        at["num_layers"])


def param_layout(at: dict, input_size: int) -> list[dict]:
    """Per (layer, direction) in order: name -> (offset, shape) inside ``parameters``."""
    g, h, r, p, d, layers = _dims(at)
    out, off = [], 0
    for layer in range(layers):
        ni = input_size if layer == 0 else r * d
        for _ in range(d):
            e = {"wx": (off, (g * h, ni))}
            off += g * h * ni
            e["wh"] = (off, (g * h, r))
            off += g * h * r
            if p:
                e["wr"] = (off, (p, h))
                off += p * h
            out.append(e)
    for e in out:
        e["bx"] = (off, (g * h,))
        e["bh"] = (off + g * h, (g * h,))
        off += 2 * g * h
    return out


def param_size(at: dict, input_size: int) -> int:
    """Length of the ``parameters`` vector (MXNet's GetRnnParamSize)."""
    g, h, r, p, d, layers = _dims(at)
    first = g * h * d * (input_size + r + 2)
    rest = g * h * d * (r * d + r + 2)
    return first + (layers - 1) * rest + p * h * layers * d


def _views(flat, layout):
    return [{k: flat[o:o + int(np.prod(s))].reshape(s) for k, (o, s) in e.items()}
            for e in layout]


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _split_inputs(ins, at):
    """(data, parameters, hx, cx or None, lengths or None)."""
    k = 3
    cx = lengths = None
    if at["mode"] == "lstm":
        cx, k = ins[3], 4
    if at["use_sequence_length"]:
        lengths = np.asarray(ins[k]).astype(np.int64).reshape(-1)
    return ins[0], ins[1], ins[2], cx, lengths


def _perm(steps, n, lengths):
    """Per sample, time index t -> lengths-1-t inside the sequence (a self-inverse map)."""
    t = np.arange(steps)[:, None]
    return np.where(t < lengths[None, :], lengths[None, :] - 1 - t, t), np.arange(n)[None, :]


def _step(mode, x, h, c, w, clip):
    """One cell step: (new h (recurrent), new c, cache)."""
    if mode == "gru":
        ax = x @ w["wx"].T + w["bx"]
        ah = h @ w["wh"].T + w["bh"]
        xr, xz, xn = np.split(ax, 3, axis=1)
        hr, hz, hn = np.split(ah, 3, axis=1)
        r, z = _sig(xr + hr), _sig(xz + hz)
        n = np.tanh(xn + r * hn)
        return (1 - z) * n + z * h, None, (x, h, r, z, n, hn)
    a = x @ w["wx"].T + w["bx"] + h @ w["wh"].T + w["bh"]
    if mode == "rnn_relu":
        out = np.maximum(a, 0)
        return out, None, (x, h, a > 0)
    if mode == "rnn_tanh":
        out = np.tanh(a)
        return out, None, (x, h, 1 - out * out)
    ai, af, ag, ao = np.split(a, 4, axis=1)
    i, f, g, o = _sig(ai), _sig(af), np.tanh(ag), _sig(ao)
    c_raw = f * c + i * g
    inside = np.ones_like(c_raw, dtype=bool)
    c_new = c_raw
    if clip is not None:
        c_new = np.clip(c_raw, clip[0], clip[1])
        inside = (c_raw >= clip[0]) & (c_raw <= clip[1])
        if clip[2]:
            c_new = np.where(np.isnan(c_raw), clip[0], c_new)
    tc = np.tanh(c_new)
    hfull = o * tc
    hnew = hfull @ w["wr"].T if "wr" in w else hfull
    return hnew, c_new, (x, h, c, i, f, g, o, tc, hfull, inside)


def _step_back(mode, dh, dc, w, cache, gw):
    """Gradients of one step: (dx, dh_prev, dc_prev); weight gradients added into ``gw``."""
    if mode == "gru":
        x, h, r, z, n, hn = cache
        dn, dz, dh_prev = dh * (1 - z), dh * (h - n), dh * z
        dan = dn * (1 - n * n)
        dar = dan * hn * r * (1 - r)
        daz = dz * z * (1 - z)
        dax = np.concatenate([dar, daz, dan], axis=1)
        dah = np.concatenate([dar, daz, dan * r], axis=1)
        gw["wx"] += dax.T @ x
        gw["bx"] += dax.sum(0)
        gw["wh"] += dah.T @ h
        gw["bh"] += dah.sum(0)
        return dax @ w["wx"], dh_prev + dah @ w["wh"], None
    if mode in ("rnn_relu", "rnn_tanh"):
        x, h, dact = cache
        da = dh * dact
        dc_prev = None
    else:
        x, h, c, i, f, g, o, tc, hfull, inside = cache
        if "wr" in w:
            gw["wr"] += dh.T @ hfull
            dh = dh @ w["wr"]
        dcr = (dc + dh * o * (1 - tc * tc)) * inside
        da = np.concatenate([dcr * g * i * (1 - i), dcr * c * f * (1 - f),
                             dcr * i * (1 - g * g), dh * tc * o * (1 - o)], axis=1)
        dc_prev = dcr * f
    gw["wx"] += da.T @ x
    gw["wh"] += da.T @ h
    gw["bx"] += da.sum(0)
    gw["bh"] += da.sum(0)
    return da @ w["wx"], da @ w["wh"], dc_prev


def _forward(ins, at, mask=None, keep=False):
    """Outputs (y, hy, cy, dropout mask) and, if ``keep``, what the backward pass needs."""
    x, flat, hx, cx, lengths = _split_inputs(ins, at)
    mode = at["mode"]
    g, h, r, p, d, layers = _dims(at)
    steps, n, _ = x.shape
    if flat.size != param_size(at, x.shape[2]):
        raise ValueError(f"parameters has {flat.size} values, expected "
                         f"{param_size(at, x.shape[2])}")
    w_all = _views(np.asarray(flat, dtype=np.float64), param_layout(at, x.shape[2]))
    lens = np.full(n, steps, np.int64) if lengths is None else lengths
    if np.any(lens < 0) or np.any(lens > steps):
        raise ValueError(f"sequence_length values must lie in [0, {steps}]")
    valid = (np.arange(steps)[:, None] < lens[None, :])[:, :, None]
    lo, hi = at["lstm_state_clip_min"], at["lstm_state_clip_max"]
    clip = None if lo is None and hi is None else (
        -np.inf if lo is None else lo, np.inf if hi is None else hi, at["lstm_state_clip_nan"])
    drop = at["p"] > 0 and layers > 1
    if drop and mask is None:
        if at.get("is_train", False):
            keep_p = rng.generator().random((layers - 1, steps, n, d * r)) >= at["p"]
            mask = keep_p / (1.0 - at["p"]) if at["p"] < 1 else np.zeros(keep_p.shape)
        else:
            mask = np.ones((layers - 1, steps, n, d * r))
    cur = np.asarray(x, dtype=np.float64)
    hy, cy, caches = [], [], []
    for layer in range(layers):
        outs = []
        for di in range(d):
            k = layer * d + di
            w = w_all[k]
            hs = np.asarray(hx[k], dtype=np.float64)
            cs = np.asarray(cx[k], dtype=np.float64) if cx is not None else None
            seq = cur if di == 0 else cur[_perm(steps, n, lens)]
            ys, step_caches = np.zeros((steps, n, r)), []
            for t in range(steps):
                hn, cn, cache = _step(mode, seq[t], hs, cs, w, clip)
                m = valid[t]
                ys[t] = np.where(m, hn, 0.0)
                hs = np.where(m, hn, hs)
                cs = np.where(m, cn, cs) if cs is not None else None
                step_caches.append(cache)
            hy.append(hs)
            cy.append(cs)
            outs.append(ys if di == 0 else ys[_perm(steps, n, lens)])
            caches.append((seq, step_caches))
        cur = outs[0] if d == 1 else np.concatenate(outs, axis=2)
        if drop and layer < layers - 1:
            cur = cur * mask[layer]
    res = (cur, np.stack(hy), np.stack(cy) if cx is not None else None, mask)
    return (res, (w_all, caches, valid, lens)) if keep else res


def _rnn(ins, at):
    y, hy, cy, mask = _forward(ins, at)
    dt = ins[0].dtype
    outs = [y.astype(dt)]
    if at["state_outputs"]:
        outs.append(hy.astype(dt))
        if at["mode"] == "lstm":
            outs.append(cy.astype(dt))
    if mask is not None:
        outs.append(mask.astype(dt))
    return outs[0] if len(outs) == 1 else tuple(outs)


def _n_inputs(at):
    return 3 + (at["mode"] == "lstm") + bool(at["use_sequence_length"])


def _n_visible(at):
    return 1 + (bool(at["state_outputs"]) * (2 if at["mode"] == "lstm" else 1))


def _has_mask(at):
    return at["p"] > 0 and int(at["num_layers"]) > 1


def _infer(in_types, at):
    op = "RNN"
    if at["mode"] not in _GATES:
        fail(op, f"mode must be one of {', '.join(_GATES)}, got {at['mode']!r}", in_types)
    if len(in_types) != _n_inputs(at):
        fail(op, f"expected {_n_inputs(at)} inputs (mode={at['mode']}, use_sequence_length="
                 f"{at['use_sequence_length']})", in_types)
    same_dtype(op, in_types[:3 + (at["mode"] == "lstm")])
    g, h, r, p, d, layers = _dims(at)
    data = in_types[0]
    x = data.shape if data.shape is not None else (None, None, None)
    if len(x) != 3:
        fail(op, "data must be (sequence length, batch size, input size)", in_types)
    steps, batch, isz = x
    states = in_types[2:3 + (at["mode"] == "lstm")]
    for t in states:
        if t.shape is not None:
            if len(t.shape) != 3:
                fail(op, "states must be (layers * directions, batch, size)", in_types)
            batch = unify_dim(batch, t.shape[1], op, in_types)
    if at["use_sequence_length"] and in_types[-1].shape is not None:
        batch = unify_dim(batch, in_types[-1].shape[0], op, in_types)
    pt = in_types[1]
    psize = pt.shape[0] if pt.shape is not None and len(pt.shape) == 1 else None
    if isz is None and psize is not None:  # the input size the parameter count implies
        rest = param_size(at, 0)
        if (psize - rest) % (g * h * d) == 0 and psize > rest:
            isz = (psize - rest) // (g * h * d)
    if isz is not None:
        psize = unify_dim(psize, param_size(at, isz), op, in_types)
    ld = layers * d
    refined = [data.with_shape((steps, batch, isz)), pt.with_shape((psize,)),
               in_types[2].with_shape((ld, batch, r))]
    if at["mode"] == "lstm":
        refined.append(in_types[3].with_shape((ld, batch, h)))
    if at["use_sequence_length"]:
        refined.append(in_types[-1].with_shape((batch,)))
    dt = data.dtype
    outs = [TensorType((steps, batch, d * r), dt)]
    if at["state_outputs"]:
        outs.append(TensorType((ld, batch, r), dt))
        if at["mode"] == "lstm":
            outs.append(TensorType((ld, batch, h), dt))
    if _has_mask(at):
        outs.append(TensorType((layers - 1, steps, batch, d * r), dt))
    return outs, refined


def _grad(F, ins, outs, ograds, at):
    at = {k: v for k, v in at.items() if k != "is_train"}
    extra = [outs[-1]] if _has_mask(at) else []
    res = F.rnn_backward(*ins, *extra, *ograds[:_n_visible(at)], **at)
    res = list(res) if isinstance(res, list | tuple) else [res]
    return res + [None] * (len(ins) - len(res))


defop("rnn", OpKind.OPAQUE, _rnn, _infer,
      inputs=("data", "parameters", "state", "state_cell?", "sequence_length?"),
      attrs=dict(_ATTRS), grad=_grad,
      num_outputs=lambda at: _n_visible(at) + _has_mask(at), visible_outputs=_n_visible,
      mode=True, random=True, aliases=("RNN",), mxnet_name="RNN",
      output_names=lambda at: ["output", "state", "state_cell"][:_n_visible(at)],
      doc="MXNet's fused recurrent layer over data (T, N, input) with the flat parameters "
          "vector, begin state (layers*directions, N, R) and, for lstm, state_cell "
          "(layers*directions, N, state_size); outputs (T, N, directions*R) and, with "
          "state_outputs, the final states. See ember.ir.opset_rnn for the layout.")


def _backward(ins, at):
    n_in = _n_inputs(at)
    fwd = list(ins[:n_in])
    k = n_in
    mask = None
    if _has_mask(at):
        mask, k = np.asarray(ins[k], dtype=np.float64), k + 1
    heads = [np.asarray(a, dtype=np.float64) for a in ins[k:]]
    (_, _, _, _), (w_all, caches, valid, lens) = _forward(fwd, at, mask=mask, keep=True)
    x, flat = fwd[0], fwd[1]
    mode = at["mode"]
    g, h, r, p, d, layers = _dims(at)
    steps, n, _ = x.shape
    dhy = heads[1] if at["state_outputs"] else np.zeros((layers * d, n, r))
    dcy = heads[2] if at["state_outputs"] and mode == "lstm" else np.zeros((layers * d, n, h))
    layout = param_layout(at, x.shape[2])
    gflat = np.zeros(flat.size)
    gw_all = _views(gflat, layout)
    dhx, dcx = np.zeros((layers * d, n, r)), np.zeros((layers * d, n, h))
    dcur = heads[0]
    for layer in reversed(range(layers)):
        if mask is not None and layer < layers - 1:
            dcur = dcur * mask[layer]
        dprev = 0.0
        for di in range(d):
            kk = layer * d + di
            seq, step_caches = caches[kk]
            dy = dcur[:, :, di * r:(di + 1) * r]
            if di == 1:
                dy = dy[_perm(steps, n, lens)]
            dseq = np.zeros(seq.shape)
            dh, dc = dhy[kk].copy(), dcy[kk].copy()
            for t in reversed(range(steps)):
                m = valid[t]
                dh_new = np.where(m, dh + dy[t], 0.0)
                dc_new = np.where(m, dc, 0.0)
                dseq[t], dh_p, dc_p = _step_back(mode, dh_new, dc_new, w_all[kk],
                                                 step_caches[t], gw_all[kk])
                dh = np.where(m, dh_p, dh)
                if dc_p is not None:
                    dc = np.where(m, dc_p, dc)
            dhx[kk], dcx[kk] = dh, dc
            dprev = dprev + (dseq if di == 0 else dseq[_perm(steps, n, lens)])
        dcur = dprev
    dt = x.dtype
    res = [dcur.astype(dt), gflat.astype(dt), dhx.astype(dt)]
    if mode == "lstm":
        res.append(dcx.astype(dt))
    return tuple(res)


def _backward_infer(in_types, at):
    n_in = _n_inputs(at)
    outs, refined = _infer(list(in_types[:n_in]), {**at, "p": 0.0, "state_outputs": False})
    fwd = refined[:2 + 1 + (at["mode"] == "lstm")]
    return [fwd[0], fwd[1], fwd[2]] + fwd[3:4], list(refined) + list(in_types[n_in:])


defop("rnn_backward", OpKind.OPAQUE, _backward, _backward_infer, inputs=("*data",),
      attrs=dict(_ATTRS), num_outputs=lambda at: 3 + (at["mode"] == "lstm"),
      doc="Gradients of RNN with respect to data, parameters, state (and state_cell) by "
          "back-propagation through time, from RNN's inputs, its dropout mask (when p > 0 "
          "and num_layers > 1) and the head gradients of its visible outputs; it recomputes "
          "the forward pass. Not differentiable.")
