"""Derivatives through jloss.minimize and jloss.sweep (jloss.differentiation) against closed
forms and central finite differences of re-solved problems, in float64."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jloss
from jloss.differentiation import Implicit, ImplicitDiffWarning, Unrolled, implicit_tangent

# Built once: optimizers and objectives are part of minimize's compilation cache key. Plain
# gradient descent compiles in a fraction of L-BFGS's time and converges linearly on these
# well-conditioned problems, to gradient norms of 1e-12 in float64.
GD = optax.sgd(0.5)
GD2 = optax.sgd(2.0)  # logistic regression: curvature <= 0.25 lambda_max(X'X/n) + lambda
ADAM = optax.adam(0.1)
TOL = 1e-12


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _regression(n=40, p=3, seed=0, outliers=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    y = X @ np.array([1.0, -2.0, 0.5])[:p] + 0.3 * rng.normal(size=n)
    y[:outliers] += 8.0
    return X, y


def central_difference(f, x, eps):
    return (f(x + eps) - f(x - eps)) / (2 * eps)


# ----------------------------------------------------------------------------------------------
# Ridge regression: closed forms
# ----------------------------------------------------------------------------------------------


def ridge(w, lam, X, y):
    return 0.5 * jnp.mean((X @ w - y) ** 2) + 0.5 * lam * jnp.sum(w**2)


def ridge_closed_form(lam, X, y):
    """w* = (X'X/n + lam I)^-1 X'y/n and dw*/dlam = -(X'X/n + lam I)^-1 w*."""
    n, p = X.shape
    A = X.T @ X / n + lam * np.eye(p)
    w = np.linalg.solve(A, X.T @ y / n)
    return w, -np.linalg.solve(A, w), A


def ridge_solve(lam, X, y, diff="implicit"):
    return jloss.minimize(ridge, jnp.zeros(3), GD, args=(lam, X, y), tol=TOL, diff=diff)


def ridge_out(lam, X, y):
    res = ridge_solve(lam, X, y)
    return res.params, res.loss


def ridge_closed_jax(lam, X, y):  # the formula, for JAX to differentiate through jnp.linalg.solve
    n = X.shape[0]
    return jnp.linalg.solve(X.T @ X / n + lam * jnp.eye(3), X.T @ y / n)


# One compiled program per transformation, shared by the tests below.
RIDGE_JACREV = jax.jit(jax.jacrev(ridge_out, argnums=(0, 1, 2)))
CLOSED_JACREV = jax.jit(jax.jacrev(ridge_closed_jax, argnums=(0, 1, 2)))


def test_ridge_derivative_in_lambda_matches_closed_form_forward_and_reverse():
    X, y = _regression()
    lam = 0.3
    w_star, dw, A = ridge_closed_form(lam, X, y)
    (w_fwd, loss_fwd) = jax.jit(jax.jacfwd(ridge_out))(lam, X, y)
    (w_rev, _, _), (loss_rev, _, _) = RIDGE_JACREV(lam, X, y)
    np.testing.assert_allclose(w_fwd, dw, rtol=1e-8)
    np.testing.assert_allclose(w_rev, dw, rtol=1e-8)
    # The loss by the envelope theorem: d/dlam min_w ridge = 0.5 |w*|^2 (no linear solve).
    assert float(loss_fwd) == pytest.approx(0.5 * w_star @ w_star, rel=1e-9)
    assert float(loss_rev) == pytest.approx(0.5 * w_star @ w_star, rel=1e-9)
    # Second derivative (the rule re-enters the custom solve): d2w/dlam2 = 2 A^-1 A^-1 w*.
    d2w = 2.0 * np.linalg.solve(A, np.linalg.solve(A, w_star))
    hess = jax.jit(jax.jacfwd(jax.jacrev(lambda l: ridge_solve(l, X, y).params)))(lam)
    np.testing.assert_allclose(hess, d2w, rtol=1e-7)


def test_ridge_derivative_in_the_data_matches_the_closed_form():
    X, y = _regression()
    lam = 0.3
    (_, jac_X, jac_y), _ = RIDGE_JACREV(lam, X, y)
    _, ref_X, ref_y = CLOSED_JACREV(lam, X, y)
    assert np.max(np.abs(ref_X)) > 0.01
    np.testing.assert_allclose(jac_X, ref_X, rtol=1e-7, atol=1e-11)
    np.testing.assert_allclose(jac_y, ref_y, rtol=1e-7, atol=1e-11)


def test_sweep_jacobian_in_the_grid_and_the_shared_data():
    X, y = _regression()
    grid = jnp.array([0.1, 0.3, 1.0])

    def params(grid, X, diff="implicit"):
        return jloss.sweep(ridge, jnp.zeros(3), GD, grid, args=(X, y), tol=TOL, diff=diff).params

    jac_grid, jac_X = jax.jit(jax.jacrev(params, argnums=(0, 1)))(grid, X)  # (K, 3, K), (K, 3, n, p)
    unrolled = jax.jit(jax.jacrev(lambda g: params(g, X, "unrolled")))(grid)
    for k, lam in enumerate(np.asarray(grid)):
        expected = np.zeros((3, 3))
        expected[:, k] = ridge_closed_form(lam, X, y)[1]  # member k depends on grid[k] only
        np.testing.assert_allclose(jac_grid[k], expected, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(unrolled[k], expected, rtol=1e-6, atol=1e-10)
        # the shared data: member k's Jacobian in X is the closed form's with lam = grid[k]
        np.testing.assert_allclose(jac_X[k], CLOSED_JACREV(lam, X, y)[1], rtol=1e-8, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Huber regression: finite differences of re-solved problems; jit, vmap, forward mode
# ----------------------------------------------------------------------------------------------


def huber_fit(params, delta, X, y):
    return jloss.huber(X @ params["w"] + params["b"], y, delta)


def huber_params0():
    return {"w": jnp.zeros(3), "b": jnp.zeros(())}  # float64 inside the x64 fixture


def huber_solve(delta, X, y):
    return jloss.minimize(huber_fit, huber_params0(), GD, args=(delta, X, y), tol=TOL)


def test_huber_derivative_in_delta_matches_finite_differences_of_resolved_problems():
    X, y = _regression(n=60, outliers=6)
    Xv, yv = _regression(n=30, seed=1)
    delta = 1.0
    assert bool(huber_solve(delta, X, y).converged)
    fwd = jax.jit(jax.jacfwd(lambda d: huber_solve(d, X, y).params))(delta)
    for key in ("w", "b"):
        fd = central_difference(lambda d: np.asarray(huber_solve(d, X, y).params[key]), delta, 1e-5)
        assert np.max(np.abs(fd)) > 1e-3  # the outliers make the solution depend on delta
        np.testing.assert_allclose(fwd[key], fd, rtol=1e-5, atol=1e-9)

    # A hypergradient (validation MSE against delta) in reverse mode, jitted, vmapped over deltas.
    def validation(delta):
        p = huber_solve(delta, X, y).params
        return jnp.mean((Xv @ p["w"] + p["b"] - yv) ** 2)

    deltas = jnp.array([0.3, 1.0, 3.0])
    batched = jax.jit(jax.vmap(jax.grad(validation)))(deltas)
    value = jax.jit(validation)
    fd = [central_difference(lambda t: float(value(t)), float(d), 1e-5) for d in deltas]
    np.testing.assert_allclose(batched, fd, rtol=1e-5)


def test_unrolled_differentiates_the_steps_taken_and_implicit_is_biased_before_convergence():
    X, y = _regression(n=60, outliers=6)

    def after_20_steps(delta, diff):
        return jloss.minimize(huber_fit, huber_params0(), ADAM, args=(delta, X, y), max_steps=20, diff=diff).params["w"]

    unrolled = jax.jit(jax.jacrev(lambda d: after_20_steps(d, "unrolled")))(0.5)
    implicit = jax.jit(jax.jacfwd(lambda d: after_20_steps(d, "implicit")))(0.5)
    fd = central_difference(lambda d: np.asarray(after_20_steps(d, None)), 0.5, 1e-6)
    np.testing.assert_allclose(unrolled, fd, rtol=1e-5, atol=1e-9)
    assert np.max(np.abs(implicit - fd)) > 0.05 * np.max(np.abs(fd))  # not converged: different


# ----------------------------------------------------------------------------------------------
# Logistic regression: a validation loss against the L2 strength
# ----------------------------------------------------------------------------------------------


def logistic(w, lam, X, y):
    return jnp.mean(jax.nn.softplus(-y * (X @ w))) + 0.5 * lam * jnp.sum(w**2)


def _logistic_data():
    rng = np.random.default_rng(3)
    w_true = np.array([1.5, -1.0, 0.5])
    X, Xv = rng.normal(size=(50, 3)), rng.normal(size=(200, 3))
    y = np.where(X @ w_true + rng.normal(size=50) > 0, 1.0, -1.0)
    yv = np.where(Xv @ w_true + rng.normal(size=200) > 0, 1.0, -1.0)
    return X, y, Xv, yv


def _logistic_validation(log_lam, X, y, Xv, yv, diff="implicit", tol=TOL):
    w = jloss.minimize(
        logistic, jnp.zeros(3), GD2, args=(jnp.exp(log_lam), X, y), max_steps=3000, tol=tol, diff=diff
    ).params
    return jnp.mean(jax.nn.softplus(-yv * (Xv @ w)))


LOGISTIC_GRAD = jax.jit(jax.grad(_logistic_validation), static_argnums=(5,))


def test_logistic_validation_gradient_in_l2_strength_matches_finite_differences():
    data = _logistic_data()
    log_lam = np.log(0.05)
    g = float(LOGISTIC_GRAD(log_lam, *data, "implicit", TOL))
    value = jax.jit(_logistic_validation)
    fd = central_difference(lambda t: float(value(t, *data)), log_lam, 1e-5)
    assert abs(fd) > 1e-3
    assert g == pytest.approx(fd, rel=1e-6)


def test_implicit_and_unrolled_agree_when_the_inner_problem_is_solved_to_tolerance():
    data = _logistic_data()
    log_lam = np.log(0.05)
    implicit = LOGISTIC_GRAD(log_lam, *data, "implicit", 1e-11)
    unrolled = LOGISTIC_GRAD(log_lam, *data, "unrolled", 1e-11)
    checkpointed = LOGISTIC_GRAD(log_lam, *data, Unrolled(checkpoint=True), 1e-11)
    assert float(unrolled) == pytest.approx(float(implicit), rel=1e-6)
    assert float(checkpointed) == pytest.approx(float(unrolled), rel=1e-12)


# ----------------------------------------------------------------------------------------------
# The primal, kinks, integer data, options
# ----------------------------------------------------------------------------------------------


def test_the_primal_program_is_unchanged_and_unrolled_returns_the_same_result():
    X, y = _regression()

    def compiled_ops(diff):
        text = jax.jit(lambda lam: ridge_solve(lam, X, y, diff).params).lower(0.3).compile().as_text()
        return sorted(re.findall(r"= \S+ ([\w-]+)\(", text))

    assert compiled_ops("implicit") == compiled_ops(None)  # custom_jvp adds nothing to the primal
    a, b = ridge_solve(0.3, X, y), ridge_solve(0.3, X, y, "unrolled")
    assert 0 < int(a.steps) < 1000 and bool(a.converged)
    for x, z in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, z)


def pinball_fit(w, tau, X, y):
    return jloss.quantile(X @ w, y, tau)


def test_a_singular_hessian_warns_and_ridge_gives_a_finite_damped_derivative():
    # The quantile loss is piecewise linear: zero curvature almost everywhere, so the implicit
    # derivative in tau does not exist; CG breaks down and jloss says so.
    X, y = _regression(n=21, p=2)

    def derivative(diff):
        solve = lambda t: jloss.minimize(pinball_fit, jnp.zeros(2), ADAM, args=(t, X, y), max_steps=50, diff=diff)  # noqa: E731
        return jax.jit(jax.jacfwd(lambda t: solve(t).params))(0.5)

    with pytest.warns(ImplicitDiffWarning, match="ridge"):
        jax.block_until_ready(derivative("implicit"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImplicitDiffWarning)
        damped = derivative(Implicit(ridge=1.0))
    assert np.all(np.isfinite(damped)) and np.max(np.abs(damped)) > 0


def test_implicit_tangent_is_public_and_linear_in_the_tangent():
    X, y = _regression()
    lam = 0.3
    w_star, dw, _ = ridge_closed_form(lam, X, y)
    tangents = (3.0, jnp.zeros_like(X), jnp.zeros_like(y))
    p_dot, loss_dot = jax.jit(lambda w: implicit_tangent(ridge, w, (lam, X, y), tangents))(w_star)
    np.testing.assert_allclose(p_dot, 3.0 * dw, rtol=1e-8)
    assert float(loss_dot) == pytest.approx(3.0 * 0.5 * w_star @ w_star, rel=1e-10)


def test_integer_arguments_get_no_derivative_and_do_not_break_reverse_mode():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3))
    labels = rng.integers(0, 3, size=30)

    def softmax_fit(W, lam, X, labels):
        return jloss.cross_entropy(X @ W, labels) + 0.5 * lam * jnp.sum(W**2)

    def norm2(lam):
        W = jloss.minimize(softmax_fit, jnp.zeros((3, 3)), GD2, args=(lam, X, labels), tol=TOL, max_steps=3000).params
        return jnp.sum(W**2)

    g = jax.jit(jax.grad(norm2))(0.1)
    fd = central_difference(lambda t: float(norm2(t)), 0.1, 1e-5)
    assert float(g) == pytest.approx(fd, rel=1e-5)


def test_bad_diff_options_are_rejected():
    X, y = _regression()
    with pytest.raises(ValueError, match="diff must be"):
        jloss.minimize(ridge, jnp.zeros(3), GD, args=(0.3, X, y), diff="reverse")
    with pytest.raises(ValueError, match="diff must be"):
        jloss.sweep(ridge, jnp.zeros(3), GD, jnp.ones(2), args=(X, y), diff="backprop")
    with pytest.raises(ValueError, match="ridge"):
        Implicit(ridge=-1.0)
    with pytest.raises(ValueError, match="solver_maxiter"):
        Implicit(solver_maxiter=0)


# ----------------------------------------------------------------------------------------------
# Bilevel tuning (jloss.tuning, `jloss tune`)
# ----------------------------------------------------------------------------------------------


def test_jloss_tune_reaches_the_grid_best_in_fewer_inner_solves(capsys):
    from jloss import cli, demo, tuning

    code = cli.main(["tune", "--json", "-"])  # the defaults: 64 grid values, at most 20 steps
    out = capsys.readouterr().out
    assert code == 0 and "Inner solves to reach the grid's best validation MAE" in out
    data = json.loads(out[out.index("\n{") :])
    solves = data["inner_solves"]
    assert solves["grid"] == 64 and solves["gradient"] <= 20
    assert solves["to_match"] is not None and solves["to_match"] < solves["grid"] / 4
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    assert f"after {solves['to_match']} inner solves instead of 64" in readme
    best_grid = data["grid"]["best"]["val"]
    assert min(row["val"] for row in data["path"]) <= best_grid * (1 + 1e-4)
    assert best_grid == min(data["grid"]["val"])
    # the first hypergradient against a central difference of re-solved validation errors
    videos = demo.make_videos(seed=0)
    hyper_step = tuning.programs("pseudo_huber", "mae", 500, 1e-9)[0]  # the compiled step of the run
    scaler = tuning.Scaler.fit(videos.X)
    Z, Zv = scaler.transform(videos.X), scaler.transform(videos.X_test)
    params0 = {"w": jnp.zeros(3), "b": jnp.asarray(np.median(videos.views))}

    def val_at(log_delta):
        return float(hyper_step(log_delta, params0, Z, videos.views, Zv, videos.views_test)[0][0])

    fd = central_difference(val_at, 0.0, 1e-4)
    assert data["path"][0]["dval_dlog"] == pytest.approx(fd, rel=1e-4)
