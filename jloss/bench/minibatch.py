"""Workload ``minibatch``: minibatch Huber regression (a shuffle per epoch, a gather per step)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jloss.bench.harness import Case, Config, Target, Variant, workload
from jloss.bench.problems import adam_step, huber_objective, huber_problem, jloss_minimize, linear_params, result_loss, torch_huber_regression, xt_dot


@workload("minibatch", "minibatch Huber regression (N=100,000, d=32, batch 500, Adam, 2,000 steps)")
def _minibatch(cfg: Config) -> list[Case]:
    n, d, bs, steps = cfg.size((100_000, 32, 500, 2000), (1000, 8, 100, 20))
    lr, delta = 0.01, 1.0
    nb = n // bs
    epochs = steps // nb
    assert epochs * nb == steps, "steps must be whole epochs"
    X_np, y_np = huber_problem(n, d, cfg.seed)
    X, y = jnp.asarray(X_np), jnp.asarray(y_np)
    params0 = linear_params(d)
    key = jax.random.key(cfg.seed)

    def fun(params, X, y):
        return huber_objective(params, delta, X, y)

    adam = optax.adam(lr)
    case = Case(
        "minibatch",
        f"minibatch Huber regression N={n:,}, d={d}, batch {bs}, Adam(lr={lr}), {steps:,} steps ({epochs} epochs)",
        {"n": n, "d": d, "batch_size": bs, "steps": steps, "optimizer": f"adam({lr})"},
        variants=[],
        reference="lax.scan (hand-fused)",
    )
    V = case.variants
    minimize = jloss_minimize()
    if isinstance(minimize, Exception):
        case.skip("jloss.minimize", f"jloss.minimize unavailable: {minimize}")
    else:
        V.append(Variant("jloss.minimize (batch_size)",
                         lambda: minimize(fun, params0, adam, args=(X, y), max_steps=steps, batch_size=bs, key=key),
                         result_loss, "jloss", "per-epoch shuffle, gather in the loop, full-data final loss"))

    def epoch_perm(e):
        return jax.random.permutation(jax.random.fold_in(key, e), n)

    @jax.jit
    def scan(params, X, y):
        def epoch(carry, e):
            perm = epoch_perm(e)

            def step(carry, i):
                p, s = carry
                idx = lax.dynamic_slice_in_dim(perm, i * bs, bs)
                value, g = jax.value_and_grad(fun)(p, jnp.take(X, idx, axis=0), jnp.take(y, idx, axis=0))
                u, s = adam.update(g, s, p)
                return (optax.apply_updates(p, u), s), value

            return lax.scan(step, carry, jnp.arange(nb))

        (p, _), hist = lax.scan(epoch, (params, adam.init(params)), jnp.arange(epochs))
        return p, fun(p, X, y), hist.reshape(-1)

    V.append(Variant("lax.scan (hand-fused)", lambda: scan(params0, X, y), lambda o: o[1], "peer",
                     "the same shuffles as minimize (fold_in(key, epoch))"))

    step_fn = jax.jit(lambda p, s, xb, yb: adam_step(fun, adam, p, s, xb, yb))
    perm_fn = jax.jit(epoch_perm)
    final = jax.jit(fun)

    def idiom():
        p, s = params0, adam.init(params0)
        for e in range(epochs):
            perm = np.asarray(perm_fn(e))
            for i in range(nb):
                idx = perm[i * bs:(i + 1) * bs]
                p, s, _ = step_fn(p, s, X_np[idx], y_np[idx])
        return p, final(p, X, y)

    V.append(Variant("Python loop of @jax.jit step", idiom, lambda o: o[1], "peer",
                     "numpy batches from host memory, the same shuffles", quick=False))
    if cfg.torch is not None:
        torch = cfg.torch
        gen = torch.Generator()
        perm = [None]

        def batch_perms(i):
            if i == 0:
                gen.manual_seed(cfg.seed)  # every run sees the same shuffles
            j = i % nb
            if j == 0:
                perm[0] = torch.randperm(n, generator=gen)
            return perm[0][j * bs:(j + 1) * bs]

        V.append(Variant("torch", torch_huber_regression(cfg, X_np, y_np, steps, lr, delta, batch_perms), float,
                         "torch.randperm per epoch (its own shuffles)", rtol=2e-2,
                         quick=False))
    else:
        case.skip("torch", cfg.torch_missing)

    @jax.jit
    def floor(X, w):
        def epoch(w, e):
            perm = epoch_perm(e)

            def step(w, i):
                idx = lax.dynamic_slice_in_dim(perm, i * bs, bs)
                xb = jnp.take(X, idx, axis=0)
                return xt_dot(xb, xb @ w) * (1.0 / bs), None

            return lax.scan(step, w, jnp.arange(nb))[0], None

        return lax.scan(epoch, w, jnp.arange(epochs))[0]

    w0 = jnp.ones((d,), jnp.float32)
    V.append(Variant("floor: shuffle + gather + matvecs", lambda: floor(X, w0), None, "floor",
                     "the same permutations and row gathers, then X_b @ w and X_b.T @ v", quick=False))
    if not isinstance(minimize, Exception):
        case.targets.append(Target("minimize (minibatch) <= 1.0x hand-fused scan", "jloss.minimize (batch_size)",
                                   "lax.scan (hand-fused)", 1.0))
    return [case]
