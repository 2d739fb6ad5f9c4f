r"""Exact fits of linear models under piecewise-linear losses, with an optimality certificate.

A gradient-norm tolerance means nothing at a kink: the mean absolute error of a linear model is
minimised *at* a kink (the LAD solution interpolates ``p`` of the samples), where the gradient
does not exist and every first-order step overshoots, so ``jloss.minimize`` with ``tol`` on such
a loss ends on "max_steps reached", some way from the optimum. :func:`solve` reaches the exact
optimum of

.. math:: F(\theta) = \frac{1}{n}\sum_{i=1}^n \ell(x_i^\top w + b,\ y_i) + \tfrac{\lambda}{2}\lVert w\rVert^2,
    \qquad \theta = (w, b),

for ``mae``, ``quantile``, ``epsilon_insensitive`` and ``hinge`` (:data:`SUPPORTED`; ``l2`` =
:math:`\lambda \ge 0`, so the L2-regularised SVM too), and says so with
``Status.OPTIMAL`` only when it has checked the optimality conditions. All in one compiled
program (``jax.jit``; the data is closed over, not carried).

**1. One form for all four.** With the residual :math:`r = x^\top w + b - y` (for the hinge
:math:`r = s - y` with labels :math:`y = \pm 1`), each loss is a sum of absolute values:

=========================  ==========================================  =====================
loss                       :math:`\ell(r)`                             kinks :math:`k_j`
=========================  ==========================================  =====================
``mae``                    :math:`|r|`                                 0
``quantile`` (tau)         :math:`\tfrac12|r| - (\tau - \tfrac12) r`  0
``epsilon_insensitive``    :math:`\tfrac12|r - \epsilon| + \tfrac12|r + \epsilon| - \epsilon`   :math:`\pm\epsilon`
``hinge``                  :math:`\tfrac12|r| - \tfrac12 y r`           0 (the margin)
=========================  ==========================================  =====================

so :math:`F(\theta) = \sum_{m} c_m |a_m^\top\theta - t_m| + g^\top\theta + \tfrac{\lambda}{2}
\theta^\top D\theta + \text{const}` over the rows :math:`m = (i, j)` (one per sample and kink).

**2. Smoothing continuation.** Every :math:`|x|` is replaced by its Moreau envelope
:math:`H_\mu(x) = \operatorname{huber}(x, \mu)/\mu` (within :math:`\mu/2` of :math:`|x|`,
smooth), and the smooth objective is minimised by ``optax.lbfgs`` through
:func:`jloss.minimize`, warm-started from the previous stage, with :math:`\mu` shrinking by
``shrink`` per stage.

**3. Active-set polish** (the finite smoothing idea of Madsen & Nielsen, "A finite smoothing
algorithm for linear l1 estimation", SIAM J. Optim. 1993). Once :math:`\mu` is small, the rows
whose smoothed residual lies in the quadratic zone :math:`|e_m| \le \mu` are the rows at a kink
at the optimum, and the signs of the others are those of the optimum. On that set
:math:`Z` the optimality (KKT) conditions are *linear*:

.. math:: \lambda D\theta + \sum_{m \in Z} c_m u_m a_m = -q,\qquad a_m^\top\theta = t_m\ (m \in Z),
    \qquad q = g + \sum_{m \notin Z} c_m \operatorname{sign}(e_m)\, a_m,

a square system of size :math:`p + |Z|` (the candidates are the :math:`p` rows nearest a
kink), solved by least squares. Its solution is the exact optimum, not an approximation that
improves with :math:`\mu`.

**4. Certificate.** At the polished :math:`\theta^*` the subgradient
:math:`G = \lambda D\theta^* + \sum_m c_m u_m a_m + g` is formed with :math:`u_m =
\operatorname{sign}(e^*_m)` off the set and the solved multipliers clipped to :math:`[-1, 1]` on
it (a valid subgradient choice), and the run stops with ``Status.OPTIMAL`` when
:math:`\lVert G\rVert_\infty \le \mathrm{tol}\cdot s`, :math:`s` the size of a typical
gradient term. A wrong guess of the set can only fail this test (it checks the real
subdifferential at :math:`\theta^*`), so the status is honest; ``Result.grad_norm`` is
:math:`\lVert G\rVert_2`, the norm of the certified subgradient. A run that does not certify
within ``max_stages`` ends on ``Status.MAX_STEPS`` with whichever of the last smoothed and the
last polished parameters has the lower exact objective.

Why not the alternatives: IRLS and proximal/subgradient methods converge to the optimum only in
the limit (sublinearly for subgradient steps), so they meet a 1e-7 objective / 1e-5 coefficient
target only after many steps, and cannot say when they are there; an LP solver (HiGHS, as in
``sklearn.linear_model.QuantileRegressor``) is exact but leaves JAX. Here the smooth stages do the
work that L-BFGS is good at, and one small linear solve finishes it.

>>> import numpy as np, jloss
>>> from jloss import nonsmooth
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(200, 2)).astype(np.float32)
>>> y = X @ np.float32([1.0, -2.0]) + 0.5 + rng.standard_cauchy(200).astype(np.float32)
>>> res = nonsmooth.solve(X, y, "mae")
>>> res.message
'converged: optimality certified at the kinks (subgradient conditions hold to tol)'
>>> int(np.sum(np.abs(X @ res.params["w"] + res.params["b"] - y) < 1e-4))  # p = 3 rows interpolated
3
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jloss import checks, registry
from jloss.minimize import Result, Status, minimize
from jloss.regression import huber

__all__ = ["SUPPORTED", "solve", "default_tol"]

#: The losses :func:`solve` fits exactly (each a sum of absolute values of the residual).
SUPPORTED = ("epsilon_insensitive", "hinge", "mae", "quantile")

_LBFGS = optax.lbfgs()  # one object: it is part of minimize's compiled-program cache key


def default_tol(dtype: Any) -> float:
    """The certificate's default relative tolerance: 1e-9 in float64, 1e-4 in float32.

    The polished optimum is exact up to round-off in the linear solve and in the sum that forms
    the subgradient (about ``sqrt(n) * eps`` relative), so the test needs that much slack.
    """
    return 1e-9 if jnp.dtype(dtype) == jnp.float64 else 1e-4


def _form(loss: str, hyper: jax.Array, y: jax.Array) -> tuple[jax.Array, ...]:
    """The loss's absolute-value form: kinks k_j, weights alpha_j, per-sample linear coefficients
    beta_i and the constant gamma, with loss(r) = sum_j alpha_j |r - k_j| + beta_i r + gamma."""
    zero, one, half = (jnp.asarray(v, y.dtype) for v in (0.0, 1.0, 0.5))
    if loss == "mae":
        return zero[None], one[None], jnp.zeros_like(y), zero
    if loss == "quantile":
        return zero[None], half[None], jnp.full_like(y, -(hyper - 0.5)), zero
    if loss == "epsilon_insensitive":
        return jnp.stack([hyper, -hyper]), jnp.stack([half, half]), jnp.zeros_like(y), -hyper
    if loss == "hinge":
        return zero[None], half[None], -0.5 * y, zero
    raise AssertionError(loss)  # checked by solve


def _check(loss: str, X: Any, y: Any, hyperparameter: Any, l2: Any) -> tuple[jax.Array, jax.Array, Any]:
    if loss not in SUPPORTED:
        raise ValueError(
            f"nonsmooth.solve: loss {loss!r} is not piecewise linear in the residual; supported: "
            f"{', '.join(SUPPORTED)} (fit smooth losses with jloss.minimize and optax.lbfgs)"
        )
    X = checks.check_floating("nonsmooth.solve", "X", X)
    if X.ndim != 2 or X.shape[0] < 1:
        raise ValueError(f"nonsmooth.solve: X must be a (n, d) matrix with n >= 1, got shape {X.shape}")
    y = jnp.asarray(y)
    if y.shape != X.shape[:1]:
        raise ValueError(f"nonsmooth.solve: y must have shape ({X.shape[0]},) like X's rows, got {y.shape}")
    y = y.astype(X.dtype)
    info = registry.info(loss)
    hyper = info.default if hyperparameter is None else hyperparameter
    # the loss checks its own hyperparameter and labels (hinge: -1/+1), with its own messages
    args = (hyper,) if info.hyperparameter else ()
    info.fn(jnp.zeros_like(y), y, *args)
    l2_value = checks.concrete_value(l2)
    if l2_value is not None and not (np.all(np.isfinite(l2_value)) and np.all(l2_value >= 0)):
        raise ValueError(f"nonsmooth.solve: l2 must be a finite number >= 0, got {l2_value}")
    return X, y, jnp.asarray(0.0 if hyper is None else hyper, X.dtype)


def solve(
    X: Any,
    y: Any,
    loss: str = "mae",
    hyperparameter: Any = None,
    *,
    l2: Any = 0.0,
    init: Any = None,
    tol: Any = None,
    max_stages: int = 12,
    stage_steps: int = 200,
    shrink: float = 0.1,
) -> Result:
    r"""The exact minimiser of the mean piecewise-linear ``loss`` of ``X @ w + b`` (+ ½ l2 |w|²).

    Args:
      X: ``(n, d)`` floating features. The fit runs in their dtype (use float64, with
        ``jax.config.update("jax_enable_x64", True)``, for a certificate near 1e-9; float32
        certifies to about 1e-4 relative).
      y: ``(n,)`` targets (labels -1/+1 for ``hinge``).
      loss: one of :data:`SUPPORTED`.
      hyperparameter: the loss's (quantile ``tau``, ``epsilon``); its default when None. May be
        traced.
      l2: L2 penalty :math:`\lambda \ge 0` on ``w`` (not on ``b``). May be traced.
      init: starting ``{"w", "b"}``; default zeros and the median target as intercept.
      tol: relative tolerance of the certificate (see the module docstring); default
        :func:`default_tol` of the dtype. May be traced.
      max_stages: smoothing stages at most (a Python int >= 1); each shrinks :math:`\mu`.
      stage_steps: L-BFGS steps per stage at most (a Python int >= 1).
      shrink: the factor that multiplies :math:`\mu` after each stage, in (0, 1).

    Returns:
      a :class:`jloss.Result`: ``params = {"w": (d,), "b": ()}``, ``loss`` the exact objective
      there, ``grad_norm`` the norm of the certified subgradient, ``steps`` the L-BFGS steps of
      all stages, ``status`` ``Status.OPTIMAL`` once certified (else ``MAX_STEPS``, or
      ``NONFINITE`` on non-finite data), ``history`` the exact objective after each stage
      (NaN for stages not run), ``opt_state`` None.

    Composes with ``jax.jit`` (``loss``, ``max_stages``, ``stage_steps`` and ``shrink`` static)
    and ``jax.vmap`` (for instance over ``tau``).
    """
    X, y, hyper = _check(loss, X, y, hyperparameter, l2)
    if not (isinstance(max_stages, int) and max_stages >= 1):
        raise ValueError(f"nonsmooth.solve: max_stages must be an int >= 1, got {max_stages!r}")
    if not (isinstance(stage_steps, int) and stage_steps >= 1):
        raise ValueError(f"nonsmooth.solve: stage_steps must be an int >= 1, got {stage_steps!r}")
    if not (isinstance(shrink, (int, float)) and 0 < shrink < 1):
        raise ValueError(f"nonsmooth.solve: shrink must be a number in (0, 1), got {shrink!r}")
    tol = default_tol(X.dtype) if tol is None else tol
    tol_value = checks.concrete_value(tol)
    if tol_value is not None and not (np.isfinite(tol_value) and tol_value >= 0):
        raise ValueError(f"nonsmooth.solve: tol must be a number >= 0, got {tol_value}")
    if init is None:
        init = {"w": jnp.zeros(X.shape[1], X.dtype), "b": jnp.median(y)}
    init = {"w": jnp.asarray(init["w"], X.dtype), "b": jnp.asarray(init["b"], X.dtype)}
    if init["w"].shape != X.shape[1:] or init["b"].shape != ():
        raise ValueError(
            f"nonsmooth.solve: init must be {{'w': ({X.shape[1]},), 'b': ()}}, got "
            f"{{'w': {init['w'].shape}, 'b': {init['b'].shape}}}"
        )
    # One compiled program per number of kinks (1, or 2 for epsilon_insensitive), shape and
    # dtype: the loss enters as the arrays of its form, so mae, quantile and hinge share it.
    return _solve(max_stages, stage_steps, float(shrink), X, y, _form(loss, hyper, y),
                  jnp.asarray(l2, X.dtype), jnp.asarray(tol, X.dtype), init)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _solve(max_stages, stage_steps, shrink, X, y, form, l2, tol, init) -> Result:
    n, d = X.shape
    dtype = X.dtype
    A = jnp.concatenate([X, jnp.ones((n, 1), dtype)], axis=1)  # rows a_i = (x_i, 1)
    p = d + 1
    k, alpha, beta, gamma = form
    J = k.shape[0]
    P = min(p, n * J)  # candidate rows for the kink set
    D = jnp.concatenate([jnp.ones(d, dtype), jnp.zeros(1, dtype)])  # the penalty spares b

    def theta(params):
        return jnp.concatenate([params["w"], params["b"][None]])

    def unpack(t):
        return {"w": t[:d], "b": t[d]}

    def kink_residuals(t):  # e_ij = a_i.t - y_i - k_j, shape (n, J)
        return (A @ t - y)[:, None] - k[None, :]

    def exact(t):  # the objective itself (tests check it against the loss functions)
        r = A @ t - y
        e = r[:, None] - k[None, :]
        return jnp.mean(jnp.abs(e) @ alpha + beta * r) + gamma + 0.5 * l2 * jnp.sum(jnp.square(t[:d]))

    def smooth(params, mu):
        t = theta(params)
        r = A @ t - y
        e = r[:, None] - k[None, :]
        h = jnp.sum(alpha * huber(e, 0.0, mu, reduction="none"), axis=1) / mu
        return jnp.mean(h + beta * r) + 0.5 * l2 * jnp.sum(jnp.square(params["w"]))

    def subgradient(t, u):  # (1/n) A^T (sum_j alpha_j u_ij + beta_i) + l2 D t
        return A.T @ (u @ alpha + beta) / n + l2 * D * t

    # the size of one gradient term, to make the certificate's test relative
    row_size = jnp.max(jnp.abs(A), axis=1)
    scale = jnp.mean(row_size * (jnp.sum(alpha) + jnp.abs(beta)))
    # A smoothed stage is solved far enough when its gradient is this small. Its curvature is
    # that of the ~p rows in the quadratic zone, c/mu each (c ~ 1/n), so the error a gradient g
    # leaves in the residuals is ~ g mu n / p: a fixed fraction of mu for g ~ scale p / n. (The
    # factor was tuned on 36 problems, n up to 20,000: 1e-3 misses some in float64, 1e-4 none.)
    stage_tol = (1e-4 if dtype == jnp.float64 else 1e-3) * scale * p / n

    def polish(t, mu, all_candidates):
        e = kink_residuals(t)
        flat = jnp.abs(e).ravel()
        _, idx = lax.top_k(-flat, P)
        # the rows in the quadratic zone, or (a second guess, right for a nondegenerate problem
        # without penalty, where exactly p rows sit at kinks) all p candidates
        ok = (flat[idx] <= mu) | all_candidates
        rows, kinks = idx // J, idx % J
        in_set = jnp.zeros(n * J, bool).at[idx].set(ok).reshape(n, J)
        s = jnp.where(in_set, 0.0, jnp.sign(e)).astype(dtype)
        q = subgradient(jnp.zeros_like(t), s)  # g + sum over rows off the set (no penalty yet)
        okf = ok.astype(dtype)
        B = A[rows] * okf[:, None]
        tz = (y[rows] + k[kinks]) * okf
        c = alpha[kinks] / n
        M = jnp.block([[jnp.diag(l2 * D), B.T * c[None, :]], [B, jnp.diag(1.0 - okf)]])
        sol = jnp.linalg.lstsq(M, jnp.concatenate([-q, tz]))[0]
        t_star, u_set = sol[:p], jnp.clip(sol[p:], -1.0, 1.0)
        # the certificate: a valid subgradient choice at t_star, and its size
        u = jnp.sign(kink_residuals(t_star)).ravel()
        u = u.at[idx].set(jnp.where(ok, u_set, u[idx])).reshape(n, J)
        G = subgradient(t_star, u)
        measure = jnp.max(jnp.abs(G)) / (scale + l2 * jnp.max(jnp.abs(t_star[:d]), initial=0.0) + jnp.finfo(dtype).tiny)
        return t_star, G, measure

    t0 = theta(init)
    mu0 = jnp.maximum(jnp.mean(jnp.abs(kink_residuals(t0))), jnp.finfo(dtype).eps * (1.0 + jnp.max(jnp.abs(y))))
    nan = jnp.asarray(jnp.nan, dtype)

    def cond(c):
        return (c["stage"] < max_stages) & ~c["done"]

    def body(c):
        res = minimize(smooth, unpack(c["t"]), _LBFGS, args=(c["mu"],), max_steps=stage_steps,
                       tol=stage_tol, history=False)
        t_mu = theta(res.params)
        guesses = [polish(t_mu, c["mu"], flag) for flag in (False, True)]
        (t_a, G_a, m_a), (t_b, G_b, m_b) = guesses
        pick_b = m_b < m_a
        t_star, G, measure = (jnp.where(pick_b, b, a) for a, b in ((t_a, t_b), (G_a, G_b), (m_a, m_b)))
        f_mu, f_star = exact(t_mu), exact(t_star)
        certified = (measure <= tol) & jnp.isfinite(f_star)
        better = certified | (jnp.isfinite(f_star) & (f_star <= f_mu))
        best = jnp.where(better, t_star, t_mu)
        f_best = jnp.where(better, f_star, f_mu)
        keep = certified | (f_best <= c["f"]) | ~jnp.isfinite(c["f"])  # never return worse than an earlier stage
        return {
            "t": t_mu,
            "mu": c["mu"] * shrink,
            "stage": c["stage"] + 1,
            "done": certified | ~jnp.isfinite(f_mu),
            "certified": certified,
            "best": jnp.where(keep, best, c["best"]),
            "f": jnp.where(keep, f_best, c["f"]),
            "G": jnp.where(keep, G, c["G"]),
            "steps": c["steps"] + res.steps,
            "history": c["history"].at[c["stage"]].set(f_best),
        }

    init_carry = {
        "t": t0, "mu": mu0, "stage": jnp.int32(0), "done": jnp.bool_(False), "certified": jnp.bool_(False),
        "best": t0, "f": exact(t0), "G": jnp.full(p, nan), "steps": jnp.int32(0),
        "history": jnp.full(max_stages, nan),
    }
    out = lax.while_loop(cond, body, init_carry)
    finite = jnp.isfinite(out["f"]) & jnp.all(jnp.isfinite(out["best"]))
    status = jnp.where(out["certified"], Status.OPTIMAL, jnp.where(finite, Status.MAX_STEPS, Status.NONFINITE))
    return Result(
        params=unpack(out["best"]),
        loss=out["f"],
        grad_norm=jnp.linalg.norm(out["G"]),
        steps=out["steps"],
        total_steps=out["steps"],
        converged=out["certified"],
        status=status.astype(jnp.int32),
        history=out["history"],
        opt_state=None,
    )
