r"""Classification losses on logits or scores.

Same signature and argument names as the regression losses::

    loss(predictions, targets, [hyperparameter], *, weights=None, where=None, reduction="mean")

``predictions`` are logits (cross-entropies) or scores (hinges); ``targets`` are labels. For the
multi-class losses the per-sample shape is ``predictions.shape[:-1]`` (classes on the last axis);
for the binary ones it is the broadcast shape of predictions and targets. ``weights``, ``where``
and ``reduction`` follow :mod:`jloss.reduction`. Label checks run on concrete labels only and
skip masked-out samples (so ``-100`` padding under a mask is fine).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np
from jax.custom_derivatives import SymbolicZero

from jloss import checks, fusion, reduction as red


def _masked_concrete(
    name: str, targets: Any, where: Any, per_sample_shape: tuple[int, ...], trailing: tuple[int, ...] = ()
) -> np.ndarray | None:
    """Concrete labels restricted to unmasked samples (None when traced).

    ``trailing`` is the shape of the labels beyond the per-sample shape (``(C,)`` for soft labels
    of a class loss); the mask applies to every entry of a sample."""
    t = checks.concrete_value(targets)
    if t is None:
        return None
    if where is not None:
        m = checks.concrete_value(where)
        if m is None or m.dtype != np.bool_:
            return None  # traced, or not a mask at all (prepare_mask raises TypeError for that)
        checks.check_broadcastable_to(name, "where", m.shape, per_sample_shape)
        if trailing:
            t = np.broadcast_to(t, tuple(per_sample_shape) + tuple(trailing))
            m = np.broadcast_to(m, per_sample_shape).reshape(tuple(per_sample_shape) + (1,) * len(trailing))
        else:
            t = np.broadcast_to(t, np.broadcast_shapes(t.shape, per_sample_shape))
        t = t[np.broadcast_to(m, t.shape)]
    return t


def _prologue(name: str, predictions: ArrayLike, reduction: str) -> tuple[jax.Array, Any, Any]:
    checks.check_reduction(name, reduction)
    predictions = checks.check_floating(name, "predictions", predictions)
    out_dtype = predictions.dtype
    return predictions.astype(red.compute_dtype(out_dtype)), out_dtype, red.compute_dtype(out_dtype)


def _check_classes(name: str, predictions: jax.Array) -> int:
    if predictions.ndim < 1 or predictions.shape[-1] < 1:
        raise ValueError(
            f"{name}: predictions must have a class axis last, shape (..., C) with C >= 1; "
            f"got shape {predictions.shape}."
        )
    return predictions.shape[-1]


def _class_targets(name: str, predictions: jax.Array, targets: jax.Array, where: Any) -> tuple[bool, tuple]:
    """Validate targets of a multi-class loss; return (integer_labels, per-sample shape)."""
    num_classes = _check_classes(name, predictions)
    batch = predictions.shape[:-1]
    if jnp.issubdtype(targets.dtype, jnp.integer):
        shape = checks.broadcast_shapes(name, **{"predictions.shape[:-1]": batch, "targets": targets.shape})
        t = _masked_concrete(name, targets, where, shape)
        if t is not None and t.size and (t.min() < 0 or t.max() >= num_classes):
            bad = t[(t < 0) | (t >= num_classes)]
            raise ValueError(
                f"{name}: integer targets must be class ids in [0, {num_classes}) for predictions "
                f"with {num_classes} classes; got {bad[:5].tolist()}."
            )
        return True, shape
    if jnp.issubdtype(targets.dtype, jnp.floating):
        if targets.ndim < 1 or targets.shape[-1] != num_classes:
            raise ValueError(
                f"{name}: float targets must be probabilities of shape (..., {num_classes}) like "
                f"predictions {predictions.shape}; got shape {targets.shape}. "
                "(Integer class ids have shape predictions.shape[:-1].)"
            )
        shape = checks.broadcast_shapes(
            name, **{"predictions.shape[:-1]": batch, "targets.shape[:-1]": targets.shape[:-1]}
        )
        t = _masked_concrete(name, targets, where, shape, trailing=(num_classes,))
        if t is not None and t.size and not np.all(t >= 0):  # False for NaN too
            bad = t[~(t >= 0)]
            raise ValueError(
                f"{name}: float targets must be non-negative label weights (soft labels; they need "
                f"not sum to 1); got {bad[:5].tolist()}."
            )
        return False, shape
    raise TypeError(f"{name}: targets must be integer class ids or float probabilities, got {targets.dtype}.")


def _row_sums(terms: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
    """Sums over the class axis of several arrays in one variadic reduction.

    XLA's CPU backend hands a single sum to a library kernel that cannot fuse a compare or a
    select (so a one-hot or masked operand would first be written out in full); a variadic
    reduction is compiled by XLA itself, with every producer fused into the one pass.
    """
    zero = jnp.zeros((), terms[0].dtype)
    return jax.lax.reduce(
        terms,
        (zero,) * len(terms),
        lambda a, b: tuple(x + y for x, y in zip(a, b)),
        (terms[0].ndim - 1,),
    )


def _one_hot(labels: jax.Array, z: jax.Array) -> jax.Array:
    return (labels[..., None] == jnp.arange(z.shape[-1], dtype=labels.dtype)).astype(z.dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def class_stats(z: jax.Array, m: jax.Array, targets: jax.Array, integer: bool, smooth: bool) -> tuple[jax.Array, ...]:
    """Per sample, with ``u = z - m`` (``m`` the row max, passed in; ``u <= 0``):
    ``s = sum_c exp(u_c)``, ``U = sum_c p_c u_c``, with smoothing ``V = sum_c u_c``, and for
    float labels ``S = sum_c p_c``.

    ``p`` is the one-hot of integer labels or the given label weights. Then
    ``logsumexp(z) = m + log s`` and ``-sum_c p_c log softmax(z)_c = S log s - U`` (``S = 1`` for
    integer labels): two non-negative terms, nothing of the size of ``z`` cancels, and ``m`` is
    never added to ``log s`` (at logits of 1e4 that sum is off by its ulp, ~1e-3). One pass for
    the max (outside) and one fused pass for the rest. The derivatives are explicit and exact in
    every argument (``m`` included): against the logits' tangent ``exp(u)`` (``s``), ``p`` (U)
    and ``1`` (V), against the labels' tangent ``u`` (U) and ``1`` (S). So the gradient is one
    elementwise pass, softmax being ``exp(z - m) / s`` with ``z - m`` exact near the max, that
    reads the logits, labels and per-sample vectors; and it is differentiable again.
    """
    u = z - m[..., None]
    p = _one_hot(targets, z) if integer else targets
    terms = (jnp.exp(u), u * p) + ((u,) if smooth else ()) + (() if integer else (p,))
    return _row_sums(terms)


def _class_stats_jvp(integer, smooth, primals, tangents):
    z, m, targets = primals
    z_dot, m_dot, targets_dot = tangents
    stats = class_stats(z, m, targets, integer, smooth)
    # Through a barrier, the derivatives' z - m is not the value's: shared, XLA would write it
    # out in full (the max pass's output) and both passes would read it back.
    m_b = jax.lax.optimization_barrier(m)
    u = z - m_b[..., None]
    p = _one_hot(targets, z) if integer else targets
    # the tangent of u = z - m (None: symbolically zero)
    u_dot = None if isinstance(z_dot, SymbolicZero) else z_dot
    if not isinstance(m_dot, SymbolicZero):
        u_dot = -m_dot[..., None] if u_dot is None else u_dot - m_dot[..., None]
    p_dot = None if (integer or isinstance(targets_dot, SymbolicZero)) else targets_dot
    zero = jnp.zeros_like(m)
    if u_dot is None:
        s_dot = zero
        up_dot = zero
        usum_dot = zero
    else:
        s_dot = jnp.sum(jnp.exp(u) * u_dot, axis=-1)
        up_dot = jnp.sum(p * u_dot, axis=-1)
        usum_dot = jnp.sum(u_dot, axis=-1)
    if p_dot is not None:
        up_dot = up_dot + jnp.sum(u * p_dot, axis=-1)
    out = (s_dot, up_dot) + ((usum_dot,) if smooth else ())
    if not integer:
        out = out + (zero if p_dot is None else jnp.sum(p_dot, axis=-1),)
    return stats, out


class_stats.defjvp(_class_stats_jvp, symbolic_zeros=True)


def cross_entropy(
    predictions: ArrayLike,
    targets: ArrayLike,
    label_smoothing: ArrayLike = 0.0,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: str = "mean",
) -> jax.Array:
    r"""Softmax cross-entropy between logits and class labels, with optional label smoothing.

    .. math:: \ell(z, q) = -\sum_{c=1}^{C} q_c \log\operatorname{softmax}(z)_c
        = \Bigl(\sum_{c=1}^{C} q_c\Bigr)\operatorname{logsumexp}(z) - z \cdot q,
        \qquad q = (1 - \varepsilon)\,p + \varepsilon / C

    Shapes and domain: ``predictions`` are logits :math:`z` of shape ``(..., C)``. ``targets``
    :math:`p` are either integer class ids of shape ``predictions.shape[:-1]`` (:math:`p` their
    one-hot; concrete ids outside ``[0, C)`` raise ``ValueError``) or float soft labels of shape
    ``(..., C)``: any non-negative label weights, *not necessarily summing to 1* (concrete
    negative or NaN entries raise ``ValueError``). The formula is applied as written: labels
    :math:`2p` cost twice what :math:`p` costs, :math:`p = 0` costs 0, as in
    ``torch.nn.functional.cross_entropy`` and ``optax.softmax_cross_entropy``.
    :math:`\varepsilon` is ``label_smoothing`` in [0, 1] (traced arrays allowed, broadcast against
    the per-sample loss), so :math:`\sum_c q_c = (1 - \varepsilon)\sum_c p_c + \varepsilon`.

    Gradients: :math:`(\sum_c q_c)\operatorname{softmax}(z) - q` in the logits,
    :math:`-(1 - \varepsilon)\log\operatorname{softmax}(z)` in the soft labels, and
    :math:`\sum_c (p_c - 1/C)\log\operatorname{softmax}(z)_c` in :math:`\varepsilon`; from
    explicit derivatives that are differentiable again (Hessians work), and no (N, C) log-probabilities are kept
    for the backward pass. Computed with the row max :math:`m` and
    :math:`\log s = \log\sum_c e^{z_c - m}` kept apart, as
    :math:`\sum_c q_c (m - z_c) + (\sum_c q_c)\log s` (two non-negative terms: nothing of the
    size of :math:`z` cancels) and softmax as :math:`e^{z - m} / s`, so value and gradient
    keep float32 accuracy at logits of magnitude 1e4 and beyond. In bits, divide by
    :math:`\log 2`: a uniform guess over :math:`C` classes costs :math:`\log_2 C` bits.

    >>> import jax.numpy as jnp, jloss
    >>> round(float(jloss.cross_entropy(jnp.zeros((1, 2)), jnp.array([1]))), 4)  # ln 2
    0.6931
    >>> q = jnp.array([[1.0, 1.0], [0.0, 0.0]])  # soft labels summing to 2 and to 0
    >>> jloss.cross_entropy(jnp.zeros((2, 2)), q, reduction="none")  # 2 ln 2 and 0
    Array([1.3862944, 0.       ], dtype=float32)

    Reference: Shannon 1948; Szegedy et al., "Rethinking the Inception Architecture" (label
    smoothing), CVPR 2016. Agrees with ``optax.softmax_cross_entropy(_with_integer_labels)``
    and ``torch.nn.functional.cross_entropy`` (soft labels, ``label_smoothing``).
    """
    name = "cross_entropy"
    predictions, out_dtype, dtype = _prologue(name, predictions, reduction)
    targets = jnp.asarray(targets)
    integer, shape = _class_targets(name, predictions, targets, where)
    eps = checks.check_hyperparameter(
        name, "label_smoothing", label_smoothing, lambda v: (v >= 0) & (v <= 1), "in [0, 1]"
    ).astype(dtype)
    shape = checks.broadcast_shapes(name, **{"per-sample": shape, "label_smoothing": eps.shape})
    mask = red.prepare_mask(name, where, shape)
    logits = red.mask_input(predictions, mask, trailing=1)
    if integer:
        targets = red.mask_input(targets, mask)
    else:
        targets = red.mask_input(targets.astype(dtype), mask, trailing=1)
    smooth = not (isinstance(label_smoothing, (int, float)) and label_smoothing == 0)
    # the row max is a constant shift (the loss does not depend on it): no derivative through it
    m = jax.lax.stop_gradient(jnp.max(logits, axis=-1))
    stats = class_stats(logits, m, targets, integer, smooth)
    log_s, up = jnp.log(stats[0]), stats[1]
    # -sum_c p_c log softmax(z)_c = (sum_c p_c) log s - sum_c p_c (z_c - m)
    loss = log_s - up if integer else stats[-1] * log_s - up
    if smooth:
        # and the uniform target's -mean_c log softmax(z)_c = log s - mean_c (z_c - m)
        loss = (1.0 - eps) * loss + eps * (log_s - stats[2] / logits.shape[-1])
    loss = jnp.broadcast_to(loss, shape)
    return red.reduce_loss(name, loss, weights=weights, mask=mask, reduction=reduction, out_dtype=out_dtype)


# softplus(x) - y x written as max(x, 0) + log1p(exp(-|x|)) - y x: select-free (``jax.nn.softplus``
# is a logaddexp, whose inf handling selects), so XLA fuses it into the reduction.
_bce_kernel = fusion.kernel(
    lambda x, y: jnp.maximum(x, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(x))) - y * x,
    lambda x, y: jax.nn.sigmoid(x) - y,
    lambda x, y: -x,
    small=lambda x, y: jax.nn.softplus(x) - y * x,
)


def binary_cross_entropy(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: str = "mean",
) -> jax.Array:
    r"""Sigmoid (binary) cross-entropy between logits :math:`x` and labels :math:`y \in [0, 1]`.

    .. math:: \ell(x, y) = -y\log\sigma(x) - (1 - y)\log(1 - \sigma(x))
        = \operatorname{softplus}(x) - y\,x

    The right-hand form is what is computed, as :math:`\max(x, 0) + \log(1 + e^{-|x|}) - y\,x`:
    no ``log(sigmoid)`` underflow, finite for any finite logit. Soft labels in [0, 1] are allowed; concrete labels outside raise ``ValueError``.
    Gradient: :math:`\sigma(x) - y`, smooth.

    >>> import jax.numpy as jnp, jloss
    >>> round(float(jloss.binary_cross_entropy(jnp.array([0.0]), jnp.array([1.0]))), 4)
    0.6931

    Reference: ``optax.sigmoid_binary_cross_entropy``; ``torch.nn.BCEWithLogitsLoss``.
    """
    name = "binary_cross_entropy"
    predictions, out_dtype, dtype = _prologue(name, predictions, reduction)
    targets = jnp.asarray(targets)
    if not (jnp.issubdtype(targets.dtype, jnp.floating) or jnp.issubdtype(targets.dtype, jnp.integer)):
        raise TypeError(f"{name}: targets must be real labels in [0, 1], got dtype {targets.dtype}.")
    shape = checks.broadcast_shapes(name, predictions=predictions.shape, targets=targets.shape)
    t = _masked_concrete(name, targets, where, shape)
    if t is not None and t.size and not np.all((t >= 0) & (t <= 1)):
        bad = t[~((t >= 0) & (t <= 1))]
        raise ValueError(f"{name}: targets must be labels in [0, 1]; got {bad[:5].tolist()}.")
    mask = red.prepare_mask(name, where, shape)
    x = red.mask_input(predictions, mask)
    y = red.mask_input(targets.astype(dtype), mask)
    loss = jnp.broadcast_to(_bce_kernel(x, y), shape)
    return red.reduce_loss(name, loss, weights=weights, mask=mask, reduction=reduction, out_dtype=out_dtype)


def _signed_margin(name: str, predictions: ArrayLike, targets: ArrayLike, where: Any, reduction: str):
    predictions, out_dtype, dtype = _prologue(name, predictions, reduction)
    targets = jnp.asarray(targets)
    if not (jnp.issubdtype(targets.dtype, jnp.floating) or jnp.issubdtype(targets.dtype, jnp.integer)):
        raise TypeError(f"{name}: targets must be labels in {{-1, +1}}, got dtype {targets.dtype}.")
    shape = checks.broadcast_shapes(name, predictions=predictions.shape, targets=targets.shape)
    t = _masked_concrete(name, targets, where, shape)
    if t is not None and t.size and not np.all((t == 1) | (t == -1)):
        bad = np.unique(t[~((t == 1) | (t == -1))])
        hint = (
            " Labels look like {0, 1}: map them with 2 * y - 1."
            if np.all((t == 0) | (t == 1))
            else " (A {0, 1} label vector is a common silent bug elsewhere: map it with 2 * y - 1.)"
        )
        raise ValueError(f"{name}: targets must be labels in {{-1, +1}}; got {bad[:5].tolist()}.{hint}")
    mask = red.prepare_mask(name, where, shape)
    s = red.mask_input(predictions, mask)
    y = red.mask_input(targets.astype(dtype), mask, fill=1)
    return s, y, shape, mask, out_dtype


def _violation(s, y, one=1.0):
    return one - y * s


def _positive_part(z):
    # max(z, 0) as 0.5 z + 0.5 |z|: exact above the subnormals (equal halves add exactly, opposite
    # ones give +0), and free of a literal 0 that the derivative's compare would share with it.
    return 0.5 * z + 0.5 * jnp.abs(z)


# max(1 - y s, 0), the margin violation. Its gradient is pinned to 0 at the margin y s == 1
# (autodiff of maximum splits the tie 0.5/0.5). The derivatives' one is opaque: no broadcast is
# shared between value and derivative, so XLA fuses the value into the mean.
_hinge_kernel = fusion.kernel(
    lambda s, y: _positive_part(_violation(s, y)),
    lambda s, y: -y * (_violation(s, y, fusion.opaque(1.0, s.dtype)) > 0).astype(s.dtype),
    lambda s, y: -s * (_violation(s, y, fusion.opaque(1.0, s.dtype)) > 0).astype(s.dtype),
    # the constant branch at the margin pins the gradient there to 0
    small=lambda s, y: jnp.where(_violation(s, y) > 0, _violation(s, y), 0.0),
)
_squared_hinge_kernel = fusion.kernel(
    lambda s, y: jnp.square(_positive_part(_violation(s, y))),
    lambda s, y: -2.0 * y * jnp.maximum(_violation(s, y, fusion.opaque(1.0, s.dtype)), 0.0),
    lambda s, y: -2.0 * s * jnp.maximum(_violation(s, y, fusion.opaque(1.0, s.dtype)), 0.0),
    small=lambda s, y: jnp.where(_violation(s, y) > 0, jnp.square(_violation(s, y)), 0.0),
)


def hinge(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: str = "mean",
) -> jax.Array:
    r"""Hinge loss of support vector machines: :math:`\max(0, 1 - y s)`.

    ``predictions`` are real scores :math:`s`, ``targets`` labels :math:`y \in \{-1, +1\}`
    (concrete labels outside raise ``ValueError``; {0, 1} labels are the classic silent bug,
    since a 0 label makes the loss constant 1). Zero once a sample is classified with margin 1.
    Gradient in :math:`s`: :math:`-y` inside the margin, 0 beyond it, pinned to 0 *at* the
    margin :math:`y s = 1` (``jnp.maximum`` would split it 0.5/0.5).

    >>> import jax.numpy as jnp, jloss
    >>> jloss.hinge(jnp.array([2.0, 0.5, -1.0]), jnp.array([1, 1, 1]), reduction="none")
    Array([0. , 0.5, 2. ], dtype=float32)

    Reference: Cortes & Vapnik, "Support-Vector Networks", Machine Learning 1995.
    """
    s, y, shape, mask, out_dtype = _signed_margin("hinge", predictions, targets, where, reduction)
    loss = jnp.broadcast_to(_hinge_kernel(s, y), shape)
    return red.reduce_loss("hinge", loss, weights=weights, mask=mask, reduction=reduction, out_dtype=out_dtype)


def squared_hinge(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: str = "mean",
) -> jax.Array:
    r"""Squared hinge loss (L2-SVM): :math:`\max(0, 1 - y s)^2`.

    Labels :math:`y \in \{-1, +1\}` as for :func:`hinge`. Differentiable everywhere; gradient
    :math:`-2y\max(0, 1 - ys)`, which is 0 at the margin.

    >>> import jax.numpy as jnp, jloss
    >>> jloss.squared_hinge(jnp.array([2.0, 0.5, -1.0]), jnp.array([1, 1, 1]), reduction="none")
    Array([0.  , 0.25, 4.  ], dtype=float32)

    Reference: Rennie & Srebro 2005; ``sklearn.svm.LinearSVC(loss="squared_hinge")``.
    """
    s, y, shape, mask, out_dtype = _signed_margin("squared_hinge", predictions, targets, where, reduction)
    loss = jnp.broadcast_to(_squared_hinge_kernel(s, y), shape)
    return red.reduce_loss("squared_hinge", loss, weights=weights, mask=mask, reduction=reduction, out_dtype=out_dtype)


def _augmented_scores(s, labels):
    """s_j + [j != y] and the one-hot of y."""
    onehot = (labels[..., None] == jnp.arange(s.shape[-1], dtype=labels.dtype)).astype(s.dtype)
    return s + (1.0 - onehot), onehot


# max_j (s_j + [j != y]) - s_y with the derivative onehot(j*) - onehot(y), j* the first maximiser,
# and 0 once the loss is 0 (at the margin too, where j* ties with y). Explicit, so the backward
# pass is one elementwise pass over the scores rather than autodiff's scatter of the max.
@jax.custom_jvp
def _multiclass_hinge(s: jax.Array, labels: jax.Array) -> jax.Array:
    v, onehot = _augmented_scores(s, labels)
    # One variadic reduction (max of v, sum picking s_y): XLA fuses the one-hot's compare into it,
    # where two separate reductions would first write v and the one-hot out in full.
    top, true_score = jax.lax.reduce(
        (v, s * onehot),
        (jnp.array(-jnp.inf, s.dtype), jnp.array(0, s.dtype)),
        lambda a, b: (jnp.maximum(a[0], b[0]), a[1] + b[1]),
        (s.ndim - 1,),
    )
    return top - true_score


@_multiclass_hinge.defjvp
def _multiclass_hinge_jvp(primals, tangents):
    s, labels = primals
    s_dot = tangents[0]
    value = _multiclass_hinge(s, labels)
    v, onehot = _augmented_scores(s, labels)
    top = (jnp.argmax(v, axis=-1)[..., None] == jnp.arange(s.shape[-1])).astype(s.dtype)
    g = (top - onehot) * (value > 0).astype(s.dtype)[..., None]
    return value, jnp.sum(g * s_dot, axis=-1)


def multiclass_hinge(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: str = "mean",
) -> jax.Array:
    r"""Crammer-Singer multi-class hinge loss.

    .. math:: \ell(s, y) = \max_j \bigl(s_j + [j \ne y]\bigr) - s_y
        = \max\bigl(0, \max_{j \ne y} s_j + 1 - s_y\bigr)

    ``predictions`` are scores of shape ``(..., C)``, ``targets`` integer class ids of shape
    ``(...)`` (concrete ids outside ``[0, C)`` raise ``ValueError``). Zero once the true class
    beats every other by a margin of 1; the gradient is pinned to 0 at that margin.

    >>> import jax.numpy as jnp, jloss
    >>> float(jloss.multiclass_hinge(jnp.array([[2.0, 0.5, 1.5]]), jnp.array([2])))
    1.5

    Reference: Crammer & Singer, "On the Algorithmic Implementation of Multiclass Kernel-based
    Vector Machines", JMLR 2001. Agrees with ``optax.losses.multiclass_hinge_loss``.
    """
    name = "multiclass_hinge"
    predictions, out_dtype, _ = _prologue(name, predictions, reduction)
    targets = jnp.asarray(targets)
    if not jnp.issubdtype(targets.dtype, jnp.integer):
        raise TypeError(f"{name}: targets must be integer class ids, got dtype {targets.dtype}.")
    _, shape = _class_targets(name, predictions, targets, where)
    mask = red.prepare_mask(name, where, shape)
    s = red.mask_input(predictions, mask, trailing=1)
    labels = red.mask_input(targets, mask)
    loss = jnp.broadcast_to(_multiclass_hinge(s, labels), shape)
    return red.reduce_loss(name, loss, weights=weights, mask=mask, reduction=reduction, out_dtype=out_dtype)
