"""Sweeps over a line-search optimizer (optax.lbfgs): equal to a loop of minimize, no per-member
copy of the data in the compiled program, and derivatives through it in every mode.

Under ``jax.vmap`` a ``lax.cond`` with a per-member predicate runs both branches and broadcasts
its operands to the batch; optax's zoom line search evaluates the objective inside such conds, so
the sweep batches the optimizer's update with ``jloss._shared.branch_skipping`` (a branch runs
only if some member takes it, operands keep their own batching), gives the line search a value
function whose batching keeps the shared data unbatched (``member_value_fn``, for the paths left
to JAX's rules), reads the value and gradient the line search stored without a cond, and hands
stopped members a zero gradient so that their line search ends at once. These tests pin what
that must not change.
"""

from __future__ import annotations

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jloss._shared import branch_skipping, member_value_fn
from jloss.minimize import minimize
from jloss.sweep import sweep

LBFGS = optax.lbfgs()
DELTAS = np.array([0.05, 0.3, 1.0, 4.0, 20.0], np.float32)


def _data(n=120, d=3, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ np.linspace(-1.0, 2.0, d) + rng.standard_t(2, size=n)
    return X.astype(dtype), y.astype(dtype)


def huber(w, delta, X, y):
    r = X @ w["w"] + w["b"] - y
    a = jnp.abs(r)
    return jnp.mean(jnp.where(a <= delta, 0.5 * r**2, delta * (a - 0.5 * delta))) + 1e-3 * jnp.sum(w["w"] ** 2)


def _params(d, dtype=jnp.float32):
    return {"w": jnp.zeros(d, dtype), "b": jnp.zeros((), dtype)}


def _member_objective(p, delta, X, y):
    return huber(p, delta, X, y)


def _member(delta, X, y, **kw):
    # One function object for every member: the loop of minimize calls compiles once.
    return minimize(_member_objective, _params(X.shape[1], X.dtype), LBFGS, args=(delta, X, y), **kw)


@pytest.mark.parametrize("x64", [False, True])
def test_lbfgs_sweep_equals_a_loop_of_minimize(x64):
    with jax.enable_x64(x64):
        dtype = np.float64 if x64 else np.float32
        X, y = _data(dtype=dtype)
        deltas = DELTAS.astype(dtype)
        tol = 1e-10 if x64 else 1e-5
        res = sweep(huber, _params(3, dtype), LBFGS, deltas, args=(X, y), max_steps=100, tol=tol)
        steps = np.asarray(res.steps)
        assert np.all(np.asarray(res.converged)), res.message
        assert len(set(steps.tolist())) > 1  # members stop at different steps: the others wait
        rtol = 1e-9 if x64 else 2e-4
        for k, delta in enumerate(deltas):
            one = _member(delta, X, y, max_steps=100, tol=tol)
            assert bool(one.converged)
            for a, b in zip(jax.tree_util.tree_leaves(res.params), jax.tree_util.tree_leaves(one.params)):
                np.testing.assert_allclose(a[k], b, rtol=rtol, atol=rtol)
            np.testing.assert_allclose(res.loss[k], one.loss, rtol=rtol)
            # a stopped member keeps its own gradient (the zero gradient it is handed is not kept)
            assert float(res.grad_norm[k]) <= tol and float(res.grad_norm[k]) > 0.0
            np.testing.assert_allclose(res.grad_norm[k], one.grad_norm, rtol=0.5 if not x64 else 1e-3, atol=tol / 10)
            if x64:
                assert int(res.steps[k]) == int(one.steps)


def _per_member_data_shapes(hlo: str, k: int, n: int, d: int) -> list[str]:
    return re.findall(rf"f32\[{k},{n},{d}\]", hlo)


def test_lbfgs_sweep_program_holds_no_per_member_copy_of_the_data():
    # K, N, d chosen so that no other array of the program has this shape.
    k, n, d = 5, 37, 3
    X, y = _data(n=n, d=d)

    def run(X, y):
        return sweep(huber, _params(d), LBFGS, jnp.asarray(DELTAS), args=(X, y), max_steps=20, tol=1e-5).params

    hlo = jax.jit(run).lower(X, y).compile().as_text()
    assert _per_member_data_shapes(hlo, k, n, d) == []
    # The check can see such a copy: a vmap of the same objective over a broadcast X has one.
    copied = jax.jit(lambda X: jax.vmap(lambda x, w: x @ w)(jnp.broadcast_to(X, (k, n, d)) * 2.0,
                                                          jnp.ones((k, d)))).lower(X).compile().as_text()
    assert _per_member_data_shapes(copied, k, n, d) != []


def _unconditional_data_products(hlo: str, n: int) -> list[str]:
    """The ``dot``s against the data (a dimension of size ``n``) that run on every trip of a while
    loop: those whose computation is a while body itself, not a branch of a conditional in it."""
    comps: dict[str, list[str]] = {}
    name = None
    for line in hlo.splitlines():
        m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if m:
            name = m.group(1)
            comps[name] = []
        elif name is not None:
            comps[name].append(line)
    bodies = {b for lines in comps.values() for line in lines for b in re.findall(r"body=%?([\w.\-]+)", line)}
    return [line.strip()[:120] for c in bodies for line in comps.get(c, [])
            if " dot(" in line and re.search(rf"\b{n}\b", line.split(" dot(")[0])]


def test_lbfgs_sweep_evaluates_the_objective_only_inside_conditionals():
    """In the sweep's loops every evaluation of the objective is a branch that runs only when some
    member needs it (the line search's, or the fresh-state recompute of the stored value). A
    0-or-1-trip while for the recompute had its evaluation hoisted out as loop-invariant by XLA:
    one extra evaluation per step."""
    n, d = 37, 3
    X, y = _data(n=n, d=d)

    def run(X, y):
        return sweep(huber, _params(d), LBFGS, jnp.asarray(DELTAS), args=(X, y), max_steps=20, tol=1e-5,
                     diff=None).params

    hlo = jax.jit(run).lower(X, y).compile().as_text()
    assert " dot(" in hlo and re.search(r"conditional\(", hlo)
    assert _unconditional_data_products(hlo, n) == []
    # The check can see one: a loop that evaluates on every trip.
    def descend(i, w):
        return jax.tree_util.tree_map(lambda a, g: a - 0.1 * g, w, jax.grad(huber)(w, 1.0, X, y))

    looped = jax.jit(lambda X, y: jax.lax.fori_loop(0, 3, descend, _params(d))).lower(X, y).compile().as_text()
    assert _unconditional_data_products(looped, n) != []


def test_lbfgs_sweep_under_an_outer_vmap_over_datasets():
    # The data is batched for real by the outer vmap: the sweep's batching rule (which takes
    # member 0 of data broadcast by a cond) must leave that axis alone.
    X, y0 = _data()
    ys = np.stack([y0, 2.0 * y0 + 1.0, -y0])

    def one_sweep(y):
        return sweep(huber, _params(3), LBFGS, jnp.asarray(DELTAS), args=(X, y), max_steps=60, tol=1e-5).params

    batched = jax.jit(jax.vmap(one_sweep))(ys)
    for i, y in enumerate(ys):
        alone = one_sweep(y)
        for a, b in zip(jax.tree_util.tree_leaves(batched), jax.tree_util.tree_leaves(alone)):
            np.testing.assert_allclose(a[i], b, rtol=2e-4, atol=2e-4)


def test_forward_mode_through_an_unrolled_lbfgs_sweep_wrt_data_and_grid():
    # diff="unrolled" differentiates through the line search: the tangents of the data and of
    # the hyperparameter pass the sweep's value function (its custom_jvp) and must equal those
    # of minimize's plain one, member by member.
    with jax.enable_x64(True):
        X, y = _data(n=60, dtype=np.float64)
        deltas = DELTAS.astype(np.float64)
        dy = np.random.default_rng(1).normal(size=y.shape)
        ddelta = np.linspace(0.5, 1.5, deltas.size)
        steps = 12

        def swept(y, deltas):
            return sweep(huber, _params(3, jnp.float64), LBFGS, deltas, args=(X, y), max_steps=steps,
                         tol=0.0, history=False, diff="unrolled").params["w"]

        _, tangent = jax.jvp(swept, (y, deltas), (dy, ddelta))
        for k in range(deltas.size):
            def alone(y, delta):
                return _member(delta, X, y, max_steps=steps, tol=0.0, history=False, diff="unrolled").params["w"]

            _, t_k = jax.jvp(alone, (y, deltas[k]), (dy, ddelta[k]))
            np.testing.assert_allclose(tangent[k], t_k, rtol=1e-7, atol=1e-9)
        assert np.all(np.abs(tangent) > 0)


def test_implicit_gradient_of_an_lbfgs_sweep_wrt_the_grid_and_data():
    with jax.enable_x64(True):
        X, y = _data(dtype=np.float64)
        deltas = DELTAS.astype(np.float64)

        def total(deltas, y):
            r = sweep(huber, _params(3, jnp.float64), LBFGS, deltas, args=(X, y), max_steps=200, tol=1e-11)
            return jnp.sum(r.params["w"] ** 2)

        g_delta, g_y = jax.grad(total, argnums=(0, 1))(jnp.asarray(deltas), jnp.asarray(y))
        # central differences of the converged solutions (smooth in delta and y away from kinks)
        eps = 1e-5
        for k in (0, 2, 4):
            e = np.zeros_like(deltas)
            e[k] = eps
            fd = (total(deltas + e, y) - total(deltas - e, y)) / (2 * eps)
            np.testing.assert_allclose(g_delta[k], fd, rtol=1e-4, atol=1e-8)
        v = np.random.default_rng(2).normal(size=y.shape)
        fd = (total(deltas, y + eps * v) - total(deltas, y - eps * v)) / (2 * eps)
        np.testing.assert_allclose(jnp.vdot(g_y, v), fd, rtol=1e-4, atol=1e-8)


def test_member_value_fn_values_and_derivatives_wrt_every_input():
    # The value function itself, against the plain objective: value, gradient, forward-mode
    # tangents w.r.t. the member's hyperparameter and the data, second order, and under vmap over
    # members (data broadcast by a cond, as the line search's conds do, and plain).
    with jax.enable_x64(True):
        X, y = _data(n=30, dtype=np.float64)
        p = {"w": jnp.array([0.3, -0.2, 0.1]), "b": jnp.array(0.05)}
        delta = jnp.array(0.7)

        def plain(p, delta, X, y):
            return huber(p, delta, X, y)

        def shared(p, delta, X, y):
            return member_value_fn(huber, (delta,), (X, y), jnp.float64)(p)

        np.testing.assert_allclose(shared(p, delta, X, y), plain(p, delta, X, y), rtol=1e-14)
        chex.assert_trees_all_close(jax.grad(shared)(p, delta, X, y), jax.grad(plain)(p, delta, X, y), rtol=1e-12)
        tangents = (jax.tree_util.tree_map(jnp.ones_like, p), jnp.array(0.3), 0.1 * jnp.ones_like(X), jnp.ones_like(y))
        t_shared = jax.jvp(shared, (p, delta, X, y), tangents)[1]
        t_plain = jax.jvp(plain, (p, delta, X, y), tangents)[1]
        np.testing.assert_allclose(t_shared, t_plain, rtol=1e-12)
        # forward over reverse (what unrolled differentiation of a line search takes)
        jg = lambda f: jax.jvp(lambda d, y: jax.grad(f)(p, d, X, y), (delta, y), (jnp.array(1.0), jnp.ones_like(y)))[1]  # noqa: E731
        chex.assert_trees_all_close(jg(shared), jg(plain), rtol=1e-10)
        # vmap over members, with the data closed over and broadcast by a per-member cond
        ps = jax.tree_util.tree_map(lambda x: jnp.stack([x, 2 * x, -x]), p)
        ds = jnp.array([0.2, 0.7, 3.0])

        def via_cond(f):
            def member(p, d):
                return jax.lax.cond(d > 1.0, lambda: f(p, d, X, y), lambda: 2.0 * f(p, d, X, y))
            return jax.vmap(jax.value_and_grad(member))(ps, ds)

        chex.assert_trees_all_close(via_cond(shared), via_cond(plain), rtol=1e-12)


# -- branch_skipping: the batching interpreter ----------------------------------------------------


def _branchy(x, h, data):
    """A cond on a per-member predicate, one on a shared predicate, and a while loop whose
    predicate is per member with a cond in its body: the shapes of optax's zoom line search."""
    a = jax.lax.cond(h > 0.0, lambda u: jnp.sin(u) * data.sum(), lambda u: u @ data[:3] * h, x)
    b = jax.lax.cond(data[0, 0] > 0.0, lambda u: u + 1.0, lambda u: u * 2.0, a)

    def body(c):
        i, u = c
        u = jax.lax.cond(u.sum() > 0.0, lambda v: 0.5 * v + data[1], lambda v: v - h, u)
        return i + 1, u

    n, c = jax.lax.while_loop(lambda c: (c[0] < 3 + (h > 1.0)) & (jnp.abs(c[1]).sum() < 50.0), body, (0, b))
    # Branches that pass operands through (read outside the interpreter's cond), one of them
    # unbatched under some in_axes (data), and a cond that passes everything through.
    p, q, r = jax.lax.cond(h > 0.5, lambda u, d: (u, d, u * 3.0), lambda u, d: (u * 0.5, d * 1.5, u), x, data)
    s = jax.lax.cond(h < 0.0, lambda u: u, lambda u: u, r)
    return {"out": c * h + x.sum() + p * 2.0 + q.sum(axis=0) + s, "n": n}


def _branchy_inputs():
    rng = np.random.default_rng(3)
    xs = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
    hs = jnp.asarray([-1.0, 0.5, 2.0, -0.2, 3.0, 0.7], jnp.float32)  # both branches, both trip counts
    data = jnp.asarray(rng.normal(size=(3, 3)), jnp.float32)
    return xs, hs, data


@pytest.mark.parametrize("axes", [(0, 0, None), (0, None, None), (None, 0, None), (0, 0, 0)])
def test_branch_skipping_vmap_equals_jax_vmap(axes):
    xs, hs, data = _branchy_inputs()
    batched = (xs, hs, jnp.stack([data * (1 - 0.4 * i) for i in range(6)]))  # data[0, 0] changes sign
    unbatched = (xs[0], hs[2], data)
    args = tuple(b if ax == 0 else u for b, u, ax in zip(batched, unbatched, axes))
    want = jax.vmap(_branchy, in_axes=axes)(*args)
    got = jax.jit(jax.vmap(branch_skipping(_branchy), in_axes=axes))(*args)
    chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-6)
    # nested: an outer vmap over two copies
    twice = lambda f: jax.vmap(jax.vmap(f, in_axes=axes), in_axes=(None, 0, None))  # noqa: E731
    hh = jnp.stack([args[1], args[1] * -1.5])
    chex.assert_trees_all_close(twice(branch_skipping(_branchy))(args[0], hh, args[2]),
                                twice(_branchy)(args[0], hh, args[2]), rtol=1e-6, atol=1e-6)


def test_branch_skipping_reads_passed_through_operands_outside_its_conds():
    # optax's value_and_grad_from_state cond returns the stored value and gradient unchanged in
    # one branch: no cond (and none of XLA's copies into its result) for what a branch forwards.
    def f(x, h):
        kept, scaled = jax.lax.cond(h > 0.0, lambda u: (u, u * 2.0), lambda u: (u, u - 1.0), x)
        same = jax.lax.cond(h > 1.0, lambda u: u, lambda u: u, x)
        return kept + scaled + same

    xs, hs, _ = _branchy_inputs()
    jaxpr = str(jax.make_jaxpr(jax.vmap(branch_skipping(f)))(xs, hs))
    assert jaxpr.count("cond[") == 2, jaxpr  # one per branch of the first cond, none for the second
    chex.assert_trees_all_close(jax.vmap(branch_skipping(f))(xs, hs), jax.vmap(f)(xs, hs), rtol=1e-6)


def test_branch_skipping_forward_derivatives_equal_the_plain_functions():
    """Forward mode, what the sweep uses (diff="unrolled"); a while loop has no reverse mode."""
    xs, hs, data = _branchy_inputs()
    out = lambda f: lambda x, h, d: jax.vmap(f, in_axes=(0, 0, None))(x, h, d)["out"].sum()  # noqa: E731
    tangents = (jnp.ones_like(xs), jnp.ones_like(hs), jnp.ones_like(data))
    chex.assert_trees_all_close(jax.jvp(out(branch_skipping(_branchy)), (xs, hs, data), tangents),
                                jax.jvp(out(_branchy), (xs, hs, data), tangents), rtol=1e-5, atol=1e-6)


def test_branch_skipping_runs_a_branch_only_if_some_member_takes_it():
    calls = {"taken": 0, "dead": 0}

    def count(name):
        def cb(h):
            calls[name] += np.size(h)
        return cb

    def f(x, h):
        def taken(u):
            jax.debug.callback(count("taken"), h)
            return u * 2.0

        def dead(u):
            jax.debug.callback(count("dead"), h)
            return u - 1.0

        return jax.lax.cond(h > 0.0, taken, dead, x)

    xs, hs = jnp.arange(4.0), jnp.asarray([1.0, 2.0, 3.0, 4.0])  # every member takes `taken`
    plain = jax.vmap(f)(xs, hs)
    jax.block_until_ready(plain)
    assert calls["dead"] == 4  # JAX's rule runs both branches for every member
    calls.update(taken=0, dead=0)
    got = jax.vmap(branch_skipping(f))(xs, hs)
    jax.block_until_ready(got)
    chex.assert_trees_all_close(got, plain)
    assert calls == {"taken": 4, "dead": 0}


def test_lbfgs_sweep_evaluates_the_objective_about_as_often_as_the_loop():
    """The sweep's batched evaluations: about the slowest member's count in a loop of minimize
    (each step costs the slowest member's line-search iterations, so a little more); with both
    cond branches run (JAX's rule) it was about twice as many."""
    X, y = _data()
    seen = {"calls": 0}  # under vmap a callback is called once per member

    def counted(w, delta, X, y):
        jax.debug.callback(lambda d: seen.__setitem__("calls", seen["calls"] + 1), delta)
        return huber(w, delta, X, y)

    per_member = []
    for delta in DELTAS:
        seen["calls"] = 0
        jax.block_until_ready(minimize(counted, _params(3), LBFGS, args=(jnp.float32(delta), X, y), max_steps=100,
                                       tol=1e-5, history=False, diff=None))
        per_member.append(seen["calls"])
    seen["calls"] = 0
    res = sweep(counted, _params(3), LBFGS, jnp.asarray(DELTAS), args=(X, y), max_steps=100, tol=1e-5,
                history=False, diff=None)
    jax.block_until_ready(res)
    assert bool(np.all(res.converged))
    batched = seen["calls"] / len(DELTAS)
    assert batched <= 1.3 * max(per_member), (batched, per_member)
