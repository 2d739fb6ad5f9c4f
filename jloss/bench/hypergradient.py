"""Workload ``hypergradient``: d(validation loss)/d(Huber delta) through minimize."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

import jloss
from jloss.differentiation import Unrolled
from jloss.bench.harness import Case, Config, Target, Variant, workload
from jloss.bench.problems import huber_objective, huber_problem, linear_params


@workload("hypergradient", "d(validation loss)/d(Huber delta) through minimize, against one solve (N=100,000, d=32)")
def _hypergradient(cfg: Config) -> list[Case]:
    """What one hypergradient costs relative to the solve it differentiates: implicit (one
    conjugate-gradient solve on Hessian-vector products after the solve, forward or reverse) after
    L-BFGS to a tolerance, and unrolled (reverse mode through a ``lax.scan`` of the steps, with and
    without ``jax.checkpoint``) against implicit after a fixed number of Adam steps."""
    n, d, steps = cfg.size((100_000, 32, 200), (1000, 8, 20))
    X, y = map(jnp.asarray, huber_problem(n, d, cfg.seed))
    Xv, yv = map(jnp.asarray, huber_problem(n // 5, d, cfg.seed + 1))
    params0 = linear_params(d)
    lbfgs, adam = optax.lbfgs(), optax.adam(0.05)

    def validation(optimizer, max_steps, tol, diff):
        def val(delta, X, y, Xv, yv):
            res = jloss.minimize(huber_objective, params0, optimizer, args=(delta, X, y), max_steps=max_steps,
                                 tol=tol, diff=diff, history=False)
            return jnp.mean(jnp.square(Xv @ res.params["w"] + res.params["b"] - yv))
        return val

    def rows(case, optimizer, max_steps, tol, grads):
        solve = jax.jit(validation(optimizer, max_steps, tol, None))
        case.variants.append(Variant("solve", lambda: solve(1.0, X, y, Xv, yv), float, "jloss",
                                     "the validation loss, no derivative"))
        for i, (name, diff, mode, note) in enumerate(grads):
            f = validation(optimizer, max_steps, tol, diff)
            if mode == "grad":
                run = jax.jit(jax.value_and_grad(f))
            else:
                run = jax.jit(lambda h, *data, f=f: jax.jvp(lambda h: f(h, *data), (h,), (1.0,)))
            case.variants.append(Variant(name, lambda run=run: run(1.0, X, y, Xv, yv), lambda o: float(o[0]),
                                         "jloss", note, quick=i == 0))
        return case

    implicit = rows(Case("hypergradient", f"Huber regression N={n:,}, d={d}: L-BFGS to tol 1e-5, then d val / d delta",
                         {"n": n, "d": d, "optimizer": "lbfgs", "tol": 1e-5}, variants=[], reference="solve",
                         name="hypergradient_implicit", rtol=1e-5),
                    lbfgs, 500, 1e-5,
                    [("implicit, jax.grad", "implicit", "grad", "solve + CG on Hessian-vector products (transposed)"),
                     ("implicit, jax.jvp", "implicit", "jvp", "solve + CG, forward mode")])
    unrolled = rows(Case("hypergradient", f"Huber regression N={n:,}, d={d}: {steps} Adam steps, then d val / d delta",
                         {"n": n, "d": d, "optimizer": "adam(0.05)", "steps": steps}, variants=[], reference="solve",
                         name="hypergradient_unrolled", rtol=1e-5, warmup=None if cfg.quick else 0),
                    adam, steps, 0.0,
                    [("unrolled, jax.grad", "unrolled", "grad", "reverse mode through a lax.scan of the steps"),
                     ("unrolled + checkpoint, jax.grad", Unrolled(checkpoint=True), "grad", "each step recomputed on the way back"),
                     ("implicit, jax.grad", "implicit", "grad", "at a run that is not converged: biased")])
    implicit.targets.append(Target("implicit hypergradient <= 3x one solve", "implicit, jax.grad", "solve", 3.0))
    return [implicit, unrolled]
