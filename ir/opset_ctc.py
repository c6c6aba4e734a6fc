"""Connectionist Temporal Classification: the ``CTCLoss`` op and its gradient helper.

Names, attributes and conventions follow MXNet 1.9.1 (src/operator/nn/ctc_loss-inl.h and the
warp-ctc CPU kernel in 3rdparty/ctc_include/detail/cpu_ctc.h): ``data`` holds unnormalised
activations ``(T, N, alphabet)`` (softmax is applied inside), ``label`` is ``(N, L)``; the
blank is channel 0 (``blank_label='first'``, labels padded with 0) or the last channel
(``'last'``, labels padded with -1). Output 0 is the per-sequence negative log likelihood,
output 1 MXNet's hidden gradient with respect to ``data`` (for a unit head gradient); a
sequence that no alignment fits (``L + repeats > T``) gets loss 0 and gradient 0, as in
MXNet.

The kernel is the forward-backward (alpha-beta) recursion of Graves et al., "Connectionist
Temporal Classification", ICML 2006, section 4.1, in log space over the blank-extended label
sequence, vectorised over the batch (one Python step per time step).
"""
from __future__ import annotations

import numpy as np

from .ops import OpKind, defop
from .shape_rules import fail, unify_dim
from .types import TensorType

_ATTRS = {"use_data_lengths": False, "use_label_lengths": False, "blank_label": "first"}
_NEG = -np.inf


def _lengths(ins, at):
    """The ``(data_lengths, label_lengths)`` inputs that ``at`` says are present, else None."""
    k = 2
    dl = ll = None
    if at["use_data_lengths"]:
        dl, k = ins[k], k + 1
    if at["use_label_lengths"]:
        ll = ins[k]
    return dl, ll


def _check_inputs(ins, at):
    n = 2 + bool(at["use_data_lengths"]) + bool(at["use_label_lengths"])
    if len(ins) != n:
        raise ValueError(f"expected {n} inputs, got {len(ins)}")
    if at["blank_label"] not in ("first", "last"):
        raise ValueError(f"blank_label must be 'first' or 'last', got {at['blank_label']!r}")
    data, label = ins[0], ins[1]
    if data.ndim != 3 or label.ndim != 2 or label.shape[0] != data.shape[1] \
            or label.shape[1] > data.shape[0]:
        raise ValueError("bad input shapes")


def _label_lengths(lab, ll, at):
    """Label lengths: given, or up to the first padding value (0 or -1, per blank_label)."""
    n, width = lab.shape
    if ll is not None:
        ll = np.asarray(ll).astype(np.int64).reshape(-1)
        if ll.shape != (n,) or np.any(ll < 0) or np.any(ll > width):
            raise ValueError(f"label_lengths must be {n} values in [0, {width}]")
        return ll
    pad = lab == (0 if at["blank_label"] == "first" else -1)
    return np.where(pad.any(axis=1), pad.argmax(axis=1), width).astype(np.int64)


def _extended(lab, ll, blank):
    """Blank-extended labels ``(N, 2*Lmax+1)`` (blank beyond each length) and the mask of
    positions ``s`` that may be entered from ``s-2`` (a label differing from the previous)."""
    n = lab.shape[0]
    lmax = int(ll.max(initial=0))
    ext = np.full((n, 2 * lmax + 1), blank, dtype=np.int64)
    inside = np.arange(lmax)[None, :] < ll[:, None]
    ext[:, 1::2] = np.where(inside, lab[:, :lmax], blank)
    skip = np.zeros(ext.shape, dtype=bool)
    skip[:, 2:] = (ext[:, 2:] != blank) & (ext[:, 2:] != ext[:, :-2])
    return ext, skip


def _shift(a, k):
    """``a`` moved ``k`` places along the last axis (right for k > 0), filled with -inf."""
    out = np.full_like(a, _NEG)
    if k > 0:
        out[:, k:] = a[:, :-k]
    else:
        out[:, :k] = a[:, -k:]
    return out


def ctc_core(ins: list, at: dict, need_grad: bool = True):
    """Loss ``(N,)`` and, if ``need_grad``, d loss / d data ``(T, N, C)``, both float64."""
    _check_inputs(ins, at)
    data, label = ins[0], ins[1]
    steps, n, c = data.shape
    blank = 0 if at["blank_label"] == "first" else c - 1
    dl_in, ll_in = _lengths(ins, at)
    lab = np.asarray(label).astype(np.int64)
    ll = _label_lengths(lab, ll_in, at)
    if dl_in is None:
        dl = np.full(n, steps, dtype=np.int64)
    else:
        dl = np.asarray(dl_in).astype(np.int64).reshape(-1)
        if dl.shape != (n,) or np.any(dl < 0) or np.any(dl > steps):
            raise ValueError(f"data_lengths must be {n} values in [0, {steps}]")
    used = np.arange(lab.shape[1])[None, :] < ll[:, None]
    if np.any(used & ((lab < 0) | (lab >= c))):
        raise ValueError(f"label values must lie in [0, {c})")
    repeats = np.sum(used[:, 1:] & (lab[:, 1:] == lab[:, :-1]), axis=1)
    valid = (ll + repeats <= dl) & (dl > 0)

    x = data.astype(np.float64)
    logp = x - x.max(axis=2, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=2, keepdims=True))
    ext, skip = _extended(lab, ll, blank)
    s_len = ext.shape[1]
    lp = np.take_along_axis(logp, np.broadcast_to(ext[None], (steps, n, s_len)), axis=2)

    # alpha_t(s): log probability of all prefixes ending at extended position s at time t
    alpha = np.full((steps, n, s_len), _NEG)
    if steps:
        alpha[0, :, :min(2, s_len)] = lp[0, :, :2]
    for t in range(1, steps):
        a = alpha[t - 1]
        prev = np.logaddexp(a, _shift(a, 1))
        prev = np.logaddexp(prev, np.where(skip, _shift(a, 2), _NEG))
        alpha[t] = prev + lp[t]
    rows = np.arange(n)
    last_t = np.maximum(dl - 1, 0)
    end = alpha[last_t, rows, 2 * ll]
    end2 = np.where(ll > 0, alpha[last_t, rows, np.maximum(2 * ll - 1, 0)], _NEG)
    log_z = np.where(valid, np.logaddexp(end, end2), 0.0)
    loss = np.where(valid, -log_z, 0.0)
    if not need_grad:
        return loss, None

    # beta_t(s): log probability of all suffixes from position s at time t (lp_t included)
    beta = np.full((steps, n, s_len), _NEG)
    tail = np.zeros((n, s_len), dtype=bool)
    tail[rows, 2 * ll] = True
    tail[rows, np.maximum(2 * ll - 1, 0)] |= ll > 0
    skip_out = np.zeros_like(skip)
    skip_out[:, :-2] = skip[:, 2:]
    nxt = np.full((n, s_len), _NEG)
    for t in range(steps - 1, -1, -1):
        rec = np.logaddexp(nxt, _shift(nxt, -1))
        rec = np.logaddexp(rec, np.where(skip_out, _shift(nxt, -2), _NEG)) + lp[t]
        start = np.where(tail, lp[t], _NEG)
        beta[t] = np.where((t == dl - 1)[:, None], start,
                           np.where((t < dl - 1)[:, None], rec, _NEG))
        nxt = beta[t]
    # posterior occupation of each extended position, summed per alphabet symbol
    post = np.exp(alpha + beta - lp - log_z[None, :, None])
    onehot = ext[:, :, None] == np.arange(c)[None, None, :]
    occ = np.einsum("tns,nsc->tnc", post, onehot.astype(np.float64))
    grad = np.exp(logp) - occ
    keep = (np.arange(steps)[:, None] < dl[None, :]) & valid[None, :]
    return loss, np.where(keep[:, :, None], grad, 0.0)


def _ctc_loss(ins, at):
    loss, grad = ctc_core(ins, at)
    dt = ins[0].dtype
    return loss.astype(dt), grad.astype(dt)


def _infer_inputs(op, in_types, at, offset, batch=None):
    """Check and refine ``data, label[, data_lengths][, label_lengths]`` from ``offset``;
    ``batch`` is a batch size already known from elsewhere (or None)."""
    types = in_types[offset:]
    n_in = 2 + bool(at["use_data_lengths"]) + bool(at["use_label_lengths"])
    if len(types) != n_in:
        fail(op, f"expected {n_in} inputs (use_data_lengths={at['use_data_lengths']}, "
                 f"use_label_lengths={at['use_label_lengths']})", in_types)
    if at["blank_label"] not in ("first", "last"):
        fail(op, f"blank_label must be 'first' or 'last', got {at['blank_label']!r}", in_types)
    data, label = types[0], types[1]
    d = data.shape if data.shape is not None else (None, None, None)
    lab = label.shape if label.shape is not None else (None, None)
    if len(d) != 3:
        fail(op, "data must be (sequence_length, batch_size, alphabet_size)", in_types)
    if len(lab) != 2:
        fail(op, "label must be (batch_size, label_sequence_length)", in_types)
    batch = unify_dim(unify_dim(batch, d[1], op, in_types), lab[0], op, in_types)
    for t in types[2:]:
        if t.shape is not None and len(t.shape) != 1:
            fail(op, "data_lengths and label_lengths must be vectors", in_types)
        batch = unify_dim(batch, t.shape[0] if t.shape else None, op, in_types)
    if d[0] is not None and lab[1] is not None and lab[1] > d[0]:
        fail(op, "the label length cannot exceed the sequence length of the data", in_types)
    d = (d[0], batch, d[2])
    refined = [data.with_shape(d), label.with_shape((batch, lab[1]))]
    refined += [t.with_shape((batch,)) for t in types[2:]]
    return TensorType(d, data.dtype), TensorType((batch,), data.dtype), refined


def _ctc_loss_infer(in_types, at):
    grad_t, loss_t, refined = _infer_inputs("ctc_loss", in_types, at, 0)
    return [loss_t, grad_t], refined


def _ctc_loss_grad(F, ins, outs, ograds, at):
    head = F.reshape(ograds[0], shape=(1, -1, 1))
    return [F.broadcast_mul(outs[1], head)] + [None] * (len(ins) - 1)


defop("ctc_loss", OpKind.OPAQUE, _ctc_loss, _ctc_loss_infer,
      inputs=("data", "label", "data_lengths?", "label_lengths?"), attrs=dict(_ATTRS),
      grad=_ctc_loss_grad, num_outputs=2, visible_outputs=1,
      aliases=("CTCLoss", "_contrib_CTCLoss", "_contrib_ctc_loss"), mxnet_name="CTCLoss",
      doc="CTC loss (Graves et al. 2006) of unnormalised activations data (T, N, alphabet) "
          "against label (N, L): the negative log likelihood per sequence, shape (N,). "
          "blank_label 'first' (channel 0, labels padded with 0) or 'last' (last channel, "
          "padded with -1); use_data_lengths / use_label_lengths add the length vectors as "
          "the next inputs, in that order. Output 1 is MXNet's hidden d loss / d data, which "
          "the gradient rule scales by the head gradient. Second-order gradients are not "
          "supported (the hidden gradient is treated as a constant).")


def _ctc_loss_backward(ins, at):
    _, grad = ctc_core(ins[1:], at)
    head = np.asarray(ins[0], dtype=np.float64).reshape(1, -1, 1)
    return (grad * head).astype(ins[1].dtype)


def _ctc_loss_backward_infer(in_types, at):
    op, head = "ctc_loss_backward", in_types[0]
    if head.shape is not None and len(head.shape) != 1:
        fail(op, "out_grad must be a vector (batch_size,)", in_types)
    grad_t, loss_t, refined = _infer_inputs(op, in_types, at, 1,
                                            head.shape[0] if head.shape else None)
    return [grad_t], [head.with_shape(loss_t.shape)] + refined


defop("ctc_loss_backward", OpKind.OPAQUE, _ctc_loss_backward, _ctc_loss_backward_infer,
      inputs=("out_grad", "data", "label", "data_lengths?", "label_lengths?"),
      attrs=dict(_ATTRS), grad=None,
      doc="Gradient of ctc_loss with respect to data, computed from scratch: out_grad (N,) "
          "times d loss_n / d data (T, N, alphabet), by the alpha-beta recursion. The same "
          "values as ctc_loss's hidden output 1 scaled by out_grad, for graphs that recompute "
          "rather than keep that (T, N, alphabet) output. Not differentiable (no second "
          "order).")
