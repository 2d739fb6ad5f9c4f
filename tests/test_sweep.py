"""Tests of jloss.sweep and its helpers: a sweep equals a Python loop of minimize."""

from __future__ import annotations

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jloss.minimize import Result, Status, minimize
from jloss.sweep import SweepTable, sweep, sweep_best, sweep_member, sweep_table

ADAM = optax.adam(0.05)


def _data(n=100, p=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)).astype(np.float32)
    y = (X @ np.array([1.0, -2.0, 0.5]) + rng.standard_t(2, size=n)).astype(np.float32)
    return X, y


def huber_objective(w, delta, X, y):
    r = X @ w - y
    a = jnp.abs(r)
    return jnp.mean(jnp.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta)))


def _huber_minimize(delta, X, y):
    return minimize(
        huber_objective, jnp.zeros(3), ADAM, args=(delta, X, y), max_steps=300, tol=1e-3
    )


def test_huber_sweep_over_64_deltas_equals_a_loop_of_minimize():
    X, y = _data()
    deltas = jnp.geomspace(0.01, 10.0, 64).astype(jnp.float32)
    res = sweep(huber_objective, jnp.zeros(3), ADAM, deltas, args=(X, y), max_steps=300, tol=1e-3)
    assert isinstance(res, Result)
    for leaf in jax.tree_util.tree_leaves(res):
        assert leaf.shape[0] == 64
    assert res.history.shape == (64, 300)
    steps = np.asarray(res.steps)
    assert len(set(steps.tolist())) > 1  # members stop on their own criterion
    for k in range(64):
        one = _huber_minimize(deltas[k], X, y)
        assert int(one.steps) == steps[k] and int(one.status) == int(res.status[k])
        np.testing.assert_allclose(res.params[k], one.params, rtol=2e-5, atol=2e-5)
        np.testing.assert_allclose(res.loss[k], one.loss, rtol=2e-5, atol=1e-6)
        # stopped members did not move: NaN history after their stop, as in the solo run
        assert np.all(np.isnan(res.history[k, steps[k]:]))

    # helpers: table, best member by a validation metric, one member
    table = sweep_table(res, deltas)
    assert isinstance(table, SweepTable) and len(table) == 64
    assert list(table[0]) == ["k", "h", "loss", "grad_norm", "steps", "status"]
    assert table[5]["h"] == pytest.approx(float(deltas[5]))
    assert table[5]["steps"] == steps[5] and table[5]["status"] == res.message[5]
    text = str(table)
    assert text.splitlines()[0] == "| k | h | loss | grad_norm | steps | status |"
    assert len(text.splitlines()) == 66

    Xv, yv = _data(n=50, seed=1)
    val = lambda w: jnp.mean((Xv @ w - yv) ** 2)  # noqa: E731
    k, params = sweep_best(res, val)
    manual = [float(np.mean((Xv @ np.asarray(res.params[i]) - yv) ** 2)) for i in range(64)]
    assert k == int(np.argmin(manual))
    np.testing.assert_array_equal(params, res.params[k])
    member = sweep_member(res, k)
    assert isinstance(member, Result) and member.message == res.message[k]
    np.testing.assert_array_equal(member.history, res.history[k])


def _ridge(w, h, X, y):
    return 0.5 * jnp.mean((X @ w - y) ** 2) + 0.5 * h["l2"] * jnp.sum(w**2)


def _adam_of(h):
    return optax.adam(h["lr"])


GRID = {"lr": jnp.array([0.01, 0.1, 0.3]), "l2": jnp.array([0.0, 0.1, 1.0])}


def _lr_sweep(max_steps, **kw):
    X, y = _data(n=40)
    return sweep(_ridge, jnp.zeros(3), _adam_of, GRID, args=(X, y), max_steps=max_steps, **kw)


@jax.jit
def _lr_loop_member(lr, l2, X, y):  # the reference: minimize with optax.adam(lr)
    return minimize(_ridge, jnp.zeros(3), optax.adam(lr), args=({"l2": l2}, X, y), max_steps=200)


def test_dict_grid_drives_the_learning_rate_and_equals_a_loop():
    X, y = _data(n=40)
    res = _lr_sweep(200)
    assert res.params.shape == (3, 3)
    for k in range(3):
        one = _lr_loop_member(GRID["lr"][k], GRID["l2"][k], X, y)
        np.testing.assert_allclose(res.params[k], one.params, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(res.history[k], one.history, rtol=1e-5, atol=1e-7)
    # the learning rate matters: members differ although member 0 and 1 share l2 = 0 / 0.1
    assert not np.allclose(res.params[0], res.params[1], atol=1e-3)
    table = sweep_table(res, GRID, metric=np.array([3.0, 1.0, 2.0]))
    assert [row["lr"] for row in table] == pytest.approx([0.01, 0.1, 0.3])
    assert [row["metric"] for row in table] == [3.0, 1.0, 2.0]
    assert sweep_best(res, np.array([3.0, np.nan, 2.0]))[0] == 2  # NaN metrics are skipped


def _nan_past(w, c):  # finite while w[0] < c; Adam pushes w towards 3
    return jnp.sum((w - 3.0) ** 2) + jnp.sqrt(c - w[0])


def test_sweep_members_that_turn_nonfinite_keep_their_last_good_state():
    # Members that fail are stopped, their last good state restored (recover), and the rest are
    # untouched: each equals its own minimize call, bitwise.
    opt = optax.adam(0.1)
    cs = jnp.array([2.0, 10.0, 1.0, 2.5])
    res = sweep(_nan_past, jnp.zeros(2), opt, cs, max_steps=300)
    statuses = [Status(int(s)) for s in res.status]
    assert statuses == [Status.NONFINITE, Status.MAX_STEPS, Status.NONFINITE, Status.NONFINITE]
    for k, c in enumerate(cs):
        alone = minimize(_nan_past, jnp.zeros(2), opt, args=(c,), max_steps=300)
        np.testing.assert_array_equal(res.params[k], alone.params)
        assert int(res.steps[k]) == int(alone.steps) and float(res.loss[k]) == float(alone.loss)
        np.testing.assert_array_equal(res.history[k], alone.history)
        assert np.all(np.isfinite(res.params[k]))


def test_sweep_warm_start_continues_every_member():
    full = _lr_sweep(200)
    half = _lr_sweep(100)
    rest = sweep(_ridge, None, _adam_of, GRID, args=_data(n=40), max_steps=100, init=half)
    np.testing.assert_array_equal(rest.total_steps, [200, 200, 200])
    np.testing.assert_allclose(rest.params, full.params, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(rest.history, full.history[:, 100:], rtol=1e-6, atol=1e-7)


def test_sweep_minibatch_equals_loop():
    X, y = _data(n=30)
    key = jax.random.key(5)
    grid = {"l2": jnp.array([0.0, 0.5])}
    opt = optax.sgd(0.05)
    res = sweep(_ridge, jnp.zeros(3), opt, grid, args=(X, y), max_steps=40, batch_size=8, key=key)
    for k in range(2):
        one = minimize(_ridge, jnp.zeros(3), opt, args=({"l2": grid["l2"][k]}, X, y),
                       max_steps=40, batch_size=8, batch_args=(1, 2), key=key)
        np.testing.assert_allclose(res.params[k], one.params, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(res.loss[k], one.loss, rtol=1e-5)


def test_sweep_keeps_data_out_of_the_loop_carry():
    X, y = _data(n=64)
    deltas = jnp.linspace(0.1, 1.0, 5)
    jaxpr = jax.make_jaxpr(
        lambda X, y: sweep(huber_objective, jnp.zeros(3), ADAM, deltas, args=(X, y), max_steps=10)
    )(X, y)
    shapes = []

    def walk(jpr):
        for eqn in jpr.eqns:
            if eqn.primitive.name == "while":
                shapes.extend(tuple(v.aval.shape) for v in eqn.outvars)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jaxpr.jaxpr)
    assert shapes and (5, 64, 3) not in shapes and (5, 64) not in shapes
    assert all(len(s) == 0 or s[0] in (5, 10) for s in shapes)  # only per-member state


def test_sweep_progress_bar(capfd):
    res = _lr_sweep(200, progress=10)  # about 10 updates
    jax.block_until_ready(res)
    err = capfd.readouterr().err
    assert "sweep" in err and "200/200" in err and "done" in err


def test_sweep_errors():
    X, y = _data(n=40)
    message = r"share their leading axis K: grid\['l2'\] has 2 entries but grid\['lr'\] has 3"
    with pytest.raises(ValueError, match=message):
        sweep(_ridge, jnp.zeros(3), _adam_of, {"lr": jnp.ones(3), "l2": jnp.ones(2)}, args=(X, y))
    with pytest.raises(ValueError, match=r"grid\[0\] is a scalar.*jnp.array"):
        sweep(huber_objective, jnp.zeros(3), ADAM, [0.1, 1.0], args=(X, y))
    with pytest.raises(TypeError, match=r"optimizer\(h\).*type float"):
        sweep(_ridge, jnp.zeros(3), lambda h: 0.1, GRID, args=(X, y))
    with pytest.raises(TypeError, match="GradientTransformation.*type str"):
        sweep(_ridge, jnp.zeros(3), "adam", GRID, args=(X, y))
    with pytest.raises(ValueError, match="init_params=None"):
        sweep(_ridge, jnp.zeros(3), _adam_of, GRID, args=(X, y), init=_lr_sweep(200))
    with pytest.raises(ValueError, match="K=3 members"):
        sweep(_ridge, None, _adam_of, GRID, args=(X, y), init=sweep_member(_lr_sweep(200), 0))
    with pytest.raises(ValueError, match="max_steps must be >= 1"):
        sweep(_ridge, jnp.zeros(3), _adam_of, GRID, args=(X, y), max_steps=0)
    with pytest.raises(ValueError, match="not finite for any member"):
        sweep_best(_lr_sweep(200), np.full(3, np.nan))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        sweep_best(_lr_sweep(200), np.zeros(4))
