"""Float64 NumPy references for every jloss loss, written from the formulas.

Nothing here calls jloss, optax or JAX: each function is the textbook formula evaluated in
float64 (with the usual max-shift / log1p rewrites only where float64 itself would overflow).
Every ``*_per_sample`` function returns the per-sample loss; :func:`reduce` applies the
documented weights / mask / reduction semantics to it.
"""

from __future__ import annotations

import numpy as np


def f64(x):
    """``x`` as a float64 NumPy array (works for JAX arrays of any float dtype)."""
    return np.asarray(np.asarray(x).astype(np.float64))


def _softplus(x):
    x = f64(x)
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def _log_softmax(logits):
    x = f64(logits)
    m = np.max(x, axis=-1, keepdims=True)
    z = x - m
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def _one_hot(labels, num_classes):
    labels = np.asarray(labels)
    return (labels[..., None] == np.arange(num_classes)).astype(np.float64)


# --------------------------------------------------------------------------- regression
def mse(p, t):
    r = f64(p) - f64(t)
    return r * r


def mae(p, t):
    return np.abs(f64(p) - f64(t))


def huber(p, t, delta=1.0):
    r = np.abs(f64(p) - f64(t))
    d = f64(delta)
    return np.where(r <= d, 0.5 * r * r, d * (r - 0.5 * d))


def pseudo_huber(p, t, delta=1.0):
    r = f64(p) - f64(t)
    d = f64(delta)
    x = r / d
    # delta^2 (sqrt(1 + x^2) - 1) == delta^2 x^2 / (sqrt(1 + x^2) + 1); hypot avoids x^2 overflow.
    h = np.hypot(1.0, x)
    return d * d * np.where(np.abs(x) < 1.0, x * x / (h + 1.0), h - 1.0)


def log_cosh(p, t):
    a = np.abs(f64(p) - f64(t))
    # log(cosh(a)) = a + log(1 + exp(-2a)) - log(2)
    return a + np.log1p(np.exp(-2.0 * a)) - np.log(2.0)


def quantile(p, t, tau=0.5):
    u = f64(t) - f64(p)
    tau = f64(tau)
    return np.where(u >= 0, tau * u, (tau - 1.0) * u)


def epsilon_insensitive(p, t, epsilon=0.1):
    return np.maximum(0.0, np.abs(f64(p) - f64(t)) - f64(epsilon))


# --------------------------------------------------------------------------- classification
def cross_entropy(logits, targets, label_smoothing=0.0):
    """-sum_c q_c log_softmax(logits)_c, q = (1-eps) onehot|probs + eps/C."""
    logits = f64(logits)
    c = logits.shape[-1]
    targets = np.asarray(targets)
    if np.issubdtype(targets.dtype, np.integer):
        q = _one_hot(targets, c)
    else:
        q = f64(targets)
    eps = f64(label_smoothing)[..., None] if np.ndim(label_smoothing) else f64(label_smoothing)
    q = (1.0 - eps) * q + eps / c
    return -np.sum(q * _log_softmax(logits), axis=-1)


def binary_cross_entropy(logits, labels):
    x = f64(logits)
    y = f64(labels)
    return _softplus(x) - y * x


def hinge(scores, labels):
    return np.maximum(0.0, 1.0 - f64(labels) * f64(scores))


def squared_hinge(scores, labels):
    return hinge(scores, labels) ** 2


def multiclass_hinge(scores, labels):
    """Crammer-Singer: max_j (s_j + [j != y]) - s_y."""
    s = f64(scores)
    onehot = _one_hot(labels, s.shape[-1])
    s_y = np.sum(s * onehot, axis=-1)
    return np.max(s + (1.0 - onehot), axis=-1) - s_y


PER_SAMPLE = {
    "mse": mse,
    "mae": mae,
    "huber": huber,
    "pseudo_huber": pseudo_huber,
    "log_cosh": log_cosh,
    "quantile": quantile,
    "epsilon_insensitive": epsilon_insensitive,
    "cross_entropy": cross_entropy,
    "binary_cross_entropy": binary_cross_entropy,
    "hinge": hinge,
    "squared_hinge": squared_hinge,
    "multiclass_hinge": multiclass_hinge,
}


# --------------------------------------------------------------------------- reduction
def reduce(loss, weights=None, where=None, reduction="mean"):
    """The documented semantics of weights / where / reduction applied to a per-sample loss.

    none -> w * l (0 where masked); sum -> sum(w * l) over unmasked; mean -> that sum divided by
    sum(w) over unmasked (w = 1 without weights), and 0 when that denominator is 0.
    """
    loss = f64(loss)
    w = np.ones_like(loss) if weights is None else np.broadcast_to(f64(weights), loss.shape)
    m = np.ones(loss.shape, bool) if where is None else np.broadcast_to(np.asarray(where), loss.shape)
    # Masked samples contribute nothing, even when their loss is NaN/inf.
    wl = np.where(m, w * np.where(m, loss, 0.0), 0.0)
    if reduction == "none":
        return wl
    total = np.sum(wl)
    if reduction == "sum":
        return total
    denom = np.sum(np.where(m, w, 0.0))
    return total / denom if denom != 0 else 0.0


# --------------------------------------------------------------------------- gradients
# d(per-sample loss)/d(predictions), from the formulas, with the documented values at kinks:
# 0 at r == 0 for mae/quantile, delta*sign(r) at |r| == delta for huber, 0 at |r| == epsilon,
# 0 at the margin for the hinges. (For class losses: the gradient w.r.t. the logits/scores.)
def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * f64(x)))


def _grad_quantile(p, t, tau=0.5):
    r = f64(p) - f64(t)
    tau = f64(tau)
    return np.where(r > 0, 1.0 - tau, np.where(r < 0, -tau, 0.0))


def _grad_cross_entropy(logits, targets, label_smoothing=0.0):
    logits = f64(logits)
    c = logits.shape[-1]
    targets = np.asarray(targets)
    q = _one_hot(targets, c) if np.issubdtype(targets.dtype, np.integer) else f64(targets)
    eps = f64(label_smoothing)[..., None] if np.ndim(label_smoothing) else f64(label_smoothing)
    q = (1.0 - eps) * q + eps / c
    return np.exp(_log_softmax(logits)) * np.sum(q, axis=-1, keepdims=True) - q


def _grad_multiclass_hinge(scores, labels):
    s = f64(scores)
    onehot = _one_hot(labels, s.shape[-1])
    v = s + (1.0 - onehot)
    top = _one_hot(np.argmax(v, axis=-1), s.shape[-1])  # inputs are drawn without ties
    return top - onehot


GRAD_PREDICTIONS = {
    "mse": lambda p, t: 2.0 * (f64(p) - f64(t)),
    "mae": lambda p, t: np.sign(f64(p) - f64(t)),
    "huber": lambda p, t, delta=1.0: np.clip(f64(p) - f64(t), -f64(delta), f64(delta)),
    "pseudo_huber": lambda p, t, delta=1.0: (f64(p) - f64(t)) / np.hypot(1.0, (f64(p) - f64(t)) / f64(delta)),
    "log_cosh": lambda p, t: np.tanh(f64(p) - f64(t)),
    "quantile": _grad_quantile,
    "epsilon_insensitive": lambda p, t, epsilon=0.1: np.where(
        np.abs(f64(p) - f64(t)) > f64(epsilon), np.sign(f64(p) - f64(t)), 0.0
    ),
    "cross_entropy": _grad_cross_entropy,
    "binary_cross_entropy": lambda x, y: _sigmoid(x) - f64(y),
    "hinge": lambda s, y: np.where(f64(y) * f64(s) < 1.0, -f64(y), 0.0),
    "squared_hinge": lambda s, y: -2.0 * f64(y) * np.maximum(0.0, 1.0 - f64(y) * f64(s)),
    "multiclass_hinge": _grad_multiclass_hinge,
}


# d(per-sample loss)/d(targets), for every loss whose targets are floats (the regression losses,
# soft labels of cross_entropy, labels of the binary losses), from the formulas; the documented
# values at kinks as above. (Labels of the hinges are +-1 by contract; the formula is still
# differentiable there, away from the margin.)
def _grad_targets_cross_entropy(logits, targets, label_smoothing=0.0):
    eps = f64(label_smoothing)[..., None] if np.ndim(label_smoothing) else f64(label_smoothing)
    return -(1.0 - eps) * _log_softmax(logits)  # = (1 - eps) (logsumexp(z) - z)


GRAD_TARGETS = {
    **{
        name: (lambda g: lambda p, t, *h: -g(p, t, *h))(GRAD_PREDICTIONS[name])  # r = p - t
        for name in ("mse", "mae", "huber", "pseudo_huber", "log_cosh", "quantile", "epsilon_insensitive")
    },
    "cross_entropy": _grad_targets_cross_entropy,
    "binary_cross_entropy": lambda x, y: -f64(x),
    "hinge": lambda s, y: np.where(f64(y) * f64(s) < 1.0, -f64(s), 0.0),
    "squared_hinge": lambda s, y: -2.0 * f64(s) * np.maximum(0.0, 1.0 - f64(y) * f64(s)),
}


# d(per-sample loss)/d(hyperparameter), from the formulas (away from kinks).
def _grad_pseudo_huber_delta(p, t, delta=1.0):
    d = f64(delta)
    x = (f64(p) - f64(t)) / d
    h = np.hypot(1.0, x)
    # d/dd [d^2 (h - 1)] = 2 d (h - 1) - d x^2 / h
    return 2.0 * d * (h - 1.0) - d * x * x / h


def _grad_cross_entropy_label_smoothing(logits, targets, label_smoothing=0.0):
    logits = f64(logits)
    c = logits.shape[-1]
    targets = np.asarray(targets)
    p = _one_hot(targets, c) if np.issubdtype(targets.dtype, np.integer) else f64(targets)
    return np.sum((p - 1.0 / c) * _log_softmax(logits), axis=-1)


GRAD_HYPERPARAMETER = {
    "huber": lambda p, t, delta=1.0: np.where(
        np.abs(f64(p) - f64(t)) > f64(delta), np.abs(f64(p) - f64(t)) - f64(delta), 0.0
    ),
    "pseudo_huber": _grad_pseudo_huber_delta,
    "quantile": lambda p, t, tau=0.5: f64(t) - f64(p),  # tau u and (tau - 1) u: both u
    "epsilon_insensitive": lambda p, t, epsilon=0.1: np.where(np.abs(f64(p) - f64(t)) > f64(epsilon), -1.0, 0.0),
    "cross_entropy": _grad_cross_entropy_label_smoothing,
}
