"""Workloads ``sweep`` (64 Huber deltas in one vmapped program, early stopping in a batch) and ``lbfgs_sweep`` (a batched line search)."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jloss.bench.harness import Case, Config, Target, Variant, workload
from jloss.bench.problems import fused_scan, huber_objective, huber_problem, jloss_minimize, jloss_sweep, linear_params, matvec_floor, python_loop, total_loss


@workload("sweep", "64 Huber deltas x 1,000 Adam steps on the small problem; early stopping in a batch")
def _sweep_workload(cfg: Config) -> list[Case]:
    n, d, steps, k = cfg.size((2000, 16, 1000, 64), (200, 8, 20, 8))
    lr = 0.05
    X_np, y_np = huber_problem(n, d, cfg.seed)
    X, y = jnp.asarray(X_np), jnp.asarray(y_np)
    deltas_np = np.geomspace(0.05, 5.0, k).astype(np.float32)
    deltas = jnp.asarray(deltas_np)
    params0 = linear_params(d)
    adam = optax.adam(lr)
    fun = huber_objective  # fun(params, delta, X, y)
    case = Case(
        "sweep",
        f"{k} Huber deltas x {steps:,} Adam steps, N={n:,}, d={d}",
        {"n": n, "d": d, "steps": steps, "members": k, "optimizer": f"adam({lr})"},
        variants=[],
        reference="vmap of lax.scan (hand-fused)",
        warmup=0,  # the loop rows take seconds per call: the first call is the warm-up
    )
    V = case.variants
    sweep, minimize = jloss_sweep(), jloss_minimize()
    mean_of = lambda losses: float(np.mean(np.asarray(losses)))  # noqa: E731

    if isinstance(sweep, Exception):
        case.skip("jloss.sweep", f"jloss.sweep unavailable: {sweep}")
    else:
        V.append(Variant("jloss.sweep", lambda: sweep(fun, params0, adam, deltas, args=(X, y), max_steps=steps),
                         total_loss, "jloss", "one vmapped while_loop"))
    if not isinstance(minimize, Exception):
        def minimize_loop():
            return [minimize(fun, params0, adam, args=(dl, X, y), max_steps=steps).loss for dl in deltas]

        V.append(Variant("loop of jloss.minimize", minimize_loop, mean_of, "jloss",
                         f"{k} calls, one compiled program"))
    else:
        case.skip("loop of jloss.minimize", f"jloss.minimize unavailable: {minimize}")
    solve = fused_scan(fun, adam, steps)
    vscan = jax.jit(jax.vmap(solve, in_axes=(None, 0, None, None)))
    V.append(Variant("vmap of lax.scan (hand-fused)", lambda: vscan(params0, deltas, X, y), lambda o: mean_of(o[1])))
    one = jax.jit(solve)
    V.append(Variant("loop of lax.scan (hand-fused)", lambda: [one(params0, dl, X, y)[1] for dl in deltas],
                     mean_of, quick=False))
    idiom = python_loop(fun, adam, steps)
    V.append(Variant("loop of Python-loop idiom", lambda: [idiom(params0, dl, X, y)[1] for dl in deltas_np],
                     mean_of, quick=False))
    case.skip("torch", "not in this comparison (the issue's sweep peers are the JAX loops and scikit-learn); "
              "see the small_huber row for PyTorch's per-step cost")
    linear_model = cfg.optional("sklearn.linear_model")
    if linear_model is not None:
        eps = np.linspace(1.05, 3.0, k)

        def sk_run():
            for e in eps:
                linear_model.HuberRegressor(epsilon=float(e), alpha=0.0, max_iter=100).fit(X_np, y_np)
            return None

        V.append(Variant(f"scikit-learn HuberRegressor x{k}", sk_run, None, "peer",
                         "different objective (joint scale estimate, epsilon in units of sigma): time only",
                         quick=False))
    else:
        case.skip("scikit-learn HuberRegressor", "scikit-learn not installed (optional)")
    V.append(Variant("floor: batched matvecs alone", matvec_floor(X, steps, width=k), None, "floor",
                     f"X @ W and X.T @ V with W of shape (d, {k})", quick=False))
    if not isinstance(sweep, Exception) and not isinstance(minimize, Exception):
        case.targets.append(Target(f"sweep of {k} deltas <= 0.25x a loop of minimize calls", "jloss.sweep",
                                   "loop of jloss.minimize", 0.25))
    cases = [case]
    if not isinstance(sweep, Exception) and not cfg.quick:  # its probe solve compiles at build time
        cases.append(_early_stop_case(cfg, sweep, X, y, params0, fun))
    return cases


def _early_stop_case(cfg, sweep, X, y, params0, fun) -> Case:
    """A sweep with tol whose members stop at different steps vs the same sweep run to the last."""
    k = cfg.size(64, 8)
    deltas = jnp.asarray(np.geomspace(0.05, 5.0, k).astype(np.float32))
    lr = 0.05
    sgd = optax.sgd(lr)
    tol = 1e-5
    cap = 50_000
    probe = sweep(fun, params0, sgd, deltas, args=(X, y), max_steps=cap, tol=tol, history=False)
    steps = np.asarray(probe.steps)
    slowest = int(steps.max())
    case = Case(
        "sweep",
        f"{k} Huber deltas, SGD({lr}), tol={tol:g}: members stop after {int(steps.min()):,} to {slowest:,} steps",
        {"members": k, "tol": tol, "optimizer": f"sgd({lr})", "min_steps": int(steps.min()),
         "median_steps": float(np.median(steps)), "max_steps": slowest, "converged": int(np.sum(probe.converged))},
        variants=[],
        reference="jloss.sweep (no tol, max_steps=slowest)",
        name="sweep_early_stop",
        rtol=1e-3,
    )
    case.variants.append(Variant("jloss.sweep (tol)",
                                 lambda: sweep(fun, params0, sgd, deltas, args=(X, y), max_steps=cap, tol=tol),
                                 total_loss, "jloss", "members stop on their own gradient norm"))
    case.variants.append(Variant("jloss.sweep (no tol, max_steps=slowest)",
                                 lambda: sweep(fun, params0, sgd, deltas, args=(X, y), max_steps=slowest),
                                 total_loss, "jloss", "every member runs as long as the slowest"))
    case.targets.append(Target("early-stopped members cost the batch no more than the slowest member (<= 1.05x)",
                               "jloss.sweep (tol)", "jloss.sweep (no tol, max_steps=slowest)", 1.05))
    if int(steps.min()) == slowest:
        case.notes.append("all members stopped at the same step: the case does not exercise early stopping")
    return case


def optax_lbfgs_loop(fun, optimizer: optax.GradientTransformationExtraArgs, max_steps: int, tol: float):
    """optax's documented L-BFGS loop: ``lax.while_loop`` on ``optax.value_and_grad_from_state``.

    ``solve(params, *args) -> (params, final_loss, steps)``; stops when the stored gradient's
    norm is ``<= tol`` or after ``max_steps`` updates (the loop of optax's L-BFGS docs). What a
    user would vmap for a sweep without jloss.
    """

    def solve(params, *args):
        value_fn = lambda p: fun(p, *args)  # noqa: E731
        value_and_grad = optax.value_and_grad_from_state(value_fn)

        def step(carry):
            p, s = carry
            value, g = value_and_grad(p, state=s)
            u, s = optimizer.update(g, s, p, value=value, grad=g, value_fn=value_fn)
            return optax.apply_updates(p, u), s

        def running(carry):
            _, s = carry
            count = optax.tree.get(s, "count")
            norm = optax.tree.norm(optax.tree.get(s, "grad"))
            return (count == 0) | ((count < max_steps) & (norm > tol))

        p, s = jax.lax.while_loop(running, step, (params, optimizer.init(params)))
        return p, value_fn(p), optax.tree.get(s, "count")

    return solve


LBFGS_SWEEP_TARGET = 0.5


def lbfgs_sweep_case(cfg: Config, k: int, n: int, d: int, max_steps: int = 200, tol: float = 1e-5) -> Case:
    """``k`` Huber deltas fitted by ``optax.lbfgs()`` to ``tol``: jloss.sweep vs a loop of minimize.

    Rows: ``jloss.sweep`` (one vmapped program, per-member stopping), a loop of ``k``
    ``jloss.minimize`` calls (one compiled program, called ``k`` times), and ``jax.vmap`` of
    optax's documented L-BFGS loop (:func:`optax_lbfgs_loop`). Every member must stop on ``tol``
    before ``max_steps`` (recorded; a member that hits the cap makes the comparison one of a
    truncated workload, noted in the case). Target: the sweep at most 0.5x the loop.
    """
    X_np, y_np = huber_problem(n, d, cfg.seed)
    X, y = jnp.asarray(X_np), jnp.asarray(y_np)
    deltas = jnp.asarray(np.geomspace(0.1, 10.0, k).astype(np.float32))
    params0 = linear_params(d)
    lbfgs = optax.lbfgs()
    fun = huber_objective  # fun(params, delta, X, y)
    sweep, minimize = jloss_sweep(), jloss_minimize()
    t0 = time.perf_counter()
    probe = jax.block_until_ready(sweep(fun, params0, lbfgs, deltas, args=(X, y), max_steps=max_steps, tol=tol,
                                        history=False))
    first_call_s = time.perf_counter() - t0  # trace + compile + one run: the sweep row's first call is warm
    steps = np.asarray(probe.steps)
    case = Case(
        "lbfgs_sweep",
        f"{k} Huber deltas, optax.lbfgs() to tol={tol:g} (max {max_steps} steps), N={n:,}, d={d}: "
        f"members stop after {int(steps.min())} to {int(steps.max())} steps",
        {"n": n, "d": d, "members": k, "optimizer": "lbfgs()", "tol": tol, "max_steps": max_steps,
         "min_steps": int(steps.min()), "max_member_steps": int(steps.max()),
         "converged": int(np.sum(probe.converged)), "sweep_first_call_s": first_call_s},
        variants=[],
        reference="loop of jloss.minimize",
        rtol=1e-4,
        warmup=0,  # the loop row takes seconds per call at k = 256: the first call is the warm-up
    )
    if int(np.sum(probe.converged)) < k:
        case.notes.append(f"only {int(np.sum(probe.converged))} of {k} members converged before max_steps")
    mean_of = lambda losses: float(np.mean(np.asarray(losses)))  # noqa: E731

    def minimize_loop():
        return [minimize(fun, params0, lbfgs, args=(dl, X, y), max_steps=max_steps, tol=tol, history=False).loss
                for dl in deltas]

    vloop = jax.jit(jax.vmap(optax_lbfgs_loop(fun, lbfgs, max_steps, tol), in_axes=(None, 0, None, None)))
    case.variants += [
        Variant("jloss.sweep", lambda: sweep(fun, params0, lbfgs, deltas, args=(X, y), max_steps=max_steps,
                                             tol=tol, history=False), total_loss, "jloss",
                "one vmapped while_loop, per-member stopping"),
        Variant("loop of jloss.minimize", minimize_loop, mean_of, "jloss", f"{k} calls, one compiled program"),
        Variant("vmap of optax's L-BFGS loop", lambda: vloop(params0, deltas, X, y), lambda o: mean_of(o[1]), "peer",
                "optax docs' while_loop on value_and_grad_from_state, vmapped over the deltas"),
    ]
    case.targets.append(Target(f"L-BFGS sweep of {k} deltas <= {LBFGS_SWEEP_TARGET:g}x a loop of minimize calls",
                               "jloss.sweep", "loop of jloss.minimize", LBFGS_SWEEP_TARGET))
    return case


@workload("lbfgs_sweep", "48 Huber deltas fitted by optax.lbfgs to tol 1e-5: one batched line search vs a loop")
def _lbfgs_sweep_workload(cfg: Config) -> list[Case]:
    k, n, d = cfg.size((48, 3000, 12), (4, 200, 4))
    return [lbfgs_sweep_case(cfg, k, n, d)]
