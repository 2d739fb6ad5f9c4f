r"""Regression losses: elementwise functions of the residual :math:`r = \hat y - y`.

Every function here has the signature::

    loss(predictions, targets, [hyperparameter], *, weights=None, where=None, reduction="mean")

``predictions`` must be floating; ``targets`` may be any real dtype and broadcasts against it.
The per-sample loss has the broadcast shape of predictions, targets and the hyperparameter;
``weights``, ``where`` and ``reduction`` follow :mod:`jloss.reduction`. Hyperparameters may be
Python numbers or (traced) arrays, so ``jax.vmap`` over a batch of deltas and ``jax.grad`` with
respect to delta both work. Kinks have pinned gradients, stated per loss.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jloss import checks, fusion, reduction as red


# |r| with derivative sign(r): exactly 0 at r == 0 (``jax.grad(jnp.abs)(0.)`` is 1).
_abs = fusion.kernel(jnp.abs, jnp.sign)


def _elementwise(
    name: str,
    kernel: Callable[..., jax.Array],
    predictions: ArrayLike,
    targets: ArrayLike,
    hyper: dict[str, jax.Array],
    weights: ArrayLike,
    where: ArrayLike,
    reduction: str,
) -> jax.Array:
    """Shared driver: checks, dtype policy, the double-where mask, then the reduction."""
    checks.check_reduction(name, reduction)
    predictions = checks.check_floating(name, "predictions", predictions)
    targets = jnp.asarray(targets)
    if not (jnp.issubdtype(targets.dtype, jnp.floating) or jnp.issubdtype(targets.dtype, jnp.integer)):
        raise TypeError(f"{name}: targets must be real numbers, got dtype {targets.dtype}.")
    out_dtype = red.result_dtype(predictions, targets)
    dtype = red.compute_dtype(out_dtype)
    shape = checks.broadcast_shapes(
        name,
        predictions=predictions.shape,
        targets=targets.shape,
        **{k: v.shape for k, v in hyper.items()},
    )
    mask = red.prepare_mask(name, where, shape)
    predictions = red.mask_input(predictions.astype(dtype), mask)
    targets = red.mask_input(targets.astype(dtype), mask)
    hyper = {k: v.astype(dtype) for k, v in hyper.items()}
    loss = kernel(predictions - targets, **hyper)
    loss = jnp.broadcast_to(loss, shape)
    return red.reduce_loss(name, loss, weights=weights, mask=mask, reduction=reduction, out_dtype=out_dtype)


def _positive(name: str, argname: str, value: ArrayLike) -> jax.Array:
    return checks.check_hyperparameter(name, argname, value, lambda v: v > 0, "> 0")


def mse(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: str = "mean",
) -> jax.Array:
    r"""Mean squared error, :math:`\ell(r) = r^2`.

    Shapes: predictions and targets broadcast to the per-sample shape. Domain: all reals.
    Gradient: :math:`2r`, smooth everywhere. Note there is no factor 1/2 (``optax.l2_loss``
    has one; ``optax.squared_error`` matches this).

    >>> import jax.numpy as jnp, jloss
    >>> float(jloss.mse(jnp.array([1.0, 2.0]), jnp.array([0.0, 0.0])))
    2.5

    Reference: Gauss (1809), least squares; ``torch.nn.functional.mse_loss``.
    """
    return _elementwise("mse", jnp.square, predictions, targets, {}, weights, where, reduction)


def mae(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: str = "mean",
) -> jax.Array:
    r"""Mean absolute error, :math:`\ell(r) = |r|`.

    Robust to outliers: every residual pulls with the same force. The minimiser of the mean is
    the median. Gradient: :math:`\operatorname{sign}(r)`, pinned to exactly 0 at :math:`r = 0`
    (``jax.grad(jnp.abs)(0.)`` is 1, a biased subgradient).

    >>> import jax.numpy as jnp, jloss
    >>> float(jloss.mae(jnp.array([1.0, -3.0]), jnp.array([0.0, 0.0])))
    2.0

    Reference: Laplace (1774); ``torch.nn.functional.l1_loss``.
    """
    return _elementwise("mae", _abs, predictions, targets, {}, weights, where, reduction)


# 0.5 q^2 + delta (|r| - q) with q = min(|r|, delta): select-free, and nothing large is squared.
# Gradient clip(r, -delta, delta): continuous at |r| == delta, 0 at r == 0. In delta: |r| - q.
# The small form selects the quadratic branch where |r| <= delta (an unselected inf gets a zero
# cotangent, so gradients stay finite); at |r| == delta that gives the same +-delta.
_huber_kernel = fusion.kernel(
    lambda r, delta: _huber_value(jnp.abs(r), jnp.minimum(jnp.abs(r), delta), delta),
    lambda r, delta: jnp.clip(r, -delta, delta),
    lambda r, delta: jnp.abs(r) - jnp.minimum(jnp.abs(r), delta),
    small=lambda r, delta: jnp.where(jnp.abs(r) <= delta, 0.5 * r * r, delta * (jnp.abs(r) - 0.5 * delta)),
)


def _huber_value(a: jax.Array, q: jax.Array, delta: jax.Array) -> jax.Array:
    return q * (0.5 * q) + delta * (a - q)


def huber(
    predictions: ArrayLike,
    targets: ArrayLike,
    delta: ArrayLike = 1.0,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: str = "mean",
) -> jax.Array:
    r"""Huber loss: quadratic near zero, linear beyond ``delta``.

    .. math::
        \ell_\delta(r) = \begin{cases} \tfrac12 r^2 & |r| \le \delta \\
        \delta\,(|r| - \tfrac12\delta) & |r| > \delta \end{cases}

    The optax/PyTorch convention (``optax.huber_loss``, ``torch.nn.HuberLoss``); it tends to
    :math:`\tfrac12 r^2` as :math:`\delta \to \infty` and to :math:`\delta |r|` as
    :math:`\delta \to 0`. Computed as :math:`\tfrac12 q^2 + \delta(|r| - q)` with
    :math:`q = \min(|r|, \delta)`, so nothing large is squared: finite for :math:`|r|` up to
    1e30 in float32. Domain: ``delta > 0`` (a concrete ``delta <= 0`` raises ``ValueError``);
    ``delta`` may be a traced array broadcasting against the per-sample loss.
    Gradient: :math:`\operatorname{clip}(r, -\delta, \delta)`, continuous at :math:`|r| = \delta`
    (equal to :math:`\pm\delta` there) and 0 at :math:`r = 0`. Derivative in ``delta``:
    :math:`|r| - \delta` beyond delta, else 0.

    >>> import jax.numpy as jnp, jloss
    >>> jloss.huber(jnp.array([0.5, 3.0]), jnp.zeros(2), 1.0, reduction="none")
    Array([0.125, 2.5  ], dtype=float32)

    Reference: P. J. Huber, "Robust Estimation of a Location Parameter", Ann. Math. Statist. 1964.
    """
    delta = _positive("huber", "delta", delta)
    return _elementwise("huber", _huber_kernel, predictions, targets, {"delta": delta}, weights, where, reduction)


def _pseudo_huber_parts(r: jax.Array, delta: jax.Array, one: Any = 1.0, big: Any = 1e18):
    # z = |r| / delta clamped at 1e18 (z^2 stays finite in float32) and s = sqrt(1 + z^2). Beyond
    # the clamp z / (s + 1) and z / s are 1 to float64 precision, which is all the callers use.
    z = jnp.minimum(jnp.abs(r) * (one / delta), big)
    return z, jnp.sqrt(one + z * z)


def _pseudo_huber_value(r, delta):
    # delta^2 (s - 1) = delta |r| * z / (s + 1): free of cancellation near 0, finite far out, and
    # select-free, so XLA fuses it into the reduction.
    z, s = _pseudo_huber_parts(r, delta)
    return delta * jnp.abs(r) * (z / (s + 1.0))


def _pseudo_huber_grad_r(r, delta):
    # delta z / s with the sign of r: r / sqrt(1 + (r / delta)^2), tending to +-delta.
    one, big = fusion.opaque(1.0, r.dtype), fusion.opaque(1e18, r.dtype)
    z = jnp.clip(r * (one / delta), -big, big)
    return delta * z * jax.lax.rsqrt(one + z * z)


def _pseudo_huber_grad_delta(r, delta):
    # 2 delta (s - 1) - delta z^2 / s = |r| (z / s) (z / (s + 1))^2 (using s - 1 = z^2 / (s + 1)):
    # every factor but |r| is at most 1, so nothing overflows; far out it tends to |r| - 2 delta.
    one = fusion.opaque(1.0, r.dtype)
    z, s = _pseudo_huber_parts(r, delta, one, fusion.opaque(1e18, r.dtype))
    w = z / (s + one)
    return jnp.abs(r) * (z / s) * w * w


_pseudo_huber_kernel = fusion.kernel(_pseudo_huber_value, _pseudo_huber_grad_r, _pseudo_huber_grad_delta)


def pseudo_huber(
    predictions: ArrayLike,
    targets: ArrayLike,
    delta: ArrayLike = 1.0,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: str = "mean",
) -> jax.Array:
    r"""Pseudo-Huber loss, a smooth Huber: :math:`\delta^2(\sqrt{1 + (r/\delta)^2} - 1)`.

    About :math:`\tfrac12 r^2` near zero and :math:`\delta|r|` far out; infinitely differentiable.
    Evaluated as :math:`r^2 / (\sqrt{1 + (r/\delta)^2} + 1)` (no cancellation, no overflow).
    Domain: ``delta > 0`` (concrete ``delta <= 0`` raises ``ValueError``). Gradient:
    :math:`r / \sqrt{1 + (r/\delta)^2}`, no kinks.

    >>> import jax.numpy as jnp, jloss
    >>> round(float(jloss.pseudo_huber(jnp.array([3.0]), jnp.zeros(1), 4.0)), 4)
    4.0

    Reference: Charbonnier et al., "Two deterministic half-quadratic regularization algorithms",
    ICIP 1994; Hartley & Zisserman, Multiple View Geometry, A6.8.
    """
    delta = _positive("pseudo_huber", "delta", delta)
    return _elementwise(
        "pseudo_huber", _pseudo_huber_kernel, predictions, targets, {"delta": delta}, weights, where, reduction
    )


def _log_cosh_value(r):
    # log cosh a = log1p(cosh a - 1) with cosh a - 1 = m^2 / (2 (m + 1)), m = expm1(a): accurate
    # to a few ulp at every a (|r| + log1p(exp(-2|r|)) - log 2, optax's form, cancels: 100%
    # error at |r| = 1e-4 in float32). Beyond a = c, log cosh a = log cosh c + (a - c) to within
    # exp(-2c) (below float precision; c keeps m^2 finite: 5 in float16, 20 otherwise). min is
    # select-free, so XLA fuses it into the reduction; the derivative is the kernel's tanh.
    c = 5.0 if jnp.finfo(r.dtype).max < 1e5 else 20.0
    a = jnp.abs(r)
    t = jnp.minimum(a, c)
    m = jnp.expm1(t)
    return jnp.log1p(m * m / (2.0 * (m + 1.0))) + (a - t)


_log_cosh_kernel = fusion.kernel(_log_cosh_value, jnp.tanh)


def log_cosh(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: str = "mean",
) -> jax.Array:
    r"""Log-cosh loss, :math:`\ell(r) = \log\cosh r`.

    About :math:`\tfrac12 r^2` near zero and :math:`|r| - \log 2` far out. Evaluated as
    :math:`\operatorname{log1p}\big(m^2 / (2(m + 1))\big)` with :math:`m = \operatorname{expm1}|r|`
    (that is :math:`\log(1 + (\cosh r - 1))`), plus :math:`|r| - c` beyond :math:`|r| = c = 20`
    (5 in float16): a few ulp of relative error at every :math:`r`, finite for any finite
    :math:`r`. (A naive ``log(cosh(r))`` overflows at :math:`|r| \approx 89` in float32, and
    optax's :math:`|r| + \log(1 + e^{-2|r|}) - \log 2` cancels for small :math:`r`: it returns 0 at
    :math:`r = 10^{-4}` in float32, where the loss is :math:`5 \cdot 10^{-9}`.) Gradient:
    :math:`\tanh r`, smooth.

    >>> import jax.numpy as jnp, jloss
    >>> round(float(jloss.log_cosh(jnp.array([1000.0]), jnp.zeros(1))), 3)
    999.307

    Reference: ``optax.log_cosh``; Saleh & Saleh, "Statistical properties of the log-cosh
    loss function used in machine learning", 2022.
    """
    return _elementwise("log_cosh", _log_cosh_kernel, predictions, targets, {}, weights, where, reduction)


# max(-tau r, (1 - tau) r), with the gradient in r pinned to 0 at r == 0 (autodiff of maximum
# would give 0.5 - tau there). In tau: -r.
_quantile_kernel = fusion.kernel(
    lambda r, tau: jnp.maximum(-tau * r, (1.0 - tau) * r),
    lambda r, tau: jnp.where(r > 0, 1.0 - tau, jnp.where(r < 0, -tau, 0.0)),
    lambda r, tau: -r,
    # the outer where selects a constant at r == 0, which pins the gradient there to 0
    small=lambda r, tau: jnp.where(r == 0, 0.0, r * jnp.where(r < 0, -tau, 1.0 - tau)),
)


def quantile(
    predictions: ArrayLike,
    targets: ArrayLike,
    tau: ArrayLike = 0.5,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: str = "mean",
) -> jax.Array:
    r"""Quantile (pinball) loss at level ``tau``.

    With :math:`u = y - \hat y = -r`:

    .. math:: \ell_\tau(u) = \begin{cases} \tau u & u \ge 0 \\ (\tau - 1) u & u < 0 \end{cases}

    Under-prediction costs :math:`\tau` per unit, over-prediction :math:`1 - \tau`; the
    minimiser of the mean is the :math:`\tau`-quantile, and ``tau=0.5`` is half the MAE.
    Domain: ``0 <= tau <= 1`` (concrete values outside raise ``ValueError``). Gradient with
    respect to predictions: :math:`1 - \tau` for :math:`r > 0`, :math:`-\tau` for
    :math:`r < 0`, pinned to 0 at :math:`r = 0`.

    >>> import jax.numpy as jnp, jloss
    >>> jloss.quantile(jnp.array([0.0, 2.0]), jnp.array([1.0, 1.0]), 0.75, reduction="none")
    Array([0.75, 0.25], dtype=float32)

    Reference: Koenker & Bassett, "Regression Quantiles", Econometrica 1978.
    """
    tau = checks.check_hyperparameter("quantile", "tau", tau, lambda v: (v >= 0) & (v <= 1), "in [0, 1]")
    return _elementwise("quantile", _quantile_kernel, predictions, targets, {"tau": tau}, weights, where, reduction)


# max(|r| - epsilon, 0). Strict inequality in the gradient: on the tube's edge (and at r == 0 when
# epsilon == 0) it is pinned to 0.
_epsilon_insensitive_kernel = fusion.kernel(
    lambda r, epsilon: jnp.maximum(jnp.abs(r) - epsilon, 0.0),
    lambda r, epsilon: (r > epsilon).astype(r.dtype) - (r < -epsilon).astype(r.dtype),
    lambda r, epsilon: -((r > epsilon) | (r < -epsilon)).astype(r.dtype),
    small=lambda r, epsilon: jnp.where(jnp.abs(r) > epsilon, jnp.abs(r) - epsilon, 0.0),
)


def epsilon_insensitive(
    predictions: ArrayLike,
    targets: ArrayLike,
    epsilon: ArrayLike = 0.1,
    *,
    weights: ArrayLike | None = None,
    where: ArrayLike | None = None,
    reduction: str = "mean",
) -> jax.Array:
    r"""Epsilon-insensitive loss (support vector regression): :math:`\max(0, |r| - \epsilon)`.

    Residuals inside the tube :math:`|r| \le \epsilon` cost nothing. Domain: ``epsilon >= 0``
    (concrete negative values raise ``ValueError``). Gradient: :math:`\operatorname{sign}(r)`
    outside the tube, 0 inside, pinned to 0 on its edge :math:`|r| = \epsilon` and at
    :math:`r = 0`.

    >>> import jax.numpy as jnp, jloss
    >>> jloss.epsilon_insensitive(jnp.array([0.05, -0.5]), jnp.zeros(2), 0.1, reduction="none")
    Array([0. , 0.4], dtype=float32)

    Reference: V. Vapnik, The Nature of Statistical Learning Theory, 1995.
    """
    epsilon = checks.check_hyperparameter("epsilon_insensitive", "epsilon", epsilon, lambda v: v >= 0, ">= 0")
    return _elementwise(
        "epsilon_insensitive",
        _epsilon_insensitive_kernel,
        predictions,
        targets,
        {"epsilon": epsilon},
        weights,
        where,
        reduction,
    )
