"""Workloads ``small_huber`` and ``large_huber``: full-batch Huber regression (loop overhead, and
memory bound), with Adam and L-BFGS rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jloss.bench.harness import Case, Config, Target, Variant, workload
from jloss.bench.problems import fused_scan, huber_objective, huber_problem, jloss_minimize, linear_params, matvec_floor, python_loop, result_loss, torch_huber_regression


# ----------------------------------------------------------------------------------------------
# Workloads
# ----------------------------------------------------------------------------------------------


def _regression_case(cfg: Config, *, name: str, n: int, d: int, steps: int, lr: float, small: bool) -> Case:
    delta = 1.0
    X_np, y_np = huber_problem(n, d, cfg.seed)
    X, y = jnp.asarray(X_np), jnp.asarray(y_np)
    params0 = linear_params(d)

    def fun(params, X, y):
        return huber_objective(params, delta, X, y)

    adam = optax.adam(lr)
    title = f"Huber regression N={n:,}, d={d}, Adam(lr={lr}), {steps:,} steps"
    case = Case(
        name,
        title,
        {"n": n, "d": d, "steps": steps, "optimizer": f"adam({lr})", "delta": delta},
        variants=[],
        reference="lax.scan (hand-fused)",
        # seconds per call on the large problem: the first call is the only warm-up
        warmup=None if small else 0,
    )
    minimize = jloss_minimize()
    V = case.variants
    if isinstance(minimize, Exception):
        case.skip("jloss.minimize", f"jloss.minimize unavailable: {minimize}")
    else:
        V.append(Variant("jloss.minimize", lambda: minimize(fun, params0, adam, args=(X, y), max_steps=steps),
                         result_loss, "jloss", "defaults: history=True"))
        if small:
            V.append(Variant("jloss.minimize (history=False)",
                             lambda: minimize(fun, params0, adam, args=(X, y), max_steps=steps, history=False),
                             result_loss, "jloss", quick=False))
        if small and cfg.optional("tqdm") is not None:
            V.append(Variant("jloss.minimize (progress=True)",
                             lambda: minimize(fun, params0, adam, args=(X, y), max_steps=steps, progress=True),
                             result_loss, "jloss", "tqdm bar drawn to os.devnull", quiet=True,
                             quick=False))
    scan = jax.jit(fused_scan(fun, adam, steps))
    scan_grad = jax.jit(fused_scan(fun, adam, steps, history=False))
    V.append(Variant("lax.scan (hand-fused)", lambda: scan(params0, X, y), lambda o: o[1], "peer",
                     "value_and_grad per step, losses stacked (same outputs as minimize)"))
    if small:
        V.append(Variant("lax.scan (grad only)", lambda: scan_grad(params0, X, y), lambda o: o[1], "peer",
                         "no loss per step: the least work", quick=False))
    loop = python_loop(fun, adam, steps)
    V.append(Variant("Python loop of @jax.jit step", lambda: loop(params0, X, y), lambda o: o[1], "peer",
                     quick=small))
    if cfg.torch is not None:
        V.append(Variant("torch", torch_huber_regression(cfg, X_np, y_np, steps, lr, delta), float, "peer",
                         "F.huber_loss + torch.optim.Adam, float32", quick=small))
    else:
        case.skip("torch", cfg.torch_missing)
    V.append(Variant("floor: matvecs alone", matvec_floor(X, steps), None, "floor",
                     "X @ w and X.T @ v per step, nothing else", quick=small))

    if small and not cfg.quick:  # optax.lbfgs compiles for seconds
        _add_lbfgs(cfg, case, fun, params0, X, y, minimize)

    if not isinstance(minimize, Exception):
        case.targets.append(Target("minimize (Adam) <= 1.0x hand-fused scan", "jloss.minimize",
                                   "lax.scan (hand-fused)", 1.0))
        if small:
            case.targets.append(Target("minimize >= 5x faster than the Python-loop idiom", "jloss.minimize",
                                       "Python loop of @jax.jit step", 0.2))
            if any(v.name == "jloss.minimize (progress=True)" for v in V):
                case.targets.append(Target("progress bar costs <= 5%", "jloss.minimize (progress=True)",
                                           "jloss.minimize", 1.05))
    return case


def _add_lbfgs(cfg, case, fun, params0, X, y, minimize):
    """scipy L-BFGS-B with a jitted value-and-grad, and minimize with optax.lbfgs, on ``case``."""
    from jax.flatten_util import ravel_pytree

    optimize = cfg.optional("scipy.optimize")
    flat0, unravel = ravel_pytree(params0)
    vg = jax.jit(jax.value_and_grad(lambda x, X, y: fun(unravel(x), X, y)))
    info = {}
    if optimize is None:
        case.skip("scipy L-BFGS-B", "scipy not installed")
    else:
        def scipy_run():
            def f(x):
                v, g = vg(jnp.asarray(x, jnp.float32), X, y)
                return float(v), np.asarray(g, np.float64)

            res = optimize.minimize(f, np.zeros(flat0.shape), jac=True, method="L-BFGS-B",
                                    options={"maxiter": 1000})
            info["scipy_iterations"] = int(res.nit)
            info["scipy_evaluations"] = int(res.nfev)
            return float(res.fun)

        case.variants.append(Variant("scipy L-BFGS-B", scipy_run, float, "peer",
                                     "jitted float32 value_and_grad, scipy defaults", rtol=1e-3))
    if isinstance(minimize, Exception):
        return
    lbfgs = optax.lbfgs()
    tol = 1e-5

    def jloss_run():
        return minimize(fun, params0, lbfgs, args=(X, y), max_steps=500, tol=tol)

    ref = "scipy L-BFGS-B" if optimize is not None else None
    case.variants.append(Variant("jloss.minimize (optax.lbfgs)", jloss_run, result_loss, "jloss",
                                 f"tol={tol} on the gradient norm", loss_ref=ref, rtol=1e-6 if ref else None))
    case.notes.append("L-BFGS rows solve to optimality; Adam rows run a fixed number of steps.")
    if optimize is None:
        return

    def reached(rows):
        a, b = rows["jloss.minimize (optax.lbfgs)"], rows["scipy L-BFGS-B"]
        if a.get("final_loss") is None or b.get("final_loss") is None:
            return False, "no final loss"
        ok = a["final_loss"] <= b["final_loss"] * (1 + 1e-6)
        its = f" (scipy: {info.get('scipy_iterations')} iterations)" if info else ""
        return ok, f"loss {a['final_loss']:.7g} vs scipy {b['final_loss']:.7g}{its}"

    case.targets.append(Target("minimize(optax.lbfgs) reaches scipy's loss (1e-6 rel) in <= 0.5x its time",
                               "jloss.minimize (optax.lbfgs)", "scipy L-BFGS-B", 0.5, reached))


@workload("small_huber", "small Huber regression: loop overhead (N=2,000, d=16, Adam, 2,000 steps)")
def _small_huber(cfg: Config) -> list[Case]:
    n, d, steps = cfg.size((2000, 16, 2000), (200, 8, 50))
    return [_regression_case(cfg, name="small_huber", n=n, d=d, steps=steps, lr=0.05, small=True)]


@workload("large_huber", "large Huber regression: memory bound (N=500,000, d=64, Adam, 100 steps)")
def _large_huber(cfg: Config) -> list[Case]:
    n, d, steps = cfg.size((500_000, 64, 100), (2000, 16, 10))
    return [_regression_case(cfg, name="large_huber", n=n, d=d, steps=steps, lr=0.05, small=False)]
