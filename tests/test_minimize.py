"""Tests of jloss.minimize against independent references (NumPy, SciPy, plain optax loops)."""

from __future__ import annotations

import sys

import chex
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize

import jloss._loops
import jloss._progress
from jloss.minimize import Result, Status, minimize
from jloss.sweep import sweep
from trace_events import jax_events

# Optimizers are built once: they are part of minimize's compilation cache key.
ADAM = optax.adam(0.05)
LBFGS = optax.lbfgs()
GD = optax.sgd(0.5)  # plain gradient descent: converges linearly on the convex test problems


def _data(n=40, p=3, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    w = np.arange(1, p + 1) * (-1.0) ** np.arange(p)
    y = X @ w + 0.3 * rng.normal(size=n)
    return X.astype(dtype), y.astype(dtype)


def squared_error(w, X, y):
    return 0.5 * jnp.mean((X @ w - y) ** 2)


def ridge(w, X, y, lam):
    return 0.5 * jnp.mean((X @ w - y) ** 2) + 0.5 * lam * jnp.sum(w**2)


# ----------------------------------------------------------------------------------------------
# Accuracy against independent solvers (float64)
# ----------------------------------------------------------------------------------------------


_calls = {"n": 0}


def _count(_):
    _calls["n"] += 1


def _counted_objective(w, X, y, c):
    jax.debug.callback(_count, w[0])  # counts evaluations of the objective at run time
    return squared_error(w, X, y) + c * jnp.sum(jnp.cosh(w) - 1.0)


def _lbfgs_run(X, y, c, init=None, tol=0.0):
    # every call shares one compiled program (cold and warm starts, any tol)
    params = jnp.zeros(X.shape[1]) if init is None else None
    return minimize(
        _counted_objective, params, LBFGS, args=(X, y, c), init=init, max_steps=5, tol=tol
    )


def test_least_squares_lbfgs_matches_lstsq():
    with jax.enable_x64(True):
        X, y = _data(dtype=np.float64)
        first = _lbfgs_run(X, y, 0.0, tol=1e-10)
        assert first.status == Status.MAX_STEPS and int(first.steps) == 5
        res = _lbfgs_run(X, y, 0.0, init=first, tol=1e-10)  # continue until converged
        expected = np.linalg.lstsq(X, y, rcond=None)[0]
        assert res.status == Status.CONVERGED and bool(res.converged)
        assert res.message == Status.CONVERGED.message
        np.testing.assert_allclose(res.params, expected, rtol=1e-8, atol=1e-9)
        # loss and grad_norm are those of the *returned* params
        assert float(res.loss) == pytest.approx(float(squared_error(res.params, X, y)), rel=1e-12)
        g = X.T @ (X @ np.asarray(res.params) - y) / len(y)
        assert float(res.grad_norm) == pytest.approx(np.linalg.norm(g), rel=1e-6, abs=1e-12)
        assert float(res.grad_norm) <= 1e-10
        steps = int(res.steps)
        assert 0 < steps < 5 and int(res.total_steps) == 5 + steps
        assert res.history.shape == (5,)
        assert float(res.history[steps - 1]) == float(res.loss)
        assert np.all(np.isfinite(res.history[:steps])) and np.all(np.isnan(res.history[steps:]))


def test_lbfgs_equals_the_optax_documented_loop_also_across_a_warm_start():
    """The loop optax documents for lbfgs (value_and_grad_from_state and value/grad/value_fn
    passed to update), written in Python: same iterates and the same number of evaluations
    of fun, so the line search's value and gradient are reused, not recomputed; a warm start
    continues that loop (its memory and step size) where it stopped."""
    with jax.enable_x64(True):
        X, y = _data(dtype=np.float64)
        c = 0.05
        value_fn = lambda w: _counted_objective(w, X, y, c)  # noqa: E731
        value_and_grad = optax.value_and_grad_from_state(value_fn)

        @jax.jit
        def step(w, state):
            value, grad = value_and_grad(w, state=state)
            updates, state = LBFGS.update(
                grad, state, w, value=value, grad=grad, value_fn=value_fn
            )
            return optax.apply_updates(w, updates), state

        w, state = jnp.zeros(3), LBFGS.init(jnp.zeros(3))
        iterates, calls = [], []
        for _ in range(10):
            _calls["n"] = 0
            w, state = step(w, state)
            jax.block_until_ready(w)
            iterates.append(w)
            calls.append(_calls["n"])
        value_ref, _ = value_and_grad(w, state=state)

        _calls["n"] = 0
        half = _lbfgs_run(X, y, c)
        jax.block_until_ready(half)
        assert half.status == Status.MAX_STEPS
        # the reference evaluates value_and_grad at the start (state value is inf) + line searches
        assert _calls["n"] == sum(calls[:5])
        np.testing.assert_allclose(half.params, iterates[4], rtol=1e-10)
        rest = _lbfgs_run(X, y, c, init=half)
        assert rest.status == Status.MAX_STEPS and int(rest.total_steps) == 10
        np.testing.assert_allclose(rest.params, iterates[9], rtol=1e-10)
        assert float(rest.loss) == pytest.approx(float(value_ref), rel=1e-12)


def _assert_same_run(rest, full, offset):
    np.testing.assert_array_equal(rest.params, full.params)
    np.testing.assert_array_equal(rest.loss, full.loss)
    leaves = jax.tree_util.tree_leaves
    for a, b in zip(leaves(rest.opt_state), leaves(full.opt_state)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(rest.history, full.history[offset:])


def test_l2_logistic_regression_matches_scipy():
    rng = np.random.default_rng(1)
    n, p, lam = 80, 4, 0.1
    X = rng.normal(size=(n, p))
    y = np.where(X @ rng.normal(size=p) + 0.5 * rng.normal(size=n) > 0, 1.0, -1.0)

    def objective(params, X, y, lam):  # dict-and-tuple parameters
        z = X @ params["w"] + params["b"][0]
        return jnp.mean(jax.nn.softplus(-y * z)) + 0.5 * lam * jnp.sum(params["w"] ** 2)

    def np_objective(theta):  # independent NumPy value and gradient
        w, b = theta[:p], theta[p]
        m = -y * (X @ w + b)
        value = np.mean(np.logaddexp(0.0, m)) + 0.5 * lam * w @ w
        s = -y / (1.0 + np.exp(-m)) / n
        return value, np.concatenate([X.T @ s + lam * w, [s.sum()]])

    ref = scipy.optimize.minimize(
        np_objective, np.zeros(p + 1), jac=True, method="L-BFGS-B",
        options=dict(gtol=1e-12, ftol=1e-15, maxiter=10_000),
    )
    with jax.enable_x64(True):
        init = {"w": jnp.zeros(p), "b": (jnp.zeros(()),)}
        res = minimize(objective, init, GD, args=(X, y, lam), max_steps=5000, tol=1e-10)
        assert res.status == Status.CONVERGED
        assert jax.tree_util.tree_structure(res.params) == jax.tree_util.tree_structure(init)
        np.testing.assert_allclose(res.params["w"], ref.x[:p], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(res.params["b"][0], ref.x[p], rtol=1e-6, atol=1e-7)
        assert float(res.loss) == pytest.approx(ref.fun, rel=1e-10)


def test_huber_regression_matches_scipy():
    import jloss

    rng = np.random.default_rng(2)
    n, p, delta = 60, 3, 0.7
    X = rng.normal(size=(n, p))
    y = X @ np.array([1.0, -2.0, 0.5]) + rng.standard_t(2, size=n)  # heavy-tailed noise

    def objective(w, X, y, delta):
        return jloss.huber(X @ w, y, delta)

    def np_objective(w):  # Huber written out: 0.5 r^2 if |r| <= delta else delta (|r| - delta/2)
        r = X @ w - y
        a = np.abs(r)
        value = np.mean(np.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta)))
        return value, X.T @ np.clip(r, -delta, delta) / n

    ref = scipy.optimize.minimize(
        np_objective, np.zeros(p), jac=True, method="L-BFGS-B",
        options=dict(gtol=1e-12, ftol=1e-15, maxiter=10_000),
    )
    with jax.enable_x64(True):
        res = minimize(objective, jnp.zeros(p), GD, args=(X, y, delta), max_steps=5000, tol=1e-10)
        assert res.status == Status.CONVERGED
        np.testing.assert_allclose(res.params, ref.x, rtol=1e-6, atol=1e-7)
        assert float(res.loss) == pytest.approx(ref.fun, rel=1e-10)


# ----------------------------------------------------------------------------------------------
# Stopping rule, result fields, warm start (one shared compiled Adam program per max_steps)
# ----------------------------------------------------------------------------------------------


def _adam_run(params, max_steps, **kw):
    X, y = _data()
    return minimize(squared_error, params, ADAM, args=(X, y), max_steps=max_steps, **kw)


def test_tol_zero_runs_exactly_max_steps():
    X, y = _data()
    res = _adam_run(jnp.zeros(3), 500)
    assert int(res.steps) == 500 and res.status == Status.MAX_STEPS and not bool(res.converged)
    assert res.message == "max_steps reached"
    assert np.all(np.isfinite(res.history))
    assert float(res.history[-1]) == float(res.loss)
    assert float(res.loss) == pytest.approx(float(squared_error(res.params, X, y)), rel=1e-6)
    # the reference: 500 plain optax steps
    @jax.jit
    def step(w, s):
        u, s = ADAM.update(jax.grad(squared_error)(w, X, y), s, w)
        return optax.apply_updates(w, u), s

    w, s = jnp.zeros(3), ADAM.init(jnp.zeros(3))
    for _ in range(500):
        w, s = step(w, s)
    np.testing.assert_allclose(res.params, w, rtol=1e-5, atol=1e-6)
    assert int(res.opt_state[0].count) == 500


def test_converged_stops_early_and_at_start():
    X, y = _data()
    res = _adam_run(jnp.zeros(3), 500, tol=1e-2)
    steps = int(res.steps)
    assert res.status == Status.CONVERGED and 0 < steps < 500
    assert float(res.grad_norm) <= 1e-2
    assert float(_adam_run(jnp.zeros(3), 500, tol=0.0).history[steps - 2]) > 0  # sanity
    # the step before stopping had a gradient norm above tol (so it stopped at the first chance)
    prev = _adam_run(jnp.zeros(3), 500, tol=float(res.grad_norm) * 0.999)
    assert int(prev.steps) > steps
    # converged at the start: zero steps, params unchanged
    w_star = jnp.asarray(np.linalg.lstsq(X, y, rcond=None)[0])
    res = _adam_run(w_star, 500, tol=1e-3)
    assert res.status == Status.CONVERGED and int(res.steps) == 0
    np.testing.assert_array_equal(res.params, w_star)
    assert np.all(np.isnan(res.history))


def test_result_is_a_pytree():
    res = _adam_run(jnp.zeros(3), 500)
    leaves, treedef = jax.tree_util.tree_flatten(res)
    again = jax.tree_util.tree_unflatten(treedef, leaves)
    assert isinstance(again, Result) and int(again.steps) == 500
    doubled = jax.tree_util.tree_map(lambda x: x * 2, res)
    assert int(doubled.steps) == 1000
    with pytest.raises(AttributeError):
        res.steps = 3  # frozen


def test_warm_start_two_runs_of_500_equal_one_of_1000_bitwise():
    full = _adam_run(jnp.zeros(3), 1000)
    half = _adam_run(jnp.zeros(3), 500)
    rest = _adam_run(None, 500, init=half)
    assert int(full.steps) == 1000 and int(rest.steps) == 500 and int(rest.total_steps) == 1000
    _assert_same_run(rest, full, offset=500)
    # a bare optimizer state continues the optimizer too (but carries no step count)
    from_state = _adam_run(half.params, 500, init=half.opt_state)
    np.testing.assert_array_equal(from_state.params, full.params)
    assert int(from_state.total_steps) == 500


# ----------------------------------------------------------------------------------------------
# Non-finite guard
# ----------------------------------------------------------------------------------------------


def test_nan_guard_returns_last_finite_params():
    def fun(w):  # finite while w[0] < 2; Adam pushes w towards 3, so it turns NaN after a while
        return jnp.sum((w - 3.0) ** 2) + jnp.sqrt(2.0 - w[0])

    opt = optax.adam(0.1)
    res = minimize(fun, jnp.zeros(2), opt, max_steps=500)
    assert res.status == Status.NONFINITE and not bool(res.converged)
    assert "non-finite" in res.message
    assert np.all(np.isfinite(res.params))
    assert float(res.loss) == pytest.approx(float(fun(res.params)), rel=1e-6)

    # Reference: a Python loop that stops before the first non-finite loss or gradient.
    @jax.jit
    def step(w, s, g):
        u, s1 = opt.update(g, s, w)
        w1 = optax.apply_updates(w, u)
        return w1, s1, *jax.value_and_grad(fun)(w1)

    w, s = jnp.zeros(2), opt.init(jnp.zeros(2))
    v, g = jax.value_and_grad(fun)(w)
    steps = 0
    while True:
        w1, s1, v1, g1 = step(w, s, g)
        if not (np.isfinite(v1) and np.all(np.isfinite(g1))):
            break
        w, s, v, g, steps = w1, s1, v1, g1, steps + 1
    assert 0 < int(res.steps) == steps < 500
    np.testing.assert_allclose(res.params, w, rtol=1e-5)
    np.testing.assert_allclose(res.opt_state[0].mu, s[0].mu, rtol=1e-4, atol=1e-7)
    assert np.all(np.isfinite(res.history[:steps])) and np.all(np.isnan(res.history[steps:]))


def test_nan_guard_recovery_is_exact_and_per_member_under_vmap():
    # The loop takes unguarded steps and replays a failed run up to its last good step: the result
    # must equal a run told to stop there, bitwise, and under vmap only failed members change.
    def fun(w, c):  # turns NaN once w[0] >= c
        return jnp.sum((w - 3.0) ** 2) + jnp.sqrt(c - w[0])

    opt = optax.adam(0.1)
    solve = jax.jit(lambda c: minimize(fun, jnp.zeros(2), opt, args=(c,), max_steps=300))
    failed = solve(2.0)
    assert failed.status == Status.NONFINITE and 0 < int(failed.steps) < 300
    stopped = minimize(fun, jnp.zeros(2), opt, args=(2.0,), max_steps=int(failed.steps))
    assert stopped.status == Status.MAX_STEPS
    np.testing.assert_array_equal(failed.params, stopped.params)
    np.testing.assert_array_equal(failed.opt_state[0].nu, stopped.opt_state[0].nu)
    assert float(failed.loss) == float(stopped.loss)

    cs = jnp.array([2.0, 10.0, 1.0])  # the 10.0 member never fails
    batched = jax.vmap(solve)(cs)
    for i, c in enumerate(cs):
        one = solve(c)
        chex.assert_trees_all_equal(jax.tree.map(lambda x: x[i], batched.params), one.params)
        assert int(batched.steps[i]) == int(one.steps) and int(batched.status[i]) == int(one.status)
    assert [Status(int(s)) for s in batched.status] == [Status.NONFINITE, Status.MAX_STEPS, Status.NONFINITE]


def test_nan_guard_overflowing_update_and_nonfinite_start():
    # finite gradients, but the update overflows: params must never become inf/NaN
    res = minimize(lambda w: 0.5 * jnp.sum(w**2), jnp.ones(2), optax.sgd(1e25), max_steps=50)
    assert res.status == Status.NONFINITE
    assert np.all(np.isfinite(res.params)) and np.isfinite(float(res.loss))
    # non-finite at the start: nothing is done (and history=False gives no history)
    res = minimize(lambda w: jnp.sum(jnp.log(w)), -jnp.ones(2), ADAM, max_steps=50, history=False)
    assert res.status == Status.NONFINITE and int(res.steps) == 0 and res.history is None
    np.testing.assert_array_equal(res.params, -jnp.ones(2))


def _pairs_off(monkeypatch):
    """The loop with one step per iteration (the reference for the paired loop)."""
    monkeypatch.setattr(jloss._loops, "PAIR_MAX_BYTES", -1)


def _fresh_fun(kind):
    # new function objects: minimize's compiled programs are keyed by fun, so the paired and
    # the one-step loop each trace their own program (tol and args are traced: one per kind)
    if kind == "nan":
        return lambda w, c: jnp.sum((w - 3.0) ** 2) + jnp.sqrt(c - w[0])  # NaN once w[0] >= c
    return lambda w, X, y: squared_error(w, X, y)


def test_two_steps_per_iteration_equal_the_one_step_loop_bitwise(monkeypatch, capfd):
    # The full-batch loop takes two steps per iteration. Whether the run stops on the first or
    # the second step of a pair (converged, non-finite, max_steps odd or even), the result must be
    # the one-step loop's, bitwise: params, state, loss, steps, status, history.
    X, y = _data(seed=3)
    adam = optax.adam(0.1)
    runs = []  # (label, callable(fun) -> Result)
    runs.append(("adam max_steps=7", "lsq", lambda f: minimize(f, jnp.zeros(3), adam, args=(X, y), max_steps=7)))
    for tol in np.geomspace(0.3, 1e-3, 9):
        runs.append((f"gd tol={tol:.3g}", "lsq",
                     lambda f, tol=tol: minimize(f, jnp.zeros(3), GD, args=(X, y), max_steps=200, tol=float(tol))))
    for c in (0.5, 1.0, 1.3, 1.7, 2.0, 2.4, 9.0):  # 9.0 never fails: max_steps=300
        runs.append((f"nan c={c}", "nan", lambda f, c=c: minimize(f, jnp.zeros(2), adam, args=(c,), max_steps=300)))
    noisy = optax.noisy_sgd(0.05, key=jax.random.key(1))  # a PRNG key in the optimizer state
    runs.append(("noisy_sgd", "lsq", lambda f: minimize(f, jnp.zeros(3), noisy, args=(X, y), max_steps=7)))
    runs.append(("progress", "nan", lambda f: minimize(f, jnp.zeros(2), adam, args=(1.3,), max_steps=300, progress=True)))
    runs.append(("vmap", "nan", lambda f: jax.vmap(
        lambda c: minimize(f, jnp.zeros(2), adam, args=(c,), max_steps=300))(jnp.array([1.0, 1.3, 9.0]))))
    funs = {kind: _fresh_fun(kind) for kind in ("lsq", "nan")}
    paired = [(label, run(funs[kind])) for label, kind, run in runs]
    _pairs_off(monkeypatch)
    funs = {kind: _fresh_fun(kind) for kind in ("lsq", "nan")}
    stops = {"converged": set(), "nonfinite": set(), "max_steps": set()}
    for (label, kind, run), (_, got) in zip(runs, paired):
        want = run(funs[kind])
        chex.assert_trees_all_equal(got, want, custom_message=label)
        if label != "vmap":
            stops[Status(int(got.status)).name.lower()].add(int(got.steps) % 2)
    # each way of stopping happened on both steps of a pair
    assert stops == {"converged": {0, 1}, "nonfinite": {0, 1}, "max_steps": {0, 1}}, stops
    capfd.readouterr()


def test_two_steps_per_iteration_only_for_small_states():
    # the paired loop keeps a second copy of params, state and gradient: only up to 1 MiB. It
    # replaces the loop of single steps (no loop of single steps follows it for an odd count).
    def counts(params):
        f = _fresh_fun("lsq")
        X = jnp.zeros((4, params.shape[0]))
        counting = CountingUpdates(ADAM)
        jaxpr = jax.make_jaxpr(lambda p: minimize(f, p, counting.optimizer, args=(X, jnp.zeros(4)), max_steps=11))(
            params)
        return str(jaxpr).count("while["), counting.calls

    small, large = counts(jnp.zeros(3)), counts(jnp.zeros(200_000))  # 3 x 800 KB with Adam
    assert small[0] == large[0] and (small[1], large[1]) == (2, 1), (small, large)


class CountingUpdates:
    """``optimizer`` with a Python counter of its ``update`` calls: how many copies of the step
    the traced program holds (a copy is traced once; ``update`` is called directly, so no JAX
    tracing cache hides one)."""

    def __init__(self, optimizer):
        self.calls = 0

        def update(*args, **kwargs):
            self.calls += 1
            return optimizer.update(*args, **kwargs)

        extra = isinstance(optimizer, optax.GradientTransformationExtraArgs)
        kind = optax.GradientTransformationExtraArgs if extra else optax.GradientTransformation
        self.optimizer = kind(optimizer.init, update)


@pytest.mark.parametrize("name, make, small, large", [
    ("adam", lambda: optax.adam(0.1), 2, 1),  # small state: a pair (2 copies), no odd-count tail
    ("lbfgs", optax.lbfgs, 1, 1),  # a line search: no pair (its step compiles slowly)
])
def test_the_program_holds_one_copy_of_each_loop_step(name, make, small, large):
    # A failed run is replayed through the same loop (an outer loop of at most two trips), not a
    # loop of its own: the replay adds no copy of the step. Before, each program held one more
    # (minimize adam: 4 and 2, lbfgs: 4 and 2, sweep: 2, traced twice for lbfgs), and compiled
    # that much longer.
    for d, copies in ((3, small), (200_000, large)):  # 200,000 params: 3 x 800 KB with Adam
        counting = CountingUpdates(make())
        jax.make_jaxpr(lambda p: minimize(lambda w: jnp.sum((w - 1.0) ** 2), p, counting.optimizer, max_steps=10))(
            jnp.zeros(d))
        assert counting.calls == copies, (name, d, counting.calls)
    counting = CountingUpdates(make())
    jax.make_jaxpr(lambda g: sweep(lambda w, h: h * jnp.sum((w - 1.0) ** 2), jnp.zeros(3), counting.optimizer, g,
                                   max_steps=10))(jnp.array([1.0, 2.0]))
    # one copy, traced once (jloss._shared.branch_skipping's batching rule reuses its jaxpr)
    assert counting.calls == 1, (name, "sweep", counting.calls)


# ----------------------------------------------------------------------------------------------
# jit, vmap, frozen members, recompilation
# ----------------------------------------------------------------------------------------------


def _ridge_run(lam, X, y):
    return minimize(ridge, jnp.zeros(3), ADAM, args=(X, y, lam), max_steps=400, tol=1e-3)


_ridge_vmapped = jax.jit(jax.vmap(_ridge_run, in_axes=(0, None, None)))  # jit of vmap


def test_jit_and_vmap_equal_eager_and_loop():
    X, y = _data(seed=5)
    lams = jnp.array([0.0, 0.5, 5.0], jnp.float32)
    batched = _ridge_vmapped(lams, X, y)
    assert batched.params.shape == (3, 3) and batched.history.shape == (3, 400)
    assert batched.message == [Status(int(s)).message for s in batched.status]
    steps = [int(s) for s in batched.steps]
    assert len(set(steps)) > 1, "members should stop at different steps"
    for k, lam in enumerate(lams):
        single = _ridge_run(lam, X, y)
        assert int(single.steps) == steps[k] and int(single.status) == int(batched.status[k])
        np.testing.assert_allclose(batched.params[k], single.params, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(batched.history[k], single.history, rtol=1e-5, atol=1e-7)
        # closed form of the ridge problem: (X'X/n + lam I) w = X'y/n
        n = len(y)
        closed = np.linalg.solve(X.T @ X / n + float(lam) * np.eye(3), X.T @ y / n)
        np.testing.assert_allclose(single.params, closed, atol=1e-2)


def test_stopped_members_are_frozen_under_vmap():
    X, y = _data(seed=5)
    fast = 5.0  # converges first
    alone = _ridge_vmapped(jnp.array([fast, fast, fast]), X, y)  # the loop ends when it stops
    mixed = _ridge_vmapped(jnp.array([fast, 0.0, 0.5]), X, y)  # it goes on for the others
    assert int(mixed.steps[1]) > int(mixed.steps[0])
    first = lambda r: jax.tree_util.tree_map(lambda x: x[0], r)  # noqa: E731
    leaves = jax.tree_util.tree_leaves
    for a, b in zip(leaves(first(alone)), leaves(first(mixed))):
        np.testing.assert_array_equal(a, b)  # bitwise: nothing of member 0 moved afterwards
    assert int(mixed.opt_state[0].count[0]) == int(mixed.steps[0])


def test_no_recompilation_for_new_data_of_the_same_shapes():
    traces = {"n": 0}

    def fun(w, X, y, lam):
        traces["n"] += 1
        return ridge(w, X, y, lam)

    X, y = _data(seed=6)
    first = minimize(fun, jnp.zeros(3), ADAM, args=(X, y, jnp.float32(0.1)), max_steps=20)
    n = traces["n"]
    assert n > 0
    X2, y2 = _data(seed=7)
    args2 = (X2, y2, jnp.float32(0.3))
    second = minimize(fun, jnp.ones(3), ADAM, args=args2, max_steps=20, tol=1e-9)
    warm = minimize(fun, None, ADAM, args=args2, max_steps=20, init=second)
    assert traces["n"] == n, "new data, a new tol or a warm start must not retrace"
    assert not np.allclose(first.params, second.params)
    assert int(warm.total_steps) == 40


def test_data_is_not_in_the_loop_carry_under_vmap():
    X, y = _data(n=64, p=3, seed=8)
    lams = jnp.linspace(0.0, 1.0, 7)
    jaxpr = jax.make_jaxpr(jax.vmap(_ridge_run, in_axes=(0, None, None)))(lams, X, y)
    carry_shapes = []

    def walk(jpr):
        for eqn in jpr.eqns:
            if eqn.primitive.name == "while":
                carry_shapes.extend(tuple(v.aval.shape) for v in eqn.outvars)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jaxpr.jaxpr)
    assert carry_shapes, "expected a while loop"
    assert (7,) + X.shape not in carry_shapes and (7, 64) not in carry_shapes


# ----------------------------------------------------------------------------------------------
# Minibatch mode
# ----------------------------------------------------------------------------------------------

_DECAY_ADAM = optax.adam(optax.exponential_decay(0.05, transition_steps=200, decay_rate=0.5))


def _minibatch_run(params, max_steps, **kw):
    X, y = _data(n=103, p=3, seed=10)
    return minimize(
        squared_error, params, _DECAY_ADAM, args=(X, y), max_steps=max_steps,
        batch_size=10, key=jax.random.key(0), **kw,
    )


def test_minibatch_reaches_the_full_batch_optimum():
    X, y = _data(n=103, p=3, seed=10)
    expected = np.linalg.lstsq(X, y, rcond=None)[0]
    res = _minibatch_run(jnp.zeros(3), 3000)
    assert res.status == Status.MAX_STEPS
    np.testing.assert_allclose(res.params, expected, atol=5e-3)
    # loss and grad_norm are full-data values at the returned params
    assert float(res.loss) == pytest.approx(float(squared_error(res.params, X, y)), rel=1e-5)
    g = X.T @ (X @ np.asarray(res.params) - y) / len(y)
    assert float(res.grad_norm) == pytest.approx(np.linalg.norm(g), rel=1e-3, abs=1e-6)


def _indicator(p, idx, scale):
    return scale * jnp.sum(p[idx])


def _schedule_run(key, p, steps=1, init=None, n=10):
    return minimize(
        _indicator, p, _SGD1, args=(jnp.arange(n), jnp.float32(1.0)), max_steps=steps,
        batch_size=4, batch_args=(0,), key=key, init=init,
    )


_SGD1 = optax.sgd(1.0)


def test_minibatch_schedule_and_partial_batch_are_as_documented():
    """sum(p[batch]) with sgd(1): every step subtracts 1 at the indices of its batch."""
    n, bs = 10, 4  # 2 batches per epoch; the last 2 samples of every permutation are dropped
    key = jax.random.key(42)
    res = None
    counts = np.zeros(n)
    for t in range(5):  # one step at a time: warm starts continue the schedule exactly
        res = _schedule_run(key, jnp.zeros(n) if res is None else None, init=res)
        # the documented rule, rebuilt here: epoch e uses permutation(fold_in(key, e), n)
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, t // 2), n))
        batch = perm[(t % 2) * bs:(t % 2 + 1) * bs]
        counts[batch] += 1
        np.testing.assert_array_equal(-np.asarray(res.params), counts)
        if t == 1:  # one epoch: no sample repeats, n % bs = 2 samples left out
            assert sorted(np.unique(counts)) == [0.0, 1.0] and counts.sum() == 8
    assert int(res.total_steps) == 5
    # Several steps per call (the nested epoch loop) and warm starts from mid-epoch follow the
    # same schedule: 5 steps at once, 3 + 2 and 1 + 4 equal the one-step-at-a-time run.
    np.testing.assert_array_equal(_schedule_run(key, jnp.zeros(n), steps=5).params, res.params)
    for first in (3, 1):
        head = _schedule_run(key, jnp.zeros(n), steps=first)
        tail = _schedule_run(key, None, steps=5 - first, init=head)
        np.testing.assert_array_equal(tail.params, res.params)
        assert int(tail.total_steps) == 5


def test_minibatch_under_vmap_follows_each_members_key():
    n = 10
    keys = jax.random.split(jax.random.key(7), 3)
    res = jax.vmap(lambda k: _schedule_run(k, jnp.zeros(n)))(keys)
    for m in range(3):
        alone = _schedule_run(keys[m], jnp.zeros(n))
        np.testing.assert_array_equal(res.params[m], alone.params)
    assert not np.array_equal(res.params[0], res.params[1])


# ----------------------------------------------------------------------------------------------
# Progress bar
# ----------------------------------------------------------------------------------------------


def test_progress_bar_writes_output_and_costs_nothing_when_off(capfd):
    X, y = _data()
    res = _adam_run(jnp.zeros(3), 500, progress=True)
    jax.block_until_ready(res)
    err = capfd.readouterr().err
    assert "500/500" in err and "minimize" in err and "max_steps" in err
    np.testing.assert_array_equal(res.params, _adam_run(jnp.zeros(3), 500).params)
    on = str(jax.make_jaxpr(lambda X: _adam_run(jnp.zeros(3), 500, progress=True))(X))
    off = str(jax.make_jaxpr(lambda X: _adam_run(jnp.zeros(3), 500))(X))
    assert "pure_callback" in on and "pure_callback" not in off


def test_progress_callbacks_adapt_to_the_measured_speed(monkeypatch, capfd):
    # Each callback returns the step of the next one: at most one per `every` steps (progress=N
    # gives N updates) and, once the speed is known, at most one per `interval` seconds.
    calls = []
    call = jloss._progress.ProgressBar.__call__

    def counting(self, packed):
        calls.append(int(np.asarray(packed).reshape(-1, 4)[0, 0]))
        return call(self, packed)

    monkeypatch.setattr(jloss._progress.ProgressBar, "__call__", counting)
    fun = lambda w: jnp.sum((w - 1.0) ** 2)  # noqa: E731  (one object: one compiled program)
    opt = optax.sgd(1e-3)
    monkeypatch.setattr(jloss._progress.ProgressBar, "interval", 0.0)  # the step schedule alone
    minimize(fun, jnp.zeros(2), opt, max_steps=400, progress=8)
    assert calls == [0, 50, 100, 150, 200, 250, 300, 350, 400]
    calls.clear()
    capfd.readouterr()
    monkeypatch.setattr(jloss._progress.ProgressBar, "interval", 1e6)  # every run is "quick"
    traced = jax.jit(lambda w: minimize(fun, w, opt, max_steps=400, progress=8))
    traced(jnp.zeros(2))  # under jit: the callbacks, which know the speed: start and stop
    assert calls == [0, 400]
    calls.clear()
    # An eager call of a program known to be quick: while its program without a bar does not
    # exist, the same program (which knows the speed: start and stop), compiling nothing.
    minimize(fun, jnp.zeros(2), opt, max_steps=400, progress=8)  # the eager program, measured once
    calls.clear()
    with jax_events() as counts:
        minimize(fun, jnp.zeros(2), opt, max_steps=400, progress=8)
    assert counts["compile"] == 0 and counts["trace"] == 0, counts["names"]
    assert calls == [0, 400]
    calls.clear()
    # Once an eager call without a bar compiled that program, the quick call runs it without
    # callbacks (JAX's fast dispatch path) and draws the same final line from the host.
    plain = minimize(fun, jnp.zeros(2), opt, max_steps=400)
    with jax_events() as counts:
        quick = minimize(fun, jnp.zeros(2), opt, max_steps=400, progress=8)
    assert counts["compile"] == 0 and counts["trace"] == 0, counts["names"]
    assert calls == []
    chex.assert_trees_all_equal(quick, plain)
    err = capfd.readouterr().err
    assert err.count("400/400") == 4 and err.count("max_steps]") == 4  # each run: its final line
    assert "0/400" not in err.replace("400/400", "")
    converged = minimize(fun, jnp.zeros(2), optax.sgd(0.3), max_steps=400, tol=1e-3, progress=True)
    converged = minimize(fun, jnp.zeros(2), optax.sgd(0.3), max_steps=400, tol=1e-3, progress=True)
    assert int(converged.steps) < 400 and "converged]" in capfd.readouterr().err.splitlines()[-1]


def test_progress_under_vmap_and_unrolled_keeps_the_results_and_the_schedule(monkeypatch, capfd):
    # Under vmap the members share one callback per report (not one per step), and the bar
    # changes no result: vmapped, with tol (members stop at different steps), and unrolled.
    calls = []
    call = jloss._progress.ProgressBar.__call__

    def counting(self, packed):
        calls.append(np.asarray(packed).reshape(-1, 4)[:, 0].tolist())
        return call(self, packed)

    monkeypatch.setattr(jloss._progress.ProgressBar, "__call__", counting)
    monkeypatch.setattr(jloss._progress.ProgressBar, "interval", 0.0)
    targets = jnp.array([1.0, 3.0, 10.0])

    def run(t, **kw):
        fun = lambda w, t: jnp.sum((w - t) ** 2)  # noqa: E731
        return minimize(fun, jnp.zeros(2), optax.sgd(0.05), args=(t,), max_steps=400, tol=1e-3, **kw)

    plain = jax.vmap(run)(targets)
    with_bar = jax.vmap(lambda t: run(t, progress=8))(targets)
    chex.assert_trees_all_equal(with_bar, plain)
    assert 2 <= len(calls) <= 10, calls  # start, about every 50 steps, stop: not every step
    assert all(len(c) == 3 for c in calls)  # one call for the three members
    unrolled = run(targets[1], diff="unrolled", progress=8)
    chex.assert_trees_all_equal(unrolled, run(targets[1], diff="unrolled"))
    assert "minimize" in capfd.readouterr().err


def test_progress_speed_memory_is_bounded(monkeypatch, capfd):
    # The measured speeds and the compiled signatures are kept per compiled solve; many distinct
    # objectives must not grow that memory without bound (a forgotten entry costs one more run
    # with callbacks).
    monkeypatch.setattr(jloss._progress, "RATES", {})
    monkeypatch.setattr(jloss._progress, "COMPILED", {})
    monkeypatch.setattr(jloss._progress, "MAX_RATES", 2)
    for i in range(4):
        fun = lambda w, i=i: jnp.sum((w - i) ** 2)  # noqa: E731
        minimize(fun, jnp.zeros(2), optax.sgd(0.1), max_steps=20)
        minimize(fun, jnp.zeros(2), optax.sgd(0.1), max_steps=20, progress=True)
    assert len(jloss._progress.RATES) == 2 and len(jloss._progress.COMPILED) == 2
    assert capfd.readouterr().err.count("20/20") == 4


def test_progress_without_tqdm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(ImportError, match=r"pip install jloss\[progress\]"):
        _adam_run(jnp.zeros(3), 5, progress=True)


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(fun=lambda w, X, y: (X @ w - y) ** 2), ValueError, r"scalar.*shape \(40,\)"),
        (dict(init_params={"w": jnp.zeros(3), "n": jnp.zeros(2, jnp.int32)}), TypeError,
         r"init_params\['n'\].*int32"),
        (dict(max_steps=0), ValueError, "max_steps must be >= 1"),
        (dict(max_steps=2.5), TypeError, "max_steps must be a Python int"),
        (dict(tol=-1.0), ValueError, "tol must be a finite number >= 0"),
        (dict(optimizer=optax.adam), TypeError,
         r"GradientTransformation.*function.*optax.adam\(1e-3\)"),
        (dict(optimizer="adam"), TypeError, "type str"),
        (dict(batch_size=41, key=jax.random.key(0)), ValueError,
         "larger than the number of samples N=40"),
        (dict(batch_size=8), ValueError, "needs a PRNG key"),
        (dict(batch_size=0, key=jax.random.key(0)), ValueError, "batch_size must be >= 1"),
        (dict(batch_args=(0,)), ValueError, "batch_args is only used with batch_size"),
        (dict(args=np.zeros(3)), TypeError, "args must be a tuple"),
        (dict(history="yes"), TypeError, "history must be True or False"),
        (dict(progress=0), TypeError, "progress must be True, False or a number"),
        (dict(progress="yes"), TypeError, "progress must be True, False or a number"),
    ],
)
def test_errors(kwargs, exc, match):
    X, y = _data()
    call = dict(fun=squared_error, init_params=jnp.zeros(3), optimizer=ADAM, args=(X, y))
    call.update(kwargs)
    fun, init_params, optimizer = call.pop("fun"), call.pop("init_params"), call.pop("optimizer")
    with pytest.raises(exc, match=match):
        minimize(fun, init_params, optimizer, max_steps=call.pop("max_steps", 5), **call)


def test_error_mismatched_data_axes_suggests_batch_args():
    X, y = _data()
    with pytest.raises(ValueError, match=r"args\[0\] has 40 rows but args\[1\] has 39.*batch_args"):
        minimize(squared_error, jnp.zeros(3), ADAM, args=(X, y[:39]), batch_size=4,
                 key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"args\[2\] is a scalar"):
        minimize(ridge, jnp.zeros(3), ADAM, args=(X, y, 0.1), batch_size=4, key=jax.random.key(0))


def test_error_non_float_loss_and_message_under_jit():
    with pytest.raises(TypeError, match="floating scalar"):
        minimize(lambda w: jnp.sum(w > 0), jnp.zeros(3), ADAM, max_steps=3)

    @jax.jit
    def f(w):
        return minimize(lambda w: jnp.sum(w**2), w, ADAM, max_steps=3).message

    with pytest.raises(TypeError, match="host"):
        f(jnp.ones(2))
